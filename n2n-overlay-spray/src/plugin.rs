//! Registers Spray as the overlay plugin `spray`, built from the `[[overlay]]`
//! section of a stack file (settings: [`crate::spray::Config`]).

use n2n_core::DynOverlay;
use n2n_core::overlay::Erased;
use n2n_core::plugin::{OverlayPlugin, PluginContext, PluginError, Settings};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::spray;

fn build(ctx: &PluginContext, settings: &Settings) -> Result<Box<dyn DynOverlay>, PluginError> {
    let invalid = |message: String| PluginError::Settings {
        plugin: "spray".into(),
        message,
    };
    let mut config: spray::Config = toml::Value::Table(settings.clone())
        .try_into()
        .map_err(|e: toml::de::Error| invalid(e.message().to_string()))?;
    // The node core reports bridge successes: an arc given away closes
    // only once it moved (see `Config::await_bridges`).
    if !settings.contains_key("await_bridges") {
        config.await_bridges = true;
    }
    config.validate().map_err(|e| invalid(e.to_string()))?;
    let state = spray::State::new(
        ctx.keypair.peer_id(),
        config,
        ChaCha8Rng::seed_from_u64(ctx.seed),
    );
    Ok(Box::new(Erased::new(state)))
}

inventory::submit! {
    OverlayPlugin { name: "spray", build }
}

#[cfg(test)]
mod tests {
    use n2n_core::plugin::{PluginContext, overlay, setting};
    use rand::SeedableRng;

    #[test]
    fn the_plugin_builds_spray_from_settings() {
        let ctx = PluginContext {
            keypair: n2n_core::Keypair::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(1)),
            seed: 2,
        };
        let mut settings = n2n_core::plugin::Settings::new();
        settings.insert("delta_ms".into(), toml::Value::Integer(2000));
        let o = (overlay("spray").unwrap().build)(&ctx, &settings).unwrap();
        assert_eq!(o.protocol(), crate::spray::PROTOCOL);
        assert_eq!(
            setting::<u64>("spray", &settings, "delta_ms", 0).unwrap(),
            2000
        );
        settings.insert("delta_ms".into(), toml::Value::Integer(0));
        assert!((overlay("spray").unwrap().build)(&ctx, &settings).is_err());
        settings.insert("delta_ms".into(), toml::Value::String("soon".into()));
        assert!((overlay("spray").unwrap().build)(&ctx, &settings).is_err());
    }
}
