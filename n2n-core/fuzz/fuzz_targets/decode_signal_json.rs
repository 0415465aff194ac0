//! Fuzzes signed-signal parsing and verification as a signaling server sees them
//! (JSON from an untrusted client): never panics.
//!
//! Run: `cd n2n-core/fuzz && cargo +nightly fuzz run decode_signal_json`
#![no_main]

use libfuzzer_sys::fuzz_target;
use n2n_core::SignedSignal;

fuzz_target!(|data: &[u8]| {
    if let Ok(signal) = serde_json::from_slice::<SignedSignal>(data) {
        let _ = signal.verify_signature();
        let to = signal.signal.to;
        let _ = signal.verify(&to);
    }
});
