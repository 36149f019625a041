//! Preparing a SAC `transfer` a payer authorizes, the way the official x402 client does it:
//! simulate from the source to learn the authorization entry (and its nonce), sign that entry
//! for a number of ledgers, simulate again with the signature, and assemble the resources and
//! fee into the transaction.

use std::time::{SystemTime, UNIX_EPOCH};

use super::auth::{address_credentials, sign_authorization_by};
use super::rpc::{RpcError, Simulation, SorobanRpc};
use super::signer::Signer;
use super::transfer::{
    CredentialsArm, TransferError, TransferRequest, build_transfer, invocation_envelope,
    set_authorization,
};
use super::xdr::{
    HostFunction, OperationBody, SorobanAuthorizationEntry, SorobanAuthorizedFunction,
    SorobanAuthorizedInvocation, SorobanCredentials, TransactionEnvelope, TransactionExt, VecM,
};
use super::{Address, NULL_ACCOUNT, Network};

/// The base fee of one operation, in stroops.
const BASE_FEE: u32 = 100;

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
    /// The simulation asks the payer to authorize more than the transfer (a token contract
    /// that calls others with the payer's authority, say): nothing is signed.
    #[error("the transfer asks for an authorization beyond itself: {0}")]
    UnexpectedAuthorization(&'static str),
}

/// Prepares `order` for `payer`: a transaction whose only authorization entry is the payer's,
/// signed until `latest + valid_for_ledgers`, with the simulated resources and fee, and no
/// envelope signature (the submitter signs the envelope).
///
/// The simulation must ask for exactly one authorization: of the payer, for
/// `contract.transfer(payer, to, amount)` itself, with no calls beneath it. A token contract
/// whose `transfer` would use the payer's authority for anything else (another token's
/// transfer, say) is refused with [`PrepareError::UnexpectedAuthorization`] before anything is
/// signed.
pub async fn prepare_transfer(
    rpc: &dyn SorobanRpc,
    network: &Network,
    payer: &dyn Signer,
    order: &TransferOrder,
) -> Result<TransactionEnvelope, PrepareError> {
    let transfer = build_transfer(&TransferRequest {
        source: order.source,
        sequence: order.sequence,
        fee: BASE_FEE,
        contract: order.contract,
        from: payer.address(),
        to: order.to,
        amount: order.amount,
        nonce: 0,
        signature_expiration_ledger: 0,
        max_time: 0,
        credentials: CredentialsArm::Address,
    })?;
    let host_function = host_function(&transfer).ok_or(TransferError::NotInvokeContract)?;
    let HostFunction::InvokeContract(call) = &host_function else {
        return Err(TransferError::NotInvokeContract.into());
    };
    let expected = SorobanAuthorizedInvocation {
        function: SorobanAuthorizedFunction::ContractFn(call.clone()),
        sub_invocations: VecM::default(),
    };
    let invocation = Invocation {
        source: order.source,
        sequence: order.sequence,
        fee: BASE_FEE,
        host_function,
        valid_for_ledgers: order.valid_for_ledgers,
        time_bound_seconds: order.time_bound_seconds,
    };
    prepare(rpc, network, payer, &invocation, Some(&expected)).await
}

/// The simulated authorizations of a transfer are exactly the payer's one of `expected`.
fn check_transfer_authorization(
    auth: &[SorobanAuthorizationEntry],
    payer: &Address,
    source: &Address,
    expected: &SorobanAuthorizedInvocation,
) -> Result<(), PrepareError> {
    let [entry] = auth else {
        return Err(PrepareError::UnexpectedAuthorization(
            "not exactly one authorization entry",
        ));
    };
    if entry.root_invocation != *expected {
        return Err(PrepareError::UnexpectedAuthorization(
            "the entry authorizes another call, or calls beneath the transfer",
        ));
    }
    let payers = match &entry.credentials {
        SorobanCredentials::Address(credentials) | SorobanCredentials::AddressV2(credentials) => {
            credentials.address == payer.to_sc_address()
        }
        // The envelope's signature authorizes it: only when the payer is the source.
        SorobanCredentials::SourceAccount => source == payer,
        SorobanCredentials::AddressWithDelegates(_) => false,
    };
    if !payers {
        return Err(PrepareError::UnexpectedAuthorization(
            "the entry is not the payer's",
        ));
    }
    Ok(())
}

/// A contract call to prepare.
#[derive(Clone, Debug, PartialEq)]
pub struct Invocation {
    /// The transaction source.
    pub source: Address,
    /// Its sequence number for this transaction.
    pub sequence: i64,
    /// The inclusion fee in stroops (the base fee: 100 per operation on the networks); the
    /// resource fee is added on top.
    pub fee: u32,
    /// What to invoke.
    pub host_function: HostFunction,
    /// For how many ledgers past the latest one signed authorizations stay valid.
    pub valid_for_ledgers: u32,
    /// Seconds the transaction's time bounds stay open from now.
    pub time_bound_seconds: u64,
}

/// Prepares a contract call the way wallets and the official clients do: simulate without
/// authorization to learn the entries to sign (nonces included), sign those of `signer`'s
/// address until `latest + valid_for_ledgers`, simulate again with the signatures enforced,
/// and put the resources and fee (base fee + resource fee) in. Entries of other addresses are
/// left unsigned; the envelope is not signed.
pub async fn prepare_invocation(
    rpc: &dyn SorobanRpc,
    network: &Network,
    signer: &dyn Signer,
    invocation: &Invocation,
) -> Result<TransactionEnvelope, PrepareError> {
    prepare(rpc, network, signer, invocation, None).await
}

/// [`prepare_invocation`], with the simulated authorizations checked against the one
/// transfer `expected` (when given) before anything is signed.
async fn prepare(
    rpc: &dyn SorobanRpc,
    network: &Network,
    signer: &dyn Signer,
    invocation: &Invocation,
    expected: Option<&SorobanAuthorizedInvocation>,
) -> Result<TransactionEnvelope, PrepareError> {
    let latest = rpc.latest_ledger().await?.sequence;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let mut envelope = invocation_envelope(
        &invocation.source,
        invocation.sequence,
        invocation.fee,
        invocation.host_function.clone(),
        now.saturating_add(invocation.time_bound_seconds),
    )?;
    let mut simulation = simulate(rpc, &envelope).await?;
    let mut auth = simulation
        .results
        .first()
        .map(|result| result.auth.clone())
        .unwrap_or_default();
    if let Some(expected) = expected {
        check_transfer_authorization(&auth, &signer.address(), &invocation.source, expected)?;
    }
    let expiration = latest.saturating_add(invocation.valid_for_ledgers);
    let signer_address = signer.address().to_sc_address();
    let mut signed = false;
    for entry in &mut auth {
        let mine = address_credentials(entry)
            .is_ok_and(|credentials| credentials.address == signer_address);
        if mine {
            sign_authorization_by(entry, signer, &network.id(), expiration)
                .await
                .map_err(TransferError::Auth)?;
            signed = true;
        }
    }
    set_authorization(&mut envelope, auth)?;
    if signed {
        // Again with the signatures enforced: their verification costs resources too.
        simulation = simulate(rpc, &envelope).await?;
    }
    assemble(&mut envelope, simulation)?;
    Ok(envelope)
}

/// Puts a simulation's Soroban data in the transaction and its resource fee on top of the fee.
fn assemble(
    envelope: &mut TransactionEnvelope,
    simulation: Simulation,
) -> Result<(), PrepareError> {
    let TransactionEnvelope::Tx(v1) = envelope else {
        return Err(TransferError::UnsupportedEnvelope.into());
    };
    let data = simulation
        .transaction_data
        .ok_or_else(|| PrepareError::Simulation("no transaction data".into()))?;
    let resource_fee = u32::try_from(data.resource_fee.max(0))
        .map_err(|_| PrepareError::Simulation("resource fee out of range".into()))?;
    v1.tx.fee = v1.tx.fee.saturating_add(resource_fee);
    v1.tx.ext = TransactionExt::V1(data);
    Ok(())
}

fn host_function(envelope: &TransactionEnvelope) -> Option<HostFunction> {
    let TransactionEnvelope::Tx(v1) = envelope else {
        return None;
    };
    v1.tx
        .operations
        .iter()
        .find_map(|operation| match &operation.body {
            OperationBody::InvokeHostFunction(invoke) => Some(invoke.host_function.clone()),
            _ => None,
        })
}

async fn simulate(
    rpc: &dyn SorobanRpc,
    envelope: &TransactionEnvelope,
) -> Result<Simulation, PrepareError> {
    let simulation = rpc.simulate_transaction(envelope).await?;
    if !simulation.is_success() {
        let error = simulation
            .error
            .unwrap_or_else(|| "no transaction data".into());
        return Err(PrepareError::Simulation(error.chars().take(300).collect()));
    }
    Ok(simulation)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stellar::{Keypair, USDC_TESTNET};

    /// Every way a simulated authorization may differ from the one transfer is refused.
    #[test]
    fn only_the_payers_authorization_of_the_transfer_itself_passes() {
        let payer = Keypair::from_seed([1; 32]).address();
        let other = Keypair::from_seed([2; 32]).address();
        let transfer = build_transfer(&TransferRequest {
            source: NULL_ACCOUNT,
            sequence: 1,
            fee: BASE_FEE,
            contract: USDC_TESTNET.parse().unwrap(),
            from: payer,
            to: other,
            amount: 10,
            nonce: 7,
            signature_expiration_ledger: 100,
            max_time: 0,
            credentials: CredentialsArm::Address,
        })
        .unwrap();
        let entry = transfer.auths().next().unwrap().clone();
        let expected = entry.root_invocation.clone();
        let check = |auth: &[SorobanAuthorizationEntry], source: &Address| {
            check_transfer_authorization(auth, &payer, source, &expected)
        };
        assert!(check(std::slice::from_ref(&entry), &NULL_ACCOUNT).is_ok());

        let refused = |auth: &[SorobanAuthorizationEntry], source: &Address| {
            matches!(
                check(auth, source),
                Err(PrepareError::UnexpectedAuthorization(_))
            )
        };
        assert!(refused(&[], &NULL_ACCOUNT));
        assert!(refused(&[entry.clone(), entry.clone()], &NULL_ACCOUNT));
        let mut deeper = entry.clone();
        deeper.root_invocation.sub_invocations = vec![expected.clone()].try_into().unwrap();
        assert!(refused(&[deeper], &NULL_ACCOUNT));
        let mut elsewhere = entry.clone();
        if let SorobanCredentials::Address(credentials) = &mut elsewhere.credentials {
            credentials.address = other.to_sc_address();
        }
        assert!(refused(&[elsewhere], &NULL_ACCOUNT));
        // Source-account credentials: the envelope's signature authorizes them, so only when
        // the payer is the source.
        let mut by_source = entry;
        by_source.credentials = SorobanCredentials::SourceAccount;
        assert!(refused(std::slice::from_ref(&by_source), &NULL_ACCOUNT));
        assert!(check(&[by_source], &payer).is_ok());
    }
}
