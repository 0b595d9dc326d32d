//! `store = "redis"`: sessions in Redis, shared by every replica — standalone (`redis://`,
//! `rediss://` for TLS, password in the URL), Sentinel (`redis+sentinel://host:port,…/service`)
//! or Cluster (a list of node URLs). Connections are made lazily and re-made after a failure,
//! so Tollgate starts while Redis is down and recovers by itself when it returns; every failure
//! in between is a `StoreError::Unavailable` (503 for the request), never a pass.
//!
//! Keys: `tollgate:s:<id>` holds the session as JSON and expires with its lifetime or idle
//! timeout, whichever comes first; `tollgate:all`, `tollgate:sub:<sub>` and
//! `tollgate:sid:<sid>` are sets of ids for the admin API and back-channel logout (stale
//! members are dropped when met).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::error::StoreError;
use super::memory_store::StoredSession;
use super::redis_cache::{KEY_PREFIX, SessionCache};
use crate::clock::UnixTime;
pub use crate::config::RedisTarget;

const ALL: &str = "tollgate:all";
const TIMEOUT: Duration = Duration::from_secs(2);

/// The connection a tracking connection is kept in; emptied when it is lost.
type Slot = std::sync::Mutex<Option<(u64, redis::aio::MultiplexedConnection)>>;

/// Where the one server of a standalone or Sentinel set-up is found.
enum Source {
    Direct(redis::Client),
    Sentinel(tokio::sync::Mutex<redis::sentinel::SentinelClient>),
}

/// Standalone or Sentinel: one multiplexed RESP3 connection with `CLIENT TRACKING` on, made
/// when first needed and made again after a failure (asking the sentinels for the current
/// master each time, so a failover is followed).
struct Tracked {
    source: Source,
    slot: Arc<Slot>,
    connecting: tokio::sync::Mutex<()>,
    serial: AtomicU64,
    cache: Arc<SessionCache>,
    /// Whether the current connection has `CLIENT TRACKING` on, so copies may be kept.
    tracking: std::sync::atomic::AtomicBool,
}

enum Connection {
    Tracked(Tracked),
    /// Cluster connections are not tracked: every read goes to Redis.
    Cluster {
        client: redis::cluster::ClusterClient,
        connection: tokio::sync::Mutex<Option<redis::cluster_async::ClusterConnection>>,
    },
}

/// Sessions in Redis.
pub struct RedisStore {
    connection: Connection,
    metrics: Arc<crate::metrics::Metrics>,
}

fn unavailable(error: &redis::RedisError) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

/// A connection to run one command on.
enum Handle {
    Multiplexed(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Handle {
    async fn query<T: redis::FromRedisValue>(
        &mut self,
        command: &redis::Cmd,
    ) -> redis::RedisResult<T> {
        let call = async {
            match self {
                Self::Multiplexed(connection) => command.query_async(connection).await,
                Self::Cluster(connection) => command.query_async(connection).await,
            }
        };
        tokio::time::timeout(TIMEOUT, call)
            .await
            .unwrap_or_else(|_| {
                Err(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "Redis did not answer in time",
                )))
            })
    }
}

/// `client` speaking RESP3, which carries the invalidation messages.
fn resp3(client: &redis::Client) -> redis::RedisResult<redis::Client> {
    let info = client.get_connection_info().clone();
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(redis::ProtocolVersion::RESP3);
    redis::Client::open(info.set_redis_settings(settings))
}

impl Tracked {
    fn new(source: Source) -> Self {
        Self {
            source,
            slot: Arc::new(std::sync::Mutex::new(None)),
            connecting: tokio::sync::Mutex::new(()),
            serial: AtomicU64::new(0),
            cache: Arc::new(SessionCache::default()),
            tracking: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn current(&self) -> Option<redis::aio::MultiplexedConnection> {
        let slot = self
            .slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slot.as_ref().map(|(_, connection)| connection.clone())
    }

    async fn connection(&self) -> Result<redis::aio::MultiplexedConnection, StoreError> {
        if let Some(connection) = self.current() {
            return Ok(connection);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(connection) = self.current() {
            return Ok(connection);
        }
        tokio::time::timeout(TIMEOUT * 2, self.connect())
            .await
            .map_err(|_| StoreError::Unavailable("Redis did not answer in time".to_owned()))?
            .map_err(|error| unavailable(&error))
    }

    async fn connect(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let client = match &self.source {
            Source::Direct(client) => client.clone(),
            Source::Sentinel(sentinel) => sentinel.lock().await.async_get_client().await?,
        };
        let serial = self.serial.fetch_add(1, Ordering::SeqCst) + 1;
        let cache = self.cache.clone();
        let slot: Weak<Slot> = Arc::downgrade(&self.slot);
        // Runs on the connection's reader, in order with the replies.
        let on_push = move |push: redis::PushInfo| {
            if cache.apply(&push)
                && let Some(slot) = slot.upgrade()
            {
                let mut slot = slot
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if slot.as_ref().is_some_and(|(current, _)| *current == serial) {
                    *slot = None;
                }
            }
            Ok::<(), std::convert::Infallible>(())
        };
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_push_sender(on_push);
        let mut connection = resp3(&client)?
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let tracking: redis::RedisResult<()> = redis::cmd("CLIENT")
            .arg("TRACKING")
            .arg("ON")
            .query_async(&mut connection)
            .await;
        let tracked = match tracking {
            Ok(()) => true,
            // An ACL or a managed Redis may refuse the command: then no copies are kept.
            Err(error)
                if matches!(
                    error.kind(),
                    redis::ErrorKind::Server(_) | redis::ErrorKind::Extension
                ) =>
            {
                tracing::warn!(%error, "Redis refused CLIENT TRACKING; every session read goes to Redis");
                false
            }
            Err(error) => return Err(error),
        };
        // Whatever was cached came through a connection whose invalidations may be lost.
        self.tracking.store(tracked, Ordering::SeqCst);
        self.cache.clear();
        *self
            .slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((serial, connection.clone()));
        Ok(connection)
    }

    fn reset(&self) {
        self.cache.clear();
        *self
            .slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }
}

impl RedisStore {
    /// A store for `target`; nothing is connected yet.
    ///
    /// # Errors
    /// When the URLs cannot make a client.
    pub fn new(
        target: &RedisTarget,
        ca: Option<&[u8]>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Self, String> {
        let certificates = || redis::TlsCertificates {
            client_tls: None,
            root_cert: ca.map(<[u8]>::to_vec),
        };
        let connection = match target {
            RedisTarget::Standalone(url) => {
                let client = match ca {
                    Some(_) => redis::Client::build_with_tls(url.as_str(), certificates()),
                    None => redis::Client::open(url.as_str()),
                }
                .map_err(|error| error.to_string())?;
                Connection::Tracked(Tracked::new(Source::Direct(client)))
            }
            RedisTarget::Sentinel { sentinels, service } => {
                let client = redis::sentinel::SentinelClient::build(
                    sentinels.clone(),
                    service.as_str(),
                    None,
                    redis::sentinel::SentinelServerType::Master,
                )
                .map_err(|error| error.to_string())?;
                Connection::Tracked(Tracked::new(Source::Sentinel(tokio::sync::Mutex::new(
                    client,
                ))))
            }
            RedisTarget::Cluster(nodes) => {
                let mut builder = redis::cluster::ClusterClient::builder(nodes.clone());
                if ca.is_some() {
                    builder = builder.certs(certificates());
                }
                let client = builder
                    .connection_timeout(TIMEOUT)
                    .response_timeout(TIMEOUT)
                    .build()
                    .map_err(|error| error.to_string())?;
                Connection::Cluster {
                    client,
                    connection: tokio::sync::Mutex::new(None),
                }
            }
        };
        Ok(Self {
            connection,
            metrics,
        })
    }

    async fn handle(&self) -> Result<Handle, StoreError> {
        match &self.connection {
            Connection::Tracked(tracked) => Ok(Handle::Multiplexed(tracked.connection().await?)),
            Connection::Cluster { client, connection } => {
                let mut cached = connection.lock().await;
                if let Some(existing) = cached.as_ref() {
                    return Ok(Handle::Cluster(existing.clone()));
                }
                let fresh = tokio::time::timeout(TIMEOUT * 2, client.get_async_connection())
                    .await
                    .map_err(|_| {
                        StoreError::Unavailable("Redis Cluster did not answer in time".to_owned())
                    })?
                    .map_err(|error| unavailable(&error))?;
                *cached = Some(fresh.clone());
                Ok(Handle::Cluster(fresh))
            }
        }
    }

    /// Forgets the connection after a failure, so the next command reconnects.
    async fn reset(&self) {
        match &self.connection {
            Connection::Tracked(tracked) => tracked.reset(),
            Connection::Cluster { connection, .. } => *connection.lock().await = None,
        }
    }

    /// The session cache, when reads are tracked.
    fn cache(&self) -> Option<&SessionCache> {
        match &self.connection {
            Connection::Tracked(tracked) if tracked.tracking.load(Ordering::SeqCst) => {
                Some(&tracked.cache)
            }
            Connection::Tracked(_) | Connection::Cluster { .. } => None,
        }
    }

    /// Forgets this process's copy of a session it is about to change.
    fn changed(&self, id: &str) {
        if let Some(cache) = self.cache() {
            cache.invalidate(id);
        }
    }

    async fn run<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> Result<T, StoreError> {
        let result = match self.handle().await {
            Ok(mut handle) => handle
                .query(command)
                .await
                .map_err(|error| unavailable(&error)),
            Err(error) => Err(error),
        };
        if result.is_err() {
            self.metrics.session_store_errors.inc();
            self.reset().await;
        }
        result
    }

    fn key(id: &str) -> String {
        format!("{KEY_PREFIX}{id}")
    }

    /// Whether Redis answers.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let _: String = self.run(&redis::cmd("PING")).await?;
        Ok(())
    }

    /// The session `id`, with the stored bytes (for `touch`): from this process's tracked copy
    /// when Redis has not invalidated it, else read from Redis.
    ///
    /// # Errors
    /// `Unavailable`; a value that is not a session is treated as absent.
    pub async fn get(&self, id: &str) -> Result<Option<(Arc<[u8]>, StoredSession)>, StoreError> {
        if let Some(cached) = self.cache().and_then(|cache| cache.get(id)) {
            return Ok(Some((cached.raw, cached.stored)));
        }
        let generation = self.cache().map(SessionCache::generation);
        let value: Option<Vec<u8>> = self.run(redis::cmd("GET").arg(Self::key(id))).await?;
        let Some(bytes) = value else { return Ok(None) };
        let Ok(stored) = serde_json::from_slice::<StoredSession>(&bytes) else {
            return Ok(None);
        };
        let raw: Arc<[u8]> = bytes.into();
        if let (Some(cache), Some(generation)) = (self.cache(), generation) {
            cache.insert(id, raw.clone(), stored.clone(), generation);
        }
        Ok(Some((raw, stored)))
    }

    /// Records a use: rewrites the session with its new `last_seen` and expiry, but only if it
    /// is still exactly what was read (`seen`), so a concurrent refresh is never overwritten
    /// with the older tokens.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn touch(
        &self,
        id: &str,
        seen: &[u8],
        stored: &StoredSession,
        ttl: i64,
    ) -> Result<(), StoreError> {
        const COMPARE_AND_SET: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) end return false";
        let bytes = serde_json::to_vec(stored)
            .map_err(|error| StoreError::Unavailable(error.to_string()))?;
        let ttl = u64::try_from(ttl.max(1)).unwrap_or(1);
        self.changed(id);
        let _: redis::Value = self
            .run(
                redis::cmd("EVAL")
                    .arg(COMPARE_AND_SET)
                    .arg(1)
                    .arg(Self::key(id))
                    .arg(seen)
                    .arg(bytes)
                    .arg(ttl),
            )
            .await?;
        Ok(())
    }

    /// Stores `stored` under `id`, expiring after `ttl` seconds, and indexes it.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn put(
        &self,
        id: &str,
        stored: &StoredSession,
        ttl: i64,
        sub: &str,
        sid: Option<&str>,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(stored)
            .map_err(|error| StoreError::Unavailable(error.to_string()))?;
        let ttl = u64::try_from(ttl.max(1)).unwrap_or(1);
        let () = self
            .run(
                redis::cmd("SET")
                    .arg(Self::key(id))
                    .arg(bytes)
                    .arg("EX")
                    .arg(ttl),
            )
            .await?;
        let sid = sid.map(Index::Sid);
        for index in [Some(Index::All), Some(Index::Sub(sub)), sid]
            .into_iter()
            .flatten()
        {
            let _: i64 = self
                .run(redis::cmd("SADD").arg(index.key()).arg(id))
                .await?;
        }
        Ok(())
    }

    /// Sets a session's expiry to `ttl` seconds from now (idle timeout after use).
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn expire(
        &self,
        id: &str,
        stored: &StoredSession,
        ttl: i64,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(stored)
            .map_err(|error| StoreError::Unavailable(error.to_string()))?;
        let ttl = u64::try_from(ttl.max(1)).unwrap_or(1);
        self.changed(id);
        // XX: never recreate a session that was ended meanwhile.
        let _: Option<String> = self
            .run(
                redis::cmd("SET")
                    .arg(Self::key(id))
                    .arg(bytes)
                    .arg("XX")
                    .arg("EX")
                    .arg(ttl),
            )
            .await?;
        Ok(())
    }

    /// Deletes a session.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        self.changed(id);
        let deleted: i64 = self.run(redis::cmd("DEL").arg(Self::key(id))).await?;
        self.forget(Index::All, id).await?;
        Ok(deleted > 0)
    }

    /// Ids in an index set: every session, or those of a `sub` or a `sid`.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn ids(&self, index: Index<'_>) -> Result<Vec<String>, StoreError> {
        self.run(redis::cmd("SMEMBERS").arg(index.key())).await
    }

    /// Drops an id that no longer has a session from an index.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn forget(&self, index: Index<'_>, id: &str) -> Result<(), StoreError> {
        let _: i64 = self
            .run(redis::cmd("SREM").arg(index.key()).arg(id))
            .await?;
        Ok(())
    }

    /// The time a session expires from Redis: its lifetime or the idle timeout after `now`.
    pub fn ttl(stored: &StoredSession, now: UnixTime, idle_timeout: i64) -> i64 {
        (stored.session.expires_at - now).min(idle_timeout)
    }
}

/// Which set of session ids.
#[derive(Debug, Clone, Copy)]
pub enum Index<'a> {
    /// Every session.
    All,
    /// The sessions of a user.
    Sub(&'a str),
    /// The sessions of a provider session.
    Sid(&'a str),
}

impl Index<'_> {
    /// The Redis set holding these ids.
    fn key(self) -> String {
        match self {
            Self::All => ALL.to_owned(),
            Self::Sub(sub) => format!("tollgate:sub:{sub}"),
            Self::Sid(sid) => format!("tollgate:sid:{sid}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_urls_choose_the_mode() {
        assert_eq!(
            RedisTarget::parse(&["redis://:pw@127.0.0.1:6379/0".to_owned()]),
            Ok(RedisTarget::Standalone(
                "redis://:pw@127.0.0.1:6379/0".to_owned()
            ))
        );
        assert_eq!(
            RedisTarget::parse(&[
                "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster".to_owned()
            ]),
            Ok(RedisTarget::Sentinel {
                sentinels: vec![
                    "redis://10.0.0.1:26379".to_owned(),
                    "redis://10.0.0.2:26379".to_owned()
                ],
                service: "mymaster".to_owned()
            })
        );
        assert!(
            matches!(RedisTarget::parse(&["redis://a:1".to_owned(), "redis://b:2".to_owned()]), Ok(RedisTarget::Cluster(nodes)) if nodes.len() == 2)
        );
        assert!(RedisTarget::parse(&["http://x".to_owned()]).is_err());
        assert!(RedisTarget::parse(&["redis+sentinel://host:1".to_owned()]).is_err());
        assert!(RedisTarget::parse(&[]).is_err());
    }
}
