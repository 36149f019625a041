//! The `stoka` binary: the server (`stoka dev`, `stoka serve`) and its client commands
//! (`put`, `get`, `update`, `rm`, `push`, `pop`, `tail`, `ack`, `usage`, `challenge`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use stoka::auth::Audience;
use stoka::cli::{CliError, Client, ClientOptions, read_input};
use stoka::config::Config;
use stoka::dev::{DevOptions, dev};
use tower_paywall::Intent;

/// Pay-per-request storage for encrypted blobs and wallet mailbox queues.
#[derive(Parser)]
#[command(name = "stoka", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// How client commands reach and pay the server.
#[derive(clap::Args)]
struct Pay {
    /// The stoka server.
    #[arg(long, env = "STOKA_URL", default_value = "http://127.0.0.1:8402")]
    url: String,
    /// The paying wallet's secret key (S…).
    #[arg(long, env = "STOKA_SECRET", hide_env_values = true)]
    secret: String,
    /// A Soroban RPC URL of the server's network (`stoka dev` prints it).
    #[arg(long, env = "STOKA_RPC_URL")]
    rpc_url: Option<String>,
    /// The most one payment may cost, in USDC atomic units (1 USDC = 10^7).
    #[arg(long, env = "STOKA_MAX_PAYMENT", default_value_t = 2_000_000)]
    max_payment: i128,
    /// Pay with this intent only: x402, charge or channel.
    #[arg(long)]
    with: Option<String>,
    /// A payment channel (C…) to pay `pop` with; its commitments are signed by the wallet.
    #[arg(long, env = "STOKA_CHANNEL")]
    channel: Option<String>,
    /// Where channel amounts are kept between runs.
    #[arg(long, env = "STOKA_CHANNEL_STORE", default_value = ".stoka")]
    channel_store: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Runs everything offline: sandbox ledger, facilitator, embedded store, demo wallets.
    Dev {
        /// Where stoka listens.
        #[arg(long, default_value = "127.0.0.1:8402")]
        listen: String,
        /// Where the ledger's plain-HTTP Soroban RPC listens.
        #[arg(long, default_value = "127.0.0.1:8403")]
        rpc_listen: std::net::SocketAddr,
        /// Where the x402 facilitator listens.
        #[arg(long, default_value = "127.0.0.1:8404")]
        facilitator_listen: std::net::SocketAddr,
        /// Where `/metrics` (Prometheus text) is served.
        #[arg(long, default_value = "127.0.0.1:8405")]
        metrics_listen: std::net::SocketAddr,
        /// The redb file (default: a fresh one in a temporary directory).
        #[arg(long)]
        store: Option<PathBuf>,
    },
    /// Serves a real deployment (configuration from a file and STOKA_* variables).
    Serve {
        /// A TOML configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Stores a new blob: `stoka put <key> <file|->`.
    Put {
        key: String,
        file: PathBuf,
        /// Its life in seconds (3600..=31536000; default 30 days).
        #[arg(long)]
        ttl: Option<u64>,
        #[command(flatten)]
        pay: Pay,
    },
    /// Replaces a blob you store (and gives it a new life).
    Update {
        key: String,
        file: PathBuf,
        #[arg(long)]
        ttl: Option<u64>,
        #[command(flatten)]
        pay: Pay,
    },
    /// Retrieves a blob you store, to standard output or a file.
    Get {
        key: String,
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[command(flatten)]
        pay: Pay,
    },
    /// Deletes a blob (wallet-signed, free).
    Rm {
        key: String,
        #[command(flatten)]
        pay: Pay,
    },
    /// Pushes a message to a wallet's mailbox: `stoka push <G…> <topic> <file|->`.
    Push {
        to: String,
        topic: String,
        file: PathBuf,
        #[command(flatten)]
        pay: Pay,
    },
    /// Pops a message from your mailbox, waiting up to `--wait` seconds.
    Pop {
        topic: String,
        #[arg(long, default_value_t = 0)]
        wait: u64,
        #[command(flatten)]
        pay: Pay,
    },
    /// Streams your mailbox: each message as a JSON line as it arrives, paid a message at a
    /// time from your payment channel (`--channel`); until interrupted, or `--count` messages.
    Tail {
        topic: String,
        #[arg(long)]
        count: Option<u64>,
        #[command(flatten)]
        pay: Pay,
    },
    /// Acknowledges a popped message (wallet-signed, free).
    Ack {
        topic: String,
        receipt: String,
        #[command(flatten)]
        pay: Pay,
    },
    /// Your usage per UTC day (wallet-signed, free).
    Usage {
        #[arg(long, default_value_t = 7)]
        days: u32,
        #[command(flatten)]
        pay: Pay,
    },
    /// Gets and signs a challenge; prints it and the Authorization header value.
    Challenge {
        /// object-delete, queue-ack, profile-bind or me-usage.
        audience: String,
        #[command(flatten)]
        pay: Pay,
    },
}

impl Pay {
    fn options(&self) -> Result<ClientOptions, CliError> {
        let prefer = match self.with.as_deref() {
            None => Vec::new(),
            Some("x402") => vec![Intent::X402_EXACT],
            Some("charge") => vec![Intent::MPP_CHARGE],
            Some("channel") => vec![Intent::MPP_CHANNEL],
            Some(other) => {
                return Err(CliError::Usage(format!(
                    "--with {other}: expected x402, charge or channel"
                )));
            }
        };
        Ok(ClientOptions {
            url: self.url.clone(),
            secret: self.secret.clone(),
            rpc_url: self.rpc_url.clone(),
            max_per_payment: self.max_payment,
            prefer,
            channel: self.channel.clone(),
            channel_store: self.channel_store.clone(),
        })
    }

    async fn client(&self) -> Result<Client, CliError> {
        Client::connect(&self.options()?).await
    }
}

/// Writes `text` and a newline to stdout; a closed stdout (`stoka … | head`) is not an error.
fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}").and_then(|()| out.flush());
}

fn print(value: &serde_json::Value) {
    say(&serde_json::to_string_pretty(value).unwrap_or_default());
}

async fn run(command: Command) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        Command::Dev {
            listen,
            rpc_listen,
            facilitator_listen,
            metrics_listen,
            store,
        } => {
            let options = DevOptions {
                listen,
                rpc_listen,
                facilitator_listen,
                store,
                metrics_listen: Some(metrics_listen),
                ..DevOptions::default()
            };
            dev(&options).await?;
        }
        Command::Serve { config } => {
            let config = Config::load(config.as_deref(), |name| std::env::var(name).ok())?;
            stoka::server::serve(&config).await?;
        }
        Command::Put {
            key,
            file,
            ttl,
            pay,
        } => print(
            &pay.client()
                .await?
                .put(&key, read_input(&file)?, ttl, false)
                .await?,
        ),
        Command::Update {
            key,
            file,
            ttl,
            pay,
        } => print(
            &pay.client()
                .await?
                .put(&key, read_input(&file)?, ttl, true)
                .await?,
        ),
        Command::Get { key, output, pay } => {
            let bytes = pay.client().await?.get(&key).await?;
            match output {
                Some(path) => std::fs::write(path, bytes)?,
                None => match std::io::stdout().lock().write_all(&bytes) {
                    // The reader has all it wanted (`stoka get k | head -c 16`).
                    Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {}
                    written => written?,
                },
            }
        }
        Command::Rm { key, pay } => pay.client().await?.remove(&key).await?,
        Command::Push {
            to,
            topic,
            file,
            pay,
        } => print(
            &pay.client()
                .await?
                .push(&to, &topic, read_input(&file)?)
                .await?,
        ),
        Command::Pop { topic, wait, pay } => print(&pay.client().await?.pop(&topic, wait).await?),
        Command::Tail { topic, count, pay } => {
            let paid = pay
                .client()
                .await?
                .tail(&topic, count, |message| println!("{message}"))
                .await?;
            say(&format!("paid {paid} atomic units from the channel"));
        }
        Command::Ack {
            topic,
            receipt,
            pay,
        } => pay.client().await?.ack(&topic, &receipt).await?,
        Command::Usage { days, pay } => print(&pay.client().await?.usage(days).await?),
        Command::Challenge { audience, pay } => {
            let audience = Audience::parse(&audience).ok_or_else(|| {
                CliError::Usage(
                    "the audience is object-delete, queue-ack, profile-bind or me-usage".into(),
                )
            })?;
            let (challenge, authorization) = pay.client().await?.challenge(audience).await?;
            print(&challenge);
            say(&format!("Authorization: {authorization}"));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "stoka=info,tower_paywall=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("stoka: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(cli.command));
    // Long-polls and sandbox threads are not waited for.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("stoka: {error}");
            ExitCode::FAILURE
        }
    }
}
