//! Registers the ring as the overlay plugin `ring`, with `n2n-core`'s
//! re-exports only (this crate depends on no plugin machinery of its own).
//!
//! ```toml
//! [[overlay]]
//! name = "ring"
//! protocol = "ring"     # the ring's id
//! sampler = "spray"     # the overlay it takes candidates from
//! delta_ms = 1000
//! sample = 8
//! gossip = 16
//! known = 32
//! ```

use std::time::Duration;

use n2n_core::DynOverlay;
use n2n_core::ProtocolId;
use n2n_core::overlay::Erased;
use n2n_core::plugin::{PluginContext, PluginError, Settings, SettingsReader};

use crate::ring;

fn build(ctx: &PluginContext, settings: &Settings) -> Result<Box<dyn DynOverlay>, PluginError> {
    let d = ring::Config::default();
    let mut r = SettingsReader::new("ring", settings);
    let protocol: String = r.get("protocol", "ring".to_string())?;
    let sampler: String = r.get("sampler", "spray".to_string())?;
    let delta_ms: u64 = r.get("delta_ms", d.delta.as_millis() as u64)?;
    let config = ring::Config {
        protocol: ProtocolId::from_runtime_name(&protocol),
        sampler: ProtocolId::from_runtime_name(&sampler),
        delta: Duration::from_millis(delta_ms.max(1)),
        sample: r.get("sample", d.sample)?,
        gossip: r.get("gossip", d.gossip)?,
        known: r.get("known", d.known)?,
    };
    r.finish()?;
    Ok(Box::new(Erased::new(ring::State::new(
        ctx.keypair.peer_id(),
        config,
    ))))
}

n2n_core::overlay_plugin!("ring", build);

#[cfg(test)]
mod tests {
    use n2n_core::plugin::{PluginContext, Settings, overlay};

    #[test]
    fn the_plugin_builds_the_ring_and_refuses_unknown_keys() {
        let ctx = PluginContext {
            keypair: n2n_core::Keypair::from_secret([1; 32]),
            seed: 2,
        };
        let mut settings = Settings::new();
        settings.insert("protocol".into(), "ring-2".into());
        let o = (overlay("ring").unwrap().build)(&ctx, &settings).unwrap();
        assert_eq!(o.protocol(), n2n_core::ProtocolId::from_name("ring-2"));
        assert_eq!(
            o.layers_on(),
            vec![n2n_core::ProtocolId::from_name("spray")]
        );
        settings.insert("dleta_ms".into(), 5.into());
        let err = (overlay("ring").unwrap().build)(&ctx, &settings).unwrap_err();
        assert!(err.to_string().contains("dleta_ms"), "{err}");
    }
}
