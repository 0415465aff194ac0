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
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use n2n_overlay_spray::spray;
use n2n_sim::scenario::{self, Arrival, Engine, Failure, Oscillate, Row, RunResult, Scenario};
use n2n_sim::{measure, plot};

mod node_cli;

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
        return node_cli::run(&scenario, &cli.out, cli.quiet, cli.signed);
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

/// Where cycle 0 ended: the arrivals, apart from the cycles.
#[derive(Debug, Default)]
struct Arrived {
    wall: Duration,
    events: u64,
    cpu: Option<f64>,
    exchanges: u64,
}

fn summary(s: &Scenario, r: &RunResult, wall: f64, arrived: Arrived) -> String {
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
fn cpu_seconds() -> Option<f64> {
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some((ticks(11)? + ticks(12)?) as f64 / 100.0)
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
