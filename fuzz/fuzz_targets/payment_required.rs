//! A 402 as the paying client reads it: the `PAYMENT-REQUIRED` header (base64 JSON), the x402
//! body (v1 and v2 fields) and `WWW-Authenticate: Payment` challenges. The input's first line
//! is the header (or challenges, after a `\x01`), the rest the body.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (head, body) = match data.iter().position(|byte| *byte == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let mut headers = http::HeaderMap::new();
    let (name, value) = match head.split_first() {
        Some((1, rest)) => ("www-authenticate", rest),
        _ => ("payment-required", head),
    };
    if let Ok(value) = http::HeaderValue::from_bytes(value) {
        headers.insert(name, value);
    }
    let _ = tower_paywall::client::read_offers(&headers, body);
    let _ = tower_paywall::x402::header::decode::<tower_paywall::x402::PaymentRequired>(head);
    let _ = serde_json::from_slice::<tower_paywall::x402::PaymentRequired>(body);
});
