//! What the spray example measures each cycle: the peers' views and
//! connections, connectivity, CPU time and memory.

use super::*;

/// CPU time this process used so far (user + system), from `/proc` (Linux).
pub(super) fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // The kernel reports in clock ticks, 100 per second on Linux.
    Some(Duration::from_millis(ticks * 10))
}

/// The resident set of this process in bytes, from `/proc` (Linux).
pub(super) fn resident() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

pub(super) fn ln(n: usize) -> f64 {
    (n.max(1) as f64).ln()
}

/// Strong and weak connectivity of the graph of outviews.
pub(super) fn connectivity(graph: &BTreeMap<PeerId, Vec<PeerId>>) -> (bool, bool) {
    let ids: Vec<PeerId> = graph.keys().copied().collect();
    if ids.len() <= 1 {
        return (true, true);
    }
    let index: BTreeMap<PeerId, usize> = ids.iter().enumerate().map(|(i, p)| (*p, i)).collect();
    let mut fwd = vec![Vec::new(); ids.len()];
    let mut back = vec![Vec::new(); ids.len()];
    for (p, outs) in graph {
        for q in outs {
            if let (Some(&i), Some(&j)) = (index.get(p), index.get(q)) {
                fwd[i].push(j);
                back[j].push(i);
            }
        }
    }
    let reach = |adj: &[Vec<usize>], undirected: Option<&[Vec<usize>]>| {
        let mut seen = vec![false; adj.len()];
        let mut stack = vec![0usize];
        seen[0] = true;
        while let Some(i) = stack.pop() {
            let extra = undirected.map(|u| u[i].as_slice()).unwrap_or(&[]);
            for &j in adj[i].iter().chain(extra) {
                if !seen[j] {
                    seen[j] = true;
                    stack.push(j);
                }
            }
        }
        seen.iter().all(|s| *s)
    };
    let strong = reach(&fwd, None) && reach(&back, None);
    let weak = reach(&fwd, Some(&back));
    (strong, weak)
}

pub(super) async fn observe(peers: &[Peer]) -> (Row, BTreeMap<PeerId, Vec<PeerId>>, Vec<Snapshot>) {
    let mut graph = BTreeMap::new();
    let mut snaps = Vec::new();
    for p in peers {
        let s = p.node.handle().snapshot().await;
        let (_, out) = s.view(spray::PROTOCOL);
        graph.insert(p.id, out.occurrences().copied().collect::<Vec<_>>());
        snaps.push(s);
    }
    let sizes: Vec<usize> = graph.values().map(Vec::len).collect();
    let arcs: usize = sizes.iter().sum();
    let (strong, weak) = connectivity(&graph);
    let row = Row {
        peers: peers.len(),
        mean: arcs as f64 / peers.len().max(1) as f64,
        min: sizes.iter().copied().min().unwrap_or(0),
        max: sizes.iter().copied().max().unwrap_or(0),
        arcs,
        connections: snaps.iter().map(|s| s.neighbours.len()).sum::<usize>() / 2,
        strong,
        weak,
    };
    (row, graph, snaps)
}

pub(super) fn dot(graph: &BTreeMap<PeerId, Vec<PeerId>>) -> String {
    let mut out = String::from("digraph spray {\n  node [shape=circle, fontsize=9];\n");
    for (p, outs) in graph {
        let _ = writeln!(out, "  \"{}\";", p.short());
        for q in outs {
            let _ = writeln!(out, "  \"{}\" -> \"{}\";", p.short(), q.short());
        }
    }
    out.push_str("}\n");
    out
}
