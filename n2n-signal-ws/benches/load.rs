//! Load benchmark of the signaling server, on loopback only: many concurrent
//! clients join one room and exchange signals; reports joins per second, signal
//! latency p50/p99 and the server's memory (the `n2n-signal` binary runs in its
//! own process, so its RSS is its own).
//!
//! Two signal phases: latency at a paced load (each client sends one signal
//! per second to the next client), then throughput (every client sends its
//! signals at once). Ed25519 checks dominate the server's work: it verifies
//! every hello and every signal.
//!
//! Run: `cargo bench -p n2n-signal-ws --bench load` (1000 clients, 5 signals
//! each per phase, about 10 s). Under `cargo test --benches` it runs a quick pass
//! with 50 clients. Bounded in count and in time (every wait has a timeout).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use n2n_core::signal::{Role, Signal};
use n2n_core::{Keypair, Signaling};
use n2n_signal_ws::{ClientConfig, WsSignaling};
use rand::SeedableRng;

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Makes sure this process may open `needed` sockets, raising the soft limit
/// towards the hard one if needed.
fn ensure_open_files(needed: u64) -> anyhow::Result<()> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current.is_none_or(|cur| cur >= needed) {
        return Ok(());
    }
    anyhow::ensure!(
        limit.maximum.is_none_or(|max| max >= needed),
        "{needed} open files needed, the hard limit is {:?} (raise it with `ulimit -Hn`)",
        limit.maximum
    );
    limit.current = Some(needed);
    setrlimit(Resource::Nofile, limit)?;
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() -> anyhow::Result<()> {
    let full = std::env::args().any(|a| a == "--bench");
    let clients: usize = if full { 1000 } else { 50 };
    // Paced phase: each client sends one signal per `pace`.
    let (per_client, pace) = if full {
        (5usize, Duration::from_secs(1))
    } else {
        (3, Duration::from_millis(100))
    };
    // One socket per client here (the server runs in its own process) plus slack.
    ensure_open_files(clients as u64 + 256)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    let mut server = Command::new(env!("CARGO_BIN_EXE_n2n-signal"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--log-level",
            "error",
            "--max-clients",
            "5000",
            "--max-room-clients",
            "5000",
            "--signals-per-second",
            "1000",
        ])
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = server.id();
    let mut lines = BufReader::new(server.stdout.take().expect("piped")).lines();
    let url = lines
        .next()
        .transpose()?
        .and_then(|l| l.strip_prefix("listening on ").map(str::to_string))
        .ok_or_else(|| anyhow::anyhow!("the server did not start"))?;
    let rss_idle = rss_kib(pid).unwrap_or(0);

    let result = runtime.block_on(async {
        let keys: Vec<Keypair> = (0..clients as u64)
            .map(|s| Keypair::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(s)))
            .collect();
        // Joins, all at once.
        let start = Instant::now();
        let mut joins = Vec::new();
        for k in &keys {
            let (url, k) = (url.clone(), k.clone());
            joins.push(tokio::spawn(async move {
                let config = ClientConfig {
                    connect_timeout: Duration::from_secs(30),
                    reconnect: false,
                    ..ClientConfig::default()
                };
                WsSignaling::connect(&url, "load", &k, config).await
            }));
        }
        let mut sigs = Vec::new();
        for j in joins {
            sigs.push(j.await??);
        }
        let join_time = start.elapsed();
        let rss_joined = rss_kib(pid).unwrap_or(0);

        // Latency, at a paced load: client i sends to client i+1 once per
        // `pace` (clients staggered over the period); the payload carries the
        // send time.
        let latencies = exchange(&keys, &sigs, per_client, pace).await?;
        let rss_signals = rss_kib(pid).unwrap_or(0);
        // Throughput: every client sends its signals at once.
        let start = Instant::now();
        let burst = exchange(&keys, &sigs, per_client, Duration::ZERO).await?;
        let burst_time = start.elapsed();
        anyhow::Ok((
            join_time,
            rss_joined,
            rss_signals,
            latencies,
            burst.len(),
            burst_time,
        ))
    });

    let _ = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status();
    let _ = server.wait();
    let (join_time, rss_joined, rss_signals, latencies, burst, burst_time) = result?;
    println!(
        "signaling load, {clients} clients in one room:\n  \
         joins: all at once in {:.3} s = {:.0} joins/s\n  \
         latency (each client 1 signal per {pace:?}, {:.0} signals/s in all): {} signals, p50 {:.2?} p99 {:.2?} max {:.2?}\n  \
         throughput (each client {per_client} signals at once): {burst} signals in {:.3} s = {:.0} signals/s\n  \
         server RSS: {} KiB idle, {} KiB with {clients} clients ({:.1} KiB per client), {} KiB after the signals",
        join_time.as_secs_f64(),
        clients as f64 / join_time.as_secs_f64(),
        clients as f64 / pace.as_secs_f64(),
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default(),
        burst_time.as_secs_f64(),
        burst as f64 / burst_time.as_secs_f64(),
        rss_idle,
        rss_joined,
        (rss_joined.saturating_sub(rss_idle)) as f64 / clients as f64,
        rss_signals,
    );
    anyhow::ensure!(
        latencies.len() == clients * per_client && burst == clients * per_client,
        "every signal arrived"
    );
    Ok(())
}

/// Client `i` sends `count` signals to client `i + 1`, one per `pace` (spread
/// over the clients), and every client receives its `count`; returns the
/// latencies, sorted.
async fn exchange(
    keys: &[Keypair],
    sigs: &[Arc<WsSignaling>],
    count: usize,
    pace: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let n = sigs.len();
    let base = Instant::now();
    let mut receivers = Vec::new();
    for sig in sigs {
        let sig = sig.clone();
        receivers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(count);
            for _ in 0..count {
                let s = tokio::time::timeout(Duration::from_secs(60), sig.recv()).await??;
                let sent = u64::from_le_bytes(s.signal.payload[..8].try_into()?);
                latencies.push(base.elapsed().saturating_sub(Duration::from_nanos(sent)));
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut senders = Vec::new();
    for (i, sig) in sigs.iter().enumerate() {
        let sig = sig.clone();
        let from = keys[i].clone();
        let to = keys[(i + 1) % n].peer_id();
        senders.push(tokio::spawn(async move {
            tokio::time::sleep(pace.mul_f64(i as f64 / n as f64)).await;
            let mut next = tokio::time::Instant::now();
            for seq in 0..count as u32 {
                tokio::time::sleep_until(next).await;
                next += pace;
                let payload = (base.elapsed().as_nanos() as u64).to_le_bytes().to_vec();
                let signal = Signal {
                    from: from.peer_id(),
                    to,
                    session: 1,
                    role: Role::Dialer,
                    seq,
                    transport: "load".into(),
                    payload,
                }
                .sign(&from)?;
                sig.send(signal).await?;
            }
            anyhow::Ok(())
        }));
    }
    for s in senders {
        s.await??;
    }
    let mut latencies = Vec::new();
    for r in receivers {
        latencies.extend(r.await??);
    }
    latencies.sort();
    Ok(latencies)
}
