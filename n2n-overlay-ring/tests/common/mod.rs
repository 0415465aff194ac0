//! The stack of the ring tests: Spray, the ring layered on it and the
//! flooding broadcast, on N nodes of any transport; and the checks (ring
//! closed, every broadcast everywhere).
#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use n2n_core::memory::MemorySignalingHub;
use n2n_core::node::{Builder, Config, Node};
use n2n_core::overlay::Erased;
use n2n_core::transport::Transport;
use n2n_core::{Keypair, PeerId};
use n2n_overlay_ring::flood::{self, Flood};
use n2n_overlay_ring::ring;
use n2n_overlay_spray::spray;
use rand::SeedableRng;

pub struct StackNode {
    pub node: Node,
    pub id: PeerId,
    pub flood: Arc<Mutex<Flood>>,
}

pub fn key(seed: u64) -> Keypair {
    Keypair::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed))
}

/// `n` nodes built by `transport`, joined one by one through `hub`.
pub async fn build(
    n: usize,
    hub: &MemorySignalingHub,
    config: Config,
    transport: impl Fn() -> Arc<dyn Transport>,
) -> Vec<StackNode> {
    let mut nodes = Vec::new();
    for i in 0..n {
        let seed = 1000 + i as u64;
        let key = key(seed);
        let id = key.peer_id();
        let spray = spray::State::new(
            id,
            spray::Config {
                delta: Duration::from_millis(700),
                ..spray::Config::default()
            },
            rand_chacha::ChaCha8Rng::seed_from_u64(seed),
        );
        let ring = ring::State::new(
            id,
            ring::Config {
                delta: Duration::from_millis(300),
                ..ring::Config::default()
            },
        );
        let node = Builder::new(key)
            .config(Config {
                seed: Some(seed),
                ..config.clone()
            })
            .transport(transport())
            .overlay(Box::new(Erased::new(spray)))
            .overlay(Box::new(Erased::new(ring)))
            .protocol(flood::PROTOCOL)
            .spawn()
            .expect("a valid stack");
        let h = node.handle().clone();
        let events = h.subscribe(flood::PROTOCOL).expect("registered");
        let f = Arc::new(Mutex::new(Flood::default()));
        tokio::spawn(flood::serve(h.clone(), flood::PROTOCOL, events, f.clone()));
        let signaling = hub.attach(id);
        let contact =
            tokio::time::timeout(Duration::from_secs(30), h.join(spray::PROTOCOL, signaling))
                .await
                .expect("join in time")
                .expect("joins");
        if let Some(contact) = contact {
            // The second overlay joins through the same neighbour: no server.
            h.join_via(ring::PROTOCOL, contact)
                .await
                .expect("ring joins");
        }
        nodes.push(StackNode { node, id, flood: f });
    }
    nodes
}

/// Whether every node's ring arcs go to its true successor and predecessor.
pub async fn ring_closed(nodes: &[StackNode]) -> bool {
    let mut sorted: Vec<PeerId> = nodes.iter().map(|n| n.id).collect();
    sorted.sort_by_key(ring::position);
    for (i, n) in nodes.iter().enumerate() {
        let at = sorted.iter().position(|p| *p == n.id).expect("listed");
        let succ = sorted[(at + 1) % sorted.len()];
        let pred = sorted[(at + sorted.len() - 1) % sorted.len()];
        let got = n
            .node
            .handle()
            .query(ring::PROTOCOL, |r: &ring::State| {
                (r.successor(), r.predecessor())
            })
            .await
            .expect("the ring runs");
        if got != (Some(succ), Some(pred)) {
            tracing::debug!(node = i, "ring not closed yet");
            return false;
        }
    }
    true
}

/// Gossip cycles node 0 has run.
pub async fn cycles(nodes: &[StackNode]) -> u64 {
    nodes[0]
        .node
        .handle()
        .query(ring::PROTOCOL, |r: &ring::State| r.cycles())
        .await
        .expect("the ring runs")
}

/// Waits for the ring to close; returns the gossip cycles node 0 ran from
/// the call (the last join) until then.
pub async fn wait_ring(nodes: &[StackNode], within: Duration) -> u64 {
    let start = cycles(nodes).await;
    let deadline = tokio::time::Instant::now() + within;
    while !ring_closed(nodes).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ring did not close in {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cycles(nodes).await - start
}

/// Floods `count` broadcasts from nodes in turn, waits until each reached
/// every node; returns (delivered share, duplicates per delivery).
pub async fn broadcast_all(nodes: &[StackNode], count: u64, within: Duration) -> (f64, f64) {
    for id in 0..count {
        let from = &nodes[id as usize % nodes.len()];
        flood::broadcast(
            from.node.handle(),
            flood::PROTOCOL,
            id,
            b"hello ring",
            &from.flood,
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let missing = nodes
            .iter()
            .flat_map(|n| {
                let f = n.flood.lock().unwrap();
                (0..count).filter(|id| !f.has(*id)).collect::<Vec<_>>()
            })
            .count();
        if missing == 0 || tokio::time::Instant::now() >= deadline {
            let expected = (count as usize * nodes.len()) as f64;
            let delivered: u64 = nodes
                .iter()
                .map(|n| n.flood.lock().unwrap().delivered)
                .sum();
            let duplicates: u64 = nodes
                .iter()
                .map(|n| n.flood.lock().unwrap().duplicates)
                .sum();
            return (
                (expected - missing as f64) / expected,
                duplicates as f64 / delivered.max(1) as f64,
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
