//! Refreshing across replicas with Redis (SPEC §12): a replica that lost the lease waits for
//! the winner's result; the winner, when no replica confirmed its result, writes it again while
//! it holds the lease, so a master killed with the only copy does not hand the other replicas
//! the refresh token the provider has already spent.

use std::sync::Arc;
use std::time::Duration;

use super::{OwnedCookies, RefreshError, Shared, borrow, keep, key_of, store_error};
use crate::clock::UnixTime;
use crate::oidc::Provider;
use crate::session::Session;
use crate::session::store::{RefreshClaim, SessionError, Sessions};

/// How often a replica waiting for another's refresh looks at the store.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How often an unconfirmed refresh is written again.
const CONFIRM_INTERVAL: Duration = Duration::from_millis(250);

impl Shared {
    /// Another replica holds the refresh lease: wait for the stored session to change (its
    /// result), at most the provider timeout; meanwhile the session serves while it is valid.
    /// Each look is a fresh read from Redis (after a failover, from the new master). When the
    /// lease is still held at the end, the other replica's result may yet be written (it is
    /// written again after a failover): an expired session is then told the store is
    /// unavailable (503), and this replica never refreshes with the token it holds. `None`
    /// when the lease was given back with the session unchanged (nobody is refreshing it).
    pub(super) async fn await_other_replica(
        &self,
        provider: &Provider,
        sessions: &Sessions,
        cookies: &crate::session::Cookies<'_>,
        session: Arc<Session>,
        spent: &str,
        now: UnixTime,
    ) -> Option<Result<(Arc<Session>, Vec<String>), RefreshError>> {
        let deadline = tokio::time::Instant::now() + provider.timeout();
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(POLL_INTERVAL).await;
            let current = match sessions.current(cookies, now).await {
                Ok(Some(current)) => current,
                Ok(None) => {
                    return Some(Err(RefreshError::Ended(
                        "the session ended meanwhile".to_owned(),
                    )));
                }
                Err(error) => return Some(Err(store_error(error))),
            };
            if super::refreshed_since(&current, &session, spent) {
                if super::renewed(&current, &session) {
                    self.recent.insert(
                        key_of(spent),
                        (current.clone(), now, super::started_from(&session)),
                    );
                }
                return Some(super::theirs(current, &session, now));
            }
            match sessions.refresh_in_flight(cookies).await {
                Ok(true) => {}
                Ok(false) => return None,
                Err(error) => return Some(Err(store_error(error))),
            }
        }
        let reason = "another replica's refresh did not finish; retried later";
        Some(match keep(session, Vec::new(), now, reason) {
            Err(RefreshError::ProviderUnavailable { .. }) => Err(RefreshError::Store(
                "another replica's refresh is not stored yet".to_owned(),
            )),
            answer => answer,
        })
    }
}

/// A session a refresh wrote that no replica confirmed (its result, or the session holding the
/// refresh token the provider rotated to before the refresh failed), and the lease held
/// meanwhile.
pub(super) struct Unconfirmed {
    pub(super) sessions: Arc<Sessions>,
    pub(super) cookies: OwnedCookies,
    /// The session the refresh started from (its tokens spent).
    pub(super) from: Arc<Session>,
    /// What the store is to hold.
    pub(super) refreshed: Arc<Session>,
    pub(super) now: UnixTime,
    pub(super) claim: RefreshClaim,
    /// Before the lease runs out: after that another replica may take it and present the
    /// spent token, and writing on would race it.
    pub(super) until: tokio::time::Instant,
}

/// Writes an unconfirmed refresh's session again until a replica confirms it (after a failover: the new
/// master, which never had it), then gives the lease back. Meanwhile other replicas wait for
/// the lease rather than present the spent token, which a rotating provider would refuse.
pub(super) async fn confirm_later(unconfirmed: Unconfirmed) {
    let cookies = borrow(&unconfirmed.cookies);
    loop {
        tokio::time::sleep(CONFIRM_INTERVAL).await;
        match unconfirmed
            .sessions
            .confirm_refreshed(
                &cookies,
                &unconfirmed.from,
                &unconfirmed.refreshed,
                unconfirmed.now,
            )
            .await
        {
            Ok(()) => {
                tracing::info!("a refreshed session no replica had confirmed is now stored");
                break;
            }
            Err(SessionError::Store(error)) if tokio::time::Instant::now() < unconfirmed.until => {
                tracing::debug!(%error, "refreshed session not confirmed yet; trying again");
            }
            Err(error) => {
                tracing::warn!(%error, "a refreshed session was not stored before its refresh lease ran out; its refresh token may be lost");
                break;
            }
        }
    }
    unconfirmed
        .sessions
        .release_refresh(&cookies, &unconfirmed.claim)
        .await;
}
