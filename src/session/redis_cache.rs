//! Sessions read from Redis, kept in this process for as long as Redis vouches for them
//! (RESP3 server-assisted client-side caching, `CLIENT TRACKING`): Redis remembers which keys
//! the connection read and pushes an `invalidate` message on that connection when one of them
//! changes, is deleted or expires, whoever changed it. A cached session is therefore as current
//! as Redis, and a logout on another replica ends it here too, without a round trip per request.
//!
//! Three rules keep the copy honest:
//! - Invalidations are applied on the connection's own reader, in the order Redis sent them, and
//!   a value read before an invalidation arrived is never stored after it (the generation
//!   check in [`SessionCache::insert`]).
//! - Losing the connection forgets everything: invalidations may have been missed.
//! - No entry is used for longer than [`MAX_AGE`], which bounds what a silent network partition
//!   (no invalidations, no disconnect) can keep alive.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::record::StoredSession;

/// The longest a cached session is used without reading it from Redis again.
pub const MAX_AGE: Duration = Duration::from_secs(5);
/// Sessions kept at most (the most recently used ones).
const CAPACITY: usize = 4096;

/// A session as Redis returned it.
#[derive(Clone)]
pub struct CachedSession {
    /// The bytes Redis held (compared by the compare-and-set that records a use).
    pub raw: Arc<[u8]>,
    /// The parsed session.
    pub stored: StoredSession,
    read_at: Instant,
}

/// Tracked sessions by id.
pub struct SessionCache {
    entries: quick_cache::sync::Cache<String, CachedSession>,
    /// Bumped before every invalidation, so a read that raced one is not stored.
    generation: AtomicU64,
    /// What session keys start with (`<redis_key_prefix>s:`); other keys name no session.
    key_prefix: String,
    /// Counts Redis's invalidations of session keys (`tollgate_session_cache_invalidations`).
    invalidations: prometheus_client::metrics::counter::Counter,
}

impl SessionCache {
    /// An empty cache for sessions whose keys are `key_prefix` and the id; Redis's
    /// invalidations of them are counted in `invalidations`.
    pub fn new(
        key_prefix: String,
        invalidations: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        Self {
            entries: quick_cache::sync::Cache::new(CAPACITY),
            generation: AtomicU64::new(0),
            key_prefix,
            invalidations,
        }
    }

    /// The cached session `id`, if Redis has not changed it since it was read.
    pub fn get(&self, id: &str) -> Option<CachedSession> {
        let cached = self.entries.get(id)?;
        if cached.read_at.elapsed() >= MAX_AGE {
            self.entries.remove(id);
            return None;
        }
        Some(cached)
    }

    /// Taken before a read; hand it to [`Self::insert`] with what the read returned.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Keeps what a read returned, unless anything was invalidated since `generation` was
    /// taken (the value may be older than the invalidation).
    pub fn insert(&self, id: &str, raw: Arc<[u8]>, stored: StoredSession, generation: u64) {
        if self.generation() != generation {
            return;
        }
        let entry = CachedSession {
            raw,
            stored,
            read_at: Instant::now(),
        };
        self.entries.insert(id.to_owned(), entry);
        // An invalidation between the check and the insert may have missed the new entry.
        if self.generation() != generation {
            self.entries.remove(id);
        }
    }

    /// Forgets one session (changed by this process, or invalidated by Redis).
    pub fn invalidate(&self, id: &str) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.entries.remove(id);
    }

    /// Forgets every session (connection lost, database flushed).
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.entries.clear();
    }
}

impl crate::redis_connection::Invalidations for SessionCache {
    fn invalidate(&self, key: &[u8]) {
        match std::str::from_utf8(key)
            .ok()
            .and_then(|key| key.strip_prefix(self.key_prefix.as_str()))
        {
            Some(id) => {
                SessionCache::invalidate(self, id);
                self.invalidations.inc();
            }
            // Another key: nothing kept changed, but a read in flight is not kept either.
            None => {
                self.generation.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    fn invalidate_all(&self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis_connection::Invalidations as _;
    use crate::session::Session;

    fn stored(last_seen: i64) -> StoredSession {
        StoredSession {
            session: Arc::new(Session {
                provider: "p".to_owned(),
                claims: crate::token::Claims::default(),
                id_token: String::new(),
                access_token: None,
                refresh_token: None,
                access_expires_at: None,
                created_at: 0,
                expires_at: 100,
            }),
            last_seen,
        }
    }

    fn invalidate(cache: &SessionCache, keys: &[&str]) {
        for key in keys {
            crate::redis_connection::Invalidations::invalidate(cache, key.as_bytes());
        }
    }

    #[test]
    fn an_invalidation_removes_the_session_it_names() {
        let cache = SessionCache::new("tollgate:s:".to_owned(), Default::default());
        cache.insert("a", Arc::from(&b"1"[..]), stored(1), cache.generation());
        cache.insert("b", Arc::from(&b"2"[..]), stored(2), cache.generation());
        invalidate(&cache, &["tollgate:s:a"]);
        assert!(cache.get("a").is_none());
        assert_eq!(
            cache.get("b").map(|cached| cached.stored.last_seen),
            Some(2)
        );
    }

    #[test]
    fn invalidations_of_session_keys_are_counted_and_others_are_not() {
        let counter = prometheus_client::metrics::counter::Counter::default();
        let cache = SessionCache::new("tollgate:s:".to_owned(), counter.clone());
        invalidate(
            &cache,
            &["tollgate:s:a", "tollgate:sub:alice", "tollgate:s:b"],
        );
        assert_eq!(counter.get(), 2);
    }

    #[test]
    fn a_read_that_raced_an_invalidation_is_not_kept() {
        let cache = SessionCache::new("tollgate:s:".to_owned(), Default::default());
        let before_read = cache.generation();
        invalidate(&cache, &["tollgate:s:a"]);
        cache.insert("a", Arc::from(&b"old"[..]), stored(1), before_read);
        assert!(cache.get("a").is_none(), "the value may predate the change");
        cache.insert("a", Arc::from(&b"new"[..]), stored(2), cache.generation());
        assert!(cache.get("a").is_some());
    }

    #[test]
    fn a_flush_or_a_lost_connection_forgets_everything() {
        let cache = SessionCache::new("tollgate:s:".to_owned(), Default::default());
        cache.insert("a", Arc::from(&b"1"[..]), stored(1), cache.generation());
        let before_read = cache.generation();
        cache.invalidate_all();
        assert!(cache.entries.is_empty());
        cache.insert("b", Arc::from(&b"2"[..]), stored(2), before_read);
        assert!(cache.get("b").is_none(), "a read in flight is not kept");
    }

    #[test]
    fn other_keys_only_stop_reads_in_flight() {
        let cache = SessionCache::new("tollgate:s:".to_owned(), Default::default());
        cache.insert("a", Arc::from(&b"1"[..]), stored(1), cache.generation());
        let before_read = cache.generation();
        invalidate(&cache, &["tollgate:sub:x"]);
        assert!(cache.get("a").is_some());
        cache.insert("b", Arc::from(&b"2"[..]), stored(2), before_read);
        assert!(cache.get("b").is_none());
    }
}
