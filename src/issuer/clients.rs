//! Registered clients and how they authenticate at `/token` (RFC 6749 §2.3): HTTP Basic or
//! form fields, secrets checked against argon2 hashes, successful checks cached briefly.

use axum::http::HeaderMap;
use base64::Engine as _;

use super::{IssuerError, TokenService};
use crate::config::ClientConfig;

/// How long a verified client secret is remembered (argon2 costs ~20 ms a check).
const VERIFIED_SECRET_TTL: i64 = 300;

/// Credentials a request presented.
pub(super) struct PresentedClient {
    pub client_id: String,
    pub secret: Option<String>,
    pub used_basic: bool,
}

/// Reads client credentials from the `Authorization: Basic` header or the form; both at once is
/// an error (RFC 6749 §2.3).
pub(super) fn presented_client(
    headers: &HeaderMap,
    form_id: Option<&str>,
    form_secret: Option<&str>,
) -> Result<PresentedClient, IssuerError> {
    if let Some(value) = headers.get(axum::http::header::AUTHORIZATION) {
        let text = value
            .to_str()
            .map_err(|_| IssuerError::InvalidClient { used_basic: true })?;
        let (scheme, encoded) = text
            .trim()
            .split_once(' ')
            .ok_or(IssuerError::InvalidClient { used_basic: true })?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(IssuerError::InvalidClient { used_basic: true });
        }
        if form_secret.is_some() {
            return Err(IssuerError::InvalidRequest(
                "client authenticated twice".to_owned(),
            ));
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| IssuerError::InvalidClient { used_basic: true })?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| IssuerError::InvalidClient { used_basic: true })?;
        let (id, secret) = decoded
            .split_once(':')
            .ok_or(IssuerError::InvalidClient { used_basic: true })?;
        let decode = |text: &str| {
            url::form_urlencoded::parse(format!("x={text}").as_bytes())
                .next()
                .map(|(_, value)| value.into_owned())
        };
        let id = decode(id).ok_or(IssuerError::InvalidClient { used_basic: true })?;
        let secret = decode(secret).ok_or(IssuerError::InvalidClient { used_basic: true })?;
        if form_id.is_some_and(|form_id| form_id != id) {
            return Err(IssuerError::InvalidClient { used_basic: true });
        }
        return Ok(PresentedClient {
            client_id: id,
            secret: Some(secret),
            used_basic: true,
        });
    }
    let client_id = form_id.ok_or(IssuerError::InvalidClient { used_basic: false })?;
    Ok(PresentedClient {
        client_id: client_id.to_owned(),
        secret: form_secret.map(str::to_owned),
        used_basic: false,
    })
}

impl TokenService {
    pub(super) fn client(&self, client_id: &str) -> Option<&ClientConfig> {
        self.config
            .clients
            .iter()
            .find(|client| client.client_id == client_id)
    }

    /// The client behind a request to `/token` or `/revoke`, for rate limits: the peer, or the
    /// address a trusted proxy names in `X-Forwarded-For`.
    pub(super) fn client_address(
        &self,
        peer: std::net::IpAddr,
        headers: &axum::http::HeaderMap,
    ) -> std::net::IpAddr {
        crate::http::forwarded::client_address(peer, headers, &self.trusted_proxies)
    }

    /// Authenticates a client. Public clients (no secret hash) must present no secret;
    /// confidential ones must present the right one. After `state::MAX_FAILURES` failures within
    /// `state::FAILURE_WINDOW` seconds, for a client id or from an address, attempts are refused
    /// without checking (429), so secrets cannot be guessed and argon2 cannot be abused.
    pub(super) async fn authenticate_client(
        &self,
        presented: PresentedClient,
        peer: Option<std::net::IpAddr>,
    ) -> Result<&ClientConfig, IssuerError> {
        let now = self.now();
        // Only configured client ids are counted: an unknown one protects nothing, and keying
        // on it would let an attacker fill the map with megabyte-long names.
        let keys: Vec<String> = [
            self.client(&presented.client_id)
                .map(|client| format!("client:{}", client.client_id)),
            peer.map(|address| format!("address:{address}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        if self.state.limited(&keys, now).await? {
            tracing::warn!(client_id = %crate::untrusted::bounded(&presented.client_id), "client authentication rate-limited");
            return Err(IssuerError::TooManyAttempts);
        }
        let result = self.check_client(presented, now).await;
        if result.is_err() {
            self.state.count_failure(&keys, now).await?;
        }
        result
    }

    async fn check_client(
        &self,
        presented: PresentedClient,
        now: crate::clock::UnixTime,
    ) -> Result<&ClientConfig, IssuerError> {
        let invalid = IssuerError::InvalidClient {
            used_basic: presented.used_basic,
        };
        let Some(client) = self.client(&presented.client_id) else {
            tracing::info!(client_id = %crate::untrusted::bounded(&presented.client_id), "unknown client");
            return Err(invalid);
        };
        match (&client.client_secret_hash, presented.secret) {
            (None, None) => Ok(client),
            (None, Some(_)) | (Some(_), None) => Err(invalid),
            (Some(hash), Some(secret)) => {
                let cache_key = secret_cache_key(&client.client_id, &secret);
                if self
                    .verified_secrets
                    .get(&cache_key)
                    .is_some_and(|until| now < until)
                {
                    return Ok(client);
                }
                let hash = hash.expose().clone();
                let verified = tokio::task::spawn_blocking(move || verify_password(&hash, &secret))
                    .await
                    .unwrap_or(false);
                if verified {
                    self.verified_secrets
                        .insert(cache_key, now + VERIFIED_SECRET_TTL);
                    Ok(client)
                } else {
                    tracing::info!(client_id = %client.client_id, "client secret mismatch");
                    Err(invalid)
                }
            }
        }
    }
}

/// SHA-256 of a client id and a presented secret: the secret itself is never kept.
fn secret_cache_key(client_id: &str, secret: &str) -> [u8; 32] {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    context.update(client_id.as_bytes());
    context.update(&[0]);
    context.update(secret.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(context.finish().as_ref());
    key
}

/// Checks a password or secret against a PHC-format argon2 hash.
pub(crate) fn verify_password(hash: &str, password: &str) -> bool {
    use argon2::PasswordVerifier as _;
    match argon2::PasswordHash::new(hash) {
        Ok(parsed) => argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Hashes a password or secret into a PHC-format argon2id string.
///
/// # Errors
/// When hashing fails.
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::PasswordHasher as _;
    let salt_bytes = crate::random::bytes::<16>();
    let salt = argon2::password_hash::SaltString::encode_b64(&salt_bytes)
        .map_err(|error| error.to_string())?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| error.to_string())
}
