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
