//! OpenID Connect Back-Channel Logout 1.0: `POST /backchannel-logout` with a `logout_token`
//! ends every session of that `sid` (or, without one, of that `sub`) at that provider. Needs a
//! server-side session store; a replayed token (`jti` seen before) is refused — on every
//! replica with the Redis store, which keeps the used `jti`s.

use crate::http::rejection::Refused;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::LoginFlow;
use crate::oidc::provider::CredentialError;
use crate::session::error::StoreError;
use crate::session::store::SessionSelector;
use crate::token::TokenError;

/// Why a back-channel logout was not carried out. The handler records its one count under
/// `tollgate_requests_total{role="backchannel_logout"}` and its one log line through
/// `Metrics::refused`, then answers the provider.
#[derive(Debug)]
enum BackchannelRefusal {
    /// The logout token is missing, unknown or invalid, or was seen before: 400, naming why.
    Invalid(String),
    /// No server-side session store to end sessions in (no session secrets, or
    /// `session.store = "cookie"`): 501, naming why. Sessions the provider ended live on, so
    /// the operator should look at it.
    NotServerSide(&'static str),
    /// The session store could not carry the logout out, and why: 503 (the provider retries a
    /// 5xx with the same token).
    Unavailable(StoreError),
    /// The token could not be checked: the provider's keys could not be fetched. 503, so that
    /// the provider retries: a 400 is final, and the user's sessions would live on.
    KeysUnavailable(String),
    /// No key is the token's, and the keys are not fetched again before
    /// `jwks_refetch_interval` is over (a key rotated in since the last fetch): 503, and not a
    /// failure of Tollgate's, since anyone can send a made-up `kid`.
    KeyNotYetFetched,
}

impl Refused for BackchannelRefusal {
    fn label(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "bad_request",
            Self::NotServerSide(_) => "not_server_side",
            Self::Unavailable(_) => "store_unavailable",
            Self::KeysUnavailable(_) => "keys_unavailable",
            Self::KeyNotYetFetched => "key_not_yet_fetched",
        }
    }

    fn reason(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Self::Invalid(reason) => std::borrow::Cow::Borrowed(reason),
            Self::NotServerSide(reason) => std::borrow::Cow::Borrowed(reason),
            Self::Unavailable(error) => std::borrow::Cow::Owned(format!(
                "back-channel logout could not be carried out by the session store: {error}"
            )),
            Self::KeysUnavailable(reason) => std::borrow::Cow::Owned(format!(
                "back-channel logout token could not be checked: {reason}"
            )),
            Self::KeyNotYetFetched => std::borrow::Cow::Borrowed(
                "back-channel logout token names a key the provider's keys lack; they are fetched again within jwks_refetch_interval",
            ),
        }
    }

    fn is_failure(&self) -> bool {
        matches!(
            self,
            Self::NotServerSide(_) | Self::Unavailable(_) | Self::KeysUnavailable(_)
        )
    }
}

impl IntoResponse for BackchannelRefusal {
    fn into_response(self) -> Response {
        match self {
            Self::Invalid(reason) => answer(StatusCode::BAD_REQUEST, Some(&reason)),
            Self::NotServerSide(reason) => answer(StatusCode::NOT_IMPLEMENTED, Some(reason)),
            Self::Unavailable(_) => answer(
                StatusCode::SERVICE_UNAVAILABLE,
                Some("session store unavailable"),
            ),
            // What failed (an internal URL) is for the log, not for whoever posted.
            Self::KeysUnavailable(_) | Self::KeyNotYetFetched => answer(
                StatusCode::SERVICE_UNAVAILABLE,
                Some("the provider's signing keys are unavailable; retry"),
            ),
        }
    }
}

fn answer(status: StatusCode, error: Option<&str>) -> Response {
    let body = match error {
        Some(description) => {
            // The reason may quote the logout token (a `kid`): only what RFC 6749 §5.2 allows.
            let description = crate::untrusted::oauth_description(description);
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

/// The longest back-channel logout request read: a logout token is a JWT of a kilobyte or
/// two; a longer body is refused (413) before it is read whole.
pub const BODY_MOST: usize = 64 * 1024;

/// `POST /backchannel-logout`.
pub async fn backchannel_logout(
    State(state): State<Arc<LoginFlow>>,
    body: axum::body::Bytes,
) -> Response {
    match logout(&state, &body).await {
        Ok(response) => response,
        Err(refusal) => {
            crate::refused!(state.metrics, "backchannel_logout", &refusal);
            refusal.into_response()
        }
    }
}

async fn logout(state: &LoginFlow, body: &[u8]) -> Result<Response, BackchannelRefusal> {
    let invalid = |reason: &str| BackchannelRefusal::Invalid(reason.to_owned());
    let token = url::form_urlencoded::parse(body)
        .find(|(name, _)| name == "logout_token")
        .map(|(_, value)| value.into_owned());
    let Some(token) = token else {
        return Err(invalid("missing logout_token"));
    };
    // Choose the provider by the token's (unverified) issuer; its keys then decide. Two
    // providers may share an issuer (two clients of one realm): the token's audience is one of
    // them, so each is tried until one accepts it.
    let issuer = crate::token::unverified_issuer(&token);
    let mut refused = None;
    let mut unchecked = None;
    let mut accepted = None;
    for provider in state
        .providers
        .values()
        .filter(|provider| Some(provider.config.issuer.as_str()) == issuer.as_deref())
    {
        match provider.validate_logout_token(&token).await {
            Ok(claims) => {
                accepted = Some((provider, claims));
                break;
            }
            Err((CredentialError::Provider(error), _)) => {
                unchecked = Some(BackchannelRefusal::KeysUnavailable(error.to_string()));
            }
            // No key is the token's, and the keys were not fetched again for it.
            Err((CredentialError::Token(TokenError::UnknownKey(_)), false)) => {
                if provider.keys_fetch_failed() {
                    unchecked = Some(BackchannelRefusal::KeysUnavailable(
                        "the last JWKS fetch failed".to_owned(),
                    ));
                } else {
                    unchecked = unchecked.or(Some(BackchannelRefusal::KeyNotYetFetched));
                }
            }
            Err((error, _)) => refused = Some(error),
        }
    }
    let Some((provider, claims)) = accepted else {
        // A provider that could not check the token may be the one it is for.
        return Err(match (unchecked, refused) {
            (Some(unchecked), _) => unchecked,
            (None, Some(error)) => invalid(&format!("logout_token refused: {error}")),
            (None, None) => invalid("unknown issuer"),
        });
    };
    let now = state.clock.now();
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some(sessions) = state.sessions.as_ref() else {
        return Err(BackchannelRefusal::NotServerSide(
            "no sessions are configured",
        ));
    };
    // When the provider ended its session (checked: at most a day ago, not ahead of now).
    let issued_at = claims.get("iat").and_then(Value::as_i64).unwrap_or(now);
    let sid = claims.get("sid").and_then(Value::as_str);
    let sub = claims.get("sub").and_then(Value::as_str);
    if sid.is_none() && sub.is_none() {
        return Err(invalid("logout_token has neither sid nor sub"));
    }
    let provider_name = provider.name().to_owned();
    // The replay record is the client's, not the accepting provider's: with two providers
    // that are one client of one issuer, which of them accepts a token depends on each one's
    // keys, which differ from replica to replica and over a key rotation, and a record under
    // one name let the other accept the token again (and end sessions signed in after it).
    let record = replay_record(&provider.config.issuer, &provider.config.client_id);
    // Checked first, recorded only once the sessions ended: a logout that failed is served
    // again when the provider retries it. Two copies at once both end the sessions, which is
    // the same logout.
    match sessions.logout_token_used(&record, jti, now).await {
        Ok(false) => {}
        Ok(true) => return Err(invalid("logout_token replayed")),
        Err(error) => return Err(BackchannelRefusal::Unavailable(error)),
    }
    // A Tollgate before 6 December 2026 kept the record under the provider's name: looked at
    // too, so a token used before an upgrade is not served again after it (within its day).
    // Such records live a day (`LOGOUT_TOKEN_MEMORY`): this lookup may go once no Tollgate
    // older than that runs anywhere a store is shared.
    match sessions.logout_token_used(&provider_name, jti, now).await {
        Ok(false) => {}
        Ok(true) => return Err(invalid("logout_token replayed")),
        Err(error) => return Err(BackchannelRefusal::Unavailable(error)),
    }
    // Every provider that is the same client of the same issuer (two `[[provider]]` entries
    // with other scopes, say) had the user's sessions too: the provider sent one token for
    // that client, and each of them accepts it.
    let same_client = state.providers.values().filter(|other| {
        other.config.issuer == provider.config.issuer
            && other.config.client_id == provider.config.client_id
    });
    let mut selectors = Vec::new();
    for other in same_client {
        // With a `sid`, that provider session's; with a `sub` beside it, also that user's
        // sessions that have no `sid` (their ID token carried none, so no `sid` can name them).
        match (sid, sub) {
            (Some(sid), sub) => {
                selectors.push(SessionSelector::SidAt {
                    provider: other.name(),
                    sid,
                });
                if let Some(sub) = sub {
                    selectors.push(SessionSelector::SubWithoutSidAt {
                        provider: other.name(),
                        sub,
                    });
                }
            }
            (None, Some(sub)) => selectors.push(SessionSelector::SubAt {
                provider: other.name(),
                sub,
            }),
            (None, None) => return Err(invalid("logout_token has neither sid nor sub")),
        }
    }
    let count = match sessions
        .end_for_logout_token(&selectors, (&record, jti, issued_at), now)
        .await
    {
        Ok(count) => count,
        Err(StoreError::NotServerSide) => {
            return Err(BackchannelRefusal::NotServerSide(
                "back-channel logout needs a server-side session store (session.store = \"memory\")",
            ));
        }
        // Nothing recorded: the provider's retry is served.
        Err(error) => return Err(BackchannelRefusal::Unavailable(error)),
    };
    state.metrics.request("backchannel_logout", "ended");
    tracing::info!(provider = %provider_name, sessions = count, "back-channel logout");
    Ok(answer(StatusCode::OK, None))
}

/// What a logout token's replay record is kept under: its client (issuer and client id), whose
/// providers all accept it, separated by a byte neither holds.
fn replay_record(issuer: &str, client_id: &str) -> String {
    format!("{issuer}\u{0}{client_id}")
}
