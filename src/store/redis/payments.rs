//! [`RedisPayments`]: payment records, claims and pending settlements.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::{RedisConnection, SHARDS, shard, ttl_ms, unavailable, unix_ms};
use crate::BoxFuture;
use crate::store::{PaymentBackend, PaymentKey, RECORD_TAG_LEN, RecordWrite, StoreError};

/// The most pending settlements read from one shard in one listing: one script never holds the
/// server for long.
const SHARD_PENDING: usize = 1024;

/// Applies a write to the payment record `KEYS[1]` if it is the one expected: absent when
/// `ARGV[1]` is `0`, otherwise one whose first `#ARGV[2]` bytes are `ARGV[2]` (the expected
/// record's tag). The write is `ARGV[3]`: `px` stores `ARGV[4]` living `ARGV[5]` ms, `keep`
/// stores it keeping the key's time to live, `del` deletes the key. With it, the record's key
/// (`ARGV[7]`, its hex) is listed in its shard's pending set `KEYS[2]` (score `ARGV[8]`, unix
/// ms) when `ARGV[6]` is `1` (a pending settlement), and unlisted otherwise. 1 = written,
/// 0 = not.
static SWAP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '0' then
  if current then return 0 end
elseif not current or string.sub(current, 1, #ARGV[2]) ~= ARGV[2] then
  return 0
end
if ARGV[3] == 'del' then
  redis.call('DEL', KEYS[1])
elseif ARGV[3] == 'keep' then
  redis.call('SET', KEYS[1], ARGV[4], 'KEEPTTL')
else
  redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[5])
end
if ARGV[3] ~= 'del' and ARGV[6] == '1' then
  redis.call('ZADD', KEYS[2], 'NX', ARGV[8], ARGV[7])
else
  redis.call('ZREM', KEYS[2], ARGV[7])
end
return 1
",
    )
});

/// Of the oldest entries of the pending set `KEYS[1]`, up to rank `ARGV[2]`, those whose
/// records (keys `ARGV[1] .. hex`, in the same slot) still live; entries whose records expired
/// are unlisted on the way. Flat: `hex, score` per entry.
static PENDING: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local out = {}
local listed = redis.call('ZRANGE', KEYS[1], 0, ARGV[2], 'WITHSCORES')
for i = 1, #listed, 2 do
  if redis.call('EXISTS', ARGV[1] .. listed[i]) == 1 then
    table.insert(out, listed[i])
    table.insert(out, listed[i + 1])
  else
    redis.call('ZREM', KEYS[1], listed[i])
  end
end
return out
",
    )
});

/// Payment records, single-use claims and pending settlements in Redis: a
/// [`PaymentBackend`] for a [`BackedStore`](crate::store::BackedStore) (see the
/// [module docs](super) for the keys). From [`RedisStore::payments`](super::RedisStore::payments).
#[derive(Clone)]
pub struct RedisPayments {
    connection: RedisConnection,
    namespace: String,
}

impl RedisPayments {
    pub(super) fn new(connection: RedisConnection, namespace: String) -> Self {
        RedisPayments {
            connection,
            namespace,
        }
    }

    /// The prefix of the records of shard `shard` (`<ns>:p:{pSS}:`).
    fn record_prefix(&self, shard: u8) -> String {
        format!("{}:p:{{p{shard:02x}}}:", self.namespace)
    }

    /// The key of `key`'s record.
    pub fn record_key(&self, key: PaymentKey) -> String {
        format!(
            "{}{}",
            self.record_prefix(shard(&key.0)),
            hex::encode(key.0)
        )
    }

    /// The key of the pending set that lists `key` while its settlement is pending.
    pub fn pending_key(&self, key: PaymentKey) -> String {
        self.shard_pending(shard(&key.0))
    }

    /// The key of the pending set of shard `shard`.
    fn shard_pending(&self, shard: u8) -> String {
        format!("{}:pp:{{p{shard:02x}}}", self.namespace)
    }

    /// The key of the claim `id`.
    pub fn claim_key(&self, id: &[u8]) -> String {
        format!("{}:pc:{{{}}}", self.namespace, hex::encode(id))
    }
}

impl PaymentBackend for RedisPayments {
    fn load(&self, key: PaymentKey) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            redis::cmd("GET")
                .arg(self.record_key(key))
                .query_async(&mut connection)
                .await
                .map_err(unavailable)
        })
    }

    fn swap<'a>(
        &'a self,
        key: PaymentKey,
        expected: Option<&'a [u8]>,
        write: RecordWrite<'a>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut invocation = SWAP.prepare_invoke();
            invocation
                .key(self.record_key(key))
                .key(self.pending_key(key));
            match expected {
                None => invocation.arg("0").arg(""),
                Some(expected) => invocation
                    .arg("1")
                    .arg(&expected[..expected.len().min(RECORD_TAG_LEN)]),
            };
            let pending = match write {
                RecordWrite::Put {
                    value,
                    ttl: Some(ttl),
                    pending,
                } => {
                    invocation.arg("px").arg(value).arg(ttl_ms(ttl));
                    pending
                }
                // `KEEPTTL` on a new key would keep it forever.
                RecordWrite::Put { ttl: None, .. } if expected.is_none() => {
                    return Err(StoreError::Unavailable(
                        "a new payment record needs a lifetime".into(),
                    ));
                }
                RecordWrite::Put {
                    value,
                    ttl: None,
                    pending,
                } => {
                    invocation.arg("keep").arg(value).arg("");
                    pending
                }
                RecordWrite::Remove => {
                    invocation.arg("del").arg("").arg("");
                    false
                }
            };
            invocation
                .arg(if pending { "1" } else { "0" })
                .arg(hex::encode(key.0))
                .arg(unix_ms().to_string());
            let mut connection = self.connection.clone();
            let swapped: i64 = invocation
                .invoke_async(&mut connection)
                .await
                .map_err(unavailable)?;
            Ok(swapped == 1)
        })
    }

    fn claim<'a>(&'a self, id: &'a [u8], ttl: Duration) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let set: Option<String> = redis::cmd("SET")
                .arg(self.claim_key(id))
                .arg("1")
                .arg("NX")
                .arg("PX")
                .arg(ttl_ms(ttl))
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
            Ok(set.is_some())
        })
    }

    /// The oldest listed pending settlements whose records still live, over every shard (one
    /// script per shard, reading at most 1024 of it); listed keys whose records expired are
    /// unlisted on the way.
    fn pending(&self, limit: usize) -> BoxFuture<'_, Result<Vec<PaymentKey>, StoreError>> {
        Box::pin(async move {
            if limit == 0 {
                return Ok(Vec::new());
            }
            let mut connection = self.connection.clone();
            let mut listed: Vec<(u64, PaymentKey)> = Vec::new();
            for shard in 0..SHARDS {
                let mut invocation = PENDING.prepare_invoke();
                invocation
                    .key(self.shard_pending(shard))
                    .arg(self.record_prefix(shard))
                    .arg(limit.min(SHARD_PENDING) - 1);
                let fields: Vec<String> = invocation
                    .invoke_async(&mut connection)
                    .await
                    .map_err(unavailable)?;
                for pair in fields.chunks_exact(2) {
                    let key = hex::decode(&pair[0])
                        .ok()
                        .and_then(|key| key.try_into().ok());
                    let score = pair[1].parse::<f64>().ok();
                    if let (Some(key), Some(score)) = (key, score) {
                        listed.push((score as u64, PaymentKey(key)));
                    }
                }
            }
            listed.sort_by_key(|(score, key)| (*score, key.0));
            listed.truncate(limit);
            Ok(listed.into_iter().map(|(_, key)| key).collect())
        })
    }
}

impl std::fmt::Debug for RedisPayments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPayments")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}
