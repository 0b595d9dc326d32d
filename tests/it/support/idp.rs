//! `TestIdp`: an OpenID Provider on 127.0.0.1:0 for the tests. It signs with aws-lc-rs directly
//! (never with Tollgate's own JOSE code, so a bug cannot cancel itself out), approves logins
//! without HTML, counts requests per endpoint, rotates keys, and misbehaves on request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};

pub use super::test_keys::Alg;
use super::test_keys::Keys;

/// Ways the provider can misbehave at its token endpoint.
#[derive(Debug, Clone, Default)]
pub struct Misbehaviour {
    pub wrong_nonce: bool,
    pub wrong_audience: bool,
    pub wrong_issuer: bool,
    pub expired_id_token: bool,
    pub bad_signature: bool,
    pub userinfo_other_subject: bool,
    /// Userinfo returns a claim so large that the session must be split over several cookies.
    pub large_userinfo: bool,
    /// The JWKS answer carries `Cache-Control: max-age=0`.
    pub jwks_no_cache: bool,
    /// The refresh grant answers `invalid_grant`.
    pub refresh_fails: bool,
    /// The code exchange's ID token carries no `sid`.
    pub no_sid: bool,
    /// Userinfo answers with this `sid` (a provider's, or an attribute an admin mapped so).
    pub userinfo_sid: Option<&'static str>,
    /// Discovery names a plain-http token endpoint on another host.
    pub plain_http_token_endpoint: bool,
    /// The refresh grant answers this status (`temporarily_unavailable`), the token unspent.
    pub refresh_status: Option<u16>,
    /// The refresh grant never answers.
    pub refresh_hangs: bool,
    /// The refresh grant spends the token at once but answers only after this many
    /// milliseconds.
    pub refresh_delay_ms: Option<u64>,
    /// How the JWKS endpoint fails.
    pub jwks_fault: JwksFault,
    /// This endpoint (`discovery`, `jwks`, `token`, `userinfo`, `introspect`) gives a valid
    /// answer padded beyond 1 MiB.
    pub huge_answer: Option<&'static str>,
    /// Discovery never answers.
    pub discovery_hangs: bool,
    /// Introspection answers only after this many milliseconds (`u64::MAX`: never).
    pub introspection_delay_ms: Option<u64>,
    /// Discovery answers this status at once, with no document.
    pub discovery_status: Option<u16>,
    /// The ID token of the code exchange was issued a week ago (and is still unexpired).
    pub week_old_id_token: bool,
    /// The ID token's `sub` (and userinfo's) is 256 characters long.
    pub long_subject: bool,
    /// The ID token's `c_hash` is over another code.
    pub wrong_c_hash: bool,
    /// The token response's `token_type` (default `Bearer`).
    pub token_type: Option<&'static str>,
    /// The code exchange answers this status with an HTML body.
    pub token_endpoint_status: Option<u16>,
    /// Discovery advertises RFC 9207 and the authorization response carries `iss`.
    pub iss_parameter: bool,
    /// The access token of the code exchange names the user by this `sub`, not the ID
    /// token's (Okta's login name, Entra ID's per-application subject).
    pub access_token_subject: Option<&'static str>,
    /// With `iss_parameter`, the authorization response leaves `iss` out anyway.
    pub omit_iss_parameter: bool,
    /// Token responses (code exchange and refresh) leave out the optional `expires_in`.
    pub no_expires_in: bool,
    /// The refresh grant keeps the refresh token valid and sends the same one back (no
    /// rotation, as many providers do).
    pub no_rotation: bool,
    /// The refresh grant's `expires_in` (default 300).
    pub refresh_expires_in: Option<i64>,
    /// The refresh grant's ID token names this provider session (`sid`) instead of the
    /// login's.
    pub refreshed_sid: Option<&'static str>,
    /// Userinfo says the user's address is not verified (`email_verified: false`), which the
    /// ID token does not say either way.
    pub userinfo_unverified_email: bool,
    /// Userinfo answers with this status, no claims.
    pub userinfo_status: Option<u16>,
    /// The code exchange answers only after this many milliseconds.
    pub code_exchange_delay_ms: Option<u64>,
    /// `/revoke` never answers.
    pub revoke_hangs: bool,
    /// `/revoke` answers this status (with `{"error":"unsupported_token_type"}` for a 4xx).
    pub revoke_status: Option<u16>,
    /// Discovery names a plain-http revocation endpoint on another host.
    pub foreign_revocation_endpoint: bool,
}

/// Ways the JWKS endpoint can fail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum JwksFault {
    #[default]
    None,
    /// `{"keys":[]}`.
    Empty,
    /// Only a symmetric (`oct`) key.
    OctOnly,
    /// This status, no keys.
    Status(u16),
    /// Never answers.
    Hangs,
}

/// A little over 1 MiB of padding.
fn padding() -> Value {
    json!("p".repeat(1024 * 1024 + 16))
}

fn huge(inner: &Inner, endpoint: &str) -> bool {
    inner.misbehaviour.lock().unwrap().huge_answer == Some(endpoint)
}

async fn hang() {
    tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
}

/// A `sub` one character longer than OpenID Connect allows.
pub fn long_subject() -> String {
    "s".repeat(256)
}

struct PendingCode {
    nonce: String,
    code_challenge: String,
    redirect_uri: String,
}

struct Inner {
    issuer: String,
    keys: Mutex<Arc<Keys>>,
    codes: Mutex<HashMap<String, PendingCode>>,
    misbehaviour: Mutex<Misbehaviour>,
    counts: Mutex<HashMap<&'static str, Arc<AtomicUsize>>>,
    last_end_session: Mutex<Option<HashMap<String, String>>>,
    last_client_auth: Mutex<Option<&'static str>>,
    /// The access and refresh token of the last authorization-code answer.
    last_tokens: Mutex<Option<(String, String)>>,
    /// Refresh tokens that may still be used (rotation: each use replaces it).
    refresh_tokens: Mutex<std::collections::HashSet<String>>,
    /// Every refresh token presented to the refresh grant, in order.
    presented_refresh_tokens: Mutex<Vec<String>>,
    /// Every token revoked at `/revoke` by the authenticated client, in order.
    revoked_tokens: Mutex<Vec<String>>,
    refresh_counter: AtomicUsize,
    /// Seconds this provider's clock is ahead of the real one (to follow a `ManualClock`).
    clock_offset: std::sync::atomic::AtomicI64,
    user_claims: Mutex<Map<String, Value>>,
}

/// The provider.
#[derive(Clone)]
pub struct TestIdp {
    inner: Arc<Inner>,
    _server: Arc<tokio::task::JoinHandle<()>>,
}

pub const CLIENT_ID: &str = "tollgate";
pub const CLIENT_SECRET: &str = "client-secret-for-tests";
pub const AUDIENCE: &str = "api";

/// Builds and signs one token.
pub struct TokenBuilder {
    inner: Arc<Inner>,
    alg: Alg,
    kid: Option<Option<String>>,
    header_typ: Option<String>,
    claims: Map<String, Value>,
}

impl TokenBuilder {
    pub fn alg(mut self, alg: Alg) -> Self {
        self.alg = alg;
        self
    }
    pub fn kid(mut self, kid: Option<&str>) -> Self {
        self.kid = Some(kid.map(str::to_owned));
        self
    }
    pub fn typ(mut self, typ: &str) -> Self {
        self.header_typ = Some(typ.to_owned());
        self
    }
    pub fn claim(mut self, name: &str, value: Value) -> Self {
        if value.is_null() {
            self.claims.remove(name);
        } else {
            self.claims.insert(name.to_owned(), value);
        }
        self
    }
    pub fn expires_in(self, seconds: i64) -> Self {
        let exp = now() + seconds;
        self.claim("exp", json!(exp))
    }
    pub fn sign(self) -> String {
        let keys = self.inner.keys.lock().unwrap().clone();
        keys.sign_jwt(
            self.alg,
            self.kid.as_ref().map(Option::as_deref),
            self.header_typ.as_deref().unwrap_or("JWT"),
            &Value::Object(self.claims),
        )
    }
}

fn now_nanos() -> u128 {
    #[allow(clippy::disallowed_methods)]
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    now.as_nanos()
}

pub fn now() -> i64 {
    #[allow(clippy::disallowed_methods)]
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    now as i64
}

impl TestIdp {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let mut user = Map::new();
        user.insert("sub".into(), json!("alice"));
        user.insert("email".into(), json!("alice@example.com"));
        user.insert("groups".into(), json!(["admin", "dev"]));
        let inner = Arc::new(Inner {
            issuer,
            keys: Mutex::new(Arc::new(Keys::new("rsa-1"))),
            codes: Mutex::new(HashMap::new()),
            misbehaviour: Mutex::new(Misbehaviour::default()),
            counts: Mutex::new(HashMap::new()),
            last_end_session: Mutex::new(None),
            last_client_auth: Mutex::new(None),
            last_tokens: Mutex::new(None),
            refresh_tokens: Mutex::new(std::collections::HashSet::new()),
            presented_refresh_tokens: Mutex::new(Vec::new()),
            revoked_tokens: Mutex::new(Vec::new()),
            refresh_counter: AtomicUsize::new(0),
            clock_offset: std::sync::atomic::AtomicI64::new(0),
            user_claims: Mutex::new(user),
        });
        let router = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .route("/end_session", get(end_session))
            .route("/userinfo", get(userinfo))
            .route("/introspect", post(introspect))
            .route("/revoke", post(revoke))
            .with_state(inner.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self {
            inner,
            _server: Arc::new(server),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// An access token for `alice` with audience `api`, valid for five minutes, RS256.
    pub fn access_token(&self) -> TokenBuilder {
        access_token(&self.inner)
    }

    /// A back-channel logout token for `alice` (OIDC Back-Channel Logout 1.0 §2.4).
    pub fn logout_token(&self) -> TokenBuilder {
        self.access_token()
            .typ("logout+jwt")
            .claim("aud", json!(CLIENT_ID))
            .claim("exp", Value::Null)
            .claim("scope", Value::Null)
            .claim("jti", json!(format!("jti-{}", now_nanos())))
            .claim("sid", json!("provider-session-1"))
            .claim(
                "events",
                json!({"http://schemas.openid.net/event/backchannel-logout": {}}),
            )
    }

    /// Moves this provider's clock, as a test moves Tollgate's `ManualClock`.
    pub fn advance_clock(&self, seconds: i64) {
        self.inner.clock_offset.fetch_add(seconds, Ordering::SeqCst);
    }

    /// How many times an endpoint was called.
    pub fn count(&self, endpoint: &'static str) -> usize {
        self.counter(endpoint).load(Ordering::SeqCst)
    }

    fn counter(&self, endpoint: &'static str) -> Arc<AtomicUsize> {
        self.inner
            .counts
            .lock()
            .unwrap()
            .entry(endpoint)
            .or_default()
            .clone()
    }

    /// Replaces every key; the RSA key gets `kid`.
    pub fn rotate_keys(&self, rsa_kid: &str) {
        *self.inner.keys.lock().unwrap() = Arc::new(Keys::new(rsa_kid));
    }

    /// Sets a claim of the user (in tokens issued from now on and in userinfo); `Null` removes it.
    pub fn set_user_claim(&self, name: &str, value: Value) {
        let mut claims = self.inner.user_claims.lock().unwrap();
        if value.is_null() {
            claims.remove(name);
        } else {
            claims.insert(name.to_owned(), value);
        }
    }

    pub fn misbehave(&self, misbehaviour: Misbehaviour) {
        *self.inner.misbehaviour.lock().unwrap() = misbehaviour;
    }

    pub fn last_end_session(&self) -> Option<HashMap<String, String>> {
        self.inner.last_end_session.lock().unwrap().clone()
    }

    /// How the client authenticated at the last token request: `client_secret_basic`,
    /// `client_secret_post` or `none`.
    pub fn last_client_auth(&self) -> Option<&'static str> {
        *self.inner.last_client_auth.lock().unwrap()
    }

    /// The tokens revoked at `/revoke` so far, in order.
    pub fn revoked_tokens(&self) -> Vec<String> {
        self.inner.revoked_tokens.lock().unwrap().clone()
    }

    /// The access token and refresh token the last login (code exchange) was given.
    pub fn last_tokens(&self) -> Option<(String, String)> {
        self.inner.last_tokens.lock().unwrap().clone()
    }

    /// Every refresh token presented to the refresh grant so far, in order (spent ones too).
    pub fn presented_refresh_tokens(&self) -> Vec<String> {
        self.inner.presented_refresh_tokens.lock().unwrap().clone()
    }
}

fn access_token(inner: &Arc<Inner>) -> TokenBuilder {
    let mut claims = inner.user_claims.lock().unwrap().clone();
    let now = now() + inner.clock_offset.load(Ordering::SeqCst);
    claims.insert("iss".into(), json!(inner.issuer));
    claims.insert("aud".into(), json!(AUDIENCE));
    claims.insert("iat".into(), json!(now));
    claims.insert("exp".into(), json!(now + 300));
    claims.insert("scope".into(), json!("openid read"));
    TokenBuilder {
        inner: inner.clone(),
        alg: Alg::RS256,
        kid: None,
        header_typ: Some("at+jwt".to_owned()),
        claims,
    }
}

fn count(inner: &Inner, endpoint: &'static str) {
    inner
        .counts
        .lock()
        .unwrap()
        .entry(endpoint)
        .or_default()
        .fetch_add(1, Ordering::SeqCst);
}

async fn discovery(State(inner): State<Arc<Inner>>) -> Response {
    count(&inner, "discovery");
    if inner.misbehaviour.lock().unwrap().discovery_hangs {
        hang().await;
    }
    if let Some(status) = inner.misbehaviour.lock().unwrap().discovery_status {
        return StatusCode::from_u16(status).unwrap().into_response();
    }
    let issuer = &inner.issuer;
    let token_endpoint = if inner.misbehaviour.lock().unwrap().plain_http_token_endpoint {
        "http://tokens.elsewhere.example/token".to_owned()
    } else {
        format!("{issuer}/token")
    };
    let iss_parameter = inner.misbehaviour.lock().unwrap().iss_parameter;
    let mut document = json!({
        "authorization_response_iss_parameter_supported": iss_parameter,
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": token_endpoint,
        "jwks_uri": format!("{issuer}/jwks"),
        "end_session_endpoint": format!("{issuer}/end_session"),
        "userinfo_endpoint": format!("{issuer}/userinfo"),
        "introspection_endpoint": format!("{issuer}/introspect"),
        "revocation_endpoint": if inner.misbehaviour.lock().unwrap().foreign_revocation_endpoint {
            "http://revocations.elsewhere.example/revoke".to_owned()
        } else {
            format!("{issuer}/revoke")
        },
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    });
    if huge(&inner, "discovery") {
        document["padding"] = padding();
    }
    Json(document).into_response()
}

async fn jwks(State(inner): State<Arc<Inner>>) -> Response {
    count(&inner, "jwks");
    let keys = inner.keys.lock().unwrap().clone();
    let cache_control = if inner.misbehaviour.lock().unwrap().jwks_no_cache {
        "max-age=0"
    } else {
        "max-age=3600"
    };
    let fault = inner.misbehaviour.lock().unwrap().jwks_fault;
    let mut document = match fault {
        JwksFault::None => keys.jwks(),
        JwksFault::Empty => json!({"keys": []}),
        JwksFault::OctOnly => {
            json!({"keys": [{"kty": "oct", "kid": "rsa-1", "k": URL_SAFE_NO_PAD.encode("a shared secret")}]})
        }
        JwksFault::Status(status) => {
            return StatusCode::from_u16(status).unwrap().into_response();
        }
        JwksFault::Hangs => {
            hang().await;
            return StatusCode::GATEWAY_TIMEOUT.into_response();
        }
    };
    if huge(&inner, "jwks") {
        document["padding"] = padding();
    }
    ([("cache-control", cache_control)], Json(document)).into_response()
}

async fn authorize(
    State(inner): State<Arc<Inner>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    count(&inner, "authorize");
    assert_eq!(
        params.get("response_type").map(String::as_str),
        Some("code")
    );
    assert_eq!(params.get("client_id").map(String::as_str), Some(CLIENT_ID));
    assert_eq!(
        params.get("code_challenge_method").map(String::as_str),
        Some("S256")
    );
    let code = format!("code-{}", inner.codes.lock().unwrap().len());
    let redirect_uri = params["redirect_uri"].clone();
    inner.codes.lock().unwrap().insert(
        code.clone(),
        PendingCode {
            nonce: params["nonce"].clone(),
            code_challenge: params["code_challenge"].clone(),
            redirect_uri: redirect_uri.clone(),
        },
    );
    let state =
        url::form_urlencoded::byte_serialize(params["state"].as_bytes()).collect::<String>();
    let mut location = format!("{redirect_uri}?code={code}&state={state}");
    let misbehaviour = inner.misbehaviour.lock().unwrap().clone();
    if misbehaviour.iss_parameter && !misbehaviour.omit_iss_parameter {
        let iss = url::form_urlencoded::byte_serialize(inner.issuer.as_bytes()).collect::<String>();
        location.push_str(&format!("&iss={iss}"));
    }
    (StatusCode::FOUND, [("location", location)]).into_response()
}

async fn token(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: String) -> Response {
    count(&inner, "token");
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let expected_basic = format!(
        "Basic {}",
        STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    let basic = headers.get("authorization").and_then(|v| v.to_str().ok());
    let form_id = form.get("client_id").map(String::as_str);
    let form_secret = form.get("client_secret").map(String::as_str);
    let method = match (basic, form_id, form_secret) {
        (Some(basic), None, None) if basic == expected_basic => Some("client_secret_basic"),
        (None, Some(CLIENT_ID), Some(CLIENT_SECRET)) => Some("client_secret_post"),
        // A public client: PKCE below is its only proof.
        (None, Some(CLIENT_ID), None) => Some("none"),
        _ => None,
    };
    *inner.last_client_auth.lock().unwrap() = method;
    if method.is_none() {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    if form.get("grant_type").map(String::as_str) == Some("refresh_token") {
        if inner.misbehaviour.lock().unwrap().refresh_hangs {
            count(&inner, "refresh");
            hang().await;
        }
        // The token is spent at once; the answer may come late (and be lost on the way).
        let answer = refresh(
            &inner,
            form.get("refresh_token").cloned().unwrap_or_default(),
        );
        let delay = inner.misbehaviour.lock().unwrap().refresh_delay_ms;
        if let Some(delay) = delay {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
        return answer;
    }
    let misbehaviour = inner.misbehaviour.lock().unwrap().clone();
    if let Some(status) = misbehaviour.token_endpoint_status {
        return (
            StatusCode::from_u16(status).unwrap(),
            [("content-type", "text/html")],
            "<html><body>Internal Server Error</body></html>",
        )
            .into_response();
    }
    if let Some(delay) = misbehaviour.code_exchange_delay_ms {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    let code = form.get("code").cloned().unwrap_or_default();
    let Some(pending) = inner.codes.lock().unwrap().remove(&code) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant"})),
        )
            .into_response();
    };
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    if URL_SAFE_NO_PAD.encode(digest.as_ref()) != pending.code_challenge
        || form.get("redirect_uri") != Some(&pending.redirect_uri)
    {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant"})),
        )
            .into_response();
    }
    let mut issued_access_token = access_token(&inner);
    if let Some(subject) = misbehaviour.access_token_subject {
        issued_access_token = issued_access_token.claim("sub", json!(subject));
    }
    let issued_access_token = issued_access_token.sign();
    let left_half = |value: &str| {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, value.as_bytes());
        URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16])
    };
    let at_hash = left_half(&issued_access_token);
    let c_hash = if misbehaviour.wrong_c_hash {
        left_half("another-code")
    } else {
        left_half(&code)
    };
    let mut id_token = access_token(&inner)
        .typ("JWT")
        .claim(
            "aud",
            json!(if misbehaviour.wrong_audience {
                "someone-else"
            } else {
                CLIENT_ID
            }),
        )
        .claim(
            "nonce",
            json!(if misbehaviour.wrong_nonce {
                "not-the-nonce".to_owned()
            } else {
                pending.nonce
            }),
        )
        .claim("at_hash", json!(at_hash))
        .claim("c_hash", json!(c_hash))
        .claim(
            "sid",
            if misbehaviour.no_sid {
                Value::Null
            } else {
                json!("provider-session-1")
            },
        )
        .claim("scope", Value::Null);
    if misbehaviour.week_old_id_token {
        let now = now() + inner.clock_offset.load(Ordering::SeqCst);
        id_token = id_token.claim("iat", json!(now - 7 * 24 * 3600));
    }
    if misbehaviour.long_subject {
        id_token = id_token.claim("sub", json!(long_subject()));
    }
    if misbehaviour.wrong_issuer {
        id_token = id_token.claim("iss", json!("https://mix-up.example"));
    }
    if misbehaviour.expired_id_token {
        id_token = id_token.expires_in(-3600);
    }
    let mut id_token = id_token.sign();
    if misbehaviour.bad_signature {
        // Change a character well inside the signature, so real signature bits change.
        let position = id_token.len() - 20;
        let replacement = if id_token.as_bytes()[position] == b'A' {
            "B"
        } else {
            "A"
        };
        id_token.replace_range(position..=position, replacement);
    }
    let refresh_token = new_refresh_token(&inner);
    *inner.last_tokens.lock().unwrap() = Some((issued_access_token.clone(), refresh_token.clone()));
    let token_type = misbehaviour.token_type.unwrap_or("Bearer");
    let mut answer = json!({"access_token": issued_access_token, "id_token": id_token, "token_type": token_type, "expires_in": 300, "refresh_token": refresh_token});
    if misbehaviour.no_expires_in {
        answer.as_object_mut().unwrap().remove("expires_in");
    }
    if huge(&inner, "token") {
        answer["padding"] = padding();
    }
    Json(answer).into_response()
}

async fn end_session(
    State(inner): State<Arc<Inner>>,
    Query(params): Query<HashMap<String, String>>,
) -> &'static str {
    count(&inner, "end_session");
    *inner.last_end_session.lock().unwrap() = Some(params);
    "signed out"
}

async fn userinfo(State(inner): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    count(&inner, "userinfo");
    if !headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer "))
    {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if let Some(status) = inner.misbehaviour.lock().unwrap().userinfo_status {
        return StatusCode::from_u16(status).unwrap().into_response();
    }
    let mut claims = inner.user_claims.lock().unwrap().clone();
    claims.insert("department".into(), json!("engineering"));
    if inner.misbehaviour.lock().unwrap().userinfo_unverified_email {
        claims.insert("email_verified".into(), json!(false));
    }
    if inner.misbehaviour.lock().unwrap().large_userinfo {
        claims.insert("biography".into(), json!("x".repeat(6000)));
    }
    if let Some(sid) = inner.misbehaviour.lock().unwrap().userinfo_sid {
        claims.insert("sid".into(), json!(sid));
    }
    if inner.misbehaviour.lock().unwrap().userinfo_other_subject {
        claims.insert("sub".into(), json!("mallory"));
    }
    if huge(&inner, "userinfo") {
        claims.insert("padding".into(), padding());
    }
    if inner.misbehaviour.lock().unwrap().long_subject {
        claims.insert("sub".into(), json!(long_subject()));
    }
    Json(Value::Object(claims)).into_response()
}

/// A refresh token long enough that finding it in sealed bytes means a leak, not chance (a
/// three-character token turns up in a base64 value of a kilobyte about once in 250 tries).
fn new_refresh_token(inner: &Inner) -> String {
    let n = inner.refresh_counter.fetch_add(1, Ordering::SeqCst);
    let token = format!("refresh-token-{n}-of-the-test-idp");
    inner.refresh_tokens.lock().unwrap().insert(token.clone());
    token
}

/// The refresh grant with rotation: a used refresh token is spent.
fn refresh(inner: &Arc<Inner>, presented: String) -> Response {
    count(inner, "refresh");
    inner
        .presented_refresh_tokens
        .lock()
        .unwrap()
        .push(presented.clone());
    if let Some(status) = inner.misbehaviour.lock().unwrap().refresh_status {
        return (
            StatusCode::from_u16(status).unwrap(),
            Json(json!({"error": "temporarily_unavailable"})),
        )
            .into_response();
    }
    let no_rotation = inner.misbehaviour.lock().unwrap().no_rotation;
    let spent = if no_rotation {
        inner.refresh_tokens.lock().unwrap().contains(&presented)
    } else {
        inner.refresh_tokens.lock().unwrap().remove(&presented)
    };
    if !spent || inner.misbehaviour.lock().unwrap().refresh_fails {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant"})),
        )
            .into_response();
    }
    let issued_access_token = access_token(inner)
        .claim("jti", json!(format!("refreshed-{}", now_nanos())))
        .sign();
    let sid = inner
        .misbehaviour
        .lock()
        .unwrap()
        .refreshed_sid
        .unwrap_or("provider-session-1");
    let id_token = access_token(inner)
        .typ("JWT")
        .claim("aud", json!(CLIENT_ID))
        .claim("sid", json!(sid))
        .claim("scope", Value::Null)
        .sign();
    let refresh_token = if no_rotation {
        presented
    } else {
        new_refresh_token(inner)
    };
    let expires_in = inner
        .misbehaviour
        .lock()
        .unwrap()
        .refresh_expires_in
        .unwrap_or(300);
    let mut answer = json!({"access_token": issued_access_token, "id_token": id_token, "token_type": "Bearer", "expires_in": expires_in, "refresh_token": refresh_token});
    if inner.misbehaviour.lock().unwrap().no_expires_in {
        answer.as_object_mut().unwrap().remove("expires_in");
    }
    Json(answer).into_response()
}

/// The `token` a client posted, authenticated with HTTP Basic (`/introspect`, `/revoke`);
/// `None` when it did not authenticate.
fn client_posted_token(headers: &HeaderMap, body: &str) -> Option<String> {
    let expected_basic = format!(
        "Basic {}",
        STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected_basic.as_str()) {
        return None;
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    Some(form.get("token").cloned().unwrap_or_default())
}

/// The answer to a client that did not authenticate.
fn invalid_client() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"error": "invalid_client"})),
    )
        .into_response()
}

/// RFC 7009: the client authenticates as at `/introspect`; a refresh token it names can no
/// longer be used, and the answer is 200 whether it was known or not.
async fn revoke(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: String) -> Response {
    count(&inner, "revoke");
    if inner.misbehaviour.lock().unwrap().revoke_hangs {
        hang().await;
    }
    if let Some(status) = inner.misbehaviour.lock().unwrap().revoke_status {
        return (
            StatusCode::from_u16(status).unwrap(),
            Json(json!({"error": "unsupported_token_type"})),
        )
            .into_response();
    }
    let Some(token) = client_posted_token(&headers, &body) else {
        return invalid_client();
    };
    inner.refresh_tokens.lock().unwrap().remove(&token);
    inner.revoked_tokens.lock().unwrap().push(token);
    StatusCode::OK.into_response()
}

/// RFC 7662: `opaque-…` tokens are active (for `api`, issued by this provider), except
/// `opaque-inactive`; `opaque-other-audience`, `opaque-other-issuer`, `opaque-no-issuer`,
/// `opaque-refresh-token`, `opaque-spring-refresh-token`, `opaque-kind-only` and
/// `opaque-long-subject` answer what they say. The client must
/// authenticate with HTTP Basic.
async fn introspect(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: String) -> Response {
    count(&inner, "introspect");
    let Some(token) = client_posted_token(&headers, &body) else {
        return invalid_client();
    };
    let delay = inner.misbehaviour.lock().unwrap().introspection_delay_ms;
    match delay {
        Some(u64::MAX) => hang().await,
        Some(delay) => tokio::time::sleep(std::time::Duration::from_millis(delay)).await,
        None => {}
    }
    let now = now() + inner.clock_offset.load(Ordering::SeqCst);
    let answer = match token.as_str() {
        "opaque-inactive" => json!({"active": false}),
        "opaque-other-audience" => {
            json!({"active": true, "aud": "other", "sub": "alice", "exp": now + 300})
        }
        "opaque-other-issuer" => {
            json!({"active": true, "iss": "https://other.example", "aud": AUDIENCE, "sub": "alice", "exp": now + 300})
        }
        "opaque-no-issuer" => {
            json!({"active": true, "aud": AUDIENCE, "sub": "alice", "exp": now + 300})
        }
        // Spring Authorization Server's answer for a refresh token or a code, which it looks
        // up whatever the hint: no audience, no kind, no subject.
        "opaque-spring-refresh-token" => {
            json!({"active": true, "client_id": "another-client", "iat": now - 10, "exp": now + 300})
        }
        // Doorkeeper's answer for an access token: its kind, no audience.
        "opaque-kind-only" => {
            json!({"active": true, "token_type": "Bearer", "sub": "alice", "exp": now + 300})
        }
        "opaque-refresh-token" => {
            json!({"active": true, "iss": inner.issuer, "token_type": "refresh_token", "aud": AUDIENCE, "sub": "alice", "exp": now + 300})
        }
        "opaque-long-subject" => {
            json!({"active": true, "iss": inner.issuer, "aud": AUDIENCE, "sub": long_subject(), "exp": now + 300})
        }
        other if other.starts_with("opaque-") => {
            json!({"active": true, "iss": inner.issuer, "token_type": "Bearer", "aud": AUDIENCE, "sub": "alice", "scope": "read", "exp": now + 300, "email": "alice@example.com"})
        }
        _ => json!({"active": false}),
    };
    let mut answer = answer;
    if huge(&inner, "introspect") {
        answer["padding"] = padding();
    }
    Json(answer).into_response()
}
