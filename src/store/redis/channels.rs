//! [`RedisChannels`]: channel states, spread over [`SHARDS`] hash tags and listed in pages.

use std::sync::LazyLock;

use redis::Script;

use super::{RedisConnection, SHARDS, decode_channel, shard, unavailable};
use crate::BoxFuture;
use crate::store::{ChannelId, ChannelState, ChannelStore, StoreError};

/// The most channels one listing script returns, whatever the page asked for: one script never
/// holds the server for long.
const SCRIPT_PAGE: usize = 512;

/// Stores the channel state `ARGV[3]` under `KEYS[1]` and lists the channel (`ARGV[4]`) in its
/// shard's set `KEYS[2]`, if the stored state is the one expected: none when `ARGV[1]` is
/// `0`, otherwise exactly `ARGV[2]`. 1 = stored, 0 = not.
static SET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '0' then
  if current then return 0 end
elseif current ~= ARGV[2] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], 0, ARGV[4])
return 1
",
    )
});

/// Up to `ARGV[3]` channels of the shard set `KEYS[1]` from `ARGV[2]` (a `ZRANGE … BYLEX`
/// bound: `-`, or `(` and the id after which to start), with their states (keys
/// `ARGV[1] .. id`, in the same slot). Flat: `id, state` per channel, the state nil when the
/// key is missing.
static PAGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], ARGV[2], '+', 'BYLEX', 'LIMIT', 0, tonumber(ARGV[3]))) do
  table.insert(out, id)
  table.insert(out, redis.call('GET', ARGV[1] .. id))
end
return out
",
    )
});

/// Channel states in Redis: a [`ChannelStore`] shared by every node (see the
/// [module docs](super) for the keys). States never expire: a closed channel's state is what
/// refuses its old vouchers. From [`RedisStore::channel_store`](super::RedisStore::channel_store).
#[derive(Clone)]
pub struct RedisChannels {
    connection: RedisConnection,
    namespace: String,
}

impl RedisChannels {
    pub(super) fn new(connection: RedisConnection, namespace: String) -> Self {
        RedisChannels {
            connection,
            namespace,
        }
    }

    /// The prefix of the state keys of shard `shard` (`<ns>:ch:{cSS}:`).
    fn state_prefix(&self, shard: u8) -> String {
        format!("{}:ch:{{c{shard:02x}}}:", self.namespace)
    }

    /// The key of `channel`'s state.
    pub fn state_key(&self, channel: ChannelId) -> String {
        format!(
            "{}{}",
            self.state_prefix(shard(&channel.0)),
            hex::encode(channel.0)
        )
    }

    /// The key of the set listing the channels of `channel`'s shard.
    pub fn list_key(&self, channel: ChannelId) -> String {
        self.shard_list(shard(&channel.0))
    }

    fn shard_list(&self, shard: u8) -> String {
        format!("{}:ch:{{c{shard:02x}}}", self.namespace)
    }
}

impl ChannelStore for RedisChannels {
    fn load(&self, channel: ChannelId) -> BoxFuture<'_, Result<Option<ChannelState>, StoreError>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let record: Option<Vec<u8>> = redis::cmd("GET")
                .arg(self.state_key(channel))
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
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
            let mut invocation = SET.prepare_invoke();
            invocation
                .key(self.state_key(channel))
                .key(self.list_key(channel));
            match current {
                None => invocation.arg("0").arg(""),
                Some(current) => invocation.arg("1").arg(&current.to_record(channel)[..]),
            };
            invocation
                .arg(&new.to_record(channel)[..])
                .arg(hex::encode(channel.0));
            let mut connection = self.connection.clone();
            let set: i64 = invocation
                .invoke_async(&mut connection)
                .await
                .map_err(unavailable)?;
            Ok(set == 1)
        })
    }

    /// Walks the shards from `after`'s, each read by scripts of at most 512 channels.
    fn channels(
        &self,
        after: Option<ChannelId>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(ChannelId, ChannelState)>, StoreError>> {
        Box::pin(async move {
            let mut page = Vec::new();
            let mut connection = self.connection.clone();
            let first = after.map_or(0, |after| shard(&after.0));
            for shard in first..SHARDS {
                let mut from = match after {
                    Some(after) if self::shard(&after.0) == shard => {
                        format!("({}", hex::encode(after.0))
                    }
                    _ => "-".to_owned(),
                };
                loop {
                    let want = (limit - page.len()).min(SCRIPT_PAGE);
                    if want == 0 {
                        return Ok(page);
                    }
                    let mut invocation = PAGE.prepare_invoke();
                    invocation
                        .key(self.shard_list(shard))
                        .arg(self.state_prefix(shard))
                        .arg(&from)
                        .arg(want);
                    let fields: Vec<Option<Vec<u8>>> = invocation
                        .invoke_async(&mut connection)
                        .await
                        .map_err(unavailable)?;
                    let read = fields.len() / 2;
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
                        page.push((channel, decode_channel(channel, record)?));
                        from = format!("({}", hex::encode(channel.0));
                    }
                    if read < want {
                        break;
                    }
                }
            }
            Ok(page)
        })
    }
}

impl std::fmt::Debug for RedisChannels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisChannels")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}
