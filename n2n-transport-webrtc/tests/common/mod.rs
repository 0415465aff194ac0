//! Shared helpers: transports wired directly, and nodes on the WebRTC
//! transport signaling through an in-memory hub, all on loopback.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use n2n_core::memory::{MemorySignaling, MemorySignalingHub};
use n2n_core::node::{Builder, Config, Event, Node, NodeHandle};
use n2n_core::transport::SignalPipe;
use n2n_core::{Keypair, PeerId, ProtocolId};
use n2n_transport_webrtc::{Config as WebRtcConfig, WebRtcTransport};
use rand::SeedableRng;

/// The overlay id the tests use for arcs.
pub const O: ProtocolId = ProtocolId::from_name("webrtc-test-overlay");
/// The application protocol of test messages.
pub const CHAT: ProtocolId = ProtocolId::from_name("webrtc-test-chat");

pub fn key(seed: u64) -> Keypair {
    Keypair::generate(&mut rand::rngs::StdRng::seed_from_u64(seed))
}

pub fn config() -> WebRtcConfig {
    WebRtcConfig {
        handshake_timeout: Duration::from_secs(10),
        lost_timeout: Duration::from_secs(2),
        keepalive_interval: Duration::from_millis(500),
        ..WebRtcConfig::default()
    }
}

/// Two pipes whose signals are forwarded to each other (see
/// [`n2n_core::memory::wired_pipes`]).
pub fn wire(
    dialer: PeerId,
    dial_to: PeerId,
    acceptor: PeerId,
    accept_from: PeerId,
) -> (SignalPipe, SignalPipe) {
    n2n_core::memory::wired_pipes(dialer, dial_to, acceptor, accept_from)
}

pub fn node_config(seed: u64) -> Config {
    Config {
        handshake_timeout: Duration::from_secs(15),
        linger: Duration::from_secs(2),
        keepalive: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(8),
        bridge_timeout: Duration::from_secs(15),
        seed: Some(seed),
        ..Config::default()
    }
}

pub struct TestNode {
    pub node: Node,
    pub id: PeerId,
    pub signaling: Arc<MemorySignaling>,
    pub transport: Arc<WebRtcTransport>,
}

/// A node on the WebRTC transport, attached to `hub`.
pub async fn node(hub: &MemorySignalingHub, seed: u64) -> TestNode {
    let keypair = key(seed);
    let id = keypair.peer_id();
    let transport = Arc::new(WebRtcTransport::new(config()).expect("transport"));
    let node = Builder::new(keypair)
        .config(node_config(seed))
        .transport(transport.clone())
        .protocol(O)
        .protocol(CHAT)
        .spawn()
        .expect("transport set");
    let signaling = hub.attach(id);
    node.handle().attach_signaling(signaling.clone()).await;
    TestNode {
        node,
        id,
        signaling,
        transport,
    }
}

impl TestNode {
    pub fn handle(&self) -> &NodeHandle {
        self.node.handle()
    }

    /// Connects to `other` through the hub, opening one arc.
    pub async fn connect(&self, other: &TestNode) {
        self.handle()
            .connect(other.id, self.signaling.clone(), Some(O))
            .await
            .expect("connects over WebRTC");
    }

    /// Waits until the acceptor's side of a connection to `peer` is up too.
    pub async fn until_connected(&self, peer: PeerId) {
        eventually(10, "connected", || async {
            self.handle().snapshot().await.is_connected(&peer)
        })
        .await;
    }

    pub async fn out_count(&self, peer: PeerId) -> u32 {
        self.handle().snapshot().await.view(O).1.count(&peer)
    }

    pub async fn in_count(&self, peer: PeerId) -> u32 {
        self.handle().snapshot().await.view(O).0.count(&peer)
    }

    /// Waits (real time) for an event matching `pred`, up to `secs`.
    pub async fn wait_for(&mut self, secs: u64, pred: impl Fn(&Event) -> bool) -> Event {
        let id = self.id;
        tokio::time::timeout(Duration::from_secs(secs), async {
            loop {
                let e = self.node.next_event().await.expect("node alive");
                if pred(&e) {
                    return e;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{id:?}: no matching event within {secs} s"))
    }
}

/// Polls `check` every 20 ms until it holds, up to `secs` seconds.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {secs} s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
