//! Deciding whether a JWT is valid (SPEC §6): algorithm allow-list, signature, `iss`, `aud`,
//! `exp`, `nbf`, `iat` with leeway, and what kind of token it is. No IO and no clock: keys and
//! `now` are arguments.

pub mod cache;
pub mod id_token;
pub mod introspection;
pub mod logout_token;

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Header, Validation};
use serde_json::{Map, Value};

use crate::clock::UnixTime;
use crate::jose::{self, KeySet};

/// The claims of a validated token.
pub type Claims = Arc<Map<String, Value>>;

/// Why a token was refused. Messages name the check, never the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts of JSON.
    #[error("malformed token")]
    Malformed,
    /// `none`, HMAC, or an algorithm not on the allow-list.
    #[error("algorithm not allowed")]
    DisallowedAlgorithm,
    /// Header has `crit` extensions we do not understand (RFC 7515 §4.1.11).
    #[error("unsupported critical header")]
    UnsupportedCritical,
    /// No key with this `kid` (or no unambiguous key) for the algorithm. The `kid` is the
    /// token's, bounded by `untrusted::bounded`.
    #[error("no key for kid {0:?}")]
    UnknownKey(Option<String>),
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `iss` is not the expected issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` holds no accepted audience.
    #[error("wrong audience")]
    WrongAudience,
    /// `exp` is past, beyond the leeway.
    #[error("expired")]
    Expired,
    /// `nbf` is in the future, beyond the leeway.
    #[error("not yet valid")]
    NotYetValid,
    /// `iat` is in the future, beyond the leeway.
    #[error("issued in the future")]
    IssuedInFuture,
    /// A required claim is absent or of the wrong type (a NumericDate that is not an integer
    /// in `0..=MAX_NUMERIC_DATE`).
    #[error("missing or invalid claim {0}")]
    MissingClaim(&'static str),
    /// `sub` is longer than `MAX_SUBJECT_CHARS` (OIDC Core §2).
    #[error("sub longer than 255 characters")]
    SubjectTooLong,
    /// An ID token or logout token offered as an access token (SPEC §6).
    #[error("not an access token")]
    NotAnAccessToken,
    /// A token bound to a key its holder must prove (`cnf`: DPoP, RFC 9449 §6; mutual TLS,
    /// RFC 8705 §3), which Tollgate, taking bearer tokens only, cannot check.
    #[error("bound to a key (cnf): not a bearer token")]
    BoundToKey,
    /// OIDC Core 3.1.3.7: the nonce is absent or not the one sent.
    #[error("nonce mismatch")]
    WrongNonce,
    /// OIDC Core 3.1.3.7: `azp` is missing or not this client.
    #[error("authorized party mismatch")]
    WrongAuthorizedParty,
    /// OIDC Core 3.2.2.9: `at_hash` does not match the access token.
    #[error("at_hash mismatch")]
    WrongAccessTokenHash,
    /// OIDC Core 3.3.2.10: `c_hash` does not match the authorization code.
    #[error("c_hash mismatch")]
    WrongCodeHash,
    /// An ID token issued longer ago than the provider's `max_id_token_age` (SPEC §6).
    #[error("issued too long ago")]
    TooOld,
    /// RFC 7662: the introspection endpoint says the token is not active.
    #[error("token not active")]
    Inactive,
    /// OIDC Core 5.3.2: the userinfo `sub` is not the ID token's.
    #[error("userinfo subject mismatch")]
    WrongSubject,
}

/// The latest NumericDate accepted: 9999-12-31T23:59:59Z. Anything later (or a float, which
/// would saturate) is refused rather than read as "never expires".
pub const MAX_NUMERIC_DATE: i64 = 253_402_300_799;

/// The longest `sub` accepted (OIDC Core §2: it must not exceed 255 ASCII characters).
pub const MAX_SUBJECT_CHARS: usize = 255;

/// What a token must satisfy besides its signature.
#[derive(Debug, Clone)]
pub struct Expectations<'a> {
    /// The exact `iss`.
    pub issuer: &'a str,
    /// `aud` must contain one of these.
    pub audiences: &'a [String],
    /// Allowed clock skew in seconds.
    pub leeway: i64,
    /// The current time.
    pub now: UnixTime,
}

/// A decoded, not yet verified header.
#[derive(Debug, Clone)]
pub struct TokenHeader {
    /// The signature algorithm, already checked against the allow-list.
    pub algorithm: Algorithm,
    /// The key id.
    pub kid: Option<String>,
    /// The `typ` header.
    pub typ: Option<String>,
}

/// Reads a token's header and refuses disallowed algorithms and `crit` extensions.
///
/// # Errors
/// `Malformed`, `DisallowedAlgorithm` or `UnsupportedCritical`.
pub fn read_header(token: &str) -> Result<TokenHeader, TokenError> {
    if token.split('.').count() != 3 {
        return Err(TokenError::Malformed);
    }
    let header: Header = match jsonwebtoken::decode_header(token) {
        Ok(header) => header,
        // `alg: none` and other unknown names fail to parse as an `Algorithm`; tell them apart
        // from garbage so the log says what happened.
        Err(_) => {
            return Err(if has_alg_field(token) {
                TokenError::DisallowedAlgorithm
            } else {
                TokenError::Malformed
            });
        }
    };
    if !jose::is_allowed(header.alg) {
        return Err(TokenError::DisallowedAlgorithm);
    }
    if header.crit.is_some() {
        return Err(TokenError::UnsupportedCritical);
    }
    Ok(TokenHeader {
        algorithm: header.alg,
        kid: header.kid,
        typ: header.typ,
    })
}

fn has_alg_field(token: &str) -> bool {
    let Some(encoded) = token.split('.').next() else {
        return false;
    };
    let Ok(bytes) = URL_SAFE_NO_PAD.decode(encoded) else {
        return false;
    };
    serde_json::from_slice::<Value>(&bytes).is_ok_and(|header| header.get("alg").is_some())
}

/// Verifies the signature with a key from `keys` and returns the claims, unchecked.
///
/// # Errors
/// `UnknownKey` when no key fits (the caller may re-fetch the JWKS and try again),
/// `BadSignature`, or `Malformed`.
pub fn verify_signature(
    token: &str,
    header: &TokenHeader,
    keys: &KeySet,
) -> Result<Map<String, Value>, TokenError> {
    let key = keys
        .find(header.kid.as_deref(), header.algorithm)
        .ok_or_else(|| {
            TokenError::UnknownKey(header.kid.as_deref().map(crate::untrusted::bounded))
        })?;
    let mut validation = Validation::new(header.algorithm);
    // Time, issuer and audience are checked by `check_claims` with an injected clock.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation) {
        Ok(data) => Ok(data.claims),
        Err(error) => match error.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => Err(TokenError::BadSignature),
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => {
                Err(TokenError::DisallowedAlgorithm)
            }
            _ => Err(TokenError::Malformed),
        },
    }
}

/// Checks `iss`, `aud`, `exp`, `nbf`, `iat` and the length of `sub` (SPEC §6).
///
/// # Errors
/// The first check that fails.
pub fn check_claims(
    claims: &Map<String, Value>,
    expected: &Expectations<'_>,
) -> Result<(), TokenError> {
    match claims.get("iss").and_then(Value::as_str) {
        Some(issuer) if issuer == expected.issuer => {}
        Some(_) => return Err(TokenError::WrongIssuer),
        None => return Err(TokenError::MissingClaim("iss")),
    }
    if !audience_matches(claims, expected.audiences) {
        return Err(TokenError::WrongAudience);
    }
    let exp = numeric_claim(claims, "exp")?.ok_or(TokenError::MissingClaim("exp"))?;
    if expected.now > exp.saturating_add(expected.leeway) {
        return Err(TokenError::Expired);
    }
    if let Some(nbf) = numeric_claim(claims, "nbf")?
        && nbf > expected.now.saturating_add(expected.leeway)
    {
        return Err(TokenError::NotYetValid);
    }
    if let Some(iat) = numeric_claim(claims, "iat")?
        && iat > expected.now.saturating_add(expected.leeway)
    {
        return Err(TokenError::IssuedInFuture);
    }
    check_subject(claims)
}

/// `sub`, when present, is a string of at most `MAX_SUBJECT_CHARS` characters.
///
/// # Errors
/// `SubjectTooLong`, or `MissingClaim("sub")` when it is not a string.
pub fn check_subject(claims: &Map<String, Value>) -> Result<(), TokenError> {
    match claims.get("sub") {
        None => Ok(()),
        Some(Value::String(subject)) if subject.chars().count() <= MAX_SUBJECT_CHARS => Ok(()),
        Some(Value::String(_)) => Err(TokenError::SubjectTooLong),
        Some(_) => Err(TokenError::MissingClaim("sub")),
    }
}

/// Whether `aud` (a string or an array) contains one of `accepted`.
pub fn audience_matches(claims: &Map<String, Value>, accepted: &[String]) -> bool {
    match claims.get("aud") {
        Some(Value::String(audience)) => accepted.iter().any(|wanted| wanted == audience),
        Some(Value::Array(audiences)) => audiences
            .iter()
            .filter_map(Value::as_str)
            .any(|audience| accepted.iter().any(|wanted| wanted == audience)),
        _ => false,
    }
}

/// Three dot-separated parts: a JWS compact serialisation, not an opaque token.
pub fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|byte| *byte == b'.').count() == 2
}

/// The claims a JWT's payload holds, unverified: for a token validated before (kept in a
/// session), or to choose who checks one, never to trust it.
pub fn unverified_claims(token: &str) -> Option<Map<String, Value>> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The `iss` a JWT says it has, unverified: only to choose who checks it, never to trust it.
pub fn unverified_issuer(token: &str) -> Option<String> {
    unverified_claims(token)?
        .get("iss")?
        .as_str()
        .map(str::to_owned)
}

/// What `email_verified` says: `Some(true)` for `true` (or `"true"`, as Amazon Cognito sends
/// it), `Some(false)` for any other value, `None` when the claim is absent. Each reader decides
/// what silence means.
pub fn email_verified(claims: &Map<String, Value>) -> Option<bool> {
    claims.get("email_verified").map(|value| match value {
        Value::Bool(verified) => *verified,
        Value::String(text) => text.eq_ignore_ascii_case("true"),
        _ => false,
    })
}

/// Whether an ID token's `claims` say it was issued by `issuer` to `client_id` (`iss`, and
/// `aud` or one of its values).
pub fn issued_by_to(claims: &Map<String, Value>, issuer: &str, client_id: &str) -> bool {
    let audience_holds = match claims.get("aud") {
        Some(Value::String(audience)) => audience == client_id,
        Some(Value::Array(audiences)) => audiences
            .iter()
            .any(|audience| audience.as_str() == Some(client_id)),
        _ => false,
    };
    claims.get("iss").and_then(Value::as_str) == Some(issuer) && audience_holds
}

/// The ID token's claims standing in for userinfo's, which could not be had: userinfo may be
/// where the provider says an address is not verified, and left out, a `false` would read as
/// the provider's silence, which vouches for the address. Where the claims say nothing of
/// `email_verified`, at a login (`before` is `None`) the address is taken as unverified; at a
/// refresh what the session said (`before`, when it said anything) is kept for the same
/// address, and another address is unverified.
pub fn without_userinfo(mut claims: Claims, before: Option<&Map<String, Value>>) -> Claims {
    if !claims.contains_key("email") || claims.contains_key("email_verified") {
        return claims;
    }
    let said = match before {
        None => Value::Bool(false),
        Some(before) => match before.get("email_verified") {
            None => return claims,
            Some(_) if claims.get("email") != before.get("email") => Value::Bool(false),
            Some(said) => said.clone(),
        },
    };
    Arc::make_mut(&mut claims).insert("email_verified".to_owned(), said);
    claims
}

/// A NumericDate claim in whole seconds; `None` when absent.
///
/// # Errors
/// `MissingClaim` when present but not an integer in `0..=MAX_NUMERIC_DATE` (a float such as
/// `1e300` or `1800000000.5` is refused, never rounded or saturated).
pub fn numeric_claim(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<i64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(number)) => number
            .as_i64()
            .filter(|seconds| (0..=MAX_NUMERIC_DATE).contains(seconds))
            .map(Some)
            .ok_or(TokenError::MissingClaim(name)),
        Some(_) => Err(TokenError::MissingClaim(name)),
    }
}

/// The claims by which a token says it is an access token: the scopes it grants (`scope`,
/// `scp`), the client it was issued to (`client_id`, RFC 9068; Okta's `cid`, Entra ID's
/// `appid` in v1 tokens and `azpacr` in v2). An ID token carries none of them. Not `roles`:
/// Entra ID puts a user's app roles in ID tokens too (an app-only Entra token says `appid` or
/// `azpacr` beside them), nor `azp`, which an ID token for several audiences carries.
const ACCESS_TOKEN_CLAIMS: [&str; 6] = ["scope", "scp", "client_id", "cid", "appid", "azpacr"];

/// Refuses tokens that are not access tokens: ID tokens (`nonce`, `at_hash`, `c_hash`, a `typ`
/// of `ID`, a `token_use` other than `access`, or an `id_token+jwt` header), logout tokens
/// (`events`) (SPEC §6). `client_id` is
/// the client Tollgate signs in with at this provider: a token for that audience without an
/// `at+jwt` header and without any claim of an access token ([`ACCESS_TOKEN_CLAIMS`]) is that
/// client's ID token too. A provider leaves `nonce` out of the ID tokens it issues on refresh,
/// and may leave `at_hash` out of all of them; Tollgate hands such an ID token to upstreams
/// (`id_token` identity headers), which must not be able to replay it as a bearer token
/// where `audiences` names the client id.
///
/// # Errors
/// `NotAnAccessToken`; `BoundToKey` for a token with a `cnf` claim.
pub fn ensure_access_token(
    header: &TokenHeader,
    claims: &Map<String, Value>,
    client_id: Option<&str>,
) -> Result<(), TokenError> {
    let header_type = header.typ.as_deref().unwrap_or("").to_ascii_lowercase();
    let says_access_token = matches!(header_type.as_str(), "at+jwt" | "application/at+jwt");
    let client_ids_id_token = || {
        client_id.is_some_and(|client_id| {
            let names_it = match claims.get("aud") {
                Some(Value::String(audience)) => audience == client_id,
                Some(Value::Array(audiences)) => audiences
                    .iter()
                    .any(|audience| audience.as_str() == Some(client_id)),
                _ => false,
            };
            names_it
                && !ACCESS_TOKEN_CLAIMS
                    .iter()
                    .any(|name| claims.contains_key(*name))
        })
    };
    let id_like_header = header_type.contains("id_token")
        || header_type.contains("logout")
        || (!says_access_token && client_ids_id_token());
    let id_like_claims = ["nonce", "at_hash", "c_hash", "events"]
        .iter()
        .any(|name| claims.contains_key(*name))
        || claims
            .get("typ")
            .and_then(Value::as_str)
            .is_some_and(|typ| {
                typ.eq_ignore_ascii_case("id") || typ.eq_ignore_ascii_case("logout")
            })
        // Amazon Cognito names each of its tokens (`id` or `access`), as its introspection
        // answers do.
        || claims
            .get("token_use")
            .is_some_and(|token_use| token_use.as_str() != Some("access"));
    if id_like_header || id_like_claims {
        Err(TokenError::NotAnAccessToken)
    } else if claims.contains_key("cnf") {
        Err(TokenError::BoundToKey)
    } else {
        Ok(())
    }
}

/// Full access-token validation: header, signature, claims, kind (`client_id`: the client
/// Tollgate signs in with at the issuer, whose ID tokens are refused, see
/// [`ensure_access_token`]).
///
/// # Errors
/// Any `TokenError`; `UnknownKey` means the caller may refresh `keys` and retry once.
pub fn validate_access_token(
    token: &str,
    keys: &KeySet,
    expected: &Expectations<'_>,
    client_id: Option<&str>,
) -> Result<Claims, TokenError> {
    let header = read_header(token)?;
    let claims = verify_signature(token, &header, keys)?;
    check_claims(&claims, expected)?;
    ensure_access_token(&header, &claims, client_id)?;
    Ok(Arc::new(claims))
}

#[cfg(test)]
mod tests;
