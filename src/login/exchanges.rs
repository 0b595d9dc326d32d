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

use crate::clock::UnixTime;

/// Refused exchanges from one client address within a window before it is answered 429.
pub const MAX_REFUSED: u32 = 10;

/// The window, in seconds.
pub const WINDOW: i64 = 60;

/// Login states remembered as exchanged, and client addresses' refused exchanges, at most:
/// beyond, the oldest are forgotten (each forgotten state cost a provider call to add).
const REMEMBERED: usize = 65_536;

/// Whether a login state may be exchanged now.
#[derive(Debug, PartialEq, Eq)]
pub enum Turn {
    /// Its exchange may go ahead; `Exchanges::answered` or `Exchanges::unasked` follows.
    Go,
    /// It was exchanged already, or is being exchanged by another request.
    Spent,
}

/// The code exchanges of this process.
pub struct Exchanges {
    /// A login state's SHA-256, and until when it lives.
    states: quick_cache::sync::Cache<[u8; 32], UnixTime>,
    /// A client address's limit key, and its window's start and refused exchanges.
    refused: quick_cache::sync::Cache<String, (UnixTime, u32)>,
}

impl Default for Exchanges {
    fn default() -> Self {
        Self {
            states: quick_cache::sync::Cache::new(REMEMBERED),
            refused: quick_cache::sync::Cache::new(REMEMBERED),
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
    /// Takes the login `state`'s one exchange, which lives `until`: `Spent` when it was taken
    /// before (and has not ended) or is taken right now by another request.
    pub fn take(&self, state: &str, until: UnixTime, now: UnixTime) -> Turn {
        let key = digest(state);
        match self
            .states
            .get_value_or_guard(&key, Some(std::time::Duration::ZERO))
        {
            quick_cache::sync::GuardResult::Value(ends) if ends > now => Turn::Spent,
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

    /// Gives back the login `state`'s exchange, which the provider was not asked (it could not
    /// be reached, or its store failed): the user's retry may take it.
    pub fn unasked(&self, state: &str) {
        self.states.remove(&digest(state));
    }

    /// Whether the client address of `key` has had [`MAX_REFUSED`] exchanges refused within
    /// the window.
    pub fn limited(&self, key: &str, now: UnixTime) -> bool {
        self.refused
            .get(key)
            .is_some_and(|(start, count)| now - start < WINDOW && count >= MAX_REFUSED)
    }

    /// Counts one refused exchange against the client address of `key`.
    pub fn count_refused(&self, key: &str, now: UnixTime) {
        let (start, count) = match self.refused.get(key) {
            Some((start, count)) if now - start < WINDOW => (start, count.saturating_add(1)),
            _ => (now, 1),
        };
        self.refused.insert(key.to_owned(), (start, count));
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
        assert_eq!(exchanges.take("state-b", 1_600, 1_001), Turn::Go);
        exchanges.unasked("state-b");
        assert_eq!(exchanges.take("state-b", 1_600, 1_002), Turn::Go);
        // Past its life the state is refused by the login flow anyway; here it is free again.
        assert_eq!(exchanges.take("state-a", 2_200, 1_600), Turn::Go);
    }

    #[test]
    fn refused_exchanges_limit_an_address_for_the_rest_of_the_window() {
        let exchanges = Exchanges::default();
        for _ in 0..MAX_REFUSED - 1 {
            exchanges.count_refused("address:192.0.2.1", 1_000);
        }
        assert!(!exchanges.limited("address:192.0.2.1", 1_010));
        exchanges.count_refused("address:192.0.2.1", 1_010);
        assert!(exchanges.limited("address:192.0.2.1", 1_059));
        assert!(!exchanges.limited("address:192.0.2.2", 1_059));
        assert!(!exchanges.limited("address:192.0.2.1", 1_060));
        exchanges.count_refused("address:192.0.2.1", 1_060);
        assert!(!exchanges.limited("address:192.0.2.1", 1_061));
    }
}
