//! The token service's endpoints on a router built from the service alone (no app, no
//! listener), driven with `tower::ServiceExt::oneshot`. The helpers serve the other surfaces'
//! handler tests, which need a token service as an in-process provider.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode, header};
use base64::Engine as _;
use tower::ServiceExt as _;

use super::TokenService;
use super::state::memory::MemoryState;
use crate::clock::SystemClock;
use crate::config::Config;
use crate::metrics::Metrics;

/// The issuer URL of the test token service.
pub(crate) const ISSUER: &str = "https://issuer.test";

/// A config with a token service that has one `client_credentials` client, `machine` (secret
/// `machine-secret`, audience `api`); `extra` (more tables) goes at the end.
pub(crate) fn config(extra: &str) -> Config {
    let text = format!(
        r#"[server]
listen = "127.0.0.1:0"
[token_service]
issuer = "{ISSUER}"
[[token_service.client]]
client_id = "machine"
client_secret_hash = "{hash}"
grants = ["client_credentials"]
source = "myapi"
audience = "api"
{extra}
"#,
        hash = super::hash_password("machine-secret").unwrap(),
    );
    crate::config::load(&text, &BTreeMap::new()).unwrap()
}

/// The token service of `config`, keeping its state in memory.
pub(crate) fn token_service(config: &Config, metrics: &Arc<Metrics>) -> Arc<TokenService> {
    Arc::new(
        TokenService::new(
            config.token_service.clone().unwrap(),
            Arc::new(MemoryState::default()),
            &config.server,
            Arc::new(SystemClock),
            metrics.clone(),
        )
        .unwrap(),
    )
}

/// The service's endpoints at the root, without federated logins.
pub(crate) fn router(service: &Arc<TokenService>) -> Router {
    service
        .routes(None)
        .into_iter()
        .fold(Router::new(), |router, (path, handler)| {
            router.route(path, handler)
        })
}

/// Sends `request` as if from 127.0.0.1 and reads the whole answer.
pub(crate) async fn send(
    router: &Router,
    mut request: Request<Body>,
) -> (StatusCode, HeaderMap, Bytes) {
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    let response = router.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = http_body_util::BodyExt::collect(body)
        .await
        .unwrap()
        .to_bytes();
    (parts.status, parts.headers, body)
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn token_request(client_id: &str, secret: &str) -> Request<Body> {
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:{secret}"));
    Request::post("/token")
        .header(header::AUTHORIZATION, format!("Basic {credentials}"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("grant_type=client_credentials"))
        .unwrap()
}

/// An access token for `machine`, from `/token`.
pub(crate) async fn client_credentials_token(router: &Router) -> String {
    let (status, _, body) = send(router, token_request("machine", "machine-secret")).await;
    assert_eq!(status, StatusCode::OK);
    let tokens: serde_json::Value = serde_json::from_slice(&body).unwrap();
    tokens["access_token"].as_str().unwrap().to_owned()
}

fn test_router() -> Router {
    let config = config("");
    router(&token_service(&config, &Arc::new(Metrics::new())))
}

#[tokio::test]
async fn discovery_names_this_issuer_and_its_endpoints() {
    let (status, headers, body) =
        send(&test_router(), get("/.well-known/openid-configuration")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CACHE_CONTROL], "public, max-age=300");
    let document: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(document["issuer"], ISSUER);
    assert_eq!(document["token_endpoint"], format!("{ISSUER}/token"));
    assert_eq!(document["jwks_uri"], format!("{ISSUER}/jwks"));
    assert_eq!(
        document["authorization_response_iss_parameter_supported"],
        true
    );
}

#[tokio::test]
async fn jwks_publishes_the_signing_key() {
    let (status, _, body) = send(&test_router(), get("/jwks")).await;
    assert_eq!(status, StatusCode::OK);
    let document: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let keys = document["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert!(keys[0]["kid"].is_string());
}

#[tokio::test]
async fn client_credentials_issue_an_access_token_for_the_clients_audience() {
    let config = config("");
    let service = token_service(&config, &Arc::new(Metrics::new()));
    let router = router(&service);
    let (status, headers, body) = send(&router, token_request("machine", "machine-secret")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    let tokens: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(tokens["token_type"], "Bearer");
    let claims = service
        .validate_own_access_token(tokens["access_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(claims.get("aud").unwrap(), "api");
}

#[tokio::test]
async fn its_own_tokens_are_checked_with_the_servers_leeway() {
    // Minted by a replica whose clock is ahead (`nbf` = `iat` = its now), or checked just
    // after expiry: within `server.leeway` both pass, as any provider's token does.
    let config = config("").clone();
    let clock = crate::clock::ManualClock::new();
    let service = Arc::new(
        TokenService::new(
            config.token_service.clone().unwrap(),
            Arc::new(MemoryState::default()),
            &config.server,
            clock.clone(),
            Arc::new(Metrics::new()),
        )
        .unwrap(),
    );
    let token = client_credentials_token(&router(&service)).await;
    let lifetime = config
        .token_service
        .as_ref()
        .unwrap()
        .token_lifetime
        .as_secs();
    let lifetime = i64::try_from(lifetime).unwrap();
    // In this order: a positive answer is cached until `exp`.
    for (moved, valid) in [
        (-61, false),
        (-30, true),
        (lifetime + 30, true),
        (lifetime + 61, false),
    ] {
        clock.advance(moved);
        let checked = service.validate_own_access_token(&token).await;
        assert_eq!(checked.is_ok(), valid, "{moved} s: {checked:?}");
        clock.advance(-moved);
    }
}

#[tokio::test]
async fn a_wrong_client_secret_is_invalid_client() {
    let (status, headers, body) =
        send(&test_router(), token_request("machine", "not-the-secret")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers.contains_key(header::WWW_AUTHENTICATE));
    let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["error"], "invalid_client");
}

#[tokio::test]
async fn a_federated_client_without_a_federated_login_is_a_server_error() {
    let mut config = config("");
    let service_config = config.token_service.as_mut().unwrap();
    let mut corp_app = service_config.clients[0].clone();
    corp_app.client_id = "corp-app".to_owned();
    corp_app.grants = vec![crate::config::GrantType::AuthorizationCode];
    corp_app.redirect_uris = vec!["https://corp-app.example/cb".to_owned()];
    corp_app.login_provider = Some("corp".to_owned());
    service_config.clients.push(corp_app);
    let metrics = Arc::new(Metrics::new());
    let router = router(&token_service(&config, &metrics));
    let (status, _, _) = send(
        &router,
        get("/authorize?response_type=code&client_id=corp-app&redirect_uri=https%3A%2F%2Fcorp-app.example%2Fcb&state=s"),
    )
    .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    // Counted once, as the token service's refusals are.
    assert_eq!(requests_counted(&metrics, "token_service", "error"), 1);
}

/// A federated login that began before a reload answers the client as the live config has it:
/// not at a redirect URI, to a client or through a login provider the reload took away (the
/// URI's domain may have been given up), and with only the scopes the client still has.
#[tokio::test]
async fn a_federated_login_finishes_under_the_live_config() {
    let mut config = config("");
    let service_config = config.token_service.as_mut().unwrap();
    let mut corp_app = service_config.clients[0].clone();
    corp_app.client_id = "corp-app".to_owned();
    corp_app.client_secret_hash = None;
    corp_app.grants = vec![crate::config::GrantType::AuthorizationCode];
    corp_app.redirect_uris = vec!["https://corp-app.example/cb".to_owned()];
    corp_app.scopes = Vec::new();
    corp_app.login_provider = Some("corp".to_owned());
    let mut no_grant = corp_app.clone();
    no_grant.client_id = "no-grant".to_owned();
    no_grant.grants = vec![crate::config::GrantType::RefreshToken];
    let mut no_provider = corp_app.clone();
    no_provider.client_id = "no-provider".to_owned();
    no_provider.login_provider = None;
    service_config.clients.push(corp_app);
    service_config.clients.push(no_grant);
    service_config.clients.push(no_provider);
    let mut service = Arc::into_inner(token_service(&config, &Arc::new(Metrics::new()))).unwrap();
    service.providers = [(
        "corp".to_owned(),
        super::state::ProviderAt {
            issuer: "https://corp.example".to_owned(),
            client_id: "tollgate".to_owned(),
        },
    )]
    .into();
    let service = Arc::new(service);
    const VERIFIER: &str = "a-pkce-code-verifier-long-enough-for-rfc-7636-section-4-1";
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, VERIFIER.as_bytes());
    let challenge = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        digest.as_ref(),
    );
    let request = |redirect_uri: &str, client_id: &str| crate::session::FederatedRequest {
        client_id: client_id.to_owned(),
        redirect_uri: redirect_uri.to_owned(),
        scopes: vec!["openid".to_owned(), "scim".to_owned()],
        state: Some("s".to_owned()),
        nonce: None,
        code_challenge: Some(challenge.clone()),
        prompt_login: false,
        max_age: None,
        asked_at: None,
    };
    let claims = serde_json::json!({
        "sub": "alice", "iss": "https://corp.example", "aud": ["tollgate", "other"]
    })
    .as_object()
    .cloned()
    .unwrap();
    // An ID token of another issuer, or for another client, than the live provider's (a
    // reload moved it while the user was signing in there).
    for (name, value) in [("iss", "https://other.example"), ("aud", "another-client")] {
        let mut elsewhere = claims.clone();
        elsewhere.insert(name.to_owned(), value.into());
        assert!(
            service
                .complete_federation(
                    &request("https://corp-app.example/cb", "corp-app"),
                    "corp",
                    &elsewhere
                )
                .await
                .is_err(),
            "{name}"
        );
    }
    // Registered: answered, without the scope the client no longer has.
    let live = request("https://corp-app.example/cb", "corp-app");
    let back = service
        .complete_federation(&live, "corp", &claims)
        .await
        .unwrap();
    // A login that went to another provider than the client's (a reload changed it since).
    assert!(
        service
            .complete_federation(&live, "partner", &claims)
            .await
            .is_err()
    );
    assert!(
        back.starts_with("https://corp-app.example/cb?code="),
        "{back}"
    );
    assert!(service.fail_federation(&live, "access_denied").is_some());
    // An upstream `sub` that makes `<source>:<sub>` longer than 255 characters: no code for
    // tokens every reader would refuse.
    let source = service.config.clients[0].source.chars().count();
    for (length, answer) in [
        (254 - source, "code="),
        (255 - source, "error=access_denied"),
    ] {
        let mut long = claims.clone();
        long.insert("sub".to_owned(), "é".repeat(length).into());
        let back = service
            .complete_federation(&live, "corp", &long)
            .await
            .unwrap();
        assert!(back.contains(answer), "{length}: {back}");
    }
    let code = url::Url::parse(&back)
        .unwrap()
        .query_pairs()
        .find(|(name, _)| name == "code")
        .unwrap()
        .1
        .into_owned();
    let form = format!(
        "grant_type=authorization_code&code={code}&client_id=corp-app&code_verifier={VERIFIER}\
         &redirect_uri=https%3A%2F%2Fcorp-app.example%2Fcb"
    );
    let token_request = axum::http::Request::post("/token")
        .header(
            axum::http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(axum::body::Body::from(form))
        .unwrap();
    let (status, _, body) = send(&router(&service), token_request).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let tokens: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let payload = tokens["access_token"]
        .as_str()
        .unwrap()
        .split('.')
        .nth(1)
        .unwrap();
    let access_claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(access_claims["scope"], "openid");
    // A redirect URI, a client, or a login provider taken away: neither a code nor an error.
    for gone in [
        request("https://old.corp-app.example/cb", "corp-app"),
        request("https://corp-app.example/cb", "machine"),
        request("https://corp-app.example/cb", "no-grant"),
        request("https://corp-app.example/cb", "no-provider"),
        request("https://corp-app.example/cb", "nobody"),
    ] {
        assert!(
            service
                .complete_federation(&gone, "corp", &claims)
                .await
                .is_err()
        );
        assert!(service.fail_federation(&gone, "access_denied").is_none());
    }
}

/// How many requests `metrics` counted under `tollgate_requests_total{role, result}`, from the
/// text `/metrics` serves (0 when the series does not exist).
pub(crate) fn requests_counted(metrics: &Metrics, role: &str, result: &str) -> u64 {
    let series = format!("tollgate_requests_total{{role=\"{role}\",result=\"{result}\"}} ");
    metrics
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(series.as_str()))
        .map_or(0, |count| count.parse().unwrap())
}

/// Every series of `tollgate_requests_total` that counted anything, as `(role, result, n)`.
fn requests(metrics: &Metrics) -> Vec<String> {
    metrics
        .render()
        .lines()
        .filter(|line| line.starts_with("tollgate_requests_total{") && !line.ends_with(" 0"))
        .map(str::to_owned)
        .collect()
}

/// A service with a public `authorization_code` client `web` (redirect URI
/// `https://web.example/cb`) and a user `alice` (password `alice-password`), and its metrics.
fn form_service() -> (Arc<TokenService>, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    (token_service(&form_config(), &metrics), metrics)
}

/// The config of [`form_service`]: a public client `web` and a local user `alice`.
fn form_config() -> Config {
    config(&format!(
        r#"[[token_service.client]]
client_id = "web"
grants = ["authorization_code"]
redirect_uris = ["https://web.example/cb"]
source = "local"
[[token_service.user]]
username = "alice"
password_hash = "{hash}"
"#,
        hash = super::hash_password("alice-password").unwrap(),
    ))
}

/// Where the answer to a post of the login form sends the browser: a 303 (RFC 9700 §4.12),
/// whether it carries a code or an error.
#[track_caller]
fn sent_on(status: StatusCode, headers: &HeaderMap) -> String {
    assert_eq!(status, StatusCode::SEE_OTHER);
    headers[header::LOCATION].to_str().unwrap().to_owned()
}

const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// The login form's token as its page sets it (the cookie, by either name) and the form
/// carries it (the field).
const FORM_TOKEN: &str = "form-token-of-the-tests-form-token-of-the-t";

/// `body` posted as the login form's page posts it (its token included), from `site`.
fn form_post(body: &str, site: &str) -> Request<Body> {
    Request::post("/authorize")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("sec-fetch-site", site)
        .header(
            header::COOKIE,
            format!("tollgate_form={FORM_TOKEN}; __Host-tollgate_form={FORM_TOKEN}"),
        )
        .body(Body::from(format!("{body}&form_token={FORM_TOKEN}")))
        .unwrap()
}

#[tokio::test]
async fn an_unknown_client_is_a_400_page_counted_once_as_bad_request() {
    let (service, metrics) = form_service();
    let (status, _, body) = send(
        &router(&service),
        get("/authorize?response_type=code&client_id=nobody&redirect_uri=https%3A%2F%2Fweb.example%2Fcb"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("unknown client"));
    assert_eq!(
        requests(&metrics),
        ["tollgate_requests_total{role=\"token_service\",result=\"bad_request\"} 1"]
    );
}

#[tokio::test]
async fn an_error_sent_back_to_the_client_is_counted_once_under_its_code() {
    let (service, metrics) = form_service();
    // A public client without PKCE: RFC 6749 §4.1.2.1, back to the client.
    let (status, headers, _) = send(
        &router(&service),
        get("/authorize?response_type=code&client_id=web&redirect_uri=https%3A%2F%2Fweb.example%2Fcb&state=s"),
    )
    .await;
    assert_eq!(status, StatusCode::FOUND);
    let location = headers[header::LOCATION].to_str().unwrap();
    assert!(location.contains("error=invalid_request"), "{location}");
    assert_eq!(
        requests(&metrics),
        ["tollgate_requests_total{role=\"token_service\",result=\"invalid_request\"} 1"]
    );
}

#[tokio::test]
async fn a_login_form_posted_from_another_site_is_403_counted_once() {
    let (service, metrics) = form_service();
    let (status, _, body) = send(
        &router(&service),
        form_post(
            "client_id=web&username=alice&password=alice-password",
            "cross-site",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(String::from_utf8_lossy(&body).contains("posted from another site"));
    assert_eq!(
        requests(&metrics),
        ["tollgate_requests_total{role=\"token_service\",result=\"bad_request\"} 1"]
    );
}

/// A page on an application's host (a route's `host`, which the public listener also answers
/// `/authorize` on) posting the login form to that host: the browser calls the post
/// `same-origin`, and it signed the victim in as the attacker. The issuer's own host is
/// answered, a route naming it too.
#[tokio::test]
async fn a_login_form_posted_to_an_applications_host_is_refused() {
    let config = form_config();
    let service = Arc::new(
        TokenService::new(
            config.token_service.clone().unwrap(),
            Arc::new(MemoryState::default()),
            &config.server,
            Arc::new(SystemClock),
            Arc::new(Metrics::new()),
        )
        .unwrap()
        .with_route_hosts(["Files.Example.com", "issuer.test"]),
    );
    let router = router(&service);
    let body = format!(
        "response_type=code&client_id=web&redirect_uri=https%3A%2F%2Fweb.example%2Fcb\
         &code_challenge={CHALLENGE}&code_challenge_method=S256&username=alice&password=alice-password"
    );
    let post = |host: &str, forwarded: Option<&str>| {
        let mut request = form_post(&body, "same-origin");
        let headers = request.headers_mut();
        headers.insert(header::HOST, host.parse().unwrap());
        headers.insert(header::ORIGIN, format!("https://{host}").parse().unwrap());
        if let Some(forwarded) = forwarded {
            headers.insert("x-forwarded-host", forwarded.parse().unwrap());
        }
        request
    };
    for (host, forwarded) in [
        ("files.example.com", None),
        ("files.example.com:443", None),
        ("tollgate:8080", Some("files.example.com")),
    ] {
        let (status, _, page) = send(&router, post(host, forwarded)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{host} {forwarded:?}");
        assert!(String::from_utf8_lossy(&page).contains("posted from another site"));
    }
    let (status, headers, _) = send(&router, post("issuer.test", None)).await;
    assert!(sent_on(status, &headers).starts_with("https://web.example/cb?code="));
}

#[tokio::test]
async fn a_wrong_password_shows_the_form_again_counted_once_as_login_failed() {
    let (service, metrics) = form_service();
    let router = router(&service);
    let body = format!(
        "response_type=code&client_id=web&redirect_uri=https%3A%2F%2Fweb.example%2Fcb\
         &code_challenge={CHALLENGE}&code_challenge_method=S256&username=alice&password="
    );
    let (status, _, page) = send(&router, form_post(&format!("{body}wrong"), "same-origin")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(String::from_utf8_lossy(&page).contains("Wrong username or password."));
    assert_eq!(
        requests(&metrics),
        ["tollgate_requests_total{role=\"token_service\",result=\"login_failed\"} 1"]
    );
    // The right one is sent back to the client with a code, and counts no refusal.
    let (status, headers, _) = send(
        &router,
        form_post(&format!("{body}alice-password"), "same-origin"),
    )
    .await;
    // RFC 9700 §4.12: a 303 after the credentials' post, an error sent back included.
    assert!(sent_on(status, &headers).starts_with("https://web.example/cb?code="));
    let (status, headers, _) = send(
        &router,
        form_post(
            &format!("{body}alice-password").replace("S256", "plain"),
            "same-origin",
        ),
    )
    .await;
    assert!(sent_on(status, &headers).contains("error=invalid_request"));
    assert_eq!(
        requests_counted(&metrics, "token_service", "login_failed"),
        1
    );
}

/// At most 50 password checks a core wait or run; beyond, a check is refused unqueued (a flood
/// of them queued without end in front of everyone's sign-in).
#[test]
fn password_checks_wait_at_most_fifty_a_core() {
    let checks = super::clients::PasswordChecks::default();
    let most = 50 * std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let waiting: Vec<_> = (0..most).map(|_| checks.wait().expect("a place")).collect();
    assert!(checks.wait().is_none(), "one more waits");
    drop(waiting);
    assert!(checks.wait().is_some(), "places are given back");
}

/// A password check whose request goes away once its argon2 run started (a client that
/// disconnects) still runs to its end and counts its failure: dropped checks freed their turn
/// while argon2 ran on and were never counted, so guesses sent and dropped at once ran
/// without limit.
#[tokio::test]
async fn a_password_check_dropped_mid_run_is_counted() {
    let metrics = Arc::new(Metrics::new());
    let service = token_service(&config(""), &metrics);
    let keys = vec!["user:alice".to_owned()];
    let hash = super::hash_password("the-right-one").unwrap();
    for _ in 0..super::state::MAX_FAILURES {
        // Polled once (its check starts: nothing else runs), then dropped.
        let check = service.check_password(&keys, hash.clone(), "wrong".to_owned(), || false);
        assert!(
            tokio::time::timeout(std::time::Duration::ZERO, check)
                .await
                .is_err(),
            "the check ended within one poll"
        );
        for _ in 0..600 {
            if service.password_checks.idle() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(service.password_checks.idle(), "a check never ended");
    }
    assert!(
        service.state.limited(&keys, service.now()).await.unwrap(),
        "the dropped checks' failures were not counted"
    );
}

/// A reload that finds the signing key file the service signs with gone (a mount briefly
/// empty) is refused: before, a new key was made and written there, so every token issued
/// stopped being valid, and the new key took over at the next start even when the reload was
/// refused for another reason.
#[test]
fn a_reload_whose_signing_key_file_is_gone_is_refused_and_makes_no_key() {
    let directory = std::env::temp_dir().join(format!(
        "tollgate-signing-{}-{}",
        std::process::id(),
        crate::random::token()
    ));
    std::fs::create_dir_all(&directory).unwrap();
    let path = directory.join("signing.pem");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[token_service]\nissuer = \"{ISSUER}\"\n\
         signing_key_file = \"{}\"\n[[token_service.client]]\nclient_id = \"machine\"\n\
         client_secret_hash = \"{}\"\ngrants = [\"client_credentials\"]\n",
        path.display(),
        super::hash_password("machine-secret").unwrap()
    );
    let config = crate::config::load(&text, &BTreeMap::new()).unwrap();
    let metrics = Arc::new(Metrics::new());
    let build = |previous: Option<&TokenService>| {
        TokenService::rebuilt(
            config.token_service.clone().unwrap(),
            Arc::new(MemoryState::default()),
            &config.server,
            Arc::new(SystemClock),
            metrics.clone(),
            previous,
        )
    };
    let first = build(None).unwrap();
    assert!(path.exists(), "made at the first start");
    assert_eq!(
        build(Some(&first)).unwrap().signing_key.kid(),
        first.signing_key.kid(),
        "read again"
    );
    std::fs::remove_file(&path).unwrap();
    assert!(build(Some(&first)).is_err());
    assert!(!path.exists(), "no key made in its place");
    std::fs::remove_dir_all(directory).unwrap();
}
