//! [`SettlementEvidence`]: how to find one payment on the ledger after the answer to its
//! settlement was lost, and [`SettlementEvidence::find`], which asks the ledger.
//!
//! | evidence | settled when | not settled when |
//! |---|---|---|
//! | [`Authorized`](SettlementEvidence::Authorized): a SAC transfer the payer authorized with address credentials (its nonce and signature expiration ledger) | a successful transaction carrying that authorization (same payer, same nonce) emitted the asset's `transfer(from, to, amount)` event between the verification and the expiration ledger (found with `getEvents`, confirmed with `getTransaction`) | the expiration ledger has closed, the events of every ledger from the verification to it are still kept and were all read, and none is that transfer: the authorization can never be used any more |
//! | [`Transaction`](SettlementEvidence::Transaction): a transaction whose hash was known before it was submitted | `getTransaction` says `SUCCESS` | it says `FAILED`, or it is not found a ledger's time after its time bounds ended (no ledger can include it any more) |
//!
//! Anything else (the RPC unreachable, a nonce consumed whose transfer is not found, events no
//! longer kept) is [`LedgerFinding::Unknown`]: ask again later. The evidence is kept as bytes in
//! payment records ([`encode`](SettlementEvidence::encode), versioned, lengths checked on
//! [`decode`](SettlementEvidence::decode)).

use std::time::{SystemTime, UNIX_EPOCH};

use super::events::event_amount;
use super::rpc::{
    EventFilter, EventsRequest, SorobanRpc, TopicMatch, TransactionHash, TransactionStatus,
};
use super::xdr::{
    ContractDataDurability, HostFunction, LedgerKey, LedgerKeyContractData, OperationBody,
    ScNonceKey, ScSymbol, ScVal, SorobanCredentials, StringM, TransactionEnvelope,
};
use super::{Address, SacTransfer, TransferError};

const VERSION: u8 = 1;
/// The most event pages read for one search (each up to [`PAGE`] events).
const MAX_PAGES: usize = 20;
/// Events asked for per page.
const PAGE: u32 = 200;
/// The most ledgers one `getEvents` call scans on a Soroban RPC server.
const MAX_SCAN_LEDGERS: u32 = 10_000;
/// How long after a transaction's time bounds end it can no longer be in a ledger, in seconds
/// (a ledger closes every few seconds; its close time is checked against the bounds).
const TIME_BOUND_MARGIN: u64 = 30;

/// How to find one payment on the ledger (see the [module docs](self)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SettlementEvidence {
    /// A SAC transfer authorized by the payer's address credentials: whoever submits it, it is
    /// the one transaction that consumes this nonce.
    Authorized(AuthorizedTransfer),
    /// A transaction whose hash is known before it is submitted.
    Transaction {
        /// Its hash.
        hash: TransactionHash,
        /// The end of its time bounds (`maxTime`, Unix seconds); `None` when it has none, and
        /// then it is never found "not settled".
        valid_until: Option<u64>,
    },
}

/// A SAC transfer authorized by address credentials, and where to start looking for it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuthorizedTransfer {
    /// The token contract.
    pub asset: Address,
    /// The payer, whose credentials authorized the transfer.
    pub from: Address,
    /// The payee.
    pub to: Address,
    /// The amount, in atomic units.
    pub amount: i128,
    /// The authorization's nonce.
    pub nonce: i64,
    /// The authorization's signature expiration ledger: the last ledger it can be used in.
    pub expiration_ledger: u32,
    /// A ledger at or before the one the payment was verified in: the search starts there.
    pub since_ledger: u32,
}

impl AuthorizedTransfer {
    /// The evidence of `transfer`, authorized by its payer's address credentials, verified no
    /// earlier than `since_ledger`.
    ///
    /// # Errors
    ///
    /// As [`SacTransfer::payer_nonce`]: the payer's authorization is missing or not signed.
    pub fn of(transfer: &SacTransfer, since_ledger: u32) -> Result<Self, TransferError> {
        let (nonce, expiration_ledger) = transfer.payer_nonce()?;
        Ok(AuthorizedTransfer {
            asset: transfer.contract,
            from: transfer.from,
            to: transfer.to,
            amount: transfer.amount,
            nonce,
            expiration_ledger,
            since_ledger,
        })
    }
}

/// What the ledger says of a payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LedgerFinding {
    /// The payment settled, in this transaction.
    Settled(TransactionHash),
    /// The payment did not settle and cannot any more.
    NotSettled,
    /// The ledger does not say yet (or could not be asked).
    Unknown,
}

/// Evidence bytes that are not a whole, known encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("settlement evidence is not readable: {0}")]
pub struct EvidenceError(&'static str);

impl SettlementEvidence {
    /// The evidence's bytes: a version byte, a kind byte, then fixed-width fields (addresses as
    /// their 32-byte keys with a kind byte, integers big-endian).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        match self {
            SettlementEvidence::Authorized(transfer) => {
                out.push(0);
                for address in [&transfer.asset, &transfer.from, &transfer.to] {
                    write_address(&mut out, address);
                }
                out.extend_from_slice(&transfer.amount.to_be_bytes());
                out.extend_from_slice(&transfer.nonce.to_be_bytes());
                out.extend_from_slice(&transfer.expiration_ledger.to_be_bytes());
                out.extend_from_slice(&transfer.since_ledger.to_be_bytes());
            }
            SettlementEvidence::Transaction { hash, valid_until } => {
                out.push(1);
                out.extend_from_slice(hash.as_bytes());
                out.extend_from_slice(&valid_until.unwrap_or(0).to_be_bytes());
            }
        }
        out
    }

    /// The evidence from [`encode`](Self::encode)'s bytes.
    ///
    /// # Errors
    ///
    /// [`EvidenceError`] for anything but a whole version-1 encoding.
    pub fn decode(bytes: &[u8]) -> Result<Self, EvidenceError> {
        let mut input = Input(bytes);
        if input.array::<1>()? != [VERSION] {
            return Err(EvidenceError("unknown version"));
        }
        let evidence = match input.array::<1>()?[0] {
            0 => {
                let asset = input.address()?;
                let from = input.address()?;
                let to = input.address()?;
                SettlementEvidence::Authorized(AuthorizedTransfer {
                    asset,
                    from,
                    to,
                    amount: i128::from_be_bytes(input.array()?),
                    nonce: i64::from_be_bytes(input.array()?),
                    expiration_ledger: u32::from_be_bytes(input.array()?),
                    since_ledger: u32::from_be_bytes(input.array()?),
                })
            }
            1 => {
                let hash = TransactionHash(input.array()?);
                let valid_until = u64::from_be_bytes(input.array()?);
                SettlementEvidence::Transaction {
                    hash,
                    valid_until: (valid_until != 0).then_some(valid_until),
                }
            }
            _ => return Err(EvidenceError("unknown kind")),
        };
        if !input.0.is_empty() {
            return Err(EvidenceError("trailing bytes"));
        }
        Ok(evidence)
    }

    /// Asks the ledger whether this payment settled (see the [module docs](self)).
    pub async fn find(&self, rpc: &dyn SorobanRpc) -> LedgerFinding {
        let found = match self {
            SettlementEvidence::Authorized(transfer) => find_authorized(rpc, transfer).await,
            SettlementEvidence::Transaction { hash, valid_until } => {
                find_transaction(rpc, hash, *valid_until).await
            }
        };
        found.unwrap_or_else(|error| {
            tracing::warn!(%error, "cannot ask the ledger about a payment");
            LedgerFinding::Unknown
        })
    }
}

async fn find_transaction(
    rpc: &dyn SorobanRpc,
    hash: &TransactionHash,
    valid_until: Option<u64>,
) -> Result<LedgerFinding, super::rpc::RpcError> {
    let info = rpc.transaction(hash).await?;
    Ok(match info.status {
        TransactionStatus::Success => LedgerFinding::Settled(*hash),
        TransactionStatus::Failed => LedgerFinding::NotSettled,
        TransactionStatus::NotFound => match valid_until {
            Some(until) if unix_now() > until.saturating_add(TIME_BOUND_MARGIN) => {
                LedgerFinding::NotSettled
            }
            _ => LedgerFinding::Unknown,
        },
    })
}

async fn find_authorized(
    rpc: &dyn SorobanRpc,
    transfer: &AuthorizedTransfer,
) -> Result<LedgerFinding, super::rpc::RpcError> {
    // A muxed payee is named by its account in the event's topics (CAP-67), its id in the data.
    let to = match transfer.to {
        Address::MuxedAccount { ed25519, .. } => Address::Account(ed25519),
        to => to,
    };
    let filter = EventFilter::new().contract(transfer.asset).topic([
        TopicMatch::Exact(ScVal::Symbol(ScSymbol(
            StringM::try_from("transfer").unwrap_or_default(),
        ))),
        TopicMatch::Exact(ScVal::Address(transfer.from.to_sc_address())),
        TopicMatch::Exact(ScVal::Address(to.to_sc_address())),
        TopicMatch::AnyTrailing,
    ]);
    // The authorization can only be used up to its expiration ledger.
    let end = transfer.expiration_ledger.saturating_add(1);
    let from_ledger = |start: u32| {
        EventsRequest::from_ledger(start)
            .end_ledger(end)
            .filter(filter.clone())
            .limit(PAGE)
    };
    let mut request = from_ledger(transfer.since_ledger);
    let mut covered_from = None;
    let mut latest = 0;
    let mut checked: Vec<TransactionHash> = Vec::new();
    // Whether the last page was read (the page budget did not cut the search short).
    let mut exhausted = false;
    for _ in 0..MAX_PAGES {
        let page = match rpc.events(&request).await {
            Ok(page) => page,
            // Events from before the oldest ledger kept are gone: start at the oldest kept.
            Err(error) if covered_from.is_none() => {
                let health = rpc.health().await?;
                let Some(oldest) = health.oldest_ledger.filter(|o| *o > transfer.since_ledger)
                else {
                    return Err(error);
                };
                request = from_ledger(oldest);
                covered_from = Some(oldest);
                continue;
            }
            Err(error) => return Err(error),
        };
        covered_from.get_or_insert(transfer.since_ledger);
        latest = page.latest_ledger;
        for event in &page.events {
            if !event.in_successful_contract_call
                || event_amount(&event.value) != Some(transfer.amount)
                || checked.contains(&event.transaction)
            {
                continue;
            }
            if carries_authorization(rpc, &event.transaction, transfer).await? {
                return Ok(LedgerFinding::Settled(event.transaction));
            }
            checked.push(event.transaction);
        }
        // A page shorter than asked for is the last of the range.
        match page.cursor {
            Some(cursor) if page.events.len() >= PAGE as usize => {
                request = EventsRequest::after(cursor)
                    .end_ledger(end)
                    .filter(filter.clone())
                    .limit(PAGE);
            }
            _ => {
                exhausted = true;
                break;
            }
        }
    }
    // Complete: every ledger from the verification to the expiration was read (a server scans
    // at most 10 000 ledgers a call; the windows here are far shorter).
    let span = transfer
        .expiration_ledger
        .saturating_sub(transfer.since_ledger);
    let complete =
        exhausted && covered_from == Some(transfer.since_ledger) && span < MAX_SCAN_LEDGERS;
    if latest > transfer.expiration_ledger && complete {
        // Every ledger the authorization could have been used in is closed and searched; its
        // nonce entry, if any, would only say the same.
        return Ok(LedgerFinding::NotSettled);
    }
    if nonce_consumed(rpc, transfer).await? {
        tracing::warn!(
            from = %transfer.from,
            "an authorization was consumed but its transfer is not found yet"
        );
    }
    Ok(LedgerFinding::Unknown)
}

/// Whether the successful transaction `hash` carries the payer's authorization with this nonce.
async fn carries_authorization(
    rpc: &dyn SorobanRpc,
    hash: &TransactionHash,
    transfer: &AuthorizedTransfer,
) -> Result<bool, super::rpc::RpcError> {
    let info = rpc.transaction(hash).await?;
    match info.status {
        TransactionStatus::Success => {}
        TransactionStatus::Failed => return Ok(false),
        // Events and transactions may come from servers a ledger apart: not seen yet is not
        // "not ours".
        TransactionStatus::NotFound => return Err(super::rpc::RpcError::NotFinal(*hash)),
    }
    let Some(envelope) = info.envelope else {
        return Err(super::rpc::RpcError::NotFinal(*hash));
    };
    let operations = match &envelope {
        TransactionEnvelope::Tx(v1) => &v1.tx.operations,
        TransactionEnvelope::TxV0(v0) => &v0.tx.operations,
        TransactionEnvelope::TxFeeBump(bump) => match &bump.tx.inner_tx {
            super::xdr::FeeBumpTransactionInnerTx::Tx(inner) => &inner.tx.operations,
        },
    };
    let from = transfer.from.to_sc_address();
    Ok(operations.iter().any(|operation| match &operation.body {
        OperationBody::InvokeHostFunction(op) => {
            matches!(op.host_function, HostFunction::InvokeContract(_))
                && op.auth.iter().any(|entry| match &entry.credentials {
                    SorobanCredentials::Address(credentials) => {
                        credentials.address == from && credentials.nonce == transfer.nonce
                    }
                    _ => false,
                })
        }
        _ => false,
    }))
}

/// Whether the payer's nonce entry for this authorization exists (it does, until the expiration
/// ledger, once the authorization was used).
async fn nonce_consumed(
    rpc: &dyn SorobanRpc,
    transfer: &AuthorizedTransfer,
) -> Result<bool, super::rpc::RpcError> {
    let key = LedgerKey::ContractData(LedgerKeyContractData {
        contract: transfer.from.to_sc_address(),
        key: ScVal::LedgerKeyNonce(ScNonceKey {
            nonce: transfer.nonce,
        }),
        durability: ContractDataDurability::Temporary,
    });
    let entries = rpc.ledger_entries(std::slice::from_ref(&key)).await?;
    Ok(!entries.entries.is_empty())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

fn write_address(out: &mut Vec<u8>, address: &Address) {
    match address {
        Address::Account(key) => {
            out.push(0);
            out.extend_from_slice(key);
        }
        Address::Contract(id) => {
            out.push(1);
            out.extend_from_slice(id);
        }
        Address::MuxedAccount { ed25519, id } => {
            out.push(2);
            out.extend_from_slice(ed25519);
            out.extend_from_slice(&id.to_be_bytes());
        }
    }
}

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N], EvidenceError> {
        if self.0.len() < N {
            return Err(EvidenceError("truncated"));
        }
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        let mut array = [0; N];
        array.copy_from_slice(head);
        Ok(array)
    }

    fn address(&mut self) -> Result<Address, EvidenceError> {
        let [kind] = self.array::<1>()?;
        match kind {
            0 => Ok(Address::Account(self.array()?)),
            1 => Ok(Address::Contract(self.array()?)),
            2 => Ok(Address::MuxedAccount {
                ed25519: self.array()?,
                id: u64::from_be_bytes(self.array()?),
            }),
            _ => Err(EvidenceError("bad address kind")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authorized(to: Address) -> SettlementEvidence {
        SettlementEvidence::Authorized(AuthorizedTransfer {
            asset: Address::Contract([1; 32]),
            from: Address::Account([2; 32]),
            to,
            amount: i128::MIN,
            nonce: i64::MIN,
            expiration_ledger: u32::MAX,
            since_ledger: 7,
        })
    }

    fn every_kind() -> Vec<SettlementEvidence> {
        vec![
            authorized(Address::Account([3; 32])),
            authorized(Address::Contract([4; 32])),
            authorized(Address::MuxedAccount {
                ed25519: [5; 32],
                id: u64::MAX,
            }),
            SettlementEvidence::Transaction {
                hash: TransactionHash([6; 32]),
                valid_until: Some(1_800_000_000),
            },
            SettlementEvidence::Transaction {
                hash: TransactionHash([6; 32]),
                valid_until: None,
            },
        ]
    }

    #[test]
    fn every_kind_round_trips() {
        for evidence in every_kind() {
            let bytes = evidence.encode();
            assert!(bytes.len() <= crate::store::MAX_EVIDENCE_LEN);
            assert_eq!(SettlementEvidence::decode(&bytes), Ok(evidence));
        }
    }

    #[test]
    fn anything_but_a_whole_encoding_is_refused() {
        for evidence in every_kind() {
            let bytes = evidence.encode();
            for len in 0..bytes.len() {
                assert_eq!(
                    SettlementEvidence::decode(&bytes[..len]),
                    Err(EvidenceError("truncated")),
                    "{len}"
                );
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert_eq!(
                SettlementEvidence::decode(&longer),
                Err(EvidenceError("trailing bytes"))
            );
        }
        assert_eq!(
            SettlementEvidence::decode(&[2, 0]),
            Err(EvidenceError("unknown version"))
        );
        assert_eq!(
            SettlementEvidence::decode(&[1, 9]),
            Err(EvidenceError("unknown kind"))
        );
        let mut bad_address = authorized(Address::Account([3; 32])).encode();
        bad_address[2] = 7;
        assert_eq!(
            SettlementEvidence::decode(&bad_address),
            Err(EvidenceError("bad address kind"))
        );
    }
}
