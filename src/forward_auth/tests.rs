//! `/auth` on a router built from a `ForwardAuthState` alone, driven with
//! `tower::ServiceExt::oneshot`. The provider is the token service, in-process, so no socket
//! is opened: its `/token` issues the bearer tokens.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::routing::get;

use super::{AuthQueries, ForwardAuthState};
use crate::clock::SystemClock;
use crate::identity::SessionSource;
use crate::identity::refresh::Refresher;
use crate::issuer::tests::{ISSUER, client_credentials_token, send, token_service};
use crate::metrics::Metrics;
use crate::oidc::Provider;
use crate::token::cache::TokenCache;

/// The `/auth` router, and the token service's (which issues the tokens `/auth` accepts).
fn routers() -> (Router, Router) {
    let (state, service) = state();
    let auth = Router::new()
        .route("/auth", get(super::auth))
        .with_state(state);
    (auth, crate::issuer::tests::router(&service))
}

/// `/auth`'s state, with the token service as its provider.
fn state() -> (Arc<ForwardAuthState>, Arc<crate::issuer::TokenService>) {
    let config = crate::issuer::tests::config(&format!(
        r#"[[provider]]
name = "self"
issuer = "{ISSUER}"
client_id = "gateway"
client_auth = "none"
audiences = ["api"]
[forward_auth]
provider = "self"
[session]
secrets = ["forward-auth-tests-session-secret-0123456789"]
[[token_service.client]]
client_id = "gateway"
grants = ["authorization_code"]
redirect_uris = ["{ISSUER}/callback"]
source = "local"
"#
    ));
    let metrics = Arc::new(Metrics::new());
    let service = token_service(&config, &metrics);
    let provider = Arc::new(Provider::new(
        config.providers[0].clone(),
        crate::oidc::client::HttpClient::new(config.providers[0].timeout).unwrap(),
        Some(service.clone()),
        Arc::new(TokenCache::new(16)),
        Arc::new(SystemClock),
        60,
        metrics.clone(),
    ));
    let state = ForwardAuthState {
        forward_auth: Some((config.forward_auth.clone().unwrap(), provider)),
        sessions: SessionSource {
            sessions: None,
            refresher: Refresher::new(false, std::time::Duration::ZERO, metrics.clone()),
        },
        token_service: Some(service.clone()),
        trusted_proxies: Vec::new(),
        public_url: None,
        own_proto: "http",
        clock: Arc::new(SystemClock),
        metrics,
        queries: AuthQueries::default(),
        telemetry: None,
    };
    (Arc::new(state), service)
}

/// axum moves each request's handler future into a box of its own, so all of it is copied per
/// request: the rare paths under `/auth` (a session refresh, a key fetch, a Redis connect) are
/// boxed where they are called (with them inline the future was 8 KB), and so is the decision.
#[tokio::test]
async fn the_auth_future_carries_no_rare_path() {
    let (state, _) = state();
    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 40000));
    let future = super::auth(
        axum::extract::State(state),
        axum::extract::ConnectInfo(peer),
        auth_request("", None),
    );
    let size = std::mem::size_of_val(&future);
    // axum boxes it with its extraction around it: at 776 bytes (the decision inline) that box
    // was over the 1 032 bytes glibc's per-thread cache serves, and cost each `/auth` about
    // 300 instructions in `malloc` and `free` (callgrind); with the decision boxed, 496.
    assert!(size <= 600, "the /auth future is {size} bytes");
}

fn auth_request(query: &str, token: Option<&str>) -> Request<Body> {
    let mut request = Request::get(format!("/auth{query}"));
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    request.body(Body::empty()).unwrap()
}

#[test]
fn rules_holding_the_clients_own_query_are_the_clients() {
    let said = |uri: &str| {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("x-forwarded-uri", uri.parse().unwrap());
        headers
    };
    let clients = |rules: &str, uri: &str| super::is_the_clients_query(rules, &said(uri));
    // Caddy's `uri /auth`: the client's query whole, after a `#` too (which `http` drops from
    // `/auth`'s target and Go keeps in the query).
    assert!(clients("skip-auth=.", "/admin?skip-auth=."));
    assert!(clients("skip-auth=.", "/admin?skip-auth=.#"));
    assert!(clients(
        "skip-auth=.",
        "https://app.example.com/admin?skip-auth=.#x"
    ));
    // A page whose own query repeats one of the operator's rules is not refused.
    assert!(!clients(
        "groups=admin&skip-auth=^/public/",
        "/admin/users?groups=admin"
    ));
    assert!(!clients("groups=admin", "/admin?groups=ad"));
    assert!(!clients("groups=admin", "/admin"));
    assert!(!clients("groups=admin", "/admin?"));
    assert!(!clients("groups=admin", "/admin?#groups=admin"));
    assert!(!clients("", "/admin?skip-auth=."));
}

#[tokio::test]
async fn a_valid_bearer_token_is_allowed() {
    let (auth, issuer) = routers();
    let token = client_credentials_token(&issuer).await;
    let (status, _, _) = send(&auth, auth_request("", Some(&token))).await;
    assert_eq!(status, StatusCode::OK);
}

/// `bearer_token` reads the header as UTF-8: a token with non-ASCII letters gets as far as
/// validation, which refuses it (401), as it refused every non-ASCII header before.
#[tokio::test]
async fn a_bearer_token_with_non_ascii_letters_is_refused() {
    let (auth, issuer) = routers();
    let token = client_credentials_token(&issuer).await;
    for spoiled in [format!("{token}é"), format!("é{token}"), "tökén".to_owned()] {
        let (status, headers, _) = send(&auth, auth_request("", Some(&spoiled))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{spoiled}");
        assert!(
            headers[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .contains("invalid_token")
        );
    }
}

#[tokio::test]
async fn no_credential_is_401_with_a_bearer_challenge() {
    let (auth, _) = routers();
    let (status, headers, _) = send(&auth, auth_request("", None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
}

#[tokio::test]
async fn a_claim_rule_the_token_fails_is_403() {
    let (auth, issuer) = routers();
    let token = client_credentials_token(&issuer).await;
    let (status, headers, _) = send(&auth, auth_request("?sub=nobody", Some(&token))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .contains("insufficient_scope")
    );
}

#[tokio::test]
async fn a_malformed_query_is_400_before_any_credential() {
    let (auth, _) = routers();
    let (status, _, _) = send(&auth, auth_request("?inject-claim=a,b,c", None)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
