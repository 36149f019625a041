//! `paywall dev`: a gateway on a sandbox ledger (the real Soroban host) in one process: its
//! Soroban RPC on loopback (plain HTTP and HTTPS), our x402 facilitator, MPP `charge` with
//! sponsored fees, MPP `channel`, and funded demo wallets (the first with a channel to the
//! gateway), printed with what to try.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tower_paywall::sandbox::{
    DemoWallets, DevConfig, RpcServer, Sandbox, SandboxConfig, ServeConfig,
};
use tower_paywall::stellar::{Address, Keypair, SorobanRpc};
use tower_paywall::x402::Facilitator;

use crate::gateway::Gateway;
use crate::payer::UpstreamSecret;
use crate::routes::Routes;
use crate::setup::{self, Ledger, Settings, SetupError};
use crate::upstream::{DEFAULT_TIMEOUT, Upstream};

/// What `paywall dev` runs with.
#[derive(Clone, Debug)]
pub struct DevOptions {
    /// Where the gateway listens.
    pub listen: SocketAddr,
    /// Where the ledger's plain-HTTP RPC listens (its HTTPS one takes a free port).
    pub rpc_listen: SocketAddr,
    /// Where the facilitator listens.
    pub facilitator_listen: SocketAddr,
    /// How many demo wallets to fund.
    pub wallets: usize,
    /// How often the sandbox closes a ledger.
    pub ledger_period: Duration,
    /// The secret shared with the upstream (default: a fresh one, printed).
    pub upstream_secret: Option<String>,
    /// How long the upstream may take to answer.
    pub upstream_timeout: Duration,
}

impl DevOptions {
    /// The ledger, its RPC and the facilitator these options ask for.
    fn stack(&self) -> DevConfig {
        DevConfig::default()
            .sandbox(SandboxConfig::default().ledger_period(self.ledger_period))
            .rpc(ServeConfig::default().http(Some(self.rpc_listen)))
            .facilitator_listen(self.facilitator_listen)
    }
}

impl Default for DevOptions {
    fn default() -> Self {
        DevOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 8480)),
            rpc_listen: SocketAddr::from(([127, 0, 0, 1], 8483)),
            facilitator_listen: SocketAddr::from(([127, 0, 0, 1], 8484)),
            wallets: 3,
            ledger_period: Duration::from_secs(1),
            upstream_secret: None,
            upstream_timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// A running dev stack: the ledger, the facilitator, the gateway (not yet serving).
pub struct DevStack {
    /// The ledger.
    pub sandbox: Sandbox,
    /// Its RPC server.
    pub rpc: RpcServer,
    /// The facilitator's URL.
    pub facilitator_url: String,
    /// The gateway and its demo wallets.
    pub selling: Selling,
}

/// A gateway on a sandbox ledger, with funded demo wallets: ready to serve on `listener`.
pub struct Selling {
    /// The gateway.
    pub gateway: Gateway,
    /// Where it listens.
    pub listener: tokio::net::TcpListener,
    /// Its URL.
    pub url: String,
    /// Who is paid.
    pub pay_to: Keypair,
    /// The funded demo wallets.
    pub wallets: Vec<Keypair>,
    /// The first wallet's open channel to the gateway.
    pub channel: Address,
    /// The secret the payer headers are signed with, when it was made for this run (and may
    /// be printed); `None` when one was given.
    pub made_secret: Option<String>,
}

impl std::fmt::Debug for DevStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevStack")
            .field("url", &self.selling.url)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Selling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Selling")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

fn sandbox_error(error: impl std::fmt::Display) -> SetupError {
    SetupError::Payment(format!("sandbox: {error}"))
}

fn random_hex() -> Result<String, SetupError> {
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut secret).map_err(sandbox_error)?;
    Ok(hex::encode(secret))
}

/// Starts the ledger, the facilitator and the wallets, and builds the gateway for `routes`.
///
/// # Errors
///
/// [`SetupError`] if any part does not start, or the routes ask for what it does not sell.
pub async fn start(options: &DevOptions, routes: Routes) -> Result<DevStack, SetupError> {
    let dev = tower_paywall::sandbox::DevStack::start(options.stack())
        .await
        .map_err(sandbox_error)?;
    let ledger = Ledger {
        network: dev.sandbox.network().clone(),
        rpc: Some(Arc::new(dev.sandbox.clone()) as Arc<dyn SorobanRpc>),
        facilitator: Some(Arc::new(dev.facilitator.clone()) as Arc<dyn Facilitator>),
    };
    let selling = sell_on(
        &dev.sandbox,
        ledger,
        dev.rpc.certificate_pem(),
        routes,
        options,
    )
    .await?;
    Ok(DevStack {
        sandbox: dev.sandbox,
        rpc: dev.rpc,
        facilitator_url: dev.facilitator_url,
        selling,
    })
}

/// Builds a gateway for `routes` on `sandbox`, reached through `ledger`: who is paid, a fee
/// sponsor, the demo wallets (the first with a channel to the gateway). `https://` upstreams
/// are also checked against `extra_root` (PEM; the sandbox's own certificate).
///
/// # Errors
///
/// [`SetupError`].
pub async fn sell_on(
    sandbox: &Sandbox,
    ledger: Ledger,
    extra_root: &str,
    routes: Routes,
    options: &DevOptions,
) -> Result<Selling, SetupError> {
    let pay_to = sandbox.funded_keypair().await.map_err(sandbox_error)?;
    let sponsor_account = sandbox.funded_keypair().await.map_err(sandbox_error)?;
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(sandbox_error)?;
    let url = format!("http://{}", listener.local_addr().map_err(sandbox_error)?);
    let state_dir = std::env::temp_dir().join(format!(
        "paywall-dev-{}-{}",
        std::process::id(),
        listener.local_addr().map_err(sandbox_error)?.port()
    ));
    let settings = Settings {
        network: ledger.network.caip2().to_owned(),
        pay_to: Some(pay_to.address().to_string()),
        asset: Some(sandbox.usdc().to_string()),
        mpp_secret: Some(random_hex()?),
        realm: Some("paywall-dev".into()),
        fee_payer_secret: Some(sponsor_account.secret_seed()),
        channel_secret: Some(pay_to.secret_seed()),
        state_dir,
        public_url: url.clone(),
        ..Settings::default()
    };
    let payments = setup::payments(&settings, &ledger).await?;
    let channel_scheme = payments.seller.channel.clone();
    let made_secret = match options.upstream_secret {
        Some(_) => None,
        None => Some(random_hex()?),
    };
    let upstream_secret = options.upstream_secret.as_ref().or(made_secret.as_ref());
    let upstream_secret = upstream_secret.expect("given or made").clone();
    let secret = UpstreamSecret::new(upstream_secret.into_bytes()).map_err(|reason| {
        SetupError::Invalid {
            name: "upstream-secret",
            reason,
        }
    })?;
    let upstream = Upstream::new(
        options.upstream_timeout,
        Some(extra_root.as_bytes()),
        Some(secret),
    )
    .map_err(|error| SetupError::Payment(error.to_string()))?;
    let gateway = Gateway::new(routes, payments, upstream)
        .map_err(|error| SetupError::Payment(error.to_string()))?;
    let demo = DemoWallets::fund(
        sandbox,
        options.wallets,
        pay_to.address(),
        channel_scheme.as_ref(),
    )
    .await
    .map_err(sandbox_error)?;
    Ok(Selling {
        gateway,
        listener,
        url,
        pay_to,
        wallets: demo.wallets,
        channel: demo.channel,
        made_secret,
    })
}

/// What `paywall dev` prints: the stack and what to try.
pub fn banner(stack: &DevStack, routes: &Routes) -> String {
    let rpc = stack.rpc.http_url().unwrap_or_default();
    let https = stack.rpc.https_url().unwrap_or_default();
    let mut lines = vec![
        "paywall dev: a gateway on a sandbox ledger, everything offline".to_owned(),
        String::new(),
        format!("  gateway       {}", stack.selling.url),
        format!("  upstream      {}", routes.upstream),
        format!(
            "  discovery     {}/openapi.json  {}/.well-known/x402.json",
            stack.selling.url, stack.selling.url
        ),
        format!("  ledger (RPC)  {rpc}"),
        format!(
            "  ledger HTTPS  {https}  (certificate {})",
            stack.rpc.certificate_path().display()
        ),
        format!("  facilitator   {}", stack.facilitator_url),
        format!("  USDC          {}", stack.sandbox.usdc()),
        format!("  paid to       {}", stack.selling.pay_to.address()),
        match &stack.selling.made_secret {
            Some(secret) => {
                format!("  upstream secret (Paywall-Signature; made for this run)  {secret}")
            }
            None => "  upstream secret (Paywall-Signature)  the one given".to_owned(),
        },
        String::new(),
        "routes:".to_owned(),
    ];
    for route in &routes.routes {
        let method = route.method.as_ref().map_or("*", http::Method::as_str);
        lines.push(format!(
            "  {method:7} {:28} {}",
            route.path.as_str(),
            route.price
        ));
    }
    lines.push(String::new());
    lines.push("demo wallets (funded with XLM and USDC):".to_owned());
    for (n, wallet) in stack.selling.wallets.iter().enumerate() {
        lines.push(format!(
            "  {}  {}  {}",
            n + 1,
            wallet.address(),
            wallet.secret_seed()
        ));
    }
    let secret = stack.selling.wallets[0].secret_seed();
    // A path the first paid route sells, its parameters filled in.
    let sold = routes
        .routes
        .iter()
        .find(|route| route.price != crate::routes::PriceRule::Free)
        .map(|route| {
            let parts: Vec<&str> = route
                .path
                .as_str()
                .split('/')
                .map(|part| {
                    if part.starts_with('{') || part == "*" {
                        "example"
                    } else {
                        part
                    }
                })
                .collect();
            parts.join("/")
        })
        .unwrap_or_else(|| "/".into());
    lines.extend([
        format!("  wallet 1 has a payment channel to the gateway: {} (10 USDC)", stack.selling.channel),
        String::new(),
        "try, in another shell (from the repository: cargo run -q -p paywall -- <command>):".into(),
        format!("  PAYWALL_SECRET={secret} PAYWALL_RPC_URL={rpc} paywall pay --budget 1 &   # listens on 127.0.0.1:8490"),
        format!("  curl -x http://127.0.0.1:8490 {}{sold}   # paid by paywall pay", stack.selling.url),
        "  curl http://127.0.0.1:8490/_paywall/spend             # what it paid".into(),
    ]);
    lines.join("\n")
}
