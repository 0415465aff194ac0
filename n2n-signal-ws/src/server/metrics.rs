//! The operator's view: counters of the server, and a tiny HTTP responder
//! that serves them in the Prometheus text format at `GET /metrics`.
//!
//! The responder is as bounded as the WebSocket side: a few connections at a
//! time, a small request, a short timeout; anything else gets a 4xx and a close.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use super::Shared;
use super::limits::Admission;
use crate::protocol::ErrorCode;

/// Counters, bumped without locks.
#[derive(Debug, Default)]
pub(super) struct Metrics {
    pub(super) accepted: AtomicU64,
    pub(super) admission: [AtomicU64; Admission::ALL.len()],
    pub(super) joins: AtomicU64,
    pub(super) refusals: [AtomicU64; ErrorCode::ALL.len()],
    pub(super) signals: AtomicU64,
    pub(super) signal_bytes: AtomicU64,
    pub(super) queue_drops: AtomicU64,
    pub(super) open: AtomicUsize,
}

impl Metrics {
    pub(super) fn refused(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            self.refusals[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn refused_admission(&self, why: Admission) {
        if let Some(i) = Admission::ALL.iter().position(|a| *a == why) {
            self.admission[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Frames refused since start, of every code.
    pub(super) fn refusals_total(&self) -> u64 {
        self.refusals
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

/// The counters in the Prometheus text exposition format.
pub(super) fn render(shared: &Shared) -> String {
    let m = &shared.metrics;
    let (clients, rooms, pending) = {
        let st = shared.lock();
        (st.clients, st.rooms.len(), st.sources.pending())
    };
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let mut out = String::with_capacity(4096);
    counter(
        &mut out,
        "n2n_signal_connections_accepted_total",
        "TCP connections accepted.",
        get(&m.accepted),
    );
    let _ = writeln!(
        out,
        "# HELP n2n_signal_connections_refused_total TCP connections closed at once, by reason.\n\
         # TYPE n2n_signal_connections_refused_total counter"
    );
    for (why, c) in Admission::ALL.iter().zip(&m.admission) {
        let _ = writeln!(
            out,
            "n2n_signal_connections_refused_total{{reason=\"{}\"}} {}",
            why.as_str(),
            get(c)
        );
    }
    gauge(
        &mut out,
        "n2n_signal_connections_open",
        "Connections open, joined or not.",
        m.open.load(Ordering::Relaxed) as u64,
    );
    gauge(
        &mut out,
        "n2n_signal_connections_pending",
        "Connections not yet joined.",
        pending as u64,
    );
    gauge(
        &mut out,
        "n2n_signal_clients",
        "Clients joined.",
        clients as u64,
    );
    gauge(&mut out, "n2n_signal_rooms", "Rooms.", rooms as u64);
    counter(&mut out, "n2n_signal_joins_total", "Joins.", get(&m.joins));
    let _ = writeln!(
        out,
        "# HELP n2n_signal_refusals_total Error frames sent, by code: refused frames and joins, and reasons of closes.\n\
         # TYPE n2n_signal_refusals_total counter"
    );
    for (code, c) in ErrorCode::ALL.iter().zip(&m.refusals) {
        let _ = writeln!(
            out,
            "n2n_signal_refusals_total{{code=\"{code}\"}} {}",
            get(c)
        );
    }
    counter(
        &mut out,
        "n2n_signal_signals_relayed_total",
        "Signals handed to their recipient's queue.",
        get(&m.signals),
    );
    counter(
        &mut out,
        "n2n_signal_signal_bytes_relayed_total",
        "Bytes of the frames of relayed signals.",
        get(&m.signal_bytes),
    );
    counter(
        &mut out,
        "n2n_signal_queue_drops_total",
        "Signals not queued: recipient too slow, server budget full, or closing.",
        get(&m.queue_drops),
    );
    gauge(
        &mut out,
        "n2n_signal_queued_bytes",
        "Bytes waiting in the clients' queues.",
        shared.queued_bytes.load(Ordering::Relaxed) as u64,
    );
    counter(
        &mut out,
        "n2n_signal_log_lines_suppressed_total",
        "Log lines caused by remotes and dropped by the log budget.",
        shared.logs.suppressed(),
    );
    out
}

/// Metrics connections served at once; more wait in the OS's backlog.
const MAX_METRICS_CONNECTIONS: usize = 8;
/// Largest request read; the request line is all that matters.
const MAX_REQUEST: usize = 4096;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `GET /metrics` on `listener` until `shutdown` changes.
pub(super) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_METRICS_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = shutdown.changed() => return,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let stream = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &shared)).await;
            drop(permit);
        });
    }
}

async fn answer(mut stream: tokio::net::TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
        if request.len() > MAX_REQUEST {
            return respond(&mut stream, "431 Request Header Fields Too Large", "").await;
        }
    }
    let line = request.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    match (parts.next(), parts.next()) {
        (Some(b"GET"), Some(b"/metrics")) => respond(&mut stream, "200 OK", &render(shared)).await,
        (Some(b"GET"), Some(_)) => respond(&mut stream, "404 Not Found", "").await,
        _ => respond(&mut stream, "405 Method Not Allowed", "").await,
    }
}

async fn respond(
    stream: &mut tokio::net::TcpStream,
    status: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// Binds the metrics address.
pub(super) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
