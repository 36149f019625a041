//! [`StellarChannel`]: the MPP `channel` intent with method `stellar` as a
//! [`PaymentScheme`]. A funder deposits into a one-way payment channel
//! contract once; each request is then paid off-chain with a voucher, the commitment key's
//! signature over the new cumulative amount; the recipient closes the channel on the ledger with
//! the best voucher.
//!
//! | wire | content |
//! |---|---|
//! | challenge `request` | `{"amount": "<price>", "channel": "C…", "methodDetails": {"reference": "<uuid>", "network": "stellar:testnet", "cumulativeAmount": "<highest accepted so far>"}}`, `intent="channel"` |
//! | credential `payload` | `{"action": "voucher" \| "close", "amount": "<new cumulative>", "signature": "<128 hex>"}` (no `source`) |
//! | receipt `reference` | the challenge's `reference` for a voucher, the close transaction's hash for a close |
//!
//! The payer of a voucher ([`Paid::payer`](crate::Paid)) is the account (`G…`) of the channel's
//! commitment key, the key that signs every voucher, and not the channel's funder: a channel
//! created with nothing deposited names its funder without the funder's signature.
//!
//! A voucher is accepted when its signature verifies (`verify_strict`) over the 192-byte
//! commitment for (channel, amount, network) with the channel's commitment key, and, atomically
//! in the [`ChannelStore`]: the channel is open, the amount is above the stored cumulative by at
//! least the price, and no more than the channel's deposit (balance + withdrawn). The store keeps
//! the signature with the amount: it is the money. Refusals carry mppx's problem types
//! (`session/delta-too-small`, `session/amount-exceeds-deposit`, `session/invalid-signature`,
//! `session/channel-finalized` …).
//!
//! Each channel's ledger state (recipient, token, commitment key, refund waiting period,
//! deposit, close) is read when it is [added](StellarChannel::add_channel), then by the
//! watcher, a task the first `add_channel` starts, every
//! [watch period](StellarChannelBuilder::watch_period): when the funder starts a close
//! (`close_start`), the watcher closes the channel with the best voucher before the refund
//! waiting period ends. A channel whose refund waiting period is shorter than
//! [the minimum](StellarChannelBuilder::min_refund_waiting_period) is refused: its funder could
//! take the deposit back before the watcher sees the close. A voucher checked against a state
//! older than four watch periods reads the channel again first. The operator can
//! [settle](StellarChannel::settle_channel) or [close](StellarChannel::close_channel) at any
//! time; a restarted server [resumes](StellarChannel::resume) the channels of its store. `close`
//! and `settle` need the recipient's authorization, so the recipient's key signs and submits
//! them (its account pays the fee unless a fee-bump account does).
//!
//! A 402 offers one challenge per open channel served, at most
//! [`max_offers`](StellarChannelBuilder::max_offers) of them; a client names its own with the
//! request header `Payment-Channel: C…` to get only its challenge. Each offer shows the
//! channel's cumulative amount. Run one server (one store) per recipient: two servers with
//! their own stores would each credit the same voucher.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tower_paywall::mpp::{ChallengeKeys, ChallengeSecret, StellarChannel};
//! use tower_paywall::stellar::{JsonRpcClient, Keypair, Network};
//! use tower_paywall::store::FileChannelStore;
//! use tower_paywall::{PaymentLayer, Price};
//!
//! let rpc = Arc::new(JsonRpcClient::builder("https://soroban-testnet.example").build()?);
//! let recipient: Keypair = std::env::var("RECIPIENT_SECRET")?.parse()?;
//! let keys = ChallengeKeys::new(ChallengeSecret::new(std::env::var("MPP_SECRET")?)?);
//! let store = Arc::new(FileChannelStore::open("/var/lib/my-api/channels")?);
//! let channels = Arc::new(
//!     StellarChannel::builder(Network::testnet(), recipient, rpc, keys, store)
//!         .watch_period(Duration::from_secs(5))
//!         .build()?,
//! );
//! channels.resume().await?; // the channels of an earlier run
//! channels.add_channel("CDLZFC3SYJYDZT7K67VZ75HPJVIEUVNIXF47ZG2FB2RMQQVU2HHGCYSC".parse()?).await?;
//! let layer = PaymentLayer::builder()
//!     .shared_scheme(channels.clone())
//!     .price(Price::parse("0.001")?)
//!     .build()?;
//! # Ok(()) }
//! ```

mod close;
pub(crate) mod credit;
mod ledger;
mod voucher;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use http::HeaderMap;
use serde_json::{Map, Value, json};

pub use ledger::{CLOSE_LEASE, ChannelError, close_lease};

use self::voucher::{Action, Voucher};
use super::binding::ChallengeKeys;
use super::challenge::Challenge as MppChallenge;
use super::expires::DEFAULT_CHALLENGE_TTL;
use super::problem::ProblemCode;
use super::server::{self, Issuer, busy, problem};
use crate::BoxFuture;
use crate::price::Price;
use crate::scheme::{
    Challenge, ChallengeContext, Credential, Intent, Offer, PaymentContext, PaymentScheme,
    Rejection, SettleOutcome, Verified,
};
use crate::stellar::rpc::SorobanRpc;
use crate::stellar::{
    Address, ChannelInfo, Keypair, Network, Sponsor, SponsorError, VerifyingKey, commitment_bytes,
};
use crate::store::{
    ChannelId, ChannelState, ChannelStore, LeaseHolder, Leases, PaymentStore, StoreError,
};

const INTENT: &str = "channel";
/// The default ceiling on a close or settle transaction's fee, in stroops.
const DEFAULT_MAX_FEE: u32 = 2_000_000;
/// The default watch period.
const DEFAULT_WATCH_PERIOD: Duration = Duration::from_secs(5);
/// The default minimum refund waiting period: 10 minutes of 5-second ledgers.
const DEFAULT_MIN_REFUND_PERIOD: u32 = 120;
/// The default number of channels offered in one 402.
const DEFAULT_MAX_OFFERS: usize = 8;
/// How often a metered stream waiting for credit reads the store (a voucher paid ahead on
/// another node).
const METERED_POLL: Duration = Duration::from_millis(250);
/// The request header naming the client's channels.
pub const PAYMENT_CHANNEL: http::HeaderName = http::HeaderName::from_static("payment-channel");

/// The MPP `channel` intent on Stellar (see the [module docs](self)).
pub struct StellarChannel {
    network: Network,
    currency: Address,
    /// `currency` as text, as every verified voucher names it.
    asset: String,
    recipient: Address,
    realm: Option<String>,
    keys: ChallengeKeys,
    ttl: Duration,
    rpc: Arc<dyn SorobanRpc>,
    store: Arc<dyn ChannelStore>,
    /// Submits the recipient's close and settle calls, from the recipient's account.
    submitter: Sponsor,
    /// The channels served, with their ledger state as last read.
    channels: Arc<RwLock<HashMap<ChannelId, Arc<Served>>>>,
    /// Channels with a close or settle transaction in flight.
    submitting: Mutex<HashSet<ChannelId>>,
    /// The close leases, shared by the nodes that serve the channels.
    leases: Arc<dyn Leases>,
    /// This scheme's name as a lease holder.
    holder: LeaseHolder,
    references: AtomicU64,
    watch_period: Duration,
    min_refund_period: u32,
    max_offers: usize,
    watcher: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Set once the RPC's network was checked against ours.
    network_checked: OnceLock<()>,
    /// Per channel, a count of the vouchers paid ahead on it: wakes this node's metered
    /// streams waiting for credit (other nodes' poll the store). A stream's receiver sees every
    /// voucher paid after it was made, so none is missed between a look and a wait.
    paid_ahead: Mutex<HashMap<ChannelId, tokio::sync::watch::Sender<u64>>>,
}

/// Builds a [`StellarChannel`].
#[must_use]
pub struct StellarChannelBuilder {
    network: Network,
    recipient: Keypair,
    keys: ChallengeKeys,
    rpc: Arc<dyn SorobanRpc>,
    store: Arc<dyn ChannelStore>,
    currency: Option<Address>,
    realm: Option<String>,
    ttl: Duration,
    fee_bump: Option<Keypair>,
    max_fee: u32,
    watch_period: Duration,
    min_refund_period: u32,
    max_offers: usize,
    leases: Option<Arc<dyn Leases>>,
}

/// Why a [`StellarChannelBuilder`] refused to build.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StellarChannelError {
    /// No currency was set and the network has no known USDC contract.
    #[error("no currency set, and the network has no known USDC contract")]
    NoCurrency,
    /// The currency is not a contract address.
    #[error("the currency must be a contract (C…) address")]
    CurrencyNotContract,
    /// The challenge lifetime is zero or above one hour.
    #[error("the challenge lifetime must be between 1 s and 1 h")]
    Ttl,
    /// The watch period is zero or above one hour.
    #[error("the watch period must be between 1 ms and 1 h")]
    WatchPeriod,
    /// No channel could be offered.
    #[error("at least one channel must be offered")]
    MaxOffers,
    /// The recipient's submitter could not be set up.
    #[error(transparent)]
    Submitter(#[from] SponsorError),
}

impl StellarChannel {
    /// Starts a builder: vouchers on channels paying `recipient` on `network`, whose state is
    /// kept in `store`, read and closed through `rpc`, with challenge ids bound by `keys`. The
    /// recipient's key signs the channels' close and settle calls.
    pub fn builder(
        network: Network,
        recipient: Keypair,
        rpc: Arc<dyn SorobanRpc>,
        keys: ChallengeKeys,
        store: Arc<dyn ChannelStore>,
    ) -> StellarChannelBuilder {
        StellarChannelBuilder {
            network,
            recipient,
            keys,
            rpc,
            store,
            currency: None,
            realm: None,
            ttl: DEFAULT_CHALLENGE_TTL,
            fee_bump: None,
            max_fee: DEFAULT_MAX_FEE,
            watch_period: DEFAULT_WATCH_PERIOD,
            min_refund_period: DEFAULT_MIN_REFUND_PERIOD,
            max_offers: DEFAULT_MAX_OFFERS,
            leases: None,
        }
    }
}

impl StellarChannelBuilder {
    /// The token the channels must hold (default: the network's USDC).
    pub fn currency(mut self, currency: Address) -> Self {
        self.currency = Some(currency);
        self
    }

    /// The protection space (default: the request's host).
    pub fn realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = Some(realm.into());
        self
    }

    /// How long a challenge stays valid (default 5 minutes).
    pub fn challenge_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// An account that pays the close and settle transactions' fees (a fee bump) instead of
    /// the recipient's.
    pub fn fee_bump(mut self, account: Keypair) -> Self {
        self.fee_bump = Some(account);
        self
    }

    /// The most a close or settle transaction may cost, in stroops (default 2 000 000).
    pub fn max_fee(mut self, stroops: u32) -> Self {
        self.max_fee = stroops;
        self
    }

    /// How often the watcher reads the served channels (default 5 s). A funder's close is
    /// seen within one period.
    pub fn watch_period(mut self, period: Duration) -> Self {
        self.watch_period = period;
        self
    }

    /// The shortest refund waiting period a served channel may have, in ledgers (default 120:
    /// 10 minutes). It must leave the watcher time to see a funder's close and to get its own
    /// close in: several watch periods plus a minute.
    pub fn min_refund_waiting_period(mut self, ledgers: u32) -> Self {
        self.min_refund_period = ledgers;
        self
    }

    /// The most channels one 402 offers (default 8).
    pub fn max_offers(mut self, channels: usize) -> Self {
        self.max_offers = channels;
        self
    }

    /// Where the nodes serving these channels take turns closing them (default: leases of this
    /// process alone). Give every node the same shared leases, such as the `redis` feature's
    /// `RedisStore::leases`, beside the same channel store: then one node answers a funder's
    /// close and submits each close (see [`close_lease`]).
    pub fn leases(mut self, leases: Arc<dyn Leases>) -> Self {
        self.leases = Some(leases);
        self
    }

    /// Checks the settings and builds the scheme. Add the channels to serve with
    /// [`StellarChannel::add_channel`].
    pub fn build(self) -> Result<StellarChannel, StellarChannelError> {
        let currency = match self.currency {
            Some(currency) => currency,
            None => self.network.usdc().ok_or(StellarChannelError::NoCurrency)?,
        };
        if !currency.is_contract() {
            return Err(StellarChannelError::CurrencyNotContract);
        }
        if self.ttl.is_zero() || self.ttl > Duration::from_secs(3600) {
            return Err(StellarChannelError::Ttl);
        }
        if self.watch_period.is_zero() || self.watch_period > Duration::from_secs(3600) {
            return Err(StellarChannelError::WatchPeriod);
        }
        if self.max_offers == 0 {
            return Err(StellarChannelError::MaxOffers);
        }
        let recipient = self.recipient.address();
        let submitter = Sponsor::new(
            self.rpc.clone(),
            self.network.clone(),
            vec![self.recipient],
            self.fee_bump,
            self.max_fee,
        )?;
        Ok(StellarChannel {
            network: self.network,
            asset: currency.to_string(),
            currency,
            recipient,
            realm: self.realm,
            keys: self.keys,
            ttl: self.ttl,
            rpc: self.rpc,
            store: self.store,
            submitter,
            channels: Arc::new(RwLock::new(HashMap::new())),
            submitting: Mutex::new(HashSet::new()),
            leases: self
                .leases
                .unwrap_or_else(|| Arc::new(crate::store::MemoryLeases::new())),
            holder: LeaseHolder::unique(),
            references: AtomicU64::new(0),
            watch_period: self.watch_period,
            min_refund_period: self.min_refund_period,
            max_offers: self.max_offers,
            watcher: Mutex::new(None),
            network_checked: OnceLock::new(),
            paid_ahead: Mutex::new(HashMap::new()),
        })
    }
}

/// A served channel: its ledger state as last read, and its commitment key decoded.
struct Served {
    info: ChannelInfo,
    /// `None` when the ledger's key is not a curve point: no voucher can verify.
    key: Option<VerifyingKey>,
    /// The account of the commitment key as text: the payer of every voucher. (Not the
    /// funder: a channel names its funder without the funder's signature when nothing is
    /// deposited at creation, while every voucher is signed by the commitment key.)
    payer: String,
    /// When `info` was read.
    read_at: Instant,
}

/// The payer of a channel's vouchers: the account (`G…`) of the key that signs them.
fn voucher_signer(info: &ChannelInfo) -> String {
    Address::Account(info.commitment_key).to_string()
}

impl Served {
    /// Just read.
    fn new(info: ChannelInfo, key: Option<VerifyingKey>) -> Arc<Served> {
        Arc::new(Served {
            payer: voucher_signer(&info),
            info,
            key,
            read_at: Instant::now(),
        })
    }
}

/// A verified voucher, waiting for its compare-and-set.
struct ChannelVerified {
    channel: ChannelId,
    voucher: Voucher,
    reference: String,
    /// The challenge answered (a metered stream's receipts name it).
    challenge_id: String,
    /// The price is per unit of a metered response: the voucher pays ahead.
    metered: bool,
}

/// What the echoed challenge request says, once pinned.
struct Pinned {
    channel: ChannelId,
    reference: String,
}

impl StellarChannel {
    fn issuer(&self) -> Issuer<'_> {
        Issuer {
            keys: &self.keys,
            realm: self.realm.as_deref(),
            intent: INTENT,
            ttl: self.ttl,
        }
    }

    /// The cached ledger state of `channel`, if it is served.
    fn served(&self, channel: ChannelId) -> Option<Arc<Served>> {
        self.channels
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&channel)
            .cloned()
    }

    fn info(&self, channel: ChannelId) -> Option<ChannelInfo> {
        self.served(channel).map(|served| served.info.clone())
    }

    /// The channels served, in id order.
    pub fn channels(&self) -> Vec<ChannelId> {
        let mut all: Vec<ChannelId> = self
            .channels
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .keys()
            .copied()
            .collect();
        all.sort();
        all
    }

    /// The stored state of `channel`: its best voucher and phase.
    ///
    /// # Errors
    ///
    /// The store's.
    pub async fn state(&self, channel: ChannelId) -> Result<ChannelState, StoreError> {
        Ok(self.store.load(channel).await?.unwrap_or(ChannelState::NEW))
    }

    /// A fresh reference for a challenge: a version-4-shaped UUID from the clock, the process
    /// and a counter (unique, not secret).
    fn reference(&self) -> String {
        let count = self.references.fetch_add(1, Ordering::Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&(now as u64).to_be_bytes());
        bytes[8..12].copy_from_slice(&std::process::id().to_be_bytes());
        bytes[12..].copy_from_slice(&(count as u32).to_be_bytes());
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        let hex = hex::encode(bytes);
        format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        )
    }

    /// The challenge request for `price` on `channel`, whose cumulative amount is `cumulative`
    /// (with `unitType` when the price is per unit).
    fn request(&self, price: &Price, channel: ChannelId, cumulative: i128) -> Map<String, Value> {
        let mut request = json!({
            "amount": price.amount().to_atomic_string(),
            "channel": channel.to_string(),
            "methodDetails": {
                "reference": self.reference(),
                "network": self.network.caip2(),
                "cumulativeAmount": cumulative.to_string(),
            },
        });
        if let (Some(unit), Some(map)) = (price.unit(), request.as_object_mut()) {
            map.insert("unitType".into(), unit.name().into());
        }
        match request {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    /// The parts of an echoed request this route pins: the price, the network, a channel.
    fn pin(&self, echo: &MppChallenge, price: &Price) -> Option<Pinned> {
        // Read into a struct of borrowed text, not a map: this runs for every paid request.
        #[derive(serde::Deserialize)]
        struct Request<'a> {
            #[serde(borrow)]
            amount: Cow<'a, str>,
            #[serde(borrow)]
            channel: Cow<'a, str>,
            #[serde(borrow, rename = "methodDetails")]
            details: Details<'a>,
        }
        #[derive(serde::Deserialize)]
        struct Details<'a> {
            #[serde(borrow)]
            reference: Cow<'a, str>,
            #[serde(borrow)]
            network: Cow<'a, str>,
        }
        let bytes = super::base64url::decode(&echo.request).ok()?;
        let request: Request<'_> = serde_json::from_slice(&bytes).ok()?;
        let priced = request.amount == price.amount().to_atomic_string();
        if !(priced && request.details.network == self.network.caip2()) {
            return None;
        }
        Some(Pinned {
            channel: request.channel.parse().ok()?,
            reference: request.details.reference.into_owned(),
        })
    }

    /// Checks a voucher against the channel's stored and ledger state, and its signature;
    /// returns the payer (the commitment key's account) as text.
    async fn check_voucher(
        &self,
        channel: ChannelId,
        voucher: &Voucher,
        price: i128,
    ) -> Result<String, Rejection> {
        let mut served = self
            .served(channel)
            .ok_or_else(|| problem(ProblemCode::ChannelNotFound))?;
        if served.read_at.elapsed() > self.watch_period * 4 {
            // The watcher is behind: a close may have started since.
            self.refresh_for_request(channel).await?;
            served = self
                .served(channel)
                .ok_or_else(|| problem(ProblemCode::ChannelNotFound))?;
        }
        if served.info.close_effective_at.is_some() {
            return Err(problem(ProblemCode::ChannelFinalized));
        }
        let state = self.state(channel).await.map_err(|error| {
            tracing::error!(%error, "channel store unavailable");
            busy()
        })?;
        let accepted = voucher.accept(&state, price, served.info.deposited());
        if let Err(code @ ProblemCode::DeltaTooSmall | code @ ProblemCode::ChannelFinalized) =
            accepted
        {
            return Err(problem(code));
        }
        let bytes = commitment_bytes(&self.network.id(), &channel.address(), voucher.amount)
            .map_err(|_| problem(ProblemCode::ChannelNotFound))?;
        let signed = served.key.as_ref();
        if !signed.is_some_and(|key| key.verify(&bytes, &voucher.signature)) {
            return Err(problem(ProblemCode::InvalidSignature));
        }
        if accepted != Err(ProblemCode::AmountExceedsDeposit) {
            return accepted.map(|_| served.payer.clone()).map_err(problem);
        }
        // The cached deposit may predate a top-up: read it again, once.
        let info = self.refresh_for_request(channel).await?;
        if info.close_effective_at.is_some() {
            return Err(problem(ProblemCode::ChannelFinalized));
        }
        voucher
            .accept(&state, price, info.deposited())
            .map(|_| voucher_signer(&info))
            .map_err(problem)
    }

    /// Stores the voucher if the channel still accepts it: compare-and-set against the state
    /// it was checked with, again until it is stored or refused.
    async fn credit(
        &self,
        channel: ChannelId,
        voucher: &Voucher,
        price: i128,
    ) -> Result<(Option<ChannelState>, ChannelState), Rejection> {
        let deposited = self
            .info(channel)
            .ok_or_else(|| problem(ProblemCode::ChannelNotFound))?
            .deposited();
        let unavailable = |error: StoreError| {
            tracing::error!(%error, "channel store unavailable");
            busy()
        };
        loop {
            let current = self.store.load(channel).await.map_err(unavailable)?;
            let next = voucher
                .accept(&current.unwrap_or(ChannelState::NEW), price, deposited)
                .map_err(problem)?;
            if self
                .store
                .compare_and_set(channel, current, next)
                .await
                .map_err(unavailable)?
            {
                return Ok((current, next));
            }
        }
    }
}

impl PaymentScheme for StellarChannel {
    fn intent(&self) -> Intent {
        Intent::MPP_CHANNEL
    }

    fn read(&self, headers: &HeaderMap) -> Option<Result<Credential, Rejection>> {
        server::read(headers, INTENT)
    }

    fn offer<'a>(
        &'a self,
        price: &'a Price,
        request: &'a http::request::Parts,
    ) -> BoxFuture<'a, Result<Offer, Rejection>> {
        Box::pin(async move {
            let named = named_channels(&request.headers);
            let mut challenges = Vec::new();
            for channel in self.channels() {
                if challenges.len() == self.max_offers {
                    break;
                }
                if named
                    .as_ref()
                    .is_some_and(|named| !named.contains(&channel))
                {
                    continue;
                }
                let open = self
                    .info(channel)
                    .is_some_and(|info| info.close_effective_at.is_none());
                let Ok(state) = self.state(channel).await else {
                    continue;
                };
                if !open || state.phase != crate::store::ChannelPhase::Open {
                    continue;
                }
                let body = self.request(price, channel, state.cumulative);
                challenges.push(self.issuer().issue(price, request, &body)?);
            }
            if challenges.is_empty() {
                return Err(problem(ProblemCode::ChannelNotFound));
            }
            Ok(Offer::new(Intent::MPP_CHANNEL, challenges))
        })
    }

    fn challenge(
        &self,
        offers: &[&Offer],
        context: &ChallengeContext<'_>,
        challenge: &mut Challenge,
    ) {
        server::render(offers, context, challenge);
    }

    fn verify<'a>(
        &'a self,
        credential: &'a Credential,
        context: PaymentContext<'a>,
    ) -> BoxFuture<'a, Result<Verified, Rejection>> {
        Box::pin(async move {
            let mpp = server::credential(credential)?;
            let mut pinned = None;
            self.issuer()
                .check(&mpp.challenge, context.request, |echo| {
                    pinned = self.pin(echo, context.price);
                    pinned.is_some()
                })?;
            let Pinned { channel, reference } =
                pinned.ok_or_else(|| problem(ProblemCode::InvalidChallenge))?;
            let voucher = Voucher::parse(&mpp.payload).map_err(problem)?;
            let price = context.price.amount().atomic();
            let payer = self.check_voucher(channel, &voucher, price).await?;
            Ok(Verified::new(
                payer,
                context.price.amount(),
                self.asset.clone(),
                ChannelVerified {
                    channel,
                    voucher,
                    reference,
                    challenge_id: mpp.challenge.id.clone(),
                    metered: context.price.unit().is_some(),
                },
            ))
        })
    }

    fn metering(&self) -> Option<&dyn crate::scheme::Metering> {
        Some(self)
    }

    /// A challenge answered by another credential before: it is used up.
    fn reused(&self) -> Rejection {
        problem(ProblemCode::InvalidChallenge)
    }

    fn settle(
        self: Arc<Self>,
        verified: Arc<Verified>,
        _store: Arc<dyn PaymentStore>,
    ) -> BoxFuture<'static, SettleOutcome> {
        let Some(action) = verified
            .detail::<ChannelVerified>()
            .map(|detail| detail.voucher.action)
        else {
            let rejection = problem(ProblemCode::VerificationFailed);
            return Box::pin(std::future::ready(SettleOutcome::Rejected(rejection)));
        };
        // Two futures: a voucher's stays small (the close's transaction is not part of it).
        match action {
            Action::Voucher => Box::pin(async move {
                let Some(detail) = verified.detail::<ChannelVerified>() else {
                    return SettleOutcome::Rejected(problem(ProblemCode::VerificationFailed));
                };
                let price = verified.amount().atomic();
                let credited = if detail.metered {
                    self.pay_ahead_with(detail.channel, &detail.voucher).await
                } else {
                    self.credit(detail.channel, &detail.voucher, price)
                        .await
                        .map(|_| ())
                };
                match credited {
                    Ok(()) => SettleOutcome::Settled(server::receipt(detail.reference.clone())),
                    Err(rejection) => SettleOutcome::Rejected(rejection),
                }
            }),
            Action::Close => Box::pin(self.settle_close(verified)),
        }
    }

    /// A close's channel, amount and reference (vouchers settle in the store, with no outcome
    /// to find out).
    fn evidence(&self, verified: &Verified) -> bytes::Bytes {
        match verified.detail::<ChannelVerified>() {
            Some(detail) if detail.voucher.action == Action::Close => {
                let evidence = close::CloseEvidence {
                    channel: detail.channel,
                    cumulative: detail.voucher.amount,
                    reference: detail.reference.clone(),
                };
                bytes::Bytes::from(evidence.encode())
            }
            _ => bytes::Bytes::new(),
        }
    }

    /// How a close ended, from the contract's state (see `close`).
    fn reconcile<'a>(
        &'a self,
        pending: &'a crate::store::PendingSettlement,
    ) -> BoxFuture<'a, crate::scheme::Reconciled> {
        Box::pin(async move {
            match close::CloseEvidence::decode(&pending.evidence) {
                Some(evidence) => self.reconcile_close(&evidence).await,
                None => crate::scheme::Reconciled::Unknown,
            }
        })
    }
}

impl StellarChannel {
    /// The count of vouchers paid ahead on `channel`, to watch.
    fn paid_ahead(&self, channel: ChannelId) -> tokio::sync::watch::Receiver<u64> {
        self.paid_ahead
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(channel)
            .or_insert_with(|| tokio::sync::watch::channel(0).0)
            .subscribe()
    }

    /// Stores a voucher paying ahead on `channel` (its increase becomes credit) and wakes the
    /// streams waiting on it.
    async fn pay_ahead_with(&self, channel: ChannelId, voucher: &Voucher) -> Result<(), Rejection> {
        let deposited = self
            .info(channel)
            .ok_or_else(|| problem(ProblemCode::ChannelNotFound))?
            .deposited();
        let stored = credit::update(&*self.store, channel, |state| {
            credit::pay_ahead(voucher, state, deposited).map(|next| (next, ()))
        })
        .await;
        match stored {
            Ok(_) => {
                let counts = self
                    .paid_ahead
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some(count) = counts.get(&channel) {
                    count.send_modify(|count| *count += 1);
                }
                Ok(())
            }
            Err(credit::CreditError::Refused(code)) => Err(problem(code)),
            Err(credit::CreditError::Store(error)) => {
                tracing::error!(%error, "channel store unavailable");
                Err(busy())
            }
        }
    }
}

impl crate::scheme::Metering for StellarChannel {
    fn credit(&self, verified: &Verified) -> Option<Arc<dyn crate::scheme::CreditSource>> {
        let detail = verified.detail::<ChannelVerified>()?;
        let info = self.info(detail.channel)?;
        Some(Arc::new(credit::ChannelCredit {
            store: self.store.clone(),
            channel: detail.channel,
            paid: tokio::sync::Mutex::new(self.paid_ahead(detail.channel)),
            poll: METERED_POLL,
            deposit: {
                let (channels, channel, read) =
                    (self.channels.clone(), detail.channel, info.deposited());
                Box::new(move || {
                    let channels = channels
                        .read()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    channels
                        .get(&channel)
                        .map_or(read, |served| served.info.deposited())
                })
            },
            intent: INTENT,
            challenge_id: detail.challenge_id.clone(),
        }))
    }

    fn pay_ahead<'a>(
        &'a self,
        credential: &'a Credential,
        request: &'a http::request::Parts,
        price: &'a Price,
    ) -> BoxFuture<'a, Result<crate::scheme::Receipt, Rejection>> {
        Box::pin(async move {
            let mpp = server::credential(credential)?;
            // The voucher echoes the challenge the stream was opened with.
            let mut pinned = None;
            self.issuer()
                .check_stream(&mpp.challenge, request, |echo| {
                    pinned = self.pin(echo, price);
                    pinned.is_some()
                })?;
            let Pinned { channel, reference } =
                pinned.ok_or_else(|| problem(ProblemCode::InvalidChallenge))?;
            let voucher = Voucher::parse(&mpp.payload).map_err(problem)?;
            if voucher.action != voucher::Action::Voucher {
                return Err(problem(ProblemCode::InvalidPayload));
            }
            // Any increase pays ahead; the signature is checked as for any voucher.
            self.check_voucher(channel, &voucher, 1).await?;
            self.pay_ahead_with(channel, &voucher).await?;
            Ok(server::receipt(reference))
        })
    }
}

impl StellarChannel {
    /// Settles a `close`: stores its voucher and closes the channel with it.
    async fn settle_close(self: Arc<Self>, verified: Arc<Verified>) -> SettleOutcome {
        let Some(detail) = verified.detail::<ChannelVerified>() else {
            return SettleOutcome::Rejected(problem(ProblemCode::VerificationFailed));
        };
        let price = verified.amount().atomic();
        let channel = detail.channel;
        // A close: the channel's in-flight mark first, so that no other close runs (or
        // undoes this one) between the voucher's compare-and-set and the transaction.
        let guard = match self.in_flight(channel).await {
            Ok(guard) => guard,
            // The lease could not be asked: nothing happened, try again.
            Err(ChannelError::Store(error)) => {
                tracing::error!(%error, %channel, "channel leases unavailable");
                return SettleOutcome::Rejected(busy());
            }
            // Another close of the channel is under way.
            Err(_) => return SettleOutcome::Rejected(problem(ProblemCode::ChannelFinalized)),
        };
        let (previous, closing) = match self.credit(channel, &detail.voucher, price).await {
            Ok(credited) => credited,
            Err(rejection) => return SettleOutcome::Rejected(rejection),
        };
        let revert = previous.unwrap_or(ChannelState::NEW);
        match self
            .finish_close(&guard, channel, closing, Some(revert))
            .await
        {
            Ok(hash) => SettleOutcome::Settled(server::receipt(hash.to_string())),
            Err(ChannelError::Unknown(error)) => {
                SettleOutcome::Unknown(server::unavailable(&error))
            }
            Err(error) => {
                tracing::warn!(%error, %channel, "channel close failed");
                SettleOutcome::Rejected(problem(ProblemCode::SettlementFailed))
            }
        }
    }
}

/// The most channels read from one request's `Payment-Channel`.
pub const MAX_NAMED_CHANNELS: usize = 16;

/// The channels a request names in `Payment-Channel` (comma-separated `C…` addresses, over any
/// number of field lines), if it names any: the first [`MAX_NAMED_CHANNELS`] that parse;
/// anything else is skipped.
pub fn named_channels(headers: &HeaderMap) -> Option<Vec<ChannelId>> {
    let named: Vec<ChannelId> = headers
        .get_all(PAYMENT_CHANNEL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| name.trim().parse().ok())
        .take(MAX_NAMED_CHANNELS)
        .collect();
    (!named.is_empty()).then_some(named)
}

impl std::fmt::Debug for StellarChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StellarChannel")
            .field("network", &self.network.caip2())
            .field("currency", &self.currency)
            .field("recipient", &self.recipient)
            .field("channels", &self.channels().len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_channels_are_bounded_and_skip_what_does_not_parse() {
        let names: Vec<String> = (0..20_u8)
            .map(|n| ChannelId([n; 32]).address().to_string())
            .collect();
        let mut headers = HeaderMap::new();
        headers.append(
            PAYMENT_CHANNEL,
            http::HeaderValue::from_bytes(b"\xff, not-a-channel").unwrap(),
        );
        headers.append(
            PAYMENT_CHANNEL,
            format!(
                "GB2Q4VZJ32UM4F2EMZR2QVKT4YHIAKGBEV2UDYH7Q6DOZ6KCX5KHSBNB, {}",
                names.join(" , ")
            )
            .parse()
            .unwrap(),
        );
        let named = named_channels(&headers).unwrap();
        assert_eq!(named.len(), MAX_NAMED_CHANNELS);
        assert_eq!(named[0], ChannelId([0; 32]));
        assert_eq!(named_channels(&HeaderMap::new()), None);
        let mut garbage = HeaderMap::new();
        garbage.insert(PAYMENT_CHANNEL, http::HeaderValue::from_static("a, b"));
        assert_eq!(named_channels(&garbage), None);
    }
}
