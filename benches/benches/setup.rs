//! Connection set-up through the node runtime: direct (memory signaling) against
//! bridged through a neighbour, on each linked transport.
//!
//! Run: `cargo bench -p benches --bench setup`

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use n2n_core::memory::{MemoryNetwork, MemorySignalingHub};
use n2n_core::node::{Builder, Config, Node};
use n2n_core::{Keypair, ProtocolId, Transport};
use rand::SeedableRng;

const O: ProtocolId = ProtocolId::from_name("bench");

fn node(seed: u64, transport: Arc<dyn Transport>) -> Node {
    let key = Keypair::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    Builder::new(key)
        .config(Config {
            seed: Some(seed),
            ..Config::default()
        })
        .transport(transport)
        .protocol(O)
        .spawn()
        .expect("transport set")
}

/// Times `iters` set-ups; each builds fresh nodes outside the timed part.
async fn direct(iters: u64, transport: &dyn Fn() -> Arc<dyn Transport>) -> Duration {
    let mut total = Duration::ZERO;
    for i in 0..iters {
        let hub = MemorySignalingHub::new();
        let a = node(2 * i + 1, transport());
        let c = node(2 * i + 2, transport());
        let (a_id, c_id) = (a.local_peer_id(), c.local_peer_id());
        let sa = hub.attach(a_id);
        c.handle().attach_signaling(hub.attach(c_id)).await;
        let start = Instant::now();
        a.handle()
            .connect(c_id, sa, Some(O))
            .await
            .expect("connects");
        total += start.elapsed();
        a.shutdown().await;
        c.shutdown().await;
    }
    total
}

async fn bridged(iters: u64, transport: &dyn Fn() -> Arc<dyn Transport>) -> Duration {
    let mut total = Duration::ZERO;
    for i in 0..iters {
        let hub = MemorySignalingHub::new();
        let a = node(3 * i + 1, transport());
        let b = node(3 * i + 2, transport());
        let c = node(3 * i + 3, transport());
        let (a_id, b_id, c_id) = (a.local_peer_id(), b.local_peer_id(), c.local_peer_id());
        b.handle().attach_signaling(hub.attach(b_id)).await;
        a.handle()
            .connect(b_id, hub.attach(a_id), Some(O))
            .await
            .expect("a joins");
        c.handle()
            .connect(b_id, hub.attach(c_id), Some(O))
            .await
            .expect("c joins");
        // The dialers finish first; wait until B has registered both neighbours.
        while b.handle().snapshot().await.neighbours.len() < 2 {
            tokio::task::yield_now().await;
        }
        let start = Instant::now();
        b.handle().bridge(O, a_id, c_id).await.expect("bridged");
        total += start.elapsed();
        for n in [a, b, c] {
            n.shutdown().await;
        }
    }
    total
}

fn setup(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let network = MemoryNetwork::new();
    let memory = move || -> Arc<dyn Transport> { Arc::new(network.transport()) };
    let mut g = c.benchmark_group("setup_memory");
    g.bench_function("direct", |b| {
        b.to_async(&rt).iter_custom(|iters| direct(iters, &memory))
    });
    g.bench_function("bridged", |b| {
        b.to_async(&rt).iter_custom(|iters| bridged(iters, &memory))
    });
    g.finish();
}

criterion_group!(benches, setup);
criterion_main!(benches);
