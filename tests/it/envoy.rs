//! SPEC §4 Envoy `ext_authz`: the gRPC `Authorization/Check` on `grpc_listen`, driven by the
//! client generated from Envoy's protos (the `envoy-types` crate), and the HTTP variant under
//! `/envoy/`. The expectations are the README's Envoy recipe: rules in
//! `context_extensions["rules"]` (gRPC) or `X-Tollgate-Rules` (HTTP), headers as Envoy sends
//! them.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use serde_json::json;

use crate::support::gateway::signed_in;
use crate::support::{Browser, Gateway, TestIdp};

/// The README's rules for the virtual host.
const HOST_RULES: &str =
    "skip-auth=^/public/&inject-claim=email,X-Email&inject-claim=department,X-Department";
/// The README's rules for `/admin/`.
const ADMIN_RULES: &str = "groups=admin&inject-claim=email,X-Email";

async fn gateway(idp: &TestIdp, forward_auth_extra: &str) -> Gateway {
    Gateway::start(&Gateway::forward_auth_config(
        idp,
        "",
        &format!("grpc_listen = \"127.0.0.1:0\"\n{forward_auth_extra}"),
    ))
    .await
}

pub async fn client(gateway: &Gateway) -> AuthorizationClient<tonic::transport::Channel> {
    let address = gateway.app.grpc_addr.expect("grpc_listen is bound");
    AuthorizationClient::connect(format!("http://{address}"))
        .await
        .unwrap()
}

/// A Check as Envoy's filter builds it for `GET https://app.example.com<path>`: lower-case
/// header names, pseudo-headers included, the route's `context_extensions`.
pub fn check_request(path: &str, headers: &[(&str, &str)], rules: Option<&str>) -> CheckRequest {
    let mut map: HashMap<String, String> = [
        (":authority", "app.example.com"),
        (":method", "GET"),
        (":path", path),
        (":scheme", "https"),
        ("x-request-id", "4b1c0a52-1"),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value.to_owned()))
    .collect();
    for (name, value) in headers {
        map.insert((*name).to_owned(), (*value).to_owned());
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                time: None,
                http: Some(HttpRequest {
                    id: "4b1c0a52-1".to_owned(),
                    method: "GET".to_owned(),
                    headers: map,
                    path: path.to_owned(),
                    host: "app.example.com".to_owned(),
                    scheme: "https".to_owned(),
                    protocol: "HTTP/1.1".to_owned(),
                    ..HttpRequest::default()
                }),
            }),
            context_extensions: rules
                .map(|rules| HashMap::from([("rules".to_owned(), rules.to_owned())]))
                .unwrap_or_default(),
            ..AttributeContext::default()
        }),
    }
}

async fn check(gateway: &Gateway, request: CheckRequest) -> CheckResponse {
    client(gateway)
        .await
        .check(request)
        .await
        .unwrap()
        .into_inner()
}

fn ok(response: &CheckResponse) -> &OkHttpResponse {
    assert_eq!(response.status.as_ref().unwrap().code, 0, "{response:?}");
    match &response.http_response {
        Some(HttpResponse::OkResponse(ok)) => ok,
        other => panic!("not an ok_response: {other:?}"),
    }
}

/// The `denied_response` of a refused Check, whose HTTP status is `status`.
pub fn denied(response: &CheckResponse, status: i32) -> &DeniedHttpResponse {
    assert_ne!(response.status.as_ref().unwrap().code, 0, "{response:?}");
    match &response.http_response {
        Some(HttpResponse::DeniedResponse(denied)) => {
            assert_eq!(denied.status.as_ref().unwrap().code, status, "{denied:?}");
            denied
        }
        other => panic!("not a denied_response: {other:?}"),
    }
}

/// The value of `name` among Envoy header options, and that each replaces the client's copy.
fn header<'a>(
    options: &'a [envoy_types::pb::envoy::config::core::v3::HeaderValueOption],
    name: &str,
) -> Option<&'a str> {
    options.iter().find_map(|option| {
        let header = option.header.as_ref()?;
        (header.key.eq_ignore_ascii_case(name)).then(|| {
            assert_eq!(
                option.append_action,
                HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
                "{name} must replace what the client sent"
            );
            header.value.as_str()
        })
    })
}

/// What an application may read as another path or host, removed from every allowed request.
pub const OTHER_READINGS: [&str; 5] = [
    "forwarded",
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "x-forwarded-uri",
];

/// `headers_to_remove` without what every allowed answer removes ([`OTHER_READINGS`] and
/// `X-Forwarded-Host`): the names these rules and this request made it name.
fn own_removals(names: &[String]) -> Vec<String> {
    names
        .iter()
        .filter(|name| {
            !OTHER_READINGS.contains(&name.as_str()) && name.as_str() != "x-forwarded-host"
        })
        .cloned()
        .collect()
}

/// A client's `X-Forwarded-Host` naming another host than the Check's is removed, in any
/// spelling, whatever `X-Forwarded-For` says of the hops before Envoy (without
/// `use_remote_address`, Istio's sidecars among them, the client writes all of it: a first fix
/// that kept one "from a trusted hop" kept a client's who named a trusted address).
#[tokio::test]
async fn grpc_removes_another_forwarded_host_whatever_the_hops_say() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::start(&Gateway::forward_auth_config(
        &idp,
        "trusted_proxies = [\"127.0.0.0/8\", \"10.0.0.0/8\"]",
        "grpc_listen = \"127.0.0.1:0\"",
    ))
    .await;
    let bearer = format!("Bearer {}", idp.access_token().sign());
    let removed = async |hops: &str, name: &str, forwarded_host: &str| {
        let response = check(
            &gateway,
            check_request(
                "/reports",
                &[
                    ("authorization", &bearer),
                    ("x-forwarded-for", hops),
                    (name, forwarded_host),
                ],
                Some("inject-claim=email,X-Email"),
            ),
        )
        .await;
        ok(&response).headers_to_remove.contains(&name.to_owned())
    };
    assert!(removed("203.0.113.9", "x-forwarded-host", "admin.example.com").await);
    assert!(removed("10.1.2.3", "x-forwarded-host", "admin.example.com").await);
    assert!(
        removed(
            "203.0.113.9, 10.1.2.3",
            "x.forwarded.host",
            "admin.example.com"
        )
        .await
    );
    assert!(
        !removed("203.0.113.9", "x-forwarded-host", "app.example.com").await,
        "its own host"
    );
}

#[tokio::test]
async fn grpc_allows_a_bearer_token_and_injects_headers_that_replace_the_clients() {
    let idp = TestIdp::start().await;
    let gateway = gateway(&idp, "").await;
    let token = idp.access_token().sign();
    let bearer = format!("Bearer {token}");
    let response = check(
        &gateway,
        check_request(
            "/admin/users?page=2",
            &[
                ("authorization", &bearer),
                ("x-email", "mallory@example.com"),
            ],
            Some(ADMIN_RULES),
        ),
    )
    .await;
    let ok = ok(&response);
    assert_eq!(header(&ok.headers, "x-email"), Some("alice@example.com"));
    assert_eq!(ok.headers.len(), 1, "{ok:?}");
    assert_eq!(
        own_removals(&ok.headers_to_remove),
        Vec::<String>::new(),
        "{ok:?}"
    );
    for other in OTHER_READINGS {
        assert!(
            ok.headers_to_remove.iter().any(|name| name == other),
            "{other} is not removed: {ok:?}"
        );
    }
    let metrics = gateway.metrics().await;
    assert!(
        metrics.contains("tollgate_requests_total{role=\"forward_auth\",result=\"allow\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn grpc_refuses_401_without_a_credential_and_403_when_a_rule_fails() {
    let idp = TestIdp::start().await;
    let gateway = gateway(&idp, "").await;
    let none = check(&gateway, check_request("/admin/", &[], Some(ADMIN_RULES))).await;
    let unauthenticated = denied(&none, 401);
    assert_eq!(
        header(&unauthenticated.headers, "www-authenticate"),
        Some("Bearer")
    );
    assert_eq!(
        unauthenticated.body,
        "401 Unauthorized: no valid credential\n"
    );
    assert_eq!(none.status.as_ref().unwrap().code, 16, "UNAUTHENTICATED");

    let invalid = format!("Bearer {}", idp.access_token().expires_in(-3600).sign());
    let expired = check(
        &gateway,
        check_request("/admin/", &[("authorization", &invalid)], Some(ADMIN_RULES)),
    )
    .await;
    assert_eq!(
        header(&denied(&expired, 401).headers, "www-authenticate"),
        Some("Bearer error=\"invalid_token\"")
    );

    let dev = format!(
        "Bearer {}",
        idp.access_token().claim("groups", json!(["dev"])).sign()
    );
    let forbidden = check(
        &gateway,
        check_request("/admin/", &[("authorization", &dev)], Some(ADMIN_RULES)),
    )
    .await;
    let refusal = denied(&forbidden, 403);
    assert!(refusal.body.contains("groups"), "{refusal:?}");
    assert_eq!(
        forbidden.status.as_ref().unwrap().code,
        7,
        "PERMISSION_DENIED"
    );
    let metrics = gateway.metrics().await;
    assert!(
        metrics.contains(
            "tollgate_requests_total{role=\"forward_auth\",result=\"unauthenticated\"} 2"
        ) && metrics
            .contains("tollgate_requests_total{role=\"forward_auth\",result=\"forbidden\"} 1"),
        "{metrics}"
    );
    // A browser's request is refused with the page, an API call's with JSON (SPEC §10).
    for (accept, kind, start) in [
        ("text/html", "text/html", "<!doctype html>"),
        ("application/json", "application/json", "{"),
    ] {
        let asked = check(
            &gateway,
            check_request(
                "/admin/",
                &[("authorization", &dev), ("accept", accept)],
                Some(ADMIN_RULES),
            ),
        )
        .await;
        let refusal = denied(&asked, 403);
        assert!(
            header(&refusal.headers, "content-type").is_some_and(|value| value.starts_with(kind)),
            "{refusal:?}"
        );
        assert!(refusal.body.starts_with(start), "{refusal:?}");
    }
}

#[tokio::test]
async fn grpc_redirects_a_browser_to_signin_and_answers_an_api_call_401() {
    let idp = TestIdp::start().await;
    let gateway = gateway(&idp, "unauthenticated = \"redirect\"").await;
    let browser = check(
        &gateway,
        check_request("/page?a=1", &[("accept", "text/html")], Some(HOST_RULES)),
    )
    .await;
    let redirect = denied(&browser, 302);
    assert_eq!(
        header(&redirect.headers, "location"),
        Some("https://app.example.com/signin?rd=https%3A%2F%2Fapp.example.com%2Fpage%3Fa%3D1")
    );
    let api = check(
        &gateway,
        check_request(
            "/page?a=1",
            &[("accept", "application/json")],
            Some(HOST_RULES),
        ),
    )
    .await;
    denied(&api, 401);
    // A host that is no host (Envoy may pass on what a client wrote) builds no redirect on it.
    let mut odd_host = check_request("/page", &[("accept", "text/html")], Some(HOST_RULES));
    odd_host
        .attributes
        .as_mut()
        .unwrap()
        .request
        .as_mut()
        .unwrap()
        .http
        .as_mut()
        .unwrap()
        .host = "evil.example/x?".to_owned();
    let refused = check(&gateway, odd_host).await;
    let refused = denied(&refused, 401);
    assert_eq!(header(&refused.headers, "location"), None);
}

#[tokio::test]
async fn grpc_reads_the_session_cookie_from_the_described_request() {
    let idp = TestIdp::start().await;
    let gateway = gateway(&idp, "").await;
    let mut browser = Browser::new();
    signed_in(&mut browser, &gateway).await;
    let cookie = browser
        .cookies
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("; ");
    let response = check(
        &gateway,
        check_request("/admin/", &[("cookie", &cookie)], Some(ADMIN_RULES)),
    )
    .await;
    assert_eq!(
        header(&ok(&response).headers, "x-email"),
        Some("alice@example.com")
    );
    // The same cookie under another name is no credential.
    let renamed = cookie.replace("tollgate", "other");
    let refused = check(
        &gateway,
        check_request("/admin/", &[("cookie", &renamed)], Some(ADMIN_RULES)),
    )
    .await;
    denied(&refused, 401);
}

#[tokio::test]
async fn grpc_names_injected_headers_without_a_value_in_headers_to_remove() {
    let idp = TestIdp::start().await;
    let gateway = gateway(&idp, "").await;
    let bearer = format!("Bearer {}", idp.access_token().sign());
    // Alice has an email but no department.
    let response = check(
        &gateway,
        check_request(
            "/reports",
            &[("authorization", &bearer), ("x-department", "finance")],
            Some(HOST_RULES),
        ),
    )
    .await;
    let allowed = ok(&response);
    assert_eq!(
        header(&allowed.headers, "x-email"),
        Some("alice@example.com")
    );
    assert_eq!(header(&allowed.headers, "x-department"), None);
    assert_eq!(
        own_removals(&allowed.headers_to_remove),
        vec!["x-department".to_owned()]
    );
    // A skip rule runs no checks: every injected name is removed.
    let skipped = check(
        &gateway,
        check_request(
            "/public/logo.png",
            &[("x-email", "mallory@example.com")],
            Some(HOST_RULES),
        ),
    )
    .await;
    let skipped = ok(&skipped);
    assert!(skipped.headers.is_empty(), "{skipped:?}");
    assert_eq!(
        own_removals(&skipped.headers_to_remove),
        vec!["x-email".to_owned(), "x-department".to_owned()]
    );
}

#[tokio::test]
async fn grpc_skip_rules_from_context_extensions_see_the_canonical_path() {
    let idp = TestIdp::start().await;
    let gateway = gateway(&idp, "").await;
    ok(&check(&gateway, check_request("/public/x", &[], Some(HOST_RULES))).await);
    // Not canonical: Envoy routed it as written, so it is refused before any rule.
    denied(
        &check(
            &gateway,
            check_request("/public/../admin/", &[], Some(HOST_RULES)),
        )
        .await,
        400,
    );
    // Without rules for the route there is no skip rule at all.
    denied(
        &check(&gateway, check_request("/public/x", &[], None)).await,
        401,
    );
}

/// Envoy picks a route, and with it the route's rules, on the path as the client wrote it
/// (the README's recipe: `groups=admin` on `prefix: "/admin/"`, none on `/`). A path that the
/// application reads as `/admin/users` but Envoy does not is refused, even for a caller the
/// rules of `/` would let in.
#[tokio::test]
async fn grpc_refuses_a_path_envoy_and_the_application_read_apart() {
    let idp = TestIdp::start().await;
    let gateway = gateway(&idp, "").await;
    // A signed-in user outside `admin`, on the rules of `/`.
    let bearer = format!(
        "Bearer {}",
        idp.access_token()
            .claim("groups", serde_json::json!(["dev"]))
            .sign()
    );
    let headers = [("authorization", bearer.as_str())];
    for path in [
        "/%61dmin/users",
        "//admin/users",
        "/x/../admin/users",
        "/./admin/users",
        "/admin;x/users",
        "/admin%3bx/users",
        "/%2e%2e/admin",
        "*",
    ] {
        let refused = check(&gateway, check_request(path, &headers, Some(HOST_RULES))).await;
        denied(&refused, 400);
    }
    ok(&check(
        &gateway,
        check_request("/admin/users?a=%61", &headers, Some(HOST_RULES)),
    )
    .await);
    ok(&check(
        &gateway,
        check_request("/caf%C3%A9", &headers, Some(HOST_RULES)),
    )
    .await);
}

/// Envoy passes headers with underscores on by default, and an application reading headers
/// the CGI way takes `x_email` for `X-Email`: the client's other spellings of an injected name
/// are removed whether Tollgate sets the header or not.
#[tokio::test]
async fn grpc_removes_the_clients_other_spellings_of_injected_headers() {
    let idp = TestIdp::start().await;
    let gateway = gateway(&idp, "").await;
    let bearer = format!("Bearer {}", idp.access_token().sign());
    let forged = [
        ("authorization", bearer.as_str()),
        ("x_email", "mallory@example.com"),
        ("x_department", "finance"),
    ];
    let response = check(
        &gateway,
        check_request("/reports", &forged, Some(HOST_RULES)),
    )
    .await;
    let allowed = ok(&response);
    assert_eq!(
        header(&allowed.headers, "x-email"),
        Some("alice@example.com")
    );
    let mut removed = own_removals(&allowed.headers_to_remove);
    removed.sort();
    assert_eq!(removed, ["x-department", "x_department", "x_email"]);
    let skipped = check(
        &gateway,
        check_request(
            "/public/x",
            &[("x_email", "mallory@example.com")],
            Some(HOST_RULES),
        ),
    )
    .await;
    let skipped = ok(&skipped);
    assert!(
        skipped.headers_to_remove.contains(&"x_email".to_owned()),
        "{skipped:?}"
    );
}

#[tokio::test]
async fn grpc_refuses_malformed_rules_with_400_and_a_check_without_a_request_as_invalid() {
    let idp = TestIdp::start().await;
    let gateway = gateway(&idp, "").await;
    let bearer = format!("Bearer {}", idp.access_token().sign());
    let bad_rules = check(
        &gateway,
        check_request(
            "/x",
            &[("authorization", &bearer)],
            Some("skip-auth=(unclosed"),
        ),
    )
    .await;
    let refusal = denied(&bad_rules, 400);
    assert!(refusal.body.contains("skip-auth"), "{refusal:?}");
    assert_eq!(
        bad_rules.status.as_ref().unwrap().code,
        3,
        "INVALID_ARGUMENT"
    );

    // A misspelled `rules` is refused, never read as no rules (which lets any caller through).
    let mut misspelled = check_request("/x", &[("authorization", &bearer)], None);
    if let Some(attributes) = misspelled.attributes.as_mut() {
        attributes
            .context_extensions
            .insert("rule".to_owned(), "groups=admins".to_owned());
    }
    let misspelled = check(&gateway, misspelled).await;
    assert!(
        denied(&misspelled, 400).body.contains("`rule`"),
        "{misspelled:?}"
    );
    assert_eq!(
        misspelled.status.as_ref().unwrap().code,
        3,
        "INVALID_ARGUMENT"
    );

    // So is a `rules` that holds none (a template that expanded to nothing).
    for empty in ["", " ", "&", " & "] {
        let answer = check(
            &gateway,
            check_request("/x", &[("authorization", &bearer)], Some(empty)),
        )
        .await;
        assert!(
            denied(&answer, 400).body.contains("holds no rule"),
            "{empty:?}: {answer:?}"
        );
        assert_eq!(answer.status.as_ref().unwrap().code, 3, "INVALID_ARGUMENT");
    }

    // A Check that describes no request is refused with an answer, never a failed RPC, which
    // Envoy with `failure_mode_allow: true` would let through.
    let empty = check(&gateway, CheckRequest::default()).await;
    assert!(denied(&empty, 400).body.contains("attributes"), "{empty:?}");
    assert_eq!(empty.status.as_ref().unwrap().code, 3, "INVALID_ARGUMENT");
    let no_http = check(
        &gateway,
        CheckRequest {
            attributes: Some(AttributeContext::default()),
        },
    )
    .await;
    assert!(
        denied(&no_http, 400)
            .body
            .contains("attributes.request.http"),
        "{no_http:?}"
    );
    let metrics = gateway.metrics().await;
    assert!(
        metrics.contains("tollgate_requests_total{role=\"forward_auth\",result=\"bad_request\"} 8"),
        "{metrics}"
    );
}

#[tokio::test]
async fn grpc_listener_stops_with_the_rest() {
    let idp = TestIdp::start().await;
    let gateway = gateway(&idp, "").await;
    let address = gateway.app.grpc_addr.unwrap();
    denied(&check(&gateway, check_request("/", &[], None)).await, 401);
    gateway.stop().await;
    assert!(
        tokio::net::TcpStream::connect(address).await.is_err(),
        "nothing listens on {address} after shutdown"
    );
}

/// `<method> /envoy<path>` as Envoy's HTTP filter sends it (README recipe).
async fn envoy_http(
    gateway: &Gateway,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut request = client
        .request(method, gateway.url(&format!("/envoy{path}")))
        .header("host", "app.example.com")
        .header("x-forwarded-proto", "https");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn http_variant_gives_the_auth_decision_for_the_original_path() {
    let idp = TestIdp::start().await;
    let gateway = gateway(&idp, "unauthenticated = \"redirect\"").await;
    let bearer = format!("Bearer {}", idp.access_token().sign());
    let allowed = envoy_http(
        &gateway,
        reqwest::Method::DELETE,
        "/admin/users/7",
        &[
            ("authorization", &bearer),
            ("x-tollgate-rules", ADMIN_RULES),
        ],
    )
    .await;
    assert_eq!(allowed.status(), 200);
    assert_eq!(allowed.headers()["x-email"], "alice@example.com");
    let removed = |answer: &reqwest::Response| {
        let list: Vec<String> = answer.headers()["x-envoy-auth-headers-to-remove"]
            .to_str()
            .unwrap()
            .split(',')
            .map(str::to_owned)
            .collect();
        // The HTTP variant sees no `X-Forwarded-Host`: it is removed whatever it says.
        assert!(
            list.iter().any(|name| name == "x-forwarded-host"),
            "{list:?}"
        );
        own_removals(&list).join(",")
    };
    assert_eq!(removed(&allowed), "");

    let absent = envoy_http(
        &gateway,
        reqwest::Method::GET,
        "/reports",
        &[("authorization", &bearer), ("x-tollgate-rules", HOST_RULES)],
    )
    .await;
    assert_eq!(absent.status(), 200);
    assert_eq!(removed(&absent), "x-department");
    // A skip rule's answer carries no `Cache-Control`: the recipe hands an allowed answer's on
    // to the client, and a public page (`/public/app.js`) must stay cacheable.
    let skipped = envoy_http(
        &gateway,
        reqwest::Method::GET,
        "/public/app.js",
        &[("x-tollgate-rules", HOST_RULES)],
    )
    .await;
    assert_eq!(skipped.status(), 200);
    assert!(
        skipped.headers().get("cache-control").is_none(),
        "{:?}",
        skipped.headers()
    );

    let dev = format!(
        "Bearer {}",
        idp.access_token().claim("groups", json!(["dev"])).sign()
    );
    let forbidden = envoy_http(
        &gateway,
        reqwest::Method::GET,
        "/admin/",
        &[("authorization", &dev), ("x-tollgate-rules", ADMIN_RULES)],
    )
    .await;
    assert_eq!(forbidden.status(), 403);

    let browser = envoy_http(
        &gateway,
        reqwest::Method::GET,
        "/page?a=1",
        &[("accept", "text/html"), ("x-tollgate-rules", HOST_RULES)],
    )
    .await;
    assert_eq!(browser.status(), 302);
    assert_eq!(
        browser.headers()["location"],
        "https://app.example.com/signin?rd=https%3A%2F%2Fapp.example.com%2Fpage%3Fa%3D1"
    );
    let api = envoy_http(
        &gateway,
        reqwest::Method::POST,
        "/page",
        &[("x-tollgate-rules", HOST_RULES)],
    )
    .await;
    assert_eq!(api.status(), 401);
    assert_eq!(api.headers()["www-authenticate"], "Bearer");

    let skipped = envoy_http(
        &gateway,
        reqwest::Method::GET,
        "/public/logo.png",
        &[("x-tollgate-rules", HOST_RULES)],
    )
    .await;
    assert_eq!(skipped.status(), 200);
    assert_eq!(removed(&skipped), "x-email,x-department");

    let malformed = envoy_http(
        &gateway,
        reqwest::Method::GET,
        "/x",
        &[
            ("authorization", &bearer),
            ("x-tollgate-rules", "inject-claim="),
        ],
    )
    .await;
    assert_eq!(malformed.status(), 400);
    assert!(malformed.text().await.unwrap().contains("inject-claim"));

    // Two rule headers (Envoy's and a copy a client slipped through): neither is believed.
    let twice = envoy_http(
        &gateway,
        reqwest::Method::GET,
        "/x",
        &[
            ("authorization", &bearer),
            ("x-tollgate-rules", "skip-auth=%5E/"),
            ("x-tollgate-rules", HOST_RULES),
        ],
    )
    .await;
    assert_eq!(twice.status(), 400);
    assert!(
        twice
            .text()
            .await
            .unwrap()
            .contains("more than one X-Tollgate-Rules")
    );
}

#[tokio::test]
async fn http_variant_refuses_rules_from_an_untrusted_peer() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::start(&Gateway::forward_auth_config(
        &idp,
        "trusted_proxies = [\"10.0.0.0/8\"]",
        "",
    ))
    .await;
    // A skip rule from anyone but Envoy would let an unauthenticated request through.
    let response = envoy_http(
        &gateway,
        reqwest::Method::GET,
        "/admin/",
        &[("x-tollgate-rules", "skip-auth=.*")],
    )
    .await;
    assert_eq!(response.status(), 400);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("X-Tollgate-Rules is believed only from server.trusted_proxies")
    );
    // Without the header the peer gets the rule-less decision.
    let bearer = format!("Bearer {}", idp.access_token().sign());
    let plain = envoy_http(
        &gateway,
        reqwest::Method::GET,
        "/admin/",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(plain.status(), 200);
    let none = envoy_http(&gateway, reqwest::Method::GET, "/admin/", &[]).await;
    assert_eq!(none.status(), 401);
}

/// A misspelled `X-Tollgate-Rules` in Envoy's `headers_to_add` is refused, never read as no
/// rules (which lets every signed-in caller through).
#[tokio::test]
async fn http_variant_refuses_a_misspelled_rules_header() {
    let idp = TestIdp::start().await;
    let gateway = gateway(&idp, "").await;
    let bearer = format!("Bearer {}", idp.access_token().sign());
    let misspelled = envoy_http(
        &gateway,
        reqwest::Method::GET,
        "/admin/",
        &[
            ("authorization", &bearer),
            ("x-tollgate-rule", "groups=nobody"),
        ],
    )
    .await;
    assert_eq!(misspelled.status(), 400);
    assert!(
        misspelled
            .text()
            .await
            .unwrap()
            .contains("other than X-Tollgate-Rules")
    );
    let spelled = envoy_http(
        &gateway,
        reqwest::Method::GET,
        "/admin/",
        &[
            ("authorization", &bearer),
            ("x-tollgate-rules", "groups=nobody"),
        ],
    )
    .await;
    assert_eq!(spelled.status(), 403);
    // A value that expanded to nothing is no set of rules either.
    for empty in ["", " ", "&", "& "] {
        let answer = envoy_http(
            &gateway,
            reqwest::Method::GET,
            "/admin/",
            &[("authorization", &bearer), ("x-tollgate-rules", empty)],
        )
        .await;
        assert_eq!(answer.status(), 400, "{empty:?}");
        assert!(
            answer
                .text()
                .await
                .unwrap()
                .contains("X-Tollgate-Rules holds no rule")
        );
    }
}

#[tokio::test]
async fn grpc_sends_a_refreshed_cookie_session_back_to_the_browser() {
    let idp = TestIdp::start().await;
    let clock = tollgate::clock::ManualClock::new();
    let config = Gateway::forward_auth_config(&idp, "", "grpc_listen = \"127.0.0.1:0\"").replace(
        "[session]\n",
        "[session]\nstore = \"cookie\"\nrefresh_before = \"60s\"\n",
    );
    let gateway = Gateway::start_with_clock(&config, clock.clone()).await;
    let mut browser = Browser::new();
    signed_in(&mut browser, &gateway).await;
    let cookie = browser
        .cookies
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("; ");
    // The access token lives 300 s; 250 s later it is within refresh_before.
    clock.advance(250);
    idp.advance_clock(250);
    let response = check(
        &gateway,
        check_request("/admin/", &[("cookie", &cookie)], Some(ADMIN_RULES)),
    )
    .await;
    let allowed = ok(&response);
    assert_eq!(idp.count("refresh"), 1);
    let set_cookie = allowed
        .response_headers_to_add
        .iter()
        .find(|option| {
            option
                .header
                .as_ref()
                .is_some_and(|header| header.key == "set-cookie")
        })
        .expect("the refreshed session goes back to the browser");
    assert!(
        set_cookie
            .header
            .as_ref()
            .unwrap()
            .value
            .starts_with("tollgate="),
        "{set_cookie:?}"
    );
    // Several Set-Cookie headers must all reach the browser.
    assert_eq!(
        set_cookie.append_action,
        HeaderAppendAction::AppendIfExistsOrAdd as i32
    );
    // And no shared cache stores the answer that carries them, whatever the upstream said.
    let replaced = |name: &str| {
        allowed.response_headers_to_add.iter().find_map(|option| {
            let header = option.header.as_ref()?;
            (header.key == name
                && option.append_action == HeaderAppendAction::OverwriteIfExistsOrAdd as i32)
                .then(|| header.value.clone())
        })
    };
    assert_eq!(
        replaced("cache-control").as_deref(),
        Some("private, no-store")
    );
    assert_eq!(replaced("cdn-cache-control").as_deref(), Some("no-store"));
    assert_eq!(replaced("surrogate-control").as_deref(), Some("no-store"));
    assert_eq!(replaced("x-accel-expires").as_deref(), Some("0"));
}

/// A header Tollgate cannot read as HTTP (a control byte in `x_email`, a second token cookie in
/// a `cookie` with one) is refused: Envoy forwards it all the same, so reading past it would
/// let it reach the upstream unchecked and not removed.
#[tokio::test]
async fn grpc_refuses_a_header_that_is_not_valid_http() {
    let idp = TestIdp::start().await;
    let gateway = gateway(&idp, "").await;
    let bearer = format!("Bearer {}", idp.access_token().sign());
    let valid = check(
        &gateway,
        check_request("/x", &[("authorization", &bearer)], None),
    )
    .await;
    ok(&valid);
    for (name, value) in [
        ("x_email", "ceo@example.com\u{1}"),
        ("cookie", "a=b\u{7f}"),
        ("x email", "ceo@example.com"),
    ] {
        let refused = check(
            &gateway,
            check_request("/x", &[("authorization", &bearer), (name, value)], None),
        )
        .await;
        let refusal = denied(&refused, 400);
        assert!(refusal.body.contains("not valid HTTP"), "{refusal:?}");
    }
}

/// Envoy's HTTP filter (no `normalize_path` in the README's recipe) sends the client's path as
/// written after its prefix: its dot segments never climb out of `/envoy/` into one of
/// Tollgate's own pages, which would answer 200 and so let Envoy pass the request.
#[tokio::test]
async fn http_variant_keeps_dot_segments_inside_the_prefix() {
    let idp = TestIdp::start().await;
    let gateway = gateway(&idp, "").await;
    let port = gateway.app.public_addr.port();
    for target in [
        "/envoy/..",
        "/envoy/../ping",
        "/envoy/%2e%2e/ping",
        "/envoy/x/../../ping",
        "/envoy/../envoy/public/x",
    ] {
        let (status, body) = crate::support::nginx::raw_get(
            port,
            target,
            &[
                ("Host", "app.example.com"),
                ("Accept", "application/json"),
                ("X-Tollgate-Rules", "skip-auth=^/public/"),
            ],
        )
        .await;
        assert_eq!(status, 400, "{target}: {body}");
    }
    let (status, _) = crate::support::nginx::raw_get(
        port,
        "/envoy/public/x",
        &[
            ("Host", "app.example.com"),
            ("X-Tollgate-Rules", "skip-auth=^/public/"),
        ],
    )
    .await;
    assert_eq!(status, 200, "the rules still apply inside the prefix");
}

/// A peer outside `trusted_proxies` gets its PERMISSION_DENIED without its message being
/// read: tonic read a whole message (4 MiB, as its prefix said) before the Check ran, so any
/// pod could make each stream hold that much for as long as it trickled it.
#[tokio::test]
async fn grpc_answers_an_untrusted_peer_without_reading_its_message() {
    use http_body_util::BodyExt as _;
    use prost::Message as _;
    let idp = TestIdp::start().await;
    let config = Gateway::forward_auth_config(&idp, "", "grpc_listen = \"127.0.0.1:0\"\n")
        .replacen(
            "[server]\n",
            "[server]\ntrusted_proxies = [\"10.9.9.9/32\"]\n",
            1,
        );
    assert!(config.contains("10.9.9.9/32"));
    let gateway = Gateway::start(&config).await;
    let address = gateway.app.grpc_addr.expect("grpc_listen is bound");
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake::<_, _, Trickle>(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    // A message whose prefix says 4 MiB, of which a kilobyte comes, and then nothing more.
    let mut start = vec![0u8, 0, 0x40, 0, 0];
    start.extend(std::iter::repeat_n(0u8, 1024));
    let request = hyper::Request::post(format!(
        "http://{address}/envoy.service.auth.v3.Authorization/Check"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(Trickle(Some(start.into())))
    .unwrap();
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        sender.send_request(request),
    )
    .await
    .expect("answered while the message is still coming")
    .unwrap();
    assert_eq!(answer.status(), 200);
    let body = answer.into_body().collect().await.unwrap().to_bytes();
    assert!(body.len() >= 5, "a gRPC message: {body:?}");
    let response = CheckResponse::decode(&body[5..]).unwrap();
    assert_eq!(response.status.unwrap().code, 7, "PERMISSION_DENIED");
}

/// A request body that gives its first bytes and then never another.
struct Trickle(Option<hyper::body::Bytes>);

impl hyper::body::Body for Trickle {
    type Data = hyper::body::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        match self.0.take() {
            Some(data) => std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(data)))),
            None => std::task::Poll::Pending,
        }
    }
}

/// A Check above tonic's default 4 MiB, from headers as large as Envoy lets through
/// (`max_request_headers_kb` up to 8 MiB), is answered: a failed RPC is what Envoy with
/// `failure_mode_allow: true` lets through.
#[tokio::test]
async fn grpc_answers_a_check_with_headers_larger_than_four_mebibytes() {
    let idp = TestIdp::start().await;
    let gateway = gateway(&idp, "").await;
    let large = "x".repeat(6 * 1024 * 1024);
    let answer = client(&gateway)
        .await
        .check(check_request("/x", &[("x-large", &large)], None))
        .await
        .expect("an answer, not a failed RPC")
        .into_inner();
    denied(&answer, 401);
}
