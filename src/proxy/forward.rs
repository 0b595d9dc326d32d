//! Forwarding to an upstream: bodies streamed both ways, WebSocket (and any HTTP/1.1) upgrades
//! spliced, hop-by-hop headers dropped, `X-Forwarded-For/Proto/Host` added, connect and
//! response timeouts enforced. The only module that talks to upstreams.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::config::RouteConfig;

/// The HTTP client used for every upstream: one connection pool per thread, so a request and
/// the upstream connection it uses (and the task driving that connection) share a worker.
#[derive(Clone)]
pub struct UpstreamClient {
    connect_timeout: Duration,
    /// Tells this client's pools from another Tollgate's in the same process (tests).
    id: u64,
}

type Pool = Client<HttpConnector, Body>;

thread_local! {
    static POOLS: std::cell::RefCell<Vec<(u64, Pool)>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl UpstreamClient {
    /// A pooled client; `connect_timeout` bounds each new connection.
    pub fn new(connect_timeout: Duration) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Self {
            connect_timeout,
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Sends `request` with this thread's pool.
    fn request(&self, request: Request) -> hyper_util::client::legacy::ResponseFuture {
        POOLS.with(|pools| {
            let mut pools = pools.borrow_mut();
            if let Some((_, pool)) = pools.iter().find(|(id, _)| *id == self.id) {
                return pool.request(request);
            }
            let mut connector = HttpConnector::new();
            connector.set_connect_timeout(Some(self.connect_timeout));
            connector.set_nodelay(true);
            let pool = Client::builder(TokioExecutor::new()).build(connector);
            let future = pool.request(request);
            pools.push((self.id, pool));
            future
        })
    }
}

/// Why forwarding failed.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Connection refused, reset, or a protocol error.
    #[error("upstream unavailable: {0}")]
    Unavailable(String),
    /// No response headers within the route's read timeout.
    #[error("upstream timed out")]
    TimedOut,
}

impl IntoResponse for ForwardError {
    fn into_response(self) -> Response {
        let (status, text) = match self {
            Self::Unavailable(_) => (
                StatusCode::BAD_GATEWAY,
                "502 Bad Gateway: the application behind this address is unavailable\n",
            ),
            Self::TimedOut => (
                StatusCode::GATEWAY_TIMEOUT,
                "504 Gateway Timeout: the application behind this address did not answer in time\n",
            ),
        };
        (
            status,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            text,
        )
            .into_response()
    }
}

/// RFC 9110 §7.6.1 hop-by-hop headers, never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names instead of a lookup per listed name.
    if !headers
        .keys()
        .any(|name| HOP_BY_HOP.contains(&name.as_str()))
    {
        return;
    }
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|text| text.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// Facts about the client connection that go upstream as `X-Forwarded-*`.
pub struct ForwardedFor<'a> {
    /// The peer's address.
    pub peer: SocketAddr,
    /// `X-Forwarded-For` as received, when the peer is a trusted proxy.
    pub trusted_chain: Option<&'a str>,
    /// The external scheme.
    pub proto: &'a str,
    /// The external host (with the port when not the scheme's default).
    pub host: Option<&'a str>,
}

/// Sends `request` to the route's upstream and returns its response, streaming.
///
/// # Errors
/// `Unavailable` or `TimedOut`.
pub async fn forward(
    client: &UpstreamClient,
    route: &RouteConfig,
    mut request: Request,
    forwarded: ForwardedFor<'_>,
) -> Result<Response, ForwardError> {
    let upgrade = request.headers().get(header::UPGRADE).cloned();
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or("/", |value| value.as_str())
        .to_owned();
    let base = route.upstream.as_str().trim_end_matches('/');
    let uri: Uri = format!("{base}{path_and_query}")
        .parse()
        .map_err(|_| ForwardError::Unavailable("bad upstream URI".to_owned()))?;
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut request));
    let (mut parts, body) = request.into_parts();
    parts.uri = uri;
    parts.version = axum::http::Version::HTTP_11;
    remove_hop_by_hop(&mut parts.headers);
    if let Some(protocol) = &upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, protocol.clone());
    }
    let chain = match forwarded.trusted_chain {
        Some(existing) if !existing.trim().is_empty() => {
            format!("{existing}, {}", forwarded.peer.ip())
        }
        _ => forwarded.peer.ip().to_string(),
    };
    let set = |headers: &mut HeaderMap, name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set(&mut parts.headers, "x-forwarded-for", &chain);
    let proto = match forwarded.proto {
        "https" => HeaderValue::from_static("https"),
        "http" => HeaderValue::from_static("http"),
        other => HeaderValue::from_str(other).unwrap_or(HeaderValue::from_static("http")),
    };
    parts.headers.insert("x-forwarded-proto", proto);
    match forwarded.host {
        Some(host) => set(&mut parts.headers, "x-forwarded-host", host),
        None => {
            parts.headers.remove("x-forwarded-host");
        }
    }
    let outbound = Request::from_parts(parts, body);
    let response = match tokio::time::timeout(route.read_timeout, client.request(outbound)).await {
        Err(_) => return Err(ForwardError::TimedOut),
        Ok(Err(error)) => return Err(ForwardError::Unavailable(error.to_string())),
        Ok(Ok(response)) => response,
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        return Ok(splice_upgrade(response, client_upgrade));
    }
    let (mut parts, body) = response.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, Body::new(body)))
}

/// Answers 101 to the client and copies bytes both ways between the two upgraded connections.
fn splice_upgrade(
    mut response: hyper::Response<hyper::body::Incoming>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response {
    let Some(client_upgrade) = client_upgrade else {
        return ForwardError::Unavailable("upstream switched protocols unasked".to_owned())
            .into_response();
    };
    let upstream_upgrade = hyper::upgrade::on(&mut response);
    tokio::spawn(async move {
        let (Ok(client), Ok(upstream)) = (client_upgrade.await, upstream_upgrade.await) else {
            tracing::info!("upgrade did not complete");
            return;
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!(%error, "upgraded connection ended");
        }
    });
    let (parts, _) = response.into_parts();
    Response::from_parts(parts, Body::empty())
}
