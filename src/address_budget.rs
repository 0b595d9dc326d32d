//! How many calls a client address may cost a provider: those the provider refused within a
//! window, and (with `AddressBudget::new`) those under way, are counted against the address, and the next is not admitted
//! once they reach the budget's limit. Used where one client-authenticated call to a provider
//! (a code exchange, an introspection) is the price of one request, so that a loop of bad
//! requests from one address cannot get Tollgate's client throttled by the provider for
//! everyone. Kept in this process (a replica each).

use std::sync::{Arc, Mutex, PoisonError};

use crate::clock::{Clock, UnixTime};

/// Client addresses' windows remembered at most: beyond, the least used are forgotten.
const REMEMBERED: usize = 65_536;

/// One client address's window: when it began, the calls refused in it, and the calls under
/// way (whatever window they began in).
#[derive(Clone, Copy)]
struct Window {
    start: UnixTime,
    refused: u32,
    under_way: u32,
}

impl Window {
    /// This window as it stands at `now`: a new one, its refusals forgotten, once `length`
    /// seconds passed since it began.
    fn at(mut self, now: UnixTime, length: UnixTime) -> Self {
        if now - self.start >= length {
            self.start = now;
            self.refused = 0;
        }
        self
    }
}

/// The calls of each client address, against a limit per window.
pub struct AddressBudget(Arc<Windows>);

/// What an [`AddressBudget`] keeps, shared with its admissions (which may outlive the request
/// that took them, on a task of their own).
struct Windows {
    /// Refused (and, when `under_way_count`, under-way) calls an address may have before the
    /// next is not admitted.
    limit: u32,
    /// Whether calls under way count against the limit.
    under_way_count: bool,
    /// The window's length, in seconds.
    window: UnixTime,
    /// A client address's limit key (`http::forwarded::limit_key`), and its window. Behind one
    /// lock: a call is admitted and counted in one step, so concurrent ones cannot all see room.
    windows: Mutex<quick_cache::unsync::Cache<String, Window>>,
    /// The time a call is admitted and ended at.
    clock: Arc<dyn Clock>,
}

impl AddressBudget {
    /// `limit` refused or under-way calls an address within `window` seconds, timed by `clock`:
    /// a burst at once cannot all be admitted.
    pub fn new(limit: u32, window: UnixTime, clock: Arc<dyn Clock>) -> Self {
        Self::with(limit, true, window, clock)
    }

    /// `limit` refused calls an address within `window` seconds, timed by `clock`: for calls
    /// whose concurrency is bounded otherwise, where many good ones at once from one address
    /// (a service calling on behalf of many users) must not be turned away.
    pub fn refused_only(limit: u32, window: UnixTime, clock: Arc<dyn Clock>) -> Self {
        Self::with(limit, false, window, clock)
    }

    fn with(limit: u32, under_way_count: bool, window: UnixTime, clock: Arc<dyn Clock>) -> Self {
        Self(Arc::new(Windows {
            limit,
            under_way_count,
            window,
            windows: Mutex::new(quick_cache::unsync::Cache::new(REMEMBERED)),
            clock,
        }))
    }

    /// Admits one call from the client address of `key`, counted as under way until its
    /// [`Admission`] is dropped (a request given up mid-call included): `None` (and nothing
    /// counted) when the refused (and counted under-way) calls of its window reach the limit.
    pub fn admit(&self, key: &str) -> Option<Admission> {
        let budget = &self.0;
        let now = budget.clock.now();
        let mut windows = budget
            .windows
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut window = windows
            .get(key)
            .copied()
            .unwrap_or(Window {
                start: now,
                refused: 0,
                under_way: 0,
            })
            .at(now, budget.window);
        let under_way = if budget.under_way_count {
            window.under_way
        } else {
            0
        };
        if window.refused.saturating_add(under_way) >= budget.limit {
            return None;
        }
        window.under_way += 1;
        windows.insert(key.to_owned(), window);
        Some(Admission {
            budget: budget.clone(),
            key: key.to_owned(),
            refused: false,
        })
    }
}

impl Windows {
    /// Ends an admitted call, at the time it ended: `refused` counts in the window then.
    fn settle(&self, key: &str, refused: bool) {
        let now = self.clock.now();
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(window) = windows.get(key).copied() else {
            return;
        };
        let mut window = window.at(now, self.window);
        window.under_way = window.under_way.saturating_sub(1);
        if refused {
            window.refused = window.refused.saturating_add(1);
        }
        windows.insert(key.to_owned(), window);
    }
}

/// One call [`AddressBudget::admit`] let go ahead, under way until dropped.
pub struct Admission {
    budget: Arc<Windows>,
    key: String,
    refused: bool,
}

impl Admission {
    /// The provider refused the call, or answered something else than it was asked for:
    /// counted against the address for the rest of its window.
    pub fn refused(&mut self) {
        self.refused = true;
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.budget.settle(&self.key, self.refused);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    const LIMIT: u32 = 10;
    const WINDOW: UnixTime = 60;

    fn at(clock: &Arc<ManualClock>) -> AddressBudget {
        AddressBudget::new(LIMIT, WINDOW, clock.clone())
    }

    #[test]
    fn refused_and_under_way_calls_limit_an_address_for_the_rest_of_the_window() {
        let clock = ManualClock::new();
        let budget = at(&clock);
        let key = "address:192.0.2.1";
        let refused = || budget.admit(key).expect("admitted").refused();
        for _ in 0..LIMIT - 1 {
            refused();
        }
        // Answered as asked: not counted.
        clock.advance(5);
        drop(budget.admit(key).expect("admitted"));
        clock.advance(5);
        refused();
        clock.advance(49);
        assert!(budget.admit(key).is_none());
        assert!(budget.admit("address:192.0.2.2").is_some());
        // A new window.
        clock.advance(1);
        refused();
        assert!(budget.admit(key).is_some());
    }

    #[test]
    fn a_refusal_counts_in_the_window_it_came_in() {
        let clock = ManualClock::new();
        let budget = at(&clock);
        let key = "address:203.0.113.9";
        let mut late: Vec<Admission> = (0..LIMIT)
            .map(|_| budget.admit(key).expect("admitted"))
            .collect();
        // Admitted in one window, refused in the next: they count there.
        clock.advance(WINDOW);
        for admission in &mut late {
            admission.refused();
        }
        drop(late);
        assert!(budget.admit(key).is_none());
    }

    #[test]
    fn calls_under_way_count_so_a_burst_cannot_all_be_admitted() {
        let clock = ManualClock::new();
        let budget = at(&clock);
        let key = "address:198.51.100.7";
        let mut under_way: Vec<Admission> = (0..50).filter_map(|_| budget.admit(key)).collect();
        assert_eq!(under_way.len(), LIMIT as usize);
        // One ends as asked, or its request is given up: its place is free again.
        drop(under_way.pop());
        assert!(budget.admit(key).is_some());
        under_way.push(budget.admit(key).expect("admitted"));
        assert!(budget.admit(key).is_none());
    }

    #[test]
    fn refused_only_admits_any_number_at_once_until_refusals_reach_the_limit() {
        let clock = ManualClock::new();
        let budget = AddressBudget::refused_only(LIMIT, WINDOW, clock.clone());
        let key = "address:198.51.100.8";
        let mut under_way: Vec<Admission> = (0..50).filter_map(|_| budget.admit(key)).collect();
        assert_eq!(under_way.len(), 50);
        for admission in under_way.iter_mut().take(LIMIT as usize - 1) {
            admission.refused();
        }
        drop(under_way);
        assert!(budget.admit(key).is_some(), "{} refused", LIMIT - 1);
        budget.admit(key).expect("admitted").refused();
        assert!(budget.admit(key).is_none());
        clock.advance(WINDOW);
        assert!(budget.admit(key).is_some());
    }
}
