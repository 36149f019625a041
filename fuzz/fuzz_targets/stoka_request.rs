//! stoka's own request parsers: `Authorization: Stellar <G…>:<challenge>:<signature>` (any
//! bytes), `X-Stoka-TTL-Seconds`, and the `wait_seconds` of a pop's query.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stoka::auth::Credentials;
use stoka::pricing::Limits;

fuzz_target!(|data: &[u8]| {
    let _ = Credentials::from_header_bytes(data);
    if let Ok(value) = http::HeaderValue::from_bytes(data) {
        let _ = Limits::default().ttl_of(Some(&value));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Credentials::from_header(text);
        let _ = Limits::default().ttl_seconds(Some(text));
    }
});
