//! `n2n-signal`: the n2n WebSocket signaling server.
//!
//! Run: `cargo run --release -p n2n-signal-ws --bin n2n-signal -- --listen 127.0.0.1:7000`
//!
//! Settings come from flags, or from the `[server]` section of a TOML file
//! (`--config`); flags win. It prints `listening on ws://ADDR` once ready and
//! stops cleanly on Ctrl-C (SIGINT) or SIGTERM.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use n2n_signal_ws::{Server, ServerConfig};

#[derive(Debug, Parser)]
#[command(
    name = "n2n-signal",
    version,
    about = "WebSocket signaling server for n2n networks"
)]
struct Args {
    /// Address to listen on (port 0: any free port).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// TOML file with a `[server]` section.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Clients connected at most.
    #[arg(long)]
    max_clients: Option<usize>,
    /// Clients per room at most.
    #[arg(long)]
    max_room_clients: Option<usize>,
    /// Largest frame accepted, in bytes.
    #[arg(long)]
    max_frame: Option<usize>,
    /// Signals per second per client.
    #[arg(long)]
    signals_per_second: Option<u32>,
    /// Seconds of silence before a client is disconnected.
    #[arg(long)]
    idle_timeout_secs: Option<u64>,
    /// Serve Prometheus counters at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// Connections not yet joined, from all sources, at most.
    #[arg(long)]
    max_pending: Option<usize>,
    /// Connections not yet joined from one source address at most.
    #[arg(long)]
    max_pending_per_source: Option<usize>,
    /// Connections from one source address at most.
    #[arg(long)]
    max_connections_per_source: Option<usize>,
    /// Joins per second one source address may make (bursts: --join-burst-per-source).
    #[arg(long)]
    joins_per_second_per_source: Option<u32>,
    /// Joins one source address may make in a burst.
    #[arg(long)]
    join_burst_per_source: Option<u32>,
    /// Joins per second into one room (bursts: --join-burst-per-room).
    #[arg(long)]
    joins_per_second_per_room: Option<u32>,
    /// Joins into one room in a burst.
    #[arg(long)]
    join_burst_per_room: Option<u32>,
    /// Bytes waiting for one client at most; a slower reader is disconnected.
    #[arg(long)]
    client_queue_bytes: Option<usize>,
    /// Apply the per-source and per-room limits to loopback clients too.
    #[arg(long)]
    limit_loopback: bool,
    /// Log filter (error, warn, info, debug, trace, or a tracing directive).
    #[arg(long, default_value = "info")]
    log_level: String,
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    server: ServerConfig,
}

fn config(args: &Args) -> anyhow::Result<ServerConfig> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            toml::from_str::<File>(&text)
                .with_context(|| format!("invalid config {}", path.display()))?
                .server
        }
        None => ServerConfig::default(),
    };
    if let Some(v) = args.listen {
        config.listen = v;
    }
    if let Some(v) = args.max_clients {
        config.max_clients = v;
    }
    if let Some(v) = args.max_room_clients {
        config.max_room_clients = v;
    }
    if let Some(v) = args.max_frame {
        config.max_frame = v;
    }
    if let Some(v) = args.signals_per_second {
        config.signals_per_second = v;
    }
    if let Some(v) = args.idle_timeout_secs {
        config.idle_timeout = std::time::Duration::from_secs(v);
    }
    if let Some(v) = args.metrics {
        config.metrics = Some(v);
    }
    let set = |field: &mut usize, v: Option<usize>| {
        if let Some(v) = v {
            *field = v;
        }
    };
    set(&mut config.max_pending, args.max_pending);
    set(
        &mut config.max_pending_per_source,
        args.max_pending_per_source,
    );
    set(
        &mut config.max_connections_per_source,
        args.max_connections_per_source,
    );
    set(&mut config.client_queue_bytes, args.client_queue_bytes);
    let set = |field: &mut u32, v: Option<u32>| {
        if let Some(v) = v {
            *field = v;
        }
    };
    set(
        &mut config.joins_per_second_per_source,
        args.joins_per_second_per_source,
    );
    set(
        &mut config.join_burst_per_source,
        args.join_burst_per_source,
    );
    set(
        &mut config.joins_per_second_per_room,
        args.joins_per_second_per_room,
    );
    set(&mut config.join_burst_per_room, args.join_burst_per_room);
    if args.limit_loopback {
        config.limit_loopback = true;
    }
    config.validate()?;
    Ok(config)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&args.log_level)?)
        .with_writer(std::io::stderr)
        .init();
    let server = Server::bind(config(&args)?).await?;
    println!("listening on {}", server.url());
    if let Some(addr) = server.metrics_addr() {
        println!("metrics on http://{addr}/metrics");
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    let stats = server.stats();
    server.shutdown().await;
    // Whoever started us may have stopped reading: never panic on a closed stdout.
    let _ = writeln!(
        std::io::stdout(),
        "stopped: {} joins, {} signals relayed, {} frames refused",
        stats.joins,
        stats.signals,
        stats.refused
    );
    Ok(())
}
