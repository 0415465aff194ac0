//! Fuzzes Spray's message decoder: arbitrary bytes never panic, and whatever
//! decodes re-encodes to the same bytes.
//!
//! Run: `cd n2n-overlay-spray/fuzz && cargo +nightly fuzz run decode_message`
#![no_main]

use libfuzzer_sys::fuzz_target;
use n2n_overlay_spray::spray::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = Message::<u32>::decode(data) {
        assert_eq!(message.encode(), data);
    }
});
