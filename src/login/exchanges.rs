//! How often `/callback` may ask a provider to exchange a code. A login state lives in a
//! cookie its client may keep and send again, with any code: each such `/callback` was one
//! client-authenticated call to the provider's token endpoint (with `private_key_jwt`, a
//! signature here too), which providers throttle per client, so real users' logins and
//! refreshes failed once someone looped on it. Now a login state is exchanged once (an
//! exchange under way or answered with tokens or a refusal ends it here; one that got no
//! tokens, the provider unreachable or failing, leaves it for the user's reload), and a client
//! address is answered 429, without asking, while its refused or failed exchanges in the
//! current [`WINDOW`] and those under way reach [`MAX_A_WINDOW`]. Kept in this process (a
//! replica each): a cookie replayed to every replica costs one exchange at each, and a fresh
//! login state costs the client a `/signin`.

use std::sync::{Arc, Mutex};

use crate::clock::{Clock, UnixTime};

/// Exchanges from one client address that the provider refused or answered without tokens
/// within a window, and those under way, before the next is answered 429.
pub const MAX_A_WINDOW: u32 = 10;

/// The window, in seconds.
pub const WINDOW: i64 = 60;

/// Login states remembered as exchanged, and client addresses' windows, at most: beyond, the
/// least used are forgotten (each forgotten state cost a provider call to add).
const REMEMBERED: usize = 65_536;

/// Whether a login state may be exchanged now.
#[derive(Debug, PartialEq, Eq)]
pub enum Turn {
    /// Its exchange may go ahead.
    Go,
    /// It was exchanged already, or is being exchanged by another request.
    Spent,
}

/// One client address's window: when it began, the exchanges the provider refused in it, and
/// the exchanges under way (whatever window they began in).
#[derive(Clone, Copy)]
struct Window {
    start: UnixTime,
    refused: u32,
    under_way: u32,
}

impl Window {
    /// This window as it stands at `now`: a new one, its refusals forgotten, once [`WINDOW`]
    /// seconds passed since it began.
    fn at(mut self, now: UnixTime) -> Self {
        if now - self.start >= WINDOW {
            self.start = now;
            self.refused = 0;
        }
        self
    }
}

/// The code exchanges of this process.
pub struct Exchanges {
    /// A login state's SHA-256, and until when it lives.
    states: quick_cache::sync::Cache<[u8; 32], UnixTime>,
    /// A client address's limit key, and its window. Behind one lock: an exchange is admitted
    /// and counted in one step, so concurrent ones cannot all see room.
    windows: Mutex<quick_cache::unsync::Cache<String, Window>>,
    /// The time an exchange is admitted and ended at.
    clock: Arc<dyn Clock>,
}

fn digest(state: &str) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, state.as_bytes());
    let mut bytes = [0; 32];
    bytes.copy_from_slice(digest.as_ref());
    bytes
}

impl Exchanges {
    /// None taken yet, timed by `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            states: quick_cache::sync::Cache::new(REMEMBERED),
            windows: Mutex::new(quick_cache::unsync::Cache::new(REMEMBERED)),
            clock,
        }
    }

    /// Takes the login `state`'s one exchange, which lives until `until` (included, as the
    /// login state does): `Spent` when it was taken before or is being taken right now.
    pub fn take(&self, state: &str, until: UnixTime) -> Turn {
        let now = self.clock.now();
        let key = digest(state);
        match self
            .states
            .get_value_or_guard(&key, Some(std::time::Duration::ZERO))
        {
            quick_cache::sync::GuardResult::Value(ends) if ends >= now => Turn::Spent,
            quick_cache::sync::GuardResult::Value(_) => {
                self.states.insert(key, until);
                Turn::Go
            }
            quick_cache::sync::GuardResult::Guard(guard) => {
                let _ = guard.insert(until);
                Turn::Go
            }
            quick_cache::sync::GuardResult::Timeout => Turn::Spent,
        }
    }

    /// Gives back the login `state`'s exchange when it got no tokens (the provider could not
    /// be reached or failed, or the in-process token service's store did): the user's reload
    /// may take it.
    pub fn unasked(&self, state: &str) {
        self.states.remove(&digest(state));
    }

    /// Admits one exchange from the client address of `key`, counted as under way until its
    /// [`Admission`] is dropped (a request given up mid-exchange included): `None` (and nothing
    /// counted) when the refused and the under-way exchanges of its window reach
    /// [`MAX_A_WINDOW`].
    pub fn admit(&self, key: &str) -> Option<Admission<'_>> {
        let now = self.clock.now();
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut window = windows
            .get(key)
            .copied()
            .unwrap_or(Window {
                start: now,
                refused: 0,
                under_way: 0,
            })
            .at(now);
        if window.refused.saturating_add(window.under_way) >= MAX_A_WINDOW {
            return None;
        }
        window.under_way += 1;
        windows.insert(key.to_owned(), window);
        Some(Admission {
            exchanges: self,
            key: key.to_owned(),
            refused: false,
        })
    }

    /// Ends an admitted exchange, at the time it ended: `refused` counts in the window then.
    fn settle(&self, key: &str, refused: bool) {
        let now = self.clock.now();
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(window) = windows.get(key).copied() else {
            return;
        };
        let mut window = window.at(now);
        window.under_way = window.under_way.saturating_sub(1);
        if refused {
            window.refused = window.refused.saturating_add(1);
        }
        windows.insert(key.to_owned(), window);
    }
}

/// One exchange [`Exchanges::admit`] let go ahead, under way until dropped.
pub struct Admission<'a> {
    exchanges: &'a Exchanges,
    key: String,
    refused: bool,
}

impl Admission<'_> {
    /// The provider refused the exchange, or answered something other than tokens: counted
    /// against the address for the rest of its window.
    pub fn refused(&mut self) {
        self.refused = true;
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.exchanges.settle(&self.key, self.refused);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn at(clock: &Arc<ManualClock>) -> Exchanges {
        Exchanges::new(clock.clone())
    }

    #[test]
    fn a_login_state_is_exchanged_once_unless_it_got_no_tokens() {
        let clock = ManualClock::new();
        let exchanges = at(&clock);
        let until = clock.now() + 600;
        assert_eq!(exchanges.take("state-a", until), Turn::Go);
        clock.advance(1);
        assert_eq!(exchanges.take("state-a", until), Turn::Spent);
        assert_eq!(exchanges.take("state-b", until), Turn::Go);
        exchanges.unasked("state-b");
        assert_eq!(exchanges.take("state-b", until), Turn::Go);
        // To the last second of its life, as the login state lives; past it, free again
        // (the login flow refuses such a state anyway).
        clock.advance(599);
        assert_eq!(exchanges.take("state-a", until), Turn::Spent);
        clock.advance(1);
        assert_eq!(exchanges.take("state-a", until + 600), Turn::Go);
    }

    #[test]
    fn refused_and_under_way_exchanges_limit_an_address_for_the_rest_of_the_window() {
        let clock = ManualClock::new();
        let exchanges = at(&clock);
        let key = "address:192.0.2.1";
        let refused = || exchanges.admit(key).expect("admitted").refused();
        for _ in 0..MAX_A_WINDOW - 1 {
            refused();
        }
        // Answered with tokens: not counted.
        clock.advance(5);
        drop(exchanges.admit(key).expect("admitted"));
        clock.advance(5);
        refused();
        clock.advance(49);
        assert!(exchanges.admit(key).is_none());
        assert!(exchanges.admit("address:192.0.2.2").is_some());
        // A new window.
        clock.advance(1);
        refused();
        assert!(exchanges.admit(key).is_some());
    }

    #[test]
    fn a_refusal_counts_in_the_window_it_came_in() {
        let clock = ManualClock::new();
        let exchanges = at(&clock);
        let key = "address:203.0.113.9";
        let mut late: Vec<Admission<'_>> = (0..MAX_A_WINDOW)
            .map(|_| exchanges.admit(key).expect("admitted"))
            .collect();
        // Admitted in one window, refused in the next: they count there.
        clock.advance(WINDOW);
        for admission in &mut late {
            admission.refused();
        }
        drop(late);
        assert!(exchanges.admit(key).is_none());
    }

    #[test]
    fn exchanges_under_way_count_so_a_burst_cannot_all_be_admitted() {
        let clock = ManualClock::new();
        let exchanges = at(&clock);
        let key = "address:198.51.100.7";
        let mut under_way: Vec<Admission<'_>> =
            (0..50).filter_map(|_| exchanges.admit(key)).collect();
        assert_eq!(under_way.len(), MAX_A_WINDOW as usize);
        // One ends with tokens, or its request is given up: its place is free again.
        drop(under_way.pop());
        assert!(exchanges.admit(key).is_some());
        under_way.push(exchanges.admit(key).expect("admitted"));
        assert!(exchanges.admit(key).is_none());
    }
}
