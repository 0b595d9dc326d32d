//! Serving a listener until a shutdown future resolves, then draining: the admin router with
//! [`serve`], the public listener's per-connection service with [`serve_on_workers`].
//!
//! The public listener's connections are dealt out in turn to [`Workers`]: threads that each
//! run a single-threaded runtime, so everything one connection does — its requests, the
//! upstream connections they use (each worker keeps its own, see `proxy::pool`) and
//! the tasks that drive those — stays on one thread, with no wake-ups across threads. The
//! admin listener is served on the main runtime.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
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
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (sender, receiver) = tokio::sync::oneshot::channel::<()>();
            handles.push(runtime.handle().clone());
            stop.push(sender);
            std::thread::Builder::new()
                .name(format!("tollgate-worker-{index}"))
                .spawn(move || {
                    // Ends when the stop sender is dropped; remaining tasks are dropped with
                    // the runtime.
                    let _ = runtime.block_on(receiver);
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

/// Accepts on `listener` and serves each connection (HTTP/1.1, HTTP/2, upgrades) on the next
/// worker with the service `for_connection` makes for its peer, until `shutdown` resolves;
/// then waits for open connections to finish their requests.
///
/// # Errors
/// Never for a failed accept (logged and retried); the result is for symmetry with [`serve`].
pub async fn serve_on_workers<S>(
    listener: TcpListener,
    for_connection: impl Fn(SocketAddr) -> S,
    shutdown: impl Future<Output = ()> + Send + 'static,
    workers: std::sync::Arc<Workers>,
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
    let builder = auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
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
        let service = for_connection(peer);
        let watcher = graceful.watcher();
        let builder = builder.clone();
        workers.next().spawn(async move {
            let stream = match tokio::net::TcpStream::from_std(stream) {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::warn!(%error, "a worker cannot take a connection");
                    return;
                }
            };
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
