//! The README's nginx `auth_request` recipe, as written there (Tollgate's address replaced), in
//! Debian's nginx in front of `TestUpstream` and Tollgate's forward-auth: what a client says of
//! itself reaches neither the application nor the login.

use serde_json::{Value, json};

use crate::support::browser::{location, query_value};
use crate::support::nginx::{self, Nginx};
use crate::support::{Browser, Gateway, TestIdp, TestUpstream, free_port};

/// The README's `nginx` block of the `auth_request` recipe.
fn recipe() -> String {
    crate::support::readme_block("### nginx `auth_request`\n", "nginx").to_owned()
}

/// nginx on a free port with the recipe as its one server, `app` being `upstream`; answers
/// nginx (stopped on drop) and its base URL.
async fn recipe_in_nginx(gateway: &Gateway, upstream: &TestUpstream) -> (Nginx, String) {
    let port = free_port();
    let block = recipe().replace("127.0.0.1:4180", &gateway.app.public_addr.to_string());
    assert!(!block.contains(":4180"), "{block}");
    let http = format!(
        "upstream app {{ server {}; }}\nserver {{\n listen 127.0.0.1:{port};\n{block}\n}}\n",
        upstream.addr
    );
    (
        Nginx::start(&http, &[port]).await,
        format!("http://127.0.0.1:{port}"),
    )
}

/// The identity headers of the gateways Tollgate replaces, as a client sends them, and the
/// recipe's own injected header: none reaches the application but the value `/auth` gave.
#[tokio::test]
async fn the_readme_nginx_recipe_passes_on_no_identity_a_client_claims() {
    if !nginx::available() {
        return;
    }
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let gateway = Gateway::start(&Gateway::forward_auth_config(&idp, "", "")).await;
    let (_nginx, base) = recipe_in_nginx(&gateway, &upstream).await;
    let token = idp
        .access_token()
        .claim("email", json!("user@example.com"))
        .sign();
    let claimed = [
        "X-Forwarded-User",
        "X-Forwarded-Email",
        "X-Forwarded-Groups",
        "X-Forwarded-Preferred-Username",
        "X-Forwarded-Access-Token",
        "X-Auth-Request-User",
        "X-Auth-Request-Email",
        "X-Auth-Request-Groups",
        "X-Auth-Request-Preferred-Username",
        "X-Auth-Request-Access-Token",
        "Remote-User",
        "Remote-Groups",
        "Remote-Email",
        "Remote-Name",
        "OIDC_CLAIM_email",
        "X-Auth-Email",
    ];
    let mut request = reqwest::Client::new()
        .get(format!("{base}/reports"))
        .bearer_auth(&token);
    for name in claimed {
        request = request.header(name, "ceo@example.com");
    }
    let answer = request.send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let echoed: Value = answer.json().await.unwrap();
    let headers = &echoed["headers"];
    for name in claimed {
        let name = name.to_ascii_lowercase();
        if name == "x-auth-email" {
            assert_eq!(headers[&name], json!(["user@example.com"]), "{echoed}");
        } else {
            assert!(
                headers.get(&name).is_none(),
                "{name} reached the application: {echoed}"
            );
        }
    }
}

/// What an application may take for another host or path than the one nginx chose the
/// location by (Rails's `X-Forwarded-Host`, Rack's `Forwarded`, Symfony's `X-Original-URL`,
/// Yii's `X-Rewrite-URL`), as a client sends it: the application is told the host nginx saw,
/// and none of the rest.
#[tokio::test]
async fn the_readme_nginx_recipe_passes_on_no_other_host_or_path_a_client_claims() {
    if !nginx::available() {
        return;
    }
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let gateway = Gateway::start(&Gateway::forward_auth_config(&idp, "", "")).await;
    let (_nginx, base) = recipe_in_nginx(&gateway, &upstream).await;
    let answer = reqwest::Client::new()
        .get(format!("{base}/reports"))
        .header("host", "www.example.com")
        .bearer_auth(idp.access_token().sign())
        .header("x-forwarded-host", "admin.example.com")
        .header("forwarded", "host=admin.example.com")
        .header("x-original-url", "/admin/users")
        .header("x-original-uri", "/admin/users")
        .header("x-rewrite-url", "/admin/users")
        .header("x-forwarded-uri", "/admin/users")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let echoed: Value = answer.json().await.unwrap();
    let headers = &echoed["headers"];
    assert_eq!(
        headers["x-forwarded-host"],
        json!(["www.example.com"]),
        "{echoed}"
    );
    for name in [
        "forwarded",
        "x-original-url",
        "x-original-uri",
        "x-rewrite-url",
        "x-forwarded-uri",
    ] {
        assert!(
            headers.get(name).is_none(),
            "{name} reached the application: {echoed}"
        );
    }
}

/// Failed sign-ins are limited per client address (ten a minute): through the recipe, that is
/// the address nginx saw, never one a client's `X-Forwarded-For` claims, so a client cannot
/// buy a provider call per made-up address.
#[tokio::test]
async fn the_readme_nginx_recipe_limits_failed_sign_ins_by_the_address_nginx_saw() {
    if !nginx::available() {
        return;
    }
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let gateway = Gateway::start(&Gateway::forward_auth_config(&idp, "", "")).await;
    let (_nginx, base) = recipe_in_nginx(&gateway, &upstream).await;
    let before = idp.count("token");
    let mut statuses = Vec::new();
    for attempt in 0..12 {
        let claimed = format!("203.0.113.{}", attempt + 1);
        let headers = [("x-forwarded-for", claimed.as_str())];
        let mut browser = Browser::new();
        let signin = browser.get_with(&format!("{base}/signin"), &headers).await;
        assert_eq!(signin.status(), 302, "attempt {attempt}");
        let to_provider = reqwest::Url::parse(&location(&signin)).unwrap();
        let redirect_uri = query_value(&to_provider, "redirect_uri");
        assert_eq!(redirect_uri, Some(format!("{base}/callback")));
        let state = query_value(&to_provider, "state").unwrap();
        let callback = format!("{base}/callback?state={state}&code=made-up-{attempt}");
        let answer = browser.get_with(&callback, &headers).await;
        statuses.push(answer.status().as_u16());
    }
    assert_eq!(statuses[..10], [401; 10], "{statuses:?}");
    assert_eq!(statuses[10..], [429; 2], "{statuses:?}");
    assert_eq!(idp.count("token"), before + 10);
}
