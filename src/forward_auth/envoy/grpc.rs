//! Envoy `ext_authz` over gRPC: `envoy.service.auth.v3.Authorization/Check` on
//! `forward_auth.grpc_listen`. The request Envoy describes in `attributes.request.http` is
//! decided as `/auth` decides it, under the rules in `context_extensions["rules"]` (an `/auth`
//! query string). A Check without `attributes.request.http` describes no request: it is
//! refused with `INVALID_ARGUMENT`; everything else is answered with an HTTP outcome
//! (malformed rules: a `denied_response` 400 naming the parameter, as `/auth` answers).

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
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
use tokio::net::TcpListener;

use crate::forward_auth::{ForwardAuthState, Outcome, decide_auth, outcome_response, report};
use crate::http::forwarded::OriginalRequest;
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

/// Serves Envoy's Check on `listener` until `shutdown` resolves, then lets calls in flight
/// finish.
///
/// # Errors
/// When the listener fails.
pub async fn serve(
    listener: TcpListener,
    state: LiveState,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .serve_with_incoming_shutdown(
            AuthorizationServer::new(EnvoyCheck { state }),
            incoming,
            shutdown,
        )
        .await
        .map_err(std::io::Error::other)
}

/// Where each Check finds the forward-auth state live when it arrives (a reloaded config
/// answers the next Check).
pub type LiveState = Arc<dyn Fn() -> Arc<ForwardAuthState> + Send + Sync>;

/// The Check service over the forward-auth sub-state.
struct EnvoyCheck {
    state: LiveState,
}

#[tonic::async_trait]
impl Authorization for EnvoyCheck {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let started = Instant::now();
        let state = (self.state)();
        let state = &*state;
        let check = request.into_inner();
        let Some(attributes) = check.attributes else {
            return Err(refuse_malformed(state, started, "attributes"));
        };
        let Some(http) = attributes.request.and_then(|request| request.http) else {
            return Err(refuse_malformed(state, started, "attributes.request.http"));
        };
        let rules = attributes
            .context_extensions
            .get(RULES)
            .map_or("", String::as_str);
        let headers = request_headers(&http);
        let original = original_request(&http);
        let outcome = decide_auth(state, &headers, rules, Some(&original), &mut Trace::off()).await;
        report(
            state,
            "envoy_grpc",
            &outcome,
            Some(&original),
            Some(&headers),
            started,
        );
        let remove = super::headers_to_remove(state, rules, &outcome);
        Ok(tonic::Response::new(answer(outcome, &remove).await))
    }
}

/// A Check that describes no HTTP request: `INVALID_ARGUMENT` naming what is missing, with the
/// metric and log line every forward-auth refusal has.
fn refuse_malformed(state: &ForwardAuthState, started: Instant, missing: &str) -> tonic::Status {
    let reason = format!("the Check request has no {missing}");
    let outcome = Outcome::Reject(
        crate::http::rejection::Rejection::BadRequest(reason.clone()),
        reason.clone(),
    );
    report(state, "envoy_grpc", &outcome, None, None, started);
    tonic::Status::invalid_argument(reason)
}

/// The described request's headers. Envoy sends them in `headers` (lower-case names, repeated
/// ones joined), or in `header_map` with `encode_raw_headers`; pseudo-headers (`:path`…) and
/// anything that is not a valid header are left out, so they can never be a credential.
fn request_headers(http: &HttpRequest) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let mut add = |name: &str, value: &[u8]| {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
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
    headers
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
    let url = raw_path
        .as_ref()
        .filter(|_| matches!(scheme, "http" | "https") && !http.host.is_empty())
        .and_then(|path| url::Url::parse(&format!("{scheme}://{}{path}", http.host)).ok());
    OriginalRequest {
        method,
        url,
        raw_path,
    }
}

/// The Check answer for an outcome: `ok_response` when allowed, else `denied_response` with
/// the status, headers and body `/auth` answers.
async fn answer(outcome: Outcome, remove: &[HeaderName]) -> CheckResponse {
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
                // A refreshed cookie session goes back to the browser.
                response_headers_to_add: set_cookies
                    .iter()
                    .map(|cookie| {
                        option(
                            header::SET_COOKIE.as_str(),
                            cookie.as_bytes(),
                            HeaderAppendAction::AppendIfExistsOrAdd,
                        )
                    })
                    .collect(),
                ..OkHttpResponse::default()
            };
            allowed(ok)
        }
        Outcome::Skip => allowed(OkHttpResponse {
            headers_to_remove: remove.iter().map(|name| name.as_str().to_owned()).collect(),
            ..OkHttpResponse::default()
        }),
        refused => denied(outcome_response(refused)).await,
    }
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
                    option(
                        name.as_str(),
                        value.as_bytes(),
                        HeaderAppendAction::OverwriteIfExistsOrAdd,
                    )
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
