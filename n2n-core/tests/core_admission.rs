//! Consent on the harness: an overlay refuses the bridge orders it did not
//! ask for (`Overlay::admit`), and an overlay whose own arc meets the
//! per-peer limit is not fed a failure it would answer with the same arc
//! again (the `TooManyArcs → ConnectFailed → OpenArc` loop).

mod common;

use std::collections::VecDeque;

use common::harness::{self as h, snap};
use common::{key, test_config};
use n2n_core::harness::Network;
use n2n_core::node::{Config, Event};
use n2n_core::overlay::{Admission, ArcCloseReason, Denied, Erased, Input, Output, Overlay, Views};
use n2n_core::time::Instant;
use n2n_core::wire::{BridgeFailure, Message, ProtocolId};
use n2n_core::{Direction, Inview, Outview, PeerId};

const TOY: ProtocolId = ProtocolId::from_name("toy-consent");

/// Refuses every bridge order when `refuse`, every incoming arc when
/// `refuse_arcs`; on `b"more"` opens `n` arcs to
/// the sender; answers every failed arc by opening it again (as Spray's
/// arc-down rule does).
#[derive(Debug, Default)]
struct Toy {
    refuse: bool,
    refuse_arcs: bool,
    more: u32,
    inview: Inview,
    outview: Outview,
    outputs: VecDeque<Output<PeerId, ()>>,
}

impl Overlay<PeerId> for Toy {
    type Timer = ();

    fn protocol(&self) -> ProtocolId {
        TOY
    }

    fn handle(&mut self, _now: Instant, input: Input<PeerId, ()>) {
        match input {
            Input::Message { from, payload } if payload == b"more" => {
                for _ in 0..self.more {
                    self.outputs.push_back(Output::OpenArc { to: from });
                }
            }
            Input::ArcOpened { peer, direction } => {
                match direction {
                    Direction::Incoming => self.inview.insert(peer),
                    Direction::Outgoing => self.outview.insert(peer),
                };
            }
            Input::ArcClosed {
                peer, direction, ..
            } => {
                match direction {
                    Direction::Incoming => self.inview.remove(&peer),
                    Direction::Outgoing => self.outview.remove(&peer),
                };
            }
            Input::ConnectFailed { peer, .. } => {
                self.outputs.push_back(Output::OpenArc { to: peer })
            }
            _ => {}
        }
    }

    fn poll_output(&mut self) -> Option<Output<PeerId, ()>> {
        self.outputs.pop_front()
    }

    fn peers(&mut self, _k: usize) -> Vec<PeerId> {
        Vec::new()
    }

    fn admit(&mut self, _now: Instant, request: &Admission<PeerId>) -> Result<(), Denied> {
        match request {
            Admission::ConnectTo { .. } if self.refuse => Err(Denied::new("not announced")),
            Admission::ArcOpen { .. } if self.refuse_arcs => Err(Denied::new("no arcs wanted")),
            _ => Ok(()),
        }
    }
}

impl Views<PeerId> for Toy {
    fn inview(&self) -> &Inview {
        &self.inview
    }

    fn outview(&self) -> &Outview {
        &self.outview
    }
}

fn add(net: &mut Network, seed: u64, config: Config, toy: Option<Toy>) -> usize {
    let overlays: Vec<Box<dyn n2n_core::DynOverlay>> = match toy {
        Some(t) => vec![Box::new(Erased::new(t))],
        None => Vec::new(),
    };
    let mut config = config;
    config.seed = Some(seed);
    net.add_node_with_key(key(seed), config, overlays, vec![common::O, TOY])
}

#[test]
fn an_overlay_refuses_a_bridge_order_and_no_handshake_starts() {
    let mut net = Network::new(1);
    let toy = Toy {
        refuse: true,
        ..Toy::default()
    };
    let x = add(&mut net, 1, test_config(), Some(toy));
    let b = add(&mut net, 2, test_config(), None);
    let c = add(&mut net, 3, test_config(), None);
    h::connect(&mut net, x, b).unwrap();
    h::connect(&mut net, c, b).unwrap();
    for _ in 0..100 {
        let ticket = net.ticket(b);
        let (px, pc) = (net.peer(x), net.peer(c));
        net.with_core(b, |core, now| core.bridge(now, TOY, px, pc, Some(ticket)));
        net.drive();
        assert_eq!(
            h::bridge_result(&mut net, b, ticket),
            Some(Err(BridgeFailure::Refused))
        );
    }
    let s = snap(&net, x);
    assert!(
        !s.is_connected(&net.peer(c)),
        "x connected to c without consent"
    );
    assert_eq!(s.refusals, 100);
    assert_eq!(s.handshakes, 0);
    assert_eq!(s.view(TOY).1.len(), 0);
}

#[test]
fn an_arc_over_the_per_peer_limit_does_not_loop_and_views_agree() {
    let mut net = Network::new(2);
    let config = Config {
        max_arcs_per_peer: 2,
        ..test_config()
    };
    let toy = Toy {
        more: 3,
        ..Toy::default()
    };
    let x = add(&mut net, 1, config, Some(toy));
    let y = add(&mut net, 2, test_config(), None);
    h::connect(&mut net, y, x).unwrap();
    net.events(x);
    let more = h::frame(&Message::Overlay {
        overlay: TOY,
        payload: b"more".to_vec(),
    });
    assert!(net.inject_frame(y, x, more));
    let steps = net.drive_bounded(100_000).expect("no livelock");
    let failed = net
        .events(x)
        .into_iter()
        .filter(|e| matches!(e, Event::ConnectFailed { .. }))
        .count();
    assert_eq!(
        failed, 1,
        "one arc over the limit, one failure ({steps} steps)"
    );
    assert_eq!(h::out_count(&net, x, y), 0, "O untouched");
    assert_eq!(snap(&net, x).view(TOY).1.count(&net.peer(y)), 2);
    h::assert_consistent(&net);
}

#[test]
fn an_overlay_refuses_an_incoming_arc_and_both_ends_forget_it() {
    let mut net = Network::new(3);
    let refusing = Toy {
        refuse_arcs: true,
        ..Toy::default()
    };
    let x = add(&mut net, 1, test_config(), Some(refusing));
    let y = add(&mut net, 2, test_config(), Some(Toy::default()));
    h::connect(&mut net, y, x).unwrap();
    net.events(y);
    let px = net.peer(x);
    for _ in 0..10 {
        net.with_core(y, |core, now| core.open_arc(now, TOY, px))
            .expect("y may open an arc to its neighbour");
        net.drive();
    }
    // Neither end keeps the arc: x's overlay refused it, y removed it.
    assert_eq!(snap(&net, x).view(TOY).0.len(), 0);
    assert_eq!(snap(&net, y).view(TOY).1.len(), 0);
    let s = snap(&net, x);
    assert_eq!(s.refusals, 10);
    assert_eq!(s.protocol_violations, 0, "a refusal is no violation");
    // y's application hears that each arc went, and why.
    let refused = net
        .events(y)
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                Event::ArcClosed {
                    reason: ArcCloseReason::Refused(_),
                    ..
                }
            )
        })
        .count();
    assert_eq!(refused, 10);
    h::assert_consistent(&net);
}
