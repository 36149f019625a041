//! The x402 `exact` scheme on Stellar: a SAC `transfer(from, payTo, amount)` authorized by the
//! payer's signed Soroban auth entry, verified and settled by a [`Facilitator`].

use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value, json};

use super::checks::{Expected, check_transfer, read_transfer, reason};
use super::facilitator::{Facilitator, FacilitatorError, FacilitatorRequest};
use super::header::{
    self, HeaderError, PAYMENT_REQUIRED, PAYMENT_RESPONSE, PAYMENT_SIGNATURE, X_PAYMENT,
    X_PAYMENT_RESPONSE,
};
use super::payment_identifier::{self, PaymentId};
use super::wire::{
    PaymentPayload, PaymentRequired, PaymentRequirements, ResourceInfo, SettleResponse,
    SupportedResponse, X402_VERSION,
};
use crate::BoxFuture;
use crate::price::{Amount, PaymentIdentifier, Price};
use crate::scheme::{
    Challenge, ChallengeContext, Credential, Intent, Offer, PaymentContext, PaymentScheme, Receipt,
    Rejection, RejectionKind, SettleOutcome, Verified,
};
use crate::stellar::xdr::SorobanAuthorizationEntry;
use crate::stellar::{Address, Network, SacTransfer, address_credentials};
use crate::store::{Fingerprint, PaymentKey, PaymentStore};

const PROTOCOL: &str = "x402";
const SCHEME: &str = "exact";
/// Default `maxTimeoutSeconds`.
pub const DEFAULT_MAX_TIMEOUT_SECONDS: u64 = 60;
/// A facilitator polls until the transaction is final: give it this much beyond
/// `maxTimeoutSeconds`.
const SETTLE_MARGIN: Duration = Duration::from_secs(15);

/// The x402 `exact` scheme on one Stellar network, selling in one asset to one recipient.
///
/// ```
/// use tower_paywall::{stellar::{Address, Network}, x402};
///
/// let facilitator = x402::HttpFacilitator::builder("https://facilitator.example").build()?;
/// let pay_to: Address = "GB2Q4VZJ32UM4F2EMZR2QVKT4YHIAKGBEV2UDYH7Q6DOZ6KCX5KHSBNB".parse()?;
/// // USDC on testnet unless another asset is set.
/// let exact = x402::Exact::builder(Network::testnet(), pay_to, facilitator)
///     .max_timeout_seconds(60)
///     .build()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Exact {
    network: Network,
    asset: Address,
    asset_strkey: String,
    pay_to: Address,
    pay_to_strkey: String,
    max_timeout_seconds: u64,
    mime_type: Option<String>,
    facilitator: Arc<dyn Facilitator>,
    /// The facilitator's last `/supported` answer, for the offline checks.
    supported: RwLock<Option<Arc<SupportedResponse>>>,
    /// The ledger, asked how a settlement whose answer was lost ended.
    #[cfg(feature = "rpc")]
    rpc: Option<Arc<dyn crate::stellar::SorobanRpc>>,
}

/// Builds an [`Exact`] scheme.
#[must_use]
pub struct ExactBuilder {
    network: Network,
    pay_to: Address,
    facilitator: Arc<dyn Facilitator>,
    asset: Option<Address>,
    max_timeout_seconds: u64,
    mime_type: Option<String>,
    #[cfg(feature = "rpc")]
    rpc: Option<Arc<dyn crate::stellar::SorobanRpc>>,
}

/// Why an [`ExactBuilder`] refused to build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExactBuildError {
    /// No asset was set and the network has no known USDC contract.
    #[error("no asset set, and the network has no known USDC contract")]
    NoAsset,
    /// The asset is not a contract (`C…`) address.
    #[error("the asset must be a contract (C…) address")]
    AssetNotContract,
    /// `maxTimeoutSeconds` is zero or above one hour.
    #[error("max_timeout_seconds must be between 1 and 3600")]
    MaxTimeout,
    /// The facilitator gives up on settlements sooner than `maxTimeoutSeconds` + 15 s.
    #[error("the facilitator's settle timeout must be at least max_timeout_seconds + 15 s")]
    SettleTimeoutTooShort,
}

impl Exact {
    /// Starts a builder for payments to `pay_to` on `network`, verified and settled by
    /// `facilitator`.
    pub fn builder(
        network: Network,
        pay_to: Address,
        facilitator: impl Facilitator,
    ) -> ExactBuilder {
        Self::builder_shared(network, pay_to, Arc::new(facilitator))
    }

    /// Like [`builder`](Self::builder), with a facilitator shared with other schemes.
    pub fn builder_shared(
        network: Network,
        pay_to: Address,
        facilitator: Arc<dyn Facilitator>,
    ) -> ExactBuilder {
        ExactBuilder {
            network,
            pay_to,
            facilitator,
            asset: None,
            max_timeout_seconds: DEFAULT_MAX_TIMEOUT_SECONDS,
            mime_type: None,
            #[cfg(feature = "rpc")]
            rpc: None,
        }
    }
}

impl ExactBuilder {
    /// The asset's contract (default: the network's USDC).
    pub fn asset(mut self, asset: Address) -> Self {
        self.asset = Some(asset);
        self
    }

    /// `maxTimeoutSeconds` (default 60): how long the signed payment stays valid.
    pub fn max_timeout_seconds(mut self, seconds: u64) -> Self {
        self.max_timeout_seconds = seconds;
        self
    }

    /// The resource's MIME type, shown in the 402.
    pub fn mime_type(mut self, mime_type: impl Into<String>) -> Self {
        self.mime_type = Some(mime_type.into());
        self
    }

    /// A Soroban RPC on the scheme's network, to reconcile payments whose settlement answer was
    /// lost (the facilitator timed out or its connection broke after it submitted): the
    /// payer's authorization is looked up on the ledger (see
    /// [`SettlementEvidence`](crate::stellar::SettlementEvidence)), so the retry is served when
    /// the money moved and offered a fresh 402 when it cannot move any more. Without it, such a
    /// payment is answered 503 until its record expires. Each verification then also reads the
    /// latest ledger, beside the facilitator's `/verify`.
    #[cfg(feature = "rpc")]
    pub fn rpc(mut self, rpc: Arc<dyn crate::stellar::SorobanRpc>) -> Self {
        self.rpc = Some(rpc);
        self
    }

    /// Checks the settings and builds the scheme.
    pub fn build(self) -> Result<Exact, ExactBuildError> {
        let asset = match self.asset {
            Some(asset) => asset,
            None => self.network.usdc().ok_or(ExactBuildError::NoAsset)?,
        };
        if !asset.is_contract() {
            return Err(ExactBuildError::AssetNotContract);
        }
        if !(1..=3600).contains(&self.max_timeout_seconds) {
            return Err(ExactBuildError::MaxTimeout);
        }
        let needed = Duration::from_secs(self.max_timeout_seconds) + SETTLE_MARGIN;
        if self
            .facilitator
            .settle_timeout()
            .is_some_and(|timeout| timeout < needed)
        {
            return Err(ExactBuildError::SettleTimeoutTooShort);
        }
        Ok(Exact {
            asset_strkey: asset.to_string(),
            asset,
            pay_to_strkey: self.pay_to.to_string(),
            pay_to: self.pay_to,
            network: self.network,
            max_timeout_seconds: self.max_timeout_seconds,
            mime_type: self.mime_type,
            facilitator: self.facilitator,
            supported: RwLock::new(None),
            #[cfg(feature = "rpc")]
            rpc: self.rpc,
        })
    }
}

/// A decoded `PAYMENT-SIGNATURE`.
struct ExactCredential {
    payload: PaymentPayload,
    transfer: SacTransfer,
    payer_entry: SorobanAuthorizationEntry,
}

/// A verified payment and the requirements it was verified against.
struct ExactVerified {
    credential: Credential,
    requirements: PaymentRequirements,
    /// The latest ledger when it was verified, if the scheme reads the ledger.
    #[cfg_attr(not(feature = "rpc"), allow(dead_code))]
    since_ledger: Option<u32>,
}

fn rejection(kind: RejectionKind, code: &'static str) -> Rejection {
    Rejection::new(kind, PROTOCOL, code)
}

fn refused(code: &'static str) -> Rejection {
    rejection(RejectionKind::PaymentRequired, code)
}

impl Exact {
    /// The network this scheme takes payments on.
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// The requirements offered for `amount`.
    pub fn requirements(&self, amount: Amount) -> PaymentRequirements {
        let sponsored = self
            .last_supported()
            .and_then(|supported| supported.fees_sponsored(SCHEME, self.network.caip2()))
            .unwrap_or(true);
        let mut extra = Map::new();
        extra.insert("areFeesSponsored".into(), Value::Bool(sponsored));
        PaymentRequirements {
            scheme: SCHEME.into(),
            network: self.network.caip2().into(),
            amount: amount.to_atomic_string(),
            asset: self.asset_strkey.clone(),
            pay_to: self.pay_to_strkey.clone(),
            max_timeout_seconds: self.max_timeout_seconds,
            extra,
        }
    }

    fn last_supported(&self) -> Option<Arc<SupportedResponse>> {
        match self.supported.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Asks the facilitator what it supports (cached by the facilitator) and keeps the answer
    /// for the offline checks.
    async fn refresh_supported(&self) {
        let supported = match self.facilitator.supported().await {
            Ok(supported) => supported,
            Err(error) => return tracing::warn!(%error, "facilitator /supported unavailable"),
        };
        if self
            .last_supported()
            .is_some_and(|current| Arc::ptr_eq(&current, &supported))
        {
            return;
        }
        if supported.kind(SCHEME, self.network.caip2()).is_none() {
            tracing::warn!(
                network = self.network.caip2(),
                "facilitator does not list exact on this network"
            );
        }
        let mut guard = self
            .supported
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *guard = Some(supported);
    }

    /// The local pre-checks, run before any facilitator call: the payment's `accepted` matches
    /// our requirements for `price`; the transaction is one SAC `transfer` of the exact amount of
    /// our asset to our recipient, without envelope signatures; its auth entries are address
    /// credentials without sub-invocations; the facilitator's own keys are neither the payer, a
    /// source, nor in an auth entry; and a G-account payer's ed25519 signatures verify.
    ///
    /// A forged or mismatched payment is refused here, without a round trip.
    pub fn check(&self, credential: &Credential, price: &Price) -> Result<(), Rejection> {
        let detail = credential
            .detail::<ExactCredential>()
            .ok_or_else(|| refused(reason::INVALID_PAYLOAD))?;
        self.check_payment(detail, &self.requirements(price.amount()))
    }

    fn check_payment(
        &self,
        detail: &ExactCredential,
        requirements: &PaymentRequirements,
    ) -> Result<(), Rejection> {
        if !requirements.matches_accepted(detail.payload.accepted()) {
            return Err(refused(reason::NO_MATCHING_REQUIREMENTS));
        }
        let amount = Amount::parse_atomic(&requirements.amount)
            .map_err(|_| refused(reason::NO_MATCHING_REQUIREMENTS))?;
        let supported = self.last_supported();
        let signers: Vec<&str> = supported
            .as_deref()
            .map(|supported| supported.signers_for(self.network.caip2()).collect())
            .unwrap_or_default();
        let expected = Expected {
            network: self.network.id(),
            asset: &self.asset,
            pay_to: &self.pay_to,
            amount: amount.atomic(),
            is_facilitator: &|address: &Address| signers.contains(&address.to_string().as_str()),
        };
        check_transfer(&detail.transfer, &detail.payer_entry, &expected).map_err(refused)
    }

    fn read_payment(&self, value: &HeaderValue) -> Result<Credential, Rejection> {
        let payload = header::decode_payment(value).map_err(|error| match error {
            HeaderError::TooLarge => rejection(RejectionKind::BadRequest, reason::HEADER_TOO_LARGE),
            _ => refused(reason::INVALID_PAYLOAD),
        })?;
        if payload.x402_version() != X402_VERSION {
            return Err(refused(reason::INVALID_VERSION));
        }
        if payload.accepted().scheme != SCHEME {
            return Err(refused(reason::UNSUPPORTED_SCHEME));
        }
        if payload.accepted().network != self.network.caip2() {
            return Err(refused(reason::INVALID_NETWORK));
        }
        let transaction = payload
            .transaction()
            .ok_or_else(|| refused(reason::MALFORMED))?;
        let (transfer, payer_entry) = read_transfer(transaction).map_err(refused)?;
        let nonce = address_credentials(&payer_entry)
            .map(|credentials| credentials.nonce)
            .map_err(|_| refused(reason::CREDENTIAL_TYPE))?;
        let payer = transfer.from.to_string();
        let key = PaymentKey::of_authorization(self.network.caip2(), &payer, nonce);
        let fingerprint = Fingerprint::of(transaction.as_bytes());
        let payment_identifier = match payment_identifier::read(&payload) {
            PaymentId::Absent => None,
            PaymentId::Valid(id) => Some(Ok(id)),
            PaymentId::Invalid => Some(Err(rejection(
                RejectionKind::BadRequest,
                payment_identifier::INVALID_REASON,
            ))),
        };
        let detail = ExactCredential {
            payload,
            transfer,
            payer_entry,
        };
        let credential = Credential::new(key, fingerprint, Some(payer), detail);
        Ok(match payment_identifier {
            Some(id) => credential.with_payment_identifier(id),
            None => credential,
        })
    }

    fn challenge_body(
        &self,
        accepts: &[PaymentRequirements],
        required: &PaymentRequired,
        body: &mut Map<String, Value>,
    ) {
        let accepts: Vec<Value> = accepts
            .iter()
            .map(|requirements| {
                let mut entry = serde_json::to_value(requirements).unwrap_or(Value::Null);
                if let Value::Object(fields) = &mut entry {
                    fields.insert(
                        "maxAmountRequired".into(),
                        Value::String(requirements.amount.clone()),
                    );
                }
                entry
            })
            .collect();
        body.insert("x402Version".into(), json!(X402_VERSION));
        body.insert("error".into(), json!(required.error));
        body.insert(
            "resource".into(),
            serde_json::to_value(&required.resource).unwrap_or(Value::Null),
        );
        body.insert("accepts".into(), Value::Array(accepts));
        if let Some(extensions) = &required.extensions {
            body.insert("extensions".into(), Value::Object(extensions.clone()));
        }
    }
}

/// The extensions a 402 for `price` declares.
fn declared_extensions(price: &Price) -> Option<Map<String, Value>> {
    let required = match price.payment_identifier() {
        PaymentIdentifier::Off => return None,
        PaymentIdentifier::Optional => false,
        PaymentIdentifier::Required => true,
    };
    let mut extensions = Map::new();
    extensions.insert(
        payment_identifier::PAYMENT_IDENTIFIER.to_owned(),
        payment_identifier::declaration(required),
    );
    Some(extensions)
}

fn facilitator_rejection(error: &FacilitatorError) -> Rejection {
    tracing::warn!(%error, "facilitator call failed");
    match error {
        FacilitatorError::Unreachable(_)
        | FacilitatorError::Timeout
        | FacilitatorError::Interrupted(_) => {
            rejection(RejectionKind::Unavailable, reason::FACILITATOR_UNAVAILABLE)
        }
        _ => rejection(RejectionKind::BadGateway, reason::FACILITATOR_ERROR),
    }
}

/// `PAYMENT-RESPONSE` and its legacy alias, readable by browsers.
fn payment_response_headers(response: &SettleResponse) -> Vec<(HeaderName, HeaderValue)> {
    let Ok(value) = header::encode(response) else {
        return Vec::new();
    };
    vec![
        (PAYMENT_RESPONSE, value.clone()),
        (X_PAYMENT_RESPONSE, value),
        (
            http::header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("PAYMENT-RESPONSE, X-PAYMENT-RESPONSE"),
        ),
    ]
}

impl PaymentScheme for Exact {
    fn intent(&self) -> Intent {
        Intent::X402_EXACT
    }

    fn read(&self, headers: &HeaderMap) -> Option<Result<Credential, Rejection>> {
        let value = headers
            .get(PAYMENT_SIGNATURE)
            .or_else(|| headers.get(X_PAYMENT))?;
        Some(self.read_payment(value))
    }

    fn offer<'a>(
        &'a self,
        price: &'a Price,
        _: &'a http::request::Parts,
    ) -> BoxFuture<'a, Result<Offer, Rejection>> {
        Box::pin(async move {
            self.refresh_supported().await;
            Ok(Offer::new(
                Intent::X402_EXACT,
                self.requirements(price.amount()),
            ))
        })
    }

    fn challenge(
        &self,
        offers: &[&Offer],
        context: &ChallengeContext<'_>,
        challenge: &mut Challenge,
    ) {
        let accepts: Vec<PaymentRequirements> = offers
            .iter()
            .filter_map(|offer| offer.detail::<PaymentRequirements>())
            .cloned()
            .collect();
        let error = match context.rejection {
            Some(rejection) if rejection.protocol == PROTOCOL => rejection.code.to_string(),
            _ => reason::PAYMENT_REQUIRED.to_owned(),
        };
        let required = PaymentRequired {
            x402_version: X402_VERSION,
            error: Some(error),
            resource: ResourceInfo {
                url: context.resource_url.to_owned(),
                description: context.price.description().map(str::to_owned),
                mime_type: self.mime_type.clone(),
            },
            accepts,
            extensions: declared_extensions(context.price),
        };
        match header::encode(&required) {
            Ok(value) => {
                challenge.headers.append(PAYMENT_REQUIRED, value);
            }
            Err(error) => tracing::error!(%error, "cannot encode PAYMENT-REQUIRED"),
        }
        challenge.headers.append(
            http::header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("PAYMENT-REQUIRED, PAYMENT-RESPONSE, X-PAYMENT-RESPONSE"),
        );
        self.challenge_body(&required.accepts, &required, &mut challenge.body);
    }

    fn verify<'a>(
        &'a self,
        credential: &'a Credential,
        context: PaymentContext<'a>,
    ) -> BoxFuture<'a, Result<Verified, Rejection>> {
        let price = context.price;
        Box::pin(async move {
            let detail = credential
                .detail::<ExactCredential>()
                .ok_or_else(|| refused(reason::INVALID_PAYLOAD))?;
            self.refresh_supported().await;
            let requirements = self.requirements(price.amount());
            self.check_payment(detail, &requirements)?;
            let request = FacilitatorRequest::new(&detail.payload, &requirements);
            let (answer, since_ledger) =
                tokio::join!(self.facilitator.verify(&request), self.latest_ledger());
            let answer = answer.map_err(|e| facilitator_rejection(&e))?;
            if !answer.is_valid {
                let code = answer
                    .invalid_reason
                    .unwrap_or_else(|| reason::INVALID.to_owned());
                return Err(Rejection::new(
                    RejectionKind::PaymentRequired,
                    PROTOCOL,
                    code,
                ));
            }
            let payer = detail.transfer.from.to_string();
            let amount = price.amount();
            let verified = ExactVerified {
                credential: credential.clone(),
                requirements,
                since_ledger,
            };
            Ok(Verified::new(
                payer,
                amount,
                self.asset_strkey.clone(),
                verified,
            ))
        })
    }

    fn settle(
        self: Arc<Self>,
        verified: Arc<Verified>,
        _: Arc<dyn PaymentStore>,
    ) -> BoxFuture<'static, SettleOutcome> {
        Box::pin(async move {
            let Some(detail) = verified.detail::<ExactVerified>() else {
                return SettleOutcome::Rejected(refused(reason::INVALID_PAYLOAD));
            };
            let Some(payment) = detail.credential.detail::<ExactCredential>() else {
                return SettleOutcome::Rejected(refused(reason::INVALID_PAYLOAD));
            };
            let request = FacilitatorRequest::new(&payment.payload, &detail.requirements);
            match self.facilitator.settle(&request).await {
                Ok(answer) if answer.success => SettleOutcome::Settled(Receipt {
                    reference: answer.transaction.clone(),
                    headers: payment_response_headers(&answer),
                }),
                Ok(mut answer) => {
                    if answer.network.is_empty() {
                        answer.network = self.network.caip2().to_owned();
                    }
                    let code = answer
                        .error_reason
                        .clone()
                        .unwrap_or_else(|| reason::SETTLE_FAILED.to_owned());
                    // A facilitator that fails without saying why may have submitted the
                    // transaction before it failed: treat it as unknown, never as a refusal
                    // that would make the client pay again.
                    if code == reason::SETTLE_FAILED {
                        let unknown = rejection(RejectionKind::Unavailable, reason::SETTLE_UNKNOWN);
                        return SettleOutcome::Unknown(unknown);
                    }
                    let mut rejection =
                        Rejection::new(RejectionKind::PaymentRequired, PROTOCOL, code);
                    rejection.headers = payment_response_headers(&answer);
                    SettleOutcome::Rejected(rejection)
                }
                Err(error) if error.outcome_unknown() => {
                    SettleOutcome::Unknown(facilitator_rejection(&error))
                }
                Err(error) => SettleOutcome::Rejected(facilitator_rejection(&error)),
            }
        })
    }

    /// The payer's authorization (asset, payer, recipient, amount, nonce, expiration) and the
    /// ledger it was verified at; empty without an RPC.
    fn evidence(&self, verified: &Verified) -> bytes::Bytes {
        #[cfg(feature = "rpc")]
        {
            use crate::stellar::{AuthorizedTransfer, SettlementEvidence};
            let Some(detail) = verified.detail::<ExactVerified>() else {
                return bytes::Bytes::new();
            };
            let (Some(since), Some(payment)) = (
                detail.since_ledger,
                detail.credential.detail::<ExactCredential>(),
            ) else {
                return bytes::Bytes::new();
            };
            match AuthorizedTransfer::of(&payment.transfer, since) {
                // Verified after its expiration: the ledger read is not this network's.
                Ok(transfer) if transfer.since_ledger > transfer.expiration_ledger => {
                    tracing::error!(
                        "the ledger read is past the payment's expiration: is the RPC on the scheme's network?"
                    );
                    bytes::Bytes::new()
                }
                Ok(transfer) => {
                    bytes::Bytes::from(SettlementEvidence::Authorized(transfer).encode())
                }
                Err(_) => bytes::Bytes::new(),
            }
        }
        #[cfg(not(feature = "rpc"))]
        {
            let _ = verified;
            bytes::Bytes::new()
        }
    }

    #[cfg(feature = "rpc")]
    fn reconcile<'a>(
        &'a self,
        pending: &'a crate::store::PendingSettlement,
    ) -> BoxFuture<'a, crate::scheme::Reconciled> {
        use crate::scheme::Reconciled;
        use crate::stellar::{LedgerFinding, SettlementEvidence};
        Box::pin(async move {
            let (Some(rpc), Ok(evidence)) = (
                self.rpc.as_ref(),
                SettlementEvidence::decode(&pending.evidence),
            ) else {
                return Reconciled::Unknown;
            };
            match evidence.find(&**rpc).await {
                LedgerFinding::Settled(hash) => Reconciled::Settled(self.reconciled_receipt(
                    &pending.paid.payer,
                    pending.paid.amount,
                    hash.to_string(),
                )),
                LedgerFinding::NotSettled => Reconciled::NotSettled(refused(reason::NOT_SETTLED)),
                LedgerFinding::Unknown => Reconciled::Unknown,
            }
        })
    }
}

impl Exact {
    /// The latest ledger, when the scheme reads the ledger (for reconciliation) and it answers.
    async fn latest_ledger(&self) -> Option<u32> {
        #[cfg(feature = "rpc")]
        if let Some(rpc) = &self.rpc {
            return match rpc.latest_ledger().await {
                Ok(latest) => Some(latest.sequence),
                Err(error) => {
                    tracing::warn!(%error, "cannot read the latest ledger; this payment cannot be reconciled");
                    None
                }
            };
        }
        None
    }

    /// The receipt of a payment found settled on the ledger in `transaction`, as the
    /// facilitator would have answered.
    #[cfg(feature = "rpc")]
    fn reconciled_receipt(&self, payer: &str, amount: Amount, transaction: String) -> Receipt {
        let answer = SettleResponse {
            success: true,
            error_reason: None,
            error_message: None,
            payer: Some(payer.to_owned()),
            transaction: transaction.clone(),
            network: self.network.caip2().to_owned(),
            amount: Some(amount.to_atomic_string()),
        };
        Receipt {
            reference: transaction,
            headers: payment_response_headers(&answer),
        }
    }
}

impl std::fmt::Debug for Exact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exact")
            .field("network", &self.network.caip2())
            .field("asset", &self.asset_strkey)
            .field("pay_to", &self.pay_to_strkey)
            .field("max_timeout_seconds", &self.max_timeout_seconds)
            .finish_non_exhaustive()
    }
}
