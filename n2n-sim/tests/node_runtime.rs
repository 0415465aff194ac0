//! The node runtime: whole node cores per simulated peer build a Spray
//! overlay like the idealised runtime does, with every limit live.

use std::time::Duration;

use n2n_sim::node::{NodeRunConfig, run_node};

fn small(seed: u64) -> NodeRunConfig {
    NodeRunConfig {
        peers: 100,
        cycles: 10,
        delta: Duration::from_secs(10),
        interval: Duration::from_millis(300),
        seed,
        ..NodeRunConfig::default()
    }
}

#[test]
fn a_hundred_whole_nodes_build_one_spray_overlay() {
    let result = run_node(&small(3), |_| {});
    let last = result.rows.last().expect("rows");
    assert_eq!(last.peers, 100);
    // The joins give 1 + Σ_{k=3}^{N} 1/k arcs per peer on average (4.19 at
    // N = 100); shuffles keep the total.
    let expected = 1.0 + (3..=100).map(|k| 1.0 / f64::from(k)).sum::<f64>();
    assert!(
        (last.view.mean - expected).abs() < 0.6,
        "mean view {:.2}, expected about {expected:.2}",
        last.view.mean
    );
    assert_eq!(last.strong.count, 1, "{last:?}");
    assert_eq!(last.empty_views, 0, "{last:?}");
    assert_eq!(last.violations, 0, "honest peers break no rule");
    assert!(
        last.bridges_ok > 0,
        "shuffles bridge arcs through neighbours"
    );
    // In-degrees sum to the views: the mirrors are exact.
    let arcs_out = last.view.mean * last.peers as f64;
    let arcs_in = last.in_degree.mean * last.peers as f64;
    assert!((arcs_out - arcs_in).abs() < 1e-6);
}

#[test]
fn a_seed_reproduces_a_node_run() {
    let config = NodeRunConfig {
        peers: 40,
        cycles: 3,
        ..small(9)
    };
    let a = run_node(&config, |_| {});
    let b = run_node(&config, |_| {});
    assert_eq!(a.rows, b.rows);
    assert_eq!(a.removals, b.removals);
}

#[test]
fn the_ring_stack_closes_its_ring_and_floods_every_peer() {
    let config = NodeRunConfig {
        peers: 120,
        cycles: 12,
        ring: true,
        broadcasts: 3,
        ..small(5)
    };
    let result = run_node(&config, |_| {});
    let last = result.rows.last().expect("rows");
    assert_eq!(
        last.ring,
        Some(1.0),
        "every peer's ring arcs are right: {last:?}"
    );
    let b = result.broadcast.expect("broadcasts ran");
    assert_eq!(b.reach_min, 1.0, "{b:?}");
    assert!(
        b.duplicates_per_delivery > 0.0,
        "flooding sends copies: {b:?}"
    );
    assert_eq!(last.violations, 0);
}
