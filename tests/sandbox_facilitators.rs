//! Several `LocalFacilitator` instances (replicas of one facilitator) share one pool of source
//! accounts through leases: every settlement lands, and no account carries two settlements in
//! one ledger, whichever instance sent them. (Without the shared leases the same run fails:
//! instances send from one account at once, and the network refuses the extra transactions:
//! `settle_exact_stellar_transaction_submission_failed`.)
#![cfg(feature = "sandbox")]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tower_paywall::sandbox::{Sandbox, SandboxConfig};
use tower_paywall::stellar::rpc::{SorobanRpc, TransactionHash};
use tower_paywall::stellar::xdr::{Limits, TransactionEnvelope, WriteXdr};
use tower_paywall::stellar::{Address, Keypair, Network, TransferOrder, prepare_transfer};
use tower_paywall::store::{Leases, MemoryLeases};
use tower_paywall::x402::{Facilitator, FacilitatorRequest, LocalFacilitator, PaymentRequirements};

const AMOUNT: i128 = 10_000;
const INSTANCES: usize = 3;
const ACCOUNTS: usize = 4;
const PAYMENTS: usize = 36;

async fn replicas_share_their_accounts(leases: Arc<dyn Leases>) {
    let config = SandboxConfig::default().ledger_period(Duration::from_millis(250));
    let sandbox = Sandbox::start(config).unwrap();
    let mut accounts: Vec<Keypair> = Vec::new();
    for _ in 0..ACCOUNTS {
        accounts.push(sandbox.funded_keypair().await.unwrap());
    }
    let instances: Vec<LocalFacilitator> = (0..INSTANCES)
        .map(|_| {
            let mut builder =
                LocalFacilitator::builder(sandbox.clone(), Network::testnet(), accounts[0].clone())
                    .asset(sandbox.usdc())
                    .leases(leases.clone());
            for account in &accounts[1..] {
                builder = builder.channel(account.clone());
            }
            builder.build().unwrap()
        })
        .collect();
    let pay_to = sandbox.funded_keypair().await.unwrap().address();
    let mut extra = serde_json::Map::new();
    extra.insert("areFeesSponsored".into(), true.into());
    let requirements = PaymentRequirements {
        scheme: "exact".into(),
        network: "stellar:testnet".into(),
        amount: AMOUNT.to_string(),
        asset: sandbox.usdc().to_string(),
        pay_to: pay_to.to_string(),
        max_timeout_seconds: 600,
        extra,
    };
    // Valid for 120 ledgers (30 s): long enough for every payment to wait its turn.
    let order = TransferOrder::sponsored(sandbox.usdc(), pay_to, AMOUNT, 120);
    let mut payloads = Vec::new();
    for _ in 0..PAYMENTS {
        let payer = sandbox.funded_keypair().await.unwrap();
        let envelope = prepare_transfer(&sandbox, &Network::testnet(), &payer, &order)
            .await
            .unwrap();
        let payload = serde_json::json!({
            "x402Version": 2,
            "payload": { "transaction": envelope.to_xdr_base64(Limits::none()).unwrap() },
            "accepted": requirements,
        });
        payloads.push(serde_json::value::RawValue::from_string(payload.to_string()).unwrap());
    }
    let before = sandbox.balance(&sandbox.usdc(), &pay_to).await.unwrap();
    // Round robin over the instances, all at once.
    let mut settlements = tokio::task::JoinSet::new();
    for (n, raw) in payloads.into_iter().enumerate() {
        let facilitator = instances[n % INSTANCES].clone();
        let requirements = requirements.clone();
        settlements.spawn(async move {
            let request = FacilitatorRequest {
                x402_version: 2,
                payment_payload: &raw,
                payment_requirements: &requirements,
            };
            facilitator.settle(&request).await.unwrap()
        });
    }
    let mut hashes = Vec::new();
    while let Some(answer) = settlements.join_next().await {
        let answer = answer.unwrap();
        assert!(answer.success, "{answer:?}");
        hashes.push(answer.transaction);
    }
    assert_eq!(
        sandbox.balance(&sandbox.usdc(), &pay_to).await.unwrap() - before,
        AMOUNT * PAYMENTS as i128,
        "every payment moved once"
    );
    // Which account sent each settlement, in which ledger: never one account twice in one.
    let mut per_ledger: HashMap<(Address, u32), usize> = HashMap::new();
    for hash in hashes {
        let hash: TransactionHash = hash.parse().unwrap();
        let info = sandbox.transaction(&hash).await.unwrap();
        let Some(TransactionEnvelope::Tx(v1)) = info.envelope else {
            panic!("a settlement is a plain transaction");
        };
        let source = Address::from_muxed_account(&v1.tx.source_account);
        assert!(accounts.iter().any(|account| account.address() == source));
        *per_ledger
            .entry((source, info.ledger.unwrap()))
            .or_default() += 1;
    }
    let reused: Vec<_> = per_ledger.iter().filter(|(_, count)| **count > 1).collect();
    assert!(
        reused.is_empty(),
        "accounts used twice in one ledger: {reused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_four_accounts_one_settlement_per_account_per_ledger() {
    replicas_share_their_accounts(Arc::new(MemoryLeases::new())).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_their_accounts_through_redis() {
    use tower_paywall::store::redis::{RedisStore, test_deployments, test_namespace};
    for (label, url) in test_deployments() {
        eprintln!("three facilitators over the Redis {label}");
        let redis = RedisStore::connect(&url, &test_namespace("facilitators"))
            .await
            .unwrap();
        replicas_share_their_accounts(Arc::new(redis.leases())).await;
    }
}
