//! The client: a [`Signaling`] over one WebSocket connection to a server.
//!
//! [`WsSignaling::connect`] connects, authenticates and joins a room, and fails
//! right away with a clear [`SignalingError`] when the server is unreachable or
//! refuses. Afterwards one task owns the socket; if the connection drops, it
//! reconnects with exponential backoff and joins the same room again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{SinkExt, StreamExt};
use n2n_core::signaling::{Signaling, SignalingError};
use n2n_core::{Keypair, PeerId, SignedSignal};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::{Mutex as AsyncMutex, mpsc};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::{debug, info, warn};

use crate::join::{self, Backoff};
use crate::protocol::{ClientMessage, ErrorCode, ServerMessage, check_key};

/// Settings of a client. In a stack file: the `[signaling]` section with
/// `name = "ws"`, `url`, `room`, and durations in milliseconds.
/// [`WsSignaling::connect`] checks them first ([`ClientConfig::validate`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// Time to connect, authenticate and join.
    #[serde(rename = "connect_timeout_ms", with = "millis")]
    pub connect_timeout: Duration,
    /// Whether to reconnect after the connection drops.
    pub reconnect: bool,
    /// First reconnection delay; it doubles up to `backoff_max`.
    #[serde(rename = "backoff_min_ms", with = "millis")]
    pub backoff_min: Duration,
    /// Longest reconnection delay.
    #[serde(rename = "backoff_max_ms", with = "millis")]
    pub backoff_max: Duration,
    /// Signals waiting in each direction at most.
    pub queue: usize,
    /// Largest frame accepted from the server, in bytes.
    pub max_frame: usize,
    /// Period of the WebSocket pings that keep a quiet connection alive (the
    /// server drops clients idle for longer than its idle timeout). A server
    /// silent for three periods is deemed lost and the client reconnects.
    #[serde(rename = "keepalive_ms", with = "millis")]
    pub keepalive: Duration,
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

/// Longest duration setting accepted: a day.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// A client setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ws client setting `{field}`: {message}")]
pub struct ClientConfigError {
    /// The setting, as named in the stack file.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl ClientConfig {
    /// Checks that the settings can work.
    ///
    /// # Errors
    /// A [`ClientConfigError`] naming the first setting that cannot work: a
    /// zero or over-a-day duration, `backoff_min` over `backoff_max`, a zero
    /// queue, a `max_frame` below the largest server frame
    /// ([`crate::server::MIN_MAX_FRAME`]).
    pub fn validate(&self) -> Result<(), ClientConfigError> {
        let err = |field, message: String| Err(ClientConfigError { field, message });
        let durations = [
            (
                "connect_timeout_ms",
                self.connect_timeout,
                Duration::from_millis(1),
            ),
            ("backoff_min_ms", self.backoff_min, Duration::from_millis(1)),
            ("backoff_max_ms", self.backoff_max, Duration::from_millis(1)),
            ("keepalive_ms", self.keepalive, Duration::from_millis(10)),
        ];
        for (field, value, min) in durations {
            if value < min || value > MAX_DURATION {
                return err(
                    field,
                    format!(
                        "{} ms is outside {} ms to {} ms",
                        value.as_millis(),
                        min.as_millis(),
                        MAX_DURATION.as_millis()
                    ),
                );
            }
        }
        if self.backoff_min > self.backoff_max {
            return err("backoff_min_ms", "must not exceed backoff_max_ms".into());
        }
        if self.queue == 0 {
            return err("queue", "must be greater than 0".into());
        }
        if self.max_frame < crate::server::MIN_MAX_FRAME {
            return err(
                "max_frame",
                format!(
                    "{} bytes cannot carry the largest signal ({} bytes at least)",
                    self.max_frame,
                    crate::server::MIN_MAX_FRAME
                ),
            );
        }
        Ok(())
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            reconnect: true,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            queue: 256,
            max_frame: join::CLIENT_MAX_FRAME,
            keepalive: Duration::from_secs(30),
        }
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A [`Signaling`] through a WebSocket signaling server.
#[derive(Debug)]
pub struct WsSignaling {
    local: PeerId,
    room: String,
    url: String,
    contact: Option<PeerId>,
    outgoing: mpsc::Sender<SignedSignal>,
    incoming: AsyncMutex<mpsc::Receiver<SignedSignal>>,
    last_error: Arc<Mutex<Option<(ErrorCode, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WsSignaling {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Joined {
    ws: Ws,
    contact: Option<PeerId>,
}

/// Reads one frame from the server: a message, or `None` for a ping or pong.
async fn next_server_frame(ws: &mut Ws) -> Result<Option<ServerMessage>, SignalingError> {
    match ws.next().await {
        Some(Ok(WsMessage::Text(t))) => serde_json::from_str(&t).map(Some).map_err(|e| {
            SignalingError::Other(format!(
                "server sent a frame that is not a server message: {e}"
            ))
        }),
        Some(Ok(WsMessage::Close(frame))) => {
            let reason = frame.map(|f| f.reason.to_string()).unwrap_or_default();
            Err(SignalingError::Refused(format!(
                "server closed the connection: {reason}"
            )))
        }
        Some(Ok(WsMessage::Binary(_))) => Err(SignalingError::Other(
            "server sent a binary frame, which is not part of the protocol".into(),
        )),
        Some(Ok(_)) => Ok(None),
        Some(Err(e)) => Err(SignalingError::Other(e.to_string())),
        None => Err(SignalingError::Closed),
    }
}

/// Reads the next message from the server, skipping pings and pongs.
async fn next_server_message(ws: &mut Ws) -> Result<ServerMessage, SignalingError> {
    loop {
        if let Some(message) = next_server_frame(ws).await? {
            return Ok(message);
        }
    }
}

/// Connects, authenticates and joins `room`.
async fn dial(
    url: &str,
    room: &str,
    keypair: &Keypair,
    config: &ClientConfig,
) -> Result<Joined, SignalingError> {
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(config.max_frame))
        .max_frame_size(Some(config.max_frame));
    let attempt = async {
        let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(ws_config), true)
            .await
            .map_err(|e| SignalingError::Unreachable(format!("{url}: {e}")))?;
        let nonce = join::challenge(next_server_message(&mut ws).await?)?;
        ws.send(WsMessage::text(join::hello(keypair, room, &nonce)))
            .await
            .map_err(|e| SignalingError::Other(e.to_string()))?;
        let contact = join::welcome(next_server_message(&mut ws).await?)?;
        Ok(Joined { ws, contact })
    };
    tokio::time::timeout(config.connect_timeout, attempt)
        .await
        .map_err(|_| SignalingError::Timeout)?
}

/// Dials; a join refused with `join_rate_limited` (an address shared by many
/// clients, say) is tried again with backoff, for one `connect_timeout` at most.
async fn dial_patiently(
    url: &str,
    room: &str,
    keypair: &Keypair,
    config: &ClientConfig,
) -> Result<Joined, SignalingError> {
    let give_up = tokio::time::Instant::now() + config.connect_timeout;
    let mut backoff = Backoff::new(config.backoff_min, config.backoff_max);
    loop {
        match dial(url, room, keypair, config).await {
            Err(e)
                if join::rate_limited(&e)
                    && tokio::time::Instant::now() + backoff.peek() < give_up =>
            {
                let delay = backoff.next_delay();
                debug!(reason = %e, ?delay, "join rate-limited; trying again");
                tokio::time::sleep(delay).await;
            }
            other => return other,
        }
    }
}

impl WsSignaling {
    /// Connects to the server at `url` (`ws://host:port`), proves ownership of
    /// `keypair`'s peer id, and joins `room`.
    ///
    /// # Errors
    /// [`SignalingError::Unreachable`] if the server cannot be reached,
    /// [`SignalingError::Refused`] if it refuses (full, bad authentication;
    /// `join_rate_limited` is tried again for one `connect_timeout`),
    /// [`SignalingError::Timeout`] after [`ClientConfig::connect_timeout`],
    /// [`SignalingError::Other`] for settings that cannot work
    /// ([`ClientConfig::validate`]).
    pub async fn connect(
        url: &str,
        room: &str,
        keypair: &Keypair,
        config: ClientConfig,
    ) -> Result<Arc<Self>, SignalingError> {
        config
            .validate()
            .map_err(|e| SignalingError::Other(e.to_string()))?;
        let joined = dial_patiently(url, room, keypair, &config).await?;
        info!(%url, %room, contact = ?joined.contact.map(|c| c.short()), "joined signaling room");
        let (out_tx, out_rx) = mpsc::channel(config.queue.max(1));
        let (in_tx, in_rx) = mpsc::channel(config.queue.max(1));
        let last_error = Arc::new(Mutex::new(None));
        let contact = joined.contact;
        let task = tokio::spawn(run(
            joined.ws,
            url.to_string(),
            room.to_string(),
            keypair.clone(),
            config,
            out_rx,
            in_tx,
            last_error.clone(),
        ));
        Ok(Arc::new(Self {
            local: keypair.peer_id(),
            room: room.to_string(),
            url: url.to_string(),
            contact,
            outgoing: out_tx,
            incoming: AsyncMutex::new(in_rx),
            last_error,
            task,
        }))
    }

    /// The contact the server gave when this client first joined (`None`: first).
    pub fn contact(&self) -> Option<PeerId> {
        self.contact
    }

    /// The local peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    /// The room.
    pub fn room(&self) -> &str {
        &self.room
    }

    /// The server URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The last error frame the server sent (a refused signal, for instance).
    pub fn last_error(&self) -> Option<(ErrorCode, String)> {
        self.last_error.lock().expect("error lock").clone()
    }

    /// Leaves the room and closes the connection for good.
    pub fn close(&self) {
        self.task.abort();
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    mut ws: Ws,
    url: String,
    room: String,
    keypair: Keypair,
    config: ClientConfig,
    mut outgoing: mpsc::Receiver<SignedSignal>,
    incoming: mpsc::Sender<SignedSignal>,
    last_error: Arc<Mutex<Option<(ErrorCode, String)>>>,
) {
    // Validated, and clamped anyway: no setting may make the task panic.
    let keepalive = config
        .keepalive
        .clamp(Duration::from_millis(10), MAX_DURATION);
    let silence = keepalive.saturating_mul(3);
    // Counters of what a server may send without limit; logged on powers of
    // two so that it cannot flood our logs.
    let (mut dropped, mut notes) = (0u64, 0u64);
    loop {
        // Serve the connection until it drops.
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = tokio::time::Instant::now();
        let refused_for_good = loop {
            tokio::select! {
                _ = ping.tick() => {
                    if last_heard.elapsed() > silence {
                        warn!("the signaling server went silent; reconnecting");
                        break false;
                    }
                    let sent = tokio::time::timeout(keepalive, ws.send(WsMessage::Ping(Default::default()))).await;
                    if !matches!(sent, Ok(Ok(()))) {
                        break false;
                    }
                }
                signal = outgoing.recv() => {
                    let Some(signal) = signal else {
                        let _ = ws.close(None).await;
                        return;
                    };
                    let Ok(text) = serde_json::to_string(&ClientMessage::Signal { signal }) else { continue };
                    let sent = tokio::time::timeout(config.connect_timeout, ws.send(WsMessage::text(text))).await;
                    if !matches!(sent, Ok(Ok(()))) {
                        break false;
                    }
                }
                message = next_server_frame(&mut ws) => match message {
                    Ok(None) => last_heard = tokio::time::Instant::now(),
                    Ok(Some(ServerMessage::Signal { signal })) => {
                        last_heard = tokio::time::Instant::now();
                        // A signal by a weak key proves nothing: drop it here.
                        let weak = check_key(&signal.signal.from).is_err();
                        if weak || incoming.try_send(signal).is_err() {
                            dropped += 1;
                            if dropped.is_power_of_two() {
                                warn!(dropped, weak, "incoming signal dropped (queue full or weak author key)");
                            }
                        }
                    }
                    Ok(Some(ServerMessage::Error { code, message })) => {
                        last_heard = tokio::time::Instant::now();
                        notes += 1;
                        if notes.is_power_of_two() {
                            debug!(%code, %message, notes, "the signaling server refused a frame");
                        }
                        *last_error.lock().expect("error lock") = Some((code, message));
                    }
                    Ok(Some(other)) => {
                        last_heard = tokio::time::Instant::now();
                        notes += 1;
                        if notes.is_power_of_two() {
                            debug!(?other, notes, "unexpected server message ignored");
                        }
                    }
                    Err(SignalingError::Refused(reason)) => {
                        warn!(%reason, "signaling server closed the connection");
                        // Replaced by another connection of ours: do not fight it.
                        break reason.contains(ErrorCode::Replaced.as_str());
                    }
                    Err(e) => {
                        debug!(error = %e, "signaling connection lost");
                        break false;
                    }
                },
            }
        };
        if refused_for_good || !config.reconnect {
            return;
        }
        // Reconnect with exponential backoff, joining the same room again.
        let mut backoff = Backoff::new(config.backoff_min, config.backoff_max);
        ws = loop {
            let delay = backoff.next_delay();
            tokio::time::sleep(delay).await;
            match dial(&url, &room, &keypair, &config).await {
                Ok(joined) => {
                    info!(%url, %room, "reconnected to the signaling server");
                    break joined.ws;
                }
                Err(SignalingError::Refused(reason))
                    if !reason.contains("server closed") && !retryable(&reason) =>
                {
                    warn!(%reason, "signaling server refuses us; giving up");
                    return;
                }
                Err(e) => debug!(error = %e, ?delay, "reconnection failed"),
            }
        };
    }
}

/// Whether a refusal (`"<code>: <message>"`) may pass by itself: a full or
/// busy server, a join rate limit.
fn retryable(reason: &str) -> bool {
    ErrorCode::ALL.iter().any(|c| {
        c.is_retryable()
            && reason
                .strip_prefix(c.as_str())
                .is_some_and(|rest| rest.starts_with(':'))
    })
}

#[async_trait]
impl Signaling for WsSignaling {
    fn name(&self) -> &str {
        "ws"
    }

    async fn join(&self) -> Result<Option<PeerId>, SignalingError> {
        Ok(self.contact)
    }

    async fn send(&self, signal: SignedSignal) -> Result<(), SignalingError> {
        if self.task.is_finished() {
            return Err(SignalingError::Closed);
        }
        tokio::time::timeout(Duration::from_secs(5), self.outgoing.send(signal))
            .await
            .map_err(|_| SignalingError::Timeout)?
            .map_err(|_| SignalingError::Closed)
    }

    async fn recv(&self) -> Result<SignedSignal, SignalingError> {
        self.incoming
            .lock()
            .await
            .recv()
            .await
            .ok_or(SignalingError::Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        ClientConfig::default().validate().unwrap();
    }

    #[test]
    fn settings_that_cannot_work_are_named() {
        let field = |c: ClientConfig| c.validate().unwrap_err().field;
        let d = ClientConfig::default;
        let huge = Duration::from_millis(u64::MAX);
        assert_eq!(
            field(ClientConfig {
                keepalive: huge,
                ..d()
            }),
            "keepalive_ms"
        );
        assert_eq!(
            field(ClientConfig {
                backoff_max: huge,
                ..d()
            }),
            "backoff_max_ms"
        );
        assert_eq!(
            field(ClientConfig {
                backoff_min: Duration::ZERO,
                ..d()
            }),
            "backoff_min_ms"
        );
        assert_eq!(
            field(ClientConfig {
                backoff_min: Duration::from_secs(20),
                ..d()
            }),
            "backoff_min_ms"
        );
        assert_eq!(field(ClientConfig { queue: 0, ..d() }), "queue");
        assert_eq!(
            field(ClientConfig {
                max_frame: 1024,
                ..d()
            }),
            "max_frame"
        );
    }

    #[test]
    fn busy_refusals_are_retried_and_others_are_not() {
        assert!(retryable("join_rate_limited: too many joins"));
        assert!(retryable("server_full: the server is full"));
        assert!(!retryable("authentication_failed: bad"));
        assert!(!retryable("join_rate_limitedx: no"));
    }
}
