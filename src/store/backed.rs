//! [`BackedStore`]: a [`PaymentStore`] over any key-value back end that can compare-and-swap
//! one key, so that records outlive the process and are shared by every node using the back
//! end.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::payment::{
    Change, Fingerprint, PaymentKey, PaymentRecord, PaymentState, PaymentStore, Reservation,
    StateKind, StoreError, release_step, reserve_step, transition_step,
};
use crate::BoxFuture;

/// How many times a step is tried again after another writer changed its record first.
const MAX_ATTEMPTS: usize = 64;

/// A write of one encoded payment record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordWrite<'a> {
    /// Store `value`; with `ttl`, the key expires `ttl` from now, without, it keeps its expiry.
    Put {
        /// The encoded record.
        value: &'a [u8],
        /// The new lifetime, or `None` to keep the current one.
        ttl: Option<Duration>,
        /// Whether the record is a settlement in flight or of unknown outcome: the back end
        /// lists the key in [`PaymentBackend::pending`] while it is, and not after.
        pending: bool,
    },
    /// Delete the key (and unlist it from [`PaymentBackend::pending`]).
    Remove,
}

/// Where a [`BackedStore`] keeps payments: opaque values under [`PaymentKey`]s that expire,
/// changed only by compare-and-swap, and single-use claims.
///
/// Each method is atomic on its own; [`BackedStore`] builds the state machine on top. An
/// expired key must read as absent, whether or not it is gone yet.
pub trait PaymentBackend: Send + Sync + 'static {
    /// The value under `key`, `None` when there is none (or it expired).
    fn load(&self, key: PaymentKey) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>>;

    /// Applies `write` to `key` if its value is still `expected` (`None`: it has none), and
    /// reports whether it did. Values are [`PaymentRecord::encode`]d, so a back end may compare
    /// only their first [`RECORD_TAG_LEN`](super::RECORD_TAG_LEN) bytes.
    fn swap<'a>(
        &'a self,
        key: PaymentKey,
        expected: Option<&'a [u8]>,
        write: RecordWrite<'a>,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Claims `id` once: `true` the first time, `false` while an earlier claim lives (`ttl`).
    fn claim<'a>(&'a self, id: &'a [u8], ttl: Duration) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Up to `limit` keys whose last [`RecordWrite::Put`] was `pending` and that have not
    /// expired or been removed since: the settlements the background reconciler looks at. A
    /// back end that cannot change the list in the same atomic step as the record may list a
    /// key a little longer than that (list before the write, unlist after), never shorter.
    fn pending(&self, limit: usize) -> BoxFuture<'_, Result<Vec<PaymentKey>, StoreError>>;
}

impl<T: PaymentBackend + ?Sized> PaymentBackend for std::sync::Arc<T> {
    fn load(&self, key: PaymentKey) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>> {
        (**self).load(key)
    }
    fn swap<'a>(
        &'a self,
        key: PaymentKey,
        expected: Option<&'a [u8]>,
        write: RecordWrite<'a>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        (**self).swap(key, expected, write)
    }
    fn claim<'a>(&'a self, id: &'a [u8], ttl: Duration) -> BoxFuture<'a, Result<bool, StoreError>> {
        (**self).claim(id, ttl)
    }
    fn pending(&self, limit: usize) -> BoxFuture<'_, Result<Vec<PaymentKey>, StoreError>> {
        (**self).pending(limit)
    }
}

/// A [`PaymentStore`] over a [`PaymentBackend`]: each operation reads the record, takes one
/// step of the state machine (the same steps as [`MemoryStore`](super::MemoryStore)) and
/// writes the result with a compare-and-swap, trying again when another writer (another
/// request, or another node) got there first.
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::Mutex;
/// use std::time::Duration;
/// use tower_paywall::BoxFuture;
/// use tower_paywall::store::{
///     BackedStore, Fingerprint, PaymentBackend, PaymentKey, PaymentRecord, PaymentStore,
///     RecordWrite, Reservation, StoreError,
/// };
///
/// /// A toy back end (no expiry); a real one is a database shared by every node.
/// #[derive(Default)]
/// struct Map(Mutex<HashMap<[u8; 32], Vec<u8>>>);
///
/// impl PaymentBackend for Map {
///     fn load(&self, key: PaymentKey) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>> {
///         let value = self.0.lock().unwrap().get(&key.0).cloned();
///         Box::pin(async move { Ok(value) })
///     }
///     fn swap<'a>(
///         &'a self,
///         key: PaymentKey,
///         expected: Option<&'a [u8]>,
///         write: RecordWrite<'a>,
///     ) -> BoxFuture<'a, Result<bool, StoreError>> {
///         let mut map = self.0.lock().unwrap();
///         let swapped = map.get(&key.0).map(Vec::as_slice) == expected;
///         if swapped {
///             match write {
///                 RecordWrite::Put { value, .. } => { map.insert(key.0, value.to_vec()); }
///                 RecordWrite::Remove => { map.remove(&key.0); }
///             }
///         }
///         Box::pin(async move { Ok(swapped) })
///     }
///     fn pending(&self, limit: usize) -> BoxFuture<'_, Result<Vec<PaymentKey>, StoreError>> {
///         // A toy scans; a real back end keeps an index of the keys last written `pending`.
///         let keys = self.0.lock().unwrap().iter()
///             .filter(|(_, value)| {
///                 PaymentRecord::decode(value).is_ok_and(|(record, _)| record.state.is_pending())
///             })
///             .map(|(key, _)| PaymentKey(*key))
///             .take(limit)
///             .collect();
///         Box::pin(async move { Ok(keys) })
///     }
///     fn claim<'a>(&'a self, id: &'a [u8], _ttl: Duration) -> BoxFuture<'a, Result<bool, StoreError>> {
///         let key = PaymentKey::derive(&[b"claim", id]).0;
///         let new = self.0.lock().unwrap().insert(key, Vec::new()).is_none();
///         Box::pin(async move { Ok(new) })
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), StoreError> {
/// let store = BackedStore::new(Map::default());
/// let (key, credential) = (PaymentKey::derive(&[b"payment"]), Fingerprint([1; 32]));
/// let ttl = Duration::from_secs(600);
/// assert_eq!(store.reserve(key, credential, ttl).await?, Reservation::New);
/// assert_eq!(store.reserve(key, credential, ttl).await?, Reservation::Busy);
/// # Ok(()) }
/// ```
pub struct BackedStore<B> {
    backend: B,
    /// The bytes this store last wrote under each key it wrote lately: the next step on the key
    /// tries them as the record it replaces, without reading it first (see [`BackedStore`]).
    written: moka::sync::Cache<PaymentKey, Arc<[u8]>>,
}

/// How many bytes of records [`BackedStore`] remembers having written.
const WRITTEN_BYTES: u64 = 8 << 20;
/// How long it remembers one.
const WRITTEN_FOR: Duration = Duration::from_secs(60);

impl<B: PaymentBackend> BackedStore<B> {
    /// A store over `backend`.
    pub fn new(backend: B) -> Self {
        BackedStore {
            backend,
            written: moka::sync::Cache::builder()
                .max_capacity(WRITTEN_BYTES)
                .weigher(|_, bytes: &Arc<[u8]>| u32::try_from(bytes.len()).unwrap_or(u32::MAX))
                .time_to_live(WRITTEN_FOR)
                .build(),
        }
    }

    /// The back end.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The record of `key` and its bytes, as the back end holds them.
    async fn read(
        &self,
        key: PaymentKey,
    ) -> Result<Option<(PaymentRecord, Duration, Vec<u8>)>, StoreError> {
        let Some(bytes) = self.backend.load(key).await? else {
            return Ok(None);
        };
        let (record, ttl) = PaymentRecord::decode(&bytes)
            .map_err(|error| StoreError::Unavailable(error.to_string()))?;
        Ok(Some((record, ttl, bytes)))
    }

    /// The record this store last wrote under `key`, if it remembers one that decodes.
    fn remembered(&self, key: PaymentKey) -> Option<(PaymentRecord, Duration, Vec<u8>)> {
        let bytes = self.written.get(&key)?;
        let (record, ttl) = PaymentRecord::decode(&bytes).ok()?;
        Some((record, ttl, bytes.to_vec()))
    }

    /// Runs `step` over the current record until its change is written over the record it
    /// saw. The record written lives `ttl`, or as long as the current one did; its expiry
    /// starts again when the step renews it or the record is new.
    ///
    /// The first attempt runs over the record this store last wrote under `key`, if it
    /// remembers one, without reading: a write is then checked by the swap (another writer
    /// since makes it fail, and the step runs again over the record read), and a step that
    /// would write nothing runs again over the record read, since only a swap proves the
    /// remembered record current. A payment's steps on one node (reserve, settle, record the
    /// answer) so cost one round trip each instead of two.
    async fn step<T>(
        &self,
        key: PaymentKey,
        ttl: Option<Duration>,
        mut step: impl FnMut(Option<&PaymentRecord>) -> (T, Change),
    ) -> Result<T, StoreError> {
        let mut remembered = self.remembered(key);
        for _ in 0..MAX_ATTEMPTS {
            let guessed = remembered.is_some();
            let current = match remembered.take() {
                Some(current) => Some(current),
                None => self.read(key).await?,
            };
            let (answer, change) = step(current.as_ref().map(|(record, ..)| record));
            if guessed && matches!(change, Change::Keep) {
                continue;
            }
            let (expected, stored_ttl) = match &current {
                Some((_, stored_ttl, bytes)) => (Some(bytes.as_slice()), Some(*stored_ttl)),
                None => (None, None),
            };
            let encoded;
            let write = match change {
                Change::Keep => return Ok(answer),
                Change::Remove => RecordWrite::Remove,
                Change::Put { record, renew } => {
                    let lifetime = ttl.or(stored_ttl).unwrap_or_default();
                    encoded = record.encode(lifetime);
                    RecordWrite::Put {
                        value: &encoded,
                        ttl: (renew || expected.is_none()).then_some(lifetime),
                        pending: record.state.is_pending(),
                    }
                }
            };
            if self.backend.swap(key, expected, write).await? {
                match write {
                    RecordWrite::Put { value, .. } => {
                        self.written.insert(key, Arc::from(value));
                    }
                    RecordWrite::Remove => self.written.invalidate(&key),
                }
                return Ok(answer);
            }
            self.written.invalidate(&key);
        }
        Err(StoreError::Unavailable(
            "payment record changed by others on every attempt".into(),
        ))
    }
}

impl<B: PaymentBackend> PaymentStore for BackedStore<B> {
    fn reserve(
        &self,
        key: PaymentKey,
        fingerprint: Fingerprint,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<Reservation, StoreError>> {
        Box::pin(self.step(key, Some(ttl), move |current| {
            reserve_step(current, fingerprint)
        }))
    }

    fn transition(
        &self,
        key: PaymentKey,
        from: StateKind,
        to: PaymentState,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(self.step(key, None, move |current| {
            transition_step(current, from, to.clone())
        }))
    }

    fn release(&self, key: PaymentKey) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.step(key, None, |current| ((), release_step(current))))
    }

    fn record(&self, key: PaymentKey) -> BoxFuture<'_, Result<Option<PaymentRecord>, StoreError>> {
        Box::pin(async move { Ok(self.read(key).await?.map(|(record, ..)| record)) })
    }

    fn claim<'a>(&'a self, id: &'a [u8], ttl: Duration) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.backend.claim(id, ttl)
    }

    fn pending(&self, limit: usize) -> BoxFuture<'_, Result<Vec<PaymentKey>, StoreError>> {
        self.backend.pending(limit)
    }
}

impl<B: fmt::Debug> fmt::Debug for BackedStore<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackedStore")
            .field("backend", &self.backend)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use super::*;
    use crate::store::RECORD_TAG_LEN;
    use crate::store::conformance;

    /// A value and when it expires.
    type Expiring = (Vec<u8>, Instant);

    /// A back end in memory with expiry, that can lose races on purpose: `conflicts` swaps
    /// fail as if another node had written first.
    #[derive(Default)]
    struct Map {
        values: Mutex<HashMap<[u8; 32], Expiring>>,
        pending: Mutex<std::collections::BTreeSet<[u8; 32]>>,
        claims: Mutex<HashMap<Vec<u8>, Instant>>,
        conflicts: AtomicUsize,
        swaps: AtomicUsize,
        loads: AtomicUsize,
    }

    impl Map {
        fn losing(conflicts: usize) -> Map {
            Map {
                conflicts: AtomicUsize::new(conflicts),
                ..Map::default()
            }
        }

        fn expiry(&self, key: PaymentKey) -> Option<Instant> {
            self.values.lock().unwrap().get(&key.0).map(|(_, at)| *at)
        }
    }

    impl PaymentBackend for Map {
        fn load(&self, key: PaymentKey) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>> {
            self.loads.fetch_add(1, Ordering::SeqCst);
            let values = self.values.lock().unwrap();
            let value = values
                .get(&key.0)
                .filter(|(_, expires)| *expires > Instant::now())
                .map(|(value, _)| value.clone());
            Box::pin(async move { Ok(value) })
        }

        fn swap<'a>(
            &'a self,
            key: PaymentKey,
            expected: Option<&'a [u8]>,
            write: RecordWrite<'a>,
        ) -> BoxFuture<'a, Result<bool, StoreError>> {
            self.swaps.fetch_add(1, Ordering::SeqCst);
            let lost = self
                .conflicts
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            let mut values = self.values.lock().unwrap();
            let now = Instant::now();
            let current = values.get(&key.0).filter(|(_, expires)| *expires > now);
            let swapped = !lost
                && current.map(|(value, _)| &value[..RECORD_TAG_LEN])
                    == expected.map(|value| &value[..RECORD_TAG_LEN]);
            if swapped {
                let mut pending_keys = self.pending.lock().unwrap();
                match write {
                    RecordWrite::Put {
                        value,
                        ttl,
                        pending,
                    } => {
                        let expires = match (ttl, current) {
                            (Some(ttl), _) => now + ttl,
                            (None, Some((_, expires))) => *expires,
                            (None, None) => panic!("a new record without a lifetime"),
                        };
                        values.insert(key.0, (value.to_vec(), expires));
                        if pending {
                            pending_keys.insert(key.0);
                        } else {
                            pending_keys.remove(&key.0);
                        }
                    }
                    RecordWrite::Remove => {
                        values.remove(&key.0);
                        pending_keys.remove(&key.0);
                    }
                }
            }
            Box::pin(async move { Ok(swapped) })
        }

        fn claim<'a>(
            &'a self,
            id: &'a [u8],
            ttl: Duration,
        ) -> BoxFuture<'a, Result<bool, StoreError>> {
            let mut claims = self.claims.lock().unwrap();
            let now = Instant::now();
            let new = claims.get(id).is_none_or(|expires| *expires <= now);
            if new {
                claims.insert(id.to_vec(), now + ttl);
            }
            Box::pin(async move { Ok(new) })
        }

        fn pending(&self, limit: usize) -> BoxFuture<'_, Result<Vec<PaymentKey>, StoreError>> {
            let values = self.values.lock().unwrap();
            let now = Instant::now();
            let keys = self
                .pending
                .lock()
                .unwrap()
                .iter()
                .filter(|key| values.get(*key).is_some_and(|(_, expires)| *expires > now))
                .map(|key| PaymentKey(*key))
                .take(limit)
                .collect();
            Box::pin(async move { Ok(keys) })
        }
    }

    #[tokio::test]
    async fn passes_the_conformance_suite() {
        conformance::payment_store(Arc::new(BackedStore::new(Map::default()))).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_stores_over_one_back_end_act_as_one() {
        let backend = Arc::new(Map::default());
        conformance::shared_payment_store(
            Arc::new(BackedStore::new(backend.clone())),
            Arc::new(BackedStore::new(backend)),
        )
        .await;
    }

    const TTL: Duration = Duration::from_secs(60);
    const PRINT: Fingerprint = Fingerprint([1; 32]);

    fn key() -> PaymentKey {
        PaymentKey::derive(&[b"backed"])
    }

    #[tokio::test]
    async fn a_lost_race_is_tried_again_over_the_new_record() {
        let store = BackedStore::new(Map::losing(3));
        assert_eq!(
            store.reserve(key(), PRINT, TTL).await.unwrap(),
            Reservation::New
        );
        assert_eq!(store.backend().swaps.load(Ordering::SeqCst), 4);
    }

    /// A payment's steps on one node read its record once: each later step swaps over the
    /// record the store wrote. Another node's change since is caught by the swap, and a step
    /// that would write nothing reads the record first.
    #[tokio::test]
    async fn steps_over_a_record_this_store_wrote_skip_the_read() {
        let map = Arc::new(Map::default());
        let store = BackedStore::new(map.clone());
        let loads = || {
            (
                map.loads.load(Ordering::SeqCst),
                map.swaps.load(Ordering::SeqCst),
            )
        };
        assert_eq!(
            store.reserve(key(), PRINT, TTL).await.unwrap(),
            Reservation::New
        );
        let settled = Arc::new(conformance::settled());
        let executing = PaymentState::Executing(None);
        assert!(
            store
                .transition(key(), StateKind::Reserved, executing)
                .await
                .unwrap()
        );
        let done = PaymentState::Settled(settled.clone());
        assert!(
            store
                .transition(key(), StateKind::Executing, done)
                .await
                .unwrap()
        );
        assert_eq!(loads(), (1, 3), "one read, three swaps");
        // A refused transition (nothing to write) is decided over the record read.
        let again = PaymentState::Executing(None);
        assert!(
            !store
                .transition(key(), StateKind::Reserved, again)
                .await
                .unwrap()
        );
        assert_eq!(loads(), (2, 3));
        // Another node resumes the settled payment: this store's swap over its own write
        // fails, and the step runs again over the record read, which is busy now (not a
        // second resume).
        let other = BackedStore::new(map.clone());
        assert_eq!(
            other.reserve(key(), PRINT, TTL).await.unwrap(),
            Reservation::Resume(settled)
        );
        assert_eq!(
            store.reserve(key(), PRINT, TTL).await.unwrap(),
            Reservation::Busy
        );
    }

    #[tokio::test]
    async fn a_record_always_changed_by_others_is_unavailable() {
        let store = BackedStore::new(Map::losing(usize::MAX));
        let error = store.reserve(key(), PRINT, TTL).await.unwrap_err();
        assert!(matches!(error, StoreError::Unavailable(ref why) if why.contains("every attempt")));
        assert_eq!(store.backend().swaps.load(Ordering::SeqCst), MAX_ATTEMPTS);
    }

    #[tokio::test]
    async fn transitions_renew_the_lifetime_and_resumes_keep_it() {
        let store = BackedStore::new(Map::default());
        store.reserve(key(), PRINT, TTL).await.unwrap();
        let reserved = store.backend().expiry(key()).unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let settled = Arc::new(conformance::settled());
        assert!(
            store
                .transition(
                    key(),
                    StateKind::Reserved,
                    PaymentState::Settled(settled.clone())
                )
                .await
                .unwrap()
        );
        let renewed = store.backend().expiry(key()).unwrap();
        assert!(renewed > reserved);
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(
            store.reserve(key(), PRINT, TTL).await.unwrap(),
            Reservation::Resume(settled.clone())
        );
        store.release(key()).await.unwrap();
        assert_eq!(store.backend().expiry(key()), Some(renewed));
        assert_eq!(
            store
                .record(key())
                .await
                .unwrap()
                .map(|record| record.state),
            Some(PaymentState::Settled(settled))
        );
    }

    #[tokio::test]
    async fn damaged_bytes_in_the_back_end_are_unavailable_not_a_new_payment() {
        let store = BackedStore::new(Map::default());
        store
            .backend()
            .values
            .lock()
            .unwrap()
            .insert(key().0, (vec![2; 40], Instant::now() + TTL));
        let error = store.reserve(key(), PRINT, TTL).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "payment store unavailable: payment record is not readable: damaged"
        );
        // A record of the format before pending settlements carried their evidence.
        store
            .backend()
            .values
            .lock()
            .unwrap()
            .insert(key().0, (vec![1; 40], Instant::now() + TTL));
        let error = store.reserve(key(), PRINT, TTL).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "payment store unavailable: payment record is not readable: unknown format"
        );
    }
}
