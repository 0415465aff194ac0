//! A shard: its peers, their events, and how each event is applied.

use std::time::Duration;

use n2n_core::Direction;
use n2n_core::overlay::{ArcCloseReason, Input, Output, Overlay, Views};
use rand::Rng;

use crate::prefetch;
use crate::queue::{Calendar, Entry};
use crate::rng::{SimRng, splitmix as mix};

use super::Counters;
use super::env::*;

/// The peers `p` with `p % SHARDS == index`, their events and their draws.
pub(super) struct Shard<O: Overlay<u32> + Views<u32>> {
    pub(super) index: u32,
    /// Peer `p`'s state at `p / SHARDS`, live or not (a crashed peer's is
    /// replaced by a fresh one, never fed, so that its memory goes).
    pub(super) states: Vec<O>,
    pub(super) queue: Calendar<Kind<O::Timer>>,
    pub(super) seq: u64,
    pub(super) now: u64,
    /// The end of the window being run: events for other shards land there
    /// or later.
    pub(super) horizon: u64,
    pub(super) rng: SimRng,
    pub(super) counters: Counters,
    pub(super) opening: i64,
    pub(super) closing: i64,
    /// Events for other shards, by shard, handed over between windows.
    pub(super) outbox: Vec<Vec<Entry<Kind<O::Timer>>>>,
    pub(super) outbuf: Vec<Output<u32, O::Timer>>,
    /// `queue.loads()` when the last bucket was prefetched.
    pub(super) loaded: u64,
}

impl<O: Overlay<u32> + Views<u32>> Shard<O> {
    pub(super) fn new(index: u32, seed: u64) -> Self {
        Self {
            index,
            states: Vec::new(),
            queue: Calendar::new(),
            seq: 0,
            now: 0,
            horizon: 0,
            rng: SimRng::seed_from(mix(seed ^ 0x5eed ^ mix(u64::from(index) + 1))),
            counters: Counters::default(),
            opening: 0,
            closing: 0,
            outbox: (0..SHARDS).map(|_| Vec::new()).collect(),
            outbuf: Vec::new(),
            loaded: 0,
        }
    }

    pub(super) fn state(&self, env: &Env<O>, peer: u32) -> Option<&O> {
        env.alive(peer)
            .then(|| &self.states[peer as usize / SHARDS])
    }

    /// Queues `kind` at `at`: here if its peer is ours, else in the outbox
    /// (at the window's end at the earliest).
    pub(super) fn schedule(&mut self, at: u64, kind: Kind<O::Timer>) {
        let seq = (self.seq << 3) | u64::from(self.index);
        self.seq += 1;
        let dst = kind.peer() as usize % SHARDS;
        if dst == self.index as usize {
            self.queue.push(at, seq, kind);
        } else {
            let at = at.max(self.horizon);
            self.outbox[dst].push(Entry {
                at,
                seq,
                event: kind,
            });
        }
    }

    /// Runs every event due up to `until` (inclusive).
    pub(super) fn run(&mut self, env: &Env<O>, until: u64) {
        self.horizon = until + 1;
        while let Some(event) = self.queue.pop_until(until) {
            if self.queue.loads() != self.loaded {
                self.loaded = self.queue.loads();
                self.prefetch(env);
            }
            self.now = self.now.max(event.at);
            self.counters.events += 1;
            self.process(env, event.event);
        }
        self.now = self.now.max(until);
    }

    /// Prefetches, without waiting, what the events of the next buckets
    /// will read, when a bucket starts being drained: the first cache lines
    /// of the states of the peers of the bucket [`STATE_AHEAD`] buckets
    /// ahead, and the heap buffers (through the hook of
    /// [`Sim::set_prefetch`]) of the peers of the bucket after this one,
    /// whose states arrived meanwhile. Each event lands on a random peer
    /// whose state is out of the cache at 100k peers: loaded when needed,
    /// every miss would stall the event; requested a bucket or two ahead,
    /// dozens of them arrive at once while the events before them run.
    pub(super) fn prefetch(&self, env: &Env<O>) {
        for e in self.queue.bucket_ahead(STATE_AHEAD) {
            let p = e.event.peer();
            if env.alive(p) {
                let at = (&raw const self.states[p as usize / SHARDS]).cast::<u8>();
                for line in 0..STATE_LINES {
                    prefetch::line(at.wrapping_add(64 * line));
                }
            }
        }
        if let Some(hook) = env.prefetch_hook {
            for e in self.queue.bucket_ahead(1) {
                if let Some(o) = self.state(env, e.event.peer()) {
                    for at in hook(o) {
                        prefetch::line(at);
                    }
                }
            }
        }
    }

    /// Draws whether something is lost at rate `p` (no draw when 0).
    pub(super) fn lost(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random::<f64>() < p
    }

    /// Whether our peer `a` and `b` are connected: an arc either way (in
    /// `a`'s own mirrors), or a join connection.
    pub(super) fn connected(&self, env: &Env<O>, a: u32, b: u32) -> bool {
        if a == b {
            return false;
        }
        if let Some(o) = self.state(env, a)
            && (o.outview().contains(&b) || o.inview().contains(&b))
        {
            return true;
        }
        env.linked(a, b, self.now)
    }

    pub(super) fn deliver(&mut self, env: &Env<O>, peer: u32, input: Input<u32, O::Timer>) {
        if !env.alive(peer) {
            return;
        }
        self.counters.inputs += 1;
        let overlay = &mut self.states[peer as usize / SHARDS];
        overlay.handle(env.base + Duration::from_micros(self.now), input);
        let mut buf = std::mem::take(&mut self.outbuf);
        while let Some(out) = overlay.poll_output() {
            buf.push(out);
        }
        for out in buf.drain(..) {
            self.route(env, peer, out);
        }
        self.outbuf = buf;
    }

    pub(super) fn route(&mut self, env: &Env<O>, at: u32, output: Output<u32, O::Timer>) {
        match output {
            Output::Send { to, payload } => {
                if !env.alive(to) || !self.connected(env, at, to) {
                    self.counters.undeliverable += 1;
                } else if self.lost(env.message_loss) {
                    self.counters.messages_lost += 1;
                } else {
                    let t = self.now + env.hop(at, to);
                    let kind = Kind::Message {
                        from: at,
                        to,
                        payload,
                    };
                    self.schedule(t, kind);
                }
            }
            Output::OpenArc { to } => {
                let t = self.now + env.hop(at, to);
                if env.alive(to) && self.connected(env, at, to) {
                    self.opening += 1;
                    self.schedule(t, Kind::OpenOut { from: at, to });
                    self.schedule(t, Kind::OpenIn { from: at, to });
                } else {
                    self.schedule(t, Kind::ConnectFailed { peer: at, to });
                }
            }
            Output::CloseArc { to } => {
                let t = self.now + env.hop(at, to);
                self.closing += 1;
                self.schedule(t, Kind::CloseOut { from: at, to });
                self.schedule(t, Kind::CloseIn { from: at, to });
            }
            Output::Bridge { from, to } => self.route_bridge(env, at, from, to),
            Output::SetTimer { at: when, timer } => {
                let t = micros(when.saturating_duration_since(env.base)).max(self.now);
                self.schedule(t, Kind::Timer { peer: at, timer });
            }
            Output::StateChanged(_) => {}
            // Connections through neighbours and samples of other overlays
            // are the node's (`--runtime node`), not of this engine.
            _ => {}
        }
    }

    pub(super) fn route_bridge(&mut self, env: &Env<O>, via: u32, from: u32, to: u32) {
        let order = self.now + env.hop(via, from);
        if !env.alive(from) || !self.connected(env, via, from) {
            self.schedule(order, Kind::BridgeFailed { via, from, to });
            return;
        }
        let reachable =
            from != to && (to == via || (env.alive(to) && self.connected(env, via, to)));
        if !reachable {
            self.schedule(order, Kind::ConnectFailed { peer: from, to });
            self.schedule(order, Kind::BridgeFailed { via, from, to });
            return;
        }
        self.opening += 1;
        self.schedule(order, Kind::BridgeOrder { via, from, to });
    }

    /// `from` got `via`'s order at `now`: the arc opens one hop later if the
    /// two are connected already, else after an offer and an answer relayed
    /// by `via` (four hops, each lost at [`Config::loss`]).
    pub(super) fn bridge_order(&mut self, env: &Env<O>, via: u32, from: u32, to: u32) {
        if !env.alive(from) {
            self.opening -= 1;
            let t = self.now + env.hop(from, via);
            self.schedule(t, Kind::BridgeFailed { via, from, to });
            return;
        }
        let direct = to == via || self.connected(env, from, to);
        let t = if direct {
            self.now + env.hop(from, to)
        } else {
            self.now + 2 * (env.hop(from, via) + env.hop(via, to))
        };
        let mut lost = false;
        if !direct {
            for _ in 0..4 {
                lost |= self.lost(env.loss);
            }
        }
        if lost {
            self.opening -= 1;
            self.counters.lost += 1;
            self.schedule(t, Kind::ConnectFailed { peer: from, to });
            self.schedule(t, Kind::BridgeFailed { via, from, to });
        } else {
            let signaled = !direct;
            self.schedule(
                t,
                Kind::BridgeOut {
                    via,
                    from,
                    to,
                    signaled,
                },
            );
            self.schedule(
                t,
                Kind::BridgeIn {
                    via,
                    from,
                    to,
                    signaled,
                },
            );
        }
    }

    pub(super) fn process(&mut self, env: &Env<O>, kind: Kind<O::Timer>) {
        match kind {
            Kind::Message { from, to, payload } => {
                if env.alive(to) {
                    self.counters.messages += 1;
                    self.deliver(env, to, Input::Message { from, payload });
                } else {
                    self.counters.undeliverable += 1;
                }
            }
            Kind::OpenOut { from, to } => {
                self.opening -= 1;
                if !env.alive(from) {
                } else if env.alive(to) {
                    self.counters.arcs_opened += 1;
                    self.opened(env, from, to, Direction::Outgoing);
                } else {
                    self.connect_failed(env, from, to);
                }
            }
            Kind::OpenIn { from, to } => {
                if env.alive(from) {
                    self.opened(env, to, from, Direction::Incoming);
                }
            }
            Kind::CloseOut { from, to } => {
                self.closing -= 1;
                let held = self
                    .state(env, from)
                    .is_some_and(|o| o.outview().contains(&to));
                if held {
                    self.counters.arcs_closed += 1;
                    let input = Input::ArcClosed {
                        peer: to,
                        direction: Direction::Outgoing,
                        reason: ArcCloseReason::Closed,
                    };
                    self.deliver(env, from, input);
                } else if env.alive(from) {
                    self.counters.spurious_closes += 1;
                }
            }
            Kind::CloseIn { from, to } => {
                // The mirror of `CloseOut`: `from` alive held the arc iff we
                // hold its incoming end.
                let held = env.alive(from)
                    && self
                        .state(env, to)
                        .is_some_and(|o| o.inview().contains(&from));
                if held {
                    let input = Input::ArcClosed {
                        peer: from,
                        direction: Direction::Incoming,
                        reason: ArcCloseReason::Closed,
                    };
                    self.deliver(env, to, input);
                }
            }
            Kind::BridgeOrder { via, from, to } => self.bridge_order(env, via, from, to),
            Kind::BridgeOut {
                via,
                from,
                to,
                signaled,
            } => {
                self.opening -= 1;
                if bridge_holds(env, via, from, to, signaled) {
                    self.counters.bridges += 1;
                    self.counters.arcs_opened += 1;
                    self.opened(env, from, to, Direction::Outgoing);
                } else {
                    self.connect_failed(env, from, to);
                    let t = self.now + env.hop(from, via);
                    self.schedule(t, Kind::BridgeFailed { via, from, to });
                }
            }
            Kind::BridgeIn {
                via,
                from,
                to,
                signaled,
            } => {
                if bridge_holds(env, via, from, to, signaled) {
                    self.opened(env, to, from, Direction::Incoming);
                }
            }
            Kind::BridgeFailed { via, from, to } => {
                self.counters.bridge_failures += 1;
                let input = Input::BridgeFailed {
                    from,
                    to,
                    reason: "bridge failed".into(),
                };
                self.deliver(env, via, input);
            }
            Kind::ConnectFailed { peer, to } => self.connect_failed(env, peer, to),
            Kind::Timer { peer, timer } => self.deliver(env, peer, Input::Timer(timer)),
            Kind::Detect { peer, dead } => {
                let Some(o) = self.state(env, peer) else {
                    return;
                };
                let (outs, ins) = (o.outview().count(&dead), o.inview().count(&dead));
                for (n, direction) in [(outs, Direction::Outgoing), (ins, Direction::Incoming)] {
                    for _ in 0..n {
                        self.counters.arcs_closed += 1;
                        let input = Input::ArcClosed {
                            peer: dead,
                            direction,
                            reason: ArcCloseReason::PeerDown("crashed".into()),
                        };
                        self.deliver(env, peer, input);
                    }
                }
            }
            Kind::Join { peer, contact } => self.deliver(env, peer, Input::Join { contact }),
            Kind::Leave { peer } => self.deliver(env, peer, Input::Leave),
        }
    }

    /// `at` gets its end of an arc with `peer` opened.
    pub(super) fn opened(&mut self, env: &Env<O>, at: u32, peer: u32, direction: Direction) {
        self.deliver(env, at, Input::ArcOpened { peer, direction });
    }

    pub(super) fn connect_failed(&mut self, env: &Env<O>, peer: u32, to: u32) {
        if env.alive(peer) {
            self.counters.connect_failures += 1;
            let input = Input::ConnectFailed {
                peer: to,
                reason: "unreachable".into(),
            };
            self.deliver(env, peer, input);
        }
    }
}

/// Whether a bridged arc opens: both ends up, and `via` too if the
/// handshake went through it. Both sides decide alike (liveness changes
/// only between windows).
pub(super) fn bridge_holds<O>(env: &Env<O>, via: u32, from: u32, to: u32, signaled: bool) -> bool {
    env.alive(from) && env.alive(to) && (!signaled || env.alive(via))
}
