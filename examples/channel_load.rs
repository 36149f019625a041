//! A load run of MPP `channel` over HTTP on loopback: one route served unpriced (`/free`) and
//! the same route paid with vouchers through `PaymentLayer` (`/paid`), each hammered by the same
//! concurrent clients, one payment channel per client (deployed and funded on the sandbox
//! ledger). Challenges are fetched and vouchers signed before the timing, as a client that
//! signs ahead would; the timed phase is the paid requests only.
//!
//! Prints requests per second and the process's CPU time per request (server and clients
//! together; clients do the same work in both phases), the difference, and the same run's
//! floor: one `verify_strict` of a commitment signature.
//!
//! `cargo run --release --example channel_load --features sandbox -- [clients] [requests per client]`
//! (defaults: 8 clients, 1000 requests each).
//!
//! With the `redis` feature and `REDIS_URL` set (one server or `redis+cluster://…`), it then
//! runs the paid route on replicas sharing that Redis (payments, channel states, leases): on one
//! node, then on three (each client's requests round robin over the nodes), on fresh channels,
//! and prints both rates and their ratio, same run. The replicas share this process's two
//! worker threads: the ratio shows what sharing the store costs, not how nodes on their own
//! machines scale.
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use tower_paywall::mpp::{
    Challenge, ChallengeKeys, ChallengeSecret, Credential as MppCredential, StellarChannel,
};
use tower_paywall::sandbox::{ChannelParams, Sandbox, SandboxConfig};
use tower_paywall::stellar::{Address, Keypair, Network, VerifyingKey, commitment_bytes};
use tower_paywall::store::{ChannelId, MemoryChannelStore};
use tower_paywall::{PaymentLayer, Price};

const PRICE: &str = "0.0001";
const PRICE_ATOMIC: i128 = 1_000;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = |n: usize, default: usize| {
        std::env::args()
            .nth(n)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let (clients, requests) = (arg(1, 8), arg(2, 1000));

    let sandbox = Sandbox::start(SandboxConfig::default().auto_close(false))?;
    let recipient = sandbox.funded_keypair().await?;
    let funder = sandbox.funded_keypair().await?;
    let key = Keypair::from_seed([42; 32]);
    let scheme = StellarChannel::builder(
        Network::testnet(),
        recipient.clone(),
        Arc::new(sandbox.clone()),
        ChallengeKeys::new(ChallengeSecret::new(*b"a load-run secret of 32 bytes...")?),
        Arc::new(MemoryChannelStore::new()),
    )
    .currency(sandbox.usdc())
    .realm("127.0.0.1")
    .build()?;
    let scheme = Arc::new(scheme);
    let mut channels = Vec::with_capacity(clients);
    for _ in 0..clients {
        let channel = sandbox
            .deploy_channel(ChannelParams {
                token: sandbox.usdc(),
                from: &funder,
                commitment_key: key.public_key(),
                to: recipient.address(),
                amount: PRICE_ATOMIC * (requests as i128 + 1),
                refund_waiting_period: 1_000,
            })
            .await?;
        scheme.add_channel(channel).await?;
        channels.push(channel);
    }
    let layer = PaymentLayer::builder()
        .shared_scheme(scheme.clone())
        .price(Price::parse(PRICE)?)
        .build()?;
    let app = Router::new()
        .route("/free", get(|| async { "content" }))
        .merge(
            Router::new()
                .route("/paid", get(|| async { "content" }))
                .layer(layer),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    // Plain HTTP on loopback; reqwest still wants a TLS provider to build.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let prepared = prepare(
        &http,
        std::slice::from_ref(&base),
        &channels,
        &key,
        requests,
    )
    .await?;

    let free = run(
        &http,
        std::slice::from_ref(&base),
        "/free",
        vec![vec![None; requests]; clients],
    )
    .await?;
    let paid = run(&http, std::slice::from_ref(&base), "/paid", prepared).await?;
    for channel in &channels {
        let state = scheme.state(ChannelId::try_from(*channel)?).await?;
        assert_eq!(
            state.cumulative,
            PRICE_ATOMIC * requests as i128,
            "every voucher credited once"
        );
    }

    let floor = verify_floor(&key);
    let total = (clients * requests) as f64;
    let per = |phase: &Phase| phase.cpu.as_secs_f64() * 1e6 / total;
    println!(
        "{clients} clients × {requests} requests, 2 worker threads, HTTP/1.1 keep-alive on loopback"
    );
    for (name, phase) in [("/free (unpriced)", &free), ("/paid (vouchers)", &paid)] {
        println!(
            "{name:<18} {:>8.0} requests/s  {:>6.1} µs CPU/request",
            total / phase.wall.as_secs_f64(),
            per(phase)
        );
    }
    let added = per(&paid) - per(&free);
    println!(
        "added by the voucher: {added:.1} µs CPU/request = {:.2} × one verify_strict ({floor:.1} µs)",
        added / floor
    );
    #[cfg(feature = "redis")]
    if let Ok(url) = std::env::var("REDIS_URL") {
        replicas::run_over_redis(&url, &sandbox, &recipient, &funder, &key, clients, requests)
            .await?;
    }
    Ok(())
}

/// Each client's vouchers on its channel, ahead of time: a fresh challenge (from the node its
/// request will go to, round robin over `bases`), the next cumulative amount, the commitment
/// key's signature.
async fn prepare(
    http: &reqwest::Client,
    bases: &[String],
    channels: &[Address],
    key: &Keypair,
    requests: usize,
) -> Result<Vec<Vec<Option<String>>>, Box<dyn std::error::Error>> {
    let mut prepared = Vec::with_capacity(channels.len());
    for (client, channel) in channels.iter().enumerate() {
        let mut headers = Vec::with_capacity(requests);
        for request in 1..=requests {
            let base = &bases[(client + request) % bases.len()];
            let answer = http.get(format!("{base}/paid")).send().await?;
            let lines: Vec<String> = answer
                .headers()
                .get_all("www-authenticate")
                .iter()
                .map(|value| value.to_str().unwrap_or_default().to_owned())
                .collect();
            let challenge = Challenge::parse_lines(lines.iter().map(String::as_str))?
                .into_iter()
                .find(|c| {
                    c.request_json()
                        .is_ok_and(|r| r["channel"] == channel.to_string())
                })
                .ok_or("no challenge for the channel")?;
            let amount = PRICE_ATOMIC * request as i128;
            let signature = sign(key, channel, amount);
            let payload = serde_json::json!({
                "action": "voucher",
                "amount": amount.to_string(),
                "signature": signature,
            });
            headers.push(Some(MppCredential::new(challenge, payload).encode()));
        }
        prepared.push(headers);
    }
    Ok(prepared)
}

#[cfg(feature = "redis")]
mod replicas {
    use super::*;
    use tower_paywall::store::ChannelStore;
    use tower_paywall::store::redis::RedisStore;

    /// The paid route on one node, then on three, over one Redis (see the module docs).
    pub(super) async fn run_over_redis(
        url: &str,
        sandbox: &Sandbox,
        recipient: &Keypair,
        funder: &Keypair,
        key: &Keypair,
        clients: usize,
        requests: usize,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let redis =
            RedisStore::connect(url, &format!("channel-load-{}", std::process::id())).await?;
        let http = reqwest::Client::new();
        let mut rates = Vec::new();
        for nodes in [1, 3] {
            let mut channels = Vec::with_capacity(clients);
            for _ in 0..clients {
                channels.push(
                    sandbox
                        .deploy_channel(ChannelParams {
                            token: sandbox.usdc(),
                            from: funder,
                            commitment_key: key.public_key(),
                            to: recipient.address(),
                            amount: PRICE_ATOMIC * (requests as i128 + 1),
                            refund_waiting_period: 1_000,
                        })
                        .await?,
                );
            }
            let mut bases = Vec::with_capacity(nodes);
            for _ in 0..nodes {
                let scheme = StellarChannel::builder(
                    Network::testnet(),
                    recipient.clone(),
                    Arc::new(sandbox.clone()),
                    ChallengeKeys::new(ChallengeSecret::new(*b"a load-run secret of 32 bytes...")?),
                    Arc::new(redis.channel_store()),
                )
                .currency(sandbox.usdc())
                .realm("127.0.0.1")
                .leases(Arc::new(redis.leases()))
                .build()?;
                let scheme = Arc::new(scheme);
                for channel in &channels {
                    scheme.add_channel(*channel).await?;
                }
                let layer = PaymentLayer::builder()
                    .shared_scheme(scheme)
                    .price(Price::parse(PRICE)?)
                    .store(redis.payment_store())
                    .build()?;
                let app = Router::new()
                    .route("/paid", get(|| async { "content" }))
                    .layer(layer);
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                bases.push(format!("http://{}", listener.local_addr()?));
                tokio::spawn(async move { axum::serve(listener, app).await });
            }
            let prepared = prepare(&http, &bases, &channels, key, requests).await?;
            let phase = run(&http, &bases, "/paid", prepared).await?;
            let store = redis.channel_store();
            for channel in &channels {
                let state = store
                    .load(ChannelId::try_from(*channel)?)
                    .await?
                    .ok_or("a channel without state")?;
                assert_eq!(
                    state.cumulative,
                    PRICE_ATOMIC * requests as i128,
                    "every voucher credited once"
                );
            }
            let rate = (clients * requests) as f64 / phase.wall.as_secs_f64();
            println!(
                "/paid over {} on {nodes} node(s): {rate:>8.0} requests/s",
                if redis.is_cluster() {
                    "a Redis Cluster"
                } else {
                    "Redis"
                }
            );
            rates.push(rate);
        }
        println!("3 nodes ÷ 1 node: {:.2}", rates[1] / rates[0]);
        Ok(())
    }
}

struct Phase {
    wall: Duration,
    cpu: Duration,
}

/// Every client sends its requests in order, all clients at once; request `r` of client `c`
/// goes to `bases[(c + r + 1) % bases.len()]` (the node its voucher's challenge came from).
async fn run(
    http: &reqwest::Client,
    bases: &[String],
    path: &str,
    clients: Vec<Vec<Option<String>>>,
) -> Result<Phase, Box<dyn std::error::Error>> {
    let cpu = process_cpu();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (client, headers) in clients.into_iter().enumerate() {
        let http = http.clone();
        let urls: Vec<String> = bases.iter().map(|base| format!("{base}{path}")).collect();
        tasks.spawn(async move {
            for (request, header) in headers.into_iter().enumerate() {
                let url = &urls[(client + request + 1) % urls.len()];
                let mut request = http.get(url);
                if let Some(header) = header {
                    request = request.header("authorization", header);
                }
                let response = request.send().await?;
                if response.status() != 200 {
                    return Err(format!("{url}: {}", response.status()).into());
                }
                response.bytes().await?;
            }
            Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done?.map_err(|error| error.to_string())?;
    }
    Ok(Phase {
        wall: started.elapsed(),
        cpu: process_cpu().saturating_sub(cpu),
    })
}

fn sign(key: &Keypair, channel: &Address, amount: i128) -> String {
    let bytes = commitment_bytes(&Network::testnet().id(), channel, amount).expect("a contract");
    key.sign(&bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Microseconds of one `verify_strict` of a commitment signature by a decoded key.
fn verify_floor(key: &Keypair) -> f64 {
    let bytes = commitment_bytes(&Network::testnet().id(), &Address::Contract([7; 32]), 1).unwrap();
    let signature = key.sign(&bytes);
    let decoded = VerifyingKey::new(&key.public_key()).unwrap();
    let rounds = 5_000;
    let started = Instant::now();
    for _ in 0..rounds {
        assert!(decoded.verify(std::hint::black_box(&bytes), &signature));
    }
    started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds)
}

/// The CPU time of this process so far (every thread, user and system), from `/proc`.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which may hold spaces) close with ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of the line, in clock ticks (100 per second).
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}
