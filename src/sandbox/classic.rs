//! Classic operations. Supported: `createAccount`, and `payment` of the native asset (XLM).
//! Every other classic operation, and a `payment` of any other asset, applies as
//! `opNOT_SUPPORTED` (the transaction fails, its fee is charged). Of the Soroban operations,
//! `invokeHostFunction` runs on the host (see `apply`); `extendFootprintTtl` and
//! `restoreFootprint` are `opNOT_SUPPORTED` (nothing is ever archived here).

use stellar_xdr::{
    AccountId, Asset, CreateAccountOp, CreateAccountResult, Hash, InvokeHostFunctionResult,
    Operation, OperationBody, OperationResult, OperationResultTr, PaymentOp, PaymentResult,
};

use super::account::{
    BASE_RESERVE, available_balance, max_balance, muxed_account_id, new_account, starting_sequence,
};
use super::ledger::{Delta, Ledger};

/// How an operation is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OperationKind {
    /// A classic operation.
    Classic,
    /// `invokeHostFunction`.
    InvokeHostFunction,
    /// `extendFootprintTtl` or `restoreFootprint`.
    OtherSoroban,
}

/// The kind of an operation.
pub(super) fn operation_kind(body: &OperationBody) -> OperationKind {
    match body {
        OperationBody::InvokeHostFunction(_) => OperationKind::InvokeHostFunction,
        OperationBody::ExtendFootprintTtl(_) | OperationBody::RestoreFootprint(_) => {
            OperationKind::OtherSoroban
        }
        OperationBody::CreateAccount(_)
        | OperationBody::Payment(_)
        | OperationBody::PathPaymentStrictReceive(_)
        | OperationBody::ManageSellOffer(_)
        | OperationBody::CreatePassiveSellOffer(_)
        | OperationBody::SetOptions(_)
        | OperationBody::ChangeTrust(_)
        | OperationBody::AllowTrust(_)
        | OperationBody::AccountMerge(_)
        | OperationBody::Inflation
        | OperationBody::ManageData(_)
        | OperationBody::BumpSequence(_)
        | OperationBody::ManageBuyOffer(_)
        | OperationBody::PathPaymentStrictSend(_)
        | OperationBody::CreateClaimableBalance(_)
        | OperationBody::ClaimClaimableBalance(_)
        | OperationBody::BeginSponsoringFutureReserves(_)
        | OperationBody::EndSponsoringFutureReserves
        | OperationBody::RevokeSponsorship(_)
        | OperationBody::Clawback(_)
        | OperationBody::ClawbackClaimableBalance(_)
        | OperationBody::SetTrustLineFlags(_)
        | OperationBody::LiquidityPoolDeposit(_)
        | OperationBody::LiquidityPoolWithdraw(_) => OperationKind::Classic,
    }
}

/// The result a valid operation shows when its transaction is refused for another operation:
/// its success code (`opNOT_SUPPORTED` for unsupported operations).
pub(super) fn unapplied_result(body: &OperationBody) -> OperationResult {
    match body {
        OperationBody::CreateAccount(_) => OperationResult::OpInner(
            OperationResultTr::CreateAccount(CreateAccountResult::Success),
        ),
        OperationBody::Payment(PaymentOp {
            asset: Asset::Native,
            ..
        }) => OperationResult::OpInner(OperationResultTr::Payment(PaymentResult::Success)),
        OperationBody::InvokeHostFunction(_) => OperationResult::OpInner(
            OperationResultTr::InvokeHostFunction(InvokeHostFunctionResult::Success(Hash([0; 32]))),
        ),
        _ => OperationResult::OpNotSupported,
    }
}

/// Whether an operation succeeded.
pub(super) fn is_success(result: &OperationResult) -> bool {
    matches!(
        result,
        OperationResult::OpInner(
            OperationResultTr::CreateAccount(CreateAccountResult::Success)
                | OperationResultTr::Payment(PaymentResult::Success)
                | OperationResultTr::InvokeHostFunction(InvokeHostFunctionResult::Success(_))
        )
    )
}

/// Applies a classic operation of a transaction from `tx_source` into `delta`, in ledger
/// `sequence`.
pub(super) fn apply_operation(
    ledger: &Ledger,
    delta: &mut Delta,
    operation: &Operation,
    tx_source: &AccountId,
    sequence: u32,
) -> OperationResult {
    let source = operation
        .source_account
        .as_ref()
        .map_or_else(|| tx_source.clone(), muxed_account_id);
    match &operation.body {
        OperationBody::CreateAccount(op) => OperationResult::OpInner(
            OperationResultTr::CreateAccount(create_account(ledger, delta, op, &source, sequence)),
        ),
        OperationBody::Payment(
            op @ PaymentOp {
                asset: Asset::Native,
                ..
            },
        ) => OperationResult::OpInner(OperationResultTr::Payment(pay_native(
            ledger, delta, op, &source, sequence,
        ))),
        _ => OperationResult::OpNotSupported,
    }
}

fn create_account(
    ledger: &Ledger,
    delta: &mut Delta,
    op: &CreateAccountOp,
    source: &AccountId,
    sequence: u32,
) -> CreateAccountResult {
    if op.starting_balance <= 0 || op.destination == *source {
        return CreateAccountResult::Malformed;
    }
    if delta.account(ledger, &op.destination).is_some() {
        return CreateAccountResult::AlreadyExist;
    }
    if op.starting_balance < 2 * BASE_RESERVE {
        return CreateAccountResult::LowReserve;
    }
    let Some(mut payer) = delta.account(ledger, source) else {
        return CreateAccountResult::Underfunded;
    };
    if available_balance(&payer) < op.starting_balance {
        return CreateAccountResult::Underfunded;
    }
    payer.balance -= op.starting_balance;
    delta.put_account(payer, sequence);
    delta.put_account(
        new_account(
            op.destination.clone(),
            op.starting_balance,
            starting_sequence(sequence),
        ),
        sequence,
    );
    CreateAccountResult::Success
}

fn pay_native(
    ledger: &Ledger,
    delta: &mut Delta,
    op: &PaymentOp,
    source: &AccountId,
    sequence: u32,
) -> PaymentResult {
    if op.amount <= 0 {
        return PaymentResult::Malformed;
    }
    let destination = muxed_account_id(&op.destination);
    let Some(mut receiver) = delta.account(ledger, &destination) else {
        return PaymentResult::NoDestination;
    };
    let Some(mut payer) = delta.account(ledger, source) else {
        return PaymentResult::Underfunded;
    };
    if available_balance(&payer) < op.amount {
        return PaymentResult::Underfunded;
    }
    if destination == *source {
        return PaymentResult::Success;
    }
    let Some(received) = receiver
        .balance
        .checked_add(op.amount)
        .filter(|balance| *balance <= max_balance(&receiver))
    else {
        return PaymentResult::LineFull;
    };
    payer.balance -= op.amount;
    receiver.balance = received;
    delta.put_account(payer, sequence);
    delta.put_account(receiver, sequence);
    PaymentResult::Success
}
