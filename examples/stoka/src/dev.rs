//! `stoka dev`: the whole stack offline in one process. A sandbox ledger (the real Soroban
//! host) served as Soroban RPC on loopback, our x402 facilitator in front of it, MPP `charge`
//! with sponsored fees, MPP `channel` on `pop`, the embedded store in a fresh directory, and
//! funded demo wallets, printed with the commands to try.
//!
//! The sandbox hands out the same sequence of keys on every run, so the demo wallets (and the
//! channel of the first one) are the same each time.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tower_paywall::sandbox::{
    DemoWallets, DevConfig, DevStackError, RpcServer, Sandbox, SandboxConfig, ServeConfig,
};
use tower_paywall::stellar::{Address, Keypair, SorobanRpc};
use tower_paywall::x402::Facilitator;

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::server::{Ledger, Server, ServerError, build};
use crate::storage::Storage;

/// What `stoka dev` runs with.
#[derive(Clone, Debug)]
pub struct DevOptions {
    /// Where stoka listens.
    pub listen: String,
    /// Where the ledger's plain-HTTP RPC listens (its HTTPS one takes a free port).
    pub rpc_listen: SocketAddr,
    /// Where the facilitator listens.
    pub facilitator_listen: SocketAddr,
    /// The redb file (default: a fresh one in a temporary directory).
    pub store: Option<PathBuf>,
    /// How many demo wallets to fund.
    pub wallets: usize,
    /// How often the sandbox closes a ledger.
    pub ledger_period: Duration,
    /// Where `/metrics` is served (Prometheus text), if anywhere.
    pub metrics_listen: Option<SocketAddr>,
}

impl Default for DevOptions {
    fn default() -> Self {
        DevOptions {
            listen: "127.0.0.1:8402".into(),
            rpc_listen: SocketAddr::from(([127, 0, 0, 1], 8403)),
            facilitator_listen: SocketAddr::from(([127, 0, 0, 1], 8404)),
            store: None,
            wallets: 3,
            ledger_period: Duration::from_secs(1),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 8405))),
        }
    }
}

/// A running dev stack (everything but stoka's own listener).
pub struct DevStack {
    /// The ledger.
    pub sandbox: Sandbox,
    /// Its RPC server.
    pub rpc: RpcServer,
    /// The facilitator's URL.
    pub facilitator_url: String,
    /// stoka, ready to serve.
    pub server: Server,
    /// The configuration stoka was built from.
    pub config: Config,
    /// How stoka reaches the sandbox (to build another node over the same store).
    pub ledger: Ledger,
    /// The funded demo wallets.
    pub wallets: Vec<Keypair>,
    /// The first wallet's open channel to stoka (commitments signed by that wallet's key).
    pub channel: Address,
}

impl std::fmt::Debug for DevStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevStack")
            .field("facilitator_url", &self.facilitator_url)
            .finish_non_exhaustive()
    }
}

fn sandbox_error(error: impl std::fmt::Display) -> ServerError {
    ServerError::Payment(format!("sandbox: {error}"))
}

/// Starts the ledger, the facilitator and the wallets, and builds stoka on them over the
/// embedded store.
///
/// # Errors
///
/// [`ServerError`] if any part does not start.
pub async fn start(options: &DevOptions) -> Result<DevStack, ServerError> {
    let store = match &options.store {
        Some(path) => path.clone(),
        None => {
            let dir = std::env::temp_dir().join(format!("stoka-dev-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            dir.join("stoka.redb")
        }
    };
    let storage = Arc::new(crate::storage::RedbStorage::open(&store)?);
    start_on(options, storage, store, Arc::new(SystemClock)).await
}

/// Like [`start`], over `storage` (whose location `store` names; channel vouchers are kept
/// beside it) and with `clock`: what tests use to run the same stack on either back end with
/// an injected clock.
///
/// # Errors
///
/// [`ServerError`] if any part does not start.
pub async fn start_on(
    options: &DevOptions,
    storage: Arc<dyn Storage>,
    store: PathBuf,
    clock: Arc<dyn Clock>,
) -> Result<DevStack, ServerError> {
    let stack = tower_paywall::sandbox::DevStack::start(
        DevConfig::default()
            .sandbox(SandboxConfig::default().ledger_period(options.ledger_period))
            .rpc(ServeConfig::default().http(Some(options.rpc_listen)))
            .facilitator_listen(options.facilitator_listen),
    )
    .await
    .map_err(|error| match error {
        DevStackError::FacilitatorListen { source, .. } => ServerError::Io(source),
        other => sandbox_error(other),
    })?;
    let tower_paywall::sandbox::DevStack {
        sandbox,
        rpc,
        facilitator,
        facilitator_url,
        ..
    } = stack;
    let network = sandbox.network().clone();
    let pay_to = sandbox.funded_keypair().await.map_err(sandbox_error)?;
    let sponsor_account = sandbox.funded_keypair().await.map_err(sandbox_error)?;

    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut secret).map_err(sandbox_error)?;
    let mut config = Config {
        listen: options.listen.clone(),
        network: network.caip2().to_owned(),
        pay_to: Some(pay_to.address().to_string()),
        asset: Some(sandbox.usdc().to_string()),
        rpc_url: rpc.http_url(),
        ..Config::default()
    };
    config.x402.facilitator_url = Some(facilitator_url.clone());
    config.mpp.secret = Some(hex::encode(secret));
    config.mpp.realm = Some("stoka-dev".into());
    config.mpp.fee_payer_secret = Some(sponsor_account.secret_seed());
    config.mpp.channel_secret = Some(pay_to.secret_seed());
    config.store.path = store;

    let ledger = Ledger {
        network,
        rpc: Some(Arc::new(sandbox.clone()) as Arc<dyn SorobanRpc>),
        facilitator: Some((
            Arc::new(facilitator) as Arc<dyn Facilitator>,
            facilitator_url.clone(),
        )),
    };
    let server = build(&config, storage, clock, &ledger).await?;

    let demo = DemoWallets::fund(
        &sandbox,
        options.wallets,
        pay_to.address(),
        server.channel.as_ref(),
    )
    .await
    .map_err(sandbox_error)?;
    Ok(DevStack {
        ledger,
        sandbox,
        rpc,
        facilitator_url,
        server,
        config,
        wallets: demo.wallets,
        channel: demo.channel,
    })
}

/// What `stoka dev` prints: the stack and the commands to try.
pub fn banner(stack: &DevStack, url: &str) -> String {
    let rpc = stack.rpc.http_url().unwrap_or_default();
    let first = &stack.wallets[0];
    let second = stack.wallets.get(1).unwrap_or(first);
    let mut lines = vec![
        "stoka dev: everything offline, on a sandbox ledger".to_owned(),
        String::new(),
        format!("  stoka         {url}"),
        format!("  dashboard     {url}/dashboard.html"),
        format!("  manifest      {url}/.well-known/stoka.json"),
        format!("  ledger (RPC)  {rpc}"),
        format!(
            "  ledger HTTPS  {}  (certificate {})",
            stack.rpc.https_url().unwrap_or_default(),
            stack.rpc.certificate_path().display()
        ),
        format!("  facilitator   {}", stack.facilitator_url),
        format!("  USDC          {}", stack.sandbox.usdc()),
        format!("  store         {}", stack.config.store.path.display()),
        String::new(),
        "demo wallets (funded with XLM and USDC):".to_owned(),
    ];
    for (n, wallet) in stack.wallets.iter().enumerate() {
        lines.push(format!(
            "  {}  {}  {}",
            n + 1,
            wallet.address(),
            wallet.secret_seed()
        ));
    }
    let channel = stack.channel;
    let (secret, secret2) = (first.secret_seed(), second.secret_seed());
    lines.extend([
        format!("  wallet 1 has a payment channel to stoka: {channel} (10 USDC)"),
        String::new(),
        "try, in another shell (from the repository: cargo run -q -p stoka -- <command>):".into(),
        format!("  export STOKA_URL={url} STOKA_RPC_URL={rpc} STOKA_SECRET={secret}"),
        "  echo 'hello, encrypted world' > note.txt".into(),
        "  stoka put note.txt note.txt --ttl 3600      # store: 402, pay, 200".into(),
        "  stoka get note.txt                          # retrieve".into(),
        format!("  stoka push {} inbox note.txt", second.address()),
        format!("  STOKA_SECRET={secret2} stoka pop inbox --wait 5"),
        format!("  STOKA_SECRET={secret2} stoka ack inbox <receipt>"),
        format!("  stoka pop inbox --channel {channel}   # paid by a channel voucher"),
        format!("  stoka tail inbox --channel {channel}  # your mailbox as it arrives, a voucher per 100"),
        "  stoka rm note.txt                           # wallet-signed, free".into(),
        "  stoka usage --days 7".into(),
    ]);
    lines.join("\n")
}

/// `stoka dev`: starts everything and serves until stopped.
///
/// # Errors
///
/// [`ServerError`].
pub async fn dev(options: &DevOptions) -> Result<(), ServerError> {
    let stack = start(options).await?;
    let listener = tokio::net::TcpListener::bind(&options.listen).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let metrics = match options.metrics_listen {
        Some(listen) => Some(crate::metrics::spawn(
            tokio::net::TcpListener::bind(listen).await?,
        )?),
        None => None,
    };
    // A closed stdout does not stop the stack.
    let mut out = std::io::stdout().lock();
    let mut banner = banner(&stack, &url);
    if let Some(metrics) = metrics {
        banner.push_str(&format!("\n\nmetrics (Prometheus text): {metrics}"));
    }
    let _ = writeln!(out, "{banner}").and_then(|()| out.flush());
    drop(out);
    // The ledger and its RPC live as long as stoka serves.
    let DevStack {
        server,
        sandbox: _sandbox,
        rpc: _rpc,
        ..
    } = stack;
    crate::server::run(server, listener).await
}
