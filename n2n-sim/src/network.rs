//! What the measurements and the scenario runner need of an engine: the
//! latency engine ([`Sim`]) and the instant-exchange one ([`Rounds`]) both
//! are a [`Network`].

use std::time::Duration;

use n2n_core::overlay::{Overlay, Views};

use crate::stats::{self, Snapshot};
use crate::{Counters, Rounds, Sim};

/// A simulated network of overlays over peer ids `0..len()`.
pub trait Network {
    /// The overlay every peer runs.
    type Overlay: Overlay<u32> + Views<u32>;

    /// Peers ever added (live or not).
    fn len(&self) -> usize;
    /// Whether no peer was ever added.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Live peers, in no particular order (a function of the calls so far).
    fn alive(&self) -> &[u32];
    /// Whether `peer` exists and has not crashed.
    fn is_alive(&self, peer: u32) -> bool;
    /// The overlay of a live peer.
    fn overlay(&self, peer: u32) -> Option<&Self::Overlay>;
    /// Virtual time since the start.
    fn now(&self) -> Duration;
    /// What the engine did, counted.
    fn counters(&self) -> Counters;
    /// Arc changes on their way: `(opening, closing)` (none in an engine
    /// that applies them at once).
    fn arcs_in_flight(&self) -> (u64, u64);
    /// A live peer drawn uniformly with the engine's RNG.
    fn random_member(&mut self) -> Option<u32>;
    /// Adds a live peer in no overlay yet; returns its id.
    fn add_peer(&mut self) -> u32;
    /// `peer` joins through `contact` at `at` (now if earlier).
    fn join_at(&mut self, peer: u32, contact: u32, at: Duration);
    /// `peer` joins through `contact` now.
    fn join(&mut self, peer: u32, contact: u32) {
        self.join_at(peer, contact, self.now());
    }
    /// `peer` leaves gracefully now.
    fn leave(&mut self, peer: u32);
    /// `peer` crashes now.
    fn crash(&mut self, peer: u32);
    /// Runs everything due up to `now() + d`.
    fn run_for(&mut self, d: Duration);
    /// Runs everything due up to `t` from the start.
    fn run_until(&mut self, t: Duration);
    /// Measures the overlay now (see [`stats`]).
    fn snapshot(&self) -> Snapshot {
        stats::snapshot(
            self.now(),
            self.len(),
            |id| self.overlay(id).map(|o| o.outview()),
            |id| self.overlay(id).map(|o| o.inview()),
        )
    }
}

impl<O: Overlay<u32> + Views<u32> + Send> Network for Sim<O>
where
    O::Timer: Send,
{
    type Overlay = O;
    fn len(&self) -> usize {
        Sim::len(self)
    }
    fn alive(&self) -> &[u32] {
        Sim::alive(self)
    }
    fn is_alive(&self, peer: u32) -> bool {
        Sim::is_alive(self, peer)
    }
    fn overlay(&self, peer: u32) -> Option<&O> {
        Sim::overlay(self, peer)
    }
    fn now(&self) -> Duration {
        Sim::now(self)
    }
    fn counters(&self) -> Counters {
        Sim::counters(self)
    }
    fn arcs_in_flight(&self) -> (u64, u64) {
        Sim::arcs_in_flight(self)
    }
    fn random_member(&mut self) -> Option<u32> {
        Sim::random_member(self)
    }
    fn add_peer(&mut self) -> u32 {
        Sim::add_peer(self)
    }
    fn join_at(&mut self, peer: u32, contact: u32, at: Duration) {
        Sim::join_at(self, peer, contact, at);
    }
    fn leave(&mut self, peer: u32) {
        Sim::leave(self, peer);
    }
    fn crash(&mut self, peer: u32) {
        Sim::crash(self, peer);
    }
    fn run_for(&mut self, d: Duration) {
        Sim::run_for(self, d);
    }
    fn run_until(&mut self, t: Duration) {
        Sim::run_until(self, t);
    }
    fn snapshot(&self) -> Snapshot {
        Sim::snapshot(self)
    }
}

impl<O: Overlay<u32> + Views<u32>> Network for Rounds<O>
where
    O::Timer: PartialEq,
{
    type Overlay = O;
    fn len(&self) -> usize {
        Rounds::len(self)
    }
    fn alive(&self) -> &[u32] {
        Rounds::alive(self)
    }
    fn is_alive(&self, peer: u32) -> bool {
        Rounds::is_alive(self, peer)
    }
    fn overlay(&self, peer: u32) -> Option<&O> {
        Rounds::overlay(self, peer)
    }
    fn now(&self) -> Duration {
        Rounds::now(self)
    }
    fn counters(&self) -> Counters {
        Rounds::counters(self)
    }
    fn arcs_in_flight(&self) -> (u64, u64) {
        (0, 0)
    }
    fn random_member(&mut self) -> Option<u32> {
        Rounds::random_member(self)
    }
    fn add_peer(&mut self) -> u32 {
        Rounds::add_peer(self)
    }
    fn join_at(&mut self, peer: u32, contact: u32, at: Duration) {
        Rounds::join_at(self, peer, contact, at);
    }
    fn leave(&mut self, peer: u32) {
        Rounds::leave(self, peer);
    }
    fn crash(&mut self, peer: u32) {
        Rounds::crash(self, peer);
    }
    fn run_for(&mut self, d: Duration) {
        Rounds::run_for(self, d);
    }
    fn run_until(&mut self, t: Duration) {
        Rounds::run_until(self, t);
    }
}
