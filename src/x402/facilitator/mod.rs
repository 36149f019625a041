//! The x402 facilitator: the party that verifies a client's payment and settles it on chain
//! (`POST /verify`, `POST /settle`, `GET /supported`).
//!
//! [`Facilitator`] is the seam: `HttpFacilitator` (feature `http-facilitator`) talks to a remote
//! one, for example the hosted OpenZeppelin facilitator; tests or a local facilitator implement
//! it directly.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::BoxFuture;
use crate::x402::wire::{
    PaymentPayload, PaymentRequirements, SettleResponse, SupportedResponse, VerifyResponse,
};

#[cfg(feature = "http-facilitator")]
mod http;
#[cfg(feature = "http-facilitator")]
pub use self::http::{FacilitatorBuildError, HttpFacilitator, HttpFacilitatorBuilder};

/// The body of a `/verify` or `/settle` request.
///
/// Serializes as `{"x402Version":2,"paymentPayload":<the client's JSON, byte for byte>,
/// "paymentRequirements":{…}}`. `paymentRequirements` must be the server's own matched offer,
/// never the client's `accepted`: the facilitator checks the transaction against it.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FacilitatorRequest<'a> {
    /// Protocol version (`x402Version`), the payload's own.
    pub x402_version: u32,
    /// The client's `PaymentPayload`, exactly as received.
    pub payment_payload: &'a RawValue,
    /// The server's offer that the payment's `accepted` matched.
    pub payment_requirements: &'a PaymentRequirements,
}

impl<'a> FacilitatorRequest<'a> {
    /// The request for a client's payment against the server's matched offer.
    pub fn new(payment: &'a PaymentPayload, requirements: &'a PaymentRequirements) -> Self {
        FacilitatorRequest {
            x402_version: payment.x402_version(),
            payment_payload: payment.raw(),
            payment_requirements: requirements,
        }
    }
}

/// An x402 facilitator: verifies payments, settles them, and says what it supports.
///
/// Object-safe; the layer holds one as `Arc<dyn Facilitator>`.
pub trait Facilitator: Send + Sync + 'static {
    /// `POST /verify`: would this payment settle? A refusal is `Ok` with `is_valid: false`.
    fn verify<'a>(
        &'a self,
        request: &'a FacilitatorRequest<'a>,
    ) -> BoxFuture<'a, Result<VerifyResponse, FacilitatorError>>;

    /// `POST /settle`: settle the payment on chain. A refusal is `Ok` with `success: false`.
    fn settle<'a>(
        &'a self,
        request: &'a FacilitatorRequest<'a>,
    ) -> BoxFuture<'a, Result<SettleResponse, FacilitatorError>>;

    /// `GET /supported`: the kinds, extensions and signers of the facilitator.
    ///
    /// Cached: implementations must not hit the network per call after the first success.
    fn supported(&self) -> BoxFuture<'_, Result<Arc<SupportedResponse>, FacilitatorError>>;

    /// How long a settle call may take before it gives up; `None` if unknown.
    fn settle_timeout(&self) -> Option<Duration> {
        None
    }
}

impl<T: Facilitator + ?Sized> Facilitator for Arc<T> {
    fn verify<'a>(
        &'a self,
        request: &'a FacilitatorRequest<'a>,
    ) -> BoxFuture<'a, Result<VerifyResponse, FacilitatorError>> {
        (**self).verify(request)
    }

    fn settle<'a>(
        &'a self,
        request: &'a FacilitatorRequest<'a>,
    ) -> BoxFuture<'a, Result<SettleResponse, FacilitatorError>> {
        (**self).settle(request)
    }

    fn supported(&self) -> BoxFuture<'_, Result<Arc<SupportedResponse>, FacilitatorError>> {
        (**self).supported()
    }

    fn settle_timeout(&self) -> Option<Duration> {
        (**self).settle_timeout()
    }
}

/// Why a facilitator call gave no verify, settle or supported answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FacilitatorError {
    /// Could not connect: the request was never delivered, so nothing happened.
    #[error("facilitator unreachable: {0}")]
    Unreachable(String),
    /// No answer in time: the outcome is unknown.
    #[error("facilitator did not answer in time")]
    Timeout,
    /// The connection failed after the request was sent: the outcome is unknown.
    #[error("facilitator connection interrupted: {0}")]
    Interrupted(String),
    /// A non-2xx status whose body is not a verify or settle answer.
    #[error("facilitator answered HTTP {0}")]
    Status(u16),
    /// A body that is not the expected JSON.
    #[error("facilitator answer malformed: {0}")]
    Malformed(String),
}

impl FacilitatorError {
    /// Whether the facilitator may have acted on the request (settled, for `/settle`) even
    /// though no answer came back: `Timeout`, `Interrupted`, a 5xx `Status` and `Malformed`.
    ///
    /// After a settle call, an unknown outcome means "retry with the same payment", never
    /// "ask for a new one" (the client could pay twice).
    pub fn outcome_unknown(&self) -> bool {
        match self {
            Self::Unreachable(_) => false,
            Self::Timeout | Self::Interrupted(_) | Self::Malformed(_) => true,
            Self::Status(code) => (500..600).contains(code),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x402::wire::PaymentPayload;

    const PAYLOAD: &str = r#"{"x402Version":2,"payload":{"transaction":"AAAA"},"accepted":{"scheme":"exact","network":"stellar:testnet","amount":"10000000","asset":"CBIELTK6YBZJU5UP2WWQEUCYKLPU6AUNZ2BQ4WWFEIE3USCIHMXQDAMA","payTo":"GB2Q4VZJ32UM4F2EMZR2QVKT4YHIAKGBEV2UDYH7Q6DOZ6KCX5KHSBNB","maxTimeoutSeconds":60,"extra":{"areFeesSponsored":true}}, "z" : 1.50}"#;

    #[test]
    fn request_serializes_payload_byte_for_byte() {
        let payment = PaymentPayload::from_json(PAYLOAD.as_bytes()).unwrap();
        let ours = payment.accepted().clone();
        let request = FacilitatorRequest::new(&payment, &ours);
        let body = serde_json::to_string(&request).unwrap();
        let requirements = serde_json::to_string(&ours).unwrap();
        assert_eq!(
            body,
            format!(
                r#"{{"x402Version":2,"paymentPayload":{PAYLOAD},"paymentRequirements":{requirements}}}"#
            )
        );
    }

    #[test]
    fn outcome_unknown_classification() {
        assert!(!FacilitatorError::Unreachable("refused".into()).outcome_unknown());
        assert!(FacilitatorError::Timeout.outcome_unknown());
        assert!(FacilitatorError::Interrupted("reset".into()).outcome_unknown());
        assert!(FacilitatorError::Malformed("garbage".into()).outcome_unknown());
        assert!(FacilitatorError::Status(500).outcome_unknown());
        assert!(FacilitatorError::Status(503).outcome_unknown());
        assert!(!FacilitatorError::Status(400).outcome_unknown());
        assert!(!FacilitatorError::Status(404).outcome_unknown());
        assert!(!FacilitatorError::Status(302).outcome_unknown());
    }

    struct Fixed;

    impl Facilitator for Fixed {
        fn verify<'a>(
            &'a self,
            request: &'a FacilitatorRequest<'a>,
        ) -> BoxFuture<'a, Result<VerifyResponse, FacilitatorError>> {
            Box::pin(async move {
                Ok(VerifyResponse {
                    is_valid: true,
                    invalid_reason: None,
                    invalid_message: None,
                    payer: Some(request.payment_requirements.pay_to.clone()),
                })
            })
        }

        fn settle<'a>(
            &'a self,
            _request: &'a FacilitatorRequest<'a>,
        ) -> BoxFuture<'a, Result<SettleResponse, FacilitatorError>> {
            Box::pin(async { Err(FacilitatorError::Timeout) })
        }

        fn supported(&self) -> BoxFuture<'_, Result<Arc<SupportedResponse>, FacilitatorError>> {
            Box::pin(async {
                Ok(Arc::new(SupportedResponse {
                    kinds: Vec::new(),
                    extensions: Vec::new(),
                    signers: Default::default(),
                }))
            })
        }
    }

    #[tokio::test]
    async fn trait_is_object_safe_and_arc_forwards() {
        let facilitator: Arc<dyn Facilitator> = Arc::new(Fixed);
        let twice: Arc<Arc<dyn Facilitator>> = Arc::new(facilitator.clone());
        let payment = PaymentPayload::from_json(PAYLOAD.as_bytes()).unwrap();
        let request = FacilitatorRequest::new(&payment, payment.accepted());
        let verified = twice.verify(&request).await.unwrap();
        assert_eq!(
            verified.payer.as_deref(),
            Some("GB2Q4VZJ32UM4F2EMZR2QVKT4YHIAKGBEV2UDYH7Q6DOZ6KCX5KHSBNB")
        );
        assert_eq!(
            facilitator.settle(&request).await,
            Err(FacilitatorError::Timeout)
        );
        assert!(twice.supported().await.unwrap().kinds.is_empty());
        assert_eq!(twice.settle_timeout(), None);
    }
}
