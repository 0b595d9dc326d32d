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
}

impl TokenCache {
    /// A cache holding at most `capacity` tokens.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Cache::new(capacity),
        }
    }

    /// The claims cached for `token`, while `now` is before their expiry.
    pub fn get(&self, token: &str, now: UnixTime) -> Option<Claims> {
        let (claims, expires_at) = self.entries.get(token)?;
        if now < expires_at {
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
