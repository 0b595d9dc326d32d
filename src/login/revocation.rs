//! At sign-out, the refresh tokens of the sessions it ended are revoked at their providers
//! (RFC 7009): a copy of a `cookie`-store session holds its refresh token, and would otherwise
//! keep refreshing until `session.lifetime` wherever the provider's own logout leaves refresh
//! tokens valid. Done before the answer, so that a copy is refused from then on, but never for
//! longer than [`REVOCATION_WAIT`]: a provider that is down does not hold a sign-out. A
//! failure is a log line.
//!
//! Each refresh token is revoked once: a `cookie`-store session still opens after its
//! sign-out, and replaying its cookie to `/signout` would otherwise buy a client-authenticated
//! call to the provider per request, spending the client's quota there for every user. One
//! whose revocation the provider could not answer (unreachable, a 5xx, a 429, not in time) is
//! tried again at a sign-out [`RETRY_AFTER`] later at the soonest; one it refused (a 4xx) is
//! not.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::UnixTime;
use crate::oidc::{ProviderError, Providers};
use crate::session::Session;

/// How long a sign-out waits for its revocations, in all.
pub const REVOCATION_WAIT: Duration = Duration::from_secs(3);

/// How soon a revocation the provider could not answer is tried again, at the soonest
/// (seconds).
pub const RETRY_AFTER: UnixTime = 60;

/// How many refresh tokens are remembered (by their SHA-256): each was a sign-in at the
/// provider, so a client cannot add them faster than it signs in.
const REMEMBERED: usize = 100_000;

/// The refresh tokens revoked (or being revoked) so far, by digest: `None` once asked, or
/// the time from which one the provider could not answer may be asked again.
pub struct Revocations {
    revoked: quick_cache::sync::Cache<[u8; 32], Option<UnixTime>>,
}

impl Default for Revocations {
    fn default() -> Self {
        Self {
            revoked: quick_cache::sync::Cache::new(REMEMBERED),
        }
    }
}

/// A refresh token's SHA-256.
fn digest(token: &str) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

/// Whether the provider could not answer (as opposed to refusing): worth asking again.
fn unanswered(error: &ProviderError) -> bool {
    matches!(
        error,
        ProviderError::Unreachable(_)
            | ProviderError::BadResponse(_)
            | ProviderError::StoreUnavailable(_)
    )
}

impl Revocations {
    /// Whether `token` is to be revoked now: not asked before, or asked without an answer
    /// [`RETRY_AFTER`] ago. Remembered from now on as asked without an answer until one comes
    /// ([`Revocations::answered`]): a sign-out whose client goes away drops its revocations
    /// unanswered, and a later one asks again.
    fn to_ask(&self, token: &[u8; 32], now: UnixTime) -> bool {
        let retry_at = Some(now.saturating_add(RETRY_AFTER));
        match self.revoked.get_value_or_guard(token, Some(Duration::ZERO)) {
            quick_cache::sync::GuardResult::Guard(guard) => {
                let _ = guard.insert(retry_at);
                true
            }
            quick_cache::sync::GuardResult::Value(Some(due)) if now >= due => {
                self.revoked.insert(*token, retry_at);
                true
            }
            _ => false,
        }
    }

    /// The provider answered the revocation of `token` (revoked, or refused for good): it is
    /// not asked again.
    fn answered(&self, token: &[u8; 32]) {
        self.revoked.insert(*token, None);
    }

    /// The provider did not answer the revocation of `token`: a sign-out after
    /// [`RETRY_AFTER`] asks again.
    fn unanswered(&self, token: &[u8; 32], now: UnixTime) {
        self.revoked
            .insert(*token, Some(now.saturating_add(RETRY_AFTER)));
    }

    /// Revokes, at once and waiting at most [`REVOCATION_WAIT`] in all, the refresh token of
    /// each of `ended` at its provider: where the provider is still the one that issued it (the
    /// same name, issuer and client: `Session::made_at`), signs out there (`end_session`),
    /// names a revocation endpoint (or is the in-process token service), and the token is to be
    /// asked about ([`Revocations::to_ask`]).
    pub async fn revoke_refresh_tokens(
        &self,
        providers: &Providers,
        ended: &[Arc<Session>],
        now: UnixTime,
    ) {
        let mut revocations = tokio::task::JoinSet::new();
        // The tokens whose revocation has not answered yet.
        let mut pending: Vec<[u8; 32]> = Vec::new();
        for session in ended {
            let Some(provider) = providers.get(&session.provider) else {
                continue;
            };
            let config = &provider.config;
            let ours = config.end_session
                && session.made_at(provider.name(), &config.issuer, &config.client_id);
            let Some(token) = session.refresh_token.clone().filter(|_| ours) else {
                continue;
            };
            let key = digest(&token);
            if !self.to_ask(&key, now) {
                continue;
            }
            pending.push(key);
            let provider = provider.clone();
            revocations.spawn(async move {
                let revoked = provider.revoke_refresh_token(&token).await;
                match &revoked {
                    Ok(true) => tracing::info!(
                        provider = %provider.name(),
                        "signed out: the session's refresh token is revoked at the provider"
                    ),
                    Ok(false) => {}
                    Err(error) => tracing::warn!(
                        provider = %provider.name(),
                        %error,
                        "signed out, but the session's refresh token could not be revoked at the provider"
                    ),
                }
                (key, revoked.as_ref().is_err_and(unanswered))
            });
        }
        if revocations.is_empty() {
            return;
        }
        let mut answered = |(key, not_answered): ([u8; 32], bool)| {
            pending.retain(|pending| *pending != key);
            if not_answered {
                self.unanswered(&key, now);
            } else {
                self.answered(&key);
            }
        };
        let all = async {
            while let Some(done) = revocations.join_next().await {
                if let Ok(done) = done {
                    answered(done);
                }
            }
        };
        let in_time = tokio::time::timeout(REVOCATION_WAIT, all).await.is_ok();
        if !in_time {
            // Those that ended meanwhile count; the others were not answered in time.
            while let Some(done) = revocations.try_join_next() {
                if let Ok(done) = done {
                    answered(done);
                }
            }
            tracing::warn!(
                "signed out, but the provider did not answer the revocation of the session's refresh token in time"
            );
        }
        for key in &pending {
            self.unanswered(key, now);
        }
    }
}
