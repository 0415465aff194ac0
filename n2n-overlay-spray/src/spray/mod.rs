//! Spray: an adaptive random peer sampling protocol (Nédelec, Tanke, Frey,
//! Molli, Mostéfaoui, World Wide Web journal, 2017).
//!
//! Each peer keeps a partial view (its outview, a multiset of arcs with ages)
//! whose size converges to ln N + O(1) in a network of N peers, without any
//! peer knowing N. Joins inject about `ln N + 1` arcs, periodic shuffles move
//! arcs by bridging without changing their total, and crashes remove about as
//! many arcs as joins added. See [`State`] for the rules as implemented.
//!
//! [`State`] is a sans-IO [`n2n_core::overlay::Overlay`]: the node runtime runs
//! it over any transport, and `n2n-sim` runs the same code at scale.
//!
//! # Example
//!
//! A newcomer joins through its contact:
//!
//! ```
//! use std::time::Instant;
//! use n2n_core::overlay::{Input, Output, Overlay};
//! use n2n_overlay_spray::spray;
//! use rand::SeedableRng;
//!
//! let now = Instant::now();
//! let rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
//! let mut newcomer = spray::State::new(2u32, spray::Config::default(), rng);
//! newcomer.handle(now, Input::Join { contact: 1 });
//! assert_eq!(newcomer.poll_output(), Some(Output::OpenArc { to: 1 }));
//! assert_eq!(
//!     newcomer.poll_output(),
//!     Some(Output::Send { to: 1, payload: spray::Message::<u32>::Join.encode() })
//! );
//! ```

mod config;
mod message;
mod state;
mod view;

pub use config::{AgeRule, Config, ConfigError};
pub use message::{DecodeError, MAX_MEAN_VIEW, MAX_MESSAGE, MAX_SAMPLE, Message};
pub use state::{MAX_JOINED, PROTOCOL, State, Timer, UNANNOUNCED_PER_ROUND};
