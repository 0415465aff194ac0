//! Measures, over several seeds, how tightly Spray's view sizes and
//! in-degrees gather once settled: the share of peers whose view is neither
//! ⌊m⌋ nor ⌈m⌉ (m the mean view), the in-degree σ, the smallest view, how
//! often the graph is not one strong component. N peers join one by one
//! (300 ms apart), then shuffle for 50 cycles; cycles 11–50 are measured.
//! In the latency engine only the peers between exchanges count for the
//! tail (`State::is_settled`); the share of the others is printed apart.
//!
//! ```text
//! cargo run --release -p n2n-sim --example view_tail -- <peers> <seeds> <latency|instant> <reset|keep>
//! ```

use std::time::Duration;

use n2n_overlay_spray::spray;
use n2n_sim::{Config, Network, Rounds, Sim, SimRng, measure};

type Peer = spray::State<u32, SimRng>;

#[derive(Default)]
struct Tally {
    tail: f64,
    settled_tail: f64,
    unsettled: f64,
    in_sd: f64,
    split: u32,
    cycles: u32,
    min_view: f64,
    mean: f64,
}

fn run<N: Network<Overlay = Peer>>(net: &mut N, peers: usize, t: &mut Tally) {
    let delta = spray::Config::default().delta;
    net.add_peer();
    for _ in 1..peers {
        let contact = net.random_member().expect("a member");
        let newcomer = net.add_peer();
        net.join(newcomer, contact);
        net.run_for(Duration::from_millis(300));
    }
    for cycle in 1..=50 {
        net.run_for(delta);
        if cycle <= 10 {
            continue;
        }
        let s = net.snapshot();
        let (lo, hi) = (s.view.mean.floor() as usize, s.view.mean.ceil() as usize);
        let outside = |v: usize| v < lo || v > hi;
        let total: u64 = measure::view_histogram(net)
            .iter()
            .filter(|(v, _)| outside(*v as usize))
            .map(|h| h.1)
            .sum();
        let (mut settled, mut settled_out) = (0usize, 0usize);
        for &id in net.alive() {
            let p = net.overlay(id).expect("live");
            if p.is_settled() {
                settled += 1;
                settled_out += usize::from(outside(p.view_size()));
            }
        }
        t.tail += total as f64 / s.peers as f64;
        t.settled_tail += settled_out as f64 / settled.max(1) as f64;
        t.unsettled += (s.peers - settled) as f64 / s.peers as f64;
        t.in_sd += s.in_degree.std_dev;
        t.split += u32::from(s.strong.count > 1);
        t.cycles += 1;
        t.min_view = if t.cycles == 1 {
            s.view.min
        } else {
            t.min_view.min(s.view.min)
        };
        if cycle == 50 {
            t.mean += s.view.mean;
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.into());
    let peers: usize = arg(1, "1000").parse().expect("peers");
    let seeds: u64 = arg(2, "8").parse().expect("seeds");
    let engine = arg(3, "latency");
    let age_rule = match arg(4, "reset").as_str() {
        "keep" => spray::AgeRule::Keep,
        _ => spray::AgeRule::Reset,
    };
    let spray_config = spray::Config {
        age_rule,
        ..spray::Config::default()
    };
    let mut t = Tally::default();
    for seed in 0..seeds {
        let config = Config {
            seed,
            threads: 1,
            ..Config::default()
        };
        let c = spray_config.clone();
        let factory = move |id, seed| spray::State::new(id, c.clone(), SimRng::seed_from(seed));
        if engine == "instant" {
            let mut net = Rounds::new(config, spray_config.delta, spray::Timer::Shuffle, factory);
            net.set_prefetch(spray::State::hot_buffers);
            run(&mut net, peers, &mut t);
        } else {
            let mut net = Sim::new(config, factory);
            net.set_prefetch(spray::State::hot_buffers);
            run(&mut net, peers, &mut t);
        }
    }
    let c = f64::from(t.cycles.max(1));
    println!(
        "{peers} peers, {seeds} seeds, {engine}, {age_rule:?}: views outside {{⌊m⌋, ⌈m⌉}} {:.3}% \
         (settled peers {:.3}%, peers mid-exchange {:.3}%); in-degree σ {:.3}; smallest view {}; \
         not one strong component in {}/{} measurements; mean view at cycle 50 {:.3}",
        100.0 * t.tail / c,
        100.0 * t.settled_tail / c,
        100.0 * t.unsettled / c,
        t.in_sd / c,
        t.min_view,
        t.split,
        t.cycles,
        t.mean / seeds as f64,
    );
}
