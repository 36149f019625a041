//! What paywall's integration tests (and its bench) share: a gateway on a sandbox ledger
//! (`paywall dev`'s stack, on loopback ports of its own) in front of an upstream, or beside
//! stoka on stoka's dev stack; paying clients of its demo wallets, balances read from the
//! ledger, and raw HTTP/1.1 for requests a client would not send as written.
#![allow(dead_code)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use http::{HeaderMap, Request, StatusCode};
use paywall::payer::{self, UpstreamSecret};
use serde_json::{Value, json};

use paywall::dev::{DevOptions, DevStack, sell_on, start};
use paywall::routes::Routes;
use paywall::server;
use paywall::setup::Ledger;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower_paywall::Intent;
use tower_paywall::client::PayingClient;
use tower_paywall::stellar::Keypair;

/// What the upstream received: the path and query, the headers, the body's length.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub headers: HeaderMap,
    pub bytes: usize,
}

pub type Log = Arc<Mutex<Vec<Seen>>>;

/// An upstream on loopback: `/fail` answers 500, `/slow` after 3 s; anything else 200 with
/// the payer it verified (`null` for an unpaid request) and the body's length.
pub async fn upstream(secret: String) -> (String, Log) {
    let log: Log = Arc::default();
    let seen = log.clone();
    let secret = UpstreamSecret::new(secret.into_bytes()).unwrap();
    let app = axum::Router::new().fallback(move |request: Request<Body>| {
        let seen = seen.clone();
        let secret = secret.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            let path = parts.uri.path_and_query().unwrap().as_str().to_owned();
            seen.lock().unwrap().push(Seen {
                path: path.clone(),
                headers: parts.headers.clone(),
                bytes: body.len(),
            });
            let payer = match parts.headers.get(payer::PAYER) {
                None => Value::Null,
                Some(_) => {
                    let verified = payer::verify(
                        &parts.headers,
                        parts.method.as_str(),
                        &path,
                        &secret,
                        SystemTime::now(),
                        Duration::from_secs(300),
                    );
                    match verified {
                        Ok(payer) => json!(payer),
                        Err(error) => {
                            return (StatusCode::UNAUTHORIZED, error.to_string());
                        }
                    }
                }
            };
            match parts.uri.path() {
                "/fail" => (StatusCode::INTERNAL_SERVER_ERROR, "failed".to_owned()),
                "/slow" => {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    (StatusCode::OK, "slow".to_owned())
                }
                _ => {
                    let answer = json!({"payer": payer, "bytes": body.len()});
                    (StatusCode::OK, answer.to_string())
                }
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, log)
}

/// Peers on loopback (shared with stoka's tests).
#[path = "../../../../tests/support/peers.rs"]
pub mod peers;

/// A gateway serving on loopback.
pub struct World {
    pub stack: DevStack,
    /// The gateway's URL.
    pub url: String,
    /// The upstream's URL.
    pub upstream: String,
}

impl World {
    /// `paywall dev`'s stack selling `routes` (whose upstream is `upstream`), signing payer
    /// headers with `secret`, with `wallets` demo wallets, serving.
    pub async fn start(routes: &str, upstream: &str, secret: &str, wallets: usize) -> World {
        // The plain reqwest clients of these tests use the ring provider, as the crate does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let options = DevOptions {
            listen: loopback,
            rpc_listen: loopback,
            facilitator_listen: loopback,
            wallets,
            ledger_period: Duration::from_millis(200),
            upstream_secret: Some(secret.to_owned()),
            upstream_timeout: Duration::from_secs(1),
        };
        let mut stack = start(&options, Routes::parse(routes).unwrap())
            .await
            .unwrap();
        let url = stack.selling.url.clone();
        let listener = std::mem::replace(
            &mut stack.selling.listener,
            tokio::net::TcpListener::bind(loopback).await.unwrap(),
        );
        let gateway = stack.selling.gateway.clone();
        tokio::spawn(server::serve(listener, gateway, std::future::pending()));
        World {
            stack,
            url,
            upstream: upstream.to_owned(),
        }
    }

    /// A client paying as demo wallet `n` with `prefer` only, up to 1 USDC a payment.
    pub fn payer(&self, n: usize, prefer: Intent) -> PayingClient {
        peers::payer(self.wallet(n), &self.stack.sandbox, prefer)
    }

    /// Demo wallet `n`.
    pub fn wallet(&self, n: usize) -> &Keypair {
        &self.stack.selling.wallets[n]
    }

    /// `who`'s USDC.
    pub async fn balance(&self, who: &Keypair) -> i128 {
        let usdc = self.stack.sandbox.usdc();
        self.stack
            .sandbox
            .balance(&usdc, &who.address())
            .await
            .unwrap()
    }

    /// Wallet `n`'s USDC and the payee's.
    pub async fn balances(&self, n: usize) -> (i128, i128) {
        (
            self.balance(self.wallet(n)).await,
            self.balance(&self.stack.selling.pay_to).await,
        )
    }

    /// Lets the ledger close a few times, so that a settlement under way would have landed.
    pub async fn settle_time(&self) {
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
}

/// stoka and a gateway on one sandbox ledger, both serving on loopback.
pub struct Beside {
    /// stoka's dev stack: the ledger, its RPC, stoka, one demo wallet.
    pub stoka: stoka::dev::DevStack,
    /// stoka's URL.
    pub stoka_url: String,
    /// The gateway's URL.
    pub gateway_url: String,
    /// Who the gateway pays.
    pub gateway_pay_to: Keypair,
}

/// stoka's dev stack (its store in `dir`, 200 ms ledgers, one demo wallet), serving, and a
/// gateway selling `routes` on the same ledger (`paywall::dev::sell_on`), signing payer
/// headers with `secret`, serving.
pub async fn stoka_and_gateway(dir: &Path, routes: &str, secret: &str) -> Beside {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let stoka_options = stoka::dev::DevOptions {
        listen: "127.0.0.1:0".into(),
        rpc_listen: loopback,
        facilitator_listen: loopback,
        store: None,
        wallets: 1,
        ledger_period: Duration::from_millis(200),
        metrics_listen: None,
    };
    let store = dir.join("stoka.redb");
    let storage = Arc::new(stoka::storage::RedbStorage::open(&store).unwrap());
    let stoka = stoka::dev::start_on(
        &stoka_options,
        storage,
        store,
        Arc::new(stoka::clock::SystemClock),
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind(loopback).await.unwrap();
    let stoka_url = format!("http://{}", listener.local_addr().unwrap());
    let router = stoka.server.router.clone();
    tokio::spawn(async move { axum::serve(listener, router).await });

    let ledger = Ledger {
        network: stoka.ledger.network.clone(),
        rpc: stoka.ledger.rpc.clone(),
        facilitator: stoka.ledger.facilitator.as_ref().map(|(f, _)| f.clone()),
    };
    let options = DevOptions {
        listen: loopback,
        upstream_secret: Some(secret.to_owned()),
        wallets: 1,
        ..DevOptions::default()
    };
    let selling = sell_on(
        &stoka.sandbox,
        ledger,
        stoka.rpc.certificate_pem(),
        Routes::parse(routes).unwrap(),
        &options,
    )
    .await
    .unwrap();
    tokio::spawn(server::serve(
        selling.listener,
        selling.gateway,
        std::future::pending(),
    ));
    Beside {
        stoka,
        stoka_url,
        gateway_url: selling.url,
        gateway_pay_to: selling.pay_to,
    }
}

/// Sends `request` as written to `url` on a fresh connection; the status and the body.
pub async fn raw(url: &str, request: &str) -> (u16, String) {
    let address = url.strip_prefix("http://").unwrap();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}
