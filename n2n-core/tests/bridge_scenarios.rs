//! Exact scenarios of the sans-IO bridge machine: A = 1 opens an arc to C = 3
//! through B = 2. Every message, every timeout, every failure path.

use std::time::Duration;

use n2n_core::ProtocolId;
use n2n_core::bridge::{Bridge, Config, Failure, Message, Output};
use n2n_core::time::Instant;

type B = Bridge<u32, String>;
type Out = Output<u32, String>;

const A: u32 = 1;
const BR: u32 = 2;
const C: u32 = 3;
const OV: ProtocolId = ProtocolId::from_hash(77);

fn cfg() -> Config {
    Config {
        timeout: Duration::from_secs(10),
        max_jobs_per_neighbour: 2,
        ..Config::default()
    }
}

/// A, B, C with A–B and B–C neighbours.
fn trio() -> (B, B, B) {
    let mut a = B::new(A, cfg(), [OV], 1);
    let mut b = B::new(BR, cfg(), [OV], 2);
    let mut c = B::new(C, cfg(), [OV], 3);
    a.neighbour_up(BR);
    b.neighbour_up(A);
    b.neighbour_up(C);
    c.neighbour_up(BR);
    (a, b, c)
}

fn drain(m: &mut B) -> Vec<Out> {
    std::iter::from_fn(|| m.poll_output()).collect()
}

fn one(m: &mut B) -> Out {
    let mut v = drain(m);
    assert_eq!(v.len(), 1, "expected exactly one output: {v:?}");
    v.remove(0)
}

fn sent(out: Out) -> (u32, Message<u32, String>) {
    match out {
        Output::Send { to, message } => (to, message),
        other => panic!("expected a send, got {other:?}"),
    }
}

/// Runs B's `ConnectTo` to A; returns the job.
fn start(a: &mut B, b: &mut B, now: Instant, token: Option<u64>) -> u64 {
    b.bridge(now, OV, A, C, token);
    let (to, m) = sent(one(b));
    assert_eq!(to, A);
    let Message::ConnectTo {
        job,
        overlay,
        to: target,
        request,
    } = m.clone()
    else {
        panic!("{m:?}")
    };
    assert_eq!((overlay, target, request), (OV, C, None));
    a.handle_message(now, BR, m);
    assert_eq!(
        one(a),
        Output::Connect {
            via: BR,
            job,
            overlay: OV,
            to: C
        }
    );
    job
}

/// A's offer reaches C through B.
fn offer(a: &mut B, b: &mut B, c: &mut B, now: Instant, job: u64) {
    a.relay_signal(BR, job, "offer".into());
    let (to, m) = sent(one(a));
    assert_eq!(to, BR);
    assert_eq!(
        m,
        Message::Relay {
            job,
            from: A,
            to: C,
            signal: "offer".into()
        }
    );
    b.handle_message(now, A, m);
    let (to, m) = sent(one(b));
    assert_eq!(to, C);
    c.handle_message(now, BR, m);
    assert_eq!(
        one(c),
        Output::Deliver {
            via: BR,
            job,
            from: A,
            signal: "offer".into()
        }
    );
}

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

#[test]
fn c_gone_mid_handshake() {
    let now = Instant::now();
    let (mut a, mut b, mut c) = trio();
    let job = start(&mut a, &mut b, now, Some(1));
    offer(&mut a, &mut b, &mut c, now, job);
    b.neighbour_down(&C);
    let outs = drain(&mut b);
    assert_eq!(
        outs,
        vec![
            Output::Send {
                to: A,
                message: Message::RelayFailed {
                    job,
                    reason: Failure::PeerGone(C)
                }
            },
            Output::BridgeDone {
                job,
                overlay: OV,
                from: A,
                to: C,
                token: Some(1),
                result: Err(Failure::PeerGone(C))
            },
        ]
    );
}

#[test]
fn b_gone_mid_handshake() {
    let now = Instant::now();
    let (mut a, mut b, mut c) = trio();
    let job = start(&mut a, &mut b, now, None);
    offer(&mut a, &mut b, &mut c, now, job);
    a.neighbour_down(&BR);
    assert_eq!(
        one(&mut a),
        Output::Abort {
            via: BR,
            job,
            reason: Failure::PeerGone(BR)
        }
    );
    c.neighbour_down(&BR);
    assert_eq!(
        one(&mut c),
        Output::Abort {
            via: BR,
            job,
            reason: Failure::PeerGone(BR)
        }
    );
    assert_eq!((a.endpoint_jobs(), c.endpoint_jobs()), (0, 0));
}

#[test]
fn a_rejected_signal_fails_the_job_everywhere() {
    let now = Instant::now();
    let (mut a, mut b, mut c) = trio();
    let job = start(&mut a, &mut b, now, Some(1));
    offer(&mut a, &mut b, &mut c, now, job);
    c.signal_rejected(&BR, job, "bad signature".into());
    let reason = Failure::SignalRejected("bad signature".into());
    let outs = drain(&mut c);
    assert_eq!(
        outs,
        vec![
            Output::Send {
                to: BR,
                message: Message::RelayFailed {
                    job,
                    reason: reason.clone()
                }
            },
            Output::Abort {
                via: BR,
                job,
                reason: reason.clone()
            },
        ]
    );
    b.handle_message(
        now,
        C,
        Message::RelayFailed {
            job,
            reason: reason.clone(),
        },
    );
    let outs = drain(&mut b);
    assert_eq!(
        outs,
        vec![
            Output::Send {
                to: A,
                message: Message::RelayFailed {
                    job,
                    reason: reason.clone()
                }
            },
            Output::BridgeDone {
                job,
                overlay: OV,
                from: A,
                to: C,
                token: Some(1),
                result: Err(reason.clone())
            },
        ]
    );
    a.handle_message(
        now,
        BR,
        Message::RelayFailed {
            job,
            reason: reason.clone(),
        },
    );
    assert_eq!(
        one(&mut a),
        Output::Abort {
            via: BR,
            job,
            reason
        }
    );
}

#[test]
fn jobs_per_neighbour_are_bounded_on_every_side() {
    let now = Instant::now();
    let (mut a, mut b, _) = trio();
    b.neighbour_up(4);
    b.neighbour_up(5);
    b.bridge(now, OV, A, C, None);
    b.bridge(now, OV, A, 4, None);
    drain(&mut b);
    b.bridge(now, OV, A, 5, Some(7));
    assert!(matches!(
        one(&mut b),
        Output::BridgeDone {
            token: Some(7),
            result: Err(Failure::TooManyJobs),
            ..
        }
    ));
    assert_eq!(b.relay_jobs(), 2);
    // A accepts at most 2 jobs through B.
    for job in 1..=2 {
        a.handle_message(
            now,
            BR,
            Message::ConnectTo {
                job,
                overlay: OV,
                to: 10 + job as u32,
                request: None,
            },
        );
        assert!(matches!(one(&mut a), Output::Connect { .. }));
    }
    a.handle_message(
        now,
        BR,
        Message::ConnectTo {
            job: 3,
            overlay: OV,
            to: 13,
            request: None,
        },
    );
    assert_eq!(
        one(&mut a),
        Output::Send {
            to: BR,
            message: Message::BridgeResult {
                job: 3,
                result: Err(Failure::TooManyJobs)
            }
        }
    );
}

#[test]
fn the_relay_checks_who_speaks_for_which_job() {
    let now = Instant::now();
    let (mut a, mut b, _) = trio();
    b.neighbour_up(4);
    let job = start(&mut a, &mut b, now, Some(1));
    // A peer that is not part of the job cannot use it.
    b.handle_message(
        now,
        4,
        Message::Relay {
            job,
            from: 4,
            to: C,
            signal: "x".into(),
        },
    );
    assert!(drain(&mut b).is_empty());
    assert_eq!(b.stats().violations, 1);
    // A party that lies about the header fails the job.
    b.handle_message(
        now,
        A,
        Message::Relay {
            job,
            from: A,
            to: 4,
            signal: "x".into(),
        },
    );
    let outs = drain(&mut b);
    assert!(
        outs.iter().any(|o| matches!(
            o,
            Output::BridgeDone {
                result: Err(Failure::SignalRejected(_)),
                ..
            }
        )),
        "{outs:?}"
    );
    assert_eq!(b.relay_jobs(), 0);
    // Messages from peers that are not neighbours are ignored.
    b.handle_message(
        now,
        42,
        Message::BridgeRequest {
            request: 1,
            overlay: OV,
            to: C,
        },
    );
    assert!(drain(&mut b).is_empty());
    assert_eq!(b.stats().violations, 3);
}

#[test]
fn connect_to_ourselves_or_an_overlay_we_do_not_run_is_refused() {
    let now = Instant::now();
    let (mut a, _, _) = trio();
    a.handle_message(
        now,
        BR,
        Message::ConnectTo {
            job: 1,
            overlay: OV,
            to: A,
            request: None,
        },
    );
    assert_eq!(
        one(&mut a),
        Output::Send {
            to: BR,
            message: Message::BridgeResult {
                job: 1,
                result: Err(Failure::SelfBridge)
            }
        }
    );
    a.handle_message(
        now,
        BR,
        Message::ConnectTo {
            job: 2,
            overlay: ProtocolId::from_hash(5),
            to: C,
            request: None,
        },
    );
    assert_eq!(
        one(&mut a),
        Output::Send {
            to: BR,
            message: Message::BridgeResult {
                job: 2,
                result: Err(Failure::UnknownOverlay)
            }
        }
    );
    assert_eq!(a.endpoint_jobs(), 0);
}

#[test]
fn the_same_seed_gives_the_same_job_ids() {
    let now = Instant::now();
    let ids = |seed| {
        let mut b = B::new(BR, cfg(), [OV], seed);
        b.neighbour_up(A);
        b.neighbour_up(C);
        b.bridge(now, OV, A, C, None);
        match sent(one(&mut b)).1 {
            Message::ConnectTo { job, .. } => job,
            m => panic!("{m:?}"),
        }
    };
    assert_eq!(ids(11), ids(11));
    assert_ne!(ids(11), ids(12));
}
