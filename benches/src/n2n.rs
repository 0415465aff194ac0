//! n2n nodes over the WebRTC transport (its default settings: host candidates
//! on loopback only, no mDNS), and the waits the benches share.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use n2n_core::memory::MemorySignalingHub;
use n2n_core::node::{Builder, Config, Event, Node};
use n2n_core::{Keypair, PeerId, ProtocolId, Transport};
use n2n_transport_webrtc::WebRtcTransport;
use rand::SeedableRng;

use crate::within;

/// The overlay whose arcs the benches open.
pub const OVERLAY: ProtocolId = ProtocolId::from_name("bench");
/// The application protocol of the benches' messages.
pub const APP: ProtocolId = ProtocolId::from_name("bench-app");

/// The key pair of seed `seed`.
pub fn key(seed: u64) -> Keypair {
    Keypair::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed))
}

/// A fresh WebRTC transport with the default settings.
///
/// # Panics
/// If the transport cannot be built.
pub fn webrtc() -> Arc<dyn Transport> {
    let config = n2n_transport_webrtc::Config {
        handshake_timeout: SET_UP_TIMEOUT,
        ..n2n_transport_webrtc::Config::default()
    };
    Arc::new(WebRtcTransport::new(config).expect("webrtc"))
}

/// Handshake timeout of the benches' nodes and transports: set-ups are not
/// what most benches time, and a debug build of the benches (the test run of
/// CI) on a busy machine can take longer than the 10 s default.
pub const SET_UP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A node of key `seed` on `transport`, running [`OVERLAY`] and [`APP`].
///
/// # Panics
/// If the node cannot be spawned.
pub fn node(seed: u64, transport: Arc<dyn Transport>) -> Node {
    Builder::new(key(seed))
        .config(Config {
            seed: Some(seed),
            handshake_timeout: SET_UP_TIMEOUT,
            ..Config::default()
        })
        .transport(transport)
        .protocol(OVERLAY)
        .protocol(APP)
        .spawn()
        .expect("node")
}

/// Waits for the next application message (other events are skipped).
///
/// # Panics
/// If the node stops or no message comes within [`crate::WAIT`].
pub async fn next_message(events: &mut n2n_core::node::Events) -> (PeerId, Bytes) {
    within("n2n message", async {
        loop {
            match events.recv().await.expect("node alive") {
                Event::Message { from, payload, .. } => return (from, payload),
                _ => continue,
            }
        }
    })
    .await
}

/// Waits until `node` counts `n` neighbours (the accepting side registers a
/// connection a moment after the dialer's `connect` returned).
///
/// # Panics
/// If that takes longer than [`crate::WAIT`].
pub async fn wait_neighbours(node: &Node, n: usize) {
    within("neighbours", async {
        while node.handle().snapshot().await.neighbours.len() < n {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    })
    .await
}

/// Three nodes over WebRTC, A and C connected to B (through memory signaling,
/// then unused), A and C not connected to each other.
#[derive(Debug)]
pub struct Trio {
    /// A, which opens the bridged connection.
    pub a: Node,
    /// B, the common neighbour.
    pub b: Node,
    /// C, the target.
    pub c: Node,
}

impl Trio {
    /// Builds the trio with keys `3 * seed + 1..=3`; `transport` makes each
    /// node's transport (A's first, then B's, then C's).
    ///
    /// # Panics
    /// If a connection fails.
    pub async fn new(seed: u64, mut transport: impl FnMut() -> Arc<dyn Transport>) -> Self {
        let hub = MemorySignalingHub::new();
        let a = node(3 * seed + 1, transport());
        let b = node(3 * seed + 2, transport());
        let c = node(3 * seed + 3, transport());
        let (a_id, b_id, c_id) = (a.local_peer_id(), b.local_peer_id(), c.local_peer_id());
        b.handle().attach_signaling(hub.attach(b_id)).await;
        within(
            "A joins B",
            a.handle().connect(b_id, hub.attach(a_id), Some(OVERLAY)),
        )
        .await
        .expect("A joins B");
        within(
            "C joins B",
            c.handle().connect(b_id, hub.attach(c_id), Some(OVERLAY)),
        )
        .await
        .expect("C joins B");
        wait_neighbours(&b, 2).await;
        Self { a, b, c }
    }

    /// Shuts the three nodes down.
    pub async fn shutdown(self) {
        for n in [self.a, self.b, self.c] {
            within("shutdown", n.shutdown()).await;
        }
    }
}
