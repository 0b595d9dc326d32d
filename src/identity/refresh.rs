//! Refreshing a session's tokens before they expire (SPEC §5, §9): once per session even under
//! concurrent requests — the first request refreshes, the others wait for it and take its
//! result — and rotated refresh tokens are stored. After a refresh the session's claims are the
//! provider's current ones (the new ID token and userinfo): a claim the provider dropped is gone.
//!
//! Only the provider's `invalid_grant` (or an answer about another user) ends the session. A
//! refresh that fails for a passing reason — unreachable, 5xx, timeout, an answer that cannot be
//! used — keeps it: the session is served while its access token is valid, the refresh is
//! retried at most every `RETRY_AFTER` seconds, and once the token has expired the request is
//! told the provider is unavailable (502). No request waits on a refresh, its own or one in
//! flight, longer than the provider's timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::clock::UnixTime;
use crate::metrics::Metrics;
use crate::oidc::Provider;
use crate::session::store::{RefreshClaim, Replaced, SessionError, Sessions};
use crate::session::{CookieAttributes, Session};

mod exchange;
mod replicas;
#[cfg(test)]
mod tests;
use exchange::Failure;
use replicas::{Unconfirmed, confirm_later};

/// How long a refresh result is handed to requests that still carry the old session.
const RESULT_KEPT: i64 = 60;
/// After a refresh failed for a passing reason, the next attempt waits this long (seconds):
/// meanwhile requests are answered from the session (or 502) without asking the provider.
pub const RETRY_AFTER: i64 = 10;

/// Coordinates refreshes: once per session in this process (a lock per refresh token) and,
/// with Redis, once across replicas (the store's refresh lease).
#[derive(Clone)]
pub struct Refresher {
    shared: Arc<Shared>,
}

/// One lock per refresh token being spent (by its key): the refresh in flight holds it.
type Locks = Mutex<HashMap<[u8; 32], Arc<tokio::sync::Mutex<()>>>>;
/// The refreshes that are asking their provider now, by refresh token.
type Asking = Mutex<std::collections::HashSet<[u8; 32]>>;
/// The session a refresh token's refresh gave, when, and the access token it started from (its
/// digest): with a provider that does not rotate refresh tokens the key stays the same across
/// refreshes, and only a session still holding that access token is the one refreshed.
type Recent = quick_cache::sync::Cache<[u8; 32], (Arc<Session>, UnixTime, Option<[u8; 32]>)>;
/// When a refresh token's refresh last failed for a passing reason, and what was unavailable.
type Failed = quick_cache::sync::Cache<[u8; 32], (UnixTime, Unavailable)>;
/// Refresh tokens the provider refused: never presented again.
type Refused = quick_cache::sync::Cache<[u8; 32], ()>;
/// The lifetime of the access token a refresh gave, by its refresh token.
type Lifetimes = quick_cache::sync::Cache<[u8; 32], i64>;

/// What a refresh running on its own task needs of the refresher.
struct Shared {
    refresh_before: i64,
    enabled: bool,
    // The refreshes in flight, their results and failures: shared with the refresher a reload
    // builds (`Refresher::reconfigured`), so a refresh running across a reload stays the only one.
    locks: Arc<Locks>,
    asking: Arc<Asking>,
    recent: Arc<Recent>,
    /// When a refresh last failed for a passing reason, and what was unavailable, by refresh
    /// token.
    failed: Arc<Failed>,
    /// Refresh tokens the provider refused. A cookie-store session keeps its cookie (the
    /// refused request may not clear it: a 401 to an API call sets none), and each request
    /// with it would otherwise ask the provider again, with Tollgate's client credentials.
    refused: Arc<Refused>,
    /// The lifetime of the access token a refresh here gave, by the refresh token that came
    /// with it: the session holding them is not due before half of it is left, so one whose
    /// tokens live no longer than `refresh_before` is not refreshed at every request.
    lifetimes: Arc<Lifetimes>,
    /// The providers whose tokens were seen to live no longer than `refresh_before` (logged
    /// once each).
    short_lived: std::sync::Mutex<std::collections::HashSet<String>>,
    metrics: Arc<Metrics>,
}

/// A request's cookies, owned, for a refresh that outlives the request.
type OwnedCookies = Vec<(String, String)>;

fn own(cookies: &crate::session::Cookies<'_>) -> OwnedCookies {
    cookies
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

fn borrow(cookies: &OwnedCookies) -> crate::session::Cookies<'_> {
    cookies
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect()
}

/// A due refresh handed to its own task.
struct Due {
    provider: Arc<Provider>,
    sessions: Arc<Sessions>,
    cookies: OwnedCookies,
    session: Arc<Session>,
    refresh_token: String,
    key: [u8; 32],
    now: UnixTime,
    attributes: CookieAttributes,
}

/// A refresh whose lock and lease are held.
struct Refresh {
    due: Due,
    claim: RefreshClaim,
    /// Before the lease runs out (with Redis): until then an unconfirmed result is written
    /// again.
    lease_until: tokio::time::Instant,
    /// This process's lock for the refresh token, held until the result is published and
    /// stored.
    single_flight: tokio::sync::OwnedMutexGuard<()>,
}

/// Why a session could not be used after its refresh was due.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RefreshError {
    /// The provider refused the refresh token (`invalid_grant`) or answered about another
    /// user: the session has been ended.
    #[error("refresh refused; the session ended: {0}")]
    Ended(String),
    /// The refresh failed for a passing reason and the session's access token has expired.
    #[error("refresh failed and the session's access token has expired: {reason}")]
    ProviderUnavailable {
        /// Why.
        reason: String,
        /// The `Set-Cookie` values that store what the failed refresh changed nonetheless: a
        /// cookie session holding the refresh token the provider rotated to before the refresh
        /// failed. The answer carries them, or the next refresh would present the spent token.
        set_cookies: Vec<String>,
    },
    /// The refreshed session could not be stored.
    #[error("the refreshed session could not be stored: {0}")]
    Store(String),
}

/// What a refresh that failed for a passing reason could not reach: what a request whose
/// access token has expired is told.
#[derive(Debug, Clone, Copy)]
enum Unavailable {
    /// The provider (502).
    Provider,
    /// The in-process token service's store (503).
    Store,
}

impl Unavailable {
    fn of(failure: &Failure) -> Self {
        if failure.store_unavailable {
            Self::Store
        } else {
            Self::Provider
        }
    }

    fn error(self, reason: String) -> RefreshError {
        match self {
            Self::Provider => RefreshError::provider_unavailable(reason),
            Self::Store => RefreshError::Store(reason),
        }
    }
}

/// How much longer than the provider timeout a request waits for a refresh in flight in
/// this process: the refresh claims its lease before it asks the provider, and stores its
/// result after, holding the lock until the result is stored: a state file written (which
/// may take up to 5 s), or Redis's confirmed writes (each waiting up to 1 s for a replica).
const STORE_GRACE: Duration = Duration::from_secs(5);

fn key_of(refresh_token: &str) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, refresh_token.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

/// `session` with the refresh token the provider rotated to in a refresh that failed later.
fn holding(session: &Session, rotated: &str) -> Arc<Session> {
    let mut kept = Session::clone(session);
    kept.refresh_token = Some(rotated.to_owned());
    Arc::new(kept)
}

/// What a session's refresh started from, as kept in [`Recent`]: its access token's digest.
fn started_from(session: &Session) -> Option<[u8; 32]> {
    session.access_token.as_deref().map(key_of)
}

fn store_error(error: SessionError) -> RefreshError {
    match error {
        SessionError::Store(error) => RefreshError::Store(error.to_string()),
        SessionError::Cookie(error) => RefreshError::Ended(error.to_string()),
    }
}

impl RefreshError {
    /// `ProviderUnavailable` with nothing to store.
    fn provider_unavailable(reason: String) -> Self {
        Self::ProviderUnavailable {
            reason,
            set_cookies: Vec::new(),
        }
    }
}

/// Whether `session`'s access token is valid at `now` (one without a known expiry is).
fn valid(session: &Session, now: UnixTime) -> bool {
    session
        .access_expires_at
        .is_none_or(|expires_at| now < expires_at)
}

/// The session as it is, while its access token is valid; else the provider is unavailable.
/// The answer carries `set_cookies` either way.
fn keep(
    session: Arc<Session>,
    set_cookies: Vec<String>,
    now: UnixTime,
    reason: &str,
) -> Result<(Arc<Session>, Vec<String>), RefreshError> {
    if valid(&session, now) {
        Ok((session, set_cookies))
    } else {
        Err(RefreshError::ProviderUnavailable {
            reason: reason.to_owned(),
            set_cookies,
        })
    }
}

/// The session another refresh stored (another request's here, or another replica's), for
/// this request, which read `read`: served when that refresh renewed the access token; else
/// (a refresh that failed after the provider rotated the refresh token stores the session
/// with its old access token) like a session kept after a failed refresh, only while that
/// access token is valid.
fn theirs(
    current: Arc<Session>,
    read: &Session,
    now: UnixTime,
) -> Result<(Arc<Session>, Vec<String>), RefreshError> {
    if renewed(&current, read) {
        return Ok((current, Vec::new()));
    }
    keep(
        current,
        Vec::new(),
        now,
        "the session another refresh stored holds an expired access token",
    )
}

/// Whether `current` holds another access token than `read`: a refresh's result, not a
/// session kept (with a rotated refresh token) after a refresh failed.
fn renewed(current: &Session, read: &Session) -> bool {
    current.access_token != read.access_token
}

/// [`keep`] with nothing to store, and `expired` for the answer once the session's access
/// token has expired.
fn keep_or(
    session: Arc<Session>,
    now: UnixTime,
    expired: impl FnOnce() -> RefreshError,
) -> Result<(Arc<Session>, Vec<String>), RefreshError> {
    if valid(&session, now) {
        Ok((session, Vec::new()))
    } else {
        Err(expired())
    }
}

impl Refresher {
    /// A refresher; `enabled` and `refresh_before` come from `[session]`.
    pub fn new(enabled: bool, refresh_before: std::time::Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            shared: Arc::new(Shared {
                refresh_before: i64::try_from(refresh_before.as_secs()).unwrap_or(i64::MAX),
                enabled,
                locks: Arc::default(),
                asking: Arc::default(),
                recent: Arc::new(quick_cache::sync::Cache::new(10_000)),
                failed: Arc::new(quick_cache::sync::Cache::new(10_000)),
                refused: Arc::new(quick_cache::sync::Cache::new(10_000)),
                lifetimes: Arc::new(quick_cache::sync::Cache::new(10_000)),
                short_lived: std::sync::Mutex::default(),
                metrics,
            }),
        }
    }

    /// A refresher with a reloaded config's settings that shares `self`'s refreshes in flight,
    /// their results and their passing failures (not the tokens refused): a request that arrives after a reload, while a
    /// refresh it started is still running, waits for it rather than spending the same refresh
    /// token again (which the provider answers with `invalid_grant`, ending the session, or by
    /// revoking the whole grant).
    pub fn reconfigured(
        &self,
        enabled: bool,
        refresh_before: std::time::Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                refresh_before: i64::try_from(refresh_before.as_secs()).unwrap_or(i64::MAX),
                enabled,
                locks: self.shared.locks.clone(),
                asking: self.shared.asking.clone(),
                recent: self.shared.recent.clone(),
                failed: self.shared.failed.clone(),
                // Not shared: a reload may have mended what made the provider refuse (its
                // token endpoint, the client's credentials).
                refused: Arc::new(quick_cache::sync::Cache::new(10_000)),
                lifetimes: self.shared.lifetimes.clone(),
                short_lived: std::sync::Mutex::default(),
                metrics,
            }),
        }
    }

    /// Whether a request now would refresh `session`'s tokens first (`/admin/explain` says so
    /// instead of refreshing).
    pub fn is_due(&self, session: &Session, now: UnixTime) -> bool {
        self.shared.is_due(session, now)
    }

    /// The session, refreshed when its access token is about to expire, with the `Set-Cookie`
    /// values that store it (only the cookie store needs them). When the refresh fails for a
    /// passing reason the session is returned as it is while its access token is valid.
    ///
    /// The refresh, with the wait for one in flight, runs on a task of its own: a request that
    /// goes away (a client that disconnects) never drops a refresh token the provider has
    /// already rotated, a lock entry, or a lease.
    ///
    /// # Errors
    /// `Ended` when the provider refuses the refresh token (the session is then ended in the
    /// store), `ProviderUnavailable` when the refresh failed for a passing reason and the
    /// access token has expired, `Store` when the refreshed session cannot be stored.
    pub async fn refresh_if_due(
        &self,
        provider: &Arc<Provider>,
        sessions: &Arc<Sessions>,
        cookies: &crate::session::Cookies<'_>,
        session: Arc<Session>,
        now: UnixTime,
        attributes: CookieAttributes,
    ) -> Result<(Arc<Session>, Vec<String>), RefreshError> {
        if !self.shared.is_due(&session, now) {
            return Ok((session, Vec::new()));
        }
        // Boxed: a refresh is rare, and its future is kilobytes that every request with a
        // session would otherwise carry (and copy) in its own.
        Box::pin(
            self.shared
                .clone()
                .refresh_if_due(provider, sessions, cookies, session, now, attributes),
        )
        .await
    }
}

/// The answer to a request whose session holds a refresh token the provider has refused: the
/// session as another request refreshed it since, when one did (the refusal was of a token
/// spent there), else the session ends, as it did for the request that was refused.
async fn ended_before(
    sessions: &Sessions,
    cookies: &crate::session::Cookies<'_>,
    session: &Session,
    spent: &str,
    now: UnixTime,
    attributes: CookieAttributes,
) -> Result<(Arc<Session>, Vec<String>), RefreshError> {
    if let Ok(Some(current)) = sessions.current(cookies, now).await
        && refreshed_since(&current, session, spent)
    {
        return theirs(current, session, now);
    }
    let _ = sessions.end(cookies, now, attributes).await;
    Err(RefreshError::Ended(
        "the provider refused this session's refresh token before".to_owned(),
    ))
}

impl Shared {
    fn forget_lock(&self, key: &[u8; 32]) {
        self.locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }

    /// What the last refresh of `key` could not reach, when it failed within
    /// [`RETRY_AFTER`] seconds.
    fn failed_recently(&self, key: &[u8; 32], now: UnixTime) -> Option<Unavailable> {
        self.failed
            .get(key)
            .filter(|(at, _)| (0..RETRY_AFTER).contains(&now.saturating_sub(*at)))
            .map(|(_, unavailable)| unavailable)
    }

    fn is_due(&self, session: &Session, now: UnixTime) -> bool {
        let Some(refresh_token) = &session.refresh_token else {
            return false;
        };
        self.enabled
            && session.access_expires_at.is_some_and(|expires_at| {
                let left = expires_at.saturating_sub(now);
                // Looked up only within `refresh_before` of the expiry.
                left <= self.refresh_before
                    && self
                        .lifetimes
                        .get(&key_of(refresh_token))
                        .is_none_or(|lifetime| left <= lifetime / 2)
            })
    }

    /// Remembers the lifetime of the access token a refresh of `provider` gave, by the refresh
    /// token that came with it; a provider whose tokens live no longer than `refresh_before`
    /// is logged the first time.
    fn observe_lifetime(&self, provider: &str, refresh_token: &str, lifetime: i64) {
        // An `exp` taken from the ID token may be just past, within the leeway.
        let lifetime = lifetime.max(0);
        self.lifetimes.insert(key_of(refresh_token), lifetime);
        if lifetime <= self.refresh_before
            && self
                .short_lived
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(provider.to_owned())
        {
            tracing::warn!(
                provider,
                lifetime,
                refresh_before = self.refresh_before,
                "the provider's access tokens live no longer than session.refresh_before: sessions are refreshed once half their tokens' life is left instead; set refresh_before below half of it"
            );
        }
    }

    fn count(&self, result: &'static str) {
        self.metrics
            .refreshes
            .get_or_create(&crate::metrics::OutcomeLabels { result })
            .inc();
    }

    async fn refresh_if_due(
        self: Arc<Self>,
        provider: &Arc<Provider>,
        sessions: &Arc<Sessions>,
        cookies: &crate::session::Cookies<'_>,
        session: Arc<Session>,
        now: UnixTime,
        attributes: CookieAttributes,
    ) -> Result<(Arc<Session>, Vec<String>), RefreshError> {
        if !self.is_due(&session, now) {
            return Ok((session, Vec::new()));
        }
        let Some(refresh_token) = session.refresh_token.clone() else {
            return Ok((session, Vec::new()));
        };
        let key = key_of(&refresh_token);
        if let Some(unavailable) = self.failed_recently(&key, now) {
            return keep_or(session, now, || {
                unavailable.error("the last refresh failed; retried later".to_owned())
            });
        }
        // From here on the work runs on a task of its own, to its end whether or not the
        // request still waits: a request dropped while it held the lock entry or the Redis
        // lease would leave the entry in the map for ever and the lease without a holder
        // until it lapsed (other replicas waiting on it meanwhile).
        let task = tokio::spawn(self.clone().single_flight(Due {
            provider: provider.clone(),
            sessions: sessions.clone(),
            cookies: own(cookies),
            session,
            refresh_token,
            key,
            now,
            attributes,
        }));
        task.await.unwrap_or_else(|error| {
            Err(RefreshError::Store(format!(
                "the refresh task failed: {error}"
            )))
        })
    }

    /// The refresh of a due session, one per refresh token in this process (the lock) and
    /// across replicas (the lease), or the result of the one that ran.
    async fn single_flight(
        self: Arc<Self>,
        due: Due,
    ) -> Result<(Arc<Session>, Vec<String>), RefreshError> {
        let (provider, sessions, cookies) = (&due.provider, &due.sessions, &borrow(&due.cookies));
        let (session, refresh_token, key, now, attributes) = (
            due.session.clone(),
            due.refresh_token.as_str(),
            due.key,
            due.now,
            due.attributes,
        );
        let lock = self
            .locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_default()
            .clone();
        // The refresh in flight claims its lease in the store, then asks the provider for at
        // most its timeout, then stores its result: waited for that and `STORE_GRACE` more, so
        // that its result (or the provider's failure) is normally this request's too. An expired session still waiting
        // is told what holds the refresh up: the provider while it is being asked (502), else
        // the store (503: Redis failing over).
        let Ok(single_flight) =
            tokio::time::timeout(provider.timeout() + STORE_GRACE, lock.lock_owned()).await
        else {
            let asking = self
                .asking
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(&key);
            let reason = "the refresh in flight did not finish in time".to_owned();
            return keep_or(session, now, || {
                if asking {
                    RefreshError::provider_unavailable(reason)
                } else {
                    RefreshError::Store(reason)
                }
            });
        };
        if let Some((refreshed, _, _)) = self
            .recent
            .get(&key)
            // Within the minute after it, and not more than a minute before (a clock stepped
            // back): a clock set back further would else take every result kept for recent
            // until it caught up. And only for the session that refresh started from: with a
            // provider that does not rotate refresh tokens, one refreshed since (by another
            // replica, whose claims may be newer) holds the same refresh token, and writing this
            // older result over it would bring back what the provider has since dropped.
            .filter(|(_, at, from)| {
                (-RESULT_KEPT..RESULT_KEPT).contains(&(now - at)) && *from == started_from(&session)
            })
        {
            // A request that came after the refresh made its own map entry: drop it again, or
            // the map would keep one lock per late request for ever.
            self.forget_lock(&key);
            return match sessions
                .replace_refreshed(cookies, &session, &refreshed, now, attributes)
                .await
                .map_err(store_error)?
            {
                Replaced::Stored(set_cookies) => Ok((refreshed, set_cookies)),
                Replaced::Superseded(current) => theirs(current, &session, now),
            };
        }
        if self.refused.get(&key).is_some() {
            self.forget_lock(&key);
            return ended_before(sessions, cookies, &session, refresh_token, now, attributes).await;
        }
        if let Some(unavailable) = self.failed_recently(&key, now) {
            // The refresh this request waited for failed for a passing reason.
            self.forget_lock(&key);
            return keep_or(session, now, || {
                unavailable.error("the refresh failed; retried later".to_owned())
            });
        }
        // Longer than the refresh can take (it is cut off at the provider timeout), so the
        // lease never lapses while its holder still works.
        let hold = provider.timeout() * 2 + STORE_GRACE;
        let mut waited = false;
        let (claim, lease_until) = loop {
            let lease_until = tokio::time::Instant::now() + provider.timeout() * 2;
            let claim = match sessions.claim_refresh(cookies, hold).await {
                Ok(claim) => claim,
                // No lease that a failover could lose, so no refresh now: the session serves
                // while its access token is valid, and a later request tries again.
                Err(error) => {
                    self.forget_lock(&key);
                    return match keep(session, Vec::new(), now, "refresh lease not confirmed") {
                        Ok(kept) => Ok(kept),
                        Err(_) => Err(store_error(error)),
                    };
                }
            };
            if !matches!(claim, RefreshClaim::Lost) {
                break (claim, lease_until);
            }
            let result = self
                .await_other_replica(
                    provider,
                    sessions,
                    cookies,
                    session.clone(),
                    refresh_token,
                    now,
                )
                .await;
            match result {
                // The other replica gave its lease back without a result (its lease was not
                // confirmed, or its refresh failed): this request claims the refresh once more
                // rather than answer for a refresh nobody finished.
                None if !waited => waited = true,
                // Given back twice without a stored result: what failed is not known here, and
                // the replicas meet in the store, so an expired session is told it is the
                // store (503), as when the wait for another replica runs out.
                None => {
                    self.forget_lock(&key);
                    return keep_or(session, now, || {
                        RefreshError::Store(
                            "another replica's refresh did not finish; retried later".to_owned(),
                        )
                    });
                }
                Some(result) => {
                    self.forget_lock(&key);
                    return result;
                }
            }
        };
        // This request read its session before it won the lease: another replica may have
        // refreshed and released the lease in between. Its result is the session now, and the
        // token this request holds is spent.
        let current = match sessions.current(cookies, now).await {
            Ok(current) => current,
            Err(error) => {
                sessions.release_refresh(cookies, &claim).await;
                self.forget_lock(&key);
                return Err(store_error(error));
            }
        };
        match current {
            // Ended meanwhile (a logout, an admin delete, a back-channel logout): its refresh
            // token is not presented again; the provider would be asked for tokens of a
            // session it may itself have ended.
            None => {
                sessions.release_refresh(cookies, &claim).await;
                self.forget_lock(&key);
                return Err(RefreshError::Ended(
                    "the session ended while its refresh was due".to_owned(),
                ));
            }
            Some(current) if refreshed_since(&current, &session, refresh_token) => {
                sessions.release_refresh(cookies, &claim).await;
                // Handed on only when it renewed the access token: `recent` serves what it
                // holds without looking at its expiry.
                if renewed(&current, &session) {
                    self.recent
                        .insert(key, (current.clone(), now, started_from(&session)));
                }
                self.forget_lock(&key);
                return theirs(current, &session, now);
            }
            Some(_) => {}
        }
        self.clone()
            .refresh_and_store(Refresh {
                due,
                claim,
                lease_until,
                single_flight,
            })
            .await
    }

    /// The refresh on its own task: ask the provider, publish the result to this process,
    /// store it (compare-and-set against the tokens spent), give the lease back.
    async fn refresh_and_store(
        self: Arc<Self>,
        refresh: Refresh,
    ) -> Result<(Arc<Session>, Vec<String>), RefreshError> {
        let Refresh {
            due,
            claim,
            lease_until,
            single_flight,
        } = refresh;
        let Due {
            provider,
            sessions,
            cookies: owned,
            session,
            refresh_token,
            key,
            now,
            attributes,
        } = due;
        let cookies = borrow(&owned);
        self.asking
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key);
        let result = tokio::time::timeout(
            provider.timeout(),
            self.refresh(&provider, &session, &refresh_token, now),
        )
        .await
        .unwrap_or_else(|_| {
            Err(Failure {
                ends_session: false,
                reason: "the provider did not answer within its timeout".to_owned(),
                rotated: None,
                store_unavailable: false,
            })
        });
        self.asking
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key);
        // The result is published before the lock is dropped from the map: a request that
        // arrives later with the old session must find it, never refresh the spent token again.
        match &result {
            Ok(refreshed) => {
                self.recent
                    .insert(key, (refreshed.clone(), now, started_from(&session)));
                self.failed.remove(&key);
            }
            Err(failure) if !failure.ends_session => {
                self.failed.insert(key, (now, Unavailable::of(failure)));
            }
            Err(_) => self.refused.insert(key, ()),
        }
        // What the store is to hold once this refresh is stored: its result, or (a refresh that
        // failed after the provider rotated the token) the session with the rotated token.
        let written = match &result {
            Ok(refreshed) => Some(refreshed.clone()),
            Err(failure) if !failure.ends_session => failure
                .rotated
                .as_deref()
                .map(|rotated| holding(&session, rotated)),
            Err(_) => None,
        };
        let answer = self
            .settle(
                &provider,
                &sessions,
                &cookies,
                session.clone(),
                &refresh_token,
                result,
                now,
                attributes,
            )
            .await;
        // Only now may a request waiting here go on (and find the result published): one that
        // wrote the result first would leave this refresh superseded by its own result, which
        // then no replica confirmed (Redis) and no state file held.
        self.forget_lock(&key);
        drop(single_flight);
        match (written, &answer) {
            // The provider spent the old token and the new one is not safely stored: it is
            // written again, holding the lease, until a replica confirms it.
            (Some(written), Err(RefreshError::Store(_))) => {
                tokio::spawn(confirm_later(Unconfirmed {
                    sessions,
                    cookies: owned,
                    from: session,
                    refreshed: written,
                    now,
                    claim,
                    until: lease_until,
                }));
            }
            _ => sessions.release_refresh(&cookies, &claim).await,
        }
        answer
    }

    /// Stores what a refresh came to and says what the request gets.
    #[allow(clippy::too_many_arguments)]
    async fn settle(
        &self,
        provider: &Provider,
        sessions: &Sessions,
        cookies: &crate::session::Cookies<'_>,
        session: Arc<Session>,
        spent: &str,
        result: Result<Arc<Session>, Failure>,
        now: UnixTime,
        attributes: CookieAttributes,
    ) -> Result<(Arc<Session>, Vec<String>), RefreshError> {
        match result {
            Ok(refreshed) => {
                if let (Some(expires_at), Some(refresh_token)) =
                    (refreshed.access_expires_at, &refreshed.refresh_token)
                {
                    self.observe_lifetime(
                        provider.name(),
                        refresh_token,
                        expires_at.saturating_sub(now),
                    );
                }
                let replaced = sessions
                    .replace_refreshed(cookies, &session, &refreshed, now, attributes)
                    .await
                    .map_err(store_error)?;
                self.count("ok");
                match replaced {
                    Replaced::Stored(set_cookies) => Ok((refreshed, set_cookies)),
                    Replaced::Superseded(current) => theirs(current, &session, now),
                }
            }
            Err(failure) if failure.ends_session => {
                // Another replica may have spent this token first (its result is stored): then
                // the refusal is about an old token, and the session lives on.
                if let Ok(Some(current)) = sessions.current(cookies, now).await
                    && refreshed_since(&current, &session, spent)
                {
                    return theirs(current, &session, now);
                }
                self.count("error");
                tracing::info!(provider = %provider.name(), reason = %failure.reason, "refresh refused; the session ends");
                let _ = sessions.end(cookies, now, attributes).await;
                Err(RefreshError::Ended(failure.reason))
            }
            Err(failure) => {
                self.count("unavailable");
                tracing::warn!(provider = %provider.name(), reason = %failure.reason, "refresh failed; the session is kept and the refresh retried later");
                let unavailable = Unavailable::of(&failure);
                let Some(rotated) = failure.rotated else {
                    // With the in-process token service's store down, the request needs a
                    // store that does not answer (503), like every other one that does.
                    let reason = failure.reason;
                    return keep_or(session, now, || unavailable.error(reason));
                };
                self.failed.insert(key_of(&rotated), (now, unavailable));
                let kept = holding(&session, &rotated);
                match sessions
                    .replace_refreshed(cookies, &session, &kept, now, attributes)
                    .await
                    .map_err(store_error)?
                {
                    Replaced::Stored(set_cookies) => keep(kept, set_cookies, now, &failure.reason),
                    Replaced::Superseded(current) => theirs(current, &session, now),
                }
            }
        }
    }
}

/// Whether `current`, the stored session now, is another refresh's result than the session
/// `read` before, whose refresh token is `spent`: the refresh token changed (rotation) or,
/// with a provider that sends the same one back, the access token did (every refresh brings
/// a new one; only a login, under a new session id, brings one otherwise).
pub(super) fn refreshed_since(current: &Session, read: &Session, spent: &str) -> bool {
    current.refresh_token.as_deref() != Some(spent) || current.access_token != read.access_token
}
