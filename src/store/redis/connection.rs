//! [`RedisConnection`]: one server or a cluster, behind one connection type.

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::super::StoreError;

/// The URL scheme of a Redis Cluster: `redis+cluster://host:port[,host:port…]`.
const CLUSTER_SCHEME: &str = "redis+cluster://";

/// A connection to one Redis server (reconnecting on its own) or to a Redis Cluster (routing
/// each command to the node that holds its keys' slot, following the cluster's changes).
/// Cheap to clone: clones share the connection. Run commands and scripts on it with
/// redis-rs (`query_async`, `invoke_async`).
#[derive(Clone)]
pub struct RedisConnection(Inner);

#[derive(Clone)]
enum Inner {
    Server(ConnectionManager),
    Cluster(ClusterConnection),
}

impl RedisConnection {
    /// Connects to `url` (see [`RedisStore::connect`](super::RedisStore::connect)) and
    /// checks the server's version.
    pub(super) async fn open(url: &str) -> Result<RedisConnection, StoreError> {
        let mut connection = match url.strip_prefix(CLUSTER_SCHEME) {
            Some(nodes) => RedisConnection(Inner::Cluster(cluster(nodes).await?)),
            None => {
                let client = redis::Client::open(url)
                    .map_err(|error| bad_url(&format!("bad Redis URL: {error}")))?;
                let manager = ConnectionManager::new(client).await.map_err(|error| {
                    StoreError::Unavailable(format!("cannot reach Redis: {error}"))
                })?;
                RedisConnection(Inner::Server(manager))
            }
        };
        connection.check_version().await?;
        Ok(connection)
    }

    /// Whether this is a cluster's connection.
    pub fn is_cluster(&self) -> bool {
        matches!(self.0, Inner::Cluster(_))
    }

    /// Refuses a server older than 7.0 (the scripts use its commands). A server that hides its
    /// version is trusted; a cluster answers for each of its nodes, and the oldest counts.
    async fn check_version(&mut self) -> Result<(), StoreError> {
        let info: Result<Value, _> = redis::cmd("INFO").arg("server").query_async(self).await;
        let mut versions = Vec::new();
        if let Ok(info) = &info {
            collect_versions(info, &mut versions);
        }
        match versions.into_iter().min() {
            Some((major, minor)) if major < 7 => Err(StoreError::Unavailable(format!(
                "Redis {major}.{minor} is too old: 7.0 or later is needed"
            ))),
            _ => Ok(()),
        }
    }
}

fn bad_url(message: &str) -> StoreError {
    StoreError::Unavailable(message.to_owned())
}

/// Connects to the cluster one of whose nodes is in `nodes` (`[user:password@]host:port,…`).
async fn cluster(nodes: &str) -> Result<ClusterConnection, StoreError> {
    let (credentials, nodes) = match nodes.rsplit_once('@') {
        Some((credentials, nodes)) => (Some(credentials), nodes),
        None => (None, nodes),
    };
    let nodes = nodes.trim_end_matches('/');
    if nodes.is_empty() || nodes.contains('/') {
        return Err(bad_url(
            "bad Redis Cluster URL: expected redis+cluster://host:port[,host:port…]",
        ));
    }
    let urls: Vec<String> = nodes
        .split(',')
        .map(|node| format!("redis://{node}"))
        .collect();
    let mut builder = ClusterClientBuilder::new(urls);
    if let Some(credentials) = credentials {
        let (user, password) = credentials.split_once(':').unwrap_or(("", credentials));
        let decode = |text: &str| {
            percent_decode(text)
                .ok_or_else(|| bad_url("bad Redis Cluster URL: malformed credentials"))
        };
        if !user.is_empty() {
            builder = builder.username(decode(user)?);
        }
        builder = builder.password(decode(password)?);
    }
    let client = builder
        .build()
        .map_err(|error| bad_url(&format!("bad Redis Cluster URL: {error}")))?;
    client.get_async_connection().await.map_err(|error| {
        StoreError::Unavailable(format!("cannot reach the Redis Cluster: {error}"))
    })
}

/// `%XX`-decoded `text`, `None` when an escape is malformed or the result is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            decoded.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

/// Every `redis_version:major.minor` in an `INFO` answer (one per node from a cluster).
fn collect_versions(value: &Value, versions: &mut Vec<(u32, u32)>) {
    match value {
        Value::BulkString(bytes) => {
            versions.extend(std::str::from_utf8(bytes).ok().and_then(server_version))
        }
        Value::VerbatimString { text, .. } | Value::SimpleString(text) => {
            versions.extend(server_version(text));
        }
        Value::Array(values) | Value::Set(values) => {
            values
                .iter()
                .for_each(|value| collect_versions(value, versions));
        }
        Value::Map(pairs) => pairs
            .iter()
            .for_each(|(_, value)| collect_versions(value, versions)),
        _ => {}
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

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Inner::Server(connection) => connection.req_packed_command(cmd),
            Inner::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Inner::Server(connection) => connection.req_packed_commands(pipeline, offset, count),
            Inner::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Inner::Server(connection) => connection.get_db(),
            Inner::Cluster(connection) => connection.get_db(),
        }
    }
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConnection")
            .field("cluster", &self.is_cluster())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_info_of_a_server_or_every_node() {
        assert_eq!(
            server_version("# Server\r\nredis_version:7.2.4\r\nredis_mode:standalone\r\n"),
            Some((7, 2))
        );
        assert_eq!(server_version("# Server\r\n"), None);
        let nodes = Value::Map(vec![
            (
                Value::SimpleString("a".into()),
                Value::BulkString(b"redis_version:7.2.1\r\n".to_vec()),
            ),
            (
                Value::SimpleString("b".into()),
                Value::VerbatimString {
                    format: redis::VerbatimFormat::Text,
                    text: "redis_version:6.2.0\r\n".into(),
                },
            ),
        ]);
        let mut versions = Vec::new();
        collect_versions(&nodes, &mut versions);
        assert_eq!(versions, [(7, 2), (6, 2)]);
    }

    #[test]
    fn credentials_are_percent_decoded() {
        assert_eq!(percent_decode("p%40ss%3Aw").as_deref(), Some("p@ss:w"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("bad%4"), None);
        assert_eq!(percent_decode("bad%zz"), None);
    }

    #[tokio::test]
    async fn malformed_urls_are_refused_with_what_is_wrong() {
        for (url, expected) in [
            ("redis+cluster://", "bad Redis Cluster URL"),
            ("redis+cluster://127.0.0.1:1/path", "bad Redis Cluster URL"),
            ("redis+cluster://u:%zz@127.0.0.1:1", "malformed credentials"),
            ("nonsense://", "bad Redis URL"),
        ] {
            let error = RedisConnection::open(url).await.unwrap_err().to_string();
            assert!(error.contains(expected), "{url}: {error}");
        }
    }
}
