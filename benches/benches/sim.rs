//! Simulator speed: `n2n-sim` running Spray at 10k and 100k peers, on both
//! engines: the latency engine (`Sim`: every hop takes a link's latency) and
//! the instant-exchange engine (`Rounds`: round by round, each exchange
//! applied at once, as PeerSim's cycle-driven engine).
//!
//! The network is built outside the timed part through the engines' public
//! entry points (`add_peer`, `join_at`, `run_until`), with the arrivals of
//! `n2n-sim/scenarios/scale-100k.toml` (one by one, ever closer), so that
//! the cycles measured are those of the simulator's own summary. The timed part is one shuffle
//! period Δ of simulated time (`run_for(Δ)`), in which every peer shuffles
//! once: criterion reports the wall time per cycle, and the bench prints,
//! over every timed iteration, the CPU time per cycle (this process's user
//! and system time, from `/proc`, all threads), the exchanges per CPU
//! second (shuffles started) and the events per second of wall time (an
//! event is one peer's part of a message, an arc notice, a bridge step or
//! a timer in the latency engine; one step in the instant one).
//!
//! Building 100k peers takes a while (tens of seconds in release), so the
//! bench takes few samples. Under `cargo test` (no `--bench`) the networks
//! hold 100 and 1000 peers.
//!
//! Run: `cargo bench -p benches --bench sim`

use std::time::{Duration, Instant};

use benches::bench_mode;
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use n2n_overlay_spray::spray;
use n2n_sim::{Config, Network, Rounds, Sim, SimRng};

type Spray = spray::State<u32, SimRng>;

fn peer(id: u32, seed: u64) -> Spray {
    spray::State::new(id, spray::Config::default(), SimRng::seed_from(seed))
}

/// Builds the network as `n2n-sim/scenarios/scale-100k.toml` does: peers
/// arrive one by one, 300 ms apart up to 1000 members, then ever closer
/// (the interval shrinks in proportion to the size), each joining a member
/// drawn at random; then two shuffle periods more, so that every peer's
/// shuffle timer is armed and spread over the period.
fn grow<N: Network<Overlay = Spray>>(net: &mut N, peers: usize) {
    const INTERVAL: Duration = Duration::from_millis(300);
    const SPEED_UP_FROM: usize = 1000;
    const WINDOW: Duration = Duration::from_secs(1);
    net.add_peer();
    let mut at = net.now();
    while net.len() < peers {
        // Schedules the arrivals of the next second, then runs it; the
        // contacts are drawn among the members before it.
        let end = net.now() + WINDOW;
        let mut newcomers = Vec::new();
        while at < end && net.len() + newcomers.len() < peers {
            let size = net.len() + newcomers.len();
            let interval = if size < SPEED_UP_FROM {
                INTERVAL
            } else {
                INTERVAL.mul_f64(SPEED_UP_FROM as f64 / size as f64)
            };
            at += interval;
            newcomers.push(at);
        }
        for when in newcomers {
            let contact = net.random_member().expect("a member");
            let newcomer = net.add_peer();
            net.join_at(newcomer, contact, when);
        }
        net.run_until(end);
    }
    net.run_for(2 * delta());
}

/// Spray's shuffle period.
fn delta() -> Duration {
    spray::Config::default().delta
}

/// User and system CPU time of this process so far (Linux; 0 elsewhere).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / 100.0
}

fn exchanges<N: Network<Overlay = Spray>>(net: &N) -> u64 {
    net.alive()
        .iter()
        .filter_map(|&id| net.overlay(id))
        .map(Spray::exchanges_started)
        .sum()
}

fn bench_cycles<N: Network<Overlay = Spray>>(
    c: &mut Criterion,
    group: &str,
    name: &str,
    mut net: N,
    peers: usize,
) {
    let mut g = c.benchmark_group(group);
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(10));
    let built = Instant::now();
    grow(&mut net, peers);
    println!(
        "{group}/{name}: {peers} peers built in {:.1?} ({} events)",
        built.elapsed(),
        net.counters().events
    );
    let (mut events, mut spent, mut cpu, mut cycles, mut shuffles) =
        (0u64, Duration::ZERO, 0.0, 0u64, 0u64);
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let (before, cpu_before, shuffles_before) =
                (net.counters().events, cpu_seconds(), exchanges(&net));
            let start = Instant::now();
            for _ in 0..iters {
                net.run_for(delta());
            }
            let elapsed = start.elapsed();
            let done = net.counters().events - before;
            assert!(done > 0, "the shuffles never stop");
            events += done;
            spent += elapsed;
            cpu += cpu_seconds() - cpu_before;
            cycles += iters;
            shuffles += exchanges(&net).saturating_sub(shuffles_before);
            elapsed
        })
    });
    println!(
        "{group}/{name}: {:.3} s CPU per cycle, {:.0} exchanges per CPU second, {:.2} M events/s \
         ({events} events in {spent:.1?} over {cycles} cycles)",
        cpu / cycles.max(1) as f64,
        shuffles as f64 / cpu.max(1e-9),
        events as f64 / spent.as_secs_f64().max(1e-9) / 1e6
    );
    g.finish();
}

fn sim(c: &mut Criterion) {
    let scale = if bench_mode() { 1 } else { 100 };
    for (name, peers) in [("10k", 10_000), ("100k", 100_000)] {
        let peers = peers / scale;
        let latency = Sim::new(Config::default(), peer);
        println!("sim_cycle/{name}: {} threads", latency.threads());
        bench_cycles(c, "sim_cycle", name, latency, peers);
        let mut instant = Rounds::new(Config::default(), delta(), spray::Timer::Shuffle, peer);
        instant.set_prefetch(spray::State::hot_buffers);
        bench_cycles(c, "sim_cycle_instant", name, instant, peers);
    }
}

criterion_group!(benches, sim);
criterion_main!(benches);
