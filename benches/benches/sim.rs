//! Simulator speed: events per second of `n2n-sim` running Spray at 10k and
//! 100k peers.
//!
//! The network is built outside the timed part through the simulator's public
//! entry points (`Sim::new`, `add_peer`, `join`, `run_for`): the peer count
//! doubles every simulated second (each newcomer joins a random member), then
//! the network runs 2 s more. The timed part is `Sim::step`, one event each
//! (a message, an arc notice, a bridge step, a timer), in the steady state of
//! periodic shuffles; criterion reports events per second.
//!
//! Building 100k peers takes a while (tens of seconds in release), so the 100k
//! bench takes few samples. Under `cargo test` (no `--bench`) the networks
//! hold 100 and 1000 peers.
//!
//! Run: `cargo bench -p benches --bench sim`

use std::time::{Duration, Instant};

use benches::bench_mode;
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
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
    sim.run_for(Duration::from_secs(2));
    sim
}

fn sim(c: &mut Criterion) {
    let scale = if bench_mode() { 1 } else { 100 };
    let mut g = c.benchmark_group("sim_events");
    g.throughput(Throughput::Elements(1))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (name, peers) in [("10k", 10_000), ("100k", 100_000)] {
        let peers = peers / scale;
        let built = Instant::now();
        let mut sim = network(peers);
        println!(
            "sim_events/{name}: {peers} peers built in {:.1?} ({} events)",
            built.elapsed(),
            sim.counters().events
        );
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    assert!(sim.step(), "the shuffles never stop");
                }
                start.elapsed()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, sim);
criterion_main!(benches);
