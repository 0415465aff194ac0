//! Native peers for the browser tests: the tokio driver, the native WebRTC
//! transport and Spray, with an echo on the `chat` protocol (`ping X` is
//! answered `pong X`; `bulk…` messages are only counted).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use n2n_core::node::{Builder, Event, NodeHandle};
use n2n_core::overlay::Erased;
use n2n_core::{Keypair, PeerId, ProtocolId, Signaling};
use n2n_overlay_spray::spray;
use n2n_signal_ws::{ClientConfig, WsSignaling};
use n2n_transport_webrtc::WebRtcTransport;
use rand::SeedableRng;
use tokio::sync::Mutex;

/// The application protocol of the tests.
pub(crate) const CHAT: ProtocolId = ProtocolId::from_name("chat");

/// A native peer.
pub(crate) struct Native {
    pub(crate) id: PeerId,
    pub(crate) key: Keypair,
    pub(crate) handle: NodeHandle,
    /// Non-ping messages received (bounded).
    pub(crate) inbox: Arc<Mutex<Vec<(PeerId, String)>>>,
    /// Bytes of `bulk` messages received.
    pub(crate) bulk: Arc<AtomicU64>,
    pub(crate) signalings: Vec<Arc<WsSignaling>>,
}

/// A native peer with seed `seed`, Spray's period `delta`.
pub(crate) async fn native(seed: u64, delta: Duration) -> anyhow::Result<Native> {
    let key = Keypair::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    let id = key.peer_id();
    let config = spray::Config {
        delta,
        exchange_timeout: delta.max(Duration::from_millis(500)) * 3,
        ..spray::Config::default()
    };
    let overlay = spray::State::new(id, config, rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    let transport = WebRtcTransport::new(n2n_transport_webrtc::Config::default())?;
    let node = Builder::new(key.clone())
        .transport(Arc::new(transport))
        .overlay(Box::new(Erased::new(overlay)))
        .protocol(CHAT)
        .spawn()?;
    let (handle, mut events) = node.into_parts();
    let inbox = Arc::new(Mutex::new(Vec::new()));
    let bulk = Arc::new(AtomicU64::new(0));
    let (h, ib, b) = (handle.clone(), inbox.clone(), bulk.clone());
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            let Event::Message {
                from,
                protocol,
                payload,
            } = event
            else {
                continue;
            };
            if protocol != CHAT {
                continue;
            }
            if payload.starts_with(b"bulk") {
                b.fetch_add(payload.len() as u64, Ordering::Relaxed);
            } else if let Some(tag) = payload.strip_prefix(b"ping ") {
                let mut pong = b"pong ".to_vec();
                pong.extend_from_slice(tag);
                let h = h.clone();
                tokio::spawn(async move {
                    let _ = h.send(from, CHAT, pong).await;
                });
            } else {
                let mut ib = ib.lock().await;
                if ib.len() < 10_000 {
                    ib.push((from, String::from_utf8_lossy(&payload).to_string()));
                }
            }
        }
    });
    Ok(Native {
        id,
        key,
        handle,
        inbox,
        bulk,
        signalings: Vec::new(),
    })
}

impl Native {
    /// Joins `room` of `url` (Spray), returning the contact.
    pub(crate) async fn join(&mut self, url: &str, room: &str) -> anyhow::Result<Option<PeerId>> {
        let sig = WsSignaling::connect(url, room, &self.key, ClientConfig::default()).await?;
        self.signalings.push(sig.clone());
        let s: Arc<dyn Signaling> = sig;
        Ok(self.handle.join(spray::PROTOCOL, s).await?)
    }

    /// Stays reachable in `room` without joining anything there.
    pub(crate) async fn attend(&mut self, url: &str, room: &str) -> anyhow::Result<()> {
        let sig = WsSignaling::connect(url, room, &self.key, ClientConfig::default()).await?;
        self.signalings.push(sig.clone());
        self.handle.attach_signaling(sig).await;
        Ok(())
    }

    /// Waits for `pong tag` from `peer`.
    pub(crate) async fn expect(
        &self,
        peer: PeerId,
        text: &str,
        within: Duration,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self
                .inbox
                .lock()
                .await
                .iter()
                .any(|(f, t)| *f == peer && t == text)
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("no {text:?} from {} within {within:?}", peer.short());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Sends `ping tag` to `peer` and waits for the pong.
    pub(crate) async fn ping(
        &self,
        peer: PeerId,
        tag: &str,
        within: Duration,
    ) -> anyhow::Result<()> {
        self.handle
            .send(peer, CHAT, format!("ping {tag}"))
            .await
            .with_context(|| format!("send to {}", peer.short()))?;
        self.expect(peer, &format!("pong {tag}"), within).await
    }

    /// Closes the signaling connections.
    pub(crate) fn leave_server(&self) {
        for s in &self.signalings {
            s.close();
        }
    }
}
