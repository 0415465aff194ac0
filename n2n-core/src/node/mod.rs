//! The node: one peer's connections, arcs, bridge jobs and overlays.
//!
//! [`core::NodeCore`] is the protocol logic, sans IO; with the default feature
//! `tokio`, [`Builder`] spawns it in a tokio driver and hands back a [`Node`]
//! and its [`NodeHandle`].

use std::time::Duration;

/// Settings of a node. Every wait is bounded by one of these.
///
/// Each field names its default ([`Config::default`]); the stack file's
/// `[node]` section sets every one of them (`…_ms` for durations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// How long a transport handshake may take before it fails with a timeout.
    /// Default 10 s.
    pub handshake_timeout: Duration,
    /// How long a connection with no arcs stays open, so a quick re-add reuses it.
    /// Default 5 s.
    pub linger: Duration,
    /// Silence on a connection after which it is probed with a ping. Default 5 s.
    pub keepalive: Duration,
    /// Silence after which a connection is declared lost (remote vanished).
    /// Default 15 s.
    pub idle_timeout: Duration,
    /// How long a bridge job may take, on every side. Default 15 s.
    pub bridge_timeout: Duration,
    /// Bridge jobs (and relayed handshakes) in flight per neighbour. Default 16.
    pub max_jobs_per_neighbour: usize,
    /// Handshakes this node dials in flight at most (default 256). Offers
    /// from remotes have their own budget, so that they cannot block our
    /// dials.
    pub max_handshakes: usize,
    /// Handshakes remotes started (their offers) in flight at most
    /// (default 64).
    pub max_inbound_handshakes: usize,
    /// The network this node's signals are signed for and the only one it
    /// accepts signals of (default `"n2n"`): set it to the room or stack
    /// name, so that a signal cannot be replayed in another network.
    pub network: String,
    /// How long a signal this node signs stays valid (its not-after time is
    /// now plus this; default 60 s). A signal is refused past its not-after
    /// time, or if that lies more than this plus 30 s of clock skew ahead.
    pub signal_lifetime: Duration,
    /// Offers remembered to refuse their replays (default 4,096; oldest
    /// forgotten first, when the not-after time protects).
    pub replay_cache: usize,
    /// Connected peers at most. Default 1024.
    pub max_peers: usize,
    /// Events waiting for the application at most, per stream (the node's and
    /// each subscription). The node never waits for its application: when a
    /// stream is full, new events are dropped and the reader gets
    /// [`Event::Lagged`]. Default 4096.
    pub event_capacity: usize,
    /// Bytes of events (message payloads) waiting per stream at most; one
    /// event always fits in an empty stream. Default 64 MiB.
    pub event_bytes: usize,
    /// Control messages waiting per connection at most (a peer that lets more pile
    /// up is too slow and is disconnected). Default 4096.
    pub control_queue: usize,
    /// Application messages waiting per connection at most
    /// ([`NodeHandle::send`] waits, [`NodeHandle::try_send`] fails when full).
    /// Default 64.
    pub data_queue: usize,
    /// Arcs in one direction to one peer in one overlay at most. Default 4096.
    pub max_arcs_per_peer: u32,
    /// Seed of the node's RNG (job ids, session ids). `None` (the default): from the OS.
    pub seed: Option<u64>,
    /// How signals are authenticated: ed25519 signatures, always, on a real
    /// network ([`Builder::spawn`] refuses anything else).
    pub signal_auth: SignalAuth,
}

/// How a node authenticates the signals it sends and receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SignalAuth {
    /// Every signal is signed by its author's ed25519 key and verified by its
    /// recipient, so that no relay or server can forge or alter one.
    #[default]
    Ed25519,
    /// Signals carry no signature and are taken as they come. Only for
    /// simulations of honest peers (`n2n-sim`'s node runtime), where
    /// signatures would dominate the simulated time: with it, any relay
    /// could forge or alter signals. The tokio driver refuses it.
    UnsignedForSimulation,
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
            max_inbound_handshakes: 64,
            network: "n2n".to_string(),
            signal_lifetime: Duration::from_secs(60),
            replay_cache: 4096,
            max_peers: 1024,
            event_capacity: 4096,
            event_bytes: 64 << 20,
            control_queue: 4096,
            data_queue: 64,
            max_arcs_per_peer: 4096,
            seed: None,
            signal_auth: SignalAuth::Ed25519,
        }
    }
}

impl Config {
    /// Checks the settings against each other: every wait positive, the
    /// keepalive shorter than the idle timeout (or every connection would be
    /// dropped before its first ping), every budget at least one.
    ///
    /// # Errors
    /// A sentence naming the first bad setting.
    pub fn validate(&self) -> Result<(), String> {
        let zero = |what: &str| Err(format!("`{what}` must be greater than zero"));
        for (what, d) in [
            ("handshake_timeout", self.handshake_timeout),
            ("keepalive", self.keepalive),
            ("idle_timeout", self.idle_timeout),
            ("bridge_timeout", self.bridge_timeout),
            ("signal_lifetime", self.signal_lifetime),
        ] {
            if d.is_zero() {
                return zero(what);
            }
        }
        for (what, n) in [
            ("max_jobs_per_neighbour", self.max_jobs_per_neighbour),
            ("max_handshakes", self.max_handshakes),
            ("max_inbound_handshakes", self.max_inbound_handshakes),
            ("max_peers", self.max_peers),
            ("event_capacity", self.event_capacity),
            ("control_queue", self.control_queue),
            ("data_queue", self.data_queue),
            ("max_arcs_per_peer", self.max_arcs_per_peer as usize),
        ] {
            if n == 0 {
                return zero(what);
            }
        }
        if self.keepalive >= self.idle_timeout {
            return Err(format!(
                "`keepalive` ({} ms) must be shorter than `idle_timeout` ({} ms)",
                self.keepalive.as_millis(),
                self.idle_timeout.as_millis()
            ));
        }
        if self.network.len() > crate::signal::MAX_NETWORK_ID {
            return Err(format!(
                "`network` is longer than {} bytes",
                crate::signal::MAX_NETWORK_ID
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_that_cannot_work_are_refused() {
        assert_eq!(Config::default().validate(), Ok(()));
        let bad = [
            Config {
                idle_timeout: Duration::ZERO,
                ..Config::default()
            },
            Config {
                keepalive: Duration::from_secs(15),
                ..Config::default()
            },
            Config {
                max_jobs_per_neighbour: 0,
                ..Config::default()
            },
            Config {
                network: "x".repeat(65),
                ..Config::default()
            },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }
}

#[cfg(feature = "tokio")]
mod builder;
pub mod core;
#[cfg(feature = "tokio")]
mod driver;
#[cfg(feature = "tokio")]
mod events;
#[cfg(feature = "tokio")]
mod handle;
#[cfg(feature = "tokio")]
mod links;

#[cfg(feature = "tokio")]
pub use builder::Builder;
#[cfg(feature = "tokio")]
pub use events::Events;
#[cfg(feature = "tokio")]
pub use handle::{Node, NodeHandle};

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::arc::{Direction, Inview, Outview};
use crate::identity::PeerId;
use crate::overlay::{ArcCloseReason, ConnectionState};
use crate::signaling::SignalingError;
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
    /// The reader of this stream fell behind: `missed` events were dropped
    /// here, because the stream was full (see [`Config::event_capacity`]).
    /// The node never waits for its application.
    Lagged {
        /// Events dropped.
        missed: u64,
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

impl From<ArcError> for ConnectError {
    fn from(e: ArcError) -> Self {
        match e {
            ArcError::NotConnected(p) => Self::NotConnected(p),
            ArcError::Shutdown => Self::Shutdown,
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

/// Why a query or command to an overlay failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OverlayError {
    /// The node runs no overlay with this id.
    #[error("the node runs no overlay {0}")]
    UnknownOverlay(ProtocolId),
    /// The overlay with this id is not of the type asked for.
    #[error("overlay {overlay} is not a {expected}")]
    WrongType {
        /// The overlay.
        overlay: ProtocolId,
        /// The type asked for.
        expected: &'static str,
    },
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
    /// The connection's data queue is full ([`Config::data_queue`]); only
    /// from [`NodeHandle::try_send`].
    #[error("data queue full")]
    Full,
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
    /// Requests from remotes refused by a budget or by an overlay's
    /// admission check (relayed signals over a relay budget, arcs and
    /// handshakes not consented to, replayed signals), since start.
    pub refusals: u64,
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
