//! A T-Man-style ring: every peer keeps one arc to its successor and one to
//! its predecessor on a ring of peer ids, found by gossip.
//!
//! # The rules
//!
//! - **Position.** A peer's position is the first 8 bytes of its id, read as
//!   a big-endian `u64`; the ring runs clockwise, wrapping at `u64::MAX`.
//! - **Candidates.** Every cycle (`Config::delta`) the ring asks the sampling
//!   overlay of the node (`Config::sampler`, Spray by default) for
//!   `Config::sample` peers (`Output::Sample`): they are neighbours, so
//!   reachable. It also gossips with its successor, its predecessor and one
//!   other neighbour (in turn):
//!   [`Message::Exchange`] lists the peers the sender is connected to, ranked
//!   by closeness to the recipient; the recipient merges them and answers with
//!   its own list ([`Message::Reply`]). A peer heard of through neighbour `v`
//!   is remembered with `v` as its way in.
//! - **Arcs.** The closest known peer clockwise is the successor, the closest
//!   counter-clockwise the predecessor. The ring opens one arc to each
//!   (`OpenArc` if connected, else `Connect { via, to }`: `v` relays the
//!   handshake). Once both wanted arcs exist, arcs to any other peer are
//!   closed. A peer that cannot be reached, or whose connection is lost, is
//!   forgotten; the next best takes its place.
//! - Messages are untrusted: a list longer than [`MAX_PEERS`] or a message
//!   larger than [`MAX_MESSAGE`] is dropped.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use n2n_core::overlay::{Input, Output, Overlay};
use n2n_core::time::Instant;
use n2n_core::{Direction, PeerId, ProtocolId};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

/// The default protocol id of the ring.
pub const PROTOCOL: ProtocolId = ProtocolId::from_name("ring");

/// Most peers one gossip message may list.
pub const MAX_PEERS: usize = 64;

/// Largest gossip message accepted, in bytes.
pub const MAX_MESSAGE: usize = 4096;

/// The ring's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The ring's protocol id (default [`PROTOCOL`]).
    pub protocol: ProtocolId,
    /// The overlay asked for candidates (default Spray's `"spray"`).
    pub sampler: ProtocolId,
    /// Gossip period (default 1 s).
    pub delta: Duration,
    /// Peers asked from the sampler each cycle (default 8).
    pub sample: usize,
    /// Peers listed in one gossip message (default 16).
    pub gossip: usize,
    /// Candidates remembered, the closest to this peer (default 32).
    pub known: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            protocol: PROTOCOL,
            sampler: ProtocolId::from_name("spray"),
            delta: Duration::from_secs(1),
            sample: 8,
            gossip: 16,
            known: 32,
        }
    }
}

/// The ring's gossip.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Peers the sender is connected to, closest to the recipient first.
    Exchange(Vec<PeerId>),
    /// The answer to an exchange, the same way.
    Reply(Vec<PeerId>),
}

impl Message {
    /// The bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Parses untrusted bytes; `None` if they are no valid message.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() > MAX_MESSAGE {
            return None;
        }
        let message: Self = postcard::from_bytes(bytes).ok()?;
        let (Self::Exchange(peers) | Self::Reply(peers)) = &message;
        (peers.len() <= MAX_PEERS).then_some(message)
    }
}

/// The ring's one timer: the gossip cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tick;

/// A peer's ring position.
pub fn position(peer: &PeerId) -> u64 {
    let b = peer.as_bytes();
    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// One peer of the ring. See the [module docs](self) for the rules.
#[derive(Debug)]
pub struct State {
    local: PeerId,
    pos: u64,
    config: Config,
    /// Candidates and the neighbour that leads to each (itself if connected).
    known: BTreeMap<PeerId, PeerId>,
    connected: BTreeSet<PeerId>,
    /// Our arcs in this overlay, as the node reported them.
    arcs: BTreeMap<PeerId, u32>,
    /// Arcs asked to close, not yet reported closed.
    closing: BTreeMap<PeerId, u32>,
    /// Peers an arc was asked to, not yet reported.
    opening: BTreeSet<PeerId>,
    armed: bool,
    cycles: u64,
    sample_error: Option<String>,
    outputs: VecDeque<Output<PeerId, Tick>>,
}

impl State {
    /// A ring peer `local`.
    pub fn new(local: PeerId, config: Config) -> Self {
        Self {
            pos: position(&local),
            local,
            config,
            known: BTreeMap::new(),
            connected: BTreeSet::new(),
            arcs: BTreeMap::new(),
            closing: BTreeMap::new(),
            opening: BTreeSet::new(),
            armed: false,
            cycles: 0,
            sample_error: None,
            outputs: VecDeque::new(),
        }
    }

    /// The peer our arc clockwise goes to, if any.
    pub fn successor(&self) -> Option<PeerId> {
        self.held()
            .min_by_key(|p| position(p).wrapping_sub(self.pos))
    }

    /// The peer our arc counter-clockwise goes to, if any.
    pub fn predecessor(&self) -> Option<PeerId> {
        self.held()
            .min_by_key(|p| self.pos.wrapping_sub(position(p)))
    }

    /// Candidates known now.
    pub fn known(&self) -> usize {
        self.known.len()
    }

    /// Gossip cycles run.
    pub fn cycles(&self) -> u64 {
        self.cycles
    }

    /// Why the last sample could not be taken (the sampler is missing).
    pub fn sample_error(&self) -> Option<&str> {
        self.sample_error.as_deref()
    }

    /// Peers we hold an arc to (arcs being closed excluded).
    fn held(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.arcs
            .iter()
            .filter(|(p, n)| **n > self.closing.get(*p).copied().unwrap_or(0))
            .map(|(p, _)| *p)
    }

    fn wanted(&self) -> Vec<PeerId> {
        let succ = self
            .known
            .keys()
            .min_by_key(|p| position(p).wrapping_sub(self.pos));
        let pred = self
            .known
            .keys()
            .min_by_key(|p| self.pos.wrapping_sub(position(p)));
        let mut wanted: Vec<PeerId> = succ.into_iter().chain(pred).copied().collect();
        wanted.dedup();
        wanted
    }

    fn arm(&mut self, now: Instant) {
        if !self.armed {
            self.armed = true;
            self.outputs.push_back(Output::SetTimer {
                at: now + self.config.delta,
                timer: Tick,
            });
        }
    }

    fn learn(&mut self, peer: PeerId, via: PeerId) {
        if peer == self.local {
            return;
        }
        let via = if self.connected.contains(&peer) {
            peer
        } else {
            via
        };
        self.known.insert(peer, via);
    }

    fn forget(&mut self, peer: &PeerId) {
        self.known.remove(peer);
        self.opening.remove(peer);
    }

    /// Keeps the closest candidates, then opens and closes arcs toward the
    /// wanted successor and predecessor.
    fn reconsider(&mut self) {
        let stale: Vec<PeerId> = self
            .known
            .iter()
            .filter(|(p, via)| !self.connected.contains(p) && !self.connected.contains(via))
            .map(|(p, _)| *p)
            .collect();
        for p in stale {
            self.forget(&p);
        }
        if self.known.len() > self.config.known {
            let pos = self.pos;
            let mut by_distance: Vec<PeerId> = self.known.keys().copied().collect();
            by_distance.sort_by_key(|p| ring_distance(pos, position(p)));
            for p in &by_distance[self.config.known..] {
                self.forget(p);
            }
        }
        let wanted = self.wanted();
        let held: BTreeSet<PeerId> = self.held().collect();
        for w in &wanted {
            if held.contains(w) || self.opening.contains(w) {
                continue;
            }
            self.opening.insert(*w);
            if self.connected.contains(w) {
                self.outputs.push_back(Output::OpenArc { to: *w });
            } else {
                let via = self.known[w];
                self.outputs.push_back(Output::Connect { via, to: *w });
            }
        }
        if wanted.iter().all(|w| held.contains(w)) {
            for p in held.iter().filter(|p| !wanted.contains(p)) {
                *self.closing.entry(*p).or_default() += 1;
                self.outputs.push_back(Output::CloseArc { to: *p });
            }
        }
    }

    /// Up to `gossip` connected peers (and this one), closest to `partner`.
    fn offer(&self, partner: &PeerId) -> Vec<PeerId> {
        let target = position(partner);
        let mut peers: Vec<PeerId> = self
            .connected
            .iter()
            .filter(|p| *p != partner)
            .copied()
            .chain(std::iter::once(self.local))
            .collect();
        peers.sort_by_key(|p| ring_distance(target, position(p)));
        peers.truncate(self.config.gossip.min(MAX_PEERS));
        peers
    }

    fn cycle(&mut self, now: Instant) {
        self.armed = false;
        self.arm(now);
        self.cycles += 1;
        self.outputs.push_back(Output::Sample {
            overlay: self.config.sampler,
            k: self.config.sample,
            tag: self.cycles,
        });
        // Gossip with both ring neighbours, and with one other neighbour in
        // turn (fresh information from elsewhere on the ring).
        let mut partners: Vec<PeerId> = self
            .successor()
            .into_iter()
            .chain(self.predecessor())
            .collect();
        if !self.connected.is_empty() {
            let turn = (self.cycles as usize) % self.connected.len();
            partners.extend(self.connected.iter().nth(turn).copied());
        }
        partners.sort();
        partners.dedup();
        for partner in partners {
            let message = Message::Exchange(self.offer(&partner));
            self.outputs.push_back(Output::Send {
                to: partner,
                payload: message.encode(),
            });
        }
        self.reconsider();
    }

    fn on_message(&mut self, from: PeerId, payload: &[u8]) {
        let Some(message) = Message::decode(payload) else {
            debug!(peer = %from.short(), "ring: invalid message dropped");
            return;
        };
        let peers = match message {
            Message::Exchange(peers) => {
                let reply = Message::Reply(self.offer(&from));
                self.outputs.push_back(Output::Send {
                    to: from,
                    payload: reply.encode(),
                });
                peers
            }
            Message::Reply(peers) => peers,
        };
        for p in peers {
            self.learn(p, from);
        }
        self.reconsider();
    }
}

/// The shorter way round between two positions.
fn ring_distance(a: u64, b: u64) -> u64 {
    a.wrapping_sub(b).min(b.wrapping_sub(a))
}

impl Overlay<PeerId> for State {
    type Timer = Tick;

    fn protocol(&self) -> ProtocolId {
        self.config.protocol
    }

    fn layers_on(&self) -> Vec<ProtocolId> {
        vec![self.config.sampler]
    }

    fn handle(&mut self, now: Instant, input: Input<PeerId, Tick>) {
        match input {
            Input::Join { contact } => {
                self.learn(contact, contact);
                self.arm(now);
                self.reconsider();
            }
            Input::Connected { peer } => {
                self.connected.insert(peer);
                self.arm(now);
            }
            Input::Disconnected { peer } => {
                self.connected.remove(&peer);
                self.forget(&peer);
                self.reconsider();
            }
            Input::ArcOpened {
                peer,
                direction: Direction::Outgoing,
            } => {
                *self.arcs.entry(peer).or_default() += 1;
                self.opening.remove(&peer);
                self.reconsider();
            }
            Input::ArcClosed {
                peer,
                direction: Direction::Outgoing,
                ..
            } => {
                if let Some(n) = self.arcs.get_mut(&peer) {
                    *n -= 1;
                    if *n == 0 {
                        self.arcs.remove(&peer);
                    }
                }
                if let Some(n) = self.closing.get_mut(&peer) {
                    *n -= 1;
                    if *n == 0 {
                        self.closing.remove(&peer);
                    }
                }
                self.reconsider();
            }
            Input::ConnectFailed { peer, reason } => {
                debug!(peer = %peer.short(), reason, "ring: peer unreachable, forgotten");
                self.forget(&peer);
                self.reconsider();
            }
            Input::Sampled { result, .. } => match result {
                Ok(peers) => {
                    self.sample_error = None;
                    for p in peers {
                        self.learn(p, p);
                    }
                    self.reconsider();
                }
                Err(e) => {
                    if self.sample_error.is_none() {
                        warn!(error = %e, "ring: no candidates from the sampler");
                    }
                    self.sample_error = Some(e);
                }
            },
            Input::Message { from, payload } => self.on_message(from, &payload),
            Input::Timer(Tick) => self.cycle(now),
            _ => {}
        }
    }

    fn poll_output(&mut self) -> Option<Output<PeerId, Tick>> {
        self.outputs.pop_front()
    }

    fn peers(&mut self, k: usize) -> Vec<PeerId> {
        self.held().take(k).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(first: u8) -> PeerId {
        let mut b = [0u8; 32];
        b[0] = first;
        PeerId::from_bytes(b)
    }

    fn drain(s: &mut State) -> Vec<Output<PeerId, Tick>> {
        std::iter::from_fn(|| s.poll_output()).collect()
    }

    #[test]
    fn picks_the_closest_peers_on_each_side_and_reaches_them_through_neighbours() {
        let now = Instant::now();
        let mut s = State::new(peer(100), Config::default());
        s.handle(now, Input::Connected { peer: peer(10) });
        s.handle(now, Input::Join { contact: peer(10) });
        let out = drain(&mut s);
        assert!(out.contains(&Output::OpenArc { to: peer(10) }), "{out:?}");
        s.handle(
            now,
            Input::ArcOpened {
                peer: peer(10),
                direction: Direction::Outgoing,
            },
        );
        // Gossip from 10 tells of 101 and 99, which 10 is connected to.
        let gossip = Message::Reply(vec![peer(101), peer(99), peer(200)]).encode();
        s.handle(
            now,
            Input::Message {
                from: peer(10),
                payload: gossip,
            },
        );
        let out = drain(&mut s);
        assert!(
            out.contains(&Output::Connect {
                via: peer(10),
                to: peer(101)
            }),
            "{out:?}"
        );
        assert!(
            out.contains(&Output::Connect {
                via: peer(10),
                to: peer(99)
            }),
            "{out:?}"
        );
        for p in [peer(101), peer(99)] {
            s.handle(now, Input::Connected { peer: p });
            s.handle(
                now,
                Input::ArcOpened {
                    peer: p,
                    direction: Direction::Outgoing,
                },
            );
        }
        // Both wanted arcs exist: the arc to 10 goes.
        assert!(drain(&mut s).contains(&Output::CloseArc { to: peer(10) }));
        assert_eq!(s.successor(), Some(peer(101)));
        assert_eq!(s.predecessor(), Some(peer(99)));
    }

    #[test]
    fn a_missing_sampler_is_reported_and_bad_gossip_is_dropped() {
        let now = Instant::now();
        let mut s = State::new(peer(1), Config::default());
        s.handle(
            now,
            Input::Sampled {
                overlay: PROTOCOL,
                tag: 1,
                result: Err("no overlay".into()),
            },
        );
        assert_eq!(s.sample_error(), Some("no overlay"));
        s.handle(
            now,
            Input::Message {
                from: peer(2),
                payload: vec![0xff; 10],
            },
        );
        let many = Message::Exchange(vec![peer(3); MAX_PEERS + 1]).encode();
        assert_eq!(Message::decode(&many), None);
        assert!(drain(&mut s).is_empty());
        assert_eq!(s.known(), 0);
    }
}
