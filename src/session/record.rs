//! The records sessions are made of: a logged-in browser's `Session` (kept by every backend as
//! a `StoredSession`, with its last use), a login in flight (`LoginState`) and the
//! token-service client request a federated login carries (`FederatedRequest`). Every store
//! keeps these, sealed.

use serde::{Deserialize, Serialize};

use crate::clock::UnixTime;

/// A session with the time it was last used: what every session backend keeps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredSession {
    /// The session.
    pub session: std::sync::Arc<Session>,
    /// Last request that used it.
    pub last_seen: UnixTime,
}

/// A logged-in browser's session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    /// The provider the user logged in at.
    pub provider: String,
    /// Claims of the ID token (merged with userinfo).
    pub claims: crate::token::Claims,
    /// The raw ID token (for `id_token_hint` at logout).
    pub id_token: String,
    /// The access token, when one was issued.
    pub access_token: Option<String>,
    /// The refresh token, when one was issued (rotated ones replace it).
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// When the access token expires, when the provider said.
    #[serde(default)]
    pub access_expires_at: Option<UnixTime>,
    /// When the session was created.
    pub created_at: UnixTime,
    /// When it ends, whatever happens.
    pub expires_at: UnixTime,
}

impl Session {
    /// Whether this session holds the tokens `other` holds (both the refresh and the access
    /// token): a refresh's result already stored, even from a provider that sends the same
    /// refresh token back.
    pub fn holds_the_tokens_of(&self, other: &Session) -> bool {
        self.refresh_token == other.refresh_token && self.access_token == other.access_token
    }

    /// Whether this session was made at the provider named `provider` as it is now: its ID
    /// token's issuer is `issuer` and its audience holds `client_id`. A reload that points a
    /// provider's name at another issuer or client (a move to another identity provider or
    /// tenant, one dropped as compromised) leaves the sessions made before it to no provider:
    /// they would else pass that provider's routes with the other namespace's `sub` and groups,
    /// post their refresh tokens to the new provider, and send it their ID tokens at sign-out.
    pub fn made_at(&self, provider: &str, issuer: &str, client_id: &str) -> bool {
        self.provider == provider && crate::token::issued_by_to(&self.claims, issuer, client_id)
    }
}

/// One login in flight: what `/callback` needs to finish it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginState {
    /// The `state` parameter.
    pub state: String,
    /// The `nonce` sent.
    pub nonce: String,
    /// The PKCE code verifier.
    pub code_verifier: String,
    /// The validated redirect target.
    pub redirect_to: String,
    /// The provider.
    pub provider: String,
    /// The redirect URI sent to the provider.
    pub redirect_uri: String,
    /// When the login started.
    pub created_at: UnixTime,
    /// Set when the login is the token service's federated login: the client's authorization
    /// request to answer once the user is back (SPEC §4: the state says which flow it is).
    #[serde(default)]
    pub federation: Option<FederatedRequest>,
}

/// A checked authorization request of a token-service client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FederatedRequest {
    /// The client.
    pub client_id: String,
    /// Its registered redirect URI.
    pub redirect_uri: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// The client's `state`.
    pub state: Option<String>,
    /// The client's `nonce`.
    pub nonce: Option<String>,
    /// The client's PKCE challenge (S256).
    pub code_challenge: Option<String>,
    /// The client asked for `prompt=login`: sent on to the upstream provider.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prompt_login: bool,
    /// The client's `max_age` in seconds: sent on, and an upstream sign-in older than it is
    /// refused (`login_required`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u64>,
    /// With `prompt_login`: when the client asked. An upstream `auth_time` before it (less the
    /// leeway) is an older sign-in, refused (`login_required`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asked_at: Option<crate::clock::UnixTime>,
}
