//! The libp2p transport under the node runtime, on loopback: two and ten
//! peers with arcs both ways on one connection, messages, arc close, a killed
//! remote; and a bridge through a neighbour's relay (no signaling server).

mod common;

use bytes::Bytes;
use common::{CHAT, O, TestNode, eventually, node};
use n2n_core::Direction;
use n2n_core::memory::MemorySignalingHub;
use n2n_core::node::Event;
use n2n_core::overlay::ArcCloseReason;
use n2n_transport_libp2p::Protocol;

fn is_message_from(from: n2n_core::PeerId, text: &'static [u8]) -> impl Fn(&Event) -> bool {
    move |e| {
        matches!(e, Event::Message { from: f, protocol, payload }
            if *f == from && *protocol == CHAT && payload.as_ref() == text)
    }
}

async fn two_peers(protocols: &[Protocol]) {
    let hub = MemorySignalingHub::new();
    let mut a = node(&hub, 1, protocols).await;
    let mut b = node(&hub, 2, protocols).await;

    a.connect(&b).await;
    // The reverse arc rides the same connection: no second handshake.
    b.handle().open_arc(O, a.id).await.unwrap();
    a.wait_for(5, |e| {
        matches!(e, Event::ArcOpened { peer, direction: Direction::Incoming, .. } if *peer == b.id)
    })
    .await;
    for (me, them) in [(&a, &b), (&b, &a)] {
        eventually(5, "one arc each way", || async {
            me.out_count(them.id).await == 1 && me.in_count(them.id).await == 1
        })
        .await;
        let snap = me.handle().snapshot().await;
        assert_eq!(snap.neighbours.len(), 1, "one connection carries both arcs");
        assert_eq!(snap.handshakes, 0);
    }

    a.handle()
        .send(b.id, CHAT, b"hello b".to_vec())
        .await
        .unwrap();
    b.wait_for(5, is_message_from(a.id, b"hello b")).await;
    b.handle()
        .send(a.id, CHAT, b"hello a".to_vec())
        .await
        .unwrap();
    a.wait_for(5, is_message_from(b.id, b"hello a")).await;
    // A large message crosses intact.
    // (The default `max_message` is 1 MiB and headers.)
    let big = vec![0x5a; 1024 * 1024];
    a.handle().send(b.id, CHAT, big.clone()).await.unwrap();
    let e = b.wait_for(10, |e| matches!(e, Event::Message { .. })).await;
    assert_eq!(
        e,
        Event::Message {
            from: a.id,
            protocol: CHAT,
            payload: Bytes::from(big)
        }
    );

    // Closing A's arc tells B.
    a.handle().close_arc(O, b.id).await.unwrap();
    let e = b
        .wait_for(5, |e| matches!(e, Event::ArcClosed { .. }))
        .await;
    assert_eq!(
        e,
        Event::ArcClosed {
            overlay: O,
            peer: a.id,
            direction: Direction::Incoming,
            reason: ArcCloseReason::Closed
        }
    );
    assert_eq!(b.in_count(a.id).await, 0);
    assert_eq!(b.out_count(a.id).await, 1);

    // B crashes: A learns it through the transport (or the idle timeout).
    let b_id = b.id;
    b.node.kill();
    let e = a
        .wait_for(15, |e| {
            matches!(
                e,
                Event::ArcClosed {
                    direction: Direction::Incoming,
                    ..
                }
            )
        })
        .await;
    match e {
        Event::ArcClosed {
            overlay,
            peer,
            direction: Direction::Incoming,
            reason: ArcCloseReason::PeerDown(_),
        } => assert_eq!((overlay, peer), (O, b_id)),
        other => panic!("expected B's arc to close as peer down, got {other:?}"),
    }
    a.wait_for(
        5,
        |e| matches!(e, Event::Disconnected { peer, .. } if *peer == b_id),
    )
    .await;
    assert!(a.handle().snapshot().await.neighbours.is_empty());
    a.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_over_tcp() {
    two_peers(&[Protocol::Tcp]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_over_quic() {
    two_peers(&[Protocol::Quic]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_peers_in_a_ring() {
    const N: usize = 10;
    let hub = MemorySignalingHub::new();
    let mut nodes: Vec<TestNode> = Vec::new();
    for i in 0..N {
        // Half prefer QUIC, half TCP; all speak both.
        let protocols = if i % 2 == 0 {
            [Protocol::Quic, Protocol::Tcp]
        } else {
            [Protocol::Tcp, Protocol::Quic]
        };
        nodes.push(node(&hub, 100 + i as u64, &protocols).await);
    }
    let ids: Vec<_> = nodes.iter().map(|n| n.id).collect();
    // i → i+1 by handshake, then i+1 → i over the same connection.
    for i in 0..N {
        let j = (i + 1) % N;
        nodes[i].connect(&nodes[j]).await;
        nodes[j].handle().open_arc(O, ids[i]).await.unwrap();
    }
    for (i, n) in nodes.iter().enumerate() {
        let (prev, next) = (ids[(i + N - 1) % N], ids[(i + 1) % N]);
        eventually(5, "ring arcs in place", || async {
            let s = n.handle().snapshot().await;
            let (inv, outv) = s.view(O);
            s.neighbours.len() == 2
                && outv.count(&next) == 1
                && outv.count(&prev) == 1
                && inv.count(&next) == 1
                && inv.count(&prev) == 1
        })
        .await;
    }
    // Everyone greets its successor.
    for i in 0..N {
        nodes[i]
            .handle()
            .send(ids[(i + 1) % N], CHAT, b"ring".to_vec())
            .await
            .unwrap();
    }
    for i in 0..N {
        let from = ids[(i + N - 1) % N];
        nodes[i].wait_for(10, is_message_from(from, b"ring")).await;
    }
    // Node 0 closes its arc to node 1.
    nodes[0].handle().close_arc(O, ids[1]).await.unwrap();
    nodes[1]
        .wait_for(5, |e| {
            matches!(e, Event::ArcClosed { peer, direction: Direction::Incoming, reason: ArcCloseReason::Closed, .. } if *peer == ids[0])
        })
        .await;
    // Node 5 crashes: both its neighbours see their arcs to it go down.
    let dead = nodes.remove(5);
    let dead_id = dead.id;
    dead.node.kill();
    for idx in [4, 5] {
        // After the removal, nodes 4 and 6 sit at indices 4 and 5.
        let n = &mut nodes[idx];
        let mut down = 0;
        while down < 2 {
            let e = n
                .wait_for(
                    15,
                    |e| matches!(e, Event::ArcClosed { peer, .. } if *peer == dead_id),
                )
                .await;
            assert!(
                matches!(
                    e,
                    Event::ArcClosed {
                        reason: ArcCloseReason::PeerDown(_),
                        ..
                    }
                ),
                "{e:?}"
            );
            down += 1;
        }
        assert!(!n.handle().snapshot().await.is_connected(&dead_id));
    }
    for n in nodes {
        n.node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_connects_a_to_c_through_b_without_a_server() {
    let hub = MemorySignalingHub::new();
    let mut a = node(&hub, 1, &[Protocol::Tcp, Protocol::Quic]).await;
    let b = node(&hub, 2, &[Protocol::Tcp, Protocol::Quic]).await;
    let mut c = node(&hub, 3, &[Protocol::Tcp, Protocol::Quic]).await;
    a.connect(&b).await;
    c.connect(&b).await;
    b.handle().open_arc(O, a.id).await.unwrap();
    b.handle().open_arc(O, c.id).await.unwrap();
    // From now on the server cannot carry anything for A or C.
    hub.detach(&a.id);
    hub.detach(&c.id);

    b.handle().bridge(O, a.id, c.id).await.unwrap();
    eventually(5, "A → C arc on both sides", || async {
        a.out_count(c.id).await == 1 && c.in_count(a.id).await == 1
    })
    .await;
    let sb = b.handle().snapshot().await;
    assert!(
        sb.relayed_signals >= 2,
        "offer and answer went through B: {}",
        sb.relayed_signals
    );
    assert_eq!(sb.bridges_ok, 1);

    // A and C talk over their own libp2p connection.
    a.handle()
        .send(c.id, CHAT, b"direct".to_vec())
        .await
        .unwrap();
    c.wait_for(5, is_message_from(a.id, b"direct")).await;
    c.handle().open_arc(O, a.id).await.unwrap();
    a.wait_for(5, |e| {
        matches!(e, Event::ArcOpened { peer, direction: Direction::Incoming, .. } if *peer == c.id)
    })
    .await;
    // B is not needed any more: A and C stay connected when it leaves.
    b.node.shutdown().await;
    a.handle()
        .send(c.id, CHAT, b"still here".to_vec())
        .await
        .unwrap();
    c.wait_for(5, is_message_from(a.id, b"still here")).await;
    a.node.shutdown().await;
    c.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_libp2p_builds_from_a_stack_file() {
    use n2n_core::node::Builder;
    use n2n_core::plugin::StackConfig;
    use n2n_transport_libp2p as _;

    let stack = StackConfig::from_toml_str(
        r#"
        [transport]
        name = "libp2p"
        protocols = ["quic", "tcp"]
        listen = ["/ip4/127.0.0.1/udp/0/quic-v1", "/ip4/127.0.0.1/tcp/0"]
        handshake_timeout_ms = 8000
        "#,
    )
    .unwrap();
    assert!(n2n_core::plugin::transports().contains(&"libp2p"));
    let hub = MemorySignalingHub::new();
    let mut nodes = Vec::new();
    for seed in [7, 8] {
        let keypair = common::key(seed);
        let (builder, signaling) = Builder::from_stack(keypair.clone(), &stack).await.unwrap();
        assert!(signaling.is_none());
        let node = builder.protocol(O).protocol(CHAT).spawn().unwrap();
        let signaling = hub.attach(keypair.peer_id());
        node.handle().attach_signaling(signaling.clone()).await;
        nodes.push(TestNode {
            node,
            id: keypair.peer_id(),
            signaling,
        });
    }
    nodes[0].connect(&nodes[1]).await;
    let (a, b) = (nodes[0].id, nodes[1].id);
    nodes[0]
        .handle()
        .send(b, CHAT, b"from a stack".to_vec())
        .await
        .unwrap();
    nodes[1]
        .wait_for(5, is_message_from(a, b"from a stack"))
        .await;

    let bad = StackConfig::from_toml_str("[transport]\nname = \"libp2p\"\nprotocols = [\"ws\"]\n")
        .unwrap();
    let err = Builder::from_stack(common::key(9), &bad).await.unwrap_err();
    assert!(err.to_string().contains("ws"), "{err}");
    for n in nodes {
        n.node.shutdown().await;
    }
}
