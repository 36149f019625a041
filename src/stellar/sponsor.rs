//! [`Sponsor`]: submitting someone else's authorized Soroban call from our own accounts, paying
//! its fees (an x402 facilitator's settlement, an MPP server's sponsored pull).
//!
//! The call (host function and signed authorization entries) is rebuilt into a transaction from
//! one of the sponsor's source accounts and its next sequence number, simulated for its resources
//! (and checked by the caller), signed, optionally fee-bumped, submitted, and followed until
//! final. Each source account carries one transaction at a time, as the network queues one per
//! account, so concurrent submissions never collide on a sequence number.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Mutex, MutexGuard, Semaphore, SemaphorePermit};

use super::rpc::{
    RpcError, SendStatus, Simulation, SorobanRpc, TransactionHash, TransactionStatus,
    account_sequence, wait_for_transaction,
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
}

/// A channel account taken for one submission.
struct Lease<'a> {
    _permit: SemaphorePermit<'a>,
    channel: MutexGuard<'a, Channel>,
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
        // The channel stays ours until its transaction is final: one in flight per account.
        let mut lease = self.lease().await?;
        let mut envelope = self.rebuild(call, &lease.channel.address)?;
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
        if let TransactionEnvelope::Tx(v1) = &mut envelope {
            v1.tx.fee = fee;
            v1.tx.ext = TransactionExt::V1(data);
        }
        let hash = self.send(envelope, &mut lease.channel).await?;
        let info = wait_for_transaction(&*self.rpc, &hash, call.valid_for)
            .await
            .map_err(SponsorError::Unknown)?;
        drop(lease);
        Ok(Sponsored {
            hash,
            status: info.status,
        })
    }

    async fn lease(&self) -> Result<Lease<'_>, SponsorError> {
        let permit = self
            .free
            .acquire()
            .await
            .map_err(|_| SponsorError::Rejected)?;
        // A permit guarantees a free channel: channels are locked only with a permit held.
        for channel in &self.channels {
            if let Ok(channel) = channel.try_lock() {
                return Ok(Lease {
                    _permit: permit,
                    channel,
                });
            }
        }
        Err(SponsorError::Rejected)
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
