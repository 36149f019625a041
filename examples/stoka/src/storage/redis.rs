//! The distributed back end: a Redis server (7.0 or later, or a compatible one such as Valkey),
//! shared by any number of stoka nodes.
//!
//! Keys (every one starts with the namespace, so a deployment can share a server; `{…}` is the
//! hash tag: the wallet the record belongs to, the payment for payment records and claims, and
//! one tag for every channel so that they are listed in one slot; every script but the payment
//! swap touches one slot: the swap also lists pending settlements in `<ns>:pp`, so it needs one
//! server, which is what [`RedisStorage`] connects to):
//!
//! | record | key | type |
//! |---|---|---|
//! | blob | `<ns>:b:{<owner>}:<key>` | STRING: `expires_at` as 20 ASCII digits, then the body |
//! | mailbox index | `<ns>:q:{<to>}:<topic>:z` | ZSET: message id → `visible_at` |
//! | dead letters | `<ns>:q:{<to>}:<topic>:d` | ZSET: message id → seq |
//! | message | `<ns>:q:{<to>}:<topic>:m:<id>` | HASH: `body`, `from`, `sent`, `exp`, `rc` (receive count), `tok` (the latest delivery's token), `dead` |
//! | message ids | `<ns>:q:{<to>}:<topic>:seq` | STRING counter (`INCR`), never expires: a message's id is the counter in decimal, zero-padded to 20 digits in keys and indexes |
//! | usage of a day | `<ns>:u:{<wallet>}:<day>` | HASH: `ops`, `in`, `out`, `charged`; kept 400 days |
//! | days with usage | `<ns>:u:{<wallet>}:days` | ZSET: day → day |
//! | challenge | `<ns>:c:<id>` (one key per operation: no hash tag) | STRING: `expires_at` (20 digits), audience length (10 digits), audience, message |
//! | profile | `<ns>:e:{<wallet>}` | STRING: the email |
//! | payment record | `<ns>:p:{<payment key>}` (the 32-byte [`PaymentKey`] in hex) | STRING: the encoded record ([`PaymentRecord::encode`](tower_paywall::store::PaymentRecord::encode)) |
//! | payment claim | `<ns>:pc:{<claim id>}` (the id's bytes in hex) | STRING: `1` |
//! | pending settlements | `<ns>:pp` | ZSET: the hex payment key of every record whose settlement is in flight or of unknown outcome → when it was listed (unix ms); changed by the same script as the record, unlisted when its record expired at the next listing |
//! | channel | `<ns>:ch:{channels}:<channel id>` (the 32-byte [`ChannelId`] in hex) | STRING: the 156-byte [`ChannelState::to_record`], never expires |
//! | channels | `<ns>:ch:{channels}:all` | SET: the hex id of every channel with a state |
//!
//! Each part of a key (namespace, wallet, blob key, topic, challenge id) is escaped (`%`, `:`,
//! `{` and `}` become `%25`, `%3A`, `%7B` and `%7D`), so no two records share a key and the
//! hash tag is always whole; payment keys, claim ids and channel ids are in hex. Nothing
//! lists keys (`SCAN`, `KEYS`): every request names its records, and the channels are listed by
//! their set.
//!
//! Expiry is native: blobs, messages and challenges are written with a time to live, and the
//! server drops them on its own clock ([`Storage::sweep_expired`] answers 0). The time to live
//! is the record's remaining life at the caller's `now` (`PX`, not `PXAT` at `expires_at`): the
//! server evicts a record once its life is over whatever the difference between its clock and
//! the caller's (a skewed node, or a test's injected clock). The answers never depend on the
//! eviction: every read, acknowledgement and take also checks the stored expiry against `now`,
//! and a record expired at `now` but not yet evicted counts as absent when a blob is created or
//! replaced and when a challenge is issued. Times are compared as Lua numbers, exact up to 2^53
//! milliseconds.
//!
//! Payment records and claims expire natively too, after the time to live the payment layer
//! gives them, on the system clock (the server's), not the caller's `now`: they follow the
//! ledger's time. A record written without a new time to live keeps the one it has
//! (`KEEPTTL`). A payment write compares only the first [`RECORD_TAG_LEN`] bytes of the record
//! it replaces (its tag); a channel write compares the whole stored state. Channel states never
//! expire.
//!
//! Every operation that reads and then writes is one Lua script (sent by hash, loaded on
//! demand); message keys are derived inside the scripts from their mailbox, and channel keys
//! from the channel prefix, under the same hash tag. Receipts are those of the embedded back
//! end (`receipt.rs`), with a fresh random token per delivery made here and passed in. Usage
//! counters saturate at `i64::MAX` (the server's integers), the embedded ones at `u64::MAX`.
//!
//! Production servers want `maxmemory-policy noeviction` (an eviction would silently drop
//! blobs, payment records or channel vouchers), and `appendonly yes` with `appendfsync always`
//! (or `everysec` and a replica) for durability; every blob lives in memory.

use std::borrow::Cow;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use ::redis::aio::ConnectionManager;
use ::redis::{Script, ScriptInvocation};

use super::receipt;
use super::{
    Ack, Blob, Challenge, DeadLetter, Delivery, NewMessage, PopOptions, Put, PutMode, Storage,
    StorageError, Usage,
};
use tower_paywall::BoxFuture;
use tower_paywall::store::{
    ChannelId, ChannelState, ChannelStore, PaymentBackend, PaymentKey, RECORD_TAG_LEN, RecordWrite,
    StoreError,
};

/// The length of the expiry header of blobs and challenges (`expires_at`, zero-padded).
const HEADER: usize = 20;
/// The longest time to live given to the server (about 285,000 years; the server refuses
/// larger ones).
const MAX_TTL_MS: u64 = 1 << 53;
/// How long usage counters are kept (400 days, in seconds).
const USAGE_TTL_S: u64 = 400 * 24 * 3600;
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
/// `ARGV[5]`, time to live `ARGV[6]`. The index outlives every message in it. The new seq.
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

/// Applies a write to the payment record `KEYS[1]` if it is the one expected: absent when
/// `ARGV[1]` is `0`, otherwise one whose first `#ARGV[2]` bytes are `ARGV[2]` (the expected
/// record's tag). The write is `ARGV[3]`: `px` stores `ARGV[4]` living `ARGV[5]` ms, `keep`
/// stores it keeping the key's time to live, `del` deletes the key. With it, the record's key
/// (`ARGV[7]`, its hex) is listed in the sorted set `KEYS[2]` (score `ARGV[8]`, unix ms) when
/// `ARGV[6]` is `1` (a pending settlement), and unlisted otherwise. 1 = written, 0 = not.
static SWAP_PAYMENT: LazyLock<Script> = LazyLock::new(|| {
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

/// Stores the channel state `ARGV[3]` under `KEYS[1]` and lists the channel (`ARGV[4]`) in
/// `KEYS[2]`, if the stored state is the one expected: none when `ARGV[1]` is `0`, otherwise
/// exactly `ARGV[2]`. 1 = stored, 0 = not.
static SET_CHANNEL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '0' then
  if current then return 0 end
elseif current ~= ARGV[2] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[4])
return 1
",
    )
});

/// Every channel listed in `KEYS[1]` (state keys `ARGV[1] .. id`). Flat: `id, state` per
/// channel, the state nil when the key is missing.
static CHANNELS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  table.insert(out, id)
  table.insert(out, redis.call('GET', ARGV[1] .. id))
end
return out
",
    )
});

/// stoka's storage on a Redis server.
#[derive(Clone)]
pub struct RedisStorage {
    connection: ConnectionManager,
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

/// `part` with `%`, `:`, `{` and `}` escaped, so that keys split back into their parts and the
/// hash tag is always the wallet.
fn escape(part: &str) -> Cow<'_, str> {
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
    mut connection: ConnectionManager,
    invocation: &ScriptInvocation<'_>,
) -> Result<T, StorageError> {
    invocation
        .invoke_async(&mut connection)
        .await
        .map_err(backend)
}

impl RedisStorage {
    /// Connects to the server at `url` (`redis://host:port`, `rediss://…` for TLS,
    /// `redis+unix:///path/to/socket`), reconnecting on its own when the connection drops;
    /// every key starts with `namespace`.
    ///
    /// # Errors
    ///
    /// [`StorageError::Backend`] when the URL is malformed, the server is unreachable, or it
    /// reports a version older than 7.0.
    pub async fn connect(url: &str, namespace: &str) -> Result<RedisStorage, StorageError> {
        let client = ::redis::Client::open(url)
            .map_err(|error| backend(format!("bad Redis URL: {error}")))?;
        let mut connection = ConnectionManager::new(client)
            .await
            .map_err(|error| backend(format!("cannot reach Redis: {error}")))?;
        // The scripts use commands of Redis 7.0. A server that hides its version is trusted.
        let info: Result<String, _> = ::redis::cmd("INFO")
            .arg("server")
            .query_async(&mut connection)
            .await;
        if let Some(version) = info.ok().as_deref().and_then(server_version)
            && version < (7, 0)
        {
            return Err(backend(format!(
                "Redis {}.{} is too old: stoka needs 7.0 or later",
                version.0, version.1
            )));
        }
        Ok(RedisStorage {
            connection,
            namespace: escape(namespace).into_owned(),
        })
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

/// `(major, minor)` from the answer to `INFO server`.
fn server_version(info: &str) -> Option<(u32, u32)> {
    let version = info
        .lines()
        .find_map(|line| line.strip_prefix("redis_version:"))?;
    let mut parts = version.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
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
                Some(email) => ::redis::cmd("SET").arg(key).arg(email).to_owned(),
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
        Arc::new(RedisPayments {
            connection: self.connection.clone(),
            namespace: self.namespace.clone(),
        })
    }

    fn channel_store(&self) -> Arc<dyn ChannelStore> {
        Arc::new(RedisChannels {
            connection: self.connection.clone(),
            namespace: self.namespace.clone(),
        })
    }
}

/// A failure of the server, as the payment layers see it.
fn unavailable(error: StorageError) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

/// A time to live for the server in milliseconds: at least 1 (the server refuses `PX 0`), at
/// most [`MAX_TTL_MS`].
fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_TTL_MS)
}

/// The payment records and claims of a [`RedisStorage`] (its connection and namespace).
#[derive(Clone)]
struct RedisPayments {
    connection: ConnectionManager,
    /// The escaped namespace every key starts with.
    namespace: String,
}

impl RedisPayments {
    fn record_key(&self, key: PaymentKey) -> String {
        format!("{}:p:{{{}}}", self.namespace, hex::encode(key.0))
    }

    fn claim_key(&self, id: &[u8]) -> String {
        format!("{}:pc:{{{}}}", self.namespace, hex::encode(id))
    }

    /// The sorted set of the keys (hex) of pending settlements, by when they were listed.
    fn pending_key(&self) -> String {
        format!("{}:pp", self.namespace)
    }
}

impl PaymentBackend for RedisPayments {
    fn load(&self, key: PaymentKey) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            ::redis::cmd("GET")
                .arg(self.record_key(key))
                .query_async(&mut connection)
                .await
                .map_err(|error| unavailable(backend(error)))
        })
    }

    fn swap<'a>(
        &'a self,
        key: PaymentKey,
        expected: Option<&'a [u8]>,
        write: RecordWrite<'a>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut invocation = SWAP_PAYMENT.prepare_invoke();
            invocation.key(self.record_key(key)).key(self.pending_key());
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
            let listed_at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_millis());
            invocation
                .arg(if pending { "1" } else { "0" })
                .arg(hex::encode(key.0))
                .arg(listed_at.to_string());
            let swapped: i64 = invoke(self.connection.clone(), &invocation)
                .await
                .map_err(unavailable)?;
            Ok(swapped == 1)
        })
    }

    fn claim<'a>(&'a self, id: &'a [u8], ttl: Duration) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let set: Option<String> = ::redis::cmd("SET")
                .arg(self.claim_key(id))
                .arg("1")
                .arg("NX")
                .arg("PX")
                .arg(ttl_ms(ttl))
                .query_async(&mut connection)
                .await
                .map_err(|error| unavailable(backend(error)))?;
            Ok(set.is_some())
        })
    }

    /// The oldest listed pending settlements whose records still live; listed keys whose
    /// records expired are unlisted on the way.
    fn pending(&self, limit: usize) -> BoxFuture<'_, Result<Vec<PaymentKey>, StoreError>> {
        Box::pin(async move {
            if limit == 0 {
                return Ok(Vec::new());
            }
            let mut connection = self.connection.clone();
            let stop = i64::try_from(limit - 1).unwrap_or(-1);
            let listed: Vec<String> = ::redis::cmd("ZRANGE")
                .arg(self.pending_key())
                .arg(0)
                .arg(stop)
                .query_async(&mut connection)
                .await
                .map_err(|error| unavailable(backend(error)))?;
            let keys: Vec<PaymentKey> = listed
                .iter()
                .filter_map(|member| hex::decode(member).ok()?.try_into().ok())
                .map(PaymentKey)
                .collect();
            if keys.is_empty() {
                return Ok(keys);
            }
            let mut exists = ::redis::pipe();
            for key in &keys {
                exists.cmd("EXISTS").arg(self.record_key(*key));
            }
            let live: Vec<bool> = exists
                .query_async(&mut connection)
                .await
                .map_err(|error| unavailable(backend(error)))?;
            let (live, gone): (Vec<_>, Vec<_>) =
                keys.into_iter().zip(live).partition(|(_, live)| *live);
            if !gone.is_empty() {
                let mut unlist = ::redis::cmd("ZREM");
                unlist.arg(self.pending_key());
                for (key, _) in &gone {
                    unlist.arg(hex::encode(key.0));
                }
                let _: i64 = unlist
                    .query_async(&mut connection)
                    .await
                    .map_err(|error| unavailable(backend(error)))?;
            }
            Ok(live.into_iter().map(|(key, _)| key).collect())
        })
    }
}

/// The channel states of a [`RedisStorage`] (its connection and namespace).
#[derive(Clone)]
struct RedisChannels {
    connection: ConnectionManager,
    /// The escaped namespace every key starts with.
    namespace: String,
}

impl RedisChannels {
    /// The prefix of every channel key (one hash tag for all).
    fn prefix(&self) -> String {
        format!("{}:ch:{{channels}}:", self.namespace)
    }

    fn state_key(&self, channel: ChannelId) -> String {
        format!("{}{}", self.prefix(), hex::encode(channel.0))
    }

    fn list_key(&self) -> String {
        format!("{}all", self.prefix())
    }
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

impl ChannelStore for RedisChannels {
    fn load(&self, channel: ChannelId) -> BoxFuture<'_, Result<Option<ChannelState>, StoreError>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let record: Option<Vec<u8>> = ::redis::cmd("GET")
                .arg(self.state_key(channel))
                .query_async(&mut connection)
                .await
                .map_err(|error| unavailable(backend(error)))?;
            record
                .map(|record| decode_channel(channel, &record))
                .transpose()
        })
    }

    fn compare_and_set(
        &self,
        channel: ChannelId,
        current: Option<ChannelState>,
        new: ChannelState,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut invocation = SET_CHANNEL.prepare_invoke();
            invocation.key(self.state_key(channel)).key(self.list_key());
            match current {
                None => invocation.arg("0").arg(""),
                Some(current) => invocation.arg("1").arg(&current.to_record(channel)[..]),
            };
            invocation
                .arg(&new.to_record(channel)[..])
                .arg(hex::encode(channel.0));
            let set: i64 = invoke(self.connection.clone(), &invocation)
                .await
                .map_err(unavailable)?;
            Ok(set == 1)
        })
    }

    fn channels(&self) -> BoxFuture<'_, Result<Vec<(ChannelId, ChannelState)>, StoreError>> {
        Box::pin(async move {
            let mut invocation = CHANNELS.prepare_invoke();
            invocation.key(self.list_key()).arg(self.prefix());
            let fields: Vec<Option<Vec<u8>>> = invoke(self.connection.clone(), &invocation)
                .await
                .map_err(unavailable)?;
            let mut channels = Vec::with_capacity(fields.len() / 2);
            for pair in fields.chunks(2) {
                let [Some(id), record] = pair else {
                    return Err(StoreError::Unavailable(
                        "the server sent a malformed channel list".into(),
                    ));
                };
                let mut channel = [0; 32];
                hex::decode_to_slice(id, &mut channel).map_err(|_| {
                    StoreError::Unavailable("a listed channel id is malformed".into())
                })?;
                let channel = ChannelId(channel);
                let Some(record) = record else {
                    return Err(StoreError::Unavailable(format!(
                        "channel {channel} is listed but has no stored state"
                    )));
                };
                channels.push((channel, decode_channel(channel, record)?));
            }
            channels.sort_by_key(|(channel, _)| *channel);
            Ok(channels)
        })
    }
}

/// The Redis server the tests use: `STOKA_TEST_REDIS_URL` (`scripts/test` starts one and sets
/// it). `None` when it is unset, after saying that the calling test is skipped.
///
/// # Panics
///
/// When it is unset and `CI` is `true`: in CI, a test that needs Redis fails rather than
/// silently skips.
#[doc(hidden)]
#[must_use]
pub fn redis_url_for_tests() -> Option<String> {
    if let Some(url) = std::env::var("STOKA_TEST_REDIS_URL")
        .ok()
        .filter(|url| !url.is_empty())
    {
        return Some(url);
    }
    let ci = std::env::var("CI").unwrap_or_default();
    assert!(
        !(ci.eq_ignore_ascii_case("true") || ci == "1"),
        "STOKA_TEST_REDIS_URL is not set, and CI is: the Redis tests must run in CI \
         (scripts/test starts a redis-server and sets it)"
    );
    eprintln!(
        "skipped: STOKA_TEST_REDIS_URL is not set (scripts/test starts a redis-server and \
         sets it)"
    );
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::suite::{self, Expiry};
    use tower_paywall::store::{
        BackedStore, ChannelPhase, Fingerprint, PaymentStore, Reservation, conformance,
    };

    /// A connection to the test server in a namespace of its own; `None` (skipped) without a
    /// server outside CI.
    async fn fresh() -> Option<RedisStorage> {
        let url = redis_url_for_tests()?;
        Some(
            RedisStorage::connect(&url, &unique_namespace())
                .await
                .unwrap(),
        )
    }

    /// A namespace no other run uses.
    fn unique_namespace() -> String {
        let token = receipt::token().unwrap();
        let random: String = token[..6].iter().map(|b| format!("{b:02x}")).collect();
        format!("stoka-test-{}-{random}", std::process::id())
    }

    /// Deletes every key of `namespace` (tests only: request paths never list keys).
    async fn clean(storage: &RedisStorage) {
        let mut connection = storage.connection.clone();
        let pattern = format!("{}:*", storage.namespace);
        let mut cursor = 0_u64;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = ::redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut connection)
                .await
                .unwrap();
            if !keys.is_empty() {
                let _: i64 = ::redis::cmd("DEL")
                    .arg(keys)
                    .query_async(&mut connection)
                    .await
                    .unwrap();
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
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
        let Some(url) = redis_url_for_tests() else {
            return;
        };
        let namespace = unique_namespace();
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
        clean(&storage).await;
    }

    #[tokio::test]
    async fn records_expire_on_the_servers_clock() {
        let Some(storage) = fresh().await else {
            return;
        };
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
        clean(&storage).await;
    }

    #[tokio::test]
    async fn binary_bodies_and_odd_names_round_trip() {
        let Some(storage) = fresh().await else {
            return;
        };
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
        clean(&storage).await;
    }

    #[tokio::test]
    async fn concurrent_requests_agree() {
        let Some(storage) = fresh().await else {
            return;
        };
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
        clean(&storage).await;
    }

    /// `storage`'s payment back end, with its keys at hand.
    fn payments(storage: &RedisStorage) -> RedisPayments {
        RedisPayments {
            connection: storage.connection.clone(),
            namespace: storage.namespace.clone(),
        }
    }

    /// `storage`'s channel store, with its keys at hand.
    fn channels(storage: &RedisStorage) -> RedisChannels {
        RedisChannels {
            connection: storage.connection.clone(),
            namespace: storage.namespace.clone(),
        }
    }

    /// Runs a raw command on `storage`'s server (to damage records on purpose).
    async fn raw(storage: &RedisStorage, command: &::redis::Cmd) {
        let mut connection = storage.connection.clone();
        command
            .query_async::<::redis::Value>(&mut connection)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn payments_pass_the_conformance_suite() {
        let Some(storage) = fresh().await else {
            return;
        };
        conformance::payment_store(Arc::new(BackedStore::new(storage.payment_backend()))).await;
        clean(&storage).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_nodes_share_their_payments() {
        let Some(url) = redis_url_for_tests() else {
            return;
        };
        let namespace = unique_namespace();
        let one = RedisStorage::connect(&url, &namespace).await.unwrap();
        let other = RedisStorage::connect(&url, &namespace).await.unwrap();
        // What one node settled, the other resumes rather than serving it again.
        conformance::shared_payment_store(
            Arc::new(BackedStore::new(one.payment_backend())),
            Arc::new(BackedStore::new(other.payment_backend())),
        )
        .await;
        clean(&one).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn channels_pass_the_conformance_suite_and_are_shared() {
        let Some(url) = redis_url_for_tests() else {
            return;
        };
        let namespace = unique_namespace();
        let one = RedisStorage::connect(&url, &namespace).await.unwrap();
        let store = one.channel_store();
        conformance::channel_store(store.clone()).await;
        let listed = store.channels().await.unwrap();
        let ids: Vec<ChannelId> = listed.iter().map(|(id, _)| *id).collect();
        assert_eq!(
            ids,
            [ChannelId([1; 32]), ChannelId([2; 32]), ChannelId([3; 32])]
        );
        // Another node sees the same channels, and writes over the same states.
        let other = RedisStorage::connect(&url, &namespace).await.unwrap();
        let shared = other.channel_store();
        assert_eq!(shared.channels().await.unwrap(), listed);
        let (a, state) = listed[0];
        let closing = ChannelState {
            phase: ChannelPhase::Closing,
            ..state
        };
        assert!(
            !shared
                .compare_and_set(a, Some(ChannelState::NEW), closing)
                .await
                .unwrap()
        );
        assert!(
            shared
                .compare_and_set(a, Some(state), closing)
                .await
                .unwrap()
        );
        assert_eq!(store.load(a).await.unwrap(), Some(closing));
        // States never expire; the listing is one set under the same hash tag.
        let channels = channels(&one);
        assert_eq!(pttl(&one, &channels.state_key(a)).await, -1);
        assert_eq!(pttl(&one, &channels.list_key()).await, -1);
        assert_eq!(
            channels.state_key(a),
            format!("{namespace}:ch:{{channels}}:{}", hex::encode([1; 32]))
        );
        // And another namespace has none.
        let elsewhere = RedisStorage::connect(&url, &format!("{namespace}-other"))
            .await
            .unwrap();
        assert_eq!(elsewhere.channel_store().channels().await.unwrap(), []);
        clean(&one).await;
    }

    #[tokio::test]
    async fn swaps_keep_or_renew_the_records_lifetime() {
        let Some(storage) = fresh().await else {
            return;
        };
        let backend = payments(&storage);
        let key = PaymentKey::derive(&[b"lifetime"]);
        let record_key = backend.record_key(key);
        assert_eq!(
            record_key,
            format!("{}:p:{{{}}}", storage.namespace, hex::encode(key.0))
        );
        let (first, second, third) = ([1; 40], [2; 40], [3; 40]);
        let put = |value, ttl| RecordWrite::Put {
            value,
            ttl,
            pending: false,
        };
        let ten = Some(Duration::from_secs(10));
        // A new record needs a lifetime: keeping none would keep it forever.
        let error = backend
            .swap(key, None, put(&first, None))
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "payment store unavailable: a new payment record needs a lifetime"
        );
        assert_eq!(pttl(&storage, &record_key).await, -2);
        assert!(backend.swap(key, None, put(&first, ten)).await.unwrap());
        let before = pttl(&storage, &record_key).await;
        assert!((9_000..=10_000).contains(&before), "{before} ms");
        // Only the expected record is replaced: by its tag, the first RECORD_TAG_LEN bytes.
        assert!(!backend.swap(key, None, put(&second, ten)).await.unwrap());
        let mut other_tag = first;
        other_tag[RECORD_TAG_LEN - 1] = 9;
        assert!(
            !backend
                .swap(key, Some(&other_tag), put(&second, None))
                .await
                .unwrap()
        );
        assert_eq!(backend.load(key).await.unwrap(), Some(first.to_vec()));
        // Without a lifetime, the key keeps the one it has.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut same_tag = first;
        same_tag[RECORD_TAG_LEN] = 9;
        assert!(
            backend
                .swap(key, Some(&same_tag), put(&second, None))
                .await
                .unwrap()
        );
        let kept = pttl(&storage, &record_key).await;
        assert!(kept > 0 && kept < before, "{kept} ms after {before} ms");
        assert_eq!(backend.load(key).await.unwrap(), Some(second.to_vec()));
        // With one, it starts again.
        let minute = Some(Duration::from_secs(60));
        assert!(
            backend
                .swap(key, Some(&second), put(&third, minute))
                .await
                .unwrap()
        );
        let renewed = pttl(&storage, &record_key).await;
        assert!((59_000..=60_000).contains(&renewed), "{renewed} ms");
        // A removal is a swap too.
        assert!(
            !backend
                .swap(key, Some(&second), RecordWrite::Remove)
                .await
                .unwrap()
        );
        assert!(
            backend
                .swap(key, Some(&third), RecordWrite::Remove)
                .await
                .unwrap()
        );
        assert_eq!(backend.load(key).await.unwrap(), None);
        assert!(
            !backend
                .swap(key, Some(&third), put(&first, ten))
                .await
                .unwrap()
        );
        // A lifetime under a millisecond is sent as 1 ms (the server refuses 0).
        let instant = Some(Duration::from_micros(10));
        assert!(backend.swap(key, None, put(&first, instant)).await.unwrap());
        assert!(backend.claim(b"instant", Duration::ZERO).await.unwrap());
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(backend.load(key).await.unwrap(), None);
        assert!(backend.claim(b"instant", Duration::ZERO).await.unwrap());
        // Claims expire natively under their own key.
        let id = b"tx:\x00{1}";
        assert!(backend.claim(id, Duration::from_secs(10)).await.unwrap());
        assert!(!backend.claim(id, Duration::from_secs(10)).await.unwrap());
        let claim_key = backend.claim_key(id);
        assert_eq!(
            claim_key,
            format!("{}:pc:{{{}}}", storage.namespace, hex::encode(id))
        );
        let left = pttl(&storage, &claim_key).await;
        assert!((9_000..=10_000).contains(&left), "{left} ms");
        clean(&storage).await;
    }

    #[tokio::test]
    async fn damaged_payment_records_are_unavailable_not_new() {
        let Some(storage) = fresh().await else {
            return;
        };
        let backend = payments(&storage);
        let key = PaymentKey::derive(&[b"damaged"]);
        raw(
            &storage,
            ::redis::cmd("SET")
                .arg(backend.record_key(key))
                .arg(&[2_u8; 40][..])
                .arg("PX")
                .arg(60_000),
        )
        .await;
        let store = BackedStore::new(storage.payment_backend());
        let error = store
            .reserve(key, Fingerprint([1; 32]), Duration::from_secs(60))
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "payment store unavailable: payment record is not readable: damaged"
        );
        assert!(matches!(error, StoreError::Unavailable(_)));
        // Nothing was written over it.
        assert_eq!(backend.load(key).await.unwrap(), Some(vec![2; 40]));
        // A sound record under another key is still served.
        let sound = PaymentKey::derive(&[b"sound"]);
        assert_eq!(
            store
                .reserve(sound, Fingerprint([1; 32]), Duration::from_secs(60))
                .await
                .unwrap(),
            Reservation::New
        );
        clean(&storage).await;
    }

    #[tokio::test]
    async fn damaged_channel_states_are_unavailable() {
        let Some(storage) = fresh().await else {
            return;
        };
        let store = channels(&storage);
        let (a, b) = (ChannelId([1; 32]), ChannelId([2; 32]));
        let state = conformance::voucher(5, 1);
        assert!(store.compare_and_set(a, None, state).await.unwrap());
        // Bytes that do not decode.
        raw(
            &storage,
            ::redis::cmd("SET")
                .arg(store.state_key(b))
                .arg(&[7_u8; 156][..]),
        )
        .await;
        raw(
            &storage,
            ::redis::cmd("SADD")
                .arg(store.list_key())
                .arg(hex::encode(b.0)),
        )
        .await;
        let damaged =
            format!("payment store unavailable: the stored state of channel {b} is damaged");
        assert_eq!(store.load(b).await.unwrap_err().to_string(), damaged);
        assert_eq!(store.channels().await.unwrap_err().to_string(), damaged);
        assert_eq!(store.load(a).await.unwrap(), Some(state));
        // And nothing is written over them.
        assert!(!store.compare_and_set(b, None, state).await.unwrap());
        // Another channel's record under this channel's key.
        raw(
            &storage,
            ::redis::cmd("SET")
                .arg(store.state_key(b))
                .arg(&state.to_record(a)[..]),
        )
        .await;
        let misplaced = format!(
            "payment store unavailable: the stored state of channel {b} belongs to another channel"
        );
        assert_eq!(store.load(b).await.unwrap_err().to_string(), misplaced);
        assert_eq!(store.channels().await.unwrap_err().to_string(), misplaced);
        // A listed channel whose state is gone.
        raw(&storage, ::redis::cmd("DEL").arg(store.state_key(b))).await;
        assert_eq!(store.load(b).await.unwrap(), None);
        assert_eq!(
            store.channels().await.unwrap_err().to_string(),
            format!("payment store unavailable: channel {b} is listed but has no stored state")
        );
        // A listed id that is not one.
        raw(
            &storage,
            ::redis::cmd("SREM")
                .arg(store.list_key())
                .arg(hex::encode(b.0)),
        )
        .await;
        assert_eq!(store.channels().await.unwrap(), [(a, state)]);
        raw(
            &storage,
            ::redis::cmd("SADD").arg(store.list_key()).arg("zz"),
        )
        .await;
        assert_eq!(
            store.channels().await.unwrap_err().to_string(),
            "payment store unavailable: a listed channel id is malformed"
        );
        clean(&storage).await;
    }

    #[test]
    fn lifetimes_are_whole_milliseconds_the_server_accepts() {
        assert_eq!(ttl_ms(Duration::ZERO), 1);
        assert_eq!(ttl_ms(Duration::from_micros(1500)), 1);
        assert_eq!(ttl_ms(Duration::from_secs(60)), 60_000);
        assert_eq!(ttl_ms(Duration::MAX), MAX_TTL_MS);
    }

    #[test]
    fn escaping_keeps_parts_apart() {
        assert_eq!(escape("GABC"), "GABC");
        assert_eq!(escape("a%b:c{d}e"), "a%25b%3Ac%7Bd%7De");
        assert_ne!(escape("%3A"), escape(":"));
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

    #[test]
    fn versions_are_read_from_info() {
        let info = "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n";
        assert_eq!(server_version(info), Some((7, 0)));
        assert_eq!(server_version("redis_version:6.2.1"), Some((6, 2)));
        assert_eq!(server_version("nothing"), None);
    }
}
