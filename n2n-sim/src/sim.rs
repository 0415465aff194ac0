//! The event loop and the environment's semantics.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use n2n_core::Direction;
use n2n_core::overlay::{ArcCloseReason, Input, Output, Overlay, Views};
use rand::Rng;

use crate::barrier::{Barrier, BreakOnPanic};
use crate::prefetch;
use crate::queue::{Calendar, Entry};
use crate::rng::{SimRng, splitmix as mix};

use crate::stats::{self, Snapshot};

/// One-way delay of one hop between two peers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Latency {
    /// Always the same.
    Fixed(Duration),
    /// Uniform in `[min, max]`, drawn once per link (from the seed and the
    /// two ends): a link keeps its latency, so messages on it arrive in the
    /// order they were sent, as on a real connection.
    Uniform {
        /// Smallest delay.
        min: Duration,
        /// Largest delay.
        max: Duration,
    },
}

/// Settings of a simulation.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Master seed: the simulator's own draws (latencies, losses, contacts)
    /// and every peer's RNG seed derive from it.
    pub seed: u64,
    /// Delay of one hop (a message, an arc notice, each step of a bridge).
    pub latency: Latency,
    /// How long after a crash its neighbours notice it (the runtime's idle
    /// timeout).
    pub detection_delay: Duration,
    /// Signaling loss: probability that one signaling hop of a bridge is
    /// lost. A bridge between peers not yet connected relays an offer
    /// `from → via → to` and an answer `to → via → from`, four hops; if one is
    /// lost the arc does not open: `from` gets `ConnectFailed` (Spray's arc-down
    /// rule then duplicates an arc, so the arc count holds) and `via` gets
    /// `BridgeFailed`. The bridge order itself, overlay messages and arc
    /// notices ride on open connections and are not lost by this rate.
    pub loss: f64,
    /// Probability that one overlay message (`Output::Send`) is lost on its
    /// connection, apart from signaling (0 by default: data channels are
    /// reliable). A lost shuffle message leaves its initiator to time out.
    pub message_loss: f64,
    /// How long the connection a joining peer opened to its contact stays up
    /// without arcs.
    pub linger: Duration,
    /// Threads that run the shards of a window at once (0: as many as the
    /// machine has, at most [`SHARDS`]). Results do not depend on it.
    pub threads: usize,
    /// Networks of fewer peers run on one thread whatever
    /// [`Config::threads`] says: their windows hold too few events to pay
    /// for the threads' meetings (default 20,000).
    pub parallel_from: usize,
}

impl Default for Config {
    /// Seed 0, latency uniform in 10–50 ms, detection after 5 s, no loss of
    /// either kind, 10 s linger, every core from 20,000 peers on.
    fn default() -> Self {
        Self {
            seed: 0,
            latency: Latency::Uniform {
                min: Duration::from_millis(10),
                max: Duration::from_millis(50),
            },
            detection_delay: Duration::from_secs(5),
            loss: 0.0,
            message_loss: 0.0,
            linger: Duration::from_secs(10),
            threads: 0,
            parallel_from: 20_000,
        }
    }
}

/// What the simulator did, counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Events processed.
    pub events: u64,
    /// Inputs fed to overlays.
    pub inputs: u64,
    /// Overlay messages delivered.
    pub messages: u64,
    /// Signaling hops lost (the `loss` rate), at most one counted per bridge.
    pub lost: u64,
    /// Overlay messages lost (the `message_loss` rate).
    pub messages_lost: u64,
    /// Messages to a peer that was not connected, or gone.
    pub undeliverable: u64,
    /// Arcs opened (one per occurrence).
    pub arcs_opened: u64,
    /// Arcs closed (one per occurrence, crashes included).
    pub arcs_closed: u64,
    /// Bridges that opened their arc.
    pub bridges: u64,
    /// Bridges that failed (`BridgeFailed` delivered or due).
    pub bridge_failures: u64,
    /// `ConnectFailed` delivered.
    pub connect_failures: u64,
    /// `CloseArc` for an arc the peer did not hold (an overlay bug).
    pub spurious_closes: u64,
    /// Peers crashed.
    pub crashes: u64,
}

impl Counters {
    fn add(&mut self, o: &Counters) {
        self.events += o.events;
        self.inputs += o.inputs;
        self.messages += o.messages;
        self.lost += o.lost;
        self.messages_lost += o.messages_lost;
        self.undeliverable += o.undeliverable;
        self.arcs_opened += o.arcs_opened;
        self.arcs_closed += o.arcs_closed;
        self.bridges += o.bridges;
        self.bridge_failures += o.bridge_failures;
        self.connect_failures += o.connect_failures;
        self.spurious_closes += o.spurious_closes;
        self.crashes += o.crashes;
    }
}

const NONE: u32 = u32::MAX;

/// Logical shards: peer `p` and every event it receives live in shard
/// `p % SHARDS`. Fixed, so that a run never depends on the thread count.
pub const SHARDS: usize = 8;

/// An event, always for one peer (the one named first by [`Kind::peer`]):
/// what touches two peers is two events at the same instant, one on each
/// side, so that shards never touch each other's peers.
enum Kind<T> {
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
    fn peer(&self) -> u32 {
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
const STATE_AHEAD: u64 = 2;
/// Cache lines of a state prefetched.
const STATE_LINES: usize = 3;
/// A call spanning fewer windows runs on one thread: starting the others
/// would cost more than they save.
pub const PARALLEL_WINDOWS: u64 = 64;
/// Events handed from one shard to another.
type Mail<T> = Vec<Entry<Kind<T>>>;
type Factory<O> = Box<dyn FnMut(u32, u64) -> O>;
type Hook<O> = fn(&O) -> [*const u8; 4];

/// Bit `i` of a bitmap.
fn bit(bits: &[u64], i: u32) -> bool {
    bits.get(i as usize / 64)
        .is_some_and(|w| w & (1 << (i % 64)) != 0)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// What every shard reads and none writes while a window runs.
struct Env<O> {
    seed: u64,
    latency: Latency,
    loss: f64,
    message_loss: f64,
    base: Instant,
    /// One bit per peer: alive. Checked for every input and every output's
    /// recipient, it stays in the cache where the states would not.
    alive_bits: Vec<u64>,
    /// Join connection per peer: (contact, until).
    links: Vec<(u32, u64)>,
    /// One bit per peer: has a join connection (`links`) that may be up.
    link_bits: Vec<u64>,
    prefetch_hook: Option<Hook<O>>,
}

impl<O> Env<O> {
    fn alive(&self, peer: u32) -> bool {
        bit(&self.alive_bits, peer)
    }

    /// One-way delay of the link between `a` and `b`.
    fn hop(&self, a: u32, b: u32) -> u64 {
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
    fn min_hop(&self) -> u64 {
        match self.latency {
            Latency::Fixed(d) => micros(d),
            Latency::Uniform { min, .. } => micros(min),
        }
    }

    /// Whether `a` and `b` have a join connection up at `now`.
    fn linked(&self, a: u32, b: u32, now: u64) -> bool {
        let one = |x: u32, y: u32| {
            bit(&self.link_bits, x) && {
                let (peer, until) = self.links[x as usize];
                peer == y && until >= now
            }
        };
        one(a, b) || one(b, a)
    }
}

/// The peers `p` with `p % SHARDS == index`, their events and their draws.
struct Shard<O: Overlay<u32> + Views<u32>> {
    index: u32,
    /// Peer `p`'s state at `p / SHARDS`, live or not (a crashed peer's is
    /// replaced by a fresh one, never fed, so that its memory goes).
    states: Vec<O>,
    queue: Calendar<Kind<O::Timer>>,
    seq: u64,
    now: u64,
    /// The end of the window being run: events for other shards land there
    /// or later.
    horizon: u64,
    rng: SimRng,
    counters: Counters,
    opening: i64,
    closing: i64,
    /// Events for other shards, by shard, handed over between windows.
    outbox: Vec<Vec<Entry<Kind<O::Timer>>>>,
    outbuf: Vec<Output<u32, O::Timer>>,
    /// `queue.loads()` when the last bucket was prefetched.
    loaded: u64,
}

impl<O: Overlay<u32> + Views<u32>> Shard<O> {
    fn new(index: u32, seed: u64) -> Self {
        Self {
            index,
            states: Vec::new(),
            queue: Calendar::new(),
            seq: 0,
            now: 0,
            horizon: 0,
            rng: SimRng::seed_from(mix(seed ^ 0x5eed ^ mix(u64::from(index) + 1))),
            counters: Counters::default(),
            opening: 0,
            closing: 0,
            outbox: (0..SHARDS).map(|_| Vec::new()).collect(),
            outbuf: Vec::new(),
            loaded: 0,
        }
    }

    fn state(&self, env: &Env<O>, peer: u32) -> Option<&O> {
        env.alive(peer)
            .then(|| &self.states[peer as usize / SHARDS])
    }

    /// Queues `kind` at `at`: here if its peer is ours, else in the outbox
    /// (at the window's end at the earliest).
    fn schedule(&mut self, at: u64, kind: Kind<O::Timer>) {
        let seq = (self.seq << 3) | u64::from(self.index);
        self.seq += 1;
        let dst = kind.peer() as usize % SHARDS;
        if dst == self.index as usize {
            self.queue.push(at, seq, kind);
        } else {
            let at = at.max(self.horizon);
            self.outbox[dst].push(Entry {
                at,
                seq,
                event: kind,
            });
        }
    }

    /// Runs every event due up to `until` (inclusive).
    fn run(&mut self, env: &Env<O>, until: u64) {
        self.horizon = until + 1;
        while let Some(event) = self.queue.pop_until(until) {
            if self.queue.loads() != self.loaded {
                self.loaded = self.queue.loads();
                self.prefetch(env);
            }
            self.now = self.now.max(event.at);
            self.counters.events += 1;
            self.process(env, event.event);
        }
        self.now = self.now.max(until);
    }

    /// Prefetches, without waiting, what the events of the next buckets
    /// will read, when a bucket starts being drained: the first cache lines
    /// of the states of the peers of the bucket [`STATE_AHEAD`] buckets
    /// ahead, and the heap buffers (through the hook of
    /// [`Sim::set_prefetch`]) of the peers of the bucket after this one,
    /// whose states arrived meanwhile. Each event lands on a random peer
    /// whose state is out of the cache at 100k peers: loaded when needed,
    /// every miss would stall the event; requested a bucket or two ahead,
    /// dozens of them arrive at once while the events before them run.
    fn prefetch(&self, env: &Env<O>) {
        for e in self.queue.bucket_ahead(STATE_AHEAD) {
            let p = e.event.peer();
            if env.alive(p) {
                let at = (&raw const self.states[p as usize / SHARDS]).cast::<u8>();
                for line in 0..STATE_LINES {
                    prefetch::line(at.wrapping_add(64 * line));
                }
            }
        }
        if let Some(hook) = env.prefetch_hook {
            for e in self.queue.bucket_ahead(1) {
                if let Some(o) = self.state(env, e.event.peer()) {
                    for at in hook(o) {
                        prefetch::line(at);
                    }
                }
            }
        }
    }

    /// Draws whether something is lost at rate `p` (no draw when 0).
    fn lost(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random::<f64>() < p
    }

    /// Whether our peer `a` and `b` are connected: an arc either way (in
    /// `a`'s own mirrors), or a join connection.
    fn connected(&self, env: &Env<O>, a: u32, b: u32) -> bool {
        if a == b {
            return false;
        }
        if let Some(o) = self.state(env, a)
            && (o.outview().contains(&b) || o.inview().contains(&b))
        {
            return true;
        }
        env.linked(a, b, self.now)
    }

    fn deliver(&mut self, env: &Env<O>, peer: u32, input: Input<u32, O::Timer>) {
        if !env.alive(peer) {
            return;
        }
        self.counters.inputs += 1;
        let overlay = &mut self.states[peer as usize / SHARDS];
        overlay.handle(env.base + Duration::from_micros(self.now), input);
        let mut buf = std::mem::take(&mut self.outbuf);
        while let Some(out) = overlay.poll_output() {
            buf.push(out);
        }
        for out in buf.drain(..) {
            self.route(env, peer, out);
        }
        self.outbuf = buf;
    }

    fn route(&mut self, env: &Env<O>, at: u32, output: Output<u32, O::Timer>) {
        match output {
            Output::Send { to, payload } => {
                if !env.alive(to) || !self.connected(env, at, to) {
                    self.counters.undeliverable += 1;
                } else if self.lost(env.message_loss) {
                    self.counters.messages_lost += 1;
                } else {
                    let t = self.now + env.hop(at, to);
                    let kind = Kind::Message {
                        from: at,
                        to,
                        payload,
                    };
                    self.schedule(t, kind);
                }
            }
            Output::OpenArc { to } => {
                let t = self.now + env.hop(at, to);
                if env.alive(to) && self.connected(env, at, to) {
                    self.opening += 1;
                    self.schedule(t, Kind::OpenOut { from: at, to });
                    self.schedule(t, Kind::OpenIn { from: at, to });
                } else {
                    self.schedule(t, Kind::ConnectFailed { peer: at, to });
                }
            }
            Output::CloseArc { to } => {
                let t = self.now + env.hop(at, to);
                self.closing += 1;
                self.schedule(t, Kind::CloseOut { from: at, to });
                self.schedule(t, Kind::CloseIn { from: at, to });
            }
            Output::Bridge { from, to } => self.route_bridge(env, at, from, to),
            Output::SetTimer { at: when, timer } => {
                let t = micros(when.saturating_duration_since(env.base)).max(self.now);
                self.schedule(t, Kind::Timer { peer: at, timer });
            }
            Output::StateChanged(_) => {}
            // Connections through neighbours and samples of other overlays
            // are the node's (`--runtime node`), not of these engines.
            _ => {}
        }
    }

    fn route_bridge(&mut self, env: &Env<O>, via: u32, from: u32, to: u32) {
        let order = self.now + env.hop(via, from);
        if !env.alive(from) || !self.connected(env, via, from) {
            self.schedule(order, Kind::BridgeFailed { via, from, to });
            return;
        }
        let reachable =
            from != to && (to == via || (env.alive(to) && self.connected(env, via, to)));
        if !reachable {
            self.schedule(order, Kind::ConnectFailed { peer: from, to });
            self.schedule(order, Kind::BridgeFailed { via, from, to });
            return;
        }
        self.opening += 1;
        self.schedule(order, Kind::BridgeOrder { via, from, to });
    }

    /// `from` got `via`'s order at `now`: the arc opens one hop later if the
    /// two are connected already, else after an offer and an answer relayed
    /// by `via` (four hops, each lost at [`Config::loss`]).
    fn bridge_order(&mut self, env: &Env<O>, via: u32, from: u32, to: u32) {
        if !env.alive(from) {
            self.opening -= 1;
            let t = self.now + env.hop(from, via);
            self.schedule(t, Kind::BridgeFailed { via, from, to });
            return;
        }
        let direct = to == via || self.connected(env, from, to);
        let t = if direct {
            self.now + env.hop(from, to)
        } else {
            self.now + 2 * (env.hop(from, via) + env.hop(via, to))
        };
        let mut lost = false;
        if !direct {
            for _ in 0..4 {
                lost |= self.lost(env.loss);
            }
        }
        if lost {
            self.opening -= 1;
            self.counters.lost += 1;
            self.schedule(t, Kind::ConnectFailed { peer: from, to });
            self.schedule(t, Kind::BridgeFailed { via, from, to });
        } else {
            let signaled = !direct;
            self.schedule(
                t,
                Kind::BridgeOut {
                    via,
                    from,
                    to,
                    signaled,
                },
            );
            self.schedule(
                t,
                Kind::BridgeIn {
                    via,
                    from,
                    to,
                    signaled,
                },
            );
        }
    }

    fn process(&mut self, env: &Env<O>, kind: Kind<O::Timer>) {
        match kind {
            Kind::Message { from, to, payload } => {
                if env.alive(to) {
                    self.counters.messages += 1;
                    self.deliver(env, to, Input::Message { from, payload });
                } else {
                    self.counters.undeliverable += 1;
                }
            }
            Kind::OpenOut { from, to } => {
                self.opening -= 1;
                if !env.alive(from) {
                } else if env.alive(to) {
                    self.counters.arcs_opened += 1;
                    self.opened(env, from, to, Direction::Outgoing);
                } else {
                    self.connect_failed(env, from, to);
                }
            }
            Kind::OpenIn { from, to } => {
                if env.alive(from) {
                    self.opened(env, to, from, Direction::Incoming);
                }
            }
            Kind::CloseOut { from, to } => {
                self.closing -= 1;
                let held = self
                    .state(env, from)
                    .is_some_and(|o| o.outview().contains(&to));
                if held {
                    self.counters.arcs_closed += 1;
                    let input = Input::ArcClosed {
                        peer: to,
                        direction: Direction::Outgoing,
                        reason: ArcCloseReason::Closed,
                    };
                    self.deliver(env, from, input);
                } else if env.alive(from) {
                    self.counters.spurious_closes += 1;
                }
            }
            Kind::CloseIn { from, to } => {
                // The mirror of `CloseOut`: `from` alive held the arc iff we
                // hold its incoming end.
                let held = env.alive(from)
                    && self
                        .state(env, to)
                        .is_some_and(|o| o.inview().contains(&from));
                if held {
                    let input = Input::ArcClosed {
                        peer: from,
                        direction: Direction::Incoming,
                        reason: ArcCloseReason::Closed,
                    };
                    self.deliver(env, to, input);
                }
            }
            Kind::BridgeOrder { via, from, to } => self.bridge_order(env, via, from, to),
            Kind::BridgeOut {
                via,
                from,
                to,
                signaled,
            } => {
                self.opening -= 1;
                if bridge_holds(env, via, from, to, signaled) {
                    self.counters.bridges += 1;
                    self.counters.arcs_opened += 1;
                    self.opened(env, from, to, Direction::Outgoing);
                } else {
                    self.connect_failed(env, from, to);
                    let t = self.now + env.hop(from, via);
                    self.schedule(t, Kind::BridgeFailed { via, from, to });
                }
            }
            Kind::BridgeIn {
                via,
                from,
                to,
                signaled,
            } => {
                if bridge_holds(env, via, from, to, signaled) {
                    self.opened(env, to, from, Direction::Incoming);
                }
            }
            Kind::BridgeFailed { via, from, to } => {
                self.counters.bridge_failures += 1;
                let input = Input::BridgeFailed {
                    from,
                    to,
                    reason: "bridge failed".into(),
                };
                self.deliver(env, via, input);
            }
            Kind::ConnectFailed { peer, to } => self.connect_failed(env, peer, to),
            Kind::Timer { peer, timer } => self.deliver(env, peer, Input::Timer(timer)),
            Kind::Detect { peer, dead } => {
                let Some(o) = self.state(env, peer) else {
                    return;
                };
                let (outs, ins) = (o.outview().count(&dead), o.inview().count(&dead));
                for (n, direction) in [(outs, Direction::Outgoing), (ins, Direction::Incoming)] {
                    for _ in 0..n {
                        self.counters.arcs_closed += 1;
                        let input = Input::ArcClosed {
                            peer: dead,
                            direction,
                            reason: ArcCloseReason::PeerDown("crashed".into()),
                        };
                        self.deliver(env, peer, input);
                    }
                }
            }
            Kind::Join { peer, contact } => self.deliver(env, peer, Input::Join { contact }),
            Kind::Leave { peer } => self.deliver(env, peer, Input::Leave),
        }
    }

    /// `at` gets its end of an arc with `peer` opened.
    fn opened(&mut self, env: &Env<O>, at: u32, peer: u32, direction: Direction) {
        self.deliver(env, at, Input::ArcOpened { peer, direction });
    }

    fn connect_failed(&mut self, env: &Env<O>, peer: u32, to: u32) {
        if env.alive(peer) {
            self.counters.connect_failures += 1;
            let input = Input::ConnectFailed {
                peer: to,
                reason: "unreachable".into(),
            };
            self.deliver(env, peer, input);
        }
    }
}

/// Whether a bridged arc opens: both ends up, and `via` too if the
/// handshake went through it. Both sides decide alike (liveness changes
/// only between windows).
fn bridge_holds<O>(env: &Env<O>, via: u32, from: u32, to: u32, signaled: bool) -> bool {
    env.alive(from) && env.alive(to) && (!signaled || env.alive(via))
}

/// A simulated network of overlays `O` over peer ids `0..n` (`u32`).
///
/// Time is virtual (microseconds from the start); nothing runs between
/// calls. The environment honours the same contract as the node runtime:
///
/// - `Send { to }` reaches `to` after one hop as `Input::Message`, if the two
///   are connected (an arc either way, or a join's fresh connection), unless
///   lost at rate [`Config::message_loss`].
/// - `OpenArc { to }` (to a connected peer) gives `ArcOpened(Outgoing)` to the
///   sender and `ArcOpened(Incoming)` to `to` after one hop, at the same
///   instant; if `to` is gone or not connected, the sender gets
///   `ConnectFailed`.
/// - `CloseArc { to }`: `ArcClosed(Closed)` on both sides after one hop.
/// - `Bridge { from, to }` by `via`: if `from` is a live neighbour of `via`
///   and `to` is `via` or a live neighbour, the order reaches `from` after a
///   hop; the arc then opens on both sides one hop later if `from` and `to`
///   are connected already, else after an offer and an answer relayed by
///   `via` (four hops). Otherwise `via` gets `BridgeFailed`, and `from` gets
///   `ConnectFailed` if it took the order but could not reach `to` (a peer
///   gone meanwhile, `via` gone during the handshake). Each signaling hop is
///   lost at rate [`Config::loss`]; a bridge that loses one ends as one that
///   could not reach `to`.
/// - `SetTimer` fires `Input::Timer` at its instant.
/// - A crash removes the peer at once; after [`Config::detection_delay`]
///   each neighbour gets `ArcClosed(PeerDown)` once per arc occurrence it
///   still has with it, in both directions.
///
/// Connectivity is decided when an output is emitted (a connection lingers
/// that long); an arc is created and removed on both sides at the same
/// instant, so that between calls the overlays' arc mirrors are the truth
/// the simulator reads.
///
/// # Shards and threads
///
/// Peers are split into [`SHARDS`] shards (`p % SHARDS`), each with its own
/// event queue and RNG; every event is for one peer, and what touches two
/// peers is two events at the same instant. A message or arc change for
/// another peer takes at least the shortest hop, so time runs in windows of
/// that length: within one, shards share nothing but read-only tables
/// (liveness, join connections) and run at once on [`Config::threads`]
/// threads (from [`Config::parallel_from`] peers on, in calls that span
/// [`PARALLEL_WINDOWS`] windows or more; a free thread takes the next shard);
/// between windows, events for other shards are handed over. Events at the
/// same instant run in scheduling order within a shard. A seed reproduces a
/// run exactly whatever the thread count.
pub struct Sim<O: Overlay<u32> + Views<u32>> {
    config: Config,
    factory: Factory<O>,
    now: u64,
    threads: usize,
    detection_delay: u64,
    linger: u64,
    env: Env<O>,
    shards: Vec<Shard<O>>,
    /// Events handed from shard `s` to shard `d` wait in `mail[d * SHARDS + s]`
    /// between windows.
    mail: Vec<Vec<Entry<Kind<O::Timer>>>>,
    peers: usize,
    alive: Vec<u32>,
    alive_pos: Vec<u32>,
    /// Join connections by expiry, to clear their bits: `(until, peer)`.
    expiring: std::collections::VecDeque<(u64, u32)>,
    rng: SimRng,
    crashes: u64,
}

impl<O: Overlay<u32> + Views<u32>> fmt::Debug for Sim<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sim")
            .field("now_us", &self.now)
            .field("peers", &self.peers)
            .field("alive", &self.alive.len())
            .field("threads", &self.threads)
            .field("pending_events", &self.pending_events())
            .field("counters", &self.counters())
            .finish_non_exhaustive()
    }
}

impl<O: Overlay<u32> + Views<u32> + Send> Sim<O>
where
    O::Timer: Send,
{
    /// An empty network; `factory(id, seed)` builds peer `id`'s overlay with
    /// the RNG seed derived for it from [`Config::seed`].
    pub fn new(config: Config, factory: impl FnMut(u32, u64) -> O + 'static) -> Self {
        let threads = match config.threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
        .clamp(1, SHARDS);
        Self {
            config: config.clone(),
            factory: Box::new(factory),
            now: 0,
            threads,
            detection_delay: micros(config.detection_delay),
            linger: micros(config.linger),
            env: Env {
                seed: config.seed,
                latency: config.latency,
                loss: config.loss,
                message_loss: config.message_loss,
                base: Instant::now(),
                alive_bits: Vec::new(),
                links: Vec::new(),
                link_bits: Vec::new(),
                prefetch_hook: None,
            },
            shards: (0..SHARDS as u32)
                .map(|i| Shard::new(i, config.seed))
                .collect(),
            mail: (0..SHARDS * SHARDS).map(|_| Vec::new()).collect(),
            peers: 0,
            alive: Vec::new(),
            alive_pos: Vec::new(),
            expiring: std::collections::VecDeque::new(),
            rng: SimRng::seed_from(mix(config.seed ^ 0x5eed)),
            crashes: 0,
        }
    }

    // ----- getters -----

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Virtual time since the start.
    pub fn now(&self) -> Duration {
        Duration::from_micros(self.now)
    }

    /// Threads that run the shards (see [`Config::threads`]).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Counters so far, summed over the shards.
    pub fn counters(&self) -> Counters {
        let mut c = Counters {
            crashes: self.crashes,
            ..Counters::default()
        };
        for s in &self.shards {
            c.add(&s.counters);
        }
        c
    }

    /// Arc changes on their way: `(opening, closing)`, the `OpenArc` and
    /// `Bridge` outputs (and `CloseArc` outputs) not yet applied. A shuffle
    /// closes its arcs a hop before the bridged ones open, so the arc total
    /// of a busy network is invariant only counted with these:
    /// `arcs_out + opening − closing`.
    pub fn arcs_in_flight(&self) -> (u64, u64) {
        let opening: i64 = self.shards.iter().map(|s| s.opening).sum();
        let closing: i64 = self.shards.iter().map(|s| s.closing).sum();
        (opening.max(0) as u64, closing.max(0) as u64)
    }

    /// Events waiting.
    pub fn pending_events(&self) -> usize {
        let queued: usize = self.shards.iter().map(|s| s.queue.len()).sum();
        let mailed: usize = self.mail.iter().map(Vec::len).sum();
        queued + mailed
    }

    /// Peers ever added (live or not).
    pub fn len(&self) -> usize {
        self.peers
    }

    /// Whether no peer was ever added.
    pub fn is_empty(&self) -> bool {
        self.peers == 0
    }

    /// Live peers, in no particular order.
    pub fn alive(&self) -> &[u32] {
        &self.alive
    }

    /// Whether `peer` exists and has not crashed.
    pub fn is_alive(&self, peer: u32) -> bool {
        self.env.alive(peer)
    }

    /// The overlay of a live peer.
    pub fn overlay(&self, peer: u32) -> Option<&O> {
        self.shards[peer as usize % SHARDS].state(&self.env, peer)
    }

    /// The overlay of a live peer, mutably (e.g. to call `peers(k)`).
    pub fn overlay_mut(&mut self, peer: u32) -> Option<&mut O> {
        if !self.env.alive(peer) {
            return None;
        }
        Some(&mut self.shards[peer as usize % SHARDS].states[peer as usize / SHARDS])
    }

    /// Measures the overlay now (see [`stats`]).
    pub fn snapshot(&self) -> Snapshot {
        stats::snapshot(
            self.now(),
            self.peers,
            |id| self.overlay(id).map(|o| o.outview()),
            |id| self.overlay(id).map(|o| o.inview()),
        )
    }

    // ----- commands -----

    /// Sets a function that tells where an overlay's hot heap buffers are
    /// (its views), prefetched for the peers of upcoming events so that
    /// their cache misses overlap with work. Only speed depends on it; the
    /// addresses are never read through.
    pub fn set_prefetch(&mut self, hook: fn(&O) -> [*const u8; 4]) {
        self.env.prefetch_hook = Some(hook);
    }

    /// A live peer drawn uniformly with the simulator's RNG.
    pub fn random_member(&mut self) -> Option<u32> {
        if self.alive.is_empty() {
            return None;
        }
        Some(self.alive[self.rng.random_range(0..self.alive.len())])
    }

    /// The simulator's RNG (derived from the master seed), for scenario draws.
    pub fn rng(&mut self) -> &mut SimRng {
        &mut self.rng
    }

    /// Adds a live peer that is in no overlay yet; returns its id.
    pub fn add_peer(&mut self) -> u32 {
        let id = u32::try_from(self.peers).expect("fewer than 2^32 peers");
        assert!(id != NONE, "peer ids exhausted");
        let seed = mix(self.env.seed ^ mix(u64::from(id)));
        let state = (self.factory)(id, seed);
        self.shards[id as usize % SHARDS].states.push(state);
        self.peers += 1;
        self.env.links.push((NONE, 0));
        self.alive_pos.push(self.alive.len() as u32);
        if id % 64 == 0 {
            self.env.alive_bits.push(0);
            self.env.link_bits.push(0);
        }
        self.env.alive_bits[id as usize / 64] |= 1 << (id % 64);
        self.alive.push(id);
        id
    }

    /// Queues `kind` for its peer's shard, from outside any window.
    fn schedule(&mut self, at: u64, kind: Kind<O::Timer>) {
        self.shards[kind.peer() as usize % SHARDS].schedule(at, kind);
    }

    /// `peer` joins through `contact` now: they get a connection (for
    /// [`Config::linger`]) and `peer` gets `Input::Join`.
    pub fn join(&mut self, peer: u32, contact: u32) {
        self.join_at(peer, contact, self.now());
    }

    /// `peer` joins through `contact` at `at` (now if earlier), as
    /// [`Sim::join`] would then: many joins queued at once run in one call
    /// (and on every thread) rather than one call each.
    pub fn join_at(&mut self, peer: u32, contact: u32, at: Duration) {
        if self.is_alive(peer) && self.is_alive(contact) && peer != contact {
            let at = micros(at).max(self.now);
            let until = at.saturating_add(self.linger);
            self.env.links[peer as usize] = (contact, until);
            self.env.link_bits[peer as usize / 64] |= 1 << (peer % 64);
            self.expiring.push_back((until, peer));
            self.schedule(at, Kind::Join { peer, contact });
        }
    }

    /// `peer` leaves gracefully now (`Input::Leave`); it stays alive.
    pub fn leave(&mut self, peer: u32) {
        self.schedule(self.now, Kind::Leave { peer });
    }

    /// `peer` crashes now: it disappears, and its neighbours notice after
    /// [`Config::detection_delay`].
    pub fn crash(&mut self, peer: u32) {
        if !self.is_alive(peer) {
            return;
        }
        // Its memory goes; the fresh state stands in its slot, never fed.
        let empty = (self.factory)(peer, 0);
        let slot = &mut self.shards[peer as usize % SHARDS].states[peer as usize / SHARDS];
        let overlay = std::mem::replace(slot, empty);
        self.crashes += 1;
        let pos = self.alive_pos[peer as usize] as usize;
        self.alive.swap_remove(pos);
        if let Some(&moved) = self.alive.get(pos) {
            self.alive_pos[moved as usize] = pos as u32;
        }
        self.alive_pos[peer as usize] = NONE;
        self.env.alive_bits[peer as usize / 64] &= !(1 << (peer % 64));
        let at = self.now + self.detection_delay;
        let mut neighbours: Vec<u32> = overlay
            .outview()
            .peers()
            .chain(overlay.inview().peers())
            .copied()
            .collect();
        neighbours.sort_unstable();
        neighbours.dedup();
        for n in neighbours {
            self.schedule(
                at,
                Kind::Detect {
                    peer: n,
                    dead: peer,
                },
            );
        }
    }

    /// Processes every event due up to `now() + d`, then sets the clock there.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now.saturating_add(micros(d));
        self.run_until_us(until);
    }

    /// Processes every event due up to `t` (from the start), then sets the clock there.
    pub fn run_until(&mut self, t: Duration) {
        self.run_until_us(micros(t));
    }

    /// Processes the events of the next window (see the type's docs), from
    /// the earliest pending event; returns `false` if there was none.
    pub fn step(&mut self) -> bool {
        self.hand_over();
        let Some(t) = self.next_event(u64::MAX) else {
            return false;
        };
        let width = self.env.min_hop().max(1);
        self.run_until_us(t.max(self.now).saturating_add(width - 1));
        true
    }

    /// Runs windows of the shortest hop until `until`: all shards run the
    /// events of a window, then hand over what they scheduled for others.
    fn run_until_us(&mut self, until: u64) {
        let width = self.env.min_hop().max(1);
        let windows = until.saturating_sub(self.now) / width;
        if self.threads > 1
            && self.peers >= self.config.parallel_from
            && windows >= PARALLEL_WINDOWS
        {
            self.expire_links(self.now);
            self.parallel(until);
            self.finish(until);
            return;
        }
        let mut start = self.now;
        loop {
            // Hand over what the last window scheduled for others, then
            // skip stretches without events (timers far apart, a small
            // network): from the earliest event on.
            self.hand_over();
            match self.next_event(until) {
                Some(t) => start = start.max(t),
                None => break,
            }
            if start > until {
                break;
            }
            let end = start.saturating_add(width - 1).min(until);
            self.expire_links(start);
            for shard in &mut self.shards {
                shard.run(&self.env, end);
            }
            start = end + 1;
            if end == until {
                break;
            }
        }
        self.finish(until);
    }

    /// Hands over what was scheduled for other shards, and sets every clock
    /// to `until`: the end of a run.
    fn finish(&mut self, until: u64) {
        self.hand_over();
        for shard in &mut self.shards {
            shard.now = shard.now.max(until);
        }
        self.now = self.now.max(until);
    }

    /// Puts every event scheduled for another shard in that shard's queue.
    fn hand_over(&mut self) {
        self.collect_mail();
        for (shard, mail) in self.shards.iter_mut().zip(self.mail.chunks_mut(SHARDS)) {
            deliver_mail(shard, mail);
        }
    }

    /// The time of the earliest event due at or before `until`.
    fn next_event(&mut self, until: u64) -> Option<u64> {
        self.shards
            .iter_mut()
            .filter_map(|s| s.queue.next_at(until))
            .min()
    }

    /// [`Sim::run_until_us`] on [`Sim::threads`] threads, through windows
    /// `[start, start + width)` from now to `until`: in each, the threads
    /// take the shards one by one (whoever is free takes the next, so that a
    /// busy shard does not hold the others up), each shard takes its mail,
    /// runs the window and posts its mail for the others; then the threads
    /// meet at a barrier. A window's events for other shards land at its end
    /// or later (every hop is at least the width), so a shard runs a window
    /// once it has the mail of the previous one. Mail goes to two sets of
    /// slots in turn (odd and even windows), so that a window's posts never
    /// meet the takes of the mail of the window before. What a shard
    /// computes depends on its events only, never on the thread that runs
    /// it: the results match the one-thread path's. The mail of the last
    /// window is left in `mail`.
    fn parallel(&mut self, until: u64) {
        let width = self.env.min_hop().max(1);
        let first = self.now;
        // Window `w` takes its mail from set `(w + 1) % 2` and posts to set
        // `w % 2`; in a set, as in `mail`, slot `d * SHARDS + s` goes from
        // shard `s` to shard `d`. Mail from before goes to set 1.
        const SET: usize = SHARDS * SHARDS;
        let boxes: Vec<Mutex<Mail<O::Timer>>> = (0..SET)
            .map(|_| Vec::new())
            .chain(self.mail.drain(..))
            .map(Mutex::new)
            .collect();
        let cells: Vec<Mutex<&mut Shard<O>>> = self.shards.iter_mut().map(Mutex::new).collect();
        let barrier = Barrier::new(self.threads);
        // Shards taken so far, over all windows: window `w` hands out
        // tickets `w * SHARDS .. (w + 1) * SHARDS`.
        let tickets = AtomicUsize::new(0);
        let env = &self.env;
        let (barrier, mail, cells, tickets) = (&barrier, &boxes, &cells, &tickets);
        let run = move || {
            let _guard = BreakOnPanic(barrier);
            let mut start = first;
            let mut window = 0;
            while start <= until {
                let end = start.saturating_add(width - 1).min(until);
                let last = (window + 1) * SHARDS;
                let mut ticket = tickets.load(Ordering::Relaxed);
                while ticket < last {
                    if let Err(now) = tickets.compare_exchange_weak(
                        ticket,
                        ticket + 1,
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    ) {
                        ticket = now;
                        continue;
                    }
                    let d = ticket - window * SHARDS;
                    let mut shard = cells[d].lock().unwrap_or_else(PoisonError::into_inner);
                    let (takes, posts) = ((window + 1) % 2 * SET, window % 2 * SET);
                    for s in 0..SHARDS {
                        let mut slot = mail[takes + d * SHARDS + s]
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner);
                        for e in slot.drain(..) {
                            shard.queue.push(e.at, e.seq, e.event);
                        }
                    }
                    shard.run(env, end);
                    for (to, out) in shard.outbox.iter_mut().enumerate() {
                        if !out.is_empty() {
                            mail[posts + to * SHARDS + d]
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .append(out);
                        }
                    }
                    drop(shard);
                    ticket = tickets.load(Ordering::Relaxed);
                }
                if !barrier.wait() || end == until {
                    break;
                }
                start = end + 1;
                window += 1;
            }
        };
        std::thread::scope(|scope| {
            for _ in 1..self.threads {
                scope.spawn(run);
            }
            run();
        });
        let mut boxes: Vec<Mail<O::Timer>> = boxes
            .into_iter()
            .map(|b| b.into_inner().unwrap_or_else(PoisonError::into_inner))
            .collect();
        let odd = boxes.split_off(SET);
        self.mail = boxes;
        for (slot, mut more) in self.mail.iter_mut().zip(odd) {
            slot.append(&mut more);
        }
    }

    /// Clears the bits of the join connections over before `now`.
    fn expire_links(&mut self, now: u64) {
        while let Some(&(until, peer)) = self.expiring.front() {
            if until >= now {
                break;
            }
            self.expiring.pop_front();
            // A peer that joined again has a later expiry, queued behind.
            if self.env.links[peer as usize].1 < now {
                self.env.link_bits[peer as usize / 64] &= !(1 << (peer % 64));
            }
        }
    }

    /// Moves every outbox into the mail slots (empty ones come back).
    fn collect_mail(&mut self) {
        for (s, shard) in self.shards.iter_mut().enumerate() {
            for (d, out) in shard.outbox.iter_mut().enumerate() {
                if !out.is_empty() {
                    std::mem::swap(out, &mut self.mail[d * SHARDS + s]);
                }
            }
        }
    }
}

/// Puts the events mailed to `shard` (one slot per sender) in its queue.
fn deliver_mail<O: Overlay<u32> + Views<u32>>(
    shard: &mut Shard<O>,
    mail: &mut [Vec<Entry<Kind<O::Timer>>>],
) {
    for slot in mail {
        for e in slot.drain(..) {
            shard.queue.push(e.at, e.seq, e.event);
        }
    }
}
