//! Feature `redis`: payments, channels and leases in Redis (7.0 or later, or a compatible
//! server such as Valkey), one server or a Redis Cluster, shared by every replica of a service.
//!
//! [`RedisStore::connect`] takes a URL and a namespace; from it come the three stores:
//!
//! | store | trait | what it keeps |
//! |---|---|---|
//! | [`RedisStore::payment_store`] ([`RedisPayments`] under a [`BackedStore`]) | [`PaymentStore`](super::PaymentStore) | each payment's record (reservation, outcome, recorded answer), single-use claims (MPP challenge ids, transaction hashes, sponsored authorizations), pending settlements for the reconciler |
//! | [`RedisStore::channel_store`] ([`RedisChannels`]) | [`ChannelStore`](super::ChannelStore) | each payment channel's best voucher and phase |
//! | [`RedisStore::leases`] ([`RedisLeases`]) | [`Leases`](super::Leases) | who closes a channel, who sends from a facilitator's account |
//!
//! ```no_run
//! use tower_paywall::store::redis::RedisStore;
//! use tower_paywall::PaymentLayer;
//!
//! # async fn run() -> Result<(), tower_paywall::store::StoreError> {
//! // `redis://host:6379`, `redis+unix:///run/redis.sock`, or a cluster:
//! // `redis+cluster://10.0.0.1:7000,10.0.0.2:7000,10.0.0.3:7000`.
//! let redis = RedisStore::connect("redis+cluster://127.0.0.1:7000", "shop").await?;
//! let layer = PaymentLayer::builder().store(redis.payment_store());
//! // … then the schemes (a `StellarChannel` keeps `redis.channel_store()` and
//! // `redis.leases()`) and the pricing, as with any store.
//! # Ok(()) }
//! ```
//!
//! # Keys
//!
//! Every key starts with the namespace, so several services share a server. `{…}` is the hash
//! tag: a Redis Cluster keeps the keys of one tag in one slot, which is what lets a script
//! change several keys at once. Records that scripts change together share a tag; the hot
//! sets are spread over [`SHARDS`] tags each (by the first six bits of the payment key or
//! channel id, so a shard holds one range of ids, in order), never one tag for all.
//!
//! | record | key | type | lifetime |
//! |---|---|---|---|
//! | payment | `<ns>:p:{p<ss>}:<key>` (the 32-byte [`PaymentKey`](super::PaymentKey) in hex, `<ss>` its shard in two hex digits) | STRING: [`PaymentRecord::encode`](super::PaymentRecord::encode) | what the layer gives it (the record's `ttl`), on the server's clock; kept (`KEEPTTL`) when a write gives none |
//! | pending settlements | `<ns>:pp:{p<ss>}` | ZSET: payment key (hex) → when it was listed (unix ms) | changed by the same script as the record; an entry whose record expired is dropped when listed |
//! | claim | `<ns>:pc:{<id>}` (the id's bytes in hex) | STRING `1` | the claim's `ttl` |
//! | channel | `<ns>:ch:{c<ss>}:<id>` (the 32-byte [`ChannelId`] in hex) | STRING: the 156-byte [`ChannelState::to_record`] | never expires: an open channel's holds money, a closed one's refuses its old vouchers |
//! | channels | `<ns>:ch:{c<ss>}` | ZSET, every score 0: the hex id of every channel of the shard with a state, in id order (`ZRANGE … BYLEX`) | never expires |
//! | lease | `<ns>:l:{<name>}` (the name's bytes in hex) | STRING: the holder (hex) | the lease's deadline (`PX`) |
//!
//! The namespace is escaped (`%`, `:`, `{` and `}` become `%25`, `%3A`, `%7B` and `%7D`:
//! [`escape`]), so no two namespaces share a key and the hash tag is always whole.
//!
//! # Operations
//!
//! Every operation that reads and then writes is one Lua script, sent by hash and loaded on
//! demand, over keys of one slot. Per paid request the layer makes four to six round trips
//! (load and swap at the reservation, the settlement's `Settling` and settled steps, the
//! recorded answer, one claim for MPP). Listing pending settlements reads each shard once; a
//! page of channels reads the shards it spans, each script bounded by the page. Nothing lists
//! keys (`SCAN`, `KEYS`).
//!
//! Servers want `maxmemory-policy noeviction` (an eviction would silently drop payment records
//! and vouchers), and `appendonly yes` with `appendfsync always` (or `everysec` and replicas)
//! for durability.

mod channels;
mod connection;
mod leases;
mod payments;

use std::borrow::Cow;
use std::time::Duration;

pub use channels::RedisChannels;
pub use connection::RedisConnection;
pub use leases::RedisLeases;
pub use payments::RedisPayments;

use super::{BackedStore, ChannelId, ChannelState, StoreError};

/// How many hash tags the payment records (with their pending lists) and the channels are
/// spread over, each.
pub const SHARDS: u8 = 64;

/// The longest time to live given to the server (about 285,000 years; the server refuses
/// larger ones).
const MAX_TTL_MS: u64 = 1 << 53;

/// Payments, channels and leases in one Redis deployment, under one namespace (see the
/// [module docs](self)). Cheap to clone: clones share the connection.
#[derive(Clone)]
pub struct RedisStore {
    connection: RedisConnection,
    /// The escaped namespace every key starts with.
    namespace: String,
}

impl RedisStore {
    /// Connects to the server or cluster at `url`, reconnecting on its own when a connection
    /// drops; every key starts with `namespace`.
    ///
    /// | URL | deployment |
    /// |---|---|
    /// | `redis://[user:password@]host:port[/db]` | one server over TCP |
    /// | `redis+unix:///path/to/redis.sock` | one server over a unix socket |
    /// | `redis+cluster://[user:password@]host:port[,host:port…]` | a Redis Cluster, found from any of its nodes (its nodes announce TCP addresses: a cluster is reached over TCP) |
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the URL is malformed, the server is unreachable, or it
    /// reports a version older than 7.0.
    pub async fn connect(url: &str, namespace: &str) -> Result<RedisStore, StoreError> {
        let connection = RedisConnection::open(url).await?;
        Ok(RedisStore {
            connection,
            namespace: escape(namespace).into_owned(),
        })
    }

    /// The connection, for an application's own keys beside the store's (clones share it).
    pub fn connection(&self) -> RedisConnection {
        self.connection.clone()
    }

    /// The escaped namespace every key starts with.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Whether the store talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.connection.is_cluster()
    }

    /// Payment records and claims, as a [`PaymentBackend`](super::PaymentBackend).
    pub fn payments(&self) -> RedisPayments {
        RedisPayments::new(self.connection.clone(), self.namespace.clone())
    }

    /// The [`PaymentStore`](super::PaymentStore) over [`payments`](Self::payments): what
    /// [`PaymentLayerBuilder::store`](crate::PaymentLayerBuilder::store) takes.
    pub fn payment_store(&self) -> BackedStore<RedisPayments> {
        BackedStore::new(self.payments())
    }

    /// Channel states, for [`StellarChannel`](crate::mpp::StellarChannel).
    pub fn channel_store(&self) -> RedisChannels {
        RedisChannels::new(self.connection.clone(), self.namespace.clone())
    }

    /// Leases, shared by every node of the namespace.
    pub fn leases(&self) -> RedisLeases {
        RedisLeases::new(self.connection.clone(), self.namespace.clone())
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("namespace", &self.namespace)
            .field("cluster", &self.is_cluster())
            .finish_non_exhaustive()
    }
}

/// `part` with `%`, `:`, `{` and `}` escaped (as `%25`, `%3A`, `%7B`, `%7D`), so that keys
/// built from escaped parts split back into their parts and a hash tag is always whole.
pub fn escape(part: &str) -> Cow<'_, str> {
    if !part.contains(['%', ':', '{', '}']) {
        return Cow::Borrowed(part);
    }
    let mut escaped = String::with_capacity(part.len() + 8);
    for c in part.chars() {
        match c {
            '%' => escaped.push_str("%25"),
            ':' => escaped.push_str("%3A"),
            '{' => escaped.push_str("%7B"),
            '}' => escaped.push_str("%7D"),
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

/// The shard of a payment key or channel id: its first six bits, so that shards hold ranges
/// of ids in order.
fn shard(id: &[u8; 32]) -> u8 {
    id[0] >> 2
}

/// A time to live for the server in milliseconds: at least 1 (the server refuses `PX 0`), at
/// most [`MAX_TTL_MS`].
fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_TTL_MS)
}

/// The unix time in milliseconds, by this machine's clock.
fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis())
}

/// A server failure, as the stores report it.
fn unavailable(error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

/// The state of `channel` from its stored record.
fn decode_channel(channel: ChannelId, record: &[u8]) -> Result<ChannelState, StoreError> {
    match ChannelState::from_record(record) {
        Some((id, state)) if id == channel => Ok(state),
        Some(_) => Err(StoreError::Unavailable(format!(
            "the stored state of channel {channel} belongs to another channel"
        ))),
        None => Err(StoreError::Unavailable(format!(
            "the stored state of channel {channel} is damaged"
        ))),
    }
}

/// The Redis deployments the tests use: a single server (`TOWER_PAYWALL_TEST_REDIS_URL`) and a
/// Redis Cluster (`TOWER_PAYWALL_TEST_REDIS_CLUSTER_URL`), as `(label, url)`. `scripts/test`
/// starts both and sets them. One that is unset is left out after saying so.
///
/// # Panics
///
/// When either is unset and `CI` is `true`: in CI, a test that needs Redis fails rather than
/// silently skips.
#[doc(hidden)]
#[must_use]
pub fn test_deployments() -> Vec<(&'static str, String)> {
    let ci = std::env::var("CI").unwrap_or_default();
    let ci = ci.eq_ignore_ascii_case("true") || ci == "1";
    let mut deployments = Vec::new();
    for (label, variable) in [
        ("server", "TOWER_PAYWALL_TEST_REDIS_URL"),
        ("cluster", "TOWER_PAYWALL_TEST_REDIS_CLUSTER_URL"),
    ] {
        match std::env::var(variable).ok().filter(|url| !url.is_empty()) {
            Some(url) => deployments.push((label, url)),
            None => {
                assert!(
                    !ci,
                    "{variable} is not set, and CI is: the Redis tests must run in CI \
                     (scripts/test starts a Redis server and a Redis Cluster and sets it)"
                );
                eprintln!(
                    "skipped on the Redis {label}: {variable} is not set (scripts/test starts \
                     one and sets it)"
                );
            }
        }
    }
    deployments
}

/// A namespace no other test run uses.
#[doc(hidden)]
#[must_use]
pub fn test_namespace(prefix: &str) -> String {
    let holder = super::LeaseHolder::unique();
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        hex::encode(&holder.0[..6])
    )
}

#[cfg(test)]
mod tests;
