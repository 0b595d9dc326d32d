//! A body that fails when no frame arrives for a while: an upstream that stalls mid-body is
//! cut off after the route's `read_timeout`, and a client that stalls mid-body after
//! `keepalive_timeout` (SPEC §9: slow clients are cut off), so neither holds a connection, an
//! upstream connection or a shutdown's drain for ever. A client's body must begin within
//! `header_read_timeout` (as its head must: a head whose body never begins held its place for
//! `keepalive_timeout`, 75 s by default, and was never shed, being in flight). It must also keep an
//! average of [`CLIENT_MIN_RATE`] once `keepalive_timeout` has passed (as Apache's
//! `mod_reqtimeout` `MinRate`): one that trickles a byte now and then would else hold its
//! connection's place for as long as it likes.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

/// Whose body it is: what its error and log line say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Stalled {
    /// An upstream's response body, cut off after the route's `read_timeout`.
    #[error("the upstream sent no data within the route's read_timeout")]
    Upstream,
    /// A client's request body, cut off when it does not begin within `header_read_timeout`,
    /// after `keepalive_timeout` without data, or once it falls below [`CLIENT_MIN_RATE`]
    /// beyond it.
    #[error(
        "the client's request body did not begin (within header_read_timeout), stalled (nothing for keepalive_timeout) or trickled (below 500 bytes a second beyond it)"
    )]
    Client,
}

/// A request body's exemption from [`CLIENT_MIN_RATE`], kept in the request's extensions. Its
/// route grants it once a signed-in caller's request goes to an upstream as a stream (a
/// proxied gRPC or Connect request): never an anonymous one's, nor a body that Tollgate's own
/// endpoints read, whatever the client says its content is.
#[derive(Clone)]
pub struct StreamExemption(Arc<AtomicBool>);

impl StreamExemption {
    /// The body is a stream's: cut off only when it stalls.
    pub fn grant(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The bytes a second a client's request body must average beyond its first
/// `keepalive_timeout` of waiting (Apache `mod_reqtimeout`'s default `MinRate`): each byte
/// adds its share of a second to the time the body may keep Tollgate waiting.
pub const CLIENT_MIN_RATE: u64 = 500;

/// `inner`, failing with `side` when no frame arrives for `timeout` while one is awaited (and,
/// for a client's body, once it kept Tollgate waiting longer than `timeout` and its share for
/// the bytes it brought, at [`CLIENT_MIN_RATE`]). Only time spent waiting on the body counts:
/// an upstream that stops taking a request body does not make its client too slow.
pub struct StallGuard<B> {
    inner: B,
    timeout: Duration,
    side: Stalled,
    /// Whether a client's body must keep [`CLIENT_MIN_RATE`], unless `exemption` was granted.
    min_rate: bool,
    exemption: Option<Arc<AtomicBool>>,
    /// The longest a client's body may take to bring its first byte, unless exempt.
    first_byte_within: Option<Duration>,
    /// The time spent waiting on the body before the present wait, and the bytes it brought.
    waited: Duration,
    received: u64,
    /// Made at the first wait and reset at each later one (one timer, not one per frame).
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// When the present wait began, while a frame is owed: the sleep runs from the first
    /// `Pending` after a frame.
    waiting_since: Option<tokio::time::Instant>,
}

impl<B> StallGuard<B> {
    /// `inner`, cut off after `timeout` without a frame.
    pub fn new(inner: B, timeout: Duration, side: Stalled) -> Self {
        Self {
            inner,
            timeout,
            side,
            min_rate: side == Stalled::Client,
            exemption: None,
            first_byte_within: None,
            waited: Duration::ZERO,
            received: 0,
            sleep: None,
            waiting_since: None,
        }
    }

    /// This guard, and the exemption from the minimum rate that whoever learns where the body
    /// goes may grant it: a stream's body (gRPC's client and bidirectional streams send a
    /// message when they have one) is then cut off only when it stalls.
    #[must_use]
    pub fn exemptible(mut self) -> (Self, StreamExemption) {
        let exemption = Arc::new(AtomicBool::new(false));
        self.exemption = Some(exemption.clone());
        (self, StreamExemption(exemption))
    }

    /// This guard, cutting off a client's body whose first byte has not come within `limit`
    /// of waiting (the head's `header_read_timeout`), unless exempt from the minimum rate.
    #[must_use]
    pub fn first_byte_within(mut self, limit: Duration) -> Self {
        self.first_byte_within = Some(limit);
        self
    }

    /// How long a wait beginning now may last: `timeout`, or less when the body's waiting
    /// allowance (with the minimum rate) is nearly spent.
    fn wait_allowed(&self) -> Duration {
        let exempt = self
            .exemption
            .as_ref()
            .is_some_and(|exemption| exemption.load(Ordering::Relaxed));
        if !self.min_rate || exempt {
            return self.timeout;
        }
        let earned = Duration::from_millis(self.received.saturating_mul(1000) / CLIENT_MIN_RATE);
        let allowance = self.timeout.saturating_add(earned);
        let allowed = allowance.saturating_sub(self.waited).min(self.timeout);
        match self.first_byte_within {
            Some(limit) if self.received == 0 => allowed.min(limit.saturating_sub(self.waited)),
            _ => allowed,
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
        use hyper::body::Buf as _;
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(since) = this.waiting_since.take() {
                    this.waited = this.waited.saturating_add(since.elapsed());
                }
                if let Some(Ok(frame)) = &frame {
                    let bytes = frame.data_ref().map_or(0, |data| data.remaining());
                    this.received = this.received.saturating_add(bytes as u64);
                }
                Poll::Ready(frame.map(|result| result.map_err(Into::into)))
            }
            Poll::Pending => {
                if this.waiting_since.is_none() {
                    let now = tokio::time::Instant::now();
                    let deadline = now + this.wait_allowed();
                    this.waiting_since = Some(now);
                    match &mut this.sleep {
                        Some(sleep) => sleep.as_mut().reset(deadline),
                        None => this.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                }
                let Some(sleep) = &mut this.sleep else {
                    return Poll::Pending;
                };
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

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;

    /// A body whose frames come through a channel, as a client sends them.
    struct Fed(tokio::sync::mpsc::Receiver<axum::body::Bytes>);

    impl hyper::body::Body for Fed {
        type Data = axum::body::Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
            self.0
                .poll_recv(cx)
                .map(|data| data.map(|data| Ok(hyper::body::Frame::data(data))))
        }
    }

    /// A byte every 5 s never stalls for a `timeout` of 10 s, and falls below the minimum
    /// rate once the first 10 s (and the 2 ms each byte earns) are gone: cut off, unless the
    /// body is a stream's.
    #[tokio::test(start_paused = true)]
    async fn a_trickling_client_body_is_cut_off_and_a_streams_is_not() {
        for streaming in [false, true] {
            let (sender, receiver) = tokio::sync::mpsc::channel(4);
            let (mut body, exemption) =
                StallGuard::new(Fed(receiver), Duration::from_secs(10), Stalled::Client)
                    .exemptible();
            if streaming {
                exemption.grant();
            }
            let feeder = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    if sender
                        .send(axum::body::Bytes::from_static(b"a"))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
            let mut frames = 0;
            let cut_off = loop {
                match body.frame().await {
                    Some(Ok(_)) if frames == 9 => break false,
                    Some(Ok(_)) => frames += 1,
                    Some(Err(_)) => break true,
                    None => panic!("the body ended"),
                }
            };
            feeder.abort();
            assert_eq!(
                cut_off, !streaming,
                "streaming: {streaming}, after {frames} frames"
            );
            if cut_off {
                assert_eq!(frames, 2, "cut off once 10 s passed, not before");
            }
        }
    }

    /// Only time spent waiting on the client counts: an upstream that stopped taking the body
    /// for a while (the guard not polled) leaves the client's allowance as it was, and what
    /// the client sent meanwhile is taken at once.
    #[tokio::test(start_paused = true)]
    async fn time_the_body_was_not_asked_for_is_not_the_clients() {
        let (sender, receiver) = tokio::sync::mpsc::channel(200);
        let mut body = StallGuard::new(Fed(receiver), Duration::from_secs(10), Stalled::Client);
        let feeder = tokio::spawn(async move {
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = sender.send(axum::body::Bytes::from_static(b"a")).await;
            }
        });
        body.frame().await.unwrap().unwrap();
        // The upstream takes nothing for 60 s: the client's next 60 bytes wait in the channel.
        tokio::time::sleep(Duration::from_secs(60)).await;
        // Those, then five more a second apart: 6 s of waiting in all, within the 10 s.
        for _ in 0..65 {
            body.frame().await.unwrap().unwrap();
        }
        feeder.abort();
    }

    /// A body that keeps the rate, however long it runs, is never cut off.
    #[tokio::test(start_paused = true)]
    async fn a_client_body_at_the_minimum_rate_runs_to_its_end() {
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        let mut body = StallGuard::new(Fed(receiver), Duration::from_secs(10), Stalled::Client);
        let feeder = tokio::spawn(async move {
            // 1000 bytes a second for 100 s, in one frame a second.
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = sender.send(axum::body::Bytes::from(vec![b'a'; 1000])).await;
            }
        });
        let mut received = 0;
        while let Some(frame) = body.frame().await {
            received += frame.unwrap().into_data().unwrap().len();
        }
        feeder.await.unwrap();
        assert_eq!(received, 100_000);
    }
}
