//! Talking to upstream OpenID Providers: discovery, JWKS, the token endpoint. A provider whose
//! issuer is Tollgate's own token service is served in-process through `LocalIssuer`. Makes no
//! authorisation decisions.

pub mod client;
pub mod jwks;
pub mod provider;

use std::sync::Arc;

use serde::Deserialize;

use crate::jose::KeySet;

pub use provider::Provider;

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
    /// Seconds until the access token expires.
    pub expires_in: Option<i64>,
    /// `Bearer`.
    pub token_type: Option<String>,
}

/// Why a provider could not be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// Network error or timeout.
    #[error("provider unreachable: {0}")]
    Unreachable(String),
    /// The provider answered something Tollgate cannot use.
    #[error("bad response from provider: {0}")]
    BadResponse(String),
    /// The provider refused the request (an OAuth error code).
    #[error("provider refused: {0}")]
    Refused(String),
}

/// Tollgate's own token service, seen as a provider with no HTTP round trip (SPEC §7).
pub trait LocalIssuer: Send + Sync + 'static {
    /// Its discovery document.
    fn metadata(&self) -> ProviderMetadata;
    /// Its current public keys.
    fn key_set(&self) -> Arc<KeySet>;
    /// Exchanges an authorization code, as `POST /token` would.
    ///
    /// # Errors
    /// `Refused` when the code, verifier or redirect URI do not match.
    fn exchange_code(
        &self,
        client_id: &str,
        code: &str,
        redirect_uri: &str,
        code_verifier: &str,
    ) -> Result<TokenResponse, ProviderError>;

    /// Refreshes tokens, as `POST /token` with `grant_type=refresh_token` would.
    ///
    /// # Errors
    /// `Refused` for an unknown, spent or revoked refresh token.
    fn refresh(&self, client_id: &str, refresh_token: &str)
    -> Result<TokenResponse, ProviderError>;
}
