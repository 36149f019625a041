//! `Payment-Receipt` values, as the paying client reads them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tower_paywall::mpp::Receipt::parse(text);
    }
});
