//! A misbehaving neighbour, to fuzz the node core through the harness.
//!
//! [`Adversary`] holds four nodes: the *target*, an *evil* neighbour and a
//! *friend* connected to it (one arc each way), and an *honest* peer that
//! stays away until the end. A fuzzer (a property test, `cargo fuzz`) hands it
//! [`Action`]s: raw frames and wire messages written on the evil neighbour's
//! connection, signals handed to the target by the server, time passing.
//! [`Adversary::check`] then says whether the target survived: every action
//! came to rest, what the target started timed out and left no state, the
//! friend is still connected, the honest peer can still connect to it and
//! open arcs both ways, and the arc tables of every pair agree (but for the
//! inview the evil neighbour lies about). [`Adversary::actions_from_bytes`] reads actions from raw fuzzer
//! bytes.

use crate::identity::{Keypair, PeerId};
use crate::node::Config;
use crate::node::core::Completion;
use crate::signal::{Role, Signal, SignedSignal};
use crate::time::Duration;
use crate::wire::{self, BridgeFailure, BridgeMessage, CloseReason, Message, ProtocolId};
use rand::SeedableRng;

use super::{Livelock, Network, SERVER, TRANSPORT};

/// The overlay every node of an [`Adversary`] runs.
pub const OVERLAY: ProtocolId = ProtocolId::from_name("adversary");

/// Steps one action may take to come to rest.
const ACTION_STEPS: u64 = 100_000;

/// What the evil side does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// These bytes arrive on the evil neighbour's connection as one frame.
    Frame(Vec<u8>),
    /// This message arrives on the evil neighbour's connection.
    Message(Message),
    /// The server hands this signal to the target, whatever it names.
    Signal(SignedSignal),
    /// Time passes.
    Wait(Duration),
}

/// The target, its evil neighbour and an honest peer. See the [module docs](self).
#[derive(Debug)]
pub struct Adversary {
    net: Network,
    /// The nodes' keys, then a stranger's.
    keys: [Keypair; 5],
    /// Frames that reached the target and do not decode.
    undecodable: u64,
}

/// Index of the target node.
pub const TARGET: usize = 0;
/// Index of the evil neighbour.
pub const EVIL: usize = 1;
/// Index of the honest peer.
pub const HONEST: usize = 2;
/// Index of the friend, connected to the target from the start.
pub const FRIEND: usize = 3;
const NODES: usize = 4;

impl Adversary {
    /// The settings of the nodes: short timeouts, small limits.
    pub fn config() -> Config {
        Config {
            handshake_timeout: Duration::from_secs(5),
            linger: Duration::from_secs(2),
            keepalive: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(9),
            bridge_timeout: Duration::from_secs(8),
            max_jobs_per_neighbour: 4,
            max_handshakes: 8,
            max_arcs_per_peer: 8,
            ..Config::default()
        }
    }

    /// Four nodes with keys from `seed`; the evil neighbour and the friend
    /// are connected to the target, one arc each way.
    pub fn new(seed: u64) -> Self {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let keys = std::array::from_fn(|_| Keypair::generate(&mut rng));
        let mut net = Network::new(seed);
        for (i, key) in keys.iter().take(NODES).enumerate() {
            let config = Config {
                seed: Some(seed + i as u64),
                ..Self::config()
            };
            net.add_node_with_key(key.clone(), config, Vec::new(), vec![OVERLAY]);
        }
        let mut adversary = Self {
            net,
            keys,
            undecodable: 0,
        };
        adversary.connect(FRIEND);
        adversary.connect(EVIL);
        adversary
    }

    /// The network, to read.
    pub fn network(&self) -> &Network {
        &self.net
    }

    /// Peers a fuzzer may name: the target, the evil neighbour, the honest
    /// peer, the friend and a stranger no node knows.
    pub fn peers(&self) -> Vec<PeerId> {
        self.keys.iter().map(Keypair::peer_id).collect()
    }

    /// Keys a fuzzer may sign with: every one but the target's.
    pub fn keys(&self) -> Vec<&Keypair> {
        self.keys.iter().skip(1).collect()
    }

    /// Node `i` connects to the target with an arc, and the target opens one
    /// back, unless they are connected.
    fn connect(&mut self, i: usize) {
        let target = self.net.peer(TARGET);
        if self.net.core(i).connection(&target).is_some() {
            return;
        }
        let ticket = self.net.ticket(i);
        self.net.with_core(i, |core, now| {
            core.connect(now, target, SERVER, Some(OVERLAY), Some(ticket))
        });
        let _ = self.net.drive_bounded(ACTION_STEPS);
        let peer = self.net.peer(i);
        let _ = self
            .net
            .with_core(TARGET, |core, now| core.open_arc(now, OVERLAY, peer));
        let _ = self.net.drive_bounded(ACTION_STEPS);
    }

    /// Carries out `action` and runs to rest. When the target dropped the
    /// evil neighbour, it connects again first.
    ///
    /// # Errors
    /// [`Livelock`] if the network does not come to rest.
    pub fn act(&mut self, action: Action) -> Result<(), Livelock> {
        self.connect(EVIL);
        let frame = match action {
            Action::Frame(bytes) => Some(bytes),
            Action::Message(message) => wire::encode(&message).ok(),
            Action::Signal(signal) => {
                self.net.inject_signal_to(TARGET, signal);
                None
            }
            Action::Wait(span) => {
                self.net.run_for(span.min(Duration::from_secs(60)));
                None
            }
        };
        if let Some(frame) = frame {
            let undecodable = wire::decode(&frame).is_err();
            if self.net.inject_frame(EVIL, TARGET, frame) && undecodable {
                self.undecodable += 1;
            }
        }
        self.net.drive_bounded(ACTION_STEPS).map(|_| ())
    }

    /// Whether the target survived (see the [module docs](self)); the error
    /// says what broke.
    ///
    /// # Errors
    /// A description of the first broken property.
    pub fn check(mut self) -> Result<(), String> {
        let config = Self::config();
        self.net
            .run_for(config.handshake_timeout + config.bridge_timeout + Duration::from_secs(1));
        let s = self.net.core(TARGET).snapshot();
        if s.protocol_violations < self.undecodable {
            return Err(format!(
                "{} undecodable frames, {} violations counted",
                self.undecodable, s.protocol_violations
            ));
        }
        let left = (
            s.handshakes,
            s.relay_jobs,
            s.bridge_requests,
            s.bridge_endpoints,
            s.waiters,
        );
        if left != (0, 0, 0, 0, 0) {
            return Err(format!("state left after the timeouts: {s:?}"));
        }
        let target = self.net.peer(TARGET);
        if self.net.core(FRIEND).connection(&target).is_none() {
            return Err("the target lost its friend".into());
        }
        let honest = self.net.peer(HONEST);
        let ticket = self.net.ticket(HONEST);
        self.net.with_core(HONEST, |core, now| {
            core.connect(now, target, SERVER, Some(OVERLAY), Some(ticket))
        });
        self.net
            .drive_bounded(ACTION_STEPS)
            .map_err(|e| e.to_string())?;
        match self.net.take_done(HONEST, ticket) {
            Some(Completion::Connect(Ok(()))) => {}
            other => return Err(format!("the honest peer could not connect: {other:?}")),
        }
        self.net
            .with_core(TARGET, |core, now| core.open_arc(now, OVERLAY, honest))
            .map_err(|e| format!("the target could not open an arc: {e}"))?;
        self.net
            .drive_bounded(ACTION_STEPS)
            .map_err(|e| e.to_string())?;
        self.consistent()
    }

    /// Out(A→C) on A equals in(A→C) on C for every pair but evil → target,
    /// and the pairs agree on their connections.
    fn consistent(&self) -> Result<(), String> {
        let snaps: Vec<_> = (0..NODES).map(|i| self.net.core(i).snapshot()).collect();
        for i in 0..NODES {
            for j in 0..NODES {
                let (pi, pj) = (self.net.peer(i), self.net.peer(j));
                if snaps[i].is_connected(&pj) != snaps[j].is_connected(&pi) {
                    return Err(format!("{i} and {j} disagree on their connection"));
                }
                if (i, j) == (EVIL, TARGET) {
                    continue;
                }
                let out = snaps[i].view(OVERLAY).1.count(&pj);
                let inn = snaps[j].view(OVERLAY).0.count(&pi);
                if out != inn {
                    return Err(format!("{i} → {j}: outview {out}, inview {inn}"));
                }
            }
        }
        let (t, h) = (self.net.peer(TARGET), self.net.peer(HONEST));
        let arcs = (
            snaps[HONEST].view(OVERLAY).1.count(&t),
            snaps[TARGET].view(OVERLAY).1.count(&h),
        );
        if arcs.0 == 0 || arcs.1 == 0 {
            return Err(format!("honest arcs missing: {arcs:?}"));
        }
        Ok(())
    }

    /// Reads actions from raw fuzzer bytes (at most `max` of them): each
    /// starts with a byte choosing its kind; fields are read from the bytes
    /// that follow (zeros once they run out).
    pub fn actions_from_bytes(&self, bytes: &[u8], max: usize) -> Vec<Action> {
        let mut r = Reader { bytes, at: 0 };
        let mut actions = Vec::new();
        while !r.is_empty() && actions.len() < max {
            let action = match r.u8() % 4 {
                0 => {
                    let n = usize::from(r.u8());
                    Action::Frame(r.take(n).to_vec())
                }
                1 => Action::Message(self.message(&mut r)),
                2 => Action::Signal(self.signal(&mut r)),
                _ => Action::Wait(Duration::from_millis(u64::from(r.u8()) * 100)),
            };
            actions.push(action);
        }
        actions
    }

    fn message(&self, r: &mut Reader<'_>) -> Message {
        let peers = self.peers();
        let peer = |r: &mut Reader<'_>| peers[usize::from(r.u8()) % peers.len()];
        let overlay = |r: &mut Reader<'_>| match r.u8() % 3 {
            0 => OVERLAY,
            1 => ProtocolId::from_name("unknown"),
            _ => ProtocolId::from_hash(r.u32()),
        };
        let job = |r: &mut Reader<'_>| match r.u8() % 2 {
            0 => u64::from(r.u8() % 4),
            _ => r.u64(),
        };
        let failure = |r: &mut Reader<'_>| match r.u8() % 4 {
            0 => BridgeFailure::Timeout,
            1 => BridgeFailure::UnknownJob,
            2 => BridgeFailure::PeerGone(peer(r)),
            _ => BridgeFailure::SignalRejected("fuzz".into()),
        };
        let bridge = match r.u8() % 14 {
            0 => {
                return Message::ArcOpen {
                    overlay: overlay(r),
                };
            }
            1 => {
                return Message::ArcClose {
                    overlay: overlay(r),
                };
            }
            2 => {
                let overlay = overlay(r);
                let n = usize::from(r.u8());
                let payload = r.take(n).to_vec();
                return Message::Overlay { overlay, payload };
            }
            3 => {
                let n = usize::from(r.u8());
                let payload = r.take(n).to_vec();
                return Message::Data {
                    protocol: ProtocolId::from_hash(r.u32()),
                    payload,
                };
            }
            4 => return Message::Ping { nonce: r.u64() },
            5 => return Message::Pong { nonce: r.u64() },
            6 => {
                let reason = if r.bit() {
                    CloseReason::Idle
                } else {
                    CloseReason::Shutdown
                };
                return Message::Close { reason };
            }
            7 => BridgeMessage::ConnectTo {
                job: job(r),
                overlay: overlay(r),
                to: peer(r),
                request: (r.bit()).then(|| job(r)),
            },
            8 => BridgeMessage::BridgeRequest {
                request: job(r),
                overlay: overlay(r),
                to: peer(r),
            },
            9 => BridgeMessage::BridgeRefused {
                request: job(r),
                reason: failure(r),
            },
            10 | 11 => BridgeMessage::Relay {
                job: job(r),
                from: peer(r),
                to: peer(r),
                signal: self.signal(r),
            },
            12 => BridgeMessage::RelayFailed {
                job: job(r),
                reason: failure(r),
            },
            _ => BridgeMessage::BridgeResult {
                job: job(r),
                result: if r.bit() { Ok(()) } else { Err(failure(r)) },
            },
        };
        Message::Bridge(Box::new(bridge))
    }

    fn signal(&self, r: &mut Reader<'_>) -> SignedSignal {
        let peers = self.peers();
        let keys = self.keys();
        let key = keys[usize::from(r.u8()) % keys.len()];
        let to = peers[usize::from(r.u8()) % peers.len()];
        let session = u64::from(r.u8() % 4);
        let role = if r.bit() {
            Role::Dialer
        } else {
            Role::Acceptor
        };
        let seq = u32::from(r.u8() % 3);
        let payload = match r.u8() % 3 {
            // A hello of the harness transport naming some node.
            0 | 1 => {
                let mut v = vec![if role == Role::Dialer { b'O' } else { b'A' }];
                v.extend_from_slice(&u64::from(r.u8() % 5).to_be_bytes());
                v.extend_from_slice(&u64::from(r.u8()).to_be_bytes());
                v
            }
            _ => {
                let n = usize::from(r.u8());
                r.take(n).to_vec()
            }
        };
        let transport = if r.u8() & 7 == 0 { "other" } else { TRANSPORT };
        let signal = Signal {
            from: key.peer_id(),
            to,
            session,
            role,
            seq,
            transport: transport.into(),
            payload,
        };
        let freshness = crate::signal::Freshness {
            network: Config::default().network,
            not_after: self.net.wall_ms() + 60_000,
        };
        let mut signed = match signal.clone().sign_fresh(key, freshness.clone()) {
            Ok(signed) => signed,
            Err(_) => SignedSignal {
                version: crate::signal::SIGNAL_VERSION,
                signal,
                freshness: Box::new(freshness),
                signature: [0; 64],
            },
        };
        match r.u8() % 4 {
            // Altered after signing.
            0 => signed.signature[0] ^= 1,
            // Claimed by another author.
            1 => signed.signal.from = peers[usize::from(r.u8()) % peers.len()],
            _ => {}
        }
        signed
    }
}

/// Fields out of fuzzer bytes; zeros once they run out.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn is_empty(&self) -> bool {
        self.at >= self.bytes.len()
    }

    fn u8(&mut self) -> u8 {
        let b = self.bytes.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    fn bit(&mut self) -> bool {
        self.u8() & 1 == 0
    }

    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(std::array::from_fn(|_| self.u8()))
    }

    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(std::array::from_fn(|_| self.u8()))
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let start = self.at.min(self.bytes.len());
        let end = (start + n).min(self.bytes.len());
        self.at = start + n;
        &self.bytes[start..end]
    }
}
