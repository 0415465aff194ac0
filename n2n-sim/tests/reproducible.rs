//! A seed reproduces a run exactly; another seed gives another run.

use std::time::Duration;

use n2n_overlay_spray::spray;
use n2n_sim::stats::Snapshot;
use n2n_sim::{Config, Counters, Sim, SimRng};

fn run(seed: u64) -> (Snapshot, Counters, Vec<Vec<u32>>) {
    let config = Config {
        seed,
        loss: 0.01,
        ..Config::default()
    };
    let mut sim = Sim::new(config, |id, seed| {
        spray::State::new(id, spray::Config::default(), SimRng::seed_from(seed))
    });
    sim.add_peer();
    for _ in 1..200 {
        let contact = sim.random_member().unwrap();
        let newcomer = sim.add_peer();
        sim.join(newcomer, contact);
        sim.run_for(Duration::from_millis(100));
    }
    sim.run_for(Duration::from_secs(300));
    for victim in [3, 50, 120] {
        sim.crash(victim);
    }
    sim.leave(7);
    sim.run_for(Duration::from_secs(300));
    let views = (0..200)
        .map(|id| {
            sim.overlay(id)
                .map(|o| {
                    use n2n_core::overlay::Overlay;
                    o.outview().occurrences().copied().collect()
                })
                .unwrap_or_default()
        })
        .collect();
    (sim.snapshot(), sim.counters().clone(), views)
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
