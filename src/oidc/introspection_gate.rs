//! What stands between requests and a provider's introspection endpoint (RFC 7662). Each
//! question is a client-authenticated call the provider may count against Tollgate's client,
//! so requests carrying made-up opaque tokens must not become one call each: a refused token
//! is refused again without asking for [`REFUSAL_SECONDS`], one token is asked about once at a
//! time, and at most [`LANES`] questions are in flight.

use std::hash::BuildHasher;
use std::time::Duration;

use quick_cache::sync::Cache;
use tokio::sync::{Mutex, MutexGuard};

use crate::clock::UnixTime;
use crate::token::TokenError;

/// How long a token the provider's answer refused is refused without asking again (seconds).
/// Every refusal `check_introspection` gives stays true: an inactive token does not come back.
pub const REFUSAL_SECONDS: UnixTime = 60;

/// How many refusals are remembered (the oldest go first).
const REFUSALS: usize = 10_000;

/// How many questions may be in flight at once. A token always takes the same lane, so a
/// second request with it waits for the first's answer, then finds it remembered.
pub const LANES: usize = 32;

/// One provider's gate.
pub struct IntrospectionGate {
    refused: Cache<Box<str>, (TokenError, UnixTime)>,
    lanes: Box<[Mutex<()>]>,
    /// Randomly seeded, so crafted tokens cannot pile into one lane.
    hasher: std::hash::RandomState,
}

impl Default for IntrospectionGate {
    fn default() -> Self {
        Self {
            refused: Cache::new(REFUSALS),
            lanes: (0..LANES).map(|_| Mutex::new(())).collect(),
            hasher: std::hash::RandomState::new(),
        }
    }
}

impl IntrospectionGate {
    /// Why `token` was refused, while that answer is remembered at `now`.
    pub fn refusal(&self, token: &str, now: UnixTime) -> Option<TokenError> {
        let (error, until) = self.refused.get(token)?;
        if now < until {
            Some(error)
        } else {
            self.refused.remove(token);
            None
        }
    }

    /// Remembers that the provider's answer about `token` was refused with `error` at `now`.
    pub fn refuse(&self, token: &str, error: TokenError, now: UnixTime) {
        self.refused
            .insert(token.into(), (error, now.saturating_add(REFUSAL_SECONDS)));
    }

    /// `token`'s lane, held while its question is asked; `None` when it stays taken for
    /// `wait` (the provider's timeout: the questions before this one are hanging).
    pub async fn lane(&self, token: &str, wait: Duration) -> Option<MutexGuard<'_, ()>> {
        let index = usize::try_from(self.hasher.hash_one(token) % LANES as u64).unwrap_or(0);
        tokio::time::timeout(wait, self.lanes[index].lock())
            .await
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_remembered_for_its_time_only() {
        let gate = IntrospectionGate::default();
        gate.refuse("made-up", TokenError::Inactive, 100);
        assert_eq!(gate.refusal("made-up", 100), Some(TokenError::Inactive));
        assert_eq!(
            gate.refusal("made-up", 100 + REFUSAL_SECONDS - 1),
            Some(TokenError::Inactive)
        );
        assert_eq!(gate.refusal("made-up", 100 + REFUSAL_SECONDS), None);
        assert_eq!(gate.refusal("another", 100), None);
    }

    #[tokio::test]
    async fn one_token_waits_for_its_own_question_and_gives_up_after_the_wait() {
        let gate = IntrospectionGate::default();
        let held = gate.lane("token", Duration::from_secs(1)).await;
        assert!(held.is_some());
        assert!(
            gate.lane("token", Duration::from_millis(20))
                .await
                .is_none()
        );
        drop(held);
        assert!(
            gate.lane("token", Duration::from_millis(20))
                .await
                .is_some()
        );
    }
}
