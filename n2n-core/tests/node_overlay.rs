//! The node runtime drives a sans-IO overlay: join, arcs, messages, typed
//! timers, bridges; and a stack composed from a TOML file with plugins.

mod common;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{key, settle};
use n2n_core::memory::{MemoryNetwork, MemorySignalingHub};
use n2n_core::node::{ArcError, Builder, Config, Event, OverlayError};
use n2n_core::overlay::{ConnectionState, Erased, Input, Output, Overlay};
use n2n_core::plugin::{PluginError, StackConfig};
use n2n_core::{Direction, Inview, Outview, PeerId, ProtocolId};

const TOY: ProtocolId = ProtocolId::from_name("toy");

#[derive(Clone, Debug)]
enum ToyTimer {
    Tick,
}

/// Joins by opening an arc to the contact and greeting it; the contact answers by
/// bridging its other outview neighbours to the newcomer. Ticks every second.
#[derive(Debug, Default)]
struct Toy {
    inview: Inview,
    outview: Outview,
    outputs: VecDeque<Output<PeerId, ToyTimer>>,
    ticks: u32,
    greetings: u32,
}

impl Overlay<PeerId> for Toy {
    type Timer = ToyTimer;

    fn protocol(&self) -> ProtocolId {
        TOY
    }

    fn handle(&mut self, now: Instant, input: Input<PeerId, ToyTimer>) {
        match input {
            Input::Join { contact } => {
                self.outputs.push_back(Output::OpenArc { to: contact });
                self.outputs.push_back(Output::Send {
                    to: contact,
                    payload: b"hello".to_vec(),
                });
                self.outputs.push_back(Output::SetTimer {
                    at: now + Duration::from_secs(1),
                    timer: ToyTimer::Tick,
                });
            }
            Input::Message { from, payload } if payload == b"hello" => {
                self.greetings += 1;
                for peer in self.outview.occurrences().copied().collect::<Vec<_>>() {
                    if peer != from {
                        self.outputs.push_back(Output::Bridge {
                            from: peer,
                            to: from,
                        });
                    }
                }
                self.outputs.push_back(Output::OpenArc { to: from });
            }
            Input::ArcOpened { peer, direction } => {
                let before = ConnectionState::of(self.inview.len(), self.outview.len());
                match direction {
                    Direction::Incoming => self.inview.insert(peer),
                    Direction::Outgoing => self.outview.insert(peer),
                };
                let after = ConnectionState::of(self.inview.len(), self.outview.len());
                if before != after {
                    self.outputs.push_back(Output::StateChanged(after));
                }
            }
            Input::ArcClosed {
                peer, direction, ..
            } => {
                match direction {
                    Direction::Incoming => self.inview.remove(&peer),
                    Direction::Outgoing => self.outview.remove(&peer),
                };
            }
            Input::Timer(ToyTimer::Tick) => {
                self.ticks += 1;
                if self.ticks < 3 {
                    self.outputs.push_back(Output::SetTimer {
                        at: now + Duration::from_secs(1),
                        timer: ToyTimer::Tick,
                    });
                }
            }
            _ => {}
        }
    }

    fn poll_output(&mut self) -> Option<Output<PeerId, ToyTimer>> {
        self.outputs.pop_front()
    }

    fn peers(&mut self, k: usize) -> Vec<PeerId> {
        self.outview.peers().take(k).copied().collect()
    }
}

#[tokio::test(start_paused = true)]
async fn the_runtime_drives_an_overlay() {
    let network = MemoryNetwork::new();
    let hub = MemorySignalingHub::earliest_contact();
    let mut nodes = Vec::new();
    for seed in 1..=3u64 {
        let keypair = key(seed);
        let node = Builder::new(keypair)
            .config(Config {
                seed: Some(seed),
                ..Config::default()
            })
            .transport(Arc::new(network.transport()))
            .overlay(Box::new(Erased::new(Toy::default())))
            .spawn()
            .unwrap();
        let sig = hub.attach(node.local_peer_id());
        let contact = node.handle().join(TOY, sig).await.unwrap();
        assert_eq!(contact.is_some(), seed > 1, "the first peer has no contact");
        settle().await;
        nodes.push(node);
    }
    settle().await;
    let ids: Vec<PeerId> = nodes.iter().map(|n| n.local_peer_id()).collect();
    // Peer 3 joined through peer 1 (the earliest on the hub), which bridged its other
    // neighbour (peer 2) to peer 3: 2 → 3 exists without any server involvement.
    let s3 = nodes[2].handle().snapshot().await;
    assert_eq!(s3.view(TOY).0.count(&ids[1]), 1, "bridged arc 2 → 3");
    assert_eq!(s3.view(TOY).0.count(&ids[0]), 1, "contact answered 1 → 3");
    assert_eq!(s3.view(TOY).1.count(&ids[0]), 1, "join arc 3 → 1");
    // Runtime and overlay agree on the views.
    let peers = nodes[2].handle().peers(TOY, 10).await.unwrap();
    assert_eq!(peers, vec![ids[0]]);
    // The application reads and steers the overlay through the handle.
    let h = nodes[0].handle();
    assert_eq!(h.query(TOY, |t: &Toy| t.greetings).await, Ok(2));
    assert_eq!(
        h.command(TOY, |t: &mut Toy, _now| {
            t.greetings = 10;
            t.greetings
        })
        .await,
        Ok(10)
    );
    // Bad input is an error, never a silent no-op.
    let missing = ProtocolId::from_name("missing");
    assert_eq!(
        h.query(missing, |t: &Toy| t.ticks).await,
        Err(OverlayError::UnknownOverlay(missing))
    );
    assert!(matches!(
        h.query(TOY, |n: &u32| *n).await,
        Err(OverlayError::WrongType { .. })
    ));
    assert_eq!(
        h.peers(missing, 1).await,
        Err(ArcError::UnknownOverlay(missing))
    );
    assert_eq!(
        h.join_via(missing, ids[1]).await,
        Err(ArcError::UnknownOverlay(missing))
    );
    // Overlay state changes reach the application.
    let mut saw_state = false;
    while let Some(e) = nodes[2].try_next_event() {
        saw_state |= matches!(
            e,
            Event::OverlayState {
                state: ConnectionState::Connected,
                ..
            }
        );
    }
    assert!(saw_state);
    // Timers fire on the virtual clock; then all is quiet.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let total: usize = {
        let mut t = 0;
        for n in &nodes {
            let s = n.handle().snapshot().await;
            t += s.view(TOY).1.len();
            assert_eq!(s.handshakes, 0);
        }
        t
    };
    let inbound: usize = {
        let mut t = 0;
        for n in &nodes {
            t += n.handle().snapshot().await.view(TOY).0.len();
        }
        t
    };
    assert_eq!(total, inbound, "Σ outviews = Σ inviews");
}

#[tokio::test]
async fn a_stack_from_toml_uses_linked_plugins() {
    let stack = StackConfig::from_toml_str(
        r#"
        [node]
        seed = 3
        linger_ms = 100

        [transport]
        name = "memory"

        [signaling]
        name = "memory"
        "#,
    )
    .unwrap();
    let (builder, signaling) = Builder::from_stack(key(3), &stack).await.unwrap();
    assert_eq!(
        signaling.as_ref().map(|s| s.name().to_string()),
        Some("memory".into())
    );
    let node = builder.protocol(TOY).spawn().unwrap();
    assert_eq!(node.local_peer_id(), key(3).peer_id());
    node.shutdown().await;

    let unknown = StackConfig::from_toml_str("[transport]\nname = \"smoke-signals\"\n").unwrap();
    let err = Builder::from_stack(key(3), &unknown).await.unwrap_err();
    assert!(
        matches!(
            err,
            PluginError::Unknown {
                kind: "transport",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("memory"),
        "lists the linked ones: {err}"
    );

    let bad = StackConfig::from_toml_str("[transport]\nname = \"memory\"\nspeed = 3\n").unwrap();
    assert!(matches!(
        Builder::from_stack(key(3), &bad).await,
        Err(PluginError::Settings { .. })
    ));

    // Every `[node]` key of `node::Config` is in the stack file.
    let full = StackConfig::from_toml_str(
        "[node]\nmax_peers = 7\nevent_capacity = 9\ndata_queue = 3\nmax_arcs_per_peer = 2\nmax_handshakes = 5\ncontrol_queue = 11\nevent_bytes = 4096\n[transport]\nname = \"memory\"\n",
    )
    .unwrap();
    let c = full.node.config();
    assert_eq!(
        (
            c.max_peers,
            c.event_capacity,
            c.data_queue,
            c.max_arcs_per_peer
        ),
        (7, 9, 3, 2)
    );
    assert_eq!(
        (c.max_handshakes, c.control_queue, c.event_bytes),
        (5, 11, 4096)
    );
    // The hint names a crate of the right kind.
    let err = n2n_core::plugin::overlay("nope").unwrap_err().to_string();
    assert!(err.contains("n2n_overlay_spray"), "{err}");
}

/// An overlay that samples another one.
#[derive(Debug, Default)]
struct Layered(Toy);

impl Overlay<PeerId> for Layered {
    type Timer = ToyTimer;
    fn protocol(&self) -> ProtocolId {
        ProtocolId::from_name("layered")
    }
    fn handle(&mut self, now: Instant, input: Input<PeerId, ToyTimer>) {
        self.0.handle(now, input);
    }
    fn poll_output(&mut self) -> Option<Output<PeerId, ToyTimer>> {
        self.0.poll_output()
    }
    fn peers(&mut self, k: usize) -> Vec<PeerId> {
        self.0.peers(k)
    }
    fn layers_on(&self) -> Vec<ProtocolId> {
        vec![TOY]
    }
}

#[tokio::test]
async fn duplicate_ids_and_missing_layers_are_refused_at_build_time() {
    let network = MemoryNetwork::new();
    let builder = || Builder::new(key(9)).transport(Arc::new(network.transport()));
    let err = builder()
        .overlay(Box::new(Erased::new(Toy::default())))
        .overlay(Box::new(Erased::new(Toy::default())))
        .spawn()
        .unwrap_err();
    assert!(
        matches!(err, PluginError::DuplicateProtocol(p) if p == TOY),
        "{err}"
    );
    assert!(err.to_string().contains("toy"), "names the protocol: {err}");
    let err = builder()
        .overlay(Box::new(Erased::new(Layered::default())))
        .spawn()
        .unwrap_err();
    assert!(
        matches!(err, PluginError::MissingLayer { layer, .. } if layer == TOY),
        "{err}"
    );
    let node = builder()
        .overlay(Box::new(Erased::new(Toy::default())))
        .overlay(Box::new(Erased::new(Layered::default())))
        .spawn()
        .expect("the layer is there");
    node.shutdown().await;
}
