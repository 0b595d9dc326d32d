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
//! whose revocation failed (or was not answered in time) is tried again at the next sign-out.

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

/// A refresh token's SHA-256.
fn digest(token: &str) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

impl Revocations {
    /// Whether `token` is to be revoked now: not revoked here before, nor being revoked (it is
    /// remembered from now on, until [`Revocations::failed`] forgets it).
    fn first_time(&self, token: &[u8; 32]) -> bool {
        match self.revoked.get_value_or_guard(token, Some(Duration::ZERO)) {
            quick_cache::sync::GuardResult::Guard(guard) => {
                let _ = guard.insert(());
                true
            }
            _ => false,
        }
    }

    /// The revocation of `token` failed or was not answered: a later sign-out tries again.
    fn failed(&self, token: &[u8; 32]) {
        self.revoked.remove(token);
    }

    /// Revokes, at once and waiting at most [`REVOCATION_WAIT`] in all, the refresh token of
    /// each of `ended` at its provider: where the provider is still the one that issued it (the
    /// same name, issuer and client: `Session::made_at`), signs out there (`end_session`),
    /// names a revocation endpoint (or is the in-process token service), and the token was not
    /// revoked here before.
    pub async fn revoke_refresh_tokens(&self, providers: &Providers, ended: &[Arc<Session>]) {
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
            if !self.first_time(&key) {
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
                (key, revoked.is_ok())
            });
        }
        if revocations.is_empty() {
            return;
        }
        let all = async {
            while let Some(done) = revocations.join_next().await {
                if let Ok((key, answered)) = done {
                    pending.retain(|pending| *pending != key);
                    if !answered {
                        self.failed(&key);
                    }
                }
            }
        };
        if tokio::time::timeout(REVOCATION_WAIT, all).await.is_err() {
            tracing::warn!(
                "signed out, but the provider did not answer the revocation of the session's refresh token in time"
            );
        }
        // Not answered in time (or its task failed): tried again at a later sign-out.
        for key in &pending {
            self.failed(key);
        }
    }
}
