//! `token_service.store = "memory"`: the token service's state in this process, behind one
//! lock. Lost on restart; not shared with other replicas.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use super::lapsing::Lapsing;
use super::{
    CODE_LIFETIME, CodeUse, FAILURE_WINDOW, Grant, IssuerState, MAX_FAILURES, MAX_GRANTS_PER_USER,
    PendingCode, Redemption, RefreshUse, StateError, StateFuture, USED_CODE_MEMORY, hash,
};
use crate::clock::UnixTime;

#[derive(Debug)]
struct RefreshRecord {
    grant_id: String,
    used: bool,
    expires_at: UnixTime,
}

#[derive(Debug)]
struct GrantRecord {
    grant: Grant,
    revoked: bool,
    /// Kept until then (pushed back as refresh tokens are issued).
    until: UnixTime,
    /// How many times its refresh token was rotated.
    rotations: u64,
    /// Its refresh tokens (by hash), spent or not, forgotten with it when it ends.
    tokens: Vec<[u8; 32]>,
}

#[derive(Debug)]
struct Book {
    /// Codes not yet redeemed, for `CODE_LIFETIME`.
    codes: Lapsing<String, PendingCode>,
    /// Codes redeemed, and when, for `USED_CODE_MEMORY`: a second redemption is a replay.
    used_codes: Lapsing<String, (Redemption, UnixTime)>,
    grants: HashMap<String, GrantRecord>,
    /// Grants revoked by a code's replay before their redemption opened them (the replay
    /// landed between `take_code` and `open_grant`), by when: opened revoked.
    revoked_unopened: Lapsing<String, UnixTime>,
    refresh_tokens: HashMap<[u8; 32], RefreshRecord>,
    /// Each holder's grants (`Grant::holder`), oldest first.
    holders: HashMap<String, VecDeque<String>>,
    /// Revoked access tokens by `jti`, until they would have expired.
    revoked_access: Lapsing<String, UnixTime>,
    /// Grants and refresh tokens are looked through for expired ones when there are this many
    /// of them together (twice as many as after the last look, at least [`FIRST_PRUNE`]).
    prune_at: usize,
}

/// The number of grants and refresh tokens together at which expired ones are first dropped.
const FIRST_PRUNE: usize = 1024;

impl Default for Book {
    fn default() -> Self {
        Self {
            codes: Lapsing::new(|pending, now| now - pending.issued_at > CODE_LIFETIME),
            used_codes: Lapsing::new(|(_, used_at), now| now - used_at > USED_CODE_MEMORY),
            grants: HashMap::new(),
            revoked_unopened: Lapsing::new(|revoked_at, now| now - revoked_at > USED_CODE_MEMORY),
            refresh_tokens: HashMap::new(),
            holders: HashMap::new(),
            // Validation accepts a token through the second `until` (its `exp` plus the leeway).
            revoked_access: Lapsing::new(|until, now| *until < now),
            prune_at: 0,
        }
    }
}

impl Book {
    /// Drops refresh tokens past their expiry (spent or not: an expired one is refused either
    /// way) and grants past their end, whenever the two together doubled since the last look:
    /// every client that refreshes adds a token, every sign-in a grant.
    fn prune(&mut self, now: UnixTime) {
        if self.refresh_tokens.len() + self.grants.len() < self.prune_at.max(FIRST_PRUNE) {
            return;
        }
        self.refresh_tokens
            .retain(|_, record| record.expires_at > now);
        self.grants.retain(|_, record| record.until > now);
        let grants = &self.grants;
        self.holders.retain(|_, ids| {
            ids.retain(|id| grants.contains_key(id));
            !ids.is_empty()
        });
        self.prune_at = ((self.refresh_tokens.len() + self.grants.len()) * 2).max(FIRST_PRUNE);
    }

    /// Opens `grant` under `grant_id`, kept until `until`; the holder's grants beyond
    /// [`MAX_GRANTS_PER_USER`] end, oldest first.
    fn open_grant(&mut self, grant_id: &str, grant: &Grant, until: UnixTime, now: UnixTime) {
        // A sign-in loop whose grants end beyond the limit adds grants, not refresh tokens.
        self.prune(now);
        let revoked = self.revoked_unopened.remove(grant_id, now).is_some();
        self.grants.insert(
            grant_id.to_owned(),
            GrantRecord {
                grant: grant.clone(),
                revoked,
                until,
                rotations: 0,
                tokens: Vec::new(),
            },
        );
        let Self {
            grants,
            holders,
            refresh_tokens,
            ..
        } = self;
        let ids = holders.entry(grant.holder()).or_default();
        // Revoked grants count until they lapse: a revoked grant's refresh tokens are kept (a
        // reuse still refused as one), so a user revoking each grant would else never reach
        // the limit.
        ids.retain(|id| grants.contains_key(id));
        ids.push_back(grant_id.to_owned());
        while ids.len() > MAX_GRANTS_PER_USER {
            let Some(oldest) = ids.pop_front() else {
                break;
            };
            if let Some(record) = grants.get_mut(&oldest) {
                record.revoked = true;
                for token in record.tokens.drain(..) {
                    refresh_tokens.remove(&token);
                }
            }
        }
    }

    fn revoke_grant(&mut self, grant_id: &str) {
        if let Some(record) = self.grants.get_mut(grant_id) {
            record.revoked = true;
        }
    }

    fn take_code(&mut self, code: &str, redemption: &Redemption, now: UnixTime) -> CodeUse {
        if let Some(pending) = self.codes.remove(code, now) {
            self.used_codes
                .insert(code.to_owned(), (redemption.clone(), now), now);
            return CodeUse::Pending(Box::new(pending));
        }
        let Some((used, _)) = self.used_codes.get(code, now).cloned() else {
            return CodeUse::Unknown;
        };
        if let Some(grant_id) = &used.grant_id {
            if self.grants.contains_key(grant_id) {
                self.revoke_grant(grant_id);
            } else {
                self.revoked_unopened.insert(grant_id.clone(), now, now);
            }
        }
        self.revoked_access
            .insert(used.access_jti, used.access_expires_at, now);
        CodeUse::Replayed
    }

    fn rotate_refresh_token(
        &mut self,
        token: &str,
        client_id: &str,
        successor: super::Successor,
        now: UnixTime,
    ) -> RefreshUse {
        let Some(record) = self.refresh_tokens.get_mut(&hash(token)) else {
            return RefreshUse::Invalid;
        };
        let grant_id = record.grant_id.clone();
        // Whose token it is, before whether it was spent: a spent token of another client,
        // presented by any client that may refresh (a public one needs no secret), must not
        // end that client's grant (RFC 6749 §6: the token is bound to its client).
        let Some(grant) = self.grants.get(&grant_id) else {
            return RefreshUse::Invalid;
        };
        if grant.grant.client_id != client_id {
            return RefreshUse::Invalid;
        }
        if record.used {
            self.revoke_grant(&grant_id);
            return RefreshUse::Reused;
        }
        let Some(grant) = self.grants.get(&grant_id) else {
            return RefreshUse::Invalid;
        };
        if grant.revoked || now >= record.expires_at {
            return RefreshUse::Invalid;
        }
        if grant.rotations >= successor.rotations_most {
            return RefreshUse::Exhausted;
        }
        record.used = true;
        if let Some(grant) = self.grants.get_mut(&grant_id) {
            grant.rotations += 1;
        }
        RefreshUse::Fresh(self.issue_refresh_token(
            &grant_id,
            successor.expires_at,
            successor.grant_until,
            now,
        ))
    }

    fn issue_refresh_token(
        &mut self,
        grant_id: &str,
        expires_at: UnixTime,
        grant_until: UnixTime,
        now: UnixTime,
    ) -> String {
        self.prune(now);
        if let Some(grant) = self.grants.get_mut(grant_id) {
            grant.until = grant.until.max(grant_until);
        }
        let token = super::new_refresh_token(grant_id);
        let digest = hash(&token);
        if let Some(grant) = self.grants.get_mut(grant_id) {
            grant.tokens.push(digest);
        }
        self.refresh_tokens.insert(
            digest,
            RefreshRecord {
                grant_id: grant_id.to_owned(),
                used: false,
                expires_at,
            },
        );
        token
    }
}

/// The token service's state in this process.
#[derive(Debug, Default)]
pub struct MemoryState {
    book: Mutex<Book>,
    /// Failed attempts per key: (count, window start). Bounded in entries; every key is
    /// bounded in length (configured ids and addresses).
    failures: Mutex<HashMap<String, (u32, UnixTime)>>,
}

#[cfg(test)]
impl MemoryState {
    /// How many grants and refresh tokens are held.
    pub(super) fn held(&self) -> (usize, usize) {
        self.with_book(|book| (book.grants.len(), book.refresh_tokens.len()))
            .unwrap_or_default()
    }
}

/// The most failure keys kept; the oldest windows go first beyond it.
const MAX_FAILURE_KEYS: usize = 10_000;

impl MemoryState {
    fn with_book<T>(&self, work: impl FnOnce(&mut Book) -> T) -> Result<T, StateError> {
        let mut book = self
            .book
            .lock()
            .map_err(|_| StateError("state lock poisoned".to_owned()))?;
        Ok(work(&mut book))
    }

    fn with_failures<T>(
        &self,
        work: impl FnOnce(&mut HashMap<String, (u32, UnixTime)>) -> T,
    ) -> Result<T, StateError> {
        let mut failures = self
            .failures
            .lock()
            .map_err(|_| StateError("state lock poisoned".to_owned()))?;
        Ok(work(&mut failures))
    }
}

fn ready<'a, T: Send + 'a>(value: Result<T, StateError>) -> StateFuture<'a, T> {
    Box::pin(std::future::ready(value))
}

impl IssuerState for MemoryState {
    /// A refresh token this store issued (spent or not: a spent one's reuse ends its grant),
    /// before anything is read for it: a made-up token of a real grant (its id is every
    /// token's `sid`) would else be answered from the grant, its tokens signed before the
    /// token was looked up.
    fn refresh_token_grant<'a>(&self, token: &'a str) -> Option<&'a str> {
        let grant = super::grant_of_refresh_token(token)?;
        self.with_book(|book| book.refresh_tokens.contains_key(&hash(token)))
            .unwrap_or(false)
            .then_some(grant)
    }

    fn put_code<'a>(&'a self, code: &'a str, pending: &'a PendingCode) -> StateFuture<'a, ()> {
        ready(self.with_book(|book| {
            book.codes
                .insert(code.to_owned(), pending.clone(), pending.issued_at);
        }))
    }

    fn take_code<'a>(
        &'a self,
        code: &'a str,
        redemption: &'a Redemption,
        now: UnixTime,
    ) -> StateFuture<'a, CodeUse> {
        ready(self.with_book(|book| book.take_code(code, redemption, now)))
    }

    fn open_grant<'a>(
        &'a self,
        grant_id: &'a str,
        grant: &'a Grant,
        until: UnixTime,
        now: UnixTime,
    ) -> StateFuture<'a, ()> {
        ready(self.with_book(|book| book.open_grant(grant_id, grant, until, now)))
    }

    fn issue_refresh_token<'a>(
        &'a self,
        grant_id: &'a str,
        expires_at: UnixTime,
        grant_until: UnixTime,
        now: UnixTime,
    ) -> StateFuture<'a, String> {
        ready(
            self.with_book(|book| book.issue_refresh_token(grant_id, expires_at, grant_until, now)),
        )
    }

    fn grant<'a>(
        &'a self,
        grant_id: &'a str,
        client_id: &'a str,
    ) -> StateFuture<'a, Option<Grant>> {
        ready(self.with_book(|book| {
            book.grants
                .get(grant_id)
                .filter(|record| record.grant.client_id == client_id)
                .map(|record| record.grant.clone())
        }))
    }

    fn rotate_refresh_token<'a>(
        &'a self,
        token: &'a str,
        client_id: &'a str,
        successor: super::Successor,
        now: UnixTime,
    ) -> StateFuture<'a, RefreshUse> {
        ready(self.with_book(|book| book.rotate_refresh_token(token, client_id, successor, now)))
    }

    fn revoke_refresh_token<'a>(
        &'a self,
        token: &'a str,
        client_id: &'a str,
    ) -> StateFuture<'a, bool> {
        ready(self.with_book(|book| {
            let Some(grant_id) = book
                .refresh_tokens
                .get(&hash(token))
                .map(|record| record.grant_id.clone())
            else {
                return false;
            };
            let owned = book
                .grants
                .get(&grant_id)
                .is_some_and(|record| record.grant.client_id == client_id);
            if owned {
                book.revoke_grant(&grant_id);
            }
            owned
        }))
    }

    fn revoke_access<'a>(
        &'a self,
        jti: &'a str,
        _sid: Option<&'a str>,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> StateFuture<'a, ()> {
        ready(self.with_book(|book| {
            book.revoked_access.insert(jti.to_owned(), expires_at, now);
        }))
    }

    fn is_revoked<'a>(
        &'a self,
        jti: Option<&'a str>,
        sid: Option<&'a str>,
    ) -> StateFuture<'a, bool> {
        ready(self.with_book(|book| {
            // A lapsed entry is a token past its `exp` and the leeway, refused as expired.
            jti.is_some_and(|jti| book.revoked_access.contains_key(jti))
                || sid.is_some_and(|sid| book.grants.get(sid).is_some_and(|grant| grant.revoked))
        }))
    }

    fn limited<'a>(&'a self, keys: &'a [String], now: UnixTime) -> StateFuture<'a, bool> {
        ready(self.with_failures(|failures| {
            keys.iter().any(|key| {
                failures.get(key).is_some_and(|(count, since)| {
                    *count >= MAX_FAILURES && now - since < FAILURE_WINDOW
                })
            })
        }))
    }

    fn forgive_failure<'a>(&'a self, keys: &'a [String], now: UnixTime) -> StateFuture<'a, ()> {
        ready(self.with_failures(|failures| {
            for key in keys {
                if let Some((count, since)) = failures.get_mut(key)
                    && now - *since < FAILURE_WINDOW
                {
                    *count = count.saturating_sub(1);
                    // As Redis drops the key: a window begins with a failure, never a success.
                    if *count == 0 {
                        failures.remove(key);
                    }
                }
            }
        }))
    }

    fn count_failure<'a>(&'a self, keys: &'a [String], now: UnixTime) -> StateFuture<'a, ()> {
        ready(self.with_failures(|failures| {
            if failures.len() >= MAX_FAILURE_KEYS {
                failures.retain(|_, (_, since)| now - *since < FAILURE_WINDOW);
            }
            for key in keys {
                if failures.len() >= MAX_FAILURE_KEYS && !failures.contains_key(key) {
                    // Full of live windows: a name no user has makes room, else an address
                    // (anyone can make up either). Client and user keys are few (configured),
                    // so they are always counted.
                    let evictable = |prefix: &str| {
                        failures
                            .keys()
                            .find(|existing| existing.starts_with(prefix))
                            .cloned()
                    };
                    let evicted = evictable("name:").or_else(|| evictable("address:"));
                    match evicted {
                        Some(evicted) => {
                            failures.remove(&evicted);
                        }
                        None => continue,
                    }
                }
                let entry = failures.entry(key.clone()).or_insert((0, now));
                if now - entry.1 >= FAILURE_WINDOW {
                    *entry = (0, now);
                }
                entry.0 = entry.0.saturating_add(1);
            }
        }))
    }

    fn check(&self) -> StateFuture<'_, ()> {
        ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A revocation holds through the last second validation accepts its token (`exp` plus
    /// the leeway, which `until` is), and a redeemed code is known for `USED_CODE_MEMORY`.
    #[test]
    fn revocations_and_redeemed_codes_lapse_after_their_last_second() {
        let mut book = Book::default();
        book.revoked_access.insert("jti".to_owned(), 110, 100);
        assert!(book.revoked_access.get("jti", 110).is_some());
        assert!(book.revoked_access.get("jti", 111).is_none());
        let redeemed = Redemption {
            grant_id: None,
            access_jti: "a".to_owned(),
            access_expires_at: 200,
        };
        book.used_codes
            .insert("code".to_owned(), (redeemed, 100), 100);
        assert!(
            book.used_codes
                .get("code", 100 + USED_CODE_MEMORY)
                .is_some()
        );
        assert!(
            book.used_codes
                .get("code", 101 + USED_CODE_MEMORY)
                .is_none()
        );
    }

    /// A check is counted before it runs and forgiven once right: the count is where it was,
    /// and a first attempt that proved right leaves no window behind.
    #[tokio::test]
    async fn a_forgiven_check_leaves_the_count_where_it_was() {
        let state = MemoryState::default();
        let keys = vec!["client:machine".to_owned()];
        for _ in 0..MAX_FAILURES {
            state.count_failure(&keys, 100).await.unwrap();
        }
        assert!(state.limited(&keys, 100).await.unwrap());
        state.forgive_failure(&keys, 100).await.unwrap();
        assert!(!state.limited(&keys, 100).await.unwrap());
        let fresh = vec!["client:other".to_owned()];
        state.count_failure(&fresh, 100).await.unwrap();
        state.forgive_failure(&fresh, 100).await.unwrap();
        assert!(
            state
                .with_failures(|failures| !failures.contains_key("client:other"))
                .unwrap()
        );
    }
}
