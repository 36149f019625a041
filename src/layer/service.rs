//! [`PaymentService`]: the payment flow around one inner service.

use std::cell::OnceCell;
use std::mem;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use tower_service::Service;

use super::PaymentBody;
use super::binding::RequestBinding;
use super::builder::Shared;
use super::future::ResponseFuture;
use super::grpc::{self, GrpcCall};
use super::hooks::{PaymentEvent, Verdict};
use super::idempotency::{self, Refused};
use super::reconcile::Ended;
use super::respond::{ReadCredential, code, head, plain, replay, resource};
use super::settle::{Paid, SettleGuard, Settled, Settlement};
use crate::price::{ClaimedPayer, HeaderReads, PriceRequest, Priced, SettlementOrder};
use crate::scheme::{PaymentContext, Rejection, RejectionKind};
use crate::store::{
    CompletedPayment, PaymentKey, PaymentState, PaymentStore, RecordedResponse, Reservation,
    SettledPayment, StateKind,
};

/// The service a [`PaymentLayer`](crate::PaymentLayer) wraps around an inner service.
#[derive(Clone)]
pub struct PaymentService<S> {
    pub(crate) inner: S,
    pub(crate) shared: Arc<Shared>,
}

impl<S> PaymentService<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> std::fmt::Debug for PaymentService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaymentService").finish_non_exhaustive()
    }
}

/// The request's credential, read when first needed.
struct LazyCredential<'a> {
    shared: &'a Shared,
    headers: &'a http::HeaderMap,
    read: OnceCell<ReadCredential>,
}

impl LazyCredential<'_> {
    fn get(&self) -> &ReadCredential {
        self.read.get_or_init(|| self.shared.read(self.headers))
    }

    fn into_credential(self) -> ReadCredential {
        match self.read.into_inner() {
            Some(read) => read,
            None => self.shared.read(self.headers),
        }
    }
}

impl ClaimedPayer for LazyCredential<'_> {
    fn claimed_payer(&self) -> Option<&str> {
        match self.get() {
            Some((_, Ok(credential))) => credential.payer(),
            _ => None,
        }
    }
}

impl Shared {
    /// The first credential a scheme accepts; else the first a scheme refuses; else none.
    pub(super) fn read(&self, headers: &http::HeaderMap) -> ReadCredential {
        let mut refused = None;
        for (index, scheme) in self.schemes.iter().enumerate() {
            match scheme.read(headers) {
                Some(Ok(credential)) => return Some((index, Ok(credential))),
                Some(Err(rejection)) if refused.is_none() => {
                    refused = Some((index, Err(rejection)))
                }
                Some(Err(_)) | None => {}
            }
        }
        refused
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for PaymentService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Send,
{
    type Response = Response<PaymentBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let lazy = LazyCredential {
            shared: &self.shared,
            headers: request.headers(),
            read: OnceCell::new(),
        };
        let reads = HeaderReads::default();
        let priced = self
            .shared
            .pricing
            .price(&PriceRequest::of(&request, &lazy, &reads));
        let priced = match priced.into_ready() {
            // Free: the service that was polled ready serves the request, untouched.
            Ok(Priced::Free) => return ResponseFuture::passthrough(self.inner.call(request)),
            Ok(priced) => Ok(priced),
            Err(pending) => Err(pending),
        };
        // What pricing read of the request binds its payment to it.
        let binding =
            RequestBinding::of(request.method(), request.uri(), request.headers(), &reads);
        let credential = lazy.into_credential();
        let grpc = GrpcCall::of(request.headers());
        // The flow calls the inner service later: take the ready one, leave a clone.
        let clone = self.inner.clone();
        let inner = mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        let (parts, body) = request.into_parts();
        // Fields filled in as the flow learns them (see the layer docs, "Traces").
        let span = tracing::info_span!(
            "payment",
            intent = tracing::field::Empty,
            payer = tracing::field::Empty,
            amount = tracing::field::Empty,
            asset = tracing::field::Empty,
            outcome = tracing::field::Empty,
            tx = tracing::field::Empty,
        );
        ResponseFuture::payment(Box::pin(tracing::Instrument::instrument(
            async move {
                let priced = match priced {
                    Ok(priced) => priced,
                    Err(pending) => pending.await,
                };
                let flow = Flow {
                    shared,
                    inner,
                    parts,
                    body,
                };
                let answer = flow.run(credential, priced, binding).await;
                // A gRPC client reads the layer's answers as gRPC statuses.
                match (grpc, answer) {
                    (Some(call), Ok(response)) => Ok(call.answer(response)),
                    (_, answer) => answer,
                }
            },
            span,
        )))
    }
}

/// The inner service's response, passed on untouched.
fn passed<B>(response: Response<B>) -> Response<PaymentBody<B>> {
    response.map(PaymentBody::inner)
}

/// One request's way through the layer.
struct Flow<S, ReqBody> {
    shared: Arc<Shared>,
    inner: S,
    parts: Parts,
    body: ReqBody,
}

type Answer<ResBody, E> = Result<Response<PaymentBody<ResBody>>, E>;

impl<S, ReqBody, ResBody> Flow<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Send,
{
    async fn run(
        #[allow(unused_mut)] mut self,
        credential: ReadCredential,
        priced: Priced,
        binding: RequestBinding,
    ) -> Answer<ResBody, S::Error> {
        let shared = self.shared.clone();
        let price = match priced {
            Priced::Free => return self.call_inner().await.map(passed),
            Priced::Respond(response) => {
                // A retry of a completed payment gets its recorded answer, even when pricing
                // would now answer early (the blob it paid to store exists now).
                if let Some(recorded) = shared.recorded(&self.parts, &credential, binding).await {
                    return Ok(replay(&recorded));
                }
                return Ok(response.map(PaymentBody::from));
            }
            Priced::Charge(price) => price,
        };
        // A metered route asked for a WebSocket: the socket carries the payment (its first
        // frame opens the stream).
        #[cfg(feature = "websocket")]
        if price.unit().is_some()
            && credential.is_none()
            && let Some(upgrade) = super::websocket::Upgrade::take(&mut self.parts)
        {
            let Ok(opening) = shared.openings.clone().try_acquire_owned() else {
                return Ok(super::websocket::Upgrade::busy());
            };
            let response = upgrade.response();
            let head = self.parts.clone();
            let (shared, terms) = (shared.clone(), price.clone());
            let open = move |authorization| self.socket_opened(authorization, price, binding);
            tokio::spawn(upgrade.serve(opening, shared, terms, head, open));
            return Ok(response);
        }
        let (index, credential) = match credential {
            None => return Ok(shared.challenge(&self.parts, &price, None).await),
            Some((_, Err(rejection))) => {
                return Ok(shared.rejected(&self.parts, &price, &rejection).await);
            }
            Some((index, Ok(credential))) => (index, credential),
        };
        let intent = shared.schemes[index].intent();
        if price.unit().is_some() {
            let Some(metering) = shared.schemes[index].metering() else {
                let rejection = Rejection::new(
                    RejectionKind::PaymentRequired,
                    intent.protocol,
                    code::METERED,
                );
                return Ok(shared.rejected(&self.parts, &price, &rejection).await);
            };
            // A voucher sent during a stream, on its resource, with no body: it pays ahead.
            if super::meter::pays_ahead(&self.parts) {
                return Ok(
                    match metering.pay_ahead(&credential, &self.parts, &price).await {
                        Ok(receipt) => super::meter::paid_ahead(&receipt),
                        Err(rejection) => shared.rejected(&self.parts, &price, &rejection).await,
                    },
                );
            }
        }
        let span = tracing::Span::current();
        span.record("intent", tracing::field::display(intent));
        span.record("amount", price.amount().atomic());
        if let Some(payer) = credential.payer() {
            span.record("payer", payer);
        }
        let declared = price.payment_identifier();
        let idempotent = match idempotency::of_request(&self.parts, declared, intent, &credential) {
            Ok(idempotent) => idempotent,
            Err(Refused::Rejection(rejection)) => {
                return Ok(shared.rejected(&self.parts, &price, &rejection).await);
            }
            Err(Refused::Header(reason)) => {
                return Ok(plain(StatusCode::BAD_REQUEST, reason, None));
            }
        };
        // Under an idempotency key, the payment is the key's, for the terms it was first used
        // for; otherwise the credential's own, for exactly this credential and this request.
        let (key, fingerprint) = match &idempotent {
            Some(idempotent) => (
                idempotent.key,
                idempotency::terms(intent, price.amount(), binding),
            ),
            None => (credential.key(), binding.bind(credential.fingerprint())),
        };
        let mut reservation = shared
            .store
            .reserve(key, fingerprint, shared.record_ttl)
            .await;
        // A payment whose settlement outcome is not known: ask the ledger how it ended.
        if let Ok(Reservation::Pending(_)) = reservation {
            match shared.reconcile(key).await {
                Ended::Settled => {
                    reservation = shared
                        .store
                        .reserve(key, fingerprint, shared.record_ttl)
                        .await;
                }
                Ended::NotSettled(rejection) => {
                    return Ok(shared.rejected(&self.parts, &price, &rejection).await);
                }
                Ended::Pending => {}
            }
        }
        // Another credential under a key that already paid must be the payer's own before it
        // is answered from that payment (it is verified, never settled).
        if let (Some(idempotent), Ok(Reservation::Replay(_) | Reservation::Resume(_))) =
            (&idempotent, &reservation)
            && !shared.holds(idempotent).await
        {
            let context = PaymentContext {
                request: &self.parts,
                price: &price,
                store: &*shared.store,
            };
            if let Err(rejection) = shared.schemes[index].verify(&credential, context).await {
                if let Ok(Reservation::Resume(_)) = reservation {
                    release(&*shared.store, key, None).await;
                }
                return Ok(shared.rejected(&self.parts, &price, &rejection).await);
            }
        }
        let hold = match reservation {
            Ok(Reservation::New) => {
                let hold = Hold::new(&shared, key);
                match idempotent {
                    None => hold,
                    Some(idempotent) => match shared.hold_credential(&idempotent).await {
                        Ok(true) => hold.holding(idempotent.credential_key),
                        Ok(false) => {
                            hold.release().await;
                            let rejection = shared.schemes[index].reused();
                            return Ok(shared.rejected(&self.parts, &price, &rejection).await);
                        }
                        Err(error) => {
                            hold.release().await;
                            tracing::error!(%error, "payment store unavailable");
                            return Ok(shared.unavailable(code::STORE_UNAVAILABLE));
                        }
                    },
                }
            }
            Ok(Reservation::Busy) => return Ok(shared.busy(code::PAYMENT_IN_USE)),
            Ok(Reservation::Mismatch) if idempotent.is_some() => {
                return Ok(shared.busy(idempotency::code::KEY_REUSED));
            }
            Ok(Reservation::Mismatch) => {
                let rejection = shared.schemes[index].reused();
                // A completed payment presented for another request bought that one; a scheme
                // that answers reuse with a conflict (x402) says so. One that offers a fresh
                // challenge instead (MPP: `invalid-challenge`) keeps its answer.
                if rejection.kind == RejectionKind::Conflict && shared.used(key).await {
                    return Ok(shared.busy(code::ALREADY_USED));
                }
                return Ok(shared.rejected(&self.parts, &price, &rejection).await);
            }
            Ok(Reservation::Pending(_)) => return Ok(shared.pending()),
            Ok(Reservation::Replay(completed)) => {
                span.record("outcome", "replayed");
                return Ok(shared.replay(&completed));
            }
            // A metered stream's opening is recorded used before its handler runs; one that
            // settled but was not recorded (a crash between the two) opens nothing more: its
            // credit is the channel's, for the next stream.
            Ok(Reservation::Resume(settled)) if price.unit().is_some() => {
                let hold = Hold::new(&shared, key);
                let completed = CompletedPayment {
                    settled,
                    response: None,
                };
                let completed = Arc::new(completed);
                record(hold, PaymentState::Completed(completed.clone())).await;
                return Ok(shared.replay(&completed));
            }
            Ok(Reservation::Resume(settled)) => {
                let hold = Hold::new(&shared, key);
                // The money moved for one price; it buys nothing dearer.
                if settled.paid.amount != price.amount() || settled.paid.intent != intent {
                    hold.release().await;
                    let mismatch = Rejection::new(
                        RejectionKind::PaymentRequired,
                        intent.protocol,
                        code::PRICE_MISMATCH,
                    );
                    return Ok(shared.rejected(&self.parts, &price, &mismatch).await);
                }
                return self
                    .resume(hold, settled, price.order().unwrap_or(shared.order))
                    .await;
            }
            Err(error) => {
                tracing::error!(%error, "payment store unavailable");
                return Ok(shared.unavailable(code::STORE_UNAVAILABLE));
            }
        };
        let scheme = shared.schemes[index].clone();
        let context = PaymentContext {
            request: &self.parts,
            price: &price,
            store: &*shared.store,
        };
        let started = std::time::Instant::now();
        let verified = scheme.verify(&credential, context).await;
        super::metrics::verified(scheme.intent(), verified.is_ok(), started.elapsed());
        let verified = match verified {
            Ok(verified) => {
                span.record("payer", verified.payer());
                span.record("asset", verified.asset());
                Arc::new(verified)
            }
            Err(rejection) => {
                span.record("outcome", "refused");
                hold.release().await;
                return Ok(shared.rejected(&self.parts, &price, &rejection).await);
            }
        };
        let paid = Paid {
            payer: verified.payer().to_owned(),
            amount: verified.amount(),
            asset: verified.asset().to_owned(),
            intent: scheme.intent(),
            reference: None,
        };
        let resource = resource(&self.parts);
        let event = PaymentEvent {
            paid: paid.clone(),
            resource: Some(resource.clone()),
            code: None,
        };
        if let Verdict::Refuse(refusal) = shared.hooks.verdict(event).await {
            hold.release().await;
            return Ok(refusal.map(PaymentBody::from));
        }
        let settlement = Settlement {
            shared: shared.clone(),
            scheme,
            verified,
            key,
            paid,
            resource,
        };
        let head = head(&self.parts);
        // A metered response draws on the credit its opening voucher paid ahead: settled first.
        let metered = price.unit().map(|unit| (unit, price.amount().atomic()));
        let order = match metered {
            Some(_) => SettlementOrder::BeforeHandler,
            None => price.order().unwrap_or(shared.order),
        };
        let answer = match order {
            SettlementOrder::AfterSuccess => self.after_success(hold, settlement).await?,
            SettlementOrder::BeforeHandler => {
                self.before_handler(hold, settlement, metered).await?
            }
            SettlementOrder::InHandler => self.in_handler(hold, settlement).await?,
        };
        Ok(match answer {
            Answered::Response(response) => response,
            Answered::Refused(rejection) => shared.rejected(&head, &price, &rejection).await,
        })
    }

    /// A metered WebSocket's opening: the upgrade's request, as a `GET` carrying the
    /// credential of the socket's first frame, through the flow.
    #[cfg(feature = "websocket")]
    fn socket_opened(
        mut self,
        authorization: http::HeaderValue,
        price: crate::price::Price,
        binding: RequestBinding,
    ) -> crate::BoxFuture<'static, Answer<ResBody, S::Error>> {
        super::websocket::strip_upgrade(&mut self.parts.headers);
        self.parts
            .headers
            .insert(http::header::AUTHORIZATION, authorization);
        let credential = self.shared.read(&self.parts.headers);
        Box::pin(self.run(credential, Priced::Charge(price), binding))
    }

    async fn call_inner(mut self) -> Result<Response<ResBody>, S::Error> {
        self.inner
            .call(Request::from_parts(self.parts, self.body))
            .await
    }

    /// Verify → handler → settle if the handler succeeded.
    async fn after_success(
        self,
        hold: Hold,
        settlement: Settlement,
    ) -> AnswerOr<ResBody, S::Error> {
        let shared = self.shared.clone();
        executing(&shared, settlement.key).await;
        let response = self.with(settlement.paid.clone()).call_inner().await?;
        if grpc::failed(response.status(), response.headers()) {
            hold.release().await;
            return Ok(Answered::Response(passed(response)));
        }
        let settled = settlement.run(StateKind::Executing).await;
        Ok(finish(&shared, hold, settled, response).await)
    }

    /// Verify → settle → handler; a metered response (`unit_price`) draws on the credit the
    /// settlement paid ahead.
    async fn before_handler(
        self,
        hold: Hold,
        settlement: Settlement,
        unit_price: Option<(crate::price::Unit, i128)>,
    ) -> AnswerOr<ResBody, S::Error> {
        let shared = self.shared.clone();
        let source = unit_price.and_then(|_| {
            let metering = settlement.scheme.metering()?;
            metering.credit(&settlement.verified)
        });
        let settled = match settlement.run(StateKind::Reserved).await {
            Settled::Done(settled) => settled,
            other => return Ok(not_settled(&shared, hold, other).await),
        };
        if let (Some((unit, price)), Some(source)) = (unit_price, source) {
            // Paid ahead: the credential is used up before the handler runs, so that no retry
            // of it gets a stream again (a handler that fails leaves the credit to the channel).
            let completed = CompletedPayment {
                settled: settled.clone(),
                response: None,
            };
            record(hold, PaymentState::Completed(Arc::new(completed))).await;
            let response = self.with(settled.paid.clone()).call_inner().await?;
            if !response.status().is_success() {
                return Ok(Answered::Response(passed(response)));
            }
            let wait = shared.voucher_wait;
            return Ok(Answered::Response(metered(
                &settled,
                response,
                source,
                super::meter::Meter { unit, price },
                wait,
            )));
        }
        let response = self.with(settled.paid.clone()).call_inner().await?;
        Ok(complete(&shared, hold, settled, response).await)
    }

    /// Verify → handler, which settles through its guard; settle afterwards if it did not.
    async fn in_handler(self, hold: Hold, settlement: Settlement) -> AnswerOr<ResBody, S::Error> {
        let shared = self.shared.clone();
        executing(&shared, settlement.key).await;
        let paid = settlement.paid.clone();
        let guard = SettleGuard::new(settlement);
        let response = self.with(paid).with(guard.clone()).call_inner().await?;
        let settled = match guard.outcome() {
            Some(settled) => settled.clone(),
            None if grpc::failed(response.status(), response.headers()) => {
                hold.release().await;
                return Ok(Answered::Response(passed(response)));
            }
            // The handler succeeded without settling: settle now, as after success.
            None => {
                // The outcome is read back below, whichever it is.
                let _ = guard.settle().await;
                guard.outcome().cloned().unwrap_or(Settled::Pending)
            }
        };
        Ok(finish(&shared, hold, settled, response).await)
    }

    /// A retry of a payment whose money moved but whose response was not recorded: run the
    /// handler again, never settle again.
    async fn resume(
        self,
        hold: Hold,
        settled: Arc<SettledPayment>,
        order: SettlementOrder,
    ) -> Answer<ResBody, S::Error> {
        let shared = self.shared.clone();
        let mut flow = self.with(settled.paid.clone());
        if order == SettlementOrder::InHandler {
            flow = flow.with(SettleGuard::settled(settled.clone()));
        }
        let response = flow.call_inner().await?;
        match complete(&shared, hold, settled, response).await {
            Answered::Response(response) => Ok(response),
            // `complete` never refuses.
            Answered::Refused(rejection) => {
                Ok(plain(rejection.kind.status(), &rejection.code, None))
            }
        }
    }

    fn with<T: Clone + Send + Sync + 'static>(mut self, extension: T) -> Self {
        self.parts.extensions.insert(extension);
        self
    }
}

enum Answered<ResBody> {
    Response(Response<PaymentBody<ResBody>>),
    /// Answer with a fresh challenge for this rejection (rendered with the request head).
    Refused(Rejection),
}

type AnswerOr<ResBody, E> = Result<Answered<ResBody>, E>;

async fn executing(shared: &Shared, key: PaymentKey) {
    let moved = shared
        .store
        .transition(key, StateKind::Reserved, PaymentState::Executing(None))
        .await;
    if !matches!(moved, Ok(true)) {
        tracing::warn!(key = ?key, "payment was not in the reserved state before the handler");
    }
}

/// The handler has answered; `settled` says what became of the money.
async fn finish<ResBody>(
    shared: &Shared,
    hold: Hold,
    settled: Settled,
    response: Response<ResBody>,
) -> Answered<ResBody>
where
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Send,
{
    match settled {
        Settled::Done(settled) => complete(shared, hold, settled, response).await,
        other => not_settled(shared, hold, other).await,
    }
}

/// The money did not move (or nobody knows): the handler's response is withheld.
async fn not_settled<ResBody>(shared: &Shared, hold: Hold, settled: Settled) -> Answered<ResBody> {
    // Settling, failed and unknown payments are left as recorded; a payment the settlement
    // never claimed (the store failed) is given back.
    hold.release().await;
    match settled {
        Settled::Refused(rejection) => Answered::Refused(rejection),
        // Nobody knows whether the money moved: the client retries with the same payment.
        Settled::Unknown(rejection) => Answered::Response(shared.unavailable(&rejection.code)),
        Settled::Pending | Settled::Done(_) => Answered::Response(shared.pending()),
    }
}

/// The money moved: add the receipt and record the response for retries.
async fn complete<ResBody>(
    shared: &Shared,
    hold: Hold,
    settled: Arc<SettledPayment>,
    response: Response<ResBody>,
) -> Answered<ResBody>
where
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Send,
{
    let (mut parts, body) = response.into_parts();
    for (name, value) in &settled.receipt.headers {
        parts.headers.append(name.clone(), value.clone());
    }
    // A server error after payment is not recorded: the retry runs the handler again without
    // paying again.
    if parts.status.is_server_error() {
        hold.release().await;
        return Answered::Response(Response::from_parts(parts, PaymentBody::inner(body)));
    }
    // A gRPC answer ends with trailers (its `grpc-status`), and may stream: it is recorded as
    // it passes, trailers included, once it ended whole.
    if GrpcCall::of(&parts.headers).is_some() {
        let recorder = Recorder {
            hold: Some(hold),
            settled,
            status: parts.status,
            headers: parts.headers.clone(),
            data: BytesMut::new(),
            cap: shared.max_recorded_body,
            over: false,
            trailers: None,
        };
        let body = PaymentBody::recorded(body, Box::new(recorder));
        return Answered::Response(Response::from_parts(parts, body));
    }
    let recordable = body
        .size_hint()
        .upper()
        .is_some_and(|upper| upper <= shared.max_recorded_body as u64);
    if !recordable {
        let completed = CompletedPayment {
            settled,
            response: None,
        };
        record(hold, PaymentState::Completed(Arc::new(completed))).await;
        return Answered::Response(Response::from_parts(parts, PaymentBody::inner(body)));
    }
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            hold.release().await;
            return Answered::Response(plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                code::RESPONSE_FAILED,
                None,
            ));
        }
    };
    let recorded = RecordedResponse {
        status: parts.status,
        headers: parts.headers.clone(),
        body: bytes.clone(),
        trailers: None,
    };
    let completed = CompletedPayment {
        settled,
        response: Some(recorded),
    };
    record(hold, PaymentState::Completed(Arc::new(completed))).await;
    Answered::Response(Response::from_parts(parts, PaymentBody::from(bytes)))
}

/// A metered answer: the receipt of its opening voucher, and its body drawing on `source`
/// (its length is the meter's now: the inner one's is dropped).
fn metered<ResBody>(
    settled: &SettledPayment,
    response: Response<ResBody>,
    source: Arc<dyn crate::scheme::CreditSource>,
    meter: super::meter::Meter,
    voucher_wait: std::time::Duration,
) -> Response<PaymentBody<ResBody>>
where
    ResBody: Body<Data = Bytes> + Send + 'static,
{
    let (mut parts, body) = response.into_parts();
    for (name, value) in &settled.receipt.headers {
        parts.headers.append(name.clone(), value.clone());
    }
    parts.headers.remove(http::header::CONTENT_LENGTH);
    #[cfg(feature = "websocket")]
    parts
        .extensions
        .insert(super::meter::StreamCredit(source.clone()));
    let body = super::meter::MeteredBody::new(Box::pin(body), source, meter, voucher_wait);
    Response::from_parts(parts, PaymentBody::metered(body))
}

/// Records a streamed answer as it passes (see [`PaymentBody::recorded`]): the whole of it,
/// trailers included, when it ends within the recording limit; only that it completed when it
/// is larger. A body dropped before its end records nothing, and its hold gives the payment
/// back as settled: a retry runs the handler again without paying again.
struct Recorder {
    hold: Option<Hold>,
    settled: Arc<SettledPayment>,
    status: StatusCode,
    headers: http::HeaderMap,
    data: bytes::BytesMut,
    cap: usize,
    over: bool,
    trailers: Option<http::HeaderMap>,
}

impl super::body::Recording for Recorder {
    fn data(&mut self, data: &Bytes) {
        if self.over {
            return;
        }
        if self.data.len() + data.len() > self.cap {
            self.over = true;
            self.data = bytes::BytesMut::new();
        } else {
            self.data.extend_from_slice(data);
        }
    }

    fn trailers(&mut self, trailers: &http::HeaderMap) {
        self.trailers = Some(trailers.clone());
    }

    fn end(mut self: Box<Self>) {
        let Some(hold) = self.hold.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let response = (!self.over).then(|| RecordedResponse {
            status: self.status,
            headers: std::mem::take(&mut self.headers),
            body: std::mem::take(&mut self.data).freeze(),
            trailers: self.trailers.take(),
        });
        let completed = CompletedPayment {
            settled: self.settled.clone(),
            response,
        };
        let state = PaymentState::Completed(Arc::new(completed));
        runtime.spawn(record(hold, state));
    }
}

/// Records the end of the payment `hold` owns.
async fn record(hold: Hold, state: PaymentState) {
    let store = hold.store.clone();
    let key = hold.disarm();
    if let Err(error) = store.transition(key, StateKind::Executing, state).await {
        tracing::error!(%error, key = ?key, "cannot record completed payment");
    }
}

/// Owns a reserved payment; gives it back if the request ends without deciding (the client hung
/// up, the handler errored or panicked).
///
/// A payment made under an idempotency key also holds its credential's own payment, given back
/// with it when nothing moved (its record is gone after the release).
struct Hold {
    store: Arc<dyn PaymentStore>,
    key: PaymentKey,
    credential: Option<PaymentKey>,
    armed: bool,
}

impl Hold {
    fn new(shared: &Shared, key: PaymentKey) -> Self {
        Hold {
            store: shared.store.clone(),
            key,
            credential: None,
            armed: true,
        }
    }

    fn holding(mut self, credential: PaymentKey) -> Self {
        self.credential = Some(credential);
        self
    }

    async fn release(mut self) {
        self.armed = false;
        release(&*self.store, self.key, self.credential).await;
    }

    fn disarm(mut self) -> PaymentKey {
        self.armed = false;
        self.key
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (store, key, credential) = (self.store.clone(), self.key, self.credential);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { release(&*store, key, credential).await });
        }
    }
}

/// Gives back `key`, and the credential's payment held for it once `key`'s record is gone.
async fn release(store: &dyn PaymentStore, key: PaymentKey, credential: Option<PaymentKey>) {
    if let Err(error) = store.release(key).await {
        tracing::error!(%error, key = ?key, "cannot release payment");
        return;
    }
    let Some(credential) = credential else {
        return;
    };
    match store.record(key).await {
        Ok(None) => {
            if let Err(error) = store.release(credential).await {
                tracing::error!(%error, key = ?credential, "cannot release a held credential");
            }
        }
        Ok(Some(_)) => {}
        Err(error) => tracing::error!(%error, key = ?key, "cannot read a released payment"),
    }
}
