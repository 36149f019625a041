//! The [`PaymentScheme`] trait every payment intent implements, and the values that flow
//! through it: [`Offer`], [`Credential`], [`Verified`], [`Receipt`], [`Rejection`].
//!
//! The layer knows schemes only through this trait. For each paid request it:
//!
//! 1. asks every scheme to [`read`](PaymentScheme::read) a credential from the headers (cheap,
//!    no I/O; it yields the claimed payer and the [`PaymentKey`] that makes the payment single-use);
//! 2. without a credential, asks every scheme for an [`offer`](PaymentScheme::offer) and lets the
//!    first scheme of each protocol [`render`](PaymentScheme::challenge) that protocol's offers
//!    into the 402;
//! 3. with one, [`verify`](PaymentScheme::verify)s it against the route's price, and later
//!    [`settle`](PaymentScheme::settle)s it, in the order the route asks for.
//!
//! Values specific to a scheme travel type-erased inside [`Offer`], [`Credential`] and
//! [`Verified`]; only the scheme that made them looks inside.

use std::any::Any;
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::BoxFuture;
use crate::price::{Amount, Price};
use crate::store::{Fingerprint, PaymentKey, PaymentStore, PendingSettlement};

/// A payment intent: the protocol and the intent's name in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Intent {
    /// The protocol family: `"x402"` or `"mpp"`. Schemes of one protocol share one rendering of
    /// the 402 (one `PAYMENT-REQUIRED` header listing every x402 offer, for instance).
    pub protocol: &'static str,
    /// The intent within the protocol: `"exact"`, `"charge"`, `"channel"`.
    pub name: &'static str,
}

impl Intent {
    /// x402 v2 `exact`.
    pub const X402_EXACT: Intent = Intent {
        protocol: "x402",
        name: "exact",
    };
    /// MPP `charge`.
    pub const MPP_CHARGE: Intent = Intent {
        protocol: "mpp",
        name: "charge",
    };
    /// MPP `channel`.
    pub const MPP_CHANNEL: Intent = Intent {
        protocol: "mpp",
        name: "channel",
    };
}

impl fmt::Display for Intent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.protocol, self.name)
    }
}

type Detail = Arc<dyn Any + Send + Sync>;

/// One scheme's offer for one price, rendered into the 402 by the scheme's protocol.
pub struct Offer {
    intent: Intent,
    detail: Detail,
}

impl Offer {
    /// An offer carrying scheme-specific data.
    pub fn new<T: Any + Send + Sync>(intent: Intent, detail: T) -> Self {
        Offer {
            intent,
            detail: Arc::new(detail),
        }
    }

    /// The intent that made this offer.
    pub fn intent(&self) -> Intent {
        self.intent
    }

    /// The scheme-specific data, if it is a `T`.
    pub fn detail<T: Any>(&self) -> Option<&T> {
        self.detail.downcast_ref()
    }
}

impl fmt::Debug for Offer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Offer")
            .field("intent", &self.intent)
            .finish()
    }
}

/// A payment credential read from a request, not yet verified.
#[derive(Clone)]
pub struct Credential {
    key: PaymentKey,
    fingerprint: Fingerprint,
    payer: Option<String>,
    payment_identifier: Option<Result<Arc<str>, Rejection>>,
    detail: Detail,
}

impl Credential {
    /// A credential for the payment `key`, presented as `fingerprint` (a digest of exactly what
    /// was signed), claiming `payer`.
    pub fn new<T: Any + Send + Sync>(
        key: PaymentKey,
        fingerprint: Fingerprint,
        payer: Option<String>,
        detail: T,
    ) -> Self {
        Credential {
            key,
            fingerprint,
            payer,
            payment_identifier: None,
            detail: Arc::new(detail),
        }
    }

    /// The idempotency key the payload carries (x402's `payment-identifier`), or why it is not
    /// one. The layer uses it on routes that declare the extension
    /// ([`Price::with_payment_identifier`](crate::Price::with_payment_identifier)).
    #[must_use]
    pub fn with_payment_identifier(mut self, id: Result<String, Rejection>) -> Self {
        self.payment_identifier = Some(id.map(Arc::from));
        self
    }

    /// The idempotency key the payload carries, if any (see
    /// [`with_payment_identifier`](Self::with_payment_identifier)).
    pub fn payment_identifier(&self) -> Option<Result<&str, &Rejection>> {
        self.payment_identifier
            .as_ref()
            .map(|id| id.as_ref().map(|id| &**id))
    }

    /// The key that makes this payment single-use in the [`PaymentStore`].
    pub fn key(&self) -> PaymentKey {
        self.key
    }

    /// The digest of the credential as presented: records of a payment answer only it.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The payer the credential claims (unverified).
    pub fn payer(&self) -> Option<&str> {
        self.payer.as_deref()
    }

    /// The scheme-specific data, if it is a `T`.
    pub fn detail<T: Any>(&self) -> Option<&T> {
        self.detail.downcast_ref()
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("key", &self.key)
            .field("payer", &self.payer)
            .finish_non_exhaustive()
    }
}

/// A credential that passed verification and may be settled.
pub struct Verified {
    payer: String,
    amount: Amount,
    asset: String,
    detail: Detail,
}

impl Verified {
    /// A verified payment of `amount` of `asset` by `payer`.
    pub fn new<T: Any + Send + Sync>(
        payer: String,
        amount: Amount,
        asset: String,
        detail: T,
    ) -> Self {
        Verified {
            payer,
            amount,
            asset,
            detail: Arc::new(detail),
        }
    }

    /// The verified payer.
    pub fn payer(&self) -> &str {
        &self.payer
    }

    /// The amount paid.
    pub fn amount(&self) -> Amount {
        self.amount
    }

    /// The asset paid in (a contract strkey).
    pub fn asset(&self) -> &str {
        &self.asset
    }

    /// The scheme-specific data, if it is a `T`.
    pub fn detail<T: Any>(&self) -> Option<&T> {
        self.detail.downcast_ref()
    }
}

impl fmt::Debug for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verified")
            .field("payer", &self.payer)
            .field("amount", &self.amount)
            .field("asset", &self.asset)
            .finish_non_exhaustive()
    }
}

/// Proof that a payment settled: its on-chain reference and the headers that carry it to the
/// client (`PAYMENT-RESPONSE`, `Payment-Receipt` …).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The settlement reference (a transaction hash, or a channel reference).
    pub reference: String,
    /// Headers added to the paid response, appended to any the handler set.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// How a rejection is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectionKind {
    /// 402 with fresh offers: no acceptable payment (missing, invalid, refused, or failed).
    PaymentRequired,
    /// 400: the request is malformed (an oversized credential, several credentials …).
    BadRequest,
    /// 409: the payment is held by another request or another credential.
    Conflict,
    /// 410 with fresh offers: what the payment names is gone (a closed payment channel).
    Gone,
    /// 502: the facilitator or RPC answered with garbage or an error.
    BadGateway,
    /// 503 + `Retry-After`: the facilitator or RPC is unreachable, or the outcome is not known
    /// yet; retry with the same payment.
    Unavailable,
}

impl RejectionKind {
    /// The HTTP status this kind is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            RejectionKind::PaymentRequired => StatusCode::PAYMENT_REQUIRED,
            RejectionKind::BadRequest => StatusCode::BAD_REQUEST,
            RejectionKind::Conflict => StatusCode::CONFLICT,
            RejectionKind::Gone => StatusCode::GONE,
            RejectionKind::BadGateway => StatusCode::BAD_GATEWAY,
            RejectionKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// Why a payment was not accepted. `code` is the protocol's client-facing reason (an x402
/// `invalidReason`, an MPP problem type); internal detail goes to `tracing`, never here.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejection {
    /// How the rejection is answered.
    pub kind: RejectionKind,
    /// The protocol that rejected (`"x402"`, `"mpp"`); that protocol renders the reason.
    pub protocol: &'static str,
    /// The client-facing reason.
    pub code: Cow<'static, str>,
    /// Extra headers for the answer (an x402 `PAYMENT-RESPONSE` after a failed settlement).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Rejection {
    /// A rejection of `kind` by `protocol` with the client-facing `code`.
    pub fn new(
        kind: RejectionKind,
        protocol: &'static str,
        code: impl Into<Cow<'static, str>>,
    ) -> Self {
        Rejection {
            kind,
            protocol,
            code: code.into(),
            headers: Vec::new(),
        }
    }

    /// Adds a header to the answer.
    #[must_use]
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
}

/// How a settlement ended.
#[derive(Clone, Debug, PartialEq)]
pub enum SettleOutcome {
    /// The money moved.
    Settled(Receipt),
    /// The money did not move, and will not: the payment is not consumed and the rejection is
    /// answered (402 with fresh offers, or 503 when the settler could not be reached).
    Rejected(Rejection),
    /// Nobody knows yet whether the money moved (a timeout, a reset connection, a garbled
    /// answer). The payment stays claimed; retries with it get the rejection's status (502 or
    /// 503) and are never offered a fresh 402 that would make the client pay twice.
    Unknown(Rejection),
}

/// What the ledger says of a payment whose settlement outcome was not known
/// ([`PaymentScheme::reconcile`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Reconciled {
    /// The money moved: the receipt the settlement would have answered with. The payment is
    /// served as if the settlement had answered.
    Settled(Receipt),
    /// The money did not move and cannot move any more for this payment (its authorization or
    /// transaction has expired unused, or its transaction failed): the payment is released and
    /// answered with this rejection (a 402 whose code says so: x402 `payment_not_settled`, MPP
    /// `settlement-failed`), the client free to pay again.
    NotSettled(Rejection),
    /// Not known yet: the ledger could not be asked, or the payment could still settle.
    Unknown,
}

/// What a request's 402 is made of. Each protocol adds its headers and its fields to one JSON
/// body (the x402 fields and the MPP Problem Details members live side by side).
#[derive(Debug, Default)]
pub struct Challenge {
    /// Headers of the 402, appended in order.
    pub headers: HeaderMap,
    /// Members of the JSON body.
    pub body: serde_json::Map<String, serde_json::Value>,
    /// The body's content type; `application/json` unless a protocol sets another.
    pub content_type: Option<HeaderValue>,
}

/// What a protocol sees when it renders its offers into a [`Challenge`].
#[derive(Clone, Copy, Debug)]
pub struct ChallengeContext<'a> {
    /// The request head.
    pub request: &'a http::request::Parts,
    /// The absolute URL of the resource (from the layer's public URL, or the request).
    pub resource_url: &'a str,
    /// The price being asked.
    pub price: &'a Price,
    /// Why the request's own payment was refused, if it carried one.
    pub rejection: Option<&'a Rejection>,
}

/// What a scheme verifies a credential against.
#[derive(Clone, Copy)]
pub struct PaymentContext<'a> {
    /// The request head.
    pub request: &'a http::request::Parts,
    /// The price asked.
    pub price: &'a Price,
    /// The layer's store, for single-use claims beyond the payment itself (a transaction hash
    /// that must pay for one challenge only, for instance).
    pub store: &'a dyn PaymentStore,
}

impl fmt::Debug for PaymentContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PaymentContext")
            .field("uri", &self.request.uri)
            .field("price", self.price)
            .finish_non_exhaustive()
    }
}

/// A payment intent the layer can offer, verify and settle.
///
/// The trait is object-safe: the layer holds `Arc<dyn PaymentScheme>`.
pub trait PaymentScheme: Send + Sync + 'static {
    /// The intent this scheme implements.
    fn intent(&self) -> Intent;

    /// Reads this scheme's credential from the request headers, without I/O.
    ///
    /// `None`: the request carries no credential for this scheme. `Some(Err(_))`: a credential
    /// this scheme would handle is malformed or meant for something it cannot serve (another
    /// scheme's `Some(Ok(_))` still wins).
    fn read(&self, headers: &HeaderMap) -> Option<Result<Credential, Rejection>>;

    /// This scheme's offer for `price`.
    fn offer<'a>(
        &'a self,
        price: &'a Price,
        request: &'a http::request::Parts,
    ) -> BoxFuture<'a, Result<Offer, Rejection>>;

    /// Renders every offer of this scheme's protocol (in order; possibly made by several schemes
    /// of the protocol) into the 402. Called once per protocol, on the first scheme of it.
    fn challenge(
        &self,
        offers: &[&Offer],
        context: &ChallengeContext<'_>,
        challenge: &mut Challenge,
    );

    /// Verifies a credential this scheme read against the price. Must not move money.
    fn verify<'a>(
        &'a self,
        credential: &'a Credential,
        context: PaymentContext<'a>,
    ) -> BoxFuture<'a, Result<Verified, Rejection>>;

    /// The answer to a credential for a payment that another credential already holds (for
    /// MPP: a replayed challenge). Default: 409 `payment_held_by_another_credential`.
    fn reused(&self) -> Rejection {
        Rejection::new(
            RejectionKind::Conflict,
            "layer",
            "payment_held_by_another_credential",
        )
    }

    /// Moves the money. Runs detached from the request, so a client that hangs up cannot cut
    /// a settlement in half. `store` is the layer's, for single-use claims.
    fn settle(
        self: Arc<Self>,
        verified: Arc<Verified>,
        store: Arc<dyn PaymentStore>,
    ) -> BoxFuture<'static, SettleOutcome>;

    /// What a settlement of `verified` leaves for [`reconcile`](Self::reconcile), in this
    /// scheme's own encoding (at most [`MAX_EVIDENCE_LEN`](crate::store::MAX_EVIDENCE_LEN)
    /// bytes): stored with the payment before the settlement starts, so that the ledger can be
    /// asked later, by any node and after a crash, whether the money moved. Empty (the default):
    /// this scheme cannot reconcile, and an unknown outcome stays unknown until the record
    /// expires.
    fn evidence(&self, verified: &Verified) -> Bytes {
        let _ = verified;
        Bytes::new()
    }

    /// Asks the ledger how the settlement of `pending` ended, from its
    /// [`evidence`](Self::evidence). Called on a retry of a payment whose outcome is unknown
    /// (at most once per payment every few seconds) and by the background reconciler. Must
    /// answer [`Reconciled::NotSettled`] only when the payment can no longer settle. Default:
    /// [`Reconciled::Unknown`].
    fn reconcile<'a>(&'a self, pending: &'a PendingSettlement) -> BoxFuture<'a, Reconciled> {
        let _ = pending;
        Box::pin(std::future::ready(Reconciled::Unknown))
    }

    /// This scheme's metering of responses priced [`per`](crate::Price::per) a unit, if it
    /// meters (MPP `channel` does). Default: `None`; such routes do not offer this scheme.
    fn metering(&self) -> Option<&dyn Metering> {
        None
    }
}

/// A scheme that meters responses: a stream draws on credit paid ahead (see the
/// [layer docs](crate::layer#metered-streams)). The opening credential is verified and
/// settled as any other, its settlement paying ahead instead of paying for the request.
pub trait Metering: Send + Sync {
    /// The credit a stream opened by `verified` (settled) draws on.
    fn credit(&self, verified: &Verified) -> Option<Arc<dyn CreditSource>>;

    /// Pays ahead with a credential (this scheme's) sent during a stream, on a request to the
    /// stream's own resource without a body (`POST` or `HEAD`): the receipt of the answer.
    fn pay_ahead<'a>(
        &'a self,
        credential: &'a Credential,
        request: &'a http::request::Parts,
        price: &'a Price,
    ) -> BoxFuture<'a, Result<Receipt, Rejection>>;
}

/// Where a metered stream's credit comes from (a payment channel's, through its store).
pub trait CreditSource: Send + Sync + 'static {
    /// Takes the credit paid ahead and not taken yet (0 when there is none).
    fn take(&self) -> BoxFuture<'_, i128>;
    /// Resolves when credit may have been paid ahead since it was called (a voucher arrived,
    /// or a poll interval passed).
    fn changed(&self) -> BoxFuture<'_, ()>;
    /// Gives back credit that was not drawn.
    fn give_back(&self, amount: i128) -> BoxFuture<'static, ()>;
    /// The data of the in-band request for a voucher covering `owed` more than the stream
    /// holds (`payment-need-voucher`).
    fn need_voucher(&self, owed: i128) -> BoxFuture<'_, String>;
    /// The data of the final receipt (`payment-receipt`), after `units` units.
    fn receipt(&self, units: u64) -> BoxFuture<'_, String>;
}
