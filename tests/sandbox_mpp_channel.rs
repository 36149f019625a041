//! End to end on the sandbox: MPP `channel` (method `stellar`) through `PaymentLayer`. A funder
//! deploys and funds a one-way channel; requests are paid with vouchers; the channel is closed
//! on the ledger with the best one, by the client's `close`, by the operator, or by the watcher
//! when the funder starts a close; the durable store keeps the best voucher across a crash.
//! Every refusal has its problem type.
#![cfg(feature = "sandbox")]

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::get;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use tower_paywall::mpp::{
    Challenge, ChannelError, Credential as MppCredential, Receipt, StellarChannel,
    StellarChannelBuilder, close_lease,
};
use tower_paywall::sandbox::{
    ChannelParams, ContractCall, Invoked, Sandbox, SandboxConfig, SandboxError,
};
use tower_paywall::stellar::rpc::{self, SorobanRpc, TransactionHash};
use tower_paywall::stellar::{Address, Keypair, Network, commitment_bytes, read_channel};
use tower_paywall::store::{
    ChannelId, ChannelPhase, ChannelState, ChannelStore, FileChannelStore, LeaseHolder, Leases,
    MemoryChannelStore, MemoryLeases, StoreError,
};
use tower_paywall::{Paid, PaymentLayer, Price};

/// The price of a request: 0.01 USDC.
const PRICE_ATOMIC: i128 = 100_000;
/// The first deposit: 10 USDC.
const DEPOSIT: i128 = 100_000_000;

struct World {
    sandbox: Sandbox,
    funder: Keypair,
    recipient: Keypair,
    commitment_key: Keypair,
    channel: Address,
}

impl World {
    async fn new(refund_waiting_period: u32) -> World {
        let config = SandboxConfig::default().ledger_period(Duration::from_millis(100));
        let sandbox = Sandbox::start(config).unwrap();
        let funder = sandbox.funded_keypair().await.unwrap();
        let recipient = sandbox.funded_keypair().await.unwrap();
        let commitment_key = Keypair::from_seed([42; 32]);
        let mut world = World {
            sandbox,
            funder,
            recipient,
            commitment_key,
            channel: Address::Contract([0; 32]),
        };
        world.channel = world
            .deploy(refund_waiting_period, world.sandbox.usdc())
            .await;
        world
    }

    /// Another channel from the same funder, key and recipient.
    async fn deploy(&self, refund_waiting_period: u32, token: Address) -> Address {
        self.sandbox
            .deploy_channel(ChannelParams {
                token,
                from: &self.funder,
                commitment_key: self.commitment_key.public_key(),
                to: self.recipient.address(),
                amount: DEPOSIT,
                refund_waiting_period,
            })
            .await
            .unwrap()
    }

    /// The funder calls `function()` on the channel.
    async fn as_funder(&self, function: &str) -> Result<Invoked, SandboxError> {
        self.sandbox
            .invoke(
                &self.funder,
                &ContractCall::new(self.channel, function, vec![]),
            )
            .await
    }

    fn rpc(&self) -> Arc<dyn SorobanRpc> {
        Arc::new(self.sandbox.clone())
    }

    /// A channel scheme for this world's recipient and USDC.
    fn builder(&self, store: Arc<dyn ChannelStore>) -> StellarChannelBuilder {
        StellarChannel::builder(
            Network::testnet(),
            self.recipient.clone(),
            self.rpc(),
            support::keys(),
            store,
        )
        .currency(self.sandbox.usdc())
        .realm("example.com")
    }

    async fn scheme(&self, store: Arc<dyn ChannelStore>) -> Arc<StellarChannel> {
        let scheme = self
            .builder(store)
            // 100 ms ledgers: the watcher keeps up with them.
            .watch_period(Duration::from_millis(100))
            .build()
            .unwrap();
        let scheme = Arc::new(scheme);
        scheme.add_channel(self.channel).await.unwrap();
        scheme
    }

    fn app(scheme: &Arc<StellarChannel>) -> Router {
        let layer = PaymentLayer::builder()
            .shared_scheme(scheme.clone())
            .price(Price::parse("0.01").unwrap())
            .build()
            .unwrap();
        Router::new()
            .route(
                "/paid",
                get(|axum::Extension(paid): axum::Extension<Paid>| async move {
                    format!("paid by {} with {}", paid.payer, paid.intent)
                }),
            )
            .layer(layer)
    }

    async fn usdc(&self, holder: &Address) -> i128 {
        self.sandbox
            .balance(&self.sandbox.usdc(), holder)
            .await
            .unwrap()
    }

    /// The commitment key's signature over the commitment for `amount` on `channel`.
    fn sign(&self, channel: &Address, amount: i128) -> String {
        let bytes = commitment_bytes(&Network::testnet().id(), channel, amount).unwrap();
        hex(&self.commitment_key.sign(&bytes))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
}

impl Answer {
    fn problem(&self) -> String {
        let body: Value = serde_json::from_str(&self.body).unwrap_or_default();
        body["type"]
            .as_str()
            .unwrap_or_default()
            .trim_start_matches("https://paymentauth.org/problems/")
            .to_owned()
    }

    fn receipt(&self) -> Receipt {
        Receipt::parse(self.headers["payment-receipt"].to_str().unwrap()).unwrap()
    }
}

async fn send(app: &Router, authorization: Option<String>) -> Answer {
    let mut request = Request::builder()
        .uri("/paid")
        .header("host", "example.com");
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    let response = app
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

/// The channel challenge for `channel` in a fresh 402.
async fn challenge(app: &Router, channel: &Address) -> Challenge {
    let answer = send(app, None).await;
    assert_eq!(
        answer.status,
        StatusCode::PAYMENT_REQUIRED,
        "{}",
        answer.body
    );
    Challenge::from_headers(&answer.headers)
        .unwrap()
        .into_iter()
        .find(|c| {
            c.intent == "channel" && c.request_json().unwrap()["channel"] == channel.to_string()
        })
        .expect("a challenge for the channel")
}

/// The client's next cumulative amount: the challenge's cumulative plus its price.
fn next_amount(challenge: &Challenge) -> i128 {
    let request = challenge.request_json().unwrap();
    let cumulative: i128 = request["methodDetails"]["cumulativeAmount"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let price: i128 = request["amount"].as_str().unwrap().parse().unwrap();
    cumulative + price
}

fn authorization(challenge: Challenge, action: &str, amount: i128, signature: String) -> String {
    let payload = json!({"action": action, "amount": amount.to_string(), "signature": signature});
    MppCredential::new(challenge, payload).encode()
}

/// The credential answering `challenge` with a voucher for its next amount, and the amount.
fn voucher(world: &World, challenge: Challenge, action: &str) -> (String, i128) {
    let amount = next_amount(&challenge);
    let signature = world.sign(&world.channel, amount);
    (authorization(challenge, action, amount, signature), amount)
}

/// Pays one request with a voucher for the next amount; returns the answer and the amount.
async fn pay(world: &World, app: &Router, action: &str) -> (Answer, i128) {
    let (credential, amount) = voucher(world, challenge(app, &world.channel).await, action);
    (send(app, Some(credential)).await, amount)
}

#[tokio::test]
async fn two_hundred_vouchers_then_close_settles_exactly_the_cumulative_amount() {
    let world = World::new(1_000).await;
    let channel_id = ChannelId::try_from(world.channel).unwrap();
    let scheme = world.scheme(Arc::new(MemoryChannelStore::new())).await;
    let app = World::app(&scheme);
    let funder_before = world.usdc(&world.funder.address()).await;
    let recipient_before = world.usdc(&world.recipient.address()).await;

    for request in 1..=200 {
        let (answer, amount) = pay(&world, &app, "voucher").await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "request {request}: {}",
            answer.body
        );
        assert_eq!(amount, request * PRICE_ATOMIC);
        assert_eq!(
            answer.body,
            // The payer is whoever signs the vouchers: the commitment key's account.
            format!(
                "paid by {} with mpp/channel",
                world.commitment_key.address()
            )
        );
        let receipt = answer.receipt();
        assert_eq!(receipt.method, "stellar");
        assert_eq!(receipt.status, "success");
        assert_eq!(receipt.reference.len(), 36, "a UUID: {}", receipt.reference);
    }
    let state = scheme.state(channel_id).await.unwrap();
    assert_eq!(state.cumulative, 200 * PRICE_ATOMIC);
    assert_eq!(state.phase, ChannelPhase::Open);
    // Nothing moved on the ledger yet.
    assert_eq!(world.usdc(&world.channel).await, DEPOSIT);

    // A challenge kept from before the close.
    let early = challenge(&app, &world.channel).await;
    // The close is a paid request too: its amount adds the price.
    let (answer, amount) = pay(&world, &app, "close").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(amount, 201 * PRICE_ATOMIC);
    let receipt = answer.receipt();
    assert_eq!(receipt.reference.len(), 64, "the close transaction hash");
    let state = scheme.state(channel_id).await.unwrap();
    assert_eq!(
        state.phase,
        ChannelPhase::Closed {
            transaction: Some(receipt.reference.parse::<TransactionHash>().unwrap().0)
        }
    );
    assert_eq!(
        world.usdc(&world.recipient.address()).await,
        recipient_before + amount
    );
    assert_eq!(
        world.usdc(&world.funder.address()).await,
        funder_before + DEPOSIT - amount
    );
    assert_eq!(world.usdc(&world.channel).await, 0);

    // A closed channel takes no more vouchers and is offered no more: with no other offer to
    // make, the refusal keeps its status.
    let (credential, _) = voucher(&world, early, "voucher");
    let answer = send(&app, Some(credential)).await;
    assert_eq!(answer.status, StatusCode::GONE, "{}", answer.body);
    assert_eq!(answer.body, r#"{"error":"session/channel-finalized"}"#);
    let answer = send(&app, None).await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "no offer left"
    );
}

#[tokio::test]
async fn the_funders_close_start_is_answered_by_our_close_within_the_refund_window() {
    // 20 s of 100 ms ledgers.
    let world = World::new(200).await;
    let channel_id = ChannelId::try_from(world.channel).unwrap();
    let scheme = world.scheme(Arc::new(MemoryChannelStore::new())).await;
    let app = World::app(&scheme);
    let recipient_before = world.usdc(&world.recipient.address()).await;
    let mut best = 0;
    for _ in 0..3 {
        let (answer, amount) = pay(&world, &app, "voucher").await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        best = amount;
    }

    // The funder walks away: it starts the refund waiting period.
    let started = world.as_funder("close_start").await.unwrap();
    let refundable_at = read_channel(&*world.rpc(), &world.channel, None)
        .await
        .unwrap()
        .close_effective_at
        .expect("the close started");
    assert!(refundable_at > started.ledger);

    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let state = scheme.state(channel_id).await.unwrap();
            if let ChannelPhase::Closed { transaction } = state.phase {
                return transaction;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the watcher closes the channel");
    let hash = TransactionHash(closed.expect("closed by our transaction"));
    let landed = world
        .sandbox
        .transaction(&hash)
        .await
        .unwrap()
        .ledger
        .unwrap();
    assert!(
        landed < refundable_at,
        "closed at {landed}, refundable at {refundable_at}"
    );
    assert_eq!(
        world.usdc(&world.recipient.address()).await,
        recipient_before + best
    );
    assert_eq!(world.usdc(&world.channel).await, 0);
    // The funder's refund finds nothing left.
    let info = read_channel(&*world.rpc(), &world.channel, None)
        .await
        .unwrap();
    assert_eq!(info.withdrawn, best);
    assert_eq!(info.close_effective_at, Some(landed));

    // While a close is pending, no voucher is taken: a challenge issued before is refused.
    let world = World::new(1_000).await;
    let scheme = world.scheme(Arc::new(MemoryChannelStore::new())).await;
    let still_open = world.deploy(1_000, world.sandbox.usdc()).await;
    scheme.add_channel(still_open).await.unwrap();
    let app = World::app(&scheme);
    let early = challenge(&app, &world.channel).await;
    world.as_funder("close_start").await.unwrap();
    scheme.watch_once().await;
    let (credential, _) = voucher(&world, early, "voucher");
    let answer = send(&app, Some(credential)).await;
    assert_eq!(answer.status, StatusCode::GONE, "{}", answer.body);
    assert_eq!(answer.problem(), "session/channel-finalized");
    // The fresh offers name the channels still open, and only them.
    let offered: Vec<String> = Challenge::from_headers(&answer.headers)
        .unwrap()
        .iter()
        .map(|c| {
            c.request_json().unwrap()["channel"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(offered, [still_open.to_string()]);
    // With nothing to withdraw the channel is left to the funder.
    assert_eq!(
        scheme
            .state(ChannelId::try_from(world.channel).unwrap())
            .await
            .unwrap()
            .phase,
        ChannelPhase::Closed { transaction: None }
    );
}

#[tokio::test]
async fn bad_vouchers_are_refused_with_their_problem_types() {
    let world = World::new(1_000).await;
    let channel_id = ChannelId::try_from(world.channel).unwrap();
    let other = world.deploy(1_000, world.sandbox.usdc()).await;
    let scheme = world.scheme(Arc::new(MemoryChannelStore::new())).await;
    scheme.add_channel(other).await.unwrap();
    let app = World::app(&scheme);

    // One good voucher first.
    let (answer, paid) = pay(&world, &app, "voucher").await;
    assert_eq!(answer.status, StatusCode::OK);
    let recipient_state = || async { scheme.state(channel_id).await.unwrap().cumulative };
    assert_eq!(recipient_state().await, paid);

    // Each refusal on a fresh challenge: (amount, signature, problem).
    let stranger = Keypair::from_seed([7; 32]);
    let forged = {
        let bytes = commitment_bytes(
            &Network::testnet().id(),
            &world.channel,
            paid + PRICE_ATOMIC,
        )
        .unwrap();
        hex(&stranger.sign(&bytes))
    };
    let cases: Vec<(&str, i128, String, &str)> = vec![
        (
            "beyond the deposit",
            DEPOSIT + PRICE_ATOMIC,
            world.sign(&world.channel, DEPOSIT + PRICE_ATOMIC),
            "session/amount-exceeds-deposit",
        ),
        (
            "equal to the stored amount (the last voucher replayed)",
            paid,
            world.sign(&world.channel, paid),
            "session/delta-too-small",
        ),
        (
            "lower",
            paid - 1,
            world.sign(&world.channel, paid - 1),
            "session/delta-too-small",
        ),
        (
            "less than the price above it",
            paid + PRICE_ATOMIC - 1,
            world.sign(&world.channel, paid + PRICE_ATOMIC - 1),
            "session/delta-too-small",
        ),
        (
            "signed for another channel",
            paid + PRICE_ATOMIC,
            world.sign(&other, paid + PRICE_ATOMIC),
            "session/invalid-signature",
        ),
        (
            "signed by another key",
            paid + PRICE_ATOMIC,
            forged,
            "session/invalid-signature",
        ),
    ];
    for (case, amount, signature, expected) in cases {
        let fresh = challenge(&app, &world.channel).await;
        let answer = send(
            &app,
            Some(authorization(fresh, "voucher", amount, signature)),
        )
        .await;
        assert_eq!(
            answer.status,
            StatusCode::PAYMENT_REQUIRED,
            "{case}: {}",
            answer.body
        );
        assert_eq!(answer.problem(), expected, "{case}");
        assert!(
            answer.headers.contains_key("www-authenticate"),
            "{case}: fresh offers"
        );
        assert!(!answer.headers.contains_key("payment-receipt"), "{case}");
    }
    // Payloads that do not fit the schema.
    for payload in [
        json!({"action": "voucher", "amount": "0", "signature": world.sign(&world.channel, 0)}),
        json!({"action": "open", "amount": "1", "signature": world.sign(&world.channel, 1)}),
        json!({"action": "voucher", "amount": (paid + PRICE_ATOMIC).to_string(), "signature": "00"}),
    ] {
        let fresh = challenge(&app, &world.channel).await;
        let answer = send(
            &app,
            Some(MppCredential::new(fresh, payload.clone()).encode()),
        )
        .await;
        assert_eq!(answer.problem(), "invalid-payload", "{payload}");
    }
    // A challenge edited to name another channel is not ours any more.
    let mut edited = challenge(&app, &world.channel).await;
    let mut request = edited.request_json().unwrap();
    request["channel"] = json!(other.to_string());
    edited.request = tower_paywall::mpp::base64url::encode(
        tower_paywall::mpp::jcs::to_string(&Value::Object(request)).as_bytes(),
    );
    let amount = paid + PRICE_ATOMIC;
    let answer = send(
        &app,
        Some(authorization(
            edited,
            "voucher",
            amount,
            world.sign(&other, amount),
        )),
    )
    .await;
    assert_eq!(answer.problem(), "invalid-challenge");
    assert_eq!(recipient_state().await, paid, "nothing was credited");

    // The same credential twice: answered once, credited once.
    let (credential, amount) = voucher(&world, challenge(&app, &world.channel).await, "voucher");
    let first = send(&app, Some(credential.clone())).await;
    assert_eq!(first.status, StatusCode::OK);
    let again = send(&app, Some(credential)).await;
    assert_eq!(again.status, StatusCode::OK, "the recorded answer");
    assert_eq!(again.body, first.body);
    assert_eq!(recipient_state().await, amount);
}

#[tokio::test]
async fn two_vouchers_from_one_state_are_never_both_credited() {
    let world = World::new(1_000).await;
    let channel_id = ChannelId::try_from(world.channel).unwrap();
    let scheme = world.scheme(Arc::new(MemoryChannelStore::new())).await;
    let app = World::app(&scheme);
    for round in 0..5 {
        // Two challenges read the same cumulative amount; the client signs one increment for
        // each (the second a little more, so both would pass on their own).
        let first = challenge(&app, &world.channel).await;
        let second = challenge(&app, &world.channel).await;
        let a = next_amount(&first);
        let b = a + 1;
        let (one, two) = tokio::join!(
            send(
                &app,
                Some(authorization(
                    first,
                    "voucher",
                    a,
                    world.sign(&world.channel, a)
                ))
            ),
            send(
                &app,
                Some(authorization(
                    second,
                    "voucher",
                    b,
                    world.sign(&world.channel, b)
                ))
            ),
        );
        let statuses = [one.status, two.status];
        let paid = statuses.iter().filter(|s| **s == StatusCode::OK).count();
        assert_eq!(paid, 1, "round {round}: {statuses:?}");
        let refused = if one.status == StatusCode::OK {
            &two
        } else {
            &one
        };
        assert_eq!(refused.problem(), "session/delta-too-small");
        let stored = scheme.state(channel_id).await.unwrap().cumulative;
        assert!(stored == a || stored == b, "{stored}");
    }
}

#[tokio::test]
async fn the_durable_store_keeps_the_best_voucher_across_a_crash_and_closes_with_it() {
    let world = World::new(1_000).await;
    let channel_id = ChannelId::try_from(world.channel).unwrap();
    let dir = std::env::temp_dir().join(format!("tower-paywall-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let recipient_before = world.usdc(&world.recipient.address()).await;
    let best = {
        let store = Arc::new(FileChannelStore::open(&dir).unwrap());
        let scheme = world.scheme(store).await;
        let app = World::app(&scheme);
        let mut best = 0;
        for _ in 0..7 {
            let (answer, amount) = pay(&world, &app, "voucher").await;
            assert_eq!(answer.status, StatusCode::OK);
            best = amount;
        }
        best
        // The process state is dropped here: the scheme, its caches, the layer and the store.
    };
    // A restarted server: the store reopened, the channels of the store served again. (A
    // watcher round that was running when the state was dropped may hold the store a moment
    // longer; a new process would not wait.)
    let mut tries = 0;
    let store = loop {
        match FileChannelStore::open(&dir) {
            Err(error) if error.to_string().contains("in use") && tries < 50 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            opened => break Arc::new(opened.unwrap()),
        }
    };
    let scheme = Arc::new(world.builder(store).build().unwrap());
    assert_eq!(scheme.resume().await.unwrap(), [channel_id]);
    let state = scheme.state(channel_id).await.unwrap();
    assert_eq!(state.cumulative, best);
    assert_eq!(state.phase, ChannelPhase::Open);
    let hash = scheme.close_channel(channel_id).await.unwrap();
    assert_eq!(
        world.usdc(&world.recipient.address()).await,
        recipient_before + best
    );
    assert_eq!(
        scheme.state(channel_id).await.unwrap().phase,
        ChannelPhase::Closed {
            transaction: Some(hash.0)
        }
    );
    assert!(matches!(
        scheme.close_channel(channel_id).await,
        Err(ChannelError::Closed(_))
    ));
    drop(scheme);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn the_operator_settles_and_the_channel_stays_open() {
    let world = World::new(1_000).await;
    let channel_id = ChannelId::try_from(world.channel).unwrap();
    let scheme = world.scheme(Arc::new(MemoryChannelStore::new())).await;
    let app = World::app(&scheme);
    assert!(matches!(
        scheme.settle_channel(channel_id).await,
        Err(ChannelError::NothingToWithdraw(_))
    ));
    let recipient_before = world.usdc(&world.recipient.address()).await;
    let (_, first) = pay(&world, &app, "voucher").await;
    scheme.settle_channel(channel_id).await.unwrap();
    assert_eq!(
        world.usdc(&world.recipient.address()).await,
        recipient_before + first
    );
    assert!(matches!(
        scheme.settle_channel(channel_id).await,
        Err(ChannelError::NothingToWithdraw(_))
    ));
    // Vouchers go on from the same cumulative amount; the next settle pays the difference.
    let (answer, second) = pay(&world, &app, "voucher").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(second, first + PRICE_ATOMIC);
    scheme.settle_channel(channel_id).await.unwrap();
    assert_eq!(
        world.usdc(&world.recipient.address()).await,
        recipient_before + second
    );
    assert_eq!(world.usdc(&world.channel).await, DEPOSIT - second);
}

#[tokio::test]
async fn only_channels_paying_us_in_our_currency_are_served() {
    let world = World::new(1_000).await;
    let scheme = world.scheme(Arc::new(MemoryChannelStore::new())).await;
    let in_lumens = world.deploy(1_000, world.sandbox.xlm()).await;
    assert!(matches!(
        scheme.add_channel(in_lumens).await,
        Err(ChannelError::WrongToken { .. })
    ));
    let elsewhere = world
        .sandbox
        .deploy_channel(ChannelParams {
            token: world.sandbox.usdc(),
            from: &world.funder,
            commitment_key: world.commitment_key.public_key(),
            to: world.funder.address(),
            amount: DEPOSIT,
            refund_waiting_period: 1_000,
        })
        .await
        .unwrap();
    assert!(matches!(
        scheme.add_channel(elsewhere).await,
        Err(ChannelError::WrongRecipient { .. })
    ));
    assert!(matches!(
        scheme.add_channel(world.funder.address()).await,
        Err(ChannelError::NotAContract(_))
    ));
    assert_eq!(
        scheme.channels(),
        [ChannelId::try_from(world.channel).unwrap()]
    );
    // A top-up after the channel was added is seen when a voucher needs it.
    let app = World::app(&scheme);
    let challenge = challenge(&app, &world.channel).await;
    let amount = DEPOSIT + PRICE_ATOMIC;
    world
        .sandbox
        .invoke(
            &world.funder,
            &ContractCall::new(
                world.channel,
                "top_up",
                vec![tower_paywall::stellar::xdr::ScVal::I128(
                    tower_paywall::stellar::xdr::Int128Parts {
                        hi: 0,
                        lo: PRICE_ATOMIC as u64,
                    },
                )],
            ),
        )
        .await
        .unwrap();
    // The challenge asks for the price; the voucher jumps to the whole new deposit.
    let signature = world.sign(&world.channel, amount);
    let answer = send(
        &app,
        Some(authorization(challenge, "voucher", amount, signature)),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
}

#[tokio::test]
async fn one_402_offers_x402_exact_mpp_charge_and_mpp_channel() {
    let world = World::new(1_000).await;
    let scheme = world.scheme(Arc::new(MemoryChannelStore::new())).await;
    let pay_to = world.recipient.address();
    let layer = support::exact_and_charge(&world.sandbox, pay_to, "example.com")
        .await
        .shared_scheme(scheme.clone())
        .price(Price::parse("0.01").unwrap())
        .build()
        .unwrap();
    let app = Router::new()
        .route("/paid", get(|| async { "content" }))
        .layer(layer);
    let answer = send(&app, None).await;
    assert_eq!(answer.status, StatusCode::PAYMENT_REQUIRED);
    assert!(
        answer.headers.contains_key("payment-required"),
        "x402 exact"
    );
    let offers: Vec<(String, String)> = Challenge::from_headers(&answer.headers)
        .unwrap()
        .into_iter()
        .map(|c| (c.method, c.intent))
        .collect();
    assert_eq!(
        offers,
        [
            ("stellar".to_owned(), "charge".to_owned()),
            ("stellar".to_owned(), "channel".to_owned())
        ]
    );
    let body: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(body["x402Version"], 2);
    assert_eq!(
        body["type"],
        "https://paymentauth.org/problems/payment-required"
    );
    // The client's Accept-Payment puts the channel first.
    let response = app
        .clone()
        .oneshot(
            Request::builder()
                .uri("/paid")
                .header("host", "example.com")
                .header("accept-payment", "stellar/channel, stellar/charge;q=0.5")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let first = Challenge::from_headers(response.headers())
        .unwrap()
        .remove(0);
    assert_eq!(first.intent, "channel");
    let request = first.request_json().unwrap();
    assert_eq!(request["amount"], PRICE_ATOMIC.to_string());
    assert_eq!(request["channel"], world.channel.to_string());
    assert_eq!(request["methodDetails"]["network"], "stellar:testnet");
    assert_eq!(request["methodDetails"]["cumulativeAmount"], "0");
    // And the channel pays through the combined layer.
    let (credential, _) = voucher(&world, first, "voucher");
    let answer = send(&app, Some(credential)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body, "content");
}

#[tokio::test]
async fn channels_a_funder_could_empty_before_a_close_or_not_ours_are_never_served() {
    let world = World::new(1_000).await;
    let scheme = world.scheme(Arc::new(MemoryChannelStore::new())).await;
    let served = scheme.channels();
    // Refundable 10 ledgers after close_start: shorter than the 120 the scheme needs.
    let hasty = world.deploy(10, world.sandbox.usdc()).await;
    assert!(matches!(
        scheme.add_channel(hasty).await,
        Err(ChannelError::RefundPeriodTooShort {
            period: 10,
            minimum: 120,
            ..
        })
    ));
    // The operator's calls act on served channels only, and serve nothing new.
    let hasty_id = ChannelId::try_from(hasty).unwrap();
    assert!(matches!(
        scheme.settle_channel(hasty_id).await,
        Err(ChannelError::NotServed(_))
    ));
    assert!(matches!(
        scheme.close_channel(hasty_id).await,
        Err(ChannelError::NotServed(_))
    ));
    assert_eq!(scheme.channels(), served);

    // An RPC of another network than the scheme's.
    let pubnet = Arc::new(
        StellarChannel::builder(
            Network::pubnet(),
            world.recipient.clone(),
            world.rpc(),
            support::keys(),
            Arc::new(MemoryChannelStore::new()),
        )
        .currency(world.sandbox.usdc())
        .build()
        .unwrap(),
    );
    assert!(matches!(
        pubnet.add_channel(world.channel).await,
        Err(ChannelError::WrongNetwork)
    ));
    // Settings that cannot work.
    let builder = || world.builder(Arc::new(MemoryChannelStore::new()));
    assert!(matches!(
        builder().watch_period(Duration::ZERO).build(),
        Err(tower_paywall::mpp::StellarChannelError::WatchPeriod)
    ));
    assert!(matches!(
        builder().max_offers(0).build(),
        Err(tower_paywall::mpp::StellarChannelError::MaxOffers)
    ));
}

#[tokio::test]
async fn a_402_offers_at_most_max_offers_channels_or_the_ones_the_client_names() {
    let world = World::new(1_000).await;
    let mut channels = vec![world.channel];
    for _ in 0..2 {
        channels.push(world.deploy(1_000, world.sandbox.usdc()).await);
    }
    let scheme = Arc::new(
        world
            .builder(Arc::new(MemoryChannelStore::new()))
            .max_offers(2)
            .build()
            .unwrap(),
    );
    for channel in &channels {
        scheme.add_channel(*channel).await.unwrap();
    }
    let app = World::app(&scheme);
    let offered = |headers: &http::HeaderMap| -> Vec<String> {
        Challenge::from_headers(headers)
            .unwrap()
            .iter()
            .map(|c| {
                c.request_json().unwrap()["channel"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    let answer = send(&app, None).await;
    assert_eq!(offered(&answer.headers).len(), 2);
    let last = channels.iter().map(|c| c.to_string()).max().unwrap();
    let response = app
        .clone()
        .oneshot(
            Request::builder()
                .uri("/paid")
                .header("host", "example.com")
                .header("payment-channel", format!("CBAD, {last}"))
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(offered(response.headers()), [last]);
}

/// A channel store that holds every write moving a channel to `Closing` until released: a
/// test double at the store boundary, to stop a client's close between its compare-and-set
/// and its transaction.
struct PausingStore {
    inner: MemoryChannelStore,
    paused: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

impl ChannelStore for PausingStore {
    fn load(
        &self,
        channel: ChannelId,
    ) -> tower_paywall::BoxFuture<'_, Result<Option<ChannelState>, StoreError>> {
        self.inner.load(channel)
    }

    fn compare_and_set(
        &self,
        channel: ChannelId,
        current: Option<ChannelState>,
        new: ChannelState,
    ) -> tower_paywall::BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let set = self.inner.compare_and_set(channel, current, new).await?;
            if set && new.phase == ChannelPhase::Closing {
                self.paused.notify_one();
                self.release.notified().await;
            }
            Ok(set)
        })
    }

    fn channels(
        &self,
        after: Option<ChannelId>,
        limit: usize,
    ) -> tower_paywall::BoxFuture<'_, Result<Vec<(ChannelId, ChannelState)>, StoreError>> {
        self.inner.channels(after, limit)
    }
}

#[tokio::test]
async fn a_clients_close_is_never_undone_by_an_operator_close_racing_it() {
    let world = World::new(1_000).await;
    let channel_id = ChannelId::try_from(world.channel).unwrap();
    let store = Arc::new(PausingStore {
        inner: MemoryChannelStore::new(),
        paused: tokio::sync::Notify::new(),
        release: tokio::sync::Notify::new(),
    });
    let scheme = world.scheme(store.clone()).await;
    let app = World::app(&scheme);
    let (answer, first) = pay(&world, &app, "voucher").await;
    assert_eq!(answer.status, StatusCode::OK);
    let recipient_before = world.usdc(&world.recipient.address()).await;

    let client = tokio::spawn({
        let app = app.clone();
        let (credential, amount) = voucher(&world, challenge(&app, &world.channel).await, "close");
        async move { (send(&app, Some(credential)).await, amount) }
    });
    // The client's voucher is stored as `Closing`; its transaction is not sent yet.
    store.paused.notified().await;
    assert!(matches!(
        scheme.close_channel(channel_id).await,
        Err(ChannelError::Busy(_))
    ));
    assert!(matches!(
        scheme.settle_channel(channel_id).await,
        Err(ChannelError::Busy(_))
    ));
    store.release.notify_one();
    let (answer, closed_at) = client.await.unwrap();
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(closed_at, first + PRICE_ATOMIC);
    let state = scheme.state(channel_id).await.unwrap();
    assert_eq!(state.cumulative, closed_at);
    assert!(matches!(
        state.phase,
        ChannelPhase::Closed {
            transaction: Some(_)
        }
    ));
    assert_eq!(
        world.usdc(&world.recipient.address()).await,
        recipient_before + closed_at
    );
}

#[tokio::test]
async fn a_challenge_for_another_channel_or_price_is_refused() {
    let world = World::new(1_000).await;
    let scheme = world.scheme(Arc::new(MemoryChannelStore::new())).await;
    let app = World::app(&scheme);
    // Another server with the same secret serves another channel: its challenges verify here,
    // but name a channel this one does not serve.
    let elsewhere = World {
        channel: world.deploy(1_000, world.sandbox.usdc()).await,
        sandbox: world.sandbox.clone(),
        funder: world.funder.clone(),
        recipient: world.recipient.clone(),
        commitment_key: world.commitment_key.clone(),
    };
    let other_app = World::app(&elsewhere.scheme(Arc::new(MemoryChannelStore::new())).await);
    let foreign = challenge(&other_app, &elsewhere.channel).await;
    let (credential, _) = voucher(&elsewhere, foreign, "voucher");
    let answer = send(&app, Some(credential)).await;
    assert_eq!(answer.status, StatusCode::GONE, "{}", answer.body);
    assert_eq!(answer.problem(), "session/channel-not-found");

    // A challenge of a dearer route of the same scheme does not pay this one.
    let dearer = Router::new()
        .route("/paid", get(|| async { "dear content" }))
        .layer(
            PaymentLayer::builder()
                .shared_scheme(scheme.clone())
                .price(Price::parse("0.02").unwrap())
                .build()
                .unwrap(),
        );
    let (credential, _) = voucher(&world, challenge(&dearer, &world.channel).await, "voucher");
    let answer = send(&app, Some(credential)).await;
    assert_eq!(answer.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(answer.problem(), "invalid-challenge");
    let state = scheme
        .state(ChannelId::try_from(world.channel).unwrap())
        .await
        .unwrap();
    assert_eq!(state.cumulative, 0, "nothing was credited");
}

#[tokio::test]
async fn a_close_whose_transaction_fails_is_refused_and_the_voucher_before_it_stays() {
    // A refund waiting period of 5 ledgers, and a watcher that reads the channel once: the
    // funder empties the channel while the scheme still believes it open.
    let world = World::new(5).await;
    let channel_id = ChannelId::try_from(world.channel).unwrap();
    let scheme = Arc::new(
        world
            .builder(Arc::new(MemoryChannelStore::new()))
            .min_refund_waiting_period(5)
            .watch_period(Duration::from_secs(3600))
            .build()
            .unwrap(),
    );
    scheme.add_channel(world.channel).await.unwrap();
    let app = World::app(&scheme);
    let (answer, paid) = pay(&world, &app, "voucher").await;
    assert_eq!(answer.status, StatusCode::OK);
    let closing = world.as_funder("close_start").await.unwrap();
    let refundable_at = closing.ledger + 5;
    while world.sandbox.latest_ledger().await.unwrap().sequence < refundable_at {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    world.as_funder("refund").await.unwrap();
    assert_eq!(world.usdc(&world.channel).await, 0);
    let recipient_before = world.usdc(&world.recipient.address()).await;

    let (answer, _) = pay(&world, &app, "close").await;
    assert_eq!(
        answer.status,
        StatusCode::PAYMENT_REQUIRED,
        "{}",
        answer.body
    );
    assert_eq!(answer.problem(), "settlement-failed");
    assert!(!answer.headers.contains_key("payment-receipt"));
    let state = scheme.state(channel_id).await.unwrap();
    assert_eq!(state.cumulative, paid, "the close's voucher is not kept");
    assert_eq!(state.phase, ChannelPhase::Open);
    assert_eq!(
        world.usdc(&world.recipient.address()).await,
        recipient_before
    );
}

/// The world's channel served through an RPC that loses `sendTransaction` exchanges on cue
/// (`support::LossyRpc`), with no watcher (an hour away) so that only reconciliation ends a
/// payment, behind a layer that may reconcile every 50 ms.
async fn lossy_world(
    world: &World,
    configure: impl FnOnce(StellarChannelBuilder) -> StellarChannelBuilder,
) -> (Arc<support::LossyRpc>, Arc<StellarChannel>, Router) {
    let lossy = support::LossyRpc::new(world.rpc());
    let builder = StellarChannel::builder(
        Network::testnet(),
        world.recipient.clone(),
        lossy.clone(),
        support::keys(),
        Arc::new(MemoryChannelStore::new()),
    )
    .currency(world.sandbox.usdc())
    .realm("example.com")
    .watch_period(Duration::from_secs(3600));
    let scheme = Arc::new(configure(builder).build().unwrap());
    scheme.add_channel(world.channel).await.unwrap();
    let layer = PaymentLayer::builder()
        .shared_scheme(scheme.clone())
        .price(Price::parse("0.01").unwrap())
        .reconcile_interval(Duration::from_millis(50))
        .build()
        .unwrap();
    let app = Router::new()
        .route("/paid", get(|| async { "closed content" }))
        .layer(layer);
    (lossy, scheme, app)
}

/// Retries `credential` the way a client does after a 503, for up to 5 s.
async fn retry_until_served(app: &Router, credential: &str) -> Answer {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let answer = send(app, Some(credential.to_owned())).await;
        if answer.status != StatusCode::SERVICE_UNAVAILABLE
            || tokio::time::Instant::now() > deadline
        {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_close_whose_answer_was_lost_is_ended_from_the_contracts_state() {
    let world = World::new(1_000).await;
    let channel_id = ChannelId::try_from(world.channel).unwrap();
    let (lossy, scheme, app) = lossy_world(&world, |builder| builder).await;
    let recipient_before = world.usdc(&world.recipient.address()).await;
    for _ in 0..3 {
        assert_eq!(pay(&world, &app, "voucher").await.0.status, StatusCode::OK);
    }

    // The close reaches the ledger; its answer does not.
    lossy.set(support::SendFate::LoseAnswer);
    let (close, amount) = voucher(&world, challenge(&app, &world.channel).await, "close");
    let answer = send(&app, Some(close.clone())).await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.body
    );
    lossy.set(support::SendFate::Deliver);
    // Each retry asks the contract; once the close has applied (a ledger or two), it is closed
    // with the close's amount withdrawn, and the retry is served, once.
    let answer = retry_until_served(&app, &close).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let receipt = answer.receipt();
    assert_eq!(receipt.status, "success");
    assert_eq!(
        receipt.reference.len(),
        36,
        "the challenge's reference (the hash was lost): {}",
        receipt.reference
    );
    let info = read_channel(&*world.rpc(), &world.channel, None)
        .await
        .unwrap();
    assert!(info.is_closed());
    assert_eq!(info.withdrawn, amount);
    assert_eq!(
        world.usdc(&world.recipient.address()).await,
        recipient_before + amount,
        "one withdrawal"
    );
    let again = send(&app, Some(close)).await;
    assert_eq!(again.body, answer.body, "the recorded answer");
    assert_eq!(
        scheme.state(channel_id).await.unwrap().phase,
        ChannelPhase::Closing,
        "the watcher marks it closed on its next round"
    );
}

#[tokio::test]
async fn a_close_that_never_left_is_not_taken_for_settled_and_the_watcher_finishes_it() {
    let world = World::new(1_000).await;
    let channel_id = ChannelId::try_from(world.channel).unwrap();
    let (lossy, scheme, app) = lossy_world(&world, |builder| builder).await;
    let recipient_before = world.usdc(&world.recipient.address()).await;
    assert_eq!(pay(&world, &app, "voucher").await.0.status, StatusCode::OK);

    // The close is lost on its way: the ledger never sees it.
    lossy.set(support::SendFate::LoseRequest);
    let (close, amount) = voucher(&world, challenge(&app, &world.channel).await, "close");
    let answer = send(&app, Some(close.clone())).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    lossy.set(support::SendFate::Deliver);
    // The contract is still open: the outcome is not known yet (the stored close may still be
    // submitted), so the retry waits.
    let answer = send(&app, Some(close.clone())).await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.body
    );
    assert_eq!(
        world.usdc(&world.recipient.address()).await,
        recipient_before
    );
    assert_eq!(
        scheme.state(channel_id).await.unwrap().phase,
        ChannelPhase::Closing
    );
    // The watcher submits the stored close again; the next reconciliation finds it.
    scheme.watch_once().await;
    let answer = retry_until_served(&app, &close).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(
        answer.receipt().reference.len(),
        64,
        "the watcher's close hash"
    );
    assert_eq!(
        world.usdc(&world.recipient.address()).await,
        recipient_before + amount
    );
}

#[tokio::test]
async fn a_lost_close_the_funder_refunded_before_is_not_settled() {
    let world = World::new(5).await;
    let (lossy, _, app) = lossy_world(&world, |builder| builder.min_refund_waiting_period(5)).await;
    assert_eq!(pay(&world, &app, "voucher").await.0.status, StatusCode::OK);
    lossy.set(support::SendFate::LoseRequest);
    let (close, _) = voucher(&world, challenge(&app, &world.channel).await, "close");
    assert_eq!(
        send(&app, Some(close.clone())).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    lossy.set(support::SendFate::Deliver);
    let recipient_before = world.usdc(&world.recipient.address()).await;
    // Nobody submits our close again (no watcher), and the funder takes the deposit back.
    let closing = world.as_funder("close_start").await.unwrap();
    while world.sandbox.latest_ledger().await.unwrap().sequence < closing.ledger + 5 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    world.as_funder("refund").await.unwrap();
    // Closed with nothing withdrawn for the close: it cannot settle any more, and the channel
    // is finalized (410, as for any voucher on it; nothing else is offered).
    let answer = send(&app, Some(close.clone())).await;
    assert_eq!(answer.status, StatusCode::GONE, "{}", answer.body);
    assert_eq!(answer.body, r#"{"error":"session/channel-finalized"}"#);
    assert!(!answer.headers.contains_key("payment-receipt"));
    assert_eq!(
        world.usdc(&world.recipient.address()).await,
        recipient_before
    );
    // The payment was given back: the same credential is refused as the channel is, not
    // answered 503 again.
    let again = send(&app, Some(close)).await;
    assert_eq!(again.status, StatusCode::GONE, "{}", again.body);
}

/// A Soroban RPC that counts the transactions sent through it and passes everything on: a
/// probe at the RPC boundary, to see how many closes the watchers submit.
struct CountingRpc {
    inner: Sandbox,
    sent: std::sync::atomic::AtomicUsize,
}

impl CountingRpc {
    fn sent(&self) -> usize {
        self.sent.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl SorobanRpc for CountingRpc {
    fn health(&self) -> tower_paywall::BoxFuture<'_, Result<rpc::Health, rpc::RpcError>> {
        self.inner.health()
    }
    fn network(&self) -> tower_paywall::BoxFuture<'_, Result<rpc::NetworkInfo, rpc::RpcError>> {
        SorobanRpc::network(&self.inner)
    }
    fn latest_ledger(
        &self,
    ) -> tower_paywall::BoxFuture<'_, Result<rpc::LatestLedger, rpc::RpcError>> {
        self.inner.latest_ledger()
    }
    fn simulate_transaction<'a>(
        &'a self,
        transaction: &'a tower_paywall::stellar::xdr::TransactionEnvelope,
    ) -> tower_paywall::BoxFuture<'a, Result<rpc::Simulation, rpc::RpcError>> {
        self.inner.simulate_transaction(transaction)
    }
    fn send_transaction<'a>(
        &'a self,
        transaction: &'a tower_paywall::stellar::xdr::TransactionEnvelope,
    ) -> tower_paywall::BoxFuture<'a, Result<rpc::SendResult, rpc::RpcError>> {
        self.sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.send_transaction(transaction)
    }
    fn transaction<'a>(
        &'a self,
        hash: &'a TransactionHash,
    ) -> tower_paywall::BoxFuture<'a, Result<rpc::TransactionInfo, rpc::RpcError>> {
        self.inner.transaction(hash)
    }
    fn ledger_entries<'a>(
        &'a self,
        keys: &'a [tower_paywall::stellar::xdr::LedgerKey],
    ) -> tower_paywall::BoxFuture<'a, Result<rpc::LedgerEntries, rpc::RpcError>> {
        self.inner.ledger_entries(keys)
    }
    fn events<'a>(
        &'a self,
        request: &'a rpc::EventsRequest,
    ) -> tower_paywall::BoxFuture<'a, Result<rpc::Events, rpc::RpcError>> {
        self.inner.events(request)
    }
}

/// Two nodes serve one channel over one store and one set of leases: vouchers paid on either
/// are credited once; while a dead node's close lease lives neither closes; once it runs out,
/// exactly one of the two watchers answers the funder's `close_start`, with one transaction.
async fn two_watchers_close_once(store: Arc<dyn ChannelStore>, leases: Arc<dyn Leases>) {
    let world = World::new(200).await;
    let channel_id = ChannelId::try_from(world.channel).unwrap();
    let rpc = Arc::new(CountingRpc {
        inner: world.sandbox.clone(),
        sent: Default::default(),
    });
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let scheme = StellarChannel::builder(
            Network::testnet(),
            world.recipient.clone(),
            rpc.clone(),
            support::keys(),
            store.clone(),
        )
        .currency(world.sandbox.usdc())
        .realm("example.com")
        .watch_period(Duration::from_millis(100))
        .leases(leases.clone())
        .build()
        .unwrap();
        let scheme = Arc::new(scheme);
        scheme.add_channel(world.channel).await.unwrap();
        nodes.push(scheme);
    }
    let apps: Vec<Router> = nodes.iter().map(World::app).collect();
    let recipient_before = world.usdc(&world.recipient.address()).await;
    let mut best = 0;
    for round in 0..6 {
        let (answer, amount) = pay(&world, &apps[round % 2], "voucher").await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        best = amount;
    }
    assert_eq!(best, 6 * PRICE_ATOMIC, "each voucher credited once");
    assert_eq!(
        store.load(channel_id).await.unwrap().unwrap().cumulative,
        best
    );

    // A node that took the close lease died holding it (it runs out in 2 s).
    let dead = LeaseHolder::unique();
    assert!(
        leases
            .acquire(&close_lease(channel_id), dead, Duration::from_secs(2))
            .await
            .unwrap()
    );
    let sent_before = rpc.sent();
    world.as_funder("close_start").await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        store.load(channel_id).await.unwrap().unwrap().phase,
        ChannelPhase::Open,
        "nobody closes while the dead node's lease lives"
    );
    assert_eq!(rpc.sent(), sent_before);
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let state = store.load(channel_id).await.unwrap().unwrap();
            if let ChannelPhase::Closed { transaction } = state.phase {
                return transaction;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a watcher takes the close over");
    assert!(closed.is_some(), "closed by our transaction");
    // Both watchers go on for a while: neither submits another close.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(rpc.sent() - sent_before, 1, "one close transaction");
    assert_eq!(
        world.usdc(&world.recipient.address()).await,
        recipient_before + best
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_watchers_over_one_store_close_a_channel_once_and_take_over_a_dead_nodes_lease() {
    two_watchers_close_once(
        Arc::new(MemoryChannelStore::new()),
        Arc::new(MemoryLeases::new()),
    )
    .await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_watchers_over_redis_close_a_channel_once() {
    use tower_paywall::store::redis::{RedisStore, test_deployments, test_namespace};
    for (label, url) in test_deployments() {
        eprintln!("two watchers over the Redis {label}");
        let redis = RedisStore::connect(&url, &test_namespace("watchers"))
            .await
            .unwrap();
        two_watchers_close_once(Arc::new(redis.channel_store()), Arc::new(redis.leases())).await;
    }
}

/// Leases that cannot be reached: a test double at the store boundary.
struct DownLeases;

impl Leases for DownLeases {
    fn acquire<'a>(
        &'a self,
        _: &'a [u8],
        _: LeaseHolder,
        _: Duration,
    ) -> tower_paywall::BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async { Err(StoreError::Unavailable("leases down".into())) })
    }
    fn release<'a>(
        &'a self,
        _: &'a [u8],
        _: LeaseHolder,
    ) -> tower_paywall::BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Without its close lease nobody closes: the operator's close fails with the store's error,
/// the client's close is answered 503 (retry), and the channel keeps its voucher, open, with
/// nothing withdrawn.
#[tokio::test]
async fn without_its_leases_no_close_is_submitted() {
    let world = World::new(1_000).await;
    let channel_id = ChannelId::try_from(world.channel).unwrap();
    let store = Arc::new(MemoryChannelStore::new());
    let scheme = world
        .builder(store.clone())
        .leases(Arc::new(DownLeases))
        .build()
        .unwrap();
    let scheme = Arc::new(scheme);
    scheme.add_channel(world.channel).await.unwrap();
    let app = World::app(&scheme);
    let (answer, amount) = pay(&world, &app, "voucher").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);

    let error = scheme.close_channel(channel_id).await.unwrap_err();
    assert!(matches!(error, ChannelError::Store(_)), "{error}");
    let (answer, _) = pay(&world, &app, "close").await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.body
    );
    assert!(answer.body.contains("rpc_busy"), "{}", answer.body);

    let state = store.load(channel_id).await.unwrap().unwrap();
    assert_eq!(
        (state.cumulative, state.phase),
        (amount, ChannelPhase::Open)
    );
    let info = read_channel(&*world.rpc(), &world.channel, None)
        .await
        .unwrap();
    assert_eq!(info.withdrawn, 0);
}

/// A world, its channel's id, an in-memory channel store and a scheme serving the channel
/// from it.
async fn metered_world() -> (
    World,
    ChannelId,
    Arc<MemoryChannelStore>,
    Arc<StellarChannel>,
) {
    let world = World::new(1_000).await;
    let channel_id = ChannelId::try_from(world.channel).unwrap();
    let store = Arc::new(MemoryChannelStore::new());
    let scheme = world.scheme(store.clone()).await;
    (world, channel_id, store, scheme)
}

/// The price of one event of a metered stream (0.001): 10 000 of them fit the deposit.
const EVENT_PRICE: i128 = 10_000;

/// A route selling `count` SSE events (`data: <n>`) at `EVENT_PRICE` each.
fn metered_app(scheme: &Arc<StellarChannel>, count: usize) -> Router {
    metered_app_waiting(scheme, count, tower_paywall::layer::DEFAULT_VOUCHER_WAIT)
}

/// A layer selling events at `EVENT_PRICE` each, waiting `wait` for a voucher.
fn metered_layer(scheme: &Arc<StellarChannel>, wait: Duration) -> PaymentLayer {
    PaymentLayer::builder()
        .voucher_wait(wait)
        .shared_scheme(scheme.clone())
        .price(
            Price::parse("0.001")
                .unwrap()
                .per(tower_paywall::Unit::Event),
        )
        .build()
        .unwrap()
}

/// [`metered_app`], waiting `wait` for a voucher.
fn metered_app_waiting(scheme: &Arc<StellarChannel>, count: usize, wait: Duration) -> Router {
    let layer = metered_layer(scheme, wait);
    let events: String = (0..count).map(|n| format!("data: {n}\n\n")).collect();
    Router::new()
        .route(
            "/paid",
            get(move || {
                let events = events.clone();
                async move { ([("content-type", "text/event-stream")], events) }
            }),
        )
        .layer(layer)
}

/// Sends `method` to the metered resource with the credential of a voucher for `amount`
/// answering `challenge`: the answer, and the credential.
async fn send_voucher(
    world: &World,
    app: &Router,
    challenge: &Challenge,
    method: http::Method,
    amount: i128,
) -> (http::Response<axum::body::Body>, String) {
    let signature = world.sign(&world.channel, amount);
    let credential = authorization(challenge.clone(), "voucher", amount, signature);
    let request = Request::builder()
        .method(method)
        .uri("/paid")
        .header("host", "example.com")
        .header("authorization", credential.clone())
        .body(axum::body::Body::empty())
        .unwrap();
    (app.clone().oneshot(request).await.unwrap(), credential)
}

/// Reads a metered SSE answer as a client would, paying `ahead` events per voucher (a bodyless
/// `POST` of it to the resource) when asked; stops after `stop_after` events if set. The
/// events' data, and the final receipt's data when it came.
async fn read_metered(
    world: &World,
    app: &Router,
    challenge: &Challenge,
    response: http::Response<axum::body::Body>,
    ahead: i128,
    stop_after: Option<usize>,
) -> (
    Vec<String>,
    Option<tower_paywall::mpp::stream::StreamReceipt>,
) {
    use tower_paywall::mpp::stream::{Event, NeedVoucher, Splitter, messages};
    let mut body = response.into_body();
    let mut splitter = Splitter::default();
    let mut events = Vec::new();
    while let Some(frame) = body.frame().await {
        splitter.push(frame.unwrap().data_ref().unwrap());
        while let Some(block) = splitter.next_block().unwrap() {
            let Some(event) = Event::read(&block.raw) else {
                continue;
            };
            match event.kind() {
                messages::NEED_VOUCHER => {
                    let need: NeedVoucher = messages::read_event(&event.data).unwrap();
                    let amount = need.accepted_cumulative + ahead * EVENT_PRICE;
                    assert!(amount >= need.required_cumulative);
                    let (paid, _) =
                        send_voucher(world, app, challenge, http::Method::POST, amount).await;
                    let status = paid.status();
                    let receipt = paid.headers().contains_key("payment-receipt");
                    let text = paid.into_body().collect().await.unwrap().to_bytes();
                    assert_eq!(
                        status,
                        StatusCode::NO_CONTENT,
                        "{need:?} {amount}: {}",
                        String::from_utf8_lossy(&text)
                    );
                    assert!(receipt);
                }
                messages::RECEIPT => {
                    return (events, Some(messages::read_event(&event.data).unwrap()));
                }
                _ => {
                    events.push(event.data);
                    if stop_after == Some(events.len()) {
                        return (events, None);
                    }
                }
            }
        }
    }
    (events, None)
}

#[tokio::test]
async fn a_metered_event_stream_is_paid_by_vouchers_ahead_and_closes_for_exactly_what_was_sent() {
    let (world, channel_id, store, scheme) = metered_world().await;
    const EVENTS: usize = 10_000;
    let app = metered_app(&scheme, EVENTS);
    let recipient_before = world.usdc(&world.recipient.address()).await;

    // The offer is per event.
    let challenge = challenge(&app, &world.channel).await;
    let request = challenge.request_json().unwrap();
    assert_eq!(request["unitType"], "event");
    assert_eq!(request["amount"], EVENT_PRICE.to_string());

    // Open with a voucher 100 events ahead; then one voucher per 100 events, in band.
    let (response, credential) = send_voucher(
        &world,
        &app,
        &challenge,
        http::Method::GET,
        100 * EVENT_PRICE,
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().contains_key("payment-receipt"));
    let (events, receipt) = read_metered(&world, &app, &challenge, response, 100, None).await;
    assert_eq!(events.len(), EVENTS);
    assert!(
        events
            .iter()
            .enumerate()
            .all(|(n, data)| *data == n.to_string()),
        "in order, once"
    );
    let receipt = receipt.expect("the final receipt");
    let owed = EVENTS as i128 * EVENT_PRICE;
    assert_eq!((receipt.spent, receipt.units), (owed, Some(EVENTS as u64)));
    let state = store.load(channel_id).await.unwrap().unwrap();
    assert_eq!((state.cumulative, state.unspent), (owed, 0));

    // The opening credential is used up.
    let again = send(&app, Some(credential)).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);

    // A voucher replayed, or lower, is refused in band: nothing is credited.
    for amount in [owed, owed - EVENT_PRICE] {
        let (refused, _) = send_voucher(&world, &app, &challenge, http::Method::POST, amount).await;
        assert_eq!(refused.status(), StatusCode::PAYMENT_REQUIRED, "{amount}");
    }
    // A `close` sent to pay ahead is no voucher: refused, the channel left open.
    let amount = owed + EVENT_PRICE;
    let close = authorization(
        challenge.clone(),
        "close",
        amount,
        world.sign(&world.channel, amount),
    );
    let refused = app
        .clone()
        .oneshot(
            Request::post("/paid")
                .header("host", "example.com")
                .header("authorization", close)
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::PAYMENT_REQUIRED);
    let body = refused.into_body().collect().await.unwrap().to_bytes();
    let problem: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        problem["type"],
        "https://paymentauth.org/problems/invalid-payload"
    );
    assert_eq!(store.load(channel_id).await.unwrap().unwrap(), state);

    // Closing pays the recipient exactly what was sent.
    scheme.close_channel(channel_id).await.unwrap();
    assert_eq!(
        world.usdc(&world.recipient.address()).await - recipient_before,
        owed
    );
}

#[tokio::test]
async fn a_client_that_hangs_up_mid_stream_has_spent_what_it_received() {
    let (world, channel_id, store, scheme) = metered_world().await;
    let app = metered_app(&scheme, 1_000);
    let challenge = challenge(&app, &world.channel).await;
    let (response, _) = send_voucher(
        &world,
        &app,
        &challenge,
        http::Method::GET,
        100 * EVENT_PRICE,
    )
    .await;
    // 250 events read with 300 paid ahead, then the client goes.
    let (events, receipt) = read_metered(&world, &app, &challenge, response, 100, Some(250)).await;
    assert_eq!((events.len(), receipt), (250, None));
    let mut state = store.load(channel_id).await.unwrap().unwrap();
    for _ in 0..100 {
        if state.unspent > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        state = store.load(channel_id).await.unwrap().unwrap();
    }
    assert_eq!(state.cumulative, 300 * EVENT_PRICE);
    assert_eq!(
        state.spent(),
        250 * EVENT_PRICE,
        "what it received, not more"
    );
}

#[tokio::test]
async fn a_client_that_stops_paying_sees_the_request_then_the_end_and_pays_for_what_it_got() {
    use tower_paywall::mpp::stream::{Event, Splitter, StreamReceipt, messages};
    let (world, channel_id, store, scheme) = metered_world().await;
    let app = metered_app_waiting(&scheme, 1_000, Duration::from_millis(300));
    let challenge = challenge(&app, &world.channel).await;
    let (response, _) = send_voucher(
        &world,
        &app,
        &challenge,
        http::Method::GET,
        100 * EVENT_PRICE,
    )
    .await;
    let mut body = response.into_body();
    let mut splitter = Splitter::default();
    let mut kinds = Vec::new();
    let mut receipt = None;
    while let Some(frame) = body.frame().await {
        splitter.push(frame.unwrap().data_ref().unwrap());
        while let Some(block) = splitter.next_block().unwrap() {
            if let Some(event) = Event::read(&block.raw) {
                if event.kind() == messages::RECEIPT {
                    receipt = Some(messages::read_event::<StreamReceipt>(&event.data).unwrap());
                }
                kinds.push(event.kind().to_owned());
            }
        }
    }
    // A hundred events, the request for a voucher, nothing more, then the clean end.
    assert_eq!(kinds.len(), 102);
    assert!(kinds[..100].iter().all(|kind| kind == "message"));
    assert_eq!(kinds[100..], [messages::NEED_VOUCHER, messages::RECEIPT]);
    let receipt = receipt.unwrap();
    assert_eq!(
        (receipt.spent, receipt.units),
        (100 * EVENT_PRICE, Some(100))
    );
    assert_eq!(
        store.load(channel_id).await.unwrap().unwrap().spent(),
        100 * EVENT_PRICE
    );
}

#[tokio::test]
async fn a_metered_opening_is_used_once_even_when_its_handler_fails() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (world, channel_id, store, scheme) = metered_world().await;
    let layer = metered_layer(&scheme, tower_paywall::layer::DEFAULT_VOUCHER_WAIT);
    let failed = Arc::new(AtomicBool::new(false));
    let app = Router::new()
        .route(
            "/paid",
            get(move || {
                let first = !failed.swap(true, Ordering::SeqCst);
                async move {
                    if first {
                        return (StatusCode::INTERNAL_SERVER_ERROR, "busy").into_response();
                    }
                    let body: String = (0..1_000).map(|n| format!("data: {n}\n\n")).collect();
                    ([("content-type", "text/event-stream")], body).into_response()
                }
            }),
        )
        .layer(layer);
    let challenge = challenge(&app, &world.channel).await;
    let (failed, credential) = send_voucher(
        &world,
        &app,
        &challenge,
        http::Method::GET,
        10 * EVENT_PRICE,
    )
    .await;
    assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
    // The same credential again: used, no stream; the credit stays the channel's.
    let again = send(&app, Some(credential)).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    let state = store.load(channel_id).await.unwrap().unwrap();
    assert_eq!(
        (state.cumulative, state.unspent),
        (10 * EVENT_PRICE, 10 * EVENT_PRICE)
    );
}

#[tokio::test]
async fn vouchers_pay_a_stream_ahead_after_its_challenge_expired() {
    let world = World::new(1_000).await;
    let channel_id = ChannelId::try_from(world.channel).unwrap();
    let store = Arc::new(MemoryChannelStore::new());
    let scheme = world
        .builder(store.clone())
        .challenge_ttl(Duration::from_millis(500))
        .build()
        .unwrap();
    let scheme = Arc::new(scheme);
    scheme.add_channel(world.channel).await.unwrap();
    let app = metered_app(&scheme, 1_000);
    let challenge = challenge(&app, &world.channel).await;
    let (opened, _) = send_voucher(
        &world,
        &app,
        &challenge,
        http::Method::GET,
        10 * EVENT_PRICE,
    )
    .await;
    assert_eq!(opened.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (paid, _) = send_voucher(
        &world,
        &app,
        &challenge,
        http::Method::POST,
        20 * EVENT_PRICE,
    )
    .await;
    assert_eq!(paid.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        store.load(channel_id).await.unwrap().unwrap().cumulative,
        20 * EVENT_PRICE
    );
    drop(opened);
}

/// Metered WebSockets (feature `websocket`): the same stream as the SSE tests above, its
/// payment carried on the socket. A raw client drives it by hand, frame by frame.
#[cfg(feature = "websocket")]
mod websocket {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tower_paywall::mpp::stream::{Frame, NeedVoucher, StreamReceipt};

    use super::*;

    type Socket = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;

    /// The app served on loopback: its socket URL.
    async fn serve(app: Router) -> String {
        let url = support::serve(app).await;
        format!("{}/paid", url.replacen("http", "ws", 1))
    }

    /// Opens a socket at `url` and sends the opening voucher for `amount`.
    async fn open(world: &World, url: &str, challenge: &Challenge, amount: i128) -> Socket {
        let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        send_voucher(world, &mut socket, challenge, amount).await;
        socket
    }

    async fn send_voucher(world: &World, socket: &mut Socket, challenge: &Challenge, amount: i128) {
        let signature = world.sign(&world.channel, amount);
        let authorization = authorization(challenge.clone(), "voucher", amount, signature);
        let frame = Frame::Authorization { authorization };
        socket.send(Message::text(frame.to_text())).await.unwrap();
    }

    /// What the socket said: its payment frames, and its close.
    #[derive(Debug, PartialEq)]
    #[allow(clippy::large_enum_variant)]
    enum Said {
        Frame(Frame),
        Closed(Option<CloseCode>),
    }

    async fn next(socket: &mut Socket) -> Said {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(20), socket.next())
                .await
                .expect("the socket said something");
            match message {
                Some(Ok(Message::Text(text))) => {
                    return Said::Frame(Frame::read(&text).unwrap().expect("a payment frame"));
                }
                Some(Ok(Message::Close(close))) => {
                    return Said::Closed(close.map(|close| close.code));
                }
                None | Some(Err(_)) => return Said::Closed(None),
                Some(Ok(_)) => {}
            }
        }
    }

    /// Reads the stream, paying `ahead` events per voucher when asked, until its end (or
    /// `stop_after` messages): the messages, the receipts, the final one, and the close.
    async fn read(
        world: &World,
        socket: &mut Socket,
        challenge: &Challenge,
        ahead: i128,
        stop_after: Option<usize>,
    ) -> (
        Vec<String>,
        Vec<StreamReceipt>,
        Option<StreamReceipt>,
        Option<CloseCode>,
    ) {
        let (mut messages, mut receipts) = (Vec::new(), Vec::new());
        let mut last = None;
        loop {
            match next(socket).await {
                Said::Frame(Frame::Message { data }) => {
                    messages.push(data);
                    if stop_after == Some(messages.len()) {
                        return (messages, receipts, None, None);
                    }
                }
                Said::Frame(Frame::NeedVoucher { data }) => {
                    let amount = data.accepted_cumulative + ahead * EVENT_PRICE;
                    assert!(amount >= data.required_cumulative);
                    send_voucher(world, socket, challenge, amount).await;
                }
                Said::Frame(Frame::Receipt { data }) => receipts.push(data),
                Said::Frame(Frame::CloseReady { data }) => last = Some(data),
                Said::Closed(code) => return (messages, receipts, last, code),
                Said::Frame(other) => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn ten_thousand_messages_on_a_socket_are_paid_in_band_and_close_for_exactly_what_was_sent()
     {
        let (world, channel_id, store, scheme) = metered_world().await;
        const EVENTS: usize = 10_000;
        let app = metered_app(&scheme, EVENTS);
        let url = serve(app.clone()).await;
        let recipient_before = world.usdc(&world.recipient.address()).await;
        let challenge = challenge(&app, &world.channel).await;

        let mut socket = open(&world, &url, &challenge, 100 * EVENT_PRICE).await;
        let (messages, receipts, last, close) =
            read(&world, &mut socket, &challenge, 100, None).await;
        assert_eq!(messages.len(), EVENTS);
        assert!(
            messages
                .iter()
                .enumerate()
                .all(|(n, data)| *data == n.to_string()),
            "in order, once"
        );
        // The opening and each of the 99 vouchers since were acknowledged, each with what was
        // sent so far as spent (the credit the stream holds is not).
        assert_eq!(receipts.len(), 100);
        for receipt in &receipts {
            let units = receipt.units.unwrap();
            assert_eq!(
                receipt.spent,
                i128::from(units as u32) * EVENT_PRICE,
                "{receipt:?}"
            );
            assert!(receipt.accepted_cumulative > receipt.spent);
        }
        let owed = EVENTS as i128 * EVENT_PRICE;
        let last = last.expect("payment-close-ready");
        assert_eq!((last.spent, last.units), (owed, Some(EVENTS as u64)));
        assert_eq!(close, Some(CloseCode::Normal));
        let state = store.load(channel_id).await.unwrap().unwrap();
        assert_eq!((state.cumulative, state.unspent), (owed, 0));

        // Closing pays the recipient exactly what was sent.
        scheme.close_channel(channel_id).await.unwrap();
        assert_eq!(
            world.usdc(&world.recipient.address()).await - recipient_before,
            owed
        );
    }

    #[tokio::test]
    async fn a_socket_client_that_hangs_up_or_stops_paying_pays_for_what_it_received() {
        let (world, channel_id, store, scheme) = metered_world().await;
        let app = metered_app_waiting(&scheme, 1_000, Duration::from_millis(300));
        let url = serve(app.clone()).await;
        let challenge = challenge(&app, &world.channel).await;

        // A slow stream (an event a millisecond) paid 1 000 ahead: the client reads 250, then
        // goes. It is charged for what was sent: what it read, and the few on their way.
        let layer = metered_layer(&scheme, tower_paywall::layer::DEFAULT_VOUCHER_WAIT);
        let slow = Router::new()
            .route(
                "/paid",
                get(|| async {
                    let events = futures_util::stream::iter(0..1_000).then(|n| async move {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        Ok::<_, std::io::Error>(format!("data: {n}\n\n"))
                    });
                    (
                        [("content-type", "text/event-stream")],
                        axum::body::Body::from_stream(events),
                    )
                }),
            )
            .layer(layer);
        let slow_url = serve(slow).await;
        let mut socket = open(&world, &slow_url, &challenge, 1_000 * EVENT_PRICE).await;
        let (messages, ..) = read(&world, &mut socket, &challenge, 100, Some(250)).await;
        assert_eq!(messages.len(), 250);
        drop(socket);
        let mut state = store.load(channel_id).await.unwrap().unwrap();
        for _ in 0..200 {
            if state.unspent > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            state = store.load(channel_id).await.unwrap().unwrap();
        }
        assert_eq!(state.cumulative, 1_000 * EVENT_PRICE);
        let sent = state.spent() / EVENT_PRICE;
        assert!(
            (250..500).contains(&sent),
            "{sent} sent: what it received and those on their way"
        );
        assert_eq!(
            state.spent() + state.unspent,
            state.cumulative,
            "the rest given back"
        );

        // Another stream pays its opening only, a hundred ahead: it gets those and what the
        // first gave back, then the request, then the clean end with the final receipt.
        let challenge = super::challenge(&app, &world.channel).await;
        let opening = state.cumulative + 100 * EVENT_PRICE;
        let paid_for = usize::try_from((opening - state.spent()) / EVENT_PRICE).unwrap();
        let mut socket = open(&world, &url, &challenge, opening).await;
        let mut said = Vec::new();
        loop {
            match next(&mut socket).await {
                Said::Frame(Frame::Message { .. }) => said.push("message"),
                Said::Frame(Frame::Receipt { .. }) => said.push("receipt"),
                Said::Frame(Frame::NeedVoucher { data }) => {
                    let NeedVoucher {
                        required_cumulative,
                        accepted_cumulative,
                        ..
                    } = data;
                    assert_eq!(
                        (accepted_cumulative, required_cumulative),
                        (opening, opening + EVENT_PRICE)
                    );
                    said.push("need-voucher");
                }
                Said::Frame(Frame::CloseReady { data }) => {
                    assert_eq!((data.spent, data.units), (opening, Some(paid_for as u64)));
                    said.push("close-ready");
                }
                Said::Closed(code) => {
                    assert_eq!(code, Some(CloseCode::Normal));
                    break;
                }
                Said::Frame(other) => panic!("{other:?}"),
            }
        }
        assert_eq!(said.len(), paid_for + 3);
        assert_eq!(said[0], "receipt");
        assert!(said[1..=paid_for].iter().all(|kind| *kind == "message"));
        assert_eq!(said[paid_for + 1..], ["need-voucher", "close-ready"][..]);
        assert_eq!(
            store.load(channel_id).await.unwrap().unwrap().spent(),
            opening
        );
    }

    #[tokio::test]
    async fn bad_vouchers_on_a_socket_are_refused_in_band_and_close_it() {
        let (world, channel_id, store, scheme) = metered_world().await;
        let app = metered_app(&scheme, 100);
        let url = serve(app.clone()).await;
        let challenge = challenge(&app, &world.channel).await;

        // A voucher signed by another key.
        let (mut socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        let forged = hex(&Keypair::from_seed([9; 32]).sign(
            &commitment_bytes(&Network::testnet().id(), &world.channel, EVENT_PRICE).unwrap(),
        ));
        let authorization = authorization(challenge.clone(), "voucher", EVENT_PRICE, forged);
        let frame = Frame::Authorization { authorization };
        socket.send(Message::text(frame.to_text())).await.unwrap();
        let Said::Frame(Frame::Error { status, .. }) = next(&mut socket).await else {
            panic!("a payment error");
        };
        assert_eq!(status, 402);
        assert_eq!(
            next(&mut socket).await,
            Said::Closed(Some(CloseCode::Policy))
        );

        // A payment frame of the wrong shape.
        let (mut socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        socket
            .send(Message::text(
                r#"{"mpp":"authorization","authorization":7}"#,
            ))
            .await
            .unwrap();
        assert_eq!(
            next(&mut socket).await,
            Said::Frame(Frame::Error {
                status: 400,
                message: "invalid payment message".into()
            })
        );
        assert_eq!(
            next(&mut socket).await,
            Said::Closed(Some(CloseCode::Policy))
        );

        // Application frames before the opening are ignored; a close request ends it unpaid.
        let (mut socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        socket.send(Message::text("hello")).await.unwrap();
        // A payment frame only a server sends: ignored too (as mppx does).
        let echoed = Frame::Message { data: "x".into() };
        socket.send(Message::text(echoed.to_text())).await.unwrap();
        socket
            .send(Message::text(Frame::CloseRequest.to_text()))
            .await
            .unwrap();
        assert_eq!(
            next(&mut socket).await,
            Said::Closed(Some(CloseCode::Normal))
        );
        assert_eq!(store.load(channel_id).await.unwrap(), None, "nothing paid");

        // A voucher replayed, then one lower, mid-stream: `payment-error` 402, then the close;
        // nothing is credited.
        for (opening, voucher) in [(10, 10), (20, 15)] {
            let challenge = super::challenge(&app, &world.channel).await;
            let mut socket = open(&world, &url, &challenge, opening * EVENT_PRICE).await;
            let mut said = Vec::new();
            loop {
                match next(&mut socket).await {
                    Said::Frame(Frame::NeedVoucher { .. }) => break,
                    Said::Frame(Frame::Message { .. }) => said.push("message"),
                    Said::Frame(Frame::Receipt { .. }) => said.push("receipt"),
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!(said.len(), 11, "the receipt, then ten messages");
            send_voucher(&world, &mut socket, &challenge, voucher * EVENT_PRICE).await;
            let Said::Frame(Frame::Error { status, .. }) = next(&mut socket).await else {
                panic!("a payment error");
            };
            assert_eq!(status, 402, "{voucher}");
            assert_eq!(
                next(&mut socket).await,
                Said::Closed(Some(CloseCode::Policy))
            );
        }
        let state = store.load(channel_id).await.unwrap().unwrap();
        assert_eq!(
            (state.cumulative, state.spent()),
            (20 * EVENT_PRICE, 20 * EVENT_PRICE)
        );

        // The route still answers plain HTTP with its offer.
        let unpaid = send(&app, None).await;
        assert_eq!(unpaid.status, StatusCode::PAYMENT_REQUIRED);
    }

    #[tokio::test]
    async fn a_close_request_ends_the_socket_with_its_final_receipt() {
        let (world, channel_id, store, scheme) = metered_world().await;
        // An endless stream.
        let layer = metered_layer(&scheme, tower_paywall::layer::DEFAULT_VOUCHER_WAIT);
        let app = Router::new()
            .route(
                "/paid",
                get(|| async {
                    let events = futures_util::stream::iter(0..)
                        .map(|n| Ok::<_, std::io::Error>(format!("data: {n}\n\n")));
                    (
                        [("content-type", "text/event-stream")],
                        axum::body::Body::from_stream(events),
                    )
                }),
            )
            .layer(layer);
        let url = serve(app.clone()).await;
        let challenge = challenge(&app, &world.channel).await;
        let mut socket = open(&world, &url, &challenge, 100 * EVENT_PRICE).await;
        let (messages, ..) = read(&world, &mut socket, &challenge, 100, Some(150)).await;
        assert_eq!(messages.len(), 150);
        socket
            .send(Message::text(Frame::CloseRequest.to_text()))
            .await
            .unwrap();
        let (more, _, last, close) = read(&world, &mut socket, &challenge, 100, None).await;
        let last = last.expect("payment-close-ready");
        let units = 150 + more.len() as u64;
        assert_eq!(last.units, Some(units));
        assert_eq!(last.spent, i128::from(units as u32) * EVENT_PRICE);
        assert_eq!(close, Some(CloseCode::Normal));
        let state = store.load(channel_id).await.unwrap().unwrap();
        assert_eq!(state.spent(), last.spent, "what was sent, not more");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sockets_beyond_those_allowed_to_wait_for_their_opening_get_503() {
        let (world, _, _, scheme) = metered_world().await;
        let layer = PaymentLayer::builder()
            .shared_scheme(scheme.clone())
            .price(
                Price::parse("0.001")
                    .unwrap()
                    .per(tower_paywall::Unit::Event),
            )
            .max_waiting_sockets(1)
            .build()
            .unwrap();
        let app = Router::new()
            .route(
                "/paid",
                get(|| async { ([("content-type", "text/event-stream")], "data: 0\n\n") }),
            )
            .layer(layer);
        let url = serve(app.clone()).await;
        // One socket waits for its opening voucher: the next upgrade is refused, unpaid.
        let (waiting, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap();
        let refused = tokio_tungstenite::connect_async(url.as_str()).await;
        let Err(tokio_tungstenite::tungstenite::Error::Http(response)) = refused else {
            panic!("{refused:?}");
        };
        assert_eq!(response.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["retry-after"], "1");
        // Once the waiting socket is gone, another may wait (and pay).
        drop(waiting);
        let challenge = challenge(&app, &world.channel).await;
        let mut opened = None;
        for _ in 0..50 {
            match tokio_tungstenite::connect_async(url.as_str()).await {
                Ok((socket, _)) => {
                    opened = Some(socket);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        let mut socket = opened.expect("a socket may wait again once the first closed");
        send_voucher(&world, &mut socket, &challenge, EVENT_PRICE).await;
        let (messages, ..) = read(&world, &mut socket, &challenge, 100, None).await;
        assert_eq!(messages.len(), 1);
    }
}
