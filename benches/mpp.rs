//! Hot paths of MPP `charge` (method `stellar`), each next to a baseline in the same run:
//!
//! - `challenge`: a 402 with a `WWW-Authenticate: Payment` challenge (fresh HMAC id, JCS
//!   request, Problem Details body) through the layer vs the bare router;
//! - `credential`: reading an `Authorization: Payment` header, then verifying a pull credential
//!   up to the RPC call (challenge id, expiry, pinning, `source`, envelope decode, transfer
//!   checks) vs one HMAC check plus one envelope decode.
//!
//! The Soroban RPC here is a test double that refuses at once, so `verify` stops at the first
//! RPC call (`simulateTransaction`) and the figure is our own work only.
//!
//! `cargo bench --bench mpp`

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Request};
use serde_json::json;
use tower::ServiceExt;
use tower_paywall::mpp::{
    Challenge, ChallengeKeys, ChallengeSecret, Credential as MppCredential, StellarCharge,
};
use tower_paywall::scheme::PaymentContext;
use tower_paywall::stellar::rpc::{
    Events, EventsRequest, Health, LatestLedger, LedgerEntries, NetworkInfo, RpcError, SendResult,
    Simulation, SorobanRpc, TransactionHash, TransactionInfo,
};
use tower_paywall::stellar::xdr::{LedgerKey, Limits, TransactionEnvelope, WriteXdr};
use tower_paywall::stellar::{
    CredentialsArm, Keypair, Network, TransferRequest, build_transfer, decode_envelope, sign_payer,
};
use tower_paywall::{BoxFuture, MemoryStore, PaymentLayer, PaymentScheme, Price};

const PAY_TO: &str = "GB2Q4VZJ32UM4F2EMZR2QVKT4YHIAKGBEV2UDYH7Q6DOZ6KCX5KHSBNB";

/// A Soroban RPC that refuses every call at once: `verify` ends at its first RPC call.
struct Refusing;

fn refused<'a, T: Send + 'a>() -> BoxFuture<'a, Result<T, RpcError>> {
    Box::pin(async { Err(RpcError::Unreachable("benchmark double".into())) })
}

impl SorobanRpc for Refusing {
    fn health(&self) -> BoxFuture<'_, Result<Health, RpcError>> {
        refused()
    }
    fn network(&self) -> BoxFuture<'_, Result<NetworkInfo, RpcError>> {
        refused()
    }
    fn latest_ledger(&self) -> BoxFuture<'_, Result<LatestLedger, RpcError>> {
        refused()
    }
    fn simulate_transaction<'a>(
        &'a self,
        _: &'a TransactionEnvelope,
    ) -> BoxFuture<'a, Result<Simulation, RpcError>> {
        refused()
    }
    fn send_transaction<'a>(
        &'a self,
        _: &'a TransactionEnvelope,
    ) -> BoxFuture<'a, Result<SendResult, RpcError>> {
        refused()
    }
    fn transaction<'a>(
        &'a self,
        _: &'a TransactionHash,
    ) -> BoxFuture<'a, Result<TransactionInfo, RpcError>> {
        refused()
    }
    fn ledger_entries<'a>(
        &'a self,
        _: &'a [LedgerKey],
    ) -> BoxFuture<'a, Result<LedgerEntries, RpcError>> {
        refused()
    }
    fn events<'a>(&'a self, _: &'a EventsRequest) -> BoxFuture<'a, Result<Events, RpcError>> {
        refused()
    }
}

fn keys() -> ChallengeKeys {
    ChallengeKeys::new(ChallengeSecret::new(*b"a benchmark secret of 32 bytes..").unwrap())
}

fn charge() -> StellarCharge {
    StellarCharge::builder(
        Network::testnet(),
        PAY_TO.parse().unwrap(),
        Arc::new(Refusing),
        keys(),
    )
    .realm("example.com")
    .build()
    .unwrap()
}

fn request(authorization: Option<&HeaderValue>) -> Request<Body> {
    let mut request = Request::builder()
        .uri("/paid")
        .header("host", "example.com");
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    request.body(Body::empty()).unwrap()
}

fn routes() -> Router {
    Router::new().route("/paid", get(|| async { "paid" }))
}

fn layered() -> Router {
    let layer = PaymentLayer::builder()
        .scheme(charge())
        .price(Price::parse("0.01").unwrap())
        .build()
        .unwrap();
    routes().layer(layer)
}

/// A pull credential for 0.01 USDC answering `challenge`, signed like the Stellar MPP SDK signs
/// it: the payer's own transaction, its transfer authorized by the payer.
fn pull_credential(challenge: Challenge) -> HeaderValue {
    let network = Network::testnet();
    let payer = Keypair::from_seed([7; 32]);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let mut envelope = build_transfer(&TransferRequest {
        source: payer.address(),
        sequence: 1,
        fee: 10_100,
        contract: network.usdc().unwrap(),
        from: payer.address(),
        to: PAY_TO.parse().unwrap(),
        amount: 100_000,
        nonce: 42,
        signature_expiration_ledger: 0,
        max_time: (now + Duration::from_secs(60)).as_secs(),
        credentials: CredentialsArm::Address,
    })
    .unwrap();
    sign_payer(&mut envelope, &payer, &network.id(), 1_000).unwrap();
    let transaction = envelope.to_xdr_base64(Limits::none()).unwrap();
    let mut credential = MppCredential::new(
        challenge,
        json!({ "type": "transaction", "transaction": transaction }),
    );
    credential.source = Some(format!("did:pkh:stellar:testnet:{}", payer.address()));
    HeaderValue::from_str(&credential.encode()).unwrap()
}

fn challenge_generation(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bare = routes();
    let paywalled = layered();
    let mut group = c.benchmark_group("mpp challenge");
    group.bench_function("bare router /paid (no layer)", |b| {
        b.to_async(&runtime)
            .iter(|| bare.clone().oneshot(request(None)))
    });
    group.bench_function("402 with a Payment challenge", |b| {
        b.to_async(&runtime)
            .iter(|| paywalled.clone().oneshot(request(None)))
    });
    group.finish();
}

fn credential_verification(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let charge = charge();
    let price = Price::parse("0.01").unwrap();
    let store = MemoryStore::new();
    let parts = request(None).into_parts().0;
    let offer = runtime.block_on(charge.offer(&price, &parts)).unwrap();
    let challenge = offer.detail::<Challenge>().unwrap().clone();
    let header = pull_credential(challenge.clone());
    let mut headers = HeaderMap::new();
    headers.insert("authorization", header.clone());
    let transaction = {
        let credential = MppCredential::from_headers(&headers).unwrap();
        credential.payload["transaction"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let keys = keys();

    // The credential passes every offline check: verify stops at the RPC and answers 503.
    let credential = charge.read(&headers).unwrap().unwrap();
    let context = PaymentContext {
        request: &parts,
        price: &price,
        store: &store,
    };
    let rejection = runtime
        .block_on(charge.verify(&credential, context))
        .unwrap_err();
    assert_eq!(
        rejection.kind,
        tower_paywall::scheme::RejectionKind::Unavailable
    );

    let mut group = c.benchmark_group("mpp credential");
    group.bench_function("baseline: HMAC challenge id + envelope decode", |b| {
        b.iter(|| {
            assert!(challenge.verify_id(&keys));
            decode_envelope(std::hint::black_box(&transaction)).unwrap()
        })
    });
    group.bench_function("read Authorization: Payment", |b| {
        b.iter(|| {
            charge
                .read(std::hint::black_box(&headers))
                .unwrap()
                .unwrap()
        })
    });
    group.bench_function("read + verify a pull credential up to the RPC", |b| {
        b.to_async(&runtime).iter(|| async {
            let credential = charge.read(&headers).unwrap().unwrap();
            let context = PaymentContext {
                request: &parts,
                price: &price,
                store: &store,
            };
            charge.verify(&credential, context).await.unwrap_err()
        })
    });
    group.finish();
}

criterion_group!(benches, challenge_generation, credential_verification);
criterion_main!(benches);
