//! Forwarding to an upstream: bodies streamed both ways, WebSocket (and the other HTTP/1.1
//! upgrades a route lists) spliced, hop-by-hop headers dropped, `X-Forwarded-For/Proto/Host`
//! added, connect and response timeouts enforced. Upstreams are reached only from here, through
//! `proxy::pool`.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::body::Body as _;
use hyper_util::rt::TokioIo;

use super::pool::{PooledBody, SendError};
use crate::config::RouteConfig;
use crate::http::forwarded::{X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO};
use crate::http::stalled_body::{StallGuard, Stalled};

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

/// RFC 9110 §7.6.1 hop-by-hop headers, never forwarded; `hop_by_hop` numbers them. `Expect`
/// too: Tollgate answers it (hyper sends the client `100 Continue` when the body is first
/// read), and its client sends the body upstream at once, so an upstream that answered early
/// and kept reading would take the body for a request of its own.
static HOP_BY_HOP: [HeaderName; 10] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::EXPECT,
];

/// The place of a hop-by-hop header in `HOP_BY_HOP` (`name` in lower case, as header names
/// are kept).
fn hop_by_hop(name: &str) -> Option<usize> {
    Some(match name {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-connection" => 2,
        "proxy-authenticate" => 3,
        "proxy-authorization" => 4,
        "te" => 5,
        "trailer" => 6,
        "transfer-encoding" => 7,
        "upgrade" => 8,
        "expect" => 9,
        _ => return None,
    })
}

/// Headers a `Connection` header may name but that are never removed: they say what the
/// request is or who sends it, Tollgate read them to decide, and the upstream must get the
/// request that was decided on. `Host` is for every recipient (RFC 9112 §3.2; without it the
/// upstream would serve its default host, not the route's). Without its `Content-Type`, a
/// JSON `POST` that a `POST` skip rule let through would reach Rack as a form, whose `_method`
/// names another method; without `Origin`, `Cookie` or `Authorization` the upstream would
/// judge another request than Tollgate did.
const NEVER_DROPPED_FOR_CONNECTION: [HeaderName; 7] = [
    header::HOST,
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::COOKIE,
    header::AUTHORIZATION,
    header::ORIGIN,
];

/// Drops the hop-by-hop headers and those the `Connection` header names (but
/// [`NEVER_DROPPED_FOR_CONNECTION`]), finding them in one pass over the headers.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Bit `i`: `HOP_BY_HOP[i]` is present. Most messages carry none, or only `Connection`.
    let mut present = 0_u16;
    for name in headers.keys() {
        if let Some(index) = hop_by_hop(name.as_str()) {
            present |= 1 << index;
        }
    }
    if present == 0 {
        return;
    }
    if present & 1 != 0 {
        // Names the `Connection` header lists go too; its usual words name no header.
        let listed: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|text| text.split(','))
            .map(str::trim)
            .filter(|word| {
                !word.eq_ignore_ascii_case("keep-alive") && !word.eq_ignore_ascii_case("close")
            })
            .filter_map(|word| HeaderName::from_bytes(word.as_bytes()).ok())
            .filter(|name| !NEVER_DROPPED_FOR_CONNECTION.contains(name))
            .collect();
        for name in listed {
            headers.remove(name);
        }
    }
    for (index, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << index) != 0 {
            headers.remove(name);
        }
    }
}

/// `X-Forwarded-For` naming only `ip`. The text is kept per thread for the last address: a
/// connection (an ingress's, a load balancer's) sends many requests from one.
fn peer_value(ip: IpAddr) -> Option<HeaderValue> {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(IpAddr, HeaderValue)>> = const { std::cell::RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| match last {
        Some((cached, value)) if *cached == ip => Some(value.clone()),
        _ => {
            let value =
                HeaderValue::from_maybe_shared(axum::body::Bytes::from(ip.to_string())).ok()?;
            *last = Some((ip, value.clone()));
            Some(value)
        }
    })
}

/// Whether a request's `Transfer-Encoding`, if any, is `chunked` alone: the one coding hyper
/// takes off a body, so the only one Tollgate can pass a body on for (nginx answers others
/// with 501).
pub fn chunked_only(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|value| value.as_bytes().split(|byte| *byte == b','))
        .all(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// Whether a `Connection` header lists the `upgrade` option.
fn lists_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|text| text.split(','))
        .any(|option| option.trim().eq_ignore_ascii_case("upgrade"))
}

/// The protocols of the client's `Upgrade` that `route.upgrades` lets through, as sent
/// upstream; `None` leaves the request a plain one (its `Upgrade` dropped as hop-by-hop). An
/// `Upgrade` counts only in HTTP/1.1 and when `Connection` names it (RFC 9110 §7.8), and a
/// WebSocket only with its key (RFC 6455 §4.1). A protocol not listed is never spliced: an
/// application that relays a fetched answer (a URL preview) would otherwise pass on a 101 its
/// fetched server made up, and the client would speak HTTP to the application on the spliced
/// connection, past every rule.
fn passed_upgrade(route: &RouteConfig, request: &Request) -> Option<HeaderValue> {
    let headers = request.headers();
    let asked = headers.get(header::UPGRADE)?;
    if request.version() != axum::http::Version::HTTP_11 || !lists_upgrade(headers) {
        return None;
    }
    let keyed = headers.contains_key(SEC_WEBSOCKET_KEY);
    let asked = asked.to_str().ok()?;
    let passed: Vec<&str> = asked
        .split(',')
        .map(str::trim)
        .filter(|protocol| {
            let lower = protocol.to_ascii_lowercase();
            route.upgrades.contains(&lower) && (lower != "websocket" || keyed)
        })
        .collect();
    if passed.is_empty() {
        return None;
    }
    HeaderValue::from_str(&passed.join(", ")).ok()
}

const SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
const SEC_WEBSOCKET_ACCEPT: HeaderName = HeaderName::from_static("sec-websocket-accept");

/// Facts about the client connection that go upstream as `X-Forwarded-*`.
pub struct ForwardedFor<'a> {
    /// The peer's address.
    pub peer: SocketAddr,
    /// `X-Forwarded-For` as received, when the peer is a trusted proxy.
    pub trusted_chain: Option<&'a str>,
    /// Whether the peer is a trusted proxy (its `X-Real-IP` and `X-Forwarded-Prefix` are then
    /// passed on, and its `X-Forwarded-Port` and kind said again in Tollgate's words).
    pub peer_trusted: bool,
    /// The external scheme.
    pub proto: &'a str,
    /// The external host (with the port when not the scheme's default).
    pub host: Option<&'a str>,
}

/// A request made ready for its upstream by [`prepare`], and the client's side of an upgrade
/// it asks for.
pub struct Outbound {
    request: Request,
    client_upgrade: Option<Box<ClientUpgrade>>,
}

/// Resolves when the credential an upgraded connection was let in on no longer lets it in;
/// the connection is closed then (made by `proxy::lasting`).
pub type Lasting = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A client's upgrade, passed on: what it asked for, and its connection once switched.
pub struct ClientUpgrade {
    on: hyper::upgrade::OnUpgrade,
    /// The `Upgrade` value asked for.
    protocols: HeaderValue,
    /// A WebSocket's handshake, when one was asked for.
    websocket: Option<WebSocketKeys>,
    /// Closes the connection once switched when it resolves.
    lasting: Option<Lasting>,
    /// Resolves when the client's connection is cut (idle for `keepalive_timeout`).
    cut: Option<crate::http::serve::UpgradeCut>,
}

/// A WebSocket handshake passed on with a key of Tollgate's own (RFC 6455 §4.1): the upstream
/// must answer that key, which nobody else knows, so an application relaying a 101 that a
/// server of the client's choosing made up for the client's key is not believed. The client
/// gets the accept value of its own key.
struct WebSocketKeys {
    /// The `Sec-WebSocket-Key` sent upstream.
    sent: HeaderValue,
    /// The `Sec-WebSocket-Accept` the upstream must answer `sent` with.
    upstream_accept: String,
    /// The `Sec-WebSocket-Accept` of the client's key, which the client's 101 carries.
    client_accept: HeaderValue,
}

impl WebSocketKeys {
    /// Keys for a handshake whose client sent `client_key`: a fresh random one goes upstream.
    fn new(client_key: &HeaderValue) -> Option<Self> {
        use base64::Engine as _;
        let sent = base64::engine::general_purpose::STANDARD.encode(crate::random::bytes::<16>());
        Self::sending(client_key, HeaderValue::from_str(&sent).ok()?)
    }

    fn sending(client_key: &HeaderValue, sent: HeaderValue) -> Option<Self> {
        Some(Self {
            upstream_accept: websocket_accept(sent.as_bytes()),
            client_accept: HeaderValue::from_str(&websocket_accept(client_key.as_bytes())).ok()?,
            sent,
        })
    }
}

impl ClientUpgrade {
    /// Whether `answer`, a 101, switched to what was asked (RFC 9110 §15.2.2: `Upgrade` names
    /// the protocol switched to, and it is one asked for; `Connection` lists `upgrade`; and
    /// for a WebSocket, RFC 6455 §4.1: the accept value of the key). Any other 101 (an
    /// application that answers whatever status a query names) leaves the upstream speaking
    /// HTTP: splicing would give the client a raw connection to it, past every rule and with
    /// identity headers of its own.
    fn is_switched_by(&self, answer: &HeaderMap) -> bool {
        let tokens = |value: &[u8]| -> Vec<Vec<u8>> {
            value
                .split(|byte| *byte == b',')
                .map(|token| token.trim_ascii().to_ascii_lowercase())
                .filter(|token| !token.is_empty())
                .collect()
        };
        let asked = tokens(self.protocols.as_bytes());
        let mut switched = answer.get_all(header::UPGRADE).iter();
        let (Some(protocol), None) = (switched.next(), switched.next()) else {
            return false;
        };
        let [switched] = &tokens(protocol.as_bytes())[..] else {
            return false;
        };
        // A WebSocket's handshake is checked by the key Tollgate sent; without one nothing
        // could tell an application's real switch from an answer it relays (a URL preview
        // fetching a server that answers 101 to anything).
        let accepted = switched.as_slice() != b"websocket"
            || self.websocket.as_ref().is_some_and(|keys| {
                answer.get(SEC_WEBSOCKET_ACCEPT).is_some_and(|accept| {
                    accept.as_bytes().trim_ascii() == keys.upstream_accept.as_bytes()
                })
            });
        asked.contains(switched) && lists_upgrade(answer) && accepted
    }
}

/// RFC 6455 §4.2.2: base64 of the SHA-1 of the key and the protocol's GUID.
fn websocket_accept(key: &[u8]) -> String {
    use base64::Engine as _;
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY);
    context.update(key.trim_ascii());
    context.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(context.finish().as_ref())
}

/// Makes `request` the one the route's upstream gets: its target in origin form, hop-by-hop
/// headers dropped, `X-Forwarded-*` set; `add_identity` adds the identity headers once the
/// client's hop-by-hop headers are gone. Nothing is sent: [`exchange`] sends it.
///
/// # Errors
/// `Unavailable` when the upstream's URL and the request's path make no target.
pub fn prepare(
    route: &RouteConfig,
    mut request: Request,
    forwarded: &ForwardedFor<'_>,
    add_identity: impl FnOnce(&mut HeaderMap),
    lasting: Option<Lasting>,
) -> Result<Outbound, ForwardError> {
    // h2c is never passed on (`route.upgrades` cannot name it): once the upstream switched,
    // the client would speak HTTP/2 to it on the spliced connection, requests Tollgate never
    // sees. The request goes as a plain one.
    let upgrade = passed_upgrade(route, &request);
    let target = route
        .upstream
        .request_target(request.uri().path_and_query())
        .ok_or_else(|| ForwardError::Unavailable("bad upstream URI".to_owned()))?;
    let client_upgrade = upgrade.as_ref().map(|protocols| {
        let websocket = protocols
            .as_bytes()
            .split(|byte| *byte == b',')
            .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"websocket"));
        let websocket = request
            .headers()
            .get(SEC_WEBSOCKET_KEY)
            .filter(|_| websocket)
            .and_then(WebSocketKeys::new);
        Box::new(ClientUpgrade {
            cut: request
                .extensions()
                .get::<crate::http::serve::UpgradeCut>()
                .cloned(),
            on: hyper::upgrade::on(&mut request),
            protocols: protocols.clone(),
            websocket,
            lasting,
        })
    });
    let (mut parts, body) = request.into_parts();
    parts.uri = target;
    parts.version = axum::http::Version::HTTP_11;
    // The client's `Host` goes upstream as it is; only a request without one gets the upstream's.
    if !parts.headers.contains_key(header::HOST) {
        parts
            .headers
            .insert(header::HOST, route.upstream.authority().clone());
    }
    remove_hop_by_hop(&mut parts.headers);
    // A body of unknown length (the client's was chunked) goes chunked: hyper's client would
    // send a `GET`'s or a `HEAD`'s with no length as no body at all (a search API's query gone,
    // the request's meaning changed). Other methods it chunks by itself.
    if !body.is_end_stream()
        && body.size_hint().exact().is_none()
        && !parts.headers.contains_key(header::CONTENT_LENGTH)
    {
        parts.headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
    }
    let mut restated = super::headers::Restated::default();
    if !forwarded.peer_trusted {
        // Said by proxies about the client's request (who sent it, how, to which host and
        // path, with which method), never by clients: removed in every spelling an upstream
        // might read as one of them (`X_Forwarded_For`, `x-original-url`), so an upstream that
        // believes them (`X-Original-URL` overriding the path in some frameworks,
        // `X-HTTP-Method-Override` the method) never serves another request than the one
        // Tollgate decided on. `X-Forwarded-For`, `-Proto` and `-Host` are set below.
        super::headers::strip_proxy_headers(&mut parts.headers);
    } else {
        // From a trusted proxy too: an ingress copies its client's headers on.
        restated = super::headers::strip_overrides_and_forwarded(&mut parts.headers);
    }
    // After the hop-by-hop removal: a client's `Connection: X-User` must not take away the
    // identity headers Tollgate sends.
    add_identity(&mut parts.headers);
    if let Some(protocol) = &upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, protocol.clone());
        if let Some(keys) = client_upgrade
            .as_ref()
            .and_then(|upgrade| upgrade.websocket.as_ref())
        {
            parts.headers.insert(SEC_WEBSOCKET_KEY, keys.sent.clone());
        }
    }
    let ip = forwarded.peer.ip();
    let chain = match forwarded.trusted_chain {
        Some(existing) if !existing.trim().is_empty() => {
            HeaderValue::from_str(&format!("{existing}, {ip}")).ok()
        }
        _ => peer_value(ip),
    };
    match chain {
        Some(chain) => parts.headers.insert(X_FORWARDED_FOR.clone(), chain),
        None => parts.headers.remove(&X_FORWARDED_FOR),
    };
    let proto = match forwarded.proto {
        "https" => HeaderValue::from_static("https"),
        "http" => HeaderValue::from_static("http"),
        other => HeaderValue::from_str(other).unwrap_or(HeaderValue::from_static("http")),
    };
    parts.headers.insert(X_FORWARDED_PROTO.clone(), proto);
    // A client's own `X-Forwarded-Host` never passes: replaced, or removed.
    match forwarded
        .host
        .and_then(|host| HeaderValue::from_str(host).ok())
    {
        Some(host) => parts.headers.insert(X_FORWARDED_HOST.clone(), host),
        None => parts.headers.remove(&X_FORWARDED_HOST),
    };
    super::headers::restate_scheme_and_port(
        &mut parts.headers,
        restated,
        forwarded.proto,
        forwarded.host,
    );
    Ok(Outbound {
        request: Request::from_parts(parts, body),
        client_upgrade,
    })
}

/// Sends a prepared request to the route's upstream; the future answers with its response,
/// streaming, or fails with `Unavailable` or `TimedOut`.
pub fn exchange<'a>(
    route: &'a RouteConfig,
    budget: Option<&'a Arc<super::budget::UpstreamBudget>>,
    outbound: Outbound,
) -> Exchange<impl Future<Output = Result<hyper::Response<PooledBody>, SendError>> + Send + 'a> {
    let Outbound {
        mut request,
        client_upgrade,
    } = outbound;
    // The read timeout runs from the request body's last progress (a frame taken, or its end),
    // as nginx's `proxy_send_timeout` and then `proxy_read_timeout`: an upload that takes
    // longer than it to send is no upstream stalling, one the upstream stopped taking is. A
    // request without a body starts it at once.
    let origin = tokio::time::Instant::now();
    let progress = (!request.body().is_end_stream()).then(|| {
        let progress = Arc::new(BodyProgress {
            origin,
            moved: AtomicU64::new(0),
        });
        let body = std::mem::take(request.body_mut());
        *request.body_mut() = Body::new(Watched {
            body,
            progress: progress.clone(),
        });
        progress
    });
    Exchange {
        sent: super::pool::send(&route.upstream, budget, route.connect_timeout, request),
        deadline: tokio::time::sleep_until(origin + route.read_timeout),
        progress,
        client_upgrade,
        read_timeout: route.read_timeout,
    }
}

/// When a request body last moved toward its upstream.
struct BodyProgress {
    origin: tokio::time::Instant,
    /// Nanoseconds from `origin` to the last frame taken (or the end).
    moved: AtomicU64,
}

impl BodyProgress {
    fn moved_at(&self) -> tokio::time::Instant {
        self.origin + Duration::from_nanos(self.moved.load(Ordering::Relaxed))
    }
}

pin_project_lite::pin_project! {
    /// A request body that records its progress.
    struct Watched {
        #[pin]
        body: Body,
        progress: Arc<BodyProgress>,
    }
}

impl hyper::body::Body for Watched {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.body.poll_frame(cx));
        let since = this.progress.origin.elapsed().as_nanos();
        this.progress
            .moved
            .store(u64::try_from(since).unwrap_or(u64::MAX), Ordering::Relaxed);
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// The upstream's answer to a prepared request, within the route's read timeout of the
    /// request body's last progress. Written out rather than `async`: it holds the pool's
    /// send and a few small fields, where an `async fn` taking the request would hold the
    /// request twice for as long as the upstream takes to answer.
    pub struct Exchange<F> {
        #[pin]
        sent: F,
        #[pin]
        deadline: tokio::time::Sleep,
        // The request body's progress; `None` without a body.
        progress: Option<Arc<BodyProgress>>,
        client_upgrade: Option<Box<ClientUpgrade>>,
        read_timeout: Duration,
    }
}

impl<F> Future for Exchange<F>
where
    F: Future<Output = Result<hyper::Response<PooledBody>, SendError>>,
{
    type Output = Result<Response, ForwardError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let response = match this.sent.poll(cx) {
            Poll::Pending => loop {
                if this.deadline.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                // Due, unless the request body moved since: then due that long after it.
                let due = this
                    .progress
                    .as_ref()
                    .map(|progress| progress.moved_at() + *this.read_timeout);
                match due {
                    Some(due) if due > this.deadline.deadline() => {
                        this.deadline.as_mut().reset(due);
                    }
                    _ => return Poll::Ready(Err(ForwardError::TimedOut)),
                }
            },
            Poll::Ready(Err(error)) => {
                return Poll::Ready(Err(ForwardError::Unavailable(error.to_string())));
            }
            Poll::Ready(Ok(response)) => response,
        };
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            return Poll::Ready(Ok(splice_upgrade(response, this.client_upgrade.take())));
        }
        let (mut parts, body) = response.into_parts();
        // RFC 9112 §6.3: with `Transfer-Encoding` the body is read chunked, and an intermediary
        // that forwards the answer removes a `Content-Length` beside it: passed on, it framed
        // the client's answer (the body cut at it, or the connection ended short of it).
        if parts.headers.contains_key(header::TRANSFER_ENCODING) {
            parts.headers.remove(header::CONTENT_LENGTH);
        }
        remove_hop_by_hop(&mut parts.headers);
        // The client hears Tollgate's HTTP, not the upstream's: an HTTP/1.0 answer would make
        // hyper answer in HTTP/1.0 and close the client's keep-alive connection.
        parts.version = hyper::Version::HTTP_11;
        let body = StallGuard::new(body, *this.read_timeout, Stalled::Upstream);
        Poll::Ready(Ok(Response::from_parts(parts, Body::new(body))))
    }
}

/// Answers 101 to the client and copies bytes both ways between the two upgraded connections.
fn splice_upgrade(
    mut response: hyper::Response<super::pool::PooledBody>,
    client_upgrade: Option<Box<ClientUpgrade>>,
) -> Response {
    let Some(client_upgrade) = client_upgrade else {
        return ForwardError::Unavailable("upstream switched protocols unasked".to_owned())
            .into_response();
    };
    if !client_upgrade.is_switched_by(response.headers()) {
        // Dropped, never spliced or pooled: the upstream's connection closes with it.
        return ForwardError::Unavailable(
            "upstream answered 101 without switching to the protocol asked for".to_owned(),
        )
        .into_response();
    }
    if let Some(keys) = &client_upgrade.websocket {
        // Harmless where the upstream switched to another protocol asked for beside it.
        response
            .headers_mut()
            .insert(SEC_WEBSOCKET_ACCEPT, keys.client_accept.clone());
    }
    let ClientUpgrade {
        on: client_upgrade,
        lasting,
        cut,
        ..
    } = *client_upgrade;
    let upstream_upgrade = hyper::upgrade::on(&mut response);
    tokio::spawn(async move {
        let (Ok(client), Ok(upstream)) = (client_upgrade.await, upstream_upgrade.await) else {
            tracing::info!("upgrade did not complete");
            return;
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        let spliced = tokio::io::copy_bidirectional(&mut client, &mut upstream);
        let lasting = async {
            match lasting {
                Some(lasting) => lasting.await,
                None => std::future::pending().await,
            }
        };
        let cut = async {
            match cut {
                Some(cut) => cut.cut_off().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ended = spliced => {
                if let Err(error) = ended {
                    tracing::debug!(%error, "upgraded connection ended");
                }
            }
            // Idle for `keepalive_timeout`: also where the copy waits on an upstream that
            // stopped reading, and so reads nothing more from the client that would fail.
            () = cut => {
                tracing::debug!("an upgraded connection idle for keepalive_timeout: closed");
            }
            () = lasting => {
                // Both ends are dropped, so closed, when this task ends.
                tracing::info!("an upgraded connection closed: the session or token it was opened on ended");
            }
        }
    });
    let (parts, _) = response.into_parts();
    Response::from_parts(parts, Body::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upgrade_is_spliced_only_when_the_upstream_switched_to_what_was_asked() {
        let asked = |protocols: &'static str, key: Option<&'static str>| ClientUpgrade {
            on: hyper::upgrade::on(axum::http::Request::new(())),
            protocols: HeaderValue::from_static(protocols),
            // The RFC's example key as the one sent upstream, the client's another.
            cut: None,
            websocket: key.and_then(|key| {
                WebSocketKeys::sending(
                    &HeaderValue::from_static("Y2xpZW50cyBvd24ga2V5IQ=="),
                    HeaderValue::from_static(key),
                )
            }),
            lasting: None,
        };
        let answer = |fields: &[(&'static str, &'static str)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in fields {
                headers.append(*name, HeaderValue::from_static(value));
            }
            headers
        };
        // RFC 6455 §1.3's example key and accept value.
        let websocket = asked("websocket", Some("dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(websocket.is_switched_by(&answer(&[
            ("connection", "Upgrade"),
            ("upgrade", "WebSocket"),
            ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        ])));
        for fields in [
            &[][..],
            &[("connection", "upgrade"), ("upgrade", "websocket")],
            &[
                ("connection", "upgrade"),
                ("upgrade", "websocket"),
                ("sec-websocket-accept", "wrong"),
            ],
            &[
                ("upgrade", "websocket"),
                ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            ],
            &[
                ("connection", "upgrade"),
                ("upgrade", "h2c"),
                ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            ],
        ] {
            assert!(!websocket.is_switched_by(&answer(fields)), "{fields:?}");
        }
        // A WebSocket asked for without a key: no switch to it is believed.
        let keyless = asked("websocket", None);
        assert!(!keyless.is_switched_by(&answer(&[
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        ])));
        // Asked for either: switched to the other, no WebSocket handshake to check.
        let either = asked("websocket, echo", Some("dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(either.is_switched_by(&answer(&[("connection", "upgrade"), ("upgrade", "echo")])));
        let echo = asked("echo, other", None);
        assert!(echo.is_switched_by(&answer(&[
            ("connection", "keep-alive, upgrade"),
            ("upgrade", "other")
        ])));
        assert!(!echo.is_switched_by(&answer(&[
            ("connection", "upgrade"),
            ("upgrade", "echo, other")
        ])));
        assert!(!echo.is_switched_by(&answer(&[
            ("connection", "upgrade"),
            ("upgrade", "websocket")
        ])));
    }

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_are_removed() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "Keep-Alive, X-Secret , close"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("proxy-authorization", "Basic eDp5"),
            ("te", "trailers"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authenticate", "Basic"),
            ("trailer", "x-sum"),
            ("upgrade", "websocket"),
            ("connection", "upgrade"),
            ("x-secret", "1"),
            ("x-kept", "2"),
            ("content-type", "text/plain"),
            (
                "connection",
                "Content-Type, cookie, Origin, authorization, host",
            ),
            ("cookie", "a=1"),
            ("origin", "https://app.example"),
            ("authorization", "Bearer x"),
        ] {
            headers.append(name, HeaderValue::from_static(value));
        }
        remove_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            [
                "authorization",
                "content-type",
                "cookie",
                "origin",
                "x-kept"
            ]
        );

        let mut plain = HeaderMap::new();
        plain.append("x-kept", HeaderValue::from_static("2"));
        remove_hop_by_hop(&mut plain);
        assert_eq!(plain.len(), 1);
    }

    #[test]
    fn each_hop_by_hop_name_is_numbered_by_its_place() {
        for (index, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop(name.as_str()), Some(index), "{name}");
        }
        assert_eq!(hop_by_hop("x-kept"), None);
        assert_eq!(hop_by_hop("connectio"), None);
    }

    #[test]
    fn the_peer_value_follows_the_address() {
        let first: IpAddr = "192.0.2.1".parse().unwrap();
        let second: IpAddr = "2001:db8::7".parse().unwrap();
        for (ip, text) in [
            (first, "192.0.2.1"),
            (first, "192.0.2.1"),
            (second, "2001:db8::7"),
            (first, "192.0.2.1"),
        ] {
            assert_eq!(peer_value(ip).unwrap(), text);
        }
    }
}
