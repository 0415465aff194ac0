//! The bridge protocol: neighbours relay signaling, so that a signaling server
//! is needed only to join.
//!
//! B is connected to A and to C. To make A open an arc to C:
//!
//! 1. B → A [`Message::ConnectTo`] `{ job, to: C }` (or first A → B
//!    [`Message::BridgeRequest`], when A asks on its own).
//! 2. A's transport produces signals; each goes A → B → C as [`Message::Relay`].
//! 3. C's transport answers; its signals go C → B → A the same way.
//! 4. A reports [`Message::BridgeResult`] to B.
//!
//! If A and C are already connected, step 2 is skipped and A only opens the arc.
//! B relays only between its current neighbours and only for jobs it started;
//! every side (A, B, C) has a timeout and forgets the job after it; every
//! failure reaches the requester with a [`Failure`] reason; jobs in flight per
//! neighbour are bounded. Signals are opaque here: their authors sign them and
//! their recipients verify them (in the node runtime), so a relay that alters a
//! signal causes a rejection ([`Bridge::signal_rejected`]), not a connection.
//!
//! [`Bridge`] is a sans-IO state machine, generic over the peer id `P` and the
//! signal type `S`: it never touches a socket or a clock. Feed it inputs with
//! `now`, then drain [`Bridge::poll_output`]; call [`Bridge::handle_timeout`]
//! at [`Bridge::poll_timeout`]. The node core ([`crate::node::core`]) drives
//! it, and carries its [`Message`]s inside the wire protocol
//! ([`crate::wire::Message::Bridge`]).
//!
//! # Example
//!
//! ```
//! use n2n_core::bridge::{Bridge, Config, Message, Output};
//! use n2n_core::time::Instant;
//! use n2n_core::ProtocolId;
//!
//! let now = Instant::now();
//! let overlay = ProtocolId::from_name("my-overlay");
//! // Peers are plain integers here; signals are strings.
//! let mut b: Bridge<u32, String> = Bridge::new(2, Config::default(), [overlay], 7);
//! b.neighbour_up(1);
//! b.neighbour_up(3);
//! b.bridge(now, overlay, 1, 3, Some(42));
//! let Some(Output::Send { to: 1, message: Message::ConnectTo { job, to: 3, .. } }) = b.poll_output() else {
//!     panic!("B asks A to connect to C");
//! };
//! // A's offer travels through B to C.
//! b.handle_message(now, 1, Message::Relay { job, from: 1, to: 3, signal: "offer".into() });
//! assert!(matches!(b.poll_output(), Some(Output::Send { to: 3, message: Message::Relay { .. } })));
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::wire::ProtocolId;

mod machine;

pub use machine::{Bridge, RelaySize};

/// Settings of the bridge protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// How long a job may take, on every side (B, A and C).
    #[serde(with = "millis")]
    pub timeout: Duration,
    /// Jobs in flight per neighbour, on every side.
    pub max_jobs_per_neighbour: usize,
    /// Largest signal relayed or delivered, in bytes as [`RelaySize`] counts
    /// them (default 65,664: a 64 KiB payload and its header). Checked
    /// before any signature, so a relay never forwards what its recipient
    /// would refuse anyway.
    pub max_signal_bytes: usize,
    /// Signals one job may carry, both directions together, at the relay and
    /// at each endpoint (default 64: an offer, an answer and trickled ICE
    /// candidates).
    pub max_signals_per_job: u32,
    /// Signal bytes one job may carry, both directions together (default
    /// 256 KiB).
    pub max_bytes_per_job: usize,
    /// Signals a neighbour may have relayed per second, over all its jobs
    /// (default 32), in a token bucket of [`Config::relay_burst`].
    pub relay_rate: u32,
    /// Size of the per-neighbour token bucket, in signals (default 128).
    pub relay_burst: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(15),
            max_jobs_per_neighbour: 16,
            max_signal_bytes: crate::signal::MAX_SIGNAL_PAYLOAD + 128,
            max_signals_per_job: 64,
            max_bytes_per_job: 256 * 1024,
            relay_rate: 32,
            relay_burst: 128,
        }
    }
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// Why a bridge (or one of its steps) failed, as told between peers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum Failure<P> {
    /// The target is not a neighbour of the relay.
    #[error("{0:?} is not a neighbour of the relay")]
    NotNeighbour(P),
    /// A peer taking part left or its connection dropped mid-handshake.
    #[error("{0:?} went away during the bridge")]
    PeerGone(P),
    /// The job did not finish in time.
    #[error("bridge timed out")]
    Timeout,
    /// A relayed signal failed verification at its recipient.
    #[error("a relayed signal was rejected: {0}")]
    SignalRejected(String),
    /// The maximum number of jobs in flight with this neighbour is reached.
    #[error("too many bridge jobs in flight")]
    TooManyJobs,
    /// The transport handshake failed.
    #[error("transport handshake failed: {0}")]
    Transport(String),
    /// A peer cannot be bridged to itself.
    #[error("a peer cannot be bridged to itself")]
    SelfBridge,
    /// The relay has no such job (finished, timed out, or never existed).
    #[error("unknown bridge job")]
    UnknownJob,
    /// The peer does not run this overlay.
    #[error("unknown overlay")]
    UnknownOverlay,
    /// The node is shutting down.
    #[error("node shutting down")]
    ShuttingDown,
    /// The job's signals went over a relay budget (too large, too many, too
    /// many bytes, or too fast): the job fails, the neighbours stay.
    #[error("relay budget exceeded: {0}")]
    RelayLimit(String),
    /// The endpoint's overlay did not consent to this arc.
    #[error("arc refused by the overlay")]
    Refused,
}

/// Bridge protocol messages between neighbours.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Message<P, S> {
    /// B → A: "open an arc in `overlay` to my neighbour `to`, through me".
    ConnectTo {
        /// Job id chosen by B; every later message of the job repeats it.
        job: u64,
        /// Overlay of the arc to open.
        overlay: ProtocolId,
        /// The peer to connect to.
        to: P,
        /// If A asked for this bridge, the id of A's request.
        request: Option<u64>,
    },
    /// A → B: "please make me open an arc to your neighbour `to`".
    BridgeRequest {
        /// Id chosen by A, repeated in the `ConnectTo` or `BridgeRefused` answer.
        request: u64,
        /// Overlay of the arc to open.
        overlay: ProtocolId,
        /// The peer A wants to reach.
        to: P,
    },
    /// B → A: the request cannot be served.
    BridgeRefused {
        /// A's request id.
        request: u64,
        /// Why.
        reason: Failure<P>,
    },
    /// A signal relayed through a common neighbour (A → B → C and back).
    Relay {
        /// The bridge job.
        job: u64,
        /// The signal's author.
        from: P,
        /// The signal's recipient.
        to: P,
        /// The signal, opaque to the relay.
        signal: S,
    },
    /// B → A or C, or an endpoint → B: the job failed.
    RelayFailed {
        /// The bridge job.
        job: u64,
        /// Why.
        reason: Failure<P>,
    },
    /// A → B: outcome of a `ConnectTo`.
    BridgeResult {
        /// The bridge job.
        job: u64,
        /// `Ok` when A's arc to the target is open.
        result: Result<(), Failure<P>>,
    },
}

/// What the bridge asks of the node runtime.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output<P, S> {
    /// Send a message to a neighbour.
    Send {
        /// The neighbour.
        to: P,
        /// The message.
        message: Message<P, S>,
    },
    /// We are A: open an arc in `overlay` to `to`, through a handshake whose
    /// signals go through neighbour `via` as job `job` (or directly, if already
    /// connected to `to`). Report with [`Bridge::handshake_done`].
    Connect {
        /// The relay.
        via: P,
        /// The job.
        job: u64,
        /// Overlay of the arc.
        overlay: ProtocolId,
        /// The target.
        to: P,
    },
    /// We are the recipient: verify `signal` (from `from`) and hand it to the
    /// handshake of job `job` through `via` (starting an accepting one if it is the
    /// first). If it fails verification, call [`Bridge::signal_rejected`].
    Deliver {
        /// The relay.
        via: P,
        /// The job.
        job: u64,
        /// The author.
        from: P,
        /// The signal.
        signal: S,
    },
    /// Abandon the handshake of job `job` through `via`.
    Abort {
        /// The relay.
        via: P,
        /// The job.
        job: u64,
        /// Why.
        reason: Failure<P>,
    },
    /// We are B: a bridge finished.
    BridgeDone {
        /// The job.
        job: u64,
        /// Overlay of the arc.
        overlay: ProtocolId,
        /// The peer that was to open the arc.
        from: P,
        /// The arc's target.
        to: P,
        /// The caller's token given to [`Bridge::bridge`] (`None` when the bridge was
        /// requested by `from`).
        token: Option<u64>,
        /// Outcome.
        result: Result<(), Failure<P>>,
    },
    /// We are A: a request made with [`Bridge::request`] finished.
    RequestDone {
        /// The caller's token.
        token: u64,
        /// Overlay of the arc.
        overlay: ProtocolId,
        /// The target.
        to: P,
        /// Outcome.
        result: Result<(), Failure<P>>,
    },
}

/// Counters of a bridge, for inspection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Signals relayed for neighbours (as B).
    pub relayed_signals: u64,
    /// Bridges relayed to completion (as B).
    pub bridges_ok: u64,
    /// Bridges relayed that failed (as B).
    pub bridges_failed: u64,
    /// Messages from neighbours that broke the protocol.
    pub violations: u64,
    /// Relayed or delivered signals refused by a relay budget.
    pub relay_refusals: u64,
}
