//! A priced route: `GET /joke` costs 0.001 USDC on testnet, paid with x402.
//!
//! `FACILITATOR_URL=… FACILITATOR_API_KEY=… PAY_TO=G… cargo run --example axum_quickstart`
use axum::{Router, routing::get};
use tower_paywall::{PaymentLayer, Price, stellar::Network, x402};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let mut facilitator =
        x402::HttpFacilitator::builder(env("FACILITATOR_URL", "http://127.0.0.1:4022"));
    if let Ok(key) = std::env::var("FACILITATOR_API_KEY") {
        facilitator = facilitator.api_key(key);
    }
    let facilitator = facilitator.build()?;
    let pay_to = env(
        "PAY_TO",
        "GB2Q4VZJ32UM4F2EMZR2QVKT4YHIAKGBEV2UDYH7Q6DOZ6KCX5KHSBNB",
    )
    .parse()?;
    let paywall = PaymentLayer::builder()
        .scheme(x402::Exact::builder(Network::testnet(), pay_to, facilitator).build()?)
        .price(Price::parse("$0.001")?)
        .build()?;
    let app = Router::new()
        .route(
            "/joke",
            get(|| async { "A paywall walks into a bar. It costs 0.001 USDC." }),
        )
        .layer(paywall);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8402").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
