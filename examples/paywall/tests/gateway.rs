//! The gateway on a sandbox ledger (the real Soroban host, our facilitator), in front of an
//! upstream written here with axum that records what it receives and checks the payer
//! headers' signature with the shared secret. Payers are `PayingClient`s of the demo wallets;
//! what moved is read from the ledger.

mod support;

use http::StatusCode;
use paywall::payer;
use paywall::routes::Routes;
use paywall::server;
use serde_json::{Value, json};
use support::{Log, Seen, World, raw, upstream};
use tower_paywall::Intent;
use tower_paywall::client::payment;

const SECRET: &str = "a secret shared with the upstream, 32 bytes or more";

fn routes(upstream: &str) -> String {
    format!(
        r#"
upstream = "{upstream}"
title = "test service"

[[route]]
method = "GET"
path = "/weather/{{city}}"
price = "0.001"
description = "Today's weather"

[[route]]
method = "POST"
path = "/upload"
price = {{ base = "0.001", per_kib = "0.0001", max_bytes = 4096 }}

[[route]]
path = "/fail"
price = "0.001"

[[route]]
path = "/slow"
price = "0.001"

[[route]]
path = "/before/{{x}}"
price = "0.002"
settle = "before"

[[route]]
method = "GET"
path = "/channel"
price = "0.001"
intents = ["channel"]

[[route]]
path = "/free/*"
price = "free"
"#
    )
}

async fn world() -> (World, Log) {
    let (upstream, log) = upstream(SECRET.to_owned()).await;
    let world = World::start(&routes(&upstream), &upstream, SECRET, 2).await;
    (world, log)
}

/// Serves the test routes in front of `upstream` from now on.
fn sell(world: &World, upstream: &str) {
    let routes = Routes::parse(&routes(upstream)).unwrap();
    world.stack.selling.gateway.reload(routes).unwrap();
}

fn last_seen(log: &Log) -> Seen {
    log.lock().unwrap().last().cloned().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x402_and_mpp_charge_each_pay_and_the_upstream_sees_the_signed_payer() {
    let (world, log) = world().await;
    let payer = world.wallet(0).address().to_string();
    for (intent, name) in [
        (Intent::X402_EXACT, "x402/exact"),
        (Intent::MPP_CHARGE, "mpp/charge"),
    ] {
        let before = world.balances(0).await;
        let response = world
            .payer(0, intent)
            .get(format!("{}/weather/paris?units=c", world.url))
            // A payer header of the client's own never reaches the upstream.
            .header("Paywall-Payer", "GFORGEDFORGEDFORGED")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{name}");
        let paid = payment(&response).unwrap().clone();
        assert_eq!(paid.amount, 10_000);
        assert!(paid.receipt.is_some(), "{name}: a receipt");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["payer"], json!(payer), "{name}: the verified payer");
        let seen = last_seen(&log);
        assert_eq!(seen.path, "/weather/paris?units=c");
        assert_eq!(seen.headers[payer::INTENT], name);
        assert_eq!(seen.headers[payer::AMOUNT], "10000");
        assert_eq!(seen.headers[payer::PAYMENT].len(), 64);
        assert_eq!(seen.headers.get_all(payer::PAYER).iter().count(), 1);
        // The credential stays at the gateway.
        for header in ["payment-signature", "x-payment", "authorization"] {
            assert!(
                seen.headers.get(header).is_none(),
                "{name}: {header} forwarded"
            );
        }
        let after = world.balances(0).await;
        assert_eq!(after.0, before.0 - 10_000, "{name}: the payer paid once");
        assert_eq!(
            after.1,
            before.1 + 10_000,
            "{name}: the gateway's payee got it"
        );
    }
    // A free route: no payer headers, and the client's own are removed.
    let free = reqwest::Client::new()
        .get(format!("{}/free/a/b", world.url))
        .header("Paywall-Payer", "GFORGED")
        .header("Paywall_Payer", "GFORGED")
        .header("Paywall-Signature", "t=1,v1=00")
        .header("X-Forwarded-Host", "evil.example")
        .header("Forwarded", "host=evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(free.status(), StatusCode::OK);
    let body: Value = free.json().await.unwrap();
    assert_eq!(body["payer"], Value::Null);
    let seen = last_seen(&log);
    assert!(
        seen.headers
            .keys()
            .all(|name| !name.as_str().starts_with("paywall-"))
    );
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_timeouts_and_absence_are_not_charged() {
    let (world, log) = world().await;
    let client = world.payer(0, Intent::X402_EXACT);
    let charge = world.payer(0, Intent::MPP_CHARGE);
    let before = world.balances(0).await;
    for (client, path, status) in [
        (&client, "/fail", StatusCode::INTERNAL_SERVER_ERROR),
        (&charge, "/fail", StatusCode::INTERNAL_SERVER_ERROR),
        (&client, "/slow", StatusCode::GATEWAY_TIMEOUT),
    ] {
        let response = client
            .get(format!("{}{path}", world.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{path}");
        assert!(
            response.headers().get("payment-response").is_none()
                && response.headers().get("payment-receipt").is_none(),
            "{path}: no receipt"
        );
    }
    // Both failures were the upstream's answers to verified payments.
    let failed = log
        .lock()
        .unwrap()
        .iter()
        .filter(|seen| seen.path == "/fail")
        .count();
    assert_eq!(failed, 2);
    // The upstream goes away: the next file names a port nothing listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    sell(&world, &gone);
    let response = client
        .get(format!("{}/weather/rome", world.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["detail"], "the upstream cannot be reached");
    world.settle_time().await;
    assert_eq!(world.balances(0).await, before, "nothing moved");
    // Back to the upstream: paid and charged once.
    sell(&world, &world.upstream);
    let response = client
        .get(format!("{}/weather/rome", world.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(world.balances(0).await.0, before.0 - 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prices_by_length_refuse_chunked_and_oversized_bodies_and_charge_by_the_kib() {
    let (world, log) = world().await;
    let seen_before = log.lock().unwrap().len();
    // Chunked: no length to price by.
    let (status, body) = raw(
        &world.url,
        "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status, 411, "{body}");
    assert!(body.contains("Content-Length"), "{body}");
    // Larger than the route sells: refused before a 402, the body unread.
    let (status, body) = raw(
        &world.url,
        "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 4097\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("4096"), "{body}");
    assert_eq!(
        log.lock().unwrap().len(),
        seen_before,
        "nothing went upstream"
    );
    // 3 000 bytes: the base and three KiB begun, 0.0013 USDC.
    let before = world.balances(0).await;
    let response = world
        .payer(0, Intent::X402_EXACT)
        .post(format!("{}/upload", world.url))
        .body(vec![7u8; 3000])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(payment(&response).unwrap().amount, 13_000);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["bytes"], 3000);
    assert_eq!(world.balances(0).await.0, before.0 - 13_000);
    // A free route streams a chunked body through whole.
    let (status, body) = raw(
        &world.url,
        "POST /free/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(last_seen(&log).bytes, 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_settled_before_gives_the_upstream_the_transaction() {
    let (world, log) = world().await;
    let before = world.balances(1).await;
    let response = world
        .payer(1, Intent::X402_EXACT)
        .get(format!("{}/before/x", world.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = last_seen(&log);
    let reference = seen.headers[payer::REFERENCE].to_str().unwrap().to_owned();
    assert_eq!(reference.len(), 64, "a transaction hash: {reference}");
    assert!(reference.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(world.balances(1).await.0, before.0 - 20_000);
    // Settled before, so an upstream failure after it is the payer's: the route says so.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_documents_describe_the_routes_and_a_bad_reload_keeps_them() {
    let (world, _log) = world().await;
    let http = reqwest::Client::new();
    let get = |path: &'static str| {
        let http = http.clone();
        let url = format!("{}{path}", world.url);
        async move {
            let response = http.get(url).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(response.headers()["cache-control"], "public, max-age=300");
            response.json::<Value>().await.unwrap()
        }
    };
    let usdc = world.stack.sandbox.usdc().to_string();
    let openapi = get("/openapi.json").await;
    assert_eq!(openapi["openapi"], "3.1.0");
    assert_eq!(openapi["info"]["title"], "test service");
    let weather = &openapi["paths"]["/weather/{city}"]["get"];
    assert_eq!(
        weather["x-payment-info"],
        json!({"offers": [{"intent": "charge", "method": "stellar", "amount": "10000",
                          "currency": usdc, "description": "Today's weather"}]})
    );
    assert!(weather["responses"]["402"].is_object());
    assert_eq!(weather["parameters"][0]["name"], "city");
    let upload = &openapi["paths"]["/upload"]["post"];
    assert_eq!(upload["x-payment-info"]["offers"][0]["amount"], Value::Null);
    assert!(upload["responses"]["411"].is_object() && upload["responses"]["413"].is_object());
    let channel = &openapi["paths"]["/channel"]["get"];
    assert_eq!(channel["x-payment-info"]["offers"][0]["intent"], "session");
    let free = &openapi["paths"]["/free/{rest}"]["get"];
    assert!(free.get("x-payment-info").is_none() && free["responses"].get("402").is_none());

    let index = get("/.well-known/x402.json").await;
    assert_eq!(index["x402Version"], 2);
    let items = index["items"].as_array().unwrap();
    let weather = items
        .iter()
        .find(|item| item["input"]["routeTemplate"] == "/weather/:city")
        .unwrap();
    assert_eq!(
        weather["resource"]["url"],
        format!("{}/weather/:city", world.url)
    );
    assert_eq!(weather["input"]["method"], "GET");
    let accepts = &weather["accepts"][0];
    assert_eq!(accepts["scheme"], "exact");
    assert_eq!(accepts["amount"], "10000");
    assert_eq!(accepts["asset"], usdc);
    assert_eq!(
        accepts["payTo"],
        world.stack.selling.pay_to.address().to_string()
    );
    // Only x402 routes: not the channel's, not the free one.
    assert_eq!(items.len(), 5, "{items:#?}");
    let list = get("/.well-known/x402").await;
    assert_eq!(list["version"], 1);
    assert_eq!(list["resources"].as_array().unwrap().len(), 5);

    // A reload that fails leaves the routes served as they were.
    let dir = std::env::temp_dir().join(format!("paywall-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("routes.toml");
    std::fs::write(
        &file,
        "upstream = \"http://u\"\n[[route]]\npath = \"/x\"\nprice = \"abc\"\n",
    )
    .unwrap();
    let gateway = &world.stack.selling.gateway;
    let error = server::reload(gateway, &file).unwrap_err().to_string();
    assert!(error.contains("route 1 (/x): price \"abc\""), "{error}");
    assert_eq!(get("/openapi.json").await, openapi);
    // A good one is served at once, discovery included.
    let cheaper = routes(&world.upstream).replace(
        "price = \"0.001\"\ndescription",
        "price = \"0.0005\"\ndescription",
    );
    std::fs::write(&file, cheaper).unwrap();
    assert_eq!(server::reload(gateway, &file).unwrap(), 7);
    let openapi = get("/openapi.json").await;
    let offer = &openapi["paths"]["/weather/{city}"]["get"]["x-payment-info"]["offers"][0];
    assert_eq!(offer["amount"], "5000");
    let response = world
        .payer(0, Intent::X402_EXACT)
        .get(format!("{}/weather/oslo", world.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(payment(&response).unwrap().amount, 5_000);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_no_route_sells_or_that_read_as_another_are_refused_before_any_payment() {
    let (world, log) = world().await;
    // Without a catch-all, what no route sells is not reachable.
    let gateway = &world.stack.selling.gateway;
    let narrow = routes(&world.upstream).replace("path = \"/free/*\"", "path = \"/free/{one}\"");
    gateway.reload(Routes::parse(&narrow).unwrap()).unwrap();
    let seen_before = log.lock().unwrap().len();
    for (path, status) in [
        ("/other", 404),
        ("/free/a/b", 404),
        ("/free/../weather/paris", 400),
        ("/free/%2e%2e/weather/paris", 400),
        ("/free%2fx", 400),
        ("//weather/paris", 400),
    ] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let (got, body) = raw(&world.url, &request).await;
        assert_eq!(got, status, "{path}: {body}");
    }
    // With a catch-all for any method, another method on a path sold for GET is refused, not
    // given away; HEAD is priced as GET; a lower-case method is refused.
    let catch_all = format!("{narrow}\n[[route]]\npath = \"/*\"\nprice = \"free\"\n");
    gateway.reload(Routes::parse(&catch_all).unwrap()).unwrap();
    for (request, status) in [
        ("POST /weather/paris", 405),
        ("PUT /weather/paris", 405),
        ("HEAD /weather/paris", 402),
        ("get /weather/paris", 400),
        ("POST /upload", 402),
    ] {
        let raw_request = format!(
            "{request} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let (got, body) = raw(&world.url, &raw_request).await;
        assert_eq!(got, status, "{request}: {body}");
    }
    let allow = reqwest::Client::new()
        .post(format!("{}/weather/paris", world.url))
        .send()
        .await
        .unwrap();
    assert_eq!(allow.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(allow.headers()["allow"], "GET");
    assert_eq!(
        log.lock().unwrap().len(),
        seen_before,
        "nothing went upstream"
    );
    // A CORS preflight of a route sold for any method goes through unpaid.
    let (status, _) = raw(
        &world.url,
        "OPTIONS /fail HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 500, "the upstream's own answer");
    assert_eq!(last_seen(&log).path, "/fail");
    let seen_before = log.lock().unwrap().len();
    // Another spelling of a sold path is sold at its price.
    let (status, _) = raw(
        &world.url,
        "GET /we%61ther/paris HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 402);
    assert_eq!(
        log.lock().unwrap().len(),
        seen_before,
        "nothing went upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_is_reached_over_rustls_and_sold() {
    let (world, _log) = world().await;
    // The sandbox's own HTTPS RPC (HTTP/2 or HTTP/1.1 by ALPN, its certificate trusted by
    // `paywall dev`) as the upstream: a JSON-RPC call sold at 0.001.
    let https = world.stack.rpc.https_url().unwrap();
    assert!(https.starts_with("https://"));
    let routes = format!(
        "upstream = \"{https}\"\n[[route]]\nmethod = \"POST\"\npath = \"/\"\nprice = \"0.001\"\n"
    );
    let gateway = &world.stack.selling.gateway;
    gateway.reload(Routes::parse(&routes).unwrap()).unwrap();
    let before = world.balances(0).await;
    let response = world
        .payer(0, Intent::X402_EXACT)
        .post(format!("{}/", world.url))
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "getHealth"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["result"]["status"], "healthy", "{answer}");
    assert_eq!(world.balances(0).await.0, before.0 - 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_payment_layers_metrics_are_served_as_prometheus_text() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = server::spawn_metrics(listener).unwrap();
    let (world, _log) = world().await;
    let response = world
        .payer(1, Intent::X402_EXACT)
        .get(format!("{}/weather/lagos", world.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = reqwest::get(&metrics).await.unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    // Counters are the process's: other tests of this binary add to them.
    for line in [
        "tower_paywall_settlements_total{intent=\"x402/exact\",outcome=\"settled\"}",
        "tower_paywall_verifications_total{intent=\"x402/exact\",outcome=\"accepted\"}",
        "tower_paywall_payment_required_total",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    let other = reqwest::get(metrics.replace("/metrics", "/other"))
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
}
