//! The browser login flow (SPEC §4): `/signin` starts the authorization code flow with
//! `state`, `nonce` and PKCE S256; `/callback` finishes it and creates the session;
//! `/signout` ends it, with RP-initiated logout at the provider when it offers it.

pub mod backchannel;
pub mod exchanges;
pub mod federation;
pub mod redirect;
pub mod revocation;
pub mod signout_confirm;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;

use crate::clock::Clock;
use crate::http::forwarded::RequestBases;
use crate::http::rejection::{Refusal, Rejection};
use crate::metrics::{Metrics, ProviderLabels};
use crate::oidc::provider::{CredentialError, merge_claims};
use crate::oidc::{ProviderError, Providers};
use crate::session::SessionCookieError;
use crate::session::store::{SessionError, Sessions};
use crate::session::{CookieAttributes, LoginState, Session, request_cookies};
use federation::{FederatedAuthorization, FederationError};
use redirect::{AllowedRedirectDomain, validate_redirect};

/// What the login flow (`/signin`, `/callback`, `/signout`, `/backchannel-logout`, and the
/// proxy's logins) uses, built once by the wiring.
pub struct LoginFlow {
    /// Providers by name.
    pub providers: Arc<Providers>,
    /// The provider `/signin` logs in at: forward-auth's.
    pub signin_provider: Option<Arc<crate::oidc::Provider>>,
    /// Sessions and login-state cookies, when session secrets are configured.
    pub sessions: Option<Arc<Sessions>>,
    /// `server.public_url`.
    pub public_url: Option<url::Url>,
    /// The external base URL of each request (its redirect URI's and cookies' origin).
    pub bases: Arc<RequestBases>,
    /// `server.allowed_redirect_domains`.
    pub allowed_redirect_domains: Vec<AllowedRedirectDomain>,
    /// The hosts of `[[route]]`s: a login's redirect URI may be on one of them.
    pub route_hosts: Vec<String>,
    /// `session.lifetime`.
    pub session_lifetime: std::time::Duration,
    /// The token service, which answers a federated login `/callback` finishes.
    pub federation: Option<Arc<dyn FederatedAuthorization>>,
    /// The code exchanges `/callback` asked for: one a login state, and none for a client
    /// address whose exchanges the provider keeps refusing.
    pub exchanges: Arc<exchanges::Exchanges>,
    /// The refresh tokens sign-outs revoked, so that none is revoked twice.
    pub revocations: Arc<revocation::Revocations>,
    /// Wall-clock time.
    pub clock: Arc<dyn Clock>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

impl LoginFlow {
    /// Where redirects may go for a request served at `base`: the configured domains,
    /// `public_url`'s host, and the host the request itself was served at.
    pub fn allowed_redirects(&self, base: &url::Url) -> Vec<AllowedRedirectDomain> {
        let mut allowed = self.allowed_redirect_domains.clone();
        allowed.extend(
            self.public_url
                .as_ref()
                .and_then(AllowedRedirectDomain::exact_for),
        );
        allowed.extend(AllowedRedirectDomain::exact_for(base));
        allowed
    }
}

/// Query of `/signin` and `/signout`.
#[derive(Debug, Deserialize)]
pub struct RedirectQuery {
    /// Where to go afterwards.
    pub rd: Option<String>,
}

/// Query of `/callback`.
#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    iss: Option<String>,
}

fn with_cookies(mut response: Response, cookies: Vec<String>) -> Response {
    for cookie in cookies {
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Refuses a request of the login flow's `role` (`signin`, `callback`, `signout`): its one
/// count and log line through `refused!`, then the rejection's answer.
fn reject(state: &LoginFlow, role: &'static str, refusal: impl Into<Refusal>) -> Response {
    let refusal = refusal.into();
    crate::refused!(state.metrics, role, &refusal);
    refusal.into_response()
}

/// `GET /signin?rd=URL`.
pub async fn signin(
    State(state): State<Arc<LoginFlow>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<RedirectQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    match start_login(&state, peer, &headers, query.ok().map(|Query(query)| query)).await {
        Ok(response) => response,
        Err(refusal) => reject(&state, "signin", refusal),
    }
}

async fn start_login(
    state: &LoginFlow,
    peer: SocketAddr,
    headers: &HeaderMap,
    query: Option<RedirectQuery>,
) -> Result<Response, (Rejection, String)> {
    let query = query.ok_or_else(|| {
        (
            Rejection::BadRequest("malformed query".to_owned()),
            "malformed query".to_owned(),
        )
    })?;
    // A request that cannot show the provider's page (an image, a script's `fetch`, one that
    // followed an ingress's redirect here, a prefetch) begins no login: it could only end
    // silently in a session nobody asked for. `/signin` is where an ingress sends a
    // WebView's navigations, so its `X-Requested-With` is not taken for a script's.
    if crate::http::is_no_navigation(headers) {
        return Err((
            Rejection::Unauthenticated,
            "not a navigation: no login is started for it".to_owned(),
        ));
    }
    let provider = state.signin_provider.as_ref().ok_or((
        Rejection::Internal,
        "forward-auth not configured".to_owned(),
    ))?;
    let base = request_base(state, peer, headers)
        .map_err(|rejection| (rejection, "no base URL".to_owned()))?;
    let redirect_to = match query.rd.as_deref() {
        None | Some("") => "/".to_owned(),
        Some(target) => {
            validate_redirect(target, &state.allowed_redirects(&base)).map_err(|error| {
                (
                    Rejection::BadRequest(format!("rd: {error}")),
                    format!("rd refused: {error}"),
                )
            })?
        }
    };
    let response = begin_login(state, provider, &base, headers, redirect_to).await?;
    state.metrics.request("signin", "login_redirect");
    Ok(response)
}

/// Starts the authorization code flow at `provider` for a browser at `base`, returning to
/// `redirect_to` (already validated) after login: seals a new login state into its own cookie
/// and redirects to the provider. Used by `/signin` and by routes.
///
/// # Errors
/// 502 when the provider cannot be discovered, 500 when sealing fails.
pub(crate) async fn begin_login(
    state: &LoginFlow,
    provider: &crate::oidc::Provider,
    base: &url::Url,
    headers: &HeaderMap,
    redirect_to: String,
) -> Result<Response, (Rejection, String)> {
    begin_login_for(state, provider, base, headers, redirect_to, None).await
}

/// Whether `base`, taken from the request's `Host` (or a trusted `X-Forwarded-Host`) when
/// `public_url` is not set, may be the redirect URI's host: a loopback address, a route's host,
/// or a host `allowed_redirect_domains` allows. Anything else would let a `Host: evil.example`
/// make the provider send the code to another site.
fn serves_host(state: &LoginFlow, base: &url::Url) -> bool {
    if state.public_url.is_some() {
        return true;
    }
    let host = match base.host() {
        Some(url::Host::Ipv4(address)) => return address.is_loopback(),
        Some(url::Host::Ipv6(address)) => return address.is_loopback(),
        Some(url::Host::Domain(name)) => name.trim_end_matches('.').to_ascii_lowercase(),
        None => return false,
    };
    host == "localhost"
        || state.route_hosts.contains(&host)
        || state
            .allowed_redirect_domains
            .iter()
            .any(|domain| domain.allows(&host, base.port_or_known_default()))
}

/// `begin_login` for the token service's federated login: `/callback` answers the client's
/// authorization request instead of creating a session.
///
/// # Errors
/// As `begin_login`.
pub(crate) async fn begin_login_for(
    state: &LoginFlow,
    provider: &crate::oidc::Provider,
    base: &url::Url,
    headers: &HeaderMap,
    redirect_to: String,
    federation: Option<crate::session::FederatedRequest>,
) -> Result<Response, (Rejection, String)> {
    let sessions = state
        .sessions
        .as_ref()
        .ok_or((Rejection::Internal, "no session secrets".to_owned()))?;
    if !serves_host(state, base) {
        return Err((
            Rejection::BadRequest(
                "this host is not one Tollgate serves logins for (server.public_url)".to_owned(),
            ),
            "login base host not allowed".to_owned(),
        ));
    }
    if federation.is_none() && sessions.jar.is_sent_twice(headers) {
        return Err((
            Rejection::BadRequest(
                "this browser sends two session cookies for this site, one of them set by \
                 another host of the same domain; clear this site's cookies, then sign in again"
                    .to_owned(),
            ),
            "two session cookies: one set by another host of the site".to_owned(),
        ));
    }
    let metadata = provider
        .metadata()
        .await
        .map_err(|error| (Rejection::ProviderUnavailable, error.to_string()))?;
    let login = LoginState {
        state: crate::random::token(),
        nonce: crate::random::token(),
        code_verifier: crate::random::token(),
        redirect_to: redirect::kept_for_return(redirect_to),
        provider: provider.name().to_owned(),
        redirect_uri: format!("{}/callback", base.as_str().trim_end_matches('/')),
        created_at: state.clock.now(),
        federation,
    };
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, login.code_verifier.as_bytes())
            .as_ref(),
    );
    let mut authorize = url::Url::parse(&metadata.authorization_endpoint).map_err(|_| {
        (
            Rejection::ProviderUnavailable,
            "bad authorization_endpoint".to_owned(),
        )
    })?;
    authorize
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &provider.config.client_id)
        .append_pair("redirect_uri", &login.redirect_uri)
        .append_pair("scope", &provider.config.scopes.join(" "))
        .append_pair("state", &login.state)
        .append_pair("nonce", &login.nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    // A token-service client's request to see the user sign in again goes on to the provider.
    if let Some(federation) = &login.federation {
        if federation.prompt_login {
            authorize.query_pairs_mut().append_pair("prompt", "login");
        }
        if let Some(max_age) = federation.max_age {
            authorize
                .query_pairs_mut()
                .append_pair("max_age", &max_age.to_string());
        }
    }
    let cookies = sessions
        .jar
        .start_login(
            &login,
            &request_cookies(headers),
            CookieAttributes::for_base(base),
        )
        .map_err(|_| (Rejection::Internal, "cannot seal login state".to_owned()))?;
    Ok(with_cookies(
        crate::http::found(authorize.as_str()),
        cookies,
    ))
}

/// `GET /callback`.
pub async fn callback(
    State(state): State<Arc<LoginFlow>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<CallbackQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    match finish_login(&state, peer, &headers, query.ok().map(|Query(query)| query)).await {
        Ok(response) => response,
        Err(refusal) => reject(&state, "callback", refusal),
    }
}

async fn finish_login(
    state: &LoginFlow,
    peer: SocketAddr,
    headers: &HeaderMap,
    query: Option<CallbackQuery>,
) -> Result<Response, (Rejection, String)> {
    let bad = |message: &str| {
        (
            Rejection::BadRequest(message.to_owned()),
            message.to_owned(),
        )
    };
    let query = query.ok_or_else(|| bad("malformed callback query"))?;
    let sessions = state
        .sessions
        .as_ref()
        .ok_or((Rejection::Internal, "no session secrets".to_owned()))?;
    let base = request_base(state, peer, headers)
        .map_err(|rejection| (rejection, "no base URL".to_owned()))?;
    let attributes = CookieAttributes::for_base(&base);
    let cookies = request_cookies(headers);
    let now = state.clock.now();
    let returned_state = query.state.as_deref().ok_or_else(|| bad("missing state"))?;
    let (login, clear_state) = sessions
        .jar
        .finish_login(returned_state, &cookies, now, attributes)
        .ok_or_else(|| bad("unknown or expired login state; start the login again"))?;
    // The login in flight is used up by a refusal, and by anything once its code was spent:
    // its cookie goes, so the state cannot be answered again (RFC 9700 §2.1: a one-time CSRF
    // token), nor a spent code presented again (which a provider may answer by revoking what
    // it issued for it, RFC 6749 §4.1.2). A failure before the exchange (the provider or the
    // store unreachable) keeps it: a reload of this page retries with the code. A provider
    // refusing Tollgate's client authentication (a 502) uses it up as a refusal does.
    let mut used_up = false;
    let outcome: Result<Response, (Rejection, String)> = async {
        let provider = state
            .providers
            .get(&login.provider)
            .ok_or((Rejection::Internal, "provider gone".to_owned()))?;
        // RFC 9207 (also for error responses): a provider that says who it is must be the one we
        // sent the user to, and one that promises to say it must say it.
        match query.iss.as_deref() {
            Some(iss) if iss != provider.config.issuer => {
                return Err(bad("iss does not match the provider (mix-up)"));
            }
            Some(_) => {}
            None => {
                let metadata = provider
                    .metadata()
                    .await
                    .map_err(|error| (Rejection::ProviderUnavailable, error.to_string()))?;
                if metadata.authorization_response_iss_parameter_supported {
                    return Err(bad(
                        "missing iss although the provider sends it (RFC 9207 mix-up defence)",
                    ));
                }
            }
        }
        if let Some(error) = &query.error {
            crate::refused!(state.metrics,
                "callback",
                &ProviderRefusedLogin {
                    provider: provider.name(),
                    error,
                },
            );
            // A federated login answers the token service's client, as its own provider would.
            let federated = login
                .federation
                .as_ref()
                .and_then(|federation| state.federation.as_ref()?.fail(federation, error));
            let response = match federated {
                Some(location) => crate::http::found(&location),
                None => Rejection::Unauthenticated.into_response(),
            };
            return Ok(with_cookies(response, vec![clear_state.clone()]));
        }
        let code = query.code.as_deref().ok_or_else(|| bad("missing code"))?;
        let labels = ProviderLabels {
            provider: provider.name().to_owned(),
        };
        // A login state is exchanged once, and an address the provider keeps refusing is not
        // asked for a while (`exchanges`): a kept state cookie replayed with made-up codes cost
        // a client-authenticated token-endpoint call each.
        let client =
            crate::http::forwarded::limit_key(state.bases.client_address(peer.ip(), headers));
        let Some(mut admission) = state.exchanges.admit(&client) else {
            return Err((
                Rejection::TooManyRequests(
                    "too many sign-ins failed from this address; try again in a minute"
                        .to_owned(),
                ),
                "code exchanges refused too often from this address".to_owned(),
            ));
        };
        let until = login.created_at + crate::session::LOGIN_STATE_LIFETIME;
        if state.exchanges.take(returned_state, until) == exchanges::Turn::Spent {
            return Err(bad("this sign-in was finished already; start the login again"));
        }
        let tokens = match provider
            .exchange_code(code, &login.redirect_uri, &login.code_verifier)
            .await
        {
            Ok(tokens) => {
                used_up = true;
                tokens
            }
            Err(error) => {
                state
                    .metrics
                    .code_exchange_errors
                    .get_or_create(&labels)
                    .inc();
                return Err(match error {
                    ProviderError::Refused(code) => {
                        admission.refused();
                        (
                            Rejection::Unauthenticated,
                            format!("code exchange refused: {code}"),
                        )
                    }
                    // The provider answered, but not with tokens (a 5xx, a throttling 429,
                    // `oidc::client::token_request`): counted
                    // against the address as a refusal is, so a state cookie replayed into a
                    // provider that throttles is bounded too; the login stays for the user's
                    // reload, as below.
                    ProviderError::BadResponse(reason) => {
                        admission.refused();
                        state.exchanges.unasked(returned_state);
                        (
                            Rejection::ProviderUnavailable,
                            ProviderError::BadResponse(reason).to_string(),
                        )
                    }
                    // Tokens that cannot be used: the code is spent at the provider all the
                    // same, so the login is used up (a reload would replay it).
                    ProviderError::UnusableTokens(reason) => {
                        admission.refused();
                        used_up = true;
                        (
                            Rejection::ProviderUnavailable,
                            ProviderError::UnusableTokens(reason).to_string(),
                        )
                    }
                    // Tollgate's client authentication refused: a 502 naming the client's
                    // credentials, not a 401 as though the user's login were refused. Counted
                    // and used up as a refusal is: some providers answer `invalid_client` to a
                    // made-up code (older Spring Authorization Server releases, with PKCE), so the
                    // answer alone cannot tell a rotated secret from a replayed state cookie.
                    ProviderError::ClientRejected(reason) => {
                        admission.refused();
                        used_up = true;
                        (
                            Rejection::ProviderUnavailable,
                            ProviderError::ClientRejected(reason).to_string(),
                        )
                    }
                    // Not asked, or no answer heard: the user's reload retries with the code.
                    ProviderError::StoreUnavailable(reason) => {
                        state.exchanges.unasked(returned_state);
                        (Rejection::StoreUnavailable, reason)
                    }
                    ProviderError::Unreachable(reason) => {
                        state.exchanges.unasked(returned_state);
                        (
                            Rejection::ProviderUnavailable,
                            ProviderError::Unreachable(reason).to_string(),
                        )
                    }
                });
            }
        };
        drop(admission);
        let id_token = tokens.id_token.as_deref().ok_or((
            Rejection::ProviderUnavailable,
            "no id_token in token response".to_owned(),
        ))?;
        // The userinfo request goes out first and the ID token is checked while the provider
        // answers it: both need only the token response. The yield lets the request be written
        // (its connection's task runs on this thread) before the check takes the thread. An ID
        // token refused ends the login at once, the userinfo answer not awaited; it is used only
        // with a valid ID token.
        let (userinfo, claims) = tokio::try_join!(
            async { Ok(provider.userinfo(&tokens.access_token).await) },
            async {
                tokio::task::yield_now().await;
                provider
                    .validate_login_id_token(id_token, &login.nonce, &tokens.access_token, code)
                    .await
                    .map_err(|error| match error {
                        CredentialError::Token(error) => (
                            Rejection::Unauthenticated,
                            format!("id_token refused: {error}"),
                        ),
                        // The keys could not be had: the provider failed, the login was not refused.
                        error @ (CredentialError::Provider(_) | CredentialError::TooManyRefused) => {
                            (Rejection::ProviderUnavailable, error.to_string())
                        }
                    })
            }
        )?;
        let access_expires_at = tokens.access_expires_at(now, Some(&claims));
        let claims = match userinfo.and_then(|userinfo| merge_claims(&claims, userinfo)) {
            Ok(merged) => merged,
            Err(CredentialError::Token(error)) => {
                return Err((
                    Rejection::Unauthenticated,
                    format!("userinfo refused: {error}"),
                ));
            }
            // An answer the provider should not have given (over the size cap, not JSON) is its
            // failure: 502 (SPEC §9). Only an unreachable userinfo falls back to the ID token.
            Err(CredentialError::Provider(error @ crate::oidc::ProviderError::BadResponse(_))) => {
                return Err((
                    Rejection::ProviderUnavailable,
                    format!("userinfo unusable: {error}"),
                ));
            }
            // Userinfo may be where the provider says an address is not verified: without it,
            // an address the ID token does not say that of is taken as unverified.
            Err(error @ (CredentialError::Provider(_) | CredentialError::TooManyRefused)) => {
                tracing::warn!(provider = %provider.name(), %error, "userinfo unavailable; using the ID token's claims");
                crate::token::without_userinfo(claims, None)
            }
        };
        // The token service's federated login: answer the client, create no session here.
        if let Some(federation) = &login.federation {
            let service = state.federation.as_ref().ok_or((
                Rejection::Internal,
                "federated login without a token service".to_owned(),
            ))?;
            let location = service
                .complete(federation, provider.name(), &claims)
                .await
                .map_err(|error| match error {
                    FederationError::Unavailable(reason) => {
                        (Rejection::StoreUnavailable, format!("federation: {reason}"))
                    }
                    FederationError::Refused(error) => (
                        Rejection::BadRequest(error.clone()),
                        format!("federation refused: {error}"),
                    ),
                })?;
            state.metrics.signins.get_or_create(&labels).inc();
            state.metrics.request("callback", "federated");
            tracing::info!(provider = %provider.name(), client_id = %federation.client_id, "federated login");
            return Ok(with_cookies(
                crate::http::found(&location),
                vec![clear_state.clone()],
            ));
        }
        let lifetime = i64::try_from(state.session_lifetime.as_secs()).unwrap_or(i64::MAX);
        let session = Session {
            provider: provider.name().to_owned(),
            claims: claims.clone(),
            id_token: id_token.to_owned(),
            access_token: Some(tokens.access_token.clone()),
            refresh_token: tokens.refresh_token.clone(),
            access_expires_at,
            created_at: now,
            expires_at: now.saturating_add(lifetime),
        };
        let mut set_cookies = sessions
            .create(session, &cookies, now, attributes)
            .await
            .map_err(|error| match error {
                SessionError::Store(error) => (Rejection::StoreUnavailable, error.to_string()),
                SessionError::Cookie(SessionCookieError::Expired) => (
                    Rejection::Unauthenticated,
                    "the provider ended this session (a back-channel logout) as the sign-in \
                     completed"
                        .to_owned(),
                ),
                SessionError::Cookie(error) => (
                    Rejection::Internal,
                    match error {
                        SessionCookieError::TooLarge => error.to_string(),
                        _ => "session too large to store in cookies".to_owned(),
                    },
                ),
            })?;
        set_cookies.push(clear_state.clone());
        state.metrics.signins.get_or_create(&labels).inc();
        state.metrics.request("callback", "signed_in");
        tracing::info!(provider = %provider.name(), "signed in");
        // Checked again against the live `allowed_redirect_domains`: a domain a reload removed
        // (an incident's response) is no longer a login's destination, whenever it began.
        let redirect_to = validate_redirect(&login.redirect_to, &state.allowed_redirects(&base))
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "the return target is no longer allowed: sent to /");
                "/".to_owned()
            });
        Ok(with_cookies(crate::http::found(&redirect_to), set_cookies))
    }
    .await;
    match outcome {
        // A 429 asked the provider nothing: the login stays for a try after the window.
        Err(refusal)
            if used_up
                || !(refusal.0.is_failure()
                    || matches!(refusal.0, Rejection::TooManyRequests(_))) =>
        {
            Ok(with_cookies(
                reject(state, "callback", refusal),
                vec![clear_state],
            ))
        }
        outcome => outcome,
    }
}

/// The provider answered `/callback` with an `error` instead of a code: the user is not
/// signed in (401), or a federated login passes the error on to the token service's client.
struct ProviderRefusedLogin<'a> {
    provider: &'a str,
    /// The provider's `error`, its text: bounded and escaped in the reason.
    error: &'a str,
}

impl crate::http::rejection::Refused for ProviderRefusedLogin<'_> {
    fn label(&self) -> &'static str {
        "unauthenticated"
    }

    fn reason(&self) -> std::borrow::Cow<'_, str> {
        std::borrow::Cow::Owned(format!(
            "provider {} refused the login: {}",
            self.provider,
            crate::untrusted::bounded(self.error)
        ))
    }
}

/// `GET /signout?rd=URL`, and `POST` from its "Sign out?" page.
pub async fn signout(
    State(state): State<Arc<LoginFlow>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: axum::http::Method,
    headers: HeaderMap,
    query: Result<Query<RedirectQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let query = query.ok().map(|Query(query)| query);
    match end_session(&state, peer, &method, &headers, query).await {
        Ok(response) => response,
        Err(refusal) => reject(&state, "signout", refusal),
    }
}

/// Ends the session of a sign-out the user asked for (`signout_confirm`); one another page
/// may have asked for gets the "Sign out?" page instead, and nothing changes.
pub(crate) async fn end_session(
    state: &LoginFlow,
    peer: SocketAddr,
    method: &axum::http::Method,
    headers: &HeaderMap,
    query: Option<RedirectQuery>,
) -> Result<Response, (Rejection, String)> {
    if !signout_confirm::is_the_users_own(method, headers) {
        tracing::info!("sign-out asked for by another page: the user is asked to confirm");
        state.metrics.request("signout", "confirm");
        return Ok(signout_confirm::confirmation());
    }
    let query = query.ok_or_else(|| {
        (
            Rejection::BadRequest("malformed query".to_owned()),
            "malformed query".to_owned(),
        )
    })?;
    let sessions = state
        .sessions
        .as_ref()
        .ok_or((Rejection::Internal, "no session secrets".to_owned()))?;
    let base = request_base(state, peer, headers)
        .map_err(|rejection| (rejection, "no base URL".to_owned()))?;
    let redirect_to = match query.rd.as_deref() {
        None | Some("") => None,
        Some(target) => Some(
            validate_redirect(target, &state.allowed_redirects(&base)).map_err(|error| {
                (
                    Rejection::BadRequest(format!("rd: {error}")),
                    format!("rd refused: {error}"),
                )
            })?,
        ),
    };
    let attributes = CookieAttributes::for_base(&base);
    // Every session a session cookie of this request names is ended; the browser's own (its
    // binding names it) is the one signed out of at the provider.
    let mut each = sessions.jar.each_session_cookie(headers);
    let cookies = each.remove(0);
    let mut ended = Vec::new();
    for other in &each {
        let (session, _) = sessions
            .end(other, state.clock.now(), attributes)
            .await
            .map_err(|error| {
                (
                    Rejection::StoreUnavailable,
                    format!("the session could not be ended: {error}"),
                )
            })?;
        ended.extend(session);
    }
    // A session cookie without its binding is another host's (or from before bindings): its
    // session is ended (whoever holds the cookie may use it: its binding can be read from it),
    // but its ID token is not the one to show the provider, nor its provider's logout this
    // browser's.
    let unbound = attributes.bound && !sessions.jar.is_bound(&cookies);
    let (session, clear) = sessions
        .end(&cookies, state.clock.now(), attributes)
        .await
        .map_err(|error| {
            (
                Rejection::StoreUnavailable,
                format!("the session could not be ended: {error}"),
            )
        })?;
    ended.extend(session.clone());
    state
        .revocations
        .revoke_refresh_tokens(&state.providers, &ended, state.clock.now())
        .await;
    state.metrics.signouts.inc();
    state.metrics.request("signout", "signed_out");
    let absolute = |target: &str| {
        base.join(target)
            .map(|url| url.to_string())
            .unwrap_or_else(|_| base.to_string())
    };
    let fallback = redirect_to.clone().unwrap_or_else(|| "/".to_owned());
    let Some(session) = session.filter(|_| !unbound) else {
        if unbound {
            tracing::info!(
                "signed out with a session cookie not bound to this browser: no provider logout"
            );
        }
        return Ok(with_cookies(crate::http::found(&fallback), clear));
    };
    // A session made before its provider's name was given another issuer or client is
    // ended here only: its ID token is not the new provider's to hear of.
    let Some(provider) = state
        .providers
        .get(&session.provider)
        .filter(|provider| provider.config.end_session)
        .filter(|provider| {
            session.made_at(
                provider.name(),
                &provider.config.issuer,
                &provider.config.client_id,
            )
        })
    else {
        return Ok(with_cookies(crate::http::found(&fallback), clear));
    };
    let end_session_endpoint = provider
        .metadata()
        .await
        .ok()
        .and_then(|metadata| metadata.end_session_endpoint.clone());
    let Some(Ok(mut logout)) = end_session_endpoint.map(|endpoint| url::Url::parse(&endpoint))
    else {
        return Ok(with_cookies(crate::http::found(&fallback), clear));
    };
    let post_logout = match (&provider.config.post_logout_redirect_uri, &redirect_to) {
        (Some(configured), _) => configured.to_string(),
        (None, Some(target)) => absolute(target),
        // SPEC §3: `public_url + "/"`, the address registered at the provider, also when
        // signing out on a route's own host; the request's base without `public_url`.
        (None, None) => match &state.public_url {
            Some(public_url) => format!("{}/", public_url.as_str().trim_end_matches('/')),
            None => absolute("/"),
        },
    };
    logout
        .query_pairs_mut()
        .append_pair("id_token_hint", &session.id_token)
        .append_pair("post_logout_redirect_uri", &post_logout)
        .append_pair("client_id", &provider.config.client_id);
    tracing::info!(provider = %provider.name(), "signed out; continuing to the provider's logout");
    Ok(with_cookies(crate::http::found(logout.as_str()), clear))
}

/// The external base URL of a request, or a 400 when it cannot be known.
fn request_base(
    state: &LoginFlow,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<Arc<url::Url>, Rejection> {
    state
        .bases
        .base(peer.ip(), headers)
        .ok_or_else(|| Rejection::BadRequest("missing or invalid Host header".to_owned()))
}
