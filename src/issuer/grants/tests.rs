//! The grant rules through `/token` on a router built from the token service alone: a code
//! redeemed once, with its PKCE verifier and redirect URI, its replay revoking what it issued;
//! refresh tokens rotating, and a reused one ending the grant.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;

use crate::issuer::TokenService;
use crate::issuer::state::{PendingCode, Principal, ProviderAt};
use crate::issuer::tests::{config, router, send, token_service};
use crate::metrics::Metrics;

const REDIRECT: &str = "https://spa.example.com/cb";
const VERIFIER: &str = "a-pkce-code-verifier-long-enough-for-rfc-7636-section-4-1";

/// The test token service with a public client `spa` (code and refresh grants, PKCE) and a
/// local user `alice`.
fn service() -> (Arc<TokenService>, Router) {
    let config = config(&format!(
        r#"[[token_service.client]]
client_id = "spa"
grants = ["authorization_code", "refresh_token"]
redirect_uris = ["{REDIRECT}"]
source = "aad"
[[token_service.user]]
username = "alice"
password_hash = "{hash}"
name = "Alice"
email = "alice@example.com"
"#,
        hash = crate::issuer::hash_password("alice-password").unwrap(),
    ));
    let service = token_service(&config, &Arc::new(Metrics::new()));
    let router = router(&service);
    (service, router)
}

/// `service` rebuilt as a reload with `config` would: its state and key kept.
fn reloaded(service: &TokenService, config: crate::config::TokenServiceConfig) -> TokenService {
    let server = crate::config::load(
        "[token_service]\nissuer = \"https://issuer.example\"\n",
        &std::collections::BTreeMap::new(),
    )
    .unwrap()
    .server;
    TokenService::rebuilt(
        config,
        service.state.clone(),
        &server,
        Arc::new(crate::clock::SystemClock),
        Arc::new(Metrics::new()),
        Some(service),
    )
    .unwrap()
}

fn challenge(verifier: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// A code for alice, as `/authorize` would have stored it after her login.
async fn code(service: &TokenService) -> String {
    code_issued_at(service, service.now()).await
}

/// A code for a login at `issued_at`.
async fn code_issued_at(service: &TokenService, issued_at: crate::clock::UnixTime) -> String {
    service
        .store_code(PendingCode {
            client_id: "spa".to_owned(),
            redirect_uri: REDIRECT.to_owned(),
            code_challenge: Some(challenge(VERIFIER)),
            nonce: Some("n-1".to_owned()),
            scopes: vec!["openid".to_owned(), "email".to_owned()],
            principal: Principal::Local("alice".to_owned()),
            issued_at,
            signed_in: crate::issuer::state::SignedIn::AtIssue,
        })
        .await
        .unwrap()
}

async fn token(router: &Router, form: &str) -> (StatusCode, serde_json::Value) {
    let request = Request::post("/token")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!("client_id=spa&{form}")))
        .unwrap();
    let (status, _, body) = send(router, request).await;
    (status, serde_json::from_slice(&body).unwrap())
}

fn redeem(code: &str, verifier: &str) -> String {
    format!(
        "grant_type=authorization_code&code={code}&redirect_uri={}&code_verifier={verifier}",
        url::form_urlencoded::byte_serialize(REDIRECT.as_bytes()).collect::<String>()
    )
}

#[tokio::test]
async fn a_code_is_redeemed_once_and_its_replay_revokes_what_it_issued() {
    let (service, router) = service();
    let code = code(&service).await;
    let (status, tokens) = token(&router, &redeem(&code, VERIFIER)).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert!(tokens["id_token"].is_string() && tokens["refresh_token"].is_string());
    let access = tokens["access_token"].as_str().unwrap();
    let claims = service.validate_own_access_token(access).await.unwrap();
    assert_eq!(
        claims.get("sub").unwrap(),
        "aad:alice",
        "the client's source and the user"
    );

    let (status, error) = token(&router, &redeem(&code, VERIFIER)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"], "invalid_grant");
    assert!(
        service.validate_own_access_token(access).await.is_err(),
        "the replay revoked the access token the code issued"
    );
    let refresh = format!(
        "grant_type=refresh_token&refresh_token={}",
        tokens["refresh_token"].as_str().unwrap()
    );
    assert_eq!(token(&router, &refresh).await.1["error"], "invalid_grant");
}

#[tokio::test]
async fn a_code_needs_its_own_verifier_and_redirect_uri() {
    let (service, router) = service();
    let wrong_verifier = code(&service).await;
    let (status, error) = token(
        &router,
        &redeem(
            &wrong_verifier,
            "another-verifier-of-the-same-length-as-rfc-7636-asks",
        ),
    )
    .await;
    assert_eq!(
        (status, &error["error"]),
        (StatusCode::BAD_REQUEST, &"invalid_grant".into())
    );

    let wrong_redirect = code(&service).await;
    let form = redeem(&wrong_redirect, VERIFIER).replace("spa.example.com", "evil.example");
    let (status, error) = token(&router, &form).await;
    assert_eq!(
        (status, &error["error"]),
        (StatusCode::BAD_REQUEST, &"invalid_grant".into())
    );
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_reused_one_ends_the_grant() {
    let (service, router) = service();
    let code = code(&service).await;
    let (_, first) = token(&router, &redeem(&code, VERIFIER)).await;
    let refresh = |token: &serde_json::Value| {
        format!(
            "grant_type=refresh_token&refresh_token={}",
            token["refresh_token"].as_str().unwrap()
        )
    };
    let (status, second) = token(&router, &refresh(&first)).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_ne!(second["refresh_token"], first["refresh_token"], "rotated");
    let second_access = second["access_token"].as_str().unwrap();
    assert!(
        service
            .validate_own_access_token(second_access)
            .await
            .is_ok()
    );

    // The first refresh token again: reuse, so the whole grant ends, the rotated one with it.
    // Neither refusal signs anything: a public client may send dead tokens again and again.
    let signed = service
        .signatures
        .load(std::sync::atomic::Ordering::Relaxed);
    let (status, error) = token(&router, &refresh(&first)).await;
    assert_eq!(
        (status, &error["error"]),
        (StatusCode::BAD_REQUEST, &"invalid_grant".into())
    );
    assert_eq!(
        token(&router, &refresh(&second)).await.1["error"],
        "invalid_grant"
    );
    assert_eq!(
        service
            .signatures
            .load(std::sync::atomic::Ordering::Relaxed),
        signed,
        "a reused or revoked refresh token costs no signature"
    );
    assert!(
        service
            .validate_own_access_token(second_access)
            .await
            .is_err(),
        "the grant's access tokens are revoked with it"
    );
}

/// The claims of a JWT, unchecked.
fn claims_of(jwt: &str) -> serde_json::Value {
    let payload = jwt.split('.').nth(1).unwrap();
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&json).unwrap()
}

#[tokio::test]
async fn every_id_token_of_a_grant_tells_the_time_of_its_login() {
    // OpenID Connect Core 12.2: a refreshed ID token keeps the first one's `auth_time`; a new
    // one would tell a client enforcing `max_age` that the user logged in again.
    let (service, router) = service();
    let logged_in = service.now() - 30;
    let code = code_issued_at(&service, logged_in).await;
    let (status, first) = token(&router, &redeem(&code, VERIFIER)).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let form = format!(
        "grant_type=refresh_token&refresh_token={}",
        first["refresh_token"].as_str().unwrap()
    );
    let (status, refreshed) = token(&router, &form).await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    for tokens in [&first, &refreshed] {
        let id = claims_of(tokens["id_token"].as_str().unwrap());
        assert_eq!(id["auth_time"], logged_in, "{id}");
    }
}

#[tokio::test]
async fn a_refresh_refused_for_its_scope_leaves_the_token_usable() {
    // RFC 6749 §6: a refused request spends nothing; its retry must not look like a reuse.
    let (service, router) = service();
    let code = code(&service).await;
    let (_, first) = token(&router, &redeem(&code, VERIFIER)).await;
    let refresh_token = first["refresh_token"].as_str().unwrap();
    let (status, error) = token(
        &router,
        &format!("grant_type=refresh_token&refresh_token={refresh_token}&scope=openid%20admin"),
    )
    .await;
    assert_eq!(
        (status, &error["error"]),
        (StatusCode::BAD_REQUEST, &"invalid_scope".into())
    );
    let (status, refreshed) = token(
        &router,
        &format!("grant_type=refresh_token&refresh_token={refresh_token}&scope=openid"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    let access = first["access_token"].as_str().unwrap();
    assert!(
        service.validate_own_access_token(access).await.is_ok(),
        "the grant was not ended"
    );
}

/// A grant is refreshed until `session.lifetime` after its sign-in, then never again: the
/// upstream provider is not asked on a refresh, so a user it has disabled would otherwise keep
/// getting tokens for as long as a client kept refreshing (each rotation moved the end a day
/// on). A scope a reload took from the client is not granted again.
#[tokio::test]
async fn a_grant_is_refreshed_until_the_session_lifetime_and_within_the_clients_scopes() {
    let config = config(&format!(
        r#"[session]
lifetime = "12h"
[[token_service.client]]
client_id = "spa"
grants = ["authorization_code", "refresh_token"]
redirect_uris = ["{REDIRECT}"]
scopes = ["scim"]
source = "aad"
[[token_service.user]]
username = "alice"
password_hash = "{hash}"
"#,
        hash = crate::issuer::hash_password("alice-password").unwrap(),
    ));
    let clock = crate::clock::ManualClock::new();
    let service = Arc::new(
        TokenService::new(
            config.token_service.clone().unwrap(),
            Arc::new(crate::issuer::state::memory::MemoryState::default()),
            &config.server,
            clock.clone(),
            Arc::new(Metrics::new()),
        )
        .unwrap(),
    );
    let router = router(&service);
    let code = sign_in_with_scim(&service).await;
    let (status, mut tokens) = token(&router, &redeem(&code, VERIFIER)).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    // Every five hours, within the refresh token's day: twice, then the sign-in is 15 h old.
    for hours in [5, 10, 15] {
        clock.advance(5 * 3600);
        let form = format!(
            "grant_type=refresh_token&refresh_token={}",
            tokens["refresh_token"].as_str().unwrap()
        );
        let (status, next) = token(&router, &form).await;
        if hours < 12 {
            assert_eq!(status, StatusCode::OK, "after {hours} h: {next}");
            tokens = next;
        } else {
            assert_eq!(
                (status, &next["error"]),
                (StatusCode::BAD_REQUEST, &"invalid_grant".into()),
                "after {hours} h: {next}"
            );
        }
    }

    // A new sign-in; a reload takes `scim` from the client.
    let code = sign_in_with_scim(&service).await;
    let (_, tokens) = token(&router, &redeem(&code, VERIFIER)).await;
    assert_eq!(
        claims_of(tokens["access_token"].as_str().unwrap())["scope"],
        "openid scim"
    );
    let mut reloaded = config.token_service.clone().unwrap();
    reloaded
        .clients
        .iter_mut()
        .for_each(|client| client.scopes.clear());
    let service = Arc::new(
        TokenService::new(
            reloaded,
            service.state.clone(),
            &config.server,
            clock.clone(),
            Arc::new(Metrics::new()),
        )
        .unwrap(),
    );
    let form = format!(
        "grant_type=refresh_token&refresh_token={}",
        tokens["refresh_token"].as_str().unwrap()
    );
    let (status, refreshed) = token(&super::super::tests::router(&service), &form).await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    assert_eq!(
        claims_of(refreshed["access_token"].as_str().unwrap())["scope"],
        "openid"
    );
}

/// A code for alice's sign-in now, with the scopes `openid scim`.
async fn sign_in_with_scim(service: &TokenService) -> String {
    service
        .store_code(PendingCode {
            client_id: "spa".to_owned(),
            redirect_uri: REDIRECT.to_owned(),
            code_challenge: Some(challenge(VERIFIER)),
            nonce: None,
            scopes: vec!["openid".to_owned(), "scim".to_owned()],
            principal: Principal::Local("alice".to_owned()),
            issued_at: service.now(),
            signed_in: crate::issuer::state::SignedIn::AtIssue,
        })
        .await
        .unwrap()
}

/// A code is looked for only when it has the shape of one this service makes: its store key
/// is its client's name and the code, and a made-up code with a newline in it must not reach
/// across to another client's (`a` presenting `b\n<code>` for a client named `a\nb`).
#[test]
fn only_a_code_shaped_like_ours_is_looked_for() {
    assert!(super::is_token_shaped(&crate::random::token()));
    let code = crate::random::token();
    assert!(!super::is_token_shaped(&format!("b\n{}", &code[2..])));
    assert!(!super::is_token_shaped(&code[1..]));
    assert!(!super::is_token_shaped(&format!("{}=", &code[1..])));
}

/// A code or a grant is answered only while its client signs its users in where the code's
/// user signed in: a reload that gave the client another login provider (whose `sub` values
/// are another namespace; the tokens' `sub` is made from the live client's `source`) or took
/// it from the login form to a provider refused neither, so a user of the old provider got
/// tokens naming a user of the new one.
#[tokio::test]
async fn a_code_or_grant_is_answered_only_where_its_client_still_signs_users_in() {
    let (service, router) = service();
    drop(router);
    // Where `partner` is now: only the client's provider differs.
    let partner = ProviderAt {
        issuer: "https://partner.example".to_owned(),
        client_id: "tollgate".to_owned(),
    };
    let mut service = Arc::into_inner(service).unwrap();
    service.providers = [("partner".to_owned(), partner.clone())].into();
    let service = Arc::new(service);
    let router = crate::issuer::tests::router(&service);
    let federated = |provider: Option<&str>| Principal::Federated {
        sub: "00u-partner-user".to_owned(),
        claims: serde_json::Map::new(),
        provider: provider.map(str::to_owned),
        at: provider.map(|_| partner.clone()),
    };
    for principal in [federated(Some("partner")), federated(None)] {
        let code = service
            .store_code(PendingCode {
                client_id: "spa".to_owned(),
                redirect_uri: REDIRECT.to_owned(),
                code_challenge: Some(challenge(VERIFIER)),
                nonce: None,
                scopes: vec!["openid".to_owned()],
                principal: principal.clone(),
                issued_at: service.now(),
                signed_in: crate::issuer::state::SignedIn::AtIssue,
            })
            .await
            .unwrap();
        let (status, error) = token(&router, &redeem(&code, VERIFIER)).await;
        assert_eq!(
            (status, &error["error"]),
            (StatusCode::BAD_REQUEST, &"invalid_grant".into()),
            "{principal:?} at a client of the login form"
        );
    }
    // A grant of the login form's alice, refreshed after a reload moved `spa` to a provider.
    let (_, issued) = token(&router, &redeem(&code(&service).await, VERIFIER)).await;
    let mut moved = service.config.clone();
    moved
        .clients
        .iter_mut()
        .filter(|client| client.client_id == "spa")
        .for_each(|client| client.login_provider = Some("partner".to_owned()));
    refused_after_reload_yet_unspent(&service, &router, moved, &issued).await;
}

/// `issued`'s refresh token refused (`invalid_grant`) by `service` reloaded with `config`, and
/// then taken under the config it was issued in: the refusal spent nothing of the grant.
async fn refused_after_reload_yet_unspent(
    service: &TokenService,
    router: &Router,
    config: crate::config::TokenServiceConfig,
    issued: &serde_json::Value,
) {
    let reloaded = Arc::new(reloaded(service, config));
    let refresh = format!(
        "grant_type=refresh_token&refresh_token={}",
        issued["refresh_token"].as_str().unwrap()
    );
    let (status, error) = token(&crate::issuer::tests::router(&reloaded), &refresh).await;
    assert_eq!(
        (status, &error["error"]),
        (StatusCode::BAD_REQUEST, &"invalid_grant".into())
    );
    assert_eq!(token(router, &refresh).await.0, StatusCode::OK);
}

/// A refresh while a reload has removed the grant's user is refused before the token is
/// spent: under a config that has the user again, the grant goes on.
#[tokio::test]
async fn a_refresh_for_a_removed_user_spends_nothing() {
    let (service, router) = service();
    let (_, issued) = token(&router, &redeem(&code(&service).await, VERIFIER)).await;
    let mut without_alice = service.config.clone();
    without_alice.users.clear();
    refused_after_reload_yet_unspent(&service, &router, without_alice, &issued).await;
}

/// A code issued without PKCE, to a client that was confidential then and is public after a
/// reload, was redeemed with the client's id alone.
#[tokio::test]
async fn a_public_clients_code_without_pkce_is_not_redeemed() {
    let (service, router) = service();
    let code = service
        .store_code(PendingCode {
            client_id: "spa".to_owned(),
            redirect_uri: REDIRECT.to_owned(),
            code_challenge: None,
            nonce: None,
            scopes: vec!["openid".to_owned()],
            principal: Principal::Local("alice".to_owned()),
            issued_at: service.now(),
            signed_in: crate::issuer::state::SignedIn::AtIssue,
        })
        .await
        .unwrap();
    let form = format!(
        "grant_type=authorization_code&code={code}&redirect_uri={}",
        url::form_urlencoded::byte_serialize(REDIRECT.as_bytes()).collect::<String>()
    );
    let (status, error) = token(&router, &form).await;
    assert_eq!(
        (status, &error["error"]),
        (StatusCode::BAD_REQUEST, &"invalid_grant".into()),
        "{error}"
    );
}

/// A grant may rotate twice as often as a client refreshing at each access token's expiry
/// would over its life: with one-second access tokens, a thousand rotations would have ended
/// a 12 h grant after 17 minutes.
#[test]
fn a_grant_may_rotate_twice_as_often_as_its_access_tokens_expire() {
    let (service, _) = service();
    assert_eq!(service.rotations_most(), 1_000, "12 h of 30 min tokens");
    let mut short = service.config.clone();
    short.token_lifetime = std::time::Duration::from_secs(1);
    let short = reloaded(&service, short);
    assert_eq!(short.rotations_most(), 2 * 12 * 3_600);
    // And never fewer than one a minute over a long grant's life.
    let mut long = service.config.clone();
    long.grant_lifetime = std::time::Duration::from_secs(30 * 86_400);
    long.token_lifetime = std::time::Duration::from_secs(3_600);
    let long = reloaded(&service, long);
    assert_eq!(long.rotations_most(), 30 * 24 * 60);
}

/// A federated code or grant is answered only while its provider is where the user signed
/// in: a reload that pointed the provider's name at another issuer (another tenant, an
/// identity provider dropped as compromised) or client refused neither, so a refresh token of
/// the old issuer's user went on getting tokens naming `aad:<sub>`, now a user of the new one.
#[tokio::test]
async fn a_federated_code_or_grant_is_no_ones_once_its_provider_moved() {
    let (base, _) = service();
    let mut config = base.config.clone();
    config
        .clients
        .iter_mut()
        .filter(|client| client.client_id == "spa")
        .for_each(|client| client.login_provider = Some("corp".to_owned()));
    let at = |issuer: &str, client_id: &str| ProviderAt {
        issuer: issuer.to_owned(),
        client_id: client_id.to_owned(),
    };
    let serving = |providers_at: ProviderAt| {
        let mut service = reloaded(&base, config.clone());
        service.providers = [("corp".to_owned(), providers_at)].into();
        let service = Arc::new(service);
        let router = crate::issuer::tests::router(&service);
        (service, router)
    };
    let signed_in_at = at("https://tenant-a.example", "tollgate");
    let (service, router) = serving(signed_in_at.clone());
    let code_for = |at: Option<ProviderAt>| {
        let service = service.clone();
        async move {
            service
                .store_code(PendingCode {
                    client_id: "spa".to_owned(),
                    redirect_uri: REDIRECT.to_owned(),
                    code_challenge: Some(challenge(VERIFIER)),
                    nonce: None,
                    scopes: vec!["openid".to_owned()],
                    principal: Principal::Federated {
                        sub: "u-1".to_owned(),
                        claims: serde_json::Map::new(),
                        provider: Some("corp".to_owned()),
                        at,
                    },
                    issued_at: service.now(),
                    signed_in: crate::issuer::state::SignedIn::AtIssue,
                })
                .await
                .unwrap()
        }
    };
    let (status, issued) = token(
        &router,
        &redeem(&code_for(Some(signed_in_at.clone())).await, VERIFIER),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{issued}");
    let refresh = format!(
        "grant_type=refresh_token&refresh_token={}",
        issued["refresh_token"].as_str().unwrap()
    );
    let waiting = code_for(Some(signed_in_at.clone())).await;
    for moved in [
        at("https://tenant-b.example", "tollgate"),
        at("https://tenant-a.example", "another-client"),
    ] {
        let (_, moved_router) = serving(moved.clone());
        for form in [refresh.as_str(), &redeem(&waiting, VERIFIER)] {
            let (status, error) = token(&moved_router, form).await;
            assert_eq!(
                (status, &error["error"]),
                (StatusCode::BAD_REQUEST, &"invalid_grant".into()),
                "{moved:?}: {form}"
            );
        }
    }
    // Refused before anything was spent: where the provider still is, the grant goes on.
    assert_eq!(token(&router, &refresh).await.0, StatusCode::OK);
    // A record stored before the provider's issuer was kept (an older Tollgate, during a
    // rolling upgrade) is taken by the provider's name, as then.
    let (status, issued) = token(&router, &redeem(&code_for(None).await, VERIFIER)).await;
    assert_eq!(status, StatusCode::OK, "{issued}");
}

/// A code is redeemed for the scopes its client may be granted now: a scope a reload took
/// from it in the code's minute was still in the tokens (refreshes already filtered).
#[tokio::test]
async fn a_code_grants_only_the_scopes_its_client_may_have_now() {
    let (service, router) = service();
    // `spa` lists no `scim` (any more).
    let code = sign_in_with_scim(&service).await;
    let (status, issued) = token(&router, &redeem(&code, VERIFIER)).await;
    assert_eq!(status, StatusCode::OK, "{issued}");
    assert_eq!(issued["scope"], "openid");
    assert_eq!(
        claims_of(issued["access_token"].as_str().unwrap())["scope"],
        "openid"
    );
}
