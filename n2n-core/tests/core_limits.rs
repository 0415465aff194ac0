//! Limits of the node core on the harness: `max_peers` counts handshakes in
//! flight, and rejected signals are counted as violations.

mod common;

use common::harness::{self as h};
use common::{key, test_config};
use n2n_core::harness::Network;
use n2n_core::node::Config;
use n2n_core::signal::Role;

/// Node `x` with `max_peers = 1` and two handshakes in flight at once, its
/// own dials (`incoming == false`) or the others' dials to it.
fn two_dials_at_once(seed: u64, incoming: bool) {
    let mut net = Network::new(seed);
    let x = h::add(
        &mut net,
        1,
        Config {
            max_peers: 1,
            ..test_config()
        },
    );
    for seed in [2, 3] {
        let other = h::add(&mut net, seed, test_config());
        let (a, b) = if incoming { (other, x) } else { (x, other) };
        net.connect(a, b, Some(common::O));
    }
    net.drive();
    assert_eq!(h::snap(&net, x).neighbours.len(), 1);
    h::assert_consistent(&net);
}

#[test]
fn max_peers_holds_with_dials_in_flight() {
    two_dials_at_once(1, false);
}

#[test]
fn max_peers_holds_with_incoming_dials_in_flight() {
    two_dials_at_once(2, true);
}

#[test]
fn an_altered_signal_is_counted_as_a_violation() {
    let mut net = h::network(17, 2, 1);
    let mut s = h::signed(&key(1), net.peer(1), 1, Role::Dialer, 0, &h::offer(0, 1));
    s.signal.payload[0] ^= 0x20;
    net.inject_signal_to(1, s);
    net.drive();
    assert_eq!(h::violations(&net, 1), 1);
    assert_eq!(h::snap(&net, 1).handshakes, 0);
}

#[test]
fn a_lingering_connection_makes_room_under_max_peers() {
    let mut net = Network::new(3);
    let x = h::add(
        &mut net,
        1,
        Config {
            max_peers: 1,
            ..test_config()
        },
    );
    let y = h::add(&mut net, 2, test_config());
    let z = h::add(&mut net, 3, test_config());
    h::connect(&mut net, y, x).unwrap();
    h::close_arc(&mut net, y, x).unwrap();
    assert!(h::snap(&net, x).neighbours[0].lingering);
    // Z's dial takes the place of the idle connection instead of failing.
    assert_eq!(h::connect(&mut net, z, x), Ok(()));
    let s = h::snap(&net, x);
    assert_eq!(s.neighbours.len(), 1);
    assert!(s.is_connected(&net.peer(z)));
    h::assert_consistent(&net);
}
