//! Signal freshness: the wall clock the core is told, the not-after time
//! and network id of the signals it signs, and the checks of those it
//! receives (network, not-after, increasing `seq`, a bounded replay cache
//! of offers).

use std::collections::{BTreeSet, VecDeque};

use super::NodeCore;
use crate::identity::PeerId;
use crate::signal::{Freshness, SignalError, SignedSignal};
use crate::time::{Duration, Instant};

/// Clock skew tolerated between two peers' wall clocks.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(30);

/// Offers taken, by (author, session), oldest first; bounded by
/// [`crate::node::Config::replay_cache`].
#[derive(Debug, Default)]
pub(super) struct ReplayCache {
    seen: BTreeSet<(PeerId, u64)>,
    order: VecDeque<(PeerId, u64)>,
}

impl ReplayCache {
    /// Records the offer; `false` if it was seen before.
    pub(super) fn insert(&mut self, key: (PeerId, u64), capacity: usize) -> bool {
        if self.seen.contains(&key) {
            return false;
        }
        if capacity == 0 {
            return true;
        }
        while self.order.len() >= capacity {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.seen.insert(key);
        self.order.push_back(key);
        true
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.order.len()
    }
}

impl NodeCore {
    /// Tells the core the wall clock: `unix_ms` (milliseconds since the
    /// Unix epoch) at `now`. Drivers call it once at creation; from then on
    /// the core signs signals valid until the wall time plus
    /// [`crate::node::Config::signal_lifetime`] and refuses expired ones.
    /// Without it the core checks no not-after time (signals it signs claim
    /// none, and a peer that knows the time refuses them).
    pub fn set_wall_clock(&mut self, now: Instant, unix_ms: u64) {
        self.wall = Some((now, unix_ms));
    }

    /// The wall time of the input being handled, in unix ms, if known.
    pub(super) fn wall_ms(&self) -> Option<u64> {
        self.wall.map(|(at, ms)| {
            let since = self.now.saturating_duration_since(at);
            ms.saturating_add(since.as_millis() as u64)
        })
    }

    /// The freshness of a signal signed now.
    pub(super) fn freshness(&self) -> Freshness {
        Freshness {
            network: self.config.network.clone(),
            not_after: self.wall_ms().map_or(0, |ms| {
                ms.saturating_add(self.config.signal_lifetime.as_millis() as u64)
            }),
        }
    }

    /// Checks network and not-after time of a received signal.
    pub(super) fn check_freshness(&self, signed: &SignedSignal) -> Result<(), SignalError> {
        let ahead = (self.config.signal_lifetime + MAX_CLOCK_SKEW).as_millis() as u64;
        signed.check_freshness(&self.config.network, self.wall_ms(), ahead)
    }

    /// Records an offer of `from` for `session`; `false` for a replay.
    pub(super) fn remember_offer(&mut self, from: PeerId, session: u64) -> bool {
        self.replay
            .insert((from, session), self.config.replay_cache)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replay_cache_is_bounded_and_refuses_what_it_holds() {
        let mut c = ReplayCache::default();
        let p = PeerId::from_bytes([1; 32]);
        assert!(c.insert((p, 1), 2));
        assert!(!c.insert((p, 1), 2));
        assert!(c.insert((p, 2), 2));
        assert!(c.insert((p, 3), 2));
        assert_eq!(c.len(), 2);
        // The oldest was forgotten.
        assert!(c.insert((p, 1), 2));
    }
}
