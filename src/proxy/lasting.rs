//! How long an upgraded connection (a WebSocket) stays open: as long as what let it in. The
//! handshake is the only request Tollgate sees on it; without this, a WebSocket opened on a
//! session would go on acting for its user after the session ended (a sign-out, an admin's
//! end, a back-channel logout, its lifetime) for as long as bytes kept moving on it.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};

use crate::clock::Clock;
use crate::identity::{Credential, Identity};
use crate::session::store::{SessionError, Sessions};

pub use super::forward::Lasting;

/// How often the session of an open upgraded connection is looked at, at the most (each
/// connection waits up to a fifth more, at random, so that those opened together do not
/// look together).
pub const LOOK_EVERY: Duration = Duration::from_secs(10);

/// How long a connection `identity` opens with the handshake's `headers` may last:
/// - on a session, until the session ends, looked at about every [`LOOK_EVERY`] as a request
///   would use it (an open connection is one whose bytes moved within `keepalive_timeout`, so
///   it counts as use for `idle_timeout`); a store that cannot answer leaves it open until one
///   that can says the session ended, or the session's lifetime, known here, is over;
/// - on a bearer token or the token cookie, until the token's `exp` and the `leeway` it is
///   accepted for.
///
/// `None` when nothing ends it (no session store, a token without `exp`).
pub fn lasting(
    sessions: Option<&Arc<Sessions>>,
    clock: &Arc<dyn Clock>,
    leeway: i64,
    identity: &Identity,
    headers: &HeaderMap,
) -> Option<Lasting> {
    match identity.credential {
        Credential::SessionCookie => {
            let (sessions, clock) = (sessions?.clone(), clock.clone());
            // Copied, not shared: a shared value would keep the whole request head's buffer.
            let cookies: HeaderMap = headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|value| HeaderValue::from_bytes(value.as_bytes()).ok())
                .map(|value| (header::COOKIE, value))
                .collect();
            // The end of its lifetime (`session.lifetime` from the sign-in), as the handshake
            // and each look since found it.
            let mut ends_at = identity.session.as_ref().map(|session| session.expires_at);
            Some(Box::pin(async move {
                let mut unanswered = false;
                loop {
                    let extra = LOOK_EVERY / 5 * u32::from(crate::random::bytes::<1>()[0]) / 256;
                    tokio::time::sleep(LOOK_EVERY + extra).await;
                    let jar = crate::http::cookies::request_cookies(&cookies);
                    match sessions.load(&jar, clock.now()).await {
                        Ok(Some(session)) => {
                            unanswered = false;
                            ends_at = Some(session.expires_at);
                        }
                        // Whatever else happened meanwhile, the session has ended by now.
                        Err(SessionError::Store(_))
                            if ends_at.is_some_and(|end| clock.now() >= end) =>
                        {
                            tracing::info!(
                                "an upgraded connection's session lifetime is over while the store cannot answer: closed"
                            );
                            return;
                        }
                        Err(SessionError::Store(error)) => {
                            if !unanswered {
                                tracing::warn!(%error, "the session of an upgraded connection could not be looked at; it stays open");
                            }
                            unanswered = true;
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
            let left = exp.saturating_add(leeway).saturating_sub(clock.now());
            let left = u64::try_from(left).unwrap_or(0);
            Some(Box::pin(tokio::time::sleep(Duration::from_secs(left))))
        }
    }
}
