//! The instant-exchange engine (`Rounds`): the same Spray state machines,
//! round by round, each exchange applied at once.

use std::time::Duration;

use n2n_overlay_spray::spray;
use n2n_sim::scenario::{self, Scenario};
use n2n_sim::{Config, Network, Rounds, SimRng, measure};

type Peer = spray::State<u32, SimRng>;

fn delta() -> Duration {
    spray::Config::default().delta
}

fn network(seed: u64) -> Rounds<Peer> {
    let config = Config {
        seed,
        ..Config::default()
    };
    Rounds::new(config, delta(), spray::Timer::Shuffle, |id, seed| {
        spray::State::new(id, spray::Config::default(), SimRng::seed_from(seed))
    })
}

/// `n` peers join one by one through random members, 300 ms apart.
fn grow(net: &mut Rounds<Peer>, n: usize) {
    net.add_peer();
    for _ in 1..n {
        let contact = net.random_member().expect("a live peer");
        let newcomer = net.add_peer();
        net.join(newcomer, contact);
        net.run_for(Duration::from_millis(300));
    }
}

fn views(net: &Rounds<Peer>) -> Vec<Vec<u32>> {
    (0..net.len() as u32)
        .map(|id| {
            net.overlay(id)
                .map(|o| o.outview().occurrences().copied().collect())
                .unwrap_or_default()
        })
        .collect()
}

#[test]
fn same_seed_same_rounds() {
    let run = |seed| {
        let mut net = network(seed);
        grow(&mut net, 200);
        net.run_for(delta() * 5);
        net.crash(3);
        net.run_for(delta() * 5);
        (views(&net), net.counters())
    };
    let a = run(5);
    assert_eq!(a, run(5));
    assert_ne!(a.0, run(6).0);
}

/// 1,000 peers, 8 seeds, 40 rounds after the joins: no arc is ever in
/// flight between turns, so every measurement is a settled network. No
/// view is ever empty, the arc total never changes, and after 10 rounds at
/// most 0.5% of the peers are outside {⌊m⌋, ⌈m⌉} (the paper's rules,
/// implemented apart: 0.02%).
#[test]
fn rounds_keep_views_tight() {
    let (mut outside, mut measured) = (0u64, 0u64);
    for seed in 0..8 {
        let mut net = network(seed);
        grow(&mut net, 1000);
        let arcs = net.snapshot().arcs_out;
        for round in 1..=40 {
            net.run_for(delta());
            let s = net.snapshot();
            assert_eq!(s.empty_views, 0, "seed {seed}, round {round}: {s:?}");
            assert_eq!(s.arcs_out, arcs, "seed {seed}: arcs move, never vanish");
            assert_eq!(s.arcs_out, s.arcs_in);
            if round > 10 {
                let (lo, hi) = (s.view.mean.floor() as u32, s.view.mean.ceil() as u32);
                outside += measure::view_histogram(&net)
                    .iter()
                    .filter(|(size, _)| *size < lo || *size > hi)
                    .map(|h| h.1)
                    .sum::<u64>();
                measured += s.peers as u64;
            }
        }
        let s = net.snapshot();
        assert_eq!(s.weak.count, 1, "seed {seed}: {s:?}");
    }
    let share = outside as f64 / measured as f64;
    eprintln!("views outside {{⌊m⌋, ⌈m⌉}}: {:.3}%", 100.0 * share);
    assert!(share <= 0.005, "{:.3}%", 100.0 * share);
}

/// A scenario with churn, a failure and loss runs on the instant engine.
#[test]
fn a_scenario_runs_on_the_instant_engine() {
    let s = Scenario::from_toml_str(
        r#"
        seed = 11
        peers = 150
        cycles = 7
        engine = "instant"
        loss = 0.001
        [arrival]
        mode = "one-by-one"
        interval_ms = 300
        [churn]
        joins_per_cycle = 5
        leaves_per_cycle = 5
        until_cycle = 4
        [failure]
        at_cycle = 3
        fraction = 0.1
        "#,
    )
    .unwrap();
    let run = scenario::run(&s, |_| {}).unwrap();
    let last = run.rows.last().unwrap();
    assert_eq!(last.arcs, last.arcs_in);
    assert_eq!(last.empty_views, 0, "{last:?}");
    assert!(last.weak.1 * 100 >= last.peers * 97, "{last:?}");
    assert!(last.exchanges > 0);
}
