//! What a federated login asks of the token service when it comes back: `/callback` hands the
//! upstream identity (or the upstream's refusal) to a `FederatedAuthorization`, which answers
//! the client's authorization request. Declared here, implemented by the token service, so the
//! login flow never imports a surface.

use std::future::Future;
use std::pin::Pin;

use crate::session::FederatedRequest;

/// Why a federated login could not be answered.
#[derive(Debug)]
pub enum FederationError {
    /// The token service's store could not be reached (503).
    Unavailable(String),
    /// The client's request cannot be answered (400), and why.
    Refused(String),
}

/// The future `FederatedAuthorization::complete` returns: where to send the browser.
pub type FederationFuture<'a> =
    Pin<Box<dyn Future<Output = Result<String, FederationError>> + Send + 'a>>;

/// The token service, as the login flow sees it.
pub trait FederatedAuthorization: Send + Sync {
    /// Answers the client's authorization `request` after the user logged in upstream at
    /// `provider` with these `claims`: the location that returns the browser to the client
    /// with a code.
    ///
    /// # Errors
    /// `Refused` when the client is gone or the identity has no `sub`; `Unavailable` when the
    /// store cannot keep the code.
    fn complete<'a>(
        &'a self,
        request: &'a FederatedRequest,
        provider: &'a str,
        claims: &'a serde_json::Map<String, serde_json::Value>,
    ) -> FederationFuture<'a>;

    /// Where a federated login the upstream provider refused with `upstream_error` goes: back
    /// to the client with the error.
    fn fail(&self, request: &FederatedRequest, upstream_error: &str) -> Option<String>;
}
