//! # n2n-sim
//!
//! A deterministic discrete-event simulator that runs N instances of any
//! sans-IO [`Overlay`](n2n_core::overlay::Overlay) over `u32` peer ids — the
//! very state machines the node runtime drives over WebRTC — and measures the
//! overlay they build.
//!
//! - [`Sim`]: the event loop (peers split into [`SHARDS`] shards, each with a
//!   calendar queue of events ordered by time, then by insertion, run in
//!   windows of the shortest hop on as many threads as the machine has),
//!   per-peer RNG seeds derived from one master seed, and the environment's
//!   semantics for every [`Output`](n2n_core::overlay::Output): messages,
//!   arcs opened and closed, bridges, timers, crashes.
//! - [`Rounds`]: the instant-exchange engine, round-based like PeerSim's
//!   cycle-driven engine: each round every peer takes its turn in an order
//!   drawn anew, and its exchange with all it causes is applied at once.
//! - [`Network`]: what both engines offer the measurements and scenarios.
//! - [`SimRng`]: a small portable RNG for the peers' state machines.
//! - [`stats`]: view-size and in-degree summaries, arc totals, duplicates,
//!   strongly and weakly connected components (iterative, fit for 1M peers).
//! - [`measure`]: distributions, clustering coefficient, average shortest
//!   path, components after removing a share of the peers.
//! - [`scenario`]: Spray scenarios (arrivals, churn, failures, loss) read
//!   from TOML and run cycle by cycle into CSV rows.
//! - [`plot`]: PNG and SVG plots of the results.
//! - [`node`]: the node runtime, one whole n2n node core per simulated peer
//!   (connections, handshakes, bridges, linger and limits all live).
//!
//! The same [`Config::seed`] and the same calls reproduce a run exactly,
//! whatever the number of threads.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use n2n_overlay_spray::spray;
//! use n2n_sim::{Config, Sim, SimRng};
//!
//! let mut sim = Sim::new(Config::default(), |id, seed| {
//!     spray::State::new(id, spray::Config::default(), SimRng::seed_from(seed))
//! });
//! let first = sim.add_peer();
//! for _ in 1..50 {
//!     let contact = sim.random_member().unwrap();
//!     let newcomer = sim.add_peer();
//!     sim.join(newcomer, contact);
//!     sim.run_for(Duration::from_millis(500));
//! }
//! sim.run_for(Duration::from_secs(600));
//! let snap = sim.snapshot();
//! assert_eq!(snap.peers, 50);
//! assert_eq!(snap.arcs_out, snap.arcs_in);
//! assert_eq!(snap.strong.count, 1);
//! # let _ = first;
//! ```

mod barrier;
pub mod measure;
mod network;
pub mod node;
pub mod node_stack;
pub mod plot;
mod prefetch;
mod queue;
mod rng;
mod rounds;
pub mod scenario;
mod sim;
pub mod stats;

pub use network::Network;
pub use rng::SimRng;
pub use rounds::Rounds;
pub use sim::{Config, Counters, Latency, PARALLEL_WINDOWS, SHARDS, Sim};
