//! The node actor: one task that owns every table of a node.
//!
//! Spawned tasks (connection readers and writers, handshakes, signaling
//! listeners) only move bytes and report back through one bounded channel; all
//! decisions are taken here, in order: local commands first, then reports from
//! the network, then timers.

use crate::time::Instant;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, trace, warn};

use super::{ArcError, Command, Config, ConnectError, Event, NeighbourInfo, Reply, Snapshot};
use crate::arc::{ArcSet, Direction};
use crate::bridge::{Bridge, Output as BridgeOutput};
use crate::identity::{Keypair, PeerId};
use crate::overlay::{ArcCloseReason, DynOverlay, Input, Output, TimerToken};
use crate::signal::{Role, Signal, SignedSignal};
use crate::signaling::Signaling;
use crate::transport::{Connection, SignalPipe, Transport, TransportError};
use crate::wire::{self, BridgeFailure, CloseReason, Message, ProtocolId};

/// Capacity of the channel from spawned tasks to the actor.
const INTERNAL_CAPACITY: usize = 1024;

/// Aborts a task when dropped, so that a dropped (or killed) node leaves nothing running.
#[derive(Debug)]
struct TaskGuard(Option<JoinHandle<()>>);

impl TaskGuard {
    fn new(handle: JoinHandle<()>) -> Self {
        Self(Some(handle))
    }

    /// Lets the task run to its end on its own.
    fn detach(mut self) {
        self.0.take();
    }

    fn is_running(&self) -> bool {
        self.0.as_ref().is_some_and(|h| !h.is_finished())
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}

enum WriterCmd {
    Frame(Bytes),
    Close,
}

enum Internal {
    Frame {
        peer: PeerId,
        conn: u64,
        bytes: Bytes,
    },
    ConnLost {
        peer: PeerId,
        conn: u64,
        reason: String,
    },
    SessionSignal {
        session: u64,
        payload: Vec<u8>,
    },
    SessionDone {
        session: u64,
        result: Result<Box<dyn Connection>, TransportError>,
    },
    ExternalSignal {
        path: usize,
        signal: SignedSignal,
    },
}

/// Where a handshake's signals travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SignalPath {
    /// Through an attached signaling (index into `signalings`).
    External(usize),
    /// Through neighbour `via`, as bridge job `job`.
    Relay { via: PeerId, job: u64 },
}

/// Someone waiting for a handshake to finish.
enum Waiter {
    /// Open one arc in this overlay once connected.
    Arc(ProtocolId),
    /// Report the outcome of bridge `job` to neighbour `relay` (we are A).
    Job { relay: PeerId, job: u64 },
    /// A `connect` command.
    Reply(Reply<Result<(), ConnectError>>),
}

struct Session {
    remote: PeerId,
    role: Role,
    path: SignalPath,
    inbound: mpsc::Sender<Vec<u8>>,
    next_seq: u32,
    waiters: Vec<Waiter>,
    _task: TaskGuard,
}

struct Peer {
    conn_id: u64,
    conn: Arc<dyn Connection>,
    control: mpsc::Sender<WriterCmd>,
    data: mpsc::Sender<Bytes>,
    last_recv: Instant,
    ping_sent: bool,
    linger_until: Option<Instant>,
    _reader: TaskGuard,
    _writer: TaskGuard,
}

/// Who asked for a bridge this node relays.
enum BridgeOrigin {
    /// A `bridge` command.
    Command(Reply<Result<(), BridgeFailure>>),
    /// An overlay's `Output::Bridge` (index of the overlay).
    Overlay(usize),
}

#[derive(Default)]
struct Views {
    inview: ArcSet<PeerId>,
    outview: ArcSet<PeerId>,
}

struct AttachedSignaling {
    signaling: Arc<dyn Signaling>,
    /// Outgoing signals, sent in order by one task.
    outgoing: mpsc::Sender<SignedSignal>,
    _listener: TaskGuard,
    _sender: TaskGuard,
}

/// Signals waiting to be sent on one signaling path.
const SIGNALING_QUEUE: usize = 256;

struct OverlaySlot {
    id: ProtocolId,
    overlay: Box<dyn DynOverlay>,
}

pub(super) struct Actor {
    config: Config,
    keypair: Keypair,
    local: PeerId,
    transport: Arc<dyn Transport>,
    rng: ChaCha8Rng,
    protocols: Vec<ProtocolId>,
    views: BTreeMap<ProtocolId, Views>,
    peers: BTreeMap<PeerId, Peer>,
    sessions: BTreeMap<u64, Session>,
    bridge: Bridge<PeerId, SignedSignal>,
    bridge_origins: BTreeMap<u64, BridgeOrigin>,
    request_replies: BTreeMap<u64, Reply<Result<(), ConnectError>>>,
    next_token: u64,
    signalings: Vec<AttachedSignaling>,
    overlays: Vec<OverlaySlot>,
    overlay_inputs: VecDeque<(usize, Input<PeerId, TimerToken>)>,
    timers: BTreeMap<(Instant, u64), (usize, TimerToken)>,
    timer_seq: u64,
    next_conn_id: u64,
    internal_tx: mpsc::Sender<Internal>,
    internal_rx: mpsc::Receiver<Internal>,
    events_tx: mpsc::Sender<Event>,
    pending_events: VecDeque<Event>,
    violations: u64,
    shutting_down: bool,
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl Actor {
    pub(super) fn new(
        config: Config,
        keypair: Keypair,
        transport: Arc<dyn Transport>,
        overlays: Vec<Box<dyn DynOverlay>>,
        mut protocols: Vec<ProtocolId>,
        events_tx: mpsc::Sender<Event>,
    ) -> Self {
        let rng = match config.seed {
            Some(seed) => ChaCha8Rng::seed_from_u64(seed),
            None => ChaCha8Rng::from_os_rng(),
        };
        let (internal_tx, internal_rx) = mpsc::channel(INTERNAL_CAPACITY);
        let mut rng = rng;
        let bridge = Bridge::new(
            keypair.peer_id(),
            crate::bridge::Config {
                timeout: config.bridge_timeout,
                max_jobs_per_neighbour: config.max_jobs_per_neighbour,
            },
            protocols
                .iter()
                .copied()
                .chain(overlays.iter().map(|o| o.protocol())),
            rng.random(),
        );
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
        Self {
            local: keypair.peer_id(),
            config,
            keypair,
            transport,
            rng,
            protocols,
            views: BTreeMap::new(),
            peers: BTreeMap::new(),
            sessions: BTreeMap::new(),
            bridge,
            bridge_origins: BTreeMap::new(),
            request_replies: BTreeMap::new(),
            next_token: 0,
            signalings: Vec::new(),
            overlays,
            overlay_inputs: VecDeque::new(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            next_conn_id: 0,
            internal_tx,
            internal_rx,
            events_tx,
            pending_events: VecDeque::new(),
            violations: 0,
            shutting_down: false,
        }
    }

    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        info!(peer = %self.local.short(), transport = self.transport.name(), "node started");
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                biased;
                cmd = commands.recv() => match cmd {
                    Some(cmd) => {
                        if let Some(done) = self.on_command(cmd) {
                            self.shutdown();
                            self.flush_events().await;
                            let _ = done.send(());
                            break;
                        }
                    }
                    None => {
                        self.shutdown();
                        break;
                    }
                },
                Some(report) = self.internal_rx.recv() => self.on_internal(report),
                () = sleep_until(deadline) => self.on_timeout(now()),
            }
            // Overlays and the bridge feed each other; run both until quiet.
            loop {
                self.drive_overlays();
                if !self.drain_bridge() && self.overlay_inputs.is_empty() {
                    break;
                }
            }
            self.flush_events().await;
        }
        info!(peer = %self.local.short(), "node stopped");
    }

    async fn flush_events(&mut self) {
        while let Some(event) = self.pending_events.pop_front() {
            if self.events_tx.send(event).await.is_err() {
                // Nobody listens: events are informational to the application.
                self.pending_events.clear();
            }
        }
    }

    fn emit(&mut self, event: Event) {
        trace!(?event, "event");
        self.pending_events.push_back(event);
    }

    // ----- time -----

    fn next_deadline(&self) -> Option<Instant> {
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
        if let Some(t) = self.bridge.poll_timeout() {
            consider(t);
        }
        if let Some(((t, _), _)) = self.timers.first_key_value() {
            consider(*t);
        }
        next
    }

    fn on_timeout(&mut self, now: Instant) {
        // Overlay timers.
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (idx, token) = entry.remove();
            self.overlay_inputs.push_back((idx, Input::Timer(token)));
        }
        // Connections: keepalive, idle timeout, linger.
        let mut lost = Vec::new();
        let mut expired = Vec::new();
        let mut pings = Vec::new();
        for (id, peer) in &mut self.peers {
            if now >= peer.last_recv + self.config.idle_timeout {
                lost.push(*id);
            } else if !peer.ping_sent && now >= peer.last_recv + self.config.keepalive {
                peer.ping_sent = true;
                pings.push(*id);
            }
            if peer.linger_until.is_some_and(|t| now >= t) {
                expired.push(*id);
            }
        }
        for id in pings {
            let nonce = self.rng.random();
            self.send_control(id, &Message::Ping { nonce });
        }
        for id in lost {
            self.connection_lost(id, "no traffic within the idle timeout".into());
        }
        for id in expired {
            if self.peers.contains_key(&id) && self.arc_total(&id) == 0 {
                debug!(peer = %id.short(), "linger expired, closing connection");
                self.close_connection(id, "no arcs left after linger".into());
            }
        }
        self.bridge.handle_timeout(now);
    }

    // ----- commands -----

    /// Handles a command; returns the reply to send once shut down.
    fn on_command(&mut self, cmd: Command) -> Option<Reply<()>> {
        match cmd {
            Command::AttachSignaling(sig) => {
                self.attach(sig);
            }
            Command::Connect {
                peer,
                signaling,
                overlay,
                reply,
            } => {
                let path = self.attach(signaling);
                let mut waiters = vec![Waiter::Reply(reply)];
                if let Some(o) = overlay {
                    waiters.insert(0, Waiter::Arc(o));
                }
                self.connect(peer, SignalPath::External(path), waiters);
            }
            Command::JoinOverlay {
                overlay,
                contact,
                reply,
            } => {
                let result = if !self.peers.contains_key(&contact) {
                    Err(ArcError::NotConnected(contact))
                } else if let Some(idx) = self.overlay_index(overlay) {
                    self.overlay_inputs
                        .push_back((idx, Input::Join { contact }));
                    Ok(())
                } else {
                    self.open_arc(overlay, contact)
                };
                let _ = reply.send(result);
            }
            Command::OpenArc {
                overlay,
                peer,
                reply,
            } => {
                let _ = reply.send(self.open_arc(overlay, peer));
            }
            Command::CloseArc {
                overlay,
                peer,
                reply,
            } => {
                let _ = reply.send(self.close_arc(overlay, peer));
            }
            Command::DataSender { peer, reply } => {
                let _ = reply.send(self.peers.get(&peer).map(|p| p.data.clone()));
            }
            Command::Bridge {
                overlay,
                from,
                to,
                reply,
            } => self.start_bridge(overlay, from, to, BridgeOrigin::Command(reply)),
            Command::RequestBridge {
                overlay,
                via,
                to,
                reply,
            } => self.request_bridge(overlay, via, to, reply),
            Command::Snapshot(reply) => {
                let _ = reply.send(self.snapshot());
            }
            Command::Peers { overlay, k, reply } => {
                let peers = match self.overlay_index(overlay) {
                    Some(idx) => self.overlays[idx].overlay.peers(k),
                    None => Vec::new(),
                };
                let _ = reply.send(peers);
            }
            Command::Leave(overlay) => {
                if let Some(idx) = self.overlay_index(overlay) {
                    self.overlay_inputs.push_back((idx, Input::Leave));
                }
            }
            Command::Shutdown(reply) => return Some(reply),
        }
        None
    }

    fn attach(&mut self, sig: Arc<dyn Signaling>) -> usize {
        if let Some(i) = self
            .signalings
            .iter()
            .position(|a| Arc::ptr_eq(&a.signaling, &sig))
        {
            return i;
        }
        let path = self.signalings.len();
        let tx = self.internal_tx.clone();
        let listener = sig.clone();
        let task = tokio::spawn(async move {
            loop {
                match listener.recv().await {
                    Ok(signal) => {
                        if tx
                            .send(Internal::ExternalSignal { path, signal })
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                    Err(e) => {
                        debug!(error = %e, "signaling listener ended");
                        break;
                    }
                }
            }
        });
        let (outgoing, mut queue) = mpsc::channel::<SignedSignal>(SIGNALING_QUEUE);
        let sender = {
            let sig = sig.clone();
            tokio::spawn(async move {
                while let Some(signal) = queue.recv().await {
                    if let Err(e) = sig.send(signal).await {
                        debug!(error = %e, "signal not delivered");
                    }
                }
            })
        };
        self.signalings.push(AttachedSignaling {
            signaling: sig,
            outgoing,
            _listener: TaskGuard::new(task),
            _sender: TaskGuard::new(sender),
        });
        path
    }

    fn snapshot(&self) -> Snapshot {
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
            relayed_signals: self.bridge.stats().relayed_signals,
            bridges_ok: self.bridge.stats().bridges_ok,
            bridges_failed: self.bridge.stats().bridges_failed,
            protocol_violations: self.violations + self.bridge.stats().violations,
            connection_tasks: self
                .peers
                .values()
                .map(|p| usize::from(p._reader.is_running()) + usize::from(p._writer.is_running()))
                .sum(),
        }
    }

    fn overlay_index(&self, id: ProtocolId) -> Option<usize> {
        self.overlays.iter().position(|o| o.id == id)
    }

    // ----- arcs -----

    fn arc_total(&self, peer: &PeerId) -> u32 {
        self.views
            .values()
            .map(|v| v.inview.count(peer) + v.outview.count(peer))
            .sum()
    }

    fn refresh_linger(&mut self, peer: PeerId) {
        let idle = self.arc_total(&peer) == 0 && !self.sessions.values().any(|s| s.remote == peer);
        let linger = self.config.linger;
        if let Some(p) = self.peers.get_mut(&peer) {
            if idle {
                if p.linger_until.is_none() {
                    p.linger_until = Some(now() + linger);
                }
            } else {
                p.linger_until = None;
            }
        }
    }

    fn open_arc(&mut self, overlay: ProtocolId, peer: PeerId) -> Result<(), ArcError> {
        if !self.protocols.contains(&overlay) {
            return Err(ArcError::UnknownOverlay(overlay));
        }
        if !self.peers.contains_key(&peer) {
            return Err(ArcError::NotConnected(peer));
        }
        let views = self.views.entry(overlay).or_default();
        if views.outview.count(&peer) >= self.config.max_arcs_per_peer {
            return Err(ArcError::TooManyArcs(peer));
        }
        views.outview.insert(peer);
        self.send_control(peer, &Message::ArcOpen { overlay });
        self.refresh_linger(peer);
        self.arc_event(overlay, peer, Direction::Outgoing, None);
        Ok(())
    }

    fn close_arc(&mut self, overlay: ProtocolId, peer: PeerId) -> Result<(), ArcError> {
        let removed = self
            .views
            .get_mut(&overlay)
            .is_some_and(|v| v.outview.remove(&peer));
        if !removed {
            return Err(ArcError::NoSuchArc(peer));
        }
        self.send_control(peer, &Message::ArcClose { overlay });
        self.refresh_linger(peer);
        self.arc_event(
            overlay,
            peer,
            Direction::Outgoing,
            Some(ArcCloseReason::Closed),
        );
        Ok(())
    }

    /// Reports one arc opening (`reason == None`) or closing, to the overlay and the application.
    fn arc_event(
        &mut self,
        overlay: ProtocolId,
        peer: PeerId,
        direction: Direction,
        reason: Option<ArcCloseReason>,
    ) {
        let input = match &reason {
            None => Input::ArcOpened { peer, direction },
            Some(r) => Input::ArcClosed {
                peer,
                direction,
                reason: r.clone(),
            },
        };
        if let Some(idx) = self.overlay_index(overlay) {
            self.overlay_inputs.push_back((idx, input));
        }
        self.emit(match reason {
            None => Event::ArcOpened {
                overlay,
                peer,
                direction,
            },
            Some(reason) => Event::ArcClosed {
                overlay,
                peer,
                direction,
                reason,
            },
        });
    }

    fn on_arc_open(&mut self, from: PeerId, overlay: ProtocolId) {
        if !self.protocols.contains(&overlay) {
            self.violation(from, "ArcOpen for an overlay this node does not run");
            return;
        }
        let views = self.views.entry(overlay).or_default();
        if views.inview.count(&from) >= self.config.max_arcs_per_peer {
            self.violation(from, "too many arcs");
            return;
        }
        views.inview.insert(from);
        self.refresh_linger(from);
        self.arc_event(overlay, from, Direction::Incoming, None);
    }

    fn on_arc_close(&mut self, from: PeerId, overlay: ProtocolId) {
        let removed = self
            .views
            .get_mut(&overlay)
            .is_some_and(|v| v.inview.remove(&from));
        if !removed {
            self.violation(from, "ArcClose for an arc that does not exist");
            return;
        }
        self.refresh_linger(from);
        self.arc_event(
            overlay,
            from,
            Direction::Incoming,
            Some(ArcCloseReason::Closed),
        );
    }

    fn violation(&mut self, peer: PeerId, what: &str) {
        self.violations += 1;
        warn!(peer = %peer.short(), "protocol violation: {what}");
    }

    // ----- connections -----

    fn send_control(&mut self, peer: PeerId, message: &Message) {
        let frame = match wire::encode(message) {
            Ok(f) => Bytes::from(f),
            Err(e) => {
                warn!(error = %e, "cannot encode control message");
                return;
            }
        };
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        if p.control.try_send(WriterCmd::Frame(frame)).is_err() {
            // The peer does not read fast enough to keep up with control traffic.
            self.connection_lost(peer, "control queue full (peer too slow)".into());
        }
    }

    fn add_connection(&mut self, remote: PeerId, conn: Box<dyn Connection>) {
        let conn: Arc<dyn Connection> = Arc::from(conn);
        self.next_conn_id += 1;
        let conn_id = self.next_conn_id;
        let (control_tx, mut control_rx) = mpsc::channel::<WriterCmd>(self.config.control_queue);
        let (data_tx, mut data_rx) = mpsc::channel::<Bytes>(self.config.data_queue);
        let reader = {
            let conn = conn.clone();
            let tx = self.internal_tx.clone();
            tokio::spawn(async move {
                loop {
                    match conn.recv().await {
                        Ok(bytes) => {
                            if tx
                                .send(Internal::Frame {
                                    peer: remote,
                                    conn: conn_id,
                                    bytes,
                                })
                                .await
                                .is_err()
                            {
                                break;
                            }
                        }
                        Err(e) => {
                            let _ = tx
                                .send(Internal::ConnLost {
                                    peer: remote,
                                    conn: conn_id,
                                    reason: e.to_string(),
                                })
                                .await;
                            break;
                        }
                    }
                }
            })
        };
        let writer = {
            let conn = conn.clone();
            let tx = self.internal_tx.clone();
            tokio::spawn(async move {
                let mut data_open = true;
                loop {
                    let frame = tokio::select! {
                        biased;
                        cmd = control_rx.recv() => match cmd {
                            Some(WriterCmd::Frame(f)) => f,
                            Some(WriterCmd::Close) | None => {
                                conn.close().await;
                                break;
                            }
                        },
                        data = data_rx.recv(), if data_open => match data {
                            Some(f) => f,
                            None => { data_open = false; continue; }
                        },
                    };
                    if let Err(e) = conn.send(frame).await {
                        let _ = tx
                            .send(Internal::ConnLost {
                                peer: remote,
                                conn: conn_id,
                                reason: e.to_string(),
                            })
                            .await;
                        break;
                    }
                }
            })
        };
        self.peers.insert(
            remote,
            Peer {
                conn_id,
                conn,
                control: control_tx,
                data: data_tx,
                last_recv: now(),
                ping_sent: false,
                linger_until: None,
                _reader: TaskGuard::new(reader),
                _writer: TaskGuard::new(writer),
            },
        );
        self.bridge.neighbour_up(remote);
        info!(peer = %remote.short(), "connected");
        self.emit(Event::Connected { peer: remote });
        self.refresh_linger(remote);
    }

    /// Closes a connection on purpose: tells the remote, then closes.
    fn close_connection(&mut self, peer: PeerId, reason: String) {
        self.send_control(
            peer,
            &Message::Close {
                reason: CloseReason::Idle,
            },
        );
        if let Some(p) = self.peers.get(&peer) {
            let _ = p.control.try_send(WriterCmd::Close);
        }
        self.drop_peer(peer, reason, ArcCloseReason::Closed);
    }

    fn connection_lost(&mut self, peer: PeerId, reason: String) {
        if let Some(p) = self.peers.get(&peer) {
            let conn = p.conn.clone();
            tokio::spawn(async move { conn.close().await });
        }
        warn!(peer = %peer.short(), %reason, "connection lost");
        self.drop_peer(peer, reason.clone(), ArcCloseReason::PeerDown(reason));
    }

    /// Forgets a neighbour: its arcs close (one event per occurrence), the bridge
    /// jobs and handshakes that went through it fail.
    fn drop_peer(&mut self, peer: PeerId, reason: String, arc_reason: ArcCloseReason) {
        let Some(p) = self.peers.remove(&peer) else {
            return;
        };
        // On a purposeful close the writer still flushes `Close` and closes the
        // connection; on a loss everything stops now.
        if !matches!(arc_reason, ArcCloseReason::PeerDown(_)) {
            let Peer { _writer, .. } = p;
            _writer.detach();
        }
        let overlays: Vec<ProtocolId> = self.views.keys().copied().collect();
        for overlay in overlays {
            let views = self.views.get_mut(&overlay).expect("listed above");
            let out = views.outview.remove_all(&peer);
            let inn = views.inview.remove_all(&peer);
            for _ in 0..out {
                self.arc_event(overlay, peer, Direction::Outgoing, Some(arc_reason.clone()));
            }
            for _ in 0..inn {
                self.arc_event(overlay, peer, Direction::Incoming, Some(arc_reason.clone()));
            }
        }
        // Jobs relayed by or through the peer fail.
        self.bridge.neighbour_down(&peer);
        // Handshakes relayed through the peer.
        let sessions: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| matches!(s.path, SignalPath::Relay { via, .. } if via == peer))
            .map(|(id, _)| *id)
            .collect();
        for session in sessions {
            self.fail_session(session, ConnectError::Bridge(BridgeFailure::PeerGone(peer)));
        }
        self.emit(Event::Disconnected { peer, reason });
    }

    // ----- reports from tasks -----

    fn on_internal(&mut self, report: Internal) {
        match report {
            Internal::Frame { peer, conn, bytes } => {
                let Some(p) = self.peers.get_mut(&peer) else {
                    return;
                };
                if p.conn_id != conn {
                    return;
                }
                p.last_recv = now();
                p.ping_sent = false;
                match wire::decode(&bytes) {
                    Ok(message) => self.on_message(peer, message),
                    Err(e) => {
                        self.violation(peer, &format!("undecodable frame: {e}"));
                    }
                }
            }
            Internal::ConnLost { peer, conn, reason } => {
                if self.peers.get(&peer).is_some_and(|p| p.conn_id == conn) {
                    self.connection_lost(peer, reason);
                }
            }
            Internal::SessionSignal { session, payload } => self.send_signal(session, payload),
            Internal::SessionDone { session, result } => self.session_done(session, result),
            Internal::ExternalSignal { path, signal } => {
                self.on_signal(signal, SignalPath::External(path))
            }
        }
    }

    fn on_message(&mut self, from: PeerId, message: Message) {
        match message {
            Message::ArcOpen { overlay } => self.on_arc_open(from, overlay),
            Message::ArcClose { overlay } => self.on_arc_close(from, overlay),
            Message::Bridge(message) => {
                self.bridge.handle_message(now(), from, *message);
            }
            Message::Overlay { overlay, payload } => match self.overlay_index(overlay) {
                Some(idx) => self
                    .overlay_inputs
                    .push_back((idx, Input::Message { from, payload })),
                None => self.violation(from, "message for an overlay this node does not run"),
            },
            Message::Data { protocol, payload } => self.emit(Event::Message {
                from,
                protocol,
                payload: Bytes::from(payload),
            }),
            Message::Ping { nonce } => self.send_control(from, &Message::Pong { nonce }),
            Message::Pong { .. } => {}
            Message::Close { reason } => {
                debug!(peer = %from.short(), ?reason, "remote closed the connection");
                if let Some(p) = self.peers.get(&from) {
                    let _ = p.control.try_send(WriterCmd::Close);
                }
                // After an idle close, our arcs to the remote were opened after it
                // decided (it saw none): they never reached it. They failed to
                // open; the remote did not crash.
                let mut unopened = Vec::new();
                if reason == CloseReason::Idle {
                    for (overlay, views) in &mut self.views {
                        let n = views.outview.remove_all(&from);
                        unopened.extend(std::iter::repeat_n(*overlay, n as usize));
                    }
                }
                for overlay in &unopened {
                    self.arc_event(
                        *overlay,
                        from,
                        Direction::Outgoing,
                        Some(ArcCloseReason::Closed),
                    );
                }
                let arc_reason = match reason {
                    CloseReason::Idle => {
                        ArcCloseReason::PeerDown("remote closed the connection".into())
                    }
                    CloseReason::Shutdown => ArcCloseReason::PeerDown("remote shut down".into()),
                };
                self.drop_peer(from, "closed by remote".into(), arc_reason);
                for overlay in unopened {
                    self.connect_failed(
                        Some(overlay),
                        from,
                        ConnectError::Transport(
                            "the remote closed the idle connection before the arc reached it"
                                .into(),
                        ),
                    );
                }
            }
        }
    }

    // ----- handshakes -----

    /// Connects to `remote` (or joins a handshake in progress) and then serves `waiters`.
    fn connect(&mut self, remote: PeerId, path: SignalPath, waiters: Vec<Waiter>) {
        if remote == self.local {
            self.fail_waiters(remote, waiters, ConnectError::SelfConnect);
            return;
        }
        if self.peers.contains_key(&remote) {
            self.serve_waiters(remote, waiters);
            return;
        }
        if let Some(session) = self.sessions.values_mut().find(|s| s.remote == remote) {
            session.waiters.extend(waiters);
            return;
        }
        if self.sessions.len() >= self.config.max_handshakes {
            self.fail_waiters(remote, waiters, ConnectError::TooManyHandshakes);
            return;
        }
        if self.peers.len() >= self.config.max_peers {
            self.fail_waiters(remote, waiters, ConnectError::TooManyPeers);
            return;
        }
        let session = loop {
            let id = self.rng.random::<u64>();
            if !self.sessions.contains_key(&id) {
                break id;
            }
        };
        self.start_session(session, remote, Role::Dialer, path, waiters, None);
    }

    fn start_session(
        &mut self,
        session: u64,
        remote: PeerId,
        role: Role,
        path: SignalPath,
        waiters: Vec<Waiter>,
        first: Option<Vec<u8>>,
    ) {
        let (pipe, ends) = SignalPipe::new(self.local, remote);
        let mut outbound = ends.outbound;
        if let Some(first) = first {
            let _ = ends.inbound.try_send(first);
        }
        let transport = self.transport.clone();
        let tx = self.internal_tx.clone();
        let timeout = self.config.handshake_timeout;
        let task = tokio::spawn(async move {
            let handshake = async {
                let fut = match role {
                    Role::Dialer => transport.dial(pipe),
                    Role::Acceptor => transport.accept(pipe),
                };
                tokio::pin!(fut);
                loop {
                    tokio::select! {
                        result = &mut fut => break result,
                        Some(payload) = outbound.recv() => {
                            if tx.send(Internal::SessionSignal { session, payload }).await.is_err() {
                                return Err(TransportError::SignalingClosed);
                            }
                        }
                    }
                }
            };
            let result = match tokio::time::timeout(timeout, handshake).await {
                Ok(r) => r,
                Err(_) => Err(TransportError::Timeout(timeout)),
            };
            // Signals the transport queued while finishing still go out.
            while let Ok(payload) = outbound.try_recv() {
                let _ = tx.send(Internal::SessionSignal { session, payload }).await;
            }
            let _ = tx.send(Internal::SessionDone { session, result }).await;
        });
        debug!(peer = %remote.short(), ?role, ?path, session, "handshake started");
        self.sessions.insert(
            session,
            Session {
                remote,
                role,
                path,
                inbound: ends.inbound,
                next_seq: 0,
                waiters,
                _task: TaskGuard::new(task),
            },
        );
        if let Some(p) = self.peers.get_mut(&remote) {
            p.linger_until = None;
        }
    }

    fn send_signal(&mut self, session: u64, payload: Vec<u8>) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        let signal = Signal {
            from: self.local,
            to: s.remote,
            session,
            role: s.role,
            seq: s.next_seq,
            transport: self.transport.name().to_string(),
            payload,
        };
        s.next_seq += 1;
        let path = s.path;
        let signed = match signal.sign(&self.keypair) {
            Ok(signed) => signed,
            Err(e) => {
                self.fail_session(session, ConnectError::Transport(e.to_string()));
                return;
            }
        };
        match path {
            SignalPath::External(i) => {
                if self.signalings[i].outgoing.try_send(signed).is_err() {
                    warn!("signaling queue full; signal dropped (the handshake will time out)");
                }
            }
            SignalPath::Relay { via, job } => self.bridge.relay_signal(via, job, signed),
        }
    }

    /// A signed signal arrived for us, from a signaling path or a relaying neighbour.
    fn on_signal(&mut self, signed: SignedSignal, path: SignalPath) {
        let signal = match signed.verify(&self.local) {
            Ok(s) => s.clone(),
            Err(e) => {
                warn!(error = %e, ?path, "signal rejected");
                if let SignalPath::Relay { via, job } = path {
                    self.bridge.signal_rejected(&via, job, e.to_string());
                    // A handshake relayed by this job cannot be trusted to finish.
                    let ours: Vec<u64> = self
                        .sessions
                        .iter()
                        .filter(|(_, s)| s.path == path)
                        .map(|(id, _)| *id)
                        .collect();
                    for id in ours {
                        self.fail_session(
                            id,
                            ConnectError::Bridge(BridgeFailure::SignalRejected(e.to_string())),
                        );
                    }
                }
                return;
            }
        };
        if signal.transport != self.transport.name() {
            warn!(transport = %signal.transport, "signal for another transport ignored");
            return;
        }
        if let Some(s) = self.sessions.get(&signal.session) {
            if s.remote == signal.from && s.role != signal.role {
                if s.inbound.try_send(signal.payload).is_err() {
                    warn!(peer = %signal.from.short(), "handshake signal queue full; signal dropped");
                }
            } else {
                debug!("signal for a session of another peer or role ignored");
            }
            return;
        }
        if signal.role != Role::Dialer || signal.seq != 0 {
            trace!(
                session = signal.session,
                "late signal of a finished handshake ignored"
            );
            return;
        }
        let remote = signal.from;
        if self.peers.contains_key(&remote) {
            debug!(peer = %remote.short(), "dial from a connected peer ignored");
            return;
        }
        // Glare: both sides dial at once. The dial of the smaller peer id wins.
        let ours = self
            .sessions
            .iter()
            .find(|(_, s)| s.remote == remote)
            .map(|(id, s)| (*id, s.role));
        let mut waiters = Vec::new();
        if let Some((id, role)) = ours {
            if role == Role::Dialer && self.local < remote {
                debug!(peer = %remote.short(), "glare: our dial wins");
                return;
            }
            if role == Role::Acceptor {
                return;
            }
            debug!(peer = %remote.short(), "glare: their dial wins");
            let lost = self.sessions.remove(&id).expect("found above");
            waiters = lost.waiters;
        }
        if self.sessions.len() >= self.config.max_handshakes
            || self.peers.len() >= self.config.max_peers
        {
            warn!(peer = %remote.short(), "incoming handshake refused: limits reached");
            self.fail_waiters(remote, waiters, ConnectError::TooManyHandshakes);
            return;
        }
        self.start_session(
            signal.session,
            remote,
            Role::Acceptor,
            path,
            waiters,
            Some(signal.payload),
        );
    }

    fn session_done(&mut self, session: u64, result: Result<Box<dyn Connection>, TransportError>) {
        let Some(s) = self.sessions.remove(&session) else {
            return;
        };
        if let SignalPath::Relay { via, job } = s.path {
            // As the target of a bridge, the job ends with the handshake.
            let outcome = result
                .as_ref()
                .map(|_| ())
                .map_err(|e| BridgeFailure::Transport(e.to_string()));
            if !self.bridge.is_opener(&via, job) {
                self.bridge.handshake_done(&via, job, outcome);
            }
        }
        match result {
            Ok(conn) => {
                if self.peers.contains_key(&s.remote) {
                    // A connection appeared meanwhile: keep it, drop this one.
                    debug!(peer = %s.remote.short(), "duplicate connection closed");
                    tokio::spawn(async move { conn.close().await });
                } else {
                    self.add_connection(s.remote, conn);
                }
                self.serve_waiters(s.remote, s.waiters);
            }
            Err(e) => {
                debug!(peer = %s.remote.short(), error = %e, "handshake failed");
                self.fail_waiters(s.remote, s.waiters, ConnectError::from(e));
            }
        }
    }

    fn fail_session(&mut self, session: u64, error: ConnectError) {
        if let Some(s) = self.sessions.remove(&session) {
            if let SignalPath::Relay { via, job } = s.path
                && !self.bridge.is_opener(&via, job)
            {
                self.bridge.handshake_done(
                    &via,
                    job,
                    Err(BridgeFailure::Transport(error.to_string())),
                );
            }
            self.fail_waiters(s.remote, s.waiters, error);
            self.refresh_linger(s.remote);
        }
    }

    fn serve_waiters(&mut self, remote: PeerId, waiters: Vec<Waiter>) {
        let mut opened: Vec<ProtocolId> = Vec::new();
        for w in waiters {
            match w {
                Waiter::Arc(overlay) => match self.open_arc(overlay, remote) {
                    Ok(()) => opened.push(overlay),
                    Err(e) => self.connect_failed(Some(overlay), remote, arc_to_connect(e)),
                },
                Waiter::Job { relay, job } => {
                    // Reported once the arc (served before) is open.
                    let result = if opened.is_empty() {
                        Err(BridgeFailure::Transport(
                            "the arc could not be opened".into(),
                        ))
                    } else {
                        Ok(())
                    };
                    self.bridge.handshake_done(&relay, job, result);
                }
                Waiter::Reply(reply) => {
                    let _ = reply.send(Ok(()));
                }
            }
        }
        self.refresh_linger(remote);
    }

    fn fail_waiters(&mut self, remote: PeerId, waiters: Vec<Waiter>, error: ConnectError) {
        let mut reported = false;
        for w in waiters {
            match w {
                Waiter::Arc(overlay) => {
                    reported = true;
                    self.connect_failed(Some(overlay), remote, error.clone());
                }
                Waiter::Job { relay, job } => {
                    let failure = match &error {
                        ConnectError::Bridge(f) => f.clone(),
                        ConnectError::Timeout => BridgeFailure::Timeout,
                        other => BridgeFailure::Transport(other.to_string()),
                    };
                    self.bridge.handshake_done(&relay, job, Err(failure));
                }
                Waiter::Reply(reply) => {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
        if !reported {
            self.emit(Event::ConnectFailed {
                overlay: None,
                peer: remote,
                reason: error,
            });
        }
    }

    fn connect_failed(&mut self, overlay: Option<ProtocolId>, peer: PeerId, reason: ConnectError) {
        if let Some(idx) = overlay.and_then(|o| self.overlay_index(o)) {
            self.overlay_inputs.push_back((
                idx,
                Input::ConnectFailed {
                    peer,
                    reason: reason.to_string(),
                },
            ));
        }
        self.emit(Event::ConnectFailed {
            overlay,
            peer,
            reason,
        });
    }

    // ----- the bridge (neighbour relay) -----

    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// We are B: make neighbour `from` open an arc to `to` through us.
    fn start_bridge(
        &mut self,
        overlay: ProtocolId,
        from: PeerId,
        to: PeerId,
        origin: BridgeOrigin,
    ) {
        if !self.protocols.contains(&overlay) {
            let failure = BridgeFailure::UnknownOverlay;
            match origin {
                BridgeOrigin::Command(reply) => {
                    let _ = reply.send(Err(failure));
                }
                BridgeOrigin::Overlay(idx) => self.overlay_inputs.push_back((
                    idx,
                    Input::BridgeFailed {
                        from,
                        to,
                        reason: failure.to_string(),
                    },
                )),
            }
            return;
        }
        let token = self.token();
        self.bridge_origins.insert(token, origin);
        self.bridge.bridge(now(), overlay, from, to, Some(token));
    }

    /// We are A: ask neighbour `via` to connect us to its neighbour `to`.
    fn request_bridge(
        &mut self,
        overlay: ProtocolId,
        via: PeerId,
        to: PeerId,
        reply: Reply<Result<(), ConnectError>>,
    ) {
        if to == self.local {
            let _ = reply.send(Err(ConnectError::SelfConnect));
            return;
        }
        if !self.protocols.contains(&overlay) {
            let _ = reply.send(Err(arc_to_connect(ArcError::UnknownOverlay(overlay))));
            return;
        }
        if self.peers.contains_key(&to) {
            let _ = reply.send(self.open_arc(overlay, to).map_err(arc_to_connect));
            return;
        }
        let token = self.token();
        self.request_replies.insert(token, reply);
        self.bridge.request(now(), overlay, via, to, token);
    }

    /// Carries out what the bridge machine asks.
    fn drain_bridge(&mut self) -> bool {
        let mut any = false;
        while let Some(output) = self.bridge.poll_output() {
            any = true;
            self.on_bridge_output(output);
        }
        any
    }

    fn on_bridge_output(&mut self, output: BridgeOutput<PeerId, SignedSignal>) {
        match output {
            BridgeOutput::Send { to, message } => {
                self.send_control(to, &Message::Bridge(Box::new(message)));
            }
            BridgeOutput::Connect {
                via,
                job,
                overlay,
                to,
            } => {
                let waiters = vec![Waiter::Arc(overlay), Waiter::Job { relay: via, job }];
                self.connect(to, SignalPath::Relay { via, job }, waiters);
            }
            BridgeOutput::Deliver {
                via,
                job,
                from,
                signal,
            } => {
                if signal.signal.from != from {
                    self.bridge.signal_rejected(
                        &via,
                        job,
                        "signal author does not match the relay header".into(),
                    );
                    return;
                }
                self.on_signal(signal, SignalPath::Relay { via, job });
            }
            BridgeOutput::Abort { via, job, reason } => {
                let ours: Vec<u64> = self
                    .sessions
                    .iter()
                    .filter(|(_, s)| s.path == SignalPath::Relay { via, job })
                    .map(|(id, _)| *id)
                    .collect();
                for id in ours {
                    self.fail_session(id, ConnectError::Bridge(reason.clone()));
                }
            }
            BridgeOutput::BridgeDone {
                job,
                overlay,
                from,
                to,
                token,
                result,
            } => {
                match token.and_then(|t| self.bridge_origins.remove(&t)) {
                    Some(BridgeOrigin::Command(reply)) => {
                        let _ = reply.send(result.clone());
                    }
                    Some(BridgeOrigin::Overlay(idx)) => {
                        if let Err(reason) = &result {
                            self.overlay_inputs.push_back((
                                idx,
                                Input::BridgeFailed {
                                    from,
                                    to,
                                    reason: reason.to_string(),
                                },
                            ));
                        }
                    }
                    None => {}
                }
                self.emit(Event::BridgeDone {
                    job,
                    overlay,
                    from,
                    to,
                    result,
                });
            }
            BridgeOutput::RequestDone {
                token,
                overlay,
                to,
                result,
            } => {
                let result = result.map_err(ConnectError::Bridge);
                if let Err(e) = &result {
                    self.connect_failed(Some(overlay), to, e.clone());
                }
                if let Some(reply) = self.request_replies.remove(&token) {
                    let _ = reply.send(result);
                }
            }
        }
    }

    // ----- overlays -----

    fn drive_overlays(&mut self) {
        let now = now();
        let mut budget = 100_000usize;
        while let Some((idx, input)) = self.overlay_inputs.pop_front() {
            budget = budget.saturating_sub(1);
            if budget == 0 {
                warn!("overlay input budget exhausted; remaining inputs dropped");
                self.overlay_inputs.clear();
                break;
            }
            self.overlays[idx].overlay.handle(now, input);
            while let Some(output) = self.overlays[idx].overlay.poll_output() {
                self.on_overlay_output(idx, output);
            }
        }
    }

    fn on_overlay_output(&mut self, idx: usize, output: Output<PeerId, TimerToken>) {
        let id = self.overlays[idx].id;
        match output {
            Output::Send { to, payload } => {
                if self.peers.contains_key(&to) {
                    self.send_control(
                        to,
                        &Message::Overlay {
                            overlay: id,
                            payload,
                        },
                    );
                } else {
                    debug!(peer = %to.short(), "overlay message to a peer that is not connected dropped");
                }
            }
            Output::OpenArc { to } => {
                if let Err(e) = self.open_arc(id, to) {
                    self.connect_failed(Some(id), to, arc_to_connect(e));
                }
            }
            Output::CloseArc { to } => {
                if let Err(e) = self.close_arc(id, to) {
                    debug!(peer = %to.short(), error = %e, "overlay closed an arc it did not have");
                }
            }
            Output::Bridge { from, to } => {
                self.start_bridge(id, from, to, BridgeOrigin::Overlay(idx))
            }
            Output::SetTimer { at, timer } => {
                self.timer_seq += 1;
                self.timers.insert((at, self.timer_seq), (idx, timer));
            }
            Output::StateChanged(state) => self.emit(Event::OverlayState { overlay: id, state }),
        }
    }

    // ----- shutdown -----

    fn shutdown(&mut self) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        self.bridge.shutdown();
        self.drain_bridge();
        let sessions: Vec<u64> = self.sessions.keys().copied().collect();
        for s in sessions {
            self.fail_session(s, ConnectError::Shutdown);
        }
        self.drain_bridge();
        let peers: Vec<PeerId> = self.peers.keys().copied().collect();
        for peer in peers {
            self.send_control(
                peer,
                &Message::Close {
                    reason: CloseReason::Shutdown,
                },
            );
            if let Some(p) = self.peers.get(&peer) {
                let _ = p.control.try_send(WriterCmd::Close);
            }
            self.drop_peer(peer, "node shut down".into(), ArcCloseReason::Shutdown);
        }
        self.signalings.clear();
    }
}

fn arc_to_connect(e: ArcError) -> ConnectError {
    match e {
        ArcError::NotConnected(p) => ConnectError::NotConnected(p),
        ArcError::Shutdown => ConnectError::Shutdown,
        other => ConnectError::Transport(other.to_string()),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}
