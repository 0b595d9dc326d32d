//! The README's Envoy recipe in a real Envoy: its gRPC and HTTP `ext_authz` YAML, taken from
//! README.md as written (only addresses replaced), in front of `TestUpstream`, asking Tollgate.
//! What the upstream sees and what the client gets are the recipe's promises.

use serde_json::{Value, json};

use crate::support::envoy::{Envoy, free_port};
use crate::support::gateway::signed_in;
use crate::support::{Browser, Gateway, TestIdp, TestUpstream};

/// The ```yaml blocks of the README's "### Envoy" section, in order (gRPC, then HTTP).
fn readme_yaml() -> Vec<String> {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("### Envoy\n")
        .expect("README has an Envoy recipe");
    let section = &readme[start..];
    let section = &section[..section.find("**Istio.**").unwrap_or(section.len())];
    section
        .split("```yaml\n")
        .skip(1)
        .map(|block| block.split("```").next().unwrap().to_owned())
        .collect()
}

pub fn indent(text: &str, spaces: usize) -> String {
    let pad = " ".repeat(spaces);
    text.lines().map(|line| format!("{pad}{line}\n")).collect()
}

pub fn static_cluster(name: &str, port: u16) -> String {
    format!(
        "- name: {name}\n  type: STATIC\n  load_assignment:\n    cluster_name: {name}\n    \
         endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: \
         127.0.0.1, port_value: {port} }} }} }} }}] }}]\n"
    )
}

pub fn listener(name: &str, port: u16, connection_manager: &str) -> String {
    format!(
        "- name: {name}\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}\n  \
         filter_chains:\n  - filters:\n    - name: envoy.filters.network.http_connection_manager\n      \
         typed_config:\n        \"@type\": type.googleapis.com/envoy.extensions.filters.network.\
         http_connection_manager.v3.HttpConnectionManager\n        stat_prefix: {name}\n{}",
        indent(connection_manager, 8)
    )
}

/// The bootstrap: the README's gRPC block as one listener, its HTTP filter as another (with
/// the same routes: sign-in paths to Tollgate unchecked, the rest to the application).
/// With `fail_open`, both filters say `failure_mode_allow: true`.
fn bootstrap(
    grpc_port: u16,
    http_port: u16,
    gateway: &Gateway,
    upstream: &TestUpstream,
    fail_open: bool,
    rules: Option<&str>,
) -> String {
    let mut blocks = readme_yaml();
    if let Some(rules) = rules {
        for block in &mut blocks {
            assert!(block.contains(RECIPE_RULES), "{block}");
            *block = block.replace(RECIPE_RULES, rules);
        }
    }
    if fail_open {
        for block in &mut blocks {
            assert!(block.contains("failure_mode_allow: false"), "{block}");
            *block = block.replace("failure_mode_allow: false", "failure_mode_allow: true");
        }
    }
    assert_eq!(
        blocks.len(),
        2,
        "the README's Envoy recipe has a gRPC and an HTTP block"
    );
    let grpc = blocks[0].replace(
        "address: tollgate, port_value: 9191",
        &format!(
            "address: 127.0.0.1, port_value: {}",
            gateway.app.grpc_addr.unwrap().port()
        ),
    );
    let (grpc_manager, grpc_clusters) = grpc
        .split_once("clusters:\n")
        .expect("the gRPC block declares its cluster");
    let public = gateway.app.public_addr.port();
    let http_filter = blocks[1].replace(
        "uri: \"http://tollgate:4180\"",
        &format!("uri: \"http://127.0.0.1:{public}\""),
    );
    // The README puts the gRPC recipe's connection manager settings beside the HTTP filter too.
    let (manager_settings, _) = grpc_manager
        .split_once("http_filters:\n")
        .expect("the gRPC block's connection manager settings come before its filters");
    let http_manager = format!(
        "{manager_settings}http_filters:\n{http_filter}\
         - name: envoy.filters.http.router\n  \
           typed_config: {{ \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}\n\
         route_config:\n  virtual_hosts:\n  - name: app\n    domains: [\"app.example.com\"]\n    routes:\n    \
         - match: {{ safe_regex: {{ regex: \"/(signin|callback|signout)\" }} }}\n      \
           route: {{ cluster: tollgate_http }}\n      typed_per_filter_config:\n        \
             envoy.filters.http.ext_authz:\n          \
               \"@type\": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute\n          \
               disabled: true\n    \
         - match: {{ prefix: \"/\" }}\n      route: {{ cluster: app }}\n"
    );
    format!(
        "static_resources:\n  listeners:\n{}{}  clusters:\n{}{}{}",
        indent(&listener("grpc_ingress", grpc_port, grpc_manager), 2),
        indent(&listener("http_ingress", http_port, &http_manager), 2),
        indent(grpc_clusters, 2),
        indent(&static_cluster("tollgate_http", public), 2),
        indent(&static_cluster("app", upstream.addr.port()), 2),
    )
}

struct Setup {
    idp: TestIdp,
    gateway: Gateway,
    _upstream: TestUpstream,
    envoy: Envoy,
    grpc_port: u16,
    http_port: u16,
}

/// Tollgate as the README's recipe configures it (on loopback), the application, and Envoy.
async fn setup() -> Setup {
    setup_with(
        "allowed_redirect_domains = [\"app.example.com\"]",
        false,
        None,
    )
    .await
}

/// The rules both blocks of the README's recipe send.
const RECIPE_RULES: &str =
    "groups=admin&inject-claim=email,X-Email&inject-claim=department,X-Department";

/// `setup` with these `[server]` lines, and Envoy failing open when `fail_open`.
async fn setup_with(server: &str, fail_open: bool, rules: Option<&str>) -> Setup {
    setup_configured(server, |config| config, fail_open, rules).await
}

/// `setup_with`, the configuration changed by `change` first.
async fn setup_configured(
    server: &str,
    change: impl FnOnce(String) -> String,
    fail_open: bool,
    rules: Option<&str>,
) -> Setup {
    let idp = TestIdp::start().await;
    let gateway = Gateway::start(&change(Gateway::forward_auth_config(
        &idp,
        server,
        "unauthenticated = \"redirect\"\ngrpc_listen = \"127.0.0.1:0\"",
    )))
    .await;
    let upstream = TestUpstream::start().await;
    let (grpc_port, http_port) = (free_port(), free_port());
    let envoy = Envoy::start(
        &bootstrap(grpc_port, http_port, &gateway, &upstream, fail_open, rules),
        &[grpc_port, http_port],
    )
    .await;
    Setup {
        idp,
        gateway,
        _upstream: upstream,
        envoy,
        grpc_port,
        http_port,
    }
}

/// `GET http://app.example.com<path>` through Envoy's listener on `port`.
pub async fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut request = client
        .get(format!("http://127.0.0.1:{port}{path}"))
        .header("host", "app.example.com");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// What the application received, when the request reached it.
pub async fn upstream_saw(response: reqwest::Response, envoy: &Envoy) -> Value {
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, 200, "{text}\n{}", envoy.log());
    serde_json::from_str(&text).unwrap()
}

/// An `Authorization` value for a member of `admin`, whom the recipe's `/admin` rules admit.
fn admin_bearer(idp: &TestIdp) -> String {
    format!(
        "Bearer {}",
        idp.access_token().claim("groups", json!(["admin"])).sign()
    )
}

pub fn seen<'a>(echo: &'a Value, name: &str) -> Option<&'a Value> {
    echo["headers"].get(name)
}

#[tokio::test]
async fn grpc_recipe_in_envoy() {
    // Every part is bound: one left to `..` would be dropped (and stopped) right here.
    let Setup {
        idp,
        gateway,
        _upstream,
        envoy,
        grpc_port: port,
        http_port: _,
    } = setup().await;
    let admin = format!("Bearer {}", idp.access_token().sign());
    // /admin/: the route's rules; Tollgate's X-Email replaces the client's.
    let allowed = get(
        port,
        "/admin/users",
        &[
            ("authorization", &admin),
            ("x-email", "mallory@example.com"),
        ],
    )
    .await;
    let echo = upstream_saw(allowed, &envoy).await;
    assert_eq!(seen(&echo, "x-email"), Some(&json!(["alice@example.com"])));
    // The virtual host's rules: alice has no department, so the client's copy is removed.
    let reports = get(
        port,
        "/reports",
        &[("authorization", &admin), ("x-department", "finance")],
    )
    .await;
    let echo = upstream_saw(reports, &envoy).await;
    assert_eq!(seen(&echo, "x-department"), None, "{echo}");
    assert_eq!(seen(&echo, "x-email"), Some(&json!(["alice@example.com"])));
    // A skip rule: no credential needed, and no identity header passes.
    let public = get(
        port,
        "/public/logo.png",
        &[("x-email", "mallory@example.com")],
    )
    .await;
    let echo = upstream_saw(public, &envoy).await;
    assert_eq!(seen(&echo, "x-email"), None, "{echo}");
    // A rule fails: 403 from Tollgate, through Envoy.
    let dev = format!(
        "Bearer {}",
        idp.access_token().claim("groups", json!(["dev"])).sign()
    );
    let forbidden = get(port, "/admin/users", &[("authorization", &dev)]).await;
    assert_eq!(forbidden.status(), 403);
    assert!(forbidden.text().await.unwrap().contains("groups"));
    // Spellings of /admin/users that Envoy, as written, would route by `/`: the recipe routes
    // them as /admin/ (403), and what reaches Tollgate unnormalised is refused (400). Never
    // the application.
    for path in [
        "/%61dmin/users",
        "//admin/users",
        "/x/../admin/users",
        "/admin;x/users",
    ] {
        let status = get(port, path, &[("authorization", &dev)]).await.status();
        assert!(status == 403 || status == 400, "{path}: {status}");
    }
    // What applications serve as the admin section beside `/admin/…`: the page itself
    // (Express, Spring), format suffixes (Rails) and other cases (Express, ASP.NET Core).
    // `prefix: "/admin/"` gave them `/`'s rules.
    for path in [
        "/admin",
        "/admin?x=1",
        "/admin.json",
        "/admin/users.json",
        "/ADMIN/users",
        "/Admin",
    ] {
        let status = get(port, path, &[("authorization", &dev)]).await.status();
        assert_eq!(status, 403, "{path}");
    }
    // A client's X_Email never reaches an application that reads it as X-Email.
    let underscored = get(
        port,
        "/reports",
        &[
            ("authorization", &admin),
            ("x_email", "mallory@example.com"),
        ],
    )
    .await;
    assert_eq!(underscored.status(), 400, "{}", envoy.log());
    // No credential: an API call gets 401, a browser the sign-in redirect.
    let api = get(port, "/admin/users", &[("accept", "application/json")]).await;
    assert_eq!(api.status(), 401);
    assert_eq!(api.headers()["www-authenticate"], "Bearer");
    let browser = get(port, "/page?a=1", &[("accept", "text/html")]).await;
    assert_eq!(browser.status(), 302, "{}", envoy.log());
    assert_eq!(
        browser.headers()["location"],
        "http://app.example.com/signin?rd=http%3A%2F%2Fapp.example.com%2Fpage%3Fa%3D1"
    );
    // /signin reaches Tollgate unchecked and goes on to the provider.
    let signin = get(port, "/signin?rd=/", &[]).await;
    assert_eq!(signin.status(), 302, "{:?}", signin.text().await);
    let provider = signin.headers()["location"].to_str().unwrap().to_owned();
    assert!(provider.starts_with(idp.issuer()), "{provider}");
    // A session cookie in the client's request is a credential.
    let mut session = Browser::new();
    signed_in(&mut session, &gateway).await;
    let cookie = session
        .cookies
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("; ");
    let by_cookie = get(port, "/admin/users", &[("cookie", &cookie)]).await;
    let echo = upstream_saw(by_cookie, &envoy).await;
    assert_eq!(seen(&echo, "x-email"), Some(&json!(["alice@example.com"])));
}

#[tokio::test]
async fn http_recipe_in_envoy() {
    let Setup {
        idp,
        gateway: _gateway,
        _upstream,
        envoy,
        grpc_port: _,
        http_port: port,
    } = setup().await;
    let admin = format!("Bearer {}", idp.access_token().sign());
    let allowed = get(
        port,
        "/admin/users",
        &[
            ("authorization", &admin),
            ("x-email", "mallory@example.com"),
        ],
    )
    .await;
    let echo = upstream_saw(allowed, &envoy).await;
    assert_eq!(seen(&echo, "x-email"), Some(&json!(["alice@example.com"])));
    // No email claim: Tollgate names X-Email in x-envoy-auth-headers-to-remove.
    let no_email = format!(
        "Bearer {}",
        idp.access_token().claim("email", Value::Null).sign()
    );
    let removed = get(
        port,
        "/admin/users",
        &[
            ("authorization", &no_email),
            ("x-email", "mallory@example.com"),
        ],
    )
    .await;
    let echo = upstream_saw(removed, &envoy).await;
    assert_eq!(seen(&echo, "x-email"), None, "{echo}");
    let dev = format!(
        "Bearer {}",
        idp.access_token().claim("groups", json!(["dev"])).sign()
    );
    assert_eq!(
        get(port, "/admin/users", &[("authorization", &dev)])
            .await
            .status(),
        403
    );
    // A client's own X-Tollgate-Rules never reaches Tollgate: Envoy's replaces it.
    let smuggled = get(
        port,
        "/admin/users",
        &[
            ("x-tollgate-rules", "skip-auth=.*"),
            ("accept", "application/json"),
        ],
    )
    .await;
    assert_eq!(smuggled.status(), 401);
    let browser = get(port, "/page?a=1", &[("accept", "text/html")]).await;
    assert_eq!(browser.status(), 302, "{}", envoy.log());
    assert_eq!(
        browser.headers()["location"],
        "http://app.example.com/signin?rd=http%3A%2F%2Fapp.example.com%2Fpage%3Fa%3D1"
    );
}

/// A page of another host opening a WebSocket with the session cookie, by either recipe: Envoy
/// passes the handshake's `Origin` and `Sec-WebSocket-Key` on, and Tollgate refuses it; the
/// page's own host is let through.
#[tokio::test]
async fn both_recipes_refuse_a_websocket_asked_for_by_a_page_of_another_host() {
    let Setup {
        idp: _idp,
        gateway,
        _upstream,
        envoy,
        grpc_port,
        http_port,
    } = setup().await;
    let mut browser = crate::support::Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    let cookie = crate::refresh::cookie_header(&browser);
    for port in [grpc_port, http_port] {
        for (origin, status) in [
            ("http://sibling.example.com", 403),
            ("null", 403),
            ("http://app.example.com", 200),
        ] {
            let response = get(
                port,
                "/admin/users",
                &[
                    ("cookie", &cookie),
                    ("origin", origin),
                    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ],
            )
            .await;
            assert_eq!(
                response.status(),
                status,
                "port {port}, {origin}: {}",
                envoy.log()
            );
        }
    }
}

/// Two `Authorization` headers beside a session cookie: Envoy describes them as one, joined with
/// `,`, so the refusal of two never ran and a `Basic` first hid the `Bearer` token after it from
/// every check (allowed on the old code), while Envoy passes both on to the application. By
/// either recipe; one credential of a scheme with parameters still passes.
#[tokio::test]
async fn two_authorization_headers_joined_by_envoy_are_refused() {
    let Setup {
        idp: _idp,
        gateway,
        _upstream,
        envoy,
        grpc_port,
        http_port,
    } = setup().await;
    let mut browser = crate::support::Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    let cookie = crate::refresh::cookie_header(&browser);
    for port in [grpc_port, http_port] {
        let two = get(
            port,
            "/admin/users",
            &[
                ("cookie", &cookie),
                ("authorization", "Basic eDp5"),
                ("authorization", "Bearer forged.by.mallory"),
            ],
        )
        .await;
        assert_eq!(two.status(), 400, "port {port}: {}", envoy.log());
        let digest = get(
            port,
            "/admin/users",
            &[
                ("cookie", &cookie),
                (
                    "authorization",
                    "Digest username=\"alice\", realm=\"app\", nonce=\"n\", uri=\"/\"",
                ),
            ],
        )
        .await;
        upstream_saw(digest, &envoy).await;
    }
}

/// Two `Cookie` headers, the second holding another token cookie: Envoy describes them as one,
/// joined with `,`, where that token hid in the first header's last value, while the
/// application reads both headers. Refused by either recipe, as `/auth` refuses two token
/// cookies.
#[tokio::test]
async fn a_token_cookie_in_a_second_cookie_header_joined_by_envoy_is_refused() {
    let Setup {
        idp,
        gateway: _gateway,
        _upstream,
        envoy,
        grpc_port,
        http_port,
    } = setup_configured(
        "",
        |config| {
            config.replace(
                "grpc_listen = ",
                "token_cookie = \"odj_access_token\"\ngrpc_listen = ",
            )
        },
        false,
        None,
    )
    .await;
    let own = format!("odj_access_token={}; x=1", idp.access_token().sign());
    for port in [grpc_port, http_port] {
        let two = get(
            port,
            "/admin/users",
            &[
                ("cookie", own.as_str()),
                ("cookie", "odj_access_token=forged.by.mallory"),
            ],
        )
        .await;
        assert_eq!(two.status(), 400, "port {port}: {}", envoy.log());
        let one = get(port, "/admin/users", &[("cookie", own.as_str())]).await;
        upstream_saw(one, &envoy).await;
    }
}

/// A byte that is not UTF-8 reaches the application as sent but Tollgate as `!` (Envoy's
/// Check without `encode_raw_headers`, and its HTTP variant always): a NO-BREAK SPACE before a
/// token cookie's name (Python's `strip()` drops it) or after `Bearer` (its `split()` splits
/// there) hid a forged token from every check. By either recipe it is refused.
#[tokio::test]
async fn a_token_hidden_behind_a_byte_envoy_replaces_is_refused_by_either_recipe() {
    let Setup {
        idp,
        gateway: _gateway,
        _upstream,
        envoy,
        grpc_port,
        http_port,
    } = setup_configured(
        "",
        |config| {
            config.replace(
                "grpc_listen = ",
                "token_cookie = \"odj_access_token\"\ngrpc_listen = ",
            )
        },
        false,
        None,
    )
    .await;
    let admin = admin_bearer(&idp);
    let own = format!(
        "odj_access_token={}",
        idp.access_token().claim("groups", json!(["admin"])).sign()
    );
    // Unsigned, naming another user: whoever reads it unchecked takes it.
    let forged = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJib3NzIn0.";
    let send = async |port: u16, headers: &[(&str, Vec<u8>)]| {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let mut request = client
            .get(format!("http://127.0.0.1:{port}/admin/users"))
            .header("host", "app.example.com");
        for (name, value) in headers {
            request = request.header(
                *name,
                reqwest::header::HeaderValue::from_bytes(value).unwrap(),
            );
        }
        request.send().await.unwrap()
    };
    for port in [grpc_port, http_port] {
        let hidden_cookie = [b"\xa0odj_access_token=".as_slice(), forged.as_bytes()].concat();
        let cookie = send(
            port,
            &[
                ("authorization", admin.clone().into_bytes()),
                ("cookie", hidden_cookie),
            ],
        )
        .await;
        assert!(
            matches!(cookie.status().as_u16(), 400 | 401),
            "port {port}: a token cookie behind a NO-BREAK SPACE: {}\n{}",
            cookie.status(),
            envoy.log()
        );
        let hidden_bearer = [b"Bearer\xa0".as_slice(), forged.as_bytes()].concat();
        let bearer = send(
            port,
            &[
                ("cookie", own.clone().into_bytes()),
                ("authorization", hidden_bearer),
            ],
        )
        .await;
        assert!(
            matches!(bearer.status().as_u16(), 400 | 401),
            "port {port}: a Bearer token behind a NO-BREAK SPACE: {}\n{}",
            bearer.status(),
            envoy.log()
        );
        // The same credentials without the hidden tokens pass.
        let plain = send(port, &[("cookie", own.clone().into_bytes())]).await;
        upstream_saw(plain, &envoy).await;
    }
}

/// A client that sends an injected header twice: Tollgate's value must replace every copy
/// (Envoy's overwrite), never stand beside a second one that an application joining repeated
/// headers would read as `alice@example.com, mallory@example.com`. By either recipe.
#[tokio::test]
async fn an_injected_header_sent_twice_reaches_the_application_once() {
    let Setup {
        idp,
        gateway: _gateway,
        _upstream,
        envoy,
        grpc_port,
        http_port,
    } = setup().await;
    let admin = format!("Bearer {}", idp.access_token().sign());
    for port in [grpc_port, http_port] {
        let response = get(
            port,
            "/admin/users",
            &[
                ("authorization", &admin),
                ("x-email", "x"),
                ("x-email", "mallory@example.com"),
            ],
        )
        .await;
        let echo = upstream_saw(response, &envoy).await;
        assert_eq!(
            seen(&echo, "x-email"),
            Some(&json!(["alice@example.com"])),
            "port {port}: {echo}"
        );
    }
}

/// An Envoy set to fail open (`failure_mode_allow: true`, which lets a request through when
/// the authorization service errs) still never passes a request Tollgate refused: every
/// refusal is an answer, also a Check from a peer outside `trusted_proxies` or one that
/// describes no readable request, never a failed call.
#[tokio::test]
async fn an_envoy_that_fails_open_still_gets_every_refusal() {
    let Setup {
        idp,
        gateway: _gateway,
        _upstream,
        envoy,
        grpc_port,
        http_port,
    } = setup_with("trusted_proxies = [\"203.0.113.0/24\"]", true, None).await;
    let admin = format!("Bearer {}", idp.access_token().sign());
    // gRPC: the peer is refused (403); HTTP: its X-Tollgate-Rules header is (400).
    for (port, expected) in [(grpc_port, 403), (http_port, 400)] {
        let response = get(port, "/admin/users", &[("authorization", &admin)]).await;
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, expected, "port {port}: {text}\n{}", envoy.log());
        assert!(
            !text.contains("\"uri\""),
            "port {port}: reached the application: {text}"
        );
    }
}

/// What an application may read as another path or host than the one Envoy chose the route,
/// and so the rules, by: Symfony's `X-Original-URL`, Yii's `X-Rewrite-URL`, Rack's
/// `Forwarded` and Rails's `X-Forwarded-Host`. A client's never reaches the application by
/// either recipe, on a public path the rules skip (where it would serve `/admin/users` to
/// anyone) or a signed-in one; the gRPC variant, which sees it, keeps an `X-Forwarded-Host`
/// that names the request's own host.
#[tokio::test]
async fn another_path_or_host_a_client_claims_never_reaches_the_application_by_either_recipe() {
    let Setup {
        idp,
        gateway: _gateway,
        _upstream,
        envoy,
        grpc_port,
        http_port,
    } = setup().await;
    let bearer = format!("Bearer {}", idp.access_token().sign());
    let claims = [
        ("x-original-url", "/admin/users"),
        ("x-original-uri", "/admin/users"),
        ("x-rewrite-url", "/admin/users"),
        ("x-forwarded-uri", "/admin/users"),
        ("forwarded", "host=admin.example.com"),
        ("x-forwarded-host", "admin.example.com"),
    ];
    for port in [grpc_port, http_port] {
        for (path, credential) in [("/public/x", None), ("/reports", Some(bearer.as_str()))] {
            let mut headers = claims.to_vec();
            headers.extend(credential.map(|credential| ("authorization", credential)));
            let response = get(port, path, &headers).await;
            // A public path with another path claimed beside it may be sent to sign in (the
            // original request then has no single reading); one let through carries none.
            if credential.is_none() && response.status() != 200 {
                let text = response.text().await.unwrap();
                assert!(
                    !text.contains("\"uri\""),
                    "port {port}: reached the application: {text}"
                );
                continue;
            }
            let echo = upstream_saw(response, &envoy).await;
            for (name, _) in claims {
                assert_eq!(seen(&echo, name), None, "port {port}, {path}: {echo}");
            }
        }
    }
    // On a public path the rules skip (the gRPC recipe's `/public/`), another host claimed is
    // let through, and removed.
    let host_claims = [
        ("forwarded", "host=admin.example.com"),
        ("x-forwarded-host", "admin.example.com"),
    ];
    let echo = upstream_saw(get(grpc_port, "/public/x", &host_claims).await, &envoy).await;
    for (name, _) in host_claims {
        assert_eq!(seen(&echo, name), None, "{echo}");
    }
    let own = get(
        grpc_port,
        "/reports",
        &[
            ("authorization", &bearer),
            ("x-forwarded-host", "app.example.com"),
        ],
    )
    .await;
    let echo = upstream_saw(own, &envoy).await;
    assert_eq!(
        seen(&echo, "x-forwarded-host"),
        Some(&json!(["app.example.com"])),
        "{echo}"
    );
}

/// A client's `X.Email` is PHP's `HTTP_X_EMAIL` (Caddy's `php_fastcgi` and FrankenPHP keep a
/// name's `.`), and Envoy has no setting that refuses it as `headers_with_underscores_action`
/// refuses `X_Email`: by either recipe Tollgate names it for removal, and the application sees
/// only Tollgate's `X-Email`.
#[tokio::test]
async fn a_header_spelt_with_dots_never_reaches_the_application_by_either_recipe() {
    let Setup {
        idp,
        gateway: _gateway,
        _upstream,
        envoy,
        grpc_port,
        http_port,
    } = setup().await;
    let admin = admin_bearer(&idp);
    for port in [grpc_port, http_port] {
        let forged = [
            ("authorization", admin.as_str()),
            ("X.Email", "ceo@example.com"),
            ("x.email", "ceo@example.com"),
        ];
        let echo = upstream_saw(get(port, "/admin/users", &forged).await, &envoy).await;
        let names: Vec<&String> = echo["headers"].as_object().unwrap().keys().collect();
        assert!(
            !names.iter().any(|name| name.contains('.')),
            "port {port}: {names:?}"
        );
        assert!(!echo.to_string().contains("ceo@"), "port {port}: {echo}");
        assert!(seen(&echo, "x-email").is_some(), "port {port}: {echo}");
    }
}

/// No identity header a client sends reaches the application by either recipe: one that
/// another route's rules inject (`X-Department` on `/admin`, where alice has none), or one of
/// the gateways Tollgate replaces (oauth2-proxy's, mod_auth_openidc's, kong-oidc's), on an
/// allowed request and on a skipped one.
#[tokio::test]
async fn a_clients_identity_headers_never_reach_the_application_by_either_recipe() {
    let Setup {
        idp,
        gateway: _gateway,
        _upstream,
        envoy,
        grpc_port,
        http_port,
    } = setup().await;
    let admin = admin_bearer(&idp);
    let forged = [
        ("x-department", "finance"),
        ("x-forwarded-user", "ceo"),
        ("x-auth-request-email", "ceo@example.com"),
        ("remote-user", "ceo"),
        ("oidc-claim-email", "ceo@example.com"),
        ("x-userinfo", "eyJzdWIiOiJjZW8ifQ"),
        ("x-authentik-username", "ceo"),
        ("x-pomerium-claim-email", "ceo@example.com"),
        ("x-ms-client-principal-name", "ceo@example.com"),
        (
            "x-goog-authenticated-user-email",
            "accounts.google.com:ceo@example.com",
        ),
        ("x-vouch-user", "ceo@example.com"),
        ("cf-access-authenticated-user-email", "ceo@example.com"),
    ];
    // The HTTP recipe's one set of rules has no skip rule: `/public/` is the gRPC recipe's.
    for (port, path, credential) in [
        (grpc_port, "/admin/users", Some(admin.as_str())),
        (grpc_port, "/public/x", None),
        (http_port, "/admin/users", Some(admin.as_str())),
    ] {
        let mut headers = forged.to_vec();
        if let Some(credential) = credential {
            headers.push(("authorization", credential));
        }
        let echo = upstream_saw(get(port, path, &headers).await, &envoy).await;
        for (name, _) in forged {
            assert_eq!(
                seen(&echo, name),
                None,
                "port {port} {path}: {name} in {echo}"
            );
        }
        assert!(
            !echo.to_string().contains("ceo"),
            "port {port} {path}: {echo}"
        );
    }
    // A user who has a department: Tollgate's value replaces the client's on either recipe.
    let with_department = format!(
        "Bearer {}",
        idp.access_token()
            .claim("groups", json!(["admin"]))
            .claim("department", json!("engineering"))
            .sign()
    );
    for port in [grpc_port, http_port] {
        let headers = [
            ("authorization", with_department.as_str()),
            ("x-department", "finance"),
        ];
        let echo = upstream_saw(get(port, "/admin/users", &headers).await, &envoy).await;
        assert_eq!(
            seen(&echo, "x-department"),
            Some(&json!(["engineering"])),
            "port {port}: {echo}"
        );
    }
}

/// A skip rule naming `POST`, by either recipe: a `POST` that says another method (a
/// method-override header, which the HTTP recipe lists in `allowed_headers` for this, or a
/// `_method` query parameter) or may say it in its body (a form) is not skipped; Envoy passes the header on to the application,
/// which would act on it.
#[tokio::test]
async fn a_post_skip_rule_does_not_skip_a_method_override_by_either_recipe() {
    let Setup {
        idp: _idp,
        gateway: _gateway,
        _upstream,
        envoy,
        grpc_port,
        http_port,
    } = setup_with(
        "allowed_redirect_domains = [\"app.example.com\"]",
        false,
        Some("skip-auth=POST,^/admin/api/&groups=admin"),
    )
    .await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    const JSON: (&str, &str) = ("content-type", "application/json");
    for port in [grpc_port, http_port] {
        let post = |path: &str, headers: &[(&str, &str)]| {
            let mut request = client
                .post(format!("http://127.0.0.1:{port}{path}"))
                .header("host", "app.example.com")
                .body("{}");
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            async move { request.send().await.unwrap().status().as_u16() }
        };
        assert_eq!(
            post("/admin/api/x", &[JSON]).await,
            200,
            "port {port}: {}",
            envoy.log()
        );
        // A form body may hold `_method` (Rails, Symfony, Laravel), and so may a body without
        // `Content-Type` (Rack): the HTTP recipe lists `content-type` for this.
        for form in [
            &[("content-type", "application/x-www-form-urlencoded")][..],
            &[("content-type", "multipart/form-data; boundary=x")][..],
            &[][..],
        ] {
            assert_eq!(
                post("/admin/api/x", form).await,
                401,
                "port {port}, {form:?}: {}",
                envoy.log()
            );
        }
        for header in [
            ("x-http-method-override", "DELETE"),
            ("x-method-override", "DELETE"),
            // PHP reads `.` in a name as `_`; Envoy passes such names on.
            ("X.HTTP.Method.Override", "DELETE"),
        ] {
            assert_eq!(
                post("/admin/api/x", &[JSON, header]).await,
                401,
                "port {port}, {header:?}: {}",
                envoy.log()
            );
        }
        assert_eq!(
            post("/admin/api/x?_method=DELETE", &[JSON]).await,
            401,
            "port {port}"
        );
    }
}

/// A client connecting from `address` (a loopback address other than Envoy's), following no
/// redirect.
fn client_from(address: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(std::net::IpAddr::from(address))
        .build()
        .unwrap()
}

/// Failed sign-ins are limited per client address (ten a minute): through the recipe
/// (`use_remote_address`), that is the address Envoy saw, never one a client's own
/// `X-Forwarded-For` claims, so a client cannot buy a provider call per made-up address. The
/// client connects from 127.0.0.2, which Tollgate does not trust; Envoy from 127.0.0.1.
#[tokio::test]
async fn the_grpc_recipe_limits_failed_sign_ins_by_the_address_envoy_saw() {
    let Setup {
        idp,
        gateway: _gateway,
        _upstream,
        envoy,
        grpc_port,
        ..
    } = setup_with(
        "allowed_redirect_domains = [\"app.example.com\"]\ntrusted_proxies = [\"127.0.0.1/32\"]",
        false,
        None,
    )
    .await;
    let client = client_from([127, 0, 0, 2]);
    let before = idp.count("token");
    let mut statuses = Vec::new();
    for attempt in 0..12 {
        let claimed = format!("203.0.113.{}", attempt + 1);
        let signin = client
            .get(format!("http://127.0.0.1:{grpc_port}/signin"))
            .header("host", "app.example.com")
            .header("x-forwarded-for", &claimed)
            .send()
            .await
            .unwrap();
        assert_eq!(signin.status(), 302, "{}", envoy.log());
        let cookies: Vec<&str> = signin
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|cookie| cookie.to_str().ok()?.split(';').next())
            .collect();
        let to_provider =
            reqwest::Url::parse(signin.headers()["location"].to_str().unwrap()).unwrap();
        let state = crate::support::browser::query_value(&to_provider, "state").unwrap();
        let answer = client
            .get(format!(
                "http://127.0.0.1:{grpc_port}/callback?state={state}&code=made-up-{attempt}"
            ))
            .header("host", "app.example.com")
            .header("x-forwarded-for", &claimed)
            .header("cookie", cookies.join("; "))
            .send()
            .await
            .unwrap();
        statuses.push(answer.status().as_u16());
    }
    assert_eq!(statuses[..10], [401; 10], "{statuses:?}");
    assert_eq!(statuses[10..], [429; 2], "{statuses:?}");
    assert_eq!(idp.count("token"), before + 10);
}

/// Unknown opaque tokens cost a provider call each, up to a budget per client address: through
/// either recipe that is the address Envoy saw (127.0.0.2 to 127.0.0.5 here; Envoy itself is
/// 127.0.0.1), never one a client claims in its own `X-Forwarded-For`, and never Envoy's own,
/// which every client would share (the HTTP filter sends `x-forwarded-for` only when listed).
#[tokio::test]
async fn both_recipes_count_unknown_opaque_tokens_against_the_client_envoy_saw() {
    let Setup {
        idp,
        gateway: _gateway,
        _upstream,
        envoy,
        grpc_port,
        http_port,
    } = setup_configured(
        "allowed_redirect_domains = [\"app.example.com\"]\ntrusted_proxies = [\"127.0.0.1/32\"]",
        crate::forward_auth::with_introspection,
        false,
        None,
    )
    .await;
    let limit = tollgate::oidc::introspection_gate::REFUSED_A_WINDOW as usize;
    // Each recipe with clients of its own: the first's limited address stays limited for the
    // rest of its minute.
    for (port, name, limited, other) in [
        (
            grpc_port,
            "grpc",
            client_from([127, 0, 0, 2]),
            client_from([127, 0, 0, 3]),
        ),
        (
            http_port,
            "http",
            client_from([127, 0, 0, 4]),
            client_from([127, 0, 0, 5]),
        ),
    ] {
        // The status Envoy answers `client` with, for `token`, claiming to be `claimed`.
        let ask = |client: &reqwest::Client, token: String, claimed: &str| {
            let sent = client
                .get(format!("http://127.0.0.1:{port}/api/x"))
                .header("host", "app.example.com")
                .header("accept", "application/json")
                .header("authorization", format!("Bearer {token}"))
                .header("x-forwarded-for", claimed)
                .send();
            async move { sent.await.unwrap().status().as_u16() }
        };
        let before = idp.count("introspect");
        for n in 0..limit {
            let claimed = format!("203.0.113.{n}");
            let status = ask(&limited, format!("made-up-{name}-{n}"), &claimed).await;
            assert_eq!(status, 401, "{name} {n}: {}", envoy.log());
        }
        assert_eq!(idp.count("introspect"), before + limit, "{name}");
        let status = ask(&limited, format!("made-up-{name}-next"), "198.51.100.1").await;
        assert_eq!(status, 429, "{name}: not asked");
        assert_eq!(idp.count("introspect"), before + limit, "{name}");
        // Another client is asked as before.
        let status = ask(&other, format!("made-up-{name}-other"), "198.51.100.1").await;
        assert_eq!(status, 401, "{name}: another client");
        assert_eq!(idp.count("introspect"), before + limit + 1, "{name}");
    }
}
