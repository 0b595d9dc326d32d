//! Federated login for clients with a `login_provider`: `/authorize` asks a `FederatedLogin`
//! (implemented by the wiring, handed to the endpoints when they are built) to send the user
//! to the upstream provider; `/callback` comes back through the login flow's
//! `FederatedAuthorization`, which this service implements, and the client gets a code.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use axum::http::HeaderMap;
use axum::response::Response;

use super::state::{PendingCode, SignedIn};
use super::{IssuerError, Principal, TokenService, with_query};
use crate::clock::UnixTime;
use crate::http::rejection::Rejection;
use crate::login::federation::{FederatedAuthorization, FederationError, FederationFuture};
use crate::session::FederatedRequest;

/// The longest upstream `name`, `email` or `preferred_username` a federated login carries into
/// its code, grant and tokens, in characters (as `sub`'s 255; an address is at most 254):
/// a longer one, or one that is not a string, is left out.
const MAX_CARRIED_CHARS: usize = 255;

/// The future `FederatedLogin::start` returns: the redirect to the provider, or the refusal
/// and the reason for the log line.
pub type FederatedLoginFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Response, (Rejection, String)>> + Send + 'a>>;

/// Starts a login at an upstream provider on behalf of a client's authorization request.
pub trait FederatedLogin: Send + Sync {
    /// Sends the browser that sent `headers` from `peer` to log in at `provider`; the login
    /// state carries `request`, so `/callback` answers the client.
    fn start<'a>(
        &'a self,
        provider: &'a str,
        request: FederatedRequest,
        peer: SocketAddr,
        headers: &'a HeaderMap,
    ) -> FederatedLoginFuture<'a>;
}

/// The error codes of RFC 6749 and OIDC Core that pass from an upstream refusal to the client.
const KNOWN_ERRORS: [&str; 12] = [
    "access_denied",
    "invalid_request",
    "unauthorized_client",
    "unsupported_response_type",
    "invalid_scope",
    "server_error",
    "temporarily_unavailable",
    "interaction_required",
    "login_required",
    "account_selection_required",
    "consent_required",
    "invalid_request_uri",
];

impl TokenService {
    /// Whether any client logs its users in at an upstream provider (then `/callback` is
    /// needed on the public listener).
    pub fn federates(&self) -> bool {
        self.config
            .clients
            .iter()
            .any(|client| client.login_provider.is_some())
    }

    /// The client `request` was made for, as the live config has it, when it may still be
    /// answered: a reload since the login began (up to ten minutes ago) may have taken away its
    /// redirect URI, its code grant or its login provider, and a code or an error sent to a URI
    /// no longer registered (a domain given up) would reach whoever holds it now.
    fn still_answerable(&self, request: &FederatedRequest) -> Option<&crate::config::ClientConfig> {
        self.client(&request.client_id).filter(|client| {
            client.login_provider.is_some()
                && client
                    .grants
                    .contains(&crate::config::GrantType::AuthorizationCode)
                && client.redirect_uris.contains(&request.redirect_uri)
        })
    }

    /// Whether the upstream sign-in in `claims` is older than `request` allows: past its
    /// `max_age` (or of unknown age: `auth_time` is then required), or, with `prompt=login`,
    /// from before the request (when the provider says; many send `auth_time` only when asked
    /// for a `max_age`).
    fn sign_in_too_old(
        &self,
        request: &FederatedRequest,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> bool {
        let auth_time = upstream_auth_time(claims);
        let now = self.now();
        let past_max_age = request.max_age.is_some_and(|max_age| {
            auth_time.is_none_or(|at| {
                now.saturating_sub(at)
                    > i64::try_from(max_age)
                        .unwrap_or(i64::MAX)
                        .saturating_add(self.leeway)
            })
        });
        let before_asking = request.prompt_login
            && auth_time
                .zip(request.asked_at)
                .is_some_and(|(at, asked)| at < asked.saturating_sub(self.leeway));
        past_max_age || before_asking
    }

    /// Where a federated login the upstream provider refused goes: back to the client with
    /// the error (RFC 6749 §4.1.2.1), its `state` and this issuer's `iss`. Only the error codes
    /// of RFC 6749 and OIDC Core pass; anything else becomes `access_denied`.
    pub fn fail_federation(
        &self,
        request: &FederatedRequest,
        upstream_error: &str,
    ) -> Option<String> {
        self.still_answerable(request)?;
        let error = KNOWN_ERRORS
            .iter()
            .find(|known| **known == upstream_error)
            .unwrap_or(&"access_denied");
        let mut params = vec![("error", *error), ("iss", self.issuer())];
        if let Some(state) = &request.state {
            params.push(("state", state));
        }
        with_query(&request.redirect_uri, &params)
    }

    /// `fail_federation` as `complete_federation` answers it: where to send the browser with
    /// `error`, or `InvalidRequest` when the client can no longer be answered.
    fn federation_refused(
        &self,
        request: &FederatedRequest,
        error: &str,
    ) -> Result<String, IssuerError> {
        self.fail_federation(request, error)
            .ok_or_else(|| IssuerError::InvalidRequest("bad redirect_uri".to_owned()))
    }

    /// Answers a client's authorization request after the user logged in at its upstream
    /// provider: a code for `<source>:<upstream sub>` with `name` / `email` carried over, and
    /// `preferred_username` as `<source>:<upstream username>`.
    /// Returns where to send the browser.
    ///
    /// # Errors
    /// `InvalidRequest` when the client is gone or the identity has no `sub`.
    pub async fn complete_federation(
        &self,
        request: &FederatedRequest,
        provider: &str,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, IssuerError> {
        // The provider the login went to must be the client's still: a reload may have given
        // the client another, and this `sub` names a user of the first one only.
        let client = self
            .still_answerable(request)
            .filter(|client| client.login_provider.as_deref() == Some(provider))
            .ok_or_else(|| {
                IssuerError::InvalidRequest(
                    "the client, its redirect URI, its code grant or its login provider is gone"
                        .to_owned(),
                )
            })?;
        // Where the user signed in, as the ID token says (its `iss` and `aud`, which userinfo
        // cannot change): the provider's issuer and client id must still be those of the live
        // config, and the code is answered only while they stay so.
        let at = self
            .providers
            .get(provider)
            .filter(|at| crate::token::issued_by_to(claims, &at.issuer, &at.client_id))
            .cloned()
            .ok_or_else(|| {
                IssuerError::InvalidRequest(
                    "the login's provider is gone or moved to another issuer or client".to_owned(),
                )
            })?;
        let sub = claims
            .get("sub")
            .and_then(serde_json::Value::as_str)
            .filter(|sub| !sub.is_empty())
            .ok_or_else(|| {
                IssuerError::InvalidRequest("the upstream identity has no sub".to_owned())
            })?;
        // Its tokens name the user `<source>:<upstream sub>`, which must fit OpenID Connect
        // Core §2's 255 characters, or every reader of them (`/validate`, `/userinfo`, the
        // client) refuses the tokens the client is given: the client hears `access_denied`.
        if client.source.chars().count() + 1 + sub.chars().count() > crate::token::MAX_SUBJECT_CHARS
        {
            tracing::warn!(client_id = %client.client_id, provider, "a federated login refused: `<source>:<upstream sub>` is longer than 255 characters");
            return self.federation_refused(request, "access_denied");
        }
        // OpenID Connect Core §3.1.2.1: with `max_age`, the sign-in must be that recent, and the
        // provider must say when it was (`auth_time`); with `prompt=login`, it must be new. A
        // provider that kept an older one (its single sign-on) did not honour the request: the
        // client is told `login_required`, never a code that would say the user just signed in.
        if self.sign_in_too_old(request, claims) {
            return self.federation_refused(request, "login_required");
        }
        // Only strings of a bounded length: each is kept in every code and grant of the login
        // and in every token they mint, and a user of a self-registering provider chooses them.
        let carried_text = |name: &str| {
            claims
                .get(name)
                .and_then(serde_json::Value::as_str)
                .filter(|text| text.chars().count() <= MAX_CARRIED_CHARS)
        };
        let mut carried: serde_json::Map<String, serde_json::Value> = ["name", "email"]
            .iter()
            .filter_map(|name| carried_text(name).map(|text| ((*name).to_owned(), text.into())))
            .collect();
        // A user name is the provider's to give, as `sub` is: where users choose their own (a
        // self-registering realm), one named `alice` would else be the local `alice`, or
        // another provider's, to every reader of this one issuer's `preferred_username` (a
        // route header, Kubernetes' `--oidc-username-claim`). So it gets `sub`'s namespace.
        if let Some(username) = carried_text("preferred_username") {
            carried.insert(
                "preferred_username".to_owned(),
                format!("{}:{username}", client.source).into(),
            );
        }
        // Every upstream's users get tokens of this one issuer, so an address is verified only
        // where its provider said so: a provider that says nothing (a multi-tenant one whose
        // users set their own address) would else vouch for another provider's users' domain
        // to every rule that takes silence for verified (`email_domains`, as oauth2-proxy does).
        if carried.contains_key("email") {
            let verified = crate::token::email_verified(claims) == Some(true);
            carried.insert("email_verified".to_owned(), verified.into());
        }
        let code = self
            .store_code(PendingCode {
                client_id: request.client_id.clone(),
                redirect_uri: request.redirect_uri.clone(),
                code_challenge: request.code_challenge.clone(),
                nonce: request.nonce.clone(),
                // Those the client may still be granted.
                scopes: request
                    .scopes
                    .iter()
                    .filter(|scope| super::may_ask_for(client, scope))
                    .cloned()
                    .collect(),
                principal: Principal::Federated {
                    sub: sub.to_owned(),
                    claims: carried,
                    provider: Some(provider.to_owned()),
                    at: Some(at),
                },
                issued_at: self.now(),
                // The upstream sign-in's time, which its single sign-on may have made long
                // before this code (never later than now).
                signed_in: upstream_auth_time(claims)
                    .map_or(SignedIn::Unknown, |at| SignedIn::At(at.min(self.now()))),
            })
            .await?;
        let mut params = vec![("code", code.as_str()), ("iss", self.issuer())];
        if let Some(state) = &request.state {
            params.push(("state", state));
        }
        with_query(&request.redirect_uri, &params)
            .ok_or_else(|| IssuerError::InvalidRequest("bad redirect_uri".to_owned()))
    }
}

impl FederatedAuthorization for TokenService {
    fn complete<'a>(
        &'a self,
        request: &'a FederatedRequest,
        provider: &'a str,
        claims: &'a serde_json::Map<String, serde_json::Value>,
    ) -> FederationFuture<'a> {
        Box::pin(async move {
            self.complete_federation(request, provider, claims)
                .await
                .map_err(|error| {
                    if error.is_unavailable() {
                        FederationError::Unavailable(error.to_string())
                    } else {
                        FederationError::Refused(error.to_string())
                    }
                })
        })
    }

    fn fail(&self, request: &FederatedRequest, upstream_error: &str) -> Option<String> {
        self.fail_federation(request, upstream_error)
    }
}

/// The upstream ID token's `auth_time`: a number of seconds, maybe with a fraction (RFC 7519
/// NumericDate).
fn upstream_auth_time(claims: &serde_json::Map<String, serde_json::Value>) -> Option<UnixTime> {
    claims.get("auth_time").and_then(|value| {
        value.as_i64().or_else(|| {
            value
                .as_f64()
                .filter(|seconds| seconds.is_finite() && seconds.abs() < 1e15)
                .map(|seconds| seconds.floor() as i64)
        })
    })
}
