//! The admin endpoints on a router built from an `AdminState` alone, driven with
//! `tower::ServiceExt::oneshot`.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use tower::ServiceExt as _;

use super::AdminState;
use crate::metrics::Metrics;
use crate::oidc::{Provider, Providers};
use crate::secret::Secret;

const ADMIN_TOKEN: &str = "admin-token-for-tests";

fn state(admin_token: Option<&str>, providers: Providers) -> AdminState {
    AdminState {
        admin_token: admin_token.map(|token| Secret::new(token.to_owned())),
        metrics: Arc::new(Metrics::new()),
        providers: Arc::new(providers),
        sessions: None,
        token_service: None,
        clock: Arc::new(crate::clock::SystemClock),
    }
}

async fn get(router: Router, path: &str, token: Option<&str>) -> (StatusCode, String) {
    let mut request = Request::get(path);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = router
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn router(state: AdminState) -> Router {
    super::routes(Arc::new(state))
}

#[tokio::test]
async fn healthz_is_ok() {
    let (status, body) = get(router(state(None, Providers::new())), "/healthz", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "ok\n");
}

#[tokio::test]
async fn readyz_is_ready_when_nothing_is_waiting_to_be_discovered() {
    let (status, body) = get(router(state(None, Providers::new())), "/readyz", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "ready\n");
}

/// Providers of these names, at an issuer where nothing listens (port 9, discard, on
/// loopback: discovery fails at once).
fn providers(names: &[&str]) -> Providers {
    let sections: String = names
        .iter()
        .map(|name| {
            format!(
                "[[provider]]\nname = \"{name}\"\nissuer = \"http://127.0.0.1:9/{name}\"\nclient_id = \"gateway\"\nclient_auth = \"none\"\n"
            )
        })
        .collect();
    let config = crate::config::load(
        &format!("[server]\nlisten = \"127.0.0.1:0\"\n{sections}"),
        &Default::default(),
    )
    .unwrap();
    config
        .providers
        .iter()
        .map(|provider_config| {
            let provider = Provider::new(
                provider_config.clone(),
                crate::oidc::client::HttpClient::new(provider_config.timeout).unwrap(),
                None,
                Arc::new(crate::token::cache::TokenCache::new(16)),
                Arc::new(crate::clock::SystemClock),
                60,
                Arc::new(Metrics::new()),
            );
            (provider_config.name.clone(), Arc::new(provider))
        })
        .collect()
}

#[tokio::test]
async fn readyz_is_503_naming_a_provider_that_cannot_be_discovered() {
    let providers = providers(&["down"]);
    let (status, body) = get(router(state(None, providers)), "/readyz", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("provider down"), "{body}");
}

#[tokio::test]
async fn the_admin_api_is_disabled_without_an_admin_token() {
    let (status, body) = get(
        router(state(None, Providers::new())),
        "/admin/sessions",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("server.admin_token"));
}

#[tokio::test]
async fn a_missing_or_wrong_admin_token_is_401() {
    for token in [None, Some("not-the-admin-token")] {
        let (status, _) = get(
            router(state(Some(ADMIN_TOKEN), Providers::new())),
            "/admin/sessions",
            token,
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}");
    }
}

#[tokio::test]
async fn the_right_admin_token_reaches_the_session_store() {
    // Without session secrets there is no server-side store: 409 says so, past the token check.
    let (status, _) = get(
        router(state(Some(ADMIN_TOKEN), Providers::new())),
        "/admin/sessions",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
}

/// `DELETE path` with the admin token, on a router over `state`: the status.
async fn delete(state: Arc<AdminState>, path: &str) -> StatusCode {
    super::routes(state)
        .oneshot(
            Request::delete(path)
                .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn each_admin_refusal_is_counted_once_under_its_own_result() {
    use crate::issuer::tests::requests_counted;
    let state = Arc::new(state(Some(ADMIN_TOKEN), Providers::new()));
    // No `sub`: 400 before the store is looked at.
    assert_eq!(
        delete(state.clone(), "/admin/sessions").await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(requests_counted(&state.metrics, "admin", "bad_request"), 1);
    // No server-side store: 409, for a user's sessions and for one session.
    assert_eq!(
        delete(state.clone(), "/admin/sessions?sub=alice").await,
        StatusCode::CONFLICT
    );
    assert_eq!(
        delete(state.clone(), "/admin/sessions/some-handle").await,
        StatusCode::CONFLICT
    );
    assert_eq!(
        requests_counted(&state.metrics, "admin", "not_server_side"),
        2
    );
    assert_eq!(requests_counted(&state.metrics, "admin", "bad_request"), 1);
    assert_eq!(
        requests_counted(&state.metrics, "admin", "unauthenticated"),
        0
    );
}

#[tokio::test]
async fn a_wrong_admin_token_is_counted_once_as_unauthenticated() {
    use crate::issuer::tests::requests_counted;
    let state = Arc::new(state(Some(ADMIN_TOKEN), Providers::new()));
    let (status, _) = get(
        super::routes(state.clone()),
        "/admin/sessions",
        Some("not-the-admin-token"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        requests_counted(&state.metrics, "admin", "unauthenticated"),
        1
    );
    assert_eq!(
        requests_counted(&state.metrics, "admin", "not_server_side"),
        0
    );
}

/// An admin state over a memory store holding `alice` at two providers (two people: a `sub` is
/// unique only at its issuer) and `bob` at one.
fn state_with_sessions() -> Arc<AdminState> {
    use crate::session::memory_store::MemoryStore;
    use crate::session::seal::Sealer;
    use crate::session::store::{SessionBackend, Sessions};
    let secrets = [Secret::new(
        "admin-tests-session-secret-0123456789".to_owned(),
    )];
    let store = Arc::new(MemoryStore::open(None, Sealer::new(&secrets), 10));
    let now = crate::clock::Clock::now(&crate::clock::SystemClock);
    // corp's carol's session ended a second ago: the store purges it later, the listing
    // shows it no more.
    for (id, provider, sub, expires_in) in [
        ("a", "corp", "alice", 3600),
        ("b", "partner", "alice", 3600),
        ("c", "corp", "bob", 3600),
        ("d", "corp", "carol", -1),
    ] {
        let claims = serde_json::json!({ "sub": sub });
        store.insert(
            id.to_owned(),
            Arc::new(crate::session::Session {
                provider: provider.to_owned(),
                claims: Arc::new(claims.as_object().cloned().unwrap_or_default()),
                id_token: String::new(),
                access_token: None,
                refresh_token: None,
                access_expires_at: None,
                created_at: now,
                expires_at: now + expires_in,
            }),
            now,
        );
    }
    let jar = crate::session::CookieJar::new(Sealer::new(&secrets), "tollgate".to_owned());
    let metrics = Arc::new(Metrics::new());
    let sessions = Sessions::new(
        jar,
        SessionBackend::Memory(store),
        std::time::Duration::from_secs(3600),
        metrics.clone(),
    );
    Arc::new(AdminState {
        sessions: Some(Arc::new(sessions)),
        metrics,
        ..state(Some(ADMIN_TOKEN), providers(&["corp", "partner"]))
    })
}

/// The providers of the sessions `GET path` lists, sorted.
async fn listed(state: &Arc<AdminState>, path: &str) -> Vec<String> {
    let (status, body) = get(super::routes(state.clone()), path, Some(ADMIN_TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let sessions: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    let mut found: Vec<String> = sessions
        .iter()
        .map(|session| format!("{}:{}", session["provider"], session["sub"]).replace('"', ""))
        .collect();
    found.sort();
    found
}

#[tokio::test]
async fn sessions_are_listed_and_ended_by_user_at_one_provider() {
    let state = state_with_sessions();
    assert_eq!(
        listed(&state, "/admin/sessions?sub=alice").await,
        ["corp:alice", "partner:alice"]
    );
    assert_eq!(
        listed(&state, "/admin/sessions?sub=alice&provider=partner").await,
        ["partner:alice"]
    );
    assert_eq!(
        listed(&state, "/admin/sessions?provider=corp").await,
        ["corp:alice", "corp:bob"]
    );
    // The partner's alice is another person: only corp's ends.
    assert_eq!(
        delete(state.clone(), "/admin/sessions?sub=alice&provider=corp").await,
        StatusCode::OK
    );
    assert_eq!(
        listed(&state, "/admin/sessions").await,
        ["corp:bob", "partner:alice"]
    );
}

#[tokio::test]
async fn a_session_query_that_is_not_sub_and_provider_once_each_is_400_not_every_session() {
    let state = state_with_sessions();
    for path in [
        "/admin/sessions?sub=alice&sub=bob",
        "/admin/sessions?user=alice",
        "/admin/sessions?sub=alice&provider=corp&provider=partner",
        "/admin/sessions?sub=alice&provider=corpp",
    ] {
        let (status, _) = get(super::routes(state.clone()), path, Some(ADMIN_TOKEN)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "GET {path}");
        assert_eq!(
            delete(state.clone(), path).await,
            StatusCode::BAD_REQUEST,
            "DELETE {path}"
        );
    }
    assert_eq!(
        listed(&state, "/admin/sessions").await.len(),
        3,
        "nothing ended"
    );
}
