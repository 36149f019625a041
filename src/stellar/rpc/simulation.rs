//! `simulateTransaction`'s answer: resources, fee, authorizations, return values, events.

use stellar_xdr::{DiagnosticEvent, ScVal, SorobanAuthorizationEntry, SorobanTransactionData};

/// `simulateTransaction`'s answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Simulation {
    /// The latest ledger the server knew.
    pub latest_ledger: u32,
    /// The resource fee to add on top of the inclusion fee, in stroops (`minResourceFee`); 0
    /// when the simulation failed.
    pub min_resource_fee: i64,
    /// The resources and footprint to put in the transaction (`transactionData`); its presence
    /// means success.
    pub transaction_data: Option<SorobanTransactionData>,
    /// One result per host function invocation (`results`).
    pub results: Vec<HostFunctionResult>,
    /// The diagnostic events (`events`).
    pub events: Vec<DiagnosticEvent>,
    /// Why the simulation failed (`error`).
    pub error: Option<String>,
    /// Archived entries to restore first (`restorePreamble`); an empty preamble is `None`.
    pub restore_preamble: Option<RestorePreamble>,
}

impl Simulation {
    /// Whether the simulation succeeded: no `error`, and transaction data to use.
    ///
    /// A success may still need a restore first; see [`needs_restore`](Self::needs_restore).
    #[must_use]
    pub fn is_success(&self) -> bool {
        self.error.is_none() && self.transaction_data.is_some()
    }

    /// Whether archived ledger entries must be restored before the transaction can run.
    #[must_use]
    pub fn needs_restore(&self) -> bool {
        self.restore_preamble.is_some()
    }

    /// The first (for an `InvokeHostFunction` transaction, the only) result.
    #[must_use]
    pub fn result(&self) -> Option<&HostFunctionResult> {
        self.results.first()
    }
}

/// One host function invocation's simulated result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostFunctionResult {
    /// The authorization entries the invocation needs (`auth`), unsigned.
    pub auth: Vec<SorobanAuthorizationEntry>,
    /// The return value (`xdr`); `None` when the server sent none or an empty one.
    pub retval: Option<ScVal>,
}

/// What a `RestoreFootprint` transaction needs before a simulated transaction can run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestorePreamble {
    /// The resource fee of the restore, in stroops.
    pub min_resource_fee: i64,
    /// The resources and footprint of the restore.
    pub transaction_data: SorobanTransactionData,
}
