//! How long an upgraded connection (a WebSocket) stays open: as long as what let it in. The
//! handshake is the only request Tollgate sees on it; without this, a WebSocket opened on a
//! session would go on acting for its user after the session ended (a sign-out, an admin's
//! end, a back-channel logout, its lifetime) for as long as bytes kept moving on it.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};

use crate::config::RouteConfig;
use crate::identity::{Credential, Identity};
use crate::session::store::SessionError;

use super::ProxyState;

pub use super::forward::Lasting;

/// How often the session of an open upgraded connection is looked at, at the most (each
/// connection waits up to a fifth more, at random, so that those opened together do not
/// look together).
pub const LOOK_EVERY: Duration = Duration::from_secs(10);

/// How long a connection `identity` opens with the handshake's `headers` may last:
/// - on a session, until the session ends, or (memory and Redis stores) its claims, which a
///   refresh changes, no longer meet `require`, the route's requirements; looked at about
///   every [`LOOK_EVERY`] as a
///   request would use it (an open connection is one whose bytes moved within
///   `keepalive_timeout`, so it counts as use for `idle_timeout`); a store that cannot answer
///   leaves it open until one that can says the session ended, or the session's lifetime,
///   known here, is over; after a config reload, each look is the reloaded config's: its
///   session secrets open the cookie, and its route of the same `host` and `path_prefix`
///   (with the same provider) must still be there and its requirements hold, whatever the
///   store;
/// - on a bearer token or the token cookie, until the token's `exp` and the `leeway` it is
///   accepted for; one without `exp` (an introspection answer need not have one) for
///   `INTROSPECTION_CACHE_SECONDS` from the handshake, as long as a request trusts an answer.
///
/// `None` when nothing ends it (no session store).
pub fn lasting(
    state: &ProxyState,
    route: &RouteConfig,
    identity: &Identity,
    headers: &HeaderMap,
) -> Option<Lasting> {
    let (clock, leeway) = (&state.clock, state.leeway);
    match identity.credential {
        Credential::SessionCookie => {
            let (mut sessions, clock) = (state.sessions.sessions.clone()?, clock.clone());
            let reloads = state.successor.clone();
            let (host, path_prefix) = (route.host.clone(), route.path_prefix.clone());
            let provider = route.provider.clone();
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
            // With the `cookie` store a look reads the handshake's cookie, as it was before any
            // refresh the handshake itself made: its claims say nothing new, and checked against
            // the route they could close what the refreshed session was let in for.
            let mut require = (sessions.is_server_side() && !route.require.is_empty())
                .then(|| route.require.clone());
            Some(Box::pin(async move {
                let mut unanswered = false;
                loop {
                    let extra = LOOK_EVERY / 5 * u32::from(crate::random::bytes::<1>()[0]) / 256;
                    tokio::time::sleep(LOOK_EVERY + extra).await;
                    if let Some(current) = ProxyState::latest_after(&reloads) {
                        let route = current
                            .routes
                            .named(host.as_deref(), &path_prefix)
                            .filter(|route| route.provider == provider);
                        let (Some(route), Some(current_sessions)) =
                            (route, current.sessions.sessions.clone())
                        else {
                            tracing::info!(
                                "an upgraded connection's route or sessions are gone after a config reload: closed"
                            );
                            return;
                        };
                        sessions = current_sessions;
                        require = (!route.require.is_empty()).then(|| route.require.clone());
                    }
                    let jar = crate::http::cookies::request_cookies(&cookies);
                    match sessions.load(&jar, clock.now()).await {
                        Ok(Some(session)) => {
                            unanswered = false;
                            ends_at = Some(session.expires_at);
                            // A refresh may have taken away what let it in (a group, a role).
                            if let Some(require) = &require
                                && let Err(requirement) =
                                    crate::policy::check_requirements(require, &session.claims)
                            {
                                tracing::info!(%requirement, "an upgraded connection's session no longer meets its route's requirements: closed");
                                return;
                            }
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
            let left = token_lasts(&identity.claims, leeway, clock.now());
            Some(Box::pin(tokio::time::sleep(left)))
        }
    }
}

/// How long from `now` a connection opened with a token of `claims` lasts: until its `exp` and
/// the `leeway`; without `exp` (an introspection answer need not have one: it was left open for
/// good), for as long as a request trusts an introspection's answer.
fn token_lasts(
    claims: &serde_json::Map<String, serde_json::Value>,
    leeway: i64,
    now: i64,
) -> Duration {
    let end = crate::token::numeric_claim(claims, "exp")
        .ok()
        .flatten()
        .map_or(
            now.saturating_add(crate::oidc::provider::INTROSPECTION_CACHE_SECONDS),
            |exp| exp.saturating_add(leeway),
        );
    Duration::from_secs(u64::try_from(end.saturating_sub(now)).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_without_exp_lasts_as_long_as_an_introspection_is_trusted() {
        let claims = |exp: Option<i64>| {
            let mut claims = serde_json::Map::new();
            claims.insert("sub".to_owned(), "x".into());
            if let Some(exp) = exp {
                claims.insert("exp".to_owned(), exp.into());
            }
            claims
        };
        assert_eq!(
            token_lasts(&claims(Some(1_100)), 30, 1_000),
            Duration::from_secs(130)
        );
        assert_eq!(token_lasts(&claims(Some(900)), 30, 1_000), Duration::ZERO);
        assert_eq!(
            token_lasts(&claims(None), 30, 1_000),
            Duration::from_secs(60),
            "not for good"
        );
    }
}
