//! 20 nodes over the memory transport run Spray, the ring layered on it and
//! the flooding broadcast: the ring closes and every broadcast reaches every
//! node.

mod common;

use std::sync::Arc;
use std::time::Duration;

use n2n_core::memory::{MemoryNetwork, MemorySignalingHub};
use n2n_core::node::Config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_memory_nodes_close_the_ring_and_flood_everywhere() {
    let network = MemoryNetwork::new();
    let hub = MemorySignalingHub::with_seed(18);
    let nodes = common::build(20, &hub, Config::default(), || {
        Arc::new(network.transport())
    })
    .await;
    let cycles = common::wait_ring(&nodes, Duration::from_secs(60)).await;
    // The application reads Spray's state through the handle: its size
    // estimate and its partial view with ages.
    type Spray = n2n_overlay_spray::spray::State<n2n_core::PeerId, rand_chacha::ChaCha8Rng>;
    let h = nodes[3].node.handle();
    let (estimate, view) = h
        .query(n2n_overlay_spray::spray::PROTOCOL, |s: &Spray| {
            let view: Vec<(n2n_core::PeerId, u32)> =
                s.partial_view().map(|(p, age)| (*p, age)).collect();
            (s.size_estimate(), view)
        })
        .await
        .expect("Spray runs");
    println!("node 3: Spray's size estimate {estimate:.1}, partial view (peer, age) {view:?}");
    assert!(estimate > 1.0 && !view.is_empty());
    let (_, outview) = h
        .view(n2n_overlay_spray::spray::PROTOCOL)
        .expect("Spray runs");
    assert_eq!(
        outview.len(),
        view.len(),
        "the node's arc table and Spray agree"
    );
    let (reach, dups) = common::broadcast_all(&nodes, 50, Duration::from_secs(20)).await;
    println!(
        "memory, 20 nodes: ring closed after {cycles} gossip cycles of node 0; broadcast reach {reach:.3}, duplicates per delivery {dups:.2}"
    );
    assert_eq!(reach, 1.0, "every broadcast reaches every node");
    for n in nodes {
        n.node.shutdown().await;
    }
}
