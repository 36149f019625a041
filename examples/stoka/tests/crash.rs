//! Crash safety of the embedded store: `stoka dev` runs as a child process under a write load
//! of paid stores and is killed with SIGKILL mid-load. After a restart on the same file:
//! every write that was answered 200 reads back intact, a write cut off by the kill is either
//! absent or whole (never partial), and the expiry index is whole too (sweeping removes
//! exactly the blobs there are).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
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
