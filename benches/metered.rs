//! Metered streams (pay as you stream), each figure next to its baseline in the same run:
//!
//! - `metered stream`: 1 000 SSE events, each its own frame, through axum in process: the
//!   route unpriced, then priced per event through `PaymentLayer` on a real channel (deployed
//!   on the sandbox), paid by a voucher every 100 events and every 10. The paid figures include
//!   everything a client and the server do for the stream: its opening voucher, each in-band
//!   request, each voucher signed and sent (a bodyless `POST` through the layer: verified,
//!   stored, the stream woken). Throughput in events per second.
//! - `metered stream over loopback HTTP`: 10 000 events served by axum on loopback (on a
//!   worker thread), read by a reqwest client (on the bench's thread): unpriced, then metered at a voucher per 100
//!   events, paid in band (the client answers each `payment-need-voucher`) or ahead (the
//!   client posts the next voucher, without waiting for its answer, when half of the last is
//!   drawn, so that the stream need not stop).
//! - `voucher paid ahead`: one `POST` of a voucher through the layer, next to its floor, one
//!   `verify_strict` of a commitment signature.
//!
//! Challenges are issued and opening vouchers signed outside the timing.
//!
//! `cargo bench --bench metered --features sandbox`

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderValue, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::json;
use tower::ServiceExt;
use tower_paywall::mpp::stream::{Event, NeedVoucher, Splitter, messages};
use tower_paywall::mpp::{
    Challenge, ChallengeKeys, ChallengeSecret, Credential as MppCredential, StellarChannel,
};
use tower_paywall::sandbox::{ChannelParams, Sandbox, SandboxConfig};
use tower_paywall::stellar::{Address, Keypair, Network, VerifyingKey, commitment_bytes};
use tower_paywall::store::MemoryChannelStore;
use tower_paywall::{PaymentLayer, Price, Unit};

/// Events in one stream.
const EVENTS: usize = 1_000;
/// One atomic unit an event: the deposit lasts.
const PRICE: &str = "0.0000001";

/// A body of `EVENTS` events, one frame each, as a model emits tokens.
fn events() -> Body {
    let frames = (0..EVENTS)
        .map(|n| Ok::<_, std::convert::Infallible>(Bytes::from(format!("data: token {n}\n\n"))));
    Body::from_stream(tonic::codegen::tokio_stream::iter(frames))
}

fn stream_route() -> Router {
    Router::new().route(
        "/stream",
        get(|| async { ([("content-type", "text/event-stream")], events()) }),
    )
}

struct Setup {
    runtime: tokio::runtime::Runtime,
    _sandbox: Sandbox,
    key: Keypair,
    channel: Address,
    app: Router,
    layer: PaymentLayer,
}

impl Setup {
    fn new() -> Setup {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let sandbox = Sandbox::start(SandboxConfig::default()).unwrap();
        let key = Keypair::from_seed([43; 32]);
        let (channel, layer) = runtime.block_on(async {
            let recipient = sandbox.funded_keypair().await.unwrap();
            let funder = sandbox.funded_keypair().await.unwrap();
            let channel = sandbox
                .deploy_channel(ChannelParams {
                    token: sandbox.usdc(),
                    from: &funder,
                    commitment_key: key.public_key(),
                    to: recipient.address(),
                    amount: 5_000_000_000,
                    refund_waiting_period: 200,
                })
                .await
                .unwrap();
            let secret = ChallengeSecret::new(*b"a bench secret of at least 32 bytes").unwrap();
            let scheme = StellarChannel::builder(
                Network::testnet(),
                recipient,
                Arc::new(sandbox.clone()),
                ChallengeKeys::new(secret),
                Arc::new(MemoryChannelStore::new()),
            )
            .currency(sandbox.usdc())
            .realm("bench")
            .build()
            .unwrap();
            let scheme = Arc::new(scheme);
            scheme.add_channel(channel).await.unwrap();
            let layer = PaymentLayer::builder()
                .shared_scheme(scheme)
                .price(Price::parse(PRICE).unwrap().per(Unit::Event))
                .build()
                .unwrap();
            (channel, layer)
        });
        Setup {
            runtime,
            _sandbox: sandbox,
            key,
            channel,
            app: stream_route().layer(layer.clone()),
            layer,
        }
    }

    fn credential(&self, challenge: &Challenge, amount: i128) -> HeaderValue {
        let bytes = commitment_bytes(&Network::testnet().id(), &self.channel, amount).unwrap();
        let signature = hex::encode(self.key.sign(&bytes));
        let payload =
            json!({"action": "voucher", "amount": amount.to_string(), "signature": signature});
        HeaderValue::try_from(MppCredential::new(challenge.clone(), payload).encode()).unwrap()
    }

    /// A fresh challenge, and the cumulative amount the channel holds.
    async fn challenge(&self) -> (Challenge, i128) {
        let response = self.app.clone().oneshot(get_stream(None)).await.unwrap();
        assert_eq!(response.status(), StatusCode::PAYMENT_REQUIRED);
        let challenge = Challenge::from_headers(response.headers())
            .unwrap()
            .remove(0);
        let cumulative = challenge.request_json().unwrap()["methodDetails"]["cumulativeAmount"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        (challenge, cumulative)
    }

    /// Reads a whole metered stream opened with `opening`, paying `ahead` events ahead with
    /// each voucher asked for: the events read.
    async fn read(&self, challenge: &Challenge, opening: HeaderValue, ahead: i128) -> usize {
        let response = self
            .app
            .clone()
            .oneshot(get_stream(Some(opening)))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        let mut splitter = Splitter::default();
        let mut read = 0;
        while let Some(frame) = body.frame().await {
            splitter.push(frame.unwrap().data_ref().unwrap());
            while let Some(block) = splitter.next_block().unwrap() {
                let Some(event) = Event::read(&block.raw) else {
                    continue;
                };
                match event.kind() {
                    messages::NEED_VOUCHER => {
                        let need: NeedVoucher = messages::read_event(&event.data).unwrap();
                        let amount = need.accepted_cumulative + ahead;
                        let paid = self
                            .app
                            .clone()
                            .oneshot(post_stream(self.credential(challenge, amount)))
                            .await
                            .unwrap();
                        assert_eq!(paid.status(), StatusCode::NO_CONTENT);
                    }
                    messages::RECEIPT => {}
                    _ => read += 1,
                }
            }
        }
        read
    }
}

/// Events in a stream over loopback HTTP.
const HTTP_EVENTS: usize = 10_000;

/// A body of `HTTP_EVENTS` events, one frame each.
fn http_events() -> Body {
    let frames = (0..HTTP_EVENTS)
        .map(|n| Ok::<_, std::convert::Infallible>(Bytes::from(format!("data: token {n}\n\n"))));
    Body::from_stream(tonic::codegen::tokio_stream::iter(frames))
}

/// How a metered stream over HTTP is paid.
#[derive(Clone, Copy)]
enum Paying {
    /// Not metered.
    Free,
    /// A voucher of `ahead` events for each `payment-need-voucher`.
    InBand(i128),
    /// A voucher of `ahead` events posted (not awaited) when half the last one is drawn.
    Ahead(i128),
}

impl Setup {
    /// Reads a whole stream at `url` over HTTP, paying as `paying` says: the events read.
    async fn read_http(
        &self,
        http: &reqwest::Client,
        url: &str,
        opening: Option<(&Challenge, i128)>,
        paying: Paying,
    ) -> usize {
        let mut request = http.get(url);
        let mut signed = 0;
        if let Some((challenge, amount)) = opening {
            signed = amount;
            request = request.header("authorization", self.credential(challenge, amount));
        }
        let mut response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut splitter = Splitter::default();
        let (mut read, mut since) = (0, 0);
        let mut posted = Vec::new();
        while let Some(chunk) = response.chunk().await.unwrap() {
            splitter.push(&chunk);
            while let Some(block) = splitter.next_block().unwrap() {
                if !block.raw.starts_with(b"event: payment") {
                    read += usize::from(block.dispatches);
                    since += 1;
                    if let (Paying::Ahead(ahead), Some((challenge, _))) = (paying, opening)
                        && since * 2 >= ahead
                    {
                        since = 0;
                        signed += ahead;
                        let post = http
                            .post(url)
                            .header("authorization", self.credential(challenge, signed));
                        posted.push(tokio::spawn(async move { post.send().await.map(|_| ()) }));
                    }
                    continue;
                }
                let event = Event::read(&block.raw).unwrap();
                if event.kind() != messages::NEED_VOUCHER {
                    continue;
                }
                let need: NeedVoucher = messages::read_event(&event.data).unwrap();
                if signed >= need.required_cumulative {
                    continue; // paid ahead already: on its way
                }
                let (Paying::InBand(ahead) | Paying::Ahead(ahead)) = paying else {
                    panic!("a free stream asked for a voucher");
                };
                let (challenge, _) = opening.unwrap();
                signed = need.accepted_cumulative + ahead;
                since = 0;
                let paid = http
                    .post(url)
                    .header("authorization", self.credential(challenge, signed))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(paid.status(), StatusCode::NO_CONTENT);
            }
        }
        // The vouchers still on their way land before the next stream opens.
        for post in posted {
            let _ = post.await;
        }
        read
    }
}

fn over_http(c: &mut Criterion) {
    let setup = Setup::new();
    // The server on a worker thread of its own, the client on this one: a core each.
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let runtime = &setup.runtime;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let serve = |app: Router| {
        server.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}/stream", listener.local_addr().unwrap());
            // Each event goes out as it comes (no Nagle delay), as a streaming server sets.
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            tokio::spawn(async move { axum::serve(listener, app).await });
            url
        })
    };
    let route = || {
        Router::new().route(
            "/stream",
            get(|| async { ([("content-type", "text/event-stream")], http_events()) }),
        )
    };
    let bare = serve(route());
    let metered = serve(route().layer(setup.layer.clone()));
    let mut group = c.benchmark_group("metered stream over loopback HTTP");
    group.throughput(Throughput::Elements(HTTP_EVENTS as u64));
    group.sample_size(20);
    for (name, paying) in [
        ("unmetered", Paying::Free),
        (
            "metered, a voucher per 100 events, in band",
            Paying::InBand(100),
        ),
        (
            "metered, a voucher per 100 events, paid ahead",
            Paying::Ahead(100),
        ),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                runtime.block_on(async {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iterations {
                        let (url, opening) = match paying {
                            Paying::Free => (&bare, None),
                            Paying::InBand(ahead) | Paying::Ahead(ahead) => {
                                let (challenge, cumulative) = setup.challenge().await;
                                (&metered, Some((challenge, cumulative + ahead)))
                            }
                        };
                        let opening = opening.as_ref().map(|(c, amount)| (c, *amount));
                        let started = Instant::now();
                        let read = setup.read_http(&http, url, opening, paying).await;
                        spent += started.elapsed();
                        assert_eq!(read, HTTP_EVENTS);
                    }
                    spent
                })
            })
        });
    }
    group.finish();
}

fn get_stream(authorization: Option<HeaderValue>) -> Request<Body> {
    let mut request = Request::get("/stream").header("host", "bench.example");
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    request.body(Body::empty()).unwrap()
}

fn post_stream(authorization: HeaderValue) -> Request<Body> {
    Request::post("/stream")
        .header("host", "bench.example")
        .header("authorization", authorization)
        .body(Body::empty())
        .unwrap()
}

fn metered(c: &mut Criterion) {
    let setup = Setup::new();
    let bare = stream_route();
    let mut group = c.benchmark_group("metered stream");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.bench_function("unmetered", |b| {
        b.to_async(&setup.runtime).iter(|| async {
            let response = bare.clone().oneshot(get_stream(None)).await.unwrap();
            let mut body = response.into_body();
            let mut frames = 0;
            while let Some(frame) = body.frame().await {
                frames += usize::from(frame.unwrap().is_data());
            }
            assert_eq!(frames, EVENTS);
        })
    });
    for ahead in [100_i128, 10] {
        let name = format!("metered, a voucher per {ahead} events");
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                setup.runtime.block_on(async {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iterations {
                        let (challenge, cumulative) = setup.challenge().await;
                        let opening = setup.credential(&challenge, cumulative + ahead);
                        let started = Instant::now();
                        let read = setup.read(&challenge, opening, ahead).await;
                        spent += started.elapsed();
                        assert_eq!(read, EVENTS);
                    }
                    spent
                })
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("voucher paid ahead");
    let bytes = commitment_bytes(&Network::testnet().id(), &setup.channel, 12_345).unwrap();
    let signature = setup.key.sign(&bytes);
    let key = VerifyingKey::new(&setup.key.public_key()).unwrap();
    group.bench_function("floor: verify_strict", |b| {
        b.iter(|| assert!(key.verify(&bytes, &signature)))
    });
    group.bench_function("POST of a voucher through the layer", |b| {
        b.iter_custom(|iterations| {
            setup.runtime.block_on(async {
                let (challenge, mut cumulative) = setup.challenge().await;
                let mut spent = Duration::ZERO;
                for _ in 0..iterations {
                    cumulative += 1;
                    let credential = setup.credential(&challenge, cumulative);
                    let started = Instant::now();
                    let paid = setup
                        .app
                        .clone()
                        .oneshot(post_stream(credential))
                        .await
                        .unwrap();
                    spent += started.elapsed();
                    assert_eq!(paid.status(), StatusCode::NO_CONTENT);
                }
                spent
            })
        })
    });
    group.finish();
}

criterion_group!(benches, metered, over_http);
criterion_main!(benches);
