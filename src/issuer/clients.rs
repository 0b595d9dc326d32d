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
        // RFC 6749 §2.3.1: each is form-urlencoded as a whole (a raw `&` or `=` is part of it).
        let decode = |text: &str| {
            percent_encoding::percent_decode_str(&text.replace('+', " "))
                .decode_utf8()
                .ok()
                .map(std::borrow::Cow::into_owned)
        };
        let id = decode(id).ok_or(IssuerError::InvalidClient { used_basic: true })?;
        let secret = decode(secret).ok_or(IssuerError::InvalidClient { used_basic: true })?;
        if form_id.is_some_and(|form_id| form_id != id) {
            return Err(IssuerError::InvalidClient { used_basic: true });
        }
        return Ok(PresentedClient {
            client_id: id,
            // `id:` is a public client's Basic header: an empty secret is no secret (never one
            // an empty-input hash would let in).
            secret: Some(secret).filter(|secret| !secret.is_empty()),
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
    /// without checking (429), so secrets cannot be guessed and argon2 cannot be abused; an
    /// argon2 check is made as `check_password` says, so that holds for concurrent attempts too.
    pub(super) async fn authenticate_client(
        &self,
        presented: PresentedClient,
        peer: Option<std::net::IpAddr>,
    ) -> Result<&ClientConfig, IssuerError> {
        let now = self.now();
        let configured = self.client(&presented.client_id);
        // A public client presenting no secret has nothing to guess and runs no argon2: it is
        // served before any limit, or whoever fails from its users' address (a shared NAT's)
        // would refuse their every code exchange and refresh.
        if let Some(client) = configured
            && client.client_secret_hash.is_none()
            && presented.secret.is_none()
        {
            return Ok(client);
        }
        // A secret verified a moment ago passes before any limit, and each use keeps it
        // remembered: whoever fails for a client id cannot lock out a client that keeps using
        // its secret.
        if let Some(client) = configured
            && let Some(hash) = &client.client_secret_hash
            && let Some(secret) = &presented.secret
        {
            let cache_key = secret_cache_key(&client.client_id, hash.expose(), secret);
            if self.is_remembered(&cache_key) {
                self.verified_secrets
                    .insert(cache_key, self.now() + VERIFIED_SECRET_TTL);
                return Ok(client);
            }
        }
        // Only configured confidential client ids are counted: an unknown one protects nothing
        // (and keying on it would let an attacker fill the map with megabyte-long names), and a
        // public one has no secret to guess, so counting it would only let anyone refuse its
        // every request.
        let keys: Vec<String> = [
            configured
                .filter(|client| client.client_secret_hash.is_some())
                .map(|client| format!("client:{}", client.client_id)),
            peer.map(crate::http::forwarded::limit_key),
        ]
        .into_iter()
        .flatten()
        .collect();
        let limited = || {
            // As `&str`: quoted in a text line, so a `client_id` of `x result=allow` adds no
            // field to it.
            tracing::warn!(
                client_id = crate::untrusted::bounded(&presented.client_id).as_str(),
                "client authentication rate-limited"
            );
            IssuerError::TooManyAttempts
        };
        if self.state.limited(&keys, now).await? {
            return Err(limited());
        }
        let invalid = IssuerError::InvalidClient {
            used_basic: presented.used_basic,
        };
        let Some(client) = configured else {
            tracing::info!(
                client_id = crate::untrusted::bounded(&presented.client_id).as_str(),
                "unknown client"
            );
            self.state.count_failure(&keys, now).await?;
            return Err(invalid);
        };
        let (hash, secret) = match (&client.client_secret_hash, &presented.secret) {
            (Some(hash), Some(secret)) => (hash, secret),
            (None, _) | (Some(_), None) => {
                self.state.count_failure(&keys, now).await?;
                return Err(invalid);
            }
        };
        let cache_key = secret_cache_key(&client.client_id, hash.expose(), secret);
        let remembered = || self.is_remembered(&cache_key);
        let check = self
            .check_password(&keys, hash.expose().clone(), secret.clone(), remembered)
            .await?;
        match check {
            PasswordCheck::Right => {
                self.verified_secrets
                    .insert(cache_key, self.now() + VERIFIED_SECRET_TTL);
                Ok(client)
            }
            PasswordCheck::Wrong => {
                tracing::info!(client_id = %client.client_id, "client secret mismatch");
                Err(invalid)
            }
            PasswordCheck::Limited => Err(limited()),
            PasswordCheck::Busy => Err(IssuerError::Unavailable(
                "password checks are busy".to_owned(),
            )),
        }
    }

    /// Whether the secret of `cache_key` was verified within `VERIFIED_SECRET_TTL`.
    fn is_remembered(&self, cache_key: &[u8; 32]) -> bool {
        self.verified_secrets
            .get(cache_key)
            .is_some_and(|until| self.now() < until)
    }

    /// Checks `secret` against the argon2 `hash` on the blocking pool, unless `known` says it
    /// was verified meanwhile or `limit_keys` are limited, and counts a wrong one against
    /// `limit_keys`: every check is counted before it runs, and taken back once it proves
    /// right, so a store that cannot count (full, refusing writes, a Redis before 7.0) refuses
    /// the check. Counted after the check, a right secret passed there and a wrong one got a
    /// 503: an oracle without the limit. One of the process's `PasswordChecks` permits is
    /// held from the limit check to the count: concurrent guesses cannot all pass the limit
    /// before the first of them is counted (at most `MAX_FAILURES + permits - 1` checks a
    /// window, per replica), at most `permits` argon2 runs (about 19 MiB and 20 ms of a core
    /// each) are under way at once, and requests that present the same right secret at once
    /// run argon2 only as often as there are permits.
    ///
    /// # Errors
    /// The store failed (the check is then refused).
    pub(super) async fn check_password(
        &self,
        limit_keys: &[String],
        hash: String,
        secret: String,
        known: impl Fn() -> bool,
    ) -> Result<PasswordCheck, super::state::StateError> {
        // At most so many wait: beyond, a flood of checks (new names from new addresses,
        // each under no limit yet) is refused rather than queued without end in front of
        // everyone's sign-in.
        let Some(waiting) = self.password_checks.wait() else {
            tracing::warn!("password checks queued to their limit; refused as busy");
            return Ok(PasswordCheck::Busy);
        };
        // The semaphore is never closed; were it, no check would run (fail closed).
        let Ok(permit) = self.password_checks.permits.clone().acquire_owned().await else {
            return Ok(PasswordCheck::Limited);
        };
        if known() {
            return Ok(PasswordCheck::Right);
        }
        // Asked again now that this check holds a permit: failures counted while it waited.
        if self.state.limited(limit_keys, self.now()).await? {
            return Ok(PasswordCheck::Limited);
        }
        self.state.count_failure(limit_keys, self.now()).await?;
        // The check, its forgiveness and the permit on a task of their own: a client that
        // goes away mid-check (its request dropped) would else free the permit while argon2
        // runs on.
        let (state, clock, keys) = (self.state.clone(), self.clock.clone(), limit_keys.to_vec());
        let check = tokio::spawn(async move {
            let _held = (permit, waiting);
            let right = tokio::task::spawn_blocking(move || verify_password(&hash, &secret))
                .await
                .unwrap_or(false);
            if right {
                state.forgive_failure(&keys, clock.now()).await?;
                return Ok(PasswordCheck::Right);
            }
            Ok(PasswordCheck::Wrong)
        });
        check.await.unwrap_or_else(|error| {
            Err(super::state::StateError(format!(
                "the password check failed: {error}"
            )))
        })
    }
}

/// What `TokenService::check_password` found.
pub(super) enum PasswordCheck {
    /// The secret matches the hash (or was verified meanwhile).
    Right,
    /// It does not; the failure is counted.
    Wrong,
    /// The limit was reached before it was checked; nothing was checked or counted.
    Limited,
    /// Too many checks wait already (a flood): nothing was checked or counted; a moment
    /// later it may be (503).
    Busy,
}

/// The argon2 checks a process runs at once: as many as it has cores, with at most
/// [`PASSWORD_CHECKS_WAITING`] a core waiting or running. Shared by the token service's rebuilds, so a
/// reload does not open a second set.
#[derive(Clone)]
pub(super) struct PasswordChecks {
    permits: std::sync::Arc<tokio::sync::Semaphore>,
    waiting: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// The most waiting or running: [`PASSWORD_CHECKS_WAITING`] per permit.
    waiting_most: usize,
}

/// The most password checks waiting for a core or running, per core: a check takes some
/// 20 ms, so about a second's worth.
const PASSWORD_CHECKS_WAITING: usize = 50;

/// A place among the checks waiting, given back when dropped.
pub(super) struct Waiting(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl PasswordChecks {
    /// Whether no check runs.
    #[cfg(test)]
    pub(super) fn idle(&self) -> bool {
        self.waiting.load(std::sync::atomic::Ordering::SeqCst) == 0
    }

    /// A place to wait for a check, unless the queue is full.
    pub(super) fn wait(&self) -> Option<Waiting> {
        let before = self
            .waiting
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let waiting = Waiting(self.waiting.clone());
        (before < self.waiting_most).then_some(waiting)
    }
}

impl Default for PasswordChecks {
    fn default() -> Self {
        let permits = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Self {
            permits: std::sync::Arc::new(tokio::sync::Semaphore::new(permits)),
            waiting: std::sync::Arc::default(),
            waiting_most: permits * PASSWORD_CHECKS_WAITING,
        }
    }
}

/// SHA-256 of a client id, its configured hash and a presented secret: the secret itself is
/// never kept, and a secret verified against a hash a reload replaced is not remembered for
/// the new one (the remembered secrets outlive reloads).
fn secret_cache_key(client_id: &str, hash: &str, secret: &str) -> [u8; 32] {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    context.update(client_id.as_bytes());
    context.update(&[0]);
    context.update(hash.as_bytes());
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
    hash_with(&argon2::Argon2::default(), password)
}

/// `password` hashed by `argon2` with a fresh random salt, as a PHC string.
fn hash_with(argon2: &argon2::Argon2<'_>, password: &str) -> Result<String, String> {
    use argon2::PasswordHasher as _;
    let salt_bytes = crate::random::bytes::<16>();
    let salt = argon2::password_hash::SaltString::encode_b64(&salt_bytes)
        .map_err(|error| error.to_string())?;
    argon2
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| error.to_string())
}

/// Of argon2 hashes (PHC strings), the one whose check costs most (memory times passes); those
/// that do not parse are left out.
pub fn costliest_hash<'a>(hashes: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    hashes
        .into_iter()
        .filter_map(|hash| {
            let parsed = argon2::PasswordHash::new(hash).ok()?;
            let params = argon2::Params::try_from(&parsed).ok()?;
            Some((
                u64::from(params.m_cost()) * u64::from(params.t_cost()),
                hash,
            ))
        })
        .max_by_key(|(cost, _)| *cost)
        .map(|(_, hash)| hash)
}

/// `password` hashed with the argon2 variant, version and parameters of `like` (a fresh salt),
/// or as [`hash_password`] does when there is no `like` or it does not parse.
///
/// # Errors
/// When the hash cannot be made.
pub fn hash_like(password: &str, like: Option<&str>) -> Result<String, String> {
    let Some(like) = like.and_then(|like| argon2::PasswordHash::new(like).ok()) else {
        return hash_password(password);
    };
    let (Ok(algorithm), Ok(params)) = (
        argon2::Algorithm::try_from(like.algorithm),
        argon2::Params::try_from(&like),
    ) else {
        return hash_password(password);
    };
    let version = like
        .version
        .and_then(|version| argon2::Version::try_from(version).ok())
        .unwrap_or_default();
    hash_with(&argon2::Argon2::new(algorithm, version, params), password)
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, header};
    use base64::Engine as _;

    fn basic(credentials: &str) -> Option<(String, Option<String>)> {
        let mut headers = HeaderMap::new();
        let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {encoded}")).unwrap(),
        );
        let presented = super::presented_client(&headers, None, None).ok()?;
        Some((presented.client_id, presented.secret))
    }

    /// A password for an unknown username is checked against a hash made like the costliest
    /// user's: with the defaults' hash instead, users hashed by another tool (argon2i, more
    /// memory and passes) took measurably longer to refuse than unknown names.
    #[test]
    fn an_unknown_users_hash_is_made_like_the_costliest_users() {
        use argon2::PasswordHasher as _;
        let salt = argon2::password_hash::SaltString::encode_b64(b"sixteen-byte-slt").unwrap();
        let costly = argon2::Argon2::new(
            argon2::Algorithm::Argon2i,
            argon2::Version::V0x13,
            argon2::Params::new(24_576, 3, 2, None).unwrap(),
        )
        .hash_password(b"alice-password", &salt)
        .unwrap()
        .to_string();
        let default = super::hash_password("bob-password").unwrap();
        assert_eq!(
            super::costliest_hash([default.as_str(), costly.as_str(), "not a hash"]),
            Some(costly.as_str())
        );
        assert_eq!(super::costliest_hash(["not a hash"]), None);
        let made = super::hash_like("random", Some(&costly)).unwrap();
        let (made, costly) = (
            argon2::PasswordHash::new(&made).unwrap(),
            argon2::PasswordHash::new(&costly).unwrap(),
        );
        assert_eq!(made.algorithm, costly.algorithm);
        assert_eq!(made.version, costly.version);
        assert_eq!(
            argon2::Params::try_from(&made).unwrap(),
            argon2::Params::try_from(&costly).unwrap()
        );
        assert_ne!(made.salt, costly.salt);
        let defaults = super::hash_like("random", None).unwrap();
        assert!(defaults.starts_with("$argon2id$"), "{defaults}");
    }

    #[test]
    fn a_basic_id_and_secret_are_each_decoded_whole() {
        let pair = |id: &str, secret: &str| Some((id.to_owned(), Some(secret.to_owned())));
        assert_eq!(basic("app:se%26cret"), pair("app", "se&cret"));
        // A raw `&` is part of the secret, not its end: `S&anything` is not the secret `S`.
        assert_eq!(basic("app:se&cret"), pair("app", "se&cret"));
        assert_eq!(basic("app:a=b&c=d"), pair("app", "a=b&c=d"));
        assert_eq!(basic("my%3Aapp:p+w%2B"), pair("my:app", "p w+"));
        assert_eq!(basic("app:"), Some(("app".to_owned(), None)));
        assert_eq!(basic("app:%FF"), None, "not UTF-8 once decoded");
    }
}
