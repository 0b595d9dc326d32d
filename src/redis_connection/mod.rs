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
//! of its own connection, so it cannot have a connection of its own either). Each link follows
//! a Sentinel failover by itself, so for a moment they may be on different servers: what must
//! read what a confirmed write wrote runs on the confirm link too
//! ([`RedisConnection::query_on_confirm_link`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Pipeline, RedisError, RedisFuture, RedisResult, Value};

mod sentinel;
mod single;
mod watched;

use sentinel::Sentinels;
use single::{Single, Source};

pub use crate::config::RedisTarget;
pub use watched::{HEARD_WITHIN, HEARTBEAT};

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

/// A Cluster: the client's connection (one per node inside), made when first needed.
struct Cluster {
    client: redis::cluster::ClusterClient,
    connection: tokio::sync::Mutex<Option<ClusterConnection>>,
    attempts: FailedAttempts,
}

/// A link's connection attempts that failed, and why the last one did: a call that waited for
/// an attempt (made one at a time) takes its failure instead of making another, so that while
/// Redis cannot be reached the calls waiting are answered (503) after one attempt, not in turn
/// after one attempt each. A call that comes after it tries again: Redis may be back.
#[derive(Default)]
struct FailedAttempts {
    count: std::sync::atomic::AtomicU64,
    last: std::sync::Mutex<Option<RedisError>>,
}

impl FailedAttempts {
    /// A mark to hand [`Self::since`] once the caller's turn to connect has come.
    fn mark(&self) -> u64 {
        self.count.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The failure of an attempt that ended after `mark`, if one did.
    fn since(&self, mark: u64) -> Option<RedisError> {
        if self.mark() == mark {
            return None;
        }
        self.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Records `made`'s failure, if it failed.
    fn record<T>(&self, made: &RedisResult<T>) {
        if let Err(error) = made {
            *self
                .last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error.clone());
            self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

enum Link {
    Single(Box<Single>),
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
    /// Runs `command`, one without keys of its own such as `INFO`, on the master that holds
    /// `key` as far as the client knows.
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

impl Link {
    /// A handle on the link's connection, with the serial of the attempt that made it (a
    /// standalone or Sentinel link's).
    async fn handle(&self) -> RedisResult<(Option<u64>, Handle)> {
        match self {
            Self::Single(single) => {
                let (serial, connection) = single.connection().await?;
                Ok((Some(serial), Handle::Multiplexed(connection)))
            }
            Self::Cluster(cluster) => {
                let mark = cluster.attempts.mark();
                let Ok(mut cached) =
                    tokio::time::timeout(TIMEOUT * 2, cluster.connection.lock()).await
                else {
                    return Err(timed_out());
                };
                if let Some(existing) = cached.as_ref() {
                    return Ok((None, Handle::Cluster(existing.clone())));
                }
                if let Some(error) = cluster.attempts.since(mark) {
                    return Err(error);
                }
                // Boxed, as `Single::connection` boxes its connect: rare, and large.
                let made = tokio::time::timeout(
                    TIMEOUT * 2,
                    Box::pin(cluster.client.get_async_connection()),
                )
                .await
                .unwrap_or_else(|_| Err(timed_out()));
                cluster.attempts.record(&made);
                let fresh = made?;
                *cached = Some(fresh.clone());
                Ok((None, Handle::Cluster(fresh)))
            }
        }
    }

    /// Forgets the connection made by attempt `serial` after a failure on it, so the next call
    /// makes a new one (one made since is kept). A Cluster connection is kept: it holds one
    /// connection per node, remakes the one that failed and refreshes the slot map by itself,
    /// so a shard's failover leaves the other shards' connections (and the requests on them)
    /// alone.
    fn reset(&self, serial: Option<u64>) {
        if let (Self::Single(single), Some(serial)) = (self, serial) {
            single.reset(serial);
        }
    }

    /// Whether a write needs a replica's acknowledgement, the master having `connected`
    /// replicas (see `Single::replicas_expected`; a Cluster shard's failover is coordinated or
    /// the old master is gone, so there it is only `connected`).
    async fn replicas_expected(&self, connected: u64) -> bool {
        match self {
            Self::Single(single) => single.replicas_expected(connected).await,
            Self::Cluster(_) => connected > 0,
        }
    }

    /// Runs `call` on this link's connection, cut off after [`TIMEOUT`]; a failure that may be
    /// the connection's forgets it.
    async fn run<T, F>(&self, call: F) -> RedisResult<T>
    where
        F: AsyncFnOnce(&mut Handle) -> RedisResult<T>,
    {
        let (serial, result) = match self.handle().await {
            Ok((serial, mut handle)) => (
                serial,
                tokio::time::timeout(TIMEOUT, call(&mut handle))
                    .await
                    .unwrap_or_else(|_| Err(timed_out())),
            ),
            // No connection to forget.
            Err(error) => return Err(error),
        };
        if let Err(error) = &result
            && connection_suspect(error)
        {
            self.reset(serial);
        }
        result
    }
}

/// What a config's Redis links trust over TLS ([`crate::tls::redis_roots`]): as the redis crate
/// takes it, and as the rustls configuration of the link Tollgate connects itself.
struct Roots {
    certificates: redis::TlsCertificates,
    config: Arc<rustls::ClientConfig>,
}

/// Whether `url` speaks TLS with certificate checks (`rediss://`, not `#insecure`).
fn verified_tls(url: &str) -> bool {
    redis::IntoConnectionInfo::into_connection_info(url).is_ok_and(|info| {
        matches!(
            info.addr(),
            redis::ConnectionAddr::TcpTls {
                insecure: false,
                ..
            }
        )
    })
}

impl RedisConnection {
    /// A connection to `target`, trusting `ca` for TLS when given, else the system's roots as
    /// they are now; nothing is connected yet. With `invalidations`, the main link keeps
    /// `CLIENT TRACKING` on (standalone and Sentinel; Redis may refuse it, see
    /// [`Self::tracking`]).
    ///
    /// The roots are read here, when the config is built, for every link alike: the one
    /// Tollgate connects (its rustls configuration made now) and the ones the redis crate
    /// connects (given the same roots as PEM). So a reconnect trusts what its config was built
    /// with however often the roots are read again (SIGHUP). (The crate still reads the
    /// system's store at each TLS connect, and fails it when that read fails, but trusts only
    /// what it was given.)
    ///
    /// # Errors
    /// When the URLs cannot make a client, or TLS is asked for and there are no roots.
    pub fn new(
        target: &RedisTarget,
        ca: Option<&[u8]>,
        invalidations: Option<Arc<dyn Invalidations>>,
    ) -> Result<Self, String> {
        let error = |error: &dyn std::fmt::Display| error.to_string();
        // The roots, when some URL speaks TLS with certificate checks.
        let roots = |verified: bool| -> Result<Option<Roots>, String> {
            if !verified {
                return Ok(None);
            }
            let pem = crate::tls::redis_roots(ca).map_err(|e| error(&e))?;
            let config = crate::tls::redis_client_config(&pem).map_err(|e| error(&e))?;
            Ok(Some(Roots {
                certificates: redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
                config,
            }))
        };
        let (main, confirm) = match target {
            RedisTarget::Standalone(url) => {
                // A CA file comes with a `rediss://` URL only (`tollgate check` refuses the rest).
                let roots = roots(verified_tls(url) || ca.is_some())?;
                let client = match &roots {
                    Some(roots) => {
                        redis::Client::build_with_tls(url.as_str(), roots.certificates.clone())
                    }
                    None => redis::Client::open(url.as_str()),
                }
                .map_err(|e| error(&e))?;
                let tls = roots.map(|roots| roots.config);
                let source = Arc::new(Source::Direct(client));
                (
                    Link::Single(Box::new(Single::new(
                        source.clone(),
                        invalidations,
                        tls.clone(),
                    ))),
                    Link::Single(Box::new(Single::new(source, None, tls))),
                )
            }
            RedisTarget::Sentinel {
                sentinels,
                service,
                auth,
            } => {
                let roots = roots(auth.tls)?;
                let sentinels = Sentinels::new(
                    sentinels,
                    service,
                    auth,
                    invalidations.is_some(),
                    roots.as_ref().map(|roots| roots.certificates.clone()),
                )
                .map_err(|e| error(&e))?;
                let tls = roots.map(|roots| roots.config);
                let source = Arc::new(Source::Sentinel(sentinels));
                (
                    Link::Single(Box::new(Single::new(
                        source.clone(),
                        invalidations,
                        tls.clone(),
                    ))),
                    Link::Single(Box::new(Single::new(source, None, tls))),
                )
            }
            RedisTarget::Cluster(nodes) => {
                // Roots make every node verified TLS: only for a Cluster all of whose nodes
                // are (the crate refuses a mix); a CA file comes with `rediss://` nodes only.
                let roots = roots(nodes.iter().all(|node| verified_tls(node)) || ca.is_some())?;
                let cluster = || {
                    let mut builder = redis::cluster::ClusterClient::builder(nodes.clone());
                    if let Some(roots) = &roots {
                        builder = builder.certs(roots.certificates.clone());
                    }
                    builder
                        .connection_timeout(TIMEOUT)
                        .response_timeout(TIMEOUT)
                        .build()
                        .map(|client| {
                            Link::Cluster(Box::new(Cluster {
                                client,
                                connection: tokio::sync::Mutex::new(None),
                                attempts: FailedAttempts::default(),
                            }))
                        })
                        .map_err(|e| error(&e))
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

    /// Whether the two links are connected to different servers now: for a moment after a
    /// Sentinel failover, when only one of them has followed (which one is not known: each
    /// looks for the master only as it is used). A read whose answer decides access (is a
    /// session still there, is a token revoked) then asks both, and takes the stricter answer:
    /// an ending confirmed on either server holds.
    pub fn links_apart(&self) -> bool {
        match (&self.main, &self.confirm) {
            (Link::Single(main), Link::Single(confirm)) => main.on_another_server_than(confirm),
            _ => false,
        }
    }

    /// Whether every key is on one server (standalone or Sentinel, not a Cluster): then one
    /// confirmed pipeline may write keys of any hash slot.
    pub fn one_server(&self) -> bool {
        matches!(self.confirm, Link::Single(_))
    }

    /// Whether a store may answer from what it kept, now: the main link tracks, and nothing
    /// Redis sent on it is still unread or being handed over (an invalidation may be among
    /// it). Checked before every use of a copy, so a replica whose reader is starved of CPU
    /// reads Redis instead (SPEC §12, "from the next request on"). One `recv` peek.
    pub fn settled(&self) -> bool {
        match &self.main {
            Link::Single(single) => single.settled(),
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

    /// Runs one command on the link of confirmed writes, without waiting for a replica: for
    /// what must read the server those writes went to (the refresh lease and the session it
    /// guards), which after a failover the main link may not have followed yet.
    ///
    /// # Errors
    /// As [`Self::query`].
    pub async fn query_on_confirm_link<T: FromRedisValue>(&self, command: &Cmd) -> RedisResult<T> {
        self.confirm
            .run(async |handle: &mut Handle| command.query_async(handle).await)
            .await
    }

    /// Runs `pipeline` on the link of confirmed writes, without waiting for a replica: to undo,
    /// on the server it went to, a confirmed write that no replica acknowledged.
    ///
    /// # Errors
    /// As [`Self::query`].
    pub async fn pipeline_on_confirm_link<T: FromRedisValue>(
        &self,
        pipeline: &Pipeline,
    ) -> RedisResult<T> {
        self.confirm
            .run(async |handle: &mut Handle| pipeline.query_async(handle).await)
            .await
    }

    /// This connection with `other`'s link of confirmed writes: the main link on one server
    /// and the confirm link on another, as for a moment after a Sentinel failover when only
    /// one of them has followed. For tests.
    #[doc(hidden)]
    #[must_use]
    pub fn with_confirm_link_of(self, other: Self) -> Self {
        Self {
            main: self.main,
            confirm: other.confirm,
        }
    }

    /// Runs `pipeline` (its keys in `key`'s hash slot) and answers only once the write is
    /// durable as far as Redis can say: the master applied it and, when it has replicas
    /// connected, at least one acknowledged it (`WAIT 1`) within [`REPLICA_WAIT`]. A master
    /// that has none connected but had one a moment ago on this connection confirms nothing:
    /// with Sentinel that is an old master whose replica was just promoted.
    ///
    /// `WAIT` counts the writes of the connection it runs on. Standalone and Sentinel have one
    /// connection: the write, `INFO replication` and `WAIT` go one after the other, so the
    /// answer comes at least one round trip after the write's (see `watched`). A Cluster client
    /// routes each request by itself, and a `WAIT` sent on its own after a redirected write
    /// (`ASK` or `MOVED`), a reconnect or a fallback ran on another connection and confirmed
    /// nothing; there the write, `INFO replication` and `WAIT` go as one pipeline, which the
    /// client routes by the write's key and redirects as a whole. Whether to wait is asked
    /// first (`INFO replication` on the key's master), as `WAIT 1` on a master without replicas
    /// blocks for its whole timeout (a write redirected from a master with replicas to one
    /// without still waits that out, and one redirected the other way is refused).
    ///
    /// # Errors
    /// As [`Self::query`]; when replicas are connected (or just were) but none acknowledged
    /// the write; and for a `MULTI` pipeline, inside which `WAIT` never blocks.
    pub async fn query_confirmed<T: FromRedisValue>(
        &self,
        key: &[u8],
        pipeline: &Pipeline,
    ) -> RedisResult<T> {
        if pipeline.is_transaction() {
            return Err(RedisError::from((
                redis::ErrorKind::Client,
                "a confirmed write must be a plain pipeline, not MULTI",
            )));
        }
        let link = &self.confirm;
        self.confirm
            .run(async |handle: &mut Handle| {
                let written = match handle {
                    Handle::Multiplexed(connection) => {
                        write_then_wait(connection, pipeline).await?
                    }
                    Handle::Cluster(_) => write_and_wait(handle, key, pipeline).await?,
                };
                if !link.replicas_expected(written.replicas).await {
                    return Ok(written.answer);
                }
                match written.acknowledged {
                    Some(Value::Int(count)) if count >= 1 => Ok(written.answer),
                    // Not the connection's fault: it is kept.
                    acknowledged => Err(RedisError::from((
                        redis::ErrorKind::Client,
                        "no replica acknowledged the write",
                        match (written.replicas, acknowledged) {
                            (0, _) => "the master's replica went away a moment ago".to_owned(),
                            (replicas, Some(_)) => format!("{replicas} replica(s) connected"),
                            (replicas, None) => {
                                format!("{replicas} replica(s) connected while it was sent")
                            }
                        },
                    ))),
                }
            })
            .await
    }

    /// Redis's `maxmemory-policy` (`CONFIG GET`; one node's on a Cluster).
    ///
    /// # Errors
    /// As [`Self::query`]; also when `CONFIG` is refused (managed Redis services often rename
    /// or forbid it).
    pub async fn eviction_policy(&self) -> RedisResult<String> {
        let mut answer: std::collections::HashMap<String, String> = self
            .query(redis::cmd("CONFIG").arg("GET").arg("maxmemory-policy"))
            .await?;
        answer.remove("maxmemory-policy").ok_or_else(|| {
            RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "CONFIG GET named no maxmemory-policy",
            ))
        })
    }

    /// How Redis keeps its data across a restart: `appendonly`, `appendfsync` and `save`
    /// (`CONFIG GET`; one node's on a Cluster).
    ///
    /// # Errors
    /// As [`Self::eviction_policy`].
    pub async fn persistence(&self) -> RedisResult<Persistence> {
        let read = |name: &'static str| async move {
            let mut answer: std::collections::HashMap<String, String> = self
                .query(redis::cmd("CONFIG").arg("GET").arg(name))
                .await?;
            answer.remove(name).ok_or_else(|| {
                RedisError::from((
                    redis::ErrorKind::UnexpectedReturnType,
                    "CONFIG GET named no such parameter",
                    name.to_owned(),
                ))
            })
        };
        Ok(Persistence {
            appendonly: read("appendonly").await?,
            appendfsync: read("appendfsync").await?,
            save: read("save").await?,
        })
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

/// Reads, once, the Redis settings that can undo what Tollgate stored, and warns about them
/// (`warn_if_keys_may_be_evicted`, `warn_if_a_restart_may_restore`).
pub async fn warn_about_settings(target: &RedisTarget, ca: Option<&[u8]>) {
    let Ok(connection) = RedisConnection::new(target, ca, None) else {
        return;
    };
    warn_if_keys_may_be_evicted(&connection).await;
    warn_if_a_restart_may_restore(&connection).await;
}

/// Every key Tollgate writes expires, so every `maxmemory-policy` but `noeviction` may drop
/// one under memory pressure: a session, or worse a revocation, a spent refresh token's mark,
/// a used logout token's `jti` or a failure count. Says so once, as a warning, when Redis is
/// reached (and, at `info`, when the policy cannot be read).
async fn warn_if_keys_may_be_evicted(connection: &RedisConnection) {
    match connection.eviction_policy().await {
        Ok(policy) if may_evict(&policy) => tracing::warn!(
            %policy,
            "Redis may evict Tollgate's keys under memory pressure (a session, a revocation, a \
             spent refresh token's mark); set maxmemory-policy noeviction"
        ),
        Ok(_) => {}
        Err(error) => tracing::info!(%error, "Redis's maxmemory-policy could not be read"),
    }
}

/// Whether keys with an expiry may be evicted under `policy` (every policy but `noeviction`).
#[must_use]
pub fn may_evict(policy: &str) -> bool {
    !policy.eq_ignore_ascii_case("noeviction")
}

/// Redis's persistence settings, as `CONFIG GET` gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persistence {
    /// `yes` or `no`.
    pub appendonly: String,
    /// `always`, `everysec` or `no`.
    pub appendfsync: String,
    /// The snapshot schedule (`3600 1 300 100 60 10000`), empty for none.
    pub save: String,
}

impl Persistence {
    /// Whether a restart of Redis may load older data than it had: an append-only file not
    /// synced at each write (it loads that file), or without one, snapshots taken now and
    /// then. A delete confirmed since (a logout, an admin delete, a revocation) is then undone.
    /// Neither when every write is synced, nor when Redis keeps nothing across a restart
    /// (every session then ends with it).
    #[must_use]
    pub fn restart_may_restore_older_data(&self) -> bool {
        if self.appendonly.eq_ignore_ascii_case("yes") {
            !self.appendfsync.eq_ignore_ascii_case("always")
        } else {
            !self.save.trim().is_empty()
        }
    }
}

/// Logouts, admin deletes and revocations are answered as done once Redis (and a replica)
/// holds them, not once they are on disk: a Redis that syncs lazily and restarts loads older
/// data, and a session ended since is back (a replica then resynchronises from it). Says so
/// once, as a warning, when Redis is reached (and, at `info`, when the settings cannot be read).
async fn warn_if_a_restart_may_restore(connection: &RedisConnection) {
    match connection.persistence().await {
        Ok(persistence) if persistence.restart_may_restore_older_data() => tracing::warn!(
            appendonly = %persistence.appendonly,
            appendfsync = %persistence.appendfsync,
            save = %persistence.save,
            "Redis writes to disk lazily: restarted after a crash it loads older data, \
             bringing back sessions ended and tokens revoked shortly before; set appendonly \
             yes with appendfsync always, or keep nothing across a restart (appendonly no, \
             save \"\")"
        ),
        Ok(_) => {}
        Err(error) => tracing::info!(%error, "Redis's persistence settings could not be read"),
    }
}

/// A write and what its master said of its replicas: `INFO replication`'s count after it, and
/// `WAIT 1`'s answer when it was asked.
struct Written<T> {
    answer: T,
    replicas: u64,
    acknowledged: Option<Value>,
}

/// On one connection: the write, then `INFO replication`, then (with replicas) `WAIT 1`.
async fn write_then_wait<T: FromRedisValue>(
    connection: &mut MultiplexedConnection,
    pipeline: &Pipeline,
) -> RedisResult<Written<T>> {
    let answer: T = pipeline.query_async(connection).await?;
    let info: Value = redis::cmd("INFO")
        .arg("replication")
        .query_async(connection)
        .await?;
    let replicas = connected_replicas(&info)?;
    let acknowledged = if replicas > 0 {
        Some(wait_command().query_async(connection).await?)
    } else {
        None
    };
    Ok(Written {
        answer,
        replicas,
        acknowledged,
    })
}

/// On a Cluster: `INFO replication` on `key`'s master, then one pipeline of the write,
/// `INFO replication` and (when that master had replicas) `WAIT 1`.
async fn write_and_wait<T: FromRedisValue>(
    handle: &mut Handle,
    key: &[u8],
    pipeline: &Pipeline,
) -> RedisResult<Written<T>> {
    let before = handle
        .query_at(key, redis::cmd("INFO").arg("replication").clone())
        .await?;
    let wait = connected_replicas(&before)? > 0;
    let mut confirmed = pipeline.clone();
    confirmed.cmd("INFO").arg("replication");
    if wait {
        confirmed.add_command(wait_command());
    }
    let mut values: Vec<Value> = confirmed.query_async(&mut *handle).await?;
    let acknowledged = if wait { values.pop() } else { None };
    let info = values.pop().unwrap_or(Value::Nil);
    Ok(Written {
        answer: redis::from_redis_value(Value::Array(values))?,
        replicas: connected_replicas(&info)?,
        acknowledged,
    })
}

/// `WAIT 1` for up to [`REPLICA_WAIT`].
fn wait_command() -> Cmd {
    let timeout = u64::try_from(REPLICA_WAIT.as_millis()).unwrap_or(1000);
    redis::cmd("WAIT").arg(1).arg(timeout).clone()
}

/// The replicas of an `INFO replication` answer that can acknowledge a write: those whose
/// `slaveN:` line says `state=online`. One still in its full synchronisation (`wait_bgsave`,
/// `send_bulk`) counts in `connected_slaves` but acknowledges nothing until it is done, which
/// can take minutes: counted, every confirmed write would wait for `WAIT` to time out and fail.
fn connected_replicas(info: &Value) -> RedisResult<u64> {
    let text: String = redis::from_redis_value_ref(info)?;
    let lines = || text.lines().map(str::trim);
    if !lines().any(|line| line.starts_with("connected_slaves:")) {
        return Err(RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "INFO replication names no connected_slaves",
        )));
    }
    let online = lines()
        .filter(|line| {
            line.strip_prefix("slave")
                .and_then(|rest| rest.split_once(':'))
                .is_some_and(|(index, fields)| {
                    index.bytes().all(|byte| byte.is_ascii_digit())
                        && fields.split(',').any(|field| field == "state=online")
                })
        })
        .count();
    Ok(u64::try_from(online).unwrap_or(u64::MAX))
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
            b"# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
              slave0:ip=10.0.0.2,port=6379,state=online,offset=10,lag=0\r\n\
              slave1:ip=10.0.0.3,port=6379,state=online,offset=10,lag=1\r\n\
              master_repl_offset:10\r\n"
                .to_vec(),
        );
        assert_eq!(connected_replicas(&info).ok(), Some(2));
        // One still in its full synchronisation acknowledges nothing yet.
        let syncing = Value::BulkString(
            b"# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
              slave0:ip=10.0.0.2,port=6379,state=online,offset=10,lag=0\r\n\
              slave1:ip=10.0.0.3,port=6379,state=wait_bgsave,offset=0,lag=0\r\n"
                .to_vec(),
        );
        assert_eq!(connected_replicas(&syncing).ok(), Some(1));
        assert!(connected_replicas(&Value::BulkString(b"role:master".to_vec())).is_err());
    }
}
