//! stoka paid by the official TypeScript clients, on loopback against the sandbox's HTTPS RPC:
//! the x402 client (`@x402/fetch` + `@x402/stellar`, through `tests/interop/stoka.mjs`) stores a
//! blob and reads it back, paying both 402s with x402 `exact` (fees sponsored by stoka's
//! facilitator); mppx's client transport, on every version line from 0.6 to 0.11, pays every kind of paid route
//! with MPP `charge` and `channel` (`tests/interop/mppx_pay.mjs`).
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

/// stoka paid through mppx's own client transport (`Mppx.create({ methods }).fetch`, through
/// `tests/interop/mppx_pay.mjs`) on every mppx line, from 0.6.31 (the line the Stellar MPP
/// SDK's users run) to 0.11.0 (the newest, as a client built on newer mppx would), with the
/// Stellar methods written after the SDK's client (`tests/interop/stellar_mpp.mjs`): one wallet stores a blob, pushes a message to another
/// wallet's mailbox and reads the blob back with `charge` (sponsored pull); the other pops the
/// message with a `channel` voucher. Every 402 mppx read spoke MPP alone, and the ledger shows
/// exactly the charged prices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mppx_pays_every_paid_route() {
    if !interop_enabled() {
        return;
    }
    let dir = temp_dir("interop-mppx");
    let storage = Arc::new(RedbStorage::open(dir.join("stoka.redb")).unwrap());
    let support::Stack {
        dev: stack, url, ..
    } = support::start(storage, &dir, 2).await;
    let (subscriber, payer) = (stack.wallets[0].clone(), stack.wallets[1].clone());
    let pay_to: Address = stack.config.pay_to.as_deref().unwrap().parse().unwrap();
    let (usdc, xlm) = (stack.sandbox.usdc(), stack.sandbox.xlm());
    let rates = Rates::default();
    let ttl = Limits::default().default_ttl_seconds;

    for mppx in support::mppx::lines(&support::workspace().join("tests/interop")) {
        let mppx = mppx.as_str();
        let before = (
            balance(&stack, &usdc, &payer.address()).await,
            balance(&stack, &xlm, &payer.address()).await,
            balance(&stack, &usdc, &pay_to).await,
            balance(&stack, &usdc, &stack.channel).await,
        );
        let blob: Vec<u8> = (0..3_000_u32).map(|i| (i * 13 % 256) as u8).collect();
        let key = format!("{mppx}/blob.bin");
        let topic = mppx.to_owned();
        let message = format!("hello from {mppx}");
        let steps = serde_json::json!([
            {
                "name": "store", "url": format!("{url}/v1/store"), "httpMethod": "POST",
                "pay": "pull", "bodyBase64": STANDARD.encode(&blob),
                "headers": {"X-Stoka-Key": key, "Content-Type": "application/octet-stream"},
            },
            {
                "name": "push", "httpMethod": "POST", "pay": "pull",
                "url": format!("{url}/v1/queue/{}/{topic}/push", subscriber.address()),
                "bodyBase64": STANDARD.encode(&message),
            },
            {
                "name": "retrieve", "url": format!("{url}/v1/retrieve/{}", key.replace('/', "%2F")),
                "pay": "pull", "headers": {"X-Stoka-Owner": payer.address().to_string()},
            },
            {
                "name": "pop", "url": format!("{url}/v1/queue/{topic}/pop"), "httpMethod": "POST",
                "pay": "channel", "channel": stack.channel.to_string(), "bodyBase64": "",
                "headers": {"Payment-Channel": stack.channel.to_string()},
            },
        ]);
        let (rpc_url, usdc_id) = (stack.rpc.https_url().unwrap(), usdc.to_string());
        let (payer_secret, subscriber_secret) = (payer.secret_seed(), subscriber.secret_seed());
        let steps = steps.to_string();
        let answer = node(
            "mppx_pay.mjs",
            &[
                (
                    "NODE_EXTRA_CA_CERTS",
                    stack.rpc.certificate_path().as_os_str(),
                ),
                ("MPPX", mppx.as_ref()),
                ("RPC_URL", rpc_url.as_ref()),
                ("USDC", usdc_id.as_ref()),
                ("PAYER_SECRET", payer_secret.as_ref()),
                ("COMMITMENT_SECRET", subscriber_secret.as_ref()),
                ("STEPS", steps.as_ref()),
            ],
        )
        .await;
        let results = answer["results"].as_array().unwrap();
        assert_eq!(results.len(), 4, "{answer}");
        for result in results {
            let name = &result["name"];
            assert_eq!(result["status"], 200, "{mppx} {name}: {result}");
            assert!(result["receipt"].is_string(), "{mppx} {name}: {result}");
            let offered = &result["offered"];
            let intent = if name == "pop" { "channel" } else { "charge" };
            assert_eq!(offered["acceptPayment"], format!("stellar/{intent}"));
            assert_eq!(offered["paymentRequired"], false, "{mppx} {name}: {result}");
            let challenges = offered["challenges"].as_array().unwrap();
            assert_eq!(challenges.len(), 1, "{mppx} {name}: {result}");
            assert_eq!(challenges[0]["intent"], intent);
        }
        let body = |n: usize| -> serde_json::Value {
            serde_json::from_str(results[n]["body"].as_str().unwrap()).unwrap()
        };
        let store = body(0);
        assert_eq!(store["key"], key.as_str());
        assert_eq!(store["owner_pubkey"], payer.address().to_string());
        let store_price = rates.store(blob.len() as u64, ttl);
        assert_eq!(store["charged_atomic"], store_price);
        let retrieved = STANDARD
            .decode(results[2]["bodyBase64"].as_str().unwrap())
            .unwrap();
        assert_eq!(retrieved, blob, "{mppx}");
        let popped = body(3);
        assert_eq!(
            popped["body"],
            STANDARD.encode(&message),
            "{mppx}: {popped}"
        );
        assert_eq!(
            popped["attributes"]["from_pubkey"],
            payer.address().to_string()
        );

        // The payer paid the three prices in USDC and no fee; the pop was a voucher, so the
        // channel's deposit has not moved.
        let paid = i128::from(store_price)
            + i128::from(rates.push(message.len() as u64))
            + i128::from(rates.retrieve(blob.len() as u64));
        assert_eq!(
            (
                balance(&stack, &usdc, &payer.address()).await,
                balance(&stack, &xlm, &payer.address()).await,
                balance(&stack, &usdc, &pay_to).await,
                balance(&stack, &usdc, &stack.channel).await,
            ),
            (before.0 - paid, before.1, before.2 + paid, before.3),
            "{mppx}: {answer}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
