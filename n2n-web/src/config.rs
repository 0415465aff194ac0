//! Settings of a browser node, read from the options object of the JS API.

use std::time::Duration;

use serde::Deserialize;

/// Settings of a browser node (the JS `options` object; every field optional,
/// durations in milliseconds). The WebRTC ones mean what they mean for the
/// native transport (`n2n_transport_webrtc::Config`), with the same defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct WebConfig {
    /// STUN/TURN URLs (`stun:host:port`), as in the native `ice_servers`.
    pub(crate) ice_servers: Vec<String>,
    /// TURN user name.
    pub(crate) ice_username: String,
    /// TURN credential.
    pub(crate) ice_credential: String,
    /// Keep only loopback candidates (`127.0.0.1`, `::1`), in both directions,
    /// as the native transport's default does.
    pub(crate) loopback_only: bool,
    /// Bound on one WebRTC handshake.
    pub(crate) handshake_timeout_ms: u64,
    /// How long local candidates are gathered into the offer or answer.
    pub(crate) gather_wait_ms: u64,
    /// Bytes per data channel chunk.
    pub(crate) chunk_size: usize,
    /// Largest message accepted from a remote.
    pub(crate) max_message: usize,
    /// Sends of application data wait while more than this is buffered.
    pub(crate) max_buffered: usize,
    /// How long a send may wait for the buffer to drain.
    pub(crate) send_timeout_ms: u64,
    /// Spray's shuffle period.
    pub(crate) delta_ms: u64,
    /// Application protocols this node sends and receives on.
    pub(crate) protocols: Vec<String>,
    /// Seed of the core's random choices (default: from the browser's RNG).
    pub(crate) seed: Option<u64>,
    /// Time to connect, authenticate and join the signaling server.
    pub(crate) connect_timeout_ms: u64,
    /// Whether to reconnect to the signaling server after it drops.
    pub(crate) reconnect: bool,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            ice_servers: Vec::new(),
            ice_username: String::new(),
            ice_credential: String::new(),
            loopback_only: true,
            handshake_timeout_ms: 10_000,
            gather_wait_ms: 200,
            chunk_size: 16 * 1024,
            max_message: n2n_core::wire::MAX_FRAME,
            max_buffered: 1024 * 1024,
            send_timeout_ms: 10_000,
            delta_ms: 1000,
            protocols: Vec::new(),
            seed: None,
            connect_timeout_ms: 5000,
            reconnect: true,
        }
    }
}

impl WebConfig {
    /// Checks that the settings hang together.
    pub(crate) fn validate(&self) -> Result<(), String> {
        use n2n_transport_webrtc::frame::{MAX_CHUNK, MIN_CHUNK};
        if !(MIN_CHUNK..=MAX_CHUNK).contains(&self.chunk_size) {
            return Err(format!(
                "chunk_size must be within {MIN_CHUNK}..={MAX_CHUNK}, not {}",
                self.chunk_size
            ));
        }
        if self.max_message == 0 || self.max_message > n2n_core::wire::MAX_FRAME {
            return Err(format!(
                "max_message must be within 1..={}",
                n2n_core::wire::MAX_FRAME
            ));
        }
        if self.handshake_timeout_ms == 0 || self.delta_ms == 0 {
            return Err("handshake_timeout_ms and delta_ms must be positive".into());
        }
        Ok(())
    }

    pub(crate) fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    pub(crate) fn gather_wait(&self) -> Duration {
        Duration::from_millis(self.gather_wait_ms)
    }

    pub(crate) fn send_timeout(&self) -> Duration {
        Duration::from_millis(self.send_timeout_ms)
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

/// Whether an ICE candidate line (`candidate:… <address> <port> typ …`) is on
/// a loopback address.
pub(crate) fn is_loopback_candidate(candidate: &str) -> bool {
    let address = candidate
        .trim_start_matches("a=")
        .split_ascii_whitespace()
        .nth(4)
        .unwrap_or("");
    address == "::1"
        || address
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|a| a.is_loopback())
}

/// `sdp` without the candidate lines that are not on loopback.
pub(crate) fn loopback_sdp(sdp: &str) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        let l = line.trim_end();
        if l.starts_with("a=candidate:") && !is_loopback_candidate(l) {
            continue;
        }
        out.push_str(line);
    }
    out
}
