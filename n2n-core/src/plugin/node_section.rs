//! The `[node]` section of a stack file: every [`crate::node::Config`] key.

use serde::{Deserialize, Serialize};

/// The `[node]` section of a stack file. Durations are in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSection {
    /// Path of the node's key file (created if missing). Absent: a key from `seed`.
    pub key_file: Option<String>,
    /// Seed of the node's RNG (and of its key when no key file is given).
    pub seed: Option<u64>,
    /// How long a handshake may take.
    pub handshake_timeout_ms: u64,
    /// How long a connection with no arcs stays open for reuse.
    pub linger_ms: u64,
    /// Silence after which a connection is probed with a ping.
    pub keepalive_ms: u64,
    /// Silence after which a connection is declared lost.
    pub idle_timeout_ms: u64,
    /// How long a bridge job may take on every side.
    pub bridge_timeout_ms: u64,
    /// Bridge jobs in flight per neighbour.
    pub max_jobs_per_neighbour: usize,
    /// Handshakes this node dials in flight at most.
    pub max_handshakes: usize,
    /// Handshakes remotes started (their offers) in flight at most.
    pub max_inbound_handshakes: usize,
    /// The network this node's signals are signed for and the only one it
    /// accepts (set it to the room or stack name).
    pub network: String,
    /// How long a signal this node signs stays valid, in milliseconds.
    pub signal_lifetime_ms: u64,
    /// Offers remembered to refuse their replays.
    pub replay_cache: usize,
    /// Connected peers at most.
    pub max_peers: usize,
    /// Events waiting per event stream at most (then dropped and reported).
    pub event_capacity: usize,
    /// Bytes of events waiting per event stream at most.
    pub event_bytes: usize,
    /// Control messages waiting per connection at most.
    pub control_queue: usize,
    /// Application messages waiting per connection at most.
    pub data_queue: usize,
    /// Arcs in one direction to one peer in one overlay at most.
    pub max_arcs_per_peer: u32,
}

impl NodeSection {
    /// The node settings this section describes.
    pub fn config(&self) -> crate::node::Config {
        let ms = std::time::Duration::from_millis;
        crate::node::Config {
            handshake_timeout: ms(self.handshake_timeout_ms),
            linger: ms(self.linger_ms),
            keepalive: ms(self.keepalive_ms),
            idle_timeout: ms(self.idle_timeout_ms),
            bridge_timeout: ms(self.bridge_timeout_ms),
            max_jobs_per_neighbour: self.max_jobs_per_neighbour,
            max_handshakes: self.max_handshakes,
            max_inbound_handshakes: self.max_inbound_handshakes,
            network: self.network.clone(),
            signal_lifetime: ms(self.signal_lifetime_ms),
            replay_cache: self.replay_cache,
            max_peers: self.max_peers,
            event_capacity: self.event_capacity,
            event_bytes: self.event_bytes,
            control_queue: self.control_queue,
            data_queue: self.data_queue,
            max_arcs_per_peer: self.max_arcs_per_peer,
            seed: self.seed,
            ..crate::node::Config::default()
        }
    }
}

impl Default for NodeSection {
    fn default() -> Self {
        let c = crate::node::Config::default();
        Self {
            key_file: None,
            seed: None,
            handshake_timeout_ms: c.handshake_timeout.as_millis() as u64,
            linger_ms: c.linger.as_millis() as u64,
            keepalive_ms: c.keepalive.as_millis() as u64,
            idle_timeout_ms: c.idle_timeout.as_millis() as u64,
            bridge_timeout_ms: c.bridge_timeout.as_millis() as u64,
            max_jobs_per_neighbour: c.max_jobs_per_neighbour,
            max_handshakes: c.max_handshakes,
            max_inbound_handshakes: c.max_inbound_handshakes,
            network: c.network.clone(),
            signal_lifetime_ms: c.signal_lifetime.as_millis() as u64,
            replay_cache: c.replay_cache,
            max_peers: c.max_peers,
            event_capacity: c.event_capacity,
            event_bytes: c.event_bytes,
            control_queue: c.control_queue,
            data_queue: c.data_queue,
            max_arcs_per_peer: c.max_arcs_per_peer,
        }
    }
}
