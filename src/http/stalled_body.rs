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
    /// Made at the first wait and reset at each later one (one timer, not one per frame).
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Whether a frame is owed now: the sleep runs from the first `Pending` after a frame.
    waiting: bool,
}

impl<B> StallGuard<B> {
    /// `inner`, cut off after `timeout` without a frame.
    pub fn new(inner: B, timeout: Duration, side: Stalled) -> Self {
        Self {
            inner,
            timeout,
            side,
            sleep: None,
            waiting: false,
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
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                Poll::Ready(frame.map(|result| result.map_err(Into::into)))
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let deadline = move || tokio::time::Instant::now() + timeout;
                let sleep = match &mut this.sleep {
                    Some(sleep) => {
                        if !this.waiting {
                            sleep.as_mut().reset(deadline());
                        }
                        sleep
                    }
                    None => this
                        .sleep
                        .insert(Box::pin(tokio::time::sleep_until(deadline()))),
                };
                this.waiting = true;
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        match this.side {
                            Stalled::Upstream => {
                                tracing::warn!("upstream stalled mid-body; response cut off");
                            }
                            Stalled::Client => {
                                tracing::info!("client stalled mid-body; request cut off");
                            }
                        }
                        Poll::Ready(Some(Err(this.side.into())))
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
