//! Every metric Tollgate exports, defined once (SPEC §8). Rendered as Prometheus text by the
//! admin listener.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
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

/// Labels of `tollgate_tokens_issued_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrantLabels {
    /// The grant type.
    pub grant: &'static str,
}

/// The metrics registry and handles to each metric.
pub struct Metrics {
    registry: Registry,
    /// Requests by role and result.
    pub requests: Family<RequestLabels, Counter>,
    /// Time to reach an auth decision.
    pub decision_seconds: Histogram,
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
}

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
        let decision_seconds = Histogram::new(buckets);
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
        Self {
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
        self.requests
            .get_or_create(&RequestLabels { role, result })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}
