//! `sendTransaction`: the checks stellar-core makes before a transaction may enter a ledger, and
//! which the host does not make. What they cover:
//!
//! - the envelope: v1 or a fee bump around v1 (v0 is `txNOT_SUPPORTED`); at least one operation
//!   (`txMISSING_OPERATION`); a Soroban operation alone in its transaction, with Soroban data
//!   exactly when there is one (`txMALFORMED`); Soroban resources within the network limits, a
//!   footprint of account, trustline, contract data and code keys without duplicates, a
//!   non-negative resource fee (`txSOROBAN_INVALID`);
//! - preconditions against the ledger being built: time bounds and ledger bounds (`txTOO_EARLY`,
//!   `txTOO_LATE`), `minSeqNum`; `minSeqAge` and `minSeqLedgerGap` are `txNOT_SUPPORTED`;
//! - the source account exists (`txNO_ACCOUNT`), the sequence number is the account's + 1
//!   (`txBAD_SEQ`);
//! - the fee: at least the base fee per operation plus the declared resource fee, which must
//!   itself cover the non-refundable fee of the declared resources (`txINSUFFICIENT_FEE`, with
//!   the fee required as `feeCharged`); the fee source can pay it above its reserve
//!   (`txINSUFFICIENT_BALANCE`);
//! - signatures over the transaction hash (`sha256(network id ‖ ENVELOPE_TYPE_TX ‖ tx)`): the
//!   source's low threshold (`txBAD_AUTH`), every extra signer, each operation's threshold for
//!   its source (`txFAILED` with `opBAD_AUTH` / `opNO_ACCOUNT`), no unused signature
//!   (`txBAD_AUTH_EXTRA`). Signers: the master key, ed25519 keys, hash-x preimages, signed
//!   payloads and pre-authorized transaction hashes (the latter are not removed after use);
//! - fee bumps: the fee source exists, signed at its low threshold over the fee-bump hash, pays at
//!   least the base fee per operation plus one, and no lower a rate than the inner transaction;
//!   inner failures come back as `txFEE_BUMP_INNER_FAILED`.
//!
//! The queue holds one transaction per source and fee source until the ledger closes (a second one
//! gets `TRY_AGAIN_LATER`, as on the network), and at most 1 000 transactions; the same
//! transaction again gets `DUPLICATE`.

use std::iter;

use sha2::{Digest, Sha256};
use stellar_xdr::{
    AccountEntry, AccountId, DecoratedSignature, FeeBumpTransaction, FeeBumpTransactionEnvelope,
    FeeBumpTransactionInnerTx, Hash, InnerTransactionResult, InnerTransactionResultExt,
    InnerTransactionResultPair, InnerTransactionResultResult, LedgerFootprint, LedgerKey, Limits,
    OperationBody, OperationResult, Preconditions, SignerKey, SignerKeyEd25519SignedPayload,
    SorobanTransactionData, TimeBounds, Transaction, TransactionEnvelope, TransactionExt,
    TransactionResult, TransactionResultExt, TransactionResultResult, TransactionV1Envelope,
    Uint256, VecM, WriteXdr,
};

use super::account::{
    Threshold, account_key_bytes, available_balance, master_weight, muxed_account_id, needed_weight,
};
use super::classic::{OperationKind, operation_kind, unapplied_result};
use super::fees::{self, limits};
use super::ledger::Ledger;
use crate::stellar::rpc::{SendResult, SendStatus, TransactionHash};
use crate::stellar::verify_ed25519;

/// Most transactions waiting for a close; more get `TRY_AGAIN_LATER`.
const MAX_QUEUED: usize = 1_000;

/// A transaction accepted by `sendTransaction`, waiting for the next close.
#[derive(Clone, Debug)]
pub(super) struct Queued {
    /// Its hash (of the fee bump, for a fee bump).
    pub(super) hash: TransactionHash,
    /// The envelope, as sent.
    pub(super) envelope: TransactionEnvelope,
    /// Its source and fee source: one queued transaction each.
    pub(super) accounts: Vec<AccountId>,
}

/// When a transaction is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stage {
    /// At `sendTransaction`: everything.
    Send,
    /// At close, again: everything but signatures, which were verified at send and cannot have
    /// become invalid since (signers only change through `setOptions`, which the sandbox does
    /// not apply).
    Apply,
}

/// The ledger a transaction is checked for: its sequence and close time.
#[derive(Clone, Copy, Debug)]
pub(super) struct Moment {
    /// The ledger's sequence.
    pub(super) sequence: u32,
    /// The ledger's close time.
    pub(super) close_time: u64,
}

/// Why a transaction is invalid: a transaction result code.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Refusal {
    TooEarly,
    TooLate,
    MissingOperation,
    BadSeq,
    BadAuth,
    InsufficientBalance,
    NoAccount,
    /// The fee the transaction needs.
    InsufficientFee(i64),
    BadAuthExtra,
    NotSupported,
    Malformed,
    SorobanInvalid,
    /// Some operations are invalid: every operation's result.
    Failed(Vec<OperationResult>),
}

impl Refusal {
    fn fee_charged(&self) -> i64 {
        match self {
            Refusal::InsufficientFee(needed) => *needed,
            _ => 0,
        }
    }

    /// The result of a transaction refused with this.
    pub(super) fn result(self) -> TransactionResult {
        let fee_charged = self.fee_charged();
        let result = match self {
            Refusal::TooEarly => TransactionResultResult::TxTooEarly,
            Refusal::TooLate => TransactionResultResult::TxTooLate,
            Refusal::MissingOperation => TransactionResultResult::TxMissingOperation,
            Refusal::BadSeq => TransactionResultResult::TxBadSeq,
            Refusal::BadAuth => TransactionResultResult::TxBadAuth,
            Refusal::InsufficientBalance => TransactionResultResult::TxInsufficientBalance,
            Refusal::NoAccount => TransactionResultResult::TxNoAccount,
            Refusal::InsufficientFee(_) => TransactionResultResult::TxInsufficientFee,
            Refusal::BadAuthExtra => TransactionResultResult::TxBadAuthExtra,
            Refusal::NotSupported => TransactionResultResult::TxNotSupported,
            Refusal::Malformed => TransactionResultResult::TxMalformed,
            Refusal::SorobanInvalid => TransactionResultResult::TxSorobanInvalid,
            Refusal::Failed(results) => TransactionResultResult::TxFailed(vec_m(results)),
        };
        TransactionResult {
            fee_charged,
            result,
            ext: TransactionResultExt::V0,
        }
    }

    /// The result of a fee bump whose inner transaction `inner_hash` was refused with this.
    fn inner_result(self, inner_hash: [u8; 32]) -> TransactionResult {
        let result = match self {
            Refusal::TooEarly => InnerTransactionResultResult::TxTooEarly,
            Refusal::TooLate => InnerTransactionResultResult::TxTooLate,
            Refusal::MissingOperation => InnerTransactionResultResult::TxMissingOperation,
            Refusal::BadSeq => InnerTransactionResultResult::TxBadSeq,
            Refusal::BadAuth => InnerTransactionResultResult::TxBadAuth,
            Refusal::InsufficientBalance => InnerTransactionResultResult::TxInsufficientBalance,
            Refusal::NoAccount => InnerTransactionResultResult::TxNoAccount,
            Refusal::InsufficientFee(_) => InnerTransactionResultResult::TxInsufficientFee,
            Refusal::BadAuthExtra => InnerTransactionResultResult::TxBadAuthExtra,
            Refusal::NotSupported => InnerTransactionResultResult::TxNotSupported,
            Refusal::Malformed => InnerTransactionResultResult::TxMalformed,
            Refusal::SorobanInvalid => InnerTransactionResultResult::TxSorobanInvalid,
            Refusal::Failed(results) => InnerTransactionResultResult::TxFailed(vec_m(results)),
        };
        TransactionResult {
            fee_charged: 0,
            result: TransactionResultResult::TxFeeBumpInnerFailed(InnerTransactionResultPair {
                transaction_hash: Hash(inner_hash),
                result: InnerTransactionResult {
                    fee_charged: 0,
                    result,
                    ext: InnerTransactionResultExt::V0,
                },
            }),
            ext: TransactionResultExt::V0,
        }
    }
}

/// A transaction that passed the checks.
#[derive(Debug)]
pub(super) struct Checked<'a> {
    /// The (inner) transaction.
    pub(super) tx: &'a Transaction,
    /// The (inner) transaction's hash.
    pub(super) inner_hash: [u8; 32],
    /// Whether it came in a fee bump.
    pub(super) fee_bump: bool,
    /// The source account.
    pub(super) source: AccountId,
    /// Who pays the fee: the source, or the fee bump's fee source.
    pub(super) fee_source: AccountId,
    /// The Soroban data, for a Soroban transaction.
    pub(super) soroban: Option<&'a SorobanTransactionData>,
    /// The declared resource fee (0 for a classic transaction).
    pub(super) resource_fee: i64,
    /// What is charged before applying: the base fee per operation (plus one for a fee bump)
    /// and the declared resource fee. A Soroban transaction gets its unused refundable fee back.
    pub(super) charge: i64,
    /// The envelope's XDR size, in bytes.
    pub(super) size: u32,
}

impl Ledger {
    /// `sendTransaction`.
    pub(super) fn send(&mut self, envelope: &TransactionEnvelope) -> SendResult {
        let latest = self.header.sequence;
        let answer = |status, hash, error_result| SendResult {
            status,
            hash,
            latest_ledger: latest,
            error_result,
            diagnostic_events: Vec::new(),
        };
        let Ok(hash) = TransactionHash::of(envelope, &self.network.id()) else {
            return answer(
                SendStatus::Error,
                TransactionHash([0; 32]),
                Some(Refusal::Malformed.result()),
            );
        };
        if self.queue.iter().any(|queued| queued.hash == hash) {
            return answer(SendStatus::Duplicate, hash, None);
        }
        let accounts = paying_accounts(envelope);
        let busy = self.queue.len() >= MAX_QUEUED
            || self.queue.iter().any(|queued| {
                queued
                    .accounts
                    .iter()
                    .any(|account| accounts.contains(account))
            });
        if busy {
            return answer(SendStatus::TryAgainLater, hash, None);
        }
        let moment = Moment {
            sequence: self.next_sequence(),
            close_time: self.next_close_time(),
        };
        if let Err(result) = self.check(envelope, moment, Stage::Send) {
            return answer(SendStatus::Error, hash, Some(result));
        }
        self.queue.push(Queued {
            hash,
            envelope: envelope.clone(),
            accounts,
        });
        answer(SendStatus::Pending, hash, None)
    }

    /// Checks a transaction for the ledger `moment`.
    ///
    /// # Errors
    ///
    /// The result of the refused transaction.
    pub(super) fn check<'a>(
        &self,
        envelope: &'a TransactionEnvelope,
        moment: Moment,
        stage: Stage,
    ) -> Result<Checked<'a>, TransactionResult> {
        let network = self.network.id().0;
        let size = envelope
            .to_xdr(Limits::none())
            .map_err(|_| Refusal::Malformed.result())?
            .len();
        let size = u32::try_from(size).unwrap_or(u32::MAX);
        match envelope {
            TransactionEnvelope::TxV0(_) => Err(Refusal::NotSupported.result()),
            TransactionEnvelope::Tx(TransactionV1Envelope { tx, signatures }) => {
                let hash = tx.hash(network).map_err(|_| Refusal::Malformed.result())?;
                let signed = Signatures::new(hash, signatures, stage);
                self.check_transaction(tx, signed, moment, size, false)
                    .map_err(Refusal::result)
            }
            TransactionEnvelope::TxFeeBump(FeeBumpTransactionEnvelope { tx, signatures }) => {
                let outer_hash = tx.hash(network).map_err(|_| Refusal::Malformed.result())?;
                let FeeBumpTransactionInnerTx::Tx(inner) = &tx.inner_tx;
                let inner_hash = inner
                    .tx
                    .hash(network)
                    .map_err(|_| Refusal::Malformed.result())?;
                self.check_fee_bump(tx, Signatures::new(outer_hash, signatures, stage))
                    .map_err(Refusal::result)?;
                let signed = Signatures::new(inner_hash, &inner.signatures, stage);
                let mut checked = self
                    .check_transaction(&inner.tx, signed, moment, size, true)
                    .map_err(|refusal| refusal.inner_result(inner_hash))?;
                checked.fee_source = muxed_account_id(&tx.fee_source);
                Ok(checked)
            }
        }
    }

    /// The outer checks of a fee bump: fee source, fee, signatures, balance.
    fn check_fee_bump(
        &self,
        fee_bump: &FeeBumpTransaction,
        mut signed: Signatures<'_>,
    ) -> Result<(), Refusal> {
        let FeeBumpTransactionInnerTx::Tx(inner) = &fee_bump.inner_tx;
        let operations = i64::try_from(inner.tx.operations.len()).unwrap_or(i64::MAX);
        let resource_fee = declared_resource_fee(&inner.tx);
        let base_fee = i64::from(self.base_fee);
        let needed = base_fee
            .saturating_mul(operations.saturating_add(1))
            .saturating_add(resource_fee);
        if fee_bump.fee < needed {
            return Err(Refusal::InsufficientFee(needed));
        }
        // The outer inclusion fee rate may not be lower than the inner one.
        let outer_rate =
            i128::from(fee_bump.fee.saturating_sub(resource_fee)) * i128::from(operations);
        let inner_rate = i128::from(i64::from(inner.tx.fee).saturating_sub(resource_fee))
            * i128::from(operations.saturating_add(1));
        if outer_rate < inner_rate {
            return Err(Refusal::InsufficientFee(needed));
        }
        let fee_source = self
            .account(&muxed_account_id(&fee_bump.fee_source))
            .ok_or(Refusal::NoAccount)?;
        if !signed.meet(&fee_source, Threshold::Low) {
            return Err(Refusal::BadAuth);
        }
        if !signed.all_used() {
            return Err(Refusal::BadAuthExtra);
        }
        if available_balance(&fee_source) < fee_bump.fee {
            return Err(Refusal::InsufficientBalance);
        }
        Ok(())
    }

    /// The checks of a v1 transaction (`wrapped`: inside a fee bump, which pays the fee).
    fn check_transaction<'a>(
        &self,
        tx: &'a Transaction,
        mut signed: Signatures<'_>,
        moment: Moment,
        size: u32,
        wrapped: bool,
    ) -> Result<Checked<'a>, Refusal> {
        if tx.operations.is_empty() {
            return Err(Refusal::MissingOperation);
        }
        let soroban = check_soroban_shape(tx)?;
        if let Some(data) = soroban {
            check_soroban_data(data, size)?;
        }
        let (time_bounds, extra_signers) = check_preconditions(&tx.cond, moment)?;
        if let Some(bounds) = time_bounds {
            check_time_bounds(bounds, moment)?;
        }

        let resource_fee = declared_resource_fee(tx);
        let operations = i64::try_from(tx.operations.len()).unwrap_or(i64::MAX);
        let inclusion =
            i64::from(self.base_fee).saturating_mul(operations.saturating_add(i64::from(wrapped)));
        let charge = inclusion.saturating_add(resource_fee);
        if !wrapped {
            let needed = i64::from(self.base_fee)
                .saturating_mul(operations)
                .saturating_add(resource_fee);
            if i64::from(tx.fee) < needed {
                return Err(Refusal::InsufficientFee(needed));
            }
        }
        if let Some(data) = soroban {
            let non_refundable = fees::non_refundable_fee(&data.resources, size);
            if resource_fee < non_refundable {
                let needed = i64::from(self.base_fee)
                    .saturating_mul(operations)
                    .saturating_add(non_refundable);
                return Err(Refusal::InsufficientFee(needed));
            }
        }

        let source_id = muxed_account_id(&tx.source_account);
        let source = self.account(&source_id).ok_or(Refusal::NoAccount)?;
        check_sequence(tx, &source)?;

        if !signed.meet(&source, Threshold::Low) {
            return Err(Refusal::BadAuth);
        }
        if !extra_signers.iter().all(|signer| signed.signed_by(signer)) {
            return Err(Refusal::BadAuth);
        }
        self.check_operations(tx, &source, &mut signed)?;
        if !signed.all_used() {
            return Err(Refusal::BadAuthExtra);
        }
        if !wrapped && available_balance(&source) < i64::from(tx.fee) {
            return Err(Refusal::InsufficientBalance);
        }
        Ok(Checked {
            tx,
            inner_hash: signed.payload,
            fee_bump: wrapped,
            fee_source: source_id.clone(),
            source: source_id,
            soroban,
            resource_fee,
            charge,
            size,
        })
    }

    /// Each operation's source exists and signed at the operation's threshold.
    fn check_operations(
        &self,
        tx: &Transaction,
        source: &AccountEntry,
        signed: &mut Signatures<'_>,
    ) -> Result<(), Refusal> {
        let mut results = Vec::with_capacity(tx.operations.len());
        let mut valid = true;
        for operation in tx.operations.iter() {
            let threshold = operation_threshold(&operation.body);
            let op_source = operation
                .source_account
                .as_ref()
                .map(muxed_account_id)
                .filter(|id| *id != source.account_id);
            let result = match op_source {
                None if signed.meet(source, threshold) => unapplied_result(&operation.body),
                None => OperationResult::OpBadAuth,
                Some(id) => match self.account(&id) {
                    None => OperationResult::OpNoAccount,
                    Some(account) if signed.meet(&account, threshold) => {
                        unapplied_result(&operation.body)
                    }
                    Some(_) => OperationResult::OpBadAuth,
                },
            };
            valid &= !matches!(
                result,
                OperationResult::OpBadAuth | OperationResult::OpNoAccount
            );
            results.push(result);
        }
        if valid {
            Ok(())
        } else {
            Err(Refusal::Failed(results))
        }
    }
}

/// The source and fee source of a transaction.
fn paying_accounts(envelope: &TransactionEnvelope) -> Vec<AccountId> {
    match envelope {
        TransactionEnvelope::TxV0(v0) => vec![crate::sandbox::account::account_id(
            v0.tx.source_account_ed25519.0,
        )],
        TransactionEnvelope::Tx(v1) => vec![muxed_account_id(&v1.tx.source_account)],
        TransactionEnvelope::TxFeeBump(fee_bump) => {
            let FeeBumpTransactionInnerTx::Tx(inner) = &fee_bump.tx.inner_tx;
            vec![
                muxed_account_id(&inner.tx.source_account),
                muxed_account_id(&fee_bump.tx.fee_source),
            ]
        }
    }
}

/// The Soroban data of a Soroban transaction, `None` for a classic one.
fn check_soroban_shape(tx: &Transaction) -> Result<Option<&SorobanTransactionData>, Refusal> {
    let soroban_operations = tx
        .operations
        .iter()
        .filter(|operation| match operation_kind(&operation.body) {
            OperationKind::Classic => false,
            OperationKind::InvokeHostFunction | OperationKind::OtherSoroban => true,
        })
        .count();
    match (&tx.ext, soroban_operations) {
        (TransactionExt::V0, 0) => Ok(None),
        (TransactionExt::V1(data), 1) if tx.operations.len() == 1 => Ok(Some(data)),
        (TransactionExt::V0 | TransactionExt::V1(_), _) => Err(Refusal::Malformed),
    }
}

/// The declared resources are within the limits and the footprint is well formed.
fn check_soroban_data(data: &SorobanTransactionData, size: u32) -> Result<(), Refusal> {
    let resources = &data.resources;
    let footprint = &resources.footprint;
    let within_limits = resources.instructions <= limits::INSTRUCTIONS
        && resources.disk_read_bytes <= limits::DISK_READ_BYTES
        && resources.write_bytes <= limits::WRITE_BYTES
        && footprint.read_only.len() + footprint.read_write.len() <= limits::FOOTPRINT_KEYS
        && footprint.read_write.len() <= limits::WRITE_ENTRIES
        && fees::disk_read_entries(footprint) <= limits::DISK_READ_ENTRIES
        && usize::try_from(size).is_ok_and(|size| size <= limits::TRANSACTION_BYTES);
    if within_limits && data.resource_fee >= 0 && valid_footprint(footprint) {
        Ok(())
    } else {
        Err(Refusal::SorobanInvalid)
    }
}

/// Only account, trustline, contract data and code keys, each once.
fn valid_footprint(footprint: &LedgerFootprint) -> bool {
    let keys: Vec<&LedgerKey> = footprint
        .read_only
        .iter()
        .chain(footprint.read_write.iter())
        .collect();
    let supported = keys.iter().all(|key| match key {
        LedgerKey::Account(_)
        | LedgerKey::Trustline(_)
        | LedgerKey::ContractData(_)
        | LedgerKey::ContractCode(_) => true,
        LedgerKey::Offer(_)
        | LedgerKey::Data(_)
        | LedgerKey::ClaimableBalance(_)
        | LedgerKey::LiquidityPool(_)
        | LedgerKey::ConfigSetting(_)
        | LedgerKey::Ttl(_) => false,
    });
    let mut sorted = keys;
    sorted.sort();
    supported && sorted.windows(2).all(|pair| pair[0] != pair[1])
}

/// The time bounds and extra signers; ledger bounds checked; sequence age and gap refused.
fn check_preconditions(
    preconditions: &Preconditions,
    moment: Moment,
) -> Result<(Option<&TimeBounds>, &[SignerKey]), Refusal> {
    match preconditions {
        Preconditions::None => Ok((None, &[])),
        Preconditions::Time(bounds) => Ok((Some(bounds), &[])),
        Preconditions::V2(v2) => {
            if v2.min_seq_age.0 != 0 || v2.min_seq_ledger_gap != 0 {
                return Err(Refusal::NotSupported);
            }
            if let Some(bounds) = &v2.ledger_bounds {
                if bounds.min_ledger > moment.sequence {
                    return Err(Refusal::TooEarly);
                }
                if bounds.max_ledger != 0 && bounds.max_ledger <= moment.sequence {
                    return Err(Refusal::TooLate);
                }
            }
            Ok((v2.time_bounds.as_ref(), v2.extra_signers.as_slice()))
        }
    }
}

fn check_time_bounds(bounds: &TimeBounds, moment: Moment) -> Result<(), Refusal> {
    if bounds.min_time.0 > moment.close_time {
        return Err(Refusal::TooEarly);
    }
    if bounds.max_time.0 != 0 && bounds.max_time.0 < moment.close_time {
        return Err(Refusal::TooLate);
    }
    Ok(())
}

/// The sequence number is the account's + 1 (or, with `minSeqNum`, anything above the account's
/// from an account sequence at least `minSeqNum`).
fn check_sequence(tx: &Transaction, source: &AccountEntry) -> Result<(), Refusal> {
    let current = source.seq_num.0;
    let next = tx.seq_num.0;
    let min_seq_num = match &tx.cond {
        Preconditions::V2(v2) => v2.min_seq_num.as_ref().map(|min| min.0),
        Preconditions::None | Preconditions::Time(_) => None,
    };
    let valid = match min_seq_num {
        Some(min) => min <= current && current < next,
        None => current.checked_add(1) == Some(next),
    };
    if valid { Ok(()) } else { Err(Refusal::BadSeq) }
}

/// The resource fee a transaction declares (0 without Soroban data).
pub(super) fn declared_resource_fee(tx: &Transaction) -> i64 {
    match &tx.ext {
        TransactionExt::V0 => 0,
        TransactionExt::V1(data) => data.resource_fee.max(0),
    }
}

/// The threshold an operation needs from its source. (`SetOptions` always needs the high one
/// here; stellar-core asks for it only when thresholds or signers change.)
fn operation_threshold(body: &OperationBody) -> Threshold {
    match body {
        OperationBody::AllowTrust(_)
        | OperationBody::BumpSequence(_)
        | OperationBody::ClaimClaimableBalance(_)
        | OperationBody::SetTrustLineFlags(_)
        | OperationBody::Inflation
        | OperationBody::ExtendFootprintTtl(_)
        | OperationBody::RestoreFootprint(_) => Threshold::Low,
        OperationBody::AccountMerge(_) | OperationBody::SetOptions(_) => Threshold::High,
        OperationBody::CreateAccount(_)
        | OperationBody::Payment(_)
        | OperationBody::PathPaymentStrictReceive(_)
        | OperationBody::ManageSellOffer(_)
        | OperationBody::CreatePassiveSellOffer(_)
        | OperationBody::ChangeTrust(_)
        | OperationBody::ManageData(_)
        | OperationBody::ManageBuyOffer(_)
        | OperationBody::PathPaymentStrictSend(_)
        | OperationBody::CreateClaimableBalance(_)
        | OperationBody::BeginSponsoringFutureReserves(_)
        | OperationBody::EndSponsoringFutureReserves
        | OperationBody::RevokeSponsorship(_)
        | OperationBody::Clawback(_)
        | OperationBody::ClawbackClaimableBalance(_)
        | OperationBody::LiquidityPoolDeposit(_)
        | OperationBody::LiquidityPoolWithdraw(_)
        | OperationBody::InvokeHostFunction(_) => Threshold::Medium,
    }
}

/// The envelope's signatures over one payload (the transaction hash), and which of them were
/// used. At [`Stage::Apply`] every check passes.
struct Signatures<'a> {
    payload: [u8; 32],
    signatures: &'a [DecoratedSignature],
    used: Vec<bool>,
    verify: bool,
}

impl<'a> Signatures<'a> {
    fn new(
        payload: [u8; 32],
        signatures: &'a [DecoratedSignature],
        stage: Stage,
    ) -> Signatures<'a> {
        Signatures {
            payload,
            signatures,
            used: vec![false; signatures.len()],
            verify: stage == Stage::Send,
        }
    }

    /// Whether the account's signers that signed reach `threshold` (at least one must sign,
    /// even for a zero threshold). Signer weights count up to 255.
    fn meet(&mut self, account: &AccountEntry, threshold: Threshold) -> bool {
        if !self.verify {
            return true;
        }
        let needed = needed_weight(account, threshold);
        let master = (
            SignerKey::Ed25519(Uint256(account_key_bytes(&account.account_id))),
            master_weight(account),
        );
        let signers = account
            .signers
            .iter()
            .map(|signer| (signer.key.clone(), signer.weight));
        let mut total = 0_u32;
        for (key, weight) in iter::once(master).chain(signers) {
            if weight == 0 || !self.signed_by(&key) {
                continue;
            }
            total = total.saturating_add(weight.min(255));
            if total >= needed {
                return true;
            }
        }
        false
    }

    /// Whether `signer` signed (marking the signature used).
    fn signed_by(&mut self, signer: &SignerKey) -> bool {
        if !self.verify {
            return true;
        }
        match signer {
            SignerKey::Ed25519(Uint256(key)) => {
                let payload = self.payload;
                self.use_first(hint(key), |signature| ed25519(key, &payload, signature))
            }
            SignerKey::PreAuthTx(Uint256(hash)) => *hash == self.payload,
            SignerKey::HashX(Uint256(hash)) => self.use_first(hint(hash), |preimage| {
                <[u8; 32]>::from(Sha256::digest(preimage)) == *hash
            }),
            SignerKey::Ed25519SignedPayload(SignerKeyEd25519SignedPayload {
                ed25519: Uint256(key),
                payload,
            }) => {
                let mut payload_hint = [0_u8; 4];
                let tail = payload.len().saturating_sub(4);
                for (slot, byte) in payload_hint.iter_mut().zip(&payload[tail..]) {
                    *slot = *byte;
                }
                let key_hint = hint(key);
                let mixed = [0, 1, 2, 3].map(|i| key_hint[i] ^ payload_hint[i]);
                self.use_first(mixed, |signature| ed25519(key, payload, signature))
            }
        }
    }

    /// Marks the first signature with this hint that `verifies`.
    fn use_first(&mut self, hint: [u8; 4], verifies: impl Fn(&[u8]) -> bool) -> bool {
        let found = self.signatures.iter().position(|signature| {
            signature.hint.0 == hint && verifies(signature.signature.0.as_slice())
        });
        if let Some(index) = found {
            self.used[index] = true;
        }
        found.is_some()
    }

    fn all_used(&self) -> bool {
        !self.verify || self.used.iter().all(|used| *used)
    }
}

/// The last four bytes of a key: a signature's hint.
fn hint(key: &[u8; 32]) -> [u8; 4] {
    [key[28], key[29], key[30], key[31]]
}

fn ed25519(key: &[u8; 32], message: &[u8], signature: &[u8]) -> bool {
    <&[u8; 64]>::try_from(signature).is_ok_and(|signature| verify_ed25519(key, message, signature))
}

/// A vector as an XDR vector (the unbounded ones used here cannot overflow).
pub(super) fn vec_m<T>(items: Vec<T>) -> VecM<T> {
    VecM::try_from(items).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::account::{account_id, new_account};
    use crate::stellar::Keypair;
    use stellar_xdr::{BytesM, Signature, SignatureHint, Signer};

    fn decorated(keypair: &Keypair, payload: &[u8]) -> DecoratedSignature {
        DecoratedSignature {
            hint: SignatureHint(hint(&keypair.public_key())),
            signature: Signature(BytesM::try_from(keypair.sign(payload).to_vec()).unwrap()),
        }
    }

    fn account(keypair: &Keypair) -> AccountEntry {
        new_account(account_id(keypair.public_key()), 0, 0)
    }

    #[test]
    fn master_key_signs_at_zero_threshold_but_not_without_a_signature() {
        let key = Keypair::from_seed([4; 32]);
        let account = account(&key);
        let signatures = [decorated(&key, &[1; 32])];
        let mut signed = Signatures::new([1; 32], &signatures, Stage::Send);
        assert!(signed.meet(&account, Threshold::Medium));
        assert!(signed.all_used());
        let mut unsigned = Signatures::new([1; 32], &[], Stage::Send);
        assert!(!unsigned.meet(&account, Threshold::Low));
        let mut wrong_payload = Signatures::new([2; 32], &signatures, Stage::Send);
        assert!(!wrong_payload.meet(&account, Threshold::Low));
        assert!(!wrong_payload.all_used());
    }

    #[test]
    fn weights_add_up_to_the_threshold() {
        let master = Keypair::from_seed([5; 32]);
        let other = Keypair::from_seed([6; 32]);
        let mut account = account(&master);
        account.thresholds.0 = [1, 1, 2, 3];
        account.signers = vec![Signer {
            key: SignerKey::Ed25519(Uint256(other.public_key())),
            weight: 1,
        }]
        .try_into()
        .unwrap();
        let one = [decorated(&master, &[7; 32])];
        assert!(!Signatures::new([7; 32], &one, Stage::Send).meet(&account, Threshold::Medium));
        let both = [decorated(&other, &[7; 32]), decorated(&master, &[7; 32])];
        let mut signed = Signatures::new([7; 32], &both, Stage::Send);
        assert!(signed.meet(&account, Threshold::Medium));
        assert!(signed.all_used());
        // A disabled master key does not count.
        account.thresholds.0[0] = 0;
        assert!(!Signatures::new([7; 32], &both, Stage::Send).meet(&account, Threshold::Medium));
    }

    #[test]
    fn other_signer_kinds() {
        let preimage = b"open sesame".to_vec();
        let hash: [u8; 32] = Sha256::digest(&preimage).into();
        let hash_x = [DecoratedSignature {
            hint: SignatureHint(hint(&hash)),
            signature: Signature(BytesM::try_from(preimage).unwrap()),
        }];
        let mut signed = Signatures::new([0; 32], &hash_x, Stage::Send);
        assert!(signed.signed_by(&SignerKey::HashX(Uint256(hash))));
        assert!(!signed.signed_by(&SignerKey::HashX(Uint256([1; 32]))));

        let mut pre_auth = Signatures::new([3; 32], &[], Stage::Send);
        assert!(pre_auth.signed_by(&SignerKey::PreAuthTx(Uint256([3; 32]))));

        let key = Keypair::from_seed([8; 32]);
        let payload = vec![9, 8, 7, 6, 5];
        let key_hint = hint(&key.public_key());
        let signature = DecoratedSignature {
            hint: SignatureHint([0, 1, 2, 3].map(|i| key_hint[i] ^ payload[1 + i])),
            signature: Signature(BytesM::try_from(key.sign(&payload).to_vec()).unwrap()),
        };
        let signatures = [signature];
        let mut signed = Signatures::new([0; 32], &signatures, Stage::Send);
        assert!(signed.signed_by(&SignerKey::Ed25519SignedPayload(
            SignerKeyEd25519SignedPayload {
                ed25519: Uint256(key.public_key()),
                payload: payload.try_into().unwrap(),
            }
        )));
    }

    #[test]
    fn footprints_refuse_duplicates_and_unsupported_keys() {
        let account_key = LedgerKey::Account(stellar_xdr::LedgerKeyAccount {
            account_id: account_id([1; 32]),
        });
        let footprint = |read_only: Vec<LedgerKey>, read_write: Vec<LedgerKey>| LedgerFootprint {
            read_only: read_only.try_into().unwrap(),
            read_write: read_write.try_into().unwrap(),
        };
        assert!(valid_footprint(&footprint(
            vec![account_key.clone()],
            vec![]
        )));
        assert!(!valid_footprint(&footprint(
            vec![account_key.clone()],
            vec![account_key]
        )));
        let ttl = LedgerKey::Ttl(stellar_xdr::LedgerKeyTtl {
            key_hash: Hash([0; 32]),
        });
        assert!(!valid_footprint(&footprint(vec![ttl], vec![])));
    }
}
