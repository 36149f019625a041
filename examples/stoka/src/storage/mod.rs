//! What stoka keeps, behind one trait with one test suite ([`suite`]) that every back end
//! passes: the embedded default ([`RedbStorage`]) first.
//!
//! Every operation takes the time it runs at (`now`, unix milliseconds), so that expiry is
//! tested with an injected clock and two back ends agree on it.

mod redb;
#[cfg(test)]
pub(crate) mod suite;

pub use self::redb::RedbStorage;

use tower_paywall::BoxFuture;

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

    /// Removes up to `limit` blobs expired by `now`; how many. (A back end with native expiry
    /// answers 0.)
    fn sweep_expired(&self, now: u64, limit: usize) -> BoxFuture<'_, Result<usize, StorageError>>;
}
