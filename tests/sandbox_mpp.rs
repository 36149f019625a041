//! End to end on the sandbox: MPP `charge` (method `stellar`) through `PaymentLayer`, beside
//! x402 `exact` in the same 402. Pull (the server submits the client's signed transfer) and push
//! (`signedHash`) move USDC; every refusal has its problem type.
#![cfg(feature = "sandbox")]

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use tower_paywall::mpp::{Credential as MppCredential, Receipt, StellarCharge};
use tower_paywall::sandbox::{Sandbox, SandboxConfig};
use tower_paywall::stellar::rpc::{SorobanRpc, TransactionHash, wait_for_transaction};
use tower_paywall::stellar::xdr::{HostFunction, Limits, TransactionEnvelope, WriteXdr};
use tower_paywall::stellar::{
    Address, Keypair, Network, TransferOrder, account_sequence, prepare_transfer, sign_envelope,
};
use tower_paywall::x402::{Exact, LocalFacilitator};
use tower_paywall::{Paid, PaymentLayer, Price};

const PRICE_ATOMIC: i128 = 100_000;

struct World {
    sandbox: Sandbox,
    app: Router,
    payer: Keypair,
    pay_to: Address,
}

async fn world(ttl: Duration) -> World {
    let config = SandboxConfig::default().ledger_period(Duration::from_millis(100));
    let sandbox = Sandbox::start(config).unwrap();
    let payer = sandbox.funded_keypair().await.unwrap();
    let pay_to = sandbox.funded_keypair().await.unwrap().address();
    let rpc: Arc<dyn SorobanRpc> = Arc::new(sandbox.clone());
    let charge = StellarCharge::builder(Network::testnet(), pay_to, rpc, support::keys())
        .realm("example.com")
        .challenge_ttl(ttl)
        .build()
        .unwrap();
    let fee_payer = sandbox.funded_keypair().await.unwrap();
    let facilitator = LocalFacilitator::builder(sandbox.clone(), Network::testnet(), fee_payer)
        .build()
        .unwrap();
    let exact = Exact::builder(Network::testnet(), pay_to, facilitator)
        .build()
        .unwrap();
    let layer = PaymentLayer::builder()
        .scheme(exact)
        .scheme(charge)
        .price(Price::parse("0.01").unwrap())
        .build()
        .unwrap();
    let handler = |axum::Extension(paid): axum::Extension<Paid>| async move {
        format!("paid by {} with {}", paid.payer, paid.intent)
    };
    // `/other` and `POST /paid`: other requests at the same price.
    let app = Router::new()
        .route("/paid", get(handler).post(handler))
        .route("/other", get(handler))
        .layer(layer);
    World {
        sandbox,
        app,
        payer,
        pay_to,
    }
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
}

async fn send(world: &World, authorization: Option<String>) -> Answer {
    send_to(world, "GET", "/paid", authorization).await
}

async fn send_to(world: &World, method: &str, path: &str, authorization: Option<String>) -> Answer {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "example.com");
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    let response = world
        .app
        .clone()
        .oneshot(request.body(axum::body::Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into(),
    }
}

/// The MPP challenge of a fresh 402.
async fn challenge(world: &World) -> tower_paywall::mpp::Challenge {
    let answer = send(world, None).await;
    assert_eq!(answer.status, StatusCode::PAYMENT_REQUIRED);
    let mut challenges = tower_paywall::mpp::Challenge::from_headers(&answer.headers).unwrap();
    assert_eq!(challenges.len(), 1);
    challenges.remove(0)
}

fn problem_type(answer: &Answer) -> String {
    let body: Value = serde_json::from_str(&answer.body).unwrap();
    body["type"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("https://paymentauth.org/problems/")
        .to_owned()
}

fn did(payer: &Keypair) -> String {
    format!("did:pkh:stellar:testnet:{}", payer.address())
}

fn authorization(
    challenge: tower_paywall::mpp::Challenge,
    payer: &Keypair,
    payload: Value,
) -> String {
    let mut credential = MppCredential::new(challenge, payload);
    credential.source = Some(did(payer));
    credential.encode()
}

/// A transfer from the payer's own account, signed: the unsponsored pull credential.
async fn signed_transfer(world: &World, amount: i128) -> TransactionEnvelope {
    signed_transfer_to(world, amount, world.pay_to, world.sandbox.usdc()).await
}

fn base64(envelope: &TransactionEnvelope) -> String {
    envelope.to_xdr_base64(Limits::none()).unwrap()
}

async fn usdc(world: &World, holder: &Address) -> i128 {
    support::usdc_of(&world.sandbox, holder).await
}

#[tokio::test]
async fn one_402_offers_x402_and_mpp_charge() {
    let world = world(Duration::from_secs(300)).await;
    let answer = send(&world, None).await;
    assert_eq!(answer.status, StatusCode::PAYMENT_REQUIRED);
    assert!(
        answer.headers.contains_key("payment-required"),
        "x402 offer"
    );
    assert!(answer.headers.contains_key("www-authenticate"), "MPP offer");
    assert_eq!(answer.headers["cache-control"], "no-store");
    assert_eq!(answer.headers["content-type"], "application/problem+json");
    let body: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(
        body["type"],
        "https://paymentauth.org/problems/payment-required"
    );
    assert_eq!(body["x402Version"], 2);
    let challenge = challenge(&world).await;
    assert_eq!(
        (challenge.method.as_str(), challenge.intent.as_str()),
        ("stellar", "charge")
    );
    assert!(challenge.verify_id(&support::keys()));
    let request = challenge.request_json().unwrap();
    assert_eq!(request["amount"], "100000");
    assert_eq!(request["recipient"], world.pay_to.to_string());
    assert_eq!(request["methodDetails"]["network"], "stellar:testnet");
}

#[tokio::test]
async fn a_pull_payment_is_submitted_and_moves_usdc() {
    let world = world(Duration::from_secs(300)).await;
    let before = (
        usdc(&world, &world.payer.address()).await,
        usdc(&world, &world.pay_to).await,
    );
    let challenge = challenge(&world).await;
    let envelope = signed_transfer(&world, PRICE_ATOMIC).await;
    let payload = json!({"type": "transaction", "transaction": base64(&envelope)});
    let answer = send(
        &world,
        Some(authorization(challenge, &world.payer, payload)),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!(answer.body.ends_with("with mpp/charge"), "{}", answer.body);
    let receipt = Receipt::parse(answer.headers["payment-receipt"].to_str().unwrap()).unwrap();
    assert_eq!(receipt.method, "stellar");
    assert_eq!(receipt.reference.len(), 64);
    assert!(
        answer
            .headers
            .get_all("cache-control")
            .iter()
            .any(|v| v == "private")
    );
    assert_eq!(
        usdc(&world, &world.payer.address()).await,
        before.0 - PRICE_ATOMIC
    );
    assert_eq!(usdc(&world, &world.pay_to).await, before.1 + PRICE_ATOMIC);
}

#[tokio::test]
async fn a_credential_pays_only_the_request_its_challenge_was_issued_for() {
    let world = world(Duration::from_secs(300)).await;
    let before = usdc(&world, &world.payer.address()).await;
    let challenge = challenge(&world).await;
    let route = challenge.opaque_json().unwrap().expect("an opaque")["route"].clone();
    assert_eq!(route.as_str().map(str::len), Some(22), "{route}");
    let envelope = signed_transfer(&world, PRICE_ATOMIC).await;
    let payload = json!({"type": "transaction", "transaction": base64(&envelope)});
    let credential = authorization(challenge.clone(), &world.payer, payload.clone());
    // Built for `GET /paid`: refused on another path and on another method, at the same price.
    for (method, path) in [("GET", "/other"), ("POST", "/paid"), ("GET", "/other?x=1")] {
        let answer = send_to(&world, method, path, Some(credential.clone())).await;
        assert_eq!(
            answer.status,
            StatusCode::PAYMENT_REQUIRED,
            "{method} {path}: {}",
            answer.body
        );
        assert_eq!(
            problem_type(&answer),
            "invalid-challenge",
            "{method} {path}"
        );
    }
    // A route rewritten in the echo breaks the challenge id.
    let mut moved = challenge.clone();
    moved.opaque = tower_paywall::mpp::Challenge::builder(
        "example.com",
        "stellar",
        "charge",
        &serde_json::Map::new(),
    )
    .opaque(&std::collections::BTreeMap::from([(
        "route".to_owned(),
        "AAAAAAAAAAAAAAAAAAAAAA".to_owned(),
    )]))
    .issue(&support::keys())
    .opaque;
    let answer = send(&world, Some(authorization(moved, &world.payer, payload))).await;
    assert_eq!(problem_type(&answer), "invalid-challenge");
    assert_eq!(
        usdc(&world, &world.payer.address()).await,
        before,
        "nothing moved"
    );
    // On its own request (the query is not bound), it pays.
    let answer = send_to(&world, "GET", "/paid?any=query", Some(credential)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(
        usdc(&world, &world.payer.address()).await,
        before - PRICE_ATOMIC
    );
}

/// Submits a transfer from the payer's own account and waits until it is final.
async fn pushed_transfer(world: &World, amount: i128) -> TransactionHash {
    let envelope = signed_transfer(world, amount).await;
    let sent = world.sandbox.send_transaction(&envelope).await.unwrap();
    wait_for_transaction(&world.sandbox, &sent.hash, Duration::from_secs(10))
        .await
        .unwrap();
    sent.hash
}

fn signed_hash(
    challenge: &tower_paywall::mpp::Challenge,
    hash: &TransactionHash,
    signer: &Keypair,
) -> Value {
    let signature = signer.sign(format!("{}:{hash}", challenge.id).as_bytes());
    let hex: String = signature.iter().map(|b| format!("{b:02x}")).collect();
    json!({"type": "signedHash", "hash": hash.to_string(), "sourceSignature": hex})
}

#[tokio::test]
async fn a_push_payment_is_accepted_once() {
    let world = world(Duration::from_secs(300)).await;
    let before = usdc(&world, &world.pay_to).await;
    let hash = pushed_transfer(&world, PRICE_ATOMIC).await;
    assert_eq!(usdc(&world, &world.pay_to).await, before + PRICE_ATOMIC);
    let first = challenge(&world).await;
    let payload = signed_hash(&first, &hash, &world.payer);
    let answer = send(&world, Some(authorization(first, &world.payer, payload))).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    // The same transaction for another challenge: refused, it paid once already.
    let second = challenge(&world).await;
    let payload = signed_hash(&second, &hash, &world.payer);
    let answer = send(&world, Some(authorization(second, &world.payer, payload))).await;
    assert_eq!(answer.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(problem_type(&answer), "verification-failed");
}

#[tokio::test]
async fn every_refusal_has_its_problem_type() {
    let world = world(Duration::from_secs(300)).await;
    // A forged sourceSignature.
    let hash = pushed_transfer(&world, PRICE_ATOMIC).await;
    let c = challenge(&world).await;
    let payload = signed_hash(&c, &hash, &Keypair::from_seed([9; 32]));
    let answer = send(&world, Some(authorization(c, &world.payer, payload))).await;
    assert_eq!(problem_type(&answer), "verification-failed");
    // Too little.
    let short = pushed_transfer(&world, PRICE_ATOMIC - 1).await;
    let c = challenge(&world).await;
    let payload = signed_hash(&c, &short, &world.payer);
    let answer = send(&world, Some(authorization(c, &world.payer, payload))).await;
    assert_eq!(problem_type(&answer), "verification-failed");
    // A challenge whose id does not bind its parameters (a forged HMAC).
    let mut c = challenge(&world).await;
    c.id = "forged".into();
    let payload = signed_hash(&c, &hash, &world.payer);
    let answer = send(&world, Some(authorization(c, &world.payer, payload))).await;
    assert_eq!(problem_type(&answer), "invalid-challenge");
    // A payload without the method's shape: an unknown type, a `hash` without its hash.
    for payload in [json!({"type": "receipt"}), json!({"type": "hash"})] {
        let c = challenge(&world).await;
        let answer = send(&world, Some(authorization(c, &world.payer, payload))).await;
        assert_eq!(problem_type(&answer), "invalid-payload");
    }
    // A well-formed unsigned `hash` push, which this server does not take (memo-bound pushes
    // are off): it fails verification, as the official server answers it.
    let c = challenge(&world).await;
    let payload = json!({"type": "hash", "hash": hash.to_string()});
    let answer = send(&world, Some(authorization(c, &world.payer, payload))).await;
    assert_eq!(problem_type(&answer), "verification-failed");
    // A pull for another amount.
    let c = challenge(&world).await;
    let envelope = signed_transfer(&world, PRICE_ATOMIC + 1).await;
    let payload = json!({"type": "transaction", "transaction": base64(&envelope)});
    let answer = send(&world, Some(authorization(c, &world.payer, payload))).await;
    assert_eq!(problem_type(&answer), "verification-failed");
    // Garbage credentials.
    let answer = send(&world, Some("Payment !!!".into())).await;
    assert_eq!(answer.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(problem_type(&answer), "malformed-credential");
}

#[tokio::test]
async fn an_expired_challenge_is_refused() {
    let world = world(Duration::from_secs(1)).await;
    let hash = pushed_transfer(&world, PRICE_ATOMIC).await;
    let c = challenge(&world).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let payload = signed_hash(&c, &hash, &world.payer);
    let answer = send(&world, Some(authorization(c, &world.payer, payload))).await;
    assert_eq!(answer.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(problem_type(&answer), "payment-expired");
}

#[tokio::test]
async fn a_replayed_challenge_is_refused_and_a_replayed_answer_is_the_recorded_one() {
    let world = world(Duration::from_secs(300)).await;
    let c = challenge(&world).await;
    let first = pushed_transfer(&world, PRICE_ATOMIC).await;
    let payload = signed_hash(&c, &first, &world.payer);
    let credential = authorization(c.clone(), &world.payer, payload);
    let paid = send(&world, Some(credential.clone())).await;
    assert_eq!(paid.status, StatusCode::OK);
    // The very same credential again: the recorded answer, nothing paid twice.
    let again = send(&world, Some(credential)).await;
    assert_eq!(
        (again.status, again.body.as_str()),
        (StatusCode::OK, paid.body.as_str())
    );
    // The same challenge with another payment: the challenge is used up.
    let second = pushed_transfer(&world, PRICE_ATOMIC).await;
    let payload = signed_hash(&c, &second, &world.payer);
    let answer = send(&world, Some(authorization(c, &world.payer, payload))).await;
    assert_eq!(answer.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(problem_type(&answer), "invalid-challenge");
}

#[tokio::test]
async fn transfers_of_the_wrong_kind_are_refused() {
    let world = world(Duration::from_secs(300)).await;
    // Paid to someone else.
    let stranger = world.sandbox.funded_keypair().await.unwrap().address();
    let mut envelope =
        signed_transfer_to(&world, PRICE_ATOMIC, stranger, world.sandbox.usdc()).await;
    let sent = world.sandbox.send_transaction(&envelope).await.unwrap();
    wait_for_transaction(&world.sandbox, &sent.hash, Duration::from_secs(10))
        .await
        .unwrap();
    let c = challenge(&world).await;
    let payload = signed_hash(&c, &sent.hash, &world.payer);
    let answer = send(&world, Some(authorization(c, &world.payer, payload))).await;
    assert_eq!(
        problem_type(&answer),
        "verification-failed",
        "wrong recipient"
    );
    // Paid in another currency (lumens).
    envelope = signed_transfer_to(&world, PRICE_ATOMIC, world.pay_to, world.sandbox.xlm()).await;
    let sent = world.sandbox.send_transaction(&envelope).await.unwrap();
    wait_for_transaction(&world.sandbox, &sent.hash, Duration::from_secs(10))
        .await
        .unwrap();
    let c = challenge(&world).await;
    let payload = signed_hash(&c, &sent.hash, &world.payer);
    let answer = send(&world, Some(authorization(c, &world.payer, payload))).await;
    assert_eq!(
        problem_type(&answer),
        "verification-failed",
        "wrong currency"
    );
    // A source on another network.
    let hash = pushed_transfer(&world, PRICE_ATOMIC).await;
    let c = challenge(&world).await;
    let mut credential = MppCredential::new(c.clone(), signed_hash(&c, &hash, &world.payer));
    credential.source = Some(format!("did:pkh:stellar:pubnet:{}", world.payer.address()));
    let answer = send(&world, Some(credential.encode())).await;
    assert_eq!(
        problem_type(&answer),
        "verification-failed",
        "wrong network"
    );
    // A push for a transaction that was never submitted.
    let unsent = signed_transfer(&world, PRICE_ATOMIC).await;
    let unsent = TransactionHash::of(&unsent, &Network::testnet().id()).unwrap();
    let c = challenge(&world).await;
    let payload = signed_hash(&c, &unsent, &world.payer);
    let answer = send(&world, Some(authorization(c, &world.payer, payload))).await;
    assert_eq!(problem_type(&answer), "verification-failed", "unconfirmed");
}

#[tokio::test]
async fn malformed_requests_get_400() {
    let world = world(Duration::from_secs(300)).await;
    let c = challenge(&world).await;
    let hash = pushed_transfer(&world, PRICE_ATOMIC).await;
    let one = authorization(
        c.clone(),
        &world.payer,
        signed_hash(&c, &hash, &world.payer),
    );
    let token = one.trim_start_matches("Payment ");
    let answer = send(&world, Some(format!("Payment {token}, Payment {token}"))).await;
    assert_eq!(
        answer.status,
        StatusCode::BAD_REQUEST,
        "several Payment credentials"
    );
    let mut other = c.clone();
    other.method = "tempo".into();
    let answer = send(
        &world,
        Some(authorization(other, &world.payer, json!({"type": "hash"}))),
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::BAD_REQUEST,
        "an unsupported method"
    );
    assert_eq!(problem_type(&answer), "method-unsupported");
}

/// A signed transfer of `amount` of `token` to `to`, from the payer's own account.
async fn signed_transfer_to(
    world: &World,
    amount: i128,
    to: Address,
    token: Address,
) -> TransactionEnvelope {
    signed_transfer_for(world, amount, to, token, 60).await
}

/// A transfer from the payer's own account whose time bounds close `seconds` from now.
async fn signed_transfer_for(
    world: &World,
    amount: i128,
    to: Address,
    token: Address,
    seconds: u64,
) -> TransactionEnvelope {
    let sequence = account_sequence(&world.sandbox, &world.payer.address())
        .await
        .unwrap();
    let order = TransferOrder {
        contract: token,
        to,
        amount,
        valid_for_ledgers: 12,
        source: world.payer.address(),
        sequence: sequence + 1,
        time_bound_seconds: seconds,
    };
    let mut envelope = prepare_transfer(&world.sandbox, &Network::testnet(), &world.payer, &order)
        .await
        .unwrap();
    sign_envelope(&mut envelope, &world.payer, &Network::testnet().id()).unwrap();
    envelope
}

/// A classic native payment from the payer to `to`, with `MEMO_HASH(memo)`, submitted and final.
async fn memo_payment(world: &World, to: Address, amount: i64, memo: [u8; 32]) -> TransactionHash {
    use tower_paywall::stellar::xdr::{
        Asset, Hash, Memo, Operation, OperationBody, PaymentOp, Preconditions, SequenceNumber,
        TimeBounds, TimePoint, Transaction, TransactionExt, TransactionV1Envelope,
    };
    let sequence = account_sequence(&world.sandbox, &world.payer.address())
        .await
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let tx = Transaction {
        source_account: world.payer.address().to_muxed_account().unwrap(),
        fee: 100,
        seq_num: SequenceNumber(sequence + 1),
        cond: Preconditions::Time(TimeBounds {
            min_time: TimePoint(0),
            max_time: TimePoint(now + 60),
        }),
        memo: Memo::Hash(Hash(memo)),
        operations: vec![Operation {
            source_account: None,
            body: OperationBody::Payment(PaymentOp {
                destination: to.to_muxed_account().unwrap(),
                asset: Asset::Native,
                amount,
            }),
        }]
        .try_into()
        .unwrap(),
        ext: TransactionExt::V0,
    };
    let mut envelope = TransactionEnvelope::Tx(TransactionV1Envelope {
        tx,
        signatures: Default::default(),
    });
    sign_envelope(&mut envelope, &world.payer, &Network::testnet().id()).unwrap();
    let sent = world.sandbox.send_transaction(&envelope).await.unwrap();
    wait_for_transaction(&world.sandbox, &sent.hash, Duration::from_secs(10))
        .await
        .unwrap();
    sent.hash
}

#[tokio::test]
async fn a_memo_bound_lumen_payment_pays_its_challenge_only() {
    use sha2::{Digest, Sha256};
    let mut world = world(Duration::from_secs(300)).await;
    let rpc: Arc<dyn SorobanRpc> = Arc::new(world.sandbox.clone());
    let charge = StellarCharge::builder(
        Network::testnet(),
        world.pay_to,
        rpc.clone(),
        support::keys(),
    )
    .realm("example.com")
    .currency(world.sandbox.xlm())
    .memo_push(true)
    .build()
    .unwrap();
    let usdc_only = StellarCharge::builder(Network::testnet(), world.pay_to, rpc, support::keys())
        .memo_push(true)
        .build();
    assert!(usdc_only.is_err(), "the memo-bound push takes lumens only");
    world.app = Router::new()
        .route("/paid", get(|| async { "content" }))
        .layer(
            PaymentLayer::builder()
                .scheme(charge)
                .price(Price::parse("0.01").unwrap())
                .build()
                .unwrap(),
        );
    let c = challenge(&world).await;
    assert!(
        c.request_json().unwrap()["methodDetails"]["credentialTypes"]
            .to_string()
            .contains("\"hash\"")
    );
    let xlm = |holder: Address| {
        let sandbox = world.sandbox.clone();
        async move { sandbox.balance(&sandbox.xlm(), &holder).await.unwrap() }
    };
    // Bound to another challenge: refused.
    let other: [u8; 32] = Sha256::digest(b"another challenge").into();
    let hash = memo_payment(&world, world.pay_to, PRICE_ATOMIC as i64, other).await;
    let answer = send(
        &world,
        Some(authorization(
            c.clone(),
            &world.payer,
            json!({"type": "hash", "hash": hash.to_string()}),
        )),
    )
    .await;
    assert_eq!(problem_type(&answer), "verification-failed");
    // Bound to this one: accepted, and the lumens moved.
    let before = xlm(world.pay_to).await;
    let c = challenge(&world).await;
    let memo: [u8; 32] = Sha256::digest(c.id.as_bytes()).into();
    let hash = memo_payment(&world, world.pay_to, PRICE_ATOMIC as i64, memo).await;
    assert_eq!(xlm(world.pay_to).await, before + PRICE_ATOMIC);
    let answer = send(
        &world,
        Some(authorization(
            c,
            &world.payer,
            json!({"type": "hash", "hash": hash.to_string()}),
        )),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
}

#[tokio::test]
async fn a_push_for_a_failed_transaction_is_refused() {
    use tower_paywall::stellar::xdr::{Int128Parts, OperationBody, ScVal};
    let world = world(Duration::from_secs(300)).await;
    // A transfer prepared for the price, then changed to more than the payer holds (its
    // authorization is the source account's, so it still signs): it fails in its ledger.
    let mut envelope = signed_transfer(&world, PRICE_ATOMIC).await;
    let TransactionEnvelope::Tx(v1) = &mut envelope else {
        unreachable!()
    };
    let mut operations = v1.tx.operations.to_vec();
    let OperationBody::InvokeHostFunction(op) = &mut operations[0].body else {
        unreachable!()
    };
    let HostFunction::InvokeContract(call) = &mut op.host_function else {
        unreachable!()
    };
    let mut args = call.args.to_vec();
    args[2] = ScVal::I128(Int128Parts {
        hi: 0,
        lo: u64::MAX / 2,
    });
    call.args = args.try_into().unwrap();
    v1.tx.operations = operations.try_into().unwrap();
    v1.signatures = Default::default();
    sign_envelope(&mut envelope, &world.payer, &Network::testnet().id()).unwrap();
    let sent = world.sandbox.send_transaction(&envelope).await.unwrap();
    let info = wait_for_transaction(&world.sandbox, &sent.hash, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        info.status,
        tower_paywall::stellar::TransactionStatus::Failed
    );
    let c = challenge(&world).await;
    let payload = signed_hash(&c, &sent.hash, &world.payer);
    let answer = send(&world, Some(authorization(c, &world.payer, payload))).await;
    assert_eq!(answer.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(problem_type(&answer), "verification-failed");
}

/// An app whose MPP charge sponsors the payers' fees from one channel account.
async fn sponsored_app(world: &World) -> (Router, Keypair) {
    let (app, channel) = charge_app(world, Arc::new(world.sandbox.clone()), true).await;
    (app, channel.expect("a channel account"))
}

/// An app whose MPP charge reaches the ledger through `rpc`, sponsoring the payers' fees from
/// one channel account (returned) when `sponsored`, and reconciling a payment every 200 ms at
/// most.
async fn charge_app(
    world: &World,
    rpc: Arc<dyn SorobanRpc>,
    sponsored: bool,
) -> (Router, Option<Keypair>) {
    use tower_paywall::stellar::Sponsor;
    let mut charge = StellarCharge::builder(
        Network::testnet(),
        world.pay_to,
        rpc.clone(),
        support::keys(),
    )
    .realm("example.com");
    let mut channel = None;
    if sponsored {
        let account = world.sandbox.funded_keypair().await.unwrap();
        let sponsor = Sponsor::new(
            rpc,
            Network::testnet(),
            vec![account.clone()],
            None,
            10_000_000,
        )
        .unwrap();
        charge = charge.sponsor(Arc::new(sponsor));
        channel = Some(account);
    }
    let app = Router::new()
        .route("/paid", get(|| async { "content" }))
        .layer(
            PaymentLayer::builder()
                .scheme(charge.build().unwrap())
                .price(Price::parse("0.01").unwrap())
                .reconcile_interval(Duration::from_millis(200))
                .build()
                .unwrap(),
        );
    (app, channel)
}

/// A transfer authorized by the payer only (source: `source`, the all-zeros account normally).
async fn authorized_transfer(world: &World, source: Address) -> TransactionEnvelope {
    authorized_transfer_for(world, source, 12).await
}

/// The same, its authorization valid for `ledgers` ledgers past the latest.
async fn authorized_transfer_for(
    world: &World,
    source: Address,
    ledgers: u32,
) -> TransactionEnvelope {
    let mut order =
        TransferOrder::sponsored(world.sandbox.usdc(), world.pay_to, PRICE_ATOMIC, ledgers);
    order.source = source;
    prepare_transfer(&world.sandbox, &Network::testnet(), &world.payer, &order)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_sponsored_pull_is_submitted_from_our_account() {
    let mut world = world(Duration::from_secs(300)).await;
    let (app, channel) = sponsored_app(&world).await;
    world.app = app;
    let c = challenge(&world).await;
    let details = &c.request_json().unwrap()["methodDetails"];
    assert_eq!(details["feePayer"], true);
    assert_eq!(details["credentialTypes"], json!(["transaction"]));
    let xlm = |holder: Address| {
        let sandbox = world.sandbox.clone();
        async move { sandbox.balance(&sandbox.xlm(), &holder).await.unwrap() }
    };
    let (payer_xlm, channel_xlm) = (
        xlm(world.payer.address()).await,
        xlm(channel.address()).await,
    );
    let before = usdc(&world, &world.pay_to).await;
    let envelope = authorized_transfer(&world, tower_paywall::stellar::NULL_ACCOUNT).await;
    let payload = json!({"type": "transaction", "transaction": base64(&envelope)});
    let answer = send(&world, Some(authorization(c, &world.payer, payload))).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(usdc(&world, &world.pay_to).await, before + PRICE_ATOMIC);
    assert_eq!(
        xlm(world.payer.address()).await,
        payer_xlm,
        "the payer paid no fee"
    );
    assert!(
        xlm(channel.address()).await < channel_xlm,
        "our account paid it"
    );
    // A push is refused while we sponsor: a well-formed `signedHash` or `hash` fails
    // verification (the official server's answer), a malformed one is an invalid payload.
    let hash = pushed_transfer(&world, PRICE_ATOMIC).await;
    let c = challenge(&world).await;
    let payload = signed_hash(&c, &hash, &world.payer);
    let answer = send(&world, Some(authorization(c, &world.payer, payload))).await;
    assert_eq!(problem_type(&answer), "verification-failed");
    let c = challenge(&world).await;
    let payload = json!({"type": "hash", "hash": hash.to_string()});
    let answer = send(&world, Some(authorization(c, &world.payer, payload))).await;
    assert_eq!(problem_type(&answer), "verification-failed");
    let c = challenge(&world).await;
    let payload = json!({"type": "signedHash", "hash": hash.to_string(), "sourceSignature": "00"});
    let answer = send(&world, Some(authorization(c, &world.payer, payload))).await;
    assert_eq!(problem_type(&answer), "invalid-payload");
}

#[tokio::test]
async fn our_own_account_as_the_source_is_refused() {
    let mut world = world(Duration::from_secs(300)).await;
    let (app, channel) = sponsored_app(&world).await;
    world.app = app;
    let c = challenge(&world).await;
    let envelope = authorized_transfer(&world, channel.address()).await;
    let payload = json!({"type": "transaction", "transaction": base64(&envelope)});
    let answer = send(&world, Some(authorization(c, &world.payer, payload))).await;
    assert_eq!(answer.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(problem_type(&answer), "verification-failed");
}

#[tokio::test]
async fn an_unreachable_rpc_is_a_503_not_a_402() {
    use tower_paywall::stellar::JsonRpcClient;
    let mut world = world(Duration::from_secs(300)).await;
    // Nothing listens on port 9 of loopback: the RPC is down.
    let down: Arc<dyn SorobanRpc> = Arc::new(
        JsonRpcClient::builder("http://127.0.0.1:9")
            .build()
            .unwrap(),
    );
    let charge = StellarCharge::builder(Network::testnet(), world.pay_to, down, support::keys())
        .realm("example.com")
        .build()
        .unwrap();
    world.app = Router::new()
        .route("/paid", get(|| async { "content" }))
        .layer(
            PaymentLayer::builder()
                .scheme(charge)
                .price(Price::parse("0.01").unwrap())
                .build()
                .unwrap(),
        );
    let hash = pushed_transfer(&world, PRICE_ATOMIC).await;
    let c = challenge(&world).await;
    let payload = signed_hash(&c, &hash, &world.payer);
    let answer = send(&world, Some(authorization(c, &world.payer, payload))).await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.body
    );
    assert!(answer.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn a_pull_valid_beyond_its_challenge_is_refused() {
    let world = world(Duration::from_secs(300)).await;
    let c = challenge(&world).await;
    // Time bounds open for an hour, past the challenge's five minutes.
    let envelope = signed_transfer_for(
        &world,
        PRICE_ATOMIC,
        world.pay_to,
        world.sandbox.usdc(),
        3_600,
    )
    .await;
    let payload = json!({"type": "transaction", "transaction": base64(&envelope)});
    let answer = send(&world, Some(authorization(c, &world.payer, payload))).await;
    assert_eq!(answer.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(problem_type(&answer), "verification-failed");
}

#[tokio::test]
async fn a_sponsored_authorization_valid_beyond_its_challenge_is_refused() {
    let mut world = world(Duration::from_secs(300)).await;
    let (app, _channel) = sponsored_app(&world).await;
    world.app = app;
    let before = usdc(&world, &world.pay_to).await;
    let c = challenge(&world).await;
    // 1 000 ledgers (about 83 min) against a challenge that expires in 5 min (60 ledgers).
    let envelope =
        authorized_transfer_for(&world, tower_paywall::stellar::NULL_ACCOUNT, 1_000).await;
    let payload = json!({"type": "transaction", "transaction": base64(&envelope)});
    let answer = send(&world, Some(authorization(c, &world.payer, payload))).await;
    assert_eq!(answer.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(problem_type(&answer), "verification-failed");
    assert_eq!(usdc(&world, &world.pay_to).await, before);
}

/// Pays with `credential` while the RPC loses `sendTransaction` as `fate` says: 503, retry with
/// the same payment. The RPC delivers again afterwards.
async fn lose_once(
    world: &World,
    lossy: &support::LossyRpc,
    credential: &str,
    fate: support::SendFate,
) {
    lossy.set(fate);
    let answer = send(world, Some(credential.to_owned())).await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.body
    );
    assert!(answer.headers.contains_key("retry-after"));
    lossy.set(support::SendFate::Deliver);
}

/// A pull whose `sendTransaction` answer is lost after the ledger took it, sponsored or not:
/// the retry with the same credential is served from the ledger, with the transaction's hash as
/// the receipt, and the payer is charged once.
#[tokio::test]
async fn a_pull_whose_submission_answer_was_lost_is_served_from_the_ledger_on_retry() {
    for sponsored in [false, true] {
        let mut world = world(Duration::from_secs(300)).await;
        let lossy = support::LossyRpc::new(Arc::new(world.sandbox.clone()));
        world.app = charge_app(&world, lossy.clone(), sponsored).await.0;
        let payer_before = usdc(&world, &world.payer.address()).await;
        let c = challenge(&world).await;
        let envelope = if sponsored {
            authorized_transfer(&world, tower_paywall::stellar::NULL_ACCOUNT).await
        } else {
            signed_transfer(&world, PRICE_ATOMIC).await
        };
        let payload = json!({"type": "transaction", "transaction": base64(&envelope)});
        let credential = authorization(c, &world.payer, payload);
        lose_once(&world, &lossy, &credential, support::SendFate::LoseAnswer).await;
        // The transaction lands; the retry finds it.
        let answer = retry_until_decided(&world, &credential).await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "sponsored {sponsored}: {}",
            answer.body
        );
        assert_eq!(answer.body, "content");
        let receipt = Receipt::parse(answer.headers["payment-receipt"].to_str().unwrap()).unwrap();
        let hash: TransactionHash = receipt.reference.parse().unwrap();
        let info = world.sandbox.transaction(&hash).await.unwrap();
        assert_eq!(
            info.status,
            tower_paywall::stellar::TransactionStatus::Success
        );
        let again = send(&world, Some(credential)).await;
        assert_eq!(again.status, StatusCode::OK);
        assert_eq!(
            again.headers["payment-receipt"],
            answer.headers["payment-receipt"]
        );
        assert_eq!(
            usdc(&world, &world.payer.address()).await,
            payer_before - PRICE_ATOMIC,
            "sponsored {sponsored}: charged once"
        );
    }
}

/// A sponsored pull whose submission never reached the ledger: once the payer's authorization
/// has expired unused, the retry gets a 402 saying so, nothing was charged, and the payer pays
/// again.
#[tokio::test]
async fn a_pull_that_never_reached_the_ledger_is_released_once_its_authorization_expires() {
    let mut world = world(Duration::from_secs(300)).await;
    let lossy = support::LossyRpc::new(Arc::new(world.sandbox.clone()));
    world.app = charge_app(&world, lossy.clone(), true).await.0;
    let payer_before = usdc(&world, &world.payer.address()).await;
    let c = challenge(&world).await;
    // Valid for 20 ledgers (2 s here).
    let envelope = authorized_transfer_for(&world, tower_paywall::stellar::NULL_ACCOUNT, 20).await;
    let payload = json!({"type": "transaction", "transaction": base64(&envelope)});
    let credential = authorization(c, &world.payer, payload);
    lose_once(&world, &lossy, &credential, support::SendFate::LoseRequest).await;
    let answer = send(&world, Some(credential.clone())).await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "still usable: {}",
        answer.body
    );
    // Once its expiration ledger has closed, the ledger says it never happened.
    let answer = retry_until_decided(&world, &credential).await;
    assert_eq!(
        answer.status,
        StatusCode::PAYMENT_REQUIRED,
        "{}",
        answer.body
    );
    assert_eq!(
        problem_type(&answer),
        "settlement-failed",
        "{}",
        answer.body
    );
    assert!(
        answer.headers.contains_key("www-authenticate"),
        "a fresh challenge"
    );
    assert_eq!(usdc(&world, &world.payer.address()).await, payer_before);
    // Paying again works.
    let c = challenge(&world).await;
    let envelope = authorized_transfer(&world, tower_paywall::stellar::NULL_ACCOUNT).await;
    let payload = json!({"type": "transaction", "transaction": base64(&envelope)});
    let answer = send(&world, Some(authorization(c, &world.payer, payload))).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(
        usdc(&world, &world.payer.address()).await,
        payer_before - PRICE_ATOMIC
    );
}

/// One signed authorization presented for two challenges (in two envelopes that differ only in
/// their fee, so both pass every per-transaction check): the first to settle reserves the
/// authorization as the payment it is, so the second is refused before it is submitted, and
/// nothing that the first's settlement leaves unknown can be "found" in another's transaction.
#[tokio::test]
async fn one_authorization_pays_for_one_challenge_only() {
    let mut world = world(Duration::from_secs(300)).await;
    let lossy = support::LossyRpc::new(Arc::new(world.sandbox.clone()));
    world.app = charge_app(&world, lossy.clone(), true).await.0;
    let payer_before = usdc(&world, &world.payer.address()).await;
    let envelope = authorized_transfer_for(&world, tower_paywall::stellar::NULL_ACCOUNT, 20).await;
    let mut other = envelope.clone();
    let TransactionEnvelope::Tx(v1) = &mut other else {
        unreachable!("a v1 envelope")
    };
    v1.tx.fee += 1;
    let credential = |c, envelope: &TransactionEnvelope| {
        let payload = json!({"type": "transaction", "transaction": base64(envelope)});
        authorization(c, &world.payer, payload)
    };
    let first = credential(challenge(&world).await, &envelope);
    // The first settlement never reaches the ledger: its outcome is unknown.
    lose_once(&world, &lossy, &first, support::SendFate::LoseRequest).await;
    // (A challenge issued in the same millisecond would be the same challenge.)
    let second = credential(challenge(&world).await, &other);
    // The same authorization for another challenge: refused, nothing submitted.
    let answer = send(&world, Some(second)).await;
    assert_eq!(
        answer.status,
        StatusCode::PAYMENT_REQUIRED,
        "{}",
        answer.body
    );
    assert_eq!(problem_type(&answer), "verification-failed");
    // The first ends unsettled once its authorization expired; nobody was charged.
    let answer = retry_until_decided(&world, &first).await;
    assert_eq!(
        answer.status,
        StatusCode::PAYMENT_REQUIRED,
        "{}",
        answer.body
    );
    assert_eq!(problem_type(&answer), "settlement-failed");
    assert_eq!(usdc(&world, &world.payer.address()).await, payer_before);
}

/// Retries `credential` until the answer is not 503 (20 s at most).
async fn retry_until_decided(world: &World, credential: &str) -> Answer {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let answer = send(world, Some(credential.to_owned())).await;
        if answer.status != StatusCode::SERVICE_UNAVAILABLE || std::time::Instant::now() > deadline
        {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
