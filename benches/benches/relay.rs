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

// ----- signal -----

/// The stages of the offer's trip, stamped once each (the first time).
const SIGNAL_STAGES: [&str; 6] = [
    "A transport: offer out",
    "A runtime: Relay frame into Connection::send",
    "B runtime: Relay frame out of Connection::recv",
    "B runtime: Relay frame into Connection::send",
    "C runtime: Relay frame out of Connection::recv",
    "C transport: offer in",
];

/// When the watched handshake's offer passed each stage, and its size.
#[derive(Debug, Default)]
struct Stamps {
    at: [Option<Instant>; SIGNAL_STAGES.len()],
    size: usize,
}

impl Stamps {
    fn first(stamps: &Mutex<Stamps>, stage: usize) {
        stamps.lock().expect("stamps").at[stage].get_or_insert_with(Instant::now);
    }
}

/// A transport that stamps the first signal of its handshakes with `watch`
/// (stage `pipe`: sent when dialing, received when accepting), and the first
/// `Relay` frame its connections send (stage `send`) and receive (`recv`).
#[derive(Debug)]
struct Stamped {
    inner: Arc<dyn Transport>,
    watch: Option<PeerId>,
    pipe: usize,
    send: Option<usize>,
    recv: Option<usize>,
    stamps: Arc<Mutex<Stamps>>,
}

#[derive(Debug)]
struct StampedConnection {
    inner: Box<dyn Connection>,
    send: Option<usize>,
    recv: Option<usize>,
    stamps: Arc<Mutex<Stamps>>,
}

fn is_relay(frame: &[u8]) -> bool {
    matches!(wire::decode(frame), Ok(Message::Bridge(m)) if matches!(*m, BridgeMessage::Relay { .. }))
}

#[async_trait]
impl Connection for StampedConnection {
    fn remote(&self) -> PeerId {
        self.inner.remote()
    }

    async fn send(&self, message: Bytes) -> Result<(), ConnectionError> {
        if let Some(stage) = self.send
            && is_relay(&message)
        {
            Stamps::first(&self.stamps, stage);
        }
        self.inner.send(message).await
    }

    async fn recv(&self) -> Result<Bytes, ConnectionError> {
        let m = self.inner.recv().await?;
        if let Some(stage) = self.recv
            && is_relay(&m)
        {
            Stamps::first(&self.stamps, stage);
        }
        Ok(m)
    }

    async fn close(&self) {
        self.inner.close().await
    }
}

/// Passes signals between the runtime's pipe and the inner transport's,
/// stamping the first one of the transport's side (`Some(stage)`).
async fn forward(
    mut outer: SignalPipe,
    mut inner: SignalPipeEnds,
    stamps: Option<(Arc<Mutex<Stamps>>, usize)>,
) {
    loop {
        tokio::select! {
            Some(p) = inner.outbound.recv() => {
                if let Some((s, stage)) = &stamps {
                    let mut s = s.lock().expect("stamps");
                    if s.at[*stage].is_none() {
                        s.at[*stage] = Some(Instant::now());
                        s.size = p.len();
                    }
                }
                if outer.send(p).await.is_err() { break; }
            }
            Some(p) = outer.recv() => {
                if let Some((s, stage)) = &stamps {
                    Stamps::first(s, *stage);
                }
                if inner.inbound.send(p).await.is_err() { break; }
            }
            else => break,
        }
    }
}

impl Stamped {
    fn wrap_pipe(&self, outer: SignalPipe) -> SignalPipe {
        let (pipe, ends) = SignalPipe::new(outer.local(), outer.remote());
        let stamps = (Some(outer.remote()) == self.watch).then(|| (self.stamps.clone(), self.pipe));
        tokio::spawn(forward(outer, ends, stamps));
        pipe
    }

    fn wrap(&self, inner: Box<dyn Connection>) -> Box<dyn Connection> {
        Box::new(StampedConnection {
            inner,
            send: self.send,
            recv: self.recv,
            stamps: self.stamps.clone(),
        })
    }
}

#[async_trait]
impl Transport for Stamped {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn dial(&self, signals: SignalPipe) -> Result<Box<dyn Connection>, TransportError> {
        let pipe = self.wrap_pipe(signals);
        Ok(self.wrap(self.inner.dial(pipe).await?))
    }

    async fn accept(&self, signals: SignalPipe) -> Result<Box<dyn Connection>, TransportError> {
        let pipe = self.wrap_pipe(signals);
        Ok(self.wrap(self.inner.accept(pipe).await?))
    }
}

/// One bridge A → C through B on a fresh trio; returns the offer's stage
/// timestamps and its payload size.
async fn signal_stamps(seed: u64) -> ([Instant; SIGNAL_STAGES.len()], usize) {
    let (a_id, c_id) = (key(3 * seed + 1).peer_id(), key(3 * seed + 3).peer_id());
    let stamps = Arc::new(Mutex::new(Stamps::default()));
    let mut made = 0;
    let transport = || -> Arc<dyn Transport> {
        made += 1;
        let (watch, pipe, send, recv) = match made {
            1 => (Some(c_id), 0, Some(1), None),
            2 => (None, 0, Some(3), Some(2)),
            _ => (Some(a_id), 5, None, Some(4)),
        };
        Arc::new(Stamped {
            inner: webrtc(),
            watch,
            pipe,
            send,
            recv,
            stamps: stamps.clone(),
        })
    };
    let trio = Trio::new(seed, transport).await;
    // The trio's own set-up relayed nothing; start clean anyway.
    *stamps.lock().expect("stamps") = Stamps::default();
    within("bridge", trio.b.handle().bridge(OVERLAY, a_id, c_id))
        .await
        .expect("bridged");
    let s = std::mem::take(&mut *stamps.lock().expect("stamps"));
    trio.shutdown().await;
    (s.at.map(|t| t.expect("every signal stage stamped")), s.size)
}

/// The offer's relay time A → B → C and its payload size.
async fn signal_once(seed: u64) -> (Duration, usize) {
    let (at, size) = signal_stamps(seed).await;
    (at[SIGNAL_STAGES.len() - 1] - at[0], size)
}

/// Bridges `rounds` times and prints the median time of each stage of the
/// offer's trip.
async fn signal_stages(rounds: usize, first_seed: u64) {
    let mut per_stage = vec![Vec::new(); SIGNAL_STAGES.len()];
    for i in 0..rounds {
        let (at, _) = signal_stamps(first_seed + i as u64).await;
        for (s, w) in at.windows(2).enumerate() {
            per_stage[s + 1].push(w[1].saturating_duration_since(w[0]));
        }
        per_stage[0].push(at[SIGNAL_STAGES.len() - 1] - at[0]);
    }
    let mut per_stage = per_stage.into_iter();
    println!(
        "n2n offer relayed A -> B -> C during a bridge, median of {rounds}: total {:?}",
        median(per_stage.next().expect("total"))
    );
    for (name, v) in SIGNAL_STAGES[1..].iter().zip(per_stage) {
        println!("  {:>10.1?}  until {name}", median(v));
    }
}

// ----- stages -----

/// Timestamps of one relayed message, by stage.
#[derive(Debug, Default)]
struct Probe {
    at: Mutex<[Option<Instant>; STAGES.len()]>,
}

const STAGES: [&str; 7] = [
    "A app: send called",
    "A runtime: frame into Connection::send",
    "B runtime: frame out of Connection::recv",
    "B app: Event::Message",
    "B runtime: frame into Connection::send",
    "C runtime: frame out of Connection::recv",
    "C app: Event::Message",
];

impl Probe {
    fn stamp(&self, stage: usize) {
        self.at.lock().expect("probe")[stage] = Some(Instant::now());
    }

    fn take(&self) -> [Option<Instant>; STAGES.len()] {
        std::mem::take(&mut *self.at.lock().expect("probe"))
    }
}

/// A transport whose connections stamp the application frames (at least
/// [`MESSAGE`] bytes: control frames are smaller) they send and receive.
#[derive(Debug)]
struct Probed {
    inner: Arc<dyn Transport>,
    probe: Arc<Probe>,
    send: Option<usize>,
    recv: Option<usize>,
}

#[derive(Debug)]
struct ProbedConnection {
    inner: Box<dyn Connection>,
    probe: Arc<Probe>,
    send: Option<usize>,
    recv: Option<usize>,
}

#[async_trait]
impl Connection for ProbedConnection {
    fn remote(&self) -> PeerId {
        self.inner.remote()
    }

    async fn send(&self, message: Bytes) -> Result<(), ConnectionError> {
        if let Some(stage) = self.send
            && message.len() >= MESSAGE
        {
            self.probe.stamp(stage);
        }
        self.inner.send(message).await
    }

    async fn recv(&self) -> Result<Bytes, ConnectionError> {
        let m = self.inner.recv().await?;
        if let Some(stage) = self.recv
            && m.len() >= MESSAGE
        {
            self.probe.stamp(stage);
        }
        Ok(m)
    }

    async fn close(&self) {
        self.inner.close().await
    }
}

impl Probed {
    fn wrap(&self, inner: Box<dyn Connection>) -> Box<dyn Connection> {
        Box::new(ProbedConnection {
            inner,
            probe: self.probe.clone(),
            send: self.send,
            recv: self.recv,
        })
    }
}

#[async_trait]
impl Transport for Probed {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn dial(&self, signals: SignalPipe) -> Result<Box<dyn Connection>, TransportError> {
        Ok(self.wrap(self.inner.dial(signals).await?))
    }

    async fn accept(&self, signals: SignalPipe) -> Result<Box<dyn Connection>, TransportError> {
        Ok(self.wrap(self.inner.accept(signals).await?))
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Three probed nodes relaying A → B → C, B's application forwarding.
struct N2nProbe {
    trio: Trio,
    probe: Arc<Probe>,
    c_events: n2n_core::node::Events,
}

impl N2nProbe {
    async fn new() -> Self {
        let probe = Arc::new(Probe::default());
        let mut made = 0;
        let transport = || -> Arc<dyn Transport> {
            made += 1;
            let (send, recv) = match made {
                1 => (Some(1), None),
                2 => (Some(4), Some(2)),
                _ => (None, Some(5)),
            };
            Arc::new(Probed {
                inner: webrtc(),
                probe: probe.clone(),
                send,
                recv,
            })
        };
        let mut trio = Trio::new(500, transport).await;
        let (a_id, c_id) = (trio.a.local_peer_id(), trio.c.local_peer_id());
        let mut b_events = trio.b.take_events().expect("events");
        let b = trio.b.handle().clone();
        let b_probe = probe.clone();
        tokio::spawn(async move {
            while let Some(e) = b_events.recv().await {
                if let Event::Message { from, payload, .. } = e
                    && from == a_id
                {
                    b_probe.stamp(3);
                    if b.send(c_id, APP, payload.to_vec()).await.is_err() {
                        break;
                    }
                }
            }
        });
        let mut a_events = trio.a.take_events().expect("events");
        tokio::spawn(async move { while a_events.recv().await.is_some() {} });
        let c_events = trio.c.take_events().expect("events");
        Self {
            trio,
            probe,
            c_events,
        }
    }

    /// One relay: the total, the time of each stage, and the `send` call.
    async fn round(&mut self, message: &[u8]) -> (Vec<Duration>, Duration) {
        let b_id = self.trio.b.local_peer_id();
        self.probe.stamp(0);
        let call = Instant::now();
        self.trio
            .a
            .handle()
            .send(b_id, APP, message.to_vec())
            .await
            .expect("A sends");
        let call = call.elapsed();
        next_message(&mut self.c_events).await;
        self.probe.stamp(6);
        let at: Vec<Instant> = self
            .probe
            .take()
            .iter()
            .map(|t| t.expect("every stage stamped"))
            .collect();
        (durations(&at), call)
    }
}

/// The total, then the time from each stamp to the next.
fn durations(at: &[Instant]) -> Vec<Duration> {
    let mut d = vec![at[at.len() - 1] - at[0]];
    d.extend(at.windows(2).map(|w| w[1].saturating_duration_since(w[0])));
    d
}

/// The bare relay with stamps when B's and C's `on_message` run.
struct BareProbe {
    ab: bare::Pair,
    bc: bare::Pair,
    probe: Arc<Probe>,
    at_c: mpsc::Receiver<Bytes>,
}

impl BareProbe {
    async fn new() -> Self {
        let api = bare::api(false);
        let ab = bare::connect(&api).await.expect("bare A–B");
        let bc = bare::connect(&api).await.expect("bare B–C");
        let probe = Arc::new(Probe::default());
        let (to_c, b_probe) = (bc.ca.clone(), probe.clone());
        ab.cb.on_message(Box::new(move |m| {
            b_probe.stamp(1);
            let to_c = to_c.clone();
            Box::pin(async move {
                let _ = to_c.send(&m.data).await;
            })
        }));
        let (tx, at_c) = mpsc::channel(16);
        let c_probe = probe.clone();
        bc.cb.on_message(Box::new(move |m| {
            c_probe.stamp(2);
            let _ = tx.try_send(m.data);
            Box::pin(async {})
        }));
        Self {
            ab,
            bc,
            probe,
            at_c,
        }
    }

    async fn round(&mut self, message: &Bytes) -> Vec<Duration> {
        self.probe.stamp(0);
        self.ab.ca.send(message).await.expect("bare A sends");
        within("bare relay", self.at_c.recv())
            .await
            .expect("bare C");
        self.probe.stamp(3);
        let at: Vec<Instant> = self.probe.take()[..4]
            .iter()
            .map(|t| t.expect("every stage stamped"))
            .collect();
        durations(&at)
    }
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

/// Relays `rounds` messages through probed n2n nodes and through the bare
/// crate, alternating (so that both see the same load), and prints the
/// median time of each stage.
async fn relay_stages(rounds: usize) {
    let mut n2n = N2nProbe::new().await;
    let mut bare = BareProbe::new().await;
    let message = Bytes::from(vec![7u8; MESSAGE]);
    let mut n2n_stages = vec![Vec::new(); STAGES.len()];
    let mut bare_stages = vec![Vec::new(); 4];
    let (mut send_call, mut ratio) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (n, call) = n2n.round(&message).await;
        let b = bare.round(&message).await;
        ratio.push(n[0].as_secs_f64() / b[0].as_secs_f64());
        for (all, d) in n2n_stages.iter_mut().zip(n) {
            all.push(d);
        }
        for (all, d) in bare_stages.iter_mut().zip(b) {
            all.push(d);
        }
        send_call.push(call);
    }
    print_stages(
        &format!("n2n 1 KiB relay A -> B -> C, median of {rounds} (alternating with bare)"),
        &STAGES[1..],
        n2n_stages,
    );
    println!(
        "  (A's NodeHandle::send call itself: {:.1?})",
        median(send_call)
    );
    print_stages(
        &format!("bare 1 KiB relay A -> B -> C, median of {rounds}"),
        &[
            "B on_message (hop A -> B)",
            "C on_message (hop B -> C)",
            "bench task has it",
        ],
        bare_stages,
    );
    ratio.sort_by(f64::total_cmp);
    println!(
        "  median of the per-round ratios n2n / bare: {:.2}",
        ratio[ratio.len() / 2]
    );
    n2n.trio.shutdown().await;
    bare.ab.close().await;
    bare.bc.close().await;
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
