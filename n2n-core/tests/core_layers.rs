//! The overlay side of the node, exactly, on the deterministic harness: a
//! peer reached through a neighbour (`Output::Connect`), samples of another
//! overlay (`Output::Sample`), connection events, and every failure coming
//! back as an input — never a silent drop.

use std::collections::VecDeque;

use n2n_core::harness::Network;
use n2n_core::node::Config;
use n2n_core::node::core::NodeCore;
use n2n_core::overlay::{DynOverlay, Input, Output, TimerToken};
use n2n_core::time::Instant;
use n2n_core::{Direction, PeerId, ProtocolId};

const LAYER: ProtocolId = ProtocolId::from_name("layer");
const BASE: ProtocolId = ProtocolId::from_name("base");

/// Records its inputs; emits what the test asks.
#[derive(Debug)]
struct Probe {
    id: ProtocolId,
    inputs: Vec<Input<PeerId, TimerToken>>,
    outputs: VecDeque<Output<PeerId, TimerToken>>,
}

impl Probe {
    fn boxed(id: ProtocolId) -> Box<dyn DynOverlay> {
        Box::new(Self {
            id,
            inputs: Vec::new(),
            outputs: VecDeque::new(),
        })
    }
}

impl DynOverlay for Probe {
    fn protocol(&self) -> ProtocolId {
        self.id
    }
    fn handle(&mut self, _now: Instant, input: Input<PeerId, TimerToken>) {
        self.inputs.push(input);
    }
    fn poll_output(&mut self) -> Option<Output<PeerId, TimerToken>> {
        self.outputs.pop_front()
    }
    fn peers(&mut self, k: usize) -> Vec<PeerId> {
        // The base overlay samples its arcs' peers.
        self.inputs
            .iter()
            .filter_map(|i| match i {
                Input::ArcOpened { peer, .. } => Some(*peer),
                _ => None,
            })
            .take(k)
            .collect()
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// Makes the layer of node `i` emit `output`, and returns what it heard since.
fn emit(
    net: &mut Network,
    i: usize,
    output: Output<PeerId, TimerToken>,
) -> Vec<Input<PeerId, TimerToken>> {
    let before = net
        .core(i)
        .overlay::<Probe>(LAYER)
        .expect("probe")
        .inputs
        .len();
    net.with_core(i, |core: &mut NodeCore, now| {
        core.with_overlay(now, LAYER, |p: &mut Probe, _| p.outputs.push_back(output))
            .expect("the layer runs");
    });
    net.drive();
    net.core(i).overlay::<Probe>(LAYER).expect("probe").inputs[before..].to_vec()
}

#[test]
fn an_overlay_reaches_a_peer_through_a_neighbour_and_samples_another_overlay() {
    let mut net = Network::new(18);
    let nodes: Vec<usize> = (0..3)
        .map(|_| {
            net.add_node(
                Config::default(),
                vec![Probe::boxed(BASE), Probe::boxed(LAYER)],
                vec![],
            )
        })
        .collect();
    let (a, b, c) = (nodes[0], nodes[1], nodes[2]);
    // a — b — c, with base arcs.
    net.connect(a, b, Some(BASE));
    net.connect(c, b, Some(BASE));
    net.drive();
    let (pa, pb, pc) = (net.peer(a), net.peer(b), net.peer(c));
    // Connection events reach every overlay.
    let layer_of_b = &net.core(b).overlay::<Probe>(LAYER).expect("probe").inputs;
    assert!(layer_of_b.contains(&Input::Connected { peer: pa }));
    assert!(layer_of_b.contains(&Input::Connected { peer: pc }));

    // A sample of the base overlay, answered with the same tag.
    let heard = emit(
        &mut net,
        a,
        Output::Sample {
            overlay: BASE,
            k: 4,
            tag: 7,
        },
    );
    assert_eq!(
        heard,
        vec![Input::Sampled {
            overlay: BASE,
            tag: 7,
            result: Ok(vec![pb])
        }]
    );
    // A missing overlay is an error, at call time.
    let missing = ProtocolId::from_name("missing");
    let heard = emit(
        &mut net,
        a,
        Output::Sample {
            overlay: missing,
            k: 1,
            tag: 8,
        },
    );
    assert!(
        matches!(&heard[..], [Input::Sampled { tag: 8, result: Err(e), .. }] if e.contains("missing")),
        "{heard:?}"
    );
    // A send to a peer that is not a neighbour comes back as SendFailed.
    let heard = emit(
        &mut net,
        a,
        Output::Send {
            to: pc,
            payload: b"x".to_vec(),
        },
    );
    assert!(
        matches!(&heard[..], [Input::SendFailed { to, .. }] if *to == pc),
        "{heard:?}"
    );
    // Through neighbour b, a reaches c and opens a layer arc to it.
    let heard = emit(&mut net, a, Output::Connect { via: pb, to: pc });
    assert!(heard.contains(&Input::Connected { peer: pc }), "{heard:?}");
    assert!(
        heard.contains(&Input::ArcOpened {
            peer: pc,
            direction: Direction::Outgoing
        }),
        "{heard:?}"
    );
    assert_eq!(net.core(c).views(LAYER).expect("views").0.count(&pa), 1);
    // Through a peer that is not a neighbour: ConnectFailed, nothing silent.
    let stranger = net.add_node(
        Config::default(),
        vec![Probe::boxed(BASE), Probe::boxed(LAYER)],
        vec![],
    );
    let heard = emit(&mut net, stranger, Output::Connect { via: pa, to: pb });
    assert!(
        matches!(&heard[..], [Input::ConnectFailed { peer, .. }] if *peer == pb),
        "{heard:?}"
    );
}
