//! `n2n-overlay-spray`: the Spray adaptive random peer sampling overlay.
//!
//! Spray (Nédelec, Tanke, Frey, Molli, Mostéfaoui, "An adaptive peer-sampling
//! protocol for building networks of browsers", World Wide Web journal, 2017)
//! keeps, on every peer, a partial view whose size converges to about ln N
//! without any peer knowing N. Arcs move only between neighbours (by bridging),
//! so a newcomer needs a signaling server once, to reach its contact.
//!
//! The protocol is a sans-IO state machine, [`spray::State`], implementing
//! [`n2n_core::overlay::Overlay`]: the node runtime of `n2n-core` runs it over
//! any transport, and `n2n-sim` runs the very same code at 100k peers.
//!
//! ```
//! use n2n_core::overlay::{Input, Output, Overlay};
//! use n2n_overlay_spray::spray;
//! use rand::SeedableRng;
//!
//! let now = std::time::Instant::now();
//! let mut peer = spray::State::new(2u32, spray::Config::default(), rand_chacha::ChaCha8Rng::seed_from_u64(7));
//! peer.handle(now, Input::Join { contact: 1 });
//! assert_eq!(peer.poll_output(), Some(Output::OpenArc { to: 1 }));
//! ```
//!
//! Linking this crate registers the overlay plugin `spray` (settings:
//! [`spray::Config`]); a binary that names it only in a stack file must reference
//! the crate, e.g. `use n2n_overlay_spray as _;`.

mod plugin;
pub mod spray;
