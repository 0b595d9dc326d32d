//! ID token validation by OpenID Connect Core 1.0 §3.1.3.7. No IO, no clock.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use super::{
    Claims, Expectations, TokenError, check_claims, numeric_claim, read_header, verify_signature,
};
use crate::jose::KeySet;
use crate::secret::constant_time_eq;

/// What an ID token must match besides the common checks.
#[derive(Debug, Clone)]
pub struct IdTokenExpectations<'a> {
    /// Issuer, audience (= our client id), time.
    pub common: Expectations<'a>,
    /// Our client id (for `azp`).
    pub client_id: &'a str,
    /// What the `nonce` must be.
    pub nonce: NonceRule<'a>,
    /// The access token issued with it, to check `at_hash` against.
    pub access_token: Option<&'a str>,
    /// The authorization code it was issued for, to check `c_hash` against (login only).
    pub code: Option<&'a str>,
    /// The oldest `iat` accepted, as an age in seconds (login only: `max_id_token_age`).
    pub max_age: Option<i64>,
}

/// The `nonce` rule of an ID token.
#[derive(Debug, Clone, Copy)]
pub enum NonceRule<'a> {
    /// From a login: the nonce sent (OIDC Core 3.1.3.7 step 11).
    Equals(&'a str),
    /// From a refresh: absent, or the one of the original ID token (OIDC Core 12.2).
    AbsentOrEquals(Option<&'a str>),
}

/// Validates an ID token.
///
/// # Errors
/// Any `TokenError`; `UnknownKey` means the caller may refresh `keys` and retry once.
pub fn validate_id_token(
    token: &str,
    keys: &KeySet,
    expected: &IdTokenExpectations<'_>,
) -> Result<Claims, TokenError> {
    let header = read_header(token)?;
    let claims = verify_signature(token, &header, keys)?;
    // Steps 2, 3, 9, 10: iss exact, aud contains client_id, exp, iat.
    check_claims(&claims, &expected.common)?;
    let iat = numeric_claim(&claims, "iat")?.ok_or(TokenError::MissingClaim("iat"))?;
    // SPEC §6: an ID token issued long ago (replayed, or from a stuck provider) does not log in.
    if let Some(max_age) = expected.max_age
        && expected.common.now
            > iat
                .saturating_add(max_age)
                .saturating_add(expected.common.leeway)
    {
        return Err(TokenError::TooOld);
    }
    if claims
        .get("sub")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(TokenError::MissingClaim("sub"));
    }
    // Steps 4 and 5: with several audiences azp must be present; when present it is us.
    let several_audiences = claims
        .get("aud")
        .and_then(Value::as_array)
        .is_some_and(|list| list.len() > 1);
    match claims.get("azp").and_then(Value::as_str) {
        Some(azp) if azp != expected.client_id => return Err(TokenError::WrongAuthorizedParty),
        None if several_audiences => return Err(TokenError::WrongAuthorizedParty),
        _ => {}
    }
    // Step 11: the nonce must be the one we sent.
    let nonce = claims.get("nonce").and_then(Value::as_str);
    let nonce_ok = match (expected.nonce, nonce) {
        (NonceRule::Equals(sent), Some(nonce)) => {
            constant_time_eq(nonce.as_bytes(), sent.as_bytes())
        }
        (NonceRule::Equals(_), None) => false,
        (NonceRule::AbsentOrEquals(_), None) => true,
        (NonceRule::AbsentOrEquals(original), Some(nonce)) => {
            original.is_some_and(|original| constant_time_eq(nonce.as_bytes(), original.as_bytes()))
        }
    };
    if !nonce_ok {
        return Err(TokenError::WrongNonce);
    }
    // 3.2.2.9 / 3.3.2.11: at_hash, when present, must match the access token; 3.3.2.10:
    // c_hash, when present, the authorization code.
    check_hash(
        &claims,
        "at_hash",
        header.algorithm,
        expected.access_token,
        TokenError::WrongAccessTokenHash,
    )?;
    check_hash(
        &claims,
        "c_hash",
        header.algorithm,
        expected.code,
        TokenError::WrongCodeHash,
    )?;
    Ok(Arc::new(claims))
}

/// A `name` hash claim, when present and `value` is known, must be `left_half_hash` of it.
fn check_hash(
    claims: &Map<String, Value>,
    name: &str,
    algorithm: Algorithm,
    value: Option<&str>,
    mismatch: TokenError,
) -> Result<(), TokenError> {
    let (Some(claimed), Some(value)) = (claims.get(name), value) else {
        return Ok(());
    };
    let expected = left_half_hash(algorithm, value);
    match claimed.as_str() {
        Some(claimed) if constant_time_eq(claimed.as_bytes(), expected.as_bytes()) => Ok(()),
        _ => Err(mismatch),
    }
}

/// base64url of the left half of the hash of `value`, with the hash of the JWS algorithm
/// (OIDC Core 3.1.3.6; SHA-512 for EdDSA with Ed25519).
pub fn left_half_hash(algorithm: Algorithm, value: &str) -> String {
    use aws_lc_rs::digest;
    let hash = match algorithm {
        Algorithm::RS384 | Algorithm::PS384 | Algorithm::ES384 | Algorithm::HS384 => {
            &digest::SHA384
        }
        Algorithm::RS512 | Algorithm::PS512 | Algorithm::HS512 | Algorithm::EdDSA => {
            &digest::SHA512
        }
        _ => &digest::SHA256,
    };
    let digest = digest::digest(hash, value.as_bytes());
    let bytes = digest.as_ref();
    URL_SAFE_NO_PAD.encode(bytes.get(..bytes.len() / 2).unwrap_or(bytes))
}
