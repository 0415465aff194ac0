//! Throughput of one connection over real WebRTC on loopback: 64 MiB of
//! application data one way, n2n against the bare `webrtc` crate.
//!
//! - `throughput/n2n_1MiB`: two nodes (`Builder` + `WebRtcTransport`)
//!   connected directly; A sends 1 MiB application messages
//!   (`NodeHandle::send`, which the transport cuts into 16 KiB chunks), and
//!   C's application counts the bytes of its `Event::Message`s.
//! - `throughput/n2n_16KiB`: the same with 16 KiB application messages.
//! - `throughput/bare`: one bare data channel (detached), 16 KiB messages (the
//!   bare channel breaks on 64 KiB ones and refuses 1 MiB ones), at most 1 MiB
//!   unacknowledged (a buffered-amount threshold, as the n2n transport's
//!   default `max_buffered`).
//!
//! After the criterion group, under `cargo bench`, six rounds alternate an
//! n2n and a bare transfer, so that both see the same load on a shared
//! machine, and the median of their ratio is printed.
//!
//! Criterion reports bytes per second. Under `cargo test` (no `--bench`)
//! each body moves 1 MiB instead of 64 MiB.
//!
//! Run: `cargo bench -p benches --bench throughput`

use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::n2n::{APP, OVERLAY, next_message, node, wait_neighbours, webrtc};
use benches::{bare, bench_mode, runtime, within};
use bytes::Bytes;
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use n2n_core::memory::MemorySignalingHub;
use n2n_core::node::Node;
use n2n_transport_webrtc::webrtc::data::data_channel::DataChannel;
use tokio::sync::{Mutex, Notify};

const BARE_MESSAGE: usize = 16 * 1024;
const MAX_BUFFERED: usize = 1 << 20;

fn total_bytes() -> usize {
    if bench_mode() { 64 << 20 } else { 1 << 20 }
}

/// A connected to C directly.
struct N2nPair {
    a: Node,
    c: Node,
    c_events: Mutex<n2n_core::node::Events>,
}

impl N2nPair {
    async fn new() -> Self {
        let hub = MemorySignalingHub::new();
        let a = node(1, webrtc());
        let mut c = node(2, webrtc());
        let (a_id, c_id) = (a.local_peer_id(), c.local_peer_id());
        c.handle().attach_signaling(hub.attach(c_id)).await;
        within(
            "A connects to C",
            a.handle().connect(c_id, hub.attach(a_id), Some(OVERLAY)),
        )
        .await
        .expect("connects");
        wait_neighbours(&c, 1).await;
        let c_events = Mutex::new(c.take_events().expect("events"));
        Self { a, c, c_events }
    }

    async fn run(&self, iters: u64, message: usize) -> Duration {
        let c_id = self.c.local_peer_id();
        let mut c_events = self.c_events.lock().await;
        let payload = vec![9u8; message];
        let total = total_bytes();
        let mut elapsed = Duration::ZERO;
        for _ in 0..iters {
            let start = Instant::now();
            let send = async {
                for _ in 0..total / message {
                    self.a
                        .handle()
                        .send(c_id, APP, payload.clone())
                        .await
                        .expect("A sends");
                }
            };
            let recv = async {
                let mut got = 0;
                while got < total {
                    got += next_message(&mut c_events).await.1.len();
                }
            };
            within("n2n transfer", async { tokio::join!(send, recv) }).await;
            elapsed += start.elapsed();
        }
        elapsed
    }
}

/// One bare detached channel with a buffered-amount threshold.
struct BarePair {
    pair: bare::Pair,
    da: Arc<DataChannel>,
    db: Arc<DataChannel>,
    low: Arc<Notify>,
}

impl BarePair {
    async fn new() -> Self {
        let pair = bare::connect(&bare::api(true)).await.expect("bare pair");
        let (da, db) = pair.detach().await.expect("detached");
        let low = Arc::new(Notify::new());
        da.set_buffered_amount_low_threshold(MAX_BUFFERED / 2);
        {
            let low = low.clone();
            da.on_buffered_amount_low(Box::new(move || {
                low.notify_one();
                Box::pin(async {})
            }));
        }
        Self { pair, da, db, low }
    }

    async fn run(&self, iters: u64) -> Duration {
        let m = Bytes::from(vec![9u8; BARE_MESSAGE]);
        let total = total_bytes();
        let mut elapsed = Duration::ZERO;
        for _ in 0..iters {
            let start = Instant::now();
            let send = async {
                for _ in 0..total / m.len() {
                    while self.da.buffered_amount() + m.len() > MAX_BUFFERED {
                        // The notification can come between the check and the wait.
                        let _ = tokio::time::timeout(Duration::from_millis(5), self.low.notified())
                            .await;
                    }
                    self.da.write(&m).await.expect("bare write");
                }
            };
            let recv = async {
                let mut buf = vec![0u8; 64 * 1024];
                let mut got = 0;
                while got < total {
                    got += self.db.read(&mut buf).await.expect("bare read");
                }
            };
            within("bare transfer", async { tokio::join!(send, recv) }).await;
            elapsed += start.elapsed();
        }
        elapsed
    }
}

fn mib_per_s(d: Duration) -> f64 {
    total_bytes() as f64 / f64::from(1 << 20) / d.as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// CPU time this process has used (user and system), from `/proc/self/stat`
/// (zero where there is none).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, in 1/100 s.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// Alternates n2n (1 MiB messages) and bare transfers, so that both see the
/// same load on a shared machine, and prints the medians and their ratio.
async fn paired(n2n: &N2nPair, bare: &BarePair, rounds: usize) {
    let (mut n, mut b, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    let (mut cpu_n, mut cpu_b) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..rounds {
        let cpu = cpu_time();
        let tn = mib_per_s(n2n.run(1, 1 << 20).await);
        let between = cpu_time();
        let tb = mib_per_s(bare.run(1).await);
        cpu_n += between - cpu;
        cpu_b += cpu_time() - between;
        n.push(tn);
        b.push(tb);
        ratio.push(tn / tb);
    }
    let mib = (rounds * (total_bytes() >> 20)) as f64;
    println!(
        "  CPU time per MiB (both ends, this process): n2n {:.1} ms, bare {:.1} ms",
        cpu_n.as_secs_f64() * 1e3 / mib,
        cpu_b.as_secs_f64() * 1e3 / mib
    );
    println!(
        "throughput, n2n_1MiB and bare alternating, {rounds} rounds of {} MiB: \
         median n2n {:.1} MiB/s, bare {:.1} MiB/s, median ratio {:.2}",
        total_bytes() >> 20,
        median(n),
        median(b),
        median(ratio)
    );
}

fn throughput(c: &mut Criterion) {
    let rt = runtime();
    let n2n = rt.block_on(N2nPair::new());
    let bare = rt.block_on(BarePair::new());
    let mut g = c.benchmark_group("throughput");
    g.throughput(Throughput::Bytes(total_bytes() as u64))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5));
    g.bench_function("n2n_1MiB", |b| {
        b.to_async(&rt).iter_custom(|iters| n2n.run(iters, 1 << 20))
    });
    g.bench_function("n2n_16KiB", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| n2n.run(iters, 16 << 10))
    });
    g.bench_function("bare", |b| {
        b.to_async(&rt).iter_custom(|iters| bare.run(iters))
    });
    g.finish();
    rt.block_on(paired(&n2n, &bare, if bench_mode() { 6 } else { 1 }));
    rt.block_on(async {
        within("shutdown", n2n.a.shutdown()).await;
        within("shutdown", n2n.c.shutdown()).await;
        bare.pair.close().await;
    });
}

criterion_group!(benches, throughput);
criterion_main!(benches);
