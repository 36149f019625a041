//! Tower-level tests of `PaymentLayer` with the x402 `exact` scheme: every path, through an
//! axum `Router`, with a test-double facilitator at the HTTP-client boundary.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Path;
use axum::routing::get;
use axum::{Extension, Router};
use http::StatusCode;
use support::*;
use tower_paywall::BoxFuture;
use tower_paywall::layer::{Offered, PaymentEvent, PaymentHooks, Verdict};
use tower_paywall::price::{PriceFuture, PriceRequest, Priced};
use tower_paywall::stellar::{Amount, CredentialsArm, Network};
use tower_paywall::x402::{FacilitatorError, PaymentRequired, SettleResponse};
use tower_paywall::{Paid, PaymentLayer, PaymentLayerBuilder, Price, SettleGuard, SettlementOrder};

struct Harness {
    facilitator: Arc<TestFacilitator>,
    app: Router,
    handler_calls: Arc<AtomicUsize>,
    events: Arc<Mutex<Vec<String>>>,
}

impl Harness {
    fn new(order: SettlementOrder) -> Self {
        Self::with(order, |builder| builder)
    }

    fn with(
        order: SettlementOrder,
        configure: impl FnOnce(PaymentLayerBuilder) -> PaymentLayerBuilder,
    ) -> Self {
        let facilitator = Arc::new(TestFacilitator::default());
        let handler_calls = Arc::new(AtomicUsize::new(0));
        let events = Arc::new(Mutex::new(Vec::new()));
        let layer = configure(
            PaymentLayer::builder()
                .scheme(exact(&facilitator))
                .price(Price::parse(PRICE).unwrap())
                .order(order),
        )
        .build()
        .unwrap();
        let (calls, log) = (handler_calls.clone(), events.clone());
        let paid = move |Extension(paid): Extension<Paid>| {
            let (calls, log) = (calls.clone(), log.clone());
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                log.lock()
                    .unwrap()
                    .push(format!("paid by {} ref {:?}", paid.payer, paid.reference));
                "content"
            }
        };
        let calls = handler_calls.clone();
        let status = move |Path(code): Path<u16>| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                (StatusCode::from_u16(code).unwrap(), "handler body")
            }
        };
        let log = events.clone();
        let guarded = move |Path(mode): Path<String>, Extension(guard): Extension<SettleGuard>| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push("validated".into());
                match mode.as_str() {
                    "conflict" => return (StatusCode::CONFLICT, "exists".to_owned()),
                    "skip" => return (StatusCode::OK, "unsettled content".to_owned()),
                    _ => {}
                }
                match guard.settle().await {
                    Ok(receipt) => {
                        // A second call returns the same outcome and settles nothing.
                        assert_eq!(guard.settle().await.unwrap(), receipt);
                        log.lock()
                            .unwrap()
                            .push(format!("settled {}", receipt.reference));
                        log.lock().unwrap().push("committed".into());
                        (StatusCode::CREATED, "committed content".to_owned())
                    }
                    Err(error) => {
                        log.lock().unwrap().push(format!("not settled: {error}"));
                        (StatusCode::OK, "content that must not leak".to_owned())
                    }
                }
            }
        };
        let app = Router::new()
            .route("/paid", get(paid))
            .route("/status/{code}", get(status))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    "slow content"
                }),
            )
            .route("/guard/{mode}", get(guarded))
            .layer(layer);
        Harness {
            facilitator,
            app,
            handler_calls,
            events,
        }
    }

    /// Sends `path` with the default (valid) payment.
    async fn pay(&self, path: &str) -> Answer {
        send(&self.app, req(path, Some(payment(&PaymentSpec::default())))).await
    }

    fn calls(&self) -> usize {
        self.handler_calls.load(Ordering::SeqCst)
    }

    fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }
}

fn payment_required(answer: &Answer) -> PaymentRequired {
    decode_header(
        answer
            .headers
            .get("payment-required")
            .expect("PAYMENT-REQUIRED header"),
    )
}

fn assert_refused(answer: &Answer, code: &str) {
    assert_eq!(
        answer.status,
        StatusCode::PAYMENT_REQUIRED,
        "{}",
        answer.text()
    );
    assert_eq!(answer.json()["error"], code);
    assert_eq!(payment_required(answer).error.as_deref(), Some(code));
}

#[tokio::test]
async fn no_payment_gets_a_402_with_header_and_body() {
    let h = Harness::new(SettlementOrder::AfterSuccess);
    let answer = send(&h.app, req("/paid?x=1", None)).await;
    assert_eq!(answer.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(answer.headers["content-type"], "application/json");
    let exposed = answer.headers["access-control-expose-headers"]
        .to_str()
        .unwrap();
    assert!(exposed.contains("PAYMENT-REQUIRED") && exposed.contains("PAYMENT-RESPONSE"));

    let required = payment_required(&answer);
    assert_eq!(required.x402_version, 2);
    assert_eq!(required.error.as_deref(), Some("Payment required"));
    assert_eq!(required.resource.url, "http://example.com/paid?x=1");
    assert_eq!(required.accepts, vec![requirements(PRICE_ATOMIC)]);

    let body = answer.json();
    assert_eq!(body["x402Version"], 2);
    assert_eq!(body["error"], "Payment required");
    assert_eq!(body["resource"]["url"], "http://example.com/paid?x=1");
    let offer = &body["accepts"][0];
    assert_eq!(offer["amount"], "10000");
    assert_eq!(offer["maxAmountRequired"], "10000");
    assert_eq!(offer["payTo"], PAY_TO);
    assert_eq!(
        offer["asset"],
        "CBIELTK6YBZJU5UP2WWQEUCYKLPU6AUNZ2BQ4WWFEIE3USCIHMXQDAMA"
    );
    assert_eq!(offer["maxTimeoutSeconds"], 60);
    assert_eq!(offer["extra"]["areFeesSponsored"], true);
    assert_eq!(h.calls(), 0);
    assert_eq!(h.facilitator.verify_calls(), 0);
}

#[tokio::test]
async fn a_valid_payment_is_verified_served_and_settled() {
    let h = Harness::new(SettlementOrder::AfterSuccess);
    let answer = h.pay("/paid").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.text(), "content");
    let settled: SettleResponse = decode_header(&answer.headers["payment-response"]);
    assert!(settled.success);
    assert_eq!(settled.transaction, "ab".repeat(32));
    assert_eq!(
        answer.headers["x-payment-response"],
        answer.headers["payment-response"]
    );
    assert!(
        answer.headers["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("PAYMENT-RESPONSE")
    );
    assert_eq!(
        (h.facilitator.verify_calls(), h.facilitator.settle_calls()),
        (1, 1)
    );
    // The handler saw the verified payer; with after-success ordering nothing has settled yet.
    let payer = payer(7).address().to_string();
    assert_eq!(h.events(), vec![format!("paid by {payer} ref None")]);
    // The facilitator got our own requirements and the client's payload byte for byte.
    let sent = h.facilitator.last_request.lock().unwrap().clone().unwrap();
    assert_eq!(sent["x402Version"], 2);
    assert_eq!(
        sent["paymentRequirements"],
        serde_json::to_value(requirements(PRICE_ATOMIC)).unwrap()
    );
    assert_eq!(
        sent["paymentPayload"]["payload"]["transaction"],
        envelope(&PaymentSpec::default())
    );
}

#[tokio::test]
async fn the_legacy_x_payment_header_is_accepted() {
    let h = Harness::new(SettlementOrder::AfterSuccess);
    let request = http::Request::builder()
        .uri("/paid")
        .header("x-payment", payment(&PaymentSpec::default()))
        .body(axum::body::Body::empty())
        .unwrap();
    let answer = send(&h.app, request).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.headers.contains_key("x-payment-response"));
}

#[tokio::test]
async fn both_credential_arms_are_accepted() {
    let h = Harness::new(SettlementOrder::AfterSuccess);
    let spec = PaymentSpec {
        credentials: CredentialsArm::AddressV2,
        ..PaymentSpec::default()
    };
    let answer = send(&h.app, req("/paid", Some(payment(&spec)))).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
}

#[tokio::test]
async fn garbage_headers_are_refused_cleanly() {
    let h = Harness::new(SettlementOrder::AfterSuccess);
    for garbage in [
        "",
        "!!!!",
        "abc",
        "eyJ4IjoxfQ",
        "bm90IGpzb24=",
        "e30=",
        "W10=",
        "-_-_",
    ] {
        let value = http::HeaderValue::from_str(garbage).unwrap();
        let answer = send(&h.app, req("/paid", Some(value))).await;
        assert_refused(&answer, "invalid_payload");
    }
    // Valid JSON, but no Stellar transaction inside.
    let spec = PaymentSpec::default();
    let answer = send(
        &h.app,
        req("/paid", Some(encode_header(&payload_json(&spec, "AAAA")))),
    )
    .await;
    assert_refused(&answer, "invalid_exact_stellar_payload_malformed");
    // Random bytes never panic.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..200 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let len = (state % 300) as usize;
        let text: String = (0..len)
            .map(|i| (b'+' + ((state >> (i % 56)) as u8 % 80)) as char)
            .filter(|c| c.is_ascii_graphic())
            .collect();
        let value = http::HeaderValue::from_str(&text).unwrap();
        let answer = send(&h.app, req("/paid", Some(value))).await;
        assert!(matches!(
            answer.status,
            StatusCode::PAYMENT_REQUIRED | StatusCode::BAD_REQUEST
        ));
    }
    // Oversized: refused before decoding.
    let huge = http::HeaderValue::from_str(&"A".repeat(40 * 1024)).unwrap();
    let answer = send(&h.app, req("/paid", Some(huge))).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.json()["error"], "payment_header_too_large");
    assert_eq!(h.facilitator.verify_calls(), 0);
    assert_eq!(h.calls(), 0);
}

#[tokio::test]
async fn mismatched_payments_never_reach_the_facilitator() {
    let h = Harness::new(SettlementOrder::AfterSuccess);
    let other_amount = requirements(PRICE_ATOMIC + 1);
    let mut other_network = requirements(PRICE_ATOMIC);
    other_network.network = "stellar:pubnet".into();
    let mut missing_extra = requirements(PRICE_ATOMIC);
    missing_extra.extra.clear();
    let other_payer = payer(9).address();
    let cases: Vec<(PaymentSpec, &str)> = vec![
        (
            PaymentSpec {
                accepted: other_amount,
                amount: PRICE_ATOMIC + 1,
                ..Default::default()
            },
            "invalid_payment_requirements",
        ),
        (
            PaymentSpec {
                accepted: missing_extra,
                ..Default::default()
            },
            "invalid_payment_requirements",
        ),
        (
            PaymentSpec {
                accepted: other_network,
                ..Default::default()
            },
            "invalid_network",
        ),
        (
            PaymentSpec {
                amount: PRICE_ATOMIC - 1,
                ..Default::default()
            },
            "invalid_exact_stellar_payload_wrong_amount",
        ),
        (
            PaymentSpec {
                to: other_payer,
                ..Default::default()
            },
            "invalid_exact_stellar_payload_wrong_recipient",
        ),
        (
            PaymentSpec {
                contract: Network::testnet().native_asset_contract(),
                ..Default::default()
            },
            "invalid_exact_stellar_payload_wrong_asset",
        ),
        (
            PaymentSpec {
                signer_seed: Some(8),
                ..Default::default()
            },
            "invalid_exact_stellar_payload_bad_signature",
        ),
        (
            PaymentSpec {
                network: Network::pubnet(),
                ..Default::default()
            },
            "invalid_exact_stellar_payload_bad_signature",
        ),
        (
            PaymentSpec {
                sign: false,
                ..Default::default()
            },
            "invalid_exact_stellar_payload_missing_payer_signature",
        ),
    ];
    for (spec, code) in cases {
        let answer = send(&h.app, req("/paid", Some(payment(&spec)))).await;
        assert_refused(&answer, code);
    }
    let mut payload: serde_json::Value = serde_json::from_str(&payload_json(
        &PaymentSpec::default(),
        &envelope(&PaymentSpec::default()),
    ))
    .unwrap();
    payload["accepted"]["scheme"] = "upto".into();
    let answer = send(
        &h.app,
        req("/paid", Some(encode_header(&payload.to_string()))),
    )
    .await;
    assert_refused(&answer, "unsupported_scheme");
    payload["accepted"]["scheme"] = "exact".into();
    payload["x402Version"] = 1.into();
    let answer = send(
        &h.app,
        req("/paid", Some(encode_header(&payload.to_string()))),
    )
    .await;
    assert_refused(&answer, "invalid_x402_version");
    assert_eq!(h.facilitator.verify_calls(), 0);
    assert_eq!(h.calls(), 0);
}

#[tokio::test]
async fn a_forged_signature_is_refused_offline() {
    use base64::Engine;
    use tower_paywall::stellar::decode_envelope;
    use tower_paywall::stellar::xdr::{
        Limits, OperationBody, ScVal, SorobanCredentials, TransactionEnvelope, WriteXdr,
    };
    let h = Harness::new(SettlementOrder::AfterSuccess);
    let spec = PaymentSpec::default();
    let mut envelope = decode_envelope(&envelope(&spec)).unwrap();
    // Flip one bit of the payer's signature.
    let TransactionEnvelope::Tx(tx) = &mut envelope else {
        unreachable!()
    };
    let mut operations = tx.tx.operations.to_vec();
    let OperationBody::InvokeHostFunction(op) = &mut operations[0].body else {
        unreachable!()
    };
    let mut auth = op.auth.to_vec();
    let SorobanCredentials::Address(credentials) = &mut auth[0].credentials else {
        unreachable!()
    };
    let ScVal::Vec(Some(signatures)) = &mut credentials.signature else {
        unreachable!()
    };
    let mut signatures = signatures.to_vec();
    let ScVal::Map(Some(map)) = &mut signatures[0] else {
        unreachable!()
    };
    let mut entries = map.to_vec();
    let ScVal::Bytes(bytes) = &mut entries[1].val else {
        unreachable!()
    };
    let mut raw = bytes.to_vec();
    raw[10] ^= 1;
    entries[1].val = ScVal::Bytes(raw.try_into().unwrap());
    signatures[0] = ScVal::Map(Some(entries.try_into().unwrap()));
    credentials.signature = ScVal::Vec(Some(signatures.try_into().unwrap()));
    op.auth = auth.try_into().unwrap();
    tx.tx.operations = operations.try_into().unwrap();
    let transaction = envelope.to_xdr_base64(Limits::none()).unwrap();
    let header =
        base64::engine::general_purpose::STANDARD.encode(payload_json(&spec, &transaction));
    let answer = send(&h.app, req("/paid", Some(header.parse().unwrap()))).await;
    assert_refused(&answer, "invalid_exact_stellar_payload_bad_signature");
    assert_eq!(h.facilitator.verify_calls(), 0);
}

#[tokio::test]
async fn verify_refusal_is_a_402_with_the_facilitator_reason() {
    let h = Harness::new(SettlementOrder::AfterSuccess);
    h.facilitator
        .set_verify(VerifyMode::Invalid("insufficient_funds"));
    let answer = h.pay("/paid").await;
    assert_refused(&answer, "insufficient_funds");
    assert_eq!((h.calls(), h.facilitator.settle_calls()), (0, 0));
    // The payment was not used up: once the payer has funds, the same payment goes through.
    h.facilitator.set_verify(VerifyMode::Valid);
    let answer = h.pay("/paid").await;
    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test]
async fn handler_errors_are_not_settled() {
    let h = Harness::new(SettlementOrder::AfterSuccess);
    for code in [400u16, 404, 500, 503] {
        let answer = h.pay(&format!("/status/{code}")).await;
        assert_eq!(answer.status.as_u16(), code);
        assert_eq!(answer.text(), "handler body");
        assert!(!answer.headers.contains_key("payment-response"));
    }
    assert_eq!(h.facilitator.settle_calls(), 0);
    // The payment is still unused.
    let answer = h.pay("/status/200").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(h.facilitator.settle_calls(), 1);
}

#[tokio::test]
async fn a_failed_settlement_withholds_the_body() {
    let h = Harness::new(SettlementOrder::AfterSuccess);
    h.facilitator.set_settle(SettleMode::Failure(
        "invalid_exact_stellar_payload_simulation_failed",
    ));
    let answer = h.pay("/paid").await;
    assert_refused(&answer, "invalid_exact_stellar_payload_simulation_failed");
    assert!(!answer.text().contains("content"));
    let settled: SettleResponse = decode_header(&answer.headers["payment-response"]);
    assert!(!settled.success);
    assert_eq!(
        settled.error_reason.as_deref(),
        Some("invalid_exact_stellar_payload_simulation_failed")
    );
    assert_eq!(settled.transaction, "");
    assert!(answer.headers.contains_key("x-payment-response"));
    assert_eq!(h.calls(), 1);
}

#[tokio::test]
async fn a_settlement_timeout_is_a_503_resolved_by_the_retry_without_a_second_settle() {
    let h = Harness::with(SettlementOrder::AfterSuccess, |b| {
        b.settle_wait(Duration::from_millis(100))
    });
    h.facilitator.set_settle_delay(Duration::from_millis(400));
    let pay = || Some(payment(&PaymentSpec::default()));
    let answer = send(&h.app, req("/paid", pay())).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.headers["retry-after"], "5");
    assert_eq!(answer.json()["error"], "settlement_pending");
    assert!(!answer.text().contains("content"));
    // While the settlement is still in flight, a retry waits for it: 503 again, not a new 402.
    let answer = send(&h.app, req("/paid", pay())).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The settlement finished on its own; the retry gets the content, paid once.
    let answer = send(&h.app, req("/paid", pay())).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.text(), "content");
    assert!(answer.headers.contains_key("payment-response"));
    assert_eq!(h.facilitator.settle_calls(), 1);
    assert_eq!(h.facilitator.verify_calls(), 1);
}

#[tokio::test]
async fn facilitator_failures_map_to_502_and_503() {
    let cases = [
        (FacilitatorError::Status(500), StatusCode::BAD_GATEWAY),
        (
            FacilitatorError::Malformed("garbage".into()),
            StatusCode::BAD_GATEWAY,
        ),
        (
            FacilitatorError::Unreachable("refused".into()),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        (FacilitatorError::Timeout, StatusCode::SERVICE_UNAVAILABLE),
    ];
    for (error, status) in cases {
        let h = Harness::new(SettlementOrder::AfterSuccess);
        h.facilitator.set_verify(VerifyMode::Fail(error.clone()));
        let answer = h.pay("/paid").await;
        assert_eq!(answer.status, status, "verify {error:?}");
        assert_eq!(h.calls(), 0);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert!(answer.headers.contains_key("retry-after"));
        }
    }
}

#[tokio::test]
async fn an_unknown_settlement_outcome_is_never_answered_with_a_fresh_402() {
    for error in [
        FacilitatorError::Status(502),
        FacilitatorError::Malformed("x".into()),
        FacilitatorError::Timeout,
    ] {
        let h = Harness::new(SettlementOrder::AfterSuccess);
        h.facilitator.set_settle(SettleMode::Fail(error.clone()));
        let answer = h.pay("/paid").await;
        assert!(matches!(
            answer.status,
            StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE
        ));
        assert!(
            !answer.headers.contains_key("payment-required"),
            "{error:?}"
        );
        assert!(!answer.text().contains("content"));
        // Retries of the same payment wait; they are neither charged again nor asked to pay anew.
        let answer = h.pay("/paid").await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!answer.headers.contains_key("payment-required"));
        assert_eq!(h.facilitator.settle_calls(), 1);
    }
    // A facilitator that could not be reached took nothing: 503, and the payment stays usable.
    let h = Harness::new(SettlementOrder::AfterSuccess);
    h.facilitator
        .set_settle(SettleMode::Fail(FacilitatorError::Unreachable(
            "refused".into(),
        )));
    let answer = h.pay("/paid").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    h.facilitator.set_settle(SettleMode::Success);
    let answer = h.pay("/paid").await;
    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test]
async fn two_concurrent_requests_with_one_payment_get_exactly_one_200() {
    let h = Harness::new(SettlementOrder::AfterSuccess);
    let pay = || Some(payment(&PaymentSpec::default()));
    let (a, b) = tokio::join!(
        send(&h.app, req("/slow", pay())),
        send(&h.app, req("/slow", pay()))
    );
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT]);
    let conflict = if a.status == StatusCode::CONFLICT {
        a
    } else {
        b
    };
    assert_eq!(conflict.json()["error"], "payment_in_use");
    assert_eq!(h.facilitator.settle_calls(), 1);
}

#[tokio::test]
async fn a_retry_after_success_replays_the_recorded_response() {
    let h = Harness::new(SettlementOrder::AfterSuccess);
    let first = h.pay("/paid").await;
    let second = h.pay("/paid").await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.body, first.body);
    assert_eq!(
        second.headers["payment-response"],
        first.headers["payment-response"]
    );
    assert_eq!(
        (
            h.calls(),
            h.facilitator.settle_calls(),
            h.facilitator.verify_calls()
        ),
        (1, 1, 1)
    );
    // Another payment (another nonce) is a new payment.
    let other = PaymentSpec {
        nonce: 43,
        ..Default::default()
    };
    let third = send(&h.app, req("/paid", Some(payment(&other)))).await;
    assert_eq!(third.status, StatusCode::OK);
    assert_eq!(h.facilitator.settle_calls(), 2);
}

#[tokio::test]
async fn before_handler_ordering_settles_first() {
    let h = Harness::new(SettlementOrder::BeforeHandler);
    let answer = h.pay("/paid").await;
    assert_eq!(answer.status, StatusCode::OK);
    let payer = payer(7).address().to_string();
    let reference = "ab".repeat(32);
    assert_eq!(
        h.events(),
        vec![format!("paid by {payer} ref Some(\"{reference}\")")]
    );
    // A failed settlement never runs the handler.
    let h = Harness::new(SettlementOrder::BeforeHandler);
    h.facilitator
        .set_settle(SettleMode::Failure("insufficient_funds"));
    let answer = h.pay("/paid").await;
    assert_refused(&answer, "insufficient_funds");
    assert_eq!(h.calls(), 0);
}

#[tokio::test]
async fn in_handler_ordering_settles_where_the_handler_says() {
    let h = Harness::new(SettlementOrder::InHandler);
    let answer = h.pay("/guard/settle").await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text());
    assert_eq!(answer.text(), "committed content");
    assert!(answer.headers.contains_key("payment-response"));
    let reference = "ab".repeat(32);
    assert_eq!(
        h.events(),
        vec![
            "validated".to_owned(),
            format!("settled {reference}"),
            "committed".into()
        ]
    );
    assert_eq!(h.facilitator.settle_calls(), 1);
    // The retry gets the recorded answer; the handler does not run again.
    let again = h.pay("/guard/settle").await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(h.events().len(), 3);
}

#[tokio::test]
async fn in_handler_refusal_before_settling_costs_nothing() {
    let h = Harness::new(SettlementOrder::InHandler);
    let answer = h.pay("/guard/conflict").await;
    assert_eq!(answer.status, StatusCode::CONFLICT);
    assert_eq!(h.facilitator.settle_calls(), 0);
}

#[tokio::test]
async fn in_handler_without_settling_is_settled_after_the_handler() {
    let h = Harness::new(SettlementOrder::InHandler);
    let answer = h.pay("/guard/skip").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.headers.contains_key("payment-response"));
    assert_eq!(h.facilitator.settle_calls(), 1);
    // …and when that settlement fails, the handler's content is withheld.
    let h = Harness::new(SettlementOrder::InHandler);
    h.facilitator
        .set_settle(SettleMode::Failure("insufficient_funds"));
    let answer = h.pay("/guard/skip").await;
    assert_refused(&answer, "insufficient_funds");
    assert!(!answer.text().contains("unsettled content"));
}

#[tokio::test]
async fn in_handler_settlement_failure_is_a_402_whatever_the_handler_answers() {
    let h = Harness::new(SettlementOrder::InHandler);
    h.facilitator
        .set_settle(SettleMode::Failure("insufficient_funds"));
    let answer = h.pay("/guard/settle").await;
    assert_refused(&answer, "insufficient_funds");
    assert!(!answer.text().contains("must not leak"));
    assert_eq!(
        h.events(),
        vec![
            "validated".to_owned(),
            "not settled: payment refused: insufficient_funds".into()
        ]
    );
}

#[tokio::test]
async fn pricing_answers_before_any_money_moves() {
    let facilitator = Arc::new(TestFacilitator::default());
    let pricing = |request: &PriceRequest<'_>| {
        let answer = match request.uri().path() {
            "/free" => Priced::Free,
            "/upload" => match request.content_length() {
                None => Priced::Respond(
                    http::Response::builder()
                        .status(411)
                        .body(bytes::Bytes::new())
                        .unwrap(),
                ),
                Some(len) if len > 1000 => Priced::Respond(
                    http::Response::builder()
                        .status(413)
                        .body(bytes::Bytes::new())
                        .unwrap(),
                ),
                Some(len) => {
                    Priced::Charge(Price::new(Amount::from_atomic(len as i128 * 100).unwrap()))
                }
            },
            _ => Priced::Charge(Price::parse(PRICE).unwrap()),
        };
        PriceFuture::ready(answer)
    };
    let layer = PaymentLayer::builder()
        .scheme(exact(&facilitator))
        .pricing(pricing)
        .build()
        .unwrap();
    let app = Router::new()
        .route("/free", get(|| async { "free" }))
        .route("/upload", axum::routing::put(|| async { "stored" }))
        .layer(layer);
    let answer = send(&app, req("/free", None)).await;
    assert_eq!(
        (answer.status, answer.text().as_str()),
        (StatusCode::OK, "free")
    );
    // A free route ignores payment headers, garbage included.
    let garbage = Some(http::HeaderValue::from_static("!!!"));
    let answer = send(&app, req("/free", garbage)).await;
    assert_eq!(answer.status, StatusCode::OK);
    let put = |len: Option<&str>, pay: bool| {
        let mut builder = http::Request::builder().method("PUT").uri("/upload");
        if let Some(len) = len {
            builder = builder.header("content-length", len);
        }
        if pay {
            builder = builder.header("payment-signature", payment(&PaymentSpec::default()));
        }
        builder.body(axum::body::Body::empty()).unwrap()
    };
    assert_eq!(
        send(&app, put(None, true)).await.status,
        StatusCode::LENGTH_REQUIRED
    );
    assert_eq!(
        send(&app, put(Some("5000"), true)).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let answer = send(&app, put(Some("100"), false)).await;
    assert_eq!(answer.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(payment_required(&answer).accepts[0].amount, "10000");
    assert_eq!(facilitator.verify_calls(), 0);
}

#[tokio::test]
async fn async_pricing_sees_the_claimed_payer() {
    let facilitator = Arc::new(TestFacilitator::default());
    let expected = payer(7).address().to_string();
    let pricing = move |request: &PriceRequest<'_>| {
        let payer = request.payer().map(str::to_owned);
        let expected = expected.clone();
        PriceFuture::new(async move {
            tokio::task::yield_now().await;
            match payer {
                Some(payer) if payer != expected => Priced::Respond(
                    http::Response::builder()
                        .status(404)
                        .body(bytes::Bytes::new())
                        .unwrap(),
                ),
                _ => Priced::Charge(Price::parse(PRICE).unwrap()),
            }
        })
    };
    let layer = PaymentLayer::builder()
        .scheme(exact(&facilitator))
        .pricing(pricing)
        .build()
        .unwrap();
    let app = Router::new()
        .route("/mine", get(|| async { "mine" }))
        .layer(layer);
    let answer = send(&app, req("/mine", Some(payment(&PaymentSpec::default())))).await;
    assert_eq!(answer.status, StatusCode::OK);
    let stranger = PaymentSpec {
        seed: 8,
        ..Default::default()
    };
    let answer = send(&app, req("/mine", Some(payment(&stranger)))).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(facilitator.verify_calls(), 1);
}

#[tokio::test]
async fn a_dropped_request_gives_its_payment_back() {
    let h = Harness::new(SettlementOrder::AfterSuccess);
    let request = send(&h.app, req("/slow", Some(payment(&PaymentSpec::default()))));
    // The client hangs up while the handler runs.
    assert!(
        tokio::time::timeout(Duration::from_millis(50), request)
            .await
            .is_err()
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let answer = h.pay("/slow").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(h.facilitator.settle_calls(), 1);
}

#[tokio::test]
async fn the_builder_refuses_bad_settings() {
    use tower_paywall::layer::BuildError;
    let facilitator = Arc::new(TestFacilitator::default());
    let price = || Price::parse(PRICE).unwrap();
    assert_eq!(
        PaymentLayer::builder().price(price()).build().unwrap_err(),
        BuildError::NoScheme
    );
    assert_eq!(
        PaymentLayer::builder()
            .scheme(exact(&facilitator))
            .build()
            .unwrap_err(),
        BuildError::NoPricing
    );
    let bad_url = PaymentLayer::builder()
        .scheme(exact(&facilitator))
        .price(price())
        .public_url("ftp://x")
        .build();
    assert_eq!(bad_url.unwrap_err(), BuildError::PublicUrl);
    let zero = PaymentLayer::builder()
        .scheme(exact(&facilitator))
        .price(price())
        .settle_wait(Duration::ZERO)
        .build();
    assert!(matches!(zero.unwrap_err(), BuildError::Invalid(_)));
    let layer = PaymentLayer::builder()
        .scheme(exact(&facilitator))
        .price(price())
        .public_url("https://api.example.com/")
        .build()
        .unwrap();
    let app = Router::new()
        .route("/x", get(|| async { "x" }))
        .layer(layer);
    let answer = send(&app, req("/x?y=1", None)).await;
    assert_eq!(
        payment_required(&answer).resource.url,
        "https://api.example.com/x?y=1"
    );
}

#[tokio::test]
async fn the_facilitators_own_keys_are_refused_offline() {
    let h = Harness::new(SettlementOrder::AfterSuccess);
    let facilitator_key: tower_paywall::stellar::Address = FACILITATOR_KEY.parse().unwrap();
    // The facilitator's key (seed 1) as the payer.
    let answer = send(
        &h.app,
        req(
            "/paid",
            Some(payment(&PaymentSpec {
                seed: 1,
                ..Default::default()
            })),
        ),
    )
    .await;
    assert_refused(
        &answer,
        "invalid_exact_stellar_payload_facilitator_is_payer",
    );
    // …as the transaction source.
    let spec = PaymentSpec {
        source: facilitator_key,
        ..Default::default()
    };
    let answer = send(&h.app, req("/paid", Some(payment(&spec)))).await;
    assert_refused(
        &answer,
        "invalid_exact_stellar_payload_unsafe_tx_or_op_source",
    );
    assert_eq!(h.facilitator.verify_calls(), 0);
}

#[tokio::test]
async fn fee_sponsorship_comes_from_the_facilitator() {
    let supported: tower_paywall::x402::SupportedResponse = serde_json::from_str(
        r#"{"kinds":[{"x402Version":2,"scheme":"exact","network":"stellar:testnet","extra":{"areFeesSponsored":false}}]}"#,
    )
    .unwrap();
    let facilitator = Arc::new(TestFacilitator {
        supported: Arc::new(supported),
        ..Default::default()
    });
    let layer = PaymentLayer::builder()
        .scheme(exact(&facilitator))
        .price(Price::parse(PRICE).unwrap())
        .build()
        .unwrap();
    let app = Router::new()
        .route("/x", get(|| async { "x" }))
        .layer(layer);
    let answer = send(&app, req("/x", None)).await;
    assert_eq!(
        payment_required(&answer).accepts[0].extra["areFeesSponsored"],
        false
    );
    assert_eq!(
        answer.json()["accepts"][0]["extra"]["areFeesSponsored"],
        false
    );
}

#[tokio::test]
async fn a_settled_payment_buys_nothing_dearer_on_resume() {
    let facilitator = Arc::new(TestFacilitator::default());
    facilitator.set_settle_delay(Duration::from_millis(150));
    let raised = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let raise = raised.clone();
    let pricing = move |request: &PriceRequest<'_>| {
        let price = if request.uri().path() == "/dear" || raise.load(Ordering::SeqCst) {
            "0.002"
        } else {
            PRICE
        };
        PriceFuture::ready(Priced::Charge(Price::parse(price).unwrap()))
    };
    let layer = PaymentLayer::builder()
        .scheme(exact(&facilitator))
        .pricing(pricing)
        .settle_wait(Duration::from_millis(50))
        .build()
        .unwrap();
    let app = Router::new()
        .route("/cheap", get(|| async { "cheap" }))
        .route("/dear", get(|| async { "dear" }))
        .layer(layer);
    let pay = || Some(payment(&PaymentSpec::default()));
    // The client gives up before the settlement ends; the money still moves.
    assert_eq!(
        send(&app, req("/cheap", pay())).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    // The settled payment does not open another route (a dearer one here): it is used…
    let answer = send(&app, req("/dear", pay())).await;
    assert_eq!(answer.status, StatusCode::CONFLICT, "{}", answer.text());
    assert_eq!(answer.json()["error"], "payment_already_used");
    // …nor its own route once it costs more…
    raised.store(true, Ordering::SeqCst);
    let answer = send(&app, req("/cheap", pay())).await;
    assert_refused(&answer, "payment_settled_for_another_price");
    raised.store(false, Ordering::SeqCst);
    // …and still serves the one it paid for, without a second settlement.
    let answer = send(&app, req("/cheap", pay())).await;
    assert_eq!(
        (answer.status, answer.text().as_str()),
        (StatusCode::OK, "cheap")
    );
    assert_eq!(facilitator.settle_calls(), 1);
}

#[tokio::test]
async fn a_settled_payment_cannot_be_replayed_by_someone_who_only_knows_it() {
    let h = Harness::new(SettlementOrder::AfterSuccess);
    assert_eq!(h.pay("/paid").await.status, StatusCode::OK);
    let mut conflicts = 0;
    // Payer and nonce are public once settled; a header forged from them (same payment key,
    // another signature) gets neither the recorded content nor a fresh settlement.
    for forged in [
        PaymentSpec {
            signer_seed: Some(8),
            ..Default::default()
        },
        PaymentSpec {
            sign: false,
            ..Default::default()
        },
        PaymentSpec {
            accepted: requirements(PRICE_ATOMIC),
            amount: PRICE_ATOMIC,
            nonce: 42,
            ..Default::default()
        }
        .with_fee(10_101),
    ] {
        let answer = send(&h.app, req("/paid", Some(payment(&forged)))).await;
        // Refused at once when unreadable (402), else held off by the record (409: the payment
        // is used).
        assert!(
            matches!(
                answer.status,
                StatusCode::CONFLICT | StatusCode::PAYMENT_REQUIRED
            ),
            "{}",
            answer.text()
        );
        if answer.status == StatusCode::CONFLICT {
            assert_eq!(answer.json()["error"], "payment_already_used");
            conflicts += 1;
        }
        assert!(!answer.text().contains("content"));
    }
    // The well-signed forgeries (another key, another fee) reach the record.
    assert_eq!(conflicts, 2);
    assert_eq!((h.calls(), h.facilitator.settle_calls()), (1, 1));
}

/// A body with no size hint, like a file or a stream.
struct Unsized(Option<bytes::Bytes>);

impl http_body::Body for Unsized {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.take().map(|data| Ok(http_body::Frame::data(data))))
    }
}

#[tokio::test]
async fn an_unrecorded_response_is_delivered_once() {
    let facilitator = Arc::new(TestFacilitator::default());
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let layer = PaymentLayer::builder()
        .scheme(exact(&facilitator))
        .price(Price::parse(PRICE).unwrap())
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/stream",
            get(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                async {
                    axum::body::Body::new(Unsized(Some(bytes::Bytes::from_static(b"streamed"))))
                }
            }),
        )
        .layer(layer);
    let pay = || Some(payment(&PaymentSpec::default()));
    let answer = send(&app, req("/stream", pay())).await;
    assert_eq!(
        (answer.status, answer.text().as_str()),
        (StatusCode::OK, "streamed")
    );
    // Too large (here: unsized) to record, so a retry cannot replay it; it is not served again.
    let again = send(&app, req("/stream", pay())).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.json()["error"], "payment_already_used");
    assert!(again.headers.contains_key("payment-response"));
    assert_eq!(
        (calls.load(Ordering::SeqCst), facilitator.settle_calls()),
        (1, 1)
    );
}

#[tokio::test]
async fn a_retry_gets_its_recorded_answer_even_when_pricing_would_answer_early() {
    let facilitator = Arc::new(TestFacilitator::default());
    let stored = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let exists = stored.clone();
    let pricing = move |_: &PriceRequest<'_>| {
        let answer = if exists.load(Ordering::SeqCst) {
            Priced::Respond(
                http::Response::builder()
                    .status(409)
                    .body(bytes::Bytes::new())
                    .unwrap(),
            )
        } else {
            Priced::Charge(Price::parse(PRICE).unwrap())
        };
        PriceFuture::ready(answer)
    };
    let layer = PaymentLayer::builder()
        .scheme(exact(&facilitator))
        .pricing(pricing)
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/blob",
            axum::routing::put(move || {
                stored.store(true, Ordering::SeqCst);
                async { (StatusCode::CREATED, "stored") }
            }),
        )
        .layer(layer);
    let put = |spec: &PaymentSpec| {
        http::Request::put("/blob")
            .header("payment-signature", payment(spec))
            .body(axum::body::Body::empty())
            .unwrap()
    };
    assert_eq!(
        send(&app, put(&PaymentSpec::default())).await.status,
        StatusCode::CREATED
    );
    // The response was lost; the same payment gets the recorded 201, not pricing's 409…
    let retry = send(&app, put(&PaymentSpec::default())).await;
    assert_eq!(
        (retry.status, retry.text().as_str()),
        (StatusCode::CREATED, "stored")
    );
    assert!(retry.headers.contains_key("payment-response"));
    // …and another payment gets pricing's 409, uncharged.
    let other = send(
        &app,
        put(&PaymentSpec {
            nonce: 43,
            ..Default::default()
        }),
    )
    .await;
    assert_eq!(other.status, StatusCode::CONFLICT);
    assert_eq!(facilitator.settle_calls(), 1);
}

#[tokio::test]
async fn a_settle_failure_without_a_reason_is_an_unknown_outcome() {
    let h = Harness::new(SettlementOrder::AfterSuccess);
    h.facilitator
        .set_settle(SettleMode::Failure("unexpected_settle_error"));
    let answer = h.pay("/paid").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.headers.contains_key("retry-after"));
    assert!(!answer.headers.contains_key("payment-required"));
    let answer = h.pay("/paid").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(h.facilitator.settle_calls(), 1);
}

/// Hooks that write down what they are told, and may refuse, panic or hang on purpose.
#[derive(Default)]
struct Recorder {
    log: Arc<Mutex<Vec<String>>>,
    refuse: bool,
    panic: bool,
    hang: bool,
}

impl Recorder {
    fn write(&self, line: String) {
        self.log.lock().unwrap().push(line);
        assert!(!self.panic, "a hook that panics");
    }
}

fn describe(event: &PaymentEvent) -> String {
    format!(
        "{} {} {} {:?} {:?} {:?}",
        event.paid.intent,
        event.paid.payer,
        event.paid.amount.atomic(),
        event.paid.reference,
        event.resource,
        event.code
    )
}

impl PaymentHooks for Recorder {
    fn on_offered(self: Arc<Self>, event: Offered) -> BoxFuture<'static, ()> {
        let intents: Vec<String> = event.intents.iter().map(ToString::to_string).collect();
        self.write(format!(
            "offered {intents:?} {} {}",
            event.amount.atomic(),
            event.resource
        ));
        Box::pin(async {})
    }

    fn on_after_verify(self: Arc<Self>, event: PaymentEvent) -> BoxFuture<'static, Verdict> {
        self.write(format!("verified {}", describe(&event)));
        Box::pin(async move {
            if self.hang {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            if self.refuse {
                let refusal = http::Response::builder()
                    .status(StatusCode::FORBIDDEN)
                    .body(bytes::Bytes::from_static(b"not you"))
                    .unwrap();
                return Verdict::Refuse(refusal);
            }
            Verdict::Allow
        })
    }

    fn on_after_settle(self: Arc<Self>, event: PaymentEvent) -> BoxFuture<'static, ()> {
        self.write(format!("settled {}", describe(&event)));
        Box::pin(async {})
    }

    fn on_settle_failure(self: Arc<Self>, event: PaymentEvent) -> BoxFuture<'static, ()> {
        self.write(format!("failed {}", describe(&event)));
        Box::pin(async {})
    }

    fn on_settle_unknown(self: Arc<Self>, event: PaymentEvent) -> BoxFuture<'static, ()> {
        self.write(format!("unknown {}", describe(&event)));
        Box::pin(async {})
    }
}

/// The log once it has `count` lines (hooks that observe run in tasks of their own).
async fn logged(log: &Arc<Mutex<Vec<String>>>, count: usize) -> Vec<String> {
    for _ in 0..200 {
        if log.lock().unwrap().len() >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    log.lock().unwrap().clone()
}

#[tokio::test]
async fn hooks_see_each_step_of_a_payment_in_order() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let hooks = Recorder {
        log: log.clone(),
        ..Recorder::default()
    };
    let h = Harness::with(SettlementOrder::AfterSuccess, |b| b.hooks(hooks));
    let offer = send(&h.app, req("/paid", None)).await;
    assert_eq!(offer.status, StatusCode::PAYMENT_REQUIRED);
    let answer = h.pay("/paid").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let payer = payer(7).address().to_string();
    let reference = Some("ab".repeat(32));
    assert_eq!(
        logged(&log, 3).await,
        vec![
            format!("offered [\"x402/exact\"] {PRICE_ATOMIC} GET /paid"),
            format!("verified x402/exact {payer} {PRICE_ATOMIC} None Some(\"GET /paid\") None"),
            format!(
                "settled x402/exact {payer} {PRICE_ATOMIC} {reference:?} Some(\"GET /paid\") None"
            ),
        ]
    );

    // A refused settlement, and one whose outcome is unknown.
    h.facilitator
        .set_settle(SettleMode::Failure("insufficient_funds"));
    let other = |nonce| {
        payment(&PaymentSpec {
            nonce,
            ..PaymentSpec::default()
        })
    };
    send(&h.app, req("/paid", Some(other(2)))).await;
    h.facilitator
        .set_settle(SettleMode::Fail(FacilitatorError::Timeout));
    send(&h.app, req("/paid", Some(other(3)))).await;
    // The refusal is answered with a fresh offer; the unknown outcome with a 503.
    let lines = logged(&log, 8).await;
    assert!(
        lines.contains(&format!(
            "failed x402/exact {payer} {PRICE_ATOMIC} None Some(\"GET /paid\") Some(\"insufficient_funds\")"
        )),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("unknown x402/exact")
                && line.ends_with("Some(\"facilitator_unavailable\")")),
        "{lines:#?}"
    );
}

#[tokio::test]
async fn a_hook_may_refuse_a_verified_payment_before_any_money_moves() {
    let hooks = Recorder {
        refuse: true,
        ..Recorder::default()
    };
    let h = Harness::with(SettlementOrder::BeforeHandler, |b| b.hooks(hooks));
    let answer = h.pay("/paid").await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(answer.text(), "not you");
    assert_eq!(
        (h.facilitator.verify_calls(), h.facilitator.settle_calls()),
        (1, 0)
    );
    assert_eq!(h.calls(), 0, "the handler never ran");
}

#[tokio::test]
async fn hooks_that_panic_or_hang_leave_the_payment_served() {
    for (name, hooks) in [
        (
            "panicking",
            Recorder {
                panic: true,
                ..Recorder::default()
            },
        ),
        (
            "hanging",
            Recorder {
                hang: true,
                ..Recorder::default()
            },
        ),
    ] {
        let h = Harness::with(SettlementOrder::AfterSuccess, |b| {
            b.hooks(hooks).hook_timeout(Duration::from_millis(100))
        });
        let offer = send(&h.app, req("/paid", None)).await;
        assert_eq!(offer.status, StatusCode::PAYMENT_REQUIRED, "{name}");
        let started = std::time::Instant::now();
        let answer = h.pay("/paid").await;
        assert_eq!(answer.status, StatusCode::OK, "{name}: {}", answer.text());
        assert!(started.elapsed() < Duration::from_secs(5), "{name}");
        assert_eq!(h.facilitator.settle_calls(), 1, "{name}");
    }
}

#[tokio::test]
async fn a_completed_payment_answers_only_the_request_that_made_it() {
    let facilitator = Arc::new(TestFacilitator::default());
    // The price reads `x-key` (so the payment is bound to it) and ignores `x-trace`.
    let pricing = |request: &PriceRequest<'_>| {
        let _ = request.header("x-key");
        PriceFuture::ready(Priced::Charge(Price::parse(PRICE).unwrap()))
    };
    let layer = PaymentLayer::builder()
        .scheme(exact(&facilitator))
        .pricing(pricing)
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let handler = move |request: axum::extract::Request| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            format!(
                "{} {:?}",
                request.uri().path(),
                request.headers().get("x-key")
            )
        }
    };
    let app = Router::new()
        .route("/a", get(handler.clone()).post(handler.clone()))
        .route("/b", get(handler))
        .layer(layer);
    let send_with = |method: &str, path: &str, key: &str, trace: &str| {
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, "example.com")
            .header("payment-signature", payment(&PaymentSpec::default()))
            .header("x-key", key)
            .header("x-trace", trace)
            .body(axum::body::Body::empty())
            .unwrap();
        send(&app, request)
    };
    let first = send_with("GET", "/a", "k1", "t1").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    // The same request (a header pricing did not read may change): the recorded answer.
    let again = send_with("GET", "/a", "k1", "t2").await;
    assert_eq!(
        (again.status, again.body.clone()),
        (StatusCode::OK, first.body.clone())
    );
    // Another value of a header pricing read, another path, another method: 409, no content.
    for (method, path, key) in [
        ("GET", "/a", "k2"),
        ("GET", "/b", "k1"),
        ("POST", "/a", "k1"),
    ] {
        let answer = send_with(method, path, key, "t1").await;
        assert_eq!(answer.status, StatusCode::CONFLICT, "{method} {path} {key}");
        assert_eq!(answer.json()["error"], "payment_already_used");
    }
    assert_eq!(
        (calls.load(Ordering::SeqCst), facilitator.settle_calls()),
        (1, 1)
    );
}
