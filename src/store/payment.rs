//! Payments: reservations, recorded answers and single-use claims.

use std::collections::HashMap;
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

/// The response a completed payment was answered with, replayed to retries.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedResponse {
    /// Status code.
    pub status: StatusCode,
    /// Headers, the payment's receipt headers included.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
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
    Settling,
    /// The money moved; the request was not answered (its client left, or the handler failed).
    Settled(Arc<SettledPayment>),
    /// The money moved and the request was answered.
    Completed(Arc<CompletedPayment>),
    /// The payment was refused or its settlement failed; it may be tried again.
    Failed,
    /// A settlement ended without a known outcome.
    Unknown,
}

impl PaymentState {
    /// The state's name, for compare-and-set.
    pub fn kind(&self) -> StateKind {
        match self {
            PaymentState::Reserved => StateKind::Reserved,
            PaymentState::Executing(_) => StateKind::Executing,
            PaymentState::Settling => StateKind::Settling,
            PaymentState::Settled(_) => StateKind::Settled,
            PaymentState::Completed(_) => StateKind::Completed,
            PaymentState::Failed => StateKind::Failed,
            PaymentState::Unknown => StateKind::Unknown,
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
    /// A settlement is in flight or ended without a known outcome.
    Pending,
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
}

/// An in-memory [`PaymentStore`]: one process, lost on restart. Expired records are swept as
/// the store is used.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Records>,
}

#[derive(Default)]
struct Records {
    payments: HashMap<PaymentKey, Record>,
    claims: HashMap<Box<[u8]>, Instant>,
    writes_since_sweep: usize,
}

struct Record {
    state: PaymentState,
    fingerprint: Fingerprint,
    ttl: Duration,
    expires: Instant,
}

const SWEEP_EVERY: usize = 1024;

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
            self.claims.retain(|_, expires| *expires > now);
        }
    }

    fn reserve(
        &mut self,
        key: PaymentKey,
        fingerprint: Fingerprint,
        ttl: Duration,
        now: Instant,
    ) -> Reservation {
        let answer = match self.live(&key, now) {
            None => None,
            Some(record) if matches!(record.state, PaymentState::Failed) => None,
            Some(record) if record.fingerprint != fingerprint => Some(Reservation::Mismatch),
            Some(record) => match &record.state {
                PaymentState::Failed => None,
                PaymentState::Reserved | PaymentState::Executing(_) => Some(Reservation::Busy),
                PaymentState::Settling | PaymentState::Unknown => Some(Reservation::Pending),
                PaymentState::Completed(completed) => Some(Reservation::Replay(completed.clone())),
                PaymentState::Settled(settled) => {
                    let settled = settled.clone();
                    record.state = PaymentState::Executing(Some(settled.clone()));
                    Some(Reservation::Resume(settled))
                }
            },
        };
        if let Some(answer) = answer {
            return answer;
        }
        self.payments.insert(
            key,
            Record {
                state: PaymentState::Reserved,
                fingerprint,
                ttl,
                expires: now + ttl,
            },
        );
        self.wrote(now);
        Reservation::New
    }

    fn transition(
        &mut self,
        key: PaymentKey,
        from: StateKind,
        to: PaymentState,
        now: Instant,
    ) -> bool {
        match self.live(&key, now) {
            Some(record) if record.state.kind() == from => {
                record.state = to;
                record.expires = now + record.ttl;
                true
            }
            _ => false,
        }
    }

    fn release(&mut self, key: PaymentKey, now: Instant) {
        let Some(record) = self.live(&key, now) else {
            return;
        };
        match &record.state {
            PaymentState::Reserved | PaymentState::Executing(None) => {
                self.payments.remove(&key);
            }
            PaymentState::Executing(Some(settled)) => {
                record.state = PaymentState::Settled(settled.clone());
            }
            PaymentState::Settling
            | PaymentState::Settled(_)
            | PaymentState::Completed(_)
            | PaymentState::Failed
            | PaymentState::Unknown => {}
        }
    }

    fn claim(&mut self, id: &[u8], ttl: Duration, now: Instant) -> bool {
        if self.claims.get(id).is_some_and(|expires| *expires > now) {
            return false;
        }
        self.claims.insert(id.into(), now + ttl);
        self.wrote(now);
        true
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
            .map(|record| PaymentRecord {
                state: record.state.clone(),
                fingerprint: record.fingerprint,
            });
        ready(record)
    }

    fn claim<'a>(&'a self, id: &'a [u8], ttl: Duration) -> BoxFuture<'a, Result<bool, StoreError>> {
        ready(self.lock().claim(id, ttl, Instant::now()))
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let records = self.lock();
        f.debug_struct("MemoryStore")
            .field("payments", &records.payments.len())
            .field("claims", &records.claims.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::price::Amount;
    use crate::scheme::Intent;

    const TTL: Duration = Duration::from_secs(60);
    const PRINT: Fingerprint = Fingerprint([1; 32]);

    fn key(n: u8) -> PaymentKey {
        PaymentKey::derive(&[b"test", &[n]])
    }

    fn settled() -> Arc<SettledPayment> {
        Arc::new(SettledPayment {
            paid: Paid {
                payer: "GPAYER".into(),
                amount: Amount::from_atomic(5).unwrap(),
                asset: "CASSET".into(),
                intent: Intent::X402_EXACT,
                reference: Some("abc".into()),
            },
            receipt: Receipt {
                reference: "abc".into(),
                headers: Vec::new(),
            },
        })
    }

    #[test]
    fn keys_are_length_prefixed() {
        assert_ne!(
            PaymentKey::derive(&[b"ab", b"c"]),
            PaymentKey::derive(&[b"a", b"bc"])
        );
        assert_eq!(PaymentKey::derive(&[b"a"]), PaymentKey::derive(&[b"a"]));
    }

    #[tokio::test]
    async fn a_reserved_payment_is_busy_until_released() {
        let store = MemoryStore::new();
        assert_eq!(
            store.reserve(key(1), PRINT, TTL).await.unwrap(),
            Reservation::New
        );
        assert_eq!(
            store.reserve(key(1), PRINT, TTL).await.unwrap(),
            Reservation::Busy
        );
        assert_eq!(
            store.reserve(key(2), PRINT, TTL).await.unwrap(),
            Reservation::New
        );
        store.release(key(1)).await.unwrap();
        assert_eq!(
            store.reserve(key(1), PRINT, TTL).await.unwrap(),
            Reservation::New
        );
    }

    #[tokio::test]
    async fn settling_and_unknown_are_pending_and_survive_release() {
        let store = MemoryStore::new();
        store.reserve(key(1), PRINT, TTL).await.unwrap();
        assert!(
            store
                .transition(key(1), StateKind::Reserved, PaymentState::Settling)
                .await
                .unwrap()
        );
        store.release(key(1)).await.unwrap();
        assert_eq!(
            store.reserve(key(1), PRINT, TTL).await.unwrap(),
            Reservation::Pending
        );
        assert!(
            store
                .transition(key(1), StateKind::Settling, PaymentState::Unknown)
                .await
                .unwrap()
        );
        assert_eq!(
            store.reserve(key(1), PRINT, TTL).await.unwrap(),
            Reservation::Pending
        );
    }

    #[tokio::test]
    async fn transition_is_compare_and_set() {
        let store = MemoryStore::new();
        assert!(
            !store
                .transition(key(1), StateKind::Reserved, PaymentState::Settling)
                .await
                .unwrap()
        );
        store.reserve(key(1), PRINT, TTL).await.unwrap();
        assert!(
            !store
                .transition(key(1), StateKind::Executing, PaymentState::Settling)
                .await
                .unwrap()
        );
        assert_eq!(
            store.record(key(1)).await.unwrap().map(|r| r.state),
            Some(PaymentState::Reserved)
        );
    }

    #[tokio::test]
    async fn settled_payments_resume_once_and_fall_back_on_release() {
        let store = MemoryStore::new();
        store.reserve(key(1), PRINT, TTL).await.unwrap();
        store
            .transition(
                key(1),
                StateKind::Reserved,
                PaymentState::Settled(settled()),
            )
            .await
            .unwrap();
        assert_eq!(
            store.reserve(key(1), PRINT, TTL).await.unwrap(),
            Reservation::Resume(settled())
        );
        // The resumer owns it now: a concurrent retry is busy.
        assert_eq!(
            store.reserve(key(1), PRINT, TTL).await.unwrap(),
            Reservation::Busy
        );
        // Dropped without finishing: the settlement is kept, not forgotten.
        store.release(key(1)).await.unwrap();
        assert_eq!(
            store.record(key(1)).await.unwrap().map(|r| r.state),
            Some(PaymentState::Settled(settled()))
        );
    }

    #[tokio::test]
    async fn completed_payments_replay_and_failed_ones_can_be_retried() {
        let store = MemoryStore::new();
        store.reserve(key(1), PRINT, TTL).await.unwrap();
        let completed = Arc::new(CompletedPayment {
            settled: settled(),
            response: Some(RecordedResponse {
                status: StatusCode::OK,
                headers: HeaderMap::new(),
                body: Bytes::from_static(b"done"),
            }),
        });
        store
            .transition(
                key(1),
                StateKind::Reserved,
                PaymentState::Completed(completed.clone()),
            )
            .await
            .unwrap();
        assert_eq!(
            store.reserve(key(1), PRINT, TTL).await.unwrap(),
            Reservation::Replay(completed)
        );

        store.reserve(key(2), PRINT, TTL).await.unwrap();
        store
            .transition(key(2), StateKind::Reserved, PaymentState::Failed)
            .await
            .unwrap();
        assert_eq!(
            store.reserve(key(2), PRINT, TTL).await.unwrap(),
            Reservation::New
        );
    }

    #[tokio::test]
    async fn records_and_claims_expire() {
        let store = MemoryStore::new();
        let short = Duration::from_millis(20);
        store.reserve(key(1), PRINT, short).await.unwrap();
        assert!(store.claim(b"challenge", short).await.unwrap());
        assert!(!store.claim(b"challenge", short).await.unwrap());
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(
            store.reserve(key(1), PRINT, TTL).await.unwrap(),
            Reservation::New
        );
        assert!(store.claim(b"challenge", TTL).await.unwrap());
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
}

#[cfg(test)]
mod fingerprint_tests {
    use super::*;

    #[tokio::test]
    async fn a_record_answers_only_the_credential_that_made_it() {
        let store = MemoryStore::new();
        let key = PaymentKey::derive(&[b"payment"]);
        let (mine, forged) = (Fingerprint::of(b"signed"), Fingerprint::of(b"forged"));
        let ttl = Duration::from_secs(60);
        assert_eq!(
            store.reserve(key, mine, ttl).await.unwrap(),
            Reservation::New
        );
        assert_eq!(
            store.reserve(key, forged, ttl).await.unwrap(),
            Reservation::Mismatch
        );
        store
            .transition(key, StateKind::Reserved, PaymentState::Failed)
            .await
            .unwrap();
        // A failed payment is open to any credential again.
        assert_eq!(
            store.reserve(key, forged, ttl).await.unwrap(),
            Reservation::New
        );
        assert_eq!(
            store.reserve(key, mine, ttl).await.unwrap(),
            Reservation::Mismatch
        );
    }
}
