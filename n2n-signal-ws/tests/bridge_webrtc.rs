//! The bridge over real WebRTC on loopback: A and C join B through a real
//! WebSocket signaling server, the server is shut down, and B bridges A to C.
//! Then the failure paths: B killed mid-handshake, C killed mid-handshake, and
//! a tampering relay.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use n2n_core::node::{Builder, Config, ConnectError, Event, Node};
use n2n_core::transport::{Connection, ConnectionError, SignalPipe, Transport, TransportError};
use n2n_core::wire::{self, BridgeFailure, BridgeMessage, Message};
use n2n_core::{Keypair, PeerId, ProtocolId};
use n2n_signal_ws::{ClientConfig, Server, ServerConfig, WsSignaling};
use n2n_transport_webrtc::WebRtcTransport;
use rand::SeedableRng;
use tokio::sync::Notify;

const O: ProtocolId = ProtocolId::from_name("bridge-webrtc-test");

/// What the intercepting relay does with relayed signals.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Pass,
    /// Flip one byte of each relayed signal's payload.
    Tamper,
    /// Swallow relayed signals and tell the test one was seen.
    Hold,
}

#[derive(Debug)]
struct Relay {
    mode: Mutex<Mode>,
    seen: Notify,
}

/// B's transport: real WebRTC, with a hook on the frames B sends.
#[derive(Debug)]
struct Intercepting {
    inner: WebRtcTransport,
    relay: Arc<Relay>,
}

#[derive(Debug)]
struct InterceptingConn {
    inner: Box<dyn Connection>,
    relay: Arc<Relay>,
}

#[async_trait]
impl Connection for InterceptingConn {
    fn remote(&self) -> PeerId {
        self.inner.remote()
    }

    async fn send(&self, frame: Bytes) -> Result<(), ConnectionError> {
        let mode = *self.relay.mode.lock().unwrap();
        if mode != Mode::Pass
            && let Ok(Message::Bridge(m)) = wire::decode(&frame)
            && let BridgeMessage::Relay {
                job,
                from,
                to,
                mut signal,
            } = *m
        {
            self.relay.seen.notify_one();
            if mode == Mode::Hold {
                return Ok(());
            }
            signal.signal.payload[0] ^= 0x01;
            let frame = wire::encode(&Message::Bridge(Box::new(BridgeMessage::Relay {
                job,
                from,
                to,
                signal,
            })))
            .unwrap();
            return self.inner.send(frame.into()).await;
        }
        self.inner.send(frame).await
    }

    async fn recv(&self) -> Result<Bytes, ConnectionError> {
        self.inner.recv().await
    }

    async fn close(&self) {
        self.inner.close().await
    }
}

#[async_trait]
impl Transport for Intercepting {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn dial(&self, s: SignalPipe) -> Result<Box<dyn Connection>, TransportError> {
        let inner = self.inner.dial(s).await?;
        Ok(Box::new(InterceptingConn {
            inner,
            relay: self.relay.clone(),
        }))
    }

    async fn accept(&self, s: SignalPipe) -> Result<Box<dyn Connection>, TransportError> {
        let inner = self.inner.accept(s).await?;
        Ok(Box::new(InterceptingConn {
            inner,
            relay: self.relay.clone(),
        }))
    }
}

fn key(seed: u64) -> Keypair {
    Keypair::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed))
}

fn config(seed: u64) -> Config {
    Config {
        seed: Some(seed),
        keepalive: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(3),
        handshake_timeout: Duration::from_secs(8),
        bridge_timeout: Duration::from_secs(10),
        ..Config::default()
    }
}

fn webrtc() -> WebRtcTransport {
    WebRtcTransport::new(n2n_transport_webrtc::Config::default()).expect("webrtc transport")
}

struct Trio {
    a: Node,
    b: Node,
    c: Node,
    relay: Arc<Relay>,
}

/// A and C connect to B through a real signaling server, which is then stopped.
async fn trio() -> Trio {
    let server = Server::bind(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        seed: Some(1),
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let url = server.url();
    let relay = Arc::new(Relay {
        mode: Mutex::new(Mode::Pass),
        seen: Notify::new(),
    });
    let (ka, kb, kc) = (key(1), key(2), key(3));
    let b = Builder::new(kb.clone())
        .config(config(2))
        .transport(Arc::new(Intercepting {
            inner: webrtc(),
            relay: relay.clone(),
        }))
        .protocol(O)
        .spawn()
        .unwrap();
    let sb = WsSignaling::connect(&url, "r", &kb, ClientConfig::default())
        .await
        .unwrap();
    b.handle().attach_signaling(sb.clone()).await;
    let mut sigs = vec![sb];
    let mut ends = Vec::new();
    for (k, seed) in [(ka, 1), (kc, 3)] {
        let n = Builder::new(k.clone())
            .config(config(seed))
            .transport(Arc::new(webrtc()))
            .protocol(O)
            .spawn()
            .unwrap();
        let s = WsSignaling::connect(&url, "r", &k, ClientConfig::default())
            .await
            .unwrap();
        n.handle()
            .connect(b.local_peer_id(), s.clone(), Some(O))
            .await
            .unwrap();
        sigs.push(s);
        ends.push(n);
    }
    // From here on, no server.
    server.shutdown().await;
    for s in &sigs {
        s.close();
    }
    let c = ends.pop().unwrap();
    let a = ends.pop().unwrap();
    // B registers its accepted connections a moment after the dialers return.
    for _ in 0..200 {
        if b.handle().snapshot().await.neighbours.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Trio { a, b, c, relay }
}

async fn wait_event(node: &mut Node, secs: u64, pred: impl Fn(&Event) -> bool) -> Event {
    tokio::time::timeout(Duration::from_secs(secs), async {
        loop {
            let e = node.next_event().await.expect("node alive");
            if pred(&e) {
                return e;
            }
        }
    })
    .await
    .expect("event in time")
}

async fn assert_no_jobs(node: &Node) {
    for _ in 0..100 {
        let s = node.handle().snapshot().await;
        if s.handshakes + s.relay_jobs + s.bridge_endpoints + s.bridge_requests == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("jobs left: {:?}", node.handle().snapshot().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_bridges_a_to_c_over_webrtc_without_the_server() {
    let Trio { a, b, mut c, .. } = trio().await;
    let (aid, cid) = (a.local_peer_id(), c.local_peer_id());
    b.handle().bridge(O, aid, cid).await.unwrap();
    let chat = ProtocolId::from_name("chat");
    a.handle()
        .send(cid, chat, b"hello C, directly".to_vec())
        .await
        .unwrap();
    let e = wait_event(&mut c, 10, |e| matches!(e, Event::Message { .. })).await;
    assert_eq!(
        e,
        Event::Message {
            from: aid,
            protocol: chat,
            payload: Bytes::from_static(b"hello C, directly")
        }
    );
    let sb = b.handle().snapshot().await;
    assert!(
        sb.relayed_signals >= 2,
        "offer and answer relayed by B: {}",
        sb.relayed_signals
    );
    assert_eq!(sb.bridges_ok, 1);
    let sa = a.handle().snapshot().await;
    assert!(sa.is_connected(&cid), "A and C have their own connection");
    assert_eq!(sa.view(O).1.count(&cid), 1);
    assert_eq!(c.handle().snapshot().await.view(O).0.count(&aid), 1);
    for n in [&a, &b, &c] {
        assert_no_jobs(n).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_killed_mid_handshake_fails_the_bridge_with_a_reason() {
    let Trio { mut a, b, c, relay } = trio().await;
    let (aid, cid) = (a.local_peer_id(), c.local_peer_id());
    *relay.mode.lock().unwrap() = Mode::Hold;
    let hb = b.handle().clone();
    let bridge = tokio::spawn(async move { hb.bridge(O, aid, cid).await });
    tokio::time::timeout(Duration::from_secs(10), relay.seen.notified())
        .await
        .unwrap();
    c.kill();
    assert_eq!(bridge.await.unwrap(), Err(BridgeFailure::PeerGone(cid)));
    let e = wait_event(&mut a, 15, |e| matches!(e, Event::ConnectFailed { .. })).await;
    assert!(
        matches!(e, Event::ConnectFailed { peer, reason: ConnectError::Bridge(BridgeFailure::PeerGone(gone)), .. } if peer == cid && gone == cid),
        "{e:?}"
    );
    assert_no_jobs(&a).await;
    assert_no_jobs(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_killed_mid_handshake_fails_on_a_and_c() {
    let Trio { mut a, b, c, relay } = trio().await;
    let (aid, bid, cid) = (a.local_peer_id(), b.local_peer_id(), c.local_peer_id());
    *relay.mode.lock().unwrap() = Mode::Hold;
    let hb = b.handle().clone();
    tokio::spawn(async move { hb.bridge(O, aid, cid).await });
    tokio::time::timeout(Duration::from_secs(10), relay.seen.notified())
        .await
        .unwrap();
    b.kill();
    let e = wait_event(&mut a, 15, |e| matches!(e, Event::ConnectFailed { .. })).await;
    assert!(
        matches!(e, Event::ConnectFailed { peer, reason: ConnectError::Bridge(BridgeFailure::PeerGone(gone)), .. } if peer == cid && gone == bid),
        "{e:?}"
    );
    assert_no_jobs(&a).await;
    assert_no_jobs(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampering_relay_gets_a_rejection_not_a_connection() {
    let Trio { mut a, b, c, relay } = trio().await;
    let (aid, cid) = (a.local_peer_id(), c.local_peer_id());
    *relay.mode.lock().unwrap() = Mode::Tamper;
    let r = b.handle().bridge(O, aid, cid).await;
    assert!(matches!(r, Err(BridgeFailure::SignalRejected(_))), "{r:?}");
    let e = wait_event(&mut a, 15, |e| matches!(e, Event::ConnectFailed { .. })).await;
    assert!(
        matches!(
            e,
            Event::ConnectFailed {
                reason: ConnectError::Bridge(BridgeFailure::SignalRejected(_)),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!a.handle().snapshot().await.is_connected(&cid));
    assert!(!c.handle().snapshot().await.is_connected(&aid));
    for n in [&a, &b, &c] {
        assert_no_jobs(n).await;
    }
}
