//! The node runtime: one peer's connections, arcs, bridge jobs and overlays.

use std::time::Duration;

/// Settings of a node. Every wait is bounded by one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// How long a transport handshake may take before it fails with a timeout.
    pub handshake_timeout: Duration,
    /// How long a connection with no arcs stays open, so a quick re-add reuses it.
    pub linger: Duration,
    /// Silence on a connection after which it is probed with a ping.
    pub keepalive: Duration,
    /// Silence after which a connection is declared lost (remote vanished).
    pub idle_timeout: Duration,
    /// How long a bridge job may take, on every side.
    pub bridge_timeout: Duration,
    /// Bridge jobs (and relayed handshakes) in flight per neighbour.
    pub max_jobs_per_neighbour: usize,
    /// Handshakes in flight in total.
    pub max_handshakes: usize,
    /// Connected peers at most.
    pub max_peers: usize,
    /// Events waiting for the application at most (the node waits when full).
    pub event_capacity: usize,
    /// Control messages waiting per connection at most (a peer that lets more pile
    /// up is too slow and is disconnected).
    pub control_queue: usize,
    /// Application messages waiting per connection at most (senders wait when full).
    pub data_queue: usize,
    /// Arcs in one direction to one peer in one overlay at most.
    pub max_arcs_per_peer: u32,
    /// Seed of the node's RNG (job ids, session ids). `None`: from the OS.
    pub seed: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            linger: Duration::from_secs(5),
            keepalive: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(15),
            bridge_timeout: Duration::from_secs(15),
            max_jobs_per_neighbour: 16,
            max_handshakes: 256,
            max_peers: 1024,
            event_capacity: 4096,
            control_queue: 4096,
            data_queue: 64,
            max_arcs_per_peer: 4096,
            seed: None,
        }
    }
}

mod actor;
mod builder;

pub use builder::Builder;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::arc::{Direction, Inview, Outview};
use crate::identity::PeerId;
use crate::overlay::{ArcCloseReason, ConnectionState};
use crate::signaling::{Signaling, SignalingError};
use crate::transport::TransportError;
use crate::wire::{BridgeFailure, ProtocolId};

/// What a node tells its application.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A transport connection to `peer` is up.
    Connected {
        /// The neighbour.
        peer: PeerId,
    },
    /// The connection to `peer` is gone (closed after linger, or lost).
    Disconnected {
        /// The former neighbour.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// One arc opened (once per occurrence).
    ArcOpened {
        /// Overlay of the arc.
        overlay: ProtocolId,
        /// The remote peer.
        peer: PeerId,
        /// Outgoing or incoming.
        direction: Direction,
    },
    /// One arc closed (once per occurrence).
    ArcClosed {
        /// Overlay of the arc.
        overlay: ProtocolId,
        /// The remote peer.
        peer: PeerId,
        /// Outgoing or incoming.
        direction: Direction,
        /// Why.
        reason: ArcCloseReason,
    },
    /// An arc (or a plain connection when `overlay` is `None`) to `peer` could not
    /// be opened.
    ConnectFailed {
        /// Overlay of the arc that was to open.
        overlay: Option<ProtocolId>,
        /// The peer we tried to reach.
        peer: PeerId,
        /// Why.
        reason: ConnectError,
    },
    /// Application data from a neighbour.
    Message {
        /// The sender.
        from: PeerId,
        /// Application protocol tag.
        protocol: ProtocolId,
        /// The bytes.
        payload: Bytes,
    },
    /// A bridge this node relayed finished (on the bridging peer B).
    BridgeDone {
        /// The job id.
        job: u64,
        /// Overlay of the arc.
        overlay: ProtocolId,
        /// The neighbour that was to open the arc.
        from: PeerId,
        /// The arc's target.
        to: PeerId,
        /// Outcome.
        result: Result<(), BridgeFailure>,
    },
    /// An overlay's connection state changed.
    OverlayState {
        /// The overlay.
        overlay: ProtocolId,
        /// Its new state.
        state: ConnectionState,
    },
}

/// Why a connection (or an arc needing one) could not be opened.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The handshake did not finish within the handshake timeout.
    #[error("handshake timed out")]
    Timeout,
    /// The transport failed.
    #[error("transport: {0}")]
    Transport(String),
    /// The signaling path failed.
    #[error("signaling: {0}")]
    Signaling(#[from] SignalingError),
    /// The bridge through a neighbour failed.
    #[error("bridge: {0}")]
    Bridge(#[from] BridgeFailure),
    /// Too many handshakes in flight.
    #[error("too many handshakes in flight")]
    TooManyHandshakes,
    /// The node holds the maximum number of connections.
    #[error("too many peers")]
    TooManyPeers,
    /// A node cannot connect to itself.
    #[error("a node cannot connect to itself")]
    SelfConnect,
    /// The peer is not a neighbour.
    #[error("{0:?} is not connected")]
    NotConnected(PeerId),
    /// The node is shutting down.
    #[error("node shut down")]
    Shutdown,
}

impl From<TransportError> for ConnectError {
    fn from(e: TransportError) -> Self {
        match e {
            TransportError::Timeout(_) => Self::Timeout,
            other => Self::Transport(other.to_string()),
        }
    }
}

/// Why an arc operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArcError {
    /// There is no connection to the peer: connect or bridge first.
    #[error("{0:?} is not connected")]
    NotConnected(PeerId),
    /// There is no arc to close.
    #[error("no arc to {0:?} in this overlay")]
    NoSuchArc(PeerId),
    /// The overlay is not registered on this node.
    #[error("unknown overlay {0:?}")]
    UnknownOverlay(ProtocolId),
    /// The per-peer arc limit is reached.
    #[error("too many arcs to {0:?}")]
    TooManyArcs(PeerId),
    /// The node is shutting down.
    #[error("node shut down")]
    Shutdown,
}

/// Why application data could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// There is no connection to the peer.
    #[error("{0:?} is not connected")]
    NotConnected(PeerId),
    /// The payload exceeds [`crate::wire::MAX_DATA`].
    #[error("payload of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// Payload size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The connection closed while sending.
    #[error("connection closed")]
    Closed,
    /// The node is shutting down.
    #[error("node shut down")]
    Shutdown,
}

/// One neighbour in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighbourInfo {
    /// The neighbour.
    pub peer: PeerId,
    /// Arcs from it to us, all overlays.
    pub inview: u32,
    /// Arcs from us to it, all overlays.
    pub outview: u32,
    /// Whether the connection is lingering (no arcs, kept for reuse).
    pub lingering: bool,
}

/// A consistent copy of a node's tables, for inspection and tests.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// Connected neighbours, in peer order.
    pub neighbours: Vec<NeighbourInfo>,
    /// Arcs per overlay: `(inview, outview)`.
    pub views: BTreeMap<ProtocolId, (Inview, Outview)>,
    /// Handshakes in flight.
    pub handshakes: usize,
    /// Bridge jobs this node relays (as B).
    pub relay_jobs: usize,
    /// Bridges this node asked a neighbour for, not yet answered.
    pub bridge_requests: usize,
    /// Bridge jobs this node takes part in as the opening or the target peer.
    pub bridge_endpoints: usize,
    /// Commands waiting for a reply.
    pub waiters: usize,
    /// Signals relayed for neighbours since start.
    pub relayed_signals: u64,
    /// Bridges relayed to completion since start.
    pub bridges_ok: u64,
    /// Bridges relayed that failed since start.
    pub bridges_failed: u64,
    /// Frames that failed to decode or broke the protocol, since start.
    pub protocol_violations: u64,
    /// Connection reader/writer tasks alive.
    pub connection_tasks: usize,
}

impl Snapshot {
    /// The views of `overlay` (empty if none).
    pub fn view(&self, overlay: ProtocolId) -> (Inview, Outview) {
        self.views.get(&overlay).cloned().unwrap_or_default()
    }

    /// Whether `peer` is a connected neighbour.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.neighbours.iter().any(|n| &n.peer == peer)
    }
}

pub(crate) type Reply<T> = oneshot::Sender<T>;

pub(crate) enum Command {
    AttachSignaling(Arc<dyn Signaling>),
    Connect {
        peer: PeerId,
        signaling: Arc<dyn Signaling>,
        overlay: Option<ProtocolId>,
        reply: Reply<Result<(), ConnectError>>,
    },
    JoinOverlay {
        overlay: ProtocolId,
        contact: PeerId,
        reply: Reply<Result<(), ArcError>>,
    },
    OpenArc {
        overlay: ProtocolId,
        peer: PeerId,
        reply: Reply<Result<(), ArcError>>,
    },
    CloseArc {
        overlay: ProtocolId,
        peer: PeerId,
        reply: Reply<Result<(), ArcError>>,
    },
    DataSender {
        peer: PeerId,
        reply: Reply<Option<mpsc::Sender<Bytes>>>,
    },
    Bridge {
        overlay: ProtocolId,
        from: PeerId,
        to: PeerId,
        reply: Reply<Result<(), BridgeFailure>>,
    },
    RequestBridge {
        overlay: ProtocolId,
        via: PeerId,
        to: PeerId,
        reply: Reply<Result<(), ConnectError>>,
    },
    Snapshot(Reply<Snapshot>),
    Peers {
        overlay: ProtocolId,
        k: usize,
        reply: Reply<Vec<PeerId>>,
    },
    Leave(ProtocolId),
    Shutdown(Reply<()>),
}

/// A cloneable handle to a running node: every command goes through it.
#[derive(Clone, Debug)]
pub struct NodeHandle {
    local: PeerId,
    commands: mpsc::Sender<Command>,
    /// Data queues of neighbours, kept from earlier sends so that a send
    /// needs no round trip through the node's actor (shared by the clones).
    data_queues: Arc<std::sync::Mutex<DataQueues>>,
}

/// Neighbours' data queues known to the handles, at most [`MAX_DATA_QUEUES`].
type DataQueues = BTreeMap<PeerId, mpsc::Sender<Bytes>>;

/// Bound of the handles' cache of data queues; closed queues go first.
const MAX_DATA_QUEUES: usize = 4096;

impl NodeHandle {
    pub(crate) fn new(local: PeerId, commands: mpsc::Sender<Command>) -> Self {
        Self {
            local,
            commands,
            data_queues: Arc::default(),
        }
    }

    /// The data queue of `peer`: the cached one while it is open, otherwise
    /// asked from the node (and cached).
    async fn data_queue(&self, peer: PeerId) -> Result<mpsc::Sender<Bytes>, SendError> {
        {
            let mut cache = self.data_queues.lock().unwrap_or_else(|e| e.into_inner());
            match cache.get(&peer) {
                Some(queue) if !queue.is_closed() => return Ok(queue.clone()),
                Some(_) => {
                    cache.remove(&peer);
                }
                None => {}
            }
        }
        let queue = self
            .call(|reply| Command::DataSender { peer, reply })
            .await
            .ok_or(SendError::Shutdown)?
            .ok_or(SendError::NotConnected(peer))?;
        let mut cache = self.data_queues.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_DATA_QUEUES {
            cache.retain(|_, q| !q.is_closed());
            if cache.len() >= MAX_DATA_QUEUES {
                cache.clear();
            }
        }
        cache.insert(peer, queue.clone());
        Ok(queue)
    }
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::AttachSignaling(_) => "AttachSignaling",
            Command::Connect { .. } => "Connect",
            Command::JoinOverlay { .. } => "JoinOverlay",
            Command::OpenArc { .. } => "OpenArc",
            Command::CloseArc { .. } => "CloseArc",
            Command::DataSender { .. } => "DataSender",
            Command::Bridge { .. } => "Bridge",
            Command::RequestBridge { .. } => "RequestBridge",
            Command::Snapshot(_) => "Snapshot",
            Command::Peers { .. } => "Peers",
            Command::Leave(_) => "Leave",
            Command::Shutdown(_) => "Shutdown",
        })
    }
}

impl NodeHandle {
    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.ok()?;
        rx.await.ok()
    }

    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    /// Listens on `signaling` for incoming handshakes (dials from other peers).
    pub async fn attach_signaling(&self, signaling: Arc<dyn Signaling>) {
        let _ = self
            .commands
            .send(Command::AttachSignaling(signaling))
            .await;
    }

    /// Connects to `peer` through `signaling` (attaching it, see
    /// [`NodeHandle::attach_signaling`]) and, if `overlay` is given, opens one arc
    /// to it. Returns once the connection (and arc) is up. If already connected,
    /// only the arc is added.
    ///
    /// # Errors
    /// See [`ConnectError`]; the handshake timeout bounds the wait.
    pub async fn connect(
        &self,
        peer: PeerId,
        signaling: Arc<dyn Signaling>,
        overlay: Option<ProtocolId>,
    ) -> Result<(), ConnectError> {
        self.call(|reply| Command::Connect {
            peer,
            signaling,
            overlay,
            reply,
        })
        .await
        .unwrap_or(Err(ConnectError::Shutdown))
    }

    /// Joins the network through `signaling`: asks it for a contact, connects to
    /// it, and hands the contact to `overlay` (which opens its own arcs). Returns the
    /// contact, or `None` if this node is the first.
    ///
    /// # Errors
    /// See [`ConnectError`].
    pub async fn join(
        &self,
        overlay: ProtocolId,
        signaling: Arc<dyn Signaling>,
    ) -> Result<Option<PeerId>, ConnectError> {
        self.attach_signaling(signaling.clone()).await;
        let Some(contact) = signaling.join().await? else {
            return Ok(None);
        };
        self.connect(contact, signaling, None).await?;
        self.call(|reply| Command::JoinOverlay {
            overlay,
            contact,
            reply,
        })
        .await
        .unwrap_or(Err(ArcError::Shutdown))
        .map_err(|e| match e {
            ArcError::NotConnected(p) => ConnectError::NotConnected(p),
            _ => ConnectError::Shutdown,
        })?;
        Ok(Some(contact))
    }

    /// Opens one more arc to a connected neighbour (no handshake: an `ArcOpen`
    /// message keeps the neighbour's inview exact).
    ///
    /// # Errors
    /// [`ArcError::NotConnected`] if there is no connection to `peer`.
    pub async fn open_arc(&self, overlay: ProtocolId, peer: PeerId) -> Result<(), ArcError> {
        self.call(|reply| Command::OpenArc {
            overlay,
            peer,
            reply,
        })
        .await
        .unwrap_or(Err(ArcError::Shutdown))
    }

    /// Closes one arc to `peer` and tells it (`ArcClose`). The connection lingers
    /// when no arc is left.
    ///
    /// # Errors
    /// [`ArcError::NoSuchArc`] if there is none.
    pub async fn close_arc(&self, overlay: ProtocolId, peer: PeerId) -> Result<(), ArcError> {
        self.call(|reply| Command::CloseArc {
            overlay,
            peer,
            reply,
        })
        .await
        .unwrap_or(Err(ArcError::Shutdown))
    }

    /// Sends application data to a connected neighbour. Waits while the
    /// connection's data queue is full (back-pressure).
    ///
    /// # Errors
    /// See [`SendError`].
    pub async fn send(
        &self,
        peer: PeerId,
        protocol: ProtocolId,
        payload: impl Into<Vec<u8>>,
    ) -> Result<(), SendError> {
        let payload = payload.into();
        if payload.len() > crate::wire::MAX_DATA {
            return Err(SendError::TooLarge {
                size: payload.len(),
                limit: crate::wire::MAX_DATA,
            });
        }
        let sender = self.data_queue(peer).await?;
        let frame = crate::wire::encode(&crate::wire::Message::Data { protocol, payload })
            .map_err(|_| SendError::TooLarge {
                size: crate::wire::MAX_FRAME,
                limit: crate::wire::MAX_FRAME,
            })?;
        sender
            .send(Bytes::from(frame))
            .await
            .map_err(|_| SendError::Closed)
    }

    /// Bridge, on peer B: makes neighbour `from` open an arc in `overlay` to
    /// neighbour `to` (or to this node) through this node, relaying their
    /// handshake signals if they are not connected yet. Returns when `from`
    /// reports the outcome, or fails on the bridge timeout.
    ///
    /// # Errors
    /// See [`BridgeFailure`].
    pub async fn bridge(
        &self,
        overlay: ProtocolId,
        from: PeerId,
        to: PeerId,
    ) -> Result<(), BridgeFailure> {
        self.call(|reply| Command::Bridge {
            overlay,
            from,
            to,
            reply,
        })
        .await
        .unwrap_or(Err(BridgeFailure::ShuttingDown))
    }

    /// On peer A: asks neighbour `via` to connect this node to its neighbour `to`
    /// and opens one arc to `to` in `overlay`. If already connected to `to`, only
    /// the arc is added.
    ///
    /// # Errors
    /// See [`ConnectError`].
    pub async fn request_bridge(
        &self,
        overlay: ProtocolId,
        via: PeerId,
        to: PeerId,
    ) -> Result<(), ConnectError> {
        self.call(|reply| Command::RequestBridge {
            overlay,
            via,
            to,
            reply,
        })
        .await
        .unwrap_or(Err(ConnectError::Shutdown))
    }

    /// A copy of the node's tables.
    pub async fn snapshot(&self) -> Snapshot {
        self.call(Command::Snapshot).await.unwrap_or_default()
    }

    /// Up to `k` peers sampled by `overlay` (empty if the overlay is unknown).
    pub async fn peers(&self, overlay: ProtocolId, k: usize) -> Vec<PeerId> {
        self.call(|reply| Command::Peers { overlay, k, reply })
            .await
            .unwrap_or_default()
    }

    /// Asks `overlay` to leave the network gracefully.
    pub async fn leave(&self, overlay: ProtocolId) {
        let _ = self.commands.send(Command::Leave(overlay)).await;
    }

    /// Closes every connection and stops the node.
    pub async fn shutdown(&self) {
        let _ = self.call(Command::Shutdown).await;
    }
}

/// A running node: its handle, its event stream and its task.
#[derive(Debug)]
pub struct Node {
    handle: NodeHandle,
    events: Option<mpsc::Receiver<Event>>,
    task: JoinHandle<()>,
}

impl Node {
    /// The node's handle (clone it freely).
    pub fn handle(&self) -> &NodeHandle {
        &self.handle
    }

    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.handle.local
    }

    /// The next event; `None` once the node stopped. Keep draining events: the node
    /// waits when [`Config::event_capacity`] events are pending.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.as_mut()?.recv().await
    }

    /// An event if one is ready now.
    pub fn try_next_event(&mut self) -> Option<Event> {
        self.events.as_mut()?.try_recv().ok()
    }

    /// Takes the event receiver, to drain it from another task; afterwards
    /// [`Node::next_event`] returns `None`. The node keeps its other abilities
    /// ([`Node::shutdown`], [`Node::kill`]).
    pub fn take_events(&mut self) -> Option<mpsc::Receiver<Event>> {
        self.events.take()
    }

    /// Splits into the handle and the event receiver (the node keeps running until
    /// shut down or every handle is dropped).
    ///
    /// # Panics
    /// If the events were taken with [`Node::take_events`].
    pub fn into_parts(self) -> (NodeHandle, mpsc::Receiver<Event>) {
        (self.handle, self.events.expect("events not taken"))
    }

    /// Shuts the node down and waits for its task to end.
    pub async fn shutdown(self) {
        self.handle.shutdown().await;
        let _ = self.task.await;
    }

    /// Stops the node abruptly, as a crash would: connections are dropped without
    /// `Close` messages (their remotes notice through the transport or the idle
    /// timeout).
    pub fn kill(self) {
        self.task.abort();
    }
}
