//! [`Libp2pTransport`]: the [`Transport`] implementation.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use libp2p::{Multiaddr, Stream, StreamProtocol};
use n2n_core::transport::{Connection, SignalPipe, Transport, TransportError};
use n2n_core::{Keypair, PeerId};
use rand::{RngCore, SeedableRng};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, trace, warn};

use crate::PLUGIN_NAME;
use crate::config::{Config, Protocol};
use crate::connection::{FrameError, Libp2pConnection, read_frame, write_frame};
use crate::identity::{from_libp2p, libp2p_keypair, to_libp2p};
use crate::signal::{NONCE_LEN, Nonce, Signal};
use crate::swarm::{self, COMMAND_QUEUE, Command, DialFailure, Driver};

/// The libp2p protocol of n2n connection streams.
pub const STREAM_PROTOCOL: StreamProtocol = StreamProtocol::new("/n2n/connection/1");

/// Handshakes waiting for their inbound stream at most.
pub const MAX_PENDING_ACCEPTS: usize = 256;
/// Inbound streams whose opening frame is being read at most.
const MAX_UNBOUND_STREAMS: usize = 64;
/// The stream opening frame: this magic, then the nonce.
const HELLO_MAGIC: &[u8; 4] = b"n2n1";
/// The acceptor's acknowledgement frame.
const ACK: &[u8] = b"ok";

/// Why a [`Libp2pTransport`] could not be built.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The settings do not hang together.
    #[error("invalid settings: {0}")]
    Config(String),
    /// There is no tokio runtime to run the swarm on.
    #[error("a libp2p transport must be built inside a tokio runtime")]
    NoRuntime,
    /// The swarm could not be built or could not listen.
    #[error("{0}")]
    Swarm(String),
}

/// Handshakes the acceptor side waits on, by nonce.
type Pending = Arc<Mutex<BTreeMap<Nonce, oneshot::Sender<(libp2p::PeerId, Stream)>>>>;

struct Inner {
    local: PeerId,
    config: Config,
    commands: mpsc::Sender<Command>,
    control: libp2p_stream::Control,
    pending: Pending,
    rng: Mutex<rand::rngs::StdRng>,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A [`Transport`] over libp2p: TCP + Noise + Yamux and/or QUIC, one libp2p
/// stream per n2n connection. Cheap to clone (clones share one swarm).
///
/// The swarm's identity is the node's ed25519 key, so the remote proves during
/// the libp2p handshake that it holds the key of the n2n peer the signals came
/// from; any other identity fails with [`TransportError::IdentityMismatch`].
///
/// # Examples
///
/// ```no_run
/// use std::sync::Arc;
/// use n2n_core::{Keypair, ProtocolId, node::Builder};
/// use n2n_transport_libp2p::{Config, Libp2pTransport};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let key = Keypair::load_or_generate("node.key").unwrap();
/// let transport = Libp2pTransport::new(&key, Config::tcp()).unwrap();
/// let node = Builder::new(key)
///     .transport(Arc::new(transport))
///     .protocol(ProtocolId::from_name("my-app"))
///     .spawn()
///     .unwrap();
/// # node.shutdown().await;
/// # }
/// ```
#[derive(Clone)]
pub struct Libp2pTransport {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Libp2pTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Libp2pTransport")
            .field("local", &self.inner.local)
            .field("protocols", &self.inner.config.protocols)
            .finish_non_exhaustive()
    }
}

impl Libp2pTransport {
    /// Builds the swarm for `keypair`'s identity and starts listening.
    ///
    /// # Errors
    /// See [`BuildError`].
    pub fn new(keypair: &Keypair, config: Config) -> Result<Self, BuildError> {
        Self::with_seed(keypair, config, None)
    }

    /// As [`Libp2pTransport::new`], drawing session nonces from an RNG seeded with
    /// `seed` (mixed with the node's identity) instead of the OS.
    ///
    /// # Errors
    /// See [`BuildError`].
    pub fn with_seed(
        keypair: &Keypair,
        config: Config,
        seed: Option<u64>,
    ) -> Result<Self, BuildError> {
        config.validate().map_err(BuildError::Config)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        let _guard = runtime.enter();
        let swarm = swarm::build(libp2p_keypair(keypair), &config).map_err(BuildError::Swarm)?;
        let mut control = swarm.behaviour().new_control();
        let incoming = control
            .accept(STREAM_PROTOCOL)
            .map_err(|e| BuildError::Swarm(e.to_string()))?;
        let driver = Driver::new(
            swarm,
            config.listen_addrs(),
            config.announce.clone(),
            config.max_inbound_connections,
        )
        .map_err(BuildError::Swarm)?;
        let (commands, commands_rx) = mpsc::channel(COMMAND_QUEUE);
        let pending: Pending = Arc::default();
        let swarm_task = runtime.spawn(driver.run(commands_rx));
        let dispatch_task = runtime.spawn(dispatch_inbound(
            incoming,
            pending.clone(),
            config.handshake_timeout,
        ));
        let rng = match seed {
            Some(seed) => {
                let mut bytes = [0u8; 32];
                bytes[..8].copy_from_slice(&seed.to_le_bytes());
                bytes[8..].copy_from_slice(&keypair.peer_id().as_bytes()[..24]);
                rand::rngs::StdRng::from_seed(bytes)
            }
            None => rand::rngs::StdRng::from_os_rng(),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                local: keypair.peer_id(),
                config,
                commands,
                control,
                pending,
                rng: Mutex::new(rng),
                tasks: [swarm_task, dispatch_task],
            }),
        })
    }

    /// The settings in force.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// This transport's libp2p peer id (the node's key).
    pub fn libp2p_peer_id(&self) -> libp2p::PeerId {
        to_libp2p(&self.inner.local).expect("a local key is always valid")
    }

    /// The addresses handed to remotes: the announce addresses, or the listen
    /// addresses once every listener is up.
    ///
    /// # Errors
    /// [`TransportError::Other`] if no listener came up, or
    /// [`TransportError::Timeout`] after the handshake timeout.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, TransportError> {
        let timeout = self.inner.config.handshake_timeout;
        let (tx, rx) = oneshot::channel();
        self.command(Command::ListenAddrs(tx)).await?;
        tokio::time::timeout(timeout, rx)
            .await
            .map_err(|_| TransportError::Timeout(timeout))?
            .map_err(|_| stopped())?
            .map_err(TransportError::Other)
    }

    async fn command(&self, command: Command) -> Result<(), TransportError> {
        self.inner
            .commands
            .send(command)
            .await
            .map_err(|_| stopped())
    }

    fn nonce(&self) -> Nonce {
        let mut nonce = [0u8; NONCE_LEN];
        self.inner
            .rng
            .lock()
            .expect("rng lock")
            .fill_bytes(&mut nonce);
        nonce
    }

    /// Keeps the remote's addresses this transport can dial, in the order of
    /// [`Config::protocols`], without any `/p2p/` suffix naming another peer.
    fn dialable(&self, addrs: Vec<Multiaddr>, peer: libp2p::PeerId) -> Vec<Multiaddr> {
        let mut keep: Vec<(usize, Multiaddr)> = addrs
            .into_iter()
            .filter_map(|mut a| {
                let proto = Protocol::of(&a)?;
                let rank = self
                    .inner
                    .config
                    .protocols
                    .iter()
                    .position(|p| *p == proto)?;
                if let Some(libp2p::multiaddr::Protocol::P2p(id)) = a.iter().last() {
                    if id != peer {
                        return None;
                    }
                    a.pop();
                }
                Some((rank, a))
            })
            .collect();
        keep.sort_by_key(|(rank, _)| *rank);
        keep.into_iter().map(|(_, a)| a).collect()
    }

    async fn dial_peer(
        &self,
        peer: libp2p::PeerId,
        expected: PeerId,
        addrs: Vec<Multiaddr>,
    ) -> Result<(), DialError> {
        let (tx, rx) = oneshot::channel();
        self.command(Command::Dial {
            peer,
            addrs,
            reply: tx,
        })
        .await
        .map_err(DialError::Fatal)?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(DialFailure::WrongPeer(found))) => {
                Err(DialError::Fatal(TransportError::IdentityMismatch {
                    expected,
                    found: found.to_string(),
                }))
            }
            Ok(Err(DialFailure::Unreachable(why))) => Err(DialError::Unreachable(why)),
            Ok(Err(DialFailure::Busy)) => Err(DialError::Fatal(TransportError::Other(
                "too many dials in flight".into(),
            ))),
            Err(_) => Err(DialError::Fatal(stopped())),
        }
    }

    async fn await_peer(&self, peer: libp2p::PeerId) -> Result<(), TransportError> {
        let (tx, rx) = oneshot::channel();
        self.command(Command::AwaitPeer { peer, reply: tx }).await?;
        rx.await
            .map_err(|_| TransportError::Other("too many handshakes waiting".into()))
    }

    /// Waits for `signals`' next payload and decodes it.
    async fn next_signal(&self, signals: &mut SignalPipe) -> Result<Signal, TransportError> {
        let timeout = self.inner.config.handshake_timeout;
        let payload = tokio::time::timeout(timeout, signals.recv())
            .await
            .map_err(|_| TransportError::Timeout(timeout))?
            .ok_or(TransportError::SignalingClosed)?;
        Signal::decode(&payload).map_err(|e| TransportError::BadSignal(e.to_string()))
    }

    /// Opens the connection stream to `peer` and binds it to `nonce`.
    async fn open_bound_stream(
        &self,
        peer: libp2p::PeerId,
        nonce: Nonce,
    ) -> Result<Stream, TransportError> {
        let timeout = self.inner.config.handshake_timeout;
        let mut control = self.inner.control.clone();
        let work = async {
            let mut stream = control
                .open_stream(peer, STREAM_PROTOCOL)
                .await
                .map_err(|e| TransportError::Other(format!("cannot open stream: {e}")))?;
            let mut hello = HELLO_MAGIC.to_vec();
            hello.extend_from_slice(&nonce);
            write_frame(&mut stream, &hello)
                .await
                .map_err(|e| TransportError::Other(format!("stream failed: {e}")))?;
            match read_frame(&mut stream, 16).await {
                Ok(ack) if ack.as_ref() == ACK => Ok(stream),
                Ok(_) => Err(TransportError::Other(
                    "unexpected acknowledgement from the acceptor".into(),
                )),
                Err(FrameError::Eof) => Err(TransportError::Other(
                    "the acceptor refused the stream".into(),
                )),
                Err(e) => Err(TransportError::Other(format!("stream failed: {e}"))),
            }
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| TransportError::Timeout(timeout))?
    }
}

/// How a dial ended, for the dialer's fallback logic.
enum DialError {
    /// Not worth a dial back (identity mismatch, shutdown, limits).
    Fatal(TransportError),
    /// No address worked: the remote may still reach us.
    Unreachable(String),
}

fn stopped() -> TransportError {
    TransportError::Other("the libp2p swarm stopped".into())
}

fn remote_id(signals: &SignalPipe) -> Result<libp2p::PeerId, TransportError> {
    to_libp2p(&signals.remote()).map_err(|e| TransportError::IdentityMismatch {
        expected: signals.remote(),
        found: e.to_string(),
    })
}

/// Removes a pending accept when its handshake ends, however it ends.
struct PendingGuard {
    pending: Pending,
    nonce: Nonce,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.pending
            .lock()
            .expect("pending lock")
            .remove(&self.nonce);
    }
}

/// Reads the opening frame of each inbound stream and hands the stream to the
/// handshake waiting on its nonce; unknown or silent streams are dropped.
async fn dispatch_inbound(
    mut incoming: libp2p_stream::IncomingStreams,
    pending: Pending,
    timeout: Duration,
) {
    let slots = Arc::new(Semaphore::new(MAX_UNBOUND_STREAMS));
    while let Some((peer, mut stream)) = incoming.next().await {
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            warn!(%peer, "too many unbound inbound streams; stream dropped");
            continue;
        };
        let pending = pending.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let hello = match tokio::time::timeout(timeout, read_frame(&mut stream, 64)).await {
                Ok(Ok(hello)) => hello,
                Ok(Err(e)) => {
                    debug!(%peer, error = %e, "inbound stream failed before its hello");
                    return;
                }
                Err(_) => {
                    debug!(%peer, "inbound stream silent; dropped");
                    return;
                }
            };
            let nonce = hello
                .strip_prefix(HELLO_MAGIC.as_slice())
                .and_then(|n| Nonce::try_from(n).ok());
            let Some(nonce) = nonce else {
                debug!(%peer, "inbound stream with a malformed hello; dropped");
                return;
            };
            let waiter = pending.lock().expect("pending lock").remove(&nonce);
            match waiter {
                Some(tx) => {
                    let _ = tx.send((peer, stream));
                }
                None => debug!(%peer, "inbound stream for no pending handshake; dropped"),
            }
        });
    }
    trace!("inbound stream dispatcher stopped");
}

#[async_trait]
impl Transport for Libp2pTransport {
    fn name(&self) -> &str {
        PLUGIN_NAME
    }

    async fn dial(&self, mut signals: SignalPipe) -> Result<Box<dyn Connection>, TransportError> {
        let expected = signals.remote();
        let peer = remote_id(&signals)?;
        let nonce = self.nonce();
        let addrs = self.listen_addrs().await?;
        signals
            .send(Signal::Offer { nonce, addrs }.encode())
            .await?;
        let theirs = match self.next_signal(&mut signals).await? {
            Signal::Answer { addrs } => addrs,
            other => {
                return Err(TransportError::BadSignal(format!(
                    "expected an answer, got {other:?}"
                )));
            }
        };
        let theirs = self.dialable(theirs, peer);
        debug!(peer = %expected.short(), addrs = ?theirs, "dialing");
        let timeout = self.inner.config.handshake_timeout;
        let dialed = if theirs.is_empty() {
            Err(DialError::Unreachable(
                "the acceptor announced no address this transport can dial".into(),
            ))
        } else {
            match tokio::time::timeout(timeout, self.dial_peer(peer, expected, theirs)).await {
                Ok(r) => r,
                Err(_) => Err(DialError::Unreachable("dial timed out".into())),
            }
        };
        match dialed {
            Ok(()) => {}
            Err(DialError::Fatal(e)) => return Err(e),
            Err(DialError::Unreachable(why)) => {
                debug!(peer = %expected.short(), %why, "acceptor unreachable; asking for a dial back");
                signals.send(Signal::DialBack.encode()).await?;
                tokio::time::timeout(timeout, self.await_peer(peer))
                    .await
                    .map_err(|_| {
                        TransportError::Other(format!(
                            "cannot reach the peer ({why}) and it did not dial back"
                        ))
                    })??;
            }
        }
        let stream = self.open_bound_stream(peer, nonce).await?;
        debug!(peer = %expected.short(), "libp2p connection open");
        Ok(Box::new(Libp2pConnection::new(
            expected,
            stream,
            self.inner.config.max_message,
        )))
    }

    async fn accept(&self, mut signals: SignalPipe) -> Result<Box<dyn Connection>, TransportError> {
        let expected = signals.remote();
        let peer = remote_id(&signals)?;
        let (nonce, dialer_addrs) = match self.next_signal(&mut signals).await? {
            Signal::Offer { nonce, addrs } => (nonce, addrs),
            other => {
                return Err(TransportError::BadSignal(format!(
                    "expected an offer, got {other:?}"
                )));
            }
        };
        let (tx, mut stream_rx) = oneshot::channel();
        let _guard = {
            let mut pending = self.inner.pending.lock().expect("pending lock");
            if pending.len() >= MAX_PENDING_ACCEPTS {
                return Err(TransportError::Other(
                    "too many handshakes waiting for their stream".into(),
                ));
            }
            if pending.contains_key(&nonce) {
                return Err(TransportError::BadSignal("session nonce reused".into()));
            }
            pending.insert(nonce, tx);
            PendingGuard {
                pending: self.inner.pending.clone(),
                nonce,
            }
        };
        let addrs = self.listen_addrs().await?;
        signals.send(Signal::Answer { addrs }.encode()).await?;

        let timeout = self.inner.config.handshake_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut dialer_addrs = Some(dialer_addrs);
        let mut signals_open = true;
        let (from, mut stream) = loop {
            tokio::select! {
                bound = &mut stream_rx => break bound.map_err(|_| stopped())?,
                next = signals.recv(), if signals_open => match next {
                    Some(payload) => match Signal::decode(&payload) {
                        Ok(Signal::DialBack) => {
                            let Some(addrs) = dialer_addrs.take() else { continue };
                            let addrs = self.dialable(addrs, peer);
                            debug!(peer = %expected.short(), ?addrs, "dialing back");
                            let this = self.clone();
                            // The dialer learns of the connection from its swarm;
                            // a failure here surfaces there as a timeout.
                            tokio::spawn(async move {
                                let _ = tokio::time::timeout(timeout, this.dial_peer(peer, expected, addrs)).await;
                            });
                        }
                        Ok(other) => trace!(?other, "unexpected signal ignored"),
                        Err(e) => return Err(TransportError::BadSignal(e.to_string())),
                    },
                    None => signals_open = false,
                },
                () = tokio::time::sleep_until(deadline) => return Err(TransportError::Timeout(timeout)),
            }
        };
        if from != peer {
            return Err(TransportError::IdentityMismatch {
                expected,
                found: from_libp2p(&from).map_or_else(|| from.to_string(), |p| p.to_string()),
            });
        }
        tokio::time::timeout(timeout, write_frame(&mut stream, ACK))
            .await
            .map_err(|_| TransportError::Timeout(timeout))?
            .map_err(|e| TransportError::Other(format!("stream failed: {e}")))?;
        debug!(peer = %expected.short(), "libp2p connection accepted");
        Ok(Box::new(Libp2pConnection::new(
            expected,
            stream,
            self.inner.config.max_message,
        )))
    }
}
