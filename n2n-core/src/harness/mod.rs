//! A deterministic network of node cores, for tests and simulations.
//!
//! [`Network`] is a third driver of [`NodeCore`], next to the tokio driver
//! and the browser one: a virtual clock, one calendar of deliveries, links
//! with latency (and, on demand, jitter, loss, duplication and reordering), a
//! signaling server that forwards signed signals by recipient, and a
//! simulated transport whose handshake is an offer, an answer and a
//! configurable number of round trips at link latency. Nothing reads the wall
//! clock but [`Network::new`], once, for the origin of virtual time; a seed
//! reproduces a run exactly.
//!
//! Tests connect nodes, act, [`Network::drive`] until nothing is in flight
//! (or [`Network::run_for`] a span of virtual time, timers included), and
//! assert each node's events and tables. A step is one delivery or one
//! wake-up of a node; [`Network::drive_bounded`] counts them and reports a
//! [`Livelock`]. A test can also act as a misbehaving peer:
//! [`Network::inject_frame`] writes raw bytes on a connection,
//! [`Network::inject_signal`] hands any signal to the server (and
//! [`Network::inject_signal_to`] has it misroute one), [`Network::set_tamper`]
//! rewrites what a node's honest core transmits, [`Network::cut`] pulls the
//! cable between two nodes and [`Network::crash`] stops one.
//! [`adversary::Adversary`] packs a misbehaving neighbour for fuzzers.
//!
//! ```
//! use n2n_core::harness::Network;
//! use n2n_core::node::Config;
//! use n2n_core::ProtocolId;
//!
//! const APP: ProtocolId = ProtocolId::from_name("app");
//! let mut net = Network::new(1);
//! let a = net.add_node(Config::default(), Vec::new(), vec![APP]);
//! let b = net.add_node(Config::default(), Vec::new(), vec![APP]);
//! net.connect(a, b, Some(APP));
//! net.drive();
//! assert_eq!(net.core(b).snapshot().view(APP).0.count(&net.peer(a)), 1);
//! ```

pub mod adversary;
mod links;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::identity::{Keypair, PeerId};
use crate::node::Config;
use crate::node::Event;
use crate::node::core::{Completion, ConnectionId, NodeCore, Output, PathId, SessionId, Ticket};
use crate::overlay::DynOverlay;
use crate::signal::SignedSignal;
use crate::time::{Duration, Instant};
use crate::wire::ProtocolId;

pub use links::LinkConfig;
use links::{Delivery, HandshakeEnd};

/// The name of the simulated transport, written in every signal.
pub const TRANSPORT: &str = "harness";

/// The one signaling path of the harness: a server that knows every node.
pub const SERVER: PathId = PathId(0);

/// The wall clock of the harness at the origin of virtual time, unix ms
/// (every node is told it: see [`NodeCore::set_wall_clock`]).
pub const WALL_CLOCK_ORIGIN_MS: u64 = 1_800_000_000_000;

/// The freshness of a signal signed by hand at the origin of virtual time
/// for the default network: valid for the first minute.
pub fn fresh_at_origin() -> crate::signal::Freshness {
    crate::signal::Freshness {
        network: Config::default().network,
        not_after: WALL_CLOCK_ORIGIN_MS + 60_000,
    }
}

/// Steps [`Network::drive`] and [`Network::run_for`] take before they call
/// it a livelock.
const DRIVE_BUDGET: u64 = 10_000_000;

/// The run did not come to rest within its step budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no rest after {steps} steps: a livelock")]
pub struct Livelock {
    /// Steps taken.
    pub steps: u64,
}

/// Rewrites what a node's core transmits on a connection: the frames
/// returned go out instead (none drops it). The test plays a neighbour that
/// runs an honest core but tampers with its messages.
pub type Tamper = Box<dyn FnMut(&[u8]) -> Vec<Vec<u8>> + Send>;

/// One node of the network and what it reported.
#[derive(Debug)]
struct Node {
    core: NodeCore,
    tamper: TamperSlot,
    alive: bool,
    events: VecDeque<Event>,
    done: BTreeMap<Ticket, Completion>,
    next_ticket: u64,
    /// The wake-up registered in the network's timer set.
    wake: Option<Instant>,
}

/// A deterministic network of [`NodeCore`]s. See the [module docs](self).
#[derive(Debug)]
pub struct Network {
    now: Instant,
    origin: Instant,
    rng: ChaCha8Rng,
    link: LinkConfig,
    nodes: Vec<Node>,
    index: BTreeMap<PeerId, usize>,
    calendar: BTreeMap<(Instant, u64), Delivery>,
    seq: u64,
    timers: BTreeSet<(Instant, usize)>,
    /// Handshakes in progress, by (node, session).
    handshakes: BTreeMap<(usize, SessionId), HandshakeEnd>,
    /// Open connections: (node, conn) → (remote node, remote conn).
    links: BTreeMap<(usize, ConnectionId), (usize, ConnectionId)>,
    /// Per directed link, the latest delivery time (connections are ordered).
    last_delivery: BTreeMap<(usize, ConnectionId), Instant>,
    /// Pairs of nodes (smaller first) whose transport links are cut.
    cuts: BTreeSet<(usize, usize)>,
    steps: u64,
}

struct TamperSlot(Option<Tamper>);

impl std::fmt::Debug for TamperSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Some(..)" } else { "None" })
    }
}

impl Network {
    /// An empty network whose every random choice (keys, latencies, losses,
    /// node seeds) comes from `seed`.
    pub fn new(seed: u64) -> Self {
        let now = Instant::now();
        Self {
            now,
            origin: now,
            rng: ChaCha8Rng::seed_from_u64(seed),
            link: LinkConfig::default(),
            nodes: Vec::new(),
            index: BTreeMap::new(),
            calendar: BTreeMap::new(),
            seq: 0,
            timers: BTreeSet::new(),
            handshakes: BTreeMap::new(),
            links: BTreeMap::new(),
            last_delivery: BTreeMap::new(),
            cuts: BTreeSet::new(),
            steps: 0,
        }
    }

    /// Replaces the link model (applies to what is sent from now on).
    pub fn set_links(&mut self, link: LinkConfig) {
        self.link = link;
    }

    /// Adds a node with a key drawn from the network's RNG; returns its index.
    pub fn add_node(
        &mut self,
        config: Config,
        overlays: Vec<Box<dyn DynOverlay>>,
        protocols: Vec<ProtocolId>,
    ) -> usize {
        let key = Keypair::generate(&mut self.rng);
        self.add_node_with_key(key, config, overlays, protocols)
    }

    /// Adds a node with identity `key`; returns its index.
    pub fn add_node_with_key(
        &mut self,
        key: Keypair,
        config: Config,
        overlays: Vec<Box<dyn DynOverlay>>,
        protocols: Vec<ProtocolId>,
    ) -> usize {
        let seed = config.seed.unwrap_or_else(|| self.rng.random());
        let i = self.nodes.len();
        self.index.insert(key.peer_id(), i);
        let mut core = NodeCore::new(self.now, config, key, TRANSPORT, overlays, protocols, seed);
        core.set_wall_clock(self.now, self.wall_ms());
        self.nodes.push(Node {
            core,
            tamper: TamperSlot(None),
            alive: true,
            events: VecDeque::new(),
            done: BTreeMap::new(),
            next_ticket: 0,
            wake: None,
        });
        self.after_input(i);
        i
    }

    // ----- getters -----

    /// The wall clock at the virtual time, unix ms (from
    /// [`WALL_CLOCK_ORIGIN_MS`]).
    pub fn wall_ms(&self) -> u64 {
        WALL_CLOCK_ORIGIN_MS + self.now.saturating_duration_since(self.origin).as_millis() as u64
    }

    /// The virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// How many nodes were added.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node was added.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The peer id of node `i`.
    pub fn peer(&self, i: usize) -> PeerId {
        self.nodes[i].core.local_peer_id()
    }

    /// The node whose peer id is `peer`.
    pub fn index_of(&self, peer: &PeerId) -> Option<usize> {
        self.index.get(peer).copied()
    }

    /// The core of node `i`, to read.
    pub fn core(&self, i: usize) -> &NodeCore {
        &self.nodes[i].core
    }

    /// Steps taken so far (deliveries and wake-ups).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// How many deliveries (frames, signals, handshake steps, losses) are in
    /// flight.
    pub fn in_flight(&self) -> usize {
        self.calendar.len()
    }

    /// Takes the events node `i` reported so far.
    pub fn events(&mut self, i: usize) -> Vec<Event> {
        self.nodes[i].events.drain(..).collect()
    }

    /// Takes the outcome of command `ticket` of node `i`, once it finished.
    pub fn take_done(&mut self, i: usize, ticket: Ticket) -> Option<Completion> {
        self.nodes[i].done.remove(&ticket)
    }

    // ----- commands -----

    /// Runs `f` on the core of node `i` at the current time (a command),
    /// then carries out its outputs.
    pub fn with_core<R>(&mut self, i: usize, f: impl FnOnce(&mut NodeCore, Instant) -> R) -> R {
        let now = self.now;
        let r = f(&mut self.nodes[i].core, now);
        self.after_input(i);
        r
    }

    /// A fresh ticket of node `i`, for a command run through [`Network::with_core`].
    pub fn ticket(&mut self, i: usize) -> Ticket {
        let node = &mut self.nodes[i];
        node.next_ticket += 1;
        Ticket(node.next_ticket)
    }

    /// Node `a` connects to node `b` through the server, opening one arc in
    /// `overlay` if given. Returns the command's ticket.
    pub fn connect(&mut self, a: usize, b: usize, overlay: Option<ProtocolId>) -> Ticket {
        let ticket = self.ticket(a);
        let peer = self.peer(b);
        self.with_core(a, |core, now| {
            core.connect(now, peer, SERVER, overlay, Some(ticket))
        });
        ticket
    }

    /// Writes raw `bytes` on the connection from `from` to `to`, as if `from`'s
    /// core had sent them. Returns whether such a connection exists.
    pub fn inject_frame(&mut self, from: usize, to: usize, bytes: impl Into<Bytes>) -> bool {
        let peer = self.peer(to);
        let Some(conn) = self.nodes[from].core.connection(&peer) else {
            return false;
        };
        self.transmit(from, conn, bytes.into());
        true
    }

    /// Hands `signal` to the server, which forwards it to its recipient.
    pub fn inject_signal(&mut self, signal: SignedSignal) {
        self.send_signal(signal);
    }

    /// Has the server deliver `signal` to node `to`, whatever recipient it
    /// names (a misrouting or malicious server).
    pub fn inject_signal_to(&mut self, to: usize, signal: SignedSignal) {
        self.send_signal_to(to, signal);
    }

    /// Cuts the transport link between nodes `a` and `b`: their connections go
    /// silent (no close, as when a cable is pulled) and their handshakes never
    /// finish. Signals through the server still pass.
    pub fn cut(&mut self, a: usize, b: usize) {
        self.cuts.insert((a.min(b), a.max(b)));
    }

    /// Whether the link between `a` and `b` is cut.
    pub fn is_cut(&self, a: usize, b: usize) -> bool {
        self.cuts.contains(&(a.min(b), a.max(b)))
    }

    /// From now on, every frame node `i`'s core transmits goes through
    /// `tamper` (`None`: untouched again).
    pub fn set_tamper(&mut self, i: usize, tamper: Option<Tamper>) {
        self.nodes[i].tamper = TamperSlot(tamper);
    }

    /// Node `i` crashes: it stops, and each of its connections is seen as
    /// lost by the remote one link latency later.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].alive = false;
        self.unwake(i);
        let ends: Vec<(usize, ConnectionId)> = self
            .links
            .keys()
            .filter(|(n, _)| *n == i)
            .copied()
            .collect();
        for end in ends {
            self.break_link(end, "remote crashed");
        }
        let sessions: Vec<(usize, SessionId)> = self
            .handshakes
            .keys()
            .filter(|(n, _)| *n == i)
            .copied()
            .collect();
        for key in sessions {
            self.handshakes.remove(&key);
        }
    }

    /// Whether node `i` runs (was not crashed).
    pub fn is_alive(&self, i: usize) -> bool {
        self.nodes[i].alive
    }

    // ----- running -----

    /// Runs until nothing is in flight; timers fire only when they come
    /// before the next delivery. Panics on a livelock (10⁷ steps).
    pub fn drive(&mut self) {
        if let Err(e) = self.drive_bounded(DRIVE_BUDGET) {
            panic!("{e}");
        }
    }

    /// As [`Network::drive`], within `max_steps` steps (a step is one
    /// delivery or one wake-up of a node). Returns the steps taken.
    ///
    /// # Errors
    /// [`Livelock`] if deliveries are still in flight after `max_steps`.
    pub fn drive_bounded(&mut self, max_steps: u64) -> Result<u64, Livelock> {
        let mut steps = 0;
        while let Some(&(at, _)) = self.calendar.keys().next() {
            if steps >= max_steps {
                return Err(Livelock { steps });
            }
            self.step(at);
            steps += 1;
        }
        Ok(steps)
    }

    /// Runs every delivery and timer up to `now + span`, then sets the
    /// clock there. Panics on a livelock (10⁷ steps).
    pub fn run_for(&mut self, span: Duration) {
        let end = self.now + span;
        let mut steps = 0u64;
        while self.next_instant().is_some_and(|next| next <= end) {
            assert!(steps < DRIVE_BUDGET, "{}", Livelock { steps });
            self.step(end);
            steps += 1;
        }
        self.now = self.now.max(end);
    }

    /// The time of the next wake-up or delivery.
    fn next_instant(&self) -> Option<Instant> {
        let delivery = self.calendar.keys().next().map(|k| k.0);
        let timer = self.timers.iter().next().map(|t| t.0);
        match (delivery, timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Takes one step, if one is due by `until`: the earliest wake-up or
    /// delivery, a wake-up first when both are due at the same instant.
    fn step(&mut self, until: Instant) {
        let delivery = self.calendar.keys().next().map(|k| k.0);
        let timer = self.timers.iter().next().copied();
        if let Some((t, i)) = timer
            && t <= until
            && delivery.is_none_or(|d| t <= d)
        {
            self.now = self.now.max(t);
            self.timers.remove(&(t, i));
            self.nodes[i].wake = None;
            self.steps += 1;
            let now = self.now;
            self.nodes[i].core.handle_timeout(now);
            self.after_input(i);
            return;
        }
        if delivery.is_some_and(|d| d <= until)
            && let Some(((t, _), delivery)) = self.calendar.pop_first()
        {
            self.now = self.now.max(t);
            self.steps += 1;
            self.deliver(delivery);
        }
    }

    /// Carries out the outputs of node `i` and refreshes its wake-up.
    fn after_input(&mut self, i: usize) {
        while let Some(output) = self.nodes[i].core.poll_output() {
            // A crashed node's core may still be run as a command: nothing
            // it asks for happens.
            if self.nodes[i].alive {
                self.on_output(i, output);
            }
        }
        self.unwake(i);
        if self.nodes[i].alive
            && let Some(t) = self.nodes[i].core.poll_timeout()
        {
            self.nodes[i].wake = Some(t);
            self.timers.insert((t, i));
        }
    }

    fn unwake(&mut self, i: usize) {
        if let Some(t) = self.nodes[i].wake.take() {
            self.timers.remove(&(t, i));
        }
    }

    fn on_output(&mut self, i: usize, output: Output) {
        match output {
            Output::Transmit { conn, frame } => match self.nodes[i].tamper.0.as_mut() {
                Some(tamper) => {
                    for frame in tamper(&frame) {
                        self.transmit(i, conn, frame.into());
                    }
                }
                None => self.transmit(i, conn, frame),
            },
            Output::Close { conn, .. } => self.break_link((i, conn), "closed by remote"),
            Output::StartHandshake {
                session,
                remote,
                role,
                first,
            } => self.start_handshake(i, session, remote, role, first),
            Output::HandshakeSignal { session, payload } => {
                self.handshake_signal(i, session, &payload);
            }
            Output::AbortHandshake { session } => self.abort_handshake(i, session),
            Output::SendSignal { signal, .. } => self.send_signal(signal),
            Output::Event(event) => self.nodes[i].events.push_back(event),
            Output::Done { ticket, result } => {
                self.nodes[i].done.insert(ticket, result);
            }
        }
    }

    fn schedule(&mut self, at: Instant, delivery: Delivery) {
        self.seq += 1;
        self.calendar.insert((at, self.seq), delivery);
    }
}
