//! The application's side of a running node: [`NodeHandle`] (commands) and
//! [`Node`] (events, shutdown).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::core::NodeCore;
use super::events::{Events, Subscriptions};
use super::{ArcError, ConnectError, Event, OverlayError, SendError, Snapshot};
use crate::arc::{Inview, Outview};
use crate::identity::PeerId;
use crate::signaling::Signaling;
use crate::time::Instant;
use crate::wire::{BridgeFailure, ProtocolId};

pub(crate) type Reply<T> = oneshot::Sender<T>;

/// A query or command to an overlay, run on the node's task.
pub(crate) type OverlayCall = Box<dyn FnOnce(&mut NodeCore, Instant) + Send>;

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
        reply: Reply<Result<Vec<PeerId>, ArcError>>,
    },
    Leave(ProtocolId),
    /// A query or command to an overlay: runs on the node's task.
    Overlay(OverlayCall),
    Shutdown(Reply<()>),
}

/// What the driver shares with the handles, so that sends, subscriptions
/// and view reads need no round trip through the node's task.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// The data queue of every neighbour, kept by the driver.
    pub(crate) data_queues: Mutex<BTreeMap<PeerId, mpsc::Sender<Bytes>>>,
    /// Per-protocol event streams.
    pub(crate) subscriptions: Mutex<Subscriptions>,
    /// The protocols the node knows (its overlays' and the registered ones).
    pub(crate) protocols: BTreeSet<ProtocolId>,
    /// The views and neighbours, published by the driver when they change.
    pub(crate) published: RwLock<Published>,
    /// Settings of the event streams.
    pub(crate) event_capacity: usize,
    /// See [`super::Config::event_bytes`].
    pub(crate) event_bytes: usize,
    /// The node stopped.
    pub(crate) stopped: std::sync::atomic::AtomicBool,
}

/// The node's tables as last published by the driver.
#[derive(Debug, Default, Clone)]
pub(crate) struct Published {
    pub(crate) views: BTreeMap<ProtocolId, (Inview, Outview)>,
    pub(crate) neighbours: Vec<PeerId>,
}

impl Shared {
    pub(crate) fn data_queues(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<PeerId, mpsc::Sender<Bytes>>> {
        self.data_queues.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A cloneable handle to a running node: every command goes through it.
///
/// Sends ([`NodeHandle::send`], [`NodeHandle::try_send`]), subscriptions
/// ([`NodeHandle::subscribe`]) and view reads ([`NodeHandle::view`],
/// [`NodeHandle::neighbours`]) use tables the node shares with its handles:
/// they never wait on the node's task, so an application may call them from
/// inside its event loop. The other commands are answered by the node's task,
/// which never waits on the application.
#[derive(Clone, Debug)]
pub struct NodeHandle {
    local: PeerId,
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

impl NodeHandle {
    pub(crate) fn new(local: PeerId, commands: mpsc::Sender<Command>, shared: Arc<Shared>) -> Self {
        Self {
            local,
            commands,
            shared,
        }
    }

    /// The data queue of `peer`, if connected.
    fn data_queue(&self, peer: PeerId) -> Result<mpsc::Sender<Bytes>, SendError> {
        if self.commands.is_closed()
            || self
                .shared
                .stopped
                .load(std::sync::atomic::Ordering::Acquire)
        {
            return Err(SendError::Shutdown);
        }
        self.shared
            .data_queues()
            .get(&peer)
            .filter(|q| !q.is_closed())
            .cloned()
            .ok_or(SendError::NotConnected(peer))
    }
}

fn data_frame(protocol: ProtocolId, payload: Vec<u8>) -> Result<Bytes, SendError> {
    if payload.len() > crate::wire::MAX_DATA {
        return Err(SendError::TooLarge {
            size: payload.len(),
            limit: crate::wire::MAX_DATA,
        });
    }
    crate::wire::encode(&crate::wire::Message::Data { protocol, payload })
        .map(Bytes::from)
        .map_err(|_| SendError::TooLarge {
            size: crate::wire::MAX_FRAME,
            limit: crate::wire::MAX_FRAME,
        })
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::AttachSignaling(_) => "AttachSignaling",
            Command::Connect { .. } => "Connect",
            Command::JoinOverlay { .. } => "JoinOverlay",
            Command::OpenArc { .. } => "OpenArc",
            Command::CloseArc { .. } => "CloseArc",
            Command::Bridge { .. } => "Bridge",
            Command::RequestBridge { .. } => "RequestBridge",
            Command::Snapshot(_) => "Snapshot",
            Command::Peers { .. } => "Peers",
            Command::Leave(_) => "Leave",
            Command::Overlay(_) => "Overlay",
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

    /// Joins `overlay` through `neighbour`, a peer this node is already
    /// connected to (no signaling round trip): the overlay gets
    /// `Input::Join { contact: neighbour }`. For a protocol without an
    /// overlay, opens one arc to the neighbour.
    ///
    /// # Errors
    /// [`ArcError::NotConnected`], [`ArcError::UnknownOverlay`].
    pub async fn join_via(&self, overlay: ProtocolId, neighbour: PeerId) -> Result<(), ArcError> {
        if !self.shared.protocols.contains(&overlay) {
            return Err(ArcError::UnknownOverlay(overlay));
        }
        self.call(|reply| Command::JoinOverlay {
            overlay,
            contact: neighbour,
            reply,
        })
        .await
        .unwrap_or(Err(ArcError::Shutdown))
    }

    /// Reads the state of overlay `overlay`, whose type is `O`, on the node's
    /// task: `h.query(spray_id, |s: &spray::State| s.size_estimate())`.
    ///
    /// # Errors
    /// [`OverlayError::UnknownOverlay`], [`OverlayError::WrongType`],
    /// [`OverlayError::Shutdown`].
    pub async fn query<O: 'static, R: Send + 'static>(
        &self,
        overlay: ProtocolId,
        f: impl FnOnce(&O) -> R + Send + 'static,
    ) -> Result<R, OverlayError> {
        self.command(overlay, move |o: &mut O, _| f(o)).await
    }

    /// Runs a command on overlay `overlay`, whose type is `O`, on the node's
    /// task (with the node's `now`); what the overlay asks for in it (arcs,
    /// messages, timers) is carried out right after.
    ///
    /// # Errors
    /// As [`NodeHandle::query`].
    pub async fn command<O: 'static, R: Send + 'static>(
        &self,
        overlay: ProtocolId,
        f: impl FnOnce(&mut O, Instant) -> R + Send + 'static,
    ) -> Result<R, OverlayError> {
        let (tx, rx) = oneshot::channel();
        let run = Box::new(move |core: &mut NodeCore, now: Instant| {
            let _ = tx.send(core.with_overlay(now, overlay, f));
        });
        self.commands
            .send(Command::Overlay(run))
            .await
            .map_err(|_| OverlayError::Shutdown)?;
        rx.await.unwrap_or(Err(OverlayError::Shutdown))
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
    /// connection's data queue is full (back-pressure); the node itself never
    /// waits on the application, so this cannot deadlock it.
    ///
    /// # Errors
    /// See [`SendError`].
    ///
    /// # Cancel safety
    /// Cancel safe: a cancelled send sent nothing.
    pub async fn send(
        &self,
        peer: PeerId,
        protocol: ProtocolId,
        payload: impl Into<Vec<u8>>,
    ) -> Result<(), SendError> {
        let frame = data_frame(protocol, payload.into())?;
        self.data_queue(peer)?
            .send(frame)
            .await
            .map_err(|_| SendError::Closed)
    }

    /// Sends application data to a connected neighbour if its data queue has
    /// room now; never waits.
    ///
    /// # Errors
    /// [`SendError::Full`] when the queue is full (the message is not sent),
    /// otherwise as [`NodeHandle::send`].
    pub fn try_send(
        &self,
        peer: PeerId,
        protocol: ProtocolId,
        payload: impl Into<Vec<u8>>,
    ) -> Result<(), SendError> {
        let frame = data_frame(protocol, payload.into())?;
        self.data_queue(peer)?.try_send(frame).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::Full,
            mpsc::error::TrySendError::Closed(_) => SendError::Closed,
        })
    }

    /// A stream of `protocol`'s events only: its messages, its arcs' openings
    /// and closings, its failed connects, its bridges and state. While a
    /// protocol has a subscriber, its events no longer go to the node's stream
    /// ([`Node::next_event`]); every subscriber of a protocol gets each of its
    /// events. A subscription ends when dropped.
    ///
    /// # Errors
    /// [`ArcError::UnknownOverlay`] if the node neither runs nor registered
    /// `protocol`.
    pub fn subscribe(&self, protocol: ProtocolId) -> Result<Events, ArcError> {
        if !self.shared.protocols.contains(&protocol) {
            return Err(ArcError::UnknownOverlay(protocol));
        }
        let (sink, events) = Events::channel(self.shared.event_capacity, self.shared.event_bytes);
        self.shared
            .subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(protocol)
            .or_default()
            .push(sink);
        Ok(events)
    }

    /// The arcs of `overlay` (`None` if the node neither runs nor registered
    /// it), as of the node's last turn. Synchronous: never waits on the node.
    pub fn view(&self, overlay: ProtocolId) -> Option<(Inview, Outview)> {
        if !self.shared.protocols.contains(&overlay) {
            return None;
        }
        let published = self
            .shared
            .published
            .read()
            .unwrap_or_else(|e| e.into_inner());
        Some(published.views.get(&overlay).cloned().unwrap_or_default())
    }

    /// The connected neighbours, in peer order, as of the node's last turn.
    /// Synchronous: never waits on the node.
    pub fn neighbours(&self) -> Vec<PeerId> {
        self.shared
            .published
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .neighbours
            .clone()
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

    /// Up to `k` peers sampled by `overlay`.
    ///
    /// # Errors
    /// [`ArcError::UnknownOverlay`] if the node runs no such overlay.
    pub async fn peers(&self, overlay: ProtocolId, k: usize) -> Result<Vec<PeerId>, ArcError> {
        self.call(|reply| Command::Peers { overlay, k, reply })
            .await
            .unwrap_or(Err(ArcError::Shutdown))
    }

    /// Asks `overlay` to leave the network gracefully (ignored for an
    /// overlay the node does not run).
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
    pub(super) handle: NodeHandle,
    pub(super) events: Option<Events>,
    pub(super) task: JoinHandle<()>,
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

    /// The next event of the node's stream (the events of protocols without a
    /// subscriber, see [`NodeHandle::subscribe`]); `None` once the node stopped.
    /// The node never waits for its application: if more than
    /// [`Config::event_capacity`](super::Config::event_capacity) events pile
    /// up, new ones are dropped and this returns [`Event::Lagged`] first.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.as_mut()?.recv().await
    }

    /// An event if one is ready now.
    pub fn try_next_event(&mut self) -> Option<Event> {
        self.events.as_mut()?.try_recv()
    }

    /// Takes the event receiver, to drain it from another task; afterwards
    /// [`Node::next_event`] returns `None`. The node keeps its other abilities
    /// ([`Node::shutdown`], [`Node::kill`]).
    pub fn take_events(&mut self) -> Option<Events> {
        self.events.take()
    }

    /// Splits into the handle and the event receiver (the node keeps running until
    /// shut down or every handle is dropped).
    ///
    /// # Panics
    /// If the events were taken with [`Node::take_events`].
    pub fn into_parts(self) -> (NodeHandle, Events) {
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
