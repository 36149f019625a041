//! What paywall's integration tests share: a gateway on a sandbox ledger (`paywall dev`'s
//! stack, on loopback ports of its own) in front of an upstream, paying clients of its demo
//! wallets, balances read from the ledger, and raw HTTP/1.1 for requests a client would not
//! send as written.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use http::{HeaderMap, Request, StatusCode};
use paywall::payer::{self, UpstreamSecret};
use serde_json::{Value, json};

use paywall::dev::{DevOptions, DevStack, start};
use paywall::routes::Routes;
use paywall::server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower_paywall::Intent;
use tower_paywall::client::{PayingClient, Policy};
use tower_paywall::stellar::{Keypair, Network, SorobanRpc};

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
        PayingClient::builder(
            self.wallet(n).clone(),
            Arc::new(self.stack.sandbox.clone()) as Arc<dyn SorobanRpc>,
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
