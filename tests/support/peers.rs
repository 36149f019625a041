//! What the tests of the workspace's crates share about peers on loopback (included by path):
//! a free port, and a client paying from a sandbox wallet.

use std::sync::Arc;

use tower_paywall::Intent;
use tower_paywall::client::{PayingClient, Policy};
use tower_paywall::sandbox::Sandbox;
use tower_paywall::stellar::{Keypair, Network};

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A client paying from `wallet` on `sandbox` with `prefer` only, up to 1 USDC a payment.
pub fn payer(wallet: &Keypair, sandbox: &Sandbox, prefer: Intent) -> PayingClient {
    PayingClient::builder(
        wallet.clone(),
        Arc::new(sandbox.clone()),
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
