//! The server's settings: every limit and budget, its default, and the checks
//! that refuse settings which cannot work.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Smallest [`Config::max_frame`] allowed: the largest signal n2n-core accepts
/// ([`n2n_core::signal::MAX_SIGNAL_PAYLOAD`], 64 KiB) as a JSON frame, where
/// hex doubles the payload, plus room for the other fields (a 64-byte
/// transport name escaped six times over included).
pub const MIN_MAX_FRAME: usize = 2 * n2n_core::signal::MAX_SIGNAL_PAYLOAD + 4 * 1024;

/// Longest timeout accepted: a day (longer ones would overflow deadlines).
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Settings of a server. In a TOML file they form the `[server]` section;
/// durations are in milliseconds there.
///
/// A *source* is the client's IP address: an IPv4 address, or the /64 prefix
/// of an IPv6 address (one host usually holds a whole /64).
///
/// Memory: a connection holds at most about `2 × max_frame` of read buffers
/// (a fragmented message and the frame being read), a write buffer of
/// `max_frame` + 1 KiB and, once joined, a queue of `client_queue_bytes`; the
/// queues together hold at most `max_queued_bytes`. The worst case is about
/// `(max_pending + max_clients) × 3 × max_frame + max_queued_bytes`: size
/// `max_clients` to the machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Address of the Prometheus metrics endpoint (`GET /metrics`), if any.
    pub metrics: Option<SocketAddr>,
    /// Largest WebSocket message (and frame) accepted, in bytes; at least
    /// [`MIN_MAX_FRAME`] (default 160 KiB).
    pub max_frame: usize,
    /// Signals per second a client may send (sustained; default 100).
    pub signals_per_second: u32,
    /// Signals a client may send in a burst (default 200).
    pub signal_burst: u32,
    /// Clients in one room at most (default 10,000).
    pub max_room_clients: usize,
    /// Joined clients at most (default 10,000).
    pub max_clients: usize,
    /// Rooms at most (default 1,000).
    pub max_rooms: usize,
    /// Connections not yet joined (upgrading or before their hello) at most,
    /// a pool apart from `max_clients` (default 1,024).
    pub max_pending: usize,
    /// Connections not yet joined from one source at most (default 32).
    pub max_pending_per_source: usize,
    /// Connections from one source at most, joined or not (default 256).
    pub max_connections_per_source: usize,
    /// Joins per second one source may make (sustained; default 2).
    pub joins_per_second_per_source: u32,
    /// Joins one source may make in a burst (default 16).
    pub join_burst_per_source: u32,
    /// Joins per second into one room (sustained; default 32).
    pub joins_per_second_per_room: u32,
    /// Joins into one room in a burst (default 128).
    pub join_burst_per_room: u32,
    /// A client that sends nothing (not even a WebSocket ping) for this long is
    /// disconnected (default 120 s).
    #[serde(rename = "idle_timeout_ms", with = "millis")]
    pub idle_timeout: Duration,
    /// Time from the TCP connection to the welcome: WebSocket upgrade and
    /// hello together (default 10 s). Both timeouts are at most a day.
    #[serde(rename = "handshake_timeout_ms", with = "millis")]
    pub handshake_timeout: Duration,
    /// Frames waiting to be written to one client at most (default 256).
    pub client_queue: usize,
    /// Bytes waiting to be written to one client at most; a client whose queue
    /// would exceed this (or `client_queue`) reads too slowly and is
    /// disconnected with `slow_reader` (default 512 KiB, at least `max_frame`).
    pub client_queue_bytes: usize,
    /// Bytes waiting in all clients' queues together at most; past it, signals
    /// are refused with `recipient_busy` (default 256 MiB).
    pub max_queued_bytes: usize,
    /// Refused frames tolerated from one client before it is disconnected
    /// (default 16). Refusals that are not the client's fault (`unknown_peer`,
    /// `recipient_busy`) do not count.
    pub max_errors: u32,
    /// Whether the per-source limits (pending and total connections, joins
    /// per source) and the per-room join rate apply to loopback sources too
    /// (default `false`: a reverse proxy on the same host, or local tests and
    /// benchmarks, would otherwise be limited as one client).
    pub limit_loopback: bool,
    /// Seed of the contact choice (`None`: from the OS). Challenge nonces
    /// always come from the OS, so they never repeat across restarts.
    pub seed: Option<u64>,
}

pub(super) mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(in crate::server) fn serialize<S: Serializer>(
        d: &Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(in crate::server) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7000)),
            metrics: None,
            max_frame: 160 * 1024,
            signals_per_second: 100,
            signal_burst: 200,
            max_room_clients: 10_000,
            max_clients: 10_000,
            max_rooms: 1_000,
            max_pending: 1_024,
            max_pending_per_source: 32,
            max_connections_per_source: 256,
            joins_per_second_per_source: 2,
            join_burst_per_source: 16,
            joins_per_second_per_room: 32,
            join_burst_per_room: 128,
            idle_timeout: Duration::from_secs(120),
            handshake_timeout: Duration::from_secs(10),
            client_queue: 256,
            client_queue_bytes: 512 * 1024,
            max_queued_bytes: 256 * 1024 * 1024,
            max_errors: 16,
            limit_loopback: false,
            seed: None,
        }
    }
}

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("server setting `{field}`: {message}")]
pub struct ConfigError {
    /// The setting, as named in the `[server]` section.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl Config {
    /// Checks that the settings can work together.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first setting that cannot work: a zero
    /// limit, a `max_frame` below [`MIN_MAX_FRAME`], a client queue that cannot
    /// hold one frame, a timeout of zero or over a day.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field, message: String| Err(ConfigError { field, message });
        if self.max_frame < MIN_MAX_FRAME {
            return err(
                "max_frame",
                format!(
                    "{} bytes cannot carry the largest signal ({MIN_MAX_FRAME} bytes at least)",
                    self.max_frame
                ),
            );
        }
        if self.client_queue_bytes < self.max_frame {
            return err(
                "client_queue_bytes",
                format!("must hold one frame of max_frame = {}", self.max_frame),
            );
        }
        if self.max_queued_bytes < self.client_queue_bytes {
            return err(
                "max_queued_bytes",
                format!(
                    "must hold one client queue of client_queue_bytes = {}",
                    self.client_queue_bytes
                ),
            );
        }
        let positive: [(&'static str, u64); 13] = [
            ("signals_per_second", self.signals_per_second.into()),
            ("signal_burst", self.signal_burst.into()),
            ("max_room_clients", self.max_room_clients as u64),
            ("max_clients", self.max_clients as u64),
            ("max_rooms", self.max_rooms as u64),
            ("max_pending", self.max_pending as u64),
            ("max_pending_per_source", self.max_pending_per_source as u64),
            (
                "max_connections_per_source",
                self.max_connections_per_source as u64,
            ),
            (
                "joins_per_second_per_source",
                self.joins_per_second_per_source.into(),
            ),
            ("join_burst_per_source", self.join_burst_per_source.into()),
            (
                "joins_per_second_per_room",
                self.joins_per_second_per_room.into(),
            ),
            ("join_burst_per_room", self.join_burst_per_room.into()),
            ("client_queue", self.client_queue as u64),
        ];
        if let Some((field, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return err(field, "must be greater than 0".into());
        }
        for (field, d) in [
            ("idle_timeout_ms", self.idle_timeout),
            ("handshake_timeout_ms", self.handshake_timeout),
        ] {
            if d.is_zero() || d > MAX_TIMEOUT {
                return err(
                    field,
                    format!("{} ms is outside 1 ms to one day", d.as_millis()),
                );
            }
        }
        if self.max_pending_per_source > self.max_connections_per_source {
            return err(
                "max_pending_per_source",
                "must not exceed max_connections_per_source".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_carry_the_largest_signal() {
        let c = Config::default();
        c.validate().unwrap();
        assert!(c.max_frame >= MIN_MAX_FRAME);
    }

    #[test]
    fn settings_that_cannot_work_are_named() {
        let bad = |c: Config| c.validate().unwrap_err().field;
        let d = Config::default;
        assert_eq!(
            bad(Config {
                max_frame: 4096,
                ..d()
            }),
            "max_frame"
        );
        assert_eq!(
            bad(Config {
                client_queue_bytes: 1024,
                ..d()
            }),
            "client_queue_bytes"
        );
        assert_eq!(
            bad(Config {
                join_burst_per_source: 0,
                ..d()
            }),
            "join_burst_per_source"
        );
        assert_eq!(
            bad(Config {
                idle_timeout: Duration::ZERO,
                ..d()
            }),
            "idle_timeout_ms"
        );
        assert_eq!(
            bad(Config {
                handshake_timeout: Duration::from_millis(u64::MAX),
                ..d()
            }),
            "handshake_timeout_ms"
        );
        assert_eq!(
            bad(Config {
                max_pending_per_source: 300,
                ..d()
            }),
            "max_pending_per_source"
        );
    }

    #[test]
    fn config_reads_from_toml() {
        let c: Config = toml::from_str(
            "listen = \"127.0.0.1:0\"\nidle_timeout_ms = 500\nmetrics = \"127.0.0.1:9100\"\n",
        )
        .unwrap();
        assert_eq!(c.idle_timeout, Duration::from_millis(500));
        assert_eq!(c.metrics, Some("127.0.0.1:9100".parse().unwrap()));
        assert!(toml::from_str::<Config>("bogus = 1").is_err());
    }
}
