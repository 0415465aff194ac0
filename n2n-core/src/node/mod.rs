//! The node runtime: one peer's connections, arcs, bridge jobs and overlays.

use std::time::Duration;

/// Settings of a node. Every wait is bounded by one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// How long a transport handshake may take before it fails with a timeout.
    pub handshake_timeout: Duration,
    /// How long a connection with no arcs stays open, so a quick re-add reuses it.
    pub linger: Duration,
    /// Silence on a connection after which it is probed with a ping.
    pub keepalive: Duration,
    /// Silence after which a connection is declared lost (remote vanished).
    pub idle_timeout: Duration,
    /// How long a bridge job may take, on every side.
    pub bridge_timeout: Duration,
    /// Bridge jobs (and relayed handshakes) in flight per neighbour.
    pub max_jobs_per_neighbour: usize,
    /// Handshakes in flight in total.
    pub max_handshakes: usize,
    /// Connected peers at most.
    pub max_peers: usize,
    /// Events waiting for the application at most (the node waits when full).
    pub event_capacity: usize,
    /// Control messages waiting per connection at most (a peer that lets more pile
    /// up is too slow and is disconnected).
    pub control_queue: usize,
    /// Application messages waiting per connection at most (senders wait when full).
    pub data_queue: usize,
    /// Arcs in one direction to one peer in one overlay at most.
    pub max_arcs_per_peer: u32,
    /// Seed of the node's RNG (job ids, session ids). `None`: from the OS.
    pub seed: Option<u64>,
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
            max_peers: 1024,
            event_capacity: 4096,
            control_queue: 4096,
            data_queue: 64,
            max_arcs_per_peer: 4096,
            seed: None,
        }
    }
}
