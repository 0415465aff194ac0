//! The event loop and the environment's semantics.

use std::fmt;
use std::time::{Duration, Instant};

use n2n_core::overlay::{Overlay, Views};
use rand::Rng;

use crate::queue::Entry;
use crate::rng::{SimRng, splitmix as mix};

use crate::stats::{self, Snapshot};

mod env;
mod parallel;
mod shard;

use env::*;
pub use env::{PARALLEL_WINDOWS, SHARDS};
use parallel::deliver_mail;
use shard::*;

/// One-way delay of one hop between two peers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Latency {
    /// Always the same.
    Fixed(Duration),
    /// Uniform in `[min, max]`, drawn once per link (from the seed and the
    /// two ends): a link keeps its latency, so messages on it arrive in the
    /// order they were sent, as on a real connection.
    Uniform {
        /// Smallest delay.
        min: Duration,
        /// Largest delay.
        max: Duration,
    },
}

/// Settings of a simulation.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Master seed: the simulator's own draws (latencies, losses, contacts)
    /// and every peer's RNG seed derive from it.
    pub seed: u64,
    /// Delay of one hop (a message, an arc notice, each step of a bridge).
    pub latency: Latency,
    /// How long after a crash its neighbours notice it (the runtime's idle
    /// timeout).
    pub detection_delay: Duration,
    /// Signaling loss: probability that one signaling hop of a bridge is
    /// lost. A bridge between peers not yet connected relays an offer
    /// `from → via → to` and an answer `to → via → from`, four hops; if one is
    /// lost the arc does not open: `from` gets `ConnectFailed` (Spray's arc-down
    /// rule then duplicates an arc, so the arc count holds) and `via` gets
    /// `BridgeFailed`. The bridge order itself, overlay messages and arc
    /// notices ride on open connections and are not lost by this rate.
    pub loss: f64,
    /// Probability that one overlay message (`Output::Send`) is lost on its
    /// connection, apart from signaling (0 by default: data channels are
    /// reliable). A lost shuffle message leaves its initiator to time out.
    pub message_loss: f64,
    /// How long the connection a joining peer opened to its contact stays up
    /// without arcs.
    pub linger: Duration,
    /// Threads that run the shards of a window at once (0: as many as the
    /// machine has, at most [`SHARDS`]). Results do not depend on it.
    pub threads: usize,
    /// Networks of fewer peers run on one thread whatever
    /// [`Config::threads`] says: their windows hold too few events to pay
    /// for the threads' meetings (default 20,000).
    pub parallel_from: usize,
}

impl Default for Config {
    /// Seed 0, latency uniform in 10–50 ms, detection after 5 s, no loss of
    /// either kind, 10 s linger, every core from 20,000 peers on.
    fn default() -> Self {
        Self {
            seed: 0,
            latency: Latency::Uniform {
                min: Duration::from_millis(10),
                max: Duration::from_millis(50),
            },
            detection_delay: Duration::from_secs(5),
            loss: 0.0,
            message_loss: 0.0,
            linger: Duration::from_secs(10),
            threads: 0,
            parallel_from: 20_000,
        }
    }
}

/// What the simulator did, counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Events processed.
    pub events: u64,
    /// Inputs fed to overlays.
    pub inputs: u64,
    /// Overlay messages delivered.
    pub messages: u64,
    /// Signaling hops lost (the `loss` rate), at most one counted per bridge.
    pub lost: u64,
    /// Overlay messages lost (the `message_loss` rate).
    pub messages_lost: u64,
    /// Messages to a peer that was not connected, or gone.
    pub undeliverable: u64,
    /// Arcs opened (one per occurrence).
    pub arcs_opened: u64,
    /// Arcs closed (one per occurrence, crashes included).
    pub arcs_closed: u64,
    /// Bridges that opened their arc.
    pub bridges: u64,
    /// Bridges that failed (`BridgeFailed` delivered or due).
    pub bridge_failures: u64,
    /// `ConnectFailed` delivered.
    pub connect_failures: u64,
    /// `CloseArc` for an arc the peer did not hold (an overlay bug).
    pub spurious_closes: u64,
    /// Peers crashed.
    pub crashes: u64,
}

impl Counters {
    fn add(&mut self, o: &Counters) {
        self.events += o.events;
        self.inputs += o.inputs;
        self.messages += o.messages;
        self.lost += o.lost;
        self.messages_lost += o.messages_lost;
        self.undeliverable += o.undeliverable;
        self.arcs_opened += o.arcs_opened;
        self.arcs_closed += o.arcs_closed;
        self.bridges += o.bridges;
        self.bridge_failures += o.bridge_failures;
        self.connect_failures += o.connect_failures;
        self.spurious_closes += o.spurious_closes;
        self.crashes += o.crashes;
    }
}

/// A simulated network of overlays `O` over peer ids `0..n` (`u32`).
///
/// Time is virtual (microseconds from the start); nothing runs between
/// calls. The environment honours the same contract as the node runtime:
///
/// - `Send { to }` reaches `to` after one hop as `Input::Message`, if the two
///   are connected (an arc either way, or a join's fresh connection), unless
///   lost at rate [`Config::message_loss`].
/// - `OpenArc { to }` (to a connected peer) gives `ArcOpened(Outgoing)` to the
///   sender and `ArcOpened(Incoming)` to `to` after one hop, at the same
///   instant; if `to` is gone or not connected, the sender gets
///   `ConnectFailed`.
/// - `CloseArc { to }`: `ArcClosed(Closed)` on both sides after one hop.
/// - `Bridge { from, to }` by `via`: if `from` is a live neighbour of `via`
///   and `to` is `via` or a live neighbour, the order reaches `from` after a
///   hop; the arc then opens on both sides one hop later if `from` and `to`
///   are connected already, else after an offer and an answer relayed by
///   `via` (four hops). Otherwise `via` gets `BridgeFailed`, and `from` gets
///   `ConnectFailed` if it took the order but could not reach `to` (a peer
///   gone meanwhile, `via` gone during the handshake). Each signaling hop is
///   lost at rate [`Config::loss`]; a bridge that loses one ends as one that
///   could not reach `to`.
/// - `SetTimer` fires `Input::Timer` at its instant.
/// - A crash removes the peer at once; after [`Config::detection_delay`]
///   each neighbour gets `ArcClosed(PeerDown)` once per arc occurrence it
///   still has with it, in both directions.
///
/// Connectivity is decided when an output is emitted (a connection lingers
/// that long); an arc is created and removed on both sides at the same
/// instant, so that between calls the overlays' arc mirrors are the truth
/// the simulator reads.
///
/// # Shards and threads
///
/// Peers are split into [`SHARDS`] shards (`p % SHARDS`), each with its own
/// event queue and RNG; every event is for one peer, and what touches two
/// peers is two events at the same instant. A message or arc change for
/// another peer takes at least the shortest hop, so time runs in windows of
/// that length: within one, shards share nothing but read-only tables
/// (liveness, join connections) and run at once on [`Config::threads`]
/// threads (from [`Config::parallel_from`] peers on, in calls that span
/// [`PARALLEL_WINDOWS`] windows or more; a free thread takes the next shard);
/// between windows, events for other shards are handed over. Events at the
/// same instant run in scheduling order within a shard. A seed reproduces a
/// run exactly whatever the thread count.
pub struct Sim<O: Overlay<u32> + Views<u32>> {
    config: Config,
    factory: Factory<O>,
    now: u64,
    threads: usize,
    detection_delay: u64,
    linger: u64,
    env: Env<O>,
    shards: Vec<Shard<O>>,
    /// Events handed from shard `s` to shard `d` wait in `mail[d * SHARDS + s]`
    /// between windows.
    mail: Vec<Vec<Entry<Kind<O::Timer>>>>,
    peers: usize,
    alive: Vec<u32>,
    alive_pos: Vec<u32>,
    /// Join connections by expiry, to clear their bits: `(until, peer)`.
    expiring: std::collections::VecDeque<(u64, u32)>,
    rng: SimRng,
    crashes: u64,
}

impl<O: Overlay<u32> + Views<u32>> fmt::Debug for Sim<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sim")
            .field("now_us", &self.now)
            .field("peers", &self.peers)
            .field("alive", &self.alive.len())
            .field("threads", &self.threads)
            .field("pending_events", &self.pending_events())
            .field("counters", &self.counters())
            .finish_non_exhaustive()
    }
}

impl<O: Overlay<u32> + Views<u32> + Send> Sim<O>
where
    O::Timer: Send,
{
    /// An empty network; `factory(id, seed)` builds peer `id`'s overlay with
    /// the RNG seed derived for it from [`Config::seed`].
    pub fn new(config: Config, factory: impl FnMut(u32, u64) -> O + 'static) -> Self {
        let threads = match config.threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
        .clamp(1, SHARDS);
        Self {
            config: config.clone(),
            factory: Box::new(factory),
            now: 0,
            threads,
            detection_delay: micros(config.detection_delay),
            linger: micros(config.linger),
            env: Env {
                seed: config.seed,
                latency: config.latency,
                loss: config.loss,
                message_loss: config.message_loss,
                base: Instant::now(),
                alive_bits: Vec::new(),
                links: Vec::new(),
                link_bits: Vec::new(),
                prefetch_hook: None,
            },
            shards: (0..SHARDS as u32)
                .map(|i| Shard::new(i, config.seed))
                .collect(),
            mail: (0..SHARDS * SHARDS).map(|_| Vec::new()).collect(),
            peers: 0,
            alive: Vec::new(),
            alive_pos: Vec::new(),
            expiring: std::collections::VecDeque::new(),
            rng: SimRng::seed_from(mix(config.seed ^ 0x5eed)),
            crashes: 0,
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

    /// Threads that run the shards (see [`Config::threads`]).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Counters so far, summed over the shards.
    pub fn counters(&self) -> Counters {
        let mut c = Counters {
            crashes: self.crashes,
            ..Counters::default()
        };
        for s in &self.shards {
            c.add(&s.counters);
        }
        c
    }

    /// Arc changes on their way: `(opening, closing)`, the `OpenArc` and
    /// `Bridge` outputs (and `CloseArc` outputs) not yet applied. A shuffle
    /// closes its arcs a hop before the bridged ones open, so the arc total
    /// of a busy network is invariant only counted with these:
    /// `arcs_out + opening − closing`.
    pub fn arcs_in_flight(&self) -> (u64, u64) {
        let opening: i64 = self.shards.iter().map(|s| s.opening).sum();
        let closing: i64 = self.shards.iter().map(|s| s.closing).sum();
        (opening.max(0) as u64, closing.max(0) as u64)
    }

    /// Events waiting.
    pub fn pending_events(&self) -> usize {
        let queued: usize = self.shards.iter().map(|s| s.queue.len()).sum();
        let mailed: usize = self.mail.iter().map(Vec::len).sum();
        queued + mailed
    }

    /// Peers ever added (live or not).
    pub fn len(&self) -> usize {
        self.peers
    }

    /// Whether no peer was ever added.
    pub fn is_empty(&self) -> bool {
        self.peers == 0
    }

    /// Live peers, in no particular order.
    pub fn alive(&self) -> &[u32] {
        &self.alive
    }

    /// Whether `peer` exists and has not crashed.
    pub fn is_alive(&self, peer: u32) -> bool {
        self.env.alive(peer)
    }

    /// The overlay of a live peer.
    pub fn overlay(&self, peer: u32) -> Option<&O> {
        self.shards[peer as usize % SHARDS].state(&self.env, peer)
    }

    /// The overlay of a live peer, mutably (e.g. to call `peers(k)`).
    pub fn overlay_mut(&mut self, peer: u32) -> Option<&mut O> {
        if !self.env.alive(peer) {
            return None;
        }
        Some(&mut self.shards[peer as usize % SHARDS].states[peer as usize / SHARDS])
    }

    /// Measures the overlay now (see [`stats`]).
    pub fn snapshot(&self) -> Snapshot {
        stats::snapshot(
            self.now(),
            self.peers,
            |id| self.overlay(id).map(|o| o.outview()),
            |id| self.overlay(id).map(|o| o.inview()),
        )
    }

    // ----- commands -----

    /// Sets a function that tells where an overlay's hot heap buffers are
    /// (its views), prefetched for the peers of upcoming events so that
    /// their cache misses overlap with work. Only speed depends on it; the
    /// addresses are never read through.
    pub fn set_prefetch(&mut self, hook: fn(&O) -> [*const u8; 4]) {
        self.env.prefetch_hook = Some(hook);
    }

    /// A live peer drawn uniformly with the simulator's RNG.
    pub fn random_member(&mut self) -> Option<u32> {
        if self.alive.is_empty() {
            return None;
        }
        Some(self.alive[self.rng.random_range(0..self.alive.len())])
    }

    /// The simulator's RNG (derived from the master seed), for scenario draws.
    pub fn rng(&mut self) -> &mut SimRng {
        &mut self.rng
    }

    /// Adds a live peer that is in no overlay yet; returns its id.
    pub fn add_peer(&mut self) -> u32 {
        let id = u32::try_from(self.peers).expect("fewer than 2^32 peers");
        assert!(id != NONE, "peer ids exhausted");
        let seed = mix(self.env.seed ^ mix(u64::from(id)));
        let state = (self.factory)(id, seed);
        self.shards[id as usize % SHARDS].states.push(state);
        self.peers += 1;
        self.env.links.push((NONE, 0));
        self.alive_pos.push(self.alive.len() as u32);
        if id % 64 == 0 {
            self.env.alive_bits.push(0);
            self.env.link_bits.push(0);
        }
        self.env.alive_bits[id as usize / 64] |= 1 << (id % 64);
        self.alive.push(id);
        id
    }

    /// Queues `kind` for its peer's shard, from outside any window.
    fn schedule(&mut self, at: u64, kind: Kind<O::Timer>) {
        self.shards[kind.peer() as usize % SHARDS].schedule(at, kind);
    }

    /// `peer` joins through `contact` now: they get a connection (for
    /// [`Config::linger`]) and `peer` gets `Input::Join`.
    pub fn join(&mut self, peer: u32, contact: u32) {
        self.join_at(peer, contact, self.now());
    }

    /// `peer` joins through `contact` at `at` (now if earlier), as
    /// [`Sim::join`] would then: many joins queued at once run in one call
    /// (and on every thread) rather than one call each.
    pub fn join_at(&mut self, peer: u32, contact: u32, at: Duration) {
        if self.is_alive(peer) && self.is_alive(contact) && peer != contact {
            let at = micros(at).max(self.now);
            let until = at.saturating_add(self.linger);
            self.env.links[peer as usize] = (contact, until);
            self.env.link_bits[peer as usize / 64] |= 1 << (peer % 64);
            self.expiring.push_back((until, peer));
            self.schedule(at, Kind::Join { peer, contact });
        }
    }

    /// `peer` leaves gracefully now (`Input::Leave`); it stays alive.
    pub fn leave(&mut self, peer: u32) {
        self.schedule(self.now, Kind::Leave { peer });
    }

    /// `peer` crashes now: it disappears, and its neighbours notice after
    /// [`Config::detection_delay`].
    pub fn crash(&mut self, peer: u32) {
        if !self.is_alive(peer) {
            return;
        }
        // Its memory goes; the fresh state stands in its slot, never fed.
        let empty = (self.factory)(peer, 0);
        let slot = &mut self.shards[peer as usize % SHARDS].states[peer as usize / SHARDS];
        let overlay = std::mem::replace(slot, empty);
        self.crashes += 1;
        let pos = self.alive_pos[peer as usize] as usize;
        self.alive.swap_remove(pos);
        if let Some(&moved) = self.alive.get(pos) {
            self.alive_pos[moved as usize] = pos as u32;
        }
        self.alive_pos[peer as usize] = NONE;
        self.env.alive_bits[peer as usize / 64] &= !(1 << (peer % 64));
        let at = self.now + self.detection_delay;
        let mut neighbours: Vec<u32> = overlay
            .outview()
            .peers()
            .chain(overlay.inview().peers())
            .copied()
            .collect();
        neighbours.sort_unstable();
        neighbours.dedup();
        for n in neighbours {
            self.schedule(
                at,
                Kind::Detect {
                    peer: n,
                    dead: peer,
                },
            );
        }
    }

    /// Processes every event due up to `now() + d`, then sets the clock there.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now.saturating_add(micros(d));
        self.run_until_us(until);
    }

    /// Processes every event due up to `t` (from the start), then sets the clock there.
    pub fn run_until(&mut self, t: Duration) {
        self.run_until_us(micros(t));
    }

    /// Processes the events of the next window (see the type's docs), from
    /// the earliest pending event; returns `false` if there was none.
    pub fn step(&mut self) -> bool {
        self.hand_over();
        let Some(t) = self.next_event(u64::MAX) else {
            return false;
        };
        let width = self.env.min_hop().max(1);
        self.run_until_us(t.max(self.now).saturating_add(width - 1));
        true
    }

    /// Runs windows of the shortest hop until `until`: all shards run the
    /// events of a window, then hand over what they scheduled for others.
    fn run_until_us(&mut self, until: u64) {
        let width = self.env.min_hop().max(1);
        let windows = until.saturating_sub(self.now) / width;
        if self.threads > 1
            && self.peers >= self.config.parallel_from
            && windows >= PARALLEL_WINDOWS
        {
            self.expire_links(self.now);
            self.parallel(until);
            self.finish(until);
            return;
        }
        let mut start = self.now;
        loop {
            // Hand over what the last window scheduled for others, then
            // skip stretches without events (timers far apart, a small
            // network): from the earliest event on.
            self.hand_over();
            match self.next_event(until) {
                Some(t) => start = start.max(t),
                None => break,
            }
            if start > until {
                break;
            }
            let end = start.saturating_add(width - 1).min(until);
            self.expire_links(start);
            for shard in &mut self.shards {
                shard.run(&self.env, end);
            }
            start = end + 1;
            if end == until {
                break;
            }
        }
        self.finish(until);
    }

    /// Hands over what was scheduled for other shards, and sets every clock
    /// to `until`: the end of a run.
    fn finish(&mut self, until: u64) {
        self.hand_over();
        for shard in &mut self.shards {
            shard.now = shard.now.max(until);
        }
        self.now = self.now.max(until);
    }

    /// Puts every event scheduled for another shard in that shard's queue.
    fn hand_over(&mut self) {
        self.collect_mail();
        for (shard, mail) in self.shards.iter_mut().zip(self.mail.chunks_mut(SHARDS)) {
            deliver_mail(shard, mail);
        }
    }

    /// The time of the earliest event due at or before `until`.
    fn next_event(&mut self, until: u64) -> Option<u64> {
        self.shards
            .iter_mut()
            .filter_map(|s| s.queue.next_at(until))
            .min()
    }
}
