//! Envoy `ext_authz` over gRPC: `envoy.service.auth.v3.Authorization/Check` on
//! `forward_auth.grpc_listen`. The request Envoy describes in `attributes.request.http` is
//! decided as `/auth` decides it, under the rules in `context_extensions["rules"]` (an `/auth`
//! query string). Every Check gets a `CheckResponse`, refusals a `denied_response`, never a
//! failed RPC: Envoy takes a failed RPC for an authorization service that is down, and with
//! `failure_mode_allow: true` lets the request through. A Check without
//! `attributes.request.http` describes no request: 400 (`INVALID_ARGUMENT`); so is one with a
//! header that is not valid HTTP (Envoy forwards what it could not show Tollgate); malformed
//! rules: 400 naming the parameter, as `/auth` answers.
//!
//! Everything in a Check is what a proxy says about a request (its method, path, host,
//! headers, rules), so a Check is answered only for a peer in `server.trusted_proxies`, the
//! proxies whose `X-Original-*` / `X-Forwarded-*` and `X-Tollgate-Rules` the public listener
//! believes; any other peer's Check is refused, 403 (`PERMISSION_DENIED`). The peer is the TCP peer
//! (Envoy), never `attributes.source.address`. The client a Check counts against (the
//! introspection budget) is read as on the public listener: the Check's `X-Forwarded-For`,
//! believed from the trusted peer (Envoy appends the address it saw, with the recipe's
//! `use_remote_address`). The listener is served like the public one
//! (`http::serve::serve_on_workers`: its timeouts and `server.max_connections`).

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue as EnvoyHeader, HeaderValueOption};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{
    CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::rpc;

use crate::forward_auth::{ForwardAuthState, Outcome, decide_auth, outcome_response, report};
use crate::http::forwarded::{ClientAddress, OriginalRequest};
use crate::policy::Trace;

/// The `context_extensions` key holding the rules.
const RULES: &str = "rules";

/// The longest body of a denied answer read back from the HTTP answer it mirrors.
const MAX_DENIED_BODY: usize = 16 * 1024;

/// gRPC status codes (google.rpc.Code) the answers use.
mod code {
    pub const OK: i32 = 0;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const INTERNAL: i32 = 13;
    pub const UNAVAILABLE: i32 = 14;
    pub const UNAUTHENTICATED: i32 = 16;
}

/// Whether the peer of a Check is in `trusted_proxies`, as the connection's service found
/// it when the Check came (tonic hands a request's extensions on).
#[derive(Clone, Copy)]
struct PeerTrusted(bool);

/// The largest Check read: one describing a request head as large as Envoy passes on
/// (`max_request_headers_kb` is at most 8 MiB), whose path and host it carries twice (in
/// `headers` as `:path` and `:authority`, and as `path` and `host`). tonic's default, 4 MiB,
/// made a Check with larger headers a failed RPC, which Envoy with `failure_mode_allow: true`
/// lets through. Only a request body (`with_request_body`, which no decision reads) can make a
/// Check larger.
const MAX_CHECK_BYTES: usize = 24 * 1024 * 1024;

/// A gRPC message of no bytes: an empty `CheckRequest` (flag 0, length 0).
const EMPTY_MESSAGE: &[u8] = &[0, 0, 0, 0, 0];

/// The span name of a Check (OpenTelemetry's `<service>/<method>` for an RPC).
const CHECK_SPAN: &str = "envoy.service.auth.v3.Authorization/Check";

/// The Check service for one connection from `peer`, as a hyper service (gRPC over HTTP/2
/// with prior knowledge), for `http::serve::serve_on_workers`.
pub fn service(
    state: LiveState,
    peer: SocketAddr,
    body_timeout: std::time::Duration,
) -> impl hyper::service::Service<
    axum::http::Request<hyper::body::Incoming>,
    Response = Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<Response, std::convert::Infallible>> + Send + 'static,
> + Send
+ 'static {
    let live = state.clone();
    let server = AuthorizationServer::new(EnvoyCheck { state, peer })
        .max_decoding_message_size(MAX_CHECK_BYTES);
    hyper::service::service_fn(move |request: axum::http::Request<hyper::body::Incoming>| {
        // A peer outside `trusted_proxies` is answered without its message being read: tonic
        // reads a whole message (as long as its prefix says) before the Check runs, so any
        // peer could make each stream hold that much for as long as it trickles it. Its Check
        // is an empty one; the refusal does not look at it.
        let trusted = crate::http::forwarded::is_trusted(peer.ip(), &live().trusted_proxies);
        let mut request = request.map(|body| {
            if !trusted {
                return axum::body::Body::from(EMPTY_MESSAGE);
            }
            // A Check whose message stops coming is cut off, as on the public listener.
            axum::body::Body::new(crate::http::stalled_body::StallGuard::new(
                body,
                body_timeout,
                crate::http::stalled_body::Stalled::Client,
            ))
        });
        // Decided once: a reload between here and the Check must not read an untrusted
        // peer's empty message as a trusted Envoy's.
        request.extensions_mut().insert(PeerTrusted(trusted));
        let call = tower::ServiceExt::oneshot(server.clone(), request);
        async move {
            match call.await {
                Ok(response) => Ok(response.map(axum::body::Body::new)),
                Err(never) => match never {},
            }
        }
    })
}

/// Where each Check finds the forward-auth state live when it arrives (a reloaded config
/// answers the next Check).
pub type LiveState = Arc<dyn Fn() -> Arc<ForwardAuthState> + Send + Sync>;

/// The Check service over the forward-auth sub-state, for a connection from `peer`.
struct EnvoyCheck {
    state: LiveState,
    peer: SocketAddr,
}

#[tonic::async_trait]
impl Authorization for EnvoyCheck {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let state = (self.state)();
        // Set by `service` for every Check; a Check without it is not believed.
        let trusted = request
            .extensions()
            .get::<PeerTrusted>()
            .is_some_and(|trusted| trusted.0);
        let Some(telemetry) = &state.telemetry else {
            return check(&state, trusted, self.peer, request).await;
        };
        // A trusted Envoy's trace context comes in the call's metadata.
        let mut span = telemetry.begin(
            Cow::Borrowed(CHECK_SPAN),
            "forward_auth",
            &Method::POST,
            request.metadata().as_ref(),
            (trusted, true),
        );
        span.attribute("rpc.system", "grpc");
        span.attribute("rpc.service", "envoy.service.auth.v3.Authorization");
        span.attribute("rpc.method", "Check");
        crate::telemetry::within(span, check(&state, trusted, self.peer, request), |answer| {
            match answer {
                Ok(response) => answered_status(response.get_ref()),
                Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
            }
        })
        .await
    }
}

/// The HTTP status a Check answer makes Envoy give (200 when allowed).
fn answered_status(response: &CheckResponse) -> StatusCode {
    match &response.http_response {
        Some(HttpResponse::DeniedResponse(denied)) => denied
            .status
            .as_ref()
            .and_then(|status| u16::try_from(status.code).ok())
            .and_then(|code| StatusCode::from_u16(code).ok())
            .unwrap_or(StatusCode::FORBIDDEN),
        _ => StatusCode::OK,
    }
}

/// One Check from `peer` (`trusted` when it is in `server.trusted_proxies`).
async fn check(
    state: &ForwardAuthState,
    trusted: bool,
    peer: SocketAddr,
    request: tonic::Request<CheckRequest>,
) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
    let started = Instant::now();
    if !trusted {
        let reason = format!(
            "a Check from {}, which is not in server.trusted_proxies",
            peer.ip()
        );
        let outcome = Outcome::Reject(crate::http::rejection::Refusal::new(
            crate::http::rejection::Rejection::Forbidden(reason.clone()),
            reason,
        ));
        return Ok(refused(state, outcome, started).await);
    }
    let check = request.into_inner();
    let Some(attributes) = check.attributes else {
        return Ok(refuse_malformed(state, started, "the Check request has no attributes").await);
    };
    let Some(http) = attributes.request.and_then(|request| request.http) else {
        return Ok(refuse_malformed(
            state,
            started,
            "the Check request has no attributes.request.http",
        )
        .await);
    };
    // A key of another name is most likely `rules` misspelled: read as no rules, it would let
    // every signed-in caller through whatever the route meant to require.
    if let Some(key) = attributes
        .context_extensions
        .keys()
        .find(|key| *key != RULES)
    {
        let reason = format!(
            "the Check request's context_extensions hold `{}`: the only key read is `{RULES}`",
            crate::untrusted::bounded(key)
        );
        let outcome = Outcome::Reject(crate::http::rejection::Refusal::new(
            crate::http::rejection::Rejection::BadRequest(reason.clone()),
            reason,
        ));
        return Ok(refused(state, outcome, started).await);
    }
    let rules = attributes
        .context_extensions
        .get(RULES)
        .map_or("", String::as_str);
    // A `rules` that is there but holds none (a template that expanded to nothing) would read
    // as no rules: every signed-in caller let through whatever the route meant to require.
    if attributes.context_extensions.contains_key(RULES) && super::holds_no_rule(rules) {
        let reason = format!("the Check request's `{RULES}` holds no rule");
        let outcome = Outcome::Reject(crate::http::rejection::Refusal::new(
            crate::http::rejection::Rejection::BadRequest(reason.clone()),
            reason,
        ));
        return Ok(refused(state, outcome, started).await);
    }
    let Ok(headers) = request_headers(&http) else {
        return Ok(refuse_malformed(
            state,
            started,
            "the request carries a header that is not valid HTTP",
        )
        .await);
    };
    let original = original_request(&http);
    let outcome = match super::unreadable_path(&original)
        .or_else(|| super::joined_credentials(&headers))
        .or_else(|| super::joined_token_cookies(state, &headers))
    {
        Some(refused) => refused,
        None => {
            let client = ClientAddress::new(peer.ip(), &headers, &state.trusted_proxies);
            decide_auth(
                state,
                &headers,
                rules,
                Some(&original),
                client,
                &mut Trace::off(),
            )
            .await
        }
    };
    report(
        state,
        "envoy_grpc",
        &outcome,
        Some(&original),
        Some(&headers),
        started,
    );
    let remove = super::headers_to_remove(state, rules, &outcome, &headers, true);
    Ok(tonic::Response::new(
        answer(outcome, &remove, headers.get(header::ACCEPT)).await,
    ))
}

/// A Check that describes no request Tollgate can read: a `denied_response` 400
/// (`INVALID_ARGUMENT`) saying why, with the metric and log line every forward-auth refusal has.
async fn refuse_malformed(
    state: &ForwardAuthState,
    started: Instant,
    reason: &'static str,
) -> tonic::Response<CheckResponse> {
    let outcome = Outcome::Reject(crate::http::rejection::Refusal::new(
        crate::http::rejection::Rejection::BadRequest(reason.to_owned()),
        reason,
    ));
    refused(state, outcome, started).await
}

/// A refusal decided before the described request was read: reported, then answered.
async fn refused(
    state: &ForwardAuthState,
    outcome: Outcome,
    started: Instant,
) -> tonic::Response<CheckResponse> {
    report(state, "envoy_grpc", &outcome, None, None, started);
    tonic::Response::new(answer(outcome, &[], None).await)
}

/// The described request's headers. Envoy sends them in `headers` (lower-case names, repeated
/// ones joined), or in `header_map` with `encode_raw_headers`; pseudo-headers (`:path`…) are
/// left out, so they can never be a credential. `Err` when a header is not valid HTTP: Envoy
/// forwards it all the same, and a credential or an identity header Tollgate could not see
/// would reach the upstream unchecked and not removed.
fn request_headers(http: &HttpRequest) -> Result<HeaderMap, ()> {
    let mut headers = HeaderMap::new();
    let mut valid = true;
    let mut add = |name: &str, value: &[u8]| {
        if name.starts_with(':') {
            return;
        }
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            (Ok(name), Ok(value)) => {
                headers.append(name, value);
            }
            _ => valid = false,
        }
    };
    match &http.header_map {
        Some(map) if !map.headers.is_empty() => {
            for entry in &map.headers {
                let value = if entry.raw_value.is_empty() {
                    entry.value.as_bytes()
                } else {
                    &entry.raw_value
                };
                add(&entry.key, value);
            }
        }
        _ => {
            for (name, value) in &http.headers {
                add(name, value.as_bytes());
            }
        }
    }
    if !headers.contains_key(header::HOST)
        && let Ok(host) = HeaderValue::from_str(&http.host)
        && !http.host.is_empty()
    {
        headers.insert(header::HOST, host);
    }
    if valid { Ok(headers) } else { Err(()) }
}

/// The request as Envoy saw it: method, path with query as sent, and its URL from scheme and
/// host (for the sign-in redirect). A path that is not origin-form is unknown, so no skip rule
/// can match it.
fn original_request(http: &HttpRequest) -> OriginalRequest {
    let method = Method::from_bytes(http.method.as_bytes()).ok();
    let raw_path = http.path.starts_with('/').then(|| http.path.clone());
    let scheme = if http.scheme.is_empty() {
        "https"
    } else {
        http.scheme.as_str()
    };
    // A host as the other ways in read it (`host[:port]`), or no URL: Envoy may pass on what
    // a client wrote, and the sign-in redirect is built on it.
    let url = raw_path
        .as_ref()
        .filter(|_| {
            matches!(scheme, "http" | "https") && crate::http::forwarded::is_host(&http.host)
        })
        .and_then(|path| url::Url::parse(&format!("{scheme}://{}{path}", http.host)).ok());
    OriginalRequest {
        method,
        url,
        raw_path,
    }
}

/// The Check answer for an outcome: `ok_response` when allowed, else `denied_response` with
/// the status, headers and body `/auth` answers.
async fn answer(
    outcome: Outcome,
    remove: &[HeaderName],
    accept: Option<&HeaderValue>,
) -> CheckResponse {
    match outcome {
        Outcome::Allow(injected, _, set_cookies) => {
            let ok = OkHttpResponse {
                headers: injected
                    .iter()
                    .map(|(name, value)| {
                        option(
                            name.as_str(),
                            value.as_bytes(),
                            HeaderAppendAction::OverwriteIfExistsOrAdd,
                        )
                    })
                    .collect(),
                headers_to_remove: remove.iter().map(|name| name.as_str().to_owned()).collect(),
                // A refreshed cookie session goes back to the browser, in an answer no shared
                // cache stores (Envoy can replace the upstream's cache headers, not remove them).
                response_headers_to_add: set_cookies
                    .iter()
                    .map(|cookie| {
                        option(
                            header::SET_COOKIE.as_str(),
                            cookie.as_bytes(),
                            HeaderAppendAction::AppendIfExistsOrAdd,
                        )
                    })
                    .chain(not_stored(!set_cookies.is_empty()))
                    .collect(),
                ..OkHttpResponse::default()
            };
            allowed(ok)
        }
        Outcome::Skip => allowed(OkHttpResponse {
            headers_to_remove: remove.iter().map(|name| name.as_str().to_owned()).collect(),
            ..OkHttpResponse::default()
        }),
        // A page for a browser, JSON for an API call, as `/auth` answers (SPEC §10).
        refused => {
            denied(crate::http::pages::negotiate(
                accept,
                outcome_response(refused),
            ))
            .await
        }
    }
}

/// When `cookies`: the options that keep a shared cache from storing the answer, each replacing
/// the upstream's.
fn not_stored(cookies: bool) -> impl Iterator<Item = HeaderValueOption> {
    let cache_control = (header::CACHE_CONTROL.as_str(), "private, no-store");
    // nginx's `X-Accel-Expires` takes seconds: `0` is "do not cache".
    let cdn = crate::http::CDN_CACHE_CONTROLS.map(|name| {
        (
            name,
            if name == "x-accel-expires" {
                "0"
            } else {
                "no-store"
            },
        )
    });
    std::iter::once(cache_control)
        .chain(cdn)
        .filter(move |_| cookies)
        .map(|(name, value)| {
            option(
                name,
                value.as_bytes(),
                HeaderAppendAction::OverwriteIfExistsOrAdd,
            )
        })
}

fn allowed(ok: OkHttpResponse) -> CheckResponse {
    CheckResponse {
        status: Some(rpc::Status {
            code: code::OK,
            ..rpc::Status::default()
        }),
        http_response: Some(HttpResponse::OkResponse(ok)),
        dynamic_metadata: None,
    }
}

/// A refusal as Envoy sends it to the client: the HTTP answer `/auth` gives, carried over.
async fn denied(response: Response) -> CheckResponse {
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, MAX_DENIED_BODY)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default();
    let status = parts.status.as_u16();
    let grpc_code = match status {
        400 => code::INVALID_ARGUMENT,
        302 | 401 => code::UNAUTHENTICATED,
        403 => code::PERMISSION_DENIED,
        502..=504 => code::UNAVAILABLE,
        _ => code::INTERNAL,
    };
    CheckResponse {
        status: Some(rpc::Status {
            code: grpc_code,
            ..rpc::Status::default()
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(status),
            }),
            headers: parts
                .headers
                .iter()
                .map(|(name, value)| {
                    // Each `Set-Cookie` is its own (a session's chunks, a refreshed session).
                    let action = if name == header::SET_COOKIE {
                        HeaderAppendAction::AppendIfExistsOrAdd
                    } else {
                        HeaderAppendAction::OverwriteIfExistsOrAdd
                    };
                    option(name.as_str(), value.as_bytes(), action)
                })
                .collect(),
            body,
        })),
        dynamic_metadata: None,
    }
}

/// One header for Envoy: text in `value`, other bytes in `raw_value` (only one may be set).
fn option(name: &str, value: &[u8], action: HeaderAppendAction) -> HeaderValueOption {
    let header = match std::str::from_utf8(value) {
        Ok(text) => EnvoyHeader {
            key: name.to_owned(),
            value: text.to_owned(),
            raw_value: Vec::new(),
        },
        Err(_) => EnvoyHeader {
            key: name.to_owned(),
            value: String::new(),
            raw_value: value.to_vec(),
        },
    };
    HeaderValueOption {
        header: Some(header),
        append_action: action as i32,
        ..HeaderValueOption::default()
    }
}
