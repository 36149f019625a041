//! Paying an MPP `charge` challenge of method `stellar`, as `@stellar/mpp`'s client does:
//!
//! - **pull, sponsored** (`feePayer: true`): a transfer from the all-zeros source whose
//!   authorization entry is signed until `latest + ⌈(expires − now) / 5⌉` (at most
//!   [`MAX_AUTHORIZATION_SECONDS`](super::MAX_AUTHORIZATION_SECONDS)); the server submits it
//!   and pays the fee;
//! - **pull, unsponsored**: the same transfer from the payer's own account, the envelope
//!   signed (its fee at most [`MAX_FEE_STROOPS`](super::MAX_FEE_STROOPS)); the server submits
//!   it unmodified;
//! - **push**: the payer submits that transaction itself, waits until it succeeds, and sends
//!   `{type: "signedHash", hash, sourceSignature}` (a signature over `"{challenge id}:{hash}"`).

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::offer::ChargeRequest;
use super::{Failure, PayError};
use crate::mpp::Challenge;
use crate::stellar::rpc::{
    SendStatus, SorobanRpc, TransactionStatus, account_sequence, wait_for_transaction,
};
use crate::stellar::xdr::{Limits, TransactionEnvelope, WriteXdr};
use crate::stellar::{Network, Signer, TransferOrder, prepare_transfer, sign_envelope_by};

/// The ledger close time the official client assumes.
const LEDGER_SECONDS: u64 = 5;
/// The validity the official client uses when a challenge has no expiry.
const NO_EXPIRY_SECONDS: u64 = 180;
/// How long a pushed transaction is waited for.
const PUSH_DEADLINE: Duration = Duration::from_secs(60);

/// How the client pays an MPP `charge` the server does not sponsor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChargeMode {
    /// The server submits the client's signed transaction (the default).
    #[default]
    Pull,
    /// The client submits the transaction and proves it (`signedHash`); the server must list
    /// `signedHash` among its credential types.
    Push,
}

/// The credential's payload for `challenge`.
pub(crate) async fn payload(
    rpc: &dyn SorobanRpc,
    network: &Network,
    signer: &dyn Signer,
    challenge: &Challenge,
    request: &ChargeRequest,
    mode: ChargeMode,
) -> Result<Value, Failure> {
    let takes = |kind: &str| {
        request.credential_types.is_empty() || request.credential_types.iter().any(|t| t == kind)
    };
    let seconds = seconds_left(challenge)?;
    let valid_for_ledgers = u32::try_from(seconds.div_ceil(LEDGER_SECONDS).max(1))
        .map_err(|_| PayError::InvalidOffer("charge expiry"))?;
    let mut order = TransferOrder::sponsored(
        request.currency,
        request.recipient,
        request.amount,
        valid_for_ledgers,
    );
    order.time_bound_seconds = seconds;
    if request.fee_payer {
        if !takes("transaction") {
            return Err(PayError::Unsupported(
                "the sponsored charge takes no transaction credential",
            )
            .into());
        }
        let envelope = prepare_transfer(rpc, network, signer, &order).await?;
        return Ok(json!({"type": "transaction", "transaction": base64(&envelope)?}));
    }
    let push = mode == ChargeMode::Push;
    if push && !request.credential_types.iter().any(|t| t == "signedHash") {
        return Err(PayError::Unsupported("the server takes no pushed (signedHash) charge").into());
    }
    if !push && !takes("transaction") {
        return Err(PayError::Unsupported("the server takes no transaction credential").into());
    }
    order.source = signer.address();
    order.sequence = account_sequence(rpc, &order.source)
        .await?
        .saturating_add(1);
    let mut envelope = prepare_transfer(rpc, network, signer, &order).await?;
    // The payer pays this one's fee: a contract that makes it dear is refused.
    let fee = match &envelope {
        TransactionEnvelope::Tx(v1) => v1.tx.fee,
        _ => u32::MAX,
    };
    if fee > super::MAX_FEE_STROOPS {
        return Err(
            PayError::Unsupported("the transaction's fee is above the client's cap").into(),
        );
    }
    sign_envelope_by(&mut envelope, signer, &network.id()).await?;
    if !push {
        return Ok(json!({"type": "transaction", "transaction": base64(&envelope)?}));
    }
    // Sent, the transaction may land whatever happens next: every failure from here on counts
    // as spent (a lost answer to the send too).
    let sent = rpc
        .send_transaction(&envelope)
        .await
        .map_err(Failure::spent)?;
    if sent.status != SendStatus::Pending {
        return Err(PayError::Submission(format!("{:?}", sent.status)).into());
    }
    let info = wait_for_transaction(rpc, &sent.hash, PUSH_DEADLINE)
        .await
        .map_err(Failure::spent)?;
    if info.status != TransactionStatus::Success {
        return Err(PayError::Submission(format!("{:?}", info.status)).into());
    }
    let message = crate::mpp::charge::push_message(&challenge.id, &sent.hash);
    let signature = crate::stellar::signer::sign_checked(signer, message.as_bytes())
        .await
        .map_err(|error| Failure::spent(PayError::Signer(error.to_string())))?;
    Ok(json!({
        "type": "signedHash",
        "hash": sent.hash.to_string(),
        "sourceSignature": hex::encode(signature),
    }))
}

/// Seconds until the challenge expires (the official client's default without an expiry).
fn seconds_left(challenge: &Challenge) -> Result<u64, PayError> {
    let Some(expires) = challenge
        .expires_at()
        .map_err(|_| PayError::InvalidOffer("charge expiry"))?
    else {
        return Ok(NO_EXPIRY_SECONDS.min(super::MAX_AUTHORIZATION_SECONDS));
    };
    let left = expires
        .to_system_time()
        .and_then(|expires| expires.duration_since(SystemTime::now()).ok())
        .filter(|left| !left.is_zero())
        .ok_or(PayError::InvalidOffer("the challenge has expired"))?;
    Ok(left.as_secs().clamp(1, super::MAX_AUTHORIZATION_SECONDS))
}

fn base64(envelope: &TransactionEnvelope) -> Result<String, PayError> {
    envelope
        .to_xdr_base64(Limits::none())
        .map_err(|_| PayError::InvalidOffer("charge transaction"))
}
