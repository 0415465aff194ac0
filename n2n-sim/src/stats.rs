//! Measurements of a simulated overlay: view sizes, in-degrees, arc totals,
//! duplicates, and connected components.
//!
//! The graph of a snapshot has one vertex per live peer and one edge per
//! distinct (peer, neighbour) outview pair whose neighbour is alive (arcs to a
//! crashed peer not yet noticed are counted in the views but not in the graph).
//! Components are computed iteratively (no recursion), in O(N + E) time and a
//! few words per peer, so that a million peers fit.

use std::time::Duration;

use n2n_core::arc::ArcSet;

/// Mean, standard deviation and extremes of a sample.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Summary {
    /// Sample size.
    pub count: usize,
    /// Mean (0 for an empty sample).
    pub mean: f64,
    /// Population standard deviation.
    pub std_dev: f64,
    /// Smallest value (0 for an empty sample).
    pub min: f64,
    /// Largest value (0 for an empty sample).
    pub max: f64,
}

impl Summary {
    /// Summarises `values`.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Self {
        let (mut n, mut sum, mut sq) = (0usize, 0.0, 0.0);
        let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values {
            n += 1;
            sum += v;
            sq += v * v;
            min = min.min(v);
            max = max.max(v);
        }
        if n == 0 {
            return Self::default();
        }
        let mean = sum / n as f64;
        Self {
            count: n,
            mean,
            std_dev: (sq / n as f64 - mean * mean).max(0.0).sqrt(),
            min,
            max,
        }
    }
}

/// Connected components of a graph.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Components {
    /// How many.
    pub count: usize,
    /// Vertices in the largest.
    pub largest: usize,
}

/// The state of an overlay at one instant.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// Virtual time.
    pub time: Duration,
    /// Live peers.
    pub peers: usize,
    /// Partial-view (outview) sizes, arc occurrences counted.
    pub view: Summary,
    /// In-degrees (inview sizes).
    pub in_degree: Summary,
    /// Σ outview sizes.
    pub arcs_out: usize,
    /// Σ inview sizes (equal to `arcs_out` when the mirrors are exact).
    pub arcs_in: usize,
    /// Live peers with an empty partial view.
    pub empty_views: usize,
    /// Share of live peers holding at least two arcs to the same neighbour.
    pub duplicates_share: f64,
    /// Strongly connected components of the live peers.
    pub strong: Components,
    /// Weakly connected components of the live peers.
    pub weak: Components,
}

/// Directed graph in compressed sparse rows, over dense vertex indices.
#[derive(Debug)]
pub struct Graph {
    offsets: Vec<u32>,
    targets: Vec<u32>,
}

impl Graph {
    /// Builds the graph of the live peers: `dense[id]` is the vertex of peer
    /// `id` (or `u32::MAX` if dead), `outview(id)` its outview.
    pub fn build<'a>(
        dense: &[u32],
        live: &[u32],
        outview: impl Fn(u32) -> Option<&'a ArcSet<u32>>,
    ) -> Self {
        let mut offsets = Vec::with_capacity(live.len() + 1);
        let mut targets = Vec::new();
        offsets.push(0);
        for &id in live {
            if let Some(out) = outview(id) {
                for p in out.peers() {
                    let v = dense.get(*p as usize).copied().unwrap_or(u32::MAX);
                    if v != u32::MAX {
                        targets.push(v);
                    }
                }
            }
            offsets.push(targets.len() as u32);
        }
        Self { offsets, targets }
    }

    /// Number of vertices.
    pub fn vertices(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Number of edges.
    pub fn edges(&self) -> usize {
        self.targets.len()
    }

    fn successors(&self, v: u32) -> &[u32] {
        &self.targets[self.offsets[v as usize] as usize..self.offsets[v as usize + 1] as usize]
    }

    /// Strongly connected components (Tarjan's algorithm with an explicit stack).
    pub fn strong_components(&self) -> Components {
        const UNSEEN: u32 = u32::MAX;
        let n = self.vertices();
        let mut index = vec![UNSEEN; n];
        let mut low = vec![0u32; n];
        let mut on_stack = vec![false; n];
        let mut stack: Vec<u32> = Vec::new();
        let mut calls: Vec<(u32, u32)> = Vec::new();
        let mut next = 0u32;
        let mut result = Components::default();
        for root in 0..n as u32 {
            if index[root as usize] != UNSEEN {
                continue;
            }
            index[root as usize] = next;
            low[root as usize] = next;
            next += 1;
            stack.push(root);
            on_stack[root as usize] = true;
            calls.push((root, 0));
            while let Some(&mut (v, ref mut edge)) = calls.last_mut() {
                let succ = self.successors(v);
                if (*edge as usize) < succ.len() {
                    let w = succ[*edge as usize];
                    *edge += 1;
                    if index[w as usize] == UNSEEN {
                        index[w as usize] = next;
                        low[w as usize] = next;
                        next += 1;
                        stack.push(w);
                        on_stack[w as usize] = true;
                        calls.push((w, 0));
                    } else if on_stack[w as usize] {
                        low[v as usize] = low[v as usize].min(index[w as usize]);
                    }
                    continue;
                }
                calls.pop();
                if let Some(&(u, _)) = calls.last() {
                    low[u as usize] = low[u as usize].min(low[v as usize]);
                }
                if low[v as usize] == index[v as usize] {
                    let mut size = 0;
                    loop {
                        let w = stack.pop().expect("v is on the stack");
                        on_stack[w as usize] = false;
                        size += 1;
                        if w == v {
                            break;
                        }
                    }
                    result.count += 1;
                    result.largest = result.largest.max(size);
                }
            }
        }
        result
    }

    /// Weakly connected components (union-find).
    pub fn weak_components(&self) -> Components {
        let n = self.vertices();
        let mut parent: Vec<u32> = (0..n as u32).collect();
        fn find(parent: &mut [u32], mut x: u32) -> u32 {
            while parent[x as usize] != x {
                let up = parent[parent[x as usize] as usize];
                parent[x as usize] = up;
                x = up;
            }
            x
        }
        for v in 0..n as u32 {
            for &w in self.successors(v) {
                let (a, b) = (find(&mut parent, v), find(&mut parent, w));
                if a != b {
                    parent[a.max(b) as usize] = a.min(b);
                }
            }
        }
        let mut size = vec![0u32; n];
        for v in 0..n as u32 {
            let r = find(&mut parent, v);
            size[r as usize] += 1;
        }
        Components {
            count: size.iter().filter(|s| **s > 0).count(),
            largest: size.iter().copied().max().unwrap_or(0) as usize,
        }
    }
}

/// Measures peers `0..total` (the dead ones return `None` from the views).
pub(crate) fn snapshot<'a>(
    time: Duration,
    total: usize,
    outview: impl Fn(u32) -> Option<&'a ArcSet<u32>>,
    inview: impl Fn(u32) -> Option<&'a ArcSet<u32>>,
) -> Snapshot {
    let mut dense = vec![u32::MAX; total];
    let mut live = Vec::new();
    for id in 0..total as u32 {
        if outview(id).is_some() {
            dense[id as usize] = live.len() as u32;
            live.push(id);
        }
    }
    let outs = || live.iter().filter_map(|&id| outview(id));
    let ins = || live.iter().filter_map(|&id| inview(id));
    let graph = Graph::build(&dense, &live, &outview);
    let duplicates = outs().filter(|o| o.distinct() < o.len()).count();
    Snapshot {
        time,
        peers: live.len(),
        view: Summary::of(outs().map(|o| o.len() as f64)),
        in_degree: Summary::of(ins().map(|o| o.len() as f64)),
        arcs_out: outs().map(|o| o.len()).sum(),
        arcs_in: ins().map(|o| o.len()).sum(),
        empty_views: outs().filter(|o| o.is_empty()).count(),
        duplicates_share: if live.is_empty() {
            0.0
        } else {
            duplicates as f64 / live.len() as f64
        },
        strong: graph.strong_components(),
        weak: graph.weak_components(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(n: u32, edges: &[(u32, u32)]) -> Graph {
        let views: Vec<ArcSet<u32>> = (0..n)
            .map(|v| edges.iter().filter(|e| e.0 == v).map(|e| e.1).collect())
            .collect();
        let dense: Vec<u32> = (0..n).collect();
        Graph::build(&dense, &dense, |id| Some(&views[id as usize]))
    }

    #[test]
    fn components_of_small_graphs() {
        // Two 3-cycles joined by one edge, and an isolated vertex.
        let g = graph(7, &[(0, 1), (1, 2), (2, 0), (3, 4), (4, 5), (5, 3), (2, 3)]);
        assert_eq!(
            g.strong_components(),
            Components {
                count: 3,
                largest: 3
            }
        );
        assert_eq!(
            g.weak_components(),
            Components {
                count: 2,
                largest: 6
            }
        );
        let g = graph(3, &[]);
        assert_eq!(
            g.strong_components(),
            Components {
                count: 3,
                largest: 1
            }
        );
    }

    #[test]
    fn tarjan_survives_a_long_path() {
        // A cycle of a million vertices: recursion would overflow the stack.
        let n = 1_000_000u32;
        let offsets: Vec<u32> = (0..=n).collect();
        let targets: Vec<u32> = (0..n).map(|v| (v + 1) % n).collect();
        let g = Graph { offsets, targets };
        assert_eq!(
            g.strong_components(),
            Components {
                count: 1,
                largest: n as usize
            }
        );
        assert_eq!(
            g.weak_components(),
            Components {
                count: 1,
                largest: n as usize
            }
        );
    }

    #[test]
    fn summary() {
        let s = Summary::of([1.0, 2.0, 3.0, 6.0]);
        assert_eq!((s.count, s.mean, s.min, s.max), (4, 3.0, 1.0, 6.0));
        assert!((s.std_dev - 1.870_828_693).abs() < 1e-6);
        assert_eq!(Summary::of([]), Summary::default());
    }
}
