//! A provider's keys: fetched from `jwks_uri` (honouring `Cache-Control: max-age`) or read from
//! a file, kept as a snapshot, and re-fetched on an unknown `kid` or past `max-age`.
//!
//! Faults never cost the keys or a flood (SPEC §9): a fetch that fails or brings no usable key
//! never replaces a good key set; fetches — failed ones included — happen at most once per
//! `jwks_refetch_interval`; one fetch runs at a time (single flight) and is cut off at the
//! provider's `timeout`, and no request waits on it longer than that: past keys are used while
//! a refresh is in flight, and a request that needs the fetch gives up at the timeout. A fetch
//! runs on a task of its own, which records it: a request that goes away meanwhile (its client
//! closed the connection) neither cancels it nor leaves it unrecorded, so closing connections
//! cannot start a fetch per request.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::ProviderError;
use crate::clock::{Clock, UnixTime};
use crate::jose::KeySet;
use crate::metrics::{JwksFetchLabels, Metrics};
use crate::token::cache::TokenCache;

/// Keys are re-fetched after this long (seconds) when the provider gives no `max-age`.
const DEFAULT_MAX_AGE: i64 = 3600;
/// …and never kept longer than this, whatever it says.
const LONGEST_MAX_AGE: i64 = 24 * 3600;

/// Where the keys come from.
#[derive(Debug, Clone)]
pub enum JwksSource {
    /// The discovery document's `jwks_uri`.
    Url(String),
    /// `jwks_file`.
    File(PathBuf),
}

struct Snapshot {
    keys: Arc<KeySet>,
    /// Bumped by every fetch that replaced the keys; 0 while there are none.
    generation: u64,
    /// The last fetch that replaced the keys.
    fetched_at: Option<UnixTime>,
    max_age: i64,
    /// The last fetch, whatever came of it (the rate limit counts failures too).
    attempted_at: Option<UnixTime>,
    /// Why the last fetch failed, when it did.
    last_error: Option<ProviderError>,
}

/// The cached keys of one provider.
pub struct JwksCache {
    provider: String,
    /// Shared with the fetch in flight, which records its result.
    snapshot: Arc<RwLock<Snapshot>>,
    /// Held by the fetch in flight (its task) until it recorded its result.
    fetch_lock: Arc<tokio::sync::Mutex<()>>,
    /// Whole seconds, rounded up.
    refetch_interval: i64,
    timeout: Duration,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    /// The tokens these keys validated: forgotten when a fetch withdraws a key.
    validated: Arc<TokenCache>,
}

/// Whether `at` is less than `seconds` before `now` (a clock that went back counts as elapsed).
fn within(at: Option<UnixTime>, seconds: i64, now: UnixTime) -> bool {
    at.is_some_and(|at| (0..seconds).contains(&now.saturating_sub(at)))
}

impl JwksCache {
    /// An empty cache; the first use fetches. `timeout` is the provider's: the longest a fetch
    /// runs and the longest a request waits for one.
    pub fn new(
        provider: String,
        refetch_interval: Duration,
        timeout: Duration,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        validated: Arc<TokenCache>,
    ) -> Self {
        let snapshot = Snapshot {
            keys: Arc::new(KeySet::default()),
            generation: 0,
            fetched_at: None,
            max_age: DEFAULT_MAX_AGE,
            attempted_at: None,
            last_error: None,
        };
        let whole_seconds =
            refetch_interval.as_secs() + u64::from(refetch_interval.subsec_nanos() > 0);
        Self {
            provider,
            snapshot: Arc::new(RwLock::new(snapshot)),
            fetch_lock: Arc::new(tokio::sync::Mutex::new(())),
            refetch_interval: i64::try_from(whole_seconds).unwrap_or(i64::MAX),
            timeout,
            clock,
            metrics,
            validated,
        }
    }

    /// Takes the keys `previous` holds as past keys (a reloaded config's provider of the same
    /// issuer): the first use fetches again, as after any reload, and while that fetch runs or
    /// when it fails these are used (SPEC §9: a fetch that fails never replaces a good key
    /// set).
    pub fn keep_keys_of(&self, previous: &Self) {
        let kept = previous.with_snapshot(|snapshot| Snapshot {
            keys: snapshot.keys.clone(),
            generation: snapshot.generation,
            fetched_at: None,
            max_age: snapshot.max_age,
            attempted_at: None,
            last_error: None,
        });
        match self.snapshot.write() {
            Ok(mut snapshot) => *snapshot = kept,
            Err(poisoned) => *poisoned.into_inner() = kept,
        }
    }

    /// Whether keys from before are held but due to be fetched again (kept across a reload).
    pub fn holds_past_keys(&self) -> bool {
        self.with_snapshot(|snapshot| snapshot.generation > 0 && snapshot.fetched_at.is_none())
    }

    /// How many fetches replaced the keys so far: a later value means keys newer than an
    /// earlier one's.
    pub fn generation(&self) -> u64 {
        self.with_snapshot(|snapshot| snapshot.generation)
    }

    /// Whether the last fetch failed.
    pub fn last_fetch_failed(&self) -> bool {
        self.with_snapshot(|snapshot| snapshot.last_error.is_some())
    }

    fn with_snapshot<T>(&self, read: impl FnOnce(&Snapshot) -> T) -> T {
        match self.snapshot.read() {
            Ok(snapshot) => read(&snapshot),
            Err(poisoned) => read(&poisoned.into_inner()),
        }
    }

    fn read(&self) -> (Arc<KeySet>, u64, bool) {
        let now = self.clock.now();
        self.with_snapshot(|snapshot| {
            let stale = !within(snapshot.fetched_at, snapshot.max_age, now);
            (snapshot.keys.clone(), snapshot.generation, stale)
        })
    }

    /// The current keys, fetching first when there are none yet or they are past `max-age`.
    ///
    /// # Errors
    /// When there are no keys at all and fetching fails. Past keys are kept, and used without
    /// waiting, while a fetch runs or when it fails.
    pub async fn keys(
        &self,
        source: &JwksSource,
        http: &reqwest::Client,
    ) -> Result<Arc<KeySet>, ProviderError> {
        let (keys, generation, stale) = self.read();
        if !stale {
            return Ok(keys);
        }
        if generation == 0 {
            return self.fetch_once(generation, source, http).await;
        }
        // Good keys past their max-age: refreshing them is worth no one's wait. The fetch
        // runs on, and is recorded, without this request.
        if let Ok(guard) = self.fetch_lock.clone().try_lock_owned() {
            // Its failure is logged by its task; these keys are kept meanwhile.
            let _running = self.start_fetch(guard, generation, source, http, true);
        }
        Ok(keys)
    }

    /// Called when a token names a `kid` that `seen` does not have: re-fetches unless another
    /// task already did, or the last fetch (failed or not) was less than the refetch interval
    /// ago; then the keys are returned as they are.
    ///
    /// # Errors
    /// When the fetch fails, or the one in flight does not finish within the provider timeout.
    pub async fn refetch_for_unknown_kid(
        &self,
        seen: &Arc<KeySet>,
        source: &JwksSource,
        http: &reqwest::Client,
    ) -> Result<Arc<KeySet>, ProviderError> {
        let (keys, generation, _) = self.read();
        if !Arc::ptr_eq(&keys, seen) {
            return Ok(keys);
        }
        self.fetch_once(generation, source, http).await
    }

    /// The answer a caller gets without a fetch: keys newer than `seen_generation`, or what
    /// there is when the last fetch was too recent. `None` when a fetch is due.
    fn without_fetch(&self, seen_generation: u64) -> Option<Result<Arc<KeySet>, ProviderError>> {
        let now = self.clock.now();
        self.with_snapshot(|snapshot| {
            if snapshot.generation != seen_generation {
                return Some(Ok(snapshot.keys.clone()));
            }
            if !within(snapshot.attempted_at, self.refetch_interval, now) {
                return None;
            }
            Some(if snapshot.generation > 0 {
                Ok(snapshot.keys.clone())
            } else {
                Err(snapshot.last_error.clone().unwrap_or_else(|| {
                    ProviderError::Unreachable("no JWKS fetched yet".to_owned())
                }))
            })
        })
    }

    async fn fetch_once(
        &self,
        seen_generation: u64,
        source: &JwksSource,
        http: &reqwest::Client,
    ) -> Result<Arc<KeySet>, ProviderError> {
        if let Some(answer) = self.without_fetch(seen_generation) {
            return answer;
        }
        // Single flight: one fetch runs; the others wait for it, at most the provider timeout.
        let Ok(guard) =
            tokio::time::timeout(self.timeout, self.fetch_lock.clone().lock_owned()).await
        else {
            return Err(ProviderError::Unreachable(
                "the JWKS fetch in flight did not finish within the provider timeout".to_owned(),
            ));
        };
        let fetch = match self.start_fetch(guard, seen_generation, source, http, false) {
            Ok(fetch) => fetch,
            Err(answer) => return answer,
        };
        fetch.await.unwrap_or_else(|error| {
            Err(ProviderError::Unreachable(format!(
                "the JWKS fetch failed: {error}"
            )))
        })
    }

    /// Starts the fetch on a task of its own holding `single_flight` until it recorded its
    /// result (a `refresh` of keys there are logs its failure). When none is due (another one
    /// brought newer keys, or the last one was too recent), the answer without one instead.
    fn start_fetch(
        &self,
        single_flight: tokio::sync::OwnedMutexGuard<()>,
        seen_generation: u64,
        source: &JwksSource,
        http: &reqwest::Client,
        refresh: bool,
    ) -> Result<FetchTask, Result<Arc<KeySet>, ProviderError>> {
        if let Some(answer) = self.without_fetch(seen_generation) {
            return Err(answer);
        }
        let record = Recorder {
            provider: self.provider.clone(),
            snapshot: self.snapshot.clone(),
            clock: self.clock.clone(),
            metrics: self.metrics.clone(),
            validated: self.validated.clone(),
            refresh,
        };
        let (timeout, source, http) = (self.timeout, source.clone(), http.clone());
        Ok(tokio::spawn(async move {
            let result = match tokio::time::timeout(timeout, fetch(&source, &http)).await {
                Ok(result) => result,
                Err(_) => Err(ProviderError::Unreachable(
                    "JWKS fetch timed out".to_owned(),
                )),
            };
            let recorded = record.fetched(result);
            drop(single_flight);
            recorded
        }))
    }
}

/// A fetch running on its own task, and what it brings.
type FetchTask = tokio::task::JoinHandle<Result<Arc<KeySet>, ProviderError>>;

/// What a fetch's task needs to record its result.
struct Recorder {
    provider: String,
    snapshot: Arc<RwLock<Snapshot>>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    validated: Arc<TokenCache>,
    /// A refresh of keys there are, which no request waits for.
    refresh: bool,
}

impl Recorder {
    /// Records a fetch, failed ones too (the rate limit counts them); a failed one keeps the
    /// keys there are.
    fn fetched(
        &self,
        result: Result<(KeySet, i64), ProviderError>,
    ) -> Result<Arc<KeySet>, ProviderError> {
        let label = JwksFetchLabels {
            provider: self.provider.clone(),
            result: if result.is_ok() { "ok" } else { "error" },
        };
        self.metrics.jwks_fetches.get_or_create(&label).inc();
        let now = self.clock.now();
        let mut snapshot = match self.snapshot.write() {
            Ok(snapshot) => snapshot,
            Err(poisoned) => poisoned.into_inner(),
        };
        snapshot.attempted_at = Some(now);
        match result {
            Ok((keys, max_age)) => {
                let keys = Arc::new(keys);
                let withdrawn = keys.withdraws_any_of(&snapshot.keys);
                snapshot.keys = keys.clone();
                snapshot.generation += 1;
                snapshot.fetched_at = Some(now);
                snapshot.max_age = max_age;
                snapshot.last_error = None;
                drop(snapshot);
                tracing::info!(provider = %self.provider, keys = keys.len(), "fetched JWKS");
                // A token a withdrawn key signed is refused from now on, not served from the
                // cache until its `exp` (a leaked key is withdrawn for that very reason).
                if withdrawn {
                    self.validated.forget_all();
                    tracing::info!(provider = %self.provider, "a key was withdrawn: the tokens validated so far are checked again");
                }
                Ok(keys)
            }
            Err(error) => {
                snapshot.last_error = Some(error.clone());
                drop(snapshot);
                if self.refresh {
                    tracing::warn!(provider = %self.provider, %error, "JWKS refresh failed; keeping the keys we have");
                }
                Err(error)
            }
        }
    }
}

/// A fetched key set is used only when it holds a usable key: an empty set (`{"keys":[]}`,
/// only `oct` or encryption keys) is a failed fetch, never a replacement.
fn usable(keys: KeySet) -> Result<KeySet, ProviderError> {
    if keys.is_empty() {
        return Err(ProviderError::BadResponse(
            "the JWK set holds no usable signature key".to_owned(),
        ));
    }
    Ok(keys)
}

async fn fetch(
    source: &JwksSource,
    http: &reqwest::Client,
) -> Result<(KeySet, i64), ProviderError> {
    match source {
        JwksSource::File(path) => {
            let bytes = crate::named_file::read_blocking(path)
                .await
                .map_err(|error| {
                    ProviderError::BadResponse(format!("jwks_file {}: {error}", path.display()))
                })?;
            let keys = KeySet::from_jwks_json(&bytes)
                .map_err(|error| ProviderError::BadResponse(error.to_string()))?;
            Ok((usable(keys)?, DEFAULT_MAX_AGE))
        }
        JwksSource::Url(url) => {
            let response = http
                .get(url)
                .send()
                .await
                .map_err(|error| ProviderError::Unreachable(error.to_string()))?;
            if !response.status().is_success() {
                return Err(ProviderError::BadResponse(format!(
                    "JWKS answered {}",
                    response.status()
                )));
            }
            let max_age = response
                .headers()
                .get(reqwest::header::CACHE_CONTROL)
                .and_then(|value| value.to_str().ok())
                .and_then(max_age_of)
                .map_or(DEFAULT_MAX_AGE, |max_age| {
                    i64::try_from(max_age.as_secs()).unwrap_or(LONGEST_MAX_AGE)
                })
                .min(LONGEST_MAX_AGE);
            let bytes = super::client::read_answer(response, "JWKS").await?;
            let keys = KeySet::from_jwks_json(&bytes)
                .map_err(|error| ProviderError::BadResponse(error.to_string()))?;
            Ok((usable(keys)?, max_age))
        }
    }
}

/// `max-age` of a `Cache-Control` value; `no-cache` / `no-store` mean zero.
pub fn max_age_of(cache_control: &str) -> Option<Duration> {
    let mut result = None;
    for directive in cache_control.split(',').map(str::trim) {
        let lowered = directive.to_ascii_lowercase();
        if lowered == "no-cache" || lowered == "no-store" {
            return Some(Duration::ZERO);
        }
        if let Some(seconds) = lowered.strip_prefix("max-age=") {
            result = seconds
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_max_age_is_read() {
        assert_eq!(
            max_age_of("public, max-age=300"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(max_age_of("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age_of("public"), None);
        assert_eq!(max_age_of("max-age=x"), None);
    }
}
