//! Envoy's `ext_authz` (SPEC §4): the `/auth` decision for a request Envoy describes, asked
//! over gRPC (`grpc`, `envoy.service.auth.v3.Authorization/Check` on `grpc_listen`) or over
//! HTTP (`http`, `/envoy/<original path>` on the public listener). Both run
//! `forward_auth::decide_auth` and report through `forward_auth::report`; this module only
//! translates Envoy's request in and the outcome out.

pub mod grpc;
pub mod http;

use axum::http::HeaderName;

use super::{ForwardAuthState, Outcome, parsed_query};

/// The header names the rules inject that this allowed answer does not carry (an absent claim,
/// or a skip rule that ran no checks): Envoy removes them from the client's request, so a copy
/// the client sent never reaches the upstream as if Tollgate had vouched for it.
fn headers_to_remove(state: &ForwardAuthState, rules: &str, outcome: &Outcome) -> Vec<HeaderName> {
    let injected: &[(HeaderName, axum::http::HeaderValue)] = match outcome {
        Outcome::Allow(injected, _, _) => injected,
        Outcome::Skip => &[],
        Outcome::Redirect(_) | Outcome::Reject(..) => return Vec::new(),
    };
    // The rules parsed already (the decision checks them first), so this is a cache hit for
    // any rules short enough to be kept.
    let Ok(query) = parsed_query(state, rules) else {
        return Vec::new();
    };
    let mut names: Vec<HeaderName> = Vec::new();
    for injection in &query.injections {
        let name = injection.header();
        if !injected.iter().any(|(present, _)| present == name) && !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}
