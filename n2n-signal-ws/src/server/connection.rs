//! One client's task: WebSocket upgrade, challenge and hello, join, relay,
//! and the close with the right code.
//!
//! Until its welcome a connection is *pending* and counts against the pending
//! pool and its source's pending limit; the whole handshake has one deadline.
//! Afterwards it is a member of its room with a byte-bounded [`Outbox`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use n2n_core::{PeerId, SignedSignal};
use rand::{Rng, RngCore};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};

use super::limits::{TokenBucket, limited};
use super::outbox::{Next, Outbox, Refused};
use super::{MAX_ROOM_NAME, Member, Room, Shared};
use crate::protocol::{
    ClientMessage, ErrorCode, PROTOCOL_VERSION, ServerMessage, challenge_bytes, verify_strict,
};

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

/// Longest wait to hand one frame to a client; a client that does not read is
/// dropped after it.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a close frame to go out.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// What is wrong with a client's input: the error code, the WebSocket close
/// code if it is fatal, and a message.
struct Fault {
    code: ErrorCode,
    close: Option<CloseCode>,
    message: String,
}

impl Fault {
    /// A refusal the connection survives.
    fn refusal(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            close: None,
            message: message.into(),
        }
    }

    /// A fault that ends the connection with `close`.
    fn fatal(code: ErrorCode, close: CloseCode, message: impl Into<String>) -> Self {
        Self {
            code,
            close: Some(close),
            message: message.into(),
        }
    }
}

/// Releases what a connection holds, however its task ends.
pub(super) struct ConnGuard {
    shared: Arc<Shared>,
    /// `None`: exempt from the per-source limits.
    source: Option<IpAddr>,
    joined: Option<(String, PeerId, u64)>,
}

impl ConnGuard {
    /// Takes over a connection admitted by the accept loop.
    pub(super) fn new(shared: Arc<Shared>, source: Option<IpAddr>) -> Self {
        Self {
            shared,
            source,
            joined: None,
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let shared = self.shared.clone();
        let mut st = shared.lock();
        st.sources
            .release(self.source, self.joined.is_none(), Instant::now());
        if let Some((room, peer, conn)) = self.joined.take() {
            let mut empty = false;
            let mut removed = false;
            if let Some(r) = st.rooms.get_mut(&room) {
                // A peer that re-joined from another connection stays, and its
                // new connection keeps counting as the one client.
                if r.members.get(&peer).is_some_and(|m| m.conn == conn) {
                    r.members.remove(&peer);
                    removed = true;
                }
                empty = r.members.is_empty();
            }
            if empty {
                st.rooms.remove(&room);
            }
            if removed {
                st.clients = st.clients.saturating_sub(1);
            }
            limited!(shared, debug, peer = %peer.short(), %room, "client left");
        }
        drop(st);
        shared.metrics.open.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn send_text(ws: &mut Ws, text: String) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, ws.send(WsMessage::text(text))).await,
        Ok(Ok(()))
    )
}

async fn send_json(ws: &mut Ws, message: &ServerMessage) -> bool {
    match serde_json::to_string(message) {
        Ok(text) => send_text(ws, text).await,
        Err(_) => false,
    }
}

/// Sends the error frame, then a close frame whose reason is the code.
async fn close(ws: &mut Ws, shared: &Shared, code: ErrorCode, close: CloseCode, message: &str) {
    shared.metrics.refused(code);
    let error = ServerMessage::Error {
        code,
        message: message.to_string(),
    };
    if let Ok(text) = serde_json::to_string(&error) {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.send(WsMessage::text(text))).await;
    }
    let frame = CloseFrame {
        code: close,
        reason: code.as_str().into(),
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(Some(frame))).await;
}

async fn close_fault(ws: &mut Ws, shared: &Shared, fault: Fault) {
    let code = fault.close.unwrap_or(CloseCode::Policy);
    close(ws, shared, fault.code, code, &fault.message).await;
}

/// The close code of a fatal refusal.
fn close_code(code: ErrorCode) -> CloseCode {
    match code {
        ErrorCode::FrameTooLarge => CloseCode::Size,
        ErrorCode::ShuttingDown => CloseCode::Away,
        ErrorCode::RoomFull | ErrorCode::ServerFull | ErrorCode::JoinRateLimited => {
            CloseCode::Again
        }
        _ => CloseCode::Policy,
    }
}

/// Serves one admitted connection until it ends.
pub(super) async fn serve(
    stream: TcpStream,
    peer_addr: SocketAddr,
    mut guard: ConnGuard,
    mut shutdown: watch::Receiver<bool>,
) {
    let shared = guard.shared.clone();
    let config = &shared.config;
    let deadline = tokio::time::Instant::now() + config.handshake_timeout;
    let _ = stream.set_nodelay(true);
    // Small buffers: thousands of mostly idle clients, small frames. The write
    // buffer is bounded: a client that never reads cannot make it grow (with
    // pongs, say); it holds one largest frame and a pong.
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(config.max_frame + 1024)
        .max_message_size(Some(config.max_frame))
        .max_frame_size(Some(config.max_frame));
    let upgraded = tokio::time::timeout_at(
        deadline,
        tokio_tungstenite::accept_async_with_config(stream, Some(ws_config)),
    )
    .await;
    let mut ws = match upgraded {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            limited!(shared, debug, %peer_addr, error = %e, "websocket upgrade failed");
            return;
        }
        Err(_) => {
            limited!(shared, debug, %peer_addr, "websocket upgrade timed out");
            return;
        }
    };

    let (peer, room) = match handshake(&mut ws, &shared, deadline).await {
        Ok(Some(joined)) => joined,
        Ok(None) => return,
        Err(fault) => return close_fault(&mut ws, &shared, fault).await,
    };
    let conn = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let outbox = Arc::new(Outbox::new(
        config.client_queue,
        config.client_queue_bytes,
        shared.queued_bytes.clone(),
        config.max_queued_bytes,
    ));
    let contact = match join(&shared, guard.source, &room, peer, conn, outbox.clone()) {
        Ok(contact) => contact,
        Err(fault) => return close_fault(&mut ws, &shared, fault).await,
    };
    guard.joined = Some((room.clone(), peer, conn));
    limited!(shared, info, peer = %peer.short(), %room, %peer_addr, "client joined");
    if !send_json(&mut ws, &ServerMessage::Welcome { contact }).await {
        return;
    }

    let mut bucket = TokenBucket::new(
        config.signals_per_second,
        config.signal_burst,
        Instant::now(),
    );
    let mut errors = 0u32;
    let mut last_heard = tokio::time::Instant::now();
    loop {
        // Unbiased: neither a flood to this client nor one from it starves
        // the other direction.
        let frame = tokio::select! {
            _ = shutdown.changed() => {
                return close(&mut ws, &shared, ErrorCode::ShuttingDown, CloseCode::Away, "the server is shutting down").await;
            }
            next = outbox.next() => match next {
                Next::Frame(text) => {
                    if !send_text(&mut ws, text).await { return; }
                    continue;
                }
                Next::Close(code, message) => return close(&mut ws, &shared, code, close_code(code), &message).await,
            },
            _ = tokio::time::sleep_until(last_heard + config.idle_timeout) => {
                return close(&mut ws, &shared, ErrorCode::IdleTimeout, CloseCode::Policy, "no frame within the idle timeout").await;
            }
            frame = next_frame(&mut ws) => frame,
        };
        last_heard = tokio::time::Instant::now();
        let text = match frame {
            Ok(Some(Incoming::Text(text))) => text,
            Ok(Some(Incoming::Alive)) => continue,
            Ok(Some(Incoming::Closed)) => return echo_close(&mut ws).await,
            Ok(None) => return,
            Err(fault) => return close_fault(&mut ws, &shared, fault).await,
        };
        let refusal = match serde_json::from_str::<ClientMessage>(&text) {
            Err(e) => Some(Fault::refusal(
                ErrorCode::BadFrame,
                format!("not a client message: {e}"),
            )),
            Ok(ClientMessage::Hello { .. }) => {
                Some(Fault::refusal(ErrorCode::Unexpected, "already joined"))
            }
            Ok(ClientMessage::Signal { signal }) => {
                if !bucket.take(Instant::now()) {
                    Some(Fault::refusal(
                        ErrorCode::RateLimited,
                        "too many signals per second",
                    ))
                } else if signal.signal.from != peer {
                    // Checked first: the author is then the key the hello
                    // verified strictly, never a weak one.
                    Some(Fault::refusal(
                        ErrorCode::Impersonation,
                        "a client may only send signals it authored",
                    ))
                } else if let Err(e) = signal.verify_signature() {
                    Some(Fault::refusal(ErrorCode::BadSignature, e.to_string()))
                } else {
                    relay(&shared, &room, signal)
                }
            }
        };
        let Some(fault) = refusal else { continue };
        shared.metrics.refused(fault.code);
        limited!(shared, debug, peer = %peer.short(), code = %fault.code, message = %fault.message, "frame refused");
        // Only the client's own faults count: a peer that just left or a slow
        // recipient is not its doing.
        if !matches!(
            fault.code,
            ErrorCode::UnknownPeer | ErrorCode::RecipientBusy
        ) {
            errors += 1;
            if errors > config.max_errors {
                let code = fault.code;
                return close(
                    &mut ws,
                    &shared,
                    code,
                    close_code(code),
                    "too many refused frames",
                )
                .await;
            }
        }
        let error = ServerMessage::Error {
            code: fault.code,
            message: fault.message,
        };
        if !send_json(&mut ws, &error).await {
            return;
        }
    }
}

/// Sends the challenge and checks the hello; `Ok(None)` when the client is gone.
async fn handshake(
    ws: &mut Ws,
    shared: &Shared,
    deadline: tokio::time::Instant,
) -> Result<Option<(PeerId, String)>, Fault> {
    let mut nonce = [0u8; 32];
    shared
        .nonces
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .fill_bytes(&mut nonce);
    let challenge = ServerMessage::Challenge {
        nonce: hex::encode(nonce),
        version: PROTOCOL_VERSION,
    };
    if !send_json(ws, &challenge).await {
        return Ok(None);
    }
    let text = loop {
        let frame = tokio::time::timeout_at(deadline, next_frame(ws))
            .await
            .map_err(|_| {
                Fault::fatal(
                    ErrorCode::IdleTimeout,
                    CloseCode::Policy,
                    "no hello in time",
                )
            })?;
        match frame? {
            None => return Ok(None),
            Some(Incoming::Closed) => {
                echo_close(ws).await;
                return Ok(None);
            }
            Some(Incoming::Alive) => continue,
            Some(Incoming::Text(text)) => break text,
        }
    };
    let bad = |code, message: String| Fault::fatal(code, close_code(code), message);
    match serde_json::from_str::<ClientMessage>(&text) {
        Ok(ClientMessage::Hello {
            peer,
            room,
            signature,
        }) => {
            if room.is_empty() || room.len() > MAX_ROOM_NAME {
                return Err(bad(
                    ErrorCode::BadFrame,
                    "the room name must be 1 to 64 bytes long".into(),
                ));
            }
            let mut sig = [0u8; 64];
            if hex::decode_to_slice(&signature, &mut sig).is_err() {
                return Err(bad(
                    ErrorCode::AuthenticationFailed,
                    "the hello signature is not 128 hex digits".into(),
                ));
            }
            if let Err(e) = verify_strict(&peer, &challenge_bytes(&nonce, &room), &sig) {
                return Err(bad(
                    ErrorCode::AuthenticationFailed,
                    format!("the hello does not prove ownership of this peer id: {e}"),
                ));
            }
            Ok(Some((peer, room)))
        }
        Ok(ClientMessage::Signal { .. }) => {
            Err(bad(ErrorCode::Unexpected, "hello expected first".into()))
        }
        Err(e) => Err(bad(ErrorCode::BadFrame, format!("bad hello: {e}"))),
    }
}

/// Enters `peer` into `room`; returns the contact to give it.
fn join(
    shared: &Shared,
    source: Option<IpAddr>,
    room: &str,
    peer: PeerId,
    conn: u64,
    outbox: Arc<Outbox>,
) -> Result<Option<PeerId>, Fault> {
    let config = &shared.config;
    let now = Instant::now();
    let refuse = |code, message: &str| Err(Fault::fatal(code, close_code(code), message));
    let mut st = shared.lock();
    let (members, replacing) = st.rooms.get(room).map_or((0, false), |r| {
        (r.members.len(), r.members.contains_key(&peer))
    });
    if !replacing && st.clients >= config.max_clients {
        return refuse(ErrorCode::ServerFull, "the server is full");
    }
    if !replacing && members >= config.max_room_clients {
        return refuse(ErrorCode::RoomFull, "the room is full");
    }
    if members == 0 && st.rooms.len() >= config.max_rooms {
        return refuse(ErrorCode::ServerFull, "too many rooms");
    }
    if !st.sources.take_join(source, now) {
        return refuse(
            ErrorCode::JoinRateLimited,
            "too many joins from this address; retry later",
        );
    }
    let r = st.rooms.entry(room.to_string()).or_insert_with(|| Room {
        members: Default::default(),
        joins: TokenBucket::new(
            config.joins_per_second_per_room,
            config.join_burst_per_room,
            now,
        ),
    });
    if source.is_some() && !r.joins.take(now) {
        if r.members.is_empty() {
            st.rooms.remove(room);
        }
        return refuse(
            ErrorCode::JoinRateLimited,
            "too many joins into this room; retry later",
        );
    }
    let others: Vec<PeerId> = r.members.keys().filter(|p| **p != peer).copied().collect();
    let contact = (!others.is_empty()).then(|| {
        let mut rng = shared
            .contacts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        others[rng.random_range(0..others.len())]
    });
    if let Some(old) = r.members.insert(peer, Member { conn, outbox }) {
        old.outbox.close(
            ErrorCode::Replaced,
            "the same peer joined from another connection".into(),
        );
    } else {
        st.clients += 1;
    }
    st.sources.joined(source);
    shared.metrics.joins.fetch_add(1, Ordering::Relaxed);
    Ok(contact)
}

fn relay(shared: &Shared, room: &str, signal: SignedSignal) -> Option<Fault> {
    let to = signal.signal.to;
    let frame = match serde_json::to_string(&ServerMessage::Signal { signal }) {
        Ok(frame) => frame,
        Err(e) => return Some(Fault::refusal(ErrorCode::BadFrame, e.to_string())),
    };
    let len = frame.len() as u64;
    let outbox = {
        let st = shared.lock();
        match st.rooms.get(room).and_then(|r| r.members.get(&to)) {
            Some(member) => member.outbox.clone(),
            None => {
                return Some(Fault::refusal(
                    ErrorCode::UnknownPeer,
                    format!("{to} is not in this room"),
                ));
            }
        }
    };
    match outbox.push(frame) {
        Ok(()) => {
            shared.metrics.signals.fetch_add(1, Ordering::Relaxed);
            shared
                .metrics
                .signal_bytes
                .fetch_add(len, Ordering::Relaxed);
            None
        }
        Err(why) => {
            shared.metrics.queue_drops.fetch_add(1, Ordering::Relaxed);
            let message = match why {
                Refused::SlowReader => "the recipient is not keeping up and is disconnected",
                Refused::ServerBusy => "the server's queues are full",
                Refused::Closing => "the recipient is leaving",
            };
            Some(Fault::refusal(ErrorCode::RecipientBusy, message))
        }
    }
}

/// A frame from a client.
enum Incoming {
    /// A text frame: a protocol message.
    Text(Utf8Bytes),
    /// A ping or pong: the client is alive (the library answers pings).
    Alive,
    /// The client sent a close frame.
    Closed,
}

/// Reads the next frame; `Ok(None)` when the client is gone.
///
/// # Cancel safety
/// Cancel safe, as the stream's `next`.
async fn next_frame(ws: &mut Ws) -> Result<Option<Incoming>, Fault> {
    use tokio_tungstenite::tungstenite::Error;
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    match ws.next().await {
        None => Ok(None),
        Some(Ok(WsMessage::Text(t))) => Ok(Some(Incoming::Text(t))),
        Some(Ok(WsMessage::Binary(_))) => Err(Fault::refusal(
            ErrorCode::BadFrame,
            "binary frames are not part of the protocol",
        )),
        Some(Ok(WsMessage::Close(_))) => Ok(Some(Incoming::Closed)),
        Some(Ok(_)) => Ok(Some(Incoming::Alive)),
        Some(Err(Error::Capacity(e))) => Err(Fault::fatal(
            ErrorCode::FrameTooLarge,
            CloseCode::Size,
            e.to_string(),
        )),
        Some(Err(Error::Utf8(e))) => Err(Fault::fatal(
            ErrorCode::BadFrame,
            CloseCode::Invalid,
            format!("a text frame is not UTF-8: {e}"),
        )),
        Some(Err(Error::Protocol(ProtocolError::ResetWithoutClosingHandshake))) => Ok(None),
        Some(Err(Error::Protocol(e))) => Err(Fault::fatal(
            ErrorCode::BadFrame,
            CloseCode::Protocol,
            format!("WebSocket protocol violation: {e}"),
        )),
        Some(Err(_)) => Ok(None),
    }
}

/// Answers a client's close frame with ours (queued by the library) and
/// flushes it.
async fn echo_close(ws: &mut Ws) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.flush()).await;
}
