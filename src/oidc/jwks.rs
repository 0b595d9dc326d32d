//! A provider's keys: fetched from `jwks_uri` (honouring `Cache-Control: max-age`) or read from
//! a file, kept as a snapshot, and re-fetched on an unknown `kid` at most once per interval and
//! by one task at a time (single flight), so key rotation needs no restart and a flood of
//! made-up `kid`s cannot turn into a flood of fetches.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use super::ProviderError;
use crate::jose::KeySet;
use crate::metrics::{JwksFetchLabels, Metrics};

/// Keys are re-fetched after this long when the provider gives no `max-age`.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(3600);
/// …and never kept longer than this, whatever it says.
const LONGEST_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

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
    generation: u64,
    fetched_at: Option<Instant>,
    max_age: Duration,
}

/// The cached keys of one provider.
pub struct JwksCache {
    provider: String,
    snapshot: RwLock<Snapshot>,
    fetch_lock: tokio::sync::Mutex<()>,
    refetch_interval: Duration,
    metrics: Arc<Metrics>,
}

impl JwksCache {
    /// An empty cache; the first use fetches.
    pub fn new(provider: String, refetch_interval: Duration, metrics: Arc<Metrics>) -> Self {
        let snapshot = Snapshot {
            keys: Arc::new(KeySet::default()),
            generation: 0,
            fetched_at: None,
            max_age: DEFAULT_MAX_AGE,
        };
        Self {
            provider,
            snapshot: RwLock::new(snapshot),
            fetch_lock: tokio::sync::Mutex::new(()),
            refetch_interval,
            metrics,
        }
    }

    fn read(&self) -> (Arc<KeySet>, u64, bool) {
        match self.snapshot.read() {
            Ok(snapshot) => {
                let stale = snapshot
                    .fetched_at
                    .is_none_or(|at| at.elapsed() >= snapshot.max_age);
                (snapshot.keys.clone(), snapshot.generation, stale)
            }
            Err(poisoned) => {
                let snapshot = poisoned.into_inner();
                (snapshot.keys.clone(), snapshot.generation, true)
            }
        }
    }

    /// The current keys, fetching first when there are none yet or they are past `max-age`.
    ///
    /// # Errors
    /// When there are no keys at all and fetching fails. Stale keys are kept when a refresh
    /// fails.
    pub async fn keys(
        &self,
        source: &JwksSource,
        http: &reqwest::Client,
    ) -> Result<Arc<KeySet>, ProviderError> {
        let (keys, generation, stale) = self.read();
        if !stale {
            return Ok(keys);
        }
        match self.fetch_once(generation, source, http, false).await {
            Ok(fresh) => Ok(fresh),
            Err(error) if generation > 0 => {
                tracing::warn!(provider = %self.provider, %error, "JWKS refresh failed; keeping the keys we have");
                Ok(keys)
            }
            Err(error) => Err(error),
        }
    }

    /// Called when a token names a `kid` that `seen` does not have: re-fetches unless another
    /// task already did, or the last fetch was less than the refetch interval ago.
    ///
    /// # Errors
    /// When the fetch fails.
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
        self.fetch_once(generation, source, http, true).await
    }

    async fn fetch_once(
        &self,
        seen_generation: u64,
        source: &JwksSource,
        http: &reqwest::Client,
        rate_limited: bool,
    ) -> Result<Arc<KeySet>, ProviderError> {
        let _single_flight = self.fetch_lock.lock().await;
        {
            let (keys, generation, _) = self.read();
            if generation != seen_generation {
                return Ok(keys);
            }
            if rate_limited {
                let recent = self
                    .snapshot
                    .read()
                    .ok()
                    .and_then(|snapshot| snapshot.fetched_at)
                    .is_some_and(|at| at.elapsed() < self.refetch_interval);
                if recent {
                    return Ok(keys);
                }
            }
        }
        let result = fetch(source, http).await;
        let label = JwksFetchLabels {
            provider: self.provider.clone(),
            result: if result.is_ok() { "ok" } else { "error" },
        };
        self.metrics.jwks_fetches.get_or_create(&label).inc();
        let (keys, max_age) = result?;
        let keys = Arc::new(keys);
        if let Ok(mut snapshot) = self.snapshot.write() {
            snapshot.keys = keys.clone();
            snapshot.generation += 1;
            snapshot.fetched_at = Some(Instant::now());
            snapshot.max_age = max_age;
        }
        tracing::info!(provider = %self.provider, keys = keys.len(), "fetched JWKS");
        Ok(keys)
    }
}

async fn fetch(
    source: &JwksSource,
    http: &reqwest::Client,
) -> Result<(KeySet, Duration), ProviderError> {
    match source {
        JwksSource::File(path) => {
            let bytes = tokio::fs::read(path).await.map_err(|error| {
                ProviderError::BadResponse(format!("jwks_file {}: {error}", path.display()))
            })?;
            let keys = KeySet::from_jwks_json(&bytes)
                .map_err(|error| ProviderError::BadResponse(error.to_string()))?;
            Ok((keys, DEFAULT_MAX_AGE))
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
                .unwrap_or(DEFAULT_MAX_AGE)
                .min(LONGEST_MAX_AGE);
            let bytes = response
                .bytes()
                .await
                .map_err(|error| ProviderError::Unreachable(error.to_string()))?;
            let keys = KeySet::from_jwks_json(&bytes)
                .map_err(|error| ProviderError::BadResponse(error.to_string()))?;
            Ok((keys, max_age))
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
