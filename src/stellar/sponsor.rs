//! [`Sponsor`]: submitting someone else's authorized Soroban call from our own accounts, paying
//! its fees (an x402 facilitator's settlement, an MPP server's sponsored pull).
//!
//! The call (host function and signed authorization entries) is rebuilt into a transaction,
//! simulated for its resources (and checked by the caller), then given one of the sponsor's
//! source accounts and its next sequence number, signed, optionally fee-bumped, submitted, and
//! followed until final (`LedgerWatch`: looked up once per new ledger). Each source account
//! carries one transaction at a time, as the network queues one per account, so concurrent
//! submissions never collide on a sequence number; the account is taken only for the
//! submission and the wait, not for the simulation.
//!
//! Several sponsors (several facilitator instances) may send from the same accounts when they
//! share [`Leases`]: an account is then also leased for the submission, so no two settlements
//! share an account in one ledger, and a sponsor whose cached sequence number is stale (another
//! instance used the account) reads it again on the network's `txBadSeq`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Mutex, MutexGuard, Semaphore, SemaphorePermit};

use super::ledger_watch::LedgerWatch;
use crate::store::{LeaseHolder, Leases};

use super::rpc::{
    RpcError, SendStatus, Simulation, SorobanRpc, TransactionHash, TransactionStatus,
    account_sequence,
};
use super::transfer::{fee_bump, invocation_envelope, set_authorization, sign_envelope};
use super::xdr::{
    HostFunction, SequenceNumber, SorobanAuthorizationEntry, TransactionEnvelope, TransactionExt,
    TransactionResultResult,
};
use super::{Address, Keypair, Network};

/// The base fee of one operation, in stroops.
const BASE_FEE: u32 = 100;
/// Submissions retried when the network says "try again later", or the sequence was stale.
const SEND_ATTEMPTS: usize = 3;
/// How long an account's shared lease outlives its transaction's validity window.
const LEASE_MARGIN: Duration = Duration::from_secs(10);
/// The pause before looking again for an account when every free one is leased elsewhere.
const LEASED_ELSEWHERE_PAUSE: Duration = Duration::from_millis(20);

/// A call to submit on someone's behalf.
#[derive(Clone, Debug, PartialEq)]
pub struct SponsoredCall {
    /// What to invoke.
    pub host_function: HostFunction,
    /// Its authorization entries, signed by their owners.
    pub auth: Vec<SorobanAuthorizationEntry>,
    /// How long the transaction stays valid from now, and how long to wait for it.
    pub valid_for: Duration,
}

/// A submitted call's final state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sponsored {
    /// The transaction submitted (the fee bump's, when bumped).
    pub hash: TransactionHash,
    /// `Success` or `Failed`.
    pub status: TransactionStatus,
}

/// Why a call was not submitted, or has no known outcome.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SponsorError {
    /// No source account was given.
    #[error("a sponsor needs at least one source account")]
    NoAccounts,
    /// The call does not simulate.
    #[error("the call does not simulate: {0}")]
    Simulation(String),
    /// The caller's check of the simulation refused it.
    #[error("the simulation was refused: {0}")]
    Refused(&'static str),
    /// Its fees would exceed the sponsor's ceiling.
    #[error("the fees would exceed the ceiling")]
    FeeTooHigh,
    /// The network refused the transaction; nothing was applied.
    #[error("the network refused the transaction")]
    Rejected,
    /// The RPC failed before anything was submitted.
    #[error(transparent)]
    Rpc(RpcError),
    /// The RPC failed after a submission: the outcome is unknown.
    #[error("outcome unknown: {0}")]
    Unknown(RpcError),
    /// The transaction could not be built or signed.
    #[error("the transaction could not be built")]
    Build,
}

/// A source account and its last used sequence number (`None` until read from the ledger).
struct Channel {
    keypair: Keypair,
    address: Address,
    sequence: Option<i64>,
}

/// Submits authorized calls from its own accounts (see the [module docs](self)).
pub struct Sponsor {
    rpc: Arc<dyn SorobanRpc>,
    network: Network,
    channels: Vec<Mutex<Channel>>,
    /// One permit per channel: a submission waits here for a free channel.
    free: Semaphore,
    addresses: Vec<Address>,
    fee_bump: Option<Keypair>,
    max_fee: u32,
    /// Follows the ledger for the transactions in flight.
    ledgers: Arc<LedgerWatch>,
    /// Leases shared with other sponsors sending from the same accounts, if any.
    shared: Option<Shared>,
    /// Where the next search for a free account starts (spreads sponsors over the accounts).
    next: std::sync::atomic::AtomicUsize,
}

/// Leases shared with other sponsors, and this sponsor's name as their holder.
struct Shared {
    leases: Arc<dyn Leases>,
    holder: LeaseHolder,
}

/// A channel account taken for one submission.
struct Lease<'a> {
    _permit: SemaphorePermit<'a>,
    channel: MutexGuard<'a, Channel>,
    /// Releases the shared lease, if any, when the account is given back.
    shared: Option<(&'a Shared, Vec<u8>)>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some((shared, name)) = self.shared.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let (leases, holder) = (shared.leases.clone(), shared.holder);
            runtime.spawn(async move {
                if let Err(error) = leases.release(&name, holder).await {
                    tracing::warn!(%error, "cannot release a source account's lease");
                }
            });
        }
    }
}

/// The name of the lease on the source account `account`.
fn account_lease(account: &Address) -> Vec<u8> {
    [
        b"stellar-source-account:".as_slice(),
        account.to_string().as_bytes(),
    ]
    .concat()
}

impl Sponsor {
    /// A sponsor sending from `accounts` (funded; each pays its own fees unless `fee_bump`
    /// pays them all), paying at most `max_fee` stroops per transaction.
    pub fn new(
        rpc: Arc<dyn SorobanRpc>,
        network: Network,
        accounts: Vec<Keypair>,
        fee_bump: Option<Keypair>,
        max_fee: u32,
    ) -> Result<Sponsor, SponsorError> {
        if accounts.is_empty() {
            return Err(SponsorError::NoAccounts);
        }
        let mut addresses: Vec<Address> = accounts.iter().map(Keypair::address).collect();
        addresses.extend(fee_bump.as_ref().map(Keypair::address));
        Ok(Sponsor {
            ledgers: LedgerWatch::new(rpc.clone()),
            shared: None,
            next: std::sync::atomic::AtomicUsize::new(0),
            rpc,
            network,
            free: Semaphore::new(accounts.len()),
            channels: accounts
                .into_iter()
                .map(|keypair| {
                    Mutex::new(Channel {
                        address: keypair.address(),
                        keypair,
                        sequence: None,
                    })
                })
                .collect(),
            addresses,
            fee_bump,
            max_fee,
        })
    }

    /// Shares the source accounts with other sponsors through `leases` (see the
    /// [module docs](self)).
    #[must_use]
    pub fn with_leases(mut self, leases: Arc<dyn Leases>) -> Sponsor {
        self.shared = Some(Shared {
            leases,
            holder: LeaseHolder::unique(),
        });
        self
    }

    /// Every account the sponsor signs with (the sources, then the fee-bump account): none may
    /// ever be a payer, a source or in an authorization entry of what it submits.
    pub fn accounts(&self) -> &[Address] {
        &self.addresses
    }

    /// Submits `call` and waits until it is final. `check` sees the simulation of the rebuilt
    /// transaction (the events it would emit) and may refuse it before anything is sent.
    pub async fn submit(
        &self,
        call: &SponsoredCall,
        check: &(dyn Fn(&Simulation) -> Result<(), &'static str> + Send + Sync),
    ) -> Result<Sponsored, SponsorError> {
        // Simulated from the first account: a Soroban call's resources do not depend on its
        // source (our accounts are never in its footprint or authorization).
        let mut envelope = self.rebuild(call, &self.addresses[0])?;
        let simulation = self
            .rpc
            .simulate_transaction(&envelope)
            .await
            .map_err(SponsorError::Rpc)?;
        if !simulation.is_success() {
            let error = simulation.error.unwrap_or_default();
            return Err(SponsorError::Simulation(error.chars().take(300).collect()));
        }
        check(&simulation).map_err(SponsorError::Refused)?;
        let data = simulation
            .transaction_data
            .ok_or_else(|| SponsorError::Simulation("no transaction data".into()))?;
        let resource_fee =
            u32::try_from(data.resource_fee.max(0)).map_err(|_| SponsorError::FeeTooHigh)?;
        let fee = BASE_FEE
            .checked_add(resource_fee)
            .filter(|fee| *fee <= self.max_fee)
            .ok_or(SponsorError::FeeTooHigh)?;
        // The account stays ours until its transaction is final: one in flight per account.
        let mut lease = self.lease(call.valid_for + LEASE_MARGIN).await?;
        if let TransactionEnvelope::Tx(v1) = &mut envelope {
            v1.tx.source_account = lease
                .channel
                .address
                .to_muxed_account()
                .ok_or(SponsorError::Build)?;
            v1.tx.fee = fee;
            v1.tx.ext = TransactionExt::V1(data);
        }
        let hash = self.send(envelope, &mut lease.channel).await?;
        let info = self
            .ledgers
            .wait_final(&hash, call.valid_for)
            .await
            .map_err(SponsorError::Unknown)?;
        drop(lease);
        Ok(Sponsored {
            hash,
            status: info.status,
        })
    }

    /// Takes a free source account: one of this sponsor's, and, with shared leases, one no
    /// other sponsor holds (leased for `ttl`).
    async fn lease(&self, ttl: Duration) -> Result<Lease<'_>, SponsorError> {
        use std::sync::atomic::Ordering;
        loop {
            let permit = self
                .free
                .acquire()
                .await
                .map_err(|_| SponsorError::Rejected)?;
            // A permit guarantees a free channel: channels are locked only with a permit held.
            let start = self.next.fetch_add(1, Ordering::Relaxed);
            let count = self.channels.len();
            for offset in 0..count {
                let Ok(channel) = self.channels[(start + offset) % count].try_lock() else {
                    continue;
                };
                let Some(shared) = &self.shared else {
                    return Ok(Lease {
                        _permit: permit,
                        channel,
                        shared: None,
                    });
                };
                let name = account_lease(&channel.address);
                let leased = shared
                    .leases
                    .acquire(&name, shared.holder, ttl)
                    .await
                    .map_err(|error| SponsorError::Rpc(RpcError::Unreachable(error.to_string())))?;
                if leased {
                    return Ok(Lease {
                        _permit: permit,
                        channel,
                        shared: Some((shared, name)),
                    });
                }
            }
            // Every free account is another sponsor's for now.
            drop(permit);
            tokio::time::sleep(LEASED_ELSEWHERE_PAUSE).await;
        }
    }

    /// The call in an unsigned transaction from `source` (sequence and fee set later).
    fn rebuild(
        &self,
        call: &SponsoredCall,
        source: &Address,
    ) -> Result<TransactionEnvelope, SponsorError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        let max_time = now.saturating_add(call.valid_for.as_secs());
        let mut envelope =
            invocation_envelope(source, 0, BASE_FEE, call.host_function.clone(), max_time)
                .map_err(|_| SponsorError::Build)?;
        set_authorization(&mut envelope, call.auth.clone()).map_err(|_| SponsorError::Build)?;
        Ok(envelope)
    }

    /// Assigns the channel's next sequence number, signs (and fee-bumps), and sends.
    async fn send(
        &self,
        mut envelope: TransactionEnvelope,
        channel: &mut Channel,
    ) -> Result<TransactionHash, SponsorError> {
        for _ in 0..SEND_ATTEMPTS {
            let current = match channel.sequence {
                Some(sequence) => sequence,
                None => account_sequence(&*self.rpc, &channel.address)
                    .await
                    .map_err(SponsorError::Rpc)?,
            };
            if let TransactionEnvelope::Tx(v1) = &mut envelope {
                v1.tx.seq_num = SequenceNumber(current + 1);
                v1.signatures = Default::default();
            }
            let signed = self.sign(envelope.clone(), &channel.keypair)?;
            let sent = match self.rpc.send_transaction(&signed).await {
                Ok(sent) => sent,
                Err(error) => {
                    channel.sequence = None;
                    return Err(SponsorError::Unknown(error));
                }
            };
            match sent.status {
                SendStatus::Pending | SendStatus::Duplicate => {
                    channel.sequence = Some(current + 1);
                    return Ok(sent.hash);
                }
                SendStatus::TryAgainLater => tokio::time::sleep(Duration::from_millis(200)).await,
                SendStatus::Error => {
                    // Refused before applying: the sequence number was not used. Read it again.
                    channel.sequence = None;
                    let bad_sequence = sent
                        .error_result
                        .as_ref()
                        .is_some_and(|r| matches!(r.result, TransactionResultResult::TxBadSeq));
                    if !bad_sequence {
                        tracing::warn!(result = ?sent.error_result, "transaction refused by the network");
                        return Err(SponsorError::Rejected);
                    }
                }
            }
        }
        Err(SponsorError::Rejected)
    }

    /// Signs as the source, and wraps in a fee bump when one is configured.
    fn sign(
        &self,
        mut envelope: TransactionEnvelope,
        source: &Keypair,
    ) -> Result<TransactionEnvelope, SponsorError> {
        let network = self.network.id();
        sign_envelope(&mut envelope, source, &network).map_err(|_| SponsorError::Build)?;
        if let Some(bumper) = &self.fee_bump {
            envelope =
                fee_bump(envelope, &bumper.address(), BASE_FEE).map_err(|_| SponsorError::Build)?;
            sign_envelope(&mut envelope, bumper, &network).map_err(|_| SponsorError::Build)?;
        }
        Ok(envelope)
    }
}

impl std::fmt::Debug for Sponsor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sponsor")
            .field("accounts", &self.addresses)
            .field("max_fee", &self.max_fee)
            .finish_non_exhaustive()
    }
}
