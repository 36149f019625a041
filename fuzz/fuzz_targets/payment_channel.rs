//! `Payment-Channel` field lines: the channels a client names for its `channel` offers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_paywall::mpp::{MAX_NAMED_CHANNELS, PAYMENT_CHANNEL, named_channels};

fuzz_target!(|data: &[u8]| {
    let mut headers = http::HeaderMap::new();
    for line in data.split(|byte| *byte == b'\n') {
        if let Ok(value) = http::HeaderValue::from_bytes(line) {
            headers.append(PAYMENT_CHANNEL, value);
        }
    }
    if let Some(named) = named_channels(&headers) {
        assert!(!named.is_empty() && named.len() <= MAX_NAMED_CHANNELS);
    }
});
