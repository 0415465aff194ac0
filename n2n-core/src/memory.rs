//! In-memory transport and signaling, for fast protocol tests.
//!
//! [`MemoryNetwork`] plays the role of the network: a [`MemoryTransport`]
//! exchanges two signals over whatever [`crate::Signaling`] path the runtime
//! uses (so relays and signatures are exercised for real) and then hands both
//! sides the two ends of a pair of bounded channels. [`MemorySignalingHub`] is a
//! signaling server in memory. The memory parts are for protocol tests; real
//! transports (WebRTC, libp2p) have their own real-network tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{Mutex as AsyncMutex, mpsc, watch};

use crate::identity::PeerId;
use crate::plugin::{
    PluginContext, PluginError, Settings, SignalingPlugin, TransportPlugin, setting,
};
use crate::signal::SignedSignal;
use crate::signaling::{Signaling, SignalingError};
use crate::transport::{Connection, ConnectionError, SignalPipe, Transport, TransportError};

/// Messages that may wait in each direction of a memory connection.
pub const MEMORY_CHANNEL_CAPACITY: usize = 256;

/// Largest message a memory connection carries.
pub const MEMORY_MAX_MESSAGE: usize = crate::wire::MAX_FRAME;

#[derive(Debug, Default)]
struct NetworkState {
    next_token: u64,
    /// Connection ends waiting for their acceptor, by token.
    pending: BTreeMap<u64, MemoryConnection>,
    /// Cuts: pairs of peers whose traffic is silently dropped.
    cuts: Vec<(PeerId, PeerId)>,
    /// Live links, to apply cuts to connections already open.
    links: Vec<(PeerId, PeerId, watch::Sender<bool>)>,
}

/// A simulated network shared by memory transports.
#[derive(Debug, Clone, Default)]
pub struct MemoryNetwork {
    state: Arc<Mutex<NetworkState>>,
}

impl MemoryNetwork {
    /// A new, empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// The process-wide network used by the `memory` plugin.
    pub fn global() -> Self {
        static GLOBAL: OnceLock<MemoryNetwork> = OnceLock::new();
        GLOBAL.get_or_init(MemoryNetwork::new).clone()
    }

    /// A transport on this network.
    pub fn transport(&self) -> MemoryTransport {
        MemoryTransport {
            network: self.clone(),
        }
    }

    /// Cuts the link between `a` and `b`: their open connections go silent (no
    /// close, as when a cable is pulled) and new handshakes between them fail.
    pub fn cut(&self, a: PeerId, b: PeerId) {
        let mut st = self.state.lock().expect("memory network lock");
        st.cuts.push((a, b));
        for (x, y, tx) in &st.links {
            if (*x == a && *y == b) || (*x == b && *y == a) {
                let _ = tx.send(true);
            }
        }
    }

    fn is_cut(st: &NetworkState, a: PeerId, b: PeerId) -> bool {
        st.cuts
            .iter()
            .any(|(x, y)| (*x == a && *y == b) || (*x == b && *y == a))
    }
}

/// The in-memory [`Transport`].
#[derive(Debug, Clone)]
pub struct MemoryTransport {
    network: MemoryNetwork,
}

/// One end of an in-memory connection.
#[derive(Debug)]
pub struct MemoryConnection {
    remote: PeerId,
    tx: Mutex<Option<mpsc::Sender<Bytes>>>,
    rx: AsyncMutex<mpsc::Receiver<Bytes>>,
    cut: watch::Receiver<bool>,
}

fn pair(a: PeerId, b: PeerId, cut: watch::Receiver<bool>) -> (MemoryConnection, MemoryConnection) {
    let (ab_tx, ab_rx) = mpsc::channel(MEMORY_CHANNEL_CAPACITY);
    let (ba_tx, ba_rx) = mpsc::channel(MEMORY_CHANNEL_CAPACITY);
    (
        MemoryConnection {
            remote: b,
            tx: Mutex::new(Some(ab_tx)),
            rx: AsyncMutex::new(ba_rx),
            cut: cut.clone(),
        },
        MemoryConnection {
            remote: a,
            tx: Mutex::new(Some(ba_tx)),
            rx: AsyncMutex::new(ab_rx),
            cut,
        },
    )
}

#[async_trait]
impl Connection for MemoryConnection {
    fn remote(&self) -> PeerId {
        self.remote
    }

    async fn send(&self, message: Bytes) -> Result<(), ConnectionError> {
        if message.len() > MEMORY_MAX_MESSAGE {
            return Err(ConnectionError::TooLarge {
                size: message.len(),
                limit: MEMORY_MAX_MESSAGE,
            });
        }
        if *self.cut.borrow() {
            // A cut link swallows traffic silently.
            return Ok(());
        }
        let tx = self
            .tx
            .lock()
            .expect("memory connection lock")
            .clone()
            .ok_or(ConnectionError::Closed)?;
        tx.send(message).await.map_err(|_| ConnectionError::Closed)
    }

    async fn recv(&self) -> Result<Bytes, ConnectionError> {
        let mut rx = self.rx.lock().await;
        let mut cut = self.cut.clone();
        loop {
            if *cut.borrow() {
                // Silence forever: the runtime's idle timeout must notice.
                std::future::pending::<()>().await;
            }
            tokio::select! {
                m = rx.recv() => return m.ok_or(ConnectionError::Closed),
                changed = cut.changed() => {
                    if changed.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }

    async fn close(&self) {
        self.tx.lock().expect("memory connection lock").take();
        self.rx.lock().await.close();
    }
}

const HELLO: &[u8] = b"memory-hello:";
const READY: &[u8] = b"memory-ready";

#[async_trait]
impl Transport for MemoryTransport {
    fn name(&self) -> &str {
        "memory"
    }

    async fn dial(&self, mut signals: SignalPipe) -> Result<Box<dyn Connection>, TransportError> {
        let (local, remote) = (signals.local(), signals.remote());
        let is_cut = {
            let st = self.network.state.lock().expect("memory network lock");
            MemoryNetwork::is_cut(&st, local, remote)
        };
        if is_cut {
            // Like a real network: the remote never answers.
            std::future::pending::<()>().await;
        }
        let (token, mine) = {
            let mut st = self.network.state.lock().expect("memory network lock");
            let (cut_tx, cut_rx) = watch::channel(false);
            let (mine, theirs) = pair(local, remote, cut_rx);
            st.next_token += 1;
            let token = st.next_token;
            st.pending.insert(token, theirs);
            st.links.retain(|(_, _, tx)| tx.receiver_count() > 0);
            st.links.push((local, remote, cut_tx));
            (token, mine)
        };
        let mut hello = HELLO.to_vec();
        hello.extend_from_slice(&token.to_le_bytes());
        let result = async {
            signals.send(hello).await?;
            match signals.recv().await {
                Some(answer) if answer == READY => Ok(()),
                Some(other) => Err(TransportError::BadSignal(format!(
                    "unexpected answer of {} bytes",
                    other.len()
                ))),
                None => Err(TransportError::SignalingClosed),
            }
        }
        .await;
        if let Err(e) = result {
            self.network
                .state
                .lock()
                .expect("memory network lock")
                .pending
                .remove(&token);
            return Err(e);
        }
        Ok(Box::new(mine))
    }

    async fn accept(&self, mut signals: SignalPipe) -> Result<Box<dyn Connection>, TransportError> {
        let offer = signals
            .recv()
            .await
            .ok_or(TransportError::SignalingClosed)?;
        let token = offer
            .strip_prefix(HELLO)
            .and_then(|t| <[u8; 8]>::try_from(t).ok())
            .map(u64::from_le_bytes)
            .ok_or_else(|| TransportError::BadSignal("not a memory hello".into()))?;
        let conn = self
            .network
            .state
            .lock()
            .expect("memory network lock")
            .pending
            .remove(&token)
            .ok_or_else(|| TransportError::BadSignal("unknown memory token".into()))?;
        if conn.remote != signals.remote() {
            return Err(TransportError::IdentityMismatch {
                expected: signals.remote(),
                found: conn.remote.to_string(),
            });
        }
        signals.send(READY.to_vec()).await?;
        Ok(Box::new(conn))
    }
}

/// A signaling server in memory: peers attach to it and exchange signals.
///
/// Its contact for a joining peer ([`Signaling::join`]) is an attached peer
/// drawn at random from a seeded RNG ([`MemorySignalingHub::with_seed`]; seed
/// 0 by default), as a server picking among its members would: handing out
/// always the earliest peer builds thin, star-like overlays.
/// [`MemorySignalingHub::earliest_contact`] restores that for tests that need
/// to know the contact.
#[derive(Debug, Clone, Default)]
pub struct MemorySignalingHub {
    members: Arc<Mutex<BTreeMap<PeerId, mpsc::Sender<SignedSignal>>>>,
    order: Arc<Mutex<Vec<PeerId>>>,
    /// `None`: the earliest attached peer is the contact.
    contact_rng: Arc<Mutex<Option<rand_chacha::ChaCha8Rng>>>,
}

/// One peer's attachment to a [`MemorySignalingHub`].
#[derive(Debug)]
pub struct MemorySignaling {
    hub: MemorySignalingHub,
    local: PeerId,
    rx: AsyncMutex<mpsc::Receiver<SignedSignal>>,
}

impl MemorySignalingHub {
    /// A new, empty hub handing out random contacts (seed 0).
    pub fn new() -> Self {
        Self::with_seed(0)
    }

    /// A new, empty hub whose random contacts are drawn with `seed`.
    pub fn with_seed(seed: u64) -> Self {
        use rand::SeedableRng;
        Self {
            contact_rng: Arc::new(Mutex::new(Some(rand_chacha::ChaCha8Rng::seed_from_u64(
                seed,
            )))),
            ..Self::default()
        }
    }

    /// A new, empty hub whose contact is always the earliest attached peer.
    pub fn earliest_contact() -> Self {
        Self::default()
    }

    /// The process-wide hub used by the `memory` signaling plugin.
    pub fn global() -> Self {
        static GLOBAL: OnceLock<MemorySignalingHub> = OnceLock::new();
        GLOBAL.get_or_init(MemorySignalingHub::new).clone()
    }

    /// Attaches `peer` (replacing an earlier attachment of the same peer).
    pub fn attach(&self, peer: PeerId) -> Arc<MemorySignaling> {
        let (tx, rx) = mpsc::channel(256);
        self.members.lock().expect("hub lock").insert(peer, tx);
        let mut order = self.order.lock().expect("hub lock");
        order.retain(|p| *p != peer);
        order.push(peer);
        Arc::new(MemorySignaling {
            hub: self.clone(),
            local: peer,
            rx: AsyncMutex::new(rx),
        })
    }

    /// Detaches `peer`: signals to it fail from now on.
    pub fn detach(&self, peer: &PeerId) {
        self.members.lock().expect("hub lock").remove(peer);
        self.order.lock().expect("hub lock").retain(|p| p != peer);
    }
}

#[async_trait]
impl Signaling for MemorySignaling {
    fn name(&self) -> &str {
        "memory"
    }

    /// The contact is an attached peer other than us: drawn at random, or
    /// the earliest (see [`MemorySignalingHub`]).
    async fn join(&self) -> Result<Option<PeerId>, SignalingError> {
        use rand::Rng;
        let others: Vec<PeerId> = self
            .hub
            .order
            .lock()
            .expect("hub lock")
            .iter()
            .filter(|p| **p != self.local)
            .copied()
            .collect();
        if others.is_empty() {
            return Ok(None);
        }
        let i = match self.hub.contact_rng.lock().expect("hub lock").as_mut() {
            Some(rng) => rng.random_range(0..others.len()),
            None => 0,
        };
        Ok(Some(others[i]))
    }

    async fn send(&self, signal: SignedSignal) -> Result<(), SignalingError> {
        let to = signal.signal.to;
        let tx = self
            .hub
            .members
            .lock()
            .expect("hub lock")
            .get(&to)
            .cloned()
            .ok_or(SignalingError::UnknownPeer(to))?;
        tokio::time::timeout(Duration::from_secs(5), tx.send(signal))
            .await
            .map_err(|_| SignalingError::Timeout)?
            .map_err(|_| SignalingError::UnknownPeer(to))
    }

    async fn recv(&self) -> Result<SignedSignal, SignalingError> {
        self.rx
            .lock()
            .await
            .recv()
            .await
            .ok_or(SignalingError::Closed)
    }
}

fn build_memory_transport(
    _ctx: &PluginContext,
    settings: &Settings,
) -> Result<Arc<dyn Transport>, PluginError> {
    if let Some(key) = settings.keys().next() {
        return Err(PluginError::Settings {
            plugin: "memory".into(),
            message: format!("unknown setting `{key}` (the memory transport has none)"),
        });
    }
    Ok(Arc::new(MemoryNetwork::global().transport()))
}

fn build_memory_signaling(
    ctx: PluginContext,
    settings: Settings,
) -> crate::plugin::BoxFuture<'static, Result<Arc<dyn Signaling>, PluginError>> {
    Box::pin(async move {
        let _room: String = setting("memory", &settings, "room", String::new())?;
        let sig: Arc<dyn Signaling> = MemorySignalingHub::global().attach(ctx.keypair.peer_id());
        Ok(sig)
    })
}

inventory::submit! {
    TransportPlugin { name: "memory", build: build_memory_transport }
}

inventory::submit! {
    SignalingPlugin { name: "memory", build: build_memory_signaling }
}

/// Two signal pipes whose signals are forwarded to each other by a task, so
/// that two transports can handshake with no node and no signaling: `dialer`
/// believes it talks to `dial_to`, `acceptor` to `accept_from` (give other
/// ids than the transports' own to test identity checks). For transport
/// tests, examples and benchmarks.
///
/// # Panics
/// Outside a tokio runtime.
pub fn wired_pipes(
    dialer: PeerId,
    dial_to: PeerId,
    acceptor: PeerId,
    accept_from: PeerId,
) -> (SignalPipe, SignalPipe) {
    let (dial_pipe, mut dial_ends) = SignalPipe::new(dialer, dial_to);
    let (accept_pipe, mut accept_ends) = SignalPipe::new(acceptor, accept_from);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(s) = dial_ends.outbound.recv() => {
                    if accept_ends.inbound.send(s).await.is_err() { break; }
                }
                Some(s) = accept_ends.outbound.recv() => {
                    if dial_ends.inbound.send(s).await.is_err() { break; }
                }
                else => break,
            }
        }
    });
    (dial_pipe, accept_pipe)
}
