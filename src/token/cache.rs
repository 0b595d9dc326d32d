//! A bounded cache of positive validation results, kept until the token's `exp` (SPEC §6).
//!
//! The key is the whole token, compared in full on every hit, so no hash collision can ever
//! return another token's claims; the cache's hasher is randomly seeded, so crafted tokens
//! cannot pile into one bucket. One cache serves one purpose (one provider's access tokens, or
//! the token service's own), so a token accepted in one place is never taken from the cache in
//! another.

use quick_cache::sync::Cache;

use super::Claims;
use crate::clock::UnixTime;

/// Cached claims of tokens that passed validation.
pub struct TokenCache {
    entries: Cache<Box<str>, (Claims, UnixTime)>,
    /// Unique per cache (never an address, which a later cache could reuse).
    id: u64,
}

/// The last token each thread found, with a private copy of its claims: a client on a
/// keep-alive connection sends the same token again and again, and this answers it without
/// touching the shared cache's locks or reference counts (which two cores would fight over).
struct Front {
    cache: u64,
    token: Box<str>,
    claims: Claims,
    expires_at: UnixTime,
}

thread_local! {
    static FRONT: std::cell::RefCell<Option<Front>> = const { std::cell::RefCell::new(None) };
}

impl TokenCache {
    /// A cache holding at most `capacity` tokens.
    pub fn new(capacity: usize) -> Self {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Self {
            entries: Cache::new(capacity),
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// The claims cached for `token`, while `now` is before their expiry.
    pub fn get(&self, token: &str, now: UnixTime) -> Option<Claims> {
        let front = FRONT.with(|front| {
            front
                .borrow()
                .as_ref()
                .filter(|front| {
                    front.cache == self.id && now < front.expires_at && &*front.token == token
                })
                .map(|front| front.claims.clone())
        });
        if front.is_some() {
            return front;
        }
        let (claims, expires_at) = self.entries.get(token)?;
        if now < expires_at {
            let private = std::sync::Arc::new(claims.as_ref().clone());
            FRONT.with(|front| {
                *front.borrow_mut() = Some(Front {
                    cache: self.id,
                    token: token.into(),
                    claims: private,
                    expires_at,
                });
            });
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
}
