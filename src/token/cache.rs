//! A bounded cache of positive validation results, keyed by a SHA-256 of the token and of what
//! it was validated for, kept until the token's `exp` (SPEC §6).

use quick_cache::sync::Cache;

use super::Claims;
use crate::clock::UnixTime;

/// Cached claims of tokens that passed validation.
pub struct TokenCache {
    entries: Cache<[u8; 32], (Claims, UnixTime)>,
}

impl TokenCache {
    /// A cache holding at most `capacity` tokens.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Cache::new(capacity),
        }
    }

    /// The cache key of `token` validated for `purpose` (provider and token kind), so a token
    /// accepted in one place is never taken from the cache in another.
    pub fn key(purpose: &str, token: &str) -> [u8; 32] {
        let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        context.update(purpose.as_bytes());
        context.update(&[0]);
        context.update(token.as_bytes());
        let digest = context.finish();
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        key
    }

    /// The claims cached under `key`, while `now` is before their expiry.
    pub fn get(&self, key: &[u8; 32], now: UnixTime) -> Option<Claims> {
        let (claims, expires_at) = self.entries.get(key)?;
        if now < expires_at {
            Some(claims)
        } else {
            self.entries.remove(key);
            None
        }
    }

    /// Remembers `claims` under `key` until `expires_at`.
    pub fn insert(&self, key: [u8; 32], claims: Claims, expires_at: UnixTime) {
        self.entries.insert(key, (claims, expires_at));
    }
}
