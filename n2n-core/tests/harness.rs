//! The deterministic harness itself: connections and arcs, glare, crashes,
//! the link model (loss, duplication, reordering), the livelock guard, and
//! reproducibility.

mod common;

use std::collections::VecDeque;

use common::harness::{self as h, assert_consistent, in_count, out_count, snap};
use common::{O, key, test_config};
use n2n_core::harness::{LinkConfig, Livelock, Network};
use n2n_core::node::Event;
use n2n_core::node::core::Completion;
use n2n_core::overlay::{ArcCloseReason, DynOverlay, Input, Output, TimerToken};
use n2n_core::signal::Role;
use n2n_core::time::{Duration, Instant};
use n2n_core::wire::{Message, ProtocolId};
use n2n_core::{Direction, PeerId};

const CHAT: ProtocolId = ProtocolId::from_name("chat");

fn data(payload: &[u8]) -> Vec<u8> {
    h::frame(&Message::Data {
        protocol: CHAT,
        payload: payload.to_vec(),
    })
}

fn messages(events: &[Event]) -> Vec<Vec<u8>> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message { payload, .. } => Some(payload.to_vec()),
            _ => None,
        })
        .collect()
}

#[test]
fn connect_opens_one_arc_over_one_connection_in_five_hops() {
    let mut net = h::network(1, 2, 1);
    let start = net.now();
    let ticket = net.connect(0, 1, Some(O));
    net.drive();
    // Offer and answer through the server (2 ms), one handshake round trip
    // (2 ms), then the ArcOpen (1 ms).
    assert_eq!(net.now() - start, Duration::from_millis(5));
    assert_eq!(net.take_done(0, ticket), Some(Completion::Connect(Ok(()))));
    let (a, b) = (net.peer(0), net.peer(1));
    assert_eq!(
        net.events(0),
        vec![
            Event::Connected { peer: b },
            Event::ArcOpened {
                overlay: O,
                peer: b,
                direction: Direction::Outgoing
            }
        ]
    );
    assert_eq!(
        net.events(1),
        vec![
            Event::Connected { peer: a },
            Event::ArcOpened {
                overlay: O,
                peer: a,
                direction: Direction::Incoming
            }
        ]
    );
    assert_eq!((out_count(&net, 0, 1), in_count(&net, 1, 0)), (1, 1));
    assert_eq!(assert_consistent(&net), 1);
    h::assert_tables_empty(&net, &[0, 1]);
    assert_eq!(net.in_flight(), 0);
}

#[test]
fn glare_ends_with_one_connection_and_exact_arcs() {
    for seeds in [(1, 2), (2, 1), (5, 9), (9, 5), (11, 40)] {
        let mut net = Network::new(seeds.0 * 100 + seeds.1);
        let a = h::add(&mut net, seeds.0, test_config());
        let b = h::add(&mut net, seeds.1, test_config());
        let ta = net.connect(a, b, Some(O));
        let tb = net.connect(b, a, Some(O));
        net.drive();
        assert_eq!(net.take_done(a, ta), Some(Completion::Connect(Ok(()))));
        assert_eq!(net.take_done(b, tb), Some(Completion::Connect(Ok(()))));
        for (x, y) in [(a, b), (b, a)] {
            let s = snap(&net, x);
            assert_eq!(s.neighbours.len(), 1, "{seeds:?}");
            assert_eq!((s.neighbours[0].inview, s.neighbours[0].outview), (1, 1));
            assert_eq!((out_count(&net, x, y), in_count(&net, x, y)), (1, 1));
            let connected = net
                .events(x)
                .iter()
                .filter(|e| matches!(e, Event::Connected { .. }))
                .count();
            assert_eq!(connected, 1, "{seeds:?}: one connection seen by {x}");
        }
        assert_eq!(assert_consistent(&net), 2);
        h::assert_tables_empty(&net, &[a, b]);
    }
}

#[test]
fn a_crash_is_seen_as_a_loss_one_hop_later() {
    let mut net = h::network(3, 2, 1);
    h::connect(&mut net, 0, 1).unwrap();
    h::open_arc(&mut net, 1, 0).unwrap();
    net.events(0);
    let b = net.peer(1);
    let start = net.now();
    net.crash(1);
    assert!(!net.is_alive(1));
    net.drive();
    assert_eq!(net.now() - start, Duration::from_millis(1));
    let events = net.events(0);
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(matches!(
        &events[0],
        Event::ArcClosed { peer, direction: Direction::Outgoing, reason: ArcCloseReason::PeerDown(_), .. } if *peer == b
    ));
    assert!(matches!(
        &events[1],
        Event::ArcClosed { peer, direction: Direction::Incoming, reason: ArcCloseReason::PeerDown(_), .. } if *peer == b
    ));
    assert!(matches!(&events[2], Event::Disconnected { peer, .. } if *peer == b));
    assert!(snap(&net, 0).neighbours.is_empty());
    // Nothing reaches a crashed node, nothing leaves it, and it does not
    // wake up.
    assert!(!net.inject_frame(0, 1, data(b"late")));
    let ticket = net.connect(1, 0, Some(O));
    assert_eq!(net.in_flight(), 0);
    assert_eq!(net.take_done(1, ticket), None);
    net.run_for(Duration::from_secs(60));
    assert!(
        net.events(1)
            .iter()
            .all(|e| !matches!(e, Event::Message { .. }))
    );
}

#[test]
fn total_loss_drops_every_frame_and_signal() {
    let mut net = h::network(4, 2, 1);
    h::connect(&mut net, 0, 1).unwrap();
    net.events(1);
    net.set_links(LinkConfig {
        loss: 1.0,
        ..LinkConfig::default()
    });
    for i in 0..10u8 {
        assert!(net.inject_frame(0, 1, data(&[i])));
    }
    assert_eq!(net.in_flight(), 0);
    net.drive();
    assert!(messages(&net.events(1)).is_empty());
    // A dial through a lossy server times out.
    let c = h::add(&mut net, 3, test_config());
    let ticket = net.connect(0, c, Some(O));
    net.run_for(test_config().handshake_timeout);
    assert_eq!(
        net.take_done(0, ticket),
        Some(Completion::Connect(Err(
            n2n_core::node::ConnectError::Timeout
        )))
    );
}

#[test]
fn half_loss_drops_about_half_the_frames() {
    let mut net = h::network(5, 2, 1);
    h::connect(&mut net, 0, 1).unwrap();
    net.events(1);
    net.set_links(LinkConfig {
        loss: 0.5,
        ..LinkConfig::default()
    });
    for i in 0..1000u16 {
        net.inject_frame(0, 1, data(&i.to_be_bytes()));
    }
    net.drive();
    let got = messages(&net.events(1));
    assert!(
        (400..=600).contains(&got.len()),
        "{} of 1000 arrived",
        got.len()
    );
    // The ones that arrive keep their order.
    assert!(got.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn duplication_delivers_every_frame_twice() {
    let mut net = h::network(6, 2, 1);
    h::connect(&mut net, 0, 1).unwrap();
    net.events(1);
    net.set_links(LinkConfig {
        duplicate: 1.0,
        ..LinkConfig::default()
    });
    net.inject_frame(0, 1, data(b"one"));
    net.inject_frame(0, 1, data(b"two"));
    net.drive();
    let got = messages(&net.events(1));
    assert_eq!(got, [b"one", b"one", b"two", b"two"].map(|m| m.to_vec()));
}

#[test]
fn jitter_reorders_frames_only_when_allowed() {
    for reorder in [false, true] {
        let mut net = h::network(7, 2, 1);
        h::connect(&mut net, 0, 1).unwrap();
        net.events(1);
        net.set_links(LinkConfig {
            jitter: Duration::from_millis(20),
            reorder,
            ..LinkConfig::default()
        });
        for i in 0..100u8 {
            net.inject_frame(0, 1, data(&[i]));
        }
        net.drive();
        let got = messages(&net.events(1));
        assert_eq!(got.len(), 100);
        let in_order = got.windows(2).all(|w| w[0] < w[1]);
        assert_eq!(in_order, !reorder, "reorder: {reorder}");
    }
}

#[test]
fn a_loss_arrives_after_the_frames_even_when_reordering() {
    let mut net = h::network(8, 2, 1);
    h::connect(&mut net, 0, 1).unwrap();
    net.events(1);
    net.set_links(LinkConfig {
        jitter: Duration::from_millis(50),
        reorder: true,
        ..LinkConfig::default()
    });
    for i in 0..20u8 {
        net.inject_frame(0, 1, data(&[i]));
    }
    // Node 0 crashes: what it sent still arrives, then the connection ends.
    net.crash(0);
    net.drive();
    let events = net.events(1);
    assert_eq!(messages(&events).len(), 20);
    let first_loss = events
        .iter()
        .position(|e| !matches!(e, Event::Message { .. }))
        .unwrap();
    assert_eq!(first_loss, 20, "{events:?}");
    assert!(matches!(events.last(), Some(Event::Disconnected { .. })));
}

#[test]
fn run_for_stops_at_its_end_and_keeps_later_deliveries() {
    let mut net = h::network(9, 2, 1);
    h::connect(&mut net, 0, 1).unwrap();
    net.events(1);
    net.set_links(LinkConfig {
        latency: Duration::from_secs(5),
        ..LinkConfig::default()
    });
    let start = net.now();
    net.inject_frame(0, 1, data(b"slow"));
    // Keepalives (3 s) fire within the span; the frame is due after it.
    net.run_for(Duration::from_secs(4));
    assert_eq!(net.now() - start, Duration::from_secs(4));
    assert!(messages(&net.events(1)).is_empty());
    assert!(net.in_flight() > 0);
    net.run_for(Duration::from_secs(1));
    assert_eq!(messages(&net.events(1)), vec![b"slow".to_vec()]);
    assert_eq!(net.now() - start, Duration::from_secs(5));
}

const ECHO: ProtocolId = ProtocolId::from_name("echo");

/// Answers every message with a message: two of them never rest.
#[derive(Debug, Default)]
struct Echo {
    outputs: VecDeque<Output<PeerId, TimerToken>>,
}

impl DynOverlay for Echo {
    fn protocol(&self) -> ProtocolId {
        ECHO
    }
    fn handle(&mut self, _now: Instant, input: Input<PeerId, TimerToken>) {
        match input {
            Input::Join { contact: from } | Input::Message { from, .. } => {
                self.outputs.push_back(Output::Send {
                    to: from,
                    payload: b"ping".to_vec(),
                });
            }
            _ => {}
        }
    }
    fn poll_output(&mut self) -> Option<Output<PeerId, TimerToken>> {
        self.outputs.pop_front()
    }
    fn peers(&mut self, _k: usize) -> Vec<PeerId> {
        Vec::new()
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

#[test]
fn drive_bounded_reports_a_livelock() {
    let mut net = Network::new(10);
    for seed in [1, 2] {
        let overlays: Vec<Box<dyn DynOverlay>> = vec![Box::new(Echo::default())];
        net.add_node_with_key(key(seed), test_config(), overlays, vec![O]);
    }
    h::connect(&mut net, 0, 1).unwrap();
    // At rest, a bounded drive takes no step.
    assert_eq!(net.drive_bounded(10), Ok(0));
    let b = net.peer(1);
    net.with_core(0, |core, now| core.join_overlay(now, ECHO, b))
        .unwrap();
    assert_eq!(net.drive_bounded(1000), Err(Livelock { steps: 1000 }));
    assert!(net.in_flight() > 0);
}

/// Five nodes on lossy, jittery links: connections, bridges, arcs, a crash.
fn scenario(seed: u64) -> (Vec<Vec<Event>>, u64, Duration) {
    let mut net = h::network(seed, 5, 20);
    let start = net.now();
    net.set_links(LinkConfig {
        jitter: Duration::from_millis(3),
        loss: 0.05,
        ..LinkConfig::default()
    });
    for i in 1..5 {
        net.connect(i, 0, Some(O));
    }
    net.run_for(Duration::from_secs(1));
    for i in 1..4 {
        h::start_bridge(&mut net, 0, i, i + 1);
    }
    net.run_for(Duration::from_secs(1));
    net.crash(2);
    net.run_for(Duration::from_secs(30));
    let events = (0..5).map(|i| net.events(i)).collect();
    (events, net.steps(), net.now() - start)
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let first = scenario(11);
    assert!(first.0.iter().map(Vec::len).sum::<usize>() > 20);
    assert_eq!(first, scenario(11));
    assert_ne!(first.0, scenario(12).0);
}

#[test]
fn a_hello_naming_another_node_fails_the_handshake_at_once() {
    let mut net = h::network(13, 2, 1);
    let (a, c) = (net.peer(0), net.peer(1));
    // The test holds node 0's key: offers signed by node 0 whose hellos name
    // a node that does not exist, then node 1 itself.
    let k0 = key(1);
    for (session, hello) in [(7, h::offer(999, 1)), (8, h::offer(1, 1))] {
        net.inject_signal(h::signed(&k0, c, session, Role::Dialer, 0, &hello));
        net.drive();
        assert_eq!(snap(&net, 1).handshakes, 0);
        assert!(snap(&net, 1).neighbours.is_empty());
        let events = net.events(1);
        assert!(
            matches!(
                events.as_slice(),
                [Event::ConnectFailed { overlay: None, peer, .. }] if *peer == a
            ),
            "{events:?}"
        );
    }
    net.run_for(test_config().handshake_timeout * 2);
    // The nodes still connect for real.
    h::connect(&mut net, 0, 1).unwrap();
    assert_eq!(assert_consistent(&net), 1);
}

#[test]
fn a_cut_silences_a_connection_and_hangs_new_handshakes() {
    let mut net = h::network(14, 3, 1);
    h::connect(&mut net, 0, 1).unwrap();
    net.events(1);
    net.cut(1, 0);
    assert!(net.is_cut(0, 1) && !net.is_cut(0, 2));
    assert!(net.inject_frame(0, 1, data(b"lost")));
    net.drive();
    assert!(net.events(1).is_empty());
    // Offer and answer pass through the server; the transport never finishes.
    net.cut(0, 2);
    let ticket = net.connect(0, 2, Some(O));
    net.drive();
    assert_eq!((snap(&net, 0).handshakes, snap(&net, 2).handshakes), (1, 1));
    net.run_for(test_config().handshake_timeout);
    assert_eq!(
        net.take_done(0, ticket),
        Some(Completion::Connect(Err(
            n2n_core::node::ConnectError::Timeout
        )))
    );
    assert_eq!(snap(&net, 2).handshakes, 0);
}

#[test]
fn a_tamper_rewrites_what_a_core_transmits() {
    let mut net = h::network(15, 2, 1);
    h::connect(&mut net, 0, 1).unwrap();
    // Node 0 sends each frame twice, then nothing at all.
    net.set_tamper(0, Some(Box::new(|f: &[u8]| vec![f.to_vec(), f.to_vec()])));
    h::open_arc(&mut net, 0, 1).unwrap();
    assert_eq!((out_count(&net, 0, 1), in_count(&net, 1, 0)), (2, 3));
    net.set_tamper(0, Some(Box::new(|_: &[u8]| Vec::new())));
    h::open_arc(&mut net, 0, 1).unwrap();
    assert_eq!((out_count(&net, 0, 1), in_count(&net, 1, 0)), (3, 3));
    // Injected frames are not the core's: they go out untouched.
    net.inject_frame(0, 1, h::frame(&Message::ArcOpen { overlay: O }));
    net.set_tamper(0, None);
    h::open_arc(&mut net, 0, 1).unwrap();
    assert_eq!((out_count(&net, 0, 1), in_count(&net, 1, 0)), (4, 5));
}
