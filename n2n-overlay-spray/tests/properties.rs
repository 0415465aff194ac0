//! Property tests: any sequence of inputs (environment events in any order,
//! garbage or hostile messages, stray timers) leaves a Spray peer consistent:
//! no panic, arc mirrors equal to the arcs reported, and only sensible outputs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use n2n_core::Direction;
use n2n_core::overlay::{ArcCloseReason, ConnectionState, Input, Output, Overlay};
use n2n_overlay_spray::spray::{self, Message, Timer};
use proptest::prelude::*;
use rand::SeedableRng;

#[derive(Debug, Clone)]
enum Op {
    Join(u32),
    Leave,
    Open(u32, bool),
    Close(u32, bool, u8),
    ConnectFailed(u32),
    Garbage(u32, Vec<u8>),
    Exchange(u32, u64, Vec<(u32, u32)>),
    Reply(u32, u64, Vec<(u32, u32)>),
    JoinMsg(u32),
    LeaveMsg(u32),
    Timer(u8, u64),
}

fn op() -> impl Strategy<Value = Op> {
    let peer = 1u32..6;
    let sample = proptest::collection::vec((0u32..6, 0u32..5), 0..6);
    prop_oneof![
        peer.clone().prop_map(Op::Join),
        Just(Op::Leave),
        (peer.clone(), any::<bool>()).prop_map(|(p, o)| Op::Open(p, o)),
        (peer.clone(), any::<bool>(), 0u8..3).prop_map(|(p, o, r)| Op::Close(p, o, r)),
        peer.clone().prop_map(Op::ConnectFailed),
        (peer.clone(), proptest::collection::vec(any::<u8>(), 0..20))
            .prop_map(|(p, b)| Op::Garbage(p, b)),
        (peer.clone(), 0u64..3, sample.clone()).prop_map(|(p, i, s)| Op::Exchange(p, i, s)),
        (peer.clone(), 0u64..3, sample).prop_map(|(p, i, s)| Op::Reply(p, i, s)),
        peer.clone().prop_map(Op::JoinMsg),
        peer.prop_map(Op::LeaveMsg),
        (0u8..3, 0u64..3).prop_map(|(t, i)| Op::Timer(t, i)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_input_sequence_keeps_the_peer_consistent(
        ops in proptest::collection::vec(op(), 0..80),
        seed in any::<u64>(),
    ) {
        let rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut peer = spray::State::new(0u32, spray::Config::default(), rng);
        let mut now = Instant::now();
        // The arcs the environment reported, per (peer, direction).
        let mut model: BTreeMap<(u32, bool), u32> = BTreeMap::new();
        for op in ops {
            now += Duration::from_millis(100);
            let input = match op {
                Op::Join(c) => Input::Join { contact: c },
                Op::Leave => Input::Leave,
                Op::Open(p, out) => {
                    *model.entry((p, out)).or_default() += 1;
                    let direction = if out { Direction::Outgoing } else { Direction::Incoming };
                    Input::ArcOpened { peer: p, direction }
                }
                Op::Close(p, out, r) => {
                    // The environment only closes arcs that exist.
                    let n = model.entry((p, out)).or_default();
                    if *n == 0 {
                        continue;
                    }
                    *n -= 1;
                    let direction = if out { Direction::Outgoing } else { Direction::Incoming };
                    let reason = match r {
                        0 => ArcCloseReason::Closed,
                        1 => ArcCloseReason::PeerDown("gone".into()),
                        _ => ArcCloseReason::Shutdown,
                    };
                    Input::ArcClosed { peer: p, direction, reason }
                }
                Op::ConnectFailed(p) => Input::ConnectFailed { peer: p, reason: "x".into() },
                Op::Garbage(p, payload) => Input::Message { from: p, payload },
                Op::Exchange(p, id, sample) => Input::Message {
                    from: p,
                    payload: Message::<u32>::Exchange { id, mean_view: 3.0, sample }.encode(),
                },
                Op::Reply(p, id, sample) => Input::Message {
                    from: p,
                    payload: Message::<u32>::ExchangeReply { id, mean_view: 3.0, sample }.encode(),
                },
                Op::JoinMsg(p) => Input::Message { from: p, payload: Message::<u32>::Join.encode() },
                Op::LeaveMsg(p) => Input::Message { from: p, payload: Message::<u32>::Leave.encode() },
                Op::Timer(0, _) => Input::Timer(Timer::Shuffle),
                Op::Timer(1, id) => Input::Timer(Timer::ExchangeTimeout { id }),
                Op::Timer(_, _) => Input::Timer(Timer::Leave),
            };
            peer.handle(now, input);
            while let Some(out) = peer.poll_output() {
                match out {
                    Output::CloseArc { to } => {
                        // Only arcs we hold are closed.
                        prop_assert!(peer.outview().count(&to) > 0, "close of a missing arc to {to}");
                    }
                    Output::Bridge { from, to } => {
                        prop_assert!(from != to, "bridge to itself");
                        prop_assert!(from != 0, "bridge from ourselves");
                    }
                    Output::OpenArc { to } | Output::Send { to, .. } => prop_assert!(to != 0),
                    Output::SetTimer { at, .. } => prop_assert!(at >= now),
                    Output::StateChanged(_) => {}
                    other => prop_assert!(false, "Spray asked for {other:?}"),
                }
            }
            for ((p, out), n) in &model {
                let view = if *out { peer.outview() } else { peer.inview() };
                prop_assert_eq!(view.count(p), *n);
            }
            prop_assert!(peer.view_size() <= peer.outview().len());
            prop_assert_eq!(
                peer.connection_state(),
                ConnectionState::of(peer.inview().len(), peer.outview().len())
            );
            let k = peer.peers(3);
            prop_assert!(k.len() <= 3 && !k.contains(&0));
        }
    }
}
