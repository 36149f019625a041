//! Calling any contract function through the sandbox's Soroban RPC, as a client does:
//! [`Sandbox::simulate_call`] only simulates (how clients read getters), [`Sandbox::invoke`] sends
//! a real signed transaction and closes a ledger to apply it.

use std::time::Duration;

use stellar_xdr::{
    BytesM, ContractEvent, DecoratedSignature, HostFunction, InvokeContractArgs,
    InvokeHostFunctionOp, Memo, MuxedAccount, Operation, OperationBody, Preconditions, ScSymbol,
    ScVal, SequenceNumber, Signature, SignatureHint, SorobanAuthorizationEntry, StringM,
    TimeBounds, TimePoint, Transaction, TransactionEnvelope, TransactionExt, TransactionMeta,
    TransactionV1Envelope, VecM,
};

use super::diagnostics::describe;
use super::ledger::unix_now;
use super::{Sandbox, SandboxError};
use crate::stellar::rpc::{RpcError, SendStatus, Simulation, SorobanRpc, TransactionHash};
use crate::stellar::{
    Address, Keypair, NULL_ACCOUNT, NetworkId, TransactionStatus, account_sequence,
    address_credentials, set_authorization, sign_authorization,
};

/// How long a transaction built by [`Sandbox::invoke`] stays valid.
const VALID_FOR: Duration = Duration::from_secs(300);

/// For how many ledgers the authorization entries [`Sandbox::invoke`] signs stay valid.
const SIGNATURE_LEDGERS: u32 = 100;

/// A contract function call: `contract.function(args)`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tower_paywall::sandbox::{ContractCall, Sandbox, SandboxConfig};
/// use tower_paywall::stellar::xdr::ScVal;
///
/// let sandbox = Sandbox::start(SandboxConfig::default().auto_close(false))?;
/// let holder = sandbox.funded_keypair().await?;
/// let balance = ContractCall::new(
///     sandbox.usdc(),
///     "balance",
///     vec![ScVal::Address(holder.address().to_sc_address())],
/// );
/// // A read: simulated, nothing sent.
/// let before = sandbox.simulate_call(&balance).await?;
/// // A real transaction from `holder`, applied in the ledger `invoke` closes.
/// let invoked = sandbox.invoke(&holder, &balance).await?;
/// assert_eq!(invoked.return_value, before);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContractCall {
    /// The contract.
    pub contract: Address,
    /// The function's name (a symbol: at most 32 characters of `[A-Za-z0-9_]`).
    pub function: String,
    /// The arguments.
    pub args: Vec<ScVal>,
}

impl ContractCall {
    /// `contract.function(args)`.
    #[must_use]
    pub fn new(contract: Address, function: impl Into<String>, args: Vec<ScVal>) -> ContractCall {
        ContractCall {
            contract,
            function: function.into(),
            args,
        }
    }

    /// The `invokeHostFunction` host function.
    fn host_function(&self) -> Result<HostFunction, SandboxError> {
        let function = StringM::try_from(self.function.as_str())
            .map_err(|_| SandboxError::Host(format!("`{}` is not a symbol", self.function)))?;
        let args = VecM::try_from(self.args.clone())
            .map_err(|_| SandboxError::Host("too many arguments".into()))?;
        Ok(HostFunction::InvokeContract(InvokeContractArgs {
            contract_address: self.contract.to_sc_address(),
            function_name: ScSymbol(function),
            args,
        }))
    }
}

/// A contract call applied in a ledger: [`Sandbox::invoke`]'s answer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Invoked {
    /// The transaction's hash.
    pub hash: TransactionHash,
    /// The ledger it is in.
    pub ledger: u32,
    /// The function's return value.
    pub return_value: ScVal,
    /// The contract events it emitted, in order.
    pub events: Vec<ContractEvent>,
}

impl Sandbox {
    /// Simulates `call` from the all-zeros account (authorization recorded, not required) and
    /// returns its value: how clients read a contract's getters. Nothing is sent.
    ///
    /// # Errors
    ///
    /// [`SandboxError::Host`] with the simulation's error (`HostError: Error(Contract, #3)` …)
    /// if the call fails; [`SandboxError::Stopped`].
    pub async fn simulate_call(&self, call: &ContractCall) -> Result<ScVal, SandboxError> {
        let envelope = envelope(&NULL_ACCOUNT, 1, 100, call.host_function()?)?;
        let simulation = self.simulate_ok(&envelope).await?;
        Ok(simulation
            .result()
            .and_then(|result| result.retval.clone())
            .unwrap_or(ScVal::Void))
    }

    /// Calls `call` as `source` through a real transaction, the way a wallet does it: simulate
    /// to learn the authorization; sign the entries of `source`'s address (valid for 100
    /// ledgers; authorization as the transaction source needs none); simulate again if any
    /// was signed; put the resources and fee (base fee + resource fee) in; sign the envelope;
    /// `sendTransaction`; then close a ledger (even with automatic closes on) and read the
    /// outcome with `getTransaction`. Authorization required of any other address is left
    /// unsigned, and fails.
    ///
    /// # Errors
    ///
    /// [`SandboxError::Host`] with the simulation's error (`HostError: Error(Contract, #3)`,
    /// `Error(Auth, …)`, …) when the call does not simulate: nothing is sent then;
    /// [`SandboxError::Transaction`] when `source` has no account, or the transaction was
    /// refused or failed in its ledger; [`SandboxError::Stopped`].
    pub async fn invoke(
        &self,
        source: &Keypair,
        call: &ContractCall,
    ) -> Result<Invoked, SandboxError> {
        let network = self.network().id();
        let sequence =
            account_sequence(self, &source.address())
                .await
                .map_err(|error| match error {
                    RpcError::Unreachable(_) => SandboxError::Stopped,
                    other => SandboxError::Transaction(other.to_string()),
                })?;
        let mut envelope = envelope(
            &source.address(),
            sequence.saturating_add(1),
            self.inner.base_fee,
            call.host_function()?,
        )?;
        let mut simulation = self.simulate_ok(&envelope).await?;
        let mut auth = simulation
            .result()
            .map(|result| result.auth.clone())
            .unwrap_or_default();
        let expiration = simulation.latest_ledger.saturating_add(SIGNATURE_LEDGERS);
        let signed = sign_entries(&mut auth, source, &network, expiration)?;
        set_authorization(&mut envelope, auth)
            .map_err(|error| SandboxError::Host(error.to_string()))?;
        if signed {
            // Again with the signatures enforced: the resources of their verification.
            simulation = self.simulate_ok(&envelope).await?;
        }
        assemble(&mut envelope, &simulation)?;
        sign_envelope(&mut envelope, source, &network)?;

        let sent = self.send_transaction(&envelope).await.map_err(stopped)?;
        if sent.status != SendStatus::Pending {
            return Err(SandboxError::Transaction(format!(
                "{} was refused: {} {:?}",
                sent.hash,
                sent.status.as_str(),
                sent.error_result.map(|result| result.result)
            )));
        }
        self.close_ledger().await?;
        let info = self.transaction(&sent.hash).await.map_err(stopped)?;
        let meta = match info.result_meta {
            Some(TransactionMeta::V4(meta)) => Some(meta),
            _ => None,
        };
        if info.status != TransactionStatus::Success {
            let diagnostics = meta
                .map(|meta| meta.diagnostic_events.to_vec())
                .unwrap_or_default();
            let result = info.result.map(|result| result.result);
            return Err(SandboxError::Transaction(format!(
                "{} {}: {}",
                sent.hash,
                info.status.as_str(),
                describe(&result, &diagnostics)
            )));
        }
        let (return_value, events) = meta.map_or((ScVal::Void, Vec::new()), |meta| {
            let value = meta
                .soroban_meta
                .and_then(|soroban| soroban.return_value)
                .unwrap_or(ScVal::Void);
            let events = meta
                .operations
                .iter()
                .flat_map(|operation| operation.events.iter().cloned())
                .collect();
            (value, events)
        });
        Ok(Invoked {
            hash: sent.hash,
            ledger: info.ledger.unwrap_or(info.latest_ledger),
            return_value,
            events,
        })
    }

    /// `simulateTransaction`, successful.
    async fn simulate_ok(
        &self,
        envelope: &TransactionEnvelope,
    ) -> Result<Simulation, SandboxError> {
        let simulation = self.simulate_transaction(envelope).await.map_err(stopped)?;
        if simulation.is_success() {
            Ok(simulation)
        } else {
            Err(SandboxError::Host(simulation.error.unwrap_or_else(|| {
                "the simulation returned no transaction data".into()
            })))
        }
    }
}

/// The sandbox's RPC fails only when it has stopped.
fn stopped(_: RpcError) -> SandboxError {
    SandboxError::Stopped
}

/// An unsigned v1 transaction of one `invokeHostFunction` operation without authorization,
/// valid for [`VALID_FOR`].
fn envelope(
    source: &Address,
    sequence: i64,
    fee: u32,
    host_function: HostFunction,
) -> Result<TransactionEnvelope, SandboxError> {
    let source_account: MuxedAccount = source
        .to_muxed_account()
        .ok_or_else(|| SandboxError::Transaction(format!("{source} is not an account")))?;
    let operation = Operation {
        source_account: None,
        body: OperationBody::InvokeHostFunction(InvokeHostFunctionOp {
            host_function,
            auth: VecM::default(),
        }),
    };
    let tx = Transaction {
        source_account,
        fee,
        seq_num: SequenceNumber(sequence),
        cond: Preconditions::Time(TimeBounds {
            min_time: TimePoint(0),
            max_time: TimePoint(unix_now().saturating_add(VALID_FOR.as_secs())),
        }),
        memo: Memo::None,
        operations: VecM::try_from(vec![operation])
            .map_err(|_| SandboxError::Host("one operation fits".into()))?,
        ext: TransactionExt::V0,
    };
    Ok(TransactionEnvelope::Tx(TransactionV1Envelope {
        tx,
        signatures: VecM::default(),
    }))
}

/// Signs the entries whose address is `signer`'s; whether any was.
fn sign_entries(
    auth: &mut [SorobanAuthorizationEntry],
    signer: &Keypair,
    network: &NetworkId,
    expiration: u32,
) -> Result<bool, SandboxError> {
    let address = signer.address().to_sc_address();
    let mut signed = false;
    for entry in auth {
        let mine =
            address_credentials(entry).is_ok_and(|credentials| credentials.address == address);
        if mine {
            sign_authorization(entry, signer, network, expiration)
                .map_err(|error| SandboxError::Host(error.to_string()))?;
            signed = true;
        }
    }
    Ok(signed)
}

/// Puts a simulation's Soroban data in the transaction and adds its resource fee to the fee.
fn assemble(
    envelope: &mut TransactionEnvelope,
    simulation: &Simulation,
) -> Result<(), SandboxError> {
    let TransactionEnvelope::Tx(v1) = envelope else {
        return Err(SandboxError::Host("not a v1 envelope".into()));
    };
    let data = simulation
        .transaction_data
        .clone()
        .ok_or_else(|| SandboxError::Host("the simulation returned no transaction data".into()))?;
    let resource_fee = u32::try_from(data.resource_fee.max(0))
        .map_err(|_| SandboxError::Host("the resource fee is out of range".into()))?;
    v1.tx.fee = v1.tx.fee.saturating_add(resource_fee);
    v1.tx.ext = TransactionExt::V1(data);
    Ok(())
}

/// Adds `keypair`'s decorated signature over the transaction hash.
fn sign_envelope(
    envelope: &mut TransactionEnvelope,
    keypair: &Keypair,
    network: &NetworkId,
) -> Result<(), SandboxError> {
    let hash = envelope
        .hash(network.0)
        .map_err(|_| SandboxError::Host("the transaction does not encode".into()))?;
    let TransactionEnvelope::Tx(v1) = envelope else {
        return Err(SandboxError::Host("not a v1 envelope".into()));
    };
    let key = keypair.public_key();
    let signature = DecoratedSignature {
        hint: SignatureHint([key[28], key[29], key[30], key[31]]),
        // Invariant: an ed25519 signature is 64 bytes.
        signature: Signature(BytesM::try_from(keypair.sign(&hash).to_vec()).expect("64 bytes fit")),
    };
    let mut signatures = v1.signatures.to_vec();
    signatures.push(signature);
    v1.signatures =
        VecM::try_from(signatures).map_err(|_| SandboxError::Host("too many signatures".into()))?;
    Ok(())
}
