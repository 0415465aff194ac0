//! The JavaScript API (wasm-bindgen): `new N2nNode(secretHex?, options?)`,
//! `join(url, room)`, `onEvent(callback)`, `send(peer, protocol, bytes)`,
//! `view()`, `getPeers(k)`, `neighbours()`, `snapshot()`, `leave()`,
//! `close()`, and `N2nNode.storedKey(name)` for a key kept in
//! `localStorage`. Bad arguments throw an `Error` with a clear message; no
//! call panics on what the page passes.

use std::rc::Rc;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use n2n_core::node::core::{Completion, NodeCore, PathId};
use n2n_core::node::{ConnectError, Event};
use n2n_core::overlay::Erased;
use n2n_core::wire::{MAX_DATA, Message, ProtocolId};
use n2n_core::{Direction, Keypair, PeerId};
use n2n_overlay_spray::spray;
use rand::SeedableRng;
use wasm_bindgen::prelude::*;

use crate::config::WebConfig;
use crate::driver::Node;
use crate::util::{self, set};
use crate::ws::WsClient;

/// A browser peer of an n2n overlay (Spray), over WebRTC.
#[wasm_bindgen(js_name = N2nNode)]
pub struct WebNode {
    node: Rc<Node>,
    key: Keypair,
    protocols: Rc<Vec<(String, ProtocolId)>>,
}

impl std::fmt::Debug for WebNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebNode")
            .field("peer", &self.key.peer_id())
            .finish_non_exhaustive()
    }
}

fn random_seed() -> Result<[u8; 32], JsError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| JsError::new(&format!("no random source: {e}")))?;
    Ok(seed)
}

fn parse_peer(peer: &str) -> Result<PeerId, JsError> {
    PeerId::from_str(peer).map_err(|e| JsError::new(&format!("bad peer id {peer:?}: {e}")))
}

fn overlay_name(p: ProtocolId) -> JsValue {
    if p == spray::PROTOCOL {
        JsValue::from_str("spray")
    } else {
        JsValue::from_f64(f64::from(p.as_u32()))
    }
}

fn direction(d: Direction) -> &'static str {
    match d {
        Direction::Outgoing => "out",
        Direction::Incoming => "in",
    }
}

/// An event as a plain JS object, `{type, …}`.
fn event_to_js(event: &Event, protocols: &[(String, ProtocolId)]) -> JsValue {
    let o = js_sys::Object::new();
    let protocol_name = |p: ProtocolId| {
        protocols
            .iter()
            .find(|(_, id)| *id == p)
            .map_or_else(|| overlay_name(p), |(n, _)| JsValue::from_str(n))
    };
    match event {
        Event::Connected { peer } => {
            set(&o, "type", "connected");
            set(&o, "peer", peer.to_string());
        }
        Event::Disconnected { peer, reason } => {
            set(&o, "type", "disconnected");
            set(&o, "peer", peer.to_string());
            set(&o, "reason", reason.as_str());
        }
        Event::ArcOpened {
            overlay,
            peer,
            direction: d,
        } => {
            set(&o, "type", "arc_opened");
            set(&o, "overlay", overlay_name(*overlay));
            set(&o, "peer", peer.to_string());
            set(&o, "direction", direction(*d));
        }
        Event::ArcClosed {
            overlay,
            peer,
            direction: d,
            reason,
        } => {
            set(&o, "type", "arc_closed");
            set(&o, "overlay", overlay_name(*overlay));
            set(&o, "peer", peer.to_string());
            set(&o, "direction", direction(*d));
            set(&o, "reason", format!("{reason:?}"));
        }
        Event::ConnectFailed {
            overlay,
            peer,
            reason,
        } => {
            set(&o, "type", "connect_failed");
            set(&o, "overlay", overlay.map_or(JsValue::NULL, overlay_name));
            set(&o, "peer", peer.to_string());
            set(&o, "reason", reason.to_string());
        }
        Event::Message {
            from,
            protocol,
            payload,
        } => {
            set(&o, "type", "message");
            set(&o, "from", from.to_string());
            set(&o, "protocol", protocol_name(*protocol));
            set(&o, "data", js_sys::Uint8Array::from(&payload[..]));
        }
        Event::BridgeDone {
            overlay,
            from,
            to,
            result,
            ..
        } => {
            set(&o, "type", "bridge_done");
            set(&o, "overlay", overlay_name(*overlay));
            set(&o, "from", from.to_string());
            set(&o, "to", to.to_string());
            set(&o, "ok", result.is_ok());
        }
        other => {
            set(&o, "type", "other");
            set(&o, "debug", format!("{other:?}"));
        }
    }
    o.into()
}

#[wasm_bindgen(js_class = N2nNode)]
impl WebNode {
    /// A node with the 32-byte secret key `secretHex` (64 hex digits; a new
    /// random one if omitted) and `options` (see the README: `protocols`,
    /// `delta_ms`, `loopback_only`, `ice_servers`, timeouts…). Runs Spray.
    #[wasm_bindgen(constructor)]
    pub fn new(secret_hex: Option<String>, options: JsValue) -> Result<WebNode, JsError> {
        let config: WebConfig = if options.is_undefined() || options.is_null() {
            WebConfig::default()
        } else {
            let text = js_sys::JSON::stringify(&options)
                .map_err(|e| JsError::new(&format!("options: {}", util::js_text(&e))))?;
            serde_json::from_str(&String::from(text))
                .map_err(|e| JsError::new(&format!("bad options: {e}")))?
        };
        config
            .validate()
            .map_err(|e| JsError::new(&format!("bad options: {e}")))?;
        let seed = match secret_hex {
            Some(h) => {
                let mut seed = [0u8; 32];
                hex::decode_to_slice(h.trim(), &mut seed)
                    .map_err(|_| JsError::new("the secret key must be 64 hex digits"))?;
                seed
            }
            None => random_seed()?,
        };
        let key = Keypair::from_secret(seed);
        let mut protocols = Vec::new();
        for name in &config.protocols {
            if name.is_empty() || name == "spray" {
                return Err(JsError::new(&format!("bad protocol name {name:?}")));
            }
            protocols.push((name.clone(), ProtocolId::from_runtime_name(name)));
        }
        let core_seed = match config.seed {
            Some(s) => s,
            None => u64::from_le_bytes(random_seed()?[..8].try_into().unwrap_or([0; 8])),
        };
        let spray_config = spray::Config {
            delta: Duration::from_millis(config.delta_ms),
            exchange_timeout: Duration::from_millis(config.delta_ms.max(500) * 3),
            ..spray::Config::default()
        };
        let rng = rand_chacha::ChaCha8Rng::seed_from_u64(core_seed ^ 0x5eed);
        let overlay = spray::State::new(key.peer_id(), spray_config, rng);
        let node_config = n2n_core::node::Config {
            handshake_timeout: config.handshake_timeout() + Duration::from_secs(1),
            ..n2n_core::node::Config::default()
        };
        let started = util::now();
        let mut core = NodeCore::new(
            started,
            node_config,
            key.clone(),
            n2n_transport_webrtc::PLUGIN_NAME,
            vec![Box::new(Erased::new(overlay))],
            protocols.iter().map(|(_, id)| *id).collect(),
            core_seed,
        );
        // Signals are signed valid until a unix time: the page's clock.
        core.set_wall_clock(started, js_sys::Date::now() as u64);
        let protocols = Rc::new(protocols);
        let names = protocols.clone();
        let node = Node::new(core, config, Box::new(move |e| event_to_js(e, &names)));
        Ok(WebNode {
            node,
            key,
            protocols,
        })
    }

    /// Sets the level of the logs (`"error"`, `"warn"` (default), `"info"`,
    /// `"debug"`), written to the console and to `globalThis.n2nLog`.
    #[wasm_bindgen(js_name = setLogLevel)]
    pub fn set_log_level(level: &str) -> Result<(), JsError> {
        if crate::log::set_level(level) {
            Ok(())
        } else {
            Err(JsError::new(&format!(
                "unknown log level {level:?} (error, warn, info, debug)"
            )))
        }
    }

    /// A new random secret key, 64 hex digits.
    #[wasm_bindgen(js_name = generateKey)]
    pub fn generate_key() -> Result<String, JsError> {
        Ok(hex::encode(random_seed()?))
    }

    /// The secret key kept in `localStorage` under `name`, made and stored
    /// on first use: the page keeps its peer id across reloads.
    #[wasm_bindgen(js_name = storedKey)]
    pub fn stored_key(name: &str) -> Result<String, JsError> {
        let storage = web_sys::window()
            .and_then(|w| w.local_storage().ok().flatten())
            .ok_or_else(|| JsError::new("localStorage is not available"))?;
        if let Ok(Some(k)) = storage.get_item(name)
            && k.len() == 64
            && hex::decode(&k).is_ok()
        {
            return Ok(k);
        }
        let k = Self::generate_key()?;
        storage
            .set_item(name, &k)
            .map_err(|e| JsError::new(&format!("localStorage: {}", util::js_text(&e))))?;
        Ok(k)
    }

    /// This node's peer id, 64 hex digits.
    #[wasm_bindgen(getter, js_name = peerId)]
    pub fn peer_id(&self) -> String {
        self.key.peer_id().to_string()
    }

    /// Joins room `room` of the signaling server at `url` (`ws://host:port`):
    /// connects to the contact the server gives and hands it to Spray.
    /// Resolves to the contact's peer id, or `null` for the first peer;
    /// rejects with the reason (unreachable, refused, timeout…).
    pub fn join(&self, url: String, room: String) -> js_sys::Promise {
        let node = self.node.clone();
        let key = self.key.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let fail = |m: String| JsValue::from(js_sys::Error::new(&m));
            if node.read(|d| d.signaling.is_some()).unwrap_or(true) {
                return Err(fail("already joined (or busy)".into()));
            }
            let (timeout, reconnect) = node
                .read(|d| (d.config.connect_timeout(), d.config.reconnect))
                .ok_or_else(|| fail("busy".into()))?;
            let weak = Rc::downgrade(&node);
            let on_signal = Rc::new(move |signal| {
                if let Some(n) = weak.upgrade() {
                    n.with(|d| d.on_signal(signal));
                }
            });
            let (client, contact) =
                WsClient::connect(&url, &room, &key, timeout, reconnect, on_signal)
                    .await
                    .map_err(|e| fail(format!("cannot join {url}: {e}")))?;
            node.with(|d| d.signaling = Some(client));
            let Some(contact) = contact else {
                return Ok(JsValue::NULL);
            };
            let rx = node
                .with(|d| {
                    let (ticket, rx) = d.ticket();
                    d.core
                        .connect(util::now(), contact, PathId(0), None, Some(ticket));
                    rx
                })
                .ok_or_else(|| fail("busy".into()))?;
            match rx.await {
                Ok(Completion::Connect(Ok(()))) => {}
                Ok(Completion::Connect(Err(e))) => {
                    return Err(fail(format!("cannot connect to the contact: {e}")));
                }
                _ => {
                    return Err(fail(format!(
                        "cannot connect to the contact: {}",
                        ConnectError::Shutdown
                    )));
                }
            }
            node.with(|d| d.core.join_overlay(util::now(), spray::PROTOCOL, contact))
                .ok_or_else(|| fail("busy".into()))?
                .map_err(|e| fail(format!("cannot join the overlay: {e}")))?;
            Ok(JsValue::from_str(&contact.to_string()))
        })
    }

    /// Calls `callback(event)` for every event: `{type: "connected" |
    /// "disconnected" | "arc_opened" | "arc_closed" | "connect_failed" |
    /// "message" | "bridge_done" | "other", …}` (`null` stops).
    #[wasm_bindgen(js_name = onEvent)]
    pub fn on_event(&self, callback: Option<js_sys::Function>) {
        self.node.set_on_event(callback);
    }

    /// Sends `data` to the neighbour `peer` on application protocol
    /// `protocol` (one of `options.protocols`). Throws on a bad peer id, an
    /// unknown protocol, an oversize message or a peer that is not a
    /// neighbour; resolves once the data is handed to the data channel (it
    /// waits while the channel's buffer is full, up to the send timeout).
    pub fn send(
        &self,
        peer: &str,
        protocol: &str,
        data: &[u8],
    ) -> Result<js_sys::Promise, JsError> {
        let peer = parse_peer(peer)?;
        let Some((_, id)) = self.protocols.iter().find(|(n, _)| n == protocol) else {
            let known: Vec<&str> = self.protocols.iter().map(|(n, _)| n.as_str()).collect();
            return Err(JsError::new(&format!(
                "unknown protocol {protocol:?} (this node has {known:?})"
            )));
        };
        if data.len() > MAX_DATA {
            return Err(JsError::new(&format!(
                "message of {} bytes exceeds {MAX_DATA} bytes",
                data.len()
            )));
        }
        let frame = n2n_core::wire::encode(&Message::Data {
            protocol: *id,
            payload: data.to_vec(),
        })
        .map_err(|e| JsError::new(&format!("cannot encode: {e}")))?;
        let frame = Bytes::from(frame);
        let link = self
            .node
            .read(|d| {
                (
                    d.link(&peer),
                    d.config.max_buffered,
                    d.config.send_timeout(),
                )
            })
            .ok_or_else(|| JsError::new("node busy"))?;
        let (Some(link), max_buffered, send_timeout) = link else {
            return Err(JsError::new(&format!(
                "{} is not a neighbour",
                peer.short()
            )));
        };
        Ok(wasm_bindgen_futures::future_to_promise(async move {
            let start = util::now();
            while link.buffered() as usize > max_buffered {
                if util::now() - start > send_timeout {
                    return Err(
                        js_sys::Error::new("send timed out (the peer does not read)").into(),
                    );
                }
                util::sleep(Duration::from_millis(2)).await;
            }
            link.send(&frame)
                .map_err(|e| JsValue::from(js_sys::Error::new(&e)))?;
            Ok(JsValue::UNDEFINED)
        }))
    }

    /// Spray's partial view: `{outview: [peer…], inview: [peer…]}`, each peer
    /// as many times as it has arcs.
    pub fn view(&self) -> JsValue {
        let o = js_sys::Object::new();
        let (inv, outv) = self
            .node
            .read(|d| {
                let list = |s: &n2n_core::ArcSet<PeerId>| {
                    let a = js_sys::Array::new();
                    for (p, n) in s.iter() {
                        for _ in 0..n {
                            a.push(&JsValue::from_str(&p.to_string()));
                        }
                    }
                    a
                };
                match d.core.views(spray::PROTOCOL) {
                    Some((i, o)) => (list(i), list(o)),
                    None => (js_sys::Array::new(), js_sys::Array::new()),
                }
            })
            .unwrap_or_else(|| (js_sys::Array::new(), js_sys::Array::new()));
        set(&o, "outview", outv);
        set(&o, "inview", inv);
        o.into()
    }

    /// Up to `k` peers sampled by Spray.
    #[wasm_bindgen(js_name = getPeers)]
    pub fn get_peers(&self, k: usize) -> Vec<String> {
        self.node
            .read(|d| d.core.peers(spray::PROTOCOL, k).unwrap_or_default())
            .unwrap_or_default()
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    /// The neighbours (peers with a connection), in peer order.
    pub fn neighbours(&self) -> Vec<String> {
        self.node
            .read(|d| d.core.neighbours().map(|p| p.to_string()).collect())
            .unwrap_or_default()
    }

    /// Counters of the core: `{neighbours, handshakes, relayed_signals,
    /// bridges_ok, bridges_failed, protocol_violations}` and the signaling
    /// server's last error, if any.
    pub fn snapshot(&self) -> JsValue {
        let o = js_sys::Object::new();
        self.node.read(|d| {
            let s = d.core.snapshot();
            set(&o, "neighbours", s.neighbours.len() as u32);
            set(&o, "handshakes", s.handshakes as u32);
            set(&o, "relayed_signals", s.relayed_signals as f64);
            set(&o, "bridges_ok", s.bridges_ok as f64);
            set(&o, "bridges_failed", s.bridges_failed as f64);
            set(&o, "protocol_violations", s.protocol_violations as f64);
            let err = d.signaling.as_ref().and_then(|c| c.last_error());
            set(
                &o,
                "signaling_error",
                err.map_or(JsValue::NULL, |(c, m)| format!("{c}: {m}").into()),
            );
        });
        o.into()
    }

    /// Leaves the overlay gracefully (Spray hands its arcs on).
    pub fn leave(&self) {
        self.node.with(|d| {
            let _ = d.core.leave(util::now(), spray::PROTOCOL);
        });
    }

    /// Stops the node: handshakes fail, connections say goodbye, the
    /// signaling connection closes.
    pub fn close(&self) {
        self.node.with(|d| d.shutdown());
    }
}
