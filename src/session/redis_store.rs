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

use std::time::Duration;

use tokio::sync::Mutex;

use super::memory_store::StoredSession;
use super::store::StoreError;
use crate::clock::UnixTime;
pub use crate::config::RedisTarget;

const ALL: &str = "tollgate:all";
const TIMEOUT: Duration = Duration::from_secs(2);

enum Connection {
    Standalone(redis::aio::ConnectionManager),
    Sentinel {
        client: Mutex<redis::sentinel::SentinelClient>,
        connection: Mutex<Option<redis::aio::MultiplexedConnection>>,
    },
    Cluster {
        client: redis::cluster::ClusterClient,
        connection: Mutex<Option<redis::cluster_async::ClusterConnection>>,
    },
}

/// Sessions in Redis.
pub struct RedisStore {
    connection: Connection,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
}

fn unavailable(error: &redis::RedisError) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

/// A connection to run one command on.
enum Handle {
    Multiplexed(redis::aio::MultiplexedConnection),
    Managed(redis::aio::ConnectionManager),
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
                Self::Managed(connection) => command.query_async(connection).await,
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

impl RedisStore {
    /// A store for `target`; nothing is connected yet.
    ///
    /// # Errors
    /// When the URLs cannot make a client.
    pub fn new(
        target: &RedisTarget,
        ca: Option<&[u8]>,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
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
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(TIMEOUT))
                    .set_response_timeout(Some(TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                Connection::Standalone(
                    redis::aio::ConnectionManager::new_lazy_with_config(client, config)
                        .map_err(|error| error.to_string())?,
                )
            }
            RedisTarget::Sentinel { sentinels, service } => {
                let client = redis::sentinel::SentinelClient::build(
                    sentinels.clone(),
                    service.as_str(),
                    None,
                    redis::sentinel::SentinelServerType::Master,
                )
                .map_err(|error| error.to_string())?;
                Connection::Sentinel {
                    client: Mutex::new(client),
                    connection: Mutex::new(None),
                }
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
                    connection: Mutex::new(None),
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
            Connection::Standalone(manager) => Ok(Handle::Managed(manager.clone())),
            Connection::Sentinel { client, connection } => {
                let mut cached = connection.lock().await;
                if let Some(existing) = cached.as_ref() {
                    return Ok(Handle::Multiplexed(existing.clone()));
                }
                // Ask the sentinels for the current master every time a connection is made, so a
                // failover is followed.
                let fresh = tokio::time::timeout(TIMEOUT * 2, async {
                    client.lock().await.get_async_connection().await
                })
                .await
                .map_err(|_| StoreError::Unavailable("Sentinel did not answer in time".to_owned()))?
                .map_err(|error| unavailable(&error))?;
                *cached = Some(fresh.clone());
                Ok(Handle::Multiplexed(fresh))
            }
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

    /// Forgets a cached connection after a failure, so the next command reconnects.
    async fn reset(&self) {
        match &self.connection {
            Connection::Standalone(_) => {}
            Connection::Sentinel { connection, .. } => *connection.lock().await = None,
            Connection::Cluster { connection, .. } => *connection.lock().await = None,
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
        format!("tollgate:s:{id}")
    }

    /// Whether Redis answers.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let _: String = self.run(&redis::cmd("PING")).await?;
        Ok(())
    }

    /// The session `id`, with the stored bytes (for `touch`).
    ///
    /// # Errors
    /// `Unavailable`; a value that is not a session is treated as absent.
    pub async fn get(&self, id: &str) -> Result<Option<(Vec<u8>, StoredSession)>, StoreError> {
        let value: Option<Vec<u8>> = self.run(redis::cmd("GET").arg(Self::key(id))).await?;
        Ok(value.and_then(|bytes| {
            serde_json::from_slice(&bytes)
                .ok()
                .map(|stored| (bytes, stored))
        }))
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
        let () = self.index(ALL, id).await?;
        let () = self.index(&format!("tollgate:sub:{sub}"), id).await?;
        if let Some(sid) = sid {
            let () = self.index(&format!("tollgate:sid:{sid}"), id).await?;
        }
        Ok(())
    }

    async fn index(&self, set: &str, id: &str) -> Result<(), StoreError> {
        let _: i64 = self.run(redis::cmd("SADD").arg(set).arg(id)).await?;
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
        let deleted: i64 = self.run(redis::cmd("DEL").arg(Self::key(id))).await?;
        let _: i64 = self.run(redis::cmd("SREM").arg(ALL).arg(id)).await?;
        Ok(deleted > 0)
    }

    /// Ids in an index set: every session, or those of a `sub` or a `sid`.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn ids(&self, index: Index<'_>) -> Result<Vec<String>, StoreError> {
        let set = match index {
            Index::All => ALL.to_owned(),
            Index::Sub(sub) => format!("tollgate:sub:{sub}"),
            Index::Sid(sid) => format!("tollgate:sid:{sid}"),
        };
        self.run(redis::cmd("SMEMBERS").arg(set)).await
    }

    /// Drops an id that no longer has a session from an index.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn forget(&self, index: Index<'_>, id: &str) -> Result<(), StoreError> {
        let set = match index {
            Index::All => ALL.to_owned(),
            Index::Sub(sub) => format!("tollgate:sub:{sub}"),
            Index::Sid(sid) => format!("tollgate:sid:{sid}"),
        };
        let _: i64 = self.run(redis::cmd("SREM").arg(set).arg(id)).await?;
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
