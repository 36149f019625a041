//! `Authorization` values with a `Payment` credential (base64url JSON, its echoed challenge,
//! `source`, `payload`), read as the MPP schemes read them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_paywall::mpp::Credential;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(credential) = Credential::parse(text) {
            let _ = credential.encode();
        }
        let _ = Credential::parse_lines(text.split('\n'));
    }
    if let Ok(value) = http::HeaderValue::from_bytes(data) {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, value);
        let _ = Credential::from_headers(&headers);
    }
});
