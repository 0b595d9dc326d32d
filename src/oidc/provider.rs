//! `Provider`: one configured OpenID Provider with its discovered metadata and keys, and the
//! validation of the tokens it issues (with the positive-result cache and the unknown-`kid`
//! re-fetch). Discovery happens on first use and is retried on later uses until it succeeds;
//! a document due again is fetched in the background while it serves.

use std::sync::{Arc, RwLock};

use super::client::HttpClient;
use super::introspection_gate::IntrospectionGate;
use super::jwks::{JwksCache, JwksSource};
use super::{LocalIssuer, ProviderError, ProviderMetadata, TokenResponse, client};
use crate::clock::{Clock, UnixTime};
use crate::config::ProviderConfig;
use crate::http::forwarded::ClientAddress;
use crate::jose::KeySet;
use crate::metrics::Metrics;
use crate::secret::Secret;
use crate::token::cache::TokenCache;
use crate::token::id_token::{IdTokenExpectations, validate_id_token};
use crate::token::{self, Claims, Expectations, TokenError};

/// Introspection is on, but discovery names no endpoint for it.
fn no_introspection_endpoint() -> ProviderError {
    ProviderError::BadResponse(
        "introspection is enabled but discovery has no introspection_endpoint".to_owned(),
    )
}

/// Longest time a positive introspection answer is reused.
pub const INTROSPECTION_CACHE_SECONDS: i64 = 60;

/// Why a credential from this provider was not accepted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CredentialError {
    /// The token itself is not valid.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The provider (or its keys) could not be reached.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The provider was not asked: the client address's questions were refused (or answered
    /// unusably) too often lately (`introspection_gate::REFUSED_A_WINDOW`).
    #[error("introspections refused too often from this address lately; not asked")]
    TooManyRefused,
}

/// How long a discovery document is used before it is fetched again (seconds).
const DISCOVERY_TTL: UnixTime = 3600;
/// How soon a failed discovery refresh is tried again (seconds).
const DISCOVERY_RETRY: UnixTime = 60;
/// How soon a failed discovery is tried again while no document was ever had: soon, so that
/// logins work as soon as the provider does, but not once per request, which would keep a
/// provider that is down (or coming up) under a stream of fetches.
const FIRST_DISCOVERY_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Every endpoint of a discovery document must be https, or plain http on the issuer's own
/// host when the issuer itself is plain http (a provider on loopback in development): a
/// document that sends codes, tokens or keys over plain http to another host is refused.
fn check_endpoints(metadata: &ProviderMetadata) -> Result<(), ProviderError> {
    let issuer = url::Url::parse(&metadata.issuer)
        .map_err(|_| ProviderError::BadResponse("the issuer is not a URL".to_owned()))?;
    let endpoints = [
        (
            "authorization_endpoint",
            Some(&metadata.authorization_endpoint),
        ),
        ("token_endpoint", Some(&metadata.token_endpoint)),
        ("jwks_uri", metadata.jwks_uri.as_ref()),
        ("userinfo_endpoint", metadata.userinfo_endpoint.as_ref()),
    ];
    for (name, endpoint) in endpoints {
        let Some(endpoint) = endpoint else {
            continue;
        };
        if !endpoint_allowed(&issuer, endpoint) {
            return Err(ProviderError::BadResponse(format!(
                "discovery's {name} must be https (or http on the issuer's own host)"
            )));
        }
    }
    Ok(())
}

/// Whether `endpoint` is https, or plain http on the host of a plain-http `issuer`.
fn endpoint_allowed(issuer: &url::Url, endpoint: &str) -> bool {
    url::Url::parse(endpoint).is_ok_and(|url| match url.scheme() {
        "https" => url.host().is_some(),
        "http" => issuer.scheme() == "http" && url.host() == issuer.host(),
        _ => false,
    })
}

/// The endpoints a provider's config uses only for something it may turn off: one that is not
/// https (or the plain-http issuer's own host) refuses the discovery where it is used, and is
/// left unused where it is not (so an upgrade that reads a new endpoint breaks no login).
#[derive(Debug, Clone, Copy)]
struct OptionalEndpoints {
    /// `introspection = true`.
    introspection: bool,
    /// `end_session = true`: RP-initiated logout, and revocation at sign-out.
    end_session: bool,
}

/// `metadata` without the optional endpoints that are not https (or the issuer's own
/// plain-http host) and go unused; an error for one that would be used (the revocation
/// endpoint, used for sign-out alone, is left unused with a warning).
fn optional_endpoints(
    mut metadata: ProviderMetadata,
    uses: OptionalEndpoints,
) -> Result<ProviderMetadata, ProviderError> {
    let issuer = url::Url::parse(&metadata.issuer)
        .map_err(|_| ProviderError::BadResponse("the issuer is not a URL".to_owned()))?;
    let unusable = |endpoint: &Option<String>| {
        endpoint
            .as_deref()
            .is_some_and(|url| !endpoint_allowed(&issuer, url))
    };
    for (name, used, endpoint) in [
        (
            "end_session_endpoint",
            uses.end_session,
            &mut metadata.end_session_endpoint,
        ),
        (
            "introspection_endpoint",
            uses.introspection,
            &mut metadata.introspection_endpoint,
        ),
    ] {
        if unusable(endpoint) {
            if used {
                return Err(ProviderError::BadResponse(format!(
                    "discovery's {name} must be https (or http on the issuer's own host)"
                )));
            }
            *endpoint = None;
        }
    }
    if unusable(&metadata.revocation_endpoint) {
        tracing::warn!(
            issuer = %metadata.issuer,
            "discovery's revocation_endpoint is not https (or on the issuer's own host): refresh tokens are not revoked at sign-out"
        );
        metadata.revocation_endpoint = None;
    }
    Ok(metadata)
}

/// The discovery document of `issuer` (OpenID Connect Discovery 1.0 §4).
async fn discover(
    http: &reqwest::Client,
    issuer: &str,
    uses: OptionalEndpoints,
) -> Result<ProviderMetadata, ProviderError> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let response = http
        .get(&url)
        .send()
        .await
        .map_err(|error| ProviderError::Unreachable(error.to_string()))?;
    if !response.status().is_success() {
        return Err(ProviderError::BadResponse(format!(
            "discovery answered {}",
            response.status()
        )));
    }
    let body = client::read_answer(response, "discovery").await?;
    let metadata: ProviderMetadata = serde_json::from_slice(&body)
        .map_err(|error| ProviderError::BadResponse(format!("discovery document: {error}")))?;
    // OpenID Connect Discovery 1.0 §4.3: the issuer must be exactly the one configured.
    if metadata.issuer != issuer {
        return Err(ProviderError::BadResponse(format!(
            "discovery says issuer {:?}, config says {:?}",
            crate::untrusted::bounded(&metadata.issuer),
            issuer
        )));
    }
    check_endpoints(&metadata)?;
    optional_endpoints(metadata, uses)
}

/// The discovery document and its fetches, shared with the fetch in flight: that runs on a
/// task of its own, so a request that goes away (its client closed the connection) neither
/// cancels it nor leaves it unrecorded, and closing connections cannot start one per request.
#[derive(Default)]
struct Discovery {
    /// The document and when it is due to be fetched again.
    metadata: RwLock<Option<(Arc<ProviderMetadata>, UnixTime)>>,
    /// Held by the discovery in flight (its task) until it recorded its result.
    lock: Arc<tokio::sync::Mutex<()>>,
    /// Discoveries that failed, and why and when the last one did: a request that waited for
    /// a discovery takes its failure instead of starting another (single flight), and so does
    /// one that comes within `FIRST_DISCOVERY_RETRY` of it while no document was ever had.
    failures: std::sync::atomic::AtomicU64,
    error: std::sync::Mutex<Option<(ProviderError, std::time::Instant)>>,
}

impl Discovery {
    fn current(&self) -> Option<(Arc<ProviderMetadata>, UnixTime)> {
        self.metadata.read().ok().and_then(|slot| slot.clone())
    }

    fn store(&self, metadata: Arc<ProviderMetadata>, due: UnixTime) {
        if let Ok(mut slot) = self.metadata.write() {
            *slot = Some((metadata, due));
        }
    }

    /// Why the last discovery failed, when it failed less than `within` ago.
    fn failed_within(&self, within: std::time::Duration) -> Option<ProviderError> {
        let slot = self.error.lock().ok()?;
        let (error, at) = slot.as_ref()?;
        (at.elapsed() < within).then(|| error.clone())
    }

    /// Records a discovery begun at `now`; a failed one keeps the `stale` document there was.
    fn record(
        &self,
        provider: &str,
        result: Result<ProviderMetadata, ProviderError>,
        stale: Option<Arc<ProviderMetadata>>,
        now: UnixTime,
    ) -> Result<Arc<ProviderMetadata>, ProviderError> {
        match result {
            Ok(metadata) => {
                let metadata = Arc::new(metadata);
                self.store(metadata.clone(), now + DISCOVERY_TTL);
                tracing::info!(provider = %provider, "discovered provider");
                Ok(metadata)
            }
            Err(error) => {
                if let Ok(mut slot) = self.error.lock() {
                    *slot = Some((error.clone(), std::time::Instant::now()));
                }
                self.failures
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                match stale {
                    Some(metadata) => {
                        tracing::warn!(provider = %provider, %error, "discovery refresh failed; keeping the document");
                        self.store(metadata.clone(), now + DISCOVERY_RETRY);
                        Ok(metadata)
                    }
                    None => Err(error),
                }
            }
        }
    }
}

/// One upstream OpenID Provider.
pub struct Provider {
    /// Its configuration.
    pub config: ProviderConfig,
    http: HttpClient,
    local: Option<Arc<dyn LocalIssuer>>,
    discovery: Arc<Discovery>,
    jwks: JwksCache,
    token_cache: Arc<TokenCache>,
    /// Shared with the provider a reload builds for the same issuer and credentials
    /// (`keeping_what_was_fetched_by`): a reload must not give an address its refused
    /// questions back, nor double the questions in flight.
    introspection: Arc<IntrospectionGate>,
    clock: Arc<dyn Clock>,
    leeway: i64,
}

impl Provider {
    /// A provider reached over HTTP, or in-process when `local` is given.
    pub fn new(
        config: ProviderConfig,
        http: HttpClient,
        local: Option<Arc<dyn LocalIssuer>>,
        token_cache: Arc<TokenCache>,
        clock: Arc<dyn Clock>,
        leeway: i64,
        metrics: Arc<Metrics>,
    ) -> Self {
        let jwks = JwksCache::new(
            config.name.clone(),
            config.jwks_refetch_interval,
            config.timeout,
            clock.clone(),
            metrics,
            token_cache.clone(),
        );
        Self {
            config,
            http,
            local,
            discovery: Arc::default(),
            jwks,
            token_cache,
            introspection: Arc::new(IntrospectionGate::new(clock.clone())),
            clock,
            leeway,
        }
    }

    /// The provider's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The longest wait for one of its answers, and for a refresh or JWKS fetch in flight.
    pub fn timeout(&self) -> std::time::Duration {
        self.config.timeout
    }

    /// Reads `jwks_file` now, when this provider has one, so a config reload can refuse a file
    /// with no usable key before the new config goes live; other providers do nothing here.
    ///
    /// # Errors
    /// When the file cannot be read or holds no usable key.
    pub async fn load_key_file(&self) -> Result<(), ProviderError> {
        if self.local.is_none() && self.config.jwks_file.is_some() {
            self.keys().await?;
        }
        Ok(())
    }

    /// Takes over the discovery document and the keys `previous` fetched, as past ones, when
    /// both reach the same issuer over the network (a config reload): the first use fetches
    /// both again, as a reload always did, and uses these while that fetch runs or when it
    /// fails. Otherwise a reload while the provider is unreachable refused every bearer token
    /// and failed `/readyz` on every replica at once. A `jwks_file` is read anew by
    /// `load_key_file`; a provider served in-process fetches nothing.
    #[must_use]
    pub fn keeping_what_was_fetched_by(mut self, previous: &Self) -> Self {
        // The introspection gate (refused tokens, each address's refused questions, the
        // questions in flight) where the same client asks the same issuer: a refusal it
        // remembers was that provider's answer to these credentials.
        if self.config.issuer == previous.config.issuer
            && self.config.introspection
            && previous.config.introspection
            && self.config.client_id == previous.config.client_id
            && self.config.client_auth == previous.config.client_auth
            && self.config.client_secret.as_ref().map(Secret::expose)
                == previous.config.client_secret.as_ref().map(Secret::expose)
        {
            self.introspection = previous.introspection.clone();
        }
        // The document kept was filtered for the endpoints its config used
        // (`optional_endpoints`): kept only where those are the same.
        let same = self.local.is_none()
            && previous.local.is_none()
            && self.config.jwks_file.is_none()
            && previous.config.jwks_file.is_none()
            && self.config.issuer == previous.config.issuer
            && self.config.end_session == previous.config.end_session
            && self.config.introspection == previous.config.introspection;
        if same {
            // Due at once: past, not current.
            let fetched = previous.discovery.current();
            if let Ok(mut slot) = self.discovery.metadata.write() {
                *slot = fetched.map(|(metadata, _)| (metadata, 0));
            }
            self.jwks.keep_keys_of(&previous.jwks);
        }
        self
    }

    /// Fetches the discovery document, and, when past ones were kept across a reload, starts
    /// the keys' fetch at the same time (on a task of its own, not waited for): both fetches'
    /// locks are then held, so that requests meanwhile are given the past document and keys at
    /// once instead of one of them fetching (and waiting up to the provider timeout while the
    /// provider is unreachable).
    ///
    /// # Errors
    /// When discovery fails with no document to keep (past ones stay in use otherwise).
    pub async fn warm(&self) -> Result<(), ProviderError> {
        if self.local.is_none() && self.jwks.holds_past_keys() {
            let (metadata, keys) = tokio::join!(self.discovered(true), self.keys());
            metadata?;
            keys?;
            return Ok(());
        }
        self.discovered(true).await.map(|_| ())
    }

    /// Whether discovery has succeeded.
    pub fn is_discovered(&self) -> bool {
        self.local.is_some() || self.discovery.current().is_some()
    }

    /// The discovery document, fetched on first use and again every `DISCOVERY_TTL`; a
    /// refresh that fails keeps the document it had (retried after `DISCOVERY_RETRY`).
    ///
    /// # Errors
    /// When the provider cannot be reached or its document is unusable, and none was fetched
    /// before.
    pub async fn metadata(&self) -> Result<Arc<ProviderMetadata>, ProviderError> {
        self.discovered(false).await
    }

    /// `metadata`; a refresh is waited for when `wait_for_refresh` (a reload's warm-up, whose
    /// readers want the document as it is now), else served from the document there.
    async fn discovered(
        &self,
        wait_for_refresh: bool,
    ) -> Result<Arc<ProviderMetadata>, ProviderError> {
        if let Some(local) = &self.local {
            return Ok(Arc::new(local.metadata()));
        }
        let now = self.clock.now();
        let discovery = &self.discovery;
        let stale = match discovery.current() {
            Some((metadata, due)) if now < due => return Ok(metadata),
            other => other.map(|(metadata, _)| metadata),
        };
        if stale.is_none()
            && let Some(error) = discovery.failed_within(FIRST_DISCOVERY_RETRY)
        {
            return Err(error);
        }
        use std::sync::atomic::Ordering;
        let failures_seen = discovery.failures.load(Ordering::SeqCst);
        // One fetch at a time. While one is under way, others use the document they have;
        // without one, they wait for it at most the provider timeout (the fetch in flight is
        // cut off then too).
        let single_flight = match discovery.lock.clone().try_lock_owned() {
            Ok(guard) => guard,
            Err(_) => {
                if let Some(metadata) = &stale
                    && !wait_for_refresh
                {
                    return Ok(metadata.clone());
                }
                let Ok(guard) =
                    tokio::time::timeout(self.config.timeout, discovery.lock.clone().lock_owned())
                        .await
                else {
                    return stale.ok_or_else(|| {
                        ProviderError::Unreachable(
                            "the discovery in flight did not finish within the provider timeout"
                                .to_owned(),
                        )
                    });
                };
                guard
            }
        };
        if let Some((metadata, due)) = discovery.current()
            && now < due
        {
            return Ok(metadata);
        }
        if stale.is_none()
            && discovery.failures.load(Ordering::SeqCst) != failures_seen
            && let Some((error, _)) = discovery.error.lock().ok().and_then(|error| error.clone())
        {
            // The discovery this request waited for failed: that is its answer too.
            return Err(error);
        }
        // On a task of its own, which records it whether or not this request waits on.
        let (discovery, provider) = (discovery.clone(), self.config.name.clone());
        let (http, issuer) = (self.http.get().clone(), self.config.issuer.clone());
        let uses = OptionalEndpoints {
            introspection: self.config.introspection,
            end_session: self.config.end_session,
        };
        let kept = stale.clone();
        let task = tokio::spawn(async move {
            let result = discover(&http, &issuer, uses).await;
            let recorded = discovery.record(&provider, result, stale, now);
            drop(single_flight);
            recorded
        });
        // A refresh: the document already held serves this request too, as the keys held
        // serve during a key fetch; only a first discovery is waited for.
        if let Some(metadata) = kept
            && !wait_for_refresh
        {
            return Ok(metadata);
        }
        task.await.unwrap_or_else(|error| {
            Err(ProviderError::Unreachable(format!(
                "the discovery failed: {error}"
            )))
        })
    }

    async fn jwks_source(&self) -> Result<JwksSource, ProviderError> {
        if let Some(path) = &self.config.jwks_file {
            return Ok(JwksSource::File(path.clone()));
        }
        let metadata = self.metadata().await?;
        let uri = metadata
            .jwks_uri
            .clone()
            .ok_or_else(|| ProviderError::BadResponse("discovery has no jwks_uri".to_owned()))?;
        Ok(JwksSource::Url(uri))
    }

    async fn keys(&self) -> Result<(Arc<KeySet>, Option<JwksSource>), ProviderError> {
        if let Some(local) = &self.local {
            return Ok((local.key_set(), None));
        }
        let source = self.jwks_source().await?;
        let keys = self.jwks.keys(&source, self.http.get()).await?;
        Ok((keys, Some(source)))
    }

    /// Runs `check` with the current keys, and once more after a re-fetch when the token names
    /// a key we do not have.
    async fn with_keys<T>(
        &self,
        check: impl Fn(&KeySet) -> Result<T, TokenError>,
    ) -> Result<T, CredentialError> {
        self.with_keys_looked(check)
            .await
            .map_err(|(error, _)| error)
    }

    /// `with_keys`, telling with a failure whether the keys were current for it: `false` when
    /// the token named a key they lack and no keys were fetched since it came (the re-fetch
    /// was not due yet, or failed and the keys stayed), so a later try may find the key.
    async fn with_keys_looked<T>(
        &self,
        check: impl Fn(&KeySet) -> Result<T, TokenError>,
    ) -> Result<T, (CredentialError, bool)> {
        // Keys fetched from here on (by `keys` itself, by the re-fetch, or by another request
        // meanwhile) were fetched since the token came.
        let before = self.jwks.generation();
        let (keys, source) = self.keys().await.map_err(|error| (error.into(), false))?;
        match (check(&keys), source) {
            (Err(TokenError::UnknownKey(_)), Some(source)) => {
                let fresh = self
                    .jwks
                    .refetch_for_unknown_kid(&keys, &source, self.http.get())
                    .await
                    .map_err(|error| (error.into(), false))?;
                let looked = self.jwks.generation() != before;
                check(&fresh).map_err(|error| (error.into(), looked))
            }
            (checked, _) => checked.map_err(|error| (error.into(), true)),
        }
    }

    /// Validates a bearer access token of this provider (SPEC §6): signature, `iss`, an `aud`
    /// from `audiences`, times, and that it is not an ID or logout token. Positive results are
    /// cached by the token's hash until `exp`.
    ///
    /// # Errors
    /// `Token` for an invalid token (also when no audience is configured), `Provider` when the
    /// keys cannot be had (or the introspection endpoint), `TooManyRefused` for an opaque token
    /// not asked about (`client`'s questions were refused too often lately).
    pub async fn validate_access_token(
        self: &Arc<Self>,
        token: &str,
        client: ClientAddress<'_>,
    ) -> Result<Claims, CredentialError> {
        self.validate_access_token_at(token, self.clock.now(), client)
            .await
    }

    /// `validate_access_token` at `now`, read from this provider's clock by a caller that
    /// already has it (one clock read a request, not two).
    ///
    /// # Errors
    /// As `validate_access_token`.
    pub async fn validate_access_token_at(
        self: &Arc<Self>,
        token: &str,
        now: UnixTime,
        client: ClientAddress<'_>,
    ) -> Result<Claims, CredentialError> {
        if self.config.audiences.is_empty() {
            return Err(TokenError::WrongAudience.into());
        }
        if let Some(claims) = self.token_cache.get(token, now) {
            if self.local.is_some() {
                Box::pin(self.check_not_revoked(&claims)).await?;
            }
            return Ok(claims);
        }
        // Boxed: a cache hit is the common case, and the rest (keys, introspection, the
        // revocation store) is a future of its own that the hit need not carry.
        Box::pin(self.validate_uncached(token, now, client)).await
    }

    /// `validate_access_token` for a token not in the positive cache.
    async fn validate_uncached(
        self: &Arc<Self>,
        token: &str,
        now: UnixTime,
        client: ClientAddress<'_>,
    ) -> Result<Claims, CredentialError> {
        if self.config.introspection && !token::looks_like_jwt(token) {
            return self.introspect(token, now, client).await;
        }
        let expected = Expectations {
            issuer: &self.config.issuer,
            audiences: &self.config.audiences,
            leeway: self.leeway,
            now,
        };
        let epoch = self.token_cache.epoch();
        let claims = self
            .with_keys(|keys| {
                token::validate_access_token(token, keys, &expected, Some(&self.config.client_id))
            })
            .await?;
        self.check_not_revoked(&claims).await?;
        if let Ok(Some(exp)) = token::numeric_claim(&claims, "exp") {
            self.token_cache.insert_validated(
                epoch,
                token,
                claims.clone(),
                exp.saturating_add(self.leeway),
            );
        }
        Ok(claims)
    }

    /// The token service served in-process revokes what it issued: asked on every use, cached
    /// or not. A store that cannot answer is the provider being unavailable.
    async fn check_not_revoked(&self, claims: &Claims) -> Result<(), CredentialError> {
        let Some(local) = &self.local else {
            return Ok(());
        };
        if local.is_revoked(claims).await? {
            return Err(TokenError::Inactive.into());
        }
        Ok(())
    }

    /// RFC 7662, checked by `token::introspection::check_introspection` (`active`, `iss`,
    /// an access token, for an accepted `aud`, `exp`, `sub`). Positive answers are cached until `exp`, at
    /// most `INTROSPECTION_CACHE_SECONDS`; refused ones for `introspection_gate::REFUSAL_SECONDS`.
    /// One token is asked about once at a time, and at most `introspection_gate::IN_FLIGHT`
    /// questions are in flight; a request that cannot ask within the provider's timeout is
    /// refused as when the provider is down (502). A `client` whose questions were refused
    /// `introspection_gate::REFUSED_A_WINDOW` times lately is not asked for (`TooManyRefused`).
    /// The question runs on a task of its own: a request given up meanwhile (its client gone,
    /// the ingress's timeout) does not cancel it, so what it cost the provider is counted by
    /// its answer, and a good answer is cached.
    async fn introspect(
        self: &Arc<Self>,
        token: &str,
        now: crate::clock::UnixTime,
        client: ClientAddress<'_>,
    ) -> Result<Claims, CredentialError> {
        if let Some(error) = self.introspection.refusal(token, now) {
            return Err(error.into());
        }
        let Some(turn) = self.introspection.turn(token, self.config.timeout).await else {
            return Err(ProviderError::Unreachable(
                "no introspection could be asked within the provider's timeout (the questions in \
                 flight did not finish)"
                    .to_owned(),
            )
            .into());
        };
        // The request this one waited for may have asked about the same token.
        if let Some(claims) = self.token_cache.get(token, now) {
            return Ok(claims);
        }
        if let Some(error) = self.introspection.refusal(token, now) {
            return Err(error.into());
        }
        // A provider without an introspection endpoint is misconfigured, not refusing clients:
        // found out before anything is counted.
        let metadata = self.metadata().await?;
        if metadata.introspection_endpoint.is_none() {
            return Err(no_introspection_endpoint().into());
        }
        let Some(mut admission) = self.introspection.admit(client) else {
            return Err(CredentialError::TooManyRefused);
        };
        let (provider, token) = (self.clone(), token.to_owned());
        let question = tokio::spawn(tracing::Instrument::in_current_span(async move {
            let answer = provider.ask_introspection(&metadata, &token, now).await;
            // A provider that cannot be reached is not the client's doing (an office's users
            // would be refused after an outage). One that answers 429 or 5xx is asked less.
            if !matches!(
                answer,
                Ok(_) | Err(CredentialError::Provider(ProviderError::Unreachable(_)))
            ) {
                admission.refused();
            }
            drop((admission, turn));
            answer
        }));
        question.await.unwrap_or_else(|error| {
            Err(
                ProviderError::Unreachable(format!("the introspection task failed: {error}"))
                    .into(),
            )
        })
    }

    /// The question of `introspect`, asked of the provider `metadata` describes.
    async fn ask_introspection(
        &self,
        metadata: &ProviderMetadata,
        token: &str,
        now: crate::clock::UnixTime,
    ) -> Result<Claims, CredentialError> {
        let endpoint = metadata
            .introspection_endpoint
            .as_deref()
            .ok_or_else(no_introspection_endpoint)?;
        let endpoint = client::ClientEndpoint {
            url: endpoint,
            signing_algs: metadata
                .introspection_endpoint_auth_signing_alg_values_supported
                .as_ref()
                .or(metadata
                    .token_endpoint_auth_signing_alg_values_supported
                    .as_ref())
                .map(Vec::as_slice),
            now,
        };
        let answer = client::introspect(self.http.get(), &self.config, endpoint, token).await?;
        let expected = Expectations {
            issuer: &self.config.issuer,
            audiences: &self.config.audiences,
            leeway: self.leeway,
            now,
        };
        let exp = token::introspection::check_introspection(&answer, &expected)
            .inspect_err(|error| self.introspection.refuse(token, error.clone(), now))?;
        let claims = Arc::new(answer);
        let until = exp.map_or(now + INTROSPECTION_CACHE_SECONDS, |exp| {
            exp.min(now + INTROSPECTION_CACHE_SECONDS)
        });
        self.token_cache.insert(token, claims.clone(), until);
        Ok(claims)
    }

    /// Validates an ID token from this provider's token endpoint (OIDC Core 3.1.3.7).
    ///
    /// # Errors
    /// As `validate_access_token`.
    pub async fn validate_id_token(
        &self,
        id_token: &str,
        nonce: crate::token::id_token::NonceRule<'_>,
        access_token: Option<&str>,
    ) -> Result<Claims, CredentialError> {
        self.check_id_token(id_token, nonce, access_token, None, None)
            .await
    }

    /// Validates the ID token of a login's code exchange: as `validate_id_token`, with the nonce
    /// sent, `c_hash` against `code`, and `iat` no older than `max_id_token_age` (SPEC §6).
    ///
    /// # Errors
    /// As `validate_access_token`.
    pub async fn validate_login_id_token(
        &self,
        id_token: &str,
        nonce: &str,
        access_token: &str,
        code: &str,
    ) -> Result<Claims, CredentialError> {
        let max_age = i64::try_from(self.config.max_id_token_age.as_secs()).unwrap_or(i64::MAX);
        self.check_id_token(
            id_token,
            crate::token::id_token::NonceRule::Equals(nonce),
            Some(access_token),
            Some(code),
            Some(max_age),
        )
        .await
    }

    async fn check_id_token(
        &self,
        id_token: &str,
        nonce: crate::token::id_token::NonceRule<'_>,
        access_token: Option<&str>,
        code: Option<&str>,
        max_age: Option<i64>,
    ) -> Result<Claims, CredentialError> {
        let audiences = [self.config.client_id.clone()];
        let expected = IdTokenExpectations {
            common: Expectations {
                issuer: &self.config.issuer,
                audiences: &audiences,
                leeway: self.leeway,
                now: self.clock.now(),
            },
            client_id: &self.config.client_id,
            nonce,
            access_token,
            code,
            max_age,
        };
        self.with_keys(|keys| validate_id_token(id_token, keys, &expected))
            .await
    }

    /// The claims of the userinfo endpoint merged under the ID token's claims (the ID token
    /// wins), when the provider has one; the ID token's claims alone otherwise. OIDC Core
    /// §5.3.2: a userinfo `sub` different from the ID token's is refused.
    ///
    /// # Errors
    /// `Token(WrongSubject)` on a `sub` mismatch; provider errors when userinfo fails.
    pub async fn merge_userinfo(
        &self,
        id_claims: &Claims,
        access_token: &str,
    ) -> Result<Claims, CredentialError> {
        merge_claims(id_claims, self.userinfo(access_token).await?)
    }

    /// The claims of the userinfo endpoint for `access_token` (OIDC Core §5.3), or `None`
    /// when there is none to ask: the token service in-process, or no `userinfo_endpoint`.
    ///
    /// # Errors
    /// Provider errors when userinfo fails.
    pub async fn userinfo(
        &self,
        access_token: &str,
    ) -> Result<Option<serde_json::Map<String, serde_json::Value>>, CredentialError> {
        if self.local.is_some() {
            return Ok(None);
        }
        let metadata = self.metadata().await?;
        let Some(endpoint) = metadata.userinfo_endpoint.as_deref() else {
            return Ok(None);
        };
        Ok(Some(
            client::fetch_userinfo(self.http.get(), endpoint, access_token).await?,
        ))
    }

    /// Validates a back-channel logout token from this provider (its `aud` is our client id).
    ///
    /// # Errors
    /// As `validate_access_token`, with whether the keys were current for the token (`false`:
    /// it names a key they lack, and they were not fetched again for it; a retry may find it).
    pub async fn validate_logout_token(
        &self,
        token: &str,
    ) -> Result<Claims, (CredentialError, bool)> {
        let audiences = [self.config.client_id.clone()];
        let expected = Expectations {
            issuer: &self.config.issuer,
            audiences: &audiences,
            leeway: self.leeway,
            now: self.clock.now(),
        };
        self.with_keys_looked(|keys| {
            crate::token::logout_token::validate_logout_token(token, keys, &expected)
        })
        .await
    }

    /// Whether this provider's last JWKS fetch failed (never for the in-process token
    /// service, whose keys are its own).
    pub fn keys_fetch_failed(&self) -> bool {
        self.local.is_none() && self.jwks.last_fetch_failed()
    }

    /// The token endpoint, where client assertions are signed with an algorithm of
    /// `token_endpoint_auth_signing_alg_values_supported` and dated now.
    fn token_endpoint<'a>(&self, metadata: &'a ProviderMetadata) -> client::ClientEndpoint<'a> {
        client::ClientEndpoint {
            url: &metadata.token_endpoint,
            signing_algs: metadata
                .token_endpoint_auth_signing_alg_values_supported
                .as_deref(),
            now: self.clock.now(),
        }
    }

    /// Refreshes tokens at this provider.
    ///
    /// # Errors
    /// As `client::refresh_tokens`.
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenResponse, ProviderError> {
        if let Some(local) = &self.local {
            return local.refresh(&self.config.client_id, refresh_token).await;
        }
        let metadata = self.metadata().await?;
        client::refresh_tokens(
            self.http.get(),
            &self.config,
            self.token_endpoint(&metadata),
            refresh_token,
        )
        .await
    }

    /// Revokes a refresh token of this provider's (RFC 7009), as a sign-out does. `false` when
    /// the provider names no revocation endpoint.
    ///
    /// # Errors
    /// As `client::revoke`, or the discovery failing.
    pub async fn revoke_refresh_token(&self, refresh_token: &str) -> Result<bool, ProviderError> {
        if let Some(local) = &self.local {
            local
                .revoke_refresh_token(&self.config.client_id, refresh_token)
                .await?;
            return Ok(true);
        }
        let metadata = self.metadata().await?;
        let Some(url) = metadata.revocation_endpoint.as_deref() else {
            return Ok(false);
        };
        let endpoint = client::ClientEndpoint {
            url,
            signing_algs: metadata
                .revocation_endpoint_auth_signing_alg_values_supported
                .as_ref()
                .or(metadata
                    .token_endpoint_auth_signing_alg_values_supported
                    .as_ref())
                .map(Vec::as_slice),
            now: self.clock.now(),
        };
        client::revoke(self.http.get(), &self.config, endpoint, refresh_token).await?;
        Ok(true)
    }

    /// Exchanges an authorization code at this provider.
    ///
    /// # Errors
    /// As `client::exchange_code`.
    pub async fn exchange_code(
        &self,
        code: &str,
        redirect_uri: &str,
        code_verifier: &str,
    ) -> Result<TokenResponse, ProviderError> {
        if let Some(local) = &self.local {
            return local
                .exchange_code(&self.config.client_id, code, redirect_uri, code_verifier)
                .await;
        }
        let metadata = self.metadata().await?;
        client::exchange_code(
            self.http.get(),
            &self.config,
            self.token_endpoint(&metadata),
            code,
            redirect_uri,
            code_verifier,
        )
        .await
    }
}

/// Claims about the ID token and the sign-in, not about the user: only the ID token says them
/// (OIDC Core §2), so a userinfo answer naming one is not heard. A `sid` from userinfo, where
/// the ID token had none, hid the session from a back-channel logout by `sub` alone.
const ID_TOKEN_ONLY: [&str; 12] = [
    "iss",
    "aud",
    "exp",
    "iat",
    "nbf",
    "nonce",
    "auth_time",
    "azp",
    "at_hash",
    "c_hash",
    "sid",
    "jti",
];

/// `userinfo`'s claims merged under the ID token's claims (the ID token wins), or the ID
/// token's claims alone when there were none. OIDC Core §5.3.2: a userinfo `sub` different
/// from the ID token's is refused. The ID token's own claims ([`ID_TOKEN_ONLY`]) come from it
/// alone.
///
/// # Errors
/// `Token(WrongSubject)` on a `sub` mismatch.
pub fn merge_claims(
    id_claims: &Claims,
    userinfo: Option<serde_json::Map<String, serde_json::Value>>,
) -> Result<Claims, CredentialError> {
    let Some(mut merged) = userinfo else {
        return Ok(id_claims.clone());
    };
    if merged.get("sub") != id_claims.get("sub") {
        return Err(TokenError::WrongSubject.into());
    }
    for name in ID_TOKEN_ONLY {
        merged.remove(name);
    }
    // A verification flag speaks of its own address: userinfo's is dropped where the ID
    // token's address, which wins, is another; and the ID token's, where it names no address
    // and userinfo's is the one kept. Where userinfo's flag is dropped so (it names another
    // address, or none) and the ID token says nothing of its own address, nothing vouches for
    // that one: unverified (a missing flag would read as the provider's word, as
    // `token::without_userinfo` says).
    let mut flags_of_no_address = Vec::new();
    for (address, verified) in [
        ("email", "email_verified"),
        ("phone_number", "phone_number_verified"),
    ] {
        if id_claims.contains_key(address) && merged.get(address) != id_claims.get(address) {
            let flagged = merged.remove(verified).is_some();
            if flagged && !id_claims.contains_key(verified) {
                merged.insert(verified.to_owned(), serde_json::Value::Bool(false));
            }
        }
        if !id_claims.contains_key(address) && merged.contains_key(address) {
            flags_of_no_address.push(verified);
        }
    }
    for (name, value) in id_claims.iter() {
        if !flags_of_no_address.contains(&name.as_str()) {
            merged.insert(name.clone(), value.clone());
        }
    }
    Ok(Arc::new(merged))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_says_nothing_of_an_address_the_id_token_replaced() {
        let id: Claims = Arc::new(
            serde_json::json!({"sub": "u1", "email": "a@example.com"})
                .as_object()
                .cloned()
                .unwrap(),
        );
        let userinfo = |email: &str| {
            serde_json::json!({"sub": "u1", "email": email, "email_verified": true,
                "phone_number": "+1", "phone_number_verified": true})
            .as_object()
            .cloned()
        };
        let merged = merge_claims(&id, userinfo("b@example.com")).unwrap();
        assert_eq!(merged["email"], "a@example.com");
        assert_eq!(
            merged.get("email_verified"),
            Some(&serde_json::Value::Bool(false)),
            "b@example.com's flag is not a@example.com's, and nothing vouches for that one"
        );
        // So a rule that takes verified addresses only refuses it.
        let require = crate::policy::Requirements {
            email_domains: vec!["example.com".to_owned()],
            ..Default::default()
        };
        assert!(crate::policy::check_requirements(&require, &merged).is_err());
        assert_eq!(
            merged["phone_number_verified"], true,
            "the phone number is userinfo's own"
        );
        // The ID token's own flag for its address stands.
        let flagged: Claims = Arc::new(
            serde_json::json!({"sub": "u1", "email": "a@example.com", "email_verified": true})
                .as_object()
                .cloned()
                .unwrap(),
        );
        let merged = merge_claims(&flagged, userinfo("b@example.com")).unwrap();
        assert_eq!(merged["email_verified"], true);
        assert!(crate::policy::check_requirements(&require, &merged).is_ok());
        // Userinfo silent on addresses leaves the ID token's as it was.
        let silent = serde_json::json!({"sub": "u1", "name": "A"})
            .as_object()
            .cloned();
        assert_eq!(
            merge_claims(&id, silent).unwrap().get("email_verified"),
            None
        );
        // One that gives another address without a flag says nothing of either.
        let unflagged = serde_json::json!({"sub": "u1", "email": "b@example.com"})
            .as_object()
            .cloned();
        let merged = merge_claims(&id, unflagged).unwrap();
        assert_eq!(merged.get("email_verified"), None);
        // A flag without an address speaks of the user's address, which userinfo does not
        // name: not the ID token's, which nothing then vouches for.
        let flag_without_address = serde_json::json!({"sub": "u1", "email_verified": true})
            .as_object()
            .cloned();
        let merged = merge_claims(&id, flag_without_address).unwrap();
        assert_eq!(merged["email_verified"], false);
        assert!(crate::policy::check_requirements(&require, &merged).is_err());
        let merged = merge_claims(&id, userinfo("a@example.com")).unwrap();
        assert_eq!(merged["email_verified"], true, "the same address");
        // An ID token's flag without its address says nothing of userinfo's.
        let flag_only: Claims = Arc::new(
            serde_json::json!({"sub": "u1", "email_verified": true})
                .as_object()
                .cloned()
                .unwrap(),
        );
        let unverified = serde_json::json!({"sub": "u1", "email": "b@example.com",
            "email_verified": false})
        .as_object()
        .cloned();
        let merged = merge_claims(&flag_only, unverified).unwrap();
        assert_eq!(merged["email"], "b@example.com");
        assert_eq!(merged["email_verified"], false, "userinfo's own flag");
    }

    #[test]
    fn an_unusable_optional_endpoint_is_refused_where_used_and_dropped_where_not() {
        let metadata: ProviderMetadata = serde_json::from_value(serde_json::json!({
            "issuer": "https://idp.example",
            "authorization_endpoint": "https://idp.example/authorize",
            "token_endpoint": "https://idp.example/token",
            "end_session_endpoint": "http://elsewhere.example/logout",
            "introspection_endpoint": "http://elsewhere.example/introspect",
            "revocation_endpoint": "http://elsewhere.example/revoke",
        }))
        .unwrap();
        let uses = |introspection, end_session| OptionalEndpoints {
            introspection,
            end_session,
        };
        let unused = optional_endpoints(metadata.clone(), uses(false, false)).unwrap();
        assert_eq!(unused.end_session_endpoint, None);
        assert_eq!(unused.introspection_endpoint, None);
        assert_eq!(unused.revocation_endpoint, None);
        assert!(optional_endpoints(metadata.clone(), uses(true, false)).is_err());
        assert!(optional_endpoints(metadata.clone(), uses(false, true)).is_err());
        let mut usable = metadata;
        usable.end_session_endpoint = Some("https://idp.example/logout".to_owned());
        let kept = optional_endpoints(usable, uses(false, true)).unwrap();
        assert_eq!(
            kept.end_session_endpoint.as_deref(),
            Some("https://idp.example/logout")
        );
    }

    /// Userinfo's statements about the user join the ID token's claims; the ID token's own
    /// claims come from the ID token alone, also those it does not have (a userinfo `sid` hid
    /// a session from a back-channel logout by `sub`).
    #[test]
    fn userinfo_adds_what_it_says_of_the_user_and_nothing_of_the_id_tokens() {
        let object = |value: serde_json::Value| value.as_object().cloned().unwrap_or_default();
        let id = Arc::new(object(serde_json::json!({
            "sub": "u", "iss": "https://idp.example", "aud": "app", "exp": 2_000, "iat": 1_000
        })));
        let userinfo = object(serde_json::json!({
            "sub": "u", "sid": "from-userinfo", "exp": 9_999, "nonce": "n", "auth_time": 5,
            "acr": "mfa", "groups": ["admin"], "email": "u@example.com"
        }));
        let merged = merge_claims(&id, Some(userinfo)).unwrap_or_else(|_| panic!("same sub"));
        assert_eq!(merged.get("exp"), Some(&serde_json::json!(2_000)));
        for absent in ["sid", "nonce", "auth_time"] {
            assert!(!merged.contains_key(absent), "{absent}: {merged:?}");
        }
        for kept in ["acr", "groups", "email", "iss", "aud", "iat"] {
            assert!(merged.contains_key(kept), "{kept}: {merged:?}");
        }
    }
}
