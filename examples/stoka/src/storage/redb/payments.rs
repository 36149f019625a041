//! What the payment layers keep, in the same redb file: payment records and claims (a
//! [`PaymentBackend`]) and channel vouchers (a [`ChannelStore`]).
//!
//! Payment records and claims expire by the system clock (they follow the ledger's time, not
//! an injected one); each has an expiry index that [`sweep`] range-scans. Channel states are
//! [`ChannelState::to_record`] records and never expire. Every write commits durably before it
//! returns.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableTable, TableDefinition, WriteTransaction};
use tower_paywall::BoxFuture;
use tower_paywall::store::{
    ChannelId, ChannelState, ChannelStore, PaymentBackend, PaymentKey, RECORD_TAG_LEN, RecordWrite,
    StoreError,
};

/// `payment key → (expires_at, encoded record)`.
pub(super) const PAYMENTS: TableDefinition<&[u8; 32], (u64, &[u8])> =
    TableDefinition::new("payments");
/// `(expires_at, payment key) → ()`.
pub(super) const PAYMENT_EXPIRY: TableDefinition<(u64, &[u8; 32]), ()> =
    TableDefinition::new("payment_expiry");
/// `claim id → expires_at`.
pub(super) const CLAIMS: TableDefinition<&[u8], u64> = TableDefinition::new("payment_claims");
/// `(expires_at, claim id) → ()`.
pub(super) const CLAIM_EXPIRY: TableDefinition<(u64, &[u8]), ()> =
    TableDefinition::new("payment_claim_expiry");
/// `payment key → ()`: the records whose settlement is in flight or of unknown outcome, for
/// the background reconciler.
pub(super) const PENDING_PAYMENTS: TableDefinition<&[u8; 32], ()> =
    TableDefinition::new("pending_payments");
/// `channel id → state record`.
pub(super) const CHANNELS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("channels");

/// Payment records and claims in a redb file.
#[derive(Clone)]
pub(super) struct RedbPayments(pub(super) Arc<Database>);

/// Channel states in a redb file.
#[derive(Clone)]
pub(super) struct RedbChannels(pub(super) Arc<Database>);

fn unavailable(error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

/// The system clock, in unix milliseconds.
fn system_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

fn later(now: u64, ttl: Duration) -> u64 {
    now.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
}

/// Runs `work` on the blocking pool.
fn blocking<'a, T: Send + 'static>(
    db: &Arc<Database>,
    work: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
) -> BoxFuture<'a, Result<T, StoreError>> {
    super::on_blocking_pool(db, unavailable, work)
}

fn write_txn(db: &Database) -> Result<WriteTransaction, StoreError> {
    super::durable_write(db).map_err(unavailable)
}

impl PaymentBackend for RedbPayments {
    fn load(&self, key: PaymentKey) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>> {
        blocking(&self.0, move |db| {
            use redb::ReadableDatabase;
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(PAYMENTS).map_err(unavailable)?;
            let Some(row) = table.get(&key.0).map_err(unavailable)? else {
                return Ok(None);
            };
            let (expires_at, value) = row.value();
            Ok((expires_at > system_now()).then(|| value.to_vec()))
        })
    }

    fn swap<'a>(
        &'a self,
        key: PaymentKey,
        expected: Option<&'a [u8]>,
        write: RecordWrite<'a>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let expected = expected.map(tag);
        let (write, pending) = match write {
            RecordWrite::Put {
                value,
                ttl,
                pending,
            } => (Some((value.to_vec(), ttl)), pending),
            RecordWrite::Remove => (None, false),
        };
        blocking(&self.0, move |db| {
            let now = system_now();
            let txn = write_txn(db)?;
            {
                let mut payments = txn.open_table(PAYMENTS).map_err(unavailable)?;
                let mut expiry = txn.open_table(PAYMENT_EXPIRY).map_err(unavailable)?;
                let mut listed = txn.open_table(PENDING_PAYMENTS).map_err(unavailable)?;
                let current = payments
                    .get(&key.0)
                    .map_err(unavailable)?
                    .map(|row| {
                        let (expires_at, value) = row.value();
                        (expires_at, tag(value))
                    })
                    .filter(|(expires_at, _)| *expires_at > now);
                if current.as_ref().map(|(_, tag)| tag) != expected.as_ref() {
                    return Ok(false);
                }
                // An expired record under the key goes too.
                if let Some(old) = payments.remove(&key.0).map_err(unavailable)? {
                    expiry
                        .remove((old.value().0, &key.0))
                        .map_err(unavailable)?;
                }
                if let Some((value, ttl)) = write {
                    let expires_at = match (ttl, current) {
                        (Some(ttl), _) => later(now, ttl),
                        (None, Some((expires_at, _))) => expires_at,
                        (None, None) => {
                            return Err(unavailable("a new payment record needs a lifetime"));
                        }
                    };
                    payments
                        .insert(&key.0, (expires_at, value.as_slice()))
                        .map_err(unavailable)?;
                    expiry
                        .insert((expires_at, &key.0), ())
                        .map_err(unavailable)?;
                }
                // Listed in the same transaction as the record is written.
                if pending {
                    listed.insert(&key.0, ()).map_err(unavailable)?;
                } else {
                    listed.remove(&key.0).map_err(unavailable)?;
                }
            }
            txn.commit().map_err(unavailable)?;
            Ok(true)
        })
    }

    fn pending(&self, limit: usize) -> BoxFuture<'_, Result<Vec<PaymentKey>, StoreError>> {
        blocking(&self.0, move |db| {
            use redb::ReadableDatabase;
            let now = system_now();
            let txn = db.begin_read().map_err(unavailable)?;
            let listed = txn.open_table(PENDING_PAYMENTS).map_err(unavailable)?;
            let payments = txn.open_table(PAYMENTS).map_err(unavailable)?;
            let mut keys = Vec::new();
            for entry in listed.iter().map_err(unavailable)? {
                if keys.len() >= limit {
                    break;
                }
                let (key, _) = entry.map_err(unavailable)?;
                let key = *key.value();
                // An expired record the sweeper has not removed yet is not pending any more.
                let live = payments
                    .get(&key)
                    .map_err(unavailable)?
                    .is_some_and(|row| row.value().0 > now);
                if live {
                    keys.push(PaymentKey(key));
                }
            }
            Ok(keys)
        })
    }

    fn claim<'a>(&'a self, id: &'a [u8], ttl: Duration) -> BoxFuture<'a, Result<bool, StoreError>> {
        let id = id.to_vec();
        blocking(&self.0, move |db| {
            let now = system_now();
            let txn = write_txn(db)?;
            {
                let mut claims = txn.open_table(CLAIMS).map_err(unavailable)?;
                let mut expiry = txn.open_table(CLAIM_EXPIRY).map_err(unavailable)?;
                let held = claims
                    .get(id.as_slice())
                    .map_err(unavailable)?
                    .map(|row| row.value());
                if held.is_some_and(|expires_at| expires_at > now) {
                    return Ok(false);
                }
                if let Some(old) = held {
                    expiry.remove((old, id.as_slice())).map_err(unavailable)?;
                }
                let expires_at = later(now, ttl);
                claims
                    .insert(id.as_slice(), expires_at)
                    .map_err(unavailable)?;
                expiry
                    .insert((expires_at, id.as_slice()), ())
                    .map_err(unavailable)?;
            }
            txn.commit().map_err(unavailable)?;
            Ok(true)
        })
    }
}

/// The part of an encoded record that identifies it (the whole of anything shorter).
fn tag(value: &[u8]) -> Vec<u8> {
    value[..value.len().min(RECORD_TAG_LEN)].to_vec()
}

/// Removes up to `limit` payment records and up to `limit` claims expired by the system clock.
pub(super) fn sweep(txn: &WriteTransaction, limit: usize) -> Result<(), redb::Error> {
    let now = system_now();
    let due: Vec<(u64, [u8; 32])> = {
        let expiry = txn.open_table(PAYMENT_EXPIRY)?;
        let mut due = Vec::new();
        for entry in expiry
            .range((0, &[0; 32])..(now.saturating_add(1), &[0; 32]))?
            .take(limit)
        {
            let (key, _) = entry?;
            let (expires_at, key) = key.value();
            due.push((expires_at, *key));
        }
        due
    };
    {
        let mut payments = txn.open_table(PAYMENTS)?;
        let mut expiry = txn.open_table(PAYMENT_EXPIRY)?;
        let mut listed = txn.open_table(PENDING_PAYMENTS)?;
        for (expires_at, key) in &due {
            payments.remove(key)?;
            expiry.remove((*expires_at, key))?;
            listed.remove(key)?;
        }
    }
    let due: Vec<(u64, Vec<u8>)> = {
        let expiry = txn.open_table(CLAIM_EXPIRY)?;
        let mut due = Vec::new();
        for entry in expiry
            .range((0, [].as_slice())..(now.saturating_add(1), [].as_slice()))?
            .take(limit)
        {
            let (key, _) = entry?;
            let (expires_at, id) = key.value();
            due.push((expires_at, id.to_vec()));
        }
        due
    };
    let mut claims = txn.open_table(CLAIMS)?;
    let mut expiry = txn.open_table(CLAIM_EXPIRY)?;
    for (expires_at, id) in &due {
        claims.remove(id.as_slice())?;
        expiry.remove((*expires_at, id.as_slice()))?;
    }
    Ok(())
}

fn decode(channel: ChannelId, record: &[u8]) -> Result<ChannelState, StoreError> {
    match ChannelState::from_record(record) {
        Some((id, state)) if id == channel => Ok(state),
        _ => Err(unavailable(format!(
            "the stored state of {channel} is damaged"
        ))),
    }
}

impl ChannelStore for RedbChannels {
    fn load(&self, channel: ChannelId) -> BoxFuture<'_, Result<Option<ChannelState>, StoreError>> {
        blocking(&self.0, move |db| {
            use redb::ReadableDatabase;
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(CHANNELS).map_err(unavailable)?;
            let row = table.get(&channel.0).map_err(unavailable)?;
            row.map(|row| decode(channel, row.value())).transpose()
        })
    }

    fn compare_and_set(
        &self,
        channel: ChannelId,
        current: Option<ChannelState>,
        new: ChannelState,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        blocking(&self.0, move |db| {
            let txn = write_txn(db)?;
            {
                let mut table = txn.open_table(CHANNELS).map_err(unavailable)?;
                let stored = table
                    .get(&channel.0)
                    .map_err(unavailable)?
                    .map(|row| decode(channel, row.value()))
                    .transpose()?;
                if stored != current {
                    return Ok(false);
                }
                table
                    .insert(&channel.0, new.to_record(channel).as_slice())
                    .map_err(unavailable)?;
            }
            txn.commit().map_err(unavailable)?;
            Ok(true)
        })
    }

    fn channels(
        &self,
        after: Option<ChannelId>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(ChannelId, ChannelState)>, StoreError>> {
        blocking(&self.0, move |db| {
            use redb::ReadableDatabase;
            use std::ops::Bound;
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(CHANNELS).map_err(unavailable)?;
            // Keys are ids: the table's order is id order.
            let start = after.map(|after| after.0);
            let range = match &start {
                Some(after) => table.range::<&[u8; 32]>((Bound::Excluded(after), Bound::Unbounded)),
                None => table.range::<&[u8; 32]>(..),
            };
            let mut page = Vec::new();
            for entry in range.map_err(unavailable)?.take(limit) {
                let (id, record) = entry.map_err(unavailable)?;
                let channel = ChannelId(*id.value());
                page.push((channel, decode(channel, record.value())?));
            }
            Ok(page)
        })
    }
}
