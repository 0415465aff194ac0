//! Signals relayed after their handshake finished (late ICE candidates, on
//! WebRTC) are dropped and leave no bridge job behind, on the harness.

mod common;

use common::harness::{self as h, assert_consistent, assert_tables_empty, snap};
use common::{key, test_config};
use n2n_core::harness::Network;
use n2n_core::signal::Role;
use n2n_core::wire::{BridgeMessage, Message};

#[test]
fn late_relayed_signals_leave_no_job_behind() {
    let mut net = Network::new(1);
    let (a, b, c) = (0, 1, 2);
    for seed in 1..=3 {
        h::add(&mut net, seed, test_config());
    }
    h::connect(&mut net, a, b).unwrap();
    h::connect(&mut net, c, b).unwrap();
    let jobs = h::record_jobs(&mut net, b);
    assert_eq!(h::bridge(&mut net, b, a, c), Ok(()));
    let job = jobs.lock().unwrap()[0];
    assert_tables_empty(&net, &[a, b, c]);
    net.events(a);
    net.events(c);
    // Each side's transport wrote one more signal; B relays it as it came.
    let (pa, pc) = (net.peer(a), net.peer(c));
    let late = |from: usize, to, role| {
        let signal = h::signed(&key(from as u64 + 1), to, 9, role, 1, b"candidate");
        h::frame(&Message::Bridge(Box::new(BridgeMessage::Relay {
            job,
            from: net.peer(from),
            to,
            signal,
        })))
    };
    let to_c = late(a, pc, Role::Dialer);
    let to_a = late(c, pa, Role::Acceptor);
    net.inject_frame(b, c, to_c);
    net.inject_frame(b, a, to_a);
    net.drive();
    assert_tables_empty(&net, &[a, b, c]);
    assert!(net.events(a).is_empty() && net.events(c).is_empty());
    assert_eq!(assert_consistent(&net), 3);
    assert_eq!(snap(&net, c).protocol_violations, 0);
}

#[test]
fn late_relayed_signals_do_not_use_up_the_jobs_of_a_relay() {
    let mut net = Network::new(2);
    let config = n2n_core::node::Config {
        max_jobs_per_neighbour: 2,
        ..test_config()
    };
    let b = h::add(&mut net, 1, test_config());
    let c = h::add(&mut net, 2, config);
    h::connect(&mut net, c, b).unwrap();
    let jobs = h::record_jobs(&mut net, b);
    let pc = net.peer(c);
    for (i, seed) in (10..13).enumerate() {
        let a = h::add(&mut net, seed, test_config());
        h::connect(&mut net, a, b).unwrap();
        assert_eq!(h::bridge(&mut net, b, a, c), Ok(()), "bridge {i}");
        // A's transport writes one more signal after the handshake.
        let job = jobs.lock().unwrap()[i];
        let signal = h::signed(&key(seed), pc, 9, Role::Dialer, 1, b"candidate");
        let frame = h::frame(&Message::Bridge(Box::new(BridgeMessage::Relay {
            job,
            from: net.peer(a),
            to: pc,
            signal,
        })));
        net.inject_frame(b, c, frame);
        net.drive();
    }
    assert_tables_empty(&net, &(0..net.len()).collect::<Vec<_>>());
    assert_eq!(snap(&net, c).neighbours.len(), 4);
}
