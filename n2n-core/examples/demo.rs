//! The smallest n2n demo, in memory: A and C each join B through a signaling
//! hub, then B bridges A to C and A talks to C over their own direct connection,
//! with no signaling server involved in that second handshake.
//!
//! Run: `cargo run --release -p n2n-core --example demo`

use std::sync::Arc;

use n2n_core::memory::{MemoryNetwork, MemorySignalingHub};
use n2n_core::node::{Builder, Event, Node};
use n2n_core::{Keypair, ProtocolId};
use rand::SeedableRng;

const ARCS: ProtocolId = ProtocolId::from_name("demo");
const CHAT: ProtocolId = ProtocolId::from_name("chat");

fn spawn(network: &MemoryNetwork, seed: u64) -> anyhow::Result<Node> {
    let key = Keypair::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    Ok(Builder::new(key)
        .transport(Arc::new(network.transport()))
        .protocol(ARCS)
        .spawn()?)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let network = MemoryNetwork::new();
    let hub = MemorySignalingHub::new();
    let b = spawn(&network, 2)?;
    let a = spawn(&network, 1)?;
    let mut c = spawn(&network, 3)?;
    let (a_id, b_id, c_id) = (a.local_peer_id(), b.local_peer_id(), c.local_peer_id());
    println!(
        "A = {}  B = {}  C = {}",
        a_id.short(),
        b_id.short(),
        c_id.short()
    );

    // Joining: the hub carries the signals of A–B and C–B.
    b.handle().attach_signaling(hub.attach(b_id)).await;
    for (node, id) in [(&a, a_id), (&c, c_id)] {
        node.handle()
            .connect(b_id, hub.attach(id), Some(ARCS))
            .await?;
    }
    println!("A and C joined B through the signaling hub");

    // From now on, B relays: A opens an arc to C through B.
    b.handle().bridge(ARCS, a_id, c_id).await?;
    let relayed = b.handle().snapshot().await.relayed_signals;
    println!("B bridged A → C, relaying {relayed} signals");

    a.handle()
        .send(c_id, CHAT, b"hello over our own connection".to_vec())
        .await?;
    while let Some(event) = c.next_event().await {
        if let Event::Message { from, payload, .. } = event {
            println!(
                "C got from {}: {}",
                from.short(),
                String::from_utf8_lossy(&payload)
            );
            break;
        }
    }
    let snap = c.handle().snapshot().await;
    println!(
        "C's inview: {:?}",
        snap.view(ARCS)
            .0
            .iter()
            .map(|(p, n)| (p.short(), n))
            .collect::<Vec<_>>()
    );
    for node in [a, b, c] {
        node.shutdown().await;
    }
    Ok(())
}
