//! Upstream connections: HTTP/1.1 (over TCP or TLS), one list of idle connections per upstream
//! and worker thread; HTTP/2 (over TLS, chosen by the upstream by ALPN), shared connections per
//! upstream and worker thread, up to 100 streams on each and up to 8 kept. A request, the
//! connection it borrows and the task driving that connection
//! stay on one thread; a connection goes back to its list once its response has been read to
//! the end, and is closed instead when the response was abandoned.

use std::cell::RefCell;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::client::conn::http2;

use super::budget::{InUse, UpstreamBudget};
pub use super::connect::SendError;
use super::connect::{Connection, connect};
use crate::config::Upstream;

/// An idle connection older than this is closed instead of reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per upstream and thread; more are closed.
const MAX_IDLE: usize = 256;
/// A connection idle this long may be closed by the upstream's keep-alive timeout just as a
/// request goes out on it (Node's is 5 s, Apache's 5 s, nginx's 75 s): a safe request without
/// a body sent on it is kept, to be sent once more on another connection if this one fails.
/// Connections reused sooner (all of them under load) cost no copy.
const REPLAY_AFTER_IDLE: Duration = Duration::from_secs(1);

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

/// A thread's HTTP/2 connection to an upstream. Dropped (and the connection closed once its
/// streams are over) when no config holds the upstream any more (a reload gave every upstream
/// a new id, and nothing asks for the old one again) or when no request took it for
/// [`IDLE_TIMEOUT`]; its pings would otherwise keep it open for as long as the process runs.
struct Shared {
    upstream: u64,
    held: Weak<()>,
    used: Instant,
    sender: http2::SendRequest<Body>,
    /// Cloned for each stream on it, from its request until its response body is dropped.
    streams: Stream,
}

/// A stream's hold on its HTTP/2 connection: the connection's streams in flight are the
/// holds on it, less its own.
type Stream = Arc<()>;

/// The most streams in flight on one HTTP/2 upstream connection: a worker opens another one
/// beyond. RFC 9113 §6.5.2 recommends that a server allow at least 100 (nginx 128, Tomcat and
/// Kestrel 100, hyper 200); once a connection has the streams its server allows, further
/// requests on it wait for one to end, so long polls and event streams on one connection
/// would hold up every other request of the worker.
const STREAMS_PER_CONNECTION: usize = 100;

/// The most HTTP/2 connections a worker keeps to one upstream: beyond, requests share the
/// least busy of them, and wait there for a stream as the server allows. Each connection's
/// flow-control window bounds what it buffers (`connect::H2_CONNECTION_WINDOW`), so this
/// bounds what a worker buffers from one upstream for clients that do not read.
const CONNECTIONS_MOST: usize = 8;

impl Shared {
    /// Fewer than [`STREAMS_PER_CONNECTION`] streams in flight (the count is the holds on
    /// `streams`, less the entry's own).
    fn has_room(&self) -> bool {
        Arc::strong_count(&self.streams) <= STREAMS_PER_CONNECTION
    }

    fn kept(&self) -> bool {
        !self.sender.is_closed()
            && self.held.strong_count() > 0
            && self.used.elapsed() < IDLE_TIMEOUT
    }
}

thread_local! {
    /// Per upstream (by `Upstream::id`), idle connections, most recently used last.
    static IDLE: RefCell<Vec<(u64, Vec<Idle>)>> = const { RefCell::new(Vec::new()) };
    /// Per upstream, this thread's HTTP/2 connections, shared by its requests; another is
    /// opened when each has [`STREAMS_PER_CONNECTION`] streams in flight.
    static MULTIPLEXED: RefCell<Vec<Shared>> = const { RefCell::new(Vec::new()) };
    /// Whether this thread runs a task that closes its expired idle connections.
    static SWEEPING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Sends `request` (origin-form URI, `Host` set) to `upstream`, on an open connection of this
/// thread when there is one, else on a new one. A request that an idle connection could not
/// take (the upstream had closed it) is sent again on the next; one that may have reached the
/// upstream is never sent twice, unless it is a safe request without a body that went out on
/// a connection idle for a second or more and failed before any answer (the upstream's
/// keep-alive timeout closing it at that moment): that one is sent once more, on a new
/// connection. An https upstream that chose HTTP/2 gets every request but
/// upgrades on connections this thread shares, up to [`STREAMS_PER_CONNECTION`] at a time
/// on each. With a `budget` (an HTTP/2 client's stream), a request that needs an HTTP/1.1
/// connection (an upgrade excepted) holds one of its places until its response is over, and
/// is refused when none is left.
///
/// # Errors
/// When no response arrived, or `budget` had no connection left.
#[allow(
    clippy::manual_async_fn,
    reason = "an `async fn` would hold the request twice (its argument and a local)"
)]
pub fn send<'a>(
    upstream: &'a Upstream,
    budget: Option<&'a Arc<UpstreamBudget>>,
    connect_timeout: Duration,
    mut request: Request,
) -> impl Future<Output = Result<hyper::Response<PooledBody>, SendError>> + Send + 'a {
    // Every proxied request's future holds this one: the HTTP/2 and new-connection paths are
    // boxed where they are taken, so that the common one (an idle HTTP/1.1 connection) keeps
    // the request's future small (it is moved whole into its box, `public::Answer`).
    async move {
        let upgrade = request.headers().contains_key(hyper::header::UPGRADE);
        if !upgrade
            && upstream.tls().is_some()
            && let Some(shared) = multiplexed(upstream.id())
        {
            request = match Box::pin(send_multiplexed(upstream, shared, request)).await {
                Multiplexed::Answered(answer) => return answer,
                Multiplexed::Unsent(request) => request,
            };
        }
        let in_use = match budget {
            Some(budget) if !upgrade => Some(budget.take().ok_or_else(|| {
                SendError::new(
                    "every upstream connection this process may hold is in use (the public \
                     listener's places: server.max_connections, or the open-file limit)",
                )
            })?),
            _ => None,
        };
        while let Some(Idle { mut sender, since }) = checkout(upstream.id()) {
            if sender.ready().await.is_err() {
                continue;
            }
            // Boxed: made only after a second idle, and the size of a request's head.
            let replay = (!upgrade && since.elapsed() >= REPLAY_AFTER_IDLE)
                .then(|| Replay::of(&request).map(Box::new))
                .flatten();
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(pooled(response, sender, upstream.id(), in_use)),
                Err(mut error) => match (error.take_message(), replay) {
                    (Some(unsent), _) => request = unsent,
                    // On a new connection: the other idle ones went quiet with this one and may be
                    // closing as well.
                    (None, Some(replay)) => {
                        request = replay.request();
                        break;
                    }
                    (None, None) => return Err(SendError::new(error.into_error().to_string())),
                },
            }
        }
        Box::pin(send_connected(
            upstream,
            connect_timeout,
            (upgrade, in_use),
            request,
        ))
        .await
    }
}

/// What the shared HTTP/2 connection did with a request.
enum Multiplexed {
    Answered(Result<hyper::Response<PooledBody>, SendError>),
    /// No open connection took it; in HTTP/1.1 shape again.
    Unsent(Request),
}

/// Sends `request` on `shared`, one of this thread's HTTP/2 connections to `upstream`, or on
/// another when that one is closed.
async fn send_multiplexed(
    upstream: &Upstream,
    shared: (http2::SendRequest<Body>, Stream),
    mut request: Request,
) -> Multiplexed {
    let mut next = Some(shared);
    while let Some((mut sender, stream)) = next.take() {
        if sender.ready().await.is_err() {
            forget_multiplexed(&stream);
            next = multiplexed(upstream.id());
            continue;
        }
        // Kept to turn the request back into HTTP/1.1 shape should it come back unsent.
        let (target, host) = (
            request.uri().clone(),
            request.headers().get(hyper::header::HOST).cloned(),
        );
        match sender.try_send_request(for_http2(request, upstream)).await {
            Ok(response) => {
                return Multiplexed::Answered(Ok(unpooled(response, upstream.id(), stream, None)));
            }
            Err(mut error) => match error.take_message() {
                Some(mut unsent) => {
                    forget_multiplexed(&stream);
                    *unsent.uri_mut() = target;
                    *unsent.version_mut() = hyper::Version::HTTP_11;
                    if let Some(host) = host {
                        unsent.headers_mut().insert(hyper::header::HOST, host);
                    }
                    request = unsent;
                    next = multiplexed(upstream.id());
                }
                None => {
                    let error = SendError::new(error.into_error().to_string());
                    return Multiplexed::Answered(Err(error));
                }
            },
        }
    }
    Multiplexed::Unsent(request)
}

/// Sends `request` on a new connection to `upstream`.
async fn send_connected(
    upstream: &Upstream,
    connect_timeout: Duration,
    (upgrade, in_use): (bool, Option<InUse>),
    request: Request,
) -> Result<hyper::Response<PooledBody>, SendError> {
    match connect(upstream, connect_timeout, upgrade).await? {
        Connection::Http1(mut sender) => match sender.send_request(request).await {
            Ok(response) => Ok(pooled(response, sender, upstream.id(), in_use)),
            Err(error) => Err(SendError::new(error.to_string())),
        },
        Connection::Http2(mut sender) => {
            let stream = Stream::default();
            // Kept for the requests to come only when none of this worker's has room and it
            // has fewer than the most: requests that all found every connection full open
            // one each, and the others close once their one stream ends.
            let kept = MULTIPLEXED.with_borrow_mut(|shared| {
                shared.retain(Shared::kept);
                let ours = || {
                    shared
                        .iter()
                        .filter(|entry| entry.upstream == upstream.id())
                };
                if ours().any(Shared::has_room) || ours().count() >= CONNECTIONS_MOST {
                    return false;
                }
                shared.push(Shared {
                    upstream: upstream.id(),
                    held: upstream.held(),
                    used: Instant::now(),
                    sender: sender.clone(),
                    streams: stream.clone(),
                });
                true
            });
            if kept {
                sweeping();
            }
            // A stream on a connection the thread keeps to share: its place is the stream's,
            // not a connection's of the budget. One not kept lives for this stream alone and
            // holds its place until the response is over.
            let in_use = if kept { None } else { in_use };
            match sender.send_request(for_http2(request, upstream)).await {
                Ok(response) => Ok(unpooled(response, upstream.id(), stream, in_use)),
                Err(error) => Err(SendError::new(error.to_string())),
            }
        }
    }
}

/// An HTTP/1.1-shaped request as HTTP/2 sends it: the target in absolute form, its authority
/// the `Host` the request would have carried (RFC 9113 §8.3.1: `:authority` instead of `Host`),
/// and its body without trailers (see [`WithoutTrailers`]).
fn for_http2(request: Request, upstream: &Upstream) -> Request {
    let (mut parts, body) = request.into_parts();
    let host = parts.headers.remove(hyper::header::HOST);
    let authority = host
        .as_ref()
        .and_then(|host| host.to_str().ok())
        .and_then(|host| host.parse::<hyper::http::uri::Authority>().ok())
        .or_else(|| upstream.authority().to_str().ok()?.parse().ok());
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    uri.scheme = Some(hyper::http::uri::Scheme::HTTPS);
    uri.authority = authority;
    if let Ok(absolute) = hyper::Uri::from_parts(uri) {
        parts.uri = absolute;
    }
    parts.version = hyper::Version::HTTP_2;
    Request::from_parts(parts, Body::new(WithoutTrailers { inner: body }))
}

/// A request body whose trailers are dropped. The client's trailers are fields Tollgate never
/// checked, and an upstream that merges trailers into the headers would read an `X-User` sent
/// as one as the identity. HTTP/1.1 upstreams never get them (hyper sends only the trailers a
/// `Trailer` header announces, and that header is hop-by-hop); HTTP/2 would pass them as they
/// came.
struct WithoutTrailers {
    inner: Body,
}

impl hyper::body::Body for WithoutTrailers {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
            // Trailers are a body's last frame: the body ends here instead.
            Some(Ok(frame)) if frame.is_trailers() => Poll::Ready(None),
            frame => Poll::Ready(frame),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// One of this thread's open HTTP/2 connections to `upstream` with room for a stream (or,
/// with [`CONNECTIONS_MOST`] of them full, the least busy), and a hold on it for the stream;
/// `None` when another connection is to be opened.
fn multiplexed(upstream: u64) -> Option<(http2::SendRequest<Body>, Stream)> {
    MULTIPLEXED.with_borrow_mut(|shared| {
        shared.retain(Shared::kept);
        let ours = |entry: &&Shared| entry.upstream == upstream;
        let index = match shared
            .iter()
            .position(|entry| ours(&entry) && entry.has_room())
        {
            Some(index) => index,
            None if shared.iter().filter(ours).count() < CONNECTIONS_MOST => return None,
            None => shared
                .iter()
                .enumerate()
                .filter(|(_, entry)| ours(entry))
                .min_by_key(|(_, entry)| Arc::strong_count(&entry.streams))
                .map(|(index, _)| index)?,
        };
        let entry = &mut shared[index];
        entry.used = Instant::now();
        Some((entry.sender.clone(), entry.streams.clone()))
    })
}

/// Forgets the connection `stream` is on (it closed).
fn forget_multiplexed(stream: &Stream) {
    MULTIPLEXED.with_borrow_mut(|shared| {
        shared.retain(|entry| !Arc::ptr_eq(&entry.streams, stream));
    });
}

/// This thread's most recently used idle connection to `upstream` that is still open.
fn checkout(upstream: u64) -> Option<Idle> {
    IDLE.with_borrow_mut(|pools| {
        let (_, idle) = pools.iter_mut().find(|(id, _)| *id == upstream)?;
        while let Some(entry) = idle.pop() {
            if !entry.sender.is_closed() && entry.since.elapsed() < IDLE_TIMEOUT {
                return Some(entry);
            }
        }
        None
    })
}

/// A copy of a safe request without a body (`GET`, `HEAD`, `OPTIONS`), to send once more when
/// the connection it went out on failed before any answer: sent twice, it does no harm.
struct Replay(axum::http::request::Parts);

impl Replay {
    fn of(request: &Request) -> Option<Self> {
        let safe = matches!(
            *request.method(),
            hyper::Method::GET | hyper::Method::HEAD | hyper::Method::OPTIONS
        );
        if !safe || request.body().size_hint().exact() != Some(0) {
            return None;
        }
        let (mut parts, ()) = Request::new(()).into_parts();
        parts.method = request.method().clone();
        parts.uri = request.uri().clone();
        parts.version = request.version();
        parts.headers = request.headers().clone();
        Some(Self(parts))
    }

    fn request(self) -> Request {
        Request::from_parts(self.0, Body::empty())
    }
}

/// Puts a connection whose last response has ended back on this thread's list.
fn checkin(upstream: u64, sender: SendRequest<Body>) {
    if sender.is_closed() {
        return;
    }
    IDLE.with_borrow_mut(|pools| {
        let position = match pools.iter().position(|(id, _)| *id == upstream) {
            Some(position) => position,
            None => {
                pools.push((upstream, Vec::new()));
                pools.len() - 1
            }
        };
        let idle = &mut pools[position].1;
        // The oldest are first: drop the ones that have waited too long, and make room.
        let expired = expired(idle);
        idle.drain(..expired.max((idle.len() + 1).saturating_sub(MAX_IDLE)));
        idle.push(Idle {
            sender,
            since: Instant::now(),
        });
    });
    sweeping();
}

/// Starts this thread's sweep, unless it runs already.
fn sweeping() {
    if !SWEEPING.replace(true) {
        tokio::spawn(sweep());
    }
}

/// How many of `idle` (oldest first) have waited too long.
fn expired(idle: &[Idle]) -> usize {
    idle.iter()
        .take_while(|entry| entry.since.elapsed() >= IDLE_TIMEOUT)
        .count()
}

/// Closes this thread's expired idle connections, and its HTTP/2 connections no longer kept,
/// now and then, so that they do not stay open when no request comes to reuse them; runs as
/// long as the thread's runtime.
async fn sweep() {
    let mut ticks = tokio::time::interval(IDLE_TIMEOUT / 3);
    loop {
        ticks.tick().await;
        IDLE.with_borrow_mut(|pools| {
            for (_, idle) in pools.iter_mut() {
                idle.drain(..expired(idle));
            }
            pools.retain(|(_, idle)| !idle.is_empty());
        });
        MULTIPLEXED.with_borrow_mut(|shared| shared.retain(Shared::kept));
    }
}

/// A response on a shared HTTP/2 connection, holding its stream's place on it until dropped.
fn unpooled(
    response: hyper::Response<Incoming>,
    upstream: u64,
    stream: Stream,
    in_use: Option<InUse>,
) -> hyper::Response<PooledBody> {
    let (parts, inner) = response.into_parts();
    let body = PooledBody {
        inner,
        sender: None,
        upstream,
        _stream: Some(stream),
        in_use,
    };
    hyper::Response::from_parts(parts, body)
}

fn pooled(
    response: hyper::Response<Incoming>,
    sender: SendRequest<Body>,
    upstream: u64,
    in_use: Option<InUse>,
) -> hyper::Response<PooledBody> {
    // A switched protocol owns the connection from now on; it is never reused.
    let keep = response.status() != hyper::StatusCode::SWITCHING_PROTOCOLS;
    let (parts, inner) = response.into_parts();
    let mut body = PooledBody {
        inner,
        sender: keep.then_some(sender),
        upstream,
        _stream: None,
        in_use,
    };
    if body.inner.is_end_stream() {
        body.release();
    }
    hyper::Response::from_parts(parts, body)
}

/// A response body from a pooled connection: when it has been read to its end, the
/// connection goes back to the pool; when it is dropped before, the connection closes.
pub struct PooledBody {
    inner: Incoming,
    sender: Option<SendRequest<Body>>,
    upstream: u64,
    /// On a shared HTTP/2 connection: the stream's place on it.
    _stream: Option<Stream>,
    /// The connection's place in the process's budget, until the response is over.
    in_use: Option<InUse>,
}

impl PooledBody {
    /// The response is over: the connection can take the next request once hyper has seen
    /// the end too, which is at once in the usual case.
    fn release(&mut self) {
        self.in_use = None;
        let Some(mut sender) = self.sender.take() else {
            return;
        };
        if sender.is_ready() {
            checkin(self.upstream, sender);
            return;
        }
        let upstream = self.upstream;
        tokio::spawn(async move {
            if sender.ready().await.is_ok() {
                checkin(upstream, sender);
            }
        });
    }
}

impl hyper::body::Body for PooledBody {
    type Data = axum::body::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        match &frame {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Err(_))) => self.sender = None,
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.release(),
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
