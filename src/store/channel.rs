//! Payment channels: the [`ChannelStore`] trait, its values, and [`MemoryChannelStore`].

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};

use super::StoreError;
use crate::BoxFuture;
use crate::stellar::Address;

/// A payment channel: the id of its contract (a `C…` address).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(pub [u8; 32]);

impl ChannelId {
    /// The channel's contract address.
    pub fn address(self) -> Address {
        Address::Contract(self.0)
    }
}

impl TryFrom<Address> for ChannelId {
    type Error = NotAContract;

    fn try_from(address: Address) -> Result<Self, NotAContract> {
        match address {
            Address::Contract(id) => Ok(ChannelId(id)),
            _ => Err(NotAContract),
        }
    }
}

impl FromStr for ChannelId {
    type Err = NotAContract;

    fn from_str(text: &str) -> Result<Self, NotAContract> {
        text.parse::<Address>()
            .map_err(|_| NotAContract)?
            .try_into()
    }
}

/// The address is not a contract (`C…`), so it cannot be a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a channel is a contract (C…) address")]
pub struct NotAContract;

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.address().fmt(f)
    }
}

impl fmt::Debug for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChannelId({self})")
    }
}

/// Where a channel is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChannelPhase {
    /// Vouchers are accepted.
    Open,
    /// A close with the stored voucher is under way (or its outcome is not known yet); no more
    /// vouchers are accepted.
    Closing,
    /// The channel is closed on the ledger, by `transaction` when we closed it (`None` when the
    /// ledger showed it closed by someone else).
    Closed {
        /// The close transaction's hash.
        transaction: Option<[u8; 32]>,
    },
}

/// One channel's stored state: the best voucher and the phase.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ChannelState {
    /// The highest cumulative amount accepted, in the token's atomic units (0 before the first
    /// voucher).
    pub cumulative: i128,
    /// The commitment key's signature over `cumulative` (`None` before the first voucher).
    pub signature: Option<[u8; 64]>,
    /// Of `cumulative`, what was paid ahead and is not drawn yet: the credit a metered stream
    /// draws on (0 on channels paid request by request). Kept while the channel is open or
    /// closing; 0 once it is closed. What the channel has paid for is
    /// [`spent`](Self::spent).
    pub unspent: i128,
    /// The phase.
    pub phase: ChannelPhase,
}

impl ChannelState {
    /// A channel with no voucher yet, open.
    pub const NEW: ChannelState = ChannelState {
        cumulative: 0,
        signature: None,
        unspent: 0,
        phase: ChannelPhase::Open,
    };

    /// What the channel has paid for: `cumulative - unspent`.
    pub fn spent(&self) -> i128 {
        self.cumulative - self.unspent
    }
}

impl fmt::Debug for ChannelState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The signature is what lets the recipient withdraw: it stays out of logs.
        f.debug_struct("ChannelState")
            .field("cumulative", &self.cumulative)
            .field("signed", &self.signature.is_some())
            .field("unspent", &self.unspent)
            .field("phase", &self.phase)
            .finish()
    }
}

/// Keeps each channel's [`ChannelState`]. Writes are atomic per channel; a durable store has
/// the new state on disk before [`compare_and_set`](Self::compare_and_set) returns `true`.
pub trait ChannelStore: Send + Sync + 'static {
    /// The stored state of `channel`, `None` if it has none.
    fn load(&self, channel: ChannelId) -> BoxFuture<'_, Result<Option<ChannelState>, StoreError>>;

    /// Compare-and-set: stores `new` for `channel` if its stored state is `current` (`None`: it
    /// has none). Returns whether it did.
    fn compare_and_set(
        &self,
        channel: ChannelId,
        current: Option<ChannelState>,
        new: ChannelState,
    ) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// A page of the channels with a stored state, in id order: up to `limit` of them, those
    /// after `after` (from the first without it). Listing them all is a walk of pages, each
    /// starting after the last id of the one before, until a page comes back short; a store
    /// never does work in proportion to all its channels for one page.
    fn channels(
        &self,
        after: Option<ChannelId>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(ChannelId, ChannelState)>, StoreError>>;
}

/// Every channel of `store`, in id order, read page by page (`page` at a time).
///
/// # Errors
///
/// The store's.
pub async fn all_channels(
    store: &dyn ChannelStore,
    page: usize,
) -> Result<Vec<(ChannelId, ChannelState)>, StoreError> {
    let page = page.max(1);
    let mut all: Vec<(ChannelId, ChannelState)> = Vec::new();
    loop {
        let after = all.last().map(|(id, _)| *id);
        let next = store.channels(after, page).await?;
        let short = next.len() < page;
        all.extend(next);
        if short {
            return Ok(all);
        }
    }
}

impl<T: ChannelStore + ?Sized> ChannelStore for Arc<T> {
    fn load(&self, channel: ChannelId) -> BoxFuture<'_, Result<Option<ChannelState>, StoreError>> {
        (**self).load(channel)
    }
    fn compare_and_set(
        &self,
        channel: ChannelId,
        current: Option<ChannelState>,
        new: ChannelState,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        (**self).compare_and_set(channel, current, new)
    }
    fn channels(
        &self,
        after: Option<ChannelId>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(ChannelId, ChannelState)>, StoreError>> {
        (**self).channels(after, limit)
    }
}

/// An in-memory [`ChannelStore`]: one process, **lost on restart** (and the vouchers with it).
/// For tests and for channels whose vouchers are settled often; use
/// [`FileChannelStore`](super::FileChannelStore) otherwise.
#[derive(Default)]
pub struct MemoryChannelStore {
    states: Mutex<HashMap<ChannelId, ChannelState>>,
}

impl MemoryChannelStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ChannelId, ChannelState>> {
        // Every update is one insert: a poisoned lock is still consistent.
        self.states
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl ChannelStore for MemoryChannelStore {
    fn load(&self, channel: ChannelId) -> BoxFuture<'_, Result<Option<ChannelState>, StoreError>> {
        let state = self.lock().get(&channel).copied();
        Box::pin(std::future::ready(Ok(state)))
    }

    fn compare_and_set(
        &self,
        channel: ChannelId,
        current: Option<ChannelState>,
        new: ChannelState,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        let mut states = self.lock();
        let set = states.get(&channel).copied() == current;
        if set {
            states.insert(channel, new);
        }
        Box::pin(std::future::ready(Ok(set)))
    }

    fn channels(
        &self,
        after: Option<ChannelId>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(ChannelId, ChannelState)>, StoreError>> {
        Box::pin(std::future::ready(Ok(page(&self.lock(), after, limit))))
    }
}

/// Up to `limit` channels of `states` after `after`, in id order.
pub(super) fn page(
    states: &HashMap<ChannelId, ChannelState>,
    after: Option<ChannelId>,
    limit: usize,
) -> Vec<(ChannelId, ChannelState)> {
    let mut page: Vec<_> = states
        .iter()
        .filter(|(id, _)| after.is_none_or(|after| **id > after))
        .map(|(id, state)| (*id, *state))
        .collect();
    page.sort_by_key(|(id, _)| *id);
    page.truncate(limit);
    page
}

impl fmt::Debug for MemoryChannelStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryChannelStore")
            .field("channels", &self.lock().len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_store_passes_the_conformance_suite() {
        crate::store::conformance::channel_store(Arc::new(MemoryChannelStore::new())).await;
    }

    #[test]
    fn channel_ids_are_contracts_and_debug_hides_signatures() {
        let id: ChannelId = "CADQOBYHA4DQOBYHA4DQOBYHA4DQOBYHA4DQOBYHA4DQOBYHA4DQP5KR"
            .parse()
            .unwrap();
        assert_eq!(id, ChannelId([7; 32]));
        assert_eq!(
            id.to_string(),
            "CADQOBYHA4DQOBYHA4DQOBYHA4DQOBYHA4DQOBYHA4DQOBYHA4DQP5KR"
        );
        assert_eq!(
            "GB2Q4VZJ7ZZ2SZKDCIOOQKWQLSGFFYNCKKZ6TZKBAI4YEGUDALPQSBNB".parse::<ChannelId>(),
            Err(NotAContract)
        );
        let debug = format!("{:?}", crate::store::conformance::voucher(5, 0xcd));
        assert!(!debug.to_lowercase().contains("cdcd"), "{debug}");
        assert!(debug.contains("cumulative: 5"), "{debug}");
    }
}
