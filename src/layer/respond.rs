//! The answers the layer writes itself: 402 challenges, rejections, conflicts, replays.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, RETRY_AFTER, VARY};
use http::request::Parts;
use http::{HeaderValue, Response, StatusCode};

use super::PaymentBody;
use super::builder::Shared;
use super::hooks::Offered;
use crate::price::Price;
use crate::scheme::Credential;
use crate::scheme::{Challenge, ChallengeContext, Offer, Rejection, RejectionKind};
use crate::store::{CompletedPayment, PaymentState, RecordedResponse};

/// A credential as the layer read it.
pub(crate) type ReadCredential = Option<(usize, Result<Credential, Rejection>)>;

const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

/// Layer-level reasons, sent as `{"error": <code>}`.
pub(crate) mod code {
    /// A payment is required (the fresh offers are in the answer).
    pub(crate) const PAYMENT_REQUIRED: &str = "payment_required";
    /// Another request is using the same payment.
    pub(crate) const PAYMENT_IN_USE: &str = "payment_in_use";
    /// The payment's settlement is in flight or its outcome unknown: retry with the same payment.
    pub(crate) const SETTLEMENT_PENDING: &str = "settlement_pending";
    /// The payment store could not be reached.
    pub(crate) const STORE_UNAVAILABLE: &str = "payment_store_unavailable";
    /// No scheme could make an offer.
    pub(crate) const NO_OFFER: &str = "no_payment_offer_available";
    /// The payment completed; its response was too large to record and is not sent again.
    pub(crate) const ALREADY_USED: &str = "payment_already_used";
    /// A settled payment was presented for a request with another price.
    pub(crate) const PRICE_MISMATCH: &str = "payment_settled_for_another_price";
    /// The response body failed after the payment settled.
    pub(crate) const RESPONSE_FAILED: &str = "response_failed";
    /// A route priced per unit takes only a scheme that meters (a payment channel).
    pub(crate) const METERED: &str = "metered_route_needs_a_channel";
}

impl Shared {
    /// The absolute URL of the requested resource, for the 402.
    pub(crate) fn resource_url(&self, request: &Parts) -> String {
        let path = request.uri.path_and_query().map_or("/", |p| p.as_str());
        if let Some(base) = &self.public_url {
            return format!("{base}{path}");
        }
        let scheme = request.uri.scheme_str().unwrap_or("http");
        let authority = request
            .uri
            .authority()
            .cloned()
            .or_else(|| request.headers.get(HOST)?.to_str().ok()?.parse().ok());
        match authority {
            Some(authority) => format!("{scheme}://{authority}{path}"),
            None => format!("{scheme}://localhost{path}"),
        }
    }

    /// Answers a request without an acceptable payment: 402 (or the rejection's status) with a
    /// fresh offer from every scheme the client's `Accept-Payment` leaves
    /// ([`negotiate`](super::negotiate)).
    pub(crate) async fn challenge<B: From<Bytes>>(
        &self,
        request: &Parts,
        price: &Price,
        rejection: Option<&Rejection>,
    ) -> Response<B> {
        let mut offers: Vec<(usize, Offer)> = Vec::with_capacity(self.schemes.len());
        for (index, scheme) in self.schemes.iter().enumerate() {
            // A route priced per unit is paid through a scheme that meters, or not at all.
            if price.unit().is_some() && scheme.metering().is_none() {
                continue;
            }
            match scheme.offer(price, request).await {
                Ok(offer) => offers.push((index, offer)),
                Err(refused) => {
                    tracing::warn!(intent = %scheme.intent(), code = %refused.code, "scheme made no offer");
                }
            }
        }
        super::negotiate::negotiate(&request.headers, &mut offers, rejection);
        if offers.is_empty() {
            // Nothing to offer instead; a refusal that is not "pay" keeps its own status.
            if let Some(rejection) = rejection.filter(|r| r.kind != RejectionKind::PaymentRequired)
            {
                return plain(rejection.kind.status(), &rejection.code, None);
            }
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                code::NO_OFFER,
                Some(self.retry_after),
            );
        }
        let resource_url = self.resource_url(request);
        let context = ChallengeContext {
            request,
            resource_url: &resource_url,
            price,
            rejection,
        };
        let mut challenge = Challenge::default();
        let mut rendered: Vec<&'static str> = Vec::new();
        for (index, offer) in &offers {
            let protocol = offer.intent().protocol;
            if rendered.contains(&protocol) {
                continue;
            }
            rendered.push(protocol);
            let same_protocol: Vec<&Offer> = offers
                .iter()
                .map(|(_, offer)| offer)
                .filter(|offer| offer.intent().protocol == protocol)
                .collect();
            self.schemes[*index].challenge(&same_protocol, &context, &mut challenge);
        }
        let status = match rejection.map(|r| r.kind) {
            Some(kind @ (RejectionKind::BadRequest | RejectionKind::Gone)) => kind.status(),
            _ => StatusCode::PAYMENT_REQUIRED,
        };
        super::metrics::payment_required();
        let intents = offers.iter().map(|(_, offer)| offer.intent()).collect();
        let (amount, resource) = (price.amount(), resource(request));
        self.hooks.notify(move |hooks| {
            hooks.on_offered(Offered {
                intents,
                amount,
                resource,
            })
        });
        let body = serde_json::to_vec(&challenge.body).unwrap_or_default();
        let mut response = Response::new(B::from(Bytes::from(body)));
        *response.status_mut() = status;
        let answer_code = rejection.map_or(code::PAYMENT_REQUIRED, |r| &*r.code);
        response
            .extensions_mut()
            .insert(super::grpc::AnswerCode(answer_code.to_owned()));
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            challenge.content_type.unwrap_or(APPLICATION_JSON),
        );
        // Which offers render depends on the request's `Accept-Payment`.
        headers.append(VARY, HeaderValue::from_static("Accept-Payment"));
        // A header's further values come with no name: they belong to the last one named.
        let mut last = None;
        for (name, value) in challenge.headers {
            if let Some(name) = name {
                last = Some(name);
            }
            if let Some(name) = &last {
                headers.append(name.clone(), value);
            }
        }
        if let Some(rejection) = rejection {
            for (name, value) in &rejection.headers {
                headers.append(name.clone(), value.clone());
            }
        }
        response
    }

    /// Answers a refused payment: a fresh challenge for 402, 400 and 410, a plain error otherwise.
    pub(crate) async fn rejected<B: From<Bytes>>(
        &self,
        request: &Parts,
        price: &Price,
        rejection: &Rejection,
    ) -> Response<B> {
        match rejection.kind {
            RejectionKind::PaymentRequired | RejectionKind::BadRequest | RejectionKind::Gone => {
                self.challenge(request, price, Some(rejection)).await
            }
            RejectionKind::BadGateway => plain(StatusCode::BAD_GATEWAY, &rejection.code, None),
            RejectionKind::Conflict => plain(StatusCode::CONFLICT, &rejection.code, None),
            RejectionKind::Unavailable => plain(
                StatusCode::SERVICE_UNAVAILABLE,
                &rejection.code,
                Some(self.retry_after),
            ),
        }
    }

    /// 409: the payment is held by another request or another credential.
    pub(crate) fn busy<B: From<Bytes>>(&self, reason: &str) -> Response<B> {
        plain(StatusCode::CONFLICT, reason, None)
    }

    /// The answer recorded for a completed payment; 409 with the receipt when its body was too
    /// large to record (the content was delivered once and is not delivered again).
    pub(crate) fn replay<B>(&self, completed: &CompletedPayment) -> Response<PaymentBody<B>> {
        if let Some(recorded) = &completed.response {
            return replay(recorded);
        }
        let mut response = plain(StatusCode::CONFLICT, code::ALREADY_USED, None);
        for (name, value) in &completed.settled.receipt.headers {
            response.headers_mut().append(name.clone(), value.clone());
        }
        response
    }

    /// The recorded response of a completed payment presented again, for a request that
    /// pricing answers early now (the blob it paid to store exists): with the same credential,
    /// or under the same idempotency key for the same request (its terms taken at the recorded
    /// payment's amount, since pricing quoted none), once a new credential verifies.
    pub(crate) async fn recorded(
        &self,
        request: &Parts,
        credential: &ReadCredential,
        binding: super::binding::RequestBinding,
    ) -> Option<RecordedResponse> {
        let Some((index, Ok(credential))) = credential else {
            return None;
        };
        if let Ok(Some(record)) = self.store.record(credential.key()).await
            && record.fingerprint == binding.bind(credential.fingerprint())
        {
            return match record.state {
                PaymentState::Completed(completed) => completed.response.clone(),
                _ => None,
            };
        }
        // A key held for an idempotent payment: that payment's record answers.
        let scheme = &self.schemes[*index];
        let intent = scheme.intent();
        // Pricing quoted nothing: any key that was recorded was declared where it was paid.
        let declared = crate::price::PaymentIdentifier::Optional;
        let idempotent =
            super::idempotency::of_request(request, declared, intent, credential).ok()??;
        let record = self.store.record(idempotent.key).await.ok()??;
        let PaymentState::Completed(completed) = record.state else {
            return None;
        };
        let paid = completed.settled.paid.amount;
        if record.fingerprint != super::idempotency::terms(intent, paid, binding) {
            return None;
        }
        if !self.holds(&idempotent).await {
            let price = Price::new(paid);
            let context = crate::scheme::PaymentContext {
                request,
                price: &price,
                store: &*self.store,
            };
            scheme.verify(credential, context).await.ok()?;
        }
        completed.response.clone()
    }

    /// Whether `key`'s money moved (the payment completed, or settled and awaits its answer).
    pub(crate) async fn used(&self, key: crate::store::PaymentKey) -> bool {
        matches!(
            self.store.record(key).await,
            Ok(Some(record)) if matches!(
                record.state,
                PaymentState::Completed(_)
                    | PaymentState::Settled(_)
                    | PaymentState::Executing(Some(_))
            )
        )
    }

    /// 503 + `Retry-After`: retry with the same payment.
    pub(crate) fn pending<B: From<Bytes>>(&self) -> Response<B> {
        plain(
            StatusCode::SERVICE_UNAVAILABLE,
            code::SETTLEMENT_PENDING,
            Some(self.retry_after),
        )
    }

    /// 503 + `Retry-After` with a specific reason.
    pub(crate) fn unavailable<B: From<Bytes>>(&self, reason: &str) -> Response<B> {
        plain(
            StatusCode::SERVICE_UNAVAILABLE,
            reason,
            Some(self.retry_after),
        )
    }
}

/// A JSON error answer `{"error": <code>}`.
pub(crate) fn plain<B: From<Bytes>>(
    status: StatusCode,
    code: &str,
    retry_after: Option<std::time::Duration>,
) -> Response<B> {
    let body = serde_json::to_vec(&serde_json::json!({ "error": code })).unwrap_or_default();
    let mut response = Response::new(B::from(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .extensions_mut()
        .insert(super::grpc::AnswerCode(code.to_owned()));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, APPLICATION_JSON);
    if let Some(after) = retry_after {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(after.as_secs()));
    }
    response
}

/// A recorded response, replayed (with its trailers, when it had some).
pub(crate) fn replay<B>(recorded: &RecordedResponse) -> Response<PaymentBody<B>> {
    let body = PaymentBody::made(recorded.body.clone(), recorded.trailers.clone());
    let mut response = Response::new(body);
    *response.status_mut() = recorded.status;
    *response.headers_mut() = recorded.headers.clone();
    response
}

/// The request as hooks name it: method and path (`GET /joke`).
pub(crate) fn resource(request: &Parts) -> String {
    format!("{} {}", request.method, request.uri.path())
}

/// A copy of the request head without its extensions, kept to answer after the request moved
/// into the handler.
pub(crate) fn head(parts: &Parts) -> Parts {
    let (mut head, ()) = http::Request::new(()).into_parts();
    head.method = parts.method.clone();
    head.uri = parts.uri.clone();
    head.version = parts.version;
    head.headers = parts.headers.clone();
    head
}
