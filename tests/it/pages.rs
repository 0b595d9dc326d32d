//! SPEC §10: the pages a person sees — one template, security headers, the same answers as
//! JSON for API calls — and the landing page at `/`.

use serde_json::{Value, json};

use crate::support::{Gateway, TestIdp};

const HTML: &str = "text/html,application/xhtml+xml,*/*;q=0.8";
const JSON: &str = "application/json";

#[tokio::test]
async fn refusals_are_pages_for_browsers_and_json_for_api_calls() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::forward_auth(&idp).await;
    let client = reqwest::Client::new();
    let token = idp.access_token().claim("groups", json!(["dev"])).sign();
    let forbidden = |accept: &'static str| {
        client
            .get(gateway.url("/auth?groups=ops"))
            .bearer_auth(&token)
            .header("accept", accept)
            .send()
    };

    let page = forbidden(HTML).await.unwrap();
    assert_eq!(page.status(), 403);
    let headers = page.headers().clone();
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        headers["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("default-src 'none'")
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    let text = page.text().await.unwrap();
    assert!(text.contains("<h1>Access refused</h1>"), "{text}");
    assert!(
        text.contains("groups"),
        "the page names the failed requirement: {text}"
    );
    assert!(!text.contains(&token), "never a token");

    let api = forbidden("application/json").await.unwrap();
    assert_eq!(api.status(), 403);
    let body: Value = api.json().await.unwrap();
    assert_eq!(body["error"], "forbidden");
    assert!(body["message"].as_str().unwrap().contains("groups"));

    let plain = forbidden("*/*").await.unwrap();
    assert_eq!(
        plain.status(),
        403,
        "ingress controllers read the status only"
    );
    assert!(
        plain.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    gateway.stop().await;
}

/// `method path` at `gateway`, accepting `accept`.
async fn ask(
    gateway: &Gateway,
    method: reqwest::Method,
    path: &str,
    accept: &str,
) -> reqwest::Response {
    reqwest::Client::new()
        .request(method, gateway.url(path))
        .header("accept", accept)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_landing_page_and_not_found_are_pages_not_browser_errors() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::forward_auth(&idp).await;
    let landing = ask(&gateway, reqwest::Method::GET, "/", HTML).await;
    assert_eq!(landing.status(), 200);
    // No page of Tollgate's may be framed, in a browser that reads no CSP level 2 either.
    assert_eq!(landing.headers()["x-frame-options"], "DENY");
    assert!(landing.text().await.unwrap().contains("You are signed out"));
    // Signed in by the session the cookie opens, not by a cookie of the name: a forged one,
    // or one of a session that ended (a server-side store's), is "signed out".
    let gateway = Gateway::start(
        &Gateway::forward_auth_config(&idp, "", "")
            .replace("[session]\n", "[session]\nstore = \"memory\"\n"),
    )
    .await;
    let landing_with = |cookie: String| {
        let request = reqwest::Client::new()
            .get(gateway.url("/"))
            .header("accept", HTML)
            .header("cookie", cookie);
        async move { request.send().await.unwrap().text().await.unwrap() }
    };
    assert!(
        landing_with("tollgate=forged".to_owned())
            .await
            .contains("You are signed out")
    );
    let mut browser = crate::support::Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    let cookie = crate::refresh::cookie_header(&browser);
    assert!(
        landing_with(cookie.clone())
            .await
            .contains("You are signed in")
    );
    browser.get(&gateway.url("/signout")).await;
    assert!(
        landing_with(cookie).await.contains("You are signed out"),
        "the copy of a cookie whose session ended"
    );
    let missing = ask(&gateway, reqwest::Method::GET, "/no/such/page", HTML).await;
    assert_eq!(missing.status(), 404);
    assert!(missing.text().await.unwrap().contains("Page not found"));
    let missing = ask(&gateway, reqwest::Method::GET, "/no/such/page", JSON).await;
    let missing_json: Value = missing.json().await.unwrap();
    assert_eq!(missing_json["error"], "not_found");
    // Neither a page nor JSON asked for: plain text, as every other refusal.
    let missing = ask(&gateway, reqwest::Method::GET, "/no/such/page", "*/*").await;
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    assert_eq!(missing.headers()["x-content-type-options"], "nosniff");
    assert_eq!(
        missing.text().await.unwrap(),
        "404 Not Found: There is nothing at this address.\n"
    );
    let wrong_method = ask(&gateway, reqwest::Method::GET, "/backchannel-logout", "*/*").await;
    assert_eq!(
        wrong_method.text().await.unwrap(),
        "405 Method Not Allowed: This address does not answer GET requests.\n"
    );
    gateway.stop().await;
}

/// A method an address does not answer (a `GET` of an endpoint that takes `POST`, a `POST` of
/// one that takes `GET`) is a page saying so, or its JSON twin, with `Allow`; it used to be a
/// 405 with an empty body.
#[tokio::test]
async fn a_method_an_address_does_not_answer_is_a_page_with_allow() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::forward_auth(&idp).await;
    let page = ask(&gateway, reqwest::Method::POST, "/validate", HTML).await;
    assert_eq!(page.status(), 405);
    assert_eq!(page.headers()["allow"], "GET,HEAD");
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    let text = page.text().await.unwrap();
    assert!(text.contains("Method not allowed"), "{text}");
    assert!(text.contains("does not answer POST requests"), "{text}");
    let refusal = ask(&gateway, reqwest::Method::GET, "/backchannel-logout", JSON).await;
    assert_eq!(refusal.status(), 405);
    assert_eq!(refusal.headers()["allow"], "POST");
    let json: Value = refusal.json().await.unwrap();
    assert_eq!(json["error"], "method_not_allowed");
    assert_eq!(
        json["message"],
        "This address does not answer GET requests."
    );
    gateway.stop().await;
}
