//! Load against the gateway, ratios against bare baselines in the same run:
//!
//! 1. **Throughput of a free route**: requests a second through the gateway against a bare
//!    reverse proxy written with hyper (the same client, nothing else), over one upstream
//!    (a hyper server answering 64 bytes). Goal: the gateway at 0.9× the bare proxy or better.
//! 2. **Latency of a paid route**: one paid request after another (x402 `exact`, our local
//!    facilitator, a sandbox ledger closing every 200 ms), through the gateway against stoka's
//!    paid `push` on the same ledger: the gateway's added latency per paid request.
//!
//! The paid rounds run first: a sandbox ledger's close time grows by a second at least each
//! close (as the network's must), so with 200 ms ledgers it runs ahead of the clock, and the
//! facilitator's transactions, bounded by the clock, would come too late after a minute.
//!
//! `cargo bench -p paywall --bench gateway [-- SECONDS]` (default 5 s a round; the throughput
//! rounds alternate bare, gateway, bare, gateway, and the best of each is kept).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower_paywall::Intent;
use tower_paywall::client::{PayingClient, Policy};
use tower_paywall::stellar::{Network, SorobanRpc};

/// stoka and a gateway on one ledger (shared with the tests).
#[path = "../tests/support/mod.rs"]
mod support;

/// Connections the load generator keeps busy.
const CONCURRENCY: usize = 32;
/// Paid requests timed, one after another.
const PAID: usize = 20;

/// Serves `service` for each connection accepted on a fresh loopback port.
async fn serve<F, Fut>(service: F) -> String
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<http_body_util::combinators::UnsyncBoxBody<Bytes, hyper::Error>>>
        + Send
        + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let service = service.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let service = service.clone();
                    async move { Ok::<_, Infallible>(service(request).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    url
}

/// The upstream: 64 bytes for any request.
async fn upstream() -> String {
    serve(|_request| async {
        Response::new(
            Full::new(Bytes::from_static(&[b'x'; 64]))
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
    })
    .await
}

/// The baseline: a reverse proxy with hyper and nothing else.
async fn bare_proxy(upstream: String) -> String {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new()).build(http);
    serve(move |mut request: Request<Incoming>| {
        let client = client.clone();
        let upstream = upstream.clone();
        async move {
            let path = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
            *request.uri_mut() = format!("{upstream}{path}").parse().unwrap();
            request.headers_mut().remove(http::header::HOST);
            match client.request(request).await {
                Ok(response) => response.map(BodyExt::boxed_unsync),
                Err(_) => {
                    let mut response =
                        Response::new(Empty::new().map_err(|n| match n {}).boxed_unsync());
                    *response.status_mut() = http::StatusCode::BAD_GATEWAY;
                    response
                }
            }
        }
    })
    .await
}

/// Requests a second against `url` with [`CONCURRENCY`] connections for `length`.
async fn throughput(url: &str, length: Duration) -> f64 {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + length;
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (client, done, url) = (client.clone(), done.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let response = client.get(url.parse().unwrap()).await.unwrap();
                assert!(response.status().is_success(), "{}", response.status());
                response.into_body().collect().await.unwrap();
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let seconds: u64 = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse().ok())
        .unwrap_or(5);
    let length = Duration::from_secs(seconds);

    // stoka's dev stack gives the ledger, the facilitator and a funded wallet; the gateway is
    // built on the same ledger.
    let dir = std::env::temp_dir().join(format!("paywall-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let upstream = upstream().await;
    let bare = bare_proxy(upstream.clone()).await;
    let routes = format!(
        "upstream = \"{upstream}\"\n[[route]]\nmethod = \"GET\"\npath = \"/paid\"\nprice = \"0.001\"\nintents = [\"x402\"]\n[[route]]\npath = \"/*\"\nprice = \"free\"\n"
    );
    let support::Beside {
        stoka,
        stoka_url,
        gateway_url: gateway,
        ..
    } = support::stoka_and_gateway(
        &dir,
        &routes,
        "a secret shared with the upstream, 32+ bytes",
    )
    .await;

    // Paid, one after another, x402 through the local facilitator.
    let payer = PayingClient::builder(
        stoka.wallets[0].clone(),
        Arc::new(stoka.sandbox.clone()) as Arc<dyn SorobanRpc>,
        Network::testnet(),
    )
    .policy(Policy::default().prefer([Intent::X402_EXACT]))
    .build()
    .unwrap();
    let recipient = stoka.wallets[0].address().to_string();
    let mut gateway_times = Vec::new();
    let mut stoka_times = Vec::new();
    for n in 0..PAID {
        let started = Instant::now();
        let response = payer.get(format!("{gateway}/paid")).send().await.unwrap();
        let status = response.status();
        let body = response.bytes().await.unwrap();
        assert!(status.is_success(), "{status} {body:?}");
        gateway_times.push(started.elapsed());
        let started = Instant::now();
        let response = payer
            .post(format!("{stoka_url}/v1/queue/{recipient}/bench/push"))
            .body(format!("message {n}"))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.bytes().await.unwrap();
        assert!(status.is_success(), "{status} {body:?}");
        stoka_times.push(started.elapsed());
    }
    let (g, s) = (median(gateway_times), median(stoka_times));
    println!(
        "paid route, x402 with the local facilitator, 200 ms ledgers, {PAID} requests one after another (median)"
    );
    println!(
        "  gateway {:.1} ms   stoka push {:.1} ms   added by the gateway {:+.1} ms",
        g.as_secs_f64() * 1e3,
        s.as_secs_f64() * 1e3,
        (g.as_secs_f64() - s.as_secs_f64()) * 1e3
    );
    println!("free route, {CONCURRENCY} connections, {seconds} s a round (requests a second)");
    let (mut best_bare, mut best_gateway) = (0.0_f64, 0.0_f64);
    for round in 1..=2 {
        let b = throughput(&format!("{bare}/free"), length).await;
        let g = throughput(&format!("{gateway}/free"), length).await;
        println!(
            "  round {round}: bare hyper proxy {b:>9.0}   gateway {g:>9.0}   ratio {:.2}",
            g / b
        );
        best_bare = best_bare.max(b);
        best_gateway = best_gateway.max(g);
    }
    println!(
        "  best: bare {best_bare:.0}, gateway {best_gateway:.0}: {:.2}× (goal ≥ 0.90×)",
        best_gateway / best_bare
    );

    let _ = std::fs::remove_dir_all(dir);
}
