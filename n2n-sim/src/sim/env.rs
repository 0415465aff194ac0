//! The events of the latency engine, and the environment every shard reads.

use std::time::{Duration, Instant};

use crate::queue::Entry;
use crate::rng::splitmix as mix;

use super::Latency;

pub(super) const NONE: u32 = u32::MAX;

/// Logical shards: peer `p` and every event it receives live in shard
/// `p % SHARDS`. Fixed, so that a run never depends on the thread count.
pub const SHARDS: usize = 8;

/// An event, always for one peer (the one named first by [`Kind::peer`]):
/// what touches two peers is two events at the same instant, one on each
/// side, so that shards never touch each other's peers.
pub(super) enum Kind<T> {
    /// An overlay message reaches `to`.
    Message {
        from: u32,
        to: u32,
        payload: Vec<u8>,
    },
    /// Arc `from → to` (an `OpenArc`) opens, seen from `from`.
    OpenOut {
        from: u32,
        to: u32,
    },
    /// Arc `from → to` (an `OpenArc`) opens, seen from `to`.
    OpenIn {
        from: u32,
        to: u32,
    },
    /// Arc `from → to` closes, seen from `from`.
    CloseOut {
        from: u32,
        to: u32,
    },
    /// Arc `from → to` closes, seen from `to`.
    CloseIn {
        from: u32,
        to: u32,
    },
    /// `via`'s order to open an arc to `to` reaches `from`.
    BridgeOrder {
        via: u32,
        from: u32,
        to: u32,
    },
    /// The bridged arc `from → to` opens (if every peer it needs is up), seen
    /// from `from`; `signaled`: the handshake went through `via`.
    BridgeOut {
        via: u32,
        from: u32,
        to: u32,
        signaled: bool,
    },
    /// The same, seen from `to`.
    BridgeIn {
        via: u32,
        from: u32,
        to: u32,
        signaled: bool,
    },
    /// `via` learns that its bridge failed.
    BridgeFailed {
        via: u32,
        from: u32,
        to: u32,
    },
    /// `peer` learns that its arc to `to` did not open.
    ConnectFailed {
        peer: u32,
        to: u32,
    },
    Timer {
        peer: u32,
        timer: T,
    },
    Detect {
        peer: u32,
        dead: u32,
    },
    Join {
        peer: u32,
        contact: u32,
    },
    Leave {
        peer: u32,
    },
}

impl<T> Kind<T> {
    /// The peer the event is for.
    pub(super) fn peer(&self) -> u32 {
        match *self {
            Kind::Message { to, .. } | Kind::OpenIn { to, .. } | Kind::CloseIn { to, .. } => to,
            Kind::BridgeIn { to, .. } => to,
            Kind::OpenOut { from, .. }
            | Kind::CloseOut { from, .. }
            | Kind::BridgeOrder { from, .. }
            | Kind::BridgeOut { from, .. } => from,
            Kind::BridgeFailed { via, .. } => via,
            Kind::ConnectFailed { peer, .. }
            | Kind::Timer { peer, .. }
            | Kind::Detect { peer, .. }
            | Kind::Join { peer, .. }
            | Kind::Leave { peer } => peer,
        }
    }
}

/// How many buckets ahead a peer's state is prefetched.
pub(super) const STATE_AHEAD: u64 = 2;
/// Cache lines of a state prefetched.
pub(super) const STATE_LINES: usize = 3;
/// A call spanning fewer windows runs on one thread: starting the others
/// would cost more than they save.
pub const PARALLEL_WINDOWS: u64 = 64;
/// Events handed from one shard to another.
pub(super) type Mail<T> = Vec<Entry<Kind<T>>>;
pub(super) type Factory<O> = Box<dyn FnMut(u32, u64) -> O>;
pub(super) type Hook<O> = fn(&O) -> [*const u8; 4];

/// Bit `i` of a bitmap.
pub(super) fn bit(bits: &[u64], i: u32) -> bool {
    bits.get(i as usize / 64)
        .is_some_and(|w| w & (1 << (i % 64)) != 0)
}

pub(super) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// What every shard reads and none writes while a window runs.
pub(super) struct Env<O> {
    pub(super) seed: u64,
    pub(super) latency: Latency,
    pub(super) loss: f64,
    pub(super) message_loss: f64,
    pub(super) base: Instant,
    /// One bit per peer: alive. Checked for every input and every output's
    /// recipient, it stays in the cache where the states would not.
    pub(super) alive_bits: Vec<u64>,
    /// Join connection per peer: (contact, until).
    pub(super) links: Vec<(u32, u64)>,
    /// One bit per peer: has a join connection (`links`) that may be up.
    pub(super) link_bits: Vec<u64>,
    pub(super) prefetch_hook: Option<Hook<O>>,
}

impl<O> Env<O> {
    pub(super) fn alive(&self, peer: u32) -> bool {
        bit(&self.alive_bits, peer)
    }

    /// One-way delay of the link between `a` and `b`.
    pub(super) fn hop(&self, a: u32, b: u32) -> u64 {
        match self.latency {
            Latency::Fixed(d) => micros(d),
            Latency::Uniform { min, max } => {
                let (lo, hi) = (micros(min), micros(max));
                if hi <= lo {
                    return lo;
                }
                let link = (u64::from(a.min(b)) << 32) | u64::from(a.max(b));
                // Scaled by a multiplication rather than a division: this
                // runs for every message and arc change.
                let draw = u128::from(mix(self.seed ^ mix(link)));
                lo + ((draw * u128::from(hi - lo + 1)) >> 64) as u64
            }
        }
    }

    /// The shortest hop: no event for another peer lands sooner.
    pub(super) fn min_hop(&self) -> u64 {
        match self.latency {
            Latency::Fixed(d) => micros(d),
            Latency::Uniform { min, .. } => micros(min),
        }
    }

    /// Whether `a` and `b` have a join connection up at `now`.
    pub(super) fn linked(&self, a: u32, b: u32, now: u64) -> bool {
        let one = |x: u32, y: u32| {
            bit(&self.link_bits, x) && {
                let (peer, until) = self.links[x as usize];
                peer == y && until >= now
            }
        };
        one(a, b) || one(b, a)
    }
}
