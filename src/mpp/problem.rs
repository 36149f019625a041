//! Problem Details (RFC 9457) for payment failures: the `application/problem+json` body of a
//! 402 (or 400), `{"type", "title", "status", "detail", "challengeId"}`, with `type` under
//! `https://paymentauth.org/problems/` and mppx's titles.
//!
//! | code | status | when |
//! |---|---|---|
//! | `payment-required` | 402 | no credential (every first 402 carries this body) |
//! | `malformed-credential` | 402 | the credential is not base64url JSON of the right shape |
//! | `invalid-challenge` | 402 | unknown, forged, reused or other-route challenge id; missing or malformed `expires` |
//! | `payment-expired` | 402 | `expires` is in the past |
//! | `invalid-payload` | 402 | the payload does not fit the method's schema |
//! | `verification-failed` | 402 | the proof does not verify |
//! | `payment-insufficient` | 402 | the amount is too low |
//! | `method-unsupported` | 400 | the method is not accepted |
//! | `settlement-failed` | 402 | settlement on chain failed (Stellar spec) |
//! | `session/insufficient-balance` | 402 | the channel cannot pay this much |
//! | `session/invalid-signature` | 402 | the voucher's signature does not verify with the channel's commitment key |
//! | `session/signer-mismatch` | 402 | the voucher is signed by a key the channel does not accept |
//! | `session/amount-exceeds-deposit` | 402 | the voucher's cumulative amount is above what the channel holds |
//! | `session/delta-too-small` | 402 | the voucher does not add at least the price to the channel's cumulative amount |
//! | `session/channel-not-found` | 410 | the challenge's channel is not served here (any more) |
//! | `session/channel-finalized` | 410 | the channel is closing or closed |
//!
//! `challengeId` names the fresh challenge sent with the problem.

use http::StatusCode;
use serde::{Deserialize, Serialize};

/// The media type of a Problem Details body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The prefix of every payment problem `type`.
pub const PROBLEM_TYPE_BASE: &str = "https://paymentauth.org/problems/";

/// A payment problem type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProblemCode {
    /// `payment-required`.
    PaymentRequired,
    /// `malformed-credential`.
    MalformedCredential,
    /// `invalid-challenge`.
    InvalidChallenge,
    /// `payment-expired`.
    PaymentExpired,
    /// `invalid-payload`.
    InvalidPayload,
    /// `verification-failed`.
    VerificationFailed,
    /// `payment-insufficient`.
    PaymentInsufficient,
    /// `method-unsupported`.
    MethodUnsupported,
    /// `settlement-failed`.
    SettlementFailed,
    /// `session/insufficient-balance`.
    InsufficientBalance,
    /// `session/invalid-signature`.
    InvalidSignature,
    /// `session/signer-mismatch`.
    SignerMismatch,
    /// `session/amount-exceeds-deposit`.
    AmountExceedsDeposit,
    /// `session/delta-too-small`.
    DeltaTooSmall,
    /// `session/channel-not-found`.
    ChannelNotFound,
    /// `session/channel-finalized`.
    ChannelFinalized,
}

impl ProblemCode {
    /// Every code.
    pub const ALL: [Self; 16] = [
        Self::PaymentRequired,
        Self::MalformedCredential,
        Self::InvalidChallenge,
        Self::PaymentExpired,
        Self::InvalidPayload,
        Self::VerificationFailed,
        Self::PaymentInsufficient,
        Self::MethodUnsupported,
        Self::SettlementFailed,
        Self::InsufficientBalance,
        Self::InvalidSignature,
        Self::SignerMismatch,
        Self::AmountExceedsDeposit,
        Self::DeltaTooSmall,
        Self::ChannelNotFound,
        Self::ChannelFinalized,
    ];

    /// The code: the last segment of the `type` URI (`payment-required`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PaymentRequired => "payment-required",
            Self::MalformedCredential => "malformed-credential",
            Self::InvalidChallenge => "invalid-challenge",
            Self::PaymentExpired => "payment-expired",
            Self::InvalidPayload => "invalid-payload",
            Self::VerificationFailed => "verification-failed",
            Self::PaymentInsufficient => "payment-insufficient",
            Self::MethodUnsupported => "method-unsupported",
            Self::SettlementFailed => "settlement-failed",
            Self::InsufficientBalance => "session/insufficient-balance",
            Self::InvalidSignature => "session/invalid-signature",
            Self::SignerMismatch => "session/signer-mismatch",
            Self::AmountExceedsDeposit => "session/amount-exceeds-deposit",
            Self::DeltaTooSmall => "session/delta-too-small",
            Self::ChannelNotFound => "session/channel-not-found",
            Self::ChannelFinalized => "session/channel-finalized",
        }
    }

    /// The `type` URI: `https://paymentauth.org/problems/<code>`.
    pub fn type_uri(self) -> String {
        format!("{PROBLEM_TYPE_BASE}{}", self.as_str())
    }

    /// The `title`, as mppx writes it (`settlement-failed`, which mppx lacks, gets
    /// "Settlement Failed").
    pub fn title(self) -> &'static str {
        match self {
            Self::PaymentRequired => "Payment Required",
            Self::MalformedCredential => "Malformed Credential",
            Self::InvalidChallenge => "Invalid Challenge",
            Self::PaymentExpired => "Payment Expired",
            Self::InvalidPayload => "Invalid Payload",
            Self::VerificationFailed => "Verification Failed",
            Self::PaymentInsufficient => "Payment Insufficient",
            Self::MethodUnsupported => "Method Unsupported",
            Self::SettlementFailed => "Settlement Failed",
            Self::InsufficientBalance => "Insufficient Balance",
            Self::InvalidSignature => "Invalid Signature",
            Self::SignerMismatch => "Signer Mismatch",
            Self::AmountExceedsDeposit => "Amount Exceeds Deposit",
            Self::DeltaTooSmall => "Delta Too Small",
            Self::ChannelNotFound => "Channel Not Found",
            Self::ChannelFinalized => "Channel Closed",
        }
    }

    /// The response status: 400 for `method-unsupported`, 410 for a channel not found or
    /// finalized, 402 otherwise.
    pub fn status(self) -> StatusCode {
        match self {
            Self::MethodUnsupported => StatusCode::BAD_REQUEST,
            Self::ChannelNotFound | Self::ChannelFinalized => StatusCode::GONE,
            _ => StatusCode::PAYMENT_REQUIRED,
        }
    }

    /// A fixed client-facing `detail` (never echoes the request).
    pub fn default_detail(self) -> &'static str {
        match self {
            Self::PaymentRequired => "Payment is required.",
            Self::MalformedCredential => "The payment credential could not be read.",
            Self::InvalidChallenge => "The payment credential does not answer a valid challenge.",
            Self::PaymentExpired => "The payment challenge has expired.",
            Self::InvalidPayload => "The payment payload is not valid for its method.",
            Self::VerificationFailed => "Payment verification failed.",
            Self::PaymentInsufficient => "The payment amount is insufficient.",
            Self::MethodUnsupported => "The payment method is not supported.",
            Self::SettlementFailed => "Payment settlement failed.",
            Self::InsufficientBalance => "Insufficient balance.",
            Self::InvalidSignature => "Invalid signature.",
            Self::SignerMismatch => "Signer is not authorized for this channel.",
            Self::AmountExceedsDeposit => "Voucher amount exceeds channel deposit.",
            Self::DeltaTooSmall => "Amount increase below minimum voucher delta.",
            Self::ChannelNotFound => "No channel with this ID exists.",
            Self::ChannelFinalized => "Channel is closed.",
        }
    }

    /// The code of a `type` URI, if it is one of these.
    pub fn from_type_uri(type_uri: &str) -> Option<Self> {
        let code = type_uri.strip_prefix(PROBLEM_TYPE_BASE)?;
        Self::ALL.into_iter().find(|c| c.as_str() == code)
    }
}

/// A Problem Details body.
///
/// ```
/// use tower_paywall::mpp::{Problem, ProblemCode};
///
/// let problem = Problem::new(ProblemCode::PaymentExpired).with_challenge_id("hl1c…");
/// assert_eq!(
///     String::from_utf8(problem.to_json())?,
///     r#"{"type":"https://paymentauth.org/problems/payment-expired","title":"Payment Expired","status":402,"detail":"The payment challenge has expired.","challengeId":"hl1c…"}"#
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Problem {
    /// `type`: a URI naming the problem.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// `title`.
    pub title: String,
    /// `status`: the HTTP status.
    pub status: u16,
    /// `detail`: client-facing explanation.
    pub detail: String,
    /// `challengeId`: the id of the fresh challenge sent alongside.
    #[serde(
        rename = "challengeId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub challenge_id: Option<String>,
}

impl Problem {
    /// The problem `code` with its title, status and default detail.
    pub fn new(code: ProblemCode) -> Self {
        Self {
            type_uri: code.type_uri(),
            title: code.title().to_owned(),
            status: code.status().as_u16(),
            detail: code.default_detail().to_owned(),
            challenge_id: None,
        }
    }

    /// Replaces `detail`.
    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    /// Sets `challengeId`.
    #[must_use]
    pub fn with_challenge_id(mut self, challenge_id: impl Into<String>) -> Self {
        self.challenge_id = Some(challenge_id.into());
        self
    }

    /// Replaces `status` (say 400 for a `malformed-credential` with several credentials).
    #[must_use]
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status.as_u16();
        self
    }

    /// The code of `type`, if it is a payment problem.
    pub fn code(&self) -> Option<ProblemCode> {
        ProblemCode::from_type_uri(&self.type_uri)
    }

    /// The status as a [`StatusCode`] (402 if `status` is not a valid code).
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::PAYMENT_REQUIRED)
    }

    /// The JSON body.
    pub fn to_json(&self) -> Vec<u8> {
        // Strings and a number always serialize.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

impl From<ProblemCode> for Problem {
    fn from(code: ProblemCode) -> Self {
        Self::new(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_type_title_and_status() {
        let expected = [
            ("payment-required", "Payment Required", 402),
            ("malformed-credential", "Malformed Credential", 402),
            ("invalid-challenge", "Invalid Challenge", 402),
            ("payment-expired", "Payment Expired", 402),
            ("invalid-payload", "Invalid Payload", 402),
            ("verification-failed", "Verification Failed", 402),
            ("payment-insufficient", "Payment Insufficient", 402),
            ("method-unsupported", "Method Unsupported", 400),
            ("settlement-failed", "Settlement Failed", 402),
            // mppx's channel (session) problems.
            ("session/insufficient-balance", "Insufficient Balance", 402),
            ("session/invalid-signature", "Invalid Signature", 402),
            ("session/signer-mismatch", "Signer Mismatch", 402),
            (
                "session/amount-exceeds-deposit",
                "Amount Exceeds Deposit",
                402,
            ),
            ("session/delta-too-small", "Delta Too Small", 402),
            ("session/channel-not-found", "Channel Not Found", 410),
            ("session/channel-finalized", "Channel Closed", 410),
        ];
        assert_eq!(expected.len(), ProblemCode::ALL.len());
        for (code, (name, title, status)) in ProblemCode::ALL.into_iter().zip(expected) {
            assert_eq!(code.as_str(), name);
            assert_eq!(
                code.type_uri(),
                format!("https://paymentauth.org/problems/{name}")
            );
            assert_eq!(code.title(), title);
            assert_eq!(code.status().as_u16(), status);
            assert_eq!(ProblemCode::from_type_uri(&code.type_uri()), Some(code));
            let problem = Problem::new(code);
            let parsed: Problem = serde_json::from_slice(&problem.to_json()).unwrap();
            assert_eq!(parsed, problem);
            assert_eq!(parsed.code(), Some(code));
        }
        assert_eq!(ProblemCode::from_type_uri("about:blank"), None);
        assert_eq!(
            ProblemCode::from_type_uri("https://paymentauth.org/problems/session/no-such-problem"),
            None
        );
    }

    #[test]
    fn body_shape() {
        let problem = Problem::new(ProblemCode::MalformedCredential)
            .with_status(StatusCode::BAD_REQUEST)
            .with_detail("More than one Payment credential.");
        let json: serde_json::Value = serde_json::from_slice(&problem.to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "type": "https://paymentauth.org/problems/malformed-credential",
                "title": "Malformed Credential",
                "status": 400,
                "detail": "More than one Payment credential."
            })
        );
        assert_eq!(problem.status_code(), StatusCode::BAD_REQUEST);
    }
}
