//! What a request costs: [`Price`], the async [`Pricing`] hook and its answer, [`Priced`].
//!
//! Pricing sees the request head (never the body) and, when the request carries a payment
//! credential, the payer that credential claims. It answers one of:
//!
//! - [`Priced::Free`]: the request passes straight to the inner service;
//! - [`Priced::Charge`]: the request must be paid;
//! - [`Priced::Respond`]: an early response (404, 409, 411, 413 …) sent before any money moves.
//!
//! ```
//! use tower_paywall::price::{Price, PriceFuture, PriceRequest, Priced};
//!
//! // Charge 0.001 per started kilobyte of the declared body; refuse requests without a length.
//! let pricing = |request: &PriceRequest<'_>| {
//!     let answer = match request.content_length() {
//!         None => Priced::Respond(
//!             http::Response::builder().status(411).body(bytes::Bytes::new()).unwrap(),
//!         ),
//!         Some(len) => {
//!             let kilobytes = len.div_ceil(1024).max(1) as i128;
//!             match tower_paywall::stellar::Amount::from_atomic(10_000 * kilobytes) {
//!                 Ok(amount) => Priced::Charge(Price::new(amount)),
//!                 Err(_) => Priced::Respond(
//!                     http::Response::builder().status(413).body(bytes::Bytes::new()).unwrap(),
//!                 ),
//!             }
//!         }
//!     };
//!     PriceFuture::ready(answer)
//! };
//! # let _: &dyn tower_paywall::price::Pricing = &pricing;
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;

use crate::BoxFuture;
pub use crate::stellar::Amount;
use crate::stellar::AmountError;

/// When a verified payment is settled relative to the inner service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SettlementOrder {
    /// Verify → handler → settle only if the handler answered with a status below 400.
    /// The response head waits for settlement; a failed settlement withholds the handler's body.
    #[default]
    AfterSuccess,
    /// Verify → settle → handler: the handler only runs for money that has moved.
    BeforeHandler,
    /// Verify → handler, which settles through the [`SettleGuard`](crate::SettleGuard) in its
    /// request extensions at the point it chooses (validate → settle → commit). A handler that
    /// answers below 400 without settling is settled after it returns, as with
    /// [`AfterSuccess`](Self::AfterSuccess).
    InHandler,
}

/// The price of one request, in atomic units (7 decimals) of the asset each scheme sells in;
/// or, [`per`](Price::per) a unit, of each unit of a metered response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Price {
    amount: Amount,
    description: Option<Arc<str>>,
    order: Option<SettlementOrder>,
    payment_identifier: PaymentIdentifier,
    unit: Option<Unit>,
}

/// What a metered price is per (see the [layer docs](crate::layer#metered-streams)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Unit {
    /// An event of a server-sent event stream (`text/event-stream`) that dispatches (has a
    /// `data` line): the layer counts them as they go out. Comments (keep-alives) are free.
    Event,
    /// A byte of an event's data: its `data` lines' values as sent, without their line ends.
    Byte,
    /// A unit the handler counts, named (`"token"`): each event says how many it holds in a
    /// `units` field (`units: 12`, written by the handler, or by
    /// [`layer::counted_event`](crate::layer::counted_event)). An event without one holds one
    /// unit; `units: 0` is free. SSE readers ignore the field.
    Counted(&'static str),
}

impl Unit {
    /// The unit's name in a challenge (`unitType`).
    pub fn name(self) -> &'static str {
        match self {
            Unit::Event => "event",
            Unit::Byte => "byte",
            Unit::Counted(name) => name,
        }
    }
}

/// Whether a route takes x402's `payment-identifier` extension: a client's idempotency key for
/// one logical request, carried in the payment payload (see the
/// [layer docs](crate::layer#idempotency-keys)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PaymentIdentifier {
    /// Not declared; an identifier in a payload is ignored.
    #[default]
    Off,
    /// Declared with `required: false`: a payment that carries an identifier is idempotent by it.
    Optional,
    /// Declared with `required: true`: an x402 payment without one is refused (400).
    Required,
}

impl Price {
    /// A price of `amount`.
    pub fn new(amount: Amount) -> Self {
        Price {
            amount,
            description: None,
            order: None,
            payment_identifier: PaymentIdentifier::Off,
            unit: None,
        }
    }

    /// Parses a display amount such as `"0.001"` or `"$0.001"`.
    pub fn parse(amount: &str) -> Result<Self, AmountError> {
        Ok(Price::new(amount.parse()?))
    }

    /// A human-readable description of what is sold, shown in the 402.
    #[must_use]
    pub fn with_description(mut self, description: impl Into<Arc<str>>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// Overrides the layer's settlement order for requests priced this way.
    #[must_use]
    pub fn with_order(mut self, order: SettlementOrder) -> Self {
        self.order = Some(order);
        self
    }

    /// Declares x402's `payment-identifier` extension for requests priced this way.
    #[must_use]
    pub fn with_payment_identifier(mut self, payment_identifier: PaymentIdentifier) -> Self {
        self.payment_identifier = payment_identifier;
        self
    }

    /// Meters the response: the amount is the price of each `unit` of it, drawn from a
    /// payment channel's credit as units go out (MPP `channel` only; see the
    /// [layer docs](crate::layer#metered-streams)).
    #[must_use]
    pub fn per(mut self, unit: Unit) -> Self {
        self.unit = Some(unit);
        self
    }

    /// The unit a metered price is per; `None` for a price per request.
    pub fn unit(&self) -> Option<Unit> {
        self.unit
    }

    /// The amount in atomic units.
    pub fn amount(&self) -> Amount {
        self.amount
    }

    /// The description, if any.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The settlement order this price asks for, if it overrides the layer's.
    pub fn order(&self) -> Option<SettlementOrder> {
        self.order
    }

    /// Whether x402's `payment-identifier` extension is declared for this price.
    pub fn payment_identifier(&self) -> PaymentIdentifier {
        self.payment_identifier
    }
}

/// The answer of a [`Pricing`] hook.
#[derive(Debug)]
pub enum Priced {
    /// No payment needed: the request goes straight to the inner service.
    Free,
    /// The request must be paid this price.
    Charge(Price),
    /// Answer with this response before any money moves (404, 409, 411, 413 …).
    Respond(http::Response<Bytes>),
}

/// The request as pricing sees it: the head, and the payer a credential claims.
///
/// The headers pricing reads through [`header`](Self::header) and
/// [`content_length`](Self::content_length) bind the payment's record to this request, with
/// the method, path and query: the payment's recorded answer is given again only to a request
/// that agrees on all of them (see the [layer docs](crate::layer#one-payment-one-request)).
#[derive(Clone, Copy)]
pub struct PriceRequest<'a> {
    method: &'a http::Method,
    uri: &'a http::Uri,
    headers: &'a http::HeaderMap,
    extensions: &'a http::Extensions,
    payer: Payer<'a>,
    reads: Option<&'a HeaderReads>,
}

/// The names of the headers pricing read, in the order read.
#[derive(Default)]
pub(crate) struct HeaderReads(std::sync::Mutex<Vec<http::HeaderName>>);

impl HeaderReads {
    fn note(&self, name: http::HeaderName) {
        let mut names = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !names.contains(&name) {
            names.push(name);
        }
    }

    /// The names read, sorted.
    pub(crate) fn names(&self) -> Vec<http::HeaderName> {
        let mut names = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        names
    }
}

/// Where the claimed payer comes from: given, or read from the credential on first ask (so a
/// free route never pays for decoding a credential it ignores).
#[derive(Clone, Copy)]
enum Payer<'a> {
    Known(Option<&'a str>),
    Lazy(&'a dyn ClaimedPayer),
}

/// Reads the payer a request's credential claims, on demand.
pub(crate) trait ClaimedPayer {
    fn claimed_payer(&self) -> Option<&str>;
}

impl<'a> PriceRequest<'a> {
    /// A view over a request head and the payer its credential claims.
    pub fn new(parts: &'a http::request::Parts, payer: Option<&'a str>) -> Self {
        PriceRequest {
            method: &parts.method,
            uri: &parts.uri,
            headers: &parts.headers,
            extensions: &parts.extensions,
            payer: Payer::Known(payer),
            reads: None,
        }
    }

    /// A view over a whole request's head, noting the headers read into `reads`.
    pub(crate) fn of<B>(
        request: &'a http::Request<B>,
        payer: &'a dyn ClaimedPayer,
        reads: &'a HeaderReads,
    ) -> Self {
        PriceRequest {
            method: request.method(),
            uri: request.uri(),
            headers: request.headers(),
            extensions: request.extensions(),
            payer: Payer::Lazy(payer),
            reads: Some(reads),
        }
    }

    /// The request method.
    pub fn method(&self) -> &'a http::Method {
        self.method
    }

    /// The request URI.
    pub fn uri(&self) -> &'a http::Uri {
        self.uri
    }

    /// The first value of header `name`. A header read here binds the payment to its value
    /// (see [`PriceRequest`]): read every header the price depends on this way.
    pub fn header(&self, name: impl TryInto<http::HeaderName>) -> Option<&'a http::HeaderValue> {
        let name = name.try_into().ok()?;
        let value = self.headers.get(&name);
        if let Some(reads) = self.reads {
            reads.note(name);
        }
        value
    }

    /// The request headers, all of them. Reads through this map do not bind the payment to the
    /// request: prefer [`header`](Self::header).
    pub fn headers(&self) -> &'a http::HeaderMap {
        self.headers
    }

    /// The request extensions (route parameters, state set by outer layers …).
    pub fn extensions(&self) -> &'a http::Extensions {
        self.extensions
    }

    /// The declared body length (`Content-Length`), if present and valid. Size-based prices come
    /// from here: the body is never buffered to price it.
    pub fn content_length(&self) -> Option<u64> {
        self.header(http::header::CONTENT_LENGTH)?
            .to_str()
            .ok()?
            .parse()
            .ok()
    }

    /// The payer the request's credential claims (a Stellar strkey), before any verification.
    /// Use it to scope business checks (is this key the payer's?), never to grant anything.
    ///
    /// Reading it decodes the credential (once); pricing that does not ask costs nothing.
    pub fn payer(&self) -> Option<&'a str> {
        match self.payer {
            Payer::Known(payer) => payer,
            Payer::Lazy(source) => source.claimed_payer(),
        }
    }
}

impl fmt::Debug for PriceRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PriceRequest")
            .field("method", self.method)
            .field("uri", self.uri)
            .finish_non_exhaustive()
    }
}

/// The future a [`Pricing`] hook returns: either a ready answer (no allocation; free routes
/// then cost next to nothing) or a boxed future for answers that need I/O.
pub struct PriceFuture(PriceFutureInner);

enum PriceFutureInner {
    Ready(Option<Priced>),
    Pending(BoxFuture<'static, Priced>),
}

impl PriceFuture {
    /// An answer known at once.
    pub fn ready(priced: Priced) -> Self {
        PriceFuture(PriceFutureInner::Ready(Some(priced)))
    }

    /// An answer that needs asynchronous work. The future owns what it needs from the request.
    pub fn new(future: impl Future<Output = Priced> + Send + 'static) -> Self {
        PriceFuture(PriceFutureInner::Pending(Box::pin(future)))
    }

    /// The answer if it is already known, else the future back.
    // Called once per request and moved straight on; boxing would cost more than the copy.
    #[allow(clippy::result_large_err)]
    pub(crate) fn into_ready(self) -> Result<Priced, PriceFuture> {
        match self.0 {
            PriceFutureInner::Ready(Some(priced)) => Ok(priced),
            other => Err(PriceFuture(other)),
        }
    }
}

impl Future for PriceFuture {
    type Output = Priced;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Priced> {
        match &mut self.get_mut().0 {
            // A ready answer polled twice is a caller bug; answering `Free` would give content
            // away, so a second poll stays pending forever instead.
            PriceFutureInner::Ready(priced) => match priced.take() {
                Some(priced) => Poll::Ready(priced),
                None => Poll::Pending,
            },
            PriceFutureInner::Pending(future) => future.as_mut().poll(cx),
        }
    }
}

impl fmt::Debug for PriceFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            PriceFutureInner::Ready(priced) => f.debug_tuple("Ready").field(priced).finish(),
            PriceFutureInner::Pending(_) => f.write_str("Pending"),
        }
    }
}

/// Decides what a request costs. Implemented for closures
/// `Fn(&PriceRequest<'_>) -> PriceFuture`; a fixed price is set with
/// [`PaymentLayerBuilder::price`](crate::PaymentLayerBuilder::price).
pub trait Pricing: Send + Sync + 'static {
    /// Prices one request.
    fn price(&self, request: &PriceRequest<'_>) -> PriceFuture;
}

impl<F> Pricing for F
where
    F: Fn(&PriceRequest<'_>) -> PriceFuture + Send + Sync + 'static,
{
    fn price(&self, request: &PriceRequest<'_>) -> PriceFuture {
        self(request)
    }
}

/// One fixed price for every request.
#[derive(Clone, Debug)]
pub(crate) struct FixedPrice(pub(crate) Price);

impl Pricing for FixedPrice {
    fn price(&self, _: &PriceRequest<'_>) -> PriceFuture {
        PriceFuture::ready(Priced::Charge(self.0.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(length: Option<&str>) -> http::request::Parts {
        let mut builder = http::Request::builder().uri("/blobs/a");
        if let Some(length) = length {
            builder = builder.header(http::header::CONTENT_LENGTH, length);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn content_length_is_read_from_the_head() {
        assert_eq!(
            PriceRequest::new(&parts(Some("1025")), None).content_length(),
            Some(1025)
        );
        assert_eq!(
            PriceRequest::new(&parts(Some("-1")), None).content_length(),
            None
        );
        assert_eq!(
            PriceRequest::new(&parts(Some("x")), None).content_length(),
            None
        );
        assert_eq!(PriceRequest::new(&parts(None), None).content_length(), None);
    }

    #[test]
    fn price_parses_display_amounts() {
        let price = Price::parse("$0.001").unwrap().with_description("a blob");
        assert_eq!(price.amount().atomic(), 10_000);
        assert_eq!(price.description(), Some("a blob"));
        assert!(Price::parse("-1").is_err());
    }

    #[tokio::test]
    async fn ready_and_pending_futures_answer() {
        let ready = PriceFuture::ready(Priced::Free);
        assert!(matches!(ready.into_ready(), Ok(Priced::Free)));
        let pending = PriceFuture::new(async { Priced::Charge(Price::parse("1").unwrap()) });
        let pending = pending.into_ready().unwrap_err();
        assert!(matches!(pending.await, Priced::Charge(_)));
    }
}
