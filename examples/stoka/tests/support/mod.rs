//! What stoka's integration tests share: the whole stack on loopback (sandbox ledger,
//! facilitator, stoka with a manual clock), paying clients, and the node scripts of the
//! repository's interop package.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use stoka::clock::{Clock, ManualClock, SystemClock};
use stoka::dev::{DevOptions, DevStack, start_on};
use stoka::storage::Storage;
use tower_paywall::Intent;
use tower_paywall::client::{PayingClient, Policy};
use tower_paywall::stellar::Network;

/// The mppx lines the interop package installs (shared with the library's interop tests).
#[path = "../../../../tests/support/mppx.rs"]
pub mod mppx;

/// A running stack and stoka's URL.
pub struct Stack {
    pub dev: DevStack,
    pub url: String,
    /// stoka's clock (the ledger keeps real time).
    pub clock: ManualClock,
}

/// A fresh temporary directory for test `name`.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stoka-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The stack over `storage` (kept in `dir`), with `wallets` funded demo wallets, stoka served on
/// a free loopback port.
pub async fn start(storage: Arc<dyn Storage>, dir: &Path, wallets: usize) -> Stack {
    start_with_clock(storage, dir, wallets, ManualClock::new(SystemClock.now())).await
}

/// Like [`start`], with stoka's clock given (a store under test may move it).
pub async fn start_with_clock(
    storage: Arc<dyn Storage>,
    dir: &Path,
    wallets: usize,
    clock: ManualClock,
) -> Stack {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let options = DevOptions {
        listen: "127.0.0.1:0".into(),
        rpc_listen: loopback,
        facilitator_listen: loopback,
        store: None,
        wallets,
        ledger_period: Duration::from_millis(500),
        metrics_listen: None,
    };
    let dev = start_on(
        &options,
        storage,
        dir.join("stoka.redb"),
        Arc::new(clock.clone()),
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = dev.server.router.clone();
    tokio::spawn(async move { axum::serve(listener, router).await });
    Stack { dev, url, clock }
}

impl Stack {
    /// A client paying as demo wallet `n` (see [`payer`]).
    pub fn payer(&self, n: usize, prefer: Intent) -> PayingClient {
        payer(&self.dev, n, prefer)
    }
}

/// A client paying as demo wallet `n` of `dev` with `prefer` only, up to 1 USDC a payment.
pub fn payer(dev: &DevStack, n: usize, prefer: Intent) -> PayingClient {
    PayingClient::builder(
        dev.wallets[n].clone(),
        Arc::new(dev.sandbox.clone()),
        Network::testnet(),
    )
    .policy(
        Policy::default()
            .prefer([prefer])
            .max_per_payment(10_000_000),
    )
    .build()
    .unwrap()
}

/// Whether the tests that need the node package run (`scripts/test` sets
/// `TOWER_PAYWALL_INTEROP` after `npm ci`, in a loopback-only network namespace).
pub fn interop_enabled() -> bool {
    let on = std::env::var_os("TOWER_PAYWALL_INTEROP").is_some();
    if !on {
        eprintln!("this test runs from scripts/test (it needs the node package); skipped");
    }
    on
}

/// The repository's root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `tests/interop/<script>` with `env` (5 minutes at most) and returns the JSON of its
/// last line.
pub async fn node(script: &str, env: &[(&str, &std::ffi::OsStr)]) -> Value {
    let mut command = tokio::process::Command::new("node");
    command
        .arg(script)
        .current_dir(workspace().join("tests/interop"))
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = tokio::time::timeout(Duration::from_secs(300), command.output())
        .await
        .expect("the script finishes within 5 minutes")
        .expect("node runs (scripts/test installs the package)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed:\n{stdout}\n{stderr}"
    );
    if !stderr.trim().is_empty() {
        eprintln!("{script} wrote to stderr: {stderr}");
    }
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|_| panic!("{script} printed {stdout}\n{stderr}"))
}

/// `stoka serve` with `env`, once it answers on `url`.
pub async fn serve_stoka(env: &[(&str, String)], url: &str) -> std::process::Child {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_stoka"))
        .arg("serve")
        .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while http
        .get(format!("{url}/.well-known/stoka.json"))
        .send()
        .await
        .is_err()
    {
        assert!(std::time::Instant::now() < deadline, "stoka did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child
}
