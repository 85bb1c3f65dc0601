//! Fuzzes the key parser: no input panics, and whatever it accepts it writes back in the
//! format it read and reads again to the same key.
//!
//! cargo fuzz run --sanitizer none decode_key -- -max_total_time=600

#![no_main]

use iroh_identity::{decode_key, encode_key};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((key, format)) = decode_key(data) {
        let written = encode_key(&key, format);
        let (again, format_again) = decode_key(&written).expect("a written key reads back");
        assert_eq!(format_again, format);
        assert_eq!(again.to_bytes(), key.to_bytes());
    }
});
