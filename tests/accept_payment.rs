//! Which protocols a 402 speaks, by the request's `Accept-Payment` (the table in the layer
//! docs): a route offering x402 `exact`, MPP `charge` and MPP `channel` is asked with every kind
//! of header, and each answer's headers and body are checked. Junk never fails the request.
//! The x402 facilitator is a test double (a 402 never reaches it); the MPP schemes run on the
//! sandbox ledger, with a real channel deployed so the channel offer exists.
#![cfg(feature = "sandbox")]

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use http::{HeaderValue, Request, StatusCode};
use support::{Answer, TestFacilitator, exact, keys, send};
use tower_paywall::mpp::{Challenge, MAX_ACCEPT_PAYMENT_LEN, StellarChannel, StellarCharge};
use tower_paywall::sandbox::{ChannelParams, Sandbox, SandboxConfig};
use tower_paywall::stellar::{Network, SorobanRpc};
use tower_paywall::store::MemoryChannelStore;
use tower_paywall::{PaymentLayer, Price};

struct Routes {
    /// x402 `exact`, MPP `charge` and MPP `channel`.
    all: Router,
    /// x402 `exact` alone.
    x402_only: Router,
    /// x402 `exact` and MPP `channel`, which serves no channel: MPP makes no offer.
    no_mpp_offer: Router,
    /// x402 `exact` and MPP `charge`, at a price whose description no header can carry (a
    /// control character): MPP makes no offer.
    unwritable_mpp_offer: Router,
}

async fn routes() -> Routes {
    let sandbox =
        Sandbox::start(SandboxConfig::default().ledger_period(Duration::from_millis(100))).unwrap();
    let rpc: Arc<dyn SorobanRpc> = Arc::new(sandbox.clone());
    let funder = sandbox.funded_keypair().await.unwrap();
    let recipient = sandbox.funded_keypair().await.unwrap();
    let channel = sandbox
        .deploy_channel(ChannelParams {
            token: sandbox.usdc(),
            from: &funder,
            commitment_key: funder.public_key(),
            to: recipient.address(),
            amount: 10_000_000,
            refund_waiting_period: 1_000,
        })
        .await
        .unwrap();
    let channels = StellarChannel::builder(
        Network::testnet(),
        recipient.clone(),
        rpc.clone(),
        keys(),
        Arc::new(MemoryChannelStore::new()),
    )
    .currency(sandbox.usdc())
    .build()
    .unwrap();
    let channels = Arc::new(channels);
    channels.add_channel(channel).await.unwrap();
    let charge = || {
        StellarCharge::builder(Network::testnet(), recipient.address(), rpc.clone(), keys())
            .currency(sandbox.usdc())
            .build()
            .unwrap()
    };
    let idle_channels = StellarChannel::builder(
        Network::testnet(),
        recipient.clone(),
        rpc.clone(),
        keys(),
        Arc::new(MemoryChannelStore::new()),
    )
    .currency(sandbox.usdc())
    .build()
    .unwrap();
    let facilitator = Arc::new(TestFacilitator::default());
    let price = || Price::parse("0.01").unwrap();
    let all = PaymentLayer::builder()
        .scheme(exact(&facilitator))
        .scheme(charge())
        .shared_scheme(channels)
        .price(price())
        .build()
        .unwrap();
    let x402_only = PaymentLayer::builder()
        .scheme(exact(&facilitator))
        .price(price())
        .build()
        .unwrap();
    let no_mpp_offer = PaymentLayer::builder()
        .scheme(exact(&facilitator))
        .scheme(idle_channels)
        .price(price())
        .build()
        .unwrap();
    let unwritable_mpp_offer = PaymentLayer::builder()
        .scheme(exact(&facilitator))
        .scheme(charge())
        .price(price().with_description("a bell \u{7} rings"))
        .build()
        .unwrap();
    let route = || Router::new().route("/paid", get(|| async { "content" }));
    Routes {
        all: route().layer(all),
        x402_only: route().layer(x402_only),
        no_mpp_offer: route().layer(no_mpp_offer),
        unwritable_mpp_offer: route().layer(unwritable_mpp_offer),
    }
}

/// A GET of `/paid` with the given `Accept-Payment` field lines (raw bytes) and other headers.
fn request(accept: &[&[u8]], other: &[(&str, &str)]) -> Request<axum::body::Body> {
    let mut builder = Request::builder()
        .uri("/paid")
        .header(http::header::HOST, "example.com");
    for line in accept {
        builder = builder.header("accept-payment", HeaderValue::from_bytes(line).unwrap());
    }
    for (name, value) in other {
        builder = builder.header(*name, *value);
    }
    builder.body(axum::body::Body::empty()).unwrap()
}

/// What a 402 carries: whether x402's header and body fields are there, and the MPP
/// challenges' intents in order.
#[derive(Debug, PartialEq)]
struct Rendered {
    x402: bool,
    mpp: Vec<String>,
}

fn rendered(answer: &Answer) -> Rendered {
    let header = answer.headers.contains_key("payment-required");
    let body = answer.json();
    let fields = body.get("x402Version").is_some() || body.get("accepts").is_some();
    assert_eq!(
        header, fields,
        "x402's header and body fields go together: {body}"
    );
    let challenges = match answer.headers.contains_key("www-authenticate") {
        true => Challenge::from_headers(&answer.headers).unwrap(),
        false => Vec::new(),
    };
    let mpp = challenges
        .into_iter()
        .map(|challenge| {
            assert_eq!(challenge.method, "stellar");
            challenge.intent
        })
        .collect();
    Rendered { x402: header, mpp }
}

fn expect(x402: bool, mpp: &[&str]) -> Rendered {
    Rendered {
        x402,
        mpp: mpp.iter().map(|intent| (*intent).to_owned()).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_payment_decides_which_protocols_the_402_speaks() {
    let routes = routes().await;
    let element = b"stellar/charge, ".as_slice();
    let over_long = element.repeat(MAX_ACCEPT_PAYMENT_LEN / element.len() + 1);
    let everything = expect(true, &["charge", "channel"]);
    let table: Vec<(&str, Vec<&[u8]>, Rendered)> = vec![
        ("absent", vec![], everything),
        (
            "stellar/charge (what mppx sends with a charge method)",
            vec![b"stellar/charge"],
            expect(false, &["charge"]),
        ),
        (
            "stellar/*",
            vec![b"stellar/*"],
            expect(false, &["charge", "channel"]),
        ),
        ("*/*", vec![b"*/*"], expect(false, &["charge", "channel"])),
        (
            "stellar/channel;q=0",
            vec![b"stellar/channel;q=0"],
            expect(false, &["charge"]),
        ),
        (
            "weights order the challenges",
            vec![b"stellar/charge;q=0.5, stellar/channel"],
            expect(false, &["channel", "charge"]),
        ),
        (
            "several field lines are one list",
            vec![b"stellar/charge;q=0.2", b"stellar/channel;q=0.7"],
            expect(false, &["channel", "charge"]),
        ),
        (
            "excluding every MPP challenge: all of them (a 402 must offer something)",
            vec![b"*/*;q=0"],
            expect(false, &["charge", "channel"]),
        ),
        (
            "stellar/*;q=0, */charge: equally specific, the heavier wins (as mppx ranks)",
            vec![b"stellar/*;q=0, */charge"],
            expect(false, &["charge"]),
        ),
        (
            "well-formed but accepting none of ours: every MPP challenge",
            vec![b"tempo/charge"],
            expect(false, &["charge", "channel"]),
        ),
        (
            "junk is ignored",
            vec![b"stellar charge; q=zero, ,,"],
            expect(true, &["charge", "channel"]),
        ),
        (
            "bytes that are not UTF-8 are ignored",
            vec![b"stellar/\xffcharge"],
            expect(true, &["charge", "channel"]),
        ),
        (
            "an over-long header is ignored",
            vec![&over_long],
            expect(true, &["charge", "channel"]),
        ),
    ];
    for (case, lines, want) in table {
        let answer = send(&routes.all, request(&lines, &[])).await;
        assert_eq!(answer.status, StatusCode::PAYMENT_REQUIRED, "{case}");
        assert_eq!(rendered(&answer), want, "{case}");
        let content_type = answer.headers.get("content-type").unwrap();
        assert_eq!(content_type, "application/problem+json", "{case}");
        // The answer depends on the header: caches must key on it.
        assert_eq!(
            answer.headers.get("vary").unwrap(),
            "Accept-Payment",
            "{case}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_402_always_offers_something_and_a_refused_protocol_renders_again() {
    let routes = routes().await;
    // A route with no MPP offer keeps its x402 offer for any header: one without MPP schemes,
    // one whose MPP scheme has nothing to offer, one whose MPP challenge cannot be written.
    for route in [
        &routes.x402_only,
        &routes.no_mpp_offer,
        &routes.unwritable_mpp_offer,
    ] {
        for accept in [b"stellar/charge".as_slice(), b"*/*;q=0"] {
            let answer = send(route, request(&[accept], &[])).await;
            assert_eq!(answer.status, StatusCode::PAYMENT_REQUIRED);
            assert_eq!(rendered(&answer), expect(true, &[]));
        }
    }
    // A client that sent an x402 payment (refused: it does not decode) gets x402's fresh offer
    // even when it also sent `Accept-Payment`.
    let answer = send(
        &routes.all,
        request(
            &[b"stellar/charge"],
            &[("payment-signature", "bm90IGpzb24")],
        ),
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::PAYMENT_REQUIRED,
        "{}",
        answer.text()
    );
    assert_eq!(answer.json()["error"], "invalid_payload");
    assert_eq!(
        rendered(&answer),
        expect(true, &["charge"]),
        "{}",
        answer.text()
    );
    // And an MPP client whose credential is refused gets MPP alone.
    let answer = send(
        &routes.all,
        request(&[b"stellar/charge"], &[("authorization", "Payment !!!")]),
    )
    .await;
    assert_eq!(answer.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(rendered(&answer), expect(false, &["charge"]));
    assert_eq!(
        answer.json()["type"],
        "https://paymentauth.org/problems/malformed-credential"
    );
}
