//! `n2n-sim`: runs a Spray scenario (a TOML file, command-line flags, or both:
//! flags override the file), shows a progress bar, writes one CSV row per
//! cycle and PNG + SVG plots, and prints a summary table.
//!
//! ```text
//! n2n-sim --peers 10000 --cycles 100 --out target/sim
//! n2n-sim --peers 10000 --cycles 60 --crash 30 --crash-at 30 --removal-sweep
//! n2n-sim --scenario n2n-sim/scenarios/churn.toml --out target/churn
//! ```
//!
//! Output directory: `cycles.csv` (one row per cycle, cycle 0 after the
//! arrivals), `summary.txt`, `scenario.toml` (the scenario as run), and the
//! plots `views`, `variance`, `arcs`, `view-histogram`,
//! `in-degree-histogram`, `removal` (with `--removal-sweep`), each as `.png`
//! and `.svg`. Plots need a TrueType font for their text (see
//! [`n2n_sim::plot`]).

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use n2n_overlay_spray::spray;
use n2n_sim::scenario::{self, Arrival, Engine, Failure, Oscillate, Row, RunResult, Scenario};
use n2n_sim::{measure, plot};

mod node_cli;
mod summary;

use summary::{Arrived, cpu_seconds, summary};

/// Which runtime hosts the simulated peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Runtime {
    /// The idealised runtime: Spray alone, the node's contract in the simulator's code.
    Ideal,
    /// One whole n2n node core per peer (connections, handshakes, bridges, limits).
    Node,
}

/// Simulates a Spray overlay of many peers, deterministically from a seed.
#[derive(Debug, Parser)]
#[command(name = "n2n-sim", version)]
struct Cli {
    /// Scenario file (TOML); the flags below override its values.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Output directory for `cycles.csv`, `summary.txt` and the plots.
    #[arg(long, default_value = "sim-out")]
    out: PathBuf,
    /// Write the per-cycle CSV here instead of `<out>/cycles.csv`.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Master seed.
    #[arg(long, allow_negative_numbers = true)]
    seed: Option<u64>,
    /// Initial peers.
    #[arg(long, allow_negative_numbers = true)]
    peers: Option<u32>,
    /// Shuffle cycles after the arrivals.
    #[arg(long, allow_negative_numbers = true)]
    cycles: Option<u32>,
    /// Shuffle period Δ in milliseconds (a cycle lasts Δ).
    #[arg(long, allow_negative_numbers = true)]
    delta_ms: Option<u64>,
    /// Peers arrive one by one, this many milliseconds apart.
    #[arg(
        long,
        allow_negative_numbers = true,
        alias = "join-interval-ms",
        conflicts_with = "burst"
    )]
    interval_ms: Option<u64>,
    /// Peers arrive one by one, this many per shuffle period.
    #[arg(long, allow_negative_numbers = true, conflicts_with_all = ["burst", "interval_ms"])]
    joins_per_cycle: Option<u64>,
    /// One-by-one arrivals speed up from this many members on: the interval
    /// shrinks in proportion to the network's size.
    #[arg(long, allow_negative_numbers = true, conflicts_with = "burst")]
    speed_up_from: Option<u32>,
    /// Peers arrive in bursts of this size, one burst per cycle.
    #[arg(long, allow_negative_numbers = true)]
    burst: Option<u32>,
    /// Smallest one-way hop latency, ms.
    #[arg(long, allow_negative_numbers = true)]
    latency_min_ms: Option<u64>,
    /// Largest one-way hop latency, ms.
    #[arg(long, allow_negative_numbers = true)]
    latency_max_ms: Option<u64>,
    /// Signaling loss per hop, in [0, 1]: each offer or answer relayed to open
    /// an arc is lost at this rate, and the arc then fails to open.
    #[arg(long, allow_negative_numbers = true, value_parser = parse_probability)]
    loss: Option<f64>,
    /// Loss rate of overlay messages (shuffle requests and answers), in
    /// [0, 1]; apart from signaling, 0 unless set.
    #[arg(long, allow_negative_numbers = true, value_parser = parse_probability)]
    message_loss: Option<f64>,
    /// Crash this percentage of the peers at once (at --crash-at).
    #[arg(long, allow_negative_numbers = true, requires = "crash_at", value_parser = parse_percent)]
    crash: Option<f64>,
    /// Cycle at whose start the massive failure happens.
    #[arg(long, allow_negative_numbers = true, requires = "crash")]
    crash_at: Option<u32>,
    /// Joins per cycle (churn).
    #[arg(long, allow_negative_numbers = true)]
    churn_joins: Option<u32>,
    /// Departures per cycle (churn).
    #[arg(long, allow_negative_numbers = true)]
    churn_leaves: Option<u32>,
    /// Departures are graceful leaves rather than crashes.
    #[arg(long)]
    graceful: bool,
    /// Oscillate the size between MIN and MAX peers, RATE per cycle: MIN,MAX,RATE[,PAUSE].
    #[arg(long, value_parser = parse_oscillate)]
    oscillate: Option<Oscillate>,
    /// At the end, measure components after removing 0–95% of the peers.
    #[arg(long)]
    removal_sweep: bool,
    /// Do not draw plots.
    #[arg(long)]
    no_plots: bool,
    /// Threads (0: every core from 20k peers on; a number: that many at any
    /// size); the results do not depend on it.
    #[arg(long, allow_negative_numbers = true)]
    threads: Option<usize>,
    /// The engine: `latency` (every hop takes a link's latency) or
    /// `instant` (round-based, each exchange applied at once).
    #[arg(long, value_parser = parse_engine)]
    engine: Option<Engine>,
    /// The age of an arc moved in a shuffle: `reset` (the paper's) or `keep`.
    #[arg(long, value_parser = parse_age_rule)]
    age_rule: Option<spray::AgeRule>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    /// Keep the heap on 4 KiB pages (see `huge_pages`).
    #[arg(long)]
    small_pages: bool,
    /// The runtime hosting the peers.
    #[arg(long, value_enum, default_value = "ideal")]
    runtime: Runtime,
    /// With `--runtime node`: sign and verify every signal with ed25519.
    #[arg(long)]
    signed: bool,
    /// With `--runtime node`: the overlays of every node — `spray`, or
    /// `ring` (the ring of `n2n-overlay-ring` layered on Spray, plus a
    /// flooding broadcast after the cycles).
    #[arg(long, default_value = "spray")]
    stack: String,
}

/// Where the kernel gives transparent huge pages only to memory that asks
/// for them (`madvise`, the common default), restarts this process with
/// glibc's heap asking (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`, read by
/// glibc at start only). Each event lands on random peers spread over
/// hundreds of MB: with 4 KiB pages nearly every one also misses the TLB,
/// and 2 MiB pages make 100k peers about 1.3× faster. Returns only if it
/// did not restart (not Linux with glibc, huge pages off or already asked
/// for, or the restart failed).
fn huge_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt as _;
        const TUNABLE: &str = "glibc.malloc.hugetlb=1";
        let mode = fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled");
        if !mode.is_ok_and(|m| m.contains("[madvise]")) {
            return;
        }
        let current = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        if current.contains("glibc.malloc.hugetlb") {
            return;
        }
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        let tunables = if current.is_empty() {
            TUNABLE.to_owned()
        } else {
            format!("{current}:{TUNABLE}")
        };
        let error = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env("GLIBC_TUNABLES", tunables)
            .exec();
        tracing::debug!(%error, "n2n-sim: restart with huge pages failed, going on without");
    }
}

fn parse_probability(s: &str) -> Result<f64, String> {
    let p: f64 = s.parse().map_err(|e| format!("{s}: {e}"))?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("{p} is not a probability in [0, 1]"))
    }
}

fn parse_percent(s: &str) -> Result<f64, String> {
    let p: f64 = s.parse().map_err(|e| format!("{s}: {e}"))?;
    if (0.0..=100.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("{p} is not a percentage in [0, 100]"))
    }
}

fn parse_engine(s: &str) -> Result<Engine, String> {
    match s {
        "latency" => Ok(Engine::Latency),
        "instant" => Ok(Engine::Instant),
        _ => Err(format!("{s}: expected latency or instant")),
    }
}

fn parse_age_rule(s: &str) -> Result<spray::AgeRule, String> {
    match s {
        "reset" => Ok(spray::AgeRule::Reset),
        "keep" => Ok(spray::AgeRule::Keep),
        _ => Err(format!("{s}: expected reset or keep")),
    }
}

fn parse_oscillate(s: &str) -> Result<Oscillate, String> {
    let v: Vec<u32> = s
        .split(',')
        .map(|x| x.trim().parse::<u32>().map_err(|e| format!("{x}: {e}")))
        .collect::<Result<_, _>>()?;
    match v.as_slice() {
        [min, max, rate] => Ok(Oscillate {
            min: *min,
            max: *max,
            rate: *rate,
            pause_cycles: 0,
        }),
        [min, max, rate, pause] => Ok(Oscillate {
            min: *min,
            max: *max,
            rate: *rate,
            pause_cycles: *pause,
        }),
        _ => Err("expected MIN,MAX,RATE[,PAUSE]".into()),
    }
}

impl Cli {
    fn scenario(&self) -> anyhow::Result<Scenario> {
        let mut s = match &self.scenario {
            Some(path) => {
                let text = fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                Scenario::from_toml_str(&text).with_context(|| path.display().to_string())?
            }
            None => Scenario::default(),
        };
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { s.$f = v; } )* };
        }
        set!(
            seed,
            peers,
            cycles,
            delta_ms,
            latency_min_ms,
            latency_max_ms,
            loss,
            message_loss,
            threads,
            engine,
            age_rule
        );
        if let Some(interval_ms) = self.interval_ms {
            s.arrival = Arrival::OneByOne {
                interval_ms,
                speed_up_from: None,
            };
        }
        if let Some(n) = self.joins_per_cycle {
            s.arrival = Arrival::OneByOne {
                interval_ms: (s.delta_ms / n.max(1)).max(1),
                speed_up_from: None,
            };
        }
        if let Some(n) = self.speed_up_from {
            match &mut s.arrival {
                Arrival::OneByOne { speed_up_from, .. } => *speed_up_from = Some(n),
                Arrival::Burst { .. } => anyhow::bail!("--speed-up-from needs one-by-one arrivals"),
            }
        }
        if let Some(size) = self.burst {
            s.arrival = Arrival::Burst {
                size,
                every_cycles: 1,
            };
        }
        if let (Some(percent), Some(at_cycle)) = (self.crash, self.crash_at) {
            s.failure = Some(Failure {
                at_cycle,
                fraction: percent / 100.0,
            });
        }
        if self.churn_joins.is_some() || self.churn_leaves.is_some() || self.oscillate.is_some() {
            let mut c = s.churn.take().unwrap_or_default();
            c.joins_per_cycle = self.churn_joins.unwrap_or(c.joins_per_cycle);
            c.leaves_per_cycle = self.churn_leaves.unwrap_or(c.leaves_per_cycle);
            c.oscillate = self.oscillate.clone().or(c.oscillate);
            c.graceful |= self.graceful;
            s.churn = Some(c);
        } else if self.graceful
            && let Some(c) = s.churn.as_mut()
        {
            c.graceful = true;
        }
        s.removal_sweep |= self.removal_sweep;
        s.validate()?;
        Ok(s)
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if !cli.small_pages {
        huge_pages();
    }
    let scenario = cli.scenario()?;
    fs::create_dir_all(&cli.out).with_context(|| format!("creating {}", cli.out.display()))?;
    fs::write(cli.out.join("scenario.toml"), toml::to_string(&scenario)?)?;
    if cli.runtime == Runtime::Node {
        let ring = match cli.stack.as_str() {
            "spray" => false,
            "ring" => true,
            other => anyhow::bail!("unknown stack `{other}` (spray or ring)"),
        };
        return node_cli::run(&scenario, &cli.out, cli.quiet, cli.signed, ring);
    }

    let csv_path = cli
        .csv
        .clone()
        .unwrap_or_else(|| cli.out.join("cycles.csv"));
    let mut csv = std::io::BufWriter::new(
        fs::File::create(&csv_path).with_context(|| format!("creating {}", csv_path.display()))?,
    );
    writeln!(csv, "{}", Row::CSV_HEADER)?;

    let bar = ProgressBar::new(u64::from(scenario.cycles) + 1);
    if cli.quiet {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] cycle {pos}/{len} {msg}")?
            .progress_chars("=> "),
    );
    let started = Instant::now();
    let mut write_error = None;
    // Where cycle 0 ended: the arrivals, apart from the cycles.
    let mut arrived = Arrived::default();
    let result = scenario::run(&scenario, |row| {
        if row.cycle == 0 {
            arrived = Arrived {
                wall: started.elapsed(),
                events: row.events,
                cpu: cpu_seconds(),
                exchanges: row.exchanges,
            };
        }
        if let Err(e) = writeln!(csv, "{}", row.csv()) {
            write_error.get_or_insert(e);
        }
        if row.failed > 0 {
            bar.suspend(|| println!("cycle {}: {} peers crashed", row.cycle, row.failed));
        }
        bar.set_message(format!(
            "peers {} view {:.2}±{:.2} [{}..{}]",
            row.peers, row.view[0], row.view[1], row.view[2], row.view[3]
        ));
        bar.inc(1);
    })?;
    let wall = started.elapsed();
    bar.finish_and_clear();
    if let Some(e) = write_error {
        return Err(e).context("writing cycles.csv");
    }
    csv.flush()?;

    let summary = summary(&scenario, &result, wall.as_secs_f64(), arrived);
    print!("{summary}");
    fs::write(cli.out.join("summary.txt"), &summary)?;
    if !cli.no_plots {
        draw_plots(&cli.out, &result)?;
    }
    eprintln!("wrote {}", cli.out.display());
    Ok(())
}

fn draw_plots(out: &Path, r: &RunResult) -> anyhow::Result<()> {
    use plot::{Labels, Series};
    let pts = |f: &dyn Fn(&Row) -> f64| -> Vec<(f64, f64)> {
        r.rows
            .iter()
            .map(|row| (f64::from(row.cycle), f(row)))
            .collect()
    };
    plot::lines(
        &out.join("views"),
        Labels {
            title: "Partial-view size over cycles",
            x: "cycle",
            y: "arcs in the partial view",
        },
        &[
            Series::new("mean", pts(&|row| row.view[0])),
            Series::new("min", pts(&|row| row.view[2])),
            Series::new("max", pts(&|row| row.view[3])),
            Series::reference("ln N", pts(&|row| row.ln_n)),
        ],
    )?;
    plot::lines(
        &out.join("variance"),
        Labels {
            title: "Partial-view size variance over cycles",
            x: "cycle",
            y: "variance",
        },
        &[Series::new("σ²", pts(&|row| row.view[1] * row.view[1]))],
    )?;
    plot::lines(
        &out.join("arcs"),
        Labels {
            title: "Arcs and peers over cycles",
            x: "cycle",
            y: "count",
        },
        &[
            Series::new("arcs", pts(&|row| row.arcs as f64)),
            Series::new("peers", pts(&|row| row.peers as f64)),
        ],
    )?;
    let ln_n = r.rows.last().map_or(0.0, |row| row.ln_n);
    plot::histogram(
        &out.join("view-histogram"),
        Labels {
            title: "Partial-view size distribution",
            x: "arcs in the partial view",
            y: "peers",
        },
        &r.views,
        Some(("ln N", ln_n)),
    )?;
    plot::histogram(
        &out.join("in-degree-histogram"),
        Labels {
            title: "In-degree distribution",
            x: "in-degree",
            y: "peers",
        },
        &r.in_degrees,
        Some(("ln N", ln_n)),
    )?;
    if !r.removals.is_empty() {
        let share = |f: &dyn Fn(&measure::Removal) -> usize| -> Vec<(f64, f64)> {
            r.removals
                .iter()
                .map(|m| {
                    (
                        100.0 * m.removed,
                        100.0 * f(m) as f64 / m.left.max(1) as f64,
                    )
                })
                .collect()
        };
        plot::lines(
            &out.join("removal"),
            Labels {
                title: "Largest component after removing peers at once",
                x: "peers removed (%)",
                y: "largest component (% of peers left)",
            },
            &[
                Series::new("strong", share(&|m| m.strong.largest)),
                Series::new("weak", share(&|m| m.weak.largest)),
            ],
        )?;
    }
    Ok(())
}
