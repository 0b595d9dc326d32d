//! The responses of an HTTP/2 connection, as the watchdog sees them (`serve::watchdog`).
//!
//! hyper polls an HTTP/2 response body for its next frame only once the client's flow-control
//! window lets the last one out. A client that keeps a stream's window shut would hold the
//! body, and the upstream connection behind it, for ever; PINGs would keep bytes moving, so no
//! idle rule counted from bytes would ever end the connection. So each response body is
//! [`Watched`]: it gives at most [`FRAME_MOST`] bytes at a time and notes when it gave a frame
//! and when the frame was taken. A frame left untaken for `keepalive_timeout` releases that
//! response's body (and its upstream connection); the stream fails when next polled (hyper
//! then resets it), while the connection's other streams go on. And an HTTP/2 connection is
//! idle when no request is in flight, no response body is live, and no stream did anything
//! for `keepalive_timeout`: PINGs do not count.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

/// The most bytes an HTTP/2 response body gives at once: one DATA frame at the protocol's
/// default size. A client taking less than this per `keepalive_timeout` (75 s: about 220
/// bytes a second) loses the response.
pub const FRAME_MOST: usize = 16 * 1024;

/// `Outgoing::given` while no frame waits to be taken.
const NOT_GIVEN: u64 = u64::MAX;

/// What the streams of one HTTP/2 connection did.
pub struct Streams {
    opened: tokio::time::Instant,
    /// When a stream last did something (a request began or was answered, a response frame
    /// was given or taken), in milliseconds after `opened`.
    moved: AtomicU64,
    /// The response bodies in flight.
    responses: Mutex<Vec<Arc<Outgoing>>>,
    /// How many released responses are still open: each keeps its stream, and the frame hyper
    /// holds for it, until the client opens its window or resets it.
    released: AtomicUsize,
    /// How many HTTP/1 response bodies are being written (a streamed one may be quiet for
    /// long; a connection writing one is not idle, whatever its bytes say).
    plain: AtomicUsize,
}

/// The most released responses a connection may hold open: beyond, the client is not reading
/// on purpose, and its connection is closed (each holds a stream and up to [`FRAME_MOST`]).
pub const RELEASED_MOST: usize = 16;

/// One response body in flight, shared by its [`Watched`] body and the watchdog.
pub struct Outgoing {
    /// `None` once released.
    source: Mutex<Option<Source>>,
    /// When a frame was given and not taken since, in milliseconds after `opened`; else
    /// [`NOT_GIVEN`].
    given: AtomicU64,
}

struct Source {
    body: axum::body::Body,
    /// What is left of a data frame longer than [`FRAME_MOST`].
    rest: Option<hyper::body::Bytes>,
}

/// The error a released body fails with.
#[derive(Debug, thiserror::Error)]
#[error("the client took nothing of this response for keepalive_timeout")]
struct Released;

impl Streams {
    /// The streams of a connection opened at `opened`.
    pub fn new(opened: tokio::time::Instant) -> Self {
        Self {
            opened,
            moved: AtomicU64::new(0),
            responses: Mutex::new(Vec::new()),
            released: AtomicUsize::new(0),
            plain: AtomicUsize::new(0),
        }
    }

    /// `body`, an HTTP/1 response's, counted among the bodies being written while it lasts.
    pub fn watch_plain(self: &Arc<Self>, body: axum::body::Body) -> Watched {
        self.plain.fetch_add(1, Ordering::Relaxed);
        Watched::Plain {
            body,
            streams: self.clone(),
        }
    }

    /// Whether no response body is being written, on either protocol.
    pub fn none_live(&self) -> bool {
        self.plain.load(Ordering::Relaxed) == 0
            && self
                .responses
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
    }

    fn millis(&self, at: tokio::time::Instant) -> u64 {
        u64::try_from(at.duration_since(self.opened).as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// A stream did something now.
    pub fn moved(&self) {
        let now = self.millis(tokio::time::Instant::now());
        self.moved.store(now, Ordering::Relaxed);
    }

    /// How long no stream did anything, at `now`.
    pub fn still_for(&self, now: tokio::time::Instant) -> Duration {
        Duration::from_millis(
            self.millis(now)
                .saturating_sub(self.moved.load(Ordering::Relaxed)),
        )
    }

    /// `body`, watched as one of these streams' responses.
    pub fn watch(self: &Arc<Self>, body: axum::body::Body) -> Watched {
        let outgoing = Arc::new(Outgoing {
            source: Mutex::new(Some(Source { body, rest: None })),
            given: AtomicU64::new(NOT_GIVEN),
        });
        self.responses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(outgoing.clone());
        Watched::Http2 {
            outgoing,
            streams: self.clone(),
        }
    }

    /// Releases every response whose frame was untaken for `keepalive` at `now`; how many
    /// responses are still live.
    pub fn release_untaken(&self, now: tokio::time::Instant, keepalive: Duration) -> usize {
        let now = self.millis(now);
        let keepalive = u64::try_from(keepalive.as_millis()).unwrap_or(u64::MAX);
        let responses = self
            .responses
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut live = 0;
        for outgoing in responses.iter() {
            let given = outgoing.given.load(Ordering::Relaxed);
            let mut source = outgoing
                .source
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if given != NOT_GIVEN && now.saturating_sub(given) >= keepalive {
                if source.take().is_some() {
                    self.released.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        "an HTTP/2 response not taken by its client for keepalive_timeout was released"
                    );
                }
            } else if source.is_some() {
                live += 1;
            }
        }
        live
    }

    /// How many released responses are still open.
    pub fn released(&self) -> usize {
        self.released.load(Ordering::Relaxed)
    }

    fn forget(&self, outgoing: &Arc<Outgoing>) {
        // Its last frame was taken, or it ended otherwise: a stream moved.
        self.moved();
        // In `release_untaken`'s order (the list, then the body): a release between reading
        // the body and leaving the list would be counted and never taken back.
        let mut responses = self
            .responses
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if outgoing
            .source
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
        {
            self.released.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(at) = responses
            .iter()
            .position(|response| Arc::ptr_eq(response, outgoing))
        {
            responses.swap_remove(at);
        }
    }
}

/// A response body: on HTTP/2 one of its connection's [`Streams`], else as it is, only
/// counted while it lasts (on HTTP/1 a client that stops reading stops every byte, and the
/// idle rule ends the connection).
pub enum Watched {
    Plain {
        body: axum::body::Body,
        streams: Arc<Streams>,
    },
    Http2 {
        outgoing: Arc<Outgoing>,
        streams: Arc<Streams>,
    },
}

impl Drop for Watched {
    fn drop(&mut self) {
        match self {
            Self::Http2 { outgoing, streams } => streams.forget(outgoing),
            Self::Plain { streams, .. } => {
                streams.plain.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

impl hyper::body::Body for Watched {
    type Data = hyper::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let (outgoing, streams) = match self.get_mut() {
            Self::Plain { body, .. } => return Pin::new(body).poll_frame(cx),
            Self::Http2 { outgoing, streams } => (outgoing, streams),
        };
        // Polled again: the frame given last was taken.
        outgoing.given.store(NOT_GIVEN, Ordering::Relaxed);
        streams.moved();
        let mut source = outgoing
            .source
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(source) = source.as_mut() else {
            return Poll::Ready(Some(Err(axum::Error::new(Released))));
        };
        let frame = match source.rest.take() {
            Some(rest) => hyper::body::Frame::data(rest),
            None => match Pin::new(&mut source.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => frame,
                other => return other,
            },
        };
        let frame = match frame.into_data() {
            Ok(mut data) => {
                if data.len() > FRAME_MOST {
                    source.rest = Some(data.split_off(FRAME_MOST));
                }
                hyper::body::Frame::data(data)
            }
            Err(frame) => frame,
        };
        let now = streams.millis(tokio::time::Instant::now());
        outgoing.given.store(now, Ordering::Relaxed);
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Plain { body, .. } => body.is_end_stream(),
            // A released body is not at its end: polled, it fails, and the stream is reset.
            Self::Http2 { outgoing, .. } => outgoing
                .source
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .is_some_and(|source| source.rest.is_none() && source.body.is_end_stream()),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        let Self::Http2 { outgoing, .. } = self else {
            return match self {
                Self::Plain { body, .. } => body.size_hint(),
                Self::Http2 { .. } => hyper::body::SizeHint::default(),
            };
        };
        let source = outgoing
            .source
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(source) = source.as_ref() else {
            return hyper::body::SizeHint::default();
        };
        let mut hint = source.body.size_hint();
        if let Some(rest) = &source.rest {
            // The upper bound first: a lower one above it would panic.
            let rest = rest.len() as u64;
            if let Some(upper) = hint.upper() {
                hint.set_upper(upper.saturating_add(rest));
            }
            hint.set_lower(hint.lower().saturating_add(rest));
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;

    fn streams() -> Arc<Streams> {
        Arc::new(Streams::new(tokio::time::Instant::now()))
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_frame_is_given_in_parts_and_a_finished_body_leaves_nothing_behind() {
        let streams = streams();
        let mut body = streams.watch(axum::body::Body::from(vec![7u8; 40_000]));
        assert_eq!(hyper::body::Body::size_hint(&body).exact(), Some(40_000));
        let mut sizes = Vec::new();
        while let Some(frame) = body.frame().await {
            sizes.push(frame.unwrap().into_data().unwrap().len());
            let rest = 40_000 - sizes.iter().sum::<usize>() as u64;
            assert_eq!(hyper::body::Body::size_hint(&body).exact(), Some(rest));
        }
        assert_eq!(sizes, [16_384, 16_384, 7_232]);
        assert_eq!(
            streams.release_untaken(tokio::time::Instant::now(), Duration::from_secs(1)),
            1
        );
        drop(body);
        assert_eq!(
            streams.release_untaken(tokio::time::Instant::now(), Duration::from_secs(1)),
            0
        );
        assert!(streams.responses.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_left_untaken_for_keepalive_releases_its_response_alone() {
        let keepalive = Duration::from_secs(1);
        let streams = streams();
        let mut untaken = streams.watch(axum::body::Body::from(vec![7u8; 40_000]));
        let mut taken = streams.watch(axum::body::Body::from(vec![7u8; 40_000]));
        untaken.frame().await.unwrap().unwrap();
        taken.frame().await.unwrap().unwrap();
        tokio::time::advance(keepalive / 2).await;
        assert_eq!(
            streams.release_untaken(tokio::time::Instant::now(), keepalive),
            2
        );
        taken.frame().await.unwrap().unwrap();
        tokio::time::advance(keepalive / 2).await;
        assert_eq!(
            streams.release_untaken(tokio::time::Instant::now(), keepalive),
            1
        );
        assert!(!hyper::body::Body::is_end_stream(&untaken));
        assert!(untaken.frame().await.unwrap().is_err());
        assert_eq!(
            taken
                .frame()
                .await
                .unwrap()
                .unwrap()
                .into_data()
                .unwrap()
                .len(),
            7_232
        );
    }

    #[tokio::test(start_paused = true)]
    async fn released_responses_are_counted_while_they_are_open() {
        let keepalive = Duration::from_secs(1);
        let streams = streams();
        let mut bodies = Vec::new();
        for _ in 0..3 {
            let mut body = streams.watch(axum::body::Body::from(vec![7u8; 40_000]));
            body.frame().await.unwrap().unwrap();
            bodies.push(body);
        }
        tokio::time::advance(keepalive).await;
        assert_eq!(
            streams.release_untaken(tokio::time::Instant::now(), keepalive),
            0
        );
        assert_eq!(streams.released(), 3);
        // Released again at the next look: counted once.
        assert_eq!(
            streams.release_untaken(tokio::time::Instant::now(), keepalive),
            0
        );
        assert_eq!(streams.released(), 3);
        bodies.pop();
        assert_eq!(streams.released(), 2);
        // Dropping one is a stream moving.
        assert_eq!(
            streams.still_for(tokio::time::Instant::now()),
            Duration::ZERO
        );
    }

    #[tokio::test(start_paused = true)]
    async fn streams_move_with_requests_and_frames_not_with_time() {
        let streams = streams();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(
            streams.still_for(tokio::time::Instant::now()),
            Duration::from_secs(5)
        );
        let mut body = streams.watch(axum::body::Body::from("answer"));
        body.frame().await.unwrap().unwrap();
        assert_eq!(
            streams.still_for(tokio::time::Instant::now()),
            Duration::ZERO
        );
    }
}
