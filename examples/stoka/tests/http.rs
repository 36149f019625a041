//! The HTTP-level suite, run against both back ends (the embedded redb file and Redis): a real
//! stoka on loopback over the sandbox ledger, paid by the crate's paying client with x402
//! `exact` (and MPP `charge` where said), balances read from the ledger. stoka's clock is a
//! manual one, so expiry, visibility and challenge lifetimes are tested without waiting.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as STANDARD_B64;
use serde_json::Value;
use stoka::clock::{Clock, ManualClock, SystemClock};
use stoka::dev::DevStack;
use stoka::pricing::{Limits, Rates};
use stoka::storage::{
    Ack, Blob, Challenge, DeadLetter, Delivery, NewMessage, PopOptions, Put, PutMode, RedbStorage,
    RedisStorage, Storage, StorageError, Usage,
};
use tower_paywall::BoxFuture;
use tower_paywall::Intent;
use tower_paywall::client::{PayingClient, Policy, payment};
use tower_paywall::stellar::{Address, Keypair, Network};
use tower_paywall::store::redis::{test_deployments, test_namespace};
use tower_paywall::store::{ChannelStore, PaymentBackend};

struct World {
    stack: DevStack,
    url: String,
    clock: ManualClock,
    storage: Arc<dyn Storage>,
    /// Whether the store's sweeper removes expired records (redb), rather than the store
    /// itself (Redis).
    swept: bool,
    http: reqwest::Client,
}

async fn world(storage: Arc<dyn Storage>, swept: bool, dir: &std::path::Path) -> World {
    let support::Stack { dev, url, clock } = support::start(storage.clone(), dir, 3).await;
    World {
        stack: dev,
        url,
        clock,
        storage,
        swept,
        // Idle connections are dropped before the server's 10 s idle deadline closes them,
        // so that no request races that close on a pooled connection.
        http: reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .unwrap(),
    }
}

impl World {
    fn wallet(&self, n: usize) -> &Keypair {
        &self.stack.wallets[n]
    }

    fn payer(&self, n: usize, prefer: Intent) -> PayingClient {
        let policy = Policy::default()
            .prefer([prefer])
            .max_per_payment(10_000_000);
        PayingClient::builder(
            self.wallet(n).clone(),
            Arc::new(self.stack.sandbox.clone()),
            Network::testnet(),
        )
        .policy(policy)
        .build()
        .unwrap()
    }

    async fn usdc(&self, n: usize) -> i128 {
        self.usdc_of(&self.wallet(n).address()).await
    }

    async fn usdc_of(&self, holder: &Address) -> i128 {
        let sandbox = &self.stack.sandbox;
        sandbox.balance(&sandbox.usdc(), holder).await.unwrap()
    }

    /// stoka's account, which channels pay.
    fn pay_to(&self) -> Address {
        let pay_to = self.stack.config.pay_to.as_deref().unwrap();
        pay_to.parse().unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// A wallet-signed `Authorization` for `audience` by wallet `n`: SEP-53 or raw.
    async fn authorization(&self, n: usize, audience: &str, sep53: bool) -> String {
        let challenge: Value = self
            .http
            .post(self.url("/v1/auth/challenge"))
            .json(&serde_json::json!({ "audience": audience }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(challenge["service"], "stoka");
        let message = challenge["message"].as_str().unwrap();
        let signed = if sep53 {
            self.wallet(n).sign(&stoka::auth::sep53_digest(message))
        } else {
            self.wallet(n).sign(message.as_bytes())
        };
        format!(
            "Stellar {}:{}:{}",
            self.wallet(n).address(),
            challenge["challenge_id"].as_str().unwrap(),
            hex::encode(signed)
        )
    }
}

fn stamped(body: &Value) {
    assert_eq!(body["service"], "stoka", "{body}");
    assert_eq!(body["audience"], "agent");
    assert_eq!(body["api_family"], "stoka-x402-v1");
}

/// A paid 200's amount and JSON body; anything else fails the test with the whole answer.
async fn paid(response: reqwest::Response) -> (i128, Value) {
    let status = response.status();
    let amount = payment(&response).map(|paid| paid.amount);
    let headers = format!("{:?}", response.headers());
    let text = response.text().await.unwrap();
    assert_eq!(status, 200, "{headers} {text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    stamped(&body);
    (amount.expect("a payment"), body)
}

async fn json(response: reqwest::Response) -> Value {
    let body: Value = response.json().await.unwrap();
    stamped(&body);
    body
}

/// What each wallet was charged, by the server's answers.
#[derive(Default)]
struct Ledger {
    charged: [i128; 3],
}

/// Every check, in order, on one back end.
async fn suite(world: &World) {
    let mut charged = Ledger::default();
    prices(world, &mut charged).await;
    isolation_and_conflicts(world, &mut charged).await;
    early_answers(world).await;
    errors_are_stamped_json(world).await;
    expiry(world, &mut charged).await;
    queues(world, &mut charged).await;
    wallet_signatures(world, &mut charged).await;
    channels(world, &mut charged).await;
    streams(world, &mut charged).await;
    usage_adds_up(world, &charged).await;
}

/// Every price from the formula: sizes 0, 1, 1024, 1025, 350,000; TTLs at both bounds and
/// the default. Each payment is what the ledger shows.
async fn prices(world: &World, charged: &mut Ledger) {
    let rates = Rates::default();
    let limits = Limits::default();
    let client = world.payer(0, Intent::X402_EXACT);
    for size in [0_usize, 1, 1024, 1025, 350_000] {
        let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let key = format!("price-{size}");
        for (ttl, path) in [
            (Some(limits.min_ttl_seconds), "store"),
            (Some(limits.max_ttl_seconds), "update"),
            (None, "update"),
        ] {
            let before = world.usdc(0).await;
            let mut request = match path {
                "store" => client
                    .post(world.url("/v1/store"))
                    .header("x-stoka-key", &key),
                _ => client.put(world.url(&format!("/v1/object/{key}"))),
            };
            if let Some(ttl) = ttl {
                request = request.header("x-stoka-ttl-seconds", ttl.to_string());
            }
            // An empty body goes out without a length unless one is set; stoka requires one.
            let response = request
                .header("content-length", size.to_string())
                .body(body.clone())
                .send()
                .await
                .unwrap();
            let (paid, answer) = paid(response).await;
            let ttl = ttl.unwrap_or(limits.default_ttl_seconds);
            let price = i128::from(rates.store(size as u64, ttl));
            assert_eq!(paid, price, "{path} {size} B for {ttl} s");
            assert_eq!(answer["charged_atomic"], price as u64);
            assert_eq!(answer["size_bytes"], size as u64);
            assert_eq!(answer["ttl_seconds"], ttl);
            assert_eq!(
                answer["owner_pubkey"],
                world.wallet(0).address().to_string()
            );
            assert_eq!(world.usdc(0).await, before - price, "the ledger agrees");
            charged.charged[0] += price;
        }
        // Retrieve: the exact quote with X-Stoka-Owner, and the bytes back.
        let before = world.usdc(0).await;
        let response = client
            .get(world.url(&format!("/v1/retrieve/{key}")))
            .header("x-stoka-owner", world.wallet(0).address().to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let price = i128::from(rates.retrieve(size as u64));
        assert_eq!(payment(&response).unwrap().amount, price);
        assert_eq!(
            response.headers()["x-stoka-owner-pubkey"],
            world.wallet(0).address().to_string().as_str()
        );
        assert!(response.headers().contains_key("x-stoka-expires-at"));
        assert_eq!(response.bytes().await.unwrap(), body);
        assert_eq!(world.usdc(0).await, before - price);
        charged.charged[0] += price;
    }
    // MPP charge sells the same thing at the same price.
    let mpp = world.payer(0, Intent::MPP_CHARGE);
    let response = mpp
        .post(world.url("/v1/store"))
        .header("x-stoka-key", "by-charge")
        .body(vec![7; 1025])
        .send()
        .await
        .unwrap();
    assert_eq!(payment(&response).unwrap().intent, Intent::MPP_CHARGE);
    let (amount, _) = paid(response).await;
    assert_eq!(
        amount,
        i128::from(rates.store(1025, limits.default_ttl_seconds))
    );
    charged.charged[0] += amount;
    let response = mpp
        .get(world.url("/v1/retrieve/by-charge"))
        .header("x-stoka-owner", world.wallet(0).address().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        payment(&response).unwrap().amount,
        i128::from(rates.retrieve(1025))
    );
    charged.charged[0] += i128::from(rates.retrieve(1025));
}

/// Another wallet gets 404 and pays nothing; a store on an existing key is 409 and free.
async fn isolation_and_conflicts(world: &World, charged: &mut Ledger) {
    let other = world.payer(1, Intent::X402_EXACT);
    let before = world.usdc(1).await;
    // Without X-Stoka-Owner the quote is for the largest blob; the paid retry names its payer,
    // who has no such key: 404, before any money moves.
    let response = other
        .get(world.url("/v1/retrieve/price-1024"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(json(response).await["error"], "not_found");
    // Naming the owner does not help: the payer is the owner.
    let response = other
        .get(world.url("/v1/retrieve/price-1024"))
        .header("x-stoka-owner", world.wallet(0).address().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let response = other
        .put(world.url("/v1/object/price-1024"))
        .body("not yours")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(world.usdc(1).await, before, "not charged");

    let owner = world.payer(0, Intent::X402_EXACT);
    let before = world.usdc(0).await;
    let response = owner
        .post(world.url("/v1/store"))
        .header("x-stoka-key", "price-1")
        .body("again")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    assert_eq!(json(response).await["error"], "key_exists");
    assert_eq!(world.usdc(0).await, before, "not charged");
    // The same key is free for another wallet.
    let response = other
        .post(world.url("/v1/store"))
        .header("x-stoka-key", "price-1")
        .body("mine")
        .send()
        .await
        .unwrap();
    charged.charged[1] += paid(response).await.0;
}

/// 400, 411 and 413 come before any 402, with no payment asked.
async fn early_answers(world: &World) {
    let store = || world.http.post(world.url("/v1/store"));
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            store()
                .header("x-stoka-key", "k")
                .header("x-stoka-ttl-seconds", "3599")
                .body("x"),
            400,
            "invalid_ttl",
        ),
        // A TTL that is not text is refused as the handler would refuse it, before any 402
        // (it was once quoted at the default TTL, then refused after payment).
        (
            store()
                .header("x-stoka-key", "k")
                .header(
                    "x-stoka-ttl-seconds",
                    http::HeaderValue::from_bytes(b"3600\xff").unwrap(),
                )
                .body("x"),
            400,
            "invalid_ttl",
        ),
        (store().body("no key"), 400, "invalid_key"),
        (
            world
                .http
                .post(world.url("/v1/queue/GNOTANADDRESS/inbox/push"))
                .body("x"),
            400,
            "invalid_recipient",
        ),
        (
            world
                .http
                .post(world.url("/v1/queue/inbox/pop?wait_seconds=21")),
            400,
            "invalid_wait",
        ),
    ];
    for (request, status, code) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{code}");
        assert!(!response.headers().contains_key("payment-required"));
        assert_eq!(json(response).await["error"], code);
    }
    // Over the limits: 413 on the head alone. (Sent as a head without its body: the server
    // answers and closes without reading a body it refuses, which a client still writing
    // that body may see as a broken pipe.)
    let push = format!("/v1/queue/{}/inbox/push", world.wallet(1).address());
    for (path, length, key) in [
        ("/v1/store", 350_001, Some("k")),
        (push.as_str(), 262_145, None),
    ] {
        let (status, head, body) = head_only(world, path, length, key).await;
        assert_eq!(status, 413, "{path}");
        assert!(!head.contains("payment-required"), "{head}");
        stamped(&body);
        assert_eq!(body["error"], "too_large");
    }
    // HEAD of a paid route would deliver nothing for the money: 405, no offer.
    let response = world
        .http
        .head(world.url("/v1/retrieve/price-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert!(!response.headers().contains_key("payment-required"));
    // A chunked body has no Content-Length: 411.
    let chunks = futures_body(b"streamed".to_vec());
    let response = store()
        .header("x-stoka-key", "k")
        .body(chunks)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 411);
    assert_eq!(json(response).await["error"], "length_required");
    // Within the limits, the first call is a 402 with offers of both protocols. (From a client
    // of its own: the 402 comes before the body is read, and the connection, closed then,
    // must not be the next request's.)
    let response = reqwest::Client::new()
        .post(world.url("/v1/store"))
        .header("x-stoka-key", "k")
        .body(vec![0; 350_000])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 402);
    assert!(response.headers().contains_key("payment-required"));
    assert!(response.headers().contains_key("www-authenticate"));
}

/// Every error stoka answers is its stamped JSON: a wrong method, a path segment that is not
/// UTF-8, wallet credentials that are not ASCII.
async fn errors_are_stamped_json(world: &World) {
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            world.http.get(world.url("/v1/store")),
            405,
            "method_not_allowed",
        ),
        (
            world.http.delete(world.url("/v1/auth/challenge")),
            405,
            "method_not_allowed",
        ),
        (
            world.http.delete(world.url("/v1/object/%FF")),
            400,
            "invalid_path",
        ),
        (
            world.http.post(world.url("/v1/queue/t/ack/%FF")),
            400,
            "invalid_path",
        ),
        (
            world.http.delete(world.url("/v1/object/k")).header(
                "authorization",
                http::HeaderValue::from_bytes(b"Stellar G\xff:abc:00").unwrap(),
            ),
            400,
            "malformed_authorization",
        ),
        // Another scheme in bytes stoka cannot read is no credential of ours.
        (
            world.http.delete(world.url("/v1/object/k")).header(
                "authorization",
                http::HeaderValue::from_bytes(b"Bearer \xff").unwrap(),
            ),
            401,
            "wallet_signature_required",
        ),
    ];
    for (request, status, code) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{code}");
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "{code}"
        );
        assert_eq!(json(response).await["error"], code);
    }
}

/// Sends only the head of a `POST` declaring a body of `length` bytes; the answer's status,
/// head (lower case) and JSON body.
async fn head_only(
    world: &World,
    path: &str,
    length: usize,
    key: Option<&str>,
) -> (u16, String, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = world.url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let key = key
        .map(|key| format!("x-stoka-key: {key}\r\n"))
        .unwrap_or_default();
    let head =
        format!("POST {path} HTTP/1.1\r\nhost: {address}\r\n{key}content-length: {length}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0; 4096];
    loop {
        let text = String::from_utf8_lossy(&answer).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let head = head.to_ascii_lowercase();
            let declared = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length: "))
                .and_then(|value| value.trim().parse::<usize>().ok())
                .unwrap();
            if body.len() >= declared {
                let status = head[9..12].parse().unwrap();
                return (
                    status,
                    head,
                    serde_json::from_str(&body[..declared]).unwrap(),
                );
            }
        }
        let read = stream.read(&mut buffer).await.unwrap();
        assert!(read > 0, "the connection closed before the answer: {text}");
        answer.extend_from_slice(&buffer[..read]);
    }
}

/// A body without a length: one chunk, no size hint, so it goes out chunked.
fn futures_body(bytes: Vec<u8>) -> reqwest::Body {
    reqwest::Body::wrap(Unsized(Some(bytes::Bytes::from(bytes))))
}

struct Unsized(Option<bytes::Bytes>);

impl http_body::Body for Unsized {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, std::io::Error>>> {
        std::task::Poll::Ready(self.0.take().map(|data| Ok(http_body::Frame::data(data))))
    }
}

/// Expiry by stoka's clock: gone at `expires_at` for reads (404, uncharged) and swept.
async fn expiry(world: &World, charged: &mut Ledger) {
    let client = world.payer(2, Intent::X402_EXACT);
    let response = client
        .post(world.url("/v1/store"))
        .header("x-stoka-key", "short")
        .header("x-stoka-ttl-seconds", "3600")
        .body("brief")
        .send()
        .await
        .unwrap();
    charged.charged[2] += paid(response).await.0;
    world.clock.advance(3_600_000);
    let before = world.usdc(2).await;
    let response = client
        .get(world.url("/v1/retrieve/short"))
        .header("x-stoka-owner", world.wallet(2).address().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(world.usdc(2).await, before);
    let owner = world.wallet(2).address().to_string();
    assert_eq!(
        world
            .storage
            .blob_size(&owner, "short", world.clock.now())
            .await
            .unwrap(),
        None
    );
    let swept = world
        .storage
        .sweep_expired(world.clock.now(), 1000)
        .await
        .unwrap();
    if world.swept {
        // Gone from the file, not only hidden by the read's expiry check.
        assert!(swept >= 1);
        assert_eq!(
            world.storage.get_blob(&owner, "short", 0).await.unwrap(),
            None
        );
    } else {
        assert_eq!(swept, 0, "Redis expires records itself");
    }
}

/// Queues: at-least-once with receipts per delivery, long-poll wake-up, dead letters.
async fn queues(world: &World, charged: &mut Ledger) {
    let (sender, owner) = (
        world.payer(0, Intent::X402_EXACT),
        world.payer(1, Intent::X402_EXACT),
    );
    let to = world.wallet(1).address().to_string();
    let push = |body: &'static str| {
        sender
            .post(world.url(&format!("/v1/queue/{to}/inbox/push")))
            .body(body)
            .send()
    };
    let (amount, pushed) = paid(push("first").await.unwrap()).await;
    charged.charged[0] += amount;
    let pop = |wait: u64| {
        owner
            .post(world.url(&format!("/v1/queue/inbox/pop?wait_seconds={wait}")))
            .send()
    };
    let response = pop(0).await.unwrap();
    assert_eq!(payment(&response).unwrap().amount, 100);
    charged.charged[1] += 100;
    let first = json(response).await;
    assert_eq!(first["message_id"], pushed["message_id"]);
    assert_eq!(
        first["attributes"]["from_pubkey"],
        world.wallet(0).address().to_string()
    );
    assert_eq!(first["attributes"]["receive_count"], 1);
    // Invisible for 30 s: an empty pop (still a paid pop).
    let response = pop(0).await.unwrap();
    charged.charged[1] += 100;
    assert_eq!(json(response).await["empty"], true);
    // Redelivered after the timeout, with a new receipt; the old one is stale.
    world.clock.advance(30_000);
    let response = pop(0).await.unwrap();
    charged.charged[1] += 100;
    let second = json(response).await;
    assert_eq!(second["message_id"], first["message_id"]);
    assert_eq!(second["attributes"]["receive_count"], 2);
    assert_ne!(second["receipt"], first["receipt"]);
    let ack = |receipt: &Value| {
        let receipt = receipt.as_str().unwrap().to_owned();
        async move {
            let authorization = world.authorization(1, "queue-ack", true).await;
            world
                .http
                .post(world.url(&format!("/v1/queue/inbox/ack/{receipt}")))
                .header("authorization", authorization)
                .send()
                .await
                .unwrap()
        }
    };
    let stale = ack(&first["receipt"]).await;
    assert_eq!(stale.status(), 409);
    assert_eq!(json(stale).await["error"], "stale_receipt");
    assert_eq!(ack(&second["receipt"]).await.status(), 204);
    let again = ack(&second["receipt"]).await;
    assert_eq!(again.status(), 404);
    assert_eq!(json(again).await["error"], "unknown_receipt");

    // Long-poll: a pop waiting 15 s returns as soon as a message is pushed.
    let waiting = {
        let owner = owner.clone();
        let url = world.url("/v1/queue/inbox/pop?wait_seconds=15");
        tokio::spawn(async move {
            let response = owner.post(url).send().await.unwrap();
            (Instant::now(), response.json::<Value>().await.unwrap())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (amount, _) = paid(push("wake up").await.unwrap()).await;
    let pushed_at = Instant::now();
    charged.charged[0] += amount;
    let (popped_at, popped) = waiting.await.unwrap();
    charged.charged[1] += 100;
    assert_eq!(popped["body"], "d2FrZSB1cA==", "{popped}");
    let latency = popped_at.saturating_duration_since(pushed_at);
    eprintln!("long-poll wake-up after the push answered: {latency:?}");
    assert!(
        latency < Duration::from_secs(5),
        "woke by the push, not the deadline"
    );
    // Acknowledge it, so that it does not come back below.
    assert_eq!(ack(&popped["receipt"]).await.status(), 204);

    // Dead letters: after 10 deliveries without an ack, the message is set aside.
    let (amount, _) = paid(push("never acked").await.unwrap()).await;
    charged.charged[0] += amount;
    for delivery in 1..=10 {
        let response = pop(0).await.unwrap();
        charged.charged[1] += 100;
        let body = json(response).await;
        assert_eq!(body["attributes"]["receive_count"], delivery, "{body}");
        world.clock.advance(30_000);
    }
    let response = pop(0).await.unwrap();
    charged.charged[1] += 100;
    assert_eq!(json(response).await["empty"], true);
    let dead = world
        .storage
        .dead_letters(&to, "inbox", world.clock.now(), 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, b"never acked");
    assert_eq!(dead[0].receive_count, 10);
}

/// Wallet-signed routes: SEP-53 and raw signatures work once; a replay, a wrong audience, an
/// expired challenge and a bad signature are each refused.
async fn wallet_signatures(world: &World, charged: &mut Ledger) {
    let usage = |authorization: String| {
        world
            .http
            .get(world.url("/v1/me/usage?days=1"))
            .header("authorization", authorization)
            .send()
    };
    let sep53 = world.authorization(0, "me-usage", true).await;
    assert_eq!(usage(sep53.clone()).await.unwrap().status(), 200);
    let replay = usage(sep53).await.unwrap();
    assert_eq!(replay.status(), 401);
    assert_eq!(json(replay).await["error"], "challenge_invalid");
    let raw = world.authorization(0, "me-usage", false).await;
    assert_eq!(usage(raw).await.unwrap().status(), 200);
    let wrong = world.authorization(0, "object-delete", true).await;
    let response = usage(wrong).await.unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(json(response).await["error"], "wrong_audience");
    let late = world.authorization(0, "me-usage", true).await;
    world.clock.advance(300_000);
    let response = usage(late).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(json(response).await["error"], "challenge_invalid");
    // Signed by another wallet than the one named.
    let other = world.authorization(1, "me-usage", true).await;
    let forged = other.replace(
        &world.wallet(1).address().to_string(),
        &world.wallet(0).address().to_string(),
    );
    let response = usage(forged).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(json(response).await["error"], "bad_signature");
    let response = world
        .http
        .get(world.url("/v1/me/usage"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    // Delete: 204 for an existing blob and for a missing one, and the blob is gone.
    for key in ["price-0", "price-0", "never-stored"] {
        let authorization = world.authorization(0, "object-delete", true).await;
        let response = world
            .http
            .delete(world.url(&format!("/v1/object/{key}")))
            .header("authorization", authorization)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
    }
    let owner = world.wallet(0).address().to_string();
    assert_eq!(
        world
            .storage
            .blob_size(&owner, "price-0", world.clock.now())
            .await
            .unwrap(),
        None
    );
    // Profile: bind with the credentials in the body, then clear.
    for email in [Some("agent@example.com"), None] {
        let authorization = world.authorization(2, "profile-bind", true).await;
        let (wallet, rest) = authorization["Stellar ".len()..].split_once(':').unwrap();
        let (challenge_id, signature_hex) = rest.split_once(':').unwrap();
        let response = world
            .http
            .post(world.url("/v1/profile"))
            .json(&serde_json::json!({
                "wallet": wallet, "challenge_id": challenge_id,
                "signature_hex": signature_hex, "email": email,
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(world.storage.email(wallet).await.unwrap().as_deref(), email);
    }
    let _ = charged;
}

/// `pop` paid by channel vouchers: the mailbox is the one of the key that signs the vouchers.
/// A channel that names another wallet as its funder (possible without that wallet's
/// signature when nothing is deposited at creation) does not open that wallet's mailbox.
async fn channels(world: &World, charged: &mut Ledger) {
    use tower_paywall::sandbox::{ContractCall, channel_wasm};
    use tower_paywall::stellar::xdr::{Int128Parts, ScBytes, ScVal};
    let sandbox = &world.stack.sandbox;
    let usdc = sandbox.usdc();
    let (sender, victim, attacker) = (world.wallet(0), world.wallet(1), world.wallet(2));
    let x402 = world.payer(0, Intent::X402_EXACT);
    let victim_inbox = world.url(&format!("/v1/queue/{}/secret/push", victim.address()));
    let (amount, _) = paid(
        x402.post(victim_inbox)
            .body("for the victim only")
            .send()
            .await
            .unwrap(),
    )
    .await;
    charged.charged[0] += amount;

    // The attacker's channel: funder = the victim, commitment key = the attacker's, funded by a
    // plain transfer.
    let i128 = |v: i128| {
        ScVal::I128(Int128Parts {
            hi: (v >> 64) as i64,
            lo: v as u64,
        })
    };
    let pay_to = world.pay_to();
    let args = vec![
        ScVal::Address(usdc.to_sc_address()),
        ScVal::Address(victim.address().to_sc_address()),
        ScVal::Bytes(ScBytes(attacker.public_key().to_vec().try_into().unwrap())),
        ScVal::Address(pay_to.to_sc_address()),
        i128(0),
        ScVal::U32(1_000),
    ];
    let channel = sandbox
        .deploy_wasm(channel_wasm().unwrap(), attacker, args)
        .await
        .unwrap();
    let fund = ContractCall::new(
        usdc,
        "transfer",
        vec![
            ScVal::Address(attacker.address().to_sc_address()),
            ScVal::Address(channel.to_sc_address()),
            i128(1_000_000),
        ],
    );
    sandbox.invoke(attacker, &fund).await.unwrap();
    let channel_payer = |n: usize, channel: Address, signer: &Keypair| {
        PayingClient::builder(
            world.wallet(n).clone(),
            Arc::new(sandbox.clone()),
            Network::testnet(),
        )
        .policy(
            Policy::default()
                .prefer([Intent::MPP_CHANNEL])
                .max_per_payment(1_000_000),
        )
        .channel(&world.url, channel, signer.clone())
        .build()
        .unwrap()
    };
    let popper = channel_payer(2, channel, attacker);
    let response = popper
        .post(world.url("/v1/queue/secret/pop"))
        .send()
        .await
        .unwrap();
    assert_eq!(payment(&response).unwrap().intent, Intent::MPP_CHANNEL);
    let (amount, body) = paid(response).await;
    charged.charged[2] += amount;
    assert_eq!(body["empty"], true, "the attacker's own mailbox: {body}");

    // The victim's message is still there for the victim; the sender's demo channel pays
    // as the sender.
    let response = world
        .payer(1, Intent::X402_EXACT)
        .post(world.url("/v1/queue/secret/pop"))
        .send()
        .await
        .unwrap();
    let (amount, body) = paid(response).await;
    charged.charged[1] += amount;
    assert_eq!(body["body"], STANDARD_B64.encode("for the victim only"));
    let own = channel_payer(0, world.stack.channel, sender);
    let response = own
        .post(world.url("/v1/queue/secret/pop"))
        .send()
        .await
        .unwrap();
    assert_eq!(payment(&response).unwrap().intent, Intent::MPP_CHANNEL);
    let (amount, body) = paid(response).await;
    charged.charged[0] += amount;
    assert_eq!(body["empty"], true);
}

/// `stoka tail` (SSE) and a WebSocket on the same route: wallet 1's mailbox streamed from its
/// own channel, each message pushed by wallet 0 received as it arrives and charged once, at
/// the pop price.
async fn streams(world: &World, charged: &mut Ledger) {
    use stoka::cli::{Client, ClientOptions};
    use tower_paywall::client::FileCumulativeStore;
    use tower_paywall::sandbox::ChannelParams;
    use tower_paywall::store::ChannelId;
    const POP: i128 = 100;
    let sandbox = &world.stack.sandbox;
    let owner = world.wallet(1);
    let pay_to = world.pay_to();
    let channel = sandbox
        .deploy_channel(ChannelParams {
            token: sandbox.usdc(),
            from: owner,
            commitment_key: owner.public_key(),
            to: pay_to,
            amount: 1_000_000,
            refund_waiting_period: 1_000,
        })
        .await
        .unwrap();
    let channel_id = ChannelId::try_from(channel).unwrap();
    let store = world.storage.channel_store();
    // A directory of this suite's own (the suites on both back ends run at once, with the
    // same deterministic channel).
    let port = world.url.rsplit(':').next().unwrap();
    let dir = std::env::temp_dir().join(format!("stoka-tail-{}-{port}", std::process::id()));
    let options = ClientOptions {
        url: world.url.clone(),
        secret: owner.secret_seed(),
        rpc_url: world.stack.rpc.http_url(),
        max_per_payment: 1_000_000,
        prefer: Vec::new(),
        channel: Some(channel.to_string()),
        channel_store: dir.clone(),
    };
    let tail = Client::connect(&options).await.unwrap();
    let sender = world.payer(0, Intent::X402_EXACT);
    let to = owner.address().to_string();
    let push = |body: String| {
        sender
            .post(world.url(&format!("/v1/queue/{to}/live/push")))
            .body(body)
            .send()
    };
    // What the channel has spent once it settles on `expected` (credit comes back after a
    // stream ends), or what it is after two seconds.
    let spent = |expected: i128| {
        let store = store.clone();
        async move {
            let mut now = None;
            for _ in 0..200 {
                now = store.load(channel_id).await.unwrap().map(|s| s.spent());
                if now == Some(expected) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            now
        }
    };

    // `stoka tail live --count 3`: messages pushed after it started, as they arrive.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let tailing = tokio::spawn(async move {
        tail.tail("live", Some(3), |message| tx.send(message).unwrap())
            .await
            .unwrap()
    });
    for n in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let (amount, _) = paid(push(format!("live {n}")).await.unwrap()).await;
        charged.charged[0] += amount;
        let message = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("delivered as it arrives")
            .unwrap();
        assert_eq!(message["body"], STANDARD_B64.encode(format!("live {n}")));
        assert_eq!(
            message["attributes"]["from_pubkey"],
            world.wallet(0).address().to_string()
        );
        let ack = world
            .http
            .post(world.url(&format!(
                "/v1/queue/live/ack/{}",
                message["receipt"].as_str().unwrap()
            )))
            .header(
                "authorization",
                world.authorization(1, "queue-ack", true).await,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(ack.status(), 204);
    }
    let paid_ahead = tailing.await.unwrap();
    assert_eq!(
        paid_ahead,
        3 * POP,
        "the opening voucher, for the three messages asked"
    );
    assert_eq!(
        spent(3 * POP).await,
        Some(3 * POP),
        "three messages, each charged once"
    );
    charged.charged[1] += 3 * POP;

    // A POST to the stream only pays it ahead: one with a body is refused before any 402.
    let bodied = world
        .http
        .post(world.url("/v1/queue/live/stream"))
        .body("open me")
        .send()
        .await
        .unwrap();
    assert_eq!(bodied.status(), 405);
    assert_eq!(json(bodied).await["error"], "method_not_allowed");

    // The same route over a WebSocket, from the same channel (its amounts in the same file).
    let cumulative = FileCumulativeStore::open(dir.join(format!("{channel}.json"))).unwrap();
    let client =
        PayingClient::builder(owner.clone(), Arc::new(sandbox.clone()), Network::testnet())
            .channel(&world.url, channel, owner.clone())
            .cumulative_store(Arc::new(cumulative))
            .build()
            .unwrap();
    let mut socket = client
        .get(world.url("/v1/queue/live/stream"))
        .header("payment-channel", channel.to_string())
        .send_socket()
        .await
        .unwrap();
    for n in 3..5 {
        let (amount, _) = paid(push(format!("live {n}")).await.unwrap()).await;
        charged.charged[0] += amount;
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("delivered as it arrives")
            .unwrap()
            .unwrap();
        let message: Value = serde_json::from_str(&message).unwrap();
        assert_eq!(message["body"], STANDARD_B64.encode(format!("live {n}")));
    }
    drop(socket);
    assert_eq!(
        spent(5 * POP).await,
        Some(5 * POP),
        "two more, each charged once"
    );
    charged.charged[1] += 2 * POP;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The usage counters add up to what each wallet was charged.
async fn usage_adds_up(world: &World, charged: &Ledger) {
    for n in 0..3 {
        let authorization = world.authorization(n, "me-usage", true).await;
        let response = world
            .http
            .get(world.url("/v1/me/usage?days=2"))
            .header("authorization", authorization)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let usage = json(response).await;
        assert_eq!(usage["days"].as_array().unwrap().len(), 2);
        assert_eq!(
            usage["totals"]["charged_atomic"].as_i64().unwrap() as i128,
            charged.charged[n],
            "wallet {n}: {usage}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_on_redb() {
    let dir = support::temp_dir("http-redb");
    let storage = Arc::new(RedbStorage::open(dir.join("stoka.redb")).unwrap());
    let world = world(storage, true, &dir).await;
    suite(&world).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_on_redis() {
    for (label, url) in test_deployments() {
        eprintln!("the service on the Redis {label}");
        let dir = support::temp_dir(&format!("http-redis-{label}"));
        let namespace = test_namespace("stoka-http");
        let storage = Arc::new(RedisStorage::connect(&url, &namespace).await.unwrap());
        let world = world(storage, false, &dir).await;
        suite(&world).await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A store (redb or Redis) with faults on cue: blobs all expire the moment a handler has
/// checked its blob (the `blob_size` call numbered `expire_at_size_check`, counting from 0; the
/// pricing hook makes the first), or the next `failing_puts` writes of a blob fail. Everything
/// else is the inner store's.
struct Faulty {
    inner: Arc<dyn Storage>,
    clock: ManualClock,
    expire_at_size_check: Option<usize>,
    size_checks: AtomicUsize,
    failing_puts: AtomicUsize,
}

impl Faulty {
    fn new(inner: Arc<dyn Storage>, clock: &ManualClock) -> Faulty {
        Faulty {
            inner,
            clock: clock.clone(),
            expire_at_size_check: None,
            size_checks: AtomicUsize::new(0),
            failing_puts: AtomicUsize::new(0),
        }
    }
}

impl Storage for Faulty {
    fn put_blob<'a>(
        &'a self,
        owner: &'a str,
        key: &'a str,
        body: &'a [u8],
        expires_at: u64,
        mode: PutMode,
        now: u64,
    ) -> BoxFuture<'a, Result<Put, StorageError>> {
        let fail = self
            .failing_puts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok();
        if fail {
            return Box::pin(async { Err(StorageError::Backend("a fault on cue".into())) });
        }
        self.inner.put_blob(owner, key, body, expires_at, mode, now)
    }
    fn get_blob<'a>(
        &'a self,
        owner: &'a str,
        key: &'a str,
        now: u64,
    ) -> BoxFuture<'a, Result<Option<Blob>, StorageError>> {
        self.inner.get_blob(owner, key, now)
    }
    fn blob_size<'a>(
        &'a self,
        owner: &'a str,
        key: &'a str,
        now: u64,
    ) -> BoxFuture<'a, Result<Option<u64>, StorageError>> {
        Box::pin(async move {
            let size = self.inner.blob_size(owner, key, now).await;
            let checks = self.size_checks.fetch_add(1, Ordering::SeqCst);
            if Some(checks) == self.expire_at_size_check {
                // The handler has seen the blob; it expires before the money moves.
                self.clock.advance(31_536_000_000);
            }
            size
        })
    }
    fn delete_blob<'a>(
        &'a self,
        owner: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<bool, StorageError>> {
        self.inner.delete_blob(owner, key)
    }
    fn push<'a>(
        &'a self,
        to: &'a str,
        topic: &'a str,
        message: NewMessage<'a>,
    ) -> BoxFuture<'a, Result<String, StorageError>> {
        self.inner.push(to, topic, message)
    }
    fn pop<'a>(
        &'a self,
        owner: &'a str,
        topic: &'a str,
        now: u64,
        options: PopOptions,
    ) -> BoxFuture<'a, Result<Option<Delivery>, StorageError>> {
        self.inner.pop(owner, topic, now, options)
    }
    fn ack<'a>(
        &'a self,
        owner: &'a str,
        topic: &'a str,
        receipt: &'a str,
        now: u64,
    ) -> BoxFuture<'a, Result<Ack, StorageError>> {
        self.inner.ack(owner, topic, receipt, now)
    }
    fn dead_letters<'a>(
        &'a self,
        owner: &'a str,
        topic: &'a str,
        now: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>, StorageError>> {
        self.inner.dead_letters(owner, topic, now, limit)
    }
    fn add_usage<'a>(
        &'a self,
        wallet: &'a str,
        day: u32,
        delta: Usage,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        self.inner.add_usage(wallet, day, delta)
    }
    fn usage<'a>(
        &'a self,
        wallet: &'a str,
        from: u32,
        to: u32,
    ) -> BoxFuture<'a, Result<Vec<(u32, Usage)>, StorageError>> {
        self.inner.usage(wallet, from, to)
    }
    fn issue_challenge<'a>(
        &'a self,
        id: &'a str,
        challenge: &'a Challenge,
        now: u64,
    ) -> BoxFuture<'a, Result<bool, StorageError>> {
        self.inner.issue_challenge(id, challenge, now)
    }
    fn take_challenge<'a>(
        &'a self,
        id: &'a str,
        now: u64,
    ) -> BoxFuture<'a, Result<Option<Challenge>, StorageError>> {
        self.inner.take_challenge(id, now)
    }
    fn set_email<'a>(
        &'a self,
        wallet: &'a str,
        email: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        self.inner.set_email(wallet, email)
    }
    fn email<'a>(&'a self, wallet: &'a str) -> BoxFuture<'a, Result<Option<String>, StorageError>> {
        self.inner.email(wallet)
    }
    fn sweep_expired(&self, now: u64, limit: usize) -> BoxFuture<'_, Result<usize, StorageError>> {
        self.inner.sweep_expired(now, limit)
    }
    fn payment_backend(&self) -> Arc<dyn PaymentBackend> {
        self.inner.payment_backend()
    }
    fn channel_store(&self) -> Arc<dyn ChannelStore> {
        self.inner.channel_store()
    }

    fn leases(&self) -> Arc<dyn tower_paywall::store::Leases> {
        self.inner.leases()
    }
}

/// Once the money has moved, the write happens: an `update` whose blob expired during the
/// settlement writes the blob anew (200, charged once) instead of keeping the money with a 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_whose_blob_expires_during_settlement_still_writes() {
    let dir = support::temp_dir("http-expiring");
    let inner = Arc::new(RedbStorage::open(dir.join("stoka.redb")).unwrap());
    // The stack's clock is made first, so the store can move it.
    let clock = ManualClock::new(SystemClock.now());
    let storage = Arc::new(Faulty {
        expire_at_size_check: Some(1),
        ..Faulty::new(inner, &clock)
    });
    let stack = support::start_with_clock(storage.clone(), &dir, 1, clock).await;
    let (sandbox, payer) = (&stack.dev.sandbox, stack.dev.wallets[0].address());
    let wallet = stack.dev.wallets[0].address().to_string();
    // The blob belongs to the paying wallet: write it as that wallet.
    let now = stack.clock.now();
    let put = storage
        .inner
        .put_blob(&wallet, "k", b"old", now + 3_600_000, PutMode::Create, now);
    assert_eq!(put.await.unwrap(), Put::Created);

    let before = sandbox.balance(&sandbox.usdc(), &payer).await.unwrap();
    let response = stack
        .payer(0, Intent::X402_EXACT)
        .put(format!("{}/v1/object/k", stack.url))
        .header("x-stoka-ttl-seconds", "3600")
        .body("new")
        .send()
        .await
        .unwrap();
    let (amount, body) = paid(response).await;
    assert_eq!(amount, i128::from(Rates::default().store(3, 3600)));
    assert_eq!(body["charged_atomic"], amount as u64);
    let after = sandbox.balance(&sandbox.usdc(), &payer).await.unwrap();
    assert_eq!(after, before - amount, "charged once");
    let blob = storage
        .inner
        .get_blob(&wallet, "k", stack.clock.now())
        .await
        .unwrap();
    assert_eq!(blob.map(|blob| blob.body), Some(b"new".to_vec()));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Serves `router` on a free loopback port; its URL.
async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

/// The last `PAYMENT-SIGNATURE` a client sent to a router.
type Sent = Arc<std::sync::Mutex<Option<http::HeaderValue>>>;

/// Serves `router`, recording the payment each request carries; its URL and the record.
async fn serve_recording(router: axum::Router) -> (String, Sent) {
    let sent: Sent = Arc::default();
    let record = {
        let sent = sent.clone();
        axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                if let Some(payment) = request.headers().get("payment-signature") {
                    *sent.lock().unwrap() = Some(payment.clone());
                }
                next.run(request)
            },
        )
    };
    (serve(router.layer(record)).await, sent)
}

/// Payments live in the store, not in a node. A store whose write fails after the money moved
/// answers 503 ("retry with the same payment"); the retry goes to another node over the same
/// store, which finishes the write without settling again (one charge on the ledger); the first
/// node then answers the same payment with the other's recorded answer. With payments kept in
/// each node's memory, the second node would refuse the spent payment with a 402.
async fn payments_are_shared_by_nodes(one: Arc<dyn Storage>, other: Arc<dyn Storage>, name: &str) {
    let dir = support::temp_dir(name);
    let clock = ManualClock::new(SystemClock.now());
    let faulty = Arc::new(Faulty::new(one, &clock));
    faulty.failing_puts.store(1, Ordering::SeqCst);
    let stack = support::start_with_clock(faulty.clone(), &dir, 1, clock.clone()).await;
    let dev = &stack.dev;
    // The first node, recording the payment its client sends.
    let (first, sent) = serve_recording(dev.server.router.clone()).await;
    let node = stoka::server::build(&dev.config, other, Arc::new(clock.clone()), &dev.ledger)
        .await
        .unwrap();
    let second = serve(node.router.clone()).await;

    let payer = dev.wallets[0].address();
    let balance = || async {
        dev.sandbox
            .balance(&dev.sandbox.usdc(), &payer)
            .await
            .unwrap()
    };
    let before = balance().await;
    let client = PayingClient::builder(
        dev.wallets[0].clone(),
        Arc::new(dev.sandbox.clone()),
        Network::testnet(),
    )
    .policy(
        Policy::default()
            .prefer([Intent::X402_EXACT])
            .max_per_payment(10_000_000),
    )
    .retries(0)
    .build()
    .unwrap();
    let response = client
        .post(format!("{first}/v1/store"))
        .header("x-stoka-key", "shared")
        .body("paid once")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(json(response).await["error"], "storage_unavailable");
    let price = i128::from(Rates::default().store(9, Limits::default().default_ttl_seconds));
    assert_eq!(balance().await, before - price, "the money moved");

    let payment = sent.lock().unwrap().clone().expect("the client paid");
    let again = |url: String| {
        reqwest::Client::new()
            .post(format!("{url}/v1/store"))
            .header("x-stoka-key", "shared")
            .header("payment-signature", payment.clone())
            .body("paid once")
            .send()
    };
    let answer = again(second).await.unwrap();
    let settled = answer.headers().contains_key("payment-response");
    let (status, answer) = (answer.status(), answer.text().await.unwrap());
    assert_eq!(status, 200, "{answer}");
    assert!(settled, "the answer carries the settlement");
    let body: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(body["charged_atomic"], price as u64);
    let replay = again(first).await.unwrap();
    assert_eq!(replay.status(), 200);
    assert_eq!(replay.text().await.unwrap(), answer, "the recorded answer");
    assert_eq!(balance().await, before - price, "charged once");
    let blob = faulty
        .inner
        .get_blob(&payer.to_string(), "shared", clock.now())
        .await
        .unwrap();
    assert_eq!(blob.map(|blob| blob.body), Some(b"paid once".to_vec()));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_are_shared_by_nodes_on_redb() {
    let dir = support::temp_dir("http-nodes-redb-file");
    // One file, one process: the two nodes share the store handle.
    let storage: Arc<dyn Storage> = Arc::new(RedbStorage::open(dir.join("shared.redb")).unwrap());
    payments_are_shared_by_nodes(storage.clone(), storage, "http-nodes-redb").await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_are_shared_by_nodes_on_redis() {
    for (label, url) in test_deployments() {
        eprintln!("two nodes on the Redis {label}");
        let namespace = test_namespace("stoka-nodes");
        // Two connections: two nodes.
        let one = Arc::new(RedisStorage::connect(&url, &namespace).await.unwrap());
        let other = Arc::new(RedisStorage::connect(&url, &namespace).await.unwrap());
        payments_are_shared_by_nodes(one, other, &format!("http-nodes-redis-{label}")).await;
    }
}

/// A payment answers only the request that made it. The header of a completed store, sent with
/// another key, once stored the first key's JSON under the new request (and stored nothing);
/// the header of a retrieve, sent for another blob, answered the first blob's bytes. Now each
/// is 409 `payment_already_used`, and the same request still gets its recorded answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_used_payment_answers_only_its_own_request() {
    let dir = support::temp_dir("http-bound");
    let storage = Arc::new(RedbStorage::open(dir.join("stoka.redb")).unwrap());
    let stack = support::start(storage.clone(), &dir, 1).await;
    let dev = &stack.dev;
    let (url, sent) = serve_recording(dev.server.router.clone()).await;
    let client = stack.payer(0, Intent::X402_EXACT);
    let wallet = dev.wallets[0].address().to_string();
    let http = reqwest::Client::new();
    let store = |key: &str, body: &'static str| {
        http.post(format!("{url}/v1/store"))
            .header("x-stoka-key", key)
            .header("x-stoka-ttl-seconds", "3600")
            .body(body)
    };
    for key in ["a", "b"] {
        let response = client
            .post(format!("{url}/v1/store"))
            .header("x-stoka-key", key)
            .header("x-stoka-ttl-seconds", "3600")
            .body("abc")
            .send()
            .await
            .unwrap();
        paid(response).await;
    }
    let stored_b = sent.lock().unwrap().clone().unwrap();
    // The payment for `b`, with another key: refused, and `c` is not stored.
    let response = store("c", "abc")
        .header("payment-signature", &stored_b)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    // The layer's own answer (unstamped, like the payment protocols' bodies).
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "payment_already_used");
    let now = stack.clock.now();
    assert!(storage.get_blob(&wallet, "c", now).await.unwrap().is_none());
    // The same request again: its recorded answer.
    let response = store("b", "abc")
        .header("payment-signature", &stored_b)
        .send()
        .await
        .unwrap();
    assert_eq!(json(response).await["key"], "b");

    // The payment of a retrieve of `a`, presented for `b` (same size, same price).
    let response = client
        .get(format!("{url}/v1/retrieve/a"))
        .header("x-stoka-owner", &wallet)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let retrieved_a = sent.lock().unwrap().clone().unwrap();
    let response = http
        .get(format!("{url}/v1/retrieve/b"))
        .header("x-stoka-owner", &wallet)
        .header("payment-signature", &retrieved_a)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    // The layer's own answer (unstamped, like the payment protocols' bodies).
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "payment_already_used");
    let _ = std::fs::remove_dir_all(&dir);
}
