//! [`RedisLeases`]: leases every node of a namespace shares.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::{RedisConnection, ttl_ms, unavailable};
use crate::BoxFuture;
use crate::store::{LeaseHolder, Leases, StoreError};

/// Takes the lease `KEYS[1]` for the holder `ARGV[1]` until `ARGV[2]` ms from now if it is
/// free or already the holder's. 1 = held, 0 = another holder has it.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
",
    )
});

/// Deletes the lease `KEYS[1]` if the holder `ARGV[1]` has it.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
",
    )
});

/// [`Leases`] in Redis, shared by every node of the namespace; a lease's deadline is the key's
/// time to live, on the server's clock. From [`RedisStore::leases`](super::RedisStore::leases).
#[derive(Clone)]
pub struct RedisLeases {
    connection: RedisConnection,
    namespace: String,
}

impl RedisLeases {
    pub(super) fn new(connection: RedisConnection, namespace: String) -> Self {
        RedisLeases {
            connection,
            namespace,
        }
    }

    /// The key of the lease `name`.
    pub fn lease_key(&self, name: &[u8]) -> String {
        format!("{}:l:{{{}}}", self.namespace, hex::encode(name))
    }
}

impl Leases for RedisLeases {
    fn acquire<'a>(
        &'a self,
        name: &'a [u8],
        holder: LeaseHolder,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut invocation = ACQUIRE.prepare_invoke();
            invocation
                .key(self.lease_key(name))
                .arg(hex::encode(holder.0))
                .arg(ttl_ms(ttl));
            let mut connection = self.connection.clone();
            let held: i64 = invocation
                .invoke_async(&mut connection)
                .await
                .map_err(unavailable)?;
            Ok(held == 1)
        })
    }

    fn release<'a>(
        &'a self,
        name: &'a [u8],
        holder: LeaseHolder,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut invocation = RELEASE.prepare_invoke();
            invocation
                .key(self.lease_key(name))
                .arg(hex::encode(holder.0));
            let mut connection = self.connection.clone();
            let _: i64 = invocation
                .invoke_async(&mut connection)
                .await
                .map_err(unavailable)?;
            Ok(())
        })
    }
}

impl std::fmt::Debug for RedisLeases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLeases")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}
