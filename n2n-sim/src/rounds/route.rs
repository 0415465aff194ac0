//! Where the outputs of a peer go in the instant engine, and what each
//! step does when it is applied.

use n2n_core::Direction;
use n2n_core::overlay::{ArcCloseReason, Input, Output, Overlay, Views};
use rand::Rng;

use super::{Due, Rounds, Step, bit, micros};

impl<O: Overlay<u32> + Views<u32>> Rounds<O>
where
    O::Timer: PartialEq,
{
    pub(super) fn apply(&mut self, step: Step) {
        match step {
            Step::Message { from, to, payload } => {
                if self.is_alive(to) {
                    self.counters.messages += 1;
                    self.deliver(to, Input::Message { from, payload });
                } else {
                    self.counters.undeliverable += 1;
                }
            }
            Step::Open { from, to } => {
                if self.is_alive(from) && self.is_alive(to) {
                    self.counters.arcs_opened += 1;
                    let out = Input::ArcOpened {
                        peer: to,
                        direction: Direction::Outgoing,
                    };
                    self.deliver(from, out);
                    let inc = Input::ArcOpened {
                        peer: from,
                        direction: Direction::Incoming,
                    };
                    self.deliver(to, inc);
                } else {
                    self.connect_failed(from, to);
                }
            }
            Step::Close { from, to } => {
                let held = self
                    .overlay(from)
                    .is_some_and(|o| o.outview().contains(&to));
                if !held {
                    if self.is_alive(from) {
                        self.counters.spurious_closes += 1;
                    }
                    return;
                }
                self.counters.arcs_closed += 1;
                let out = Input::ArcClosed {
                    peer: to,
                    direction: Direction::Outgoing,
                    reason: ArcCloseReason::Closed,
                };
                self.deliver(from, out);
                if self.overlay(to).is_some_and(|o| o.inview().contains(&from)) {
                    let inc = Input::ArcClosed {
                        peer: from,
                        direction: Direction::Incoming,
                        reason: ArcCloseReason::Closed,
                    };
                    self.deliver(to, inc);
                }
            }
            Step::ConnectFailed { peer, to } => self.connect_failed(peer, to),
            Step::BridgeFailed { via, from, to } => {
                self.counters.bridge_failures += 1;
                let input = Input::BridgeFailed {
                    from,
                    to,
                    reason: "bridge failed".into(),
                };
                self.deliver(via, input);
            }
        }
    }

    pub(super) fn connect_failed(&mut self, peer: u32, to: u32) {
        if self.is_alive(peer) {
            self.counters.connect_failures += 1;
            let input = Input::ConnectFailed {
                peer: to,
                reason: "unreachable".into(),
            };
            self.deliver(peer, input);
        }
    }

    /// Feeds `input` to `peer` (if alive) and routes what it outputs.
    pub(super) fn deliver(&mut self, peer: u32, input: Input<u32, O::Timer>) {
        if !self.is_alive(peer) {
            return;
        }
        self.counters.inputs += 1;
        let now = self.now_at;
        let overlay = &mut self.states[peer as usize];
        overlay.handle(now, input);
        let mut buf = std::mem::take(&mut self.outbuf);
        while let Some(out) = overlay.poll_output() {
            buf.push(out);
        }
        for out in buf.drain(..) {
            self.route(peer, out);
        }
        self.outbuf = buf;
    }

    /// Whether `a` and `b` are connected: an arc either way, or a join
    /// connection still up.
    pub(super) fn connected(&self, a: u32, b: u32) -> bool {
        if a == b {
            return false;
        }
        if let Some(o) = self.overlay(a)
            && (o.outview().contains(&b) || o.inview().contains(&b))
        {
            return true;
        }
        let link = |x: u32, y: u32| {
            bit(&self.link_bits, x) && {
                let (peer, until) = self.links[x as usize];
                peer == y && until >= self.now
            }
        };
        link(a, b) || link(b, a)
    }

    pub(super) fn lost(&mut self, p: f64) -> bool {
        p > 0.0 && self.draws.random::<f64>() < p
    }

    pub(super) fn route(&mut self, at: u32, output: Output<u32, O::Timer>) {
        match output {
            Output::Send { to, payload } => {
                if !self.is_alive(to) || !self.connected(at, to) {
                    self.counters.undeliverable += 1;
                } else if self.lost(self.config.message_loss) {
                    self.counters.messages_lost += 1;
                } else {
                    self.push_step(Step::Message {
                        from: at,
                        to,
                        payload,
                    });
                }
            }
            Output::OpenArc { to } => {
                if self.is_alive(to) && self.connected(at, to) {
                    self.push_step(Step::Open { from: at, to });
                } else {
                    self.push_step(Step::ConnectFailed { peer: at, to });
                }
            }
            Output::CloseArc { to } => self.push_step(Step::Close { from: at, to }),
            Output::Bridge { from, to } => self.route_bridge(at, from, to),
            Output::SetTimer { at: when, timer } if timer != self.turn => {
                let t = micros(when.saturating_duration_since(self.base));
                self.schedule(t, Due::Timer { peer: at, timer });
            }
            // The turn timer (the engine's own) and the state need nothing;
            // connections through neighbours and samples of other overlays
            // are the node's (`--runtime node`), not this engine's.
            _ => {}
        }
    }

    pub(super) fn route_bridge(&mut self, via: u32, from: u32, to: u32) {
        if !self.is_alive(from) || !self.connected(via, from) {
            self.push_step(Step::BridgeFailed { via, from, to });
            return;
        }
        let reachable = from != to && (to == via || (self.is_alive(to) && self.connected(via, to)));
        let mut lost = false;
        // Signaling loss applies only where the two ends were not connected
        // (asked only when there is loss to draw).
        if reachable && self.config.loss > 0.0 && to != via && !self.connected(from, to) {
            for _ in 0..4 {
                lost |= self.lost(self.config.loss);
            }
            if lost {
                self.counters.lost += 1;
            }
        }
        if !reachable || lost {
            self.push_step(Step::ConnectFailed { peer: from, to });
            self.push_step(Step::BridgeFailed { via, from, to });
            return;
        }
        self.counters.bridges += 1;
        self.push_step(Step::Open { from, to });
    }
}
