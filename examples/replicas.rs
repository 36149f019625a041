//! Three replicas of one paid API behind a load balancer, sharing payments through one Redis
//! (a server or a Redis Cluster), on the sandbox ledger.
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example replicas --features sandbox,redis,client
//! REDIS_URL=redis+cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002 cargo run …
//! ```
//!
//! Each replica runs its own `PaymentLayer` over `RedisStore::payment_store()`, and its own
//! `LocalFacilitator` over one pool of source accounts shared through `RedisStore::leases()`.
//! A client pays on one replica and its retry, as a load balancer would, lands on another: the
//! other answers with the recorded response, and the ledger moves once. Then 30 payments go
//! round robin, each retried on the next replica.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tower_paywall::client::x402_payment;
use tower_paywall::sandbox::{Sandbox, SandboxConfig};
use tower_paywall::stellar::{Keypair, Network};
use tower_paywall::store::redis::RedisStore;
use tower_paywall::x402::{Exact, LocalFacilitator, PaymentRequired, header};
use tower_paywall::{PaymentLayer, Price};

const REPLICAS: usize = 3;
const PRICE: &str = "0.01";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let namespace = format!("replicas-example-{}", std::process::id());
    let redis = RedisStore::connect(&url, &namespace).await?;
    println!(
        "Redis at {url} ({}), namespace {namespace}",
        if redis.is_cluster() {
            "cluster"
        } else {
            "one server"
        }
    );

    let sandbox =
        Sandbox::start(SandboxConfig::default().ledger_period(Duration::from_millis(500)))?;
    let pay_to = sandbox.funded_keypair().await?.address();
    let mut accounts: Vec<Keypair> = Vec::new();
    for _ in 0..4 {
        accounts.push(sandbox.funded_keypair().await?);
    }

    // The replicas: each its own layer and facilitator, all over the same Redis.
    let mut addresses = Vec::new();
    for replica in 0..REPLICAS {
        let mut facilitator =
            LocalFacilitator::builder(sandbox.clone(), Network::testnet(), accounts[0].clone())
                .leases(Arc::new(redis.leases()));
        for account in &accounts[1..] {
            facilitator = facilitator.channel(account.clone());
        }
        let exact = Exact::builder(Network::testnet(), pay_to, facilitator.build()?).build()?;
        let layer = PaymentLayer::builder()
            .scheme(exact)
            .price(Price::parse(PRICE)?)
            .store(redis.payment_store())
            .build()?;
        let served = Arc::new(AtomicU64::new(0));
        let app = Router::new()
            .route(
                "/report",
                get(move || async move {
                    let n = served.fetch_add(1, Ordering::Relaxed) + 1;
                    format!("report #{n} of replica {replica}")
                }),
            )
            .layer(layer);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        addresses.push(format!("http://{}/report", listener.local_addr()?));
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    println!("replicas: {}", addresses.join(", "));

    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let payer = sandbox.funded_keypair().await?;
    let before = sandbox.balance(&sandbox.usdc(), &pay_to).await?;
    let payments = 31;
    for n in 0..payments {
        // The 402 of the replica the balancer picked, and a payment for it.
        let first = &addresses[n % REPLICAS];
        let answer = http.get(first).send().await?;
        let required: PaymentRequired = header::decode(
            answer
                .headers()
                .get("payment-required")
                .ok_or("no PAYMENT-REQUIRED")?
                .as_bytes(),
        )?;
        let payment = x402_payment(
            &sandbox,
            &Network::testnet(),
            &payer,
            &required.accepts[0],
            Some(&required.resource),
        )
        .await?;
        let signature = payment.to_str()?;
        // Paid on one replica, then retried (a lost answer) on the next one.
        let paid = http
            .get(first)
            .header("payment-signature", signature)
            .send()
            .await?;
        let paid = (paid.status(), paid.text().await?);
        let retry = http
            .get(&addresses[(n + 1) % REPLICAS])
            .header("payment-signature", signature)
            .send()
            .await?;
        let retry = (retry.status(), retry.text().await?);
        if n == 0 {
            println!("paid on replica 0:      {} {:?}", paid.0, paid.1);
            println!("same payment, replica 1: {} {:?}", retry.0, retry.1);
        }
        assert_eq!(paid.0, 200, "{paid:?}");
        assert_eq!(retry, paid, "the retry gets the recorded answer");
    }
    let moved = sandbox.balance(&sandbox.usdc(), &pay_to).await? - before;
    let price = Price::parse(PRICE)?.amount().atomic();
    println!(
        "{payments} payments, each answered by two replicas: pay_to +{moved} atomic units = {} × the price",
        moved / price
    );
    assert_eq!(
        moved,
        price * payments as i128,
        "every payment charged once"
    );
    Ok(())
}
