//! The channels on the ledger: serving one, watching them, and the recipient's close and
//! settle.
//!
//! Every close or settle of a channel runs under its in-flight mark ([`InFlight`]), taken
//! before the stored state moves to `Closing`: the client's `close`, the watcher and the
//! operator never submit for one channel at once, and none of them undoes another's close.
//! The mark is the process's, and a lease ([`close_lease`]) shared by every node of the
//! service through the scheme's [`Leases`](crate::store::Leases): with several nodes, one of
//! them answers a funder's `close_start` and submits each close. The lease is renewed while
//! the work lasts and taken over [`CLOSE_LEASE`] after its holder died.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{Served, StellarChannel, busy};
use crate::scheme::Rejection;
use crate::stellar::rpc::{RpcError, TransactionHash, TransactionStatus};
use crate::stellar::{
    Address, ChannelFunction, ChannelInfo, ChannelReadError, SponsorError, SponsoredCall,
    VerifyingKey, channel_call, read_channel,
};
use crate::store::{ChannelId, ChannelPhase, ChannelState, NotAContract, StoreError};

/// How long a close or settle transaction may take to be final.
const SUBMIT_DEADLINE: Duration = Duration::from_secs(60);
/// How many stored channels [`StellarChannel::resume`] reads at a time.
const RESUME_PAGE: usize = 256;
/// How long a channel's close lease lives unless its holder renews it (every third of it while
/// it works): another node takes the channel over this long after its holder died.
pub const CLOSE_LEASE: Duration = Duration::from_secs(30);

/// The name of the lease a node holds while it closes or settles `channel`.
pub fn close_lease(channel: ChannelId) -> Vec<u8> {
    [b"mpp-channel-close:".as_slice(), &channel.0].concat()
}

/// Why a channel operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The address is not a contract.
    #[error(transparent)]
    NotAContract(#[from] NotAContract),
    /// The channel is not served here: add it first.
    #[error("channel {0} is not served here")]
    NotServed(ChannelId),
    /// The channel could not be read from the ledger.
    #[error(transparent)]
    Read(#[from] ChannelReadError),
    /// The RPC serves another network than the scheme's.
    #[error("the RPC serves another network")]
    WrongNetwork,
    /// The channel pays someone else.
    #[error("channel {channel} pays {to}, not this recipient")]
    WrongRecipient {
        /// The channel.
        channel: ChannelId,
        /// Its recipient.
        to: Address,
    },
    /// The channel holds another token.
    #[error("channel {channel} holds {token}, not this currency")]
    WrongToken {
        /// The channel.
        channel: ChannelId,
        /// Its token.
        token: Address,
    },
    /// The channel's commitment key changed since it was added (a different contract).
    #[error("channel {0} changed its commitment key")]
    WrongKey(ChannelId),
    /// The funder could take the deposit back sooner than the watcher can close.
    #[error(
        "channel {channel} lets its funder refund {period} ledgers after starting a close; at least {minimum} are needed"
    )]
    RefundPeriodTooShort {
        /// The channel.
        channel: ChannelId,
        /// Its refund waiting period, in ledgers.
        period: u32,
        /// The scheme's minimum.
        minimum: u32,
    },
    /// The channel is closing or closed.
    #[error("channel {0} is closing or closed")]
    Closed(ChannelId),
    /// There is no voucher beyond what the channel already paid out.
    #[error("channel {0} has nothing to withdraw")]
    NothingToWithdraw(ChannelId),
    /// Another close or settle of the channel is in flight.
    #[error("channel {0} has a transaction in flight")]
    Busy(ChannelId),
    /// The channel store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The transaction was not submitted (it does not simulate, its fee is over the ceiling,
    /// the network refused it …); nothing changed on the ledger.
    #[error("the transaction was not submitted: {0}")]
    NotSubmitted(SponsorError),
    /// The transaction failed on the ledger.
    #[error("transaction {0} failed")]
    Failed(TransactionHash),
    /// The transaction was submitted and its outcome is not known yet.
    #[error("outcome unknown: {0}")]
    Unknown(RpcError),
}

/// A channel's in-flight mark: while it is held, nobody else (in this process, or on another
/// node sharing the scheme's leases) closes or settles the channel.
pub(super) struct InFlight<'a> {
    scheme: &'a StellarChannel,
    channel: ChannelId,
    /// Renews the close lease while the mark is held.
    renewal: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.scheme
            .submitting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&self.channel);
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
            // Free the lease now rather than at its deadline (it runs out anyway if this
            // cannot run).
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let (leases, holder) = (self.scheme.leases.clone(), self.scheme.holder);
                let name = close_lease(self.channel);
                runtime.spawn(async move {
                    if let Err(error) = leases.release(&name, holder).await {
                        tracing::warn!(%error, "cannot release a channel's close lease");
                    }
                });
            }
        }
    }
}

impl StellarChannel {
    /// Serves vouchers on `channel` from now on: reads it from the ledger and checks that it
    /// pays this recipient in this currency, and that its refund waiting period leaves the
    /// watcher time to close. Starts the watcher (every
    /// [`watch_period`](super::StellarChannelBuilder::watch_period)) if it is not running. A
    /// stored state from an earlier run (with a durable store) is kept; see also
    /// [`resume`](Self::resume).
    ///
    /// # Errors
    ///
    /// [`ChannelError::WrongRecipient`], [`ChannelError::WrongToken`],
    /// [`ChannelError::RefundPeriodTooShort`], [`ChannelError::WrongNetwork`]; the ledger's
    /// errors.
    pub async fn add_channel(
        self: &Arc<Self>,
        channel: Address,
    ) -> Result<ChannelInfo, ChannelError> {
        let id = ChannelId::try_from(channel)?;
        self.check_network().await?;
        let info = read_channel(&*self.rpc, &channel, Some(&self.currency)).await?;
        let key = self.check(id, &info, None)?;
        self.channels
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(id, Served::new(info.clone(), key));
        self.start_watcher();
        Ok(info)
    }

    /// Serves again every channel of the store that is not closed: what a restarted server
    /// calls first, so that stored vouchers are watched and closed in time. Returns the
    /// channels served; a channel that cannot be served any more is logged and left out.
    ///
    /// # Errors
    ///
    /// The store's.
    pub async fn resume(self: &Arc<Self>) -> Result<Vec<ChannelId>, ChannelError> {
        let mut served = Vec::new();
        let mut after = None;
        loop {
            let page = self.store.channels(after, RESUME_PAGE).await?;
            for (channel, state) in &page {
                if matches!(state.phase, ChannelPhase::Closed { .. }) {
                    continue;
                }
                match self.add_channel(channel.address()).await {
                    Ok(_) => served.push(*channel),
                    Err(error) => {
                        tracing::error!(%error, %channel, "a stored channel is not served");
                    }
                }
            }
            if page.len() < RESUME_PAGE {
                return Ok(served);
            }
            after = page.last().map(|(channel, _)| *channel);
        }
    }

    async fn check_network(&self) -> Result<(), ChannelError> {
        if self.network_checked.get().is_some() {
            return Ok(());
        }
        let info = self
            .rpc
            .network()
            .await
            .map_err(|error| ChannelError::Read(ChannelReadError::Rpc(error)))?;
        if info.network_id() != self.network.id() {
            return Err(ChannelError::WrongNetwork);
        }
        let _ = self.network_checked.set(());
        Ok(())
    }

    /// The checks a channel passes to be served, on every read: our recipient and currency, a
    /// refund waiting period long enough, and (once served) the same commitment key.
    fn check(
        &self,
        channel: ChannelId,
        info: &ChannelInfo,
        served: Option<&Served>,
    ) -> Result<Option<VerifyingKey>, ChannelError> {
        if info.to != self.recipient {
            return Err(ChannelError::WrongRecipient {
                channel,
                to: info.to,
            });
        }
        if info.token != self.currency {
            return Err(ChannelError::WrongToken {
                channel,
                token: info.token,
            });
        }
        if info.refund_waiting_period < self.min_refund_period {
            return Err(ChannelError::RefundPeriodTooShort {
                channel,
                period: info.refund_waiting_period,
                minimum: self.min_refund_period,
            });
        }
        if served.is_some_and(|served| served.info.commitment_key != info.commitment_key) {
            return Err(ChannelError::WrongKey(channel));
        }
        Ok(VerifyingKey::new(&info.commitment_key))
    }

    /// Reads a served channel's ledger state again.
    pub(super) async fn refresh(&self, channel: ChannelId) -> Result<ChannelInfo, ChannelError> {
        let served = self
            .served(channel)
            .ok_or(ChannelError::NotServed(channel))?;
        let info = read_channel(&*self.rpc, &channel.address(), Some(&self.currency)).await?;
        let key = self.check(channel, &info, Some(&served))?;
        self.channels
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(channel, Served::new(info.clone(), key));
        Ok(info)
    }

    /// [`refresh`](Self::refresh) for a request: failures are answered 503.
    pub(super) async fn refresh_for_request(
        &self,
        channel: ChannelId,
    ) -> Result<ChannelInfo, Rejection> {
        // Boxed: a rare path whose RPC future would otherwise size every voucher's future.
        Box::pin(self.refresh(channel))
            .await
            .map_err(|error| match error {
                ChannelError::Read(ChannelReadError::Rpc(error)) => {
                    super::server::unavailable(&error)
                }
                error => {
                    tracing::error!(%error, %channel, "cannot read a served channel");
                    busy()
                }
            })
    }

    fn start_watcher(self: &Arc<Self>) {
        let mut watcher = self
            .watcher
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if watcher.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        let scheme: Weak<Self> = Arc::downgrade(self);
        let period = self.watch_period;
        *watcher = Some(tokio::spawn(async move {
            // The channel was just read: the first round is one period away.
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(scheme) = scheme.upgrade() else {
                    return;
                };
                scheme.watch_once().await;
            }
        }));
    }

    /// One round of the watcher (which runs it every watch period): reads every served channel
    /// that is not closed from the ledger, then, the nearest refund deadline first:
    ///
    /// - the funder started a close (`close_start`): closes the channel with the best stored
    ///   voucher, before the refund waiting period ends (with nothing to withdraw, marks it
    ///   closed and leaves it to the funder);
    /// - a close of ours whose outcome was unknown (or cut short by a crash): marks the channel
    ///   closed when the ledger shows it, submits the close again otherwise.
    ///
    /// Failures are logged and tried again on the next round.
    pub async fn watch_once(&self) {
        let mut due = Vec::new();
        for channel in self.channels() {
            let state = match self.store.load(channel).await {
                Ok(state) => state.unwrap_or(ChannelState::NEW),
                Err(error) => {
                    tracing::error!(%error, %channel, "channel store unavailable");
                    continue;
                }
            };
            if matches!(state.phase, ChannelPhase::Closed { .. }) {
                continue;
            }
            let info = match self.refresh(channel).await {
                Ok(info) => info,
                Err(error) => {
                    tracing::warn!(%error, %channel, "cannot read a served channel");
                    continue;
                }
            };
            if state.phase == ChannelPhase::Closing || info.close_effective_at.is_some() {
                due.push((info.close_effective_at.unwrap_or(u32::MAX), channel, info));
            }
        }
        due.sort_by_key(|(deadline, channel, _)| (*deadline, *channel));
        for (_, channel, info) in due {
            if info.close_effective_at.is_some() {
                tracing::info!(%channel, effective = ?info.close_effective_at, latest = info.latest_ledger, "channel close started on the ledger");
            }
            match self.close_from(channel, &info).await {
                Ok(Some(hash)) => tracing::info!(%channel, %hash, "channel closed"),
                Ok(None) => tracing::info!(%channel, "channel closed, nothing to withdraw"),
                Err(ChannelError::Busy(_)) => {}
                Err(error) => tracing::warn!(%error, %channel, "channel close failed"),
            }
        }
    }

    /// Closes `channel` now with its best stored voucher (the operator's close).
    ///
    /// # Errors
    ///
    /// [`ChannelError::NothingToWithdraw`] when no voucher adds to what the channel paid out
    /// (nothing changes: the funder can close it alone); [`ChannelError::Closed`];
    /// [`ChannelError::Busy`]; the submission's errors.
    pub async fn close_channel(&self, channel: ChannelId) -> Result<TransactionHash, ChannelError> {
        let info = self.refresh(channel).await?;
        self.close_from(channel, &info)
            .await?
            .ok_or(ChannelError::NothingToWithdraw(channel))
    }

    /// Withdraws the best stored voucher now and leaves the channel open (the operator's
    /// settle).
    ///
    /// # Errors
    ///
    /// [`ChannelError::NothingToWithdraw`]; [`ChannelError::Busy`]; the submission's errors.
    pub async fn settle_channel(
        &self,
        channel: ChannelId,
    ) -> Result<TransactionHash, ChannelError> {
        let info = self.refresh(channel).await?;
        let _guard = self.in_flight(channel).await?;
        let state = self.state(channel).await?;
        match (state.signature, state.cumulative > info.withdrawn) {
            (Some(signature), true) => {
                self.submit(
                    channel,
                    ChannelFunction::Settle,
                    state.cumulative,
                    &signature,
                )
                .await
            }
            _ => Err(ChannelError::NothingToWithdraw(channel)),
        }
    }

    /// Closes a channel (for the watcher and the operator), as its stored state and `info` say:
    /// under its in-flight mark, moves it to `Closing`, submits the close with its voucher, and
    /// marks it `Closed`. With nothing to withdraw, a channel whose funder started a close is
    /// marked closed (`Ok(None)`) and any other is left alone (`Ok(None)`).
    async fn close_from(
        &self,
        channel: ChannelId,
        info: &ChannelInfo,
    ) -> Result<Option<TransactionHash>, ChannelError> {
        let guard = self.in_flight(channel).await?;
        let current = self.store.load(channel).await?;
        let state = current.unwrap_or(ChannelState::NEW);
        if matches!(state.phase, ChannelPhase::Closed { .. }) {
            return Err(ChannelError::Closed(channel));
        }
        let claimable = state.signature.is_some() && state.cumulative > info.withdrawn;
        // After the refund, nothing is left to withdraw, whatever the voucher says.
        let emptied = info.is_closed() && info.balance <= 0;
        if !claimable || emptied {
            if info.close_effective_at.is_none() {
                return Ok(None);
            }
            if claimable {
                tracing::error!(%channel, cumulative = state.cumulative, withdrawn = info.withdrawn, "the funder took the deposit back before the close");
            }
            let closed = ChannelState {
                phase: ChannelPhase::Closed { transaction: None },
                unspent: 0,
                ..state
            };
            self.store.compare_and_set(channel, current, closed).await?;
            return Ok(None);
        }
        let closing = ChannelState {
            phase: ChannelPhase::Closing,
            ..state
        };
        let revert = if state.phase == ChannelPhase::Open {
            // A voucher credited since the load makes this fail: try again next round.
            if !self
                .store
                .compare_and_set(channel, current, closing)
                .await?
            {
                return Err(ChannelError::Busy(channel));
            }
            Some(state)
        } else {
            None
        };
        self.finish_close(&guard, channel, closing, revert)
            .await
            .map(Some)
    }

    /// Submits the close of a channel stored as `closing`, while its in-flight mark is held:
    /// on success marks it `Closed` by the transaction; when the transaction definitely did
    /// not apply, stores `revert` (if any) again; when its outcome is unknown, leaves it
    /// `Closing` for the watcher.
    pub(super) async fn finish_close(
        &self,
        _guard: &InFlight<'_>,
        channel: ChannelId,
        closing: ChannelState,
        revert: Option<ChannelState>,
    ) -> Result<TransactionHash, ChannelError> {
        let Some(signature) = closing.signature else {
            return Err(ChannelError::NothingToWithdraw(channel));
        };
        let outcome = self
            .submit(
                channel,
                ChannelFunction::Close,
                closing.cumulative,
                &signature,
            )
            .await;
        match outcome {
            Ok(hash) => {
                let closed = ChannelState {
                    phase: ChannelPhase::Closed {
                        transaction: Some(hash.0),
                    },
                    unspent: 0,
                    ..closing
                };
                if !self
                    .store
                    .compare_and_set(channel, Some(closing), closed)
                    .await?
                {
                    tracing::error!(%channel, %hash, "a closing channel changed under its in-flight mark");
                }
                Ok(hash)
            }
            Err(error @ ChannelError::Unknown(_)) => Err(error),
            Err(error) => {
                if let Some(revert) = revert
                    && !self
                        .store
                        .compare_and_set(channel, Some(closing), revert)
                        .await?
                {
                    tracing::error!(%channel, "a closing channel changed under its in-flight mark");
                }
                Err(error)
            }
        }
    }

    /// Takes `channel`'s in-flight mark: the process's, then the close lease.
    pub(super) async fn in_flight(&self, channel: ChannelId) -> Result<InFlight<'_>, ChannelError> {
        let fresh = self
            .submitting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(channel);
        if !fresh {
            return Err(ChannelError::Busy(channel));
        }
        let mut guard = InFlight {
            scheme: self,
            channel,
            renewal: None,
        };
        let name = close_lease(channel);
        if !self.leases.acquire(&name, self.holder, CLOSE_LEASE).await? {
            return Err(ChannelError::Busy(channel));
        }
        let (leases, holder) = (self.leases.clone(), self.holder);
        guard.renewal = Some(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(CLOSE_LEASE / 3);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                match leases.acquire(&name, holder, CLOSE_LEASE).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::error!(%channel, "lost a channel's close lease while closing it");
                    }
                    Err(error) => {
                        tracing::warn!(%error, %channel, "cannot renew a channel's close lease");
                    }
                }
            }
        }));
        Ok(guard)
    }

    /// Submits `function(amount, signature)` on `channel` from the recipient's account and
    /// waits until it is final.
    async fn submit(
        &self,
        channel: ChannelId,
        function: ChannelFunction,
        amount: i128,
        signature: &[u8; 64],
    ) -> Result<TransactionHash, ChannelError> {
        let host_function = channel_call(&channel.address(), function, amount, signature);
        let auth = crate::stellar::channel::source_authorization(&host_function)
            .into_iter()
            .collect();
        let call = SponsoredCall {
            host_function,
            auth,
            valid_for: SUBMIT_DEADLINE,
        };
        match self.submitter.submit(&call, &|_| Ok(())).await {
            Ok(done) if done.status == TransactionStatus::Success => Ok(done.hash),
            Ok(done) => Err(ChannelError::Failed(done.hash)),
            Err(SponsorError::Unknown(error)) => Err(ChannelError::Unknown(error)),
            Err(error) => Err(ChannelError::NotSubmitted(error)),
        }
    }
}
