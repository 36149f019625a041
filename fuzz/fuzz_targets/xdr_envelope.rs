//! A base64 transaction envelope decoded under the crate's XDR limits, then read as a Stellar
//! Asset Contract transfer.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(envelope) = tower_paywall::stellar::decode_envelope(text)
        && let Ok(transfer) = tower_paywall::stellar::sac_transfer(&envelope)
    {
        let _ = transfer.payer_nonce();
    }
});
