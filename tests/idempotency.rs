//! Idempotency keys at the layer: x402's `payment-identifier` extension and the
//! `Idempotency-Key` header. The facilitator is the test double of `support` (it proves how the
//! layer answers; a real one is used by `sandbox_x402.rs` and the interop suite).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::routing::{get, post};
use http::{HeaderValue, Request, StatusCode};
use support::*;
use tower_paywall::x402::PaymentRequired;
use tower_paywall::{PaymentIdentifier, PaymentLayer, Price, PriceFuture, PriceRequest, Priced};

const ID: &str = "pay_7d5d747be160e280504c099d984bcfe0";

struct Harness {
    facilitator: Arc<TestFacilitator>,
    app: Router,
    calls: Arc<AtomicUsize>,
}

impl Harness {
    /// `/paid` and `/dear` (twice the price) declare the extension as `declared`; `/post`
    /// takes `POST`s; `/plain` declares nothing.
    fn new(declared: PaymentIdentifier) -> Self {
        let facilitator = Arc::new(TestFacilitator::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let pricing = move |request: &PriceRequest<'_>| {
            let price = Price::parse(PRICE).unwrap();
            PriceFuture::ready(Priced::Charge(match request.uri().path() {
                "/plain" | "/post" => price,
                "/dear" => Price::new(price.amount().checked_add(price.amount()).unwrap())
                    .with_payment_identifier(declared),
                _ => price.with_payment_identifier(declared),
            }))
        };
        let layer = PaymentLayer::builder()
            .scheme(exact(&facilitator))
            .pricing(pricing)
            .build()
            .unwrap();
        let counter = calls.clone();
        let handler = move || {
            let counter = counter.clone();
            async move { format!("answer {}", counter.fetch_add(1, Ordering::SeqCst)) }
        };
        let app = Router::new()
            .route("/paid", get(handler.clone()))
            .route("/dear", get(handler.clone()))
            .route("/plain", get(handler.clone()))
            .route("/post", post(handler.clone()).get(handler))
            .layer(layer);
        Harness {
            facilitator,
            app,
            calls,
        }
    }

    async fn pay(&self, path: &str, spec: &PaymentSpec, id: Option<&str>) -> Answer {
        send(&self.app, req(path, Some(with_id(spec, id)))).await
    }

    /// (handler runs, verifications, settlements)
    fn counts(&self) -> (usize, usize, usize) {
        (
            self.calls.load(Ordering::SeqCst),
            self.facilitator.verify_calls(),
            self.facilitator.settle_calls(),
        )
    }
}

/// A payment whose payload carries `id` the way the official client helpers put it: the
/// server's declaration echoed with `info.id` added.
fn with_id(spec: &PaymentSpec, id: Option<&str>) -> HeaderValue {
    let mut payload: serde_json::Value =
        serde_json::from_str(&payload_json(spec, &envelope(spec))).unwrap();
    if let Some(id) = id {
        let mut extension = tower_paywall::x402::payment_identifier::declaration(false);
        extension["info"]["id"] = id.into();
        payload["extensions"] = serde_json::json!({ "payment-identifier": extension });
    }
    encode_header(&payload.to_string())
}

fn other_nonce(nonce: i64) -> PaymentSpec {
    PaymentSpec {
        nonce,
        ..Default::default()
    }
}

fn payment_required(answer: &Answer) -> PaymentRequired {
    decode_header(answer.headers.get("payment-required").unwrap())
}

#[tokio::test]
async fn the_402_declares_the_extension_where_the_route_takes_it() {
    for (declared, required) in [
        (PaymentIdentifier::Optional, Some(false)),
        (PaymentIdentifier::Required, Some(true)),
        (PaymentIdentifier::Off, None),
    ] {
        let h = Harness::new(declared);
        let answer = send(&h.app, req("/paid", None)).await;
        assert_eq!(answer.status, StatusCode::PAYMENT_REQUIRED);
        let header = payment_required(&answer);
        let in_header = header
            .extensions
            .as_ref()
            .map(|extensions| extensions["payment-identifier"]["info"]["required"].clone());
        assert_eq!(
            in_header,
            required.map(serde_json::Value::from),
            "{declared:?}"
        );
        assert_eq!(
            answer.json().get("extensions").cloned(),
            header.extensions.map(serde_json::Value::Object),
            "the body says what the header says"
        );
        let plain = send(&h.app, req("/plain", None)).await;
        assert!(payment_required(&plain).extensions.is_none());
    }
}

#[tokio::test]
async fn a_retry_with_a_new_payment_and_the_same_id_gets_the_first_answer() {
    let h = Harness::new(PaymentIdentifier::Optional);
    let first = h.pay("/paid", &PaymentSpec::default(), Some(ID)).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    assert_eq!(first.text(), "answer 0");
    // What the official client does on a retry: a fresh 402, a new authorization, the same id.
    let second = h.pay("/paid", &other_nonce(43), Some(ID)).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text());
    assert_eq!(second.body, first.body);
    assert_eq!(
        second.headers["payment-response"],
        first.headers["payment-response"]
    );
    // The new payment was verified (it is the payer's own) and never settled.
    assert_eq!(h.counts(), (1, 2, 1));
    // The very same header again: the recorded answer, nothing asked of the facilitator.
    let third = h.pay("/paid", &PaymentSpec::default(), Some(ID)).await;
    assert_eq!(third.body, first.body);
    assert_eq!(h.counts(), (1, 2, 1));
}

#[tokio::test]
async fn the_same_id_for_other_terms_is_a_409() {
    let h = Harness::new(PaymentIdentifier::Optional);
    assert_eq!(
        h.pay("/paid", &PaymentSpec::default(), Some(ID))
            .await
            .status,
        StatusCode::OK
    );
    // Another resource at another price, under the same id.
    let dear = PaymentSpec {
        nonce: 43,
        amount: PRICE_ATOMIC * 2,
        accepted: requirements(PRICE_ATOMIC * 2),
        ..Default::default()
    };
    let answer = h.pay("/dear", &dear, Some(ID)).await;
    assert_eq!(answer.status, StatusCode::CONFLICT, "{}", answer.text());
    assert_eq!(answer.json()["error"], "idempotency_key_reused");
    assert_eq!(h.counts(), (1, 1, 1), "nothing verified or settled");
    // Another payer's id is another key: the same string is theirs to use.
    let stranger = PaymentSpec {
        seed: 8,
        ..Default::default()
    };
    let answer = h.pay("/paid", &stranger, Some(ID)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.text(), "answer 1");
}

#[tokio::test]
async fn a_new_payment_that_does_not_verify_gets_nothing_from_the_id() {
    let h = Harness::new(PaymentIdentifier::Optional);
    let first = h.pay("/paid", &PaymentSpec::default(), Some(ID)).await;
    assert_eq!(first.status, StatusCode::OK);
    // Someone who learned the id and the payer, with a payment signed by another key: refused
    // by the layer's own signature check.
    let forged = PaymentSpec {
        nonce: 43,
        signer_seed: Some(9),
        ..Default::default()
    };
    let answer = h.pay("/paid", &forged, Some(ID)).await;
    assert_eq!(answer.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(
        answer.json()["error"],
        "invalid_exact_stellar_payload_bad_signature"
    );
    assert_eq!(h.counts(), (1, 1, 1));
    // A well-formed payment the facilitator refuses (spent, expired, unfunded).
    h.facilitator.set_verify(VerifyMode::Invalid(
        "invalid_exact_stellar_payload_auth_already_expired",
    ));
    let answer = h.pay("/paid", &other_nonce(44), Some(ID)).await;
    assert_eq!(answer.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(
        answer.json()["error"],
        "invalid_exact_stellar_payload_auth_already_expired"
    );
    assert_ne!(answer.body, first.body);
    assert_eq!(h.counts(), (1, 2, 1));
}

#[tokio::test]
async fn one_authorization_pays_under_one_id_only() {
    let h = Harness::new(PaymentIdentifier::Optional);
    let spec = PaymentSpec::default();
    assert_eq!(h.pay("/paid", &spec, Some(ID)).await.status, StatusCode::OK);
    // The same authorization under another id, then with no id at all.
    let other_id = "pay_00000000000000000000000000000001";
    let answer = h.pay("/paid", &spec, Some(other_id)).await;
    assert_eq!(answer.status, StatusCode::CONFLICT, "{}", answer.text());
    assert_eq!(answer.json()["error"], "payment_held_by_another_credential");
    let answer = h.pay("/paid", &spec, None).await;
    assert_eq!(answer.status, StatusCode::CONFLICT, "{}", answer.text());
    assert_eq!(answer.json()["error"], "payment_held_by_another_credential");
    assert_eq!(h.counts(), (1, 1, 1));
    // The other id was given back whole: it pays with a new authorization.
    let answer = h.pay("/paid", &other_nonce(44), Some(other_id)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(h.counts(), (2, 2, 2));
}

#[tokio::test]
async fn a_payment_refused_before_settling_gives_its_id_and_authorization_back() {
    let h = Harness::new(PaymentIdentifier::Optional);
    h.facilitator.set_verify(VerifyMode::Invalid(
        "invalid_exact_stellar_payload_malformed",
    ));
    let spec = PaymentSpec::default();
    let answer = h.pay("/paid", &spec, Some(ID)).await;
    assert_eq!(answer.status, StatusCode::PAYMENT_REQUIRED);
    h.facilitator.set_verify(VerifyMode::Valid);
    // The same payment, now accepted: neither the id nor the authorization is still held.
    let answer = h.pay("/paid", &spec, Some(ID)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(h.counts(), (1, 2, 1));
}

#[tokio::test]
async fn ids_are_checked_where_the_route_declares_the_extension() {
    let required = Harness::new(PaymentIdentifier::Required);
    let answer = required.pay("/paid", &PaymentSpec::default(), None).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text());
    assert_eq!(answer.json()["error"], "payment_identifier_required");
    assert!(answer.headers.contains_key("payment-required"));
    for bad in ["short", "pay_with spaces_in_the_id", &"x".repeat(129)] {
        let answer = required
            .pay("/paid", &PaymentSpec::default(), Some(bad))
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(answer.json()["error"], "invalid_payment_identifier");
    }
    assert_eq!(required.counts(), (0, 0, 0));
    // A route that does not declare it ignores the id, well-formed or not.
    let off = Harness::new(PaymentIdentifier::Off);
    let answer = off
        .pay("/paid", &PaymentSpec::default(), Some("bad id"))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let answer = off.pay("/paid", &other_nonce(43), Some("bad id")).await;
    assert_eq!(answer.text(), "answer 1", "no id, no replay");
}

fn post_with_key(spec: &PaymentSpec, key: Option<&str>) -> Request<axum::body::Body> {
    let mut builder = Request::post("/post")
        .header(http::header::HOST, "example.com")
        .header("payment-signature", payment(spec));
    if let Some(key) = key {
        builder = builder.header("idempotency-key", key);
    }
    builder.body(axum::body::Body::empty()).unwrap()
}

#[tokio::test]
async fn the_idempotency_key_header_makes_a_post_idempotent() {
    let h = Harness::new(PaymentIdentifier::Off);
    let first = send(
        &h.app,
        post_with_key(&PaymentSpec::default(), Some("\"order-12345\"")),
    )
    .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    // The same key, bare or quoted, with a new payment: the first answer.
    let second = send(&h.app, post_with_key(&other_nonce(43), Some("order-12345"))).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text());
    assert_eq!(second.body, first.body);
    assert_eq!(h.counts(), (1, 2, 1));
    // A GET is idempotent already: the header changes nothing.
    let get = Request::get("/post")
        .header(http::header::HOST, "example.com")
        .header("payment-signature", payment(&other_nonce(44)))
        .header("idempotency-key", "order-12345")
        .body(axum::body::Body::empty())
        .unwrap();
    let answer = send(&h.app, get).await;
    assert_eq!(answer.text(), "answer 1");
    assert_eq!(h.counts(), (2, 3, 2));
}

#[tokio::test]
async fn a_malformed_idempotency_key_is_a_400_before_any_money_moves() {
    let h = Harness::new(PaymentIdentifier::Off);
    for bad in ["", "two words", "\"unterminated", &"k".repeat(256)] {
        let answer = send(&h.app, post_with_key(&PaymentSpec::default(), Some(bad))).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad:?}");
        assert_eq!(answer.json()["error"], "invalid_idempotency_key");
    }
    let mut twice = post_with_key(&PaymentSpec::default(), Some("a"));
    twice
        .headers_mut()
        .append("idempotency-key", HeaderValue::from_static("b"));
    let answer = send(&h.app, twice).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(h.counts(), (0, 0, 0));
}

#[tokio::test]
async fn a_new_payment_under_an_id_whose_settlement_is_unknown_waits_for_it() {
    let h = Harness::new(PaymentIdentifier::Optional);
    h.facilitator.set_settle(SettleMode::Fail(
        tower_paywall::x402::FacilitatorError::Timeout,
    ));
    let first = h.pay("/paid", &PaymentSpec::default(), Some(ID)).await;
    assert_eq!(
        first.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        first.text()
    );
    // The retry carries a new authorization: it must not be settled while the first one may
    // have moved the money.
    h.facilitator.set_settle(SettleMode::Success);
    let retry = h.pay("/paid", &other_nonce(43), Some(ID)).await;
    assert_eq!(
        retry.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        retry.text()
    );
    assert_eq!(retry.json()["error"], "settlement_pending");
    // The handler ran once (settlement comes after it), its answer withheld.
    assert_eq!(h.counts(), (1, 1, 1));
}

#[tokio::test]
async fn a_retry_under_the_id_gets_its_answer_even_when_pricing_now_answers_early() {
    // Like stoka's store: once the resource exists, pricing answers 409 before any payment.
    let facilitator = Arc::new(TestFacilitator::default());
    let exists = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = exists.clone();
    let pricing = move |_: &PriceRequest<'_>| {
        PriceFuture::ready(if seen.load(Ordering::SeqCst) {
            Priced::Respond(
                http::Response::builder()
                    .status(StatusCode::CONFLICT)
                    .body(bytes::Bytes::from_static(b"exists"))
                    .unwrap(),
            )
        } else {
            Priced::Charge(
                Price::parse(PRICE)
                    .unwrap()
                    .with_payment_identifier(PaymentIdentifier::Optional),
            )
        })
    };
    let layer = PaymentLayer::builder()
        .scheme(exact(&facilitator))
        .pricing(pricing)
        .build()
        .unwrap();
    let made = exists.clone();
    let app = Router::new()
        .route(
            "/paid",
            get(move || {
                let made = made.clone();
                async move {
                    made.store(true, Ordering::SeqCst);
                    "created"
                }
            }),
        )
        .layer(layer);
    let first = send(
        &app,
        req("/paid", Some(with_id(&PaymentSpec::default(), Some(ID)))),
    )
    .await;
    assert_eq!(first.status, StatusCode::OK);
    // The retry under the id with a new payment: the recorded answer, not pricing's 409.
    let retry = send(
        &app,
        req("/paid", Some(with_id(&other_nonce(43), Some(ID)))),
    )
    .await;
    assert_eq!(retry.status, StatusCode::OK, "{}", retry.text());
    assert_eq!(retry.body, first.body);
    // A forged payment under the id gets pricing's answer, and nothing recorded.
    let forged = PaymentSpec {
        nonce: 44,
        signer_seed: Some(9),
        ..Default::default()
    };
    let answer = send(&app, req("/paid", Some(with_id(&forged, Some(ID))))).await;
    assert_eq!(answer.status, StatusCode::CONFLICT);
    assert_eq!(answer.text(), "exists");
    // Another id of the same payer: pricing's answer.
    let other = send(
        &app,
        req(
            "/paid",
            Some(with_id(&other_nonce(45), Some("pay_another_id_0000000000"))),
        ),
    )
    .await;
    assert_eq!(other.status, StatusCode::CONFLICT);
    assert_eq!(facilitator.settle_calls(), 1);
}

#[tokio::test]
async fn a_new_payment_under_an_id_whose_money_moved_unanswered_must_verify_first() {
    // The first settlement outlasts the settle wait: the money moves, the answer does not.
    let facilitator = Arc::new(TestFacilitator::default());
    facilitator.set_settle_delay(std::time::Duration::from_millis(150));
    let layer = PaymentLayer::builder()
        .scheme(exact(&facilitator))
        .price(
            Price::parse(PRICE)
                .unwrap()
                .with_payment_identifier(PaymentIdentifier::Optional),
        )
        .settle_wait(std::time::Duration::from_millis(50))
        .build()
        .unwrap();
    let app = Router::new()
        .route("/paid", get(|| async { "content" }))
        .layer(layer);
    let first = send(
        &app,
        req("/paid", Some(with_id(&PaymentSpec::default(), Some(ID)))),
    )
    .await;
    assert_eq!(first.status, StatusCode::SERVICE_UNAVAILABLE);
    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    // A new payment under the id that the facilitator refuses gets nothing from the settled one.
    facilitator.set_verify(VerifyMode::Invalid(
        "invalid_exact_stellar_payload_malformed",
    ));
    let refused = send(
        &app,
        req("/paid", Some(with_id(&other_nonce(43), Some(ID)))),
    )
    .await;
    assert_eq!(
        refused.status,
        StatusCode::PAYMENT_REQUIRED,
        "{}",
        refused.text()
    );
    assert_eq!(
        refused.json()["error"],
        "invalid_exact_stellar_payload_malformed"
    );
    // The settled payment was given back whole: its own retry is served, settled once.
    facilitator.set_verify(VerifyMode::Valid);
    let served = send(
        &app,
        req("/paid", Some(with_id(&PaymentSpec::default(), Some(ID)))),
    )
    .await;
    assert_eq!(
        (served.status, served.text().as_str()),
        (StatusCode::OK, "content")
    );
    assert_eq!(facilitator.settle_calls(), 1);
}
