//! The README's naive event loop — `while let Some(e) = node.next_event().await
//! { … h.send(…).await … }` — on 16 nodes flooding a burst of 3,000
//! broadcasts: every node must stay responsive (the node never blocks on a
//! slow application; an application that falls behind sees `Event::Lagged`).

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Net, O, test_config};
use n2n_core::node::{Config, Event};
use n2n_core::{PeerId, ProtocolId};

const NODES: usize = 16;
const BURST: u64 = 3_000;
const APP: ProtocolId = O;

/// What one node's application saw.
#[derive(Default)]
struct Seen {
    ids: Mutex<BTreeSet<u64>>,
    lagged: AtomicU64,
}

fn payload(id: u64) -> Vec<u8> {
    let mut p = id.to_be_bytes().to_vec();
    p.resize(512, 0xab);
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn naive_event_loop_survives_a_burst_of_broadcasts() {
    let net = Net::new();
    let config = Config {
        // Small queues make the old deadlock quick to reach.
        event_capacity: 64,
        data_queue: 16,
        ..test_config()
    };
    let mut nodes = Vec::new();
    for i in 0..NODES {
        nodes.push(net.node_with(100 + i as u64, config.clone()).await);
    }
    // A ring with chords: every node has four neighbours.
    for i in 0..NODES {
        for step in [1, 4] {
            let j = (i + step) % NODES;
            nodes[i].connect(&nodes[j]).await;
        }
    }
    let mut handles = Vec::new();
    let mut seen = Vec::new();
    let mut loops = Vec::new();
    for mut n in nodes {
        let h = n.node.handle().clone();
        let neighbours: Vec<PeerId> = h
            .snapshot()
            .await
            .neighbours
            .iter()
            .map(|x| x.peer)
            .collect();
        assert_eq!(neighbours.len(), 4);
        let s = Arc::new(Seen::default());
        let (h2, s2) = (h.clone(), s.clone());
        // The naive loop, awaiting node calls inside the event loop.
        loops.push(tokio::spawn(async move {
            while let Some(e) = n.node.next_event().await {
                match e {
                    Event::Message { payload, .. } => {
                        let id = u64::from_be_bytes(payload[..8].try_into().expect("8 bytes"));
                        if !s2.ids.lock().unwrap().insert(id) {
                            continue;
                        }
                        for peer in &neighbours {
                            let _ = h2.send(*peer, APP, payload.to_vec()).await;
                        }
                    }
                    Event::Lagged { missed } => {
                        s2.lagged.fetch_add(missed, Ordering::SeqCst);
                    }
                    _ => {}
                }
            }
            n.node
        }));
        handles.push(h);
        seen.push(s);
    }
    // The burst, from node 0.
    let origin = {
        let h = handles[0].clone();
        let s = seen[0].clone();
        tokio::spawn(async move {
            let neighbours: Vec<PeerId> = h
                .snapshot()
                .await
                .neighbours
                .iter()
                .map(|x| x.peer)
                .collect();
            for id in 0..BURST {
                s.ids.lock().unwrap().insert(id);
                for peer in &neighbours {
                    let _ = h.send(*peer, APP, payload(id)).await;
                }
            }
        })
    };
    tokio::time::timeout(Duration::from_secs(60), origin)
        .await
        .expect("the burst went out (no node blocked its senders for good)")
        .expect("origin task");
    // Every node answers, and a broadcast after the burst reaches everyone.
    let probe = BURST + 1;
    seen[0].ids.lock().unwrap().insert(probe);
    let mut frozen = Vec::new();
    for (i, h) in handles.iter().enumerate() {
        if tokio::time::timeout(Duration::from_secs(5), h.snapshot())
            .await
            .is_err()
        {
            frozen.push(i);
        }
    }
    assert!(
        frozen.is_empty(),
        "{} of {NODES} nodes answer nothing after the burst: {frozen:?}",
        frozen.len()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    for peer in handles[0]
        .snapshot()
        .await
        .neighbours
        .iter()
        .map(|x| x.peer)
    {
        tokio::time::timeout(
            Duration::from_secs(10),
            handles[0].send(peer, APP, payload(probe)),
        )
        .await
        .expect("send does not block for good")
        .expect("sent");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let missing: Vec<usize> = (0..NODES)
            .filter(|i| !seen[*i].ids.lock().unwrap().contains(&probe))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nodes {missing:?} never got the probe broadcast"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every node either saw the whole burst or was told it lagged.
    let got: Vec<usize> = seen.iter().map(|s| s.ids.lock().unwrap().len()).collect();
    let lagged: Vec<u64> = seen
        .iter()
        .map(|s| s.lagged.load(Ordering::SeqCst))
        .collect();
    println!("broadcasts seen per node: {got:?}; events dropped (Lagged) per node: {lagged:?}");
    for (i, s) in seen.iter().enumerate() {
        let got = s.ids.lock().unwrap().len() as u64;
        let lagged = s.lagged.load(Ordering::SeqCst);
        assert!(
            got == BURST + 1 || lagged > 0,
            "node {i}: {got} broadcasts and no lag signal"
        );
    }
    for h in &handles {
        h.shutdown().await;
    }
    for l in loops {
        let _ = tokio::time::timeout(Duration::from_secs(10), l).await;
    }
}
