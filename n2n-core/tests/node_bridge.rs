//! The bridge (neighbour relay) through the node runtime, over the memory
//! transport: success, reuse of an existing connection, every failure path, and
//! bounds. Runs on tokio's paused clock.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use common::{Net, O, TestNode, settle, test_config};
use n2n_core::Direction;
use n2n_core::node::{ConnectError, Event};
use n2n_core::transport::{Connection, ConnectionError, SignalPipe, Transport, TransportError};
use n2n_core::wire::{self, BridgeFailure, BridgeMessage, Message};

/// A, B, C with A–B and B–C connected (one arc each way).
async fn line(net: &Net) -> (TestNode, TestNode, TestNode) {
    let a = net.node(1).await;
    let b = net.node(2).await;
    let c = net.node(3).await;
    a.connect(&b).await;
    c.connect(&b).await;
    b.handle().open_arc(O, a.id).await.unwrap();
    b.handle().open_arc(O, c.id).await.unwrap();
    settle().await;
    (a, b, c)
}

async fn assert_tables_empty(nodes: &[&TestNode]) {
    for n in nodes {
        let s = n.handle().snapshot().await;
        assert_eq!(s.handshakes, 0, "handshakes left on {:?}", n.id);
        assert_eq!(s.relay_jobs, 0, "relay jobs left on {:?}", n.id);
        assert_eq!(s.bridge_requests, 0, "requests left on {:?}", n.id);
        assert_eq!(s.waiters, 0, "waiters left on {:?}", n.id);
        assert_eq!(s.bridge_endpoints, 0, "bridge endpoints left on {:?}", n.id);
    }
}

#[tokio::test(start_paused = true)]
async fn b_bridges_a_to_c_over_a_direct_connection() {
    let net = Net::new();
    let (mut a, b, mut c) = line(&net).await;
    b.handle().bridge(O, a.id, c.id).await.unwrap();
    settle().await;

    assert_eq!(a.out_count(c.id).await, 1);
    assert_eq!(c.in_count(a.id).await, 1);
    // A and C now talk over their own connection.
    let chat = n2n_core::ProtocolId::from_name("chat");
    a.handle()
        .send(c.id, chat, b"direct".to_vec())
        .await
        .unwrap();
    let e = c.wait_for(5, |e| matches!(e, Event::Message { .. })).await;
    assert_eq!(
        e,
        Event::Message {
            from: a.id,
            protocol: chat,
            payload: Bytes::from_static(b"direct")
        }
    );
    assert!(a.drain().contains(&Event::ArcOpened {
        overlay: O,
        peer: c.id,
        direction: Direction::Outgoing
    }));
    let sb = b.handle().snapshot().await;
    assert!(
        sb.relayed_signals >= 2,
        "offer and answer relayed: {}",
        sb.relayed_signals
    );
    assert_eq!(sb.bridges_ok, 1);
    assert_tables_empty(&[&a, &b, &c]).await;
}

#[tokio::test(start_paused = true)]
async fn an_existing_connection_only_gets_an_arc() {
    let net = Net::new();
    let (a, b, c) = line(&net).await;
    b.handle().bridge(O, a.id, c.id).await.unwrap();
    let relayed = b.handle().snapshot().await.relayed_signals;
    let handshakes = a.transport.established();
    b.handle().bridge(O, a.id, c.id).await.unwrap();
    settle().await;
    assert_eq!(a.out_count(c.id).await, 2);
    assert_eq!(c.in_count(a.id).await, 2);
    assert_eq!(b.handle().snapshot().await.relayed_signals, relayed);
    assert_eq!(a.transport.established(), handshakes);
}

#[tokio::test(start_paused = true)]
async fn bridging_to_the_bridge_itself_reverses_an_arc() {
    let net = Net::new();
    let (a, b, _c) = line(&net).await;
    b.handle().bridge(O, a.id, b.id).await.unwrap();
    settle().await;
    assert_eq!(a.out_count(b.id).await, 2);
    assert_eq!(b.in_count(a.id).await, 2);
}

#[tokio::test(start_paused = true)]
async fn a_asks_b_to_connect_it_to_c() {
    let net = Net::new();
    let (a, b, c) = line(&net).await;
    a.handle().request_bridge(O, b.id, c.id).await.unwrap();
    settle().await;
    assert_eq!(a.out_count(c.id).await, 1);
    assert_eq!(c.in_count(a.id).await, 1);
    // A stranger to B cannot be reached through B.
    let stranger = common::key(99).peer_id();
    assert_eq!(
        a.handle().request_bridge(O, b.id, stranger).await,
        Err(ConnectError::Bridge(BridgeFailure::NotNeighbour(stranger)))
    );
    assert_tables_empty(&[&a, &b, &c]).await;
}

#[tokio::test(start_paused = true)]
async fn bridging_peers_that_are_not_neighbours_fails() {
    let net = Net::new();
    let (a, b, c) = line(&net).await;
    let stranger = common::key(99).peer_id();
    assert_eq!(
        b.handle().bridge(O, a.id, stranger).await,
        Err(BridgeFailure::NotNeighbour(stranger))
    );
    assert_eq!(
        b.handle().bridge(O, stranger, c.id).await,
        Err(BridgeFailure::NotNeighbour(stranger))
    );
    assert_eq!(
        b.handle().bridge(O, a.id, a.id).await,
        Err(BridgeFailure::SelfBridge)
    );
    assert_tables_empty(&[&a, &b, &c]).await;
}

#[tokio::test(start_paused = true)]
async fn a_handshake_that_hangs_fails_with_a_timeout_everywhere() {
    let net = Net::new();
    let (mut a, b, c) = line(&net).await;
    net.network.cut(a.id, c.id);
    a.drain();
    let r = b.handle().bridge(O, a.id, c.id).await;
    assert_eq!(r, Err(BridgeFailure::Timeout));
    let e = a
        .wait_for(10, |e| matches!(e, Event::ConnectFailed { .. }))
        .await;
    assert_eq!(
        e,
        Event::ConnectFailed {
            overlay: Some(O),
            peer: c.id,
            reason: ConnectError::Timeout
        }
    );
    settle().await;
    assert_tables_empty(&[&a, &b, &c]).await;
}

#[tokio::test(start_paused = true)]
async fn c_killed_mid_handshake_is_reported_to_a_and_b() {
    let net = Net::new();
    let (mut a, b, c) = line(&net).await;
    net.network.cut(a.id, c.id);
    a.drain();
    let hb = b.handle().clone();
    let (aid, cid) = (a.id, c.id);
    let bridge = tokio::spawn(async move { hb.bridge(O, aid, cid).await });
    settle().await;
    assert_eq!(a.handle().snapshot().await.handshakes, 1);
    c.node.kill();
    assert_eq!(bridge.await.unwrap(), Err(BridgeFailure::PeerGone(cid)));
    let e = a
        .wait_for(10, |e| matches!(e, Event::ConnectFailed { .. }))
        .await;
    assert_eq!(
        e,
        Event::ConnectFailed {
            overlay: Some(O),
            peer: cid,
            reason: ConnectError::Bridge(BridgeFailure::PeerGone(cid))
        }
    );
    settle().await;
    assert_tables_empty(&[&a, &b]).await;
}

#[tokio::test(start_paused = true)]
async fn b_killed_mid_handshake_is_reported_to_a() {
    let net = Net::new();
    let (mut a, b, c) = line(&net).await;
    net.network.cut(a.id, c.id);
    a.drain();
    let hb = b.handle().clone();
    let (aid, cid, bid) = (a.id, c.id, b.id);
    tokio::spawn(async move { hb.bridge(O, aid, cid).await });
    settle().await;
    assert_eq!(a.handle().snapshot().await.handshakes, 1);
    b.node.kill();
    let e = a
        .wait_for(10, |e| matches!(e, Event::ConnectFailed { .. }))
        .await;
    assert_eq!(
        e,
        Event::ConnectFailed {
            overlay: Some(O),
            peer: cid,
            reason: ConnectError::Bridge(BridgeFailure::PeerGone(bid))
        }
    );
    settle().await;
    assert_tables_empty(&[&a, &c]).await;
}

/// A transport whose connections alter relayed signals (a tampering relay) or
/// inject garbage frames.
#[derive(Debug)]
struct Tamper {
    inner: Arc<dyn Transport>,
    garbage: bool,
    tampered: Arc<AtomicU64>,
}

#[derive(Debug)]
struct TamperConn {
    inner: Box<dyn Connection>,
    garbage: bool,
    tampered: Arc<AtomicU64>,
}

#[async_trait]
impl Connection for TamperConn {
    fn remote(&self) -> n2n_core::PeerId {
        self.inner.remote()
    }

    async fn send(&self, message: Bytes) -> Result<(), ConnectionError> {
        if self.garbage {
            self.tampered.fetch_add(1, Ordering::SeqCst);
            self.inner
                .send(Bytes::from_static(&[1, 0xff, 0xff, 0xff]))
                .await?;
            return self.inner.send(message).await;
        }
        if let Ok(Message::Bridge(relay)) = wire::decode(&message)
            && let BridgeMessage::Relay {
                job,
                from,
                to,
                mut signal,
            } = *relay
        {
            // Flip one byte of the offer on its way through.
            if let Some(b) = signal.signal.payload.first_mut() {
                *b ^= 0x20;
                self.tampered.fetch_add(1, Ordering::SeqCst);
            }
            let frame = wire::encode(&Message::Bridge(Box::new(BridgeMessage::Relay {
                job,
                from,
                to,
                signal,
            })))
            .unwrap();
            return self.inner.send(frame.into()).await;
        }
        self.inner.send(message).await
    }

    async fn recv(&self) -> Result<Bytes, ConnectionError> {
        self.inner.recv().await
    }

    async fn close(&self) {
        self.inner.close().await
    }
}

#[async_trait]
impl Transport for Tamper {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn dial(&self, signals: SignalPipe) -> Result<Box<dyn Connection>, TransportError> {
        let inner = self.inner.dial(signals).await?;
        Ok(Box::new(TamperConn {
            inner,
            garbage: self.garbage,
            tampered: self.tampered.clone(),
        }))
    }

    async fn accept(&self, signals: SignalPipe) -> Result<Box<dyn Connection>, TransportError> {
        let inner = self.inner.accept(signals).await?;
        Ok(Box::new(TamperConn {
            inner,
            garbage: self.garbage,
            tampered: self.tampered.clone(),
        }))
    }
}

async fn tampering_node(
    net: &Net,
    seed: u64,
    garbage: bool,
) -> (n2n_core::node::Node, Arc<AtomicU64>) {
    let tampered = Arc::new(AtomicU64::new(0));
    let mut config = test_config();
    config.seed = Some(seed);
    let key = common::key(seed);
    let id = key.peer_id();
    let node = n2n_core::node::Builder::new(key)
        .config(config)
        .transport(Arc::new(Tamper {
            inner: Arc::new(net.network.transport()),
            garbage,
            tampered: tampered.clone(),
        }))
        .protocol(O)
        .spawn()
        .unwrap();
    node.handle().attach_signaling(net.hub.attach(id)).await;
    (node, tampered)
}

#[tokio::test(start_paused = true)]
async fn a_tampering_relay_causes_a_rejection_not_a_connection() {
    let net = Net::new();
    let (b, tampered) = tampering_node(&net, 2, false).await;
    let mut a = net.node(1).await;
    let c = net.node(3).await;
    let bid = b.local_peer_id();
    for n in [&a, &c] {
        n.handle()
            .connect(bid, n.signaling.clone(), Some(O))
            .await
            .unwrap();
    }
    settle().await;
    a.drain();
    let r = b.handle().bridge(O, a.id, c.id).await;
    assert!(matches!(r, Err(BridgeFailure::SignalRejected(_))), "{r:?}");
    assert!(tampered.load(Ordering::SeqCst) >= 1);
    let e = a
        .wait_for(10, |e| matches!(e, Event::ConnectFailed { .. }))
        .await;
    assert!(
        matches!(
            e,
            Event::ConnectFailed {
                reason: ConnectError::Bridge(BridgeFailure::SignalRejected(_)),
                ..
            }
        ),
        "{e:?}"
    );
    settle().await;
    assert_eq!(a.out_count(c.id).await, 0);
    assert_eq!(c.in_count(a.id).await, 0);
    assert!(!a.handle().snapshot().await.is_connected(&c.id));
    assert_tables_empty(&[&a, &c]).await;
    let sb = b.handle().snapshot().await;
    assert_eq!((sb.relay_jobs, sb.handshakes), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn garbage_frames_are_counted_and_harmless() {
    let net = Net::new();
    let (evil, injected) = tampering_node(&net, 2, true).await;
    let a = net.node(1).await;
    a.handle()
        .connect(evil.local_peer_id(), a.signaling.clone(), Some(O))
        .await
        .unwrap();
    evil.handle().open_arc(O, a.id).await.unwrap();
    evil.handle().open_arc(O, a.id).await.unwrap();
    settle().await;
    let s = a.handle().snapshot().await;
    assert!(injected.load(Ordering::SeqCst) >= 2);
    assert!(s.protocol_violations >= 2, "{}", s.protocol_violations);
    // The real messages around the garbage still count exactly.
    assert_eq!(s.view(O).0.count(&evil.local_peer_id()), 2);
    assert_eq!(s.view(O).1.count(&evil.local_peer_id()), 1);
}

#[tokio::test(start_paused = true)]
async fn relay_jobs_per_neighbour_are_bounded() {
    let net = Net::new();
    let mut config = test_config();
    config.max_jobs_per_neighbour = 2;
    let b = net.node_with(2, config).await;
    let a = net.node(1).await;
    a.connect(&b).await;
    let mut targets = Vec::new();
    for seed in 10..13 {
        let t = net.node(seed).await;
        t.connect(&b).await;
        net.network.cut(a.id, t.id);
        targets.push(t);
    }
    settle().await;
    let mut pending = Vec::new();
    for t in &targets[..2] {
        let hb = b.handle().clone();
        let (aid, tid) = (a.id, t.id);
        pending.push(tokio::spawn(async move { hb.bridge(O, aid, tid).await }));
    }
    settle().await;
    assert_eq!(b.handle().snapshot().await.relay_jobs, 2);
    assert_eq!(
        b.handle().bridge(O, a.id, targets[2].id).await,
        Err(BridgeFailure::TooManyJobs)
    );
    for p in pending {
        assert_eq!(p.await.unwrap(), Err(BridgeFailure::Timeout));
    }
    settle().await;
    assert_tables_empty(&[&a, &b]).await;
}

#[tokio::test(start_paused = true)]
async fn twenty_peers_bridged_into_a_ring_keep_exact_arc_counts() {
    use rand::{Rng, SeedableRng};
    let net = Net::new();
    let mut nodes = Vec::new();
    for seed in 0..20u64 {
        nodes.push(net.node(100 + seed).await);
    }
    // A chain through the signaling hub: i → i+1.
    for i in 0..19 {
        nodes[i].connect(&nodes[i + 1]).await;
    }
    // Peer 0 walks along the chain by bridging only: i bridges 0 → i+1.
    for i in 1..19 {
        let (zero, next) = (nodes[0].id, nodes[i + 1].id);
        nodes[i].handle().bridge(O, zero, next).await.unwrap();
    }
    // Close the ring: 0 makes 19 open an arc to 0 itself.
    let (zero, last) = (nodes[0].id, nodes[19].id);
    nodes[0].handle().bridge(O, last, zero).await.unwrap();
    // Random extra arcs: a random peer bridges two of its random neighbours.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut done = 0;
    while done < 60 {
        let b = rng.random_range(0..20);
        let snap = nodes[b].handle().snapshot().await;
        if snap.neighbours.len() < 2 {
            continue;
        }
        let x = snap.neighbours[rng.random_range(0..snap.neighbours.len())].peer;
        let y = snap.neighbours[rng.random_range(0..snap.neighbours.len())].peer;
        if x == y {
            continue;
        }
        nodes[b].handle().bridge(O, x, y).await.unwrap();
        done += 1;
    }
    settle().await;
    let mut snaps = Vec::new();
    for n in &nodes {
        snaps.push(n.handle().snapshot().await);
    }
    let mut arcs = 0;
    for (i, si) in snaps.iter().enumerate() {
        for (j, sj) in snaps.iter().enumerate() {
            let out = si.view(O).1.count(&nodes[j].id);
            let inn = sj.view(O).0.count(&nodes[i].id);
            assert_eq!(out, inn, "{i} → {j}: outview {out}, inview {inn}");
            arcs += out;
        }
        assert_eq!(si.handshakes + si.relay_jobs + si.bridge_endpoints, 0);
    }
    assert_eq!(arcs, 19 + 18 + 1 + 60);
    assert!(snaps.iter().map(|s| s.relayed_signals).sum::<u64>() > 0);
}
