//! What stoka's integration tests share: the whole stack on loopback (sandbox ledger,
//! facilitator, stoka with a manual clock), paying clients, and the node scripts of the
//! repository's interop package.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use stoka::clock::{Clock, ManualClock, SystemClock};
use stoka::dev::{DevOptions, DevStack, start_on};
use stoka::storage::Storage;
use tower_paywall::Intent;
use tower_paywall::client::PayingClient;

/// The mppx lines the interop package installs (shared with the library's interop tests).
#[path = "../../../../tests/support/mppx.rs"]
pub mod mppx;
/// Running the interop package's node scripts (shared with paywall's interop tests).
#[path = "../../../../tests/support/node.rs"]
mod node_scripts;
/// Peers on loopback (shared with paywall's tests).
#[path = "../../../../tests/support/peers.rs"]
pub mod peers;
#[allow(unused_imports)]
pub use node_scripts::{interop_enabled, node, workspace};

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
    peers::payer(&dev.wallets[n], &dev.sandbox, prefer)
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
