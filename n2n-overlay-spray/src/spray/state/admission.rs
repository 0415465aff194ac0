//! What Spray consents to: the bridge orders (`ConnectTo`) a neighbour
//! gives, and the joins a newcomer asks for.
//!
//! - An order from relay `r` to open an arc to `t` is accepted when `r`
//!   announced that arc in an exchange (the sample of its `Exchange` or
//!   `ExchangeReply`, until it arrives or expires).
//! - Otherwise it can only be a join or a leave that `r` forwards (the
//!   contact of a newcomer orders its outview; a leaving peer orders its
//!   inview): accepted when `r` holds an arc with us, at most
//!   [`UNANNOUNCED_PER_ROUND`] plus the arcs between us per shuffle round.
//! - A `Join` is served once per newcomer while it holds arcs with us (a
//!   newcomer that repeats it would make us order our whole view again and
//!   again); the record of those served is bounded by [`MAX_JOINED`].

use std::fmt;

use n2n_core::overlay::{Admission, Denied};
use rand::Rng;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{LeavePhase, State};

/// Unannounced bridge orders accepted from one relay per shuffle round, on
/// top of one per arc between us (joins and leaves forwarded).
pub const UNANNOUNCED_PER_ROUND: u32 = 16;

/// Newcomers whose join was served, remembered at most (oldest forgotten).
pub const MAX_JOINED: usize = 4096;

impl<P, R> State<P, R>
where
    P: Ord + Clone + fmt::Debug + Serialize + DeserializeOwned + Send + 'static,
    R: Rng + Send + 'static,
{
    pub(super) fn admit_request(&mut self, request: &Admission<P>) -> Result<(), Denied> {
        match request {
            Admission::ConnectTo { relay, to } => self.admit_connect_to(relay, to),
            _ => Ok(()),
        }
    }

    fn admit_connect_to(&mut self, relay: &P, to: &P) -> Result<(), Denied> {
        if self.leave != LeavePhase::Member {
            return Err(Denied::new("leaving the overlay"));
        }
        if self
            .incoming
            .iter()
            .any(|(p, _, _, r)| p == to && r == relay)
        {
            return Ok(());
        }
        let arcs = self.inview.count(relay) + self.outview.count(relay);
        if arcs == 0 {
            return Err(Denied::new("an order from a peer without an arc with us"));
        }
        let round = self.round;
        self.orders.retain(|(_, r, _)| *r == round);
        let used = match self.orders.iter_mut().find(|(p, ..)| p == relay) {
            Some((_, _, n)) => n,
            None => {
                self.orders.push((relay.clone(), round, 0));
                &mut self.orders.last_mut().expect("pushed").2
            }
        };
        if *used >= UNANNOUNCED_PER_ROUND + arcs {
            return Err(Denied::new("too many unannounced orders this round"));
        }
        *used += 1;
        Ok(())
    }

    /// Whether `newcomer`'s join may be served (and records it).
    pub(super) fn first_join(&mut self, newcomer: &P) -> bool {
        if self.joined.contains(newcomer) {
            return false;
        }
        if self.joined.len() == MAX_JOINED {
            self.joined.pop_front();
        }
        self.joined.push_back(newcomer.clone());
        true
    }

    /// `peer` holds no arc with us any more: a later join of its is fresh.
    pub(super) fn forget_join(&mut self, peer: &P) {
        // Called on every arc closed: most peers served no join lately, and
        // the record is looked at before the views.
        if self.joined.is_empty() || !self.joined.contains(peer) {
            return;
        }
        if !self.inview.contains(peer) && !self.outview.contains(peer) {
            self.joined.retain(|p| p != peer);
        }
    }
}
