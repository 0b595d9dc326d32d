//! Refreshing a session once across replicas (SPEC §12). With Redis, the replica that takes a
//! session's refresh lease refreshes it and the others wait for the result and read it back;
//! the refreshed session is written only if the stored one still holds the tokens the refresh
//! started from, refresh and access token (compare-and-set), so a slower refresh never
//! overwrites a newer one, also with a provider that sends the same refresh token back. The memory
//! and cookie stores are one process's: there the in-process single flight is the whole story
//! (a cookie session copied to two replicas can still be refreshed twice; see the README).

use std::sync::Arc;
use std::time::Duration;

use super::{SessionBackend, SessionError, Sessions};
use crate::clock::UnixTime;
use crate::session::StoredSession;
use crate::session::compact::SessionFacts;
use crate::session::redis_store::RedisStore;
use crate::session::{CookieAttributes, Cookies, Session, SessionCookieError};

/// Who refreshes a session.
#[derive(Debug)]
pub enum RefreshClaim {
    /// This request does; with Redis, it holds the lease under this holder value.
    Won(Option<String>),
    /// Another replica is refreshing it now.
    Lost,
}

/// How a refreshed session was stored.
#[derive(Debug)]
pub enum Replaced {
    /// Stored; the `Set-Cookie` values that carry it (cookie store only).
    Stored(Vec<String>),
    /// The stored session no longer holds the tokens the refresh started from: another
    /// refresh got there first, and this is its result.
    Superseded(Arc<Session>),
}

/// How many times a compare-and-set is tried when only a touch (`last_seen`) raced it.
const WRITE_ATTEMPTS: usize = 4;

impl Sessions {
    fn request_id(&self, cookies: &Cookies<'_>) -> Result<Arc<str>, SessionError> {
        Ok(self
            .jar
            .session_id(cookies)?
            .ok_or(SessionCookieError::Unreadable)?)
    }

    /// Claims the refresh of the request's session for `hold` (longer than a refresh can
    /// take).
    ///
    /// # Errors
    /// An unreadable session cookie, or the store is unavailable.
    pub async fn claim_refresh(
        &self,
        cookies: &Cookies<'_>,
        hold: Duration,
    ) -> Result<RefreshClaim, SessionError> {
        let SessionBackend::Redis(store) = &self.backend else {
            return Ok(RefreshClaim::Won(None));
        };
        let id = self.request_id(cookies)?;
        let holder = crate::random::token();
        Ok(if store.take_lease(&id, &holder, hold).await? {
            RefreshClaim::Won(Some(holder))
        } else {
            RefreshClaim::Lost
        })
    }

    /// Gives a won claim back. A failure only means the lease runs out by itself.
    pub async fn release_refresh(&self, cookies: &Cookies<'_>, claim: &RefreshClaim) {
        if let (SessionBackend::Redis(store), RefreshClaim::Won(Some(holder))) =
            (&self.backend, claim)
            && let Ok(id) = self.request_id(cookies)
            && let Err(error) = store.release_lease(&id, holder).await
        {
            tracing::debug!(%error, "refresh lease not released; it expires by itself");
        }
    }

    /// Whether another replica is refreshing the request's session.
    ///
    /// # Errors
    /// An unreadable session cookie, or the store is unavailable.
    pub async fn refresh_in_flight(&self, cookies: &Cookies<'_>) -> Result<bool, SessionError> {
        match &self.backend {
            SessionBackend::Redis(store) => {
                Ok(store.lease_held(&self.request_id(cookies)?).await?)
            }
            SessionBackend::Cookie | SessionBackend::Memory(_) => Ok(false),
        }
    }

    /// The request's session as the store holds it now (with Redis, never a local copy);
    /// `None` when it is gone. The cookie store has only the request's own copy.
    ///
    /// # Errors
    /// An unreadable session cookie, or the store is unavailable.
    pub async fn current(
        &self,
        cookies: &Cookies<'_>,
        now: UnixTime,
    ) -> Result<Option<Arc<Session>>, SessionError> {
        match &self.backend {
            SessionBackend::Cookie => Ok(self.jar.session(cookies, now)?),
            SessionBackend::Memory(store) => Ok(store
                .get(&self.request_id(cookies)?)
                .map(|stored| stored.session)),
            SessionBackend::Redis(store) => Ok(store
                .get_fresh(&self.request_id(cookies)?)
                .await?
                .map(|(_, stored)| stored.session)),
        }
    }

    /// Stores a session refreshed from `from` (by spending its refresh token), only while the
    /// stored session still holds `from`'s tokens: the refresh token, and the access token
    /// too, as a provider that does not rotate sends the same refresh token back, and a newer
    /// refresh's result then tells only by its access token.
    ///
    /// # Errors
    /// When sealing or the store fails, or the session is gone.
    pub async fn replace_refreshed(
        &self,
        cookies: &Cookies<'_>,
        from: &Session,
        refreshed: &Session,
        now: UnixTime,
        attributes: CookieAttributes,
    ) -> Result<Replaced, SessionError> {
        // The refresh token is spent: a session left holding it would present it again. It
        // ends (its user signs in again, and is told the session is too large there).
        if self.too_large(refreshed) {
            let id = self.request_id(cookies)?;
            // Only while the store still holds the tokens spent: another refresh's result (a
            // lease that lapsed) is the session now, and stays.
            let holds_spent = |session: &Session| session.holds_the_tokens_of(from);
            match &self.backend {
                SessionBackend::Memory(store) => match store.get(&id) {
                    Some(current) if !holds_spent(&current.session) => {
                        return Ok(Replaced::Superseded(current.session));
                    }
                    Some(_) => {
                        store.remove(&id);
                        // With a state file, a restart must not bring it back.
                        store.durable().await.map_err(super::unwritten)?;
                    }
                    None => {}
                },
                SessionBackend::Redis(store) => match store.get_fresh(&id).await? {
                    Some((_, current)) if !holds_spent(&current.session) => {
                        return Ok(Replaced::Superseded(current.session));
                    }
                    Some(_) => {
                        store.delete_confirmed(&id).await?;
                    }
                    None => {}
                },
                SessionBackend::Cookie => {}
            }
            tracing::warn!("a refreshed session is too large to store: ended");
            return Err(SessionCookieError::TooLarge.into());
        }
        match &self.backend {
            SessionBackend::Cookie => Ok(Replaced::Stored(
                self.jar
                    .write_session(refreshed, cookies, now, attributes)?,
            )),
            SessionBackend::Memory(store) => {
                let id = self.request_id(cookies)?;
                // With a state file, answered once the file holds what was written (as a
                // logout is): a crash right after would otherwise restore the spent refresh
                // token (the next refresh then refused, or taken for a reuse), or a session a
                // back-channel logout ended.
                match store.replace_refreshed(&id, from, Arc::new(refreshed.clone()), now) {
                    // A back-channel logout of the provider session it names came meanwhile.
                    Ok(()) if self.provider_session_ended(refreshed, now).await? => {
                        store.remove(&id);
                        store.durable().await.map_err(super::unwritten)?;
                        Err(SessionCookieError::Expired.into())
                    }
                    Ok(()) => {
                        store.durable().await.map_err(super::unwritten)?;
                        Ok(Replaced::Stored(Vec::new()))
                    }
                    Err(Some(current)) => Ok(Replaced::Superseded(current)),
                    Err(None) => Err(SessionCookieError::Expired.into()),
                }
            }
            SessionBackend::Redis(store) => {
                let id = self.request_id(cookies)?;
                for _ in 0..WRITE_ATTEMPTS {
                    let (seen, current) = store
                        .get_fresh(&id)
                        .await?
                        .ok_or(SessionCookieError::Expired)?;
                    // Another refresh's result, or this one already stored (a provider that
                    // does not rotate sends the same refresh token back: the access token
                    // tells): nothing to write.
                    if !current.session.holds_the_tokens_of(from)
                        || current.session.holds_the_tokens_of(refreshed)
                    {
                        return Ok(Replaced::Superseded(current.session));
                    }
                    // A refreshed ID token may name another provider session: indexed under
                    // it before the session is written, so that a back-channel logout naming
                    // it once the session holds it finds it (an entry whose write then fails
                    // is harmless: a selection checks each session's own `sid`).
                    let sid = SessionFacts::of(refreshed).sid;
                    if let Some(sid) = sid
                        && SessionFacts::of(&current.session).sid != Some(sid)
                    {
                        store.index_sid(&id, sid, refreshed.expires_at, now).await?;
                    }
                    let stored = StoredSession {
                        session: Arc::new(refreshed.clone()),
                        last_seen: now,
                    };
                    let ttl = RedisStore::ttl(&stored, now, self.idle_timeout);
                    if store.compare_and_set(&id, &seen, &stored, ttl).await? {
                        // A back-channel logout of the provider session it names may have
                        // scanned before this write.
                        if self.provider_session_ended(refreshed, now).await? {
                            store.delete_confirmed(&id).await?;
                            return Err(SessionCookieError::Expired.into());
                        }
                        return Ok(Replaced::Stored(Vec::new()));
                    }
                }
                Err(crate::session::error::StoreError::Unavailable(
                    "the session kept changing while its refresh was stored".to_owned(),
                )
                .into())
            }
        }
    }

    /// After a refresh whose write no replica confirmed (the master may have taken it alone
    /// and may yet be lost in a failover): writes `refreshed` again, over the spent session or
    /// over its own unconfirmed copy, until a replica confirms it. Done (`Ok`) also when the
    /// store holds something else by now (a later refresh, or the session ended), and for
    /// stores without replicas.
    ///
    /// # Errors
    /// The store is unavailable or did not confirm; the caller tries again.
    pub async fn confirm_refreshed(
        &self,
        cookies: &Cookies<'_>,
        from: &Session,
        refreshed: &Session,
        now: UnixTime,
    ) -> Result<(), SessionError> {
        let SessionBackend::Redis(store) = &self.backend else {
            return Ok(());
        };
        let id = self.request_id(cookies)?;
        let Some((seen, current)) = store.get_fresh(&id).await? else {
            return Ok(());
        };
        if !current.session.holds_the_tokens_of(from)
            && !current.session.holds_the_tokens_of(refreshed)
        {
            return Ok(());
        }
        // The index entry may have been lost with the write it came before.
        if let Some(sid) = SessionFacts::of(refreshed).sid {
            store.index_sid(&id, sid, refreshed.expires_at, now).await?;
        }
        let stored = StoredSession {
            session: Arc::new(refreshed.clone()),
            last_seen: now,
        };
        let ttl = RedisStore::ttl(&stored, now, self.idle_timeout);
        if store.compare_and_set(&id, &seen, &stored, ttl).await? {
            // As `replace_refreshed`: a logout that scanned before this write ends it.
            if self.provider_session_ended(refreshed, now).await? {
                store.delete_confirmed(&id).await?;
            }
            Ok(())
        } else {
            Err(crate::session::error::StoreError::Unavailable(
                "the session changed while its refresh was confirmed".to_owned(),
            )
            .into())
        }
    }
}
