//! Settings of a [`crate::WebRtcTransport`], in code or from the plugin's TOML table.

use std::time::Duration;

use n2n_core::plugin::{PluginError, Settings, setting};

use crate::PLUGIN_NAME;
use crate::frame::{MAX_CHUNK, MIN_CHUNK};

/// Settings of a [`crate::WebRtcTransport`].
///
/// # Examples
///
/// In a stack file (every key is optional):
///
/// ```toml
/// [transport]
/// name = "webrtc"
/// loopback_only = false
/// interfaces = ["eth0"]
/// ice_servers = ["stun:stun.example.org:3478"]
/// handshake_timeout_ms = 10000
/// gather_wait_ms = 100
/// lost_timeout_ms = 5000
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Gather host candidates on loopback (`127.0.0.1`) only, and nothing else.
    /// This is the default, so that tests and single-host deployments never touch
    /// another address; set it to `false` to reach other machines.
    pub loopback_only: bool,
    /// When not [`loopback_only`](Self::loopback_only): the network interfaces to
    /// gather host candidates on, by name. Empty: every interface.
    pub interfaces: Vec<String>,
    /// Also gather IPv6 candidates (default: IPv4 only).
    pub ipv6: bool,
    /// STUN and TURN server URLs (`stun:host:port`, `turn:host:port`), none by default.
    pub ice_servers: Vec<String>,
    /// User name for the TURN servers.
    pub ice_username: String,
    /// Credential for the TURN servers.
    pub ice_credential: String,
    /// Largest application message a connection carries, in bytes (default
    /// [`n2n_core::wire::DEFAULT_MAX_MESSAGE`], 1 MiB and headers). Larger
    /// messages are refused with
    /// [`ConnectionError::TooLarge`](n2n_core::transport::ConnectionError).
    /// A connection holds at most two of its messages partially received
    /// and 16 received ones, so this sets its receive memory.
    pub max_message: usize,
    /// Size of the pieces a message is cut into on the data channel, in bytes.
    pub chunk_size: usize,
    /// Bytes queued in the data channel above which [`send`](n2n_core::Connection::send) waits.
    pub max_buffered: usize,
    /// Bound on the whole handshake (signals, ICE, DTLS, SCTP, channel open).
    pub handshake_timeout: Duration,
    /// How long the offer and the answer wait for local candidates to be gathered,
    /// so that those found in time travel inside them (later ones are trickled).
    /// Host candidates take about a millisecond; STUN and TURN ones a round trip
    /// to their server.
    ///
    /// Candidates that come with the description reach the remote together with
    /// the ICE credentials. Trickled alone, they arrive after the remote's first
    /// connectivity checks, whose source the controlling side then records as a
    /// peer-reflexive candidate; the `webrtc` crate waits a full second before
    /// it nominates such a pair, so the set-up would take over a second.
    pub gather_wait: Duration,
    /// Silence after which ICE declares the remote gone and the connection lost.
    pub lost_timeout: Duration,
    /// How often ICE sends keep-alives on an idle connection.
    pub keepalive_interval: Duration,
    /// How long a [`send`](n2n_core::Connection::send) may wait without the remote
    /// acknowledging anything before the connection is declared lost.
    pub send_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            loopback_only: true,
            interfaces: Vec::new(),
            ipv6: false,
            ice_servers: Vec::new(),
            ice_username: String::new(),
            ice_credential: String::new(),
            max_message: n2n_core::wire::DEFAULT_MAX_MESSAGE,
            chunk_size: 16 * 1024,
            max_buffered: 1024 * 1024,
            handshake_timeout: Duration::from_secs(10),
            gather_wait: Duration::from_millis(100),
            lost_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(1),
            send_timeout: Duration::from_secs(30),
        }
    }
}

/// Settings keys the plugin understands.
const KEYS: &[&str] = &[
    "loopback_only",
    "interfaces",
    "ipv6",
    "ice_servers",
    "ice_username",
    "ice_credential",
    "max_message",
    "chunk_size",
    "max_buffered",
    "handshake_timeout_ms",
    "gather_wait_ms",
    "lost_timeout_ms",
    "keepalive_interval_ms",
    "send_timeout_ms",
];

impl Config {
    /// Reads the plugin's settings (every key is optional; see [`Config`]).
    ///
    /// # Errors
    /// [`PluginError::Settings`] for an unknown key, a value of the wrong type, a
    /// URL that is not `stun:`/`turn:`/`turns:`, or values out of range.
    pub fn from_settings(settings: &Settings) -> Result<Self, PluginError> {
        let bad = |message: String| PluginError::Settings {
            plugin: PLUGIN_NAME.into(),
            message,
        };
        if let Some(key) = settings.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(bad(format!(
                "unknown setting `{key}` (known: {})",
                KEYS.join(", ")
            )));
        }
        let d = Self::default();
        let ms = |key: &str, default: Duration| -> Result<Duration, PluginError> {
            let v: u64 = setting(PLUGIN_NAME, settings, key, default.as_millis() as u64)?;
            Ok(Duration::from_millis(v))
        };
        let config = Self {
            loopback_only: setting(PLUGIN_NAME, settings, "loopback_only", d.loopback_only)?,
            interfaces: setting(PLUGIN_NAME, settings, "interfaces", d.interfaces)?,
            ipv6: setting(PLUGIN_NAME, settings, "ipv6", d.ipv6)?,
            ice_servers: setting(PLUGIN_NAME, settings, "ice_servers", d.ice_servers)?,
            ice_username: setting(PLUGIN_NAME, settings, "ice_username", d.ice_username)?,
            ice_credential: setting(PLUGIN_NAME, settings, "ice_credential", d.ice_credential)?,
            max_message: setting(PLUGIN_NAME, settings, "max_message", d.max_message)?,
            chunk_size: setting(PLUGIN_NAME, settings, "chunk_size", d.chunk_size)?,
            max_buffered: setting(PLUGIN_NAME, settings, "max_buffered", d.max_buffered)?,
            handshake_timeout: ms("handshake_timeout_ms", d.handshake_timeout)?,
            gather_wait: ms("gather_wait_ms", d.gather_wait)?,
            lost_timeout: ms("lost_timeout_ms", d.lost_timeout)?,
            keepalive_interval: ms("keepalive_interval_ms", d.keepalive_interval)?,
            send_timeout: ms("send_timeout_ms", d.send_timeout)?,
        };
        config.validate().map_err(bad)?;
        Ok(config)
    }

    /// Checks the settings hang together.
    ///
    /// # Errors
    /// A message saying what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        for url in &self.ice_servers {
            let scheme = url.split(':').next().unwrap_or_default();
            if !matches!(scheme, "stun" | "stuns" | "turn" | "turns") || !url.contains(':') {
                return Err(format!(
                    "`ice_servers`: `{url}` is not a stun:, stuns:, turn: or turns: URL"
                ));
            }
        }
        if self.max_message == 0 || self.max_message > u32::MAX as usize {
            return Err(format!("`max_message` {} out of range", self.max_message));
        }
        if !(MIN_CHUNK..=MAX_CHUNK).contains(&self.chunk_size) {
            return Err(format!(
                "`chunk_size` {} outside {MIN_CHUNK}..={MAX_CHUNK}",
                self.chunk_size
            ));
        }
        if self.max_buffered < self.chunk_size {
            return Err(format!(
                "`max_buffered` {} is below `chunk_size` {}",
                self.max_buffered, self.chunk_size
            ));
        }
        for (key, d) in [
            ("handshake_timeout_ms", self.handshake_timeout),
            ("lost_timeout_ms", self.lost_timeout),
            ("keepalive_interval_ms", self.keepalive_interval),
            ("send_timeout_ms", self.send_timeout),
        ] {
            if d.is_zero() {
                return Err(format!("`{key}` is zero"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(text: &str) -> Settings {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_and_settings() {
        let c = Config::from_settings(&Settings::new()).unwrap();
        assert_eq!(c, Config::default());
        assert!(c.loopback_only);
        assert_eq!(c.max_message, n2n_core::wire::DEFAULT_MAX_MESSAGE);
        let c = Config::from_settings(&settings(
            r#"loopback_only = false
               interfaces = ["eth0"]
               ice_servers = ["stun:stun.example.org:3478", "turn:turn.example.org:3478"]
               ice_username = "u"
               ice_credential = "p"
               handshake_timeout_ms = 500
               lost_timeout_ms = 900"#,
        ))
        .unwrap();
        assert!(!c.loopback_only);
        assert_eq!(c.interfaces, vec!["eth0".to_string()]);
        assert_eq!(c.ice_servers.len(), 2);
        assert_eq!(c.handshake_timeout, Duration::from_millis(500));
        assert_eq!(c.lost_timeout, Duration::from_millis(900));
    }

    #[test]
    fn bad_settings_are_typed_errors() {
        for text in [
            "bogus = 1",
            r#"ice_servers = ["http://example.org"]"#,
            r#"ice_servers = "stun:x""#,
            "max_message = 0",
            "chunk_size = 65536",
            "chunk_size = 10",
            "max_buffered = 100",
            "handshake_timeout_ms = 0",
            "lost_timeout_ms = \"soon\"",
            "loopback_only = 1",
        ] {
            let err = Config::from_settings(&settings(text)).unwrap_err();
            assert!(matches!(err, PluginError::Settings { .. }), "{text}: {err}");
        }
    }
}
