//! The WebRTC transport under the node runtime, over real WebRTC on loopback
//! with signals through an in-memory signaling hub: ten peers fully meshed in
//! one process with arcs both ways, each pair on one WebRTC connection; a
//! bridge through a neighbour (no server); the plugin built from a stack file.

mod common;

use common::{CHAT, O, TestNode, eventually, node};
use n2n_core::memory::MemorySignalingHub;
use n2n_core::node::Event;
use n2n_core::plugin::StackConfig;
use n2n_core::{Direction, PeerId};
use n2n_transport_webrtc::TransportStats;

const PEERS: usize = 10;

fn is_message_from(from: PeerId, text: Vec<u8>) -> impl Fn(&Event) -> bool {
    move |e| {
        matches!(e, Event::Message { from: f, protocol, payload }
            if *f == from && *protocol == CHAT && payload.as_ref() == text.as_slice())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_peers_fully_meshed_one_connection_per_pair() {
    let hub = MemorySignalingHub::new();
    let mut nodes: Vec<TestNode> = Vec::new();
    for i in 0..PEERS {
        nodes.push(node(&hub, 100 + i as u64).await);
    }
    // Each pair once: the smaller index dials and opens an arc; all pairs at once.
    let dials = (0..PEERS).flat_map(|i| (i + 1..PEERS).map(move |j| (i, j)));
    let nodes_ref = &nodes;
    futures_util::future::join_all(dials.map(|(i, j)| async move {
        nodes_ref[i].connect(&nodes_ref[j]).await;
        nodes_ref[j].until_connected(nodes_ref[i].id).await;
        // The reverse arc rides the same connection: no second handshake.
        nodes_ref[j]
            .handle()
            .open_arc(O, nodes_ref[i].id)
            .await
            .expect("the pair is connected");
    }))
    .await;

    for me in &nodes {
        for them in nodes.iter().filter(|n| n.id != me.id) {
            eventually(10, "one arc each way", || async {
                me.out_count(them.id).await == 1 && me.in_count(them.id).await == 1
            })
            .await;
        }
        let snap = me.handle().snapshot().await;
        assert_eq!(snap.neighbours.len(), PEERS - 1);
        assert_eq!(snap.handshakes, 0);
        // One WebRTC connection per pair, whichever side dialed.
        assert_eq!(
            me.transport.stats(),
            TransportStats {
                connections: PEERS - 1,
                handshakes: 0,
                tasks: PEERS - 1,
            }
        );
    }

    // Every peer greets every other one along its arcs.
    for me in &nodes {
        for them in nodes.iter().filter(|n| n.id != me.id) {
            me.handle()
                .send(them.id, CHAT, greeting(me.id, them.id))
                .await
                .unwrap();
        }
    }
    let ids: Vec<PeerId> = nodes.iter().map(|n| n.id).collect();
    for me in &mut nodes {
        let me_id = me.id;
        let mut pending: Vec<PeerId> = ids.iter().copied().filter(|p| *p != me_id).collect();
        while !pending.is_empty() {
            let e = me
                .wait_for(10, |e| matches!(e, Event::Message { .. }))
                .await;
            let Event::Message { from, payload, .. } = e else {
                unreachable!("filtered above")
            };
            assert_eq!(payload.as_ref(), greeting(from, me_id).as_slice());
            let before = pending.len();
            pending.retain(|p| *p != from);
            assert_eq!(pending.len(), before - 1, "one greeting from {from:?}");
        }
    }

    // One peer leaves: everyone else sees both of its arcs close, and the
    // transports release the connections to it.
    let gone = nodes.pop().expect("ten nodes");
    let gone_id = gone.id;
    let gone_transport = gone.transport.clone();
    gone.node.shutdown().await;
    for me in &mut nodes {
        me.wait_for(
            10,
            |e| matches!(e, Event::Disconnected { peer, .. } if *peer == gone_id),
        )
        .await;
        eventually(10, "connection to the leaver released", || async {
            me.transport.stats().connections == PEERS - 2
        })
        .await;
        assert_eq!(me.out_count(gone_id).await, 0);
        assert_eq!(me.in_count(gone_id).await, 0);
    }
    eventually(10, "the leaver's transport is empty", || async {
        gone_transport.stats() == TransportStats::default()
    })
    .await;

    for n in nodes {
        let t = n.transport.clone();
        n.node.shutdown().await;
        eventually(10, "transport empty after shutdown", || async {
            t.stats() == TransportStats::default()
        })
        .await;
    }
}

fn greeting(from: PeerId, to: PeerId) -> Vec<u8> {
    format!("{} greets {}", from.short(), to.short()).into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_connects_a_to_c_through_b_without_a_server() {
    let hub = MemorySignalingHub::new();
    let a = node(&hub, 1).await;
    let b = node(&hub, 2).await;
    let mut c = node(&hub, 3).await;
    a.connect(&b).await;
    c.connect(&b).await;
    b.until_connected(a.id).await;
    b.until_connected(c.id).await;
    // From now on the hub is out of the picture: B relays A's and C's signals.
    hub.detach(&a.id);
    hub.detach(&c.id);
    b.handle().bridge(O, a.id, c.id).await.expect("bridged");
    c.wait_for(10, |e| {
        matches!(e, Event::ArcOpened { peer, direction: Direction::Incoming, .. } if *peer == a.id)
    })
    .await;
    assert_eq!(a.out_count(c.id).await, 1);
    assert_eq!(a.transport.stats().connections, 2);
    a.handle()
        .send(c.id, CHAT, b"direct".to_vec())
        .await
        .unwrap();
    c.wait_for(10, is_message_from(a.id, b"direct".to_vec()))
        .await;
    assert!(b.handle().snapshot().await.relayed_signals >= 2);
    for n in [a, b, c] {
        let t = n.transport.clone();
        n.node.shutdown().await;
        eventually(10, "transport empty after shutdown", || async {
            t.stats() == TransportStats::default()
        })
        .await;
    }
}

#[test]
fn plugin_webrtc_builds_from_a_stack_file() {
    use n2n_transport_webrtc as _;
    let config = StackConfig::from_toml_str(
        r#"
        [node]
        seed = 5

        [transport]
        name = "webrtc"
        loopback_only = true
        ice_servers = ["stun:127.0.0.1:3478"]
        handshake_timeout_ms = 4000
        lost_timeout_ms = 2000
        "#,
    )
    .unwrap();
    assert!(n2n_core::plugin::transports().contains(&"webrtc"));
    let plugin = n2n_core::plugin::transport(&config.transport.name).unwrap();
    let ctx = n2n_core::plugin::PluginContext {
        keypair: common::key(5),
        seed: 5,
    };
    let transport = (plugin.build)(&ctx, &config.transport.settings).unwrap();
    assert_eq!(transport.name(), "webrtc");
    let mut bad = config.transport.settings.clone();
    bad.insert("lost_timeout_ms".into(), toml::Value::String("soon".into()));
    assert!((plugin.build)(&ctx, &bad).is_err());
}
