//! # n2n-core
//!
//! The core of n2n, a toolkit for building overlay networks on WebRTC (and other
//! transports) where, after joining through a signaling server once, peers
//! connect to each other through their neighbours.
//!
//! A tour of the crate:
//! - [`identity`]: a node's ed25519 [`Keypair`] and the [`PeerId`] derived from it.
//! - [`arc`]: the arc model, [`Inview`] and [`Outview`] multisets.
//! - [`wire`]: the [`Message`] peers exchange over a connection, and its codec.
//! - [`signal`]: signed signals, verified end to end by their recipient.
//! - [`bridge`]: the neighbour relay protocol, as a sans-IO state machine.
//! - [`time`]: the one time type of every sans-IO signature (works on wasm32).
//! - [`transport`], [`signaling`], [`overlay`]: the three traits a stack is made of.
//! - [`node`]: the node that owns one peer's connections and arcs, relays
//!   signals for its neighbours (the bridge), and drives overlays: the sans-IO
//!   [`node::core::NodeCore`] and its tokio driver ([`node::Builder`]).
//! - [`harness`]: a deterministic network of node cores (virtual clock,
//!   simulated links and transport) for exact tests and simulations.
//! - [`memory`]: an in-memory transport and signaling for fast tests.
//! - [`plugin`]: the registry of plugins by name and the TOML stack file.

pub mod arc;
pub mod bridge;
pub mod harness;
pub mod identity;
#[cfg(feature = "tokio")]
pub mod memory;
pub mod node;
pub mod overlay;
pub mod plugin;
pub mod signal;
pub mod signaling;
pub mod time;
pub mod transport;
pub mod wire;

pub use arc::{ArcSet, Direction, Inview, Outview};
pub use identity::{Keypair, PeerId};
pub use overlay::{DynOverlay, Overlay};
pub use signal::{Signal, SignedSignal};
pub use signaling::Signaling;
pub use transport::{Connection, Transport};
pub use wire::{Message, ProtocolId};
