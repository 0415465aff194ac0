//! Running a [`Scenario`] cycle by cycle on either engine.

use std::time::Duration;

use n2n_overlay_spray::spray;
use rand::Rng;

use super::{
    Arrival, Engine, REMOVAL_FRACTIONS, Row, RunResult, Scenario, ScenarioError, SprayPeer,
};
use crate::measure;
use crate::{Network, Rounds, Sim, SimRng};

/// Slots per cycle: churn is spread over the first half of a cycle.
const SLOTS: u32 = 10;

/// Joins of one-by-one arrivals queued at once.
const ARRIVAL_BATCH: Duration = Duration::from_secs(1);

struct Runner {
    sim: Box<dyn Network<Overlay = SprayPeer>>,
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
    let factory =
        move |id, seed| spray::State::new(id, spray_config.clone(), SimRng::seed_from(seed));
    let sim: Box<dyn Network<Overlay = SprayPeer>> = match scenario.engine {
        Engine::Latency => {
            let mut sim = Sim::new(scenario.sim_config(), factory);
            sim.set_prefetch(spray::State::hot_buffers);
            Box::new(sim)
        }
        Engine::Instant => {
            let mut rounds = Rounds::new(
                scenario.sim_config(),
                Duration::from_millis(scenario.delta_ms),
                spray::Timer::Shuffle,
                factory,
            );
            rounds.set_prefetch(spray::State::hot_buffers);
            Box::new(rounds)
        }
    };
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

    let views = measure::view_histogram(&*r.sim);
    let in_degrees = measure::in_degree_histogram(&*r.sim);
    let mut mrng = SimRng::seed_from(scenario.seed ^ 0x4d45_4153);
    let clustering = measure::clustering(&*r.sim, scenario.clustering_samples, &mut mrng);
    let path = measure::average_path(&*r.sim, scenario.path_sources, &mut mrng);
    let removals = if scenario.removal_sweep {
        measure::removal_sweep(&*r.sim, &REMOVAL_FRACTIONS, &mut mrng)
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
    let (mut local_err, mut avg_err, mut exchanges) = (Vec::new(), Vec::new(), 0);
    for &id in r.sim.alive() {
        if let Some(o) = r.sim.overlay(id) {
            exchanges += o.exchanges_started();
            local_err.push((o.local_size_estimate() / n - 1.0).abs());
            avg_err.push((o.size_estimate() / n - 1.0).abs());
        }
    }
    let (clustering, path) = if paths {
        let mut mrng = SimRng::seed_from(scenario.seed ^ u64::from(cycle));
        (
            measure::clustering(&*r.sim, scenario.clustering_samples, &mut mrng),
            measure::average_path(&*r.sim, scenario.path_sources, &mut mrng).mean,
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
        exchanges,
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
