//! Shared test support: a test-double facilitator at the HTTP-client boundary, signed x402
//! payments built with the crate's own Stellar engine, and a request helper.
#![allow(dead_code)]

pub mod mppx;
pub mod shop;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_paywall::BoxFuture;
use tower_paywall::stellar::xdr::{Limits, WriteXdr};
use tower_paywall::stellar::{
    Address, CredentialsArm, Keypair, Network, TransferRequest, build_transfer, sign_payer,
};
use tower_paywall::x402::{
    Exact, Facilitator, FacilitatorError, FacilitatorRequest, PaymentRequirements, SettleResponse,
    SupportedKind, SupportedResponse, VerifyResponse,
};

pub const PAY_TO: &str = "GB2Q4VZJ32UM4F2EMZR2QVKT4YHIAKGBEV2UDYH7Q6DOZ6KCX5KHSBNB";
/// Price used by the tests: 0.001 USDC.
pub const PRICE: &str = "0.001";
pub const PRICE_ATOMIC: i128 = 10_000;
pub const FACILITATOR_KEY: &str = "GCFIRY65OQE7DFP5KLNS2PF2LVZMUZYJX4OZIEQ36N2IQANUB5XVYOJR";

/// What the test facilitator answers to `/verify`.
#[derive(Clone, Debug)]
pub enum VerifyMode {
    Valid,
    Invalid(&'static str),
    Fail(FacilitatorError),
}

/// What the test facilitator answers to `/settle`.
#[derive(Clone, Debug)]
pub enum SettleMode {
    Success,
    Failure(&'static str),
    Fail(FacilitatorError),
}

/// A facilitator test double: answers as configured, after an optional delay, and counts
/// calls. It proves how the layer reacts to each facilitator answer; the real verification
/// lives in the facilitator and is tested with it.
pub struct TestFacilitator {
    pub verify_mode: Mutex<VerifyMode>,
    pub settle_mode: Mutex<SettleMode>,
    pub verify_delay: Mutex<Duration>,
    pub settle_delay: Mutex<Duration>,
    pub verify_calls: AtomicUsize,
    pub settle_calls: AtomicUsize,
    pub last_request: Mutex<Option<serde_json::Value>>,
    pub supported: Arc<SupportedResponse>,
}

impl Default for TestFacilitator {
    fn default() -> Self {
        let mut extra = serde_json::Map::new();
        extra.insert("areFeesSponsored".into(), true.into());
        let supported = SupportedResponse {
            kinds: vec![SupportedKind {
                x402_version: 2,
                scheme: "exact".into(),
                network: "stellar:testnet".into(),
                extra: Some(extra),
            }],
            extensions: Vec::new(),
            signers: [("stellar:*".to_owned(), vec![FACILITATOR_KEY.to_owned()])]
                .into_iter()
                .collect(),
        };
        TestFacilitator {
            verify_mode: Mutex::new(VerifyMode::Valid),
            settle_mode: Mutex::new(SettleMode::Success),
            verify_delay: Mutex::new(Duration::ZERO),
            settle_delay: Mutex::new(Duration::ZERO),
            verify_calls: AtomicUsize::new(0),
            settle_calls: AtomicUsize::new(0),
            last_request: Mutex::new(None),
            supported: Arc::new(supported),
        }
    }
}

impl TestFacilitator {
    pub fn verify_calls(&self) -> usize {
        self.verify_calls.load(Ordering::SeqCst)
    }
    pub fn settle_calls(&self) -> usize {
        self.settle_calls.load(Ordering::SeqCst)
    }
    pub fn set_verify(&self, mode: VerifyMode) {
        *self.verify_mode.lock().unwrap() = mode;
    }
    pub fn set_settle(&self, mode: SettleMode) {
        *self.settle_mode.lock().unwrap() = mode;
    }
    pub fn set_settle_delay(&self, delay: Duration) {
        *self.settle_delay.lock().unwrap() = delay;
    }
    pub fn set_verify_delay(&self, delay: Duration) {
        *self.verify_delay.lock().unwrap() = delay;
    }
    fn remember(&self, request: &FacilitatorRequest<'_>) {
        *self.last_request.lock().unwrap() = serde_json::to_value(request).ok();
    }
}

impl Facilitator for TestFacilitator {
    fn verify<'a>(
        &'a self,
        request: &'a FacilitatorRequest<'a>,
    ) -> BoxFuture<'a, Result<VerifyResponse, FacilitatorError>> {
        self.verify_calls.fetch_add(1, Ordering::SeqCst);
        self.remember(request);
        let mode = self.verify_mode.lock().unwrap().clone();
        let delay = *self.verify_delay.lock().unwrap();
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            match mode {
                VerifyMode::Valid => Ok(VerifyResponse {
                    is_valid: true,
                    invalid_reason: None,
                    invalid_message: None,
                    payer: None,
                }),
                VerifyMode::Invalid(reason) => Ok(VerifyResponse {
                    is_valid: false,
                    invalid_reason: Some(reason.into()),
                    invalid_message: None,
                    payer: None,
                }),
                VerifyMode::Fail(error) => Err(error),
            }
        })
    }

    fn settle<'a>(
        &'a self,
        request: &'a FacilitatorRequest<'a>,
    ) -> BoxFuture<'a, Result<SettleResponse, FacilitatorError>> {
        self.settle_calls.fetch_add(1, Ordering::SeqCst);
        self.remember(request);
        let mode = self.settle_mode.lock().unwrap().clone();
        let delay = *self.settle_delay.lock().unwrap();
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            match mode {
                SettleMode::Success => Ok(SettleResponse {
                    success: true,
                    error_reason: None,
                    error_message: None,
                    payer: None,
                    transaction: "ab".repeat(32),
                    network: "stellar:testnet".into(),
                    amount: None,
                }),
                SettleMode::Failure(reason) => Ok(SettleResponse {
                    success: false,
                    error_reason: Some(reason.into()),
                    error_message: None,
                    payer: None,
                    transaction: String::new(),
                    network: "stellar:testnet".into(),
                    amount: None,
                }),
                SettleMode::Fail(error) => Err(error),
            }
        })
    }

    fn supported(&self) -> BoxFuture<'_, Result<Arc<SupportedResponse>, FacilitatorError>> {
        let supported = self.supported.clone();
        Box::pin(async move { Ok(supported) })
    }
}

/// A payer with a fixed seed.
pub fn payer(seed: u8) -> Keypair {
    Keypair::from_seed([seed; 32])
}

pub fn usdc() -> Address {
    Network::testnet().usdc().unwrap()
}

/// What to put in a test payment; `Default` is a valid payment for [`PRICE`].
#[derive(Clone)]
pub struct PaymentSpec {
    pub seed: u8,
    pub nonce: i64,
    pub amount: i128,
    pub to: Address,
    pub contract: Address,
    pub accepted: PaymentRequirements,
    pub network: Network,
    pub credentials: CredentialsArm,
    pub sign: bool,
    /// Sign with this seed instead of the payer's.
    pub signer_seed: Option<u8>,
    pub source: Address,
    pub fee: u32,
}

impl PaymentSpec {
    /// The same payment (payer, nonce) in another envelope.
    pub fn with_fee(mut self, fee: u32) -> Self {
        self.fee = fee;
        self
    }
}

impl Default for PaymentSpec {
    fn default() -> Self {
        PaymentSpec {
            seed: 7,
            nonce: 42,
            amount: PRICE_ATOMIC,
            to: PAY_TO.parse().unwrap(),
            contract: usdc(),
            accepted: requirements(PRICE_ATOMIC),
            network: Network::testnet(),
            credentials: CredentialsArm::Address,
            sign: true,
            signer_seed: None,
            fee: 10_100,
            source: "GAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAWHF"
                .parse()
                .unwrap(),
        }
    }
}

/// The requirements the layer offers for `amount` with the test facilitator.
pub fn requirements(amount: i128) -> PaymentRequirements {
    let mut extra = serde_json::Map::new();
    extra.insert("areFeesSponsored".into(), true.into());
    PaymentRequirements {
        scheme: "exact".into(),
        network: "stellar:testnet".into(),
        amount: amount.to_string(),
        asset: usdc().to_string(),
        pay_to: PAY_TO.into(),
        max_timeout_seconds: 60,
        extra,
    }
}

/// The base64 transaction envelope of a payment.
pub fn envelope(spec: &PaymentSpec) -> String {
    let keypair = payer(spec.seed);
    let mut envelope = build_transfer(&TransferRequest {
        source: spec.source,
        sequence: 1,
        fee: spec.fee,
        contract: spec.contract,
        from: keypair.address(),
        to: spec.to,
        amount: spec.amount,
        nonce: spec.nonce,
        signature_expiration_ledger: 0,
        max_time: 4_000_000_000,
        credentials: spec.credentials,
    })
    .unwrap();
    if spec.sign {
        let signer = spec.signer_seed.map_or(keypair, payer);
        sign_payer(&mut envelope, &signer, &spec.network.id(), 1_000).unwrap();
    }
    envelope.to_xdr_base64(Limits::none()).unwrap()
}

/// The `PaymentPayload` JSON of a payment, as the TypeScript client writes it.
pub fn payload_json(spec: &PaymentSpec, transaction: &str) -> String {
    serde_json::json!({
        "x402Version": 2,
        "payload": { "transaction": transaction },
        "resource": { "url": "http://example.com/paid" },
        "accepted": spec.accepted,
    })
    .to_string()
}

/// A `PAYMENT-SIGNATURE` header value.
pub fn payment(spec: &PaymentSpec) -> HeaderValue {
    encode_header(&payload_json(spec, &envelope(spec)))
}

pub fn encode_header(json: &str) -> HeaderValue {
    HeaderValue::from_str(&STANDARD.encode(json)).unwrap()
}

pub fn decode_header<T: serde::de::DeserializeOwned>(value: &HeaderValue) -> T {
    serde_json::from_slice(&STANDARD.decode(value.as_bytes()).unwrap()).unwrap()
}

/// An x402 scheme paying into [`PAY_TO`] through `facilitator`.
pub fn exact(facilitator: &Arc<TestFacilitator>) -> Exact {
    Exact::builder(
        Network::testnet(),
        PAY_TO.parse().unwrap(),
        facilitator.clone(),
    )
    .build()
    .unwrap()
}

/// A response, read whole.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request through `app` and reads the whole answer.
pub async fn send(app: &axum::Router, request: Request<axum::body::Body>) -> Answer {
    let response = app.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes().to_vec();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// A GET of `path` on example.com, with optional payment header.
pub fn req(path: &str, payment: Option<HeaderValue>) -> Request<axum::body::Body> {
    let mut builder = Request::builder()
        .uri(path)
        .header(http::header::HOST, "example.com");
    if let Some(payment) = payment {
        builder = builder.header("payment-signature", payment);
    }
    builder.body(axum::body::Body::empty()).unwrap()
}

/// The MPP challenge keys the tests bind challenge ids with.
pub fn keys() -> tower_paywall::mpp::ChallengeKeys {
    use tower_paywall::mpp::{ChallengeKeys, ChallengeSecret};
    ChallengeKeys::new(ChallengeSecret::new(*b"a test secret of at least 32 bytes!").unwrap())
}

/// Serves `app` on a free loopback port; its base URL (`http://127.0.0.1:…`).
pub async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

/// `holder`'s USDC balance on the sandbox ledger.
#[cfg(feature = "sandbox")]
pub async fn usdc_of(
    sandbox: &tower_paywall::sandbox::Sandbox,
    holder: &tower_paywall::stellar::Address,
) -> i128 {
    sandbox.balance(&sandbox.usdc(), holder).await.unwrap()
}

/// What [`LossyRpc`] does with `sendTransaction`.
#[cfg(feature = "sandbox")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendFate {
    /// Passes it on and back.
    Deliver,
    /// Passes it on (the transaction is submitted), then loses the answer.
    LoseAnswer,
    /// Loses the request itself (nothing is submitted).
    LoseRequest,
}

/// A Soroban RPC in front of another that can lose a `sendTransaction` exchange: the test double
/// at the RPC boundary that proves how a settlement whose answer is lost ends. Every other call
/// is passed on untouched.
#[cfg(feature = "sandbox")]
pub struct LossyRpc {
    pub inner: Arc<dyn tower_paywall::stellar::SorobanRpc>,
    pub fate: Mutex<SendFate>,
}

#[cfg(feature = "sandbox")]
impl LossyRpc {
    pub fn new(inner: Arc<dyn tower_paywall::stellar::SorobanRpc>) -> Arc<Self> {
        Arc::new(LossyRpc {
            inner,
            fate: Mutex::new(SendFate::Deliver),
        })
    }

    pub fn set(&self, fate: SendFate) {
        *self.fate.lock().unwrap() = fate;
    }
}

#[cfg(feature = "sandbox")]
mod lossy {
    use super::*;
    use tower_paywall::stellar::rpc::{
        Events, EventsRequest, Health, LatestLedger, LedgerEntries, NetworkInfo, RpcError,
        SendResult, Simulation, SorobanRpc, TransactionHash, TransactionInfo,
    };
    use tower_paywall::stellar::xdr::{LedgerKey, TransactionEnvelope};

    impl SorobanRpc for LossyRpc {
        fn health(&self) -> BoxFuture<'_, Result<Health, RpcError>> {
            self.inner.health()
        }
        fn network(&self) -> BoxFuture<'_, Result<NetworkInfo, RpcError>> {
            self.inner.network()
        }
        fn latest_ledger(&self) -> BoxFuture<'_, Result<LatestLedger, RpcError>> {
            self.inner.latest_ledger()
        }
        fn simulate_transaction<'a>(
            &'a self,
            transaction: &'a TransactionEnvelope,
        ) -> BoxFuture<'a, Result<Simulation, RpcError>> {
            self.inner.simulate_transaction(transaction)
        }
        fn send_transaction<'a>(
            &'a self,
            transaction: &'a TransactionEnvelope,
        ) -> BoxFuture<'a, Result<SendResult, RpcError>> {
            let fate = *self.fate.lock().unwrap();
            Box::pin(async move {
                match fate {
                    SendFate::Deliver => self.inner.send_transaction(transaction).await,
                    SendFate::LoseAnswer => {
                        let sent = self.inner.send_transaction(transaction).await;
                        assert!(sent.is_ok(), "the ledger took the transaction: {sent:?}");
                        Err(RpcError::Interrupted("the answer was lost".into()))
                    }
                    SendFate::LoseRequest => {
                        Err(RpcError::Interrupted("the request was lost".into()))
                    }
                }
            })
        }
        fn transaction<'a>(
            &'a self,
            hash: &'a TransactionHash,
        ) -> BoxFuture<'a, Result<TransactionInfo, RpcError>> {
            self.inner.transaction(hash)
        }
        fn ledger_entries<'a>(
            &'a self,
            keys: &'a [LedgerKey],
        ) -> BoxFuture<'a, Result<LedgerEntries, RpcError>> {
            self.inner.ledger_entries(keys)
        }
        fn events<'a>(
            &'a self,
            request: &'a EventsRequest,
        ) -> BoxFuture<'a, Result<Events, RpcError>> {
            self.inner.events(request)
        }
    }
}

/// A layer builder offering x402 `exact` (our facilitator on `sandbox`, its fees paid from a
/// new funded account) and MPP `charge` (realm `realm`), both paying `pay_to`.
#[cfg(feature = "sandbox")]
pub async fn exact_and_charge(
    sandbox: &tower_paywall::sandbox::Sandbox,
    pay_to: Address,
    realm: &str,
) -> tower_paywall::PaymentLayerBuilder {
    use tower_paywall::mpp::StellarCharge;
    use tower_paywall::x402::LocalFacilitator;
    let fee_payer = sandbox.funded_keypair().await.unwrap();
    let facilitator = LocalFacilitator::builder(sandbox.clone(), Network::testnet(), fee_payer)
        .build()
        .unwrap();
    let rpc = Arc::new(sandbox.clone());
    tower_paywall::PaymentLayer::builder()
        .scheme(
            Exact::builder(Network::testnet(), pay_to, facilitator)
                .build()
                .unwrap(),
        )
        .scheme(
            StellarCharge::builder(Network::testnet(), pay_to, rpc, keys())
                .realm(realm)
                .build()
                .unwrap(),
        )
}
