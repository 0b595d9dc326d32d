//! Shared HTTP plumbing: the rejection table, forwarded headers, serving with graceful drain.

pub mod forwarded;
pub mod rejection;
pub mod serve;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// A `302 Found` to `location` (what ingress controllers and OAuth flows expect).
pub fn found(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => (StatusCode::FOUND, [(header::LOCATION, value)]).into_response(),
        Err(_) => rejection::Rejection::Internal.into_response(),
    }
}
