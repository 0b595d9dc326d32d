//! Traefik's ForwardAuth contract (SPEC §4, README "Traefik"): each test replays the request
//! Traefik v2/v3 sends to `forwardAuth.address` for a client's request, built here from
//! Traefik's documented behaviour (its forwardAuth middleware, `pkg/middlewares/auth/forward.go`):
//! - method GET to the address (the original method only with `preserveRequestMethod`, which
//!   the recipe leaves off), `Host` the address's authority;
//! - every header of the client's request, Cookie and Authorization included, less the
//!   hop-by-hop ones (Connection and the headers it names, Keep-Alive, TE, Trailer,
//!   Transfer-Encoding, Upgrade);
//! - `X-Forwarded-Method`, `-Proto`, `-Host`, `-Uri` set from the client's request, or — with
//!   `trustForwardHeader` — taken from the client's own `X-Forwarded-*` when present;
//!   `X-Forwarded-For` the client's address (appended to its own list when trusted);
//! - a 2xx lets the request through with the `authResponseHeaders` copied from Tollgate's
//!   answer (replacing the client's), Set-Cookie only for the names `addAuthCookiesToResponse`
//!   lists; any other status goes back to the client as Tollgate sent it, `Location` made
//!   absolute against the address.
//!
//! The requests are written byte for byte over a plain connection (no client library adding
//! headers of its own).

use http_body_util::BodyExt as _;
use hyper::header::HeaderMap;
use serde_json::json;

use crate::support::{Browser, Gateway, TestIdp};

/// The README recipe's `forwardAuth.address` path and query.
const ADDRESS: &str = "/auth?skip-auth=GET,^/public/&inject-claim=email,X-Auth-Email";
/// The recipe's `authResponseHeaders`.
const AUTH_RESPONSE_HEADERS: &[&str] = &["X-Auth-Email"];
/// The recipe's `addAuthCookiesToResponse`: the session cookie, its chunks and its binding.
const ADD_AUTH_COOKIES: &[&str] = &[
    "tollgate",
    "tollgate_1",
    "tollgate_2",
    "tollgate_3",
    "tollgate_4",
    "tollgate_5",
    "tollgate_6",
    "tollgate_7",
    "tollgate_8",
    "__Host-tollgate_bind",
];
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// A request as it reaches Traefik's entry point.
struct ClientRequest {
    method: &'static str,
    host: &'static str,
    /// Path and query as sent.
    target: &'static str,
    /// Whether the entry point terminated TLS.
    tls: bool,
    /// The client's address as Traefik sees it.
    address: &'static str,
    headers: Vec<(String, String)>,
}

impl ClientRequest {
    fn get(host: &'static str, target: &'static str) -> Self {
        Self {
            method: "GET",
            host,
            target,
            tls: true,
            address: "203.0.113.7",
            headers: vec![
                ("User-Agent".to_owned(), "Mozilla/5.0".to_owned()),
                (
                    "Accept".to_owned(),
                    "text/html,application/xhtml+xml".to_owned(),
                ),
            ],
        }
    }

    fn method(mut self, method: &'static str) -> Self {
        self.method = method;
        self
    }

    fn plain_http(mut self) -> Self {
        self.tls = false;
        self
    }

    /// Sets a header of the client's request (replacing one of that name).
    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .retain(|(header, _)| !header.eq_ignore_ascii_case(name));
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn client_header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// The headers Traefik sends to the forward-auth address for `client`.
fn traefik_headers(client: &ClientRequest, trust_forward_header: bool) -> Vec<(String, String)> {
    let connection_named: Vec<String> = client
        .client_header("connection")
        .map(|value| {
            value
                .split(',')
                .map(|name| name.trim().to_ascii_lowercase())
                .collect()
        })
        .unwrap_or_default();
    let forwarded = |name: &str, own: String| -> String {
        match client.client_header(name) {
            Some(value) if trust_forward_header => value.to_owned(),
            _ => own,
        }
    };
    let mut headers: Vec<(String, String)> = client
        .headers
        .iter()
        .filter(|(name, _)| {
            let name = name.to_ascii_lowercase();
            !HOP_BY_HOP.contains(&name.as_str())
                && !connection_named.contains(&name)
                && ![
                    "x-forwarded-for",
                    "x-forwarded-method",
                    "x-forwarded-proto",
                    "x-forwarded-host",
                    "x-forwarded-uri",
                    "x-forwarded-port",
                ]
                .contains(&name.as_str())
        })
        .cloned()
        .collect();
    let for_list = match client.client_header("x-forwarded-for") {
        Some(prior) if trust_forward_header => format!("{prior}, {}", client.address),
        _ => client.address.to_owned(),
    };
    headers.push(("X-Forwarded-For".to_owned(), for_list));
    let proto = if client.tls { "https" } else { "http" };
    for (name, own) in [
        ("X-Forwarded-Method", client.method.to_owned()),
        ("X-Forwarded-Proto", proto.to_owned()),
        ("X-Forwarded-Host", client.host.to_owned()),
        ("X-Forwarded-Uri", client.target.to_owned()),
    ] {
        headers.push((name.to_owned(), forwarded(name, own)));
    }
    if trust_forward_header && let Some(port) = client.client_header("x-forwarded-port") {
        headers.push(("X-Forwarded-Port".to_owned(), port.to_owned()));
    }
    headers
}

struct AuthAnswer {
    status: u16,
    headers: HeaderMap,
}

impl AuthAnswer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().unwrap())
    }

    /// What Traefik sets on the request it lets through: the `authResponseHeaders` values
    /// (a header Tollgate did not answer with is removed from the client's request).
    fn auth_response_headers(&self) -> Vec<(&'static str, Option<&str>)> {
        AUTH_RESPONSE_HEADERS
            .iter()
            .map(|name| (*name, self.header(name)))
            .collect()
    }

    /// Names of the cookies Tollgate sets.
    fn set_cookie_names(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|value| {
                let text = value.to_str().unwrap();
                text.split_once('=').unwrap().0.to_owned()
            })
            .collect()
    }
}

/// Traefik's forward-auth call for `client`, sent to the gateway's public listener.
async fn forward_auth(
    gateway: &Gateway,
    client: &ClientRequest,
    trust_forward_header: bool,
) -> AuthAnswer {
    let stream = tokio::net::TcpStream::connect(gateway.app.public_addr)
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut request = hyper::Request::builder()
        .method("GET")
        .uri(ADDRESS)
        .header("Host", gateway.app.public_addr.to_string());
    for (name, value) in traefik_headers(client, trust_forward_header) {
        request = request.header(name, value);
    }
    let response = sender
        .send_request(
            request
                .body(http_body_util::Empty::<hyper::body::Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    response.into_body().collect().await.unwrap();
    AuthAnswer { status, headers }
}

fn config(idp: &TestIdp, server: &str, session: &str) -> String {
    Gateway::forward_auth_config(idp, server, "unauthenticated = \"redirect\"")
        .replace("[session]\n", &format!("[session]\n{session}\n"))
}

#[tokio::test]
async fn bearer_token_and_session_cookie_from_the_client_pass_and_fill_auth_response_headers() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::start(&config(&idp, "", "")).await;
    let token = idp
        .access_token()
        .claim("email", json!("ada@example.com"))
        .sign();
    let client = ClientRequest::get("app.example.com", "/reports/2026?page=2")
        .header("Authorization", &format!("Bearer {token}"))
        // A client's own copy of an identity header: Traefik replaces it with Tollgate's.
        .header("X-Auth-Email", "mallory@example.com");
    let answer = forward_auth(&gateway, &client, false).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.auth_response_headers(),
        [("X-Auth-Email", Some("ada@example.com"))]
    );

    // A browser session: the Cookie header Traefik copies from the client.
    idp.set_user_claim("email", json!("grace@example.com"));
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    let cookie = browser
        .cookies
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("; ");
    let client = ClientRequest::get("app.example.com", "/reports").header("Cookie", &cookie);
    let answer = forward_auth(&gateway, &client, false).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.auth_response_headers(),
        [("X-Auth-Email", Some("grace@example.com"))]
    );
}

#[tokio::test]
async fn browsers_without_a_session_are_redirected_to_the_url_rebuilt_from_the_forwarded_headers() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::start(&config(&idp, "", "")).await;
    let client = ClientRequest::get("app.example.com", "/reports/2026?page=2");
    let answer = forward_auth(&gateway, &client, false).await;
    assert_eq!(answer.status, 302);
    // Absolute, so Traefik passes it on unchanged (it resolves a relative one against the
    // forward-auth address, which the browser cannot reach).
    assert_eq!(
        answer.header("location"),
        Some(
            "https://app.example.com/signin?rd=https%3A%2F%2Fapp.example.com%2Freports%2F2026%3Fpage%3D2"
        )
    );
    // An API call gets the 401 itself.
    let api =
        ClientRequest::get("app.example.com", "/api/items").header("Accept", "application/json");
    let answer = forward_auth(&gateway, &api, false).await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.header("www-authenticate"), Some("Bearer"));
    let post = ClientRequest::get("app.example.com", "/reports").method("POST");
    assert_eq!(forward_auth(&gateway, &post, false).await.status, 401);
}

#[tokio::test]
async fn trust_forward_header_passes_a_load_balancers_scheme_and_host_and_without_it_traefik_sets_its_own()
 {
    let idp = TestIdp::start().await;
    let gateway = Gateway::start(&config(&idp, "", "")).await;
    // TLS ends at a load balancer, which talks plain http to Traefik.
    let client = ClientRequest::get("traefik.internal", "/reports")
        .plain_http()
        .header("X-Forwarded-Proto", "https")
        .header("X-Forwarded-Host", "app.example.com")
        .header("X-Forwarded-For", "198.51.100.20");
    let trusted = forward_auth(&gateway, &client, true).await;
    assert_eq!(trusted.status, 302);
    assert_eq!(
        trusted.header("location"),
        Some("https://app.example.com/signin?rd=https%3A%2F%2Fapp.example.com%2Freports")
    );
    let own = forward_auth(&gateway, &client, false).await;
    assert_eq!(own.status, 302);
    assert_eq!(
        own.header("location"),
        Some("http://traefik.internal/signin?rd=http%3A%2F%2Ftraefik.internal%2Freports")
    );
}

#[tokio::test]
async fn skip_rules_see_the_path_and_method_traefik_reports_not_what_a_client_forges() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::start(&config(&idp, "", "")).await;
    let public = ClientRequest::get("app.example.com", "/public/logo.png");
    assert_eq!(forward_auth(&gateway, &public, false).await.status, 200);
    let post = ClientRequest::get("app.example.com", "/public/logo.png").method("POST");
    assert_eq!(
        forward_auth(&gateway, &post, false).await.status,
        401,
        "the skip rule is for GET: Traefik's X-Forwarded-Method decides, not its GET to /auth"
    );
    // Without trustForwardHeader Traefik overwrites a client's X-Forwarded-*.
    let forged = ClientRequest::get("app.example.com", "/admin")
        .header("X-Forwarded-Uri", "/public/x")
        .header("X-Forwarded-Method", "GET");
    assert_eq!(forward_auth(&gateway, &forged, false).await.status, 302);
    // Traefik copies every other client header, ingress-nginx's X-Original-* included: when
    // they disagree with what Traefik reports, neither is believed (fail closed: no skip, and
    // no redirect built from them).
    let smuggled = ClientRequest::get("app.example.com", "/admin")
        .header("X-Original-URL", "https://app.example.com/public/x")
        .header("X-Original-Method", "GET");
    assert_eq!(forward_auth(&gateway, &smuggled, false).await.status, 401);
    let smuggled_method = ClientRequest::get("app.example.com", "/public/x")
        .method("DELETE")
        .header("X-Original-URL", "https://app.example.com/public/x")
        .header("X-Original-Method", "GET");
    assert_eq!(
        forward_auth(&gateway, &smuggled_method, false).await.status,
        401
    );
}

#[tokio::test]
async fn from_a_peer_outside_trusted_proxies_the_forwarded_headers_are_ignored() {
    let idp = TestIdp::start().await;
    // Traefik (on 127.0.0.1 here) is not in trusted_proxies.
    let gateway = Gateway::start(&config(&idp, "trusted_proxies = [\"10.0.0.0/8\"]", "")).await;
    let public = ClientRequest::get("app.example.com", "/public/logo.png");
    let answer = forward_auth(&gateway, &public, false).await;
    assert_eq!(
        answer.status, 401,
        "no skip rule without a trusted original path"
    );
    assert_eq!(
        answer.header("location"),
        None,
        "no redirect to a URL built from untrusted headers"
    );
    let token = idp
        .access_token()
        .claim("email", json!("ada@example.com"))
        .sign();
    let client = ClientRequest::get("app.example.com", "/reports")
        .header("Authorization", &format!("Bearer {token}"));
    let answer = forward_auth(&gateway, &client, false).await;
    assert_eq!(
        answer.status, 200,
        "credentials do not depend on the forwarded headers"
    );
    assert_eq!(
        answer.auth_response_headers(),
        [("X-Auth-Email", Some("ada@example.com"))]
    );
}

#[tokio::test]
async fn a_refreshed_cookie_session_is_set_only_through_cookies_add_auth_cookies_to_response_lists()
{
    let idp = TestIdp::start().await;
    let clock = tollgate::clock::ManualClock::new();
    let gateway = Gateway::start_with_clock(
        &config(&idp, "", "store = \"cookie\"\nrefresh_before = \"60s\""),
        clock.clone(),
    )
    .await;
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    // The access token lives 300 s; 250 s later it is within refresh_before.
    clock.advance(250);
    idp.advance_clock(250);
    let cookie = browser
        .cookies
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("; ");
    let client = ClientRequest::get("app.example.com", "/reports").header("Cookie", &cookie);
    let answer = forward_auth(&gateway, &client, false).await;
    assert_eq!(answer.status, 200);
    assert_eq!(idp.count("refresh"), 1);
    let names = answer.set_cookie_names();
    assert!(
        !names.is_empty(),
        "the refreshed session comes back as cookies"
    );
    for name in &names {
        assert!(
            ADD_AUTH_COOKIES.contains(&name.as_str()),
            "{name} is not in the recipe's addAuthCookiesToResponse, so Traefik would drop it"
        );
    }
}

/// The recipe's `authResponseHeadersRegex` (Traefik removes every request header it matches
/// before copying the answer's): it matches every spelling of the names Tollgate counts as
/// another gateway's identity headers (`is_identity_elsewhere`), and the path and host
/// overrides, and none of what the application and Tollgate need. Go's RE2 and the `regex`
/// crate read this pattern alike (no look-around, no back-references).
#[test]
fn the_recipes_header_regex_clears_every_other_gateways_identity_header() {
    let recipe = crate::support::readme_block("### Traefik\n", "yaml");
    let line = recipe
        .lines()
        .find_map(|line| line.trim().strip_prefix("authResponseHeadersRegex: "))
        .expect("the recipe sets authResponseHeadersRegex");
    let pattern: String = serde_json::from_str(line).unwrap();
    let regex = regex::Regex::new(&pattern).unwrap();
    // Every family Tollgate counts as another gateway's identity headers, in any spelling.
    let identities = [
        "X-Forwarded-User",
        "x_forwarded_user",
        "X.Forwarded.Email",
        "X-Forwarded-Preferred-Username",
        "X-Auth-Request-Access-Token",
        "X-authentik-username",
        "X-Pomerium-Claim-Email",
        "X-MS-CLIENT-PRINCIPAL-NAME",
        "X-MS-TOKEN-AAD-ID-TOKEN",
        "X-Goog-Authenticated-User-Email",
        "X-Goog-IAP-JWT-Assertion",
        "X-Vouch-User",
        "Cf-Access-Authenticated-User-Email",
        "X-Userinfo",
        "X-Access-Token",
        "X-Id-Token",
        "X-Remote-User",
        "X-Consumer-Username",
        "X-Authenticated-Userid",
        "X-Credential-Identifier",
        "X-Anonymous-Consumer",
        "Remote-User",
        "remote_groups",
        "OIDC_CLAIM_email",
        "Oidc-Access-Token",
    ];
    for name in identities {
        assert!(regex.is_match(name), "{name} passes");
        assert!(
            tollgate::http::is_identity_elsewhere(&name.to_ascii_lowercase()),
            "{name} is not one Tollgate removes either"
        );
    }
    // What an application may read as another path or host, and the spellings of Traefik's
    // own `X-Forwarded-*` it does not set (a CGI-style reader takes `X_Forwarded_Proto` for
    // `HTTP_X_FORWARDED_PROTO`, beside Traefik's).
    for name in [
        "X-Original-URL",
        "X-Original-URI",
        "X-Rewrite-URL",
        "Forwarded",
        "X-Forwarded-Uri",
        "x_forwarded_uri",
        "X_Forwarded_Host",
        "X-Forwarded_Host",
        "X.Forwarded-Host",
        "X_Forwarded_Proto",
        "X-Forwarded_Port",
        "X.Forwarded.Prefix",
        "X_Forwarded_For",
    ] {
        assert!(regex.is_match(name), "{name} passes");
    }
    for kept in [
        "X-Auth-Email",
        "Cookie",
        "Authorization",
        "Accept",
        "X-Forwarded-For",
        "X-Forwarded-Proto",
        "X-Forwarded-Host",
        "X-Forwarded-Port",
        "X-Forwarded-Server",
        "X-Forwarded-Prefix",
        "X-Real-Ip",
        "X-Requested-With",
        "Remoteaddr",
        "X-Request-Id",
    ] {
        assert!(!regex.is_match(kept), "{kept} is cleared");
    }
}
