//! `store = "redis"`: sessions in Redis, shared by every replica. This file is the key schema
//! and the values;
//! `crate::redis_connection` connects (standalone, Sentinel, Cluster, lazily, again after a
//! failure) and every failure there is a `StoreError::Unavailable` here (503 for the request),
//! never a pass.
//!
//! Keys, each starting with `session.redis_key_prefix` (`tollgate:` unless configured, so
//! several deployments can share one Redis): `<prefix>s:<id>` holds the session as JSON
//! sealed with the session secrets (`seal::Sealer`, the first seals and all open, so rotation
//! works; the id is the purpose, so a value cannot be moved to another key): no token is
//! readable in Redis (SPEC §12). It
//! expires with its lifetime or idle timeout, whichever comes first; `<prefix>all`,
//! `<prefix>sub:<sub>` and `<prefix>sid:<sid>` are sorted sets of ids for the admin API and
//! back-channel logout, each scored with the end of its session's lifetime (stale members are
//! dropped when met); `<prefix>logout:<digest>` marks a used back-channel logout token (by a
//! digest of its provider and `jti`) for a day. Adding to an index drops the members whose
//! lifetime has ended, and the index expires no earlier than the longest-lived session added
//! to it (its expiry only ever moves later): an index holds at most the sessions begun within
//! one lifetime, so nothing grows without bound while logins go on (SPEC §12). An index an
//! older Tollgate kept as a plain set is read as one, and made a sorted set at the next add.

mod lease;

use std::sync::Arc;

use super::error::StoreError;
use super::record::StoredSession;
use super::redis_cache::SessionCache;
use super::seal::Sealer;
use crate::clock::UnixTime;
pub use crate::config::RedisTarget;
use crate::redis_connection::RedisConnection;

/// Adds a session id (`ARGV[1]`) whose lifetime ends at `ARGV[3]` to an index (`KEYS[1]`),
/// drops the members whose lifetime ended before `ARGV[4]` (now), and makes the index live at
/// least `ARGV[2]` more seconds: its expiry moves later, never earlier (`TTL` is -1 for a key
/// that has none yet, -2 for one that did not exist). An older Tollgate's plain set becomes a
/// sorted set first, its members scored with the set's own end (no earlier than theirs).
const INDEX_ADD: &str = "local key = KEYS[1] \
if redis.call('TYPE', key).ok == 'set' then \
  local members = redis.call('SMEMBERS', key) \
  local ttl = redis.call('TTL', key) \
  if ttl < 0 then ttl = tonumber(ARGV[2]) end \
  redis.call('DEL', key) \
  for _, member in ipairs(members) do redis.call('ZADD', key, tonumber(ARGV[4]) + ttl, member) end \
  redis.call('EXPIRE', key, ttl) \
end \
redis.call('ZADD', key, ARGV[3], ARGV[1]) \
redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. ARGV[4]) \
if redis.call('TTL', key) < tonumber(ARGV[2]) then redis.call('EXPIRE', key, ARGV[2]) end \
return 1";

/// The ids in an index (`KEYS[1]`), sorted set or an older Tollgate's plain set.
const INDEX_IDS: &str = "local kind = redis.call('TYPE', KEYS[1]).ok \
if kind == 'zset' then return redis.call('ZRANGE', KEYS[1], 0, -1) end \
if kind == 'set' then return redis.call('SMEMBERS', KEYS[1]) end \
return {}";

/// Drops an id (`ARGV[1]`) from an index (`KEYS[1]`), sorted set or plain set.
const INDEX_FORGET: &str = "local kind = redis.call('TYPE', KEYS[1]).ok \
if kind == 'zset' then return redis.call('ZREM', KEYS[1], ARGV[1]) end \
if kind == 'set' then return redis.call('SREM', KEYS[1], ARGV[1]) end \
return 0";

/// Deletes a session (`KEYS[1]`), and writes even when it was gone: `WAIT` counts the writes
/// of its own connection, so a delete that found nothing (an earlier attempt's did it, on a
/// connection since dropped) would have nothing to wait for, and would confirm what no replica
/// may have. A write of its own makes the `WAIT` that follows cover the whole replication
/// stream up to it, that earlier delete included.
const DELETE: &str = "local deleted = redis.call('DEL', KEYS[1]) \
if deleted == 0 then redis.call('SET', KEYS[1], '', 'PX', 1) redis.call('DEL', KEYS[1]) end \
return deleted";

/// Records a used logout token (`KEYS[1]`) as this attempt's (`ARGV[1]`) for `ARGV[2]`
/// seconds: 1 when recorded now, 2 when an earlier attempt of the same call recorded it (its
/// expiry written again, so that the `WAIT` that follows covers it, as for [`DELETE`]), 0
/// when another's record is there.
const REMEMBER: &str = "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 1 end \
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('EXPIRE', KEYS[1], ARGV[2]) return 2 end \
return 0";
static INDEX_FORGET_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(INDEX_FORGET));

/// Sessions in Redis.
pub struct RedisStore {
    connection: RedisConnection,
    /// Sessions read, kept while Redis tracks them for this process.
    cache: Arc<SessionCache>,
    /// `session.redis_key_prefix`.
    prefix: String,
    /// Seals values before they reach Redis.
    sealer: Sealer,
    metrics: Arc<crate::metrics::Metrics>,
}

fn unavailable(error: &redis::RedisError) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

impl RedisStore {
    /// A store for `target`; nothing is connected yet.
    ///
    /// # Errors
    /// When the URLs cannot make a client.
    pub fn new(
        target: &RedisTarget,
        ca: Option<&[u8]>,
        prefix: &str,
        sealer: Sealer,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Self, String> {
        let cache = Arc::new(SessionCache::new(
            format!("{prefix}s:"),
            metrics.session_cache_invalidations.clone(),
        ));
        let connection = RedisConnection::new(
            target,
            ca,
            Some(cache.clone() as Arc<dyn crate::redis_connection::Invalidations>),
        )?;
        Ok(Self {
            connection,
            cache,
            prefix: prefix.to_owned(),
            sealer,
            metrics,
        })
    }

    /// This store with its link of confirmed writes (and of the refresh lease) to `target`,
    /// its main link where it was: the state of a replica for a moment after a Sentinel
    /// failover, when one link has followed and the other not yet. For tests.
    ///
    /// # Errors
    /// When the URLs cannot make a client.
    #[doc(hidden)]
    pub fn with_confirm_link_to(mut self, target: &RedisTarget) -> Result<Self, String> {
        self.connection = self
            .connection
            .with_confirm_link_of(RedisConnection::new(target, None, None)?);
        Ok(self)
    }

    /// The session cache, when reads are tracked.
    fn cache(&self) -> Option<&SessionCache> {
        self.connection.tracking().then_some(&*self.cache)
    }

    /// Forgets this process's copy of a session it is about to change.
    fn changed(&self, id: &str) {
        if let Some(cache) = self.cache() {
            cache.invalidate(id);
        }
    }

    async fn run<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> Result<T, StoreError> {
        self.connection
            .query(command)
            .await
            .map_err(|error| self.failed(&error))
    }

    /// Counts a failure and makes it the store's.
    fn failed(&self, error: &redis::RedisError) -> StoreError {
        self.metrics.session_store_errors.inc();
        unavailable(error)
    }

    /// The key of session `id`.
    fn key(&self, id: &str) -> String {
        format!("{}s:{id}", self.prefix)
    }

    /// The value stored for session `id`: its JSON, sealed for that id.
    fn seal(&self, id: &str, stored: &StoredSession) -> Result<String, StoreError> {
        let json = serde_json::to_vec(stored)
            .map_err(|error| StoreError::Unavailable(error.to_string()))?;
        self.sealer
            .seal(&Self::purpose(id), &json)
            .map_err(|_| StoreError::Unavailable("no session secret to seal with".to_owned()))
    }

    /// The session in a stored value: `None` for anything not sealed for `id` by a listed
    /// secret, or not a session.
    fn open(&self, id: &str, value: &[u8]) -> Option<StoredSession> {
        let sealed = std::str::from_utf8(value).ok()?;
        let json = self.sealer.open(&Self::purpose(id), sealed).ok()?;
        serde_json::from_slice(&json).ok()
    }

    /// The sealing purpose of session `id`'s value.
    fn purpose(id: &str) -> String {
        format!("redis-session:{id}")
    }

    /// The key of an index set.
    fn index_key(&self, index: Index<'_>) -> String {
        let prefix = &self.prefix;
        match index {
            Index::All => format!("{prefix}all"),
            Index::Sub(sub) => format!("{prefix}sub:{sub}"),
            Index::Sid(sid) => format!("{prefix}sid:{sid}"),
        }
    }

    /// Whether Redis answers.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.connection
            .ping()
            .await
            .map_err(|error| self.failed(&error))
    }

    /// The session `id`, with the stored bytes (for `touch`): from this process's tracked copy
    /// when Redis has not invalidated it and nothing Redis sent is still unread, else read
    /// from Redis.
    ///
    /// # Errors
    /// `Unavailable`; a value that does not open (another secret, another key) or is not a
    /// session is treated as absent.
    pub async fn get(&self, id: &str) -> Result<Option<(Arc<[u8]>, StoredSession)>, StoreError> {
        match self.tracked(id) {
            Some(found) => Ok(Some(found)),
            None => self.read(id).await,
        }
    }

    /// `get` from this process's tracked copy alone, with no round trip: `None` when there is
    /// none, when Redis has invalidated it, or when something Redis sent is still unread.
    pub fn tracked(&self, id: &str) -> Option<(Arc<[u8]>, StoredSession)> {
        // Settled first, then the copy: an invalidation handed over after the check has
        // already removed it.
        // While the links are apart (a failover half followed), copies of either server's may
        // miss an ending confirmed on the other: `read` asks both.
        if !self.connection.settled() || self.connection.links_apart() {
            return None;
        }
        let cached = self.cache()?.get(id)?;
        Some((cached.raw, cached.stored))
    }

    /// `get` from Redis itself, tracking what it read.
    ///
    /// # Errors
    /// As `get`.
    pub async fn read(&self, id: &str) -> Result<Option<(Arc<[u8]>, StoredSession)>, StoreError> {
        let generation = self.cache().map(SessionCache::generation);
        // Looked at before the read too: a link may move while it is under way.
        let apart = self.connection.links_apart();
        let value: Option<Vec<u8>> = self.run(redis::cmd("GET").arg(self.key(id))).await?;
        if apart || self.connection.links_apart() {
            // A failover half followed: a session either server no longer has has ended (a
            // logout confirmed there), and nothing read now is kept.
            let confirmed: Option<Vec<u8>> = self
                .connection
                .query_on_confirm_link(redis::cmd("GET").arg(self.key(id)))
                .await
                .map_err(|error| self.failed(&error))?;
            // Both have it: the confirmed link's, where refreshes are written.
            let (Some(_), Some(bytes)) = (value, confirmed) else {
                return Ok(None);
            };
            return Ok(self.open(id, &bytes).map(|stored| (bytes.into(), stored)));
        }
        let Some(bytes) = value else { return Ok(None) };
        let Some(stored) = self.open(id, &bytes) else {
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
        let bytes = self.seal(id, stored)?;
        let ttl = u64::try_from(ttl.max(1)).unwrap_or(1);
        self.changed(id);
        let _: redis::Value = self
            .run(
                redis::cmd("EVAL")
                    .arg(COMPARE_AND_SET)
                    .arg(1)
                    .arg(self.key(id))
                    .arg(seen)
                    .arg(bytes)
                    .arg(ttl),
            )
            .await?;
        Ok(())
    }

    /// Stores `stored` under `id`, expiring after `ttl` seconds, and indexes it in sets that
    /// live at least `lifetime` seconds more (the longest the session can last).
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn put(
        &self,
        id: &str,
        stored: &StoredSession,
        (ttl, lifetime): (i64, i64),
        sub: &str,
        sid: Option<&str>,
    ) -> Result<(), StoreError> {
        let bytes = self.seal(id, stored)?;
        let ttl = u64::try_from(ttl.max(1)).unwrap_or(1);
        let () = self
            .run(
                redis::cmd("SET")
                    .arg(self.key(id))
                    .arg(bytes)
                    .arg("EX")
                    .arg(ttl),
            )
            .await?;
        let keep = lifetime.max(1).max(i64::try_from(ttl).unwrap_or(i64::MAX));
        // `lifetime` counts from now to the session's end.
        let ends_at = stored.session.expires_at;
        let now = ends_at.saturating_sub(lifetime);
        // Indexed once written: an action that reads the index meanwhile and finds no session
        // drops the entry (`forget`), and one added before the write would then be lost for
        // the session's whole life.
        let indexes = [Some(Index::All), Some(Index::Sub(sub)), sid.map(Index::Sid)];
        // On one server, one pipeline and one wait for a replica: a sign-in's three waits in a
        // row would queue everything else on the link of confirmed writes behind them. A
        // Cluster's indexes are on their own shards, each confirmed there.
        if self.connection.one_server() {
            let mut pipeline = redis::pipe();
            let indexes: Vec<Index<'_>> = indexes.into_iter().flatten().collect();
            for index in &indexes {
                self.add_to(&mut pipeline, *index, id, ends_at, now, keep);
            }
            let key = self.index_key(Index::All);
            let _: Vec<i64> = self
                .connection
                .query_confirmed(key.as_bytes(), &pipeline)
                .await
                .map_err(|error| self.failed(&error))?;
            return Ok(());
        }
        for index in indexes.into_iter().flatten() {
            self.index(index, id, ends_at, now, keep).await?;
        }
        Ok(())
    }

    /// Adds a session that a refresh gave another provider session id (`sid` of the new ID
    /// token) to that id's index, so that a back-channel logout naming it finds the session.
    /// The old `sid`'s index keeps it too, harmlessly: a selection checks each session's own
    /// facts.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn index_sid(
        &self,
        id: &str,
        sid: &str,
        ends_at: UnixTime,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        let keep = ends_at.saturating_sub(now).max(1);
        self.index(Index::Sid(sid), id, ends_at, now, keep).await
    }

    /// Adds `id`, a session that ends at `ends_at`, to `index` at `now`; the index then lives
    /// at least `keep` seconds more. Confirmed, as a logout's delete (SPEC §12): a back-channel
    /// logout and an admin's delete find a session only through its indexes, so an entry lost
    /// in a failover (or, on a Cluster, with the shard that holds the index) would leave the
    /// session to live out its lifetime.
    async fn index(
        &self,
        index: Index<'_>,
        id: &str,
        ends_at: UnixTime,
        now: UnixTime,
        keep: i64,
    ) -> Result<(), StoreError> {
        let key = self.index_key(index);
        let mut pipeline = redis::pipe();
        self.add_to(&mut pipeline, index, id, ends_at, now, keep);
        let (_,): (i64,) = self
            .connection
            .query_confirmed(key.as_bytes(), &pipeline)
            .await
            .map_err(|error| self.failed(&error))?;
        Ok(())
    }

    /// Appends to `pipeline` the script that adds `id` to `index` (see [`Self::index`]).
    fn add_to(
        &self,
        pipeline: &mut redis::Pipeline,
        index: Index<'_>,
        id: &str,
        ends_at: UnixTime,
        now: UnixTime,
        keep: i64,
    ) {
        pipeline
            .cmd("EVAL")
            .arg(INDEX_ADD)
            .arg(1)
            .arg(self.index_key(index))
            .arg(id)
            .arg(keep)
            .arg(ends_at.max(now.saturating_add(keep)))
            .arg(now);
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
        let bytes = self.seal(id, stored)?;
        let ttl = u64::try_from(ttl.max(1)).unwrap_or(1);
        self.changed(id);
        // XX: never recreate a session that was ended meanwhile.
        let _: Option<String> = self
            .run(
                redis::cmd("SET")
                    .arg(self.key(id))
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
        let deleted: i64 = self.run(redis::cmd("DEL").arg(self.key(id))).await?;
        self.forget(Index::All, id).await?;
        Ok(deleted > 0)
    }

    /// Ends a session for good (logout, admin delete, back-channel logout): answers only once
    /// Redis confirmed the delete and, when the master has replicas, one acknowledged it, so
    /// a failover cannot bring the session back (SPEC §12).
    ///
    /// # Errors
    /// `Unavailable`, also when no replica acknowledged the delete.
    pub async fn delete_confirmed(&self, id: &str) -> Result<bool, StoreError> {
        self.changed(id);
        let key = self.key(id);
        let mut pipeline = redis::pipe();
        pipeline.cmd("EVAL").arg(DELETE).arg(1).arg(&key);
        let (deleted,): (i64,) = self
            .connection
            .query_confirmed(key.as_bytes(), &pipeline)
            .await
            .map_err(|error| self.failed(&error))?;
        self.forget(Index::All, id).await?;
        Ok(deleted > 0)
    }

    /// Whether a logout token (`key`: a digest of its provider and `jti`) was used before.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn logout_token_used(&self, key: &str) -> Result<bool, StoreError> {
        // Read where the record was confirmed: after a failover the main link may not have
        // followed yet.
        self.connection
            .query_on_confirm_link(redis::cmd("EXISTS").arg(self.logout_token_key(key)))
            .await
            .map_err(|error| self.failed(&error))
    }

    /// Records a used logout token for `seconds`, for every replica: done once a replica of
    /// the master acknowledged it, as the deletes of the sessions it ended (a record the master
    /// alone held was lost with it in a failover, and the token could end the sessions of its
    /// `sub` or `sid` again for a day).
    ///
    /// # Errors
    /// `Unavailable`, this record then undone (as far as Redis can be reached; one another
    /// replica wrote for the same token meanwhile stays), so that the provider's retry carries
    /// the logout out again instead of meeting a replay.
    pub async fn remember_logout_token(&self, key: &str, seconds: i64) -> Result<(), StoreError> {
        let key = self.logout_token_key(key);
        let mine = crate::random::token();
        let mut pipeline = redis::pipe();
        pipeline
            .cmd("EVAL")
            .arg(REMEMBER)
            .arg(1)
            .arg(&key)
            .arg(&mine)
            .arg(seconds.max(1));
        // 2: this attempt's own, when the client sent the pipeline again after a dropped
        // connection (Cluster retries); the script wrote again, so the retry's `WAIT` covers it.
        let written: redis::RedisResult<(i64,)> = self
            .connection
            .query_confirmed(key.as_bytes(), &pipeline)
            .await;
        let error = match written {
            Ok((0,)) => {
                // Another replica is recording the same token and may yet undo its record:
                // the provider's retry then finds it confirmed (a replay) or gone (served).
                return Err(StoreError::Unavailable(
                    "another replica is recording the same logout token".to_owned(),
                ));
            }
            Ok(_) => return Ok(()),
            Err(error) => error,
        };
        // On the server the write went to; a record another replica wrote first (`NX` kept
        // it) is not this attempt's to undo.
        let _: redis::RedisResult<i64> = self
            .connection
            .query_on_confirm_link(
                redis::cmd("EVAL")
                    .arg(lease::RELEASE)
                    .arg(1)
                    .arg(&key)
                    .arg(&mine),
            )
            .await;
        Err(self.failed(&error))
    }

    fn logout_token_key(&self, key: &str) -> String {
        format!("{}logout:{key}", self.prefix)
    }

    /// Records for `seconds`, for every replica, that the provider ended the provider session
    /// `key` (a digest of provider and `sid`) at `at`: done once a replica acknowledged it, as
    /// a logout's deletes.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn mark_provider_session_ended(
        &self,
        key: &str,
        at: UnixTime,
        seconds: i64,
    ) -> Result<(), StoreError> {
        // The later of two logouts' times stays, whichever is written last (a provider's retry
        // of an older token after a newer one), as in the memory store.
        const MARK: &str = "local at = redis.call('GET', KEYS[1]) if at and tonumber(at) >= tonumber(ARGV[1]) then return redis.call('EXPIRE', KEYS[1], ARGV[2]) end return redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])";
        let key = self.ended_key(key);
        let mut pipeline = redis::pipe();
        pipeline
            .cmd("EVAL")
            .arg(MARK)
            .arg(1)
            .arg(&key)
            .arg(at)
            .arg(seconds.max(1));
        let _: (redis::Value,) = self
            .connection
            .query_confirmed(key.as_bytes(), &pipeline)
            .await
            .map_err(|error| self.failed(&error))?;
        Ok(())
    }

    /// When the provider ended the provider session `key`, if it did lately (see
    /// [`Self::mark_provider_session_ended`]): read where the mark was confirmed (after a
    /// failover the main link may not have followed yet), and never kept as a copy.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn provider_session_ended(&self, key: &str) -> Result<Option<UnixTime>, StoreError> {
        self.connection
            .query_on_confirm_link(redis::cmd("GET").arg(self.ended_key(key)))
            .await
            .map_err(|error| self.failed(&error))
    }

    fn ended_key(&self, key: &str) -> String {
        format!("{}ended:{key}", self.prefix)
    }

    /// Ids in an index set: every session, or those of a `sub` or a `sid`.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn ids(&self, index: Index<'_>) -> Result<Vec<String>, StoreError> {
        // Read where the confirmed writes of the indexes went (after a failover the main link
        // may not have followed yet).
        self.connection
            .query_on_confirm_link(
                redis::cmd("EVAL")
                    .arg(INDEX_IDS)
                    .arg(1)
                    .arg(self.index_key(index)),
            )
            .await
            .map_err(|error| self.failed(&error))
    }

    /// Drops an id that no longer has a session from an index.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn forget(&self, index: Index<'_>, id: &str) -> Result<(), StoreError> {
        let _: i64 = self
            .connection
            .invoke(INDEX_FORGET_SCRIPT.key(self.index_key(index)).arg(id))
            .await
            .map_err(|error| self.failed(&error))?;
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
