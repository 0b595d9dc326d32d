//! OpenID Connect Back-Channel Logout 1.0: `POST /backchannel-logout` with a `logout_token`
//! ends every session of that `sid` (or, without one, of that `sub`) at that provider. Needs a
//! server-side session store; a replayed token (`jti` seen before) is refused — on every
//! replica with the Redis store, which keeps the used `jti`s.

use crate::http::rejection::{Refusal, Rejection};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::LoginFlow;
use crate::session::error::StoreError;
use crate::session::store::SessionSelector;

fn answer(status: StatusCode, error: Option<&str>) -> Response {
    let body = match error {
        Some(description) => {
            serde_json::json!({"error": "invalid_request", "error_description": description})
                .to_string()
        }
        None => String::new(),
    };
    (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_TYPE, "application/json"),
        ],
        body,
    )
        .into_response()
}

/// `POST /backchannel-logout`.
pub async fn backchannel_logout(
    State(state): State<Arc<LoginFlow>>,
    body: axum::body::Bytes,
) -> Response {
    let token = url::form_urlencoded::parse(&body)
        .find(|(name, _)| name == "logout_token")
        .map(|(_, value)| value.into_owned());
    let Some(token) = token else {
        return refuse(&state, "missing logout_token");
    };
    // Choose the provider by the token's (unverified) issuer; its keys then decide.
    let issuer = unverified_issuer(&token);
    let Some(provider) = state
        .providers
        .values()
        .find(|provider| Some(provider.config.issuer.as_str()) == issuer.as_deref())
    else {
        return refuse(&state, "unknown issuer");
    };
    let claims = match provider.validate_logout_token(&token).await {
        Ok(claims) => claims,
        Err(error) => return refuse(&state, &format!("logout_token refused: {error}")),
    };
    let now = state.clock.now();
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some(sessions) = state.sessions.as_ref() else {
        return answer(
            StatusCode::NOT_IMPLEMENTED,
            Some("no sessions are configured"),
        );
    };
    let sid = claims.get("sid").and_then(Value::as_str);
    let sub = claims.get("sub").and_then(Value::as_str);
    let provider_name = provider.name().to_owned();
    let selector = match (sid, sub) {
        (Some(sid), _) => SessionSelector::SidAt {
            provider: &provider_name,
            sid,
        },
        (None, Some(sub)) => SessionSelector::SubAt {
            provider: &provider_name,
            sub,
        },
        (None, None) => return refuse(&state, "logout_token has neither sid nor sub"),
    };
    // Checked first, recorded only once the sessions ended: a logout that failed is served
    // again when the provider retries it. Two copies at once both end the sessions, which is
    // the same logout.
    match sessions.logout_token_used(&provider_name, jti, now).await {
        Ok(false) => {}
        Ok(true) => return refuse(&state, "logout_token replayed"),
        Err(error) => return unavailable(&error),
    }
    match sessions.end_selected(selector).await {
        Ok(count) => {
            if let Err(error) = sessions
                .remember_logout_token(&provider_name, jti, now)
                .await
            {
                // Ended, but a replay would not be recognised: the retry records it.
                return unavailable(&error);
            }
            state.metrics.request("backchannel_logout", "ended");
            tracing::info!(provider = %provider_name, sessions = count, "back-channel logout");
            answer(StatusCode::OK, None)
        }
        Err(StoreError::NotServerSide) => answer(
            StatusCode::NOT_IMPLEMENTED,
            Some(
                "back-channel logout needs a server-side session store (session.store = \"memory\")",
            ),
        ),
        Err(error) => unavailable(&error),
    }
}

/// 503: the provider retries a 5xx with the same token.
fn unavailable(error: &StoreError) -> Response {
    tracing::warn!(%error, "back-channel logout could not be carried out by the session store");
    answer(
        StatusCode::SERVICE_UNAVAILABLE,
        Some("session store unavailable"),
    )
}

fn refuse(state: &LoginFlow, reason: &str) -> Response {
    state.metrics.refused(
        "backchannel_logout",
        &Refusal::new(Rejection::BadRequest(reason.to_owned()), reason),
    );
    answer(StatusCode::BAD_REQUEST, Some(reason))
}

fn unverified_issuer(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_owned)
}
