//! The tracked link's socket, made by Tollgate rather than by the redis crate so that a request
//! can ask whether Redis has said something this process has not read yet.
//!
//! Redis writes an invalidation to a tracking connection in the same turn of its event loop as
//! the reply to the command that caused it, and a delete that ends a session is answered as
//! done only after one more round trip (`RedisConnection::query_confirmed` asks `INFO
//! replication`, which Redis reads in a later turn). So by the time a logout on another
//! replica is confirmed, its invalidation has left Redis, and on one host it is in this
//! process's socket (across a network, unless its packet is delayed by more than that round
//! trip and the client's next request). A kept copy may be used only when nothing is waiting there and the
//! connection's reader is not in the middle of handing over what it read ([`Watch::settled`]):
//! a replica whose reader is starved of CPU reads Redis instead of answering from a copy that
//! an unread invalidation has already ended (SPEC §12, "from the next request on").
//!
//! The reader (the redis crate's connection task) asks the stream for bytes only when every
//! whole message it holds has been handed over; it hands invalidations over synchronously. So
//! "settled" is: the socket has nothing unread, and the reader's last read ended in `Pending`.
//! A read is marked as under way before it starts, so no bytes are ever out of the socket
//! without the mark.
//!
//! An empty socket says nothing when the link has gone silent (Redis's host lost, a network
//! partition, a NAT entry dropped: no FIN, no RST), and then invalidations stop arriving
//! unseen. So "settled" also needs bytes from Redis within [`HEARD_WITHIN`]; the link asks
//! for them with a `PING` every [`HEARTBEAT`] (`single`). Over a link silent for longer,
//! reads go to Redis (and fail while it cannot be reached) instead of to the copies.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, RedisError, RedisResult};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{TIMEOUT, timed_out};

/// How often a link that keeps copies pings Redis.
pub const HEARTBEAT: Duration = Duration::from_millis(250);

/// How recently a link must have read bytes from Redis for its copies to be used: a few
/// heartbeats, so a busy worker that answers one late does not turn copies off.
pub const HEARD_WITHIN: Duration = Duration::from_secs(1);

/// When a link last read bytes from Redis: milliseconds since the link was made.
struct Heard {
    made: Instant,
    at: AtomicU64,
}

impl Heard {
    fn now(&self) -> u64 {
        u64::try_from(self.made.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn mark(&self) {
        self.at.store(self.now(), Ordering::SeqCst);
    }

    fn within(&self, limit: Duration) -> bool {
        let limit = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        self.now().saturating_sub(self.at.load(Ordering::SeqCst)) <= limit
    }
}

/// A link's socket, seen from outside its reader.
pub(super) struct Watch {
    /// The same socket as the link's (a second descriptor of it), for peeking only.
    socket: std::net::TcpStream,
    /// Set before the reader reads; cleared when a read finds nothing (`Pending`).
    reading: Arc<AtomicBool>,
    /// When the reader last read bytes.
    heard: Arc<Heard>,
}

impl Watch {
    /// Whether everything Redis has sent on this link so far has been handed over by the
    /// reader: nothing waits in the socket, no read is being handed over, and Redis was heard
    /// within [`HEARD_WITHIN`]. A closed, failed or silent socket is never settled.
    pub(super) fn settled(&self) -> bool {
        // The socket first, then the mark: bytes taken out after the peek carry the mark.
        let waiting = match self.socket.peek(&mut [0_u8; 1]) {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => false,
            // Bytes, the end of the stream, or an error.
            _ => true,
        };
        !waiting && !self.reading.load(Ordering::SeqCst) && self.heard.within(HEARD_WITHIN)
    }
}

/// A stream that marks its reads for [`Watch`].
struct Watched<S> {
    inner: S,
    reading: Arc<AtomicBool>,
    heard: Arc<Heard>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.reading.store(true, Ordering::SeqCst);
        let before = buf.filled().len();
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        match &read {
            Poll::Pending => self.reading.store(false, Ordering::SeqCst),
            Poll::Ready(Ok(())) if buf.filled().len() > before => self.heard.mark(),
            Poll::Ready(_) => {}
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Connects to the server of `info` (TCP, or TLS with `tls`, the link's client configuration
/// made with its config), sets the connection up as the redis crate does (`HELLO`, `AUTH`,
/// `SELECT`) and starts its reader; returns the connection and its [`Watch`]. `None` for an
/// address this cannot watch (a Unix socket, TLS without certificate checks): such a link
/// keeps no copies.
pub(super) async fn connect(
    info: &ConnectionInfo,
    tls: Option<&Arc<rustls::ClientConfig>>,
    config: AsyncConnectionConfig,
) -> RedisResult<Option<(MultiplexedConnection, Watch)>> {
    let (host, port, secure) = match info.addr() {
        ConnectionAddr::Tcp(host, port) => (host, *port, false),
        ConnectionAddr::TcpTls {
            host,
            port,
            insecure: false,
            ..
        } => (host, *port, true),
        _ => return Ok(None),
    };
    let made = async {
        let stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        stream.set_nodelay(true)?;
        let std = stream.into_std()?;
        let socket = std.try_clone()?;
        let stream = tokio::net::TcpStream::from_std(std)?;
        let reading = Arc::new(AtomicBool::new(false));
        let heard = Arc::new(Heard {
            made: Instant::now(),
            at: AtomicU64::new(0),
        });
        let watch = Watch {
            socket,
            reading: reading.clone(),
            heard: heard.clone(),
        };
        let settings = info.redis_settings();
        let connection = if secure {
            let name = rustls::pki_types::ServerName::try_from(host.as_str())
                .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?
                .to_owned();
            // Made with the link (`RedisConnection::new`), never here: a reconnect reads no
            // files, and keeps the trust its config was built with.
            let tls = tls.cloned().ok_or_else(|| {
                RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "Redis TLS",
                    "a TLS address for a link made without TLS".to_owned(),
                ))
            })?;
            let stream = tokio_rustls::TlsConnector::from(tls)
                .connect(name, stream)
                .await?;
            start(settings, stream, (reading, heard), config).await?
        } else {
            start(settings, stream, (reading, heard), config).await?
        };
        Ok::<_, RedisError>(Some((connection, watch)))
    };
    tokio::time::timeout(TIMEOUT, made)
        .await
        .map_err(|_| timed_out())?
}

/// Sets a connection up over `stream`, its reads marked in `reading` and `heard`, and starts
/// its reader (which ends when the last clone of the connection is dropped).
async fn start<S>(
    settings: &redis::RedisConnectionInfo,
    stream: S,
    (reading, heard): (Arc<AtomicBool>, Arc<Heard>),
    config: AsyncConnectionConfig,
) -> RedisResult<MultiplexedConnection>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let watched = Watched {
        inner: stream,
        reading,
        heard,
    };
    let (connection, driver) =
        MultiplexedConnection::new_with_config(settings, watched, config).await?;
    tokio::spawn(driver);
    Ok(connection)
}
