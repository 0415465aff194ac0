//! Fuzzes the node core from a misbehaving neighbour, through the harness:
//! the fuzzer's bytes become frames, wire messages (bridge orders, relays
//! with signals…), signals handed to the target by the server and waits
//! ([`Adversary::actions_from_bytes`]). The target must never panic or
//! livelock, must leave no state once the timeouts pass, must keep its other
//! neighbour, and an honest peer must still connect to it with exact arc
//! tables ([`Adversary::check`]). The property test `tests/core_fuzz.rs` runs
//! the same in CI.
//!
//! Run: `cd n2n-core/fuzz && cargo +nightly fuzz run node_core`
#![no_main]

use libfuzzer_sys::fuzz_target;
use n2n_core::harness::adversary::Adversary;

fuzz_target!(|data: &[u8]| {
    let mut adversary = Adversary::new(1);
    for action in adversary.actions_from_bytes(data, 64) {
        if let Err(livelock) = adversary.act(action) {
            panic!("{livelock}");
        }
    }
    if let Err(broken) = adversary.check() {
        panic!("{broken}");
    }
});
