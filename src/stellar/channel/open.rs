//! Opening a channel through a Soroban RPC: the funder creates an instance of the channel
//! contract's code (already on the ledger, named by its hash) from its own account; the
//! constructor takes the first deposit from the funder.

use std::time::Duration;

use sha2::{Digest, Sha256};
use stellar_xdr::{
    ContractExecutable, ContractIdPreimage, ContractIdPreimageFromAddress, CreateContractArgsV2,
    Hash, HashIdPreimage, HashIdPreimageContractId, HostFunction, Limits, ScAddress, ScBytes,
    ScVal, Uint256, VecM, WriteXdr,
};

use crate::stellar::rpc::{
    RpcError, SendStatus, SorobanRpc, TransactionStatus, account_sequence, wait_for_transaction,
};
use crate::stellar::transfer::i128_to_parts;
use crate::stellar::{
    Address, Invocation, Network, NetworkId, PrepareError, Signer, TransferError,
    prepare_invocation, sign_envelope_by,
};

/// How long an opening transaction is waited for.
const OPEN_DEADLINE: Duration = Duration::from_secs(60);

/// A channel to open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenChannel {
    /// The hash of the channel contract's code on the ledger.
    pub wasm_hash: [u8; 32],
    /// The token (a SAC or SEP-41 contract).
    pub token: Address,
    /// The key that will sign commitments (a bare ed25519 key; the funder's own, or another).
    pub commitment_key: [u8; 32],
    /// The recipient.
    pub to: Address,
    /// The first deposit, in the token's atomic units.
    pub amount: i128,
    /// Ledgers between the funder's `close_start` and its refund.
    pub refund_waiting_period: u32,
    /// Makes the address unique among the funder's channels.
    pub salt: [u8; 32],
}

/// Why a channel was not opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenChannelError {
    /// The RPC failed.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The creation does not simulate (no such code, an unfunded funder …).
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    /// The transaction could not be built or signed.
    #[error(transparent)]
    Transfer(#[from] TransferError),
    /// The transaction was refused, or failed on the ledger.
    #[error("the opening transaction was not applied: {0}")]
    NotApplied(&'static str),
}

/// The address a channel opened by `funder` with `salt` gets (known before it exists).
#[must_use]
pub fn channel_address(network: &NetworkId, funder: &Address, salt: [u8; 32]) -> Address {
    let preimage = HashIdPreimage::ContractId(HashIdPreimageContractId {
        network_id: network.to_xdr_hash(),
        contract_id_preimage: preimage(funder, salt),
    });
    // Invariant: a fixed-size preimage always encodes.
    let xdr = preimage
        .to_xdr(Limits::none())
        .expect("a contract id preimage always encodes");
    Address::Contract(Sha256::digest(xdr).into())
}

/// Opens `channel` from `funder`'s account (which pays the fee and signs): simulate, sign,
/// submit, wait until it is in a ledger. Returns the channel's address.
///
/// # Errors
///
/// [`OpenChannelError`]: the RPC, the simulation, the signer, or the ledger refused.
pub async fn open_channel(
    rpc: &dyn SorobanRpc,
    network: &Network,
    funder: &dyn Signer,
    channel: &OpenChannel,
) -> Result<Address, OpenChannelError> {
    let from = funder.address();
    let args = constructor_args(
        &channel.token,
        &from,
        &channel.commitment_key,
        &channel.to,
        channel.amount,
        channel.refund_waiting_period,
    )?;
    let host_function = create_contract(&from, channel.salt, channel.wasm_hash, args)?;
    let invocation = Invocation {
        source: from,
        sequence: account_sequence(rpc, &from).await?.saturating_add(1),
        fee: 100,
        host_function,
        valid_for_ledgers: 100,
        time_bound_seconds: 300,
    };
    let mut envelope = prepare_invocation(rpc, network, funder, &invocation).await?;
    sign_envelope_by(&mut envelope, funder, &network.id()).await?;
    let sent = rpc.send_transaction(&envelope).await?;
    if sent.status != SendStatus::Pending {
        return Err(OpenChannelError::NotApplied("refused by the RPC"));
    }
    let info = wait_for_transaction(rpc, &sent.hash, OPEN_DEADLINE).await?;
    if info.status != TransactionStatus::Success {
        return Err(OpenChannelError::NotApplied("failed on the ledger"));
    }
    Ok(channel_address(&network.id(), &from, channel.salt))
}

/// The channel constructor's arguments, in its ABI's order: `(token, from, commitment_key,
/// to, amount, refund_waiting_period)`.
pub(crate) fn constructor_args(
    token: &Address,
    from: &Address,
    commitment_key: &[u8; 32],
    to: &Address,
    amount: i128,
    refund_waiting_period: u32,
) -> Result<Vec<ScVal>, TransferError> {
    let commitment_key = commitment_key
        .to_vec()
        .try_into()
        .map_err(|_| TransferError::InvalidXdr)?;
    Ok(vec![
        ScVal::Address(token.to_sc_address()),
        ScVal::Address(from.to_sc_address()),
        ScVal::Bytes(ScBytes(commitment_key)),
        ScVal::Address(to.to_sc_address()),
        ScVal::I128(i128_to_parts(amount)),
        ScVal::U32(refund_waiting_period),
    ])
}

/// `CreateContractV2`: the contract of code `wasm_hash`, from `deployer`'s address and `salt`,
/// built by its constructor with `args`.
pub(crate) fn create_contract(
    deployer: &Address,
    salt: [u8; 32],
    wasm_hash: [u8; 32],
    args: Vec<ScVal>,
) -> Result<HostFunction, TransferError> {
    Ok(HostFunction::CreateContractV2(CreateContractArgsV2 {
        contract_id_preimage: preimage(deployer, salt),
        executable: ContractExecutable::Wasm(Hash(wasm_hash)),
        constructor_args: VecM::try_from(args).map_err(|_| TransferError::InvalidXdr)?,
    }))
}

fn preimage(funder: &Address, salt: [u8; 32]) -> ContractIdPreimage {
    let address: ScAddress = funder.to_sc_address();
    ContractIdPreimage::Address(ContractIdPreimageFromAddress {
        address,
        salt: Uint256(salt),
    })
}
