//! Exact small scenarios of the Spray state machine, continued: what a peer
//! offers from its views, its size estimates, and the exchanges it ignores or
//! declines (every output checked).

mod common;

use common::Net;
use n2n_core::overlay::{Input, Output, Overlay};
use n2n_overlay_spray::spray::{Config, Message, Timer};

fn send(to: u32, m: Message<u32>) -> Output<u32, Timer> {
    Output::Send {
        to,
        payload: m.encode(),
    }
}

#[test]
fn peers_tops_up_from_the_inview() {
    let mut net = Net::new(&[1, 2, 3, 4, 5], 0);
    net.arc(1, 2);
    net.arc(1, 2);
    net.arc(1, 3);
    net.arc(4, 1);
    net.arc(2, 1);
    let p = net.peers.get_mut(&1).unwrap();
    let mut two = p.peers(2);
    two.sort();
    assert_eq!(two, vec![2, 3]);
    let mut all = p.peers(10);
    all.sort();
    assert_eq!(all, vec![2, 3, 4]);
    assert_eq!(p.peers(0), Vec::<u32>::new());
}

#[test]
fn size_estimates() {
    let mut net = Net::new(&[1, 2, 3, 4, 5, 6, 7, 8], 0);
    for to in 2..=8 {
        net.arc(1, to);
    }
    let p = net.peer(1);
    // 7 arcs: exp(7 − 0.077) ≈ 1015.
    assert!(
        (p.local_size_estimate() - 1015.0).abs() < 5.0,
        "{}",
        p.local_size_estimate()
    );
    assert!((p.size_estimate() - p.local_size_estimate()).abs() < 1e-9);
}

/// Only a peer holding an arc to us may shuffle with us: a stranger's
/// exchange would otherwise drain half our view at each message.
#[test]
fn exchange_from_a_stranger_is_ignored() {
    let mut net = Net::new(&[1, 2, 3], 0);
    net.arc(1, 2);
    net.arc(1, 3);
    let out = net.input(
        1,
        Input::Message {
            from: 3,
            payload: Message::<u32>::Exchange {
                id: 9,
                mean_view: 2.0,
                sample: vec![],
            }
            .encode(),
        },
    );
    assert_eq!(out, vec![]);
    assert_eq!(net.views(1).0, vec![2, 3]);
}

/// Two peers shuffle with each other at once: 2 holds only its arc to 1,
/// reserved for its own exchange, when 1's exchange arrives. 2 has nothing
/// to give, so it declines with an empty answer, and 1 keeps its sample
/// instead of giving half its view for nothing. 2's own exchange then goes
/// through as usual.
#[test]
fn a_partner_with_nothing_to_give_declines() {
    let mut net = Net::new(&[1, 2, 3], 0);
    net.arc(1, 2);
    net.arc(1, 3);
    net.arc(2, 1);
    let before = net.arcs();
    let from_2 = net.input(2, Input::Timer(Timer::Shuffle));
    let from_1 = net.input(1, Input::Timer(Timer::Shuffle));
    assert!(
        matches!(from_1[1], Output::Send { to: 2, .. }),
        "{from_1:?}"
    );
    // 1's exchange reaches 2, whose only arc is reserved.
    let out = net.input(
        2,
        Input::Message {
            from: 1,
            payload: payload(&from_1[1]),
        },
    );
    assert_eq!(
        out,
        vec![send(
            1,
            Message::ExchangeReply {
                id: 0,
                mean_view: 1.0,
                sample: vec![],
            }
        )]
    );
    // The empty answer aborts 1's exchange: nothing is given away.
    let out = net.input(
        1,
        Input::Message {
            from: 2,
            payload: payload(&out[0]),
        },
    );
    assert_eq!(out, vec![]);
    assert_eq!(net.peer(1).pending_exchange(), None);
    assert_eq!(net.views(1).0, vec![2, 3]);
    // 2's exchange reaches 1, which answers with ⌈2/2⌉ = 1 arc.
    net.settle(2, vec![from_2[1].clone()]);
    assert_eq!(net.peer(2).pending_exchange(), None);
    assert_eq!(net.views(1).0.len(), 2);
    assert_eq!(net.views(2).0.len(), 1);
    assert_eq!(net.arcs(), before);
    // 1's arcs are free again: its next round shuffles.
    let out = net.input(1, Input::Timer(Timer::Shuffle));
    assert!(matches!(out[1], Output::Send { .. }), "{out:?}");
}

/// A partner whose whole view is being closed (it gave it away in another
/// exchange) declines too.
#[test]
fn a_partner_with_an_empty_view_declines() {
    let mut net = Net::new(&[1, 2], 0);
    net.arc(1, 2);
    net.arc(2, 1);
    // 2 gives its one arc away (an exchange with 1 answered, not yet settled).
    let exchange = Message::<u32>::Exchange {
        id: 7,
        mean_view: 1.0,
        sample: vec![(1, 0)],
    };
    let out = net.input(
        2,
        Input::Message {
            from: 1,
            payload: exchange.encode(),
        },
    );
    assert_eq!(out.len(), 3, "{out:?}");
    assert_eq!(net.peer(2).view_size(), 0);
    let again = Message::<u32>::Exchange {
        id: 8,
        mean_view: 1.0,
        sample: vec![(1, 0)],
    };
    let out = net.input(
        2,
        Input::Message {
            from: 1,
            payload: again.encode(),
        },
    );
    assert_eq!(
        out,
        vec![send(
            1,
            Message::ExchangeReply {
                id: 8,
                mean_view: 1.0,
                sample: vec![],
            }
        )]
    );
}

fn payload(output: &Output<u32, Timer>) -> Vec<u8> {
    match output {
        Output::Send { payload, .. } => payload.clone(),
        other => panic!("not a send: {other:?}"),
    }
}

/// 2 answered 1's exchange and waits for 1's arc: its view is short of it,
/// so it declines 3's exchange rather than give half of a view it does not
/// hold yet. Once the arc is there (or forgotten after the exchange
/// timeout), it answers again.
#[test]
fn a_partner_waiting_for_arcs_declines() {
    let mut net = Net::new(&[1, 2, 3, 4], 0);
    net.arc(1, 2);
    net.arc(2, 4);
    net.arc(2, 4);
    net.arc(3, 2);
    let exchange = |id| Input::Message {
        from: if id == 0 { 1 } else { 3 },
        payload: Message::<u32>::Exchange {
            id,
            mean_view: 1.0,
            sample: vec![(if id == 0 { 1 } else { 3 }, 0)],
        }
        .encode(),
    };
    let out = net.input(2, exchange(0));
    assert_eq!(out.len(), 3, "an answer, a bridge and a close: {out:?}");
    assert!(!net.peer(2).is_settled());
    assert_eq!(net.peer(2).arcs_expected(), 1);
    let out = net.input(2, exchange(1));
    let declined = |out: &[Output<u32, Timer>]| {
        matches!(out, [Output::Send { to: 3, payload }]
            if matches!(Message::<u32>::decode(payload), Ok(Message::ExchangeReply { sample, .. }) if sample.is_empty()))
    };
    assert!(declined(&out), "{out:?}");
    // Its own round is skipped too.
    let out = net.input(2, Input::Timer(Timer::Shuffle));
    assert!(
        !out.iter().any(|o| matches!(o, Output::Send { .. })),
        "{out:?}"
    );
    // Past the exchange timeout (shorter than half a period) the announced
    // arc is forgotten.
    net.now += Config::default().exchange_timeout;
    let out = net.input(2, exchange(2));
    assert!(!declined(&out), "{out:?}");
    // 1's arc forgotten; 3's now expected.
    assert_eq!(net.peer(2).arcs_expected(), 1);
}
