//! The application's side of a running node: [`NodeHandle`] (commands) and
//! [`Node`] (events, shutdown).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{ArcError, ConnectError, Event, SendError, Snapshot};
use crate::identity::PeerId;
use crate::signaling::Signaling;
use crate::wire::{BridgeFailure, ProtocolId};

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
    pub(super) handle: NodeHandle,
    pub(super) events: Option<mpsc::Receiver<Event>>,
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

    /// The next event; `None` once the node stopped. Keep draining events: the node
    /// waits when [`Config::event_capacity`](super::Config::event_capacity) events are pending.
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
