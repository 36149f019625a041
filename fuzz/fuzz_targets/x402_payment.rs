//! A `PAYMENT-SIGNATURE` header as the x402 `exact` scheme reads it: base64, the payload JSON
//! (with its `payment-identifier`), the transaction's XDR under its limits, the transfer checks.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use tower_paywall::BoxFuture;
use tower_paywall::scheme::PaymentScheme;
use tower_paywall::stellar::Network;
use tower_paywall::x402::{
    Exact, Facilitator, FacilitatorError, FacilitatorRequest, SettleResponse, SupportedResponse,
    VerifyResponse,
};

/// Never called: reading a credential asks no facilitator.
struct Unreachable;

impl Facilitator for Unreachable {
    fn verify<'a>(
        &'a self,
        _: &'a FacilitatorRequest<'a>,
    ) -> BoxFuture<'a, Result<VerifyResponse, FacilitatorError>> {
        Box::pin(async { Err(FacilitatorError::Timeout) })
    }
    fn settle<'a>(
        &'a self,
        _: &'a FacilitatorRequest<'a>,
    ) -> BoxFuture<'a, Result<SettleResponse, FacilitatorError>> {
        Box::pin(async { Err(FacilitatorError::Timeout) })
    }
    fn supported(&self) -> BoxFuture<'_, Result<Arc<SupportedResponse>, FacilitatorError>> {
        Box::pin(async { Err(FacilitatorError::Timeout) })
    }
}

fn scheme() -> &'static Exact {
    static SCHEME: OnceLock<Exact> = OnceLock::new();
    SCHEME.get_or_init(|| {
        let pay_to = "GB2Q4VZJ32UM4F2EMZR2QVKT4YHIAKGBEV2UDYH7Q6DOZ6KCX5KHSBNB"
            .parse()
            .unwrap();
        Exact::builder(Network::testnet(), pay_to, Unreachable)
            .build()
            .unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = http::HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = http::HeaderMap::new();
    headers.insert("payment-signature", value);
    let _ = scheme().read(&headers);
});
