//! Refreshing a session's tokens before they expire (SPEC §5): once per session even under
//! concurrent requests — the first request refreshes, the others wait for it and take its
//! result — and rotated refresh tokens are stored. A failed refresh ends the session.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::clock::UnixTime;
use crate::metrics::Metrics;
use crate::oidc::Provider;
use crate::session::store::Sessions;
use crate::session::{CookieAttributes, Session};
use crate::token::id_token::NonceRule;

/// How long a refresh result is handed to requests that still carry the old session.
const RESULT_KEPT: i64 = 60;

/// Coordinates refreshes in this process.
pub struct Refresher {
    refresh_before: i64,
    enabled: bool,
    locks: Mutex<HashMap<[u8; 32], Arc<tokio::sync::Mutex<()>>>>,
    recent: quick_cache::sync::Cache<[u8; 32], (Arc<Session>, UnixTime)>,
    metrics: Arc<Metrics>,
}

/// A refresh failed; the session has been ended.
#[derive(Debug, Clone, thiserror::Error)]
#[error("refresh failed: {0}")]
pub struct RefreshError(pub String);

fn key_of(refresh_token: &str) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, refresh_token.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

impl Refresher {
    /// A refresher; `enabled` and `refresh_before` come from `[session]`.
    pub fn new(enabled: bool, refresh_before: std::time::Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            refresh_before: i64::try_from(refresh_before.as_secs()).unwrap_or(i64::MAX),
            enabled,
            locks: Mutex::new(HashMap::new()),
            recent: quick_cache::sync::Cache::new(10_000),
            metrics,
        }
    }

    fn forget_lock(&self, key: &[u8; 32]) {
        if let Ok(mut locks) = self.locks.lock() {
            locks.remove(key);
        }
    }

    fn is_due(&self, session: &Session, now: UnixTime) -> bool {
        self.enabled
            && session.refresh_token.is_some()
            && session
                .access_expires_at
                .is_some_and(|expires_at| expires_at - now <= self.refresh_before)
    }

    /// The session, refreshed when its access token is about to expire, with the `Set-Cookie`
    /// values that store it (only the cookie store needs them).
    ///
    /// # Errors
    /// `RefreshError` when the provider refuses or answers something invalid; the session is
    /// then ended in the store.
    pub async fn refresh_if_due(
        &self,
        provider: &Provider,
        sessions: &Sessions,
        cookies: &crate::session::Cookies<'_>,
        session: Arc<Session>,
        now: UnixTime,
        attributes: CookieAttributes,
    ) -> Result<(Arc<Session>, Vec<String>), RefreshError> {
        if !self.is_due(&session, now) {
            return Ok((session, Vec::new()));
        }
        let Some(refresh_token) = session.refresh_token.clone() else {
            return Ok((session, Vec::new()));
        };
        let key = key_of(&refresh_token);
        let lock = self
            .locks
            .lock()
            .map(|mut locks| locks.entry(key).or_default().clone())
            .map_err(|_| RefreshError("lock poisoned".to_owned()))?;
        let _single_flight = lock.lock().await;
        if let Some((refreshed, _)) = self
            .recent
            .get(&key)
            .filter(|(_, at)| now - at < RESULT_KEPT)
        {
            // A request that came after the refresh made its own map entry: drop it again, or
            // the map would keep one lock per late request for ever.
            self.forget_lock(&key);
            let set_cookies = sessions
                .replace(cookies, &refreshed, now, attributes)
                .await
                .map_err(|error| RefreshError(error.to_string()))?;
            return Ok((refreshed, set_cookies));
        }
        let result = self.refresh(provider, &session, &refresh_token, now).await;
        // The result is published before the lock is dropped from the map: a request that
        // arrives later with the old session must find it, never refresh the spent token again.
        if let Ok(refreshed) = &result {
            self.recent.insert(key, (refreshed.clone(), now));
        }
        self.forget_lock(&key);
        match result {
            Ok(refreshed) => {
                let set_cookies = sessions
                    .replace(cookies, &refreshed, now, attributes)
                    .await
                    .map_err(|error| RefreshError(error.to_string()))?;
                self.metrics
                    .refreshes
                    .get_or_create(&crate::metrics::OutcomeLabels { result: "ok" })
                    .inc();
                Ok((refreshed, set_cookies))
            }
            Err(error) => {
                self.metrics
                    .refreshes
                    .get_or_create(&crate::metrics::OutcomeLabels { result: "error" })
                    .inc();
                tracing::info!(provider = %provider.name(), %error, "refresh failed; the session ends");
                let _ = sessions.end(cookies, now, attributes).await;
                Err(error)
            }
        }
    }

    async fn refresh(
        &self,
        provider: &Provider,
        session: &Session,
        refresh_token: &str,
        now: UnixTime,
    ) -> Result<Arc<Session>, RefreshError> {
        let tokens = provider
            .refresh(refresh_token)
            .await
            .map_err(|error| RefreshError(error.to_string()))?;
        let mut refreshed = Session::clone(session);
        if let Some(id_token) = &tokens.id_token {
            let original_nonce = session.claims.get("nonce").and_then(Value::as_str);
            let claims = provider
                .validate_id_token(
                    id_token,
                    NonceRule::AbsentOrEquals(original_nonce),
                    Some(&tokens.access_token),
                )
                .await
                .map_err(|error| RefreshError(format!("refreshed ID token refused: {error}")))?;
            // OIDC Core 12.2: the refreshed ID token is about the same user.
            if claims.get("sub") != session.claims.get("sub") {
                return Err(RefreshError(
                    "the refreshed ID token names another subject".to_owned(),
                ));
            }
            for (name, value) in claims.iter() {
                std::sync::Arc::make_mut(&mut refreshed.claims).insert(name.clone(), value.clone());
            }
            refreshed.id_token = id_token.clone();
        }
        refreshed.access_token = Some(tokens.access_token.clone());
        if let Some(rotated) = tokens.refresh_token {
            refreshed.refresh_token = Some(rotated);
        }
        refreshed.access_expires_at = tokens.expires_in.map(|seconds| now.saturating_add(seconds));
        Ok(Arc::new(refreshed))
    }
}
