//! The instant-exchange engine: round-based, as PeerSim's cycle-driven
//! engine and the paper's own simulations are.
//!
//! Time advances in rounds of one shuffle period. In each round every live
//! peer takes its turn once, in an order drawn anew, and its turn is its
//! round timer (Spray's `Timer::Shuffle`) fed to its state machine; the
//! exchange it starts, and everything that causes (the partner's answer,
//! the bridges, the closes), is applied at once before the next turn.
//! The state machines are the very same as in [`Sim`](crate::Sim): only
//! the environment differs (no latency, no arc in flight between turns).
//!
//! Other timers (exchange timeouts, a leave's linger), joins, crash
//! detections and leaves wait in a calendar and run at their instant
//! between turns: the turns of round `k` are spread over `[kΔ, (k+1)Δ)`.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use n2n_core::Direction;
use n2n_core::overlay::{ArcCloseReason, Input, Output, Overlay, Views};
use rand::Rng;
use rand::seq::SliceRandom;

use crate::prefetch;
use crate::queue::Calendar;
use crate::rng::{SimRng, splitmix as mix};
use crate::sim::{Config, Counters};

mod route;

const NONE: u32 = u32::MAX;

/// Bit `i` of a bitmap.
fn bit(bits: &[u64], i: u32) -> bool {
    bits.get(i as usize / 64)
        .is_some_and(|w| w & (1 << (i % 64)) != 0)
}

/// Cache lines of a state prefetched when a step for its peer is queued.
const STATE_LINES: usize = 3;
/// How many steps ahead the heap buffers of a step's peer are prefetched.
const BUFFERS_AHEAD: usize = 6;

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// What waits in the calendar.
enum Due<T> {
    Timer { peer: u32, timer: T },
    Detect { peer: u32, dead: u32 },
    Join { peer: u32, contact: u32 },
    Leave { peer: u32 },
}

/// What an output causes, applied in order once the output's peer is done.
enum Step {
    Message {
        from: u32,
        to: u32,
        payload: Vec<u8>,
    },
    /// Arc `from → to` opens on both sides.
    Open {
        from: u32,
        to: u32,
    },
    /// Arc `from → to` closes on both sides.
    Close {
        from: u32,
        to: u32,
    },
    ConnectFailed {
        peer: u32,
        to: u32,
    },
    BridgeFailed {
        via: u32,
        from: u32,
        to: u32,
    },
}

impl Step {
    /// The peer the step touches that is likely out of the cache: the far
    /// end of an arc (its giver or taker was touched just before).
    fn peer(&self) -> u32 {
        match *self {
            Step::Message { to, .. } | Step::Open { to, .. } | Step::Close { to, .. } => to,
            Step::ConnectFailed { peer, .. } => peer,
            Step::BridgeFailed { via, .. } => via,
        }
    }
}

/// A network of overlays `O` over peer ids `0..n`, run round by round with
/// every exchange applied at once (see the module's docs).
///
/// It honours the contract of [`Sim`](crate::Sim) with every hop taking no
/// time: a message, an arc change or a bridge takes effect before anything
/// else happens, a bridge succeeds if `via` is connected to both ends
/// (signaling loss, [`Config::loss`], still applies when the two ends were
/// not connected), and messages are lost at [`Config::message_loss`].
/// [`Config::latency`] and [`Config::threads`] are not used.
pub struct Rounds<O: Overlay<u32> + Views<u32>> {
    config: Config,
    factory: Box<dyn FnMut(u32, u64) -> O>,
    /// The timer that is a peer's turn: fed by the rounds, never scheduled.
    turn: O::Timer,
    period: u64,
    base: Instant,
    now: u64,
    /// `base + now`, kept with `now` (every input needs it).
    now_at: Instant,
    states: Vec<O>,
    alive_bits: Vec<u64>,
    alive: Vec<u32>,
    alive_pos: Vec<u32>,
    /// Join connection per peer: (contact, until).
    links: Vec<(u32, u64)>,
    /// One bit per peer: has a join connection that may be up (checked on
    /// every connectivity test; `links` would be a cache miss each time).
    link_bits: Vec<u64>,
    /// Join connections by expiry, to clear their bits: `(until, peer)`.
    expiring: VecDeque<(u64, u32)>,
    prefetch_hook: Option<fn(&O) -> [*const u8; 4]>,
    calendar: Calendar<Due<O::Timer>>,
    seq: u64,
    /// The round under way or next (round `k` runs over `[kΔ, (k+1)Δ)`),
    /// its peers in their order (empty: not started), the next turn.
    round: u64,
    order: Vec<u32>,
    next_turn: usize,
    steps: VecDeque<Step>,
    outbuf: Vec<Output<u32, O::Timer>>,
    rng: SimRng,
    draws: SimRng,
    counters: Counters,
}

impl<O: Overlay<u32> + Views<u32>> fmt::Debug for Rounds<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rounds")
            .field("now_us", &self.now)
            .field("peers", &self.states.len())
            .field("alive", &self.alive.len())
            .field("round", &self.round)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl<O: Overlay<u32> + Views<u32>> Rounds<O>
where
    O::Timer: PartialEq,
{
    /// An empty network whose peers take a turn every `period` (Spray's Δ),
    /// a turn being the timer `turn` (Spray's `Timer::Shuffle`);
    /// `factory(id, seed)` builds peer `id`'s overlay with the seed derived
    /// for it from [`Config::seed`] (the same seeds as [`Sim`](crate::Sim)).
    pub fn new(
        config: Config,
        period: Duration,
        turn: O::Timer,
        factory: impl FnMut(u32, u64) -> O + 'static,
    ) -> Self {
        let base = Instant::now();
        Self {
            factory: Box::new(factory),
            turn,
            period: micros(period).max(1),
            base,
            now: 0,
            now_at: base,
            states: Vec::new(),
            alive_bits: Vec::new(),
            alive: Vec::new(),
            alive_pos: Vec::new(),
            links: Vec::new(),
            link_bits: Vec::new(),
            expiring: VecDeque::new(),
            prefetch_hook: None,
            calendar: Calendar::new(),
            seq: 0,
            round: 1,
            order: Vec::new(),
            next_turn: 0,
            steps: VecDeque::new(),
            outbuf: Vec::new(),
            rng: SimRng::seed_from(mix(config.seed ^ 0x5eed)),
            draws: SimRng::seed_from(mix(config.seed ^ 0x0d0e)),
            counters: Counters::default(),
            config,
        }
    }

    // ----- getters -----

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Virtual time since the start.
    pub fn now(&self) -> Duration {
        Duration::from_micros(self.now)
    }

    /// Rounds completed.
    pub fn rounds(&self) -> u64 {
        self.round - 1
    }

    /// Counters so far (`events`: the steps applied, a turn, a message, an
    /// arc change seen from both ends, a timer).
    pub fn counters(&self) -> Counters {
        self.counters.clone()
    }

    /// Peers ever added (live or not).
    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// Whether no peer was ever added.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// Live peers, in no particular order.
    pub fn alive(&self) -> &[u32] {
        &self.alive
    }

    /// Whether `peer` exists and has not crashed.
    pub fn is_alive(&self, peer: u32) -> bool {
        bit(&self.alive_bits, peer)
    }

    /// The overlay of a live peer.
    pub fn overlay(&self, peer: u32) -> Option<&O> {
        self.is_alive(peer).then(|| &self.states[peer as usize])
    }

    // ----- commands -----

    /// Sets a function that tells where an overlay's hot heap buffers are,
    /// prefetched for the peers of the steps ahead (see
    /// [`Sim::set_prefetch`](crate::Sim::set_prefetch)). Only speed depends
    /// on it.
    pub fn set_prefetch(&mut self, hook: fn(&O) -> [*const u8; 4]) {
        self.prefetch_hook = Some(hook);
    }

    /// A live peer drawn uniformly with the simulator's RNG.
    pub fn random_member(&mut self) -> Option<u32> {
        if self.alive.is_empty() {
            return None;
        }
        Some(self.alive[self.rng.random_range(0..self.alive.len())])
    }

    /// Adds a live peer that is in no overlay yet; returns its id.
    pub fn add_peer(&mut self) -> u32 {
        let id = u32::try_from(self.states.len()).expect("fewer than 2^32 peers");
        assert!(id != NONE, "peer ids exhausted");
        let seed = mix(self.config.seed ^ mix(u64::from(id)));
        self.states.push((self.factory)(id, seed));
        self.links.push((NONE, 0));
        self.alive_pos.push(self.alive.len() as u32);
        if id % 64 == 0 {
            self.alive_bits.push(0);
            self.link_bits.push(0);
        }
        self.alive_bits[id as usize / 64] |= 1 << (id % 64);
        self.alive.push(id);
        id
    }

    fn schedule(&mut self, at: u64, due: Due<O::Timer>) {
        self.seq += 1;
        self.calendar.push(at.max(self.now), self.seq, due);
    }

    /// `peer` joins through `contact` at `at` (now if earlier): they get a
    /// connection for [`Config::linger`] and `peer` gets `Input::Join`.
    pub fn join_at(&mut self, peer: u32, contact: u32, at: Duration) {
        if self.is_alive(peer) && self.is_alive(contact) && peer != contact {
            let at = micros(at).max(self.now);
            let until = at.saturating_add(micros(self.config.linger));
            self.links[peer as usize] = (contact, until);
            self.link_bits[peer as usize / 64] |= 1 << (peer % 64);
            self.expiring.push_back((until, peer));
            self.schedule(at, Due::Join { peer, contact });
        }
    }

    /// `peer` joins through `contact` now.
    pub fn join(&mut self, peer: u32, contact: u32) {
        self.join_at(peer, contact, self.now());
    }

    /// `peer` leaves gracefully now (`Input::Leave`); it stays alive.
    pub fn leave(&mut self, peer: u32) {
        self.schedule(self.now, Due::Leave { peer });
    }

    /// `peer` crashes now: it disappears, and its neighbours notice after
    /// [`Config::detection_delay`].
    pub fn crash(&mut self, peer: u32) {
        if !self.is_alive(peer) {
            return;
        }
        let empty = (self.factory)(peer, 0);
        let overlay = std::mem::replace(&mut self.states[peer as usize], empty);
        self.counters.crashes += 1;
        let pos = self.alive_pos[peer as usize] as usize;
        self.alive.swap_remove(pos);
        if let Some(&moved) = self.alive.get(pos) {
            self.alive_pos[moved as usize] = pos as u32;
        }
        self.alive_pos[peer as usize] = NONE;
        self.alive_bits[peer as usize / 64] &= !(1 << (peer % 64));
        let mut neighbours: Vec<u32> = overlay
            .outview()
            .peers()
            .chain(overlay.inview().peers())
            .copied()
            .collect();
        neighbours.sort_unstable();
        neighbours.dedup();
        let at = self.now + micros(self.config.detection_delay);
        for n in neighbours {
            self.schedule(
                at,
                Due::Detect {
                    peer: n,
                    dead: peer,
                },
            );
        }
    }

    /// Runs every turn and every due event up to `now() + d`.
    pub fn run_for(&mut self, d: Duration) {
        self.run_until_us(self.now.saturating_add(micros(d)));
    }

    /// Runs every turn and every due event up to `t` (from the start).
    pub fn run_until(&mut self, t: Duration) {
        self.run_until_us(micros(t));
    }

    fn run_until_us(&mut self, until: u64) {
        loop {
            self.expire_links();
            let turn_at = self.next_turn_at();
            let due_at = self.calendar.next_at(until.min(turn_at));
            match due_at {
                Some(at) if at <= turn_at => {
                    let e = self.calendar.pop_until(at).expect("due");
                    self.set_now(e.at);
                    self.run_due(e.event);
                }
                _ if turn_at <= until => {
                    self.set_now(turn_at);
                    self.take_turn();
                }
                _ => break,
            }
        }
        self.set_now(until);
    }

    /// Moves the clock forward to `t` (never back).
    fn set_now(&mut self, t: u64) {
        if t > self.now {
            self.now = t;
            self.now_at = self.base + Duration::from_micros(t);
        }
    }

    /// Clears the bits of the join connections over before now (a peer that
    /// joined again has a later expiry, queued behind).
    fn expire_links(&mut self) {
        while let Some(&(until, peer)) = self.expiring.front() {
            if until >= self.now {
                break;
            }
            self.expiring.pop_front();
            if self.links[peer as usize].1 < self.now {
                self.link_bits[peer as usize / 64] &= !(1 << (peer % 64));
            }
        }
    }

    /// The instant of the next turn: turn `i` of the `n` of round `k` comes
    /// at `kΔ + iΔ/n` (a round not started yet starts at `kΔ`).
    fn next_turn_at(&self) -> u64 {
        let start = self.round.saturating_mul(self.period);
        if self.order.is_empty() {
            return start;
        }
        let n = self.order.len() as u64;
        start + self.next_turn as u64 * self.period / n
    }

    fn take_turn(&mut self) {
        if self.order.is_empty() {
            // A new round: the live peers in an order drawn anew.
            self.order.extend_from_slice(&self.alive);
            self.order.sort_unstable();
            self.order.shuffle(&mut self.draws);
            self.next_turn = 0;
            if self.order.is_empty() {
                self.round += 1;
                return;
            }
        }
        let peer = self.order[self.next_turn];
        self.next_turn += 1;
        if self.next_turn == self.order.len() {
            self.order.clear();
            self.next_turn = 0;
            self.round += 1;
        }
        self.counters.events += 1;
        let turn = self.turn.clone();
        self.deliver(peer, Input::Timer(turn));
        self.settle();
    }

    fn run_due(&mut self, due: Due<O::Timer>) {
        self.counters.events += 1;
        match due {
            Due::Timer { peer, timer } => self.deliver(peer, Input::Timer(timer)),
            Due::Join { peer, contact } => self.deliver(peer, Input::Join { contact }),
            Due::Leave { peer } => self.deliver(peer, Input::Leave),
            Due::Detect { peer, dead } => {
                let Some(o) = self.overlay(peer) else {
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
                        self.deliver(peer, input);
                    }
                }
            }
        }
        self.settle();
    }

    /// Applies the steps the last input caused, and those they cause, until
    /// none is left.
    fn settle(&mut self) {
        while let Some(step) = self.steps.pop_front() {
            // Every step lands on a peer drawn at random, out of the cache
            // at 100k peers: its state was asked for when the step was
            // queued; its heap buffers (read through the state) are asked
            // for a few steps ahead, once the state has arrived.
            if let (Some(hook), Some(ahead)) = (self.prefetch_hook, self.steps.get(BUFFERS_AHEAD)) {
                let peer = ahead.peer();
                if self.is_alive(peer) {
                    for at in hook(&self.states[peer as usize]) {
                        prefetch::line(at);
                    }
                }
            }
            self.counters.events += 1;
            self.apply(step);
        }
    }

    /// Queues `step`, asking for its peer's state meanwhile.
    fn push_step(&mut self, step: Step) {
        let peer = step.peer() as usize;
        if let Some(state) = self.states.get(peer) {
            let at = (&raw const *state).cast::<u8>();
            for line in 0..STATE_LINES {
                prefetch::line(at.wrapping_add(64 * line));
            }
        }
        self.steps.push_back(step);
    }
}
