//! Putting a server together from a [`Config`]: the store, the payment schemes, the layers,
//! the routes, the sweeper. [`serve`] runs it against a real network (`stoka serve`);
//! [`crate::dev`] runs it against the sandbox ledger (`stoka dev`).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tower_paywall::mpp::{ChallengeKeys, ChallengeSecret, StellarChannel};
use tower_paywall::seller::{Seller, SellerError};
use tower_paywall::stellar::{Address, JsonRpcClient, Keypair, Network, SorobanRpc};
use tower_paywall::store::BackedStore;
use tower_paywall::x402::{Facilitator, HttpFacilitator, hosted_facilitator_url};
use tower_paywall::{PaymentLayer, PaymentScheme};

use crate::api::paywall::{Schemes, layers};
use crate::api::{MppInfo, ServiceInfo, Stoka, X402Info, router};
use crate::clock::Clock;
use crate::config::{Backend, Config, ConfigError};
use crate::storage::{RedbStorage, RedisStorage, Storage, StorageError};

/// How often expired records are swept.
pub const SWEEP_PERIOD: Duration = Duration::from_secs(30);
/// How often the payments whose settlement outcome is unknown are looked up on the ledger.
pub const RECONCILE_PERIOD: Duration = Duration::from_secs(10);

/// Why a server could not be put together.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The configuration is incomplete or wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be opened.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A payment scheme or layer refused its settings.
    #[error("payment setup: {0}")]
    Payment(String),
    /// Listening or serving failed.
    #[error("cannot serve: {0}")]
    Io(#[from] std::io::Error),
}

fn invalid(name: &'static str, reason: impl Into<String>) -> ServerError {
    ServerError::Config(ConfigError::Invalid {
        name,
        reason: reason.into(),
    })
}

fn payment(error: impl std::fmt::Display) -> ServerError {
    ServerError::Payment(error.to_string())
}

/// Opens the configured store.
///
/// # Errors
///
/// The store's, or a missing Redis URL.
pub async fn open_storage(config: &Config) -> Result<Arc<dyn Storage>, ServerError> {
    Ok(match config.store.backend {
        Backend::Redb => Arc::new(RedbStorage::open(&config.store.path)?),
        Backend::Redis => {
            let url = config
                .store
                .redis_url
                .as_deref()
                .ok_or_else(|| invalid("store.redis_url", "the redis back end needs a URL"))?;
            Arc::new(RedisStorage::connect(url, &config.store.namespace).await?)
        }
    })
}

/// How stoka reaches the ledger.
#[derive(Clone)]
pub struct Ledger {
    /// The network.
    pub network: Network,
    /// Soroban RPC, for MPP.
    pub rpc: Option<Arc<dyn SorobanRpc>>,
    /// The x402 facilitator and the URL the manifest gives for it.
    pub facilitator: Option<(Arc<dyn Facilitator>, String)>,
}

/// A server, ready to serve.
pub struct Server {
    /// The routes, with their payment layers.
    pub router: Router,
    /// The service's state.
    pub stoka: Stoka,
    /// The channel scheme, when `pop` takes MPP `channel`.
    pub channel: Option<Arc<StellarChannel>>,
    /// The layer that speaks every intent stoka sells with (`pop`'s), to reconcile payments
    /// whose settlement outcome is unknown from the ledger in the background.
    pub reconciling: PaymentLayer,
    /// How long and how many connections are served.
    pub http: crate::config::HttpLimits,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("stoka", &self.stoka)
            .finish_non_exhaustive()
    }
}

/// The realm of MPP challenges: configured, or the public URL's host, or `stoka`.
fn realm(config: &Config) -> String {
    if let Some(realm) = &config.mpp.realm {
        return realm.clone();
    }
    config
        .public_url
        .as_deref()
        .and_then(|url| url.parse::<http::Uri>().ok())
        .and_then(|uri| uri.host().map(str::to_owned))
        .unwrap_or_else(|| "stoka".into())
}

/// Puts the server together over `storage` and `ledger`.
///
/// # Errors
///
/// [`ServerError`] for a setting the schemes refuse or a missing one.
pub async fn build(
    config: &Config,
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    ledger: &Ledger,
) -> Result<Server, ServerError> {
    let network = ledger.network.clone();
    let pay_to: Address = config
        .pay_to
        .as_deref()
        .ok_or_else(|| invalid("pay_to", "who is paid must be set (STOKA_PAY_TO)"))?
        .parse()
        .map_err(|_| invalid("pay_to", "not a Stellar address"))?;
    let mut seller = Seller::builder(network.clone(), pay_to);
    if let Some(asset) = &config.asset {
        seller = seller.asset(
            asset
                .parse()
                .map_err(|_| invalid("asset", "not a contract address"))?,
        );
    }
    // With a ledger to ask, an x402 settlement whose answer was lost is ended from it.
    if let Some(rpc) = &ledger.rpc {
        seller = seller.rpc(rpc.clone());
    }
    let mut x402 = None;
    if config.x402.enabled {
        let (facilitator, url) = ledger
            .facilitator
            .clone()
            .ok_or_else(|| invalid("x402.facilitator_url", "x402 needs a facilitator"))?;
        seller = seller
            .facilitator(facilitator)
            .max_timeout_seconds(config.x402.max_timeout_seconds);
        x402 = Some(X402Info {
            facilitator_url: url,
            max_timeout_seconds: config.x402.max_timeout_seconds,
        });
    }
    let realm = realm(config);
    if let Some(secret) = &config.mpp.secret {
        let secret = ChallengeSecret::new(secret.as_bytes().to_vec())
            .map_err(|error| invalid("mpp.secret", error.to_string()))?;
        seller = seller
            .challenge_keys(ChallengeKeys::new(secret))
            .realm(realm.clone());
        if let Some(fee_payer) = &config.mpp.fee_payer_secret {
            seller = seller.fee_payer(
                fee_payer
                    .parse::<Keypair>()
                    .map_err(|_| invalid("mpp.fee_payer_secret", "not a secret key (S…)"))?,
            );
        }
        if let Some(recipient) = &config.mpp.channel_secret {
            let recipient = recipient
                .parse::<Keypair>()
                .map_err(|_| invalid("mpp.channel_secret", "not a secret key (S…)"))?;
            seller = seller
                .channel(recipient, storage.channel_store())
                .leases(storage.leases());
        }
    }
    let seller = seller.build().await.map_err(|error| match error {
        SellerError::NoAsset => invalid("asset", "this network has no default USDC: set asset"),
        SellerError::NoRpc => invalid("rpc_url", "MPP needs a Soroban RPC URL"),
        SellerError::ChannelRecipient => {
            invalid("mpp.channel_secret", "it must be the secret key of pay_to")
        }
        other => payment(other),
    })?;
    let asset = seller.asset;
    let schemes = Schemes {
        exact: seller.exact.map(|exact| exact as Arc<dyn PaymentScheme>),
        charge: seller.charge.map(|charge| charge as Arc<dyn PaymentScheme>),
        channel: seller.channel,
    };
    let mpp = config.mpp.secret.as_ref().map(|_| MppInfo {
        realm,
        channel: schemes.channel.is_some(),
    });
    let info = ServiceInfo {
        network: network.caip2().to_owned(),
        asset: asset.to_string(),
        pay_to: pay_to.to_string(),
        public_url: config.public_url.clone(),
        x402,
        mpp,
    };
    // Payments live in the store: a restart resumes a payment that settled but was not
    // answered, and every node on one store sees the same payments.
    let payments = Arc::new(BackedStore::new(storage.payment_backend()));
    let stoka = Stoka::new(storage, clock, config.rates, config.limits, info);
    let (paid, pop) = layers(&stoka, &schemes, payments).map_err(payment)?;
    Ok(Server {
        router: router(stoka.clone(), paid, pop.clone()),
        stoka,
        channel: schemes.channel,
        reconciling: pop,
        http: config.http,
    })
}

/// The ledger of a real deployment: the configured RPC and facilitator.
///
/// # Errors
///
/// [`ServerError`] for a bad network, RPC URL or facilitator URL.
pub fn ledger(config: &Config) -> Result<Ledger, ServerError> {
    let network = Network::from_name(&config.network)
        .map_err(|error| invalid("network", error.to_string()))?;
    let rpc = match &config.rpc_url {
        Some(url) => Some(Arc::new(
            JsonRpcClient::builder(url.clone())
                .build()
                .map_err(payment)?,
        ) as Arc<dyn SorobanRpc>),
        None => None,
    };
    let facilitator = if config.x402.enabled {
        let url = match &config.x402.facilitator_url {
            Some(url) => url.clone(),
            None => hosted_facilitator_url(&network)
                .ok_or_else(|| invalid("x402.facilitator_url", "no default for this network"))?
                .to_owned(),
        };
        let mut builder = HttpFacilitator::builder(url.clone());
        if let Some(key) = &config.x402.facilitator_api_key {
            builder = builder.api_key(key.clone());
        }
        let facilitator = builder.build().map_err(payment)?;
        Some((Arc::new(facilitator) as Arc<dyn Facilitator>, url))
    } else {
        None
    };
    Ok(Ledger {
        network,
        rpc,
        facilitator,
    })
}

/// Serves `server` on `listener` until the process is interrupted, sweeping expired records.
///
/// # Errors
///
/// [`ServerError::Io`] when serving fails.
pub async fn run(server: Server, listener: tokio::net::TcpListener) -> Result<(), ServerError> {
    let sweeper = server.stoka.spawn_sweeper(SWEEP_PERIOD);
    let reconciler = tokio::spawn(server.reconciling.reconciler(RECONCILE_PERIOD));
    let stoka = server.stoka.clone();
    let served = crate::listen::serve(listener, server.router, server.http, async move {
        let _ = tokio::signal::ctrl_c().await;
        // Streams never end on their own: they end now, so that their connections drain.
        stoka.close_streams();
    })
    .await;
    sweeper.abort();
    reconciler.abort();
    Ok(served?)
}

/// `stoka serve`: a real deployment from `config`.
///
/// # Errors
///
/// [`ServerError`].
pub async fn serve(config: &Config) -> Result<(), ServerError> {
    let storage = open_storage(config).await?;
    let ledger = ledger(config)?;
    let server = build(
        config,
        storage,
        Arc::new(crate::clock::SystemClock),
        &ledger,
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(&config.listen).await?;
    if let Some(listen) = &config.metrics_listen {
        let url = crate::metrics::spawn(tokio::net::TcpListener::bind(listen).await?)?;
        tracing::info!(%url, "metrics served");
    }
    tracing::info!(listen = %config.listen, store = %config.store.backend, "stoka serving");
    run(server, listener).await
}
