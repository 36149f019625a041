//! x402 v2: wire types and header codecs, the Stellar [`Exact`] scheme, and facilitators.
//!
//! | header | direction | content |
//! |---|---|---|
//! | `PAYMENT-REQUIRED` | server → client, on 402 | base64 JSON [`PaymentRequired`] |
//! | `PAYMENT-SIGNATURE` (legacy `X-PAYMENT`) | client → server | base64 JSON [`PaymentPayload`] |
//! | `PAYMENT-RESPONSE` (and legacy `X-PAYMENT-RESPONSE`) | server → client, on success and on a failed settlement | base64 JSON [`SettleResponse`] |
//!
//! The 402 also carries the same information as a JSON body, `{x402Version, error, resource,
//! accepts}`, each `accepts` entry with `maxAmountRequired` (= `amount`) for clients that read
//! the v1 field.

mod checks;
mod exact;
pub mod facilitator;
pub mod header;
mod hosted;
#[cfg(feature = "local-facilitator")]
mod local;
pub mod payment_identifier;
pub mod wire;

pub use exact::{DEFAULT_MAX_TIMEOUT_SECONDS, Exact, ExactBuildError, ExactBuilder};
pub use facilitator::{Facilitator, FacilitatorError, FacilitatorRequest};
#[cfg(feature = "http-facilitator")]
pub use facilitator::{FacilitatorBuildError, HttpFacilitator, HttpFacilitatorBuilder};
pub use hosted::hosted_facilitator_url;
#[cfg(feature = "local-facilitator")]
pub use local::{
    DEFAULT_MAX_FEE, LocalFacilitator, LocalFacilitatorBuilder, LocalFacilitatorError,
    facilitator_router,
};
pub use wire::{
    PaymentPayload, PaymentRequired, PaymentRequirements, ResourceInfo, SettleResponse,
    SupportedKind, SupportedResponse, VerifyResponse, X402_VERSION,
};
