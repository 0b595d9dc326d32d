//! A bounded cache of positive validation results, kept until the token's `exp` (SPEC §6).
//!
//! The key is the whole token, compared in full on every hit, so no hash collision can ever
//! return another token's claims; the cache's hasher is randomly seeded, so crafted tokens
//! cannot pile into one bucket. One cache serves one purpose (one provider's access tokens, or
//! the token service's own), so a token accepted in one place is never taken from the cache in
//! another.

use std::sync::atomic::{AtomicU64, Ordering};

use quick_cache::sync::Cache;

use super::Claims;
use crate::clock::UnixTime;

/// Cached claims of tokens that passed validation.
pub struct TokenCache {
    entries: Cache<Box<str>, (Claims, UnixTime)>,
    /// Unique per cache and per [`TokenCache::forget_all`] (never an address, which a later
    /// cache could reuse): the threads' entries of an earlier one are never read.
    id: AtomicU64,
}

/// The next cache id.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The last token each thread found (`thread_front`: its claims the thread's own copy from
    /// the second time in a row, its expiry as the stamp).
    static FRONT: crate::thread_front::Slot<serde_json::Map<String, serde_json::Value>> =
        const { std::cell::RefCell::new(None) };
}

impl TokenCache {
    /// A cache holding at most `capacity` tokens.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Cache::new(capacity),
            id: AtomicU64::new(NEXT_ID.fetch_add(1, Ordering::Relaxed)),
        }
    }

    /// What [`TokenCache::insert_validated`] is given: the cache as it was when a validation
    /// started.
    pub fn epoch(&self) -> u64 {
        self.id.load(Ordering::Acquire)
    }

    /// Forgets every token (the threads' entries too): the keys some were validated with were
    /// withdrawn.
    pub fn forget_all(&self) {
        self.id
            .store(NEXT_ID.fetch_add(1, Ordering::Relaxed), Ordering::Release);
        self.entries.clear();
    }

    /// The claims cached for `token`, while `now` is before their expiry.
    pub fn get(&self, token: &str, now: UnixTime) -> Option<Claims> {
        let own = |claims: &serde_json::Map<String, serde_json::Value>| {
            std::sync::Arc::new(claims.clone())
        };
        let id = self.id.load(Ordering::Acquire);
        if let Some((claims, expires_at)) = crate::thread_front::get(&FRONT, id, token, own)
            && now < expires_at
        {
            return Some(claims);
        }
        let (claims, expires_at) = self.entries.get(token)?;
        if now < expires_at {
            crate::thread_front::put(&FRONT, id, token, &claims, expires_at);
            Some(claims)
        } else {
            self.entries.remove(token);
            None
        }
    }

    /// Remembers `claims` for `token` until `expires_at`.
    pub fn insert(&self, token: &str, claims: Claims, expires_at: UnixTime) {
        self.entries.insert(token.into(), (claims, expires_at));
    }

    /// [`TokenCache::insert`], unless every token was forgotten since `epoch`: a signature
    /// checked with keys fetched before a withdrawal is not remembered after it.
    pub fn insert_validated(&self, epoch: u64, token: &str, claims: Claims, expires_at: UnixTime) {
        if self.epoch() == epoch {
            self.entries.insert(token.into(), (claims, expires_at));
            // Forgotten meanwhile: forgotten again.
            if self.epoch() != epoch {
                self.entries.remove(token);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn claims(sub: &str) -> Claims {
        Arc::new(
            serde_json::json!({"sub": sub})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        )
    }

    #[test]
    fn forgotten_tokens_are_gone_from_the_threads_entries_too() {
        let cache = TokenCache::new(16);
        let epoch = cache.epoch();
        cache.insert_validated(epoch, "token-a", claims("a"), 100);
        assert!(cache.get("token-a", 10).is_some());
        assert!(cache.get("token-a", 10).is_some(), "the thread's own entry");
        cache.forget_all();
        assert!(cache.get("token-a", 10).is_none());
        // Validated with keys from before the withdrawal: not remembered after it.
        cache.insert_validated(epoch, "token-a", claims("a"), 100);
        assert!(cache.get("token-a", 10).is_none());
        cache.insert_validated(cache.epoch(), "token-a", claims("a"), 100);
        assert!(cache.get("token-a", 10).is_some());
    }

    #[test]
    fn the_second_hit_in_a_row_is_the_threads_own_copy() {
        let cache = TokenCache::new(16);
        let shared = claims("a");
        cache.insert("token-a", shared.clone(), 100);
        let (Some(first), Some(second), Some(third)) = (
            cache.get("token-a", 10),
            cache.get("token-a", 10),
            cache.get("token-a", 10),
        ) else {
            panic!("the token is cached");
        };
        assert!(Arc::ptr_eq(&first, &shared));
        assert!(!Arc::ptr_eq(&second, &shared));
        assert!(Arc::ptr_eq(&second, &third));
        assert_eq!(second, shared);
    }

    #[test]
    fn tokens_taking_turns_on_a_thread_copy_no_claims() {
        let cache = TokenCache::new(16);
        let (a, b) = (claims("a"), claims("b"));
        cache.insert("token-a", a.clone(), 100);
        cache.insert("token-b", b.clone(), 100);
        for _ in 0..3 {
            assert!(
                cache
                    .get("token-a", 10)
                    .is_some_and(|got| Arc::ptr_eq(&got, &a))
            );
            assert!(
                cache
                    .get("token-b", 10)
                    .is_some_and(|got| Arc::ptr_eq(&got, &b))
            );
        }
        // The thread's entry holds the shared claims themselves (this test's, the cache's and
        // the entry's reference), not a copy.
        assert_eq!(Arc::strong_count(&b), 3);
        // And an expired token is not served from the thread's entry either.
        assert!(cache.get("token-b", 100).is_none());
    }
}
