//! A flooding broadcast: every new message goes to every neighbour but the
//! one it came from; copies seen before are counted and dropped.
//!
//! [`Flood`] is the sans-IO part (framing, deduplication, counters), used as
//! is by the simulator; [`serve`] runs it over a node as an application that
//! cannot block its node: it reads its own subscription, sends with
//! [`NodeHandle::try_send`] and reads the neighbours synchronously.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use n2n_core::node::{Event, Events, NodeHandle, SendError};
use n2n_core::{PeerId, ProtocolId};

/// The default protocol id of the broadcast.
pub const PROTOCOL: ProtocolId = ProtocolId::from_name("flood");

/// Broadcast ids remembered, to drop copies (the oldest are forgotten).
pub const SEEN: usize = 1 << 16;

/// The deduplication and counters of one peer's broadcast.
#[derive(Debug, Default, Clone)]
pub struct Flood {
    seen: BTreeSet<u64>,
    order: VecDeque<u64>,
    /// Distinct broadcasts delivered (its own included).
    pub delivered: u64,
    /// Copies received of broadcasts already delivered.
    pub duplicates: u64,
    /// Copies not sent because a neighbour's queue was full.
    pub dropped: u64,
    /// Events the node dropped because this application fell behind.
    pub lagged: u64,
}

impl Flood {
    /// The frame of broadcast `id` with `body`.
    pub fn frame(id: u64, body: &[u8]) -> Vec<u8> {
        let mut f = id.to_be_bytes().to_vec();
        f.extend_from_slice(body);
        f
    }

    /// The id of a frame, if it has one.
    pub fn id_of(frame: &[u8]) -> Option<u64> {
        Some(u64::from_be_bytes(frame.get(..8)?.try_into().ok()?))
    }

    /// Records broadcast `id`; whether it is new (to deliver and forward).
    pub fn accept(&mut self, id: u64) -> bool {
        if !self.seen.insert(id) {
            self.duplicates += 1;
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > SEEN
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        self.delivered += 1;
        true
    }

    /// Whether broadcast `id` was delivered here (and not forgotten yet).
    pub fn has(&self, id: u64) -> bool {
        self.seen.contains(&id)
    }
}

/// Sends `frame` to every neighbour but `except`, never waiting.
fn forward(
    h: &NodeHandle,
    protocol: ProtocolId,
    frame: &[u8],
    except: Option<PeerId>,
    f: &Mutex<Flood>,
) {
    for peer in h.neighbours() {
        if Some(peer) == except {
            continue;
        }
        if let Err(SendError::Full) = h.try_send(peer, protocol, frame.to_vec()) {
            f.lock().unwrap_or_else(|e| e.into_inner()).dropped += 1;
        }
    }
}

/// Starts broadcast `id` from this node.
pub fn broadcast(h: &NodeHandle, protocol: ProtocolId, id: u64, body: &[u8], f: &Mutex<Flood>) {
    f.lock().unwrap_or_else(|e| e.into_inner()).accept(id);
    forward(h, protocol, &Flood::frame(id, body), None, f);
}

/// Runs the broadcast on `events` (a subscription to `protocol`) until the
/// node stops.
pub async fn serve(h: NodeHandle, protocol: ProtocolId, mut events: Events, f: Arc<Mutex<Flood>>) {
    while let Some(event) = events.recv().await {
        match event {
            Event::Message { from, payload, .. } => {
                let Some(id) = Flood::id_of(&payload) else {
                    continue;
                };
                let new = f.lock().unwrap_or_else(|e| e.into_inner()).accept(id);
                if new {
                    forward(&h, protocol, &payload, Some(from), &f);
                }
            }
            Event::Lagged { missed } => {
                f.lock().unwrap_or_else(|e| e.into_inner()).lagged += missed;
            }
            _ => {}
        }
    }
}
