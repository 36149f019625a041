//! A load run of stoka on the sandbox ledger: paid `store`s of 4 KiB blobs, then paid
//! `retrieve`s, each with an x402 payment signed before the clock starts (so the figures are
//! the server's: pricing, verification, settlement through the local facilitator, storage),
//! beside a bare axum route writing the same blobs to the same kind of store without payment.
//!
//! `cargo run --release -p stoka --example load -- [requests] [facilitator accounts] [ledger ms]`
//! (defaults: 64 requests, 16 accounts, a ledger every 250 ms).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use stoka::clock::{Clock, SystemClock};
use stoka::config::Config;
use stoka::server::{Ledger, build};
use stoka::storage::{PutMode, RedbStorage, Storage};
use tower_paywall::sandbox::{Sandbox, SandboxConfig};
use tower_paywall::stellar::xdr::{Limits, WriteXdr};
use tower_paywall::stellar::{Keypair, Network, TransferOrder, prepare_transfer};
use tower_paywall::x402::{LocalFacilitator, PaymentRequired, PaymentRequirements};

const BLOB: usize = 4096;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let arg = |n: usize, default: u64| {
        std::env::args()
            .nth(n)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let (requests, accounts, ledger_ms) = (arg(1, 64) as usize, arg(2, 16), arg(3, 250));
    let sandbox =
        Sandbox::start(SandboxConfig::default().ledger_period(Duration::from_millis(ledger_ms)))?;
    let network = Network::testnet();
    let mut facilitator = LocalFacilitator::builder(
        sandbox.clone(),
        network.clone(),
        sandbox.funded_keypair().await?,
    );
    for _ in 1..accounts {
        facilitator = facilitator.channel(sandbox.funded_keypair().await?);
    }
    let pay_to = sandbox.funded_keypair().await?;
    let dir = std::env::temp_dir().join(format!("stoka-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut config = Config {
        pay_to: Some(pay_to.address().to_string()),
        ..Config::default()
    };
    config.store.path = dir.join("stoka.redb");
    let ledger = Ledger {
        network: network.clone(),
        rpc: None,
        facilitator: Some((Arc::new(facilitator.build()?), "http://in-process".into())),
    };
    let storage: Arc<dyn Storage> = Arc::new(RedbStorage::open(&config.store.path)?);
    let server = build(&config, storage, Arc::new(SystemClock), &ledger).await?;
    let url = serve(server.router).await?;
    let baseline = serve(bare(Arc::new(RedbStorage::open(dir.join("bare.redb"))?))).await?;
    let http = reqwest::Client::new();

    // Payers and their payments, signed before the clock starts.
    let mut payers = Vec::with_capacity(requests);
    for _ in 0..requests {
        payers.push(sandbox.funded_keypair().await?);
    }
    let body = Bytes::from(vec![7u8; BLOB]);
    let quote = |request: reqwest::RequestBuilder| async move {
        let response = request.send().await?;
        let header = response
            .headers()
            .get("payment-required")
            .ok_or("no 402")?
            .to_str()?
            .to_owned();
        let required: PaymentRequired = serde_json::from_slice(&STANDARD.decode(header)?)?;
        Ok::<_, Box<dyn std::error::Error>>(required.accepts[0].clone())
    };
    let store_offer = quote(
        http.post(format!("{url}/v1/store"))
            .header("x-stoka-key", "k")
            .body(body.clone()),
    )
    .await?;
    let mut stores = Vec::with_capacity(requests);
    for payer in &payers {
        stores.push(sign(&sandbox, &network, payer, &store_offer).await?);
    }

    let started = Instant::now();
    let outcomes = fire(requests, |i| {
        http.post(format!("{url}/v1/store"))
            .header("x-stoka-key", format!("blob-{i}"))
            .header("payment-signature", &stores[i])
            .body(body.clone())
    })
    .await;
    report("paid store, 4 KiB", started.elapsed(), &outcomes);

    let retrieve_offer = quote(
        http.get(format!("{url}/v1/retrieve/blob-0"))
            .header("x-stoka-owner", payers[0].address().to_string()),
    )
    .await?;
    let mut retrieves = Vec::with_capacity(requests);
    for payer in &payers {
        retrieves.push(sign(&sandbox, &network, payer, &retrieve_offer).await?);
    }
    let started = Instant::now();
    let outcomes = fire(requests, |i| {
        http.get(format!("{url}/v1/retrieve/blob-{i}"))
            .header("payment-signature", &retrieves[i])
    })
    .await;
    report("paid retrieve, 4 KiB", started.elapsed(), &outcomes);

    let started = Instant::now();
    let outcomes = fire(requests, |i| {
        http.post(format!("{baseline}/store/{i}"))
            .body(body.clone())
    })
    .await;
    report(
        "bare axum store into redb, 4 KiB (no payment)",
        started.elapsed(),
        &outcomes,
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// An x402 `PAYMENT-SIGNATURE` by `payer` for `offer`.
async fn sign(
    sandbox: &Sandbox,
    network: &Network,
    payer: &Keypair,
    offer: &PaymentRequirements,
) -> Result<String, Box<dyn std::error::Error>> {
    let order = TransferOrder::sponsored(
        offer.asset.parse()?,
        offer.pay_to.parse()?,
        offer.amount.parse()?,
        u32::try_from(offer.max_timeout_seconds.div_ceil(5))?,
    );
    let envelope = prepare_transfer(sandbox, network, payer, &order).await?;
    let payload = serde_json::json!({
        "x402Version": 2,
        "payload": { "transaction": envelope.to_xdr_base64(Limits::none())? },
        "accepted": offer,
    });
    Ok(STANDARD.encode(payload.to_string()))
}

/// Sends every request at once; each one's status and latency.
async fn fire(
    requests: usize,
    request: impl Fn(usize) -> reqwest::RequestBuilder,
) -> Vec<(u16, Duration)> {
    let mut set = tokio::task::JoinSet::new();
    for i in 0..requests {
        let request = request(i);
        set.spawn(async move {
            let started = Instant::now();
            let status = request.send().await.map_or(0, |r| r.status().as_u16());
            (status, started.elapsed())
        });
    }
    let mut outcomes = Vec::with_capacity(requests);
    while let Some(outcome) = set.join_next().await {
        outcomes.push(outcome.unwrap_or((0, Duration::ZERO)));
    }
    outcomes
}

fn report(name: &str, elapsed: Duration, outcomes: &[(u16, Duration)]) {
    let ok = outcomes.iter().filter(|(status, _)| *status == 200).count();
    let mut latencies: Vec<Duration> = outcomes.iter().map(|(_, latency)| *latency).collect();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    let mut others = std::collections::BTreeMap::new();
    for (status, _) in outcomes.iter().filter(|(status, _)| *status != 200) {
        *others.entry(*status).or_insert(0) += 1;
    }
    println!(
        "{name}: {ok}/{} answered 200 in {elapsed:.2?} ({:.1}/s); latency p50 {:.0?}, p90 {:.0?}, max {:.0?}; other statuses {others:?}",
        outcomes.len(),
        ok as f64 / elapsed.as_secs_f64(),
        at(0.5),
        at(0.9),
        at(1.0),
    );
}

async fn serve(router: Router) -> std::io::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(url)
}

/// The baseline: the same write to the same kind of store, with no payment layer.
fn bare(storage: Arc<dyn Storage>) -> Router {
    Router::new()
        .route(
            "/store/{key}",
            post(
                |State(storage): State<Arc<dyn Storage>>,
                 axum::extract::Path(key): axum::extract::Path<String>,
                 body: Bytes| async move {
                    let now = SystemClock.now();
                    let owner = "GBASELINE";
                    match storage
                        .put_blob(owner, &key, &body, now + 3_600_000, PutMode::Create, now)
                        .await
                    {
                        Ok(_) => http::StatusCode::OK,
                        Err(_) => http::StatusCode::INTERNAL_SERVER_ERROR,
                    }
                },
            ),
        )
        .with_state(storage)
}
