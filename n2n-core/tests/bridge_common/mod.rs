//! The trio A = 1, B = 2, C = 3 of the bridge scenarios, and the steps they share.

#![allow(dead_code)] // each test binary uses its own part

use std::time::Duration;

use n2n_core::ProtocolId;
use n2n_core::bridge::{Bridge, Config, Message, Output};
use n2n_core::time::Instant;

pub(crate) type B = Bridge<u32, String>;
pub(crate) type Out = Output<u32, String>;

pub(crate) const A: u32 = 1;
pub(crate) const BR: u32 = 2;
pub(crate) const C: u32 = 3;
pub(crate) const OV: ProtocolId = ProtocolId::from_hash(77);

pub(crate) fn cfg() -> Config {
    Config {
        timeout: Duration::from_secs(10),
        max_jobs_per_neighbour: 2,
        ..Config::default()
    }
}

/// A, B, C with A–B and B–C neighbours.
pub(crate) fn trio() -> (B, B, B) {
    let mut a = B::new(A, cfg(), [OV], 1);
    let mut b = B::new(BR, cfg(), [OV], 2);
    let mut c = B::new(C, cfg(), [OV], 3);
    a.neighbour_up(BR);
    b.neighbour_up(A);
    b.neighbour_up(C);
    c.neighbour_up(BR);
    (a, b, c)
}

pub(crate) fn drain(m: &mut B) -> Vec<Out> {
    std::iter::from_fn(|| m.poll_output()).collect()
}

pub(crate) fn one(m: &mut B) -> Out {
    let mut v = drain(m);
    assert_eq!(v.len(), 1, "expected exactly one output: {v:?}");
    v.remove(0)
}

pub(crate) fn sent(out: Out) -> (u32, Message<u32, String>) {
    match out {
        Output::Send { to, message } => (to, message),
        other => panic!("expected a send, got {other:?}"),
    }
}

/// Runs B's `ConnectTo` to A; returns the job.
pub(crate) fn start(a: &mut B, b: &mut B, now: Instant, token: Option<u64>) -> u64 {
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
pub(crate) fn offer(a: &mut B, b: &mut B, c: &mut B, now: Instant, job: u64) {
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
