//! What a SAC `transfer` must leave behind: its contract events.

use super::SacTransfer;
use super::xdr::{
    ContractEventBody, ContractEventType, DiagnosticEvent, ScAddress, ScMapEntry, ScSymbol, ScVal,
};

/// Why a transaction's events are not exactly one expected transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransferEventError {
    /// No transfer event.
    #[error("no transfer event")]
    NoTransfer,
    /// More than one transfer event.
    #[error("more than one transfer event")]
    MultipleTransfers,
    /// A contract event other than the asset's transfer.
    #[error("an unexpected contract event")]
    Unexpected,
    /// The transfer's `from` differs.
    #[error("the transfer event's sender differs")]
    WrongFrom,
    /// The transfer's `to` differs.
    #[error("the transfer event's recipient differs")]
    WrongTo,
    /// The transfer's amount differs.
    #[error("the transfer event's amount differs")]
    WrongAmount,
}

/// Checks a simulation's or a transaction's events: exactly one contract event, the asset's
/// `transfer(from, to, amount)` of `transfer`, and no other contract event (nothing else moved).
pub fn check_transfer_events(
    events: &[DiagnosticEvent],
    transfer: &SacTransfer,
) -> Result<(), TransferEventError> {
    let asset = transfer.contract.to_sc_address();
    let mut transfers = Vec::new();
    for event in events {
        let event = &event.event;
        if event.type_ != ContractEventType::Contract {
            continue;
        }
        let ContractEventBody::V0(body) = &event.body;
        let from_asset = event
            .contract_id
            .as_ref()
            .is_some_and(|id| ScAddress::Contract(id.clone()) == asset);
        let is_transfer = matches!(body.topics.first(), Some(ScVal::Symbol(name)) if name.as_vec() == b"transfer");
        if !from_asset || !is_transfer {
            return Err(TransferEventError::Unexpected);
        }
        transfers.push(body);
    }
    let body = match transfers.as_slice() {
        [] => return Err(TransferEventError::NoTransfer),
        [body] => body,
        _ => return Err(TransferEventError::MultipleTransfers),
    };
    let topic = |index: usize| match body.topics.get(index) {
        Some(ScVal::Address(address)) => Some(address.clone()),
        _ => None,
    };
    if topic(1) != Some(transfer.from.to_sc_address()) {
        return Err(TransferEventError::WrongFrom);
    }
    if topic(2) != Some(transfer.to.to_sc_address()) {
        return Err(TransferEventError::WrongTo);
    }
    if event_amount(&body.data) != Some(transfer.amount) {
        return Err(TransferEventError::WrongAmount);
    }
    Ok(())
}

/// A transfer event's amount: an `i128`, or (muxed recipients, CAP-67) a map with `amount`.
pub(crate) fn event_amount(data: &ScVal) -> Option<i128> {
    match data {
        ScVal::I128(parts) => Some((i128::from(parts.hi) << 64) | i128::from(parts.lo)),
        ScVal::Map(Some(map)) => map.iter().find_map(|ScMapEntry { key, val }| match key {
            ScVal::Symbol(ScSymbol(name)) if name.as_vec() == b"amount" => event_amount(val),
            _ => None,
        }),
        _ => None,
    }
}
