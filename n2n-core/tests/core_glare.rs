//! Races on the harness. Glare when one or both dials are bridged: two
//! peers that dial each other at once, through the server or through a
//! common neighbour, end with one connection, every arc asked for, and no
//! state left, whichever peer id is smaller. An arc opened as the remote's
//! linger ends fails to open, on both sides alike. A shutdown in the middle
//! of a bridge, on any of its three peers, fails it at once.

mod common;

use common::harness::{self as h, assert_consistent, assert_tables_empty, out_count};
use common::{O, test_config};
use n2n_core::harness::Network;
use n2n_core::node::Event;
use n2n_core::node::core::Completion;

/// A and C (keys `ka`, `kc`) both connected to B (key 2).
fn triangle(ka: u64, kc: u64) -> (Network, usize, usize, usize) {
    let mut net = Network::new(ka * 10 + kc);
    let a = h::add(&mut net, ka, test_config());
    let b = h::add(&mut net, 2, test_config());
    let c = h::add(&mut net, kc, test_config());
    h::connect(&mut net, a, b).unwrap();
    h::connect(&mut net, c, b).unwrap();
    for i in [a, b, c] {
        net.events(i);
    }
    (net, a, b, c)
}

const KEYS: [(u64, u64); 4] = [(1, 3), (3, 1), (5, 8), (8, 5)];

fn one_connection(net: &mut Network, a: usize, c: usize) {
    let peer = net.peer(c);
    let connected = net
        .events(a)
        .iter()
        .filter(|e| matches!(e, Event::Connected { peer: p } if *p == peer))
        .count();
    assert_eq!(connected, 1);
}

#[test]
fn a_bridged_dial_meets_a_direct_one() {
    for (ka, kc) in KEYS {
        let (mut net, a, b, c) = triangle(ka, kc);
        let bridge = h::start_bridge(&mut net, b, a, c);
        // C dials A through the server as B's order leaves.
        let direct = net.connect(c, a, Some(O));
        net.drive();
        assert_eq!(h::bridge_result(&mut net, b, bridge), Some(Ok(())));
        assert_eq!(net.take_done(c, direct), Some(Completion::Connect(Ok(()))));
        assert_eq!((out_count(&net, a, c), out_count(&net, c, a)), (1, 1));
        one_connection(&mut net, a, c);
        one_connection(&mut net, c, a);
        net.run_for(test_config().bridge_timeout);
        assert_tables_empty(&net, &[a, b, c]);
        assert_eq!(assert_consistent(&net), 4, "keys {ka}, {kc}");
    }
}

#[test]
fn two_bridged_dials_meet() {
    for (ka, kc) in KEYS {
        let (mut net, a, b, c) = triangle(ka, kc);
        let one = h::start_bridge(&mut net, b, a, c);
        let other = h::start_bridge(&mut net, b, c, a);
        net.drive();
        assert_eq!(h::bridge_result(&mut net, b, one), Some(Ok(())));
        assert_eq!(h::bridge_result(&mut net, b, other), Some(Ok(())));
        assert_eq!((out_count(&net, a, c), out_count(&net, c, a)), (1, 1));
        one_connection(&mut net, a, c);
        one_connection(&mut net, c, a);
        net.run_for(test_config().bridge_timeout);
        assert_tables_empty(&net, &[a, b, c]);
        assert_eq!(assert_consistent(&net), 4, "keys {ka}, {kc}");
    }
}

#[test]
fn concurrent_bridges_on_jittery_links_add_one_arc_each() {
    use n2n_core::harness::LinkConfig;
    use n2n_core::time::Duration;
    use rand::{Rng, SeedableRng};
    for seed in 0..4 {
        let n = 30;
        let mut net = h::network(seed, n, 300);
        for i in 1..n {
            h::connect(
                &mut net,
                i,
                rand_chacha::ChaCha8Rng::seed_from_u64(seed + i as u64).random_range(0..i),
            )
            .unwrap();
        }
        net.set_links(LinkConfig {
            jitter: Duration::from_millis(5),
            ..LinkConfig::default()
        });
        let before = assert_consistent(&net);
        // Every node bridges two random neighbours of its own, all at once.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut tickets = Vec::new();
        for round in 0..4 {
            for b in 0..n {
                let s = h::snap(&net, b);
                if s.neighbours.len() < 2 {
                    continue;
                }
                let x = s.neighbours[rng.random_range(0..s.neighbours.len())].peer;
                let y = s.neighbours[rng.random_range(0..s.neighbours.len())].peer;
                if x != y {
                    tickets.push((b, h::start_bridge_peers(&mut net, b, x, y)));
                }
            }
            net.run_for(Duration::from_millis(2 * round + 1));
        }
        net.run_for(test_config().bridge_timeout * 2);
        let mut ok = 0;
        for (b, t) in tickets {
            match h::bridge_result(&mut net, b, t) {
                Some(Ok(())) => ok += 1,
                Some(Err(_)) => {}
                None => panic!("a bridge never finished"),
            }
        }
        assert!(ok > 0);
        assert_eq!(assert_consistent(&net), before + ok, "seed {seed}");
        assert_tables_empty(&net, &(0..n).collect::<Vec<_>>());
    }
}

#[test]
fn an_arc_opened_as_the_remote_linger_ends_fails_to_open() {
    use n2n_core::Direction;
    use n2n_core::node::ConnectError;
    use n2n_core::overlay::ArcCloseReason;
    use n2n_core::time::Duration;
    let mut net = h::network(20, 2, 1);
    let (a, b) = (net.peer(0), net.peer(1));
    h::connect(&mut net, 0, 1).unwrap();
    // A closes its arc at T; its linger ends at T + 2 s. B opens an arc
    // half a hop before that: the ArcOpen arrives after A closed.
    h::close_arc(&mut net, 0, 1).unwrap();
    net.events(0);
    net.events(1);
    let hop = Duration::from_millis(1);
    net.run_for(test_config().linger - hop - hop / 2);
    let peer = net.peer(0);
    net.with_core(1, |core, now| core.open_arc(now, O, peer))
        .unwrap();
    net.drive();
    assert_eq!(
        net.events(0),
        vec![Event::Disconnected {
            peer: b,
            reason: "no arcs left after linger".into()
        }]
    );
    let events = net.events(1);
    assert_eq!(events.len(), 4, "{events:?}");
    assert_eq!(
        events[..2],
        [
            Event::ArcOpened {
                overlay: O,
                peer: a,
                direction: Direction::Outgoing
            },
            Event::ArcClosed {
                overlay: O,
                peer: a,
                direction: Direction::Outgoing,
                reason: ArcCloseReason::Closed
            }
        ]
    );
    assert!(matches!(&events[2], Event::Disconnected { peer, .. } if *peer == a));
    assert!(matches!(
        &events[3],
        Event::ConnectFailed { overlay: Some(o), peer, reason: ConnectError::Transport(_) } if *peer == a && *o == O
    ));
    assert_eq!(assert_consistent(&net), 0);
    assert_eq!(h::violations(&net, 0), 0);
}

#[test]
fn the_same_bridge_twice_at_once_shares_one_handshake() {
    for (ka, kc) in KEYS {
        let (mut net, a, b, c) = triangle(ka, kc);
        let (pb, pc) = (net.peer(b), net.peer(c));
        let first = h::start_bridge(&mut net, b, a, c);
        let second = h::start_bridge(&mut net, b, a, c);
        // A asks for two more itself, meanwhile.
        let asks: Vec<_> = (0..2)
            .map(|_| {
                let t = net.ticket(a);
                net.with_core(a, |core, now| core.request_bridge(now, O, pb, pc, Some(t)));
                t
            })
            .collect();
        net.drive();
        assert_eq!(h::bridge_result(&mut net, b, first), Some(Ok(())));
        assert_eq!(h::bridge_result(&mut net, b, second), Some(Ok(())));
        for t in asks {
            assert_eq!(net.take_done(a, t), Some(Completion::Connect(Ok(()))));
        }
        assert_eq!(out_count(&net, a, c), 4);
        one_connection(&mut net, a, c);
        assert_eq!(h::snap(&net, b).relayed_signals, 2, "one handshake");
        assert_tables_empty(&net, &[a, b, c]);
        assert_eq!(assert_consistent(&net), 6, "keys {ka}, {kc}");
    }
}

#[test]
fn a_shutdown_mid_bridge_fails_it_at_once_everywhere() {
    use n2n_core::time::Duration;
    use n2n_core::wire::BridgeFailure;
    for who in 0..3 {
        let (mut net, a, b, c) = triangle(1, 3);
        let pa = net.peer(a);
        net.cut(a, c);
        let ticket = h::start_bridge(&mut net, b, a, c);
        net.run_for(Duration::from_millis(50));
        let start = net.now();
        net.with_core(who, |core, now| core.shutdown(now));
        net.drive();
        let expected = match who {
            0 => BridgeFailure::PeerGone(pa),
            1 => BridgeFailure::ShuttingDown,
            _ => BridgeFailure::PeerGone(net.peer(c)),
        };
        assert_eq!(h::bridge_result(&mut net, b, ticket), Some(Err(expected)));
        assert!(net.now() - start <= Duration::from_millis(2));
        assert_tables_empty(&net, &[a, b, c]);
        // Only the arc between the two that stay is left.
        assert_eq!(assert_consistent(&net), u32::from(who != b), "{who}");
    }
}
