//! A tiny environment for exact scenarios: peers are `u32`, every output is
//! applied at once and in order, with the semantics the node runtime gives them.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::time::Instant;

use n2n_core::Direction;
use n2n_core::overlay::{ArcCloseReason, Input, Output, Overlay};
use n2n_overlay_spray::spray::{self, Timer};
use rand::RngCore;

/// An RNG that always yields the same word: `ConstRng(0)` makes every draw
/// the lowest value (no probabilistic duplication, first sample element),
/// `ConstRng(u64::MAX)` the highest (always duplicate, last element).
#[derive(Debug, Clone)]
pub struct ConstRng(pub u64);

impl RngCore for ConstRng {
    fn next_u32(&mut self) -> u32 {
        self.0 as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.0
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for (i, b) in dst.iter_mut().enumerate() {
            *b = self.0.to_le_bytes()[i % 8];
        }
    }
}

pub type Peer = spray::State<u32, ConstRng>;
pub type Out = Output<u32, Timer>;

pub struct Net {
    pub now: Instant,
    pub peers: BTreeMap<u32, Peer>,
}

impl Net {
    /// Peers `ids`, all drawing `word` from their RNG.
    pub fn new(ids: &[u32], word: u64) -> Self {
        Self::with_config(ids, word, spray::Config::default())
    }

    /// Peers `ids` with settings `config`, all drawing `word`.
    pub fn with_config(ids: &[u32], word: u64, config: spray::Config) -> Self {
        let peers = ids
            .iter()
            .map(|&id| (id, spray::State::new(id, config.clone(), ConstRng(word))))
            .collect();
        Self {
            now: Instant::now(),
            peers,
        }
    }

    pub fn peer(&self, id: u32) -> &Peer {
        &self.peers[&id]
    }

    /// Feeds one input to `id` and returns everything it outputs.
    pub fn input(&mut self, id: u32, input: Input<u32, Timer>) -> Vec<Out> {
        let now = self.now;
        let p = self.peers.get_mut(&id).expect("known peer");
        p.handle(now, input);
        std::iter::from_fn(|| p.poll_output()).collect()
    }

    /// Opens an arc `from → to` as set-up, ignoring the outputs.
    pub fn arc(&mut self, from: u32, to: u32) {
        self.input(
            from,
            Input::ArcOpened {
                peer: to,
                direction: Direction::Outgoing,
            },
        );
        self.input(
            to,
            Input::ArcOpened {
                peer: from,
                direction: Direction::Incoming,
            },
        );
    }

    /// Applies one output of `at` as the environment would; returns the
    /// outputs this caused, per peer, in order.
    pub fn apply(&mut self, at: u32, output: Out) -> Vec<(u32, Vec<Out>)> {
        let mut caused = Vec::new();
        let mut feed = |net: &mut Self, id: u32, input| {
            let out = net.input(id, input);
            if !out.is_empty() {
                caused.push((id, out));
            }
        };
        let (out, inc) = (Direction::Outgoing, Direction::Incoming);
        match output {
            Output::Send { to, payload } => feed(self, to, Input::Message { from: at, payload }),
            Output::OpenArc { to } => {
                feed(
                    self,
                    at,
                    Input::ArcOpened {
                        peer: to,
                        direction: out,
                    },
                );
                feed(
                    self,
                    to,
                    Input::ArcOpened {
                        peer: at,
                        direction: inc,
                    },
                );
            }
            Output::CloseArc { to } => {
                let reason = ArcCloseReason::Closed;
                feed(
                    self,
                    at,
                    Input::ArcClosed {
                        peer: to,
                        direction: out,
                        reason: reason.clone(),
                    },
                );
                feed(
                    self,
                    to,
                    Input::ArcClosed {
                        peer: at,
                        direction: inc,
                        reason,
                    },
                );
            }
            Output::Bridge { from, to } => {
                feed(
                    self,
                    from,
                    Input::ArcOpened {
                        peer: to,
                        direction: out,
                    },
                );
                feed(
                    self,
                    to,
                    Input::ArcOpened {
                        peer: from,
                        direction: inc,
                    },
                );
            }
            Output::SetTimer { .. } | Output::StateChanged(_) => {}
            other => panic!("Spray asked for {other:?}"),
        }
        caused
    }

    /// Applies all `outputs` of `at`, and recursively what they cause,
    /// ignoring timers and state changes.
    pub fn settle(&mut self, at: u32, outputs: Vec<Out>) {
        for o in outputs {
            for (id, more) in self.apply(at, o) {
                self.settle(id, more);
            }
        }
    }

    /// `(outview, inview)` of `id` as sorted lists of occurrences.
    pub fn views(&self, id: u32) -> (Vec<u32>, Vec<u32>) {
        let p = self.peer(id);
        (
            p.outview().occurrences().copied().collect(),
            p.inview().occurrences().copied().collect(),
        )
    }

    /// Total arcs, checked equal from both ends.
    pub fn arcs(&self) -> usize {
        let out: usize = self.peers.values().map(|p| p.outview().len()).sum();
        let inc: usize = self.peers.values().map(|p| p.inview().len()).sum();
        assert_eq!(out, inc, "Σ outviews == Σ inviews");
        out
    }
}
