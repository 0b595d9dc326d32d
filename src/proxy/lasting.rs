//! How long an upgraded connection (a WebSocket) stays open: as long as what let it in. The
//! handshake is the only request Tollgate sees on it; without this, a WebSocket opened on a
//! session would go on acting for its user after the session ended (a sign-out, an admin's
//! end, a back-channel logout, its lifetime) for as long as bytes kept moving on it.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};

use crate::config::RouteConfig;
use crate::identity::{Credential, Identity};
use crate::oidc::Provider;
use crate::oidc::provider::CredentialError;
use crate::session::store::{SessionError, Sessions};

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
///   known here, is over;
/// - on a bearer token or the token cookie, until the token's `exp` and the `leeway` it is
///   accepted for; one without `exp` (an introspection answer need not have one) for
///   `INTROSPECTION_CACHE_SECONDS` from the handshake, as long as a request trusts an answer;
///   and an `Authorization` bearer token is validated again about every [`LOOK_EVERY`], as a
///   request's would be (the route's provider's cache, its revocations, a new introspection
///   once the last is no longer trusted, its keys as fetched since), and its claims checked
///   against the route's `require`: refused, it closes the connection; a provider that cannot
///   answer leaves it open, and is asked again after [`UNANSWERED_SKIPS`] looks.
///
/// After a config reload, each look is the reloaded config's ([`Followed`]): the route the
/// handshake's canonical `host` and `path` choose there (a new, more specific route covering
/// the path included), and that a trusted proxy's `X-Forwarded-Host` at the handshake chooses
/// too where routes are chosen by host (as a request's must), must have the same provider
/// (and still `accept_bearer`, for a bearer token's), the session's provider still the one
/// that made it (`Session::made_at`), its secrets must open the cookie, and its `require` must
/// hold (with the `cookie` store, whose look reads the handshake's cookie, against the claims
/// the handshake found, once after each reload).
///
/// `None` when nothing ends it (no session store).
pub fn lasting(
    state: &ProxyState,
    at: At<'_>,
    identity: &Identity,
    headers: &HeaderMap,
    client: std::net::IpAddr,
) -> Option<Lasting> {
    let (clock, leeway) = (&state.clock, state.leeway);
    let route = at.route;
    let followed = Followed {
        reloads: state.successor.clone(),
        host: at.host.map(str::to_owned),
        forwarded: at.forwarded.map(str::to_owned),
        path: at.path.to_owned(),
        provider: route.provider.clone(),
    };
    match identity.credential {
        Credential::SessionCookie => {
            let sessions = state.sessions.sessions.clone()?;
            // Copied, not shared: a shared value would keep the whole request head's buffer.
            let cookies: HeaderMap = headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|value| HeaderValue::from_bytes(value.as_bytes()).ok())
                .map(|value| (header::COOKIE, value))
                .collect();
            // The end of its lifetime (`session.lifetime` from the sign-in), as the handshake
            // and each look since found it.
            let ends_at = identity.session.as_ref().map(|session| session.expires_at);
            // With the `cookie` store a look reads the handshake's cookie, as it was before any
            // refresh the handshake itself made: its claims say nothing new, and checked against
            // the route they could close what the refreshed session was let in for.
            let require = (sessions.is_server_side() && !route.require.is_empty())
                .then(|| route.require.clone());
            let look = SessionLook {
                cookies,
                handshake_claims: (!sessions.is_server_side()).then(|| identity.claims.clone()),
                ends_at,
                require,
            };
            Some(Box::pin(session_lasting(
                followed,
                sessions,
                look,
                clock.clone(),
            )))
        }
        Credential::Bearer | Credential::TokenCookie => {
            let left = token_lasts(&identity.claims, leeway, clock.now());
            let token = crate::identity::bearer_token(headers).and_then(Result::ok);
            let provider = state.providers.get(&route.provider);
            match (identity.credential, token, provider) {
                (Credential::Bearer, Some(token), Some(provider)) => {
                    Some(Box::pin(bearer_lasting(
                        followed,
                        provider.clone(),
                        route.require.clone(),
                        token.to_owned(),
                        client,
                        clock.clone(),
                        left,
                    )))
                }
                _ => Some(Box::pin(tokio::time::sleep(left))),
            }
        }
    }
}

/// Where a handshake was let in.
pub struct At<'a> {
    /// The route its canonical host and path chose.
    pub route: &'a RouteConfig,
    /// Its canonical host and path (SPEC §4.1).
    pub host: Option<&'a str>,
    pub path: &'a str,
    /// A trusted proxy's `X-Forwarded-Host`, the host the upstream was told.
    pub forwarded: Option<&'a str>,
}

/// The route an upgraded connection was let in on, followed through config reloads.
struct Followed {
    /// The `successor` slot of the newest state seen: only that one is held.
    reloads: Arc<std::sync::OnceLock<Arc<ProxyState>>>,
    /// The handshake's canonical host and path (SPEC §4.1), which choose the route again.
    host: Option<String>,
    path: String,
    /// The trusted `X-Forwarded-Host` the upstream was told at the handshake: where a reloaded
    /// config chooses routes by host, it must choose the route `host` chooses.
    forwarded: Option<String>,
    provider: String,
}

/// What a look finds of the route since the last one.
enum Since {
    /// No reload.
    Unchanged,
    /// A reload left the handshake's host and path no route, one of another provider, a
    /// reading of the path as another route's, or another route for the trusted
    /// `X-Forwarded-Host` (logged: the connection is closed).
    Gone,
    /// A reload made `state` live, with this route and its provider.
    Reloaded {
        state: Arc<ProxyState>,
        route: Box<RouteConfig>,
        provider: Arc<Provider>,
    },
}

impl Followed {
    /// What a reload since the last look made of the route.
    fn since(&mut self) -> Since {
        let Some(state) = ProxyState::latest_after(&self.reloads) else {
            return Since::Unchanged;
        };
        self.reloads = state.successor.clone();
        // As a request's (`select_route`): a path that reads as another route's now is none.
        // The canonical host as a `Host` header would carry it: an IPv6 literal in brackets.
        let host = self.host.as_deref().map(|host| {
            if host.contains(':') {
                std::borrow::Cow::Owned(format!("[{host}]"))
            } else {
                std::borrow::Cow::Borrowed(host)
            }
        });
        let host = host.as_deref().map(str::as_bytes);
        let route = super::select_route(&state, host, None, &self.path)
            .ok()
            .flatten()
            .filter(|route| {
                self.forwarded.as_deref().is_none_or(|forwarded| {
                    !state.routes.by_host()
                        || super::forwarded_host_chooses(
                            &state,
                            Some(route),
                            host,
                            forwarded,
                            &self.path,
                        )
                        .is_ok()
                })
            })
            .filter(|route| route.provider == self.provider)
            .map(|route| Box::new(route.clone()));
        match (route, state.providers.get(&self.provider).cloned()) {
            (Some(route), Some(provider)) => Since::Reloaded {
                state,
                route,
                provider,
            },
            _ => {
                tracing::info!(
                    "an upgraded connection's route is gone after a config reload: closed"
                );
                Since::Gone
            }
        }
    }
}

/// Waits between looks: [`LOOK_EVERY`] and up to a fifth more, at random, so that connections
/// opened together do not look together.
fn next_look() -> Duration {
    LOOK_EVERY + LOOK_EVERY / 5 * u32::from(crate::random::bytes::<1>()[0]) / 256
}

/// What a session's looks read.
struct SessionLook {
    /// The handshake's `Cookie` headers.
    cookies: HeaderMap,
    /// With the `cookie` store, the session's claims as the handshake found them (after any
    /// refresh it made): what a reloaded route's `require` is checked against.
    handshake_claims: Option<crate::token::Claims>,
    /// The end of its lifetime, as the handshake and each look since found it.
    ends_at: Option<crate::clock::UnixTime>,
    /// The route's requirements, checked at each look (memory and Redis stores).
    require: Option<crate::policy::Requirements>,
}

/// Until the session of `cookies` ends or no longer meets `require` (see [`lasting`]).
async fn session_lasting(
    mut followed: Followed,
    mut sessions: Arc<Sessions>,
    look: SessionLook,
    clock: Arc<dyn crate::clock::Clock>,
) {
    let SessionLook {
        cookies,
        handshake_claims,
        mut ends_at,
        mut require,
    } = look;
    let mut unanswered = false;
    // After a reload: the provider, by name, issuer and client, that must have made it.
    let mut made_by: Option<Arc<Provider>> = None;
    loop {
        tokio::time::sleep(next_look()).await;
        match followed.since() {
            Since::Unchanged => {}
            Since::Gone => return,
            Since::Reloaded {
                state,
                route,
                provider,
            } => {
                let Some(current_sessions) = state.sessions.sessions.clone() else {
                    tracing::info!(
                        "an upgraded connection's sessions are gone after a config reload: closed"
                    );
                    return;
                };
                sessions = current_sessions;
                // The cookie store's look reads the handshake's cookie: the reloaded route's
                // requirements are checked once, against what the handshake found.
                if !sessions.is_server_side()
                    && let Some(claims) = &handshake_claims
                    && let Err(requirement) =
                        crate::policy::check_requirements(&route.require, claims)
                {
                    tracing::info!(%requirement, "an upgraded connection's session does not meet its reloaded route's requirements: closed");
                    return;
                }
                require = (sessions.is_server_side() && !route.require.is_empty())
                    .then_some(route.require);
                made_by = Some(provider);
            }
        }
        let jar = crate::http::cookies::request_cookies(&cookies);
        match sessions.load(&jar, clock.now()).await {
            Ok(Some(session)) => {
                unanswered = false;
                ends_at = Some(session.expires_at);
                if let Some(provider) = &made_by
                    && !session.made_at(
                        provider.name(),
                        &provider.config.issuer,
                        &provider.config.client_id,
                    )
                {
                    tracing::info!(
                        "an upgraded connection's session is no longer its provider's after a config reload: closed"
                    );
                    return;
                }
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
            Err(SessionError::Store(_)) if ends_at.is_some_and(|end| clock.now() >= end) => {
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
}

/// Looks a bearer connection skips after its provider could not answer (about a minute).
const UNANSWERED_SKIPS: u32 = 5;

/// Until `left` is over, or a look finds `token` refused by the route's provider (asked as a
/// request from `client` would ask it) or its claims short of the route's `require`.
async fn bearer_lasting(
    mut followed: Followed,
    mut provider: Arc<Provider>,
    mut require: crate::policy::Requirements,
    token: String,
    client: std::net::IpAddr,
    clock: Arc<dyn crate::clock::Clock>,
    left: Duration,
) {
    let end = tokio::time::Instant::now() + left;
    let no_headers = HeaderMap::new();
    // Looks skipped after the provider could not answer: it is not asked again for about a
    // minute (it may be throttling, and each failure counts against the client's address).
    let mut skipped = 0;
    let mut unanswered = false;
    loop {
        let look = tokio::time::Instant::now() + next_look();
        if look >= end {
            tokio::time::sleep_until(end).await;
            return;
        }
        tokio::time::sleep_until(look).await;
        match followed.since() {
            Since::Unchanged => {}
            Since::Gone => return,
            Since::Reloaded {
                route,
                provider: current,
                ..
            } => {
                if !route.accept_bearer {
                    tracing::info!(
                        "an upgraded connection's route no longer accepts bearer tokens after a config reload: closed"
                    );
                    return;
                }
                provider = current;
                require = route.require;
                skipped = 0;
            }
        }
        if skipped > 0 {
            skipped -= 1;
            continue;
        }
        let client = crate::http::forwarded::ClientAddress::new(client, &no_headers, &[]);
        match provider
            .validate_access_token_at(&token, clock.now(), client)
            .await
        {
            Ok(claims) => {
                unanswered = false;
                if let Err(requirement) = crate::policy::check_requirements(&require, &claims) {
                    tracing::info!(%requirement, "an upgraded connection's bearer token no longer meets its route's requirements: closed");
                    return;
                }
            }
            Err(error @ (CredentialError::Provider(_) | CredentialError::TooManyRefused)) => {
                if !unanswered {
                    tracing::warn!(%error, "the bearer token of an upgraded connection could not be checked; it stays open");
                }
                unanswered = true;
                skipped = UNANSWERED_SKIPS;
            }
            Err(CredentialError::Token(error)) => {
                tracing::info!(%error, "an upgraded connection's bearer token is no longer accepted: closed");
                return;
            }
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
