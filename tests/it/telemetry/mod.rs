//! `[telemetry]` (SPEC §3): spans exported over OTLP/HTTP to a collector in the test, decoded
//! with the published OpenTelemetry protobuf messages; W3C `traceparent` trust and propagation
//! to upstreams; nothing exported or added when the section is absent.

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::Value;

use crate::support::gateway::SESSION_SECRET;
use crate::support::idp::{AUDIENCE, CLIENT_ID, CLIENT_SECRET};
use crate::support::otlp::{Collector, attribute, hex, texts};
use crate::support::{Gateway, TestIdp, TestUpstream, free_port};

/// A client's trace: what a trusted proxy in front of Tollgate would send.
pub const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
pub const CLIENT_SPAN: &str = "00f067aa0ba902b7";

pub fn client_traceparent() -> String {
    format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
}

fn telemetry_section(collector: &Collector) -> String {
    collector.section()
}

/// Tollgate with a bearer-token route to `upstream`, `server_extra` in `[server]` and `extra`
/// sections at the end.
fn proxy_config(idp: &TestIdp, upstream: &TestUpstream, server_extra: &str, extra: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
{server_extra}

[session]
secrets = ["{SESSION_SECRET}"]

[[provider]]
name = "corp"
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
audiences = ["{AUDIENCE}"]

[[route]]
path_prefix = "/app"
upstream = "{upstream}"
provider = "corp"
accept_bearer = true
on_unauthenticated = "deny"

{extra}
"#,
        issuer = idp.issuer(),
        upstream = upstream.url(),
    )
}

/// The `traceparent` values the upstream received (from its echo).
fn upstream_traceparents(echo: &Value) -> Vec<String> {
    echo["headers"]["traceparent"]
        .as_array()
        .map(|values| {
            values
                .iter()
                .map(|value| value.as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn every_auth_and_validate_request_exports_one_span_with_its_decision_and_never_a_token() {
    let idp = TestIdp::start().await;
    let collector = Collector::start().await;
    let gateway = Gateway::start(&format!(
        "{}\n{}",
        Gateway::forward_auth_config(&idp, "", ""),
        telemetry_section(&collector)
    ))
    .await;
    let token = idp.access_token().sign();
    let expired = idp.access_token().expires_in(-120).sign();

    let allowed = gateway
        .get("/auth")
        .bearer_auth(&token)
        .header(
            "x-original-url",
            // After the query: a `#` in the path itself has no single reading (400).
            format!("https://app.example.com/reports?view=1#access_token={token}"),
        )
        .header("traceparent", client_traceparent())
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    let refused = gateway
        .get("/auth")
        .bearer_auth(&expired)
        .header(
            "x-original-url",
            "https://app.example.com/reports?code=QUERY-SECRET",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let anonymous = gateway.get("/auth").send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let malformed = gateway
        .get("/auth?inject-claim=a,b,c")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    let validated = gateway
        .get("/validate")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(validated.status(), 200);
    // Shutdown exports what is queued.
    gateway.stop().await;

    let mut spans = collector.spans();
    assert_eq!(spans.len(), 5, "one span per request: {spans:#?}");
    let validate = spans
        .iter()
        .position(|(_, span)| span.name == "GET /validate")
        .unwrap();
    let (_, validate) = spans.remove(validate);
    assert_eq!(
        attribute(&validate, "tollgate.role").as_deref(),
        Some("validate")
    );
    assert_eq!(
        attribute(&validate, "tollgate.result").as_deref(),
        Some("allow")
    );
    assert_eq!(
        attribute(&validate, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert!(texts(&validate).iter().all(|text| !text.contains(&token)));
    for (service, span) in &spans {
        assert_eq!(service, "tollgate-test");
        assert_eq!(span.name, "GET /auth");
        assert_eq!(span.kind, SpanKind::Server as i32);
        assert_eq!(
            attribute(span, "tollgate.role").as_deref(),
            Some("forward_auth")
        );
        assert_eq!(attribute(span, "http.route").as_deref(), Some("/auth"));
        for text in texts(span) {
            assert!(
                !text.contains(&token) && !text.contains(&expired) && !text.contains("eyJ"),
                "a token in a span: {text}"
            );
            assert!(!text.contains("QUERY-SECRET"), "a query in a span: {text}");
        }
    }
    let results: Vec<(Option<String>, Option<String>)> = spans
        .iter()
        .map(|(_, span)| {
            (
                attribute(span, "tollgate.result"),
                attribute(span, "http.response.status_code"),
            )
        })
        .collect();
    for expected in [
        ("allow", "200"),
        ("unauthenticated", "401"),
        ("bad_request", "400"),
    ] {
        assert!(
            results.contains(&(Some(expected.0.to_owned()), Some(expected.1.to_owned()))),
            "{expected:?} in {results:?}"
        );
    }
    let (_, allowed_span) = spans
        .iter()
        .find(|(_, span)| attribute(span, "tollgate.result").as_deref() == Some("allow"))
        .unwrap();
    assert_eq!(
        attribute(allowed_span, "tollgate.credential").as_deref(),
        Some("bearer")
    );
    assert_eq!(
        attribute(allowed_span, "url.path").as_deref(),
        Some("/reports")
    );
    // The test client is on loopback, a trusted proxy by default: its trace is continued.
    assert_eq!(hex(&allowed_span.trace_id), CLIENT_TRACE);
    assert_eq!(hex(&allowed_span.parent_span_id), CLIENT_SPAN);
    // The refusals say why, as the log line does.
    assert!(spans.iter().all(|(_, span)| {
        attribute(span, "tollgate.result").as_deref() == Some("allow")
            || attribute(span, "tollgate.reason").is_some()
    }));
}

#[tokio::test]
async fn a_proxied_request_continues_a_trusted_trace_and_sends_its_span_upstream() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let collector = Collector::start().await;
    let gateway = Gateway::start(&proxy_config(
        &idp,
        &upstream,
        "",
        &telemetry_section(&collector),
    ))
    .await;
    let token = idp.access_token().sign();
    let response = gateway
        .get("/app/page")
        .bearer_auth(&token)
        .header("traceparent", client_traceparent())
        .header("tracestate", "vendor=client")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echo: Value = response.json().await.unwrap();
    gateway.stop().await;

    let sent = upstream_traceparents(&echo);
    assert_eq!(sent.len(), 1, "{sent:?}");
    let parts: Vec<&str> = sent[0].split('-').collect();
    assert_eq!(parts.len(), 4, "{sent:?}");
    assert_eq!(parts[0], "00");
    assert_eq!(parts[1], CLIENT_TRACE, "the trusted proxy's trace goes on");
    assert_ne!(
        parts[2], CLIENT_SPAN,
        "the upstream's parent is Tollgate's span"
    );
    assert_eq!(parts[3], "01");
    // A trusted proxy's `tracestate` belongs to the trace and goes on with it.
    assert_eq!(
        echo["headers"]["tracestate"],
        serde_json::json!(["vendor=client"])
    );

    let spans = collector.spans();
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let span = &spans[0].1;
    assert_eq!(span.name, "GET /app");
    assert_eq!(attribute(span, "tollgate.role").as_deref(), Some("proxy"));
    assert_eq!(attribute(span, "http.route").as_deref(), Some("/app"));
    assert_eq!(attribute(span, "tollgate.result").as_deref(), Some("allow"));
    assert_eq!(
        attribute(span, "tollgate.credential").as_deref(),
        Some("bearer")
    );
    assert_eq!(
        attribute(span, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(hex(&span.trace_id), CLIENT_TRACE);
    assert_eq!(hex(&span.parent_span_id), CLIENT_SPAN);
    assert_eq!(hex(&span.span_id), parts[2]);
    assert!(texts(span).iter().all(|text| !text.contains(&token)));
}

/// An ingress that passes its clients' headers on unread is trusted, so a client's
/// `traceparent` flagged not sampled (`-00`) was followed: its requests left no span in
/// Tollgate, nor (the flag sent on) in the upstream. Every request is sampled now.
#[tokio::test]
async fn a_trusted_traceparent_that_says_not_sampled_hides_no_request() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let collector = Collector::start().await;
    let gateway = Gateway::start(&proxy_config(
        &idp,
        &upstream,
        "",
        &telemetry_section(&collector),
    ))
    .await;
    let response = gateway
        .get("/app/page")
        .bearer_auth(idp.access_token().sign())
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-00"))
        .header("baggage", "tenant=acme")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echo: Value = response.json().await.unwrap();
    gateway.stop().await;
    let sent = upstream_traceparents(&echo);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sent[0].ends_with("-01"), "sampled upstream too: {sent:?}");
    // A trusted peer's baggage goes on with its trace.
    assert_eq!(
        echo["headers"]["baggage"],
        serde_json::json!(["tenant=acme"])
    );
    let spans = collector.spans();
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert_eq!(hex(&spans[0].1.trace_id), CLIENT_TRACE);
}

/// Trace context, a forced sampling and baggage in the formats of B3, Jaeger, OpenTracing and
/// Datadog, as a client may send them.
fn other_trace_formats() -> reqwest::header::HeaderMap {
    [
        ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d"),
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("x-b3-sampled", "1"),
        ("x-b3-flags", "1"),
        (
            "uber-trace-id",
            "80f198ee56343ba864fe8b2a57d3eff7:e457b5a2e4d86bd1:0:1",
        ),
        ("jaeger-debug-id", "forced"),
        ("uberctx-tenant", "other"),
        ("ot-baggage-user", "admin"),
        ("x-datadog-sampling-priority", "2"),
        ("x-envoy-force-trace", "true"),
        ("x-client-trace-id", "chosen"),
        ("sw8", "1-chosen"),
        (
            "x-cloud-trace-context",
            "105445aa7843bc8bf206b12000100000/1;o=1",
        ),
        (
            "x-amzn-trace-id",
            "Root=1-5759e988-bd862e3fe1be46a994272793",
        ),
        ("grpc-trace-bin", "AAA"),
    ]
    .into_iter()
    .map(|(name, value)| {
        (
            reqwest::header::HeaderName::from_static(name),
            reqwest::header::HeaderValue::from_static(value),
        )
    })
    .collect()
}

#[tokio::test]
async fn an_untrusted_clients_traceparent_is_replaced_by_a_new_trace() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let collector = Collector::start().await;
    // Loopback, where the test client is, is not a trusted proxy here.
    let gateway = Gateway::start(&proxy_config(
        &idp,
        &upstream,
        "trusted_proxies = [\"10.0.0.0/8\"]",
        &telemetry_section(&collector),
    ))
    .await;
    let response = gateway
        .get("/app/page")
        .bearer_auth(idp.access_token().sign())
        .header("traceparent", client_traceparent())
        .header("tracestate", "vendor=client")
        .header("baggage", "user.id=admin")
        .headers(other_trace_formats())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echo: Value = response.json().await.unwrap();
    // A refused request gets its span too.
    let refused = gateway
        .get("/app/page")
        .header("traceparent", client_traceparent())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    gateway.stop().await;

    let sent = upstream_traceparents(&echo);
    assert_eq!(
        sent.len(),
        1,
        "the client's traceparent is replaced: {sent:?}"
    );
    assert!(!sent[0].contains(CLIENT_TRACE), "{sent:?}");
    assert!(echo["headers"]["tracestate"].is_null(), "{echo}");
    // Nor does its baggage reach the upstream as if it came with Tollgate's trace, nor its
    // trace context or baggage in another tracer's format.
    assert!(echo["headers"]["baggage"].is_null(), "{echo}");
    for (name, _) in &other_trace_formats() {
        assert!(echo["headers"][name.as_str()].is_null(), "{name}: {echo}");
    }

    let spans = collector.spans();
    assert_eq!(spans.len(), 2, "{spans:#?}");
    for (_, span) in &spans {
        assert_ne!(hex(&span.trace_id), CLIENT_TRACE, "a new trace");
        assert!(span.parent_span_id.is_empty(), "a root span");
    }
    let forwarded = spans
        .iter()
        .map(|(_, span)| span)
        .find(|span| attribute(span, "tollgate.result").as_deref() == Some("allow"))
        .unwrap();
    assert_eq!(
        sent[0],
        format!(
            "00-{}-{}-01",
            hex(&forwarded.trace_id),
            hex(&forwarded.span_id)
        )
    );
    let refused = spans
        .iter()
        .map(|(_, span)| span)
        .find(|span| attribute(span, "tollgate.result").as_deref() == Some("unauthenticated"))
        .unwrap();
    assert_eq!(
        attribute(refused, "http.response.status_code").as_deref(),
        Some("401")
    );
}

#[tokio::test]
async fn without_telemetry_nothing_is_exported_and_a_clients_traceparent_passes_unchanged() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let collector = Collector::start().await;
    let gateway = Gateway::start(&proxy_config(&idp, &upstream, "", "")).await;
    let token = idp.access_token().sign();
    let plain: Value = gateway
        .get("/app/page")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let traced: Value = gateway
        .get("/app/page")
        .bearer_auth(&token)
        .header("traceparent", client_traceparent())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    gateway.stop().await;

    assert!(upstream_traceparents(&plain).is_empty(), "{plain}");
    assert_eq!(upstream_traceparents(&traced), [client_traceparent()]);
    assert!(collector.spans().is_empty());
}

#[tokio::test]
async fn an_unreachable_collector_fails_no_request_and_does_not_stop_shutdown() {
    let idp = TestIdp::start().await;
    // Nothing listens on this port.
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let gateway = Gateway::start(&format!(
        "{}\n[telemetry]\notlp_endpoint = \"{endpoint}\"\n",
        Gateway::forward_auth_config(&idp, "", "")
    ))
    .await;
    let token = idp.access_token().sign();
    let mut allowed = 0;
    for _ in 0..50 {
        let response = gateway
            .get("/auth")
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 50);
    gateway.stop().await;
}

mod dropped;
mod every_request;

#[tokio::test]
async fn a_request_whose_client_goes_away_still_exports_its_span_without_a_status() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let collector = Collector::start().await;
    let gateway = Gateway::start(
        &proxy_config(&idp, &upstream, "", &telemetry_section(&collector))
            .replace("path_prefix = \"/app\"", "path_prefix = \"/slow\""),
    )
    .await;
    // The upstream's /slow answers after 5 s; the client gives up long before.
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(300))
        .build()
        .unwrap();
    let gone = client
        .get(gateway.url("/slow"))
        .bearer_auth(idp.access_token().sign())
        .send()
        .await;
    assert!(gone.is_err(), "the client timed out");
    gateway.stop().await;

    let spans = collector.spans();
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let span = &spans[0].1;
    assert_eq!(span.name, "GET /slow");
    assert_eq!(attribute(span, "http.route").as_deref(), Some("/slow"));
    assert_eq!(attribute(span, "tollgate.role").as_deref(), Some("proxy"));
    assert_eq!(
        attribute(span, "tollgate.credential").as_deref(),
        Some("bearer")
    );
    assert_eq!(
        attribute(span, "http.response.status_code"),
        None,
        "{span:#?}"
    );
}
