//! Event streams and the handle's calls that never wait on the node:
//! subscriptions per protocol, `try_send`, synchronous view reads, and a node
//! whose application never drains its events.

mod common;

use std::time::Duration;

use common::{Net, O, test_config};
use n2n_core::ProtocolId;
use n2n_core::node::{ArcError, Config, Event, SendError};

async fn next_message(events: &mut n2n_core::node::Events) -> Event {
    loop {
        let e = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("an event in time")
            .expect("stream open");
        if matches!(e, Event::Message { .. }) {
            return e;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_takes_its_protocols_events_from_the_node_stream() {
    let net = Net::new();
    let a = net.node(1).await;
    let mut b = net.node(2).await;
    let unknown = ProtocolId::from_name("nobody-runs-this");
    assert_eq!(
        b.handle().subscribe(unknown).err(),
        Some(ArcError::UnknownOverlay(unknown))
    );
    let mut sub = b.handle().subscribe(O).expect("O is registered");
    a.connect(&b).await;
    a.handle()
        .send(b.id, O, b"hello".to_vec())
        .await
        .expect("sent");
    match next_message(&mut sub).await {
        Event::Message { from, payload, .. } => {
            assert_eq!(from, a.id);
            assert_eq!(&payload[..], b"hello");
        }
        other => panic!("unexpected {other:?}"),
    }
    // The node's stream saw the connection but none of O's events.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut connected = false;
    while let Some(e) = b.node.try_next_event() {
        assert!(
            !matches!(e, Event::Message { .. } | Event::ArcOpened { .. }),
            "{e:?} should have gone to the subscription"
        );
        connected |= matches!(e, Event::Connected { .. });
    }
    assert!(connected);
    // Dropped, the subscription gives O's events back to the node's stream.
    drop(sub);
    a.handle()
        .send(b.id, O, b"again".to_vec())
        .await
        .expect("sent");
    let e = tokio::time::timeout(Duration::from_secs(5), b.node.next_event())
        .await
        .expect("in time")
        .expect("open");
    assert!(matches!(e, Event::Message { .. }), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_send_and_views_never_wait_on_the_node() {
    let net = Net::new();
    let a = net.node(3).await;
    let mut b = net.node(4).await;
    let stranger = net.node(5).await;
    assert_eq!(a.handle().view(ProtocolId::from_name("unknown")), None);
    assert_eq!(a.handle().view(O), Some(Default::default()));
    a.connect(&b).await;
    let (inview, outview) = a.handle().view(O).expect("O registered");
    assert_eq!((inview.len(), outview.count(&b.id)), (0, 1));
    assert_eq!(a.handle().neighbours(), vec![b.id]);
    assert_eq!(
        a.handle().try_send(stranger.id, O, b"x".to_vec()),
        Err(SendError::NotConnected(stranger.id))
    );
    a.handle()
        .try_send(b.id, O, b"now".to_vec())
        .expect("room in the queue");
    match next_message(b.node.take_events().as_mut().expect("events")).await {
        Event::Message { payload, .. } => assert_eq!(&payload[..], b"now"),
        other => panic!("unexpected {other:?}"),
    }
    a.handle().shutdown().await;
    assert_eq!(
        a.handle().try_send(b.id, O, b"late".to_vec()),
        Err(SendError::Shutdown)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_events_are_never_read_keeps_working_and_reports_the_lag() {
    let net = Net::new();
    let config = Config {
        event_capacity: 2,
        ..test_config()
    };
    let mut hub = net.node_with(6, config.clone()).await;
    let mut others = Vec::new();
    for seed in 7..12 {
        let n = net.node_with(seed, config.clone()).await;
        // Commands are answered although nobody reads `hub`'s events.
        tokio::time::timeout(Duration::from_secs(10), n.connect(&hub))
            .await
            .expect("connect returns although the hub's events pile up");
        others.push(n);
    }
    for n in &others {
        n.handle()
            .send(hub.id, O, b"x".to_vec())
            .await
            .expect("sent");
    }
    let snapshot = tokio::time::timeout(Duration::from_secs(5), hub.handle().snapshot())
        .await
        .expect("the hub answers");
    assert_eq!(snapshot.neighbours.len(), others.len());
    // Two events were kept; the reader is told how many it missed.
    let mut lagged = 0;
    let mut kept = 0;
    while let Some(e) = hub.node.try_next_event() {
        match e {
            Event::Lagged { missed } => lagged += missed,
            _ => kept += 1,
        }
    }
    // The two kept events, and any that arrived while this loop drained
    // the stream (the messages may still be on their way): nothing is lost
    // without being counted, the five connections at least.
    assert!(kept >= 2, "kept {kept}");
    assert!(lagged > 0);
    assert!(
        kept + lagged as usize >= others.len(),
        "kept {kept}, missed {lagged}"
    );
}
