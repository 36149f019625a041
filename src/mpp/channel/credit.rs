//! A channel's credit for metered streams: vouchers paid ahead raise [`ChannelState::unspent`]
//! as well as the cumulative amount, a stream takes the credit it draws on, and gives back
//! what it did not draw. Every change is a compare-and-set on the channel's stored state, so
//! nodes sharing the store agree; credit a stream holds is in its memory only (a node that
//! dies loses at most what its streams held, which the payer had paid ahead: never more
//! content than was paid for).

use std::sync::Arc;
use std::time::Duration;

use crate::BoxFuture;
use crate::mpp::expires::Timestamp;
use crate::mpp::problem::ProblemCode;
use crate::mpp::stream::{NeedVoucher, StreamReceipt};
use crate::scheme::CreditSource;
use crate::store::{ChannelId, ChannelPhase, ChannelState, ChannelStore, StoreError};

use super::voucher::{Action, Voucher};

/// Why credit could not be changed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CreditError {
    /// The voucher or the channel refused it (`delta-too-small`, `channel-finalized` …).
    #[error("refused: {}", .0.as_str())]
    Refused(ProblemCode),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A voucher paying ahead: the channel's next state, with the voucher's increase as credit.
/// Any increase counts (a stream asks for what it needs, the client may pay more ahead);
/// within the deposit; a channel that is not open takes none.
pub(crate) fn pay_ahead(
    voucher: &Voucher,
    state: &ChannelState,
    deposited: i128,
) -> Result<ChannelState, ProblemCode> {
    if voucher.action != Action::Voucher {
        return Err(ProblemCode::InvalidPayload);
    }
    let mut next = voucher.accept(state, 1, deposited)?;
    next.unspent = state.unspent + (next.cumulative - state.cumulative);
    Ok(next)
}

/// Takes all the channel's credit: the state without it, and the amount taken (0 when the
/// channel is not open).
pub(crate) fn take(state: &ChannelState) -> (ChannelState, i128) {
    if state.phase != ChannelPhase::Open || state.unspent <= 0 {
        return (*state, 0);
    }
    let next = ChannelState {
        unspent: 0,
        ..*state
    };
    (next, state.unspent)
}

/// Gives `amount` of credit back: the state with it (never above the cumulative amount; a
/// channel no longer open keeps none).
pub(crate) fn give_back(state: &ChannelState, amount: i128) -> ChannelState {
    if state.phase != ChannelPhase::Open || amount <= 0 {
        return *state;
    }
    let unspent = state.unspent.saturating_add(amount).min(state.cumulative);
    ChannelState { unspent, ..*state }
}

/// Applies `change` to `channel`'s stored state until a compare-and-set takes it: the state
/// it changed, and what `change` returned with the new one.
pub(crate) async fn update<T>(
    store: &dyn ChannelStore,
    channel: ChannelId,
    mut change: impl FnMut(&ChannelState) -> Result<(ChannelState, T), ProblemCode>,
) -> Result<(ChannelState, ChannelState, T), CreditError> {
    loop {
        let current = store.load(channel).await?;
        let state = current.unwrap_or(ChannelState::NEW);
        let (next, value) = change(&state).map_err(CreditError::Refused)?;
        if next == state || store.compare_and_set(channel, current, next).await? {
            return Ok((state, next, value));
        }
    }
}

/// A metered stream's credit on one channel: the [`CreditSource`] its body draws on.
pub(crate) struct ChannelCredit {
    pub(crate) store: Arc<dyn ChannelStore>,
    pub(crate) channel: ChannelId,
    /// Counts the vouchers paid ahead on this channel on this node (made before the stream's
    /// first look at its credit, so none is missed).
    pub(crate) paid: tokio::sync::Mutex<tokio::sync::watch::Receiver<u64>>,
    /// How often the store is read while waiting (a voucher paid on another node).
    pub(crate) poll: Duration,
    /// The channel's deposit as last read from the ledger (a top-up shows), for the request
    /// for a voucher.
    pub(crate) deposit: Box<dyn Fn() -> i128 + Send + Sync>,
    /// The intent and challenge the stream was opened with, for its receipt.
    pub(crate) intent: &'static str,
    pub(crate) challenge_id: String,
}

impl ChannelCredit {
    async fn state(&self) -> ChannelState {
        match self.store.load(self.channel).await {
            Ok(state) => state.unwrap_or(ChannelState::NEW),
            Err(error) => {
                tracing::error!(%error, channel = %self.channel, "channel store unavailable");
                ChannelState::NEW
            }
        }
    }
}

impl CreditSource for ChannelCredit {
    fn take(&self) -> BoxFuture<'_, i128> {
        Box::pin(async move {
            match update(&*self.store, self.channel, |state| Ok(take(state))).await {
                Ok((_, _, taken)) => taken,
                Err(error) => {
                    tracing::error!(%error, channel = %self.channel, "cannot take a stream's credit");
                    0
                }
            }
        })
    }

    fn changed(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let mut paid = self.paid.lock().await;
            let _ = tokio::time::timeout(self.poll, paid.changed()).await;
        })
    }

    fn give_back(&self, amount: i128) -> BoxFuture<'static, ()> {
        let (store, channel) = (self.store.clone(), self.channel);
        Box::pin(async move {
            let given = update(&*store, channel, |state| Ok((give_back(state, amount), ()))).await;
            if let Err(error) = given {
                tracing::error!(%error, %channel, amount, "cannot give a stream's credit back");
            }
        })
    }

    fn need_voucher(&self, owed: i128) -> BoxFuture<'_, String> {
        Box::pin(async move {
            let state = self.state().await;
            let need = NeedVoucher {
                channel_id: self.channel.address().to_string(),
                required_cumulative: state.cumulative.saturating_add(owed),
                accepted_cumulative: state.cumulative,
                deposit: (self.deposit)(),
            };
            serde_json::to_string(&need).unwrap_or_default()
        })
    }

    fn receipt(&self, units: u64) -> BoxFuture<'_, String> {
        Box::pin(async move {
            let state = self.state().await;
            let channel = self.channel.address().to_string();
            let receipt = StreamReceipt {
                method: crate::mpp::server::METHOD.to_owned(),
                intent: self.intent.to_owned(),
                status: crate::mpp::receipt::STATUS_SUCCESS.to_owned(),
                timestamp: Timestamp::now().format(),
                reference: channel.clone(),
                challenge_id: self.challenge_id.clone(),
                channel_id: channel,
                accepted_cumulative: state.cumulative,
                spent: state.spent(),
                units: Some(units),
            };
            serde_json::to_string(&receipt).unwrap_or_default()
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::MemoryChannelStore;

    const CHANNEL: ChannelId = ChannelId([3; 32]);

    fn voucher(amount: i128) -> Voucher {
        Voucher {
            action: Action::Voucher,
            amount,
            signature: [amount as u8; 64],
        }
    }

    fn state(cumulative: i128, unspent: i128) -> ChannelState {
        ChannelState {
            cumulative,
            signature: Some([1; 64]),
            unspent,
            phase: ChannelPhase::Open,
        }
    }

    #[test]
    fn a_voucher_paid_ahead_becomes_credit() {
        let next = pay_ahead(&voucher(1_500), &state(1_000, 200), 5_000).unwrap();
        assert_eq!((next.cumulative, next.unspent), (1_500, 700));
        assert_eq!(next.spent(), 800, "what was spent does not change");
        assert_eq!(next.signature, Some([voucher(1_500).signature[0]; 64]));
        for (amount, refusal) in [
            (1_000, ProblemCode::DeltaTooSmall),
            (999, ProblemCode::DeltaTooSmall),
            (5_001, ProblemCode::AmountExceedsDeposit),
        ] {
            assert_eq!(
                pay_ahead(&voucher(amount), &state(1_000, 200), 5_000),
                Err(refusal),
                "{amount}"
            );
        }
        let close = Voucher {
            action: Action::Close,
            ..voucher(1_500)
        };
        assert_eq!(
            pay_ahead(&close, &state(1_000, 0), 5_000),
            Err(ProblemCode::InvalidPayload)
        );
        let closing = ChannelState {
            phase: ChannelPhase::Closing,
            ..state(1_000, 0)
        };
        assert_eq!(
            pay_ahead(&voucher(1_500), &closing, 5_000),
            Err(ProblemCode::ChannelFinalized)
        );
    }

    #[test]
    fn credit_is_taken_whole_and_given_back_within_the_cumulative_amount() {
        let (next, taken) = take(&state(1_000, 300));
        assert_eq!((next, taken), (state(1_000, 0), 300));
        assert_eq!(take(&next), (next, 0));
        assert_eq!(give_back(&next, 120), state(1_000, 120));
        assert_eq!(give_back(&next, 5_000), state(1_000, 1_000), "never above");
        assert_eq!(give_back(&next, -5), next);
        let closed = ChannelState {
            phase: ChannelPhase::Closed { transaction: None },
            ..state(1_000, 0)
        };
        assert_eq!(
            give_back(&closed, 100),
            closed,
            "a closed channel keeps none"
        );
        let closing = ChannelState {
            phase: ChannelPhase::Closing,
            ..state(1_000, 300)
        };
        assert_eq!(
            take(&closing),
            (closing, 0),
            "none taken from a closing channel"
        );
    }

    #[tokio::test]
    async fn concurrent_takers_share_the_credit_once() {
        let store: Arc<dyn ChannelStore> = Arc::new(MemoryChannelStore::new());
        store
            .compare_and_set(CHANNEL, None, state(1_000, 0))
            .await
            .unwrap();
        // A voucher pays 600 ahead; eight streams take; one gives 100 back.
        update(&*store, CHANNEL, |current| {
            pay_ahead(&voucher(1_600), current, 5_000).map(|next| (next, ()))
        })
        .await
        .unwrap();
        let takers = (0..8).map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                update(&*store, CHANNEL, |current| Ok(take(current)))
                    .await
                    .unwrap()
                    .2
            })
        });
        let mut taken = 0;
        for taker in takers {
            taken += taker.await.unwrap();
        }
        assert_eq!(taken, 600, "the credit, once");
        update(&*store, CHANNEL, |current| {
            Ok((give_back(current, 100), ()))
        })
        .await
        .unwrap();
        let stored = store.load(CHANNEL).await.unwrap().unwrap();
        assert_eq!(
            (stored.cumulative, stored.unspent, stored.spent()),
            (1_600, 100, 1_500)
        );
        // A refusal changes nothing.
        let refused = update(&*store, CHANNEL, |current| {
            pay_ahead(&voucher(1_600), current, 5_000).map(|next| (next, ()))
        })
        .await;
        assert!(matches!(
            refused,
            Err(CreditError::Refused(ProblemCode::DeltaTooSmall))
        ));
        assert_eq!(store.load(CHANNEL).await.unwrap(), Some(stored));
    }
}
