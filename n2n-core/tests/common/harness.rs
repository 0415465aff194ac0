//! Shared helpers of the tests on the deterministic harness: nodes with the
//! test settings, commands that run to rest, and the table invariants.

use n2n_core::harness::Network;
use n2n_core::node::core::Completion;
use n2n_core::node::{ArcError, Config, ConnectError, Event, Snapshot};
use n2n_core::signal::{Role, Signal, SignedSignal};
use std::sync::{Arc, Mutex};

use n2n_core::wire::{self, BridgeFailure, BridgeMessage, Message};
use n2n_core::{Keypair, PeerId};

use super::{O, key, test_config};

/// A network of `n` nodes with the test settings, node `i` with key `seed + i`.
pub fn network(net_seed: u64, n: usize, key_seed: u64) -> Network {
    let mut net = Network::new(net_seed);
    for i in 0..n {
        add(&mut net, key_seed + i as u64, test_config());
    }
    net
}

/// Adds a node with key `seed` and `config` (seeded with `seed`), running `O`.
pub fn add(net: &mut Network, seed: u64, mut config: Config) -> usize {
    config.seed = Some(seed);
    net.add_node_with_key(key(seed), config, Vec::new(), vec![O])
}

/// `a` connects to `b` through the server with one arc in `O`, to rest.
pub fn connect(net: &mut Network, a: usize, b: usize) -> Result<(), ConnectError> {
    let ticket = net.connect(a, b, Some(O));
    net.drive();
    match net.take_done(a, ticket) {
        Some(Completion::Connect(r)) => r,
        other => panic!("connect finished with {other:?}"),
    }
}

/// `a` opens one more arc in `O` to `b`, to rest.
pub fn open_arc(net: &mut Network, a: usize, b: usize) -> Result<(), ArcError> {
    let peer = net.peer(b);
    let r = net.with_core(a, |core, now| core.open_arc(now, O, peer));
    net.drive();
    r
}

/// `a` closes one arc in `O` to `b`, to rest.
pub fn close_arc(net: &mut Network, a: usize, b: usize) -> Result<(), ArcError> {
    let peer = net.peer(b);
    let r = net.with_core(a, |core, now| core.close_arc(now, O, peer));
    net.drive();
    r
}

/// Node `b` starts a bridge making `from` open an arc in `O` to `to`; returns
/// its ticket (the outcome is for [`bridge_result`]).
pub fn start_bridge(
    net: &mut Network,
    b: usize,
    from: usize,
    to: usize,
) -> n2n_core::node::core::Ticket {
    let (from, to) = (net.peer(from), net.peer(to));
    start_bridge_peers(net, b, from, to)
}

/// As [`start_bridge`], naming peers (possibly strangers).
pub fn start_bridge_peers(
    net: &mut Network,
    b: usize,
    from: PeerId,
    to: PeerId,
) -> n2n_core::node::core::Ticket {
    let ticket = net.ticket(b);
    net.with_core(b, |core, now| core.bridge(now, O, from, to, Some(ticket)));
    ticket
}

/// The outcome of bridge `ticket` of node `b`, if it finished.
pub fn bridge_result(
    net: &mut Network,
    b: usize,
    ticket: n2n_core::node::core::Ticket,
) -> Option<Result<(), BridgeFailure>> {
    match net.take_done(b, ticket)? {
        Completion::Bridge(r) => Some(r),
        other => panic!("a bridge finished with {other:?}"),
    }
}

/// Node `b` bridges `from` → `to` in `O`, to rest.
pub fn bridge(net: &mut Network, b: usize, from: usize, to: usize) -> Result<(), BridgeFailure> {
    let (from, to) = (net.peer(from), net.peer(to));
    bridge_peers(net, b, from, to)
}

/// As [`bridge`], naming peers (possibly strangers).
pub fn bridge_peers(
    net: &mut Network,
    b: usize,
    from: PeerId,
    to: PeerId,
) -> Result<(), BridgeFailure> {
    let ticket = start_bridge_peers(net, b, from, to);
    net.drive();
    bridge_result(net, b, ticket).expect("the bridge finished")
}

/// Node `a` asks `via` to connect it to `to` with an arc in `O`, to rest.
pub fn request_bridge(
    net: &mut Network,
    a: usize,
    via: PeerId,
    to: PeerId,
) -> Result<(), ConnectError> {
    let ticket = net.ticket(a);
    net.with_core(a, |core, now| {
        core.request_bridge(now, O, via, to, Some(ticket))
    });
    net.drive();
    match net.take_done(a, ticket) {
        Some(Completion::Connect(r)) => r,
        other => panic!("request finished with {other:?}"),
    }
}

/// The snapshot of node `i`.
pub fn snap(net: &Network, i: usize) -> Snapshot {
    net.core(i).snapshot()
}

/// Arcs `a → b` in `O`, on `a`'s side.
pub fn out_count(net: &Network, a: usize, b: usize) -> u32 {
    snap(net, a).view(O).1.count(&net.peer(b))
}

/// Arcs `b → a` in `O`, on `a`'s side.
pub fn in_count(net: &Network, a: usize, b: usize) -> u32 {
    snap(net, a).view(O).0.count(&net.peer(b))
}

/// Violations node `i` counted.
pub fn violations(net: &Network, i: usize) -> u64 {
    snap(net, i).protocol_violations
}

/// For every pair of running nodes and every overlay, out(A→C) on A equals
/// in(A→C) on C, and A is C's neighbour exactly when C is A's. Returns the
/// number of arcs.
pub fn assert_consistent(net: &Network) -> u32 {
    let alive: Vec<usize> = (0..net.len()).filter(|&i| net.is_alive(i)).collect();
    let snaps: Vec<Snapshot> = alive.iter().map(|&i| snap(net, i)).collect();
    let mut arcs = 0;
    for (x, &i) in alive.iter().enumerate() {
        for (y, &j) in alive.iter().enumerate() {
            let (pi, pj) = (net.peer(i), net.peer(j));
            assert_eq!(
                snaps[x].is_connected(&pj),
                snaps[y].is_connected(&pi),
                "{i} and {j} disagree on their connection"
            );
            let overlays = snaps[x].views.keys().chain(snaps[y].views.keys());
            for overlay in overlays.collect::<std::collections::BTreeSet<_>>() {
                let out = snaps[x].view(*overlay).1.count(&pj);
                let inn = snaps[y].view(*overlay).0.count(&pi);
                assert_eq!(
                    out, inn,
                    "{i} → {j} in {overlay:?}: outview {out}, inview {inn}"
                );
                arcs += out;
            }
        }
    }
    arcs
}

/// No handshake, job, request, endpoint or waiter is left on `nodes`.
pub fn assert_tables_empty(net: &Network, nodes: &[usize]) {
    for &n in nodes {
        let s = snap(net, n);
        assert_eq!(s.handshakes, 0, "handshakes left on {n}");
        assert_eq!(s.relay_jobs, 0, "relay jobs left on {n}");
        assert_eq!(s.bridge_requests, 0, "requests left on {n}");
        assert_eq!(s.waiters, 0, "waiters left on {n}");
        assert_eq!(s.bridge_endpoints, 0, "bridge endpoints left on {n}");
    }
}

/// The events of node `i` that match `pred`.
pub fn events_matching(net: &mut Network, i: usize, pred: impl Fn(&Event) -> bool) -> Vec<Event> {
    net.events(i).into_iter().filter(|e| pred(e)).collect()
}

/// Encodes a wire message into a frame.
pub fn frame(message: &Message) -> Vec<u8> {
    wire::encode(message).expect("encodes")
}

/// A signal from the holder of `key` to `to`, signed.
pub fn signed(
    key: &Keypair,
    to: PeerId,
    session: u64,
    role: Role,
    seq: u32,
    payload: &[u8],
) -> SignedSignal {
    Signal {
        from: key.peer_id(),
        to,
        session,
        role,
        seq,
        transport: n2n_core::harness::TRANSPORT.into(),
        payload: payload.to_vec(),
    }
    .sign_fresh(key, n2n_core::harness::fresh_at_origin())
    .expect("signs")
}

/// The harness transport's offer naming (node, session).
pub fn offer(node: u64, session: u64) -> Vec<u8> {
    let mut v = vec![b'O'];
    v.extend_from_slice(&node.to_be_bytes());
    v.extend_from_slice(&session.to_be_bytes());
    v
}

/// Node `b` passes its frames through untouched and keeps the job ids of the
/// `ConnectTo`s it sends.
pub fn record_jobs(net: &mut Network, b: usize) -> Arc<Mutex<Vec<u64>>> {
    let jobs = Arc::new(Mutex::new(Vec::new()));
    let seen = jobs.clone();
    net.set_tamper(
        b,
        Some(Box::new(move |frame: &[u8]| {
            if let Ok(Message::Bridge(m)) = wire::decode(frame)
                && let BridgeMessage::ConnectTo { job, .. } = *m
            {
                seen.lock().unwrap().push(job);
            }
            vec![frame.to_vec()]
        })),
    );
    jobs
}
