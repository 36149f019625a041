//! The offline checks of an x402 `exact` payment on Stellar, shared by the [`Exact`] scheme
//! (before any facilitator call) and by the local facilitator (before simulating).
//!
//! [`Exact`]: super::Exact

use crate::stellar::xdr::SorobanAuthorizationEntry;
use crate::stellar::{
    Address, AuthError, NetworkId, SacTransfer, TransferError, address_credentials,
    decode_envelope, sac_transfer, verify_authorization,
};

/// Client-facing reasons (x402 `error` / `invalidReason`). Those of the Stellar scheme match the
/// TypeScript and OpenZeppelin facilitators' strings.
// Some reasons are only given by the local facilitator.
#[cfg_attr(not(feature = "local-facilitator"), allow(dead_code))]
pub(crate) mod reason {
    pub(crate) const PAYMENT_REQUIRED: &str = "Payment required";
    pub(crate) const INVALID_PAYLOAD: &str = "invalid_payload";
    pub(crate) const HEADER_TOO_LARGE: &str = "payment_header_too_large";
    pub(crate) const INVALID_VERSION: &str = "invalid_x402_version";
    pub(crate) const UNSUPPORTED_SCHEME: &str = "unsupported_scheme";
    pub(crate) const INVALID_NETWORK: &str = "invalid_network";
    pub(crate) const NO_MATCHING_REQUIREMENTS: &str = "invalid_payment_requirements";
    pub(crate) const MALFORMED: &str = "invalid_exact_stellar_payload_malformed";
    pub(crate) const WRONG_OPERATION: &str = "invalid_exact_stellar_payload_wrong_operation";
    pub(crate) const WRONG_FUNCTION: &str = "invalid_exact_stellar_payload_wrong_function_name";
    pub(crate) const WRONG_ARGS: &str = "invalid_exact_stellar_payload_wrong_function_args";
    pub(crate) const WRONG_ASSET: &str = "invalid_exact_stellar_payload_wrong_asset";
    pub(crate) const WRONG_RECIPIENT: &str = "invalid_exact_stellar_payload_wrong_recipient";
    pub(crate) const WRONG_AMOUNT: &str = "invalid_exact_stellar_payload_wrong_amount";
    pub(crate) const ENVELOPE_SIGNATURES: &str =
        "invalid_exact_stellar_payload_has_envelope_signatures";
    pub(crate) const NO_AUTH: &str = "invalid_exact_stellar_payload_no_auth_entries";
    pub(crate) const CREDENTIAL_TYPE: &str =
        "invalid_exact_stellar_payload_unsupported_credential_type";
    pub(crate) const SUB_INVOCATIONS: &str = "invalid_exact_stellar_payload_has_subinvocations";
    pub(crate) const AUTH_MISMATCH: &str = "invalid_exact_stellar_payload_auth_invocation_mismatch";
    pub(crate) const MISSING_PAYER_AUTH: &str = "invalid_exact_stellar_payload_missing_payer_auth";
    pub(crate) const MISSING_PAYER_SIGNATURE: &str =
        "invalid_exact_stellar_payload_missing_payer_signature";
    pub(crate) const BAD_SIGNATURE: &str = "invalid_exact_stellar_payload_bad_signature";
    pub(crate) const UNSAFE_SOURCE: &str = "invalid_exact_stellar_payload_unsafe_tx_or_op_source";
    pub(crate) const FACILITATOR_IS_PAYER: &str =
        "invalid_exact_stellar_payload_facilitator_is_payer";
    pub(crate) const FACILITATOR_IN_AUTH: &str =
        "invalid_exact_stellar_payload_facilitator_in_auth";
    pub(crate) const INVALID: &str = "invalid_payment";
    pub(crate) const SETTLE_FAILED: &str = "unexpected_settle_error";
    pub(crate) const SETTLE_UNKNOWN: &str = "settlement_outcome_unknown";
    /// The ledger shows a settlement whose answer was lost did not happen and cannot any more.
    pub(crate) const NOT_SETTLED: &str = "payment_not_settled";
    pub(crate) const FACILITATOR_UNAVAILABLE: &str = "facilitator_unavailable";
    pub(crate) const FACILITATOR_ERROR: &str = "facilitator_error";
    // Checks only a facilitator with a ledger view can make.
    pub(crate) const UNSUPPORTED_ASSET: &str = "unsupported_asset";
    pub(crate) const REQUIREMENTS_MALFORMED: &str = "invalid_exact_payload_malformed";
    pub(crate) const EXPIRED: &str = "invalid_exact_stellar_payload_auth_already_expired";
    pub(crate) const EXPIRATION_TOO_FAR: &str =
        "invalid_exact_stellar_signature_expiration_too_far";
    pub(crate) const FEE_TOO_HIGH: &str = "invalid_exact_stellar_payload_fee_exceeds_maximum";
    pub(crate) const FEE_TOO_LOW: &str = "invalid_exact_stellar_payload_fee_below_minimum";
    pub(crate) const SIMULATION_FAILED: &str = "invalid_exact_stellar_payload_simulation_failed";
    pub(crate) const NO_TRANSFER_EVENTS: &str = "invalid_exact_stellar_payload_no_transfer_events";
    pub(crate) const MULTIPLE_TRANSFERS: &str = "invalid_exact_stellar_payload_multiple_transfers";
    pub(crate) const UNEXPECTED_EVENTS: &str =
        "invalid_exact_stellar_payload_unexpected_balance_changes";
    pub(crate) const EVENT_WRONG_FROM: &str = "invalid_exact_stellar_payload_event_wrong_from";
    pub(crate) const EVENT_WRONG_TO: &str = "invalid_exact_stellar_payload_event_wrong_to";
    pub(crate) const EVENT_WRONG_AMOUNT: &str = "invalid_exact_stellar_payload_event_wrong_amount";
    pub(crate) const SUBMISSION_FAILED: &str = "settle_exact_stellar_transaction_submission_failed";
    pub(crate) const TRANSACTION_FAILED: &str = "settle_exact_stellar_transaction_failed";
}

/// What a payment must be.
pub(crate) struct Expected<'a> {
    pub(crate) network: crate::stellar::NetworkId,
    pub(crate) asset: &'a Address,
    pub(crate) pay_to: &'a Address,
    pub(crate) amount: i128,
    /// Whether an address is one of the facilitator's own keys.
    pub(crate) is_facilitator: &'a dyn Fn(&Address) -> bool,
}

/// Decodes a payment's transaction (within the engine's XDR limits) and finds the payer's
/// authorization entry: one SAC `transfer`, address credentials only, no sub-invocations, signed.
pub(crate) fn read_transfer(
    transaction: &str,
) -> Result<(SacTransfer, SorobanAuthorizationEntry), &'static str> {
    let envelope = decode_envelope(transaction).map_err(|e| transfer_reason(&e))?;
    let transfer = sac_transfer(&envelope).map_err(|e| transfer_reason(&e))?;
    let entry = transfer
        .payer_authorization()
        .map_err(|e| transfer_reason(&e))?
        .clone();
    Ok((transfer, entry))
}

/// The checks that need no ledger: no fee bump and no envelope signatures; the exact amount of
/// the asset to the recipient; the facilitator's keys neither the payer, a source, nor in an
/// authorization entry; a G payer's signatures valid and one of them the account's own key.
pub(crate) fn check_transfer(
    transfer: &SacTransfer,
    payer_entry: &SorobanAuthorizationEntry,
    expected: &Expected<'_>,
) -> Result<(), &'static str> {
    if transfer.fee_bump {
        return Err(reason::MALFORMED);
    }
    if transfer.envelope_signatures != 0 {
        return Err(reason::ENVELOPE_SIGNATURES);
    }
    if transfer.contract != *expected.asset {
        return Err(reason::WRONG_ASSET);
    }
    if transfer.to != *expected.pay_to {
        return Err(reason::WRONG_RECIPIENT);
    }
    if transfer.amount != expected.amount {
        return Err(reason::WRONG_AMOUNT);
    }
    check_facilitator_safety(transfer, expected.is_facilitator)?;
    check_signature(transfer, payer_entry, &expected.network)
}

fn check_facilitator_safety(
    transfer: &SacTransfer,
    is_facilitator: &dyn Fn(&Address) -> bool,
) -> Result<(), &'static str> {
    if is_facilitator(&transfer.from) {
        return Err(reason::FACILITATOR_IS_PAYER);
    }
    if is_facilitator(&transfer.tx_source)
        || transfer.op_source.as_ref().is_some_and(is_facilitator)
    {
        return Err(reason::UNSAFE_SOURCE);
    }
    let in_auth = transfer.auth.iter().any(|entry| {
        address_credentials(entry)
            .ok()
            .and_then(|credentials| Address::from_sc_address(&credentials.address).ok())
            .is_some_and(|address| is_facilitator(&address))
    });
    if in_auth {
        return Err(reason::FACILITATOR_IN_AUTH);
    }
    Ok(())
}

/// A G-account payer's signatures are checked offline: every signature must verify and one
/// must be the account's own key (offline we cannot see other signers' weights, and a
/// stranger's key proves nothing). A contract payer's are left to simulation.
fn check_signature(
    transfer: &SacTransfer,
    entry: &SorobanAuthorizationEntry,
    network: &NetworkId,
) -> Result<(), &'static str> {
    if !transfer.from.is_account() {
        return Ok(());
    }
    match verify_authorization(network, entry) {
        Ok(signers)
            if transfer
                .from
                .ed25519_key()
                .is_some_and(|key| signers.contains(&key)) =>
        {
            Ok(())
        }
        Ok(_) => Err(reason::BAD_SIGNATURE),
        Err(AuthError::Unsigned) => Err(reason::MISSING_PAYER_SIGNATURE),
        Err(error) => {
            tracing::debug!(%error, "payer authorization refused");
            Err(reason::BAD_SIGNATURE)
        }
    }
}

/// The x402 reason for a transaction that is not a well-formed SAC transfer.
pub(crate) fn transfer_reason(error: &TransferError) -> &'static str {
    match error {
        TransferError::OperationCount(_) | TransferError::NotInvokeContract => {
            reason::WRONG_OPERATION
        }
        TransferError::WrongFunction => reason::WRONG_FUNCTION,
        TransferError::WrongArguments => reason::WRONG_ARGS,
        TransferError::NoAuthorization => reason::NO_AUTH,
        TransferError::UnsupportedCredentials => reason::CREDENTIAL_TYPE,
        TransferError::SubInvocations => reason::SUB_INVOCATIONS,
        TransferError::InvocationMismatch => reason::AUTH_MISMATCH,
        TransferError::PayerNotAuthorized | TransferError::DuplicateAuthorization => {
            reason::MISSING_PAYER_AUTH
        }
        TransferError::UnsignedAuthorization => reason::MISSING_PAYER_SIGNATURE,
        TransferError::TooLarge
        | TransferError::InvalidXdr
        | TransferError::UnsupportedEnvelope
        | TransferError::InvalidContract
        | TransferError::NotSorobanTransaction
        | TransferError::InvalidSource
        | TransferError::Auth(_) => reason::MALFORMED,
    }
}
