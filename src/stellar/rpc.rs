//! Soroban RPC (Stellar RPC): the [`SorobanRpc`] trait, [`JsonRpcClient`] (JSON-RPC 2.0 over
//! reqwest), and helpers built on the trait.
//!
//! [`SorobanRpc`] covers the methods the payment intents and the official clients use:
//! `getHealth`, `getNetwork`, `getLatestLedger`, `simulateTransaction`, `sendTransaction`,
//! `getTransaction` and `getLedgerEntries`. Results are typed, and every XDR field is decoded
//! (within explicit XDR limits) before it is handed over: a server sending undecodable XDR gets
//! [`RpcError::Malformed`], never a half-read answer.
//!
//! On top of the trait: [`wait_for_transaction`] (polls `getTransaction` until the transaction
//! is final), [`account_sequence`] and [`contract_data`] (one `getLedgerEntries` each).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use tower_paywall::stellar::{JsonRpcClient, SorobanRpc};
//!
//! let rpc: Arc<dyn SorobanRpc> =
//!     Arc::new(JsonRpcClient::builder("https://soroban-testnet.stellar.org").build()?);
//! let ledger = rpc.latest_ledger().await?;
//! println!("latest ledger: {}", ledger.sequence);
//! # Ok(()) }
//! ```

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::header::{ACCEPT, CONTENT_TYPE};
use reqwest::Url;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;
use stellar_xdr::{
    AccountId, ContractDataDurability, DiagnosticEvent, LedgerEntryData, LedgerKey,
    LedgerKeyAccount, LedgerKeyContractData, Limits, PublicKey, ReadXdr, ScVal,
    SorobanAuthorizationEntry, SorobanTransactionData, TransactionEnvelope, TransactionMeta,
    TransactionResult, Uint256, WriteXdr,
};

use super::transfer::MAX_XDR_DEPTH;
use super::{Address, NetworkId};
use crate::BoxFuture;
use crate::http::{Body, ClientError, Failure};

/// Default timeout of one RPC call, and of connecting.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest RPC response body read (transaction meta can be large).
const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;
/// Longest RPC error message kept, in characters.
const MAX_MESSAGE_CHARS: usize = 256;
/// First pause between two `getTransaction` polls.
const FIRST_POLL_DELAY: Duration = Duration::from_millis(200);
/// Longest pause between two `getTransaction` polls.
const MAX_POLL_DELAY: Duration = Duration::from_secs(2);
/// Longest deadline [`wait_for_transaction`] honours; longer ones are clamped.
const MAX_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

/// A Soroban RPC server: the methods payment flows need, with typed, decoded results.
///
/// Object-safe; schemes hold one as `Arc<dyn SorobanRpc>`. [`JsonRpcClient`] talks to a real
/// server; tests and in-process ledgers may implement it directly.
pub trait SorobanRpc: Send + Sync + 'static {
    /// `getHealth`: whether the server is healthy, and the ledgers it keeps.
    fn health(&self) -> BoxFuture<'_, Result<Health, RpcError>>;

    /// `getNetwork`: the network's passphrase and protocol version.
    fn network(&self) -> BoxFuture<'_, Result<NetworkInfo, RpcError>>;

    /// `getLatestLedger`: the latest ledger the server knows.
    fn latest_ledger(&self) -> BoxFuture<'_, Result<LatestLedger, RpcError>>;

    /// `simulateTransaction {transaction}`: the resources, fee, authorizations, return value
    /// and events of a transaction, without submitting it. A failed simulation is `Ok` with
    /// [`Simulation::error`] set.
    fn simulate_transaction<'a>(
        &'a self,
        transaction: &'a TransactionEnvelope,
    ) -> BoxFuture<'a, Result<Simulation, RpcError>>;

    /// `sendTransaction {transaction}`: submits a signed transaction. It is not final yet; see
    /// [`wait_for_transaction`]. A rejection is `Ok` with [`SendStatus::Error`].
    fn send_transaction<'a>(
        &'a self,
        transaction: &'a TransactionEnvelope,
    ) -> BoxFuture<'a, Result<SendResult, RpcError>>;

    /// `getTransaction {hash}`: a transaction's status and, once final, its envelope, result
    /// and meta.
    fn transaction<'a>(
        &'a self,
        hash: &'a TransactionHash,
    ) -> BoxFuture<'a, Result<TransactionInfo, RpcError>>;

    /// `getLedgerEntries {keys}`: the current entries for these keys; missing ones are left out.
    fn ledger_entries<'a>(
        &'a self,
        keys: &'a [LedgerKey],
    ) -> BoxFuture<'a, Result<LedgerEntries, RpcError>>;
}

impl<T: SorobanRpc + ?Sized> SorobanRpc for Arc<T> {
    fn health(&self) -> BoxFuture<'_, Result<Health, RpcError>> {
        (**self).health()
    }

    fn network(&self) -> BoxFuture<'_, Result<NetworkInfo, RpcError>> {
        (**self).network()
    }

    fn latest_ledger(&self) -> BoxFuture<'_, Result<LatestLedger, RpcError>> {
        (**self).latest_ledger()
    }

    fn simulate_transaction<'a>(
        &'a self,
        transaction: &'a TransactionEnvelope,
    ) -> BoxFuture<'a, Result<Simulation, RpcError>> {
        (**self).simulate_transaction(transaction)
    }

    fn send_transaction<'a>(
        &'a self,
        transaction: &'a TransactionEnvelope,
    ) -> BoxFuture<'a, Result<SendResult, RpcError>> {
        (**self).send_transaction(transaction)
    }

    fn transaction<'a>(
        &'a self,
        hash: &'a TransactionHash,
    ) -> BoxFuture<'a, Result<TransactionInfo, RpcError>> {
        (**self).transaction(hash)
    }

    fn ledger_entries<'a>(
        &'a self,
        keys: &'a [LedgerKey],
    ) -> BoxFuture<'a, Result<LedgerEntries, RpcError>> {
        (**self).ledger_entries(keys)
    }
}

/// Why an RPC call gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// Could not connect: the request was never delivered.
    #[error("Soroban RPC unreachable: {0}")]
    Unreachable(String),
    /// No answer in time: for `sendTransaction`, the outcome is unknown.
    #[error("Soroban RPC did not answer in time")]
    Timeout,
    /// The connection failed after the request was sent: for `sendTransaction`, the outcome is
    /// unknown.
    #[error("Soroban RPC connection interrupted: {0}")]
    Interrupted(String),
    /// A non-2xx HTTP status.
    #[error("Soroban RPC answered HTTP {0}")]
    Status(u16),
    /// A JSON-RPC error object. The message is the server's, cut to 256 characters.
    #[error("Soroban RPC error {code}: {message}")]
    Rpc {
        /// The JSON-RPC error code (`-32602` invalid params, …).
        code: i64,
        /// The server's message, shortened.
        message: String,
    },
    /// The answer is not the expected JSON-RPC response, or a field does not decode (bad JSON,
    /// no `result`, an unknown status, invalid base64 or XDR).
    #[error("Soroban RPC answer malformed: {0}")]
    Malformed(String),
    /// [`wait_for_transaction`] reached its deadline before the transaction was final. It may
    /// still be applied.
    #[error("transaction {0} is not final yet")]
    NotFinal(TransactionHash),
    /// [`account_sequence`]: the address has no account entry (the account is not funded, or
    /// the address is a contract).
    #[error("account {0} not found")]
    AccountNotFound(Address),
}

impl RpcError {
    /// Whether the RPC server is unavailable or did not say how things ended: unreachable, no
    /// answer in time, an interrupted connection, HTTP 5xx or 429, or a transaction not final
    /// by the deadline. Callers answer 503 (retry later, with the same payment), never 402.
    #[must_use]
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Unreachable(_) | Self::Timeout | Self::Interrupted(_) | Self::NotFinal(_) => true,
            Self::Status(code) => *code == 429 || (500..600).contains(code),
            Self::Rpc { .. } | Self::Malformed(_) | Self::AccountNotFound(_) => false,
        }
    }
}

/// Why a [`JsonRpcClient`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RpcBuildError {
    /// The URL is not an absolute `http`/`https` URL with a host, or carries credentials or a
    /// fragment.
    #[error("invalid Soroban RPC URL: {0}")]
    InvalidUrl(&'static str),
    /// The timeout is zero.
    #[error("invalid timeout: {0}")]
    InvalidTimeout(&'static str),
    /// An extra root certificate could not be read or used.
    #[error("invalid root certificate: {0}")]
    InvalidCertificate(&'static str),
    /// The TLS configuration could not be built.
    #[error("could not set up TLS")]
    Tls,
    /// The HTTP client could not be built.
    #[error("could not set up the HTTP client")]
    Client,
}

/// `getHealth`'s answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// `"healthy"` for a healthy server.
    pub status: String,
    /// The most recent ledger the server knows.
    pub latest_ledger: u32,
    /// The oldest ledger kept in history, if given.
    pub oldest_ledger: Option<u32>,
    /// The configured history retention window in ledgers, if given.
    pub ledger_retention_window: Option<u32>,
}

impl Health {
    /// Whether the status is `"healthy"`.
    #[must_use]
    pub fn is_healthy(&self) -> bool {
        self.status == "healthy"
    }
}

/// `getNetwork`'s answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkInfo {
    /// The network passphrase (`Test SDF Network ; September 2015`, …).
    pub passphrase: String,
    /// The protocol version of the latest ledger.
    pub protocol_version: u32,
    /// The friendbot (test-account funding) URL, on networks that have one.
    pub friendbot_url: Option<String>,
}

impl NetworkInfo {
    /// The network id of [`passphrase`](Self::passphrase).
    #[must_use]
    pub fn network_id(&self) -> NetworkId {
        NetworkId::from_passphrase(&self.passphrase)
    }
}

/// `getLatestLedger`'s answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatestLedger {
    /// The ledger's hash, as the server sent it (hex); empty if it sent none.
    pub id: String,
    /// The ledger's protocol version.
    pub protocol_version: u32,
    /// The ledger's sequence number.
    pub sequence: u32,
}

/// `simulateTransaction`'s answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Simulation {
    /// The latest ledger the server knew.
    pub latest_ledger: u32,
    /// The resource fee to add on top of the inclusion fee, in stroops (`minResourceFee`); 0
    /// when the simulation failed.
    pub min_resource_fee: i64,
    /// The resources and footprint to put in the transaction (`transactionData`); its presence
    /// means success.
    pub transaction_data: Option<SorobanTransactionData>,
    /// One result per host function invocation (`results`).
    pub results: Vec<HostFunctionResult>,
    /// The diagnostic events (`events`).
    pub events: Vec<DiagnosticEvent>,
    /// Why the simulation failed (`error`).
    pub error: Option<String>,
    /// Archived entries to restore first (`restorePreamble`); an empty preamble is `None`.
    pub restore_preamble: Option<RestorePreamble>,
}

impl Simulation {
    /// Whether the simulation succeeded: no `error`, and transaction data to use.
    ///
    /// A success may still need a restore first; see [`needs_restore`](Self::needs_restore).
    #[must_use]
    pub fn is_success(&self) -> bool {
        self.error.is_none() && self.transaction_data.is_some()
    }

    /// Whether archived ledger entries must be restored before the transaction can run.
    #[must_use]
    pub fn needs_restore(&self) -> bool {
        self.restore_preamble.is_some()
    }

    /// The first (for an `InvokeHostFunction` transaction, the only) result.
    #[must_use]
    pub fn result(&self) -> Option<&HostFunctionResult> {
        self.results.first()
    }
}

/// One host function invocation's simulated result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostFunctionResult {
    /// The authorization entries the invocation needs (`auth`), unsigned.
    pub auth: Vec<SorobanAuthorizationEntry>,
    /// The return value (`xdr`); `None` when the server sent none or an empty one.
    pub retval: Option<ScVal>,
}

/// What a `RestoreFootprint` transaction needs before a simulated transaction can run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestorePreamble {
    /// The resource fee of the restore, in stroops.
    pub min_resource_fee: i64,
    /// The resources and footprint of the restore.
    pub transaction_data: SorobanTransactionData,
}

/// `sendTransaction`'s status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SendStatus {
    /// `PENDING`: accepted, waiting for a ledger. Poll `getTransaction`.
    Pending,
    /// `DUPLICATE`: already queued (an earlier send). Poll `getTransaction`.
    Duplicate,
    /// `TRY_AGAIN_LATER`: not accepted this time; send the same transaction again later.
    TryAgainLater,
    /// `ERROR`: rejected; [`SendResult::error_result`] says why.
    Error,
}

impl SendStatus {
    /// The status as RPC spells it (`PENDING`, …).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Duplicate => "DUPLICATE",
            Self::TryAgainLater => "TRY_AGAIN_LATER",
            Self::Error => "ERROR",
        }
    }

    fn parse(text: &str) -> Option<SendStatus> {
        match text {
            "PENDING" => Some(Self::Pending),
            "DUPLICATE" => Some(Self::Duplicate),
            "TRY_AGAIN_LATER" => Some(Self::TryAgainLater),
            "ERROR" => Some(Self::Error),
            _ => None,
        }
    }
}

impl fmt::Display for SendStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `sendTransaction`'s answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendResult {
    /// Whether the transaction was queued.
    pub status: SendStatus,
    /// The transaction's hash.
    pub hash: TransactionHash,
    /// The latest ledger the server knew.
    pub latest_ledger: u32,
    /// Why the transaction was rejected (`errorResultXdr`), with [`SendStatus::Error`].
    pub error_result: Option<TransactionResult>,
    /// Diagnostic events explaining a rejection (`diagnosticEventsXdr`), if any.
    pub diagnostic_events: Vec<DiagnosticEvent>,
}

/// `getTransaction`'s status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransactionStatus {
    /// `SUCCESS`: applied successfully in a ledger.
    Success,
    /// `FAILED`: included in a ledger, and failed (the fee was charged).
    Failed,
    /// `NOT_FOUND`: not in a ledger (yet, or outside the server's history).
    NotFound,
}

impl TransactionStatus {
    /// The status as RPC spells it (`SUCCESS`, …).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Success => "SUCCESS",
            Self::Failed => "FAILED",
            Self::NotFound => "NOT_FOUND",
        }
    }

    /// Whether the transaction is in a ledger: `Success` or `Failed`.
    #[must_use]
    pub const fn is_final(self) -> bool {
        matches!(self, Self::Success | Self::Failed)
    }

    fn parse(text: &str) -> Option<TransactionStatus> {
        match text {
            "SUCCESS" => Some(Self::Success),
            "FAILED" => Some(Self::Failed),
            "NOT_FOUND" => Some(Self::NotFound),
            _ => None,
        }
    }
}

impl fmt::Display for TransactionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `getTransaction`'s answer. The ledger fields are set once the transaction is final.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionInfo {
    /// Whether the transaction is in a ledger, and how it went.
    pub status: TransactionStatus,
    /// The latest ledger the server knew.
    pub latest_ledger: u32,
    /// The ledger that included the transaction.
    pub ledger: Option<u32>,
    /// When that ledger closed (unix seconds, `createdAt`).
    pub created_at: Option<u64>,
    /// The transaction's index in that ledger.
    pub application_order: Option<u32>,
    /// Whether the transaction was a fee bump.
    pub fee_bump: bool,
    /// The transaction (`envelopeXdr`).
    pub envelope: Option<TransactionEnvelope>,
    /// The result (`resultXdr`).
    pub result: Option<TransactionResult>,
    /// The ledger changes, events and return value (`resultMetaXdr`).
    pub result_meta: Option<TransactionMeta>,
}

impl TransactionInfo {
    /// The answer for a transaction not in any ledger (yet), as of `latest_ledger`.
    #[must_use]
    pub fn not_found(latest_ledger: u32) -> Self {
        TransactionInfo {
            status: TransactionStatus::NotFound,
            latest_ledger,
            ledger: None,
            created_at: None,
            application_order: None,
            fee_bump: false,
            envelope: None,
            result: None,
            result_meta: None,
        }
    }
}

/// `getLedgerEntries`' answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerEntries {
    /// The entries found; keys without an entry are left out.
    pub entries: Vec<LedgerEntryResult>,
    /// The latest ledger the server knew.
    pub latest_ledger: u32,
}

/// One ledger entry of [`LedgerEntries`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerEntryResult {
    /// The entry's key (`key`).
    pub key: LedgerKey,
    /// The entry's current value (`xdr`).
    pub data: LedgerEntryData,
    /// The ledger that last changed the entry (`lastModifiedLedgerSeq`).
    pub last_modified_ledger: u32,
    /// The last ledger a contract data or code entry lives until (`liveUntilLedgerSeq`).
    pub live_until_ledger: Option<u32>,
}

/// A transaction's hash: `sha256` of its signature payload. Displayed and parsed as 64
/// lowercase hex digits, as RPC sends it (parsing also accepts uppercase).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransactionHash(pub [u8; 32]);

impl TransactionHash {
    /// The hash of `envelope` on the network `network`: of the fee bump for a fee-bump
    /// envelope, as `sendTransaction` and `getTransaction` use it.
    ///
    /// # Errors
    ///
    /// The envelope does not encode as XDR (not expected for a well-formed value).
    pub fn of(
        envelope: &TransactionEnvelope,
        network: &NetworkId,
    ) -> Result<TransactionHash, stellar_xdr::Error> {
        envelope.hash(network.0).map(TransactionHash)
    }

    /// The 32 hash bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for TransactionHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::hex::encode(&self.0))
    }
}

impl fmt::Debug for TransactionHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TransactionHash({self})")
    }
}

/// A text that is not 64 hex digits, refused as a [`TransactionHash`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a transaction hash is 64 hex digits")]
pub struct TransactionHashError;

impl FromStr for TransactionHash {
    type Err = TransactionHashError;

    fn from_str(text: &str) -> Result<TransactionHash, TransactionHashError> {
        crate::hex::decode(text)
            .map(TransactionHash)
            .ok_or(TransactionHashError)
    }
}

/// Polls `getTransaction` until the transaction is final (`SUCCESS` or `FAILED`) or `deadline`
/// has passed, pausing 200 ms, then 1.5 times longer each time, at most 2 s.
///
/// Unavailability ([`RpcError::is_unavailable`]) while polling is retried until the deadline.
///
/// # Errors
///
/// [`RpcError::NotFinal`] at the deadline (the last error instead, if the last poll failed);
/// at once, any error that is not unavailability.
pub async fn wait_for_transaction(
    rpc: &dyn SorobanRpc,
    hash: &TransactionHash,
    deadline: Duration,
) -> Result<TransactionInfo, RpcError> {
    let start = tokio::time::Instant::now();
    let end = start.checked_add(deadline.min(MAX_WAIT)).unwrap_or(start);
    let mut pause = FIRST_POLL_DELAY;
    let mut last_error = None;
    loop {
        let remaining = end.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(remaining, rpc.transaction(hash)).await {
            Ok(Ok(info)) if info.status.is_final() => return Ok(info),
            Ok(Ok(_)) => last_error = None,
            Ok(Err(error)) if error.is_unavailable() => {
                tracing::debug!(%error, %hash, "getTransaction failed, polling again");
                last_error = Some(error);
            }
            Ok(Err(error)) => return Err(error),
            Err(_elapsed) => break,
        }
        let remaining = end.saturating_duration_since(tokio::time::Instant::now());
        if remaining.is_zero() {
            break;
        }
        tokio::time::sleep(pause.min(remaining)).await;
        pause = (pause.saturating_mul(3) / 2).min(MAX_POLL_DELAY);
    }
    Err(last_error.unwrap_or(RpcError::NotFinal(*hash)))
}

/// The current sequence number of an account (`G…`, or the account of an `M…`), read with one
/// `getLedgerEntries`. A transaction from it uses this + 1.
///
/// # Errors
///
/// [`RpcError::AccountNotFound`] if the account does not exist or `account` is a contract;
/// [`RpcError::Malformed`] if the server answers the key with another kind of entry; the
/// call's errors.
pub async fn account_sequence(rpc: &dyn SorobanRpc, account: &Address) -> Result<i64, RpcError> {
    let Some(key) = account.ed25519_key() else {
        return Err(RpcError::AccountNotFound(*account));
    };
    let account_id = AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(key)));
    let ledger_key = LedgerKey::Account(LedgerKeyAccount {
        account_id: account_id.clone(),
    });
    let answer = rpc
        .ledger_entries(std::slice::from_ref(&ledger_key))
        .await?;
    let Some(entry) = answer.entries.into_iter().find(|e| e.key == ledger_key) else {
        return Err(RpcError::AccountNotFound(*account));
    };
    match entry.data {
        LedgerEntryData::Account(found) if found.account_id == account_id => Ok(found.seq_num.0),
        _ => Err(RpcError::Malformed(
            "getLedgerEntries answered an account key with another entry".into(),
        )),
    }
}

/// A contract's data entry under `key`, read with one `getLedgerEntries`; `None` if there is
/// none (or it is archived).
///
/// # Errors
///
/// [`RpcError::Malformed`] if the server answers the key with another kind of entry; the call's
/// errors.
pub async fn contract_data(
    rpc: &dyn SorobanRpc,
    contract: &Address,
    key: ScVal,
    durability: ContractDataDurability,
) -> Result<Option<LedgerEntryResult>, RpcError> {
    let ledger_key = LedgerKey::ContractData(LedgerKeyContractData {
        contract: contract.to_sc_address(),
        key,
        durability,
    });
    let answer = rpc
        .ledger_entries(std::slice::from_ref(&ledger_key))
        .await?;
    let Some(entry) = answer.entries.into_iter().find(|e| e.key == ledger_key) else {
        return Ok(None);
    };
    if matches!(entry.data, LedgerEntryData::ContractData(_)) {
        Ok(Some(entry))
    } else {
        Err(RpcError::Malformed(
            "getLedgerEntries answered a contract data key with another entry".into(),
        ))
    }
}

/// Builder of a [`JsonRpcClient`]; see [`JsonRpcClient::builder`].
#[derive(Clone)]
pub struct JsonRpcClientBuilder {
    url: String,
    timeout: Duration,
    root_certificates: Vec<Vec<u8>>,
}

impl fmt::Debug for JsonRpcClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonRpcClientBuilder")
            .field("url", &redacted(&self.url))
            .field("timeout", &self.timeout)
            .field("root_certificates", &self.root_certificates.len())
            .finish()
    }
}

impl JsonRpcClientBuilder {
    /// Timeout of each call, and of connecting; default 10 s.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Trusts the certificates of this PEM text as extra roots, next to the webpki roots (for
    /// example a loopback sandbox's self-signed certificate). May be called several times.
    #[must_use]
    pub fn root_certificate_pem(mut self, pem: &[u8]) -> Self {
        self.root_certificates.push(pem.to_vec());
        self
    }

    /// Validates the settings and builds the client.
    ///
    /// # Errors
    ///
    /// [`RpcBuildError`]: a URL that is not an absolute `http`/`https` URL with a host (or that
    /// carries credentials or a fragment), a zero timeout, an unusable root certificate.
    pub fn build(self) -> Result<JsonRpcClient, RpcBuildError> {
        let url = crate::http::http_url(&self.url)
            .map_err(|error| RpcBuildError::InvalidUrl(error.message()))?;
        if self.timeout.is_zero() {
            return Err(RpcBuildError::InvalidTimeout(
                "the timeout must not be zero",
            ));
        }
        let client = crate::http::client(self.timeout, &self.root_certificates).map_err(
            |error| match error {
                ClientError::Certificate(what) => RpcBuildError::InvalidCertificate(what),
                ClientError::Tls => RpcBuildError::Tls,
                ClientError::Client => RpcBuildError::Client,
            },
        )?;
        Ok(JsonRpcClient {
            inner: Arc::new(Inner {
                client,
                url,
                timeout: self.timeout,
                next_id: AtomicU64::new(1),
            }),
        })
    }
}

/// A Soroban RPC server reached over HTTP(S) with JSON-RPC 2.0: each call is one `POST` of
/// `{"jsonrpc":"2.0","id":N,"method":…,"params":{…}}` to the URL.
///
/// TLS is rustls with the ring provider and the webpki roots, plus any extra roots given to
/// the builder. Cheap to clone; clones share the connection pool. Its `Debug` shows only the
/// URL's origin, since providers may put an API key in the path or query.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use tower_paywall::stellar::JsonRpcClient;
///
/// let rpc = JsonRpcClient::builder("https://soroban-testnet.stellar.org")
///     .timeout(Duration::from_secs(5))
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct JsonRpcClient {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    url: Url,
    timeout: Duration,
    next_id: AtomicU64,
}

impl fmt::Debug for JsonRpcClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonRpcClient")
            .field("origin", &self.inner.url.origin().ascii_serialization())
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl JsonRpcClient {
    /// Starts building a client for the RPC server at `url`, e.g.
    /// `https://soroban-testnet.stellar.org`. Plain `http` is allowed (a loopback sandbox).
    pub fn builder(url: impl Into<String>) -> JsonRpcClientBuilder {
        JsonRpcClientBuilder {
            url: url.into(),
            timeout: DEFAULT_TIMEOUT,
            root_certificates: Vec::new(),
        }
    }
}

impl SorobanRpc for JsonRpcClient {
    fn health(&self) -> BoxFuture<'_, Result<Health, RpcError>> {
        Box::pin(async move {
            const METHOD: &str = "getHealth";
            let wire: HealthWire = self.inner.call(METHOD, None).await?;
            Ok(Health {
                status: wire.status,
                latest_ledger: number(METHOD, "latestLedger", &wire.latest_ledger)?,
                oldest_ledger: optional_number(METHOD, "oldestLedger", wire.oldest_ledger)?,
                ledger_retention_window: optional_number(
                    METHOD,
                    "ledgerRetentionWindow",
                    wire.ledger_retention_window,
                )?,
            })
        })
    }

    fn network(&self) -> BoxFuture<'_, Result<NetworkInfo, RpcError>> {
        Box::pin(async move {
            const METHOD: &str = "getNetwork";
            let wire: NetworkWire = self.inner.call(METHOD, None).await?;
            Ok(NetworkInfo {
                passphrase: wire.passphrase,
                protocol_version: number(METHOD, "protocolVersion", &wire.protocol_version)?,
                friendbot_url: wire.friendbot_url.filter(|url| !url.is_empty()),
            })
        })
    }

    fn latest_ledger(&self) -> BoxFuture<'_, Result<LatestLedger, RpcError>> {
        Box::pin(async move {
            const METHOD: &str = "getLatestLedger";
            let wire: LatestLedgerWire = self.inner.call(METHOD, None).await?;
            Ok(LatestLedger {
                id: wire.id.unwrap_or_default(),
                protocol_version: number(METHOD, "protocolVersion", &wire.protocol_version)?,
                sequence: number(METHOD, "sequence", &wire.sequence)?,
            })
        })
    }

    fn simulate_transaction<'a>(
        &'a self,
        transaction: &'a TransactionEnvelope,
    ) -> BoxFuture<'a, Result<Simulation, RpcError>> {
        Box::pin(async move {
            const METHOD: &str = "simulateTransaction";
            let params = serde_json::json!({ "transaction": encode(transaction)? });
            let wire: SimulateWire = self.inner.call(METHOD, Some(params)).await?;
            simulation(wire)
        })
    }

    fn send_transaction<'a>(
        &'a self,
        transaction: &'a TransactionEnvelope,
    ) -> BoxFuture<'a, Result<SendResult, RpcError>> {
        Box::pin(async move {
            const METHOD: &str = "sendTransaction";
            let params = serde_json::json!({ "transaction": encode(transaction)? });
            let wire: SendWire = self.inner.call(METHOD, Some(params)).await?;
            send_result(wire)
        })
    }

    fn transaction<'a>(
        &'a self,
        hash: &'a TransactionHash,
    ) -> BoxFuture<'a, Result<TransactionInfo, RpcError>> {
        Box::pin(async move {
            const METHOD: &str = "getTransaction";
            let params = serde_json::json!({ "hash": hash.to_string() });
            let wire: TransactionWire = self.inner.call(METHOD, Some(params)).await?;
            transaction_info(wire)
        })
    }

    fn ledger_entries<'a>(
        &'a self,
        keys: &'a [LedgerKey],
    ) -> BoxFuture<'a, Result<LedgerEntries, RpcError>> {
        Box::pin(async move {
            const METHOD: &str = "getLedgerEntries";
            let keys = keys.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
            let params = serde_json::json!({ "keys": keys });
            let wire: EntriesWire = self.inner.call(METHOD, Some(params)).await?;
            ledger_entries(wire)
        })
    }
}

/// A JSON-RPC 2.0 request.
#[derive(serde::Serialize)]
struct Request<'a> {
    jsonrpc: &'static str,
    id: u64,
    method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    params: Option<Value>,
}

/// A JSON-RPC 2.0 response (`jsonrpc` is not checked).
#[derive(Deserialize)]
struct Response {
    #[serde(default)]
    id: Value,
    result: Option<Box<RawValue>>,
    error: Option<Value>,
}

impl Inner {
    /// One JSON-RPC call: `POST`s the request and reads `result` as `T`.
    async fn call<T: DeserializeOwned>(
        &self,
        method: &'static str,
        params: Option<Value>,
    ) -> Result<T, RpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let request = Request {
            jsonrpc: "2.0",
            id,
            method,
            params,
        };
        // Cannot fail for this type; if it did, nothing was sent.
        let body = serde_json::to_vec(&request)
            .map_err(|_| RpcError::Unreachable("could not encode the request".into()))?;
        let response = self
            .client
            .post(self.url.clone())
            .timeout(self.timeout)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|error| {
                let failure = crate::http::send_failure(&error);
                tracing::debug!(method, error = ?error.without_url(), "Soroban RPC request failed");
                transport_error(failure)
            })?;
        let status = response.status();
        let body = crate::http::read_capped(response, MAX_RESPONSE_BYTES)
            .await
            .map_err(|error| {
                let failure = crate::http::body_failure(&error);
                tracing::debug!(method, error = ?error.without_url(), "Soroban RPC answer could not be read");
                transport_error(failure)
            })?;
        if !status.is_success() {
            return Err(RpcError::Status(status.as_u16()));
        }
        let Body::Complete(bytes) = body else {
            return Err(malformed(
                method,
                format_args!("the answer is larger than {MAX_RESPONSE_BYTES} bytes"),
            ));
        };
        let response: Response = serde_json::from_slice(&bytes)
            .map_err(|_| malformed(method, "the answer is not a JSON-RPC response"))?;
        if let Some(error) = response.error {
            return Err(rpc_error(&error));
        }
        if response.id.as_u64() != Some(id) {
            return Err(malformed(method, "the answer's id is not the request's"));
        }
        let Some(result) = response.result else {
            return Err(malformed(method, "the answer has no result"));
        };
        serde_json::from_str(result.get())
            .map_err(|_| malformed(method, "the result is not the expected JSON"))
    }
}

/// The error of a call that gave no answer.
fn transport_error(failure: Failure) -> RpcError {
    match failure {
        Failure::Connect => RpcError::Unreachable("could not connect to the server".into()),
        Failure::Timeout => RpcError::Timeout,
        Failure::Request => RpcError::Unreachable("could not build the request".into()),
        Failure::Redirect => RpcError::Malformed("too many redirects".into()),
        Failure::Sent => {
            RpcError::Interrupted("connection failed after the request was sent".into())
        }
        Failure::Reading => {
            RpcError::Interrupted("connection failed while reading the answer".into())
        }
    }
}

/// A JSON-RPC error object: `code` (0 if absent or not an integer) and a shortened `message`.
fn rpc_error(error: &Value) -> RpcError {
    let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
    let message = error.get("message").and_then(Value::as_str).unwrap_or("");
    RpcError::Rpc {
        code,
        message: shorten(message),
    }
}

/// At most [`MAX_MESSAGE_CHARS`] characters of `text`, control characters replaced by spaces.
fn shorten(text: &str) -> String {
    let mut chars = text.chars();
    let mut short: String = chars
        .by_ref()
        .take(MAX_MESSAGE_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if chars.next().is_some() {
        short.push('…');
    }
    short
}

fn malformed(method: &str, what: impl fmt::Display) -> RpcError {
    RpcError::Malformed(format!("{method}: {what}"))
}

/// The URL's origin only, for `Debug` (the path or query may hold an API key).
fn redacted(url: &str) -> String {
    match Url::parse(url) {
        Ok(url) => url.origin().ascii_serialization(),
        Err(_) => "<not a URL>".to_owned(),
    }
}

/// Base64 XDR of one of our own values, for a request.
fn encode(value: &impl WriteXdr) -> Result<String, RpcError> {
    value
        .to_xdr_base64(Limits::none())
        .map_err(|_| RpcError::Unreachable("could not encode the request".into()))
}

/// The XDR limits of received values: the engine's depth limit, and no more bytes than a whole
/// answer may have.
fn xdr_limits() -> Limits {
    Limits {
        depth: MAX_XDR_DEPTH,
        len: MAX_RESPONSE_BYTES,
    }
}

/// Decodes a base64 XDR field of an answer.
fn xdr<T: ReadXdr>(method: &str, field: &str, text: &str) -> Result<T, RpcError> {
    T::from_xdr_base64(text, xdr_limits())
        .map_err(|_| malformed(method, format_args!("`{field}` is not valid base64 XDR")))
}

/// Decodes an optional base64 XDR field; absent, `null` and `""` are `None`.
fn optional_xdr<T: ReadXdr>(
    method: &str,
    field: &str,
    text: Option<String>,
) -> Result<Option<T>, RpcError> {
    match text.as_deref() {
        None | Some("") => Ok(None),
        Some(text) => xdr(method, field, text).map(Some),
    }
}

/// Decodes a list of base64 XDR values; absent and `null` are empty.
fn xdr_list<T: ReadXdr>(
    method: &str,
    field: &str,
    texts: Option<Vec<String>>,
) -> Result<Vec<T>, RpcError> {
    texts
        .unwrap_or_default()
        .iter()
        .map(|text| xdr(method, field, text))
        .collect()
}

/// A number RPC sends as a JSON number or as a string of digits.
#[derive(Deserialize)]
#[serde(untagged)]
enum Lenient {
    Number(serde_json::Number),
    Text(String),
}

fn number<T: FromStr>(method: &str, field: &str, value: &Lenient) -> Result<T, RpcError> {
    let parsed = match value {
        Lenient::Number(number) => number.to_string().parse().ok(),
        Lenient::Text(text) => text.parse().ok(),
    };
    parsed.ok_or_else(|| malformed(method, format_args!("`{field}` is not a number in range")))
}

fn optional_number<T: FromStr>(
    method: &str,
    field: &str,
    value: Option<Lenient>,
) -> Result<Option<T>, RpcError> {
    value.map(|value| number(method, field, &value)).transpose()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HealthWire {
    status: String,
    latest_ledger: Lenient,
    oldest_ledger: Option<Lenient>,
    ledger_retention_window: Option<Lenient>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NetworkWire {
    passphrase: String,
    protocol_version: Lenient,
    friendbot_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LatestLedgerWire {
    id: Option<String>,
    protocol_version: Lenient,
    sequence: Lenient,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SimulateWire {
    latest_ledger: Lenient,
    min_resource_fee: Option<Lenient>,
    transaction_data: Option<String>,
    results: Option<Vec<HostFunctionResultWire>>,
    events: Option<Vec<String>>,
    error: Option<String>,
    restore_preamble: Option<RestorePreambleWire>,
}

#[derive(Deserialize)]
struct HostFunctionResultWire {
    auth: Option<Vec<String>>,
    xdr: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RestorePreambleWire {
    min_resource_fee: Option<Lenient>,
    transaction_data: Option<String>,
}

fn simulation(wire: SimulateWire) -> Result<Simulation, RpcError> {
    const METHOD: &str = "simulateTransaction";
    let results = wire
        .results
        .unwrap_or_default()
        .into_iter()
        .map(|result| {
            Ok(HostFunctionResult {
                auth: xdr_list(METHOD, "results[].auth", result.auth)?,
                retval: optional_xdr(METHOD, "results[].xdr", result.xdr)?,
            })
        })
        .collect::<Result<Vec<_>, RpcError>>()?;
    let restore_preamble = match wire.restore_preamble {
        None => None,
        Some(preamble) => optional_xdr(
            METHOD,
            "restorePreamble.transactionData",
            preamble.transaction_data,
        )?
        .map(|transaction_data| {
            Ok::<_, RpcError>(RestorePreamble {
                min_resource_fee: optional_number(
                    METHOD,
                    "restorePreamble.minResourceFee",
                    preamble.min_resource_fee,
                )?
                .unwrap_or(0),
                transaction_data,
            })
        })
        .transpose()?,
    };
    Ok(Simulation {
        latest_ledger: number(METHOD, "latestLedger", &wire.latest_ledger)?,
        min_resource_fee: optional_number(METHOD, "minResourceFee", wire.min_resource_fee)?
            .unwrap_or(0),
        transaction_data: optional_xdr(METHOD, "transactionData", wire.transaction_data)?,
        results,
        events: xdr_list(METHOD, "events", wire.events)?,
        error: wire.error,
        restore_preamble,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SendWire {
    status: String,
    hash: String,
    latest_ledger: Lenient,
    error_result_xdr: Option<String>,
    diagnostic_events_xdr: Option<Vec<String>>,
}

fn send_result(wire: SendWire) -> Result<SendResult, RpcError> {
    const METHOD: &str = "sendTransaction";
    Ok(SendResult {
        status: SendStatus::parse(&wire.status)
            .ok_or_else(|| malformed(METHOD, "unknown `status`"))?,
        hash: wire
            .hash
            .parse()
            .map_err(|_| malformed(METHOD, "`hash` is not 64 hex digits"))?,
        latest_ledger: number(METHOD, "latestLedger", &wire.latest_ledger)?,
        error_result: optional_xdr(METHOD, "errorResultXdr", wire.error_result_xdr)?,
        diagnostic_events: xdr_list(METHOD, "diagnosticEventsXdr", wire.diagnostic_events_xdr)?,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TransactionWire {
    status: String,
    latest_ledger: Lenient,
    ledger: Option<Lenient>,
    created_at: Option<Lenient>,
    application_order: Option<Lenient>,
    fee_bump: Option<bool>,
    envelope_xdr: Option<String>,
    result_xdr: Option<String>,
    result_meta_xdr: Option<String>,
}

fn transaction_info(wire: TransactionWire) -> Result<TransactionInfo, RpcError> {
    const METHOD: &str = "getTransaction";
    Ok(TransactionInfo {
        status: TransactionStatus::parse(&wire.status)
            .ok_or_else(|| malformed(METHOD, "unknown `status`"))?,
        latest_ledger: number(METHOD, "latestLedger", &wire.latest_ledger)?,
        ledger: optional_number(METHOD, "ledger", wire.ledger)?,
        created_at: optional_number(METHOD, "createdAt", wire.created_at)?,
        application_order: optional_number(METHOD, "applicationOrder", wire.application_order)?,
        fee_bump: wire.fee_bump.unwrap_or(false),
        envelope: optional_xdr(METHOD, "envelopeXdr", wire.envelope_xdr)?,
        result: optional_xdr(METHOD, "resultXdr", wire.result_xdr)?,
        result_meta: optional_xdr(METHOD, "resultMetaXdr", wire.result_meta_xdr)?,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EntriesWire {
    entries: Option<Vec<EntryWire>>,
    latest_ledger: Lenient,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EntryWire {
    key: String,
    xdr: String,
    last_modified_ledger_seq: Lenient,
    live_until_ledger_seq: Option<Lenient>,
}

fn ledger_entries(wire: EntriesWire) -> Result<LedgerEntries, RpcError> {
    const METHOD: &str = "getLedgerEntries";
    let entries = wire
        .entries
        .unwrap_or_default()
        .into_iter()
        .map(|entry| {
            Ok(LedgerEntryResult {
                key: xdr(METHOD, "entries[].key", &entry.key)?,
                data: xdr(METHOD, "entries[].xdr", &entry.xdr)?,
                last_modified_ledger: number(
                    METHOD,
                    "entries[].lastModifiedLedgerSeq",
                    &entry.last_modified_ledger_seq,
                )?,
                live_until_ledger: optional_number(
                    METHOD,
                    "entries[].liveUntilLedgerSeq",
                    entry.live_until_ledger_seq,
                )?,
            })
        })
        .collect::<Result<Vec<_>, RpcError>>()?;
    Ok(LedgerEntries {
        entries,
        latest_ledger: number(METHOD, "latestLedger", &wire.latest_ledger)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::testing::{TEST_CERT_PEM, serve_tls};
    use crate::stellar::{CredentialsArm, Keypair, Network, TransferRequest, build_transfer};
    use axum::Router;
    use axum::extract::Request;
    use axum::response::{IntoResponse, Response as HttpResponse};
    use serde_json::json;
    use sha2::{Digest, Sha256};
    use std::sync::Mutex;
    use std::time::Instant;
    use stellar_xdr::{
        AccountEntry, AccountEntryExt, ContractDataEntry, ContractEvent, ContractEventBody,
        ContractEventType, ContractEventV0, ContractId, ExtensionPoint, Hash, Int128Parts,
        InvokeHostFunctionResult, LedgerFootprint, OperationBody, OperationResult,
        OperationResultTr, ScSymbol, SequenceNumber, SorobanResources, SorobanTransactionDataExt,
        SorobanTransactionMetaExt, SorobanTransactionMetaV2, Thresholds, TransactionExt,
        TransactionMetaV4, TransactionResultExt, TransactionResultResult, TransactionV1Envelope,
        VecM,
    };

    /// One JSON-RPC request as the test double saw it.
    #[derive(Debug, Clone)]
    struct Seen {
        http_method: String,
        content_type: Option<String>,
        body: Value,
    }

    impl Seen {
        fn method(&self) -> &str {
            self.body["method"].as_str().unwrap_or_default()
        }
        fn id(&self) -> Value {
            self.body["id"].clone()
        }
    }

    /// What the test double saw, shared with the test.
    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<Seen>>>);

    impl Log {
        fn all(&self) -> Vec<Seen> {
            self.0.lock().unwrap().clone()
        }
        fn last(&self) -> Seen {
            self.all().pop().unwrap()
        }
        fn count(&self) -> usize {
            self.0.lock().unwrap().len()
        }
    }

    type Reply = Arc<dyn Fn(Seen) -> BoxFuture<'static, HttpResponse> + Send + Sync>;

    /// A test double's behaviour: the HTTP response to a JSON-RPC request.
    fn reply<F, Fut>(f: F) -> Reply
    where
        F: Fn(Seen) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HttpResponse> + Send + 'static,
    {
        Arc::new(move |seen| Box::pin(f(seen)))
    }

    /// Starts a loopback axum JSON-RPC double.
    async fn serve(reply: Reply) -> (String, Log) {
        let log = Log::default();
        let seen = log.clone();
        let app = Router::new().fallback(move |request: Request| {
            let (seen, reply) = (seen.clone(), reply.clone());
            async move {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
                let request = Seen {
                    http_method: parts.method.to_string(),
                    content_type: parts
                        .headers
                        .get(CONTENT_TYPE)
                        .map(|v| v.to_str().unwrap().to_owned()),
                    body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                };
                seen.0.lock().unwrap().push(request.clone());
                reply(request).await
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{address}"), log)
    }

    fn http(status: u16, body: String) -> HttpResponse {
        (
            http::StatusCode::from_u16(status).unwrap(),
            [(CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }

    /// A JSON-RPC success answering `seen`.
    fn success(seen: &Seen, result: Value) -> HttpResponse {
        let body = json!({"jsonrpc": "2.0", "id": seen.id(), "result": result});
        http(200, body.to_string())
    }

    /// A double answering every call with `result`.
    fn answering(result: Value) -> Reply {
        reply(move |seen| {
            let result = result.clone();
            async move { success(&seen, result) }
        })
    }

    fn client(base: &str) -> JsonRpcClient {
        JsonRpcClient::builder(base).build().unwrap()
    }

    async fn answer(result: Value) -> (JsonRpcClient, Log) {
        let (base, log) = serve(answering(result)).await;
        (client(&base), log)
    }

    fn b64(value: &impl WriteXdr) -> String {
        value.to_xdr_base64(Limits::none()).unwrap()
    }

    fn payer() -> Keypair {
        Keypair::from_seed([7; 32])
    }

    fn envelope() -> TransactionEnvelope {
        let network = Network::testnet();
        build_transfer(&TransferRequest {
            source: payer().address(),
            sequence: 43,
            fee: 100,
            contract: network.usdc().unwrap(),
            from: payer().address(),
            to: Keypair::from_seed([8; 32]).address(),
            amount: 10_000,
            nonce: 42,
            signature_expiration_ledger: 1_000,
            max_time: 1_700_000_000,
            credentials: CredentialsArm::Address,
        })
        .unwrap()
    }

    /// The payer's (unsigned) authorization entry of [`envelope`], as a simulation returns it.
    fn auth_entry() -> SorobanAuthorizationEntry {
        let TransactionEnvelope::Tx(TransactionV1Envelope { tx, .. }) = envelope() else {
            unreachable!()
        };
        let OperationBody::InvokeHostFunction(op) = &tx.operations[0].body else {
            unreachable!()
        };
        op.auth[0].clone()
    }

    fn account_key(address: &Address) -> LedgerKey {
        LedgerKey::Account(LedgerKeyAccount {
            account_id: AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(
                address.ed25519_key().unwrap(),
            ))),
        })
    }

    fn transaction_data() -> SorobanTransactionData {
        SorobanTransactionData {
            ext: SorobanTransactionDataExt::V0,
            resources: SorobanResources {
                footprint: LedgerFootprint {
                    read_only: vec![account_key(&payer().address())].try_into().unwrap(),
                    read_write: VecM::default(),
                },
                instructions: 1_234_567,
                disk_read_bytes: 1_000,
                write_bytes: 500,
            },
            resource_fee: 12_345,
        }
    }

    fn event() -> DiagnosticEvent {
        DiagnosticEvent {
            in_successful_contract_call: true,
            event: ContractEvent {
                ext: ExtensionPoint::V0,
                contract_id: Some(ContractId(Hash([5; 32]))),
                type_: ContractEventType::Contract,
                body: ContractEventBody::V0(ContractEventV0 {
                    topics: vec![ScVal::Symbol(ScSymbol("transfer".try_into().unwrap()))]
                        .try_into()
                        .unwrap(),
                    data: ScVal::I128(Int128Parts { hi: 0, lo: 10_000 }),
                }),
            },
        }
    }

    fn account_entry(sequence: i64) -> LedgerEntryData {
        let LedgerKey::Account(LedgerKeyAccount { account_id }) = account_key(&payer().address())
        else {
            unreachable!()
        };
        LedgerEntryData::Account(AccountEntry {
            account_id,
            balance: 100_000_000,
            seq_num: SequenceNumber(sequence),
            num_sub_entries: 0,
            inflation_dest: None,
            flags: 0,
            home_domain: Default::default(),
            thresholds: Thresholds([1, 0, 0, 0]),
            signers: VecM::default(),
            ext: AccountEntryExt::V0,
        })
    }

    fn success_result() -> TransactionResult {
        TransactionResult {
            fee_charged: 12_445,
            result: TransactionResultResult::TxSuccess(
                vec![OperationResult::OpInner(
                    OperationResultTr::InvokeHostFunction(InvokeHostFunctionResult::Success(Hash(
                        [9; 32],
                    ))),
                )]
                .try_into()
                .unwrap(),
            ),
            ext: TransactionResultExt::V0,
        }
    }

    fn result_meta() -> TransactionMeta {
        TransactionMeta::V4(TransactionMetaV4 {
            soroban_meta: Some(SorobanTransactionMetaV2 {
                ext: SorobanTransactionMetaExt::V0,
                return_value: Some(ScVal::Void),
            }),
            diagnostic_events: vec![event()].try_into().unwrap(),
            ..Default::default()
        })
    }

    fn hash() -> TransactionHash {
        TransactionHash::of(&envelope(), &Network::testnet().id()).unwrap()
    }

    /// Checks the JSON-RPC frame of the last request and returns its params.
    fn checked_request(log: &Log, method: &str) -> Option<Value> {
        let seen = log.last();
        assert_eq!(seen.http_method, "POST");
        assert_eq!(seen.content_type.as_deref(), Some("application/json"));
        assert_eq!(seen.body["jsonrpc"], "2.0");
        assert!(seen.body["id"].is_u64(), "{:?}", seen.body);
        assert_eq!(seen.method(), method);
        seen.body.get("params").cloned()
    }

    #[tokio::test]
    async fn get_health() {
        let (rpc, log) = answer(json!({"status": "healthy", "latestLedger": 51583040, "oldestLedger": 51565760, "ledgerRetentionWindow": 17281})).await;
        let health = rpc.health().await.unwrap();
        assert_eq!(checked_request(&log, "getHealth"), None);
        assert!(health.is_healthy());
        assert_eq!(
            health,
            Health {
                status: "healthy".into(),
                latest_ledger: 51_583_040,
                oldest_ledger: Some(51_565_760),
                ledger_retention_window: Some(17_281),
            }
        );
    }

    #[tokio::test]
    async fn get_network() {
        let passphrase = "Test SDF Network ; September 2015";
        let (rpc, log) = answer(json!({"friendbotUrl": "https://friendbot.stellar.org/", "passphrase": passphrase, "protocolVersion": 23})).await;
        let network = rpc.network().await.unwrap();
        assert_eq!(checked_request(&log, "getNetwork"), None);
        assert_eq!(network.passphrase, passphrase);
        assert_eq!(network.protocol_version, 23);
        assert_eq!(
            network.friendbot_url.as_deref(),
            Some("https://friendbot.stellar.org/")
        );
        assert_eq!(network.network_id(), Network::testnet().id());

        let (rpc, _) = answer(json!({"passphrase": passphrase, "protocolVersion": "23"})).await;
        assert_eq!(rpc.network().await.unwrap().friendbot_url, None);
    }

    #[tokio::test]
    async fn get_latest_ledger() {
        let id = "c73c5eac58a441d4eb733c35253ae85f783e018f7be5ef974258fed067aabb36";
        let (rpc, log) =
            answer(json!({"id": id, "protocolVersion": 23, "sequence": 2_539_605})).await;
        let ledger = rpc.latest_ledger().await.unwrap();
        assert_eq!(checked_request(&log, "getLatestLedger"), None);
        assert_eq!(
            ledger,
            LatestLedger {
                id: id.into(),
                protocol_version: 23,
                sequence: 2_539_605
            }
        );
    }

    #[tokio::test]
    async fn ids_increase() {
        let (rpc, log) = answer(json!({"protocolVersion": 23, "sequence": 1})).await;
        rpc.latest_ledger().await.unwrap();
        rpc.clone().latest_ledger().await.unwrap();
        let ids: Vec<_> = log.all().iter().map(Seen::id).collect();
        assert_eq!(ids, [json!(1), json!(2)]);
    }

    #[tokio::test]
    async fn simulate_transaction() {
        let (rpc, log) = answer(json!({
            "latestLedger": 1000,
            "minResourceFee": "12345",
            "transactionData": b64(&transaction_data()),
            "results": [{"auth": [b64(&auth_entry())], "xdr": b64(&ScVal::Void)}],
            "events": [b64(&event())],
            "cost": {"cpuInsns": "1", "memBytes": "2"},
            "stateChanges": []
        }))
        .await;
        let simulation = rpc.simulate_transaction(&envelope()).await.unwrap();
        let params = checked_request(&log, "simulateTransaction").unwrap();
        assert_eq!(params, json!({"transaction": b64(&envelope())}));
        assert!(simulation.is_success() && !simulation.needs_restore());
        assert_eq!(
            simulation,
            Simulation {
                latest_ledger: 1000,
                min_resource_fee: 12_345,
                transaction_data: Some(transaction_data()),
                results: vec![HostFunctionResult {
                    auth: vec![auth_entry()],
                    retval: Some(ScVal::Void),
                }],
                events: vec![event()],
                error: None,
                restore_preamble: None,
            }
        );
        assert_eq!(simulation.result().unwrap().auth, [auth_entry()]);
    }

    #[tokio::test]
    async fn simulation_failure_and_restore() {
        let (rpc, _) = answer(json!({
            "latestLedger": "1000",
            "error": "HostError: Error(Contract, #10)",
            "events": [b64(&event())]
        }))
        .await;
        let failed = rpc.simulate_transaction(&envelope()).await.unwrap();
        assert!(!failed.is_success());
        assert_eq!(
            failed.error.as_deref(),
            Some("HostError: Error(Contract, #10)")
        );
        assert_eq!((failed.min_resource_fee, failed.latest_ledger), (0, 1000));
        assert_eq!(failed.events, [event()]);
        assert!(failed.results.is_empty() && failed.transaction_data.is_none());

        let (rpc, _) = answer(json!({
            "latestLedger": 1000,
            "minResourceFee": 100,
            "transactionData": b64(&transaction_data()),
            "results": [{"auth": [], "xdr": ""}],
            "restorePreamble": {"minResourceFee": "777", "transactionData": b64(&transaction_data())}
        }))
        .await;
        let restore = rpc.simulate_transaction(&envelope()).await.unwrap();
        assert!(restore.is_success() && restore.needs_restore());
        assert_eq!(restore.min_resource_fee, 100);
        assert_eq!(restore.results[0].retval, None);
        assert_eq!(
            restore.restore_preamble,
            Some(RestorePreamble {
                min_resource_fee: 777,
                transaction_data: transaction_data()
            })
        );

        // An empty preamble (what the JS SDK tolerates) is no preamble.
        let (rpc, _) = answer(json!({
            "latestLedger": 1000,
            "minResourceFee": "0",
            "transactionData": b64(&transaction_data()),
            "restorePreamble": {"minResourceFee": "0", "transactionData": ""}
        }))
        .await;
        let simulation = rpc.simulate_transaction(&envelope()).await.unwrap();
        assert!(!simulation.needs_restore());
    }

    #[tokio::test]
    async fn send_transaction() {
        let hash = hash();
        let (rpc, log) = answer(json!({
            "status": "PENDING",
            "hash": hash.to_string(),
            "latestLedger": 1000,
            "latestLedgerCloseTime": "1700000000"
        }))
        .await;
        let sent = rpc.send_transaction(&envelope()).await.unwrap();
        let params = checked_request(&log, "sendTransaction").unwrap();
        assert_eq!(params, json!({"transaction": b64(&envelope())}));
        assert_eq!(
            sent,
            SendResult {
                status: SendStatus::Pending,
                hash,
                latest_ledger: 1000,
                error_result: None,
                diagnostic_events: Vec::new(),
            }
        );

        let bad_seq = TransactionResult {
            fee_charged: 100,
            result: TransactionResultResult::TxBadSeq,
            ext: TransactionResultExt::V0,
        };
        let (rpc, _) = answer(json!({
            "status": "ERROR",
            "hash": hash.to_string().to_uppercase(),
            "latestLedger": "1000",
            "errorResultXdr": b64(&bad_seq),
            "diagnosticEventsXdr": [b64(&event())]
        }))
        .await;
        let sent = rpc.send_transaction(&envelope()).await.unwrap();
        assert_eq!(sent.status, SendStatus::Error);
        assert_eq!(sent.hash, hash);
        assert_eq!(sent.error_result, Some(bad_seq));
        assert_eq!(sent.diagnostic_events, [event()]);

        for (text, status) in [
            ("DUPLICATE", SendStatus::Duplicate),
            ("TRY_AGAIN_LATER", SendStatus::TryAgainLater),
        ] {
            let (rpc, _) =
                answer(json!({"status": text, "hash": hash.to_string(), "latestLedger": 1})).await;
            assert_eq!(
                rpc.send_transaction(&envelope()).await.unwrap().status,
                status
            );
            assert_eq!(status.to_string(), text);
        }
    }

    #[tokio::test]
    async fn get_transaction() {
        let hash = hash();
        let (rpc, log) = answer(json!({
            "status": "SUCCESS",
            "txHash": hash.to_string(),
            "latestLedger": 1002,
            "latestLedgerCloseTime": "1700000010",
            "oldestLedger": 1,
            "oldestLedgerCloseTime": "1690000000",
            "ledger": 1001,
            "createdAt": "1700000005",
            "applicationOrder": 1,
            "feeBump": false,
            "envelopeXdr": b64(&envelope()),
            "resultXdr": b64(&success_result()),
            "resultMetaXdr": b64(&result_meta()),
            "diagnosticEventsXdr": [b64(&event())]
        }))
        .await;
        let info = rpc.transaction(&hash).await.unwrap();
        let params = checked_request(&log, "getTransaction").unwrap();
        assert_eq!(params, json!({"hash": hash.to_string()}));
        assert_eq!(
            info,
            TransactionInfo {
                status: TransactionStatus::Success,
                latest_ledger: 1002,
                ledger: Some(1001),
                created_at: Some(1_700_000_005),
                application_order: Some(1),
                fee_bump: false,
                envelope: Some(envelope()),
                result: Some(success_result()),
                result_meta: Some(result_meta()),
            }
        );

        let (rpc, _) = answer(json!({
            "status": "NOT_FOUND",
            "latestLedger": 1002,
            "latestLedgerCloseTime": "1700000010",
            "oldestLedger": 1,
            "oldestLedgerCloseTime": "1690000000"
        }))
        .await;
        let info = rpc.transaction(&hash).await.unwrap();
        assert_eq!(info, TransactionInfo::not_found(1002));
        assert!(!info.status.is_final());

        let (rpc, _) =
            answer(json!({"status": "FAILED", "latestLedger": 3, "feeBump": true, "ledger": "2"}))
                .await;
        let info = rpc.transaction(&hash).await.unwrap();
        assert_eq!(info.status, TransactionStatus::Failed);
        assert!(info.status.is_final() && info.fee_bump);
        assert_eq!(info.ledger, Some(2));
    }

    #[tokio::test]
    async fn get_ledger_entries() {
        let key = account_key(&payer().address());
        let (rpc, log) = answer(json!({
            "entries": [{
                "key": b64(&key),
                "xdr": b64(&account_entry(42)),
                "lastModifiedLedgerSeq": 900,
                "liveUntilLedgerSeq": "2000"
            }],
            "latestLedger": 1000
        }))
        .await;
        let other = account_key(&Keypair::from_seed([8; 32]).address());
        let entries = rpc
            .ledger_entries(&[key.clone(), other.clone()])
            .await
            .unwrap();
        let params = checked_request(&log, "getLedgerEntries").unwrap();
        assert_eq!(params, json!({"keys": [b64(&key), b64(&other)]}));
        assert_eq!(
            entries,
            LedgerEntries {
                entries: vec![LedgerEntryResult {
                    key,
                    data: account_entry(42),
                    last_modified_ledger: 900,
                    live_until_ledger: Some(2000),
                }],
                latest_ledger: 1000,
            }
        );

        let (rpc, _) = answer(json!({"entries": null, "latestLedger": 1000})).await;
        assert!(
            rpc.ledger_entries(&[other])
                .await
                .unwrap()
                .entries
                .is_empty()
        );
    }

    #[tokio::test]
    async fn rpc_error_object() {
        let (base, _) = serve(reply(|seen: Seen| async move {
            let body = json!({"jsonrpc": "2.0", "id": seen.id(), "error": {"code": -32602, "message": "invalid parameters", "data": {"x": 1}}});
            http(200, body.to_string())
        }))
        .await;
        let error = client(&base).latest_ledger().await.unwrap_err();
        assert_eq!(
            error,
            RpcError::Rpc {
                code: -32602,
                message: "invalid parameters".into()
            }
        );
        assert!(!error.is_unavailable());

        // A huge message is cut; an error answer with a null id (parse errors) is still an error.
        let (base, _) = serve(reply(|_: Seen| async move {
            let body = json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": format!("bad\n{}", "x".repeat(100_000))}});
            http(200, body.to_string())
        }))
        .await;
        let RpcError::Rpc { code, message } = client(&base).health().await.unwrap_err() else {
            panic!("not an RPC error")
        };
        assert_eq!(code, -32700);
        assert!(message.starts_with("bad x"), "{message}");
        assert_eq!(message.chars().count(), MAX_MESSAGE_CHARS + 1);
    }

    async fn malformed_answer(body: String) -> RpcError {
        let (base, _) = serve(reply(move |_: Seen| {
            let body = body.clone();
            async move { http(200, body) }
        }))
        .await;
        client(&base).latest_ledger().await.unwrap_err()
    }

    #[tokio::test]
    async fn garbage_and_missing_result_are_malformed() {
        for body in [
            "not json".to_owned(),
            "[]".to_owned(),
            String::new(),
            r#"{"jsonrpc":"2.0","id":1}"#.to_owned(),
            r#"{"jsonrpc":"2.0","id":1,"result":null}"#.to_owned(),
            r#"{"jsonrpc":"2.0","id":2,"result":{"protocolVersion":23,"sequence":5}}"#.to_owned(),
            r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":23}}"#.to_owned(),
            r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":23,"sequence":"five"}}"#
                .to_owned(),
            r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":23,"sequence":-1}}"#.to_owned(),
            r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":23,"sequence":4294967296}}"#
                .to_owned(),
            r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":23,"sequence":1.5}}"#.to_owned(),
        ] {
            let error = malformed_answer(body.clone()).await;
            assert!(matches!(error, RpcError::Malformed(_)), "{body}: {error:?}");
            assert!(!error.is_unavailable());
        }
        let ok = r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":23,"sequence":"5"}}"#;
        let (base, _) = serve(reply(move |_: Seen| async move { http(200, ok.into()) })).await;
        assert_eq!(client(&base).latest_ledger().await.unwrap().sequence, 5);
    }

    #[tokio::test]
    async fn invalid_xdr_is_malformed() {
        let not_base64 = "!!!not base64!!!";
        let wrong_type = b64(&success_result());
        let truncated = {
            let full = b64(&transaction_data());
            full[..full.len() - 8].to_owned()
        };
        for bad in [not_base64.to_owned(), wrong_type, truncated] {
            let cases = [
                json!({"latestLedger": 1, "transactionData": bad}),
                json!({"latestLedger": 1, "results": [{"auth": [bad], "xdr": ""}]}),
                json!({"latestLedger": 1, "results": [{"auth": [], "xdr": bad}]}),
                json!({"latestLedger": 1, "events": [bad]}),
                json!({"latestLedger": 1, "restorePreamble": {"minResourceFee": "1", "transactionData": bad}}),
            ];
            for case in cases {
                let (rpc, _) = answer(case.clone()).await;
                let error = rpc.simulate_transaction(&envelope()).await.unwrap_err();
                assert!(matches!(error, RpcError::Malformed(_)), "{case}: {error:?}");
            }
            let (rpc, _) =
                answer(json!({"status": "SUCCESS", "latestLedger": 1, "resultMetaXdr": bad})).await;
            assert!(matches!(
                rpc.transaction(&hash()).await,
                Err(RpcError::Malformed(_))
            ));
            let (rpc, _) = answer(json!({"entries": [{"key": b64(&account_key(&payer().address())), "xdr": bad, "lastModifiedLedgerSeq": 1}], "latestLedger": 1})).await;
            assert!(matches!(
                rpc.ledger_entries(&[]).await,
                Err(RpcError::Malformed(_))
            ));
        }
        // The error names the field, never echoes the data.
        let (rpc, _) =
            answer(json!({"status": "SUCCESS", "latestLedger": 1, "envelopeXdr": "c2VjcmV0"}))
                .await;
        let message = rpc.transaction(&hash()).await.unwrap_err().to_string();
        assert!(
            message.contains("envelopeXdr") && !message.contains("c2VjcmV0"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn unknown_statuses_are_malformed() {
        for status in ["pending", "QUEUED", ""] {
            let (rpc, _) =
                answer(json!({"status": status, "hash": hash().to_string(), "latestLedger": 1}))
                    .await;
            let error = rpc.send_transaction(&envelope()).await.unwrap_err();
            assert!(
                matches!(error, RpcError::Malformed(_)),
                "{status}: {error:?}"
            );
        }
        for status in ["success", "PENDING", ""] {
            let (rpc, _) = answer(json!({"status": status, "latestLedger": 1})).await;
            let error = rpc.transaction(&hash()).await.unwrap_err();
            assert!(
                matches!(error, RpcError::Malformed(_)),
                "{status}: {error:?}"
            );
        }
        let (rpc, _) =
            answer(json!({"status": "PENDING", "hash": "abcd", "latestLedger": 1})).await;
        assert!(matches!(
            rpc.send_transaction(&envelope()).await,
            Err(RpcError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn http_statuses() {
        for (status, unavailable) in [
            (503, true),
            (500, true),
            (429, true),
            (404, false),
            (400, false),
        ] {
            let (base, _) = serve(reply(move |_: Seen| async move {
                http(status, r#"{"jsonrpc":"2.0","id":1,"result":{}}"#.into())
            }))
            .await;
            let error = client(&base).health().await.unwrap_err();
            assert_eq!(error, RpcError::Status(status));
            assert_eq!(error.is_unavailable(), unavailable, "{status}");
        }
    }

    #[tokio::test]
    async fn oversized_answer_is_malformed() {
        let (base, _) = serve(reply(|_: Seen| async move {
            http(200, " ".repeat(MAX_RESPONSE_BYTES + 1))
        }))
        .await;
        let error = client(&base).health().await.unwrap_err();
        assert!(matches!(error, RpcError::Malformed(_)), "{error:?}");
    }

    #[tokio::test]
    async fn closed_port_is_unreachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let error = client(&format!("http://{address}"))
            .latest_ledger()
            .await
            .unwrap_err();
        assert!(matches!(error, RpcError::Unreachable(_)), "{error:?}");
        assert!(error.is_unavailable());
    }

    #[tokio::test]
    async fn slow_server_times_out() {
        let (base, _) = serve(reply(|seen: Seen| async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            success(&seen, json!({"protocolVersion": 23, "sequence": 1}))
        }))
        .await;
        let rpc = JsonRpcClient::builder(&base)
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let started = Instant::now();
        let error = rpc.latest_ledger().await.unwrap_err();
        assert_eq!(error, RpcError::Timeout);
        assert!(error.is_unavailable());
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    /// A double answering `getTransaction` with NOT_FOUND `not_found` times, then SUCCESS.
    fn eventually_final(not_found: usize) -> Reply {
        let calls = Arc::new(Mutex::new(0_usize));
        reply(move |seen: Seen| {
            let n = {
                let mut calls = calls.lock().unwrap();
                *calls += 1;
                *calls
            };
            async move {
                if n <= not_found {
                    success(
                        &seen,
                        json!({"status": "NOT_FOUND", "latestLedger": 1000 + n}),
                    )
                } else {
                    success(
                        &seen,
                        json!({"status": "SUCCESS", "latestLedger": 1000 + n, "ledger": 1000 + n, "resultXdr": b64(&success_result())}),
                    )
                }
            }
        })
    }

    #[tokio::test]
    async fn wait_for_transaction_reaches_success() {
        let (base, log) = serve(eventually_final(2)).await;
        let rpc: Arc<dyn SorobanRpc> = Arc::new(client(&base));
        let started = Instant::now();
        let info = wait_for_transaction(&rpc, &hash(), Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(info.status, TransactionStatus::Success);
        assert_eq!(info.result, Some(success_result()));
        assert_eq!(log.count(), 3);
        for seen in log.all() {
            assert_eq!(seen.method(), "getTransaction");
            assert_eq!(seen.body["params"], json!({"hash": hash().to_string()}));
        }
        // Pauses of 200 ms and 300 ms.
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(500) && elapsed < Duration::from_secs(3),
            "{elapsed:?}"
        );
    }

    #[tokio::test]
    async fn wait_for_transaction_times_out() {
        let (base, log) = serve(eventually_final(usize::MAX)).await;
        let rpc = client(&base);
        let started = Instant::now();
        let error = wait_for_transaction(&rpc, &hash(), Duration::from_millis(800))
            .await
            .unwrap_err();
        assert_eq!(error, RpcError::NotFinal(hash()));
        assert!(error.is_unavailable());
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(800) && elapsed < Duration::from_secs(2),
            "{elapsed:?}"
        );
        // Polls at about 0, 200, 500 ms (and maybe one at the deadline).
        assert!((2..=4).contains(&log.count()), "{}", log.count());
    }

    #[tokio::test]
    async fn wait_for_transaction_stops_on_a_malformed_answer() {
        let (rpc, log) = answer(json!({"status": "WHAT", "latestLedger": 1})).await;
        let error = wait_for_transaction(&rpc, &hash(), Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(matches!(error, RpcError::Malformed(_)), "{error:?}");
        assert_eq!(log.count(), 1);
    }

    #[tokio::test]
    async fn wait_for_transaction_reports_an_unreachable_server() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let rpc = client(&format!("http://{address}"));
        let error = wait_for_transaction(&rpc, &hash(), Duration::from_millis(500))
            .await
            .unwrap_err();
        assert!(matches!(error, RpcError::Unreachable(_)), "{error:?}");
    }

    #[tokio::test]
    async fn account_sequence_of_present_and_missing_accounts() {
        let key = account_key(&payer().address());
        let (rpc, log) = answer(json!({
            "entries": [{"key": b64(&key), "xdr": b64(&account_entry(184_467_440_737)), "lastModifiedLedgerSeq": 900}],
            "latestLedger": 1000
        }))
        .await;
        assert_eq!(
            account_sequence(&rpc, &payer().address()).await.unwrap(),
            184_467_440_737
        );
        assert_eq!(
            checked_request(&log, "getLedgerEntries"),
            Some(json!({"keys": [b64(&key)]}))
        );

        let (rpc, _) = answer(json!({"entries": [], "latestLedger": 1000})).await;
        let error = account_sequence(&rpc, &payer().address())
            .await
            .unwrap_err();
        assert_eq!(error, RpcError::AccountNotFound(payer().address()));
        assert!(!error.is_unavailable());

        let usdc = Network::testnet().usdc().unwrap();
        assert_eq!(
            account_sequence(&rpc, &usdc).await,
            Err(RpcError::AccountNotFound(usdc))
        );

        // The right key answered with another kind of entry.
        let data = LedgerEntryData::ContractData(ContractDataEntry {
            ext: ExtensionPoint::V0,
            contract: usdc.to_sc_address(),
            key: ScVal::LedgerKeyContractInstance,
            durability: ContractDataDurability::Persistent,
            val: ScVal::Void,
        });
        let (rpc, _) = answer(json!({
            "entries": [{"key": b64(&key), "xdr": b64(&data), "lastModifiedLedgerSeq": 900}],
            "latestLedger": 1000
        }))
        .await;
        assert!(matches!(
            account_sequence(&rpc, &payer().address()).await,
            Err(RpcError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn contract_data_present_and_missing() {
        let usdc = Network::testnet().usdc().unwrap();
        let key = LedgerKey::ContractData(LedgerKeyContractData {
            contract: usdc.to_sc_address(),
            key: ScVal::LedgerKeyContractInstance,
            durability: ContractDataDurability::Persistent,
        });
        let data = LedgerEntryData::ContractData(ContractDataEntry {
            ext: ExtensionPoint::V0,
            contract: usdc.to_sc_address(),
            key: ScVal::LedgerKeyContractInstance,
            durability: ContractDataDurability::Persistent,
            val: ScVal::U32(1),
        });
        let (rpc, log) = answer(json!({
            "entries": [{"key": b64(&key), "xdr": b64(&data), "lastModifiedLedgerSeq": 900, "liveUntilLedgerSeq": 5000}],
            "latestLedger": 1000
        }))
        .await;
        let entry = contract_data(
            &rpc,
            &usdc,
            ScVal::LedgerKeyContractInstance,
            ContractDataDurability::Persistent,
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!((entry.data, entry.live_until_ledger), (data, Some(5000)));
        assert_eq!(
            checked_request(&log, "getLedgerEntries"),
            Some(json!({"keys": [b64(&key)]}))
        );

        let (rpc, _) = answer(json!({"entries": [], "latestLedger": 1000})).await;
        let missing = contract_data(
            &rpc,
            &usdc,
            ScVal::LedgerKeyContractInstance,
            ContractDataDurability::Temporary,
        )
        .await
        .unwrap();
        assert_eq!(missing, None);
    }

    #[tokio::test]
    async fn https_with_an_extra_root_certificate() {
        let address = serve_tls(
            r#"{"jsonrpc":"2.0","id":1,"result":{"id":"ab","protocolVersion":23,"sequence":77}}"#,
        );
        let rpc = JsonRpcClient::builder(format!("https://{address}"))
            .root_certificate_pem(TEST_CERT_PEM.as_bytes())
            .build()
            .unwrap();
        assert_eq!(rpc.latest_ledger().await.unwrap().sequence, 77);

        // Without the extra root, the handshake fails before anything is sent.
        let error = client(&format!("https://{address}"))
            .latest_ledger()
            .await
            .unwrap_err();
        assert!(matches!(error, RpcError::Unreachable(_)), "{error:?}");
    }

    #[test]
    fn builder_validation_and_debug() {
        use RpcBuildError::*;
        for url in [
            "",
            "soroban-testnet.stellar.org",
            "ftp://example.com",
            "https://user:secret@example.com",
            "https://example.com/#secret",
        ] {
            let error = JsonRpcClient::builder(url).build().unwrap_err();
            assert!(matches!(error, InvalidUrl(_)), "{url}: {error:?}");
            assert!(!error.to_string().contains("secret"));
        }
        let ok = |b: JsonRpcClientBuilder| b.build().map(|_| ());
        assert!(ok(JsonRpcClient::builder("http://127.0.0.1:8000")).is_ok());
        assert!(
            ok(JsonRpcClient::builder(
                "https://rpc.example/v2/KEY?apikey=KEY"
            ))
            .is_ok()
        );
        assert!(matches!(
            ok(JsonRpcClient::builder("https://rpc.example").timeout(Duration::ZERO)),
            Err(InvalidTimeout(_))
        ));
        assert!(matches!(
            ok(JsonRpcClient::builder("https://rpc.example").root_certificate_pem(b"nope")),
            Err(InvalidCertificate(_))
        ));

        let builder = JsonRpcClient::builder("https://rpc.example:8443/v2/SECRETKEY?apikey=SECRET");
        let debug = format!("{builder:?}");
        assert!(
            !debug.contains("SECRET") && debug.contains("https://rpc.example:8443"),
            "{debug}"
        );
        let client = builder.build().unwrap();
        let debug = format!("{client:?}");
        assert!(
            !debug.contains("SECRET") && debug.contains("https://rpc.example:8443"),
            "{debug}"
        );
    }

    #[test]
    fn transaction_hash_text() {
        let text = "c73c5eac58a441d4eb733c35253ae85f783e018f7be5ef974258fed067aabb36";
        let hash: TransactionHash = text.parse().unwrap();
        assert_eq!(hash.to_string(), text);
        assert_eq!(hash.as_bytes()[0], 0xc7);
        assert_eq!(text.to_uppercase().parse::<TransactionHash>(), Ok(hash));
        assert_eq!(format!("{hash:?}"), format!("TransactionHash({text})"));
        for bad in [
            "",
            "c7",
            &text[1..],
            &format!("{text}0"),
            &text.replace('c', "g"),
            &format!("é{}", &text[2..]),
        ] {
            assert_eq!(
                bad.parse::<TransactionHash>(),
                Err(TransactionHashError),
                "{bad}"
            );
        }
    }

    /// `TransactionHash::of` against an independent computation:
    /// `sha256(network id ‖ ENVELOPE_TYPE_TX ‖ transaction)`.
    #[test]
    fn transaction_hash_of_an_envelope() {
        let network = Network::testnet().id();
        let envelope = envelope();
        let TransactionEnvelope::Tx(TransactionV1Envelope { tx, .. }) = &envelope else {
            unreachable!()
        };
        let mut preimage = network.as_bytes().to_vec();
        preimage.extend_from_slice(&2_u32.to_be_bytes());
        preimage.extend(tx.to_xdr(Limits::none()).unwrap());
        let expected: [u8; 32] = Sha256::digest(&preimage).into();
        assert_eq!(
            TransactionHash::of(&envelope, &network).unwrap().0,
            expected
        );
        assert_ne!(
            TransactionHash::of(&envelope, &Network::pubnet().id())
                .unwrap()
                .0,
            expected
        );
        assert!(matches!(tx.ext, TransactionExt::V1(_)));
    }

    #[test]
    fn unavailability() {
        assert!(RpcError::Unreachable("refused".into()).is_unavailable());
        assert!(RpcError::Timeout.is_unavailable());
        assert!(RpcError::Interrupted("reset".into()).is_unavailable());
        assert!(RpcError::NotFinal(TransactionHash([0; 32])).is_unavailable());
        assert!(RpcError::Status(502).is_unavailable());
        assert!(!RpcError::Status(401).is_unavailable());
        assert!(!RpcError::Malformed("x".into()).is_unavailable());
        assert!(
            !RpcError::Rpc {
                code: -32603,
                message: "internal".into()
            }
            .is_unavailable()
        );
        assert!(!RpcError::AccountNotFound(payer().address()).is_unavailable());
    }

    #[test]
    fn shorten_messages() {
        assert_eq!(shorten("a\tb\u{7}c"), "a b c");
        assert_eq!(
            shorten(&"é".repeat(MAX_MESSAGE_CHARS)),
            "é".repeat(MAX_MESSAGE_CHARS)
        );
        assert_eq!(
            shorten(&"é".repeat(MAX_MESSAGE_CHARS + 1)),
            format!("{}…", "é".repeat(MAX_MESSAGE_CHARS))
        );
    }
}
