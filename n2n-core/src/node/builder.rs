//! Composing a node: in code with [`Builder`], or from a TOML [`StackConfig`].

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::core::NodeCore;
use super::driver::Driver;
use super::events::Events;
use super::handle::Shared;
use super::{Config, Node, NodeHandle};
use crate::identity::Keypair;
use crate::overlay::DynOverlay;
use crate::plugin::{self, PluginContext, PluginError, StackConfig};
use crate::signaling::Signaling;
use crate::transport::Transport;
use crate::wire::ProtocolId;

/// Commands waiting for the node at most (callers wait when full).
const COMMAND_CAPACITY: usize = 256;

/// Composes a node: identity, transport, overlays, settings.
///
/// # Examples
///
/// ```
/// use n2n_core::{Keypair, ProtocolId, memory::MemoryNetwork, node::Builder};
/// use rand::SeedableRng;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let key = Keypair::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
/// let node = Builder::new(key)
///     .transport(std::sync::Arc::new(MemoryNetwork::new().transport()))
///     .protocol(ProtocolId::from_name("my-app"))
///     .spawn()
///     .expect("a transport is set");
/// assert!(node.handle().snapshot().await.neighbours.is_empty());
/// node.shutdown().await;
/// # }
/// ```
#[derive(Debug)]
pub struct Builder {
    keypair: Keypair,
    config: Config,
    transport: Option<Arc<dyn Transport>>,
    overlays: Vec<Box<dyn DynOverlay>>,
    protocols: Vec<ProtocolId>,
}

impl Builder {
    /// Starts a node with identity `keypair` and default settings.
    pub fn new(keypair: Keypair) -> Self {
        Self {
            keypair,
            config: Config::default(),
            transport: None,
            overlays: Vec::new(),
            protocols: Vec::new(),
        }
    }

    /// Replaces the settings.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Sets the transport.
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// Adds an overlay driven by the node (its protocol id is registered too).
    pub fn overlay(mut self, overlay: Box<dyn DynOverlay>) -> Self {
        self.overlays.push(overlay);
        self
    }

    /// Registers a protocol id whose arcs the application manages itself (no
    /// overlay driver). Arcs of unregistered ids are refused.
    pub fn protocol(mut self, id: ProtocolId) -> Self {
        self.protocols.push(id);
        self
    }

    /// Builds the transport and overlays named in `stack` from the linked plugins,
    /// and connects its signaling plugin if any (returned for [`NodeHandle::join`]).
    ///
    /// # Errors
    /// [`PluginError::Unknown`] for a name that is not linked, or the plugin's own error.
    pub async fn from_stack(
        keypair: Keypair,
        stack: &StackConfig,
    ) -> Result<(Self, Option<Arc<dyn Signaling>>), PluginError> {
        let n = &stack.node;
        let config = n.config();
        config.validate().map_err(|message| PluginError::Settings {
            plugin: "node".into(),
            message,
        })?;
        let seed = n.seed.unwrap_or_else(|| {
            use rand::TryRngCore;
            rand::rngs::OsRng.try_next_u64().unwrap_or(0)
        });
        let ctx = |i: u64| PluginContext {
            keypair: keypair.clone(),
            seed: seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        };
        let transport =
            (plugin::transport(&stack.transport.name)?.build)(&ctx(1), &stack.transport.settings)?;
        let mut builder = Self::new(keypair.clone())
            .config(config)
            .transport(transport);
        for (i, section) in stack.overlay.iter().enumerate() {
            let overlay =
                (plugin::overlay(&section.name)?.build)(&ctx(10 + i as u64), &section.settings)?;
            builder = builder.overlay(overlay);
        }
        let signaling = match &stack.signaling {
            Some(section) => Some(
                (plugin::signaling(&section.name)?.build)(ctx(2), section.settings.clone()).await?,
            ),
            None => None,
        };
        Ok((builder, signaling))
    }

    /// Starts the node on the current tokio runtime.
    ///
    /// # Errors
    /// [`PluginError::Settings`] if no transport was set or the settings do
    /// not hold together ([`Config::validate`]).
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn spawn(self) -> Result<Node, PluginError> {
        let transport = self.transport.ok_or_else(|| PluginError::Settings {
            plugin: "node".into(),
            message: "no transport set".into(),
        })?;
        self.config
            .validate()
            .map_err(|message| PluginError::Settings {
                plugin: "node".into(),
                message,
            })?;
        if self.config.signal_auth != super::SignalAuth::Ed25519 {
            return Err(PluginError::Settings {
                plugin: "node".into(),
                message:
                    "unsigned signals are for simulations only; a real node signs every signal"
                        .into(),
            });
        }
        check_protocols(&self.overlays, &self.protocols)?;
        let local = self.keypair.peer_id();
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_CAPACITY);
        let (events_tx, events_rx) =
            Events::channel(self.config.event_capacity, self.config.event_bytes);
        let mut protocols: BTreeSet<ProtocolId> = self.protocols.iter().copied().collect();
        protocols.extend(self.overlays.iter().map(|o| o.protocol()));
        let shared = Arc::new(Shared {
            protocols,
            event_capacity: self.config.event_capacity,
            event_bytes: self.config.event_bytes,
            ..Shared::default()
        });
        let seed = self.config.seed.unwrap_or_else(|| {
            use rand::TryRngCore;
            rand::rngs::OsRng.try_next_u64().unwrap_or(0)
        });
        let now = tokio::time::Instant::now().into_std();
        let mut core = NodeCore::new(
            now,
            self.config,
            self.keypair,
            transport.name(),
            self.overlays,
            self.protocols,
            seed,
        );
        // The one read of the wall clock: signals are valid until a unix time.
        let unix_ms = web_time::SystemTime::now()
            .duration_since(web_time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        core.set_wall_clock(now, unix_ms);
        let task =
            tokio::spawn(Driver::new(core, transport, events_tx, shared.clone()).run(commands_rx));
        Ok(Node {
            handle: NodeHandle::new(local, commands_tx, shared),
            events: Some(events_rx),
            task,
        })
    }
}

/// Refuses two overlays (or protocols) with one id, and an overlay that
/// layers on one the node does not run.
fn check_protocols(
    overlays: &[Box<dyn DynOverlay>],
    protocols: &[ProtocolId],
) -> Result<(), PluginError> {
    let mut ids = BTreeSet::new();
    for id in overlays
        .iter()
        .map(|o| o.protocol())
        .chain(protocols.iter().copied())
    {
        if !ids.insert(id) {
            return Err(PluginError::DuplicateProtocol(id));
        }
    }
    for o in overlays {
        for layer in o.layers_on() {
            if !overlays.iter().any(|x| x.protocol() == layer) {
                return Err(PluginError::MissingLayer {
                    overlay: o.protocol(),
                    layer,
                });
            }
        }
    }
    Ok(())
}
