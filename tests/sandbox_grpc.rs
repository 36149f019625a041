//! gRPC end to end on the sandbox ledger: `demo.Shop` (as tonic generates it) behind
//! `PaymentLayer` with x402 `exact` and MPP `charge`, served by tonic on loopback, called by
//! tonic's generated client over a `Channel` with `PayingGrpcLayer`. Each payment moves the
//! ledger once; the free method is untouched; streams are paid before they start; a lost
//! answer is sent again with the same payment and charged once; a bad credential gets its
//! mapped status; a call the client will not pay fails with the server's status and why.
#![cfg(all(feature = "sandbox", feature = "client"))]

mod support;

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt;
use support::shop::{BrowseRequest, BuyRequest, Chunk, ShopClient, WatchRequest};
use tonic::codegen::tokio_stream::{self, StreamExt};
use tonic::transport::Channel;
use tower::ServiceBuilder;
use tower_paywall::client::{ClientError, PayingClient, PayingGrpc, Payment, Policy};
use tower_paywall::mpp::{Challenge, Credential};
use tower_paywall::sandbox::{Sandbox, SandboxConfig};
use tower_paywall::scheme::Intent;
use tower_paywall::stellar::{Address, Keypair, Network};

use support::PRICE_ATOMIC;

struct World {
    sandbox: Sandbox,
    payer: Keypair,
    pay_to: Address,
    channel: Channel,
}

/// The shop on the sandbox, offering x402 `exact` (our facilitator) and MPP `charge`.
async fn world() -> World {
    let config = SandboxConfig::default().ledger_period(Duration::from_millis(100));
    let sandbox = Sandbox::start(config).unwrap();
    let payer = sandbox.funded_keypair().await.unwrap();
    let pay_to = sandbox.funded_keypair().await.unwrap().address();
    let layer = support::exact_and_charge(&sandbox, pay_to, "shop")
        .await
        .pricing(support::shop::pricing)
        .build()
        .unwrap();
    let (channel, _) = support::shop::shop(layer).await;
    World {
        sandbox,
        payer,
        pay_to,
        channel,
    }
}

impl World {
    fn client(&self, policy: Policy) -> PayingClient {
        PayingClient::builder(
            self.payer.clone(),
            Arc::new(self.sandbox.clone()),
            Network::testnet(),
        )
        .policy(policy)
        .build()
        .unwrap()
    }

    /// The shop's generated client over the channel, paying with `client`.
    fn shop(&self, client: &PayingClient) -> ShopClient<PayingGrpc<Channel>> {
        let channel = ServiceBuilder::new()
            .layer(client.grpc_layer())
            .service(self.channel.clone());
        ShopClient::new(channel)
    }

    /// The payer's and the recipient's USDC.
    async fn balances(&self) -> (i128, i128) {
        (
            support::usdc_of(&self.sandbox, &self.payer.address()).await,
            support::usdc_of(&self.sandbox, &self.pay_to).await,
        )
    }

    async fn charged_once_since(&self, before: (i128, i128)) {
        assert_eq!(
            self.balances().await,
            (before.0 - PRICE_ATOMIC, before.1 + PRICE_ATOMIC),
            "charged once"
        );
    }
}

fn buy() -> BuyRequest {
    BuyRequest {
        item: "a book".into(),
    }
}

/// What a paid answer says was paid.
fn paid<T>(response: &tonic::Response<T>) -> Payment {
    response
        .extensions()
        .get::<Payment>()
        .cloned()
        .expect("a payment was made")
}

#[tokio::test]
async fn a_tonic_client_pays_each_intent_through_the_layer_and_the_ledger_moves_once() {
    let world = world().await;

    // Unpaid, by tonic's plain client: the mapped status, both challenges in the metadata.
    let status = ShopClient::new(world.channel.clone())
        .buy(buy())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert_eq!(status.message(), "Payment Required");
    assert!(status.metadata().get("payment-required").is_some());
    let challenge = status.metadata().get("www-authenticate").unwrap();
    assert!(challenge.to_str().unwrap().starts_with("Payment "));

    for (intent, receipt) in [
        (Intent::X402_EXACT, "payment-response"),
        (Intent::MPP_CHARGE, "payment-receipt"),
    ] {
        let client = world.client(Policy::default().prefer([intent]));
        let mut shop = world.shop(&client);
        let before = world.balances().await;
        let reply = shop.buy(buy()).await.unwrap();
        assert_eq!(reply.get_ref().note, "here is a book");
        let payment = paid(&reply);
        assert_eq!((payment.intent, payment.amount), (intent, PRICE_ATOMIC));
        assert_eq!(
            payment.receipt.as_deref(),
            reply.metadata().get(receipt).map(|v| v.to_str().unwrap()),
            "the receipt comes from the response metadata"
        );
        world.charged_once_since(before).await;
        assert_eq!(client.spent(), PRICE_ATOMIC);

        // The free method: no payment, nothing moves.
        let before = world.balances().await;
        let catalog = shop.browse(BrowseRequest {}).await.unwrap();
        assert_eq!(catalog.get_ref().items, demo_proto::ITEMS);
        assert!(catalog.extensions().get::<Payment>().is_none());
        assert_eq!(world.balances().await, before);
        assert_eq!(client.spent(), PRICE_ATOMIC);
    }
}

#[tokio::test]
async fn streams_are_paid_before_they_start() {
    let world = world().await;
    let client = world.client(Policy::default());
    let mut shop = world.shop(&client);

    // Server streaming: the receipt is in the headers, before the first quote.
    let before = world.balances().await;
    let watch = WatchRequest {
        item: "a map".into(),
        count: 5,
    };
    let response = shop.watch(watch).await.unwrap();
    assert!(response.metadata().get("payment-response").is_some());
    assert_eq!(paid(&response).amount, PRICE_ATOMIC);
    let quotes: Vec<_> = response.into_inner().collect().await;
    let prices: Vec<u64> = quotes.into_iter().map(|q| q.unwrap().price).collect();
    assert_eq!(prices, [100, 101, 102, 103, 104]);
    world.charged_once_since(before).await;

    // Client streaming, with chunks that come over time: the ones handed over before the
    // payment are sent again, then the rest; the server reads them all, once.
    let before = world.balances().await;
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        for n in 0..4_u8 {
            let chunk = Chunk {
                data: vec![n; 1000],
            };
            if sender.send(chunk).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let chunks = tokio_stream::wrappers::ReceiverStream::new(receiver);
    let stored = shop.upload(chunks).await.unwrap();
    assert_eq!((stored.get_ref().bytes, stored.get_ref().chunks), (4000, 4));
    assert_eq!(paid(&stored).amount, PRICE_ATOMIC);
    world.charged_once_since(before).await;
    assert_eq!(client.spent(), 2 * PRICE_ATOMIC);

    // A call the handler fails is not charged (the client counts what it handed over).
    let before = world.balances().await;
    let too_many = WatchRequest {
        item: "a map".into(),
        count: demo_proto::MAX_QUOTES + 1,
    };
    let status = shop.watch(too_many).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(world.balances().await, before, "not charged");
}

#[tokio::test]
async fn a_stream_longer_than_the_replay_limit_before_its_answer_is_not_paid() {
    let world = world().await;
    let client = world.client(Policy::default());
    let channel = ServiceBuilder::new()
        .layer(client.grpc_layer().replay_limit(100))
        .service(world.channel.clone());
    let before = world.balances().await;
    let chunks = tokio_stream::iter([Chunk {
        data: vec![1; 1000],
    }]);
    let status = ShopClient::new(channel).upload(chunks).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        status.message(),
        "payment required, not paid: the request body cannot be sent twice"
    );
    let error =
        std::error::Error::source(&status).and_then(|source| source.downcast_ref::<ClientError>());
    assert!(matches!(error, Some(ClientError::BodyNotReplayable)));
    assert_eq!(world.balances().await, before);
    assert_eq!(client.spent(), 0);
}

#[tokio::test]
async fn a_call_the_client_will_not_pay_fails_with_the_servers_status_and_why() {
    let world = world().await;
    let client = world.client(Policy::default().max_per_payment(PRICE_ATOMIC - 1));
    let status = world.shop(&client).buy(buy()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        status.message(),
        format!(
            "payment required, not paid: the server asks {PRICE_ATOMIC}, more than the cap of {} per payment",
            PRICE_ATOMIC - 1
        )
    );
    assert!(status.metadata().get("payment-required").is_some());
    assert!(!status.details().is_empty(), "the server's status details");
    let error =
        std::error::Error::source(&status).and_then(|source| source.downcast_ref::<ClientError>());
    assert!(matches!(error, Some(ClientError::OverLimit { .. })));
    assert_eq!(client.spent(), 0);
}

#[tokio::test]
async fn bad_credentials_get_their_mapped_status_and_nothing_moves() {
    let world = world().await;
    let before = world.balances().await;
    let unpaid = ShopClient::new(world.channel.clone())
        .buy(buy())
        .await
        .unwrap_err();
    let challenge = unpaid.metadata().get("www-authenticate").unwrap();
    let mut challenge = Challenge::parse_all(challenge.to_str().unwrap())
        .unwrap()
        .remove(0);
    challenge.method = "tempo".into();
    let other_method = Credential::new(challenge, serde_json::json!({})).encode();

    // x402 and MPP answer a credential they cannot read with their offers again and the
    // reason; a credential for another payment method is a bad request.
    for (name, value, code, message) in [
        (
            "payment-signature",
            "not base64 json".to_owned(),
            tonic::Code::ResourceExhausted,
            "Payment Required: invalid_payload",
        ),
        (
            "authorization",
            "Payment not-a-credential".to_owned(),
            tonic::Code::ResourceExhausted,
            "Payment Required: malformed-credential",
        ),
        (
            "authorization",
            other_method,
            tonic::Code::InvalidArgument,
            "Bad Request: method-unsupported",
        ),
    ] {
        let mut request = tonic::Request::new(buy());
        request.metadata_mut().insert(name, value.parse().unwrap());
        let mut shop = ShopClient::new(world.channel.clone());
        let status = shop.buy(request).await.unwrap_err();
        assert_eq!((status.code(), status.message()), (code, message), "{name}");
        assert!(!status.details().is_empty());
    }
    assert_eq!(world.balances().await, before);
}

/// What [`Faulty`] does to the first paid call.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Passes it on, lets the server answer (and settle), and loses the answer.
    DropAnswer,
    /// Answers `UNAVAILABLE` (Trailers-Only, `retry-after: 0`) without passing it on.
    Unavailable,
}

/// A test double at the transport boundary, between the paying layer and the channel: it
/// applies its fault to the first call carrying a payment and records the payment of each.
#[derive(Clone)]
struct Faulty {
    inner: Channel,
    fault: Fault,
    seen: Arc<Mutex<Vec<String>>>,
}

impl tower::Service<http::Request<tonic::body::Body>> for Faulty {
    type Response = http::Response<tonic::body::Body>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let payment = ["payment-signature", "authorization"]
            .iter()
            .find_map(|name| request.headers().get(*name))
            .map(|value| value.to_str().unwrap().to_owned());
        let first_paid = payment.is_some_and(|payment| {
            let mut seen = self.seen.lock().unwrap();
            seen.push(payment);
            seen.len() == 1
        });
        if first_paid && matches!(self.fault, Fault::Unavailable) {
            // Not passed on: the channel never sees it.
            let mut answer = tonic::Status::unavailable("try again").into_http();
            answer
                .headers_mut()
                .insert("retry-after", http::HeaderValue::from_static("0"));
            return Box::pin(std::future::ready(Ok(answer)));
        }
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await?;
            if first_paid {
                // The server answered (and settled); the client never hears of it.
                let _ = response.into_body().collect().await;
                return Err("the connection was lost".into());
            }
            Ok(response)
        })
    }
}

#[tokio::test]
async fn a_lost_answer_or_unavailable_is_sent_again_with_the_same_payment_and_charged_once() {
    let world = world().await;
    for (fault, intent, stream) in [
        (Fault::DropAnswer, Intent::X402_EXACT, false),
        (Fault::DropAnswer, Intent::MPP_CHARGE, false),
        (Fault::Unavailable, Intent::X402_EXACT, false),
        (Fault::Unavailable, Intent::MPP_CHARGE, false),
        (Fault::DropAnswer, Intent::X402_EXACT, true),
        (Fault::Unavailable, Intent::MPP_CHARGE, true),
    ] {
        let case = format!("{fault:?} {intent} stream: {stream}");
        let client = world.client(Policy::default().prefer([intent]));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let faulty = Faulty {
            inner: world.channel.clone(),
            fault,
            seen: seen.clone(),
        };
        let channel = ServiceBuilder::new()
            .layer(client.grpc_layer())
            .service(faulty);
        let mut shop = ShopClient::new(channel);
        let before = world.balances().await;
        let payment = if stream {
            // A client stream: every chunk reaches the server once, in order, on the resend.
            let chunks = (1..=3_u8).map(|n| Chunk {
                data: vec![n; usize::from(n) * 100],
            });
            let stored = shop.upload(tokio_stream::iter(chunks)).await.unwrap();
            assert_eq!(
                (stored.get_ref().bytes, stored.get_ref().chunks),
                (600, 3),
                "{case}"
            );
            paid(&stored)
        } else {
            let reply = shop.buy(buy()).await.unwrap();
            assert_eq!(reply.get_ref().note, "here is a book", "{case}");
            paid(&reply)
        };
        assert_eq!(payment.intent, intent);
        let sent = seen.lock().unwrap().clone();
        assert_eq!(sent.len(), 2, "one payment sent twice: {case}");
        assert_eq!(
            sent[0], sent[1],
            "the retry carries the same payment: {case}"
        );
        world.charged_once_since(before).await;
        assert_eq!(client.spent(), PRICE_ATOMIC);
    }
}
