//! Preparing a SAC `transfer` a payer authorizes, the way the official x402 client does it:
//! simulate from the source to learn the authorization entry (and its nonce), sign that entry
//! for a number of ledgers, simulate again with the signature, and assemble the resources and
//! fee into the transaction.

use std::time::{SystemTime, UNIX_EPOCH};

use super::rpc::{RpcError, SorobanRpc};
use super::transfer::{
    CredentialsArm, TransferError, TransferRequest, build_transfer, set_authorization, sign_payer,
};
use super::xdr::{TransactionEnvelope, TransactionExt};
use super::{Address, Keypair, NULL_ACCOUNT, Network};

/// A transfer to prepare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferOrder {
    /// The token contract (a SAC or SEP-41 token).
    pub contract: Address,
    /// The recipient.
    pub to: Address,
    /// The amount, in the token's atomic units.
    pub amount: i128,
    /// For how many ledgers past the latest one the authorization stays valid
    /// (x402: ⌈maxTimeoutSeconds / 5⌉).
    pub valid_for_ledgers: u32,
    /// The transaction source and its sequence number: [`NULL_ACCOUNT`] and 1 when someone else
    /// (a facilitator, a fee-paying server) submits it.
    pub source: Address,
    /// The sequence number to use.
    pub sequence: i64,
    /// Seconds the transaction's time bounds stay open from now (the official client: 300).
    pub time_bound_seconds: u64,
}

impl TransferOrder {
    /// A sponsored transfer (source [`NULL_ACCOUNT`]) valid for `valid_for_ledgers` ledgers.
    pub fn sponsored(contract: Address, to: Address, amount: i128, valid_for_ledgers: u32) -> Self {
        TransferOrder {
            contract,
            to,
            amount,
            valid_for_ledgers,
            source: NULL_ACCOUNT,
            sequence: 1,
            time_bound_seconds: 300,
        }
    }
}

/// Why a transfer could not be prepared.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrepareError {
    /// The RPC failed.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The transfer does not simulate (an unfunded payer, a missing trustline …).
    #[error("the transfer does not simulate: {0}")]
    Simulation(String),
    /// The transaction could not be built or signed.
    #[error(transparent)]
    Transfer(#[from] TransferError),
}

/// Prepares `order` for `payer`: a transaction whose only authorization entry is the payer's,
/// signed until `latest + valid_for_ledgers`, with the simulated resources and fee, and no
/// envelope signature (the submitter signs the envelope).
pub async fn prepare_transfer(
    rpc: &dyn SorobanRpc,
    network: &Network,
    payer: &Keypair,
    order: &TransferOrder,
) -> Result<TransactionEnvelope, PrepareError> {
    let latest = rpc.latest_ledger().await?.sequence;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let mut envelope = build_transfer(&TransferRequest {
        source: order.source,
        sequence: order.sequence,
        fee: 100,
        contract: order.contract,
        from: payer.address(),
        to: order.to,
        amount: order.amount,
        nonce: 0,
        signature_expiration_ledger: 0,
        max_time: now + order.time_bound_seconds,
        credentials: CredentialsArm::Address,
    })?;
    // First simulation without authorization: the RPC records the entry to sign, nonce included.
    set_authorization(&mut envelope, Vec::new())?;
    let recorded = simulate(rpc, &envelope).await?;
    let auth = recorded
        .results
        .first()
        .map(|result| result.auth.clone())
        .unwrap_or_default();
    set_authorization(&mut envelope, auth)?;
    sign_payer(
        &mut envelope,
        payer,
        &network.id(),
        latest.saturating_add(order.valid_for_ledgers),
    )?;
    // Second simulation with the signature enforced: the final resources and fee.
    let enforced = simulate(rpc, &envelope).await?;
    if let TransactionEnvelope::Tx(v1) = &mut envelope {
        let data = enforced
            .transaction_data
            .ok_or_else(|| PrepareError::Simulation("no transaction data".into()))?;
        v1.tx.ext = TransactionExt::V1(data);
        let resource_fee = u32::try_from(enforced.min_resource_fee.max(0))
            .map_err(|_| PrepareError::Simulation("resource fee out of range".into()))?;
        v1.tx.fee = 100u32.saturating_add(resource_fee);
    }
    Ok(envelope)
}

async fn simulate(
    rpc: &dyn SorobanRpc,
    envelope: &TransactionEnvelope,
) -> Result<super::rpc::Simulation, PrepareError> {
    let simulation = rpc.simulate_transaction(envelope).await?;
    if !simulation.is_success() {
        let error = simulation
            .error
            .unwrap_or_else(|| "no transaction data".into());
        return Err(PrepareError::Simulation(error.chars().take(300).collect()));
    }
    Ok(simulation)
}
