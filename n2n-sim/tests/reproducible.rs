//! A seed reproduces a run exactly; another seed gives another run.

use std::time::Duration;

use n2n_overlay_spray::spray;
use n2n_sim::stats::Snapshot;
use n2n_sim::{Config, Counters, Sim, SimRng};

/// `n` peers, each joining a random member `gap` after the one before.
fn grow<O>(sim: &mut Sim<O>, n: usize, gap: Duration)
where
    O: n2n_core::overlay::Overlay<u32> + n2n_core::overlay::Views<u32> + Send,
    O::Timer: Send,
{
    sim.add_peer();
    for _ in 1..n {
        let contact = sim.random_member().unwrap();
        let newcomer = sim.add_peer();
        sim.join(newcomer, contact);
        sim.run_for(gap);
    }
}

fn run(seed: u64) -> (Snapshot, Counters, Vec<Vec<u32>>) {
    run_on(seed, 1)
}

/// The run of `seed` on `threads` threads (even this small network: the
/// threshold for threads is lowered to 0).
fn run_on(seed: u64, threads: usize) -> (Snapshot, Counters, Vec<Vec<u32>>) {
    let config = Config {
        seed,
        loss: 0.01,
        message_loss: 0.001,
        threads,
        parallel_from: 0,
        ..Config::default()
    };
    let mut sim = Sim::new(config, |id, seed| {
        spray::State::new(id, spray::Config::default(), SimRng::seed_from(seed))
    });
    grow(&mut sim, 200, Duration::from_millis(100));
    sim.run_for(Duration::from_secs(300));
    for victim in [3, 50, 120] {
        sim.crash(victim);
    }
    sim.leave(7);
    sim.run_for(Duration::from_secs(300));
    let views = (0..200)
        .map(|id| {
            sim.overlay(id)
                .map(|o| o.outview().occurrences().copied().collect())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(sim.threads(), threads);
    (sim.snapshot(), sim.counters(), views)
}

#[test]
fn same_seed_same_run() {
    let a = run(42);
    let b = run(42);
    assert_eq!(a, b);
    assert!(a.1.lost > 0 && a.1.crashes == 3, "{:?}", a.1);
    let c = run(43);
    assert_ne!(a.2, c.2, "another seed, other views");
}

/// The shards run on threads between meetings; what each computes depends
/// only on the events, never on which thread runs it or when.
#[test]
fn threads_change_nothing() {
    let one = run_on(9, 1);
    assert_eq!(one, run_on(9, 2));
    assert_eq!(one, run_on(9, 3));
    assert!(one.1.events > 50_000, "{:?}", one.1);
}

/// Spray, except that peer 5 panics on its first timer after `at`.
struct Bomb {
    inner: spray::State<u32, SimRng>,
    id: u32,
    at: std::time::Instant,
}

impl n2n_core::overlay::Overlay<u32> for Bomb {
    type Timer = spray::Timer;
    fn protocol(&self) -> n2n_core::ProtocolId {
        self.inner.protocol()
    }
    fn handle(
        &mut self,
        now: std::time::Instant,
        input: n2n_core::overlay::Input<u32, spray::Timer>,
    ) {
        if self.id == 5 && now >= self.at && matches!(input, n2n_core::overlay::Input::Timer(_)) {
            panic!("peer 5 blows up");
        }
        self.inner.handle(now, input);
    }
    fn poll_output(&mut self) -> Option<n2n_core::overlay::Output<u32, spray::Timer>> {
        self.inner.poll_output()
    }
    fn peers(&mut self, k: usize) -> Vec<u32> {
        self.inner.peers(k)
    }
}

impl n2n_core::overlay::Views<u32> for Bomb {
    fn inview(&self) -> &n2n_core::Inview<u32> {
        self.inner.inview()
    }
    fn outview(&self) -> &n2n_core::Outview<u32> {
        self.inner.outview()
    }
}

/// A peer's panic on a worker thread reaches the caller; the other threads
/// stop at their next meeting instead of waiting forever.
#[test]
fn a_panic_on_a_thread_reaches_the_caller() {
    let config = Config {
        threads: 2,
        parallel_from: 0,
        ..Config::default()
    };
    // Once the network is built (12 s of virtual time from the start).
    let at = std::time::Instant::now() + Duration::from_secs(60);
    let mut sim = Sim::new(config, move |id, seed| Bomb {
        inner: spray::State::new(id, spray::Config::default(), SimRng::seed_from(seed)),
        id,
        at,
    });
    grow(&mut sim, 40, Duration::from_millis(300));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        sim.run_for(Duration::from_secs(600));
    }));
    assert!(outcome.is_err(), "the panic of peer 5 propagates");
}
