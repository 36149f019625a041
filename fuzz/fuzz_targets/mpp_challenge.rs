//! `WWW-Authenticate` values with `Payment` challenges (auth-params, base64url request and
//! opaque, expiry), and the id check of each challenge parsed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_paywall::mpp::{Challenge, ChallengeKeys, ChallengeSecret};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let keys =
        ChallengeKeys::new(ChallengeSecret::new(*b"a fuzzing secret of 32 bytes ...").unwrap());
    if let Ok(challenges) = Challenge::parse_all(text) {
        for challenge in challenges {
            let _ = challenge.verify_id(&keys);
            let _ = challenge.request_json();
            let _ = challenge.opaque_json();
            let _ = challenge.expires_at();
            let _ = challenge.format();
        }
    }
    let _ = Challenge::parse_lines(text.split('\n'));
});
