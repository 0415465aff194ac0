//! The browser driver of [`NodeCore`]: the second thin driver next to the
//! tokio one (`n2n_core::node::Builder`).
//!
//! Everything runs on the page's one thread. Each input (a chunk from a data
//! channel, a signal from the server, a handshake's signal or outcome, the
//! timer, a command of the JS API) borrows the core, hands it the input with
//! `now` (`performance.now()`), carries out every output (the drain contract
//! of `n2n_core::node::core`), re-arms the one `setTimeout` at the core's next
//! wake-up, and only then, with the core released, hands events to the
//! page, whose callbacks may call the API again. Handshakes run as
//! `wasm-bindgen-futures` tasks bounded by the handshake timeout.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::{Rc, Weak};

use futures_channel::{mpsc, oneshot};
use n2n_core::node::Event;
use n2n_core::node::core::{Completion, ConnectionId, NodeCore, Output, PathId, SessionId, Ticket};
use n2n_core::signal::Role;
use n2n_core::transport::TransportError;
use n2n_core::{PeerId, SignedSignal};
use tracing::{debug, warn};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

use crate::config::WebConfig;
use crate::rtc::{self, Channel, HANDSHAKE_QUEUE, HsEvent, Inbound};
use crate::util::{self, now};
use crate::ws::WsClient;

/// Events waiting for the page at most (the page's callback runs after each
/// input, so this only fills within one input).
const EVENT_QUEUE: usize = 4096;

/// The driver's tables; the core is the only protocol state.
pub(crate) struct Driver {
    pub(crate) core: NodeCore,
    pub(crate) config: WebConfig,
    links: BTreeMap<ConnectionId, Rc<Channel>>,
    handshakes: BTreeMap<SessionId, mpsc::Sender<HsEvent>>,
    pub(crate) signaling: Option<Rc<WsClient>>,
    pending: BTreeMap<Ticket, oneshot::Sender<Completion>>,
    next_ticket: u64,
    events: Vec<Event>,
    timer: Option<(n2n_core::time::Instant, i32)>,
    node: Weak<Node>,
}

/// Turns an event into the page's JS object.
type ToJs = Box<dyn Fn(&Event) -> JsValue>;

/// A browser node: the driver, its timer, and the page's event callback.
pub(crate) struct Node {
    driver: RefCell<Driver>,
    timer_cb: Closure<dyn FnMut()>,
    on_event: RefCell<Option<js_sys::Function>>,
    on_event_js: RefCell<Option<ToJs>>,
}

impl Node {
    /// A node around `core`.
    pub(crate) fn new(core: NodeCore, config: WebConfig, to_js: ToJs) -> Rc<Self> {
        Rc::new_cyclic(|weak: &Weak<Node>| {
            let w = weak.clone();
            let timer_cb = Closure::<dyn FnMut()>::new(move || {
                if let Some(node) = w.upgrade() {
                    node.with(|d| {
                        d.timer = None;
                        d.core.handle_timeout(now());
                    });
                }
            });
            Node {
                driver: RefCell::new(Driver {
                    core,
                    config,
                    links: BTreeMap::new(),
                    handshakes: BTreeMap::new(),
                    signaling: None,
                    pending: BTreeMap::new(),
                    next_ticket: 0,
                    events: Vec::new(),
                    timer: None,
                    node: weak.clone(),
                }),
                timer_cb,
                on_event: RefCell::new(None),
                on_event_js: RefCell::new(Some(to_js)),
            }
        })
    }

    /// Sets the page's event callback.
    pub(crate) fn set_on_event(&self, f: Option<js_sys::Function>) {
        *self.on_event.borrow_mut() = f;
    }

    /// Runs one input on the driver, drains the core, re-arms the timer, then
    /// gives the events to the page. `None` if the node is busy (an API call
    /// made from inside the node, which cannot happen from the page's
    /// callbacks since they run after the core is released).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Driver) -> R) -> Option<R> {
        let Ok(mut d) = self.driver.try_borrow_mut() else {
            warn!("node busy: input dropped");
            return None;
        };
        let r = f(&mut d);
        d.drain();
        d.arm_timer(self.timer_cb.as_ref().unchecked_ref());
        let events = std::mem::take(&mut d.events);
        drop(d);
        self.fire(events);
        Some(r)
    }

    /// Reads the driver without an input.
    pub(crate) fn read<R>(&self, f: impl FnOnce(&mut Driver) -> R) -> Option<R> {
        self.driver.try_borrow_mut().ok().map(|mut d| f(&mut d))
    }

    fn fire(&self, events: Vec<Event>) {
        let cb = self.on_event.borrow().clone();
        let Some(cb) = cb else { return };
        for event in events {
            let js = match self.on_event_js.borrow().as_ref() {
                Some(to_js) => to_js(&event),
                None => continue,
            };
            if let Err(e) = cb.call1(&JsValue::NULL, &js) {
                warn!(error = %util::js_text(&e), "the page's event callback threw");
            }
        }
    }
}

impl Driver {
    /// A ticket for a command whose outcome comes later.
    pub(crate) fn ticket(&mut self) -> (Ticket, oneshot::Receiver<Completion>) {
        self.next_ticket += 1;
        let t = Ticket(self.next_ticket);
        let (tx, rx) = oneshot::channel();
        self.pending.insert(t, tx);
        (t, rx)
    }

    /// The connection to `peer`, if connected.
    pub(crate) fn link(&self, peer: &PeerId) -> Option<Rc<Channel>> {
        self.core
            .connection(peer)
            .and_then(|c| self.links.get(&c))
            .cloned()
    }

    fn arm_timer(&mut self, cb: &js_sys::Function) {
        let next = self.core.poll_timeout();
        if self.timer.map(|(at, _)| at) == next {
            return;
        }
        if let Some((_, id)) = self.timer.take() {
            util::clear_timeout(id);
        }
        if let Some(at) = next {
            let wait = at.saturating_duration_since(now());
            if let Some(id) = util::set_timeout(cb, wait) {
                self.timer = Some((at, id));
            }
        }
    }

    /// Carries out every output of the core.
    pub(crate) fn drain(&mut self) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Transmit { conn, frame } => {
                    let sent = self.links.get(&conn).map(|l| l.send(&frame));
                    if let Some(Err(reason)) = sent {
                        self.core.handle_connection_lost(now(), conn, reason);
                    }
                }
                Output::Close { conn, flush } => {
                    if let Some(link) = self.links.remove(&conn) {
                        link.close(flush);
                    }
                }
                Output::StartHandshake {
                    session,
                    remote,
                    role,
                    first,
                } => {
                    self.start_handshake(session, remote, role, first);
                }
                Output::HandshakeSignal { session, payload } => {
                    if let Some(tx) = self.handshakes.get_mut(&session)
                        && tx.try_send(HsEvent::Remote(payload)).is_err()
                    {
                        warn!(?session, "handshake signal queue full; signal dropped");
                    }
                }
                Output::AbortHandshake { session } => {
                    if let Some(mut tx) = self.handshakes.remove(&session) {
                        let _ = tx.try_send(HsEvent::Abort);
                    }
                }
                Output::SendSignal { path, signal } => match (&self.signaling, path) {
                    (Some(s), PathId(0)) => {
                        if let Err(e) = s.send(signal) {
                            warn!(error = %e, "signal not sent (the handshake will time out)");
                        }
                    }
                    _ => debug!(?path, "signal for an unknown signaling path dropped"),
                },
                Output::Event(event) => {
                    if self.events.len() < EVENT_QUEUE {
                        self.events.push(event);
                    } else {
                        warn!("event queue full; event dropped");
                    }
                }
                Output::Done { ticket, result } => {
                    if let Some(tx) = self.pending.remove(&ticket) {
                        let _ = tx.send(result);
                    }
                }
                _ => debug!("unknown output of the core ignored"),
            }
        }
    }

    fn start_handshake(
        &mut self,
        session: SessionId,
        remote: PeerId,
        role: Role,
        first: Option<Vec<u8>>,
    ) {
        let (tx, rx) = mpsc::channel(HANDSHAKE_QUEUE);
        self.handshakes.insert(session, tx.clone());
        let node = self.node.clone();
        let out: Rc<dyn Fn(Vec<u8>)> = {
            let node = node.clone();
            Rc::new(move |payload: Vec<u8>| {
                // Sent from a task, never from inside the driver.
                let node = node.clone();
                wasm_bindgen_futures::spawn_local(async move {
                    if let Some(n) = node.upgrade() {
                        n.with(|d| d.core.handle_handshake_signal(now(), session, payload));
                    }
                });
            })
        };
        let config = self.config.clone();
        let timeout = config.handshake_timeout();
        debug!(peer = %remote.short(), ?role, "handshake");
        wasm_bindgen_futures::spawn_local(async move {
            let result = util::timeout(timeout, rtc::handshake(config, role, first, tx, rx, out))
                .await
                .unwrap_or(Err(TransportError::Timeout(timeout)));
            let Some(n) = node.upgrade() else { return };
            n.with(move |d| d.handshake_done(session, result));
        });
    }

    fn handshake_done(&mut self, session: SessionId, result: Result<Rc<Channel>, TransportError>) {
        self.handshakes.remove(&session);
        match &result {
            Ok(_) => debug!(?session, "handshake done"),
            Err(e) => debug!(?session, error = %e, "handshake failed"),
        }
        let (result, channel) = match result {
            Ok(ch) => (Ok(()), Some(ch)),
            Err(e) => (Err(e), None),
        };
        let id = self.core.handle_handshake_done(now(), session, result);
        let Some(channel) = channel else { return };
        let Some(id) = id else {
            channel.close(false);
            return;
        };
        let node = self.node.clone();
        channel.attach(Rc::new(move |inbound: Inbound| {
            let Some(n) = node.upgrade() else { return };
            n.with(|d| match inbound {
                Inbound::Message(bytes) => d.core.handle_frame(now(), id, &bytes),
                Inbound::Lost(reason) => d.core.handle_connection_lost(now(), id, reason),
            });
        }));
        self.links.insert(id, channel);
    }

    /// A signal from the signaling server.
    pub(crate) fn on_signal(&mut self, signal: SignedSignal) {
        self.core.handle_signal(now(), PathId(0), signal);
    }

    /// Stops: every handshake fails, every connection says goodbye.
    pub(crate) fn shutdown(&mut self) {
        self.core.shutdown(now());
        if let Some(s) = self.signaling.take() {
            s.close();
        }
    }
}
