//! Node runtime over the memory transport: arcs, connections, linger, glare,
//! failures. Time-dependent tests run on tokio's paused clock.

mod common;

use common::{Net, O, settle};
use n2n_core::Direction;
use n2n_core::node::{ArcError, ConnectError, Event, SendError};
use n2n_core::overlay::ArcCloseReason;
use n2n_core::wire::ProtocolId;

#[tokio::test(start_paused = true)]
async fn arcs_both_ways_share_one_connection() {
    let net = Net::new();
    let mut a = net.node(1).await;
    let mut b = net.node(2).await;
    a.connect(&b).await;
    // B adds the reverse arc over the same connection: no handshake.
    b.handle().open_arc(O, a.id).await.unwrap();
    settle().await;

    assert_eq!(a.out_count(b.id).await, 1);
    assert_eq!(a.in_count(b.id).await, 1);
    assert_eq!(b.out_count(a.id).await, 1);
    assert_eq!(b.in_count(a.id).await, 1);
    assert_eq!(
        a.transport.established() + b.transport.established(),
        2,
        "one connection, two ends"
    );
    assert_eq!(
        a.transport.dials.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert_eq!(
        b.transport.dials.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    let snap = a.handle().snapshot().await;
    assert_eq!(snap.neighbours.len(), 1);
    assert_eq!(
        (snap.neighbours[0].inview, snap.neighbours[0].outview),
        (1, 1)
    );

    let a_events = a.drain();
    assert!(a_events.contains(&Event::Connected { peer: b.id }));
    assert!(a_events.contains(&Event::ArcOpened {
        overlay: O,
        peer: b.id,
        direction: Direction::Outgoing
    }));
    assert!(a_events.contains(&Event::ArcOpened {
        overlay: O,
        peer: b.id,
        direction: Direction::Incoming
    }));
    let b_events = b.drain();
    assert!(b_events.contains(&Event::ArcOpened {
        overlay: O,
        peer: a.id,
        direction: Direction::Incoming
    }));
}

#[tokio::test(start_paused = true)]
async fn duplicate_arcs_are_counted_and_reported_once_each() {
    let net = Net::new();
    let a = net.node(1).await;
    let mut b = net.node(2).await;
    a.connect(&b).await;
    a.handle().open_arc(O, b.id).await.unwrap();
    a.handle().open_arc(O, b.id).await.unwrap();
    settle().await;
    assert_eq!(a.out_count(b.id).await, 3);
    assert_eq!(b.in_count(a.id).await, 3);
    let opened = b
        .drain()
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                Event::ArcOpened {
                    direction: Direction::Incoming,
                    ..
                }
            )
        })
        .count();
    assert_eq!(opened, 3);
    assert_eq!(a.transport.established(), 1, "duplicates cost no handshake");
}

#[tokio::test(start_paused = true)]
async fn closing_an_arc_updates_the_remote_inview() {
    let net = Net::new();
    let a = net.node(1).await;
    let mut b = net.node(2).await;
    a.connect(&b).await;
    a.handle().open_arc(O, b.id).await.unwrap();
    settle().await;
    b.drain();
    a.handle().close_arc(O, b.id).await.unwrap();
    settle().await;
    assert_eq!(b.in_count(a.id).await, 1);
    assert_eq!(
        b.drain(),
        vec![Event::ArcClosed {
            overlay: O,
            peer: a.id,
            direction: Direction::Incoming,
            reason: ArcCloseReason::Closed
        }]
    );
    // Closing an arc that does not exist is an error, not a corruption.
    a.handle().close_arc(O, b.id).await.unwrap();
    assert_eq!(
        a.handle().close_arc(O, b.id).await,
        Err(ArcError::NoSuchArc(b.id))
    );
    settle().await;
    assert_eq!(b.in_count(a.id).await, 0);
}

#[tokio::test(start_paused = true)]
async fn a_connection_without_arcs_lingers_and_is_reused() {
    let net = Net::new();
    let mut a = net.node(1).await;
    let mut b = net.node(2).await;
    a.connect(&b).await;
    // Data sent now keeps the connection's queue in the handle (no round
    // trip to the node's actor on later sends).
    let chat = ProtocolId::from_name("chat");
    a.handle().send(b.id, chat, b"one".to_vec()).await.unwrap();
    a.handle().close_arc(O, b.id).await.unwrap();
    settle().await;
    let snap = a.handle().snapshot().await;
    assert!(snap.neighbours[0].lingering);

    // Within the linger time (2 s), a new arc reuses the connection.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    a.handle().open_arc(O, b.id).await.unwrap();
    settle().await;
    assert_eq!(b.in_count(a.id).await, 1);
    assert_eq!(a.transport.established(), 1);
    assert!(!a.handle().snapshot().await.neighbours[0].lingering);

    // After the linger time with no arcs, both sides drop the connection.
    a.handle().close_arc(O, b.id).await.unwrap();
    a.drain();
    b.drain();
    a.wait_for(5, |e| matches!(e, Event::Disconnected { .. }))
        .await;
    b.wait_for(5, |e| matches!(e, Event::Disconnected { .. }))
        .await;
    assert!(a.handle().snapshot().await.neighbours.is_empty());
    assert!(b.handle().snapshot().await.neighbours.is_empty());
    assert_eq!(
        a.handle().open_arc(O, b.id).await,
        Err(ArcError::NotConnected(b.id))
    );
    // The queue the handle kept went with the connection.
    assert_eq!(
        a.handle().send(b.id, chat, b"lost".to_vec()).await,
        Err(SendError::NotConnected(b.id))
    );

    // A new arc after that needs a new handshake; data takes the new
    // connection.
    a.connect(&b).await;
    assert_eq!(a.transport.established(), 2);
    b.drain();
    a.handle().send(b.id, chat, b"two".to_vec()).await.unwrap();
    let e = b.wait_for(5, |e| matches!(e, Event::Message { .. })).await;
    assert_eq!(
        e,
        Event::Message {
            from: a.id,
            protocol: chat,
            payload: b"two".to_vec().into()
        }
    );
}

#[tokio::test(start_paused = true)]
async fn simultaneous_dials_end_with_one_connection() {
    for seeds in [(1, 2), (2, 1), (5, 9), (9, 5)] {
        let net = Net::new();
        let a = net.node(seeds.0).await;
        let b = net.node(seeds.1).await;
        let (ra, rb) = tokio::join!(
            a.handle().connect(b.id, a.signaling.clone(), Some(O)),
            b.handle().connect(a.id, b.signaling.clone(), Some(O)),
        );
        ra.unwrap();
        rb.unwrap();
        settle().await;
        let dials = a.transport.dials.load(std::sync::atomic::Ordering::SeqCst)
            + b.transport.dials.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(dials, 2, "both sides dialed");
        assert_eq!(
            a.transport.established() + b.transport.established(),
            2,
            "exactly one connection"
        );
        assert_eq!(a.out_count(b.id).await, 1);
        assert_eq!(a.in_count(b.id).await, 1);
        assert_eq!(b.out_count(a.id).await, 1);
        assert_eq!(b.in_count(a.id).await, 1);
        let sa = a.handle().snapshot().await;
        assert_eq!(sa.neighbours.len(), 1);
        assert_eq!(sa.handshakes, 0);
        assert_eq!(b.handle().snapshot().await.handshakes, 0);
    }
}

#[tokio::test(start_paused = true)]
async fn crash_events_are_one_per_arc_occurrence() {
    let net = Net::new();
    let mut a = net.node(1).await;
    let b = net.node(2).await;
    a.connect(&b).await;
    a.handle().open_arc(O, b.id).await.unwrap();
    a.handle().open_arc(O, b.id).await.unwrap();
    b.handle().open_arc(O, a.id).await.unwrap();
    b.handle().open_arc(O, a.id).await.unwrap();
    settle().await;
    a.drain();
    b.node.kill();
    let mut out = 0;
    let mut inn = 0;
    loop {
        match a.wait_for(20, |_| true).await {
            Event::ArcClosed {
                direction,
                reason: ArcCloseReason::PeerDown(_),
                ..
            } => match direction {
                Direction::Outgoing => out += 1,
                Direction::Incoming => inn += 1,
            },
            Event::Disconnected { .. } => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((out, inn), (3, 2));
}

#[tokio::test(start_paused = true)]
async fn a_silent_remote_is_detected_by_the_idle_timeout() {
    let net = Net::new();
    let mut a = net.node(1).await;
    let b = net.node(2).await;
    a.connect(&b).await;
    settle().await;
    a.drain();
    // Pull the cable: no close, just silence.
    net.network.cut(a.id, b.id);
    let start = tokio::time::Instant::now();
    let e = a
        .wait_for(30, |e| matches!(e, Event::ArcClosed { .. }))
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
    let waited = start.elapsed();
    // Detected within the idle timeout (9 s), not before the keepalive (3 s).
    assert!(waited <= std::time::Duration::from_secs(10), "{waited:?}");
    assert!(waited >= std::time::Duration::from_secs(3), "{waited:?}");
}

#[tokio::test(start_paused = true)]
async fn a_handshake_that_never_completes_times_out() {
    let net = Net::new();
    let a = net.node(1).await;
    let b = net.node(2).await;
    net.network.cut(a.id, b.id);
    let r = a.handle().connect(b.id, a.signaling.clone(), Some(O)).await;
    assert_eq!(r, Err(ConnectError::Timeout));
    let snap = a.handle().snapshot().await;
    assert_eq!(snap.handshakes, 0);
    assert_eq!(snap.waiters, 0);
}

#[tokio::test(start_paused = true)]
async fn data_flows_both_ways_tagged_by_protocol() {
    let net = Net::new();
    let mut a = net.node(1).await;
    let mut b = net.node(2).await;
    a.connect(&b).await;
    let chat = ProtocolId::from_name("chat");
    a.handle()
        .send(b.id, chat, b"hello".to_vec())
        .await
        .unwrap();
    b.handle()
        .send(a.id, chat, vec![7u8; 100_000])
        .await
        .unwrap();
    let e = b.wait_for(5, |e| matches!(e, Event::Message { .. })).await;
    assert_eq!(
        e,
        Event::Message {
            from: a.id,
            protocol: chat,
            payload: b"hello".to_vec().into()
        }
    );
    let Event::Message { payload, .. } =
        a.wait_for(5, |e| matches!(e, Event::Message { .. })).await
    else {
        unreachable!()
    };
    assert_eq!(payload.len(), 100_000);
    let stranger = common::key(77).peer_id();
    assert_eq!(
        a.handle().send(stranger, chat, b"x".to_vec()).await,
        Err(SendError::NotConnected(stranger))
    );
    assert!(matches!(
        a.handle()
            .send(b.id, chat, vec![0; n2n_core::wire::MAX_DATA + 1])
            .await,
        Err(SendError::TooLarge { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn unknown_overlays_and_self_connections_are_refused() {
    let net = Net::new();
    let a = net.node(1).await;
    let b = net.node(2).await;
    a.connect(&b).await;
    let other = ProtocolId::from_name("not-registered");
    assert_eq!(
        a.handle().open_arc(other, b.id).await,
        Err(ArcError::UnknownOverlay(other))
    );
    assert_eq!(
        a.handle().connect(a.id, a.signaling.clone(), Some(O)).await,
        Err(ConnectError::SelfConnect)
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_closes_arcs_on_the_remote() {
    let net = Net::new();
    let a = net.node(1).await;
    let mut b = net.node(2).await;
    a.connect(&b).await;
    settle().await;
    b.drain();
    a.node.shutdown().await;
    let e = b
        .wait_for(5, |e| matches!(e, Event::ArcClosed { .. }))
        .await;
    assert!(matches!(
        e,
        Event::ArcClosed {
            direction: Direction::Incoming,
            ..
        }
    ));
    b.wait_for(5, |e| matches!(e, Event::Disconnected { .. }))
        .await;
    assert_eq!(b.in_count(a.id).await, 0);
}

/// Wraps the memory transport with connections that never deliver anything
/// (a peer that stopped reading).
#[derive(Debug)]
struct Stalled(std::sync::Arc<dyn n2n_core::Transport>);

#[derive(Debug)]
struct StalledConn(Box<dyn n2n_core::Connection>);

#[async_trait::async_trait]
impl n2n_core::Connection for StalledConn {
    fn remote(&self) -> n2n_core::PeerId {
        self.0.remote()
    }
    async fn send(&self, m: bytes::Bytes) -> Result<(), n2n_core::transport::ConnectionError> {
        self.0.send(m).await
    }
    async fn recv(&self) -> Result<bytes::Bytes, n2n_core::transport::ConnectionError> {
        std::future::pending().await
    }
    async fn close(&self) {
        self.0.close().await
    }
}

#[async_trait::async_trait]
impl n2n_core::Transport for Stalled {
    fn name(&self) -> &str {
        self.0.name()
    }
    async fn dial(
        &self,
        s: n2n_core::transport::SignalPipe,
    ) -> Result<Box<dyn n2n_core::Connection>, n2n_core::transport::TransportError> {
        Ok(Box::new(StalledConn(self.0.dial(s).await?)))
    }
    async fn accept(
        &self,
        s: n2n_core::transport::SignalPipe,
    ) -> Result<Box<dyn n2n_core::Connection>, n2n_core::transport::TransportError> {
        Ok(Box::new(StalledConn(self.0.accept(s).await?)))
    }
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_stops_reading_is_dropped_not_buffered_forever() {
    let net = Net::new();
    let mut config = common::test_config();
    config.control_queue = 8;
    config.seed = Some(1);
    let key = common::key(1);
    let a_id = key.peer_id();
    let a = n2n_core::node::Builder::new(key)
        .config(config)
        .transport(std::sync::Arc::new(net.network.transport()))
        .protocol(O)
        .spawn()
        .unwrap();
    let sig = net.hub.attach(a_id);
    a.handle().attach_signaling(sig.clone()).await;
    // B never reads what A sends.
    let b_key = common::key(2);
    let b_id = b_key.peer_id();
    let b = n2n_core::node::Builder::new(b_key)
        .config(common::test_config())
        .transport(std::sync::Arc::new(Stalled(std::sync::Arc::new(
            net.network.transport(),
        ))))
        .protocol(O)
        .spawn()
        .unwrap();
    b.handle().attach_signaling(net.hub.attach(b_id)).await;
    a.handle().connect(b_id, sig, Some(O)).await.unwrap();
    // The memory link holds 256 frames, the control queue 8: far fewer than 1000 arcs.
    let mut refused = false;
    for _ in 0..1000 {
        if a.handle().open_arc(O, b_id).await.is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused, "the slow peer was dropped");
    let snap = a.handle().snapshot().await;
    assert!(!snap.is_connected(&b_id));
    assert_eq!(snap.view(O).1.len(), 0, "its arcs were closed, not kept");
    drop(b);
}
