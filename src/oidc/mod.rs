//! Talking to upstream OpenID Providers: discovery, JWKS, the token endpoint (with client
//! assertions for `private_key_jwt`). A provider whose
//! issuer is Tollgate's own token service is served in-process through `LocalIssuer`. Makes no
//! authorisation decisions.

pub mod assertion;
pub mod client;
pub mod introspection_gate;
pub mod jwks;
pub mod provider;

use std::sync::Arc;

use serde::Deserialize;

use crate::jose::KeySet;

pub use provider::Provider;

/// The configured providers by name, built once and shared by the surfaces that use them.
pub type Providers = std::collections::BTreeMap<String, Arc<Provider>>;

/// The parts of a provider's discovery document Tollgate uses.
#[derive(Debug, Clone, Deserialize)]
pub struct ProviderMetadata {
    /// Must equal the configured issuer exactly.
    pub issuer: String,
    /// Where browsers log in.
    pub authorization_endpoint: String,
    /// Where codes are exchanged.
    pub token_endpoint: String,
    /// Where the keys are.
    pub jwks_uri: Option<String>,
    /// Userinfo.
    pub userinfo_endpoint: Option<String>,
    /// RP-initiated logout.
    pub end_session_endpoint: Option<String>,
    /// RFC 7662 token introspection.
    #[serde(default)]
    pub introspection_endpoint: Option<String>,
    /// RFC 7009 token revocation: a session's refresh token is revoked there at sign-out.
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
    /// RFC 9207: every authorization response carries `iss`, so one without it is refused.
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
    /// The algorithms the token endpoint accepts for client assertions (`private_key_jwt`).
    #[serde(default)]
    pub token_endpoint_auth_signing_alg_values_supported: Option<Vec<String>>,
    /// The same for the introspection endpoint (RFC 8414 §2); the token endpoint's when absent.
    #[serde(default)]
    pub introspection_endpoint_auth_signing_alg_values_supported: Option<Vec<String>>,
    /// The same for the revocation endpoint (RFC 8414 §2); the token endpoint's when absent.
    #[serde(default)]
    pub revocation_endpoint_auth_signing_alg_values_supported: Option<Vec<String>>,
}

/// A provider's answer at its token endpoint.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenResponse {
    /// The access token.
    pub access_token: String,
    /// The ID token.
    pub id_token: Option<String>,
    /// The refresh token.
    pub refresh_token: Option<String>,
    /// Seconds until the access token expires: a number, or a string of one (Azure AD's v1
    /// endpoint sends `"3599"`), at least 0 and at most [`LONGEST_EXPIRES_IN`].
    #[serde(default, deserialize_with = "expires_in")]
    pub expires_in: Option<i64>,
    /// `Bearer`.
    pub token_type: Option<String>,
}

/// The longest `expires_in` taken as said: ten years.
pub const LONGEST_EXPIRES_IN: i64 = 10 * 366 * 86_400;

/// `expires_in` as a number or a string of digits, held to `0..=LONGEST_EXPIRES_IN`; any other
/// value is refused (the answer is a bad response).
fn expires_in<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    use serde::de::Error as _;
    let seconds = match Option::<serde_json::Value>::deserialize(deserializer)? {
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(serde_json::Value::Number(number)) => number
            .as_i64()
            .or_else(|| number.as_u64().map(|_| i64::MAX)),
        Some(serde_json::Value::String(text)) => text.trim().parse::<i64>().ok(),
        Some(_) => None,
    };
    let seconds = seconds.ok_or_else(|| D::Error::custom("expires_in is not a number"))?;
    Ok(Some(seconds.clamp(0, LONGEST_EXPIRES_IN)))
}

impl TokenResponse {
    /// RFC 6749 §5.1: `token_type` is required, and the only type Tollgate can use is `Bearer`
    /// (compared case-insensitively, RFC 6749 §5.1).
    ///
    /// # Errors
    /// `BadResponse` naming the type (bounded: it is the provider's text).
    pub fn ensure_bearer(&self) -> Result<(), ProviderError> {
        match self.token_type.as_deref() {
            Some(kind) if kind.eq_ignore_ascii_case("bearer") => Ok(()),
            Some(kind) => Err(ProviderError::BadResponse(format!(
                "token_type \"{}\" is not Bearer",
                crate::untrusted::bounded(kind)
            ))),
            None => Err(ProviderError::BadResponse(
                "token response without token_type".to_owned(),
            )),
        }
    }

    /// When its access token expires, received at `now`: `expires_in` from now, or, when the
    /// provider did not say (it is optional, RFC 6749 §5.1), the `exp` of the ID token that
    /// came with it (`fresh_id_claims`, validated); `None` when neither tells. Only a fresh ID
    /// token counts: a refresh answered without one keeps an older ID token, whose `exp`
    /// would make every later request refresh.
    pub fn access_expires_at(
        &self,
        now: crate::clock::UnixTime,
        fresh_id_claims: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Option<crate::clock::UnixTime> {
        match self.expires_in {
            Some(seconds) => Some(now.saturating_add(seconds)),
            None => fresh_id_claims
                .and_then(|claims| crate::token::numeric_claim(claims, "exp").ok().flatten()),
        }
    }
}

/// Why a provider could not be used. What it says is cut to `untrusted::REASON_MOST` bytes
/// where it is shown: it may quote the provider's answer (a serde error quotes a string of the
/// wrong type whole) or a URL from its discovery document, and it goes to log lines.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// Network error or timeout.
    #[error("provider unreachable: {}", crate::untrusted::cut(.0, crate::untrusted::REASON_MOST))]
    Unreachable(String),
    /// The provider answered something Tollgate cannot use.
    #[error("bad response from provider: {}", crate::untrusted::cut(.0, crate::untrusted::REASON_MOST))]
    BadResponse(String),
    /// The token endpoint answered 2xx, but with no token response Tollgate can use (not
    /// JSON, a `token_type` other than `Bearer`): whatever it was given (a code, a refresh
    /// token) is spent there all the same. A provider failing (502), like `BadResponse`; a
    /// login's state is used up by it (presenting the code again would be a replay).
    #[error("unusable token response: {}", crate::untrusted::cut(.0, crate::untrusted::REASON_MOST))]
    UnusableTokens(String),
    /// The provider refused the request (an OAuth error code).
    #[error("provider refused: {}", crate::untrusted::cut(.0, crate::untrusted::REASON_MOST))]
    Refused(String),
    /// The provider refused Tollgate's client authentication at its token or introspection
    /// endpoint (`invalid_client`, RFC 6749 §5.2, or a 401 without an error code): most often a
    /// wrong `client_secret`, a client key it does not know, a client disabled there. Answered
    /// as a provider failing (502), with a reason that names the client's credentials; it ends
    /// no session. Still counted against the client's address as a refusal is
    /// (`introspection_gate`, `login::exchanges`): some providers answer `invalid_client` to a
    /// made-up code, so it is not proof that the request's client did nothing wrong.
    #[error(
        "the provider refused Tollgate's client authentication (check client_id, client_secret \
         or the client key): {}",
        crate::untrusted::cut(.0, crate::untrusted::REASON_MOST)
    )]
    ClientRejected(String),
    /// The in-process token service's store could not answer (whether a token was revoked):
    /// the request is refused as one that needs an unavailable store (503), not as one whose
    /// provider is down. It holds the store's own error, which names the store.
    #[error("{0}")]
    StoreUnavailable(String),
}

/// A call to the in-process token service in flight (it may ask its store, which may be
/// Redis).
pub type LocalFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, ProviderError>> + Send + 'a>>;

/// Tollgate's own token service, seen as a provider with no HTTP round trip (SPEC §7).
pub trait LocalIssuer: Send + Sync + 'static {
    /// Its discovery document.
    fn metadata(&self) -> ProviderMetadata;
    /// Its current public keys.
    fn key_set(&self) -> Arc<KeySet>;
    /// Exchanges an authorization code, as `POST /token` would.
    ///
    /// # Errors
    /// `Refused` when the code, verifier or redirect URI do not match; `Unreachable` when its
    /// store cannot be used.
    fn exchange_code<'a>(
        &'a self,
        client_id: &'a str,
        code: &'a str,
        redirect_uri: &'a str,
        code_verifier: &'a str,
    ) -> LocalFuture<'a, TokenResponse>;

    /// Refreshes tokens, as `POST /token` with `grant_type=refresh_token` would.
    ///
    /// # Errors
    /// `Refused` for an unknown, spent or revoked refresh token; `Unreachable` when its store
    /// cannot be used.
    fn refresh<'a>(
        &'a self,
        client_id: &'a str,
        refresh_token: &'a str,
    ) -> LocalFuture<'a, TokenResponse>;

    /// Whether an access token it issued (its validated claims) was revoked since: by
    /// `/revoke`, a replayed code or a reused refresh token. Asked on every use, cached or not.
    ///
    /// # Errors
    /// `StoreUnavailable` when its store cannot say (the token is then refused).
    fn is_revoked<'a>(
        &'a self,
        claims: &'a serde_json::Map<String, serde_json::Value>,
    ) -> LocalFuture<'a, bool>;

    /// Revokes a refresh token it issued to `client_id` and its grant, as `POST /revoke` would
    /// (RFC 7009: an unknown token is no error).
    ///
    /// # Errors
    /// `Unreachable` when its store cannot be used.
    fn revoke_refresh_token<'a>(
        &'a self,
        client_id: &'a str,
        refresh_token: &'a str,
    ) -> LocalFuture<'a, ()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(token_type: Option<&str>) -> TokenResponse {
        TokenResponse {
            access_token: "at".to_owned(),
            id_token: None,
            refresh_token: None,
            expires_in: None,
            token_type: token_type.map(str::to_owned),
        }
    }

    #[test]
    fn what_a_provider_says_is_cut_where_it_is_shown() {
        let long = "x".repeat(100_000);
        for error in [
            ProviderError::Unreachable(long.clone()),
            ProviderError::BadResponse(long.clone()),
            ProviderError::UnusableTokens(long.clone()),
            ProviderError::Refused(long.clone()),
            ProviderError::ClientRejected(long.clone()),
        ] {
            let shown = error.to_string();
            assert!(
                shown.len() <= crate::untrusted::REASON_MOST + 120,
                "{}",
                shown.len()
            );
        }
    }

    #[test]
    fn only_bearer_token_responses_are_used() {
        for accepted in ["Bearer", "bearer", "BEARER"] {
            assert!(
                response(Some(accepted)).ensure_bearer().is_ok(),
                "{accepted}"
            );
        }
        for refused in [Some("mac"), Some("DPoP"), Some(""), Some("Bearer "), None] {
            assert!(
                matches!(
                    response(refused).ensure_bearer(),
                    Err(ProviderError::BadResponse(_))
                ),
                "{refused:?}"
            );
        }
        let Err(error) = response(Some(&"x\n".repeat(10_000))).ensure_bearer() else {
            panic!("a long token_type is refused");
        };
        assert!(error.to_string().len() < 200, "bounded: {error}");
    }

    /// `expires_in` as a string (Azure AD's v1 endpoint) is read; a negative or huge one is
    /// held in range, so no later arithmetic on it can overflow or make it never due.
    #[test]
    fn expires_in_is_a_number_or_a_string_of_one_held_in_range() {
        let read = |expires_in: &str| {
            serde_json::from_str::<TokenResponse>(&format!(
                r#"{{"access_token":"at","token_type":"Bearer"{expires_in}}}"#
            ))
            .map(|response| response.expires_in)
            .map_err(|_| ())
        };
        assert_eq!(read(r#","expires_in":3599"#), Ok(Some(3599)));
        assert_eq!(read(r#","expires_in":"3599""#), Ok(Some(3599)));
        assert_eq!(read(""), Ok(None));
        assert_eq!(read(r#","expires_in":null"#), Ok(None));
        assert_eq!(read(r#","expires_in":-9223372036854775808"#), Ok(Some(0)));
        assert_eq!(
            read(r#","expires_in":18446744073709551615"#),
            Ok(Some(LONGEST_EXPIRES_IN))
        );
        assert_eq!(read(r#","expires_in":"soon""#), Err(()));
        assert_eq!(read(r#","expires_in":[1]"#), Err(()));
    }
}
