//! `/metrics` after a few paid requests: the payment layers' counters, scraped as Prometheus
//! text, say exactly what happened. (A test binary of its own: the `metrics` facade has one
//! recorder per process, and other tests' payments would count too.)

mod support;

use std::sync::Arc;

use stoka::storage::RedbStorage;
use support::temp_dir;
use tower_paywall::Intent;
use tower_paywall::client::payment;

/// The value of the sample `name{labels}` in Prometheus text (`0` when absent).
fn sample(text: &str, name: &str, labels: &str) -> f64 {
    let wanted = if labels.is_empty() {
        name.to_owned()
    } else {
        format!("{name}{{{labels}}}")
    };
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            (series == wanted).then(|| value.parse().ok())?
        })
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_was_paid() {
    let dir = temp_dir("metrics");
    let storage = Arc::new(RedbStorage::open(dir.join("stoka.redb")).unwrap());
    let stack = support::start(storage, &dir, 2).await;
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_url = stoka::metrics::spawn(metrics).unwrap();

    // Two stores by x402, one by MPP charge, and one 402 nobody pays.
    for (n, intent, key) in [
        (0, Intent::X402_EXACT, "a"),
        (0, Intent::X402_EXACT, "b"),
        (1, Intent::MPP_CHARGE, "c"),
    ] {
        let response = stack
            .payer(n, intent)
            .post(format!("{}/v1/store", stack.url))
            .header("x-stoka-key", key)
            .body(vec![1; 100])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(payment(&response).unwrap().intent, intent);
    }
    let unpaid = reqwest::Client::new()
        .post(format!("{}/v1/store", stack.url))
        .header("x-stoka-key", "d")
        .body(vec![1; 100])
        .send()
        .await
        .unwrap();
    assert_eq!(unpaid.status(), 402);

    let scrape = reqwest::get(&metrics_url).await.unwrap();
    assert_eq!(scrape.status(), 200);
    assert!(
        scrape.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = scrape.text().await.unwrap();
    let settled = |intent: &str| {
        sample(
            &text,
            "tower_paywall_settlements_total",
            &format!("intent=\"{intent}\",outcome=\"settled\""),
        )
    };
    assert_eq!(settled("x402/exact"), 2.0, "{text}");
    assert_eq!(settled("mpp/charge"), 1.0, "{text}");
    let accepted = |intent: &str| {
        sample(
            &text,
            "tower_paywall_verifications_total",
            &format!("intent=\"{intent}\",outcome=\"accepted\""),
        )
    };
    assert_eq!(accepted("x402/exact"), 2.0, "{text}");
    assert_eq!(accepted("mpp/charge"), 1.0, "{text}");
    // Each paying client met one 402 first, and the unpaid request one more.
    assert_eq!(
        sample(&text, "tower_paywall_payment_required_total", ""),
        4.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "tower_paywall_settlements_in_flight", ""),
        0.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "tower_paywall_settle_seconds_count",
            "intent=\"x402/exact\""
        ),
        2.0,
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
