//! MPP `channel` per request, next to its floor in the same run: one `verify_strict` of a
//! commitment signature by a decoded key (the scheme decodes each channel's key once).
//!
//! - `channel voucher`: reading the credential, verifying it (challenge id, expiry, pinning,
//!   payload, commitment, signature, cached deposit) and the store's compare-and-set, with the
//!   in-memory store and with the durable file store (which syncs each voucher to disk);
//! - `channel route`: a whole request through axum, the same route unpriced and paid with a
//!   voucher through `PaymentLayer` (in-memory channel store). The difference is what the
//!   voucher costs a request.
//!
//! - `channel route, paired`: the target's own figure, (paid − unpriced) ÷ floor, measured in
//!   interleaved blocks of 100 (floor, unpriced, paid) so that the machine's drift hits all
//!   three alike; printed as the median block with its quartiles. Criterion's separate figures
//!   above are taken seconds apart, and on a shared machine their ratio wanders by ±0.1.
//!
//! Every async figure is one `block_on` of a current-thread runtime, the baseline's too.
//! The channel is real: deployed and funded on the sandbox ledger, read once when added. Each
//! iteration pays with a fresh challenge and the next cumulative amount, prepared (issued and
//! signed) outside the timing.
//!
//! `cargo bench --bench channel --features sandbox`

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use criterion::{BatchSize, Criterion, criterion_group};
use http::{HeaderMap, HeaderValue, Request};
use serde_json::json;
use tower::ServiceExt;
use tower_paywall::mpp::{
    Challenge, ChallengeKeys, ChallengeSecret, Credential as MppCredential, StellarChannel,
};
use tower_paywall::sandbox::{ChannelParams, Sandbox, SandboxConfig};
use tower_paywall::scheme::{PaymentContext, SettleOutcome};
use tower_paywall::stellar::{
    Address, Keypair, Network, VerifyingKey, commitment_bytes, verify_ed25519,
};
use tower_paywall::store::{ChannelStore, FileChannelStore, MemoryChannelStore};
use tower_paywall::{MemoryStore, PaymentLayer, PaymentScheme, Price};

const PRICE: &str = "0.0001";
const PRICE_ATOMIC: i64 = 1_000;

struct Bench {
    runtime: tokio::runtime::Runtime,
    sandbox: Sandbox,
    recipient: Keypair,
    funder: Keypair,
    key: Keypair,
}

impl Bench {
    fn new() -> Bench {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let sandbox = Sandbox::start(SandboxConfig::default()).unwrap();
        let (recipient, funder) = runtime.block_on(async {
            (
                sandbox.funded_keypair().await.unwrap(),
                sandbox.funded_keypair().await.unwrap(),
            )
        });
        Bench {
            runtime,
            sandbox,
            recipient,
            funder,
            key: Keypair::from_seed([42; 32]),
        }
    }

    /// A scheme serving a fresh channel (a deposit of 300 USDC: 3 million vouchers) kept in `store`.
    fn scheme(&self, store: Arc<dyn ChannelStore>) -> (Arc<StellarChannel>, Address) {
        self.runtime.block_on(async {
            let channel = self
                .sandbox
                .deploy_channel(ChannelParams {
                    token: self.sandbox.usdc(),
                    from: &self.funder,
                    commitment_key: self.key.public_key(),
                    to: self.recipient.address(),
                    amount: 3_000_000_000,
                    refund_waiting_period: 1_000,
                })
                .await
                .unwrap();
            let scheme = StellarChannel::builder(
                Network::testnet(),
                self.recipient.clone(),
                Arc::new(self.sandbox.clone()),
                keys(),
                store,
            )
            .currency(self.sandbox.usdc())
            .realm("example.com")
            .build()
            .unwrap();
            let scheme = Arc::new(scheme);
            scheme.add_channel(channel).await.unwrap();
            (scheme, channel)
        })
    }
}

impl Bench {
    /// A payer on a fresh channel (in-memory store), and the same route unpriced and paid.
    fn routes(&self) -> (Payer, Router, Router) {
        let (scheme, channel) = self.scheme(Arc::new(MemoryChannelStore::new()));
        let payer = Payer {
            scheme: scheme.clone(),
            channel,
            key: self.key.clone(),
            cumulative: AtomicI64::new(0),
        };
        let unpriced = Router::new().route("/paid", get(|| async { "content" }));
        let paid = Router::new()
            .route("/paid", get(|| async { "content" }))
            .layer(
                PaymentLayer::builder()
                    .shared_scheme(scheme)
                    .price(Price::parse(PRICE).unwrap())
                    .build()
                    .unwrap(),
            );
        (payer, unpriced, paid)
    }
}

fn keys() -> ChallengeKeys {
    ChallengeKeys::new(ChallengeSecret::new(*b"a benchmark secret of 32 bytes..").unwrap())
}

fn request(authorization: Option<HeaderValue>) -> Request<Body> {
    let mut request = Request::builder()
        .uri("/paid")
        .header("host", "example.com");
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    request.body(Body::empty()).unwrap()
}

/// Pays the next request on `channel`: a fresh challenge and a voucher for `cumulative`.
struct Payer {
    scheme: Arc<StellarChannel>,
    channel: Address,
    key: Keypair,
    cumulative: AtomicI64,
}

impl Payer {
    async fn next(&self) -> HeaderValue {
        let price = Price::parse(PRICE).unwrap();
        let parts = request(None).into_parts().0;
        let offer = self.scheme.offer(&price, &parts).await.unwrap();
        let challenge = offer.detail::<Vec<Challenge>>().unwrap()[0].clone();
        let amount = i128::from(self.cumulative.fetch_add(PRICE_ATOMIC, Ordering::Relaxed))
            + i128::from(PRICE_ATOMIC);
        let bytes = commitment_bytes(&Network::testnet().id(), &self.channel, amount).unwrap();
        let signature: String = self
            .key
            .sign(&bytes)
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        let payload =
            json!({"action": "voucher", "amount": amount.to_string(), "signature": signature});
        HeaderValue::from_str(&MppCredential::new(challenge, payload).encode()).unwrap()
    }
}

fn voucher(c: &mut Criterion) {
    let bench = Bench::new();
    let bytes =
        commitment_bytes(&Network::testnet().id(), &Address::Contract([7; 32]), 42).unwrap();
    let signature = bench.key.sign(&bytes);
    let public = bench.key.public_key();
    let dir = std::env::temp_dir().join(format!("tower-paywall-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let stores: [(&str, Arc<dyn ChannelStore>); 2] = [
        ("memory", Arc::new(MemoryChannelStore::new())),
        (
            "durable file",
            Arc::new(FileChannelStore::open(&dir).unwrap()),
        ),
    ];

    let mut group = c.benchmark_group("channel voucher");
    let key = VerifyingKey::new(&public).unwrap();
    group.bench_function("floor: verify_strict of a commitment signature", |b| {
        b.iter(|| assert!(key.verify(std::hint::black_box(&bytes), &signature)))
    });
    group.bench_function("verify_strict with the key decoded each time", |b| {
        b.iter(|| {
            assert!(verify_ed25519(
                std::hint::black_box(&public),
                std::hint::black_box(&bytes),
                &signature
            ))
        })
    });
    for (name, store) in stores {
        let (scheme, channel) = bench.scheme(store);
        let payer = Payer {
            scheme: scheme.clone(),
            channel,
            key: bench.key.clone(),
            cumulative: AtomicI64::new(0),
        };
        let price = Price::parse(PRICE).unwrap();
        let payments = MemoryStore::new();
        let parts = request(None).into_parts().0;
        group.bench_function(format!("read + verify + compare-and-set ({name})"), |b| {
            b.iter_batched(
                || {
                    let mut headers = HeaderMap::new();
                    headers.insert("authorization", bench.runtime.block_on(payer.next()));
                    headers
                },
                |headers| {
                    let scheme = scheme.clone();
                    let (parts, price, payments) = (&parts, &price, &payments);
                    bench.runtime.block_on(async move {
                        let credential = scheme.read(&headers).unwrap().unwrap();
                        let context = PaymentContext {
                            request: parts,
                            price,
                            store: payments,
                        };
                        let verified = scheme.verify(&credential, context).await.unwrap();
                        let outcome = scheme
                            .clone()
                            .settle(Arc::new(verified), Arc::new(MemoryStore::new()))
                            .await;
                        assert!(matches!(outcome, SettleOutcome::Settled(_)), "{outcome:?}");
                    })
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

fn route(c: &mut Criterion) {
    let bench = Bench::new();
    let (payer, unpriced, paid) = bench.routes();
    let mut group = c.benchmark_group("channel route");
    // Both run the same way: a request built outside the timing, then one `block_on`.
    group.bench_function("the route unpriced", |b| {
        b.iter_batched(
            || request(None),
            |request| {
                let response = bench.runtime.block_on(unpriced.clone().oneshot(request));
                assert_eq!(response.unwrap().status(), 200);
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("the route paid with a voucher", |b| {
        b.iter_batched(
            || request(Some(bench.runtime.block_on(payer.next()))),
            |request| {
                let response = bench.runtime.block_on(paid.clone().oneshot(request));
                assert_eq!(response.unwrap().status(), 200);
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// (paid − unpriced) ÷ floor per block of interleaved runs; the median and quartiles.
fn paired() {
    // `cargo bench` passes `--bench`; anything else (`cargo test --benches`) is a smoke run.
    let blocks = if std::env::args().any(|arg| arg == "--bench") {
        200
    } else {
        2
    };
    const BLOCK: usize = 100;
    let bench = Bench::new();
    let (payer, unpriced, paid) = bench.routes();
    let bytes =
        commitment_bytes(&Network::testnet().id(), &Address::Contract([7; 32]), 42).unwrap();
    let signature = bench.key.sign(&bytes);
    let key = VerifyingKey::new(&bench.key.public_key()).unwrap();
    let serve = |router: &Router, requests: Vec<Request<Body>>| {
        let start = Instant::now();
        for request in requests {
            let response = bench.runtime.block_on(router.clone().oneshot(request));
            assert_eq!(response.unwrap().status(), 200);
        }
        start.elapsed().as_secs_f64()
    };
    let mut ratios = Vec::with_capacity(blocks);
    let mut floors = Vec::with_capacity(blocks);
    for _ in 0..blocks {
        let vouchers: Vec<_> = (0..BLOCK)
            .map(|_| request(Some(bench.runtime.block_on(payer.next()))))
            .collect();
        let start = Instant::now();
        for _ in 0..BLOCK {
            assert!(key.verify(std::hint::black_box(&bytes), &signature));
        }
        let floor = start.elapsed().as_secs_f64();
        let plain = serve(&unpriced, (0..BLOCK).map(|_| request(None)).collect());
        let voucher = serve(&paid, vouchers);
        ratios.push((voucher - plain) / floor);
        floors.push(floor / BLOCK as f64 * 1e6);
    }
    ratios.sort_by(f64::total_cmp);
    floors.sort_by(f64::total_cmp);
    let at = |quantile: usize| ratios[(ratios.len() - 1) * quantile / 4];
    println!(
        "channel route, paired: (paid - unpriced) / floor = {:.3} (quartiles {:.3}..{:.3}), \
         {blocks} blocks of {BLOCK}, median floor {:.2} µs",
        at(2),
        at(1),
        at(3),
        floors[floors.len() / 2]
    );
}

criterion_group!(benches, voucher, route);

fn main() {
    benches();
    paired();
    Criterion::default().configure_from_args().final_summary();
}
