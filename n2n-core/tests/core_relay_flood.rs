//! A relaying neighbour's budgets, on the harness: A floods its relay B with
//! signals for one bridge job; B relays at most the job's budget, fails the
//! job (not its link to C), and refuses control frames over the control
//! limit before decoding them.

mod common;

use common::harness::{self as h, snap};
use common::{key, test_config};
use n2n_core::bridge;
use n2n_core::harness::Network;
use n2n_core::signal::{MAX_SIGNAL_PAYLOAD, Role};
use n2n_core::wire::{self, BridgeFailure, BridgeMessage, Message};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

const A: usize = 0;
const B: usize = 1;
const C: usize = 2;

/// A–B–C; B has started bridge A → C and A stays silent (it will flood by
/// hand). Returns the network and the job id.
fn flood_setup(seed: u64) -> (Network, u64, n2n_core::node::core::Ticket) {
    let mut net = Network::new(seed);
    for k in 1..=3 {
        h::add(&mut net, k, test_config());
    }
    h::connect(&mut net, A, B).unwrap();
    h::connect(&mut net, C, B).unwrap();
    let jobs = h::record_jobs(&mut net, B);
    net.set_tamper(A, Some(Box::new(|_: &[u8]| Vec::new())));
    let ticket = h::start_bridge(&mut net, B, A, C);
    net.drive();
    let job = jobs.lock().unwrap()[0];
    (net, job, ticket)
}

fn relay(net: &Network, job: u64, seq: u32, payload: &[u8]) -> Vec<u8> {
    let signal = if payload.len() <= MAX_SIGNAL_PAYLOAD {
        h::signed(&key(1), net.peer(C), 7, Role::Dialer, seq, payload)
    } else {
        // Too large to sign: a relay must refuse it on its size alone.
        let mut s = h::signed(&key(1), net.peer(C), 7, Role::Dialer, seq, b"");
        s.signal.payload = payload.to_vec();
        s
    };
    h::frame(&Message::Bridge(Box::new(BridgeMessage::Relay {
        job,
        from: net.peer(A),
        to: net.peer(C),
        signal,
    })))
}

/// Counts the bytes of the `Relay` frames node `b` transmits, passing
/// them (and every other frame) through.
fn count_relayed_bytes(net: &mut Network, b: usize) -> Arc<AtomicUsize> {
    let bytes = Arc::new(AtomicUsize::new(0));
    let seen = bytes.clone();
    net.set_tamper(
        b,
        Some(Box::new(move |frame: &[u8]| {
            if let Ok(Message::Bridge(m)) = wire::decode(frame)
                && let BridgeMessage::Relay { .. } = *m
            {
                seen.fetch_add(frame.len(), Ordering::SeqCst);
            }
            vec![frame.to_vec()]
        })),
    );
    bytes
}

#[test]
fn a_flood_of_relays_for_one_job_fails_the_job_not_the_next_hop() {
    let (mut net, job, ticket) = flood_setup(1);
    let sent = count_relayed_bytes(&mut net, B);
    let one = relay(&net, job, 0, b"candidate").len();
    for seq in 0..10_001 {
        let frame = relay(&net, job, seq, b"candidate");
        net.inject_frame(A, B, frame);
    }
    net.drive();
    let budget = u64::from(bridge::Config::default().max_signals_per_job);
    let b = snap(&net, B);
    assert!(b.relayed_signals <= budget, "{} relayed", b.relayed_signals);
    // What B wrote towards C for the job: at most the budget's frames.
    let bytes = sent.load(Ordering::SeqCst);
    assert!(
        bytes <= budget as usize * (one + 16),
        "{bytes} bytes relayed"
    );
    assert!(b.refusals >= 1, "the flood is counted");
    assert!(matches!(
        h::bridge_result(&mut net, B, ticket),
        Some(Err(BridgeFailure::RelayLimit(_)))
    ));
    // B keeps its honest neighbour C, and C holds no job of the flood.
    assert!(b.is_connected(&net.peer(C)));
    assert!(snap(&net, C).is_connected(&net.peer(B)));
    assert_eq!(snap(&net, C).bridge_endpoints, 0);
    assert_eq!(b.relay_jobs, 0);
}

#[test]
fn an_oversized_relayed_signal_is_refused_before_decoding() {
    let (mut net, job, _) = flood_setup(2);
    let frame = relay(&net, job, 0, &vec![7; 16 * 1024 * 1024 - 4096]);
    net.inject_frame(A, B, frame);
    net.drive();
    let b = snap(&net, B);
    assert_eq!(b.relayed_signals, 0);
    assert_eq!(b.protocol_violations, 1);
    assert!(b.is_connected(&net.peer(C)));
}

#[test]
fn a_signal_over_the_signal_limit_fails_its_job_at_the_relay() {
    let (mut net, job, ticket) = flood_setup(3);
    // Under the control-frame limit, over the signal limit.
    let frame = relay(&net, job, 0, &vec![7; 100 * 1024]);
    net.inject_frame(A, B, frame);
    net.drive();
    assert_eq!(snap(&net, B).relayed_signals, 0);
    assert!(matches!(
        h::bridge_result(&mut net, B, ticket),
        Some(Err(BridgeFailure::RelayLimit(_)))
    ));
}

/// D joins B, then B bridges D to C; returns the bridge's virtual duration.
fn honest_bridge(net: &mut Network) -> n2n_core::time::Duration {
    let d = h::add(net, 4, test_config());
    h::connect(net, d, B).unwrap();
    let start = net.now();
    assert_eq!(h::bridge(net, B, d, C), Ok(()));
    assert!(snap(net, C).is_connected(&net.peer(d)));
    net.now() - start
}

#[test]
fn after_a_flood_an_honest_bridge_through_the_same_relay_is_as_fast() {
    let (mut calm, _, _) = flood_setup(4);
    let calm = honest_bridge(&mut calm);
    let (mut net, job, _) = flood_setup(4);
    for seq in 0..1000 {
        let frame = relay(&net, job, seq, b"candidate");
        net.inject_frame(A, B, frame);
    }
    net.drive();
    // Virtual time: the same links, the same number of round trips.
    assert_eq!(honest_bridge(&mut net), calm);
}
