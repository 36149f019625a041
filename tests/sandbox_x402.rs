//! End to end on the sandbox: `PaymentLayer` + `Exact` + `LocalFacilitator` over real Soroban
//! JSON-RPC (HTTPS on loopback), with payments built the way the official x402 client builds
//! them (simulate from the all-zeros account, sign the recorded authorization, re-simulate).
#![cfg(feature = "sandbox")]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderValue, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_paywall::sandbox::{RpcServer, Sandbox, SandboxConfig, ServeConfig};
use tower_paywall::stellar::rpc::{JsonRpcClient, SorobanRpc, TransactionHash, TransactionStatus};
use tower_paywall::stellar::xdr::{
    DecoratedSignature, Limits, OperationBody, SignatureHint, SorobanAuthorizationEntry,
    SorobanAuthorizedInvocation, SorobanCredentials, TransactionEnvelope, TransactionExt, WriteXdr,
};
use tower_paywall::stellar::{
    Address, CredentialsArm, Keypair, NULL_ACCOUNT, Network, TransferRequest, build_transfer,
    sign_payer,
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
    payer: Keypair,
    pay_to: Address,
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
    World {
        sandbox,
        _server: server,
        rpc,
        facilitator,
        payer,
        pay_to,
    }
}

fn app(world: &World, facilitator: impl Facilitator) -> Router {
    let exact = Exact::builder(Network::testnet(), world.pay_to, facilitator)
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

fn operation_auth(envelope: &mut TransactionEnvelope, auth: Vec<SorobanAuthorizationEntry>) {
    let TransactionEnvelope::Tx(v1) = envelope else {
        unreachable!("clients build v1 envelopes")
    };
    let mut operations = v1.tx.operations.to_vec();
    if let OperationBody::InvokeHostFunction(invoke) = &mut operations[0].body {
        invoke.auth = auth.try_into().unwrap();
    }
    v1.tx.operations = operations.try_into().unwrap();
}

fn first_auth(envelope: &TransactionEnvelope) -> Vec<SorobanAuthorizationEntry> {
    envelope.auths().cloned().collect()
}

/// How a payment is tampered with after signing (or not).
type Tamper = fn(&mut TransactionEnvelope);

/// A signed payment transaction, built as `@x402/stellar` builds it.
async fn payment_transaction(
    rpc: &dyn SorobanRpc,
    payer: &Keypair,
    requirements: &PaymentRequirements,
    expiration_ledgers: u32,
    tamper: Tamper,
) -> String {
    let latest = rpc.latest_ledger().await.unwrap().sequence;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut envelope = build_transfer(&TransferRequest {
        source: NULL_ACCOUNT,
        sequence: 1,
        fee: 100,
        contract: requirements.asset.parse().unwrap(),
        from: payer.address(),
        to: requirements.pay_to.parse().unwrap(),
        amount: requirements.amount.parse().unwrap(),
        nonce: 0,
        signature_expiration_ledger: 0,
        max_time: now + 300,
        credentials: CredentialsArm::Address,
    })
    .unwrap();
    operation_auth(&mut envelope, Vec::new());
    let simulation = rpc.simulate_transaction(&envelope).await.unwrap();
    assert!(simulation.is_success(), "{:?}", simulation.error);
    operation_auth(&mut envelope, simulation.results[0].auth.clone());
    sign_payer(
        &mut envelope,
        payer,
        &Network::testnet().id(),
        latest + expiration_ledgers,
    )
    .unwrap();
    let simulation = rpc.simulate_transaction(&envelope).await.unwrap();
    assert!(simulation.is_success(), "{:?}", simulation.error);
    if let TransactionEnvelope::Tx(v1) = &mut envelope {
        v1.tx.ext = TransactionExt::V1(simulation.transaction_data.unwrap());
        v1.tx.fee = 100 + u32::try_from(simulation.min_resource_fee).unwrap();
    }
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
    world
        .sandbox
        .balance(&world.sandbox.usdc(), holder)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_payment_moves_usdc_through_the_layer() {
    let world = world().await;
    let app = app(&world, world.facilitator.clone());
    let requirements = offer(&app).await;
    assert_eq!(requirements.asset, world.sandbox.usdc().to_string());
    let (payer_before, pay_to_before) = (
        usdc(&world, &world.payer.address()).await,
        usdc(&world, &world.pay_to).await,
    );
    let transaction =
        payment_transaction(&*world.rpc, &world.payer, &requirements, 12, untouched).await;
    let (status, headers, body) = send(&app, Some(header(&requirements, &transaction))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, "content");
    let settled: SettleResponse = serde_json::from_slice(
        &STANDARD
            .decode(headers["payment-response"].as_bytes())
            .unwrap(),
    )
    .unwrap();
    assert!(settled.success);
    assert_eq!(settled.payer, Some(world.payer.address().to_string()));
    let hash: TransactionHash = settled.transaction.parse().unwrap();
    let info = world.rpc.transaction(&hash).await.unwrap();
    assert_eq!(info.status, TransactionStatus::Success);
    assert_eq!(
        usdc(&world, &world.payer.address()).await,
        payer_before - PRICE_ATOMIC
    );
    assert_eq!(
        usdc(&world, &world.pay_to).await,
        pay_to_before + PRICE_ATOMIC
    );
    // The facilitator's channel account paid the fee; the payer paid nothing but the price.
    let source = match info.envelope.unwrap() {
        TransactionEnvelope::Tx(v1) => Address::from_muxed_account(&v1.tx.source_account),
        _ => unreachable!(),
    };
    assert!(world.facilitator.accounts().contains(&source));
}

#[tokio::test]
async fn the_same_authorization_settled_twice_moves_money_once() {
    let world = world().await;
    let app = app(&world, world.facilitator.clone());
    let requirements = offer(&app).await;
    let transaction =
        payment_transaction(&*world.rpc, &world.payer, &requirements, 12, untouched).await;
    let raw =
        serde_json::value::RawValue::from_string(payload(&requirements, &transaction)).unwrap();
    let request = FacilitatorRequest {
        x402_version: 2,
        payment_payload: &raw,
        payment_requirements: &requirements,
    };
    let before = usdc(&world, &world.payer.address()).await;
    // Two settlements of one payment at once, from two channel accounts: both pass simulation,
    // both reach the ledger, and the ledger refuses the second (the nonce is spent).
    let (a, b) = tokio::join!(
        world.facilitator.settle(&request),
        world.facilitator.settle(&request)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(u8::from(a.success) + u8::from(b.success), 1, "{a:?} {b:?}");
    let failed = if a.success { b } else { a };
    assert!(
        matches!(
            failed.error_reason.as_deref(),
            Some(
                "settle_exact_stellar_transaction_failed"
                    | "invalid_exact_stellar_payload_simulation_failed"
            )
        ),
        "{failed:?}"
    );
    assert_eq!(
        usdc(&world, &world.payer.address()).await,
        before - PRICE_ATOMIC
    );
    // And again, later: simulation sees the spent nonce.
    let again = world.facilitator.settle(&request).await.unwrap();
    assert!(!again.success);
    assert_eq!(
        usdc(&world, &world.payer.address()).await,
        before - PRICE_ATOMIC
    );
}

#[tokio::test]
async fn an_expired_authorization_is_refused() {
    let world = world().await;
    let app = app(&world, world.facilitator.clone());
    let requirements = offer(&app).await;
    let transaction =
        payment_transaction(&*world.rpc, &world.payer, &requirements, 1, untouched).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let raw =
        serde_json::value::RawValue::from_string(payload(&requirements, &transaction)).unwrap();
    let request = FacilitatorRequest {
        x402_version: 2,
        payment_payload: &raw,
        payment_requirements: &requirements,
    };
    let verdict = world.facilitator.verify(&request).await.unwrap();
    assert_eq!(
        verdict.invalid_reason.as_deref(),
        Some("invalid_exact_stellar_payload_auth_already_expired")
    );
    let (status, _, _) = send(&app, Some(header(&requirements, &transaction))).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
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
    operation_auth(envelope, auth);
}

fn source_account_credentials(envelope: &mut TransactionEnvelope) {
    let mut auth = first_auth(envelope);
    auth[0].credentials = SorobanCredentials::SourceAccount;
    operation_auth(envelope, auth);
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
    let app = app(&world, world.facilitator.clone());
    let requirements = offer(&app).await;
    let rpc = &*world.rpc;
    let verify = |requirements: PaymentRequirements, transaction: String| {
        let facilitator = world.facilitator.clone();
        async move {
            let raw =
                serde_json::value::RawValue::from_string(payload(&requirements, &transaction))
                    .unwrap();
            let request = FacilitatorRequest {
                x402_version: 2,
                payment_payload: &raw,
                payment_requirements: &requirements,
            };
            facilitator.verify(&request).await.unwrap().invalid_reason
        }
    };
    let good = payment_transaction(rpc, &world.payer, &requirements, 12, untouched).await;
    assert_eq!(verify(requirements.clone(), good.clone()).await, None);

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
    let cases = [
        (
            dearer,
            good.clone(),
            "invalid_exact_stellar_payload_wrong_amount",
        ),
        (
            elsewhere,
            good.clone(),
            "invalid_exact_stellar_payload_wrong_recipient",
        ),
        (lumens, good.clone(), "unsupported_asset"),
        (pubnet, good.clone(), "invalid_network"),
    ];
    for (requirements, transaction, reason) in cases {
        assert_eq!(
            verify(requirements, transaction).await.as_deref(),
            Some(reason)
        );
    }
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
        assert_eq!(
            verify(requirements.clone(), transaction).await.as_deref(),
            Some(reason)
        );
    }
}

#[tokio::test]
async fn the_http_facilitator_against_our_facilitator_server_moves_usdc() {
    let world = world().await;
    let router = facilitator_router(Arc::new(world.facilitator.clone()), Some("k3y".into()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let remote = HttpFacilitator::builder(format!("http://{address}"))
        .api_key("k3y")
        .build()
        .unwrap();
    // Without the key, nothing.
    let anonymous = HttpFacilitator::builder(format!("http://{address}"))
        .build()
        .unwrap();
    assert!(anonymous.supported().await.is_err());
    let app = app(&world, remote);
    let requirements = offer(&app).await;
    let before = usdc(&world, &world.pay_to).await;
    let transaction =
        payment_transaction(&*world.rpc, &world.payer, &requirements, 12, untouched).await;
    let (status, _, body) = send(&app, Some(header(&requirements, &transaction))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(usdc(&world, &world.pay_to).await, before + PRICE_ATOMIC);
}
