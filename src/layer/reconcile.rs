//! Ending payments whose settlement outcome is not known, from the ledger (see the [layer
//! docs](super#reconciliation)).

use std::sync::Arc;

use super::builder::Shared;
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
        let (state, ended) = match scheme.reconcile(&pending).await {
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
        match self.store.transition(key, from, state).await {
            Ok(true) => ended,
            // Another request or node moved it first: whatever it recorded answers the retry.
            Ok(false) => Ended::Settled,
            Err(error) => {
                tracing::error!(%error, key = ?key, "cannot record a reconciled payment");
                Ended::Pending
            }
        }
    }
}
