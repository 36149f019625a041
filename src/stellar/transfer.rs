//! Stellar Asset Contract `transfer(from, to, amount)` transactions: decoding untrusted envelopes,
//! reading and checking the transfer, and building and signing one.
//!
//! The transaction shape is the one x402 `exact` and MPP `charge` clients send: a v1 envelope (or a
//! fee bump around one) with exactly one `InvokeHostFunction` operation invoking `transfer` on a token
//! contract, carrying the payer's Soroban authorization entry, and Soroban resources in `ext`.

use stellar_xdr::{
    BytesM, DecoratedSignature, FeeBumpTransaction, FeeBumpTransactionEnvelope,
    FeeBumpTransactionInnerTx, HostFunction, Int128Parts, InvokeContractArgs, InvokeHostFunctionOp,
    LedgerFootprint, Limits, Memo, Operation, OperationBody, Preconditions, ReadXdr, ScSymbol,
    ScVal, ScVec, SequenceNumber, Signature, SignatureHint, SorobanAddressCredentials,
    SorobanAuthorizationEntry, SorobanAuthorizedFunction, SorobanAuthorizedInvocation,
    SorobanCredentials, SorobanResources, SorobanTransactionData, SorobanTransactionDataExt,
    StringM, TimeBounds, TimePoint, Transaction, TransactionEnvelope, TransactionExt,
    TransactionV1Envelope, VecM,
};

use super::auth::{address_credentials, sign_authorization};
use super::signer::{Signer, sign_checked};
use super::{Address, AuthError, Keypair, NetworkId};

/// The largest transaction envelope [`decode_envelope`] accepts, in XDR bytes.
pub const MAX_ENVELOPE_BYTES: usize = 64 * 1024;

/// The deepest nesting [`decode_envelope`] accepts. A `transfer` envelope needs about 25 levels.
pub const MAX_XDR_DEPTH: u32 = 64;

/// The longest base64 text that can encode [`MAX_ENVELOPE_BYTES`] bytes.
const MAX_ENVELOPE_BASE64_LEN: usize = MAX_ENVELOPE_BYTES.div_ceil(3) * 4;

/// The SAC function this module reads and builds.
const TRANSFER: &str = "transfer";

/// The all-zeros account `GAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAWHF` (stellar-sdk's
/// `NULL_ACCOUNT`): the transaction source clients use when the fee is sponsored, i.e. when someone else
/// rebuilds and submits the transaction.
pub const NULL_ACCOUNT: Address = Address::Account([0; 32]);

/// Why a transfer envelope was refused, or could not be built or signed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// The base64 text is longer than any envelope of [`MAX_ENVELOPE_BYTES`] bytes.
    #[error("transaction envelope is too large")]
    TooLarge,
    /// The text is not base64 of a `TransactionEnvelope` within the XDR limits.
    #[error("transaction envelope is not valid base64 xdr")]
    InvalidXdr,
    /// The envelope is a v0 envelope; only v1 and fee-bump envelopes are accepted.
    #[error("unsupported transaction envelope: only v1 and fee-bump envelopes are accepted")]
    UnsupportedEnvelope,
    /// The transaction does not have exactly one operation (the count is attached).
    #[error("transaction must have exactly one operation, found {0}")]
    OperationCount(usize),
    /// The operation is not `InvokeHostFunction` with `HostFunction::InvokeContract`.
    #[error("operation is not a contract invocation")]
    NotInvokeContract,
    /// The invoked address is not a contract (`C…`).
    #[error("invoked address is not a contract")]
    InvalidContract,
    /// The invoked function is not `transfer`.
    #[error("invoked function is not `transfer`")]
    WrongFunction,
    /// The arguments are not `[Address from, Address to, I128 amount]` with an account or contract `from`,
    /// an account, muxed account or contract `to`, and a non-negative amount.
    #[error("transfer arguments are not (from, to, amount)")]
    WrongArguments,
    /// The transaction `ext` is not `V1(SorobanTransactionData)`.
    #[error("transaction has no soroban transaction data")]
    NotSorobanTransaction,
    /// The operation has no authorization entries.
    #[error("operation has no authorization entries")]
    NoAuthorization,
    /// An authorization entry has `SourceAccount` or `AddressWithDelegates` credentials.
    #[error("unsupported soroban credentials: only address credentials are accepted")]
    UnsupportedCredentials,
    /// An authorization entry's root invocation is not the operation's own `transfer` invocation.
    #[error("authorized invocation differs from the operation's invocation")]
    InvocationMismatch,
    /// An authorization entry authorizes sub-invocations.
    #[error("authorized invocation has sub-invocations")]
    SubInvocations,
    /// No authorization entry has the payer (`from`) as its credential address.
    #[error("no authorization entry for the payer")]
    PayerNotAuthorized,
    /// Several authorization entries have the payer (`from`) as their credential address.
    #[error("several authorization entries for the payer")]
    DuplicateAuthorization,
    /// The payer's authorization entry carries no signature (`Void` or an empty vector).
    #[error("payer authorization is not signed")]
    UnsignedAuthorization,
    /// Building: the transaction source is a contract; it must be an account or muxed account.
    #[error("transaction source must be an account")]
    InvalidSource,
    /// Signing the payer's authorization entry failed.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// The XDR limits for untrusted input: [`MAX_XDR_DEPTH`] and [`MAX_ENVELOPE_BYTES`].
#[must_use]
pub fn decode_limits() -> Limits {
    Limits {
        depth: MAX_XDR_DEPTH,
        len: MAX_ENVELOPE_BYTES,
    }
}

/// Decodes an untrusted base64 `TransactionEnvelope` (standard alphabet, padded; whitespace is skipped)
/// within [`decode_limits`]. Never panics.
///
/// # Errors
///
/// [`TransferError::TooLarge`] before any decoding if the text is longer than the base64 of
/// [`MAX_ENVELOPE_BYTES`]; [`TransferError::InvalidXdr`] for anything that does not decode completely.
pub fn decode_envelope(base64: &str) -> Result<TransactionEnvelope, TransferError> {
    if base64.len() > MAX_ENVELOPE_BASE64_LEN {
        return Err(TransferError::TooLarge);
    }
    TransactionEnvelope::from_xdr_base64(base64, decode_limits())
        .map_err(|_| TransferError::InvalidXdr)
}

/// A decoded SAC `transfer(from, to, amount)` transaction.
///
/// [`sac_transfer`] checks the shape; [`SacTransfer::payer_authorization`] checks the authorization
/// entries. Neither checks what only the ledger knows (balances, nonces, expiration, fees).
#[derive(Clone, Debug, PartialEq)]
pub struct SacTransfer {
    /// The invoked token contract.
    pub contract: Address,
    /// The payer: the first argument (an account or a contract, never muxed).
    pub from: Address,
    /// The payee: the second argument (an account, a muxed account or a contract).
    pub to: Address,
    /// The amount in atomic units: the third argument (never negative).
    pub amount: i128,
    /// The operation's invocation, as the authorization entries must repeat it.
    pub invocation: InvokeContractArgs,
    /// The operation's authorization entries.
    pub auth: Vec<SorobanAuthorizationEntry>,
    /// The (inner) transaction's source account.
    pub tx_source: Address,
    /// The operation's source account, if set.
    pub op_source: Option<Address>,
    /// How many signatures the (inner) transaction envelope carries.
    pub envelope_signatures: usize,
    /// The (inner) transaction's fee, in stroops.
    pub fee: u32,
    /// Whether the envelope is a fee bump around the transaction.
    pub fee_bump: bool,
}

/// Reads a SAC `transfer` from an envelope: a v1 envelope, or the inner v1 transaction of a fee bump.
///
/// # Errors
///
/// In order of checking: [`TransferError::UnsupportedEnvelope`], [`TransferError::OperationCount`],
/// [`TransferError::NotInvokeContract`], [`TransferError::InvalidContract`],
/// [`TransferError::WrongFunction`], [`TransferError::WrongArguments`],
/// [`TransferError::NotSorobanTransaction`].
pub fn sac_transfer(envelope: &TransactionEnvelope) -> Result<SacTransfer, TransferError> {
    let (v1, fee_bump) = v1_envelope(envelope)?;
    let tx = &v1.tx;
    let [operation] = tx.operations.as_slice() else {
        return Err(TransferError::OperationCount(tx.operations.len()));
    };
    let OperationBody::InvokeHostFunction(InvokeHostFunctionOp {
        host_function,
        auth,
    }) = &operation.body
    else {
        return Err(TransferError::NotInvokeContract);
    };
    let invocation = invoked_contract(host_function)?;
    let contract = match Address::from_sc_address(&invocation.contract_address) {
        Ok(contract @ Address::Contract(_)) => contract,
        Ok(Address::Account(_) | Address::MuxedAccount { .. }) | Err(_) => {
            return Err(TransferError::InvalidContract);
        }
    };
    if invocation.function_name.0.as_slice() != TRANSFER.as_bytes() {
        return Err(TransferError::WrongFunction);
    }
    let (from, to, amount) = transfer_arguments(&invocation.args)?;
    match &tx.ext {
        TransactionExt::V1(_) => {}
        TransactionExt::V0 => return Err(TransferError::NotSorobanTransaction),
    }
    Ok(SacTransfer {
        contract,
        from,
        to,
        amount,
        invocation: invocation.clone(),
        auth: auth.to_vec(),
        tx_source: Address::from_muxed_account(&tx.source_account),
        op_source: operation
            .source_account
            .as_ref()
            .map(Address::from_muxed_account),
        envelope_signatures: v1.signatures.len(),
        fee: tx.fee,
        fee_bump,
    })
}

/// The v1 envelope itself, or the one inside a fee bump (with `true`).
fn v1_envelope(
    envelope: &TransactionEnvelope,
) -> Result<(&TransactionV1Envelope, bool), TransferError> {
    match envelope {
        TransactionEnvelope::Tx(v1) => Ok((v1, false)),
        TransactionEnvelope::TxFeeBump(FeeBumpTransactionEnvelope {
            tx:
                FeeBumpTransaction {
                    inner_tx: FeeBumpTransactionInnerTx::Tx(inner),
                    ..
                },
            ..
        }) => Ok((inner, true)),
        TransactionEnvelope::TxV0(_) => Err(TransferError::UnsupportedEnvelope),
    }
}

fn v1_envelope_mut(
    envelope: &mut TransactionEnvelope,
) -> Result<&mut TransactionV1Envelope, TransferError> {
    match envelope {
        TransactionEnvelope::Tx(v1) => Ok(v1),
        TransactionEnvelope::TxFeeBump(FeeBumpTransactionEnvelope {
            tx:
                FeeBumpTransaction {
                    inner_tx: FeeBumpTransactionInnerTx::Tx(inner),
                    ..
                },
            ..
        }) => Ok(inner),
        TransactionEnvelope::TxV0(_) => Err(TransferError::UnsupportedEnvelope),
    }
}

fn invoked_contract(host_function: &HostFunction) -> Result<&InvokeContractArgs, TransferError> {
    match host_function {
        HostFunction::InvokeContract(invocation) => Ok(invocation),
        HostFunction::CreateContract(_)
        | HostFunction::UploadContractWasm(_)
        | HostFunction::CreateContractV2(_) => Err(TransferError::NotInvokeContract),
    }
}

/// `[Address from, Address to, I128 amount]`, with `from` an account or contract and `amount >= 0`.
fn transfer_arguments(args: &[ScVal]) -> Result<(Address, Address, i128), TransferError> {
    let [
        ScVal::Address(from),
        ScVal::Address(to),
        ScVal::I128(amount),
    ] = args
    else {
        return Err(TransferError::WrongArguments);
    };
    let from = match Address::from_sc_address(from) {
        Ok(from @ (Address::Account(_) | Address::Contract(_))) => from,
        Ok(Address::MuxedAccount { .. }) | Err(_) => return Err(TransferError::WrongArguments),
    };
    let to = Address::from_sc_address(to).map_err(|_| TransferError::WrongArguments)?;
    let amount = i128_from_parts(amount);
    if amount < 0 {
        return Err(TransferError::WrongArguments);
    }
    Ok((from, to, amount))
}

pub(crate) fn i128_from_parts(parts: &Int128Parts) -> i128 {
    (i128::from(parts.hi) << 64) | i128::from(parts.lo)
}

pub(crate) fn i128_to_parts(value: i128) -> Int128Parts {
    Int128Parts {
        // Truncating casts on purpose: the high and the low 64 bits.
        hi: (value >> 64) as i64,
        lo: value as u64,
    }
}

impl SacTransfer {
    /// The payer's authorization entry, after checking all entries:
    /// - there is at least one ([`TransferError::NoAuthorization`]);
    /// - each has `Address` or `AddressV2` credentials ([`TransferError::UnsupportedCredentials`]);
    /// - each root invocation is this transfer's own invocation ([`TransferError::InvocationMismatch`])
    ///   with no sub-invocations ([`TransferError::SubInvocations`]);
    /// - exactly one has `from` as its credential address ([`TransferError::PayerNotAuthorized`],
    ///   [`TransferError::DuplicateAuthorization`]);
    /// - that one is signed: its signature is neither `Void` nor an empty vector
    ///   ([`TransferError::UnsignedAuthorization`]).
    ///
    /// The signature itself is not verified here: see [`verify_authorization`](super::verify_authorization).
    ///
    /// # Errors
    ///
    /// As listed above.
    pub fn payer_authorization(&self) -> Result<&SorobanAuthorizationEntry, TransferError> {
        let index = self.payer_entry_index()?;
        let entry = self
            .auth
            .get(index)
            .ok_or(TransferError::PayerNotAuthorized)?;
        let credentials =
            address_credentials(entry).map_err(|_| TransferError::UnsupportedCredentials)?;
        if is_unsigned(&credentials.signature) {
            return Err(TransferError::UnsignedAuthorization);
        }
        Ok(entry)
    }

    /// The nonce and the signature expiration ledger of the payer's authorization
    /// ([`SacTransfer::payer_authorization`]): the pair that makes the payment single-use on chain.
    ///
    /// # Errors
    ///
    /// As [`SacTransfer::payer_authorization`].
    pub fn payer_nonce(&self) -> Result<(i64, u32), TransferError> {
        let entry = self.payer_authorization()?;
        let credentials =
            address_credentials(entry).map_err(|_| TransferError::UnsupportedCredentials)?;
        Ok((credentials.nonce, credentials.signature_expiration_ledger))
    }

    /// Checks every entry's shape and finds the payer's one (signed or not).
    fn payer_entry_index(&self) -> Result<usize, TransferError> {
        if self.auth.is_empty() {
            return Err(TransferError::NoAuthorization);
        }
        self.auth
            .iter()
            .try_for_each(|entry| self.check_entry(entry))?;
        let payer = self.from.to_sc_address();
        let mut payer_entries = self.auth.iter().enumerate().filter(|(_, entry)| {
            address_credentials(entry).is_ok_and(|credentials| credentials.address == payer)
        });
        let (index, _) = payer_entries
            .next()
            .ok_or(TransferError::PayerNotAuthorized)?;
        if payer_entries.next().is_some() {
            return Err(TransferError::DuplicateAuthorization);
        }
        Ok(index)
    }

    fn check_entry(&self, entry: &SorobanAuthorizationEntry) -> Result<(), TransferError> {
        address_credentials(entry).map_err(|_| TransferError::UnsupportedCredentials)?;
        let authorizes_this_transfer = match &entry.root_invocation.function {
            SorobanAuthorizedFunction::ContractFn(invocation) => *invocation == self.invocation,
            SorobanAuthorizedFunction::CreateContractHostFn(_)
            | SorobanAuthorizedFunction::CreateContractV2HostFn(_) => false,
        };
        if !authorizes_this_transfer {
            return Err(TransferError::InvocationMismatch);
        }
        if entry.root_invocation.sub_invocations.is_empty() {
            Ok(())
        } else {
            Err(TransferError::SubInvocations)
        }
    }
}

/// `Void`, an absent vector or an empty vector: what clients leave before signing.
fn is_unsigned(signature: &ScVal) -> bool {
    match signature {
        ScVal::Void | ScVal::Vec(None) => true,
        ScVal::Vec(Some(ScVec(elements))) => elements.is_empty(),
        _ => false,
    }
}

/// Which credentials arm [`build_transfer`] gives the payer's authorization entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CredentialsArm {
    /// `SorobanCredentials::Address`, signed over `HashIdPreimage::SorobanAuthorization` (what current
    /// x402 and MPP clients produce, and the only arm some facilitators accept).
    #[default]
    Address,
    /// `SorobanCredentials::AddressV2` (CAP-71), signed over `HashIdPreimage::SorobanAuthorizationWithAddress`.
    AddressV2,
}

/// What [`build_transfer`] needs. The nonce and the resources normally come from a simulation; the
/// built transaction has zeroed resources.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferRequest {
    /// The transaction source: an account or muxed account ([`NULL_ACCOUNT`] when sponsored).
    pub source: Address,
    /// The transaction sequence number (the source's current sequence + 1).
    pub sequence: i64,
    /// The transaction fee, in stroops.
    pub fee: u32,
    /// The token contract (for example [`USDC_TESTNET`](super::USDC_TESTNET)).
    pub contract: Address,
    /// The payer.
    pub from: Address,
    /// The payee.
    pub to: Address,
    /// The amount in atomic units (not negative).
    pub amount: i128,
    /// The payer authorization's nonce.
    pub nonce: i64,
    /// The payer authorization's signature expiration ledger ([`sign_payer`] sets it again).
    pub signature_expiration_ledger: u32,
    /// The transaction's upper time bound (unix seconds); the lower one is 0.
    pub max_time: u64,
    /// The payer authorization's credentials arm.
    pub credentials: CredentialsArm,
}

/// Builds an unsigned SAC `transfer` transaction: a v1 envelope with no signatures, time bounds
/// `[0, max_time]`, no memo, one `InvokeHostFunction` operation (no operation source) invoking
/// `transfer(from, to, amount)` with one unsigned (`Void`) authorization entry for `from` whose root
/// invocation is the same call, and `ext = V1` with zeroed resources and resource fee.
///
/// # Errors
///
/// [`TransferError::InvalidSource`] (a contract source), [`TransferError::InvalidContract`],
/// [`TransferError::WrongArguments`] (a negative amount or a muxed `from`).
pub fn build_transfer(request: &TransferRequest) -> Result<TransactionEnvelope, TransferError> {
    let source_account = request
        .source
        .to_muxed_account()
        .ok_or(TransferError::InvalidSource)?;
    if !request.contract.is_contract() {
        return Err(TransferError::InvalidContract);
    }
    if request.amount < 0 || matches!(request.from, Address::MuxedAccount { .. }) {
        return Err(TransferError::WrongArguments);
    }
    let invocation = transfer_invocation(request);
    let operation = Operation {
        source_account: None,
        body: OperationBody::InvokeHostFunction(InvokeHostFunctionOp {
            host_function: HostFunction::InvokeContract(invocation.clone()),
            auth: one(payer_entry(request, invocation)),
        }),
    };
    let tx = Transaction {
        source_account,
        fee: request.fee,
        seq_num: SequenceNumber(request.sequence),
        cond: Preconditions::Time(TimeBounds {
            min_time: TimePoint(0),
            max_time: TimePoint(request.max_time),
        }),
        memo: Memo::None,
        operations: one(operation),
        ext: TransactionExt::V1(zeroed_soroban_data()),
    };
    Ok(TransactionEnvelope::Tx(TransactionV1Envelope {
        tx,
        signatures: VecM::default(),
    }))
}

fn transfer_invocation(request: &TransferRequest) -> InvokeContractArgs {
    let args = [
        ScVal::Address(request.from.to_sc_address()),
        ScVal::Address(request.to.to_sc_address()),
        ScVal::I128(i128_to_parts(request.amount)),
    ];
    InvokeContractArgs {
        contract_address: request.contract.to_sc_address(),
        // Invariant: "transfer" is 8 bytes, within the 32-byte symbol limit.
        function_name: ScSymbol(StringM::try_from(TRANSFER).expect("`transfer` is a valid symbol")),
        // Invariant: three arguments fit an unbounded VecM.
        args: VecM::try_from(args).expect("three arguments fit"),
    }
}

fn payer_entry(
    request: &TransferRequest,
    invocation: InvokeContractArgs,
) -> SorobanAuthorizationEntry {
    let credentials = SorobanAddressCredentials {
        address: request.from.to_sc_address(),
        nonce: request.nonce,
        signature_expiration_ledger: request.signature_expiration_ledger,
        signature: ScVal::Void,
    };
    SorobanAuthorizationEntry {
        credentials: match request.credentials {
            CredentialsArm::Address => SorobanCredentials::Address(credentials),
            CredentialsArm::AddressV2 => SorobanCredentials::AddressV2(credentials),
        },
        root_invocation: SorobanAuthorizedInvocation {
            function: SorobanAuthorizedFunction::ContractFn(invocation),
            sub_invocations: VecM::default(),
        },
    }
}

fn zeroed_soroban_data() -> SorobanTransactionData {
    SorobanTransactionData {
        ext: SorobanTransactionDataExt::V0,
        resources: SorobanResources {
            footprint: LedgerFootprint {
                read_only: VecM::default(),
                read_write: VecM::default(),
            },
            instructions: 0,
            disk_read_bytes: 0,
            write_bytes: 0,
        },
        resource_fee: 0,
    }
}

/// A one-element `VecM`.
fn one<T: Clone, const MAX: u32>(item: T) -> VecM<T, MAX> {
    // Invariant: every VecM used here (operations: at most 100, auth: unbounded) holds one element.
    VecM::try_from([item]).expect("one element fits")
}

/// Signs the payer's authorization entry of a SAC `transfer` envelope in place (see
/// [`sign_authorization`]), setting its signature expiration ledger. The transaction itself stays
/// unsigned: envelope signatures, if any are needed, come after this (changing the entry changes the
/// transaction hash).
///
/// # Errors
///
/// The [`sac_transfer`] errors; the entry checks of [`SacTransfer::payer_authorization`] other than
/// the signature; [`TransferError::Auth`] if the payer is not an account (`AuthError::UnsupportedAddress`).
pub fn sign_payer(
    envelope: &mut TransactionEnvelope,
    keypair: &Keypair,
    network: &NetworkId,
    signature_expiration_ledger: u32,
) -> Result<(), TransferError> {
    let index = sac_transfer(envelope)?.payer_entry_index()?;
    let v1 = v1_envelope_mut(envelope)?;
    let entry = v1
        .tx
        .operations
        .iter_mut()
        .find_map(|operation| match &mut operation.body {
            OperationBody::InvokeHostFunction(op) => op.auth.iter_mut().nth(index),
            _ => None,
        })
        .ok_or(TransferError::PayerNotAuthorized)?;
    sign_authorization(entry, keypair, network, signature_expiration_ledger)?;
    Ok(())
}

/// An unsigned v1 transaction from `source` with one `invokeHostFunction` operation and no
/// authorization yet, its time bounds open until `max_time` (Unix seconds).
pub fn invocation_envelope(
    source: &Address,
    sequence: i64,
    fee: u32,
    host_function: HostFunction,
    max_time: u64,
) -> Result<TransactionEnvelope, TransferError> {
    let source_account = source
        .to_muxed_account()
        .ok_or(TransferError::InvalidSource)?;
    let operation = Operation {
        source_account: None,
        body: OperationBody::InvokeHostFunction(InvokeHostFunctionOp {
            host_function,
            auth: VecM::default(),
        }),
    };
    Ok(TransactionEnvelope::Tx(TransactionV1Envelope {
        tx: Transaction {
            source_account,
            fee,
            seq_num: SequenceNumber(sequence),
            cond: Preconditions::Time(TimeBounds {
                min_time: TimePoint(0),
                max_time: TimePoint(max_time),
            }),
            memo: Memo::None,
            operations: one(operation),
            ext: TransactionExt::V0,
        },
        signatures: VecM::default(),
    }))
}

/// Adds `keypair`'s signature (a decorated ed25519 signature over the transaction hash for
/// `network`) to a v1 or fee-bump envelope (for a fee bump: the outer transaction's).
pub fn sign_envelope(
    envelope: &mut TransactionEnvelope,
    keypair: &Keypair,
    network: &NetworkId,
) -> Result<(), TransferError> {
    let hash = envelope_hash(envelope, network)?;
    add_signature(envelope, keypair.public_key(), keypair.sign(&hash))
}

/// [`sign_envelope`] by any [`Signer`]; the signature is checked under the signer's key first.
pub async fn sign_envelope_by(
    envelope: &mut TransactionEnvelope,
    signer: &dyn Signer,
    network: &NetworkId,
) -> Result<(), TransferError> {
    let hash = envelope_hash(envelope, network)?;
    let signature = sign_checked(signer, &hash)
        .await
        .map_err(|error| TransferError::Auth(error.into()))?;
    add_signature(envelope, signer.public_key(), signature)
}

fn envelope_hash(
    envelope: &TransactionEnvelope,
    network: &NetworkId,
) -> Result<[u8; 32], TransferError> {
    envelope
        .hash(network.0)
        .map_err(|_| TransferError::InvalidXdr)
}

fn add_signature(
    envelope: &mut TransactionEnvelope,
    key: [u8; 32],
    signature: [u8; 64],
) -> Result<(), TransferError> {
    let signature = BytesM::try_from(signature.to_vec()).map_err(|_| TransferError::InvalidXdr)?;
    let signature = DecoratedSignature {
        hint: SignatureHint([key[28], key[29], key[30], key[31]]),
        signature: Signature(signature),
    };
    let signatures = match envelope {
        TransactionEnvelope::Tx(v1) => &mut v1.signatures,
        TransactionEnvelope::TxFeeBump(bump) => &mut bump.signatures,
        TransactionEnvelope::TxV0(_) => return Err(TransferError::UnsupportedEnvelope),
    };
    let mut list = signatures.to_vec();
    list.push(signature);
    *signatures = list
        .try_into()
        .map_err(|_| TransferError::UnsupportedEnvelope)?;
    Ok(())
}

/// Wraps a signed v1 envelope in a fee bump paid by `fee_source`: the outer fee is the inner
/// fee plus one more base fee (a fee bump counts as one more operation). The outer envelope
/// still needs `fee_source`'s signature ([`sign_envelope`]).
pub fn fee_bump(
    inner: TransactionEnvelope,
    fee_source: &Address,
    base_fee: u32,
) -> Result<TransactionEnvelope, TransferError> {
    let TransactionEnvelope::Tx(v1) = inner else {
        return Err(TransferError::UnsupportedEnvelope);
    };
    let fee_source = fee_source
        .to_muxed_account()
        .ok_or(TransferError::InvalidSource)?;
    let fee = i64::from(v1.tx.fee) + i64::from(base_fee);
    Ok(TransactionEnvelope::TxFeeBump(FeeBumpTransactionEnvelope {
        tx: FeeBumpTransaction {
            fee_source,
            fee,
            inner_tx: FeeBumpTransactionInnerTx::Tx(v1),
            ext: stellar_xdr::FeeBumpTransactionExt::V0,
        },
        signatures: VecM::default(),
    }))
}

/// Replaces the authorization entries of the envelope's `invokeHostFunction` operation.
pub fn set_authorization(
    envelope: &mut TransactionEnvelope,
    auth: Vec<SorobanAuthorizationEntry>,
) -> Result<(), TransferError> {
    let TransactionEnvelope::Tx(v1) = envelope else {
        return Err(TransferError::UnsupportedEnvelope);
    };
    let mut operations = v1.tx.operations.to_vec();
    for operation in &mut operations {
        if let OperationBody::InvokeHostFunction(invoke) = &mut operation.body {
            invoke.auth = auth
                .clone()
                .try_into()
                .map_err(|_| TransferError::WrongArguments)?;
        }
    }
    v1.tx.operations = operations
        .try_into()
        .map_err(|_| TransferError::UnsupportedEnvelope)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stellar::auth::tests::{pay_to, payer};
    use crate::stellar::{
        AccountSignature, Network, USDC_TESTNET, account_signatures, encode_account_signatures,
        verify_authorization,
    };
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use stellar_xdr::{
        BytesM, CreateContractArgs, DecoratedSignature, EnvelopeType, FeeBumpTransactionExt,
        HostFunctionType, OperationType, ScAddress, ScValType, Signature, SignatureHint,
        SorobanAddressCredentialsWithDelegates, TransactionV0Envelope, WriteXdr,
    };

    fn testnet() -> NetworkId {
        Network::testnet().id()
    }

    fn usdc() -> Address {
        USDC_TESTNET.parse().expect("valid contract")
    }

    fn other_account() -> Address {
        Keypair::from_seed([3; 32]).address()
    }

    const NONCE: i64 = 1_234_567_890_123;
    const EXPIRATION: u32 = 2000;

    fn request(credentials: CredentialsArm) -> TransferRequest {
        TransferRequest {
            source: NULL_ACCOUNT,
            sequence: 1,
            fee: 10_100,
            contract: usdc(),
            from: payer().address(),
            to: pay_to(),
            amount: 10_000_000,
            nonce: NONCE,
            signature_expiration_ledger: 0,
            max_time: 1_800_000_000,
            credentials,
        }
    }

    fn unsigned(arm: CredentialsArm) -> TransactionEnvelope {
        build_transfer(&request(arm)).expect("builds")
    }

    fn signed(arm: CredentialsArm) -> TransactionEnvelope {
        let mut envelope = unsigned(arm);
        sign_payer(&mut envelope, &payer(), &testnet(), EXPIRATION).expect("signs");
        envelope
    }

    fn dummy_signature() -> DecoratedSignature {
        DecoratedSignature {
            hint: SignatureHint([1, 2, 3, 4]),
            signature: Signature(BytesM::try_from(vec![9; 64]).expect("64 bytes")),
        }
    }

    fn fee_bump(inner: TransactionEnvelope) -> TransactionEnvelope {
        let TransactionEnvelope::Tx(mut inner) = inner else {
            panic!("a v1 envelope")
        };
        inner.signatures = VecM::try_from(vec![dummy_signature()]).expect("one signature");
        TransactionEnvelope::TxFeeBump(FeeBumpTransactionEnvelope {
            tx: FeeBumpTransaction {
                fee_source: other_account().to_muxed_account().expect("an account"),
                fee: 1_000_000,
                inner_tx: FeeBumpTransactionInnerTx::Tx(inner),
                ext: FeeBumpTransactionExt::V0,
            },
            signatures: VecM::try_from(vec![dummy_signature(), dummy_signature()]).expect("two"),
        })
    }

    fn tx_mut(envelope: &mut TransactionEnvelope) -> &mut Transaction {
        &mut v1_envelope_mut(envelope).expect("v1 or fee bump").tx
    }

    fn op_mut(envelope: &mut TransactionEnvelope) -> &mut InvokeHostFunctionOp {
        let operation = tx_mut(envelope)
            .operations
            .iter_mut()
            .next()
            .expect("one operation");
        match &mut operation.body {
            OperationBody::InvokeHostFunction(op) => op,
            _ => panic!("invoke host function"),
        }
    }

    fn invocation_mut(envelope: &mut TransactionEnvelope) -> &mut InvokeContractArgs {
        match &mut op_mut(envelope).host_function {
            HostFunction::InvokeContract(invocation) => invocation,
            _ => panic!("invoke contract"),
        }
    }

    fn auth(envelope: &mut TransactionEnvelope) -> Vec<SorobanAuthorizationEntry> {
        op_mut(envelope).auth.to_vec()
    }

    fn set_auth(envelope: &mut TransactionEnvelope, entries: Vec<SorobanAuthorizationEntry>) {
        op_mut(envelope).auth = VecM::try_from(entries).expect("few entries");
    }

    fn credentials_mut(entry: &mut SorobanAuthorizationEntry) -> &mut SorobanAddressCredentials {
        match &mut entry.credentials {
            SorobanCredentials::Address(credentials)
            | SorobanCredentials::AddressV2(credentials) => credentials,
            _ => panic!("address credentials"),
        }
    }

    /// Replaces the arguments in the operation and in every entry's root invocation.
    fn set_args(envelope: &mut TransactionEnvelope, args: Vec<ScVal>) {
        let args: VecM<ScVal> = VecM::try_from(args).expect("few args");
        invocation_mut(envelope).args = args.clone();
        let mut entries = auth(envelope);
        for entry in &mut entries {
            if let SorobanAuthorizedFunction::ContractFn(invocation) =
                &mut entry.root_invocation.function
            {
                invocation.args = args.clone();
            }
        }
        set_auth(envelope, entries);
    }

    fn transfer_args(from: &Address, to: &Address, amount: Int128Parts) -> Vec<ScVal> {
        vec![
            ScVal::Address(from.to_sc_address()),
            ScVal::Address(to.to_sc_address()),
            ScVal::I128(amount),
        ]
    }

    fn symbol(name: &str) -> ScSymbol {
        ScSymbol(StringM::try_from(name).expect("short symbol"))
    }

    fn payer_check(envelope: &TransactionEnvelope) -> Result<(), TransferError> {
        sac_transfer(envelope)?.payer_authorization().map(|_| ())
    }

    fn to_base64(envelope: &TransactionEnvelope) -> String {
        envelope.to_xdr_base64(Limits::none()).expect("encodes")
    }

    const ARMS: [CredentialsArm; 2] = [CredentialsArm::Address, CredentialsArm::AddressV2];

    // ----- building -----

    #[test]
    fn null_account_strkey() {
        assert_eq!(
            NULL_ACCOUNT.to_string(),
            "GAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAWHF"
        );
    }

    #[test]
    fn built_envelope_has_the_client_shape() {
        let TransactionEnvelope::Tx(TransactionV1Envelope { tx, signatures }) =
            unsigned(CredentialsArm::Address)
        else {
            panic!("a v1 envelope")
        };
        assert!(signatures.is_empty());
        assert_eq!(
            tx.source_account,
            NULL_ACCOUNT.to_muxed_account().expect("an account")
        );
        assert_eq!((tx.fee, tx.seq_num.0), (10_100, 1));
        assert_eq!(
            tx.cond,
            Preconditions::Time(TimeBounds {
                min_time: TimePoint(0),
                max_time: TimePoint(1_800_000_000)
            })
        );
        assert_eq!(tx.memo, Memo::None);
        assert_eq!(tx.ext, TransactionExt::V1(zeroed_soroban_data()));
        let [operation] = tx.operations.as_slice() else {
            panic!("one operation")
        };
        assert_eq!(operation.source_account, None);
        let OperationBody::InvokeHostFunction(op) = &operation.body else {
            panic!("invoke host function")
        };
        let HostFunction::InvokeContract(invocation) = &op.host_function else {
            panic!("invoke contract")
        };
        assert_eq!(invocation.contract_address, usdc().to_sc_address());
        assert_eq!(invocation.function_name, symbol("transfer"));
        let expected_args = transfer_args(
            &payer().address(),
            &pay_to(),
            Int128Parts {
                hi: 0,
                lo: 10_000_000,
            },
        );
        assert_eq!(invocation.args.as_slice(), expected_args.as_slice());
        let [entry] = op.auth.as_slice() else {
            panic!("one entry")
        };
        let SorobanCredentials::Address(credentials) = &entry.credentials else {
            panic!("address arm")
        };
        assert_eq!(credentials.address, payer().address().to_sc_address());
        assert_eq!(
            (credentials.nonce, credentials.signature_expiration_ledger),
            (NONCE, 0)
        );
        assert_eq!(credentials.signature, ScVal::Void);
        assert_eq!(
            entry.root_invocation.function,
            SorobanAuthorizedFunction::ContractFn(invocation.clone())
        );
        assert!(entry.root_invocation.sub_invocations.is_empty());
    }

    #[test]
    fn built_envelope_address_v2_arm() {
        let mut envelope = unsigned(CredentialsArm::AddressV2);
        let [entry] = auth(&mut envelope).try_into().expect("one entry");
        assert!(matches!(
            entry.credentials,
            SorobanCredentials::AddressV2(_)
        ));
    }

    /// The unsigned envelope for `request(CredentialsArm::Address)`. Cross-checked: @stellar/stellar-sdk
    /// 17.2.0 `TransactionBuilder` (source `NULL_ACCOUNT` at sequence 0, fee 10100, time bounds
    /// [0, 1800000000], `Operation.invokeContractFunction` with the same auth entry, default
    /// `SorobanDataBuilder` data) builds the byte-identical envelope.
    const GOLDEN_UNSIGNED_ENVELOPE: &str = "\
        AAAAAgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAJ3QAAAAAAAAAAQAAAAEAAAAAAAAAAAAAAABrSdIAAAAAAAAA\
        AAEAAAAAAAAAGAAAAAAAAAABUEXNXsBymnaP1a0CUFhS308Cjc6DDlrFIgm6SEg7LwEAAAAIdHJhbnNmZXIAAAADAAAAEgAAAAAAAAAA\
        iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1wAAAASAAAAAAAAAACBOXcOqH0XX1ajVGbDTH7My42KkbTuN6Jd9g9bj8mzlAAA\
        AAoAAAAAAAAAAAAAAAAAmJaAAAAAAQAAAAEAAAAAAAAAAIqI4910CfGV/VLbLTy6XXLKZwm/HZQSG/N0iAG0D29cAAABH3H7BMsAAAAA\
        AAAAAQAAAAAAAAABUEXNXsBymnaP1a0CUFhS308Cjc6DDlrFIgm6SEg7LwEAAAAIdHJhbnNmZXIAAAADAAAAEgAAAAAAAAAAiojj3XQJ\
        8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1wAAAASAAAAAAAAAACBOXcOqH0XX1ajVGbDTH7My42KkbTuN6Jd9g9bj8mzlAAAAAoAAAAA\
        AAAAAAAAAAAAmJaAAAAAAAAAAAEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    #[test]
    fn golden_unsigned_envelope() {
        assert_eq!(
            to_base64(&unsigned(CredentialsArm::Address)),
            GOLDEN_UNSIGNED_ENVELOPE
        );
    }

    #[test]
    fn build_refuses_bad_requests() {
        let mut contract_source = request(CredentialsArm::Address);
        contract_source.source = usdc();
        assert_eq!(
            build_transfer(&contract_source),
            Err(TransferError::InvalidSource)
        );

        let mut account_contract = request(CredentialsArm::Address);
        account_contract.contract = other_account();
        assert_eq!(
            build_transfer(&account_contract),
            Err(TransferError::InvalidContract)
        );

        let mut negative = request(CredentialsArm::Address);
        negative.amount = -1;
        assert_eq!(
            build_transfer(&negative),
            Err(TransferError::WrongArguments)
        );

        let mut muxed_from = request(CredentialsArm::Address);
        muxed_from.from = Address::MuxedAccount {
            ed25519: payer().public_key(),
            id: 7,
        };
        assert_eq!(
            build_transfer(&muxed_from),
            Err(TransferError::WrongArguments)
        );
    }

    #[test]
    fn muxed_source_is_allowed() {
        let mut muxed_source = request(CredentialsArm::Address);
        muxed_source.source = Address::MuxedAccount {
            ed25519: payer().public_key(),
            id: 7,
        };
        let envelope = build_transfer(&muxed_source).expect("builds");
        assert_eq!(
            sac_transfer(&envelope).map(|t| t.tx_source),
            Ok(muxed_source.source)
        );
    }

    // ----- round trips -----

    #[test]
    fn round_trip_both_arms() {
        for arm in ARMS {
            let decoded = decode_envelope(&to_base64(&signed(arm))).expect("decodes");
            let transfer = sac_transfer(&decoded).expect("a transfer");
            assert_eq!(transfer.contract, usdc());
            assert_eq!(transfer.from, payer().address());
            assert_eq!(transfer.to, pay_to());
            assert_eq!(transfer.amount, 10_000_000);
            assert_eq!(transfer.tx_source, NULL_ACCOUNT);
            assert_eq!(transfer.op_source, None);
            assert_eq!(transfer.envelope_signatures, 0);
            assert_eq!(transfer.fee, 10_100);
            assert!(!transfer.fee_bump);
            assert_eq!(transfer.payer_nonce(), Ok((NONCE, EXPIRATION)));
            let entry = transfer.payer_authorization().expect("signed payer entry");
            assert_eq!(
                verify_authorization(&testnet(), entry),
                Ok(vec![payer().public_key()])
            );
            assert_eq!(
                verify_authorization(&Network::pubnet().id(), entry),
                Err(AuthError::BadSignature)
            );
        }
    }

    #[test]
    fn round_trip_fee_bump() {
        for arm in ARMS {
            let decoded = decode_envelope(&to_base64(&fee_bump(signed(arm)))).expect("decodes");
            let transfer = sac_transfer(&decoded).expect("a transfer");
            assert!(transfer.fee_bump);
            assert_eq!(
                transfer.envelope_signatures, 1,
                "the inner transaction's signatures"
            );
            assert_eq!(transfer.fee, 10_100, "the inner transaction's fee");
            assert_eq!(
                transfer.tx_source, NULL_ACCOUNT,
                "the inner transaction's source"
            );
            let entry = transfer.payer_authorization().expect("signed payer entry");
            assert_eq!(
                verify_authorization(&testnet(), entry),
                Ok(vec![payer().public_key()])
            );
        }
    }

    #[test]
    fn sign_payer_inside_a_fee_bump() {
        let mut envelope = fee_bump(unsigned(CredentialsArm::Address));
        sign_payer(&mut envelope, &payer(), &testnet(), EXPIRATION).expect("signs");
        let transfer = sac_transfer(&envelope).expect("a transfer");
        let entry = transfer.payer_authorization().expect("signed payer entry");
        assert_eq!(
            verify_authorization(&testnet(), entry),
            Ok(vec![payer().public_key()])
        );
    }

    #[test]
    fn changed_amount_after_signing_fails_verification() {
        for arm in ARMS {
            let mut envelope = signed(arm);
            set_args(
                &mut envelope,
                transfer_args(
                    &payer().address(),
                    &pay_to(),
                    Int128Parts {
                        hi: 0,
                        lo: 10_000_001,
                    },
                ),
            );
            let transfer = sac_transfer(&envelope).expect("a transfer");
            assert_eq!(transfer.amount, 10_000_001);
            let entry = transfer.payer_authorization().expect("shape is fine");
            assert_eq!(
                verify_authorization(&testnet(), entry),
                Err(AuthError::BadSignature)
            );
        }
    }

    #[test]
    fn amounts_use_both_i128_halves() {
        for amount in [
            0,
            1,
            i128::from(u64::MAX),
            i128::from(u64::MAX) + 1,
            i128::MAX,
        ] {
            let mut large = request(CredentialsArm::Address);
            large.amount = amount;
            let envelope = build_transfer(&large).expect("builds");
            assert_eq!(sac_transfer(&envelope).map(|t| t.amount), Ok(amount));
        }
    }

    #[test]
    fn muxed_and_contract_payees_are_read() {
        for to in [
            Address::MuxedAccount {
                ed25519: [5; 32],
                id: u64::MAX,
            },
            usdc(),
        ] {
            let mut payee = request(CredentialsArm::Address);
            payee.to = to;
            let envelope = build_transfer(&payee).expect("builds");
            assert_eq!(sac_transfer(&envelope).map(|t| t.to), Ok(to));
        }
    }

    #[test]
    fn other_signed_entries_with_the_same_invocation_are_allowed() {
        let mut envelope = signed(CredentialsArm::Address);
        let mut entries = auth(&mut envelope);
        let mut other = entries.first().expect("one entry").clone();
        credentials_mut(&mut other).address = other_account().to_sc_address();
        entries.insert(0, other);
        set_auth(&mut envelope, entries);
        let transfer = sac_transfer(&envelope).expect("a transfer");
        let entry = transfer.payer_authorization().expect("payer entry");
        let credentials = address_credentials(entry).expect("address credentials");
        assert_eq!(credentials.address, payer().address().to_sc_address());
    }

    // ----- one test per refusal -----

    #[test]
    fn too_large() {
        let longest = "A".repeat(MAX_ENVELOPE_BASE64_LEN);
        assert_eq!(
            decode_envelope(&longest),
            Err(TransferError::InvalidXdr),
            "not refused for size"
        );
        let too_long = "A".repeat(MAX_ENVELOPE_BASE64_LEN + 1);
        assert_eq!(decode_envelope(&too_long), Err(TransferError::TooLarge));
    }

    #[test]
    fn invalid_xdr() {
        let valid = to_base64(&signed(CredentialsArm::Address));
        let bytes = STANDARD.decode(&valid).expect("valid base64");
        let truncated = STANDARD.encode(bytes.get(..bytes.len() - 4).expect("long enough"));
        let mut trailing = bytes.clone();
        trailing.extend_from_slice(&[0, 0, 0, 0]);
        let trailing = STANDARD.encode(trailing);
        let url_safe = base64::engine::general_purpose::URL_SAFE.encode(vec![0xfb; 30]);
        for bad in [
            "",
            "!!!!",
            "AAAA",
            "AAAAAgAA",
            valid.get(1..).expect("long"),
            &truncated,
            &trailing,
            &url_safe,
        ] {
            assert_eq!(
                decode_envelope(bad),
                Err(TransferError::InvalidXdr),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn unsupported_envelope() {
        let v0 = TransactionEnvelope::TxV0(TransactionV0Envelope::default());
        assert_eq!(sac_transfer(&v0), Err(TransferError::UnsupportedEnvelope));
        let decoded = decode_envelope(&to_base64(&v0)).expect("a valid v0 envelope");
        assert_eq!(
            sac_transfer(&decoded),
            Err(TransferError::UnsupportedEnvelope)
        );
        let mut v0 = v0;
        let result = sign_payer(&mut v0, &payer(), &testnet(), EXPIRATION);
        assert_eq!(result, Err(TransferError::UnsupportedEnvelope));
    }

    #[test]
    fn operation_count() {
        let mut none = signed(CredentialsArm::Address);
        tx_mut(&mut none).operations = VecM::default();
        assert_eq!(sac_transfer(&none), Err(TransferError::OperationCount(0)));

        let mut two = signed(CredentialsArm::Address);
        let operation = tx_mut(&mut two)
            .operations
            .first()
            .expect("one operation")
            .clone();
        tx_mut(&mut two).operations =
            VecM::try_from(vec![operation.clone(), operation]).expect("two");
        assert_eq!(sac_transfer(&two), Err(TransferError::OperationCount(2)));
    }

    #[test]
    fn not_invoke_contract() {
        let mut inflation = signed(CredentialsArm::Address);
        let operation = tx_mut(&mut inflation)
            .operations
            .iter_mut()
            .next()
            .expect("one operation");
        operation.body = OperationBody::Inflation;
        assert_eq!(
            sac_transfer(&inflation),
            Err(TransferError::NotInvokeContract)
        );

        let mut upload = signed(CredentialsArm::Address);
        op_mut(&mut upload).host_function = HostFunction::UploadContractWasm(BytesM::default());
        assert_eq!(sac_transfer(&upload), Err(TransferError::NotInvokeContract));

        let mut create = signed(CredentialsArm::Address);
        op_mut(&mut create).host_function =
            HostFunction::CreateContract(CreateContractArgs::default());
        assert_eq!(sac_transfer(&create), Err(TransferError::NotInvokeContract));
    }

    #[test]
    fn invalid_contract() {
        let mut envelope = signed(CredentialsArm::Address);
        invocation_mut(&mut envelope).contract_address = other_account().to_sc_address();
        assert_eq!(sac_transfer(&envelope), Err(TransferError::InvalidContract));
    }

    #[test]
    fn wrong_function() {
        for name in ["transfer_from", "Transfer", "mint", "transfe"] {
            let mut envelope = signed(CredentialsArm::Address);
            invocation_mut(&mut envelope).function_name = symbol(name);
            assert_eq!(
                sac_transfer(&envelope),
                Err(TransferError::WrongFunction),
                "{name}"
            );
        }
    }

    #[test]
    fn wrong_arguments() {
        let from = payer().address();
        let to = pay_to();
        let amount = Int128Parts {
            hi: 0,
            lo: 10_000_000,
        };
        let muxed_from = Address::MuxedAccount {
            ed25519: payer().public_key(),
            id: 1,
        };
        let claimable_balance = ScVal::Address(ScAddress::ClaimableBalance(
            stellar_xdr::ClaimableBalanceId::ClaimableBalanceIdTypeV0(stellar_xdr::Hash([1; 32])),
        ));
        let full = transfer_args(&from, &to, amount.clone());
        let cases: Vec<Vec<ScVal>> = vec![
            vec![],
            full.get(..2).expect("two").to_vec(),
            [full.clone(), vec![ScVal::Void]].concat(),
            vec![
                ScVal::Address(from.to_sc_address()),
                ScVal::Address(to.to_sc_address()),
                ScVal::I64(1),
            ],
            vec![
                ScVal::Address(from.to_sc_address()),
                ScVal::Address(to.to_sc_address()),
                ScVal::U128(Default::default()),
            ],
            vec![
                ScVal::Address(from.to_sc_address()),
                ScVal::I128(amount.clone()),
                ScVal::Address(to.to_sc_address()),
            ],
            vec![
                ScVal::Void,
                ScVal::Address(to.to_sc_address()),
                ScVal::I128(amount.clone()),
            ],
            transfer_args(
                &from,
                &to,
                Int128Parts {
                    hi: -1,
                    lo: u64::MAX,
                },
            ),
            transfer_args(
                &from,
                &to,
                Int128Parts {
                    hi: i64::MIN,
                    lo: 0,
                },
            ),
            transfer_args(&muxed_from, &to, amount.clone()),
            vec![
                claimable_balance.clone(),
                ScVal::Address(to.to_sc_address()),
                ScVal::I128(amount.clone()),
            ],
            vec![
                ScVal::Address(from.to_sc_address()),
                claimable_balance,
                ScVal::I128(amount.clone()),
            ],
        ];
        for args in cases {
            let mut envelope = signed(CredentialsArm::Address);
            set_args(&mut envelope, args.clone());
            assert_eq!(
                sac_transfer(&envelope),
                Err(TransferError::WrongArguments),
                "{args:?}"
            );
        }
    }

    #[test]
    fn not_soroban_transaction() {
        let mut envelope = signed(CredentialsArm::Address);
        tx_mut(&mut envelope).ext = TransactionExt::V0;
        assert_eq!(
            sac_transfer(&envelope),
            Err(TransferError::NotSorobanTransaction)
        );
    }

    #[test]
    fn no_authorization() {
        let mut envelope = signed(CredentialsArm::Address);
        set_auth(&mut envelope, vec![]);
        assert_eq!(payer_check(&envelope), Err(TransferError::NoAuthorization));
        let result = sign_payer(&mut envelope, &payer(), &testnet(), EXPIRATION);
        assert_eq!(result, Err(TransferError::NoAuthorization));
    }

    #[test]
    fn unsupported_credentials() {
        for arm in ARMS {
            let mut source_account = signed(arm);
            let mut entries = auth(&mut source_account);
            let mut extra = entries.first().expect("one entry").clone();
            extra.credentials = SorobanCredentials::SourceAccount;
            entries.push(extra);
            set_auth(&mut source_account, entries);
            assert_eq!(
                payer_check(&source_account),
                Err(TransferError::UnsupportedCredentials)
            );

            let mut delegates = signed(arm);
            let mut entries = auth(&mut delegates);
            let entry = entries.first_mut().expect("one entry");
            entry.credentials =
                SorobanCredentials::AddressWithDelegates(SorobanAddressCredentialsWithDelegates {
                    address_credentials: credentials_mut(entry).clone(),
                    delegates: VecM::default(),
                });
            set_auth(&mut delegates, entries);
            assert_eq!(
                payer_check(&delegates),
                Err(TransferError::UnsupportedCredentials)
            );
        }
    }

    #[test]
    fn invocation_mismatch() {
        let mut other_amount = signed(CredentialsArm::Address);
        let mut entries = auth(&mut other_amount);
        let entry = entries.first_mut().expect("one entry");
        let SorobanAuthorizedFunction::ContractFn(invocation) = &mut entry.root_invocation.function
        else {
            panic!("contract fn")
        };
        invocation.args = VecM::try_from(transfer_args(
            &payer().address(),
            &pay_to(),
            Int128Parts { hi: 0, lo: 1 },
        ))
        .expect("three args");
        set_auth(&mut other_amount, entries);
        assert_eq!(
            payer_check(&other_amount),
            Err(TransferError::InvocationMismatch)
        );

        let mut create = signed(CredentialsArm::Address);
        let mut entries = auth(&mut create);
        let entry = entries.first_mut().expect("one entry");
        entry.root_invocation.function =
            SorobanAuthorizedFunction::CreateContractHostFn(CreateContractArgs::default());
        set_auth(&mut create, entries);
        assert_eq!(payer_check(&create), Err(TransferError::InvocationMismatch));
    }

    #[test]
    fn sub_invocations() {
        let mut envelope = signed(CredentialsArm::Address);
        let mut entries = auth(&mut envelope);
        let entry = entries.first_mut().expect("one entry");
        let sub = entry.root_invocation.clone();
        entry.root_invocation.sub_invocations = VecM::try_from(vec![sub]).expect("one");
        set_auth(&mut envelope, entries);
        assert_eq!(payer_check(&envelope), Err(TransferError::SubInvocations));
    }

    #[test]
    fn payer_not_authorized() {
        let mut envelope = signed(CredentialsArm::Address);
        let mut entries = auth(&mut envelope);
        credentials_mut(entries.first_mut().expect("one entry")).address =
            other_account().to_sc_address();
        set_auth(&mut envelope, entries);
        assert_eq!(
            payer_check(&envelope),
            Err(TransferError::PayerNotAuthorized)
        );
        let result = sign_payer(&mut envelope, &payer(), &testnet(), EXPIRATION);
        assert_eq!(result, Err(TransferError::PayerNotAuthorized));
    }

    #[test]
    fn duplicate_authorization() {
        let mut envelope = signed(CredentialsArm::Address);
        let mut entries = auth(&mut envelope);
        entries.extend(entries.clone());
        set_auth(&mut envelope, entries);
        assert_eq!(
            payer_check(&envelope),
            Err(TransferError::DuplicateAuthorization)
        );
        let result = sign_payer(&mut envelope, &payer(), &testnet(), EXPIRATION);
        assert_eq!(result, Err(TransferError::DuplicateAuthorization));
    }

    #[test]
    fn unsigned_authorization() {
        for arm in ARMS {
            assert_eq!(
                payer_check(&unsigned(arm)),
                Err(TransferError::UnsignedAuthorization)
            );
            for empty in [ScVal::Vec(None), ScVal::Vec(Some(ScVec::default()))] {
                let mut envelope = signed(arm);
                let mut entries = auth(&mut envelope);
                credentials_mut(entries.first_mut().expect("one entry")).signature = empty;
                set_auth(&mut envelope, entries);
                assert_eq!(
                    payer_check(&envelope),
                    Err(TransferError::UnsignedAuthorization)
                );
            }
        }
    }

    #[test]
    fn payer_nonce_requires_a_signed_entry() {
        let transfer = sac_transfer(&unsigned(CredentialsArm::Address)).expect("a transfer");
        assert_eq!(
            transfer.payer_nonce(),
            Err(TransferError::UnsignedAuthorization)
        );
    }

    #[test]
    fn invalid_source() {
        let mut contract_source = request(CredentialsArm::Address);
        contract_source.source = usdc();
        assert_eq!(
            build_transfer(&contract_source),
            Err(TransferError::InvalidSource)
        );
    }

    #[test]
    fn auth_error_when_the_payer_is_a_contract() {
        let mut contract_payer = request(CredentialsArm::Address);
        contract_payer.from = usdc();
        let mut envelope = build_transfer(&contract_payer).expect("builds");
        let result = sign_payer(&mut envelope, &payer(), &testnet(), EXPIRATION);
        assert_eq!(
            result,
            Err(TransferError::Auth(AuthError::UnsupportedAddress))
        );
    }

    #[test]
    fn a_malformed_signature_passes_the_shape_check_but_not_verification() {
        let mut envelope = signed(CredentialsArm::Address);
        let mut entries = auth(&mut envelope);
        credentials_mut(entries.first_mut().expect("one entry")).signature = ScVal::U32(1);
        set_auth(&mut envelope, entries);
        let transfer = sac_transfer(&envelope).expect("a transfer");
        let entry = transfer.payer_authorization().expect("not void, not empty");
        assert_eq!(
            verify_authorization(&testnet(), entry),
            Err(AuthError::MalformedSignature)
        );
    }

    #[test]
    fn a_second_signature_by_another_key_is_reported() {
        let mut envelope = signed(CredentialsArm::Address);
        let mut entries = auth(&mut envelope);
        let entry = entries.first_mut().expect("one entry");
        let payload = crate::stellar::authorization_payload(&testnet(), entry).expect("payload");
        let mut signatures = account_signatures(&credentials_mut(entry).signature).expect("signed");
        let cosigner = Keypair::from_seed([4; 32]);
        signatures.push(AccountSignature {
            public_key: cosigner.public_key(),
            signature: cosigner.sign(&payload),
        });
        signatures.sort_by_key(|signature| signature.public_key);
        credentials_mut(entry).signature = encode_account_signatures(&signatures).expect("encodes");
        set_auth(&mut envelope, entries);
        let transfer = sac_transfer(&envelope).expect("a transfer");
        let keys =
            verify_authorization(&testnet(), transfer.payer_authorization().expect("signed"));
        let mut expected = vec![payer().public_key(), cosigner.public_key()];
        expected.sort_unstable();
        assert_eq!(keys, Ok(expected));
    }

    // ----- untrusted input -----

    /// xorshift64: a tiny deterministic PRNG for the garbage tests.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, bound: usize) -> usize {
            (self.next() % bound as u64) as usize
        }

        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    /// Runs everything a server would run on an untrusted envelope; only panics matter.
    fn exercise(base64: &str) {
        let Ok(mut envelope) = decode_envelope(base64) else {
            return;
        };
        if let Ok(transfer) = sac_transfer(&envelope) {
            let _ = transfer.payer_nonce();
            if let Ok(entry) = transfer.payer_authorization() {
                let _ = verify_authorization(&testnet(), entry);
            }
        }
        let _ = sign_payer(&mut envelope, &payer(), &testnet(), EXPIRATION);
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..1000 {
            let len = rng.below(600);
            exercise(&STANDARD.encode(rng.bytes(len)));
        }
        const ALPHABET: &[u8] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_ \n\t.!\0";
        for _ in 0..500 {
            let len = rng.below(200);
            let text: String = (0..len)
                .map(|_| char::from(*ALPHABET.get(rng.below(ALPHABET.len())).expect("in range")))
                .collect();
            exercise(&text);
        }
    }

    #[test]
    fn truncations_never_panic() {
        let bytes = STANDARD
            .decode(to_base64(&fee_bump(signed(CredentialsArm::AddressV2))))
            .expect("base64");
        for len in 0..bytes.len() {
            let truncated = bytes.get(..len).expect("in range");
            assert_eq!(
                decode_envelope(&STANDARD.encode(truncated)),
                Err(TransferError::InvalidXdr),
                "{len}"
            );
        }
    }

    #[test]
    fn mutations_never_panic() {
        const WORDS: [u32; 6] = [0, 1, 2, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff];
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        let originals = [
            STANDARD
                .decode(to_base64(&signed(CredentialsArm::Address)))
                .expect("base64"),
            STANDARD
                .decode(to_base64(&fee_bump(signed(CredentialsArm::AddressV2))))
                .expect("base64"),
        ];
        for round in 0..2000 {
            let mut bytes = originals.get(round % 2).expect("two originals").clone();
            for _ in 0..=rng.below(3) {
                let at = rng.below(bytes.len().max(1));
                match rng.below(4) {
                    0 => {
                        if let Some(byte) = bytes.get_mut(at) {
                            *byte ^= 1 << rng.below(8);
                        }
                    }
                    1 => {
                        if let Some(byte) = bytes.get_mut(at) {
                            *byte = rng.next() as u8;
                        }
                    }
                    2 => {
                        let word = WORDS
                            .get(rng.below(WORDS.len()))
                            .expect("in range")
                            .to_be_bytes();
                        let at = at - at % 4;
                        if let Some(slot) = bytes.get_mut(at..at + 4) {
                            slot.copy_from_slice(&word);
                        }
                    }
                    _ => bytes.truncate(at),
                }
            }
            exercise(&STANDARD.encode(&bytes));
        }
    }

    /// A `transfer` envelope whose third argument is `levels` nested `ScVal::Vec`s (and then stops).
    fn deeply_nested(levels: usize) -> Vec<u8> {
        fn put(bytes: &mut Vec<u8>, value: &impl WriteXdr) {
            bytes.extend(value.to_xdr(Limits::none()).expect("encodes"));
        }
        let mut bytes = Vec::new();
        put(&mut bytes, &EnvelopeType::Tx);
        put(
            &mut bytes,
            &NULL_ACCOUNT.to_muxed_account().expect("an account"),
        );
        put(&mut bytes, &100_u32);
        put(&mut bytes, &SequenceNumber(1));
        put(&mut bytes, &Preconditions::None);
        put(&mut bytes, &Memo::None);
        put(&mut bytes, &1_u32);
        put(&mut bytes, &0_u32);
        put(&mut bytes, &OperationType::InvokeHostFunction);
        put(&mut bytes, &HostFunctionType::InvokeContract);
        put(&mut bytes, &usdc().to_sc_address());
        put(&mut bytes, &symbol("transfer"));
        put(&mut bytes, &1_u32);
        for _ in 0..levels {
            put(&mut bytes, &ScValType::Vec);
            put(&mut bytes, &1_u32);
            put(&mut bytes, &1_u32);
        }
        bytes
    }

    #[test]
    fn deeply_nested_values_are_refused() {
        let levels = 5000;
        let bytes = deeply_nested(levels);
        let base64 = STANDARD.encode(&bytes);
        assert!(
            base64.len() <= MAX_ENVELOPE_BASE64_LEN,
            "within the size limit"
        );
        assert_eq!(
            TransactionEnvelope::from_xdr(&bytes, decode_limits()),
            Err(stellar_xdr::Error::DepthLimitExceeded)
        );
        assert_eq!(decode_envelope(&base64), Err(TransferError::InvalidXdr));
    }

    #[test]
    fn the_depth_limit_leaves_room() {
        let envelope = fee_bump(signed(CredentialsArm::AddressV2));
        let bytes = envelope.to_xdr(Limits::none()).expect("encodes");
        let needed = (1..=MAX_XDR_DEPTH)
            .find(|&depth| {
                TransactionEnvelope::from_xdr(
                    &bytes,
                    Limits {
                        depth,
                        len: MAX_ENVELOPE_BYTES,
                    },
                )
                .is_ok()
            })
            .expect("decodes within the limit");
        assert!(needed <= 32, "a fee-bumped transfer needs {needed} levels");
    }
}
