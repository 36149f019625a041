//! `paywall`: sell any HTTP API with x402 and MPP on Stellar, from a routes file; and pay
//! for any agent (see `paywall --help`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use paywall::dev::{self, DevOptions};
use paywall::gateway::Gateway;
use paywall::pay::{self, PayOptions, PayProxy};
use paywall::payer::UpstreamSecret;
use paywall::routes::Routes;
use paywall::server::{self, interrupted};
use paywall::setup::{self, Settings};
use paywall::upstream::Upstream;
use tower_paywall::client::PayingClient;
use tower_paywall::price::Amount;
use tower_paywall::stellar::{JsonRpcClient, Keypair, Network, SorobanRpc};

#[derive(Parser)]
#[command(name = "paywall", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Reads a routes file and prints what it sells, or what is wrong with it.
    Check {
        /// The routes file (TOML).
        file: PathBuf,
    },
    /// Sells the routes of a file on a real network (reload the file with SIGHUP).
    Serve(Box<ServeArgs>),
    /// Sells the routes of a file on a sandbox ledger, with funded demo wallets.
    Dev(DevArgs),
    /// Pays the 402s of the requests sent through it, from PAYWALL_SECRET.
    Pay(PayArgs),
}

#[derive(Args)]
struct UpstreamArgs {
    /// The secret the payer headers are signed with (HMAC-SHA256), shared with the upstream
    /// (at least 32 bytes).
    #[arg(long, env = "PAYWALL_UPSTREAM_SECRET", hide_env_values = true)]
    upstream_secret: Option<String>,
    /// How long the upstream may take to answer (seconds), after which the client gets 504.
    #[arg(long, env = "PAYWALL_UPSTREAM_TIMEOUT", default_value_t = 30)]
    upstream_timeout: u64,
}

#[derive(Args)]
struct ServeArgs {
    /// The routes file (TOML).
    file: PathBuf,
    /// Where to listen.
    #[arg(long, env = "PAYWALL_LISTEN", default_value = "127.0.0.1:8480")]
    listen: SocketAddr,
    /// The URL clients reach the gateway at (default: http://<listen>).
    #[arg(long, env = "PAYWALL_PUBLIC_URL")]
    public_url: Option<String>,
    /// `testnet`, `pubnet` or a CAIP-2 id.
    #[arg(long, env = "PAYWALL_NETWORK", default_value = "testnet")]
    network: String,
    /// Who is paid (G…).
    #[arg(long, env = "PAYWALL_PAY_TO")]
    pay_to: String,
    /// The asset (C…; default: the network's USDC).
    #[arg(long, env = "PAYWALL_ASSET")]
    asset: Option<String>,
    /// Soroban RPC (MPP needs it; x402 uses it to end settlements whose answer was lost).
    #[arg(long, env = "PAYWALL_RPC_URL")]
    rpc_url: Option<String>,
    /// The x402 facilitator (default: the hosted one of testnet and pubnet).
    #[arg(long, env = "PAYWALL_FACILITATOR_URL")]
    facilitator_url: Option<String>,
    /// The facilitator's API key.
    #[arg(long, env = "PAYWALL_FACILITATOR_API_KEY", hide_env_values = true)]
    facilitator_api_key: Option<String>,
    /// Offer no x402.
    #[arg(long)]
    no_x402: bool,
    /// The MPP challenge secret (MPP is offered with it).
    #[arg(long, env = "PAYWALL_MPP_SECRET", hide_env_values = true)]
    mpp_secret: Option<String>,
    /// The MPP realm (default: the public URL's host).
    #[arg(long, env = "PAYWALL_REALM")]
    realm: Option<String>,
    /// A funded account that pays the fees of MPP `charge` (S…).
    #[arg(long, env = "PAYWALL_FEE_PAYER_SECRET", hide_env_values = true)]
    fee_payer_secret: Option<String>,
    /// The secret key of --pay-to: offers MPP `channel` (it closes the channels).
    #[arg(long, env = "PAYWALL_CHANNEL_SECRET", hide_env_values = true)]
    channel_secret: Option<String>,
    /// Where channel vouchers are kept when there is no Redis.
    #[arg(long, env = "PAYWALL_STATE_DIR", default_value = "paywall-state")]
    state_dir: PathBuf,
    /// Redis: payments, channels and leases, shared by every replica (default: payments in
    /// memory).
    #[arg(long, env = "PAYWALL_REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// A PEM file of extra CA certificates an https:// upstream is checked against.
    #[arg(long, env = "PAYWALL_UPSTREAM_CA")]
    upstream_ca: Option<PathBuf>,
    /// Where `GET /metrics` (the payment layers' metrics, Prometheus text) is served.
    #[arg(long, env = "PAYWALL_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    upstream: UpstreamArgs,
}

#[derive(Args)]
struct DevArgs {
    /// The routes file (TOML).
    file: PathBuf,
    /// Where the gateway listens.
    #[arg(long, default_value = "127.0.0.1:8480")]
    listen: SocketAddr,
    /// Where the ledger's RPC listens (plain HTTP; its HTTPS one takes a free port).
    #[arg(long, default_value = "127.0.0.1:8483")]
    rpc_listen: SocketAddr,
    /// Where the x402 facilitator listens.
    #[arg(long, default_value = "127.0.0.1:8484")]
    facilitator_listen: SocketAddr,
    /// How many demo wallets to fund.
    #[arg(long, default_value_t = 3)]
    wallets: usize,
    /// Where `GET /metrics` (the payment layers' metrics, Prometheus text) is served.
    #[arg(long, default_value = "127.0.0.1:8485")]
    metrics_listen: SocketAddr,
    #[command(flatten)]
    upstream: UpstreamArgs,
}

#[derive(Args)]
struct PayArgs {
    /// Where to listen (loopback peers only are served).
    #[arg(long, env = "PAYWALL_PAY_LISTEN", default_value = pay::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// The payer's secret key (S…).
    #[arg(long = "secret", env = "PAYWALL_SECRET", hide_env_values = true)]
    secret: String,
    /// A Soroban RPC of the network paid on.
    #[arg(long, env = "PAYWALL_RPC_URL")]
    rpc_url: String,
    /// The network's CAIP-2 id, for a network other than testnet and pubnet (those are read
    /// from the RPC).
    #[arg(long, env = "PAYWALL_NETWORK")]
    network: Option<String>,
    /// The most one payment may cost, in USDC: a dearer 402 is refused before signing.
    #[arg(long, env = "PAYWALL_MAX_PER_PAYMENT", default_value = "0.1")]
    max_per_payment: String,
    /// The most paid in all while running, in USDC.
    #[arg(long, env = "PAYWALL_BUDGET", default_value = "5")]
    budget: String,
    /// The largest request body taken, in bytes (it is kept to be sent again with the
    /// payment).
    #[arg(long, default_value_t = pay::DEFAULT_MAX_BODY)]
    max_body: usize,
    /// Append each payment to this file as a JSON line.
    #[arg(long)]
    log: Option<PathBuf>,
    /// A PEM file of extra CA certificates (for https:// origins and the RPC).
    #[arg(long, env = "PAYWALL_CA")]
    ca: Option<PathBuf>,
    /// A token every request must carry (the proxy password:
    /// HTTP_PROXY=http://agent:TOKEN@127.0.0.1:8490, or Paywall-Pay-Token), so that other users
    /// of the machine cannot spend from the key.
    #[arg(long, env = "PAYWALL_PAY_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Check { file } = &cli.command {
        return check(file);
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PAYWALL_LOG")
                .unwrap_or_else(|_| "paywall=info,tower_paywall=warn".into()),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => return fail(&error),
    };
    let ran = runtime.block_on(async move {
        match cli.command {
            Command::Check { .. } => Ok(()),
            Command::Serve(args) => serve(*args).await,
            Command::Dev(args) => run_dev(args).await,
            Command::Pay(args) => run_pay(args).await,
        }
    });
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&*error),
    }
}

type Failure = Box<dyn std::error::Error>;

fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("paywall: {error}");
    ExitCode::FAILURE
}

fn check(file: &Path) -> ExitCode {
    let routes = match server::read(file) {
        Ok(routes) => routes,
        Err(error) => return fail(&error),
    };
    print_routes(&routes);
    ExitCode::SUCCESS
}

fn print_routes(routes: &Routes) {
    println!("upstream {}", routes.upstream);
    for route in &routes.routes {
        let method = route.method.as_ref().map_or("*", http::Method::as_str);
        let intents: Vec<String> = route.intents.iter().map(|i| format!("{i:?}")).collect();
        println!(
            "{method:7} {:30} {:40} {} {:?}",
            route.path.as_str(),
            route.price.to_string(),
            intents.join(","),
            route.settle
        );
    }
}

/// The PEM file at `path`, if one is named.
fn read_pem(path: Option<&Path>) -> Result<Option<Vec<u8>>, Failure> {
    path.map(|path| std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()).into()))
        .transpose()
}

fn upstream_secret(args: &UpstreamArgs) -> Result<Option<UpstreamSecret>, Failure> {
    match &args.upstream_secret {
        Some(secret) => Ok(Some(UpstreamSecret::new(secret.clone().into_bytes())?)),
        None => Ok(None),
    }
}

async fn serve(args: ServeArgs) -> Result<(), Failure> {
    let routes = server::read(&args.file)?;
    let public_url = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", args.listen));
    // Before the layers are built, so that the metrics' descriptions reach the recorder.
    if let Some(listen) = args.metrics_listen {
        let url = server::spawn_metrics(tokio::net::TcpListener::bind(listen).await?)?;
        tracing::info!(%url, "metrics served");
    }
    let settings = Settings {
        network: args.network,
        pay_to: Some(args.pay_to),
        asset: args.asset,
        rpc_url: args.rpc_url,
        facilitator_url: args.facilitator_url,
        facilitator_api_key: args.facilitator_api_key,
        no_x402: args.no_x402,
        mpp_secret: args.mpp_secret,
        realm: args.realm,
        fee_payer_secret: args.fee_payer_secret,
        channel_secret: args.channel_secret,
        state_dir: args.state_dir,
        redis_url: args.redis_url,
        public_url: public_url.trim_end_matches('/').to_owned(),
    };
    let ledger = setup::ledger(&settings)?;
    let payments = setup::payments(&settings, &ledger).await?;
    let ca = read_pem(args.upstream_ca.as_deref())?;
    let secret = upstream_secret(&args.upstream)?;
    if secret.is_none() {
        tracing::warn!(
            "no upstream secret: the payer headers are not signed (the upstream must be reachable only through the gateway)"
        );
    }
    let upstream = Upstream::new(
        Duration::from_secs(args.upstream.upstream_timeout),
        ca.as_deref(),
        secret,
    )?;
    let gateway = Gateway::new(routes, payments, upstream)?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    server::reload_on_hangup(gateway.clone(), args.file.clone())?;
    tracing::info!(listen = %args.listen, %public_url, "paywall serving");
    server::serve(listener, gateway, interrupted()).await?;
    Ok(())
}

async fn run_dev(args: DevArgs) -> Result<(), Failure> {
    let routes = server::read(&args.file)?;
    let metrics = server::spawn_metrics(tokio::net::TcpListener::bind(args.metrics_listen).await?)?;
    let options = DevOptions {
        listen: args.listen,
        rpc_listen: args.rpc_listen,
        facilitator_listen: args.facilitator_listen,
        wallets: args.wallets,
        upstream_secret: args.upstream.upstream_secret,
        upstream_timeout: Duration::from_secs(args.upstream.upstream_timeout),
        ..DevOptions::default()
    };
    let stack = dev::start(&options, routes.clone()).await?;
    println!(
        "{}\n\nmetrics (Prometheus text): {metrics}",
        dev::banner(&stack, &routes)
    );
    server::reload_on_hangup(stack.selling.gateway.clone(), args.file.clone())?;
    let dev::DevStack {
        selling,
        sandbox: _sandbox,
        rpc: _rpc,
        ..
    } = stack;
    server::serve(selling.listener, selling.gateway, interrupted()).await?;
    Ok(())
}

fn usdc(name: &str, text: &str) -> Result<i128, Failure> {
    let amount: Amount = text
        .parse()
        .map_err(|error| format!("--{name} {text:?}: {error}"))?;
    Ok(amount.atomic())
}

async fn run_pay(args: PayArgs) -> Result<(), Failure> {
    let keypair: Keypair = args
        .secret
        .parse()
        .map_err(|_| "PAYWALL_SECRET is not a secret key (S…)")?;
    let ca = read_pem(args.ca.as_deref())?;
    let mut rpc = JsonRpcClient::builder(args.rpc_url.clone());
    if let Some(ca) = &ca {
        rpc = rpc.root_certificate_pem(ca);
    }
    let rpc: Arc<dyn SorobanRpc> = Arc::new(rpc.build()?);
    let passphrase = rpc.network().await?.passphrase;
    let network = match (args.network.as_deref(), passphrase.as_str()) {
        (_, Network::TESTNET_PASSPHRASE) => Network::testnet(),
        (_, Network::PUBNET_PASSPHRASE) => Network::pubnet(),
        (Some(caip2), passphrase) => Network::custom(caip2, passphrase)?,
        (None, passphrase) => {
            return Err(format!(
                "the RPC serves {passphrase:?}: name its network with --network stellar:<name>"
            )
            .into());
        }
    };
    let options = PayOptions {
        max_per_payment: Some(usdc("max-per-payment", &args.max_per_payment)?),
        budget: Some(usdc("budget", &args.budget)?),
        max_body: Some(args.max_body),
        log: args.log,
        quiet: false,
        token: args.token,
    };
    let tls = paywall::upstream::tls_config(ca.as_deref())?;
    let http = pay::http_client(tls)?;
    let client = PayingClient::builder(keypair.clone(), rpc, network.clone())
        .http(http)
        .policy(pay::policy(&options))
        .build()?;
    let proxy = PayProxy::new(client, options).await?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let listen = listener.local_addr()?;
    println!(
        "paywall pay: paying from {} on {} at most {} USDC a payment, {} USDC in all",
        keypair.address(),
        network.caip2(),
        args.max_per_payment,
        args.budget
    );
    println!("  http:// origins   HTTP_PROXY=http://{listen}");
    println!("  any origin        http://{listen}/https://host/path");
    println!("  what was spent    http://{listen}{}", pay::SPEND_PATH);
    pay::serve(listener, proxy.clone(), interrupted()).await?;
    println!("paywall pay: spent {} atomic units", proxy.spent());
    Ok(())
}
