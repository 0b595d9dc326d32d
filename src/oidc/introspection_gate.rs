//! What stands between requests and a provider's introspection endpoint (RFC 7662). Each
//! question is a client-authenticated call the provider may count against Tollgate's client,
//! so requests carrying the same made-up opaque token must not become one call each: a token
//! the answer refused is refused again without asking for [`REFUSAL_SECONDS`], and one token
//! is asked about once at a time (requests with it at once share the answer). At most
//! [`IN_FLIGHT`] questions are in flight, any free place serving any token.
//!
//! A new made-up token each time is a new question, so a client address whose questions the
//! provider refused or answered unusably (its 429s and 5xx included: a provider throttling
//! Tollgate's client is asked less) [`REFUSED_A_WINDOW`] times in a [`WINDOW`] is not asked for
//! until the window ends (`AddressBudget`): its requests are answered 429. A question runs to
//! its answer on a task of its own (`Provider::introspect`), so a request given up meanwhile
//! buys nothing; one the provider could not be reached for counts against nobody. Questions
//! in flight do not count (the places bound them): a service calling with many users' tokens
//! at once is one address.
//!
//! Tokens are known here by their SHA-256 only: a remembered refusal costs 32 bytes and an
//! entry, whatever the token's length.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quick_cache::sync::Cache;
use tokio::sync::{OwnedMutexGuard, OwnedSemaphorePermit, Semaphore};

use crate::address_budget::AddressBudget;
use crate::address_budget::Admission;
use crate::clock::{Clock, UnixTime};
use crate::http::forwarded::{ClientAddress, limit_key};
use crate::token::TokenError;

/// How long a token the provider's answer refused is refused without asking again (seconds):
/// long enough that one token sent again and again costs a call every few seconds at most,
/// short enough that a new token a lagging provider replica did not know yet is not refused
/// for long.
pub const REFUSAL_SECONDS: UnixTime = 10;

/// How many refusals are remembered (the oldest go first).
const REFUSALS: usize = 10_000;

/// How many questions may be in flight at once.
pub const IN_FLIGHT: usize = 64;

/// Questions from one client address the provider refused or answered unusably within a
/// [`WINDOW`], before the next is answered 429 without asking. Generous:
/// a refused token is not asked about again for [`REFUSAL_SECONDS`] anyway, and behind one NAT
/// many users' expired tokens count together.
pub const REFUSED_A_WINDOW: u32 = 30;

/// The window, in seconds.
pub const WINDOW: UnixTime = 60;

type Digest = [u8; 32];

/// One provider's gate.
pub struct IntrospectionGate {
    refused: Cache<Digest, (TokenError, UnixTime)>,
    /// The token being asked about, each with its waiters' turn.
    asking: Arc<Asking>,
    places: Arc<Semaphore>,
    /// Each client address's refused questions (those in flight do not count).
    budget: AddressBudget,
}

/// The tokens being asked about, each with its waiters' turn.
type Asking = Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>;

/// A question's right to be asked: this token's turn and a place among those in flight.
/// Dropped when the answer is in (on the task the question runs on, which outlives a request
/// given up meanwhile).
pub struct Turn {
    asking: Arc<Asking>,
    digest: Digest,
    token_turn: Option<OwnedMutexGuard<()>>,
    _place: OwnedSemaphorePermit,
}

impl Drop for Turn {
    fn drop(&mut self) {
        drop(self.token_turn.take());
        forget_if_unused(&self.asking, &self.digest);
    }
}

fn digest(token: &str) -> Digest {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut out = [0_u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

impl IntrospectionGate {
    /// No question asked yet; client addresses' windows timed by `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            refused: Cache::new(REFUSALS),
            asking: Arc::default(),
            places: Arc::new(Semaphore::new(IN_FLIGHT)),
            budget: AddressBudget::refused_only(REFUSED_A_WINDOW, WINDOW, clock),
        }
    }

    /// Admits one question from `client`, in flight until its [`Admission`] is dropped
    /// (`refused` unless it ends with a valid token or an unreachable provider): `None` while
    /// the client address's refused questions reach [`REFUSED_A_WINDOW`].
    pub fn admit(&self, client: ClientAddress<'_>) -> Option<Admission> {
        self.budget.admit(&limit_key(client.address()))
    }

    /// Why `token` was refused, while that answer is remembered at `now`.
    pub fn refusal(&self, token: &str, now: UnixTime) -> Option<TokenError> {
        let key = digest(token);
        let (error, until) = self.refused.get(&key)?;
        if now < until {
            Some(error)
        } else {
            self.refused.remove(&key);
            None
        }
    }

    /// Remembers that the provider's answer about `token` was refused with `error` at `now`.
    pub fn refuse(&self, token: &str, error: TokenError, now: UnixTime) {
        self.refused
            .insert(digest(token), (error, now.saturating_add(REFUSAL_SECONDS)));
    }

    /// Waits, at most `wait` in all, for `token`'s turn (after a question about it in flight)
    /// and for a place among those in flight; `None` when the wait ran out.
    pub async fn turn(&self, token: &str, wait: Duration) -> Option<Turn> {
        let digest = digest(token);
        // However the wait ends (a turn, the time out, or its request given up), the token's
        // entry goes once nobody holds or waits for it: declared first, dropped last.
        let _waiting = Waiting {
            asking: &self.asking,
            digest,
        };
        let token_lock = self.asking.lock().ok()?.entry(digest).or_default().clone();
        let taken = tokio::time::timeout(wait, async {
            let token_turn = token_lock.lock_owned().await;
            let place = self.places.clone().acquire_owned().await.ok()?;
            Some((token_turn, place))
        })
        .await;
        match taken {
            Ok(Some((token_turn, place))) => Some(Turn {
                asking: self.asking.clone(),
                digest,
                token_turn: Some(token_turn),
                _place: place,
            }),
            _ => None,
        }
    }
}

/// A wait for a token's turn, under way.
struct Waiting<'a> {
    asking: &'a Asking,
    digest: Digest,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        forget_if_unused(self.asking, &self.digest);
    }
}

/// Drops a token's entry once no request holds or waits for its turn.
fn forget_if_unused(asking: &Asking, digest: &Digest) {
    if let Ok(mut asking) = asking.lock()
        && asking
            .get(digest)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
    {
        asking.remove(digest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_remembered_for_its_time_only() {
        let gate = IntrospectionGate::new(crate::clock::ManualClock::new());
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
    async fn one_token_waits_for_its_own_question_and_others_do_not() {
        let gate = IntrospectionGate::new(crate::clock::ManualClock::new());
        let held = gate.turn("token", Duration::from_secs(1)).await;
        assert!(held.is_some());
        assert!(
            gate.turn("token", Duration::from_millis(20))
                .await
                .is_none()
        );
        // Another token is not held up by it.
        assert!(
            gate.turn("another", Duration::from_millis(20))
                .await
                .is_some()
        );
        drop(held);
        assert!(
            gate.turn("token", Duration::from_millis(20))
                .await
                .is_some()
        );
        // Nothing is left behind once every turn is over.
        assert!(gate.asking.lock().unwrap().is_empty());
    }

    /// A request given up while it waits for its token's turn leaves no entry behind, even
    /// when the turn it waited for ended first.
    #[tokio::test]
    async fn a_wait_given_up_leaves_nothing_behind() {
        let gate = IntrospectionGate::new(crate::clock::ManualClock::new());
        let held = gate.turn("token", Duration::from_secs(1)).await;
        let mut waiting = Box::pin(gate.turn("token", Duration::from_secs(10)));
        // Polled (it waits behind the held turn), then given up.
        assert!(
            tokio::time::timeout(Duration::from_millis(20), &mut waiting)
                .await
                .is_err()
        );
        drop(held);
        drop(waiting);
        assert!(gate.asking.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn no_more_questions_than_places_are_in_flight() {
        let gate = IntrospectionGate::new(crate::clock::ManualClock::new());
        let mut turns = Vec::new();
        for index in 0..IN_FLIGHT {
            let turn = gate
                .turn(&format!("token-{index}"), Duration::from_secs(1))
                .await;
            turns.push(turn.expect("a free place"));
        }
        assert!(
            gate.turn("one-more", Duration::from_millis(20))
                .await
                .is_none()
        );
        turns.pop();
        assert!(
            gate.turn("one-more", Duration::from_millis(20))
                .await
                .is_some()
        );
    }
}
