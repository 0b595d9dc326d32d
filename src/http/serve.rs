//! Serving a listener until a shutdown future resolves, then draining: [`serve_on_workers`]
//! serves each listener (public, admin, Envoy's gRPC) with a service per connection.
//!
//! The public listener's connections are dealt out in turn to [`Workers`]: threads that each
//! run a single-threaded runtime, so everything one connection does — its requests, the
//! upstream connections they use (each worker keeps its own, see `proxy::pool`) and
//! the tasks that drive those — stays on one thread, with no wake-ups across threads.
//!
//! Every public connection is watched (SPEC §9): its first request's head must arrive within
//! `header_read_timeout`, a later request's head on an HTTP/1 keep-alive connection within
//! `header_read_timeout` of its first byte, and a connection with no request in flight and no
//! byte moving for `keepalive_timeout` is closed. hyper's own header timer is off: it starts
//! when hyper begins to wait for the next request, so it closed every keep-alive connection
//! idle for `header_read_timeout` instead of `keepalive_timeout` (and cost a timer per request).
//! On HTTP/2, idle means no response body live and no stream moving (PINGs move bytes), and a
//! response whose frame its client leaves untaken for `keepalive_timeout` is released
//! ([`streams`]). An upgraded connection (a WebSocket spliced to its upstream) is closed
//! once no byte moved either way for `keepalive_timeout`. At most `server.max_connections` are
//! open at once, upgraded ones included. With every place taken, the connection idle longest
//! between requests is closed to make room for the next (as nginx reuses idle keep-alive
//! connections; see `Activity::idle_since`); while every one is busy, the next is served when
//! one closes (it waits accepted, later ones in the kernel's backlog). The admin and Envoy's
//! gRPC listeners are served the same way.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use streams::Streams;

mod streams;

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

/// Resolves once the connection an upgrade was asked on is cut (an upgraded one idle for
/// `keepalive_timeout`). Put in the extensions of an HTTP/1 request that asks for an upgrade:
/// the splice (`proxy::forward`) waits on it beside its copying, which may poll neither socket
/// (an upstream that stopped reading leaves the client's unread once the copy's buffer is
/// full), so the socket's own failing read would never come.
#[derive(Clone)]
pub struct UpgradeCut(Arc<Activity>);

impl UpgradeCut {
    /// Waits until the connection is cut.
    pub async fn cut_off(&self) {
        loop {
            let told = self.0.cut_told.notified();
            tokio::pin!(told);
            told.as_mut().enable();
            if self.0.cut.load(Ordering::Relaxed) {
                return;
            }
            told.await;
        }
    }
}

/// How long a client may take to send a request's head, and to stay idle.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionTimeouts {
    /// The first request's head must arrive within this after the connection opens, and a
    /// later one's (HTTP/1) within this after its first byte.
    pub header_read: Duration,
    /// No request in flight and no byte moving for this long closes the connection.
    pub keepalive: Duration,
}

/// What the watchdog of one connection reads: bytes read and written, requests begun and in
/// flight, and when the head being read began.
struct Activity {
    opened: tokio::time::Instant,
    read: AtomicU64,
    written: AtomicU64,
    requests: AtomicU64,
    in_flight: AtomicUsize,
    /// Whether the connection speaks HTTP/1 (known from its first request) and was not upgraded:
    /// only then do bytes read while no request is in flight begin a request's head (HTTP/2
    /// sends pings, an upgraded connection its own protocol).
    http1: AtomicBool,
    /// When the first byte of a later request's head was read, in milliseconds after `opened`;
    /// [`NO_HEAD`] while none is being read.
    head_since: AtomicU64,
    /// Whether the last request begun came with a body (not at its end when its head was
    /// read): bytes read while its answer is written are then taken for that body.
    body_sent: AtomicBool,
    /// The connection switched protocols: its socket now belongs to the splice (`proxy`).
    upgraded: AtomicBool,
    /// The upgraded socket is to fail its next read or write (idle for `keepalive`).
    cut: AtomicBool,
    /// The upgraded socket was dropped.
    closed: AtomicBool,
    /// The task using the upgraded socket, woken to find it `cut`.
    user: std::sync::Mutex<Option<std::task::Waker>>,
    /// Told when the upgraded socket is `cut`: the splice waits on it ([`UpgradeCut`]).
    cut_told: tokio::sync::Notify,
    /// Whether the connection speaks HTTP/2 (known from its first request): then its idle
    /// time is counted from what its streams did, not from bytes (PINGs move bytes).
    http2: AtomicBool,
    /// What its HTTP/2 streams did, and the response bodies being written (both protocols).
    streams: Arc<Streams>,
    /// What the watchdog saw at its last look: the bytes read ([`NOT_SEEN`] before its first
    /// look) and written, and since when (milliseconds after `opened`) they had not changed.
    seen_read: AtomicU64,
    seen_written: AtomicU64,
    still_since: AtomicU64,
    /// The listener is full and this connection was the one idle longest: the watchdog
    /// closes it if it is still idle ([`Activity::idle_since`]).
    shed: tokio::sync::Notify,
    /// `shed` was asked and not yet answered.
    shed_asked: AtomicBool,
}

/// `Activity::head_since` while no request head is being read.
const NO_HEAD: u64 = u64::MAX;

/// `Activity::seen_read` before the watchdog's first look.
const NOT_SEEN: u64 = u64::MAX;

impl Activity {
    fn new() -> Self {
        let opened = tokio::time::Instant::now();
        Self {
            opened,
            read: AtomicU64::new(0),
            written: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            http1: AtomicBool::new(false),
            head_since: AtomicU64::new(NO_HEAD),
            body_sent: AtomicBool::new(false),
            upgraded: AtomicBool::new(false),
            cut: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            user: std::sync::Mutex::new(None),
            cut_told: tokio::sync::Notify::new(),
            http2: AtomicBool::new(false),
            streams: Arc::new(Streams::new(opened)),
            seen_read: AtomicU64::new(NOT_SEEN),
            seen_written: AtomicU64::new(0),
            still_since: AtomicU64::new(0),
            shed: tokio::sync::Notify::new(),
            shed_asked: AtomicBool::new(false),
        }
    }

    /// Since when the connection is idle, when it has been for [`SHED_IDLE_LEAST`] at `now`: a
    /// connection between two requests of a busy client is not closed to make room.
    fn sheddable(&self, now: tokio::time::Instant) -> Option<tokio::time::Instant> {
        self.idle_since()
            .filter(|since| now.saturating_duration_since(*since) >= SHED_IDLE_LEAST)
    }

    /// Since when the connection is idle, or `None` while it is busy. Idle is between
    /// requests: nothing in flight, no request head being read, no response body being
    /// written, not upgraded, and no byte moved since the watchdog last looked (on HTTP/2: no
    /// stream moved; PINGs do not count). A connection that has sent nothing yet is idle from
    /// when it opened, once the watchdog has looked at it (a request on its way in the
    /// kernel's buffers is not lost); one that has sent part of its first head, or of a TLS
    /// handshake, is busy.
    fn idle_since(&self) -> Option<tokio::time::Instant> {
        let busy = self.closed.load(Ordering::Relaxed)
            || self.upgraded.load(Ordering::Relaxed)
            || self.in_flight.load(Ordering::Relaxed) != 0
            || self.head_since.load(Ordering::Relaxed) != NO_HEAD
            || !self.streams.none_live();
        if busy {
            return None;
        }
        let read = self.read.load(Ordering::Relaxed);
        if self.requests.load(Ordering::Relaxed) == 0 && read > 0 {
            return None;
        }
        if self.http2.load(Ordering::Relaxed) {
            let now = tokio::time::Instant::now();
            return Some(
                now.checked_sub(self.streams.still_for(now))
                    .unwrap_or(self.opened),
            );
        }
        let written = self.written.load(Ordering::Relaxed);
        let seen = (
            self.seen_read.load(Ordering::Acquire),
            self.seen_written.load(Ordering::Relaxed),
        );
        (seen == (read, written))
            .then(|| self.opened + Duration::from_millis(self.still_since.load(Ordering::Relaxed)))
    }

    /// The connection switched protocols: what follows is not request heads, and the socket
    /// goes on to the splice (`proxy`), watched still.
    fn upgrade(&self) {
        self.http1.store(false, Ordering::Relaxed);
        self.upgraded.store(true, Ordering::Relaxed);
    }

    /// Makes the upgraded socket's next read or write fail, wakes the task using it, and tells
    /// the splice ([`UpgradeCut`]).
    fn cut(&self) {
        self.cut.store(true, Ordering::Relaxed);
        self.cut_told.notify_waiters();
        let user = self
            .user
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(user) = user {
            user.wake();
        }
    }

    /// After an upgrade: the task polling the socket is remembered, and a `cut` socket fails.
    fn poll_upgraded(&self, cx: &Context<'_>) -> Result<(), std::io::Error> {
        if self.cut.load(Ordering::Relaxed) {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        let mut user = self.user.lock().unwrap_or_else(PoisonError::into_inner);
        if !user.as_ref().is_some_and(|user| user.will_wake(cx.waker())) {
            *user = Some(cx.waker().clone());
        }
        Ok(())
    }

    /// Milliseconds from `opened` to `at`.
    fn millis(&self, at: tokio::time::Instant) -> u64 {
        u64::try_from(at.duration_since(self.opened).as_millis()).unwrap_or(NO_HEAD - 1)
    }

    /// `read` bytes came in: with no request in flight on an HTTP/1 connection, the first of
    /// them begins the next request's head, except while the answer to a request that came
    /// with a body is written: they are that body's then (an upstream may answer before it has
    /// read the whole body, streaming both ways), timed by the body's own rules. (A head
    /// pipelined behind such a request is timed from its answer's end by `keepalive_timeout`.)
    fn on_read(&self, read: usize) {
        self.read.fetch_add(read as u64, Ordering::Relaxed);
        if self.http1.load(Ordering::Relaxed)
            && self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_since.load(Ordering::Relaxed) == NO_HEAD
            && (self.streams.none_live() || !self.body_sent.load(Ordering::Relaxed))
        {
            let now = self.millis(tokio::time::Instant::now());
            self.head_since.store(now, Ordering::Relaxed);
        }
    }
}

/// Marks one request in flight on a connection until dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    /// A request whose head was read in full.
    fn begin(activity: &Arc<Activity>, version: hyper::Version) -> Self {
        activity.requests.fetch_add(1, Ordering::Relaxed);
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.head_since.store(NO_HEAD, Ordering::Relaxed);
        if version <= hyper::Version::HTTP_11 {
            activity.http1.store(true, Ordering::Relaxed);
        } else if version == hyper::Version::HTTP_2 {
            activity.http2.store(true, Ordering::Relaxed);
            activity.streams.moved();
        }
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        if self.0.http2.load(Ordering::Relaxed) {
            self.0.streams.moved();
        }
    }
}

/// Resolves when the connection's socket was dropped, or when the connection has broken its
/// timeouts: the first request's head did not come within `header_read`, a later one's
/// (HTTP/1) did not complete within `header_read` of its first byte, or nothing was in flight
/// and no byte moved for `keepalive` (from this call on: it is called again for an upgraded
/// socket; on HTTP/2: no response body live and no stream moved, see [`streams`]). A later
/// head that came while a response was still being written (pipelined) is timed from the last
/// byte written instead. Checked a few times per timeout, so a connection may outlive one by a
/// quarter of the shorter. Each check also releases the HTTP/2 responses whose client left a
/// frame untaken for `keepalive`.
async fn watchdog(activity: Arc<Activity>, timeouts: ConnectionTimeouts) -> &'static str {
    let opened = activity.opened;
    let tick = timeouts.header_read.min(timeouts.keepalive) / 4;
    let mut last = (0, 0);
    let started = tokio::time::Instant::now();
    let (mut last_change, mut last_write) = (started, started);
    // One schedule across the asks to make room, so they never put the next look off; a look
    // missed (a worker busy for long) is made once, not caught up tick by tick.
    let mut looks = tokio::time::interval_at(started + tick, tick);
    looks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = looks.tick() => {}
            () = activity.shed.notified() => {
                // Asked still until it is closed: the accept loop asks no other meanwhile.
                if activity.sheddable(tokio::time::Instant::now()).is_some() {
                    return "closed to make room: the listener full (max_connections, or out of file descriptors) and this connection idle longest";
                }
                activity.shed_asked.store(false, Ordering::Release);
                continue;
            }
        }
        if activity.closed.load(Ordering::Relaxed) {
            return "closed";
        }
        let now = tokio::time::Instant::now();
        let (read, written) = (
            activity.read.load(Ordering::Relaxed),
            activity.written.load(Ordering::Relaxed),
        );
        if (read, written) != last {
            last_change = now;
        }
        if written != last.1 {
            last_write = now;
        }
        last = (read, written);
        // For `Activity::idle_since`: the still time first, so that the bytes, once they
        // match, never pair with an older one.
        activity
            .still_since
            .store(activity.millis(last_change), Ordering::Relaxed);
        activity.seen_written.store(written, Ordering::Relaxed);
        activity.seen_read.store(read, Ordering::Release);
        if activity.requests.load(Ordering::Relaxed) == 0 {
            if now.duration_since(opened) >= timeouts.header_read {
                return "no request head within header_read_timeout";
            }
            continue;
        }
        let head_since = activity.head_since.load(Ordering::Relaxed);
        if head_since != NO_HEAD
            && activity
                .millis(now)
                .saturating_sub(head_since.max(activity.millis(last_write)))
                >= u64::try_from(timeouts.header_read.as_millis()).unwrap_or(u64::MAX)
        {
            return "request head not complete within header_read_timeout";
        }
        // On HTTP/2: how many response bodies are live, once those left untaken are released.
        let live = activity
            .http2
            .load(Ordering::Relaxed)
            .then(|| activity.streams.release_untaken(now, timeouts.keepalive));
        if activity.streams.released() > streams::RELEASED_MOST {
            return "more HTTP/2 responses left untaken than a client leaves by chance";
        }
        let idle = match live {
            Some(live) => live == 0 && activity.streams.still_for(now) >= timeouts.keepalive,
            None => now.duration_since(last_change) >= timeouts.keepalive,
        };
        if activity.in_flight.load(Ordering::Relaxed) == 0 && idle {
            return "idle for keepalive_timeout";
        }
    }
}

/// A socket that counts the bytes it moves, for the watchdog, and holds its connection's place
/// among `max_connections` until it is dropped (after an upgrade, when the splice ends).
struct Counted<T> {
    inner: T,
    activity: Arc<Activity>,
    _place: tokio::sync::OwnedSemaphorePermit,
}

impl<T> Drop for Counted<T> {
    fn drop(&mut self) {
        self.activity.closed.store(true, Ordering::Relaxed);
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.activity.upgraded.load(Ordering::Relaxed) {
            self.activity.poll_upgraded(cx)?;
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.activity.on_read(read);
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
        if self.activity.upgraded.load(Ordering::Relaxed) {
            self.activity.poll_upgraded(cx)?;
        }
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.count(&result);
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if self.activity.upgraded.load(Ordering::Relaxed) {
            self.activity.poll_upgraded(cx)?;
        }
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
                .written
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
    // The watchdog times request heads (see the module's comment). A request head of at most
    // 64 KiB (hyper's default buffer grows to about 400 KB, which a few hundred connections
    // sending heads without their end would hold in memory for `header_read_timeout`).
    builder
        .http1()
        .header_read_timeout(None)
        .max_buf_size(HEAD_MOST);
    // HTTP/2: at most 100 streams a connection (hyper's default is 200), and at most one frame
    // of a response queued in the connection at a time (hyper's default is 400 KB a stream):
    // a client with a wide-open window that stops reading its socket made each stream hold
    // that much, some 80 MB a connection; and the watchdog's "taken" is then what the client
    // took (`streams`). A request's header list as long as an HTTP/1 head (hyper's default of
    // 16 KiB is below a session in cookies at its largest, 8 chunks of 3 800 bytes: such a
    // browser over HTTP/2 got 431 for its own session).
    builder
        .http2()
        .max_concurrent_streams(HTTP2_STREAMS_MOST)
        .max_send_buf_size(streams::FRAME_MOST)
        .max_header_list_size(HEAD_MOST as u32);
    let open = Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    let mut connections = Connections::default();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Per-connection failures are the client's; others need a pause. Out of file
                // descriptors (EMFILE, ENFILE) the listener is as full as with no place left:
                // the connection idle longest is asked to close, as there.
                if !matches!(
                    error.kind(),
                    std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionRefused
                ) {
                    if matches!(
                        error.raw_os_error(),
                        Some(OUT_OF_FILES | OUT_OF_FILES_SYSTEM)
                    ) {
                        // Soon again when one was asked to close, else after a while.
                        let asked = connections.shed_idlest();
                        connections.out_of_files(&error);
                        let pause = if asked { 10 } else { 250 };
                        tokio::time::sleep(Duration::from_millis(pause)).await;
                    } else {
                        tracing::error!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                continue;
            }
        };
        // A connection is served only with a free place, and holds it until it closes. With
        // none free, the connection idle longest is closed to make room (as nginx reuses its
        // idle keep-alive connections), or one is waited for while every one is busy: this
        // one waits accepted, the next ones in the kernel's backlog.
        let place = match open.clone().try_acquire_owned() {
            Ok(place) => place,
            Err(_) => {
                let room = connections.make_room(&open);
                let place = tokio::select! {
                    place = room => place,
                    () = &mut shutdown => break,
                };
                let Ok(place) = place else { break };
                place
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
        let activity = Arc::new(Activity::new());
        connections.add(&activity);
        let service = {
            let activity = activity.clone();
            hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                let version = request.version();
                // Where hyper will hand the socket over (it put the upgrade there): a lookup in
                // extensions that are empty for every other request, unlike a header lookup.
                if version < hyper::Version::HTTP_2
                    && request
                        .extensions()
                        .get::<hyper::upgrade::OnUpgrade>()
                        .is_some()
                {
                    request
                        .extensions_mut()
                        .insert(UpgradeCut(activity.clone()));
                }
                let in_flight = InFlight::begin(&activity, version);
                activity.body_sent.store(
                    !hyper::body::Body::is_end_stream(request.body()),
                    Ordering::Relaxed,
                );
                let response = hyper::service::Service::call(&inner, request);
                async move {
                    let response = response.await;
                    if let Ok(response) = &response
                        && response.status() == hyper::StatusCode::SWITCHING_PROTOCOLS
                    {
                        in_flight.0.upgrade();
                    }
                    let streams = in_flight.0.streams.clone();
                    drop(in_flight);
                    response.map(|response| {
                        response.map(|body| {
                            if version == hyper::Version::HTTP_2 {
                                streams.watch(body)
                            } else {
                                streams.watch_plain(body)
                            }
                        })
                    })
                }
            })
        };
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let tls = tls.clone();
        workers.next().spawn(async move {
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
                _place: place,
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
                // Dropping the connection closes it, and ends its HTTP/2 streams' tasks.
                reason = watchdog(activity.clone(), timeouts) => {
                    tracing::debug!(reason, "connection closed");
                    return;
                }
            }
            // The socket went on to the splice, with the connection's place: idle for
            // `keepalive`, it is cut, which ends the splice.
            if activity.upgraded.load(Ordering::Relaxed) {
                let reason = watchdog(activity.clone(), timeouts).await;
                activity.cut();
                tracing::debug!(reason, "upgraded connection ended");
            }
        });
    }
    drop(listener);
    // Bounded: a response that never ends (a stream, a client that stopped reading one) would
    // hold the drain, and with it the memory store's last write, until the orchestrator kills
    // the process (Kubernetes: 30 s after SIGTERM).
    if tokio::time::timeout(DRAIN_LIMIT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            seconds = DRAIN_LIMIT.as_secs(),
            "connections still busy after the drain limit are not waited for"
        );
    }
    Ok(())
}

/// The open connections of a listener, as its accept loop knows them: to make room for a new
/// one when `max_connections` are open.
#[derive(Default)]
struct Connections {
    /// Each open connection's activity, and some closed ones' until the next sweep.
    open: Vec<std::sync::Weak<Activity>>,
    /// The connection last asked to close, until it has closed or said no: one at a time, so
    /// a worker slow to answer does not cost several connections for one place.
    asked: std::sync::Weak<Activity>,
    /// The length of `open` at which closed ones are swept out.
    sweep_at: usize,
    /// How many were closed to make room since the last warning, and when that was.
    shed: u64,
    warned: Option<tokio::time::Instant>,
    /// How many accepts failed out of file descriptors since the last warning, and when that
    /// was.
    out_of_files: u64,
    out_of_files_warned: Option<tokio::time::Instant>,
}

/// How often a full listener looks again for an idle connection while every one is busy.
const ROOM_LOOK_EVERY: Duration = Duration::from_millis(250);

/// How long a connection must have been idle to be closed to make room.
const SHED_IDLE_LEAST: Duration = Duration::from_secs(1);

/// How often, at most, a full listener's closing of idle connections is warned about.
const SHED_WARN_EVERY: Duration = Duration::from_secs(60);

impl Connections {
    fn add(&mut self, activity: &Arc<Activity>) {
        // Swept each time it doubled since the last sweep: a constant cost per connection.
        if self.open.len() >= self.sweep_at {
            self.open.retain(|activity| activity.strong_count() > 0);
            self.sweep_at = (2 * self.open.len()).max(64);
        }
        self.open.push(Arc::downgrade(activity));
    }

    /// Asks the connection idle longest, if one is, to close (it does unless it has become busy
    /// since).
    fn shed_idlest(&mut self) -> bool {
        if self.asked.upgrade().is_some_and(|asked| {
            asked.shed_asked.load(Ordering::Acquire) && !asked.closed.load(Ordering::Relaxed)
        }) {
            return true;
        }
        self.open.retain(|activity| activity.strong_count() > 0);
        let now = tokio::time::Instant::now();
        let idlest = self
            .open
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .filter(|activity| !activity.shed_asked.load(Ordering::Acquire))
            .filter_map(|activity| Some((activity.sheddable(now)?, activity)))
            .min_by_key(|(since, _)| *since);
        let Some((_, activity)) = idlest else {
            return false;
        };
        activity.shed_asked.store(true, Ordering::Release);
        activity.shed.notify_one();
        self.asked = Arc::downgrade(&activity);
        self.shed += 1;
        if self
            .warned
            .is_none_or(|warned| now.duration_since(warned) >= SHED_WARN_EVERY)
        {
            tracing::warn!(
                closed = self.shed,
                "server.max_connections or the open-file limit reached: idle connections are \
                 closed to make room"
            );
            self.warned = Some(now);
            self.shed = 0;
        }
        true
    }

    /// Counts an accept that failed out of file descriptors, and says so at most once a
    /// `SHED_WARN_EVERY`.
    fn out_of_files(&mut self, error: &std::io::Error) {
        self.out_of_files += 1;
        let now = tokio::time::Instant::now();
        if self
            .out_of_files_warned
            .is_none_or(|warned| now.duration_since(warned) >= SHED_WARN_EVERY)
        {
            tracing::warn!(%error, failed = self.out_of_files, "accept failed: out of file descriptors");
            self.out_of_files_warned = Some(now);
            self.out_of_files = 0;
        }
    }

    /// A free place among `open`'s: the idle connection closed to make room, or the first one
    /// busy connection that closes.
    async fn make_room(
        &mut self,
        places: &Arc<tokio::sync::Semaphore>,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, tokio::sync::AcquireError> {
        loop {
            self.shed_idlest();
            tokio::select! {
                place = places.clone().acquire_owned() => return place,
                () = tokio::time::sleep(ROOM_LOOK_EVERY) => {}
            }
        }
    }
}

/// `EMFILE`: the process's open files are all taken.
const OUT_OF_FILES: i32 = rustix::io::Errno::MFILE.raw_os_error();
/// `ENFILE`: the system's open files are all taken.
const OUT_OF_FILES_SYSTEM: i32 = rustix::io::Errno::NFILE.raw_os_error();

/// The longest HTTP/1 request head read, and HTTP/2 header list (431 beyond; nginx's own is
/// 4 × 8 KiB).
const HEAD_MOST: usize = 64 * 1024;

/// The most streams an HTTP/2 client may have open on one connection (nginx's is 128).
const HTTP2_STREAMS_MOST: u32 = 100;

/// The longest a shutdown waits for the requests in flight: less than Kubernetes' default
/// 30 s grace, so the memory store's flush and the last spans still go out.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(20);

#[cfg(test)]
mod tests {
    use super::*;

    /// An activity the watchdog looked at `still_ms` after it opened, with nothing moved since.
    fn looked_at(still_ms: u64) -> Arc<Activity> {
        let activity = Arc::new(Activity::new());
        activity.seen_read.store(0, Ordering::Relaxed);
        activity.still_since.store(still_ms, Ordering::Relaxed);
        activity
    }

    #[tokio::test(start_paused = true)]
    async fn the_connection_idle_longest_is_asked_to_make_room_and_a_busy_one_never() {
        let recent = looked_at(900);
        let longest = looked_at(100);
        let unseen = Arc::new(Activity::new());
        let in_flight = looked_at(0);
        let _request = InFlight::begin(&in_flight, hyper::Version::HTTP_11);
        let writing = looked_at(0);
        let _body = writing.streams.watch_plain(axum::body::Body::empty());
        let moved = looked_at(0);
        let mut connections = Connections::default();
        for activity in [&recent, &longest, &unseen, &in_flight, &writing, &moved] {
            connections.add(activity);
        }
        let asked = |activity: &Arc<Activity>| activity.shed_asked.load(Ordering::Relaxed);
        // Idle for less than `SHED_IDLE_LEAST`: a client between two requests.
        connections.shed_idlest();
        assert!(!asked(&longest) && !asked(&recent));
        tokio::time::advance(SHED_IDLE_LEAST * 2).await;
        // A byte read since the watchdog looked makes an idle connection busy.
        moved.on_read(1);

        connections.shed_idlest();
        assert!(asked(&longest));
        assert!(!asked(&recent));
        // One ask at a time: the next is asked once the first has closed.
        connections.shed_idlest();
        assert!(!asked(&recent));
        longest.closed.store(true, Ordering::Relaxed);
        connections.shed_idlest();
        assert!(asked(&recent));
        recent.closed.store(true, Ordering::Relaxed);
        connections.shed_idlest();
        for busy in [&unseen, &in_flight, &writing, &moved] {
            assert!(!asked(busy));
        }
    }
}
