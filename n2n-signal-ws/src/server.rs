//! The signaling server: rooms of authenticated peers that relay signed signals
//! to each other.
//!
//! Every client gets its own task; the shared state is the room table behind a
//! mutex (held only for lookups, never across an await). Every table and queue
//! is bounded by [`Config`], every wait has a timeout, and a misbehaving client
//! only ever hurts its own connection.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use n2n_core::PeerId;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tracing::{debug, info, warn};

use crate::protocol::{ClientMessage, ErrorCode, PROTOCOL_VERSION, ServerMessage, challenge_bytes};

/// Settings of a server. In a TOML file they form the `[server]` section;
/// durations are in milliseconds there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Largest WebSocket message (and frame) accepted, in bytes.
    pub max_frame: usize,
    /// Signals per second a client may send (sustained).
    pub signals_per_second: u32,
    /// Signals a client may send in a burst.
    pub signal_burst: u32,
    /// Clients in one room at most.
    pub max_room_clients: usize,
    /// Clients connected at most.
    pub max_clients: usize,
    /// Rooms at most.
    pub max_rooms: usize,
    /// A client that sends nothing (not even a WebSocket ping) for this long is
    /// disconnected.
    #[serde(rename = "idle_timeout_ms", with = "millis")]
    pub idle_timeout: Duration,
    /// Time to complete the WebSocket upgrade and the authentication.
    #[serde(rename = "handshake_timeout_ms", with = "millis")]
    pub handshake_timeout: Duration,
    /// Frames waiting to be written to one client at most.
    pub client_queue: usize,
    /// Invalid frames tolerated from one client before it is disconnected.
    pub max_errors: u32,
    /// Seed of the contact choice (`None`: from the OS).
    pub seed: Option<u64>,
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7000)),
            max_frame: 128 * 1024,
            signals_per_second: 100,
            signal_burst: 200,
            max_room_clients: 10_000,
            max_clients: 10_000,
            max_rooms: 1_000,
            idle_timeout: Duration::from_secs(120),
            handshake_timeout: Duration::from_secs(10),
            client_queue: 256,
            max_errors: 16,
            seed: None,
        }
    }
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
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
    /// Frames refused since start.
    pub refused: u64,
}

struct Member {
    conn: u64,
    tx: mpsc::Sender<Outgoing>,
}

#[derive(Default)]
struct State {
    rooms: BTreeMap<String, BTreeMap<PeerId, Member>>,
    clients: usize,
    connections: usize,
    stats: Stats,
}

enum Outgoing {
    Frame(ServerMessage),
    Close(ErrorCode, String),
}

struct Shared {
    config: Config,
    state: Mutex<State>,
    rng: Mutex<ChaCha8Rng>,
    next_conn: std::sync::atomic::AtomicU64,
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds `config.listen` and starts serving on the current tokio runtime.
    ///
    /// # Errors
    /// [`ServerError::Bind`] if the address cannot be bound.
    pub async fn bind(config: Config) -> Result<Self, ServerError> {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
        let rng = match config.seed {
            Some(seed) => ChaCha8Rng::seed_from_u64(seed),
            None => ChaCha8Rng::from_os_rng(),
        };
        let shared = Arc::new(Shared {
            config,
            state: Mutex::new(State::default()),
            rng: Mutex::new(rng),
            next_conn: Default::default(),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, shared.clone(), shutdown_rx));
        info!(%addr, "signaling server listening");
        Ok(Self {
            addr,
            shared,
            shutdown,
            task,
        })
    }

    /// The address the server listens on (with the port the OS chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `ws://` URL of the server.
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Current counters.
    pub fn stats(&self) -> Stats {
        let st = self.shared.state.lock().expect("server state lock");
        Stats {
            clients: st.clients,
            rooms: st.rooms.len(),
            ..st.stats
        }
    }

    /// Stops accepting, closes every client with a `shutting_down` close frame,
    /// and waits (at most 5 s) until they are gone.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while self
            .shared
            .state
            .lock()
            .expect("server state lock")
            .connections
            > 0
            && Instant::now() < deadline
        {
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
                    let shared = shared.clone();
                    let shutdown = shutdown.clone();
                    tokio::spawn(async move {
                        serve_client(stream, peer_addr, shared, shutdown).await;
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

/// Longest room name, in bytes.
pub const MAX_ROOM_NAME: usize = 64;

/// Longest wait to hand one frame to a client; a client that does not read is
/// dropped after it.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

async fn send_json(ws: &mut Ws, message: &ServerMessage) -> bool {
    match serde_json::to_string(message) {
        Ok(text) => matches!(
            tokio::time::timeout(SEND_TIMEOUT, ws.send(WsMessage::text(text))).await,
            Ok(Ok(()))
        ),
        Err(_) => false,
    }
}

async fn close(ws: &mut Ws, code: ErrorCode, message: &str) {
    let _ = send_json(
        ws,
        &ServerMessage::Error {
            code,
            message: message.to_string(),
        },
    )
    .await;
    let close_code = match code {
        ErrorCode::FrameTooLarge => CloseCode::Size,
        ErrorCode::ShuttingDown => CloseCode::Away,
        ErrorCode::AuthenticationFailed | ErrorCode::Impersonation => CloseCode::Policy,
        ErrorCode::RoomFull | ErrorCode::ServerFull => CloseCode::Again,
        _ => CloseCode::Policy,
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        ws.close(Some(CloseFrame {
            code: close_code,
            reason: code.as_str().into(),
        })),
    )
    .await;
}

struct ConnGuard {
    shared: Arc<Shared>,
    joined: Option<(String, PeerId, u64)>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        // Never panic here: a poisoned lock would take every other client down.
        let mut st = self
            .shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        st.connections = st.connections.saturating_sub(1);
        if let Some((room, peer, conn)) = self.joined.take() {
            let mut empty = false;
            let mut removed = false;
            if let Some(members) = st.rooms.get_mut(&room) {
                // A peer that re-joined from another connection stays, and its
                // new connection keeps counting as the one client.
                if members.get(&peer).is_some_and(|m| m.conn == conn) {
                    members.remove(&peer);
                    removed = true;
                }
                empty = members.is_empty();
            }
            if empty {
                st.rooms.remove(&room);
            }
            if removed {
                st.clients = st.clients.saturating_sub(1);
            }
            debug!(peer = %peer.short(), %room, "client left");
        }
    }
}

async fn serve_client(
    stream: TcpStream,
    peer_addr: SocketAddr,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let config = &shared.config;
    {
        let mut st = shared.state.lock().expect("server state lock");
        // Bound the connections that are not yet authenticated too.
        if st.connections >= config.max_clients + 64 {
            debug!(%peer_addr, "connection refused: too many connections");
            return;
        }
        st.connections += 1;
    }
    let mut guard = ConnGuard {
        shared: shared.clone(),
        joined: None,
    };
    let _ = stream.set_nodelay(true);
    // Small buffers: thousands of mostly idle clients, small frames.
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(config.max_frame))
        .max_frame_size(Some(config.max_frame));
    let mut ws = match tokio::time::timeout(
        config.handshake_timeout,
        tokio_tungstenite::accept_async_with_config(stream, Some(ws_config)),
    )
    .await
    {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            debug!(%peer_addr, error = %e, "websocket upgrade failed");
            return;
        }
        Err(_) => {
            debug!(%peer_addr, "websocket upgrade timed out");
            return;
        }
    };

    // Authentication: sign our nonce for the room you join.
    let mut nonce = [0u8; 32];
    shared.rng.lock().expect("rng lock").fill_bytes(&mut nonce);
    if !send_json(
        &mut ws,
        &ServerMessage::Challenge {
            nonce: hex::encode(nonce),
            version: PROTOCOL_VERSION,
        },
    )
    .await
    {
        return;
    }
    let hello = tokio::time::timeout(config.handshake_timeout, next_text(&mut ws)).await;
    let (peer, room) = match hello {
        Err(_) => return close(&mut ws, ErrorCode::IdleTimeout, "no hello in time").await,
        Ok(Err((code, message))) => return close(&mut ws, code, &message).await,
        Ok(Ok(None)) => return,
        Ok(Ok(Some(text))) => match serde_json::from_str::<ClientMessage>(&text) {
            Ok(ClientMessage::Hello {
                peer,
                room,
                signature,
            }) => {
                if room.is_empty() || room.len() > MAX_ROOM_NAME {
                    return close(
                        &mut ws,
                        ErrorCode::BadFrame,
                        "the room name must be 1 to 64 bytes long",
                    )
                    .await;
                }
                let mut sig = [0u8; 64];
                let valid = hex::decode_to_slice(&signature, &mut sig).is_ok()
                    && peer.verify(&challenge_bytes(&nonce, &room), &sig).is_ok();
                if !valid {
                    return close(
                        &mut ws,
                        ErrorCode::AuthenticationFailed,
                        "the hello signature does not prove ownership of this peer id",
                    )
                    .await;
                }
                (peer, room)
            }
            Ok(ClientMessage::Signal { .. }) => {
                return close(&mut ws, ErrorCode::Unexpected, "hello expected first").await;
            }
            Err(e) => return close(&mut ws, ErrorCode::BadFrame, &format!("bad hello: {e}")).await,
        },
    };

    // Join the room.
    let conn = shared
        .next_conn
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (tx, mut rx) = mpsc::channel::<Outgoing>(config.client_queue);
    let joined = {
        let mut st = shared.state.lock().expect("server state lock");
        let members = st.rooms.get(&room).map_or(0, |m| m.len());
        let replacing = st.rooms.get(&room).is_some_and(|m| m.contains_key(&peer));
        if !replacing && st.clients >= config.max_clients {
            Err((ErrorCode::ServerFull, "the server is full"))
        } else if !replacing && members >= config.max_room_clients {
            Err((ErrorCode::RoomFull, "the room is full"))
        } else if members == 0 && st.rooms.len() >= config.max_rooms {
            Err((ErrorCode::ServerFull, "too many rooms"))
        } else {
            let mut rng = shared.rng.lock().expect("rng lock");
            let room_members = st.rooms.entry(room.clone()).or_default();
            let others: Vec<PeerId> = room_members
                .keys()
                .filter(|p| **p != peer)
                .copied()
                .collect();
            let contact = (!others.is_empty()).then(|| others[rng.random_range(0..others.len())]);
            drop(rng);
            let old = room_members.insert(peer, Member { conn, tx });
            if let Some(old) = old {
                let _ = old.tx.try_send(Outgoing::Close(
                    ErrorCode::Replaced,
                    "the same peer joined from another connection".into(),
                ));
            } else {
                st.clients += 1;
            }
            st.stats.joins += 1;
            Ok(contact)
        }
    };
    let contact = match joined {
        Ok(contact) => contact,
        Err((code, message)) => return close(&mut ws, code, message).await,
    };
    guard.joined = Some((room.clone(), peer, conn));
    info!(peer = %peer.short(), %room, %peer_addr, "client joined");
    if !send_json(&mut ws, &ServerMessage::Welcome { contact }).await {
        return;
    }

    // Relay.
    let mut bucket = TokenBucket::new(config.signals_per_second, config.signal_burst);
    let mut errors = 0u32;
    loop {
        let frame = tokio::select! {
            biased;
            _ = shutdown.changed() => {
                return close(&mut ws, ErrorCode::ShuttingDown, "the server is shutting down").await;
            }
            out = rx.recv() => match out {
                Some(Outgoing::Frame(m)) => {
                    if !send_json(&mut ws, &m).await { return; }
                    continue;
                }
                Some(Outgoing::Close(code, message)) => return close(&mut ws, code, &message).await,
                None => return,
            },
            frame = tokio::time::timeout(config.idle_timeout, next_frame(&mut ws)) => frame,
        };
        let text = match frame {
            Err(_) => {
                return close(
                    &mut ws,
                    ErrorCode::IdleTimeout,
                    "no frame within the idle timeout",
                )
                .await;
            }
            Ok(Ok(Some(Incoming::Text(text)))) => text,
            Ok(Ok(Some(Incoming::Alive))) => continue,
            Ok(Ok(None)) => return,
            Ok(Err((code, message))) => return close(&mut ws, code, &message).await,
        };
        let refusal = match serde_json::from_str::<ClientMessage>(&text) {
            Err(e) => Some((ErrorCode::BadFrame, format!("not a client message: {e}"))),
            Ok(ClientMessage::Hello { .. }) => {
                Some((ErrorCode::Unexpected, "already joined".to_string()))
            }
            Ok(ClientMessage::Signal { signal }) => {
                if !bucket.take(Instant::now()) {
                    Some((ErrorCode::RateLimited, "too many signals per second".into()))
                } else if let Err(e) = signal.verify_signature() {
                    Some((ErrorCode::BadSignature, e.to_string()))
                } else if signal.signal.from != peer {
                    Some((
                        ErrorCode::Impersonation,
                        "a client may only send signals it authored".into(),
                    ))
                } else {
                    relay(&shared, &room, signal)
                }
            }
        };
        if let Some((code, message)) = refusal {
            shared
                .state
                .lock()
                .expect("server state lock")
                .stats
                .refused += 1;
            debug!(peer = %peer.short(), %code, %message, "frame refused");
            errors += 1;
            if errors > config.max_errors {
                return close(&mut ws, code, "too many refused frames").await;
            }
            if !send_json(&mut ws, &ServerMessage::Error { code, message }).await {
                return;
            }
        }
    }
}

fn relay(
    shared: &Shared,
    room: &str,
    signal: n2n_core::SignedSignal,
) -> Option<(ErrorCode, String)> {
    let to = signal.signal.to;
    let mut st = shared.state.lock().expect("server state lock");
    let Some(member) = st.rooms.get(room).and_then(|m| m.get(&to)) else {
        return Some((ErrorCode::UnknownPeer, format!("{to} is not in this room")));
    };
    match member
        .tx
        .try_send(Outgoing::Frame(ServerMessage::Signal { signal }))
    {
        Ok(()) => {
            st.stats.signals += 1;
            None
        }
        Err(_) => Some((
            ErrorCode::RecipientBusy,
            "the recipient is not keeping up".into(),
        )),
    }
}

/// A frame from a client.
enum Incoming {
    /// A text frame: a protocol message.
    Text(String),
    /// A ping or pong: the client is alive (the library answers pings).
    Alive,
}

/// Reads the next frame; `Ok(None)` when the client is gone.
async fn next_frame(ws: &mut Ws) -> Result<Option<Incoming>, (ErrorCode, String)> {
    use tokio_tungstenite::tungstenite::Error;
    match ws.next().await {
        None => Ok(None),
        Some(Ok(WsMessage::Text(t))) => Ok(Some(Incoming::Text(t.to_string()))),
        Some(Ok(WsMessage::Binary(_))) => Err((
            ErrorCode::BadFrame,
            "binary frames are not part of the protocol".into(),
        )),
        Some(Ok(WsMessage::Close(_))) => Ok(None),
        Some(Ok(_)) => Ok(Some(Incoming::Alive)),
        Some(Err(Error::Capacity(e))) => Err((ErrorCode::FrameTooLarge, e.to_string())),
        Some(Err(e)) => {
            debug!(error = %e, "websocket error");
            Ok(None)
        }
    }
}

/// Reads the next text frame, skipping pings; `Ok(None)` when the client is gone.
async fn next_text(ws: &mut Ws) -> Result<Option<String>, (ErrorCode, String)> {
    loop {
        match next_frame(ws).await? {
            None => return Ok(None),
            Some(Incoming::Text(t)) => return Ok(Some(t)),
            Some(Incoming::Alive) => continue,
        }
    }
}

/// Allows `rate` signals per second with bursts of `burst`.
struct TokenBucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: u32, burst: u32) -> Self {
        Self {
            tokens: burst.max(1) as f64,
            rate: rate as f64,
            burst: burst.max(1) as f64,
            last: Instant::now(),
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_allows_bursts_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 5);
        assert!((0..5).all(|_| b.take(t0)));
        assert!(!b.take(t0));
        assert!(b.take(t0 + Duration::from_millis(100)));
        assert!(!b.take(t0 + Duration::from_millis(100)));
    }

    #[test]
    fn config_reads_from_toml() {
        let c: Config =
            toml::from_str("listen = \"127.0.0.1:0\"\nidle_timeout_ms = 500\n").unwrap();
        assert_eq!(c.idle_timeout, Duration::from_millis(500));
        assert!(toml::from_str::<Config>("bogus = 1").is_err());
    }
}
