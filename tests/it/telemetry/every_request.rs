//! Every request on the public listener has its span, whatever answers it (the login flow,
//! Envoy's `/envoy/`, the token service, a page), and so has every Envoy gRPC Check: each with
//! its role, route, decision and status, never a token, a secret or a query.

use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

use super::{CLIENT_SPAN, CLIENT_TRACE, client_traceparent};
use crate::envoy::{check_request, client};
use crate::support::otlp::{Collector, attribute, hex, texts};
use crate::support::{Gateway, TestIdp};

const CHECK: &str = "envoy.service.auth.v3.Authorization/Check";

/// The one span named `name` among `spans`.
fn named<'a>(spans: &'a [(String, Span)], name: &str) -> &'a Span {
    let found: Vec<&Span> = spans
        .iter()
        .map(|(_, span)| span)
        .filter(|span| span.name == name)
        .collect();
    assert_eq!(found.len(), 1, "one span named {name}: {spans:#?}");
    found[0]
}

/// Asserts a span's role, route, result and status (`None`: the attribute is absent).
fn assert_span(span: &Span, role: &str, route: Option<&str>, result: Option<&str>, status: u16) {
    assert_eq!(span.kind, SpanKind::Server as i32, "{span:#?}");
    assert_eq!(
        attribute(span, "tollgate.role").as_deref(),
        Some(role),
        "{span:#?}"
    );
    assert_eq!(attribute(span, "http.route").as_deref(), route, "{span:#?}");
    assert_eq!(
        attribute(span, "tollgate.result").as_deref(),
        result,
        "{span:#?}"
    );
    assert_eq!(
        attribute(span, "http.response.status_code"),
        Some(status.to_string()),
        "{span:#?}"
    );
}

#[tokio::test]
async fn every_public_request_gets_one_span_with_its_role_route_and_decision() {
    let idp = TestIdp::start().await;
    let collector = Collector::start().await;
    let secret_hash = tollgate::hash_password("machine-secret").unwrap();
    let (gateway, _) = Gateway::start_at_issuer(|issuer| {
        format!(
            "{}\n{}\n[token_service]\nissuer = \"{issuer}\"\n[[token_service.client]]\n\
             client_id = \"machine\"\nclient_secret_hash = \"{secret_hash}\"\n\
             grants = [\"client_credentials\"]\n",
            Gateway::forward_auth_config(&idp, "", ""),
            collector.section(),
        )
    })
    .await;
    let token = idp.access_token().sign();

    let signin = gateway.get("/signin?rd=/after").send().await.unwrap();
    assert_eq!(signin.status(), 302);
    let callback = gateway
        .get("/callback?code=CODE-SECRET&state=nope")
        .send()
        .await
        .unwrap();
    assert_eq!(callback.status(), 400);
    let signout = gateway.get("/signout?rd=/bye").send().await.unwrap();
    assert_eq!(signout.status(), 302);
    let envoy = gateway
        .get("/envoy/reports?code=QUERY-SECRET")
        .bearer_auth(&token)
        .header("x-tollgate-rules", "inject-claim=email,X-Email")
        .header("traceparent", client_traceparent())
        .send()
        .await
        .unwrap();
    assert_eq!(envoy.status(), 200);
    let refused_client = gateway
        .post("/token")
        .basic_auth("machine", Some("not-the-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused_client.status(), 401);
    let jwks = gateway.get("/jwks").send().await.unwrap();
    assert_eq!(jwks.status(), 200);
    let ping = gateway.get("/ping").send().await.unwrap();
    assert_eq!(ping.status(), 200);
    let nowhere = gateway.get("/nowhere").send().await.unwrap();
    assert_eq!(nowhere.status(), 404);
    // A method of the client's own making names no span: each would be a name of its own.
    let invented = reqwest::Method::from_bytes(b"X0001").unwrap();
    for path in ["/nowhere", "/ping"] {
        let answer = reqwest::Client::new()
            .request(invented.clone(), gateway.url(path))
            .send()
            .await
            .unwrap();
        assert!(
            answer.status().is_client_error(),
            "{path}: {}",
            answer.status()
        );
    }
    gateway.stop().await;

    let spans = collector.spans();
    assert_eq!(spans.len(), 10, "one span per request: {spans:#?}");
    for name in ["HTTP", "HTTP /ping"] {
        let span = named(&spans, name);
        assert_eq!(
            attribute(span, "http.request.method").as_deref(),
            Some("_OTHER"),
            "{span:#?}"
        );
    }
    assert_span(
        named(&spans, "GET /signin"),
        "signin",
        Some("/signin"),
        Some("login_redirect"),
        302,
    );
    let callback = named(&spans, "GET /callback");
    assert_span(
        callback,
        "callback",
        Some("/callback"),
        Some("bad_request"),
        400,
    );
    assert!(
        attribute(callback, "tollgate.reason").is_some(),
        "{callback:#?}"
    );
    assert_span(
        named(&spans, "GET /signout"),
        "signout",
        Some("/signout"),
        Some("signed_out"),
        302,
    );
    let envoy = named(&spans, "GET /envoy/");
    assert_span(envoy, "forward_auth", Some("/envoy/"), Some("allow"), 200);
    assert_eq!(
        attribute(envoy, "tollgate.credential").as_deref(),
        Some("bearer")
    );
    assert_eq!(attribute(envoy, "url.path").as_deref(), Some("/reports"));
    // Loopback is a trusted proxy by default: the trace goes on.
    assert_eq!(hex(&envoy.trace_id), CLIENT_TRACE);
    assert_eq!(hex(&envoy.parent_span_id), CLIENT_SPAN);
    let token_span = named(&spans, "POST /token");
    assert_span(
        token_span,
        "token_service",
        Some("/token"),
        Some("invalid_client"),
        401,
    );
    assert!(
        attribute(token_span, "tollgate.reason").is_some(),
        "{token_span:#?}"
    );
    assert_span(
        named(&spans, "GET /jwks"),
        "token_service",
        Some("/jwks"),
        None,
        200,
    );
    assert_span(named(&spans, "GET /ping"), "ping", Some("/ping"), None, 200);
    // No endpoint, no route: the span is named by the method alone.
    assert_span(named(&spans, "GET"), "page", None, None, 404);
    for (service, span) in &spans {
        assert_eq!(service, "tollgate-test");
        for text in texts(span) {
            for secret in [
                token.as_str(),
                "eyJ",
                "QUERY-SECRET",
                "CODE-SECRET",
                "not-the-secret",
                "X0001",
            ] {
                assert!(!text.contains(secret), "{secret} in a span: {text}");
            }
        }
    }
}

#[tokio::test]
async fn every_envoy_grpc_check_gets_a_span_continuing_a_trusted_envoys_trace() {
    let idp = TestIdp::start().await;
    let collector = Collector::start().await;
    let gateway = Gateway::start(&format!(
        "{}\n{}",
        Gateway::forward_auth_config(&idp, "", "grpc_listen = \"127.0.0.1:0\""),
        collector.section()
    ))
    .await;
    let token = idp.access_token().sign();
    let mut envoy = client(&gateway).await;
    let authorization = format!("Bearer {token}");
    let mut allowed = tonic::Request::new(check_request(
        "/admin/x?code=QUERY-SECRET",
        &[("authorization", &authorization)],
        Some("inject-claim=email,X-Email"),
    ));
    // Envoy puts its trace context in the call's metadata.
    allowed
        .metadata_mut()
        .insert("traceparent", client_traceparent().parse().unwrap());
    let answer = envoy.check(allowed).await.unwrap().into_inner();
    assert!(matches!(
        answer.http_response,
        Some(HttpResponse::OkResponse(_))
    ));
    let answer = envoy
        .check(check_request("/admin/y", &[], None))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        answer.http_response,
        Some(HttpResponse::DeniedResponse(_))
    ));
    // A Check of a trace Envoy did not sample is not sampled here either: its decision comes
    // in its own metadata, never from a client.
    let mut unsampled = tonic::Request::new(check_request("/admin/z", &[], None));
    unsampled.metadata_mut().insert(
        "traceparent",
        format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-00")
            .parse()
            .unwrap(),
    );
    envoy.check(unsampled).await.unwrap();
    gateway.stop().await;

    let spans = collector.spans();
    assert_eq!(spans.len(), 2, "one span per sampled Check: {spans:#?}");
    for (_, span) in &spans {
        assert_eq!(span.name, CHECK);
        assert_eq!(attribute(span, "rpc.system").as_deref(), Some("grpc"));
        assert_eq!(attribute(span, "rpc.method").as_deref(), Some("Check"));
        assert!(
            texts(span)
                .iter()
                .all(|text| !text.contains(&token) && !text.contains("QUERY-SECRET"))
        );
    }
    let allowed = spans
        .iter()
        .map(|(_, span)| span)
        .find(|span| attribute(span, "tollgate.result").as_deref() == Some("allow"))
        .expect("the allowed Check's span");
    assert_span(allowed, "forward_auth", None, Some("allow"), 200);
    assert_eq!(attribute(allowed, "url.path").as_deref(), Some("/admin/x"));
    assert_eq!(
        attribute(allowed, "tollgate.credential").as_deref(),
        Some("bearer")
    );
    assert_eq!(hex(&allowed.trace_id), CLIENT_TRACE);
    assert_eq!(hex(&allowed.parent_span_id), CLIENT_SPAN);
    let refused = spans
        .iter()
        .map(|(_, span)| span)
        .find(|span| attribute(span, "tollgate.result").as_deref() == Some("unauthenticated"))
        .expect("the refused Check's span");
    // The status is the one Envoy gives the client.
    assert_span(refused, "forward_auth", None, Some("unauthenticated"), 401);
    assert!(
        refused.parent_span_id.is_empty(),
        "no trace context was sent"
    );
}

#[tokio::test]
async fn a_check_from_an_untrusted_peer_is_refused_and_starts_a_new_trace() {
    let idp = TestIdp::start().await;
    let collector = Collector::start().await;
    // Loopback, where the test's Envoy is, is not a trusted proxy here.
    let gateway = Gateway::start(&format!(
        "{}\n{}",
        Gateway::forward_auth_config(
            &idp,
            "trusted_proxies = [\"10.0.0.0/8\"]",
            "grpc_listen = \"127.0.0.1:0\""
        ),
        collector.section()
    ))
    .await;
    let token = idp.access_token().sign();
    let authorization = format!("Bearer {token}");
    let mut request = tonic::Request::new(check_request(
        "/admin/x",
        &[("authorization", &authorization)],
        None,
    ));
    request
        .metadata_mut()
        .insert("traceparent", client_traceparent().parse().unwrap());
    let refused = client(&gateway)
        .await
        .check(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        refused.status.as_ref().unwrap().code,
        7,
        "PERMISSION_DENIED"
    );
    let denied = crate::envoy::denied(&refused, 403);
    assert!(denied.body.contains("trusted_proxies"), "{denied:?}");
    let metrics = gateway.metrics().await;
    assert!(
        metrics.contains("tollgate_requests_total{role=\"forward_auth\",result=\"forbidden\"} 1"),
        "{metrics}"
    );
    gateway.stop().await;

    let spans = collector.spans();
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let span = &spans[0].1;
    assert_span(span, "forward_auth", None, Some("forbidden"), 403);
    assert_ne!(
        hex(&span.trace_id),
        CLIENT_TRACE,
        "an untrusted peer's trace is not continued"
    );
    assert!(span.parent_span_id.is_empty());
}
