//! The [`Transport`] and [`Connection`] traits, and the [`SignalPipe`] through
//! which a transport exchanges its handshake signals.
//!
//! A transport never knows how its signals travel (a WebSocket server, a common
//! neighbour, memory): it writes opaque payloads into the pipe and reads the
//! remote's from it. The node runtime signs, routes and verifies them.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_channel::mpsc;
use futures_util::{SinkExt, StreamExt};

use crate::identity::PeerId;

/// How many signals may wait in each direction of a pipe.
pub const SIGNAL_PIPE_CAPACITY: usize = 64;

/// The signal exchange of one handshake, handed to [`Transport::dial`] or
/// [`Transport::accept`].
#[derive(Debug)]
pub struct SignalPipe {
    local: PeerId,
    remote: PeerId,
    outbound: PipeSender,
    inbound: PipeReceiver,
}

/// The runtime's end of a [`SignalPipe`]: what the transport sent, and a way to
/// feed it the remote's signals.
#[derive(Debug)]
pub struct SignalPipeEnds {
    /// Payloads the transport wants delivered to the remote.
    pub outbound: PipeReceiver,
    /// Payloads from the remote, to hand to the transport.
    pub inbound: PipeSender,
}

/// The receiving half of one direction of a [`SignalPipe`] (runtime-agnostic:
/// it needs no tokio).
#[derive(Debug)]
pub struct PipeReceiver(mpsc::Receiver<Vec<u8>>);

impl PipeReceiver {
    /// The next payload; `None` once the other end is gone. Cancel safe.
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        self.0.next().await
    }

    /// A payload if one is waiting now.
    ///
    /// # Errors
    /// [`PipeError::Empty`] when none waits, [`PipeError::Closed`] once the
    /// other end is gone and nothing is left.
    pub fn try_recv(&mut self) -> Result<Vec<u8>, PipeError> {
        self.0.try_recv().map_err(|e| match e {
            mpsc::TryRecvError::Empty => PipeError::Empty,
            mpsc::TryRecvError::Closed => PipeError::Closed,
        })
    }
}

/// The sending half of one direction of a [`SignalPipe`].
#[derive(Debug, Clone)]
pub struct PipeSender(mpsc::Sender<Vec<u8>>);

impl PipeSender {
    /// Queues `payload`, waiting while the pipe is full.
    ///
    /// # Errors
    /// [`PipeError::Closed`] once the other end is gone.
    pub async fn send(&self, payload: Vec<u8>) -> Result<(), PipeError> {
        self.0
            .clone()
            .send(payload)
            .await
            .map_err(|_| PipeError::Closed)
    }

    /// Queues `payload` if there is room now.
    ///
    /// # Errors
    /// [`PipeError::Full`] or [`PipeError::Closed`].
    pub fn try_send(&self, payload: Vec<u8>) -> Result<(), PipeError> {
        self.0.clone().try_send(payload).map_err(|e| {
            if e.is_full() {
                PipeError::Full
            } else {
                PipeError::Closed
            }
        })
    }

    /// Whether the other end is gone.
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

/// Why a pipe operation did not go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PipeError {
    /// The pipe holds [`SIGNAL_PIPE_CAPACITY`] payloads already.
    #[error("signal pipe full")]
    Full,
    /// Nothing is waiting.
    #[error("signal pipe empty")]
    Empty,
    /// The other end is gone.
    #[error("signal pipe closed")]
    Closed,
}

/// A cloneable sender of signals, for transports that emit signals from callbacks
/// (such as trickle ICE candidates).
#[derive(Debug, Clone)]
pub struct SignalSender(PipeSender);

impl SignalSender {
    /// Queues `payload` for the remote.
    ///
    /// # Errors
    /// [`TransportError::SignalingClosed`] once the handshake is over or abandoned.
    pub async fn send(&self, payload: Vec<u8>) -> Result<(), TransportError> {
        self.0
            .send(payload)
            .await
            .map_err(|_| TransportError::SignalingClosed)
    }
}

impl SignalPipe {
    /// Makes a pipe between `local` and `remote`, returning the transport's end and
    /// the runtime's end.
    pub fn new(local: PeerId, remote: PeerId) -> (Self, SignalPipeEnds) {
        // A futures channel holds its buffer plus one slot per sender.
        let (out_tx, out_rx) = mpsc::channel(SIGNAL_PIPE_CAPACITY - 1);
        let (in_tx, in_rx) = mpsc::channel(SIGNAL_PIPE_CAPACITY - 1);
        (
            Self {
                local,
                remote,
                outbound: PipeSender(out_tx),
                inbound: PipeReceiver(in_rx),
            },
            SignalPipeEnds {
                outbound: PipeReceiver(out_rx),
                inbound: PipeSender(in_tx),
            },
        )
    }

    /// The local peer.
    pub fn local(&self) -> PeerId {
        self.local
    }

    /// The peer on the other side of the handshake.
    pub fn remote(&self) -> PeerId {
        self.remote
    }

    /// Sends one signal payload to the remote.
    ///
    /// # Errors
    /// [`TransportError::SignalingClosed`] if the runtime abandoned the handshake.
    pub async fn send(&self, payload: Vec<u8>) -> Result<(), TransportError> {
        self.outbound
            .send(payload)
            .await
            .map_err(|_| TransportError::SignalingClosed)
    }

    /// A cloneable sender for callbacks.
    pub fn sender(&self) -> SignalSender {
        SignalSender(self.outbound.clone())
    }

    /// Receives the remote's next signal payload; `None` once the runtime abandoned
    /// the handshake. Cancel safe.
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        self.inbound.recv().await
    }
}

/// Why a transport operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The handshake did not finish in time.
    #[error("handshake timed out after {0:?}")]
    Timeout(Duration),
    /// The signaling path closed before the handshake finished.
    #[error("signaling closed before the handshake finished")]
    SignalingClosed,
    /// The remote sent a signal the transport could not understand.
    #[error("bad signal from remote: {0}")]
    BadSignal(String),
    /// The remote proved to be another peer than expected.
    #[error("remote identity mismatch: expected {expected:?}, found {found}")]
    IdentityMismatch {
        /// The peer we meant to reach.
        expected: PeerId,
        /// What the remote proved to be.
        found: String,
    },
    /// Any other failure of the underlying stack.
    #[error("{0}")]
    Other(String),
}

/// Why a connection operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The connection is closed (by either side).
    #[error("connection closed")]
    Closed,
    /// The message is larger than this connection accepts.
    #[error("message of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// Message size.
        size: usize,
        /// Limit in force.
        limit: usize,
    },
    /// The connection failed (remote vanished, protocol error…).
    #[error("connection lost: {0}")]
    Lost(String),
}

/// A reliable, ordered, message-oriented duplex channel to one peer.
///
/// `send` and `recv` may be called concurrently from two tasks.
#[async_trait]
pub trait Connection: Send + Sync + fmt::Debug + 'static {
    /// The remote peer.
    fn remote(&self) -> PeerId;

    /// Sends one message whole. Waits while the transport's send buffer is full, so
    /// a slow receiver slows the sender instead of growing its memory.
    ///
    /// # Errors
    /// [`ConnectionError::Closed`] after close, [`ConnectionError::TooLarge`] above the
    /// transport's limit, [`ConnectionError::Lost`] on failure.
    async fn send(&self, message: Bytes) -> Result<(), ConnectionError>;

    /// Receives the next message. Cancel safe.
    ///
    /// # Errors
    /// [`ConnectionError::Closed`] once closed, [`ConnectionError::Lost`] on failure.
    async fn recv(&self) -> Result<Bytes, ConnectionError>;

    /// Closes the connection and releases its resources. Idempotent.
    async fn close(&self);
}

/// A way to open [`Connection`]s by exchanging signals.
#[async_trait]
pub trait Transport: Send + Sync + fmt::Debug + 'static {
    /// The plugin name, also written in every signal this transport produces.
    fn name(&self) -> &str;

    /// Opens a connection to `signals.remote()`, starting the signal exchange.
    ///
    /// The runtime bounds the call with its handshake timeout and drops the future
    /// when it fires, so implementations must release everything on drop.
    ///
    /// # Errors
    /// See [`TransportError`].
    async fn dial(&self, signals: SignalPipe) -> Result<Box<dyn Connection>, TransportError>;

    /// Accepts a connection from `signals.remote()`, whose first signal will be the
    /// first thing [`SignalPipe::recv`] returns.
    ///
    /// # Errors
    /// See [`TransportError`].
    async fn accept(&self, signals: SignalPipe) -> Result<Box<dyn Connection>, TransportError>;
}
