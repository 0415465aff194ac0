//! The Spray overlay on real WebRTC peers, in one command.
//!
//! Starts an embedded WebSocket signaling server on a free loopback port, starts
//! N peers (default 32) that join one by one through it, then stops the server:
//! from then on the peers shuffle through their neighbours only. Each cycle it
//! prints a table row (partial views next to ln N, arcs, connections, bridged
//! handshakes and failures, connectivity), and it ends with a summary.
//!
//! Run:
//!
//! ```sh
//! cargo run --release --example spray                       # 32 WebRTC peers
//! cargo run --release --example spray -- --peers 64 --cycles 20 --churn 2
//! cargo run --release --example spray -- --transport libp2p --serve 8080
//! ```
//!
//! Browser peers: `scripts/build-web`, then `cargo run --release --example
//! spray -- --serve 8080` and open <http://127.0.0.1:8080/> in Chromium
//! started with `--allow-loopback-in-peer-connection` (each tab is a peer;
//! the signaling server stays up while serving; Ctrl-C stops).
//!
//! Multi-process ("three terminals"): `n2n-signal --listen 127.0.0.1:7000` in
//! one, then `cargo run --release --example spray -- --join ws://127.0.0.1:7000
//! --peers 5` in each of the others.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[path = "spray_parts/measure.rs"]
mod measure;
#[path = "spray_web/serve.rs"]
mod web;

use measure::{cpu_time, dot, ln, observe, resident};

use anyhow::Context as _;
use clap::Parser;
use n2n_core::node::{Builder, Event, Node, Snapshot};
use n2n_core::plugin::{PluginSection, StackConfig};
use n2n_core::{Keypair, PeerId, Signaling};
use n2n_overlay_spray::spray;
use n2n_signal_ws::{ClientConfig, Server, ServerConfig, WsSignaling};
use rand::{Rng, SeedableRng};
use serde::Serialize;

// Plugins are found by name only if their crates are linked.
use n2n_overlay_spray as _;
use n2n_signal_ws as _;
use n2n_transport_libp2p as _;
use n2n_transport_webrtc as _;

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(about = "Spray random peer sampling over real WebRTC (or libp2p) peers")]
struct Args {
    /// Number of peers this process runs.
    #[arg(long, default_value_t = 32)]
    peers: usize,
    /// Shuffle cycles to run before stopping (each lasts one shuffle period).
    #[arg(long, default_value_t = 10)]
    cycles: u32,
    /// Shuffle period Δ, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    delta: u64,
    /// Transport plugin: webrtc, libp2p or memory (overrides the config file).
    #[arg(long)]
    transport: Option<String>,
    /// A stack file (see `n2n.toml`); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Seed of every peer's identity and randomness.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Peers killed and peers added each cycle.
    #[arg(long, default_value_t = 0)]
    churn: usize,
    /// Join an external signaling server (`ws://host:port`) instead of starting one.
    #[arg(long)]
    join: Option<String>,
    /// Room (overlay name) on the signaling server.
    #[arg(long, default_value = "spray")]
    room: String,
    /// Write the overlay graph (Graphviz DOT) to this file after every cycle.
    #[arg(long)]
    graph: Option<PathBuf>,
    /// Serve the browser peer's page (and the overlay graph) on this loopback
    /// port; the signaling server stays up for browser peers.
    #[arg(long)]
    serve: Option<u16>,
    /// Write a final JSON report to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Keep the peers running this long (ms) after the summary and report, so
    /// that the other processes of a multi-process overlay can finish theirs.
    #[arg(long, default_value_t = 0)]
    hold: u64,
}

/// One running peer.
struct Peer {
    id: PeerId,
    /// The peer it joined through (`None` for the first).
    contact: Option<PeerId>,
    node: Node,
    signaling: Arc<WsSignaling>,
}

/// Counters fed by the peers' event streams.
#[derive(Default)]
struct Counters {
    bridges_ok: AtomicU64,
    bridges_failed: AtomicU64,
    connect_failed: AtomicU64,
}

#[derive(Serialize)]
struct PeerReport {
    id: String,
    outview: Vec<String>,
    inview: Vec<String>,
}

#[derive(Serialize)]
struct Report {
    peers: Vec<PeerReport>,
    cycles: u32,
    mean_view: f64,
    min_view: usize,
    max_view: usize,
    ln_n: f64,
    strongly_connected: bool,
    weakly_connected: bool,
    bridges_ok: u64,
    bridges_failed: u64,
}

/// What one cycle saw.
struct Row {
    peers: usize,
    mean: f64,
    min: usize,
    max: usize,
    arcs: usize,
    connections: usize,
    strong: bool,
    weak: bool,
}

fn stack(args: &Args) -> anyhow::Result<StackConfig> {
    let mut stack = match &args.config {
        Some(path) => StackConfig::from_file(path)?,
        None => StackConfig::from_toml_str("[transport]\nname = \"webrtc\"\n")?,
    };
    if let Some(t) = &args.transport {
        stack.transport = PluginSection::named(t.clone());
    }
    // Joining is this program's job (embedded server or `--join`).
    stack.signaling = None;
    if stack.overlay.is_empty() {
        stack.overlay.push(PluginSection::named("spray"));
    }
    for section in &mut stack.overlay {
        if section.name == "spray" {
            section
                .settings
                .insert("delta_ms".into(), toml::Value::Integer(args.delta as i64));
            section.settings.insert(
                "exchange_timeout_ms".into(),
                toml::Value::Integer((args.delta.max(500) * 3) as i64),
            );
        }
    }
    Ok(stack)
}

fn peer_seed(seed: u64, i: u64) -> u64 {
    seed.wrapping_mul(1_000_003).wrapping_add(i)
}

async fn spawn_peer(
    stack: &StackConfig,
    seed: u64,
    url: &str,
    room: &str,
    counters: Arc<Counters>,
) -> anyhow::Result<Peer> {
    let key = Keypair::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    let id = key.peer_id();
    let signaling = WsSignaling::connect(url, room, &key, ClientConfig::default())
        .await
        .with_context(|| format!("cannot join {url}"))?;
    let as_signaling: Arc<dyn Signaling> = signaling.clone();
    let mut stack = stack.clone();
    stack.node.seed = Some(seed);
    let (builder, _) = Builder::from_stack(key, &stack).await?;
    let mut node = builder.spawn()?;
    let contact = node
        .handle()
        .join(spray::PROTOCOL, as_signaling)
        .await
        .with_context(|| format!("peer {} could not join", id.short()))?;
    tracing::info!(peer = %id.short(), contact = ?contact.map(|c| c.short()), "joined");
    // Count what happens; the node waits when nobody drains its events.
    let mut events = node.take_events().context("events already taken")?;
    let node_counters = counters.clone();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            match event {
                Event::BridgeDone { result: Ok(()), .. } => {
                    node_counters.bridges_ok.fetch_add(1, Ordering::Relaxed);
                }
                Event::BridgeDone { result: Err(_), .. } => {
                    node_counters.bridges_failed.fetch_add(1, Ordering::Relaxed);
                }
                Event::ConnectFailed { .. } => {
                    node_counters.connect_failed.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
    });
    Ok(Peer {
        id,
        contact,
        node,
        signaling,
    })
}

/// Waits (at most `limit`) until the newest peer's join is complete: its
/// contact asked each neighbour of its partial view (one per arc) to open an
/// arc to the newcomer, so the newcomer's inview reaches the size of the
/// contact's partial view (its first arc when the contact is in another
/// process). Joins are thus one by one, as in the paper, without waiting for
/// the shuffles of the members.
async fn settle_join(peers: &[Peer], limit: Duration) {
    let Some(newcomer) = peers.last() else {
        return;
    };
    let Some(contact) = newcomer.contact else {
        return;
    };
    let expected = match peers.iter().find(|p| p.id == contact) {
        Some(c) => {
            let s = c.node.handle().snapshot().await;
            s.view(spray::PROTOCOL).1.len().max(1)
        }
        None => 1,
    };
    // The contact's view may change meanwhile (its shuffles go on): an inview
    // that stopped growing for a while also ends the wait.
    let deadline = Instant::now() + limit;
    let (mut last, mut since) = (0, Instant::now());
    while Instant::now() < deadline {
        let s = newcomer.node.handle().snapshot().await;
        let (inview, outview) = s.view(spray::PROTOCOL);
        if !outview.is_empty() {
            if inview.len() >= expected {
                return;
            }
            if inview.len() > last {
                (last, since) = (inview.len(), Instant::now());
            } else if last > 0 && since.elapsed() > Duration::from_millis(500) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (at most `limit`) until no handshake or bridge is in flight on any of
/// `peers`: a join's arcs are all in place before the next peer joins, as in
/// the paper's one-by-one joins, and a final count includes no arc in flight.
async fn settle(peers: &[Peer], limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let mut busy = 0;
        for p in peers {
            let s = p.node.handle().snapshot().await;
            busy += s.handshakes + s.relay_jobs + s.bridge_endpoints + s.bridge_requests;
        }
        if busy == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = Args::parse();
    // libp2p's QUIC and WebRTC's DTLS link two rustls crypto providers; pick one
    // for the process so that neither has to guess.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let stack = stack(&args)?;
    let counters = Arc::new(Counters::default());
    let site = web::Site::new(&args.room);
    if let Some(port) = args.serve {
        let site = site.clone();
        tokio::spawn(async move {
            if let Err(e) = web::serve(port, site).await {
                eprintln!("page server: {e}");
            }
        });
    }
    // The signaling server: embedded on a free loopback port, or external.
    let mut server = None;
    let url = match &args.join {
        Some(url) => url.clone(),
        None => {
            let s = Server::bind(ServerConfig {
                listen: "127.0.0.1:0".parse()?,
                seed: Some(args.seed),
                ..ServerConfig::default()
            })
            .await?;
            let url = s.url();
            println!("signaling server on {url}");
            server = Some(s);
            url
        }
    };
    site.set_signal_url(&url).await;
    // Joining, one by one.
    let started = Instant::now();
    let mut peers: Vec<Peer> = Vec::new();
    for i in 0..args.peers {
        let seed = peer_seed(args.seed, i as u64);
        peers.push(spawn_peer(&stack, seed, &url, &args.room, counters.clone()).await?);
        settle_join(&peers, Duration::from_secs(5)).await;
    }
    // Newcomers under churn still need the server, and so do the other
    // processes of a multi-process overlay (`--join`): members stay in the
    // room to be their contacts, and so do browser peers (`--serve`).
    // Otherwise the server goes away now.
    let keep_server = args.churn > 0 || args.join.is_some() || args.serve.is_some();
    if !keep_server {
        // Members leave first, so that none sees the server go away.
        for p in &peers {
            p.signaling.close();
        }
        if let Some(s) = server.take() {
            s.shutdown().await;
        }
    }
    println!(
        "{} peers joined in {:.1} s over {}{}",
        peers.len(),
        started.elapsed().as_secs_f64(),
        stack.transport.name,
        if !keep_server {
            "; the signaling server is stopped, peers shuffle through their neighbours only"
        } else {
            ""
        }
    );
    println!(
        "{:>5} {:>5} {:>6} {:>4} {:>4} {:>5} {:>5} {:>5} {:>8} {:>6} {:>9}",
        "cycle",
        "peers",
        "mean",
        "min",
        "max",
        "ln N",
        "arcs",
        "conns",
        "bridged",
        "failed",
        "connected"
    );
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed);
    let mut next_seed = peer_seed(args.seed, args.peers as u64);
    let mut last = (0u64, 0u64);
    let mut last_row = None;
    let cycles_started = (Instant::now(), cpu_time());
    let mut ticker = tokio::time::interval(Duration::from_millis(args.delta));
    ticker.tick().await;
    for cycle in 1..=args.cycles {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = tokio::signal::ctrl_c() => { println!("interrupted"); break; }
        }
        if args.churn > 0 && peers.len() > args.churn + 2 {
            for _ in 0..args.churn {
                let i = rng.random_range(0..peers.len());
                let p = peers.swap_remove(i);
                p.node.kill();
            }
            for _ in 0..args.churn {
                next_seed += 1;
                match spawn_peer(&stack, next_seed, &url, &args.room, counters.clone()).await {
                    Ok(p) => peers.push(p),
                    Err(e) => eprintln!("a newcomer failed to join: {e:#}"),
                }
            }
        }
        let (row, graph, _) = observe(&peers).await;
        let ok = counters.bridges_ok.load(Ordering::Relaxed);
        let failed = counters.bridges_failed.load(Ordering::Relaxed);
        println!(
            "{:>5} {:>5} {:>6.2} {:>4} {:>4} {:>5.2} {:>5} {:>5} {:>8} {:>6} {:>9}",
            cycle,
            row.peers,
            row.mean,
            row.min,
            row.max,
            ln(row.peers),
            row.arcs,
            row.connections,
            ok - last.0,
            failed - last.1,
            if row.strong {
                "strong"
            } else if row.weak {
                "weak"
            } else {
                "no"
            }
        );
        last = (ok, failed);
        if let Some(path) = &args.graph {
            std::fs::write(path, dot(&graph))?;
        }
        *site.graph.write().await = graph.clone();
        *site.svg.write().await = web::html(
            &graph,
            &format!(
                "cycle {cycle}: {} peers, mean view {:.2}",
                row.peers, row.mean
            ),
        );
        last_row = Some((row, graph));
    }
    let _ = last_row;
    // The summary counts settled arcs, none in flight.
    settle(&peers, Duration::from_secs(10)).await;
    let (row, graph, _) = observe(&peers).await;
    println!(
        "summary: {} peers, mean view {:.2} (ln N = {:.2}), min {}, max {}, {} arcs, overlay {}",
        row.peers,
        row.mean,
        ln(row.peers),
        row.min,
        row.max,
        row.arcs,
        if args.join.is_some() {
            // Arcs to peers of other processes are not in this graph.
            let leaving = graph
                .values()
                .flatten()
                .filter(|q| !graph.contains_key(*q))
                .count();
            format!("spans other processes ({leaving} arcs lead out of this one)")
        } else if row.strong {
            "strongly connected".into()
        } else if row.weak {
            "weakly connected".into()
        } else {
            "split".into()
        }
    );
    if let (Some(cpu0), Some(cpu1), Some(rss)) = (cycles_started.1, cpu_time(), resident()) {
        let wall = cycles_started.0.elapsed().as_secs_f64();
        let cpu = (cpu1.saturating_sub(cpu0)).as_secs_f64();
        let n = row.peers.max(1) as f64;
        println!(
            "process: resident {:.1} MiB ({:.0} KiB per peer); CPU while shuffling {:.0}% of one core ({:.2}% per peer)",
            rss as f64 / (1 << 20) as f64,
            rss as f64 / 1024.0 / n,
            100.0 * cpu / wall,
            100.0 * cpu / wall / n
        );
    }
    if let Some(path) = &args.report {
        let mut reports = Vec::new();
        for p in &peers {
            let s = p.node.handle().snapshot().await;
            let (inv, outv) = s.view(spray::PROTOCOL);
            reports.push(PeerReport {
                id: p.id.to_string(),
                outview: outv.occurrences().map(|q| q.to_string()).collect(),
                inview: inv.occurrences().map(|q| q.to_string()).collect(),
            });
        }
        let report = Report {
            peers: reports,
            cycles: args.cycles,
            mean_view: row.mean,
            min_view: row.min,
            max_view: row.max,
            ln_n: ln(row.peers),
            strongly_connected: row.strong,
            weakly_connected: row.weak,
            bridges_ok: counters.bridges_ok.load(Ordering::Relaxed),
            bridges_failed: counters.bridges_failed.load(Ordering::Relaxed),
        };
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    let _ = graph;
    if args.hold > 0 || args.serve.is_some() {
        // While serving, the page's graph follows the overlay until Ctrl-C
        // (or the end of `--hold`).
        let until = (args.hold > 0).then(|| Instant::now() + Duration::from_millis(args.hold));
        if args.serve.is_some() {
            println!("serving until Ctrl-C");
        }
        loop {
            let tick = Duration::from_millis(args.delta);
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = tokio::signal::ctrl_c() => break,
            }
            if until.is_some_and(|t| Instant::now() >= t) {
                break;
            }
            let (row, graph, _) = observe(&peers).await;
            let browsers = site.browsers().await.len();
            *site.graph.write().await = graph.clone();
            *site.svg.write().await = web::html(
                &graph,
                &format!("{} native peers, mean view {:.2}", row.peers, row.mean),
            );
            tracing::info!(browsers, "graph updated");
        }
    }
    for p in peers {
        p.node.shutdown().await;
    }
    if let Some(s) = server {
        s.shutdown().await;
    }
    Ok(())
}
