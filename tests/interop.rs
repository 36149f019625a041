//! Interop with the official TypeScript x402 packages (`tests/interop/`, a node package), on
//! loopback against the sandbox's HTTPS RPC:
//!
//! - the official client (`@x402/fetch` + `@x402/stellar`) pays an axum route behind our
//!   `PaymentLayer` whose 402 also offers MPP `charge`, and the ledger shows the transfer;
//! - the official server (`@x402/express` with `@x402/core`'s HTTP facilitator client) settles
//!   through our facilitator server, paid by the official client and by our `PayingClient`;
//! - mppx's own client transport (`Mppx.create({ methods }).fetch`), on every mppx line from
//!   0.6.31 (the line the Stellar MPP SDK's users run) to 0.11.0, with Stellar `charge` and
//!   `channel` methods written after the Stellar MPP SDK's client (`tests/interop/
//!   stellar_mpp.mjs`; the SDK is not on the registry), pays routes that offer x402 beside MPP:
//!   charge by sponsored pull, unsponsored pull and `signedHash` push, channel vouchers and a
//!   close, and the ledger shows every transfer;
//! - the official payment-identifier helpers (`@x402/extensions`) with the official client: one
//!   id, two fetches, one charge and the recorded answer; the id on another resource, 409.
//!
//! The TypeScript client also fetches a public Horizon host (to estimate ledger times; it falls
//! back to 5 s), so these tests run only in a network namespace with nothing but loopback:
//! `scripts/test` runs them under `unshare -rn` with `TOWER_PAYWALL_INTEROP=1` after installing
//! the node package. With `TOWER_PAYWALL_GOLDEN=<dir>`, the client test also writes the
//! `PAYMENT-SIGNATURE` it received there (see `tests/data/golden/`).
#![cfg(feature = "sandbox")]

#[path = "support/node.rs"]
#[allow(dead_code)]
mod node_scripts;
mod support;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tower_paywall::mpp::{ChallengeKeys, ChallengeSecret, Receipt, StellarChannel, StellarCharge};
use tower_paywall::sandbox::{ChannelParams, RpcServer, Sandbox, SandboxConfig, ServeConfig};
use tower_paywall::stellar::rpc::SorobanRpc;
use tower_paywall::stellar::{Address, Keypair, Network, Sponsor};
use tower_paywall::store::MemoryChannelStore;
use tower_paywall::x402::{Exact, LocalFacilitator, SettleResponse, facilitator_router};
use tower_paywall::{PaymentIdentifier, PaymentLayer, PaymentLayerBuilder, Price};

const PRICE_ATOMIC: i128 = 100_000;

fn enabled() -> bool {
    node_scripts::interop_enabled()
}

fn package() -> PathBuf {
    node_scripts::workspace().join("tests/interop")
}

struct World {
    sandbox: Sandbox,
    rpc: RpcServer,
    facilitator: LocalFacilitator,
    payer: Keypair,
    pay_to: Address,
}

async fn world() -> World {
    let config = SandboxConfig::default().ledger_period(Duration::from_millis(250));
    let sandbox = Sandbox::start(config).unwrap();
    let rpc = sandbox.serve(ServeConfig::default()).await.unwrap();
    let fee_payer = sandbox.funded_keypair().await.unwrap();
    let facilitator = LocalFacilitator::builder(sandbox.clone(), Network::testnet(), fee_payer)
        .build()
        .unwrap();
    let payer = sandbox.funded_keypair().await.unwrap();
    let pay_to = sandbox.funded_keypair().await.unwrap().address();
    World {
        sandbox,
        rpc,
        facilitator,
        payer,
        pay_to,
    }
}

/// A script of the node package, with the world's RPC, payer and USDC in its environment.
fn node_command(script: &str, world: &World, env: &[(&str, String)]) -> tokio::process::Command {
    let mut command = node_scripts::command(script);
    command
        .env("NODE_EXTRA_CA_CERTS", world.rpc.certificate_path())
        .env("RPC_URL", world.rpc.https_url().unwrap())
        .env("PAYER_SECRET", world.payer.secret_seed())
        .env("USDC", world.sandbox.usdc().to_string())
        .envs(env.iter().map(|(name, value)| (*name, value.as_str())));
    command
}

/// Runs a script of the node package and parses the JSON line it prints.
async fn node(script: &str, world: &World, env: &[(&str, String)]) -> serde_json::Value {
    node_scripts::run(script, node_command(script, world, env)).await
}

async fn usdc(world: &World, holder: &Address) -> i128 {
    support::usdc_of(&world.sandbox, holder).await
}

fn settled(answer: &serde_json::Value) -> SettleResponse {
    let header = answer["paymentResponse"]
        .as_str()
        .expect("a PAYMENT-RESPONSE");
    serde_json::from_slice(&STANDARD.decode(header).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_client_pays_our_layer() {
    if !enabled() {
        return;
    }
    let world = world().await;
    let exact = Exact::builder(Network::testnet(), world.pay_to, world.facilitator.clone())
        .build()
        .unwrap();
    // The combined 402 (x402 beside MPP `charge`): the x402 client sends no `Accept-Payment`,
    // so it gets every offer and picks its own.
    let rpc: Arc<dyn SorobanRpc> = Arc::new(world.sandbox.clone());
    let charge = StellarCharge::builder(Network::testnet(), world.pay_to, rpc, mpp_keys())
        .build()
        .unwrap();
    let layer = PaymentLayer::builder()
        .scheme(exact)
        .scheme(charge)
        .price(Price::parse("0.01").unwrap())
        .build()
        .unwrap();
    let captured: Arc<Mutex<Option<String>>> = Arc::default();
    let capture = captured.clone();
    let app = Router::new()
        .route("/paid", get(|| async { "content" }))
        .layer(layer)
        .layer(axum::middleware::map_request(
            move |request: axum::extract::Request| {
                let capture = capture.clone();
                async move {
                    if let Some(value) = request.headers().get("payment-signature") {
                        *capture.lock().unwrap() = value.to_str().ok().map(str::to_owned);
                    }
                    request
                }
            },
        ));
    let url = support::serve(app).await;
    let (payer_before, pay_to_before) = (
        usdc(&world, &world.payer.address()).await,
        usdc(&world, &world.pay_to).await,
    );
    let answer = node(
        "client.mjs",
        &world,
        &[("URL_TO_PAY", format!("{url}/paid"))],
    )
    .await;
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["body"], "content");
    let settlement = settled(&answer);
    assert!(settlement.success, "{settlement:?}");
    assert_eq!(
        usdc(&world, &world.payer.address()).await,
        payer_before - PRICE_ATOMIC
    );
    assert_eq!(
        usdc(&world, &world.pay_to).await,
        pay_to_before + PRICE_ATOMIC
    );
    let header = captured
        .lock()
        .unwrap()
        .clone()
        .expect("the client sent a payment");
    if let Some(folder) = std::env::var_os("TOWER_PAYWALL_GOLDEN") {
        let golden = serde_json::json!({
            "network": "stellar:testnet",
            "payer": world.payer.address().to_string(),
            "payTo": world.pay_to.to_string(),
            "paymentSignature": header,
        });
        let path = PathBuf::from(folder).join("x402-fetch-payment.json");
        std::fs::write(&path, serde_json::to_string_pretty(&golden).unwrap()).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_payment_identifier_helpers_pay_once_per_id() {
    if !enabled() {
        return;
    }
    let world = world().await;
    let exact = Exact::builder(Network::testnet(), world.pay_to, world.facilitator.clone())
        .build()
        .unwrap();
    let price = Price::parse("0.01")
        .unwrap()
        .with_payment_identifier(PaymentIdentifier::Optional);
    let layer = PaymentLayer::builder()
        .scheme(exact)
        .price(price)
        .build()
        .unwrap();
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let handler = move || {
        let served = served.clone();
        async move {
            let n = served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            format!("answer {n}")
        }
    };
    let app = Router::new()
        .route("/paid", get(handler.clone()))
        .route("/other", get(handler))
        .layer(layer);
    let url = support::serve(app).await;
    let (payer_before, pay_to_before) = (
        usdc(&world, &world.payer.address()).await,
        usdc(&world, &world.pay_to).await,
    );
    let run = node(
        "payment_identifier.mjs",
        &world,
        &[
            ("URL_TO_PAY", format!("{url}/paid")),
            ("OTHER_URL", format!("{url}/other")),
        ],
    )
    .await;
    let answers = run["answers"].as_array().expect("three answers");
    for answer in answers {
        assert_eq!(
            answer["sentId"], run["paymentId"],
            "the helpers sent the id: {run}"
        );
    }
    // The first fetch pays; the second (a fresh 402, a new authorization, the same id) gets
    // the recorded answer and its receipt; the id on another resource is refused.
    assert_eq!(answers[0]["status"], 200, "{run}");
    assert_eq!(answers[0]["body"], "answer 0");
    assert_eq!(answers[1]["status"], 200, "{run}");
    assert_eq!(answers[1]["body"], "answer 0");
    assert_eq!(answers[1]["paymentResponse"], answers[0]["paymentResponse"]);
    assert!(settled(&answers[0]).success);
    assert_eq!(answers[2]["status"], 409, "{run}");
    let refusal: serde_json::Value =
        serde_json::from_str(answers[2]["body"].as_str().unwrap()).unwrap();
    assert_eq!(refusal["error"], "idempotency_key_reused");
    // One charge.
    assert_eq!(
        usdc(&world, &world.payer.address()).await,
        payer_before - PRICE_ATOMIC
    );
    assert_eq!(
        usdc(&world, &world.pay_to).await,
        pay_to_before + PRICE_ATOMIC
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_server_settles_through_our_facilitator_server() {
    if !enabled() {
        return;
    }
    let world = world().await;
    let router = facilitator_router(Arc::new(world.facilitator.clone()), Some("interop".into()));
    let facilitator_url = support::serve(router).await;
    let before = usdc(&world, &world.pay_to).await;
    let env = [
        ("FACILITATOR_URL", facilitator_url),
        ("FACILITATOR_API_KEY", "interop".to_owned()),
        ("PAY_TO", world.pay_to.to_string()),
    ];
    let answer = node("express.mjs", &world, &env).await;
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["body"], "a joke");
    assert!(settled(&answer).success);
    assert_eq!(usdc(&world, &world.pay_to).await, before + PRICE_ATOMIC);
}

#[cfg(feature = "client")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_pays_the_official_server() {
    use tokio::io::AsyncBufReadExt;
    use tower_paywall::client::{PayingClient, payment};
    use tower_paywall::scheme::Intent;

    if !enabled() {
        return;
    }
    let world = world().await;
    let router = facilitator_router(Arc::new(world.facilitator.clone()), Some("interop".into()));
    let facilitator_url = support::serve(router).await;
    let env = [
        ("FACILITATOR_URL", facilitator_url),
        ("FACILITATOR_API_KEY", "interop".to_owned()),
        ("PAY_TO", world.pay_to.to_string()),
        ("SERVE_ONLY", "1".to_owned()),
    ];
    let mut server = node_command("express.mjs", &world, &env)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs (scripts/test installs the package)");
    let stdout = server.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the server starts")
        .unwrap()
        .expect("the server prints its URL");
    let started: serde_json::Value = serde_json::from_str(&line).unwrap();
    let url = started["url"].as_str().unwrap().to_owned();

    let before = (
        usdc(&world, &world.payer.address()).await,
        usdc(&world, &world.pay_to).await,
    );
    let client = PayingClient::builder(
        world.payer.clone(),
        Arc::new(world.sandbox.clone()),
        Network::testnet(),
    )
    .build()
    .unwrap();
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let paid = payment(&response).cloned().expect("paid");
    assert_eq!(paid.intent, Intent::X402_EXACT);
    let receipt = paid.receipt.expect("a PAYMENT-RESPONSE");
    let receipt: SettleResponse =
        serde_json::from_slice(&STANDARD.decode(receipt).unwrap()).unwrap();
    assert!(receipt.success);
    assert_eq!(response.text().await.unwrap(), "a joke");
    assert_eq!(
        (
            usdc(&world, &world.payer.address()).await,
            usdc(&world, &world.pay_to).await
        ),
        (before.0 - PRICE_ATOMIC, before.1 + PRICE_ATOMIC)
    );
    drop(server.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(10), server.wait()).await;
}

/// What one mppx version line paid on a bare layer: charge sponsored, unsponsored and pushed,
/// and channel vouchers then a close, each route with x402's offer beside MPP's.
async fn mppx_pays_every_flow(mppx: &str) {
    let world = world().await;
    let rpc: Arc<dyn SorobanRpc> = Arc::new(world.sandbox.clone());
    let sponsor_account = world.sandbox.funded_keypair().await.unwrap();
    let sponsor = Arc::new(
        Sponsor::new(
            rpc.clone(),
            Network::testnet(),
            vec![sponsor_account],
            None,
            10_000_000,
        )
        .unwrap(),
    );
    let charge = |sponsored: bool| {
        let builder =
            StellarCharge::builder(Network::testnet(), world.pay_to, rpc.clone(), mpp_keys());
        let builder = if sponsored {
            builder.sponsor(sponsor.clone())
        } else {
            builder
        };
        builder.build().unwrap()
    };
    let exact = || {
        Exact::builder(Network::testnet(), world.pay_to, world.facilitator.clone())
            .build()
            .unwrap()
    };
    // A channel funded by another wallet, whose commitments the payer's key signs (so the
    // voucher's payer is the payer); the recipient closes it.
    let funder = world.sandbox.funded_keypair().await.unwrap();
    let recipient = world.sandbox.funded_keypair().await.unwrap();
    let channel_address = world
        .sandbox
        .deploy_channel(ChannelParams {
            token: world.sandbox.usdc(),
            from: &funder,
            commitment_key: world.payer.public_key(),
            to: recipient.address(),
            amount: CHANNEL_DEPOSIT,
            refund_waiting_period: 1_000,
        })
        .await
        .unwrap();
    let channel = StellarChannel::builder(
        Network::testnet(),
        recipient.clone(),
        rpc.clone(),
        mpp_keys(),
        Arc::new(MemoryChannelStore::new()),
    )
    .currency(world.sandbox.usdc())
    .build()
    .unwrap();
    let channel = Arc::new(channel);
    channel.add_channel(channel_address).await.unwrap();
    let layer = |schemes: PaymentLayerBuilder| {
        schemes
            .price(Price::parse("0.01").unwrap())
            .build()
            .unwrap()
    };
    let app = Router::new()
        .route("/sponsored", get(|| async { "content" }))
        .layer(layer(
            PaymentLayer::builder().scheme(exact()).scheme(charge(true)),
        ));
    let app = app.merge(
        Router::new()
            .route("/unsponsored", get(|| async { "content" }))
            .layer(layer(
                PaymentLayer::builder()
                    .scheme(exact())
                    .scheme(charge(false)),
            )),
    );
    let app = app.merge(
        Router::new()
            .route("/channel", get(|| async { "content" }))
            .layer(layer(
                PaymentLayer::builder()
                    .scheme(exact())
                    .scheme(charge(false))
                    .shared_scheme(channel.clone()),
            )),
    );
    let url = support::serve(app).await;
    let payer = world.payer.address();
    let before = (
        usdc(&world, &payer).await,
        usdc(&world, &world.pay_to).await,
        usdc(&world, &recipient.address()).await,
        usdc(&world, &funder.address()).await,
    );

    let channel_step = |name: &str, action: &str| {
        serde_json::json!({
            "name": name, "url": format!("{url}/channel"), "pay": "channel",
            "channel": channel_address.to_string(), "action": action,
            "headers": {"Payment-Channel": channel_address.to_string()},
        })
    };
    let steps = serde_json::json!([
        {"name": "sponsored pull", "url": format!("{url}/sponsored"), "pay": "pull"},
        {"name": "unsponsored pull", "url": format!("{url}/unsponsored"), "pay": "pull"},
        {"name": "push", "url": format!("{url}/unsponsored"), "pay": "push"},
        channel_step("voucher 1", "voucher"),
        channel_step("voucher 2", "voucher"),
        channel_step("close", "close"),
    ]);
    let answer = node(
        "mppx_pay.mjs",
        &world,
        &[
            ("MPPX", mppx.to_owned()),
            ("STEPS", steps.to_string()),
            ("COMMITMENT_SECRET", world.payer.secret_seed().to_string()),
        ],
    )
    .await;
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 6, "{answer}");
    for result in results {
        let name = &result["name"];
        assert_eq!(result["status"], 200, "{name}: {result}");
        assert_eq!(result["body"], "content", "{name}: {result}");
        let receipt = Receipt::parse(result["receipt"].as_str().expect("a Payment-Receipt"));
        assert_eq!(receipt.unwrap().method, "stellar", "{name}");
        // The 402 mppx read spoke MPP alone: the intent it accepts, and no x402 offer.
        let offered = &result["offered"];
        let intent = if result["name"].as_str().unwrap().starts_with("voucher")
            || result["name"] == "close"
        {
            "channel"
        } else {
            "charge"
        };
        assert_eq!(
            offered["acceptPayment"],
            format!("stellar/{intent}"),
            "{name}: {result}"
        );
        assert_eq!(offered["paymentRequired"], false, "{name}: {result}");
        let challenges = offered["challenges"].as_array().unwrap();
        assert_eq!(challenges.len(), 1, "{name}: {result}");
        assert_eq!(challenges[0]["method"], "stellar");
        assert_eq!(challenges[0]["intent"], intent);
        assert!(offered["body"]["x402Version"].is_null(), "{name}: {result}");
        assert_eq!(
            offered["body"]["type"],
            "https://paymentauth.org/problems/payment-required"
        );
    }
    // Three charges moved the payer's USDC; the channel's three prices reached the recipient at
    // the close, and the funder got the rest of the deposit back.
    assert_eq!(
        (
            usdc(&world, &payer).await,
            usdc(&world, &world.pay_to).await,
            usdc(&world, &recipient.address()).await,
            usdc(&world, &funder.address()).await,
        ),
        (
            before.0 - 3 * PRICE_ATOMIC,
            before.1 + 3 * PRICE_ATOMIC,
            before.2 + 3 * PRICE_ATOMIC,
            before.3 + CHANNEL_DEPOSIT - 3 * PRICE_ATOMIC,
        ),
        "{answer}"
    );
    assert_eq!(usdc(&world, &channel_address).await, 0);
}

const CHANNEL_DEPOSIT: i128 = 10_000_000;

fn mpp_keys() -> ChallengeKeys {
    ChallengeKeys::new(ChallengeSecret::new(*b"an interop secret of 32 bytes...").unwrap())
}

/// Every mppx line pays every Stellar flow on routes that also offer x402. mppx 0.6 and 0.7
/// rejected such a 402 (an x402 offer on a Stellar network) before they read any `Payment`
/// challenge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mppx_line_pays_every_stellar_flow_beside_x402() {
    if !enabled() {
        return;
    }
    for line in support::mppx::lines(&package()) {
        mppx_pays_every_flow(&line).await;
    }
}

/// A gRPC implementation that is not ours (`@grpc/grpc-js`, `tests/interop/grpc_call.mjs`, with
/// no .proto) calls a tonic service behind the layer: the unpaid call shows
/// `RESOURCE_EXHAUSTED`, its message and the offers in the metadata; the same call paid by hand
/// with an x402 payment our client made (`client::x402_payment`) is served, its receipt in the
/// response metadata, and the ledger moves once.
#[cfg(feature = "client")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_js_sees_the_payment_status_and_pays_by_hand() {
    if !enabled() {
        return;
    }
    let world = world().await;
    let exact = Exact::builder(Network::testnet(), world.pay_to, world.facilitator.clone())
        .build()
        .unwrap();
    let layer = PaymentLayer::builder()
        .scheme(exact)
        .pricing(support::shop::pricing)
        .build()
        .unwrap();
    let (_, address) = support::shop::shop(layer).await;
    let call = |payment: Option<String>| {
        let mut env = vec![
            ("GRPC_ADDRESS", address.to_string()),
            ("METHOD", "/demo.Shop/Buy".to_owned()),
        ];
        env.extend(payment.map(|payment| ("PAYMENT", payment)));
        env
    };

    let unpaid = node("grpc_call.mjs", &world, &call(None)).await;
    assert_eq!(unpaid["ok"], false, "{unpaid}");
    assert_eq!(unpaid["code"], 8, "RESOURCE_EXHAUSTED: {unpaid}");
    assert_eq!(unpaid["details"], "Payment Required");
    let offers = unpaid["metadata"]["payment-required"]
        .as_str()
        .expect("the offers in the metadata");
    assert!(unpaid["metadata"]["grpc-status-details-bin"].is_string());
    let required: tower_paywall::x402::PaymentRequired =
        tower_paywall::x402::header::decode(offers.as_bytes()).unwrap();

    let before = usdc(&world, &world.pay_to).await;
    let payment = tower_paywall::client::x402_payment(
        &world.sandbox,
        &Network::testnet(),
        &world.payer,
        &required.accepts[0],
        Some(&required.resource),
    )
    .await
    .unwrap();
    let paid = node(
        "grpc_call.mjs",
        &world,
        &call(Some(payment.to_str().unwrap().to_owned())),
    )
    .await;
    assert_eq!(paid["ok"], true, "{paid}");
    // `BuyReply { note: "here is a book" }`.
    let note = b"here is a book";
    let mut reply = vec![0x0a, note.len() as u8];
    reply.extend_from_slice(note);
    assert_eq!(paid["reply"], hex::encode(reply));
    assert!(paid["metadata"]["payment-response"].is_string(), "{paid}");
    let price = required.accepts[0].amount.parse::<i128>().unwrap();
    assert_eq!(
        usdc(&world, &world.pay_to).await - before,
        price,
        "one charge"
    );
}
