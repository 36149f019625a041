//! The usage dashboard in a real browser: headless Chromium, driven over the DevTools protocol
//! by `tests/interop/dashboard.mjs` (`puppeteer-core` from the repository's node package, with
//! the system's Chromium), loads `dashboard.html` from a stoka on loopback, signs in with demo
//! wallet 1's secret key (the page signs a `me-usage` challenge with WebCrypto Ed25519), and
//! shows what that wallet was charged for the payments this test made first. A screenshot of
//! the page is saved as `stoka-dashboard.png` in the target folder.
//!
//! It needs the node package, so it runs from `scripts/test` (`TOWER_PAYWALL_INTEROP=1`, after
//! `npm ci`), in the network namespace with nothing but loopback where the interop tests run;
//! elsewhere it is skipped. Without a `chromium` on the `PATH` it is skipped too, unless
//! `CI=true`, where that is a failure.

mod support;

use std::path::PathBuf;
use std::sync::Arc;

use stoka::storage::RedbStorage;
use support::{interop_enabled, node, temp_dir, workspace};
use tower_paywall::Intent;
use tower_paywall::client::payment;

/// The days the page is opened with, and so the bars per series.
const DAYS: usize = 7;
/// The chart's series: operations, charged, bytes in, bytes out.
const SERIES: [&str; 4] = ["operations", "charged", "bytes_in", "bytes_out"];

/// The system's Chromium, from the `PATH`.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|folder| folder.join("chromium"))
        .find(|candidate| candidate.is_file())
}

/// Where the screenshot goes: the target folder cargo builds in.
fn screenshot_path() -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace().join(dir),
        None => workspace().join("target"),
    };
    std::fs::create_dir_all(&target).unwrap();
    target.join("stoka-dashboard.png")
}

/// The width and height in a PNG's header, if `bytes` is a PNG.
fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if bytes.len() < 24 || !bytes.starts_with(SIGNATURE) || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let number = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    Some((number(16), number(20)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_what_a_wallet_was_charged() {
    if !interop_enabled() {
        return;
    }
    let Some(chromium) = chromium() else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "chromium is not installed (scripts/test installs it)"
        );
        eprintln!("chromium is not installed; the browser test is skipped");
        return;
    };
    let dir = temp_dir("browser");
    let storage = Arc::new(RedbStorage::open(dir.join("stoka.redb")).unwrap());
    let stack = support::start(storage, &dir, 1).await;
    let url = stack.url.clone();

    // Wallet 1 stores a blob and reads it back, paying both with x402 `exact`.
    let wallet = stack.dev.wallets[0].clone();
    let client = stack.payer(0, Intent::X402_EXACT);
    let blob: Vec<u8> = (0..3_000_u32).map(|i| (i % 251) as u8).collect();
    let stored = client
        .post(format!("{url}/v1/store"))
        .header("x-stoka-key", "dashboard-note")
        .header("content-length", blob.len().to_string())
        .body(blob.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status(), 200);
    let mut charged = payment(&stored).expect("the store was paid").amount;
    let retrieved = client
        .get(format!("{url}/v1/retrieve/dashboard-note"))
        .header("x-stoka-owner", wallet.address().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(retrieved.status(), 200);
    charged += payment(&retrieved).expect("the retrieve was paid").amount;
    assert_eq!(retrieved.bytes().await.unwrap(), blob);

    let screenshot = screenshot_path();
    let _ = std::fs::remove_file(&screenshot);
    let started = std::time::Instant::now();
    let page_url = format!("{url}/dashboard.html?days={DAYS}");
    let secret = wallet.secret_seed();
    let page = node(
        "dashboard.mjs",
        &[
            ("DASHBOARD_URL", page_url.as_ref()),
            ("SECRET", secret.as_ref()),
            ("CHROMIUM", chromium.as_os_str()),
            ("SCREENSHOT", screenshot.as_os_str()),
        ],
    )
    .await;
    eprintln!(
        "the browser took {:.1} s; requests: {}; console errors: {}",
        started.elapsed().as_secs_f64(),
        page["requests"],
        page["consoleErrors"]
    );

    assert_eq!(page["pageStatus"], 200, "{page}");
    assert_eq!(page["initialState"], "idle", "{page}");
    assert_eq!(page["days"], DAYS.to_string(), "{page}");
    assert_eq!(page["state"], "loaded", "{page}");
    assert_eq!(page["pageErrors"], serde_json::json!([]), "{page}");
    assert_eq!(page["outside"], serde_json::json!([]), "{page}");
    // The only thing the console may report is the browser's own request for a favicon.
    let console = page["consoleErrors"].as_array().unwrap();
    assert!(
        console.iter().all(|error| error
            .as_str()
            .is_some_and(|text| text.contains("/favicon.ico"))),
        "{page}"
    );
    assert_eq!(page["resultsHidden"], false);
    assert_eq!(page["wallet"], wallet.address().to_string());
    assert_eq!(page["chartDays"], DAYS.to_string());
    assert_eq!(page["tableRows"], DAYS);
    assert_eq!(page["bars"], DAYS * SERIES.len(), "{page}");
    for series in SERIES {
        let bars = page["series"][series].as_array().unwrap();
        assert_eq!(bars.len(), DAYS, "{series}: {page}");
    }
    // Today is the last day: both payments are there, and nothing on the days before.
    let operations = page["series"]["operations"].as_array().unwrap();
    assert_eq!(operations[DAYS - 1]["value"], "2", "{page}");
    assert!(operations[..DAYS - 1].iter().all(|bar| bar["value"] == "0"));
    let totals = &page["totals"];
    assert_eq!(totals["charged_atomic"], charged.to_string(), "{page}");
    assert_eq!(totals["operations"], "2", "{page}");
    assert_eq!(totals["bytes_in"], blob.len().to_string(), "{page}");
    assert_eq!(totals["bytes_out"], blob.len().to_string(), "{page}");
    // The key stays in the tab's session storage until "Forget key", never in local storage.
    assert_eq!(page["keptInSession"], true);
    assert_eq!(page["keptInLocal"], 0);
    let forgotten = &page["afterForget"];
    assert_eq!(forgotten["state"], "idle", "{page}");
    assert_eq!(forgotten["secret"], "");
    assert_eq!(forgotten["resultsHidden"], true);
    assert_eq!(forgotten["keptInSession"], false);
    assert_eq!(forgotten["bars"], 0);

    let png = std::fs::read(&screenshot).expect("a screenshot");
    let (width, height) = png_size(&png).expect("the screenshot is a PNG");
    assert_eq!(width, 1100, "the viewport's width");
    assert!(height >= 900, "a full page at least the viewport high");
    eprintln!(
        "screenshot: {} ({} bytes, {width}×{height})",
        screenshot.display(),
        png.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
