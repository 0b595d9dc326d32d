//! OpenTelemetry tracing (SPEC §3 `[telemetry]`): one server span per request on the public
//! listener and per Envoy Check, exported over OTLP/HTTP (protobuf) by the SDK's batch span
//! processor, which runs on its own thread, so a request only hands its finished span to a
//! bounded queue (full: the span is dropped and counted) and an unreachable collector never
//! slows or fails it. Export failures are logged once per outage; their spans are counted.
//!
//! The listener begins a request's span and serves the request [`within`] it: the span is the
//! request's task-local, so the surfaces record their decision into it where they count it
//! ([`with_current`], from `Metrics` and the decision log lines) without passing it around.
//! A W3C `traceparent` (and `tracestate`) is believed only from a trusted proxy; from anyone
//! else the request starts a new trace. The proxy sends its own span's `traceparent` upstream,
//! replacing whatever the client sent. Without `[telemetry]` no span is begun and no
//! task-local is set: the listeners hold an `Option<Arc<Telemetry>>` that is `None`, and
//! [`with_current`] finds nothing (one thread-local read).
//!
//! A span carries the role, the route, the decision, the reason and the status, never a
//! token, a cookie, a query string or a secret.

use std::borrow::Cow;
use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceFlags, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, IdGenerator, SdkTracer, SdkTracerProvider, SpanData,
    SpanExporter, SpanProcessor,
};
use opentelemetry_sdk::{Resource, trace::Span};
use prometheus_client::metrics::counter::Counter;

use crate::config::TelemetryConfig;

/// How long one export may take (the collector's answer included) before it counts as failed.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// The most ended spans waiting for export; one more is dropped (and counted).
const QUEUE: usize = 2048;

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
static BAGGAGE: HeaderName = HeaderName::from_static("baggage");

tokio::task_local! {
    /// The span of the request the current task serves (set by [`within`]).
    static CURRENT: RefCell<Option<RequestSpan>>;
}

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built (its HTTP client, its URL).
    #[error("building the OTLP/HTTP span exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// Where dropped spans are counted (`tollgate_trace_spans_dropped_total`, by reason): handed
/// in by the wiring, so tracing needs nothing of `metrics` (which records into spans).
#[derive(Clone, Debug)]
pub struct DroppedSpans {
    /// Spans refused because `QUEUE` spans were already waiting for export.
    pub queue_full: Counter,
    /// Spans of an export that failed.
    pub export_failed: Counter,
}

/// The tracer of a running Tollgate: built once from `[telemetry]`, shared by the listeners.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl Telemetry {
    /// Starts the exporter and its batch thread for the collector of `config`; spans dropped
    /// (a full queue, a failed export) are counted in `dropped`.
    ///
    /// # Errors
    /// When the exporter cannot be built.
    pub fn start(config: &TelemetryConfig, dropped: DroppedSpans) -> Result<Self, TelemetryError> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(config.traces_url.as_str())
            .with_timeout(EXPORT_TIMEOUT)
            .build()?;
        // The SDK drops a span when its queue is full and only logs it; `Admission` keeps its own
        // count of the spans between the end of a request and their export, refuses one past
        // `QUEUE` itself, and so counts every drop (the SDK's queue never fills).
        let waiting = Arc::new(AtomicUsize::new(0));
        let batch = BatchSpanProcessor::builder(ReportingExporter {
            inner: exporter,
            failing: AtomicBool::new(false),
            waiting: waiting.clone(),
            failed: dropped.export_failed,
        })
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(QUEUE)
                .build(),
        )
        .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(Admission {
                inner: batch,
                waiting,
                full: dropped.queue_full,
            })
            .with_resource(
                Resource::builder()
                    .with_service_name(config.service_name.clone())
                    .build(),
            )
            .with_id_generator(OsRandomIds)
            .build();
        let tracer = provider.tracer("tollgate");
        Ok(Self { provider, tracer })
    }

    /// Begins the server span of a request answered by `role`, named `name` (`<method>
    /// <route>` once a route is known). `headers`' trace context is the parent only when
    /// `trusted_peer`; its sampled flag is followed only when `follow_sampling` (an Envoy's
    /// gRPC metadata, its own): an ingress that passes its clients' headers on unread (nginx
    /// `auth_request`, Traefik or Caddy without tracing) is trusted too, and a client's `-00`
    /// would hide its requests.
    pub fn begin(
        &self,
        name: Cow<'static, str>,
        role: &'static str,
        method: &Method,
        headers: &HeaderMap,
        (trusted_peer, follow_sampling): (bool, bool),
    ) -> RequestSpan {
        let mut parent = if trusted_peer {
            opentelemetry::propagation::TextMapPropagator::extract(
                &TraceContextPropagator::new(),
                &opentelemetry_http::HeaderExtractor(headers),
            )
        } else {
            Context::new()
        };
        if !follow_sampling {
            use opentelemetry::trace::TraceContextExt as _;
            let remote = parent.span().span_context().clone();
            if remote.is_valid() && !remote.is_sampled() {
                parent = parent.with_remote_span_context(SpanContext::new(
                    remote.trace_id(),
                    remote.span_id(),
                    TraceFlags::SAMPLED,
                    true,
                    remote.trace_state().clone(),
                ));
            }
        }
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_attributes([KeyValue::new(
                "http.request.method",
                match known_method(method) {
                    "HTTP" => "_OTHER",
                    known => known,
                },
            )])
            .start_with_context(&self.tracer, &parent);
        RequestSpan {
            span,
            facts: Facts {
                role,
                ..Facts::default()
            },
            trusted_peer,
        }
    }

    /// Exports what is queued and stops the batch thread; spans ended later are dropped.
    pub fn shutdown(&self) {
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(%error, "telemetry: spans could not all be exported at shutdown");
        }
    }
}

/// Serves `future` with `span` as the task's current span, then ends the span with the status
/// `status` reads from the answer (or the one a surface recorded, see [`RequestSpan::status`]).
pub async fn within<T>(
    span: RequestSpan,
    future: impl Future<Output = T>,
    status: impl FnOnce(&T) -> StatusCode,
) -> T {
    CURRENT
        .scope(RefCell::new(Some(span)), async move {
            let answer = future.await;
            let span = CURRENT.with(|current| current.borrow_mut().take());
            if let Some(span) = span {
                let status = span.facts.status.unwrap_or_else(|| status(&answer));
                span.end(status);
            }
            answer
        })
        .await
}

/// Runs `record` on the span of the request this task serves, when there is one (tracing on,
/// inside [`within`]); otherwise does nothing.
pub fn with_current(record: impl FnOnce(&mut RequestSpan)) {
    let _ = CURRENT.try_with(|current| {
        if let Ok(mut current) = current.try_borrow_mut()
            && let Some(span) = current.as_mut()
        {
            record(span);
        }
    });
}

/// What a request's span says, gathered while it is served and written once at its end.
#[derive(Default)]
struct Facts {
    role: &'static str,
    route: Option<String>,
    route_host: Option<String>,
    path: Option<String>,
    result: Option<&'static str>,
    reason: Option<String>,
    credential: Option<&'static str>,
    status: Option<StatusCode>,
    attributes: Vec<KeyValue>,
}

/// One request's span, ended (and queued for export) by `end`.
pub struct RequestSpan {
    span: Span,
    facts: Facts,
    /// Whether the request's trace context (and its `baggage`) came from a trusted peer.
    trusted_peer: bool,
}

/// A request method as a span may name it: one of HTTP's nine, else `HTTP` (OpenTelemetry's
/// HTTP conventions; the attribute then says `_OTHER`). Any other text a client sends as its
/// method would be a span name and an attribute value of its own, without bound, in every
/// collector and backend that indexes them.
pub fn known_method(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ => "HTTP",
    }
}

impl RequestSpan {
    /// The route that serves the request: `http.route`, and the span's name
    /// (`<method> <route>`).
    pub fn route(&mut self, method: &Method, route: &str) {
        self.span
            .update_name(Cow::Owned(format!("{} {route}", known_method(method))));
        self.facts.route = Some(route.to_owned());
    }

    /// The host the route is for (`[[route]] host`).
    pub fn route_host(&mut self, host: &str) {
        self.facts.route_host = Some(host.to_owned());
    }

    /// The path the decision was about (the original request's, for `/auth` and Envoy),
    /// without its query, fragment and path parameters' values (each may carry a token:
    /// `?code=`, `#access_token=`, `;jsessionid=`), cut and escaped like the log line's.
    pub fn path(&mut self, path: &str) {
        let path = crate::logging::decision::loggable_path(path);
        self.facts.path = Some(crate::untrusted::bounded(&path));
    }

    /// The decision as it is counted: the role and result of `tollgate_requests_total` (the
    /// last count of a request wins).
    pub fn counted(&mut self, role: &'static str, result: &'static str) {
        self.facts.role = role;
        self.facts.result = Some(result);
    }

    /// Why the request was refused (the log line's reason).
    pub fn reason(&mut self, reason: &str) {
        let kept = crate::untrusted::cut(reason, crate::untrusted::REASON_MOST);
        self.facts.reason = Some(if kept.len() < reason.len() {
            format!("{kept}…")
        } else {
            kept.to_owned()
        });
    }

    /// Which credential identified the caller (`session`, `bearer`, `token_cookie`).
    pub fn credential(&mut self, credential: &'static str) {
        self.facts.credential = Some(credential);
    }

    /// The HTTP status the request was answered with, when the answer is not an HTTP response
    /// itself (an Envoy Check carries the status of the response Envoy gives).
    pub fn status(&mut self, status: StatusCode) {
        self.facts.status = Some(status);
    }

    /// Another attribute (fixed text only: never a value from the request).
    pub fn attribute(&mut self, key: &'static str, value: &'static str) {
        self.facts.attributes.push(KeyValue::new(key, value));
    }

    /// Replaces any `traceparent` and `tracestate` in `headers` (an upstream request's) with
    /// this span's context, so the upstream's spans are its children; removes an untrusted
    /// peer's `baggage` and its trace context in other formats.
    pub fn propagate(&self, headers: &mut HeaderMap) {
        headers.remove(&TRACEPARENT);
        headers.remove(&TRACESTATE);
        // W3C Baggage belongs to the trace it came with: an untrusted client's would reach the
        // upstream as if it came with Tollgate's trace (a trusted peer's is kept, with its trace
        // context or without).
        if !self.trusted_peer {
            headers.remove(&BAGGAGE);
            remove_other_trace_formats(headers);
        }
        let context = self.span.span_context();
        if !context.is_valid() {
            return;
        }
        // W3C Trace Context §3.2: version 00, trace id, parent (this span's) id, flags.
        let traceparent = format!(
            "00-{:032x}-{:016x}-{:02x}",
            context.trace_id(),
            context.span_id(),
            context.trace_flags().to_u8()
        );
        if let Ok(value) = HeaderValue::from_str(&traceparent) {
            headers.insert(TRACEPARENT.clone(), value);
        }
        let state = context.trace_state().header();
        if !state.is_empty()
            && let Ok(value) = HeaderValue::from_str(&state)
        {
            headers.insert(TRACESTATE.clone(), value);
        }
    }

    /// Ends the span with the response's status (`http.response.status_code`; a 5xx marks
    /// the span as an error) and queues it for export.
    pub fn end(mut self, status: StatusCode) {
        self.finish(Some(status));
    }

    /// Writes the facts and ends the span; `status` is `None` for a request that was never
    /// answered (its client went away).
    fn finish(&mut self, status: Option<StatusCode>) {
        let facts = std::mem::take(&mut self.facts);
        let mut attributes = facts.attributes;
        attributes.push(KeyValue::new("tollgate.role", facts.role));
        let texts = [
            ("http.route", facts.route),
            ("tollgate.route.host", facts.route_host),
            ("url.path", facts.path),
            ("tollgate.reason", facts.reason),
        ];
        for (key, value) in texts {
            if let Some(value) = value {
                attributes.push(KeyValue::new(key, value));
            }
        }
        if let Some(result) = facts.result {
            attributes.push(KeyValue::new("tollgate.result", result));
        }
        if let Some(credential) = facts.credential {
            attributes.push(KeyValue::new("tollgate.credential", credential));
        }
        if let Some(status) = status {
            attributes.push(KeyValue::new(
                "http.response.status_code",
                i64::from(status.as_u16()),
            ));
        }
        self.span.set_attributes(attributes);
        if let Some(status) = status.filter(StatusCode::is_server_error) {
            self.span.set_status(Status::error(
                status.canonical_reason().unwrap_or("server error"),
            ));
        }
        self.span.end();
    }
}

/// A request dropped before its answer (the client went away) still ends its span, with what
/// was recorded so far.
impl Drop for RequestSpan {
    fn drop(&mut self) {
        if self.span.is_recording() {
            self.finish(None);
        }
    }
}

/// The batch processor behind a count of the spans it holds: a span past `QUEUE` is dropped
/// here and counted (`full`); `ReportingExporter` takes spans off the count as their export
/// begins.
#[derive(Debug)]
struct Admission<P> {
    inner: P,
    waiting: Arc<AtomicUsize>,
    full: Counter,
}

impl<P: SpanProcessor> SpanProcessor for Admission<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= QUEUE {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            self.full.inc();
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Trace and span ids from the operating system's generator, like every random value
/// Tollgate makes (`random`).
#[derive(Debug)]
struct OsRandomIds;

impl IdGenerator for OsRandomIds {
    fn new_trace_id(&self) -> opentelemetry::TraceId {
        opentelemetry::TraceId::from_bytes(crate::random::bytes::<16>())
    }

    fn new_span_id(&self) -> opentelemetry::SpanId {
        opentelemetry::SpanId::from_bytes(crate::random::bytes::<8>())
    }
}

/// The OTLP exporter, logging a failed export once per outage (and the recovery), not once
/// per batch: an unreachable collector must not flood the log. Spans of a failed export are
/// counted as dropped (`failed`); every batch leaves `Admission`'s count as it is exported.
#[derive(Debug)]
struct ReportingExporter<E> {
    inner: E,
    failing: AtomicBool,
    waiting: Arc<AtomicUsize>,
    failed: Counter,
}

impl<E: SpanExporter> SpanExporter for ReportingExporter<E> {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let spans = batch.len();
        self.waiting.fetch_sub(spans, Ordering::AcqRel);
        let export = self.inner.export(batch);
        async move {
            let result = export.await;
            match &result {
                Ok(()) => {
                    if self.failing.swap(false, Ordering::Relaxed) {
                        tracing::info!("telemetry: the collector accepts spans again");
                    }
                }
                Err(error) => {
                    self.failed.inc_by(spans as u64);
                    if !self.failing.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            %error,
                            spans,
                            "telemetry: exporting spans failed; they are dropped until the \
                             collector answers (logged once)"
                        );
                    }
                }
            }
            result
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Trace context and baggage in the formats other than W3C's that tracers read (B3, Jaeger,
/// OpenTracing, Envoy's, Datadog, New Relic, Elastic, Instana, Google Cloud, AWS X-Ray,
/// SkyWalking, gRPC's binary one): from an untrusted client they would choose the upstream's
/// trace id, force its sampling (B3's debug flag, `jaeger-debug-id`, `x-envoy-force-trace`)
/// or add baggage, as `traceparent` and `baggage` would.
fn remove_other_trace_formats(headers: &mut HeaderMap) {
    const NAMES: [&str; 15] = [
        "b3",
        "x-ot-span-context",
        "x-envoy-force-trace",
        "x-client-trace-id",
        "newrelic",
        "elastic-apm-traceparent",
        "uber-trace-id",
        "jaeger-debug-id",
        "jaeger-baggage",
        "x-cloud-trace-context",
        "x-amzn-trace-id",
        "grpc-trace-bin",
        "sw8",
        "sw8-correlation",
        "sw8-x",
    ];
    const PREFIXES: [&str; 6] = [
        "x-b3-",
        "uberctx-",
        "ot-tracer-",
        "ot-baggage-",
        "x-datadog-",
        "x-instana-",
    ];
    let other: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let name = name.as_str();
            NAMES.contains(&name) || PREFIXES.iter().any(|prefix| name.starts_with(prefix))
        })
        .cloned()
        .collect();
    for name in other {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::with_current;

    #[test]
    fn outside_a_traced_request_nothing_is_recorded() {
        // Without `[telemetry]` no request runs `within` a span: recording finds nothing.
        let mut ran = false;
        with_current(|_| ran = true);
        assert!(!ran);
    }
}
