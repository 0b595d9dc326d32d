//! `TestUpstream`: the application behind a route. Echoes the request as JSON, answers 401 on
//! `/needs-login` unless an `X-User` header arrives, counts uploaded bytes on `/upload` (any method), sleeps
//! on `/slow`, echoes bytes on an upgraded connection at `/ws` (and `/ws;x`), and echoes with the
//! `Cache-Control` its `cc` query parameter names on `/cache-control`.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;
use serde_json::json;

pub struct TestUpstream {
    pub addr: SocketAddr,
    /// How many `/slow` requests arrived.
    pub slow_requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

fn echo_json(method: &str, uri: &str, headers: &HeaderMap) -> serde_json::Value {
    let mut seen = serde_json::Map::new();
    for (name, value) in headers {
        let entry = seen
            .entry(name.as_str().to_owned())
            .or_insert_with(|| json!([]));
        entry
            .as_array_mut()
            .unwrap()
            .push(json!(value.to_str().unwrap_or("(binary)")));
    }
    json!({"method": method, "uri": uri, "headers": seen})
}

async fn echo(request: Request) -> Json<serde_json::Value> {
    Json(echo_json(
        request.method().as_str(),
        &request.uri().to_string(),
        request.headers(),
    ))
}

async fn needs_login(request: Request) -> Response {
    if request.headers().contains_key("x-user") {
        echo(request).await.into_response()
    } else {
        (StatusCode::UNAUTHORIZED, "who are you?").into_response()
    }
}

async fn upload(request: Request) -> String {
    let mut body = request.into_body();
    let mut total: u64 = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            total += data.len() as u64;
        }
    }
    total.to_string()
}

/// Answers each `c` parameter of the query as a `Set-Cookie`.
async fn set_cookies(request: Request) -> Response {
    let query = request.uri().query().unwrap_or("").to_owned();
    let mut response = "cookies set".into_response();
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if name == "c" {
            let value = axum::http::HeaderValue::from_str(&value).unwrap();
            response.headers_mut().append("set-cookie", value);
        }
    }
    response
}

/// The echo, with the `cc` query parameter as its `Cache-Control`.
async fn cache_control(request: Request) -> Response {
    let query = request.uri().query().unwrap_or("").to_owned();
    let mut response = echo(request).await.into_response();
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if name == "cc" {
            let value = axum::http::HeaderValue::from_str(&value).unwrap();
            response.headers_mut().append("cache-control", value);
        }
        // Any other header, as `h=name:value`.
        if name == "h"
            && let Some((header, value)) = value.split_once(':')
        {
            let header = axum::http::HeaderName::from_bytes(header.as_bytes()).unwrap();
            let value = axum::http::HeaderValue::from_str(value).unwrap();
            response.headers_mut().append(header, value);
        }
    }
    response
}

async fn slow() -> &'static str {
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    "late"
}

async fn websocket(mut request: Request) -> Response {
    // Switches to what was asked for (`echo` by default), and answers a WebSocket key as RFC
    // 6455 §4.2.2 says (computed here, not with Tollgate's code).
    let protocol = request
        .headers()
        .get("upgrade")
        .cloned()
        .unwrap_or(axum::http::HeaderValue::from_static("echo"));
    let accept = request.headers().get("sec-websocket-key").map(|key| {
        use base64::Engine as _;
        let mut keyed = key.as_bytes().to_vec();
        keyed.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &keyed);
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    });
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let upgraded = upgrade.await.unwrap();
        let (mut reader, mut writer) = tokio::io::split(TokioIo::new(upgraded));
        tokio::io::copy(&mut reader, &mut writer).await.ok();
    });
    let mut answer = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "upgrade")
        .header("upgrade", protocol);
    if let Some(accept) = accept {
        answer = answer.header("sec-websocket-accept", accept);
    }
    answer.body(Body::empty()).unwrap()
}

impl TestUpstream {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let slow_requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let router = Router::new()
            .route("/needs-login", get(needs_login))
            .route("/upload", any(upload))
            .route(
                "/slow",
                get({
                    let slow_requests = std::sync::Arc::clone(&slow_requests);
                    move || {
                        slow_requests.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        slow()
                    }
                }),
            )
            .route("/ws", get(websocket))
            // `/ws` with a path parameter, as a servlet container serves it.
            .route("/ws;x", get(websocket))
            .route("/set-cookies", get(set_cookies))
            .route("/cache-control", get(cache_control))
            .fallback(any(echo));
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self {
            addr,
            slow_requests,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}
