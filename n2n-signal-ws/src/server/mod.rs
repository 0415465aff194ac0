//! The signaling server: rooms of authenticated peers that relay signed signals
//! to each other.
//!
//! Every client gets its own task; the shared state is the room table and the
//! per-source table behind one mutex (held only for lookups, never across an
//! await). Every table, queue and buffer is bounded by [`Config`], in bytes
//! where it holds bytes, every wait has a timeout, and a misbehaving client
//! only ever hurts its own connection.
//!
//! - [`config`]: the settings, their defaults and their validation;
//! - `limits`: token buckets, the per-source table, the log budget;
//! - `outbox`: a joined client's byte-bounded queue;
//! - `connection`: one client's task (upgrade, hello, join, relay, close);
//! - `metrics`: counters and the Prometheus endpoint.

pub mod config;
mod connection;
mod limits;
mod metrics;
mod outbox;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use n2n_core::PeerId;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_chacha::ChaCha8Rng;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::info;

pub use config::{Config, ConfigError, MIN_MAX_FRAME};
use limits::{LogBudget, Sources, TokenBucket, limited};
use outbox::Outbox;

/// Longest room name, in bytes.
pub const MAX_ROOM_NAME: usize = 64;

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// A setting cannot work.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Counters of a running server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Clients connected and authenticated now.
    pub clients: usize,
    /// Rooms now.
    pub rooms: usize,
    /// Joins since start.
    pub joins: u64,
    /// Signals relayed since start.
    pub signals: u64,
    /// Frames and joins refused since start.
    pub refused: u64,
}

struct Member {
    conn: u64,
    outbox: Arc<Outbox>,
}

struct Room {
    members: BTreeMap<PeerId, Member>,
    joins: TokenBucket,
}

#[derive(Default)]
struct State {
    rooms: BTreeMap<String, Room>,
    clients: usize,
    sources: Sources,
}

struct Shared {
    config: Config,
    state: Mutex<State>,
    /// Picks contacts; seeded by `config.seed` for reproducible runs.
    contacts: Mutex<ChaCha8Rng>,
    /// Draws challenge nonces; always seeded by the OS, so that nonces never
    /// repeat across restarts, whatever `config.seed` says.
    nonces: Mutex<StdRng>,
    next_conn: AtomicU64,
    queued_bytes: Arc<AtomicUsize>,
    metrics: metrics::Metrics,
    logs: LogBudget,
}

impl Shared {
    /// The state; never panics, since a poisoned lock would take every other
    /// client down with the one that panicked.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Checks `config`, binds `config.listen` (and `config.metrics`) and starts
    /// serving on the current tokio runtime.
    ///
    /// # Errors
    /// [`ServerError::Config`] if a setting cannot work,
    /// [`ServerError::Bind`] if an address cannot be bound.
    pub async fn bind(config: Config) -> Result<Self, ServerError> {
        config.validate()?;
        let bind_err = |addr| move |source| ServerError::Bind { addr, source };
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(bind_err(config.listen))?;
        let addr = listener.local_addr().map_err(bind_err(config.listen))?;
        let metrics_listener = match config.metrics {
            Some(m) => Some(metrics::bind(m).await.map_err(bind_err(m))?),
            None => None,
        };
        let metrics_addr = match &metrics_listener {
            Some(l) => Some(l.local_addr().map_err(bind_err(addr))?),
            None => None,
        };
        let contacts = match config.seed {
            Some(seed) => ChaCha8Rng::seed_from_u64(seed),
            None => ChaCha8Rng::from_os_rng(),
        };
        let shared = Arc::new(Shared {
            config,
            state: Mutex::new(State::default()),
            contacts: Mutex::new(contacts),
            nonces: Mutex::new(StdRng::from_os_rng()),
            next_conn: AtomicU64::new(0),
            queued_bytes: Arc::new(AtomicUsize::new(0)),
            metrics: metrics::Metrics::default(),
            logs: LogBudget::new(),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        if let Some(l) = metrics_listener {
            tokio::spawn(metrics::serve(l, shared.clone(), shutdown_rx.clone()));
        }
        let task = tokio::spawn(accept_loop(listener, shared.clone(), shutdown_rx));
        info!(%addr, metrics = ?metrics_addr, "signaling server listening");
        Ok(Self {
            addr,
            metrics_addr,
            shared,
            shutdown,
            task,
        })
    }

    /// The address the server listens on (with the port the OS chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the metrics endpoint, if [`Config::metrics`] is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The `ws://` URL of the server.
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Current counters.
    pub fn stats(&self) -> Stats {
        let m = &self.shared.metrics;
        let st = self.shared.lock();
        Stats {
            clients: st.clients,
            rooms: st.rooms.len(),
            joins: m.joins.load(Ordering::Relaxed),
            signals: m.signals.load(Ordering::Relaxed),
            refused: m.refusals_total(),
        }
    }

    /// The counters in the Prometheus text format, as served at
    /// [`Config::metrics`].
    pub fn metrics(&self) -> String {
        metrics::render(&self.shared)
    }

    /// Stops accepting, closes every client with a `shutting_down` close frame,
    /// and waits (at most 5 s) until they are gone.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.shared.metrics.open.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        info!(addr = %self.addr, "signaling server stopped");
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer_addr)) => {
                    shared.metrics.accepted.fetch_add(1, Ordering::Relaxed);
                    let source = limits::limited_source(peer_addr.ip(), &shared.config);
                    // Admission happens here, before any task or buffer exists:
                    // a refused connection costs one accept and one close.
                    let admitted = shared.lock().sources.admit(source, &shared.config, Instant::now());
                    if let Err(why) = admitted {
                        shared.metrics.refused_admission(why);
                        limited!(shared, debug, %peer_addr, reason = why.as_str(), "connection refused");
                        continue;
                    }
                    shared.metrics.open.fetch_add(1, Ordering::AcqRel);
                    let guard = connection::ConnGuard::new(shared.clone(), source);
                    tokio::spawn(connection::serve(stream, peer_addr, guard, shutdown.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly.
                    limited!(shared, warn, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}
