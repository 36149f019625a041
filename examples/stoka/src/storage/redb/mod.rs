//! The embedded default: one redb file.
//!
//! - Blobs are cut into chunks of [`CHUNK`] bytes (redb rounds a value up to a power of two;
//!   chunks keep the file near the data's size).
//! - Expiry has its own index, written in the same transaction as the blob; the sweeper
//!   range-scans it up to `now` and deletes both. Reads check the expiry too.
//! - Writes commit in two phases (the bodies are attacker-chosen bytes) and are durable when
//!   they return; the file is compacted when it is opened, when no transaction is live.
//! - Queues follow research/storage.md §3.4: a message row, its body, a `ready` index ordered
//!   by `(mailbox, visible_at, seq)` that `pop` range-scans up to `now`, and an expiry index
//!   for the 4-day retention.
//! - Challenges have their own expiry index; taking one removes it in the same transaction.
//! - Payment records, claims and channel vouchers live in the same file (`payments`).
//! - redb is blocking: every operation runs on the blocking pool.

mod payments;

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::receipt::{self, Token};
use super::{
    Ack, Blob, Challenge, DeadLetter, Delivery, NewMessage, PopOptions, Put, PutMode, Storage,
    StorageError, Usage,
};
use tower_paywall::BoxFuture;
use tower_paywall::store::{ChannelStore, PaymentBackend};

/// The largest chunk of a blob, in bytes.
const CHUNK: usize = 65_024;

/// `(owner, key) → (expires_at, size, chunks)`.
const BLOBS: TableDefinition<(&str, &str), (u64, u64, u32)> = TableDefinition::new("blobs");
/// `(owner, key, index) → bytes`.
const CHUNKS: TableDefinition<(&str, &str, u32), &[u8]> = TableDefinition::new("blob_chunks");
/// `(expires_at, owner, key) → ()`.
const EXPIRY: TableDefinition<(u64, &str, &str), ()> = TableDefinition::new("blob_expiry");

/// `(to, topic, seq) → (sent_at, expires_at, visible_at, receive_count, token, dead, from)`.
const MESSAGES: TableDefinition<MessageKey, MessageValue> = TableDefinition::new("messages");
/// `(sent_at, expires_at, visible_at, receive_count, token, dead, from)`.
type MessageValue = (u64, u64, u64, u32, Token, bool, &'static str);
/// `(to, topic, seq)`.
type MessageKey = (&'static str, &'static str, u64);
/// `(to, topic, seq) → body`.
const MESSAGE_BODIES: TableDefinition<(&str, &str, u64), &[u8]> =
    TableDefinition::new("message_bodies");
/// `(to, topic, visible_at, seq) → ()`: the messages `pop` may deliver.
const READY: TableDefinition<(&str, &str, u64, u64), ()> = TableDefinition::new("message_ready");
/// `(to, topic, seq) → ()`: the dead letters.
const DEAD: TableDefinition<(&str, &str, u64), ()> = TableDefinition::new("message_dead");
/// `(expires_at, to, topic, seq) → ()`.
const MESSAGE_EXPIRY: TableDefinition<(u64, &str, &str, u64), ()> =
    TableDefinition::new("message_expiry");
/// `name → value`: the next message id.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// `(wallet, day) → (operations, bytes_in, bytes_out, charged_atomic)`.
const USAGE: TableDefinition<(&str, u32), (u64, u64, u64, u64)> = TableDefinition::new("usage");
/// `id → (audience, message, expires_at)`.
const CHALLENGES: TableDefinition<&str, (&str, &str, u64)> = TableDefinition::new("challenges");
/// `(expires_at, id) → ()`.
const CHALLENGE_EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("challenge_expiry");
/// `wallet → email`.
const PROFILES: TableDefinition<&str, &str> = TableDefinition::new("profiles");

/// The most index entries one `pop` looks at (expired and dead messages are cleared on the way).
const POP_SCAN: usize = 64;

/// A message row.
type MessageRow = (u64, u64, u64, u32, Token, bool, String);

/// stoka's storage in one redb file.
#[derive(Clone)]
pub struct RedbStorage {
    db: Arc<Database>,
    leases: Arc<tower_paywall::store::MemoryLeases>,
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
        txn.open_table(MESSAGES).map_err(backend)?;
        txn.open_table(MESSAGE_BODIES).map_err(backend)?;
        txn.open_table(READY).map_err(backend)?;
        txn.open_table(DEAD).map_err(backend)?;
        txn.open_table(MESSAGE_EXPIRY).map_err(backend)?;
        txn.open_table(META).map_err(backend)?;
        txn.open_table(USAGE).map_err(backend)?;
        txn.open_table(CHALLENGES).map_err(backend)?;
        txn.open_table(CHALLENGE_EXPIRY).map_err(backend)?;
        txn.open_table(PROFILES).map_err(backend)?;
        txn.open_table(payments::PAYMENTS).map_err(backend)?;
        txn.open_table(payments::PAYMENT_EXPIRY).map_err(backend)?;
        txn.open_table(payments::PENDING_PAYMENTS)
            .map_err(backend)?;
        txn.open_table(payments::CLAIMS).map_err(backend)?;
        txn.open_table(payments::CLAIM_EXPIRY).map_err(backend)?;
        txn.open_table(payments::CHANNELS).map_err(backend)?;
        txn.commit().map_err(backend)?;
        Ok(RedbStorage {
            db: Arc::new(db),
            leases: Arc::default(),
        })
    }

    /// Runs `work` on the blocking pool.
    fn blocking<'a, T: Send + 'static>(
        &'a self,
        work: impl FnOnce(&Database) -> Result<T, StorageError> + Send + 'static,
    ) -> BoxFuture<'a, Result<T, StorageError>> {
        on_blocking_pool(&self.db, backend, work)
    }
}

/// Runs `work` on `db` on the blocking pool (redb is blocking); a task that did not finish is
/// the error `failed` makes.
fn on_blocking_pool<'a, T: Send + 'static, E: Send + 'static>(
    db: &Arc<Database>,
    failed: fn(tokio::task::JoinError) -> E,
    work: impl FnOnce(&Database) -> Result<T, E> + Send + 'static,
) -> BoxFuture<'a, Result<T, E>> {
    let db = db.clone();
    Box::pin(async move {
        tokio::task::spawn_blocking(move || work(&db))
            .await
            .map_err(failed)?
    })
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

/// A message's row.
fn message(
    txn: &redb::WriteTransaction,
    to: &str,
    topic: &str,
    seq: u64,
) -> Result<Option<MessageRow>, StorageError> {
    let messages = txn.open_table(MESSAGES).map_err(backend)?;
    let row = messages.get((to, topic, seq)).map_err(backend)?;
    Ok(row.map(|row| {
        let (sent_at, expires_at, visible_at, count, token, dead, from) = row.value();
        (
            sent_at,
            expires_at,
            visible_at,
            count,
            token,
            dead,
            from.to_owned(),
        )
    }))
}

/// Removes a message and every index entry of it (inside a write transaction).
fn remove_message(
    txn: &redb::WriteTransaction,
    to: &str,
    topic: &str,
    seq: u64,
) -> Result<(), StorageError> {
    let Some((_, expires_at, visible_at, _, _, dead, _)) = message(txn, to, topic, seq)? else {
        return Ok(());
    };
    let key = (to, topic, seq);
    txn.open_table(MESSAGES)
        .map_err(backend)?
        .remove(key)
        .map_err(backend)?;
    txn.open_table(MESSAGE_BODIES)
        .map_err(backend)?
        .remove(key)
        .map_err(backend)?;
    if dead {
        txn.open_table(DEAD)
            .map_err(backend)?
            .remove(key)
            .map_err(backend)?;
    } else {
        txn.open_table(READY)
            .map_err(backend)?
            .remove((to, topic, visible_at, seq))
            .map_err(backend)?;
    }
    txn.open_table(MESSAGE_EXPIRY)
        .map_err(backend)?
        .remove((expires_at, to, topic, seq))
        .map_err(backend)?;
    Ok(())
}

/// Rewrites a message's row (its body and expiry entry stay).
fn write_message(
    txn: &redb::WriteTransaction,
    to: &str,
    topic: &str,
    seq: u64,
    row: &MessageRow,
) -> Result<(), StorageError> {
    let (sent_at, expires_at, visible_at, count, token, dead, from) = row;
    txn.open_table(MESSAGES)
        .map_err(backend)?
        .insert(
            (to, topic, seq),
            (
                *sent_at,
                *expires_at,
                *visible_at,
                *count,
                *token,
                *dead,
                from.as_str(),
            ),
        )
        .map_err(backend)?;
    Ok(())
}

fn read_body(
    table: &impl ReadableTable<(&'static str, &'static str, u64), &'static [u8]>,
    to: &str,
    topic: &str,
    seq: u64,
) -> Result<Vec<u8>, StorageError> {
    let body = table
        .get((to, topic, seq))
        .map_err(backend)?
        .ok_or_else(|| backend("a message body is missing"))?;
    Ok(body.value().to_vec())
}

fn write_txn(db: &Database) -> Result<redb::WriteTransaction, StorageError> {
    durable_write(db).map_err(backend)
}

/// A write transaction that commits in two phases: what it writes (blob bodies, recorded
/// answers) holds bytes a client chose.
fn durable_write(db: &Database) -> Result<redb::WriteTransaction, redb::TransactionError> {
    let mut txn = db.begin_write()?;
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

    fn push<'a>(
        &'a self,
        to: &'a str,
        topic: &'a str,
        message: NewMessage<'a>,
    ) -> BoxFuture<'a, Result<String, StorageError>> {
        let (to, topic) = (to.to_owned(), topic.to_owned());
        let (body, from) = (message.body.to_vec(), message.from.to_owned());
        let (sent_at, expires_at) = (message.sent_at, message.expires_at);
        self.blocking(move |db| {
            let txn = write_txn(db)?;
            let seq = {
                let mut meta = txn.open_table(META).map_err(backend)?;
                let seq = meta
                    .get("next_message")
                    .map_err(backend)?
                    .map_or(1, |seq| seq.value());
                meta.insert("next_message", seq + 1).map_err(backend)?;
                seq
            };
            let (to, topic) = (to.as_str(), topic.as_str());
            let row = (sent_at, expires_at, sent_at, 0, [0; 16], false, from);
            write_message(&txn, to, topic, seq, &row)?;
            txn.open_table(MESSAGE_BODIES)
                .map_err(backend)?
                .insert((to, topic, seq), body.as_slice())
                .map_err(backend)?;
            txn.open_table(READY)
                .map_err(backend)?
                .insert((to, topic, sent_at, seq), ())
                .map_err(backend)?;
            txn.open_table(MESSAGE_EXPIRY)
                .map_err(backend)?
                .insert((expires_at, to, topic, seq), ())
                .map_err(backend)?;
            txn.commit().map_err(backend)?;
            Ok(seq.to_string())
        })
    }

    fn pop<'a>(
        &'a self,
        owner: &'a str,
        topic: &'a str,
        now: u64,
        options: PopOptions,
    ) -> BoxFuture<'a, Result<Option<Delivery>, StorageError>> {
        let (owner, topic) = (owner.to_owned(), topic.to_owned());
        self.blocking(move |db| {
            let (to, topic) = (owner.as_str(), topic.as_str());
            // Nothing due is the common answer of a long-poll: found by a read, without a
            // durable write.
            let nothing_due = {
                let txn = db.begin_read().map_err(backend)?;
                let ready = txn.open_table(READY).map_err(backend)?;
                let mut range = ready
                    .range((to, topic, 0, 0)..=(to, topic, now, u64::MAX))
                    .map_err(backend)?;
                range.next().is_none()
            };
            if nothing_due {
                return Ok(None);
            }
            let txn = write_txn(db)?;
            // The oldest visible entries, in (visible_at, seq) order.
            let due: Vec<(u64, u64)> = {
                let ready = txn.open_table(READY).map_err(backend)?;
                let range = ready
                    .range((to, topic, 0, 0)..=(to, topic, now, u64::MAX))
                    .map_err(backend)?;
                let mut due = Vec::new();
                for entry in range.take(POP_SCAN) {
                    let (key, _) = entry.map_err(backend)?;
                    let (_, _, visible_at, seq) = key.value();
                    due.push((visible_at, seq));
                }
                due
            };
            let mut delivery = None;
            for (visible_at, seq) in due {
                let Some(mut row) = message(&txn, to, topic, seq)? else {
                    return Err(backend("a ready entry has no message"));
                };
                if row.1 <= now {
                    remove_message(&txn, to, topic, seq)?;
                    continue;
                }
                txn.open_table(READY)
                    .map_err(backend)?
                    .remove((to, topic, visible_at, seq))
                    .map_err(backend)?;
                if row.3 >= options.max_receives {
                    row.5 = true;
                    write_message(&txn, to, topic, seq, &row)?;
                    txn.open_table(DEAD)
                        .map_err(backend)?
                        .insert((to, topic, seq), ())
                        .map_err(backend)?;
                    continue;
                }
                let token = receipt::token()?;
                row.2 = now.saturating_add(options.visibility_ms);
                row.3 += 1;
                row.4 = token;
                write_message(&txn, to, topic, seq, &row)?;
                txn.open_table(READY)
                    .map_err(backend)?
                    .insert((to, topic, row.2, seq), ())
                    .map_err(backend)?;
                let body = read_body(
                    &txn.open_table(MESSAGE_BODIES).map_err(backend)?,
                    to,
                    topic,
                    seq,
                )?;
                delivery = Some(Delivery {
                    message_id: seq.to_string(),
                    body,
                    from: row.6,
                    sent_at: row.0,
                    receive_count: row.3,
                    receipt: receipt::encode(seq, &token),
                });
                break;
            }
            txn.commit().map_err(backend)?;
            Ok(delivery)
        })
    }

    fn ack<'a>(
        &'a self,
        owner: &'a str,
        topic: &'a str,
        receipt: &'a str,
        now: u64,
    ) -> BoxFuture<'a, Result<Ack, StorageError>> {
        let Some((seq, token)) = receipt::decode(receipt) else {
            return Box::pin(async { Ok(Ack::Unknown) });
        };
        let (owner, topic) = (owner.to_owned(), topic.to_owned());
        self.blocking(move |db| {
            let (to, topic) = (owner.as_str(), topic.as_str());
            let txn = write_txn(db)?;
            let answer = match message(&txn, to, topic, seq)? {
                // Never delivered, expired, or dead: no delivery of it can be acknowledged.
                None => Ack::Unknown,
                Some((_, expires_at, _, count, _, dead, _))
                    if count == 0 || dead || expires_at <= now =>
                {
                    Ack::Unknown
                }
                Some((_, _, _, _, current, _, _)) if current != token => Ack::Stale,
                Some(_) => {
                    remove_message(&txn, to, topic, seq)?;
                    Ack::Deleted
                }
            };
            txn.commit().map_err(backend)?;
            Ok(answer)
        })
    }

    fn dead_letters<'a>(
        &'a self,
        owner: &'a str,
        topic: &'a str,
        now: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>, StorageError>> {
        let (owner, topic) = (owner.to_owned(), topic.to_owned());
        self.blocking(move |db| {
            let (to, topic) = (owner.as_str(), topic.as_str());
            let txn = db.begin_read().map_err(backend)?;
            let dead = txn.open_table(DEAD).map_err(backend)?;
            let messages = txn.open_table(MESSAGES).map_err(backend)?;
            let bodies = txn.open_table(MESSAGE_BODIES).map_err(backend)?;
            let mut letters = Vec::new();
            for entry in dead
                .range((to, topic, 0)..=(to, topic, u64::MAX))
                .map_err(backend)?
            {
                if letters.len() == limit {
                    break;
                }
                let (key, _) = entry.map_err(backend)?;
                let (_, _, seq) = key.value();
                let row = messages
                    .get((to, topic, seq))
                    .map_err(backend)?
                    .ok_or_else(|| backend("a dead letter has no message"))?;
                let (sent_at, expires_at, _, receive_count, _, _, from) = row.value();
                if expires_at <= now {
                    continue;
                }
                letters.push(DeadLetter {
                    message_id: seq.to_string(),
                    body: read_body(&bodies, to, topic, seq)?,
                    from: from.to_owned(),
                    sent_at,
                    receive_count,
                });
            }
            Ok(letters)
        })
    }

    fn add_usage<'a>(
        &'a self,
        wallet: &'a str,
        day: u32,
        delta: Usage,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        let wallet = wallet.to_owned();
        self.blocking(move |db| {
            let txn = write_txn(db)?;
            {
                let mut usage = txn.open_table(USAGE).map_err(backend)?;
                let old = usage
                    .get((wallet.as_str(), day))
                    .map_err(backend)?
                    .map(|row| from_row(row.value()))
                    .unwrap_or_default();
                let new = old.plus(delta);
                usage
                    .insert(
                        (wallet.as_str(), day),
                        (
                            new.operations,
                            new.bytes_in,
                            new.bytes_out,
                            new.charged_atomic,
                        ),
                    )
                    .map_err(backend)?;
            }
            txn.commit().map_err(backend)?;
            Ok(())
        })
    }

    fn usage<'a>(
        &'a self,
        wallet: &'a str,
        from: u32,
        to: u32,
    ) -> BoxFuture<'a, Result<Vec<(u32, Usage)>, StorageError>> {
        let wallet = wallet.to_owned();
        self.blocking(move |db| {
            if from > to {
                return Ok(Vec::new());
            }
            let txn = db.begin_read().map_err(backend)?;
            let usage = txn.open_table(USAGE).map_err(backend)?;
            let mut days = Vec::new();
            for entry in usage
                .range((wallet.as_str(), from)..=(wallet.as_str(), to))
                .map_err(backend)?
            {
                let (key, row) = entry.map_err(backend)?;
                days.push((key.value().1, from_row(row.value())));
            }
            Ok(days)
        })
    }

    fn issue_challenge<'a>(
        &'a self,
        id: &'a str,
        challenge: &'a Challenge,
        now: u64,
    ) -> BoxFuture<'a, Result<bool, StorageError>> {
        let (id, challenge) = (id.to_owned(), challenge.clone());
        self.blocking(move |db| {
            let txn = write_txn(db)?;
            {
                let mut challenges = txn.open_table(CHALLENGES).map_err(backend)?;
                let mut expiry = txn.open_table(CHALLENGE_EXPIRY).map_err(backend)?;
                let present = challenges
                    .get(id.as_str())
                    .map_err(backend)?
                    .map(|row| row.value().2);
                match present {
                    Some(expires_at) if expires_at > now => return Ok(false),
                    // Expired but not swept yet: replaced, with its expiry entry.
                    Some(expires_at) => {
                        expiry.remove((expires_at, id.as_str())).map_err(backend)?;
                    }
                    None => {}
                }
                let Challenge {
                    audience,
                    message,
                    expires_at,
                } = &challenge;
                challenges
                    .insert(
                        id.as_str(),
                        (audience.as_str(), message.as_str(), *expires_at),
                    )
                    .map_err(backend)?;
                expiry
                    .insert((*expires_at, id.as_str()), ())
                    .map_err(backend)?;
            }
            txn.commit().map_err(backend)?;
            Ok(true)
        })
    }

    fn take_challenge<'a>(
        &'a self,
        id: &'a str,
        now: u64,
    ) -> BoxFuture<'a, Result<Option<Challenge>, StorageError>> {
        let id = id.to_owned();
        self.blocking(move |db| {
            let txn = write_txn(db)?;
            let taken = {
                let mut challenges = txn.open_table(CHALLENGES).map_err(backend)?;
                let removed = challenges.remove(id.as_str()).map_err(backend)?;
                removed.map(|row| {
                    let (audience, message, expires_at) = row.value();
                    Challenge {
                        audience: audience.to_owned(),
                        message: message.to_owned(),
                        expires_at,
                    }
                })
            };
            if let Some(challenge) = &taken {
                txn.open_table(CHALLENGE_EXPIRY)
                    .map_err(backend)?
                    .remove((challenge.expires_at, id.as_str()))
                    .map_err(backend)?;
            }
            txn.commit().map_err(backend)?;
            Ok(taken.filter(|challenge| challenge.expires_at > now))
        })
    }

    fn set_email<'a>(
        &'a self,
        wallet: &'a str,
        email: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        let (wallet, email) = (wallet.to_owned(), email.map(str::to_owned));
        self.blocking(move |db| {
            let txn = write_txn(db)?;
            {
                let mut profiles = txn.open_table(PROFILES).map_err(backend)?;
                match &email {
                    Some(email) => profiles.insert(wallet.as_str(), email.as_str()),
                    None => profiles.remove(wallet.as_str()),
                }
                .map_err(backend)?;
            }
            txn.commit().map_err(backend)?;
            Ok(())
        })
    }

    fn email<'a>(&'a self, wallet: &'a str) -> BoxFuture<'a, Result<Option<String>, StorageError>> {
        let wallet = wallet.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let profiles = txn.open_table(PROFILES).map_err(backend)?;
            let email = profiles.get(wallet.as_str()).map_err(backend)?;
            Ok(email.map(|email| email.value().to_owned()))
        })
    }

    fn sweep_expired(&self, now: u64, limit: usize) -> BoxFuture<'_, Result<usize, StorageError>> {
        self.blocking(move |db| {
            let txn = write_txn(db)?;
            let mut swept = sweep_messages(&txn, now, limit)?;
            swept += sweep_challenges(&txn, now, limit - swept)?;
            let due: Vec<(String, String)> = {
                let expiry = txn.open_table(EXPIRY).map_err(backend)?;
                // Everything that expired by `now` (`expires_at <= now`).
                let range = expiry
                    .range((0, "", "")..(now.saturating_add(1), "", ""))
                    .map_err(backend)?;
                let mut due = Vec::new();
                for entry in range.take(limit - swept) {
                    let (key, _) = entry.map_err(backend)?;
                    let (_, owner, key) = key.value();
                    due.push((owner.to_owned(), key.to_owned()));
                }
                due
            };
            for (owner, key) in &due {
                remove(&txn, owner, key)?;
            }
            payments::sweep(&txn, limit).map_err(backend)?;
            txn.commit().map_err(backend)?;
            Ok(swept + due.len())
        })
    }

    fn payment_backend(&self) -> Arc<dyn PaymentBackend> {
        Arc::new(payments::RedbPayments(self.db.clone()))
    }

    fn channel_store(&self) -> Arc<dyn ChannelStore> {
        Arc::new(payments::RedbChannels(self.db.clone()))
    }

    /// One process owns the file: its own leases.
    fn leases(&self) -> Arc<dyn tower_paywall::store::Leases> {
        self.leases.clone()
    }
}

fn from_row((operations, bytes_in, bytes_out, charged_atomic): (u64, u64, u64, u64)) -> Usage {
    Usage {
        operations,
        bytes_in,
        bytes_out,
        charged_atomic,
    }
}

/// Removes up to `limit` messages that expired by `now`.
fn sweep_messages(
    txn: &redb::WriteTransaction,
    now: u64,
    limit: usize,
) -> Result<usize, StorageError> {
    let due: Vec<(String, String, u64)> = {
        let expiry = txn.open_table(MESSAGE_EXPIRY).map_err(backend)?;
        let range = expiry
            .range((0, "", "", 0)..(now.saturating_add(1), "", "", 0))
            .map_err(backend)?;
        let mut due = Vec::new();
        for entry in range.take(limit) {
            let (key, _) = entry.map_err(backend)?;
            let (_, to, topic, seq) = key.value();
            due.push((to.to_owned(), topic.to_owned(), seq));
        }
        due
    };
    for (to, topic, seq) in &due {
        remove_message(txn, to, topic, *seq)?;
    }
    Ok(due.len())
}

/// Removes up to `limit` challenges that expired by `now`.
fn sweep_challenges(
    txn: &redb::WriteTransaction,
    now: u64,
    limit: usize,
) -> Result<usize, StorageError> {
    let due: Vec<(u64, String)> = {
        let expiry = txn.open_table(CHALLENGE_EXPIRY).map_err(backend)?;
        let range = expiry
            .range((0, "")..(now.saturating_add(1), ""))
            .map_err(backend)?;
        let mut due = Vec::new();
        for entry in range.take(limit) {
            let (key, _) = entry.map_err(backend)?;
            let (expires_at, id) = key.value();
            due.push((expires_at, id.to_owned()));
        }
        due
    };
    let mut challenges = txn.open_table(CHALLENGES).map_err(backend)?;
    let mut expiry = txn.open_table(CHALLENGE_EXPIRY).map_err(backend)?;
    for (expires_at, id) in &due {
        challenges.remove(id.as_str()).map_err(backend)?;
        expiry.remove((*expires_at, id.as_str())).map_err(backend)?;
    }
    Ok(due.len())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::storage::suite::{self, Expiry};
    use redb::ReadableTableMetadata;
    use tower_paywall::store::{
        BackedStore, ChannelId, ChannelPhase, ChannelState, Fingerprint, PaymentKey, PaymentState,
        PaymentStore, RecordWrite, Reservation, StateKind, conformance,
    };

    #[tokio::test]
    async fn passes_the_storage_suite() {
        let dir = std::env::temp_dir().join(format!("stoka-redb-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stoka.redb");
        let storage = RedbStorage::open(&path).unwrap();
        suite::run(&storage, Expiry::Swept).await;
        drop(storage);
        // Reopened (compacted), what was left is still there.
        let reopened = RedbStorage::open(&path).unwrap();
        suite::survivors(&reopened, Expiry::Swept).await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("stoka-redb-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keeps_payments_and_channels_as_the_library_expects() {
        let dir = temp("payments");
        let storage = RedbStorage::open(dir.join("stoka.redb")).unwrap();
        let store = || Arc::new(BackedStore::new(storage.payment_backend()));
        conformance::payment_store(store()).await;
        conformance::shared_payment_store(store(), store()).await;
        conformance::channel_store(storage.channel_store()).await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_payment_a_claim_and_a_voucher_survive_reopening_the_file() {
        let dir = temp("reopen");
        let path = dir.join("stoka.redb");
        let key = PaymentKey::derive(&[b"reopen"]);
        let print = Fingerprint([4; 32]);
        let ttl = Duration::from_secs(600);
        let channel = ChannelId([8; 32]);
        let voucher = ChannelState {
            cumulative: 300,
            signature: Some([5; 64]),
            unspent: 120,
            phase: ChannelPhase::Open,
        };
        {
            let storage = RedbStorage::open(&path).unwrap();
            let store = BackedStore::new(storage.payment_backend());
            store.reserve(key, print, ttl).await.unwrap();
            store
                .transition(
                    key,
                    StateKind::Reserved,
                    PaymentState::Settling(conformance::pending()),
                )
                .await
                .unwrap();
            assert!(store.claim(b"tx", ttl).await.unwrap());
            assert!(
                storage
                    .channel_store()
                    .compare_and_set(channel, None, voucher)
                    .await
                    .unwrap()
            );
        } // as after a crash: only the file is left
        let storage = RedbStorage::open(&path).unwrap();
        let store = BackedStore::new(storage.payment_backend());
        // The settlement in flight is still known (a retry waits for it rather than paying
        // again), and the claim still holds.
        assert_eq!(
            store.reserve(key, print, ttl).await.unwrap(),
            Reservation::Pending(conformance::pending())
        );
        assert!(!store.claim(b"tx", ttl).await.unwrap());
        assert_eq!(
            storage.channel_store().load(channel).await.unwrap(),
            Some(voucher)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn the_sweeper_removes_expired_payments_and_claims_and_nothing_else() {
        let dir = temp("sweep");
        let storage = RedbStorage::open(dir.join("stoka.redb")).unwrap();
        let store = BackedStore::new(storage.payment_backend());
        let print = Fingerprint([4; 32]);
        let (short, long) = (Duration::from_millis(1), Duration::from_secs(600));
        let (gone, kept) = (
            PaymentKey::derive(&[b"gone"]),
            PaymentKey::derive(&[b"kept"]),
        );
        store.reserve(gone, print, short).await.unwrap();
        store.reserve(kept, print, long).await.unwrap();
        assert!(store.claim(b"gone", short).await.unwrap());
        assert!(store.claim(b"kept", long).await.unwrap());
        tokio::time::sleep(Duration::from_millis(5)).await;
        // Payments follow the system clock, whatever `now` the sweeper is given.
        assert_eq!(storage.sweep_expired(0, 100).await.unwrap(), 0);
        let db = storage.db.clone();
        let rows = tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().unwrap();
            let count = |len: u64| len as usize;
            (
                count(txn.open_table(payments::PAYMENTS).unwrap().len().unwrap()),
                count(
                    txn.open_table(payments::PAYMENT_EXPIRY)
                        .unwrap()
                        .len()
                        .unwrap(),
                ),
                count(txn.open_table(payments::CLAIMS).unwrap().len().unwrap()),
                count(
                    txn.open_table(payments::CLAIM_EXPIRY)
                        .unwrap()
                        .len()
                        .unwrap(),
                ),
            )
        })
        .await
        .unwrap();
        assert_eq!(rows, (1, 1, 1, 1));
        assert!(store.record(kept).await.unwrap().is_some());
        assert!(!store.claim(b"kept", long).await.unwrap());
        assert!(store.claim(b"gone", long).await.unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_new_payment_record_without_a_lifetime_is_refused() {
        let dir = temp("lifetime");
        let storage = RedbStorage::open(dir.join("stoka.redb")).unwrap();
        let backend = storage.payment_backend();
        let key = PaymentKey::derive(&[b"no lifetime"]);
        let write = RecordWrite::Put {
            value: b"record",
            ttl: None,
            pending: true,
        };
        let error = backend.swap(key, None, write).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "payment store unavailable: a new payment record needs a lifetime"
        );
        assert_eq!(backend.load(key).await.unwrap(), None, "nothing written");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_damaged_channel_state_is_an_error_not_a_new_channel() {
        let dir = temp("damaged");
        let storage = RedbStorage::open(dir.join("stoka.redb")).unwrap();
        let channel = ChannelId([9; 32]);
        let db = storage.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_write().unwrap();
            txn.open_table(payments::CHANNELS)
                .unwrap()
                .insert(&channel.0, [1u8; 20].as_slice())
                .unwrap();
            txn.commit().unwrap();
        })
        .await
        .unwrap();
        let channels = storage.channel_store();
        let expected =
            format!("payment store unavailable: the stored state of {channel} is damaged");
        assert_eq!(
            channels.load(channel).await.unwrap_err().to_string(),
            expected
        );
        assert_eq!(
            channels
                .channels(None, usize::MAX)
                .await
                .unwrap_err()
                .to_string(),
            expected
        );
        assert_eq!(
            channels
                .compare_and_set(channel, None, ChannelState::NEW)
                .await
                .unwrap_err()
                .to_string(),
            expected
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
