//! Joining, leaving, and the other side of both: a newcomer's `Join` and a
//! neighbour's `Leave`.

use n2n_core::time::Instant;
use std::fmt;

use n2n_core::overlay::{ConnectionState, Output};
use rand::Rng;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{debug, warn};

use super::super::message::Message;
use super::super::view::Mark;
use super::{LeavePhase, State, Timer};

impl<P, R> State<P, R>
where
    P: Ord + Clone + fmt::Debug + Serialize + DeserializeOwned + Send + 'static,
    R: Rng + Send + 'static,
{
    pub(super) fn handle_join(&mut self, now: Instant, contact: P) {
        if contact == self.local {
            warn!("spray: join through ourselves ignored");
            return;
        }
        match self.leave {
            LeavePhase::Lingering => {
                warn!("spray: join while leaving ignored");
                return;
            }
            LeavePhase::Left => self.leave = LeavePhase::Member,
            LeavePhase::Member => {}
        }
        if self.connection == ConnectionState::Connected {
            warn!(?contact, "spray: already connected, join ignored");
            return;
        }
        debug!(?contact, "spray: joining");
        self.push(Output::OpenArc {
            to: contact.clone(),
        });
        self.send(contact, Message::Join);
        self.arm_shuffle(now);
    }

    pub(super) fn handle_leave(&mut self, now: Instant) {
        if self.leave != LeavePhase::Member {
            return;
        }
        self.leave = LeavePhase::Lingering;
        self.cancel_exchange();
        let mut outs: Vec<P> = self
            .view
            .entries()
            .iter()
            .filter(|e| e.mark != Mark::Closing)
            .map(|e| e.peer.clone())
            .collect();
        for i in (1..outs.len()).rev() {
            let j = self.rng.random_range(0..=i);
            outs.swap(i, j);
        }
        outs.pop();
        for to in outs {
            let eligible = self.inview.len() - self.inview.count(&to) as usize;
            if eligible == 0 {
                continue;
            }
            let k = self.rng.random_range(0..eligible);
            let from = self
                .inview
                .occurrences()
                .filter(|p| **p != to)
                .nth(k)
                .cloned()
                .expect("k < eligible occurrences");
            self.push(Output::Bridge { from, to });
        }
        let inview: Vec<P> = self.inview.peers().cloned().collect();
        for to in inview {
            self.send(to, Message::Leave);
        }
        self.push(Output::SetTimer {
            at: now + self.config.leave_linger,
            timer: Timer::Leave,
        });
    }

    pub(super) fn on_join(&mut self, now: Instant, newcomer: P) {
        if self.leave != LeavePhase::Member || newcomer == self.local {
            debug!(?newcomer, "spray: join ignored");
            return;
        }
        if !self.first_join(&newcomer) {
            debug!(?newcomer, "spray: repeated join ignored");
            return;
        }
        let targets: Vec<P> = self
            .view
            .entries()
            .iter()
            .filter(|e| e.mark != Mark::Closing && e.peer != newcomer)
            .map(|e| e.peer.clone())
            .collect();
        debug!(?newcomer, arcs = targets.len(), "spray: newcomer");
        if targets.is_empty() {
            self.push(Output::OpenArc { to: newcomer });
        } else {
            for from in targets {
                self.push(Output::Bridge {
                    from,
                    to: newcomer.clone(),
                });
            }
        }
        self.arm_shuffle(now);
    }

    pub(super) fn on_leave(&mut self, from: P) {
        if self.exchange.as_ref().is_some_and(|e| e.partner == from) {
            self.cancel_exchange();
        }
        let n = self.close_all(&from);
        debug!(peer = ?from, arcs = n, "spray: neighbour leaves");
    }
}
