//! A stack of two overlays and an application on 20 nodes: Spray (random peer
//! sampling), a T-Man-style ring layered on it (candidates from Spray's
//! samples, reached through neighbours) and a flooding broadcast. Prints how
//! many gossip cycles the ring takes to close, then floods broadcasts and
//! prints their reach and duplicates.
//!
//! Run (memory transport; add `webrtc` for real WebRTC data channels on
//! loopback, and a node count if you like):
//!
//! ```sh
//! cargo run --release -p n2n-overlay-ring --example ring
//! cargo run --release -p n2n-overlay-ring --example ring -- webrtc 20
//! ```

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use n2n_core::memory::{MemoryNetwork, MemorySignalingHub};
use n2n_core::node::{Builder, Node};
use n2n_core::overlay::Erased;
use n2n_core::{Keypair, PeerId, Transport};
use n2n_overlay_ring::flood::{self, Flood};
use n2n_overlay_ring::ring;
use n2n_overlay_spray::spray;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

struct Peer {
    node: Node,
    id: PeerId,
    flood: Arc<Mutex<Flood>>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let webrtc = args.iter().any(|a| a == "webrtc");
    let n: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(20);
    let network = MemoryNetwork::new();
    let hub = MemorySignalingHub::with_seed(7);
    let mut peers: Vec<Peer> = Vec::new();
    for i in 0..n as u64 {
        let key = Keypair::generate(&mut ChaCha8Rng::seed_from_u64(i));
        let id = key.peer_id();
        let transport: Arc<dyn Transport> = if webrtc {
            Arc::new(n2n_transport_webrtc::WebRtcTransport::new(
                Default::default(),
            )?)
        } else {
            Arc::new(network.transport())
        };
        // Two overlays: Spray, and the ring that samples it.
        let spray_config = spray::Config {
            delta: Duration::from_secs(1),
            ..spray::Config::default()
        };
        let spray = spray::State::new(id, spray_config, ChaCha8Rng::seed_from_u64(i));
        let ring_config = ring::Config {
            delta: Duration::from_millis(500),
            ..ring::Config::default()
        };
        let node = Builder::new(key)
            .transport(transport)
            .overlay(Box::new(Erased::new(spray)))
            .overlay(Box::new(Erased::new(ring::State::new(id, ring_config))))
            .protocol(flood::PROTOCOL)
            .spawn()?;
        // The broadcast reads its own stream and never blocks the node.
        let h = node.handle().clone();
        let f = Arc::new(Mutex::new(Flood::default()));
        let events = h.subscribe(flood::PROTOCOL)?;
        tokio::spawn(flood::serve(h.clone(), flood::PROTOCOL, events, f.clone()));
        // Join Spray through the signaling hub, the ring through the same neighbour.
        if let Some(contact) = h.join(spray::PROTOCOL, hub.attach(id)).await? {
            h.join_via(ring::PROTOCOL, contact).await?;
        }
        peers.push(Peer { node, id, flood: f });
    }
    println!(
        "{n} nodes joined ({})",
        if webrtc { "WebRTC" } else { "memory" }
    );

    let started = Instant::now();
    let mut sorted: Vec<PeerId> = peers.iter().map(|p| p.id).collect();
    sorted.sort_by_key(ring::position);
    loop {
        let mut right = 0;
        for p in &peers {
            let at = sorted.iter().position(|x| *x == p.id).context("listed")?;
            let succ = sorted[(at + 1) % n];
            let got = p
                .node
                .handle()
                .query(ring::PROTOCOL, |r: &ring::State| r.successor())
                .await?;
            right += usize::from(got == Some(succ));
        }
        let cycles = peers[0]
            .node
            .handle()
            .query(ring::PROTOCOL, |r: &ring::State| r.cycles())
            .await?;
        println!("cycle {cycles:>3}: {right}/{n} successors right");
        if right == n {
            println!("ring closed in {:.1?}", started.elapsed());
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "the ring did not close"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let broadcasts = 100u64;
    for id in 0..broadcasts {
        let from = &peers[id as usize % n];
        flood::broadcast(
            from.node.handle(),
            flood::PROTOCOL,
            id,
            b"hello",
            &from.flood,
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (mut reached, mut delivered, mut duplicates) = (0, 0, 0);
    for p in &peers {
        let f = p.flood.lock().unwrap_or_else(|e| e.into_inner());
        reached += (0..broadcasts).filter(|id| f.has(*id)).count();
        delivered += f.delivered;
        duplicates += f.duplicates;
    }
    println!(
        "{broadcasts} broadcasts: reach {:.3}, {:.2} duplicate copies per delivery",
        reached as f64 / (broadcasts as usize * n) as f64,
        duplicates as f64 / delivered.max(1) as f64
    );
    for p in peers {
        p.node.shutdown().await;
    }
    Ok(())
}
