//! A body that fails when no frame arrives for a while: an upstream that stalls mid-body is
//! cut off after the route's `read_timeout`, and a client that stalls mid-body after
//! `keepalive_timeout` (SPEC §9: slow clients are cut off), so neither holds a connection, an
//! upstream connection or a shutdown's drain for ever.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Whose body it is: what its error and log line say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Stalled {
    /// An upstream's response body, cut off after the route's `read_timeout`.
    #[error("the upstream sent no data within the route's read_timeout")]
    Upstream,
    /// A client's request body, cut off after `keepalive_timeout`.
    #[error("the client sent no request body data within keepalive_timeout")]
    Client,
}

/// `inner`, failing with `side` when no frame arrives for `timeout` while one is awaited.
pub struct StallGuard<B> {
    inner: B,
    timeout: Duration,
    side: Stalled,
    /// Armed while the next frame is owed; dropped whenever one comes.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> StallGuard<B> {
    /// `inner`, cut off after `timeout` without a frame.
    pub fn new(inner: B, timeout: Duration, side: Stalled) -> Self {
        Self {
            inner,
            timeout,
            side,
            sleep: None,
        }
    }
}

impl<B> hyper::body::Body for StallGuard<B>
where
    B: hyper::body::Body + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = B::Data;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                self.sleep = None;
                Poll::Ready(frame.map(|result| result.map_err(Into::into)))
            }
            Poll::Pending => {
                let timeout = self.timeout;
                let sleep = self
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        match self.side {
                            Stalled::Upstream => {
                                tracing::warn!("upstream stalled mid-body; response cut off");
                            }
                            Stalled::Client => {
                                tracing::info!("client stalled mid-body; request cut off");
                            }
                        }
                        Poll::Ready(Some(Err(self.side.into())))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
