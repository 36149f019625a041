//! The paying client against our server over HTTP on loopback, on the sandbox ledger: each
//! intent pays and the ledger shows it; limits refuse before anything is signed; a lost
//! answer is retried with the same payment and charged once.
#![cfg(all(feature = "sandbox", feature = "client"))]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower_paywall::client::{
    ChargeMode, ClientError, CumulativeStore, FileCumulativeStore, PayError, PayingClient, Policy,
    payment,
};
use tower_paywall::mpp::{StellarChannel, StellarCharge};
use tower_paywall::sandbox::{ChannelParams, Sandbox, SandboxConfig, channel_wasm};
use tower_paywall::scheme::Intent;
use tower_paywall::stellar::channel::{OpenChannel, open_channel};
use tower_paywall::stellar::rpc::SorobanRpc;
use tower_paywall::stellar::{
    Address, CallbackSigner, Keypair, Network, PrepareError, SignError, Signer, Sponsor,
};
use tower_paywall::store::MemoryChannelStore;
use tower_paywall::x402::{Exact, LocalFacilitator};
use tower_paywall::{Paid, PaymentLayer, Price};

const PRICE: &str = "0.01";
const PRICE_ATOMIC: i128 = 100_000;

struct World {
    sandbox: Sandbox,
    payer: Keypair,
    pay_to: Address,
    url: String,
}

/// Which schemes the server offers.
#[derive(Clone, Copy)]
enum Offers {
    /// x402 `exact` and MPP `charge` (unsponsored: pull or push).
    Both,
    /// MPP `charge` with the server paying the fees.
    SponsoredCharge,
}

async fn world(offers: Offers) -> World {
    let config = SandboxConfig::default().ledger_period(Duration::from_millis(100));
    let sandbox = Sandbox::start(config).unwrap();
    let payer = sandbox.funded_keypair().await.unwrap();
    let pay_to = sandbox.funded_keypair().await.unwrap().address();
    let rpc: Arc<dyn SorobanRpc> = Arc::new(sandbox.clone());
    let mut charge =
        StellarCharge::builder(Network::testnet(), pay_to, rpc.clone(), support::keys())
            .realm("example");
    let mut layer = PaymentLayer::builder();
    match offers {
        Offers::Both => {
            let fee_payer = sandbox.funded_keypair().await.unwrap();
            let facilitator =
                LocalFacilitator::builder(sandbox.clone(), Network::testnet(), fee_payer)
                    .build()
                    .unwrap();
            let exact = Exact::builder(Network::testnet(), pay_to, facilitator)
                .build()
                .unwrap();
            layer = layer.scheme(exact);
        }
        Offers::SponsoredCharge => {
            let account = sandbox.funded_keypair().await.unwrap();
            let sponsor = Sponsor::new(
                rpc.clone(),
                Network::testnet(),
                vec![account],
                None,
                1_000_000,
            )
            .unwrap();
            charge = charge.sponsor(Arc::new(sponsor));
        }
    }
    let layer = layer
        .scheme(charge.build().unwrap())
        .price(Price::parse(PRICE).unwrap())
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/paid",
            get(|axum::Extension(paid): axum::Extension<Paid>| async move {
                format!("paid by {} with {}", paid.payer, paid.intent)
            }),
        )
        .layer(layer);
    let url = serve(app).await;
    World {
        sandbox,
        payer,
        pay_to,
        url,
    }
}

async fn serve(app: Router) -> String {
    format!("{}/paid", support::serve(app).await)
}

fn client(world: &World, signer: impl Signer + 'static, policy: Policy) -> PayingClient {
    PayingClient::builder(signer, Arc::new(world.sandbox.clone()), Network::testnet())
        .policy(policy)
        .build()
        .unwrap()
}

async fn usdc(world: &World, holder: &Address) -> i128 {
    support::usdc_of(&world.sandbox, holder).await
}

async fn balances(world: &World) -> (i128, i128) {
    (
        usdc(world, &world.payer.address()).await,
        usdc(world, &world.pay_to).await,
    )
}

/// Pays `world`'s route once with `client` and asserts what moved.
async fn pays_once(world: &World, client: &PayingClient, intent: Intent) {
    let before = balances(world).await;
    let response = client.get(&world.url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let paid = payment(&response).cloned().expect("a payment was made");
    assert_eq!(paid.intent, intent);
    assert_eq!(paid.amount, PRICE_ATOMIC);
    assert!(paid.receipt.is_some(), "the receipt header is kept");
    let body = response.text().await.unwrap();
    assert_eq!(
        body,
        format!("paid by {} with {intent}", world.payer.address())
    );
    assert_eq!(
        balances(world).await,
        (before.0 - PRICE_ATOMIC, before.1 + PRICE_ATOMIC)
    );
    assert_eq!(client.spent(), PRICE_ATOMIC);
}

#[tokio::test]
async fn x402_exact_pays_and_the_ledger_shows_it() {
    let world = world(Offers::Both).await;
    let client = client(&world, world.payer.clone(), Policy::default());
    pays_once(&world, &client, Intent::X402_EXACT).await;
}

#[tokio::test]
async fn mpp_charge_pull_pays_and_the_ledger_shows_it() {
    let world = world(Offers::Both).await;
    let policy = Policy::default().prefer([Intent::MPP_CHARGE]);
    let client = client(&world, world.payer.clone(), policy);
    pays_once(&world, &client, Intent::MPP_CHARGE).await;
}

#[tokio::test]
async fn mpp_charge_push_pays_and_the_ledger_shows_it() {
    let world = world(Offers::Both).await;
    let client = PayingClient::builder(
        world.payer.clone(),
        Arc::new(world.sandbox.clone()),
        Network::testnet(),
    )
    .policy(Policy::default().prefer([Intent::MPP_CHARGE]))
    .charge_mode(ChargeMode::Push)
    .build()
    .unwrap();
    pays_once(&world, &client, Intent::MPP_CHARGE).await;
}

#[tokio::test]
async fn a_sponsored_mpp_charge_pays_with_the_signature_only() {
    let world = world(Offers::SponsoredCharge).await;
    let xlm_before = world
        .sandbox
        .balance(&world.sandbox.xlm(), &world.payer.address())
        .await
        .unwrap();
    let client = client(&world, world.payer.clone(), Policy::default());
    pays_once(&world, &client, Intent::MPP_CHARGE).await;
    let xlm_after = world
        .sandbox
        .balance(&world.sandbox.xlm(), &world.payer.address())
        .await
        .unwrap();
    assert_eq!(xlm_after, xlm_before, "the server paid the fee");
}

/// A signer that counts its signatures: proves that limits refuse before signing.
fn counting(key: &Keypair, count: &Arc<AtomicUsize>) -> CallbackSigner {
    let (inner, count) = (key.clone(), count.clone());
    CallbackSigner::new(key.public_key(), move |message: Vec<u8>| {
        count.fetch_add(1, Ordering::SeqCst);
        let key = inner.clone();
        async move { Ok::<_, SignError>(key.sign(&message)) }
    })
}

#[tokio::test]
async fn limits_refuse_before_anything_is_signed() {
    let world = world(Offers::Both).await;
    let signatures = Arc::new(AtomicUsize::new(0));
    let before = balances(&world).await;

    // The server asks more than the cap.
    let capped = client(
        &world,
        counting(&world.payer, &signatures),
        Policy::default().max_per_payment(PRICE_ATOMIC - 1),
    );
    match capped.get(&world.url).send().await {
        Err(ClientError::OverLimit { amount, cap }) => {
            assert_eq!((amount, cap), (PRICE_ATOMIC, PRICE_ATOMIC - 1));
        }
        other => panic!("expected OverLimit, got {other:?}"),
    }
    assert_eq!(signatures.load(Ordering::SeqCst), 0);

    // One payment fits the budget, the second does not.
    let budgeted = client(
        &world,
        counting(&world.payer, &signatures),
        Policy::default().budget(PRICE_ATOMIC + PRICE_ATOMIC / 2),
    );
    let first = budgeted.get(&world.url).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let signed_once = signatures.load(Ordering::SeqCst);
    assert!(signed_once > 0);
    match budgeted.get(&world.url).send().await {
        Err(ClientError::BudgetExceeded {
            amount,
            budget,
            spent,
        }) => {
            assert_eq!(
                (amount, budget, spent),
                (PRICE_ATOMIC, PRICE_ATOMIC * 3 / 2, PRICE_ATOMIC)
            );
        }
        other => panic!("expected BudgetExceeded, got {other:?}"),
    }
    assert_eq!(signatures.load(Ordering::SeqCst), signed_once);

    // Another network only, or another asset only: nothing payable.
    for policy in [
        Policy::default().networks(["stellar:pubnet"]),
        Policy::default().assets([world.sandbox.xlm().to_string()]),
    ] {
        let refused = client(&world, counting(&world.payer, &signatures), policy);
        assert!(matches!(
            refused.get(&world.url).send().await,
            Err(ClientError::NoAcceptableOffer(_))
        ));
    }
    assert_eq!(signatures.load(Ordering::SeqCst), signed_once);
    assert_eq!(
        balances(&world).await,
        (before.0 - PRICE_ATOMIC, before.1 + PRICE_ATOMIC)
    );
}

/// What the proxy does to the first paid request.
#[derive(Clone, Copy)]
enum Fault {
    /// Forwards it, lets the server settle, and closes the client's connection unanswered.
    DropAnswer,
    /// Answers 503 with `Retry-After: 0` without forwarding it.
    Unavailable,
}

/// A proxy in front of `upstream` (one request per connection) that applies `fault` to the
/// first request carrying a payment, and records every payment header it sees.
async fn faulty_proxy(upstream: String, fault: Fault) -> (String, Arc<Mutex<Vec<String>>>) {
    let upstream = upstream
        .trim_start_matches("http://")
        .trim_end_matches("/paid")
        .to_owned();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut client, _) = listener.accept().await.unwrap();
            let (upstream, log) = (upstream.clone(), log.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0_u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                let payment = text.lines().find(|line| {
                    let line = line.to_ascii_lowercase();
                    line.starts_with("authorization: payment")
                        || line.starts_with("payment-signature:")
                });
                let first_paid = payment.is_some_and(|line| {
                    let mut log = log.lock().unwrap();
                    log.push(line.to_owned());
                    log.len() == 1
                });
                if first_paid && matches!(fault, Fault::Unavailable) {
                    let answer = "HTTP/1.1 503 Service Unavailable\r\nretry-after: 0\r\n\
                                  content-length: 0\r\nconnection: close\r\n\r\n";
                    let _ = client.write_all(answer.as_bytes()).await;
                    return;
                }
                let mut server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
                let head = text.replacen("\r\n", "\r\nconnection: close\r\n", 1);
                server.write_all(head.as_bytes()).await.unwrap();
                let mut answer = Vec::new();
                let _ = server.read_to_end(&mut answer).await;
                if first_paid {
                    return; // the server settled; the client never hears of it
                }
                let _ = client.write_all(&answer).await;
                let _ = client.shutdown().await;
            });
        }
    });
    (format!("http://{address}/paid"), seen)
}

#[tokio::test]
async fn a_lost_answer_or_a_503_is_retried_with_the_same_payment_and_charged_once() {
    let world = world(Offers::Both).await;
    for (fault, intent) in [
        (Fault::DropAnswer, Intent::X402_EXACT),
        (Fault::DropAnswer, Intent::MPP_CHARGE),
        (Fault::Unavailable, Intent::X402_EXACT),
        (Fault::Unavailable, Intent::MPP_CHARGE),
    ] {
        let (url, seen) = faulty_proxy(world.url.clone(), fault).await;
        let client = client(
            &world,
            world.payer.clone(),
            Policy::default().prefer([intent]),
        );
        let before = balances(&world).await;
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(payment(&response).map(|paid| paid.intent), Some(intent));
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2, "one payment sent twice: {seen:?}");
        assert_eq!(seen[0], seen[1], "the retry carries the same payment");
        assert_eq!(
            balances(&world).await,
            (before.0 - PRICE_ATOMIC, before.1 + PRICE_ATOMIC),
            "charged once"
        );
        assert_eq!(client.spent(), PRICE_ATOMIC);
    }
}

#[tokio::test]
async fn a_channel_opened_through_rpc_pays_with_vouchers_that_survive_a_restart_and_closes() {
    let config = SandboxConfig::default().ledger_period(Duration::from_millis(100));
    let sandbox = Sandbox::start(config).unwrap();
    let rpc: Arc<dyn SorobanRpc> = Arc::new(sandbox.clone());
    let (payer, recipient) = (
        sandbox.funded_keypair().await.unwrap(),
        sandbox.funded_keypair().await.unwrap(),
    );
    // The channel contract's code on the ledger, as on a real network: an instance deployed
    // once by someone else uploads it.
    let someone = sandbox.funded_keypair().await.unwrap();
    sandbox
        .deploy_channel(ChannelParams {
            token: sandbox.usdc(),
            from: &someone,
            commitment_key: someone.public_key(),
            to: recipient.address(),
            amount: 0,
            refund_waiting_period: 200,
        })
        .await
        .unwrap();

    // The client opens its own channel through the RPC.
    let commitment_key = Keypair::from_seed([77; 32]);
    let deposit = 100 * PRICE_ATOMIC;
    let payer_before = sandbox
        .balance(&sandbox.usdc(), &payer.address())
        .await
        .unwrap();
    let channel = open_channel(
        &*rpc,
        &Network::testnet(),
        &payer,
        &OpenChannel {
            wasm_hash: Sha256::digest(channel_wasm().unwrap()).into(),
            token: sandbox.usdc(),
            commitment_key: commitment_key.public_key(),
            to: recipient.address(),
            amount: deposit,
            refund_waiting_period: 200,
            salt: [1; 32],
        },
    )
    .await
    .unwrap();
    let usdc_of = |holder: Address| {
        let sandbox = sandbox.clone();
        async move { sandbox.balance(&sandbox.usdc(), &holder).await.unwrap() }
    };
    assert_eq!(usdc_of(channel).await, deposit);
    assert_eq!(usdc_of(payer.address()).await, payer_before - deposit);

    // The server serves it.
    let scheme = StellarChannel::builder(
        Network::testnet(),
        recipient.clone(),
        rpc.clone(),
        support::keys(),
        Arc::new(MemoryChannelStore::new()),
    )
    .currency(sandbox.usdc())
    .realm("example")
    .build()
    .unwrap();
    let scheme = Arc::new(scheme);
    scheme.add_channel(channel).await.unwrap();
    let layer = PaymentLayer::builder()
        .shared_scheme(scheme)
        .price(Price::parse(PRICE).unwrap())
        .build()
        .unwrap();
    let url = serve(
        Router::new()
            .route("/paid", get(|| async { "content" }))
            .layer(layer),
    )
    .await;

    let dir = std::env::temp_dir().join(format!("paying-client-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("channels.json");
    let paying = |store: Arc<FileCumulativeStore>| {
        PayingClient::builder(payer.clone(), rpc.clone(), Network::testnet())
            .channel(&url, channel, commitment_key.clone())
            .cumulative_store(store)
            .build()
            .unwrap()
    };
    let client = paying(Arc::new(FileCumulativeStore::open(&path).unwrap()));
    for _ in 0..3 {
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(payment(&response).unwrap().intent, Intent::MPP_CHANNEL);
        assert_eq!(response.text().await.unwrap(), "content");
    }
    assert_eq!(
        usdc_of(channel).await,
        deposit,
        "vouchers move nothing on the ledger"
    );

    // A restart: the amounts come back from the file, and the next voucher goes on from them.
    drop(client);
    let store = Arc::new(FileCumulativeStore::open(&path).unwrap());
    assert_eq!(
        store.current("stellar:testnet", &channel).unwrap(),
        3 * PRICE_ATOMIC
    );
    let client = paying(store.clone());
    assert_eq!(client.get(&url).send().await.unwrap().status(), 200);

    // The close is a paid request too: the channel pays out 5 prices and the rest goes back.
    let recipient_before = usdc_of(recipient.address()).await;
    let payer_before = usdc_of(payer.address()).await;
    let response = client.get(&url).close_channel().send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(payment(&response).unwrap().receipt.is_some());
    assert_eq!(
        store.current("stellar:testnet", &channel).unwrap(),
        5 * PRICE_ATOMIC
    );
    assert_eq!(
        usdc_of(recipient.address()).await,
        recipient_before + 5 * PRICE_ATOMIC
    );
    assert_eq!(
        usdc_of(payer.address()).await,
        payer_before + deposit - 5 * PRICE_ATOMIC
    );
    assert_eq!(usdc_of(channel).await, 0);
    assert_eq!(client.spent(), 2 * PRICE_ATOMIC);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A token contract whose `transfer` also moves 500 USDC from `from` to `to` with `from`'s
/// authority (a server's trap: it names this contract as the asset, at a price of 1).
const GREEDY_TOKEN: &str = r#"(module
  (import "a" "0" (func $require_auth (param i64) (result i64)))
  (import "d" "_" (func $call (param i64 i64 i64) (result i64)))
  (import "l" "_" (func $put (param i64 i64 i64) (result i64)))
  (import "l" "1" (func $get (param i64 i64) (result i64)))
  (import "v" "_" (func $vec_new (result i64)))
  (import "v" "6" (func $push (param i64 i64) (result i64)))
  (func (export "__constructor") (param $usdc i64) (result i64)
    (drop (call $put (i64.const 0x0000001fd30ab30e) (local.get $usdc) (i64.const 2)))
    (i64.const 2))
  (func (export "transfer") (param $from i64) (param $to i64) (param $amount i64) (result i64)
    (drop (call $require_auth (local.get $from)))
    (drop (call $call
      (call $get (i64.const 0x0000001fd30ab30e) (i64.const 2))
      (i64.const 0x00e779b3e2bab70e)
      (call $push (call $push (call $push (call $vec_new) (local.get $from)) (local.get $to))
                  (i64.const 0x12a05f2000b))))
    (i64.const 2))
  (@custom "contractenvmetav0" "\00\00\00\00" "\00\00\00\1e" "\00\00\00\00"))"#;

/// A server at a fixed 402: `offers` as its headers; every payment it receives is recorded,
/// and answered 402 again.
async fn fixed_402(offers: Vec<(&'static str, String)>) -> (String, Arc<Mutex<Vec<String>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = received.clone();
    let app = Router::new().route(
        "/paid",
        get(move |headers: http::HeaderMap| {
            let (offers, log) = (offers.clone(), log.clone());
            async move {
                for name in ["authorization", "payment-signature"] {
                    if let Some(value) = headers.get(name) {
                        log.lock().unwrap().push(value.to_str().unwrap().to_owned());
                    }
                }
                let mut response = http::Response::builder().status(402);
                for (name, value) in offers {
                    response = response.header(name, value);
                }
                response.body(axum::body::Body::empty()).unwrap()
            }
        }),
    );
    (serve(app).await, received)
}

fn challenge_header(intent: &str, request: serde_json::Value) -> String {
    let serde_json::Value::Object(request) = request else {
        panic!("an object")
    };
    tower_paywall::mpp::Challenge::builder("example", "stellar", intent, &request)
        .issue(&support::keys())
        .to_header_value()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_token_whose_transfer_reaches_further_is_refused_before_signing() {
    let world = world(Offers::Both).await;
    let attacker = world.sandbox.funded_keypair().await.unwrap();
    let greedy = world
        .sandbox
        .deploy_wasm(
            &wat::parse_str(GREEDY_TOKEN).unwrap(),
            &attacker,
            vec![tower_paywall::stellar::xdr::ScVal::Address(
                world.sandbox.usdc().to_sc_address(),
            )],
        )
        .await
        .unwrap();
    let to = attacker.address().to_string();
    let x402 = serde_json::json!({"x402Version": 2, "resource": {"url": "http://x/paid"},
        "accepts": [{"scheme": "exact", "network": "stellar:testnet", "amount": "1",
            "asset": greedy.to_string(), "payTo": to, "maxTimeoutSeconds": 60,
            "extra": {"areFeesSponsored": true}}]});
    let charge = serde_json::json!({"amount": "1", "currency": greedy.to_string(),
        "recipient": to, "methodDetails": {"network": "stellar:testnet"}});
    let (url, received) = fixed_402(vec![
        (
            "payment-required",
            tower_paywall::x402::header::encode(&x402)
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned(),
        ),
        ("www-authenticate", challenge_header("charge", charge)),
    ])
    .await;
    let before = balances(&world).await;
    for intent in [Intent::X402_EXACT, Intent::MPP_CHARGE] {
        let client = client(
            &world,
            world.payer.clone(),
            Policy::default().prefer([intent]),
        );
        match client.get(&url).send().await {
            Err(ClientError::Pay(PayError::Prepare(PrepareError::UnexpectedAuthorization(_)))) => {}
            other => panic!("{intent}: expected a refusal before signing, got {other:?}"),
        }
        assert_eq!(client.spent(), 0);
    }
    assert!(received.lock().unwrap().is_empty(), "no payment was sent");
    assert_eq!(balances(&world).await, before);
}

#[tokio::test]
async fn a_payment_answered_with_another_402_still_counts_against_the_budget() {
    let world = world(Offers::Both).await;
    let charge = serde_json::json!({"amount": PRICE_ATOMIC.to_string(),
        "currency": world.sandbox.usdc().to_string(), "recipient": world.pay_to.to_string(),
        "methodDetails": {"network": "stellar:testnet", "credentialTypes": ["transaction"]}});
    let (url, received) = fixed_402(vec![(
        "www-authenticate",
        challenge_header("charge", charge),
    )])
    .await;
    let client = client(
        &world,
        world.payer.clone(),
        Policy::default().budget(PRICE_ATOMIC * 3 / 2),
    );
    let refused = client.get(&url).send().await.unwrap();
    assert_eq!(refused.status(), 402);
    assert!(payment(&refused).is_none());
    // The server holds a signed transfer it may still submit: the budget keeps it.
    assert_eq!(client.spent(), PRICE_ATOMIC);
    assert!(matches!(
        client.get(&url).send().await,
        Err(ClientError::BudgetExceeded { .. })
    ));
    assert_eq!(received.lock().unwrap().len(), 1, "paid once, never again");
}

#[tokio::test]
async fn offers_the_client_cannot_pay_as_asked_are_refused_with_nothing_sent() {
    let world = world(Offers::Both).await;
    let usdc = world.sandbox.usdc().to_string();
    let pay_to = world.pay_to.to_string();
    let unsponsored = serde_json::json!({"x402Version": 2, "resource": {"url": "http://x/paid"},
        "accepts": [{"scheme": "exact", "network": "stellar:testnet", "amount": "1",
            "asset": usdc, "payTo": pay_to, "maxTimeoutSeconds": 60, "extra": {}}]});
    let pull_only = serde_json::json!({"amount": "1", "currency": usdc, "recipient": pay_to,
        "methodDetails": {"network": "stellar:testnet", "credentialTypes": ["transaction"]}});
    let mut expired = tower_paywall::mpp::Challenge::builder(
        "example",
        "stellar",
        "charge",
        pull_only.as_object().unwrap(),
    );
    expired = expired.expires(tower_paywall::mpp::Timestamp::from_unix_millis(1_000).unwrap());
    let expired = expired.issue(&support::keys()).to_header_value().unwrap();
    let cases: Vec<(&str, (&'static str, String), Policy, ChargeMode)> = vec![
        (
            "x402 without sponsored fees",
            (
                "payment-required",
                tower_paywall::x402::header::encode(&unsponsored)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned(),
            ),
            Policy::default(),
            ChargeMode::Pull,
        ),
        (
            "a push the server does not take",
            ("www-authenticate", challenge_header("charge", pull_only)),
            Policy::default(),
            ChargeMode::Push,
        ),
        (
            "an expired challenge",
            ("www-authenticate", expired.to_str().unwrap().to_owned()),
            Policy::default(),
            ChargeMode::Pull,
        ),
    ];
    for (case, offer, policy, mode) in cases {
        let (url, received) = fixed_402(vec![offer]).await;
        let client = PayingClient::builder(
            world.payer.clone(),
            Arc::new(world.sandbox.clone()),
            Network::testnet(),
        )
        .policy(policy)
        .charge_mode(mode)
        .build()
        .unwrap();
        match client.get(&url).send().await {
            Err(ClientError::Pay(PayError::Unsupported(_) | PayError::InvalidOffer(_))) => {}
            other => panic!("{case}: expected a refusal, got {other:?}"),
        }
        assert_eq!(client.spent(), 0, "{case}");
        assert!(received.lock().unwrap().is_empty(), "{case}");
    }

    // A channel's origin must be a URL.
    let built = PayingClient::builder(
        world.payer.clone(),
        Arc::new(world.sandbox.clone()),
        Network::testnet(),
    )
    .channel("not a url", Address::Contract([1; 32]), world.payer.clone())
    .build();
    assert!(matches!(
        built,
        Err(tower_paywall::client::ClientBuildError::Origin)
    ));
}

#[tokio::test]
async fn a_push_that_fails_after_submitting_counts_as_spent() {
    let world = world(Offers::Both).await;
    // The envelope's signature is given, the `signedHash` one refused.
    let calls = Arc::new(AtomicUsize::new(0));
    let (key, count) = (world.payer.clone(), calls.clone());
    let signer = CallbackSigner::new(world.payer.public_key(), move |message: Vec<u8>| {
        let key = key.clone();
        let call = count.fetch_add(1, Ordering::SeqCst);
        async move {
            if call == 0 {
                Ok(key.sign(&message))
            } else {
                Err(SignError::Refused("no".into()))
            }
        }
    });
    let client = PayingClient::builder(signer, Arc::new(world.sandbox.clone()), Network::testnet())
        .policy(Policy::default().prefer([Intent::MPP_CHARGE]))
        .charge_mode(ChargeMode::Push)
        .build()
        .unwrap();
    let before = balances(&world).await;
    match client.get(&world.url).send().await {
        Err(ClientError::Incomplete(PayError::Signer(_))) => {}
        other => panic!("expected Incomplete, got {other:?}"),
    }
    assert_eq!(client.spent(), PRICE_ATOMIC);
    assert_eq!(
        balances(&world).await,
        (before.0 - PRICE_ATOMIC, before.1 + PRICE_ATOMIC),
        "the transfer landed"
    );
}

/// The price of an event of [`metered`]'s stream (0.0001 USDC): 1 000 events are 0.1 USDC.
const EVENT_PRICE: i128 = 1_000;

/// A metered stream on the sandbox, and a client paying it from its channel.
struct Metered {
    _sandbox: Sandbox,
    channel: Address,
    url: String,
    client: PayingClient,
}

/// A channel of 1 USDC from a funded payer (commitment key from `seed`) to a recipient, served
/// by a layer selling 1 000 SSE events at `EVENT_PRICE` each on `/paid`; a client paying it a
/// voucher per 100 events, early when `prepay`.
async fn metered(seed: u8, prepay: bool) -> Metered {
    let config = SandboxConfig::default().ledger_period(Duration::from_millis(100));
    let sandbox = Sandbox::start(config).unwrap();
    let payer = sandbox.funded_keypair().await.unwrap();
    let recipient = sandbox.funded_keypair().await.unwrap();
    let key = Keypair::from_seed([seed; 32]);
    let channel = sandbox
        .deploy_channel(ChannelParams {
            token: sandbox.usdc(),
            from: &payer,
            commitment_key: key.public_key(),
            to: recipient.address(),
            amount: 10_000_000,
            refund_waiting_period: 200,
        })
        .await
        .unwrap();
    let scheme = StellarChannel::builder(
        Network::testnet(),
        recipient.clone(),
        Arc::new(sandbox.clone()),
        support::keys(),
        Arc::new(MemoryChannelStore::new()),
    )
    .currency(sandbox.usdc())
    .realm("example")
    .build()
    .unwrap();
    let scheme = Arc::new(scheme);
    scheme.add_channel(channel).await.unwrap();
    let layer = PaymentLayer::builder()
        .shared_scheme(scheme)
        .price(
            Price::parse("0.0001")
                .unwrap()
                .per(tower_paywall::Unit::Event),
        )
        .build()
        .unwrap();
    let body: String = (0..1_000).map(|n| format!("data: {n}\n\n")).collect();
    let app = Router::new()
        .route(
            "/paid",
            get(move || {
                let body = body.clone();
                async move { ([("content-type", "text/event-stream")], body) }
            }),
        )
        .layer(layer);
    let url = serve(app).await;
    let client = PayingClient::builder(payer, Arc::new(sandbox.clone()), Network::testnet())
        .channel(&url, channel, key)
        .stream_ahead(100)
        .stream_prepay(prepay)
        .build()
        .unwrap();
    Metered {
        _sandbox: sandbox,
        channel,
        url,
        client,
    }
}

/// A whole stream of [`metered`] read by a fresh client: its 1 000 items in order, once, and
/// each paid once (ten vouchers of 100).
fn assert_whole(
    items: &[String],
    receipt: &tower_paywall::mpp::stream::StreamReceipt,
    paid: i128,
    client: &PayingClient,
) {
    assert_eq!(items.len(), 1_000);
    assert!(
        items
            .iter()
            .enumerate()
            .all(|(n, data)| *data == n.to_string())
    );
    let owed = 1_000 * EVENT_PRICE;
    assert_eq!((receipt.spent, receipt.units), (owed, Some(1_000)));
    assert_eq!(paid, owed, "ten vouchers of 100");
    assert_eq!(client.spent(), owed);
}

#[tokio::test]
async fn a_metered_stream_is_paid_as_it_flows_and_stops_at_its_cap() {
    let Metered { url, client, .. } = metered(78, false).await;
    let price = EVENT_PRICE;

    // The whole stream, a voucher per 100 events.
    let mut stream = client.get(&url).send_stream().await.unwrap();
    let mut events = Vec::new();
    while let Some(event) = stream.next().await {
        events.push(event.unwrap().data);
    }
    let receipt = stream.receipt().expect("the final receipt");
    assert_whole(&events, receipt, stream.paid(), &client);

    // A cap of 250 events: paid up to 200 (the next voucher would pass it), then it stops.
    let mut capped = client
        .get(&url)
        .stream_cap(250 * price)
        .send_stream()
        .await
        .unwrap();
    let mut read = 0;
    let stopped = loop {
        match capped.next().await {
            Some(Ok(_)) => read += 1,
            Some(Err(error)) => break error,
            None => panic!("the stream ended before its cap"),
        }
    };
    assert!(
        matches!(stopped, ClientError::BudgetExceeded { .. }),
        "{stopped:?}"
    );
    assert_eq!((read, capped.paid()), (200, 200 * price));
    assert_eq!(client.spent(), 1_200 * price);
    // Stopped, it closed its connection (kept alive here): the server gave back what it held,
    // and waits no more (a stream still waiting would draw on the next one's opening).
    assert!(capped.next().await.is_none());

    // As a `Stream`, for combinators.
    use futures_util::StreamExt;
    let first: Vec<String> = client
        .get(&url)
        .send_stream()
        .await
        .unwrap()
        .into_stream()
        .take(3)
        .map(|event| event.unwrap().data)
        .collect()
        .await;
    assert_eq!(first, ["0", "1", "2"]);
    drop(capped);
}

#[tokio::test]
async fn a_client_that_prepays_pays_each_voucher_when_half_the_last_is_drawn() {
    let Metered { url, client, .. } = metered(80, true).await;
    let price = EVENT_PRICE;
    let mut stream = client.get(&url).send_stream().await.unwrap();
    let mut events = 0;
    while let Some(event) = stream.next().await {
        event.unwrap();
        events += 1;
    }
    assert_eq!(events, 1_000);
    let receipt = stream.receipt().unwrap();
    assert_eq!((receipt.spent, receipt.units), (1_000 * price, Some(1_000)));
    // The opening, then a voucher each time 50 events were left: the last one, at 950, is
    // ahead of the stream's end.
    assert_eq!(stream.paid(), 1_100 * price);
    assert_eq!(client.spent(), 1_100 * price);

    // Over a socket too (the credit paid ahead before is drawn first).
    #[cfg(feature = "websocket")]
    {
        let mut socket = client.get(&url).send_socket().await.unwrap();
        let mut messages = 0;
        while let Some(message) = socket.next().await {
            message.unwrap();
            messages += 1;
        }
        assert_eq!(messages, 1_000);
        let receipt = socket.receipt().unwrap();
        assert_eq!(receipt.units, Some(1_000));
        assert_eq!(receipt.spent, 2_000 * price);
        assert!(socket.paid() >= 900 * price, "{}", socket.paid());
    }
}

#[cfg(feature = "websocket")]
#[tokio::test]
async fn a_metered_socket_is_paid_as_it_flows_and_stops_at_its_cap() {
    let Metered {
        channel,
        url,
        client,
        ..
    } = metered(79, false).await;
    let price = EVENT_PRICE;

    // The whole stream as messages, a voucher per 100 sent on the socket.
    let mut socket = client.get(&url).send_socket().await.unwrap();
    let opened = socket.receipt().expect("the opening's receipt").clone();
    assert_eq!((opened.channel_id, opened.spent), (channel.to_string(), 0));
    let mut messages = Vec::new();
    while let Some(message) = socket.next().await {
        messages.push(message.unwrap());
    }
    let receipt = socket.receipt().expect("the final receipt");
    assert_whole(&messages, receipt, socket.paid(), &client);

    // A cap of 250 messages: paid up to 200 (the next voucher would pass it), then it stops.
    let mut capped = client
        .get(&url)
        .stream_cap(250 * price)
        .send_socket()
        .await
        .unwrap();
    let mut read = 0;
    let stopped = loop {
        match capped.next().await {
            Some(Ok(_)) => read += 1,
            Some(Err(error)) => break error,
            None => panic!("the stream ended before its cap"),
        }
    };
    assert!(
        matches!(stopped, ClientError::BudgetExceeded { .. }),
        "{stopped:?}"
    );
    assert_eq!((read, capped.paid()), (200, 200 * price));
    assert!(capped.next().await.is_none(), "the socket is closed");

    // A stop: the rest of what was paid, then the final receipt.
    let mut stopped = client.get(&url).send_socket().await.unwrap();
    let first = stopped.next().await.unwrap().unwrap();
    assert_eq!(first, "0");
    stopped.stop().await.unwrap();
    let mut after = 0;
    while let Some(message) = stopped.next().await {
        message.unwrap();
        after += 1;
    }
    let last = stopped.receipt().expect("the final receipt");
    assert_eq!(last.units, Some(1 + after));
    assert!(after < 100, "stopped before its credit ran out: {after}");

    // A route that asks for no payment opens no socket, and pays nothing.
    let spent = client.spent();
    let elsewhere = support::serve(Router::new()).await;
    let free = client
        .get(format!("{elsewhere}/paid"))
        .send_socket()
        .await
        .unwrap_err();
    assert!(
        matches!(free, ClientError::Status(status) if status == 404),
        "{free:?}"
    );
    assert_eq!(client.spent(), spent);

    // As a `Stream`, for combinators.
    use futures_util::StreamExt;
    let first: Vec<String> = client
        .get(&url)
        .send_socket()
        .await
        .unwrap()
        .into_stream()
        .take(3)
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(first, ["0", "1", "2"]);
}
