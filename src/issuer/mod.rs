//! Role 3, the token service (SPEC §7): a small OAuth 2.0 / OpenID Connect issuer with its own
//! keys. This part serves discovery, JWKS, a local login form at `/authorize`, and `/token` for
//! `authorization_code` + PKCE and `client_credentials`.

mod authorize;
mod clients;
pub mod errors;
mod federation;
mod grants;
mod minting;
pub mod state;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::MethodRouter;
use axum::routing::{get, post};
use url::Url;

use crate::clock::{Clock, UnixTime};
use crate::config::{ClientConfig, ServerConfig, TokenServiceConfig};
use crate::jose::{KeySet, SigningKey, SigningKeyError};
use crate::metrics::Metrics;
use crate::oidc::{LocalFuture, LocalIssuer, ProviderError, ProviderMetadata, TokenResponse};
use crate::token::cache::TokenCache;
use crate::token::{self, Claims, Expectations, TokenError};

pub use clients::hash_password;
pub use errors::IssuerError;
pub use federation::{FederatedLogin, FederatedLoginFuture};
pub use grants::grant_life;

pub use state::{CODE_LIFETIME, Principal};
use state::{IssuerState, PendingCode};

/// Why the token service did not accept one of its own access tokens.
#[derive(Debug, thiserror::Error)]
pub enum OwnTokenError {
    /// The token is not valid (or was revoked).
    #[error(transparent)]
    Invalid(TokenError),
    /// The store could not say whether it was revoked.
    #[error("revocation unknown: {0}")]
    StoreUnavailable(state::StateError),
}

/// The token service.
pub struct TokenService {
    config: TokenServiceConfig,
    signing_key: Arc<SigningKey>,
    /// The current key's and the retired keys' public halves, as published.
    published: Vec<jsonwebtoken::jwk::Jwk>,
    key_set: Arc<KeySet>,
    /// Codes, grants, refresh tokens, revocations and failure counters.
    state: Arc<dyn IssuerState>,
    /// Peers whose `X-Forwarded-For` names the client (rate limits key on the client).
    trusted_proxies: Vec<ipnet::IpNet>,
    /// The hosts routes name (canonical) other than the issuer's: an application's pages are
    /// served there, and a login form posted there is the application's, not this service's.
    route_hosts: Vec<String>,
    /// The live providers' issuers and client ids, by name: a federated code or grant is
    /// answered only while its provider is still where the user signed in.
    providers: std::collections::BTreeMap<String, state::ProviderAt>,
    /// `server.leeway` in seconds: the clock skew allowed when its own tokens come back (from
    /// another replica, whose clock may be a little ahead).
    leeway: i64,
    /// Client secrets verified lately (`clients::secret_cache_key`), kept across reloads: a
    /// reload must not hand the client's id back to whoever fails for it (10 a minute limit
    /// it, and a remembered secret passes before the limit).
    verified_secrets: Arc<quick_cache::sync::Cache<[u8; 32], UnixTime>>,
    /// Permits for argon2 checks (`check_password`).
    password_checks: clients::PasswordChecks,
    own_tokens: TokenCache,
    /// What a password for an unknown username is checked against: a hash made like the
    /// costliest user's (`clients::hash_like`), made once, when first needed.
    unknown_user_hash: tokio::sync::OnceCell<String>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    /// How many tokens it signed: tests show what costs a signature.
    #[cfg(test)]
    signatures: std::sync::atomic::AtomicUsize,
}

/// Whether `client` may be granted `scope` for a user: the OpenID Connect ones always, others
/// when its `scopes` list them.
fn may_ask_for(client: &ClientConfig, scope: &str) -> bool {
    ["openid", "profile", "email", "groups"].contains(&scope)
        || client.scopes.iter().any(|allowed| allowed == scope)
}

impl TokenService {
    /// Builds the service: loads the signing key from `signing_key_file` (generating it there
    /// when the file does not exist) or makes an in-memory key when no file is configured.
    /// `server` gives the trusted proxies and the leeway.
    ///
    /// # Errors
    /// When the key cannot be loaded or made.
    pub fn new(
        config: TokenServiceConfig,
        state: Arc<dyn IssuerState>,
        server: &ServerConfig,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, SigningKeyError> {
        Self::rebuilt(config, state, server, clock, metrics, None)
    }

    /// This service, told the hosts `[[route]]`s name: a login form is never taken on one of
    /// them (other than the issuer's own host), since a page there is the application's, and
    /// the browser calls its post to the same host `same-origin`.
    #[must_use]
    pub fn with_route_hosts<'a>(mut self, hosts: impl IntoIterator<Item = &'a str>) -> Self {
        let issuer_host = self
            .config
            .issuer
            .host_str()
            .and_then(crate::http::canonical::canonical_host)
            .map(std::borrow::Cow::into_owned);
        self.route_hosts = hosts
            .into_iter()
            .filter_map(crate::http::canonical::canonical_host)
            .map(std::borrow::Cow::into_owned)
            .filter(|host| issuer_host.as_deref() != Some(host.as_str()))
            .collect();
        self.route_hosts.sort_unstable();
        self.route_hosts.dedup();
        self
    }

    /// This service, told the providers of the config (`[[provider]]`): a federated sign-in
    /// is answered, and its grant refreshed, only while its provider has the issuer and client
    /// id it had at the sign-in.
    #[must_use]
    pub fn with_providers<'a>(
        mut self,
        providers: impl IntoIterator<Item = &'a crate::config::ProviderConfig>,
    ) -> Self {
        self.providers = providers
            .into_iter()
            .map(|provider| {
                (
                    provider.name.clone(),
                    state::ProviderAt {
                        issuer: provider.issuer.clone(),
                        client_id: provider.client_id.clone(),
                    },
                )
            })
            .collect();
        self
    }

    /// Whether `headers` address a route's host (by `Host` or any `X-Forwarded-Host`, believed
    /// or not: either may be what the browser sent to).
    fn addressed_to_a_route_host(&self, headers: &axum::http::HeaderMap) -> bool {
        if self.route_hosts.is_empty() {
            return false;
        }
        headers
            .get_all(axum::http::header::HOST)
            .iter()
            .chain(headers.get_all("x-forwarded-host").iter())
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|value| crate::http::canonical::canonical_host(value.trim()))
            .any(|host| self.route_hosts.iter().any(|route| *route == host))
    }

    /// `new` for a reloaded config: when neither `config` nor `previous`'s names a
    /// `signing_key_file`, the key `previous` made in memory keeps signing, so tokens it issued
    /// stay valid; a configured key file is read again, and the file `previous` signs with must
    /// still be there (a mount briefly empty): a new key made in its place would end every
    /// token issued, and would take over at the next start even if the reload is refused.
    ///
    /// # Errors
    /// When the key cannot be loaded or made.
    pub fn rebuilt(
        config: TokenServiceConfig,
        state: Arc<dyn IssuerState>,
        server: &ServerConfig,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        previous: Option<&Self>,
    ) -> Result<Self, SigningKeyError> {
        let generated = previous
            .filter(|previous| previous.config.signing_key_file.is_none())
            .map(|previous| previous.signing_key.clone());
        let signing_with = |path: &std::path::PathBuf| {
            previous.is_some_and(|previous| previous.config.signing_key_file.as_ref() == Some(path))
        };
        let signing_key = match (&config.signing_key_file, generated) {
            (Some(path), _) if signing_with(path) => Arc::new(SigningKey::load(path)?),
            (Some(path), _) => Arc::new(SigningKey::load_or_generate(path)?),
            (None, Some(generated)) => generated,
            (None, None) => Arc::new(SigningKey::generate_es256()?.0),
        };
        let mut published = vec![signing_key.public_jwk().clone()];
        for path in &config.retired_key_files {
            published.push(SigningKey::load(path)?.public_jwk().clone());
        }
        let key_set = Arc::new(KeySet::from_jwks(&published));
        Ok(Self {
            config,
            trusted_proxies: server.trusted_proxies.clone(),
            route_hosts: Vec::new(),
            providers: std::collections::BTreeMap::new(),
            leeway: i64::try_from(server.leeway.as_secs()).unwrap_or(i64::MAX),
            signing_key,
            key_set,
            published,
            state,
            verified_secrets: previous.map_or_else(
                || Arc::new(quick_cache::sync::Cache::new(1024)),
                |previous| previous.verified_secrets.clone(),
            ),
            password_checks: previous
                .map(|previous| previous.password_checks.clone())
                .unwrap_or_default(),
            own_tokens: TokenCache::new(10_000),
            unknown_user_hash: tokio::sync::OnceCell::new(),
            clock,
            metrics,
            #[cfg(test)]
            signatures: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Whether the store of codes, grants and revocations can be used (for `/readyz`).
    ///
    /// # Errors
    /// When it cannot.
    pub async fn check_store(&self) -> Result<(), state::StateError> {
        self.state.check().await
    }

    /// The issuer URL as it appears in `iss`.
    pub fn issuer(&self) -> &str {
        self.config.issuer.as_str().trim_end_matches('/')
    }

    /// The path the service's endpoints live under (the issuer URL's path, without a trailing
    /// slash; empty at the root).
    pub fn mount_path(&self) -> String {
        self.config.issuer.path().trim_end_matches('/').to_owned()
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.issuer())
    }

    /// The service's endpoints, by path relative to `mount_path`. `federation` starts the
    /// logins of clients with a `login_provider` (without it, their `/authorize` is a 500).
    pub fn routes<S: Clone + Send + Sync + 'static>(
        self: &Arc<Self>,
        federation: Option<Arc<dyn FederatedLogin>>,
    ) -> Vec<(&'static str, MethodRouter<S>)> {
        vec![
            (
                "/.well-known/openid-configuration",
                get(discovery).with_state(self.clone()),
            ),
            ("/jwks", get(jwks).with_state(self.clone())),
            (
                "/authorize",
                get(authorize::show_form)
                    .post(authorize::submit_form)
                    .with_state(authorize::AuthorizeState {
                        service: self.clone(),
                        federation,
                    })
                    .layer(DefaultBodyLimit::max(FORM_MOST)),
            ),
            (
                "/token",
                post(grants::token)
                    .with_state(self.clone())
                    .layer(DefaultBodyLimit::max(FORM_MOST)),
            ),
            (
                "/revoke",
                post(grants::revoke)
                    .with_state(self.clone())
                    .layer(DefaultBodyLimit::max(FORM_MOST)),
            ),
        ]
    }

    /// Validates an access token this service issued, for any of its clients' audiences.
    ///
    /// # Errors
    /// `Invalid` with any `TokenError` (`Inactive` when it was revoked); `StoreUnavailable`
    /// when the store cannot say whether it was revoked: the token is refused, but not called
    /// invalid (SPEC §9: 503, as every other request that needs the store).
    pub async fn validate_own_access_token(&self, token: &str) -> Result<Claims, OwnTokenError> {
        let claims = self
            .validate_signed_access_token(token)
            .map_err(OwnTokenError::Invalid)?;
        // Revocation (RFC 7009, a replayed code, a reused refresh token) is checked on every use.
        match self.revoked(&claims).await {
            Ok(false) => Ok(claims),
            Ok(true) => Err(OwnTokenError::Invalid(TokenError::Inactive)),
            Err(error) => {
                tracing::warn!(%error, "revocation unknown; token refused");
                Err(OwnTokenError::StoreUnavailable(error))
            }
        }
    }

    /// Whether an access token of this service (its claims) was revoked: its own `jti`, or
    /// its grant (`sid`).
    async fn revoked(
        &self,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<bool, state::StateError> {
        let text = |name: &str| claims.get(name).and_then(serde_json::Value::as_str);
        self.state.is_revoked(text("jti"), text("sid")).await
    }

    pub(super) fn validate_signed_access_token(&self, token: &str) -> Result<Claims, TokenError> {
        let now = self.clock.now();
        if let Some(claims) = self.own_tokens.get(token, now) {
            return Ok(claims);
        }
        let audiences: Vec<String> = self
            .config
            .clients
            .iter()
            .map(|client| client.audience.clone())
            .collect();
        let expected = Expectations {
            issuer: self.issuer(),
            audiences: &audiences,
            leeway: self.leeway,
            now,
        };
        let claims = token::validate_access_token(token, &self.key_set, &expected, None)?;
        if let Ok(Some(exp)) = token::numeric_claim(&claims, "exp") {
            self.own_tokens.insert(token, claims.clone(), exp);
        }
        Ok(claims)
    }

    fn metadata_document(&self) -> serde_json::Value {
        serde_json::json!({
            "issuer": self.issuer(),
            "authorization_endpoint": self.endpoint("/authorize"),
            "token_endpoint": self.endpoint("/token"),
            "jwks_uri": self.endpoint("/jwks"),
            "userinfo_endpoint": self.endpoint("/userinfo"),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
            "revocation_endpoint": self.endpoint("/revoke"),
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [format!("{:?}", self.signing_key.algorithm())],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": ["openid", "profile", "email", "groups"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "jti", "auth_time", "sid", "name", "email", "preferred_username", "groups", "nonce", "at_hash"],
            "authorization_response_iss_parameter_supported": true,
            // Absent, OpenID Connect Discovery reads `request_uri_parameter_supported` as true.
            "request_parameter_supported": false,
            "request_uri_parameter_supported": false,
            "claims_parameter_supported": false,
        })
    }

    fn now(&self) -> UnixTime {
        self.clock.now()
    }
}

async fn discovery(
    axum::extract::State(service): axum::extract::State<Arc<TokenService>>,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    (
        [(axum::http::header::CACHE_CONTROL, "public, max-age=300")],
        axum::Json(service.metadata_document()),
    )
        .into_response()
}

async fn jwks(
    axum::extract::State(service): axum::extract::State<Arc<TokenService>>,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let document = serde_json::json!({ "keys": service.published });
    (
        [(axum::http::header::CACHE_CONTROL, "public, max-age=300")],
        axum::Json(document),
    )
        .into_response()
}

/// How an `IssuerError` reaches the in-process provider: a store that could not be reached is
/// the store being unavailable (503; never `invalid_grant`, which would end a session, nor a
/// provider that is unreachable, when the provider is this process).
fn provider_error(error: &IssuerError) -> ProviderError {
    match error {
        IssuerError::Unavailable(reason) => ProviderError::StoreUnavailable(reason.clone()),
        IssuerError::InvalidClient { .. } => ProviderError::ClientRejected(error.code().to_owned()),
        other => ProviderError::Refused(other.code().to_owned()),
    }
}

impl LocalIssuer for TokenService {
    fn is_revoked<'a>(
        &'a self,
        claims: &'a serde_json::Map<String, serde_json::Value>,
    ) -> LocalFuture<'a, bool> {
        Box::pin(async move {
            self.revoked(claims)
                .await
                .map_err(|error| ProviderError::StoreUnavailable(error.to_string()))
        })
    }

    fn refresh<'a>(
        &'a self,
        client_id: &'a str,
        refresh_token: &'a str,
    ) -> LocalFuture<'a, TokenResponse> {
        Box::pin(async move {
            let client = self
                .client(client_id)
                .ok_or_else(|| ProviderError::ClientRejected("no such client".to_owned()))?;
            if !client
                .grants
                .contains(&crate::config::GrantType::RefreshToken)
            {
                return Err(ProviderError::Refused("unauthorized_client".to_owned()));
            }
            self.redeem_refresh_token(client, refresh_token, None)
                .await
                .map(minting::IssuedTokens::into_token_response)
                .map_err(|error| provider_error(&error))
        })
    }

    fn metadata(&self) -> ProviderMetadata {
        ProviderMetadata {
            issuer: self.issuer().to_owned(),
            authorization_endpoint: self.endpoint("/authorize"),
            token_endpoint: self.endpoint("/token"),
            jwks_uri: Some(self.endpoint("/jwks")),
            userinfo_endpoint: Some(self.endpoint("/userinfo")),
            end_session_endpoint: None,
            introspection_endpoint: None,
            revocation_endpoint: Some(self.endpoint("/revoke")),
            authorization_response_iss_parameter_supported: true,
            token_endpoint_auth_signing_alg_values_supported: None,
            introspection_endpoint_auth_signing_alg_values_supported: None,
            revocation_endpoint_auth_signing_alg_values_supported: None,
        }
    }

    fn revoke_refresh_token<'a>(
        &'a self,
        client_id: &'a str,
        refresh_token: &'a str,
    ) -> LocalFuture<'a, ()> {
        Box::pin(async move {
            self.state
                .revoke_refresh_token(refresh_token, client_id)
                .await
                .map(drop)
                .map_err(|error| ProviderError::Unreachable(error.to_string()))
        })
    }

    fn key_set(&self) -> Arc<KeySet> {
        self.key_set.clone()
    }

    fn exchange_code<'a>(
        &'a self,
        client_id: &'a str,
        code: &'a str,
        redirect_uri: &'a str,
        code_verifier: &'a str,
    ) -> LocalFuture<'a, TokenResponse> {
        Box::pin(async move {
            let client = self
                .client(client_id)
                .ok_or_else(|| ProviderError::ClientRejected("no such client".to_owned()))?;
            self.redeem_code(client, code, Some(redirect_uri), Some(code_verifier))
                .await
                .map(minting::IssuedTokens::into_token_response)
                .map_err(|error| provider_error(&error))
        })
    }
}

/// Whether `redirect_uri` is registered for the client, by exact string comparison.
fn is_registered_redirect(registered: &[String], redirect_uri: &str) -> bool {
    registered.iter().any(|candidate| candidate == redirect_uri)
}

/// The longest form the token service reads (`/token`, `/revoke`, the login form): a client
/// assertion or a token to exchange is a few kilobytes; a longer body is refused (413) before
/// it is read whole, not parsed into a map of its parameters.
const FORM_MOST: usize = 64 * 1024;

/// The most parameters a request of the token service may send: OAuth 2.0 and OpenID Connect
/// name fewer than thirty for any one endpoint.
const PARAMETERS_MOST: usize = 64;

/// The parameters of a form-encoded request (a query or a body), by name. RFC 6749 §3.1 and
/// §3.2: a parameter is sent once; a repeated one is an error (say which), never a choice
/// between two values that the client and the service could read apart. More than
/// [`PARAMETERS_MOST`] are an error too.
fn single_valued(raw: &[u8]) -> Result<std::collections::HashMap<String, String>, String> {
    let mut parameters = std::collections::HashMap::new();
    for (name, value) in url::form_urlencoded::parse(raw) {
        if parameters.len() == PARAMETERS_MOST {
            return Err(format!("more than {PARAMETERS_MOST} parameters"));
        }
        if parameters
            .insert(name.to_string(), value.into_owned())
            .is_some()
        {
            return Err(format!(
                "parameter `{}` repeated",
                crate::untrusted::bounded(&name)
            ));
        }
    }
    Ok(parameters)
}

/// `base` with `params` appended to its query.
fn with_query(base: &str, params: &[(&str, &str)]) -> Option<String> {
    let mut url = Url::parse(base).ok()?;
    {
        let mut query = url.query_pairs_mut();
        for (name, value) in params {
            query.append_pair(name, value);
        }
    }
    Some(url.to_string())
}

#[cfg(test)]
pub(crate) mod tests;
