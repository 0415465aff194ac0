//! Plugins and stack configuration.
//!
//! Transports, signaling paths and overlays register themselves by name with
//! [`inventory`] ([`TransportPlugin`], [`SignalingPlugin`], [`OverlayPlugin`]).
//! A TOML file ([`StackConfig`]) picks one of each by name and carries each
//! plugin's settings; [`crate::node::Builder`] composes the same stack in code.
//!
//! **A plugin crate must be linked to be found.** Listing it in `Cargo.toml` is
//! not enough: the final binary must reference it, for example with
//! `use n2n_transport_webrtc as _;`. An unknown name is an error that lists the
//! plugins that are linked, so a missing one is never silent.
//!
//! # Example
//!
//! ```
//! let config = n2n_core::plugin::StackConfig::from_toml_str(r#"
//!     [node]
//!     seed = 7
//!
//!     [transport]
//!     name = "memory"
//!
//!     [[overlay]]
//!     name = "spray"
//!     delta_ms = 10000
//! "#).unwrap();
//! assert_eq!(config.transport.name, "memory");
//! assert_eq!(config.overlay[0].settings["delta_ms"].as_integer(), Some(10000));
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

mod node_section;

pub use node_section::NodeSection;

/// The crates a plugin needs, at the versions `n2n-core` uses: a plugin crate
/// depends on `n2n-core` alone and writes
/// `n2n_core::plugin::reexport::inventory::submit! { … }` (or uses
/// [`crate::overlay_plugin!`]).
pub mod reexport {
    pub use async_trait;
    pub use inventory;
    pub use toml;
}

/// Registers an overlay plugin called `$name`, built by `$build` (a
/// [`BuildOverlay`]); the plugin crate needs no dependency but `n2n-core`.
///
/// ```
/// use n2n_core::plugin::{PluginContext, PluginError, Settings};
///
/// fn build(_: &PluginContext, _: &Settings) -> Result<Box<dyn n2n_core::DynOverlay>, PluginError> {
///     Err(PluginError::Build { plugin: "doc-example".into(), message: "a doc example".into() })
/// }
/// n2n_core::overlay_plugin!("doc-example", build);
/// assert!(n2n_core::plugin::overlays().contains(&"doc-example"));
/// ```
#[macro_export]
macro_rules! overlay_plugin {
    ($name:expr, $build:expr) => {
        $crate::plugin::reexport::inventory::submit! {
            $crate::plugin::OverlayPlugin { name: $name, build: $build }
        }
    };
}

use crate::identity::Keypair;
use crate::overlay::DynOverlay;
use crate::signaling::Signaling;
use crate::transport::Transport;

/// Settings of one plugin: the TOML table of its section, minus `name`.
pub type Settings = toml::Table;

/// What a plugin gets to build itself.
#[derive(Debug, Clone)]
pub struct PluginContext {
    /// The node's identity.
    pub keypair: Keypair,
    /// Seed for the plugin's RNG (derived from the node seed).
    pub seed: u64,
}

/// A boxed future, as returned by async plugin constructors.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Constructor of a transport plugin.
pub type BuildTransport = fn(&PluginContext, &Settings) -> Result<Arc<dyn Transport>, PluginError>;
/// Constructor of a signaling plugin (async: it may connect to a server).
pub type BuildSignaling =
    fn(PluginContext, Settings) -> BoxFuture<'static, Result<Arc<dyn Signaling>, PluginError>>;
/// Constructor of an overlay plugin.
pub type BuildOverlay = fn(&PluginContext, &Settings) -> Result<Box<dyn DynOverlay>, PluginError>;

/// Registers a transport by name.
#[derive(Debug)]
pub struct TransportPlugin {
    /// Plugin name (`"webrtc"`, `"libp2p"`, `"memory"`).
    pub name: &'static str,
    /// Builds the transport from its settings.
    pub build: BuildTransport,
}

/// Registers a signaling path by name.
#[derive(Debug)]
pub struct SignalingPlugin {
    /// Plugin name (`"ws"`, `"neighbor"`, `"memory"`).
    pub name: &'static str,
    /// Builds (and connects) the signaling path from its settings.
    pub build: BuildSignaling,
}

/// Registers an overlay by name.
#[derive(Debug)]
pub struct OverlayPlugin {
    /// Plugin name (`"spray"`).
    pub name: &'static str,
    /// Builds the overlay from its settings.
    pub build: BuildOverlay,
}

inventory::collect!(TransportPlugin);
inventory::collect!(SignalingPlugin);
inventory::collect!(OverlayPlugin);

/// Why a plugin could not be found or built, or a config file read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    /// No plugin of that kind and name is linked.
    #[error(
        "unknown {kind} plugin `{name}`; linked {kind} plugins: {known:?} (is its crate referenced by the binary, e.g. `use {} as _;`?)",
        example_crate(kind)
    )]
    Unknown {
        /// `transport`, `signaling` or `overlay`.
        kind: &'static str,
        /// The requested name.
        name: String,
        /// Names that are linked.
        known: Vec<&'static str>,
    },
    /// A plugin's settings are invalid.
    #[error("invalid settings for {plugin}: {message}")]
    Settings {
        /// The plugin.
        plugin: String,
        /// What is wrong.
        message: String,
    },
    /// The config file is not valid TOML or does not match the schema.
    #[error("config error at line {line}, column {column}: {message}")]
    Parse {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// The config file could not be read.
    #[error("cannot read config {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Building the plugin failed.
    #[error("{plugin}: {message}")]
    Build {
        /// The plugin.
        plugin: String,
        /// What failed.
        message: String,
    },
    /// Two overlays (or an overlay and a registered protocol) share one id:
    /// give one of them another (e.g. `protocol = "spray-2"`).
    #[error("two overlays or protocols of this node have the id {0}")]
    DuplicateProtocol(crate::wire::ProtocolId),
    /// An overlay layers on (samples) an overlay the node does not run.
    #[error("overlay {overlay} takes samples from overlay {layer}, which this node does not run")]
    MissingLayer {
        /// The overlay.
        overlay: crate::wire::ProtocolId,
        /// The overlay it needs.
        layer: crate::wire::ProtocolId,
    },
}

/// A crate that provides a plugin of `kind`, for the "not linked" hint.
fn example_crate(kind: &str) -> &'static str {
    match kind {
        "transport" => "n2n_transport_webrtc",
        "signaling" => "n2n_signal_ws",
        _ => "n2n_overlay_spray",
    }
}

fn known<T>(
    names: impl Iterator<Item = &'static T>,
    name: fn(&T) -> &'static str,
) -> Vec<&'static str>
where
    T: 'static,
{
    let mut v: Vec<_> = names.map(name).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The transport plugin called `name`.
///
/// # Errors
/// [`PluginError::Unknown`], listing the linked transports.
pub fn transport(name: &str) -> Result<&'static TransportPlugin, PluginError> {
    inventory::iter::<TransportPlugin>
        .into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| PluginError::Unknown {
            kind: "transport",
            name: name.into(),
            known: transports(),
        })
}

/// The signaling plugin called `name`.
///
/// # Errors
/// [`PluginError::Unknown`], listing the linked signaling plugins.
pub fn signaling(name: &str) -> Result<&'static SignalingPlugin, PluginError> {
    inventory::iter::<SignalingPlugin>
        .into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| PluginError::Unknown {
            kind: "signaling",
            name: name.into(),
            known: signalings(),
        })
}

/// The overlay plugin called `name`.
///
/// # Errors
/// [`PluginError::Unknown`], listing the linked overlays.
pub fn overlay(name: &str) -> Result<&'static OverlayPlugin, PluginError> {
    inventory::iter::<OverlayPlugin>
        .into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| PluginError::Unknown {
            kind: "overlay",
            name: name.into(),
            known: overlays(),
        })
}

/// Names of the linked transport plugins, sorted.
pub fn transports() -> Vec<&'static str> {
    known(inventory::iter::<TransportPlugin>.into_iter(), |p| p.name)
}

/// Names of the linked signaling plugins, sorted.
pub fn signalings() -> Vec<&'static str> {
    known(inventory::iter::<SignalingPlugin>.into_iter(), |p| p.name)
}

/// Names of the linked overlay plugins, sorted.
pub fn overlays() -> Vec<&'static str> {
    known(inventory::iter::<OverlayPlugin>.into_iter(), |p| p.name)
}

/// One plugin section of a stack file: its name and its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginSection {
    /// Plugin name.
    pub name: String,
    /// Every other key of the section.
    #[serde(flatten)]
    pub settings: Settings,
}

impl PluginSection {
    /// A section with no settings.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            settings: Settings::new(),
        }
    }
}

/// A whole stack, as read from a TOML file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackConfig {
    /// Node settings.
    #[serde(default)]
    pub node: NodeSection,
    /// The transport.
    pub transport: PluginSection,
    /// The signaling path used to join, if any.
    pub signaling: Option<PluginSection>,
    /// The overlays, in order.
    #[serde(default)]
    pub overlay: Vec<PluginSection>,
}

impl StackConfig {
    /// Parses a stack from TOML text.
    ///
    /// # Errors
    /// [`PluginError::Parse`] with the line and column of the first problem.
    pub fn from_toml_str(text: &str) -> Result<Self, PluginError> {
        toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|span| line_column(text, span.start))
                .unwrap_or((1, 1));
            PluginError::Parse {
                line,
                column,
                message: e.message().to_string(),
            }
        })
    }

    /// Reads and parses a stack file (at most 1 MiB).
    ///
    /// # Errors
    /// [`PluginError::Io`] or [`PluginError::Parse`].
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self, PluginError> {
        let path = path.as_ref();
        let io = |source| PluginError::Io {
            path: path.display().to_string(),
            source,
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > 1 << 20 {
            return Err(PluginError::Parse {
                line: 1,
                column: 1,
                message: format!("config file of {len} bytes exceeds 1 MiB"),
            });
        }
        Self::from_toml_str(&std::fs::read_to_string(path).map_err(io)?)
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Reads a plugin's settings, refusing keys it does not know.
///
/// ```
/// use n2n_core::plugin::{Settings, SettingsReader};
/// let settings: Settings = toml::from_str("delta_ms = 500\nbogus = 1").unwrap();
/// let mut r = SettingsReader::new("ring", &settings);
/// assert_eq!(r.get::<u64>("delta_ms", 1000).unwrap(), 500);
/// assert_eq!(r.get::<u64>("sample", 4).unwrap(), 4);
/// assert!(r.finish().unwrap_err().to_string().contains("bogus"));
/// ```
#[derive(Debug)]
pub struct SettingsReader<'a> {
    plugin: &'a str,
    settings: &'a Settings,
    read: std::collections::BTreeSet<&'a str>,
}

impl<'a> SettingsReader<'a> {
    /// Starts reading `settings` of plugin `plugin`.
    pub fn new(plugin: &'a str, settings: &'a Settings) -> Self {
        Self {
            plugin,
            settings,
            read: Default::default(),
        }
    }

    /// The setting `key` of type `T`, or `default` when absent.
    ///
    /// # Errors
    /// [`PluginError::Settings`] if the key is present with the wrong type.
    pub fn get<T: serde::de::DeserializeOwned>(
        &mut self,
        key: &'a str,
        default: T,
    ) -> Result<T, PluginError> {
        self.read.insert(key);
        setting(self.plugin, self.settings, key, default)
    }

    /// Ends the reading.
    ///
    /// # Errors
    /// [`PluginError::Settings`] naming every key that was never read.
    pub fn finish(self) -> Result<(), PluginError> {
        let unknown: Vec<&str> = self
            .settings
            .keys()
            .map(String::as_str)
            .filter(|k| !self.read.contains(k))
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        let mut known: Vec<&str> = self.read.iter().copied().collect();
        known.sort_unstable();
        Err(PluginError::Settings {
            plugin: self.plugin.into(),
            message: format!("unknown keys {unknown:?}; known keys: {known:?}"),
        })
    }
}

/// Reads a plugin setting of type `T`, or `default` when absent. It does
/// not notice keys nobody reads: prefer [`SettingsReader`], which does.
///
/// # Errors
/// [`PluginError::Settings`] if the key is present with the wrong type.
pub fn setting<T: serde::de::DeserializeOwned>(
    plugin: &str,
    settings: &Settings,
    key: &str,
    default: T,
) -> Result<T, PluginError> {
    match settings.get(key) {
        None => Ok(default),
        Some(v) => v
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| PluginError::Settings {
                plugin: plugin.into(),
                message: format!("`{key}`: {}", e.message()),
            }),
    }
}

impl fmt::Display for PluginSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_toml_reports_line_and_column() {
        let err =
            StackConfig::from_toml_str("[transport]\nname = \"memory\"\nbad = = 1\n").unwrap_err();
        match err {
            PluginError::Parse { line, column, .. } => {
                assert_eq!(line, 3);
                assert!(column >= 5, "{column}");
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn schema_errors_report_position() {
        let err = StackConfig::from_toml_str(
            "[node]\nlinger_ms = \"soon\"\n[transport]\nname = \"memory\"\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("line 2"), "{text}");
        let err = StackConfig::from_toml_str("[node]\nbogus = 1\n[transport]\nname = \"m\"\n")
            .unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
        let err = StackConfig::from_toml_str("[node]\n").unwrap_err();
        assert!(err.to_string().contains("transport"), "{err}");
    }

    #[test]
    fn unknown_plugin_lists_known_ones() {
        let err = transport("carrier-pigeon").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("carrier-pigeon"), "{text}");
        assert!(
            text.contains("memory"),
            "the memory transport is linked: {text}"
        );
        assert!(overlay("nope").is_err());
        assert!(
            signaling("nope")
                .unwrap_err()
                .to_string()
                .contains("memory")
        );
    }

    #[test]
    fn settings_are_typed() {
        let cfg = StackConfig::from_toml_str(
            "[transport]\nname = \"memory\"\nlatency_ms = 3\nflag = \"x\"\n",
        )
        .unwrap();
        let s = &cfg.transport.settings;
        assert_eq!(setting::<u64>("memory", s, "latency_ms", 0).unwrap(), 3);
        assert_eq!(setting::<u64>("memory", s, "absent", 9).unwrap(), 9);
        assert!(setting::<u64>("memory", s, "flag", 0).is_err());
    }
}
