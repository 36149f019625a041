//! The embedded default: one redb file.
//!
//! - Blobs are cut into chunks of [`CHUNK`] bytes (redb rounds a value up to a power of two;
//!   chunks keep the file near the data's size).
//! - Expiry has its own index, written in the same transaction as the blob; the sweeper
//!   range-scans it up to `now` and deletes both. Reads check the expiry too.
//! - Writes commit in two phases (the bodies are attacker-chosen bytes) and are durable when
//!   they return; the file is compacted when it is opened, when no transaction is live.
//! - redb is blocking: every operation runs on the blocking pool.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Blob, Put, PutMode, Storage, StorageError};
use tower_paywall::BoxFuture;

/// The largest chunk of a blob, in bytes.
const CHUNK: usize = 65_024;

/// `(owner, key) → (expires_at, size, chunks)`.
const BLOBS: TableDefinition<(&str, &str), (u64, u64, u32)> = TableDefinition::new("blobs");
/// `(owner, key, index) → bytes`.
const CHUNKS: TableDefinition<(&str, &str, u32), &[u8]> = TableDefinition::new("blob_chunks");
/// `(expires_at, owner, key) → ()`.
const EXPIRY: TableDefinition<(u64, &str, &str), ()> = TableDefinition::new("blob_expiry");

/// stoka's storage in one redb file.
#[derive(Clone)]
pub struct RedbStorage {
    db: Arc<Database>,
}

impl std::fmt::Debug for RedbStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStorage").finish_non_exhaustive()
    }
}

fn backend(error: impl std::fmt::Display) -> StorageError {
    StorageError::Backend(error.to_string())
}

impl RedbStorage {
    /// Opens (or creates) the file at `path`, compacts it, and makes sure its tables exist.
    ///
    /// # Errors
    ///
    /// [`StorageError::Backend`] when the file cannot be opened (or is in use by another
    /// process).
    pub fn open(path: impl AsRef<Path>) -> Result<RedbStorage, StorageError> {
        let mut db = Database::create(path).map_err(backend)?;
        db.compact().map_err(backend)?;
        let txn = db.begin_write().map_err(backend)?;
        txn.open_table(BLOBS).map_err(backend)?;
        txn.open_table(CHUNKS).map_err(backend)?;
        txn.open_table(EXPIRY).map_err(backend)?;
        txn.commit().map_err(backend)?;
        Ok(RedbStorage { db: Arc::new(db) })
    }

    /// Runs `work` on the blocking pool.
    fn blocking<'a, T: Send + 'static>(
        &'a self,
        work: impl FnOnce(&Database) -> Result<T, StorageError> + Send + 'static,
    ) -> BoxFuture<'a, Result<T, StorageError>> {
        let db = self.db.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || work(&db))
                .await
                .map_err(backend)?
        })
    }
}

/// A blob's row, if it is live at `now`.
fn live(
    table: &impl ReadableTable<(&'static str, &'static str), (u64, u64, u32)>,
    owner: &str,
    key: &str,
    now: u64,
) -> Result<Option<(u64, u64, u32)>, StorageError> {
    let row = table.get((owner, key)).map_err(backend)?;
    Ok(row
        .map(|row| row.value())
        .filter(|(expires_at, _, _)| *expires_at > now))
}

/// Removes a blob's row, chunks and expiry entry (inside a write transaction).
fn remove(txn: &redb::WriteTransaction, owner: &str, key: &str) -> Result<bool, StorageError> {
    let mut blobs = txn.open_table(BLOBS).map_err(backend)?;
    let Some((expires_at, _, chunks)) = blobs
        .remove((owner, key))
        .map_err(backend)?
        .map(|row| row.value())
    else {
        return Ok(false);
    };
    let mut bodies = txn.open_table(CHUNKS).map_err(backend)?;
    for index in 0..chunks {
        bodies.remove((owner, key, index)).map_err(backend)?;
    }
    txn.open_table(EXPIRY)
        .map_err(backend)?
        .remove((expires_at, owner, key))
        .map_err(backend)?;
    Ok(true)
}

fn write_txn(db: &Database) -> Result<redb::WriteTransaction, StorageError> {
    let mut txn = db.begin_write().map_err(backend)?;
    txn.set_two_phase_commit(true);
    Ok(txn)
}

impl Storage for RedbStorage {
    fn put_blob<'a>(
        &'a self,
        owner: &'a str,
        key: &'a str,
        body: &'a [u8],
        expires_at: u64,
        mode: PutMode,
        now: u64,
    ) -> BoxFuture<'a, Result<Put, StorageError>> {
        let (owner, key, body) = (owner.to_owned(), key.to_owned(), body.to_vec());
        self.blocking(move |db| {
            let txn = write_txn(db)?;
            let exists =
                live(&txn.open_table(BLOBS).map_err(backend)?, &owner, &key, now)?.is_some();
            let answer = match (mode, exists) {
                (PutMode::Create, true) => return Ok(Put::Exists),
                (PutMode::Replace, false) => return Ok(Put::NotFound),
                (PutMode::Create, false) => Put::Created,
                (PutMode::Replace, true) => Put::Replaced,
            };
            // An expired blob under the key goes too.
            remove(&txn, &owner, &key)?;
            let chunks = body.chunks(CHUNK);
            let count = u32::try_from(chunks.len()).map_err(backend)?;
            {
                let mut bodies = txn.open_table(CHUNKS).map_err(backend)?;
                for (index, chunk) in (0..).zip(chunks) {
                    bodies
                        .insert((owner.as_str(), key.as_str(), index), chunk)
                        .map_err(backend)?;
                }
                let size = body.len() as u64;
                txn.open_table(BLOBS)
                    .map_err(backend)?
                    .insert((owner.as_str(), key.as_str()), (expires_at, size, count))
                    .map_err(backend)?;
                txn.open_table(EXPIRY)
                    .map_err(backend)?
                    .insert((expires_at, owner.as_str(), key.as_str()), ())
                    .map_err(backend)?;
            }
            txn.commit().map_err(backend)?;
            Ok(answer)
        })
    }

    fn get_blob<'a>(
        &'a self,
        owner: &'a str,
        key: &'a str,
        now: u64,
    ) -> BoxFuture<'a, Result<Option<Blob>, StorageError>> {
        let (owner, key) = (owner.to_owned(), key.to_owned());
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let blobs = txn.open_table(BLOBS).map_err(backend)?;
            let Some((expires_at, size, chunks)) = live(&blobs, &owner, &key, now)? else {
                return Ok(None);
            };
            let bodies = txn.open_table(CHUNKS).map_err(backend)?;
            let mut body = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            for index in 0..chunks {
                let chunk = bodies
                    .get((owner.as_str(), key.as_str(), index))
                    .map_err(backend)?
                    .ok_or_else(|| backend("a blob chunk is missing"))?;
                body.extend_from_slice(chunk.value());
            }
            if body.len() as u64 != size {
                return Err(backend("a blob's chunks do not add up to its size"));
            }
            Ok(Some(Blob { body, expires_at }))
        })
    }

    fn blob_size<'a>(
        &'a self,
        owner: &'a str,
        key: &'a str,
        now: u64,
    ) -> BoxFuture<'a, Result<Option<u64>, StorageError>> {
        let (owner, key) = (owner.to_owned(), key.to_owned());
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let blobs = txn.open_table(BLOBS).map_err(backend)?;
            Ok(live(&blobs, &owner, &key, now)?.map(|(_, size, _)| size))
        })
    }

    fn delete_blob<'a>(
        &'a self,
        owner: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<bool, StorageError>> {
        let (owner, key) = (owner.to_owned(), key.to_owned());
        self.blocking(move |db| {
            let txn = write_txn(db)?;
            let existed = remove(&txn, &owner, &key)?;
            txn.commit().map_err(backend)?;
            Ok(existed)
        })
    }

    fn sweep_expired(&self, now: u64, limit: usize) -> BoxFuture<'_, Result<usize, StorageError>> {
        self.blocking(move |db| {
            let txn = write_txn(db)?;
            let due: Vec<(String, String)> = {
                let expiry = txn.open_table(EXPIRY).map_err(backend)?;
                // Everything that expired by `now` (`expires_at <= now`).
                let range = expiry
                    .range((0, "", "")..(now.saturating_add(1), "", ""))
                    .map_err(backend)?;
                let mut due = Vec::new();
                for entry in range.take(limit) {
                    let (key, _) = entry.map_err(backend)?;
                    let (_, owner, key) = key.value();
                    due.push((owner.to_owned(), key.to_owned()));
                }
                due
            };
            for (owner, key) in &due {
                remove(&txn, owner, key)?;
            }
            txn.commit().map_err(backend)?;
            Ok(due.len())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_the_storage_suite() {
        let dir = std::env::temp_dir().join(format!("stoka-redb-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stoka.redb");
        crate::storage::suite::run(&RedbStorage::open(&path).unwrap()).await;
        // Reopened (compacted), what was left is still there.
        let reopened = RedbStorage::open(&path).unwrap();
        crate::storage::suite::survivors(&reopened).await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
