//! What Spray consents to when a neighbour misbehaves: repeated joins,
//! exchanges that drain the view, a mean view set from outside, and bridge
//! orders nobody announced.

mod common;

use common::Net;
use n2n_core::overlay::{Admission, Input, Output, Overlay};
use n2n_overlay_spray::spray::{Message, UNANNOUNCED_PER_ROUND};

fn msg(from: u32, m: Message<u32>) -> Input<u32, n2n_overlay_spray::spray::Timer> {
    Input::Message {
        from,
        payload: m.encode(),
    }
}

fn bridges(out: &[common::Out]) -> usize {
    out.iter()
        .filter(|o| matches!(o, Output::Bridge { .. }))
        .count()
}

/// Peer 1 with arcs to 3..3+n, and attacker 2 with one arc to 1.
fn victim(n: u32) -> Net {
    let ids: Vec<u32> = (1..3 + n).collect();
    let mut net = Net::new(&ids, 0);
    for t in 3..3 + n {
        net.arc(1, t);
    }
    net.arc(2, 1);
    net
}

#[test]
fn a_join_is_served_once_per_newcomer() {
    let mut net = victim(3);
    let first = net.input(1, msg(2, Message::Join));
    assert_eq!(bridges(&first), 3);
    for _ in 0..100 {
        let again = net.input(1, msg(2, Message::Join));
        assert_eq!(bridges(&again), 0, "a repeated join orders nothing");
    }
}

#[test]
fn a_join_is_fresh_again_once_the_newcomer_held_no_arc() {
    let mut net = victim(2);
    assert_eq!(bridges(&net.input(1, msg(2, Message::Join))), 2);
    net.input(
        1,
        Input::ArcClosed {
            peer: 2,
            direction: n2n_core::Direction::Incoming,
            reason: n2n_core::overlay::ArcCloseReason::Closed,
        },
    );
    net.arc(2, 1);
    assert_eq!(bridges(&net.input(1, msg(2, Message::Join))), 2);
}

fn exchange(id: u64, mean_view: f32, sample: Vec<(u32, u32)>) -> Message<u32> {
    Message::Exchange {
        id,
        mean_view,
        sample,
    }
}

#[test]
fn repeated_exchanges_do_not_drain_the_view() {
    // Arcs given away wait for their bridges: until then (and the partner
    // never carries them out), further exchanges are declined.
    let mut net = awaiting_victim(10);
    for id in 0..4 {
        // The arc the attacker announced never comes: past its wait, 1 is
        // settled again.
        net.now += std::time::Duration::from_secs(11);
        let out = net.input(1, msg(2, exchange(id, 1.0, vec![(2, 0)])));
        // Any close the answer asks for is carried out; the bridges never.
        for o in out {
            if let Output::CloseArc { .. } = o {
                net.settle(1, vec![o]);
            }
        }
    }
    assert!(
        net.peer(1).outview().len() >= 5,
        "view of {} after four exchanges",
        net.peer(1).outview().len()
    );
}

#[test]
fn an_exchange_whose_sample_lacks_its_sender_is_ignored() {
    let mut net = victim(4);
    let out = net.input(1, msg(2, exchange(0, 1.0, vec![(7, 0), (8, 0)])));
    assert!(
        out.iter()
            .all(|o| !matches!(o, Output::Send { .. } | Output::CloseArc { .. }))
    );
    assert_eq!(net.peer(1).outview().len(), 4);
}

#[test]
fn a_partner_cannot_set_the_mean_view() {
    let mut net = victim(4);
    let before = net.peer(1).mean_view();
    net.input(1, msg(2, exchange(0, 1000.0, vec![(2, 0)])));
    let after = net.peer(1).mean_view();
    assert!(after <= before * 4.0 + 4.0, "mean view {after}");
    assert!(net.peer(1).size_estimate().is_finite());
}

#[test]
fn bridge_orders_need_an_announcement_or_an_arc_and_are_bounded() {
    let mut net = victim(2);
    let now = net.now;
    let p = net.peers.get_mut(&1).unwrap();
    // A stranger's order.
    let stranger = Admission::ConnectTo { relay: 99, to: 3 };
    assert!(p.admit(now, &stranger).is_err());
    // A neighbour with one arc to us: its forwarded joins, bounded per round.
    let order = Admission::ConnectTo { relay: 2, to: 50 };
    let accepted = (0..1000).filter(|_| p.admit(now, &order).is_ok()).count();
    assert_eq!(accepted, UNANNOUNCED_PER_ROUND as usize + 1);
}

#[test]
fn orders_announced_in_an_exchange_are_accepted() {
    let mut net = victim(4);
    // 2 shuffles with 1 and gives it an arc to 40 (and one to itself).
    net.input(1, msg(2, exchange(0, 1.0, vec![(2, 0), (40, 0)])));
    let now = net.now;
    let p = net.peers.get_mut(&1).unwrap();
    for _ in 0..100 {
        assert!(
            p.admit(now, &Admission::ConnectTo { relay: 2, to: 40 })
                .is_ok()
        );
    }
}

/// As [`victim`], with arcs given away closed only once their bridges succeed.
fn awaiting_victim(n: u32) -> Net {
    let ids: Vec<u32> = (1..3 + n).collect();
    let config = n2n_overlay_spray::spray::Config {
        await_bridges: true,
        ..Default::default()
    };
    let mut net = Net::with_config(&ids, 0, config);
    for t in 3..3 + n {
        net.arc(1, t);
    }
    net.arc(2, 1);
    net
}

#[test]
fn a_partner_that_never_carries_out_its_bridges_cannot_drain_the_view() {
    let mut net = awaiting_victim(10);
    for round in 0..8u64 {
        net.now += std::time::Duration::from_secs(61);
        net.input(1, Input::Timer(n2n_overlay_spray::spray::Timer::Shuffle));
        // 1's own shuffle of the round is declined by its partner.
        if let Some((&partner, id)) = net.peer(1).pending_exchange() {
            let decline = Message::ExchangeReply {
                id,
                mean_view: 1.0,
                sample: Vec::new(),
            };
            net.input(1, msg(partner, decline));
        }
        let out = net.input(1, msg(2, exchange(round, 1.0, vec![(2, 0)])));
        assert!(bridges(&out) > 0, "round {round}: the exchange is answered");
        assert!(out.iter().all(|o| !matches!(o, Output::CloseArc { .. })));
        // The bridges the answer asked for never succeed: they time out.
        for o in out {
            if let Output::Bridge { from, to } = o {
                net.input(
                    1,
                    Input::BridgeFailed {
                        from,
                        to,
                        reason: "timeout".into(),
                    },
                );
            }
        }
    }
    assert_eq!(net.peer(1).outview().len(), 10);
    assert_eq!(net.peer(1).view_size(), 10);
}

#[test]
fn an_arc_given_away_closes_once_its_bridge_succeeded() {
    let mut net = awaiting_victim(4);
    let out = net.input(1, msg(2, exchange(0, 1.0, vec![(2, 0)])));
    let given: Vec<(u32, u32)> = out
        .iter()
        .filter_map(|o| match o {
            Output::Bridge { from, to } => Some((*from, *to)),
            _ => None,
        })
        .collect();
    assert_eq!(given.len(), 2);
    let (from, to) = given[0];
    let closed = net.input(1, Input::BridgeDone { from, to });
    assert_eq!(
        closed
            .iter()
            .filter(|o| matches!(o, Output::CloseArc { .. }))
            .count(),
        1
    );
    // The other one failed: it stays ours, live again.
    let (from, to) = given[1];
    net.input(
        1,
        Input::BridgeFailed {
            from,
            to,
            reason: "refused".into(),
        },
    );
    assert_eq!(net.peer(1).view_size(), 3);
    assert_eq!(net.peer(1).partial_view().count(), 3);
}
