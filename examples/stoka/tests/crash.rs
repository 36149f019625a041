//! Crash safety: stoka runs as a child process and is killed with SIGKILL.
//!
//! - Under a write load of paid stores (`stoka dev`), mid-load. After a restart on the same
//!   file: every write that was answered 200 reads back intact, a write cut off by the kill is
//!   either absent or whole (never partial), and the expiry index is whole too (sweeping
//!   removes exactly the blobs there are).
//! - Between a settlement and the write of its record (`stoka serve` against an in-process
//!   sandbox, through a facilitator gateway that keeps the settle answer back). After a restart,
//!   the retry with the same payment is served from the ledger's evidence, charged once.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use base64::Engine;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stoka::storage::{RedbStorage, Storage};
use tower_paywall::client::{PayingClient, Policy};
use tower_paywall::stellar::{JsonRpcClient, Keypair, Network, SorobanRpc};

/// A running `stoka dev` and what its banner says.
struct Dev {
    child: Child,
    url: String,
    rpc: String,
    secrets: Vec<String>,
}

fn start(store: &Path) -> Dev {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stoka"))
        .args(["dev", "--listen", "127.0.0.1:0"])
        .args([
            "--rpc-listen",
            "127.0.0.1:0",
            "--facilitator-listen",
            "127.0.0.1:0",
        ])
        .arg("--store")
        .arg(store)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let (mut url, mut rpc, mut secrets) = (None, None, Vec::new());
    for line in lines.by_ref() {
        let line = line.unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["stoka", found] => url = Some(found.to_string()),
            ["ledger", "(RPC)", found] => rpc = Some(found.to_string()),
            [n, address, secret] if n.parse::<u32>().is_ok() && address.starts_with('G') => {
                secrets.push(secret.to_string());
            }
            ["try,", ..] => break,
            _ => {}
        }
    }
    // Keep reading, so that the server never writes to a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Dev {
        child,
        url: url.expect("the banner names stoka's URL"),
        rpc: rpc.expect("the banner names the RPC"),
        secrets,
    }
}

fn client(dev: &Dev, n: usize) -> PayingClient {
    let rpc: Arc<dyn SorobanRpc> = Arc::new(JsonRpcClient::builder(&dev.rpc).build().unwrap());
    let keypair: Keypair = dev.secrets[n].parse().unwrap();
    PayingClient::builder(keypair, rpc, Network::testnet())
        .policy(Policy::default().max_per_payment(10_000_000))
        .build()
        .unwrap()
}

/// The body of write `i` by wallet `n`: sizes across the chunk edges, up to the largest blob.
fn body(n: usize, i: usize) -> Vec<u8> {
    let sizes = [1, 1024, 65_024, 65_025, 200_000, 350_000];
    let size = sizes[(n + i) % sizes.len()];
    (0..size)
        .map(|j| ((j * 7 + n * 13 + i) % 251) as u8)
        .collect()
}

#[test]
fn a_killed_server_keeps_every_answered_write_whole() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = std::env::temp_dir().join(format!("stoka-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = dir.join("stoka.redb");

    // Load: three wallets store blobs concurrently; the server is killed after 12 answers.
    let mut dev = start(&store);
    let answered: Arc<Mutex<Vec<(usize, usize)>>> = Arc::default();
    let attempted: Arc<Mutex<Vec<(usize, usize)>>> = Arc::default();
    runtime.block_on(async {
        let mut writers = Vec::new();
        for n in 0..3 {
            let (client, url) = (client(&dev, n), dev.url.clone());
            let (answered, attempted) = (answered.clone(), attempted.clone());
            writers.push(tokio::spawn(async move {
                for i in 0.. {
                    attempted.lock().unwrap().push((n, i));
                    let sent = client
                        .post(format!("{url}/v1/store"))
                        .header("x-stoka-key", format!("w{n}-{i}"))
                        .header("x-stoka-ttl-seconds", "3600")
                        .body(body(n, i))
                        .send()
                        .await;
                    match sent {
                        Ok(response) if response.status() == 200 => {
                            answered.lock().unwrap().push((n, i));
                        }
                        // The kill: connections fail from here on.
                        _ => break,
                    }
                }
            }));
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(300);
        while answered.lock().unwrap().len() < 12 {
            assert!(
                std::time::Instant::now() < deadline,
                "the load made no progress"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        dev.child.kill().unwrap(); // SIGKILL
        dev.child.wait().unwrap();
        for writer in writers {
            writer.await.unwrap();
        }
    });
    let answered = answered.lock().unwrap().clone();
    let attempted = attempted.lock().unwrap().clone();
    assert!(answered.len() >= 12);
    eprintln!(
        "killed with {} writes answered and {} more in flight",
        answered.len(),
        attempted.len() - answered.len()
    );

    // Restart on the same file: every answered write reads back whole, through the API.
    let mut dev = start(&store);
    runtime.block_on(async {
        for n in 0..3 {
            let client = client(&dev, n);
            for &(_, i) in answered.iter().filter(|(m, _)| *m == n) {
                let response = client
                    .get(format!("{}/v1/retrieve/w{n}-{i}", dev.url))
                    .header("x-stoka-owner", client_address(&dev, n))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200, "w{n}-{i}");
                assert_eq!(response.bytes().await.unwrap(), body(n, i), "w{n}-{i}");
            }
        }
    });
    dev.child.kill().unwrap();
    dev.child.wait().unwrap();

    // The file itself: writes cut off by the kill are absent or whole, never partial; the
    // expiry index holds exactly the blobs there are, and the sweeper removes them all once
    // they expire.
    runtime.block_on(async {
        let storage = RedbStorage::open(&store).unwrap();
        let mut present = 0;
        for &(n, i) in &attempted {
            let owner = client_address(&dev, n);
            match storage
                .get_blob(&owner, &format!("w{n}-{i}"), 0)
                .await
                .unwrap()
            {
                Some(blob) => {
                    assert_eq!(blob.body, body(n, i), "w{n}-{i} is whole");
                    present += 1;
                }
                None => assert!(!answered.contains(&(n, i)), "w{n}-{i} was answered"),
            }
        }
        let later = u64::MAX / 2;
        let mut swept = 0;
        loop {
            let batch = storage.sweep_expired(later, 5).await.unwrap();
            swept += batch;
            if batch == 0 {
                break;
            }
        }
        assert_eq!(swept, present, "every blob had its expiry entry");
        for &(n, i) in &attempted {
            let owner = client_address(&dev, n);
            assert_eq!(
                storage
                    .blob_size(&owner, &format!("w{n}-{i}"), 0)
                    .await
                    .unwrap(),
                None
            );
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
}

fn client_address(dev: &Dev, n: usize) -> String {
    dev.secrets[n]
        .parse::<Keypair>()
        .unwrap()
        .address()
        .to_string()
}

/// A gateway in front of the facilitator server that, while `hold` is set, passes a `/settle`
/// on, keeps the request, says so through `settled`, and never answers: the test double at the
/// facilitator's HTTP boundary that lets the test kill stoka after the money moved and before
/// stoka hears of it (and so before it records the settlement).
async fn holding_gateway(
    upstream: String,
    hold: Arc<std::sync::atomic::AtomicBool>,
    settled: Arc<tokio::sync::Notify>,
    kept: Arc<Mutex<Option<serde_json::Value>>>,
) -> String {
    use axum::response::IntoResponse;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let gateway = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let (client, upstream) = (client.clone(), upstream.clone());
        let (hold, settled, kept) = (hold.clone(), settled.clone(), kept.clone());
        async move {
            let holding =
                request.uri().path() == "/settle" && hold.load(std::sync::atomic::Ordering::SeqCst);
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            let mut forwarded = client.request(parts.method, format!("{upstream}{}", parts.uri));
            for (name, value) in &parts.headers {
                if name != http::header::HOST {
                    forwarded = forwarded.header(name, value);
                }
            }
            let answer = forwarded.body(body.clone()).send().await.unwrap();
            let status = answer.status();
            let bytes = answer.bytes().await.unwrap();
            if holding {
                *kept.lock().unwrap() = serde_json::from_slice(&body).ok();
                settled.notify_one();
                std::future::pending::<()>().await;
            }
            (
                status,
                [(http::header::CONTENT_TYPE, "application/json")],
                bytes,
            )
                .into_response()
        }
    });
    serve(gateway).await
}

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{address}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_between_settlement_and_its_record_serves_the_retry_after_restart() {
    use tower_paywall::sandbox::{Sandbox, SandboxConfig, ServeConfig};
    use tower_paywall::x402::{LocalFacilitator, facilitator_router};

    let dir = std::env::temp_dir().join(format!("stoka-settle-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sandbox =
        Sandbox::start(SandboxConfig::default().ledger_period(Duration::from_millis(250))).unwrap();
    let rpc_server = sandbox.serve(ServeConfig::default()).await.unwrap();
    let rpc_url = rpc_server.http_url().unwrap();
    let fee_payer = sandbox.funded_keypair().await.unwrap();
    let facilitator = LocalFacilitator::builder(sandbox.clone(), Network::testnet(), fee_payer)
        .build()
        .unwrap();
    let upstream = serve(facilitator_router(Arc::new(facilitator), None)).await;
    let hold = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let settled = Arc::new(tokio::sync::Notify::new());
    let kept: Arc<Mutex<Option<serde_json::Value>>> = Arc::default();
    let gateway = holding_gateway(upstream, hold.clone(), settled.clone(), kept.clone()).await;
    let payer = sandbox.funded_keypair().await.unwrap();
    let pay_to = sandbox.funded_keypair().await.unwrap().address();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let env = [
        ("STOKA_LISTEN", format!("127.0.0.1:{port}")),
        ("STOKA_NETWORK", "testnet".to_owned()),
        ("STOKA_PAY_TO", pay_to.to_string()),
        ("STOKA_ASSET", sandbox.usdc().to_string()),
        ("STOKA_RPC_URL", rpc_url.clone()),
        ("STOKA_FACILITATOR_URL", gateway),
        (
            "STOKA_STORE_PATH",
            dir.join("stoka.redb").display().to_string(),
        ),
    ];
    let balance = |holder: tower_paywall::stellar::Address| {
        let sandbox = sandbox.clone();
        async move { sandbox.balance(&sandbox.usdc(), &holder).await.unwrap() }
    };
    let payer_before = balance(payer.address()).await;

    // The store is paid; the facilitator settles; stoka is killed before it hears so.
    let mut stoka = support::serve_stoka(&env, &url).await;
    let rpc: Arc<dyn SorobanRpc> = Arc::new(JsonRpcClient::builder(&rpc_url).build().unwrap());
    let client = PayingClient::builder(payer.clone(), rpc, Network::testnet())
        .policy(Policy::default().max_per_payment(10_000_000))
        .build()
        .unwrap();
    let store = |request: reqwest::RequestBuilder| {
        request
            .header("x-stoka-key", "after-the-crash")
            .header("x-stoka-ttl-seconds", "3600")
            .header("content-length", "5")
            .body("hello")
    };
    let first = {
        let url = url.clone();
        tokio::spawn(async move {
            client
                .post(format!("{url}/v1/store"))
                .header("x-stoka-key", "after-the-crash")
                .header("x-stoka-ttl-seconds", "3600")
                .body("hello")
                .send()
                .await
        })
    };
    tokio::time::timeout(Duration::from_secs(60), settled.notified())
        .await
        .expect("the facilitator settled");
    let price = payer_before - balance(payer.address()).await;
    assert!(price > 0, "the money moved before the kill");
    stoka.kill().unwrap(); // SIGKILL
    stoka.wait().unwrap();
    assert!(
        first.await.unwrap().is_err(),
        "the payer got no answer from the killed server"
    );

    // Restarted on the same store, the retry with the same payment is served, once.
    hold.store(false, std::sync::atomic::Ordering::SeqCst);
    let mut stoka = support::serve_stoka(&env, &url).await;
    let payload =
        kept.lock().unwrap().clone().expect("the settle request")["paymentPayload"].to_string();
    let header = base64::engine::general_purpose::STANDARD.encode(payload);
    let http = reqwest::Client::new();
    let started = std::time::Instant::now();
    let answer = loop {
        let answer = store(http.post(format!("{url}/v1/store")))
            .header("payment-signature", &header)
            .send()
            .await
            .unwrap();
        // Until the record may be reconciled (a settlement is given the layer's settle wait
        // to answer), the retry is asked to come back.
        if answer.status() != 503 || started.elapsed() > Duration::from_secs(90) {
            break answer;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let waited = started.elapsed();
    assert_eq!(answer.status(), 200, "{:?}", answer.text().await);
    assert!(answer.headers().contains_key("payment-response"));
    let stored: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(stored["key"], "after-the-crash");
    assert_eq!(stored["charged_atomic"], serde_json::json!(price));
    assert_eq!(
        balance(payer.address()).await,
        payer_before - price,
        "one charge"
    );
    eprintln!("the retry was served {waited:?} after the restart");
    stoka.kill().unwrap();
    stoka.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
