//! The offline Stellar network: a sandbox ledger served as Soroban JSON-RPC over HTTP and HTTPS,
//! a friendbot, funded demo keys, and our x402 facilitator in front of it.
//!
//! `cargo run --example sandbox --features sandbox`
use std::sync::Arc;

use tower_paywall::sandbox::{Sandbox, SandboxConfig, ServeConfig};
use tower_paywall::x402::{LocalFacilitator, facilitator_router};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sandbox = Sandbox::start(SandboxConfig::default())?;
    let rpc = sandbox.serve(ServeConfig::default()).await?;
    let fee_payer = sandbox.funded_keypair().await?;
    let facilitator =
        LocalFacilitator::builder(sandbox.clone(), sandbox.network().clone(), fee_payer).build()?;
    let api_key = std::env::var("FACILITATOR_API_KEY").ok();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:4022").await?;
    let facilitator_url = format!("http://{}", listener.local_addr()?);
    let app = facilitator_router(Arc::new(facilitator), api_key);
    tokio::spawn(async move { axum::serve(listener, app).await });

    println!("network       {}", sandbox.network().caip2());
    println!("rpc (http)    {}", rpc.http_url().unwrap_or_default());
    println!("rpc (https)   {}", rpc.https_url().unwrap_or_default());
    println!(
        "certificate   {}  (NODE_EXTRA_CA_CERTS=…)",
        rpc.certificate_path().display()
    );
    println!(
        "friendbot     {}/friendbot?addr=G…",
        rpc.http_url().unwrap_or_default()
    );
    println!("facilitator   {facilitator_url}  (/verify /settle /supported)");
    println!("USDC          {}", sandbox.usdc());
    for n in 1..=3 {
        let key = sandbox.funded_keypair().await?;
        println!("demo key {n}    {}  {}", key.address(), key.secret_seed());
    }
    tokio::signal::ctrl_c().await?;
    Ok(())
}
