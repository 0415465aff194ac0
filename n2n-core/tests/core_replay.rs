//! Signals v2 on the harness: a replayed offer, an expired one and one of
//! another network are refused; a fresh offer replaces a pending session
//! (a retried dial) or a connection (a restarted peer with the same key);
//! offers from remotes cannot use up the budget of our own dials.

mod common;

use common::harness::{self as h, snap};
use common::{key, test_config};
use n2n_core::harness::Network;
use n2n_core::node::{Config, ConnectError};
use n2n_core::signal::{Freshness, Role, Signal};
use n2n_core::time::Duration;

const A: usize = 0;
const C: usize = 1;

/// An offer of node `node` (key `seed`) to `to`.
fn offer_from(
    node: usize,
    seed: u64,
    to: n2n_core::PeerId,
    session: u64,
    freshness: Freshness,
) -> n2n_core::SignedSignal {
    Signal {
        from: key(seed).peer_id(),
        to,
        session,
        role: Role::Dialer,
        seq: 0,
        transport: n2n_core::harness::TRANSPORT.into(),
        payload: h::offer(node as u64, session),
    }
    .sign_fresh(&key(seed), freshness)
    .unwrap()
}

#[test]
fn a_replayed_offer_does_not_block_the_authors_genuine_dial() {
    let mut net = h::network(1, 2, 1);
    let pc = net.peer(C);
    let old = h::signed(&key(1), pc, 5, Role::Dialer, 0, &h::offer(0, 5));
    net.inject_signal_to(C, old);
    net.drive();
    assert_eq!(snap(&net, C).handshakes, 1, "the first copy is taken");
    let start = net.now();
    assert_eq!(h::connect(&mut net, A, C), Ok(()));
    assert!(
        net.now() - start < Duration::from_secs(1),
        "{:?}",
        net.now() - start
    );
    assert!(snap(&net, C).is_connected(&net.peer(A)));
}

#[test]
fn the_same_offer_twice_is_refused_as_a_replay() {
    let mut net = h::network(2, 2, 1);
    let pc = net.peer(C);
    let s = h::signed(&key(1), pc, 5, Role::Dialer, 0, &h::offer(0, 5));
    net.inject_signal_to(C, s.clone());
    net.drive();
    let before = snap(&net, C).refusals;
    net.inject_signal_to(C, s);
    net.drive();
    assert_eq!(snap(&net, C).refusals, before + 1);
    assert_eq!(snap(&net, C).handshakes, 1);
}

#[test]
fn expired_and_foreign_network_offers_are_refused() {
    let mut net = h::network(3, 2, 1);
    let pc = net.peer(C);
    let wall = net.wall_ms();
    let network = Config::default().network;
    for (session, freshness) in [
        (
            1,
            Freshness {
                network: network.clone(),
                not_after: wall - 1,
            },
        ),
        (
            2,
            Freshness {
                network: network.clone(),
                not_after: 0,
            },
        ),
        (
            3,
            Freshness {
                network: network.clone(),
                not_after: wall + 3_600_000,
            },
        ),
        (
            4,
            Freshness {
                network: "another-room".into(),
                not_after: wall + 10_000,
            },
        ),
    ] {
        net.inject_signal_to(C, offer_from(A, 1, pc, session, freshness));
        net.drive();
        assert_eq!(snap(&net, C).handshakes, 0, "offer {session} taken");
    }
    assert_eq!(snap(&net, C).protocol_violations, 4);
    // A fresh offer of the right network is taken.
    let fresh = Freshness {
        network,
        not_after: wall + 10_000,
    };
    net.inject_signal_to(C, offer_from(A, 1, pc, 9, fresh));
    net.drive();
    assert_eq!(snap(&net, C).handshakes, 1);
}

#[test]
fn a_restarted_peer_with_the_same_key_reconnects_at_once() {
    let mut net = h::network(4, 2, 1);
    h::connect(&mut net, A, C).unwrap();
    // A restarts (its old process goes silent, C still holds its
    // connection and would wait for the idle timeout).
    net.cut(A, C);
    let a2 = net.add_node_with_key(key(1), test_config(), Vec::new(), vec![common::O]);
    let start = net.now();
    assert_eq!(h::connect(&mut net, a2, C), Ok(()));
    assert!(
        net.now() - start < Duration::from_secs(1),
        "{:?}",
        net.now() - start
    );
    assert_eq!(h::in_count(&net, C, a2), 1);
    assert_eq!(h::out_count(&net, a2, C), 1);
}

#[test]
fn offers_from_remotes_do_not_use_up_our_dials() {
    let mut net = Network::new(5);
    let config = Config {
        max_handshakes: 2,
        max_inbound_handshakes: 2,
        ..test_config()
    };
    let x = h::add(&mut net, 1, config);
    let y = h::add(&mut net, 2, test_config());
    let px = net.peer(x);
    let fresh = n2n_core::harness::fresh_at_origin();
    for seed in 100..110 {
        // Strangers whose offers are never followed up.
        let s = h::add(&mut net, seed, test_config());
        net.inject_signal_to(x, offer_from(s, seed, px, seed, fresh.clone()));
    }
    net.drive();
    let s = snap(&net, x);
    assert_eq!(s.handshakes, 2);
    assert!(s.refusals >= 8);
    assert_eq!(h::connect(&mut net, x, y), Ok(()));
    // The refused remotes got a clear answer, not silence.
    let _ = ConnectError::TooManyHandshakes;
}
