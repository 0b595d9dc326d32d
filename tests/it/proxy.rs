//! SPEC §5: the authenticating reverse proxy — routes, on_unauthenticated, bearer tokens,
//! requirements, identity headers, header hygiene, streaming, upgrades, upstream failures.

use std::io::{Read as _, Write as _};

use serde_json::{Value, json};

use crate::support::browser::location;
use crate::support::gateway::SESSION_SECRET;
use crate::support::idp::{AUDIENCE, CLIENT_ID, CLIENT_SECRET};
use crate::support::{Browser, Gateway, TestIdp, TestUpstream};

/// Tollgate with the test provider as `corp` and `routes`, where `{upstream}` stands for
/// `upstream_url`.
pub fn proxy_config(idp: &TestIdp, upstream_url: &str, routes: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"

[session]
secrets = ["{SESSION_SECRET}"]

[[provider]]
name = "corp"
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
audiences = ["{AUDIENCE}"]

{routes}
"#,
        issuer = idp.issuer(),
        routes = routes.replace("{upstream}", upstream_url),
    )
}

const LOGIN_ROUTE: &str = r#"
[[route]]
upstream = "{upstream}"
provider = "corp"
[route.headers]
"X-User" = "claim:email"
"X-Groups" = "json:$.groups[*]"
"X-Access-Token" = "access_token"
"X-Id-Token" = "id_token"
"X-Userinfo" = "userinfo_base64"
"#;

async fn log_in_through(
    browser: &mut Browser,
    gateway: &Gateway,
    path: &str,
) -> (reqwest::Response, String) {
    browser.follow(&gateway.url(path)).await
}

fn seen(body: &Value, header: &str) -> Vec<String> {
    body["headers"][header]
        .as_array()
        .map(|values| {
            values
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// What the upstream saw of `GET /x` at `gateway` sent with `headers` (in order, repeats kept).
async fn echo_of(gateway: &Gateway, headers: &[(&str, &str)]) -> Value {
    let mut request = reqwest::Client::new().get(gateway.url("/x"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap().json().await.unwrap()
}

/// Whether the upstream saw a header that a backend reading names without case and `_` as `-`
/// would take for `name`.
fn reached(body: &Value, name: &str) -> bool {
    let normal = |name: &str| name.replace(['_', '.'], "-").to_ascii_lowercase();
    body["headers"]
        .as_object()
        .unwrap()
        .keys()
        .any(|seen| normal(seen) == normal(name))
}

#[tokio::test]
async fn a_login_redirect_is_counted_once_under_the_role_that_answered() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let with_signin = format!("{LOGIN_ROUTE}\n[forward_auth]\nprovider = \"corp\"\n");
    let gateway = Gateway::start(&proxy_config(&idp, &upstream.url(), &with_signin)).await;
    for path in ["/app/a", "/app/b", "/signin?rd=/app/c"] {
        let answer = gateway.get(path).send().await.unwrap();
        assert_eq!(answer.status(), 302, "{path}");
        assert!(location(&answer).starts_with(idp.issuer()), "{path}");
    }
    let metrics = gateway.metrics().await;
    let mut redirects: Vec<&str> = metrics
        .lines()
        .filter(|line| line.contains("result=\"login_redirect\""))
        .collect();
    redirects.sort_unstable();
    assert_eq!(
        redirects,
        [
            "tollgate_requests_total{role=\"proxy\",result=\"login_redirect\"} 2",
            "tollgate_requests_total{role=\"signin\",result=\"login_redirect\"} 1",
        ],
        "{metrics}"
    );
}

#[tokio::test]
async fn a_browsers_subresource_gets_401_and_starts_no_login() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let gateway = Gateway::start(&proxy_config(&idp, &upstream.url(), LOGIN_ROUTE)).await;
    let mut browser = Browser::new();
    // What Chromium sends for a page's icon, an `<img>`, a script and a `fetch()`.
    for (mode, dest) in [
        ("no-cors", "image"),
        ("no-cors", "script"),
        ("cors", "empty"),
        ("same-origin", "empty"),
        ("websocket", "websocket"),
    ] {
        let answer = browser
            .get_with(
                &gateway.url("/favicon.ico"),
                &[
                    ("accept", "image/avif,image/webp,*/*"),
                    ("sec-fetch-site", "same-origin"),
                    ("sec-fetch-mode", mode),
                    ("sec-fetch-dest", dest),
                ],
            )
            .await;
        assert_eq!(answer.status(), 401, "{mode} {dest}");
        assert_eq!(answer.headers()["www-authenticate"], "Bearer");
        assert!(
            answer.headers().get("set-cookie").is_none(),
            "no login state for {mode} {dest}"
        );
    }
    for dest in ["document", "iframe"] {
        let page = browser
            .get_with(
                &gateway.url("/app/page"),
                &[
                    ("accept", "text/html"),
                    ("sec-fetch-site", "none"),
                    ("sec-fetch-mode", "navigate"),
                    ("sec-fetch-dest", dest),
                ],
            )
            .await;
        assert_eq!(page.status(), 302, "a navigation to a {dest} logs in");
        assert!(location(&page).starts_with(idp.issuer()));
    }
    // A link fetched ahead of a click (speculation rules, `<link rel=prefetch>`) is no
    // navigation yet: each would push a login in progress out of the browser's capped
    // cookies, and one ending silently at the provider would make a session nobody asked for.
    for (name, value) in [
        ("sec-purpose", "prefetch"),
        ("sec-purpose", "prefetch;prerender"),
        ("purpose", "prefetch"),
    ] {
        let ahead = browser
            .get_with(
                &gateway.url("/app/next"),
                &[
                    ("accept", "text/html"),
                    ("sec-fetch-site", "same-origin"),
                    ("sec-fetch-mode", "navigate"),
                    ("sec-fetch-dest", "document"),
                    (name, value),
                ],
            )
            .await;
        assert_eq!(ahead.status(), 401, "{name}: {value}");
        assert!(
            ahead.headers().get("set-cookie").is_none(),
            "{name}: {value}"
        );
    }
}

/// A query that cannot be a return URL (`%20` decodes to white space) costs the query, not
/// the page: the login returns to the path.
#[tokio::test]
async fn a_login_returns_to_the_page_when_its_query_cannot_come_along() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let gateway = Gateway::start(&proxy_config(&idp, &upstream.url(), LOGIN_ROUTE)).await;
    let mut browser = Browser::new();
    let (_, url) = log_in_through(&mut browser, &gateway, "/app/search?q=a%20b").await;
    assert_eq!(url, gateway.url("/app/search"));
}

#[tokio::test]
async fn login_route_logs_browsers_in_and_sends_identity_headers() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let gateway = Gateway::start(&proxy_config(&idp, &upstream.url(), LOGIN_ROUTE)).await;
    let mut browser = Browser::new();
    let first = browser.get(&gateway.url("/app/page?x=1")).await;
    assert_eq!(first.status(), 302);
    assert!(
        location(&first).starts_with(idp.issuer()),
        "browsers go to the provider"
    );
    let api = browser
        .get_with(&gateway.url("/app/page"), &[("accept", "application/json")])
        .await;
    assert_eq!(api.status(), 401);
    assert_eq!(api.headers()["www-authenticate"], "Bearer");

    browser.cookies.insert("theme".into(), "dark".into());
    let (response, url) = log_in_through(&mut browser, &gateway, "/app/page?x=1").await;
    assert_eq!(
        url,
        gateway.url("/app/page?x=1"),
        "back at the page first asked for"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["uri"], "/app/page?x=1");
    assert_eq!(seen(&body, "x-user"), ["alice@example.com"]);
    assert_eq!(seen(&body, "x-groups"), ["admin,dev"]);
    assert_eq!(seen(&body, "x-access-token").len(), 1);
    assert_eq!(seen(&body, "x-id-token").len(), 1);
    let userinfo = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        &seen(&body, "x-userinfo")[0],
    )
    .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&userinfo).unwrap()["sub"],
        "alice"
    );
    let cookies = seen(&body, "cookie");
    assert_eq!(
        cookies,
        ["theme=dark"],
        "Tollgate's cookies never reach the upstream"
    );
    assert_eq!(seen(&body, "x-forwarded-proto"), ["http"]);
    assert_eq!(seen(&body, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(
        seen(&body, "x-forwarded-host"),
        [gateway.app.public_addr.to_string()]
    );

    // Names a client lists in `Connection` are hop-by-hop and removed: never Tollgate's own.
    let listing = browser
        .get_with(
            &gateway.url("/app/page"),
            &[("connection", "X-User, x-forwarded-for, X-Access-Token")],
        )
        .await;
    let body: Value = listing.json().await.unwrap();
    assert_eq!(seen(&body, "x-user"), ["alice@example.com"]);
    assert_eq!(seen(&body, "x-access-token").len(), 1);
    assert_eq!(seen(&body, "x-forwarded-for"), ["127.0.0.1"]);
}

#[tokio::test]
async fn identity_headers_sent_by_the_client_are_removed_in_every_spelling() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let routes = r#"
[[route]]
upstream = "{upstream}"
provider = "corp"
on_unauthenticated = "pass"
[route.headers]
"X-User" = "claim:email"
"#;
    let gateway = Gateway::start(&proxy_config(&idp, &upstream.url(), routes)).await;
    let client = reqwest::Client::new();
    let forged = client
        .get(gateway.url("/"))
        .header("X-User", "mallory")
        .header("x_user", "mallory")
        .header("X_USER", "mallory")
        // PHP reads `.` in a name as `_` (Caddy's `php_fastcgi`, FrankenPHP keep it).
        .header("X.User", "mallory")
        .header("x-user", "mallory-again")
        .send()
        .await
        .unwrap();
    let body: Value = forged.json().await.unwrap();
    let names: Vec<&String> = body["headers"].as_object().unwrap().keys().collect();
    assert!(
        !names
            .iter()
            .any(|name| name.replace(['_', '.'], "-").eq_ignore_ascii_case("x-user")),
        "{names:?}"
    );
    let token = idp.access_token().sign();
    let with_token = client
        .get(gateway.url("/"))
        .bearer_auth(token)
        .header("x-user", "mallory")
        .send()
        .await
        .unwrap();
    let body: Value = with_token.json().await.unwrap();
    assert_eq!(
        seen(&body, "x-user"),
        Vec::<String>::new(),
        "bearer tokens are not accepted on this route"
    );
}

/// On a route that accepts bearer tokens, `Authorization` is Tollgate's to check: one that was
/// not the credential (a session identified the caller, a skip rule let the request through)
/// never reaches the upstream, which may read the caller from it.
#[tokio::test]
async fn an_authorization_tollgate_did_not_check_never_reaches_the_upstream() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let routes = r#"
[[route]]
upstream = "{upstream}"
provider = "corp"
accept_bearer = true
skip = ["^/public/"]
[route.headers]
"X-User" = "claim:email"
"#;
    let gateway = Gateway::start(&proxy_config(&idp, &upstream.url(), routes)).await;
    let forged = "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.";
    let client = reqwest::Client::new();
    let skipped: Value = client
        .get(gateway.url("/public/x"))
        .header("authorization", forged)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(skipped["uri"], "/public/x");
    assert!(seen(&skipped, "authorization").is_empty(), "{skipped}");

    let mut browser = Browser::new();
    let (response, _) = log_in_through(&mut browser, &gateway, "/app").await;
    assert_eq!(response.status(), 200);
    let with_session: Value = browser
        .get_with(&gateway.url("/app"), &[("authorization", forged)])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(seen(&with_session, "x-user"), ["alice@example.com"]);
    assert!(
        seen(&with_session, "authorization").is_empty(),
        "{with_session}"
    );

    let token = idp.access_token().sign();
    let with_token: Value = client
        .get(gateway.url("/app"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        seen(&with_token, "authorization"),
        [format!("Bearer {token}")],
        "the token Tollgate checked goes on as sent"
    );
}

/// A header that names another path or method than the request line (`X-Original-URL`,
/// `X-Rewrite-URL`, `X-HTTP-Method-Override`, …) never goes upstream, even from a trusted
/// proxy: an ingress in front copies its client's headers on, and an application that believes
/// one would serve another request than the one Tollgate decided on. The forwarding headers a
/// trusted proxy sets still pass, those that restate the scheme and port in Tollgate's words.
#[tokio::test]
async fn headers_that_override_the_request_line_are_removed_even_from_a_trusted_proxy() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let routes = r#"
[[route]]
upstream = "{upstream}"
provider = "corp"
on_unauthenticated = "pass"
"#;
    // The default trusts loopback: this client is a trusted proxy.
    let gateway = Gateway::start(&proxy_config(&idp, &upstream.url(), routes)).await;
    let overrides = [
        ("x-original-url", "/admin"),
        ("X_Original_URI", "/admin"),
        ("x-original-method", "DELETE"),
        ("X-Forwarded-Uri", "/admin"),
        ("x_forwarded_method", "DELETE"),
        ("x-rewrite-url", "/admin"),
        ("x-http-method-override", "DELETE"),
        ("X-HTTP-Method", "DELETE"),
        ("x-method-override", "DELETE"),
        ("X.HTTP.Method.Override", "DELETE"),
        ("x.original.url", "/admin"),
    ];
    let forwarding = [("x-real-ip", "10.1.2.3"), ("x-forwarded-prefix", "/app")];
    // `Forwarded` would tell an upstream that prefers it another host and scheme than the
    // `X-Forwarded-*` Tollgate sets; `Expect` is answered by Tollgate, whose client sends the
    // body at once.
    let also = [
        ("forwarded", "for=6.6.6.6;host=evil.example;proto=http"),
        ("Expect", "100-continue"),
    ];
    // The scheme and port in other words than Tollgate's `X-Forwarded-Proto` and `-Host`: Rack
    // prefers `-Ssl` and `-Scheme` to `-Proto` and `-Port` to the host's port. They go upstream
    // in Tollgate's words (this request is described as plain http on the gateway's port).
    let restated = [
        ("X-Forwarded-Port", "1337"),
        ("X-Forwarded-Ssl", "on"),
        ("X-Forwarded-Scheme", "https"),
        ("X_Forwarded_Scheme", "https"),
        ("X-Scheme", "https"),
        ("X-Url-Scheme", "https"),
        ("Front-End-Https", "on"),
    ];
    // A CGI-style application reads these as Tollgate's `X-Forwarded-Host`, `-Proto`, `-For`.
    let spellings = [
        ("X_Forwarded_Host", "evil.example"),
        ("x_forwarded_proto", "http"),
        ("X_Forwarded_For", "6.6.6.6"),
        ("X.Forwarded.Host", "evil.example"),
    ];
    let body = echo_of(
        &gateway,
        &[
            &forwarding[..],
            &overrides[..],
            &also[..],
            &spellings[..],
            &restated[..],
        ]
        .concat(),
    )
    .await;
    assert_eq!(seen(&body, "x-forwarded-host").len(), 1, "{body}");
    for (name, _) in spellings {
        assert!(
            seen(&body, &name.to_ascii_lowercase()).is_empty(),
            "{name} reached the upstream: {body}"
        );
    }
    assert!(!body.to_string().contains("evil.example"), "{body}");
    assert!(!body.to_string().contains("6.6.6.6"), "{body}");
    for (name, _) in overrides.iter().chain(&also) {
        assert!(!reached(&body, name), "{name} reached the upstream: {body}");
    }
    assert_eq!(seen(&body, "x-real-ip"), ["10.1.2.3"], "{body}");
    assert_eq!(seen(&body, "x-forwarded-prefix"), ["/app"], "{body}");
    assert_eq!(seen(&body, "x-forwarded-proto"), ["http"], "{body}");
    let port = gateway.app.public_addr.port().to_string();
    assert_eq!(seen(&body, "x-forwarded-port"), [port.as_str()], "{body}");
    for name in ["x-forwarded-ssl", "front-end-https"] {
        assert_eq!(seen(&body, name), ["off"], "{name}: {body}");
    }
    for name in ["x-forwarded-scheme", "x-scheme", "x-url-scheme"] {
        assert_eq!(seen(&body, name), ["http"], "{name}: {body}");
    }
    assert!(seen(&body, "x_forwarded_scheme").is_empty(), "{body}");
    gateway.stop().await;
}

/// Headers only a proxy may set (the client's address, an overriding path or method) are not
/// passed on from a client that is not a trusted proxy, in any spelling; and an h2c upgrade is
/// not passed on at all (the upstream would then take HTTP/2 requests Tollgate never saw).
#[tokio::test]
async fn what_only_a_proxy_may_say_and_h2c_upgrades_are_not_passed_on() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let routes = r#"
[[route]]
upstream = "{upstream}"
provider = "corp"
on_unauthenticated = "pass"
"#;
    // This client is no proxy (the default trusts loopback).
    let config = proxy_config(&idp, &upstream.url(), routes)
        .replace("[server]\n", "[server]\ntrusted_proxies = []\n");
    let gateway = Gateway::start(&config).await;
    let spoofed = [
        ("x-original-url", "/admin"),
        ("x-rewrite-url", "/admin"),
        ("x-http-method-override", "DELETE"),
        ("x-method-override", "DELETE"),
        ("x_forwarded_for", "10.9.9.9"),
        ("x.forwarded.for", "10.9.9.9"),
        ("x-forwarded-prefix", "/admin"),
        ("X_Real_IP", "10.9.9.9"),
        ("forwarded", "for=10.9.9.9"),
        // Whole families: any `X-Forwarded-*` or `X-Original-*` name.
        ("x-forwarded-uri", "/admin"),
        ("x-forwarded-method", "DELETE"),
        ("x-forwarded-client-cert", "Hash=forged"),
        ("x-forwarded-server", "admin"),
        ("x-original-uri", "/admin"),
        // The client-address headers of CDNs and of libraries that read them first.
        ("X-Client-IP", "10.9.9.9"),
        ("x-cluster-client-ip", "10.9.9.9"),
        ("True-Client-IP", "10.9.9.9"),
        ("cf-connecting-ip", "10.9.9.9"),
        ("fastly-client-ip", "10.9.9.9"),
        ("x-forwarded", "for=10.9.9.9"),
        ("forwarded-for", "10.9.9.9"),
        ("Client-IP", "10.9.9.9"),
        ("x-remote-addr", "10.9.9.9"),
        ("do-connecting-ip", "10.9.9.9"),
    ];
    let body = echo_of(&gateway, &spoofed).await;
    for (name, _) in spoofed {
        // `X-Forwarded-For` is Tollgate's own, checked below.
        if !["x_forwarded_for", "x.forwarded.for"].contains(&name) {
            assert!(!reached(&body, name), "{name} reached the upstream: {body}");
        }
    }
    assert_eq!(seen(&body, "x-forwarded-for"), ["127.0.0.1"]);
    assert!(seen(&body, "x_forwarded_for").is_empty(), "{body}");
    assert!(seen(&body, "x.forwarded.for").is_empty(), "{body}");

    let port = gateway.app.public_addr.port();
    let (status, answer) = crate::support::nginx::raw_get(
        port,
        "/x",
        &[
            ("Connection", "Upgrade, HTTP2-Settings"),
            ("Upgrade", "h2c"),
            ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let body: Value = serde_json::from_str(&answer).unwrap();
    assert!(seen(&body, "upgrade").is_empty(), "{body}");
    assert_eq!(body["uri"], "/x");
}

/// Sends `head` (a request head, `\r\n` line ends, with the blank line) and `body` on a new
/// connection to `port`; the status and the whole answer.
async fn raw_exchange(port: u16, head: &str, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    (status, text)
}

/// The JSON body the echoing upstream answered with, from a whole answer.
fn echoed(answer: &str) -> Value {
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    serde_json::from_str(body).unwrap_or_else(|_| panic!("{answer}"))
}

#[tokio::test]
async fn a_trusted_proxy_passes_its_chain_but_not_identities_or_framing_a_client_chose() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let routes = r#"
[[route]]
upstream = "{upstream}"
provider = "corp"
on_unauthenticated = "pass"
[route.headers]
"X-User" = "claim:email"
"#;
    // This client is loopback: a trusted proxy by default.
    let gateway = Gateway::start(&proxy_config(&idp, &upstream.url(), routes)).await;
    let port = gateway.app.public_addr.port();

    // The identity headers of the gateways Tollgate replaces come from no one, however
    // trusted: an application moved behind Tollgate may still read them.
    let identities = [
        ("X-Forwarded-User", "admin"),
        ("X-Forwarded-Email", "admin@example.com"),
        ("X-Forwarded-Groups", "admins"),
        ("X-Auth-Request-User", "admin"),
        ("OIDC_CLAIM_sub", "admin"),
        ("X-Userinfo", "eyJzdWIiOiJhZG1pbiJ9"),
        ("Remote-User", "admin"),
    ];
    let chain = [
        ("x-forwarded-for", "6.6.6.6, 10.0.0.1"),
        ("x-forwarded-for", "7.7.7.7"),
    ];
    let body = echo_of(&gateway, &[&chain[..], &identities[..]].concat()).await;
    for (name, _) in identities {
        assert!(!reached(&body, name), "{name} reached the upstream: {body}");
    }
    // A trusted proxy's chain is passed on whole, every header of it, with the peer appended.
    assert_eq!(
        seen(&body, "x-forwarded-for"),
        ["6.6.6.6, 10.0.0.1, 7.7.7.7, 127.0.0.1"]
    );

    // `Connection` cannot take `Host` away.
    let (status, answer) = crate::support::nginx::raw_get(
        port,
        "/x",
        &[("Host", "app.example.com"), ("Connection", "close, host")],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let body: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(seen(&body, "host"), ["app.example.com"], "{body}");

    // An `Upgrade` that `Connection` does not name, or in HTTP/1.0, makes no upgrade: the
    // request goes as a plain one.
    for head in [
        format!("GET /x HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: echo\r\n\r\n"),
        format!(
            "GET /x HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n"
        ),
    ] {
        let (status, answer) = raw_exchange(port, &head, b"").await;
        assert_eq!(status, 200, "{head:?}: {answer}");
        let body = echoed(&answer);
        assert!(seen(&body, "upgrade").is_empty(), "{head:?}: {body}");
        assert!(seen(&body, "connection").is_empty(), "{head:?}: {body}");
    }

    // A body with a coding besides `chunked` is refused, not sent on stripped of it.
    let head = format!(
        "POST /x HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
    );
    let (status, answer) = raw_exchange(port, &head, b"3\r\nabc\r\n0\r\n\r\n").await;
    assert_eq!(status, 400, "{answer}");
    let head = format!(
        "POST /x HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let (status, answer) = raw_exchange(port, &head, b"3\r\nabc\r\n0\r\n\r\n").await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test]
async fn with_a_public_url_a_request_for_another_host_is_described_as_it_was_made() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let routes = r#"
[[route]]
upstream = "{upstream}"
provider = "corp"
on_unauthenticated = "pass"
"#;
    let config = proxy_config(&idp, &upstream.url(), routes).replace(
        "[server]\n",
        "[server]\npublic_url = \"https://auth.example.com\"\ntrusted_proxies = []\n",
    );
    let gateway = Gateway::start(&config).await;
    let port = gateway.app.public_addr.port();
    let forwarded = |body: &Value| {
        (
            seen(body, "x-forwarded-proto"),
            seen(body, "x-forwarded-host"),
        )
    };
    let (_, answer) =
        crate::support::nginx::raw_get(port, "/x", &[("Host", "app.example.com:8443")]).await;
    let body: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(
        forwarded(&body),
        (
            vec!["http".to_owned()],
            vec!["app.example.com:8443".to_owned()]
        )
    );
    // `public_url`'s own host is described as `public_url` says (TLS ended in front).
    let (_, answer) =
        crate::support::nginx::raw_get(port, "/x", &[("Host", "Auth.Example.com")]).await;
    let body: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(
        forwarded(&body),
        (
            vec!["https".to_owned()],
            vec!["auth.example.com".to_owned()]
        )
    );
}

/// A request routed on another host than `public_url`'s is never described to the upstream as
/// one for `public_url`'s host: an application that serves several hosts by `X-Forwarded-Host`
/// (Rails by default) would serve that host's pages under the host-less route's rules. Before,
/// a host with `_` (which route selection reads, and the upstream's description did not) and
/// an HTTP/1.0 request with no `Host` took the pass route and went upstream as
/// `X-Forwarded-Host: app.example.com`. (It now goes with none; an HTTP/1.1 one is a 400, as
/// nginx answers it.)
#[tokio::test]
async fn a_request_on_another_host_is_never_described_as_one_for_the_public_url_host() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let routes = r#"
[[route]]
host = "app.example.com"
upstream = "{upstream}"
provider = "corp"
on_unauthenticated = "deny"

[[route]]
upstream = "{upstream}"
provider = "corp"
on_unauthenticated = "pass"
"#;
    let config = proxy_config(&idp, &upstream.url(), routes).replace(
        "[server]\n",
        "[server]\npublic_url = \"https://app.example.com\"\ntrusted_proxies = []\n",
    );
    let gateway = Gateway::start(&config).await;
    let port = gateway.app.public_addr.port();
    let (status, answer) =
        crate::support::nginx::raw_get(port, "/staff", &[("Host", "x_y.example.com")]).await;
    assert_eq!(status, 200, "{answer}");
    let body: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(
        seen(&body, "x-forwarded-host"),
        vec!["x_y.example.com".to_owned()]
    );
    let (status, answer) = raw_exchange(
        port,
        "GET /staff HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"",
    )
    .await;
    assert_eq!(status, 400, "HTTP/1.1 without a Host: {answer}");
    // HAProxy's default health check.
    let (status, answer) = raw_exchange(port, "GET /staff HTTP/1.0\r\n\r\n", b"").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        seen(&echoed(&answer), "x-forwarded-host"),
        Vec::<String>::new()
    );
    // Tollgate's own endpoints still answer a request without one (an old health check).
    let (status, _) = raw_exchange(port, "GET /ping HTTP/1.0\r\n\r\n", b"").await;
    assert_eq!(status, 200);
    gateway.stop().await;
    // Through a trusted proxy whose forwarded scheme says nothing usable (a client's copy the
    // ingress passed on): the host is not described as `public_url`'s either.
    let trusted = Gateway::start(&proxy_config(&idp, &upstream.url(), routes).replace(
        "[server]\n",
        "[server]\npublic_url = \"https://app.example.com\"\n",
    ))
    .await;
    let (status, answer) = crate::support::nginx::raw_get(
        trusted.app.public_addr.port(),
        "/staff",
        &[
            ("Host", "other.example.com"),
            ("X-Forwarded-Proto", "HTTPS"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let body: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(seen(&body, "x-forwarded-host"), Vec::<String>::new());
    trusted.stop().await;
}

#[tokio::test]
async fn deny_pass_and_bearer_routes() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let routes = r#"
[[route]]
path_prefix = "/deny"
upstream = "{upstream}"
provider = "corp"
on_unauthenticated = "deny"
[[route]]
path_prefix = "/pass"
upstream = "{upstream}"
provider = "corp"
on_unauthenticated = "pass"
accept_bearer = true
[route.headers]
"X-User" = "claim:email"
"X-User-Json" = "json:$.email"
[[route]]
path_prefix = "/api"
upstream = "{upstream}"
provider = "corp"
on_unauthenticated = "deny"
accept_bearer = true
skip = ["GET,^/api/health$"]
[route.headers]
"Authorization" = "bearer_access_token"
"#;
    let gateway = Gateway::start(&proxy_config(&idp, &upstream.url(), routes)).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    assert_eq!(
        client
            .get(gateway.url("/deny/x"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let anonymous: Value = client
        .get(gateway.url("/pass/x"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(seen(&anonymous, "x-user").is_empty());
    let token = idp.access_token().sign();
    let known: Value = client
        .get(gateway.url("/pass/x"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen(&known, "x-user"), ["alice@example.com"]);
    assert_eq!(seen(&known, "x-user-json"), ["alice@example.com"]);
    // An address the provider says it has not verified is nobody's identity: not sent, and
    // the client's own copy of the header is gone as ever.
    let unverified: Value = client
        .get(gateway.url("/pass/x"))
        .bearer_auth(
            idp.access_token()
                .claim("email", json!("ceo@corp.example"))
                .claim("email_verified", json!(false))
                .sign(),
        )
        .header("X-User", "ceo@corp.example")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(seen(&unverified, "x-user").is_empty(), "{unverified}");
    assert!(seen(&unverified, "x-user-json").is_empty(), "{unverified}");
    let invalid = client
        .get(gateway.url("/pass/x"))
        .bearer_auth(idp.access_token().expires_in(-600).sign())
        .send()
        .await
        .unwrap();
    assert_eq!(
        invalid.status(),
        401,
        "a credential that is present and invalid is refused even on a pass route"
    );
    let api: Value = client
        .get(gateway.url("/api/data"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen(&api, "authorization"), [format!("Bearer {token}")]);
    assert_eq!(
        client
            .get(gateway.url("/api/data"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        client
            .get(gateway.url("/api/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "skip rule"
    );
    assert_eq!(
        client
            .get(gateway.url("/api/health/../data"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        client
            .get(gateway.url("/nothing"))
            .send()
            .await
            .unwrap()
            .status(),
        404,
        "no route"
    );
    let metrics = gateway.metrics().await;
    assert!(
        metrics.contains("tollgate_requests_total{role=\"proxy\",result=\"no_route\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn login_on_upstream_401_passes_first_and_logs_in_only_when_the_upstream_asks() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let routes = r#"
[[route]]
upstream = "{upstream}"
provider = "corp"
on_unauthenticated = "login_on_upstream_401"
[route.headers]
"X-User" = "claim:email"
"#;
    let gateway = Gateway::start(&proxy_config(&idp, &upstream.url(), routes)).await;
    let mut browser = Browser::new();
    assert_eq!(
        browser.get(&gateway.url("/open")).await.status(),
        200,
        "anonymous requests go upstream as they are"
    );
    let asked = browser.get(&gateway.url("/needs-login")).await;
    assert_eq!(asked.status(), 302);
    assert!(location(&asked).starts_with(idp.issuer()));
    let api = browser
        .get_with(
            &gateway.url("/needs-login"),
            &[("x-requested-with", "XMLHttpRequest")],
        )
        .await;
    assert_eq!(api.status(), 401, "API calls get the upstream's 401");
    let (response, url) = browser.follow(&gateway.url("/needs-login")).await;
    assert_eq!(
        url,
        gateway.url("/needs-login"),
        "the original URL is returned to after login"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(seen(&body, "x-user"), ["alice@example.com"]);
}

/// On a route that accepts bearer tokens, a token in the query goes upstream with the request:
/// beside a session it must be valid and the session's caller's, and without one, valid; on a
/// skip rule's path too, where the application reads the query as sent, on another route to
/// the same application, and on a route that sets `Authorization` itself.
#[tokio::test]
async fn a_token_in_the_query_of_a_bearer_route_is_checked() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let routes = r#"
[[route]]
path_prefix = "/pass"
upstream = "{upstream}"
provider = "corp"
on_unauthenticated = "pass"
accept_bearer = true
[[route]]
upstream = "{upstream}"
provider = "corp"
accept_bearer = true
skip = ["^/public/"]
[[route]]
path_prefix = "/sibling"
upstream = "{upstream}"
provider = "corp"
on_unauthenticated = "pass"
[[route]]
path_prefix = "/sets"
upstream = "{other}"
provider = "corp"
on_unauthenticated = "pass"
[route.headers]
"Authorization" = "bearer_access_token"
"#;
    // Another application, whose route hands it the session's access token.
    let other = TestUpstream::start().await;
    let routes = routes.replace("{other}", &other.url());
    let gateway = Gateway::start(&proxy_config(&idp, &upstream.url(), &routes)).await;
    let mut browser = Browser::new();
    let (response, _) = browser.follow(&gateway.url("/app")).await;
    assert_eq!(response.status(), 200, "signed in");
    let alice = idp.access_token().sign();
    let bob = idp.access_token().claim("sub", json!("bob")).sign();
    let forged = "forged.admin.token";
    for (path, anonymous) in [("/app", false), ("/pass/x", true)] {
        for (token, with_session, without) in [
            (alice.as_str(), 200, 200),
            (forged, 401, 401),
            (bob.as_str(), 400, 200),
        ] {
            let url = gateway.url(&format!("{path}?access_token={token}"));
            let status = if anonymous {
                reqwest::get(&url).await.unwrap().status()
            } else {
                browser.get(&url).await.status()
            };
            let expected = if anonymous { without } else { with_session };
            assert_eq!(status, expected, "{path}, anonymous {anonymous}");
        }
    }
    // On a route without `accept_bearer` to the same application too: it believes the token
    // it gets on the other route, so a client's `Authorization` is removed here, and a token
    // in the query is checked.
    for path in ["/public/x", "/sibling/x", "/sets/x"] {
        for (token, expected) in [(alice.as_str(), 200), (forged, 401), (bob.as_str(), 200)] {
            let url = gateway.url(&format!("{path}?access_token={token}"));
            assert_eq!(
                reqwest::get(&url).await.unwrap().status(),
                expected,
                "{path}"
            );
        }
    }
    assert_eq!(
        reqwest::get(&gateway.url("/public/x?page=2"))
            .await
            .unwrap()
            .status(),
        200,
        "a skip needs no credential"
    );
}

/// An application must not set, shadow or delete Tollgate's own cookies: the upstream's
/// `Set-Cookie`s of the session, its chunks, login states and the token service's form token
/// are removed, its others kept.
#[tokio::test]
async fn the_upstream_cannot_set_tollgates_cookies() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let routes = r#"
[[route]]
upstream = "{upstream}"
provider = "corp"
on_unauthenticated = "pass"
"#;
    let gateway = Gateway::start(&proxy_config(&idp, &upstream.url(), routes)).await;
    let cookies = [
        "tollgate=s.attackers-session; Path=/app",
        "tollgate_1=x",
        "tollgate_login_abc=y; Path=/",
        "__Host-tollgate_login_abc=y; Path=/; Secure",
        "tollgate_form=planted-form-token-planted-form-token-abcdefgh",
        "__Host-tollgate_form=x; Path=/; Secure; SameSite=None",
        "=tollgate=s.attackers-session; Path=/app",
        " = tollgate_1=x",
        "app=1; Path=/",
        "tollgateway=2",
    ];
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(cookies.iter().map(|cookie| ("c", *cookie)))
        .finish();
    let response = reqwest::get(gateway.url(&format!("/set-cookies?{query}")))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let set: Vec<&str> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|value| value.to_str().unwrap())
        .collect();
    assert_eq!(set, ["app=1; Path=/", "tollgateway=2"]);
}

/// An application behind several routes may read `X-User` on all its paths: a client's
/// header named like the identity header of any route is removed on every route, also one that
/// sets no identity headers and one whose upstream is spelt otherwise (`localhost` for
/// `127.0.0.1`: which routes reach one application cannot be told from their addresses). A
/// client's `Authorization` still reaches a route that does not name it, though another route
/// sets one; another application's routes keep their clients' bearer tokens.
#[tokio::test]
async fn every_routes_identity_headers_are_removed_on_every_route() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let other_application = TestUpstream::start().await;
    let routes = format!(
        r#"
[[route]]
path_prefix = "/other"
upstream = "{}"
provider = "corp"
on_unauthenticated = "pass"
[[route]]
path_prefix = "/alias"
upstream = "{}"
provider = "corp"
on_unauthenticated = "pass"
[[route]]
path_prefix = "/static"
upstream = "{{upstream}}"
provider = "corp"
on_unauthenticated = "pass"
[[route]]
upstream = "{{upstream}}"
provider = "corp"
on_unauthenticated = "pass"
accept_bearer = true
[route.headers]
"X-User" = "claim:email"
"Authorization" = "bearer_access_token"
"#,
        other_application.url(),
        upstream.url().replace("127.0.0.1", "localhost"),
    );
    let gateway = Gateway::start(&proxy_config(&idp, &upstream.url(), &routes)).await;
    let send = async |path: &str| -> Value {
        gateway
            .get(path)
            .header("x-user", "admin@example.com")
            .header("X_User", "admin@example.com")
            .header("authorization", "Basic YTpi")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    };
    let body = send("/static/x").await;
    assert!(!reached(&body, "x-user"), "{body}");
    assert!(!reached(&body, "x_user"), "{body}");
    assert_eq!(seen(&body, "authorization"), ["Basic YTpi"]);
    for path in ["/other/x", "/alias/x"] {
        let body = send(path).await;
        assert!(!reached(&body, "x-user"), "{path}: {body}");
        assert!(!reached(&body, "x_user"), "{path}: {body}");
        assert_eq!(seen(&body, "authorization"), ["Basic YTpi"], "{path}");
    }
    // A client's bearer token (an unsigned one saying `admin`) never reaches an application
    // that gets the access token Tollgate checked as `Authorization` on another route: it
    // would believe this one too. Another application's route passes it.
    let forged = "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.";
    for scheme in [
        forged.to_owned(),
        forged.to_lowercase(),
        "Bearer".to_owned(),
        forged.replace(' ', "\t"),
        "JWT eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.".to_owned(),
        // After `Basic `, a token, not base64 credentials.
        "Basic eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.".to_owned(),
    ] {
        for path in ["/static/x", "/alias/x"] {
            let body: Value = gateway
                .get(path)
                .header("authorization", &scheme)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert!(!reached(&body, "authorization"), "{path} {scheme}: {body}");
        }
    }
    let body: Value = gateway
        .get("/other/x")
        .header("authorization", forged)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen(&body, "authorization"), [forged], "{body}");
    gateway.stop().await;

    // A route that takes bearer tokens as credentials passes the one it checked on too.
    let routes = r#"
[[route]]
path_prefix = "/api"
upstream = "{upstream}"
provider = "corp"
accept_bearer = true
[[route]]
upstream = "{upstream}"
provider = "corp"
on_unauthenticated = "pass"
"#;
    let gateway = Gateway::start(&proxy_config(&idp, &upstream.url(), routes)).await;
    for (scheme, passes) in [(forged, false), ("Basic YTpi", true)] {
        let body: Value = gateway
            .get("/graphql")
            .header("authorization", scheme)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(reached(&body, "authorization"), passes, "{scheme}: {body}");
    }
    gateway.stop().await;
}

#[tokio::test]
async fn requirements_refuse_with_a_page_naming_the_requirement() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let routes = r#"
[[route]]
upstream = "{upstream}"
provider = "corp"
accept_bearer = true
[route.require]
groups = ["ops"]
"#;
    let gateway = Gateway::start(&proxy_config(&idp, &upstream.url(), routes)).await;
    let client = reqwest::Client::new();
    let refused = client
        .get(gateway.url("/"))
        .bearer_auth(idp.access_token().sign())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let page = refused.text().await.unwrap();
    assert!(page.contains("groups ops"), "{page}");
    let allowed = client
        .get(gateway.url("/"))
        .bearer_auth(idp.access_token().claim("groups", json!(["ops"])).sign())
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
}

#[tokio::test]
async fn a_session_of_one_provider_is_not_accepted_on_a_route_of_another() {
    let (corp, other, upstream) = (
        TestIdp::start().await,
        TestIdp::start().await,
        TestUpstream::start().await,
    );
    let routes = format!(
        r#"
[[provider]]
name = "other"
issuer = "{other}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
audiences = ["{AUDIENCE}"]
[[route]]
path_prefix = "/corp"
upstream = "{{upstream}}"
provider = "corp"
[[route]]
path_prefix = "/other"
upstream = "{{upstream}}"
provider = "other"
on_unauthenticated = "deny"
accept_bearer = true
"#,
        other = other.issuer()
    );
    let gateway = Gateway::start(&proxy_config(&corp, &upstream.url(), &routes)).await;
    let mut browser = Browser::new();
    let (response, _) = browser.follow(&gateway.url("/corp/x")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(browser.get(&gateway.url("/other/x")).await.status(), 401);
    let corp_token = corp.access_token().sign();
    let with_corp_token = gateway
        .get("/other/x")
        .bearer_auth(corp_token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        with_corp_token.status(),
        401,
        "a token is accepted only on routes of its provider"
    );
}

#[tokio::test]
async fn logout_on_a_route_ends_the_session() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let gateway = Gateway::start(&proxy_config(&idp, &upstream.url(), LOGIN_ROUTE)).await;
    let mut browser = Browser::new();
    browser.follow(&gateway.url("/")).await;
    assert!(browser.cookies.contains_key("tollgate"));
    let logout = browser.get(&gateway.url("/logout?rd=/bye")).await;
    assert_eq!(logout.status(), 302);
    assert!(location(&logout).starts_with(&format!("{}/end_session", idp.issuer())));
    assert!(!browser.cookies.contains_key("tollgate"));
    assert_eq!(
        browser.get(&gateway.url("/")).await.status(),
        302,
        "logged out: login again"
    );
    // Another page's `<img src="/logout">` or link: "Sign out?", and the session stays.
    browser.follow(&gateway.url("/")).await;
    for headers in crate::login_flow::NOT_THE_USERS {
        let asked = browser.get_with(&gateway.url("/logout"), headers).await;
        assert_eq!(asked.status(), 200, "{headers:?}");
        assert!(asked.text().await.unwrap().contains("<h1>Sign out?</h1>"));
        assert_eq!(browser.get(&gateway.url("/")).await.status(), 200);
    }
    let confirmed = browser
        .post_with(
            &gateway.url("/logout"),
            &[("sec-fetch-site", "same-origin")],
        )
        .await;
    assert_eq!(confirmed.status(), 302);
    assert!(!browser.cookies.contains_key("tollgate"));
}

#[tokio::test]
async fn upstream_failures_get_502_and_504_pages() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let routes = format!(
        r#"
[[route]]
path_prefix = "/dead"
upstream = "{dead_url}"
provider = "corp"
on_unauthenticated = "pass"
[[route]]
upstream = "{{upstream}}"
provider = "corp"
on_unauthenticated = "pass"
read_timeout = "200ms"
"#
    );
    let gateway = Gateway::start(&proxy_config(&idp, &upstream.url(), &routes)).await;
    let down = reqwest::get(gateway.url("/dead/x")).await.unwrap();
    assert_eq!(down.status(), 502);
    assert!(down.text().await.unwrap().contains("unavailable"));
    let slow = reqwest::get(gateway.url("/slow")).await.unwrap();
    assert_eq!(slow.status(), 504);
}

/// `read_timeout` runs from the request's end, as nginx's `proxy_read_timeout`: an upload that
/// takes longer than it, to an upstream that reads it all before answering, is no upstream
/// stalling (504 on the old code, which timed the upload too). A `GET`'s chunked body reaches
/// the upstream (hyper's client sent a `GET` of unknown length with no body).
#[tokio::test]
async fn the_read_timeout_starts_once_the_request_is_sent_and_a_get_keeps_its_body() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    // An upstream that takes connections and never reads from them.
    let stuck = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stuck_url = format!("http://{}", stuck.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = stuck.accept().await {
            held.push(stream);
        }
    });
    let routes = format!(
        "[[route]]\nupstream = \"{{upstream}}\"\nprovider = \"corp\"\non_unauthenticated = \"pass\"\nread_timeout = \"1s\"\n\
         [[route]]\npath_prefix = \"/stuck\"\nupstream = \"{stuck_url}\"\nprovider = \"corp\"\non_unauthenticated = \"pass\"\nread_timeout = \"1s\"\n"
    );
    let gateway = Gateway::start(&proxy_config(&idp, &upstream.url(), &routes)).await;
    let mut stream = tokio::net::TcpStream::connect(gateway.app.public_addr)
        .await
        .unwrap();
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    // Six chunks half a second apart: three times the read timeout.
    for _ in 0..6 {
        stream.write_all(b"4\r\nxxxx\r\n").await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    stream.write_all(b"0\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("\r\n\r\n24"), "{answer}");
    // An upstream that takes longer than it to answer, once the request is sent, still gets
    // 504.
    let slow = reqwest::get(gateway.url("/slow")).await.unwrap();
    assert_eq!(slow.status(), 504);
    let (status, answer) = raw_exchange(
        gateway.app.public_addr.port(),
        "GET /upload HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        b"5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.ends_with("\r\n\r\n5"), "{answer}");
    // An upstream that stops taking the body (its socket buffers full): no progress for the
    // read timeout is a 504, as before, however long the body still is.
    const LENGTH: usize = 64 << 20;
    let stream = tokio::net::TcpStream::connect(gateway.app.public_addr)
        .await
        .unwrap();
    let (mut reader, mut writer) = stream.into_split();
    tokio::spawn(async move {
        let head =
            format!("POST /stuck/upload HTTP/1.1\r\nHost: app\r\nContent-Length: {LENGTH}\r\n\r\n");
        let _ = writer.write_all(head.as_bytes()).await;
        let _ = writer.write_all(&vec![b'x'; LENGTH]).await;
    });
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        reader.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.starts_with("HTTP/1.1 504"), "{head}");
}

fn peak_resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_large_upload_streams_through_in_bounded_memory() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let routes = "[[route]]\nupstream = \"{upstream}\"\nprovider = \"corp\"\non_unauthenticated = \"pass\"\n";
    let gateway = Gateway::start(&proxy_config(&idp, &upstream.url(), routes)).await;
    const CHUNK: usize = 1 << 20;
    const CHUNKS: usize = 1024; // 1 GiB
    let stream = futures_stream(CHUNK, CHUNKS);
    let before = peak_resident_kib();
    let response = gateway
        .post("/upload")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), (CHUNK * CHUNKS).to_string());
    let grown_mib = (peak_resident_kib() - before) / 1024;
    assert!(
        grown_mib < 256,
        "peak memory grew by {grown_mib} MiB while 1 GiB passed through"
    );
}

/// A body of `count` chunks of `size` bytes, produced as it is sent.
fn futures_stream(
    size: usize,
    count: usize,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    struct Chunks {
        size: usize,
        left: usize,
    }
    impl futures_core::Stream for Chunks {
        type Item = Result<Vec<u8>, std::io::Error>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            if self.left == 0 {
                return std::task::Poll::Ready(None);
            }
            self.left -= 1;
            std::task::Poll::Ready(Some(Ok(vec![b'x'; self.size])))
        }
    }
    Chunks { size, left: count }
}

#[tokio::test]
async fn upgraded_connections_are_spliced_both_ways() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    // A protocol other than WebSocket is passed on only when the route lists it.
    let routes = "[[route]]\nupstream = \"{upstream}\"\nprovider = \"corp\"\non_unauthenticated = \"pass\"\nupgrades = [\"websocket\", \"Echo\"]\n";
    let gateway = Gateway::start(&proxy_config(&idp, &upstream.url(), routes)).await;
    let address = gateway.app.public_addr;
    let echoed = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "GET /ws HTTP/1.1\r\nHost: {address}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        stream
            .write_all(b"ping over the upgraded connection")
            .unwrap();
        let mut reply = [0u8; 33];
        stream.read_exact(&mut reply).unwrap();
        String::from_utf8(reply.to_vec()).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(echoed, "ping over the upgraded connection");
}

/// A gateway whose one route passes anonymous requests on to the application at `address`.
async fn passing_to(idp: &TestIdp, address: std::net::SocketAddr) -> Gateway {
    let routes = "[[route]]\nupstream = \"{upstream}\"\nprovider = \"corp\"\non_unauthenticated = \"pass\"\n";
    Gateway::start(&proxy_config(idp, &format!("http://{address}"), routes)).await
}

/// An upstream answer with both `Content-Length` and `Transfer-Encoding` is read chunked, and
/// its `Content-Length` is not passed on (RFC 9112 §6.3): it framed the client's answer, which
/// got the first 5 of the body's 10 bytes.
#[tokio::test]
async fn an_upstream_answer_with_a_length_and_chunks_reaches_the_client_whole() {
    use tokio::io::AsyncWriteExt as _;
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_address = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = upstream.accept().await {
            tokio::spawn(async move {
                if crate::support::read_request_head(&mut stream)
                    .await
                    .is_none()
                {
                    return;
                }
                let answer = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n0\r\n\r\n";
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    let idp = TestIdp::start().await;
    let gateway = passing_to(&idp, upstream_address).await;
    let response = reqwest::get(gateway.url("/framed")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("content-length").is_none());
    assert_eq!(response.text().await.unwrap(), "0123456789");
}

/// A client's request with both `Content-Length` and `Transfer-Encoding: chunked` is read
/// chunked (RFC 9112 §6.3), and its `Content-Length` does not frame the upstream's request
/// (passed on, the upstream would get 4 of the body's 30 bytes). A guard: hyper already reads
/// it so and sends the body chunked (an audit took it for a gap; this shows it is not).
#[tokio::test]
async fn a_request_with_a_length_and_chunks_reaches_the_upstream_whole() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let gateway = passing_to(
        &idp,
        upstream
            .url()
            .trim_start_matches("http://")
            .parse()
            .unwrap(),
    )
    .await;
    let mut stream = tokio::net::TcpStream::connect(gateway.app.public_addr)
        .await
        .unwrap();
    let body = "0123456789abcdefghij0123456789";
    let request = format!(
        "POST /upload HTTP/1.1\r\nHost: app\r\nContent-Length: 4\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.ends_with("\r\n\r\n30"),
        "the upstream counted the whole body: {answer}"
    );
}

/// An application that answers whatever status its query names (`?code=101`, as httpbin's
/// `/status/101` does) answers 101 without switching: it goes on reading HTTP on the
/// connection. Spliced, the client would speak to it directly, past every rule and with
/// identity headers of its own; the 101 must name the protocol asked for.
#[tokio::test]
async fn a_101_that_switched_to_nothing_asked_for_is_not_spliced() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_address = upstream.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = upstream.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                loop {
                    let Some(head) = crate::support::read_request_head(&mut stream).await else {
                        return;
                    };
                    let line = head.lines().next().unwrap_or_default().to_owned();
                    record.lock().unwrap().push(head.clone());
                    let answer = if line.contains("code=101") {
                        // The switch the query makes up: `upgrade=` and `accept=` name the
                        // `Upgrade` and `Sec-WebSocket-Accept` of the answer.
                        let named = |name: &str| {
                            let value = line
                                .split([' ', '?', '&'])
                                .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))?;
                            Some(value.replace("%2B", "+").replace("%3D", "="))
                        };
                        let mut answer = "HTTP/1.1 101 Switching Protocols\r\n".to_owned();
                        if let Some(protocol) = named("upgrade") {
                            answer.push_str(&format!(
                                "Connection: Upgrade\r\nUpgrade: {protocol}\r\n"
                            ));
                        }
                        if let Some(accept) = named("accept") {
                            answer.push_str(&format!("Sec-WebSocket-Accept: {accept}\r\n"));
                        }
                        answer + "\r\n"
                    } else {
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{line}",
                            line.len()
                        )
                    };
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let idp = TestIdp::start().await;
    let gateway = passing_to(&idp, upstream_address).await;
    const WEBSOCKET: &str = "Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13";
    for (asked, query) in [
        // A 101 that switched to nothing.
        (WEBSOCKET, "code=101"),
        // A protocol with no handshake to check, which the route does not list (spliced on
        // the old code).
        ("Upgrade: x-smuggle", "code=101&upgrade=x-smuggle"),
        // A WebSocket whose made-up 101 answers the client's own key, which the client knows
        // (spliced on the old code): the upstream must answer the key Tollgate sent.
        (
            WEBSOCKET,
            "code=101&upgrade=websocket&accept=s3pPLMBiTxaQ9kYGzzhZRbK%2BxOo%3D",
        ),
    ] {
        let mut client = tokio::net::TcpStream::connect(gateway.app.public_addr)
            .await
            .unwrap();
        client
            .write_all(
                format!(
                    "GET /public/s?{query} HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\n{asked}\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            client.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        // What the client would send on a spliced connection, straight to the application.
        let _ = client
            .write_all(b"GET /admin HTTP/1.1\r\nHost: app\r\nX-User: admin@corp\r\n\r\n")
            .await;
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            client.read_to_end(&mut rest),
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 502"), "{query}: {head}");
    }
    let seen = seen.lock().unwrap().clone();
    // The second request came through Tollgate as a request of its own, or not at all.
    assert!(
        seen.iter()
            .all(|request| request.contains("\r\nx-forwarded-for: ")),
        "the application was reached past Tollgate: {seen:?}"
    );
}

/// The head of the answer to `GET /ws` asking to upgrade with `headers` (each `Name: value`).
pub async fn upgrade_answer(address: std::net::SocketAddr, headers: Vec<String>) -> String {
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut head = format!(
            "GET /ws HTTP/1.1\r\nHost: {address}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        );
        for header in headers {
            head.push_str(&header);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).unwrap();
        let mut answer = Vec::new();
        let mut byte = [0u8; 1];
        while !answer.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).unwrap();
            answer.push(byte[0]);
        }
        String::from_utf8(answer).unwrap()
    })
    .await
    .unwrap()
}

/// A page of a sibling subdomain (or a sandboxed frame) that opens a WebSocket gets the
/// browser's session cookie sent along and no CORS check: it could act as the signed-in person.
#[tokio::test]
async fn a_websocket_asked_for_by_a_page_of_another_host_is_refused() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let gateway = Gateway::start(&proxy_config(&idp, &upstream.url(), LOGIN_ROUTE)).await;
    let mut browser = Browser::new();
    log_in_through(&mut browser, &gateway, "/").await;
    let cookie = format!("Cookie: {}", crate::refresh::cookie_header(&browser));
    let address = gateway.app.public_addr;
    let port = address.port();
    for origin in [
        "http://sibling.localhost".to_owned(),
        format!("http://127.0.0.2:{port}"),
        "null".to_owned(),
    ] {
        let answer =
            upgrade_answer(address, vec![cookie.clone(), format!("Origin: {origin}")]).await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{origin}: {answer}");
    }
    // The page's own host (any scheme or port: cookies tell neither apart), or a client that is
    // no browser, is spliced.
    for origin in [
        Some(format!("http://127.0.0.1:{port}")),
        Some("https://127.0.0.1".to_owned()),
        None,
    ] {
        let mut headers = vec![cookie.clone()];
        headers.extend(origin.iter().map(|origin| format!("Origin: {origin}")));
        let answer = upgrade_answer(address, headers).await;
        assert!(answer.starts_with("HTTP/1.1 101"), "{origin:?}: {answer}");
        // The accept value of the client's own key (RFC 6455 §1.3's example), though the
        // upstream answered the key Tollgate sent it.
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("\r\nsec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n"),
            "{answer}"
        );
    }
}

/// A WebSocket handshake for `/ws` on `address` with one more header line (`Name: value`), on
/// a blocking thread; the connection once switched (its reads cut off after 30 s).
async fn websocket_opened(address: std::net::SocketAddr, header: String) -> std::net::TcpStream {
    websocket_opened_at(address, "/ws", header).await
}

/// [`websocket_opened`] for `path`.
pub(crate) async fn websocket_opened_at(
    address: std::net::SocketAddr,
    path: &'static str,
    header: String,
) -> std::net::TcpStream {
    websocket_opened_as(address, address.to_string(), path, header).await
}

/// [`websocket_opened_at`] with `host` as its `Host`.
async fn websocket_opened_as(
    address: std::net::SocketAddr,
    host: String,
    path: &'static str,
    header: String,
) -> std::net::TcpStream {
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             {header}\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        if !head.starts_with("HTTP/1.1 101") {
            let mut body = [0u8; 512];
            let read = stream.read(&mut body).unwrap_or(0);
            panic!("{head}{}", String::from_utf8_lossy(&body[..read]));
        }
        stream
    })
    .await
    .unwrap()
}

/// Sends `message` on a switched connection and reads it back from the echoing upstream.
pub(crate) async fn echo_through(
    mut stream: std::net::TcpStream,
    message: &'static [u8],
) -> std::net::TcpStream {
    tokio::task::spawn_blocking(move || {
        stream.write_all(message).unwrap();
        let mut reply = vec![0u8; message.len()];
        stream.read_exact(&mut reply).unwrap();
        assert_eq!(reply, message);
        stream
    })
    .await
    .unwrap()
}

/// Whether Tollgate closes a switched connection (within its 30 s read limit), rather than it
/// staying open.
pub(crate) async fn closed_by_tollgate(
    mut stream: std::net::TcpStream,
) -> Result<(), std::io::Error> {
    let read = tokio::task::spawn_blocking(move || {
        let mut byte = [0u8; 1];
        stream.read(&mut byte)
    })
    .await
    .unwrap();
    match read {
        Ok(0) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => Ok(()),
        Ok(_) => Err(std::io::Error::other("bytes, not a close")),
        Err(error) => Err(error),
    }
}

/// A WebSocket lasts as long as the session it was opened on: signed out, it is closed (within
/// `proxy::lasting::LOOK_EVERY` and a fifth), where it used to act for its user until it fell
/// idle.
#[tokio::test]
async fn a_websocket_is_closed_when_its_session_ends() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let config = proxy_config(&idp, &upstream.url(), LOGIN_ROUTE)
        .replace("[session]\n", "[session]\nstore = \"memory\"\n");
    let gateway = Gateway::start(&config).await;
    let mut browser = Browser::new();
    log_in_through(&mut browser, &gateway, "/").await;
    let cookie = crate::refresh::cookie_header(&browser);
    let stream = websocket_opened(gateway.app.public_addr, format!("Cookie: {cookie}")).await;
    // Open past a look at the session (10 to 12 s after the handshake), while it lives.
    tokio::time::sleep(
        tollgate::proxy::lasting::LOOK_EVERY * 6 / 5 + std::time::Duration::from_secs(1),
    )
    .await;
    let stream = echo_through(stream, b"still here?").await;
    // Signed out elsewhere (another tab): the WebSocket goes with the session.
    assert_eq!(
        browser
            .get(&gateway.url("/signout"))
            .await
            .status()
            .as_u16(),
        302
    );
    let closed = closed_by_tollgate(stream).await;
    assert!(
        closed.is_ok(),
        "the WebSocket is still open after the sign-out: {closed:?}"
    );
}

/// A WebSocket on a route that requires a group is closed once a refresh took the group away
/// (within `proxy::lasting::LOOK_EVERY` and a fifth): the session lives on, and its requests
/// are refused 403 at once, but the socket, checked only at its handshake, went on acting with
/// what the user no longer had for the session's whole lifetime.
#[tokio::test]
async fn a_websocket_is_closed_when_a_refresh_takes_away_what_let_it_in() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let route = LOGIN_ROUTE.replace(
        "[route.headers]",
        "[route.require]\ngroups = [\"admin\"]\n[route.headers]",
    );
    let config = proxy_config(&idp, &upstream.url(), &route).replace(
        "[session]\n",
        "[session]\nstore = \"memory\"\nrefresh_before = \"60s\"\n",
    );
    let clock = tollgate::clock::ManualClock::new();
    let gateway = Gateway::start_with_clock(&config, clock.clone()).await;
    let mut browser = Browser::new();
    log_in_through(&mut browser, &gateway, "/").await;
    let cookie = crate::refresh::cookie_header(&browser);
    let stream = websocket_opened(gateway.app.public_addr, format!("Cookie: {cookie}")).await;
    let stream = echo_through(stream, b"an admin's console").await;
    // A refresh that keeps the group keeps the socket, past a look at the session.
    clock.advance(250);
    idp.advance_clock(250);
    let refreshes = idp.count("refresh");
    assert_eq!(browser.get(&gateway.url("/page")).await.status(), 200);
    assert_eq!(idp.count("refresh"), refreshes + 1, "refreshed");
    tokio::time::sleep(
        tollgate::proxy::lasting::LOOK_EVERY * 6 / 5 + std::time::Duration::from_secs(1),
    )
    .await;
    let stream = echo_through(stream, b"still an admin").await;
    // The user leaves `admin`; their next request refreshes the session with the claims the
    // provider gives now.
    idp.set_user_claim("groups", serde_json::json!(["dev"]));
    clock.advance(250);
    idp.advance_clock(250);
    let refreshes = idp.count("refresh");
    assert_eq!(browser.get(&gateway.url("/page")).await.status(), 403);
    assert_eq!(idp.count("refresh"), refreshes + 1, "refreshed");
    let closed = closed_by_tollgate(stream).await;
    assert!(
        closed.is_ok(),
        "the WebSocket is still open without the group its route requires: {closed:?}"
    );
}

/// A config reload ends what let an open WebSocket in: its looks from then on are the new
/// config's. A route's new requirement the session (or bearer token) does not meet, or a
/// removed session secret (the answer to a leaked one), closes it; a reload whose requirements
/// it meets keeps it.
#[tokio::test]
async fn a_websocket_is_looked_at_by_the_config_a_reload_made_live() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let config = proxy_config(
        &idp,
        &upstream.url(),
        &LOGIN_ROUTE.replace(
            "provider = \"corp\"\n",
            "provider = \"corp\"\naccept_bearer = true\n",
        ),
    )
    .replace("[session]\n", "[session]\nstore = \"memory\"\n");
    assert!(config.contains("accept_bearer"));
    let requiring = |group: &str| {
        config.replace(
            "[route.headers]",
            &format!("[route.require]\ngroups = [\"{group}\"]\n[route.headers]"),
        )
    };
    let load =
        |text: &str| tollgate::config::load(text, &std::collections::BTreeMap::new()).unwrap();
    let gateway = Gateway::start(&config).await;
    let look = tollgate::proxy::lasting::LOOK_EVERY * 6 / 5 + std::time::Duration::from_secs(1);
    let opened = |browser: &Browser| {
        let cookie = crate::refresh::cookie_header(browser);
        websocket_opened(gateway.app.public_addr, format!("Cookie: {cookie}"))
    };

    let mut browser = Browser::new();
    log_in_through(&mut browser, &gateway, "/").await;
    let session = opened(&browser).await;
    let bearer = websocket_opened(
        gateway.app.public_addr,
        format!("Authorization: Bearer {}", idp.access_token().sign()),
    )
    .await;
    gateway.app.reload(load(&requiring("admin"))).await.unwrap();
    tokio::time::sleep(look).await;
    let session = echo_through(session, b"alice is in admin").await;
    let bearer = echo_through(bearer, b"so is her token").await;
    gateway.app.reload(load(&requiring("ops"))).await.unwrap();
    let closed = closed_by_tollgate(session).await;
    assert!(
        closed.is_ok(),
        "open without the group its route now requires: {closed:?}"
    );
    let closed = closed_by_tollgate(bearer).await;
    assert!(closed.is_ok(), "a bearer token's, too: {closed:?}");

    gateway.app.reload(load(&config)).await.unwrap();
    let mut browser = Browser::new();
    log_in_through(&mut browser, &gateway, "/").await;
    let stream = echo_through(opened(&browser).await, b"signed in again").await;
    let new_secret = config.replace(
        crate::support::gateway::SESSION_SECRET,
        "another-session-secret-another-session-secret",
    );
    assert_ne!(new_secret, config);
    gateway.app.reload(load(&new_secret)).await.unwrap();
    let closed = closed_by_tollgate(stream).await;
    assert!(
        closed.is_ok(),
        "open on a secret the config no longer has: {closed:?}"
    );
}

/// A reload that adds a more specific route over an open WebSocket's path (same provider, a
/// requirement its session or token does not meet) closes it: the handshake's host and path
/// choose the route again, as a request's would, not only the route it was let in on.
#[tokio::test]
async fn a_websocket_meets_a_more_specific_route_a_reload_adds_over_its_path() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let config = proxy_config(
        &idp,
        &upstream.url(),
        &LOGIN_ROUTE.replace(
            "provider = \"corp\"\n",
            "provider = \"corp\"\naccept_bearer = true\n",
        ),
    )
    .replace("[session]\n", "[session]\nstore = \"memory\"\n");
    let with_route = |prefix: &str, group: &str| {
        format!(
            "{config}\n[[route]]\npath_prefix = \"{prefix}\"\nupstream = \"{}\"\n\
             provider = \"corp\"\naccept_bearer = true\n[route.require]\ngroups = [\"{group}\"]\n",
            upstream.url()
        )
    };
    let load =
        |text: &str| tollgate::config::load(text, &std::collections::BTreeMap::new()).unwrap();
    let gateway = Gateway::start(&config).await;
    let mut browser = Browser::new();
    log_in_through(&mut browser, &gateway, "/").await;
    let cookie = crate::refresh::cookie_header(&browser);
    let session = websocket_opened(gateway.app.public_addr, format!("Cookie: {cookie}")).await;
    let bearer = websocket_opened(
        gateway.app.public_addr,
        format!("Authorization: Bearer {}", idp.access_token().sign()),
    )
    .await;
    // `/ws;x` is `/ws` to a servlet container: once a route for `/ws` is there, a request for
    // it is refused (it reads as another route's), and so is the socket's next look.
    let parameter = websocket_opened_at(
        gateway.app.public_addr,
        "/ws;x",
        format!("Cookie: {cookie}"),
    )
    .await;
    // A route for another path, and one over `/ws` whose requirement alice meets: both stay.
    gateway
        .app
        .reload(load(&with_route("/elsewhere", "ops")))
        .await
        .unwrap();
    gateway
        .app
        .reload(load(&with_route("/ws", "admin")))
        .await
        .unwrap();
    tokio::time::sleep(
        tollgate::proxy::lasting::LOOK_EVERY * 6 / 5 + std::time::Duration::from_secs(1),
    )
    .await;
    let session = echo_through(session, b"alice is in admin").await;
    let bearer = echo_through(bearer, b"so is her token").await;
    let closed = closed_by_tollgate(parameter).await;
    assert!(
        closed.is_ok(),
        "open on a path that reads as the new route's: {closed:?}"
    );
    gateway
        .app
        .reload(load(&with_route("/ws", "ops")))
        .await
        .unwrap();
    let closed = closed_by_tollgate(session).await;
    assert!(
        closed.is_ok(),
        "open without the group the route now over its path requires: {closed:?}"
    );
    let closed = closed_by_tollgate(bearer).await;
    assert!(closed.is_ok(), "a bearer token's, too: {closed:?}");
}

/// A WebSocket whose `Host` is an IPv6 literal (`[::1]:port`) stays open through a reload that
/// changes nothing for it: its look chooses the route again from the canonical host (`::1`),
/// written back as a `Host` would carry it.
#[tokio::test]
async fn a_websocket_to_an_ipv6_literal_host_stays_open_through_a_reload() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let config = proxy_config(&idp, &upstream.url(), LOGIN_ROUTE)
        .replace("[session]\n", "[session]\nstore = \"memory\"\n");
    let gateway = Gateway::start(&config).await;
    let mut browser = Browser::new();
    log_in_through(&mut browser, &gateway, "/").await;
    let cookie = crate::refresh::cookie_header(&browser);
    let host = format!("[::1]:{}", gateway.app.public_addr.port());
    let stream = websocket_opened_as(
        gateway.app.public_addr,
        host,
        "/ws",
        format!("Cookie: {cookie}"),
    )
    .await;
    gateway
        .app
        .reload(tollgate::config::load(&config, &std::collections::BTreeMap::new()).unwrap())
        .await
        .unwrap();
    tokio::time::sleep(
        tollgate::proxy::lasting::LOOK_EVERY * 6 / 5 + std::time::Duration::from_secs(1),
    )
    .await;
    echo_through(stream, b"still open").await;
}

/// A WebSocket let in through a trusted proxy whose `X-Forwarded-Host` (the host the upstream
/// was told) chose the same route as `Host` is closed by a reload that gives that host a route
/// of its own, as a request with the two would now be refused; one without it stays open.
#[tokio::test]
async fn a_websocket_meets_a_route_a_reload_adds_for_its_forwarded_host() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let config = proxy_config(&idp, &upstream.url(), LOGIN_ROUTE)
        .replace("[session]\n", "[session]\nstore = \"memory\"\n");
    let gateway = Gateway::start(&config).await;
    let mut browser = Browser::new();
    log_in_through(&mut browser, &gateway, "/").await;
    let cookie = crate::refresh::cookie_header(&browser);
    let host = format!("127.0.0.1:{}", gateway.app.public_addr.port());
    // The test's client is on loopback, which `trusted_proxies` trusts by default; `localhost`
    // keeps the session cookie readable over plain http (no `__Host-` binding).
    let forwarded = websocket_opened_as(
        gateway.app.public_addr,
        host.clone(),
        "/ws",
        format!("X-Forwarded-Host: localhost\r\nCookie: {cookie}"),
    )
    .await;
    let direct = websocket_opened_as(
        gateway.app.public_addr,
        host,
        "/ws",
        format!("Cookie: {cookie}"),
    )
    .await;
    let with_host_route = format!(
        "{config}\n[[route]]\nhost = \"localhost\"\nupstream = \"{}\"\nprovider = \"corp\"\n\
         [route.require]\ngroups = [\"ops\"]\n",
        upstream.url()
    );
    gateway
        .app
        .reload(
            tollgate::config::load(&with_host_route, &std::collections::BTreeMap::new()).unwrap(),
        )
        .await
        .unwrap();
    tokio::time::sleep(
        tollgate::proxy::lasting::LOOK_EVERY * 6 / 5 + std::time::Duration::from_secs(1),
    )
    .await;
    let closed = closed_by_tollgate(forwarded).await;
    assert!(
        closed.is_ok(),
        "open where its forwarded host now has a route of its own: {closed:?}"
    );
    echo_through(direct, b"still open").await;
}

/// With the `cookie` store (the default), a reload that adds a requirement the handshake's
/// session does not meet closes the WebSocket; one it meets keeps it.
#[tokio::test]
async fn a_cookie_session_websocket_is_closed_by_a_reload_it_does_not_meet() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let config = proxy_config(&idp, &upstream.url(), LOGIN_ROUTE);
    let requiring = |group: &str| {
        config.replace(
            "[route.headers]",
            &format!("[route.require]\ngroups = [\"{group}\"]\n[route.headers]"),
        )
    };
    let load =
        |text: &str| tollgate::config::load(text, &std::collections::BTreeMap::new()).unwrap();
    let gateway = Gateway::start(&config).await;
    let mut browser = Browser::new();
    log_in_through(&mut browser, &gateway, "/").await;
    let cookie = crate::refresh::cookie_header(&browser);
    let stream = websocket_opened(gateway.app.public_addr, format!("Cookie: {cookie}")).await;
    gateway.app.reload(load(&requiring("admin"))).await.unwrap();
    tokio::time::sleep(
        tollgate::proxy::lasting::LOOK_EVERY * 6 / 5 + std::time::Duration::from_secs(1),
    )
    .await;
    let stream = echo_through(stream, b"alice is in admin").await;
    gateway.app.reload(load(&requiring("ops"))).await.unwrap();
    let closed = closed_by_tollgate(stream).await;
    assert!(
        closed.is_ok(),
        "open without the group its route now requires: {closed:?}"
    );
}

/// With the `cookie` store a look at an open WebSocket's session reads the handshake's cookie,
/// as it was before any refresh the handshake made: the route's requirements are not checked
/// against it, or a group the handshake's own refresh brought would close the socket it let in.
#[tokio::test]
async fn a_cookie_session_websocket_let_in_by_its_handshakes_refresh_stays_open() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let route = LOGIN_ROUTE.replace(
        "[route.headers]",
        "[route.require]\ngroups = [\"ops\"]\n[route.headers]",
    );
    let config = proxy_config(&idp, &upstream.url(), &route).replace(
        "[session]\n",
        "[session]\nstore = \"cookie\"\nrefresh_before = \"60s\"\n",
    );
    let clock = tollgate::clock::ManualClock::new();
    let gateway = Gateway::start_with_clock(&config, clock.clone()).await;
    let mut browser = Browser::new();
    let (landed, _) = browser.follow(&gateway.url("/page")).await;
    assert_eq!(landed.status(), 403, "signed in, not yet in `ops`");
    // Added to `ops`; the handshake is the request that refreshes the session.
    idp.set_user_claim("groups", serde_json::json!(["ops"]));
    clock.advance(250);
    idp.advance_clock(250);
    let refreshes = idp.count("refresh");
    let cookie = crate::refresh::cookie_header(&browser);
    let stream = websocket_opened(gateway.app.public_addr, format!("Cookie: {cookie}")).await;
    assert_eq!(
        idp.count("refresh"),
        refreshes + 1,
        "the handshake refreshed"
    );
    tokio::time::sleep(
        tollgate::proxy::lasting::LOOK_EVERY * 6 / 5 + std::time::Duration::from_secs(1),
    )
    .await;
    echo_through(stream, b"let in by the refresh").await;
}

/// A WebSocket on a session whose store cannot answer (Redis cut off from this replica) stays
/// open, but not past the session's lifetime, which the handshake told: it used to act for its
/// user for as long as the store stayed away, the session long over.
#[tokio::test]
async fn a_websocket_closes_at_its_sessions_end_while_the_store_cannot_answer() {
    if !crate::support::redis::available() {
        return;
    }
    let redis = crate::support::redis::RedisServer::standalone().await;
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let config = proxy_config(&idp, &upstream.url(), LOGIN_ROUTE).replace(
        "[session]\n",
        &format!(
            "[session]\nstore = \"redis\"\nredis_url = \"{}\"\n",
            redis.url()
        ),
    );
    assert!(config.contains("store = \"redis\""));
    let clock = tollgate::clock::ManualClock::new();
    let gateway = Gateway::start_with_clock(&config, clock.clone()).await;
    let mut browser = Browser::new();
    log_in_through(&mut browser, &gateway, "/").await;
    let cookie = crate::refresh::cookie_header(&browser);
    let stream = websocket_opened(gateway.app.public_addr, format!("Cookie: {cookie}")).await;
    let stream = echo_through(stream, b"open").await;
    let mut redis = redis;
    redis.kill();
    // Past `session.lifetime` (12 h): the next look finds the store away, and the session over.
    clock.advance(13 * 3600);
    let closed = closed_by_tollgate(stream).await;
    assert!(
        closed.is_ok(),
        "the WebSocket outlived its session while the store was away: {closed:?}"
    );
}

/// A WebSocket opened with a bearer token lasts until the token's `exp` and the leeway: it
/// used to act for the token's holder as long as bytes moved, the token long expired.
#[tokio::test]
async fn a_websocket_opened_with_a_bearer_token_is_closed_when_the_token_expires() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let routes =
        "[[route]]\nupstream = \"{upstream}\"\nprovider = \"corp\"\naccept_bearer = true\n";
    let config = proxy_config(&idp, &upstream.url(), routes)
        .replace("[server]\n", "[server]\nleeway = \"1s\"\n");
    let gateway = Gateway::start(&config).await;
    let token = idp
        .access_token()
        .claim("exp", serde_json::json!(crate::support::idp::now() + 3))
        .sign();
    let header = format!("Authorization: Bearer {token}");
    let stream = websocket_opened(gateway.app.public_addr, header).await;
    let stream = echo_through(stream, b"before exp").await;
    // Then nothing but the close, about 4 s on.
    let closed = closed_by_tollgate(stream).await;
    assert!(
        closed.is_ok(),
        "the WebSocket is still open after the token expired: {closed:?}"
    );
}

/// The same through nginx's `auth_request` (the README's recipe, with the WebSocket
/// `proxy_set_header`s): nginx drops `Upgrade` on the way to `/auth`, and passes the
/// handshake's `Sec-WebSocket-Key` and the page's `Origin`.
#[tokio::test]
async fn forward_auth_refuses_a_websocket_asked_for_by_a_page_of_another_host() {
    use crate::support::nginx::{self, Nginx, free_port};
    if !nginx::available() {
        return;
    }
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let config = format!("{LOGIN_ROUTE}\n[forward_auth]\nprovider = \"corp\"\n");
    let gateway = Gateway::start(&proxy_config(&idp, &upstream.url(), &config)).await;
    let mut browser = Browser::new();
    log_in_through(&mut browser, &gateway, "/").await;
    let cookie = format!("Cookie: {}", crate::refresh::cookie_header(&browser));
    let front = free_port();
    let _nginx = Nginx::start(
        &format!(
            "server {{\n listen 127.0.0.1:{front};\n\
             location = /_tollgate_auth {{\n internal;\n \
             proxy_pass http://{tollgate}/auth;\n \
             proxy_pass_request_body off;\n proxy_set_header Content-Length \"\";\n \
             proxy_set_header X-Original-URL $scheme://$http_host$request_uri;\n \
             proxy_set_header X-Original-Method $request_method;\n }}\n\
             location / {{\n auth_request /_tollgate_auth;\n proxy_pass {upstream};\n \
             proxy_http_version 1.1;\n proxy_set_header Upgrade $http_upgrade;\n \
             proxy_set_header Connection upgrade;\n }}\n}}\n",
            tollgate = gateway.app.public_addr,
            upstream = upstream.url(),
        ),
        &[front],
    )
    .await;
    let address: std::net::SocketAddr = ([127, 0, 0, 1], front).into();
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==".to_owned();
    for origin in ["http://sibling.localhost".to_owned(), "null".to_owned()] {
        let headers = vec![cookie.clone(), key.clone(), format!("Origin: {origin}")];
        let answer = upgrade_answer(address, headers).await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{origin}: {answer}");
    }
    let headers = vec![
        cookie.clone(),
        key.clone(),
        format!("Origin: http://127.0.0.1:{front}"),
    ];
    let answer = upgrade_answer(address, headers).await;
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
}

/// An HTTP/2 client's streams each take an upstream connection when none is idle: past the
/// public listener's places (`max_connections`, or what the open-file limit leaves), which
/// count one upstream connection each, a request is refused at once (502) instead of opening
/// another, so a few clients cannot use up the process's file descriptors. Counted at an
/// upstream that takes connections and never answers.
#[tokio::test]
async fn http2_streams_hold_no_more_upstream_connections_than_the_listener_has_places() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let idp = TestIdp::start().await;
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", silent.local_addr().unwrap());
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let counting = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((connection, _)) = silent.accept().await {
            counting.fetch_add(1, Ordering::SeqCst);
            held.push(connection);
        }
    });
    let routes = "[[route]]\nupstream = \"{upstream}\"\nprovider = \"corp\"\n\
                  on_unauthenticated = \"pass\"\nread_timeout = \"3s\"\n";
    let config = proxy_config(&idp, &upstream, routes)
        .replace("[server]\n", "[server]\nmax_connections = 4\n");
    let gateway = Gateway::start(&config).await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let mut requests = tokio::task::JoinSet::new();
    for index in 0..10 {
        let request = client.get(gateway.url(&format!("/stream-{index}"))).send();
        requests.spawn(async move { request.await.unwrap().status().as_u16() });
    }
    let mut statuses = Vec::new();
    while let Some(status) = requests.join_next().await {
        statuses.push(status.unwrap());
    }
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [502, 502, 502, 502, 502, 502, 504, 504, 504, 504],
        "four held a connection until the read timeout; the others were refused"
    );
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        4,
        "connections opened upstream"
    );
    // Given back: the next stream gets a connection again.
    let next = client.get(gateway.url("/after")).send().await.unwrap();
    assert_eq!(next.status(), 504);
    assert_eq!(accepted.load(Ordering::SeqCst), 5);
    // An HTTP/1 client holds its own place's connection, never the streams' budget: served
    // while the budget is all held.
    let mut held = tokio::task::JoinSet::new();
    for index in 0..4 {
        let request = client.get(gateway.url(&format!("/held-{index}"))).send();
        held.spawn(async move { request.await.unwrap().status().as_u16() });
    }
    let mut waited = 0;
    while accepted.load(Ordering::SeqCst) < 9 {
        waited += 1;
        assert!(waited < 3000, "the four streams never reached the upstream");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let http1 = reqwest::get(gateway.url("/over-http1")).await.unwrap();
    assert_eq!(http1.status(), 504, "sent upstream, not refused");
    assert_eq!(accepted.load(Ordering::SeqCst), 10);
    while let Some(status) = held.join_next().await {
        assert_eq!(status.unwrap(), 504);
    }
}

#[tokio::test]
async fn clients_may_speak_http2() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let routes = "[[route]]\nupstream = \"{upstream}\"\nprovider = \"corp\"\non_unauthenticated = \"pass\"\n";
    let gateway = Gateway::start(&proxy_config(&idp, &upstream.url(), routes)).await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = client.get(gateway.url("/over-h2")).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let text = response.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{text}"));
    assert_eq!(body["uri"], "/over-h2");
}

#[tokio::test]
async fn tollgates_own_endpoints_answer_and_every_other_path_is_proxied() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let routes = format!(
        r#"
[token_service]
issuer = "http://tollgate.test/oidc"
[[token_service.client]]
client_id = "machine"
client_secret_hash = "{hash}"
grants = ["client_credentials"]

[[route]]
upstream = "{{upstream}}"
provider = "corp"
on_unauthenticated = "pass"
"#,
        hash = tollgate::hash_password("machine-secret").unwrap()
    );
    let gateway = Gateway::start(&proxy_config(&idp, &upstream.url(), &routes)).await;
    let client = reqwest::Client::new();
    let ping = client.get(gateway.url("/ping")).send().await.unwrap();
    assert_eq!(ping.text().await.unwrap(), "OK");
    let get_json = |path: &str| {
        let request = client.get(gateway.url(path)).send();
        async move { request.await.unwrap().json::<Value>().await }
    };
    let discovery = get_json("/oidc/.well-known/openid-configuration")
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], "http://tollgate.test/oidc");
    let jwks = get_json("/oidc/jwks").await.unwrap();
    assert!(jwks["keys"].as_array().is_some_and(|keys| !keys.is_empty()));
    let wrong_method = client.post(gateway.url("/ping")).send().await.unwrap();
    assert_eq!(wrong_method.status(), 405, "an own path is never proxied");
    for path in ["/ping/", "/oidc", "/oidc/jwks/x", "/jwks", "/PING"] {
        let echoed = get_json(path)
            .await
            .unwrap_or_else(|error| panic!("{path} was not proxied: {error}"));
        assert_eq!(echoed["uri"], path, "{path} goes to the upstream as it is");
    }
    // Own paths are matched in canonical form (SPEC §4.1), as the proxy matches its routes:
    // another spelling of `/ping` is Tollgate's `/ping`, never the upstream's.
    for path in ["/p%69ng", "//ping", "/x/../ping"] {
        let own = client.get(gateway.url(path)).send().await.unwrap();
        assert_eq!(own.text().await.unwrap(), "OK", "{path}");
    }
}

#[tokio::test]
async fn a_claim_that_cannot_be_a_header_refuses_the_request_instead_of_dropping_the_header() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let routes = r#"
[[route]]
upstream = "{upstream}"
provider = "corp"
on_unauthenticated = "deny"
accept_bearer = true
[route.headers]
"X-User" = "claim:email"
"X-Groups" = "claim:groups"
"#;
    let gateway = Gateway::start(&proxy_config(&idp, &upstream.url(), routes)).await;
    let client = reqwest::Client::new();
    for (claim, bad) in [
        ("email", json!("a@example.com\r\nX-Admin: 1")),
        ("email", json!("a@example.com\nx")),
        ("email", json!("a\u{0}b")),
    ] {
        let token = idp.access_token().claim(claim, bad.clone()).sign();
        let response = client
            .get(gateway.url("/x"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{bad:?}");
    }
    let token = idp
        .access_token()
        .claim("email", json!("a@example.com"))
        .claim("groups", json!(["eng", "admin"]))
        .sign();
    let response = client
        .get(gateway.url("/x"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(seen(&body, "x-user"), ["a@example.com"]);
    assert_eq!(seen(&body, "x-groups"), ["eng,admin"]);
    // A value the upstream would read back as another (parsers trim white space, and split a
    // list at its commas) goes percent-encoded: it reads as nothing anyone has.
    let token = idp
        .access_token()
        .claim("email", json!("admin@example.com "))
        .claim("groups", json!(["x,admin,y", "dev"]))
        .sign();
    let response = client
        .get(gateway.url("/x"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(seen(&body, "x-user"), ["admin@example.com%20"]);
    assert_eq!(seen(&body, "x-groups"), ["x%2Cadmin%2Cy,dev"]);
    gateway.stop().await;
}

#[tokio::test]
async fn bearer_refusals_on_routes_carry_rfc_6750_errors_and_ambiguous_tokens_are_400() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let routes = r#"
[[route]]
path_prefix = "/ops"
upstream = "{upstream}"
provider = "corp"
on_unauthenticated = "deny"
accept_bearer = true
[route.require]
groups = ["ops"]
[[route]]
upstream = "{upstream}"
provider = "corp"
on_unauthenticated = "deny"
accept_bearer = true
"#;
    let gateway = Gateway::start(&proxy_config(&idp, &upstream.url(), routes)).await;
    let client = reqwest::Client::new();
    let challenge = |response: &reqwest::Response| {
        response
            .headers()
            .get("www-authenticate")
            .map(|value| value.to_str().unwrap().to_owned())
    };
    let token = idp.access_token().sign();
    let expired = client
        .get(gateway.url("/x"))
        .bearer_auth(idp.access_token().expires_in(-3600).sign())
        .send()
        .await
        .unwrap();
    assert_eq!(expired.status(), 401);
    assert_eq!(
        challenge(&expired).as_deref(),
        Some("Bearer error=\"invalid_token\"")
    );
    let forbidden = client
        .get(gateway.url("/ops/x"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), 403);
    assert_eq!(
        challenge(&forbidden).as_deref(),
        Some("Bearer error=\"insufficient_scope\"")
    );
    let both = client
        .get(gateway.url("/x?access_token=another"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(both.status(), 400, "a token in the header and the query");
    let twice = client
        .get(gateway.url("/x"))
        .bearer_auth(&token)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(twice.status(), 400, "two Authorization headers");
    let fine = client
        .get(gateway.url("/x"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(fine.status(), 200);
}

/// Each worker thread keeps the identity headers it rendered last, for one session on one
/// route: they are handed out for that session on that route only, and a refreshed session
/// (the provider's new claims) gets its own.
#[tokio::test]
async fn identity_headers_are_the_sessions_own_on_each_route_and_after_a_refresh() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let routes = r#"
[[route]]
path_prefix = "/a"
upstream = "{upstream}"
provider = "corp"
[route.headers]
"X-User" = "claim:email"
[[route]]
path_prefix = "/b"
upstream = "{upstream}"
provider = "corp"
[route.headers]
"X-User" = "claim:sub"
"#;
    let clock = tollgate::clock::ManualClock::new();
    let gateway =
        Gateway::start_with_clock(&proxy_config(&idp, &upstream.url(), routes), clock.clone())
            .await;
    let mut browser = Browser::new();
    let (first, _) = log_in_through(&mut browser, &gateway, "/a/page").await;
    let first: Value = first.json().await.unwrap();
    assert_eq!(seen(&first, "x-user"), ["alice@example.com"]);
    let sub = user_on(&mut browser, &gateway, "/b/page").await;
    assert_eq!(sub.len(), 1);
    assert_ne!(sub, ["alice@example.com"], "route b sends the subject");
    for _ in 0..4 {
        assert_eq!(
            user_on(&mut browser, &gateway, "/a/page").await,
            ["alice@example.com"]
        );
        assert_eq!(
            user_on(&mut browser, &gateway, "/a/page").await,
            ["alice@example.com"]
        );
        assert_eq!(user_on(&mut browser, &gateway, "/b/page").await, sub);
    }
    // The thread's last headers are the old session's on this route.
    assert_eq!(
        user_on(&mut browser, &gateway, "/a/page").await,
        ["alice@example.com"]
    );
    idp.set_user_claim("email", json!("alice@new.example"));
    crate::refresh::advance(&clock, &idp, 250);
    let refreshed = browser.get(&gateway.url("/a/page")).await;
    assert!(
        refreshed.headers().contains_key("set-cookie"),
        "the new session"
    );
    assert_eq!(
        refreshed.headers()["cache-control"],
        "private, no-store",
        "a response carrying a session is never stored by a shared cache"
    );
    assert_eq!(
        seen(&refreshed.json().await.unwrap(), "x-user"),
        ["alice@new.example"]
    );
    assert_eq!(idp.count("refresh"), 1);
    for _ in 0..4 {
        assert_eq!(
            user_on(&mut browser, &gateway, "/a/page").await,
            ["alice@new.example"]
        );
        assert_eq!(user_on(&mut browser, &gateway, "/b/page").await, sub);
    }
}

/// The `X-User` values the upstream saw for `path`, asked with `browser`'s session.
async fn user_on(browser: &mut Browser, gateway: &Gateway, path: &str) -> Vec<String> {
    let answer = browser.get(&gateway.url(path)).await;
    assert_eq!(answer.status(), 200, "{path}");
    let body: Value = answer.json().await.unwrap();
    seen(&body, "x-user")
}

/// A reload builds new routes, which may take the old ones' memory: a thread's last identity
/// headers are never those of a route of an earlier config (the memory store keeps the session
/// itself across reloads).
#[tokio::test]
async fn identity_headers_follow_a_reload_that_changes_them() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let config = |source: &str| {
        let routes = format!(
            "[[route]]\npath_prefix = \"/a\"\nupstream = \"{{upstream}}\"\nprovider = \"corp\"\n[route.headers]\n\"X-User\" = \"{source}\"\n"
        );
        proxy_config(&idp, &upstream.url(), &routes)
            .replace("[session]\n", "[session]\nstore = \"memory\"\n")
    };
    let load = |text: &str| {
        tollgate::config::load(text, &std::collections::BTreeMap::new())
            .unwrap_or_else(|problems| panic!("config: {problems:?}"))
    };
    let gateway = Gateway::start(&config("claim:email")).await;
    let mut browser = Browser::new();
    log_in_through(&mut browser, &gateway, "/a/page").await;
    for _ in 0..3 {
        assert_eq!(
            user_on(&mut browser, &gateway, "/a/page").await,
            ["alice@example.com"]
        );
    }
    // Twice: the second config's routes are built while the first's still live; the third's
    // may be built where the first's were.
    gateway
        .app
        .reload(load(&config("access_token")))
        .await
        .unwrap();
    gateway
        .app
        .reload(load(&config("claim:sub")))
        .await
        .unwrap();
    let after = user_on(&mut browser, &gateway, "/a/page").await;
    assert_eq!(after.len(), 1);
    assert_ne!(after, ["alice@example.com"], "the reloaded route's header");
    assert_eq!(user_on(&mut browser, &gateway, "/a/page").await, after);
}

/// SPEC §3's own example: `public_url` at `auth.example.com`, a route for `app.example.com`
/// that logs in. The login the route starts returns to `app.example.com`'s `/callback`, where
/// the browser sends that host's cookies: the login finishes, and the session cookie it sets
/// is that host's. (With every base at `public_url`, the provider sent the browser to
/// `auth.example.com/callback`, which never saw the login's cookie.)
#[tokio::test]
async fn with_a_public_url_a_route_on_another_host_logs_in_on_its_own_host() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let routes = r#"
[[route]]
host = "app.example.com"
upstream = "{upstream}"
provider = "corp"
"#;
    let config = proxy_config(&idp, &upstream.url(), routes).replace(
        "[server]\n",
        "[server]\npublic_url = \"https://auth.example.com\"\n",
    );
    let gateway = Gateway::start(&config).await;
    // The browser's cookies for app.example.com; every request names that host.
    let mut app = Browser::new();
    let host = [("host", "app.example.com"), ("accept", "text/html")];
    let start = app.get_with(&gateway.url("/page?x=1"), &host).await;
    assert_eq!(start.status(), 302);
    let authorize = reqwest::Url::parse(&location(&start)).unwrap();
    let redirect_uri = authorize
        .query_pairs()
        .find(|(name, _)| name == "redirect_uri")
        .map(|(_, value)| value.into_owned());
    assert_eq!(
        redirect_uri.as_deref(),
        Some("https://app.example.com/callback")
    );
    // The provider signs the user in and sends the browser back to that address.
    let back = Browser::new()
        .follow_until(authorize.as_str(), "https://app.example.com/")
        .await;
    let back = reqwest::Url::parse(&back).unwrap();
    let callback = format!("/callback?{}", back.query().unwrap());
    let finished = app.get_with(&gateway.url(&callback), &host).await;
    assert_eq!(finished.status(), 302, "{:?}", finished.text().await);
    assert_eq!(location(&finished), "/page?x=1");
    let page = app.get_with(&gateway.url("/page?x=1"), &host).await;
    assert_eq!(page.status(), 200);
    let echo: Value = page.json().await.unwrap();
    assert_eq!(echo["uri"], "/page?x=1", "{echo}");
    // Signing out there without `rd` returns to `public_url + "/"` (SPEC §3), the address
    // registered at the provider, not to the route's host.
    let signout = app.get_with(&gateway.url("/logout"), &host).await;
    assert_eq!(signout.status(), 302);
    let to_provider = reqwest::Url::parse(&location(&signout)).unwrap();
    let post_logout = to_provider
        .query_pairs()
        .find(|(name, _)| name == "post_logout_redirect_uri")
        .map(|(_, value)| value.into_owned());
    assert_eq!(post_logout.as_deref(), Some("https://auth.example.com/"));
}

/// A cache in front of Tollgate (a CDN; here nginx's `proxy_cache`) keys by URL. An answer the
/// upstream made for a signed-in user and let be cached (`max-age`) is marked `private`, so the
/// cache never serves it to the next person, signed in or not; an answer the upstream declared
/// shareable (`public`) is the upstream's call and is cached.
#[tokio::test]
async fn a_cache_in_front_never_serves_one_persons_answer_to_another() {
    use crate::support::nginx::{self, Nginx, free_port, raw_get};
    if !nginx::available() {
        return;
    }
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let gateway = Gateway::start(&proxy_config(&idp, &upstream.url(), LOGIN_ROUTE)).await;
    let mut browser = Browser::new();
    log_in_through(&mut browser, &gateway, "/").await;
    let cookie = crate::refresh::cookie_header(&browser);
    let cache_port = free_port();
    let cache_dir = crate::support::scratch_dir("nginx-cache");
    let _nginx = Nginx::start(
        &format!(
            "proxy_cache_path {dir} keys_zone=shared:1m;\n\
             server {{ listen 127.0.0.1:{cache_port};\n\
             location / {{ proxy_cache shared; proxy_pass http://{tollgate};\n\
             add_header X-Cache $upstream_cache_status; }} }}",
            dir = cache_dir.display(),
            tollgate = gateway.app.public_addr,
        ),
        &[cache_port],
    )
    .await;

    // Each one nginx stores (it never stores an answer whose `Cache-Control` holds `private`,
    // `no-store` or `no-cache` anywhere); the last on two field lines.
    for cache_control in [
        "max-age%3D60",
        "max-age%3D60,%20must-revalidate",
        "max-age%3D60&cc=must-revalidate",
    ] {
        let target = format!("/cache-control?cc={cache_control}");
        let (status, mine) = raw_get(cache_port, &target, &[("Cookie", &cookie)]).await;
        assert_eq!(status, 200, "{cache_control}: {mine}");
        assert!(
            mine.contains("alice@example.com"),
            "{cache_control}: {mine}"
        );
        let (status, theirs) = raw_get(cache_port, &target, &[]).await;
        assert_ne!(status, 200, "{cache_control}: {theirs}");
        assert!(
            !theirs.contains("alice@example.com"),
            "{cache_control}: the cache served the signed-in answer to someone else: {theirs}"
        );
    }

    // The cache works: an answer the upstream declared public is kept and served again.
    let target = "/cache-control?cc=public,%20max-age%3D60";
    let (status, _) = raw_get(cache_port, target, &[("Cookie", &cookie)]).await;
    assert_eq!(status, 200);
    let (status, again) = raw_get(cache_port, target, &[]).await;
    assert_eq!(status, 200, "{again}");
    assert!(again.contains("alice@example.com"), "{again}");
}
