//! The browser's signaling client: the join protocol of `n2n-signal-ws`
//! ([`n2n_signal_ws::protocol`], the same frames, keys and signatures as its
//! native client) over the browser's `WebSocket`, with the same errors and the
//! same reconnection (exponential backoff, the same room; given up when the
//! server refuses us or another connection of ours replaced this one).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use futures_channel::mpsc;
use futures_util::StreamExt;
use n2n_core::signaling::SignalingError;
use n2n_core::{Keypair, PeerId, SignedSignal};
use n2n_signal_ws::join::{self, BACKOFF_MAX, BACKOFF_MIN, Backoff};
use n2n_signal_ws::protocol::{ClientMessage, ErrorCode, ServerMessage, check_key};
use tracing::{debug, info, warn};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{CloseEvent, MessageEvent, WebSocket};

use crate::util;

/// Largest frame accepted from the server (the native client's default).
const MAX_FRAME: usize = join::CLIENT_MAX_FRAME;
/// Socket events queued at most; a server flooding past it loses the socket.
const EVENT_QUEUE: usize = 1024;
/// Signals queued while (re)connecting at most.
const OUT_QUEUE: usize = 256;

enum WsEvent {
    Open,
    Text(String),
    Binary,
    Closed(String),
    Failed,
}

/// One socket and its handlers.
struct Socket {
    ws: WebSocket,
    _handlers: Vec<Closure<dyn FnMut(JsValue)>>,
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        self.ws.set_onerror(None);
        let _ = self.ws.close();
    }
}

fn open_socket(url: &str) -> Result<(Socket, mpsc::Receiver<WsEvent>), SignalingError> {
    let ws = WebSocket::new(url)
        .map_err(|e| SignalingError::Unreachable(format!("{url}: {}", util::js_text(&e))))?;
    let (tx, rx) = mpsc::channel(EVENT_QUEUE);
    let handler = |f: Box<dyn Fn(JsValue) -> WsEvent>| {
        let mut tx = tx.clone();
        Closure::<dyn FnMut(JsValue)>::new(move |e: JsValue| {
            if tx.try_send(f(e)).is_err() {
                warn!("signaling event queue full");
            }
        })
    };
    let on_open = handler(Box::new(|_| WsEvent::Open));
    let on_message = handler(Box::new(|e| {
        let data = e.unchecked_into::<MessageEvent>().data();
        match data.as_string() {
            Some(t) => WsEvent::Text(t),
            None => WsEvent::Binary,
        }
    }));
    let on_close = handler(Box::new(|e| {
        let e = e.unchecked_into::<CloseEvent>();
        WsEvent::Closed(e.reason())
    }));
    let on_error = handler(Box::new(|_| WsEvent::Failed));
    ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    ws.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    Ok((
        Socket {
            ws,
            _handlers: vec![on_open, on_message, on_close, on_error],
        },
        rx,
    ))
}

/// Decodes one server frame; every byte string gives a message or an error.
fn server_message(text: &str) -> Result<ServerMessage, SignalingError> {
    if text.len() > MAX_FRAME {
        return Err(SignalingError::Other(format!(
            "server frame of {} bytes exceeds {MAX_FRAME}",
            text.len()
        )));
    }
    serde_json::from_str(text).map_err(|e| {
        SignalingError::Other(format!(
            "server sent a frame that is not a server message: {e}"
        ))
    })
}

/// The next message from the server during the join.
async fn next_message(
    rx: &mut mpsc::Receiver<WsEvent>,
    url: &str,
) -> Result<ServerMessage, SignalingError> {
    loop {
        match rx.next().await {
            Some(WsEvent::Open) => {}
            Some(WsEvent::Text(t)) => return server_message(&t),
            Some(WsEvent::Binary) => {
                return Err(SignalingError::Other(
                    "server sent a binary frame, which is not part of the protocol".into(),
                ));
            }
            Some(WsEvent::Closed(reason)) => {
                return Err(SignalingError::Refused(format!(
                    "server closed the connection: {reason}"
                )));
            }
            Some(WsEvent::Failed) => return Err(SignalingError::Unreachable(url.to_string())),
            None => return Err(SignalingError::Closed),
        }
    }
}

/// Connects, authenticates and joins `room`.
async fn dial(
    url: &str,
    room: &str,
    keypair: &Keypair,
    timeout: Duration,
) -> Result<(Socket, mpsc::Receiver<WsEvent>, Option<PeerId>), SignalingError> {
    let attempt = async {
        let (socket, mut rx) = open_socket(url)?;
        let nonce = join::challenge(next_message(&mut rx, url).await?)?;
        socket
            .ws
            .send_with_str(&join::hello(keypair, room, &nonce))
            .map_err(|e| SignalingError::Other(util::js_text(&e)))?;
        let contact = join::welcome(next_message(&mut rx, url).await?)?;
        Ok((socket, rx, contact))
    };
    util::timeout(timeout, attempt)
        .await
        .ok_or(SignalingError::Timeout)?
}

/// Dials; a join refused with `join_rate_limited` (many clients behind one
/// address, several tabs of one browser) is tried again with backoff, for one
/// `timeout` at most, as the native client does.
async fn dial_patiently(
    url: &str,
    room: &str,
    keypair: &Keypair,
    timeout: Duration,
) -> Result<(Socket, mpsc::Receiver<WsEvent>, Option<PeerId>), SignalingError> {
    let give_up = util::now() + timeout;
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    loop {
        match dial(url, room, keypair, timeout).await {
            Err(e) if join::rate_limited(&e) && util::now() + backoff.peek() < give_up => {
                let delay = backoff.next_delay();
                debug!(reason = %e, ?delay, "join rate-limited; trying again");
                util::sleep(delay).await;
            }
            other => return other,
        }
    }
}

/// A signaling client, joined to one room.
pub(crate) struct WsClient {
    url: String,
    room: String,
    socket: RefCell<Option<Socket>>,
    queue: RefCell<VecDeque<String>>,
    closed: Cell<bool>,
    last_error: RefCell<Option<(ErrorCode, String)>>,
}

impl std::fmt::Debug for WsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsClient")
            .field("url", &self.url)
            .field("room", &self.room)
            .field("closed", &self.closed.get())
            .finish_non_exhaustive()
    }
}

impl WsClient {
    /// Connects to `url`, proves ownership of `keypair`'s peer id and joins
    /// `room`; then serves the socket in a task, handing each signal to
    /// `on_signal`. Returns the client and the contact the server gave.
    pub(crate) async fn connect(
        url: &str,
        room: &str,
        keypair: &Keypair,
        timeout: Duration,
        reconnect: bool,
        on_signal: Rc<dyn Fn(SignedSignal)>,
    ) -> Result<(Rc<Self>, Option<PeerId>), SignalingError> {
        let (socket, rx, contact) = dial_patiently(url, room, keypair, timeout).await?;
        info!(%url, %room, contact = ?contact.map(|c| c.short()), "joined signaling room");
        let client = Rc::new(Self {
            url: url.to_string(),
            room: room.to_string(),
            socket: RefCell::new(Some(socket)),
            queue: RefCell::new(VecDeque::new()),
            closed: Cell::new(false),
            last_error: RefCell::new(None),
        });
        let weak = Rc::downgrade(&client);
        let keypair = keypair.clone();
        wasm_bindgen_futures::spawn_local(run(weak, rx, keypair, timeout, reconnect, on_signal));
        Ok((client, contact))
    }

    /// Sends a signal we authored to a member of the room; queued (bounded)
    /// while reconnecting.
    pub(crate) fn send(&self, signal: SignedSignal) -> Result<(), SignalingError> {
        if self.closed.get() {
            return Err(SignalingError::Closed);
        }
        let text = serde_json::to_string(&ClientMessage::Signal { signal })
            .map_err(|e| SignalingError::Other(e.to_string()))?;
        let socket = self.socket.borrow();
        match socket.as_ref() {
            Some(s) if s.ws.ready_state() == WebSocket::OPEN => {
                s.ws.send_with_str(&text)
                    .map_err(|e| SignalingError::Other(util::js_text(&e)))
            }
            _ => {
                let mut q = self.queue.borrow_mut();
                if q.len() >= OUT_QUEUE {
                    return Err(SignalingError::Other("signaling queue full".into()));
                }
                q.push_back(text);
                Ok(())
            }
        }
    }

    /// The last error frame of the server (a refused signal, for instance).
    pub(crate) fn last_error(&self) -> Option<(ErrorCode, String)> {
        self.last_error.borrow().clone()
    }

    /// Leaves the room and closes the connection for good.
    pub(crate) fn close(&self) {
        self.closed.set(true);
        self.socket.borrow_mut().take();
    }
}

async fn run(
    client: std::rc::Weak<WsClient>,
    mut rx: mpsc::Receiver<WsEvent>,
    keypair: Keypair,
    timeout: Duration,
    reconnect: bool,
    on_signal: Rc<dyn Fn(SignedSignal)>,
) {
    // Signals dropped (weak author keys) and error frames seen: logged at
    // powers of two only, so that the server cannot make us log without limit.
    let (mut dropped, mut notes) = (0u64, 0u64);
    loop {
        // Serve the socket until it drops.
        let refused_for_good = loop {
            let event = rx.next().await;
            let Some(c) = client.upgrade() else { return };
            if c.closed.get() {
                return;
            }
            match event {
                Some(WsEvent::Text(t)) => match server_message(&t) {
                    Ok(ServerMessage::Signal { signal }) => {
                        // A signal by a weak key proves nothing: drop it here.
                        if check_key(&signal.signal.from).is_ok() {
                            on_signal(signal);
                        } else {
                            dropped += 1;
                            if dropped.is_power_of_two() {
                                warn!(dropped, "incoming signal by a weak author key dropped");
                            }
                        }
                    }
                    Ok(ServerMessage::Error { code, message }) => {
                        notes += 1;
                        if notes.is_power_of_two() {
                            debug!(%code, %message, notes, "the signaling server refused a frame");
                        }
                        *c.last_error.borrow_mut() = Some((code, message));
                    }
                    Ok(other) => debug!(?other, "unexpected server message ignored"),
                    Err(e) => {
                        debug!(error = %e, "signaling connection dropped");
                        break false;
                    }
                },
                Some(WsEvent::Open) => {}
                Some(WsEvent::Binary) => break false,
                Some(WsEvent::Closed(reason)) => {
                    warn!(%reason, "signaling server closed the connection");
                    break reason.contains(ErrorCode::Replaced.as_str());
                }
                Some(WsEvent::Failed) | None => break false,
            }
        };
        let (url, room) = match client.upgrade() {
            Some(c) => {
                c.socket.borrow_mut().take();
                (c.url.clone(), c.room.clone())
            }
            None => return,
        };
        if refused_for_good || !reconnect {
            if let Some(c) = client.upgrade() {
                c.closed.set(true);
            }
            return;
        }
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        loop {
            let delay = backoff.next_delay();
            util::sleep(delay).await;
            if client.upgrade().is_none_or(|c| c.closed.get()) {
                return;
            }
            match dial_patiently(&url, &room, &keypair, timeout).await {
                Ok((socket, new_rx, _)) => {
                    info!(%url, %room, "reconnected to the signaling server");
                    rx = new_rx;
                    let Some(c) = client.upgrade() else { return };
                    for text in c.queue.borrow_mut().drain(..) {
                        let _ = socket.ws.send_with_str(&text);
                    }
                    *c.socket.borrow_mut() = Some(socket);
                    break;
                }
                Err(SignalingError::Refused(reason)) if !reason.contains("server closed") => {
                    warn!(%reason, "signaling server refuses us; giving up");
                    if let Some(c) = client.upgrade() {
                        c.closed.set(true);
                    }
                    return;
                }
                Err(e) => debug!(error = %e, ?delay, "reconnection failed"),
            }
        }
    }
}
