//! What the benches share: an x402 `exact` scheme whose facilitator is never called on the
//! paths measured.

use std::sync::Arc;

use tower_paywall::BoxFuture;
use tower_paywall::stellar::Network;
use tower_paywall::x402::{
    Exact, Facilitator, FacilitatorError, FacilitatorRequest, SettleResponse, SupportedResponse,
    VerifyResponse,
};

/// The recipient of the benches' payments.
pub const PAY_TO: &str = "GB2Q4VZJ32UM4F2EMZR2QVKT4YHIAKGBEV2UDYH7Q6DOZ6KCX5KHSBNB";

/// A facilitator that is never called on these paths (only `/supported`, answered at once).
pub struct Idle(Arc<SupportedResponse>);

impl Facilitator for Idle {
    fn verify<'a>(
        &'a self,
        _: &'a FacilitatorRequest<'a>,
    ) -> BoxFuture<'a, Result<VerifyResponse, FacilitatorError>> {
        Box::pin(async { Err(FacilitatorError::Status(500)) })
    }
    fn settle<'a>(
        &'a self,
        _: &'a FacilitatorRequest<'a>,
    ) -> BoxFuture<'a, Result<SettleResponse, FacilitatorError>> {
        Box::pin(async { Err(FacilitatorError::Status(500)) })
    }
    fn supported(&self) -> BoxFuture<'_, Result<Arc<SupportedResponse>, FacilitatorError>> {
        let supported = self.0.clone();
        Box::pin(async move { Ok(supported) })
    }
}

pub fn exact() -> Exact {
    let supported: SupportedResponse = serde_json::from_str(
        r#"{"kinds":[{"x402Version":2,"scheme":"exact","network":"stellar:testnet","extra":{"areFeesSponsored":true}}],
            "signers":{"stellar:*":["GCFIRY65OQE7DFP5KLNS2PF2LVZMUZYJX4OZIEQ36N2IQANUB5XVYOJR"]}}"#,
    )
    .unwrap();
    Exact::builder(
        Network::testnet(),
        PAY_TO.parse().unwrap(),
        Idle(Arc::new(supported)),
    )
    .build()
    .unwrap()
}
