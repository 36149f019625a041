//! Payments: reservations, recorded answers and single-use claims.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use sha2::{Digest, Sha256};

use crate::BoxFuture;
use crate::layer::Paid;
use crate::scheme::Receipt;

/// Identifies one payment: a hash over what makes it unique (for x402 `exact`: the network,
/// the payer and the auth-entry nonce).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PaymentKey(pub [u8; 32]);

impl PaymentKey {
    /// SHA-256 over the parts, each prefixed with its length so that no two lists collide.
    pub fn derive(parts: &[&[u8]]) -> PaymentKey {
        let mut hasher = Sha256::new();
        for part in parts {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        PaymentKey(hasher.finalize().into())
    }
}

impl PaymentKey {
    /// The key of a payment made with a payer's Soroban authorization: the network (CAIP-2),
    /// the payer (strkey) and the authorization's nonce, which the ledger lets be used once.
    /// Every scheme that submits such an authorization reserves this key first, so one
    /// authorization never pays for two requests, whichever protocol presents it.
    pub fn of_authorization(network: &str, payer: &str, nonce: i64) -> PaymentKey {
        PaymentKey::derive(&[network.as_bytes(), payer.as_bytes(), &nonce.to_be_bytes()])
    }
}

impl fmt::Debug for PaymentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PaymentKey(")?;
        for byte in &self.0[..8] {
            write!(f, "{byte:02x}")?;
        }
        write!(f, "…)")
    }
}

/// A digest of the exact credential presented for a payment.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// SHA-256 of the credential's bytes.
    pub fn of(credential: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(credential).into())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint(")?;
        for byte in &self.0[..8] {
            write!(f, "{byte:02x}")?;
        }
        write!(f, "…)")
    }
}

/// A payment whose money moved.
#[derive(Clone, Debug, PartialEq)]
pub struct SettledPayment {
    /// What was paid, with the settlement reference.
    pub paid: Paid,
    /// The settlement's proof and headers.
    pub receipt: Receipt,
}

/// A settlement in flight, or one whose outcome is not known: what was paid, and what its
/// scheme needs to ask the ledger later whether the money moved (see
/// [`PaymentScheme::reconcile`](crate::scheme::PaymentScheme::reconcile)). Written before the
/// settlement starts, so it outlives a crash and is read by any node over the same store.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingSettlement {
    /// What is being paid (the reference not yet known).
    pub paid: Paid,
    /// When the settlement started, in seconds since the Unix epoch.
    pub started: u64,
    /// The scheme's evidence, in its own encoding (empty: the scheme cannot reconcile).
    pub evidence: Bytes,
}

impl PendingSettlement {
    /// A settlement of `paid` starting now, with the scheme's `evidence`.
    pub fn new(paid: Paid, evidence: Bytes) -> Self {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        PendingSettlement {
            paid,
            started,
            evidence,
        }
    }

    /// How long ago the settlement started (zero for a clock that went back).
    pub fn age(&self) -> Duration {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        Duration::from_secs(now.saturating_sub(self.started))
    }
}

/// The response a completed payment was answered with, replayed to retries.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedResponse {
    /// Status code.
    pub status: StatusCode,
    /// Headers, the payment's receipt headers included.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// The trailers after the body, if it had some (a gRPC call's status).
    pub trailers: Option<HeaderMap>,
}

/// A payment that settled and was answered.
#[derive(Clone, Debug, PartialEq)]
pub struct CompletedPayment {
    /// The settlement.
    pub settled: Arc<SettledPayment>,
    /// The response to replay; `None` when its body was too large (or unsized) to record.
    pub response: Option<RecordedResponse>,
}

/// A stored payment: its state and the credential that holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct PaymentRecord {
    /// Where the payment is.
    pub state: PaymentState,
    /// The credential that made the record.
    pub fingerprint: Fingerprint,
}

/// Where a payment is in its life (see the [store docs](crate::store)).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum PaymentState {
    /// Reserved by a request; being verified.
    Reserved,
    /// The handler runs; `Some` once the money has moved.
    Executing(Option<Arc<SettledPayment>>),
    /// A settlement is in flight.
    Settling(Arc<PendingSettlement>),
    /// The money moved; the request was not answered (its client left, or the handler failed).
    Settled(Arc<SettledPayment>),
    /// The money moved and the request was answered.
    Completed(Arc<CompletedPayment>),
    /// The payment was refused or its settlement failed; it may be tried again.
    Failed,
    /// A settlement ended without a known outcome; reconciliation asks the ledger.
    Unknown(Arc<PendingSettlement>),
}

impl PaymentState {
    /// Whether a settlement is in flight or of unknown outcome (`Settling`, `Unknown`) with
    /// evidence to reconcile it by: what [`PaymentStore::pending`] lists. (One without
    /// evidence, from a scheme that cannot reconcile, waits for its record to expire.)
    pub fn is_pending(&self) -> bool {
        match self {
            PaymentState::Settling(pending) | PaymentState::Unknown(pending) => {
                !pending.evidence.is_empty()
            }
            _ => false,
        }
    }

    /// The state's name, for compare-and-set.
    pub fn kind(&self) -> StateKind {
        match self {
            PaymentState::Reserved => StateKind::Reserved,
            PaymentState::Executing(_) => StateKind::Executing,
            PaymentState::Settling(_) => StateKind::Settling,
            PaymentState::Settled(_) => StateKind::Settled,
            PaymentState::Completed(_) => StateKind::Completed,
            PaymentState::Failed => StateKind::Failed,
            PaymentState::Unknown(_) => StateKind::Unknown,
        }
    }
}

/// The name of a [`PaymentState`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum StateKind {
    Reserved,
    Executing,
    Settling,
    Settled,
    Completed,
    Failed,
    Unknown,
}

/// The answer to [`PaymentStore::reserve`].
#[derive(Clone, Debug, PartialEq)]
pub enum Reservation {
    /// The caller owns the payment (state `Reserved`).
    New,
    /// Another credential for the same payment holds the record.
    Mismatch,
    /// Another request is using the payment right now.
    Busy,
    /// A settlement is in flight or ended without a known outcome (reconciliation may end it).
    Pending(Arc<PendingSettlement>),
    /// The money moved but no response was recorded; the caller owns the payment again (state
    /// `Executing(settled)`) and runs the handler without settling.
    Resume(Arc<SettledPayment>),
    /// The payment completed; answer with the recorded response.
    Replay(Arc<CompletedPayment>),
}

/// The store could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store is unreachable or failed; the request is answered 503.
    #[error("payment store unavailable: {0}")]
    Unavailable(String),
}

/// Durable or in-memory record of payments and single-use claims. Every operation is atomic.
pub trait PaymentStore: Send + Sync + 'static {
    /// Reserves `key` for the credential `fingerprint` (see the table in the
    /// [store docs](crate::store)). A new or changed record lives for `ttl`.
    fn reserve(
        &self,
        key: PaymentKey,
        fingerprint: Fingerprint,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<Reservation, StoreError>>;

    /// Compare-and-set: moves `key` to `to` if its state is `from`. Returns whether it did.
    fn transition(
        &self,
        key: PaymentKey,
        from: StateKind,
        to: PaymentState,
    ) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Gives a payment back after it was not used: `Reserved` and `Executing(None)` are
    /// removed, `Executing(Some(settled))` goes back to `Settled`; other states are left alone.
    fn release(&self, key: PaymentKey) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The current record of `key`, if any.
    fn record(&self, key: PaymentKey) -> BoxFuture<'_, Result<Option<PaymentRecord>, StoreError>>;

    /// Claims `id` once: `true` the first time, `false` while an earlier claim lives (`ttl`).
    fn claim<'a>(&'a self, id: &'a [u8], ttl: Duration) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Up to `limit` keys of payments whose settlement is in flight or of unknown outcome
    /// (`Settling`, `Unknown`) with evidence to reconcile by ([`PaymentState::is_pending`]):
    /// what the background reconciler walks. May list a key whose
    /// record has just moved on (read the record before acting), never leaves one out for long.
    fn pending(&self, limit: usize) -> BoxFuture<'_, Result<Vec<PaymentKey>, StoreError>>;
}

impl<T: PaymentStore + ?Sized> PaymentStore for Arc<T> {
    fn reserve(
        &self,
        key: PaymentKey,
        fingerprint: Fingerprint,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<Reservation, StoreError>> {
        (**self).reserve(key, fingerprint, ttl)
    }
    fn transition(
        &self,
        key: PaymentKey,
        from: StateKind,
        to: PaymentState,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        (**self).transition(key, from, to)
    }
    fn release(&self, key: PaymentKey) -> BoxFuture<'_, Result<(), StoreError>> {
        (**self).release(key)
    }
    fn record(&self, key: PaymentKey) -> BoxFuture<'_, Result<Option<PaymentRecord>, StoreError>> {
        (**self).record(key)
    }
    fn claim<'a>(&'a self, id: &'a [u8], ttl: Duration) -> BoxFuture<'a, Result<bool, StoreError>> {
        (**self).claim(id, ttl)
    }
    fn pending(&self, limit: usize) -> BoxFuture<'_, Result<Vec<PaymentKey>, StoreError>> {
        (**self).pending(limit)
    }
}

/// What one step of the state machine does to the stored record.
#[derive(Debug, PartialEq)]
pub(crate) enum Change {
    /// Nothing to write.
    Keep,
    /// Store this record; when `renew`, its lifetime starts again (a new record's always does).
    Put { record: PaymentRecord, renew: bool },
    /// Forget the payment.
    Remove,
}

/// [`PaymentStore::reserve`] over the live record `current` (see the table in the
/// [store docs](crate::store)).
pub(crate) fn reserve_step(
    current: Option<&PaymentRecord>,
    fingerprint: Fingerprint,
) -> (Reservation, Change) {
    let fresh = || Change::Put {
        record: PaymentRecord {
            state: PaymentState::Reserved,
            fingerprint,
        },
        renew: true,
    };
    let Some(record) = current else {
        return (Reservation::New, fresh());
    };
    if matches!(record.state, PaymentState::Failed) {
        return (Reservation::New, fresh());
    }
    if record.fingerprint != fingerprint {
        return (Reservation::Mismatch, Change::Keep);
    }
    match &record.state {
        PaymentState::Failed => (Reservation::New, fresh()),
        PaymentState::Reserved | PaymentState::Executing(_) => (Reservation::Busy, Change::Keep),
        PaymentState::Settling(pending) | PaymentState::Unknown(pending) => {
            (Reservation::Pending(pending.clone()), Change::Keep)
        }
        PaymentState::Completed(completed) => {
            (Reservation::Replay(completed.clone()), Change::Keep)
        }
        PaymentState::Settled(settled) => (
            Reservation::Resume(settled.clone()),
            Change::Put {
                record: PaymentRecord {
                    state: PaymentState::Executing(Some(settled.clone())),
                    fingerprint,
                },
                renew: false,
            },
        ),
    }
}

/// [`PaymentStore::transition`] over the live record `current`.
pub(crate) fn transition_step(
    current: Option<&PaymentRecord>,
    from: StateKind,
    to: PaymentState,
) -> (bool, Change) {
    match current {
        Some(record) if record.state.kind() == from => (
            true,
            Change::Put {
                record: PaymentRecord {
                    state: to,
                    fingerprint: record.fingerprint,
                },
                renew: true,
            },
        ),
        _ => (false, Change::Keep),
    }
}

/// [`PaymentStore::release`] over the live record `current`.
pub(crate) fn release_step(current: Option<&PaymentRecord>) -> Change {
    let Some(record) = current else {
        return Change::Keep;
    };
    match &record.state {
        PaymentState::Reserved | PaymentState::Executing(None) => Change::Remove,
        PaymentState::Executing(Some(settled)) => Change::Put {
            record: PaymentRecord {
                state: PaymentState::Settled(settled.clone()),
                fingerprint: record.fingerprint,
            },
            renew: false,
        },
        PaymentState::Settling(_)
        | PaymentState::Settled(_)
        | PaymentState::Completed(_)
        | PaymentState::Failed
        | PaymentState::Unknown(_) => Change::Keep,
    }
}

/// An in-memory [`PaymentStore`]: one process, lost on restart. Expired records are swept as
/// the store is used; claims live in a `moka` cache that expires each at its own time.
pub struct MemoryStore {
    inner: Mutex<Records>,
    claims: moka::sync::Cache<Box<[u8]>, Duration>,
}

/// Each claim lives the `ttl` it was taken with.
struct PerClaim;

impl moka::Expiry<Box<[u8]>, Duration> for PerClaim {
    fn expire_after_create(&self, _: &Box<[u8]>, ttl: &Duration, _: Instant) -> Option<Duration> {
        Some(*ttl)
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            inner: Mutex::default(),
            claims: moka::sync::Cache::builder().expire_after(PerClaim).build(),
        }
    }
}

#[derive(Default)]
struct Records {
    payments: HashMap<PaymentKey, Record>,
    writes_since_sweep: usize,
}

struct Record {
    state: PaymentState,
    fingerprint: Fingerprint,
    ttl: Duration,
    expires: Instant,
}

const SWEEP_EVERY: usize = 1024;

impl Record {
    fn payment(&self) -> PaymentRecord {
        PaymentRecord {
            state: self.state.clone(),
            fingerprint: self.fingerprint,
        }
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Records> {
        // A panic while holding the lock cannot leave a record half-written (every update is a
        // single insert or remove), so a poisoned lock is still consistent.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Records {
    fn live(&mut self, key: &PaymentKey, now: Instant) -> Option<&mut Record> {
        if self
            .payments
            .get(key)
            .is_some_and(|record| record.expires <= now)
        {
            self.payments.remove(key);
        }
        self.payments.get_mut(key)
    }

    fn wrote(&mut self, now: Instant) {
        self.writes_since_sweep += 1;
        if self.writes_since_sweep >= SWEEP_EVERY {
            self.writes_since_sweep = 0;
            self.payments.retain(|_, record| record.expires > now);
        }
    }

    fn reserve(
        &mut self,
        key: PaymentKey,
        fingerprint: Fingerprint,
        ttl: Duration,
        now: Instant,
    ) -> Reservation {
        let current = self.live(&key, now).map(|record| record.payment());
        let (answer, change) = reserve_step(current.as_ref(), fingerprint);
        self.apply(key, change, ttl, now);
        answer
    }

    fn transition(
        &mut self,
        key: PaymentKey,
        from: StateKind,
        to: PaymentState,
        now: Instant,
    ) -> bool {
        let Some(record) = self.live(&key, now) else {
            return false;
        };
        let ttl = record.ttl;
        let (done, change) = transition_step(Some(&record.payment()), from, to);
        self.apply(key, change, ttl, now);
        done
    }

    fn release(&mut self, key: PaymentKey, now: Instant) {
        let Some(record) = self.live(&key, now) else {
            return;
        };
        let ttl = record.ttl;
        let change = release_step(Some(&record.payment()));
        self.apply(key, change, ttl, now);
    }

    /// Writes what a step decided; a renewed record lives `ttl` from `now`.
    fn apply(&mut self, key: PaymentKey, change: Change, ttl: Duration, now: Instant) {
        match change {
            Change::Keep => {}
            Change::Remove => {
                self.payments.remove(&key);
            }
            Change::Put { record, renew } => {
                match self.payments.entry(key) {
                    Entry::Occupied(mut entry) => {
                        let stored = entry.get_mut();
                        stored.state = record.state;
                        stored.fingerprint = record.fingerprint;
                        stored.ttl = ttl;
                        if renew {
                            stored.expires = now + ttl;
                        }
                    }
                    Entry::Vacant(entry) => {
                        entry.insert(Record {
                            state: record.state,
                            fingerprint: record.fingerprint,
                            ttl,
                            expires: now + ttl,
                        });
                    }
                }
                self.wrote(now);
            }
        }
    }
}

fn ready<'a, T: Send + 'a>(value: T) -> BoxFuture<'a, Result<T, StoreError>> {
    Box::pin(std::future::ready(Ok(value)))
}

impl PaymentStore for MemoryStore {
    fn reserve(
        &self,
        key: PaymentKey,
        fingerprint: Fingerprint,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<Reservation, StoreError>> {
        ready(self.lock().reserve(key, fingerprint, ttl, Instant::now()))
    }

    fn transition(
        &self,
        key: PaymentKey,
        from: StateKind,
        to: PaymentState,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        ready(self.lock().transition(key, from, to, Instant::now()))
    }

    fn release(&self, key: PaymentKey) -> BoxFuture<'_, Result<(), StoreError>> {
        self.lock().release(key, Instant::now());
        ready(())
    }

    fn record(&self, key: PaymentKey) -> BoxFuture<'_, Result<Option<PaymentRecord>, StoreError>> {
        let record = self
            .lock()
            .live(&key, Instant::now())
            .map(|record| record.payment());
        ready(record)
    }

    fn claim<'a>(&'a self, id: &'a [u8], ttl: Duration) -> BoxFuture<'a, Result<bool, StoreError>> {
        // Taken only by the call that inserts it; an expired claim counts as absent.
        ready(self.claims.entry(id.into()).or_insert(ttl).is_fresh())
    }

    fn pending(&self, limit: usize) -> BoxFuture<'_, Result<Vec<PaymentKey>, StoreError>> {
        let now = Instant::now();
        let keys = self
            .lock()
            .payments
            .iter()
            .filter(|(_, record)| record.expires > now && record.state.is_pending())
            .map(|(key, _)| *key)
            .take(limit)
            .collect();
        ready(keys)
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let records = self.lock();
        f.debug_struct("MemoryStore")
            .field("payments", &records.payments.len())
            .field("claims", &self.claims.entry_count())
            .finish()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);
    const PRINT: Fingerprint = Fingerprint([1; 32]);

    fn key(n: u8) -> PaymentKey {
        PaymentKey::derive(&[b"test", &[n]])
    }

    #[test]
    fn keys_are_length_prefixed() {
        assert_ne!(
            PaymentKey::derive(&[b"ab", b"c"]),
            PaymentKey::derive(&[b"a", b"bc"])
        );
        assert_eq!(PaymentKey::derive(&[b"a"]), PaymentKey::derive(&[b"a"]));
    }

    #[test]
    fn concurrent_reservations_admit_exactly_one() {
        let store = Arc::new(MemoryStore::new());
        let winners: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let store = store.clone();
                    scope.spawn(move || {
                        let now = Instant::now();
                        matches!(
                            store.lock().reserve(key(9), PRINT, TTL, now),
                            Reservation::New
                        ) as usize
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(winners, 1);
    }

    #[tokio::test]
    async fn memory_store_passes_the_conformance_suite() {
        crate::store::conformance::payment_store(Arc::new(MemoryStore::new())).await;
    }
}
