//! `Sessions`: one interface over where sessions live — sealed cookies (`cookie`), this
//! process (`memory`, with `state_file`) or Redis (`redis`). With a server-side store the cookie holds only a
//! random 256-bit id, sealed like every Tollgate cookie, and a new id is issued at every login.

mod lease;

use std::sync::Arc;

pub use lease::{RefreshClaim, Replaced};

use super::Cookies;
use super::MAX_SESSIONS_PER_USER;
use super::compact::SessionFacts;
use super::error::StoreError;
use super::lifetime::{Lifetime, Use};
use super::memory_store::MemoryStore;
use super::record::StoredSession;
use super::redis_store::{Index, RedisStore};
use super::{CookieAttributes, CookieJar, Session, SessionCookieError};
use crate::clock::UnixTime;
use crate::metrics::Metrics;

/// Where sessions are kept.
pub enum SessionBackend {
    /// In the cookie itself.
    Cookie,
    /// In this process.
    Memory(Arc<MemoryStore>),
    /// In Redis.
    Redis(Arc<RedisStore>),
}

/// Which sessions an administrative or back-channel action ends.
#[derive(Debug, Clone, Copy)]
pub enum SessionSelector<'a> {
    /// The one with this admin handle.
    Handle(&'a str),
    /// Every session of a user (at any provider).
    Sub(&'a str),
    /// Every session of a user at one provider.
    SubAt {
        /// The provider.
        provider: &'a str,
        /// The user.
        sub: &'a str,
    },
    /// Every session of a user at one provider that has no provider session id (its ID token
    /// carried no `sid`).
    SubWithoutSidAt {
        /// The provider.
        provider: &'a str,
        /// The user.
        sub: &'a str,
    },
    /// Every session of one provider session (`sid`).
    SidAt {
        /// The provider.
        provider: &'a str,
        /// The provider's session id.
        sid: &'a str,
    },
}

impl SessionSelector<'_> {
    /// The mark a back-channel logout leaves for what this selector ends, so that a session
    /// of it stored after the logout's scan is ended too (`Sessions::provider_session_ended`):
    /// a provider session, every session of a user, or those of a user without a `sid`.
    fn ended_mark(&self) -> Option<String> {
        match self {
            Self::SidAt { provider, sid } => Some(ended_mark(provider, "sid", sid)),
            Self::SubAt { provider, sub } => Some(ended_mark(provider, "sub", sub)),
            Self::SubWithoutSidAt { provider, sub } => {
                Some(ended_mark(provider, "sub-without-sid", sub))
            }
            Self::Handle(_) | Self::Sub(_) => None,
        }
    }

    /// Whether a session no longer stored, found under `id` in this selector's index, may
    /// have been one this selector ends: the handle's own, or any in a user's or provider
    /// session's index.
    fn may_have_selected(&self, id: &str) -> bool {
        match *self {
            Self::Handle(handle) => handle_of(id) == handle,
            Self::Sub(_)
            | Self::SubAt { .. }
            | Self::SubWithoutSidAt { .. }
            | Self::SidAt { .. } => true,
        }
    }

    fn selects(&self, id: &str, facts: &SessionFacts<'_>) -> bool {
        match *self {
            Self::Handle(handle) => handle_of(id) == handle,
            Self::Sub(sub) => facts.sub == sub,
            Self::SubAt { provider, sub } => facts.provider == provider && facts.sub == sub,
            Self::SubWithoutSidAt { provider, sub } => {
                facts.provider == provider && facts.sub == sub && facts.sid.is_none()
            }
            Self::SidAt { provider, sid } => facts.provider == provider && facts.sid == Some(sid),
        }
    }

    fn index(&self) -> Index<'_> {
        match *self {
            Self::Handle(_) => Index::All,
            Self::Sub(sub) | Self::SubAt { sub, .. } | Self::SubWithoutSidAt { sub, .. } => {
                Index::Sub(sub)
            }
            Self::SidAt { sid, .. } => Index::Sid(sid),
        }
    }
}

/// The most a session may take in a server-side store, compacted (tokens decoded, claims
/// once): ten times what the cookie store's cookies hold, room for a provider's largest
/// tokens (a realm whose users are in hundreds of groups, carried by the access token and the
/// ID token both). Without a bound a user of a provider where they can grow a claim (up to
/// its 1 MiB answer) kept a megabyte in each of their 100 sessions, copied in every cache and
/// written again at each touch.
pub const SERVER_SIDE_MOST: usize = 256 * 1024;

/// Why a request's session could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The cookie is unusable, or the session expired or ended.
    #[error(transparent)]
    Cookie(#[from] SessionCookieError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A session as the admin API shows it: never its id or tokens.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionSummary {
    /// An opaque handle (a hash of the id) to end this session with.
    pub handle: String,
    /// The user.
    pub sub: String,
    /// The provider.
    pub provider: String,
    /// Created.
    pub created_at: UnixTime,
    /// Last used.
    pub last_seen: UnixTime,
    /// Ends at the latest.
    pub expires_at: UnixTime,
}

/// How long a used logout token is remembered: as long as one is accepted after its `iat`,
/// plus the leeway, so it is refused by its `jti` or by its age, never neither.
const LOGOUT_TOKEN_MEMORY: i64 = crate::token::logout_token::MAX_AGE + 3_600;

/// How long a provider session a back-channel logout ended is remembered: longer than a
/// sign-in's code exchange or a refresh takes to store a session that names it.
const ENDED_PROVIDER_SESSION_MEMORY: i64 = 600;

/// Sessions and login states.
pub struct Sessions {
    /// Cookies: sealing, chunks, login states.
    pub jar: CookieJar,
    backend: SessionBackend,
    idle_timeout: i64,
    metrics: Arc<Metrics>,
}

/// The handle the admin API shows for a session id: 16 hex digits of its SHA-256.
pub fn handle_of(id: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, id.as_bytes());
    digest
        .as_ref()
        .iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The key of an ended-mark ([`SessionSelector::ended_mark`]): `kind` and `value` of
/// `provider`'s, as a digest.
fn ended_mark(provider: &str, kind: &str, value: &str) -> String {
    logout_token_digest(provider, &format!("{kind}\0{value}"))
}

/// A logout token's provider and `jti` (or an ended-mark's provider and what it names) as 64
/// hex digits (SHA-256), so a key has a fixed size whatever the token carries.
fn logout_token_digest(record: &str, jti: &str) -> String {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    context.update(record.as_bytes());
    context.update(&[0]);
    context.update(jti.as_bytes());
    context
        .finish()
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

impl Sessions {
    /// Sessions over `jar` kept in `backend`.
    pub fn new(
        jar: CookieJar,
        backend: SessionBackend,
        idle_timeout: std::time::Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        let idle_timeout = i64::try_from(idle_timeout.as_secs()).unwrap_or(i64::MAX);
        Self {
            jar,
            backend,
            idle_timeout,
            metrics,
        }
    }

    /// Whether a back-channel logout token (its client's record and `jti`) was used before: with
    /// Redis on any replica, with the memory store in this process (and its state file). The
    /// cookie store has no back-channel logout.
    ///
    /// # Errors
    /// `Unavailable` when Redis fails.
    pub async fn logout_token_used(
        &self,
        record: &str,
        jti: &str,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let key = logout_token_digest(record, jti);
        match &self.backend {
            SessionBackend::Redis(store) => store.logout_token_used(&key).await,
            SessionBackend::Memory(store) => Ok(store.logout_token_used(&key, now)),
            SessionBackend::Cookie => Ok(false),
        }
    }

    /// Carries out a back-channel logout: ends the sessions the `selectors` select, then
    /// records its token (its client's record and `jti`) as used, only once they ended, so that a
    /// logout that failed (503) is served again when the provider retries it. With a memory
    /// store's state file, it answers once the file holds both (one write).
    ///
    /// # Errors
    /// `NotServerSide` with the cookie store; `Unavailable` when Redis fails or the state file
    /// is not written.
    pub async fn end_for_logout_token(
        &self,
        selectors: &[SessionSelector<'_>],
        (record, jti, issued_at): (&str, &str, UnixTime),
        now: UnixTime,
    ) -> Result<usize, StoreError> {
        let key = logout_token_digest(record, jti);
        let until = now + LOGOUT_TOKEN_MEMORY;
        // First, what it ends is marked, for the sign-ins and refreshes storing a session of it
        // right now, after this scan (`provider_session_ended`): they look once they wrote.
        for selector in selectors {
            if let Some(ended) = selector.ended_mark() {
                match &self.backend {
                    SessionBackend::Cookie => return Err(StoreError::NotServerSide),
                    SessionBackend::Memory(store) => store.mark_provider_session_ended(
                        ended,
                        issued_at,
                        (now, now + ENDED_PROVIDER_SESSION_MEMORY),
                    ),
                    SessionBackend::Redis(store) => {
                        store
                            .mark_provider_session_ended(
                                &ended,
                                issued_at,
                                ENDED_PROVIDER_SESSION_MEMORY,
                            )
                            .await?;
                    }
                }
            }
        }
        match &self.backend {
            SessionBackend::Cookie => Err(StoreError::NotServerSide),
            SessionBackend::Memory(store) => {
                let ended = store.remove_where(|id, facts, _| {
                    selectors.iter().any(|selector| selector.selects(id, facts))
                });
                self.metrics.sessions_ended.inc_by(ended as u64);
                store
                    .remember_logout_token(key, now, until)
                    .await
                    .map_err(unwritten)?;
                Ok(ended)
            }
            SessionBackend::Redis(store) => {
                let mut ended = 0;
                for selector in selectors {
                    ended += self.end_selected(*selector).await?;
                }
                store
                    .remember_logout_token(&key, LOGOUT_TOKEN_MEMORY)
                    .await?;
                Ok(ended)
            }
        }
    }

    /// Whether a back-channel logout ended `session` (its provider session, or its user's
    /// sessions, or those of its user without a `sid` when it has none) after the provider
    /// issued `session`'s ID token (its `iat`, against the logout token's, both the provider's
    /// clock): asked by a sign-in or refresh once it stored `session`, which it then ends
    /// again, as the logout's scan may have run before the write and missed it. An ID token
    /// issued after the logout is a new sign-in at a provider session that lives on (Keycloak
    /// ends one client's sessions and keeps the user's), and stays.
    ///
    /// # Errors
    /// `Unavailable` when Redis fails.
    pub(super) async fn provider_session_ended(
        &self,
        session: &Session,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let facts = SessionFacts::of(session);
        let marks = [
            ended_mark(facts.provider, "sub", facts.sub),
            match facts.sid {
                Some(sid) => ended_mark(facts.provider, "sid", sid),
                None => ended_mark(facts.provider, "sub-without-sid", facts.sub),
            },
        ];
        let mut ended_at = None;
        for mark in &marks {
            let at = match &self.backend {
                SessionBackend::Cookie => None,
                SessionBackend::Memory(store) => store.provider_session_ended(mark, now),
                SessionBackend::Redis(store) => store.provider_session_ended(mark).await?,
            };
            ended_at = ended_at.max(at);
        }
        let issued_at = session
            .claims
            .get("iat")
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(UnixTime::MIN);
        Ok(ended_at.is_some_and(|ended_at| issued_at <= ended_at))
    }

    /// The expiry and idle rule of the server-side stores.
    fn lifetime(&self) -> Lifetime {
        Lifetime::new(self.idle_timeout)
    }

    /// Whether sessions are kept here (memory, Redis), so that a refresh changes what a later
    /// load of the same cookie finds; with the `cookie` store the cookie is the session.
    pub fn is_server_side(&self) -> bool {
        !matches!(self.backend, SessionBackend::Cookie)
    }

    /// The memory store, when that is the backend.
    pub fn memory(&self) -> Option<&Arc<MemoryStore>> {
        match &self.backend {
            SessionBackend::Memory(store) => Some(store),
            SessionBackend::Cookie | SessionBackend::Redis(_) => None,
        }
    }

    /// The session of this request: `Ok(None)` without a session cookie.
    ///
    /// # Errors
    /// An unusable cookie, an expired, idle or ended session, or a store failure.
    pub async fn load(
        &self,
        cookies: &Cookies<'_>,
        now: UnixTime,
    ) -> Result<Option<Arc<Session>>, SessionError> {
        match &self.backend {
            SessionBackend::Cookie => Ok(self.jar.session(cookies, now)?),
            SessionBackend::Memory(store) => {
                let Some(id) = self.jar.session_id(cookies)? else {
                    return Ok(None);
                };
                let stored = store.get(&id).ok_or(SessionCookieError::Expired)?;
                match self.lifetime().judge(
                    self.jar.ends_at(&stored.session),
                    stored.last_seen,
                    now,
                ) {
                    Use::Ended => {
                        store.remove(&id);
                        self.metrics.sessions_ended.inc();
                        return Err(SessionCookieError::Expired.into());
                    }
                    Use::Touch => store.touch(&id, now),
                    Use::Read => {}
                }
                Ok(Some(stored.session))
            }
            SessionBackend::Redis(store) => {
                let Some(id) = self.jar.session_id(cookies)? else {
                    return Ok(None);
                };
                // The tracked copy, in a use that records nothing, needs no round trip.
                match store.tracked(&id) {
                    Some((_, stored))
                        if matches!(
                            self.lifetime().judge(
                                self.jar.ends_at(&stored.session),
                                stored.last_seen,
                                now
                            ),
                            Use::Read
                        ) =>
                    {
                        Ok(Some(stored.session))
                    }
                    // Boxed: the store's round trips are a future of a kilobyte, which every
                    // caller's future (each `/auth`, with or without a session) would
                    // otherwise carry and copy into its box.
                    tracked => Box::pin(self.load_from_redis(store, &id, tracked, now)).await,
                }
            }
        }
    }

    /// `load`'s session `id` from Redis, unless `tracked` (`RedisStore::tracked`) found it.
    async fn load_from_redis(
        &self,
        store: &RedisStore,
        id: &str,
        tracked: Option<(Arc<[u8]>, StoredSession)>,
        now: UnixTime,
    ) -> Result<Option<Arc<Session>>, SessionError> {
        let found = match tracked {
            Some(found) => Some(found),
            None => store.read(id).await?,
        };
        let (seen, mut stored) = found.ok_or(SessionCookieError::Expired)?;
        match self
            .lifetime()
            .judge(self.jar.ends_at(&stored.session), stored.last_seen, now)
        {
            Use::Ended => {
                // Counted once, by the replica whose delete removed it.
                if store.delete(id).await? {
                    self.metrics.sessions_ended.inc();
                }
                return Err(SessionCookieError::Expired.into());
            }
            Use::Touch => {
                stored.last_seen = now;
                let ttl = RedisStore::ttl(&stored, now, self.idle_timeout);
                store.touch(id, &seen, &stored, ttl).await?;
            }
            Use::Read => {}
        }
        Ok(Some(stored.session))
    }

    /// Stores a new session (under a new id with a server-side store) and returns the
    /// `Set-Cookie` values that replace whatever the request had.
    ///
    /// # Errors
    /// When sealing or the store fails.
    pub async fn create(
        &self,
        session: Session,
        cookies: &Cookies<'_>,
        now: UnixTime,
        attributes: CookieAttributes,
    ) -> Result<Vec<String>, SessionError> {
        if self.too_large(&session) {
            return Err(SessionCookieError::TooLarge.into());
        }
        let set_cookies = match &self.backend {
            SessionBackend::Cookie => self.jar.write_session(&session, cookies, now, attributes)?,
            SessionBackend::Memory(store) => {
                // The session the browser had, if any, ends: a login never reuses an id.
                if let Ok(Some(old)) = self.jar.session_id(cookies) {
                    store.remove(&old);
                }
                let id = crate::random::token();
                let max_age = session.expires_at - now;
                let session = Arc::new(session);
                store.insert(id.clone(), session.clone(), now);
                if self.provider_session_ended(&session, now).await? {
                    store.remove(&id);
                    return Err(SessionCookieError::Expired.into());
                }
                self.count_ended_by_the_users_limit(store.end_beyond_the_users_limit(&id));
                self.jar
                    .write_session_id(&id, max_age, cookies, attributes)?
            }
            SessionBackend::Redis(store) => {
                if let Ok(Some(old)) = self.jar.session_id(cookies) {
                    store.delete(&old).await?;
                }
                let id = crate::random::token();
                let max_age = session.expires_at - now;
                let stored = StoredSession {
                    session: Arc::new(session),
                    last_seen: now,
                };
                let ttl = RedisStore::ttl(&stored, now, self.idle_timeout);
                let facts = SessionFacts::of(&stored.session);
                let lifetime = stored.session.expires_at - now;
                store
                    .put(&id, &stored, (ttl, lifetime), facts.sub, facts.sid)
                    .await?;
                match self.provider_session_ended(&stored.session, now).await {
                    Ok(false) => match end_beyond_the_users_limit(store, &facts, &id).await {
                        Ok(ended) => self.count_ended_by_the_users_limit(ended),
                        // The sign-in stands; the next one tries again.
                        Err(error) => {
                            tracing::warn!(%error, "the user's oldest sessions could not be counted or ended");
                        }
                    },
                    Ok(true) => {
                        store.delete_confirmed(&id).await?;
                        return Err(SessionCookieError::Expired.into());
                    }
                    // Nobody holds its id: not left to its expiry in the indexes.
                    Err(error) => {
                        let _ = store.delete(&id).await;
                        return Err(error.into());
                    }
                }
                self.jar
                    .write_session_id(&id, max_age, cookies, attributes)?
            }
        };
        self.metrics.sessions_created.inc();
        Ok(set_cookies)
    }

    /// Whether a server-side store would take more than [`SERVER_SIDE_MOST`] for `session`
    /// (the cookie store has its own bound, its cookies').
    pub(super) fn too_large(&self, session: &Session) -> bool {
        !matches!(self.backend, SessionBackend::Cookie)
            && crate::session::compact::CompactSession::new(session)
                .to_bytes()
                .len()
                > SERVER_SIDE_MOST
    }

    /// Counts and logs the sessions a sign-in ended: its user's oldest, beyond
    /// [`MAX_SESSIONS_PER_USER`].
    fn count_ended_by_the_users_limit(&self, ended: usize) {
        if ended > 0 {
            self.metrics.sessions_ended.inc_by(ended as u64);
            tracing::info!(
                ended,
                limit = MAX_SESSIONS_PER_USER,
                "a sign-in ended its user's oldest sessions, beyond the sessions one user may hold"
            );
        }
    }

    /// Ends the request's session: removed from the store, cookies cleared. Returns the session
    /// that was ended, if it could be read, and the `Set-Cookie` values.
    ///
    /// # Errors
    /// When the store did not confirm the delete (Redis: not applied, or no replica
    /// acknowledged it): the session may still be valid, so the logout is not answered as done
    /// and the cookies are kept for a retry.
    pub async fn end(
        &self,
        cookies: &Cookies<'_>,
        now: UnixTime,
        attributes: CookieAttributes,
    ) -> Result<(Option<Arc<Session>>, Vec<String>), StoreError> {
        let session = self.load(cookies, now).await.ok().flatten();
        match (&self.backend, self.jar.session_id(cookies)) {
            (SessionBackend::Memory(store), Ok(Some(id))) => {
                store.remove(&id);
                // With a state file, a restart must not bring the session back.
                store.durable().await.map_err(unwritten)?;
            }
            (SessionBackend::Redis(store), Ok(Some(id))) => {
                store.delete_confirmed(&id).await?;
            }
            _ => {}
        }
        if session.is_some() {
            self.metrics.sessions_ended.inc();
        }
        Ok((session, self.jar.clear_session(cookies, attributes)))
    }

    /// Every session, or those of `sub`, or those of `provider` (of `sub` at `provider`), that
    /// has not ended at `now` (the memory store's purge and Redis' expiry come later).
    ///
    /// # Errors
    /// `NotServerSide` with the cookie store; `Unavailable` when Redis fails.
    pub async fn list(
        &self,
        sub: Option<&str>,
        provider: Option<&str>,
        now: UnixTime,
    ) -> Result<Vec<SessionSummary>, StoreError> {
        let summary = |id: &str, facts: &SessionFacts<'_>, last_seen| SessionSummary {
            handle: handle_of(id),
            sub: facts.sub.to_owned(),
            provider: facts.provider.to_owned(),
            created_at: facts.created_at,
            last_seen,
            expires_at: self.jar.end_of(facts.expires_at, facts.created_at),
        };
        let wanted = |facts: &SessionFacts<'_>, last_seen| {
            let ends_at = self.jar.end_of(facts.expires_at, facts.created_at);
            sub.is_none_or(|wanted| facts.sub == wanted)
                && provider.is_none_or(|wanted| facts.provider == wanted)
                && !matches!(self.lifetime().judge(ends_at, last_seen, now), Use::Ended)
        };
        let mut summaries = Vec::new();
        match &self.backend {
            SessionBackend::Cookie => return Err(StoreError::NotServerSide),
            SessionBackend::Memory(store) => store.visit(|id, facts, last_seen| {
                if wanted(facts, last_seen) {
                    summaries.push(summary(id, facts, last_seen));
                }
            }),
            SessionBackend::Redis(store) => {
                let index = sub.map_or(Index::All, Index::Sub);
                // A gone id is left in the index (a sign-in drops those whose time is over, a
                // delete those it ends): a listing changes nothing, so an admin delete that no
                // replica acknowledged (503) finds the id there when retried, and waits for
                // one then.
                for id in store.ids(index).await? {
                    if let Some((_, stored)) = store.get(&id).await? {
                        let facts = SessionFacts::of(&stored.session);
                        if wanted(&facts, stored.last_seen) {
                            summaries.push(summary(&id, &facts, stored.last_seen));
                        }
                    }
                }
            }
        }
        summaries.sort_by(|left, right| {
            left.created_at
                .cmp(&right.created_at)
                .then_with(|| left.handle.cmp(&right.handle))
        });
        Ok(summaries)
    }

    /// Ends the sessions `selector` selects; returns how many ended.
    ///
    /// # Errors
    /// `NotServerSide` with the cookie store; `Unavailable` when Redis fails.
    pub async fn end_selected(&self, selector: SessionSelector<'_>) -> Result<usize, StoreError> {
        // Ended now, and (by a handle) found gone: counted in the answer, not in the metric.
        let (ended, gone) = match &self.backend {
            SessionBackend::Cookie => return Err(StoreError::NotServerSide),
            SessionBackend::Memory(store) => {
                let ended = store.remove_where(|id, facts, _| selector.selects(id, facts));
                store.durable().await.map_err(unwritten)?;
                (ended, 0)
            }
            SessionBackend::Redis(store) => {
                let index = selector.index();
                let (mut ended, mut gone) = (0, 0);
                for id in store.ids(index).await? {
                    match store.get(&id).await? {
                        Some((_, stored))
                            if selector.selects(&id, &SessionFacts::of(&stored.session)) =>
                        {
                            if store.delete_confirmed(&id).await? {
                                ended += 1;
                            }
                            store.forget(index, &id).await?;
                        }
                        Some(_) => {}
                        // Gone, maybe by an earlier attempt whose delete no replica
                        // acknowledged (503): a retry is done only once one has. The one
                        // session a handle names is then ended, as asked (or had expired).
                        None if selector.may_have_selected(&id) => {
                            store.delete_confirmed(&id).await?;
                            if matches!(selector, SessionSelector::Handle(_)) {
                                gone += 1;
                            }
                            store.forget(index, &id).await?;
                        }
                        // Another handle's: left for that delete's own retry to find.
                        None => {}
                    }
                }
                (ended, gone)
            }
        };
        self.metrics.sessions_ended.inc_by(ended as u64);
        Ok(ended + gone)
    }

    /// Whether the store can be used now (for `/readyz`).
    ///
    /// # Errors
    /// `Unavailable` when Redis does not answer.
    pub async fn check(&self) -> Result<(), StoreError> {
        match &self.backend {
            SessionBackend::Redis(store) => store.ping().await,
            SessionBackend::Cookie | SessionBackend::Memory(_) => Ok(()),
        }
    }

    /// How many sessions the server holds (`None` for the cookie store).
    pub fn active(&self) -> Option<usize> {
        self.memory().map(|store| store.len())
    }

    /// `load` that changes nothing, for `POST /admin/explain`: a session in use is not touched,
    /// and an expired or idle one is reported, not ended.
    ///
    /// # Errors
    /// As `load`.
    pub async fn peek(
        &self,
        cookies: &Cookies<'_>,
        now: UnixTime,
    ) -> Result<Option<Arc<Session>>, SessionError> {
        let stored = match &self.backend {
            SessionBackend::Cookie => return Ok(self.jar.session(cookies, now)?),
            SessionBackend::Memory(store) => {
                let Some(id) = self.jar.session_id(cookies)? else {
                    return Ok(None);
                };
                store.get(&id)
            }
            SessionBackend::Redis(store) => {
                let Some(id) = self.jar.session_id(cookies)? else {
                    return Ok(None);
                };
                store.get(&id).await?.map(|(_, stored)| stored)
            }
        };
        let stored = stored.ok_or(SessionCookieError::Expired)?;
        match self
            .lifetime()
            .judge(self.jar.ends_at(&stored.session), stored.last_seen, now)
        {
            Use::Ended => Err(SessionCookieError::Expired.into()),
            Use::Touch | Use::Read => Ok(Some(stored.session)),
        }
    }
}

/// A state file that does not hold an ended session yet: the end is not answered as done, as
/// with a Redis delete no replica confirmed.
fn unwritten(error: crate::session::memory_store::StateFileError) -> StoreError {
    tracing::warn!(%error, "a session ended (or a logout token used) in memory is not in the state file yet");
    StoreError::Unavailable(error.to_string())
}

/// Ends the oldest sessions in Redis of the user `facts` names beyond
/// [`MAX_SESSIONS_PER_USER`]; returns how many it ended. The user's index is by `sub` alone,
/// so its sessions are read only when it holds more than the limit, to count those of this
/// provider, oldest first by their own `created_at` (seconds: sessions begun in one second tie,
/// and which of them ends is not told apart). The new session `new` is never among those
/// ended.
async fn end_beyond_the_users_limit(
    store: &RedisStore,
    facts: &SessionFacts<'_>,
    new: &str,
) -> Result<usize, StoreError> {
    let index = Index::Sub(facts.sub);
    let ids = store.ids(index).await?;
    if ids.len() <= MAX_SESSIONS_PER_USER {
        return Ok(0);
    }
    let mut others = Vec::new();
    for id in ids.into_iter().filter(|id| id != new) {
        match store.get(&id).await? {
            Some((_, stored)) if stored.session.provider == facts.provider => {
                let sid = SessionFacts::of(&stored.session).sid.map(str::to_owned);
                others.push((stored.session.created_at, id, sid));
            }
            Some(_) => {}
            // Gone, maybe by an admin delete no replica acknowledged (503): left out of the
            // index only once one has, so that the delete's retry still finds it until then.
            None => {
                store.delete_confirmed(&id).await?;
                store.forget(index, &id).await?;
            }
        }
    }
    others.sort_by_key(|(created_at, _, _)| *created_at);
    let beyond = (others.len() + 1).saturating_sub(MAX_SESSIONS_PER_USER);
    let mut ended = 0;
    // Ended for good, as an admin's end is: confirmed before it leaves the indexes, so a
    // failover cannot bring back a session no index names.
    for (_, id, sid) in others.iter().take(beyond) {
        if store.delete_confirmed(id).await? {
            ended += 1;
        }
        store.forget(index, id).await?;
        if let Some(sid) = sid {
            store.forget(Index::Sid(sid), id).await?;
        }
    }
    Ok(ended)
}

#[cfg(test)]
pub(crate) mod tests;
