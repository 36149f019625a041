//! [`LedgerWatch`]: one poll of `getLatestLedger` per tick, shared by every transaction waiting
//! to be final, so that each is looked up once per new ledger instead of on a fixed schedule.
//!
//! A sender keeps its source account until its transaction is final, and the network takes one
//! transaction per account per ledger: each tick between a ledger's close and the sender
//! noticing it is time the account stands idle. Polling `getTransaction` on a fixed schedule
//! (200 ms, then longer) let an account carry one transaction every other ledger at 250 ms
//! ledgers; following the ledger lets it carry one per ledger, at the cost of one light call per
//! tick while anything waits. The tick follows the ledger's observed period (an eighth of it,
//! between 10 ms and 1 s): fast on a fast sandbox, gentle on a five-second network.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::rpc::helpers::{Pace, follow_transaction};
use super::rpc::{RpcError, SorobanRpc, TransactionHash, TransactionInfo};

/// Keeps `tick` for the next poller of `watch`.
fn keep_tick(watch: &Weak<LedgerWatch>, tick: Duration) {
    if let Some(watch) = watch.upgrade() {
        let millis = u64::try_from(tick.as_millis()).unwrap_or(u64::MAX);
        watch.tick_ms.store(millis, Ordering::Relaxed);
    }
}

/// Looks a transaction up once per new ledger.
struct NextLedger(watch::Receiver<u32>);

impl Pace for NextLedger {
    async fn next(&mut self, end: Instant) -> bool {
        // An error: the poller stopped (it never does while a receiver lives).
        matches!(
            tokio::time::timeout_at(end, self.0.changed()).await,
            Ok(Ok(()))
        )
    }
}

/// The tick before a ledger period is observed.
const FIRST_TICK: Duration = Duration::from_millis(50);
const MIN_TICK: Duration = Duration::from_millis(10);
const MAX_TICK: Duration = Duration::from_secs(1);

/// Follows the latest ledger while anything waits (see the [module docs](self)).
pub(crate) struct LedgerWatch {
    rpc: Arc<dyn SorobanRpc>,
    /// The latest ledger seen, while the poller runs.
    latest: Mutex<Option<watch::Receiver<u32>>>,
    /// The tick learned so far (milliseconds), kept for the next poller.
    tick_ms: AtomicU64,
}

impl LedgerWatch {
    pub(crate) fn new(rpc: Arc<dyn SorobanRpc>) -> Arc<LedgerWatch> {
        Arc::new(LedgerWatch {
            rpc,
            latest: Mutex::new(None),
            tick_ms: AtomicU64::new(FIRST_TICK.as_millis() as u64),
        })
    }

    /// A receiver of the latest ledger, starting the poller if none runs. The poller stops
    /// once no receiver is left.
    fn subscribe(self: &Arc<Self>) -> watch::Receiver<u32> {
        let mut latest = self
            .latest
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(receiver) = latest.as_ref()
            && receiver.has_changed().is_ok()
        {
            return receiver.clone();
        }
        let (sender, receiver) = watch::channel(0);
        *latest = Some(receiver.clone());
        let watch: Weak<Self> = Arc::downgrade(self);
        let mut tick = Duration::from_millis(self.tick_ms.load(Ordering::Relaxed));
        tokio::spawn(async move {
            let mut changed_at: Option<(u32, Instant)> = None;
            loop {
                // Waiters hold receivers; the one kept in `latest` is not a waiter.
                if sender.receiver_count() <= 1 {
                    if let Some(watch) = watch.upgrade() {
                        let mut latest = watch
                            .latest
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner());
                        if sender.receiver_count() <= 1 {
                            *latest = None;
                            return;
                        }
                    } else {
                        return;
                    }
                }
                let Some(rpc) = watch.upgrade().map(|watch| watch.rpc.clone()) else {
                    return;
                };
                if let Ok(ledger) = rpc.latest_ledger().await {
                    let now = Instant::now();
                    match changed_at {
                        Some((sequence, at)) if ledger.sequence > sequence => {
                            let per_ledger =
                                now.duration_since(at) / (ledger.sequence - sequence).max(1);
                            tick = (per_ledger / 8).clamp(MIN_TICK, MAX_TICK);
                            keep_tick(&watch, tick);
                            changed_at = Some((ledger.sequence, now));
                        }
                        Some(_) => {}
                        None => changed_at = Some((ledger.sequence, now)),
                    }
                    sender.send_if_modified(|seen| {
                        let newer = ledger.sequence > *seen;
                        if newer {
                            *seen = ledger.sequence;
                        }
                        newer
                    });
                }
                tokio::time::sleep(tick).await;
            }
        });
        receiver
    }

    /// Looks `hash` up once per new ledger until it is final, or `deadline`
    /// has passed.
    ///
    /// # Errors
    ///
    /// As [`wait_for_transaction`](super::rpc::wait_for_transaction): [`RpcError::NotFinal`]
    /// at the deadline (the last error instead, if the last lookup failed); at once, any error
    /// that is not unavailability.
    pub(crate) async fn wait_final(
        self: &Arc<Self>,
        hash: &TransactionHash,
        deadline: Duration,
    ) -> Result<TransactionInfo, RpcError> {
        let mut ledgers = self.subscribe();
        ledgers.mark_unchanged();
        let end = Instant::now() + deadline;
        follow_transaction(&*self.rpc, hash, end, NextLedger(ledgers)).await
    }
}
