//! Ending payments whose settlement outcome is not known, from the ledger (see the [layer
//! docs](super#reconciliation)).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::builder::{PaymentLayer, Shared};
use super::hooks::PaymentEvent;
use super::settle::settled_payment;
use crate::scheme::{Reconciled, Rejection};
use crate::store::{PaymentKey, PaymentState, StateKind};

/// What reconciling a pending payment decided.
pub(crate) enum Ended {
    /// The money moved; the record is `Settled` (or another request moved it on): reserve again.
    Settled,
    /// The money did not move; the record is `Failed`. Answer with this rejection.
    NotSettled(Rejection),
    /// Still pending (not due, or the ledger does not say yet).
    Pending,
}

impl Shared {
    /// Reconciles the pending payment `key`, if it is due.
    pub(crate) async fn reconcile(&self, key: PaymentKey) -> Ended {
        let record = match self.store.record(key).await {
            Ok(Some(record)) => record,
            Ok(None) => return Ended::Pending,
            Err(error) => {
                tracing::warn!(%error, key = ?key, "cannot read a pending payment");
                return Ended::Pending;
            }
        };
        let (from, pending) = match &record.state {
            PaymentState::Unknown(pending) => (StateKind::Unknown, pending.clone()),
            PaymentState::Settling(pending) if pending.age() >= self.settle_wait => {
                (StateKind::Settling, pending.clone())
            }
            _ => return Ended::Pending,
        };
        if self.reconciling.len() > 4096 {
            self.reconciling.retain_recent();
        }
        if self.reconciling.check_key(&key).is_err() {
            return Ended::Pending;
        }
        let intent = pending.paid.intent;
        let Some(scheme) = self.schemes.iter().find(|scheme| scheme.intent() == intent) else {
            return Ended::Pending;
        };
        let paid = &pending.paid;
        let span = tracing::info_span!(
            "reconcile",
            intent = %intent,
            payer = %paid.payer,
            amount = paid.amount.atomic(),
            asset = %paid.asset,
            outcome = tracing::field::Empty,
            tx = tracing::field::Empty,
        );
        let reconciled =
            tracing::Instrument::instrument(scheme.reconcile(&pending), span.clone()).await;
        match &reconciled {
            Reconciled::Settled(receipt) => {
                span.record("outcome", "settled");
                span.record("tx", receipt.reference.as_str());
            }
            Reconciled::NotSettled(_) => {
                span.record("outcome", "not_settled");
            }
            Reconciled::Unknown => {
                span.record("outcome", "unknown");
            }
        }
        let (state, ended) = match reconciled {
            Reconciled::Settled(receipt) => {
                let settled = Arc::new(settled_payment(&pending.paid, receipt));
                (PaymentState::Settled(settled), Ended::Settled)
            }
            Reconciled::NotSettled(rejection) => {
                (PaymentState::Failed, Ended::NotSettled(rejection))
            }
            Reconciled::Unknown => return Ended::Pending,
        };
        tracing::info!(
            key = ?key,
            intent = %intent,
            payer = %pending.paid.payer,
            settled = matches!(ended, Ended::Settled),
            "payment reconciled from the ledger"
        );
        match self.store.transition(key, from, state.clone()).await {
            Ok(true) => {
                let event = PaymentEvent {
                    paid: match &state {
                        PaymentState::Settled(settled) => settled.paid.clone(),
                        _ => pending.paid.clone(),
                    },
                    resource: None,
                    code: match &ended {
                        Ended::NotSettled(rejection) => Some(rejection.code.to_string()),
                        _ => None,
                    },
                };
                let outcome = match &ended {
                    Ended::NotSettled(_) => "not_settled",
                    _ => "settled",
                };
                super::metrics::reconciled(intent, outcome);
                self.hooks.notify(move |hooks| hooks.on_reconciled(event));
                ended
            }
            // Another request or node moved it first: whatever it recorded answers the retry.
            Ok(false) => Ended::Settled,
            Err(error) => {
                tracing::error!(%error, key = ?key, "cannot record a reconciled payment");
                Ended::Pending
            }
        }
    }
}

/// How many pending payments one round of the background reconciler looks at.
const ROUND: usize = 256;

/// What one round of reconciliation ended ([`PaymentLayer::reconcile_pending`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReconcileReport {
    /// Pending payments looked at.
    pub seen: usize,
    /// Found settled on the ledger: now `Settled`, served to the next retry.
    pub settled: usize,
    /// Found unsettled for good: now `Failed`.
    pub not_settled: usize,
}

impl PaymentLayer {
    /// One round of background reconciliation: the payments of this layer's store whose
    /// settlement outcome is unknown (or still settling past the settle wait) are ended from the
    /// ledger, as a retry would end them (see [reconciliation](crate::layer#reconciliation)). A
    /// payment is asked about at most once per `reconcile_interval` by this process, whatever asks
    /// (a retry or a round).
    pub async fn reconcile_pending(&self) -> ReconcileReport {
        self.shared.reconcile_pending().await
    }

    /// The background reconciler: a [`reconcile_pending`](Self::reconcile_pending) round every
    /// `period` (at least 100 ms), forever. Spawn it once per process; nodes sharing a store may
    /// each run one, since every end is recorded by compare-and-set.
    ///
    /// ```no_run
    /// # fn run(paywall: tower_paywall::PaymentLayer) {
    /// tokio::spawn(paywall.reconciler(std::time::Duration::from_secs(10)));
    /// # }
    /// ```
    pub fn reconciler(&self, period: Duration) -> impl Future<Output = ()> + Send + 'static {
        let shared = self.shared.clone();
        async move {
            let mut ticks = tokio::time::interval(period.max(Duration::from_millis(100)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let report = shared.reconcile_pending().await;
                if report.settled + report.not_settled > 0 {
                    tracing::info!(?report, "background reconciliation");
                }
            }
        }
    }
}

impl Shared {
    async fn reconcile_pending(&self) -> ReconcileReport {
        let keys = match self.store.pending(ROUND).await {
            Ok(keys) => keys,
            Err(error) => {
                tracing::warn!(%error, "cannot list pending payments");
                return ReconcileReport::default();
            }
        };
        let mut report = ReconcileReport {
            seen: keys.len(),
            ..ReconcileReport::default()
        };
        for key in keys {
            match self.reconcile(key).await {
                Ended::Settled => report.settled += 1,
                Ended::NotSettled(_) => report.not_settled += 1,
                Ended::Pending => {}
            }
        }
        report
    }
}
