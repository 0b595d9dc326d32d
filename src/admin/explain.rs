//! `POST /admin/explain` (SPEC §8): what Tollgate would answer a described request, and why.
//! The answer comes from the decision code real requests run (`forward_auth::decide_auth`,
//! `proxy::select_route` and `proxy::decide_route`) with an explaining `Trace`: every step is
//! recorded, nothing is changed (no session touched or refreshed, no login started, no request
//! counted), and no token or cookie value is echoed.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::forward_auth::{ForwardAuthState, Outcome, decide_auth};
use crate::http::canonical::canonical_path;
use crate::http::forwarded::{ClientAddress, OriginalRequest, is_host, raw_path_of_absolute};
use crate::http::rejection::Rejection;
use crate::policy::{Step, Trace};
use crate::proxy::{
    ProxyState, RouteDecision, decide_route, select_route, strip_client_identity_headers,
};
use crate::public::PublicService;
use crate::secret::Secret;

/// What `POST /admin/explain` uses: the decision code's own sub-states, and the public
/// listener (which paths it answers itself).
pub struct ExplainState {
    /// `server.admin_token`.
    pub admin_token: Option<Secret<String>>,
    /// `/auth`'s decision.
    pub forward_auth: Arc<ForwardAuthState>,
    /// The routes' decision.
    pub proxy: Arc<ProxyState>,
    /// The public listener.
    pub public: PublicService,
    /// `server.public_url`.
    pub public_url: Option<Url>,
}

/// The largest explain request read; a larger one is 413.
const MAX_BODY: usize = 64 * 1024;

/// The described request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExplainRequest {
    /// Default `GET`.
    method: Option<String>,
    /// Absolute `http` or `https` URL, as the client asked for it.
    url: String,
    /// Header name → value, or a list of values for a header sent more than once.
    #[serde(default)]
    headers: BTreeMap<String, HeaderValues>,
    /// Present: a forward-auth decision under this `/auth` query; absent: the route's.
    auth_query: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum HeaderValues {
    One(String),
    Many(Vec<String>),
}

/// The answer.
#[derive(Debug, Serialize)]
struct Explanation {
    /// `allow`, `skip`, `unauthenticated`, `forbidden`, `bad_request`, and beyond SPEC §8's
    /// list: `not_found` (no route), `logout` (`/logout` on a route), `unavailable` (provider
    /// or session store), `error`.
    decision: &'static str,
    /// The status Tollgate would answer; `null` when the request would be forwarded (the
    /// upstream answers).
    status: Option<u16>,
    /// 0-based `[[route]]` index, for route decisions.
    route: Option<usize>,
    /// The refusal's reason: the text of the 403 page and of the decision log line.
    reason: Option<String>,
    steps: Vec<Step>,
}

/// A described request that cannot be explained: refused as the admin API's (its count and
/// its log line), answered with a JSON `error` naming the problem.
fn client_error(state: &ExplainState, status: StatusCode, message: impl Into<String>) -> Response {
    super::refuse(
        &state.forward_auth.metrics,
        super::AdminRefusal::Unexplainable {
            status,
            message: message.into(),
        },
    )
}

/// Whether a body's read failed for its length (past [`MAX_BODY`]), not for its connection.
fn is_too_long(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = source {
        if error.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// `POST /admin/explain`.
pub async fn explain(
    axum::extract::State(state): axum::extract::State<Arc<ExplainState>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    request: axum::extract::Request,
) -> Response {
    if let Err(refusal) = super::check_token(state.admin_token.as_ref(), request.headers()) {
        return super::refuse(&state.forward_auth.metrics, refusal);
    }
    let body = match axum::body::to_bytes(request.into_body(), MAX_BODY).await {
        Ok(body) => body,
        Err(error) if is_too_long(&error) => {
            return client_error(
                &state,
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than {MAX_BODY} bytes"),
            );
        }
        // Ended before its length (the client went away, or the connection was cut off as
        // too slow): not too large, and not read.
        Err(_) => {
            return client_error(
                &state,
                StatusCode::BAD_REQUEST,
                "the request body could not be read whole",
            );
        }
    };
    // An unknown top-level field is named only when it looks like a name: a header line pasted
    // there (`"Authorization: Bearer …": ""`) is a field whose name holds the token, which
    // serde's text would quote whole.
    if let Ok(fields) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&body)
        && let Some(unknown) = fields.keys().find(|name| !FIELDS.contains(&name.as_str()))
    {
        let said = if is_a_field_name(unknown) {
            format!(
                "unknown field `{unknown}`, expected one of {}",
                FIELDS.join(", ")
            )
        } else {
            "an unknown field (its name is not repeated: it is not a word; headers go in \
             `headers`)"
                .to_owned()
        };
        return client_error(
            &state,
            StatusCode::BAD_REQUEST,
            format!("invalid explain request: {said}"),
        );
    }
    let described: ExplainRequest = match serde_json::from_slice(&body) {
        Ok(described) => described,
        Err(error) => {
            // serde's text names a missing field, or quotes the value it could not take, which
            // may be a cookie or a token of the described request: only the first is repeated
            // (unknown fields were looked at above).
            let message = error.to_string();
            let said = if message.starts_with("missing field") {
                message
            } else {
                let kind = match error.classify() {
                    serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                        "not JSON"
                    }
                    serde_json::error::Category::Data | serde_json::error::Category::Io => {
                        "a value of the wrong type (see the README for the shape)"
                    }
                };
                format!("{kind} at line {} column {}", error.line(), error.column())
            };
            return client_error(
                &state,
                StatusCode::BAD_REQUEST,
                format!("invalid explain request: {said}"),
            );
        }
    };
    let parsed = match parse(&described) {
        Ok(parsed) => parsed,
        Err(message) => return client_error(&state, StatusCode::BAD_REQUEST, message),
    };
    let explanation = match &described.auth_query {
        Some(query) => {
            if state.forward_auth.forward_auth().is_none() {
                return client_error(
                    &state,
                    StatusCode::BAD_REQUEST,
                    "`auth_query` asks for a forward-auth decision, but forward_auth is not enabled",
                );
            }
            explain_forward_auth(&state.forward_auth, &parsed, query, peer.ip()).await
        }
        None => {
            // The public listener answers its own paths itself: no route sees them.
            let path = parsed.raw_path.split(['?', '#']).next().unwrap_or("/");
            let host = parsed.headers.get(header::HOST).map_or_else(
                || parsed.url[url::Position::BeforeHost..url::Position::AfterPort].to_owned(),
                |host| String::from_utf8_lossy(host.as_bytes()).into_owned(),
            );
            if state.public.answers_itself(Some(host.as_bytes()), path) {
                return client_error(
                    &state,
                    StatusCode::BAD_REQUEST,
                    format!(
                        "`{path}` is one of Tollgate's own endpoints, not a route's: describe \
                         the request an ingress asks /auth about with `auth_query`, or a path a \
                         route serves"
                    ),
                );
            }
            if state.proxy.routes.is_empty() {
                return client_error(
                    &state,
                    StatusCode::BAD_REQUEST,
                    "no [[route]] is configured: give `auth_query` for a forward-auth decision",
                );
            }
            explain_route(&state.proxy, state.public_url.as_ref(), parsed, peer.ip()).await
        }
    };
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(explanation),
    )
        .into_response()
}

/// The described request, checked.
struct Described {
    method: Method,
    url: Url,
    /// Path and query exactly as written in `url` (a URL parser would resolve `..`).
    raw_path: String,
    headers: HeaderMap,
}

/// The top-level fields of an explain request.
const FIELDS: [&str; 4] = ["method", "url", "headers", "auth_query"];

/// Whether an unknown field's name may be repeated: at most 24 lower-case letters and `_`, as
/// the fields are, which a value (a token, a cookie) pasted as a name is not.
fn is_a_field_name(name: &str) -> bool {
    (1..=24).contains(&name.len())
        && name
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte == b'_')
}

fn parse(described: &ExplainRequest) -> Result<Described, String> {
    let method = match &described.method {
        None => Method::GET,
        Some(text) => Method::from_bytes(text.as_bytes())
            .map_err(|_| "`method` is not an HTTP method".to_owned())?,
    };
    let url = Url::parse(&described.url)
        .ok()
        .filter(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
        .ok_or("`url` must be an absolute http or https URL")?;
    let raw_path = match raw_path_of_absolute(&described.url) {
        Some(raw_path) => raw_path,
        // `https://app.example.com`: the root.
        None if is_host(described.url.split_once("://").map_or("", |(_, rest)| rest)) => {
            "/".to_owned()
        }
        None => return Err("`url` must be a plain host[:port] and a path".to_owned()),
    };
    let mut headers = HeaderMap::new();
    for (name, values) in &described.headers {
        let header_name = HeaderName::from_bytes(name.as_bytes())
            // The name is not quoted: a header line pasted whole as a name carries its value.
            .map_err(|_| {
                "a name in `headers` is not a valid header name (put the value on its right)"
                    .to_owned()
            })?;
        let values = match values {
            HeaderValues::One(value) => std::slice::from_ref(value),
            HeaderValues::Many(values) => values.as_slice(),
        };
        for value in values {
            // The value is never echoed: it may be a token or a cookie.
            let value = HeaderValue::from_str(value)
                .map_err(|_| format!("the value of header `{name}` cannot be a header value"))?;
            headers.append(header_name.clone(), value);
        }
    }
    Ok(Described {
        method,
        url,
        raw_path,
        headers,
    })
}

/// The decision label and status of a refusal.
fn refused(rejection: &Rejection) -> (&'static str, u16) {
    let decision = match rejection {
        Rejection::BadRequest(_) | Rejection::InvalidRequest(_) => "bad_request",
        Rejection::Unauthenticated | Rejection::InvalidToken => "unauthenticated",
        Rejection::Forbidden(_) | Rejection::InsufficientScope(_) => "forbidden",
        Rejection::ProviderUnavailable
        | Rejection::StoreUnavailable
        | Rejection::UpstreamUnavailable
        | Rejection::UpstreamTimeout => "unavailable",
        Rejection::TooManyRequests(_) => "rate_limited",
        Rejection::Internal => "error",
    };
    (decision, rejection.status().as_u16())
}

/// The client an explanation's provider questions count against (`introspection_gate`): the
/// admin API's caller, whatever `X-Forwarded-For` the described request holds.
fn asker(peer: IpAddr, headers: &HeaderMap) -> ClientAddress<'_> {
    ClientAddress::new(peer, headers, &[])
}

async fn explain_forward_auth(
    state: &ForwardAuthState,
    described: &Described,
    query: &str,
    peer: IpAddr,
) -> Explanation {
    // The described request is the original request an ingress asks about.
    let original = OriginalRequest {
        method: Some(described.method.clone()),
        url: Some(described.url.clone()),
        raw_path: Some(described.raw_path.clone()),
    };
    let mut trace = Trace::explaining();
    let outcome = decide_auth(
        state,
        &described.headers,
        query,
        Some(&original),
        asker(peer, &described.headers),
        &mut trace,
    )
    .await;
    let (decision, status, reason) = match outcome {
        Outcome::Allow(..) => ("allow", 200, None),
        Outcome::Skip => ("skip", 200, None),
        Outcome::Redirect(_) => ("unauthenticated", 302, None),
        Outcome::Reject(refusal) => {
            let (decision, status) = refused(&refusal.rejection);
            (decision, status, Some(refusal.reason))
        }
    };
    Explanation {
        decision,
        status: Some(status),
        route: None,
        reason,
        steps: trace.into_steps(),
    }
}

async fn explain_route(
    state: &ProxyState,
    public_url: Option<&Url>,
    mut described: Described,
    peer: IpAddr,
) -> Explanation {
    let mut trace = Trace::explaining();
    let bad_request = |mut trace: Trace, reason: String| {
        trace.record("request", "fail", || reason.clone());
        Explanation {
            decision: "bad_request",
            status: Some(400),
            route: None,
            reason: Some(reason),
            steps: trace.into_steps(),
        }
    };
    let (raw_path, query) = match described.raw_path.split_once('?') {
        Some((path, query)) => (path, Some(query.split('#').next().unwrap_or(query))),
        None => (described.raw_path.as_str(), None),
    };
    let path = match canonical_path(raw_path) {
        Ok(path) => path.into_owned(),
        Err(error) => return bad_request(trace, error.to_string()),
    };
    if path != raw_path {
        trace.record("path", "info", || {
            format!("handled, and forwarded, as the canonical path {path}")
        });
    }
    let authority = &described.url[url::Position::BeforeHost..url::Position::AfterPort];
    let route = select_route(
        state,
        described
            .headers
            .get(header::HOST)
            .map(HeaderValue::as_bytes),
        Some(authority),
        &path,
    );
    let route = match route {
        Ok(Some(route)) => route,
        Ok(None) => {
            trace.record("route", "none", || {
                format!("no [[route]] matches host {authority} and path {path}")
            });
            return Explanation {
                decision: "not_found",
                status: Some(404),
                route: None,
                reason: Some("no route".to_owned()),
                steps: trace.into_steps(),
            };
        }
        Err(rejection) => return bad_request(trace, rejection.to_string()),
    };
    let index = state.routes.index_of(route);
    trace.record("route", "match", || {
        format!(
            "route[{}]: host {}, path_prefix {}, provider `{}`",
            index.map_or_else(|| "?".to_owned(), |index| index.to_string()),
            route.host.as_deref().unwrap_or("(any)"),
            route.path_prefix,
            route.provider
        )
    });
    strip_client_identity_headers(&state.routes, route, &mut described.headers);
    let base = public_url.cloned().unwrap_or_else(|| described.url.clone());
    let decision = decide_route(
        state,
        route,
        &described.method,
        &path,
        query,
        &described.headers,
        &base,
        asker(peer, &described.headers),
        &mut trace,
    )
    .await;
    let (decision, status, reason) = match decision {
        Ok(RouteDecision::Allow(..) | RouteDecision::Pass(_)) => ("allow", None, None),
        Ok(RouteDecision::Skip) => ("skip", None, None),
        Ok(RouteDecision::Login) => ("unauthenticated", Some(302), None),
        // 200 when the user is asked first ("Sign out?").
        Ok(RouteDecision::Logout) => {
            let own = crate::login::signout_confirm::is_the_users_own(
                &described.method,
                &described.headers,
            );
            ("logout", Some(if own { 302 } else { 200 }), None)
        }
        Err(refusal) => {
            let (decision, status) = refused(&refusal.rejection);
            (decision, Some(status), Some(refusal.reason))
        }
    };
    Explanation {
        decision,
        status,
        route: index,
        reason,
        steps: trace.into_steps(),
    }
}
