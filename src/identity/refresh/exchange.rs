//! One refresh at the provider: the refresh token exchanged, a new ID token checked (same
//! subject, the login's nonce or none), userinfo merged, and the refreshed session built from
//! what the provider says now (a claim it no longer states is gone).

use std::sync::Arc;

use serde_json::Value;

use super::Shared;
use crate::clock::UnixTime;
use crate::oidc::provider::CredentialError;
use crate::oidc::{Provider, ProviderError};
use crate::session::Session;
use crate::token::Claims;
use crate::token::id_token::NonceRule;

/// Claims that are the session's bookkeeping rather than statements about the user: kept from
/// the login when a refreshed ID token leaves them out (`sid` finds the session at back-channel
/// logout; the original `nonce` is what later refreshed ID tokens may repeat).
const SESSION_CLAIMS: [&str; 2] = ["sid", "nonce"];

/// Why one refresh attempt failed.
pub(super) struct Failure {
    /// Whether the session ends (`invalid_grant`, another subject); else the reason passes.
    pub(super) ends_session: bool,
    pub(super) reason: String,
    /// A refresh token the provider issued before the failure: it rotated, so this one is kept
    /// or the next attempt would present a spent token.
    pub(super) rotated: Option<String>,
    /// Whether the provider is the in-process token service and its store did not answer: a
    /// session whose tokens have expired then gets the store's 503, not a provider's 502.
    pub(super) store_unavailable: bool,
}

/// The claims of the ID token stored in the session (validated when it was received).
fn stored_id_token_claims(id_token: &str) -> Option<Claims> {
    crate::token::unverified_claims(id_token).map(Arc::new)
}

impl Shared {
    pub(super) async fn refresh(
        &self,
        provider: &Provider,
        session: &Session,
        refresh_token: &str,
        now: UnixTime,
    ) -> Result<Arc<Session>, Failure> {
        let tokens = provider.refresh(refresh_token).await.map_err(|error| Failure {
            ends_session: matches!(&error, ProviderError::Refused(code) if code == "invalid_grant"),
            reason: error.to_string(),
            rotated: None,
            store_unavailable: matches!(error, ProviderError::StoreUnavailable(_)),
        })?;
        let failure = |ends_session: bool, reason: String| Failure {
            ends_session,
            reason,
            rotated: tokens.refresh_token.clone(),
            store_unavailable: false,
        };
        let mut access_expires_at = tokens.access_expires_at(now, None);
        let id_claims = match &tokens.id_token {
            Some(id_token) => {
                let original_nonce = session.claims.get("nonce").and_then(Value::as_str);
                let claims = provider
                    .validate_id_token(
                        id_token,
                        NonceRule::AbsentOrEquals(original_nonce),
                        Some(&tokens.access_token),
                    )
                    .await
                    .map_err(|error| {
                        failure(false, format!("refreshed ID token refused: {error}"))
                    })?;
                // OIDC Core 12.2: the refreshed ID token is about the same user.
                if claims.get("sub") != session.claims.get("sub") {
                    return Err(failure(
                        true,
                        "the refreshed ID token names another subject".to_owned(),
                    ));
                }
                access_expires_at = tokens.access_expires_at(now, Some(&claims));
                claims
            }
            // No new ID token (OIDC Core 12.2 allows that): the one from before still says who
            // the user is; userinfo below says what is true of them now.
            None => {
                stored_id_token_claims(&session.id_token).unwrap_or_else(|| session.claims.clone())
            }
        };
        // The claims are built afresh as at login, never merged into the old ones: a claim the
        // provider no longer states is gone.
        let mut claims = match provider
            .merge_userinfo(&id_claims, &tokens.access_token)
            .await
        {
            Ok(merged) => merged,
            Err(CredentialError::Token(error)) => {
                return Err(failure(true, format!("userinfo refused: {error}")));
            }
            // An answer the provider should not have given (over the size cap, not JSON) is its
            // failure, as at login: the session keeps the claims it has until a refresh gets a
            // usable one. Built from the ID token alone, it lost what only userinfo says (an
            // `email_verified: false`, which `email_domains` then took as verified).
            Err(CredentialError::Provider(error @ crate::oidc::ProviderError::BadResponse(_))) => {
                return Err(failure(false, format!("userinfo unusable: {error}")));
            }
            Err(error @ (CredentialError::Provider(_) | CredentialError::TooManyRefused)) => {
                tracing::warn!(provider = %provider.name(), %error, "userinfo unavailable at refresh; using the ID token's claims");
                crate::token::without_userinfo(id_claims, Some(&session.claims))
            }
        };
        // Carried in the session's claims from refresh to refresh (its `id_token` is the last
        // refreshed one, which may leave them out).
        for name in SESSION_CLAIMS {
            if !claims.contains_key(name)
                && let Some(value) = session.claims.get(name)
            {
                Arc::make_mut(&mut claims).insert(name.to_owned(), value.clone());
            }
        }
        let mut refreshed = Session::clone(session);
        refreshed.claims = claims;
        if let Some(id_token) = &tokens.id_token {
            refreshed.id_token = id_token.clone();
        }
        refreshed.access_token = Some(tokens.access_token.clone());
        if let Some(rotated) = &tokens.refresh_token {
            refreshed.refresh_token = Some(rotated.clone());
        }
        refreshed.access_expires_at = access_expires_at;
        Ok(Arc::new(refreshed))
    }
}
