//! At sign-out, the refresh tokens of the sessions it ended are revoked at their providers
//! (RFC 7009): a copy of a `cookie`-store session holds its refresh token, and would otherwise
//! keep refreshing until `session.lifetime` wherever the provider's own logout leaves refresh
//! tokens valid. Done before the answer, so that a copy is refused from then on, but never for
//! longer than [`REVOCATION_WAIT`]: a provider that is down does not hold a sign-out. A
//! failure is a log line.
//!
//! Each refresh token is revoked once: a `cookie`-store session still opens after its
//! sign-out, and replaying its cookie to `/signout` would otherwise buy a client-authenticated
//! call to the provider per request, spending the client's quota there for every user.

use std::sync::Arc;
use std::time::Duration;

use crate::oidc::Providers;
use crate::session::Session;

/// How long a sign-out waits for its revocations, in all.
pub const REVOCATION_WAIT: Duration = Duration::from_secs(3);

/// How many revoked refresh tokens are remembered (by their SHA-256): each was a sign-in at
/// the provider, so a client cannot add them faster than it signs in.
const REMEMBERED: usize = 100_000;

/// The refresh tokens revoked so far (their digests), so that none is revoked twice.
pub struct Revocations {
    revoked: quick_cache::sync::Cache<[u8; 32], ()>,
}

impl Default for Revocations {
    fn default() -> Self {
        Self {
            revoked: quick_cache::sync::Cache::new(REMEMBERED),
        }
    }
}

impl Revocations {
    /// Whether `token` is revoked for the first time here (and remembered from now on).
    fn first_time(&self, token: &str) -> bool {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        match self.revoked.get_value_or_guard(&key, Some(Duration::ZERO)) {
            quick_cache::sync::GuardResult::Guard(guard) => {
                let _ = guard.insert(());
                true
            }
            _ => false,
        }
    }

    /// Revokes, at once and waiting at most [`REVOCATION_WAIT`] in all, the refresh token of
    /// each of `ended` at its provider: where the provider is still the one that issued it (the
    /// same name, issuer and client: `Session::made_at`), signs out there (`end_session`),
    /// names a revocation endpoint (or is the in-process token service), and the token was not
    /// revoked here before.
    pub async fn revoke_refresh_tokens(&self, providers: &Providers, ended: &[Arc<Session>]) {
        let mut revocations = tokio::task::JoinSet::new();
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
            if !self.first_time(&token) {
                continue;
            }
            let provider = provider.clone();
            revocations.spawn(async move {
                match provider.revoke_refresh_token(&token).await {
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
            });
        }
        if revocations.is_empty() {
            return;
        }
        let all = async { while revocations.join_next().await.is_some() {} };
        if tokio::time::timeout(REVOCATION_WAIT, all).await.is_err() {
            tracing::warn!(
                "signed out, but the provider did not answer the revocation of the session's refresh token in time"
            );
        }
    }
}
