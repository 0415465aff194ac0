//! Measurements beyond a [`Snapshot`](crate::stats::Snapshot), as the Spray
//! paper makes them: view-size and in-degree distributions, clustering
//! coefficient, average shortest path (sampled), and the largest strong and
//! weak components after removing a share of the peers at once.
//!
//! Every function reads the overlays' arc mirrors of the live peers of
//! a [`Network`] and draws its samples from the RNG it is given, so a seeded
//! run measures the same peers every time.

use std::collections::VecDeque;

use n2n_core::arc::ArcSet;
use n2n_core::overlay::Views;
use rand::Rng;
use rand::seq::SliceRandom;

use crate::network::Network;
use crate::stats::{Components, Graph};

const DEAD: u32 = u32::MAX;

/// `(value, peers)` pairs in value order: how many live peers have each
/// partial-view size (arc occurrences counted).
pub fn view_histogram<N: Network + ?Sized>(sim: &N) -> Vec<(u32, u64)> {
    histogram(live_views(sim).map(|(out, _)| out.len()))
}

/// `(value, peers)` pairs in value order: how many live peers have each in-degree.
pub fn in_degree_histogram<N: Network + ?Sized>(sim: &N) -> Vec<(u32, u64)> {
    histogram(live_views(sim).map(|(_, inv)| inv.len()))
}

/// Counts equal values: `(value, occurrences)` in value order.
pub fn histogram(values: impl IntoIterator<Item = usize>) -> Vec<(u32, u64)> {
    let mut counts: Vec<u64> = Vec::new();
    for v in values {
        if v >= counts.len() {
            counts.resize(v + 1, 0);
        }
        counts[v] += 1;
    }
    counts
        .into_iter()
        .enumerate()
        .filter(|&(_, n)| n > 0)
        .map(|(v, n)| (u32::try_from(v).unwrap_or(u32::MAX), n))
        .collect()
}

/// Share of the sample (`histogram` output) whose value lies in `[lo, hi]`.
pub fn share_within(histogram: &[(u32, u64)], lo: u32, hi: u32) -> f64 {
    let total: u64 = histogram.iter().map(|h| h.1).sum();
    if total == 0 {
        return 0.0;
    }
    let inside: u64 = histogram
        .iter()
        .filter(|h| (lo..=hi).contains(&h.0))
        .map(|h| h.1)
        .sum();
    inside as f64 / total as f64
}

fn live_views<N: Network + ?Sized>(
    sim: &N,
) -> impl Iterator<Item = (&ArcSet<u32>, &ArcSet<u32>)> + '_ {
    sim.alive()
        .iter()
        .filter_map(|&id| sim.overlay(id).map(|o| (o.outview(), o.inview())))
}

/// Whether an arc links `a` and `b`, either way.
fn linked<N: Network + ?Sized>(sim: &N, a: u32, b: u32) -> bool {
    sim.overlay(a)
        .is_some_and(|o| o.outview().contains(&b) || o.inview().contains(&b))
}

/// Mean local clustering coefficient of the undirected overlay graph (an edge
/// where an arc goes either way), over `samples` live peers drawn at random
/// (all of them if fewer). A peer with fewer than two neighbours counts 0.
pub fn clustering<N: Network + ?Sized, R: Rng>(sim: &N, samples: usize, rng: &mut R) -> f64 {
    let picked = sample_live(sim, samples, rng);
    if picked.is_empty() {
        return 0.0;
    }
    let mut neighbours: Vec<u32> = Vec::new();
    let mut sum = 0.0;
    for &v in &picked {
        let Some(o) = sim.overlay(v) else { continue };
        neighbours.clear();
        neighbours.extend(o.outview().peers().chain(o.inview().peers()).copied());
        neighbours.sort_unstable();
        neighbours.dedup();
        neighbours.retain(|&p| sim.is_alive(p) && p != v);
        let k = neighbours.len();
        if k < 2 {
            continue;
        }
        let mut links = 0usize;
        for i in 0..k {
            for j in i + 1..k {
                if linked(sim, neighbours[i], neighbours[j]) {
                    links += 1;
                }
            }
        }
        sum += links as f64 / (k * (k - 1) / 2) as f64;
    }
    sum / picked.len() as f64
}

/// Average length of the shortest directed paths (along arcs) from `sources`
/// live peers drawn at random to every live peer they reach, by breadth-first
/// search; and the share of (source, peer) pairs reached.
pub fn average_path<N: Network + ?Sized, R: Rng>(
    sim: &N,
    sources: usize,
    rng: &mut R,
) -> PathLength {
    let picked = sample_live(sim, sources, rng);
    let n = sim.len();
    let mut dist = vec![DEAD; n];
    let mut queue = VecDeque::new();
    let (mut total, mut pairs, mut possible) = (0u64, 0u64, 0u64);
    let live = sim.alive().len() as u64;
    for &s in &picked {
        dist.iter_mut().for_each(|d| *d = DEAD);
        dist[s as usize] = 0;
        queue.clear();
        queue.push_back(s);
        while let Some(v) = queue.pop_front() {
            let d = dist[v as usize];
            let Some(o) = sim.overlay(v) else { continue };
            for &w in o.outview().peers() {
                if sim.is_alive(w) && dist[w as usize] == DEAD {
                    dist[w as usize] = d + 1;
                    total += u64::from(d + 1);
                    pairs += 1;
                    queue.push_back(w);
                }
            }
        }
        possible += live.saturating_sub(1);
    }
    PathLength {
        mean: if pairs == 0 {
            0.0
        } else {
            total as f64 / pairs as f64
        },
        reached: if possible == 0 {
            0.0
        } else {
            pairs as f64 / possible as f64
        },
    }
}

/// Result of [`average_path`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PathLength {
    /// Mean hop count over the pairs reached.
    pub mean: f64,
    /// Share of the (source, live peer) pairs reached.
    pub reached: f64,
}

/// Components left after removing a share of the live peers at once, with no
/// repair (the paper's robustness measure).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Removal {
    /// Share of the live peers removed.
    pub removed: f64,
    /// Peers left.
    pub left: usize,
    /// Strongly connected components of the peers left.
    pub strong: Components,
    /// Weakly connected components of the peers left.
    pub weak: Components,
}

/// For each share in `fractions`, removes that share of the live peers (drawn
/// at random, independently per share) from the graph and measures the
/// components of the rest. The simulation itself is not changed.
pub fn removal_sweep<N: Network + ?Sized, R: Rng>(
    sim: &N,
    fractions: &[f64],
    rng: &mut R,
) -> Vec<Removal> {
    let mut dense = vec![DEAD; sim.len()];
    fractions
        .iter()
        .map(|&f| {
            let mut live: Vec<u32> = sim.alive().to_vec();
            live.sort_unstable();
            live.shuffle(rng);
            let cut = ((live.len() as f64) * f.clamp(0.0, 1.0)).round() as usize;
            let kept = &mut live[cut..];
            kept.sort_unstable();
            dense.iter_mut().for_each(|d| *d = DEAD);
            for (i, &id) in kept.iter().enumerate() {
                dense[id as usize] = i as u32;
            }
            let graph = Graph::build(&dense, kept, |id| sim.overlay(id).map(|o| o.outview()));
            Removal {
                removed: f,
                left: kept.len(),
                strong: graph.strong_components(),
                weak: graph.weak_components(),
            }
        })
        .collect()
}

fn sample_live<N: Network + ?Sized, R: Rng>(sim: &N, k: usize, rng: &mut R) -> Vec<u32> {
    let mut live: Vec<u32> = sim.alive().to_vec();
    // `alive()` has no stable order across removals: sort before drawing.
    live.sort_unstable();
    if k < live.len() {
        let (picked, _) = live.partial_shuffle(rng, k);
        let mut picked = picked.to_vec();
        picked.sort_unstable();
        picked
    } else {
        live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_count_values() {
        let h = histogram([3, 1, 3, 3, 0]);
        assert_eq!(h, vec![(0, 1), (1, 1), (3, 3)]);
        assert!((share_within(&h, 1, 3) - 0.8).abs() < 1e-12);
        assert_eq!(share_within(&[], 0, 9), 0.0);
    }
}
