//! `paywall pay` between `curl` and two services on one sandbox ledger: stoka (its own dev
//! stack) and a gateway built on the same ledger (`paywall::dev::sell_on`). `curl` knows
//! nothing of payments; what moved is read from the ledger.

mod support;

use std::sync::Arc;
use std::time::Duration;

use paywall::pay::{self, PayOptions, PayProxy};
use serde_json::Value;
use tower_paywall::client::PayingClient;
use tower_paywall::stellar::{Address, Network, SorobanRpc};

const SECRET: &str = "a secret shared with the upstream, 32 bytes or more";

/// Runs `curl -s -i args…` and splits its answer into the status, the headers and the body.
async fn curl(args: &[&str]) -> (u16, String, String) {
    let output = tokio::process::Command::new("curl")
        .args(["-s", "-i", "--max-time", "60"])
        .args(args)
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .output()
        .await
        .expect("curl runs (scripts/test installs it)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_owned())
}

async fn proxy(client: PayingClient, options: PayOptions) -> (PayProxy, String) {
    let proxy = PayProxy::new(client, options).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(pay::serve(listener, proxy.clone(), std::future::pending()));
    (proxy, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_paywall_pay_pays_stoka_and_a_gateway_once_each_and_a_dear_route_is_refused_before_signing()
 {
    // stoka, on its dev stack, and a gateway on the same ledger, in front of an upstream.
    let dir = std::env::temp_dir().join(format!("paywall-pay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (upstream, log) = support::upstream(SECRET.to_owned()).await;
    let routes = format!(
        "upstream = \"{upstream}\"\n[[route]]\nmethod = \"GET\"\npath = \"/weather/{{city}}\"\nprice = \"0.001\"\n"
    );
    let support::Beside {
        stoka,
        stoka_url,
        gateway_url,
        gateway_pay_to,
    } = support::stoka_and_gateway(&dir, &routes, SECRET).await;

    // The agent's proxy, paying from stoka's first demo wallet.
    let wallet = stoka.wallets[0].clone();
    let rpc = Arc::new(stoka.sandbox.clone()) as Arc<dyn SorobanRpc>;
    let http = pay::http_client(paywall::upstream::tls_config(None).unwrap()).unwrap();
    let client_of = |options: &PayOptions| {
        PayingClient::builder(wallet.clone(), rpc.clone(), Network::testnet())
            .http(http.clone())
            .policy(pay::policy(options))
            .build()
            .unwrap()
    };
    let options = PayOptions {
        max_per_payment: Some(1_000_000),
        budget: Some(10_000_000),
        quiet: true,
        ..PayOptions::default()
    };
    let (paying, proxy_url) = proxy(client_of(&options), options).await;

    let usdc = stoka.sandbox.usdc();
    let stoka_payee: Address = stoka.config.pay_to.as_deref().unwrap().parse().unwrap();
    let balance = |holder: Address| {
        let sandbox = stoka.sandbox.clone();
        async move { sandbox.balance(&usdc, &holder).await.unwrap() }
    };
    let before = (
        balance(wallet.address()).await,
        balance(stoka_payee).await,
        balance(gateway_pay_to.address()).await,
    );

    // stoka's store, through the proxy as HTTP_PROXY.
    let blob = dir.join("blob.bin");
    std::fs::write(&blob, vec![42u8; 2_000]).unwrap();
    let data = format!("@{}", blob.display());
    let store_url = format!("{stoka_url}/v1/store");
    let (status, head, body) = curl(&[
        "-x",
        &proxy_url,
        "-H",
        "X-Stoka-Key: through-the-proxy",
        "--data-binary",
        &data,
        &store_url,
    ])
    .await;
    assert_eq!(status, 200, "{head}\n{body}");
    let stored: Value = serde_json::from_str(&body).unwrap();
    let stoka_price: i128 = stored["charged_atomic"].as_i64().unwrap().into();
    assert!(head.contains("paywall-paid: "), "{head}");

    // The gateway, once as HTTP_PROXY and once through the forward form.
    let (status, head, body) =
        curl(&["-x", &proxy_url, &format!("{gateway_url}/weather/paris")]).await;
    assert_eq!(status, 200, "{head}\n{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["payer"], wallet.address().to_string());
    assert!(head.contains("paywall-paid: 10000"), "{head}");
    let forward = format!("{proxy_url}/{gateway_url}/weather/rome?units=c");
    let (status, _, body) = curl(&[&forward]).await;
    assert_eq!(status, 200, "{body}");

    let after = (
        balance(wallet.address()).await,
        balance(stoka_payee).await,
        balance(gateway_pay_to.address()).await,
    );
    assert_eq!(
        after.0,
        before.0 - stoka_price - 20_000,
        "the payer paid each once"
    );
    assert_eq!(after.1, before.1 + stoka_price, "stoka got its price");
    assert_eq!(after.2, before.2 + 20_000, "the gateway got two");
    assert_eq!(paying.spent(), stoka_price + 20_000);

    // What it spent, as the proxy tells it.
    let (status, _, body) = curl(&[&format!("{proxy_url}{}", pay::SPEND_PATH)]).await;
    assert_eq!(status, 200);
    let spend: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(spend["spent"], (stoka_price + 20_000).to_string());
    let payments = spend["payments"].as_array().unwrap();
    assert_eq!(payments.len(), 3);
    assert!(
        payments
            .iter()
            .all(|p| p["receipt"] == true && p["status"] == 200)
    );
    assert_eq!(
        payments[2]["url"],
        format!("{gateway_url}/weather/rome?units=c")
    );

    // A route dearer than the cap: refused before anything is signed.
    let capped = PayOptions {
        max_per_payment: Some(5_000),
        quiet: true,
        ..PayOptions::default()
    };
    let (capped_proxy, capped_url) = proxy(client_of(&capped), capped).await;
    let (status, head, body) =
        curl(&["-x", &capped_url, &format!("{gateway_url}/weather/oslo")]).await;
    assert_eq!(status, 402, "{head}\n{body}");
    assert!(head.contains("paywall-refused: over-limit"), "{head}");
    assert!(body.contains("more than the cap of 5000"), "{body}");
    assert_eq!(capped_proxy.spent(), 0);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(balance(wallet.address()).await, after.0, "nothing moved");

    // TLS is not intercepted: CONNECT is refused with the way to go.
    let (status, _, body) = curl(&["-p", "-x", &proxy_url, "https://127.0.0.1:9/"]).await;
    assert_eq!(status, 405, "{body}");

    // With a token, a request without it spends nothing (407); with it, as the proxy's
    // password or in Paywall-Pay-Token, it is paid, and the token goes no further.
    let guarded = PayOptions {
        token: Some("t0ken-of-this-agent".into()),
        quiet: true,
        ..PayOptions::default()
    };
    let (guarded_proxy, guarded_url) = proxy(client_of(&guarded), guarded).await;
    let weather = format!("{gateway_url}/weather/bern");
    let (status, head, _) = curl(&["-x", &guarded_url, &weather]).await;
    assert_eq!(status, 407, "{head}");
    assert!(
        head.contains("proxy-authenticate: basic realm=\"paywall pay\""),
        "{head}"
    );
    let (status, _, _) = curl(&[&format!("{guarded_url}/_paywall/spend")]).await;
    assert_eq!(status, 407);
    assert_eq!(guarded_proxy.spent(), 0);
    let with_password = guarded_url.replace("http://", "http://agent:t0ken-of-this-agent@");
    let (status, head, body) = curl(&["-x", &with_password, &weather]).await;
    assert_eq!(status, 200, "{head}\n{body}");
    let forward = format!("{guarded_url}/{weather}");
    let (status, _, body) = curl(&["-H", "Paywall-Pay-Token: t0ken-of-this-agent", &forward]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(guarded_proxy.spent(), 20_000);
    let seen = log.lock().unwrap().last().cloned().unwrap();
    assert!(seen.headers.get("paywall-pay-token").is_none());
    assert!(seen.headers.get("proxy-authorization").is_none());
    let _ = std::fs::remove_dir_all(dir);
}
