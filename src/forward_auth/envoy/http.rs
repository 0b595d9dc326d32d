//! Envoy `ext_authz` over HTTP: `http_service` with `path_prefix: /envoy` sends
//! `<method> /envoy/<original path>` with the original `Host`, and Tollgate answers what
//! `/auth` would answer for that request. The rules come in `X-Tollgate-Rules` (an `/auth`
//! query string, set by the filter's `headers_to_add`), believed only from `trusted_proxies`:
//! from anyone else the header is refused with 400, never ignored (ignoring it would allow
//! every signed-in user where the rules meant to restrict). Names the rules inject but that
//! have no value this time go back in `x-envoy-auth-headers-to-remove`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;

use crate::forward_auth::{ForwardAuthState, Outcome, decide_auth, outcome_response, report};
use crate::http::forwarded::{ClientAddress, OriginalRequest, base_parts, is_trusted};
use crate::http::rejection::{Refusal, Rejection};
use crate::policy::Trace;

/// The prefix Envoy's `path_prefix` adds to the original path.
pub const PREFIX: &str = crate::config::ENVOY_HTTP_PREFIX;

/// The request header carrying the rules.
pub static X_TOLLGATE_RULES: HeaderName = HeaderName::from_static("x-tollgate-rules");

/// The answer header naming request headers Envoy removes before the upstream sees them.
static HEADERS_TO_REMOVE: HeaderName = HeaderName::from_static("x-envoy-auth-headers-to-remove");

/// `/envoy/<original path>`, any method. A block over the request, as `/auth`'s handler, so
/// the future holds it once.
// The `async fn` clippy suggests is the shape this avoids (see above).
#[allow(clippy::manual_async_fn)]
pub fn check(
    State(state): State<Arc<ForwardAuthState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
) -> impl Future<Output = Response> {
    async move {
        let started = Instant::now();
        let headers = request.headers();
        let original = original_request(peer, &request, &state);
        let mut sent = headers.get_all(&X_TOLLGATE_RULES).iter();
        // `X-Tollgate-Rule` (a misspelled `headers_to_add`) read as no rules would let every
        // signed-in caller through whatever the route meant to require.
        let misspelled = headers
            .keys()
            .any(|name| name.as_str().starts_with("x-tollgate-") && *name != X_TOLLGATE_RULES);
        let rules = match (sent.next(), sent.next()) {
            _ if misspelled => {
                Err("an X-Tollgate- header other than X-Tollgate-Rules, the only one read")
            }
            (None, _) => Ok(""),
            (Some(_), _) if !is_trusted(peer.ip(), &state.trusted_proxies) => {
                Err("X-Tollgate-Rules is believed only from server.trusted_proxies")
            }
            // Which one Envoy set, and which one a client's copy is, cannot be told apart.
            (Some(_), Some(_)) => Err("more than one X-Tollgate-Rules header"),
            // A value that holds no rule (blank, `&`: a template that expanded to nothing)
            // read as no rules would let every signed-in caller through.
            (Some(value), None) if value.to_str().is_ok_and(super::holds_no_rule) => {
                Err("X-Tollgate-Rules holds no rule (read as none, it would allow everyone)")
            }
            (Some(value), None) => value
                .to_str()
                .map_err(|_| "X-Tollgate-Rules is not printable ASCII"),
        };
        let unreadable = super::unreadable_path(&original)
            .or_else(|| super::joined_credentials(headers))
            .or_else(|| super::joined_token_cookies(&state, headers));
        let outcome = match (rules, unreadable) {
            (Err(reason), _) => Outcome::Reject(Refusal::new(
                Rejection::BadRequest(reason.to_owned()),
                reason,
            )),
            (Ok(_), Some(refused)) => refused,
            (Ok(rules), None) => {
                let client = ClientAddress::new(peer.ip(), headers, &state.trusted_proxies);
                decide_auth(
                    &state,
                    headers,
                    rules,
                    Some(&original),
                    client,
                    &mut Trace::off(),
                )
                .await
            }
        };
        report(
            &state,
            "envoy_http",
            &outcome,
            Some(&original),
            Some(headers),
            started,
        );
        let remove =
            super::headers_to_remove(&state, rules.unwrap_or(""), &outcome, headers, false);
        let skipped = matches!(outcome, Outcome::Skip);
        let mut response = outcome_response(outcome);
        // A skip's `no-store` is for an ingress that caches `/auth` answers; Envoy caches none,
        // and the recipe hands `Cache-Control` of an allowed answer on to the client, where it
        // would make a public page (`/static/app.js`) uncacheable.
        if skipped {
            response
                .headers_mut()
                .remove(axum::http::header::CACHE_CONTROL);
        }
        if !remove.is_empty() {
            let names: Vec<&str> = remove.iter().map(HeaderName::as_str).collect();
            if let Ok(value) = HeaderValue::from_str(&names.join(",")) {
                response
                    .headers_mut()
                    .insert(HEADERS_TO_REMOVE.clone(), value);
            }
        }
        response
    }
}

/// The request Envoy asks about: this request's method, its path and query without the
/// prefix, and its URL from the external scheme and host (`X-Forwarded-Proto` from a trusted
/// peer).
fn original_request(
    peer: SocketAddr,
    request: &axum::extract::Request,
    state: &ForwardAuthState,
) -> OriginalRequest {
    let target = request
        .uri()
        .path_and_query()
        .map_or("", axum::http::uri::PathAndQuery::as_str);
    let raw_path = target
        .strip_prefix(PREFIX)
        .filter(|rest| rest.starts_with('/'))
        .map(str::to_owned);
    let url = raw_path.as_ref().and_then(|path| {
        let (proto, host) = base_parts(
            peer.ip(),
            request.headers(),
            &state.trusted_proxies,
            state.own_proto,
        )?;
        matches!(proto, "http" | "https")
            .then(|| url::Url::parse(&format!("{proto}://{host}{path}")).ok())
            .flatten()
    });
    OriginalRequest {
        method: Some(request.method().clone()),
        url,
        raw_path,
    }
}
