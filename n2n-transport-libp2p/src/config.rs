//! Settings of a [`crate::Libp2pTransport`], in code or from the plugin's TOML table.

use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol as Segment;
use n2n_core::plugin::{PluginError, Settings, setting};

use crate::PLUGIN_NAME;

/// A libp2p transport stack the swarm can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP, secured with Noise and multiplexed with Yamux.
    Tcp,
    /// QUIC v1 (TLS 1.3 and streams built in).
    Quic,
}

impl Protocol {
    /// The setting's spelling: `"tcp"` or `"quic"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Quic => "quic",
        }
    }

    /// Which protocol `addr` is an address of, if any this crate speaks: an IP
    /// address followed by `/tcp/<port>` or `/udp/<port>/quic-v1`, optionally
    /// ending in `/p2p/<peer>`.
    pub fn of(addr: &Multiaddr) -> Option<Self> {
        let segments: Vec<Segment<'_>> = addr.iter().collect();
        let rest = match segments.as_slice() {
            [Segment::Ip4(_) | Segment::Ip6(_), rest @ ..] => rest,
            _ => return None,
        };
        let (proto, rest) = match rest {
            [Segment::Tcp(_), rest @ ..] => (Self::Tcp, rest),
            [Segment::Udp(_), Segment::QuicV1, rest @ ..] => (Self::Quic, rest),
            _ => return None,
        };
        match rest {
            [] | [Segment::P2p(_)] => Some(proto),
            _ => None,
        }
    }

    /// The loopback listen address with an OS-chosen port.
    pub fn loopback_listen(self) -> Multiaddr {
        let text = match self {
            Self::Tcp => "/ip4/127.0.0.1/tcp/0",
            Self::Quic => "/ip4/127.0.0.1/udp/0/quic-v1",
        };
        text.parse().expect("a valid literal multiaddr")
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tcp" => Ok(Self::Tcp),
            "quic" => Ok(Self::Quic),
            other => Err(format!(
                "unknown protocol `{other}` (expected \"tcp\" or \"quic\")"
            )),
        }
    }
}

/// Settings of a [`crate::Libp2pTransport`].
///
/// # Examples
///
/// In a stack file:
///
/// ```toml
/// [transport]
/// name = "libp2p"
/// protocols = ["tcp", "quic"]
/// listen = ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"]
/// announce = ["/ip4/203.0.113.7/tcp/4001"]
/// handshake_timeout_ms = 10000
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The transport stacks, in order of preference when dialing.
    pub protocols: Vec<Protocol>,
    /// Addresses to listen on. Empty: `127.0.0.1` with an OS-chosen port for each
    /// protocol (loopback only; set this to reach other machines).
    ///
    /// On a host with several interfaces, let QUIC listen on the unspecified
    /// address (`/ip4/0.0.0.0/udp/<port>/quic-v1`): libp2p's QUIC dials from one
    /// of its listening sockets, and a socket bound to one interface's address
    /// would send to the others with a source address they cannot answer.
    pub listen: Vec<Multiaddr>,
    /// Addresses handed to remotes in signals instead of the listen addresses
    /// (for a host behind a port mapping). Empty: the listen addresses, less the
    /// loopback ones when there are others (on the remote's host a loopback
    /// address names the remote's own machine).
    pub announce: Vec<Multiaddr>,
    /// Largest message a connection carries, in bytes (default
    /// [`n2n_core::wire::DEFAULT_MAX_MESSAGE`], 1 MiB and headers). A frame
    /// is read as its bytes arrive, never allocated from its announced size.
    pub max_message: usize,
    /// Bound on every wait of a handshake (signals, dial, stream opening).
    pub handshake_timeout: Duration,
    /// How long a libp2p connection without any n2n connection on it stays open.
    pub idle_connection_timeout: Duration,
    /// Inbound libp2p connections open at once at most (default 256): one
    /// more is closed as soon as it is established.
    pub max_inbound_connections: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            protocols: vec![Protocol::Tcp, Protocol::Quic],
            listen: Vec::new(),
            announce: Vec::new(),
            max_message: n2n_core::wire::DEFAULT_MAX_MESSAGE,
            handshake_timeout: Duration::from_secs(10),
            idle_connection_timeout: Duration::from_secs(30),
            max_inbound_connections: 256,
        }
    }
}

/// Settings keys the plugin understands.
const KEYS: &[&str] = &[
    "protocols",
    "listen",
    "announce",
    "max_message",
    "handshake_timeout_ms",
    "idle_connection_timeout_ms",
    "max_inbound_connections",
];

impl Config {
    /// TCP only, listening on loopback.
    pub fn tcp() -> Self {
        Self {
            protocols: vec![Protocol::Tcp],
            ..Self::default()
        }
    }

    /// QUIC only, listening on loopback.
    pub fn quic() -> Self {
        Self {
            protocols: vec![Protocol::Quic],
            ..Self::default()
        }
    }

    /// Reads the plugin's settings (every key is optional; see [`Config`]).
    ///
    /// # Errors
    /// [`PluginError::Settings`] for an unknown key, a value of the wrong type, an
    /// unknown protocol, an address that is not a multiaddr, or a listen address of
    /// a protocol that is not enabled.
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
        let names: Vec<String> = setting(
            PLUGIN_NAME,
            settings,
            "protocols",
            d.protocols.iter().map(|p| p.as_str().to_string()).collect(),
        )?;
        let protocols = names
            .iter()
            .map(|n| {
                n.parse::<Protocol>()
                    .map_err(|e| bad(format!("`protocols`: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let addrs = |key: &str| -> Result<Vec<Multiaddr>, PluginError> {
            let texts: Vec<String> = setting(PLUGIN_NAME, settings, key, Vec::new())?;
            texts
                .iter()
                .map(|t| {
                    t.parse::<Multiaddr>()
                        .map_err(|e| bad(format!("`{key}`: `{t}` is not a multiaddr: {e}")))
                })
                .collect()
        };
        let ms = |key: &str, default: Duration| -> Result<Duration, PluginError> {
            let v: u64 = setting(PLUGIN_NAME, settings, key, default.as_millis() as u64)?;
            Ok(Duration::from_millis(v))
        };
        let config = Self {
            protocols,
            listen: addrs("listen")?,
            announce: addrs("announce")?,
            max_message: setting(PLUGIN_NAME, settings, "max_message", d.max_message)?,
            handshake_timeout: ms("handshake_timeout_ms", d.handshake_timeout)?,
            idle_connection_timeout: ms("idle_connection_timeout_ms", d.idle_connection_timeout)?,
            max_inbound_connections: setting(
                PLUGIN_NAME,
                settings,
                "max_inbound_connections",
                d.max_inbound_connections,
            )?,
        };
        config.validate().map_err(bad)?;
        Ok(config)
    }

    /// Checks the settings hang together.
    ///
    /// # Errors
    /// A message saying what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.protocols.is_empty() {
            return Err("`protocols` is empty".into());
        }
        for addr in self.listen.iter().chain(&self.announce) {
            match Protocol::of(addr) {
                Some(p) if self.protocols.contains(&p) => {}
                Some(p) => {
                    return Err(format!(
                        "address {addr} is {} but `protocols` is {:?}",
                        p.as_str(),
                        self.protocols
                    ));
                }
                None => {
                    return Err(format!(
                        "address {addr} is neither /ip*/…/tcp/… nor /ip*/…/udp/…/quic-v1"
                    ));
                }
            }
        }
        if self.max_message == 0 || self.max_message > u32::MAX as usize {
            return Err(format!("`max_message` {} out of range", self.max_message));
        }
        if self.handshake_timeout.is_zero() {
            return Err("`handshake_timeout_ms` is zero".into());
        }
        if self.max_inbound_connections == 0 {
            return Err("`max_inbound_connections` is zero".into());
        }
        Ok(())
    }

    /// The listen addresses in force: [`Config::listen`], or loopback defaults.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        if self.listen.is_empty() {
            self.protocols.iter().map(|p| p.loopback_listen()).collect()
        } else {
            self.listen.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(text: &str) -> Settings {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn protocol_of_address() {
        let p = |s: &str| Protocol::of(&s.parse().unwrap());
        assert_eq!(p("/ip4/127.0.0.1/tcp/1"), Some(Protocol::Tcp));
        assert_eq!(p("/ip6/::1/udp/1/quic-v1"), Some(Protocol::Quic));
        assert_eq!(p("/ip4/127.0.0.1/udp/1"), None);
        assert_eq!(p("/dns4/example.invalid/tcp/1"), None);
        assert_eq!(p("/ip4/127.0.0.1/tcp/1/ws"), None);
        let peer = libp2p::identity::Keypair::ed25519_from_bytes([1; 32])
            .unwrap()
            .public()
            .to_peer_id();
        assert_eq!(
            p(&format!("/ip4/127.0.0.1/tcp/1/p2p/{peer}")),
            Some(Protocol::Tcp)
        );
    }

    #[test]
    fn defaults_and_settings() {
        let c = Config::from_settings(&Settings::new()).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.listen_addrs().len(), 2);
        let c = Config::from_settings(&settings(
            r#"protocols = ["quic"]
               listen = ["/ip4/127.0.0.1/udp/0/quic-v1"]
               handshake_timeout_ms = 500"#,
        ))
        .unwrap();
        assert_eq!(c.protocols, vec![Protocol::Quic]);
        assert_eq!(c.handshake_timeout, Duration::from_millis(500));
    }

    #[test]
    fn bad_settings_are_typed_errors() {
        for text in [
            "bogus = 1",
            r#"protocols = ["carrier-pigeon"]"#,
            r#"protocols = []"#,
            r#"listen = ["not an address"]"#,
            r#"protocols = ["tcp"]
               listen = ["/ip4/127.0.0.1/udp/0/quic-v1"]"#,
            r#"listen = ["/ip4/127.0.0.1/udp/0"]"#,
            "max_message = 0",
            "handshake_timeout_ms = \"soon\"",
        ] {
            let err = Config::from_settings(&settings(text)).unwrap_err();
            assert!(matches!(err, PluginError::Settings { .. }), "{text}: {err}");
        }
    }
}
