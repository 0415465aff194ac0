//! The node core on the deterministic harness: arcs, connections, linger,
//! glare, failures, on virtual time and exactly; and the core's answers to a
//! misbehaving neighbour (undecodable frames, arcs that do not exist, arcs
//! beyond the limits) and to bad signals. The tokio versions of the first
//! twelve (`node_arcs.rs`) now test the driver.

mod common;

use common::harness::{self as h, assert_consistent, in_count, out_count, snap, violations};
use common::{O, key, test_config};
use n2n_core::Direction;
use n2n_core::harness::{LinkConfig, Network};
use n2n_core::node::core::Completion;
use n2n_core::node::{ArcError, ConnectError, Event};
use n2n_core::overlay::ArcCloseReason;
use n2n_core::signal::{Role, SignedSignal};
use n2n_core::time::Duration;
use n2n_core::wire::{CloseReason, Message, ProtocolId};

const CHAT: ProtocolId = ProtocolId::from_name("chat");
const NS: Duration = Duration::from_nanos(1);

fn data(payload: Vec<u8>) -> Vec<u8> {
    h::frame(&Message::Data {
        protocol: CHAT,
        payload,
    })
}

fn connected_events(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::Connected { .. }))
        .count()
}

#[test]
fn arcs_both_ways_share_one_connection() {
    let mut net = h::network(1, 2, 1);
    let (a, b) = (net.peer(0), net.peer(1));
    h::connect(&mut net, 0, 1).unwrap();
    // B adds the reverse arc over the same connection: no handshake.
    h::open_arc(&mut net, 1, 0).unwrap();
    assert_eq!((out_count(&net, 0, 1), in_count(&net, 0, 1)), (1, 1));
    assert_eq!((out_count(&net, 1, 0), in_count(&net, 1, 0)), (1, 1));
    let s = snap(&net, 0);
    assert_eq!(s.neighbours.len(), 1);
    assert_eq!((s.neighbours[0].inview, s.neighbours[0].outview), (1, 1));
    let arc = |peer, direction| Event::ArcOpened {
        overlay: O,
        peer,
        direction,
    };
    assert_eq!(
        net.events(0),
        vec![
            Event::Connected { peer: b },
            arc(b, Direction::Outgoing),
            arc(b, Direction::Incoming)
        ]
    );
    assert_eq!(
        net.events(1),
        vec![
            Event::Connected { peer: a },
            arc(a, Direction::Incoming),
            arc(a, Direction::Outgoing)
        ]
    );
    assert_eq!(assert_consistent(&net), 2);
}

#[test]
fn duplicate_arcs_are_counted_and_reported_once_each() {
    let mut net = h::network(2, 2, 1);
    h::connect(&mut net, 0, 1).unwrap();
    h::open_arc(&mut net, 0, 1).unwrap();
    h::open_arc(&mut net, 0, 1).unwrap();
    assert_eq!((out_count(&net, 0, 1), in_count(&net, 1, 0)), (3, 3));
    let events = net.events(1);
    let opened = events
        .iter()
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
    assert_eq!(connected_events(&events), 1, "duplicates cost no handshake");
    assert_eq!(assert_consistent(&net), 3);
}

#[test]
fn closing_an_arc_updates_the_remote_inview() {
    let mut net = h::network(3, 2, 1);
    let a = net.peer(0);
    h::connect(&mut net, 0, 1).unwrap();
    h::open_arc(&mut net, 0, 1).unwrap();
    net.events(1);
    h::close_arc(&mut net, 0, 1).unwrap();
    assert_eq!(in_count(&net, 1, 0), 1);
    assert_eq!(
        net.events(1),
        vec![Event::ArcClosed {
            overlay: O,
            peer: a,
            direction: Direction::Incoming,
            reason: ArcCloseReason::Closed
        }]
    );
    // Closing an arc that does not exist is an error, not a corruption.
    h::close_arc(&mut net, 0, 1).unwrap();
    let b = net.peer(1);
    assert_eq!(h::close_arc(&mut net, 0, 1), Err(ArcError::NoSuchArc(b)));
    assert_eq!(in_count(&net, 1, 0), 0);
    assert_eq!(assert_consistent(&net), 0);
    assert_eq!(violations(&net, 1), 0);
}

#[test]
fn a_connection_without_arcs_lingers_exactly_and_is_reused() {
    let mut net = h::network(4, 2, 1);
    let (a, b) = (net.peer(0), net.peer(1));
    let linger = test_config().linger;
    h::connect(&mut net, 0, 1).unwrap();
    h::close_arc(&mut net, 0, 1).unwrap();
    assert!(snap(&net, 0).neighbours[0].lingering);
    assert!(snap(&net, 1).neighbours[0].lingering);

    // Within the linger time, a new arc reuses the connection.
    net.run_for(linger / 2);
    h::open_arc(&mut net, 0, 1).unwrap();
    assert_eq!(in_count(&net, 1, 0), 1);
    assert!(!snap(&net, 0).neighbours[0].lingering);
    assert_eq!(connected_events(&net.events(0)), 1);

    // The linger runs from the last arc's close, to the nanosecond.
    h::close_arc(&mut net, 0, 1).unwrap();
    net.events(0);
    net.events(1);
    net.run_for(linger - Duration::from_millis(1) - NS);
    assert!(net.events(0).is_empty());
    net.run_for(NS);
    assert_eq!(
        net.events(0),
        vec![Event::Disconnected {
            peer: b,
            reason: "no arcs left after linger".into()
        }]
    );
    // B's own linger, which began one hop later, ends as A's Close arrives.
    net.drive();
    let events = net.events(1);
    assert!(
        matches!(events.as_slice(), [Event::Disconnected { peer, .. }] if *peer == a),
        "{events:?}"
    );
    assert!(snap(&net, 0).neighbours.is_empty());
    assert!(snap(&net, 1).neighbours.is_empty());
    assert_eq!(h::open_arc(&mut net, 0, 1), Err(ArcError::NotConnected(b)));
    assert!(!net.inject_frame(0, 1, data(b"lost".to_vec())));

    // A new arc after that needs a new handshake; data takes the new
    // connection.
    h::connect(&mut net, 0, 1).unwrap();
    assert_eq!(connected_events(&net.events(0)), 1);
    net.events(1);
    assert!(net.inject_frame(0, 1, data(b"two".to_vec())));
    net.drive();
    assert_eq!(
        net.events(1),
        vec![Event::Message {
            from: a,
            protocol: CHAT,
            payload: b"two".to_vec().into()
        }]
    );
}

#[test]
fn simultaneous_dials_end_with_one_connection() {
    for seeds in [(1, 2), (2, 1), (5, 9), (9, 5)] {
        let mut net = Network::new(seeds.0 + 10 * seeds.1);
        let a = h::add(&mut net, seeds.0, test_config());
        let b = h::add(&mut net, seeds.1, test_config());
        let ta = net.connect(a, b, Some(O));
        let tb = net.connect(b, a, Some(O));
        net.drive();
        assert_eq!(net.take_done(a, ta), Some(Completion::Connect(Ok(()))));
        assert_eq!(net.take_done(b, tb), Some(Completion::Connect(Ok(()))));
        assert_eq!(connected_events(&net.events(a)), 1);
        assert_eq!(connected_events(&net.events(b)), 1);
        for (x, y) in [(a, b), (b, a)] {
            assert_eq!((out_count(&net, x, y), in_count(&net, x, y)), (1, 1));
            let s = snap(&net, x);
            assert_eq!((s.neighbours.len(), s.handshakes), (1, 0));
        }
        assert_eq!(assert_consistent(&net), 2);
    }
}

#[test]
fn crash_events_are_one_per_arc_occurrence() {
    let mut net = h::network(6, 2, 1);
    let b = net.peer(1);
    h::connect(&mut net, 0, 1).unwrap();
    h::open_arc(&mut net, 0, 1).unwrap();
    h::open_arc(&mut net, 0, 1).unwrap();
    h::open_arc(&mut net, 1, 0).unwrap();
    h::open_arc(&mut net, 1, 0).unwrap();
    net.events(0);
    net.crash(1);
    net.drive();
    let events = net.events(0);
    let closed = |direction| {
        events
            .iter()
            .filter(|e| {
                matches!(e, Event::ArcClosed { peer, direction: d, reason: ArcCloseReason::PeerDown(_), .. }
                    if *peer == b && *d == direction)
            })
            .count()
    };
    assert_eq!(
        (closed(Direction::Outgoing), closed(Direction::Incoming)),
        (3, 2)
    );
    assert_eq!(events.len(), 6);
    assert!(matches!(events[5], Event::Disconnected { peer, .. } if peer == b));
    assert_eq!(assert_consistent(&net), 0);
}

#[test]
fn a_silent_remote_is_detected_at_the_idle_timeout() {
    let mut net = h::network(7, 2, 1);
    h::connect(&mut net, 0, 1).unwrap();
    net.events(0);
    // Pull the cable: no close, just silence (the pings are lost too).
    net.cut(0, 1);
    // A last heard from B when the connection came up, 1 ms ago (the
    // ArcOpen's hop); it pings at 3 s and gives up at 9 s.
    let idle = test_config().idle_timeout;
    net.run_for(idle - Duration::from_millis(1) - NS);
    assert!(net.events(0).is_empty());
    assert_eq!(snap(&net, 0).neighbours.len(), 1);
    net.run_for(NS);
    let events = net.events(0);
    assert!(
        matches!(
            events.as_slice(),
            [
                Event::ArcClosed {
                    reason: ArcCloseReason::PeerDown(_),
                    direction: Direction::Outgoing,
                    ..
                },
                Event::Disconnected { .. }
            ]
        ),
        "{events:?}"
    );
}

#[test]
fn a_handshake_that_never_completes_times_out_exactly() {
    let mut net = h::network(8, 2, 1);
    net.set_links(LinkConfig {
        loss: 1.0,
        ..LinkConfig::default()
    });
    let ticket = net.connect(0, 1, Some(O));
    net.run_for(test_config().handshake_timeout - NS);
    assert_eq!(net.take_done(0, ticket), None);
    assert_eq!(snap(&net, 0).handshakes, 1);
    net.run_for(NS);
    assert_eq!(
        net.take_done(0, ticket),
        Some(Completion::Connect(Err(ConnectError::Timeout)))
    );
    assert_eq!(
        net.events(0),
        vec![Event::ConnectFailed {
            overlay: Some(O),
            peer: net.peer(1),
            reason: ConnectError::Timeout
        }]
    );
    let s = snap(&net, 0);
    assert_eq!((s.handshakes, s.waiters), (0, 0));
}

#[test]
fn data_flows_both_ways_tagged_by_protocol() {
    let mut net = h::network(9, 3, 1);
    let (a, b) = (net.peer(0), net.peer(1));
    h::connect(&mut net, 0, 1).unwrap();
    net.events(0);
    net.events(1);
    assert!(net.inject_frame(0, 1, data(b"hello".to_vec())));
    assert!(net.inject_frame(1, 0, data(vec![7; 100_000])));
    net.drive();
    assert_eq!(
        net.events(1),
        vec![Event::Message {
            from: a,
            protocol: CHAT,
            payload: b"hello".to_vec().into()
        }]
    );
    assert_eq!(
        net.events(0),
        vec![Event::Message {
            from: b,
            protocol: CHAT,
            payload: vec![7; 100_000].into()
        }]
    );
    // No connection, no frame.
    assert!(!net.inject_frame(0, 2, data(b"x".to_vec())));
}

#[test]
fn unknown_overlays_and_self_connections_are_refused() {
    let mut net = h::network(10, 2, 1);
    h::connect(&mut net, 0, 1).unwrap();
    let other = ProtocolId::from_name("not-registered");
    let b = net.peer(1);
    assert_eq!(
        net.with_core(0, |core, now| core.open_arc(now, other, b)),
        Err(ArcError::UnknownOverlay(other))
    );
    assert_eq!(h::connect(&mut net, 0, 0), Err(ConnectError::SelfConnect));
    assert_eq!(assert_consistent(&net), 1);
}

#[test]
fn shutdown_closes_arcs_on_the_remote() {
    let mut net = h::network(11, 2, 1);
    let a = net.peer(0);
    h::connect(&mut net, 0, 1).unwrap();
    net.events(1);
    net.with_core(0, |core, now| core.shutdown(now));
    net.drive();
    assert_eq!(
        net.events(1),
        vec![
            Event::ArcClosed {
                overlay: O,
                peer: a,
                direction: Direction::Incoming,
                reason: ArcCloseReason::PeerDown("remote shut down".into())
            },
            Event::Disconnected {
                peer: a,
                reason: "closed by remote".into()
            }
        ]
    );
    assert_eq!(in_count(&net, 1, 0), 0);
    assert!(net.core(0).is_shut_down());
}

#[test]
fn arcs_per_peer_are_bounded_both_ways() {
    let mut net = Network::new(12);
    let config = n2n_core::node::Config {
        max_arcs_per_peer: 3,
        ..test_config()
    };
    h::add(&mut net, 1, config.clone());
    h::add(&mut net, 2, config);
    let b = net.peer(1);
    h::connect(&mut net, 0, 1).unwrap();
    h::open_arc(&mut net, 0, 1).unwrap();
    h::open_arc(&mut net, 0, 1).unwrap();
    assert_eq!(h::open_arc(&mut net, 0, 1), Err(ArcError::TooManyArcs(b)));
    // A neighbour that claims more is counted and refused.
    net.inject_frame(0, 1, h::frame(&Message::ArcOpen { overlay: O }));
    net.drive();
    assert_eq!(in_count(&net, 1, 0), 3);
    assert_eq!(violations(&net, 1), 1);
    assert_eq!(assert_consistent(&net), 3);
}

// ----- a misbehaving neighbour -----

#[test]
fn undecodable_frames_are_counted_and_harmless() {
    let mut net = h::network(13, 2, 1);
    h::connect(&mut net, 0, 1).unwrap();
    let mut trailing = h::frame(&Message::Ping { nonce: 1 });
    trailing.push(0);
    let garbage: [Vec<u8>; 5] = [
        vec![1, 0xff, 0xff, 0xff],
        Vec::new(),
        vec![2, 0, 0],
        trailing,
        vec![1; 3],
    ];
    for g in &garbage {
        net.inject_frame(1, 0, g.clone());
        // The real messages around the garbage still count exactly.
        h::open_arc(&mut net, 1, 0).unwrap();
    }
    assert_eq!(violations(&net, 0), 5);
    assert_eq!(in_count(&net, 0, 1), 5);
    assert_eq!(assert_consistent(&net), 6);
    assert_eq!(snap(&net, 0).neighbours.len(), 1);
}

#[test]
fn closing_arcs_that_do_not_exist_is_counted_and_harmless() {
    let mut net = h::network(14, 2, 1);
    h::connect(&mut net, 0, 1).unwrap();
    let unknown = ProtocolId::from_name("never-heard-of");
    // B holds no arc to A; A holds one to B (which B cannot close).
    for overlay in [O, O, unknown] {
        net.inject_frame(1, 0, h::frame(&Message::ArcClose { overlay }));
    }
    net.drive();
    assert_eq!(violations(&net, 0), 3);
    assert_eq!(assert_consistent(&net), 1);
    assert_eq!((out_count(&net, 0, 1), in_count(&net, 0, 1)), (1, 0));
    assert!(
        net.events(0)
            .iter()
            .all(|e| !matches!(e, Event::ArcClosed { .. }))
    );
}

#[test]
fn arcs_and_messages_of_overlays_not_run_are_counted() {
    let mut net = h::network(15, 2, 1);
    h::connect(&mut net, 0, 1).unwrap();
    let unknown = ProtocolId::from_name("never-heard-of");
    net.inject_frame(1, 0, h::frame(&Message::ArcOpen { overlay: unknown }));
    net.inject_frame(
        1,
        0,
        h::frame(&Message::Overlay {
            overlay: unknown,
            payload: vec![1, 2, 3],
        }),
    );
    net.drive();
    assert_eq!(violations(&net, 0), 2);
    assert!(!snap(&net, 0).views.contains_key(&unknown));
    assert_eq!(assert_consistent(&net), 1);
}

#[test]
fn a_close_from_a_neighbour_ends_the_connection_cleanly() {
    let mut net = h::network(16, 2, 1);
    h::connect(&mut net, 0, 1).unwrap();
    h::open_arc(&mut net, 1, 0).unwrap();
    // B says it closes for idleness while A holds an arc to it: A's arc never
    // reached B, so it failed to open rather than closed by a crash.
    net.inject_frame(
        1,
        0,
        h::frame(&Message::Close {
            reason: CloseReason::Idle,
        }),
    );
    net.drive();
    let b = net.peer(1);
    let events = net.events(0);
    assert!(events.contains(&Event::ArcClosed {
        overlay: O,
        peer: b,
        direction: Direction::Outgoing,
        reason: ArcCloseReason::Closed
    }));
    assert!(events.iter().any(|e| matches!(
        e,
        Event::ConnectFailed { overlay: Some(o), peer, reason: ConnectError::Transport(_) } if *peer == b && *o == O
    )));
    assert!(snap(&net, 0).neighbours.is_empty());
    assert_eq!(assert_consistent(&net), 0);
    assert_eq!(violations(&net, 0), 0);
}

/// Delivers `signal` to node 1 and checks that it started nothing there.
fn refused(net: &mut Network, signal: SignedSignal) {
    net.inject_signal_to(1, signal);
    net.drive();
    let s = snap(net, 1);
    assert_eq!((s.handshakes, s.neighbours.len()), (0, 0));
    assert!(net.events(1).is_empty());
}

#[test]
fn forged_altered_and_misaddressed_signals_start_nothing() {
    let mut net = h::network(17, 3, 1);
    let (a, b, c) = (net.peer(0), net.peer(1), net.peer(2));
    let ka = key(1);
    let offer = h::offer(0, 1);
    // Altered on the way: the signature no longer matches.
    let mut altered = h::signed(&ka, b, 1, Role::Dialer, 0, &offer);
    altered.signal.payload[0] ^= 0x20;
    refused(&mut net, altered);
    // Forged: signed by someone else in A's name.
    let mut forged = h::signed(&key(99), b, 2, Role::Dialer, 0, &offer);
    forged.signal.from = a;
    refused(&mut net, forged);
    // Misaddressed: A's genuine offer to C, handed to B.
    refused(&mut net, h::signed(&ka, c, 3, Role::Dialer, 0, &offer));
    // Too large, whatever the signature.
    let mut big = h::signed(&ka, b, 4, Role::Dialer, 0, &offer);
    big.signal.payload = vec![0; n2n_core::signal::MAX_SIGNAL_PAYLOAD + 1];
    refused(&mut net, big);
    // Genuine but for another transport, or not the first of its session.
    let mut other = h::signed(&ka, b, 5, Role::Dialer, 0, &offer);
    other.signal.transport = "webrtc".into();
    refused(&mut net, other.signal.clone().sign(&ka).unwrap());
    refused(&mut net, h::signed(&ka, b, 6, Role::Dialer, 1, &offer));
    refused(&mut net, h::signed(&ka, b, 7, Role::Acceptor, 0, &offer));
    // None of it kept A and B from connecting.
    h::connect(&mut net, 0, 1).unwrap();
    assert_eq!(assert_consistent(&net), 1);
}

#[test]
fn a_replayed_offer_from_a_neighbour_is_refused_and_the_connection_stays() {
    let mut net = h::network(18, 2, 1);
    let b = net.peer(1);
    h::connect(&mut net, 0, 1).unwrap();
    net.events(1);
    // An offer of A's that B never saw is a fresh dial (A may have lost the
    // connection B holds): B accepts it, and keeps the old connection
    // until the new one is up. Its copy is a replay.
    let replay = h::signed(&key(1), b, 42, Role::Dialer, 0, &h::offer(0, 1));
    net.inject_signal(replay.clone());
    net.inject_signal(replay);
    net.drive();
    let s = snap(&net, 1);
    assert_eq!((s.handshakes, s.neighbours.len(), s.refusals), (1, 1, 1));
    // The dial is never followed up: it times out, the connection stays.
    net.run_for(test_config().handshake_timeout + Duration::from_secs(1));
    let s = snap(&net, 1);
    assert_eq!((s.handshakes, s.neighbours.len()), (0, 1));
    assert_eq!(assert_consistent(&net), 1);
}
