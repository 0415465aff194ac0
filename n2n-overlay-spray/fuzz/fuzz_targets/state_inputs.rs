//! Fuzzes a Spray peer with arbitrary messages from its neighbours: whatever
//! the bytes, the peer never panics and never closes an arc it does not hold.
//!
//! Run: `cd n2n-overlay-spray/fuzz && cargo +nightly fuzz run state_inputs`
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use n2n_core::Direction;
use n2n_core::overlay::{Input, Output, Overlay};
use n2n_overlay_spray::spray;
use rand::SeedableRng;

fuzz_target!(|data: &[u8]| {
    let rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let mut peer = spray::State::new(0u32, spray::Config::default(), rng);
    let now = Instant::now();
    for p in 1..4u32 {
        for direction in [Direction::Outgoing, Direction::Incoming] {
            peer.handle(now, Input::ArcOpened { peer: p, direction });
        }
    }
    // Each chunk: one byte picks the sender, the rest is the payload.
    for chunk in data.split(|b| *b == 0xff) {
        let Some((&who, payload)) = chunk.split_first() else {
            continue;
        };
        let from = u32::from(who % 4) + 1;
        peer.handle(
            now,
            Input::Message {
                from,
                payload: payload.to_vec(),
            },
        );
        while let Some(out) = peer.poll_output() {
            if let Output::CloseArc { to } = out {
                assert!(peer.outview().count(&to) > 0);
            }
        }
    }
});
