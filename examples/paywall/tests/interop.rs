//! Two APIs not written in Rust, each sold through `paywall dev`'s stack and paid by the
//! official clients as they ship:
//!
//! - the upstreams: `examples/paywall/demo/upstream.py` (Python, standard library only) and
//!   `tests/interop/paywall_upstream.mjs` (Node, express), each checking the payer headers'
//!   signature with the shared secret (a payer it names is one the gateway verified);
//! - the payers: `@x402/fetch` with `@x402/stellar` (`tests/interop/client.mjs`), and mppx's
//!   own client transport on every mppx line the interop package installs, with the Stellar
//!   methods written after the Stellar MPP SDK's client (`tests/interop/mppx_pay.mjs`; that SDK
//!   is not on the registry).
//!
//! What moved is read from the ledger. Run by `scripts/test` (it installs the node package and
//! runs these in a loopback-only network namespace).

#[path = "../../../tests/support/mppx.rs"]
mod mppx;
#[path = "../../../tests/support/node.rs"]
mod node_scripts;
mod support;

use std::ffi::OsStr;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use node_scripts::{interop_enabled, node, workspace};
use serde_json::Value;
use sha2::{Digest, Sha256};
use support::{World, raw};
use tokio::io::AsyncBufReadExt;

const SECRET: &str = "the secret the gateway and the upstream share, 32+ bytes";

fn routes(upstream: &str) -> String {
    let demo =
        std::fs::read_to_string(workspace().join("examples/paywall/demo/routes.toml")).unwrap();
    demo.replace("http://127.0.0.1:8000", upstream)
}

/// Starts an upstream with `program args…` (cwd `dir`), once it printed its first line.
async fn upstream(
    program: &str,
    args: &[&str],
    dir: &std::path::Path,
) -> (tokio::process::Child, String) {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .arg(port.to_string())
        .current_dir(dir)
        .env("PAYWALL_UPSTREAM_SECRET", SECRET)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|error| panic!("{program} runs: {error}"));
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the upstream starts within 30 s");
    assert!(first.unwrap().is_some(), "{program} printed nothing");
    (child, format!("http://127.0.0.1:{port}"))
}

fn body(result: &Value) -> Value {
    serde_json::from_str(result["body"].as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_express_upstreams_are_sold_to_the_official_clients() {
    if !interop_enabled() {
        return;
    }
    let package = workspace().join("tests/interop");
    let demo = workspace().join("examples/paywall/demo");
    let upstreams = [
        ("python", upstream("python3", &["upstream.py"], &demo).await),
        (
            "express",
            upstream("node", &["paywall_upstream.mjs"], &package).await,
        ),
    ];
    for (name, (_child, upstream_url)) in &upstreams {
        let world = World::start(&routes(upstream_url), upstream_url, SECRET, 2).await;
        let rpc_url = world.stack.rpc.https_url().unwrap();
        let certificate = world.stack.rpc.certificate_path().to_owned();
        let usdc = world.stack.sandbox.usdc().to_string();
        let (x402_payer, mpp_payer) = (world.wallet(0).clone(), world.wallet(1).clone());

        // @x402/fetch pays a route; the upstream names the payer it verified.
        let before = world.balances(0).await;
        let url = format!("{}/weather/paris", world.url);
        let secret = x402_payer.secret_seed();
        let env = |url: &str| -> Vec<(&'static str, std::ffi::OsString)> {
            vec![
                ("NODE_EXTRA_CA_CERTS", certificate.clone().into()),
                ("URL_TO_PAY", url.into()),
                ("RPC_URL", rpc_url.clone().into()),
                ("PAYER_SECRET", secret.clone().into()),
                ("USDC", usdc.clone().into()),
            ]
        };
        let run = |env: Vec<(&'static str, std::ffi::OsString)>| async move {
            let env: Vec<(&str, &OsStr)> = env.iter().map(|(n, v)| (*n, v.as_os_str())).collect();
            node("client.mjs", &env).await
        };
        let paid = run(env(&url)).await;
        assert_eq!(paid["status"], 200, "{name}: {paid}");
        assert!(paid["paymentResponse"].is_string(), "{name}: {paid}");
        let answer = body(&paid);
        assert_eq!(
            answer["payer"],
            x402_payer.address().to_string(),
            "{name}: {answer}"
        );
        assert_eq!(answer["intent"], "x402/exact");
        assert_eq!(answer["amount"], "10000");
        let after = world.balances(0).await;
        assert_eq!(after, (before.0 - 10_000, before.1 + 10_000), "{name}");

        // An upstream 500 is not charged.
        let failed = run(env(&format!("{}/fail", world.url))).await;
        assert_eq!(failed["status"], 500, "{name}: {failed}");
        assert!(failed["paymentResponse"].is_null(), "{name}: {failed}");
        world.settle_time().await;
        assert_eq!(
            world.balances(0).await,
            after,
            "{name}: nothing moved for the 500"
        );

        // mppx, every line: a route by GET, an upload priced by its length, and (on the
        // first line) the failing route, not charged.
        let upload: Vec<u8> = (0..3_000_u32).map(|i| (i * 7 % 251) as u8).collect();
        for (n, line) in mppx::lines(&package).iter().enumerate() {
            let before = world.balances(1).await;
            let mut steps = vec![
                serde_json::json!({"name": "weather", "url": format!("{}/weather/{line}", world.url), "pay": "pull"}),
                serde_json::json!({"name": "upload", "url": format!("{}/upload", world.url),
                    "httpMethod": "POST", "pay": "pull", "bodyBase64": STANDARD.encode(&upload),
                    "headers": {"Content-Type": "application/octet-stream"}}),
            ];
            if n == 0 {
                steps.push(serde_json::json!({"name": "fail", "url": format!("{}/fail", world.url), "pay": "pull"}));
            }
            let steps = Value::Array(steps).to_string();
            let mpp_secret = mpp_payer.secret_seed();
            let env: Vec<(&str, &OsStr)> = vec![
                ("NODE_EXTRA_CA_CERTS", certificate.as_os_str()),
                ("MPPX", OsStr::new(line)),
                ("RPC_URL", OsStr::new(&rpc_url)),
                ("USDC", OsStr::new(&usdc)),
                ("PAYER_SECRET", OsStr::new(&mpp_secret)),
                ("COMMITMENT_SECRET", OsStr::new(&mpp_secret)),
                ("STEPS", OsStr::new(&steps)),
            ];
            let answer = node("mppx_pay.mjs", &env).await;
            let results = answer["results"].as_array().unwrap();
            for result in &results[..2] {
                assert_eq!(result["status"], 200, "{name} {line}: {result}");
                assert!(result["receipt"].is_string(), "{name} {line}: {result}");
                let answer = body(result);
                assert_eq!(answer["payer"], mpp_payer.address().to_string());
                assert_eq!(answer["intent"], "mpp/charge", "{name} {line}: {answer}");
            }
            let uploaded = body(&results[1]);
            assert_eq!(uploaded["bytes"], 3000);
            assert_eq!(uploaded["sha256"], hex::encode(Sha256::digest(&upload)));
            assert_eq!(uploaded["amount"], "13000");
            if n == 0 {
                assert_eq!(results[2]["status"], 500, "{name} {line}: {}", results[2]);
                assert!(results[2]["receipt"].is_null());
                world.settle_time().await;
            }
            let after = world.balances(1).await;
            assert_eq!(
                after,
                (before.0 - 23_000, before.1 + 23_000),
                "{name} {line}"
            );
        }

        // A body larger than the route sells, and one without a length: refused before any
        // 402, as the route says.
        let (status, _) = raw(
            &world.url,
            "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(status, 413, "{name}");
        let (status, _) = raw(
            &world.url,
            "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        )
        .await;
        assert_eq!(status, 411, "{name}");
        // A free route takes a chunked body through to the upstream whole.
        let (status, text) = raw(
            &world.url,
            "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        )
        .await;
        assert_eq!(status, 200, "{name}: {text}");
    }
}
