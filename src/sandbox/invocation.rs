//! Calling any contract function through the sandbox's Soroban RPC, as a client does:
//! [`Sandbox::simulate_call`] only simulates (how clients read getters), [`Sandbox::invoke`] sends
//! a real signed transaction and closes a ledger to apply it.

use std::time::Duration;

use stellar_xdr::{
    ContractEvent, HostFunction, InvokeContractArgs, ScSymbol, ScVal, StringM, TransactionEnvelope,
    TransactionMeta, VecM,
};

use super::diagnostics::describe;
use super::ledger::unix_now;
use super::{Sandbox, SandboxError};
use crate::stellar::rpc::{RpcError, SendStatus, Simulation, SorobanRpc, TransactionHash};
use crate::stellar::{
    Address, Invocation, Keypair, NULL_ACCOUNT, PrepareError, TransactionStatus, account_sequence,
    invocation_envelope, prepare_invocation, sign_envelope,
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
        let max_time = unix_now().saturating_add(VALID_FOR.as_secs());
        let envelope = invocation_envelope(&NULL_ACCOUNT, 1, 100, call.host_function()?, max_time)
            .map_err(|error| SandboxError::Host(error.to_string()))?;
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
        let sequence =
            account_sequence(self, &source.address())
                .await
                .map_err(|error| match error {
                    RpcError::Unreachable(_) => SandboxError::Stopped,
                    other => SandboxError::Transaction(other.to_string()),
                })?;
        let invocation = Invocation {
            source: source.address(),
            sequence: sequence.saturating_add(1),
            fee: self.inner.base_fee,
            host_function: call.host_function()?,
            valid_for_ledgers: SIGNATURE_LEDGERS,
            time_bound_seconds: VALID_FOR.as_secs(),
        };
        let network = self.network().clone();
        let mut envelope = prepare_invocation(self, &network, source, &invocation)
            .await
            .map_err(|error| match error {
                PrepareError::Rpc(_) => SandboxError::Stopped,
                PrepareError::Simulation(message) => SandboxError::Host(message),
                other => SandboxError::Host(other.to_string()),
            })?;
        sign_envelope(&mut envelope, source, &network.id())
            .map_err(|error| SandboxError::Host(error.to_string()))?;

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
