//! Pays for any URL: a GET that answers 402 is paid once (x402 `exact` or MPP `charge`) from
//! the account of a secret key, within a cap, and the answer printed.
//!
//! ```text
//! STELLAR_SECRET=S… STELLAR_RPC_URL=https://… \
//!   cargo run --example pay --features client -- https://api.example/paid
//! ```
//!
//! - `STELLAR_SECRET`: the payer's `S…` secret seed (never printed);
//! - `STELLAR_RPC_URL`: a Soroban RPC of the network (transactions are simulated there);
//! - `STELLAR_NETWORK`: `stellar:testnet` (default) or `stellar:pubnet`;
//! - `MAX_PAYMENT`: the most one payment may cost, in atomic units (default 10 000 000 =
//!   1 unit of a 7-decimal asset);
//! - `RPC_ROOT_PEM`: a file of extra PEM roots to trust (the sandbox's certificate).
use std::sync::Arc;

use tower_paywall::client::{PayingClient, Policy, payment};
use tower_paywall::stellar::{JsonRpcClient, Keypair, Network};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .ok_or("usage: pay <url> (with STELLAR_SECRET and STELLAR_RPC_URL set)")?;
    let key: Keypair = std::env::var("STELLAR_SECRET")
        .map_err(|_| "set STELLAR_SECRET to the payer's S… secret seed")?
        .parse()?;
    let rpc_url =
        std::env::var("STELLAR_RPC_URL").map_err(|_| "set STELLAR_RPC_URL to a Soroban RPC")?;
    let network = Network::from_caip2(
        &std::env::var("STELLAR_NETWORK").unwrap_or_else(|_| "stellar:testnet".into()),
    )?;
    let cap: i128 = std::env::var("MAX_PAYMENT")
        .ok()
        .map(|cap| cap.parse())
        .transpose()?
        .unwrap_or(10_000_000);

    let pem = std::env::var("RPC_ROOT_PEM")
        .ok()
        .map(std::fs::read)
        .transpose()?;
    let mut rpc = JsonRpcClient::builder(rpc_url);
    if let Some(pem) = &pem {
        rpc = rpc.root_certificate_pem(pem);
    }
    let mut client = PayingClient::builder(key, Arc::new(rpc.build()?), network)
        .policy(Policy::default().max_per_payment(cap));
    if let Some(pem) = pem {
        client = client.extra_roots(pem);
    }
    let client = client.build()?;

    let response = client.get(&url).send().await?;
    println!("{}", response.status());
    if let Some(paid) = payment(&response) {
        println!(
            "paid {} atomic units with {} on {}",
            paid.amount, paid.intent, paid.network
        );
    }
    println!("{}", response.text().await?);
    Ok(())
}
