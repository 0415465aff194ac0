//! Browser WebRTC: the handshake over `RTCPeerConnection` and the connection
//! over its one `RTCDataChannel`, speaking exactly the native transport's
//! wire: the signals of [`n2n_transport_webrtc::signal`] (offer, answer,
//! trickled candidates, end of candidates, with the candidates gathered in
//! time inside the description), one reliable ordered data channel labelled
//! [`CHANNEL_LABEL`] created by the dialer, and the chunk framing of
//! [`n2n_transport_webrtc::frame`].

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures_channel::mpsc;
use futures_util::StreamExt;
use n2n_core::signal::Role;
use n2n_core::transport::TransportError;
use n2n_transport_webrtc::frame::{self, Reassembler, Received};
use n2n_transport_webrtc::signal::Signal;
use n2n_transport_webrtc::{CHANNEL_LABEL, MAX_REMOTE_CANDIDATES};
use tracing::debug;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{
    MessageEvent, RtcDataChannel, RtcDataChannelEvent, RtcDataChannelInit, RtcDataChannelState,
    RtcDataChannelType, RtcIceCandidateInit, RtcPeerConnection, RtcPeerConnectionIceEvent,
    RtcPeerConnectionState, RtcSdpType, RtcSessionDescriptionInit,
};

use crate::config::{WebConfig, is_loopback_candidate, loopback_sdp};
use crate::util::{self, promise};

/// Events of one handshake, in one bounded queue.
pub(crate) enum HsEvent {
    /// A local candidate (`None`: gathering is complete).
    Local(Option<Signal>),
    /// A signal from the remote (verified by the core).
    Remote(Vec<u8>),
    /// The data channel is open.
    Open(RtcDataChannel),
    /// The peer connection failed or closed.
    Down(String),
    /// The core abandoned the handshake.
    Abort,
}

/// Events a handshake may queue; past that a remote flooding signals fails it.
pub(crate) const HANDSHAKE_QUEUE: usize = 256;

/// Chunks (or losses) queued before a connection's owner takes over.
const INBOX: usize = 1024;

/// Bytes buffered on a data channel past which the remote counts as lost
/// (control traffic does not wait; application sends wait below
/// `max_buffered`).
const HARD_BUFFER: u32 = 16 * 1024 * 1024;

/// How long a closing connection waits for the remote's goodbye.
const CLOSE_DRAIN: Duration = Duration::from_secs(1);

/// What a connection delivers to its owner.
pub(crate) enum Inbound {
    /// A whole message.
    Message(Bytes),
    /// The connection is gone, with the reason.
    Lost(String),
}

type Sink = Rc<dyn Fn(Inbound)>;

/// JS handlers kept alive with their owner.
type Handlers = Vec<Closure<dyn FnMut(JsValue)>>;

/// One n2n connection: a peer connection and its data channel, the chunk
/// reassembler, and the JS handlers that feed them.
pub(crate) struct Channel {
    pc: RtcPeerConnection,
    dc: RtcDataChannel,
    reassembler: RefCell<Reassembler>,
    chunk_size: usize,
    next_message: Cell<u32>,
    inbox: RefCell<VecDeque<Inbound>>,
    sink: RefCell<Option<Sink>>,
    goodbye_sent: Cell<bool>,
    goodbye_received: Cell<bool>,
    lost: Cell<bool>,
    closed: Cell<bool>,
    handlers: RefCell<Handlers>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("lost", &self.lost.get())
            .field("closed", &self.closed.get())
            .finish_non_exhaustive()
    }
}

impl Channel {
    /// Wraps an open channel; chunks are read from now on and queue until
    /// [`Channel::attach`].
    fn new(pc: RtcPeerConnection, dc: RtcDataChannel, config: &WebConfig) -> Rc<Self> {
        dc.set_binary_type(RtcDataChannelType::Arraybuffer);
        let ch = Rc::new(Self {
            pc,
            dc,
            reassembler: RefCell::new(Reassembler::new(config.max_message)),
            chunk_size: config.chunk_size,
            next_message: Cell::new(0),
            inbox: RefCell::new(VecDeque::new()),
            sink: RefCell::new(None),
            goodbye_sent: Cell::new(false),
            goodbye_received: Cell::new(false),
            lost: Cell::new(false),
            closed: Cell::new(false),
            handlers: RefCell::new(Vec::new()),
        });
        let weak = Rc::downgrade(&ch);
        let on_message = Closure::<dyn FnMut(JsValue)>::new(move |e: JsValue| {
            if let Some(ch) = weak.upgrade() {
                ch.on_chunk(e.unchecked_into::<MessageEvent>());
            }
        });
        ch.dc
            .set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        let weak = Rc::downgrade(&ch);
        let on_close = Closure::<dyn FnMut(JsValue)>::new(move |_| {
            if let Some(ch) = weak.upgrade() {
                ch.lose("the data channel closed".into());
            }
        });
        ch.dc.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        let weak = Rc::downgrade(&ch);
        let on_state = Closure::<dyn FnMut(JsValue)>::new(move |_| {
            if let Some(ch) = weak.upgrade() {
                let s = ch.pc.connection_state();
                if matches!(
                    s,
                    RtcPeerConnectionState::Disconnected
                        | RtcPeerConnectionState::Failed
                        | RtcPeerConnectionState::Closed
                ) {
                    ch.lose(format!("peer connection {s:?}"));
                }
            }
        });
        ch.pc
            .set_onconnectionstatechange(Some(on_state.as_ref().unchecked_ref()));
        ch.handlers
            .borrow_mut()
            .extend([on_message, on_close, on_state]);
        ch
    }

    /// Hands what arrives to `sink` from now on (what queued so far first, in
    /// a later task so that `sink` may borrow its owner).
    pub(crate) fn attach(self: &Rc<Self>, sink: Sink) {
        *self.sink.borrow_mut() = Some(sink);
        let ch = self.clone();
        wasm_bindgen_futures::spawn_local(async move {
            loop {
                let next = ch.inbox.borrow_mut().pop_front();
                let Some(item) = next else { break };
                let sink = ch.sink.borrow().clone();
                if let Some(sink) = sink {
                    sink(item);
                }
            }
        });
    }

    fn deliver(&self, item: Inbound) {
        let sink = self.sink.borrow().clone();
        match sink {
            Some(sink) if self.inbox.borrow().is_empty() => sink(item),
            _ => {
                let mut inbox = self.inbox.borrow_mut();
                if inbox.len() < INBOX {
                    inbox.push_back(item);
                } else {
                    drop(inbox);
                    self.lose("receive queue full".into());
                }
            }
        }
    }

    fn lose(&self, reason: String) {
        if self.lost.replace(true) || self.closed.get() {
            return;
        }
        debug!(%reason, "connection lost");
        self.deliver(Inbound::Lost(reason));
    }

    fn on_chunk(&self, e: MessageEvent) {
        if self.lost.get() {
            return;
        }
        let data = e.data();
        let Some(buf) = data.dyn_ref::<js_sys::ArrayBuffer>() else {
            self.lose("the remote sent a text message on the data channel".into());
            return;
        };
        let bytes = js_sys::Uint8Array::new(buf).to_vec();
        let received = self.reassembler.borrow_mut().handle_chunk(&bytes);
        match received {
            Ok(Received::Nothing) => {}
            Ok(Received::Message(m)) => {
                if !self.closed.get() {
                    self.deliver(Inbound::Message(m));
                }
            }
            Ok(Received::Goodbye) => {
                self.goodbye_received.set(true);
                self.say_goodbye();
                self.lose("closed by the remote".into());
            }
            Err(e) => self.lose(format!("bad chunk from the remote: {e}")),
        }
    }

    fn say_goodbye(&self) {
        if !self.goodbye_sent.replace(true) {
            let _ = self.dc.send_with_u8_array(&frame::goodbye());
        }
    }

    /// Bytes queued on the channel, not yet sent.
    pub(crate) fn buffered(&self) -> u32 {
        self.dc.buffered_amount()
    }

    /// Writes one message, cut into chunks.
    pub(crate) fn send(&self, message: &Bytes) -> Result<(), String> {
        if self.dc.ready_state() != RtcDataChannelState::Open || self.lost.get() {
            return Err("connection closed".into());
        }
        if self.dc.buffered_amount() > HARD_BUFFER {
            return Err("send buffer full (peer too slow)".into());
        }
        let id = self.next_message.get();
        self.next_message.set(id.wrapping_add(1));
        for chunk in frame::chunks(id, message, self.chunk_size) {
            self.dc
                .send_with_u8_array(&chunk)
                .map_err(|e| format!("data channel send: {}", util::js_text(&e)))?;
        }
        Ok(())
    }

    /// Closes: with `flush`, says goodbye and waits (bounded) for the
    /// remote's, which comes after everything sent before; then releases the
    /// peer connection.
    pub(crate) fn close(self: &Rc<Self>, flush: bool) {
        if self.closed.replace(true) {
            return;
        }
        *self.sink.borrow_mut() = None;
        let ch = self.clone();
        wasm_bindgen_futures::spawn_local(async move {
            if flush && !ch.lost.get() {
                ch.say_goodbye();
                let start = util::now();
                while !ch.goodbye_received.get() && util::now() - start < CLOSE_DRAIN {
                    util::sleep(Duration::from_millis(20)).await;
                }
            }
            ch.release();
        });
    }

    fn release(&self) {
        self.dc.set_onmessage(None);
        self.dc.set_onclose(None);
        self.pc.set_onconnectionstatechange(None);
        self.dc.close();
        self.pc.close();
        self.handlers.borrow_mut().clear();
    }
}

/// The RTCConfiguration of `config` (ICE servers).
fn rtc_configuration(config: &WebConfig) -> web_sys::RtcConfiguration {
    let cfg = js_sys::Object::new();
    let servers = js_sys::Array::new();
    if !config.ice_servers.is_empty() {
        let server = js_sys::Object::new();
        let urls = js_sys::Array::new();
        for u in &config.ice_servers {
            urls.push(&JsValue::from_str(u));
        }
        util::set(&server, "urls", urls);
        if !config.ice_username.is_empty() {
            util::set(&server, "username", config.ice_username.as_str());
            util::set(&server, "credential", config.ice_credential.as_str());
        }
        servers.push(&server);
    }
    util::set(&cfg, "iceServers", servers);
    cfg.unchecked_into()
}

/// The JS handlers of a handshake, dropped with it.
struct HandshakeHandlers {
    pc: RtcPeerConnection,
    closures: Vec<Closure<dyn FnMut(JsValue)>>,
    /// The handshake's peer connection is closed on drop unless it succeeded.
    keep: bool,
}

impl Drop for HandshakeHandlers {
    fn drop(&mut self) {
        self.pc.set_onicecandidate(None);
        self.pc.set_ondatachannel(None);
        self.pc.set_onconnectionstatechange(None);
        if !self.keep {
            self.pc.close();
        }
    }
}

/// Runs one handshake: `events` carries the remote's signals (and the local
/// side's events, through `tx`); `out` sends signals to the remote. Returns
/// the open connection.
pub(crate) async fn handshake(
    config: WebConfig,
    role: Role,
    first: Option<Vec<u8>>,
    tx: mpsc::Sender<HsEvent>,
    mut events: mpsc::Receiver<HsEvent>,
    out: Rc<dyn Fn(Vec<u8>)>,
) -> Result<Rc<Channel>, TransportError> {
    let other = |what: &'static str| move |e: String| TransportError::Other(format!("{what}: {e}"));
    let bad =
        |what: &'static str| move |e: String| TransportError::BadSignal(format!("{what}: {e}"));
    let pc =
        RtcPeerConnection::new_with_configuration(&rtc_configuration(&config)).map_err(|e| {
            TransportError::Other(format!("new peer connection: {}", util::js_text(&e)))
        })?;
    let mut handlers = HandshakeHandlers {
        pc: pc.clone(),
        closures: Vec::new(),
        keep: false,
    };
    let loopback = config.loopback_only;
    {
        let mut tx = tx.clone();
        let on_candidate = Closure::<dyn FnMut(JsValue)>::new(move |e: JsValue| {
            let e = e.unchecked_into::<RtcPeerConnectionIceEvent>();
            let signal = match e.candidate() {
                None => None,
                Some(c) if c.candidate().is_empty() => None,
                Some(c) => Some(Signal::Candidate {
                    candidate: c.candidate(),
                    sdp_mid: c.sdp_mid(),
                    sdp_mline_index: c.sdp_m_line_index(),
                }),
            };
            if let Some(Signal::Candidate { candidate, .. }) = &signal {
                debug!(%candidate, "local candidate");
                if loopback && !is_loopback_candidate(candidate) {
                    return;
                }
            }
            if tx.try_send(HsEvent::Local(signal)).is_err() {
                debug!("local candidate dropped (handshake over or queue full)");
            }
        });
        pc.set_onicecandidate(Some(on_candidate.as_ref().unchecked_ref()));
        handlers.closures.push(on_candidate);
    }
    {
        let mut tx = tx.clone();
        let pc2 = pc.clone();
        let on_state = Closure::<dyn FnMut(JsValue)>::new(move |_| {
            let s = pc2.connection_state();
            if matches!(
                s,
                RtcPeerConnectionState::Failed | RtcPeerConnectionState::Closed
            ) {
                let _ = tx.try_send(HsEvent::Down(format!("peer connection {s:?}")));
            }
        });
        pc.set_onconnectionstatechange(Some(on_state.as_ref().unchecked_ref()));
        handlers.closures.push(on_state);
    }
    let notify_open = |dc: &RtcDataChannel, handlers: &mut HandshakeHandlers| {
        let mut tx = tx.clone();
        let dc2 = dc.clone();
        let on_open = Closure::<dyn FnMut(JsValue)>::new(move |_| {
            let _ = tx.try_send(HsEvent::Open(dc2.clone()));
        });
        dc.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        handlers.closures.push(on_open);
    };

    let (local_sdp, held) = match role {
        Role::Dialer => {
            let init = RtcDataChannelInit::new();
            init.set_ordered(true);
            let dc = pc.create_data_channel_with_data_channel_dict(CHANNEL_LABEL, &init);
            dc.set_binary_type(RtcDataChannelType::Arraybuffer);
            notify_open(&dc, &mut handlers);
            let offer = promise(pc.create_offer())
                .await
                .map_err(other("create offer"))?;
            let (sdp, held) = describe(&pc, &config, offer.unchecked_into(), &mut events).await?;
            out(Signal::Offer { sdp: sdp.clone() }.encode());
            (sdp, held)
        }
        Role::Acceptor => {
            let first = first.ok_or(TransportError::SignalingClosed)?;
            let sdp = Signal::expect_offer(&first)?;
            let taken = Rc::new(Cell::new(false));
            let mut tx = tx.clone();
            let on_channel = Closure::<dyn FnMut(JsValue)>::new(move |e: JsValue| {
                let dc = e.unchecked_into::<RtcDataChannelEvent>().channel();
                if dc.label() == CHANNEL_LABEL && !taken.replace(true) {
                    dc.set_binary_type(RtcDataChannelType::Arraybuffer);
                    // Announced open: the remote's channel is ready when we see it.
                    if dc.ready_state() == RtcDataChannelState::Open {
                        let _ = tx.try_send(HsEvent::Open(dc));
                    } else {
                        let mut tx = tx.clone();
                        let dc2 = dc.clone();
                        let on_open = Closure::once_into_js(move |_: JsValue| {
                            let _ = tx.try_send(HsEvent::Open(dc2));
                        });
                        dc.set_onopen(Some(on_open.unchecked_ref()));
                    }
                } else {
                    debug!(label = dc.label(), "ignoring an extra data channel");
                }
            });
            pc.set_ondatachannel(Some(on_channel.as_ref().unchecked_ref()));
            handlers.closures.push(on_channel);
            let offer = RtcSessionDescriptionInit::new(RtcSdpType::Offer);
            offer.set_sdp(&sdp);
            promise(pc.set_remote_description(&offer))
                .await
                .map_err(bad("offer"))?;
            let answer = promise(pc.create_answer())
                .await
                .map_err(other("create answer"))?;
            let (sdp, held) = describe(&pc, &config, answer.unchecked_into(), &mut events).await?;
            out(Signal::Answer { sdp: sdp.clone() }.encode());
            (sdp, held)
        }
    };
    let mut remote_set = role == Role::Acceptor;
    let mut early: Vec<RtcIceCandidateInit> = Vec::new();
    let mut remote_candidates = 0usize;
    let mut held: VecDeque<HsEvent> = held.into();
    loop {
        let event = match held.pop_front() {
            Some(e) => e,
            None => events.next().await.ok_or(TransportError::SignalingClosed)?,
        };
        match event {
            HsEvent::Open(dc) => {
                handlers.keep = true;
                drop(handlers);
                return Ok(Channel::new(pc, dc, &config));
            }
            HsEvent::Local(signal) => {
                let signal = signal.unwrap_or(Signal::EndOfCandidates);
                let known = matches!(&signal, Signal::Candidate { candidate, .. }
                    if local_sdp.contains(&format!("a={candidate}\r\n")));
                if !known {
                    out(signal.encode());
                }
            }
            HsEvent::Remote(payload) => {
                let signal = Signal::decode_remote(&payload)?;
                match signal {
                    Signal::Answer { sdp } if role == Role::Dialer && !remote_set => {
                        let answer = RtcSessionDescriptionInit::new(RtcSdpType::Answer);
                        answer.set_sdp(&sdp);
                        promise(pc.set_remote_description(&answer))
                            .await
                            .map_err(bad("answer"))?;
                        remote_set = true;
                        for c in early.drain(..) {
                            add_candidate(&pc, c).await;
                        }
                    }
                    Signal::Candidate {
                        candidate,
                        sdp_mid,
                        sdp_mline_index,
                    } => {
                        remote_candidates += 1;
                        if remote_candidates > MAX_REMOTE_CANDIDATES {
                            return Err(TransportError::BadSignal(format!(
                                "more than {MAX_REMOTE_CANDIDATES} candidates"
                            )));
                        }
                        if loopback && !is_loopback_candidate(&candidate) {
                            continue;
                        }
                        let init = RtcIceCandidateInit::new(&candidate);
                        init.set_sdp_mid(sdp_mid.as_deref());
                        init.set_sdp_m_line_index(sdp_mline_index);
                        if remote_set {
                            add_candidate(&pc, init).await;
                        } else {
                            early.push(init);
                        }
                    }
                    Signal::EndOfCandidates => {}
                    other => {
                        return Err(TransportError::BadSignal(format!(
                            "unexpected {} signal",
                            other.kind()
                        )));
                    }
                }
            }
            HsEvent::Down(reason) => {
                return Err(TransportError::Other(format!(
                    "{reason} during the handshake"
                )));
            }
            HsEvent::Abort => return Err(TransportError::Other("handshake abandoned".into())),
        }
    }
}

/// Sets `description` as the local one and returns its SDP once the local
/// candidates are gathered or [`WebConfig::gather_wait`] passed (candidates
/// inside the description reach the remote with its ICE credentials, which
/// saves the native side a second of waiting on peer-reflexive pairs).
async fn describe(
    pc: &RtcPeerConnection,
    config: &WebConfig,
    description: RtcSessionDescriptionInit,
    events: &mut mpsc::Receiver<HsEvent>,
) -> Result<(String, Vec<HsEvent>), TransportError> {
    let fallback = description.get_sdp().unwrap_or_default();
    promise(pc.set_local_description(&description))
        .await
        .map_err(|e| TransportError::Other(format!("set local description: {e}")))?;
    let deadline = util::now() + config.gather_wait();
    let mut held = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(util::now());
        if left.is_zero() {
            break;
        }
        match util::timeout(left, events.next()).await {
            None => break,
            Some(None) => return Err(TransportError::SignalingClosed),
            Some(Some(HsEvent::Local(None))) => break,
            Some(Some(HsEvent::Local(Some(_)))) => {}
            Some(Some(HsEvent::Abort)) => {
                return Err(TransportError::Other("handshake abandoned".into()));
            }
            Some(Some(other)) => held.push(other),
        }
    }
    let sdp = pc.local_description().map_or(fallback, |d| d.sdp());
    let sdp = if config.loopback_only {
        loopback_sdp(&sdp)
    } else {
        sdp
    };
    // What arrived meanwhile is handled once the description is out.
    Ok((sdp, held))
}

/// Adds a remote candidate; one this side cannot use (an mDNS name it cannot
/// resolve) is skipped, not fatal.
async fn add_candidate(pc: &RtcPeerConnection, init: RtcIceCandidateInit) {
    if let Err(e) = promise(pc.add_ice_candidate_with_opt_rtc_ice_candidate_init(Some(&init))).await
    {
        debug!(error = %e, "remote candidate skipped");
    }
}
