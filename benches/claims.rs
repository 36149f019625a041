//! Single-use claims with a time to live (one on every MPP `charge` settlement): `MemoryStore`,
//! whose claims live in a `moka` cache expiring each at its own time, next to the hand-written
//! map it replaced (a `HashMap` under a lock, swept of expired claims every 1024 writes), in
//! the same run.
//!
//! - `fresh`: a new id each time (a settlement's claim; the live claims pile up);
//! - `repeated`: the same id again (a replayed transaction hash, refused).
//!
//! `cargo bench --bench claims`

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use tower_paywall::{MemoryStore, PaymentStore};

const TTL: Duration = Duration::from_secs(600);

/// Each claim's expiry, and the writes since the last sweep.
type Claims = (HashMap<Box<[u8]>, Instant>, usize);

/// The claims as `MemoryStore` kept them before: a map under a lock, swept every 1024 writes.
#[derive(Default)]
struct HandWritten {
    claims: Mutex<Claims>,
}

impl HandWritten {
    fn claim(&self, id: &[u8], ttl: Duration) -> bool {
        let now = Instant::now();
        let mut guard = self.claims.lock().unwrap();
        let (claims, writes) = &mut *guard;
        if claims.get(id).is_some_and(|expires| *expires > now) {
            return false;
        }
        claims.insert(id.into(), now + ttl);
        *writes += 1;
        if *writes >= 1024 {
            *writes = 0;
            claims.retain(|_, expires| *expires > now);
        }
        true
    }
}

fn store_claim(store: &MemoryStore, id: &[u8]) -> bool {
    // MemoryStore answers with a ready future.
    let mut claimed = store.claim(id, TTL);
    match claimed
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(Ok(claimed)) => claimed,
        _ => unreachable!("MemoryStore answers at once"),
    }
}

fn claims(c: &mut Criterion) {
    let counter = AtomicU64::new(0);
    let next = || counter.fetch_add(1, Ordering::Relaxed).to_be_bytes();
    let mut group = c.benchmark_group("claims/fresh");
    let hand = HandWritten::default();
    group.bench_function("hand_written", |b| {
        b.iter(|| hand.claim(black_box(&next()), TTL))
    });
    let store = MemoryStore::new();
    group.bench_function("memory_store", |b| {
        b.iter(|| store_claim(&store, black_box(&next())))
    });
    group.finish();

    let mut group = c.benchmark_group("claims/repeated");
    let id = *b"a transaction hash of 32 bytes..";
    let hand = HandWritten::default();
    assert!(hand.claim(&id, TTL));
    group.bench_function("hand_written", |b| {
        b.iter(|| assert!(!hand.claim(black_box(&id), TTL)))
    });
    let store = MemoryStore::new();
    assert!(store_claim(&store, &id));
    group.bench_function("memory_store", |b| {
        b.iter(|| assert!(!store_claim(&store, black_box(&id))))
    });
    group.finish();
}

criterion_group!(benches, claims);
criterion_main!(benches);
