//! What the client may pay: preferred intents, allowed networks and assets, a cap per payment
//! and a budget per client. Every check runs before anything is signed (see the
//! [client docs](super) for what is signed and what counts as spent).

use std::sync::Mutex;

use super::offer::PaymentOffer;
use crate::scheme::Intent;

/// What a [`PayingClient`](super::PayingClient) may pay, and in which order it picks offers.
///
/// The default prefers MPP `channel` (no transaction per request), then x402 `exact`, then
/// MPP `charge`; allows any network the client is configured for and any asset; and has no cap
/// and no budget. Set both before letting an agent loose.
///
/// ```
/// use tower_paywall::client::Policy;
/// use tower_paywall::scheme::Intent;
///
/// let policy = Policy::default()
///     .prefer([Intent::X402_EXACT, Intent::MPP_CHARGE])
///     .max_per_payment(10_000_000) // 1 USDC, in atomic units
///     .budget(100_000_000);
/// # let _ = policy;
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct Policy {
    pub(crate) prefer: Vec<Intent>,
    pub(crate) networks: Option<Vec<String>>,
    pub(crate) assets: Option<Vec<String>>,
    pub(crate) max_per_payment: Option<i128>,
    pub(crate) budget: Option<i128>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            prefer: vec![Intent::MPP_CHANNEL, Intent::X402_EXACT, Intent::MPP_CHARGE],
            networks: None,
            assets: None,
            max_per_payment: None,
            budget: None,
        }
    }
}

impl Policy {
    /// The intents to pay with, best first; an intent not listed is never used.
    pub fn prefer(mut self, intents: impl IntoIterator<Item = Intent>) -> Self {
        self.prefer = intents.into_iter().collect();
        self
    }

    /// Only these networks (CAIP-2 ids, e.g. `stellar:testnet`).
    pub fn networks<S: Into<String>>(mut self, networks: impl IntoIterator<Item = S>) -> Self {
        self.networks = Some(networks.into_iter().map(Into::into).collect());
        self
    }

    /// Only these assets (token contract strkeys, `C…`). A channel's asset is fixed when it
    /// is opened, so this does not limit channel vouchers.
    pub fn assets<S: Into<String>>(mut self, assets: impl IntoIterator<Item = S>) -> Self {
        self.assets = Some(assets.into_iter().map(Into::into).collect());
        self
    }

    /// The most one payment may cost, in atomic units.
    pub fn max_per_payment(mut self, atomic: i128) -> Self {
        self.max_per_payment = Some(atomic);
        self
    }

    /// The most the client may spend in all, in atomic units.
    pub fn budget(mut self, atomic: i128) -> Self {
        self.budget = Some(atomic);
        self
    }

    /// Why `offer` may not be paid, or `None` when it may (the budget is checked apart, when
    /// the payment is reserved).
    pub(crate) fn refusal(&self, offer: &PaymentOffer) -> Option<Refusal> {
        if !self.prefer.contains(&offer.intent()) {
            return Some(Refusal::Intent);
        }
        let network = offer.network();
        if let Some(networks) = &self.networks
            && !networks.iter().any(|allowed| allowed == network)
        {
            return Some(Refusal::Network);
        }
        if let (Some(assets), Some(asset)) = (&self.assets, offer.asset())
            && !assets.contains(&asset)
        {
            return Some(Refusal::Asset);
        }
        let Some(amount) = offer.amount().filter(|amount| *amount > 0) else {
            return Some(Refusal::Amount);
        };
        if self.max_per_payment.is_some_and(|cap| amount > cap) {
            return Some(Refusal::OverCap { amount });
        }
        None
    }

    /// The intent's rank, lower first.
    pub(crate) fn rank(&self, intent: Intent) -> usize {
        self.prefer
            .iter()
            .position(|preferred| *preferred == intent)
            .unwrap_or(usize::MAX)
    }
}

/// Why an offer was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    Intent,
    Network,
    Asset,
    Amount,
    OverCap { amount: i128 },
}

/// What a client has spent against its budget: amounts are reserved before signing and given
/// back only when the payment certainly did not happen.
#[derive(Debug, Default)]
pub(crate) struct Spent {
    atomic: Mutex<i128>,
}

impl Spent {
    /// Reserves `amount` if it fits under `budget`; returns whether it did.
    pub(crate) fn reserve(&self, amount: i128, budget: Option<i128>) -> bool {
        let mut spent = self.atomic.lock().unwrap_or_else(|e| e.into_inner());
        let next = spent.saturating_add(amount);
        if budget.is_some_and(|budget| next > budget) {
            return false;
        }
        *spent = next;
        true
    }

    /// Gives back a reservation whose payment was never sent.
    pub(crate) fn release(&self, amount: i128) {
        let mut spent = self.atomic.lock().unwrap_or_else(|e| e.into_inner());
        *spent = spent.saturating_sub(amount);
    }

    /// The total reserved or spent.
    pub(crate) fn total(&self) -> i128 {
        *self.atomic.lock().unwrap_or_else(|e| e.into_inner())
    }
}
