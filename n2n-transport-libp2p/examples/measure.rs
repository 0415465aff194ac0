//! Measures the libp2p transport on loopback, TCP+Noise+Yamux and QUIC:
//! set-up time (signals exchanged, libp2p connection dialed, stream opened and
//! bound, first message echoed), round-trip time of small messages, and
//! one-way throughput.
//!
//! Run (release build; takes about half a minute):
//!
//! ```sh
//! cargo run --release -p n2n-transport-libp2p --example measure
//! ```
//!
//! Set-up is measured cold (two fresh transports, so a new libp2p connection
//! each time) and warm (a further n2n connection between the same two
//! transports, which reuses their libp2p connection and only opens a stream).
//!
//! Memory is the growth of this process's resident set per connection, both
//! ends counted (they live in the same process): n2n connections as streams on
//! one libp2p connection, and whole transport pairs (two swarms, one libp2p
//! connection, one n2n connection).
//!
//! Last, the n2n WebRTC transport is measured the same way and all three
//! transports are printed side by side.
//!
//! The same figures for bare libp2p (two swarms with `libp2p-stream`, dialing
//! each other directly, raw bytes on one stream) are printed alongside, from
//! the same run, with the ratio of the transport to them.

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::io::{AsyncReadExt, AsyncWriteExt};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, StreamProtocol, Swarm};
use n2n_core::transport::{Connection, SignalPipe, Transport};
use n2n_core::{Keypair, PeerId};
use n2n_transport_libp2p::libp2p;
use n2n_transport_libp2p::{Config, Libp2pTransport, Protocol};
use rand::SeedableRng;

fn key(seed: u64) -> Keypair {
    Keypair::generate(&mut rand::rngs::StdRng::seed_from_u64(seed))
}

/// Two pipes whose signals are forwarded to each other.
fn wire(a: PeerId, b: PeerId) -> (SignalPipe, SignalPipe) {
    n2n_core::memory::wired_pipes(a, b, b, a)
}

async fn connect(
    ta: &dyn Transport,
    tb: &dyn Transport,
    a: PeerId,
    b: PeerId,
) -> anyhow::Result<(Box<dyn Connection>, Box<dyn Connection>)> {
    let (dp, ap) = wire(a, b);
    let (ca, cb) = tokio::join!(ta.dial(dp), tb.accept(ap));
    Ok((ca?, cb?))
}

/// Connect, send one message, get it echoed: the time until the echo arrives.
async fn setup_once(
    ta: &dyn Transport,
    tb: &dyn Transport,
    a: PeerId,
    b: PeerId,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let (ca, cb) = connect(ta, tb, a, b).await?;
    ca.send(Bytes::from_static(b"ping")).await?;
    let m = cb.recv().await?;
    cb.send(m).await?;
    ca.recv().await?;
    let took = start.elapsed();
    ca.close().await;
    cb.close().await;
    Ok(took)
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i]
}

fn fmt(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{} µs", d.as_micros())
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    }
}

struct Figures {
    cold: Vec<Duration>,
    warm: Vec<Duration>,
    rtt: Vec<Duration>,
    /// (message size, MiB/s)
    rates: Vec<(usize, f64)>,
}

const COLD_RUNS: usize = 30;
const WARM_RUNS: usize = 100;
const ROUND_TRIPS: usize = 2000;
const VOLUME: usize = 512 * 1024 * 1024;
const SIZES: [usize; 2] = [64 * 1024, 1024 * 1024];

/// Round trips of 64-byte messages on one new connection (100 warm-up trips
/// not counted).
async fn round_trips(
    ta: &dyn Transport,
    tb: &dyn Transport,
    a: PeerId,
    b: PeerId,
) -> anyhow::Result<Vec<Duration>> {
    let (ca, cb) = connect(ta, tb, a, b).await?;
    let echo = tokio::spawn(async move {
        while let Ok(m) = cb.recv().await {
            if cb.send(m).await.is_err() {
                break;
            }
        }
        cb
    });
    let mut rtt = Vec::new();
    let small = Bytes::from(vec![0u8; 64]);
    for i in 0..ROUND_TRIPS + 100 {
        let start = Instant::now();
        ca.send(small.clone()).await?;
        ca.recv().await?;
        if i >= 100 {
            rtt.push(start.elapsed());
        }
    }
    ca.close().await;
    let _ = echo.await;
    Ok(rtt)
}

/// `volume` bytes one way in `size`-byte messages on one new connection, in
/// MiB/s.
async fn throughput(
    ta: &dyn Transport,
    tb: &dyn Transport,
    a: PeerId,
    b: PeerId,
    size: usize,
    volume: usize,
) -> anyhow::Result<f64> {
    let (ca, cb) = connect(ta, tb, a, b).await?;
    let count = volume / size;
    let sink = tokio::spawn(async move {
        let mut got = 0usize;
        for _ in 0..count {
            got += cb.recv().await.map(|m| m.len()).unwrap_or(0);
        }
        (got, Instant::now())
    });
    let message = Bytes::from(vec![0xa5u8; size]);
    let start = Instant::now();
    for _ in 0..count {
        ca.send(message.clone()).await?;
    }
    let (got, end) = sink.await?;
    anyhow::ensure!(got == volume, "received {got} of {volume} bytes");
    ca.close().await;
    Ok(mib_per_s(volume, end - start))
}

async fn measure_transport(protocol: Protocol) -> anyhow::Result<Figures> {
    let config = Config {
        protocols: vec![protocol],
        ..Config::default()
    };
    let (ka, kb) = (key(1), key(2));
    let (a, b) = (ka.peer_id(), kb.peer_id());

    // Cold set-up: fresh transports (new swarms, new libp2p connection).
    let mut cold = Vec::new();
    for i in 0..=COLD_RUNS {
        let ta = Libp2pTransport::new(&ka, config.clone())?;
        let tb = Libp2pTransport::new(&kb, config.clone())?;
        ta.listen_addrs().await?;
        tb.listen_addrs().await?;
        let took = setup_once(&ta, &tb, a, b).await.context("cold set-up")?;
        if i > 0 {
            cold.push(took);
        }
    }
    // Warm set-up: same transports, the libp2p connection is reused.
    let ta = Libp2pTransport::new(&ka, config.clone())?;
    let tb = Libp2pTransport::new(&kb, config.clone())?;
    setup_once(&ta, &tb, a, b).await?;
    let mut warm = Vec::new();
    for _ in 0..WARM_RUNS {
        warm.push(setup_once(&ta, &tb, a, b).await.context("warm set-up")?);
    }

    let rtt = round_trips(&ta, &tb, a, b).await?;
    let mut rates = Vec::new();
    for size in SIZES {
        rates.push((size, throughput(&ta, &tb, a, b, size, VOLUME).await?));
    }
    Ok(Figures {
        cold,
        warm,
        rtt,
        rates,
    })
}

/// The n2n WebRTC transport measured the same way, in the same run, so that
/// the libp2p figures read next to it: set-up (every WebRTC connection is a
/// new peer connection, so all set-ups are cold), round trips, and 64 MiB of
/// 1 MiB messages one way.
async fn measure_webrtc() -> anyhow::Result<(Duration, Duration, f64)> {
    const WEBRTC_VOLUME: usize = 64 * 1024 * 1024;
    let ta = n2n_transport_webrtc::WebRtcTransport::new(n2n_transport_webrtc::Config::default())?;
    let tb = n2n_transport_webrtc::WebRtcTransport::new(n2n_transport_webrtc::Config::default())?;
    let (a, b) = (key(1).peer_id(), key(2).peer_id());
    let mut cold = Vec::new();
    for i in 0..=COLD_RUNS {
        let took = setup_once(&ta, &tb, a, b).await.context("webrtc set-up")?;
        if i > 0 {
            cold.push(took);
        }
    }
    let mut rtt = round_trips(&ta, &tb, a, b).await?;
    let rate = throughput(&ta, &tb, a, b, 1024 * 1024, WEBRTC_VOLUME).await?;
    Ok((percentile(&mut cold, 0.5), percentile(&mut rtt, 0.5), rate))
}

fn mib_per_s(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / took.as_secs_f64() / (1024.0 * 1024.0)
}

const BARE: StreamProtocol = StreamProtocol::new("/bare-echo/1");
const BARE_SINK: StreamProtocol = StreamProtocol::new("/bare-sink/1");

/// A bare swarm: the same stacks, one `libp2p-stream` behaviour.
fn bare_swarm(
    key: &Keypair,
    protocol: Protocol,
) -> anyhow::Result<Swarm<libp2p_stream::Behaviour>> {
    let identity = n2n_transport_libp2p::identity::libp2p_keypair(key);
    let idle = |c: libp2p::swarm::Config| c.with_idle_connection_timeout(Duration::from_secs(30));
    let builder = libp2p::SwarmBuilder::with_existing_identity(identity).with_tokio();
    Ok(match protocol {
        Protocol::Tcp => builder
            .with_tcp(
                libp2p::tcp::Config::new().nodelay(true),
                libp2p::noise::Config::new,
                libp2p::yamux::Config::default,
            )?
            .with_behaviour(|_| libp2p_stream::Behaviour::new())?
            .with_swarm_config(idle)
            .build(),
        Protocol::Quic => builder
            .with_quic()
            .with_behaviour(|_| libp2p_stream::Behaviour::new())?
            .with_swarm_config(idle)
            .build(),
    })
}

/// Listens on loopback, answers every stream with an echo; returns the address.
async fn bare_listener(
    key: &Keypair,
    protocol: Protocol,
) -> anyhow::Result<(Multiaddr, tokio::task::JoinHandle<()>)> {
    let mut swarm = bare_swarm(key, protocol)?;
    swarm.listen_on(protocol.loopback_listen())?;
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    let mut incoming = swarm.behaviour().new_control().accept(BARE)?;
    let mut sinks = swarm.behaviour().new_control().accept(BARE_SINK)?;
    // The sink reads to the end, then answers with the byte count.
    tokio::spawn(async move {
        while let Some((_, mut stream)) = sinks.next().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                let mut got = 0u64;
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    got += n as u64;
                }
                let _ = stream.write_all(&got.to_be_bytes()).await;
                let _ = stream.close().await;
            });
        }
    });
    let task = tokio::spawn(async move {
        let echo = async {
            while let Some((_, mut stream)) = incoming.next().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        let _ = stream.flush().await;
                    }
                });
            }
        };
        tokio::select! {
            () = echo => {}
            () = async { loop { swarm.select_next_some().await; } } => {}
        }
    });
    Ok((addr, task))
}

/// Dials `addr` and drives the swarm; returns a stream control once connected.
async fn bare_dialer(
    key: &Keypair,
    protocol: Protocol,
    addr: Multiaddr,
) -> anyhow::Result<(libp2p_stream::Control, tokio::task::JoinHandle<()>)> {
    let mut swarm = bare_swarm(key, protocol)?;
    let control = swarm.behaviour().new_control();
    swarm.dial(addr)?;
    loop {
        match swarm.select_next_some().await {
            SwarmEvent::ConnectionEstablished { .. } => break,
            SwarmEvent::OutgoingConnectionError { error, .. } => anyhow::bail!("{error}"),
            _ => {}
        }
    }
    let task = tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    Ok((control, task))
}

async fn measure_bare(protocol: Protocol) -> anyhow::Result<Figures> {
    let (ka, kb) = (key(1), key(2));
    let server = n2n_transport_libp2p::identity::to_libp2p(&kb.peer_id())?;
    let ping = [0u8; 4];
    let mut buf = [0u8; 64];

    let mut cold = Vec::new();
    for i in 0..=COLD_RUNS {
        let (addr, listener) = bare_listener(&kb, protocol).await?;
        let start = Instant::now();
        let (mut control, dialer) = bare_dialer(&ka, protocol, addr).await?;
        let mut stream = control.open_stream(server, BARE).await?;
        stream.write_all(&ping).await?;
        stream.flush().await?;
        stream.read_exact(&mut buf[..4]).await?;
        if i > 0 {
            cold.push(start.elapsed());
        }
        dialer.abort();
        listener.abort();
    }

    let (addr, _listener) = bare_listener(&kb, protocol).await?;
    let (mut control, _dialer) = bare_dialer(&ka, protocol, addr).await?;
    let mut warm = Vec::new();
    for _ in 0..WARM_RUNS {
        let start = Instant::now();
        let mut stream = control.open_stream(server, BARE).await?;
        stream.write_all(&ping).await?;
        stream.flush().await?;
        stream.read_exact(&mut buf[..4]).await?;
        warm.push(start.elapsed());
        stream.close().await?;
    }

    let mut stream = control.open_stream(server, BARE).await?;
    let mut rtt = Vec::new();
    for i in 0..ROUND_TRIPS + 100 {
        let start = Instant::now();
        stream.write_all(&buf).await?;
        stream.flush().await?;
        stream.read_exact(&mut buf).await?;
        if i >= 100 {
            rtt.push(start.elapsed());
        }
    }
    stream.close().await?;

    // One way into a sink that reports the byte count at the end.
    let mut rates = Vec::new();
    for size in SIZES {
        let mut stream = control.open_stream(server, BARE_SINK).await?;
        let chunk = vec![0xa5u8; size];
        let start = Instant::now();
        for _ in 0..VOLUME / size {
            stream.write_all(&chunk).await?;
        }
        stream.close().await?;
        let mut count = [0u8; 8];
        stream.read_exact(&mut count).await?;
        let took = start.elapsed();
        let got = u64::from_be_bytes(count) as usize;
        anyhow::ensure!(got == VOLUME, "sink got {got} of {VOLUME} bytes");
        rates.push((size, mib_per_s(VOLUME, took)));
    }
    Ok(Figures {
        cold,
        warm,
        rtt,
        rates,
    })
}

fn report(protocol: Protocol, mut n2n: Figures, mut bare: Figures) {
    let name = match protocol {
        Protocol::Tcp => "TCP+Noise+Yamux",
        Protocol::Quic => "QUIC",
    };
    println!(
        "{name}                                   n2n transport        bare libp2p-stream   ratio (p50)"
    );
    let row = |what: &str, a: &mut Vec<Duration>, b: &mut Vec<Duration>| {
        let (a50, b50) = (percentile(a, 0.5), percentile(b, 0.5));
        println!(
            "  {what:<38} p50 {:>9} p90 {:>9}   p50 {:>9} p90 {:>9}   ×{:.2}",
            fmt(a50),
            fmt(percentile(a, 0.9)),
            fmt(b50),
            fmt(percentile(b, 0.9)),
            a50.as_secs_f64() / b50.as_secs_f64()
        );
    };
    row(
        "set-up cold, connect → first echo",
        &mut n2n.cold,
        &mut bare.cold,
    );
    row(
        "set-up warm (libp2p connection up)",
        &mut n2n.warm,
        &mut bare.warm,
    );
    row("round trip, 64 B", &mut n2n.rtt, &mut bare.rtt);
    for ((size, a), (_, b)) in n2n.rates.iter().zip(&bare.rates) {
        println!(
            "  throughput, {:>4} KiB messages, 512 MiB  {a:>7.0} MiB/s           {b:>7.0} MiB/s            ×{:.2}",
            size / 1024,
            a / b
        );
    }
}

/// Resident set size of this process, in bytes (Linux).
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Bytes per n2n connection (streams on one libp2p connection) and per whole
/// transport pair with one connection; both ends counted. Everything stays
/// allocated until both figures are taken, so freed memory is not reused.
async fn memory(protocol: Protocol) -> anyhow::Result<(usize, usize)> {
    // Below libp2p-quic's 256 concurrent streams per connection.
    const STREAMS: usize = 200;
    const PAIRS: usize = 40;
    let config = Config {
        protocols: vec![protocol],
        ..Config::default()
    };
    let (ka, kb) = (key(1), key(2));
    let (a, b) = (ka.peer_id(), kb.peer_id());

    let before = rss();
    let mut pairs = Vec::new();
    for _ in 0..PAIRS {
        let ta = Libp2pTransport::new(&ka, config.clone())?;
        let tb = Libp2pTransport::new(&kb, config.clone())?;
        let (ca, cb) = connect(&ta, &tb, a, b).await?;
        ca.send(Bytes::from_static(b"x")).await?;
        cb.recv().await?;
        pairs.push((ta, tb, ca, cb));
    }
    let per_pair = rss().saturating_sub(before) / PAIRS;

    let (ta, tb) = (&pairs[0].0, &pairs[0].1);
    let before = rss();
    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        let (ca, cb) = connect(ta, tb, a, b).await?;
        ca.send(Bytes::from_static(b"x")).await?;
        cb.recv().await?;
        streams.push((ca, cb));
    }
    let per_stream = rss().saturating_sub(before) / STREAMS;
    drop(streams);
    drop(pairs);
    Ok((per_stream, per_pair))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    // Memory first, before large buffers come and go.
    for protocol in [Protocol::Tcp, Protocol::Quic] {
        let (per_stream, per_pair) = memory(protocol).await?;
        println!(
            "{protocol:?} memory, both ends: {:.1} KiB per n2n connection on one libp2p connection, {:.0} KiB per transport pair with one connection",
            per_stream as f64 / 1024.0,
            per_pair as f64 / 1024.0
        );
    }
    println!("cold n={COLD_RUNS}, warm n={WARM_RUNS}, round trips n={ROUND_TRIPS}");
    let mut side_by_side = Vec::new();
    for protocol in [Protocol::Tcp, Protocol::Quic] {
        let mut n2n = measure_transport(protocol).await?;
        let bare = measure_bare(protocol).await?;
        let mib = n2n
            .rates
            .iter()
            .find(|(size, _)| *size == 1024 * 1024)
            .map_or(0.0, |(_, r)| *r);
        side_by_side.push((
            format!("libp2p {protocol:?}"),
            percentile(&mut n2n.cold, 0.5),
            percentile(&mut n2n.rtt, 0.5),
            mib,
        ));
        report(protocol, n2n, bare);
    }
    let (setup, rtt, mib) = measure_webrtc().await?;
    side_by_side.push(("WebRTC".into(), setup, rtt, mib));
    println!("n2n transports side by side, same run (p50; throughput with 1 MiB messages):");
    for (name, setup, rtt, mib) in side_by_side {
        println!(
            "  {name:<12} set-up → first echo {:>9}   round trip {:>9}   {mib:>7.1} MiB/s",
            fmt(setup),
            fmt(rtt)
        );
    }
    Ok(())
}
