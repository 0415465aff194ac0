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
