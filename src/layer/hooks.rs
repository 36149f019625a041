//! [`PaymentHooks`]: what an operator sees of each payment, and a chance to refuse one after
//! it is verified and before any money moves.
//!
//! | hook | called when | may |
//! |---|---|---|
//! | [`on_offered`](PaymentHooks::on_offered) | a 402 offers payment | observe |
//! | [`on_after_verify`](PaymentHooks::on_after_verify) | a credential is verified, before settlement | refuse, with the response to send |
//! | [`on_after_settle`](PaymentHooks::on_after_settle) | the money moved | observe |
//! | [`on_settle_failure`](PaymentHooks::on_settle_failure) | a settlement was refused: no money moved | observe |
//! | [`on_settle_unknown`](PaymentHooks::on_settle_unknown) | a settlement ended without a known outcome | observe |
//! | [`on_reconciled`](PaymentHooks::on_reconciled) | the ledger ended a payment whose outcome was unknown | observe |
//!
//! The names follow the x402 servers' hooks (`onAfterVerify`, `onAfterSettle`,
//! `onSettleFailure`). Hooks cannot break or stall a payment: the observing hooks run in tasks of
//! their own, detached (a slow one delays nothing, a panic stays in its task); `on_after_verify`
//! is awaited at most [`hook_timeout`](crate::PaymentLayerBuilder::hook_timeout) (default
//! [`DEFAULT_HOOK_TIMEOUT`](crate::layer::DEFAULT_HOOK_TIMEOUT)), and a verdict that panics or
//! does not come in time counts as [`Verdict::Allow`] (logged).
//!
//! ```
//! use std::sync::Arc;
//! use tower_paywall::BoxFuture;
//! use tower_paywall::layer::{PaymentEvent, PaymentHooks, Verdict};
//!
//! /// Refuses one blocked payer, and counts what settled.
//! struct Operator {
//!     blocked: String,
//!     settled: std::sync::atomic::AtomicU64,
//! }
//!
//! impl PaymentHooks for Operator {
//!     fn on_after_verify(self: Arc<Self>, event: PaymentEvent) -> BoxFuture<'static, Verdict> {
//!         Box::pin(async move {
//!             if event.paid.payer == self.blocked {
//!                 let refusal = http::Response::builder().status(403).body("blocked".into());
//!                 return Verdict::Refuse(refusal.unwrap());
//!             }
//!             Verdict::Allow
//!         })
//!     }
//!
//!     fn on_after_settle(self: Arc<Self>, _event: PaymentEvent) -> BoxFuture<'static, ()> {
//!         self.settled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
//!         Box::pin(async {})
//!     }
//! }
//! # let _ = Operator { blocked: String::new(), settled: Default::default() };
//! ```

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::settle::Paid;
use crate::BoxFuture;
use crate::price::Amount;
use crate::scheme::Intent;

/// A 402 that offered payment.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Offered {
    /// The intents offered, in the 402's order.
    pub intents: Vec<Intent>,
    /// The price asked.
    pub amount: Amount,
    /// The request: method and path (`GET /joke`).
    pub resource: String,
}

/// One payment at one step of its life.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PaymentEvent {
    /// What is paid (with the settlement reference once the money moved).
    pub paid: Paid,
    /// The request: method and path (`GET /joke`); `None` when no request is at hand (a
    /// payment reconciled in the background).
    pub resource: Option<String>,
    /// Why, for failures and unknown outcomes: the client-facing code.
    pub code: Option<String>,
}

/// What [`PaymentHooks::on_after_verify`] decides.
#[derive(Debug)]
pub enum Verdict {
    /// Go on: settle as the route's order says.
    Allow,
    /// Refuse the payment before any money moves, answering with this response.
    Refuse(http::Response<Bytes>),
}

/// An operator's view of payments (see the [module docs](self)). Every method has a default
/// that does nothing (or allows).
pub trait PaymentHooks: Send + Sync + 'static {
    /// A 402 offers payment.
    fn on_offered(self: Arc<Self>, event: Offered) -> BoxFuture<'static, ()> {
        let _ = event;
        Box::pin(async {})
    }

    /// A credential is verified; nothing has been settled yet. [`Verdict::Refuse`] answers the
    /// request with its response and releases the payment.
    fn on_after_verify(self: Arc<Self>, event: PaymentEvent) -> BoxFuture<'static, Verdict> {
        let _ = event;
        Box::pin(async { Verdict::Allow })
    }

    /// The money moved.
    fn on_after_settle(self: Arc<Self>, event: PaymentEvent) -> BoxFuture<'static, ()> {
        let _ = event;
        Box::pin(async {})
    }

    /// A settlement was refused; no money moved.
    fn on_settle_failure(self: Arc<Self>, event: PaymentEvent) -> BoxFuture<'static, ()> {
        let _ = event;
        Box::pin(async {})
    }

    /// A settlement ended without a known outcome; reconciliation will end it.
    fn on_settle_unknown(self: Arc<Self>, event: PaymentEvent) -> BoxFuture<'static, ()> {
        let _ = event;
        Box::pin(async {})
    }

    /// The ledger ended a payment whose outcome was unknown: `code` is `None` when the money
    /// moved, the refusal's code when it did not.
    fn on_reconciled(self: Arc<Self>, event: PaymentEvent) -> BoxFuture<'static, ()> {
        let _ = event;
        Box::pin(async {})
    }
}

/// The layer's hooks, if any, and how long a verdict is waited for.
#[derive(Clone)]
pub(crate) struct Hooks {
    pub(crate) hooks: Option<Arc<dyn PaymentHooks>>,
    pub(crate) timeout: Duration,
}

impl Hooks {
    /// Runs an observing hook in a task of its own, if there are hooks and a runtime.
    pub(crate) fn notify(
        &self,
        call: impl FnOnce(Arc<dyn PaymentHooks>) -> BoxFuture<'static, ()>,
    ) {
        let Some(hooks) = &self.hooks else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // A panic while building the future stays here too.
        let future = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| call(hooks.clone())));
        match future {
            Ok(future) => {
                runtime.spawn(future);
            }
            Err(_) => tracing::error!("a payment hook panicked"),
        }
    }

    /// The verdict of `on_after_verify`: allow without hooks, and when the hook panics or does
    /// not answer within the timeout.
    pub(crate) async fn verdict(&self, event: PaymentEvent) -> Verdict {
        let Some(hooks) = &self.hooks else {
            return Verdict::Allow;
        };
        let hooks = hooks.clone();
        let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            hooks.on_after_verify(event)
        }));
        let Ok(future) = built else {
            tracing::error!("the verification hook panicked; the payment goes on");
            return Verdict::Allow;
        };
        let task = tokio::spawn(future);
        let abort = task.abort_handle();
        match tokio::time::timeout(self.timeout, task).await {
            Ok(Ok(verdict)) => verdict,
            Ok(Err(_)) => {
                tracing::error!("the verification hook panicked; the payment goes on");
                Verdict::Allow
            }
            Err(_) => {
                abort.abort();
                tracing::error!(timeout = ?self.timeout, "the verification hook did not answer in time; the payment goes on");
                Verdict::Allow
            }
        }
    }
}
