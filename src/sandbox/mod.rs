//! An offline Stellar ledger on the real Soroban host (feature `sandbox`).
//!
//! [`Sandbox`] is a small, single-node Stellar network in the process: the real Soroban host
//! (`soroban-env-host`) runs the real Stellar Asset Contracts with real account authorization
//! (ed25519 signatures, nonces, expiration ledgers), and the sandbox adds what stellar-core does
//! around it: sequence numbers, fees, time bounds, envelope signatures, ledger closes. It
//! implements [`SorobanRpc`], so it goes wherever a Soroban RPC server is expected, and it needs
//! no network and no faucet.
//!
//! - **Network**: testnet by default (same passphrase, so real clients sign for
//!   `stellar:testnet`), with the USDC and XLM asset contracts deployed at genesis under testnet's
//!   contract ids ([`Network::usdc`], [`Network::native_asset_contract`]). USDC's issuer is
//!   testnet's (`GBBD47IF…FLA5`), as a plain account: the sandbox mints with authorization
//!   recorded, not signed.
//! - **Accounts**: [`Sandbox::fund`] is friendbot: 10 000 XLM, an authorized USDC trustline and
//!   1 000 USDC, at once. [`Sandbox::funded_keypair`] makes and funds a new key.
//! - **Simulation** (`simulateTransaction`): the transaction's `invokeHostFunction` runs in the
//!   host's recording mode against the next ledger, recording authorization when the operation has
//!   none (clients simulate from the all-zeros `NULL_ACCOUNT`) and enforcing it when it carries
//!   signed entries; footprint, resources and a resource fee come back in `transactionData`.
//! - **Submission** (`sendTransaction`): the envelope is checked as stellar-core checks it
//!   (sequence, fee, time bounds, signatures against the account's thresholds, fee bumps) and
//!   refused with the transaction result code (`txBAD_SEQ`, `txBAD_AUTH`, `txTOO_LATE`, …), or
//!   queued (`PENDING`). One queued transaction per source account, as on the network.
//! - **Ledger close**: queued transactions are applied in order: fee charged, sequence bumped,
//!   `invokeHostFunction` run in the host's enforcing mode (what stellar-core runs) with the
//!   declared footprint and authorization, unused resource fee refunded. `getTransaction` then
//!   answers `SUCCESS` or `FAILED` with the envelope, result and meta. Ledgers close every
//!   [`SandboxConfig::ledger_period`], or only on [`Sandbox::close_ledger`] with
//!   [`SandboxConfig::auto_close`]`(false)`.
//! - **Classic operations**: `createAccount` and native `payment`; any other applies as
//!   `opNOT_SUPPORTED`.
//! - **Contracts**: [`Sandbox::deploy_wasm`] uploads and creates a Wasm contract, its
//!   deployer's authorization signed and enforced; [`Sandbox::deploy_channel`] opens a one-way
//!   payment channel (the ABI and signed commitment of the public `one-way-channel` contract,
//!   written here in WebAssembly text). [`Sandbox::invoke`] calls any contract function as an
//!   account through a real signed transaction, [`Sandbox::simulate_call`] only simulates.
//!   Contract code is parsed outside the invocation's budget, as stellar-core's module cache
//!   does.
//! - **Events** (`getEvents`): the contract events of the applied transactions (their operations'
//!   events, and the fee charged and refunded), in ledger order, filtered and paginated as Soroban
//!   RPC does it, with its ids, cursors, limits and errors. Transactions and events are kept for
//!   [`SandboxConfig::retention_window`] ledgers (a day of 5 s ledgers by default); a
//!   `getEvents` starting before the oldest ledger kept is refused, as RPC refuses it.
//! - **State**: temporary entries (nonces) expire at their live-until ledger; persistent entries
//!   are never archived. Ledger close times follow the wall clock.
//! - **Development stack**: [`DevStack`] runs a sandbox with its RPC and our x402 facilitator
//!   served on loopback; [`DemoWallets`] funds wallets to pay with and opens a demo payment
//!   channel. A paywalled service runs on it offline (`stoka dev` and `paywall dev` do).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use tower_paywall::sandbox::{FRIENDBOT_USDC, Sandbox, SandboxConfig};
//! use tower_paywall::stellar::xdr::{OperationBody, TransactionEnvelope};
//! use tower_paywall::stellar::{
//!     CredentialsArm, NULL_ACCOUNT, SorobanRpc, TransferRequest, address_credentials,
//!     build_transfer,
//! };
//!
//! // Ledgers close when asked (the default closes one every 5 s).
//! let sandbox = Sandbox::start(SandboxConfig::default().auto_close(false))?;
//! let payer = sandbox.funded_keypair().await?;
//! let pay_to = sandbox.funded_keypair().await?.address();
//! assert_eq!(sandbox.balance(&sandbox.usdc(), &payer.address()).await?, FRIENDBOT_USDC);
//!
//! // What an x402 client does first: simulate the transfer from the all-zeros account, with no
//! // authorization, to learn the authorization entry to sign and the resources.
//! let mut transfer = build_transfer(&TransferRequest {
//!     source: NULL_ACCOUNT,
//!     sequence: 1,
//!     fee: 100,
//!     contract: sandbox.usdc(),
//!     from: payer.address(),
//!     to: pay_to,
//!     amount: 10_000,
//!     nonce: 0,
//!     signature_expiration_ledger: 0,
//!     max_time: 0,
//!     credentials: CredentialsArm::Address,
//! })?;
//! if let TransactionEnvelope::Tx(v1) = &mut transfer {
//!     for operation in v1.tx.operations.iter_mut() {
//!         if let OperationBody::InvokeHostFunction(invoke) = &mut operation.body {
//!             invoke.auth = Default::default();
//!         }
//!     }
//! }
//! let simulation = sandbox.simulate_transaction(&transfer).await?;
//! assert!(simulation.is_success(), "{:?}", simulation.error);
//! let entry = &simulation.result().expect("one result").auth[0];
//! assert_eq!(address_credentials(entry)?.address, payer.address().to_sc_address());
//! assert!(simulation.min_resource_fee < 50_000);
//! # Ok(()) }
//! ```

mod account;
mod actor;
mod apply;
mod channel;
mod classic;
mod deploy;
mod dev;
mod diagnostics;
mod events;
mod fees;
mod friendbot;
mod genesis;
mod invocation;
mod invoke;
mod ledger;
mod server;
mod simulate;
mod snapshot;
mod submit;
mod tls;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use stellar_xdr::{LedgerKey, TransactionEnvelope};
use tokio::sync::oneshot;

use self::actor::{Command, Reply};
use crate::BoxFuture;
use crate::stellar::rpc::{
    Events, EventsRequest, Health, LatestLedger, LedgerEntries, NetworkInfo, RpcError, SendResult,
    Simulation, SorobanRpc, TransactionHash, TransactionInfo,
};
use crate::stellar::{Address, Keypair, Network};

pub use channel::{ChannelError, ChannelParams, channel_wasm};
pub use dev::{
    DEMO_CHANNEL_DEPOSIT, DEMO_REFUND_WAITING_PERIOD, DemoWallets, DemoWalletsError, DevConfig,
    DevStack, DevStackError,
};
pub use invocation::{ContractCall, Invoked};
pub use server::{RpcServer, ServeConfig, ServeError, rpc_router};
pub use tls::TlsError;

/// The lumens [`Sandbox::fund`] gives, in stroops (10 000 XLM).
pub const FRIENDBOT_XLM: i64 = 100_000_000_000;

/// The USDC [`Sandbox::fund`] mints, in atomic units (1 000 USDC).
pub const FRIENDBOT_USDC: i128 = 10_000_000_000;

/// Most keys one `getLedgerEntries` call may ask for (Soroban RPC's limit).
pub const MAX_LEDGER_ENTRY_KEYS: usize = 200;

/// How many ledgers of transactions and events the sandbox keeps unless told otherwise
/// ([`SandboxConfig::retention_window`]): one day of 5 s ledgers, Soroban RPC's former default.
pub const DEFAULT_RETENTION_WINDOW: u32 = 17_280;

/// Shortest ledger period [`Sandbox::start`] accepts.
const MIN_LEDGER_PERIOD: Duration = Duration::from_millis(10);
/// Longest ledger period [`Sandbox::start`] accepts.
const MAX_LEDGER_PERIOD: Duration = Duration::from_secs(3600);

/// Why the sandbox could not do something.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// A [`SandboxConfig`] setting is out of range.
    #[error("invalid sandbox configuration: {0}")]
    InvalidConfig(&'static str),
    /// The sandbox could not start: its thread, or genesis, failed.
    #[error("the sandbox could not start: {0}")]
    Start(String),
    /// The sandbox thread is gone (it stopped after an internal error).
    #[error("the sandbox has stopped")]
    Stopped,
    /// Only accounts (`G…`, `M…`) can be funded.
    #[error("{0} is not an account")]
    NotAnAccount(Address),
    /// Funding is impossible: a balance would overflow, or the root account ran dry.
    #[error("cannot fund: {0}")]
    Funding(&'static str),
    /// A contract call made by the sandbox failed; the host's message is attached.
    #[error("host invocation failed: {0}")]
    Host(String),
    /// A transaction [`Sandbox::invoke`] sent was refused or failed in its ledger, or its
    /// source has no account; the reason is attached.
    #[error("transaction failed: {0}")]
    Transaction(String),
}

/// How a [`Sandbox`] runs.
///
/// ```
/// use std::time::Duration;
/// use tower_paywall::sandbox::SandboxConfig;
/// use tower_paywall::stellar::Network;
///
/// // The defaults: testnet, a ledger every 5 s, base fee 100 stroops, a day of history.
/// let config = SandboxConfig::default();
/// // Tests close ledgers themselves.
/// let manual = SandboxConfig::default().auto_close(false);
/// // A faster chain on a private network.
/// let fast = SandboxConfig::default()
///     .network(Network::custom("stellar:local", "Standalone Network ; February 2017")?)
///     .ledger_period(Duration::from_secs(1))
///     .base_fee(200)
///     .retention_window(120_960);
/// # let _ = (config, manual, fast);
/// # Ok::<(), tower_paywall::stellar::NetworkError>(())
/// ```
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    network: Network,
    ledger_period: Duration,
    auto_close: bool,
    base_fee: u32,
    retention_window: u32,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            network: Network::testnet(),
            ledger_period: Duration::from_secs(5),
            auto_close: true,
            base_fee: 100,
            retention_window: DEFAULT_RETENTION_WINDOW,
        }
    }
}

impl SandboxConfig {
    /// The network whose passphrase signs everything; default [`Network::testnet`].
    #[must_use]
    pub fn network(mut self, network: Network) -> Self {
        self.network = network;
        self
    }

    /// Time between two ledger closes when closing automatically; default 5 s (10 ms to 1 h).
    #[must_use]
    pub fn ledger_period(mut self, period: Duration) -> Self {
        self.ledger_period = period;
        self
    }

    /// Whether ledgers close every [`ledger_period`](Self::ledger_period) (default) or only on
    /// [`Sandbox::close_ledger`].
    #[must_use]
    pub fn auto_close(mut self, auto_close: bool) -> Self {
        self.auto_close = auto_close;
        self
    }

    /// The inclusion fee per operation, in stroops; default 100 (at least 1).
    #[must_use]
    pub fn base_fee(mut self, base_fee: u32) -> Self {
        self.base_fee = base_fee;
        self
    }

    /// How many ledgers, the latest included, the sandbox keeps the transactions
    /// (`getTransaction`) and events (`getEvents`) of, as Soroban RPC's history retention
    /// window; default [`DEFAULT_RETENTION_WINDOW`] (at least 1). Older ones are forgotten, and
    /// `getEvents` refuses a start ledger before the oldest ledger kept.
    #[must_use]
    pub fn retention_window(mut self, ledgers: u32) -> Self {
        self.retention_window = ledgers;
        self
    }

    fn validate(&self) -> Result<(), SandboxError> {
        if !(MIN_LEDGER_PERIOD..=MAX_LEDGER_PERIOD).contains(&self.ledger_period) {
            return Err(SandboxError::InvalidConfig(
                "the ledger period must be between 10 ms and 1 h",
            ));
        }
        if self.base_fee == 0 {
            return Err(SandboxError::InvalidConfig(
                "the base fee must be at least 1 stroop",
            ));
        }
        if self.retention_window == 0 {
            return Err(SandboxError::InvalidConfig(
                "the retention window must be at least 1 ledger",
            ));
        }
        Ok(())
    }
}

/// A ledger close: [`Sandbox::close_ledger`]'s answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClosedLedger {
    /// The new latest ledger.
    pub sequence: u32,
    /// Its close time (unix seconds).
    pub close_time: u64,
    /// How many queued transactions it applied (successful or not).
    pub transactions: usize,
}

/// A handle on a running sandbox ledger: cheap to clone, usable from any thread.
///
/// The ledger itself lives on its own thread (the Soroban host is not `Send`); every method is a
/// message to it. The thread stops when the last handle is dropped. See the [module
/// docs](self) for what the ledger does.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use tower_paywall::sandbox::{FRIENDBOT_XLM, Sandbox, SandboxConfig};
/// use tower_paywall::stellar::{SorobanRpc, TransactionStatus, account_sequence};
///
/// let sandbox = Sandbox::start(SandboxConfig::default().auto_close(false))?;
/// let alice = sandbox.funded_keypair().await?;
/// assert_eq!(sandbox.balance(&sandbox.xlm(), &alice.address()).await?, i128::from(FRIENDBOT_XLM));
///
/// // It is a Soroban RPC server.
/// let rpc: Arc<dyn SorobanRpc> = Arc::new(sandbox.clone());
/// let latest = rpc.latest_ledger().await?.sequence;
/// assert_eq!(rpc.network().await?.passphrase, "Test SDF Network ; September 2015");
/// let sequence = account_sequence(&rpc, &alice.address()).await?;
/// assert_eq!(sequence, i64::from(latest) << 32);
///
/// let closed = sandbox.close_ledger().await?;
/// assert_eq!((closed.sequence, closed.transactions), (latest + 1, 0));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

struct Inner {
    commands: std::sync::mpsc::Sender<Command>,
    network: Network,
    usdc: Address,
    xlm: Address,
    root: Keypair,
    base_fee: u32,
    accounts: AtomicU64,
}

impl fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sandbox")
            .field("network", &self.inner.network.caip2())
            .field("usdc", &self.inner.usdc)
            .field("xlm", &self.inner.xlm)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Starts a sandbox: its thread, then genesis (accounts and asset contracts). Blocks until
    /// genesis is done (a few host invocations).
    ///
    /// # Errors
    ///
    /// [`SandboxError::InvalidConfig`] for an out-of-range setting; [`SandboxError::Start`] if
    /// the thread or genesis failed.
    pub fn start(config: SandboxConfig) -> Result<Sandbox, SandboxError> {
        config.validate()?;
        let started = actor::spawn(&config)?;
        Ok(Sandbox {
            inner: Arc::new(Inner {
                commands: started.commands,
                root: Keypair::from_seed(config.network.id().0),
                base_fee: config.base_fee,
                network: config.network,
                usdc: started.usdc,
                xlm: started.xlm,
                accounts: AtomicU64::new(0),
            }),
        })
    }

    /// The network the sandbox signs for. (`getNetwork` is the trait method:
    /// `SorobanRpc::network(&sandbox)`.)
    #[must_use]
    pub fn network(&self) -> &Network {
        &self.inner.network
    }

    /// USDC's Stellar Asset Contract ([`USDC_TESTNET`](crate::stellar::USDC_TESTNET) on
    /// testnet).
    #[must_use]
    pub fn usdc(&self) -> Address {
        self.inner.usdc
    }

    /// The native asset's (XLM) Stellar Asset Contract
    /// ([`XLM_TESTNET`](crate::stellar::XLM_TESTNET) on testnet).
    #[must_use]
    pub fn xlm(&self) -> Address {
        self.inner.xlm
    }

    /// The root account's key, which holds the lumens friendbot gives: `sha256(passphrase)` as
    /// seed, as on standalone networks.
    #[must_use]
    pub fn root_keypair(&self) -> Keypair {
        self.inner.root.clone()
    }

    /// Friendbot: creates the account with [`FRIENDBOT_XLM`] (or adds them to an existing
    /// account), gives it an authorized USDC trustline, and mints it [`FRIENDBOT_USDC`]. Takes
    /// effect at once, without a ledger close. A muxed address funds its account.
    ///
    /// # Errors
    ///
    /// [`SandboxError::NotAnAccount`] for a contract; [`SandboxError::Funding`] when a balance
    /// would overflow; [`SandboxError::Host`] if minting failed; [`SandboxError::Stopped`].
    pub async fn fund(&self, account: &Address) -> Result<(), SandboxError> {
        let account = *account;
        self.ask(|reply| Command::Fund(account, reply)).await?
    }

    /// A new key, funded with [`fund`](Self::fund). Keys are derived from the network and a
    /// counter, so each sandbox hands out the same sequence of keys.
    ///
    /// # Errors
    ///
    /// As [`fund`](Self::fund).
    pub async fn funded_keypair(&self) -> Result<Keypair, SandboxError> {
        let index = self.inner.accounts.fetch_add(1, Ordering::Relaxed);
        let mut seed = Sha256::new();
        seed.update(b"tower-paywall sandbox account");
        seed.update(self.inner.network.id().as_bytes());
        seed.update(index.to_be_bytes());
        let keypair = Keypair::from_seed(seed.finalize().into());
        self.fund(&keypair.address()).await?;
        Ok(keypair)
    }

    /// The balance of `holder` in the token contract `token` (its `balance` function, run on
    /// the host), e.g. `balance(&sandbox.usdc(), &account)`.
    ///
    /// # Errors
    ///
    /// [`SandboxError::Host`] if the call failed (not a token, no such contract);
    /// [`SandboxError::Stopped`].
    pub async fn balance(&self, token: &Address, holder: &Address) -> Result<i128, SandboxError> {
        let (token, holder) = (*token, *holder);
        self.ask(|reply| Command::Balance(token, holder, reply))
            .await?
    }

    /// Closes the next ledger now, applying the queued transactions (also with automatic
    /// closes on).
    ///
    /// # Errors
    ///
    /// [`SandboxError::Stopped`].
    pub async fn close_ledger(&self) -> Result<ClosedLedger, SandboxError> {
        self.ask(Command::Close).await
    }

    /// Serves this sandbox as Soroban JSON-RPC (`POST /`) over HTTP and HTTPS on loopback,
    /// with a friendbot at `GET /friendbot?addr=G…`. The HTTPS certificate is written to
    /// [`RpcServer::certificate_path`] for clients to trust (`NODE_EXTRA_CA_CERTS=…`).
    ///
    /// # Errors
    ///
    /// [`ServeError`] when a listener cannot bind or the certificate cannot be written.
    pub async fn serve(&self, config: ServeConfig) -> Result<RpcServer, ServeError> {
        let friendbot = self.clone();
        let app = rpc_router(Arc::new(self.clone())).route(
            "/friendbot",
            axum::routing::get(move |query| friendbot_fund(friendbot.clone(), query)),
        );
        RpcServer::start(app, config).await
    }

    /// Sends a command and waits for its answer.
    async fn ask<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, SandboxError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .commands
            .send(command(reply))
            .map_err(|_| SandboxError::Stopped)?;
        answer.await.map_err(|_| SandboxError::Stopped)
    }

    async fn ask_rpc<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, RpcError> {
        self.ask(command)
            .await
            .map_err(|_| RpcError::Unreachable("the sandbox has stopped".into()))
    }
}

impl SorobanRpc for Sandbox {
    fn health(&self) -> BoxFuture<'_, Result<Health, RpcError>> {
        Box::pin(self.ask_rpc(Command::Health))
    }

    fn network(&self) -> BoxFuture<'_, Result<NetworkInfo, RpcError>> {
        Box::pin(self.ask_rpc(Command::Network))
    }

    fn latest_ledger(&self) -> BoxFuture<'_, Result<LatestLedger, RpcError>> {
        Box::pin(self.ask_rpc(Command::LatestLedger))
    }

    fn simulate_transaction<'a>(
        &'a self,
        transaction: &'a TransactionEnvelope,
    ) -> BoxFuture<'a, Result<Simulation, RpcError>> {
        let envelope = Box::new(transaction.clone());
        Box::pin(self.ask_rpc(|reply| Command::Simulate(envelope, reply)))
    }

    fn send_transaction<'a>(
        &'a self,
        transaction: &'a TransactionEnvelope,
    ) -> BoxFuture<'a, Result<SendResult, RpcError>> {
        let envelope = Box::new(transaction.clone());
        Box::pin(self.ask_rpc(|reply| Command::Send(envelope, reply)))
    }

    fn transaction<'a>(
        &'a self,
        hash: &'a TransactionHash,
    ) -> BoxFuture<'a, Result<TransactionInfo, RpcError>> {
        let hash = *hash;
        Box::pin(self.ask_rpc(move |reply| Command::Transaction(hash, reply)))
    }

    fn ledger_entries<'a>(
        &'a self,
        keys: &'a [LedgerKey],
    ) -> BoxFuture<'a, Result<LedgerEntries, RpcError>> {
        if keys.len() > MAX_LEDGER_ENTRY_KEYS {
            return Box::pin(std::future::ready(Err(RpcError::Rpc {
                code: -32602,
                message: format!("at most {MAX_LEDGER_ENTRY_KEYS} keys may be asked for"),
            })));
        }
        let keys = keys.to_vec();
        Box::pin(self.ask_rpc(|reply| Command::LedgerEntries(keys, reply)))
    }

    fn events<'a>(&'a self, request: &'a EventsRequest) -> BoxFuture<'a, Result<Events, RpcError>> {
        let request = Box::new(request.clone());
        Box::pin(async move {
            self.ask_rpc(|reply| Command::Events(request, reply))
                .await?
        })
    }
}

/// `GET /friendbot?addr=G…`: funds the account.
async fn friendbot_fund(
    sandbox: Sandbox,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> (axum::http::StatusCode, axum::Json<serde_json::Value>) {
    use axum::http::StatusCode;
    let Some(account) = query
        .get("addr")
        .and_then(|addr| addr.parse::<Address>().ok())
    else {
        let error = serde_json::json!({ "error": "addr must be an account (G…)" });
        return (StatusCode::BAD_REQUEST, axum::Json(error));
    };
    match sandbox.fund(&account).await {
        Ok(()) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({ "funded": account.to_string() })),
        ),
        Err(error) => (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({ "error": error.to_string() })),
        ),
    }
}
