//! Logout tokens of OpenID Connect Back-Channel Logout 1.0 §2.6. No IO, no clock.

use std::sync::Arc;

use serde_json::Value;

use super::{
    Claims, Expectations, TokenError, audience_matches, check_subject, numeric_claim, read_header,
    verify_signature,
};
use crate::jose::KeySet;

/// The event a logout token must carry.
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// The oldest logout token accepted, in seconds since its `iat`: a used `jti` is remembered at
/// least this long, so a token replayed once its `jti` is forgotten is refused for its age
/// (§2.6 leaves `exp` optional, and a token without one would otherwise be good for ever).
pub const MAX_AGE: i64 = 86_400;

/// Validates a logout token: signature, `iss`, `aud`, `iat` (no older than [`MAX_AGE`]; and
/// `exp` when present) with leeway, the back-channel logout event, `sub` or `sid`, no `nonce`, and a `typ` header of
/// `logout+jwt` when there is one. Replay (`jti`) is the caller's to check.
///
/// # Errors
/// Any `TokenError`; `UnknownKey` means the caller may refresh `keys` and retry once.
pub fn validate_logout_token(
    token: &str,
    keys: &KeySet,
    expected: &Expectations<'_>,
) -> Result<Claims, TokenError> {
    let header = read_header(token)?;
    if header.typ.as_deref().is_some_and(|typ| {
        !typ.eq_ignore_ascii_case("logout+jwt") && !typ.eq_ignore_ascii_case("jwt")
    }) {
        return Err(TokenError::MissingClaim("typ"));
    }
    let claims = verify_signature(token, &header, keys)?;
    if claims.get("iss").and_then(Value::as_str) != Some(expected.issuer) {
        return Err(TokenError::WrongIssuer);
    }
    if !audience_matches(&claims, expected.audiences) {
        return Err(TokenError::WrongAudience);
    }
    let iat = numeric_claim(&claims, "iat")?.ok_or(TokenError::MissingClaim("iat"))?;
    if iat > expected.now.saturating_add(expected.leeway) {
        return Err(TokenError::IssuedInFuture);
    }
    if expected.now.saturating_sub(iat) > MAX_AGE {
        return Err(TokenError::Expired);
    }
    if let Some(exp) = numeric_claim(&claims, "exp")?
        && expected.now > exp.saturating_add(expected.leeway)
    {
        return Err(TokenError::Expired);
    }
    if claims
        .get("jti")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(TokenError::MissingClaim("jti"));
    }
    let has_event = claims
        .get("events")
        .and_then(Value::as_object)
        .is_some_and(|events| events.contains_key(BACKCHANNEL_LOGOUT_EVENT));
    if !has_event {
        return Err(TokenError::MissingClaim("events"));
    }
    if claims.get("sub").and_then(Value::as_str).is_none()
        && claims.get("sid").and_then(Value::as_str).is_none()
    {
        return Err(TokenError::MissingClaim("sub or sid"));
    }
    check_subject(&claims)?;
    // §2.6 step 5: a logout token must not carry a nonce (so an ID token is never one).
    if claims.contains_key("nonce") {
        return Err(TokenError::MissingClaim("no nonce"));
    }
    Ok(Arc::new(claims))
}
