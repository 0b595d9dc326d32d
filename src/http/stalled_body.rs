//! A body that fails when no frame arrives for a while: an upstream that stalls mid-body is
//! cut off after the route's `read_timeout`, and a client that stalls mid-body after
//! `keepalive_timeout` (SPEC §9: slow clients are cut off), so neither holds a connection, an
//! upstream connection or a shutdown's drain for ever. A client's body must also keep an
//! average of [`CLIENT_MIN_RATE`] once `keepalive_timeout` has passed (as Apache's
//! `mod_reqtimeout` `MinRate`): one that trickles a byte now and then would else hold its
//! connection's place for as long as it likes.

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
    /// A client's request body, cut off after `keepalive_timeout` without data, or once it
    /// falls below [`CLIENT_MIN_RATE`] beyond it.
    #[error(
        "the client's request body stalled (nothing for keepalive_timeout) or trickled (below 500 bytes a second beyond it)"
    )]
    Client,
}

/// The bytes a second a client's request body must average beyond its first
/// `keepalive_timeout` (Apache `mod_reqtimeout`'s default `MinRate`): each byte adds its share
/// of a second to the time the whole body may take.
pub const CLIENT_MIN_RATE: u64 = 500;

/// `inner`, failing with `side` when no frame arrives for `timeout` while one is awaited (and,
/// for a client's body, when it falls below [`CLIENT_MIN_RATE`] after `timeout`).
pub struct StallGuard<B> {
    inner: B,
    timeout: Duration,
    side: Stalled,
    /// A client's body: when it was first awaited, and the bytes it brought since.
    budget: Option<(tokio::time::Instant, u64)>,
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
            budget: None,
            sleep: None,
            waiting: false,
        }
    }

    /// When a client's body that brought `received` bytes since `started` has had its time.
    fn budget_end(&self) -> Option<tokio::time::Instant> {
        let (started, received) = self.budget?;
        let earned = Duration::from_millis(received.saturating_mul(1000) / CLIENT_MIN_RATE);
        Some(started + self.timeout + earned)
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
        use hyper::body::Buf as _;
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                if let (Some((_, received)), Some(Ok(frame))) = (&mut this.budget, &frame) {
                    let bytes = frame.data_ref().map_or(0, |data| data.remaining());
                    *received = received.saturating_add(bytes as u64);
                }
                Poll::Ready(frame.map(|result| result.map_err(Into::into)))
            }
            Poll::Pending => {
                if this.side == Stalled::Client && this.budget.is_none() {
                    this.budget = Some((tokio::time::Instant::now(), 0));
                }
                let (timeout, budget_end) = (this.timeout, this.budget_end());
                let deadline = move || {
                    let stalled = tokio::time::Instant::now() + timeout;
                    budget_end.map_or(stalled, |end| end.min(stalled))
                };
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
                                tracing::info!(
                                    "client stalled or too slow mid-body; request cut off"
                                );
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
