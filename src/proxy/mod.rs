//! Role 2, the authenticating reverse proxy (SPEC §5): route → strip client identity headers
//! → identity (session cookie, bearer token) → `on_unauthenticated` → requirements → identity
//! headers → forward. Every request the public listener does not answer itself comes here.

pub mod forward;
pub mod headers;
pub mod pool;
pub mod routes;

use std::net::SocketAddr;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use crate::app::AppState;
use crate::config::{HeaderSource, OnUnauthenticated, RouteConfig};
use crate::http::canonical::{canonical_path, request_host};
use crate::http::forwarded::is_trusted;
use crate::http::rejection::Rejection;
use crate::identity::{BearerTokens, Identity, IdentityError, authenticate};
use crate::login::redirect::validate_redirect;
use forward::{ForwardedFor, forward};

/// The proxy's entry point: every public request whose path is not one of Tollgate's own.
pub async fn handle(state: &AppState, peer: SocketAddr, mut request: Request) -> Response {
    // Every decision below, and the upstream, see the canonical request (SPEC §4.1).
    let host = request_host(
        request
            .headers()
            .get(header::HOST)
            .map(HeaderValue::as_bytes),
        request
            .uri()
            .authority()
            .map(|authority| authority.as_str()),
    );
    let host = match host {
        Ok(host) => host.map(std::borrow::Cow::into_owned),
        Err(error) => return refuse(state, Rejection::BadRequest(error.to_string())),
    };
    let path = match canonical_path(request.uri().path()) {
        Ok(std::borrow::Cow::Borrowed(_)) => None,
        Ok(std::borrow::Cow::Owned(path)) => Some(path),
        Err(error) => return refuse(state, Rejection::BadRequest(error.to_string())),
    };
    if let Some(path) = path {
        // `/public/../admin` is handled, and forwarded, as `/admin`; the query goes as sent.
        let target = match request.uri().query() {
            Some(query) => format!("{path}?{query}"),
            None => path,
        };
        match target.parse::<axum::http::Uri>() {
            Ok(uri) => *request.uri_mut() = uri,
            Err(_) => return refuse(state, Rejection::BadRequest("invalid path".to_owned())),
        }
    }
    let Some(route) = state.routes.find(host.as_deref(), request.uri().path()) else {
        state.metrics.request("proxy", "no_route");
        return crate::http::pages::not_found();
    };
    // Identity headers named by the route are removed before anything reads the request; only
    // `Authorization` survives on a route that accepts bearer tokens, as the credential itself,
    // and is replaced or removed before the request goes upstream.
    let identity_headers = route
        .headers
        .iter()
        .map(|(name, _)| name)
        .filter(|name| !(route.accept_bearer && *name == header::AUTHORIZATION));
    headers::strip_identity_headers(request.headers_mut(), identity_headers);
    let outcome = serve_route(state, route, peer, request).await;
    match outcome {
        Ok((response, result)) => {
            state.metrics.request("proxy", result);
            response
        }
        Err((rejection, reason)) => {
            state.metrics.request("proxy", rejection.result_label());
            tracing::info!(role = "proxy", result = rejection.result_label(), reason = %reason, "decision");
            rejection.into_response()
        }
    }
}

/// A request refused before a route was chosen: one log line, never the attacker's text.
fn refuse(state: &AppState, rejection: Rejection) -> Response {
    state.metrics.request("proxy", rejection.result_label());
    tracing::info!(role = "proxy", result = rejection.result_label(), reason = %rejection, "decision");
    rejection.into_response()
}

type RouteResult = Result<(Response, &'static str), (Rejection, String)>;

async fn serve_route(
    state: &AppState,
    route: &RouteConfig,
    peer: SocketAddr,
    request: Request,
) -> RouteResult {
    let base = state
        .request_base(peer.ip(), request.headers())
        .ok_or_else(|| {
            (
                Rejection::BadRequest("missing or invalid Host header".to_owned()),
                "no base URL".to_owned(),
            )
        })?;
    if request.uri().path() == "/logout" {
        let query = request.uri().query().map(str::to_owned);
        return logout(state, peer, request.headers(), query.as_deref())
            .await
            .map(|response| (response, "logout"));
    }
    // The path is canonical already (`handle`).
    let skipped = route
        .skip
        .iter()
        .any(|rule| rule.skips(Some(request.method()), request.uri().path()));
    if skipped {
        return send(state, route, peer, &base, request, None)
            .await
            .map(|response| (response, "skip"));
    }
    let provider = state
        .providers
        .get(&route.provider)
        .ok_or((Rejection::Internal, "route provider missing".to_owned()))?;
    let bearer_tokens = if route.accept_bearer {
        BearerTokens::Accepted
    } else {
        BearerTokens::Ignored
    };
    // RFC 6750 §2: one token, sent one way, so the upstream cannot read another one.
    if route.accept_bearer
        && let Some(reason) =
            crate::identity::ambiguous_credentials(request.headers(), request.uri().query())
    {
        return Err((
            Rejection::InvalidRequest(reason.to_owned()),
            reason.to_owned(),
        ));
    }
    let identity = match authenticate(
        request.headers(),
        provider,
        state.session_access(state.cookie_attributes(&base)),
        None,
        bearer_tokens,
        state.clock.now(),
    )
    .await
    {
        Ok(identity) => Some(identity),
        Err(IdentityError::Missing) => None,
        Err(IdentityError::StoreUnavailable(reason)) => {
            return Err((Rejection::StoreUnavailable, reason));
        }
        Err(IdentityError::ProviderUnavailable(reason)) => {
            return Err((Rejection::ProviderUnavailable, reason));
        }
        // A credential that is present and invalid is refused, whatever the route allows.
        Err(error @ IdentityError::Invalid { .. }) => {
            let rejection = if error.is_bearer_refusal() {
                Rejection::InvalidToken
            } else {
                Rejection::Unauthenticated
            };
            return Err((rejection, error.to_string()));
        }
    };
    let Some(identity) = identity else {
        return unauthenticated(state, route, provider, peer, &base, request).await;
    };
    crate::policy::check_requirements(&route.require, &identity.claims).map_err(|requirement| {
        let rejection = if identity.credential == crate::identity::Credential::Bearer {
            Rejection::InsufficientScope(requirement.clone())
        } else {
            Rejection::Forbidden(requirement.clone())
        };
        (rejection, requirement)
    })?;
    tracing::info!(
        role = "proxy",
        result = "allow",
        credential = identity.credential.as_str(),
        "decision"
    );
    let mut response = send(state, route, peer, &base, request, Some(&identity)).await?;
    for cookie in &identity.set_cookies {
        if let Ok(value) = HeaderValue::from_str(cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    Ok((response, "allow"))
}

async fn unauthenticated(
    state: &AppState,
    route: &RouteConfig,
    provider: &crate::oidc::Provider,
    peer: SocketAddr,
    base: &url::Url,
    request: Request,
) -> RouteResult {
    match route.on_unauthenticated {
        OnUnauthenticated::Deny => Err((Rejection::Unauthenticated, "no credential".to_owned())),
        OnUnauthenticated::Pass => send(state, route, peer, base, request, None)
            .await
            .map(|response| (response, "pass")),
        OnUnauthenticated::Login => {
            if crate::http::is_api_call(request.method(), request.headers()) {
                return Err((
                    Rejection::Unauthenticated,
                    "no credential (API call)".to_owned(),
                ));
            }
            let target = return_target(&request);
            let response = crate::login::begin_login(
                state,
                provider,
                base,
                request.headers(),
                target,
                "proxy",
            )
            .await?;
            Ok((response, "login_redirect"))
        }
        OnUnauthenticated::LoginOnUpstream401 => {
            // Seed 000: the request goes upstream as it is; only a 401 starts the login.
            let method = request.method().clone();
            let headers = request.headers().clone();
            let target = return_target(&request);
            let response = send(state, route, peer, base, request, None).await?;
            if response.status() != StatusCode::UNAUTHORIZED
                || crate::http::is_api_call(&method, &headers)
            {
                return Ok((response, "pass"));
            }
            let login =
                crate::login::begin_login(state, provider, base, &headers, target, "proxy").await?;
            Ok((login, "login_redirect"))
        }
    }
}

/// Where to return after login: the original path and query, relative, so it stays on this host.
fn return_target(request: &Request) -> String {
    let target = request
        .uri()
        .path_and_query()
        .map_or("/", |value| value.as_str());
    validate_redirect(target, &[]).unwrap_or_else(|_| "/".to_owned())
}

async fn logout(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Response, (Rejection, String)> {
    let rd = url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(name, _)| name == "rd")
        .map(|(_, value)| value.into_owned());
    crate::login::end_session(
        state,
        peer,
        headers,
        Some(crate::login::RedirectQuery { rd }),
    )
    .await
}

/// Adds identity headers, removes Tollgate's cookies, and forwards.
async fn send(
    state: &AppState,
    route: &RouteConfig,
    peer: SocketAddr,
    base: &url::Url,
    mut request: Request,
    identity: Option<&Identity>,
) -> Result<Response, (Rejection, String)> {
    headers::strip_tollgate_cookies(request.headers_mut(), &state.config.session.cookie_name);
    headers::strip_identity_headers(
        request.headers_mut(),
        route.headers.iter().map(|(name, _)| name),
    );
    // Computed before anything goes upstream: a value that cannot be a header refuses the
    // request (as `/auth` does), never sends it on without that header.
    let mut identity_headers = Vec::new();
    if let Some(identity) = identity {
        for (name, source) in &route.headers {
            match header_value(identity, source) {
                Ok(Some(value)) => identity_headers.push((name.clone(), value)),
                Ok(None) => {}
                Err(()) => {
                    let requirement = format!("{name}: a value a header can carry");
                    return Err((
                        Rejection::Forbidden(requirement),
                        format!("the identity's value for {name} cannot be a header"),
                    ));
                }
            }
        }
    }
    let add_identity = |headers: &mut HeaderMap| {
        for (name, value) in identity_headers {
            headers.insert(name, value);
        }
    };
    let trusted = is_trusted(peer.ip(), &state.config.server.trusted_proxies);
    let chain = trusted
        .then(|| {
            request
                .headers()
                .get(&crate::http::forwarded::X_FORWARDED_FOR)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        })
        .flatten();
    let forwarded = ForwardedFor {
        peer,
        trusted_chain: chain.as_deref(),
        peer_trusted: trusted,
        proto: base.scheme(),
        host: base
            .host_str()
            .map(|_| &base[url::Position::BeforeHost..url::Position::AfterPort]),
    };
    forward(route, request, forwarded, add_identity)
        .await
        .map_err(|error| {
            let reason = error.to_string();
            tracing::warn!(upstream = %route.upstream, %reason, "upstream failed");
            match error {
                forward::ForwardError::TimedOut => (Rejection::UpstreamTimeout, reason),
                forward::ForwardError::Unavailable(_) => (Rejection::UpstreamUnavailable, reason),
            }
        })
}

/// The value of one identity header: `Ok(None)` when the identity has nothing for it, `Err`
/// when its value holds characters a header cannot carry (CR, LF, NUL, …).
fn header_value(identity: &Identity, source: &HeaderSource) -> Result<Option<HeaderValue>, ()> {
    let Some(text) = header_text(identity, source) else {
        return Ok(None);
    };
    HeaderValue::from_maybe_shared(axum::body::Bytes::from(text))
        .map(Some)
        .map_err(|_| ())
}

fn header_text(identity: &Identity, source: &HeaderSource) -> Option<String> {
    let access_token = identity.access_token();
    Some(match source {
        HeaderSource::AccessToken => access_token?.to_owned(),
        HeaderSource::BearerAccessToken => format!("Bearer {}", access_token?),
        HeaderSource::IdToken => identity.session.as_ref()?.id_token.clone(),
        HeaderSource::UserinfoBase64 => base64::engine::general_purpose::STANDARD
            .encode(serde_json::to_vec(identity.claims.as_ref()).ok()?),
        HeaderSource::Claim(name) => crate::policy::header_text(identity.claims.get(name)?),
        HeaderSource::Json(path) => {
            let document = serde_json::Value::Object(identity.claims.as_ref().clone());
            let nodes = path.query(&document).all();
            if nodes.is_empty() {
                return None;
            }
            nodes
                .into_iter()
                .map(crate::policy::header_text)
                .collect::<Vec<_>>()
                .join(",")
        }
    })
}
