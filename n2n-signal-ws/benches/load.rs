//! Load benchmark of the signaling server, on loopback only: many concurrent
//! clients join one room and exchange signals; reports joins per second, signal
//! latency p50/p99 and the server's memory (the `n2n-signal` binary runs in its
//! own process, so its RSS is its own).
//!
//! Run: `cargo bench -p n2n-signal-ws --bench load` (1000 clients, 10 signals
//! each). Under `cargo test --benches` it runs a quick pass with 50 clients.
//! Bounded in count and in time (every wait has a timeout).

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
    let per_client = 10usize;
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

        // Signals: client i sends to client i+1; the payload carries the send time.
        let base = Instant::now();
        let mut receivers = Vec::new();
        for sig in &sigs {
            let sig: Arc<WsSignaling> = sig.clone();
            receivers.push(tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_client);
                for _ in 0..per_client {
                    let s = tokio::time::timeout(Duration::from_secs(30), sig.recv()).await??;
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
            let to = keys[(i + 1) % clients].peer_id();
            senders.push(tokio::spawn(async move {
                for seq in 0..per_client as u32 {
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
                    tokio::time::sleep(Duration::from_millis(20)).await;
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
        anyhow::Ok((join_time, rss_joined, latencies))
    });

    let _ = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status();
    let _ = server.wait();
    let (join_time, rss_joined, latencies) = result?;
    println!(
        "signaling load: {clients} clients joined in {:.3} s = {:.0} joins/s; {} signals, latency p50 {:?} p99 {:?}; server RSS {} KiB idle, {} KiB with {clients} clients ({:.1} KiB per client)",
        join_time.as_secs_f64(),
        clients as f64 / join_time.as_secs_f64(),
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        rss_idle,
        rss_joined,
        (rss_joined.saturating_sub(rss_idle)) as f64 / clients as f64,
    );
    anyhow::ensure!(
        latencies.len() == clients * per_client,
        "every signal arrived"
    );
    Ok(())
}
