//! The node runtime against the idealised runtime, seed by seed, on the
//! same scenario (one-by-one arrivals every 300 ms, Δ = 60 s, hops of
//! 10–50 ms): mean view, view σ, in-degree σ, duplicate share, and the
//! largest components after removing 30% and 50% of the peers.
//!
//! Run: `cargo run --release -p n2n-sim --example runtimes -- PEERS CYCLES SEEDS [FIRST]`
//! (defaults: 1000 50 8 1; seeds FIRST..FIRST+SEEDS-1).

use std::time::Instant;

use n2n_sim::node::{NodeRunConfig, run_node};
use n2n_sim::scenario::{self, Scenario};

#[derive(Default, Clone, Copy)]
struct Figures {
    mean: f64,
    view_sd: f64,
    in_sd: f64,
    duplicates: f64,
    strong30: f64,
    weak30: f64,
    strong50: f64,
    weak50: f64,
    seconds: f64,
}

fn print(name: &str, f: &Figures) {
    println!(
        "{name:<12} mean view {:.3}  view σ {:.3}  in-degree σ {:.3}  duplicates {:.2}%  \
         30% removed: strong {:.1}% weak {:.1}%  50% removed: strong {:.1}% weak {:.1}%  {:.1} s",
        f.mean,
        f.view_sd,
        f.in_sd,
        100.0 * f.duplicates,
        100.0 * f.strong30,
        100.0 * f.weak30,
        100.0 * f.strong50,
        100.0 * f.weak50,
        f.seconds
    );
}

fn average(all: &[Figures]) -> Figures {
    let n = all.len().max(1) as f64;
    let sum = |g: fn(&Figures) -> f64| all.iter().map(g).sum::<f64>() / n;
    Figures {
        mean: sum(|f| f.mean),
        view_sd: sum(|f| f.view_sd),
        in_sd: sum(|f| f.in_sd),
        duplicates: sum(|f| f.duplicates),
        strong30: sum(|f| f.strong30),
        weak30: sum(|f| f.weak30),
        strong50: sum(|f| f.strong50),
        weak50: sum(|f| f.weak50),
        seconds: sum(|f| f.seconds),
    }
}

fn ideal(peers: u32, cycles: u32, seed: u64) -> anyhow::Result<Figures> {
    let s = Scenario {
        peers,
        cycles,
        seed,
        removal_sweep: true,
        ..Scenario::default()
    };
    let started = Instant::now();
    let r = scenario::run(&s, |_| {})?;
    let last = r.rows.last().expect("rows");
    let at = |share: f64| {
        r.removals
            .iter()
            .find(|x| (x.removed - share).abs() < 1e-9)
            .map(|x| {
                let left = x.left.max(1) as f64;
                (x.strong.largest as f64 / left, x.weak.largest as f64 / left)
            })
            .unwrap_or((f64::NAN, f64::NAN))
    };
    let (s30, w30) = at(0.3);
    let (s50, w50) = at(0.5);
    Ok(Figures {
        mean: last.view[0],
        view_sd: last.view[1],
        in_sd: last.in_degree[1],
        duplicates: last.duplicates,
        strong30: s30,
        weak30: w30,
        strong50: s50,
        weak50: w50,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn node(peers: u32, cycles: u32, seed: u64) -> Figures {
    let config = NodeRunConfig {
        peers,
        cycles,
        seed,
        ..NodeRunConfig::default()
    };
    let started = Instant::now();
    let r = run_node(&config, |_| {});
    let last = r.rows.last().expect("rows");
    let share = |i: usize| {
        let x = &r.removals[i];
        let left = x.left.max(1) as f64;
        (x.strong.largest as f64 / left, x.weak.largest as f64 / left)
    };
    let (s30, w30) = share(0);
    let (s50, w50) = share(1);
    Figures {
        mean: last.view.mean,
        view_sd: last.view.std_dev,
        in_sd: last.in_degree.std_dev,
        duplicates: last.duplicates_share,
        strong30: s30,
        weak30: w30,
        strong50: s50,
        weak50: w50,
        seconds: started.elapsed().as_secs_f64(),
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let peers = args.first().copied().unwrap_or(1000) as u32;
    let cycles = args.get(1).copied().unwrap_or(50) as u32;
    let seeds = args.get(2).copied().unwrap_or(8);
    let first = args.get(3).copied().unwrap_or(1);
    let (mut ideals, mut nodes) = (Vec::new(), Vec::new());
    for seed in first..first + seeds {
        let i = ideal(peers, cycles, seed)?;
        let n = node(peers, cycles, seed);
        print(&format!("seed {seed} ideal"), &i);
        print(&format!("seed {seed} node"), &n);
        ideals.push(i);
        nodes.push(n);
    }
    println!("--- {peers} peers, {cycles} cycles, mean over {seeds} seeds");
    print("ideal", &average(&ideals));
    print("node", &average(&nodes));
    Ok(())
}
