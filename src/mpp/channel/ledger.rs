//! The channels on the ledger: adding one, watching them, and the recipient's close and settle.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{StellarChannel, busy};
use crate::scheme::Rejection;
use crate::stellar::rpc::{RpcError, TransactionHash, TransactionStatus};
use crate::stellar::{
    Address, ChannelFunction, ChannelInfo, ChannelReadError, SponsorError, SponsoredCall,
    channel_call, read_channel,
};
use crate::store::{ChannelId, ChannelPhase, ChannelState, NotAContract, StoreError};

/// How long a close or settle transaction may take to be final.
const SUBMIT_DEADLINE: Duration = Duration::from_secs(60);

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

/// Clears a channel's in-flight mark when the submission is over.
struct InFlight<'a> {
    scheme: &'a StellarChannel,
    channel: ChannelId,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.scheme
            .submitting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&self.channel);
    }
}

impl StellarChannel {
    /// Serves vouchers on `channel` from now on: reads it from the ledger and checks that it
    /// pays this recipient in this currency. Its stored state (from an earlier run, with a
    /// durable store) is kept.
    ///
    /// # Errors
    ///
    /// [`ChannelError::WrongRecipient`], [`ChannelError::WrongToken`]; the ledger's errors.
    pub async fn add_channel(&self, channel: Address) -> Result<ChannelInfo, ChannelError> {
        let id = ChannelId::try_from(channel)?;
        let info = read_channel(&*self.rpc, &channel, Some(&self.currency)).await?;
        if info.to != self.recipient {
            return Err(ChannelError::WrongRecipient {
                channel: id,
                to: info.to,
            });
        }
        if info.token != self.currency {
            return Err(ChannelError::WrongToken {
                channel: id,
                token: info.token,
            });
        }
        self.remember(info.clone());
        Ok(info)
    }

    /// Reads a served channel's ledger state again.
    pub(super) async fn refresh(&self, channel: ChannelId) -> Result<ChannelInfo, Rejection> {
        let info = read_channel(&*self.rpc, &channel.address(), Some(&self.currency))
            .await
            .map_err(|error| match error {
                ChannelReadError::Rpc(error) => super::server::unavailable(&error),
                error => {
                    tracing::error!(%error, %channel, "cannot read a served channel");
                    busy()
                }
            })?;
        self.remember(info.clone());
        Ok(info)
    }

    /// Starts a task that calls [`watch_once`](Self::watch_once) every `period`, until the
    /// scheme is dropped.
    pub fn watch(self: &Arc<Self>, period: Duration) -> tokio::task::JoinHandle<()> {
        let scheme: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(scheme) = scheme.upgrade() else {
                    return;
                };
                scheme.watch_once().await;
            }
        })
    }

    /// Reads every served channel from the ledger and acts on what changed:
    ///
    /// - the funder started a close (`close_start`): closes the channel with the best stored
    ///   voucher, before the refund waiting period ends;
    /// - a close of ours whose outcome was unknown (or cut short by a crash): marks the channel
    ///   closed when the ledger shows it, submits the close again otherwise.
    ///
    /// Failures are logged and tried again on the next call.
    pub async fn watch_once(&self) {
        for channel in self.channels() {
            let busy = self
                .submitting
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .contains(&channel);
            if busy {
                continue;
            }
            let info = match self.refresh(channel).await {
                Ok(info) => info,
                Err(_) => continue,
            };
            let current = match self.store.load(channel).await {
                Ok(current) => current,
                Err(error) => {
                    tracing::error!(%error, %channel, "channel store unavailable");
                    continue;
                }
            };
            let state = current.unwrap_or(ChannelState::NEW);
            let act = match state.phase {
                ChannelPhase::Closed { .. } => false,
                ChannelPhase::Closing => true,
                ChannelPhase::Open => info.close_effective_at.is_some(),
            };
            if !act {
                continue;
            }
            if info.close_effective_at.is_some() {
                tracing::info!(%channel, effective = ?info.close_effective_at, latest = info.latest_ledger, "channel close started on the ledger");
            }
            match self.close_from(channel, current, &info).await {
                Ok(Some(hash)) => tracing::info!(%channel, %hash, "channel closed"),
                Ok(None) => tracing::info!(%channel, "channel closed, nothing to withdraw"),
                Err(error) => tracing::warn!(%error, %channel, "channel close failed"),
            }
        }
    }

    /// Closes `channel` now with its best stored voucher (the operator's close).
    ///
    /// # Errors
    ///
    /// [`ChannelError::NothingToWithdraw`] when no voucher adds to what the channel paid out
    /// (the funder can close it alone); [`ChannelError::Closed`]; the submission's errors.
    pub async fn close_channel(&self, channel: ChannelId) -> Result<TransactionHash, ChannelError> {
        let info = self
            .refresh(channel)
            .await
            .map_err(|_| ChannelError::NotServed(channel))?;
        let current = self.store.load(channel).await?;
        if let Some(ChannelState {
            phase: ChannelPhase::Closed { .. },
            ..
        }) = current
        {
            return Err(ChannelError::Closed(channel));
        }
        self.close_from(channel, current, &info)
            .await?
            .ok_or(ChannelError::NothingToWithdraw(channel))
    }

    /// Withdraws the best stored voucher now and leaves the channel open (the operator's
    /// settle).
    ///
    /// # Errors
    ///
    /// [`ChannelError::NothingToWithdraw`]; the submission's errors.
    pub async fn settle_channel(
        &self,
        channel: ChannelId,
    ) -> Result<TransactionHash, ChannelError> {
        let info = self
            .refresh(channel)
            .await
            .map_err(|_| ChannelError::NotServed(channel))?;
        let state = self.state(channel).await?;
        match (state.signature, state.cumulative > info.withdrawn) {
            (Some(signature), true) => {
                let _guard = self.in_flight(channel)?;
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

    /// Closes a channel whose stored state is `current`: moves it to `Closing`, submits the
    /// close with its voucher, and marks it `Closed`. With no voucher beyond what the channel
    /// paid out there is nothing to submit: it is marked closed at once (`Ok(None)`).
    async fn close_from(
        &self,
        channel: ChannelId,
        current: Option<ChannelState>,
        info: &ChannelInfo,
    ) -> Result<Option<TransactionHash>, ChannelError> {
        let state = current.unwrap_or(ChannelState::NEW);
        let signature = match state.signature {
            Some(signature) if state.cumulative > info.withdrawn => signature,
            _ => {
                // Nothing to claim: the funder's close stands, and no voucher is taken.
                let closed = ChannelState {
                    phase: ChannelPhase::Closed { transaction: None },
                    ..state
                };
                self.store.compare_and_set(channel, current, closed).await?;
                return Ok(None);
            }
        };
        let closing = ChannelState {
            phase: ChannelPhase::Closing,
            ..state
        };
        if state.phase != ChannelPhase::Closing
            && !self
                .store
                .compare_and_set(channel, current, closing)
                .await?
        {
            return Err(ChannelError::Busy(channel));
        }
        // A close already under way stays `Closing` if this one fails too.
        let revert = if state.phase == ChannelPhase::Closing {
            closing
        } else {
            state
        };
        debug_assert_eq!(closing.signature, Some(signature));
        self.close_stored(channel, closing, revert).await.map(Some)
    }

    /// Submits the close of a channel stored as `stored` (`Closing`): on success marks it
    /// `Closed` by the transaction; when the transaction definitely did not apply, stores
    /// `revert` again; when its outcome is unknown, leaves it `Closing` for the watcher.
    pub(super) async fn close_stored(
        &self,
        channel: ChannelId,
        stored: ChannelState,
        revert: ChannelState,
    ) -> Result<TransactionHash, ChannelError> {
        let Some(signature) = stored.signature else {
            return Err(ChannelError::NothingToWithdraw(channel));
        };
        let outcome = match self.in_flight(channel) {
            Ok(_guard) => {
                self.submit(
                    channel,
                    ChannelFunction::Close,
                    stored.cumulative,
                    &signature,
                )
                .await
            }
            Err(error) => Err(error),
        };
        match outcome {
            Ok(hash) => {
                let closed = ChannelState {
                    phase: ChannelPhase::Closed {
                        transaction: Some(hash.0),
                    },
                    ..stored
                };
                self.store
                    .compare_and_set(channel, Some(stored), closed)
                    .await?;
                Ok(hash)
            }
            Err(error @ ChannelError::Unknown(_)) => Err(error),
            Err(error) => {
                if revert != stored {
                    self.store
                        .compare_and_set(channel, Some(stored), revert)
                        .await?;
                }
                Err(error)
            }
        }
    }

    fn in_flight(&self, channel: ChannelId) -> Result<InFlight<'_>, ChannelError> {
        let fresh = self
            .submitting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(channel);
        if !fresh {
            return Err(ChannelError::Busy(channel));
        }
        Ok(InFlight {
            scheme: self,
            channel,
        })
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
