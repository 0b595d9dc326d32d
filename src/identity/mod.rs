//! Who is calling: the credentials of a request (session cookie, `Authorization: Bearer`, the
//! configured token cookie, in that order) turned into an `Identity` for one provider.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue};

use crate::http::forwarded::ClientAddress;
use crate::http::rejection::{Refusal, Rejection};
use crate::oidc::Provider;
use crate::oidc::provider::CredentialError;
use crate::policy::Trace;
pub mod other_tokens;
pub mod refresh;

use crate::session::CookieAttributes;
use crate::session::store::{SessionError, Sessions};
use crate::session::{Session, request_cookies};
use crate::token::Claims;

/// Which credential established the identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// Tollgate's session cookie.
    SessionCookie,
    /// `Authorization: Bearer`.
    Bearer,
    /// The configured token cookie.
    TokenCookie,
}

impl Credential {
    /// A short name for logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::SessionCookie => "session",
            Self::Bearer => "bearer",
            Self::TokenCookie => "token_cookie",
        }
    }
}

/// The authenticated caller of one request.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Claims of the ID token (session) or the access token (bearer, token cookie).
    pub claims: Claims,
    /// How the caller proved it.
    pub credential: Credential,
    /// The session, when the credential was a session cookie.
    pub session: Option<Arc<Session>>,
    /// The bearer token's `Authorization` header (shared, not copied).
    bearer_header: Option<HeaderValue>,
    /// The token cookie's token.
    cookie_token: Option<String>,
    /// `Set-Cookie` values to send back (a refreshed cookie session).
    pub set_cookies: Vec<String>,
}

/// Where a surface's requests find their sessions: the store (none without session secrets)
/// and the refresher, shared by every surface so a refresh is single-flight across them.
#[derive(Clone)]
pub struct SessionSource {
    /// Sessions and login-state cookies, when session secrets are configured.
    pub sessions: Option<Arc<Sessions>>,
    /// Refreshes session tokens before they expire.
    pub refresher: refresh::Refresher,
}

impl SessionSource {
    /// How a request reads its session: `None` without session secrets.
    pub fn access(&self, attributes: CookieAttributes) -> Option<SessionAccess<'_>> {
        Some(SessionAccess {
            sessions: self.sessions.as_ref()?,
            refresher: &self.refresher,
            attributes,
        })
    }
}

/// What the session cookie is read with: the store, the refresher, and the attributes of any
/// cookie written back.
#[derive(Clone, Copy)]
pub struct SessionAccess<'a> {
    /// Where sessions are.
    pub sessions: &'a Arc<Sessions>,
    /// Refreshes expiring tokens.
    pub refresher: &'a refresh::Refresher,
    /// For a refreshed cookie session, and whether the session cookie must come with its
    /// binding (`CookieAttributes::bound`).
    pub attributes: CookieAttributes,
}

/// Whether `Authorization: Bearer` counts as a credential where the identity is sought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerTokens {
    /// Bearer tokens are validated (forward-auth, routes with `accept_bearer`).
    Accepted,
    /// The `Authorization` header is left alone.
    Ignored,
}

impl Identity {
    /// The access token: the bearer or cookie token, or the session's.
    pub fn access_token(&self) -> Option<&str> {
        if let Some(header) = &self.bearer_header {
            let text = header.to_str().ok()?.trim();
            return text.split_once(' ').map(|(_, token)| token.trim());
        }
        if let Some(token) = &self.cookie_token {
            return Some(token);
        }
        self.session.as_ref()?.access_token.as_deref()
    }
}

/// Why no identity could be established.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IdentityError {
    /// No credential of any kind.
    #[error("no credential")]
    Missing,
    /// A credential was present and refused.
    #[error("{credential} refused: {reason}")]
    Invalid {
        /// Which one.
        credential: &'static str,
        /// Why (no secret, no token).
        reason: String,
    },
    /// The session store could not be reached.
    #[error("session store unavailable: {0}")]
    StoreUnavailable(String),
    /// The provider could not be reached to check a credential.
    #[error("provider unavailable: {reason}")]
    ProviderUnavailable {
        /// Why.
        reason: String,
        /// `Set-Cookie` values the answer carries all the same (a session refresh that failed
        /// after the provider rotated the refresh token: the cookie store's new cookie).
        set_cookies: Vec<String>,
    },
    /// The provider was not asked about a token: the client address's questions were refused
    /// (or answered unusably) too often lately.
    #[error("{}", CredentialError::TooManyRefused)]
    TooManyRefused,
}

impl IdentityError {
    /// Whether a bearer token (`Authorization: Bearer`) was sent and refused: RFC 6750's
    /// `invalid_token`.
    pub fn is_bearer_refusal(&self) -> bool {
        matches!(self, Self::Invalid { credential, .. } if *credential == Credential::Bearer.as_str())
    }
}

/// What a client is told whose token the provider was not asked about
/// (`IdentityError::TooManyRefused`).
pub const TOO_MANY_UNKNOWN_TOKENS: &str =
    "too many token checks failed for this address lately; try again in a minute";

/// What the caller is told when no identity could be established: no credential or a refused
/// one is 401 (RFC 6750 `invalid_token` when it was a bearer token), an unreachable store 503,
/// an unreachable provider 502, a token not asked about (`TooManyRefused`) 429; the error's
/// text is the log line's reason.
impl From<IdentityError> for Refusal {
    fn from(error: IdentityError) -> Self {
        let rejection = match &error {
            IdentityError::Missing => Rejection::Unauthenticated,
            IdentityError::Invalid { .. } if error.is_bearer_refusal() => Rejection::InvalidToken,
            IdentityError::Invalid { .. } => Rejection::Unauthenticated,
            IdentityError::StoreUnavailable(_) => Rejection::StoreUnavailable,
            IdentityError::ProviderUnavailable { .. } => Rejection::ProviderUnavailable,
            IdentityError::TooManyRefused => {
                Rejection::TooManyRequests(TOO_MANY_UNKNOWN_TOKENS.to_owned())
            }
        };
        match error {
            IdentityError::StoreUnavailable(reason) => Self::new(rejection, reason),
            IdentityError::ProviderUnavailable {
                reason,
                set_cookies,
            } => Self::new(rejection, reason).with_cookies(set_cookies),
            other => Self::new(rejection, other.to_string()),
        }
    }
}

/// RFC 6750 §2: a client sends its token by one method only. Two `Authorization` headers, an
/// `Authorization` header with an `access_token` in `query` (the URL the application will
/// see), or two cookies named `token_cookie` (Tollgate checks the first, some frameworks read
/// the last; names compared as ASP.NET Core and PHP read them: `cookie_name_as_read`) leave
/// open which token the application behind reads, so they are refused
/// (400) before any credential is looked at. Returns why.
pub fn ambiguous_credentials(
    headers: &HeaderMap,
    query: Option<&str>,
    token_cookie: Option<&str>,
) -> Option<&'static str> {
    let mut authorization = headers.get_all(axum::http::header::AUTHORIZATION).iter();
    let first = authorization.next();
    if authorization.next().is_some() {
        return Some("two Authorization headers");
    }
    if let Some(name) = token_cookie {
        let wanted = cookie_name_as_read(name);
        let mut found = 0;
        for header in headers.get_all(axum::http::header::COOKIE) {
            found += match crate::http::utf8(header.as_bytes()) {
                Some(text) => crate::http::cookies::pairs(text)
                    .filter(|pair| cookie_name_as_read(pair.name) == wanted)
                    .count(),
                // Not read as a credential or another token here (`cookies_read_as`), where an
                // application (Go, Node) reads the header's other pairs: a token cookie in it
                // would go unchecked, or be the one of two that the application takes.
                // Read both ways an application may decode it: UTF-8 with replacements, and
                // Latin-1 (Starlette, WSGI), where `\xa0` is a space that `strip()` drops.
                None => {
                    let bytes = header.as_bytes();
                    let latin1: String = bytes.iter().map(|&byte| char::from(byte)).collect();
                    let readings = [String::from_utf8_lossy(bytes).into_owned(), latin1];
                    if readings.iter().any(|text| {
                        crate::http::cookies::pairs(text)
                            .any(|pair| cookie_name_as_read(pair.name) == wanted)
                    }) {
                        return Some("a token cookie in a Cookie header that is not UTF-8");
                    }
                    0
                }
            };
            if found > 1 {
                return Some("two token cookies");
            }
        }
    }
    // Read only with an `Authorization` header: most requests have none beside a query.
    let token_in_query = || {
        query.is_some_and(|query| {
            other_tokens::access_token_parameters(query)
                .next()
                .is_some()
        })
    };
    if first.is_some() && token_in_query() {
        return Some("a token both in the Authorization header and in the query");
    }
    None
}

/// Whether a `Cookie` header names a cookie read as `token_cookie` (`cookie_name_as_read`)
/// right after a `,`: where Envoy describes two `Cookie` headers as one, their values joined
/// with `,`, such a token cookie is the second header's first, hidden from every check in the
/// first one's last value, while the application behind reads both headers. (Servers should
/// set no `,` in a cookie value, RFC 6265 §4.1.1, but browsers keep one: only the text from a
/// `,` to the next `;` is looked at, so `pref=a,; odj_access_token=…` is not refused.)
pub fn token_cookie_after_a_comma(headers: &HeaderMap, token_cookie: &str) -> bool {
    let wanted = cookie_name_as_read(token_cookie);
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .map(|header| String::from_utf8_lossy(header.as_bytes()))
        .any(|text| {
            text.split(',').skip(1).any(|after| {
                let first = after.split(';').next().unwrap_or_default();
                crate::http::cookies::pairs(first)
                    .next()
                    .is_some_and(|pair| cookie_name_as_read(pair.name) == wanted)
            })
        })
}

/// The cookies of `headers` that an application may read as the one named `name`
/// (`cookie_name_as_read`), in order.
fn cookies_read_as<'a>(
    headers: &'a HeaderMap,
    name: &str,
) -> impl Iterator<Item = crate::http::cookies::Pair<'a>> {
    let wanted = cookie_name_as_read(name);
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|header| crate::http::utf8(header.as_bytes()))
        .flat_map(crate::http::cookies::pairs)
        .filter(move |pair| cookie_name_as_read(pair.name) == wanted)
}

/// A cookie name as the laxest application reads it: percent-decoded (PHP), without case
/// (ASP.NET Core), and with `.`, space and `[` as `_` (PHP). Two names the same here may be
/// one cookie to an application.
fn cookie_name_as_read(name: &str) -> String {
    percent_encoding::percent_decode_str(name)
        .decode_utf8_lossy()
        // Python's `str.strip()` (Django's `parse_cookie`, Starlette) also drops U+00A0 and
        // U+0085 around a name; and Envoy hands a byte that is not UTF-8 over as `!` (its
        // Check's `headers` without `encode_raw_headers`, and always to the `/envoy/` HTTP
        // variant), where the application behind gets the byte: `\xa0` to it may be `!` here.
        .trim_matches(|character: char| character.is_whitespace() || character == '!')
        .chars()
        .map(|character| match character {
            '.' | ' ' | '[' => '_',
            other => other.to_ascii_lowercase(),
        })
        .collect()
}

/// The bearer token of an `Authorization` header, if it uses the Bearer scheme. The token is
/// read as UTF-8 (`http::utf8`), not with `HeaderValue::to_str` (a byte at a time, 900
/// instructions for a 1.2 KB token on every request): a token that is not UTF-8 makes the
/// header malformed, and one with non-ASCII letters, which no issuer signs, is refused by
/// validation instead (401 either way). Another scheme is no bearer token, whatever its bytes.
pub fn bearer_token(headers: &HeaderMap) -> Option<Result<&str, ()>> {
    bearer_of(headers.get(axum::http::header::AUTHORIZATION)?)
}

/// The tokens an application may read in an `Authorization` value that is not the caller's
/// credential: a Bearer token however it is spaced (`Bearer<TAB>…`, which RFC 7235 does not
/// allow and Python's `split()` reads), or a JWT-shaped credential under any other scheme but
/// Basic, or none (`JWT …` as djangorestframework-jwt reads it, `Token …`, the bare token).
/// The scheme ends at white space as any reader may split there ([`white_space_at`]:
/// `Bearer` and a NO-BREAK SPACE is a Bearer token to a WSGI application). Read a second time
/// where it holds a `!`, taking `!` for white space too: Envoy hands a byte that is not UTF-8
/// over as `!` (its Check's `headers` without `encode_raw_headers`, and always to `/envoy/`),
/// while the application gets the byte; the first reading keeps `X!y <token>` (a scheme `!`
/// may be part of) found. Each reading's token, once.
/// `Err` for a Bearer scheme with no token, or a token that is not UTF-8.
pub(crate) fn tokens_an_application_may_read(
    value: &HeaderValue,
) -> impl Iterator<Item = Result<&str, ()>> {
    if let Some(bearer) = bearer_of(value) {
        return [Some(bearer), None].into_iter().flatten();
    }
    let bytes = value.as_bytes();
    let plain = token_after_a_scheme(bytes, false);
    let replaced = memchr::memchr(b'!', bytes)
        .and_then(|_| token_after_a_scheme(bytes, true))
        .filter(|token| Some(token) != plain.as_ref());
    [plain, replaced].into_iter().flatten()
}

/// The token of an `Authorization` value read as [`tokens_an_application_may_read`] says,
/// `!` taken for white space when `bang`.
fn token_after_a_scheme(bytes: &[u8], bang: bool) -> Option<Result<&str, ()>> {
    let bytes = trim_white_space(bytes, bang);
    let split = (0..bytes.len()).find(|at| white_space_at(&bytes[*at..], bang) > 0);
    let (scheme, credential) = match split {
        Some(at) => (&bytes[..at], trim_white_space(&bytes[at..], bang)),
        None => (&b""[..], bytes),
    };
    if scheme.eq_ignore_ascii_case(b"bearer") {
        return Some(
            crate::http::utf8(credential)
                .filter(|token| !token.is_empty())
                .ok_or(()),
        );
    }
    // Under another scheme, the first word: an application that splits the value takes it
    // (`JWT <token> x`, `split()[1]`).
    let word = match (0..credential.len()).find(|at| white_space_at(&credential[*at..], bang) > 0) {
        Some(end) => &credential[..end],
        None => credential,
    };
    if scheme.eq_ignore_ascii_case(b"basic") || !is_jwt_shaped(word) {
        return None;
    }
    Some(crate::http::utf8(word).ok_or(()))
}

/// How many bytes of white space, as an application may split a header at it, `bytes` starts
/// with: ASCII white space; NEL and NO-BREAK SPACE as single bytes (Python's `str.split()` on a
/// header read as Latin-1, as WSGI hands it over); Unicode white space in UTF-8 (Go's
/// `strings.Fields`, a UTF-8 reader's `split()`); and, when `bang`, `!`, as which Envoy hands
/// over a byte that is not UTF-8 (NEL and NO-BREAK SPACE among them).
fn white_space_at(bytes: &[u8], bang: bool) -> usize {
    match bytes {
        [0xc2, 0x85 | 0xa0, ..] => 2,
        [0xe1, 0x9a, 0x80, ..]
        | [0xe2, 0x80, 0x80..=0x8a | 0xa8 | 0xa9 | 0xaf, ..]
        | [0xe2, 0x81, 0x9f, ..]
        | [0xe3, 0x80, 0x80, ..] => 3,
        [byte, ..] if byte.is_ascii_whitespace() || matches!(byte, 0x0b | 0x85 | 0xa0) => 1,
        [b'!', ..] if bang => 1,
        _ => 0,
    }
}

/// `bytes` without the white space ([`white_space_at`]) at either end.
fn trim_white_space(mut bytes: &[u8], bang: bool) -> &[u8] {
    loop {
        let at_start = white_space_at(bytes, bang);
        if at_start > 0 {
            bytes = &bytes[at_start..];
            continue;
        }
        // The longest white space that ends `bytes`: a NO-BREAK SPACE in UTF-8 ends in the
        // byte that is one in Latin-1.
        let at_end = (1..=3.min(bytes.len()))
            .rev()
            .find(|length| white_space_at(&bytes[bytes.len() - length..], bang) == *length);
        match at_end {
            Some(length) => bytes = &bytes[..bytes.len() - length],
            None => return bytes,
        }
    }
}

/// Three base64url parts joined by `.`, the first two not empty (the third is for an unsigned
/// `alg: none` token).
fn is_jwt_shaped(bytes: &[u8]) -> bool {
    let mut parts = bytes.split(|byte| *byte == b'.');
    let part = |part: Option<&[u8]>, may_be_empty: bool| {
        part.is_some_and(|part| {
            (may_be_empty || !part.is_empty())
                && part
                    .iter()
                    .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_'))
        })
    };
    part(parts.next(), false)
        && part(parts.next(), false)
        && part(parts.next(), true)
        && parts.next().is_none()
}

/// `bearer_token` of one `Authorization` value. The scheme and the spaces around the token
/// are found in the bytes (white space is ASCII in a header: a character `str::trim` would
/// also cut, such as U+00A0, stays, and the token is refused); only the token is read as
/// UTF-8, and when it is not, the header is malformed.
fn bearer_of(value: &HeaderValue) -> Option<Result<&str, ()>> {
    let bytes = value.as_bytes().trim_ascii();
    let space = memchr::memchr(b' ', bytes)?;
    let (scheme, token) = bytes.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = token.trim_ascii();
    if token.is_empty() {
        return Some(Err(()));
    }
    Some(crate::http::utf8(token).ok_or(()))
}

fn token_error(credential: Credential, error: CredentialError) -> IdentityError {
    match error {
        CredentialError::Token(reason) => IdentityError::Invalid {
            credential: credential.as_str(),
            reason: reason.to_string(),
        },
        CredentialError::Provider(error @ crate::oidc::ProviderError::StoreUnavailable(_)) => {
            IdentityError::StoreUnavailable(error.to_string())
        }
        CredentialError::Provider(error) => IdentityError::ProviderUnavailable {
            reason: error.to_string(),
            set_cookies: Vec::new(),
        },
        CredentialError::TooManyRefused => IdentityError::TooManyRefused,
    }
}

/// Establishes the caller's identity at `provider` from, in order, the session cookie, the
/// bearer token and the token cookie (SPEC §4). An unusable session cookie is logged and
/// skipped; a bearer token that is present decides on its own. `client` is the request's client
/// address, read only when an opaque token is to be introspected (`oidc::introspection_gate`).
///
/// # Errors
/// `Missing`, `Invalid`, `ProviderUnavailable`, `StoreUnavailable` or `TooManyRefused`.
pub async fn authenticate(
    headers: &HeaderMap,
    provider: &Arc<Provider>,
    sessions: Option<SessionAccess<'_>>,
    token_cookie: Option<&str>,
    bearer_tokens: BearerTokens,
    now: crate::clock::UnixTime,
    client: ClientAddress<'_>,
) -> Result<Identity, IdentityError> {
    authenticate_traced(
        headers,
        provider,
        sessions,
        token_cookie,
        bearer_tokens,
        now,
        client,
        &mut Trace::off(),
    )
    .await
}

/// The attributes a refreshed session cookie is written with: the request's, except where its
/// URL is not known (`CookieAttributes::UNKNOWN_BASE`, which reads no binding), where the
/// cookie keeps a binding when the browser sent it one (a session signed in over https keeps
/// working on Tollgate's own endpoints, which know their URL) and gets none otherwise (a
/// cookie another host planted never becomes a bound one).
fn written_with(
    access: SessionAccess<'_>,
    cookies: &crate::session::Cookies<'_>,
) -> CookieAttributes {
    let attributes = access.attributes;
    if attributes.bound || !attributes.secure {
        return attributes;
    }
    CookieAttributes {
        bound: access.sessions.jar.is_bound(cookies),
        ..attributes
    }
}

/// `authenticate`, recording each credential in `trace`. When the trace is explaining, the
/// session is only read (`Sessions::peek`): not touched, not ended, not refreshed.
///
/// # Errors
/// As `authenticate`.
#[allow(clippy::too_many_arguments)]
pub async fn authenticate_traced(
    headers: &HeaderMap,
    provider: &Arc<Provider>,
    sessions: Option<SessionAccess<'_>>,
    token_cookie: Option<&str>,
    bearer_tokens: BearerTokens,
    now: crate::clock::UnixTime,
    client: ClientAddress<'_>,
    trace: &mut Trace,
) -> Result<Identity, IdentityError> {
    let cookies = request_cookies(headers);
    if let Some(access) = sessions {
        // Without a cookie there is no session to look for.
        let loaded = if cookies.is_empty() {
            Ok(None)
        } else if access.sessions.jar.planted(&cookies, access.attributes) {
            Err(SessionError::Cookie(
                crate::session::SessionCookieError::Unbound,
            ))
        } else if trace.is_explaining() {
            // Boxed: explaining is rare, and its future need not be a part of every request's.
            Box::pin(access.sessions.peek(&cookies, now)).await
        } else {
            access.sessions.load(&cookies, now).await
        };
        match loaded {
            Ok(Some(session))
                if session.made_at(
                    provider.name(),
                    &provider.config.issuer,
                    &provider.config.client_id,
                ) =>
            {
                if trace.is_explaining() {
                    trace.record("session cookie", "valid", || {
                        format!("a session at provider `{}`", session.provider)
                    });
                    if access.refresher.is_due(&session, now) {
                        trace.record("session refresh", "skipped", || {
                            "its access token is due for refresh: the request would refresh it \
                             first, and the rules would then see the provider's current claims"
                                .to_owned()
                        });
                    }
                    return Ok(Identity {
                        claims: session.claims.clone(),
                        credential: Credential::SessionCookie,
                        session: Some(session),
                        bearer_header: None,
                        cookie_token: None,
                        set_cookies: Vec::new(),
                    });
                }
                match access
                    .refresher
                    .refresh_if_due(
                        provider,
                        access.sessions,
                        &cookies,
                        session,
                        now,
                        written_with(access, &cookies),
                    )
                    .await
                {
                    Ok((session, set_cookies)) => {
                        let claims = session.claims.clone();
                        return Ok(Identity {
                            claims,
                            credential: Credential::SessionCookie,
                            session: Some(session),
                            bearer_header: None,
                            cookie_token: None,
                            set_cookies,
                        });
                    }
                    // The session ended with the refused refresh: no session credential.
                    Err(error @ refresh::RefreshError::Ended(_)) => {
                        tracing::info!(%error, "session refresh refused");
                    }
                    // The session is kept, but its tokens have expired and cannot be renewed now.
                    Err(
                        ref error @ refresh::RefreshError::ProviderUnavailable {
                            ref set_cookies,
                            ..
                        },
                    ) => {
                        return Err(IdentityError::ProviderUnavailable {
                            reason: error.to_string(),
                            set_cookies: set_cookies.clone(),
                        });
                    }
                    Err(error @ refresh::RefreshError::Store(_)) => {
                        return Err(IdentityError::StoreUnavailable(error.to_string()));
                    }
                }
            }
            Ok(Some(session)) => {
                trace.record("session cookie", "ignored", || {
                    if session.provider == provider.name() {
                        format!(
                            "a session at provider `{}` made before its issuer or client_id \
                             changed",
                            session.provider
                        )
                    } else {
                        format!(
                            "a session at provider `{}`, not `{}`",
                            session.provider,
                            provider.name()
                        )
                    }
                });
                tracing::info!("session of another provider ignored");
            }
            Ok(None) => trace.record("session cookie", "none", || "no session cookie".to_owned()),
            Err(SessionError::Store(error)) => {
                trace.record("session cookie", "error", || error.to_string());
                return Err(IdentityError::StoreUnavailable(error.to_string()));
            }
            Err(SessionError::Cookie(error)) => {
                trace.record("session cookie", "ignored", || error.to_string());
                tracing::info!(%error, "session cookie ignored");
            }
        }
    }
    // Looked up once: its token, and on success the header itself for the upstream.
    let authorization = headers.get(axum::http::header::AUTHORIZATION);
    let bearer = match bearer_tokens {
        BearerTokens::Accepted => authorization.and_then(bearer_of),
        BearerTokens::Ignored => {
            if authorization.is_some() {
                trace.record("bearer token", "ignored", || {
                    "bearer tokens are not accepted here".to_owned()
                });
            }
            None
        }
    };
    match bearer {
        Some(Ok(token)) => {
            let claims = match provider.validate_access_token_at(token, now, client).await {
                Ok(claims) => claims,
                Err(error) => {
                    let error = token_error(Credential::Bearer, error);
                    trace.record("bearer token", "invalid", || error.to_string());
                    return Err(error);
                }
            };
            trace.record("bearer token", "valid", || {
                format!("an access token of provider `{}`", provider.name())
            });
            return Ok(Identity {
                claims,
                credential: Credential::Bearer,
                session: None,
                bearer_header: authorization.cloned(),
                cookie_token: None,
                set_cookies: Vec::new(),
            });
        }
        Some(Err(())) => {
            trace.record("bearer token", "invalid", || {
                "malformed Authorization header".to_owned()
            });
            return Err(IdentityError::Invalid {
                credential: "bearer",
                reason: "malformed Authorization header".to_owned(),
            });
        }
        None if bearer_tokens == BearerTokens::Accepted => {
            trace.record("bearer token", "none", || {
                "no `Authorization: Bearer` header".to_owned()
            });
        }
        None => {}
    }
    if let Some(name) = token_cookie {
        let Some(token) = cookies.get(name) else {
            trace.record("token cookie", "none", || format!("no `{name}` cookie"));
            return Err(IdentityError::Missing);
        };
        let claims = match provider.validate_access_token_at(token, now, client).await {
            Ok(claims) => claims,
            Err(error) => {
                let error = token_error(Credential::TokenCookie, error);
                trace.record("token cookie", "invalid", || error.to_string());
                return Err(error);
            }
        };
        trace.record("token cookie", "valid", || {
            format!("an access token of provider `{}`", provider.name())
        });
        return Ok(Identity {
            claims,
            credential: Credential::TokenCookie,
            session: None,
            bearer_header: None,
            cookie_token: Some((*token).to_owned()),
            set_cookies: Vec::new(),
        });
    }
    Err(IdentityError::Missing)
}

#[cfg(test)]
mod tests;
