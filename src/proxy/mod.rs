//! Role 2, the authenticating reverse proxy (SPEC §5): route → strip client identity headers
//! → identity (session cookie, bearer token) → `on_unauthenticated` → requirements → identity
//! headers → forward. Every request the public listener does not answer itself comes here.

pub mod budget;
pub mod connect;
pub mod forward;
pub mod headers;
mod identity_headers;
pub mod lasting;
pub mod pool;
pub mod routes;
mod unanswered;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::clock::Clock;
use crate::config::{OnUnauthenticated, RouteConfig};
use crate::http::canonical::{canonical_path, request_host};
use crate::http::forwarded::{ClientAddress, RequestBases, is_trusted};
use crate::http::rejection::{Refusal, Rejection, append_set_cookies};
use crate::identity::{
    BearerTokens, Credential, Identity, IdentityError, SessionSource, authenticate_traced,
    other_tokens::{Reaching, check_other_tokens, other_tokens},
};
use crate::logging::decision::Decision as DecisionLine;
use crate::login::LoginFlow;
use crate::login::redirect::validate_redirect;
use crate::metrics::Metrics;
use crate::oidc::Providers;
use crate::policy::Trace;
use crate::session::CookieAttributes;
use forward::ForwardedFor;
use unanswered::Unanswered;

/// What the proxy uses, built once by the wiring.
pub struct ProxyState {
    /// The `[[route]]`s.
    pub routes: routes::RouteTable,
    /// Providers by name (a route names its provider).
    pub providers: Arc<Providers>,
    /// Where session cookies are read.
    pub sessions: SessionSource,
    /// Starts logins and ends sessions (`/logout`).
    pub login: Arc<LoginFlow>,
    /// The external base URL of each request.
    pub bases: Arc<RequestBases>,
    /// `server.trusted_proxies`.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `session.cookie_name`: Tollgate's cookies never go upstream.
    pub cookie_name: String,
    /// Wall-clock time.
    pub clock: Arc<dyn Clock>,
    /// `server.leeway` in seconds: a token is valid until `exp` and this.
    pub leeway: i64,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The state a reload replaced this one with, once one did: an upgraded connection let in
    /// by this state is looked at by the latest one ([`ProxyState::latest_after`]).
    pub successor: Arc<std::sync::OnceLock<Arc<ProxyState>>>,
    /// The upstream connections HTTP/2 clients' streams may hold at once in the process (kept
    /// through reloads).
    pub upstream_budget: Arc<budget::UpstreamBudget>,
}

impl ProxyState {
    /// The live state after the reloads since the state whose `successor` slot this is:
    /// `None` while no reload replaced it.
    pub fn latest_after(slot: &std::sync::OnceLock<Arc<ProxyState>>) -> Option<Arc<ProxyState>> {
        let mut latest = slot.get()?.clone();
        while let Some(next) = latest.successor.get() {
            latest = next.clone();
        }
        Some(latest)
    }
}

/// The canonical host of a request and its route (SPEC §4.1): `Ok(None)` when no route
/// matches. `path` is the canonical path. `POST /admin/explain` chooses routes with this too.
///
/// # Errors
/// A `Host` that disagrees with the absolute-form target, or is malformed; a path that another
/// reading of it would give another route.
pub fn select_route<'a>(
    state: &'a ProxyState,
    host_header: Option<&[u8]>,
    authority: Option<&str>,
    path: &str,
) -> Result<Option<&'a RouteConfig>, Rejection> {
    let host = request_host(host_header, authority)
        .map_err(|error| Rejection::BadRequest(error.to_string()))?;
    let route = state.routes.find(host.as_deref(), path);
    // One route for whatever the application reads the path as (`/admin;x/users` is
    // `/admin/users` to Tomcat): a path that reads as another route's is refused.
    let readings = crate::http::canonical::other_readings(path);
    for reading in &readings {
        if !same_route(route, state.routes.find(host.as_deref(), reading)) {
            return Err(Rejection::BadRequest(
                "the path reads as another route's without its parameters or percent-encodings"
                    .to_owned(),
            ));
        }
    }
    // And without its format suffix (`/admin.json` is `/admin` to Rails), in any of them, when
    // that reading's route is the more specific: a route named after a file (`/robots.txt`)
    // keeps its path.
    let formats = readings
        .iter()
        .map(String::as_str)
        .chain([path])
        .filter_map(crate::http::canonical::without_format);
    for reading in formats {
        if let Some(other) = state.routes.find(host.as_deref(), reading)
            && !same_route(route, Some(other))
            && route.is_none_or(|route| more_specific(other, route))
        {
            return Err(Rejection::BadRequest(
                "the path reads as a more specific route's without its format suffix".to_owned(),
            ));
        }
    }
    Ok(route)
}

/// Whether `route` would be chosen over `than` for a path both match: named for the host, or
/// with the longer prefix (`Routes::find`).
fn more_specific(route: &RouteConfig, than: &RouteConfig) -> bool {
    (route.host.is_some(), route.path_prefix.len()) > (than.host.is_some(), than.path_prefix.len())
}

/// The proxy's entry point: every public request whose path is not one of Tollgate's own.
/// The route is chosen (and the request's span, when tracing is on, named after it) when this
/// is called; the future serves the request.
pub fn handle(
    state: &ProxyState,
    peer: SocketAddr,
    mut request: Request,
) -> Handled<'_, impl Future<Output = RouteResult> + Send + '_> {
    let route = match route_request(state, peer, &mut request) {
        Ok(route) => route,
        Err(response) => {
            return Handled::Refused {
                response: Some(response),
            };
        }
    };
    // Kept for the decision line (a reference count, no copy): the request goes upstream.
    let request_id = request.headers().get(&crate::http::X_REQUEST_ID).cloned();
    Handled::Serving {
        serving: serve_route(state, route, peer, request, request_id.clone()),
        state,
        route,
        request_id,
    }
}

pin_project_lite::pin_project! {
    /// A proxied request's future: its route's, then its decision line. Written out rather
    /// than `async`: a block awaiting the route's future would keep the request it was made
    /// from as well, and every proxied request's future is boxed (`public::Answer`).
    #[project = HandledProjection]
    pub enum Handled<'a, F> {
        Serving {
            #[pin]
            serving: F,
            state: &'a ProxyState,
            route: &'a RouteConfig,
            request_id: Option<HeaderValue>,
        },
        /// A request no route may serve, answered once.
        Refused { response: Option<Response> },
    }
}

impl<F: Future<Output = RouteResult>> Future for Handled<'_, F> {
    type Output = Response;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Response> {
        match self.project() {
            HandledProjection::Serving {
                serving,
                state,
                route,
                request_id,
            } => {
                let outcome = std::task::ready!(serving.poll(cx));
                std::task::Poll::Ready(decided(state, route, request_id.as_ref(), outcome))
            }
            HandledProjection::Refused { response } => std::task::Poll::Ready(
                response
                    .take()
                    .unwrap_or_else(|| Rejection::Internal.into_response()),
            ),
        }
    }
}

/// The answer to a served request, counted and written as its decision line.
fn decided(
    state: &ProxyState,
    route: &RouteConfig,
    request_id: Option<&HeaderValue>,
    outcome: RouteResult,
) -> Response {
    let line = unanswered::line(route, request_id);
    match outcome {
        Ok((response, result, credential)) => {
            state.metrics.request("proxy", result);
            crate::log_decision!(
                info,
                DecisionLine {
                    result,
                    credential,
                    ..line
                }
            );
            response
        }
        Err(refusal) => {
            crate::refused!(state.metrics, line = line, &refusal);
            refusal.into_response()
        }
    }
}

/// Makes `request` canonical (SPEC §4.1) and finds its route, from which the client's identity
/// headers are then removed; or the answer to a request no route may serve.
#[allow(
    clippy::result_large_err,
    reason = "made once per request and matched at once; boxing the answer costs an allocation"
)]
fn route_request<'a>(
    state: &'a ProxyState,
    peer: SocketAddr,
    request: &mut Request,
) -> Result<&'a RouteConfig, Response> {
    // Read before the target is rewritten to its canonical path (origin form): an absolute-form
    // target's host must still agree with `Host`.
    let authority = request.uri().authority().cloned();
    let version = request.version();
    // Every decision below, and the upstream, see the canonical request (SPEC §4.1).
    let path = match canonical_path(request.uri().path()) {
        Ok(std::borrow::Cow::Borrowed(_)) => None,
        Ok(std::borrow::Cow::Owned(path)) => Some(path),
        Err(error) => {
            return Err(refuse(
                state,
                Rejection::BadRequest(error.to_string()),
                request.headers(),
            ));
        }
    };
    if let Some(path) = path {
        // `/public/../admin` is handled, and forwarded, as `/admin`; the query goes as sent.
        let target = match request.uri().query() {
            Some(query) => format!("{path}?{query}"),
            None => path,
        };
        match target.parse::<axum::http::Uri>() {
            Ok(uri) => *request.uri_mut() = uri,
            Err(_) => {
                return Err(refuse(
                    state,
                    Rejection::BadRequest("invalid path".to_owned()),
                    request.headers(),
                ));
            }
        }
    }
    let route = crate::http::canonical::host_header(request.headers())
        .map_err(|error| Rejection::BadRequest(error.to_string()))
        .and_then(|host| {
            // RFC 9112 §3.2, as nginx answers it. (An HTTP/1.0 request may name no host, as
            // HAProxy's default health check does: with `public_url` set it takes a host-less
            // route, and is described upstream with no `X-Forwarded-Host`.)
            if host.is_none() && authority.is_none() && version >= axum::http::Version::HTTP_11 {
                return Err(Rejection::BadRequest(
                    "the request names no host (no Host header)".to_owned(),
                ));
            }
            select_route(
                state,
                host,
                authority.as_ref().map(|authority| authority.as_str()),
                request.uri().path(),
            )
        });
    // A trusted proxy's `X-Forwarded-Host` is the host the upstream is told (and the base of
    // redirects): it must choose the route `Host` chose, or an upstream that serves several
    // hosts by it would serve one host's pages under another's rules.
    let route = route.and_then(|route| {
        if state.routes.by_host() && is_trusted(peer.ip(), &state.trusted_proxies) {
            forwarded_host_agrees(state, route, request.headers(), request.uri().path())?;
        }
        Ok(route)
    });
    let route = match route {
        Ok(Some(route)) => route,
        Ok(None) => {
            let line = DecisionLine {
                role: "proxy",
                request_id: crate::http::request_id(request.headers()),
                ..DecisionLine::default()
            };
            crate::refused!(state.metrics, line = line, &NoRoute);
            return Err(crate::http::pages::not_found());
        }
        Err(rejection) => return Err(refuse(state, rejection, request.headers())),
    };
    crate::telemetry::with_current(|span| {
        span.route(request.method(), &route.path_prefix);
        if let Some(host) = &route.host {
            span.route_host(host);
        }
    });
    // Identity headers named by the route are removed before anything reads the request; only
    // `Authorization` survives on a route that accepts bearer tokens, as the credential itself,
    // and is replaced or removed before the request goes upstream.
    strip_client_identity_headers(&state.routes, route, request.headers_mut());
    Ok(route)
}

/// Whether two lookups chose the same route (or both none).
fn same_route(one: Option<&RouteConfig>, other: Option<&RouteConfig>) -> bool {
    match (one, other) {
        (Some(one), Some(other)) => std::ptr::eq(one, other),
        (one, other) => one.is_none() && other.is_none(),
    }
}

/// `Ok` when a trusted proxy's `X-Forwarded-Host` chooses `route` for `path` as `Host` did,
/// read the same way (canonical, and for every other reading of the path); `Err` when it
/// chooses another or is no host Tollgate can read (a spelling the base URL might still take:
/// `host:000443`, `host:`).
fn forwarded_host_agrees(
    state: &ProxyState,
    route: Option<&RouteConfig>,
    headers: &HeaderMap,
    path: &str,
) -> Result<(), Rejection> {
    // Read as the base URL reads it: an empty one is none (HAProxy sends one).
    let Some(forwarded) = crate::http::forwarded::forwarded_host(headers) else {
        return Ok(());
    };
    let host = headers.get(header::HOST).map(HeaderValue::as_bytes);
    forwarded_host_chooses(state, route, host, forwarded, path)
}

/// Whether the trusted `forwarded` host chooses `route`, the route the `Host` header `host`
/// chose for `path` ([`forwarded_host_agrees`]; an upgraded connection's looks ask it again
/// after a reload).
pub(super) fn forwarded_host_chooses(
    state: &ProxyState,
    route: Option<&RouteConfig>,
    host: Option<&[u8]>,
    forwarded: &str,
    path: &str,
) -> Result<(), Rejection> {
    // Most ingresses send on the `Host` they got: nothing to choose again.
    if host == Some(forwarded.as_bytes()) {
        return Ok(());
    }
    let other = select_route(state, Some(forwarded.as_bytes()), None, path).map_err(|_| {
        Rejection::BadRequest(
            "the trusted X-Forwarded-Host is no host, or reads as another route's".to_owned(),
        )
    })?;
    if same_route(route, other) {
        Ok(())
    } else {
        Err(Rejection::BadRequest(
            "Host and the trusted X-Forwarded-Host choose different routes".to_owned(),
        ))
    }
}

/// Whether an `Authorization` value is Basic credentials (RFC 7617): the scheme in any case,
/// white space, then standard base64 only. A token written after `Basic ` (a JWT has `.`, `-`,
/// `_`) is not, as an application that takes whatever follows the scheme would read it.
fn is_basic_scheme(value: &[u8]) -> bool {
    let value = value.trim_ascii();
    if value.len() < 7
        || !value[..5].eq_ignore_ascii_case(b"basic")
        || !matches!(value[5], b' ' | b'\t')
    {
        return false;
    }
    let credentials = value[6..].trim_ascii_start();
    let padding = credentials
        .iter()
        .rev()
        .take_while(|byte| **byte == b'=')
        .count();
    !credentials.is_empty()
        && padding <= 2
        && credentials[..credentials.len() - padding]
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'+' | b'/'))
}

/// Removes the identity headers of every route from the client's request
/// (`RouteTable::stripped_from_client`), and the route's own `Authorization` unless it accepts
/// bearer tokens (then it is the credential); where another route to the upstream passes it a
/// checked token, a client's `Authorization` other than `Basic` too.
pub fn strip_client_identity_headers(
    table: &routes::RouteTable,
    route: &RouteConfig,
    headers: &mut HeaderMap,
) {
    let (names, client_tokens) = table.stripped_from_client(route);
    headers::strip_identity_headers(headers, names.iter());
    if client_tokens
        && headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .any(|value| !is_basic_scheme(value.as_bytes()))
    {
        headers.remove(header::AUTHORIZATION);
    }
}

/// A request refused before a route was chosen: one log line, never the attacker's text.
fn refuse(state: &ProxyState, rejection: Rejection, headers: &HeaderMap) -> Response {
    let refusal = Refusal::from(rejection);
    let line = DecisionLine {
        role: "proxy",
        request_id: crate::http::request_id(headers),
        ..DecisionLine::default()
    };
    crate::refused!(state.metrics, line = line, &refusal);
    refusal.into_response()
}

/// No route serves the request's host and path: the not-found page, counted as `no_route`.
struct NoRoute;

impl crate::http::rejection::Refused for NoRoute {
    fn label(&self) -> &'static str {
        "no_route"
    }

    fn reason(&self) -> std::borrow::Cow<'_, str> {
        std::borrow::Cow::Borrowed("no route serves this host and path")
    }
}

/// The response, the decision's `result` label and, when an identity was established, its
/// credential; or the refusal.
type RouteResult = Result<(Response, &'static str, Option<&'static str>), Refusal>;

/// What a route does with a request, decided before anything is sent or started.
pub enum RouteDecision {
    /// `/logout`: end the session.
    Logout,
    /// A skip rule matched: forward without identity.
    Skip,
    /// Authenticated, every requirement holds: forward with these identity headers.
    Allow(Identity, identity_headers::Rendered),
    /// No credential, `on_unauthenticated = "pass"` or `"login_on_upstream_401"`: forward
    /// without identity (and, for the latter, start a login on the upstream's 401).
    Pass(OnUnauthenticated),
    /// No credential, a browser on a `login` route: start the login.
    Login,
}

/// The route's decision for a request (`method`, canonical `path`, `query`, `headers`) served
/// at `base`. The proxy acts on it; `POST /admin/explain` runs it with an explaining `trace`,
/// which records every step and changes nothing.
///
/// # Errors
/// The refusal and the reason for the log line.
#[allow(clippy::too_many_arguments)]
pub async fn decide_route(
    state: &ProxyState,
    route: &RouteConfig,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    base: &url::Url,
    client: ClientAddress<'_>,
    trace: &mut Trace,
) -> Result<RouteDecision, Refusal> {
    if path == "/logout" {
        trace.record("logout", "match", || {
            "`/logout` ends the session on every route".to_owned()
        });
        return Ok(RouteDecision::Logout);
    }
    let provider = state
        .providers
        .get(&route.provider)
        .ok_or_else(|| Refusal::new(Rejection::Internal, "route provider missing"))?;
    // Asked only of a request with a query.
    let believes_tokens = || state.routes.believes_tokens(route);
    // The path is canonical already (`handle`). A rule naming a method knows the method only
    // when neither the query nor a form body may name another (asked once, of the first such
    // rule; the override headers never go upstream).
    let mut known_method = None;
    for rule in &route.skip {
        let method_read = if rule.method.is_some() {
            *known_method.get_or_insert_with(|| {
                let overridden = query.is_some_and(crate::http::method_override_query)
                    || crate::http::method_override_body(method, headers);
                (!overridden).then_some(method)
            })
        } else {
            Some(method)
        };
        let skips = rule.skips(method_read, path);
        trace.record(
            "skip rule",
            if skips { "match" } else { "no_match" },
            || {
                format!(
                    "{}{} on {method} {path}",
                    rule.method
                        .as_ref()
                        .map_or_else(String::new, |method| format!("{method},")),
                    rule.pattern
                )
            },
        );
        if skips {
            // A skip's query goes upstream as sent: a token in it must be one Tollgate would
            // take (the route's application believes the tokens it is given here).
            if let Some(check) = check_query_tokens(
                &believes_tokens,
                provider,
                None,
                headers,
                query,
                client,
                trace,
            ) {
                check.await?;
            }
            return Ok(RouteDecision::Skip);
        }
    }
    let bearer_tokens = if route.accept_bearer {
        BearerTokens::Accepted
    } else {
        BearerTokens::Ignored
    };
    // RFC 6750 §2: one token, sent one way, so the upstream cannot read another one.
    if route.accept_bearer
        && let Some(reason) = crate::identity::ambiguous_credentials(headers, query, None)
    {
        trace.record("credentials", "fail", || reason.to_owned());
        return Err(Refusal::new(
            Rejection::InvalidRequest(reason.to_owned()),
            reason,
        ));
    }
    let identity = match authenticate_traced(
        headers,
        provider,
        state.sessions.access(CookieAttributes::for_base(base)),
        None,
        bearer_tokens,
        state.clock.now(),
        client,
        trace,
    )
    .await
    {
        Ok(identity) => identity,
        Err(IdentityError::Missing) => {
            if let Some(check) = check_query_tokens(
                &believes_tokens,
                provider,
                None,
                headers,
                query,
                client,
                trace,
            ) {
                check.await?;
            }
            return unauthenticated_decision(route, method, headers, trace);
        }
        // A credential that is present and invalid is refused, whatever the route allows; a
        // store or provider that cannot be reached refuses too.
        Err(error) => return Err(error.into()),
    };
    // The check is consumed within this block, so no borrow of the identity outlives it.
    let refused = {
        let check = check_query_tokens(
            &believes_tokens,
            provider,
            Some(&identity),
            headers,
            query,
            client,
            trace,
        );
        match check {
            Some(check) => check.await.err(),
            None => None,
        }
    };
    if let Some(refusal) = refused {
        return Err(refusal.with_cookies(identity.set_cookies));
    }
    crate::policy::check_requirements_traced(&route.require, &identity.claims, trace).map_err(
        |requirement| {
            let rejection = if identity.credential == crate::identity::Credential::Bearer {
                Rejection::InsufficientScope(requirement.clone())
            } else {
                Rejection::Forbidden(requirement.clone())
            };
            Refusal::new(rejection, requirement).with_cookies(identity.set_cookies.clone())
        },
    )?;
    // A session's headers as this thread rendered them last (not when explaining: the trace
    // records each header).
    let session = identity
        .session
        .as_ref()
        .filter(|_| identity.credential == Credential::SessionCookie && !trace.is_explaining());
    if let Some(session) = session
        && let Some(rendered) = identity_headers::rendered(state.routes.id(), route, session)
    {
        return Ok(RouteDecision::Allow(identity, rendered));
    }
    // Computed before anything goes upstream: a value that cannot be a header refuses the
    // request (as `/auth` does), never sends it on without that header.
    let mut identity_headers = Vec::new();
    for (name, source) in &route.headers {
        match identity_headers::header_value(&identity, source) {
            Ok(Some(value)) => {
                trace.record("identity header", "pass", || format!("`{name}` is sent"));
                identity_headers.push((name.clone(), value));
            }
            Ok(None) => trace.record("identity header", "none", || {
                format!("`{name}`: the identity has no value for it; not sent")
            }),
            Err(()) => {
                trace.record("identity header", "fail", || {
                    format!("`{name}`: the identity's value cannot be a header")
                });
                // The page and the log line say the same.
                let requirement = format!("{name}: a value a header can carry");
                return Err(
                    Refusal::new(Rejection::Forbidden(requirement.clone()), requirement)
                        .with_cookies(identity.set_cookies),
                );
            }
        }
    }
    let rendered: identity_headers::Rendered = identity_headers.into();
    if let Some(session) = session {
        identity_headers::remember(state.routes.id(), route, session, &rendered);
    }
    Ok(RouteDecision::Allow(identity, rendered))
}

/// On a route whose application believes the tokens it gets (`believes_tokens`: the route
/// accepts bearer tokens or sets `Authorization` itself, or another route to its application
/// passes it a checked one, so a client's `Authorization` is removed here), an `access_token` in the query goes upstream
/// with the request (Tollgate reads the `Authorization` header only, and removes it when it was
/// not the credential), on a skip rule's path too: it must be valid, and name the caller when
/// there is one. The check, when
/// there is one to make, boxed: almost no request has one, and its state is not a part of
/// every proxied request's future.
fn check_query_tokens<'a>(
    believes_tokens: impl FnOnce() -> bool,
    provider: &'a Arc<crate::oidc::Provider>,
    identity: Option<&'a Identity>,
    headers: &'a HeaderMap,
    query: Option<&str>,
    client: ClientAddress<'a>,
    trace: &'a mut Trace,
) -> Option<std::pin::Pin<Box<impl Future<Output = Result<(), Refusal>> + Send + 'a>>> {
    let query = query?;
    if !believes_tokens() {
        return None;
    }
    let queries = [std::borrow::Cow::Borrowed(query)];
    let reaching = Reaching {
        authorization: false,
        queries: &queries,
        token_cookie: None,
    };
    let others = other_tokens(
        headers,
        reaching,
        identity.map(|identity| identity.credential),
    );
    (!others.is_empty()).then(|| {
        Box::pin(check_other_tokens(
            provider, identity, others, client, trace,
        ))
    })
}

/// What `on_unauthenticated` makes of a request without a credential.
fn unauthenticated_decision(
    route: &RouteConfig,
    method: &Method,
    headers: &HeaderMap,
    trace: &mut Trace,
) -> Result<RouteDecision, Refusal> {
    let decision = match route.on_unauthenticated {
        OnUnauthenticated::Deny => Err(Refusal::new(Rejection::Unauthenticated, "no credential")),
        OnUnauthenticated::Login if crate::http::is_api_call(method, headers) => Err(Refusal::new(
            Rejection::Unauthenticated,
            "no credential (API call)",
        )),
        OnUnauthenticated::Login => Ok(RouteDecision::Login),
        pass @ (OnUnauthenticated::Pass | OnUnauthenticated::LoginOnUpstream401) => {
            Ok(RouteDecision::Pass(pass))
        }
    };
    trace.record("on_unauthenticated", "info", || {
        match (&route.on_unauthenticated, &decision) {
            (OnUnauthenticated::Deny, _) => "deny: no credential is refused".to_owned(),
            (OnUnauthenticated::Login, Err(_)) => {
                "login: no navigation is refused (not GET/HEAD, X-Requested-With, JSON wanted, \
                 Sec-Fetch-Mode other than navigate, or a prefetch: Sec-Purpose, Purpose)"
                    .to_owned()
            }
            (OnUnauthenticated::Login, Ok(_)) => {
                "login: a browser is sent to the provider to sign in".to_owned()
            }
            (OnUnauthenticated::Pass, _) => "pass: forwarded without identity".to_owned(),
            (OnUnauthenticated::LoginOnUpstream401, _) => {
                "login_on_upstream_401: forwarded without identity; a 401 from the upstream \
                 starts the login"
                    .to_owned()
            }
        }
    });
    decision
}

/// What the route does with `request`, and the upstream's answer. `request_id` (its
/// `X-Request-Id`) names it in the line written if its client leaves while it is upstream.
#[allow(
    clippy::manual_async_fn,
    reason = "an `async fn` would hold the request twice (its argument and a local)"
)]
fn serve_route<'a>(
    state: &'a ProxyState,
    route: &'a RouteConfig,
    peer: SocketAddr,
    request: Request,
    request_id: Option<HeaderValue>,
) -> impl Future<Output = RouteResult> + Send + 'a {
    async move {
        let request_id = request_id.as_ref();
        let base = state
            .bases
            .base(peer.ip(), request.headers())
            .ok_or_else(|| {
                (
                    Rejection::BadRequest("missing or invalid Host header".to_owned()),
                    "no base URL".to_owned(),
                )
            })?;
        let decision = decide_route(
            state,
            route,
            request.method(),
            request.uri().path(),
            request.uri().query(),
            request.headers(),
            &base,
            ClientAddress::new(peer.ip(), request.headers(), &state.trusted_proxies),
            &mut Trace::off(),
        )
        .await?;
        // Logging out and starting a login are boxed: rare, and their futures are larger than
        // a forwarded request's.
        match decision {
            RouteDecision::Logout => {
                let query = request.uri().query().map(str::to_owned);
                let (method, headers) = (request.method(), request.headers());
                Box::pin(logout(state, peer, method, headers, query.as_deref()))
                    .await
                    .map(|response| (response, "logout", None))
            }
            RouteDecision::Skip => {
                let exchange = send(state, route, peer, &base, request, Checked::Nothing)?;
                let unanswered = Unanswered::new(state, route, request_id, "skip", None);
                let answer = exchange.await;
                unanswered.answered();
                Ok((upstream_answer(state, route, answer)?, "skip", None))
            }
            RouteDecision::Allow(identity, identity_headers) => {
                crate::telemetry::with_current(|span| {
                    span.credential(identity.credential.as_str());
                });
                if identity.credential != Credential::Bearer
                    && crate::http::origin::websocket_from_another_host(
                        request.headers(),
                        Some(&base),
                    )
                {
                    let refusal = crate::http::origin::refusal();
                    return Err(refusal.with_cookies(identity.set_cookies));
                }
                // An upgrade lasts as long as what let it in (built only for one).
                let lasting = request
                    .headers()
                    .contains_key(axum::http::header::UPGRADE)
                    .then(|| {
                        let client = ClientAddress::new(
                            peer.ip(),
                            request.headers(),
                            &state.trusted_proxies,
                        )
                        .address();
                        // The canonical host and path chose `route` (`route_request`).
                        let host = crate::http::canonical::host_header(request.headers())
                            .ok()
                            .flatten();
                        let authority = request.uri().authority().map(|a| a.as_str());
                        let host = crate::http::canonical::request_host(host, authority)
                            .ok()
                            .flatten();
                        // A trusted proxy's `X-Forwarded-Host`, which the upstream is told,
                        // chose it too (`forwarded_host_agrees`).
                        let forwarded = is_trusted(peer.ip(), &state.trusted_proxies)
                            .then(|| crate::http::forwarded::forwarded_host(request.headers()))
                            .flatten();
                        let at = lasting::At {
                            route,
                            host: host.as_deref(),
                            forwarded,
                            path: request.uri().path(),
                        };
                        lasting::lasting(state, at, &identity, request.headers(), client)
                    })
                    .flatten();
                let checked = Checked::Identity(identity.credential, &identity_headers, lasting);
                // A refreshed session's cookie goes back whatever the answer. (The exchange is
                // taken out of `send`'s result before it is awaited: awaited inside a `match`
                // on that result, the future kept room for both.)
                let exchange = match send(state, route, peer, &base, request, checked) {
                    Ok(exchange) => exchange,
                    Err(refusal) => return Err(refusal.with_cookies(identity.set_cookies)),
                };
                let credential = Some(identity.credential.as_str());
                let unanswered = Unanswered::new(state, route, request_id, "allow", credential);
                let answer = exchange.await;
                unanswered.answered();
                let mut response = match upstream_answer(state, route, answer) {
                    Ok(response) => response,
                    Err(refusal) => return Err(refusal.with_cookies(identity.set_cookies)),
                };
                if identity.set_cookies.is_empty() {
                    let status = response.status();
                    headers::keep_out_of_shared_caches(status, response.headers_mut());
                } else {
                    append_set_cookies(&mut response, &identity.set_cookies);
                    // The refreshed session's cookie must never be stored by a shared cache
                    // and handed to someone else, whatever the upstream allowed.
                    let headers = response.headers_mut();
                    headers.insert(
                        axum::http::header::CACHE_CONTROL,
                        HeaderValue::from_static("private, no-store"),
                    );
                    // A CDN reads these before `Cache-Control`.
                    for name in crate::http::CDN_CACHE_CONTROLS {
                        headers.remove(name);
                    }
                }
                Ok((response, "allow", credential))
            }
            RouteDecision::Pass(OnUnauthenticated::LoginOnUpstream401) => {
                // Boxed: what it keeps until a 401 begins the login (the request's method and
                // headers, its return target, the line's guard) would make every forwarded
                // request's future larger.
                let served: RouteResult = Box::pin(async move {
                    // Seed 000: the request goes upstream as it is; only a 401 starts the login.
                    let provider = route_provider(state, route)?;
                    let method = request.method().clone();
                    let headers = request.headers().clone();
                    let target = return_target(&request);
                    let exchange = send(state, route, peer, &base, request, Checked::Nothing)?;
                    // Until the login is begun (its provider's metadata may be fetched first).
                    let unanswered = Unanswered::new(state, route, request_id, "pass", None);
                    let answer = exchange.await;
                    let response = match upstream_answer(state, route, answer) {
                        Ok(response) => response,
                        Err(refusal) => {
                            unanswered.answered();
                            return Err(refusal);
                        }
                    };
                    if response.status() != StatusCode::UNAUTHORIZED
                        || crate::http::is_api_call(&method, &headers)
                    {
                        unanswered.answered();
                        return Ok((response, "pass", None));
                    }
                    drop(response);
                    let login =
                        crate::login::begin_login(&state.login, provider, &base, &headers, target)
                            .await;
                    unanswered.answered();
                    Ok((login?, "login_redirect", None))
                })
                .await;
                served
            }
            RouteDecision::Pass(_) => {
                let exchange = send(state, route, peer, &base, request, Checked::Nothing)?;
                let unanswered = Unanswered::new(state, route, request_id, "pass", None);
                let answer = exchange.await;
                unanswered.answered();
                Ok((upstream_answer(state, route, answer)?, "pass", None))
            }
            RouteDecision::Login => {
                let provider = route_provider(state, route)?;
                let target = return_target(&request);
                let response = Box::pin(crate::login::begin_login(
                    &state.login,
                    provider,
                    &base,
                    request.headers(),
                    target,
                ))
                .await?;
                Ok((response, "login_redirect", None))
            }
        }
    }
}

fn route_provider<'a>(
    state: &'a ProxyState,
    route: &RouteConfig,
) -> Result<&'a std::sync::Arc<crate::oidc::Provider>, Refusal> {
    state
        .providers
        .get(&route.provider)
        .ok_or_else(|| Refusal::new(Rejection::Internal, "route provider missing"))
}

/// Where to return after login: the original path and query, relative, so it stays on this
/// host; the path alone when the query is refused (`?q=a%20b` decodes to white space), else `/`.
fn return_target(request: &Request) -> String {
    let uri = request.uri();
    let target = uri.path_and_query().map_or("/", |value| value.as_str());
    validate_redirect(target, &[])
        .or_else(|_| validate_redirect(uri.path(), &[]))
        .unwrap_or_else(|_| "/".to_owned())
}

async fn logout(
    state: &ProxyState,
    peer: SocketAddr,
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Response, Refusal> {
    let rd = url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(name, _)| name == "rd")
        .map(|(_, value)| value.into_owned());
    crate::login::end_session(
        &state.login,
        peer,
        method,
        headers,
        Some(crate::login::RedirectQuery { rd }),
    )
    .await
    .map_err(Refusal::from)
}

/// What Tollgate checked of a request it forwards.
enum Checked<'a> {
    /// Nothing: a `skip` rule or a `pass` without a credential.
    Nothing,
    /// The credential that identified the caller, the identity headers it gives, and, for an
    /// upgrade, how long the upgraded connection may last.
    Identity(
        Credential,
        &'a [(HeaderName, HeaderValue)],
        Option<lasting::Lasting>,
    ),
}

/// Adds identity headers (and, when tracing, the span's `traceparent` in place of the
/// client's), removes Tollgate's cookies, and makes the request ready for the upstream; the
/// future it returns sends it. On a route that accepts bearer tokens, the client's
/// `Authorization` goes upstream only when it was the credential Tollgate checked: an upstream
/// reading the token must never get one that Tollgate did not validate.
fn send<'a>(
    state: &'a ProxyState,
    route: &'a RouteConfig,
    peer: SocketAddr,
    base: &url::Url,
    mut request: Request,
    checked: Checked<'_>,
) -> Result<impl Future<Output = Result<Response, forward::ForwardError>> + Send + 'a, Refusal> {
    if !hyper::body::Body::is_end_stream(request.body())
        && !forward::chunked_only(request.headers())
    {
        // The body arrives decoded of `chunked` only: sent on without its other codings, the
        // upstream would read gzip bytes as the body itself.
        return Err(Refusal::new(
            Rejection::BadRequest("unsupported Transfer-Encoding".to_owned()),
            "a Transfer-Encoding other than chunked",
        ));
    }
    headers::strip_tollgate_cookies(request.headers_mut(), &state.cookie_name);
    headers::strip_identity_headers(
        request.headers_mut(),
        state.routes.stripped_before_sending(route).iter(),
    );
    if route.accept_bearer && !matches!(checked, Checked::Identity(Credential::Bearer, ..)) {
        request.headers_mut().remove(header::AUTHORIZATION);
    }
    let (identity_headers, lasting) = match checked {
        Checked::Identity(_, identity_headers, lasting) => {
            // A signed-in caller's stream (gRPC, Connect) goes on to its upstream: only its
            // stalls cut its body off now, not the minimum rate. Never an anonymous one's (a
            // `pass` or `skip` request could claim a stream's content type to trickle).
            if let Some(exemption) = request
                .extensions()
                .get::<crate::http::stalled_body::StreamExemption>()
            {
                exemption.grant();
            }
            (identity_headers, lasting)
        }
        Checked::Nothing => (&[][..], None),
    };
    let add_identity = |headers: &mut HeaderMap| {
        for (name, value) in identity_headers {
            headers.insert(name.clone(), value.clone());
        }
        crate::telemetry::with_current(|span| span.propagate(headers));
    };
    let trusted = is_trusted(peer.ip(), &state.trusted_proxies);
    let chain = trusted
        .then(|| forwarded_chain(request.headers()))
        .flatten();
    let (proto, host) = state.bases.forwarded(peer.ip(), request.headers(), base);
    let forwarded = ForwardedFor {
        peer,
        trusted_chain: chain.as_deref(),
        peer_trusted: trusted,
        proto,
        host: host.as_deref(),
    };
    // An HTTP/1 client has one request in flight on its connection, so one upstream
    // connection at a time; an HTTP/2 client's streams each draw on the process's budget.
    let budget =
        (request.version() == axum::http::Version::HTTP_2).then_some(&state.upstream_budget);
    let outbound = forward::prepare(route, request, &forwarded, add_identity, lasting)
        .map_err(|error| upstream_refusal(route, error))?;
    Ok(forward::exchange(route, budget, outbound))
}

/// A trusted proxy's `X-Forwarded-For` chain, all its headers in order as one list (the way
/// [`crate::http::forwarded::client_address`] reads it); `None` without one, or when one is not
/// text.
fn forwarded_chain(headers: &HeaderMap) -> Option<String> {
    let mut values = headers
        .get_all(&crate::http::forwarded::X_FORWARDED_FOR)
        .iter();
    let mut chain = values.next()?.to_str().ok()?.to_owned();
    for value in values {
        let value = value.to_str().ok()?.trim();
        if !value.is_empty() {
            if !chain.trim().is_empty() {
                chain.push_str(", ");
            }
            chain.push_str(value);
        }
    }
    Some(chain)
}

/// The upstream's response, or the refusal for why there is none.
fn upstream_answer(
    state: &ProxyState,
    route: &RouteConfig,
    answer: Result<Response, forward::ForwardError>,
) -> Result<Response, Refusal> {
    let mut response = answer.map_err(|error| upstream_refusal(route, error))?;
    if headers::strip_tollgate_set_cookies(response.headers_mut(), &state.cookie_name) {
        tracing::warn!(upstream = %route.upstream, "the upstream set one of Tollgate's own cookies; removed");
    }
    if headers::keep_tollgate_cookies_from_clear_site_data(response.headers_mut()) {
        tracing::warn!(upstream = %route.upstream, "the upstream's Clear-Site-Data would clear Tollgate's cookies; \"cookies\" removed (clear the application's own with Set-Cookie)");
    }
    Ok(response)
}

/// A request that got no response from its upstream: logged once, with the decision, naming
/// the upstream and why.
fn upstream_refusal(route: &RouteConfig, error: forward::ForwardError) -> Refusal {
    let reason = format!("{error} ({})", route.upstream);
    match error {
        forward::ForwardError::TimedOut => Refusal::new(Rejection::UpstreamTimeout, reason),
        forward::ForwardError::Unavailable(_) => {
            Refusal::new(Rejection::UpstreamUnavailable, reason)
        }
    }
}

#[cfg(test)]
mod tests {
    /// The size of what the closure returns, found without calling it.
    fn size_of_output<F>(_: impl FnOnce() -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every proxied request's future is boxed and moved whole (`public::Answer`), so the rare
    /// paths are boxed where they are taken: the pool's HTTP/2 and new-connection sends, a
    /// login, a logout. Inline, the pool's send was 920 bytes and the request's future 2 264.
    /// What writes the line of a request whose client left while it was upstream
    /// (`Unanswered`, and its copy of the request id) takes 64.
    #[test]
    #[allow(unreachable_code, clippy::diverging_sub_expression)]
    fn a_proxied_request_future_carries_no_rare_path() {
        let send = size_of_output(|| {
            super::pool::send(
                unreachable!(),
                unreachable!(),
                unreachable!(),
                unreachable!(),
            )
        });
        assert!(send <= 640, "the pool's send future is {send} bytes");
        let handle =
            size_of_output(|| super::handle(unreachable!(), unreachable!(), unreachable!()));
        assert!(
            handle <= 1664,
            "a proxied request's future is {handle} bytes"
        );
    }
}
