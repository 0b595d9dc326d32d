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

use std::sync::Arc;

use crate::address_budget::AddressBudget;
use crate::address_budget::Admission;
use crate::clock::{Clock, UnixTime};

/// Exchanges from one client address that the provider refused or answered without tokens
/// within a window, and those under way, before the next is answered 429.
pub const MAX_A_WINDOW: u32 = 10;

/// The window, in seconds.
pub const WINDOW: i64 = 60;

/// Login states remembered as exchanged at most: beyond, the least used are forgotten (each
/// forgotten state cost a provider call to add).
const REMEMBERED: usize = 65_536;

/// Whether a login state may be exchanged now.
#[derive(Debug, PartialEq, Eq)]
pub enum Turn {
    /// Its exchange may go ahead.
    Go,
    /// It was exchanged already, or is being exchanged by another request.
    Spent,
}

/// The code exchanges of this process.
pub struct Exchanges {
    /// A login state's SHA-256, and until when it lives.
    states: quick_cache::sync::Cache<[u8; 32], UnixTime>,
    /// Each client address's refused and under-way exchanges.
    budget: AddressBudget,
    /// The time a login state is taken at.
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
            budget: AddressBudget::new(MAX_A_WINDOW, WINDOW, clock.clone()),
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
    pub fn admit(&self, key: &str) -> Option<Admission> {
        self.budget.admit(key)
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
    fn an_address_has_max_a_window_refused_exchanges_a_window() {
        let clock = ManualClock::new();
        let exchanges = at(&clock);
        let key = "address:192.0.2.1";
        for _ in 0..MAX_A_WINDOW {
            exchanges.admit(key).expect("admitted").refused();
        }
        assert!(exchanges.admit(key).is_none());
        clock.advance(WINDOW);
        assert!(exchanges.admit(key).is_some());
    }

    #[test]
    fn exchanges_under_way_count_so_a_burst_cannot_all_be_admitted() {
        let exchanges = at(&ManualClock::new());
        let key = "address:198.51.100.7";
        let under_way: Vec<Admission> = (0..50).filter_map(|_| exchanges.admit(key)).collect();
        assert_eq!(under_way.len(), MAX_A_WINDOW as usize);
    }
}
