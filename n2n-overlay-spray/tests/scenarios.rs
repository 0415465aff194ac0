//! Exact 2–6-peer scenarios of the Spray state machine: every output checked.

mod common;

use common::{ConstRng, Net};
use n2n_core::Direction;
use n2n_core::overlay::{ArcCloseReason, ConnectionState, Input, Output};
use n2n_overlay_spray::spray::{AgeRule, Config, Message, Timer};
use rand::Rng;

const OUT: Direction = Direction::Outgoing;
const IN: Direction = Direction::Incoming;

fn send(to: u32, m: Message<u32>) -> Output<u32, Timer> {
    Output::Send {
        to,
        payload: m.encode(),
    }
}

fn down(peer: u32, direction: Direction) -> Input<u32, Timer> {
    Input::ArcClosed {
        peer,
        direction,
        reason: ArcCloseReason::PeerDown("crashed".into()),
    }
}

#[test]
fn const_rng_draws_extremes() {
    let (mut lo, mut hi) = (ConstRng(0), ConstRng(u64::MAX));
    assert_eq!(lo.random_range(0..5usize), 0);
    assert_eq!(hi.random_range(0..5usize), 4);
    assert_eq!(hi.random_range(2..=7usize), 7);
    assert!(lo.random::<f64>() == 0.0);
    assert!(hi.random::<f64>() > 0.999);
}

#[test]
fn join_on_a_one_peer_network() {
    let mut net = Net::new(&[1, 2], 0);
    let d = Config::default().delta;
    let t0 = net.now;
    // The newcomer opens an arc to its contact and says hello.
    let out = net.input(2, Input::Join { contact: 1 });
    assert_eq!(
        out,
        vec![
            Output::OpenArc { to: 1 },
            send(1, Message::Join),
            Output::SetTimer {
                at: t0 + d,
                timer: Timer::Shuffle
            },
        ]
    );
    // The arc opens on both sides.
    assert_eq!(
        net.input(
            2,
            Input::ArcOpened {
                peer: 1,
                direction: OUT
            }
        ),
        vec![Output::StateChanged(ConnectionState::PartiallyConnected)]
    );
    assert_eq!(
        net.input(
            1,
            Input::ArcOpened {
                peer: 2,
                direction: IN
            }
        ),
        vec![
            Output::SetTimer {
                at: t0 + d,
                timer: Timer::Shuffle
            },
            Output::StateChanged(ConnectionState::PartiallyConnected)
        ]
    );
    // The contact's outview is empty: it opens one arc back.
    let out = net.input(
        1,
        Input::Message {
            from: 2,
            payload: Message::<u32>::Join.encode(),
        },
    );
    assert_eq!(out, vec![Output::OpenArc { to: 2 }]);
    let caused = net.apply(1, out[0].clone());
    assert_eq!(
        caused,
        vec![
            (1, vec![Output::StateChanged(ConnectionState::Connected)]),
            (2, vec![Output::StateChanged(ConnectionState::Connected)]),
        ]
    );
    assert_eq!(net.views(1), (vec![2], vec![2]));
    assert_eq!(net.views(2), (vec![1], vec![1]));
    assert_eq!(net.arcs(), 2);
}

#[test]
fn join_on_a_two_peer_network() {
    let mut net = Net::new(&[1, 2, 3], 0);
    net.arc(1, 2);
    net.arc(2, 1);
    let out = net.input(3, Input::Join { contact: 1 });
    assert_eq!(
        out[..2],
        [Output::OpenArc { to: 1 }, send(1, Message::Join)]
    );
    net.apply(3, out[0].clone());
    // The contact bridges its one outview arc to the newcomer: 2 opens an arc to 3.
    let out = net.input(
        1,
        Input::Message {
            from: 3,
            payload: Message::<u32>::Join.encode(),
        },
    );
    assert_eq!(out, vec![Output::Bridge { from: 2, to: 3 }]);
    net.settle(1, out);
    assert_eq!(net.views(1), (vec![2], vec![2, 3]));
    assert_eq!(net.views(2), (vec![1, 3], vec![1]));
    assert_eq!(net.views(3), (vec![1], vec![2]));
    // 2 arcs + 1 + ln-ish 1 = 4: the mean view is 1 + 1/3.
    assert_eq!(net.arcs(), 4);
    assert_eq!(net.peer(3).connection_state(), ConnectionState::Connected);
}

#[test]
fn join_bridges_once_per_arc_occurrence() {
    let mut net = Net::new(&[1, 2, 3, 9], 0);
    net.arc(1, 2);
    net.arc(1, 2);
    net.arc(1, 3);
    net.arc(9, 1);
    let out = net.input(
        1,
        Input::Message {
            from: 9,
            payload: Message::<u32>::Join.encode(),
        },
    );
    assert_eq!(
        out,
        vec![
            Output::Bridge { from: 2, to: 9 },
            Output::Bridge { from: 2, to: 9 },
            Output::Bridge { from: 3, to: 9 },
        ]
    );
    net.settle(1, out);
    assert_eq!(net.views(9), (vec![1], vec![2, 2, 3]));
}

/// A shuffle, message by message. 1 holds [2, 3, 3] (2 oldest) and 2 holds [1, 4].
/// With the lowest draws, 1's sample is its arc to 2 (the oldest, given back
/// as an arc 2 → 1) and the first arc to 3; 2's sample is ⌈2/2⌉ = 1 arc: its
/// arc to 1, which 1 must receive as an arc to 2 (not to itself).
#[test]
fn shuffle_step_by_step() {
    for rule in [AgeRule::Reset, AgeRule::Keep] {
        shuffle_step_by_step_with(rule);
    }
}

fn shuffle_step_by_step_with(age_rule: AgeRule) {
    let cfg = Config {
        age_rule,
        ..Config::default()
    };
    let mut net = Net::with_config(&[1, 2, 3, 4], 0, cfg.clone());
    net.arc(1, 2);
    net.arc(1, 3);
    net.arc(1, 3);
    net.arc(2, 1);
    net.arc(2, 4);
    let before = net.arcs();
    let t0 = net.now;

    let out = net.input(1, Input::Timer(Timer::Shuffle));
    assert_eq!(
        out,
        vec![
            Output::SetTimer {
                // The round of the next period (the first period, armed
                // when the arcs opened, ends at t0 + Δ), at its end with
                // the lowest draw.
                at: t0 + 2 * cfg.delta,
                timer: Timer::Shuffle
            },
            send(
                2,
                Message::Exchange {
                    id: 0,
                    mean_view: 3.0,
                    // The arc to 2 given back as an arc to 1, new; the arc to 3,
                    // one round old.
                    sample: vec![(1, 0), (3, 1)],
                }
            ),
            Output::SetTimer {
                at: t0 + cfg.exchange_timeout,
                timer: Timer::ExchangeTimeout { id: 0 }
            },
        ]
    );
    assert_eq!(net.peer(1).pending_exchange(), Some((&2, 0)));
    // Nothing moves before the answer.
    assert_eq!(net.views(1).0, vec![2, 3, 3]);

    let out = net.input(
        2,
        Input::Message {
            from: 1,
            payload: Message::<u32>::Exchange {
                id: 0,
                mean_view: 3.0,
                sample: vec![(1, 0), (3, 1)],
            }
            .encode(),
        },
    );
    assert_eq!(
        out,
        vec![
            send(
                1,
                Message::ExchangeReply {
                    id: 0,
                    mean_view: 2.5,
                    sample: vec![(2, 0)],
                }
            ),
            // 2 gives its arc to 1: replaced by an arc from 1 to 2.
            Output::Bridge { from: 1, to: 2 },
            Output::CloseArc { to: 1 },
        ]
    );
    let reply = out[0].clone();
    net.settle(2, out[1..].to_vec());
    assert_eq!(net.views(2), (vec![4], vec![1, 1]));

    let caused = net.apply(2, reply);
    assert_eq!(
        caused,
        vec![(
            1,
            vec![
                // The arc to the partner becomes the partner's arc to us.
                Output::Bridge { from: 2, to: 1 },
                Output::Bridge { from: 2, to: 3 },
                Output::CloseArc { to: 2 },
                Output::CloseArc { to: 3 },
            ]
        )]
    );
    net.settle(1, caused[0].1.clone());
    assert_eq!(net.peer(1).pending_exchange(), None);
    assert_eq!(net.views(1), (vec![2, 3], vec![2]));
    assert_eq!(net.views(2), (vec![1, 3, 4], vec![1]));
    assert_eq!(net.arcs(), before);
    // The arcs moved to 2 are new (the paper's rule), or kept their ages:
    // the arc to 3 was one round old.
    let ages: Vec<(u32, u32)> = net.peer(2).partial_view().map(|(p, a)| (*p, a)).collect();
    let moved = u32::from(age_rule == AgeRule::Keep);
    assert_eq!(ages, vec![(4, 0), (1, 0), (3, moved)]);
    // Ages: 1's remaining arc to 3 is one round old, the new arc to 2 is new.
    let ages: Vec<(u32, u32)> = net.peer(1).partial_view().map(|(p, a)| (*p, a)).collect();
    assert_eq!(ages, vec![(3, 1), (2, 0)]);
    assert!((net.peer(1).mean_view() - 2.5).abs() < 1e-9);
}

/// Peer 2 crashes: 1 loses both arcs to it. With the highest draws, the rule
/// duplicates on both occurrences (probability 1 − 1/(|P|+occ) each); with the
/// lowest, on none. The loop runs occ = 2 times, not 3.
#[test]
fn peer_down() {
    for (word, expected) in [
        (
            u64::MAX,
            vec![Output::OpenArc { to: 4 }, Output::OpenArc { to: 4 }],
        ),
        (0, vec![]),
    ] {
        let mut net = Net::new(&[1, 2, 3, 4], word);
        net.arc(1, 2);
        net.arc(1, 3);
        net.arc(1, 2);
        net.arc(1, 4);
        net.arc(2, 1);
        // The first occurrence only counts; the rule runs once all are gone.
        assert_eq!(net.input(1, down(2, OUT)), vec![]);
        assert_eq!(net.input(1, down(2, OUT)), expected);
        assert_eq!(
            net.input(1, down(2, IN)),
            vec![Output::StateChanged(ConnectionState::PartiallyConnected)]
        );
        assert_eq!(net.views(1).1, Vec::<u32>::new());
        assert_eq!(net.views(1).0, vec![3, 4]);
    }
}

/// An arc we were to open failed: always duplicate a random arc.
#[test]
fn arc_down() {
    let mut net = Net::new(&[1, 2, 3], u64::MAX);
    net.arc(1, 2);
    net.arc(1, 3);
    let out = net.input(
        1,
        Input::ConnectFailed {
            peer: 7,
            reason: "handshake timed out".into(),
        },
    );
    assert_eq!(out, vec![Output::OpenArc { to: 3 }]);
    net.settle(1, out);
    assert_eq!(net.views(1).0, vec![2, 3, 3]);
}

/// An arc failed to open while the partial view is empty (everything was given
/// away in a shuffle): the arc goes back to a peer of the inview, which is
/// connected already, instead of being lost.
#[test]
fn arc_down_with_an_empty_view_falls_back_on_the_inview() {
    let mut net = Net::new(&[1, 2, 3], u64::MAX);
    net.arc(2, 1);
    assert_eq!(net.views(1), (vec![], vec![2]));
    let out = net.input(
        1,
        Input::ConnectFailed {
            peer: 3,
            reason: "handshake timed out".into(),
        },
    );
    assert_eq!(out, vec![Output::OpenArc { to: 2 }]);
    net.settle(1, out);
    assert_eq!(net.views(1), (vec![2], vec![2]));
}

/// The partner never answers: after the timeout, it is down. Its arc is closed,
/// the rule runs once (|P| = 1, occ = 1: duplicate with probability 1/2), the
/// reserved sample stays, and a late answer changes nothing.
#[test]
fn failed_exchange_is_peer_down() {
    let mut net = Net::new(&[1, 2, 3, 4], u64::MAX);
    net.arc(1, 2);
    net.arc(1, 3);
    let out = net.input(1, Input::Timer(Timer::Shuffle));
    assert!(matches!(out[1], Output::Send { to: 2, .. }));
    let out = net.input(1, Input::Timer(Timer::ExchangeTimeout { id: 0 }));
    assert_eq!(
        out,
        vec![Output::CloseArc { to: 2 }, Output::OpenArc { to: 3 }]
    );
    net.settle(1, out);
    assert_eq!(net.views(1).0, vec![3, 3]);
    let late = net.input(
        1,
        Input::Message {
            from: 2,
            payload: Message::<u32>::ExchangeReply {
                id: 0,
                mean_view: 2.0,
                sample: vec![(3, 0)],
            }
            .encode(),
        },
    );
    assert_eq!(late, vec![]);
    assert_eq!(net.peer(1).pending_exchange(), None);
    // The next round shuffles again.
    let out = net.input(1, Input::Timer(Timer::Shuffle));
    assert!(matches!(out[1], Output::Send { to: 3, .. }), "{out:?}");
}

/// 1 holds [2, 3, 4] and is reached from [2, 5, 5]. Leaving, it bridges
/// |P| − 1 = 2 (inview, outview) pairs through itself, tells its inview, then
/// closes the rest after the linger.
#[test]
fn graceful_leave() {
    let mut net = Net::new(&[1, 2, 3, 4, 5], 0);
    net.arc(1, 2);
    net.arc(1, 3);
    net.arc(1, 4);
    net.arc(2, 1);
    net.arc(5, 1);
    net.arc(5, 1);
    let before = net.arcs();
    let t0 = net.now;
    let out = net.input(1, Input::Leave);
    assert_eq!(
        out,
        vec![
            Output::Bridge { from: 2, to: 3 },
            Output::Bridge { from: 2, to: 4 },
            send(2, Message::Leave),
            send(5, Message::Leave),
            Output::SetTimer {
                at: t0 + Config::default().leave_linger,
                timer: Timer::Leave
            },
        ]
    );
    assert!(net.peer(1).is_leaving());
    net.settle(1, out);
    // The inview closed its arcs to 1 without crash handling.
    assert_eq!(net.views(1).1, Vec::<u32>::new());
    assert_eq!(net.views(2).0, vec![3, 4]);
    // Exchanges are refused while leaving.
    let refused = net.input(
        1,
        Input::Message {
            from: 3,
            payload: Message::<u32>::Exchange {
                id: 5,
                mean_view: 1.0,
                sample: vec![],
            }
            .encode(),
        },
    );
    assert_eq!(refused, vec![]);
    let out = net.input(1, Input::Timer(Timer::Leave));
    assert_eq!(
        out,
        vec![
            Output::CloseArc { to: 2 },
            Output::CloseArc { to: 3 },
            Output::CloseArc { to: 4 },
        ]
    );
    net.settle(1, out);
    assert_eq!(net.views(1), (vec![], vec![]));
    assert_eq!(
        net.peer(1).connection_state(),
        ConnectionState::Disconnected
    );
    // 6 arcs touched 1; 2 were bridged: 4 fewer arcs (|P| + 1 = a join's worth).
    assert_eq!(net.arcs(), before - 4);
}

#[test]
fn garbage_is_dropped() {
    let mut net = Net::new(&[1, 2], 0);
    net.arc(1, 2);
    for payload in [vec![], vec![0xff], vec![2, 1, 2], vec![1, 1]] {
        assert_eq!(net.input(1, Input::Message { from: 2, payload }), vec![]);
    }
    assert_eq!(net.views(1).0, vec![2]);
}
