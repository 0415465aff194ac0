//! Spray's settings, readable from the `[[overlay]]` section of a stack file.

use std::time::Duration;

use n2n_core::wire::ProtocolId;
use serde::{Deserialize, Serialize};

/// Spray's settings.
///
/// In a TOML stack file, durations are in milliseconds and every key is optional:
///
/// ```
/// let config: n2n_overlay_spray::spray::Config = toml::from_str(r#"
///     delta_ms = 30000
///     exchange_timeout_ms = 5000
/// "#).unwrap();
/// assert_eq!(config.delta, std::time::Duration::from_secs(30));
/// assert_eq!(config.leave_linger, n2n_overlay_spray::spray::Config::default().leave_linger);
/// assert_eq!(config.age_rule, n2n_overlay_spray::spray::AgeRule::Reset);
/// ```
///
/// The view size is not a setting: Spray's partial views converge to ln N + O(1)
/// arcs by construction (the `a·ln N + b` knobs of the JavaScript package are
/// not kept; they break the paper's arc-count argument for `a ≠ 1`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ConfigFile", into = "ConfigFile")]
pub struct Config {
    /// Shuffle period Δ (default 60 s). Each peer shuffles once per period with
    /// its oldest neighbour; view sizes even out within a few periods.
    pub delta: Duration,
    /// How long the initiator of a shuffle waits for the partner's answer
    /// before it handles the partner as down (default 10 s).
    pub exchange_timeout: Duration,
    /// After a graceful leave, how long the leaving peer keeps its arcs open so
    /// that the bridges it asked for can go through it (default 5 s).
    pub leave_linger: Duration,
    /// The age of an arc that moves in a shuffle (default
    /// [`AgeRule::Reset`], the paper's).
    pub age_rule: AgeRule,
    /// The protocol id of this instance's arcs and messages (default
    /// [`super::PROTOCOL`], `"spray"`; in a stack file `protocol = "name"`).
    /// Two Spray instances on one node need two ids.
    pub protocol: ProtocolId,
    /// Close an arc given away in a shuffle only once its bridge succeeded
    /// (`Input::BridgeDone`), and keep it if the bridge failed: a partner
    /// that never carries out its side cannot empty our view. Needs a
    /// runtime that reports bridge successes, as the node core does; off
    /// in `Config::default()` (the simulators' idealised runtimes report
    /// only failures), on by default for the `spray` plugin of a stack file.
    pub await_bridges: bool,
}

/// The age an arc gets when it moves to another peer in a shuffle.
///
/// The oldest arc is the next shuffle partner, so the rule decides how
/// evenly in-degrees spread. Measured by `n2n-sim` (1k and 10k peers, see
/// README): `Keep` gives tighter in-degrees (σ ≈ 1.2 against ≈ 1.7–2.0), the
/// view sizes are alike.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgeRule {
    /// A moved arc is new (age 0): the paper's pseudo-code as its authors
    /// implemented it (spray-wrtc 2.0.11 `PartialView.add`, the PeerSim
    /// class `descent.spray.SprayPartialView.addNeighbor`).
    #[default]
    Reset,
    /// A moved arc keeps the age it had at its giver: arcs keep ageing
    /// wherever they go, so every arc is picked as a partner after about
    /// the same number of rounds.
    Keep,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            delta: Duration::from_secs(60),
            exchange_timeout: Duration::from_secs(10),
            leave_linger: Duration::from_secs(5),
            age_rule: AgeRule::Reset,
            protocol: super::PROTOCOL,
            await_bridges: false,
        }
    }
}

/// Why settings are invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A duration that must be positive is zero.
    #[error("`{0}` must be greater than zero")]
    Zero(&'static str),
}

impl Config {
    /// Checks the settings.
    ///
    /// # Errors
    /// [`ConfigError::Zero`] if the shuffle period or the exchange timeout is zero.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.delta.is_zero() {
            return Err(ConfigError::Zero("delta_ms"));
        }
        if self.exchange_timeout.is_zero() {
            return Err(ConfigError::Zero("exchange_timeout_ms"));
        }
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ConfigFile {
    delta_ms: u64,
    exchange_timeout_ms: u64,
    leave_linger_ms: u64,
    age_rule: AgeRule,
    protocol: String,
    await_bridges: bool,
}

impl Default for ConfigFile {
    fn default() -> Self {
        Config::default().into()
    }
}

impl From<Config> for ConfigFile {
    fn from(c: Config) -> Self {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self {
            delta_ms: ms(c.delta),
            exchange_timeout_ms: ms(c.exchange_timeout),
            leave_linger_ms: ms(c.leave_linger),
            age_rule: c.age_rule,
            protocol: c.protocol.name().unwrap_or("spray").to_string(),
            await_bridges: c.await_bridges,
        }
    }
}

impl TryFrom<ConfigFile> for Config {
    type Error = ConfigError;

    fn try_from(f: ConfigFile) -> Result<Self, ConfigError> {
        let config = Config {
            delta: Duration::from_millis(f.delta_ms),
            exchange_timeout: Duration::from_millis(f.exchange_timeout_ms),
            leave_linger: Duration::from_millis(f.leave_linger_ms),
            age_rule: f.age_rule,
            protocol: ProtocolId::from_runtime_name(&f.protocol),
            await_bridges: f.await_bridges,
        };
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_defaults_and_errors() {
        let c: Config = toml::from_str("").unwrap();
        assert_eq!(c, Config::default());
        let c: Config = toml::from_str("delta_ms = 1500\nleave_linger_ms = 0").unwrap();
        assert_eq!(c.delta, Duration::from_millis(1500));
        assert_eq!(c.leave_linger, Duration::ZERO);
        let e = toml::from_str::<Config>("delta_ms = 0").unwrap_err();
        assert!(e.to_string().contains("delta_ms"), "{e}");
        let e = toml::from_str::<Config>("delta = 3").unwrap_err();
        assert!(e.to_string().contains("delta"), "{e}");
        let e = toml::from_str::<Config>("delta_ms = \"soon\"").unwrap_err();
        assert!(e.to_string().contains("delta_ms"), "{e}");
        let c: Config = toml::from_str("age_rule = \"keep\"").unwrap();
        assert_eq!(c.age_rule, AgeRule::Keep);
        let e = toml::from_str::<Config>("age_rule = \"young\"").unwrap_err();
        assert!(e.to_string().contains("young"), "{e}");
        let c: Config = toml::from_str("protocol = \"spray-2\"").unwrap();
        assert_eq!(c.protocol, ProtocolId::from_name("spray-2"));
        assert_eq!(c.protocol.name(), Some("spray-2"));
        let back = toml::to_string(&Config::default()).unwrap();
        assert_eq!(toml::from_str::<Config>(&back).unwrap(), Config::default());
    }
}
