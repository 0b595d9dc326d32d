//! Every metric Tollgate exports, defined once (SPEC §8). Rendered as Prometheus text by the
//! admin listener.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

/// Labels of `tollgate_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `forward_auth`, `validate`, `token_service`, …
    pub role: &'static str,
    /// `allow`, `skip`, `unauthenticated`, `forbidden`, `bad_request`, `error`, …
    pub result: &'static str,
}

/// Labels naming a provider.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    /// The provider's name.
    pub provider: String,
}

/// Labels of `tollgate_jwks_fetches_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JwksFetchLabels {
    /// The provider's name.
    pub provider: String,
    /// `ok` or `error`.
    pub result: &'static str,
}

/// Labels of counters by outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `ok` or `error`.
    pub result: &'static str,
}

/// Labels of `tollgate_trace_spans_dropped_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DroppedSpanLabels {
    /// `queue_full` or `export_failed`.
    pub reason: &'static str,
}

/// Labels of `tollgate_tokens_issued_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrantLabels {
    /// The grant type.
    pub grant: &'static str,
}

/// Labels of `tollgate_config_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConfigLabels {
    /// SHA-256 (hex) of the live config file's text.
    pub sha256: String,
}

/// The metrics registry and handles to each metric.
pub struct Metrics {
    registry: Registry,
    /// `log_lines_dropped_total`, caught up from `logging::dropped_lines` at each scrape.
    log_lines_dropped: Counter,
    /// Requests by role and result.
    pub requests: Family<RequestLabels, Counter>,
    /// Time to reach an auth decision.
    pub decision_seconds: LatencyHistogram,
    /// Completed browser logins.
    pub signins: Family<ProviderLabels, Counter>,
    /// Sign-outs.
    pub signouts: Counter,
    /// Failed code exchanges at a provider.
    pub code_exchange_errors: Family<ProviderLabels, Counter>,
    /// JWKS fetches by provider and result.
    pub jwks_fetches: Family<JwksFetchLabels, Counter>,
    /// Tokens issued by the token service, by grant.
    pub tokens_issued: Family<GrantLabels, Counter>,
    /// Token refreshes by outcome.
    pub refreshes: Family<OutcomeLabels, Counter>,
    /// Session store operations that failed (Redis unreachable or too slow).
    pub session_store_errors: Counter,
    /// Sessions created (logins).
    pub sessions_created: Counter,
    /// Sessions ended (logout, expiry, idle timeout, admin, back-channel logout).
    pub sessions_ended: Counter,
    /// Sessions held by a server-side store, set when metrics are rendered.
    pub sessions_active: Gauge,
    /// Redis's invalidations of a session this process kept a copy of (client-side caching):
    /// how other replicas' changes and ends reach this one.
    pub session_cache_invalidations: Counter,
    /// Config loads (at start and on SIGHUP) by outcome: `ok` or `error`.
    pub config_reloads: Family<OutcomeLabels, Counter>,
    /// When the live config was loaded (Unix seconds).
    pub config_last_reload_success: Gauge,
    /// One series, 1, labelled with the live config's SHA-256.
    config_info: Family<ConfigLabels, Gauge>,
    /// The live config's label, to remove its series when another goes live.
    live_config: std::sync::Mutex<Option<ConfigLabels>>,
    /// Trace spans dropped instead of exported, by reason.
    trace_spans_dropped: Family<DroppedSpanLabels, Counter>,
    /// Handles to the hot `requests` series (in `HOT_REQUESTS`' order), resolved once so the
    /// decision path takes no lock. Found by comparing the two words: a dozen short ones,
    /// most told apart by their length, cost less than hashing them (about 150 instructions
    /// with FNV-1a, on every request).
    hot_requests: Vec<((&'static str, &'static str), Counter)>,
}

/// The `requests` series of the forward-auth and validate paths.
const HOT_REQUESTS: &[(&str, &str)] = &[
    ("forward_auth", "allow"),
    ("forward_auth", "skip"),
    ("forward_auth", "redirect"),
    ("forward_auth", "unauthenticated"),
    ("forward_auth", "forbidden"),
    ("validate", "allow"),
    ("proxy", "allow"),
    ("proxy", "pass"),
    ("proxy", "skip"),
    ("proxy", "login_redirect"),
    ("proxy", "unauthenticated"),
    ("validate", "unauthenticated"),
];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tollgate");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "Requests by role and result", requests.clone());
        let buckets = [
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
        ];
        let decision_seconds = LatencyHistogram::new(&buckets);
        registry.register(
            "auth_decision_seconds",
            "Time to reach an authentication decision",
            decision_seconds.clone(),
        );
        let signins = Family::<ProviderLabels, Counter>::default();
        registry.register("signins", "Completed browser logins", signins.clone());
        let signouts = Counter::default();
        registry.register("signouts", "Sign-outs", signouts.clone());
        let code_exchange_errors = Family::<ProviderLabels, Counter>::default();
        registry.register(
            "code_exchange_errors",
            "Failed authorization code exchanges",
            code_exchange_errors.clone(),
        );
        let jwks_fetches = Family::<JwksFetchLabels, Counter>::default();
        registry.register(
            "jwks_fetches",
            "JWKS fetches by provider and result",
            jwks_fetches.clone(),
        );
        let tokens_issued = Family::<GrantLabels, Counter>::default();
        registry.register(
            "tokens_issued",
            "Tokens issued by the token service, by grant",
            tokens_issued.clone(),
        );
        let refreshes = Family::<OutcomeLabels, Counter>::default();
        registry.register("refreshes", "Token refreshes by outcome", refreshes.clone());
        let session_store_errors = Counter::default();
        registry.register(
            "session_store_errors",
            "Session store operations that failed",
            session_store_errors.clone(),
        );
        let sessions_created = Counter::default();
        registry.register(
            "sessions_created",
            "Sessions created (logins)",
            sessions_created.clone(),
        );
        let sessions_ended = Counter::default();
        registry.register(
            "sessions_ended",
            "Sessions ended: logout, expiry, idle timeout, admin, back-channel logout",
            sessions_ended.clone(),
        );
        let session_cache_invalidations = Counter::default();
        registry.register(
            "session_cache_invalidations",
            "Sessions Redis said changed or ended, dropped from this process's copies",
            session_cache_invalidations.clone(),
        );
        let sessions_active = Gauge::default();
        registry.register(
            "sessions_active",
            "Sessions held by the memory store",
            sessions_active.clone(),
        );
        let log_lines_dropped = Counter::default();
        registry.register(
            "log_lines_dropped",
            "Log lines dropped because the log reader fell behind (never waited for)",
            log_lines_dropped.clone(),
        );
        let config_reloads = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Config loads (start and SIGHUP) by result",
            config_reloads.clone(),
        );
        let config_last_reload_success = Gauge::default();
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "When the live config was loaded (Unix time)",
            config_last_reload_success.clone(),
        );
        let config_info = Family::<ConfigLabels, Gauge>::default();
        registry.register(
            "config_info",
            "The live config: the SHA-256 of its file's text",
            config_info.clone(),
        );
        let trace_spans_dropped = Family::<DroppedSpanLabels, Counter>::default();
        registry.register(
            "trace_spans_dropped",
            "Trace spans dropped instead of exported: queue_full (the exporter fell behind) or \
             export_failed (the collector refused or did not answer)",
            trace_spans_dropped.clone(),
        );
        let hot_requests = HOT_REQUESTS
            .iter()
            .map(|&(role, result)| {
                (
                    (role, result),
                    requests
                        .get_or_create(&RequestLabels { role, result })
                        .clone(),
                )
            })
            .collect();
        Self {
            config_reloads,
            config_last_reload_success,
            config_info,
            live_config: std::sync::Mutex::new(None),
            log_lines_dropped,
            session_store_errors,
            refreshes,
            sessions_created,
            sessions_ended,
            session_cache_invalidations,
            sessions_active,
            trace_spans_dropped,
            hot_requests,
            registry,
            requests,
            decision_seconds,
            signins,
            signouts,
            code_exchange_errors,
            jwks_fetches,
            tokens_issued,
        }
    }

    /// Counts one request.
    pub fn request(&self, role: &'static str, result: &'static str) {
        crate::telemetry::with_current(|span| span.counted(role, result));
        if let Some((_, counter)) = self
            .hot_requests
            .iter()
            .find(|((hot_role, hot_result), _)| *hot_role == role && *hot_result == result)
        {
            counter.inc();
            return;
        }
        self.requests
            .get_or_create(&RequestLabels { role, result })
            .inc();
    }

    /// Counts a refusal by `role` in `tollgate_requests_total` and names it on the request's
    /// span; answers its reason for the decision line (`refused!` writes both).
    pub fn counted_refusal<'a>(
        &self,
        role: &'static str,
        refusal: &'a dyn crate::http::rejection::Refused,
    ) -> std::borrow::Cow<'a, str> {
        self.request(role, refusal.label());
        let reason = refusal.reason();
        crate::telemetry::with_current(|span| span.reason(&reason));
        reason
    }

    /// The counter of trace spans dropped for `reason` (`queue_full`, `export_failed`).
    pub fn spans_dropped(&self, reason: &'static str) -> Counter {
        self.trace_spans_dropped
            .get_or_create(&DroppedSpanLabels { reason })
            .clone()
    }

    /// Records that the config whose text has this SHA-256 went live at `now` (Unix seconds).
    pub fn config_live(&self, sha256: &str, now: i64) {
        self.config_reloads
            .get_or_create(&OutcomeLabels { result: "ok" })
            .inc();
        self.config_last_reload_success.set(now);
        let labels = ConfigLabels {
            sha256: sha256.to_owned(),
        };
        if let Ok(mut live) = self.live_config.lock() {
            if let Some(previous) = live.take()
                && previous != labels
            {
                self.config_info.remove(&previous);
            }
            self.config_info.get_or_create(&labels).set(1);
            *live = Some(labels);
        }
    }

    /// Records a config refused on reload (the live one stays).
    pub fn config_refused(&self) {
        self.config_reloads
            .get_or_create(&OutcomeLabels { result: "error" })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        // The writer counts its drops; the counter catches up at each scrape.
        self.log_lines_dropped
            .inner()
            .fetch_max(crate::logging::dropped_lines(), Ordering::Relaxed);
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

/// A latency histogram with lock-free atomic buckets, sharded per thread: the decision path
/// observes it on every request, and prometheus-client's own histogram takes a mutex per
/// observation; one shared set of atomics would bounce its cache lines between cores.
#[derive(Clone, Debug)]
pub struct LatencyHistogram {
    inner: Arc<HistogramInner>,
}

/// Most buckets a `LatencyHistogram` has, `+Inf` included.
const MAX_BUCKETS: usize = 16;
/// Shards; threads are spread over them round robin.
const SHARDS: usize = 8;

/// One thread group's observations, on cache lines of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    /// Observations per bucket (not cumulative; the encoder adds them up).
    counts: [AtomicU64; MAX_BUCKETS],
    sum_nanos: AtomicU64,
}

#[derive(Debug)]
struct HistogramInner {
    /// Upper bounds in seconds, the last one infinite (rendered `+Inf`).
    bounds: Vec<f64>,
    /// Upper bounds in nanoseconds, for the comparison on the hot path.
    bounds_nanos: Vec<u64>,
    shards: Vec<Shard>,
}

fn shard_index() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|index| *index)
}

impl LatencyHistogram {
    /// A histogram with these upper bounds in seconds (at most 15), plus `+Inf`.
    pub fn new(bounds_seconds: &[f64]) -> Self {
        let mut bounds: Vec<f64> = bounds_seconds
            .iter()
            .copied()
            .take(MAX_BUCKETS - 1)
            .collect();
        bounds.push(f64::INFINITY);
        let bounds_nanos = bounds
            .iter()
            .map(|seconds| (seconds * 1e9).min(u64::MAX as f64) as u64)
            .collect();
        let shards = (0..SHARDS).map(|_| Shard::default()).collect();
        Self {
            inner: Arc::new(HistogramInner {
                bounds,
                bounds_nanos,
                shards,
            }),
        }
    }

    /// Records one observation.
    pub fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let inner = &self.inner;
        let Some(shard) = inner.shards.get(shard_index()) else {
            return;
        };
        if let Some(index) = inner.bounds_nanos.iter().position(|bound| nanos <= *bound)
            && let Some(count) = shard.counts.get(index)
        {
            count.fetch_add(1, Ordering::Relaxed);
        }
        shard.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let inner = &self.inner;
        let buckets: Vec<(f64, u64)> = inner
            .bounds
            .iter()
            .enumerate()
            .map(|(index, bound)| {
                let count = inner
                    .shards
                    .iter()
                    .filter_map(|shard| shard.counts.get(index))
                    .map(|count| count.load(Ordering::Relaxed))
                    .sum();
                (*bound, count)
            })
            .collect();
        let count = buckets.iter().map(|(_, count)| count).sum();
        let sum = inner
            .shards
            .iter()
            .map(|shard| shard.sum_nanos.load(Ordering::Relaxed))
            .sum::<u64>() as f64
            / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Records a refusal where it happens: its one count in `tollgate_requests_total` and its one
/// decision line (`warn` when the operator should look at it, else `info`), logged, like the
/// surface's other lines, under the calling module (`TOLLGATE_LOG=warn,tollgate::proxy=info`
/// keeps the proxy's refusals). `refused!(metrics, role, &refusal)`, or with the line's other
/// fields (`line.role`, its route, its request id): `refused!(metrics, line = line, &refusal)`.
#[macro_export]
macro_rules! refused {
    ($metrics:expr, line = $line:expr, $refusal:expr $(,)?) => {{
        let refusal: &dyn $crate::http::rejection::Refused = $refusal;
        let line: $crate::logging::decision::Decision<'_> = $line;
        let reason = $metrics.counted_refusal(line.role, refusal);
        let line = $crate::logging::decision::Decision {
            result: refusal.label(),
            reason: Some(&reason),
            ..line
        };
        if refusal.is_failure() {
            $crate::log_decision!(warn, line);
        } else {
            $crate::log_decision!(info, line);
        }
    }};
    ($metrics:expr, $role:expr, $refusal:expr $(,)?) => {
        $crate::refused!(
            $metrics,
            line = $crate::logging::decision::Decision {
                role: $role,
                ..::core::default::Default::default()
            },
            $refusal
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_histogram_renders_cumulative_buckets_sum_and_count() {
        let metrics = Metrics::new();
        for micros in [50, 200, 3000] {
            metrics
                .decision_seconds
                .observe(Duration::from_micros(micros));
        }
        let text = metrics.render();
        for line in [
            "tollgate_auth_decision_seconds_bucket{le=\"0.0001\"} 1",
            "tollgate_auth_decision_seconds_bucket{le=\"0.00025\"} 2",
            "tollgate_auth_decision_seconds_bucket{le=\"0.0025\"} 2",
            "tollgate_auth_decision_seconds_bucket{le=\"0.005\"} 3",
            "tollgate_auth_decision_seconds_bucket{le=\"+Inf\"} 3",
            "tollgate_auth_decision_seconds_count 3",
            "tollgate_auth_decision_seconds_sum 0.00325",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
