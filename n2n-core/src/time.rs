//! The one time type of every sans-IO signature in n2n.
//!
//! [`Instant`] is `web-time`'s: on native targets it *is*
//! `std::time::Instant`, and on `wasm32-unknown-unknown` (where std's panics)
//! it reads `performance.now()`. State machines never call [`Instant::now`]
//! themselves: drivers read the clock and pass `now` in.

pub use std::time::Duration;
pub use web_time::Instant;
