//! Closing a ledger: every queued transaction is checked again against the closing ledger, then
//! applied in the order it was sent, as stellar-core applies it:
//!
//! 1. the fee is charged to the fee source (the base fee per operation, plus one for a fee bump,
//!    plus the declared resource fee) and the source's sequence number is bumped, whatever
//!    happens next;
//! 2. the operations run; if any fails, all their changes are dropped (`txFAILED`);
//!    `invokeHostFunction` runs on the host in enforcing mode with the declared footprint and
//!    authorization, then its use is checked against the declared instructions, read bytes and
//!    write bytes (`RESOURCE_LIMIT_EXCEEDED`) and refundable fee (`INSUFFICIENT_REFUNDABLE_FEE`);
//! 3. the unused refundable part of the resource fee goes back to the fee source.
//!
//! A transaction that no longer passes the checks at close is recorded as failed with that result
//! and nothing is charged. Results and `TransactionMeta` v4 (fee, sequence and operation changes,
//! contract events, the return value, fee events, diagnostic events) are kept for `getTransaction`,
//! and the contract and fee events for `getEvents`.
//! TTL entries are not listed in the meta.

use std::mem;

use sha2::{Digest, Sha256};
use stellar_xdr::{
    AccountId, ContractEvent, ContractEventBody, ContractEventType, ContractEventV0, ContractId,
    DiagnosticEvent, ExtensionPoint, Hash, InnerTransactionResult, InnerTransactionResultExt,
    InnerTransactionResultPair, InnerTransactionResultResult, InvokeHostFunctionOp,
    InvokeHostFunctionResult, InvokeHostFunctionSuccessPreImage, LedgerEntryChange, Limits,
    OperationBody, OperationMetaV2, OperationResult, OperationResultTr, ScAddress, ScSymbol, ScVal,
    SorobanTransactionData, SorobanTransactionMetaExt, SorobanTransactionMetaExtV1,
    SorobanTransactionMetaV2, StringM, TransactionEnvelope, TransactionEvent,
    TransactionEventStage, TransactionMeta, TransactionMetaV4, TransactionResult,
    TransactionResultExt, TransactionResultResult, WriteXdr,
};

use super::ClosedLedger;
use super::account::muxed_account_id;
use super::classic::{self, OperationKind, is_success, operation_kind};
use super::events::LedgerEvents;
use super::fees;
use super::friendbot::i128_value;
use super::invoke::{self, Enforcement};
use super::ledger::{Delta, Header, Ledger, describe_change};
use super::snapshot::{footprint_entries, footprint_wasm, is_live, is_persistent};
use super::submit::{Checked, Moment, Stage, vec_m};
use crate::stellar::Address;

/// A transaction in a closed ledger.
#[derive(Clone, Debug)]
pub(super) struct Applied {
    /// The envelope, as sent.
    pub(super) envelope: TransactionEnvelope,
    /// Its result.
    pub(super) result: TransactionResult,
    /// Its meta.
    pub(super) meta: TransactionMeta,
    /// Whether it succeeded.
    pub(super) success: bool,
    /// The ledger it is in.
    pub(super) ledger: u32,
    /// That ledger's close time.
    pub(super) close_time: u64,
    /// Its position in the ledger, from 1.
    pub(super) application_order: u32,
    /// Whether it was a fee bump.
    pub(super) fee_bump: bool,
}

/// What the operations of a transaction did.
struct Operations {
    results: Vec<OperationResult>,
    /// Per operation: its changes and contract events (empty when the transaction failed).
    metas: Vec<OperationMetaV2>,
    soroban: Option<SorobanUse>,
}

/// What a Soroban transaction used and returned.
#[derive(Default)]
struct SorobanUse {
    non_refundable: i64,
    events_fee: i64,
    rent_fee: i64,
    return_value: Option<ScVal>,
    diagnostics: Vec<DiagnosticEvent>,
}

impl Ledger {
    /// Closes the next ledger, applying the queued transactions.
    pub(super) fn close(&mut self) -> ClosedLedger {
        let moment = Moment {
            sequence: self.next_sequence(),
            close_time: self.next_close_time(),
        };
        let queue = mem::take(&mut self.queue);
        let mut hasher = Sha256::new();
        hasher.update(self.header.hash);
        hasher.update(moment.sequence.to_be_bytes());
        hasher.update(moment.close_time.to_be_bytes());
        let transactions = queue.len();
        let mut events = LedgerEvents::new(moment.sequence, moment.close_time);
        for (index, queued) in queue.into_iter().enumerate() {
            let order = u32::try_from(index + 1).unwrap_or(u32::MAX);
            hasher.update(queued.hash.0);
            let applied = self.apply(&queued.envelope, moment, order);
            tracing::debug!(hash = %queued.hash, success = applied.success, "sandbox applied a transaction");
            events.add(queued.hash, &applied);
            self.history.insert(queued.hash, applied);
        }
        self.events.append(events);
        self.header = Header {
            sequence: moment.sequence,
            close_time: moment.close_time,
            hash: hasher.finalize().into(),
        };
        self.keep_state(moment.sequence);
        let oldest = self.oldest_ledger();
        self.history.retain(|_, applied| applied.ledger >= oldest);
        self.events.forget_before(oldest);
        ClosedLedger {
            sequence: moment.sequence,
            close_time: moment.close_time,
            transactions,
        }
    }

    /// After closing ledger `sequence`: persistent entries about to expire live another
    /// minimal persistent TTL (nothing is archived); expired temporary entries go.
    fn keep_state(&mut self, sequence: u32) {
        let mut entries = self.entries.borrow_mut();
        entries.retain(|key, stored| is_live(key, stored.live_until, sequence));
        for (key, stored) in entries.iter_mut() {
            if !is_persistent(key) {
                continue;
            }
            if let Some(live_until) = stored.live_until.as_mut()
                && *live_until <= sequence
            {
                *live_until = sequence.saturating_add(invoke::MIN_PERSISTENT_TTL - 1);
            }
        }
    }

    /// Applies one transaction in ledger `moment`.
    fn apply(&mut self, envelope: &TransactionEnvelope, moment: Moment, order: u32) -> Applied {
        let fee_bump = matches!(envelope, TransactionEnvelope::TxFeeBump(_));
        let applied = |result, meta, success| Applied {
            envelope: envelope.clone(),
            result,
            meta,
            success,
            ledger: moment.sequence,
            close_time: moment.close_time,
            application_order: order,
            fee_bump,
        };
        let checked = match self.check(envelope, moment, Stage::Apply) {
            Ok(checked) => checked,
            Err(result) => return applied(result, empty_meta(), false),
        };

        // 1. Fee and sequence.
        let mut before = Delta::default();
        if let Some(mut fee_source) = before.account(self, &checked.fee_source) {
            fee_source.balance = fee_source.balance.saturating_sub(checked.charge);
            before.put_account(fee_source, moment.sequence);
        }
        if let Some(mut source) = before.account(self, &checked.source) {
            source.seq_num = checked.tx.seq_num.clone();
            before.put_account(source, moment.sequence);
        }
        let tx_changes_before = self.commit(before, moment.sequence);
        let mut events = vec![self.fee_event(
            &checked.fee_source,
            checked.charge,
            TransactionEventStage::BeforeAllTxs,
        )];

        // 2. Operations.
        let operations = self.apply_operations(&checked, moment);
        let success = operations.results.iter().all(is_success);

        // 3. Refund.
        let mut tx_changes_after = Vec::new();
        let mut refund = 0;
        if let Some(used) = &operations.soroban {
            let consumed = used
                .non_refundable
                .saturating_add(used.events_fee)
                .saturating_add(used.rent_fee);
            refund = checked.resource_fee.saturating_sub(consumed).max(0);
            if refund > 0 {
                let mut after = Delta::default();
                if let Some(mut fee_source) = after.account(self, &checked.fee_source) {
                    fee_source.balance = fee_source.balance.saturating_add(refund);
                    after.put_account(fee_source, moment.sequence);
                }
                tx_changes_after = self.commit(after, moment.sequence);
                events.push(self.fee_event(
                    &checked.fee_source,
                    -refund,
                    TransactionEventStage::AfterTx,
                ));
            }
        }
        let fee_charged = checked.charge.saturating_sub(refund);
        let result = transaction_result(&checked, operations.results, success, fee_charged);
        let soroban_meta = operations.soroban.map(|used| {
            (
                SorobanTransactionMetaV2 {
                    ext: SorobanTransactionMetaExt::V1(SorobanTransactionMetaExtV1 {
                        ext: ExtensionPoint::V0,
                        total_non_refundable_resource_fee_charged: used.non_refundable,
                        total_refundable_resource_fee_charged: used
                            .events_fee
                            .saturating_add(used.rent_fee),
                        rent_fee_charged: used.rent_fee,
                    }),
                    return_value: used.return_value,
                },
                used.diagnostics,
            )
        });
        let (soroban_meta, diagnostics) = match soroban_meta {
            Some((meta, diagnostics)) => (Some(meta), diagnostics),
            None => (None, Vec::new()),
        };
        let meta = TransactionMeta::V4(TransactionMetaV4 {
            ext: ExtensionPoint::V0,
            tx_changes_before: vec_m(tx_changes_before).into(),
            operations: vec_m(operations.metas),
            tx_changes_after: vec_m(tx_changes_after).into(),
            soroban_meta,
            events: vec_m(events),
            diagnostic_events: vec_m(diagnostics),
        });
        applied(result, meta, success)
    }

    /// Runs the operations; commits their changes if all succeed.
    fn apply_operations(&mut self, checked: &Checked<'_>, moment: Moment) -> Operations {
        let operations = checked.tx.operations.as_slice();
        if let ([operation], Some(data)) = (operations, checked.soroban)
            && let OperationBody::InvokeHostFunction(op) = &operation.body
        {
            let source = operation
                .source_account
                .as_ref()
                .map_or_else(|| checked.source.clone(), muxed_account_id);
            return self.apply_invoke(checked, op, &source, data, moment);
        }
        let mut delta = Delta::default();
        let mut results = Vec::with_capacity(operations.len());
        let mut changes = Vec::with_capacity(operations.len());
        for operation in operations {
            let previous = delta.clone();
            let result = match operation_kind(&operation.body) {
                OperationKind::Classic => classic::apply_operation(
                    self,
                    &mut delta,
                    operation,
                    &checked.source,
                    moment.sequence,
                ),
                OperationKind::InvokeHostFunction | OperationKind::OtherSoroban => {
                    OperationResult::OpNotSupported
                }
            };
            changes.push(delta.changes_since(&previous, self));
            results.push(result);
        }
        let metas = if results.iter().all(is_success) {
            self.commit(delta, moment.sequence);
            changes
                .into_iter()
                .map(|changes| OperationMetaV2 {
                    ext: ExtensionPoint::V0,
                    changes: vec_m(changes).into(),
                    events: vec_m(Vec::new()),
                })
                .collect()
        } else {
            Vec::new()
        };
        Operations {
            results,
            metas,
            soroban: None,
        }
    }

    /// Runs `invokeHostFunction` in enforcing mode and checks what it used.
    fn apply_invoke(
        &mut self,
        checked: &Checked<'_>,
        op: &InvokeHostFunctionOp,
        source: &AccountId,
        data: &SorobanTransactionData,
        moment: Moment,
    ) -> Operations {
        let resources = &data.resources;
        let mut used = SorobanUse {
            non_refundable: fees::non_refundable_fee(resources, checked.size),
            ..SorobanUse::default()
        };
        let failed = |code: InvokeHostFunctionResult, used: SorobanUse| Operations {
            results: vec![OperationResult::OpInner(
                OperationResultTr::InvokeHostFunction(code),
            )],
            metas: Vec::new(),
            soroban: Some(used),
        };

        let footprint = footprint_entries(
            &self.entries.borrow(),
            &resources.footprint,
            moment.sequence,
        );
        let Ok((entries, disk_read_bytes)) = footprint else {
            return failed(InvokeHostFunctionResult::Trapped, used);
        };
        let wasm = footprint_wasm(
            &self.entries.borrow(),
            &resources.footprint,
            moment.sequence,
        );
        if disk_read_bytes > resources.disk_read_bytes {
            return failed(InvokeHostFunctionResult::ResourceLimitExceeded, used);
        }
        let mut seed = Sha256::new();
        seed.update(checked.inner_hash);
        seed.update(moment.sequence.to_be_bytes());
        let run = Enforcement {
            host_function: &op.host_function,
            resources,
            source,
            auth: op.auth.as_slice(),
            entries,
            wasm,
            seed: seed.finalize().into(),
        };
        let info = invoke::ledger_info(&self.network.id(), moment.sequence, moment.close_time);
        let outcome = match invoke::enforce(run, info) {
            Ok(outcome) => outcome,
            Err(failure) => {
                let code = if failure.is_budget_exceeded() {
                    InvokeHostFunctionResult::ResourceLimitExceeded
                } else {
                    InvokeHostFunctionResult::Trapped
                };
                tracing::debug!(message = %failure.message, "sandbox transaction trapped");
                used.diagnostics = failure.diagnostics;
                return failed(code, used);
            }
        };
        used.diagnostics = outcome.diagnostics;
        let written: usize = outcome
            .changes
            .iter()
            .filter(|change| !change.read_only)
            .filter_map(|change| change.new.as_ref())
            .map(|entry| {
                entry
                    .to_xdr(Limits::none())
                    .map_or(usize::MAX, |xdr| xdr.len())
            })
            .fold(0, usize::saturating_add);
        let over_instructions = outcome.instructions > u64::from(resources.instructions);
        let over_writes =
            u32::try_from(written).map_or(true, |written| written > resources.write_bytes);
        if over_instructions || over_writes {
            return failed(InvokeHostFunctionResult::ResourceLimitExceeded, used);
        }
        let events_fee = fees::events_fee(outcome.events_and_return_size);
        let rent_fee = fees::rent_fee(&outcome.rent_changes, moment.sequence);
        let refundable_available = checked.resource_fee.saturating_sub(used.non_refundable);
        if events_fee.saturating_add(rent_fee) > refundable_available {
            return failed(InvokeHostFunctionResult::InsufficientRefundableFee, used);
        }
        let Ok(value) = outcome.result else {
            return failed(InvokeHostFunctionResult::Trapped, used);
        };
        let success_hash = success_preimage_hash(&value, &outcome.events);
        let mut delta = Delta::default();
        delta.put_host_changes(self, outcome.changes, moment.sequence, false);
        let changes = self.commit(delta, moment.sequence);
        used.events_fee = events_fee;
        used.rent_fee = rent_fee;
        used.return_value = Some(value);
        Operations {
            results: vec![OperationResult::OpInner(
                OperationResultTr::InvokeHostFunction(InvokeHostFunctionResult::Success(Hash(
                    success_hash,
                ))),
            )],
            metas: vec![OperationMetaV2 {
                ext: ExtensionPoint::V0,
                changes: vec_m(changes).into(),
                events: vec_m(outcome.events),
            }],
            soroban: Some(used),
        }
    }

    /// The native asset contract's `fee` event: `amount` charged to (negative: refunded to)
    /// `payer`.
    fn fee_event(
        &self,
        payer: &AccountId,
        amount: i64,
        stage: TransactionEventStage,
    ) -> TransactionEvent {
        let contract = match self.assets.xlm {
            Address::Contract(id) => Some(ContractId(Hash(id))),
            Address::Account(_) | Address::MuxedAccount { .. } => None,
        };
        let topics = vec![
            ScVal::Symbol(ScSymbol(StringM::try_from("fee").unwrap_or_default())),
            ScVal::Address(ScAddress::Account(payer.clone())),
        ];
        TransactionEvent {
            stage,
            event: ContractEvent {
                ext: ExtensionPoint::V0,
                contract_id: contract,
                type_: ContractEventType::Contract,
                body: ContractEventBody::V0(ContractEventV0 {
                    topics: vec_m(topics),
                    data: i128_value(i128::from(amount)),
                }),
            },
        }
    }
}

impl Delta {
    /// The meta changes from `previous` to this delta (same base ledger).
    fn changes_since(&self, previous: &Delta, ledger: &Ledger) -> Vec<LedgerEntryChange> {
        let mut changes = Vec::new();
        for (key, after) in self.changed() {
            let before = previous.entry(ledger, key);
            describe_change(key, before.as_ref(), after.as_ref(), &mut changes);
        }
        changes
    }
}

/// The result of an applied transaction.
fn transaction_result(
    checked: &Checked<'_>,
    results: Vec<OperationResult>,
    success: bool,
    fee_charged: i64,
) -> TransactionResult {
    let result = if checked.fee_bump {
        let inner = if success {
            InnerTransactionResultResult::TxSuccess(vec_m(results))
        } else {
            InnerTransactionResultResult::TxFailed(vec_m(results))
        };
        let pair = InnerTransactionResultPair {
            transaction_hash: Hash(checked.inner_hash),
            result: InnerTransactionResult {
                fee_charged: 0,
                result: inner,
                ext: InnerTransactionResultExt::V0,
            },
        };
        if success {
            TransactionResultResult::TxFeeBumpInnerSuccess(pair)
        } else {
            TransactionResultResult::TxFeeBumpInnerFailed(pair)
        }
    } else if success {
        TransactionResultResult::TxSuccess(vec_m(results))
    } else {
        TransactionResultResult::TxFailed(vec_m(results))
    };
    TransactionResult {
        fee_charged,
        result,
        ext: TransactionResultExt::V0,
    }
}

/// `sha256(InvokeHostFunctionSuccessPreImage { return value, events })`.
fn success_preimage_hash(value: &ScVal, events: &[ContractEvent]) -> [u8; 32] {
    let preimage = InvokeHostFunctionSuccessPreImage {
        return_value: value.clone(),
        events: vec_m(events.to_vec()),
    };
    preimage
        .to_xdr(Limits::none())
        .map_or([0; 32], |xdr| Sha256::digest(xdr).into())
}

/// A meta with no changes, for a transaction refused at close.
fn empty_meta() -> TransactionMeta {
    TransactionMeta::V4(TransactionMetaV4 {
        ext: ExtensionPoint::V0,
        tx_changes_before: vec_m(Vec::new()).into(),
        operations: vec_m(Vec::new()),
        tx_changes_after: vec_m(Vec::new()).into(),
        soroban_meta: None,
        events: vec_m(Vec::new()),
        diagnostic_events: vec_m(Vec::new()),
    })
}
