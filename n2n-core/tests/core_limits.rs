//! Limits of the node core on the harness: `max_peers` counts handshakes in
//! flight, and rejected signals are counted as violations.

mod common;

use common::harness::{self as h};
use common::{key, test_config};
use n2n_core::harness::Network;
use n2n_core::node::Config;
use n2n_core::signal::Role;

#[test]
fn max_peers_holds_with_dials_in_flight() {
    let mut net = Network::new(1);
    let x = h::add(
        &mut net,
        1,
        Config {
            max_peers: 1,
            ..test_config()
        },
    );
    let b = h::add(&mut net, 2, test_config());
    let c = h::add(&mut net, 3, test_config());
    net.connect(x, b, Some(common::O));
    net.connect(x, c, Some(common::O));
    net.drive();
    assert_eq!(h::snap(&net, x).neighbours.len(), 1);
    h::assert_consistent(&net);
}

#[test]
fn max_peers_holds_with_incoming_dials_in_flight() {
    let mut net = Network::new(2);
    let x = h::add(
        &mut net,
        1,
        Config {
            max_peers: 1,
            ..test_config()
        },
    );
    let b = h::add(&mut net, 2, test_config());
    let c = h::add(&mut net, 3, test_config());
    net.connect(b, x, Some(common::O));
    net.connect(c, x, Some(common::O));
    net.drive();
    assert_eq!(h::snap(&net, x).neighbours.len(), 1);
    h::assert_consistent(&net);
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
