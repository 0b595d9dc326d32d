//! SPEC §7: the built-in provider (local part) and `tollgate demo` end to end.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use serde_json::Value;

use crate::support::browser::location;
use crate::support::{Browser, Gateway};

pub(crate) const VERIFIER: &str = "a-code-verifier-that-is-long-enough-for-rfc-7636-0123456789";

pub(crate) fn challenge(verifier: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}

async fn token_service() -> (Gateway, String) {
    Gateway::start_at_issuer(|issuer| config(issuer, "", "")).await
}

/// The token service used by these tests at `issuer`, with `token_service_extra` added to its
/// section and `top` before it (another section).
pub(crate) fn config(issuer: &str, top: &str, token_service_extra: &str) -> String {
    format!(
        r#"[server]
    listen = "127.0.0.1:0"
    admin_listen = "127.0.0.1:0"
    {top}
    [token_service]
    issuer = "{issuer}"
    {token_service_extra}
    [[token_service.client]]
    client_id = "spa"
    grants = ["authorization_code", "refresh_token"]
    redirect_uris = ["https://spa.example.com/cb"]
    source = "aad"
    [[token_service.client]]
    client_id = "machine"
    client_secret_hash = "{secret_hash}"
    grants = ["client_credentials"]
    scopes = ["scim", "read"]
    source = "myapi"
    audience = "odj"
    extra_claims = {{ api_product_list = ["odj-core"] }}
    [[token_service.user]]
    username = "alice"
    password_hash = "{password_hash}"
    name = "Alice"
    email = "alice@example.com"
    "#,
        secret_hash = tollgate::hash_password("machine-secret").unwrap(),
        password_hash = tollgate::hash_password("alice-password").unwrap(),
    )
}

/// The login form's post: `spa`'s authorization request (with PKCE) and alice's `password`.
/// A login form's token as its page sets it (cookie) and the form carries it (field): a post
/// of credentials needs both, whatever `Sec-Fetch-Site` says.
const FORM_TOKEN: &str = "form-token-of-the-tests-form-token-of-the-t";

/// The `Cookie` header of a browser that was shown the login form.
const FORM_COOKIE: &str = "tollgate_form=form-token-of-the-tests-form-token-of-the-t";

/// The login form as the browser posts it, its token included.
fn login_form(state: &str, password: &str) -> String {
    format!(
        "{}&username=alice&password={password}&form_token={FORM_TOKEN}",
        authorize_query(state, true)
    )
}

/// Posts the login form as the browser showing the token service's page does (one that sends
/// no Fetch Metadata: the form's token and its cookie vouch for the post).
async fn sign_in(
    browser: &mut Browser,
    gateway: &Gateway,
    state: &str,
    password: &str,
) -> reqwest::Response {
    browser
        .post_login(
            &gateway.url("/authorize"),
            &authorize_query(state, true),
            &format!("username=alice&password={password}"),
        )
        .await
}

fn authorize_query(state: &str, with_pkce: bool) -> String {
    let mut query = format!(
        "response_type=code&client_id=spa&redirect_uri=https%3A%2F%2Fspa.example.com%2Fcb&scope=openid%20email&state={state}&nonce=n-1"
    );
    if with_pkce {
        query.push_str(&format!(
            "&code_challenge={}&code_challenge_method=S256",
            challenge(VERIFIER)
        ));
    }
    query
}

pub(crate) async fn token_request(
    gateway: &Gateway,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> (u16, Value) {
    let mut request = gateway.post("/token").form(form);
    if let Some((id, secret)) = basic {
        request = request.basic_auth(id, Some(secret));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn discovery_and_jwks_describe_the_issuer() {
    let (gateway, issuer) = token_service().await;
    let discovery: Value = reqwest::get(gateway.url("/.well-known/openid-configuration"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], issuer);
    assert_eq!(discovery["token_endpoint"], format!("{issuer}/token"));
    assert_eq!(discovery["code_challenge_methods_supported"][0], "S256");
    // Absent, OpenID Connect Discovery would read it as true.
    assert_eq!(discovery["request_uri_parameter_supported"], false);
    assert!(
        discovery["claims_supported"]
            .as_array()
            .unwrap()
            .contains(&Value::from("auth_time"))
    );
    let jwks: Value = reqwest::get(gateway.url("/jwks"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"][0]["kty"], "EC");
    assert!(
        jwks["keys"][0].get("d").is_none(),
        "no private part is published"
    );
}

/// An access token for `machine` (client_credentials) from the token endpoint at `url`.
async fn machine_token_at(url: &str) -> String {
    let body: Value = reqwest::Client::new()
        .post(url)
        .basic_auth("machine", Some("machine-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn an_issuer_with_a_path_answers_every_endpoint_its_discovery_names() {
    // openid-client follows discovery: `userinfo_endpoint` under the issuer's path must answer.
    let (gateway, issuer) =
        Gateway::start_at_issuer(|origin| config(&format!("{origin}/oauth"), "", "")).await;
    let issuer = format!("{issuer}/oauth");
    let discovery: Value = reqwest::get(format!("{issuer}/.well-known/openid-configuration"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], issuer);
    let access = machine_token_at(discovery["token_endpoint"].as_str().unwrap()).await;
    let access = access.as_str();
    for endpoint in ["userinfo_endpoint", "jwks_uri"] {
        let url = discovery[endpoint].as_str().unwrap();
        assert!(url.starts_with(&issuer), "{endpoint}: {url}");
        let response = reqwest::Client::new()
            .get(url)
            .bearer_auth(access)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{endpoint}: {url}");
    }
    // OpenID Connect Core §5.3.1: the UserInfo endpoint takes POST as well as GET.
    let userinfo = discovery["userinfo_endpoint"].as_str().unwrap();
    let by = |method: reqwest::Method| {
        reqwest::Client::new()
            .request(method, userinfo)
            .bearer_auth(access)
            .send()
    };
    let (get, post) = (
        by(reqwest::Method::GET).await.unwrap(),
        by(reqwest::Method::POST).await.unwrap(),
    );
    assert_eq!(post.status(), 200, "POST {userinfo}");
    let (get, post): (Value, Value) = (get.json().await.unwrap(), post.json().await.unwrap());
    assert_eq!(post, get, "the same claims by either method");
    assert_eq!(post["sub"], "myapi:machine");
    drop(gateway);
}

#[tokio::test]
async fn authorization_code_with_pkce_through_the_login_form() {
    let (gateway, issuer) = token_service().await;
    let mut browser = Browser::new();
    let form = browser
        .get(&gateway.url(&format!("/authorize?{}", authorize_query("s-1", true))))
        .await;
    assert_eq!(form.status(), 200);
    let policy = form.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        policy.starts_with("default-src 'none'") && !policy.contains("form-action"),
        "the redirects after the form, to any origin, must be allowed: {policy}"
    );
    assert!(form.text().await.unwrap().contains("name=\"password\""));
    let wrong = sign_in(&mut browser, &gateway, "s-1", "nope").await;
    assert_eq!(wrong.status(), 401);
    let right = sign_in(&mut browser, &gateway, "s-1", "alice-password").await;
    assert_eq!(right.status(), 303);
    let back = reqwest::Url::parse(&location(&right)).unwrap();
    assert_eq!(back.host_str(), Some("spa.example.com"));
    let params: HashMap<String, String> = back.query_pairs().into_owned().collect();
    assert_eq!(params["state"], "s-1");
    assert_eq!(params["iss"], issuer, "RFC 9207");
    let code = params["code"].clone();

    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", "https://spa.example.com/cb"),
        ("client_id", "spa"),
        (
            "code_verifier",
            "wrong-verifier-wrong-verifier-wrong-verifier-000",
        ),
    ];
    let (status, body) = token_request(&gateway, &form, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "a wrong verifier burns the code"
    );

    let right = sign_in(&mut browser, &gateway, "s-2", "alice-password").await;
    let code = reqwest::Url::parse(&location(&right))
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", "https://spa.example.com/cb"),
        ("client_id", "spa"),
        ("code_verifier", VERIFIER),
    ];
    let (status, body) = token_request(&gateway, &form, None).await;
    assert_eq!(status, 200, "{body}");
    let access_token = body["access_token"].as_str().unwrap().to_owned();
    let claims = decode_payload(&access_token);
    assert_eq!(claims["sub"], "aad:alice");
    assert_eq!(claims["iss"], issuer);
    assert_eq!(claims["email"], "alice@example.com");
    let id_claims = decode_payload(body["id_token"].as_str().unwrap());
    assert_eq!(id_claims["nonce"], "n-1");
    assert_eq!(id_claims["aud"], "spa");
    let userinfo = gateway
        .get("/userinfo")
        .bearer_auth(&access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(userinfo.status(), 200);
    let (status, body) = token_request(&gateway, &form, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "codes are single-use"
    );
}

/// A scope asked for twice is granted once: repeated, scopes only grew the login state (a
/// federated login seals the request into a cookie) and the token's `scope`.
#[tokio::test]
async fn a_scope_asked_for_twice_is_granted_once() {
    let (gateway, _) = token_service().await;
    let mut browser = Browser::new();
    let query = authorize_query("s-d", true).replace(
        "scope=openid%20email",
        "scope=openid%20email%20openid%20%20email",
    );
    let signed_in = browser
        .post_login(
            &gateway.url("/authorize"),
            &query,
            "username=alice&password=alice-password",
        )
        .await;
    assert_eq!(signed_in.status(), 303);
    let back = reqwest::Url::parse(&location(&signed_in)).unwrap();
    let params: HashMap<String, String> = back.query_pairs().into_owned().collect();
    let (status, body) = exchange(&gateway, &params["code"]).await;
    assert_eq!(status, 200, "{body}");
    let claims = decode_payload(body["access_token"].as_str().unwrap());
    assert_eq!(claims["scope"], "openid email");
}

fn decode_payload(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn bad_authorization_requests_are_refused_without_open_redirects() {
    let (gateway, _) = token_service().await;
    let mut browser = Browser::new();
    let unregistered = browser.get(&gateway.url("/authorize?response_type=code&client_id=spa&redirect_uri=https%3A%2F%2Fevil.example%2Fcb&code_challenge_method=S256")).await;
    assert_eq!(
        unregistered.status(),
        400,
        "an unregistered redirect_uri is never redirected to"
    );
    let unknown = browser.get(&gateway.url("/authorize?response_type=code&client_id=nobody&redirect_uri=https%3A%2F%2Fspa.example.com%2Fcb")).await;
    assert_eq!(unknown.status(), 400);
    // Pages a person sees carry the page policy and are never cached (SPEC §10).
    for page in [&unregistered, &unknown] {
        let headers = page.headers();
        assert_eq!(headers["cache-control"], "no-store");
        assert!(
            headers["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("default-src 'none'"),
            "{headers:?}"
        );
    }
    // RFC 6749 §4.1.2.1: a missing response_type is an invalid request.
    let no_type = browser
        .get(&gateway.url(&format!(
            "/authorize?{}",
            authorize_query("s", true).replace("response_type=code&", "")
        )))
        .await;
    assert!(
        location(&no_type).contains("error=invalid_request"),
        "{}",
        location(&no_type)
    );
    let no_pkce = browser
        .get(&gateway.url(&format!("/authorize?{}", authorize_query("s", false))))
        .await;
    assert_eq!(no_pkce.status(), 302);
    assert!(
        location(&no_pkce).contains("error=invalid_request"),
        "public clients must use PKCE"
    );
    // OIDC Core §3.1.2.6: the service keeps no sign-in of its own, so an authorization that
    // may not ask the user goes back with login_required, never to the form.
    let silent = browser
        .get(&gateway.url(&format!(
            "/authorize?{}&prompt=none",
            authorize_query("s-silent", true)
        )))
        .await;
    assert_eq!(silent.status(), 302);
    let back = location(&silent);
    assert!(
        back.starts_with("https://spa.example.com/cb?")
            && back.contains("error=login_required")
            && back.contains("state=s-silent"),
        "{back}"
    );
    // OIDC Core §6.1, §6.2: a request object is refused, never ignored with the `prompt` or
    // `max_age` it holds; a response mode other than `query` is refused too.
    for (extra, error) in [
        (
            "request=eyJhbGciOiJub25lIn0.eyJwcm9tcHQiOiJsb2dpbiJ9.",
            "request_not_supported",
        ),
        (
            "request_uri=https%3A%2F%2Fspa.example.com%2Frequest.jwt",
            "request_uri_not_supported",
        ),
        ("response_mode=form_post", "invalid_request"),
        ("response_mode=fragment", "invalid_request"),
    ] {
        let refused = browser
            .get(&gateway.url(&format!(
                "/authorize?{}&{extra}",
                authorize_query("s-object", true)
            )))
            .await;
        assert_eq!(refused.status(), 302, "{extra}");
        let back = location(&refused);
        assert!(
            back.starts_with("https://spa.example.com/cb?")
                && back.contains(&format!("error={error}&"))
                && back.contains("state=s-object")
                && !back.contains("code="),
            "{extra}: {back}"
        );
    }
    let query_mode = browser
        .get(&gateway.url(&format!(
            "/authorize?{}&response_mode=query",
            authorize_query("s-query", true)
        )))
        .await;
    assert_eq!(query_mode.status(), 200, "the form, as without it");
}

/// `/token`'s answers, tokens or errors, are kept by no cache (RFC 6749 §5.1: `no-store` and
/// `Pragma: no-cache`), and every 401 names the scheme to authenticate with (RFC 9110
/// §15.5.2), also to a client that sent its secret in the form body, or none.
#[tokio::test]
async fn token_answers_are_uncached_name_their_401_scheme_and_quote_only_safe_text() {
    let (gateway, _) = token_service().await;
    let send = |form: Vec<(&'static str, &'static str)>,
                basic: Option<(&'static str, &'static str)>| {
        let mut request = gateway.post("/token").form(&form);
        if let Some((id, secret)) = basic {
            request = request.basic_auth(id, Some(secret));
        }
        async move { request.send().await.unwrap() }
    };
    let grant = ("grant_type", "client_credentials");
    let issued = send(vec![grant], Some(("machine", "machine-secret"))).await;
    let refused = send(
        vec![("grant_type", "password")],
        Some(("machine", "machine-secret")),
    )
    .await;
    for (answer, status) in [(&issued, 200), (&refused, 400)] {
        assert_eq!(answer.status(), status);
        assert_eq!(answer.headers()["cache-control"], "no-store");
        assert_eq!(answer.headers()["pragma"], "no-cache");
    }
    let basic = send(vec![grant], Some(("machine", "wrong"))).await;
    let in_body = send(
        vec![grant, ("client_id", "machine"), ("client_secret", "wrong")],
        None,
    )
    .await;
    let unnamed = send(vec![grant], None).await;
    for answer in [&basic, &in_body, &unnamed] {
        assert_eq!(answer.status(), 401);
        assert_eq!(
            answer.headers()["www-authenticate"],
            "Basic realm=\"tollgate\""
        );
        assert_eq!(answer.headers()["pragma"], "no-cache");
    }
    // An error's description quotes what was sent only in the characters RFC 6749 §5.2 allows
    // there: a repeated parameter named `"x\` is described as `?x?`.
    let repeated = gateway
        .post("/token")
        .basic_auth("machine", Some("machine-secret"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&%22x%5C=1&%22x%5C=2")
        .send()
        .await
        .unwrap();
    assert_eq!(repeated.status(), 400);
    let body: Value = repeated.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
    assert_eq!(body["error_description"], "parameter `?x?` repeated");
}

#[tokio::test]
async fn client_credentials_issue_tokens_that_validate_accepts() {
    let (gateway, issuer) = token_service().await;
    let (status, body) = token_request(
        &gateway,
        &[("grant_type", "client_credentials"), ("scope", "scim")],
        Some(("machine", "machine-secret")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let claims = decode_payload(body["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], "myapi:machine");
    assert_eq!(claims["aud"], "odj");
    assert_eq!(claims["iss"], issuer);
    assert_eq!(claims["api_product_list"][0], "odj-core");
    let validate = gateway
        .get("/validate")
        .bearer_auth(body["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(validate.status(), 200);
    // Revocable at `/revoke` any moment: a resource server's private cache must not keep
    // accepting it (it was `private, max-age=300`).
    assert_eq!(validate.headers()["cache-control"], "no-store");

    let post = [
        ("grant_type", "client_credentials"),
        ("client_id", "machine"),
        ("client_secret", "machine-secret"),
    ];
    assert_eq!(
        token_request(&gateway, &post, None).await.0,
        200,
        "client_secret_post"
    );
    let (status, body) = token_request(
        &gateway,
        &[("grant_type", "client_credentials")],
        Some(("machine", "wrong")),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let (status, body) = token_request(
        &gateway,
        &[("grant_type", "client_credentials"), ("scope", "admin")],
        Some(("machine", "machine-secret")),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_scope"))
    );
    let (status, body) = token_request(
        &gateway,
        &[("grant_type", "password")],
        Some(("machine", "machine-secret")),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    let (status, body) =
        token_request(&gateway, &[("grant_type", "client_credentials")], None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
}

#[tokio::test]
async fn demo_runs_the_whole_system_on_loopback() {
    demo_signs_alice_in("127.0.0.1:0").await;
}

/// Bound to every interface, the demo's links, issuer and allowed redirects name loopback: a
/// browser sent to `0.0.0.0` would keep no cookie for the app's address, and `/signin` refused
/// the host.
#[tokio::test]
async fn demo_bound_to_every_interface_signs_in_at_loopback() {
    demo_signs_alice_in("0.0.0.0:0").await;
}

async fn demo_signs_alice_in(address: &'static str) {
    let bind = || async { tokio::net::TcpListener::bind(address).await.unwrap() };
    let demo = tollgate::demo::start(
        bind().await,
        bind().await,
        bind().await,
        Arc::new(tollgate::clock::SystemClock),
    )
    .await
    .unwrap();
    let app_url = format!("http://{}/hello", demo.app_addr);
    // Opened by another name (`localhost`), the sign-in still returns to the app's address:
    // `/signin` refuses `localhost`, and its cookie would not reach it.
    let by_name = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(&app_url)
        .header("host", format!("localhost:{}", demo.app_addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(by_name.status(), 302);
    let rd: String = url::form_urlencoded::byte_serialize(app_url.as_bytes()).collect();
    assert!(
        location(&by_name).ends_with(&format!("/signin?rd={rd}")),
        "{}",
        location(&by_name)
    );
    let mut browser = Browser::new();
    let (form, form_url) = browser.follow(&app_url).await;
    assert_eq!(form.status(), 200);
    assert!(form_url.contains("/authorize?"));
    let alice = demo
        .users
        .iter()
        .find(|user| user.username == "alice")
        .unwrap();
    let query = form_url.split_once('?').unwrap().1;
    let submitted = browser
        .post_login(
            &format!("http://{}/authorize", demo.public_addr),
            query,
            &format!("username=alice&password={}", alice.password),
        )
        .await;
    assert_eq!(submitted.status(), 303);
    let (page, page_url) = browser.follow(&location(&submitted)).await;
    assert_eq!(page_url, app_url);
    let html = page.text().await.unwrap();
    assert!(html.contains("alice@example.com"), "{html}");
    assert!(html.contains("demo:alice"));
    demo.shutdown().await.unwrap();
}

/// Logs `alice` in at the form and returns the code.
pub(crate) async fn code_for(gateway: &Gateway, state: &str) -> String {
    let mut browser = Browser::new();
    let right = sign_in(&mut browser, gateway, state, "alice-password").await;
    reqwest::Url::parse(&location(&right))
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned()
}

pub(crate) async fn exchange(gateway: &Gateway, code: &str) -> (u16, Value) {
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", "https://spa.example.com/cb"),
        ("client_id", "spa"),
        ("code_verifier", VERIFIER),
    ];
    token_request(gateway, &form, None).await
}

pub(crate) async fn validate(gateway: &Gateway, access_token: &str) -> u16 {
    get_with_token(gateway, "/validate", access_token).await
}

/// The status of `GET path` with `access_token` as the bearer token.
pub(crate) async fn get_with_token(gateway: &Gateway, path: &str, access_token: &str) -> u16 {
    gateway
        .get(path)
        .bearer_auth(access_token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

pub(crate) async fn refresh(gateway: &Gateway, refresh_token: &str) -> (u16, Value) {
    token_request(
        gateway,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", "spa"),
        ],
        None,
    )
    .await
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_reused_one_ends_the_whole_grant() {
    let (gateway, _) = token_service().await;
    let (status, first) = exchange(&gateway, &code_for(&gateway, "r").await).await;
    assert_eq!(status, 200, "{first}");
    let first_refresh = first["refresh_token"].as_str().unwrap().to_owned();
    let (status, second) = refresh(&gateway, &first_refresh).await;
    assert_eq!(status, 200, "{second}");
    let second_refresh = second["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(first_refresh, second_refresh, "rotated");
    assert_eq!(
        decode_payload(second["access_token"].as_str().unwrap())["sub"],
        "aad:alice"
    );
    assert_eq!(
        validate(&gateway, second["access_token"].as_str().unwrap()).await,
        200
    );

    let (status, reused) = refresh(&gateway, &first_refresh).await;
    assert_eq!(
        (status, reused["error"].as_str()),
        (400, Some("invalid_grant")),
        "reuse is refused"
    );
    let (status, _) = refresh(&gateway, &second_refresh).await;
    assert_eq!(status, 400, "and the whole grant ended with it");
    assert_eq!(
        validate(&gateway, second["access_token"].as_str().unwrap()).await,
        401,
        "its access tokens too"
    );
    assert_eq!(
        validate(&gateway, first["access_token"].as_str().unwrap()).await,
        401
    );
}

/// A refresh token made up from a real grant's id (every token of the grant carries it as
/// `sid`) is unknown before anything is read for it: it was answered from the grant (whether
/// it exists, which scopes it holds, whether its sign-in is too old), two tokens signed before
/// the token was looked up.
#[tokio::test]
async fn a_made_up_refresh_token_of_a_real_grant_is_unknown_at_once() {
    let (gateway, _) = token_service().await;
    let (status, issued) = exchange(&gateway, &code_for(&gateway, "m").await).await;
    assert_eq!(status, 200, "{issued}");
    let real = issued["refresh_token"].as_str().unwrap();
    let (grant, _) = real.split_once('.').unwrap();
    let made_up = format!("{grant}.{}", "A".repeat(43));
    let (status, answer) = token_request(
        &gateway,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &made_up),
            ("client_id", "spa"),
            ("scope", "openid no-such-scope"),
        ],
        None,
    )
    .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_grant")),
        "{answer}"
    );
    // The real one still works.
    assert_eq!(refresh(&gateway, real).await.0, 200);
}

#[tokio::test]
async fn a_replayed_code_revokes_what_it_issued() {
    let (gateway, _) = token_service().await;
    let code = code_for(&gateway, "c").await;
    let (status, issued) = exchange(&gateway, &code).await;
    assert_eq!(status, 200);
    assert_eq!(
        validate(&gateway, issued["access_token"].as_str().unwrap()).await,
        200
    );
    let (status, replay) = exchange(&gateway, &code).await;
    assert_eq!(
        (status, replay["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_eq!(
        validate(&gateway, issued["access_token"].as_str().unwrap()).await,
        401
    );
    assert_eq!(
        refresh(&gateway, issued["refresh_token"].as_str().unwrap())
            .await
            .0,
        400
    );
}

/// A code presented by a client it was not issued to (a leaked code, and any public client's
/// id) neither spends it nor, once its own client redeemed it, revokes what it issued: it used
/// to do both, so a leaked code could fail the login it belonged to or sign its user out.
#[tokio::test]
async fn another_clients_code_is_neither_spent_nor_revoked_by_a_client() {
    let (gateway, _) = Gateway::start_at_issuer(|issuer| {
        config(
            issuer,
            "",
            r#"[[token_service.client]]
    client_id = "other-spa"
    grants = ["authorization_code"]
    redirect_uris = ["https://spa.example.com/cb"]"#,
        )
    })
    .await;
    let code = code_for(&gateway, "o").await;
    let by_other = || {
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", "https://spa.example.com/cb"),
            ("client_id", "other-spa"),
            ("code_verifier", VERIFIER),
        ];
        let gateway = &gateway;
        async move { token_request(gateway, &form, None).await }
    };
    let (status, refused) = by_other().await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, issued) = exchange(&gateway, &code).await;
    assert_eq!(status, 200, "its own client still redeems it: {issued}");
    let (status, _) = by_other().await;
    assert_eq!(status, 400);
    let access_token = issued["access_token"].as_str().unwrap();
    assert_eq!(validate(&gateway, access_token).await, 200, "not revoked");
    let (status, _) = refresh(&gateway, issued["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "its grant is not revoked");
}

/// A refresh token is bound to the client it was issued to (RFC 6749 §6): presented by another
/// client (a public one needs no secret), it is refused and ends nothing, spent or not. Reuse
/// detection used to come first, so whoever held an old, spent refresh token of `spa` ended
/// `spa`'s grant, and its access tokens, by presenting it as `other-spa`; and a scope check
/// before it told `other-spa` which scopes a live token of `spa` held. In memory and in Redis
/// (the spending script).
#[tokio::test]
async fn another_clients_refresh_token_spent_or_not_ends_nothing() {
    let redis = crate::support::redis::RedisServer::standalone().await;
    for store in ["memory", "redis"] {
        let (top, store_line) = match store {
            "redis" => (
                format!(
                    "[session]\nsecrets = [\"{}\"]\nredis_url = \"{}\"",
                    crate::support::gateway::SESSION_SECRET,
                    redis.url()
                ),
                "store = \"redis\"",
            ),
            _ => (String::new(), ""),
        };
        let extra = format!(
            r#"{store_line}
    [[token_service.client]]
    client_id = "other-spa"
    grants = ["authorization_code", "refresh_token"]
    redirect_uris = ["https://other.example.com/cb"]"#
        );
        let (gateway, _) = Gateway::start_at_issuer(|issuer| config(issuer, &top, &extra)).await;
        let by_other = async |refresh_token: &str, scope: Option<&str>| {
            let mut form = vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
                ("client_id", "other-spa"),
            ];
            form.extend(scope.map(|scope| ("scope", scope)));
            let (status, refused) = token_request(&gateway, &form, None).await;
            (
                status,
                refused["error"].as_str().unwrap_or_default().to_owned(),
            )
        };
        let (status, first) = exchange(&gateway, &code_for(&gateway, "o").await).await;
        assert_eq!(status, 200, "{store}: {first}");
        let spent = first["refresh_token"].as_str().unwrap().to_owned();
        let (status, second) = refresh(&gateway, &spent).await;
        assert_eq!(status, 200, "{store}: {second}");
        let live = second["refresh_token"].as_str().unwrap().to_owned();

        assert_eq!(
            by_other(&spent, None).await,
            (400, "invalid_grant".to_owned()),
            "{store}"
        );
        assert_eq!(
            by_other(&live, Some("not-held")).await,
            (400, "invalid_grant".to_owned()),
            "{store}: another client learns nothing of the grant's scopes"
        );
        assert_eq!(
            by_other(&live, None).await,
            (400, "invalid_grant".to_owned()),
            "{store}"
        );
        let access_token = second["access_token"].as_str().unwrap();
        assert_eq!(
            validate(&gateway, access_token).await,
            200,
            "{store}: not revoked"
        );
        let (status, third) = refresh(&gateway, &live).await;
        assert_eq!(status, 200, "{store}: the grant lives on: {third}");
        gateway.stop().await;
    }
}

/// RFC 7636 §4.6: a public client's id is no secret, so whoever holds a leaked code could
/// present it as that client: without the code's verifier (or without any), the code is
/// neither spent before its client redeems it nor, once redeemed, a replay that revokes what
/// it issued. It used to be taken before its verifier was checked.
#[tokio::test]
async fn a_code_without_its_verifier_is_neither_spent_nor_revoked() {
    let (gateway, _) = token_service().await;
    let code = code_for(&gateway, "p").await;
    let without_verifier = async |verifier: Option<&str>| {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", "https://spa.example.com/cb"),
            ("client_id", "spa"),
        ];
        form.extend(verifier.map(|verifier| ("code_verifier", verifier)));
        let (status, refused) = token_request(&gateway, &form, None).await;
        (
            status,
            refused["error"].as_str().unwrap_or_default().to_owned(),
        )
    };
    let wrong = "another-code-verifier-that-is-long-enough-for-rfc-7636-98765";
    let refused = (400, "invalid_grant".to_owned());
    assert_eq!(without_verifier(Some(wrong)).await, refused);
    assert_eq!(without_verifier(None).await, refused);
    let (status, issued) = exchange(&gateway, &code).await;
    assert_eq!(status, 200, "its client still redeems it: {issued}");
    assert_eq!(without_verifier(Some(wrong)).await, refused);
    assert_eq!(without_verifier(None).await, refused);
    let access_token = issued["access_token"].as_str().unwrap();
    assert_eq!(validate(&gateway, access_token).await, 200, "not revoked");
    let (status, _) = refresh(&gateway, issued["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "its grant is not revoked");
    // With the verifier, a replay is one, and revokes what the code issued.
    let (status, _) = exchange(&gateway, &code).await;
    assert_eq!(status, 400);
    assert_eq!(validate(&gateway, access_token).await, 401);
}

#[tokio::test]
async fn revocation_of_refresh_and_access_tokens() {
    let (gateway, _) = token_service().await;
    let (_, issued) = exchange(&gateway, &code_for(&gateway, "v").await).await;
    let revoke = |token: String, client: &'static str| {
        let url = gateway.url("/revoke");
        async move {
            reqwest::Client::new()
                .post(url)
                .form(&[("token", token.as_str()), ("client_id", client)])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        revoke("not-a-token".to_owned(), "spa").await,
        200,
        "unknown tokens answer 200 too"
    );
    assert_eq!(
        revoke(issued["access_token"].as_str().unwrap().to_owned(), "spa").await,
        200
    );
    assert_eq!(
        validate(&gateway, issued["access_token"].as_str().unwrap()).await,
        401
    );
    assert_eq!(
        refresh(&gateway, issued["refresh_token"].as_str().unwrap())
            .await
            .0,
        200,
        "revoking an access token leaves the grant"
    );
    let (_, other) = exchange(&gateway, &code_for(&gateway, "w").await).await;
    assert_eq!(
        revoke(other["refresh_token"].as_str().unwrap().to_owned(), "spa").await,
        200
    );
    assert_eq!(
        refresh(&gateway, other["refresh_token"].as_str().unwrap())
            .await
            .0,
        400
    );
    assert_eq!(
        validate(&gateway, other["access_token"].as_str().unwrap()).await,
        401,
        "the grant's access tokens end too"
    );
    // RFC 7009 §2.1 with RFC 6749 §3.1: each parameter once. Two tokens are refused, and
    // neither is revoked.
    let (_, third) = exchange(&gateway, &code_for(&gateway, "x").await).await;
    let third_access = third["access_token"].as_str().unwrap();
    let twice = gateway
        .post("/revoke")
        .form(&[
            ("token", "not-a-token"),
            ("token", third_access),
            ("client_id", "spa"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(twice.status(), 400);
    let error: Value = twice.json().await.unwrap();
    assert_eq!(error["error"], "invalid_request");
    assert_eq!(validate(&gateway, third_access).await, 200);
    let machine = gateway
        .post("/revoke")
        .basic_auth("machine", Some("wrong"))
        .form(&[("token", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        machine.status(),
        401,
        "a client that fails to authenticate is refused"
    );
}

#[tokio::test]
async fn failed_client_authentication_is_rate_limited() {
    let (gateway, _) = token_service().await;
    for _ in 0..10 {
        let (status, _) = token_request(
            &gateway,
            &[("grant_type", "client_credentials")],
            Some(("machine", "wrong")),
        )
        .await;
        assert_eq!(status, 401);
    }
    let response = gateway
        .post("/token")
        .basic_auth("machine", Some("machine-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        429,
        "even the right secret waits out the window"
    );
    assert_eq!(response.headers()["retry-after"], "60");
}

/// Wrong secrets sent all at once: each request used to pass the limit check before the first
/// failure was counted (an argon2 check takes tens of milliseconds), so 40 concurrent guesses
/// were 40 checks, and as many argon2 runs of 19 MiB each under way at once. Checks now hold
/// one of the process's permits (one per core) from the limit check to the failure's count:
/// at most `MAX_FAILURES + cores - 1` guesses are checked, the rest are refused unchecked.
#[tokio::test]
async fn concurrent_wrong_client_secrets_are_limited_like_sequential_ones() {
    let (gateway, _) = token_service().await;
    let attempts = (0..40).map(|attempt| {
        let request = gateway
            .post("/token")
            .basic_auth("machine", Some(format!("wrong-{attempt}")))
            .form(&[("grant_type", "client_credentials")]);
        tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
    });
    limited_like_sequential(&all_at_once(attempts).await);
}

/// The right secret sent by many requests at once, before any was remembered: every one is
/// served (the checks wait for a permit, and most find the secret verified meanwhile).
#[tokio::test]
async fn a_right_client_secret_sent_by_many_requests_at_once_serves_them_all() {
    let (gateway, _) = token_service().await;
    let attempts = (0..20).map(|_| {
        let request = gateway
            .post("/token")
            .basic_auth("machine", Some("machine-secret"))
            .form(&[("grant_type", "client_credentials")]);
        tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
    });
    let statuses = all_at_once(attempts).await;
    assert!(statuses.iter().all(|status| *status == 200), "{statuses:?}");
}

/// The login form, likewise: wrong passwords posted all at once are limited as if sent one by
/// one.
#[tokio::test]
async fn concurrent_wrong_passwords_are_limited_like_sequential_ones() {
    let (gateway, _) = token_service().await;
    let attempts = (0..40).map(|attempt| {
        let request = gateway
            .post("/authorize")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("sec-fetch-site", "same-origin")
            .header("cookie", FORM_COOKIE)
            .body(login_form("s-concurrent", &format!("wrong-{attempt}")));
        tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
    });
    limited_like_sequential(&all_at_once(attempts).await);
}

/// Wrong passwords for made-up names, each from another IPv6 address of one /64 (a host picks
/// any address in its /64): every post was under no limit, each ran an argon2 check, and a
/// flood of them kept every core busy in front of everyone's sign-in. Addresses of one /64 are
/// one client to the limit.
#[tokio::test]
async fn wrong_passwords_from_one_ipv6_64_are_limited_together() {
    let (gateway, _) = Gateway::start_at_issuer(|issuer| {
        config(issuer, "trusted_proxies = [\"127.0.0.1/32\"]", "")
    })
    .await;
    let mut statuses = Vec::new();
    for attempt in 0..12 {
        let response = gateway
            .post("/authorize")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("sec-fetch-site", "same-origin")
            .header("cookie", FORM_COOKIE)
            .header(
                "x-forwarded-for",
                format!("2001:db8:1:2::{:x}", attempt + 1),
            )
            .body(format!(
                "{}&username=nobody-{attempt}&password=wrong&form_token={FORM_TOKEN}",
                authorize_query("s-v6", true)
            ))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(&statuses[..10], &[401; 10], "{statuses:?}");
    assert_eq!(&statuses[10..], &[429; 2], "{statuses:?}");
    // Another /64 is another client.
    let response = gateway
        .post("/authorize")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "same-origin")
        .header("cookie", FORM_COOKIE)
        .header("x-forwarded-for", "2001:db8:1:3::1")
        .body(login_form("s-v6", "alice-password"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
}

/// Asserts that of wrong credentials sent all at once, between `MAX_FAILURES` (10) and
/// `10 + cores - 1` were checked (401) and the rest refused unchecked (429).
fn limited_like_sequential(statuses: &[u16]) {
    let checked = statuses.iter().filter(|status| **status == 401).count();
    let refused = statuses.iter().filter(|status| **status == 429).count();
    assert_eq!(
        checked + refused,
        statuses.len(),
        "only 401 and 429: {statuses:?}"
    );
    assert!(
        (10..=10 + cores() - 1).contains(&checked),
        "{checked} checked of {} sent at once, on {} cores: {statuses:?}",
        statuses.len(),
        cores()
    );
}

/// The answers of requests already sent, in order.
async fn all_at_once(requests: impl Iterator<Item = tokio::task::JoinHandle<u16>>) -> Vec<u16> {
    let requests: Vec<_> = requests.collect();
    let mut statuses = Vec::new();
    for request in requests {
        statuses.push(request.await.unwrap());
    }
    statuses
}

/// Cores of this machine, where the gateway under test runs too.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// SPEC §7: two upstream providers behind one issuer; the issued token says where the
/// identity came from.
#[tokio::test]
async fn federated_logins_at_two_upstream_providers_become_tokens_of_one_issuer() {
    use crate::support::TestIdp;
    use crate::support::idp::{CLIENT_ID, CLIENT_SECRET};
    let (corp, partner) = (TestIdp::start().await, TestIdp::start().await);
    // corp says its addresses are verified; partner says nothing of them. Each has a user who
    // calls themself alice.smith, as a local one could be called.
    corp.set_user_claim("email_verified", serde_json::json!(true));
    for upstream in [&corp, &partner] {
        upstream.set_user_claim("preferred_username", serde_json::json!("alice.smith"));
    }
    let (gateway, issuer) = Gateway::start_at_issuer(|issuer| {
        format!(
            r#"[server]
    listen = "127.0.0.1:0"
    admin_listen = "127.0.0.1:0"
    [session]
    secrets = ["{secret}"]
    [[provider]]
    name = "corp"
    issuer = "{corp}"
    client_id = "{CLIENT_ID}"
    client_secret = "{CLIENT_SECRET}"
    [[provider]]
    name = "partner"
    issuer = "{partner}"
    client_id = "{CLIENT_ID}"
    client_secret = "{CLIENT_SECRET}"
    [token_service]
    issuer = "{issuer}"
    [[token_service.client]]
    client_id = "corp-app"
    grants = ["authorization_code", "refresh_token"]
    redirect_uris = ["https://corp-app.example/cb"]
    login_provider = "corp"
    source = "aad"
    [[token_service.client]]
    client_id = "partner-app"
    grants = ["authorization_code"]
    redirect_uris = ["https://partner-app.example/cb"]
    login_provider = "partner"
    source = "partner"
    [[token_service.user]]
    username = "alice"
    password_hash = "{password_hash}"
    email = "alice@local.example"
    "#,
            secret = crate::support::gateway::SESSION_SECRET,
            corp = corp.issuer(),
            partner = partner.issuer(),
            password_hash = tollgate::hash_password("alice-password").unwrap(),
        )
    })
    .await;
    // A client that logs in at its provider never takes a local password: a local `alice`
    // would otherwise become `aad:alice`, the provider's alice, without its login.
    let form = format!(
        "response_type=code&client_id=corp-app&redirect_uri={}&scope=openid&code_challenge={}&code_challenge_method=S256&username=alice&password=alice-password&form_token={FORM_TOKEN}",
        url::form_urlencoded::byte_serialize(b"https://corp-app.example/cb").collect::<String>(),
        challenge(VERIFIER)
    );
    let posted = gateway
        .post("/authorize")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "same-origin")
        .header("cookie", FORM_COOKIE)
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(
        posted.status(),
        400,
        "{:?}",
        posted.headers().get("location")
    );
    let page = posted.text().await.unwrap();
    assert!(page.contains("login provider"), "{page}");
    for (client_id, redirect, upstream, expected_sub) in [
        (
            "corp-app",
            "https://corp-app.example/cb",
            &corp,
            "aad:alice",
        ),
        (
            "partner-app",
            "https://partner-app.example/cb",
            &partner,
            "partner:alice",
        ),
    ] {
        let mut browser = Browser::new();
        let query = format!(
            "response_type=code&client_id={client_id}&redirect_uri={}&scope=openid%20email&state=s-{client_id}&nonce=n-1&code_challenge={}&code_challenge_method=S256",
            url::form_urlencoded::byte_serialize(redirect.as_bytes()).collect::<String>(),
            challenge(VERIFIER)
        );
        // Posted from the client's page (cross-site: the browser's login cookies stay behind),
        // the request comes back as a GET, which carries them; nothing is started by the POST.
        let posted = gateway
            .post("/authorize")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("sec-fetch-site", "cross-site")
            .body(query.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(posted.status(), 303);
        assert!(posted.headers().get("set-cookie").is_none());
        let again = reqwest::Url::parse(&gateway.url("/authorize"))
            .unwrap()
            .join(&location(&posted))
            .unwrap();
        let sent: HashMap<String, String> = again.query_pairs().into_owned().collect();
        let asked: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        assert_eq!((again.path(), &sent), ("/authorize", &asked));
        // An image or a prefetch of the same URL (a same-site page may embed it) starts no
        // login: each would set a login cookie and push the browser's real one out.
        for (name, value) in [("sec-fetch-mode", "no-cors"), ("sec-purpose", "prefetch")] {
            let embedded = gateway
                .get(&format!("/authorize?{}", again.query().unwrap()))
                .header(name, value)
                .send()
                .await
                .unwrap();
            assert_eq!(embedded.status(), 400, "{name}: {value}");
            assert!(embedded.headers().get("set-cookie").is_none(), "{name}");
        }
        let to_upstream = browser.get(again.as_str()).await;
        assert_eq!(to_upstream.status(), 302);
        assert!(
            location(&to_upstream).starts_with(upstream.issuer()),
            "{client_id} logs in at its own provider"
        );
        let back = browser.get(&location(&to_upstream)).await;
        let callback = browser.get(&location(&back)).await;
        assert_eq!(callback.status(), 302);
        assert!(
            !browser.cookies.contains_key("tollgate"),
            "a federated login creates no Tollgate session"
        );
        let to_client = reqwest::Url::parse(&location(&callback)).unwrap();
        assert_eq!(to_client.as_str().split('?').next().unwrap(), redirect);
        let params: HashMap<String, String> = to_client.query_pairs().into_owned().collect();
        assert_eq!(params["state"], format!("s-{client_id}"));
        assert_eq!(params["iss"], issuer);
        let form = [
            ("grant_type", "authorization_code"),
            ("code", params["code"].as_str()),
            ("redirect_uri", redirect),
            ("client_id", client_id),
            ("code_verifier", VERIFIER),
        ];
        let (status, body) = token_request(&gateway, &form, None).await;
        assert_eq!(status, 200, "{body}");
        let claims = decode_payload(body["access_token"].as_str().unwrap());
        assert_eq!(claims["sub"], expected_sub);
        assert_eq!(claims["iss"], issuer);
        assert_eq!(claims["email"], "alice@example.com");
        // An upstream's user name is that provider's, as its `sub` is: not a local user's.
        for token in ["access_token", "id_token"] {
            let claims = decode_payload(body[token].as_str().unwrap());
            assert_eq!(
                claims["preferred_username"],
                format!("{expected_sub}.smith"),
                "{token}"
            );
        }
        // An address is verified only where its provider said so: partner's alice is not
        // corp's to a rule that takes silence for verified.
        assert_eq!(
            claims["email_verified"],
            client_id == "corp-app",
            "{client_id}"
        );
        assert_eq!(
            decode_payload(body["id_token"].as_str().unwrap())["nonce"],
            "n-1"
        );
        if client_id == "corp-app" {
            let (status, refreshed) = token_request(
                &gateway,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", body["refresh_token"].as_str().unwrap()),
                    ("client_id", client_id),
                ],
                None,
            )
            .await;
            assert_eq!(status, 200, "{refreshed}");
            assert_eq!(
                decode_payload(refreshed["access_token"].as_str().unwrap())["sub"],
                "aad:alice",
                "federated grants refresh"
            );
        }
    }
}

/// SPEC §7: keys persist across restarts; rotation by config — a new key signs, a retired
/// key stays published (and its tokens valid) until it is removed. RS256 and ES256.
#[tokio::test]
async fn signing_keys_persist_and_rotate_by_config() {
    let dir = crate::support::scratch_dir("keys");
    let ec = dir.join("ec.pem");
    let rsa = dir.join("rsa.pem");
    let _ = std::fs::remove_file(&ec);
    let status = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&rsa)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    // Every start uses the same address, so the issuer URL (and `iss`) stays the same.
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let start = |signing: &std::path::Path, retired: &[&std::path::Path]| {
        let retired: Vec<String> = retired
            .iter()
            .map(|path| format!("\"{}\"", path.display()))
            .collect();
        let signing = signing.display().to_string();
        async move {
            let listener = tokio::net::TcpListener::bind(address).await.unwrap();
            let issuer = format!("http://{}", listener.local_addr().unwrap());
            let text = format!(
                "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n[token_service]\nissuer = \"{issuer}\"\nsigning_key_file = \"{signing}\"\nretired_key_files = [{}]\n[[token_service.client]]\nclient_id = \"machine\"\nclient_secret_hash = \"{}\"\ngrants = [\"client_credentials\"]\n",
                retired.join(", "),
                tollgate::hash_password("machine-secret").unwrap()
            );
            let config = tollgate::config::load(&text, &Default::default()).unwrap();
            Gateway::from_app(
                tollgate::app::start(
                    config,
                    Arc::new(tollgate::clock::SystemClock),
                    Some(listener),
                    None,
                )
                .await
                .unwrap(),
            )
        }
    };
    let issue = |gateway: &Gateway| {
        let url = gateway.url("/token");
        async move { machine_token_at(&url).await }
    };
    let header = |token: &str| -> Value {
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(token.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    let validate = |gateway: &Gateway, token: String| {
        let url = gateway.url("/validate");
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };

    let first = start(&ec, &[]).await;
    let ec_token = issue(&first).await;
    assert_eq!(header(&ec_token)["alg"], "ES256");
    assert!(
        ec.exists(),
        "a missing signing key file is generated and kept"
    );
    let ec_kid = header(&ec_token)["kid"].as_str().unwrap().to_owned();
    first.stop().await;

    let same = start(&ec, &[]).await;
    assert_eq!(
        header(&issue(&same).await)["kid"],
        ec_kid.as_str(),
        "the key survives a restart"
    );
    assert_eq!(
        validate(&same, ec_token.clone()).await,
        200,
        "tokens issued before a restart stay valid"
    );
    same.stop().await;

    let rotated = start(&rsa, &[&ec]).await;
    let rsa_token = issue(&rotated).await;
    assert_eq!(header(&rsa_token)["alg"], "RS256", "the new key signs");
    let jwks: Value = reqwest::get(rotated.url("/jwks"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["kid"].as_str().unwrap())
        .collect();
    assert!(
        kids.contains(&ec_kid.as_str()) && kids.len() == 2,
        "the retired key stays published: {kids:?}"
    );
    assert_eq!(validate(&rotated, rsa_token).await, 200);
    assert_eq!(
        validate(&rotated, ec_token.clone()).await,
        200,
        "tokens of the retired key are still accepted"
    );
    rotated.stop().await;

    let retired_removed = start(&rsa, &[]).await;
    assert_eq!(
        validate(&retired_removed, ec_token).await,
        401,
        "once removed, its tokens are refused"
    );
    retired_removed.stop().await;
}

#[tokio::test]
async fn the_login_form_refuses_a_post_from_another_site() {
    let (gateway, issuer) = token_service().await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let body = login_form("s-x", "alice-password");
    let post = |headers: Vec<(&'static str, String)>| {
        let mut request = client
            .post(gateway.url("/authorize"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.clone());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(
        post(vec![("origin", "https://evil.example".to_owned())]).await,
        403
    );
    assert_eq!(
        post(vec![("sec-fetch-site", "cross-site".to_owned())]).await,
        403
    );
    assert_eq!(
        post(vec![
            ("origin", issuer.clone()),
            ("sec-fetch-site", "same-origin".to_owned()),
            ("cookie", FORM_COOKIE.to_owned()),
        ])
        .await,
        303,
        "the form's own page posts it"
    );
    // A page of an application served on the issuer's own origin (a route with no `host`) is
    // `same-origin` to the browser: its HTML alone, a form and a button, posted the attacker's
    // password and was taken. It cannot know the browser's token: the form again, nobody
    // signed in.
    let victims_cookie = format!("tollgate_form={}", "v".repeat(43));
    for cookie in [None, Some(victims_cookie)] {
        let mut headers = vec![
            ("origin", issuer.clone()),
            ("sec-fetch-site", "same-origin".to_owned()),
        ];
        headers.extend(cookie.map(|cookie| ("cookie", cookie)));
        assert_eq!(post(headers).await, 400, "a same-origin page's own form");
    }
    // A browser that sends no Fetch Metadata (Safari before 16.4): `Origin: null` (the form's
    // `Referrer-Policy: no-referrer`) is what another site's page can send too, with its own
    // `no-referrer`. The form's token and its cookie tell the form's own post apart.
    assert_eq!(
        post(vec![("origin", "null".to_owned())]).await,
        400,
        "another site's page, without Fetch Metadata: the form again, nobody signed in"
    );
    let mut browser = Browser::new();
    let form = browser
        .get(&gateway.url(&format!("/authorize?{}", authorize_query("s-x", true))))
        .await;
    let set_cookie = form.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        set_cookie.starts_with("tollgate_form=") && set_cookie.contains("SameSite=Lax"),
        "{set_cookie}"
    );
    let html = form.text().await.unwrap();
    let token = html
        .split_once("name=\"form_token\" value=\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(token, _)| token.to_owned())
        .unwrap();
    // The attacker's own form's token, without the victim's cookie (a cross-site post does not
    // carry a `SameSite=Lax` cookie).
    let bare = format!(
        "{}&username=alice&password=alice-password",
        authorize_query("s-x", true)
    );
    let with_token = format!("{bare}&form_token={token}");
    let without_cookie = client
        .post(gateway.url("/authorize"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", "null")
        .body(with_token.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(without_cookie.status(), 400, "a token without its cookie");
    let again = without_cookie.text().await.unwrap();
    assert!(
        again.contains("allow cookies for this site") && again.contains("name=\"form_token\""),
        "the form again, saying what a browser keeping no cookie needs: {again}"
    );
    let own = browser
        .post_form(&gateway.url("/authorize"), with_token)
        .await;
    assert_eq!(
        own.status(),
        303,
        "the form's own post, with its token and cookie"
    );
}

/// OpenID Connect Core §3.1.2.1: an authorization request may be sent by POST, its parameters
/// in a form body, as a client's page does with a form it submits itself (from its own site).
/// It is answered as by GET: the login form (or the refusal), never the same-site refusal meant
/// for a posted password.
#[tokio::test]
async fn an_authorization_request_may_be_posted() {
    let (gateway, _) = token_service().await;
    let mut browser = Browser::new();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let post = |body: String| {
        client
            .post(gateway.url("/authorize"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", "https://spa.example.com")
            .header("sec-fetch-site", "cross-site")
            .body(body)
            .send()
    };
    let form = post(authorize_query("s-p", true)).await.unwrap();
    assert_eq!(form.status(), 200);
    let html = form.text().await.unwrap();
    assert!(html.contains("name=\"password\""), "{html}");
    assert!(
        html.contains("name=\"state\" value=\"s-p\""),
        "the form carries the posted request on: {html}"
    );
    // The user signs in on the form's own page: the code goes back with the posted `state`.
    let signed_in = sign_in(&mut browser, &gateway, "s-p", "alice-password").await;
    assert_eq!(signed_in.status(), 303);
    let back = reqwest::Url::parse(&location(&signed_in)).unwrap();
    let params: HashMap<String, String> = back.query_pairs().into_owned().collect();
    assert_eq!(params["state"], "s-p");
    let (status, body) = exchange(&gateway, &params["code"]).await;
    assert_eq!(status, 200, "{body}");

    // A posted request is checked as a GET is: without PKCE (a public client) back to the
    // client with the error, an unknown client a page, a repeated parameter a page.
    let refused = post(authorize_query("s-q", false)).await.unwrap();
    assert_eq!(refused.status(), 302);
    let back = reqwest::Url::parse(&location(&refused)).unwrap();
    let params: HashMap<String, String> = back.query_pairs().into_owned().collect();
    assert_eq!(
        (params["error"].as_str(), params["state"].as_str()),
        ("invalid_request", "s-q")
    );
    let unknown = post(authorize_query("s-r", true).replace("client_id=spa", "client_id=nobody"))
        .await
        .unwrap();
    assert_eq!(unknown.status(), 400);
    let repeated = post(format!("{}&state=again", authorize_query("s-s", true)))
        .await
        .unwrap();
    assert_eq!(repeated.status(), 400);
    // `state` and `nonce` are bounded (a federated login seals them into a cookie).
    let long_state = authorize_query(&"s".repeat(513), true);
    assert_eq!(post(long_state.clone()).await.unwrap().status(), 400);
    let got = client
        .get(gateway.url(&format!("/authorize?{long_state}")))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 400);
    assert_eq!(
        post(authorize_query(&"s".repeat(512), true))
            .await
            .unwrap()
            .status(),
        200
    );
    // Only printable ASCII (RFC 6749 VSCHAR): a control character grows six times in the
    // login state's JSON.
    assert_eq!(
        post(authorize_query("s%01%01%01", true))
            .await
            .unwrap()
            .status(),
        400
    );
    // With a password, the post is the form's: from another site it is still refused.
    let forged = post(login_form("s-t", "alice-password")).await.unwrap();
    assert_eq!(forged.status(), 403);
}

/// A token service whose client `corp-app` (code grant, `https://corp-app.example/cb`) signs
/// its users in at `corp`; and its issuer.
async fn federated_corp_app(corp: &crate::support::TestIdp) -> (Gateway, String) {
    use crate::support::idp::{CLIENT_ID, CLIENT_SECRET};
    Gateway::start_at_issuer(|issuer| {
        format!(
            r#"[server]
    listen = "127.0.0.1:0"
    admin_listen = "127.0.0.1:0"
    [session]
    secrets = ["{secret}"]
    [[provider]]
    name = "corp"
    issuer = "{corp}"
    client_id = "{CLIENT_ID}"
    client_secret = "{CLIENT_SECRET}"
    [token_service]
    issuer = "{issuer}"
    [[token_service.client]]
    client_id = "corp-app"
    grants = ["authorization_code"]
    redirect_uris = ["https://corp-app.example/cb"]
    login_provider = "corp"
    source = "aad"
    "#,
            secret = crate::support::gateway::SESSION_SECRET,
            corp = corp.issuer(),
        )
    })
    .await
}

/// RFC 6749 §4.1.2.1: an upstream provider's refusal of a federated login goes back to the
/// client with the error, the client's `state` and this issuer's `iss`, not to a dead end.
#[tokio::test]
async fn a_federated_login_the_upstream_refuses_returns_the_error_to_the_client() {
    use crate::support::TestIdp;
    let corp = TestIdp::start().await;
    let (gateway, issuer) = federated_corp_app(&corp).await;
    for (upstream_error, expected) in [
        ("access_denied", "access_denied"),
        ("login_required", "login_required"),
        ("<script>", "access_denied"),
    ] {
        let mut browser = Browser::new();
        let query = format!(
            "response_type=code&client_id=corp-app&redirect_uri=https%3A%2F%2Fcorp-app.example%2Fcb&scope=openid&state=client-state&nonce=n-1&code_challenge={}&code_challenge_method=S256",
            challenge(VERIFIER)
        );
        let to_upstream = browser
            .get(&gateway.url(&format!("/authorize?{query}")))
            .await;
        assert_eq!(to_upstream.status(), 302);
        let upstream_url = reqwest::Url::parse(&location(&to_upstream)).unwrap();
        let login_state = upstream_url
            .query_pairs()
            .find(|(name, _)| name == "state")
            .unwrap()
            .1
            .into_owned();
        let refused = browser
            .get(&gateway.url(&format!(
                "/callback?error={}&state={login_state}",
                url::form_urlencoded::byte_serialize(upstream_error.as_bytes()).collect::<String>()
            )))
            .await;
        assert_eq!(refused.status(), 302, "{upstream_error}");
        let to_client = reqwest::Url::parse(&location(&refused)).unwrap();
        assert_eq!(
            to_client.as_str().split('?').next().unwrap(),
            "https://corp-app.example/cb"
        );
        let params: HashMap<String, String> = to_client.query_pairs().into_owned().collect();
        assert_eq!(params["error"], expected);
        assert_eq!(params["state"], "client-state");
        assert_eq!(params["iss"], issuer);
        assert!(!params.contains_key("code"));
    }
    gateway.stop().await;
}

/// A federated login carries the upstream's `name`, `email` and `preferred_username` into
/// its code, grant and every token they mint only as strings of at most 255 characters: a user
/// of a self-registering provider chose a name of any size (up to the 1 MiB answer), kept in
/// every grant and token.
#[tokio::test]
async fn a_federated_login_carries_no_claim_of_unbounded_size() {
    use crate::support::TestIdp;
    let corp = TestIdp::start().await;
    let (gateway, _) = federated_corp_app(&corp).await;
    corp.set_user_claim("name", serde_json::json!("n".repeat(100_000)));
    corp.set_user_claim("preferred_username", serde_json::json!("u".repeat(256)));
    corp.set_user_claim(
        "email",
        serde_json::json!(["a@example.com", "b@example.com"]),
    );
    let mut browser = Browser::new();
    let query = format!(
        "response_type=code&client_id=corp-app&redirect_uri=https%3A%2F%2Fcorp-app.example%2Fcb&scope=openid&state=s&code_challenge={}&code_challenge_method=S256",
        challenge(VERIFIER)
    );
    let to_upstream = browser
        .get(&gateway.url(&format!("/authorize?{query}")))
        .await;
    let back = browser.get(&location(&to_upstream)).await;
    let callback = browser.get(&location(&back)).await;
    assert_eq!(callback.status(), 302);
    let code = reqwest::Url::parse(&location(&callback))
        .unwrap()
        .query_pairs()
        .find(|(name, _)| name == "code")
        .map(|(_, code)| code.into_owned())
        .expect("a code");
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", "https://corp-app.example/cb"),
        ("client_id", "corp-app"),
        ("code_verifier", VERIFIER),
    ];
    let (status, issued) = token_request(&gateway, &form, None).await;
    assert_eq!(status, 200, "{issued}");
    let id_token = decode_payload(issued["id_token"].as_str().unwrap());
    for name in ["name", "preferred_username", "email", "email_verified"] {
        assert_eq!(id_token.get(name), None, "{name} left out: {id_token}");
    }
    assert!(
        issued["id_token"].as_str().unwrap().len() < 4096,
        "a token of bounded size"
    );
    gateway.stop().await;
}

/// A client that asks the user to sign in again (`prompt=login`, `max_age`, OpenID Connect
/// Core §3.1.2.1) before a sensitive action: the request goes on to the upstream provider, and
/// a sign-in there older than `max_age` (its single sign-on kept one, as its `auth_time` says)
/// is `login_required`, not a code for a fresh sign-in. Both were dropped: the upstream's
/// session signed the user in silently and the ID token said `auth_time` = now.
#[tokio::test]
async fn a_federated_client_asking_for_a_fresh_sign_in_gets_one_or_login_required() {
    use crate::support::TestIdp;
    let corp = TestIdp::start().await;
    let (gateway, _) = federated_corp_app(&corp).await;
    let login_as_is = async |extra: &str| {
        let mut browser = Browser::new();
        let query = format!(
            "response_type=code&client_id=corp-app&redirect_uri=https%3A%2F%2Fcorp-app.example%2Fcb&scope=openid&state=s&code_challenge={}&code_challenge_method=S256{extra}",
            challenge(VERIFIER)
        );
        let to_upstream = browser
            .get(&gateway.url(&format!("/authorize?{query}")))
            .await;
        assert_eq!(to_upstream.status(), 302);
        let upstream: HashMap<String, String> = reqwest::Url::parse(&location(&to_upstream))
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect();
        let back = browser.get(&location(&to_upstream)).await;
        let callback = browser.get(&location(&back)).await;
        assert_eq!(callback.status(), 302);
        let to_client: HashMap<String, String> = reqwest::Url::parse(&location(&callback))
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect();
        (upstream, to_client)
    };
    let login = async |extra: &str, auth_time_ago: i64| {
        corp.set_user_claim(
            "auth_time",
            serde_json::json!(crate::support::idp::now() - auth_time_ago),
        );
        login_as_is(extra).await
    };
    let (upstream, to_client) = login("&prompt=login&max_age=300", 3600).await;
    assert_eq!(upstream.get("prompt").map(String::as_str), Some("login"));
    assert_eq!(upstream.get("max_age").map(String::as_str), Some("300"));
    assert_eq!(
        (
            to_client.get("error").map(String::as_str),
            to_client.get("code")
        ),
        (Some("login_required"), None),
        "an hour-old sign-in for max_age=300"
    );
    let (_, to_client) = login("&max_age=300", 10).await;
    assert!(to_client.contains_key("code"), "{to_client:?}");
    // `prompt=login`: a sign-in from before the request is not a new one; one after it is.
    let (_, to_client) = login("&prompt=login", 600).await;
    assert_eq!(
        to_client.get("error").map(String::as_str),
        Some("login_required")
    );
    let (_, to_client) = login("&prompt=login", 0).await;
    assert!(to_client.contains_key("code"), "{to_client:?}");
    // With `max_age` the provider must say when the user signed in (OpenID Connect Core 2).
    corp.set_user_claim("auth_time", serde_json::Value::Null);
    let (_, to_client) = login_as_is("&max_age=300").await;
    assert_eq!(
        to_client.get("error").map(String::as_str),
        Some("login_required")
    );
    // Without them, nothing is asked of the provider, and an old sign-in is one.
    let (upstream, to_client) = login("", 3600).await;
    assert!(!upstream.contains_key("prompt") && !upstream.contains_key("max_age"));
    assert!(to_client.contains_key("code"), "{to_client:?}");
    // Its ID token says when that sign-in was, not when the code was made (it said now); a
    // provider that does not say gets no `auth_time` rather than an invented one.
    let auth_time_of = async |code: &str| {
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", "https://corp-app.example/cb"),
            ("client_id", "corp-app"),
            ("code_verifier", VERIFIER),
        ];
        let (status, issued) = token_request(&gateway, &form, None).await;
        assert_eq!(status, 200, "{issued}");
        decode_payload(issued["id_token"].as_str().unwrap())["auth_time"].clone()
    };
    let signed_in = auth_time_of(&to_client["code"]).await;
    let an_hour_ago = crate::support::idp::now() - 3600;
    assert!(
        signed_in
            .as_i64()
            .is_some_and(|at| (an_hour_ago - 5..=an_hour_ago + 5).contains(&at)),
        "auth_time {signed_in}, the upstream sign-in at {an_hour_ago}"
    );
    corp.set_user_claim("auth_time", serde_json::Value::Null);
    let (_, to_client) = login_as_is("").await;
    assert_eq!(
        auth_time_of(&to_client["code"]).await,
        serde_json::Value::Null
    );
    gateway.stop().await;
}

/// SPEC §12 / issue 12: an access token the token service revoked is refused wherever the
/// token service is the in-process provider — `/auth`, `/validate` and a bearer route — not
/// only at its own endpoints.
#[tokio::test]
async fn a_revoked_token_is_refused_where_the_token_service_is_the_in_process_provider() {
    let upstream = crate::support::TestUpstream::start().await;
    let (gateway, _) =
        Gateway::start_at_issuer(|issuer| in_process_provider_config(issuer, &upstream.url(), ""))
            .await;
    let access = machine_token(&gateway).await;
    let statuses = || statuses_at(&gateway, &["/auth", "/validate", "/api/x"], &access);
    assert_eq!(
        statuses().await,
        [200, 200, 200],
        "accepted before revocation (and cached)"
    );
    let revoked = reqwest::Client::new()
        .post(gateway.url("/revoke"))
        .basic_auth("machine", Some("machine-secret"))
        .form(&[("token", access.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    assert_eq!(
        statuses().await,
        [401, 401, 401],
        "refused everywhere after revocation"
    );
    gateway.stop().await;
}

/// SPEC §6: where the token service is the in-process forward-auth provider, `aud` must hold
/// one of that provider's `audiences` at `/validate` too, as at `/auth` and on routes: a token
/// the service issued to another client's audience used to pass `/validate`, which took the
/// service's own check (every client's audience) after the provider refused it.
#[tokio::test]
async fn another_clients_audience_is_refused_where_the_token_service_is_the_provider() {
    let upstream = crate::support::TestUpstream::start().await;
    let (gateway, _) = Gateway::start_at_issuer(|issuer| {
        format!(
            "{}\n[[token_service.client]]\nclient_id = \"reports\"\nclient_secret_hash = \"{}\"\n\
             grants = [\"client_credentials\"]\nsource = \"reports\"\naudience = \"reports\"\n",
            in_process_provider_config(issuer, &upstream.url(), ""),
            tollgate::hash_password("reports-secret").unwrap(),
        )
    })
    .await;
    let (status, tokens) = token_request(
        &gateway,
        &[("grant_type", "client_credentials")],
        Some(("reports", "reports-secret")),
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    let reports = tokens["access_token"].as_str().unwrap().to_owned();
    assert_eq!(decode_payload(&reports)["aud"], "reports");
    let paths = ["/auth", "/validate", "/api/x"];
    assert_eq!(
        statuses_at(&gateway, &paths, &reports).await,
        [401, 401, 401],
        "not for the provider's audience `odj`"
    );
    let machine = machine_token(&gateway).await;
    assert_eq!(
        statuses_at(&gateway, &paths, &machine).await,
        [200, 200, 200],
        "the provider's audience"
    );
    gateway.stop().await;
}

/// A WebSocket opened with a token of the in-process token service is closed once the token is
/// revoked (within a look, about 12 s), as requests with it are refused at once: it used to
/// stay open until the token's `exp`.
#[tokio::test]
async fn a_websocket_opened_with_a_token_revoked_since_is_closed() {
    let upstream = crate::support::TestUpstream::start().await;
    let (gateway, _) = Gateway::start_at_issuer(|issuer| {
        format!(
            "{}\n[[route]]\npath_prefix = \"/ws\"\nupstream = \"{}\"\nprovider = \"self\"\n\
             on_unauthenticated = \"deny\"\naccept_bearer = true\n",
            in_process_provider_config(issuer, &upstream.url(), ""),
            upstream.url()
        )
    })
    .await;
    let access = machine_token(&gateway).await;
    let header = format!("Authorization: Bearer {access}");
    let opened = crate::proxy::websocket_opened_at(gateway.app.public_addr, "/ws", header).await;
    let stream = crate::proxy::echo_through(opened, b"before the revocation").await;
    tokio::time::sleep(
        tollgate::proxy::lasting::LOOK_EVERY * 6 / 5 + std::time::Duration::from_secs(1),
    )
    .await;
    let stream = crate::proxy::echo_through(stream, b"a look later, still valid").await;
    let revoked = reqwest::Client::new()
        .post(gateway.url("/revoke"))
        .basic_auth("machine", Some("machine-secret"))
        .form(&[("token", access.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let closed = crate::proxy::closed_by_tollgate(stream).await;
    assert!(
        closed.is_ok(),
        "still open with a revoked token: {closed:?}"
    );
    gateway.stop().await;
}

/// RFC 7009 §2: a revoked token stays refused as long as validation would accept it, which is
/// its `exp` plus the leeway; its revocation used to be forgotten at `exp` (here: pruned by the
/// next revocation), and the token accepted again for the leeway's minute.
#[tokio::test]
async fn a_revoked_token_stays_refused_through_the_leeway_after_it_expires() {
    let upstream = crate::support::TestUpstream::start().await;
    let clock = tollgate::clock::ManualClock::new();
    let (gateway, _) = Gateway::start_at_issuer_with_clock(
        |issuer| in_process_provider_config(issuer, &upstream.url(), ""),
        clock.clone(),
    )
    .await;
    let revoke = async |token: &str| {
        let revoked = reqwest::Client::new()
            .post(gateway.url("/revoke"))
            .basic_auth("machine", Some("machine-secret"))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(revoked.status(), 200);
    };
    let (status, tokens) = token_request(
        &gateway,
        &[("grant_type", "client_credentials")],
        Some(("machine", "machine-secret")),
    )
    .await;
    assert_eq!(status, 200);
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    revoke(&access).await;
    let statuses = || statuses_at(&gateway, &["/auth", "/validate", "/api/x"], &access);
    assert_eq!(statuses().await, [401, 401, 401]);
    // 30 s past `exp`, inside the default leeway of 60 s; another revocation prunes the store.
    clock.advance(tokens["expires_in"].as_i64().unwrap() + 30);
    revoke(&machine_token(&gateway).await).await;
    assert_eq!(
        statuses().await,
        [401, 401, 401],
        "still refused while validation would accept it"
    );
    gateway.stop().await;
}

/// While the token service's store cannot say whether a token was revoked, the token is
/// refused wherever the token service is the in-process provider, and as a store that is down
/// (503, SPEC §9), not as an invalid token or an unreachable provider (502, before); served
/// again once the store is back.
#[tokio::test]
async fn where_the_token_service_is_the_in_process_provider_its_store_down_is_a_503() {
    let upstream = crate::support::TestUpstream::start().await;
    let mut redis = crate::support::redis::RedisServer::standalone().await;
    let redis_url = redis.url();
    let (gateway, _) = Gateway::start_at_issuer(|issuer| {
        in_process_provider_config(issuer, &upstream.url(), &redis_url)
    })
    .await;
    let access = machine_token(&gateway).await;
    let statuses = || {
        statuses_at(
            &gateway,
            &["/auth", "/validate", "/userinfo", "/api/x"],
            &access,
        )
    };
    assert_eq!(
        statuses().await,
        [200, 200, 200, 200],
        "accepted (and cached)"
    );
    redis.kill();
    assert_eq!(
        statuses().await,
        [503, 503, 503, 503],
        "revocation unknown: refused as a store that is down, cached or not"
    );
    redis.start().await;
    assert_eq!(statuses().await, [200, 200, 200, 200], "served again");
    gateway.stop().await;
}

/// A session whose provider is the in-process token service is refreshed there. While the
/// token service's store is down and the session's access token has expired, the request gets
/// the 503 of a store that is down (SPEC §9), as every other request that needs the store
/// (also within the 10 s before the next attempt), and so does a login's callback: before,
/// both got the 502 of an unreachable provider, although the provider is this process. The
/// session is kept, and refreshed once the store is back.
#[tokio::test]
async fn a_session_refresh_at_the_in_process_token_service_with_its_store_down_is_a_503() {
    let upstream = crate::support::TestUpstream::start().await;
    let mut redis = crate::support::redis::RedisServer::standalone().await;
    let redis_url = redis.url();
    let clock = tollgate::clock::ManualClock::new();
    let (gateway, issuer) = Gateway::start_at_issuer_with_clock(
        |issuer| app_at_own_token_service(issuer, &upstream.url(), Some(&redis_url)),
        clock.clone(),
    )
    .await;
    let (mut browser, callback) = up_to_the_callback(&gateway, &issuer).await;
    assert_eq!(browser.get(&callback).await.status(), 302, "the callback");
    assert_eq!(browser.get(&gateway.url("/app/page")).await.status(), 200);
    let (mut late, late_callback) = up_to_the_callback(&gateway, &issuer).await;

    redis.kill();
    assert_eq!(
        late.get(&late_callback).await.status(),
        503,
        "a code exchange needs the store too"
    );
    // Past the access token's lifetime (30 minutes by default): only a refresh can serve.
    clock.advance(31 * 60);
    let refused = browser.get(&gateway.url("/app/page")).await;
    assert_eq!(
        refused.status(),
        503,
        "the token service's store is down: {}",
        refused.text().await.unwrap()
    );
    assert_eq!(
        browser.get(&gateway.url("/app/page")).await.status(),
        503,
        "within the 10 s before the next attempt, still the store's answer"
    );
    redis.start().await;
    clock.advance(11);
    assert_eq!(
        browser.get(&gateway.url("/app/page")).await.status(),
        200,
        "the session was kept and is refreshed now"
    );
    gateway.stop().await;
}

/// Where the token service is the in-process provider, a sign-out revokes the session's grant
/// there: a copy of the (`cookie`-store) session taken before cannot refresh.
#[tokio::test]
async fn a_sign_out_revokes_the_sessions_grant_at_the_in_process_token_service() {
    let upstream = crate::support::TestUpstream::start().await;
    let clock = tollgate::clock::ManualClock::new();
    let (gateway, issuer) = Gateway::start_at_issuer_with_clock(
        |issuer| app_at_own_token_service(issuer, &upstream.url(), None),
        clock.clone(),
    )
    .await;
    let (mut browser, callback) = up_to_the_callback(&gateway, &issuer).await;
    assert_eq!(browser.get(&callback).await.status(), 302, "the callback");
    let mut copy = Browser::new();
    copy.cookies = browser.cookies.clone();
    assert_eq!(browser.get(&gateway.url("/signout")).await.status(), 302);
    assert_eq!(copy.get(&gateway.url("/app/page")).await.status(), 200);
    // Past the access token's lifetime (30 minutes by default): only a refresh can serve.
    clock.advance(31 * 60);
    let refused = copy.get(&gateway.url("/app/page")).await;
    assert_eq!(refused.status(), 302, "sent to sign in again");
    assert!(location(&refused).starts_with(&format!("{issuer}/authorize?")));
    gateway.stop().await;
}

/// A gateway whose route `/app` to `upstream` signs alice in at its own token service (at
/// `issuer`), the sessions and the token service's state in Redis at `redis_url`, or in
/// memory and in the cookie without it.
fn app_at_own_token_service(issuer: &str, upstream: &str, redis_url: Option<&str>) -> String {
    let (session, store) = match redis_url {
        Some(url) => (format!("redis_url = \"{url}\""), "store = \"redis\""),
        None => (String::new(), ""),
    };
    format!(
        r#"[server]
    listen = "127.0.0.1:0"
    admin_listen = "127.0.0.1:0"
    [session]
    secrets = ["{secret}"]
    {session}
    [[provider]]
    name = "self"
    issuer = "{issuer}"
    client_id = "gateway"
    client_auth = "none"
    [[route]]
    path_prefix = "/app"
    upstream = "{upstream}"
    provider = "self"
    [token_service]
    issuer = "{issuer}"
    {store}
    [[token_service.client]]
    client_id = "gateway"
    grants = ["authorization_code", "refresh_token"]
    redirect_uris = ["{issuer}/callback"]
    source = "local"
    [[token_service.user]]
    username = "alice"
    password_hash = "{password_hash}"
    email = "alice@example.com"
    "#,
        secret = crate::support::gateway::SESSION_SECRET,
        password_hash = tollgate::hash_password("alice-password").unwrap(),
    )
}

/// A new browser that has signed alice in at the token service for `/app/page`, up to the
/// callback it is sent to (which only the token service's store can finish).
async fn up_to_the_callback(gateway: &Gateway, issuer: &str) -> (Browser, String) {
    let mut browser = Browser::new();
    let login = browser.get(&gateway.url("/app/page")).await;
    assert_eq!(login.status(), 302, "sent to sign in");
    let authorize = location(&login);
    assert!(
        authorize.starts_with(&format!("{issuer}/authorize?")),
        "{authorize}"
    );
    let query = authorize.split_once('?').unwrap().1.to_owned();
    assert_eq!(
        browser.get(&authorize).await.status(),
        200,
        "the login form"
    );
    let signed_in = browser
        .post_login(
            &gateway.url("/authorize"),
            &query,
            "username=alice&password=alice-password",
        )
        .await;
    assert_eq!(signed_in.status(), 303, "alice's password");
    let callback = location(&signed_in);
    (browser, callback)
}

/// An access token for the client `machine` (`client_credentials`).
async fn machine_token(gateway: &Gateway) -> String {
    let (status, tokens) = token_request(
        gateway,
        &[("grant_type", "client_credentials")],
        Some(("machine", "machine-secret")),
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    tokens["access_token"].as_str().unwrap().to_owned()
}

/// The status of `GET` at each of `paths` with `access_token`, in order.
async fn statuses_at(gateway: &Gateway, paths: &[&str], access_token: &str) -> Vec<u16> {
    let mut seen = Vec::new();
    for path in paths {
        seen.push(get_with_token(gateway, path, access_token).await);
    }
    seen
}

/// A gateway whose token service (at `issuer`; its state in Redis at `redis_url`, or in memory
/// when that is empty) is the in-process provider of `/auth` and of a bearer route `/api` to
/// `upstream`; its client `machine` gets tokens.
fn in_process_provider_config(issuer: &str, upstream: &str, redis_url: &str) -> String {
    let (session, store) = if redis_url.is_empty() {
        (String::new(), "")
    } else {
        (format!("redis_url = \"{redis_url}\""), "store = \"redis\"")
    };
    format!(
        r#"[server]
    listen = "127.0.0.1:0"
    admin_listen = "127.0.0.1:0"
    [session]
    secrets = ["{secret}"]
    {session}
    [[provider]]
    name = "self"
    issuer = "{issuer}"
    client_id = "gateway"
    client_auth = "none"
    audiences = ["odj"]
    [forward_auth]
    provider = "self"
    [[route]]
    path_prefix = "/api"
    upstream = "{upstream}"
    provider = "self"
    on_unauthenticated = "deny"
    accept_bearer = true
    [token_service]
    issuer = "{issuer}"
    {store}
    [[token_service.client]]
    client_id = "machine"
    client_secret_hash = "{secret_hash}"
    grants = ["client_credentials"]
    source = "myapi"
    audience = "odj"
    [[token_service.client]]
    client_id = "gateway"
    grants = ["authorization_code"]
    redirect_uris = ["{issuer}/callback"]
    source = "local"
    "#,
        secret = crate::support::gateway::SESSION_SECRET,
        secret_hash = tollgate::hash_password("machine-secret").unwrap(),
    )
}

/// SPEC §12: failed client authentication is limited per client id and per client address —
/// the address a trusted proxy names, not the proxy's own — so junk sent through a load
/// balancer does not lock every client out.
#[tokio::test]
async fn client_authentication_limits_key_on_the_real_client_behind_a_trusted_proxy() {
    let (gateway, _) = token_service().await;
    // The test client is on 127.0.0.1, a trusted proxy by default: it speaks for the clients
    // it names in X-Forwarded-For.
    let attempt = |from: &'static str, client_id: String, secret: &'static str| {
        let request = gateway
            .post("/token")
            .header("x-forwarded-for", from)
            .basic_auth(client_id, Some(secret))
            .form(&[("grant_type", "client_credentials")]);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    for index in 0..10 {
        assert_eq!(
            attempt("203.0.113.9", format!("junk-{index}"), "x").await,
            401
        );
    }
    assert_eq!(
        attempt("203.0.113.9", "machine".to_owned(), "machine-secret").await,
        429,
        "the address that failed ten times waits"
    );
    assert_eq!(
        attempt("198.51.100.7", "machine".to_owned(), "machine-secret").await,
        200,
        "another client behind the same proxy does not"
    );
}

/// Failures counted for a client id lock out a confidential client only, and never one whose
/// right secret was verified a moment ago: a public client has no secret to guess, so anyone
/// sending its id with a secret ten times a minute refused every request it made.
#[tokio::test]
async fn failures_sent_by_others_lock_out_no_public_client_and_no_known_secret() {
    let (gateway, _) = token_service().await;
    let attempt = |from: String, form: &[(&str, &str)], basic: Option<&str>| {
        let mut request = gateway
            .post("/token")
            .header("x-forwarded-for", from)
            .form(form);
        if let Some(secret) = basic {
            request = request.basic_auth("machine", Some(secret));
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let machine = [("grant_type", "client_credentials")];
    let spa_refresh = [
        ("grant_type", "refresh_token"),
        ("client_id", "spa"),
        ("refresh_token", "unknown.token"),
    ];
    let spa_with_secret = [
        ("grant_type", "refresh_token"),
        ("client_id", "spa"),
        ("client_secret", "x"),
    ];
    let real = || "198.51.100.7".to_owned();
    assert_eq!(attempt(real(), &machine, Some("machine-secret")).await, 200);
    for index in 0..10 {
        let from = || format!("203.0.113.{index}");
        assert_eq!(attempt(from(), &spa_with_secret, None).await, 401);
        assert_eq!(attempt(from(), &machine, Some("wrong")).await, 401);
    }
    assert_eq!(
        attempt(real(), &spa_refresh, None).await,
        400,
        "the public client is served: invalid_grant, not 429"
    );
    // Failures from the address of the public client's users (a shared NAT's) lock it out
    // neither.
    let shared = || "198.51.100.99".to_owned();
    let unknown = [("grant_type", "client_credentials"), ("client_id", "nope")];
    for _ in 0..10 {
        assert_eq!(attempt(shared(), &unknown, None).await, 401);
    }
    assert_eq!(attempt(shared(), &unknown, None).await, 429);
    assert_eq!(
        attempt(shared(), &spa_refresh, None).await,
        400,
        "the public client is served from that address too"
    );
    assert_eq!(
        attempt(real(), &machine, Some("machine-secret")).await,
        200,
        "the secret verified a moment ago is still served"
    );
    assert_eq!(
        attempt(real(), &machine, Some("another-guess")).await,
        429,
        "a guess at the confidential client's secret waits out the window"
    );
}

/// Issue 12: the login form ran argon2 for every POST without limit. Ten wrong passwords for a
/// user (or from an address) make the form answer 429 without checking, for a minute.
#[tokio::test]
async fn the_login_form_limits_wrong_passwords() {
    let (gateway, _) = token_service().await;
    let post = |password: &'static str, from: &'static str| {
        let request = gateway
            .post("/authorize")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-forwarded-for", from)
            .header("sec-fetch-site", "same-origin")
            .header("cookie", FORM_COOKIE)
            .body(login_form("s-limit", password));
        async move { request.send().await.unwrap() }
    };
    for _ in 0..10 {
        assert_eq!(post("wrong", "203.0.113.9").await.status(), 401);
    }
    let limited = post("alice-password", "198.51.100.7").await;
    assert_eq!(limited.status(), 429, "the user waits, from any address");
    assert_eq!(limited.headers()["retry-after"], "60");
    assert!(limited.text().await.unwrap().contains("Too many"));
}

/// A name nobody has is limited as a user's is: ten wrong passwords for it, and it answers 429
/// from any address. It used to answer 401 for ever, so the 429 told which names were users'.
#[tokio::test]
async fn the_login_form_limits_a_name_nobody_has_as_a_users() {
    let (gateway, _) = token_service().await;
    let post = |username: &'static str, from: &'static str| {
        let body = login_form("s-names", "wrong").replace("username=alice", username);
        let request = gateway
            .post("/authorize")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-forwarded-for", from)
            .header("sec-fetch-site", "same-origin")
            .header("cookie", FORM_COOKIE)
            .body(body);
        async move { request.send().await.unwrap().status() }
    };
    for (index, from) in ["203.0.113.1", "203.0.113.2"].into_iter().enumerate() {
        for _ in 0..5 {
            assert_eq!(
                post("username=nobody", from).await,
                401,
                "attempt from {index}"
            );
        }
    }
    assert_eq!(
        post("username=nobody", "198.51.100.8").await,
        429,
        "ten wrong passwords for the name, from any address"
    );
    assert_eq!(
        post("username=somebody-else", "198.51.100.8").await,
        401,
        "another name from that address is still checked"
    );
}

/// The token service reads a form of at most 64 KiB and 64 parameters: a body of 350 000
/// short names (within axum's 2 MB default) became a map twenty times its size on a worker,
/// held through the wait for a password check, and unauthenticated.
#[tokio::test]
async fn a_form_too_long_or_with_too_many_parameters_is_refused_before_it_is_read_whole() {
    let (gateway, issuer) = token_service().await;
    let many: String = (0..100).map(|index| format!("p{index}=&")).collect();
    for path in ["/token", "/revoke"] {
        let answer = reqwest::Client::new()
            .post(format!("{issuer}{path}"))
            .basic_auth("machine", Some("machine-secret"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("{many}grant_type=client_credentials&token=x"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 400, "{path}");
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request", "{path}");
        let long = reqwest::Client::new()
            .post(format!("{issuer}{path}"))
            .basic_auth("machine", Some("machine-secret"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=client_credentials&token=x&pad={}",
                "a".repeat(70_000)
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(long.status(), 413, "{path}");
    }
    let form = reqwest::Client::new()
        .post(format!("{issuer}/authorize"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("username=alice&pad={}", "a".repeat(70_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 413);
    // A form within both limits is still served.
    let token = machine_token_at(&format!("{issuer}/token")).await;
    assert!(!token.is_empty());
    gateway.stop().await;
}

/// A client that keeps using its secret cannot be locked out by whoever fails for its id: its
/// verified secret passes before the limit. A reload forgot every verified secret, so ten
/// failures a minute from anywhere refused the real client (429) after each reload. They are
/// kept now, for the hash they were verified against: a reload that changes the hash does
/// not let the old secret through.
#[tokio::test]
async fn a_reload_does_not_hand_a_clients_id_to_whoever_fails_for_it() {
    let mut text = String::new();
    let (gateway, _) = Gateway::start_at_issuer(|issuer| {
        text = config(issuer, "", "");
        text.clone()
    })
    .await;
    let right = || {
        token_request(
            &gateway,
            &[("grant_type", "client_credentials")],
            Some(("machine", "machine-secret")),
        )
    };
    assert_eq!(right().await.0, 200);
    for _ in 0..10 {
        let (status, _) = token_request(
            &gateway,
            &[("grant_type", "client_credentials")],
            Some(("machine", "wrong")),
        )
        .await;
        assert_eq!(status, 401);
    }
    assert_eq!(right().await.0, 200, "the verified secret passes the limit");
    let load =
        |text: &str| tollgate::config::load(text, &std::collections::BTreeMap::new()).unwrap();
    gateway.app.reload(load(&text)).await.unwrap();
    assert_eq!(right().await.0, 200, "and still after a reload");
    // The secret rotated: the old one is checked against the new hash, and refused.
    let line = text
        .lines()
        .find(|line| line.trim_start().starts_with("client_secret_hash"))
        .unwrap();
    let rotated = text.replace(
        line,
        &format!(
            "client_secret_hash = \"{}\"",
            tollgate::hash_password("machine-secret-2").unwrap()
        ),
    );
    gateway.app.reload(load(&rotated)).await.unwrap();
    assert_ne!(
        right().await.0,
        200,
        "the old secret after its hash was replaced"
    );
    gateway.stop().await;
}

/// A hash made from an empty input (`hash-secret` fed nothing, before it refused) let an empty
/// secret in: `Authorization: Basic <id>:` as the confidential client, an empty password at the
/// login form. An empty secret is no secret now.
#[tokio::test]
async fn an_empty_secret_or_password_is_never_right() {
    let (gateway, _) = Gateway::start_at_issuer(|issuer| {
        let text = config(issuer, "", "");
        let empty = tollgate::hash_password("").unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        for line in &mut lines {
            let trimmed = line.trim_start();
            if trimmed.starts_with("client_secret_hash") {
                *line = format!("client_secret_hash = \"{empty}\"");
            } else if trimmed.starts_with("password_hash") {
                *line = format!("password_hash = \"{empty}\"");
            }
        }
        lines.join("\n")
    })
    .await;
    let (status, body) = token_request(
        &gateway,
        &[("grant_type", "client_credentials")],
        Some(("machine", "")),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let form = gateway
        .post("/authorize")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "same-origin")
        .header("cookie", FORM_COOKIE)
        .body(login_form("s-empty", ""))
        .send()
        .await
        .unwrap();
    assert_eq!(
        form.status(),
        401,
        "an empty password is a wrong one: {}",
        form.text().await.unwrap()
    );
    gateway.stop().await;
}

/// `/validate` with a forward-auth provider beside the token service: a token that names the
/// token service as its issuer is never taken to the provider, where its key, unknown there,
/// would send the provider's keys to be fetched again (or wait for a hanging fetch).
#[tokio::test]
async fn the_token_services_own_tokens_never_send_the_providers_keys_to_be_fetched() {
    use crate::support::TestIdp;
    use crate::support::idp::{AUDIENCE, CLIENT_ID, CLIENT_SECRET};
    let idp = TestIdp::start().await;
    let top = format!(
        r#"[session]
    secrets = ["a-session-secret-of-at-least-32-bytes-long"]
    [[provider]]
    name = "corp"
    issuer = "{}"
    client_id = "{CLIENT_ID}"
    client_secret = "{CLIENT_SECRET}"
    audiences = ["{AUDIENCE}"]
    jwks_refetch_interval = "1s"
    [forward_auth]
    provider = "corp"
    "#,
        idp.issuer()
    );
    let (gateway, _) = Gateway::start_at_issuer(|issuer| config(issuer, &top, "")).await;
    let validate = |token: String| {
        let request = gateway.get("/validate").bearer_auth(token);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(validate(idp.access_token().sign()).await, 200);
    let fetched = idp.count("jwks");
    for _ in 0..3 {
        assert_eq!(validate(machine_token(&gateway).await).await, 200);
        // Past `jwks_refetch_interval`: an unknown key at the provider would be fetched for.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    }
    assert_eq!(
        idp.count("jwks"),
        fetched,
        "the provider's keys were fetched again"
    );
}
