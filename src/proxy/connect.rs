//! Opening one upstream connection: TCP, then for an https upstream TLS (SNI and verification
//! by the upstream URL's host, trust as the route says), then the HTTP handshake: HTTP/2 when
//! the upstream chose `h2` by ALPN, else HTTP/1.1. The whole is cut off at `connect_timeout`.

use std::time::Duration;

use axum::body::Body;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::Upstream;

/// Why a request got no response: connecting failed or timed out, or the connection failed
/// before a response arrived.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SendError(String);

impl SendError {
    pub(super) fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }
}

/// How much of a response an HTTP/2 upstream may send ahead of what Tollgate read, per stream:
/// Tollgate reads as its client takes, so a client that never reads holds this much of the
/// shared connection's window. hyper's 2 MiB let three such clients fill the connection's
/// 5 MiB, stalling every other response of the worker. 256 KiB still moves 25 MB/s a stream
/// at 10 ms round trips.
const H2_STREAM_WINDOW: u32 = 256 * 1024;

/// A shared connection's window: more than its 100 streams (`pool::STREAMS_PER_CONNECTION`)
/// that never read can fill, and it bounds what one connection buffers; a worker keeps at
/// most `pool::CONNECTIONS_MOST` to one upstream.
const H2_CONNECTION_WINDOW: u32 = 128 * H2_STREAM_WINDOW;

/// The most an HTTP/1.1 upstream connection reads ahead of what its response's client took.
const UPSTREAM_READ_MOST: usize = 64 * 1024;

/// How often a shared HTTP/2 connection is pinged, and how long its answer may take before
/// the connection is closed.
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// A new connection's request sender.
pub enum Connection {
    /// One request at a time; pooled while idle.
    Http1(http1::SendRequest<Body>),
    /// Many requests at once; shared while open.
    Http2(http2::SendRequest<Body>),
}

/// Connects to `upstream`. `http1_only` keeps an https upstream from choosing HTTP/2 (an
/// upgrade needs HTTP/1.1).
///
/// # Errors
/// When connecting, the TLS handshake (an upstream certificate that does not verify) or the
/// HTTP handshake fails, or all of it takes longer than `connect_timeout`.
pub async fn connect(
    upstream: &Upstream,
    connect_timeout: Duration,
    http1_only: bool,
) -> Result<Connection, SendError> {
    // Boxed: a new connection is rare next to the requests that reuse one, and its future
    // (TLS and the handshake) is kilobytes that each proxied request would carry otherwise.
    tokio::time::timeout(connect_timeout, Box::pin(open(upstream, http1_only)))
        .await
        .map_err(|_| SendError::new("connecting timed out"))?
}

async fn open(upstream: &Upstream, http1_only: bool) -> Result<Connection, SendError> {
    let stream = tokio::net::TcpStream::connect(upstream.address())
        .await
        .map_err(|error| SendError::new(format!("cannot connect: {error}")))?;
    // Requests and responses are whole messages: waiting to fill segments only adds latency.
    stream
        .set_nodelay(true)
        .map_err(|error| SendError::new(error.to_string()))?;
    let Some(tls) = upstream.tls() else {
        return http1(stream).await;
    };
    let config = if http1_only {
        tls.http1_only.clone()
    } else {
        tls.any_version.clone()
    };
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(tls.server_name.clone(), stream)
        .await
        .map_err(|error| SendError::new(format!("TLS handshake failed: {error}")))?;
    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        // The connection is shared and kept while open: pings find one that died silently
        // (a dropped NAT entry) before a request waits on it.
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .initial_stream_window_size(H2_STREAM_WINDOW)
            .initial_connection_window_size(H2_CONNECTION_WINDOW)
            .keep_alive_interval(H2_PING_INTERVAL)
            .keep_alive_timeout(H2_PING_TIMEOUT)
            .keep_alive_while_idle(true)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|error| SendError::new(error.to_string()))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "upstream connection ended");
            }
        });
        return Ok(Connection::Http2(sender));
    }
    http1(stream).await
}

async fn http1<T>(stream: T) -> Result<Connection, SendError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // A response is read at most 64 KiB at a time (hyper's buffer grows to about 400 KB):
    // what an HTTP/2 client that stops reading leaves held in Tollgate, per stream, is a few
    // such reads.
    let (sender, connection) = http1::Builder::new()
        .max_buf_size(UPSTREAM_READ_MOST)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|error| SendError::new(error.to_string()))?;
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%error, "upstream connection ended");
        }
    });
    Ok(Connection::Http1(sender))
}
