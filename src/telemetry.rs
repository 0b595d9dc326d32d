//! OpenTelemetry tracing (SPEC §3 `[telemetry]`): one server span per request, exported over
//! OTLP/HTTP (protobuf) by the SDK's batch span processor, which runs on its own thread, so a
//! request only hands its finished span to a bounded queue (full: the span is dropped) and an
//! unreachable collector never slows or fails it. Export failures are logged once per outage.
//!
//! A W3C `traceparent` (and `tracestate`) is believed only from a trusted proxy; from anyone
//! else the request starts a new trace. The proxy sends its own span's `traceparent` upstream,
//! replacing whatever the client sent. Without `[telemetry]` nothing here exists: callers hold
//! an `Option<Arc<Telemetry>>` and build no span when it is `None`.
//!
//! A span carries the role, the route, the decision, the reason and the status, never a
//! token, a cookie, a query string or a secret.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, IdGenerator, SdkTracer, SdkTracerProvider, SpanData, SpanExporter,
};
use opentelemetry_sdk::{Resource, trace::Span};

use crate::config::TelemetryConfig;

/// How long one export may take (the collector's answer included) before it counts as failed.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built (its HTTP client, its URL).
    #[error("building the OTLP/HTTP span exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// The tracer of a running Tollgate: built once from `[telemetry]`, shared by the surfaces.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl Telemetry {
    /// Starts the exporter and its batch thread for the collector of `config`.
    ///
    /// # Errors
    /// When the exporter cannot be built.
    pub fn start(config: &TelemetryConfig) -> Result<Self, TelemetryError> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(config.traces_url.as_str())
            .with_timeout(EXPORT_TIMEOUT)
            .build()?;
        let provider = SdkTracerProvider::builder()
            .with_span_processor(
                BatchSpanProcessor::builder(ReportingExporter::new(exporter)).build(),
            )
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

    /// Begins the server span of a request of `role` (`forward_auth`, `validate`, `proxy`),
    /// named `name` until a route renames it. `headers`' trace context is the parent only when
    /// `trusted_peer`.
    pub fn begin(
        &self,
        name: &'static str,
        role: &'static str,
        method: &Method,
        headers: &HeaderMap,
        trusted_peer: bool,
    ) -> RequestSpan {
        let parent = if trusted_peer {
            opentelemetry::propagation::TextMapPropagator::extract(
                &TraceContextPropagator::new(),
                &opentelemetry_http::HeaderExtractor(headers),
            )
        } else {
            Context::new()
        };
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("tollgate.role", role),
                KeyValue::new("http.request.method", method.as_str().to_owned()),
            ])
            .start_with_context(&self.tracer, &parent);
        RequestSpan { span }
    }

    /// Exports what is queued and stops the batch thread; spans ended later are dropped.
    pub fn shutdown(&self) {
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(%error, "telemetry: spans could not all be exported at shutdown");
        }
    }
}

/// One request's span, ended (and queued for export) by `end`.
pub struct RequestSpan {
    span: Span,
}

impl RequestSpan {
    /// The route that serves the request: `http.route`, and the span's name
    /// (`<method> <route>`).
    pub fn route(&mut self, method: &Method, route: &str) {
        self.span
            .update_name(Cow::Owned(format!("{} {route}", method.as_str())));
        self.span
            .set_attribute(KeyValue::new("http.route", route.to_owned()));
    }

    /// The host the route is for (`[[route]] host`).
    pub fn route_host(&mut self, host: &str) {
        self.span
            .set_attribute(KeyValue::new("tollgate.route.host", host.to_owned()));
    }

    /// The path the decision was about (the original request's, for `/auth`), without its
    /// query (a query may carry a token), cut and escaped like the log line's.
    pub fn path(&mut self, path: &str) {
        let path = path.split_once('?').map_or(path, |(path, _)| path);
        self.span
            .set_attribute(KeyValue::new("url.path", crate::untrusted::bounded(path)));
    }

    /// The decision: its result label (the metric's and the log line's), and the reason of a
    /// refusal (the log line's text).
    pub fn decision(&mut self, result: &'static str, reason: Option<&str>) {
        self.span
            .set_attribute(KeyValue::new("tollgate.result", result));
        if let Some(reason) = reason {
            self.span
                .set_attribute(KeyValue::new("tollgate.reason", reason.to_owned()));
        }
    }

    /// Which credential identified the caller (`session`, `bearer`, `token_cookie`).
    pub fn credential(&mut self, credential: &'static str) {
        self.span
            .set_attribute(KeyValue::new("tollgate.credential", credential));
    }

    /// Replaces any `traceparent` and `tracestate` in `headers` (an upstream request's) with
    /// this span's context, so the upstream's spans are its children.
    pub fn propagate(&self, headers: &mut HeaderMap) {
        headers.remove(&TRACEPARENT);
        headers.remove(&TRACESTATE);
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
        self.span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status.as_u16()),
        ));
        if status.is_server_error() {
            self.span.set_status(Status::error(
                status.canonical_reason().unwrap_or("server error"),
            ));
        }
        self.span.end();
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
/// per batch: an unreachable collector must not flood the log.
#[derive(Debug)]
struct ReportingExporter<E> {
    inner: E,
    failing: AtomicBool,
}

impl<E> ReportingExporter<E> {
    fn new(inner: E) -> Self {
        Self {
            inner,
            failing: AtomicBool::new(false),
        }
    }
}

impl<E: SpanExporter> SpanExporter for ReportingExporter<E> {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let spans = batch.len();
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
