//! The bridge through the node core on the deterministic harness: success,
//! reuse of a connection, every failure path and bound, exactly and on
//! virtual time; a tampering relay and a neighbour that breaks the bridge
//! protocol; and rings of 20 and 200 peers whose arc tables stay exact. The
//! tokio versions (`node_bridge.rs`) now test the driver.

mod common;

use common::harness::{
    self as h, assert_consistent, assert_tables_empty, in_count, out_count, snap,
};
use common::{O, key, test_config};
use n2n_core::Direction;
use n2n_core::harness::Network;
use n2n_core::node::{Config, ConnectError, Event};
use n2n_core::time::Duration;
use n2n_core::wire::{self, BridgeFailure, BridgeMessage, Message, ProtocolId};
use rand::{Rng, SeedableRng};

const A: usize = 0;
const B: usize = 1;
const C: usize = 2;

/// A, B, C (keys 1, 2, 3) with A–B and B–C connected, one arc each way.
fn line(seed: u64) -> Network {
    line_with(seed, test_config())
}

fn line_with(seed: u64, b_config: Config) -> Network {
    let mut net = Network::new(seed);
    h::add(&mut net, 1, test_config());
    h::add(&mut net, 2, b_config);
    h::add(&mut net, 3, test_config());
    h::connect(&mut net, A, B).unwrap();
    h::connect(&mut net, C, B).unwrap();
    h::open_arc(&mut net, B, A).unwrap();
    h::open_arc(&mut net, B, C).unwrap();
    for i in 0..3 {
        net.events(i);
    }
    net
}

fn bridge_frame(message: BridgeMessage) -> Vec<u8> {
    h::frame(&Message::Bridge(Box::new(message)))
}

#[test]
fn b_bridges_a_to_c_over_a_direct_connection() {
    let mut net = line(1);
    let (a, c) = (net.peer(A), net.peer(C));
    assert_eq!(h::bridge(&mut net, B, A, C), Ok(()));
    assert_eq!((out_count(&net, A, C), in_count(&net, C, A)), (1, 1));
    assert_eq!(
        net.events(A),
        vec![
            Event::Connected { peer: c },
            Event::ArcOpened {
                overlay: O,
                peer: c,
                direction: Direction::Outgoing
            }
        ]
    );
    // A and C now talk over their own connection.
    let chat = ProtocolId::from_name("chat");
    let frame = h::frame(&Message::Data {
        protocol: chat,
        payload: b"direct".to_vec(),
    });
    assert!(net.inject_frame(A, C, frame));
    net.drive();
    assert!(net.events(C).contains(&Event::Message {
        from: a,
        protocol: chat,
        payload: b"direct".to_vec().into()
    }));
    let sb = snap(&net, B);
    assert_eq!(sb.relayed_signals, 2, "the offer and the answer");
    assert_eq!((sb.bridges_ok, sb.bridges_failed), (1, 0));
    assert_tables_empty(&net, &[A, B, C]);
    assert_eq!(assert_consistent(&net), 5);
}

#[test]
fn an_existing_connection_only_gets_an_arc() {
    let mut net = line(2);
    h::bridge(&mut net, B, A, C).unwrap();
    net.events(A);
    let relayed = snap(&net, B).relayed_signals;
    h::bridge(&mut net, B, A, C).unwrap();
    assert_eq!((out_count(&net, A, C), in_count(&net, C, A)), (2, 2));
    assert_eq!(snap(&net, B).relayed_signals, relayed);
    let events = net.events(A);
    assert_eq!(events.len(), 1, "one arc, no handshake: {events:?}");
    assert_eq!(snap(&net, B).bridges_ok, 2);
}

#[test]
fn bridging_to_the_bridge_itself_reverses_an_arc() {
    let mut net = line(3);
    h::bridge(&mut net, B, A, B).unwrap();
    assert_eq!((out_count(&net, A, B), in_count(&net, B, A)), (2, 2));
    assert_eq!(snap(&net, B).relayed_signals, 0);
    assert_eq!(assert_consistent(&net), 5);
}

#[test]
fn a_asks_b_to_connect_it_to_c() {
    let mut net = line(4);
    let (b, c) = (net.peer(B), net.peer(C));
    assert_eq!(h::request_bridge(&mut net, A, b, c), Ok(()));
    assert_eq!((out_count(&net, A, C), in_count(&net, C, A)), (1, 1));
    // A stranger to B cannot be reached through B.
    let stranger = key(99).peer_id();
    assert_eq!(
        h::request_bridge(&mut net, A, b, stranger),
        Err(ConnectError::Bridge(BridgeFailure::NotNeighbour(stranger)))
    );
    assert_tables_empty(&net, &[A, B, C]);
    assert_eq!(assert_consistent(&net), 5);
}

#[test]
fn bridging_peers_that_are_not_neighbours_fails() {
    let mut net = line(5);
    let (a, c) = (net.peer(A), net.peer(C));
    let stranger = key(99).peer_id();
    assert_eq!(
        h::bridge_peers(&mut net, B, a, stranger),
        Err(BridgeFailure::NotNeighbour(stranger))
    );
    assert_eq!(
        h::bridge_peers(&mut net, B, stranger, c),
        Err(BridgeFailure::NotNeighbour(stranger))
    );
    assert_eq!(
        h::bridge_peers(&mut net, B, a, a),
        Err(BridgeFailure::SelfBridge)
    );
    assert_tables_empty(&net, &[A, B, C]);
    assert_eq!(snap(&net, B).bridges_failed, 3);
}

#[test]
fn a_handshake_that_hangs_fails_with_a_timeout_everywhere() {
    let mut net = line(6);
    let c = net.peer(C);
    net.cut(A, C);
    let start = net.now();
    let ticket = h::start_bridge(&mut net, B, A, C);
    // A's handshake starts when the ConnectTo arrives (one hop) and gives up
    // after the handshake timeout; its result reaches B one hop later.
    let ns = Duration::from_nanos(1);
    let hop = Duration::from_millis(1);
    net.run_for(hop + test_config().handshake_timeout - ns);
    assert_eq!(snap(&net, A).handshakes, 1);
    assert!(net.events(A).is_empty());
    net.run_for(ns);
    assert_eq!(
        net.events(A),
        vec![Event::ConnectFailed {
            overlay: Some(O),
            peer: c,
            reason: ConnectError::Timeout
        }]
    );
    net.run_for(hop - ns);
    assert_eq!(h::bridge_result(&mut net, B, ticket), None);
    net.run_for(ns);
    assert_eq!(
        h::bridge_result(&mut net, B, ticket),
        Some(Err(BridgeFailure::Timeout))
    );
    assert_eq!(net.now() - start, test_config().handshake_timeout + 2 * hop);
    net.run_for(test_config().bridge_timeout);
    assert_tables_empty(&net, &[A, B, C]);
    assert_eq!(assert_consistent(&net), 4);
}

#[test]
fn c_crashed_mid_handshake_is_reported_to_a_and_b() {
    let mut net = line(7);
    let c = net.peer(C);
    net.cut(A, C);
    let ticket = h::start_bridge(&mut net, B, A, C);
    net.run_for(Duration::from_millis(100));
    assert_eq!(snap(&net, A).handshakes, 1);
    net.crash(C);
    net.drive();
    assert_eq!(
        h::bridge_result(&mut net, B, ticket),
        Some(Err(BridgeFailure::PeerGone(c)))
    );
    assert_eq!(
        net.events(A),
        vec![Event::ConnectFailed {
            overlay: Some(O),
            peer: c,
            reason: ConnectError::Bridge(BridgeFailure::PeerGone(c))
        }]
    );
    assert_tables_empty(&net, &[A, B]);
    assert_eq!(assert_consistent(&net), 2);
}

#[test]
fn b_crashed_mid_handshake_is_reported_to_a() {
    let mut net = line(8);
    let (b, c) = (net.peer(B), net.peer(C));
    net.cut(A, C);
    h::start_bridge(&mut net, B, A, C);
    net.run_for(Duration::from_millis(100));
    assert_eq!(snap(&net, A).handshakes, 1);
    net.crash(B);
    net.drive();
    let events = net.events(A);
    assert!(
        events.contains(&Event::ConnectFailed {
            overlay: Some(O),
            peer: c,
            reason: ConnectError::Bridge(BridgeFailure::PeerGone(b))
        }),
        "{events:?}"
    );
    net.run_for(test_config().bridge_timeout);
    assert_tables_empty(&net, &[A, C]);
    assert_eq!(assert_consistent(&net), 0);
}

/// Flips one byte of every relayed signal's payload.
fn flip_relayed_signals(frame: &[u8]) -> Vec<Vec<u8>> {
    if let Ok(Message::Bridge(m)) = wire::decode(frame)
        && let BridgeMessage::Relay {
            job,
            from,
            to,
            mut signal,
        } = *m
    {
        if let Some(b) = signal.signal.payload.first_mut() {
            *b ^= 0x20;
        }
        return vec![bridge_frame(BridgeMessage::Relay {
            job,
            from,
            to,
            signal,
        })];
    }
    vec![frame.to_vec()]
}

#[test]
fn a_tampering_relay_causes_a_rejection_not_a_connection() {
    let mut net = line(9);
    let c = net.peer(C);
    net.set_tamper(B, Some(Box::new(flip_relayed_signals)));
    assert!(matches!(
        h::bridge(&mut net, B, A, C),
        Err(BridgeFailure::SignalRejected(_))
    ));
    let events = net.events(A);
    assert!(
        matches!(
            events.as_slice(),
            [Event::ConnectFailed {
                overlay: Some(o),
                peer,
                reason: ConnectError::Bridge(BridgeFailure::SignalRejected(_)),
            }] if *peer == c && *o == O
        ),
        "{events:?}"
    );
    assert_eq!((out_count(&net, A, C), in_count(&net, C, A)), (0, 0));
    assert!(!snap(&net, A).is_connected(&c));
    assert_tables_empty(&net, &[A, B, C]);
    assert_eq!(assert_consistent(&net), 4);
}

#[test]
fn garbage_frames_from_the_relay_are_counted_and_harmless() {
    let mut net = line(10);
    // B writes a garbage frame before each of its real ones.
    net.set_tamper(
        B,
        Some(Box::new(|frame: &[u8]| {
            vec![vec![1, 0xff, 0xff, 0xff], frame.to_vec()]
        })),
    );
    h::open_arc(&mut net, B, A).unwrap();
    h::bridge(&mut net, B, A, C).unwrap();
    let s = snap(&net, A);
    // The ArcOpen, the ConnectTo, the answer relayed: three real frames.
    assert_eq!(s.protocol_violations, 3);
    assert_eq!((in_count(&net, A, B), out_count(&net, A, C)), (2, 1));
    assert_eq!(assert_consistent(&net), 6);
    assert_tables_empty(&net, &[A, B, C]);
}

#[test]
fn relay_jobs_per_neighbour_are_bounded() {
    let config = Config {
        max_jobs_per_neighbour: 2,
        ..test_config()
    };
    let mut net = Network::new(11);
    let a = h::add(&mut net, 1, test_config());
    let b = h::add(&mut net, 2, config);
    h::connect(&mut net, a, b).unwrap();
    let targets: Vec<usize> = (10..13)
        .map(|seed| {
            let t = h::add(&mut net, seed, test_config());
            h::connect(&mut net, t, b).unwrap();
            net.cut(a, t);
            t
        })
        .collect();
    let tickets: Vec<_> = targets[..2]
        .iter()
        .map(|&t| h::start_bridge(&mut net, b, a, t))
        .collect();
    net.run_for(Duration::from_millis(100));
    assert_eq!(snap(&net, b).relay_jobs, 2);
    assert_eq!(
        h::bridge(&mut net, b, a, targets[2]),
        Err(BridgeFailure::TooManyJobs)
    );
    net.run_for(test_config().bridge_timeout);
    for t in tickets {
        assert_eq!(
            h::bridge_result(&mut net, b, t),
            Some(Err(BridgeFailure::Timeout))
        );
    }
    assert_tables_empty(&net, &[a, b]);
    assert_eq!(assert_consistent(&net), 4);
}

/// `n` peers: a chain through the server, peer 0 walks along it by
/// bridging, the ring closes, then `extra` random bridges. Asserts the arc
/// tables are exact.
fn ring(n: usize, extra: u32, seed: u64) {
    let mut net = h::network(seed, n, 100);
    for i in 0..n - 1 {
        h::connect(&mut net, i, i + 1).unwrap();
    }
    // Peer 0 walks along the chain by bridging only: i bridges 0 → i+1.
    for i in 1..n - 1 {
        assert_eq!(h::bridge(&mut net, i, 0, i + 1), Ok(()));
    }
    // Close the ring: 0 makes the last peer open an arc to 0 itself.
    assert_eq!(h::bridge(&mut net, 0, n - 1, 0), Ok(()));
    // Random extra arcs: a random peer bridges two of its random neighbours.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut done = 0;
    while done < extra {
        let b = rng.random_range(0..n);
        let s = snap(&net, b);
        if s.neighbours.len() < 2 {
            continue;
        }
        let x = s.neighbours[rng.random_range(0..s.neighbours.len())].peer;
        let y = s.neighbours[rng.random_range(0..s.neighbours.len())].peer;
        if x == y {
            continue;
        }
        assert_eq!(h::bridge_peers(&mut net, b, x, y), Ok(()));
        done += 1;
    }
    let arcs = assert_consistent(&net);
    assert_eq!(arcs as usize, (n - 1) + (n - 2) + 1 + extra as usize);
    assert_tables_empty(&net, &(0..n).collect::<Vec<_>>());
    let relayed: u64 = (0..n).map(|i| snap(&net, i).relayed_signals).sum();
    assert!(relayed >= 2 * (n as u64 - 2), "{relayed}");
    assert!((0..n).all(|i| snap(&net, i).protocol_violations == 0));
}

#[test]
fn twenty_peers_bridged_into_a_ring_keep_exact_arc_counts() {
    ring(20, 60, 7);
}

#[test]
fn two_hundred_peers_bridged_into_a_ring_keep_exact_arc_counts() {
    ring(200, 600, 8);
}

// ----- a neighbour that breaks the bridge protocol -----

#[test]
fn relays_that_break_the_job_are_counted_and_fail_it() {
    let mut net = line(12);
    let d = h::add(&mut net, 4, test_config());
    h::connect(&mut net, d, B).unwrap();
    let (a, c) = (net.peer(A), net.peer(C));
    let stranger = key(99).peer_id();
    let jobs = h::record_jobs(&mut net, B);
    net.cut(A, C);
    let ticket = h::start_bridge(&mut net, B, A, C);
    net.run_for(Duration::from_millis(100));
    let job = jobs.lock().unwrap()[0];
    let signal = h::signed(&key(1), c, 1, n2n_core::signal::Role::Dialer, 5, b"x");
    // D is not part of the job: counted, the job goes on.
    let relay = |from, to| {
        bridge_frame(BridgeMessage::Relay {
            job,
            from,
            to,
            signal: signal.clone(),
        })
    };
    net.inject_frame(d, B, relay(net.peer(d), c));
    net.drive();
    assert_eq!(snap(&net, B).protocol_violations, 1);
    assert_eq!(snap(&net, B).relay_jobs, 1);
    // A names a stranger as the recipient: counted, and the job fails.
    net.inject_frame(A, B, relay(a, stranger));
    net.drive();
    assert_eq!(snap(&net, B).protocol_violations, 2);
    assert!(matches!(
        h::bridge_result(&mut net, B, ticket),
        Some(Err(BridgeFailure::SignalRejected(_)))
    ));
    assert_eq!(snap(&net, B).relay_jobs, 0);
    net.run_for(test_config().bridge_timeout);
    assert_tables_empty(&net, &[A, B, C, d]);
    assert_eq!(assert_consistent(&net), 5);
}

#[test]
fn requests_and_relays_naming_non_neighbours_are_refused() {
    let mut net = line(13);
    let a = net.peer(A);
    let stranger = key(99).peer_id();
    net.inject_frame(
        A,
        B,
        bridge_frame(BridgeMessage::BridgeRequest {
            request: 1,
            overlay: O,
            to: stranger,
        }),
    );
    // A relay for a job that does not exist, towards a stranger.
    net.inject_frame(
        A,
        B,
        bridge_frame(BridgeMessage::Relay {
            job: 7,
            from: a,
            to: stranger,
            signal: h::signed(
                &key(1),
                stranger,
                1,
                n2n_core::signal::Role::Dialer,
                0,
                b"x",
            ),
        }),
    );
    net.drive();
    let sb = snap(&net, B);
    assert_eq!((sb.relayed_signals, sb.bridges_failed), (0, 1));
    assert_eq!(
        net.events(B),
        vec![Event::BridgeDone {
            job: 0,
            overlay: O,
            from: a,
            to: stranger,
            result: Err(BridgeFailure::NotNeighbour(stranger))
        }]
    );
    assert_tables_empty(&net, &[A, B, C]);
    assert_eq!(assert_consistent(&net), 4);
}

#[test]
fn connect_to_orders_that_cannot_be_served_fail_cleanly() {
    let mut net = line(14);
    let a = net.peer(A);
    let stranger = key(99).peer_id();
    let order = |job, overlay, to| {
        bridge_frame(BridgeMessage::ConnectTo {
            job,
            overlay,
            to,
            request: None,
        })
    };
    // To A itself, in an overlay A does not run, then twice the same job to
    // a peer B cannot relay to.
    net.inject_frame(B, A, order(1, O, a));
    net.inject_frame(B, A, order(2, ProtocolId::from_name("other"), stranger));
    net.inject_frame(B, A, order(3, O, stranger));
    net.inject_frame(B, A, order(3, O, stranger));
    net.drive();
    assert_eq!(snap(&net, A).protocol_violations, 1, "the repeated job");
    // B knows no job 3: A's dial fails, nothing is left.
    let events = net.events(A);
    assert!(
        matches!(
            events.as_slice(),
            [Event::ConnectFailed {
                overlay: Some(o),
                peer,
                reason: ConnectError::Bridge(BridgeFailure::UnknownJob),
            }] if *peer == stranger && *o == O
        ),
        "{events:?}"
    );
    assert_tables_empty(&net, &[A, B, C]);
    assert_eq!(assert_consistent(&net), 4);
}

#[test]
fn relayed_signals_that_fail_verification_start_nothing() {
    let mut net = line(15);
    let (a, b) = (net.peer(A), net.peer(B));
    let c = net.peer(C);
    let kc = key(3);
    let offer = h::offer(2, 1);
    let relay = |job, from, signal| {
        bridge_frame(BridgeMessage::Relay {
            job,
            from,
            to: a,
            signal,
        })
    };
    // C's offer with an altered payload; C's offer said to come from B; C's
    // offer addressed to B; all through B.
    let mut altered = h::signed(&kc, a, 1, n2n_core::signal::Role::Dialer, 0, &offer);
    altered.signal.payload[0] ^= 1;
    let genuine = h::signed(&kc, a, 2, n2n_core::signal::Role::Dialer, 0, &offer);
    let misaddressed = h::signed(&kc, b, 3, n2n_core::signal::Role::Dialer, 0, &offer);
    net.inject_frame(B, A, relay(11, c, altered));
    net.inject_frame(B, A, relay(12, b, genuine));
    net.inject_frame(B, A, relay(13, c, misaddressed));
    net.drive();
    let sa = snap(&net, A);
    assert_eq!((sa.handshakes, sa.bridge_endpoints), (0, 0));
    assert_eq!(sa.neighbours.len(), 1);
    assert!(net.events(A).is_empty());
    assert_tables_empty(&net, &[A, B, C]);
    assert_eq!(assert_consistent(&net), 4);
}

#[test]
fn results_and_failures_of_unknown_jobs_are_ignored() {
    let mut net = line(16);
    for message in [
        BridgeMessage::BridgeResult {
            job: 1,
            result: Ok(()),
        },
        BridgeMessage::RelayFailed {
            job: 2,
            reason: BridgeFailure::Timeout,
        },
        BridgeMessage::BridgeRefused {
            request: 3,
            reason: BridgeFailure::TooManyJobs,
        },
    ] {
        net.inject_frame(A, B, bridge_frame(message.clone()));
        net.inject_frame(B, A, bridge_frame(message));
    }
    net.drive();
    for i in [A, B] {
        let s = snap(&net, i);
        assert_eq!((s.bridges_ok, s.bridges_failed), (0, 0));
        assert!(net.events(i).is_empty());
    }
    assert_tables_empty(&net, &[A, B, C]);
    assert_eq!(assert_consistent(&net), 4);
}
