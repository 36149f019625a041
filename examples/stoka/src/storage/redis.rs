//! The distributed back end: a Redis server (7.0 or later, or a compatible one such as Valkey)
//! or a Redis Cluster, shared by any number of stoka nodes.
//!
//! Payments, channels and leases are the library's [`RedisStore`] under the same namespace
//! (its docs give their keys). stoka's own keys (every one starts with the namespace, so a
//! deployment can share a server; `{…}` is the hash tag, the wallet the record belongs to, so
//! that every script touches one slot and runs unchanged on a Redis Cluster):
//!
//! | record | key | type |
//! |---|---|---|
//! | blob | `<ns>:b:{<owner>}:<key>` | STRING: `expires_at` as 20 ASCII digits, then the body |
//! | mailbox index | `<ns>:q:{<to>}:<topic>:z` | ZSET: message id → `visible_at` |
//! | dead letters | `<ns>:q:{<to>}:<topic>:d` | ZSET: message id → seq |
//! | message | `<ns>:q:{<to>}:<topic>:m:<id>` | HASH: `body`, `from`, `sent`, `exp`, `rc` (receive count), `tok` (the latest delivery's token), `dead` |
//! | message ids | `<ns>:q:{<to>}:<topic>:seq` | STRING counter (`INCR`): a message's id is the counter in decimal, zero-padded to 20 digits in keys and indexes; it lives as long as the mailbox's longest-lived message, so an empty mailbox leaves nothing behind, and a new one starts at 1 again |
//! | usage of a day | `<ns>:u:{<wallet>}:<day>` | HASH: `ops`, `in`, `out`, `charged`; kept 400 days |
//! | days with usage | `<ns>:u:{<wallet>}:days` | ZSET: day → day; kept 400 days from the last count |
//! | challenge | `<ns>:c:<id>` (one key per operation: no hash tag) | STRING: `expires_at` (20 digits), audience length (10 digits), audience, message |
//! | profile | `<ns>:e:{<wallet>}` | STRING: the email; kept [`PROFILE_TTL_S`] (400 days) from when it was last set |
//!
//! Each part of a key (namespace, wallet, blob key, topic, challenge id) is
//! [escaped](tower_paywall::store::redis::escape), so no two records share a key and the hash
//! tag is always whole. Nothing lists keys (`SCAN`, `KEYS`): every request names its records.
//!
//! Expiry is native: every record is written with a time to live, and the server drops it on
//! its own clock ([`Storage::sweep_expired`] answers 0). The time to live is the record's
//! remaining life at the caller's `now` (`PX`, not `PXAT` at `expires_at`): the server evicts a
//! record once its life is over whatever the difference between its clock and the caller's (a
//! skewed node, or a test's injected clock). The answers never depend on the eviction: every
//! read, acknowledgement and take also checks the stored expiry against `now`, and a record
//! expired at `now` but not yet evicted counts as absent when a blob is created or replaced and
//! when a challenge is issued. Times are compared as Lua numbers, exact up to 2^53
//! milliseconds.
//!
//! Every operation that reads and then writes is one Lua script (sent by hash, loaded on
//! demand); message keys are derived inside the scripts from their mailbox, under the same
//! hash tag. Receipts are those of the embedded back end (`receipt.rs`), with a fresh random
//! token per delivery made here and passed in. Usage counters saturate at `i64::MAX` (the
//! server's integers), the embedded ones at `u64::MAX`.
//!
//! Earlier stoka versions kept every channel under one hash tag (`<ns>:ch:{channels}:…`) and
//! payment records one per tag with one pending list (`<ns>:p:{<key>}`, `<ns>:pp`), on one
//! server only. Connecting to a server moves those channels and pending settlements to the
//! library's keys ([`migrate`]); settled records are left to expire where they are.
//!
//! Production servers want `maxmemory-policy noeviction` (an eviction would silently drop
//! blobs, payment records or channel vouchers), and `appendonly yes` with `appendfsync always`
//! (or `everysec` and a replica) for durability; every blob lives in memory.

use std::sync::{Arc, LazyLock};

use ::redis::{Script, ScriptInvocation};

use super::receipt;
use super::{
    Ack, Blob, Challenge, DeadLetter, Delivery, NewMessage, PopOptions, Put, PutMode, Storage,
    StorageError, Usage,
};
use tower_paywall::BoxFuture;
use tower_paywall::store::redis::{RedisConnection, RedisStore, escape};
use tower_paywall::store::{ChannelId, ChannelStore, Leases, PaymentBackend, PaymentKey};

/// The length of the expiry header of blobs and challenges (`expires_at`, zero-padded).
const HEADER: usize = 20;
/// The longest time to live given to the server (about 285,000 years; the server refuses
/// larger ones).
const MAX_TTL_MS: u64 = 1 << 53;
/// How long usage counters are kept (400 days, in seconds).
const USAGE_TTL_S: u64 = 400 * 24 * 3600;
/// How long a profile is kept after it was last set (400 days, in seconds).
pub const PROFILE_TTL_S: u64 = 400 * 24 * 3600;
/// The most index entries one `pop` looks at (expired and dead messages are cleared on the way).
const POP_SCAN: u32 = 64;
/// How many dead-letter entries one `dead_letters` looks at beyond its limit (expired ones are
/// cleared on the way).
const DEAD_SCAN: i64 = 64;

/// Creates (`ARGV[1] == "c"`) or replaces (`"r"`) the blob `KEYS[1]` if `mode` allows, with the
/// value `ARGV[3]` and time to live `ARGV[4]`; a blob expired at `ARGV[2]` counts as absent.
/// 0 = created, 1 = replaced, 2 = exists, 3 = not found.
static PUT_BLOB: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local h = redis.call('GETRANGE', KEYS[1], 0, 19)
local e = tonumber(h)
local live = #h == 20 and e ~= nil and e > tonumber(ARGV[2])
if ARGV[1] == 'c' then
  if live then return 2 end
elseif not live then
  return 3
end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
if live then return 1 end
return 0
",
    )
});

/// The expiry header and length of the blob `KEYS[1]`, or nil.
static BLOB_SIZE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local h = redis.call('GETRANGE', KEYS[1], 0, 19)
if h == '' then return false end
return {h, string.format('%d', redis.call('STRLEN', KEYS[1]))}
",
    )
});

/// Pushes a message to the mailbox whose index is `KEYS[1]` and counter `KEYS[2]`: message keys
/// are `ARGV[1] .. id`; body `ARGV[2]`, sender `ARGV[3]`, sent at `ARGV[4]`, expiring at
/// `ARGV[5]`, time to live `ARGV[6]`. The index and the counter outlive every message in it.
/// The new seq.
static PUSH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local seq = redis.call('INCR', KEYS[2])
local id = string.format('%020d', seq)
local m = ARGV[1] .. id
redis.call('HSET', m, 'body', ARGV[2], 'from', ARGV[3], 'sent', ARGV[4], 'exp', ARGV[5],
  'rc', 0, 'tok', '', 'dead', 0)
local ttl = tonumber(ARGV[6])
redis.call('PEXPIRE', m, ttl)
redis.call('ZADD', KEYS[1], ARGV[4], id)
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
return seq
",
    )
});

/// Delivers the oldest message of index `KEYS[1]` visible at `ARGV[2]` (message keys
/// `ARGV[1] .. id`, dead letters `KEYS[2]`): invisible until `ARGV[3]`, token `ARGV[5]`.
/// Messages delivered `ARGV[4]` times go to the dead letters, expired ones are dropped, at most
/// `ARGV[6]` entries are looked at. `{id, receive count, body, from, sent}` or nil.
static POP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local now = tonumber(ARGV[2])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, ARGV[6])
for _, id in ipairs(due) do
  local m = ARGV[1] .. id
  local f = redis.call('HMGET', m, 'exp', 'rc', 'dead')
  if not f[1] then
    redis.call('ZREM', KEYS[1], id)
  elseif tonumber(f[1]) <= now then
    redis.call('ZREM', KEYS[1], id)
    redis.call('DEL', m)
  elseif f[3] == '1' then
    redis.call('ZREM', KEYS[1], id)
  elseif tonumber(f[2]) >= tonumber(ARGV[4]) then
    redis.call('ZREM', KEYS[1], id)
    redis.call('HSET', m, 'dead', 1)
    redis.call('ZADD', KEYS[2], tonumber(id), id)
    local ttl = redis.call('PTTL', m)
    if ttl > 0 and redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
  else
    local rc = redis.call('HINCRBY', m, 'rc', 1)
    redis.call('HSET', m, 'tok', ARGV[5])
    redis.call('ZADD', KEYS[1], ARGV[3], id)
    local g = redis.call('HMGET', m, 'body', 'from', 'sent')
    return {id, string.format('%d', rc), g[1], g[2], g[3]}
  end
end
return false
",
    )
});

/// Deletes message `KEYS[2]` (id `ARGV[3]` in index `KEYS[1]`) if `ARGV[1]` is the token of its
/// latest delivery and it is live at `ARGV[2]`. 0 = unknown, 1 = stale, 2 = deleted.
static ACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local f = redis.call('HMGET', KEYS[2], 'exp', 'rc', 'dead', 'tok')
if not f[1] then return 0 end
if tonumber(f[2]) == 0 or f[3] == '1' or tonumber(f[1]) <= tonumber(ARGV[2]) then return 0 end
if f[4] ~= ARGV[1] then return 1 end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[3])
return 2
",
    )
});

/// Up to `ARGV[3]` dead letters of `KEYS[1]` live at `ARGV[2]` (message keys `ARGV[1] .. id`),
/// oldest first, looking at no more than `ARGV[4]` entries; expired ones are dropped. Flat:
/// `id, body, from, sent, receive count` per letter.
static DEAD_LETTERS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local now = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local out = {}
local count = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[4]) - 1)) do
  if count >= limit then break end
  local m = ARGV[1] .. id
  local f = redis.call('HMGET', m, 'body', 'from', 'sent', 'rc', 'exp')
  if not f[1] then
    redis.call('ZREM', KEYS[1], id)
  elseif tonumber(f[5]) <= now then
    redis.call('ZREM', KEYS[1], id)
    redis.call('DEL', m)
  else
    count = count + 1
    table.insert(out, id)
    table.insert(out, f[1])
    table.insert(out, f[2])
    table.insert(out, f[3])
    table.insert(out, f[4])
  end
end
return out
",
    )
});

/// Adds `ARGV[2..5]` to the counters of day `ARGV[1]` (`KEYS[1]`, kept `ARGV[6]` seconds from
/// its first count) and records the day in `KEYS[2]` (trimmed to the last 400 days).
static ADD_USAGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local fields = {'ops', 'in', 'out', 'charged'}
for i, field in ipairs(fields) do
  local r = redis.pcall('HINCRBY', KEYS[1], field, ARGV[i + 1])
  if type(r) == 'table' and r.err then
    redis.call('HSET', KEYS[1], field, '9223372036854775807')
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[6], 'NX')
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[6])
local newest = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. string.format('%d', tonumber(newest[2]) - 401))
return 0
",
    )
});

/// The counters of the days `ARGV[2]..=ARGV[3]` recorded in `KEYS[1]` (day keys
/// `ARGV[1] .. day`). Flat: `day, ops, in, out, charged` per day.
static USAGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local out = {}
for _, day in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[2], ARGV[3])) do
  local f = redis.call('HMGET', ARGV[1] .. day, 'ops', 'in', 'out', 'charged')
  if f[1] or f[2] or f[3] or f[4] then
    table.insert(out, day)
    for i = 1, 4 do table.insert(out, f[i] or '0') end
  end
end
return out
",
    )
});

/// Records the challenge `ARGV[2]` under `KEYS[1]` with time to live `ARGV[3]`, unless a
/// challenge live at `ARGV[1]` is there. 1 = recorded, 0 = taken.
static ISSUE_CHALLENGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local h = redis.call('GETRANGE', KEYS[1], 0, 19)
local e = tonumber(h)
if #h == 20 and e ~= nil and e > tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
",
    )
});

/// Moves a channel of the old layout: its state `KEYS[1]` to `KEYS[2]` (unless a state is
/// there already), listed in `KEYS[4]` (member `ARGV[1]`) and unlisted from `KEYS[3]`.
static MIGRATE_CHANNEL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local state = redis.call('GET', KEYS[1])
if state then
  if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('SET', KEYS[2], state) end
  redis.call('ZADD', KEYS[4], 0, ARGV[1])
  redis.call('DEL', KEYS[1])
end
redis.call('SREM', KEYS[3], ARGV[1])
return 0
",
    )
});

/// Moves a pending settlement of the old layout: its record `KEYS[1]` to `KEYS[2]` with the
/// time it has left (unless a record is there already), listed in `KEYS[4]` (member `ARGV[1]`,
/// score `ARGV[2]`) and unlisted from `KEYS[3]`.
static MIGRATE_PENDING: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local record = redis.call('GET', KEYS[1])
if record then
  local ttl = redis.call('PTTL', KEYS[1])
  if redis.call('EXISTS', KEYS[2]) == 0 then
    if ttl > 0 then
      redis.call('SET', KEYS[2], record, 'PX', ttl)
    else
      redis.call('SET', KEYS[2], record)
    end
    redis.call('ZADD', KEYS[4], 'NX', ARGV[2], ARGV[1])
  end
  redis.call('DEL', KEYS[1])
end
redis.call('ZREM', KEYS[3], ARGV[1])
return 0
",
    )
});

/// stoka's storage on a Redis server or cluster.
#[derive(Clone)]
pub struct RedisStorage {
    /// The library's stores under the same namespace (payments, channels, leases).
    store: RedisStore,
    connection: RedisConnection,
    /// The escaped namespace every key starts with.
    namespace: String,
}

impl std::fmt::Debug for RedisStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStorage")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

fn backend(error: impl std::fmt::Display) -> StorageError {
    StorageError::Backend(error.to_string())
}

/// A time to live for the server: the life left at `now`, at least 1 ms (a record already
/// expired at `now` is written to be evicted at once, and counts as absent meanwhile).
fn ttl(expires_at: u64, now: u64) -> u64 {
    expires_at.saturating_sub(now).clamp(1, MAX_TTL_MS)
}

/// `expires_at` as the header of a blob or challenge.
fn header(expires_at: u64) -> String {
    format!("{expires_at:020}")
}

/// An unsigned number the server sent as ASCII digits.
fn number<T: std::str::FromStr>(bytes: &[u8]) -> Result<T, StorageError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| backend("the server sent a malformed number"))
}

/// The text the server sent.
fn text(bytes: Vec<u8>) -> Result<String, StorageError> {
    String::from_utf8(bytes).map_err(|_| backend("the server sent malformed text"))
}

/// Runs `invocation`.
async fn invoke<T: ::redis::FromRedisValue>(
    mut connection: RedisConnection,
    invocation: &ScriptInvocation<'_>,
) -> Result<T, StorageError> {
    invocation
        .invoke_async(&mut connection)
        .await
        .map_err(backend)
}

impl RedisStorage {
    /// Connects to the server or cluster at `url` (see [`RedisStore::connect`]: `redis://…`,
    /// `redis+unix:///path/to/socket`, `redis+cluster://host:port,…`), reconnecting on its own
    /// when a connection drops; every key starts with `namespace`. On one server, moves what an
    /// earlier version left in the old layout ([`migrate`]).
    ///
    /// # Errors
    ///
    /// [`StorageError::Backend`] when the URL is malformed, the server is unreachable, or it
    /// reports a version older than 7.0.
    pub async fn connect(url: &str, namespace: &str) -> Result<RedisStorage, StorageError> {
        let store = RedisStore::connect(url, namespace).await.map_err(backend)?;
        let storage = RedisStorage {
            connection: store.connection(),
            namespace: store.namespace().to_owned(),
            store,
        };
        if !storage.store.is_cluster() {
            migrate(&storage).await?;
        }
        Ok(storage)
    }

    fn blob_key(&self, owner: &str, key: &str) -> String {
        format!("{}:b:{{{}}}:{}", self.namespace, escape(owner), escape(key))
    }

    /// The prefix of the keys of the mailbox `(to, topic)`.
    fn mailbox(&self, to: &str, topic: &str) -> String {
        format!("{}:q:{{{}}}:{}", self.namespace, escape(to), escape(topic))
    }

    /// The prefix of the usage keys of `wallet`.
    fn usage_prefix(&self, wallet: &str) -> String {
        format!("{}:u:{{{}}}:", self.namespace, escape(wallet))
    }

    fn challenge_key(&self, id: &str) -> String {
        format!("{}:c:{}", self.namespace, escape(id))
    }

    fn email_key(&self, wallet: &str) -> String {
        format!("{}:e:{{{}}}", self.namespace, escape(wallet))
    }
}

/// A challenge as stored: header, audience length (10 digits), audience, message.
fn encode_challenge(challenge: &Challenge) -> Vec<u8> {
    let Challenge {
        audience,
        message,
        expires_at,
    } = challenge;
    let mut value = Vec::with_capacity(HEADER + 10 + audience.len() + message.len());
    value.extend_from_slice(header(*expires_at).as_bytes());
    value.extend_from_slice(format!("{:010}", audience.len()).as_bytes());
    value.extend_from_slice(audience.as_bytes());
    value.extend_from_slice(message.as_bytes());
    value
}

fn decode_challenge(value: &[u8]) -> Result<Challenge, StorageError> {
    let malformed = || backend("a stored challenge is malformed");
    let expires_at = number(value.get(..HEADER).ok_or_else(malformed)?)?;
    let length: usize = number(value.get(HEADER..HEADER + 10).ok_or_else(malformed)?)?;
    let rest = value.get(HEADER + 10..).ok_or_else(malformed)?;
    if length > rest.len() {
        return Err(malformed());
    }
    let (audience, message) = rest.split_at(length);
    Ok(Challenge {
        audience: text(audience.to_vec())?,
        message: text(message.to_vec())?,
        expires_at,
    })
}

/// The next five fields of a flat script answer.
fn five(fields: &mut impl Iterator<Item = Vec<u8>>) -> Option<[Vec<u8>; 5]> {
    Some([
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    ])
}

impl Storage for RedisStorage {
    fn put_blob<'a>(
        &'a self,
        owner: &'a str,
        key: &'a str,
        body: &'a [u8],
        expires_at: u64,
        mode: PutMode,
        now: u64,
    ) -> BoxFuture<'a, Result<Put, StorageError>> {
        Box::pin(async move {
            let mut value = Vec::with_capacity(HEADER + body.len());
            value.extend_from_slice(header(expires_at).as_bytes());
            value.extend_from_slice(body);
            let mode = match mode {
                PutMode::Create => "c",
                PutMode::Replace => "r",
            };
            let mut invocation = PUT_BLOB.prepare_invoke();
            invocation
                .key(self.blob_key(owner, key))
                .arg(mode)
                .arg(now)
                .arg(value)
                .arg(ttl(expires_at, now));
            match invoke::<i64>(self.connection.clone(), &invocation).await? {
                0 => Ok(Put::Created),
                1 => Ok(Put::Replaced),
                2 => Ok(Put::Exists),
                3 => Ok(Put::NotFound),
                _ => Err(backend("the blob script answered nonsense")),
            }
        })
    }

    fn get_blob<'a>(
        &'a self,
        owner: &'a str,
        key: &'a str,
        now: u64,
    ) -> BoxFuture<'a, Result<Option<Blob>, StorageError>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let value: Option<Vec<u8>> = ::redis::cmd("GET")
                .arg(self.blob_key(owner, key))
                .query_async(&mut connection)
                .await
                .map_err(backend)?;
            let Some(mut value) = value else {
                return Ok(None);
            };
            let expires_at: u64 = number(
                value
                    .get(..HEADER)
                    .ok_or_else(|| backend("a stored blob is malformed"))?,
            )?;
            if expires_at <= now {
                return Ok(None);
            }
            value.drain(..HEADER);
            Ok(Some(Blob {
                body: value,
                expires_at,
            }))
        })
    }

    fn blob_size<'a>(
        &'a self,
        owner: &'a str,
        key: &'a str,
        now: u64,
    ) -> BoxFuture<'a, Result<Option<u64>, StorageError>> {
        Box::pin(async move {
            let mut invocation = BLOB_SIZE.prepare_invoke();
            invocation.key(self.blob_key(owner, key));
            let answer: Option<Vec<Vec<u8>>> = invoke(self.connection.clone(), &invocation).await?;
            let Some([header, length]) = answer.and_then(|fields| <[_; 2]>::try_from(fields).ok())
            else {
                return Ok(None);
            };
            let expires_at: u64 = number(&header)?;
            let length: u64 = number(&length)?;
            if expires_at <= now {
                return Ok(None);
            }
            let size = length
                .checked_sub(HEADER as u64)
                .ok_or_else(|| backend("a stored blob is malformed"))?;
            Ok(Some(size))
        })
    }

    fn delete_blob<'a>(
        &'a self,
        owner: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<bool, StorageError>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let deleted: i64 = ::redis::cmd("DEL")
                .arg(self.blob_key(owner, key))
                .query_async(&mut connection)
                .await
                .map_err(backend)?;
            Ok(deleted > 0)
        })
    }

    fn push<'a>(
        &'a self,
        to: &'a str,
        topic: &'a str,
        message: NewMessage<'a>,
    ) -> BoxFuture<'a, Result<String, StorageError>> {
        Box::pin(async move {
            let mailbox = self.mailbox(to, topic);
            let mut invocation = PUSH.prepare_invoke();
            invocation
                .key(format!("{mailbox}:z"))
                .key(format!("{mailbox}:seq"))
                .arg(format!("{mailbox}:m:"))
                .arg(message.body)
                .arg(message.from)
                .arg(message.sent_at)
                .arg(message.expires_at)
                .arg(ttl(message.expires_at, message.sent_at));
            let seq: u64 = invoke(self.connection.clone(), &invocation).await?;
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
        Box::pin(async move {
            let token = receipt::token()?;
            let mailbox = self.mailbox(owner, topic);
            let mut invocation = POP.prepare_invoke();
            invocation
                .key(format!("{mailbox}:z"))
                .key(format!("{mailbox}:d"))
                .arg(format!("{mailbox}:m:"))
                .arg(now)
                .arg(now.saturating_add(options.visibility_ms))
                .arg(options.max_receives)
                .arg(&token[..])
                .arg(POP_SCAN);
            let answer: Option<Vec<Vec<u8>>> = invoke(self.connection.clone(), &invocation).await?;
            let Some(answer) = answer else {
                return Ok(None);
            };
            let [id, count, body, from, sent] =
                five(&mut answer.into_iter()).ok_or_else(|| backend("a message is malformed"))?;
            let seq: u64 = number(&id)?;
            Ok(Some(Delivery {
                message_id: seq.to_string(),
                body,
                from: text(from)?,
                sent_at: number(&sent)?,
                receive_count: number(&count)?,
                receipt: receipt::encode(seq, &token),
            }))
        })
    }

    fn ack<'a>(
        &'a self,
        owner: &'a str,
        topic: &'a str,
        receipt: &'a str,
        now: u64,
    ) -> BoxFuture<'a, Result<Ack, StorageError>> {
        Box::pin(async move {
            let Some((seq, token)) = receipt::decode(receipt) else {
                return Ok(Ack::Unknown);
            };
            let mailbox = self.mailbox(owner, topic);
            let id = format!("{seq:020}");
            let mut invocation = ACK.prepare_invoke();
            invocation
                .key(format!("{mailbox}:z"))
                .key(format!("{mailbox}:m:{id}"))
                .arg(&token[..])
                .arg(now)
                .arg(id);
            match invoke::<i64>(self.connection.clone(), &invocation).await? {
                0 => Ok(Ack::Unknown),
                1 => Ok(Ack::Stale),
                2 => Ok(Ack::Deleted),
                _ => Err(backend("the ack script answered nonsense")),
            }
        })
    }

    fn dead_letters<'a>(
        &'a self,
        owner: &'a str,
        topic: &'a str,
        now: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>, StorageError>> {
        Box::pin(async move {
            if limit == 0 {
                return Ok(Vec::new());
            }
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let mailbox = self.mailbox(owner, topic);
            let mut invocation = DEAD_LETTERS.prepare_invoke();
            invocation
                .key(format!("{mailbox}:d"))
                .arg(format!("{mailbox}:m:"))
                .arg(now)
                .arg(limit)
                .arg(limit.saturating_add(DEAD_SCAN));
            let answer: Vec<Vec<u8>> = invoke(self.connection.clone(), &invocation).await?;
            let mut fields = answer.into_iter();
            let mut letters = Vec::new();
            while let Some([id, body, from, sent, count]) = five(&mut fields) {
                letters.push(DeadLetter {
                    message_id: number::<u64>(&id)?.to_string(),
                    body,
                    from: text(from)?,
                    sent_at: number(&sent)?,
                    receive_count: number(&count)?,
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
        Box::pin(async move {
            let prefix = self.usage_prefix(wallet);
            let clamp = |count: u64| i64::try_from(count).unwrap_or(i64::MAX);
            let mut invocation = ADD_USAGE.prepare_invoke();
            invocation
                .key(format!("{prefix}{day}"))
                .key(format!("{prefix}days"))
                .arg(day)
                .arg(clamp(delta.operations))
                .arg(clamp(delta.bytes_in))
                .arg(clamp(delta.bytes_out))
                .arg(clamp(delta.charged_atomic))
                .arg(USAGE_TTL_S);
            invoke::<i64>(self.connection.clone(), &invocation).await?;
            Ok(())
        })
    }

    fn usage<'a>(
        &'a self,
        wallet: &'a str,
        from: u32,
        to: u32,
    ) -> BoxFuture<'a, Result<Vec<(u32, Usage)>, StorageError>> {
        Box::pin(async move {
            if from > to {
                return Ok(Vec::new());
            }
            let prefix = self.usage_prefix(wallet);
            let mut invocation = USAGE.prepare_invoke();
            invocation
                .key(format!("{prefix}days"))
                .arg(&prefix)
                .arg(from)
                .arg(to);
            let answer: Vec<Vec<u8>> = invoke(self.connection.clone(), &invocation).await?;
            let mut fields = answer.into_iter();
            let mut days = Vec::new();
            while let Some([day, operations, bytes_in, bytes_out, charged]) = five(&mut fields) {
                let count = |bytes: &[u8]| number::<i64>(bytes).map(|n| n.max(0).unsigned_abs());
                days.push((
                    number(&day)?,
                    Usage {
                        operations: count(&operations)?,
                        bytes_in: count(&bytes_in)?,
                        bytes_out: count(&bytes_out)?,
                        charged_atomic: count(&charged)?,
                    },
                ));
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
        Box::pin(async move {
            let mut invocation = ISSUE_CHALLENGE.prepare_invoke();
            invocation
                .key(self.challenge_key(id))
                .arg(now)
                .arg(encode_challenge(challenge))
                .arg(ttl(challenge.expires_at, now));
            let issued: i64 = invoke(self.connection.clone(), &invocation).await?;
            Ok(issued == 1)
        })
    }

    fn take_challenge<'a>(
        &'a self,
        id: &'a str,
        now: u64,
    ) -> BoxFuture<'a, Result<Option<Challenge>, StorageError>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let value: Option<Vec<u8>> = ::redis::cmd("GETDEL")
                .arg(self.challenge_key(id))
                .query_async(&mut connection)
                .await
                .map_err(backend)?;
            let Some(value) = value else {
                return Ok(None);
            };
            let challenge = decode_challenge(&value)?;
            Ok((challenge.expires_at > now).then_some(challenge))
        })
    }

    fn set_email<'a>(
        &'a self,
        wallet: &'a str,
        email: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let key = self.email_key(wallet);
            let command = match email {
                Some(email) => ::redis::cmd("SET")
                    .arg(key)
                    .arg(email)
                    .arg("EX")
                    .arg(PROFILE_TTL_S)
                    .to_owned(),
                None => ::redis::cmd("DEL").arg(key).to_owned(),
            };
            command
                .query_async::<()>(&mut connection)
                .await
                .map_err(backend)
        })
    }

    fn email<'a>(&'a self, wallet: &'a str) -> BoxFuture<'a, Result<Option<String>, StorageError>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let email: Option<Vec<u8>> = ::redis::cmd("GET")
                .arg(self.email_key(wallet))
                .query_async(&mut connection)
                .await
                .map_err(backend)?;
            email.map(text).transpose()
        })
    }

    /// Redis evicts expired records on its own: nothing to do.
    fn sweep_expired(
        &self,
        _now: u64,
        _limit: usize,
    ) -> BoxFuture<'_, Result<usize, StorageError>> {
        Box::pin(async { Ok(0) })
    }

    fn payment_backend(&self) -> Arc<dyn PaymentBackend> {
        Arc::new(self.store.payments())
    }

    fn channel_store(&self) -> Arc<dyn ChannelStore> {
        Arc::new(self.store.channel_store())
    }

    fn leases(&self) -> Arc<dyn Leases> {
        Arc::new(self.store.leases())
    }
}

/// Moves what an earlier stoka left in the old layout on one server (see the
/// [module docs](self)): every channel listed in `<ns>:ch:{channels}:all`, and every pending
/// settlement listed in `<ns>:pp`, one script each. Nothing to do when neither list exists.
///
/// # Errors
///
/// The server's.
pub async fn migrate(storage: &RedisStorage) -> Result<(), StorageError> {
    let mut connection = storage.connection.clone();
    let old_channels = format!("{}:ch:{{channels}}:all", storage.namespace);
    let listed: Vec<String> = ::redis::cmd("SMEMBERS")
        .arg(&old_channels)
        .query_async(&mut connection)
        .await
        .map_err(backend)?;
    let channels = storage.store.channel_store();
    for id in &listed {
        let mut bytes = [0; 32];
        if hex::decode_to_slice(id, &mut bytes).is_err() {
            tracing::warn!(%id, "skipping a malformed channel id of the old layout");
            continue;
        }
        let channel = ChannelId(bytes);
        let mut invocation = MIGRATE_CHANNEL.prepare_invoke();
        invocation
            .key(format!("{}:ch:{{channels}}:{id}", storage.namespace))
            .key(channels.state_key(channel))
            .key(&old_channels)
            .key(channels.list_key(channel))
            .arg(id);
        invoke::<i64>(connection.clone(), &invocation).await?;
    }
    let old_pending = format!("{}:pp", storage.namespace);
    let pending: Vec<(String, f64)> = ::redis::cmd("ZRANGE")
        .arg(&old_pending)
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut connection)
        .await
        .map_err(backend)?;
    let payments = storage.store.payments();
    for (id, score) in &pending {
        let mut bytes = [0; 32];
        if hex::decode_to_slice(id, &mut bytes).is_err() {
            tracing::warn!(%id, "skipping a malformed payment key of the old layout");
            continue;
        }
        let key = PaymentKey(bytes);
        let mut invocation = MIGRATE_PENDING.prepare_invoke();
        invocation
            .key(format!("{}:p:{{{id}}}", storage.namespace))
            .key(payments.record_key(key))
            .key(&old_pending)
            .key(payments.pending_key(key))
            .arg(id)
            .arg(format!("{}", *score as u64));
        invoke::<i64>(connection.clone(), &invocation).await?;
    }
    if !listed.is_empty() || !pending.is_empty() {
        tracing::info!(
            channels = listed.len(),
            pending = pending.len(),
            "moved the old layout's channels and pending settlements"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::suite::{self, Expiry};
    use tower_paywall::store::redis::{test_deployments, test_namespace};
    use tower_paywall::store::{ChannelStore, PaymentBackend, RecordWrite, conformance};

    /// A connection to each test deployment (server, cluster) in a namespace of its own.
    async fn fresh() -> Vec<RedisStorage> {
        let mut storages = Vec::new();
        for (_, url) in test_deployments() {
            storages.push(
                RedisStorage::connect(&url, &test_namespace("stoka"))
                    .await
                    .unwrap(),
            );
        }
        storages
    }

    /// The unix time in milliseconds.
    fn real_now() -> u64 {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        u64::try_from(since.as_millis()).unwrap()
    }

    async fn pttl(storage: &RedisStorage, key: &str) -> i64 {
        let mut connection = storage.connection.clone();
        ::redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut connection)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn passes_the_storage_suite() {
        for (label, url) in test_deployments() {
            eprintln!("the storage suite on the Redis {label}");
            let namespace = test_namespace("stoka");
            let storage = RedisStorage::connect(&url, &namespace).await.unwrap();
            suite::run(&storage, Expiry::Native).await;
            // A new connection to the same namespace finds what was left.
            let reconnected = RedisStorage::connect(&url, &namespace).await.unwrap();
            suite::survivors(&reconnected, Expiry::Native).await;
            // Another namespace on the same server sees none of it.
            let other = RedisStorage::connect(&url, &format!("{namespace}-other"))
                .await
                .unwrap();
            assert_eq!(
                other
                    .blob_size("GALICE", "note", 1_800_000_000_000)
                    .await
                    .unwrap(),
                None
            );
        }
    }

    #[tokio::test]
    async fn records_expire_on_the_servers_clock() {
        for storage in fresh().await {
            let now = real_now();
            let soon = now + 300;
            let put = storage.put_blob("GA", "k", b"x", soon, PutMode::Create, now);
            assert_eq!(put.await.unwrap(), Put::Created);
            let message = NewMessage {
                body: b"m",
                from: "GB",
                sent_at: now,
                expires_at: soon,
            };
            assert_eq!(storage.push("GA", "t", message).await.unwrap(), "1");
            let challenge = Challenge {
                audience: "queue-ack".into(),
                message: "sign me".into(),
                expires_at: soon,
            };
            assert!(storage.issue_challenge("c", &challenge, now).await.unwrap());
            storage
                .add_usage("GA", 20_000, Usage::default())
                .await
                .unwrap();
            let mailbox = storage.mailbox("GA", "t");
            let expiring = [
                storage.blob_key("GA", "k"),
                format!("{mailbox}:m:{:020}", 1),
                format!("{mailbox}:z"),
                storage.challenge_key("c"),
            ];
            for key in &expiring {
                let left = pttl(&storage, key).await;
                assert!((1..=300).contains(&left), "{key}: {left} ms");
            }
            let usage_ttl = pttl(&storage, &format!("{}20000", storage.usage_prefix("GA"))).await;
            assert!(usage_ttl > 399 * 24 * 3_600_000, "{usage_ttl} ms");
            tokio::time::sleep(std::time::Duration::from_millis(400)).await;
            for key in &expiring {
                assert_eq!(pttl(&storage, key).await, -2, "{key} is evicted");
            }
        }
    }

    #[tokio::test]
    async fn binary_bodies_and_odd_names_round_trip() {
        for storage in fresh().await {
            let now = 1_800_000_000_000;
            let body: Vec<u8> = (0..=255).rev().collect();
            // Parts that would collide unescaped: ("A}:x", "y") and ("A", "x}:y").
            let put = storage.put_blob("A}:x", "y", &body, now + 1000, PutMode::Create, now);
            assert_eq!(put.await.unwrap(), Put::Created);
            let other = storage.put_blob("A", "x}:y", b"", now + 1000, PutMode::Create, now);
            assert_eq!(other.await.unwrap(), Put::Created);
            let read = storage.get_blob("A}:x", "y", now).await.unwrap().unwrap();
            assert_eq!(read.body, body);
            assert_eq!(storage.blob_size("A", "x}:y", now).await.unwrap(), Some(0));
            // Nor do mailboxes, topics or challenge ids with separators.
            let message = NewMessage {
                body: &body,
                from: "G{from}",
                sent_at: now,
                expires_at: now + 1000,
            };
            storage.push("A}:x", "y", message).await.unwrap();
            let pop = PopOptions {
                visibility_ms: 1000,
                max_receives: 3,
            };
            assert_eq!(storage.pop("A", "x}:y", now, pop).await.unwrap(), None);
            let delivery = storage.pop("A}:x", "y", now, pop).await.unwrap().unwrap();
            assert_eq!((delivery.body, delivery.from.as_str()), (body, "G{from}"));
            let challenge = Challenge {
                audience: "a:b".into(),
                message: "é {x}".into(),
                expires_at: now + 1000,
            };
            assert!(
                storage
                    .issue_challenge("%3A", &challenge, now)
                    .await
                    .unwrap()
            );
            assert!(storage.issue_challenge(":", &challenge, now).await.unwrap());
            assert_eq!(
                storage.take_challenge(":", now).await.unwrap(),
                Some(challenge)
            );
        }
    }

    #[tokio::test]
    async fn concurrent_requests_agree() {
        for storage in fresh().await {
            let now = 1_800_000_000_000;
            let tasks = 16;
            // One create wins.
            let mut creates = tokio::task::JoinSet::new();
            for i in 0..tasks {
                let storage = storage.clone();
                creates.spawn(async move {
                    let body = [i; 1000];
                    let put = storage.put_blob("GA", "k", &body, now + 1000, PutMode::Create, now);
                    put.await.unwrap()
                });
            }
            let created = creates.join_all().await;
            assert_eq!(
                created.iter().filter(|put| **put == Put::Created).count(),
                1
            );
            // One message, delivered once however many pop it at the same time; the receipt
            // acknowledges it.
            let message = NewMessage {
                body: b"once",
                from: "GB",
                sent_at: now,
                expires_at: now + 1000,
            };
            storage.push("GA", "t", message).await.unwrap();
            let mut pops = tokio::task::JoinSet::new();
            for _ in 0..tasks {
                let storage = storage.clone();
                let options = PopOptions {
                    visibility_ms: 500,
                    max_receives: 3,
                };
                pops.spawn(async move { storage.pop("GA", "t", now, options).await.unwrap() });
            }
            let deliveries: Vec<Delivery> = pops.join_all().await.into_iter().flatten().collect();
            assert_eq!(deliveries.len(), 1);
            let ack = storage.ack("GA", "t", &deliveries[0].receipt, now);
            assert_eq!(ack.await.unwrap(), Ack::Deleted);
            // Counters add up.
            let mut adds = tokio::task::JoinSet::new();
            for _ in 0..tasks {
                let storage = storage.clone();
                let delta = Usage {
                    operations: 1,
                    bytes_in: 10,
                    bytes_out: 0,
                    charged_atomic: 7,
                };
                adds.spawn(async move { storage.add_usage("GA", 20_000, delta).await.unwrap() });
            }
            adds.join_all().await;
            let days = storage.usage("GA", 0, u32::MAX).await.unwrap();
            let total = Usage {
                operations: 16,
                bytes_in: 160,
                bytes_out: 0,
                charged_atomic: 112,
            };
            assert_eq!(days, [(20_000, total)]);
            // And saturate at the server's largest integer instead of failing.
            let huge = Usage {
                operations: u64::MAX,
                ..Usage::default()
            };
            storage.add_usage("GA", 20_000, huge).await.unwrap();
            storage.add_usage("GA", 20_000, huge).await.unwrap();
            let days = storage.usage("GA", 20_000, 20_000).await.unwrap();
            assert_eq!(days[0].1.operations, i64::MAX.unsigned_abs());
            assert_eq!(days[0].1.charged_atomic, 112);
        }
    }

    /// What an earlier stoka left on one server, in the old layout, is moved on connect: the
    /// channels (with their vouchers) and the pending settlements (with the time they had
    /// left); a state already in the new layout is kept.
    #[tokio::test]
    async fn the_old_layout_is_moved_on_connect() {
        for (label, url) in test_deployments() {
            if label == "cluster" {
                continue;
            }
            let namespace = test_namespace("stoka-old");
            let old = RedisStorage::connect(&url, &namespace).await.unwrap();
            let mut connection = old.connection.clone();
            let (a, b) = (ChannelId([1; 32]), ChannelId([0xf0; 32]));
            let (voucher_a, voucher_b) = (conformance::voucher(5, 1), conformance::voucher(9, 2));
            let newer = conformance::voucher(11, 3);
            for (channel, state) in [(a, voucher_a), (b, voucher_b)] {
                let id = hex::encode(channel.0);
                let _: () = ::redis::cmd("SET")
                    .arg(format!("{namespace}:ch:{{channels}}:{id}"))
                    .arg(&state.to_record(channel)[..])
                    .query_async(&mut connection)
                    .await
                    .unwrap();
                let _: i64 = ::redis::cmd("SADD")
                    .arg(format!("{namespace}:ch:{{channels}}:all"))
                    .arg(id)
                    .query_async(&mut connection)
                    .await
                    .unwrap();
            }
            // b was already written in the new layout: that state stays.
            let channels = old.store.channel_store();
            assert!(channels.compare_and_set(b, None, newer).await.unwrap());
            let key = PaymentKey([0x77; 32]);
            let record = [4_u8; 40];
            let _: () = ::redis::cmd("SET")
                .arg(format!("{namespace}:p:{{{}}}", hex::encode(key.0)))
                .arg(&record[..])
                .arg("PX")
                .arg(60_000)
                .query_async(&mut connection)
                .await
                .unwrap();
            let _: i64 = ::redis::cmd("ZADD")
                .arg(format!("{namespace}:pp"))
                .arg(1_700_000_000_000_u64)
                .arg(hex::encode(key.0))
                .query_async(&mut connection)
                .await
                .unwrap();

            let moved = RedisStorage::connect(&url, &namespace).await.unwrap();
            let channels = moved.channel_store();
            assert_eq!(
                channels.channels(None, usize::MAX).await.unwrap(),
                [(a, voucher_a), (b, newer)]
            );
            let payments = moved.payment_backend();
            assert_eq!(payments.load(key).await.unwrap(), Some(record.to_vec()));
            assert_eq!(payments.pending(10).await.unwrap(), [key]);
            let left = pttl(&moved, &moved.store.payments().record_key(key)).await;
            assert!((50_000..=60_000).contains(&left), "{left} ms");
            for old_key in [
                format!("{namespace}:ch:{{channels}}:all"),
                format!("{namespace}:ch:{{channels}}:{}", hex::encode(a.0)),
                format!("{namespace}:p:{{{}}}", hex::encode(key.0)),
                format!("{namespace}:pp"),
            ] {
                assert_eq!(pttl(&moved, &old_key).await, -2, "{old_key} is gone");
            }
            // The record moved is the store's as any other.
            assert!(
                payments
                    .swap(key, Some(&record), RecordWrite::Remove)
                    .await
                    .unwrap()
            );
            assert_eq!(channels.load(a).await.unwrap(), Some(voucher_a));
        }
    }

    #[test]
    fn stored_challenges_decode_or_fail() {
        let challenge = Challenge {
            audience: "me-usage".into(),
            message: "line\nline".into(),
            expires_at: 42,
        };
        let value = encode_challenge(&challenge);
        assert_eq!(decode_challenge(&value).unwrap(), challenge);
        for junk in [
            &b""[..],
            b"123",
            &value[..25],
            b"000000000000000000420000000099ab",
        ] {
            assert!(decode_challenge(junk).is_err());
        }
    }
}
