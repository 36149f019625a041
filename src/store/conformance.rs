//! The behaviour every store must have, as async checks that panic on the first difference:
//! run them in the tests of a new [`PaymentStore`] or [`ChannelStore`] (or a new
//! [`PaymentBackend`](super::PaymentBackend) under a [`BackedStore`](super::BackedStore)).
//!
//! ```
//! use std::sync::Arc;
//! use tower_paywall::store::{conformance, MemoryChannelStore, MemoryStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! conformance::payment_store(Arc::new(MemoryStore::new())).await;
//! conformance::channel_store(Arc::new(MemoryChannelStore::new())).await;
//! # }
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use super::{
    ChannelId, ChannelPhase, ChannelState, ChannelStore, CompletedPayment, Fingerprint,
    LeaseHolder, Leases, PaymentKey, PaymentState, PaymentStore, PendingSettlement,
    RecordedResponse, Reservation, SettledPayment, StateKind,
};
use crate::layer::Paid;
use crate::scheme::{Intent, Receipt};
use crate::stellar::Amount;

const TTL: Duration = Duration::from_secs(60);
const PRINT: Fingerprint = Fingerprint([1; 32]);

/// Checks the payment state machine of the [store docs](super), claims, expiry and that
/// concurrent reservations of one payment admit exactly one. Every check uses keys of its own
/// run, so the store need not be empty, and several runs may share it.
///
/// # Panics
///
/// On the first behaviour that differs, or when the store fails.
pub async fn payment_store(store: Arc<dyn PaymentStore>) {
    let run = run();
    a_reserved_payment_is_busy_until_released(&*store, run).await;
    settling_and_unknown_are_pending_and_survive_release(&*store, run + 1).await;
    transition_is_compare_and_set(&*store, run + 2).await;
    settled_payments_resume_once_and_fall_back_on_release(&*store, run + 3).await;
    completed_payments_replay_and_failed_ones_can_be_retried(&*store, run + 4).await;
    records_and_claims_expire(&*store, run + 5).await;
    a_record_answers_only_the_credential_that_made_it(&*store, run + 6).await;
    concurrent_reservations_admit_exactly_one(std::slice::from_ref(&store), run + 7).await;
    pending_settlements_are_listed_while_pending(&*store, &*store, run + 8).await;
}

/// Checks two stores over one back end, as two nodes of a service see it: what one records,
/// the other answers from; of reservations racing on both, exactly one wins; a claim made on
/// one holds on the other.
///
/// # Panics
///
/// On the first behaviour that differs, or when a store fails.
pub async fn shared_payment_store(one: Arc<dyn PaymentStore>, other: Arc<dyn PaymentStore>) {
    let run = run();
    let settled = Arc::new(settled());
    one.reserve(key(run, 1), PRINT, TTL).await.unwrap();
    assert!(
        one.transition(
            key(run, 1),
            StateKind::Reserved,
            PaymentState::Executing(Some(settled.clone()))
        )
        .await
        .unwrap()
    );
    // The node that settled died before answering: the other one waits out its hold...
    assert_eq!(
        other.reserve(key(run, 1), PRINT, TTL).await.unwrap(),
        Reservation::Busy
    );
    one.release(key(run, 1)).await.unwrap();
    // ...then resumes it, without settling again.
    assert_eq!(
        other.reserve(key(run, 1), PRINT, TTL).await.unwrap(),
        Reservation::Resume(settled)
    );
    assert!(one.claim(&claim(run), TTL).await.unwrap());
    assert!(!other.claim(&claim(run), TTL).await.unwrap());
    // A settlement one node left pending is listed for the other's reconciler.
    pending_settlements_are_listed_while_pending(&*one, &*other, run + 2).await;
    concurrent_reservations_admit_exactly_one(&[one, other], run + 1).await;
}

/// `Settling` and `Unknown` payments with evidence, written on `one`, are listed by `other`'s
/// [`PaymentStore::pending`]; reserved, failed, settled and evidence-less ones are not.
async fn pending_settlements_are_listed_while_pending(
    one: &dyn PaymentStore,
    other: &dyn PaymentStore,
    run: u64,
) {
    async fn listed_key(store: &dyn PaymentStore, key: PaymentKey) -> bool {
        store.pending(usize::MAX).await.unwrap().contains(&key)
    }
    let listed = |store| listed_key(store, key(run, 1));
    one.reserve(key(run, 1), PRINT, TTL).await.unwrap();
    assert!(!listed(other).await, "reserved");
    let states = [
        (StateKind::Reserved, PaymentState::Settling(pending())),
        (StateKind::Settling, PaymentState::Unknown(pending())),
    ];
    for (from, to) in states {
        assert!(one.transition(key(run, 1), from, to).await.unwrap());
        assert!(listed(other).await, "{from:?}");
    }
    assert!(
        one.transition(key(run, 1), StateKind::Unknown, PaymentState::Failed)
            .await
            .unwrap()
    );
    assert!(!listed(other).await, "failed");
    assert!(!listed(one).await, "failed");
    // Settled: unlisted too.
    let settled = Arc::new(settled());
    one.reserve(key(run, 2), PRINT, TTL).await.unwrap();
    for (from, to) in [
        (StateKind::Reserved, PaymentState::Settling(pending())),
        (StateKind::Settling, PaymentState::Executing(Some(settled))),
    ] {
        assert!(one.transition(key(run, 2), from, to).await.unwrap());
    }
    assert!(!listed_key(other, key(run, 2)).await, "settled");
    // Pending without evidence to reconcile by: not listed.
    let mut blind = (*pending()).clone();
    blind.evidence = Bytes::new();
    one.reserve(key(run, 3), PRINT, TTL).await.unwrap();
    let blind = PaymentState::Settling(Arc::new(blind));
    assert!(
        one.transition(key(run, 3), StateKind::Reserved, blind)
            .await
            .unwrap()
    );
    assert!(!listed_key(other, key(run, 3)).await, "no evidence");
    // A limit is a limit.
    assert!(other.pending(0).await.unwrap().is_empty());
}

/// Checks compare-and-set on channel states (the channels with ids `[1; 32]`, `[2; 32]`,
/// `[3; 32]`, `[0x80; 32]` and `[0xfe; 32]`), that racing increments on one channel are never
/// both credited, and the listing of channels page by page.
///
/// # Panics
///
/// On the first behaviour that differs, when the store fails, or when it is not empty.
pub async fn channel_store(store: Arc<dyn ChannelStore>) {
    compare_and_set_is_atomic(store.clone()).await;
    racing_increments_are_never_lost(store.clone()).await;
    channels_are_listed_in_pages(&*store).await;
}

/// Checks [`Leases`]: one holder at a time, renewal by the holder, release only by the holder,
/// takeover after the deadline, and that of holders racing for one lease exactly one wins.
/// Every check uses names of its own run, so several runs may share the leases.
///
/// # Panics
///
/// On the first behaviour that differs, or when the leases fail.
pub async fn leases(leases: Arc<dyn Leases>) {
    let run = run();
    let name = |n: u8| [b"conformance:".as_slice(), &run.to_be_bytes(), &[n]].concat();
    let (one, other) = (LeaseHolder::unique(), LeaseHolder::unique());
    let long = Duration::from_secs(60);

    // One holder at a time; the holder renews.
    let first = name(0);
    assert!(leases.acquire(&first, one, long).await.unwrap());
    assert!(!leases.acquire(&first, other, long).await.unwrap());
    assert!(leases.acquire(&first, one, long).await.unwrap());
    // Only the holder releases.
    leases.release(&first, other).await.unwrap();
    assert!(!leases.acquire(&first, other, long).await.unwrap());
    leases.release(&first, one).await.unwrap();
    assert!(leases.acquire(&first, other, long).await.unwrap());
    // Names are independent.
    assert!(leases.acquire(&name(1), one, long).await.unwrap());

    // A lease whose deadline passed is taken over, and its old holder's release then does
    // nothing.
    let short = name(2);
    assert!(
        leases
            .acquire(&short, one, Duration::from_millis(200))
            .await
            .unwrap()
    );
    assert!(!leases.acquire(&short, other, long).await.unwrap());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(leases.acquire(&short, other, long).await.unwrap());
    leases.release(&short, one).await.unwrap();
    assert!(!leases.acquire(&short, one, long).await.unwrap());

    // Of holders racing for one lease, exactly one wins.
    let raced = name(3);
    let racers: Vec<_> = (0..16)
        .map(|_| {
            let (leases, raced) = (leases.clone(), raced.clone());
            tokio::spawn(async move {
                leases
                    .acquire(&raced, LeaseHolder::unique(), long)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut won = 0;
    for racer in racers {
        won += usize::from(racer.await.unwrap());
    }
    assert_eq!(won, 1, "holders racing for one lease");

    for n in 0..4 {
        leases.release(&name(n), one).await.unwrap();
        leases.release(&name(n), other).await.unwrap();
    }
}

/// A number no other run in this process (nor, by its clock, an earlier process) starts from.
fn run() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64);
    (nanos & !0xffff_ffff) | (NEXT.fetch_add(1 << 8, Ordering::Relaxed) & 0xffff_ffff)
}

fn key(run: u64, n: u8) -> PaymentKey {
    PaymentKey::derive(&[b"conformance", &run.to_be_bytes(), &[n]])
}

fn claim(run: u64) -> Vec<u8> {
    [b"conformance:".as_slice(), &run.to_be_bytes()].concat()
}

/// A settlement in flight (what was paid, when, and some evidence), for a store's own tests.
pub fn pending() -> Arc<PendingSettlement> {
    let mut paid = settled().paid;
    paid.reference = None;
    Arc::new(PendingSettlement {
        paid,
        started: 1_800_000_000,
        evidence: Bytes::from_static(b"evidence"),
    })
}

pub(crate) fn settled() -> SettledPayment {
    SettledPayment {
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
    }
}

async fn concurrent_reservations_admit_exactly_one(stores: &[Arc<dyn PaymentStore>], run: u64) {
    let tasks: Vec<_> = (0..8)
        .map(|n| {
            let store = stores[n % stores.len()].clone();
            tokio::spawn(async move { store.reserve(key(run, 9), PRINT, TTL).await.unwrap() })
        })
        .collect();
    let mut new = 0;
    for task in tasks {
        match task.await.unwrap() {
            Reservation::New => new += 1,
            other => assert_eq!(other, Reservation::Busy),
        }
    }
    assert_eq!(new, 1);
}

async fn a_reserved_payment_is_busy_until_released(store: &dyn PaymentStore, run: u64) {
    assert_eq!(
        store.reserve(key(run, 1), PRINT, TTL).await.unwrap(),
        Reservation::New
    );
    assert_eq!(
        store.reserve(key(run, 1), PRINT, TTL).await.unwrap(),
        Reservation::Busy
    );
    assert_eq!(
        store.reserve(key(run, 2), PRINT, TTL).await.unwrap(),
        Reservation::New
    );
    store.release(key(run, 1)).await.unwrap();
    assert_eq!(
        store.reserve(key(run, 1), PRINT, TTL).await.unwrap(),
        Reservation::New
    );
}

async fn settling_and_unknown_are_pending_and_survive_release(store: &dyn PaymentStore, run: u64) {
    store.reserve(key(run, 1), PRINT, TTL).await.unwrap();
    assert!(
        store
            .transition(
                key(run, 1),
                StateKind::Reserved,
                PaymentState::Settling(pending())
            )
            .await
            .unwrap()
    );
    store.release(key(run, 1)).await.unwrap();
    // The pending settlement comes back whole, evidence and all.
    assert_eq!(
        store.reserve(key(run, 1), PRINT, TTL).await.unwrap(),
        Reservation::Pending(pending())
    );
    assert!(
        store
            .transition(
                key(run, 1),
                StateKind::Settling,
                PaymentState::Unknown(pending())
            )
            .await
            .unwrap()
    );
    assert_eq!(
        store.reserve(key(run, 1), PRINT, TTL).await.unwrap(),
        Reservation::Pending(pending())
    );
    assert_eq!(
        store.record(key(run, 1)).await.unwrap().map(|r| r.state),
        Some(PaymentState::Unknown(pending()))
    );
}

async fn transition_is_compare_and_set(store: &dyn PaymentStore, run: u64) {
    assert!(
        !store
            .transition(
                key(run, 1),
                StateKind::Reserved,
                PaymentState::Settling(pending())
            )
            .await
            .unwrap()
    );
    store.reserve(key(run, 1), PRINT, TTL).await.unwrap();
    assert!(
        !store
            .transition(
                key(run, 1),
                StateKind::Executing,
                PaymentState::Settling(pending())
            )
            .await
            .unwrap()
    );
    assert_eq!(
        store.record(key(run, 1)).await.unwrap().map(|r| r.state),
        Some(PaymentState::Reserved)
    );
}

async fn settled_payments_resume_once_and_fall_back_on_release(store: &dyn PaymentStore, run: u64) {
    store.reserve(key(run, 1), PRINT, TTL).await.unwrap();
    store
        .transition(
            key(run, 1),
            StateKind::Reserved,
            PaymentState::Settled(Arc::new(settled())),
        )
        .await
        .unwrap();
    assert_eq!(
        store.reserve(key(run, 1), PRINT, TTL).await.unwrap(),
        Reservation::Resume(Arc::new(settled()))
    );
    // The resumer owns it now: a concurrent retry is busy.
    assert_eq!(
        store.reserve(key(run, 1), PRINT, TTL).await.unwrap(),
        Reservation::Busy
    );
    // Dropped without finishing: the settlement is kept, not forgotten.
    store.release(key(run, 1)).await.unwrap();
    assert_eq!(
        store.record(key(run, 1)).await.unwrap().map(|r| r.state),
        Some(PaymentState::Settled(Arc::new(settled())))
    );
}

async fn completed_payments_replay_and_failed_ones_can_be_retried(
    store: &dyn PaymentStore,
    run: u64,
) {
    store.reserve(key(run, 1), PRINT, TTL).await.unwrap();
    let completed = Arc::new(CompletedPayment {
        settled: Arc::new(settled()),
        response: Some(RecordedResponse {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from_static(b"done"),
            trailers: None,
        }),
    });
    store
        .transition(
            key(run, 1),
            StateKind::Reserved,
            PaymentState::Completed(completed.clone()),
        )
        .await
        .unwrap();
    assert_eq!(
        store.reserve(key(run, 1), PRINT, TTL).await.unwrap(),
        Reservation::Replay(completed)
    );

    store.reserve(key(run, 2), PRINT, TTL).await.unwrap();
    store
        .transition(key(run, 2), StateKind::Reserved, PaymentState::Failed)
        .await
        .unwrap();
    assert_eq!(
        store.reserve(key(run, 2), PRINT, TTL).await.unwrap(),
        Reservation::New
    );
}

async fn records_and_claims_expire(store: &dyn PaymentStore, run: u64) {
    let short = Duration::from_millis(20);
    store.reserve(key(run, 1), PRINT, short).await.unwrap();
    assert!(store.claim(&claim(run), short).await.unwrap());
    assert!(!store.claim(&claim(run), short).await.unwrap());
    tokio::time::sleep(Duration::from_millis(40)).await;
    assert_eq!(
        store.reserve(key(run, 1), PRINT, TTL).await.unwrap(),
        Reservation::New
    );
    assert!(store.claim(&claim(run), TTL).await.unwrap());
}

async fn a_record_answers_only_the_credential_that_made_it(store: &dyn PaymentStore, run: u64) {
    let key = key(run, 3);
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

#[doc(hidden)]
pub fn voucher(cumulative: i128, byte: u8) -> ChannelState {
    ChannelState {
        cumulative,
        signature: Some([byte; 64]),
        unspent: 0,
        phase: ChannelPhase::Open,
    }
}

async fn compare_and_set_is_atomic(store: Arc<dyn ChannelStore>) {
    let a = ChannelId([1; 32]);
    let b = ChannelId([2; 32]);
    assert_eq!(store.load(a).await.unwrap(), None);
    // From nothing.
    assert!(
        !store
            .compare_and_set(a, Some(ChannelState::NEW), voucher(5, 1))
            .await
            .unwrap()
    );
    assert!(store.compare_and_set(a, None, voucher(5, 1)).await.unwrap());
    assert!(!store.compare_and_set(a, None, voucher(6, 2)).await.unwrap());
    // Only the exact current state is replaced.
    assert!(
        !store
            .compare_and_set(a, Some(voucher(5, 9)), voucher(7, 3))
            .await
            .unwrap()
    );
    assert!(
        store
            .compare_and_set(a, Some(voucher(5, 1)), voucher(7, 3))
            .await
            .unwrap()
    );
    assert_eq!(store.load(a).await.unwrap(), Some(voucher(7, 3)));
    // Credit paid ahead is part of the state: kept, and compared.
    let credited = ChannelState {
        unspent: 4,
        ..voucher(7, 3)
    };
    assert!(
        store
            .compare_and_set(a, Some(voucher(7, 3)), credited)
            .await
            .unwrap()
    );
    assert_eq!(store.load(a).await.unwrap(), Some(credited));
    assert!(
        !store
            .compare_and_set(a, Some(voucher(7, 3)), voucher(8, 3))
            .await
            .unwrap()
    );
    let closing = ChannelState {
        phase: ChannelPhase::Closing,
        ..credited
    };
    assert!(
        store
            .compare_and_set(a, Some(credited), closing)
            .await
            .unwrap()
    );
    assert_eq!(store.load(a).await.unwrap(), Some(closing));
    assert!(
        store
            .compare_and_set(a, Some(closing), voucher(7, 3))
            .await
            .unwrap()
    );
    // Channels are independent.
    assert_eq!(store.load(b).await.unwrap(), None);
    let closed = ChannelState {
        phase: ChannelPhase::Closed {
            transaction: Some([0xab; 32]),
        },
        ..voucher(i128::MAX, 4)
    };
    assert!(store.compare_and_set(b, None, closed).await.unwrap());
    assert_eq!(
        store.channels(None, usize::MAX).await.unwrap(),
        [(a, voucher(7, 3)), (b, closed)]
    );
}

/// The five channels of the suite, listed whole and in pages of every size.
async fn channels_are_listed_in_pages(store: &dyn ChannelStore) {
    // Far apart, so that a store spreading channels over partitions lists across them.
    for byte in [0xfe, 0x80] {
        assert!(
            store
                .compare_and_set(ChannelId([byte; 32]), None, voucher(1, byte))
                .await
                .unwrap()
        );
    }
    let all = store.channels(None, usize::MAX).await.unwrap();
    let ids: Vec<ChannelId> = all.iter().map(|(id, _)| *id).collect();
    let expected = [1, 2, 3, 0x80, 0xfe].map(|byte| ChannelId([byte; 32]));
    assert_eq!(ids, expected);
    for size in 1..=6 {
        let mut walked = Vec::new();
        let mut after = None;
        loop {
            let page = store.channels(after, size).await.unwrap();
            assert!(page.len() <= size, "a page of {size} holds {}", page.len());
            walked.extend_from_slice(&page);
            if page.len() < size {
                break;
            }
            after = page.last().map(|(id, _)| *id);
        }
        assert_eq!(walked, all, "pages of {size}");
    }
    assert_eq!(
        super::all_channels(store, 2).await.unwrap(),
        all,
        "all_channels"
    );
    assert_eq!(store.channels(None, 0).await.unwrap(), []);
    assert_eq!(
        store
            .channels(Some(ChannelId([0xfe; 32])), 10)
            .await
            .unwrap(),
        []
    );
    let between = store
        .channels(Some(ChannelId([0x50; 32])), 1)
        .await
        .unwrap();
    assert_eq!(between, [all[3]]);
}

/// Many tasks race to add 1 to one channel's cumulative: every success is one increment.
async fn racing_increments_are_never_lost(store: Arc<dyn ChannelStore>) {
    let channel = ChannelId([3; 32]);
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut credited = 0;
                for _ in 0..25 {
                    let current = store.load(channel).await.unwrap();
                    let next = current.unwrap_or(ChannelState::NEW).cumulative + 1;
                    if store
                        .compare_and_set(channel, current, voucher(next, task))
                        .await
                        .unwrap()
                    {
                        credited += 1;
                    }
                }
                credited
            })
        })
        .collect();
    let mut credited = 0;
    for task in tasks {
        credited += task.await.unwrap();
    }
    let last = store.load(channel).await.unwrap().unwrap();
    assert_eq!(last.cumulative, credited);
    assert!(credited > 0);
}
