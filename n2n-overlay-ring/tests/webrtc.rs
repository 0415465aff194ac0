//! 20 nodes over real WebRTC data channels (loopback, memory signaling for
//! the first contact, bridges through neighbours for everything after) run
//! Spray, the ring layered on it and the flooding broadcast: the ring closes
//! and every broadcast reaches every node.

mod common;

use std::sync::Arc;
use std::time::Duration;

use n2n_core::memory::MemorySignalingHub;
use n2n_core::node::Config;
use n2n_transport_webrtc::WebRtcTransport;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_webrtc_nodes_close_the_ring_and_flood_everywhere() {
    let hub = MemorySignalingHub::with_seed(18);
    let config = Config {
        handshake_timeout: Duration::from_secs(30),
        bridge_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(30),
        ..Config::default()
    };
    let transport = || {
        let t = WebRtcTransport::new(n2n_transport_webrtc::Config {
            handshake_timeout: Duration::from_secs(30),
            ..n2n_transport_webrtc::Config::default()
        })
        .expect("a WebRTC transport");
        Arc::new(t) as Arc<dyn n2n_core::Transport>
    };
    let nodes = common::build(20, &hub, config, transport).await;
    let cycles = common::wait_ring(&nodes, Duration::from_secs(180)).await;
    let (reach, dups) = common::broadcast_all(&nodes, 20, Duration::from_secs(60)).await;
    println!(
        "webrtc, 20 nodes: ring closed after {cycles} gossip cycles of node 0; broadcast reach {reach:.3}, duplicates per delivery {dups:.2}"
    );
    assert_eq!(reach, 1.0, "every broadcast reaches every node");
    for n in nodes {
        n.node.shutdown().await;
    }
}
