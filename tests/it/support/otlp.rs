//! A small OTLP/HTTP trace receiver: `POST /v1/traces` with a protobuf
//! `ExportTraceServiceRequest`, decoded with the published OpenTelemetry messages; and helpers
//! that read the spans it kept.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

/// Spans received, each with its resource's `service.name`.
type Received = Arc<Mutex<Vec<(String, Span)>>>;

/// How the collector answers an export.
#[derive(Clone, Copy)]
pub enum Answer {
    /// Keeps the spans and answers 200.
    Accept,
    /// Decodes the spans, keeps none and answers 503.
    Fail,
}

#[derive(Clone)]
struct CollectorState {
    received: Received,
    answer: Answer,
}

/// An OTLP/HTTP trace receiver on a loopback port.
pub struct Collector {
    addr: SocketAddr,
    received: Received,
}

impl Collector {
    pub async fn start() -> Self {
        Self::answering(Answer::Accept).await
    }

    pub async fn answering(answer: Answer) -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/v1/traces", post(receive))
            .with_state(CollectorState {
                received: received.clone(),
                answer,
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, received }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<(String, Span)> {
        self.received.lock().unwrap().clone()
    }

    /// The `[telemetry]` section that sends spans here.
    pub fn section(&self) -> String {
        format!(
            "[telemetry]\notlp_endpoint = \"{}\"\nservice_name = \"tollgate-test\"\n",
            self.endpoint()
        )
    }
}

async fn receive(State(state): State<CollectorState>, headers: HeaderMap, body: Bytes) -> Response {
    if headers
        .get(header::CONTENT_TYPE)
        .map(|value| value.as_bytes())
        != Some(b"application/x-protobuf")
    {
        return StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response();
    }
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    if let Answer::Fail = state.answer {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let mut received = state.received.lock().unwrap();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .as_ref()
            .and_then(|resource| {
                resource
                    .attributes
                    .iter()
                    .find(|attribute| attribute.key == "service.name")
            })
            .and_then(|attribute| text(attribute.value.as_ref()?.value.as_ref()?))
            .unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                received.push((service.clone(), span));
            }
        }
    }
    (
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

fn text(value: &AnyValue) -> Option<String> {
    match value {
        AnyValue::StringValue(text) => Some(text.clone()),
        AnyValue::IntValue(number) => Some(number.to_string()),
        AnyValue::BoolValue(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// A span attribute as text (`None` when absent).
pub fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|attribute| attribute.key == key)
        .and_then(|attribute| text(attribute.value.as_ref()?.value.as_ref()?))
}

/// Every text a span carries: its name and all its attribute values.
pub fn texts(span: &Span) -> Vec<String> {
    let mut all = vec![span.name.clone()];
    all.extend(
        span.attributes
            .iter()
            .filter_map(|attribute| text(attribute.value.as_ref()?.value.as_ref()?)),
    );
    all
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
