//! How long an upgraded connection (a WebSocket) stays open: as long as what let it in. The
//! handshake is the only request Tollgate sees on it; without this, a WebSocket opened on a
//! session would go on acting for its user after the session ended (a sign-out, an admin's
//! end, a back-channel logout, its lifetime) for as long as bytes kept moving on it.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, header};

use crate::clock::Clock;
use crate::identity::{Credential, Identity};
use crate::session::store::{SessionError, Sessions};

/// How often the session of an open upgraded connection is looked at.
pub const LOOK_EVERY: Duration = Duration::from_secs(5);

pub use super::forward::Lasting;

/// How long a connection `identity` opens with the handshake's `headers` may last:
/// - on a session, until the session ends, looked at every [`LOOK_EVERY`] as a request would
///   use it (an open connection is one whose bytes moved within `keepalive_timeout`, so it
///   counts as use for `idle_timeout`); a store that cannot answer leaves it open until one
///   that can says the session ended;
/// - on a bearer token or the token cookie, until the token's `exp`.
///
/// `None` when nothing ends it (no session store, a token without `exp`).
pub fn lasting(
    sessions: Option<&Arc<Sessions>>,
    clock: &Arc<dyn Clock>,
    identity: &Identity,
    headers: &HeaderMap,
) -> Option<Lasting> {
    match identity.credential {
        Credential::SessionCookie => {
            let (sessions, clock) = (sessions?.clone(), clock.clone());
            let cookies: HeaderMap = headers
                .get_all(header::COOKIE)
                .iter()
                .map(|value| (header::COOKIE, value.clone()))
                .collect();
            Some(Box::pin(async move {
                let start = tokio::time::Instant::now() + LOOK_EVERY;
                let mut every = tokio::time::interval_at(start, LOOK_EVERY);
                loop {
                    every.tick().await;
                    let jar = crate::http::cookies::request_cookies(&cookies);
                    match sessions.load(&jar, clock.now()).await {
                        Ok(Some(_)) => {}
                        Err(SessionError::Store(error)) => {
                            tracing::warn!(%error, "the session of an upgraded connection could not be looked at; it stays open");
                        }
                        Ok(None) | Err(SessionError::Cookie(_)) => return,
                    }
                }
            }))
        }
        Credential::Bearer | Credential::TokenCookie => {
            let exp = crate::token::numeric_claim(&identity.claims, "exp")
                .ok()
                .flatten()?;
            let left = u64::try_from(exp.saturating_sub(clock.now())).unwrap_or(0);
            Some(Box::pin(tokio::time::sleep(Duration::from_secs(left))))
        }
    }
}
