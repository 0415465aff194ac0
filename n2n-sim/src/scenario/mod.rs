//! Scenarios: how many Spray peers arrive and how, how long they shuffle,
//! latency, loss, churn and massive failures, all driven by one seed; read
//! from TOML (or built by the `n2n-sim` command-line flags) and run cycle by
//! cycle, one [`Row`] of measurements per cycle.
//!
//! ```
//! let scenario = n2n_sim::scenario::Scenario::from_toml_str(r#"
//!     seed = 7
//!     peers = 60
//!     cycles = 3
//!     [arrival]
//!     mode = "one-by-one"
//!     interval_ms = 50
//! "#).unwrap();
//! let run = n2n_sim::scenario::run(&scenario, |_| {}).unwrap();
//! assert_eq!(run.rows.len(), 4); // cycle 0 (after the arrivals), then 3 cycles
//! assert_eq!(run.rows[3].peers, 60);
//! ```

use std::fmt::Write as _;
use std::time::Duration;

use n2n_overlay_spray::spray;
use serde::{Deserialize, Serialize};

use crate::measure::{PathLength, Removal};
use crate::{Config, Latency, SimRng};

mod run;

pub use run::run;

/// Which engine runs the peers' state machines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Engine {
    /// [`Sim`](crate::Sim): every hop takes a link's latency, exchanges
    /// overlap, arcs are in flight while they open.
    #[default]
    Latency,
    /// [`Rounds`](crate::Rounds): round by round, each peer's exchange and
    /// all it causes applied at once, in an order drawn anew each round
    /// (PeerSim's cycle-driven engine; the paper's simulations).
    Instant,
}

/// How the initial peers arrive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Arrival {
    /// One peer every `interval_ms`, each through a random member, before cycle 0.
    OneByOne {
        /// Time between two joins (default 300 ms: with the default latency a
        /// join completes before the next; joins that overlap meet contacts
        /// whose views are not yet built, and the network ends with fewer
        /// arcs than ln N per peer).
        #[serde(default = "default_interval")]
        interval_ms: u64,
        /// From this many members on, the interval shrinks in proportion to
        /// the network's size (`interval_ms × speed_up_from / members`), so
        /// that the share of joins meeting a contact still joining stays what
        /// it was at `speed_up_from` members, and 500k peers arrive in
        /// `interval_ms × speed_up_from × (1 + ln(N / speed_up_from))`
        /// (36 shuffle periods for 1000 and 300 ms) instead of 2,500 periods.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        speed_up_from: Option<u32>,
    },
    /// `size` peers at once (each through a random member of the network as it
    /// was before the burst) at the start of every `every_cycles`-th cycle,
    /// starting with cycle 0, until all peers are in.
    Burst {
        /// Peers per burst.
        size: u32,
        /// Cycles between two bursts.
        #[serde(default = "one")]
        every_cycles: u32,
    },
}

fn default_interval() -> u64 {
    300
}

fn one() -> u32 {
    1
}

impl Default for Arrival {
    fn default() -> Self {
        Arrival::OneByOne {
            interval_ms: default_interval(),
            speed_up_from: None,
        }
    }
}

/// Peers joining and leaving during the cycles.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Churn {
    /// First cycle with churn.
    pub from_cycle: u32,
    /// Last cycle with churn (none: until the end).
    pub until_cycle: Option<u32>,
    /// Joins per cycle (each through a random member).
    pub joins_per_cycle: u32,
    /// Departures per cycle (random members).
    pub leaves_per_cycle: u32,
    /// Departures are graceful leaves (`Input::Leave`) rather than crashes.
    pub graceful: bool,
    /// Oscillate the network size instead of the fixed rates above.
    pub oscillate: Option<Oscillate>,
}

/// Network size oscillating as in the Spray paper: grow by `rate` peers per
/// cycle up to `max`, pause, shrink by `rate` per cycle down to `min`, pause,
/// and again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Oscillate {
    /// Lowest size.
    pub min: u32,
    /// Highest size.
    pub max: u32,
    /// Joins or departures per cycle.
    pub rate: u32,
    /// Cycles without churn at each extreme.
    #[serde(default)]
    pub pause_cycles: u32,
}

/// A share of the peers crashing at once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failure {
    /// The cycle at whose start they crash.
    pub at_cycle: u32,
    /// Share of the live peers that crash, in `[0, 1]`.
    pub fraction: f64,
}

/// A whole simulation run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    /// Master seed: the same seed reproduces the run exactly.
    pub seed: u64,
    /// Initial peers.
    pub peers: u32,
    /// Shuffle cycles after the arrivals.
    pub cycles: u32,
    /// Shuffle period Δ (a cycle lasts Δ).
    pub delta_ms: u64,
    /// How the initial peers arrive.
    pub arrival: Arrival,
    /// One-way latency of one hop, uniform in `[latency_min_ms, latency_max_ms]`.
    pub latency_min_ms: u64,
    /// See `latency_min_ms`.
    pub latency_max_ms: u64,
    /// Signaling loss: probability that one signaling hop of a bridge (an
    /// offer or an answer relayed by the bridging peer) is lost; the arc then
    /// fails to open and the peer that was to open it handles an arc down
    /// (see [`Config::loss`]).
    pub loss: f64,
    /// Probability that one overlay message (a shuffle request or answer, a
    /// join, a leave) is lost, apart from signaling (default 0).
    pub message_loss: f64,
    /// Time for a neighbour to notice a crash.
    pub detection_ms: u64,
    /// How long a Spray peer waits for an exchange answer.
    pub exchange_timeout_ms: u64,
    /// Churn during the cycles.
    pub churn: Option<Churn>,
    /// Massive failure.
    pub failure: Option<Failure>,
    /// At the end, measure the components after removing 0–95% of the peers.
    pub removal_sweep: bool,
    /// Measure clustering and average shortest path at every cycle (else at
    /// the end only).
    pub paths_every_cycle: bool,
    /// Peers sampled for the clustering coefficient.
    pub clustering_samples: usize,
    /// Sources sampled for the average shortest path.
    pub path_sources: usize,
    /// Threads that run the simulation (0: every core from 20,000 peers
    /// on; a number: that many, whatever the size); results do not depend
    /// on it (see [`Config::threads`]).
    pub threads: usize,
    /// The age of an arc moved in a shuffle (`"reset"`, the paper's, or
    /// `"keep"`; see [`spray::AgeRule`]).
    pub age_rule: spray::AgeRule,
    /// The engine (`"latency"`, the default, or `"instant"`).
    pub engine: Engine,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            seed: 1,
            peers: 1000,
            cycles: 50,
            delta_ms: 60_000,
            arrival: Arrival::default(),
            latency_min_ms: 10,
            latency_max_ms: 50,
            loss: 0.0,
            message_loss: 0.0,
            detection_ms: 5_000,
            exchange_timeout_ms: 10_000,
            churn: None,
            failure: None,
            removal_sweep: false,
            paths_every_cycle: false,
            clustering_samples: 500,
            path_sources: 8,
            threads: 0,
            age_rule: spray::AgeRule::default(),
            engine: Engine::default(),
        }
    }
}

/// Why a scenario cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// Not valid TOML, or not a scenario.
    #[error("invalid scenario: {0}")]
    Parse(#[from] toml::de::Error),
    /// A value out of its range.
    #[error("invalid scenario: {0}")]
    Invalid(String),
}

impl Scenario {
    /// Reads a scenario from TOML; absent keys take their defaults.
    ///
    /// # Errors
    /// [`ScenarioError`] if the text is not a valid scenario.
    pub fn from_toml_str(text: &str) -> Result<Self, ScenarioError> {
        let s: Scenario = toml::from_str(text)?;
        s.validate()?;
        Ok(s)
    }

    /// Checks the ranges.
    ///
    /// # Errors
    /// [`ScenarioError::Invalid`] naming the first bad value.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let bad = |m: &str| Err(ScenarioError::Invalid(m.to_string()));
        let probability = |p: f64| (0.0..=1.0).contains(&p);
        if self.peers == 0 {
            return bad("peers must be at least 1");
        }
        if self.delta_ms == 0 {
            return bad("delta_ms must be positive (the shuffle period)");
        }
        if self.exchange_timeout_ms == 0 {
            return bad("exchange_timeout_ms must be positive");
        }
        if self.latency_min_ms == 0 {
            return bad(
                "latency_min_ms must be at least 1 (time runs in windows of the shortest hop)",
            );
        }
        if self.latency_min_ms > self.latency_max_ms {
            return bad("latency_min_ms must not exceed latency_max_ms");
        }
        if !probability(self.loss) {
            return bad("loss must be in [0, 1]");
        }
        if !probability(self.message_loss) {
            return bad("message_loss must be in [0, 1]");
        }
        if self.threads > crate::SHARDS {
            return bad(&format!(
                "threads must be at most {} (the shards that run at once)",
                crate::SHARDS
            ));
        }
        if let Some(f) = &self.failure {
            if !probability(f.fraction) {
                return bad("failure.fraction must be in [0, 1] (a share, not a percentage)");
            }
            if f.at_cycle == 0 || f.at_cycle > self.cycles {
                return bad("failure.at_cycle must be in 1..=cycles");
            }
        }
        match self.arrival {
            Arrival::Burst { size, every_cycles } => {
                if size == 0 {
                    return bad("arrival.size must be at least 1");
                }
                if every_cycles == 0 {
                    return bad("arrival.every_cycles must be at least 1");
                }
            }
            Arrival::OneByOne { speed_up_from, .. } => {
                if speed_up_from == Some(0) {
                    return bad("arrival.speed_up_from must be at least 1");
                }
            }
        }
        if let Some(c) = &self.churn {
            if c.until_cycle.is_some_and(|u| u < c.from_cycle) {
                return bad("churn.until_cycle must not be before churn.from_cycle");
            }
            if let Some(o) = &c.oscillate {
                if o.min == 0 {
                    return bad("churn.oscillate.min must be at least 1");
                }
                if o.min > o.max {
                    return bad("churn.oscillate.min must not exceed churn.oscillate.max");
                }
                if o.rate == 0 {
                    return bad("churn.oscillate.rate must be at least 1");
                }
            }
        }
        Ok(())
    }

    fn sim_config(&self) -> Config {
        Config {
            seed: self.seed,
            latency: Latency::Uniform {
                min: Duration::from_millis(self.latency_min_ms),
                max: Duration::from_millis(self.latency_max_ms),
            },
            detection_delay: Duration::from_millis(self.detection_ms),
            loss: self.loss,
            message_loss: self.message_loss,
            threads: self.threads,
            // Threads asked for by number are used whatever the size.
            parallel_from: if self.threads > 0 {
                0
            } else {
                Config::default().parallel_from
            },
            ..Config::default()
        }
    }

    fn spray_config(&self) -> spray::Config {
        spray::Config {
            delta: Duration::from_millis(self.delta_ms),
            exchange_timeout: Duration::from_millis(self.exchange_timeout_ms),
            age_rule: self.age_rule,
            ..spray::Config::default()
        }
    }
}

/// The Spray peers a scenario runs.
pub type SprayPeer = spray::State<u32, SimRng>;

/// Measurements after one cycle.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Cycle number (0: after the initial arrivals).
    pub cycle: u32,
    /// Virtual time, seconds.
    pub time_s: f64,
    /// Live peers.
    pub peers: usize,
    /// ln(peers).
    pub ln_n: f64,
    /// Σ partial-view sizes.
    pub arcs: usize,
    /// Σ in-degrees.
    pub arcs_in: usize,
    /// Arcs being opened minus arcs being closed at the measurement: a
    /// shuffle closes its arcs a hop before the bridged ones open, so the arc
    /// count of a busy network holds only as `arcs + arcs_in_flight`.
    pub arcs_in_flight: i64,
    /// Partial-view size: mean, σ, min, max.
    pub view: [f64; 4],
    /// In-degree: mean, σ, min, max.
    pub in_degree: [f64; 4],
    /// Live peers with an empty partial view.
    pub empty_views: usize,
    /// Share of live peers holding a duplicate arc.
    pub duplicates: f64,
    /// Strongly connected components: count, largest.
    pub strong: (usize, usize),
    /// Weakly connected components: count, largest.
    pub weak: (usize, usize),
    /// Median over the live peers of the relative error of the local size
    /// estimate e^|P| (NaN without live peers). A median, not a mean: the
    /// estimate is exponential in the view size, and right after a burst
    /// of joins one peer's view of 40 arcs would outweigh all the others.
    pub estimate_local_error: f64,
    /// Median relative error of the size estimate averaged with neighbours
    /// (NaN without live peers).
    pub estimate_error: f64,
    /// Clustering coefficient (NaN when not measured this cycle).
    pub clustering: f64,
    /// Average shortest path (NaN when not measured this cycle).
    pub path: f64,
    /// Simulator events so far.
    pub events: u64,
    /// Signaling hops lost so far (one per bridge that lost its arc).
    pub lost: u64,
    /// Overlay messages lost so far.
    pub messages_lost: u64,
    /// Bridges failed so far.
    pub bridge_failures: u64,
    /// Isolated peers that joined again so far.
    pub rejoins: u64,
    /// Peers crashed at the start of this cycle by the massive failure.
    pub failed: usize,
    /// Shuffles started so far by the live peers.
    pub exchanges: u64,
}

impl Row {
    /// The CSV header matching [`Row::csv`].
    pub const CSV_HEADER: &'static str = "cycle,time_s,peers,ln_n,arcs,arcs_in,view_mean,view_sd,view_min,view_max,in_mean,in_sd,in_min,in_max,empty_views,duplicates,strong_components,strong_largest,weak_components,weak_largest,estimate_local_error,estimate_error,clustering,path,events,lost,bridge_failures,rejoins,messages_lost,arcs_in_flight,exchanges";

    /// One CSV line (no newline), numbers with fixed precision so that equal
    /// runs give equal bytes.
    pub fn csv(&self) -> String {
        let mut s = String::with_capacity(200);
        let _ = write!(
            s,
            "{},{:.3},{},{:.4},{},{},{:.4},{:.4},{},{},{:.4},{:.4},{},{},{},{:.5},{},{},{},{},{:.4},{:.4},{:.5},{:.4},{},{},{},{},{},{},{}",
            self.cycle,
            self.time_s,
            self.peers,
            self.ln_n,
            self.arcs,
            self.arcs_in,
            self.view[0],
            self.view[1],
            self.view[2],
            self.view[3],
            self.in_degree[0],
            self.in_degree[1],
            self.in_degree[2],
            self.in_degree[3],
            self.empty_views,
            self.duplicates,
            self.strong.0,
            self.strong.1,
            self.weak.0,
            self.weak.1,
            self.estimate_local_error,
            self.estimate_error,
            self.clustering,
            self.path,
            self.events,
            self.lost,
            self.bridge_failures,
            self.rejoins,
            self.messages_lost,
            self.arcs_in_flight,
            self.exchanges,
        );
        s
    }
}

/// What a run leaves behind.
#[derive(Debug)]
pub struct RunResult {
    /// One row per cycle, cycle 0 first.
    pub rows: Vec<Row>,
    /// Final partial-view size distribution `(size, peers)`.
    pub views: Vec<(u32, u64)>,
    /// Final in-degree distribution `(in-degree, peers)`.
    pub in_degrees: Vec<(u32, u64)>,
    /// Final clustering coefficient.
    pub clustering: f64,
    /// Final average shortest path.
    pub path: PathLength,
    /// Components after removals (empty unless `removal_sweep`).
    pub removals: Vec<Removal>,
    /// Simulator events processed.
    pub events: u64,
}

/// Removed shares measured by the removal sweep.
pub const REMOVAL_FRACTIONS: [f64; 20] = [
    0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8,
    0.85, 0.9, 0.95,
];
