//! `--runtime node`: the scenario run by whole node cores, one per peer.

use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use n2n_sim::node::{NodeCycle, NodeRunConfig, run_node};
use n2n_sim::scenario::{Arrival, Scenario};

/// The node runtime's settings for `scenario`, or why it cannot run it.
fn node_config(s: &Scenario, signed: bool, ring: bool) -> anyhow::Result<NodeRunConfig> {
    let Arrival::OneByOne {
        interval_ms,
        speed_up_from: None,
    } = s.arrival
    else {
        bail!(
            "the node runtime runs one-by-one arrivals at a fixed interval (no burst, no speed-up)"
        );
    };
    if s.churn.is_some() || s.failure.is_some() || s.message_loss > 0.0 {
        bail!(
            "the node runtime does not run churn, failures or message_loss yet (use --runtime ideal)"
        );
    }
    Ok(NodeRunConfig {
        peers: s.peers,
        cycles: s.cycles,
        delta: Duration::from_millis(s.delta_ms),
        interval: Duration::from_millis(interval_ms),
        latency_min: Duration::from_millis(s.latency_min_ms),
        latency_max: Duration::from_millis(s.latency_max_ms),
        loss: s.loss,
        seed: s.seed,
        signed,
        removals: if s.removal_sweep {
            (0..=19).map(|i| f64::from(i) * 0.05).collect()
        } else {
            vec![0.3, 0.5]
        },
        ring,
        ..NodeRunConfig::default()
    })
}

const CSV_HEADER: &str = "cycle,peers,view_mean,view_sd,view_min,view_max,in_sd,empty_views,\
duplicates_share,strong_count,strong_largest,weak_count,weak_largest,connections,handshakes,\
bridges_ok,bridges_failed,violations,steps,ring_right,ring_right_connected";

fn csv_row(r: &NodeCycle) -> String {
    format!(
        "{},{},{:.4},{:.4},{},{},{:.4},{},{:.5},{},{},{},{},{:.3},{},{},{},{},{},{},{}",
        r.cycle,
        r.peers,
        r.view.mean,
        r.view.std_dev,
        r.view.min,
        r.view.max,
        r.in_degree.std_dev,
        r.empty_views,
        r.duplicates_share,
        r.strong.count,
        r.strong.largest,
        r.weak.count,
        r.weak.largest,
        r.connections,
        r.handshakes,
        r.bridges_ok,
        r.bridges_failed,
        r.violations,
        r.steps,
        r.ring.map_or(String::new(), |s| format!("{s:.4}")),
        r.ring_connected
            .map_or(String::new(), |s| format!("{s:.4}"))
    )
}

/// Runs `scenario` on the node runtime, writing `cycles.csv` and
/// `summary.txt` into `out` and the summary to stdout.
pub(crate) fn run(
    scenario: &Scenario,
    out: &Path,
    quiet: bool,
    signed: bool,
    ring: bool,
) -> anyhow::Result<()> {
    let config = node_config(scenario, signed, ring)?;
    let csv_path = out.join("cycles.csv");
    let mut csv = std::io::BufWriter::new(
        fs::File::create(&csv_path).with_context(|| format!("creating {}", csv_path.display()))?,
    );
    writeln!(csv, "{CSV_HEADER}")?;
    let bar = ProgressBar::new(u64::from(scenario.cycles) + 1);
    if quiet {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] cycle {pos}/{len} {msg}")?
            .progress_chars("=> "),
    );
    let cpu0 = super::cpu_seconds();
    let mut write_error = None;
    let result = run_node(&config, |row| {
        if let Err(e) = writeln!(csv, "{}", csv_row(row)) {
            write_error.get_or_insert(e);
        }
        let ring = match (row.ring, row.ring_connected) {
            (Some(all), Some(connected)) => format!(
                ", ring right {:.1}% ({:.1}% of the connected)",
                100.0 * all,
                100.0 * connected
            ),
            _ => String::new(),
        };
        bar.set_message(format!(
            "mean view {:.2} (σ {:.2}), in-degree σ {:.2}, strong {}{ring}",
            row.view.mean, row.view.std_dev, row.in_degree.std_dev, row.strong.count
        ));
        bar.inc(1);
    });
    bar.finish_and_clear();
    if let Some(e) = write_error {
        return Err(e).context("writing the CSV");
    }
    csv.flush()?;
    let cpu = match (cpu0, super::cpu_seconds()) {
        (Some(a), Some(b)) => b - a,
        _ => f64::NAN,
    };
    let last = result.rows.last().context("no cycle ran")?;
    let wall = result.wall.0 + result.wall.1;
    let mut text = format!(
        "runtime: node (whole node cores{})\n\
         peers: {}, cycles: {}, delta: {} ms, seed: {}\n\
         mean view: {:.3} (σ {:.3}, min {}, max {}), in-degree σ {:.3}\n\
         empty views: {}, peers with a duplicate arc: {:.2}%\n\
         strong components: {} (largest {}), weak: {} (largest {})\n\
         connections per peer: {:.2}, bridges ok {}, failed {}, violations {}, join retries {}\n\
         steps: {} in {:.1} s wall (arrivals {:.1} s), {:.1} s CPU, {:.0} steps per CPU second\n",
        if signed {
            ", signed signals"
        } else {
            ", unsigned signals"
        },
        last.peers,
        config.cycles,
        scenario.delta_ms,
        scenario.seed,
        last.view.mean,
        last.view.std_dev,
        last.view.min,
        last.view.max,
        last.in_degree.std_dev,
        last.empty_views,
        100.0 * last.duplicates_share,
        last.strong.count,
        last.strong.largest,
        last.weak.count,
        last.weak.largest,
        last.connections,
        last.bridges_ok,
        last.bridges_failed,
        last.violations,
        result.join_retries,
        last.steps,
        wall.as_secs_f64(),
        result.wall.0.as_secs_f64(),
        cpu,
        last.steps as f64 / cpu,
    );
    if let Some(b) = &result.broadcast {
        let closed = |f: fn(&NodeCycle) -> Option<f64>| {
            result
                .rows
                .iter()
                .find(|r| f(r) == Some(1.0))
                .map_or("never".to_string(), |r| format!("at cycle {}", r.cycle))
        };
        text += &format!(
            "ring: right at {:.2}% of the peers after the last cycle (closed {}), at {:.2}% of the connected peers (closed {})\n\
             broadcasts: {}, reach mean {:.4} (min {:.4}), {:.2} duplicate copies per delivery, {:.0} ms to the last copy (mean)\n",
            100.0 * last.ring.unwrap_or(0.0),
            closed(|r| r.ring),
            100.0 * last.ring_connected.unwrap_or(0.0),
            closed(|r| r.ring_connected),
            b.count,
            b.reach_mean,
            b.reach_min,
            b.duplicates_per_delivery,
            b.time_mean.as_secs_f64() * 1000.0,
        );
    }
    for r in &result.removals {
        text += &format!(
            "removed {:.0}%: strong largest {:.1}% of {} left ({} components), weak largest {:.1}%\n",
            100.0 * r.removed,
            100.0 * r.strong.largest as f64 / r.left.max(1) as f64,
            r.left,
            r.strong.count,
            100.0 * r.weak.largest as f64 / r.left.max(1) as f64,
        );
    }
    fs::write(out.join("summary.txt"), &text)?;
    print!("{text}");
    Ok(())
}
