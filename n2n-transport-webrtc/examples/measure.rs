//! Measures the WebRTC transport on loopback next to the bare `webrtc` crate,
//! in the same run: set-up time, round-trip time of small messages, one-way
//! throughput, and memory per connection, with the ratio of n2n to bare.
//!
//! Run (release build; takes about half a minute):
//!
//! ```sh
//! cargo run --release -p n2n-transport-webrtc --example measure
//! ```
//!
//! - **Set-up**: n2n from `dial` until both `dial` and `accept` returned
//!   (signals through a forwarding task, candidates in the offer and answer
//!   or trickled); bare from `create_offer` until both ends' channels are open
//!   (offer and answer handed over in memory after gathering, the usual way to
//!   use the crate without a signaling server). Then the first message echoed.
//! - **Round trip**: a 32-byte message there and back, p50 and p99.
//! - **Throughput**: n2n with 1 MiB application messages (cut into 16 KiB
//!   chunks); bare with 16 KiB messages (the bare channel breaks on 64 KiB ones
//!   and refuses 1 MiB ones), both with at most 1 MiB unacknowledged.
//! - **Memory**: growth of the resident set per open connection, both ends
//!   counted (they live in the same process), over 100 connections; and the
//!   resident set after each of 5 cycles of opening and closing 100
//!   connections. The bare figure is taken twice: with no read pending (the
//!   ends could not receive), and with a task per end keeping a read pending
//!   with a 16 KiB buffer, as an application of detached channels must (n2n
//!   keeps one such reader per connection end). Each memory figure comes from
//!   a fresh child process (this program run with `--child <what>`), so that
//!   memory one side freed cannot hide the other's.
//!
//! Both use the same settings: host candidates on loopback only, no mDNS, no
//! STUN.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use bytes::Bytes;
use n2n_core::transport::{Connection, SignalPipe, Transport};
use n2n_core::{Keypair, PeerId};
use n2n_transport_webrtc::webrtc;
use n2n_transport_webrtc::{Config, WebRtcTransport};
use rand::SeedableRng;
use tokio::sync::{Notify, mpsc};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::{API, APIBuilder};
use webrtc::data::data_channel::DataChannel;
use webrtc::data_channel::RTCDataChannel;
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice::network_type::NetworkType;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::configuration::RTCConfiguration;

const SETUP_ROUNDS: usize = 30;
const RTT_ROUNDS: usize = 2000;
const THROUGHPUT_BYTES: usize = 64 << 20;
const MEMORY_CONNECTIONS: usize = 100;

fn key(seed: u64) -> Keypair {
    Keypair::generate(&mut rand::rngs::StdRng::seed_from_u64(seed))
}

fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Median, minimum and maximum of set-up samples, in ms.
fn spread(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    (
        ms(quantile(&v, 0.5)),
        ms(v[0]),
        ms(*v.last().expect("samples")),
    )
}

// ----- n2n -----

struct N2n {
    ta: WebRtcTransport,
    tb: WebRtcTransport,
    a: PeerId,
    b: PeerId,
}

/// Two pipes whose signals are forwarded to each other.
fn wire(a: PeerId, b: PeerId) -> (SignalPipe, SignalPipe) {
    n2n_core::memory::wired_pipes(a, b, b, a)
}

impl N2n {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            ta: WebRtcTransport::new(Config::default())?,
            tb: WebRtcTransport::new(Config::default())?,
            a: key(1).peer_id(),
            b: key(2).peer_id(),
        })
    }

    async fn connect(&self) -> anyhow::Result<(Box<dyn Connection>, Box<dyn Connection>)> {
        let (dp, ap) = wire(self.a, self.b);
        let (ca, cb) = tokio::join!(self.ta.dial(dp), self.tb.accept(ap));
        Ok((ca?, cb?))
    }
}

async fn n2n_echo(ca: &dyn Connection, cb: &dyn Connection, m: Bytes) -> anyhow::Result<()> {
    ca.send(m).await?;
    let got = cb.recv().await?;
    cb.send(got).await?;
    ca.recv().await?;
    Ok(())
}

async fn n2n_setup(n: &N2n) -> anyhow::Result<(Duration, Duration)> {
    let start = Instant::now();
    let (ca, cb) = n.connect().await?;
    let open = start.elapsed();
    n2n_echo(&*ca, &*cb, Bytes::from_static(b"first")).await?;
    let first = start.elapsed();
    ca.close().await;
    cb.close().await;
    Ok((open, first))
}

async fn n2n_rtt(ca: &dyn Connection, cb: &dyn Connection) -> anyhow::Result<Vec<Duration>> {
    let m = Bytes::from(vec![7u8; 32]);
    let mut v = Vec::with_capacity(RTT_ROUNDS);
    for _ in 0..RTT_ROUNDS {
        let t = Instant::now();
        n2n_echo(ca, cb, m.clone()).await?;
        v.push(t.elapsed());
    }
    Ok(v)
}

async fn n2n_throughput(ca: &dyn Connection, cb: &dyn Connection) -> anyhow::Result<f64> {
    let m = Bytes::from(vec![9u8; 1 << 20]);
    let count = THROUGHPUT_BYTES / m.len();
    let start = Instant::now();
    let (sent, got) = tokio::join!(
        async {
            for _ in 0..count {
                ca.send(m.clone()).await?;
            }
            anyhow::Ok(())
        },
        async {
            let mut total = 0;
            for _ in 0..count {
                total += cb.recv().await?.len();
            }
            anyhow::Ok(total)
        }
    );
    sent?;
    let total = got?;
    Ok(total as f64 / (1 << 20) as f64 / start.elapsed().as_secs_f64())
}

// ----- bare webrtc -----

fn bare_api() -> API {
    n2n_transport_webrtc::install_default_crypto_provider();
    let mut se = SettingEngine::default();
    se.detach_data_channels();
    se.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);
    se.set_network_types(vec![NetworkType::Udp4]);
    se.set_include_loopback_candidate(true);
    se.set_ip_filter(Box::new(|ip| ip.is_loopback()));
    APIBuilder::new().with_setting_engine(se).build()
}

struct BarePair {
    pa: RTCPeerConnection,
    pb: RTCPeerConnection,
    da: Arc<DataChannel>,
    db: Arc<DataChannel>,
}

fn on_open_detach(dc: &Arc<RTCDataChannel>, tx: mpsc::Sender<Arc<DataChannel>>) {
    let weak = Arc::downgrade(dc);
    dc.on_open(Box::new(move || {
        let (weak, tx) = (weak.clone(), tx.clone());
        Box::pin(async move {
            if let Some(dc) = weak.upgrade()
                && let Ok(d) = dc.detach().await
            {
                let _ = tx.try_send(d);
            }
        })
    }));
}

async fn bare_connect(api: &API) -> anyhow::Result<BarePair> {
    let pa = api.new_peer_connection(RTCConfiguration::default()).await?;
    let pb = api.new_peer_connection(RTCConfiguration::default()).await?;
    let (ta, mut ra) = mpsc::channel(1);
    let (tb, mut rb) = mpsc::channel(1);
    let dc = pa.create_data_channel("bench", None).await?;
    on_open_detach(&dc, ta);
    pb.on_data_channel(Box::new(move |dc| {
        on_open_detach(&dc, tb.clone());
        Box::pin(async {})
    }));
    let offer = pa.create_offer(None).await?;
    let mut gathered = pa.gathering_complete_promise().await;
    pa.set_local_description(offer).await?;
    let _ = gathered.recv().await;
    let offer = pa.local_description().await.context("offer")?;
    pb.set_remote_description(offer).await?;
    let answer = pb.create_answer(None).await?;
    let mut gathered = pb.gathering_complete_promise().await;
    pb.set_local_description(answer).await?;
    let _ = gathered.recv().await;
    let answer = pb.local_description().await.context("answer")?;
    pa.set_remote_description(answer).await?;
    let (da, db) = tokio::time::timeout(Duration::from_secs(10), async {
        (ra.recv().await, rb.recv().await)
    })
    .await?;
    Ok(BarePair {
        pa,
        pb,
        da: da.ok_or_else(|| anyhow!("channel a"))?,
        db: db.ok_or_else(|| anyhow!("channel b"))?,
    })
}

async fn bare_echo(da: &DataChannel, db: &DataChannel, m: &Bytes) -> anyhow::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    da.write(m).await?;
    let n = db.read(&mut buf).await?;
    db.write(&Bytes::copy_from_slice(&buf[..n])).await?;
    da.read(&mut buf).await?;
    Ok(())
}

async fn bare_close(p: BarePair) {
    let _ = p.pa.close().await;
    let _ = p.pb.close().await;
}

async fn bare_setup(api: &API) -> anyhow::Result<(Duration, Duration)> {
    let start = Instant::now();
    let p = bare_connect(api).await?;
    let open = start.elapsed();
    bare_echo(&p.da, &p.db, &Bytes::from_static(b"first")).await?;
    let first = start.elapsed();
    bare_close(p).await;
    Ok((open, first))
}

async fn bare_rtt(p: &BarePair) -> anyhow::Result<Vec<Duration>> {
    let m = Bytes::from(vec![7u8; 32]);
    let mut v = Vec::with_capacity(RTT_ROUNDS);
    for _ in 0..RTT_ROUNDS {
        let t = Instant::now();
        bare_echo(&p.da, &p.db, &m).await?;
        v.push(t.elapsed());
    }
    Ok(v)
}

async fn bare_throughput(p: &BarePair) -> anyhow::Result<f64> {
    const MAX_BUFFERED: usize = 1 << 20;
    let m = Bytes::from(vec![9u8; 16 * 1024]);
    let count = THROUGHPUT_BYTES / m.len();
    let low = Arc::new(Notify::new());
    p.da.set_buffered_amount_low_threshold(MAX_BUFFERED / 2);
    {
        let low = Arc::clone(&low);
        p.da.on_buffered_amount_low(Box::new(move || {
            low.notify_one();
            Box::pin(async {})
        }));
    }
    let start = Instant::now();
    let (sent, got) = tokio::join!(
        async {
            for _ in 0..count {
                while p.da.buffered_amount() + m.len() > MAX_BUFFERED {
                    let _ = tokio::time::timeout(Duration::from_millis(50), low.notified()).await;
                }
                p.da.write(&m).await?;
            }
            anyhow::Ok(())
        },
        async {
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = 0;
            while total < count * m.len() {
                total += p.db.read(&mut buf).await?;
            }
            anyhow::Ok(total)
        }
    );
    sent?;
    let total = got?;
    Ok(total as f64 / (1 << 20) as f64 / start.elapsed().as_secs_f64())
}

// ----- memory -----

async fn settle() {
    tokio::time::sleep(Duration::from_millis(500)).await;
}

async fn n2n_memory(n: &N2n) -> anyhow::Result<f64> {
    settle().await;
    let before = rss();
    let mut open = Vec::with_capacity(MEMORY_CONNECTIONS);
    for _ in 0..MEMORY_CONNECTIONS {
        let (ca, cb) = n.connect().await?;
        n2n_echo(&*ca, &*cb, Bytes::from_static(b"x")).await?;
        open.push((ca, cb));
    }
    settle().await;
    let per = (rss().saturating_sub(before)) as f64 / MEMORY_CONNECTIONS as f64;
    for (ca, cb) in open {
        ca.close().await;
        cb.close().await;
    }
    Ok(per)
}

/// A bare end that can receive: a task keeps a read pending with a buffer
/// for the largest message it takes (16 KiB, as n2n's chunks), as any
/// application of detached channels must.
fn bare_reader(dc: Arc<DataChannel>) {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        while matches!(dc.read(&mut buf).await, Ok(n) if n > 0) {}
    });
}

async fn bare_memory(api: &API, reading: bool) -> anyhow::Result<f64> {
    settle().await;
    let before = rss();
    let mut open = Vec::with_capacity(MEMORY_CONNECTIONS);
    for _ in 0..MEMORY_CONNECTIONS {
        let p = bare_connect(api).await?;
        bare_echo(&p.da, &p.db, &Bytes::from_static(b"x")).await?;
        if reading {
            bare_reader(Arc::clone(&p.da));
            bare_reader(Arc::clone(&p.db));
        }
        open.push(p);
    }
    settle().await;
    let per = (rss().saturating_sub(before)) as f64 / MEMORY_CONNECTIONS as f64;
    for p in open {
        bare_close(p).await;
    }
    Ok(per)
}

const CYCLES: usize = 5;

/// The resident set after each cycle of opening and closing
/// [`MEMORY_CONNECTIONS`] connections, in MB.
async fn n2n_cycles(n: &N2n) -> anyhow::Result<Vec<f64>> {
    let mut after = Vec::with_capacity(CYCLES);
    for _ in 0..CYCLES {
        let mut open = Vec::with_capacity(MEMORY_CONNECTIONS);
        for _ in 0..MEMORY_CONNECTIONS {
            open.push(n.connect().await?);
        }
        for (ca, cb) in open {
            ca.close().await;
            cb.close().await;
        }
        settle().await;
        after.push(rss() as f64 / 1e6);
    }
    Ok(after)
}

async fn bare_cycles(api: &API) -> anyhow::Result<Vec<f64>> {
    let mut after = Vec::with_capacity(CYCLES);
    for _ in 0..CYCLES {
        let mut open = Vec::with_capacity(MEMORY_CONNECTIONS);
        for _ in 0..MEMORY_CONNECTIONS {
            open.push(bare_connect(api).await?);
        }
        for p in open {
            bare_close(p).await;
        }
        settle().await;
        after.push(rss() as f64 / 1e6);
    }
    Ok(after)
}

/// Runs one memory measurement in this (fresh) process and prints its figures.
async fn child(what: &str) -> anyhow::Result<()> {
    let n = N2n::new()?;
    let api = bare_api();
    // Warm-up, so that process-wide state is not counted.
    n2n_setup(&n).await?;
    bare_setup(&api).await?;
    let figures = match what {
        "memory-n2n" => vec![n2n_memory(&n).await?],
        "memory-bare" => vec![bare_memory(&api, false).await?],
        "memory-bare-reading" => vec![bare_memory(&api, true).await?],
        "cycles-n2n" => n2n_cycles(&n).await?,
        "cycles-bare" => bare_cycles(&api).await?,
        other => return Err(anyhow!("unknown child measurement {other}")),
    };
    let text: Vec<String> = figures.iter().map(|f| format!("{f}")).collect();
    println!("{}", text.join(" "));
    Ok(())
}

/// Runs `what` in a child process and parses its figures.
fn in_child(what: &str) -> anyhow::Result<Vec<f64>> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["--child", what])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "child {what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)?
        .split_whitespace()
        .map(|f| f.parse::<f64>().context("child figure"))
        .collect()
}

fn row(what: &str, n2n: f64, bare: f64, unit: &str) {
    println!(
        "{what:<28} {n2n:>12.3} {bare:>12.3} {unit:<6} ratio {:.2}",
        n2n / bare
    );
}

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, what] = args.as_slice()
        && flag == "--child"
    {
        return rt.block_on(child(what));
    }
    rt.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let n = N2n::new()?;
    let api = bare_api();
    // Warm-up: process-wide lazy state (sockets, crypto tables).
    n2n_setup(&n).await?;
    bare_setup(&api).await?;

    // Set-up, alternating so that both see the same machine load.
    let (mut n_open, mut n_first, mut b_open, mut b_first) = (vec![], vec![], vec![], vec![]);
    for _ in 0..SETUP_ROUNDS {
        let (o, f) = n2n_setup(&n).await?;
        n_open.push(o);
        n_first.push(f);
        let (o, f) = bare_setup(&api).await?;
        b_open.push(o);
        b_first.push(f);
    }

    let (ca, cb) = n.connect().await?;
    let n_rtt = {
        let mut v = n2n_rtt(&*ca, &*cb).await?;
        v.sort();
        v
    };
    let n_tp = n2n_throughput(&*ca, &*cb).await?;
    ca.close().await;
    cb.close().await;

    let p = bare_connect(&api).await?;
    let b_rtt = {
        let mut v = bare_rtt(&p).await?;
        v.sort();
        v
    };
    let b_tp = bare_throughput(&p).await?;
    bare_close(p).await;

    let n_mem = in_child("memory-n2n")?[0];
    let b_mem = in_child("memory-bare")?[0];
    let br_mem = in_child("memory-bare-reading")?[0];
    let n_cycles = in_child("cycles-n2n")?;
    let b_cycles = in_child("cycles-bare")?;

    println!(
        "webrtc transport on loopback, {SETUP_ROUNDS} set-ups, {RTT_ROUNDS} round trips, {} MiB one way, {MEMORY_CONNECTIONS} connections",
        THROUGHPUT_BYTES >> 20
    );
    println!("{:<28} {:>12} {:>12}", "", "n2n", "bare webrtc");
    let (nm, nlo, nhi) = spread(n_open);
    let (bm, blo, bhi) = spread(b_open);
    row("set-up to open, p50", nm, bm, "ms");
    println!(
        "{:<28} {:>12} {:>12}",
        "  (min–max)",
        format!("{nlo:.2}–{nhi:.2}"),
        format!("{blo:.2}–{bhi:.2}")
    );
    let (nm, _, _) = spread(n_first);
    let (bm, _, _) = spread(b_first);
    row("set-up to first echo, p50", nm, bm, "ms");
    row(
        "round trip p50",
        ms(quantile(&n_rtt, 0.5)),
        ms(quantile(&b_rtt, 0.5)),
        "ms",
    );
    row(
        "round trip p99",
        ms(quantile(&n_rtt, 0.99)),
        ms(quantile(&b_rtt, 0.99)),
        "ms",
    );
    row("throughput", n_tp, b_tp, "MiB/s");
    row("memory per connection", n_mem / 1e3, b_mem / 1e3, "KB");
    row("memory, bare ends reading", n_mem / 1e3, br_mem / 1e3, "KB");
    let show = |v: &[f64]| {
        v.iter()
            .map(|m| format!("{m:.1}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "resident MB after each of {CYCLES} cycles of {MEMORY_CONNECTIONS} open/close: n2n {}; bare {}",
        show(&n_cycles),
        show(&b_cycles)
    );
    Ok(())
}
