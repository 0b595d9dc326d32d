//! `/authorize` with the local login form: the request is checked (client, exact redirect
//! URI, response type, scopes, PKCE), the user signs in with a username and password from
//! `[[token_service.user]]`, and the browser returns to the client with a code, `state` and the
//! RFC 9207 `iss`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRef, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

mod form_token;
mod refusal;

use super::clients::PasswordCheck;
use super::{FederatedLogin, PendingCode, TokenService, is_registered_redirect, with_query};
use crate::config::GrantType;
use crate::http::pages::{escape, page};
use crate::http::rejection::{Refusal, Rejection};
use form_token::FormToken;
use refusal::{AuthorizeError, AuthorizeRefusal, refuse};

/// What `/authorize` uses: the service, and what starts federated logins.
#[derive(Clone)]
pub(super) struct AuthorizeState {
    pub(super) service: Arc<TokenService>,
    pub(super) federation: Option<Arc<dyn FederatedLogin>>,
}

impl FromRef<AuthorizeState> for Arc<TokenService> {
    fn from_ref(state: &AuthorizeState) -> Self {
        state.service.clone()
    }
}

impl FromRef<AuthorizeState> for Option<Arc<dyn FederatedLogin>> {
    fn from_ref(state: &AuthorizeState) -> Self {
        state.federation.clone()
    }
}

/// A checked authorization request.
struct AuthorizationRequest {
    client_id: String,
    redirect_uri: String,
    scopes: Vec<String>,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    /// `prompt=login` (OpenID Connect Core §3.1.2.1).
    prompt_login: bool,
    /// `max_age`, in seconds.
    max_age: Option<u64>,
    /// When the request came, with `prompt_login`.
    asked_at: Option<crate::clock::UnixTime>,
}

/// The longest `state` or `nonce` a client may send.
const MAX_CLIENT_VALUE: usize = 512;

/// How an authorization request came.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// In the query of a GET.
    Get,
    /// In the form body of a POST without credentials.
    Post,
}

const PARAMETERS: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
];

impl TokenService {
    fn check_authorization(
        &self,
        parameters: &HashMap<String, String>,
    ) -> Result<AuthorizationRequest, AuthorizeError> {
        let get = |name: &str| {
            parameters
                .get(name)
                .map(String::as_str)
                .filter(|value| !value.is_empty())
        };
        let client_id =
            get("client_id").ok_or_else(|| AuthorizeError::Page("missing client_id".to_owned()))?;
        let client = self
            .client(client_id)
            .ok_or_else(|| AuthorizeError::Page("unknown client".to_owned()))?;
        let redirect_uri = get("redirect_uri")
            .ok_or_else(|| AuthorizeError::Page("missing redirect_uri".to_owned()))?;
        if !is_registered_redirect(&client.redirect_uris, redirect_uri) {
            return Err(AuthorizeError::Page(
                "redirect_uri is not registered for this client".to_owned(),
            ));
        }
        // Both travel sealed in a login cookie while a federated login runs: bounded, so that
        // the few a browser may hold at once stay well below a proxy's header limit.
        for name in ["state", "nonce"] {
            if get(name).is_some_and(|value| value.len() > MAX_CLIENT_VALUE) {
                return Err(AuthorizeError::Page(format!(
                    "{name} is longer than {MAX_CLIENT_VALUE} bytes"
                )));
            }
            // RFC 6749 appendix A.5: VSCHAR. Anything else grows up to six times in the
            // cookie's JSON (`\u0001`).
            if get(name)
                .is_some_and(|value| !value.bytes().all(|byte| (0x20..=0x7e).contains(&byte)))
            {
                return Err(AuthorizeError::Page(format!(
                    "{name} holds a character other than printable ASCII"
                )));
            }
        }
        let state = get("state").map(str::to_owned);
        let fail = |error: &'static str, description: &str| AuthorizeError::Redirect {
            redirect_uri: redirect_uri.to_owned(),
            state: state.clone(),
            error,
            description: description.to_owned(),
        };
        match get("response_type") {
            Some("code") => {}
            // RFC 6749 §4.1.2.1: a missing parameter is an invalid request.
            None => return Err(fail("invalid_request", "missing response_type")),
            Some(_) => {
                return Err(fail(
                    "unsupported_response_type",
                    "only response_type=code is supported",
                ));
            }
        }
        // OpenID Connect Core §6.1, §6.2: a request object, by value or by reference, is not
        // supported, and the client is told so: ignored, what it holds (a `prompt=login`, a
        // `max_age`) would be dropped and the code issued without it. A `response_mode` other
        // than `query` would have the code go where the client does not look for it.
        if get("request").is_some() {
            return Err(fail(
                "request_not_supported",
                "request objects are not supported",
            ));
        }
        if get("request_uri").is_some() {
            return Err(fail(
                "request_uri_not_supported",
                "request_uri is not supported",
            ));
        }
        if get("response_mode").is_some_and(|mode| mode != "query") {
            return Err(fail(
                "invalid_request",
                "only response_mode=query is supported",
            ));
        }
        if !client.grants.contains(&GrantType::AuthorizationCode) {
            return Err(fail(
                "unauthorized_client",
                "the client may not use the authorization code grant",
            ));
        }
        // The service keeps no sign-in of its own: every authorization asks the user (at the
        // form, or at the client's `login_provider`), so one that may not (`prompt=none`,
        // OpenID Connect Core §3.1.2.1) goes back with `login_required`.
        if get("prompt").is_some_and(|prompt| prompt.split(' ').any(|value| value == "none")) {
            return Err(fail(
                "login_required",
                "the user must log in: this service keeps no sign-in to use silently",
            ));
        }
        // A client that wants the user to sign in again (before a sensitive action) says so;
        // the local form always asks, a federated login passes both on to the provider.
        let prompt_login =
            get("prompt").is_some_and(|prompt| prompt.split(' ').any(|value| value == "login"));
        let max_age = get("max_age")
            .map(|text| {
                text.parse::<u64>().map_err(|_| {
                    fail(
                        "invalid_request",
                        "max_age must be a whole number of seconds",
                    )
                })
            })
            .transpose()?;
        let code_challenge = match (get("code_challenge"), get("code_challenge_method")) {
            // RFC 7636 §4.2: the base64url of a SHA-256 digest.
            (Some(challenge), Some("S256")) if super::grants::is_token_shaped(challenge) => {
                Some(challenge.to_owned())
            }
            (Some(_), Some("S256")) => {
                return Err(fail("invalid_request", "malformed code_challenge"));
            }
            (Some(_), _) => {
                return Err(fail(
                    "invalid_request",
                    "only code_challenge_method=S256 is supported",
                ));
            }
            (None, _) if client.client_secret_hash.is_none() => {
                return Err(fail(
                    "invalid_request",
                    "PKCE with S256 is required for public clients",
                ));
            }
            (None, _) => None,
        };
        // Each scope once: repeated, they would only grow the login state's cookie.
        let mut scopes: Vec<String> = Vec::new();
        for scope in get("scope").unwrap_or("openid").split(' ') {
            if !scope.is_empty() && !scopes.iter().any(|kept| kept == scope) {
                scopes.push(scope.to_owned());
            }
        }
        if !scopes.iter().all(|scope| super::may_ask_for(client, scope)) {
            return Err(fail(
                "invalid_scope",
                "a requested scope is not allowed for this client",
            ));
        }
        Ok(AuthorizationRequest {
            client_id: client_id.to_owned(),
            redirect_uri: redirect_uri.to_owned(),
            scopes,
            state,
            nonce: get("nonce").map(str::to_owned),
            code_challenge,
            prompt_login,
            max_age,
            asked_at: prompt_login.then(|| self.now()),
        })
    }
}

pub(super) async fn show_form(
    State(service): State<Arc<TokenService>>,
    State(federation): State<Option<Arc<dyn FederatedLogin>>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: axum::http::HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let raw = query.unwrap_or_default();
    authorization_request(
        &service,
        federation.as_deref(),
        peer,
        &headers,
        Sent::Get,
        raw.as_bytes(),
    )
    .await
}

/// An authorization request, its parameters form-encoded in `raw` (the query of a GET, the
/// body of a POST): the login form, the client's login provider, or the refusal.
async fn authorization_request(
    service: &TokenService,
    federation: Option<&dyn FederatedLogin>,
    peer: std::net::SocketAddr,
    headers: &axum::http::HeaderMap,
    sent: Sent,
    raw: &[u8],
) -> Response {
    let parameters = match super::single_valued(raw) {
        Ok(parameters) => parameters,
        Err(message) => return refuse(service, AuthorizeError::Page(message)),
    };
    let request = match service.check_authorization(&parameters) {
        Ok(request) => request,
        Err(error) => return refuse(service, error),
    };
    let login_provider = service
        .client(&request.client_id)
        .and_then(|client| client.login_provider.clone());
    match login_provider {
        None => {
            let token = FormToken::for_form(headers, is_https(service.issuer()));
            login_form(&parameters, None, &token)
        }
        // A federated login sets a login cookie and prunes the browser's older ones, which a
        // cross-site POST does not carry (`SameSite=Lax`): the same request comes back as a
        // GET, a top-level navigation that carries them.
        Some(_) if sent == Sent::Post => as_get(&parameters),
        // As `/signin`: an image or a prefetch of this URL on a same-site page would set a
        // login cookie each time, pushing the browser's real login in progress out.
        Some(_) if crate::http::is_no_navigation(headers) => refuse(
            service,
            AuthorizeError::Page("not a navigation: no login is started for it".to_owned()),
        ),
        Some(provider) => match federate(federation, &provider, request, peer, headers).await {
            Ok(response) => response,
            Err(refusal) => refuse(service, AuthorizeRefusal::Federation(refusal)),
        },
    }
}

/// `303 See Other` to this endpoint with `parameters` in the query (sorted by name, each
/// encoded again: nothing of the body is copied into the header as sent).
fn as_get(parameters: &HashMap<String, String>) -> Response {
    let mut sorted: Vec<(&String, &String)> = parameters.iter().collect();
    sorted.sort();
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(sorted)
        .finish();
    see_other(crate::http::found(&format!("authorize?{query}")))
}

/// Sends the user to log in at the client's upstream provider; `/callback` comes back to
/// `TokenService::complete_federation`.
async fn federate(
    federation: Option<&dyn FederatedLogin>,
    provider_name: &str,
    request: AuthorizationRequest,
    peer: std::net::SocketAddr,
    headers: &axum::http::HeaderMap,
) -> Result<Response, Refusal> {
    let Some(federation) = federation else {
        return Err(Refusal::new(
            Rejection::Internal,
            "the client has a login_provider, but no federated login is set up",
        ));
    };
    let request = crate::session::FederatedRequest {
        client_id: request.client_id,
        redirect_uri: request.redirect_uri,
        scopes: request.scopes,
        state: request.state,
        nonce: request.nonce,
        code_challenge: request.code_challenge,
        prompt_login: request.prompt_login,
        max_age: request.max_age,
        asked_at: request.asked_at,
    };
    federation
        .start(provider_name, request, peer, headers)
        .await
        .map_err(Refusal::from)
}

/// `POST /authorize`: the login form's post, or an authorization request sent by POST (OpenID
/// Connect Core §3.1.2.1: the service must take both methods). The form's post is the one that
/// carries credentials; a post without them signs nobody in and so needs no same-site check: it
/// gets the form, or, for a client with a login provider, a `303` to the same request by GET.
pub(super) async fn submit_form(
    State(service): State<Arc<TokenService>>,
    State(federation): State<Option<Arc<dyn FederatedLogin>>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let credentials = url::form_urlencoded::parse(&body)
        .any(|(name, _)| name == "username" || name == "password");
    if !credentials {
        let federation = federation.as_deref();
        return authorization_request(&service, federation, peer, &headers, Sent::Post, &body)
            .await;
    }
    match sign_in(&service, peer, &headers, &body).await {
        Ok(response) => see_other(response),
        // An error sent back to the client is a 303 too (RFC 9700 §4.12).
        Err(refusal) => see_other(refuse(&service, refusal)),
    }
}

/// The login form's post: the code, sent back to the client, or the refusal.
async fn sign_in(
    service: &TokenService,
    peer: std::net::SocketAddr,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Result<Response, AuthorizeRefusal> {
    let parameters = super::single_valued(body).map_err(AuthorizeError::Page)?;
    let secure = is_https(service.issuer());
    let token_matches = || {
        FormToken::posted(
            headers,
            parameters.get(form_token::FIELD).map(String::as_str),
            secure,
        )
    };
    if service.addressed_to_a_route_host(headers) {
        return Err(AuthorizeRefusal::CrossSite(
            "posted to an application's host, not the issuer's",
        ));
    }
    match same_origin_post(headers, service.issuer(), token_matches) {
        Ok(()) => {}
        Err(Unvouched::CrossSite(how)) => return Err(AuthorizeRefusal::CrossSite(how)),
        // Shown again, with this browser's token: an older form, or a post by a page that
        // does not know the token (another site's, one on this origin), which signs nobody in.
        Err(Unvouched::WithoutToken) => {
            let token = FormToken::for_form(headers, secure);
            return Err(AuthorizeRefusal::FormExpired(parameters, token));
        }
    }
    let request = service.check_authorization(&parameters)?;
    // A client with a `login_provider` signs its users in there (with that provider's own
    // checks), never with a local password: the form is not shown for it, and not accepted.
    if service
        .client(&request.client_id)
        .is_some_and(|client| client.login_provider.is_some())
    {
        return Err(AuthorizeError::Page(
            "this client signs users in at its login provider, not with a password here".to_owned(),
        )
        .into());
    }
    let username = parameters.get("username").cloned().unwrap_or_default();
    // An empty password is refused as a wrong one (below), even against a hash an empty input
    // made.
    let password = parameters.get("password").cloned().unwrap_or_default();
    let user = service
        .config
        .users
        .iter()
        .find(|user| user.username == username);
    // Wrong passwords are limited like client secrets (per user and per client address), so
    // the form cannot be used to guess passwords or to run argon2 without end. A name no user
    // has is counted too: were only users' names, a name refused with 429 after ten wrong
    // passwords would be a user's, and 401 a name nobody has. Such a name is keyed by a digest
    // (a long name is not a long key) under `name:`, which a full in-process store may evict,
    // as it may an address: anyone can make up names, and they must not push out the keys
    // that protect users.
    let now = service.now();
    let name_key = match user {
        Some(user) => format!("user:{}", user.username),
        None => {
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, username.as_bytes());
            format!("name:{}", URL_SAFE_NO_PAD.encode(digest.as_ref()))
        }
    };
    let limit_keys: Vec<String> = vec![
        name_key,
        crate::http::forwarded::limit_key(service.client_address(peer.ip(), headers)),
    ];
    if service.state.limited(&limit_keys, now).await? {
        return Err(AuthorizeRefusal::RateLimited);
    }
    // Verify against a real hash even for unknown users, one made with the costliest user's
    // algorithm and parameters, so timing does not tell who exists.
    let hash = match user {
        Some(user) => user.password_hash.expose().clone(),
        None => service.unknown_user_hash().await,
    };
    let password_was_empty = password.is_empty();
    match service
        .check_password(&limit_keys, hash, password, || false)
        .await?
    {
        PasswordCheck::Right if user.is_some() && !password_was_empty => {}
        PasswordCheck::Limited => return Err(AuthorizeRefusal::RateLimited),
        PasswordCheck::Busy => return Err(AuthorizeRefusal::Busy),
        PasswordCheck::Wrong => {
            let token = FormToken::for_form(headers, secure);
            return Err(AuthorizeRefusal::WrongPassword(parameters, token));
        }
        // The random dummy hash matched (never a user), or an empty password did.
        PasswordCheck::Right => {
            service.state.count_failure(&limit_keys, now).await?;
            let token = FormToken::for_form(headers, secure);
            return Err(AuthorizeRefusal::WrongPassword(parameters, token));
        }
    }
    let code = service
        .store_code(PendingCode {
            client_id: request.client_id,
            redirect_uri: request.redirect_uri.clone(),
            code_challenge: request.code_challenge,
            nonce: request.nonce,
            scopes: request.scopes,
            principal: super::Principal::Local(username),
            issued_at: service.now(),
            signed_in: super::state::SignedIn::AtIssue,
        })
        .await
        .map_err(|error| AuthorizeRefusal::StoreUnavailable(error.to_string()))?;
    let mut params = vec![("code", code.as_str()), ("iss", service.issuer())];
    if let Some(state) = &request.state {
        params.push(("state", state));
    }
    // RFC 9700 §4.12: after a post that carried the user's credentials, a 303, which no
    // client may answer by posting them again to the redirect URI (`submit_form` makes it so).
    with_query(&request.redirect_uri, &params)
        .map(|location| crate::http::found(&location))
        .ok_or(AuthorizeRefusal::BadRedirectUri)
}

/// `response` (a redirect) as a 303 See Other.
fn see_other(mut response: Response) -> Response {
    if response.status() == StatusCode::FOUND {
        *response.status_mut() = StatusCode::SEE_OTHER;
    }
    response
}

/// Whether the issuer is served over https (the form's cookie is then `__Host-` and `Secure`).
fn is_https(issuer: &str) -> bool {
    issuer.starts_with("https://")
}

/// Why a login form's post is not taken as the form's own.
enum Unvouched {
    /// The browser said it comes from another site (`Sec-Fetch-Site`, `Origin`).
    CrossSite(&'static str),
    /// The form's token is not its cookie's.
    WithoutToken,
}

/// Refuses a login form posted from another site (login CSRF: a victim signed in as the
/// attacker): by the browser's `Sec-Fetch-Site`, by `Origin` when it names an origin (the
/// form's `Referrer-Policy: no-referrer` makes browsers send `Origin: null` for it), and, for
/// every post, by the form's token (`token_matches`, see [`form_token`]).
fn same_origin_post(
    headers: &axum::http::HeaderMap,
    issuer: &str,
    token_matches: impl FnOnce() -> bool,
) -> Result<(), Unvouched> {
    let text = |name| headers.get(name).and_then(|value| value.to_str().ok());
    if let Some(site) = text("sec-fetch-site")
        && !matches!(site, "same-origin" | "none")
    {
        return Err(Unvouched::CrossSite("Sec-Fetch-Site is not same-origin"));
    }
    if let Some(origin) = text("origin")
        && origin != "null"
    {
        let own = url::Url::parse(issuer)
            .map(|url| url.origin().ascii_serialization())
            .unwrap_or_default();
        let host_origin = |scheme: &str| {
            text("host").map(|host| format!("{scheme}://{}", host.to_ascii_lowercase()))
        };
        let same = origin == own
            || host_origin("http").as_deref() == Some(origin)
            || host_origin("https").as_deref() == Some(origin);
        if !same {
            return Err(Unvouched::CrossSite("Origin is another site"));
        }
    }
    // Asked of every post, `same-origin` ones too: a page of an application served on the
    // issuer's own origin (a route with no `host`) is `same-origin` to the browser, and its
    // HTML alone (a form and a button) could post the attacker's password; it cannot know
    // the browser's token.
    if !token_matches() {
        return Err(Unvouched::WithoutToken);
    }
    Ok(())
}

impl TokenService {
    /// The hash of a random string, made like the costliest configured user's (argon2's
    /// variant, version and parameters: an operator's hashes made by another tool may cost
    /// several times the defaults), verified against when the username is unknown. Made on a
    /// blocking thread the first time it is needed.
    async fn unknown_user_hash(&self) -> String {
        self.unknown_user_hash
            .get_or_init(|| async {
                let costliest = super::clients::costliest_hash(
                    self.config
                        .users
                        .iter()
                        .map(|user| user.password_hash.expose().as_str()),
                )
                .map(str::to_owned);
                tokio::task::spawn_blocking(move || {
                    super::clients::hash_like(&crate::random::token(), costliest.as_deref())
                })
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default()
            })
            .await
            .clone()
    }
}

fn login_form(
    parameters: &HashMap<String, String>,
    message: Option<&str>,
    token: &FormToken,
) -> Response {
    let mut hidden = format!(
        "<input type=\"hidden\" name=\"{}\" value=\"{}\">\n",
        form_token::FIELD,
        escape(token.value())
    );
    for name in PARAMETERS {
        if let Some(value) = parameters.get(*name) {
            hidden.push_str(&format!(
                "<input type=\"hidden\" name=\"{name}\" value=\"{}\">\n",
                escape(value)
            ));
        }
    }
    let notice = message
        .map(|text| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(text)))
        .unwrap_or_default();
    let body = format!(
        "{notice}<form method=\"post\" action=\"authorize\">\n{hidden}\
         <label>Username <input name=\"username\" autocomplete=\"username\" autofocus required></label>\n\
         <label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\n\
         <button type=\"submit\">Sign in</button>\n</form>"
    );
    let status = if message.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    // The chain goes on from the client's redirect URI to wherever that sends the user
    // (another origin for most apps), which no `form-action` list written here can know.
    let policy = crate::http::pages::FORM_POLICY;
    let mut response = (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        Html(page("Sign in", &body)),
    )
        .into_response();
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        axum::http::HeaderValue::from_static(policy),
    );
    token.set_on(&mut response);
    response
}
