//! The schemes a seller offers, made from one set of typed settings (feature `rpc`).
//!
//! A service that sells on Stellar usually offers each intent it can to the same payee in the
//! same asset: x402 `exact` when it has a facilitator, MPP `charge` when it has a challenge
//! secret and a Soroban RPC (its fees sponsored when it has a fee payer), MPP `channel` when it
//! also has the payee's key and a channel store. [`Seller::builder`] takes those settings,
//! checks that they fit together, builds the schemes, and resumes the channels a durable store
//! kept from an earlier run. Put [`Seller::schemes`] in a [`PaymentLayer`](crate::PaymentLayer),
//! or each scheme where it belongs.
//!
//! ```
//! # #[cfg(feature = "http-facilitator")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use tower_paywall::mpp::{ChallengeKeys, ChallengeSecret};
//! use tower_paywall::seller::Seller;
//! use tower_paywall::stellar::{JsonRpcClient, Keypair, Network};
//! use tower_paywall::store::MemoryChannelStore;
//! use tower_paywall::{PaymentLayer, Price, x402};
//!
//! let network = Network::from_name("testnet")?;
//! let payee = Keypair::from_seed([7; 32]);
//! let facilitator = x402::HttpFacilitator::builder(
//!     x402::hosted_facilitator_url(&network).expect("testnet has one"),
//! )
//! .api_key("my-api-key")
//! .build()?;
//! let rpc = JsonRpcClient::builder("https://soroban-testnet.stellar.org").build()?;
//! let seller = Seller::builder(network, payee.address())
//!     .rpc(Arc::new(rpc))
//!     .facilitator(Arc::new(facilitator))
//!     .challenge_keys(ChallengeKeys::new(ChallengeSecret::new(
//!         "a server secret of at least 32 bytes",
//!     )?))
//!     .realm("api.example.com")
//!     .fee_payer(Keypair::from_seed([8; 32]))
//!     .channel(payee, Arc::new(MemoryChannelStore::new()))
//!     .build()
//!     .await?;
//! assert_eq!(seller.schemes().len(), 3);
//! let mut layer = PaymentLayer::builder().price(Price::parse("$0.001")?);
//! for scheme in seller.schemes() {
//!     layer = layer.shared_scheme(scheme);
//! }
//! let layer = layer.build()?;
//! # let _ = layer;
//! # Ok(()) }
//! # #[cfg(not(feature = "http-facilitator"))]
//! # fn main() {}
//! ```

use std::fmt;
use std::sync::Arc;

use crate::PaymentScheme;
use crate::mpp::{
    ChallengeKeys, ChannelError, StellarChannel, StellarChannelError, StellarCharge,
    StellarChargeError,
};
use crate::stellar::{Address, Keypair, Network, SorobanRpc, Sponsor, SponsorError};
use crate::store::{ChannelStore, Leases};
use crate::x402::{Exact, ExactBuildError, Facilitator};

/// The most a sponsored MPP `charge` transaction may cost in fees unless told otherwise, in
/// stroops (0.1 XLM).
pub const DEFAULT_MAX_SPONSORED_FEE: u32 = 1_000_000;

/// The schemes a seller offers, all paying [`pay_to`](Self::pay_to) in
/// [`asset`](Self::asset) on [`network`](Self::network) (see the [module docs](self)).
#[non_exhaustive]
pub struct Seller {
    /// The network.
    pub network: Network,
    /// Who is paid.
    pub pay_to: Address,
    /// The asset's contract: the one set, or the network's USDC.
    pub asset: Address,
    /// x402 `exact`, with a facilitator.
    pub exact: Option<Arc<Exact>>,
    /// MPP `charge`, with challenge keys.
    pub charge: Option<Arc<StellarCharge>>,
    /// MPP `channel`, with challenge keys and the payee's key; its stored channels resumed.
    /// Add the channels to serve with [`StellarChannel::add_channel`].
    pub channel: Option<Arc<StellarChannel>>,
}

impl fmt::Debug for Seller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Seller")
            .field("network", &self.network.caip2())
            .field("pay_to", &self.pay_to)
            .field("asset", &self.asset)
            .field("exact", &self.exact.is_some())
            .field("charge", &self.charge.is_some())
            .field("channel", &self.channel.is_some())
            .finish()
    }
}

impl Seller {
    /// Starts a builder: payments to `pay_to` on `network`.
    pub fn builder(network: Network, pay_to: Address) -> SellerBuilder {
        SellerBuilder {
            network,
            pay_to,
            asset: None,
            rpc: None,
            facilitator: None,
            max_timeout_seconds: None,
            keys: None,
            realm: None,
            fee_payer: None,
            max_sponsored_fee: DEFAULT_MAX_SPONSORED_FEE,
            channel: None,
            leases: None,
        }
    }

    /// Every scheme built, in the order a 402 offers them: x402 `exact`, MPP `charge`, MPP
    /// `channel`.
    #[must_use]
    pub fn schemes(&self) -> Vec<Arc<dyn PaymentScheme>> {
        let exact = self.exact.clone().map(|s| s as Arc<dyn PaymentScheme>);
        let charge = self.charge.clone().map(|s| s as Arc<dyn PaymentScheme>);
        let channel = self.channel.clone().map(|s| s as Arc<dyn PaymentScheme>);
        [exact, charge, channel].into_iter().flatten().collect()
    }
}

/// Builds a [`Seller`].
#[must_use]
pub struct SellerBuilder {
    network: Network,
    pay_to: Address,
    asset: Option<Address>,
    rpc: Option<Arc<dyn SorobanRpc>>,
    facilitator: Option<Arc<dyn Facilitator>>,
    max_timeout_seconds: Option<u64>,
    keys: Option<ChallengeKeys>,
    realm: Option<String>,
    fee_payer: Option<Keypair>,
    max_sponsored_fee: u32,
    channel: Option<(Keypair, Arc<dyn ChannelStore>)>,
    leases: Option<Arc<dyn Leases>>,
}

impl fmt::Debug for SellerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SellerBuilder")
            .field("network", &self.network.caip2())
            .field("pay_to", &self.pay_to)
            .field("asset", &self.asset)
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

/// Why a [`SellerBuilder`] refused to build.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SellerError {
    /// No asset was set and the network has no known USDC contract.
    #[error("no asset set, and the network has no known USDC contract")]
    NoAsset,
    /// Neither a facilitator (x402) nor challenge keys (MPP) were set.
    #[error("nothing to offer: no facilitator (x402) and no challenge keys (MPP)")]
    NothingOffered,
    /// A fee payer or a channel was set without the challenge keys of MPP.
    #[error("a fee payer and a channel are MPP's: they need challenge keys")]
    NoChallengeKeys,
    /// MPP was asked for without a Soroban RPC.
    #[error("MPP needs a Soroban RPC")]
    NoRpc,
    /// The channel recipient's key is not `pay_to`'s.
    #[error("the channel recipient must be pay_to")]
    ChannelRecipient,
    /// x402 `exact` refused its settings.
    #[error(transparent)]
    Exact(#[from] ExactBuildError),
    /// MPP `charge` refused its settings.
    #[error(transparent)]
    Charge(#[from] StellarChargeError),
    /// The fee payer's sponsor refused its settings.
    #[error(transparent)]
    Sponsor(#[from] SponsorError),
    /// MPP `channel` refused its settings.
    #[error(transparent)]
    Channel(#[from] StellarChannelError),
    /// The channels of the store could not be resumed.
    #[error("cannot resume the stored channels: {0}")]
    Resume(#[from] ChannelError),
}

impl SellerBuilder {
    /// The asset's contract (default: the network's USDC).
    pub fn asset(mut self, asset: Address) -> Self {
        self.asset = Some(asset);
        self
    }

    /// A Soroban RPC on the network: MPP needs it; x402 `exact` uses it to end settlements
    /// whose answer was lost ([`ExactBuilder::rpc`](crate::x402::ExactBuilder::rpc)).
    pub fn rpc(mut self, rpc: Arc<dyn SorobanRpc>) -> Self {
        self.rpc = Some(rpc);
        self
    }

    /// Offers x402 `exact`, verified and settled by `facilitator`.
    pub fn facilitator(mut self, facilitator: Arc<dyn Facilitator>) -> Self {
        self.facilitator = Some(facilitator);
        self
    }

    /// x402 `exact`'s `maxTimeoutSeconds` (default
    /// [`DEFAULT_MAX_TIMEOUT_SECONDS`](crate::x402::DEFAULT_MAX_TIMEOUT_SECONDS)).
    pub fn max_timeout_seconds(mut self, seconds: u64) -> Self {
        self.max_timeout_seconds = Some(seconds);
        self
    }

    /// Offers MPP `charge`, its challenge ids bound by `keys` (MPP `channel` too, with
    /// [`channel`](Self::channel)). Needs [`rpc`](Self::rpc).
    pub fn challenge_keys(mut self, keys: ChallengeKeys) -> Self {
        self.keys = Some(keys);
        self
    }

    /// The MPP protection space (default: the request's host).
    pub fn realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = Some(realm.into());
        self
    }

    /// Sponsors the fees of MPP `charge` payers from `account` (funded), within
    /// [`max_sponsored_fee`](Self::max_sponsored_fee).
    pub fn fee_payer(mut self, account: Keypair) -> Self {
        self.fee_payer = Some(account);
        self
    }

    /// The most a sponsored `charge` transaction may cost, in stroops (default
    /// [`DEFAULT_MAX_SPONSORED_FEE`]).
    pub fn max_sponsored_fee(mut self, stroops: u32) -> Self {
        self.max_sponsored_fee = stroops;
        self
    }

    /// Offers MPP `channel`: vouchers on channels paying `recipient` (`pay_to`'s key, which
    /// closes them), kept in `store`.
    pub fn channel(mut self, recipient: Keypair, store: Arc<dyn ChannelStore>) -> Self {
        self.channel = Some((recipient, store));
        self
    }

    /// Where the nodes serving the channels take turns closing them
    /// ([`StellarChannelBuilder::leases`](crate::mpp::StellarChannelBuilder::leases)).
    pub fn leases(mut self, leases: Arc<dyn Leases>) -> Self {
        self.leases = Some(leases);
        self
    }

    /// Checks the settings, builds the schemes, and resumes the channels the store kept.
    ///
    /// # Errors
    ///
    /// [`SellerError`]: settings that do not fit together, a scheme's refusal, or the channel
    /// store's error.
    pub async fn build(self) -> Result<Seller, SellerError> {
        let SellerBuilder {
            network,
            pay_to,
            asset,
            rpc,
            facilitator,
            max_timeout_seconds,
            keys,
            realm,
            fee_payer,
            max_sponsored_fee,
            channel,
            leases,
        } = self;
        let asset = match asset {
            Some(asset) => asset,
            None => network.usdc().ok_or(SellerError::NoAsset)?,
        };
        if keys.is_none() && (fee_payer.is_some() || channel.is_some()) {
            return Err(SellerError::NoChallengeKeys);
        }
        if facilitator.is_none() && keys.is_none() {
            return Err(SellerError::NothingOffered);
        }
        if keys.is_some() && rpc.is_none() {
            return Err(SellerError::NoRpc);
        }
        if channel
            .as_ref()
            .is_some_and(|(recipient, _)| recipient.address() != pay_to)
        {
            return Err(SellerError::ChannelRecipient);
        }
        let exact = match facilitator {
            Some(facilitator) => {
                let mut exact =
                    Exact::builder_shared(network.clone(), pay_to, facilitator).asset(asset);
                if let Some(seconds) = max_timeout_seconds {
                    exact = exact.max_timeout_seconds(seconds);
                }
                if let Some(rpc) = &rpc {
                    exact = exact.rpc(rpc.clone());
                }
                Some(Arc::new(exact.build()?))
            }
            None => None,
        };
        let (mut charge, mut channel_scheme) = (None, None);
        if let (Some(keys), Some(rpc)) = (keys, rpc) {
            let mut builder =
                StellarCharge::builder(network.clone(), pay_to, rpc.clone(), keys.clone())
                    .currency(asset);
            if let Some(realm) = &realm {
                builder = builder.realm(realm.clone());
            }
            if let Some(account) = fee_payer {
                let sponsor = Sponsor::new(
                    rpc.clone(),
                    network.clone(),
                    vec![account],
                    None,
                    max_sponsored_fee,
                )?;
                builder = builder.sponsor(Arc::new(sponsor));
            }
            charge = Some(Arc::new(builder.build()?));
            if let Some((recipient, store)) = channel {
                let mut builder =
                    StellarChannel::builder(network.clone(), recipient, rpc, keys, store)
                        .currency(asset);
                if let Some(realm) = realm {
                    builder = builder.realm(realm);
                }
                if let Some(leases) = leases {
                    builder = builder.leases(leases);
                }
                let scheme = Arc::new(builder.build()?);
                scheme.resume().await?;
                channel_scheme = Some(scheme);
            }
        }
        Ok(Seller {
            network,
            pay_to,
            asset,
            exact,
            charge,
            channel: channel_scheme,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mpp::ChallengeSecret;
    use crate::stellar::JsonRpcClient;
    use crate::store::MemoryChannelStore;

    fn keys() -> ChallengeKeys {
        ChallengeKeys::new(ChallengeSecret::new("a server secret of at least 32 bytes").unwrap())
    }

    fn rpc() -> Arc<dyn SorobanRpc> {
        Arc::new(
            JsonRpcClient::builder("https://rpc.invalid")
                .build()
                .unwrap(),
        )
    }

    fn payee() -> Keypair {
        Keypair::from_seed([7; 32])
    }

    fn store() -> Arc<dyn ChannelStore> {
        Arc::new(MemoryChannelStore::new())
    }

    fn refused(builder: SellerBuilder) -> SellerError {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime
            .block_on(builder.build())
            .expect_err("the builder refuses")
    }

    #[test]
    fn settings_that_do_not_fit_are_refused() {
        let builder = || Seller::builder(Network::testnet(), payee().address());
        assert!(matches!(refused(builder()), SellerError::NothingOffered));
        assert!(matches!(
            refused(builder().challenge_keys(keys())),
            SellerError::NoRpc
        ));
        assert!(matches!(
            refused(builder().rpc(rpc()).fee_payer(payee())),
            SellerError::NoChallengeKeys
        ));
        assert!(matches!(
            refused(builder().rpc(rpc()).channel(payee(), store())),
            SellerError::NoChallengeKeys
        ));
        let stranger = Keypair::from_seed([9; 32]);
        assert!(matches!(
            refused(
                builder()
                    .rpc(rpc())
                    .challenge_keys(keys())
                    .channel(stranger, store())
            ),
            SellerError::ChannelRecipient
        ));
        let local = Network::custom("stellar:local", "Standalone Network ; February 2017").unwrap();
        assert!(matches!(
            refused(
                Seller::builder(local, payee().address())
                    .rpc(rpc())
                    .challenge_keys(keys())
            ),
            SellerError::NoAsset
        ));
    }

    #[tokio::test]
    async fn mpp_alone_offers_charge_and_channel_in_usdc() {
        let seller = Seller::builder(Network::testnet(), payee().address())
            .rpc(rpc())
            .challenge_keys(keys())
            .realm("api.example.com")
            .fee_payer(Keypair::from_seed([8; 32]))
            .channel(payee(), store())
            .build()
            .await
            .unwrap();
        assert_eq!(Some(seller.asset), Network::testnet().usdc());
        assert!(seller.exact.is_none());
        assert!(seller.charge.is_some() && seller.channel.is_some());
        assert_eq!(seller.schemes().len(), 2);
    }
}
