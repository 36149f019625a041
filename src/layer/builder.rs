//! [`PaymentLayer`] and its builder.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::hooks::{Hooks, PaymentHooks};
use super::service::PaymentService;
use crate::price::{FixedPrice, Price, Pricing, SettlementOrder};
use crate::scheme::PaymentScheme;
use crate::store::{MemoryStore, PaymentStore};

/// A tower [`Layer`] that charges for requests (see the [module docs](crate::layer)).
///
/// Cloning is cheap: every clone shares one configuration.
#[derive(Clone)]
pub struct PaymentLayer {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) schemes: Vec<Arc<dyn PaymentScheme>>,
    pub(crate) pricing: Box<dyn Pricing>,
    pub(crate) order: SettlementOrder,
    pub(crate) store: Arc<dyn PaymentStore>,
    pub(crate) settle_wait: Duration,
    pub(crate) retry_after: Duration,
    pub(crate) record_ttl: Duration,
    pub(crate) max_recorded_body: usize,
    pub(crate) voucher_wait: Duration,
    /// The metered WebSockets waiting for their opening voucher (a bound on unpaid sockets).
    #[cfg(feature = "websocket")]
    pub(crate) openings: Arc<tokio::sync::Semaphore>,
    pub(crate) public_url: Option<String>,
    /// At most one reconciliation per payment per `reconcile_interval`.
    pub(crate) reconciling: governor::DefaultKeyedRateLimiter<crate::store::PaymentKey>,
    pub(crate) hooks: Hooks,
}

impl PaymentLayer {
    /// Starts a builder.
    pub fn builder() -> PaymentLayerBuilder {
        PaymentLayerBuilder::default()
    }
}

impl<S> Layer<S> for PaymentLayer {
    type Service = PaymentService<S>;

    fn layer(&self, inner: S) -> PaymentService<S> {
        PaymentService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

impl fmt::Debug for PaymentLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let intents: Vec<_> = self.shared.schemes.iter().map(|s| s.intent()).collect();
        f.debug_struct("PaymentLayer")
            .field("intents", &intents)
            .field("order", &self.shared.order)
            .finish_non_exhaustive()
    }
}

/// Builds a [`PaymentLayer`]; every setting is checked by [`build`](Self::build).
#[must_use]
#[derive(Default)]
pub struct PaymentLayerBuilder {
    schemes: Vec<Arc<dyn PaymentScheme>>,
    pricing: Option<Box<dyn Pricing>>,
    order: SettlementOrder,
    store: Option<Arc<dyn PaymentStore>>,
    settle_wait: Option<Duration>,
    retry_after: Option<Duration>,
    record_ttl: Option<Duration>,
    max_recorded_body: Option<usize>,
    voucher_wait: Option<Duration>,
    public_url: Option<String>,
    reconcile_interval: Option<Duration>,
    #[cfg(feature = "websocket")]
    max_waiting_sockets: Option<usize>,
    hooks: Option<Arc<dyn PaymentHooks>>,
    hook_timeout: Option<Duration>,
}

/// Default time a request waits for its settlement before answering 503 (the settlement goes
/// on and its outcome is kept for the retry).
pub const DEFAULT_SETTLE_WAIT: Duration = Duration::from_secs(30);
/// Default `Retry-After` on 503 answers.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);
/// Default time payment records are kept.
pub const DEFAULT_RECORD_TTL: Duration = Duration::from_secs(3600);
/// Default longest wait for [`PaymentHooks::on_after_verify`]'s verdict.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(2);
/// Default least time between two reconciliations of one payment from the ledger.
pub const DEFAULT_RECONCILE_INTERVAL: Duration = Duration::from_secs(5);
/// Default largest response body recorded for replay to retries.
pub const DEFAULT_MAX_RECORDED_BODY: usize = 1024 * 1024;
/// Default most metered WebSockets of a layer waiting for their opening voucher at once.
#[cfg(feature = "websocket")]
pub const DEFAULT_MAX_WAITING_SOCKETS: usize = 1024;
/// Default longest wait of a metered stream for a voucher, as the MPP session draft suggests.
pub const DEFAULT_VOUCHER_WAIT: Duration = Duration::from_secs(60);

impl PaymentLayerBuilder {
    /// Adds a payment scheme. Offers appear in the 402 in the order schemes are added, unless
    /// the client's `Accept-Payment` orders or filters them (see the [layer
    /// docs](crate::layer#which-protocols-a-402-speaks)).
    pub fn scheme(mut self, scheme: impl PaymentScheme) -> Self {
        self.schemes.push(Arc::new(scheme));
        self
    }

    /// Adds a payment scheme shared with other layers.
    pub fn shared_scheme(mut self, scheme: Arc<dyn PaymentScheme>) -> Self {
        self.schemes.push(scheme);
        self
    }

    /// Charges one fixed price for every request.
    pub fn price(mut self, price: Price) -> Self {
        self.pricing = Some(Box::new(FixedPrice(price)));
        self
    }

    /// Prices each request with a [`Pricing`] hook.
    pub fn pricing(mut self, pricing: impl Pricing) -> Self {
        self.pricing = Some(Box::new(pricing));
        self
    }

    /// When payments are settled (default [`SettlementOrder::AfterSuccess`]); a [`Price`] may
    /// override it per request.
    pub fn order(mut self, order: SettlementOrder) -> Self {
        self.order = order;
        self
    }

    /// Where payments are recorded (default: a new [`MemoryStore`]).
    pub fn store(mut self, store: impl PaymentStore) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// A store shared with other layers.
    pub fn shared_store(mut self, store: Arc<dyn PaymentStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// How long a request waits for its settlement before answering 503 + `Retry-After`
    /// (default [`DEFAULT_SETTLE_WAIT`]). The settlement is not cancelled: its outcome is kept
    /// and answers the retry.
    pub fn settle_wait(mut self, wait: Duration) -> Self {
        self.settle_wait = Some(wait);
        self
    }

    /// The `Retry-After` sent with 503 answers (default [`DEFAULT_RETRY_AFTER`]; whole seconds,
    /// at least one).
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = Some(retry_after);
        self
    }

    /// How long payment records are kept (default [`DEFAULT_RECORD_TTL`]). Retries within it
    /// get the recorded outcome; keep it longer than any payment stays valid.
    pub fn record_ttl(mut self, ttl: Duration) -> Self {
        self.record_ttl = Some(ttl);
        self
    }

    /// The largest response body recorded for replay (default [`DEFAULT_MAX_RECORDED_BODY`]).
    /// Larger or unsized bodies stream through; a retry of such a payment runs the handler again
    /// without settling again.
    pub fn max_recorded_body(mut self, bytes: usize) -> Self {
        self.max_recorded_body = Some(bytes);
        self
    }

    /// How long a metered stream whose credit ran out waits for a voucher before it ends
    /// cleanly with its final receipt (default [`DEFAULT_VOUCHER_WAIT`]; see
    /// [metered streams](crate::layer#metered-streams)).
    pub fn voucher_wait(mut self, wait: Duration) -> Self {
        self.voucher_wait = Some(wait);
        self
    }

    /// How many metered WebSockets may wait for their opening voucher at once (default
    /// [`DEFAULT_MAX_WAITING_SOCKETS`]); an upgrade beyond gets `503` with `Retry-After`. A
    /// socket waits at most 10 s, and stops waiting when it closes.
    #[cfg(feature = "websocket")]
    pub fn max_waiting_sockets(mut self, sockets: usize) -> Self {
        self.max_waiting_sockets = Some(sockets);
        self
    }

    /// The public base URL (`https://api.example.com`) used for the 402's resource URL. Without
    /// it the URL is built from the request's `Host` header.
    pub fn public_url(mut self, url: impl Into<String>) -> Self {
        self.public_url = Some(url.into());
        self
    }

    /// The least time between two reconciliations of one payment whose settlement outcome is
    /// not known (default [`DEFAULT_RECONCILE_INTERVAL`]): retries within it are answered 503
    /// without asking the ledger again. See [reconciliation](crate::layer#reconciliation).
    pub fn reconcile_interval(mut self, interval: Duration) -> Self {
        self.reconcile_interval = Some(interval);
        self
    }

    /// An operator's hooks: told of offers, settlements, failures, unknown outcomes and
    /// reconciliations, and asked after each verification (see [`PaymentHooks`]).
    pub fn hooks(mut self, hooks: impl PaymentHooks) -> Self {
        self.hooks = Some(Arc::new(hooks));
        self
    }

    /// The longest wait for [`PaymentHooks::on_after_verify`]'s verdict (default
    /// [`DEFAULT_HOOK_TIMEOUT`]); past it the payment goes on as allowed.
    pub fn hook_timeout(mut self, timeout: Duration) -> Self {
        self.hook_timeout = Some(timeout);
        self
    }

    /// Checks the settings and builds the layer.
    pub fn build(self) -> Result<PaymentLayer, BuildError> {
        if self.schemes.is_empty() {
            return Err(BuildError::NoScheme);
        }
        let pricing = self.pricing.ok_or(BuildError::NoPricing)?;
        let settle_wait = self.settle_wait.unwrap_or(DEFAULT_SETTLE_WAIT);
        if settle_wait.is_zero() {
            return Err(BuildError::Invalid("settle_wait must be positive"));
        }
        let retry_after = self.retry_after.unwrap_or(DEFAULT_RETRY_AFTER);
        if retry_after.as_secs() == 0 {
            return Err(BuildError::Invalid(
                "retry_after must be at least one second",
            ));
        }
        let record_ttl = self.record_ttl.unwrap_or(DEFAULT_RECORD_TTL);
        if record_ttl < settle_wait {
            return Err(BuildError::Invalid(
                "record_ttl must be at least settle_wait",
            ));
        }
        let public_url = self.public_url.map(validate_public_url).transpose()?;
        let reconcile_interval = self
            .reconcile_interval
            .unwrap_or(DEFAULT_RECONCILE_INTERVAL);
        let quota = governor::Quota::with_period(reconcile_interval)
            .ok_or(BuildError::Invalid("reconcile_interval must be positive"))?;
        let hook_timeout = self.hook_timeout.unwrap_or(DEFAULT_HOOK_TIMEOUT);
        if hook_timeout.is_zero() {
            return Err(BuildError::Invalid("hook_timeout must be positive"));
        }
        super::metrics::describe();
        Ok(PaymentLayer {
            shared: Arc::new(Shared {
                schemes: self.schemes,
                pricing,
                order: self.order,
                store: self.store.unwrap_or_else(|| Arc::new(MemoryStore::new())),
                settle_wait,
                retry_after,
                record_ttl,
                max_recorded_body: self.max_recorded_body.unwrap_or(DEFAULT_MAX_RECORDED_BODY),
                voucher_wait: self.voucher_wait.unwrap_or(DEFAULT_VOUCHER_WAIT),
                #[cfg(feature = "websocket")]
                openings: Arc::new(tokio::sync::Semaphore::new(
                    self.max_waiting_sockets
                        .unwrap_or(DEFAULT_MAX_WAITING_SOCKETS),
                )),
                public_url,
                reconciling: governor::RateLimiter::dashmap(quota),
                hooks: Hooks {
                    hooks: self.hooks,
                    timeout: hook_timeout,
                },
            }),
        })
    }
}

fn validate_public_url(url: String) -> Result<String, BuildError> {
    let trimmed = url.trim_end_matches('/');
    let uri: http::Uri = trimmed.parse().map_err(|_| BuildError::PublicUrl)?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    if !scheme_ok || uri.authority().is_none() || uri.query().is_some() {
        return Err(BuildError::PublicUrl);
    }
    Ok(trimmed.to_owned())
}

impl fmt::Debug for PaymentLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PaymentLayerBuilder")
            .field("schemes", &self.schemes.len())
            .field("order", &self.order)
            .finish_non_exhaustive()
    }
}

/// Why a [`PaymentLayerBuilder`] refused to build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// No payment scheme was added.
    #[error("a payment layer needs at least one payment scheme")]
    NoScheme,
    /// Neither a price nor a pricing hook was set.
    #[error("a payment layer needs a price or a pricing hook")]
    NoPricing,
    /// The public URL is not an absolute http(s) URL without a query.
    #[error("the public URL must be an absolute http(s) URL without a query")]
    PublicUrl,
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    Invalid(&'static str),
}
