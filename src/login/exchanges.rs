//! How often `/callback` may ask a provider to exchange a code. A login state lives in a
//! cookie its client may keep and send again, with any code: each such `/callback` was one
//! client-authenticated call to the provider's token endpoint (with `private_key_jwt`, a
//! signature here too), which providers throttle per client, so real users' logins and
//! refreshes failed once someone looped on it. Now a login state is exchanged once (its
//! exchange answered by the provider, or one in flight, ends it here; one the provider could
//! not be asked leaves it for a retry), and a client address whose exchanges the provider
//! refused [`MAX_REFUSED`] times within [`WINDOW`] seconds is answered 429 until the window
//! ends, without asking. Kept in this process (a replica each): a cookie replayed to every
//! replica costs one exchange at each, and a fresh login state costs the client a `/signin`.

use std::sync::Mutex;

use crate::clock::UnixTime;

/// Exchanges from one client address within a window that the provider refused or that are
/// under way, before the next is answered 429.
pub const MAX_REFUSED: u32 = 10;

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

/// The code exchanges of this process.
pub struct Exchanges {
    /// A login state's SHA-256, and until when it lives.
    states: quick_cache::sync::Cache<[u8; 32], UnixTime>,
    /// A client address's limit key, and its window. Behind one lock: an exchange is admitted
    /// and counted in one step, so concurrent ones cannot all see room.
    windows: Mutex<quick_cache::unsync::Cache<String, Window>>,
}

impl Default for Exchanges {
    fn default() -> Self {
        Self {
            states: quick_cache::sync::Cache::new(REMEMBERED),
            windows: Mutex::new(quick_cache::unsync::Cache::new(REMEMBERED)),
        }
    }
}

fn digest(state: &str) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, state.as_bytes());
    let mut bytes = [0; 32];
    bytes.copy_from_slice(digest.as_ref());
    bytes
}

impl Exchanges {
    /// Takes the login `state`'s one exchange, which lives until `until` (included, as the
    /// login state does): `Spent` when it was taken before or is being taken right now.
    pub fn take(&self, state: &str, until: UnixTime, now: UnixTime) -> Turn {
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

    /// Gives back the login `state`'s exchange when the provider never got the code (it could
    /// not be reached, or the in-process token service's store failed): the user's retry may
    /// take it.
    pub fn unasked(&self, state: &str) {
        self.states.remove(&digest(state));
    }

    /// Admits one exchange from the client address of `key`, counted as under way until its
    /// [`Admission`] is dropped (a request given up mid-exchange included): `None` (and nothing
    /// counted) when the refused and the under-way exchanges of its window reach
    /// [`MAX_REFUSED`].
    pub fn admit(&self, key: &str, now: UnixTime) -> Option<Admission<'_>> {
        self.count_in(key, now).then(|| Admission {
            exchanges: self,
            key: key.to_owned(),
            now,
            refused: false,
        })
    }

    fn count_in(&self, key: &str, now: UnixTime) -> bool {
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut window = windows.get(key).copied().unwrap_or(Window {
            start: now,
            refused: 0,
            under_way: 0,
        });
        if now - window.start >= WINDOW {
            window.start = now;
            window.refused = 0;
        }
        if window.refused.saturating_add(window.under_way) >= MAX_REFUSED {
            return false;
        }
        window.under_way += 1;
        windows.insert(key.to_owned(), window);
        true
    }

    fn settle(&self, key: &str, refused: bool, now: UnixTime) {
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(mut window) = windows.get(key).copied() else {
            return;
        };
        window.under_way = window.under_way.saturating_sub(1);
        if now - window.start >= WINDOW {
            window.start = now;
            window.refused = 0;
        }
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
    now: UnixTime,
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
        self.exchanges.settle(&self.key, self.refused, self.now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_state_is_exchanged_once_unless_the_provider_was_not_asked() {
        let exchanges = Exchanges::default();
        assert_eq!(exchanges.take("state-a", 1_600, 1_000), Turn::Go);
        assert_eq!(exchanges.take("state-a", 1_600, 1_001), Turn::Spent);
        // To the last second of its life, as the login state lives.
        assert_eq!(exchanges.take("state-a", 1_600, 1_600), Turn::Spent);
        assert_eq!(exchanges.take("state-b", 1_600, 1_001), Turn::Go);
        exchanges.unasked("state-b");
        assert_eq!(exchanges.take("state-b", 1_600, 1_002), Turn::Go);
        // Past its life the state is refused by the login flow anyway; here it is free again.
        assert_eq!(exchanges.take("state-a", 2_201, 1_601), Turn::Go);
    }

    #[test]
    fn refused_and_under_way_exchanges_limit_an_address_for_the_rest_of_the_window() {
        let exchanges = Exchanges::default();
        let key = "address:192.0.2.1";
        let refused = |now| exchanges.admit(key, now).expect("admitted").refused();
        for _ in 0..MAX_REFUSED - 1 {
            refused(1_000);
        }
        // Answered with tokens: not counted.
        drop(exchanges.admit(key, 1_005).expect("admitted"));
        refused(1_010);
        assert!(exchanges.admit(key, 1_059).is_none());
        assert!(exchanges.admit("address:192.0.2.2", 1_059).is_some());
        // A new window.
        refused(1_060);
        assert!(exchanges.admit(key, 1_061).is_some());
    }

    #[test]
    fn exchanges_under_way_count_so_a_burst_cannot_all_be_admitted() {
        let exchanges = Exchanges::default();
        let key = "address:198.51.100.7";
        let mut under_way: Vec<Admission<'_>> = (0..50)
            .filter_map(|_| exchanges.admit(key, 1_000))
            .collect();
        assert_eq!(under_way.len(), MAX_REFUSED as usize);
        // One ends with tokens, or its request is given up: its place is free again.
        drop(under_way.pop());
        assert!(exchanges.admit(key, 1_000).is_some());
        under_way.push(exchanges.admit(key, 1_000).expect("admitted"));
        assert!(exchanges.admit(key, 1_000).is_none());
    }
}
