//! What stops Tollgate from starting, or a new config from going live.

use std::net::SocketAddr;

use crate::config::ConfigProblem;

/// Building the app from a config, or binding its listeners, failed. The message is the step
/// that failed; the cause is its `source`.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The token service's signing key (or a retired key) could not be read or made.
    #[error("loading the token service's signing key")]
    SigningKey(#[source] crate::jose::SigningKeyError),
    /// A provider's HTTP client could not be built.
    #[error("building the HTTP client")]
    HttpClient(#[source] reqwest::Error),
    /// `session.store = "redis"` without `session.redis_url`.
    #[error("session.redis_url is required with store = \"redis\"")]
    SessionRedisMissing,
    /// `token_service.store = "redis"` without `session.redis_url`.
    #[error("session.redis_url is required with token_service.store = \"redis\"")]
    TokenStoreRedisMissing,
    /// The Redis URL or CA could not be used.
    #[error("session.redis_url: {0}")]
    Redis(String),
    /// A listener could not be bound.
    #[error("binding {address}")]
    Bind {
        /// The configured address.
        address: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A provider's `jwks_file` could not be read or holds no usable key.
    #[error("provider {provider}: reading jwks_file")]
    KeyFile {
        /// The provider's `name`.
        provider: String,
        /// Why.
        #[source]
        source: crate::oidc::ProviderError,
    },
    /// The public listener's TLS configuration was refused.
    #[error("serving https")]
    Tls(#[source] crate::tls::TlsError),
    /// The OpenTelemetry exporter could not be built.
    #[error("starting telemetry")]
    Telemetry(#[source] crate::telemetry::TelemetryError),
    /// The worker threads could not be started.
    #[error("starting workers")]
    Workers(#[source] std::io::Error),
    /// A bound listener's address could not be read.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A new config was refused; the running one stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The config (or a file it names) has problems, or changes what needs a restart.
    #[error("{} problem(s) in the new config", .0.len())]
    Refused(Vec<ConfigProblem>),
    /// The new config is valid but could not be built.
    #[error("building the new config")]
    Build(#[source] AppError),
}

/// `error` and its causes, joined by ": " (as `anyhow` prints `{:#}`).
pub(super) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}
