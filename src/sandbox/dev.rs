//! A development stack on the sandbox: what a paywalled service needs to run offline, in one
//! process. [`DevStack::start`] starts a [`Sandbox`], serves it as Soroban RPC on loopback,
//! and serves our x402 facilitator ([`LocalFacilitator`], settling on the sandbox) over HTTP;
//! [`DemoWallets::fund`] funds wallets to pay with, the first with a payment channel open to
//! the service.
//!
//! The sandbox hands out the same sequence of keys on every run: a service that funds its keys
//! in the same order each time prints the same demo wallets each time.

use std::net::SocketAddr;
use std::sync::Arc;

use super::{
    ChannelParams, RpcServer, Sandbox, SandboxConfig, SandboxError, ServeConfig, ServeError,
};
use crate::mpp::{ChannelError, StellarChannel};
use crate::stellar::{Address, Keypair};
use crate::x402::{LocalFacilitator, LocalFacilitatorError, facilitator_router};

/// The deposit of the demo payment channel [`DemoWallets::fund`] opens: 10 USDC.
pub const DEMO_CHANNEL_DEPOSIT: i128 = 100_000_000;

/// The refund waiting period of the demo payment channel, in ledgers.
pub const DEMO_REFUND_WAITING_PERIOD: u32 = 1_000;

/// How a [`DevStack`] runs.
///
/// ```
/// use std::net::SocketAddr;
/// use std::time::Duration;
/// use tower_paywall::sandbox::{DevConfig, SandboxConfig, ServeConfig};
///
/// // The RPC on fixed ports a README can name, the facilitator beside it, 1 s ledgers.
/// let config = DevConfig::default()
///     .sandbox(SandboxConfig::default().ledger_period(Duration::from_secs(1)))
///     .rpc(ServeConfig::default().http(Some(SocketAddr::from(([127, 0, 0, 1], 8403)))))
///     .facilitator_listen(SocketAddr::from(([127, 0, 0, 1], 8404)));
/// # let _ = config;
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct DevConfig {
    sandbox: SandboxConfig,
    rpc: ServeConfig,
    facilitator_listen: SocketAddr,
}

impl Default for DevConfig {
    fn default() -> Self {
        DevConfig {
            sandbox: SandboxConfig::default(),
            rpc: ServeConfig::default(),
            facilitator_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

impl DevConfig {
    /// The ledger (default [`SandboxConfig::default`]).
    pub fn sandbox(mut self, config: SandboxConfig) -> Self {
        self.sandbox = config;
        self
    }

    /// Where its RPC is served (default [`ServeConfig::default`]: HTTP and HTTPS on free
    /// loopback ports).
    pub fn rpc(mut self, config: ServeConfig) -> Self {
        self.rpc = config;
        self
    }

    /// Where the facilitator listens (default `127.0.0.1:0`, a free port).
    pub fn facilitator_listen(mut self, address: SocketAddr) -> Self {
        self.facilitator_listen = address;
        self
    }
}

/// Why a [`DevStack`] did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevStackError {
    /// The ledger did not start, or could not fund the facilitator.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// Its RPC could not be served.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// The facilitator refused its settings.
    #[error(transparent)]
    Facilitator(#[from] LocalFacilitatorError),
    /// The facilitator's listener could not bind.
    #[error("cannot serve the facilitator on {address}: {source}")]
    FacilitatorListen {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A sandbox ledger, its RPC served on loopback, and our facilitator settling on it, served
/// over HTTP (until the runtime shuts down). Dropping [`rpc`](Self::rpc) stops the RPC.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tower_paywall::sandbox::{DEMO_CHANNEL_DEPOSIT, DemoWallets, DevConfig, DevStack};
///
/// let stack = DevStack::start(DevConfig::default()).await?;
/// assert!(stack.facilitator_url.starts_with("http://127.0.0.1:"));
/// let pay_to = stack.sandbox.funded_keypair().await?;
/// let demo = DemoWallets::fund(&stack.sandbox, 2, pay_to.address(), None).await?;
/// assert_eq!(demo.wallets.len(), 2);
/// let usdc = stack.sandbox.usdc();
/// assert_eq!(stack.sandbox.balance(&usdc, &demo.channel).await?, DEMO_CHANNEL_DEPOSIT);
/// # Ok(()) }
/// ```
#[non_exhaustive]
pub struct DevStack {
    /// The ledger.
    pub sandbox: Sandbox,
    /// Its RPC server.
    pub rpc: RpcServer,
    /// The facilitator (its fee payer funded on the ledger).
    pub facilitator: LocalFacilitator,
    /// Where the facilitator is served: `http://…`.
    pub facilitator_url: String,
}

impl std::fmt::Debug for DevStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevStack")
            .field("sandbox", &self.sandbox)
            .field("rpc", &self.rpc.http_url())
            .field("facilitator_url", &self.facilitator_url)
            .finish_non_exhaustive()
    }
}

impl DevStack {
    /// Starts the ledger, serves its RPC, funds the facilitator's fee payer (the next key of
    /// the sandbox's sequence) and serves the facilitator.
    ///
    /// # Errors
    ///
    /// [`DevStackError`] if any part does not start.
    pub async fn start(config: DevConfig) -> Result<DevStack, DevStackError> {
        let sandbox = Sandbox::start(config.sandbox)?;
        let rpc = sandbox.serve(config.rpc).await?;
        let fee_payer = sandbox.funded_keypair().await?;
        let facilitator =
            LocalFacilitator::builder(sandbox.clone(), sandbox.network().clone(), fee_payer)
                .build()?;
        let address = config.facilitator_listen;
        let listen_error = |source| DevStackError::FacilitatorListen { address, source };
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(listen_error)?;
        let facilitator_url = format!("http://{}", listener.local_addr().map_err(listen_error)?);
        let app = facilitator_router(Arc::new(facilitator.clone()), None);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(DevStack {
            sandbox,
            rpc,
            facilitator,
            facilitator_url,
        })
    }
}

/// Why [`DemoWallets::fund`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoWalletsError {
    /// The sandbox could not fund a wallet or open the channel.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The channel scheme refused to serve the channel.
    #[error(transparent)]
    Channel(#[from] ChannelError),
}

/// Funded demo wallets, the first with a payment channel open to a payee.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DemoWallets {
    /// The wallets, each funded as [`Sandbox::fund`] funds (XLM and USDC).
    pub wallets: Vec<Keypair>,
    /// The first wallet's one-way payment channel to the payee, in USDC: a
    /// [`DEMO_CHANNEL_DEPOSIT`], a [`DEMO_REFUND_WAITING_PERIOD`], commitments signed by the
    /// wallet's own key.
    pub channel: Address,
}

impl DemoWallets {
    /// Funds `count` wallets (at least one; the next keys of the sandbox's sequence), opens
    /// the first one's channel to `pay_to`, and serves it on `scheme` when there is one (see
    /// [`StellarChannel::add_channel`]).
    ///
    /// # Errors
    ///
    /// The sandbox's, or the scheme's when it refuses the channel.
    pub async fn fund(
        sandbox: &Sandbox,
        count: usize,
        pay_to: Address,
        scheme: Option<&Arc<StellarChannel>>,
    ) -> Result<DemoWallets, DemoWalletsError> {
        let mut wallets = Vec::with_capacity(count.max(1));
        for _ in 0..count.max(1) {
            wallets.push(sandbox.funded_keypair().await?);
        }
        let first = &wallets[0];
        let channel = sandbox
            .deploy_channel(ChannelParams {
                token: sandbox.usdc(),
                from: first,
                commitment_key: first.public_key(),
                to: pay_to,
                amount: DEMO_CHANNEL_DEPOSIT,
                refund_waiting_period: DEMO_REFUND_WAITING_PERIOD,
            })
            .await?;
        if let Some(scheme) = scheme {
            scheme.add_channel(channel).await?;
        }
        Ok(DemoWallets { wallets, channel })
    }
}
