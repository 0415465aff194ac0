//! The sans-IO [`Overlay`] trait that overlay protocols (such as Spray) implement.
//!
//! An overlay never touches a socket, a clock or a thread-local RNG. It is fed
//! [`Input`]s together with `now`, and emits [`Output`]s that the caller drains
//! with [`Overlay::poll_output`] after every input, until it returns `None`.
//! Timers are typed: the overlay asks for `SetTimer { at, timer }` and gets
//! `Input::Timer(timer)` back once `at` is reached. The node runtime
//! ([`crate::node`]) turns outputs into real I/O; `n2n-sim` into simulated I/O.
//!
//! The overlay is generic over the peer id `P`, so the simulator can run it
//! with small integer ids and the runtime with [`crate::PeerId`].
//!
//! # The contract
//!
//! ```
//! # use n2n_core::overlay::{Overlay, Input, Output};
//! # use n2n_core::time::Instant;
//! fn drive<P, O: Overlay<P>>(overlay: &mut O, now: Instant, input: Input<P, O::Timer>) {
//!     overlay.handle(now, input);
//!     while let Some(output) = overlay.poll_output() {
//!         match output {
//!             Output::Send { .. } => { /* send over the connection */ }
//!             Output::OpenArc { .. } | Output::CloseArc { .. } => { /* arc bookkeeping */ }
//!             Output::Bridge { .. } | Output::Connect { .. } => { /* bridge protocol */ }
//!             Output::Sample { .. } => { /* ask another overlay of the node */ }
//!             Output::SetTimer { .. } => { /* schedule */ }
//!             _ => {}
//!         }
//!     }
//! }
//! ```
//!
//! # Writing an overlay: the rules the node follows
//!
//! An overlay decides; the node keeps the books. The node tracks every arc
//! exactly (its inview, outview and connection state are in
//! [`crate::node::Snapshot`], `NodeHandle::view` and the
//! [`crate::node::Event::OverlayState`] events it computes itself), so an
//! overlay keeps only what its decisions need. What the node does:
//!
//! - **Joining.** `Input::Join { contact }` comes when the application joins
//!   this overlay through a neighbour (`NodeHandle::join`, after a signaling
//!   round trip, or `NodeHandle::join_via` on an existing connection). The
//!   first peer of a network never gets one: it has nobody to join.
//! - **Arcs.** Every arc of this overlay that opens or closes is reported
//!   once, as `Input::ArcOpened` / `Input::ArcClosed` — including the arcs
//!   the overlay opened or closed itself (`Output::OpenArc`, `CloseArc`,
//!   `Connect`, a `Bridge` it asked for), arcs opened by the application with
//!   this overlay's id, and incoming arcs the overlay never asked for (a
//!   remote's `OpenArc`). Count on these inputs, never on the outputs.
//! - **Reaching a peer.** `OpenArc` and `Send` need a connection: to a peer
//!   heard of but not connected, use `Output::Connect { via, to }` (a
//!   neighbour `via` that is connected to `to` relays the handshake; then
//!   one arc to `to` opens). A failure comes back as `Input::ConnectFailed`;
//!   a `Send` that could not go out as `Input::SendFailed`.
//! - **Bridges.** `Output::Bridge { from, to }` makes neighbour `from` open
//!   an arc to `to`. On failure the asker gets `Input::BridgeFailed`; on
//!   success nothing (the arc is `from`'s, this peer only relayed). The peer
//!   that opened the arc sees `Input::ArcOpened`, the target too.
//! - **Connections.** `Input::Connected` / `Input::Disconnected` report the
//!   node's transport connections (with or without arcs of this overlay).
//! - **Layering.** `Output::Sample { overlay, k, tag }` asks another overlay
//!   of the same node for up to `k` peers ([`Overlay::peers`]); the answer
//!   comes as `Input::Sampled` with the same `tag`, an error if the node runs
//!   no such overlay.
//! - **The application** reaches an overlay's own methods through
//!   `NodeHandle::query` and `NodeHandle::command`, and reads its peer
//!   sample with `NodeHandle::peers`.
//! - Messages (`Input::Message`) are untrusted bytes: decode without panic.

use crate::time::Instant;
use std::fmt;

use crate::arc::{Direction, Inview, Outview};
use crate::wire::ProtocolId;

/// Why an arc disappeared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArcCloseReason {
    /// Its owner closed it (for an incoming arc: the remote sent `ArcClose`).
    Closed,
    /// The connection to the peer was lost (peer crashed, network cut, timeout).
    PeerDown(String),
    /// The local node is shutting down.
    Shutdown,
    /// The remote's overlay refused the arc we opened to it
    /// ([`Admission::ArcOpen`]); it never counted in the remote's inview.
    Refused(String),
}

/// How well an overlay is connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    /// No arc in either direction.
    Disconnected,
    /// Arcs in one direction only.
    PartiallyConnected,
    /// Arcs both in and out.
    Connected,
}

impl ConnectionState {
    /// The state implied by the sizes of the two views.
    pub fn of(inview: usize, outview: usize) -> Self {
        match (inview > 0, outview > 0) {
            (true, true) => Self::Connected,
            (false, false) => Self::Disconnected,
            _ => Self::PartiallyConnected,
        }
    }
}

/// What the environment tells an overlay.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Input<P, T> {
    /// Command: join the overlay through `contact`, to which the node is connected
    /// (a transport connection exists, with no arc of this overlay yet).
    Join {
        /// The contact peer.
        contact: P,
    },
    /// Command: leave the overlay gracefully.
    Leave,
    /// One arc of this overlay opened (once per occurrence).
    ArcOpened {
        /// The remote peer.
        peer: P,
        /// Outgoing (in our outview) or incoming (in our inview).
        direction: Direction,
    },
    /// One arc of this overlay closed (once per occurrence).
    ArcClosed {
        /// The remote peer.
        peer: P,
        /// Direction of the closed arc.
        direction: Direction,
        /// Why it closed.
        reason: ArcCloseReason,
    },
    /// An arc this peer was asked to open (by a bridge or `OpenArc`) could not be opened.
    ConnectFailed {
        /// The peer we tried to reach.
        peer: P,
        /// Why.
        reason: String,
    },
    /// A bridge this peer asked for (`Output::Bridge`) failed.
    BridgeFailed {
        /// The neighbour that was to open the arc.
        from: P,
        /// The peer it was to reach.
        to: P,
        /// Why.
        reason: String,
    },
    /// A bridge this peer asked for (`Output::Bridge`) succeeded: `from`
    /// opened its arc to `to` (an overlay that gives arcs away closes its
    /// own once it knows they moved).
    BridgeDone {
        /// The neighbour that opened the arc.
        from: P,
        /// The arc's target.
        to: P,
    },
    /// A message of this overlay from a connected peer.
    Message {
        /// The sender.
        from: P,
        /// The overlay's bytes (untrusted: decode with care).
        payload: Vec<u8>,
    },
    /// A timer set with `Output::SetTimer` fired.
    Timer(T),
    /// A transport connection to `peer` is up (it carries no arc of this
    /// overlay yet).
    Connected {
        /// The neighbour.
        peer: P,
    },
    /// The connection to `peer` is gone (its arcs were reported closed first).
    Disconnected {
        /// The former neighbour.
        peer: P,
    },
    /// An `Output::Send` could not go out (no connection to `to`).
    SendFailed {
        /// The intended recipient.
        to: P,
        /// Why.
        reason: String,
    },
    /// The answer to `Output::Sample`.
    Sampled {
        /// The overlay that was asked.
        overlay: ProtocolId,
        /// The tag of the request.
        tag: u64,
        /// Its peers, or why there are none (the node runs no such overlay).
        result: Result<Vec<P>, String>,
    },
}

/// What an overlay asks of the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output<P, T> {
    /// Send an overlay message to a connected peer.
    Send {
        /// The recipient.
        to: P,
        /// The overlay's bytes.
        payload: Vec<u8>,
    },
    /// Open one more arc to a peer we are already connected to (no handshake).
    OpenArc {
        /// The peer.
        to: P,
    },
    /// Close one arc to `to`.
    CloseArc {
        /// The peer.
        to: P,
    },
    /// Bridge: make neighbour `from` open an arc to `to` through us. `to` may be
    /// ourselves ("open an arc to me") or another neighbour (a relayed handshake
    /// if `from` and `to` are not yet connected).
    Bridge {
        /// The neighbour that opens the arc.
        from: P,
        /// The arc's target.
        to: P,
    },
    /// Wake the overlay with `Input::Timer(timer)` at `at`.
    SetTimer {
        /// When.
        at: Instant,
        /// Which timer.
        timer: T,
    },
    /// The overlay's connection state changed. Optional: the node computes
    /// the state from its own arc table and ignores this.
    StateChanged(ConnectionState),
    /// Reach `to`, a peer this one is not (or may not be) connected to,
    /// through neighbour `via`, and open one arc to it: `via` relays the
    /// handshake (the overlay-side `NodeHandle::request_bridge`). If already
    /// connected, only the arc opens. Success comes as `Input::ArcOpened`,
    /// failure as `Input::ConnectFailed`.
    Connect {
        /// The neighbour that relays.
        via: P,
        /// The peer to reach.
        to: P,
    },
    /// Ask overlay `overlay` of the same node for up to `k` peers
    /// ([`Overlay::peers`]); the answer comes as `Input::Sampled` with `tag`.
    Sample {
        /// The overlay to ask.
        overlay: ProtocolId,
        /// How many peers at most.
        k: usize,
        /// Repeated in the answer.
        tag: u64,
    },
}

/// What a remote asks an overlay to consent to (see [`Overlay::admit`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Admission<P> {
    /// Neighbour `relay` orders this peer to open an arc to `to` through it
    /// (a bridge's `ConnectTo`): a connection and a handshake if `to` is not
    /// a neighbour yet.
    ConnectTo {
        /// The neighbour giving the order (the bridge's relay).
        relay: P,
        /// The arc's target.
        to: P,
    },
    /// Neighbour `from` opened an arc `from → this peer` (its `ArcOpen`).
    /// A refusal removes the arc at both ends: `from`'s overlay gets
    /// `ArcClosed` with [`ArcCloseReason::Refused`].
    ArcOpen {
        /// The neighbour that opened the arc.
        from: P,
    },
}

/// An overlay's refusal of an [`Admission`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("refused by the overlay: {reason}")]
pub struct Denied {
    /// Why, for logs and counters.
    pub reason: String,
}

impl Denied {
    /// A refusal for `reason`.
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }
}

/// A sans-IO overlay protocol.
pub trait Overlay<P>: Send + 'static {
    /// The overlay's timers.
    type Timer: Clone + fmt::Debug + Send + 'static;

    /// The protocol id tagging this overlay's arcs and messages.
    fn protocol(&self) -> ProtocolId;

    /// Feeds one input. Drain [`Overlay::poll_output`] afterwards.
    fn handle(&mut self, now: Instant, input: Input<P, Self::Timer>);

    /// Next output, in the order produced; `None` when there is nothing to do.
    fn poll_output(&mut self) -> Option<Output<P, Self::Timer>>;

    /// Up to `k` distinct peers sampled from the overlay's view (peer
    /// sampling); what other overlays get with `Output::Sample`.
    fn peers(&mut self, k: usize) -> Vec<P>;

    /// The overlays of the same node this one asks for samples
    /// (`Output::Sample`): building a node without them is an error.
    fn layers_on(&self) -> Vec<ProtocolId> {
        Vec::new()
    }

    /// Whether the overlay consents to what a remote asks (as libp2p's
    /// `ConnectionDenied`): the node asks before it acts, and a refusal is
    /// answered to the remote as a failure and counted
    /// ([`crate::node::Snapshot::refusals`]). The default consents to
    /// everything; an overlay in an open network should not.
    ///
    /// # Errors
    /// [`Denied`] to refuse.
    fn admit(&mut self, now: Instant, request: &Admission<P>) -> Result<(), Denied> {
        let _ = (now, request);
        Ok(())
    }
}

/// An overlay that keeps its own copy of its arcs, for drivers without a
/// node's arc table (the simulator's engines). The node never asks.
pub trait Views<P> {
    /// The arcs entering this peer in this overlay.
    fn inview(&self) -> &Inview<P>;

    /// The arcs leaving this peer in this overlay (the partial view).
    fn outview(&self) -> &Outview<P>;
}

/// Opaque handle of a timer of a type-erased overlay (see [`DynOverlay`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimerToken(pub u64);

/// An [`Overlay`] over [`crate::PeerId`] with its timer type erased, so that the
/// node runtime can hold overlays chosen at run time (plugins).
pub trait DynOverlay: Send + fmt::Debug {
    /// See [`Overlay::protocol`].
    fn protocol(&self) -> ProtocolId;
    /// See [`Overlay::handle`].
    fn handle(&mut self, now: Instant, input: Input<crate::PeerId, TimerToken>);
    /// See [`Overlay::poll_output`].
    fn poll_output(&mut self) -> Option<Output<crate::PeerId, TimerToken>>;
    /// See [`Overlay::peers`].
    fn peers(&mut self, k: usize) -> Vec<crate::PeerId>;
    /// See [`Overlay::layers_on`].
    fn layers_on(&self) -> Vec<ProtocolId> {
        Vec::new()
    }
    /// The overlay itself, for the application's queries
    /// (`NodeHandle::query`): downcast it to its type.
    fn as_any(&self) -> &dyn std::any::Any;
    /// The overlay itself, mutably, for the application's commands
    /// (`NodeHandle::command`).
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any;
    /// See [`Overlay::admit`].
    ///
    /// # Errors
    /// [`Denied`] to refuse.
    fn admit(&mut self, now: Instant, request: &Admission<crate::PeerId>) -> Result<(), Denied> {
        let _ = (now, request);
        Ok(())
    }
}

/// Wraps an [`Overlay`] into a [`DynOverlay`], keeping its typed timers in a table.
pub struct Erased<O: Overlay<crate::PeerId>> {
    inner: O,
    timers: std::collections::BTreeMap<u64, O::Timer>,
    next_token: u64,
}

impl<O: Overlay<crate::PeerId>> Erased<O> {
    /// Wraps `overlay`.
    pub fn new(overlay: O) -> Self {
        Self {
            inner: overlay,
            timers: Default::default(),
            next_token: 0,
        }
    }

    /// The wrapped overlay.
    pub fn inner(&self) -> &O {
        &self.inner
    }

    /// The wrapped overlay, mutably.
    pub fn inner_mut(&mut self) -> &mut O {
        &mut self.inner
    }
}

impl<O: Overlay<crate::PeerId>> fmt::Debug for Erased<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Erased")
            .field("protocol", &self.inner.protocol())
            .field("pending_timers", &self.timers.len())
            .finish_non_exhaustive()
    }
}

impl<O: Overlay<crate::PeerId>> DynOverlay for Erased<O> {
    fn protocol(&self) -> ProtocolId {
        self.inner.protocol()
    }

    fn handle(&mut self, now: Instant, input: Input<crate::PeerId, TimerToken>) {
        let input = match input {
            Input::Timer(token) => match self.timers.remove(&token.0) {
                Some(timer) => Input::Timer(timer),
                // A token we never issued or already fired: nothing to do.
                None => return,
            },
            Input::Join { contact } => Input::Join { contact },
            Input::Leave => Input::Leave,
            Input::ArcOpened { peer, direction } => Input::ArcOpened { peer, direction },
            Input::ArcClosed {
                peer,
                direction,
                reason,
            } => Input::ArcClosed {
                peer,
                direction,
                reason,
            },
            Input::ConnectFailed { peer, reason } => Input::ConnectFailed { peer, reason },
            Input::BridgeFailed { from, to, reason } => Input::BridgeFailed { from, to, reason },
            Input::BridgeDone { from, to } => Input::BridgeDone { from, to },
            Input::Message { from, payload } => Input::Message { from, payload },
            Input::Connected { peer } => Input::Connected { peer },
            Input::Disconnected { peer } => Input::Disconnected { peer },
            Input::SendFailed { to, reason } => Input::SendFailed { to, reason },
            Input::Sampled {
                overlay,
                tag,
                result,
            } => Input::Sampled {
                overlay,
                tag,
                result,
            },
        };
        self.inner.handle(now, input);
    }

    fn poll_output(&mut self) -> Option<Output<crate::PeerId, TimerToken>> {
        Some(match self.inner.poll_output()? {
            Output::SetTimer { at, timer } => {
                let token = self.next_token;
                self.next_token += 1;
                self.timers.insert(token, timer);
                Output::SetTimer {
                    at,
                    timer: TimerToken(token),
                }
            }
            Output::Send { to, payload } => Output::Send { to, payload },
            Output::OpenArc { to } => Output::OpenArc { to },
            Output::CloseArc { to } => Output::CloseArc { to },
            Output::Bridge { from, to } => Output::Bridge { from, to },
            Output::StateChanged(s) => Output::StateChanged(s),
            Output::Connect { via, to } => Output::Connect { via, to },
            Output::Sample { overlay, k, tag } => Output::Sample { overlay, k, tag },
        })
    }

    fn peers(&mut self, k: usize) -> Vec<crate::PeerId> {
        self.inner.peers(k)
    }

    fn layers_on(&self) -> Vec<ProtocolId> {
        self.inner.layers_on()
    }

    fn as_any(&self) -> &dyn std::any::Any {
        &self.inner
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        &mut self.inner
    }

    fn admit(&mut self, now: Instant, request: &Admission<crate::PeerId>) -> Result<(), Denied> {
        self.inner.admit(now, request)
    }
}
