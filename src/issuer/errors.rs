//! RFC 6749 §5.2 error responses of the token endpoint.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An OAuth 2.0 error, serialised as RFC 6749 §5.2 JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssuerError {
    /// §5.2 `invalid_request`.
    #[error("invalid_request: {0}")]
    InvalidRequest(String),
    /// §5.2 `invalid_client` (401).
    #[error("invalid_client")]
    InvalidClient {
        /// Whether the client tried HTTP Basic (RFC 6749 §5.2 makes `WWW-Authenticate` a must
        /// then; every 401 carries it anyway).
        used_basic: bool,
    },
    /// §5.2 `invalid_grant`.
    #[error("invalid_grant: {0}")]
    InvalidGrant(String),
    /// §5.2 `unauthorized_client`.
    #[error("unauthorized_client")]
    UnauthorizedClient,
    /// §5.2 `unsupported_grant_type`.
    #[error("unsupported_grant_type")]
    UnsupportedGrantType,
    /// §5.2 `invalid_scope`.
    #[error("invalid_scope")]
    InvalidScope,
    /// Too many failed client authentications (429, with `Retry-After`).
    #[error("too many failed attempts")]
    TooManyAttempts,
    /// A local failure (500).
    #[error("server_error")]
    ServerError,
    /// The token service's store cannot be reached (503, `Retry-After`); nothing was issued.
    /// Why is for the refusal's log line, never for the client.
    #[error("temporarily_unavailable: {0}")]
    Unavailable(String),
}

impl From<super::state::StateError> for IssuerError {
    fn from(error: super::state::StateError) -> Self {
        Self::Unavailable(error.to_string())
    }
}

impl crate::http::rejection::Refused for IssuerError {
    fn label(&self) -> &'static str {
        self.code()
    }

    fn reason(&self) -> std::borrow::Cow<'_, str> {
        std::borrow::Cow::Owned(self.to_string())
    }

    fn is_failure(&self) -> bool {
        matches!(self, Self::ServerError | Self::Unavailable(_))
    }
}

impl IssuerError {
    /// Whether the store could not be reached (a 503, worth retrying), not a refusal.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    /// The RFC 6749 error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::InvalidClient { .. } | Self::TooManyAttempts => "invalid_client",
            Self::InvalidGrant(_) => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::ServerError => "server_error",
            Self::Unavailable(_) => "temporarily_unavailable",
        }
    }
}

impl IntoResponse for IssuerError {
    fn into_response(self) -> Response {
        let status = match self {
            Self::InvalidClient { .. } => StatusCode::UNAUTHORIZED,
            Self::TooManyAttempts => StatusCode::TOO_MANY_REQUESTS,
            Self::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        let mut body = serde_json::json!({ "error": self.code() });
        if let Self::InvalidRequest(description) | Self::InvalidGrant(description) = &self {
            body["error_description"] =
                serde_json::Value::String(crate::untrusted::oauth_description(description));
        }
        if matches!(self, Self::TooManyAttempts) {
            body["error_description"] =
                serde_json::Value::String("too many failed attempts; try again later".to_owned());
        }
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        // RFC 6749 §5.1 asks for it beside `no-store`, for HTTP/1.0 caches.
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        if matches!(self, Self::TooManyAttempts) {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        }
        if matches!(self, Self::Unavailable(_)) {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        // Every 401 names a scheme (RFC 9110 §15.5.2), whichever way the client tried (RFC 6749
        // §5.2 makes it a must after HTTP Basic; after the form body, the 401 says that Basic
        // is the scheme to use).
        if matches!(self, Self::InvalidClient { .. }) {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"tollgate\""),
            );
        }
        response
    }
}
