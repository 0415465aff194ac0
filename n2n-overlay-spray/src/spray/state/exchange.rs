//! The shuffle: arming the round, drawing and giving samples, both sides of
//! an exchange, and when a peer declines or sits a round out.

use std::fmt;
use std::time::Duration;

use n2n_core::overlay::Output;
use n2n_core::time::Instant;
use rand::Rng;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{debug, trace, warn};

use super::super::message::Message;
use super::super::view::Mark;
use super::{LeavePhase, MAX_INCOMING, PendingExchange, State, Timer, age};

impl<P, R> State<P, R>
where
    P: Ord + Clone + fmt::Debug + Serialize + DeserializeOwned + Send + 'static,
    R: Rng + Send + 'static,
{
    /// Arms the shuffle timer for the next period of Δ, at a random point of
    /// it. With a fixed period, two peers whose rounds alternate keep
    /// alternating for ever: two peers of one arc each that shuffle with
    /// each other swap their arcs at every round and never grow (and peers
    /// that joined on a regular grid shuffle in lockstep). Drawn anew in
    /// each period, the order of any two peers' rounds changes from period
    /// to period, as in a round-based simulator that draws the order of the
    /// peers anew at each round; a peer still shuffles once per period.
    pub(super) fn arm_shuffle(&mut self, now: Instant) {
        if !self.shuffle_armed && self.leave == LeavePhase::Member {
            self.shuffle_armed = true;
            let start = match self.period_end {
                Some(end) if end > now => end,
                _ => now,
            };
            let end = start + self.config.delta;
            self.period_end = Some(end);
            let period = u64::try_from(self.config.delta.as_nanos()).unwrap_or(u64::MAX);
            let at = end - Duration::from_nanos(self.rng.random_range(0..period.max(1)));
            self.push(Output::SetTimer {
                at,
                timer: Timer::Shuffle,
            });
        }
    }

    /// Moves the running mean an eighth of the way towards the current view
    /// size: slow enough that the pairwise averaging smooths out the local
    /// noise (σ ≈ 0.5 arc), fast enough to follow the network's growth.
    pub(super) fn mix_mean(&mut self) -> f64 {
        let size = self.view.size() as f64;
        let mean = self.mean_view.map_or(size, |m| m + (size - m) / 8.0);
        self.mean_view = Some(mean);
        mean
    }

    /// Draws `k` distinct entries among those marked `Live` (except `skip`)
    /// into `self.scratch[..k]`; returns how many were drawn.
    pub(super) fn sample_live(&mut self, k: usize, skip: Option<usize>) -> usize {
        self.scratch.clear();
        self.scratch.extend(
            self.view
                .entries()
                .iter()
                .enumerate()
                .filter(|(i, e)| e.mark == Mark::Live && Some(*i) != skip)
                .map(|(i, _)| i),
        );
        let k = k.min(self.scratch.len());
        for i in 0..k {
            let j = self.rng.random_range(i..self.scratch.len());
            self.scratch.swap(i, j);
        }
        self.scratch.truncate(k);
        k
    }

    /// The `(target, age)` list of the entries in `self.scratch`, as given to
    /// `partner`: an arc to the partner becomes an arc to us, of age 0.
    pub(super) fn sample_list(&self, partner: &P) -> Vec<(P, u32)> {
        self.scratch
            .iter()
            .map(|&i| {
                let e = &self.view.entries()[i];
                if &e.peer == partner {
                    (self.local.clone(), 0)
                } else {
                    (e.peer.clone(), age(self.round, e.born))
                }
            })
            .collect()
    }

    /// Remembers the arcs partner `from` announced (their ages, and that
    /// `from` will order them: see `admit`), until they arrive.
    pub(super) fn expect_arcs(&mut self, now: Instant, from: &P, sample: Vec<(P, u32)>) {
        for (peer, arc_age) in sample {
            if self.incoming.len() == MAX_INCOMING {
                self.incoming.pop_front();
            }
            self.incoming.push_back((peer, arc_age, now, from.clone()));
        }
    }

    /// Whether the arcs of our last exchanges have all arrived. Until then
    /// the view is short of them, and an exchange sized on it would give or
    /// take too few arcs. An announced arc whose bridge failed is forgotten
    /// when the failure is reported, and any after the exchange timeout or
    /// half a period, whichever is shorter (a peer never sits out a round
    /// for an arc that does not come).
    pub(super) fn settled(&mut self, now: Instant) -> bool {
        let wait = self.config.exchange_timeout.min(self.config.delta / 2);
        while let Some(&(_, _, at, _)) = self.incoming.front() {
            if at + wait > now {
                break;
            }
            self.incoming.pop_front();
        }
        self.incoming.is_empty()
    }

    /// Gives the entries listed in `self.scratch` away to `partner`: bridges
    /// first, then closes.
    pub(super) fn give_sample(&mut self, partner: &P) {
        let indices = std::mem::take(&mut self.scratch);
        for &i in &indices {
            let peer = self.view.entries()[i].peer.clone();
            let to = if &peer == partner {
                self.local.clone()
            } else {
                peer
            };
            self.push(Output::Bridge {
                from: partner.clone(),
                to,
            });
        }
        for &i in &indices {
            if self.config.await_bridges {
                self.view.set_mark(i, Mark::Giving);
            } else {
                self.view.set_mark(i, Mark::Closing);
                let to = self.view.entries()[i].peer.clone();
                self.push(Output::CloseArc { to });
            }
        }
        self.scratch = indices;
    }

    /// Whether arcs given away still wait for their bridges.
    pub(super) fn giving(&self) -> bool {
        self.view.entries().iter().any(|e| e.mark == Mark::Giving)
    }

    /// The bridge `from → to` we asked for is over: the arc given away
    /// for it closes (it moved) or is ours again (it failed).
    pub(super) fn bridge_over(&mut self, from: &P, to: &P, ok: bool) {
        let given = self.view.entries().iter().position(|e| {
            e.mark == Mark::Giving
                && if *to == self.local {
                    e.peer == *from
                } else {
                    e.peer == *to
                }
        });
        let Some(i) = given else {
            return;
        };
        if ok {
            self.view.set_mark(i, Mark::Closing);
            let to = self.view.entries()[i].peer.clone();
            self.push(Output::CloseArc { to });
        } else {
            self.view.set_mark(i, Mark::Live);
        }
    }

    pub(super) fn cancel_exchange(&mut self) {
        if self.exchange.take().is_some() {
            self.view.remark(Mark::Reserved, Mark::Live);
        }
    }

    pub(super) fn shuffle(&mut self, now: Instant) {
        self.round += 1;
        if self.exchange.is_some() || self.giving() || !self.settled(now) {
            // A sample drawn now would be half of a view still short of
            // the arcs on their way.
            debug!("spray: previous exchange still pending, round skipped");
            return;
        }
        let Some(qi) = self.view.oldest_live() else {
            return;
        };
        let live = self
            .view
            .entries()
            .iter()
            .filter(|e| e.mark == Mark::Live)
            .count();
        let k = live.div_ceil(2) - 1;
        self.sample_live(k, Some(qi));
        self.view.set_mark(qi, Mark::Reserved);
        for n in 0..self.scratch.len() {
            let i = self.scratch[n];
            self.view.set_mark(i, Mark::Reserved);
        }
        let partner = self.view.entries()[qi].peer.clone();
        let id = self.next_exchange;
        self.next_exchange += 1;
        let mean_view = self.mix_mean() as f32;
        self.scratch.insert(0, qi);
        let sample = self.sample_list(&partner);
        trace!(?partner, id, sample = k + 1, "spray: shuffle");
        self.send(
            partner.clone(),
            Message::Exchange {
                id,
                mean_view,
                sample,
            },
        );
        self.push(Output::SetTimer {
            at: now + self.config.exchange_timeout,
            timer: Timer::ExchangeTimeout { id },
        });
        self.exchange = Some(PendingExchange { id, partner });
    }

    pub(super) fn on_exchange(
        &mut self,
        now: Instant,
        from: P,
        id: u64,
        their_mean: f32,
        theirs: Vec<(P, u32)>,
    ) {
        if self.leave != LeavePhase::Member {
            debug!(?from, "spray: exchange while leaving ignored");
            return;
        }
        if !self.inview.contains(&from) {
            // The initiator shuffles with the target of one of its arcs, so it
            // holds an arc to us; otherwise it is no partner of ours.
            warn!(
                ?from,
                "spray: exchange from a peer without an arc to us ignored"
            );
            return;
        }
        if !theirs.iter().any(|(p, _)| *p == from) {
            // An initiator's sample always holds its arc to us, turned into
            // an arc to itself: a sample without it is no shuffle's.
            warn!(
                ?from,
                "spray: exchange whose sample lacks its sender ignored"
            );
            return;
        }
        let live = self
            .view
            .entries()
            .iter()
            .filter(|e| e.mark == Mark::Live)
            .count();
        if live == 0 || self.exchange.is_some() || self.giving() || !self.settled(now) {
            // Nothing to give (every arc reserved for our own exchange, or
            // given away and closing), our arcs are promised elsewhere, or
            // the arcs of our last exchange are still on their way: an
            // answer from the arcs we hold now would not be ⌈|P|/2⌉ of our
            // view, and the initiator would give half its view for it. An
            // empty answer declines; the initiator keeps its sample.
            debug!(?from, id, live, "spray: exchange declined");
            let mean_view = self.mean_view() as f32;
            self.send(
                from,
                Message::ExchangeReply {
                    id,
                    mean_view,
                    sample: Vec::new(),
                },
            );
            return;
        }
        self.sample_live(live.div_ceil(2), None);
        let mine = self.mix_mean();
        let mean = bounded_mean(mine, f64::from(their_mean));
        self.mean_view = Some(mean);
        let sample = self.sample_list(&from);
        self.send(
            from.clone(),
            Message::ExchangeReply {
                id,
                mean_view: mean as f32,
                sample,
            },
        );
        self.expect_arcs(now, &from, theirs);
        self.give_sample(&from);
    }

    pub(super) fn on_exchange_reply(
        &mut self,
        now: Instant,
        from: P,
        id: u64,
        mean: f32,
        theirs: Vec<(P, u32)>,
    ) {
        if !self
            .exchange
            .as_ref()
            .is_some_and(|e| e.id == id && e.partner == from)
        {
            debug!(?from, id, "spray: stale exchange reply ignored");
            return;
        }
        if theirs.is_empty() {
            // Declined (see `on_exchange`): the sample stays ours, and the
            // partner's mean, which it did not mix, is not taken either.
            debug!(?from, id, "spray: exchange declined by the partner");
            self.cancel_exchange();
            return;
        }
        self.exchange = None;
        let mine = self.mean_view();
        // The reply carries both means averaged: taken as is, within bounds.
        self.mean_view = Some(bound(mine, f64::from(mean)));
        self.expect_arcs(now, &from, theirs);
        self.scratch.clear();
        self.scratch.extend(
            self.view
                .entries()
                .iter()
                .enumerate()
                .filter(|(_, e)| e.mark == Mark::Reserved)
                .map(|(i, _)| i),
        );
        self.give_sample(&from);
    }
}

/// The mean of our running mean `mine` and a partner's `theirs`, the
/// partner's first held within a factor of four of ours (plus four arcs):
/// one partner moves our estimate, it cannot set it (an announced mean of
/// 1000 would make the size estimate e^1000).
pub(super) fn bounded_mean(mine: f64, theirs: f64) -> f64 {
    (mine + bound(mine, theirs)) / 2.0
}

/// `theirs` held within a factor of four of `mine`, plus four arcs.
fn bound(mine: f64, theirs: f64) -> f64 {
    theirs.clamp(mine / 4.0, mine * 4.0 + 4.0)
}
