//! At sign-out, the refresh tokens of the sessions it ended are revoked at their providers
//! (RFC 7009): a copy of a `cookie`-store session holds its refresh token, and would otherwise
//! keep refreshing until `session.lifetime` wherever the provider's own logout leaves refresh
//! tokens valid. Done before the answer, so that a copy is refused from then on, but never for
//! longer than [`REVOCATION_WAIT`]: a provider that is down does not hold a sign-out. A
//! failure is a log line.

use std::sync::Arc;
use std::time::Duration;

use crate::oidc::Providers;
use crate::session::Session;

/// How long a sign-out waits for its revocations, in all.
pub const REVOCATION_WAIT: Duration = Duration::from_secs(3);

/// Revokes the refresh token of each of `ended` at its provider: where the provider is still
/// the one that issued it (the same name, issuer and client: `Session::made_at`), signs out
/// there (`end_session`), and names a revocation endpoint (or is the in-process token
/// service).
pub async fn revoke_refresh_tokens(providers: &Providers, ended: &[Arc<Session>]) {
    let revocations: Vec<_> = ended
        .iter()
        .filter_map(|session| {
            let provider = providers.get(&session.provider)?;
            let config = &provider.config;
            let ours = config.end_session
                && session.made_at(provider.name(), &config.issuer, &config.client_id);
            let token = session.refresh_token.as_deref().filter(|_| ours)?;
            Some((provider, token))
        })
        .collect();
    let all = async {
        for (provider, token) in &revocations {
            match provider.revoke_refresh_token(token).await {
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
        }
    };
    if tokio::time::timeout(REVOCATION_WAIT, all).await.is_err() {
        tracing::warn!(
            "signed out, but the provider did not answer the revocation of the session's refresh token in time"
        );
    }
}
