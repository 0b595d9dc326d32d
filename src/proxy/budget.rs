//! How many upstream connections HTTP/2 clients' streams may hold at once, in the whole
//! process. Each client connection of the public listener is counted as holding one
//! (`app::open_files`), which an HTTP/1 client never exceeds (one request in flight, so it
//! draws on no budget); an HTTP/2 client's 100 streams would each take one when no idle
//! connection is there, so a few hundred clients could use up the process's file descriptors
//! (and the ephemeral ports toward one upstream). Past the budget, as many places as the
//! listener has, such a stream is refused at once (502), as Envoy's circuit breaker refuses
//! past its `max_requests`, rather than open a connection the process cannot afford; HTTP/1
//! clients are served as before.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The process's budget of upstream connections held by requests; shared by every config a
/// reload makes live.
#[derive(Debug)]
pub struct UpstreamBudget {
    in_use: AtomicUsize,
    most: AtomicUsize,
}

impl Default for UpstreamBudget {
    fn default() -> Self {
        Self {
            in_use: AtomicUsize::new(0),
            most: AtomicUsize::new(usize::MAX),
        }
    }
}

impl UpstreamBudget {
    /// Sets the most connections held at once: the public listener's places.
    pub fn set_most(&self, most: usize) {
        self.most.store(most.max(1), Ordering::Relaxed);
    }

    /// A hold on one connection, or `None` when every one the budget has is held.
    pub fn take(self: &Arc<Self>) -> Option<InUse> {
        let most = self.most.load(Ordering::Relaxed);
        // Counted only when under the most: a refused take never shows as held, so a place
        // given back meanwhile is not refused to another.
        self.in_use
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                (held < most).then_some(held + 1)
            })
            .ok()?;
        Some(InUse(self.clone()))
    }

    /// How many connections are held now.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }
}

/// A request's hold on an upstream connection, given back when dropped.
#[derive(Debug)]
pub struct InUse(Arc<UpstreamBudget>);

impl Drop for InUse {
    fn drop(&mut self) {
        self.0.in_use.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_past_the_most_are_refused_until_one_is_given_back() {
        let budget = Arc::new(UpstreamBudget::default());
        budget.set_most(2);
        let first = budget.take().expect("one");
        let _second = budget.take().expect("two");
        assert!(budget.take().is_none(), "a third");
        assert_eq!(budget.in_use(), 2, "the refused one is not counted");
        drop(first);
        assert!(budget.take().is_some(), "given back");
    }
}
