//! Many paid requests in flight at once: x402 `exact` payments through `PaymentLayer` and our
//! facilitator, against the sandbox ledger closing at the real network's pace (every 5 s).
//!
//! Every payment is signed before the timing (one payer, one nonce each); then all the
//! requests enter the layer at once (tower calls in process, so the memory measured is the
//! server's: the layer, the facilitator and the sandbox ledger with its history). The run
//! checks that every request is answered 200 once, with its own transaction, that the
//! recipient got exactly one price per request, and that the store holds no settlement in
//! flight; it prints the resident memory before and at the peak, per request in flight.
//!
//! ```text
//! cargo run --release --example inflight_load --features sandbox,redis,client -- [requests] [accounts] [ledger_ms]
//! ```
//! (defaults: 1000 requests, 250 source accounts, a ledger every 5000 ms). With `REDIS_URL`,
//! the layer keeps payments in Redis (`redis://…` for one server: the run also prints the
//! commands the server processed per paid request; `redis+cluster://…`); without, in memory.
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use http::{Request, StatusCode};
use tower::ServiceExt;
use tower_paywall::client::x402_payment;
use tower_paywall::sandbox::{Sandbox, SandboxConfig};
use tower_paywall::stellar::Network;
use tower_paywall::store::PaymentStore;
use tower_paywall::store::redis::RedisStore;
use tower_paywall::x402::{Exact, LocalFacilitator, PaymentRequired, header};
use tower_paywall::{MemoryStore, PaymentLayer, Price};

const PRICE: &str = "0.001";

/// The process's resident set (`VmRSS`), in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The commands a single Redis server has processed so far.
async fn commands_processed(redis: &RedisStore) -> Option<u64> {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut redis.connection())
        .await
        .ok()?;
    info.lines()
        .find_map(|line| line.strip_prefix("total_commands_processed:"))
        .and_then(|count| count.trim().parse().ok())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = |n: usize, default: u64| {
        std::env::args()
            .nth(n)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let (requests, accounts, ledger_ms) =
        (arg(1, 1000) as usize, arg(2, 250) as usize, arg(3, 5000));
    let sandbox =
        Sandbox::start(SandboxConfig::default().ledger_period(Duration::from_millis(ledger_ms)))?;
    let mut facilitator = LocalFacilitator::builder(
        sandbox.clone(),
        Network::testnet(),
        sandbox.funded_keypair().await?,
    );
    for _ in 1..accounts {
        facilitator = facilitator.channel(sandbox.funded_keypair().await?);
    }
    let pay_to = sandbox.funded_keypair().await?.address();
    let exact = Exact::builder(Network::testnet(), pay_to, facilitator.build()?).build()?;
    let redis = match std::env::var("REDIS_URL") {
        Ok(url) => {
            Some(RedisStore::connect(&url, &format!("inflight-{}", std::process::id())).await?)
        }
        Err(_) => None,
    };
    let store: Arc<dyn PaymentStore> = match &redis {
        Some(redis) => Arc::new(redis.payment_store()),
        None => Arc::new(MemoryStore::new()),
    };
    let layer = PaymentLayer::builder()
        .scheme(exact)
        .price(Price::parse(PRICE)?)
        .shared_store(store.clone())
        // The last payments wait their turn for an account: several ledgers.
        .settle_wait(Duration::from_secs(120))
        .build()?;
    let app = Router::new()
        .route("/paid", get(|| async { "paid content" }))
        .layer(layer);

    // The offer, and one payment per request from one payer (each its own nonce).
    let answer = app
        .clone()
        .oneshot(Request::get("http://example.com/paid").body(axum::body::Body::empty())?)
        .await?;
    let required: PaymentRequired =
        header::decode(answer.headers()["payment-required"].as_bytes())?;
    let payer = sandbox.funded_keypair().await?;
    let prepared = Instant::now();
    let mut payments = Vec::with_capacity(requests);
    for _ in 0..requests {
        let payment = x402_payment(
            &sandbox,
            &Network::testnet(),
            &payer,
            &required.accepts[0],
            Some(&required.resource),
        )
        .await?;
        payments.push(payment);
    }
    println!(
        "{requests} payments signed in {:.1} s; {accounts} source accounts, a ledger every {ledger_ms} ms, payments in {}",
        prepared.elapsed().as_secs_f64(),
        match &redis {
            Some(redis) if redis.is_cluster() => "a Redis Cluster",
            Some(_) => "Redis",
            None => "memory",
        }
    );

    let before = sandbox.balance(&sandbox.usdc(), &pay_to).await?;
    let commands_before = match &redis {
        Some(redis) if !redis.is_cluster() => commands_processed(redis).await,
        _ => None,
    };
    let baseline = rss_kib();
    let peak = Arc::new(AtomicU64::new(baseline));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let started = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for payment in payments {
        let app = app.clone();
        calls.spawn(async move {
            let request = Request::get("http://example.com/paid")
                .header("payment-signature", payment)
                .body(axum::body::Body::empty())
                .unwrap();
            let response = app.oneshot(request).await.unwrap();
            let settled = response
                .headers()
                .get("payment-response")
                .and_then(|value| header::decode::<serde_json::Value>(value.as_bytes()).ok())
                .and_then(|settled| settled["transaction"].as_str().map(str::to_owned));
            (response.status(), settled)
        });
    }
    let mut transactions = HashSet::new();
    let mut refused = 0;
    while let Some(call) = calls.join_next().await {
        match call? {
            (StatusCode::OK, Some(transaction)) => {
                assert!(
                    transactions.insert(transaction),
                    "a transaction answered twice"
                );
            }
            (status, _) => {
                refused += 1;
                eprintln!("answered {status}");
            }
        }
    }
    let elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    sampler.join().map_err(|_| "the memory sampler panicked")?;
    let peak = peak.load(Ordering::Relaxed);
    let moved = sandbox.balance(&sandbox.usdc(), &pay_to).await? - before;
    let price = Price::parse(PRICE)?.amount().atomic();
    println!(
        "{} of {requests} answered 200, each with its own transaction, in {:.1} s ({:.1} ledgers); pay_to +{moved} = {} × the price",
        transactions.len(),
        elapsed.as_secs_f64(),
        elapsed.as_millis() as f64 / ledger_ms as f64,
        moved / price,
    );
    println!(
        "resident memory: {} KiB before, {} KiB at the peak: {:.1} KiB per request in flight",
        baseline,
        peak,
        peak.saturating_sub(baseline) as f64 / requests as f64
    );
    if let (Some(redis), Some(before)) = (&redis, commands_before)
        && let Some(after) = commands_processed(redis).await
    {
        println!(
            "Redis: {:.2} commands per paid request ({} in all, this run's INFO included)",
            (after - before) as f64 / requests as f64,
            after - before
        );
    }
    assert_eq!(refused, 0, "every request answered 200");
    assert_eq!(transactions.len(), requests, "every request answered once");
    assert_eq!(moved, price * requests as i128, "every payment moved once");
    let pending = store.pending(requests).await?;
    assert!(
        pending.is_empty(),
        "{} settlements still pending",
        pending.len()
    );
    Ok(())
}
