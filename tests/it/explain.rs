//! SPEC §8 `POST /admin/explain`: for a described request, the decision Tollgate would take
//! and its steps, from the same code the real request runs — so every explanation here is
//! checked against the real request's answer — without side effects, and never echoing a
//! token or a cookie.

use serde_json::{Value, json};

use crate::proxy::proxy_config;
use crate::support::{Browser, Gateway, TestIdp, TestUpstream};

const ADMIN_TOKEN: &str = "admin-token-for-the-explain-tests";

/// Forward-auth, and one route per kind of requirement.
const ROUTES: &str = r#"
[forward_auth]
provider = "corp"
token_cookie = "odj_access_token"

[[route]]
path_prefix = "/scopes"
upstream = "{upstream}"
provider = "corp"
accept_bearer = true
[route.require]
scopes = ["write"]

[[route]]
path_prefix = "/roles"
upstream = "{upstream}"
provider = "corp"
accept_bearer = true
[route.require]
roles = ["boss"]

[[route]]
path_prefix = "/groups"
upstream = "{upstream}"
provider = "corp"
accept_bearer = true
[route.require]
groups = ["ops"]

[[route]]
path_prefix = "/claims"
upstream = "{upstream}"
provider = "corp"
accept_bearer = true
[route.require]
claims = { tid = ["1111"] }

[[route]]
path_prefix = "/email"
upstream = "{upstream}"
provider = "corp"
accept_bearer = true
[route.require]
email_domains = ["corp.example"]

[[route]]
path_prefix = "/issuers"
upstream = "{upstream}"
provider = "corp"
accept_bearer = true
[route.require]
issuers = ["https://elsewhere.example"]

[[route]]
path_prefix = "/app"
upstream = "{upstream}"
provider = "corp"
accept_bearer = true
skip = ["GET,^/app/public/"]
[route.headers]
"X-User" = "claim:email"

[[route]]
path_prefix = "/api"
upstream = "{upstream}"
provider = "corp"
on_unauthenticated = "deny"
"#;

fn config(idp: &TestIdp, upstream: &TestUpstream, session: &str) -> String {
    proxy_config(idp, &upstream.url(), ROUTES)
        .replace(
            "[server]\n",
            &format!("[server]\nadmin_token = \"{ADMIN_TOKEN}\"\n"),
        )
        .replace("[session]\n", &format!("[session]\n{session}"))
}

async fn gateway(idp: &TestIdp, upstream: &TestUpstream, session: &str) -> Gateway {
    Gateway::start(&config(idp, upstream, session)).await
}

async fn post(gateway: &Gateway, token: Option<&str>, body: String) -> reqwest::Response {
    let mut request = gateway
        .admin_post("/admin/explain")
        .header("content-type", "application/json")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn explain(gateway: &Gateway, request: Value) -> Value {
    let response = post(gateway, Some(ADMIN_TOKEN), request.to_string()).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn bearer(token: &str) -> Value {
    json!({ "Authorization": format!("Bearer {token}") })
}

/// The step named `step`, which must be there.
fn step<'a>(explanation: &'a Value, step: &str) -> &'a Value {
    explanation["steps"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|candidate| candidate["step"] == step)
        .unwrap_or_else(|| panic!("no `{step}` step in {explanation:#}"))
}

#[track_caller]
fn assert_decision(explanation: &Value, decision: &str, status: Value) {
    assert_eq!(explanation["decision"], decision, "{explanation:#}");
    assert_eq!(explanation["status"], status, "{explanation:#}");
}

/// The real `/auth` request the explanation describes: its status and body.
async fn real_auth(gateway: &Gateway, query: &str, headers: &[(&str, String)]) -> (u16, String) {
    let mut request = gateway
        .get(&format!("/auth?{query}"))
        .header("X-Original-URL", "https://app.example.com/x");
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn forward_auth_refusals_are_explained_as_auth_decides_them() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let gateway = gateway(&idp, &upstream, "").await;
    let url = "https://app.example.com/x";
    let token = idp.access_token().sign();

    // No credential.
    let none = explain(
        &gateway,
        json!({"method": "GET", "url": url, "auth_query": ""}),
    )
    .await;
    assert_decision(&none, "unauthenticated", json!(401));
    assert_eq!(none["route"], Value::Null);
    assert_eq!(step(&none, "bearer token")["outcome"], "none");
    assert_eq!(step(&none, "token cookie")["outcome"], "none");
    assert_eq!(real_auth(&gateway, "", &[]).await.0, 401);

    // An expired token, and one from an issuer that is not the provider's.
    let expired = idp.access_token().expires_in(-600).sign();
    let stale = explain(
        &gateway,
        json!({"url": url, "headers": bearer(&expired), "auth_query": ""}),
    )
    .await;
    assert_decision(&stale, "unauthenticated", json!(401));
    let detail = step(&stale, "bearer token")["detail"].as_str().unwrap();
    assert_eq!(step(&stale, "bearer token")["outcome"], "invalid");
    assert!(detail.contains("expired"), "{detail}");
    let foreign = idp
        .access_token()
        .claim("iss", json!("https://elsewhere.example"))
        .sign();
    let other = explain(
        &gateway,
        json!({"url": url, "headers": bearer(&foreign), "auth_query": ""}),
    )
    .await;
    assert_decision(&other, "unauthenticated", json!(401));
    assert_eq!(step(&other, "bearer token")["outcome"], "invalid");
    assert!(
        step(&other, "bearer token")["detail"]
            .as_str()
            .unwrap()
            .contains("wrong issuer")
    );
    let authorization = ("Authorization", format!("Bearer {foreign}"));
    assert_eq!(real_auth(&gateway, "", &[authorization]).await.0, 401);

    // The token cookie.
    let cookie = json!({ "Cookie": format!("odj_access_token={expired}") });
    let by_cookie = explain(
        &gateway,
        json!({"url": url, "headers": cookie, "auth_query": ""}),
    )
    .await;
    assert_decision(&by_cookie, "unauthenticated", json!(401));
    assert_eq!(step(&by_cookie, "token cookie")["outcome"], "invalid");

    // A claim rule that fails: the reason is the 403's, the detail the claim value seen.
    let forbidden = explain(
        &gateway,
        json!({"url": url, "headers": bearer(&token), "auth_query": "groups=ops&groups=sre"}),
    )
    .await;
    assert_decision(&forbidden, "forbidden", json!(403));
    let reason = forbidden["reason"].as_str().unwrap();
    assert_eq!(reason, "claim `groups` does not have a required value");
    let rule = step(&forbidden, "claim rule");
    assert_eq!(rule["outcome"], "fail");
    assert!(
        rule["detail"]
            .as_str()
            .unwrap()
            .contains(r#"["admin","dev"]"#),
        "{rule}"
    );
    let (status, body) = real_auth(
        &gateway,
        "groups=ops&groups=sre",
        &[("Authorization", format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(
        (status, body.trim()),
        (403, &*format!("403 Forbidden: {reason}"))
    );

    // Every rule holds: allowed, with the injected header named.
    let allowed = explain(
        &gateway,
        json!({"url": url, "headers": bearer(&token), "auth_query": "groups=dev&inject-claim=email,X-Email"}),
    )
    .await;
    assert_decision(&allowed, "allow", json!(200));
    assert_eq!(step(&allowed, "bearer token")["outcome"], "valid");
    assert_eq!(step(&allowed, "claim rule")["outcome"], "pass");
    assert!(
        step(&allowed, "inject header")["detail"]
            .as_str()
            .unwrap()
            .contains("x-email")
    );

    // A skip rule, on the canonical path only.
    let skip = |path: &str| json!({"url": format!("https://app.example.com{path}"), "auth_query": "skip-auth=GET,^/public/"});
    let skipped = explain(&gateway, skip("/public/logo.png")).await;
    assert_decision(&skipped, "skip", json!(200));
    assert_eq!(step(&skipped, "skip rule")["outcome"], "match");
    let merged = explain(&gateway, skip("/public//logo.png")).await;
    assert_decision(&merged, "skip", json!(200));
    assert_eq!(step(&merged, "skip rule")["outcome"], "match");
    // A dot segment has no single reading: refused before any rule.
    let climbing = explain(&gateway, skip("/public/../admin")).await;
    assert_decision(&climbing, "bad_request", json!(400));
    assert_eq!(step(&climbing, "path")["outcome"], "fail");

    // A malformed query.
    let malformed = explain(
        &gateway,
        json!({"url": url, "headers": bearer(&token), "auth_query": "inject-claim="}),
    )
    .await;
    assert_decision(&malformed, "bad_request", json!(400));
    assert!(
        malformed["reason"]
            .as_str()
            .unwrap()
            .contains("inject-claim")
    );

    // Two Authorization headers.
    let twice = explain(
        &gateway,
        json!({"url": url, "headers": {"Authorization": [format!("Bearer {token}"), "Bearer x"]}, "auth_query": ""}),
    )
    .await;
    assert_decision(&twice, "bad_request", json!(400));

    // No token is ever echoed.
    for explanation in [&stale, &other, &by_cookie, &forbidden, &allowed, &twice] {
        let text = explanation.to_string();
        for secret in [&token, &expired, &foreign] {
            assert!(!text.contains(secret.as_str()), "a token in {text}");
        }
    }
}

#[tokio::test]
async fn route_refusals_are_explained_as_the_proxy_decides_them() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let gateway = gateway(&idp, &upstream, "").await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let token = idp.access_token().sign();
    // Each requirement, refused: the explanation's reason is the 403 page's text.
    for (path, route, needle) in [
        ("/scopes/x", 0, r#"`scope` = "openid read""#),
        ("/roles/x", 1, "$.roles = []"),
        ("/groups/x", 2, r#"`groups` = ["admin","dev"]"#),
        ("/claims/x", 3, "no `tid` claim"),
        ("/email/x", 4, r#"`email` = "alice@example.com""#),
        ("/issuers/x", 5, "`iss` = "),
    ] {
        let explanation = explain(
            &gateway,
            json!({"url": format!("https://app.example.com{path}"), "headers": bearer(&token)}),
        )
        .await;
        assert_decision(&explanation, "forbidden", json!(403));
        assert_eq!(explanation["route"], route, "{explanation:#}");
        let requirement = step(&explanation, "requirement");
        assert_eq!(requirement["outcome"], "fail");
        let detail = requirement["detail"].as_str().unwrap();
        assert!(
            detail.contains(needle),
            "{path}: `{needle}` not in {detail}"
        );
        let reason = explanation["reason"].as_str().unwrap();
        let real = client
            .get(gateway.url(path))
            .bearer_auth(&token)
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
        assert_eq!(real.status(), 403);
        let page = real.text().await.unwrap();
        assert!(
            page.contains(reason),
            "{path}: `{reason}` not on the page:\n{page}"
        );
    }

    // Every requirement holds: allowed, forwarded (the upstream answers).
    let ok = idp.access_token().claim("groups", json!(["ops"])).sign();
    let allowed = explain(
        &gateway,
        json!({"url": "https://app.example.com/groups/x", "headers": bearer(&ok)}),
    )
    .await;
    assert_decision(&allowed, "allow", Value::Null);
    assert_eq!(step(&allowed, "requirement")["outcome"], "pass");

    // Expired, and foreign-issuer tokens: 401.
    for bad in [
        idp.access_token().expires_in(-600).sign(),
        idp.access_token()
            .claim("iss", json!("https://elsewhere.example"))
            .sign(),
    ] {
        let explanation = explain(
            &gateway,
            json!({"url": "https://app.example.com/app/x", "headers": bearer(&bad)}),
        )
        .await;
        assert_decision(&explanation, "unauthenticated", json!(401));
        assert_eq!(step(&explanation, "bearer token")["outcome"], "invalid");
        assert!(!explanation.to_string().contains(&bad));
        let real = client
            .get(gateway.url("/app/x"))
            .bearer_auth(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(real.status(), 401);
    }

    // No credential: a browser is sent to log in, an API call refused, a deny route refuses.
    let browser = explain(&gateway, json!({"url": "https://app.example.com/app/x"})).await;
    assert_decision(&browser, "unauthenticated", json!(302));
    assert_eq!(step(&browser, "session cookie")["outcome"], "none");
    let api = explain(
        &gateway,
        json!({"method": "POST", "url": "https://app.example.com/app/x"}),
    )
    .await;
    assert_decision(&api, "unauthenticated", json!(401));
    let denied = explain(&gateway, json!({"url": "https://app.example.com/api/x"})).await;
    assert_decision(&denied, "unauthenticated", json!(401));
    assert_eq!(denied["route"], 7);

    // A skip rule (method and canonical path), and a path that climbs out of it.
    let skipped = explain(
        &gateway,
        json!({"url": "https://app.example.com/app/public/logo.png"}),
    )
    .await;
    assert_decision(&skipped, "skip", Value::Null);
    let climbing = explain(
        &gateway,
        json!({"url": "https://app.example.com/app/public/../secret"}),
    )
    .await;
    assert_decision(&climbing, "unauthenticated", json!(302));
    assert_eq!(step(&climbing, "skip rule")["outcome"], "no_match");
    assert!(
        step(&climbing, "path")["detail"]
            .as_str()
            .unwrap()
            .contains("/app/secret")
    );

    // No route, and a path with no single reading.
    let nowhere = explain(&gateway, json!({"url": "https://app.example.com/nothing"})).await;
    assert_decision(&nowhere, "not_found", json!(404));
    assert_eq!(nowhere["route"], Value::Null);
    assert_eq!(
        client
            .get(gateway.url("/nothing"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let ambiguous = explain(
        &gateway,
        json!({"url": "https://app.example.com/app/a%2Fb"}),
    )
    .await;
    assert_decision(&ambiguous, "bad_request", json!(400));
}

/// An explanation may introspect an opaque token: the question counts against the admin
/// API's caller, never against the address the described request names (an admin explaining
/// a user's refusals must not lock that user's office out), and an address over its budget
/// is explained as the 429 it gets.
#[tokio::test]
async fn explained_introspections_count_against_the_admin_caller() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let config =
        config(&idp, &upstream, "").replace("audiences = [", "introspection = true\naudiences = [");
    let gateway = Gateway::start(&config).await;
    let url = "https://app.example.com/x";
    let limit = tollgate::oidc::introspection_gate::REFUSED_A_WINDOW;
    let described = |n: u32| {
        json!({
            "url": url,
            "auth_query": "",
            "headers": {
                "Authorization": format!("Bearer made-up-{n}"),
                "X-Forwarded-For": "192.0.2.7",
            },
        })
    };
    for n in 0..limit {
        let refused = explain(&gateway, described(n)).await;
        assert_decision(&refused, "unauthenticated", json!(401));
    }
    assert_eq!(idp.count("introspect"), limit as usize);
    let limited = explain(&gateway, described(limit)).await;
    assert_decision(&limited, "rate_limited", json!(429));
    assert_eq!(idp.count("introspect"), limit as usize, "not asked");
    // The address the described request named was not counted: its own request is asked.
    let made_up = ("Authorization", "Bearer made-up-real".to_owned());
    let named = ("X-Forwarded-For", "192.0.2.7".to_owned());
    assert_eq!(real_auth(&gateway, "", &[made_up, named]).await.0, 401);
    assert_eq!(idp.count("introspect"), limit as usize + 1);
}

/// A provider refusing Tollgate's own client authentication at its introspection endpoint (a
/// rotated secret): the opaque token's 502 says so, in the explanation as in the log line,
/// rather than that the provider "refused" (which read as the token refused).
#[tokio::test]
async fn a_provider_refusing_tollgates_credentials_at_introspection_is_named() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let config = config(&idp, &upstream, "")
        .replace("audiences = [", "introspection = true\naudiences = [")
        .replace(
            crate::support::idp::CLIENT_SECRET,
            "a-secret-the-provider-no-longer-knows",
        );
    let gateway = Gateway::start(&config).await;
    let explained = explain(
        &gateway,
        json!({"url": "https://app.example.com/x", "headers": bearer("opaque-abc"), "auth_query": ""}),
    )
    .await;
    assert_decision(&explained, "unavailable", json!(502));
    let detail = step(&explained, "bearer token")["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        detail.contains("refused Tollgate's client authentication")
            && detail.contains("client_secret"),
        "{detail}"
    );
    let authorization = ("Authorization", "Bearer opaque-def".to_owned());
    assert_eq!(real_auth(&gateway, "", &[authorization]).await.0, 502);
}

#[tokio::test]
async fn explaining_changes_nothing() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    // Every session's tokens are due for refresh at once.
    let gateway = gateway(
        &idp,
        &upstream,
        "store = \"memory\"\nrefresh_before = \"1h\"\n",
    )
    .await;
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    let cookie = format!(
        "tollgate={}; __Host-tollgate_bind={}",
        browser.cookies["tollgate"], browser.cookies["__Host-tollgate_bind"]
    );
    let metrics = gateway.metrics().await;
    let refreshes = idp.count("refresh");
    let mut explanations = Vec::new();
    for request in [
        json!({"url": "https://app.example.com/x", "headers": {"Cookie": cookie}, "auth_query": "groups=dev"}),
        json!({"url": "https://app.example.com/groups/x", "headers": {"Cookie": cookie}}),
        json!({"url": "https://app.example.com/app/x"}),
    ] {
        explanations.push(explain(&gateway, request).await);
    }
    assert_eq!(idp.count("refresh"), refreshes, "no refresh");
    for explanation in &explanations {
        assert!(
            !explanation
                .to_string()
                .contains(&browser.cookies["tollgate"]),
            "the cookie is never echoed"
        );
        if explanation["status"] != 302 {
            assert_eq!(step(explanation, "session cookie")["outcome"], "valid");
            assert_eq!(step(explanation, "session refresh")["outcome"], "skipped");
        }
    }
    let counted = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|line| {
                line.starts_with("tollgate_requests_total")
                    || line.starts_with("tollgate_auth_decision_seconds_count")
                    || line.starts_with("tollgate_refreshes_total")
            })
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(counted(&gateway.metrics().await), counted(&metrics));
    // The real request does refresh: the explanation above would have, had it not held back.
    let real = browser.get(&gateway.url("/auth")).await;
    assert_eq!(real.status(), 200);
    assert_eq!(idp.count("refresh"), refreshes + 1);
}

#[tokio::test]
async fn explaining_does_not_touch_the_session() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let clock = tollgate::clock::ManualClock::new();
    let gateway = Gateway::start_with_clock(
        &config(
            &idp,
            &upstream,
            "store = \"memory\"\nidle_timeout = \"100s\"\n",
        ),
        clock.clone(),
    )
    .await;
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    let cookie = format!(
        "tollgate={}; __Host-tollgate_bind={}",
        browser.cookies["tollgate"], browser.cookies["__Host-tollgate_bind"]
    );
    clock.advance(60);
    let explanation = explain(
        &gateway,
        json!({"url": "https://app.example.com/x", "headers": {"Cookie": cookie}, "auth_query": ""}),
    )
    .await;
    assert_decision(&explanation, "allow", json!(200));
    // Idle since the login: a request at 60 s would have kept it alive; the explanation did not.
    clock.advance(50);
    assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 401);
}

#[tokio::test]
async fn explain_is_an_admin_endpoint_and_refuses_bad_input_clearly() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let gateway = gateway(&idp, &upstream, "").await;
    let valid = json!({"url": "https://app.example.com/x", "auth_query": ""}).to_string();
    assert_eq!(post(&gateway, None, valid.clone()).await.status(), 401);
    assert_eq!(
        post(&gateway, Some("wrong"), valid.clone()).await.status(),
        401
    );
    assert_eq!(
        gateway
            .post("/admin/explain")
            .bearer_auth(ADMIN_TOKEN)
            .body(valid)
            .send()
            .await
            .unwrap()
            .status(),
        404,
        "not on the public listener"
    );
    for (body, status, needle) in [
        ("{not json".to_owned(), 400, "invalid explain request"),
        (
            json!({"url": "https://a.example/", "bogus": 1}).to_string(),
            400,
            "unknown field `bogus`",
        ),
        (
            json!({"method": "GET"}).to_string(),
            400,
            "missing field `url`",
        ),
        (json!({"url": "/relative"}).to_string(), 400, "`url`"),
        (
            json!({"url": "https://a.example/", "method": "G E T"}).to_string(),
            400,
            "`method`",
        ),
        (
            json!({"url": "https://a.example/", "headers": {"Authorization": "Bearer a\nb"}})
                .to_string(),
            400,
            "header `Authorization`",
        ),
        (
            json!({"url": "https://a.example/", "headers": {"Bad Name": "x"}}).to_string(),
            400,
            "not a valid header name",
        ),
        // A header line pasted whole as a name is not quoted back (nor logged): it holds the
        // token.
        (
            json!({"url": "https://a.example/", "headers": {"Authorization: Bearer SECRETVALUE": ""}})
                .to_string(),
            400,
            "not a valid header name",
        ),
        (
            json!({"url": "https://a.example/signin?rd=/"}).to_string(),
            400,
            "`/signin` is one of Tollgate's own endpoints",
        ),
        (
            json!({"url": "https://a.example/", "auth_query": "x".repeat(100_000)}).to_string(),
            413,
            "larger than",
        ),
        // Nor one pasted at the top level, where it is an unknown field.
        (
            json!({"url": "https://a.example/", "Authorization: Bearer SECRETVALUE": ""})
                .to_string(),
            400,
            "an unknown field (its name is not repeated",
        ),
        (
            json!({"url": "https://a.example/", "x7KqSECRETVALUE": ""}).to_string(),
            400,
            "an unknown field (its name is not repeated",
        ),
        (
            json!({"url": "https://a.example/", "a`, Bearer SECRETVALUE": ""}).to_string(),
            400,
            "an unknown field (its name is not repeated",
        ),
        (
            json!({"url": "https://a.example/", "x`SECRETVALUE": ""}).to_string(),
            400,
            "an unknown field (its name is not repeated",
        ),
        // A value of the wrong type is not quoted back: it may be a cookie or a token.
        (
            json!({"url": "https://a.example/", "headers": "Cookie: tollgate=SECRETVALUE"})
                .to_string(),
            400,
            "a value of the wrong type",
        ),
    ] {
        let response = post(&gateway, Some(ADMIN_TOKEN), body.clone()).await;
        assert_eq!(response.status(), status, "{body:.80}");
        let answer: Value = response.json().await.unwrap();
        let message = answer["error"].as_str().unwrap();
        assert!(message.contains(needle), "`{needle}` not in `{message}`");
        assert!(!message.contains("a\nb"));
        assert!(!message.contains("SECRETVALUE"), "{message}");
    }
    // A body broken off before its end is not too large (it was answered 413): 400.
    let admin = reqwest::Url::parse(&gateway.admin_url("/")).unwrap();
    let mut stream =
        tokio::net::TcpStream::connect((admin.host_str().unwrap(), admin.port().unwrap()))
            .await
            .unwrap();
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    stream
        .write_all(
            format!(
                "POST /admin/explain HTTP/1.1\r\nhost: admin\r\nauthorization: Bearer \
                 {ADMIN_TOKEN}\r\ncontent-length: 100\r\n\r\n{{\"url\": "
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 400 ") && answer.contains("could not be read whole"),
        "{answer}"
    );
}

/// The issue's promise: the `/auth` 403, its decision log line and the explanation carry one
/// reason text. Tollgate runs as its own process here, so its log can be read.
#[tokio::test]
async fn the_auth_403_its_log_line_and_the_explanation_give_one_reason() {
    use std::io::BufRead as _;
    let idp = TestIdp::start().await;
    let (public, admin) = (crate::support::free_port(), crate::support::free_port());
    let dir = crate::support::scratch_dir("explain");
    let config = dir.join("tollgate.toml");
    std::fs::write(
        &config,
        Gateway::forward_auth_config(&idp, &format!("admin_token = \"{ADMIN_TOKEN}\""), "")
            .replace(
                "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"",
                &format!("listen = \"127.0.0.1:{public}\"\nadmin_listen = \"127.0.0.1:{admin}\""),
            ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("TOLLGATE_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines, log) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let client = reqwest::Client::new();
    let mut up = false;
    for _ in 0..200 {
        if client
            .get(format!("http://127.0.0.1:{public}/ping"))
            .send()
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(up, "tollgate did not start");

    let token = idp.access_token().sign();
    let refused = client
        .get(format!("http://127.0.0.1:{public}/auth?groups=ops"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let body = refused.text().await.unwrap();
    let explanation: Value = client
        .post(format!("http://127.0.0.1:{admin}/admin/explain"))
        .bearer_auth(ADMIN_TOKEN)
        .body(
            json!({"url": "https://app.example.com/", "headers": bearer(&token), "auth_query": "groups=ops"})
                .to_string(),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_decision(&explanation, "forbidden", json!(403));
    let reason = explanation["reason"].as_str().unwrap();
    assert_eq!(body.trim(), format!("403 Forbidden: {reason}"));

    let logged = loop {
        let line = log
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("no decision line for the 403");
        let Ok(entry) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let fields = if entry["fields"].is_object() {
            &entry["fields"]
        } else {
            &entry
        };
        if fields["role"] == "forward_auth" && fields["result"] == "forbidden" {
            break fields["reason"].as_str().unwrap().to_owned();
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(logged, reason);
}
