//! The node core: one peer's protocol logic as a sans-IO state machine.
//!
//! [`NodeCore`] owns every table of a node — the connection table (keepalive,
//! idle timeout, linger), handshake sessions (signing, routing and verifying
//! signals, glare), the arc views and their per-peer limits, the bridge
//! machine ([`crate::bridge`]) and the overlays with their timers. It never
//! touches a socket, never reads a clock, never spawns a task and uses no
//! thread-local RNG: a driver feeds it inputs together with `now` and carries
//! out its [`Output`]s. Three drivers run it: the tokio driver
//! ([`crate::node::Builder`], default feature `tokio`), the simulator
//! (`n2n-sim`) and, on wasm32, a browser driver.
//!
//! Methods follow one taxonomy: getters ([`NodeCore::snapshot`],
//! [`NodeCore::connection`]…); `handle_*` for inputs from the network, the
//! transport and the clock; plain verbs for the application's commands
//! ([`NodeCore::connect`], [`NodeCore::open_arc`], [`NodeCore::bridge`]…);
//! `poll_output` and `poll_timeout` for outputs.
//!
//! # The drain contract
//!
//! After **every** input or command, drain [`NodeCore::poll_output`] until it
//! returns `None`, carrying out each output in order; then sleep until
//! [`NodeCore::poll_timeout`] (or the next input) and call
//! [`NodeCore::handle_timeout`] when it is reached. Outputs name connections
//! and handshakes by the ids the core gave them ([`ConnectionId`],
//! [`SessionId`]); a connection exists for the core from the moment
//! [`NodeCore::handle_handshake_done`] returns its id.
//!
//! ```
//! use n2n_core::node::core::{NodeCore, Output};
//! use n2n_core::node::Config;
//! use n2n_core::time::Instant;
//! use n2n_core::{Keypair, ProtocolId};
//! use rand::SeedableRng;
//!
//! let key = Keypair::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
//! let mut now = Instant::now();
//! let mut core = NodeCore::new(
//!     now,
//!     Config::default(),
//!     key,
//!     "memory",
//!     Vec::new(),
//!     vec![ProtocolId::from_name("app")],
//!     7,
//! );
//! // One turn of a driver: an input, then every output, then the next wake-up.
//! core.handle_timeout(now);
//! while let Some(output) = core.poll_output() {
//!     match output {
//!         Output::Transmit { .. } => { /* write the frame on that connection */ }
//!         Output::Close { .. } => { /* close that connection */ }
//!         Output::StartHandshake { .. } => { /* run the transport's dial or accept */ }
//!         Output::HandshakeSignal { .. } => { /* hand the remote's signal to it */ }
//!         Output::AbortHandshake { .. } => { /* drop that handshake */ }
//!         Output::SendSignal { .. } => { /* send on that signaling path */ }
//!         Output::Event(_) => { /* tell the application */ }
//!         Output::Done { .. } => { /* answer whoever waits on that ticket */ }
//!         _ => { /* outputs of later versions */ }
//!     }
//! }
//! if let Some(at) = core.poll_timeout() {
//!     now = at; // a driver sleeps until then
//!     core.handle_timeout(now);
//! }
//! assert!(core.snapshot().neighbours.is_empty());
//! ```
//!
//! Everything that comes from the network ([`NodeCore::handle_frame`],
//! [`NodeCore::handle_signal`], relayed signals) is total: any byte string is
//! decoded without panic, and a misbehaving remote is counted
//! ([`crate::node::Snapshot::protocol_violations`]) and cannot corrupt the
//! tables.

mod arcs;
mod connections;
mod freshness;
mod overlays;
mod relay;
mod sessions;

pub use freshness::MAX_CLOCK_SKEW;

/// Warnings about remotes' misbehaviour logged per second at most (the rest
/// are counted, and their number logged).
pub const WARNINGS_PER_SECOND: u32 = 10;

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{ArcError, Config, ConnectError, Event, NeighbourInfo, Snapshot};
use crate::arc::{ArcSet, Inview, Outview};
use crate::bridge::Bridge;
use crate::identity::{Keypair, PeerId};
use crate::overlay::{DynOverlay, Input, TimerToken};
use crate::signal::{Role, SignedSignal};
use crate::time::Instant;
use crate::wire::{BridgeFailure, ProtocolId};

/// A transport connection, as the core names it to its driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectionId(pub u64);

/// A transport handshake in progress, as the core names it to its driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub u64);

/// A signaling path of the driver's (a WebSocket server, memory…). The driver
/// chooses the ids; the core hands them back in [`Output::SendSignal`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PathId(pub usize);

/// A command the driver waits on; its outcome comes back as [`Output::Done`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(pub u64);

/// The outcome of a command that finishes later.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Completion {
    /// A [`NodeCore::connect`] or [`NodeCore::request_bridge`].
    Connect(Result<(), ConnectError>),
    /// A [`NodeCore::bridge`].
    Bridge(Result<(), BridgeFailure>),
}

/// What the core asks its driver to do.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Output {
    /// Write `frame` on connection `conn`, after the frames before it.
    Transmit {
        /// The connection.
        conn: ConnectionId,
        /// One encoded [`crate::wire::Message`].
        frame: Bytes,
    },
    /// Close connection `conn` and forget it. With `flush`, the frames
    /// transmitted before go out first; without, it closes now (lost peer).
    Close {
        /// The connection.
        conn: ConnectionId,
        /// Whether queued frames go out first.
        flush: bool,
    },
    /// Start a transport handshake with `remote`.
    StartHandshake {
        /// The handshake's id.
        session: SessionId,
        /// The peer at the other end.
        remote: PeerId,
        /// Dial (offer) or accept (answer).
        role: Role,
        /// For an acceptor, the remote's first signal.
        first: Option<Vec<u8>>,
    },
    /// Hand a signal from the remote to handshake `session`.
    HandshakeSignal {
        /// The handshake.
        session: SessionId,
        /// The transport's payload, verified as coming from the remote.
        payload: Vec<u8>,
    },
    /// Abandon handshake `session` (timeout, glare, failure): drop it.
    AbortHandshake {
        /// The handshake.
        session: SessionId,
    },
    /// Send a signed signal on a signaling path.
    SendSignal {
        /// The path.
        path: PathId,
        /// The signal.
        signal: SignedSignal,
    },
    /// Tell the application.
    Event(Event),
    /// A command waited on finished.
    Done {
        /// The command's ticket.
        ticket: Ticket,
        /// Its outcome.
        result: Completion,
    },
}

/// Where a handshake's signals travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SignalPath {
    /// Through a signaling path of the driver's.
    External(PathId),
    /// Through neighbour `via`, as bridge job `job`.
    Relay { via: PeerId, job: u64 },
}

/// Someone waiting for a handshake to finish.
#[derive(Debug)]
enum Waiter {
    /// Open one arc in this overlay once connected.
    Arc(ProtocolId),
    /// Report the outcome of bridge `job` to neighbour `relay` (we are A).
    Job { relay: PeerId, job: u64 },
    /// A command of the driver's.
    Ticket(Ticket),
}

#[derive(Debug)]
struct Session {
    remote: PeerId,
    /// The session number on the wire (ours when dialing, the dialer's otherwise).
    wire: u64,
    role: Role,
    path: SignalPath,
    next_seq: u32,
    /// The highest `seq` of the remote's signals taken in this session.
    remote_seq: Option<u32>,
    deadline: Instant,
    waiters: Vec<Waiter>,
}

#[derive(Debug)]
struct Peer {
    conn: ConnectionId,
    last_recv: Instant,
    ping_sent: bool,
    linger_until: Option<Instant>,
}

/// Who asked for a bridge this node relays.
#[derive(Debug)]
enum BridgeOrigin {
    /// A command of the driver's.
    Ticket(Ticket),
    /// An overlay's `Output::Bridge` (index of the overlay).
    Overlay(usize),
}

#[derive(Debug, Default)]
struct Views {
    inview: ArcSet<PeerId>,
    outview: ArcSet<PeerId>,
}

#[derive(Debug)]
struct OverlaySlot {
    id: ProtocolId,
    overlay: Box<dyn DynOverlay>,
}

/// One peer's protocol logic, sans IO. See the [module docs](self).
#[derive(Debug)]
pub struct NodeCore {
    config: Config,
    keypair: Keypair,
    local: PeerId,
    transport: String,
    rng: ChaCha8Rng,
    /// The time of the input being handled.
    now: Instant,
    protocols: Vec<ProtocolId>,
    views: BTreeMap<ProtocolId, Views>,
    peers: BTreeMap<PeerId, Peer>,
    conns: BTreeMap<ConnectionId, PeerId>,
    sessions: BTreeMap<SessionId, Session>,
    bridge: Bridge<PeerId, SignedSignal>,
    bridge_origins: BTreeMap<u64, BridgeOrigin>,
    request_tickets: BTreeMap<u64, Option<Ticket>>,
    next_token: u64,
    next_conn: u64,
    next_session: u64,
    overlays: Vec<OverlaySlot>,
    /// The connection state of each protocol, as last reported.
    overlay_states: BTreeMap<ProtocolId, crate::overlay::ConnectionState>,
    overlay_inputs: VecDeque<(usize, Input<PeerId, TimerToken>)>,
    timers: BTreeMap<(Instant, u64), (usize, TimerToken)>,
    timer_seq: u64,
    outputs: VecDeque<Output>,
    violations: u64,
    /// Remote requests refused by a budget or an admission check.
    refusals: u64,
    /// Rate limit of warnings: window start, logged and suppressed in it.
    warnings: (Instant, u32, u32),
    /// The wall clock: unix ms at an instant (see [`NodeCore::set_wall_clock`]).
    wall: Option<(Instant, u64)>,
    /// Offers taken, by (author, session), to refuse their replays.
    replay: freshness::ReplayCache,
    shutting_down: bool,
}

impl NodeCore {
    /// A core for the peer of `keypair`, whose transport is called
    /// `transport` (written in every signal), running `overlays` and the
    /// application protocols `protocols`. `seed` seeds every random choice
    /// (session and job ids, ping nonces): the same seed and inputs give the
    /// same outputs. `now` is the time of creation.
    pub fn new(
        now: Instant,
        config: Config,
        keypair: Keypair,
        transport: &str,
        overlays: Vec<Box<dyn DynOverlay>>,
        mut protocols: Vec<ProtocolId>,
        seed: u64,
    ) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let overlays: Vec<OverlaySlot> = overlays
            .into_iter()
            .map(|overlay| OverlaySlot {
                id: overlay.protocol(),
                overlay,
            })
            .collect();
        protocols.extend(overlays.iter().map(|o| o.id));
        protocols.sort_unstable();
        protocols.dedup();
        let bridge = Bridge::new(
            keypair.peer_id(),
            crate::bridge::Config {
                timeout: config.bridge_timeout,
                max_jobs_per_neighbour: config.max_jobs_per_neighbour,
                ..crate::bridge::Config::default()
            },
            protocols.iter().copied(),
            rng.random(),
        );
        Self {
            local: keypair.peer_id(),
            config,
            keypair,
            transport: transport.to_string(),
            rng,
            now,
            protocols,
            views: BTreeMap::new(),
            peers: BTreeMap::new(),
            conns: BTreeMap::new(),
            sessions: BTreeMap::new(),
            bridge,
            bridge_origins: BTreeMap::new(),
            request_tickets: BTreeMap::new(),
            next_token: 0,
            next_conn: 0,
            next_session: 0,
            overlays,
            overlay_states: BTreeMap::new(),
            overlay_inputs: VecDeque::new(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            outputs: VecDeque::new(),
            violations: 0,
            refusals: 0,
            wall: None,
            warnings: (now, 0, 0),
            replay: freshness::ReplayCache::default(),
            shutting_down: false,
        }
    }

    // ----- getters -----

    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The connection to `peer`, if it is a neighbour.
    pub fn connection(&self, peer: &PeerId) -> Option<ConnectionId> {
        self.peers.get(peer).map(|p| p.conn)
    }

    /// The arcs of `overlay`: `(inview, outview)`, if any was ever opened.
    pub fn views(&self, overlay: ProtocolId) -> Option<(&Inview, &Outview)> {
        self.views.get(&overlay).map(|v| (&v.inview, &v.outview))
    }

    /// Neighbours, in peer order.
    pub fn neighbours(&self) -> impl Iterator<Item = &PeerId> {
        self.peers.keys()
    }

    /// The neighbour at the other end of `conn`.
    pub fn peer_of(&self, conn: ConnectionId) -> Option<PeerId> {
        self.conns.get(&conn).copied()
    }

    /// Whether [`NodeCore::shutdown`] was called.
    pub fn is_shut_down(&self) -> bool {
        self.shutting_down
    }

    /// A consistent copy of the tables (`connection_tasks` is the driver's to fill).
    pub fn snapshot(&self) -> Snapshot {
        let neighbours = self
            .peers
            .iter()
            .map(|(id, p)| NeighbourInfo {
                peer: *id,
                inview: self.views.values().map(|v| v.inview.count(id)).sum(),
                outview: self.views.values().map(|v| v.outview.count(id)).sum(),
                lingering: p.linger_until.is_some(),
            })
            .collect();
        let stats = self.bridge.stats();
        Snapshot {
            neighbours,
            views: self
                .views
                .iter()
                .map(|(k, v)| (*k, (v.inview.clone(), v.outview.clone())))
                .collect(),
            handshakes: self.sessions.len(),
            relay_jobs: self.bridge.relay_jobs(),
            bridge_requests: self.bridge.pending_requests(),
            bridge_endpoints: self.bridge.endpoint_jobs(),
            waiters: self.sessions.values().map(|s| s.waiters.len()).sum(),
            relayed_signals: stats.relayed_signals,
            bridges_ok: stats.bridges_ok,
            bridges_failed: stats.bridges_failed,
            protocol_violations: self.violations + stats.violations,
            refusals: self.refusals + stats.relay_refusals,
            connection_tasks: 0,
        }
    }

    /// Up to `k` peers sampled by `overlay`.
    ///
    /// # Errors
    /// [`ArcError::UnknownOverlay`] if the node runs no such overlay.
    pub fn peers(&mut self, overlay: ProtocolId, k: usize) -> Result<Vec<PeerId>, ArcError> {
        let idx = self
            .overlay_index(overlay)
            .ok_or(ArcError::UnknownOverlay(overlay))?;
        Ok(self.overlays[idx].overlay.peers(k))
    }

    // ----- outputs -----

    /// The next output, in order; `None` when there is nothing left to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`NodeCore::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| {
            next = Some(next.map_or(t, |n: Instant| n.min(t)));
        };
        for peer in self.peers.values() {
            if let Some(t) = peer.linger_until {
                consider(t);
            }
            consider(if peer.ping_sent {
                peer.last_recv + self.config.idle_timeout
            } else {
                peer.last_recv + self.config.keepalive
            });
        }
        for session in self.sessions.values() {
            consider(session.deadline);
        }
        if let Some(t) = self.bridge.poll_timeout() {
            consider(t);
        }
        if let Some(((t, _), _)) = self.timers.first_key_value() {
            consider(*t);
        }
        if !self.overlay_inputs.is_empty() {
            // Inputs left by a turn's budget: the next turn is due now.
            consider(self.now);
        }
        next
    }

    // ----- inputs: the clock -----

    /// Time passed: fires overlay timers, keepalives, idle timeouts, linger,
    /// handshake and bridge timeouts that are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (idx, token) = entry.remove();
            self.overlay_inputs.push_back((idx, Input::Timer(token)));
        }
        self.connection_timeouts(now);
        let expired: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| now >= s.deadline)
            .map(|(id, _)| *id)
            .collect();
        for session in expired {
            self.fail_session(session, ConnectError::Timeout);
        }
        self.bridge.handle_timeout(now);
        self.settle();
    }

    // ----- commands -----

    /// Stops the node: every handshake and job fails, every connection is
    /// closed with a `Close` message. Later inputs are ignored.
    pub fn shutdown(&mut self, now: Instant) {
        self.now = now;
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        self.bridge.shutdown();
        self.drain_bridge();
        let sessions: Vec<SessionId> = self.sessions.keys().copied().collect();
        for s in sessions {
            self.fail_session(s, ConnectError::Shutdown);
        }
        self.drain_bridge();
        let peers: Vec<PeerId> = self.peers.keys().copied().collect();
        for peer in peers {
            self.close_connection(
                peer,
                crate::wire::CloseReason::Shutdown,
                "node shut down".into(),
                crate::overlay::ArcCloseReason::Shutdown,
            );
        }
        self.settle();
    }

    // ----- internals shared by the parts -----

    fn push(&mut self, output: Output) {
        self.outputs.push_back(output);
    }

    fn emit(&mut self, event: Event) {
        tracing::trace!(?event, "event");
        self.outputs.push_back(Output::Event(event));
    }

    fn done(&mut self, ticket: Ticket, result: Completion) {
        self.outputs.push_back(Output::Done { ticket, result });
    }

    /// `id` (read from the wire) with its name, if the node knows the protocol.
    fn named(&self, id: ProtocolId) -> ProtocolId {
        match self.protocols.binary_search(&id) {
            Ok(i) => self.protocols[i],
            Err(_) => id,
        }
    }

    fn overlay_index(&self, id: ProtocolId) -> Option<usize> {
        self.overlays.iter().position(|o| o.id == id)
    }

    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// Overlays and the bridge feed each other: runs both until quiet.
    fn settle(&mut self) {
        loop {
            let finished = self.drive_overlays();
            let bridged = self.drain_bridge();
            if !finished || (!bridged && self.overlay_inputs.is_empty()) {
                break;
            }
        }
    }
}
