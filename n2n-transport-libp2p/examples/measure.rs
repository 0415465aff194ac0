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

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use n2n_core::transport::{Connection, SignalPipe, Transport};
use n2n_core::{Keypair, PeerId};
use n2n_transport_libp2p::{Config, Libp2pTransport, Protocol};
use rand::SeedableRng;

fn key(seed: u64) -> Keypair {
    Keypair::generate(&mut rand::rngs::StdRng::seed_from_u64(seed))
}

/// Two pipes whose signals are forwarded to each other, as a signaling path.
fn wire(a: PeerId, b: PeerId) -> (SignalPipe, SignalPipe) {
    let (dial_pipe, mut d) = SignalPipe::new(a, b);
    let (accept_pipe, mut c) = SignalPipe::new(b, a);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(s) = d.outbound.recv() => { if c.inbound.send(s).await.is_err() { break; } }
                Some(s) = c.outbound.recv() => { if d.inbound.send(s).await.is_err() { break; } }
                else => break,
            }
        }
    });
    (dial_pipe, accept_pipe)
}

async fn connect(
    ta: &Libp2pTransport,
    tb: &Libp2pTransport,
    a: PeerId,
    b: PeerId,
) -> anyhow::Result<(Box<dyn Connection>, Box<dyn Connection>)> {
    let (dp, ap) = wire(a, b);
    let (ca, cb) = tokio::join!(ta.dial(dp), tb.accept(ap));
    Ok((ca?, cb?))
}

/// Connect, send one message, get it echoed: the time until the echo arrives.
async fn setup_once(
    ta: &Libp2pTransport,
    tb: &Libp2pTransport,
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

async fn measure(protocol: Protocol) -> anyhow::Result<()> {
    let config = Config {
        protocols: vec![protocol],
        ..Config::default()
    };
    let (ka, kb) = (key(1), key(2));
    let (a, b) = (ka.peer_id(), kb.peer_id());

    // Cold set-up: fresh transports (new swarms, new libp2p connection).
    let mut cold = Vec::new();
    for i in 0..30 {
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
    for _ in 0..100 {
        warm.push(setup_once(&ta, &tb, a, b).await.context("warm set-up")?);
    }

    // Round trips of 64-byte messages on one connection.
    let (ca, cb) = connect(&ta, &tb, a, b).await?;
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
    for i in 0..2100 {
        let start = Instant::now();
        ca.send(small.clone()).await?;
        ca.recv().await?;
        if i >= 100 {
            rtt.push(start.elapsed());
        }
    }
    ca.close().await;
    let _ = echo.await;

    // One-way throughput.
    let mut rates = Vec::new();
    for size in [64 * 1024, 1024 * 1024] {
        let (ca, cb) = connect(&ta, &tb, a, b).await?;
        let total: usize = 512 * 1024 * 1024;
        let count = total / size;
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
        anyhow::ensure!(got == total, "received {got} of {total} bytes");
        let secs = (end - start).as_secs_f64();
        rates.push((size, total as f64 / secs / (1024.0 * 1024.0)));
        ca.close().await;
    }

    let name = match protocol {
        Protocol::Tcp => "TCP+Noise+Yamux",
        Protocol::Quic => "QUIC",
    };
    println!("{name}:");
    println!(
        "  set-up, cold (new libp2p connection), connect → first echo: p50 {}  p90 {}  (n={})",
        fmt(percentile(&mut cold, 0.5)),
        fmt(percentile(&mut cold, 0.9)),
        cold.len()
    );
    println!(
        "  set-up, warm (stream on the existing libp2p connection):    p50 {}  p90 {}  (n={})",
        fmt(percentile(&mut warm, 0.5)),
        fmt(percentile(&mut warm, 0.9)),
        warm.len()
    );
    println!(
        "  round trip, 64 B: p50 {}  p99 {}  (n={})",
        fmt(percentile(&mut rtt, 0.5)),
        fmt(percentile(&mut rtt, 0.99)),
        rtt.len()
    );
    for (size, rate) in rates {
        println!(
            "  throughput, {} KiB messages, 512 MiB one way: {rate:.0} MiB/s",
            size / 1024
        );
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    measure(Protocol::Tcp).await?;
    measure(Protocol::Quic).await?;
    Ok(())
}
