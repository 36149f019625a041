//! Putting the payment side together: the schemes a gateway offers, from its settings and
//! the ledger it reaches ([`Ledger`]: a real network's RPC and facilitator, or the sandbox's).

use std::path::PathBuf;
use std::sync::Arc;

use tower_paywall::mpp::{ChallengeKeys, ChallengeSecret};
use tower_paywall::seller::{Seller, SellerError};
use tower_paywall::stellar::{Address, JsonRpcClient, Keypair, Network, SorobanRpc};
use tower_paywall::store::{ChannelStore, FileChannelStore};
use tower_paywall::x402::{Facilitator, HttpFacilitator, hosted_facilitator_url};
use tower_paywall::{MemoryStore, PaymentStore};

use crate::gateway::Payments;

/// What the payment side is set up from (`paywall serve`'s flags and environment).
#[derive(Clone, Default)]
pub struct Settings {
    /// `testnet`, `pubnet` or a CAIP-2 id.
    pub network: String,
    /// Who is paid (`G…`).
    pub pay_to: Option<String>,
    /// The asset (`C…`; default: the network's USDC).
    pub asset: Option<String>,
    /// Soroban RPC, for MPP.
    pub rpc_url: Option<String>,
    /// The x402 facilitator (default: the hosted one of testnet and pubnet).
    pub facilitator_url: Option<String>,
    /// Its API key.
    pub facilitator_api_key: Option<String>,
    /// Turns x402 off.
    pub no_x402: bool,
    /// The MPP challenge secret (MPP is off without it).
    pub mpp_secret: Option<String>,
    /// The MPP realm (default: the public URL's host).
    pub realm: Option<String>,
    /// A funded account that pays `charge` fees (`S…`).
    pub fee_payer_secret: Option<String>,
    /// `pay_to`'s secret key: offers MPP `channel` (it closes channels).
    pub channel_secret: Option<String>,
    /// Where channel vouchers are kept (without Redis).
    pub state_dir: PathBuf,
    /// Redis: payments, channels and leases shared by every replica.
    pub redis_url: Option<String>,
    /// The gateway's public URL.
    pub public_url: String,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("network", &self.network)
            .field("pay_to", &self.pay_to)
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

/// How the gateway reaches the ledger.
#[derive(Clone)]
pub struct Ledger {
    /// The network.
    pub network: Network,
    /// Soroban RPC, for MPP.
    pub rpc: Option<Arc<dyn SorobanRpc>>,
    /// The x402 facilitator.
    pub facilitator: Option<Arc<dyn Facilitator>>,
}

/// Why the payment side could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A setting is missing or wrong.
    #[error("{name}: {reason}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A scheme or store refused its settings.
    #[error("payment setup: {0}")]
    Payment(String),
}

fn invalid(name: &'static str, reason: impl Into<String>) -> SetupError {
    SetupError::Invalid {
        name,
        reason: reason.into(),
    }
}

fn payment(error: impl std::fmt::Display) -> SetupError {
    SetupError::Payment(error.to_string())
}

/// The ledger of a real deployment: the configured RPC and facilitator.
///
/// # Errors
///
/// [`SetupError`] for a bad network, RPC URL or facilitator URL.
pub fn ledger(settings: &Settings) -> Result<Ledger, SetupError> {
    let network = Network::from_name(&settings.network)
        .map_err(|error| invalid("network", error.to_string()))?;
    let rpc = settings
        .rpc_url
        .as_deref()
        .map(|url| JsonRpcClient::builder(url).build().map_err(payment))
        .transpose()?
        .map(|rpc| Arc::new(rpc) as Arc<dyn SorobanRpc>);
    let facilitator = if settings.no_x402 {
        None
    } else {
        let url = match &settings.facilitator_url {
            Some(url) => url.clone(),
            None => hosted_facilitator_url(&network)
                .ok_or_else(|| invalid("facilitator-url", "no default for this network"))?
                .to_owned(),
        };
        let mut builder = HttpFacilitator::builder(url);
        if let Some(key) = &settings.facilitator_api_key {
            builder = builder.api_key(key.clone());
        }
        Some(Arc::new(builder.build().map_err(payment)?) as Arc<dyn Facilitator>)
    };
    Ok(Ledger {
        network,
        rpc,
        facilitator,
    })
}

/// Builds the schemes `settings` ask for over `ledger`.
///
/// # Errors
///
/// [`SetupError`] for a missing or wrong setting.
pub async fn payments(settings: &Settings, ledger: &Ledger) -> Result<Payments, SetupError> {
    let pay_to: Address = settings
        .pay_to
        .as_deref()
        .ok_or_else(|| invalid("pay-to", "who is paid must be set (PAYWALL_PAY_TO)"))?
        .parse()
        .map_err(|_| invalid("pay-to", "not a Stellar address"))?;
    let asset: Option<Address> = settings
        .asset
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|_| invalid("asset", "not a contract address"))?;
    let redis = match &settings.redis_url {
        Some(url) => Some(
            tower_paywall::store::redis::RedisStore::connect(url, "paywall")
                .await
                .map_err(payment)?,
        ),
        None => None,
    };
    let mut seller = Seller::builder(ledger.network.clone(), pay_to);
    if let Some(asset) = asset {
        seller = seller.asset(asset);
    }
    if let Some(rpc) = &ledger.rpc {
        seller = seller.rpc(rpc.clone());
    }
    if let Some(facilitator) = ledger.facilitator.clone().filter(|_| !settings.no_x402) {
        seller = seller.facilitator(facilitator);
    }
    if let Some(secret) = &settings.mpp_secret {
        let secret = ChallengeSecret::new(secret.as_bytes().to_vec())
            .map_err(|error| invalid("mpp-secret", error.to_string()))?;
        let realm = settings.realm.clone().unwrap_or_else(|| {
            settings
                .public_url
                .parse::<http::Uri>()
                .ok()
                .and_then(|uri| uri.host().map(str::to_owned))
                .unwrap_or_else(|| "paywall".into())
        });
        seller = seller
            .challenge_keys(ChallengeKeys::new(secret))
            .realm(realm);
        if let Some(fee_payer) = &settings.fee_payer_secret {
            seller = seller.fee_payer(
                fee_payer
                    .parse::<Keypair>()
                    .map_err(|_| invalid("fee-payer-secret", "not a secret key (S…)"))?,
            );
        }
        if let Some(recipient) = &settings.channel_secret {
            let recipient = recipient
                .parse::<Keypair>()
                .map_err(|_| invalid("channel-secret", "not a secret key (S…)"))?;
            let vouchers: Arc<dyn ChannelStore> = match &redis {
                Some(redis) => Arc::new(redis.channel_store()),
                None => Arc::new(FileChannelStore::open(&settings.state_dir).map_err(payment)?),
            };
            seller = seller.channel(recipient, vouchers);
            if let Some(redis) = &redis {
                seller = seller.leases(Arc::new(redis.leases()));
            }
        }
    }
    let seller = seller.build().await.map_err(|error| match error {
        SellerError::NoAsset => invalid("asset", "this network has no default USDC: set --asset"),
        SellerError::NoRpc => invalid("rpc-url", "MPP needs a Soroban RPC URL"),
        SellerError::ChannelRecipient => {
            invalid("channel-secret", "it must be the secret key of pay-to")
        }
        SellerError::NothingOffered => invalid(
            "mpp-secret",
            "nothing to sell with: x402 is off and MPP has no secret (PAYWALL_MPP_SECRET)",
        ),
        other => payment(other),
    })?;
    let store: Arc<dyn PaymentStore> = match &redis {
        Some(redis) => Arc::new(redis.payment_store()),
        None => Arc::new(MemoryStore::new()),
    };
    Ok(Payments {
        seller,
        store,
        public_url: settings.public_url.clone(),
    })
}
