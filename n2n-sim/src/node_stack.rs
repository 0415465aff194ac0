//! The stack of `--runtime node --stack ring`: the ring of `n2n-overlay-ring`
//! layered on Spray in every node core, and its flooding broadcast run over
//! the simulated connections.
//!
//! Each cycle measures the share of peers whose ring arcs go to their true
//! successor and predecessor. After the cycles, broadcasts flood from random
//! peers: a peer forwards a new broadcast to every neighbour but its sender
//! (real `Data` frames through the simulated links), and the run counts the
//! peers reached and the copies that arrived twice.

use std::time::Duration;

use n2n_core::PeerId;
use n2n_core::harness::Network;
use n2n_core::node::Event;
use n2n_core::overlay::{DynOverlay, Erased};
use n2n_core::wire::{Message, ProtocolId};
use n2n_overlay_ring::flood::{self, Flood};
use n2n_overlay_ring::ring;
use rand::Rng;

use crate::SimRng;

/// The ring's protocol id.
pub const RING: ProtocolId = ring::PROTOCOL;

/// The broadcast's protocol id.
pub const FLOOD: ProtocolId = flood::PROTOCOL;

/// The ring overlay of a node `local`, gossiping every `delta`.
pub(crate) fn ring_overlay(local: PeerId, delta: Duration) -> Box<dyn DynOverlay> {
    let config = ring::Config {
        delta,
        ..ring::Config::default()
    };
    Box::new(Erased::new(ring::State::new(local, config)))
}

/// Share of the peers whose ring successor and predecessor are right, among
/// all peers and among the peers with at least one connection (a peer that
/// no one can reach cannot be on anyone's ring; its neighbours on the ring of
/// connected peers are the next ones).
pub(crate) fn ring_share(net: &Network) -> (f64, f64) {
    let all: Vec<usize> = (0..net.len()).collect();
    let connected: Vec<usize> = all
        .iter()
        .copied()
        .filter(|&i| net.core(i).neighbours().next().is_some())
        .collect();
    (share_right(net, &all), share_right(net, &connected))
}

fn share_right(net: &Network, members: &[usize]) -> f64 {
    let mut sorted: Vec<PeerId> = members.iter().map(|&i| net.peer(i)).collect();
    sorted.sort_by_key(ring::position);
    let n = sorted.len();
    let right = sorted
        .iter()
        .enumerate()
        .filter(|(at, p)| {
            let Some(i) = net.index_of(p) else {
                return false;
            };
            net.core(i).overlay::<ring::State>(RING).is_some_and(|r| {
                r.successor() == Some(sorted[(at + 1) % n])
                    && r.predecessor() == Some(sorted[(at + n - 1) % n])
            })
        })
        .count();
    right as f64 / n.max(1) as f64
}

/// What the broadcasts measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BroadcastResult {
    /// Broadcasts flooded.
    pub count: u32,
    /// Mean share of the peers each reached.
    pub reach_mean: f64,
    /// Smallest share of the peers one reached.
    pub reach_min: f64,
    /// Copies received of a broadcast already delivered, per delivery.
    pub duplicates_per_delivery: f64,
    /// Simulated time until the last copy of a broadcast arrived (mean).
    pub time_mean: Duration,
}

fn send(net: &mut Network, from: usize, to: &PeerId, frame: &[u8]) {
    if let Some(j) = net.index_of(to) {
        let data = Message::Data {
            protocol: FLOOD,
            payload: frame.to_vec(),
        };
        if let Ok(bytes) = n2n_core::wire::encode(&data) {
            net.inject_frame(from, j, bytes);
        }
    }
}

/// Floods `count` broadcasts, one at a time, from random peers.
pub(crate) fn broadcasts(net: &mut Network, count: u32, rng: &mut SimRng) -> BroadcastResult {
    let n = net.len();
    let mut floods = vec![Flood::default(); n];
    let (mut reach_sum, mut reach_min, mut time_sum) = (0.0, 1.0f64, Duration::ZERO);
    for id in 0..u64::from(count) {
        let origin = rng.random_range(0..n);
        let started = net.now();
        floods[origin].accept(id);
        let frame = Flood::frame(id, b"broadcast");
        let neighbours: Vec<PeerId> = net.core(origin).neighbours().copied().collect();
        for p in &neighbours {
            send(net, origin, p, &frame);
        }
        let mut last = started;
        // Until no copy is in flight for a simulated second.
        let mut quiet = 0;
        while quiet < 20 {
            net.run_for(Duration::from_millis(50));
            let mut any = false;
            for (i, flood) in floods.iter_mut().enumerate() {
                for event in net.events(i) {
                    let Event::Message {
                        from,
                        protocol,
                        payload,
                    } = event
                    else {
                        continue;
                    };
                    if protocol != FLOOD || Flood::id_of(&payload) != Some(id) {
                        continue;
                    }
                    any = true;
                    if flood.accept(id) {
                        let neighbours: Vec<PeerId> = net.core(i).neighbours().copied().collect();
                        for p in neighbours.iter().filter(|p| **p != from) {
                            send(net, i, p, &payload);
                        }
                    }
                }
            }
            if any {
                quiet = 0;
                last = net.now();
            } else {
                quiet += 1;
            }
        }
        let reached = floods.iter().filter(|f| f.has(id)).count() as f64 / n.max(1) as f64;
        reach_sum += reached;
        reach_min = reach_min.min(reached);
        time_sum += last - started;
    }
    let delivered: u64 = floods.iter().map(|f| f.delivered).sum();
    let duplicates: u64 = floods.iter().map(|f| f.duplicates).sum();
    BroadcastResult {
        count,
        reach_mean: reach_sum / f64::from(count.max(1)),
        reach_min,
        duplicates_per_delivery: duplicates as f64 / delivered.max(1) as f64,
        time_mean: time_sum / count.max(1),
    }
}
