//! Arc events: an arc opened, closed or gone down, and the peer-down rule
//! that duplicates arcs to keep the total.

use n2n_core::time::Instant;
use std::fmt;

use n2n_core::arc::Direction;
use n2n_core::overlay::{ArcCloseReason, Output};
use rand::Rng;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{debug, warn};

use super::super::config::AgeRule;
use super::super::view::Mark;
use super::{LeavePhase, State};

impl<P, R> State<P, R>
where
    P: Ord + Clone + fmt::Debug + Serialize + DeserializeOwned + Send + 'static,
    R: Rng + Send + 'static,
{
    /// Marks every arc to `peer` still in the view as closing and closes it;
    /// returns how many there were.
    pub(super) fn close_all(&mut self, peer: &P) -> u32 {
        let mut n = 0;
        for i in 0..self.view.entries().len() {
            let e = &self.view.entries()[i];
            if &e.peer == peer && e.mark != Mark::Closing {
                self.view.set_mark(i, Mark::Closing);
                self.push(Output::CloseArc { to: peer.clone() });
                n += 1;
            }
        }
        n
    }

    /// The peer-down rule, once `occ` arcs to a peer are gone from the view:
    /// `occ` times, with probability `1 − 1/(|P| + occ)`, duplicate a random arc
    /// (arcs duplicated in this loop count in P).
    pub(super) fn duplicate_after_down(&mut self, occ: u32) {
        let occ = occ as usize;
        let base = self.view.size();
        let mut added: Vec<P> = Vec::new();
        for _ in 0..occ {
            let size = base + added.len();
            if size == 0 {
                break;
            }
            let keep = 1.0 / (size + occ) as f64;
            if self.rng.random::<f64>() > keep {
                let k = self.rng.random_range(0..size);
                let peer = if k < base {
                    self.nth_in_view(k)
                } else {
                    added[k - base].clone()
                };
                added.push(peer.clone());
                self.push(Output::OpenArc { to: peer });
            }
        }
        debug!(occ, duplicated = added.len(), "spray: peer down handled");
    }

    pub(super) fn handle_arc_opened(&mut self, now: Instant, peer: P, direction: Direction) {
        match direction {
            Direction::Incoming => {
                self.inview.insert(peer);
            }
            Direction::Outgoing => {
                self.outview.insert(peer.clone());
                let born = match self.incoming.iter().position(|(p, ..)| *p == peer) {
                    Some(i) => {
                        let (_, arc_age, ..) = self.incoming.remove(i).expect("found");
                        match self.config.age_rule {
                            AgeRule::Reset => self.round,
                            AgeRule::Keep => self.round - i64::from(arc_age),
                        }
                    }
                    None => self.round,
                };
                self.view.push(peer.clone(), born);
                if self.leave == LeavePhase::Left {
                    let i = self.view.entries().len() - 1;
                    self.view.set_mark(i, Mark::Closing);
                    self.push(Output::CloseArc { to: peer });
                }
            }
        }
        self.arm_shuffle(now);
    }

    pub(super) fn handle_arc_closed(
        &mut self,
        peer: P,
        direction: Direction,
        reason: ArcCloseReason,
    ) {
        if direction == Direction::Incoming {
            if !self.inview.remove(&peer) {
                warn!(
                    ?peer,
                    "spray: incoming arc closed that the inview did not hold"
                );
            }
            self.forget_join(&peer);
            return;
        }
        let Some(mark) = self.view.remove_one(&peer) else {
            warn!(
                ?peer,
                "spray: outgoing arc closed that the view did not hold"
            );
            return;
        };
        self.outview.remove(&peer);
        self.forget_join(&peer);
        if matches!(reason, ArcCloseReason::PeerDown(_)) && mark != Mark::Closing {
            if self.exchange.as_ref().is_some_and(|e| e.partner == peer) {
                self.cancel_exchange();
            }
            match self.down.iter_mut().find(|(p, _)| *p == peer) {
                Some((_, n)) => *n += 1,
                None => self.down.push((peer.clone(), 1)),
            }
        }
        if !self.view.contains(&peer)
            && let Some(i) = self.down.iter().position(|(p, _)| *p == peer)
        {
            let (_, occ) = self.down.swap_remove(i);
            if self.leave == LeavePhase::Member {
                self.duplicate_after_down(occ);
            }
        }
    }

    pub(super) fn handle_arc_down(&mut self, peer: P, reason: &str) {
        // An arc a partner announced will not come.
        if let Some(i) = self.incoming.iter().position(|(p, ..)| *p == peer) {
            self.incoming.remove(i);
        }
        if self.leave != LeavePhase::Member {
            return;
        }
        let size = self.view.size();
        if size == 0 {
            // Nothing to duplicate: the arc would be lost and this peer left
            // without a partial view. A peer of the inview is connected to us
            // already (one connection carries both directions), so an arc to
            // it costs no handshake and keeps the arc total.
            let back = self.inview.pick_peer(&mut self.rng).cloned();
            debug!(?peer, reason, back = ?back, "spray: arc down with an empty view");
            if let Some(to) = back {
                self.push(Output::OpenArc { to });
            }
            return;
        }
        let k = self.rng.random_range(0..size);
        let to = self.nth_in_view(k);
        debug!(?peer, reason, duplicate = ?to, "spray: arc down");
        self.push(Output::OpenArc { to });
    }
}
