//! The harness's links, signaling server and simulated transport.
//!
//! The transport's handshake: the dialer's transport writes an offer naming
//! its (node, session); the acceptor's transport answers with its own; once
//! the dialer has the answer, both ends finish after `handshake_round_trips`
//! round trips at link latency, both at the same instant. A connection is a
//! pair of ends that both cores kept; if one core drops its end (a
//! duplicate), the other sees its connection lost.

use bytes::Bytes;
use rand::Rng;

use super::{Network, TRANSPORT};
use crate::identity::PeerId;
use crate::node::core::{ConnectionId, SessionId};
use crate::signal::{Role, SignedSignal};
use crate::time::Duration;
use crate::transport::TransportError;

/// How the harness's links behave. Frames on a connection arrive in order
/// unless `reorder` is set; signals between nodes go through the server with
/// the same latency and loss.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// One-way latency of every hop.
    pub latency: Duration,
    /// Up to this much more, drawn per frame.
    pub jitter: Duration,
    /// Share of frames and signals lost, in [0, 1].
    pub loss: f64,
    /// Share of frames delivered twice, in [0, 1].
    pub duplicate: f64,
    /// Whether jitter may reorder the frames of one connection.
    pub reorder: bool,
    /// Round trips of the transport's handshake after the offer and answer
    /// (at least one).
    pub handshake_round_trips: u32,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(1),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            reorder: false,
            handshake_round_trips: 1,
        }
    }
}

/// Something in flight.
#[derive(Debug)]
pub(super) enum Delivery {
    Frame {
        node: usize,
        conn: ConnectionId,
        bytes: Bytes,
    },
    Lost {
        node: usize,
        conn: ConnectionId,
        reason: &'static str,
    },
    Signal {
        node: usize,
        signal: SignedSignal,
    },
    /// The node's own transport produced a signal for its remote.
    TransportSignal {
        node: usize,
        session: SessionId,
        payload: Vec<u8>,
    },
    HandshakeDone {
        node: usize,
        session: SessionId,
    },
}

/// One end of a simulated handshake.
#[derive(Debug)]
pub(super) struct HandshakeEnd {
    role: Role,
    /// The peer the core meant to reach: the transport authenticates it.
    remote: PeerId,
    partner: Option<(usize, SessionId)>,
}

const OFFER: u8 = b'O';
const ANSWER: u8 = b'A';

fn hello(kind: u8, node: usize, session: SessionId) -> Vec<u8> {
    let mut v = vec![kind];
    v.extend_from_slice(&(node as u64).to_be_bytes());
    v.extend_from_slice(&session.0.to_be_bytes());
    v
}

fn parse_hello(kind: u8, payload: &[u8]) -> Option<(usize, SessionId)> {
    if payload.len() != 17 || payload[0] != kind {
        return None;
    }
    let node = u64::from_be_bytes(payload[1..9].try_into().ok()?);
    let session = u64::from_be_bytes(payload[9..17].try_into().ok()?);
    Some((usize::try_from(node).ok()?, SessionId(session)))
}

impl Network {
    fn draw(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random::<f64>() < p
    }

    fn hop(&mut self) -> Duration {
        let jitter = self.link.jitter.as_nanos() as u64;
        let extra = if jitter == 0 {
            0
        } else {
            self.rng.random_range(0..=jitter)
        };
        self.link.latency + Duration::from_nanos(extra)
    }

    pub(super) fn transmit(&mut self, from: usize, conn: ConnectionId, bytes: Bytes) {
        let Some(&(node, remote_conn)) = self.links.get(&(from, conn)) else {
            return;
        };
        if self.is_cut(from, node) || self.draw(self.link.loss) {
            return;
        }
        let copies = if self.draw(self.link.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let mut at = self.now + self.hop();
            let last = self.last_delivery.entry((from, conn)).or_insert(at);
            if !self.link.reorder {
                at = at.max(*last);
            }
            // Kept even when reordering, so that a close comes after every frame.
            *last = (*last).max(at);
            let bytes = bytes.clone();
            self.schedule(
                at,
                Delivery::Frame {
                    node,
                    conn: remote_conn,
                    bytes,
                },
            );
        }
    }

    /// The connection of `end` is gone: its remote learns it after the frames
    /// already in flight.
    pub(super) fn break_link(&mut self, end: (usize, ConnectionId), reason: &'static str) {
        let Some((node, conn)) = self.links.remove(&end) else {
            return;
        };
        self.links.remove(&(node, conn));
        let mut at = self.now + self.link.latency;
        if let Some(last) = self.last_delivery.remove(&end) {
            at = at.max(last);
        }
        self.last_delivery.remove(&(node, conn));
        self.schedule(at, Delivery::Lost { node, conn, reason });
    }

    pub(super) fn send_signal(&mut self, signal: SignedSignal) {
        if let Some(node) = self.index_of(&signal.signal.to) {
            self.send_signal_to(node, signal);
        }
    }

    pub(super) fn send_signal_to(&mut self, node: usize, signal: SignedSignal) {
        if node >= self.nodes.len() || self.draw(self.link.loss) {
            return;
        }
        let at = self.now + self.hop();
        self.schedule(at, Delivery::Signal { node, signal });
    }

    pub(super) fn start_handshake(
        &mut self,
        i: usize,
        session: SessionId,
        remote: PeerId,
        role: Role,
        first: Option<Vec<u8>>,
    ) {
        let mut end = HandshakeEnd {
            role,
            remote,
            partner: None,
        };
        let now = self.now;
        match role {
            Role::Dialer => {
                let payload = hello(OFFER, i, session);
                self.schedule(
                    now,
                    Delivery::TransportSignal {
                        node: i,
                        session,
                        payload,
                    },
                );
            }
            Role::Acceptor => {
                let partner = first.as_deref().and_then(|p| parse_hello(OFFER, p));
                let Some(partner) = partner.filter(|p| self.is_node(p.0, &remote)) else {
                    // Not an offer of this transport: the accept fails at once.
                    self.handshakes.insert((i, session), end);
                    self.schedule(now, Delivery::HandshakeDone { node: i, session });
                    return;
                };
                end.partner = Some(partner);
                let payload = hello(ANSWER, i, session);
                self.schedule(
                    now,
                    Delivery::TransportSignal {
                        node: i,
                        session,
                        payload,
                    },
                );
            }
        }
        self.handshakes.insert((i, session), end);
    }

    pub(super) fn handshake_signal(&mut self, i: usize, session: SessionId, payload: &[u8]) {
        let Some(end) = self.handshakes.get(&(i, session)) else {
            return;
        };
        if end.role != Role::Dialer || end.partner.is_some() {
            return;
        }
        let remote = end.remote;
        let Some(partner) = parse_hello(ANSWER, payload).filter(|p| self.is_node(p.0, &remote))
        else {
            return;
        };
        if let Some(end) = self.handshakes.get_mut(&(i, session)) {
            end.partner = Some(partner);
        }
        if self.is_cut(i, partner.0) {
            // The transport's packets never arrive: it hangs.
            return;
        }
        let rtt = self.link.latency * 2;
        let rounds = self.link.handshake_round_trips.max(1);
        let at = self.now + rtt * rounds;
        self.schedule(at, Delivery::HandshakeDone { node: i, session });
    }

    /// Whether `node` exists and is `peer`: a hello naming anyone else (a
    /// forged or altered signal) is not this transport's.
    fn is_node(&self, node: usize, peer: &PeerId) -> bool {
        node < self.nodes.len() && self.peer(node) == *peer
    }

    pub(super) fn abort_handshake(&mut self, i: usize, session: SessionId) {
        let Some(end) = self.handshakes.remove(&(i, session)) else {
            return;
        };
        // The partner's transport notices one hop later, and fails.
        if let Some((node, session)) = end.partner {
            let at = self.now + self.link.latency;
            self.schedule(at, Delivery::HandshakeDone { node, session });
        }
    }

    pub(super) fn deliver(&mut self, delivery: Delivery) {
        let now = self.now;
        let node = match &delivery {
            Delivery::Frame { node, .. }
            | Delivery::Lost { node, .. }
            | Delivery::Signal { node, .. }
            | Delivery::TransportSignal { node, .. }
            | Delivery::HandshakeDone { node, .. } => *node,
        };
        if !self.nodes[node].alive {
            return;
        }
        let core = &mut self.nodes[node].core;
        match delivery {
            Delivery::Frame { conn, bytes, .. } => core.handle_frame(now, conn, &bytes),
            Delivery::Lost { conn, reason, .. } => {
                core.handle_connection_lost(now, conn, reason.into());
            }
            Delivery::Signal { signal, .. } => core.handle_signal(now, super::SERVER, signal),
            Delivery::TransportSignal {
                session, payload, ..
            } => core.handle_handshake_signal(now, session, payload),
            Delivery::HandshakeDone { session, .. } => self.finish_handshake(node, session),
        }
        self.after_input(node);
    }

    /// Both ends of a handshake finish at once, so that neither core sends on
    /// a connection the other does not know yet; an end whose partner is gone
    /// fails.
    fn finish_handshake(&mut self, i: usize, session: SessionId) {
        let now = self.now;
        let Some(end) = self.handshakes.remove(&(i, session)) else {
            return;
        };
        // The partner's end must name this one back: a hello replayed into
        // another handshake pairs nothing.
        let partner = end.partner.filter(|p| {
            self.nodes[p.0].alive
                && self
                    .handshakes
                    .get(p)
                    .is_some_and(|theirs| theirs.partner == Some((i, session)))
        });
        let Some((j, theirs)) = partner else {
            let error = TransportError::Other(format!(
                "the {TRANSPORT} handshake found no remote to finish with"
            ));
            let kept = self.nodes[i]
                .core
                .handle_handshake_done(now, session, Err(error));
            debug_assert!(kept.is_none());
            return;
        };
        self.handshakes.remove(&(j, theirs));
        let ours = self.nodes[i]
            .core
            .handle_handshake_done(now, session, Ok(()));
        let other = self.nodes[j]
            .core
            .handle_handshake_done(now, theirs, Ok(()));
        match (ours, other) {
            (Some(a), Some(b)) => {
                self.links.insert((i, a), (j, b));
                self.links.insert((j, b), (i, a));
            }
            (Some(conn), None) | (None, Some(conn)) => {
                let node = if ours.is_some() { i } else { j };
                let at = now + self.link.latency;
                let reason = "the remote kept another connection";
                self.schedule(at, Delivery::Lost { node, conn, reason });
            }
            (None, None) => {}
        }
        self.after_input(j);
    }
}
