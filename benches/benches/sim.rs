//! Simulator speed: events per second of `n2n-sim` running Spray at 10k and
//! 100k peers.
//!
//! The network is built outside the timed part through the simulator's public
//! entry points (`Sim::new`, `add_peer`, `join`, `run_for`): the peer count
//! doubles every simulated second (each newcomer joins a random member), then
//! the network runs two shuffle periods more. The timed part is one shuffle
//! period Δ of simulated time (`Sim::run_for`, windows of the shortest hop,
//! on every core from 20k peers on), in which every peer shuffles once (the
//! batches that joined together shuffle together, so a shorter span would
//! catch a burst or a lull): criterion reports the time per cycle, and the
//! bench prints the events per second
//! of wall time over every timed iteration (an event is one peer's part of
//! a message, an arc notice, a bridge step or a timer, counted by the
//! simulator).
//!
//! Building 100k peers takes a while (tens of seconds in release), so the 100k
//! bench takes few samples. Under `cargo test` (no `--bench`) the networks
//! hold 100 and 1000 peers.
//!
//! Run: `cargo bench -p benches --bench sim`

use std::time::{Duration, Instant};

use benches::bench_mode;
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use n2n_overlay_spray::spray;
use n2n_sim::{Config, Sim, SimRng};

type Spray = spray::State<u32, SimRng>;

fn network(peers: usize) -> Sim<Spray> {
    let mut sim = Sim::new(Config::default(), |id, seed| {
        spray::State::new(id, spray::Config::default(), SimRng::seed_from(seed))
    });
    sim.add_peer();
    while sim.len() < peers {
        let batch = sim.len().min(peers - sim.len());
        let contacts: Vec<u32> = (0..batch)
            .map(|_| sim.random_member().expect("a member"))
            .collect();
        for contact in contacts {
            let newcomer = sim.add_peer();
            sim.join(newcomer, contact);
        }
        sim.run_for(Duration::from_secs(1));
    }
    // Two shuffle periods: every peer's shuffle timer is armed, spread over
    // the period, and each simulated second holds its share of exchanges.
    sim.run_for(2 * delta());
    sim
}

/// Spray's shuffle period.
fn delta() -> Duration {
    spray::Config::default().delta
}

fn sim(c: &mut Criterion) {
    let scale = if bench_mode() { 1 } else { 100 };
    let mut g = c.benchmark_group("sim_cycle");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(10));
    for (name, peers) in [("10k", 10_000), ("100k", 100_000)] {
        let peers = peers / scale;
        let built = Instant::now();
        let mut sim = network(peers);
        println!(
            "sim_cycle/{name}: {peers} peers built in {:.1?} ({} events), {} threads",
            built.elapsed(),
            sim.counters().events,
            sim.threads()
        );
        let (mut events, mut spent) = (0u64, Duration::ZERO);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let before = sim.counters().events;
                let start = Instant::now();
                for _ in 0..iters {
                    sim.run_for(delta());
                }
                let elapsed = start.elapsed();
                let done = sim.counters().events - before;
                assert!(done > 0, "the shuffles never stop");
                events += done;
                spent += elapsed;
                elapsed
            })
        });
        println!(
            "sim_cycle/{name}: {:.2} M events/s ({events} events in {spent:.1?})",
            events as f64 / spent.as_secs_f64().max(1e-9) / 1e6
        );
    }
    g.finish();
}

criterion_group!(benches, sim);
criterion_main!(benches);
