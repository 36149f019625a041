//! `Accept-Payment` field lines (ranges, wildcards, q-values), and the order they give to a
//! list of offers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_paywall::mpp::AcceptPayment;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let accept = AcceptPayment::parse_lines(text.split('\n'));
    let offers = [
        ("stellar", "charge"),
        ("stellar", "channel"),
        ("tempo", "charge"),
    ];
    let _ = accept.order(offers.to_vec(), |offer| *offer);
});
