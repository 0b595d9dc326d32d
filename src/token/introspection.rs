//! Checking an RFC 7662 introspection answer for an opaque access token. No IO, no clock.

use serde_json::{Map, Value};

use super::{Expectations, TokenError, audience_matches, check_subject, numeric_claim};

/// Checks an introspection answer (SPEC §6): `active` must be true; `iss`, when present, must be
/// the provider's issuer; a refresh token (`token_type` or `token_use` of `refresh_token`) is
/// not an access token; `aud`, when present, must hold an accepted audience; `exp`, when
/// present, must not be past; `sub` is bounded. Returns `exp`.
///
/// # Errors
/// The first check that fails.
pub fn check_introspection(
    answer: &Map<String, Value>,
    expected: &Expectations<'_>,
) -> Result<Option<i64>, TokenError> {
    if answer.get("active") != Some(&Value::Bool(true)) {
        return Err(TokenError::Inactive);
    }
    match answer.get("iss") {
        None => {}
        Some(Value::String(issuer)) if issuer == expected.issuer => {}
        Some(_) => return Err(TokenError::WrongIssuer),
    }
    let is_refresh_token = ["token_type", "token_use"].iter().any(|name| {
        answer
            .get(*name)
            .and_then(Value::as_str)
            .is_some_and(|kind| {
                kind.eq_ignore_ascii_case("refresh_token") || kind.eq_ignore_ascii_case("refresh")
            })
    });
    if is_refresh_token {
        return Err(TokenError::NotAnAccessToken);
    }
    if answer.contains_key("aud") && !audience_matches(answer, expected.audiences) {
        return Err(TokenError::WrongAudience);
    }
    let exp = numeric_claim(answer, "exp")?;
    if exp.is_some_and(|exp| expected.now > exp.saturating_add(expected.leeway)) {
        return Err(TokenError::Expired);
    }
    check_subject(answer)?;
    Ok(exp)
}
