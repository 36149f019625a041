//! End to end on the sandbox: `PaymentLayer` + `Exact` + `LocalFacilitator` over real Soroban
//! JSON-RPC (HTTPS on loopback), with payments built the way the official x402 client builds
//! them (simulate from the all-zeros account, sign the recorded authorization, re-simulate).
#![cfg(feature = "sandbox")]

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderValue, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_paywall::sandbox::{RpcServer, Sandbox, SandboxConfig, ServeConfig};
use tower_paywall::stellar::rpc::{JsonRpcClient, SorobanRpc, TransactionHash, TransactionStatus};
use tower_paywall::stellar::xdr::{
    DecoratedSignature, Limits, SignatureHint, SorobanAuthorizationEntry,
    SorobanAuthorizedInvocation, SorobanCredentials, TransactionEnvelope, WriteXdr,
};
use tower_paywall::stellar::{
    Address, Keypair, Network, TransferOrder, prepare_transfer, set_authorization,
};
use tower_paywall::x402::{
    Exact, Facilitator, FacilitatorRequest, HttpFacilitator, LocalFacilitator, PaymentRequired,
    PaymentRequirements, SettleResponse, facilitator_router,
};
use tower_paywall::{PaymentLayer, Price};

const PRICE: &str = "0.01";
const PRICE_ATOMIC: i128 = 100_000;

struct World {
    sandbox: Sandbox,
    _server: RpcServer,
    rpc: Arc<JsonRpcClient>,
    facilitator: LocalFacilitator,
    /// The same facilitator, reached over HTTP through its server (Bearer-authenticated).
    remote: HttpFacilitator,
    payer: Keypair,
    pay_to: Address,
}

impl World {
    /// The facilitator in-process and over HTTP: every test runs against both.
    fn facilitators(&self) -> [(&'static str, Arc<dyn Facilitator>); 2] {
        [
            ("in-process", Arc::new(self.facilitator.clone())),
            ("over HTTP", Arc::new(self.remote.clone())),
        ]
    }
}

/// A sandbox closing a ledger every 100 ms, served over HTTPS, with a facilitator of two
/// funded channel accounts, a funded payer and a funded recipient.
async fn world() -> World {
    let config = SandboxConfig::default().ledger_period(Duration::from_millis(100));
    let sandbox = Sandbox::start(config).expect("the sandbox starts");
    let server = sandbox.serve(ServeConfig::default()).await.expect("served");
    let rpc = JsonRpcClient::builder(server.https_url().expect("https"))
        .root_certificate_pem(server.certificate_pem().as_bytes())
        .build()
        .expect("an RPC client");
    let rpc = Arc::new(rpc);
    let fee_payer = sandbox.funded_keypair().await.unwrap();
    let channel = sandbox.funded_keypair().await.unwrap();
    let facilitator = LocalFacilitator::builder_shared(rpc.clone(), Network::testnet(), fee_payer)
        .channel(channel)
        .build()
        .unwrap();
    let payer = sandbox.funded_keypair().await.unwrap();
    let pay_to = sandbox.funded_keypair().await.unwrap().address();
    let router = facilitator_router(Arc::new(facilitator.clone()), Some("k3y".into()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let remote = HttpFacilitator::builder(format!("http://{address}"))
        .api_key("k3y")
        .build()
        .unwrap();
    World {
        sandbox,
        _server: server,
        rpc,
        facilitator,
        remote,
        payer,
        pay_to,
    }
}

fn app(world: &World, facilitator: Arc<dyn Facilitator>) -> Router {
    let exact = Exact::builder_shared(Network::testnet(), world.pay_to, facilitator)
        .build()
        .unwrap();
    let layer = PaymentLayer::builder()
        .scheme(exact)
        .price(Price::parse(PRICE).unwrap())
        .build()
        .unwrap();
    Router::new()
        .route("/paid", get(|| async { "content" }))
        .layer(layer)
}

async fn send(app: &Router, payment: Option<HeaderValue>) -> (StatusCode, http::HeaderMap, String) {
    let mut request = Request::builder()
        .uri("/paid")
        .header("host", "example.com");
    if let Some(payment) = payment {
        request = request.header("payment-signature", payment);
    }
    let response = app
        .clone()
        .oneshot(request.body(axum::body::Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into(),
    )
}

/// The offer of a 402, as a client reads it.
async fn offer(app: &Router) -> PaymentRequirements {
    let (status, headers, _) = send(app, None).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    let bytes = STANDARD
        .decode(headers["payment-required"].as_bytes())
        .unwrap();
    let required: PaymentRequired = serde_json::from_slice(&bytes).unwrap();
    required.accepts[0].clone()
}

fn first_auth(envelope: &TransactionEnvelope) -> Vec<SorobanAuthorizationEntry> {
    envelope.auths().cloned().collect()
}

/// How a payment is tampered with after signing (or not).
type Tamper = fn(&mut TransactionEnvelope);

/// A signed payment transaction, built as `@x402/stellar` builds it, then `tamper`ed with.
async fn payment_transaction(
    rpc: &dyn SorobanRpc,
    payer: &Keypair,
    requirements: &PaymentRequirements,
    valid_for_ledgers: u32,
    tamper: Tamper,
) -> String {
    let order = TransferOrder::sponsored(
        requirements.asset.parse().unwrap(),
        requirements.pay_to.parse().unwrap(),
        requirements.amount.parse().unwrap(),
        valid_for_ledgers,
    );
    let mut envelope = prepare_transfer(rpc, &Network::testnet(), payer, &order)
        .await
        .unwrap();
    tamper(&mut envelope);
    envelope.to_xdr_base64(Limits::none()).unwrap()
}

fn payload(requirements: &PaymentRequirements, transaction: &str) -> String {
    serde_json::json!({
        "x402Version": 2,
        "payload": { "transaction": transaction },
        "resource": { "url": "http://example.com/paid" },
        "accepted": requirements,
    })
    .to_string()
}

fn header(requirements: &PaymentRequirements, transaction: &str) -> HeaderValue {
    HeaderValue::from_str(&STANDARD.encode(payload(requirements, transaction))).unwrap()
}

fn untouched(_: &mut TransactionEnvelope) {}

async fn usdc(world: &World, holder: &Address) -> i128 {
    support::usdc_of(&world.sandbox, holder).await
}

#[tokio::test]
async fn a_payment_moves_usdc_through_the_layer() {
    let world = world().await;
    for (name, facilitator) in world.facilitators() {
        let app = app(&world, facilitator);
        let requirements = offer(&app).await;
        assert_eq!(requirements.asset, world.sandbox.usdc().to_string());
        let payer_before = usdc(&world, &world.payer.address()).await;
        let pay_to_before = usdc(&world, &world.pay_to).await;
        let transaction =
            payment_transaction(&*world.rpc, &world.payer, &requirements, 12, untouched).await;
        let (status, headers, body) = send(&app, Some(header(&requirements, &transaction))).await;
        assert_eq!(status, StatusCode::OK, "{name}: {body}");
        assert_eq!(body, "content");
        let settled: SettleResponse = serde_json::from_slice(
            &STANDARD
                .decode(headers["payment-response"].as_bytes())
                .unwrap(),
        )
        .unwrap();
        assert!(settled.success, "{name}");
        assert_eq!(settled.payer, Some(world.payer.address().to_string()));
        let hash: TransactionHash = settled.transaction.parse().unwrap();
        let info = world.rpc.transaction(&hash).await.unwrap();
        assert_eq!(info.status, TransactionStatus::Success, "{name}");
        assert_eq!(
            usdc(&world, &world.payer.address()).await,
            payer_before - PRICE_ATOMIC
        );
        assert_eq!(
            usdc(&world, &world.pay_to).await,
            pay_to_before + PRICE_ATOMIC
        );
        // One of the facilitator's accounts paid the fee; the payer paid only the price.
        let source = match info.envelope.unwrap() {
            TransactionEnvelope::Tx(v1) => Address::from_muxed_account(&v1.tx.source_account),
            _ => unreachable!(),
        };
        assert!(world.facilitator.accounts().contains(&source), "{name}");
    }
}

fn request<'a>(
    raw: &'a serde_json::value::RawValue,
    requirements: &'a PaymentRequirements,
) -> FacilitatorRequest<'a> {
    FacilitatorRequest {
        x402_version: 2,
        payment_payload: raw,
        payment_requirements: requirements,
    }
}

fn raw(requirements: &PaymentRequirements, transaction: &str) -> Box<serde_json::value::RawValue> {
    serde_json::value::RawValue::from_string(payload(requirements, transaction)).unwrap()
}

#[tokio::test]
async fn the_same_authorization_settled_twice_moves_money_once() {
    let world = world().await;
    for (name, facilitator) in world.facilitators() {
        let requirements = offer(&app(&world, facilitator.clone())).await;
        let transaction =
            payment_transaction(&*world.rpc, &world.payer, &requirements, 12, untouched).await;
        let raw = raw(&requirements, &transaction);
        let request = request(&raw, &requirements);
        let before = usdc(&world, &world.payer.address()).await;
        // Two settlements of one payment at once, from two channel accounts: both may pass
        // simulation and reach the ledger, which refuses the second (the nonce is spent).
        let (a, b) = tokio::join!(facilitator.settle(&request), facilitator.settle(&request));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(
            u8::from(a.success) + u8::from(b.success),
            1,
            "{name}: {a:?} {b:?}"
        );
        let failed = if a.success { b } else { a };
        assert!(
            matches!(
                failed.error_reason.as_deref(),
                Some(
                    "settle_exact_stellar_transaction_failed"
                        | "invalid_exact_stellar_payload_simulation_failed"
                )
            ),
            "{name}: {failed:?}"
        );
        assert_eq!(
            usdc(&world, &world.payer.address()).await,
            before - PRICE_ATOMIC
        );
        // And again, later: simulation sees the spent nonce.
        let again = facilitator.settle(&request).await.unwrap();
        assert!(!again.success, "{name}");
        assert_eq!(
            usdc(&world, &world.payer.address()).await,
            before - PRICE_ATOMIC
        );
    }
}

#[tokio::test]
async fn an_expired_authorization_is_refused() {
    let world = world().await;
    for (name, facilitator) in world.facilitators() {
        let app = app(&world, facilitator.clone());
        let requirements = offer(&app).await;
        // Valid for three ledgers (300 ms here): long enough to prepare, then let it expire.
        let transaction =
            payment_transaction(&*world.rpc, &world.payer, &requirements, 3, untouched).await;
        tokio::time::sleep(Duration::from_millis(900)).await;
        let raw = raw(&requirements, &transaction);
        let verdict = facilitator
            .verify(&request(&raw, &requirements))
            .await
            .unwrap();
        assert_eq!(
            verdict.invalid_reason.as_deref(),
            Some("invalid_exact_stellar_payload_auth_already_expired"),
            "{name}"
        );
        let (status, _, _) = send(&app, Some(header(&requirements, &transaction))).await;
        assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{name}");
    }
}

fn add_sub_invocation(envelope: &mut TransactionEnvelope) {
    let mut auth = first_auth(envelope);
    let root = auth[0].root_invocation.clone();
    auth[0].root_invocation.sub_invocations = vec![SorobanAuthorizedInvocation {
        function: root.function,
        sub_invocations: Default::default(),
    }]
    .try_into()
    .unwrap();
    set_authorization(envelope, auth).unwrap();
}

fn source_account_credentials(envelope: &mut TransactionEnvelope) {
    let mut auth = first_auth(envelope);
    auth[0].credentials = SorobanCredentials::SourceAccount;
    set_authorization(envelope, auth).unwrap();
}

fn envelope_signature(envelope: &mut TransactionEnvelope) {
    if let TransactionEnvelope::Tx(v1) = envelope {
        v1.signatures = vec![DecoratedSignature {
            hint: SignatureHint([0; 4]),
            signature: vec![0u8; 64].try_into().unwrap(),
        }]
        .try_into()
        .unwrap();
    }
}

#[tokio::test]
async fn bad_payments_fail_verification_with_the_documented_reason() {
    let world = world().await;
    let rpc = &*world.rpc;
    let requirements = offer(&app(&world, Arc::new(world.facilitator.clone()))).await;
    let good = payment_transaction(rpc, &world.payer, &requirements, 12, untouched).await;
    let mut dearer = requirements.clone();
    dearer.amount = (PRICE_ATOMIC + 1).to_string();
    let mut elsewhere = requirements.clone();
    elsewhere.pay_to = world
        .sandbox
        .funded_keypair()
        .await
        .unwrap()
        .address()
        .to_string();
    let mut lumens = requirements.clone();
    lumens.asset = world.sandbox.xlm().to_string();
    let mut pubnet = requirements.clone();
    pubnet.network = "stellar:pubnet".into();
    let mut cases = vec![
        (requirements.clone(), good.clone(), None),
        (
            dearer,
            good.clone(),
            Some("invalid_exact_stellar_payload_wrong_amount"),
        ),
        (
            elsewhere,
            good.clone(),
            Some("invalid_exact_stellar_payload_wrong_recipient"),
        ),
        (lumens, good.clone(), Some("unsupported_asset")),
        (pubnet, good, Some("invalid_network")),
    ];
    let tampered: [(Tamper, &str); 3] = [
        (
            add_sub_invocation,
            "invalid_exact_stellar_payload_has_subinvocations",
        ),
        (
            source_account_credentials,
            "invalid_exact_stellar_payload_unsupported_credential_type",
        ),
        (
            envelope_signature,
            "invalid_exact_stellar_payload_has_envelope_signatures",
        ),
    ];
    for (tamper, reason) in tampered {
        let transaction = payment_transaction(rpc, &world.payer, &requirements, 12, tamper).await;
        cases.push((requirements.clone(), transaction, Some(reason)));
    }
    for (name, facilitator) in world.facilitators() {
        for (requirements, transaction, reason) in &cases {
            let raw = raw(requirements, transaction);
            let verdict = facilitator
                .verify(&request(&raw, requirements))
                .await
                .unwrap();
            assert_eq!(verdict.invalid_reason.as_deref(), *reason, "{name}");
            assert_eq!(verdict.is_valid, reason.is_none(), "{name}");
        }
    }
}

#[tokio::test]
async fn the_facilitator_server_refuses_requests_without_its_key() {
    let world = world().await;
    assert!(world.remote.supported().await.is_ok());
    let address = world.remote.base_url().to_owned();
    let anonymous = HttpFacilitator::builder(address).build().unwrap();
    assert!(anonymous.supported().await.is_err());
    let wrong = HttpFacilitator::builder(world.remote.base_url())
        .api_key("nope")
        .build()
        .unwrap();
    assert!(wrong.supported().await.is_err());
}

#[tokio::test]
async fn a_fee_bumped_settlement_is_paid_by_the_bump_account() {
    let world = world().await;
    let source = world.sandbox.funded_keypair().await.unwrap();
    let bumper = world.sandbox.funded_keypair().await.unwrap();
    let facilitator =
        LocalFacilitator::builder_shared(world.rpc.clone(), Network::testnet(), source.clone())
            .fee_bump(bumper.clone())
            .build()
            .unwrap();
    assert!(facilitator.accounts().contains(&bumper.address()));
    let app = app(&world, Arc::new(facilitator));
    let requirements = offer(&app).await;
    let xlm = |holder: Address| {
        let sandbox = world.sandbox.clone();
        async move { sandbox.balance(&sandbox.xlm(), &holder).await.unwrap() }
    };
    let (source_before, bumper_before) = (xlm(source.address()).await, xlm(bumper.address()).await);
    let pay_to_before = usdc(&world, &world.pay_to).await;
    let transaction =
        payment_transaction(&*world.rpc, &world.payer, &requirements, 12, untouched).await;
    let (status, headers, body) = send(&app, Some(header(&requirements, &transaction))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        usdc(&world, &world.pay_to).await,
        pay_to_before + PRICE_ATOMIC
    );
    let settled: SettleResponse = serde_json::from_slice(
        &STANDARD
            .decode(headers["payment-response"].as_bytes())
            .unwrap(),
    )
    .unwrap();
    let info = world
        .rpc
        .transaction(&settled.transaction.parse().unwrap())
        .await
        .unwrap();
    assert!(info.fee_bump);
    assert_eq!(
        xlm(source.address()).await,
        source_before,
        "the source lent only its sequence"
    );
    assert!(
        xlm(bumper.address()).await < bumper_before,
        "the bump account paid the fee"
    );
}

/// What the lossy gateway in front of the facilitator server does with `/settle`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SettleFate {
    /// Passes it on and back.
    Deliver,
    /// Passes it on (the facilitator settles), then loses the answer: 504.
    LoseAnswer,
    /// Loses the request itself (the facilitator never sees it): 504.
    LoseRequest,
}

/// A gateway in front of the facilitator server that can lose a `/settle` exchange: the test
/// double at the HTTP boundary that proves how the layer ends a payment whose answer is lost.
/// Everything else is passed on untouched.
async fn lossy_gateway(world: &World, fate: Arc<std::sync::Mutex<SettleFate>>) -> HttpFacilitator {
    use axum::extract::Request as AxumRequest;
    let router = facilitator_router(Arc::new(world.facilitator.clone()), Some("k3y".into()));
    let upstream = support::serve(router).await;
    // Plain HTTP on loopback, but the client wants a TLS provider all the same.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let proxy = Router::new().fallback(move |request: AxumRequest| {
        let (client, upstream, fate) = (client.clone(), upstream.clone(), fate.clone());
        async move {
            let fate = if request.uri().path() == "/settle" {
                *fate.lock().unwrap()
            } else {
                SettleFate::Deliver
            };
            let gateway_timeout = (StatusCode::GATEWAY_TIMEOUT, "gateway timeout").into_response();
            if fate == SettleFate::LoseRequest {
                return gateway_timeout;
            }
            let (parts, body) = request.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let mut forwarded = client.request(parts.method, format!("{upstream}{}", parts.uri));
            for (name, value) in &parts.headers {
                if name != http::header::HOST {
                    forwarded = forwarded.header(name, value);
                }
            }
            let answer = forwarded.body(body).send().await.unwrap();
            let status = answer.status();
            let bytes = answer.bytes().await.unwrap();
            if fate == SettleFate::LoseAnswer {
                return gateway_timeout;
            }
            (
                status,
                [(http::header::CONTENT_TYPE, "application/json")],
                bytes,
            )
                .into_response()
        }
    });
    let gateway = support::serve(proxy).await;
    HttpFacilitator::builder(gateway)
        .api_key("k3y")
        .build()
        .unwrap()
}

/// Hooks that write down the payments reconciled.
#[derive(Clone, Default)]
struct Reconciliations(Arc<std::sync::Mutex<Vec<tower_paywall::layer::PaymentEvent>>>);

impl tower_paywall::layer::PaymentHooks for Reconciliations {
    fn on_reconciled(
        self: Arc<Self>,
        event: tower_paywall::layer::PaymentEvent,
    ) -> tower_paywall::BoxFuture<'static, ()> {
        self.0.lock().unwrap().push(event);
        Box::pin(async {})
    }
}

/// The layer with an `Exact` that reads the ledger to reconcile, through `facilitator`.
fn reconciling_layer(world: &World, facilitator: HttpFacilitator) -> PaymentLayer {
    reconciling_layer_with(world, facilitator, Reconciliations::default())
}

fn reconciling_layer_with(
    world: &World,
    facilitator: HttpFacilitator,
    hooks: Reconciliations,
) -> PaymentLayer {
    let exact = Exact::builder(Network::testnet(), world.pay_to, facilitator)
        .rpc(world.rpc.clone())
        .build()
        .unwrap();
    PaymentLayer::builder()
        .scheme(exact)
        .price(Price::parse(PRICE).unwrap())
        .reconcile_interval(Duration::from_millis(200))
        .hooks(hooks)
        .build()
        .unwrap()
}

fn reconciling_app(world: &World, facilitator: HttpFacilitator) -> Router {
    Router::new()
        .route("/paid", get(|| async { "content" }))
        .layer(reconciling_layer(world, facilitator))
}

fn settle_response(headers: &http::HeaderMap) -> SettleResponse {
    serde_json::from_slice(
        &STANDARD
            .decode(headers["payment-response"].as_bytes())
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_settlement_whose_answer_was_lost_is_served_from_the_ledger_on_retry() {
    let world = world().await;
    let fate = Arc::new(std::sync::Mutex::new(SettleFate::LoseAnswer));
    let app = reconciling_app(&world, lossy_gateway(&world, fate.clone()).await);
    let requirements = offer(&app).await;
    let transaction =
        payment_transaction(&*world.rpc, &world.payer, &requirements, 12, untouched).await;
    let payment = header(&requirements, &transaction);
    let payer_before = usdc(&world, &world.payer.address()).await;

    // The facilitator settled; its answer never came back: retry with the same payment.
    let (status, headers, body) = send(&app, Some(payment.clone())).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(headers.contains_key("retry-after"));
    assert_eq!(
        usdc(&world, &world.payer.address()).await,
        payer_before - PRICE_ATOMIC,
        "the money moved"
    );

    // The retry asks the ledger: the authorization was consumed by a transfer to us.
    let (status, headers, body) = send(&app, Some(payment.clone())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, "content");
    let settled = settle_response(&headers);
    assert!(settled.success);
    assert_eq!(settled.payer, Some(world.payer.address().to_string()));
    assert_eq!(settled.amount.as_deref(), Some("100000"));
    let hash: TransactionHash = settled.transaction.parse().unwrap();
    let info = world.rpc.transaction(&hash).await.unwrap();
    assert_eq!(info.status, TransactionStatus::Success);

    // Once more: the recorded answer, and still one charge.
    *fate.lock().unwrap() = SettleFate::Deliver;
    let (status, again, _) = send(&app, Some(payment)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["payment-response"], headers["payment-response"]);
    assert_eq!(
        usdc(&world, &world.payer.address()).await,
        payer_before - PRICE_ATOMIC
    );
}

#[tokio::test]
async fn a_lost_settlement_that_never_reached_the_ledger_is_released_once_it_expires() {
    let world = world().await;
    let fate = Arc::new(std::sync::Mutex::new(SettleFate::LoseRequest));
    let app = reconciling_app(&world, lossy_gateway(&world, fate.clone()).await);
    let requirements = offer(&app).await;
    // Valid for 12 ledgers (1.2 s here), the most the facilitator takes for 60 s.
    let transaction =
        payment_transaction(&*world.rpc, &world.payer, &requirements, 12, untouched).await;
    let payment = header(&requirements, &transaction);
    let payer_before = usdc(&world, &world.payer.address()).await;

    let (status, _, body) = send(&app, Some(payment.clone())).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    // While the authorization could still be used, nobody can say: still 503.
    let (status, _, body) = send(&app, Some(payment.clone())).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");

    // Once its expiration ledger has closed with no transfer: definitely not paid.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (status, headers, body) = loop {
        let answer = send(&app, Some(payment.clone())).await;
        if answer.0 != StatusCode::SERVICE_UNAVAILABLE || std::time::Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["error"], "payment_not_settled");
    assert!(headers.contains_key("payment-required"), "fresh offers");
    assert_eq!(usdc(&world, &world.payer.address()).await, payer_before);

    // The payer pays again, and is served.
    *fate.lock().unwrap() = SettleFate::Deliver;
    let transaction =
        payment_transaction(&*world.rpc, &world.payer, &requirements, 12, untouched).await;
    let (status, _, body) = send(&app, Some(header(&requirements, &transaction))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        usdc(&world, &world.payer.address()).await,
        payer_before - PRICE_ATOMIC
    );
}

#[tokio::test]
async fn the_background_reconciler_ends_a_lost_settlement_nobody_retried() {
    let world = world().await;
    let fate = Arc::new(std::sync::Mutex::new(SettleFate::LoseAnswer));
    let reconciled = Reconciliations::default();
    let layer = reconciling_layer_with(
        &world,
        lossy_gateway(&world, fate.clone()).await,
        reconciled.clone(),
    );
    let app = Router::new()
        .route("/paid", get(|| async { "content" }))
        .layer(layer.clone());
    let requirements = offer(&app).await;
    let transaction =
        payment_transaction(&*world.rpc, &world.payer, &requirements, 12, untouched).await;
    let payment = header(&requirements, &transaction);
    let payer_before = usdc(&world, &world.payer.address()).await;
    let (status, _, body) = send(&app, Some(payment.clone())).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let lost = std::time::Instant::now();

    // Nobody retries; the reconciler finds the payment in the store and ends it.
    let report = layer.reconcile_pending().await;
    let took = lost.elapsed();
    assert_eq!((report.seen, report.settled, report.not_settled), (1, 1, 0));
    eprintln!("lost answer to reconciled record: {took:?} (ledgers every 100 ms)");
    let report = layer.reconcile_pending().await;
    assert_eq!(report.seen, 0, "nothing pending any more");
    // The operator's hook was told, with the transaction found.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let events = reconciled.0.lock().unwrap().clone();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].paid.payer, world.payer.address().to_string());
    assert_eq!(events[0].paid.reference.as_ref().map(String::len), Some(64));
    assert_eq!(events[0].code, None, "settled");

    // The next retry is served at once, from the record, without asking again.
    *fate.lock().unwrap() = SettleFate::LoseRequest;
    let (status, headers, body) = send(&app, Some(payment)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(settle_response(&headers).success);
    assert_eq!(
        usdc(&world, &world.payer.address()).await,
        payer_before - PRICE_ATOMIC
    );
}
