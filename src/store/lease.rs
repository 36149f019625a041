//! Leases: named work that one holder does at a time among several nodes (closing a channel,
//! sending from a facilitator's account), with a deadline after which another holder takes the
//! work over (its holder died, or lost the network).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::StoreError;
use crate::BoxFuture;

/// Who holds a lease: one per process, or per component of one (random, never reused).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseHolder(pub [u8; 16]);

impl LeaseHolder {
    /// A holder no other process or earlier call uses: derived from the process, the time and
    /// a counter (uniqueness is what counts, not secrecy: a lease grants no authority).
    pub fn unique() -> LeaseHolder {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos());
        let digest = Sha256::new()
            .chain_update(b"tower-paywall lease holder")
            .chain_update(std::process::id().to_be_bytes())
            .chain_update(nanos.to_be_bytes())
            .chain_update(NEXT.fetch_add(1, Ordering::Relaxed).to_be_bytes())
            .finalize();
        let mut id = [0; 16];
        id.copy_from_slice(&digest[..16]);
        LeaseHolder(id)
    }
}

impl fmt::Debug for LeaseHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LeaseHolder({})", hex::encode(self.0))
    }
}

/// Named leases with a deadline: at most one holder of a name at a time.
///
/// A holder keeps a lease by acquiring it again before its deadline; a lease whose deadline
/// passed is free, whoever held it. Work done under a lease must be over (or harmless to do
/// twice) by the deadline: a lease is a promise about time, like the transaction validity
/// windows it guards.
pub trait Leases: Send + Sync + 'static {
    /// Takes `name` for `holder` until `ttl` from now when it is free or already `holder`'s
    /// (then its deadline moves). Returns whether `holder` holds it now.
    fn acquire<'a>(
        &'a self,
        name: &'a [u8],
        holder: LeaseHolder,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Frees `name` if `holder` holds it (and does nothing otherwise).
    fn release<'a>(
        &'a self,
        name: &'a [u8],
        holder: LeaseHolder,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
}

impl<T: Leases + ?Sized> Leases for Arc<T> {
    fn acquire<'a>(
        &'a self,
        name: &'a [u8],
        holder: LeaseHolder,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        (**self).acquire(name, holder, ttl)
    }
    fn release<'a>(
        &'a self,
        name: &'a [u8],
        holder: LeaseHolder,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        (**self).release(name, holder)
    }
}

/// Leases within one process: enough when one node does the work. Several nodes share
/// leases through a store they all reach (the `redis` feature's `RedisStore::leases`).
#[derive(Default)]
pub struct MemoryLeases {
    held: Mutex<HashMap<Vec<u8>, (LeaseHolder, Instant)>>,
}

impl MemoryLeases {
    /// No lease held.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Leases for MemoryLeases {
    fn acquire<'a>(
        &'a self,
        name: &'a [u8],
        holder: LeaseHolder,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let now = Instant::now();
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Expired leases are dropped as the map is used: it holds at most the live ones plus
        // those that ran out since the last acquire.
        held.retain(|_, (_, deadline)| *deadline > now);
        let free = held.get(name).is_none_or(|(owner, _)| *owner == holder);
        if free {
            let deadline = now.checked_add(ttl).unwrap_or(now);
            held.insert(name.to_vec(), (holder, deadline));
        }
        Box::pin(std::future::ready(Ok(free)))
    }

    fn release<'a>(
        &'a self,
        name: &'a [u8],
        holder: LeaseHolder,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if held.get(name).is_some_and(|(owner, _)| *owner == holder) {
            held.remove(name);
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

impl fmt::Debug for MemoryLeases {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let held = self
            .held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f.debug_struct("MemoryLeases")
            .field("held", &held.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_leases_pass_the_conformance_suite() {
        crate::store::conformance::leases(Arc::new(MemoryLeases::new())).await;
    }

    #[test]
    fn holders_are_unique() {
        let holders: std::collections::HashSet<_> =
            (0..1000).map(|_| LeaseHolder::unique()).collect();
        assert_eq!(holders.len(), 1000);
    }
}
