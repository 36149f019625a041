//! Pay as you stream, on the offline sandbox ledger: a model-like token stream sold per token
//! over server-sent events, and an agent paying for it as the tokens flow.
//!
//! The seller prices `GET /generate` at 0.0001 USDC a token
//! (`Price::per(Unit::Counted("token"))`) with `StellarChannel`; the model streams chunks of one
//! to four tokens, each event saying how many it holds (`layer::counted_event`). The buyer opens
//! a payment channel, reads the stream with `PayingClient::send_stream`, and pays a voucher
//! every 50 tokens when the server asks in band. Closing the channel pays the seller exactly
//! what was streamed.
//!
//! `cargo run --example metered_stream --features sandbox,client [-- TOKENS]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Query;
use axum::routing::get;
use tower_paywall::client::PayingClient;
use tower_paywall::layer::counted_event;
use tower_paywall::mpp::{ChallengeKeys, ChallengeSecret, StellarChannel};
use tower_paywall::sandbox::{ChannelParams, Sandbox, SandboxConfig};
use tower_paywall::stellar::Keypair;
use tower_paywall::store::{ChannelId, MemoryChannelStore};
use tower_paywall::{PaymentLayer, Price, Unit};

/// The price of one token, in USDC.
const TOKEN_PRICE: &str = "0.0001";

/// A "model": the words of a sentence, again and again, `tokens` of them, as SSE events of
/// one to four tokens, each counting its tokens.
fn generate(tokens: usize) -> Vec<u8> {
    const WORDS: [&str; 12] = [
        "a", "paywall", "walks", "into", "a", "bar", "and", "charges", "per", "token", "it",
        "serves",
    ];
    let mut stream = Vec::new();
    let (mut sent, mut chunk) = (0, 0);
    while sent < tokens {
        let count = (chunk % 4 + 1).min(tokens - sent);
        let words: Vec<&str> = (sent..sent + count)
            .map(|n| WORDS[n % WORDS.len()])
            .collect();
        stream.extend_from_slice(&counted_event(&words.join(" "), count as u64));
        (sent, chunk) = (sent + count, chunk + 1);
    }
    stream
}

#[derive(serde::Deserialize)]
struct Ask {
    tokens: Option<usize>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tokens: usize = std::env::args().nth(1).map_or(Ok(1_000), |n| n.parse())?;
    let sandbox =
        Sandbox::start(SandboxConfig::default().ledger_period(Duration::from_millis(500)))?;
    let network = sandbox.network().clone();
    let seller = sandbox.funded_keypair().await?;
    let buyer = sandbox.funded_keypair().await?;
    let commitment_key = Keypair::from_seed([9; 32]);

    // The buyer's channel to the seller: 10 USDC deposited.
    let channel = sandbox
        .deploy_channel(ChannelParams {
            token: sandbox.usdc(),
            from: &buyer,
            commitment_key: commitment_key.public_key(),
            to: seller.address(),
            amount: 100_000_000,
            refund_waiting_period: 200,
        })
        .await?;

    // The seller: the channel scheme, and a route priced per token.
    let keys = ChallengeKeys::new(ChallengeSecret::new(
        "a demo secret: set your own in production"
            .as_bytes()
            .to_vec(),
    )?);
    let scheme = Arc::new(
        StellarChannel::builder(
            network.clone(),
            seller.clone(),
            Arc::new(sandbox.clone()),
            keys,
            Arc::new(MemoryChannelStore::new()),
        )
        .currency(sandbox.usdc())
        .build()?,
    );
    scheme.add_channel(channel).await?;
    let layer = PaymentLayer::builder()
        .shared_scheme(scheme.clone())
        .price(Price::parse(TOKEN_PRICE)?.per(Unit::Counted("token")))
        .build()?;
    let app = Router::new()
        .route(
            "/generate",
            get(|Query(ask): Query<Ask>| async move {
                let body = generate(ask.tokens.unwrap_or(1_000).min(100_000));
                ([("content-type", "text/event-stream")], body)
            }),
        )
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/generate?tokens={tokens}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The buyer: pays a voucher 50 tokens ahead whenever the stream asks; 1 USDC at most.
    let client = PayingClient::builder(buyer.clone(), Arc::new(sandbox.clone()), network)
        .channel(&url, channel, commitment_key)
        .stream_ahead(50)
        .build()?;
    let seller_before = sandbox.balance(&sandbox.usdc(), &seller.address()).await?;
    let started = Instant::now();
    let mut stream = client
        .get(&url)
        .stream_cap(10_000_000)
        .send_stream()
        .await?;
    let mut received = 0_usize;
    while let Some(event) = stream.next().await {
        let event = event?;
        if received < 24 {
            print!("{} ", event.data);
        }
        received += event.data.split(' ').count();
    }
    let elapsed = started.elapsed();
    println!("…");
    let receipt = stream
        .receipt()
        .ok_or("the stream ended without its receipt")?;
    println!(
        "{received} tokens in {:.0} ms ({:.0} tokens/s); paid {} in vouchers of 50 tokens; spent {} ({} units)",
        elapsed.as_secs_f64() * 1e3,
        received as f64 / elapsed.as_secs_f64(),
        stream.paid(),
        receipt.spent,
        receipt.units.unwrap_or_default(),
    );

    // The seller closes the channel with the best voucher: it receives what the buyer paid,
    // which is what was streamed when the stream ends on a voucher's last token (the default:
    // 1 000 tokens, vouchers of 50); a voucher's unused tokens otherwise.
    scheme.close_channel(ChannelId::try_from(channel)?).await?;
    let earned = sandbox.balance(&sandbox.usdc(), &seller.address()).await? - seller_before;
    let price = Price::parse(TOKEN_PRICE)?.amount().atomic();
    let streamed = received as i128 * price;
    println!(
        "closed: the seller received {earned}: {streamed} streamed ({received} × {price}) and {} paid ahead",
        earned - streamed
    );
    if earned != stream.paid()
        || receipt.spent != streamed
        || receipt.units != Some(received as u64)
    {
        return Err("the ledger, the receipt and the client disagree".into());
    }
    Ok(())
}
