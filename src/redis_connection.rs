//! The connection to Redis under every Redis-backed store (sessions today, the token service
//! next): standalone (`redis://`, `rediss://` for TLS, password and db in the URL), Sentinel
//! (`redis+sentinel://host:port,…/service`) or Cluster (a list of node URLs). It knows no key
//! schema: a store hands it a `redis::Cmd`, a `redis::Pipeline` or a `redis::Script` invocation
//! and gets the answer from the server that holds those keys (Cluster routes by key; standalone
//! and Sentinel have one server).
//!
//! Connections are made when first needed and made again after a failure (asking the sentinels
//! for the current master each time, so a failover is followed): Tollgate starts while Redis is
//! down and recovers by itself. Every call is cut off after [`TIMEOUT`]; a failure is a
//! `redis::RedisError`, which a store turns into its own "unavailable".
//!
//! Two links, each made lazily: the main one, which may keep `CLIENT TRACKING` on and hand
//! Redis's invalidations to an [`Invalidations`] (so a store can keep what it read until Redis
//! says it changed), and one for confirmed writes ([`RedisConnection::query_confirmed`]),
//! whose `WAIT` blocks only that link, never the main one's reads (`WAIT` counts the writes
//! of its own connection, so it cannot have a connection of its own either).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Pipeline, RedisError, RedisFuture, RedisResult, Value};

pub use crate::config::RedisTarget;

/// The longest one call waits for Redis (connecting twice that).
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// The longest a confirmed write waits for a replica's acknowledgement.
pub const REPLICA_WAIT: Duration = Duration::from_secs(1);

/// Told what Redis says changed, for the keys the main link read (`CLIENT TRACKING`).
pub trait Invalidations: Send + Sync {
    /// Redis says `key` changed, was deleted or expired.
    fn invalidate(&self, key: &[u8]);
    /// Anything may have changed: a new connection, a lost one, a flushed database.
    fn invalidate_all(&self);
}

/// The connection a single-server link keeps, with the serial of the attempt that made it;
/// emptied when it is lost.
type Slot = std::sync::Mutex<Option<(u64, MultiplexedConnection)>>;

/// Where the one server of a standalone or Sentinel set-up is found. Made once per store and
/// kept in an `Arc`, so the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Source {
    Direct(redis::Client),
    Sentinel(Sentinels),
}

/// The sentinels, asked for the current master at every connect. The URL's password is the
/// master's; sentinels are asked without it first and with it once one says it needs it.
struct Sentinels {
    open: tokio::sync::Mutex<redis::sentinel::SentinelClient>,
    /// With the credentials, when the URL has a password.
    with_auth: Option<tokio::sync::Mutex<redis::sentinel::SentinelClient>>,
    /// Whether a sentinel asked for the password.
    needs_auth: AtomicBool,
}

impl Sentinels {
    fn new(
        sentinels: &[String],
        service: &str,
        auth: &crate::config::SentinelAuth,
        resp3: bool,
    ) -> RedisResult<Self> {
        let mut settings = redis::RedisConnectionInfo::default().set_db(auth.db);
        if let Some(username) = &auth.username {
            settings = settings.set_username(username);
        }
        if let Some(password) = &auth.password {
            settings = settings.set_password(password.expose());
        }
        if resp3 {
            settings = settings.set_protocol(redis::ProtocolVersion::RESP3);
        }
        let mut node = redis::sentinel::SentinelNodeConnectionInfo::default()
            .set_redis_connection_info(settings);
        if auth.tls {
            node = node.set_tls_mode(redis::TlsMode::Secure);
        }
        let client = |urls: Vec<redis::ConnectionInfo>| {
            redis::sentinel::SentinelClient::build(
                urls,
                service,
                Some(node.clone()),
                redis::sentinel::SentinelServerType::Master,
            )
            .map(tokio::sync::Mutex::new)
        };
        let infos = |with_credentials: bool| -> RedisResult<Vec<redis::ConnectionInfo>> {
            sentinels
                .iter()
                .map(|url| {
                    let info = redis::IntoConnectionInfo::into_connection_info(url.as_str())?;
                    if !with_credentials {
                        return Ok(info);
                    }
                    let mut settings = info.redis_settings().clone();
                    if let Some(username) = &auth.username {
                        settings = settings.set_username(username);
                    }
                    if let Some(password) = &auth.password {
                        settings = settings.set_password(password.expose());
                    }
                    Ok(info.set_redis_settings(settings))
                })
                .collect()
        };
        Ok(Self {
            open: client(infos(false)?)?,
            with_auth: match &auth.password {
                Some(_) => Some(client(infos(true)?)?),
                None => None,
            },
            needs_auth: AtomicBool::new(false),
        })
    }

    /// A client for the current master.
    async fn master(&self) -> RedisResult<redis::Client> {
        if let Some(with_auth) = &self.with_auth
            && self.needs_auth.load(Ordering::Relaxed)
        {
            return with_auth.lock().await.async_get_client().await;
        }
        match self.open.lock().await.async_get_client().await {
            Err(error) if self.with_auth.is_some() && asks_for_auth(&error) => {
                self.needs_auth.store(true, Ordering::Relaxed);
                match &self.with_auth {
                    Some(with_auth) => with_auth.lock().await.async_get_client().await,
                    None => Err(error),
                }
            }
            other => other,
        }
    }
}

/// Whether a sentinel refused to answer without a password.
fn asks_for_auth(error: &redis::RedisError) -> bool {
    let text = error.to_string();
    text.contains("NOAUTH") || text.contains("Authentication required")
}

/// Standalone or Sentinel: one multiplexed connection, made when first needed and made again
/// after a failure.
struct Single {
    source: Arc<Source>,
    slot: Arc<Slot>,
    connecting: tokio::sync::Mutex<()>,
    serial: AtomicU64,
    /// With these, the connection speaks RESP3 with `CLIENT TRACKING` on.
    invalidations: Option<Arc<dyn Invalidations>>,
    /// Whether the current connection has tracking on, so copies may be kept.
    tracking: AtomicBool,
}

/// A Cluster: the client's connection (one per node inside), made when first needed.
struct Cluster {
    client: redis::cluster::ClusterClient,
    connection: tokio::sync::Mutex<Option<ClusterConnection>>,
}

enum Link {
    Single(Single),
    Cluster(Box<Cluster>),
}

/// The connection to one Redis deployment.
pub struct RedisConnection {
    main: Link,
    confirm: Link,
}

/// A connection to run calls on (cheap clones of the link's connection).
enum Handle {
    Multiplexed(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Handle {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Multiplexed(connection) => connection.req_packed_command(cmd),
            Self::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Multiplexed(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Multiplexed(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}

impl Handle {
    /// Runs `command` on the master that holds `key` (a command without keys of its own, such
    /// as `WAIT` or `INFO`, after a write to `key` on the same connection).
    async fn query_at(&mut self, key: &[u8], command: Cmd) -> RedisResult<Value> {
        match self {
            Self::Multiplexed(connection) => command.query_async(connection).await,
            Self::Cluster(connection) => {
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                let route = Route::with_key(key, SlotAddr::Master);
                connection
                    .route_command(
                        command,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                    )
                    .await
            }
        }
    }
}

fn timed_out() -> RedisError {
    RedisError::from((redis::ErrorKind::Io, "Redis did not answer in time"))
}

/// Whether a failure may mean the connection is no good (so it is made again): anything but
/// an error the server answered about the call itself, or a write no replica acknowledged.
fn connection_suspect(error: &RedisError) -> bool {
    use redis::ServerErrorKind;
    !matches!(
        error.kind(),
        redis::ErrorKind::Server(
            ServerErrorKind::ResponseError
                | ServerErrorKind::NoScript
                | ServerErrorKind::ExecAbort
                | ServerErrorKind::CrossSlot
                | ServerErrorKind::NoPerm
        ) | redis::ErrorKind::Extension
            | redis::ErrorKind::UnexpectedReturnType
            | redis::ErrorKind::Parse
            | redis::ErrorKind::Client
    )
}

/// `client` speaking RESP3, which carries the invalidation messages.
fn resp3(client: &redis::Client) -> RedisResult<redis::Client> {
    let info = client.get_connection_info().clone();
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(redis::ProtocolVersion::RESP3);
    redis::Client::open(info.set_redis_settings(settings))
}

impl Single {
    fn new(source: Arc<Source>, invalidations: Option<Arc<dyn Invalidations>>) -> Self {
        Self {
            source,
            slot: Arc::new(std::sync::Mutex::new(None)),
            connecting: tokio::sync::Mutex::new(()),
            serial: AtomicU64::new(0),
            invalidations,
            tracking: AtomicBool::new(false),
        }
    }

    fn current(&self) -> Option<MultiplexedConnection> {
        let slot = self
            .slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slot.as_ref().map(|(_, connection)| connection.clone())
    }

    async fn connection(&self) -> RedisResult<MultiplexedConnection> {
        if let Some(connection) = self.current() {
            return Ok(connection);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(connection) = self.current() {
            return Ok(connection);
        }
        tokio::time::timeout(TIMEOUT * 2, self.connect())
            .await
            .unwrap_or_else(|_| Err(timed_out()))
    }

    async fn connect(&self) -> RedisResult<MultiplexedConnection> {
        let client = match &*self.source {
            Source::Direct(client) => client.clone(),
            Source::Sentinel(sentinels) => sentinels.master().await?,
        };
        let serial = self.serial.fetch_add(1, Ordering::SeqCst) + 1;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT));
        let Some(invalidations) = self.invalidations.clone() else {
            let connection = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            self.keep(serial, connection.clone());
            return Ok(connection);
        };
        let slot: Weak<Slot> = Arc::downgrade(&self.slot);
        let listener = invalidations.clone();
        // Runs on the connection's reader, in order with the replies.
        let on_push = move |push: redis::PushInfo| {
            let lost = match push.kind {
                redis::PushKind::Invalidate => {
                    match push.data.first() {
                        Some(Value::Array(keys)) => {
                            for key in keys {
                                if let Value::BulkString(key) = key {
                                    listener.invalidate(key);
                                }
                            }
                        }
                        // FLUSHALL / FLUSHDB, or Redis dropped its tracking table.
                        _ => listener.invalidate_all(),
                    }
                    false
                }
                redis::PushKind::Disconnection => {
                    listener.invalidate_all();
                    true
                }
                _ => false,
            };
            if lost && let Some(slot) = slot.upgrade() {
                let mut slot = slot
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if slot.as_ref().is_some_and(|(current, _)| *current == serial) {
                    *slot = None;
                }
            }
            Ok::<(), std::convert::Infallible>(())
        };
        let mut connection = resp3(&client)?
            .get_multiplexed_async_connection_with_config(&config.set_push_sender(on_push))
            .await?;
        let tracking: RedisResult<()> = redis::cmd("CLIENT")
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
                tracing::warn!(%error, "Redis refused CLIENT TRACKING; every read goes to Redis");
                false
            }
            Err(error) => return Err(error),
        };
        // Whatever was kept came through a connection whose invalidations may be lost.
        self.tracking.store(tracked, Ordering::SeqCst);
        invalidations.invalidate_all();
        self.keep(serial, connection.clone());
        Ok(connection)
    }

    fn keep(&self, serial: u64, connection: MultiplexedConnection) {
        *self
            .slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((serial, connection));
    }

    fn reset(&self) {
        if let Some(invalidations) = &self.invalidations {
            invalidations.invalidate_all();
        }
        *self
            .slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }
}

impl Link {
    async fn handle(&self) -> RedisResult<Handle> {
        match self {
            Self::Single(single) => Ok(Handle::Multiplexed(single.connection().await?)),
            Self::Cluster(cluster) => {
                let mut cached = cluster.connection.lock().await;
                if let Some(existing) = cached.as_ref() {
                    return Ok(Handle::Cluster(existing.clone()));
                }
                let fresh =
                    tokio::time::timeout(TIMEOUT * 2, cluster.client.get_async_connection())
                        .await
                        .unwrap_or_else(|_| Err(timed_out()))?;
                *cached = Some(fresh.clone());
                Ok(Handle::Cluster(fresh))
            }
        }
    }

    /// Forgets the connection after a failure, so the next call makes a new one. A Cluster
    /// connection is kept: it holds one connection per node, remakes the one that failed and
    /// refreshes the slot map by itself, so a shard's failover leaves the other shards'
    /// connections (and the requests on them) alone.
    fn reset(&self) {
        match self {
            Self::Single(single) => single.reset(),
            Self::Cluster(_) => {}
        }
    }

    /// Runs `call` on this link's connection, cut off after [`TIMEOUT`]; a failure that may be
    /// the connection's forgets it.
    async fn run<T, F>(&self, call: F) -> RedisResult<T>
    where
        F: AsyncFnOnce(&mut Handle) -> RedisResult<T>,
    {
        let result = match self.handle().await {
            Ok(mut handle) => tokio::time::timeout(TIMEOUT, call(&mut handle))
                .await
                .unwrap_or_else(|_| Err(timed_out())),
            Err(error) => Err(error),
        };
        if let Err(error) = &result
            && connection_suspect(error)
        {
            self.reset();
        }
        result
    }
}

impl RedisConnection {
    /// A connection to `target`, trusting `ca` for TLS when given; nothing is connected yet.
    /// With `invalidations`, the main link keeps `CLIENT TRACKING` on (standalone and
    /// Sentinel; Redis may refuse it, see [`Self::tracking`]).
    ///
    /// # Errors
    /// When the URLs cannot make a client.
    pub fn new(
        target: &RedisTarget,
        ca: Option<&[u8]>,
        invalidations: Option<Arc<dyn Invalidations>>,
    ) -> Result<Self, String> {
        let certificates = || redis::TlsCertificates {
            client_tls: None,
            root_cert: ca.map(<[u8]>::to_vec),
        };
        let (main, confirm) = match target {
            RedisTarget::Standalone(url) => {
                let client = match ca {
                    Some(_) => redis::Client::build_with_tls(url.as_str(), certificates()),
                    None => redis::Client::open(url.as_str()),
                }
                .map_err(|error| error.to_string())?;
                let source = Arc::new(Source::Direct(client));
                (
                    Link::Single(Single::new(source.clone(), invalidations)),
                    Link::Single(Single::new(source, None)),
                )
            }
            RedisTarget::Sentinel {
                sentinels,
                service,
                auth,
            } => {
                let sentinels = Sentinels::new(sentinels, service, auth, invalidations.is_some())
                    .map_err(|error| error.to_string())?;
                let source = Arc::new(Source::Sentinel(sentinels));
                (
                    Link::Single(Single::new(source.clone(), invalidations)),
                    Link::Single(Single::new(source, None)),
                )
            }
            RedisTarget::Cluster(nodes) => {
                let cluster = || {
                    let mut builder = redis::cluster::ClusterClient::builder(nodes.clone());
                    if ca.is_some() {
                        builder = builder.certs(certificates());
                    }
                    builder
                        .connection_timeout(TIMEOUT)
                        .response_timeout(TIMEOUT)
                        .build()
                        .map(|client| {
                            Link::Cluster(Box::new(Cluster {
                                client,
                                connection: tokio::sync::Mutex::new(None),
                            }))
                        })
                        .map_err(|error| error.to_string())
                };
                (cluster()?, cluster()?)
            }
        };
        Ok(Self { main, confirm })
    }

    /// Whether the main link's current connection has `CLIENT TRACKING` on, so a store may keep
    /// what it reads until told otherwise.
    pub fn tracking(&self) -> bool {
        match &self.main {
            Link::Single(single) => {
                single.invalidations.is_some() && single.tracking.load(Ordering::SeqCst)
            }
            Link::Cluster(_) => false,
        }
    }

    /// Runs one command (on the server holding its keys).
    ///
    /// # Errors
    /// Redis is unreachable, too slow, or answered with an error.
    pub async fn query<T: FromRedisValue>(&self, command: &Cmd) -> RedisResult<T> {
        self.main
            .run(async |handle: &mut Handle| command.query_async(handle).await)
            .await
    }

    /// Runs a pipeline (with Cluster, its keys must share one hash slot).
    ///
    /// # Errors
    /// As [`Self::query`].
    pub async fn pipeline<T: FromRedisValue>(&self, pipeline: &Pipeline) -> RedisResult<T> {
        self.main
            .run(async |handle: &mut Handle| pipeline.query_async(handle).await)
            .await
    }

    /// Runs a Lua script with its keys and arguments (`EVALSHA`, loading it once when the
    /// server does not know it yet); with Cluster its keys must share one hash slot.
    ///
    /// # Errors
    /// As [`Self::query`].
    pub async fn invoke<T: FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> RedisResult<T> {
        self.main
            .run(async |handle: &mut Handle| invocation.invoke_async(handle).await)
            .await
    }

    /// Runs `pipeline` (its keys in `key`'s hash slot) and answers only once the write is
    /// durable as far as Redis can say: the master applied it and, when it has replicas
    /// connected, at least one acknowledged it (`WAIT 1`) within [`REPLICA_WAIT`].
    ///
    /// # Errors
    /// As [`Self::query`], and when replicas are connected but none acknowledged the write.
    pub async fn query_confirmed<T: FromRedisValue>(
        &self,
        key: &[u8],
        pipeline: &Pipeline,
    ) -> RedisResult<T> {
        self.confirm
            .run(async |handle: &mut Handle| {
                let answer: T = pipeline.query_async(&mut *handle).await?;
                let info = handle
                    .query_at(key, redis::cmd("INFO").arg("replication").clone())
                    .await?;
                let replicas = connected_replicas(&info)?;
                if replicas == 0 {
                    return Ok(answer);
                }
                let timeout = u64::try_from(REPLICA_WAIT.as_millis()).unwrap_or(1000);
                let acknowledged = handle
                    .query_at(key, redis::cmd("WAIT").arg(1).arg(timeout).clone())
                    .await?;
                match acknowledged {
                    Value::Int(count) if count >= 1 => Ok(answer),
                    // Not the connection's fault: it is kept, so a retry's WAIT still covers
                    // this write (WAIT counts every earlier write of its connection).
                    _ => Err(RedisError::from((
                        redis::ErrorKind::Client,
                        "no replica acknowledged the write",
                        format!("{replicas} replica(s) connected"),
                    ))),
                }
            })
            .await
    }

    /// Whether Redis answers.
    ///
    /// # Errors
    /// As [`Self::query`].
    pub async fn ping(&self) -> RedisResult<()> {
        let _: String = self.query(&redis::cmd("PING")).await?;
        Ok(())
    }
}

/// `connected_slaves` of an `INFO replication` answer.
fn connected_replicas(info: &Value) -> RedisResult<u64> {
    let text: String = redis::from_redis_value_ref(info)?;
    text.lines()
        .find_map(|line| line.trim().strip_prefix("connected_slaves:"))
        .and_then(|count| count.parse().ok())
        .ok_or_else(|| {
            RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "INFO replication names no connected_slaves",
            ))
        })
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
                service: "mymaster".to_owned(),
                auth: crate::config::SentinelAuth::default(),
            })
        );
        assert_eq!(
            RedisTarget::parse(&[
                "rediss+sentinel://app:p%40ss@10.0.0.1:26379,10.0.0.2:26379/mymaster/3".to_owned()
            ]),
            Ok(RedisTarget::Sentinel {
                sentinels: vec![
                    "rediss://10.0.0.1:26379".to_owned(),
                    "rediss://10.0.0.2:26379".to_owned()
                ],
                service: "mymaster".to_owned(),
                auth: crate::config::SentinelAuth {
                    username: Some("app".to_owned()),
                    password: Some(crate::secret::Secret::new("p@ss".to_owned())),
                    db: 3,
                    tls: true,
                },
            }),
            "the password is the master's, not only the first sentinel's"
        );
        assert!(RedisTarget::parse(&["redis+sentinel://h:1/m/x".to_owned()]).is_err());
        assert!(RedisTarget::parse(&["redis+sentinel://h:1,:pw@h2:2/m".to_owned()]).is_err());
        assert!(
            matches!(RedisTarget::parse(&["redis://a:1".to_owned(), "redis://b:2".to_owned()]), Ok(RedisTarget::Cluster(nodes)) if nodes.len() == 2)
        );
        assert!(RedisTarget::parse(&["http://x".to_owned()]).is_err());
        assert!(RedisTarget::parse(&["redis+sentinel://host:1".to_owned()]).is_err());
        assert!(RedisTarget::parse(&[]).is_err());
    }

    #[test]
    fn the_replica_count_is_read_from_info() {
        let info = Value::BulkString(
            b"# Replication\r\nrole:master\r\nconnected_slaves:2\r\nmaster_repl_offset:10\r\n"
                .to_vec(),
        );
        assert_eq!(connected_replicas(&info).ok(), Some(2));
        assert!(connected_replicas(&Value::BulkString(b"role:master".to_vec())).is_err());
    }
}
