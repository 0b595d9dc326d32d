//! Serving a listener until a shutdown future resolves, then draining: the admin router with
//! [`serve`], the public listener's per-connection service with [`serve_on_workers`].
//!
//! The public listener's connections are dealt out in turn to [`Workers`]: threads that each
//! run a single-threaded runtime, so everything one connection does — its requests, the
//! upstream connections they use (each worker keeps its own, see `proxy::pool`) and
//! the tasks that drive those — stays on one thread, with no wake-ups across threads. The
//! admin listener is served on the main runtime.
//!
//! Every public connection is watched (SPEC §9): its first request's head must arrive within
//! `header_read_timeout` (hyper enforces it for later requests on a keep-alive connection), and
//! a connection with no request in flight and no byte moving for `keepalive_timeout` is closed.
//! At most `server.max_connections` are open at once: the next is accepted when one closes
//! (until then it waits in the kernel's backlog). Envoy's gRPC listener is served the same way.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// Serves `router` on `listener` (HTTP/1.1 and HTTP/2) until `shutdown` resolves, then lets
/// in-flight requests finish.
///
/// # Errors
/// When the listener fails.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Threads with a single-threaded runtime each, serving the connections given to them.
pub struct Workers {
    handles: Vec<tokio::runtime::Handle>,
    next: AtomicUsize,
    /// Dropping these ends the workers' runtimes.
    _stop: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl Workers {
    /// One worker per available CPU.
    ///
    /// # Errors
    /// When a thread or runtime cannot be started.
    pub fn per_cpu() -> std::io::Result<Self> {
        Self::start(std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
    }

    /// `count` workers (at least one).
    ///
    /// # Errors
    /// When a thread or runtime cannot be started.
    pub fn start(count: usize) -> std::io::Result<Self> {
        let mut handles = Vec::new();
        let mut stop = Vec::new();
        for index in 0..count.max(1) {
            // A worker hands its log lines over in batches, whenever it is about to wait.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .on_thread_park(crate::logging::send_batch)
                .build()?;
            let (sender, receiver) = tokio::sync::oneshot::channel::<()>();
            handles.push(runtime.handle().clone());
            stop.push(sender);
            std::thread::Builder::new()
                .name(format!("tollgate-worker-{index}"))
                .spawn(move || {
                    // Dropped last: the lines of the runtime's last tasks are handed over,
                    // and the log's exit waits for that.
                    let _gathering = crate::logging::gather_lines_on_this_thread();
                    // Ends when the stop sender is dropped; remaining tasks are dropped with
                    // the runtime.
                    let _ = runtime.block_on(receiver);
                    drop(runtime);
                })?;
        }
        Ok(Self {
            handles,
            next: AtomicUsize::new(0),
            _stop: stop,
        })
    }

    fn next(&self) -> &tokio::runtime::Handle {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[index]
    }
}

/// How long a client may take to send a request's head, and to stay idle.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionTimeouts {
    /// The first request's head must arrive within this after the connection opens; hyper
    /// enforces it for every later request's head.
    pub header_read: Duration,
    /// No request in flight and no byte moving for this long closes the connection.
    pub keepalive: Duration,
}

/// What the watchdog of one connection reads: bytes moved, requests begun, requests in flight.
#[derive(Default)]
struct Activity {
    bytes: AtomicU64,
    requests: AtomicU64,
    in_flight: AtomicUsize,
}

/// Marks one request in flight on a connection until dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: &Arc<Activity>) -> Self {
        activity.requests.fetch_add(1, Ordering::Relaxed);
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Resolves when the connection has broken its timeouts: the first request's head did not come
/// within `header_read`, or nothing was in flight and no byte moved for `keepalive`.
async fn watchdog(activity: Arc<Activity>, timeouts: ConnectionTimeouts) -> &'static str {
    let opened = tokio::time::Instant::now();
    let tick = timeouts.header_read.min(timeouts.keepalive) / 4;
    let mut last_bytes = activity.bytes.load(Ordering::Relaxed);
    let mut last_change = opened;
    loop {
        tokio::time::sleep(tick).await;
        let now = tokio::time::Instant::now();
        let bytes = activity.bytes.load(Ordering::Relaxed);
        if bytes != last_bytes {
            last_bytes = bytes;
            last_change = now;
        }
        if activity.requests.load(Ordering::Relaxed) == 0 {
            if now.duration_since(opened) >= timeouts.header_read {
                return "no request head within header_read_timeout";
            }
        } else if activity.in_flight.load(Ordering::Relaxed) == 0
            && now.duration_since(last_change) >= timeouts.keepalive
        {
            return "idle for keepalive_timeout";
        }
    }
}

/// A socket that counts the bytes it moves, for the watchdog.
struct Counted<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.activity
                .bytes
                .fetch_add(read as u64, Ordering::Relaxed);
        }
        result
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.count(&result);
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.count(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<T> Counted<T> {
    fn count(&self, result: &Poll<std::io::Result<usize>>) {
        if let Poll::Ready(Ok(written)) = result {
            self.activity
                .bytes
                .fetch_add(*written as u64, Ordering::Relaxed);
        }
    }
}

/// Accepts on `listener` and serves each connection (HTTP/1.1, HTTP/2, upgrades; over TLS when
/// `tls` is given, HTTP/2 then chosen by ALPN) on the next worker with the service and
/// timeouts `for_connection` gives for its peer (asked per connection, so a reloaded config's
/// timeouts apply to the next one), at most `max_connections` at once, until `shutdown`
/// resolves; then waits for open connections to finish their requests.
///
/// # Errors
/// Never for a failed accept (logged and retried); the result is for symmetry with [`serve`].
pub async fn serve_on_workers<S>(
    listener: TcpListener,
    for_connection: impl Fn(SocketAddr) -> (S, ConnectionTimeouts),
    shutdown: impl Future<Output = ()> + Send + 'static,
    workers: std::sync::Arc<Workers>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    max_connections: usize,
) -> std::io::Result<()>
where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    let open = Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        // A connection is accepted only with a free place; it holds it until it closes.
        let place = tokio::select! {
            place = open.clone().acquire_owned() => place,
            () = &mut shutdown => break,
        };
        let Ok(place) = place else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Per-connection failures are the client's; others (EMFILE) need a pause.
                if !matches!(
                    error.kind(),
                    std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionRefused
                ) {
                    tracing::error!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // Handed over as a plain socket: it joins the worker's own event loop there.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "cannot hand a connection to a worker");
                continue;
            }
        };
        let (inner, timeouts) = for_connection(peer);
        let activity = Arc::new(Activity::default());
        let service = {
            let activity = activity.clone();
            hyper::service::service_fn(move |request| {
                let in_flight = InFlight::begin(&activity);
                let response = hyper::service::Service::call(&inner, request);
                async move {
                    let response = response.await;
                    drop(in_flight);
                    response
                }
            })
        };
        let watcher = graceful.watcher();
        let mut builder = builder.clone();
        builder.http1().header_read_timeout(timeouts.header_read);
        let tls = tls.clone();
        workers.next().spawn(async move {
            let _place = place;
            let stream = match tokio::net::TcpStream::from_std(stream) {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::warn!(%error, "a worker cannot take a connection");
                    return;
                }
            };
            let stream = Counted {
                inner: stream,
                activity: activity.clone(),
            };
            // The watchdog also bounds the TLS handshake: it is part of the first request's head.
            let served = async {
                let Some(tls) = tls else {
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    return watcher.watch(connection).await;
                };
                let stream = tls.accept(stream).await?;
                let connection =
                    builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                watcher.watch(connection).await
            };
            tokio::select! {
                result = served => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                }
                // Dropping the connection closes it; nothing is in flight by then.
                reason = watchdog(activity, timeouts) => tracing::debug!(reason, "connection closed"),
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
