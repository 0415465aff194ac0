//! `n2n-overlay-ring`: a second overlay written on `n2n-core`'s public API
//! only, layered on Spray — the proof that stacks compose.
//!
//! - [`ring::State`], a T-Man-style ring: it takes candidates from Spray's
//!   samples (`Output::Sample`), gossips with its ring neighbours, and reaches
//!   the peers it hears of through the neighbour that told it
//!   (`Output::Connect`). Every peer ends with one arc to its successor and
//!   one to its predecessor on the ring of peer ids.
//! - [`flood`], a flooding broadcast application over the node's neighbours
//!   (Spray's and the ring's), with deduplication.
//!
//! Linking this crate registers the overlay plugin `ring` (settings in
//! `plugin.rs`: `protocol`, `sampler`, `delta_ms`, `sample`, `gossip`,
//! `known`; unknown keys are refused), so a stack file can name it after
//! `spray`.
//!
//! `cargo run --release -p n2n-overlay-ring --example ring` runs both on 20
//! nodes; `n2n-sim --runtime node --stack ring` simulates them at 10k peers.
//!
//! ```
//! use n2n_core::overlay::{Input, Output, Overlay};
//! use n2n_overlay_ring::ring;
//!
//! let me = n2n_core::PeerId::from_bytes([7; 32]);
//! let contact = n2n_core::PeerId::from_bytes([9; 32]);
//! let mut peer = ring::State::new(me, ring::Config::default());
//! peer.handle(std::time::Instant::now(), Input::Connected { peer: contact });
//! peer.handle(std::time::Instant::now(), Input::Join { contact });
//! let outputs: Vec<_> = std::iter::from_fn(|| peer.poll_output()).collect();
//! assert!(outputs.contains(&Output::OpenArc { to: contact }));
//! ```

pub mod flood;
mod plugin;
pub mod ring;
