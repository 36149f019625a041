//! stoka paid by the official TypeScript x402 client (`@x402/fetch` + `@x402/stellar`, through
//! `tests/interop/stoka.mjs`): it stores a blob and reads it back, paying both 402s with x402
//! `exact` (fees sponsored by stoka's facilitator), on loopback against the sandbox's HTTPS RPC.
//!
//! The TypeScript client also fetches a public Horizon host (to estimate ledger times; it falls
//! back to 5 s), so this runs only in a network namespace with nothing but loopback:
//! `scripts/test` runs it under `unshare -rn` with `TOWER_PAYWALL_INTEROP=1` after installing
//! the node package.

mod support;

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use stoka::dev::DevStack;
use stoka::pricing::{Limits, Rates};
use stoka::storage::RedbStorage;
use support::{interop_enabled, node, temp_dir};
use tower_paywall::stellar::Address;

async fn balance(stack: &DevStack, token: &Address, holder: &Address) -> i128 {
    stack.sandbox.balance(token, holder).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_client_stores_and_retrieves_a_blob() {
    if !interop_enabled() {
        return;
    }
    let dir = temp_dir("interop");
    let storage = Arc::new(RedbStorage::open(dir.join("stoka.redb")).unwrap());
    let support::Stack {
        dev: stack, url, ..
    } = support::start(storage, &dir, 1).await;

    let payer = stack.wallets[0].clone();
    let address = payer.address();
    let pay_to: Address = stack.config.pay_to.as_deref().unwrap().parse().unwrap();
    let (usdc, xlm) = (stack.sandbox.usdc(), stack.sandbox.xlm());
    let before = (
        balance(&stack, &usdc, &address).await,
        balance(&stack, &xlm, &address).await,
        balance(&stack, &usdc, &pay_to).await,
    );

    let blob: Vec<u8> = (0..5_000_u32).map(|i| (i * 7 % 256) as u8).collect();
    let (rpc_url, secret) = (stack.rpc.https_url().unwrap(), payer.secret_seed());
    let (usdc_id, blob_base64) = (usdc.to_string(), STANDARD.encode(&blob));
    let answer = node(
        "stoka.mjs",
        &[
            (
                "NODE_EXTRA_CA_CERTS",
                stack.rpc.certificate_path().as_os_str(),
            ),
            ("RPC_URL", rpc_url.as_ref()),
            ("PAYER_SECRET", secret.as_ref()),
            ("USDC", usdc_id.as_ref()),
            ("STOKA_URL", url.as_ref()),
            ("BLOB_KEY", "interop/blob.bin".as_ref()),
            ("BLOB_BASE64", blob_base64.as_ref()),
        ],
    )
    .await;
    eprintln!(
        "store {} (charged {}), retrieve {}; settlements {} and {}",
        answer["store"]["status"],
        answer["store"]["body"]["charged_atomic"],
        answer["retrieve"]["status"],
        answer["store"]["paymentResponse"],
        answer["retrieve"]["paymentResponse"],
    );
    let payer_id = address.to_string();
    assert_eq!(answer["payer"], payer_id.as_str());
    let store = &answer["store"];
    assert_eq!(store["status"], 200, "{answer}");
    assert_eq!(store["body"]["service"], "stoka");
    assert_eq!(store["body"]["key"], "interop/blob.bin");
    assert_eq!(store["body"]["owner_pubkey"], payer_id.as_str(), "{answer}");
    assert_eq!(store["body"]["size_bytes"], blob.len());
    let charged = store["body"]["charged_atomic"]
        .as_u64()
        .expect("charged_atomic");
    let ttl = Limits::default().default_ttl_seconds;
    assert_eq!(charged, Rates::default().store(blob.len() as u64, ttl));
    let retrieve = &answer["retrieve"];
    assert_eq!(retrieve["status"], 200, "{answer}");
    assert_eq!(retrieve["ownerPubkey"], payer_id.as_str());
    let bytes = STANDARD
        .decode(retrieve["bodyBase64"].as_str().unwrap())
        .unwrap();
    assert_eq!(bytes, blob);
    assert_eq!(retrieve["equal"], true);
    let retrieve_price = Rates::default().retrieve(blob.len() as u64);
    for (name, settled, price) in [
        ("store", &store["paymentResponse"], charged),
        ("retrieve", &retrieve["paymentResponse"], retrieve_price),
    ] {
        assert_eq!(settled["success"], true, "{name}: {answer}");
        assert_eq!(settled["amount"], price.to_string(), "{name}: {answer}");
        assert_eq!(settled["payer"], payer_id.as_str(), "{name}: {answer}");
        assert_eq!(settled["network"], "stellar:testnet", "{name}: {answer}");
        assert!(
            settled["transaction"]
                .as_str()
                .is_some_and(|hash| !hash.is_empty())
        );
    }

    // The payer paid exactly the two prices, in USDC only: the facilitator paid the fees.
    let paid = i128::from(charged) + i128::from(retrieve_price);
    assert_eq!(balance(&stack, &usdc, &address).await, before.0 - paid);
    assert_eq!(balance(&stack, &xlm, &address).await, before.1);
    assert_eq!(balance(&stack, &usdc, &pay_to).await, before.2 + paid);
    let _ = std::fs::remove_dir_all(&dir);
}
