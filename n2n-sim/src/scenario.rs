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

use n2n_core::overlay::Overlay;
use n2n_overlay_spray::spray;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::measure::{self, PathLength, Removal};
use crate::{Config, Latency, Sim, SimRng};

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
}

impl Row {
    /// The CSV header matching [`Row::csv`].
    pub const CSV_HEADER: &'static str = "cycle,time_s,peers,ln_n,arcs,arcs_in,view_mean,view_sd,view_min,view_max,in_mean,in_sd,in_min,in_max,empty_views,duplicates,strong_components,strong_largest,weak_components,weak_largest,estimate_local_error,estimate_error,clustering,path,events,lost,bridge_failures,rejoins,messages_lost,arcs_in_flight";

    /// One CSV line (no newline), numbers with fixed precision so that equal
    /// runs give equal bytes.
    pub fn csv(&self) -> String {
        let mut s = String::with_capacity(200);
        let _ = write!(
            s,
            "{},{:.3},{},{:.4},{},{},{:.4},{:.4},{},{},{:.4},{:.4},{},{},{},{:.5},{},{},{},{},{:.4},{:.4},{:.5},{:.4},{},{},{},{},{},{}",
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

/// Slots per cycle: churn is spread over the first half of a cycle.
const SLOTS: u32 = 10;

/// Joins of one-by-one arrivals queued at once.
const ARRIVAL_BATCH: Duration = Duration::from_secs(1);

struct Runner {
    sim: Sim<SprayPeer>,
    rng: SimRng,
    leavers: Vec<(u32, Duration)>,
    linger: Duration,
    joined_at: Vec<Duration>,
    /// Since when each peer has had an empty view, as last checked.
    empty_since: Vec<Option<Duration>>,
    rejoin_after: Duration,
    rejoins: u64,
}

impl Runner {
    fn join_random(&mut self) {
        self.join_random_at(self.sim.now());
    }

    /// A new peer that joins through a random member at `at` (not before now).
    fn join_random_at(&mut self, at: Duration) {
        let contact = self.random_member();
        let id = self.sim.add_peer();
        self.joined_at.push(at.max(self.sim.now()));
        self.empty_since.push(None);
        if let Some(c) = contact {
            self.sim.join_at(id, c, at);
        }
    }

    fn add_peer(&mut self) -> u32 {
        let id = self.sim.add_peer();
        self.joined_at.push(self.sim.now());
        self.empty_since.push(None);
        id
    }

    /// Peers left with an empty partial view (say, their contact crashed
    /// during the join, or every neighbour they knew crashed) join again
    /// through a random member, as an application watching its connection
    /// state would, once they stayed isolated for the grace period (the
    /// crash detection delay plus the exchange timeout): a view empties for
    /// a moment when a peer gives its last arcs away and the new ones are
    /// still being bridged, and a re-join then would add ln N + 1 arcs for
    /// nothing. Checked twice a cycle (each check reads every peer's
    /// state); counted in [`Row::rejoins`].
    fn rejoin_isolated(&mut self) {
        let now = self.sim.now();
        let mut isolated = Vec::new();
        for &id in self.sim.alive() {
            let empty = self
                .sim
                .overlay(id)
                .is_some_and(|o| o.outview().is_empty() && !o.is_leaving());
            let since = &mut self.empty_since[id as usize];
            match (*since, empty) {
                (_, false) => *since = None,
                (None, true) => *since = Some(now),
                (Some(t), true) => {
                    if now >= t + self.rejoin_after
                        && now >= self.joined_at[id as usize] + self.rejoin_after
                    {
                        isolated.push(id);
                    }
                }
            }
        }
        for id in isolated {
            if let Some(contact) = self.random_member().filter(|&c| c != id) {
                self.sim.join(id, contact);
                self.joined_at[id as usize] = now;
                self.empty_since[id as usize] = None;
                self.rejoins += 1;
            }
        }
    }

    /// A live member drawn uniformly, leaving peers excluded. `alive()` has a
    /// deterministic order (a function of the operations so far), so drawing
    /// an index in it is reproducible.
    fn random_member(&mut self) -> Option<u32> {
        let alive = self.sim.alive();
        let candidates = alive.len().saturating_sub(self.leavers.len());
        if candidates == 0 {
            return None;
        }
        // Few peers are leaving at a time: redraw when one is picked.
        for _ in 0..64 {
            let id = alive[self.rng.random_range(0..alive.len())];
            if !self.leavers.iter().any(|l| l.0 == id) {
                return Some(id);
            }
        }
        alive
            .iter()
            .copied()
            .find(|id| !self.leavers.iter().any(|l| l.0 == *id))
    }

    fn depart(&mut self, graceful: bool) {
        let Some(id) = self.random_member() else {
            return;
        };
        if graceful {
            self.sim.leave(id);
            self.leavers.push((id, self.sim.now()));
        } else {
            self.sim.crash(id);
        }
    }

    /// Removes the peers that left gracefully once their linger is over.
    fn reap(&mut self) {
        let now = self.sim.now();
        let linger = self.linger;
        let (done, waiting): (Vec<_>, Vec<_>) = self
            .leavers
            .iter()
            .partition(|(_, at)| now >= *at + linger + Duration::from_secs(1));
        self.leavers = waiting;
        for (id, _) in done {
            self.sim.crash(id);
        }
    }

    fn crash_share(&mut self, fraction: f64) -> usize {
        let mut ids: Vec<u32> = self.sim.alive().to_vec();
        ids.sort_unstable();
        let k = ((ids.len() as f64) * fraction).round() as usize;
        let (picked, _) = rand::seq::SliceRandom::partial_shuffle(&mut ids[..], &mut self.rng, k);
        for &id in picked.iter() {
            self.sim.crash(id);
        }
        k
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Phase {
    Growing,
    PauseHigh(u32),
    Shrinking,
    PauseLow(u32),
}

/// Runs `scenario`, calling `on_row` after each cycle (for progress and CSV).
///
/// # Errors
/// [`ScenarioError::Invalid`] if the scenario does not validate.
pub fn run(scenario: &Scenario, mut on_row: impl FnMut(&Row)) -> Result<RunResult, ScenarioError> {
    scenario.validate()?;
    let spray_config = scenario.spray_config();
    let linger = spray_config.leave_linger;
    let mut sim = Sim::new(scenario.sim_config(), move |id, seed| {
        spray::State::new(id, spray_config.clone(), SimRng::seed_from(seed))
    });
    sim.set_prefetch(spray::State::hot_buffers);
    let mut r = Runner {
        sim,
        rng: SimRng::seed_from(scenario.seed ^ 0x0005_ce4a_410f),
        leavers: Vec::new(),
        linger,
        joined_at: Vec::new(),
        empty_since: Vec::new(),
        rejoin_after: Duration::from_millis(scenario.detection_ms + scenario.exchange_timeout_ms),
        rejoins: 0,
    };
    let delta = Duration::from_millis(scenario.delta_ms);
    let mut rows = Vec::with_capacity(scenario.cycles as usize + 1);
    let mut arrived = 0u32;

    // Arrivals before cycle 0.
    match scenario.arrival {
        Arrival::OneByOne {
            interval_ms,
            speed_up_from,
        } => {
            let gap = Duration::from_millis(interval_ms);
            let mut at = r.sim.now();
            while arrived < scenario.peers {
                // The joins of the next second are queued, then run in one
                // call: at 100k peers they are milliseconds apart.
                let batch = at + ARRIVAL_BATCH;
                while arrived < scenario.peers && at < batch {
                    r.join_random_at(at);
                    arrived += 1;
                    at += match speed_up_from {
                        Some(from) if arrived > from => gap * from / arrived,
                        _ => gap,
                    };
                }
                r.sim.run_until(at);
            }
            // Let the last joins finish.
            r.sim.run_for(Duration::from_secs(2));
        }
        Arrival::Burst { .. } => {}
    }

    let mut phase = Phase::Growing;
    for cycle in 0..=scenario.cycles {
        let mut failed = 0;
        if let Arrival::Burst { size, every_cycles } = scenario.arrival
            && cycle % every_cycles == 0
            && arrived < scenario.peers
        {
            let n = size.min(scenario.peers - arrived);
            // Contacts are drawn among the members before the burst.
            let contacts: Vec<Option<u32>> = (0..n).map(|_| r.random_member()).collect();
            for (i, c) in contacts.into_iter().enumerate() {
                let id = r.add_peer();
                match c {
                    Some(c) => r.sim.join(id, c),
                    None if i > 0 => r.sim.join(id, id - i as u32),
                    None => {}
                }
            }
            arrived += n;
        }
        if cycle > 0 {
            if let Some(f) = &scenario.failure
                && f.at_cycle == cycle
            {
                failed = r.crash_share(f.fraction);
            }
            let (joins, leaves, graceful) = match &scenario.churn {
                Some(c) if cycle >= c.from_cycle && c.until_cycle.is_none_or(|u| cycle <= u) => {
                    match &c.oscillate {
                        None => (c.joins_per_cycle, c.leaves_per_cycle, c.graceful),
                        Some(o) => {
                            let live = r.sim.alive().len() as u32;
                            phase = match phase {
                                Phase::Growing if live >= o.max => Phase::PauseHigh(o.pause_cycles),
                                Phase::PauseHigh(0) => Phase::Shrinking,
                                Phase::PauseHigh(k) => Phase::PauseHigh(k - 1),
                                Phase::Shrinking if live <= o.min => {
                                    Phase::PauseLow(o.pause_cycles)
                                }
                                Phase::PauseLow(0) => Phase::Growing,
                                Phase::PauseLow(k) => Phase::PauseLow(k - 1),
                                p => p,
                            };
                            match phase {
                                Phase::Growing => {
                                    (o.rate.min(o.max - live.min(o.max)), 0, c.graceful)
                                }
                                Phase::Shrinking => {
                                    (0, o.rate.min(live - live.min(o.min)), c.graceful)
                                }
                                _ => (0, 0, c.graceful),
                            }
                        }
                    }
                }
                _ => (0, 0, false),
            };
            let slot = delta / SLOTS;
            for s in 0..SLOTS {
                let mut spent = Duration::ZERO;
                if s < SLOTS / 2 {
                    let share =
                        |total: u32| total / (SLOTS / 2) + u32::from(s < total % (SLOTS / 2));
                    let (j, l) = (share(joins), share(leaves));
                    // Spread over the slot, joins and departures alternating:
                    // simultaneous joins would meet contacts whose views are
                    // not built yet and inject fewer arcs.
                    let step = slot / (j + l + 1);
                    for k in 0..j.max(l) {
                        if k < j {
                            r.join_random();
                        }
                        if k < l {
                            r.depart(graceful);
                        }
                        r.sim.run_for(step);
                        spent += step;
                    }
                }
                r.sim.run_for(slot.saturating_sub(spent));
                r.reap();
                if s % (SLOTS / 2) == 0 {
                    r.rejoin_isolated();
                }
            }
        }
        let measure_paths = scenario.paths_every_cycle || cycle == scenario.cycles;
        let mut row = measure_row(&mut r, scenario, cycle, measure_paths);
        row.failed = failed;
        on_row(&row);
        rows.push(row);
    }

    let views = measure::view_histogram(&r.sim);
    let in_degrees = measure::in_degree_histogram(&r.sim);
    let mut mrng = SimRng::seed_from(scenario.seed ^ 0x4d45_4153);
    let clustering = measure::clustering(&r.sim, scenario.clustering_samples, &mut mrng);
    let path = measure::average_path(&r.sim, scenario.path_sources, &mut mrng);
    let removals = if scenario.removal_sweep {
        measure::removal_sweep(&r.sim, &REMOVAL_FRACTIONS, &mut mrng)
    } else {
        Vec::new()
    };
    Ok(RunResult {
        rows,
        views,
        in_degrees,
        clustering,
        path,
        removals,
        events: r.sim.counters().events,
    })
}

fn measure_row(r: &mut Runner, scenario: &Scenario, cycle: u32, paths: bool) -> Row {
    let snap = r.sim.snapshot();
    let n = snap.peers as f64;
    let (mut local_err, mut avg_err) = (Vec::new(), Vec::new());
    for &id in r.sim.alive() {
        if let Some(o) = r.sim.overlay(id) {
            local_err.push((o.local_size_estimate() / n - 1.0).abs());
            avg_err.push((o.size_estimate() / n - 1.0).abs());
        }
    }
    let (clustering, path) = if paths {
        let mut mrng = SimRng::seed_from(scenario.seed ^ u64::from(cycle));
        (
            measure::clustering(&r.sim, scenario.clustering_samples, &mut mrng),
            measure::average_path(&r.sim, scenario.path_sources, &mut mrng).mean,
        )
    } else {
        (f64::NAN, f64::NAN)
    };
    let c = r.sim.counters();
    let s4 = |s: &crate::stats::Summary| [s.mean, s.std_dev, s.min, s.max];
    Row {
        cycle,
        time_s: r.sim.now().as_secs_f64(),
        peers: snap.peers,
        ln_n: n.max(1.0).ln(),
        arcs: snap.arcs_out,
        arcs_in: snap.arcs_in,
        view: s4(&snap.view),
        in_degree: s4(&snap.in_degree),
        empty_views: snap.empty_views,
        duplicates: snap.duplicates_share,
        strong: (snap.strong.count, snap.strong.largest),
        weak: (snap.weak.count, snap.weak.largest),
        estimate_local_error: median(&mut local_err),
        estimate_error: median(&mut avg_err),
        clustering,
        path,
        events: c.events,
        lost: c.lost,
        messages_lost: c.messages_lost,
        arcs_in_flight: {
            let (opening, closing) = r.sim.arcs_in_flight();
            opening as i64 - closing as i64
        },
        bridge_failures: c.bridge_failures,
        rejoins: r.rejoins,
        failed: 0,
    }
}

/// The median of `v` (NaN if empty; the mean of the middle two if even).
fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}
