//! Failure scenarios of the sans-IO bridge machine (A = 1 opens an arc to
//! C = 3 through B = 2): an end or the relay gone mid-handshake, rejected
//! signals, bounded jobs, who may speak for a job, refused targets, seeds.

mod bridge_common;

use bridge_common::*;
use n2n_core::ProtocolId;
use n2n_core::bridge::{Failure, Message, Output};
use n2n_core::time::Instant;

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
