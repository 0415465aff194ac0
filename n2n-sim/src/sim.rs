//! The event loop and the environment's semantics.

use std::fmt;
use std::time::{Duration, Instant};

use n2n_core::Direction;
use n2n_core::overlay::{ArcCloseReason, Input, Output, Overlay};
use rand::Rng;

use crate::prefetch;
use crate::queue::Calendar;
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
}

impl Default for Config {
    /// Seed 0, latency uniform in 10–50 ms, detection after 5 s, no loss of
    /// either kind, 10 s linger.
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

const NONE: u32 = u32::MAX;

enum Kind<T> {
    Message {
        from: u32,
        to: u32,
        payload: Vec<u8>,
    },
    OpenArc {
        from: u32,
        to: u32,
    },
    CloseArc {
        from: u32,
        to: u32,
    },
    Bridge {
        via: u32,
        from: u32,
        to: u32,
    },
    BridgeFailed {
        via: u32,
        from: u32,
        to: u32,
    },
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
    /// The peers the event feeds (`NONE` for none).
    fn peers(&self) -> (u32, u32) {
        match *self {
            Kind::Message { to, .. } => (to, NONE),
            Kind::OpenArc { from, to }
            | Kind::CloseArc { from, to }
            | Kind::Bridge { from, to, .. } => (from, to),
            Kind::BridgeFailed { via, .. } => (via, NONE),
            Kind::ConnectFailed { peer, .. }
            | Kind::Timer { peer, .. }
            | Kind::Detect { peer, .. }
            | Kind::Join { peer, .. }
            | Kind::Leave { peer } => (peer, NONE),
        }
    }
}

/// How many events ahead the peers' states are prefetched.
const STATE_AHEAD: usize = 8;
/// Cache lines of a state prefetched.
const STATE_LINES: usize = 3;
/// How many events ahead the peers' heap buffers are prefetched.
const HEAP_AHEAD: usize = 2;

type Factory<O> = Box<dyn FnMut(u32, u64) -> O>;

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
///   and `to` is `via` or a live neighbour, `from` gets an arc to `to` after
///   the order hop, plus four signaling hops through `via` when `from` and
///   `to` are not yet connected. Otherwise `via` gets `BridgeFailed`, and
///   `from` gets `ConnectFailed` if it took the order but could not reach `to`.
///   Each signaling hop is lost at rate [`Config::loss`]; a bridge that loses
///   one ends as one that could not reach `to`.
/// - `SetTimer` fires `Input::Timer` at its instant.
/// - A crash removes the peer at once; after [`Config::detection_delay`]
///   each neighbour gets `ArcClosed(PeerDown)` once per arc occurrence it
///   still has with it, in both directions.
///
/// Connectivity is decided when an output is emitted (a connection lingers
/// that long); arcs are created and removed on both sides at the same event,
/// so the overlays' arc mirrors are the truth the simulator reads.
pub struct Sim<O: Overlay<u32>> {
    config: Config,
    factory: Factory<O>,
    base: Instant,
    now: u64,
    seq: u64,
    queue: Calendar<Kind<O::Timer>>,
    /// Every peer's state, live or not (a crashed peer's is replaced by a
    /// fresh one from the factory, so that its memory goes): whether a peer is
    /// alive is read in `alive_bits`, which stays in the cache, never here.
    peers: Vec<O>,
    /// Join connection per peer: (contact, until).
    links: Vec<(u32, u64)>,
    alive: Vec<u32>,
    alive_pos: Vec<u32>,
    /// One bit per peer: alive. Checked for the recipient of every output,
    /// it stays in the cache where `alive_pos` or the states would not.
    alive_bits: Vec<u64>,
    /// One bit per peer: has a join connection (`links`) that may be up.
    link_bits: Vec<u64>,
    /// Join connections by expiry, to clear their bits: `(until, peer)`.
    expiring: std::collections::VecDeque<(u64, u32)>,
    rng: SimRng,
    outbuf: Vec<Output<u32, O::Timer>>,
    /// Gives the overlay's hot heap buffers (see [`Sim::set_prefetch`]).
    prefetch_hook: Option<fn(&O) -> [*const u8; 4]>,
    counters: Counters,
    opening: u64,
    closing: u64,
}

impl<O: Overlay<u32>> fmt::Debug for Sim<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sim")
            .field("now_us", &self.now)
            .field("peers", &self.peers.len())
            .field("alive", &self.alive.len())
            .field("pending_events", &self.queue.len())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// Bit `i` of a bitmap.
fn bit(bits: &[u64], i: u32) -> bool {
    bits.get(i as usize / 64)
        .is_some_and(|w| w & (1 << (i % 64)) != 0)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl<O: Overlay<u32>> Sim<O> {
    /// An empty network; `factory(id, seed)` builds peer `id`'s overlay with
    /// the RNG seed derived for it from [`Config::seed`].
    pub fn new(config: Config, factory: impl FnMut(u32, u64) -> O + 'static) -> Self {
        let rng = SimRng::seed_from(mix(config.seed ^ 0x5eed));
        Self {
            config,
            factory: Box::new(factory),
            base: Instant::now(),
            now: 0,
            seq: 0,
            queue: Calendar::new(),
            peers: Vec::new(),
            links: Vec::new(),
            alive: Vec::new(),
            alive_pos: Vec::new(),
            alive_bits: Vec::new(),
            link_bits: Vec::new(),
            expiring: std::collections::VecDeque::new(),
            rng,
            outbuf: Vec::new(),
            prefetch_hook: None,
            counters: Counters::default(),
            opening: 0,
            closing: 0,
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

    /// Counters so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Arc changes on their way: `(opening, closing)`, the `OpenArc` and
    /// `Bridge` outputs (and `CloseArc` outputs) not yet applied. A shuffle
    /// closes its arcs a hop before the bridged ones open, so the arc total
    /// of a busy network is invariant only counted with these:
    /// `arcs_out + opening − closing`.
    pub fn arcs_in_flight(&self) -> (u64, u64) {
        (self.opening, self.closing)
    }

    /// Events waiting.
    pub fn pending_events(&self) -> usize {
        self.queue.len()
    }

    /// Peers ever added (live or not).
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no peer was ever added.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Live peers, in no particular order.
    pub fn alive(&self) -> &[u32] {
        &self.alive
    }

    /// Whether `peer` exists and has not crashed.
    pub fn is_alive(&self, peer: u32) -> bool {
        self.bit_alive(peer)
    }

    /// Whether `peer` is alive, from one bit per peer: checked for every
    /// input and every output's recipient, the bitmap stays in the cache
    /// where the states (hundreds of bytes each) would not.
    fn bit_alive(&self, peer: u32) -> bool {
        bit(&self.alive_bits, peer)
    }

    /// The overlay of a live peer.
    pub fn overlay(&self, peer: u32) -> Option<&O> {
        self.bit_alive(peer).then(|| &self.peers[peer as usize])
    }

    /// The overlay of a live peer, mutably (e.g. to call `peers(k)`).
    pub fn overlay_mut(&mut self, peer: u32) -> Option<&mut O> {
        self.bit_alive(peer).then(|| &mut self.peers[peer as usize])
    }

    /// Measures the overlay now (see [`stats`]).
    pub fn snapshot(&self) -> Snapshot {
        stats::snapshot(
            self.now(),
            self.peers.len(),
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
        self.prefetch_hook = Some(hook);
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
        let id = u32::try_from(self.peers.len()).expect("fewer than 2^32 peers");
        assert!(id != NONE, "peer ids exhausted");
        let seed = mix(self.config.seed ^ mix(u64::from(id)));
        self.peers.push((self.factory)(id, seed));
        self.links.push((NONE, 0));
        self.alive_pos.push(self.alive.len() as u32);
        if id % 64 == 0 {
            self.alive_bits.push(0);
            self.link_bits.push(0);
        }
        self.alive_bits[id as usize / 64] |= 1 << (id % 64);
        self.alive.push(id);
        id
    }

    /// `peer` joins through `contact` now: they get a connection (for
    /// [`Config::linger`]) and `peer` gets `Input::Join`.
    pub fn join(&mut self, peer: u32, contact: u32) {
        self.schedule(self.now, Kind::Join { peer, contact });
    }

    /// `peer` leaves gracefully now (`Input::Leave`); it stays alive.
    pub fn leave(&mut self, peer: u32) {
        self.schedule(self.now, Kind::Leave { peer });
    }

    /// `peer` crashes now: it disappears, and its neighbours notice after
    /// [`Config::detection_delay`].
    pub fn crash(&mut self, peer: u32) {
        if !self.bit_alive(peer) {
            return;
        }
        // Its memory goes; the fresh state stands in its slot, never fed.
        let empty = (self.factory)(peer, 0);
        let overlay = std::mem::replace(&mut self.peers[peer as usize], empty);
        self.counters.crashes += 1;
        let pos = self.alive_pos[peer as usize] as usize;
        self.alive.swap_remove(pos);
        if let Some(&moved) = self.alive.get(pos) {
            self.alive_pos[moved as usize] = pos as u32;
        }
        self.alive_pos[peer as usize] = NONE;
        self.alive_bits[peer as usize / 64] &= !(1 << (peer % 64));
        let at = self.now + micros(self.config.detection_delay);
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

    fn run_until_us(&mut self, until: u64) {
        while self.step_until(until) {}
        self.now = self.now.max(until);
    }

    /// Processes the next event; returns `false` if there was none.
    pub fn step(&mut self) -> bool {
        self.step_until(u64::MAX)
    }

    /// Processes the next event if it is due at or before `until`.
    fn step_until(&mut self, until: u64) -> bool {
        self.prefetch();
        let Some(event) = self.queue.pop_until(until) else {
            return false;
        };
        self.now = self.now.max(event.at);
        self.counters.events += 1;
        while let Some(&(until, peer)) = self.expiring.front() {
            if until >= self.now {
                break;
            }
            self.expiring.pop_front();
            // A peer that joined again has a later expiry, queued behind.
            if self.links[peer as usize].1 < self.now {
                self.link_bits[peer as usize / 64] &= !(1 << (peer % 64));
            }
        }
        match event.event {
            Kind::OpenArc { .. } | Kind::Bridge { .. } => self.opening -= 1,
            Kind::CloseArc { .. } => self.closing -= 1,
            _ => {}
        }
        self.process(event.event);
        true
    }

    // ----- the environment -----

    /// Prefetches, without waiting, what the upcoming events will read:
    /// the first two cache lines of the states of the peers of the event
    /// [`STATE_AHEAD`] places ahead, and the heap buffers (through the hook
    /// of [`Sim::set_prefetch`]) of the peers of the event [`HEAP_AHEAD`]
    /// places ahead, whose states arrived meanwhile. Each event lands on
    /// random peers whose states are out of the cache at 100k peers: loaded
    /// when needed, every miss stalls the event; requested this far ahead,
    /// they arrive while the events before them are processed.
    fn prefetch(&self) {
        let upcoming = self.queue.upcoming();
        let n = upcoming.len();
        if n > STATE_AHEAD {
            let (a, b) = upcoming[n - 1 - STATE_AHEAD].event.peers();
            for p in [a, b] {
                if self.bit_alive(p) {
                    let at = (&raw const self.peers[p as usize]).cast::<u8>();
                    for line in 0..STATE_LINES {
                        prefetch::line(at.wrapping_add(64 * line));
                    }
                }
            }
        }
        if n > HEAP_AHEAD
            && let Some(hook) = self.prefetch_hook
        {
            let (a, b) = upcoming[n - 1 - HEAP_AHEAD].event.peers();
            for p in [a, b] {
                if let Some(o) = self.overlay(p) {
                    for at in hook(o) {
                        prefetch::line(at);
                    }
                }
            }
        }
    }

    fn schedule(&mut self, at: u64, kind: Kind<O::Timer>) {
        match kind {
            Kind::OpenArc { .. } | Kind::Bridge { .. } => self.opening += 1,
            Kind::CloseArc { .. } => self.closing += 1,
            _ => {}
        }
        self.seq += 1;
        self.queue.push(at, self.seq, kind);
    }

    /// One-way delay of the link between `a` and `b`.
    fn hop(&self, a: u32, b: u32) -> u64 {
        match self.config.latency {
            Latency::Fixed(d) => micros(d),
            Latency::Uniform { min, max } => {
                let (lo, hi) = (micros(min), micros(max));
                if hi <= lo {
                    return lo;
                }
                let link = (u64::from(a.min(b)) << 32) | u64::from(a.max(b));
                lo + mix(self.config.seed ^ mix(link)) % (hi - lo + 1)
            }
        }
    }

    /// Draws whether something is lost at rate `p` (no draw when 0, so that
    /// loss-free runs use the simulator's RNG as before).
    fn lost(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random::<f64>() < p
    }

    fn connected(&self, a: u32, b: u32) -> bool {
        if a == b {
            return false;
        }
        // `a` is mostly the peer whose outputs are routed: its views are in
        // the cache, the join connections rarely matter.
        if let Some(o) = self.overlay(a)
            && (o.outview().contains(&b) || o.inview().contains(&b))
        {
            return true;
        }
        let linked = |x: u32, y: u32| {
            bit(&self.link_bits, x) && {
                let (peer, until) = self.links[x as usize];
                peer == y && until >= self.now
            }
        };
        linked(a, b) || linked(b, a)
    }

    fn deliver(&mut self, peer: u32, input: Input<u32, O::Timer>) {
        if !self.bit_alive(peer) {
            return;
        }
        self.counters.inputs += 1;
        let overlay = &mut self.peers[peer as usize];
        overlay.handle(self.base + Duration::from_micros(self.now), input);
        let mut buf = std::mem::take(&mut self.outbuf);
        while let Some(out) = overlay.poll_output() {
            buf.push(out);
        }
        for out in buf.drain(..) {
            self.route(peer, out);
        }
        self.outbuf = buf;
    }

    fn route(&mut self, at: u32, output: Output<u32, O::Timer>) {
        match output {
            Output::Send { to, payload } => {
                if !self.is_alive(to) || !self.connected(at, to) {
                    self.counters.undeliverable += 1;
                } else if self.lost(self.config.message_loss) {
                    self.counters.messages_lost += 1;
                } else {
                    let t = self.now + self.hop(at, to);
                    self.schedule(
                        t,
                        Kind::Message {
                            from: at,
                            to,
                            payload,
                        },
                    );
                }
            }
            Output::OpenArc { to } => {
                let t = self.now + self.hop(at, to);
                if self.is_alive(to) && self.connected(at, to) {
                    self.schedule(t, Kind::OpenArc { from: at, to });
                } else {
                    self.schedule(t, Kind::ConnectFailed { peer: at, to });
                }
            }
            Output::CloseArc { to } => {
                let t = self.now + self.hop(at, to);
                self.schedule(t, Kind::CloseArc { from: at, to });
            }
            Output::Bridge { from, to } => self.route_bridge(at, from, to),
            Output::SetTimer { at: when, timer } => {
                let t = micros(when.saturating_duration_since(self.base)).max(self.now);
                self.schedule(t, Kind::Timer { peer: at, timer });
            }
            Output::StateChanged(_) => {}
        }
    }

    fn route_bridge(&mut self, via: u32, from: u32, to: u32) {
        let order = self.now + self.hop(via, from);
        if !self.is_alive(from) || !self.connected(via, from) {
            self.schedule(order, Kind::BridgeFailed { via, from, to });
            return;
        }
        let reachable = from != to && (to == via || (self.is_alive(to) && self.connected(via, to)));
        if !reachable {
            self.schedule(order, Kind::ConnectFailed { peer: from, to });
            self.schedule(order, Kind::BridgeFailed { via, from, to });
            return;
        }
        let mut t = order;
        let mut lost = false;
        if to != via && !self.connected(from, to) {
            // Offer from → via → to, answer to → via → from.
            t += 2 * (self.hop(from, via) + self.hop(via, to));
            for _ in 0..4 {
                lost |= self.lost(self.config.loss);
            }
        }
        if lost {
            self.counters.lost += 1;
            self.schedule(t, Kind::ConnectFailed { peer: from, to });
            self.schedule(t, Kind::BridgeFailed { via, from, to });
        } else {
            self.schedule(t, Kind::Bridge { via, from, to });
        }
    }

    fn open(&mut self, from: u32, to: u32) {
        self.counters.arcs_opened += 1;
        self.deliver(
            from,
            Input::ArcOpened {
                peer: to,
                direction: Direction::Outgoing,
            },
        );
        self.deliver(
            to,
            Input::ArcOpened {
                peer: from,
                direction: Direction::Incoming,
            },
        );
    }

    fn process(&mut self, kind: Kind<O::Timer>) {
        match kind {
            Kind::Message { from, to, payload } => {
                if self.is_alive(to) {
                    self.counters.messages += 1;
                    self.deliver(to, Input::Message { from, payload });
                } else {
                    self.counters.undeliverable += 1;
                }
            }
            Kind::OpenArc { from, to } => {
                if !self.is_alive(from) {
                } else if self.is_alive(to) {
                    self.open(from, to);
                } else {
                    self.connect_failed(from, to);
                }
            }
            Kind::CloseArc { from, to } => {
                let held = self
                    .overlay(from)
                    .is_some_and(|o| o.outview().contains(&to));
                if !held {
                    if self.is_alive(from) {
                        self.counters.spurious_closes += 1;
                    }
                    return;
                }
                self.counters.arcs_closed += 1;
                let reason = ArcCloseReason::Closed;
                self.deliver(
                    from,
                    Input::ArcClosed {
                        peer: to,
                        direction: Direction::Outgoing,
                        reason: reason.clone(),
                    },
                );
                self.deliver(
                    to,
                    Input::ArcClosed {
                        peer: from,
                        direction: Direction::Incoming,
                        reason,
                    },
                );
            }
            Kind::Bridge { via, from, to } => {
                if !self.is_alive(from) {
                    self.bridge_failed(via, from, to);
                } else if !self.is_alive(to)
                    || (!self.is_alive(via) && to != via && !self.connected(from, to))
                {
                    self.connect_failed(from, to);
                    self.bridge_failed(via, from, to);
                } else {
                    self.counters.bridges += 1;
                    self.open(from, to);
                }
            }
            Kind::BridgeFailed { via, from, to } => self.bridge_failed(via, from, to),
            Kind::ConnectFailed { peer, to } => self.connect_failed(peer, to),
            Kind::Timer { peer, timer } => self.deliver(peer, Input::Timer(timer)),
            Kind::Detect { peer, dead } => {
                let Some(o) = self.overlay(peer) else { return };
                let (outs, ins) = (o.outview().count(&dead), o.inview().count(&dead));
                for (n, direction) in [(outs, Direction::Outgoing), (ins, Direction::Incoming)] {
                    for _ in 0..n {
                        self.counters.arcs_closed += 1;
                        self.deliver(
                            peer,
                            Input::ArcClosed {
                                peer: dead,
                                direction,
                                reason: ArcCloseReason::PeerDown("crashed".into()),
                            },
                        );
                    }
                }
            }
            Kind::Join { peer, contact } => {
                if self.is_alive(peer) && self.is_alive(contact) && peer != contact {
                    let until = self.now + micros(self.config.linger);
                    self.links[peer as usize] = (contact, until);
                    self.link_bits[peer as usize / 64] |= 1 << (peer % 64);
                    self.expiring.push_back((until, peer));
                    self.deliver(peer, Input::Join { contact });
                }
            }
            Kind::Leave { peer } => self.deliver(peer, Input::Leave),
        }
    }

    fn connect_failed(&mut self, peer: u32, to: u32) {
        if self.is_alive(peer) {
            self.counters.connect_failures += 1;
            self.deliver(
                peer,
                Input::ConnectFailed {
                    peer: to,
                    reason: "unreachable".into(),
                },
            );
        }
    }

    fn bridge_failed(&mut self, via: u32, from: u32, to: u32) {
        self.counters.bridge_failures += 1;
        if self.is_alive(via) {
            self.deliver(
                via,
                Input::BridgeFailed {
                    from,
                    to,
                    reason: "bridge failed".into(),
                },
            );
        }
    }
}
