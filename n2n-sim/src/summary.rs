//! The text summary of an ideal-runtime run, and the process's CPU time.

use std::fs;
use std::time::Duration;

use n2n_sim::measure;
use n2n_sim::scenario::{Engine, RunResult, Scenario};

/// Where cycle 0 ended: the arrivals, apart from the cycles.
#[derive(Debug, Default)]
pub(crate) struct Arrived {
    pub(crate) wall: Duration,
    pub(crate) events: u64,
    pub(crate) cpu: Option<f64>,
    pub(crate) exchanges: u64,
}

pub(crate) fn summary(s: &Scenario, r: &RunResult, wall: f64, arrived: Arrived) -> String {
    let last = r.rows.last().expect("cycle 0 is always measured");
    let mut t = String::new();
    let mut line = |k: &str, v: String| t.push_str(&format!("{k:<38} {v}\n"));
    line("seed", s.seed.to_string());
    line("peers (live at the end)", last.peers.to_string());
    line("cycles", s.cycles.to_string());
    line("ln N", format!("{:.3}", last.ln_n));
    line(
        "partial view mean ± σ [min, max]",
        format!(
            "{:.3} ± {:.3} [{}, {}]",
            last.view[0], last.view[1], last.view[2], last.view[3]
        ),
    );
    line(
        "in-degree mean ± σ [min, max]",
        format!(
            "{:.3} ± {:.3} [{}, {}]",
            last.in_degree[0], last.in_degree[1], last.in_degree[2], last.in_degree[3]
        ),
    );
    let mean = last.in_degree[0];
    line(
        "in-degree within mean ± 1",
        format!(
            "{:.1}%",
            100.0
                * measure::share_within(
                    &r.in_degrees,
                    (mean - 1.0).round().max(0.0) as u32,
                    (mean + 1.0).round() as u32
                )
        ),
    );
    line(
        "arcs (Σ out / Σ in)",
        format!("{} / {}", last.arcs, last.arcs_in),
    );
    line("empty partial views", last.empty_views.to_string());
    line(
        "peers with a duplicate arc",
        format!("{:.2}%", 100.0 * last.duplicates),
    );
    line(
        "strong components (largest)",
        format!("{} ({})", last.strong.0, last.strong.1),
    );
    line(
        "weak components (largest)",
        format!("{} ({})", last.weak.0, last.weak.1),
    );
    line("clustering coefficient", format!("{:.5}", r.clustering));
    line(
        "average shortest path (reached)",
        format!("{:.3} ({:.1}%)", r.path.mean, 100.0 * r.path.reached),
    );
    line(
        "size estimate error local / avg",
        format!(
            "{:.1}% / {:.1}%",
            100.0 * last.estimate_local_error,
            100.0 * last.estimate_error
        ),
    );
    if let Some(first_strong_split) = r.removals.iter().find(|m| m.strong.count > 1) {
        line(
            "strong components split at",
            format!("{:.0}% removed", 100.0 * first_strong_split.removed),
        );
    }
    if let Some(first_weak_split) = r.removals.iter().find(|m| m.weak.count > 1) {
        line(
            "weak components split at",
            format!("{:.0}% removed", 100.0 * first_weak_split.removed),
        );
    }
    for m in r
        .removals
        .iter()
        .filter(|m| [30, 45, 60, 70, 80].contains(&((m.removed * 100.0).round() as u32)))
    {
        let share = |n: usize| 100.0 * n as f64 / m.left.max(1) as f64;
        line(
            &format!("largest strong / weak, {:.0}% removed", 100.0 * m.removed),
            format!(
                "{:.1}% / {:.1}% ({} / {} components)",
                share(m.strong.largest),
                share(m.weak.largest),
                m.strong.count,
                m.weak.count
            ),
        );
    }
    if s.loss > 0.0 || s.message_loss > 0.0 {
        let first = &r.rows[0];
        line(
            "arcs + in flight, cycle 0 → last",
            format!(
                "{} → {}",
                first.arcs as i64 + first.arcs_in_flight,
                last.arcs as i64 + last.arcs_in_flight
            ),
        );
        line(
            "signaling hops / messages lost",
            format!("{} / {}", last.lost, last.messages_lost),
        );
    }
    line("events", r.events.to_string());
    line(
        "wall time, event rate",
        format!(
            "{wall:.2} s, {:.0} events/s",
            r.events as f64 / wall.max(1e-9)
        ),
    );
    line(
        "engine",
        match s.engine {
            Engine::Latency => "latency".into(),
            Engine::Instant => "instant (round-based)".into(),
        },
    );
    if s.cycles > 0 {
        let (at, events) = (arrived.wall.as_secs_f64(), r.events - arrived.events);
        let cycles = (wall - at).max(1e-9);
        line(
            "cycles 1.. only: wall time, rate",
            format!("{cycles:.2} s, {:.0} events/s", events as f64 / cycles),
        );
    }
    if let Some(cpu) = cpu_seconds() {
        // On a shared machine the wall time counts the other processes too.
        line(
            "CPU time, event rate",
            format!(
                "{cpu:.2} s, {:.0} events/s",
                r.events as f64 / cpu.max(1e-9)
            ),
        );
        if let (Some(at), true) = (arrived.cpu, s.cycles > 0) {
            let spent = (cpu - at).max(1e-9);
            let exchanges = last.exchanges.saturating_sub(arrived.exchanges);
            line(
                "cycles 1.. only: CPU time per cycle",
                format!("{:.3} s", spent / f64::from(s.cycles)),
            );
            line(
                "cycles 1.. only: exchanges, per CPU s",
                format!("{exchanges}, {:.0}", exchanges as f64 / spent),
            );
        }
    }
    t
}

/// User and system CPU time of this process so far, where `/proc` tells it
/// (Linux; clock ticks of 1/100 s).
pub(crate) fn cpu_seconds() -> Option<f64> {
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some((ticks(11)? + ticks(12)?) as f64 / 100.0)
}
