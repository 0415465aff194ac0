//! Shared helpers of the node runtime tests: nodes on the memory transport.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use n2n_core::memory::{MemoryNetwork, MemorySignaling, MemorySignalingHub};
use n2n_core::node::{Builder, Config, Event, Node};
use n2n_core::transport::{Connection, SignalPipe, Transport, TransportError};
use n2n_core::{Keypair, PeerId, ProtocolId};
use rand::SeedableRng;

/// The overlay id the tests use for arcs.
pub const O: ProtocolId = ProtocolId::from_name("test-overlay");

/// A transport that counts its handshakes, wrapping the memory transport.
#[derive(Debug)]
pub struct Counting {
    inner: Arc<dyn Transport>,
    pub dials: AtomicUsize,
    pub accepts: AtomicUsize,
    pub established: AtomicUsize,
}

#[async_trait]
impl Transport for Counting {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn dial(&self, signals: SignalPipe) -> Result<Box<dyn Connection>, TransportError> {
        self.dials.fetch_add(1, Ordering::SeqCst);
        let c = self.inner.dial(signals).await?;
        self.established.fetch_add(1, Ordering::SeqCst);
        Ok(c)
    }

    async fn accept(&self, signals: SignalPipe) -> Result<Box<dyn Connection>, TransportError> {
        self.accepts.fetch_add(1, Ordering::SeqCst);
        let c = self.inner.accept(signals).await?;
        self.established.fetch_add(1, Ordering::SeqCst);
        Ok(c)
    }
}

impl Counting {
    pub fn established(&self) -> usize {
        self.established.load(Ordering::SeqCst)
    }
}

/// A memory network, a memory signaling hub, and nodes on them.
pub struct Net {
    pub network: MemoryNetwork,
    pub hub: MemorySignalingHub,
}

pub struct TestNode {
    pub node: Node,
    pub id: PeerId,
    pub signaling: Arc<MemorySignaling>,
    pub transport: Arc<Counting>,
}

pub fn key(seed: u64) -> Keypair {
    Keypair::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed))
}

pub fn test_config() -> Config {
    Config {
        handshake_timeout: Duration::from_secs(5),
        linger: Duration::from_secs(2),
        keepalive: Duration::from_secs(3),
        idle_timeout: Duration::from_secs(9),
        bridge_timeout: Duration::from_secs(8),
        ..Config::default()
    }
}

impl Net {
    pub fn new() -> Self {
        Self {
            network: MemoryNetwork::new(),
            hub: MemorySignalingHub::new(),
        }
    }

    pub async fn node(&self, seed: u64) -> TestNode {
        self.node_with(seed, test_config()).await
    }

    pub async fn node_with(&self, seed: u64, mut config: Config) -> TestNode {
        let keypair = key(seed);
        let id = keypair.peer_id();
        config.seed = Some(seed);
        let transport = Arc::new(Counting {
            inner: Arc::new(self.network.transport()),
            dials: AtomicUsize::new(0),
            accepts: AtomicUsize::new(0),
            established: AtomicUsize::new(0),
        });
        let node = Builder::new(keypair)
            .config(config)
            .transport(transport.clone())
            .protocol(O)
            .spawn()
            .expect("transport set");
        let signaling = self.hub.attach(id);
        node.handle().attach_signaling(signaling.clone()).await;
        TestNode {
            node,
            id,
            signaling,
            transport,
        }
    }
}

impl TestNode {
    /// Connects to `other` through the memory signaling hub, opening one arc.
    pub async fn connect(&self, other: &TestNode) {
        self.node
            .handle()
            .connect(other.id, self.signaling.clone(), Some(O))
            .await
            .expect("connects");
    }

    pub fn handle(&self) -> &n2n_core::node::NodeHandle {
        self.node.handle()
    }

    pub async fn out_count(&self, peer: PeerId) -> u32 {
        self.handle().snapshot().await.view(O).1.count(&peer)
    }

    pub async fn in_count(&self, peer: PeerId) -> u32 {
        self.handle().snapshot().await.view(O).0.count(&peer)
    }

    /// All events ready now.
    pub fn drain(&mut self) -> Vec<Event> {
        let mut v = Vec::new();
        while let Some(e) = self.node.try_next_event() {
            v.push(e);
        }
        v
    }

    /// Waits (on the virtual clock) for an event matching `pred`, up to `secs`.
    pub async fn wait_for(&mut self, secs: u64, pred: impl Fn(&Event) -> bool) -> Event {
        tokio::time::timeout(Duration::from_secs(secs), async {
            loop {
                let e = self.node.next_event().await.expect("node alive");
                if pred(&e) {
                    return e;
                }
            }
        })
        .await
        .expect("event in time")
    }
}

/// Lets every task run until the runtime is idle (virtual time advances only
/// when everything waits).
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}
pub mod harness;
