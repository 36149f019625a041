//! `simulateTransaction`: the transaction's one `invokeHostFunction` operation runs on the host in
//! recording mode against the next ledger, as Soroban RPC runs it.
//!
//! - Authorization is recorded when the operation carries no entries (root authorization only,
//!   `Address` credentials with fresh nonces and `Void` signatures) and enforced when it carries
//!   some (so a signed entry is verified: signature, nonce, expiration).
//! - The source may be any account, existing or not (clients simulate from the all-zeros
//!   `NULL_ACCOUNT`).
//! - `transactionData` holds the recorded footprint and resources, with Soroban RPC's margins
//!   (instructions × 1.04 + 50 000; refundable fee × 1.15), and a resource fee computed from
//!   them (see `fees`) for the transaction as the client will send it: with this data, the
//!   returned authorization, one envelope signature and a signature in each unsigned entry.
//!   `minResourceFee` is that fee.
//! - `events` are the invocation's contract events on success, the diagnostic events on failure;
//!   `error` is `HostError: …` with the event log. No restore preamble (nothing is archived).

use stellar_xdr::{
    DiagnosticEvent, FeeBumpTransactionInnerTx, Limits, OperationBody, ScVal,
    SorobanAuthorizationEntry, SorobanCredentials, SorobanResources, SorobanTransactionData,
    SorobanTransactionDataExt, Transaction, TransactionEnvelope, TransactionExt,
    TransactionV1Envelope, WriteXdr,
};

use super::account::muxed_account_id;
use super::classic::{OperationKind, operation_kind};
use super::fees::{self, margins};
use super::invoke::{self, Recorded};
use super::ledger::Ledger;
use super::submit::vec_m;
use crate::stellar::rpc::{HostFunctionResult, Simulation};

/// Bytes allowed for the envelope signature a simulated transaction does not carry yet.
const ENVELOPE_SIGNATURE_BYTES: usize = 72;
/// Bytes allowed for the signature of each unsigned authorization entry
/// (`Vec[Map{public_key, signature}]` is about 150).
const AUTH_SIGNATURE_BYTES: usize = 200;
/// Slack for what else changes before submission (a fee bump around the transaction, …).
const SLACK_BYTES: usize = 100;

impl Ledger {
    /// `simulateTransaction`.
    pub(super) fn simulate(&mut self, envelope: &TransactionEnvelope) -> Simulation {
        let latest = self.header.sequence;
        let tx = match envelope {
            TransactionEnvelope::Tx(v1) => &v1.tx,
            TransactionEnvelope::TxFeeBump(fee_bump) => {
                let FeeBumpTransactionInnerTx::Tx(inner) = &fee_bump.tx.inner_tx;
                &inner.tx
            }
            TransactionEnvelope::TxV0(_) => {
                return failure(
                    latest,
                    "transaction envelope v0 is not supported",
                    Vec::new(),
                );
            }
        };
        let [operation] = tx.operations.as_slice() else {
            return failure(
                latest,
                "a simulated transaction must have exactly one operation",
                Vec::new(),
            );
        };
        let invoke = match (&operation.body, operation_kind(&operation.body)) {
            (OperationBody::InvokeHostFunction(invoke), _) => invoke,
            (_, OperationKind::OtherSoroban) => {
                return failure(
                    latest,
                    "the sandbox archives nothing: extendFootprintTtl and restoreFootprint are not simulated",
                    Vec::new(),
                );
            }
            (_, OperationKind::Classic | OperationKind::InvokeHostFunction) => {
                return failure(
                    latest,
                    "a simulated transaction must invoke a host function",
                    Vec::new(),
                );
            }
        };
        let source = muxed_account_id(
            operation
                .source_account
                .as_ref()
                .unwrap_or(&tx.source_account),
        );
        let auth = (!invoke.auth.is_empty()).then(|| invoke.auth.to_vec());
        let seed = self.simulation_seed();
        let info = self.next_ledger_info();
        let sequence = info.sequence_number;
        let recorded = invoke::record(
            self.snapshot(),
            info,
            &invoke.host_function,
            &source,
            auth,
            seed,
        );
        let Recorded {
            outcome,
            resources,
            auth,
        } = match recorded {
            Ok(recorded) => recorded,
            Err(failed) => return failure(latest, &failed.message, failed.diagnostics),
        };
        let value = match outcome.result {
            Ok(value) => value,
            Err(failed) => return failure(latest, &failed.message, outcome.diagnostics),
        };

        let resources = SorobanResources {
            instructions: fees::instructions_with_margin(outcome.instructions),
            ..resources
        };
        let refundable = fees::with_margin(
            fees::events_fee(outcome.events_and_return_size)
                .saturating_add(fees::rent_fee(&outcome.rent_changes, sequence)),
            margins::REFUNDABLE_PERCENT,
        );
        let Some(size) = assembled_size(tx, &resources, &auth) else {
            return failure(latest, "the transaction could not be encoded", Vec::new());
        };
        let resource_fee = fees::non_refundable_fee(&resources, size).saturating_add(refundable);
        let events = outcome
            .events
            .into_iter()
            .map(|event| DiagnosticEvent {
                in_successful_contract_call: true,
                event,
            })
            .collect();
        Simulation {
            latest_ledger: latest,
            min_resource_fee: resource_fee,
            transaction_data: Some(SorobanTransactionData {
                ext: SorobanTransactionDataExt::V0,
                resources,
                resource_fee,
            }),
            results: vec![HostFunctionResult {
                auth,
                retval: Some(value),
            }],
            events,
            error: None,
            restore_preamble: None,
        }
    }
}

/// A failed simulation.
fn failure(latest: u32, message: &str, events: Vec<DiagnosticEvent>) -> Simulation {
    Simulation {
        latest_ledger: latest,
        min_resource_fee: 0,
        transaction_data: None,
        results: Vec::new(),
        events,
        error: Some(message.to_owned()),
        restore_preamble: None,
    }
}

/// The size of the transaction as it will be sent: with this Soroban data and authorization,
/// one envelope signature, a signature in each unsigned entry, and some slack.
fn assembled_size(
    tx: &Transaction,
    resources: &SorobanResources,
    auth: &[SorobanAuthorizationEntry],
) -> Option<u32> {
    let mut assembled = tx.clone();
    assembled.ext = TransactionExt::V1(SorobanTransactionData {
        ext: SorobanTransactionDataExt::V0,
        resources: resources.clone(),
        resource_fee: 0,
    });
    for operation in assembled.operations.iter_mut() {
        if let OperationBody::InvokeHostFunction(invoke) = &mut operation.body {
            invoke.auth = vec_m(auth.to_vec());
        }
    }
    let unsigned_entries = auth
        .iter()
        .filter(|entry| match &entry.credentials {
            SorobanCredentials::Address(credentials)
            | SorobanCredentials::AddressV2(credentials) => credentials.signature == ScVal::Void,
            SorobanCredentials::AddressWithDelegates(credentials) => {
                credentials.address_credentials.signature == ScVal::Void
            }
            SorobanCredentials::SourceAccount => false,
        })
        .count();
    let envelope = TransactionEnvelope::Tx(TransactionV1Envelope {
        tx: assembled,
        signatures: Default::default(),
    });
    let size = envelope.to_xdr(Limits::none()).ok()?.len()
        + ENVELOPE_SIGNATURE_BYTES
        + unsigned_entries * AUTH_SIGNATURE_BYTES
        + SLACK_BYTES;
    u32::try_from(size).ok()
}
