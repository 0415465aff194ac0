//! Giving back the memory a peer's buffers keep from a busier past.

use std::fmt;

use rand::Rng;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::State;

/// Room a buffer may keep beyond twice what it holds, and keeps beyond one
/// and a half times when trimmed (see `State::trim`).
const SLACK: usize = 8;

/// The capacity to trim a buffer holding `len` items with room for
/// `capacity` down to, if it keeps more than it will need again.
fn trimmed(len: usize, capacity: usize) -> Option<usize> {
    (capacity > 2 * len + SLACK).then_some(len + len / 2 + SLACK)
}

impl<P, R> State<P, R>
where
    P: Ord + Clone + fmt::Debug + Serialize + DeserializeOwned + Send + 'static,
    R: Rng + Send + 'static,
{
    /// Gives back, once per period, the memory the buffers keep from a
    /// busier past (a view that was large after a burst of joins, a join
    /// that filled the announced arcs): every buffer keeps room for what it
    /// holds and for an exchange's worth more, so that steady shuffles never
    /// allocate, and a million peers' state stays bounded by their views of
    /// now rather than by the largest they ever had.
    pub(super) fn trim(&mut self) {
        if let Some(c) = trimmed(self.view.entries().len(), self.view.capacity()) {
            self.view.shrink_to(c);
        }
        for set in [&mut self.inview, &mut self.outview] {
            if let Some(c) = trimmed(set.distinct(), set.capacity()) {
                set.shrink_to(c);
            }
        }
        if let Some(c) = trimmed(self.incoming.len(), self.incoming.capacity()) {
            self.incoming.shrink_to(c);
        }
        if let Some(c) = trimmed(self.scratch.len(), self.scratch.capacity()) {
            self.scratch.shrink_to(c);
        }
        if let Some(c) = trimmed(self.orders.len(), self.orders.capacity()) {
            self.orders.shrink_to(c);
        }
        if let Some(c) = trimmed(self.joined.len(), self.joined.capacity()) {
            self.joined.shrink_to(c);
        }
        if let Some(c) = trimmed(self.down.len(), self.down.capacity()) {
            self.down.shrink_to(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use n2n_core::Direction;
    use n2n_core::overlay::{ArcCloseReason, Input, Overlay};
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;
    use crate::spray::{Config, Timer};

    fn drain(s: &mut State<u32, SmallRng>) {
        while s.poll_output().is_some() {}
    }

    /// A view that held 200 arcs and now holds 4 keeps room for those 4
    /// and the slack after its next round; at the round after, nothing
    /// moves.
    #[test]
    fn a_round_gives_back_what_a_burst_left() {
        let now = Instant::now();
        let mut s = State::new(0u32, Config::default(), SmallRng::seed_from_u64(1));
        for peer in 1..=200u32 {
            for direction in [Direction::Outgoing, Direction::Incoming] {
                s.handle(now, Input::ArcOpened { peer, direction });
            }
        }
        for peer in 5..=200u32 {
            for direction in [Direction::Outgoing, Direction::Incoming] {
                let reason = ArcCloseReason::Closed;
                s.handle(
                    now,
                    Input::ArcClosed {
                        peer,
                        direction,
                        reason,
                    },
                );
            }
        }
        drain(&mut s);
        assert!(s.view.capacity() >= 200 && s.inview.capacity() >= 200);
        s.handle(now + Duration::from_secs(60), Input::Timer(Timer::Shuffle));
        drain(&mut s);
        assert_eq!((s.view_size(), s.inview.len()), (4, 4));
        assert!(s.view.capacity() <= 4 + 2 + SLACK, "{}", s.view.capacity());
        assert!(s.outview.capacity() <= 4 + 2 + SLACK);
        assert!(s.inview.capacity() <= 4 + 2 + SLACK);
        let kept = (s.view.capacity(), s.inview.capacity());
        s.handle(now + Duration::from_secs(120), Input::Timer(Timer::Shuffle));
        drain(&mut s);
        assert_eq!((s.view.capacity(), s.inview.capacity()), kept);
    }
}
