//! `AuthorizeRefusal`: every way `/authorize` says no (a wrong authorization request, a form
//! posted from another site, a wrong password, too many of them, a store or a federated login
//! that failed), as one typed value. `refuse` records its one count under
//! `tollgate_requests_total{role="token_service"}` and its one log line through
//! `Metrics::refused`, then answers it.

use std::collections::HashMap;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::super::{TokenService, with_query};
use crate::http::pages::escape;
use crate::http::rejection::{Refusal, Refused};

/// What went wrong with an authorization request, before or after the redirect URI is known.
pub(in crate::issuer) enum AuthorizeError {
    /// Client or redirect URI unknown: shown to the user, never redirected (RFC 6749 §4.1.2.1).
    Page(String),
    /// Sent back to the client.
    Redirect {
        redirect_uri: String,
        state: Option<String>,
        error: &'static str,
        description: String,
    },
}

/// Why `/authorize` refused a request.
pub(in crate::issuer) enum AuthorizeRefusal {
    /// The authorization request itself is wrong: a page, or the client is told.
    Request(AuthorizeError),
    /// The login form was posted from another site (login CSRF), and how that showed: 403.
    CrossSite(&'static str),
    /// A post of credentials whose form token is not its cookie's (an older form, a page of
    /// another site or of this origin, a browser that keeps no cookie): the form again, with
    /// this browser's token (400).
    FormExpired(HashMap<String, String>, super::FormToken),
    /// Too many failed sign-ins for this user or from this address: 429.
    RateLimited,
    /// Too many password checks wait already (a flood): 503, try again in a moment.
    Busy,
    /// A wrong username or password: the form again (with these parameters), with a notice
    /// (401). The username is not logged.
    WrongPassword(HashMap<String, String>, super::FormToken),
    /// The token service's store could not be used, and why: 503.
    StoreUnavailable(String),
    /// The client's registered redirect URI cannot carry the code: 400.
    BadRedirectUri,
    /// The client's federated login could not start at its `login_provider`.
    Federation(Refusal),
}

impl From<AuthorizeError> for AuthorizeRefusal {
    fn from(error: AuthorizeError) -> Self {
        Self::Request(error)
    }
}

impl From<super::super::state::StateError> for AuthorizeRefusal {
    fn from(error: super::super::state::StateError) -> Self {
        Self::StoreUnavailable(error.to_string())
    }
}

/// Counts and logs `refusal` once, as the token service's, and answers it.
pub(in crate::issuer) fn refuse(
    service: &TokenService,
    refusal: impl Into<AuthorizeRefusal>,
) -> Response {
    let refusal = refusal.into();
    crate::refused!(service.metrics, "token_service", &refusal);
    refusal.into_response(service.issuer())
}

impl Refused for AuthorizeRefusal {
    fn label(&self) -> &'static str {
        match self {
            Self::Request(AuthorizeError::Page(_))
            | Self::CrossSite(_)
            | Self::FormExpired(..)
            | Self::BadRedirectUri => "bad_request",
            // The RFC 6749 §4.1.2.1 code the client is sent, as the token endpoint's are.
            Self::Request(AuthorizeError::Redirect { error, .. }) => error,
            Self::RateLimited => "login_rate_limited",
            Self::Busy => "temporarily_unavailable",
            Self::WrongPassword(..) => "login_failed",
            // As the token endpoint counts its store failing.
            Self::StoreUnavailable(_) => "temporarily_unavailable",
            Self::Federation(refusal) => refusal.label(),
        }
    }

    fn reason(&self) -> std::borrow::Cow<'_, str> {
        use std::borrow::Cow;
        match self {
            Self::Request(AuthorizeError::Page(message)) => Cow::Borrowed(message),
            Self::Request(AuthorizeError::Redirect {
                error, description, ..
            }) => Cow::Owned(format!("{error}: {description}")),
            Self::CrossSite(how) => Cow::Owned(format!("login form post refused: {how}")),
            Self::FormExpired(_, token) if token.is_new() => Cow::Borrowed(
                "login form post refused: no form cookie came with it (cookies blocked, or the form's page never shown)",
            ),
            Self::FormExpired(..) => {
                Cow::Borrowed("login form post refused: the form's token is not its cookie's")
            }
            Self::RateLimited => Cow::Borrowed("local login rate-limited"),
            Self::Busy => Cow::Borrowed("sign-in refused: password checks are busy"),
            Self::WrongPassword(..) => Cow::Borrowed("local login failed"),
            Self::StoreUnavailable(error) => Cow::Owned(format!("sign-in refused: {error}")),
            Self::BadRedirectUri => Cow::Borrowed("the redirect_uri cannot carry the answer"),
            Self::Federation(refusal) => Cow::Owned(format!(
                "federated login could not start: {}",
                refusal.reason
            )),
        }
    }

    /// A store or a federated login failing, and a rate limit (someone may be guessing
    /// passwords), are for the operator to look at.
    fn is_failure(&self) -> bool {
        match self {
            Self::StoreUnavailable(_) | Self::RateLimited | Self::Busy => true,
            Self::Federation(refusal) => refusal.is_failure(),
            _ => false,
        }
    }
}

impl AuthorizeRefusal {
    /// The answer: `issuer` is the `iss` an error sent back to the client carries.
    fn into_response(self, issuer: &str) -> Response {
        match self {
            // Pages a person sees (SPEC §10): the page policy and no-store, as every other.
            Self::Request(AuthorizeError::Page(message)) => crate::http::pages::html(
                StatusCode::BAD_REQUEST,
                "Sign-in request refused",
                &format!("<p>{}</p>", escape(&message)),
            ),
            Self::Request(AuthorizeError::Redirect {
                redirect_uri,
                state,
                error,
                description,
            }) => {
                let description = crate::untrusted::oauth_description(&description);
                let mut params = vec![
                    ("error", error),
                    ("error_description", description.as_str()),
                    ("iss", issuer),
                ];
                if let Some(state) = &state {
                    params.push(("state", state));
                }
                match with_query(&redirect_uri, &params) {
                    Some(location) => crate::http::found(&location),
                    None => Self::BadRedirectUri.into_response(issuer),
                }
            }
            Self::CrossSite(_) => crate::http::pages::html(
                StatusCode::FORBIDDEN,
                "Sign-in refused",
                "<p>The sign-in form was posted from another site. Open the application \
                 and sign in from there.</p>",
            ),
            Self::RateLimited => {
                let mut response = crate::http::pages::html(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many attempts",
                    "<p>Too many failed sign-ins. Wait a minute, then try again.</p>",
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
                response
            }
            Self::FormExpired(parameters, token) => {
                // A browser that keeps no cookie of this host would be shown this form again
                // and again: say what it needs.
                let notice = if token.is_new() {
                    "Your browser sent no cookie of this site with the form: allow cookies for \
                     this site, then sign in again."
                } else {
                    "This sign-in form has expired. Sign in again."
                };
                let mut form = super::login_form(&parameters, Some(notice), &token);
                *form.status_mut() = StatusCode::BAD_REQUEST;
                form
            }
            Self::WrongPassword(parameters, token) => {
                super::login_form(&parameters, Some("Wrong username or password."), &token)
            }
            Self::StoreUnavailable(_) => {
                crate::http::rejection::Rejection::StoreUnavailable.into_response()
            }
            Self::Busy => {
                let mut response = crate::http::pages::html(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Busy",
                    "<p>Sign-in is busy right now. Try again in a moment.</p>",
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                response
            }
            Self::BadRedirectUri => crate::http::pages::html(
                StatusCode::BAD_REQUEST,
                "Sign-in request refused",
                "<p>The application's redirect_uri cannot carry the answer.</p>",
            ),
            Self::Federation(refusal) => refusal.into_response(),
        }
    }
}
