//! The node runtime: one whole n2n node per simulated peer.
//!
//! Where the idealised runtime ([`crate::Sim`]) honours the node's contract
//! in its own code, this one hosts a real
//! [`NodeCore`](n2n_core::node::core::NodeCore) per peer — the
//! connection table with keepalive, idle timeout and linger, handshake
//! sessions with glare, the arc views with their limits, the bridge machine
//! and Spray — on [`n2n_core::harness::Network`]: simulated connections, a
//! simulated transport handshake (offer, answer, then round trips at link
//! latency) and per-hop latency and loss on every frame and signal. A bridge
//! is real `Relay` messages through the middle peer's core.
//!
//! Signals are not signed here ([`SignalAuth::UnsignedForSimulation`]):
//! every simulated peer is honest, and ed25519 would dominate the simulated
//! time. `signed: true` turns signatures back on.

use std::time::{Duration, Instant as WallClock};

use n2n_core::arc::ArcSet;
use n2n_core::harness::{LinkConfig, Network};
use n2n_core::node::core::{Completion, Ticket};
use n2n_core::node::{Config, SignalAuth};
use n2n_core::overlay::Erased;
use n2n_core::wire::ProtocolId;
use n2n_overlay_spray::spray;
use rand::Rng;
use rand::seq::SliceRandom;

use crate::SimRng;
use crate::node_stack::{self, BroadcastResult, FLOOD, RING};
use crate::stats::{Components, Graph, Summary};

/// The Spray instance every simulated node runs.
const SPRAY: ProtocolId = spray::PROTOCOL;

/// A run of the node runtime.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeRunConfig {
    /// Peers that arrive, one by one.
    pub peers: u32,
    /// Shuffle cycles after the arrivals.
    pub cycles: u32,
    /// Spray's shuffle period (a cycle lasts Δ).
    pub delta: Duration,
    /// Time between two arrivals.
    pub interval: Duration,
    /// Shortest one-way hop latency.
    pub latency_min: Duration,
    /// Longest one-way hop latency.
    pub latency_max: Duration,
    /// Loss of every frame and signal, in [0, 1].
    pub loss: f64,
    /// Master seed.
    pub seed: u64,
    /// Sign and verify signals with ed25519, as a real node does.
    pub signed: bool,
    /// The node settings (keepalive, linger, limits…). `seed` and
    /// `signal_auth` are set per node by the runner.
    pub node: Config,
    /// Shares of the peers to remove at the end, measuring the components left.
    pub removals: Vec<f64>,
    /// Run the ring of `n2n-overlay-ring` on Spray in every node, gossiping
    /// every Δ (`--stack ring`).
    pub ring: bool,
    /// With `ring`: broadcasts flooded after the cycles.
    pub broadcasts: u32,
}

impl Default for NodeRunConfig {
    fn default() -> Self {
        Self {
            peers: 1000,
            cycles: 50,
            delta: Duration::from_secs(60),
            interval: Duration::from_millis(300),
            latency_min: Duration::from_millis(10),
            latency_max: Duration::from_millis(50),
            loss: 0.0,
            seed: 1,
            signed: false,
            node: Config {
                // A keepalive of seconds would be most of the traffic of a
                // simulated minute; a fraction of Δ keeps connections checked.
                keepalive: Duration::from_secs(30),
                idle_timeout: Duration::from_secs(90),
                ..Config::default()
            },
            removals: vec![0.3, 0.5],
            ring: false,
            broadcasts: 10,
        }
    }
}

/// Measurements after one cycle.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeCycle {
    /// Cycle number (0 is the end of the arrivals).
    pub cycle: u32,
    /// Peers in the network.
    pub peers: usize,
    /// Partial-view sizes (Spray's outview, as the node's arc table holds it).
    pub view: Summary,
    /// In-degrees.
    pub in_degree: Summary,
    /// Peers with an empty partial view.
    pub empty_views: usize,
    /// Share of peers holding two arcs or more to one neighbour.
    pub duplicates_share: f64,
    /// Strongly connected components.
    pub strong: Components,
    /// Weakly connected components.
    pub weak: Components,
    /// Connections per peer (neighbours, lingering ones included).
    pub connections: f64,
    /// Handshakes in flight, all peers.
    pub handshakes: usize,
    /// Bridges relayed to completion, all peers, since the start.
    pub bridges_ok: u64,
    /// Bridges relayed that failed, all peers, since the start.
    pub bridges_failed: u64,
    /// Protocol violations counted, all peers (0 among honest peers).
    pub violations: u64,
    /// Deliveries and wake-ups run so far.
    pub steps: u64,
    /// With the ring: share of the peers whose ring arcs go to their true
    /// successor and predecessor.
    pub ring: Option<f64>,
    /// With the ring: the same among the peers with a connection (the ring
    /// of the peers anyone can reach).
    pub ring_connected: Option<f64>,
}

/// Components left after removing a share of the peers at once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NodeRemoval {
    /// Share removed.
    pub removed: f64,
    /// Peers left.
    pub left: usize,
    /// Strongly connected components of the peers left.
    pub strong: Components,
    /// Weakly connected components of the peers left.
    pub weak: Components,
}

/// What a run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeRunResult {
    /// One row per cycle.
    pub rows: Vec<NodeCycle>,
    /// Components after the removals of [`NodeRunConfig::removals`].
    pub removals: Vec<NodeRemoval>,
    /// Joins that needed a second contact (the first handshake failed).
    pub join_retries: u64,
    /// With the ring: the broadcasts flooded after the cycles.
    pub broadcast: Option<BroadcastResult>,
    /// Wall time of the arrivals and of the cycles.
    pub wall: (Duration, Duration),
}

/// A join waiting for its connection to the contact.
struct PendingJoin {
    node: usize,
    contact: usize,
    ticket: Ticket,
}

/// Runs `config`, calling `progress` after each cycle.
pub fn run_node(config: &NodeRunConfig, mut progress: impl FnMut(&NodeCycle)) -> NodeRunResult {
    let mut net = Network::new(config.seed);
    net.set_links(LinkConfig {
        latency: config.latency_min,
        jitter: config.latency_max.saturating_sub(config.latency_min),
        loss: config.loss,
        ..LinkConfig::default()
    });
    let mut rng = SimRng::seed_from(config.seed ^ 0x6e6f_6465);
    let spray_config = spray::Config {
        delta: config.delta,
        ..spray::Config::default()
    };
    let add = |net: &mut Network, rng: &mut SimRng| {
        let node_config = Config {
            seed: Some(rng.random()),
            signal_auth: if config.signed {
                SignalAuth::Ed25519
            } else {
                SignalAuth::UnsignedForSimulation
            },
            ..config.node.clone()
        };
        let key = n2n_core::Keypair::generate(rng);
        let state = spray::State::new(
            key.peer_id(),
            spray_config.clone(),
            SimRng::seed_from(rng.random()),
        );
        let id = key.peer_id();
        let mut overlays: Vec<Box<dyn n2n_core::DynOverlay>> = vec![Box::new(Erased::new(state))];
        let mut protocols = Vec::new();
        if config.ring {
            overlays.push(node_stack::ring_overlay(id, config.delta));
            protocols.push(FLOOD);
        }
        net.add_node_with_key(key, node_config, overlays, protocols)
    };
    let started = WallClock::now();
    let mut pending: Vec<PendingJoin> = Vec::new();
    let mut retries = 0;
    add(&mut net, &mut rng);
    for _ in 1..config.peers {
        let node = add(&mut net, &mut rng);
        let contact = rng.random_range(0..node);
        let ticket = net.connect(node, contact, None);
        pending.push(PendingJoin {
            node,
            contact,
            ticket,
        });
        net.run_for(config.interval);
        retries += settle_joins(&mut net, &mut pending, &mut rng, config.ring);
        forget_events(&mut net);
    }
    let arrivals = started.elapsed();
    let started = WallClock::now();
    let mut rows = Vec::new();
    for cycle in 0..=config.cycles {
        if cycle > 0 {
            net.run_for(config.delta);
        }
        forget_events(&mut net);
        retries += settle_joins(&mut net, &mut pending, &mut rng, config.ring);
        let mut row = measure(&net, cycle);
        if config.ring {
            let (all, connected) = node_stack::ring_share(&net);
            row.ring = Some(all);
            row.ring_connected = Some(connected);
        }
        progress(&row);
        rows.push(row);
    }
    let broadcast = config
        .ring
        .then(|| node_stack::broadcasts(&mut net, config.broadcasts, &mut rng));
    let removals = config
        .removals
        .iter()
        .map(|&share| removal(&net, share, &mut rng))
        .collect();
    NodeRunResult {
        rows,
        removals,
        join_retries: retries,
        broadcast,
        wall: (arrivals, started.elapsed()),
    }
}

/// Hands each newcomer whose connection to its contact is up to Spray;
/// retries through another contact when the handshake failed.
fn settle_joins(
    net: &mut Network,
    pending: &mut Vec<PendingJoin>,
    rng: &mut SimRng,
    ring: bool,
) -> u64 {
    let mut retries = 0;
    let mut still = Vec::with_capacity(pending.len());
    for join in pending.drain(..) {
        match net.take_done(join.node, join.ticket) {
            None => still.push(join),
            Some(Completion::Connect(Ok(()))) => {
                let contact = net.peer(join.contact);
                net.with_core(join.node, |core, now| {
                    // A contact gone meanwhile leaves Spray to its arc-down rules.
                    let _ = core.join_overlay(now, SPRAY, contact);
                    if ring {
                        // Through the same neighbour: no second server round trip.
                        let _ = core.join_overlay(now, RING, contact);
                    }
                });
            }
            Some(_) => {
                retries += 1;
                let contact = rng.random_range(0..net.len());
                if contact != join.node {
                    let ticket = net.connect(join.node, contact, None);
                    still.push(PendingJoin {
                        node: join.node,
                        contact,
                        ticket,
                    });
                }
            }
        }
    }
    *pending = still;
    retries
}

/// Drops what the nodes reported: the runner reads their tables instead.
fn forget_events(net: &mut Network) {
    for i in 0..net.len() {
        drop(net.events(i));
    }
}

/// The outviews of Spray as `u32` arc sets over node indices.
fn outviews(net: &Network) -> Vec<ArcSet<u32>> {
    (0..net.len())
        .map(|i| {
            let mut set = ArcSet::new();
            if let Some((_, out)) = net.core(i).views(SPRAY) {
                for (peer, n) in out.iter() {
                    if let Some(j) = net.index_of(peer) {
                        set.insert_n(j as u32, n);
                    }
                }
            }
            set
        })
        .collect()
}

fn measure(net: &Network, cycle: u32) -> NodeCycle {
    let outs = outviews(net);
    let mut in_degree = vec![0usize; net.len()];
    for out in &outs {
        for (j, n) in out.iter() {
            in_degree[*j as usize] += n as usize;
        }
    }
    let live: Vec<u32> = (0..net.len() as u32).collect();
    let graph = Graph::build(&live, &live, |id| outs.get(id as usize));
    let (mut handshakes, mut ok, mut failed, mut violations, mut neighbours) = (0, 0, 0, 0, 0);
    for i in 0..net.len() {
        let s = net.core(i).snapshot();
        handshakes += s.handshakes;
        ok += s.bridges_ok;
        failed += s.bridges_failed;
        violations += s.protocol_violations;
        neighbours += s.neighbours.len();
    }
    NodeCycle {
        cycle,
        peers: net.len(),
        view: Summary::of(outs.iter().map(|o| o.len() as f64)),
        in_degree: Summary::of(in_degree.iter().map(|&d| d as f64)),
        empty_views: outs.iter().filter(|o| o.is_empty()).count(),
        duplicates_share: outs.iter().filter(|o| o.len() != o.distinct()).count() as f64
            / net.len().max(1) as f64,
        strong: graph.strong_components(),
        weak: graph.weak_components(),
        connections: neighbours as f64 / net.len().max(1) as f64,
        handshakes,
        bridges_ok: ok,
        bridges_failed: failed,
        violations,
        steps: net.steps(),
        ring: None,
        ring_connected: None,
    }
}

fn removal(net: &Network, share: f64, rng: &mut SimRng) -> NodeRemoval {
    let outs = outviews(net);
    let mut order: Vec<u32> = (0..net.len() as u32).collect();
    order.shuffle(rng);
    let cut = ((order.len() as f64) * share.clamp(0.0, 1.0)).round() as usize;
    let mut kept = order[cut..].to_vec();
    kept.sort_unstable();
    let mut dense = vec![u32::MAX; net.len()];
    for (v, &id) in kept.iter().enumerate() {
        dense[id as usize] = v as u32;
    }
    let graph = Graph::build(&dense, &kept, |id| outs.get(id as usize));
    NodeRemoval {
        removed: share,
        left: kept.len(),
        strong: graph.strong_components(),
        weak: graph.weak_components(),
    }
}
