//! What stoka keeps, behind one trait with one test suite (`suite`) that every back end
//! passes: blobs, mailbox queues, usage counters per UTC day, wallet challenges and profiles.
//!
//! It also keeps what the payment layers need between requests (each payment's record and
//! single-use claims, each channel's best voucher), so that a restart loses no settled payment
//! and every node on one store sees the same payments.
//!
//! Two back ends:
//! - [`RedbStorage`], the embedded default: one file, expired records removed by
//!   [`Storage::sweep_expired`];
//! - [`RedisStorage`], the distributed one: a Redis server (7.0 or later) or a Redis Cluster
//!   shared by any number of nodes, with native expiry; payments, channels and leases are the
//!   library's `RedisStore`.
//!
//! Every operation takes the time it runs at (`now`, unix milliseconds), so that expiry is
//! tested with an injected clock and two back ends agree on it: an expired record is never
//! answered, whether or not it is gone yet. Queue receipts have one format on both.

mod receipt;
mod redb;
mod redis;
#[cfg(test)]
pub(crate) mod suite;

pub use self::redb::RedbStorage;
pub use self::redis::RedisStorage;

use std::sync::Arc;

use tower_paywall::BoxFuture;
use tower_paywall::store::{ChannelStore, Leases, PaymentBackend};

/// A blob as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    /// The bytes, as the owner sent them (opaque: stoka never decrypts).
    pub body: Vec<u8>,
    /// When it expires (unix milliseconds).
    pub expires_at: u64,
}

/// How a write treats a blob already under the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutMode {
    /// `store`: only if the key holds no live blob of this owner.
    Create,
    /// `update`: only if it does.
    Replace,
}

/// What a write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Put {
    /// A new blob.
    Created,
    /// The owner's blob under the key was replaced.
    Replaced,
    /// [`PutMode::Create`] and the owner already has a live blob under the key: nothing
    /// written.
    Exists,
    /// [`PutMode::Replace`] and the owner has no live blob under the key: nothing written.
    NotFound,
}

/// A message as pushed to a mailbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMessage<'a> {
    /// The body (opaque bytes).
    pub body: &'a [u8],
    /// The sender (the payer of the push).
    pub from: &'a str,
    /// When it was sent (unix milliseconds).
    pub sent_at: u64,
    /// When it is dropped if nobody acknowledged it (unix milliseconds).
    pub expires_at: u64,
}

/// One delivery of a message by [`Storage::pop`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The message's id (the same on every delivery).
    pub message_id: String,
    /// The body.
    pub body: Vec<u8>,
    /// The sender.
    pub from: String,
    /// When it was sent (unix milliseconds).
    pub sent_at: u64,
    /// How many times it has been delivered, this delivery included.
    pub receive_count: u32,
    /// The receipt that acknowledges this delivery, and no other.
    pub receipt: String,
}

/// How [`Storage::pop`] delivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PopOptions {
    /// How long a delivered message stays invisible (milliseconds).
    pub visibility_ms: u64,
    /// A message delivered this many times without an acknowledgement goes to the dead letters
    /// instead of a further delivery.
    pub max_receives: u32,
}

/// What an acknowledgement did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ack {
    /// The message is deleted.
    Deleted,
    /// The message was delivered again since this receipt: nothing deleted.
    Stale,
    /// No such message (acknowledged already, expired, or never delivered under this receipt).
    Unknown,
}

/// A message that was delivered [`PopOptions::max_receives`] times without an
/// acknowledgement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// The message's id.
    pub message_id: String,
    /// The body.
    pub body: Vec<u8>,
    /// The sender.
    pub from: String,
    /// When it was sent (unix milliseconds).
    pub sent_at: u64,
    /// How many times it was delivered.
    pub receive_count: u32,
}

/// Counters of one wallet for one UTC day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Paid operations.
    pub operations: u64,
    /// Bytes received from the wallet (blob and message bodies).
    pub bytes_in: u64,
    /// Bytes sent to the wallet (blob and message bodies).
    pub bytes_out: u64,
    /// USDC charged, in atomic units.
    pub charged_atomic: u64,
}

impl Usage {
    /// Both counters added, saturating.
    #[must_use]
    pub fn plus(self, other: Usage) -> Usage {
        Usage {
            operations: self.operations.saturating_add(other.operations),
            bytes_in: self.bytes_in.saturating_add(other.bytes_in),
            bytes_out: self.bytes_out.saturating_add(other.bytes_out),
            charged_atomic: self.charged_atomic.saturating_add(other.charged_atomic),
        }
    }
}

/// An issued wallet challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// What it may be used for (`object-delete`, `queue-ack`, `profile-bind`, `me-usage`).
    pub audience: String,
    /// The message the wallet signs.
    pub message: String,
    /// When it stops being accepted (unix milliseconds).
    pub expires_at: u64,
}

/// The store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The back end failed (I/O, a corrupt file, an unreachable server).
    #[error("storage failed: {0}")]
    Backend(String),
}

/// Everything stoka keeps. Every operation is atomic.
pub trait Storage: Send + Sync + 'static {
    /// Writes `body` as `owner`'s blob under `key`, expiring at `expires_at`, if `mode` allows
    /// (an expired blob counts as absent).
    fn put_blob<'a>(
        &'a self,
        owner: &'a str,
        key: &'a str,
        body: &'a [u8],
        expires_at: u64,
        mode: PutMode,
        now: u64,
    ) -> BoxFuture<'a, Result<Put, StorageError>>;

    /// `owner`'s live blob under `key`.
    fn get_blob<'a>(
        &'a self,
        owner: &'a str,
        key: &'a str,
        now: u64,
    ) -> BoxFuture<'a, Result<Option<Blob>, StorageError>>;

    /// The size of `owner`'s live blob under `key`, without reading it (for prices and
    /// early answers).
    fn blob_size<'a>(
        &'a self,
        owner: &'a str,
        key: &'a str,
        now: u64,
    ) -> BoxFuture<'a, Result<Option<u64>, StorageError>>;

    /// Deletes `owner`'s blob under `key`; whether there was one.
    fn delete_blob<'a>(
        &'a self,
        owner: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<bool, StorageError>>;

    /// Adds `message` to the mailbox `(to, topic)`; its id.
    fn push<'a>(
        &'a self,
        to: &'a str,
        topic: &'a str,
        message: NewMessage<'a>,
    ) -> BoxFuture<'a, Result<String, StorageError>>;

    /// Delivers the oldest visible message of the mailbox `(owner, topic)`, if any: it becomes
    /// invisible for [`PopOptions::visibility_ms`] and gets a fresh receipt. Messages already
    /// delivered [`PopOptions::max_receives`] times go to the dead letters on the way; expired
    /// ones are dropped.
    fn pop<'a>(
        &'a self,
        owner: &'a str,
        topic: &'a str,
        now: u64,
        options: PopOptions,
    ) -> BoxFuture<'a, Result<Option<Delivery>, StorageError>>;

    /// Deletes the message `receipt` was delivered with, if that was its latest delivery.
    fn ack<'a>(
        &'a self,
        owner: &'a str,
        topic: &'a str,
        receipt: &'a str,
        now: u64,
    ) -> BoxFuture<'a, Result<Ack, StorageError>>;

    /// Up to `limit` dead letters of the mailbox `(owner, topic)`, oldest first.
    fn dead_letters<'a>(
        &'a self,
        owner: &'a str,
        topic: &'a str,
        now: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>, StorageError>>;

    /// Adds `delta` to `wallet`'s counters of `day` (days since 1970-01-01, UTC).
    fn add_usage<'a>(
        &'a self,
        wallet: &'a str,
        day: u32,
        delta: Usage,
    ) -> BoxFuture<'a, Result<(), StorageError>>;

    /// `wallet`'s counters of the days `from..=to`, each day with any counts, in order.
    fn usage<'a>(
        &'a self,
        wallet: &'a str,
        from: u32,
        to: u32,
    ) -> BoxFuture<'a, Result<Vec<(u32, Usage)>, StorageError>>;

    /// Records a challenge under `id` at `now`; `false` (and nothing changed) if `id` holds a
    /// challenge still live at `now` (an expired one counts as absent, swept or not).
    fn issue_challenge<'a>(
        &'a self,
        id: &'a str,
        challenge: &'a Challenge,
        now: u64,
    ) -> BoxFuture<'a, Result<bool, StorageError>>;

    /// Takes the challenge `id` away: it answers once, and never once expired.
    fn take_challenge<'a>(
        &'a self,
        id: &'a str,
        now: u64,
    ) -> BoxFuture<'a, Result<Option<Challenge>, StorageError>>;

    /// Binds `email` to `wallet`, or clears it (`None`).
    fn set_email<'a>(
        &'a self,
        wallet: &'a str,
        email: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), StorageError>>;

    /// The email bound to `wallet`.
    fn email<'a>(&'a self, wallet: &'a str) -> BoxFuture<'a, Result<Option<String>, StorageError>>;

    /// Removes up to `limit` records expired by `now` (blobs, messages, challenges); how many.
    /// Payment records and claims expired by the system clock go too, beyond the count. A back
    /// end whose records expire natively ([`RedisStorage`]) answers 0.
    fn sweep_expired(&self, now: u64, limit: usize) -> BoxFuture<'_, Result<usize, StorageError>>;

    /// Where the payment layers keep payments (wrapped in a
    /// [`BackedStore`](tower_paywall::store::BackedStore)): durable, and shared by every node
    /// on this store. Payment records expire by the system clock, not by `now`: they follow
    /// the ledger's time.
    fn payment_backend(&self) -> Arc<dyn PaymentBackend>;

    /// Where MPP `channel` keeps each channel's best voucher: durable, and shared by every
    /// node on this store.
    fn channel_store(&self) -> Arc<dyn ChannelStore>;

    /// Where the nodes on this store take turns closing channels: shared by every node of a
    /// distributed store, the process's own for an embedded one.
    fn leases(&self) -> Arc<dyn Leases>;
}
