//! Paying an x402 `exact` offer on Stellar the way `@x402/stellar` does: a sponsored transfer
//! (NULL_ACCOUNT source) simulated, its authorization entry signed until
//! `latest + ⌈maxTimeoutSeconds / 5⌉` (at most [`MAX_AUTHORIZATION_SECONDS`](super::MAX_AUTHORIZATION_SECONDS)),
//! simulated again with the signature enforced.

use http::{HeaderName, HeaderValue};
use serde_json::json;

use super::PayError;
use crate::stellar::rpc::SorobanRpc;
use crate::stellar::xdr::{Limits, ScVal, WriteXdr};
use crate::stellar::{Network, Signer, TransferOrder, address_credentials, prepare_transfer};
use crate::x402::header::{PAYMENT_SIGNATURE, X_PAYMENT};
use crate::x402::{PaymentRequirements, ResourceInfo, X402_VERSION};

/// The ledger close time the official client falls back to.
const LEDGER_SECONDS: u64 = 5;

/// The header and value that pay `requirements`.
pub(crate) async fn payment(
    rpc: &dyn SorobanRpc,
    network: &Network,
    signer: &dyn Signer,
    requirements: &PaymentRequirements,
    resource: Option<&ResourceInfo>,
    in_header: bool,
) -> Result<(HeaderName, HeaderValue), PayError> {
    let sponsored = requirements
        .extra
        .get("areFeesSponsored")
        .is_some_and(|value| value.as_bool() == Some(true));
    if !sponsored {
        return Err(PayError::Unsupported(
            "x402 exact on Stellar needs the facilitator to sponsor the fees",
        ));
    }
    let invalid = |_| PayError::InvalidOffer("x402 requirements");
    let valid_for_ledgers = requirements
        .max_timeout_seconds
        .min(super::MAX_AUTHORIZATION_SECONDS)
        .div_ceil(LEDGER_SECONDS)
        .max(1);
    let order = TransferOrder::sponsored(
        requirements.asset.parse().map_err(invalid)?,
        requirements.pay_to.parse().map_err(invalid)?,
        requirements
            .amount
            .parse()
            .map_err(|_| PayError::InvalidOffer("x402 amount"))?,
        u32::try_from(valid_for_ledgers).unwrap_or(u32::MAX),
    );
    let envelope = prepare_transfer(rpc, network, signer, &order).await?;
    // The official client refuses a transaction that still needs someone else's signature.
    let unsigned = envelope.auths().any(|entry| {
        address_credentials(entry).is_ok_and(|credentials| credentials.signature == ScVal::Void)
    });
    if unsigned {
        return Err(PayError::Unsupported(
            "the transfer needs another account's authorization",
        ));
    }
    let transaction = envelope
        .to_xdr_base64(Limits::none())
        .map_err(|_| PayError::InvalidOffer("x402 transaction"))?;
    let mut payload = json!({
        "x402Version": X402_VERSION,
        "accepted": requirements,
        "payload": {"transaction": transaction},
    });
    if let Some(resource) = resource {
        payload["resource"] = json!(resource);
    }
    let value = crate::x402::header::encode(&payload)
        .map_err(|_| PayError::InvalidOffer("x402 payload"))?;
    let name = if in_header {
        PAYMENT_SIGNATURE
    } else {
        X_PAYMENT
    };
    Ok((name, value))
}
