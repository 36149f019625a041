//! Settlements per second through `LocalFacilitator` on the sandbox, with concurrent payers.
//!
//! `cargo run --release --example settle_load --features sandbox -- [payers] [channels] [ledger_ms]`
//! (defaults: 64 payers, 16 channel accounts, a ledger every 250 ms).
use std::time::{Duration, Instant};

use tower_paywall::sandbox::{Sandbox, SandboxConfig};
use tower_paywall::stellar::xdr::{Limits, WriteXdr};
use tower_paywall::stellar::{Network, TransferOrder, prepare_transfer};
use tower_paywall::x402::{Facilitator, FacilitatorRequest, LocalFacilitator, PaymentRequirements};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = |n: usize, default: u64| {
        std::env::args()
            .nth(n)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let (payers, channels, ledger_ms) = (arg(1, 64) as usize, arg(2, 16) as usize, arg(3, 250));
    let config = SandboxConfig::default().ledger_period(Duration::from_millis(ledger_ms));
    let sandbox = Sandbox::start(config)?;
    let mut builder = LocalFacilitator::builder(
        sandbox.clone(),
        Network::testnet(),
        sandbox.funded_keypair().await?,
    );
    for _ in 1..channels {
        builder = builder.channel(sandbox.funded_keypair().await?);
    }
    let facilitator = builder.build()?;
    let pay_to = sandbox.funded_keypair().await?.address();
    let mut extra = serde_json::Map::new();
    extra.insert("areFeesSponsored".into(), true.into());
    let requirements = PaymentRequirements {
        scheme: "exact".into(),
        network: "stellar:testnet".into(),
        amount: "10000".into(),
        asset: sandbox.usdc().to_string(),
        pay_to: pay_to.to_string(),
        max_timeout_seconds: 60,
        extra,
    };
    let order = TransferOrder::sponsored(sandbox.usdc(), pay_to, 10_000, 12);
    let mut payloads = Vec::with_capacity(payers);
    for _ in 0..payers {
        let payer = sandbox.funded_keypair().await?;
        let envelope = prepare_transfer(&sandbox, &Network::testnet(), &payer, &order).await?;
        let payload = serde_json::json!({
            "x402Version": 2,
            "payload": { "transaction": envelope.to_xdr_base64(Limits::none())? },
            "accepted": requirements,
        });
        payloads.push(serde_json::value::RawValue::from_string(
            payload.to_string(),
        )?);
    }
    let before = sandbox.balance(&sandbox.usdc(), &pay_to).await?;
    let started = Instant::now();
    let mut settlements = tokio::task::JoinSet::new();
    for raw in payloads {
        let (facilitator, requirements) = (facilitator.clone(), requirements.clone());
        settlements.spawn(async move {
            let request = FacilitatorRequest {
                x402_version: 2,
                payment_payload: &raw,
                payment_requirements: &requirements,
            };
            facilitator.settle(&request).await
        });
    }
    let mut settled = 0;
    while let Some(outcome) = settlements.join_next().await {
        match outcome? {
            Ok(answer) if answer.success => settled += 1,
            other => eprintln!("not settled: {other:?}"),
        }
    }
    let elapsed = started.elapsed();
    let moved = sandbox.balance(&sandbox.usdc(), &pay_to).await? - before;
    println!(
        "{settled}/{payers} settled in {:.2} s = {:.1} settlements/s ({channels} channel accounts, a ledger every {ledger_ms} ms); recipient +{moved}",
        elapsed.as_secs_f64(),
        f64::from(settled) / elapsed.as_secs_f64(),
    );
    assert_eq!(
        moved,
        i128::from(settled) * 10_000,
        "every settlement moved its amount once"
    );
    Ok(())
}
