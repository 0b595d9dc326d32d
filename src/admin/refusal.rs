//! `AdminRefusal`: every way the admin API says no, as one typed value. `refuse` records its
//! count (`tollgate_requests_total{role="admin"}`) and its one log line through
//! `Metrics::refused`, then answers with the status and text the admin API has always given.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::metrics::Metrics;
use crate::session::error::StoreError;

/// Why the admin API refused a request.
#[derive(Debug)]
pub(super) enum AdminRefusal {
    /// No `server.admin_token`: the API is off (403).
    Disabled,
    /// A missing or wrong admin token (401).
    WrongToken,
    /// `DELETE /admin/sessions` without a `sub` (400).
    MissingSub,
    /// A session query that is not `sub=` and `provider=`, each at most once (400): read as no
    /// filter, it would list or select every session.
    BadQuery,
    /// `provider=` names no configured provider (400): a typo would select nothing.
    UnknownProvider,
    /// No session has that handle (404). The handle is not logged.
    NoSuchSession,
    /// The session store keeps no sessions on the server (`session.store = "cookie"`, or no
    /// session secrets): 409.
    NotServerSide,
    /// The session store could not be used (503).
    StoreUnavailable(String),
    /// `POST /admin/explain` described a request it cannot explain (400, or 413 for a body
    /// too large); `message` says why and never echoes a header's value.
    Unexplainable {
        /// 400 or 413.
        status: StatusCode,
        /// What is wrong with the description, for the admin and the log line.
        message: String,
    },
}

impl From<StoreError> for AdminRefusal {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotServerSide => Self::NotServerSide,
            StoreError::Unavailable(reason) => Self::StoreUnavailable(reason),
        }
    }
}

/// Counts and logs `refusal` once, as the admin API's, and answers it.
pub(super) fn refuse(metrics: &Metrics, refusal: AdminRefusal) -> Response {
    crate::refused!(metrics, "admin", &refusal);
    refusal.into_response()
}

impl crate::http::rejection::Refused for AdminRefusal {
    fn label(&self) -> &'static str {
        match self {
            Self::Disabled => "forbidden",
            Self::WrongToken => "unauthenticated",
            Self::MissingSub | Self::BadQuery | Self::UnknownProvider => "bad_request",
            Self::NoSuchSession => "not_found",
            Self::NotServerSide => "not_server_side",
            Self::StoreUnavailable(_) => "store_unavailable",
            Self::Unexplainable { .. } => "bad_request",
        }
    }

    fn reason(&self) -> std::borrow::Cow<'_, str> {
        std::borrow::Cow::Borrowed(match self {
            Self::Disabled => "the admin API is disabled (no server.admin_token)",
            Self::WrongToken => "missing or wrong admin token",
            Self::MissingSub => "no sub to end the sessions of",
            Self::BadQuery => "a session query other than sub= and provider=, once each",
            Self::UnknownProvider => "provider= names no configured provider",
            Self::NoSuchSession => "no session has that handle",
            Self::NotServerSide => "the session store keeps no sessions on the server",
            Self::StoreUnavailable(reason) => {
                return std::borrow::Cow::Owned(format!("session store unavailable: {reason}"));
            }
            Self::Unexplainable { message, .. } => message,
        })
    }

    fn is_failure(&self) -> bool {
        matches!(self, Self::StoreUnavailable(_))
    }
}

impl IntoResponse for AdminRefusal {
    fn into_response(self) -> Response {
        match self {
            Self::Disabled => (
                StatusCode::FORBIDDEN,
                "the admin API is disabled: set server.admin_token\n",
            )
                .into_response(),
            Self::WrongToken => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "401 Unauthorized\n",
            )
                .into_response(),
            Self::MissingSub => {
                (StatusCode::BAD_REQUEST, "400 Bad Request: give ?sub=…\n").into_response()
            }
            Self::BadQuery => (
                StatusCode::BAD_REQUEST,
                "400 Bad Request: give sub= and provider= at most once each\n",
            )
                .into_response(),
            Self::UnknownProvider => (
                StatusCode::BAD_REQUEST,
                "400 Bad Request: provider= names no configured provider\n",
            )
                .into_response(),
            Self::NoSuchSession => {
                (StatusCode::NOT_FOUND, "404 Not Found: no such session\n").into_response()
            }
            Self::NotServerSide => (
                StatusCode::CONFLICT,
                "session.store = \"cookie\" keeps no sessions on the server\n",
            )
                .into_response(),
            Self::StoreUnavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "session store unavailable\n",
            )
                .into_response(),
            Self::Unexplainable { status, message } => (
                status,
                [(header::CACHE_CONTROL, "no-store")],
                axum::Json(serde_json::json!({ "error": message })),
            )
                .into_response(),
        }
    }
}
