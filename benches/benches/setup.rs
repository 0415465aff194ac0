//! Connection set-up: from the offer to the first application message
//! delivered.
//!
//! Over real WebRTC on loopback (group `setup_webrtc`), each sample opens fresh
//! connections between fresh peers (built outside the timed part):
//!
//! - `bare`: the bare `webrtc` crate, offer and answer handed over in memory
//!   after gathering; from `create_offer` until the far end has read the first
//!   message from its (detached) data channel.
//! - `n2n_direct_memory`: two nodes (`Builder` + `WebRtcTransport`), A
//!   connects to C through memory signaling (`MemorySignalingHub`), then sends
//!   one application message; the time runs from `connect` until C's
//!   application has the `Event::Message`.
//! - `n2n_direct_ws`: the same through the WebSocket signaling server
//!   (`n2n_signal_ws::Server` on 127.0.0.1:0 in this process, `WsSignaling`
//!   clients already joined to its room).
//! - `n2n_bridged`: A and C are neighbours of B (not of each other); from
//!   B's `bridge(A → C)` (offer and answer relayed by B over its WebRTC
//!   connections) until C has A's first message over the new direct
//!   connection.
//!
//! Group `setup_memory` is the node runtime alone, on the in-memory transport:
//! `direct` times A's `connect` to C, `bridged` times B's `bridge(A → C)`
//! (no message sent).
//!
//! Run: `cargo bench -p benches --bench setup`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use benches::n2n::{self, APP, Trio, key, next_message, webrtc};
use benches::{bare, within};
use bytes::Bytes;
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use n2n_core::memory::{MemoryNetwork, MemorySignalingHub};
use n2n_core::node::{Builder, Config, Node};
use n2n_core::{Keypair, ProtocolId, Signaling, Transport};
use n2n_signal_ws::{ClientConfig, Server, ServerConfig, WsSignaling};
use n2n_transport_webrtc::webrtc::api::API;
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
        within("shutdown", a.shutdown()).await;
        within("shutdown", c.shutdown()).await;
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
        within("B registers A and C", async {
            while b.handle().snapshot().await.neighbours.len() < 2 {
                tokio::task::yield_now().await;
            }
        })
        .await;
        let start = Instant::now();
        b.handle().bridge(O, a_id, c_id).await.expect("bridged");
        total += start.elapsed();
        for n in [a, b, c] {
            within("shutdown", n.shutdown()).await;
        }
    }
    total
}

fn setup(c: &mut Criterion) {
    let rt = benches::runtime();
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

// ----- over WebRTC -----

/// Seeds of the keys of the WebRTC set-ups, fresh for every pair of peers
/// (a signaling server refuses a peer id that is still joined).
static SEED: AtomicU64 = AtomicU64::new(1000);

fn seeds(n: u64) -> u64 {
    SEED.fetch_add(n, Ordering::Relaxed)
}

async fn bare_once(api: &API) -> Duration {
    let start = Instant::now();
    let pair = bare::connect(api).await.expect("bare connects");
    let (da, db) = pair.detach().await.expect("detached");
    da.write(&Bytes::from_static(b"first"))
        .await
        .expect("write");
    let mut buf = vec![0u8; 1024];
    within("bare first message", db.read(&mut buf))
        .await
        .expect("read");
    let elapsed = start.elapsed();
    pair.close().await;
    elapsed
}

/// A connects to C through `sa` (C listens on its own path), sends one
/// message; the time until C has it.
async fn n2n_once(a: Node, mut c: Node, sa: Arc<dyn Signaling>) -> Duration {
    let c_id = c.local_peer_id();
    let mut events = c.take_events().expect("events");
    let start = Instant::now();
    within("connect", a.handle().connect(c_id, sa, Some(O)))
        .await
        .expect("connects");
    a.handle()
        .send(c_id, APP, &b"first"[..])
        .await
        .expect("sends");
    next_message(&mut events).await;
    let elapsed = start.elapsed();
    within("shutdown", a.shutdown()).await;
    within("shutdown", c.shutdown()).await;
    elapsed
}

async fn n2n_memory(iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let seed = seeds(2);
        let hub = MemorySignalingHub::new();
        let a = n2n::node(seed, webrtc());
        let c = n2n::node(seed + 1, webrtc());
        let sa = hub.attach(a.local_peer_id());
        c.handle()
            .attach_signaling(hub.attach(c.local_peer_id()))
            .await;
        total += n2n_once(a, c, sa).await;
    }
    total
}

async fn n2n_ws(iters: u64, url: &str) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let seed = seeds(2);
        let join = |seed| async move {
            within(
                "ws join",
                WsSignaling::connect(url, "bench", &key(seed), ClientConfig::default()),
            )
            .await
            .expect("joins the server")
        };
        let (sa, sc) = (join(seed).await, join(seed + 1).await);
        let a = n2n::node(seed, webrtc());
        let c = n2n::node(seed + 1, webrtc());
        c.handle().attach_signaling(sc.clone()).await;
        total += n2n_once(a, c, sa.clone()).await;
        sa.close();
        sc.close();
    }
    total
}

async fn n2n_bridged(iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let mut trio = Trio::new(seeds(1), webrtc).await;
        let (a_id, c_id) = (trio.a.local_peer_id(), trio.c.local_peer_id());
        let mut events = trio.c.take_events().expect("events");
        let start = Instant::now();
        within("bridge", trio.b.handle().bridge(O, a_id, c_id))
            .await
            .expect("bridged");
        trio.a
            .handle()
            .send(c_id, APP, &b"first"[..])
            .await
            .expect("sends");
        next_message(&mut events).await;
        total += start.elapsed();
        trio.shutdown().await;
    }
    total
}

fn setup_webrtc(c: &mut Criterion) {
    let rt = benches::runtime();
    let api = bare::api(true);
    let server = rt
        .block_on(Server::bind(ServerConfig {
            listen: "127.0.0.1:0".parse().expect("address"),
            seed: Some(1),
            ..ServerConfig::default()
        }))
        .expect("signaling server");
    let url = server.url();
    let mut g = c.benchmark_group("setup_webrtc");
    // A sample opens tens of connections; flat sampling keeps the count even.
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(1));
    g.bench_function("bare", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let api = &api;
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += bare_once(api).await;
                }
                total
            }
        })
    });
    g.bench_function("n2n_direct_memory", |b| {
        b.to_async(&rt).iter_custom(n2n_memory)
    });
    g.bench_function("n2n_direct_ws", |b| {
        b.to_async(&rt).iter_custom(|iters| n2n_ws(iters, &url))
    });
    g.bench_function("n2n_bridged", |b| b.to_async(&rt).iter_custom(n2n_bridged));
    g.finish();
    rt.block_on(server.shutdown());
}

criterion_group!(benches, setup, setup_webrtc);
criterion_main!(benches);
