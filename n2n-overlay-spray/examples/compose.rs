//! Composing a stack: the same WebRTC + WebSocket + Spray stack built twice,
//! once from `n2n.toml` by plugin names and once in code with the builder.
//! Both peers join one embedded signaling server and meet in one overlay.
//!
//! Run (from the repository root, where `n2n.toml` is):
//!
//! ```sh
//! cargo run --release -p n2n-overlay-spray --example compose
//! ```

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use n2n_core::node::Builder;
use n2n_core::overlay::Erased;
use n2n_core::plugin::StackConfig;
use n2n_core::{Keypair, Signaling};
use n2n_overlay_spray::spray;
use n2n_signal_ws::{ClientConfig, Server, ServerConfig, WsSignaling};
use n2n_transport_webrtc::WebRtcTransport;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

// Plugins are found by name only if their crates are linked.
use n2n_overlay_spray as _;
use n2n_signal_ws as _;
use n2n_transport_webrtc as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A signaling server on a free loopback port stands in for the one at the
    // `url` of n2n.toml.
    let server = Server::bind(ServerConfig {
        listen: "127.0.0.1:0".parse()?,
        ..ServerConfig::default()
    })
    .await?;
    let url = server.url();

    // 1. From the file, by plugin names.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../n2n.toml");
    let mut stack = StackConfig::from_file(path).context("reading n2n.toml")?;
    stack
        .signaling
        .as_mut()
        .context("n2n.toml names a signaling plugin")?
        .settings
        .insert("url".into(), toml::Value::String(url.clone()));
    let key_a = Keypair::generate(&mut ChaCha8Rng::seed_from_u64(1));
    let (builder, signaling) = Builder::from_stack(key_a, &stack).await?;
    let a = builder.spawn()?;
    let signaling = signaling.context("the stack built its signaling")?;
    a.handle().join(spray::PROTOCOL, signaling).await?;

    // 2. The same stack in code, without names.
    let key_b = Keypair::generate(&mut ChaCha8Rng::seed_from_u64(2));
    let overlay = spray::State::new(
        key_b.peer_id(),
        spray::Config::default(),
        ChaCha8Rng::seed_from_u64(2),
    );
    let b = Builder::new(key_b.clone())
        .transport(Arc::new(WebRtcTransport::new(
            n2n_transport_webrtc::Config::default(),
        )?))
        .overlay(Box::new(Erased::new(overlay)))
        .spawn()?;
    let signaling: Arc<dyn Signaling> =
        WsSignaling::connect(&url, "spray", &key_b, ClientConfig::default()).await?;
    let contact = b.handle().join(spray::PROTOCOL, signaling).await?;
    println!(
        "peer {} (from n2n.toml) and peer {} (from code) joined; contact of the second: {:?}",
        a.local_peer_id().short(),
        b.local_peer_id().short(),
        contact.map(|c| c.short())
    );

    // Spray gives the newcomer an arc to its contact; wait for it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, out) = b.handle().snapshot().await.view(spray::PROTOCOL);
        if !out.is_empty() {
            println!("second peer's partial view: {out:?}");
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "no arc after 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.shutdown().await;
    b.shutdown().await;
    server.shutdown().await;
    Ok(())
}
