//! The [`Signaling`] trait: a path that delivers signed signals between peers.
//!
//! Implementations: a WebSocket server (`n2n-signal-ws`), memory
//! ([`crate::memory`]). The neighbour path is not a `Signaling`: it is the
//! bridge ([`crate::bridge`]) inside every node. A signaling path only
//! carries signals; it is not trusted with them: every signal is signed by its
//! author and verified by its recipient.

use std::fmt;

use async_trait::async_trait;

use crate::identity::PeerId;
use crate::signal::SignedSignal;

/// Why a signaling operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignalingError {
    /// The path is closed (server gone, neighbour gone, shut down).
    #[error("signaling closed")]
    Closed,
    /// The recipient cannot be reached by this path.
    #[error("peer {0:?} is unknown to the signaling path")]
    UnknownPeer(PeerId),
    /// The server or relay refused the operation.
    #[error("refused: {0}")]
    Refused(String),
    /// The operation did not finish in time.
    #[error("signaling timed out")]
    Timeout,
    /// The server could not be reached.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// Any other failure.
    #[error("{0}")]
    Other(String),
}

/// Delivers signed signals to peers and receives the ones addressed to us.
#[async_trait]
pub trait Signaling: Send + Sync + fmt::Debug + 'static {
    /// The plugin name (`"ws"`, `"memory"`).
    fn name(&self) -> &str;

    /// Joins the rendezvous this path offers (a WebSocket room, for instance) and
    /// returns a contact peer to connect to, or `None` if we are the first.
    ///
    /// # Errors
    /// See [`SignalingError`].
    async fn join(&self) -> Result<Option<PeerId>, SignalingError> {
        Ok(None)
    }

    /// Sends `signal` toward `signal.signal.to`.
    ///
    /// # Errors
    /// See [`SignalingError`].
    async fn send(&self, signal: SignedSignal) -> Result<(), SignalingError>;

    /// Receives the next signal addressed to us. Cancel safe.
    ///
    /// # Errors
    /// [`SignalingError::Closed`] once the path is closed for good.
    async fn recv(&self) -> Result<SignedSignal, SignalingError>;
}
