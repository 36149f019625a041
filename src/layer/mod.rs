//! [`PaymentLayer`]: charge for requests to any tower service.
//!
//! For each request the layer reads a payment credential (if any), asks the
//! [`Pricing`](crate::Pricing) hook what the request costs, and then:
//!
//! - **free**: calls the inner service untouched (no allocation on this path);
//! - **early response**: answers it (404, 409, 411, 413 …) before any money moves;
//! - **no credential**: answers 402 with an offer from every scheme, or only the MPP ones for
//!   a client that sent `Accept-Payment` (see [Which protocols a 402
//!   speaks](#which-protocols-a-402-speaks));
//! - **a credential**: reserves the payment in the [`PaymentStore`](crate::PaymentStore),
//!   verifies it, and settles it in the route's [`SettlementOrder`](crate::SettlementOrder).
//!
//! The layer answers with a [`PaymentBody`] over the inner service's own body, any
//! `http_body::Body<Data = Bytes>` (axum's `Body`, tonic's `Body`, `http_body_util::Full<Bytes>`
//! …): free requests and paid answers pass through it untouched, trailers included, and the
//! layer's own answers are bodies it made. For the lowest cost on free routes,
//! wrap the whole router (`ServiceBuilder::new().layer(paywall).service(router)`) rather than
//! each route: axum boxes every per-route layer again.
//!
//! Paid requests carry [`Paid`] in their extensions, and with
//! [`SettlementOrder::InHandler`](crate::SettlementOrder::InHandler) a [`SettleGuard`] too.
//!
//! # Example
//!
//! ```
//! use axum::{Router, routing::get};
//! use tower_paywall::{PaymentLayer, Price, stellar::{Address, Network}, x402};
//!
//! let pay_to: Address = "GB2Q4VZJ32UM4F2EMZR2QVKT4YHIAKGBEV2UDYH7Q6DOZ6KCX5KHSBNB".parse()?;
//! let facilitator = x402::HttpFacilitator::builder("https://facilitator.example").build()?;
//! let exact = x402::Exact::builder(Network::testnet(), pay_to, facilitator).build()?;
//! let paywall = PaymentLayer::builder()
//!     .scheme(exact)
//!     .price(Price::parse("$0.001")?)
//!     .build()?;
//! let app: Router = Router::new()
//!     .route("/weather", get(|| async { "sunny" }))
//!     .layer(paywall);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Settlement orders
//!
//! | order | sequence | the handler's side effects when payment fails |
//! |---|---|---|
//! | `AfterSuccess` (default) | verify → handler → settle if status < 400 (and, for a gRPC call, no `grpc-status` other than 0 in the head); the response head waits for settlement | happened; the body is withheld (402) |
//! | `BeforeHandler` | verify → settle → handler | none: the handler never runs |
//! | `InHandler` | verify → handler → `guard.settle()` where the handler chooses → commit | whatever the handler did before settling |
//!
//! # Status codes
//!
//! | status | when | headers |
//! |---|---|---|
//! | 402 | no payment, an invalid one, or a failed settlement | the challenge of each protocol the client takes (`PAYMENT-REQUIRED`, `WWW-Authenticate`; [below](#which-protocols-a-402-speaks)); `PAYMENT-RESPONSE` after a failed x402 settlement |
//! | 400 | a malformed or oversized credential; a malformed or missing idempotency key ([below](#idempotency-keys)) | fresh challenge (none for a malformed `Idempotency-Key`) |
//! | 409 | the same payment is in use by a concurrent request, held by another credential, used by another request (`payment_already_used`, [below](#one-payment-one-request)), or its idempotency key was used for other terms | |
//! | 410 | what the payment names is gone (an MPP channel not served any more, or closing) | fresh challenge |
//! | 411, 413, 404 … | answered by the pricing hook before any money moves | |
//! | 502 | the facilitator or RPC answered with an error or garbage | |
//! | 503 | the facilitator, RPC or store is unreachable, or the settlement's outcome is not known yet: retry **with the same payment** | `Retry-After` |
//!
//! A retry of a completed payment gets the recorded response again, without a second settlement.
//!
//! # gRPC
//!
//! A gRPC client expects HTTP 200 with a `grpc-status`; most turn any other HTTP status into
//! `UNKNOWN` and lose the details (gRPC's own HTTP-to-gRPC table has no row for 402 or 409).
//! When a request's `content-type` is `application/grpc` (or `+proto`, `+json`, `-web`,
//! `-web+proto`, `-web-text` …), the layer answers it with a *Trailers-Only* response instead:
//! HTTP 200, the request's content type, `grpc-status`, `grpc-message` (`"Payment Required"`,
//! `"Conflict: payment_in_use"` …, percent-encoded) and `grpc-status-details-bin`, a
//! `google.rpc.Status` whose one detail is a `google.rpc.ErrorInfo` (`reason`: the answer's code
//! in `UPPER_SNAKE_CASE`, such as `PAYMENT_REQUIRED`; `domain`: `tower-paywall`; `metadata`:
//! `code` and `httpStatus`). Every header of the HTTP answer stays, as metadata: the offers
//! (`payment-required`, `www-authenticate`), `retry-after`. Credentials come in the request
//! metadata under the same names as the HTTP headers (`payment-signature`, `x-payment`,
//! `authorization`), and receipts (`payment-response`, `payment-receipt`) go back in the
//! response headers, the initial metadata. See [`grpc`] for the mapping itself.
//!
//! | HTTP answer | gRPC status | why |
//! |---|---|---|
//! | 402 | `RESOURCE_EXHAUSTED` (8) | gRPC's guide gives it to an exhausted per-user quota, and Google's APIs to billing limits; the x402 gRPC transport proposal and the one x402 gRPC gateway published use it for payment required. A client tells it from a library's own `RESOURCE_EXHAUSTED` (message size, flow control) by the `PAYMENT_REQUIRED` reason (or the rejection's) and the offers in the metadata |
//! | 400 | `INVALID_ARGUMENT` (3) | the credential is malformed whatever the server's state; libraries never generate it |
//! | 409 | `ABORTED` (10) | a concurrency conflict on the payment: retry at a higher level (a new payment, or later) |
//! | 410 | `FAILED_PRECONDITION` (9) | what the payment names (a channel) is gone: no retry helps until the client changes it |
//! | 502, 503 | `UNAVAILABLE` (14) | transient: retry **with the same payment** (`retry-after` says when); gRPC's table maps both to it |
//! | 404, 411, 413, 429 … (pricing's early answers) | `NOT_FOUND`, `INVALID_ARGUMENT`, `RESOURCE_EXHAUSTED`, `RESOURCE_EXHAUSTED` … | gRPC's nearest code ([`GrpcCode::of`](grpc::GrpcCode::of)) |
//!
//! Each method is a path (`/package.Service/Method`): price them in a pricing hook, and put the
//! layer on the tonic server (`Server::builder().layer(layer)`).
//!
//! ```
//! use tower_paywall::{PaymentLayer, Price, PriceFuture, PriceRequest, Priced};
//!
//! let pricing = |request: &PriceRequest<'_>| {
//!     let priced = match request.uri().path() {
//!         "/shop.Catalog/Buy" => Priced::Charge(Price::parse("0.01").unwrap()),
//!         "/shop.Catalog/Quote" => Priced::Charge(Price::parse("0.001").unwrap()),
//!         // Every other method (and the health and reflection services) is free.
//!         _ => Priced::Free,
//!     };
//!     PriceFuture::ready(priced)
//! };
//! let builder = PaymentLayer::builder().pricing(pricing);
//! # let _ = builder;
//! ```
//!
//! Streaming methods are priced per call like unary ones: the price comes from the call's head,
//! before any message, so a server-streaming call is answered "payment required" (or served,
//! paid) before its first message, with its receipt in the initial metadata, and a
//! client-streaming call before the server reads a message. A price by size
//! ([`content_length`](crate::PriceRequest::content_length)) works where the client sends
//! `content-length`, which gRPC clients rarely do (their messages are framed in the body). A
//! price per message of a client stream does not fit this seam: the price is fixed before the
//! messages exist, and a charge per message is a payment per message (a channel's vouchers),
//! not one per call. The paying side is [`client::PayingGrpcLayer`](crate::client) (feature
//! `client`), and `examples/tonic_quickstart.rs` runs both on the sandbox.
//!
//! After success, a gRPC call counts as failed (and is not settled) when its response head
//! carries a `grpc-status` other than `0`: the Trailers-Only form servers use for a call that
//! fails before its first message. Responses of the inner service are never changed.
//!
//! # Metered streams
//!
//! A price [`per`](crate::Price::per) a unit meters the response instead of charging the
//! request: a server-sent event stream ([`Unit::Event`](crate::Unit::Event)) draws on a
//! payment channel's credit event by event. Only a scheme that meters (MPP `channel`,
//! [`PaymentScheme::metering`](crate::PaymentScheme::metering)) is offered; its challenge
//! carries `unitType` and the price of one unit as `amount`.
//!
//! ```
//! use tower_paywall::{Price, Unit};
//!
//! // 0.001 USDC an event of the stream.
//! let price = Price::parse("0.001")?.per(Unit::Event);
//! # let _ = price;
//! # Ok::<(), tower_paywall::stellar::AmountError>(())
//! ```
//!
//! - **Opening.** The request carries a voucher raising the channel's cumulative amount by at
//!   least one unit. It is settled before the handler runs, and its increase is paid ahead: it
//!   becomes credit ([`ChannelState::unspent`](crate::store::ChannelState::unspent)). The
//!   opening credential is then used up, before the handler runs (a retry gets
//!   `409 payment_already_used`; a handler that fails leaves the credit to the channel's next
//!   stream); the stream is never recorded.
//! - **Streaming.** Each event that dispatches (it has a `data` line) is held until its units
//!   are drawn from the credit; comments (keep-alives) pass free. Nothing goes out beyond the
//!   credit. What an event holds depends on the unit: one ([`Unit::Event`](crate::Unit::Event)),
//!   its data's bytes ([`Unit::Byte`](crate::Unit::Byte)), or the count the handler wrote in
//!   its `units` field ([`Unit::Counted`](crate::Unit::Counted), such as model tokens: write
//!   events with [`counted_event`]; `units: 0` is free, an event without the field holds one,
//!   one with a field that is not a count ends the stream before it). An event dearer than
//!   the credit left waits whole: the request for a voucher asks for all of it.
//! - **More credit, in band.** When the credit runs out, the stream sends
//!   `event: payment-need-voucher` with `{"channelId", "requiredCumulative",
//!   "acceptedCumulative", "deposit"}` (mppx's session shape) and waits. The client pays ahead
//!   with a bodyless `POST` (or `HEAD`) of `Authorization: Payment <voucher>` to the same
//!   resource, echoing the challenge that opened the stream (a `GET` or a `POST` of it, even
//!   once expired: a voucher must raise the cumulative amount, so an old echo replays
//!   nothing); it is answered `204` with `Payment-Receipt`. Any increase counts, within the
//!   deposit; a voucher replayed or lowered is refused (`402`). A
//!   stream on another node sharing the channel store sees the credit within 250 ms; one on
//!   this node at once.
//! - **The end.** When the handler's stream ends, or no voucher came within 60 s
//!   ([`voucher_wait`](crate::PaymentLayerBuilder::voucher_wait)), the stream
//!   ends cleanly with `event: payment-receipt` (`acceptedCumulative`, `spent`, `units`). A
//!   client that hangs up pays only for what was sent: the credit not drawn goes back to the
//!   channel, for its next stream. A node that dies loses at most the credit its streams held
//!   (paid ahead, never delivered content).
//! - **Closing.** The channel's `spent` (cumulative minus unspent) is what content was
//!   delivered for; a client's `close` may settle for it (plus the close's own price).
//!
//! The MPP drafts call such a relationship a `session`; an `Accept-Payment` range naming it
//! (`stellar/session`) takes the `channel` offers.
//!
//! ## Over a WebSocket
//!
//! With the feature `websocket`, a metered route also answers a WebSocket upgrade (a `GET`
//! with `Upgrade: websocket` and no credential): the layer does the upgrade itself, and the
//! same handler's event stream goes out as messages, its payment carried on the socket in
//! mppx's session frames (`{"mpp": …}` text frames):
//!
//! | step | client → server | server → client |
//! |---|---|---|
//! | learn the offer | a plain `GET` of the route (`402`) | |
//! | open | `{"mpp":"authorization","authorization":"Payment …"}` (the opening voucher) | `payment-receipt`, or `payment-error` then close `1008` |
//! | stream | | `{"mpp":"message","data":…}`, an event's data each, a unit drawn for each |
//! | more credit | an `authorization` frame with the next voucher | `payment-need-voucher` when the credit runs out; `payment-receipt` for each voucher; `payment-error` then close `1008` for one refused |
//! | stop | `{"mpp":"payment-close-request"}` | |
//! | end | | `payment-close-ready` with the final receipt, then close `1000` |
//!
//! The handler sees the upgrade's request as a plain `GET` carrying the opening credential,
//! through the same flow as above (settled before it runs, used once). The end comes with the
//! handler's stream, a close request, or the voucher wait; a client that goes away pays for
//! what was sent. The client's other frames are ignored; the opening frame must come within
//! 10 s; keep-alive comments go out as pings; a receipt's `spent` leaves out the credit the
//! stream holds. The socket settles no `close` credential (close a channel over HTTP, or
//! let the operator close it). Serve with hyper's upgrades on
//! (`axum::serve` does; hyper-util's `auto::Builder` needs `serve_connection_with_upgrades`).
//! [`client::PaidSocket`](crate::client) reads such a socket, paying as it flows.
//!
//! # One payment, one request
//!
//! A payment's record is bound to the request that made it: the method, the path and query,
//! and every header the pricing hook read through [`PriceRequest::header`](crate::PriceRequest::header)
//! or [`content_length`](crate::PriceRequest::content_length), names and values. A retry of the
//! same request gets the recorded answer; the same credential on another request is refused:
//!
//! | the payment | on another request |
//! |---|---|
//! | completed, or settled and not answered yet | 409 `payment_already_used` (x402); MPP's challenges are bound to their method and path too, and a used one is `invalid-challenge` with a fresh offer |
//! | in use by a concurrent request | 409 `payment_in_use` |
//!
//! Headers read through [`PriceRequest::headers`](crate::PriceRequest::headers) do not bind: read
//! the ones a price depends on with `header`. The body is not bound (the layer never buffers
//! it); bind its length by pricing with `content_length`.
//!
//! # Idempotency keys
//!
//! A client that retries a logical request with a *new* payment (the official x402 client signs
//! a fresh one on every 402) can name the request with an idempotency key, so that the retry gets
//! the first answer instead of paying twice:
//!
//! - x402's `payment-identifier` extension, on routes whose [`Price`](crate::Price) declares it
//!   ([`with_payment_identifier`](crate::Price::with_payment_identifier): the 402 then carries
//!   `extensions["payment-identifier"]`, and with
//!   [`Required`](crate::PaymentIdentifier::Required) a payment without an id gets 400
//!   `payment_identifier_required`). The official helpers put the id (16 to 128 of
//!   `[A-Za-z0-9_-]`) in the payload; a malformed one gets 400 `invalid_payment_identifier`.
//! - the `Idempotency-Key` header (MPP asks servers to support it) on `POST` and `PATCH`, with
//!   any intent: 1 to 255 visible ASCII characters, bare or as a quoted string; a malformed one,
//!   or two, get 400 `invalid_idempotency_key`.
//!
//! The key is scoped to the payer the credential claims, and the payment is recorded under it
//! with its terms (intent, method, path and query, amount):
//!
//! | the key | same terms | other terms |
//! |---|---|---|
//! | is new | a new payment | a new payment |
//! | completed | the recorded answer and receipt; a new credential must verify first, and is never settled | 409 `idempotency_key_reused` |
//! | is in flight, or its outcome unknown | as a retry of that payment: 409 `payment_in_use`, or 503 `settlement_pending` after asking the ledger | 409 `idempotency_key_reused` |
//!
//! A completed key answers its recorded response even where pricing would now answer early
//! (the resource it paid to create exists), for the same method, path and intent at the
//! recorded amount. The credential presented with a new key is held for it before anything settles, so one
//! authorization never pays under two keys, nor once with a key and once without (409
//! `payment_held_by_another_credential`). A payment refused before it settled gives both back.
//!
//! ```
//! use tower_paywall::{PaymentIdentifier, Price};
//!
//! let price = Price::parse("$0.01")?.with_payment_identifier(PaymentIdentifier::Optional);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Reconciliation
//!
//! A settlement whose outcome is not known (the facilitator's or the RPC's answer was lost) is
//! not left to expire: each scheme leaves evidence in the payment's record before it settles,
//! and a retry of the payment asks the ledger how it ended.
//!
//! | the ledger says | the record becomes | the retry gets |
//! |---|---|---|
//! | the money moved | `Settled` (with the receipt) | the handler's answer, as if the settlement had answered |
//! | the money did not move and cannot any more | `Failed` | 402 with fresh offers and a code that says so (x402 `payment_not_settled`, MPP `settlement-failed`): pay again |
//! | not known yet | unchanged | 503 + `Retry-After`, as before |
//!
//! A payment is reconciled at most once per
//! [`reconcile_interval`](crate::PaymentLayerBuilder::reconcile_interval); a record still
//! `Settling` is reconciled once it is older than the settle wait (its process may be gone).
//! The end is recorded by compare-and-set, so nodes sharing a store agree on it. Payments
//! nobody retries are ended by the background reconciler
//! ([`PaymentLayer::reconciler`](crate::PaymentLayer::reconciler), which walks the store's
//! [`pending`](crate::PaymentStore::pending) payments), so the next retry is served at once.
//!
//! # Hooks
//!
//! An operator's [`PaymentHooks`] are told of offers, settlements, failed settlements, unknown
//! outcomes and reconciliations, and asked after each verification, before any money moves
//! (they may refuse with a response). They can neither break nor stall a payment: see
//! [`hooks`].
//!
//! # Metrics
//!
//! Offers, verifications, settlements (by intent and outcome), their latencies, the
//! settlements in flight and the reconciliations are counted through the `metrics` facade:
//! install any recorder to see them (the table is in [the `metrics` module](self::metrics)).
//!
//! # Traces
//!
//! The layer opens `tracing` spans with stable field names, filled in as the flow learns them;
//! no field ever holds a secret or a credential:
//!
//! | span | around | fields |
//! |---|---|---|
//! | `payment` | a priced request (free ones have none) | `intent` (`x402/exact`, `mpp/charge` …), `payer` (claimed, then verified), `amount` (atomic units), `asset` (verified), `outcome` (`settled`, `failed`, `unknown`, `refused`, `replayed`), `tx` (the settlement's reference) |
//! | `settle` | one settlement, inside `payment` (it may outlive the request) | `outcome`, `tx` |
//! | `reconcile` | asking the ledger how a pending payment ended | `intent`, `payer`, `amount`, `asset`, `outcome` (`settled`, `not_settled`, `unknown`), `tx` |
//!
//! Each settlement also ends with an event, `settlement ended`, carrying `intent`, `payer`,
//! `amount`, `asset`, `outcome` and `tx`.
//!
//! # Which protocols a 402 speaks
//!
//! `Accept-Payment` is MPP's request header (`method/intent` ranges with `q` weights; see
//! [`AcceptPayment`](crate::mpp::AcceptPayment)). mppx sends it with every request outside a
//! browser, and x402 clients never send it. So a request that carries a well-formed one comes
//! from an MPP client, and its 402 speaks MPP alone:
//!
//! | the request's `Accept-Payment` | the 402 carries |
//! |---|---|
//! | absent | every offer: x402's `PAYMENT-REQUIRED` header and body fields, and the MPP `WWW-Authenticate: Payment` challenges |
//! | well-formed (at least one usable `method/intent` element) | MPP alone: the challenges it accepts (`q` > 0), heaviest first, the server's order among equals; no `PAYMENT-REQUIRED`, no x402 body fields |
//! | well-formed, accepting none of the route's MPP challenges | MPP alone: every challenge it does not exclude with `q=0` (the draft lets a server ignore the header then), or all of them if it excludes them all |
//! | well-formed, on a route that makes no MPP offer | every offer (a 402 must offer something) |
//! | malformed (no usable element) or longer than [`MAX_ACCEPT_PAYMENT_LEN`](crate::mpp::MAX_ACCEPT_PAYMENT_LEN) | ignored, as if absent: every offer; never an error |
//!
//! A refused credential's own protocol always renders its fresh offer, whatever the header says
//! (the client just spoke it).
//!
//! Why x402 stays out of an MPP client's 402: mppx reads a `PAYMENT-REQUIRED` header found on
//! any 402 as x402 offers it may pay, under the MPP name `evm/charge`, and only on EVM networks
//! (`eip155:*`). mppx 0.6 (the line the Stellar MPP SDK supports) and 0.7 reject the whole 402
//! when an x402 offer names another network, such as `stellar:testnet`, before they read a single
//! `Payment` challenge; from 0.8 such offers are skipped, though 0.8 to 0.10 still reject a 402
//! whose x402 `resource.url` is not the URL they fetched (set
//! [`public_url`](crate::PaymentLayerBuilder::public_url) behind a proxy). No MPP draft and no
//! mppx version defines an `Accept-Payment` token asking for x402 offers on Stellar, so no value
//! of the header asks for ours.
//!
//! In a browser, mppx sends `Accept-Payment` only to its own origin by default. A browser client
//! paying another origin should set `acceptPaymentPolicy: 'always'`, and that origin's CORS
//! answer must allow the header (`Access-Control-Allow-Headers: Accept-Payment, Authorization`);
//! without the header it gets every offer, which mppx 0.6 and 0.7 cannot read.

mod binding;
mod body;
mod builder;
mod future;
pub mod grpc;
pub mod hooks;
mod idempotency;
mod meter;
pub mod metrics;
mod negotiate;
mod reconcile;
mod respond;
mod service;
mod settle;
#[cfg(feature = "websocket")]
mod websocket;

pub use body::PaymentBody;
#[cfg(feature = "websocket")]
pub use builder::DEFAULT_MAX_WAITING_SOCKETS;
pub use builder::{
    BuildError, DEFAULT_HOOK_TIMEOUT, DEFAULT_MAX_RECORDED_BODY, DEFAULT_RECONCILE_INTERVAL,
    DEFAULT_RECORD_TTL, DEFAULT_RETRY_AFTER, DEFAULT_SETTLE_WAIT, DEFAULT_VOUCHER_WAIT,
    PaymentLayer, PaymentLayerBuilder,
};
pub use future::ResponseFuture;
pub use hooks::{Offered, PaymentEvent, PaymentHooks, Verdict};
pub use meter::counted_event;
pub use reconcile::ReconcileReport;
pub use service::PaymentService;
pub use settle::{Paid, SettleError, SettleGuard};
