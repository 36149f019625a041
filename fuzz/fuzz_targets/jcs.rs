//! JSON Canonicalization (RFC 8785) of any JSON: never panics, and is a fixed point (the
//! canonical text of the canonical text is itself).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_paywall::mpp::jcs;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let canonical = jcs::to_string(&value);
    let again: serde_json::Value = serde_json::from_str(&canonical).expect("JCS is JSON");
    assert_eq!(jcs::to_string(&again), canonical, "JCS is a fixed point");
    let _ = jcs::to_base64url(&value);
});
