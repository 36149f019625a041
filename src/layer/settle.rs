//! Settling one payment: [`Paid`], the in-handler [`SettleGuard`], and the detached settlement
//! that outlives the request.

use std::fmt;
use std::sync::Arc;

use tokio::sync::{OnceCell, oneshot};

use super::builder::Shared;
use super::hooks::{Hooks, PaymentEvent};
use crate::price::Amount;
use crate::scheme::{Intent, PaymentScheme, Receipt, Rejection, SettleOutcome, Verified};
use crate::store::{
    MAX_EVIDENCE_LEN, PaymentKey, PaymentState, PaymentStore, PendingSettlement, SettledPayment,
    StateKind,
};

/// What was paid for this request; in the request extensions of every paid request.
///
/// With axum: `Extension(paid): Extension<Paid>`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Paid {
    /// The verified payer (a Stellar strkey).
    pub payer: String,
    /// The amount paid, in atomic units.
    pub amount: Amount,
    /// The asset paid in (a contract strkey).
    pub asset: String,
    /// The intent that paid.
    pub intent: Intent,
    /// The settlement reference (a transaction hash), once the money has moved: always with
    /// [`SettlementOrder::BeforeHandler`](crate::SettlementOrder::BeforeHandler), after
    /// [`SettleGuard::settle`] with `InHandler`, never inside the handler with `AfterSuccess`.
    pub reference: Option<String>,
}

/// Why [`SettleGuard::settle`] did not settle. Whatever the handler answers after this, the
/// layer replaces it: a refused payment gets a 402, an unknown outcome a 503.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SettleError {
    /// The payment was refused; no money moved. Do not commit.
    #[error("payment refused: {0}")]
    Refused(String),
    /// The outcome is not known yet (or settlement is in progress elsewhere). Do not commit; the
    /// client retries with the same payment.
    #[error("settlement outcome unknown")]
    Unknown,
}

/// The end of one attempt to settle.
#[derive(Clone, Debug)]
pub(crate) enum Settled {
    Done(Arc<SettledPayment>),
    Refused(Rejection),
    Unknown(Rejection),
    Pending,
}

/// One verified payment, ready to settle.
pub(crate) struct Settlement {
    pub(crate) shared: Arc<Shared>,
    pub(crate) scheme: Arc<dyn PaymentScheme>,
    pub(crate) verified: Arc<Verified>,
    pub(crate) key: PaymentKey,
    pub(crate) paid: Paid,
    /// The request, as hooks name it.
    pub(crate) resource: String,
}

impl Settlement {
    /// Settles the payment, whose state is `from`. The scheme's settlement runs in its own task:
    /// if the request gives up waiting (or is dropped), the task records the outcome itself.
    pub(crate) async fn run(&self, from: StateKind) -> Settled {
        let store = &self.shared.store;
        // What the ledger can be asked later, kept before any money moves.
        let mut evidence = self.scheme.evidence(&self.verified);
        if evidence.len() > MAX_EVIDENCE_LEN {
            tracing::error!(intent = %self.paid.intent, len = evidence.len(), "settlement evidence too long; not kept");
            evidence = bytes::Bytes::new();
        }
        let pending = Arc::new(PendingSettlement::new(self.paid.clone(), evidence));
        match store
            .transition(self.key, from, PaymentState::Settling(pending.clone()))
            .await
        {
            Ok(true) => {}
            Ok(false) => return Settled::Pending,
            Err(error) => {
                tracing::error!(%error, key = ?self.key, "cannot mark payment as settling");
                return Settled::Refused(store_unavailable());
            }
        }
        let (sender, mut receiver) = oneshot::channel();
        let settle = self
            .scheme
            .clone()
            .settle(self.verified.clone(), store.clone());
        let (store, key, paid) = (store.clone(), self.key, self.paid.clone());
        let (hooks, resource) = (self.shared.hooks.clone(), self.resource.clone());
        // The task records the outcome before handing it over, so a known outcome is never lost
        // with the request; if nobody takes it any more, the task gives the payment back too
        // (a settled payment then waits, `Settled`, for the client's retry).
        super::metrics::settling();
        let started = std::time::Instant::now();
        // The request's `payment` span, and this settlement's own inside it (it may outlive
        // the request: it is spawned when the request stops waiting).
        let payment = tracing::Span::current();
        let span = tracing::info_span!(
            "settle",
            outcome = tracing::field::Empty,
            tx = tracing::field::Empty
        );
        let mut task = Box::pin(tracing::Instrument::instrument(
            async move {
                let outcome = settle.await;
                let ended = match &outcome {
                    SettleOutcome::Settled(_) => "settled",
                    SettleOutcome::Rejected(_) => "failed",
                    SettleOutcome::Unknown(_) => "unknown",
                };
                super::metrics::settled(paid.intent, ended, started.elapsed());
                let reference = match &outcome {
                    SettleOutcome::Settled(receipt) => Some(receipt.reference.clone()),
                    _ => None,
                };
                for span in [&tracing::Span::current(), &payment] {
                    span.record("outcome", ended);
                    if let Some(reference) = &reference {
                        span.record("tx", reference.as_str());
                    }
                }
                tracing::info!(
                    intent = %paid.intent,
                    payer = %paid.payer,
                    amount = paid.amount.atomic(),
                    asset = %paid.asset,
                    outcome = ended,
                    tx = reference.as_deref().unwrap_or(""),
                    "settlement ended"
                );
                let settled = record(&*store, key, &paid, pending, outcome).await;
                tell(&hooks, &paid, resource, &settled);
                // Only an outcome this task recorded is the task's to give back; one it could not
                // record belongs to whoever moved the record on (a reconciliation).
                let recorded = !matches!(settled, Settled::Pending);
                if sender.send(settled).is_err()
                    && recorded
                    && let Err(error) = store.release(key).await
                {
                    tracing::error!(%error, key = ?key, "cannot release an abandoned settlement");
                }
            },
            span,
        ));
        // A settlement with nothing to wait for (an off-chain voucher, an in-memory store) ends
        // on its first poll, here, with no task to spawn. Otherwise the spawned task polls it
        // again with its own waker (a future wakes the waker of its latest poll).
        // A panic stays in the settlement, as it would in its task: the state stays `Settling`.
        let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            task.as_mut()
                .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
        }));
        match first {
            Ok(std::task::Poll::Ready(())) | Err(_) => {
                return receiver.try_recv().unwrap_or(Settled::Pending);
            }
            Ok(std::task::Poll::Pending) => {}
        }
        tokio::spawn(task);
        match tokio::time::timeout(self.shared.settle_wait, &mut receiver).await {
            Ok(Ok(settled)) => settled,
            // The settling task panicked: the state stays `Settling` (pending) for an operator.
            Ok(Err(_)) => Settled::Pending,
            Err(_elapsed) => {
                receiver.close();
                receiver.try_recv().unwrap_or(Settled::Pending)
            }
        }
    }
}

/// Tells the hooks how a settlement ended.
fn tell(hooks: &Hooks, paid: &Paid, resource: String, settled: &Settled) {
    let mut event = PaymentEvent {
        paid: paid.clone(),
        resource: Some(resource),
        code: None,
    };
    match settled {
        Settled::Done(settled) => {
            event.paid = settled.paid.clone();
            hooks.notify(move |hooks| hooks.on_after_settle(event));
        }
        Settled::Refused(rejection) => {
            event.code = Some(rejection.code.to_string());
            hooks.notify(move |hooks| hooks.on_settle_failure(event));
        }
        Settled::Unknown(rejection) => {
            event.code = Some(rejection.code.to_string());
            hooks.notify(move |hooks| hooks.on_settle_unknown(event));
        }
        Settled::Pending => {}
    }
}

pub(crate) fn settled_payment(paid: &Paid, receipt: Receipt) -> SettledPayment {
    let mut paid = paid.clone();
    paid.reference = Some(receipt.reference.clone());
    SettledPayment { paid, receipt }
}

/// Records a settlement's outcome: the money moved (the requester owns the payment, now
/// settled), it did not (`Failed`), or nobody knows (`Unknown`). An outcome that cannot be
/// recorded (the record left `Settling`: a reconciliation ended it first; or the store failed)
/// is [`Settled::Pending`]: whatever the record says answers the retry, and nothing is served
/// from an outcome the record does not hold.
async fn record(
    store: &dyn PaymentStore,
    key: PaymentKey,
    paid: &Paid,
    pending: Arc<PendingSettlement>,
    outcome: SettleOutcome,
) -> Settled {
    let (state, settled) = match outcome {
        SettleOutcome::Settled(receipt) => {
            let settled = Arc::new(settled_payment(paid, receipt));
            (
                PaymentState::Executing(Some(settled.clone())),
                Settled::Done(settled),
            )
        }
        SettleOutcome::Rejected(rejection) => (PaymentState::Failed, Settled::Refused(rejection)),
        SettleOutcome::Unknown(rejection) => {
            tracing::warn!(key = ?key, code = %rejection.code, "settlement outcome unknown");
            (PaymentState::Unknown(pending), Settled::Unknown(rejection))
        }
    };
    for attempt in 1..=3u32 {
        match store
            .transition(key, StateKind::Settling, state.clone())
            .await
        {
            Ok(true) => return settled,
            Ok(false) => {
                tracing::warn!(key = ?key, "payment left the settling state during settlement");
                return Settled::Pending;
            }
            Err(error) => {
                tracing::error!(%error, key = ?key, attempt, "cannot record settlement outcome");
                tokio::time::sleep(std::time::Duration::from_millis(100 * u64::from(attempt)))
                    .await;
            }
        }
    }
    Settled::Pending
}

pub(crate) fn store_unavailable() -> Rejection {
    Rejection::new(
        crate::scheme::RejectionKind::Unavailable,
        "layer",
        super::respond::code::STORE_UNAVAILABLE,
    )
}

/// Lets a handler settle its payment where it chooses, with
/// [`SettlementOrder::InHandler`](crate::SettlementOrder::InHandler): validate → settle →
/// commit. In the request extensions of such requests (`Extension<SettleGuard>` in axum).
///
/// ```
/// use axum::Extension;
/// use tower_paywall::SettleGuard;
///
/// async fn store_blob(Extension(guard): Extension<SettleGuard>) -> Result<String, http::StatusCode> {
///     // 1. validate (nothing visible yet) …
///     // 2. settle: the money moves here, once, however often this is called
///     let receipt = guard.settle().await.map_err(|_| http::StatusCode::PAYMENT_REQUIRED)?;
///     // 3. commit
///     Ok(format!("stored, paid by transaction {}", receipt.reference))
/// }
/// # let _ = store_blob;
/// ```
#[derive(Clone)]
pub struct SettleGuard {
    inner: Arc<GuardInner>,
}

struct GuardInner {
    settlement: Option<Settlement>,
    outcome: OnceCell<Settled>,
}

impl SettleGuard {
    pub(crate) fn new(settlement: Settlement) -> Self {
        SettleGuard {
            inner: Arc::new(GuardInner {
                settlement: Some(settlement),
                outcome: OnceCell::new(),
            }),
        }
    }

    /// A guard whose payment has already settled (a retry resuming a settled payment).
    pub(crate) fn settled(settled: Arc<SettledPayment>) -> Self {
        SettleGuard {
            inner: Arc::new(GuardInner {
                settlement: None,
                outcome: OnceCell::new_with(Some(Settled::Done(settled))),
            }),
        }
    }

    /// Settles the payment (once: later calls return the first outcome).
    pub async fn settle(&self) -> Result<Receipt, SettleError> {
        let outcome = self
            .inner
            .outcome
            .get_or_init(|| async {
                match &self.inner.settlement {
                    Some(settlement) => settlement.run(StateKind::Executing).await,
                    None => Settled::Pending,
                }
            })
            .await;
        match outcome {
            Settled::Done(settled) => Ok(settled.receipt.clone()),
            Settled::Refused(rejection) => Err(SettleError::Refused(rejection.code.to_string())),
            Settled::Unknown(_) | Settled::Pending => Err(SettleError::Unknown),
        }
    }

    /// Whether the payment has settled.
    pub fn is_settled(&self) -> bool {
        matches!(self.inner.outcome.get(), Some(Settled::Done(_)))
    }

    pub(crate) fn outcome(&self) -> Option<&Settled> {
        self.inner.outcome.get()
    }
}

impl fmt::Debug for SettleGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SettleGuard")
            .field("settled", &self.is_settled())
            .finish()
    }
}
