//! Relay latency over real WebRTC data channels on loopback: A → B → C, where
//! B forwards, against the bare `webrtc` crate doing the same two hops.
//!
//! - `relay_1KiB/n2n`: three nodes (`Builder` + `WebRtcTransport`), A and C
//!   neighbours of B. A sends one 1 KiB application message to B; B's
//!   application, on the `Event::Message`, sends it on to C; the time runs
//!   until C's application has the `Event::Message`.
//! - `relay_1KiB/bare`: two bare peer-connection pairs A–B and B–C, one data
//!   channel each; B's `on_message` sends the message on to C, whose
//!   `on_message` hands it to the bench task.
//! - `relay_signal/n2n`: the offer of a bridged handshake, relayed A → B → C
//!   by B's node core (the bridge, `n2n_core::bridge`): from
//!   the moment A's transport hands the offer to its runtime (which signs it
//!   and sends it to B inside a `Relay` message) until C's transport receives
//!   it (after B relayed it and C's runtime verified the signature). A
//!   wrapper around the transports of A and C takes the two timestamps. Each
//!   sample builds a fresh trio, so this bench runs few iterations.
//! - `relay_signal/bare`: the same two bare hops as `relay_1KiB/bare`, with a
//!   message as large as the offer payload.
//!
//! After the criterion groups, under `cargo bench`, the bench prints where the
//! time of one 1 KiB relay goes, stage by stage (median of 2000 messages,
//! n2n and bare alternating):
//! for n2n, timestamps taken by a wrapper around each node's connections
//! (when a frame enters `Connection::send`, when it leaves
//! `Connection::recv`) and by the applications; for the bare crate, when each
//! `on_message` runs. Then the same for the offer of a bridge (median of 30
//! bridges): when it leaves A's transport, when its `Relay` frame enters and
//! leaves each connection on the way, when C's transport gets it.
//!
//! Run: `cargo bench -p benches --bench relay`

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use benches::n2n::{APP, OVERLAY, Trio, key, next_message, webrtc};
use benches::{bare, bench_mode, runtime, within};
use bytes::Bytes;
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use n2n_core::PeerId;
use n2n_core::node::Event;
use n2n_core::transport::{
    Connection, ConnectionError, SignalPipe, SignalPipeEnds, Transport, TransportError,
};
use n2n_core::wire::{self, BridgeMessage, Message};
use tokio::sync::mpsc;

mod signal;
mod stages;

use signal::{signal_once, signal_stages};
use stages::relay_stages;

const MESSAGE: usize = 1024;

// ----- application message -----

/// A, B and C with B's application forwarding A's messages to C.
struct N2nRelay {
    trio: Trio,
    c_events: tokio::sync::Mutex<n2n_core::node::Events>,
}

impl N2nRelay {
    async fn new() -> Self {
        let mut trio = Trio::new(0, webrtc).await;
        let (a_id, c_id) = (trio.a.local_peer_id(), trio.c.local_peer_id());
        let mut b_events = trio.b.take_events().expect("events");
        let b = trio.b.handle().clone();
        tokio::spawn(async move {
            while let Some(e) = b_events.recv().await {
                if let Event::Message { from, payload, .. } = e
                    && from == a_id
                    && b.send(c_id, APP, payload.to_vec()).await.is_err()
                {
                    break;
                }
            }
        });
        let mut a_events = trio.a.take_events().expect("events");
        tokio::spawn(async move { while a_events.recv().await.is_some() {} });
        let c_events = tokio::sync::Mutex::new(trio.c.take_events().expect("events"));
        Self { trio, c_events }
    }

    async fn run(&self, iters: u64, message: &[u8]) -> Duration {
        let b_id = self.trio.b.local_peer_id();
        let mut c_events = self.c_events.lock().await;
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let start = Instant::now();
            self.trio
                .a
                .handle()
                .send(b_id, APP, message.to_vec())
                .await
                .expect("A sends");
            let (_, got) = next_message(&mut c_events).await;
            total += start.elapsed();
            assert_eq!(got.len(), message.len());
        }
        total
    }
}

/// Bare pairs A–B and B–C; B's `on_message` forwards to C.
struct BareRelay {
    ab: bare::Pair,
    bc: bare::Pair,
    at_c: tokio::sync::Mutex<mpsc::Receiver<Bytes>>,
}

impl BareRelay {
    async fn new() -> Self {
        let api = bare::api(false);
        let ab = bare::connect(&api).await.expect("bare A–B");
        let bc = bare::connect(&api).await.expect("bare B–C");
        let to_c = bc.ca.clone();
        ab.cb.on_message(Box::new(move |m| {
            let to_c = to_c.clone();
            Box::pin(async move {
                let _ = to_c.send(&m.data).await;
            })
        }));
        let (tx, rx) = mpsc::channel(16);
        bc.cb.on_message(Box::new(move |m| {
            let _ = tx.try_send(m.data);
            Box::pin(async {})
        }));
        Self {
            ab,
            bc,
            at_c: tokio::sync::Mutex::new(rx),
        }
    }

    async fn run(&self, iters: u64, message: &Bytes) -> Duration {
        let mut at_c = self.at_c.lock().await;
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let start = Instant::now();
            self.ab.ca.send(message).await.expect("bare A sends");
            let got = within("bare relay", at_c.recv()).await.expect("bare C");
            total += start.elapsed();
            assert_eq!(got.len(), message.len());
        }
        total
    }

    async fn close(self) {
        self.ab.close().await;
        self.bc.close().await;
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The total, then the time from each stamp to the next.
fn durations(at: &[Instant]) -> Vec<Duration> {
    let mut d = vec![at[at.len() - 1] - at[0]];
    d.extend(at.windows(2).map(|w| w[1].saturating_duration_since(w[0])));
    d
}

fn print_stages(title: &str, names: &[&str], per_stage: Vec<Vec<Duration>>) {
    let mut per_stage = per_stage.into_iter();
    println!(
        "{title}: total {:.1?}",
        median(per_stage.next().expect("total"))
    );
    for (name, v) in names.iter().zip(per_stage) {
        println!("  {:>10.1?}  until {name}", median(v));
    }
}

fn relay(c: &mut Criterion) {
    let rt = runtime();
    let message = Bytes::from(vec![7u8; MESSAGE]);

    let n2n = rt.block_on(N2nRelay::new());
    let bare = rt.block_on(BareRelay::new());
    let mut g = c.benchmark_group("relay_1KiB");
    if bench_mode() {
        g.measurement_time(Duration::from_secs(4))
            .warm_up_time(Duration::from_secs(1));
    }
    g.bench_function("n2n", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| n2n.run(iters, &message))
    });
    g.bench_function("bare", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| bare.run(iters, &message))
    });
    g.finish();
    rt.block_on(n2n.trio.shutdown());

    // Each sample of the signal relay builds three nodes (about 30 ms) to time
    // one hop pair of well under a millisecond: flat sampling with a short
    // target time keeps it at one or two bridges per sample.
    let (_, offer) = rt.block_on(signal_once(1000));
    let signal = Bytes::from(vec![7u8; offer]);
    let seed = std::cell::Cell::new(1001);
    let mut g = c.benchmark_group("relay_signal");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_millis(2));
    g.bench_function("n2n", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let first = seed.get();
            seed.set(first + iters);
            async move {
                let mut total = Duration::ZERO;
                for i in 0..iters {
                    total += signal_once(first + i).await.0;
                }
                total
            }
        })
    });
    g.measurement_time(Duration::from_millis(100));
    g.bench_function("bare", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| bare.run(iters, &signal))
    });
    g.finish();
    println!("relay_signal: offer payload {offer} bytes");
    rt.block_on(bare.close());

    let rounds = if bench_mode() { 2000 } else { 10 };
    rt.block_on(async {
        relay_stages(rounds).await;
        signal_stages(if bench_mode() { 30 } else { 1 }, 5000).await;
    });
}

criterion_group!(benches, relay);
criterion_main!(benches);
