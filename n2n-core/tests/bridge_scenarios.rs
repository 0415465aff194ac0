//! Exact scenarios of the sans-IO bridge machine: A = 1 opens an arc to C = 3
//! through B = 2. Every message, every timeout, every failure path.

mod bridge_common;

use bridge_common::*;
use n2n_core::bridge::{Failure, Message, Output};
use n2n_core::time::Instant;
use std::time::Duration;

#[test]
fn a_full_bridge_message_by_message() {
    let now = Instant::now();
    let (mut a, mut b, mut c) = trio();
    let job = start(&mut a, &mut b, now, Some(9));
    offer(&mut a, &mut b, &mut c, now, job);
    // C answers through B.
    c.relay_signal(BR, job, "answer".into());
    let (to, m) = sent(one(&mut c));
    assert_eq!(
        (to, &m),
        (
            BR,
            &Message::Relay {
                job,
                from: C,
                to: A,
                signal: "answer".into()
            }
        )
    );
    b.handle_message(now, C, m);
    let (to, m) = sent(one(&mut b));
    assert_eq!(to, A);
    a.handle_message(now, BR, m);
    assert_eq!(
        one(&mut a),
        Output::Deliver {
            via: BR,
            job,
            from: C,
            signal: "answer".into()
        }
    );
    // A's arc is open: A reports, B finishes.
    a.handshake_done(&BR, job, Ok(()));
    let (to, m) = sent(one(&mut a));
    assert_eq!(
        (to, &m),
        (
            BR,
            &Message::BridgeResult {
                job,
                result: Ok(())
            }
        )
    );
    b.handle_message(now, A, m);
    assert_eq!(
        one(&mut b),
        Output::BridgeDone {
            job,
            overlay: OV,
            from: A,
            to: C,
            token: Some(9),
            result: Ok(())
        }
    );
    c.handshake_done(&BR, job, Ok(()));
    assert!(drain(&mut c).is_empty(), "the target reports nothing");
    assert_eq!(b.stats().relayed_signals, 2);
    assert_eq!(b.stats().bridges_ok, 1);
    for m in [&a, &b, &c] {
        assert_eq!(
            (m.relay_jobs(), m.endpoint_jobs(), m.pending_requests()),
            (0, 0, 0)
        );
        assert_eq!(m.poll_timeout(), None);
    }
}

#[test]
fn a_asks_b_for_the_bridge() {
    let now = Instant::now();
    let (mut a, mut b, _) = trio();
    a.request(now, OV, BR, C, 5);
    let (to, m) = sent(one(&mut a));
    assert_eq!(to, BR);
    let Message::BridgeRequest {
        request,
        overlay,
        to: target,
    } = m.clone()
    else {
        panic!()
    };
    assert_eq!((overlay, target), (OV, C));
    b.handle_message(now, A, m);
    let (_, m) = sent(one(&mut b));
    let Message::ConnectTo {
        job,
        request: echoed,
        ..
    } = m.clone()
    else {
        panic!()
    };
    assert_eq!(echoed, Some(request));
    a.handle_message(now, BR, m);
    assert!(matches!(one(&mut a), Output::Connect { .. }));
    a.handshake_done(&BR, job, Ok(()));
    let outs = drain(&mut a);
    assert_eq!(outs.len(), 2, "{outs:?}");
    assert!(outs.contains(&Output::RequestDone {
        token: 5,
        overlay: OV,
        to: C,
        result: Ok(())
    }));
    assert_eq!(a.pending_requests(), 0);
}

#[test]
fn b_refuses_strangers_self_bridges_and_unknown_targets_of_requests() {
    let now = Instant::now();
    let (mut a, mut b, _) = trio();
    b.bridge(now, OV, A, 99, Some(1));
    assert!(matches!(
        one(&mut b),
        Output::BridgeDone {
            token: Some(1),
            result: Err(Failure::NotNeighbour(99)),
            ..
        }
    ));
    b.bridge(now, OV, 99, C, Some(2));
    assert!(matches!(
        one(&mut b),
        Output::BridgeDone {
            result: Err(Failure::NotNeighbour(99)),
            ..
        }
    ));
    b.bridge(now, OV, A, A, Some(3));
    assert!(matches!(
        one(&mut b),
        Output::BridgeDone {
            result: Err(Failure::SelfBridge),
            ..
        }
    ));
    // A asks for a peer B does not know: B refuses, A's request fails.
    a.request(now, OV, BR, 99, 4);
    let (_, m) = sent(one(&mut a));
    b.handle_message(now, A, m);
    let outs = drain(&mut b);
    let refusal = outs
        .iter()
        .find_map(|o| match o {
            Output::Send { to: A, message } => Some(message.clone()),
            _ => None,
        })
        .expect("refusal sent to A");
    assert!(matches!(
        refusal,
        Message::BridgeRefused {
            reason: Failure::NotNeighbour(99),
            ..
        }
    ));
    a.handle_message(now, BR, refusal);
    assert_eq!(
        one(&mut a),
        Output::RequestDone {
            token: 4,
            overlay: OV,
            to: 99,
            result: Err(Failure::NotNeighbour(99))
        }
    );
    assert_eq!(b.relay_jobs(), 0);
}

#[test]
fn the_relay_times_out_and_tells_both_ends() {
    let now = Instant::now();
    let (mut a, mut b, mut c) = trio();
    let job = start(&mut a, &mut b, now, Some(1));
    offer(&mut a, &mut b, &mut c, now, job);
    assert_eq!(b.poll_timeout(), Some(now + Duration::from_secs(10)));
    b.handle_timeout(now + Duration::from_secs(9));
    assert!(drain(&mut b).is_empty());
    b.handle_timeout(now + Duration::from_secs(10));
    let outs = drain(&mut b);
    assert_eq!(outs.len(), 3, "{outs:?}");
    assert!(outs.contains(&Output::Send {
        to: A,
        message: Message::RelayFailed {
            job,
            reason: Failure::Timeout
        }
    }));
    assert!(outs.contains(&Output::Send {
        to: C,
        message: Message::RelayFailed {
            job,
            reason: Failure::Timeout
        }
    }));
    assert!(outs.contains(&Output::BridgeDone {
        job,
        overlay: OV,
        from: A,
        to: C,
        token: Some(1),
        result: Err(Failure::Timeout)
    }));
    // The ends abandon their handshakes.
    a.handle_message(
        now,
        BR,
        Message::RelayFailed {
            job,
            reason: Failure::Timeout,
        },
    );
    assert_eq!(
        one(&mut a),
        Output::Abort {
            via: BR,
            job,
            reason: Failure::Timeout
        }
    );
    c.handle_message(
        now,
        BR,
        Message::RelayFailed {
            job,
            reason: Failure::Timeout,
        },
    );
    assert_eq!(
        one(&mut c),
        Output::Abort {
            via: BR,
            job,
            reason: Failure::Timeout
        }
    );
    // A late signal of the dead job is refused by B.
    b.handle_message(
        now,
        A,
        Message::Relay {
            job,
            from: A,
            to: C,
            signal: "late".into(),
        },
    );
    assert_eq!(
        one(&mut b),
        Output::Send {
            to: A,
            message: Message::RelayFailed {
                job,
                reason: Failure::UnknownJob
            }
        }
    );
    for m in [&a, &b, &c] {
        assert_eq!((m.relay_jobs(), m.endpoint_jobs()), (0, 0));
    }
}

#[test]
fn each_end_times_out_on_its_own() {
    let now = Instant::now();
    let (mut a, mut b, mut c) = trio();
    let job = start(&mut a, &mut b, now, None);
    offer(&mut a, &mut b, &mut c, now, job);
    let later = now + Duration::from_secs(10);
    a.handle_timeout(later);
    let outs = drain(&mut a);
    assert_eq!(
        outs,
        vec![
            Output::Send {
                to: BR,
                message: Message::BridgeResult {
                    job,
                    result: Err(Failure::Timeout)
                }
            },
            Output::Abort {
                via: BR,
                job,
                reason: Failure::Timeout
            },
        ]
    );
    c.handle_timeout(later);
    assert_eq!(
        drain(&mut c),
        vec![Output::Abort {
            via: BR,
            job,
            reason: Failure::Timeout
        }]
    );
    let mut a2 = B::new(A, cfg(), [OV], 1);
    a2.neighbour_up(BR);
    a2.request(now, OV, BR, C, 8);
    drain(&mut a2);
    a2.handle_timeout(later);
    assert_eq!(
        one(&mut a2),
        Output::RequestDone {
            token: 8,
            overlay: OV,
            to: C,
            result: Err(Failure::Timeout)
        }
    );
}
