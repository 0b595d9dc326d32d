//! The README's Istio recipe: the `tollgate-admins` provider of its `meshConfig` block, read
//! from README.md as written, turned into the `ext_authz` filter Istio generates for an
//! `envoyExtAuthzHttp` provider, and run in a real Envoy in front of a test application. Istio
//! maps `pathPrefix` to `http_service.path_prefix`, `includeRequestHeadersInCheck` to
//! `allowed_headers`, `includeAdditionalHeadersInCheck` to
//! `authorization_request.headers_to_add`, `headersToUpstreamOnAllow` to
//! `authorization_response.allowed_upstream_headers` and `headersToDownstreamOnDeny` to
//! `allowed_client_headers` (every name matched ignoring case), and the `CUSTOM` policy's
//! `notPaths` leave `/signin`, `/callback`, `/signout` unchecked. The rules reach Tollgate in
//! `X-Tollgate-Rules` from Envoy, never from the client. Istio's gRPC provider sends no rules:
//! its Check, as Istio's Envoy builds it, admits any signed-in caller, and is answered by the
//! connecting peer's trust, never by the client address it reports.

use envoy_types::pb::envoy::config::core::v3::address;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::Peer;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use serde_json::json;

use crate::envoy::{check_request, client};
use crate::envoy_proxy::{get, indent, listener, seen, static_cluster, upstream_saw};
use crate::support::envoy::{Envoy, free_port};
use crate::support::{Gateway, TestIdp, TestUpstream};

/// The README's `tollgate-admins` provider: its `envoyExtAuthzHttp` keys as written.
struct Provider {
    path_prefix: String,
    request_headers: Vec<String>,
    additional_headers: Vec<(String, String)>,
    upstream_on_allow: Vec<String>,
    downstream_on_deny: Vec<String>,
}

/// `[a, b]` → `["a", "b"]`.
fn flow_list(value: &str) -> Vec<String> {
    value
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|item| item.trim().to_owned())
        .filter(|item| !item.is_empty())
        .collect()
}

fn readme_provider() -> Provider {
    let block = crate::support::readme_block("**Istio.**", "yaml");
    let admins = &block[block
        .find("- name: tollgate-admins")
        .expect("the HTTP provider")..];
    let admins = &admins[..admins.find("\n---").unwrap_or(admins.len())];
    // A key's value: the rest of its line, and for a flow list the lines it runs on to its `]`.
    let value = |key: &str| {
        let at = admins
            .find(&format!(" {key}: "))
            .unwrap_or_else(|| panic!("`{key}` in the README's tollgate-admins provider"));
        let rest = &admins[at + key.len() + 3..];
        let end = if rest.starts_with('[') {
            rest.find(']').expect("a flow list ends") + 1
        } else {
            rest.find('\n').unwrap_or(rest.len())
        };
        rest[..end].to_owned()
    };
    // `{ X-Tollgate-Rules: "groups=admin&…" }`
    let additional = value("includeAdditionalHeadersInCheck");
    let (name, rules) = additional
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .split_once(':')
        .unwrap();
    Provider {
        path_prefix: value("pathPrefix"),
        request_headers: flow_list(&value("includeRequestHeadersInCheck")),
        additional_headers: vec![(
            name.trim().to_owned(),
            rules.trim().trim_matches('"').to_owned(),
        )],
        upstream_on_allow: flow_list(&value("headersToUpstreamOnAllow")),
        downstream_on_deny: flow_list(&value("headersToDownstreamOnDeny")),
    }
}

/// Istio's `ListStringMatcher` for a list of header names: `*abc` is a suffix, `abc*` a
/// prefix, anything else exact, each ignoring case (Istio's `includeRequestHeadersInCheck`).
fn matchers(names: &[String]) -> String {
    let patterns: Vec<String> = names
        .iter()
        .map(|name| {
            let name = name.trim_matches('"');
            if let Some(suffix) = name.strip_prefix('*') {
                format!("{{ suffix: \"{suffix}\", ignore_case: true }}")
            } else if let Some(prefix) = name.strip_suffix('*') {
                format!("{{ prefix: \"{prefix}\", ignore_case: true }}")
            } else {
                format!("{{ exact: \"{name}\", ignore_case: true }}")
            }
        })
        .collect();
    format!("{{ patterns: [{}] }}", patterns.join(", "))
}

/// The filter Istio generates for `provider` (failure closed, its default 403 on error).
fn istio_filter(provider: &Provider) -> String {
    let headers_to_add: Vec<String> = provider
        .additional_headers
        .iter()
        .map(|(key, value)| format!("{{ key: \"{key}\", value: \"{value}\" }}"))
        .collect();
    format!(
        "- name: envoy.filters.http.ext_authz\n  typed_config:\n    \
         \"@type\": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz\n    \
         transport_api_version: V3\n    failure_mode_allow: false\n    \
         status_on_error: {{ code: Forbidden }}\n    \
         http_service:\n      \
           server_uri: {{ uri: \"http://tollgate.auth.svc.cluster.local\", cluster: tollgate_http, timeout: 2s }}\n      \
           path_prefix: {}\n      \
           authorization_request:\n        headers_to_add: [{}]\n      \
           authorization_response:\n        allowed_upstream_headers: {}\n        allowed_client_headers: {}\n    \
         allowed_headers: {}\n",
        provider.path_prefix,
        headers_to_add.join(", "),
        matchers(&provider.upstream_on_allow),
        matchers(&provider.downstream_on_deny),
        matchers(&provider.request_headers),
    )
}

fn bootstrap(port: u16, gateway: &Gateway, upstream: &TestUpstream) -> String {
    let manager = format!(
        "http_filters:\n{}\
         - name: envoy.filters.http.router\n  \
           typed_config: {{ \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}\n\
         route_config:\n  virtual_hosts:\n  - name: web\n    domains: [\"app.example.com\"]\n    routes:\n    \
         - match: {{ safe_regex: {{ regex: \"/(signin|callback|signout)\" }} }}\n      \
           route: {{ cluster: tollgate_http }}\n      typed_per_filter_config:\n        \
             envoy.filters.http.ext_authz:\n          \
               \"@type\": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute\n          \
               disabled: true\n    \
         - match: {{ prefix: \"/\" }}\n      route: {{ cluster: web }}\n",
        istio_filter(&readme_provider())
    );
    format!(
        "static_resources:\n  listeners:\n{}  clusters:\n{}{}",
        indent(&listener("sidecar", port, &manager), 2),
        indent(
            &static_cluster("tollgate_http", gateway.app.public_addr.port()),
            2
        ),
        indent(&static_cluster("web", upstream.addr.port()), 2),
    )
}

#[tokio::test]
async fn istio_http_provider_in_envoy_carries_the_rules_of_the_readme() {
    let provider = readme_provider();
    assert_eq!(provider.path_prefix, "/envoy");
    assert_eq!(provider.additional_headers[0].0, "X-Tollgate-Rules");
    let idp = TestIdp::start().await;
    let gateway = Gateway::start(&Gateway::forward_auth_config(
        &idp,
        "allowed_redirect_domains = [\"app.example.com\"]",
        "unauthenticated = \"redirect\"",
    ))
    .await;
    let upstream = TestUpstream::start().await;
    let port = free_port();
    let envoy = Envoy::start(&bootstrap(port, &gateway, &upstream), &[port]).await;

    // An admin: allowed, and the application gets Tollgate's X-Email, not the client's.
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
    // Its other spellings, which an application reading headers the CGI way (PHP: `_` and
    // `.` alike) takes for X-Email, reach Tollgate through `*email` and never the application.
    let spelt = get(
        port,
        "/admin/users",
        &[
            ("authorization", &admin),
            ("x_email", "mallory@example.com"),
            ("X.Email", "mallory@example.com"),
        ],
    )
    .await;
    let echo = upstream_saw(spelt, &envoy).await;
    assert!(!echo.to_string().contains("mallory"), "{echo}");
    // Nor the identity headers of the gateways Tollgate replaces.
    let others = [
        ("x-forwarded-user", "mallory"),
        ("x-auth-request-user", "mallory"),
        ("remote-user", "mallory"),
        ("oidc_claim_email", "mallory@example.com"),
        ("x-userinfo", "mallory"),
        ("x_forwarded_user", "mallory"),
        ("remote_user", "mallory"),
        ("x.authentik.username", "mallory"),
        ("x-forwarded_user", "mallory"),
        ("x-auth-request_email", "mallory@example.com"),
        ("x-forwarded_groups", "mallory"),
        ("x-forwarded-preferred_username", "mallory"),
        ("x-forwarded-access_token", "mallory"),
        ("x-credential_identifier", "mallory"),
        ("x-anonymous_consumer", "mallory"),
        ("x-original.url", "/mallory"),
        ("x-forwarded_host", "mallory.example.com"),
        ("cf-access-authenticated-user-email", "mallory@example.com"),
    ];
    let mut headers = vec![("authorization", admin.as_str())];
    headers.extend(others);
    let echo = upstream_saw(get(port, "/admin/users", &headers).await, &envoy).await;
    for (name, _) in others {
        assert_eq!(seen(&echo, name), None, "{name}: {echo}");
    }
    assert!(!echo.to_string().contains("mallory"), "{echo}");
    // Not an admin: the rules Envoy sent refuse it, whatever rules the client sends.
    let dev = format!(
        "Bearer {}",
        idp.access_token().claim("groups", json!(["dev"])).sign()
    );
    for forged in [None, Some(""), Some("inject-claim=email,X-Email")] {
        let mut headers = vec![("authorization", dev.as_str())];
        if let Some(rules) = forged {
            headers.push(("x-tollgate-rules", rules));
        }
        let refused = get(port, "/admin/users", &headers).await;
        assert_eq!(refused.status(), 403, "{forged:?}\n{}", envoy.log());
        assert!(refused.text().await.unwrap().contains("groups"));
    }
    // No credential: a browser is sent to sign in (Location is among headersToDownstreamOnDeny).
    let browser = get(port, "/admin/users", &[("accept", "text/html")]).await;
    assert_eq!(browser.status(), 302, "{}", envoy.log());
    assert_eq!(
        browser.headers()["location"],
        "http://app.example.com/signin?rd=http%3A%2F%2Fapp.example.com%2Fadmin%2Fusers"
    );
    // The sign-in path is not checked (notPaths) and reaches Tollgate.
    let signin = get(port, "/signin?rd=/", &[]).await;
    assert_eq!(signin.status(), 302);
    assert!(
        signin.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with(idp.issuer())
    );
    gateway.stop().await;
}

/// A Check as Istio's `envoyExtAuthzGrpc` provider (and Gateway API's `ExternalAuth`) sends it:
/// no `context_extensions`, the downstream client in `attributes.source` with its address and
/// the gateway's SPIFFE principal.
fn istio_grpc_check(headers: &[(&str, &str)]) -> CheckRequest {
    let mut check = check_request("/admin/users", headers, None);
    let attributes = check.attributes.as_mut().unwrap();
    assert!(attributes.context_extensions.is_empty());
    attributes.source = Some(Peer {
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: "203.0.113.7".to_owned(),
                port_specifier: Some(PortSpecifier::PortValue(51234)),
                ..SocketAddress::default()
            })),
        }),
        principal: "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway".to_owned(),
        ..Peer::default()
    });
    check
}

#[tokio::test]
async fn istio_grpc_provider_admits_any_signed_in_caller_and_trust_is_the_peers_not_the_source_address()
 {
    let idp = TestIdp::start().await;
    let gateway = Gateway::start(&Gateway::forward_auth_config(
        &idp,
        "",
        "grpc_listen = \"127.0.0.1:0\"",
    ))
    .await;
    let dev = format!(
        "Bearer {}",
        idp.access_token().claim("groups", json!(["dev"])).sign()
    );
    // Without rules any valid credential passes, and nothing is injected.
    let answer = client(&gateway)
        .await
        .check(istio_grpc_check(&[
            ("authorization", &dev),
            ("x-email", "mallory@example.com"),
        ]))
        .await
        .unwrap()
        .into_inner();
    let Some(HttpResponse::OkResponse(ok)) = answer.http_response else {
        panic!("allowed: {answer:?}");
    };
    // Nothing injected, so nothing of the rules' to remove: only what every allowed answer
    // removes (another path or host a client may claim).
    assert!(
        ok.headers.is_empty()
            && ok
                .headers_to_remove
                .iter()
                .all(|name| crate::envoy::OTHER_READINGS.contains(&name.as_str())),
        "{ok:?}"
    );
    // Without a credential: 401.
    let answer = client(&gateway)
        .await
        .check(istio_grpc_check(&[]))
        .await
        .unwrap()
        .into_inner();
    let Some(HttpResponse::DeniedResponse(denied)) = answer.http_response else {
        panic!("refused: {answer:?}");
    };
    assert_eq!(denied.status.unwrap().code, 401);
    gateway.stop().await;

    // The client's address in `attributes.source` is trusted here, the connecting peer
    // (loopback) is not: the Check is refused.
    let gateway = Gateway::start(&Gateway::forward_auth_config(
        &idp,
        "trusted_proxies = [\"203.0.113.0/24\"]",
        "grpc_listen = \"127.0.0.1:0\"",
    ))
    .await;
    let refused = client(&gateway)
        .await
        .check(istio_grpc_check(&[("authorization", &dev)]))
        .await
        .unwrap()
        .into_inner();
    // An answer, never a failed RPC, which `failure_mode_allow: true` would let through.
    assert_eq!(
        refused.status.as_ref().unwrap().code,
        7,
        "PERMISSION_DENIED"
    );
    crate::envoy::denied(&refused, 403);
    gateway.stop().await;
}
