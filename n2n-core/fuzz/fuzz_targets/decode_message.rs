//! Fuzzes the wire decoder: arbitrary bytes never panic, and whatever decodes
//! re-encodes to a frame that decodes to the same message.
//!
//! Run: `cd n2n-core/fuzz && cargo +nightly fuzz run decode_message`
#![no_main]

use libfuzzer_sys::fuzz_target;
use n2n_core::wire;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = wire::decode(data) {
        let frame = wire::encode(&message).expect("a decoded message re-encodes");
        assert_eq!(wire::decode(&frame).expect("re-decodes"), message);
    }
});
