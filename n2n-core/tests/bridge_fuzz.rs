//! The bridge machine's inputs fuzzed under `cargo test` (CI's quick mode):
//! arbitrary messages from neighbours and strangers, neighbours going down,
//! commands and timeouts, in any order. The machine never panics, never
//! relays more than a job's budget, and forgets every job, request and
//! endpoint once the timeout has passed.

use n2n_core::bridge::{Bridge, Config, Failure, Message, Output};
use n2n_core::time::{Duration, Instant};
use n2n_core::wire::ProtocolId;
use proptest::prelude::*;

type B = Bridge<u8, Vec<u8>>;

const LOCAL: u8 = 0;
const OV: ProtocolId = ProtocolId::from_hash(7);

#[derive(Debug, Clone)]
enum Step {
    Message(u8, Message<u8, Vec<u8>>),
    Up(u8),
    Down(u8),
    Bridge(u8, u8),
    Request(u8, u8),
    HandshakeDone(u8, u64, bool),
    Wait(u64),
    /// `n` relays of `len` bytes for the `k`-th job started, from one end.
    Flood(usize, u32, usize, bool),
}

fn peer() -> impl Strategy<Value = u8> {
    0u8..5
}

fn job() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..4, any::<u64>()]
}

fn failure() -> impl Strategy<Value = Failure<u8>> {
    prop_oneof![
        Just(Failure::Timeout),
        Just(Failure::UnknownJob),
        Just(Failure::TooManyJobs),
        peer().prop_map(Failure::PeerGone),
        Just(Failure::Refused),
    ]
}

fn message() -> impl Strategy<Value = Message<u8, Vec<u8>>> {
    let ov = prop_oneof![Just(OV), any::<u32>().prop_map(ProtocolId::from_hash)];
    prop_oneof![
        (job(), ov.clone(), peer(), proptest::option::of(job())).prop_map(
            |(job, overlay, to, request)| Message::ConnectTo {
                job,
                overlay,
                to,
                request
            }
        ),
        (job(), ov, peer()).prop_map(|(request, overlay, to)| Message::BridgeRequest {
            request,
            overlay,
            to
        }),
        (job(), failure()).prop_map(|(request, reason)| Message::BridgeRefused { request, reason }),
        (
            job(),
            peer(),
            peer(),
            prop_oneof![0usize..64, 60_000usize..70_000]
        )
            .prop_map(|(job, from, to, len)| Message::Relay {
                job,
                from,
                to,
                signal: vec![1; len],
            }),
        (job(), failure()).prop_map(|(job, reason)| Message::RelayFailed { job, reason }),
        (job(), proptest::option::of(failure())).prop_map(|(job, r)| Message::BridgeResult {
            job,
            result: r.map_or(Ok(()), Err),
        }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        12 => (peer(), message()).prop_map(|(p, m)| Step::Message(p, m)),
        1 => peer().prop_map(Step::Up),
        1 => peer().prop_map(Step::Down),
        1 => (peer(), peer()).prop_map(|(a, b)| Step::Bridge(a, b)),
        1 => (peer(), peer()).prop_map(|(a, b)| Step::Request(a, b)),
        1 => (peer(), job(), any::<bool>()).prop_map(|(p, j, ok)| Step::HandshakeDone(p, j, ok)),
        1 => (0u64..20_000).prop_map(Step::Wait),
        2 => (0usize..3, 0u32..100, prop_oneof![0usize..64, 60_000usize..70_000], any::<bool>())
            .prop_map(|(k, n, len, back)| Step::Flood(k, n, len, back)),
    ]
}

/// Job ids 0..4 name the jobs this bridge started, when it has: so that
/// relays hit real jobs, whose ids are random.
fn resolve(m: Message<u8, Vec<u8>>, known: &[(u64, u8, u8)]) -> Message<u8, Vec<u8>> {
    let map = |job: u64| {
        usize::try_from(job)
            .ok()
            .and_then(|i| known.get(i))
            .map(|k| k.0)
            .unwrap_or(job)
    };
    match m {
        Message::Relay {
            job,
            from,
            to,
            signal,
        } => Message::Relay {
            job: map(job),
            from,
            to,
            signal,
        },
        Message::RelayFailed { job, reason } => Message::RelayFailed {
            job: map(job),
            reason,
        },
        Message::BridgeResult { job, result } => Message::BridgeResult {
            job: map(job),
            result,
        },
        other => other,
    }
}

fn drain(
    b: &mut B,
    relayed: &mut std::collections::BTreeMap<u64, u32>,
    known: &mut Vec<(u64, u8, u8)>,
) {
    while let Some(out) = b.poll_output() {
        match out {
            Output::Send {
                message: Message::Relay { job, .. },
                ..
            } => *relayed.entry(job).or_default() += 1,
            Output::Send {
                to: from,
                message: Message::ConnectTo { job, to, .. },
            } => known.insert(0, (job, from, to)),
            _ => {}
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_inputs_cannot_break_the_bridge(steps in proptest::collection::vec(step(), 0..200)) {
        let config = Config::default();
        let mut b = B::new(LOCAL, config.clone(), [OV], 1);
        for p in 1..4 {
            b.neighbour_up(p);
        }
        let mut now = Instant::now();
        let mut relayed = std::collections::BTreeMap::new();
        let mut known = Vec::new();
        for s in steps {
            match s {
                Step::Message(from, m) => b.handle_message(now, from, resolve(m, &known)),
                Step::Up(p) => b.neighbour_up(p),
                Step::Down(p) => b.neighbour_down(&p),
                Step::Bridge(from, to) => b.bridge(now, OV, from, to, Some(1)),
                Step::Request(via, to) => b.request(now, OV, via, to, 2),
                Step::HandshakeDone(via, job, ok) => {
                    b.handshake_done(&via, job, if ok { Ok(()) } else { Err(Failure::Timeout) })
                }
                Step::Flood(k, n, len, back) => {
                    if let Some(&(job, a, c)) = known.get(k) {
                        let (from, to) = if back { (c, a) } else { (a, c) };
                        for _ in 0..n {
                            let signal = vec![2; len];
                            b.handle_message(now, from, Message::Relay { job, from, to, signal });
                        }
                    }
                }
                Step::Wait(ms) => {
                    now += Duration::from_millis(ms);
                    b.handle_timeout(now);
                }
            }
            drain(&mut b, &mut relayed, &mut known);
            // Relaying happens only as B, per job, within the budget.
            for n in relayed.values() {
                prop_assert!(*n <= config.max_signals_per_job);
            }
            prop_assert!(b.relay_jobs() <= 5 * config.max_jobs_per_neighbour);
            prop_assert!(b.endpoint_jobs() <= 5 * config.max_jobs_per_neighbour);
        }
        now += config.timeout + Duration::from_secs(1);
        b.handle_timeout(now);
        drain(&mut b, &mut relayed, &mut known);
        prop_assert_eq!(b.relay_jobs(), 0);
        prop_assert_eq!(b.pending_requests(), 0);
        prop_assert_eq!(b.endpoint_jobs(), 0);
        prop_assert_eq!(b.poll_timeout(), None);
    }
}
