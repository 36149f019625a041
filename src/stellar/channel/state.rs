//! A channel on the ledger: its state, read from its instance storage and its token balance,
//! and the recipient's `settle` and `close` calls.

use stellar_xdr::{
    BytesM, ContractDataDurability, HostFunction, InvokeContractArgs, LedgerEntryData, LedgerKey,
    LedgerKeyContractData, ScBytes, ScMap, ScSymbol, ScVal, ScVec, SorobanAuthorizationEntry,
    SorobanAuthorizedFunction, SorobanAuthorizedInvocation, SorobanCredentials, StringM, VecM,
};

use crate::stellar::rpc::{RpcError, SorobanRpc};
use crate::stellar::transfer::{i128_from_parts, i128_to_parts, invocation_envelope};
use crate::stellar::{Address, NULL_ACCOUNT};

/// A channel's state on the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelInfo {
    /// The channel contract.
    pub channel: Address,
    /// The token it holds (`Token`).
    pub token: Address,
    /// The funder (`From`).
    pub from: Address,
    /// The recipient (`To`): only it may settle or close.
    pub to: Address,
    /// The ed25519 key whose signatures the contract accepts (`CommitmentKey`).
    pub commitment_key: [u8; 32],
    /// Ledgers between the funder's `close_start` and its refund (`RefundWaitingPeriod`).
    pub refund_waiting_period: u32,
    /// The cumulative amount already paid out to the recipient (`WithdrawnAmount`).
    pub withdrawn: i128,
    /// The channel's token balance.
    pub balance: i128,
    /// The ledger from which the channel is closed and the funder may take the balance back
    /// (`CloseEffectiveAtLedger`); `None` while nobody started a close.
    pub close_effective_at: Option<u32>,
    /// The latest ledger when this was read.
    pub latest_ledger: u32,
}

impl ChannelInfo {
    /// Everything the funder put in: the balance plus what was paid out. A voucher for more
    /// can never be settled.
    #[must_use]
    pub fn deposited(&self) -> i128 {
        self.balance.saturating_add(self.withdrawn)
    }

    /// Whether the close is effective as of the latest ledger (the funder may refund).
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.close_effective_at
            .is_some_and(|effective| effective <= self.latest_ledger)
    }
}

/// Why a channel could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelReadError {
    /// The RPC failed.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// No contract instance at that address (or it is archived).
    #[error("no channel contract at {0}")]
    NotFound(Address),
    /// The instance is not a channel's: a key is missing or has the wrong type.
    #[error("{0} is not a channel contract: {1}")]
    NotAChannel(Address, &'static str),
}

/// Reads `channel`'s state with one `getLedgerEntries` (its instance and, when the token is
/// `token_hint` and a Stellar Asset Contract, its balance entry). When the balance entry is
/// not there (another token, or a SAC balance never written), the balance comes from
/// simulating the token's `balance(channel)`.
///
/// # Errors
///
/// [`ChannelReadError`].
pub async fn read_channel(
    rpc: &dyn SorobanRpc,
    channel: &Address,
    token_hint: Option<&Address>,
) -> Result<ChannelInfo, ChannelReadError> {
    if !channel.is_contract() {
        return Err(ChannelReadError::NotFound(*channel));
    }
    let instance_key = contract_key(channel, ScVal::LedgerKeyContractInstance);
    let mut keys = vec![instance_key.clone()];
    if let Some(token) = token_hint {
        keys.push(balance_key(token, channel));
    }
    let answer = rpc.ledger_entries(&keys).await?;
    let storage = answer
        .entries
        .iter()
        .find(|entry| entry.key == instance_key)
        .and_then(|entry| match &entry.data {
            LedgerEntryData::ContractData(data) => match &data.val {
                ScVal::ContractInstance(instance) => Some(instance.storage.clone()),
                _ => None,
            },
            _ => None,
        })
        .ok_or(ChannelReadError::NotFound(*channel))?
        .unwrap_or_default();
    let not_a_channel = |why| ChannelReadError::NotAChannel(*channel, why);
    let address = |name| match lookup(&storage, name) {
        Some(ScVal::Address(address)) => {
            Address::from_sc_address(address).map_err(|_| not_a_channel(name))
        }
        _ => Err(not_a_channel(name)),
    };
    let token = address("Token")?;
    let from = address("From")?;
    let to = address("To")?;
    let commitment_key = match lookup(&storage, "CommitmentKey") {
        Some(ScVal::Bytes(bytes)) => bytes
            .as_slice()
            .try_into()
            .map_err(|_| not_a_channel("CommitmentKey"))?,
        _ => return Err(not_a_channel("CommitmentKey")),
    };
    let refund_waiting_period = match lookup(&storage, "RefundWaitingPeriod") {
        Some(ScVal::U32(period)) => *period,
        _ => return Err(not_a_channel("RefundWaitingPeriod")),
    };
    let withdrawn = match lookup(&storage, "WithdrawnAmount") {
        Some(ScVal::I128(parts)) => i128_from_parts(parts),
        None => 0,
        Some(_) => return Err(not_a_channel("WithdrawnAmount")),
    };
    let close_effective_at = match lookup(&storage, "CloseEffectiveAtLedger") {
        Some(ScVal::U32(ledger)) => Some(*ledger),
        None => None,
        Some(_) => return Err(not_a_channel("CloseEffectiveAtLedger")),
    };
    let sac_balance = (token_hint == Some(&token))
        .then(|| {
            let key = balance_key(&token, channel);
            answer.entries.iter().find(|entry| entry.key == key)
        })
        .flatten()
        .and_then(|entry| match &entry.data {
            LedgerEntryData::ContractData(data) => sac_amount(&data.val),
            _ => None,
        });
    let balance = match sac_balance {
        Some(balance) => balance,
        None => simulated_balance(rpc, &token, channel).await?,
    };
    Ok(ChannelInfo {
        channel: *channel,
        token,
        from,
        to,
        commitment_key,
        refund_waiting_period,
        withdrawn,
        balance,
        close_effective_at,
        latest_ledger: answer.latest_ledger,
    })
}

/// The recipient's calls on a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelFunction {
    /// `settle(amount, signature)`: withdraw up to the cumulative amount; the channel stays open.
    Settle,
    /// `close(amount, signature)`: withdraw, close now, and send the rest back to the funder.
    Close,
}

/// The host function of `channel.settle(amount, signature)` or `channel.close(amount,
/// signature)`. The channel's `to` must authorize it: submit it from the recipient's account
/// with [`source_authorization`].
#[must_use]
pub fn channel_call(
    channel: &Address,
    function: ChannelFunction,
    amount: i128,
    signature: &[u8; 64],
) -> HostFunction {
    let name = match function {
        ChannelFunction::Settle => "settle",
        ChannelFunction::Close => "close",
    };
    HostFunction::InvokeContract(invoke_args(
        channel,
        name,
        vec![
            ScVal::I128(i128_to_parts(amount)),
            ScVal::Bytes(ScBytes(bytes_m(signature))),
        ],
    ))
}

/// The authorization entry that lets the transaction's source account authorize `call` (a
/// contract call) with its own signature on the envelope.
#[must_use]
pub fn source_authorization(call: &HostFunction) -> Option<SorobanAuthorizationEntry> {
    let HostFunction::InvokeContract(args) = call else {
        return None;
    };
    Some(SorobanAuthorizationEntry {
        credentials: SorobanCredentials::SourceAccount,
        root_invocation: SorobanAuthorizedInvocation {
            function: SorobanAuthorizedFunction::ContractFn(args.clone()),
            sub_invocations: VecM::default(),
        },
    })
}

fn invoke_args(contract: &Address, name: &str, args: Vec<ScVal>) -> InvokeContractArgs {
    InvokeContractArgs {
        contract_address: contract.to_sc_address(),
        // Invariant: only the short constant names of this module are passed.
        function_name: ScSymbol(StringM::try_from(name).expect("a short name")),
        // Invariant: at most two arguments.
        args: args.try_into().expect("few arguments"),
    }
}

fn bytes_m(bytes: &[u8]) -> BytesM {
    // Invariant: 32 or 64 bytes fit an unbounded BytesM.
    BytesM::try_from(bytes.to_vec()).expect("short bytes")
}

fn symbol(name: &str) -> ScVal {
    // Invariant: only the short constant names of this module are passed.
    ScVal::Symbol(ScSymbol(StringM::try_from(name).expect("a short symbol")))
}

fn contract_key(contract: &Address, key: ScVal) -> LedgerKey {
    LedgerKey::ContractData(LedgerKeyContractData {
        contract: contract.to_sc_address(),
        key,
        durability: ContractDataDurability::Persistent,
    })
}

/// A Stellar Asset Contract's balance entry of `holder`: `Vec[Symbol("Balance"), holder]`.
fn balance_key(token: &Address, holder: &Address) -> LedgerKey {
    let key = ScVal::Vec(Some(ScVec(
        vec![symbol("Balance"), ScVal::Address(holder.to_sc_address())]
            .try_into()
            // Invariant: two elements fit.
            .expect("two elements"),
    )));
    contract_key(token, key)
}

/// An instance storage value under the `DataKey` variant `name` (`Vec[Symbol(name)]`).
fn lookup<'a>(storage: &'a ScMap, name: &str) -> Option<&'a ScVal> {
    storage.iter().find_map(|entry| match &entry.key {
        ScVal::Vec(Some(ScVec(key))) => match key.as_slice() {
            [ScVal::Symbol(symbol)] if symbol.as_slice() == name.as_bytes() => Some(&entry.val),
            _ => None,
        },
        _ => None,
    })
}

/// The `amount` of a SAC balance value `Map{amount: I128, authorized: Bool, clawback: Bool}`;
/// 0 when the balance is frozen (`authorized: false`): the channel could not pay it out.
fn sac_amount(value: &ScVal) -> Option<i128> {
    let ScVal::Map(Some(map)) = value else {
        return None;
    };
    let field = |name: &str| {
        map.iter()
            .find(|entry| matches!(&entry.key, ScVal::Symbol(key) if key.as_slice() == name.as_bytes()))
            .map(|entry| &entry.val)
    };
    let amount = match field("amount")? {
        ScVal::I128(parts) => i128_from_parts(parts),
        _ => return None,
    };
    match field("authorized") {
        Some(ScVal::Bool(false)) => Some(0),
        _ => Some(amount),
    }
}

/// `token.balance(holder)`, simulated from the all-zeros account.
async fn simulated_balance(
    rpc: &dyn SorobanRpc,
    token: &Address,
    holder: &Address,
) -> Result<i128, ChannelReadError> {
    let call = HostFunction::InvokeContract(invoke_args(
        token,
        "balance",
        vec![ScVal::Address(holder.to_sc_address())],
    ));
    let envelope = invocation_envelope(&NULL_ACCOUNT, 1, 100, call, 0)
        .map_err(|_| ChannelReadError::NotAChannel(*holder, "balance"))?;
    let simulation = rpc.simulate_transaction(&envelope).await?;
    match simulation
        .result()
        .and_then(|result| result.retval.as_ref())
    {
        Some(ScVal::I128(parts)) if simulation.is_success() => Ok(i128_from_parts(parts)),
        _ => Err(ChannelReadError::NotAChannel(*holder, "token balance")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stellar_xdr::{Hash, ScAddress, ScMapEntry};

    #[test]
    fn a_frozen_sac_balance_counts_as_nothing() {
        let balance = |authorized: bool| {
            ScVal::Map(Some(ScMap(
                vec![
                    ScMapEntry {
                        key: symbol("amount"),
                        val: ScVal::I128(i128_to_parts(500)),
                    },
                    ScMapEntry {
                        key: symbol("authorized"),
                        val: ScVal::Bool(authorized),
                    },
                    ScMapEntry {
                        key: symbol("clawback"),
                        val: ScVal::Bool(false),
                    },
                ]
                .try_into()
                .unwrap(),
            )))
        };
        assert_eq!(sac_amount(&balance(true)), Some(500));
        assert_eq!(sac_amount(&balance(false)), Some(0));
        assert_eq!(sac_amount(&ScVal::I128(i128_to_parts(500))), None);
    }

    #[test]
    fn calls_name_the_function_and_carry_amount_and_signature() {
        let channel = Address::Contract([7; 32]);
        let call = channel_call(&channel, ChannelFunction::Close, -5, &[3; 64]);
        let HostFunction::InvokeContract(args) = &call else {
            panic!("{call:?}");
        };
        assert_eq!(args.function_name.as_slice(), b"close");
        assert_eq!(
            args.contract_address,
            ScAddress::Contract(Hash([7; 32]).into())
        );
        assert_eq!(args.args.len(), 2);
        assert!(matches!(&args.args[0], ScVal::I128(parts) if i128_from_parts(parts) == -5));
        let entry = source_authorization(&call).unwrap();
        assert_eq!(entry.credentials, SorobanCredentials::SourceAccount);
        assert!(matches!(
            &entry.root_invocation.function,
            SorobanAuthorizedFunction::ContractFn(inner) if inner == args
        ));
    }
}
