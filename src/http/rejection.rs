//! `Rejection`: the one place where a failure becomes a status, headers and a body (the table in
//! ARCHITECTURE.md). The body never carries internal detail, tokens or secrets. `Refused` is
//! what every surface's refusal (this one, the token service's OAuth errors and `/authorize`
//! refusals, the admin API's and back-channel logout's answers, the proxy's "no route") tells
//! the metric and the log line, which `Metrics::refused` records in one place (ARCHITECTURE.md,
//! "Refusals").

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Why a request was not let through, as the caller will be told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The caller sent something malformed; the message names it.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// No valid credential.
    #[error("unauthenticated")]
    Unauthenticated,
    /// A valid credential, but a requirement failed; the message names the requirement.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// RFC 6750 §3.1 `invalid_request`: the bearer token was sent ambiguously (two
    /// `Authorization` headers, or in the header and the query); the message names how.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// RFC 6750 §3.1 `invalid_token`: a bearer token was sent and is not valid.
    #[error("invalid token")]
    InvalidToken,
    /// RFC 6750 §3.1 `insufficient_scope`: a valid bearer token, but a requirement failed;
    /// the message names the requirement.
    #[error("insufficient scope: {0}")]
    InsufficientScope(String),
    /// The identity provider could not be reached or misbehaved.
    #[error("identity provider unavailable")]
    ProviderUnavailable,
    /// The application behind a route could not be reached.
    #[error("upstream unavailable")]
    UpstreamUnavailable,
    /// The application behind a route did not answer in time.
    #[error("upstream timed out")]
    UpstreamTimeout,
    /// The caller failed too often lately; the message says when to try again.
    #[error("too many requests: {0}")]
    TooManyRequests(String),
    /// The session store cannot be reached: nothing is passed, nothing half-written.
    #[error("session store unavailable")]
    StoreUnavailable,
    /// A bug or a local failure.
    #[error("internal error")]
    Internal,
}

impl Rejection {
    /// The status code of this rejection.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthenticated | Self::InvalidToken => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::InsufficientScope(_) => StatusCode::FORBIDDEN,
            Self::ProviderUnavailable | Self::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The title of the page a browser is shown.
    pub fn title(&self) -> &'static str {
        match self {
            Self::BadRequest(_) | Self::InvalidRequest(_) => "Bad request",
            Self::Unauthenticated | Self::InvalidToken => "Sign-in required",
            Self::Forbidden(_) | Self::InsufficientScope(_) => "Access refused",
            Self::ProviderUnavailable => "The identity provider is unreachable",
            Self::UpstreamUnavailable => "The application is unavailable",
            Self::UpstreamTimeout => "The application did not answer",
            Self::TooManyRequests(_) => "Too many attempts",
            Self::StoreUnavailable => "Temporarily unavailable",
            Self::Internal => "Something went wrong",
        }
    }

    /// Whether the operator should look at it (a provider, an upstream or a store failing,
    /// or a bug), rather than a routine refusal of a caller: its log line is a warning.
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            Self::UpstreamUnavailable
                | Self::UpstreamTimeout
                | Self::StoreUnavailable
                | Self::ProviderUnavailable
                | Self::Internal
        )
    }

    /// The metrics label of this rejection.
    pub fn result_label(&self) -> &'static str {
        match self {
            Self::BadRequest(_) | Self::InvalidRequest(_) => "bad_request",
            Self::Unauthenticated | Self::InvalidToken => "unauthenticated",
            Self::Forbidden(_) | Self::InsufficientScope(_) => "forbidden",
            Self::ProviderUnavailable => "provider_unavailable",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::TooManyRequests(_) => "rate_limited",
            Self::StoreUnavailable => "store_unavailable",
            Self::Internal => "error",
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let body = match &self {
            Self::BadRequest(message) | Self::InvalidRequest(message) => {
                format!("400 Bad Request: {message}\n")
            }
            Self::Unauthenticated => "401 Unauthorized: no valid credential\n".to_owned(),
            Self::InvalidToken => "401 Unauthorized: the bearer token is not valid\n".to_owned(),
            Self::Forbidden(message) | Self::InsufficientScope(message) => {
                format!("403 Forbidden: {message}\n")
            }
            Self::ProviderUnavailable => {
                "502 Bad Gateway: the identity provider is unreachable\n".to_owned()
            }
            Self::UpstreamUnavailable => {
                "502 Bad Gateway: the application behind this address is unavailable\n".to_owned()
            }
            Self::UpstreamTimeout => {
                "504 Gateway Timeout: the application behind this address did not answer in time\n"
                    .to_owned()
            }
            Self::StoreUnavailable => {
                "503 Service Unavailable: the store of sessions and tokens cannot be read right now; try again shortly\n"
                    .to_owned()
            }
            Self::TooManyRequests(message) => format!("429 Too Many Requests: {message}\n"),
            Self::Internal => "500 Internal Server Error\n".to_owned(),
        };
        let refusal = super::pages::RefusalPage {
            error: self.result_label(),
            title: self.title(),
            message: body
                .split_once(": ")
                .map_or(body.trim(), |(_, message)| message.trim())
                .to_owned(),
        };
        let mut response = super::pages::plain_refusal(self.status(), body, refusal);
        let headers = response.headers_mut();
        // RFC 6750 §3: no error code without a credential; the code when a bearer token failed.
        let challenge = match self {
            Self::Unauthenticated => Some("Bearer"),
            Self::InvalidRequest(_) => Some("Bearer error=\"invalid_request\""),
            Self::InvalidToken => Some("Bearer error=\"invalid_token\""),
            Self::InsufficientScope(_) => Some("Bearer error=\"insufficient_scope\""),
            _ => None,
        };
        if matches!(self, Self::TooManyRequests(_)) {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        }
        if let Some(challenge) = challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

/// What a refusal tells the metric and the one log line, whichever surface refused: every
/// surface's refusal type implements it, and `Metrics::refused` records it.
pub trait Refused {
    /// The `result` label of `tollgate_requests_total` and of the log line.
    fn label(&self) -> &'static str;
    /// Why, for the operator (never a token or a secret; never sent to the caller).
    fn reason(&self) -> std::borrow::Cow<'_, str>;
    /// Whether the operator should look at it (an upstream or a store failing), rather than
    /// a routine refusal of a caller.
    fn is_failure(&self) -> bool {
        false
    }
}

/// A request refused with a `Rejection`, and why (for the log line and the span, never for the
/// caller, who gets the rejection's own text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What the caller is told.
    pub rejection: Rejection,
    /// Why, for the operator.
    pub reason: String,
    /// `Set-Cookie` values the answer carries all the same: a session refreshed before the
    /// request was refused (a requirement, the upstream failing) must reach the browser, or
    /// its next request would spend the rotated-away refresh token.
    pub set_cookies: Vec<String>,
}

impl Refusal {
    /// `rejection`, for `reason`.
    pub fn new(rejection: Rejection, reason: impl Into<String>) -> Self {
        Self {
            rejection,
            reason: reason.into(),
            set_cookies: Vec::new(),
        }
    }

    /// This refusal, answered with `set_cookies` too.
    #[must_use]
    pub fn with_cookies(mut self, set_cookies: Vec<String>) -> Self {
        self.set_cookies = set_cookies;
        self
    }
}

/// A rejection whose own text says why (a malformed request names what was malformed).
impl From<Rejection> for Refusal {
    fn from(rejection: Rejection) -> Self {
        let reason = rejection.to_string();
        Self::new(rejection, reason)
    }
}

/// The `(rejection, reason)` pairs the login flow answers with.
impl From<(Rejection, String)> for Refusal {
    fn from((rejection, reason): (Rejection, String)) -> Self {
        Self::new(rejection, reason)
    }
}

impl Refused for Refusal {
    fn label(&self) -> &'static str {
        self.rejection.result_label()
    }

    fn reason(&self) -> std::borrow::Cow<'_, str> {
        std::borrow::Cow::Borrowed(&self.reason)
    }

    fn is_failure(&self) -> bool {
        self.rejection.is_failure()
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = self.rejection.into_response();
        append_set_cookies(&mut response, &self.set_cookies);
        response
    }
}

/// Appends `set_cookies` to `response` as `Set-Cookie` headers (values Tollgate made; one that
/// could not be a header is left out).
pub fn append_set_cookies(response: &mut Response, set_cookies: &[String]) {
    for cookie in set_cookies {
        if let Ok(value) = axum::http::HeaderValue::from_str(cookie) {
            response
                .headers_mut()
                .append(axum::http::header::SET_COOKIE, value);
        }
    }
}
