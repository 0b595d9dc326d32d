//! Reading, overriding and validating the configuration (SPEC §2–3). `load` returns either a
//! fully validated `Config` or every problem found, each with its key path.

mod client_key;
mod env;
mod inline_secrets;
mod raw;
mod redis_target;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use url::Url;

use crate::login::redirect::AllowedRedirectDomain;
use crate::secret::Secret;

pub use client_key::{AssertionAudience, ClientKeyConfig};
pub use redis_target::{RedisTarget, SentinelAuth};

/// One thing wrong with a configuration, located by its key path (`provider[1].issuer`) or by
/// the environment variable that set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Where: a key path or a variable name.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigProblem {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: {}", self.path, self.message)
    }
}

/// A validated configuration. Handlers only ever see this, never the raw file.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[server]`
    pub server: ServerConfig,
    /// `[[provider]]`, in file order.
    pub providers: Vec<ProviderConfig>,
    /// `[session]`
    pub session: SessionConfig,
    /// `[forward_auth]`, when enabled.
    pub forward_auth: Option<ForwardAuthConfig>,
    /// `[token_service]`, when present.
    pub token_service: Option<TokenServiceConfig>,
    /// `[[route]]`, in file order.
    pub routes: Vec<RouteConfig>,
    /// SHA-256 of the TOML text this was loaded from, in hex (what `sha256sum` prints for the
    /// file): the live config's name in `tollgate_config_info` and the load's log line.
    pub source_sha256: String,
    /// `[telemetry]`, when present: spans exported over OTLP/HTTP.
    pub telemetry: Option<TelemetryConfig>,
    /// The `*_file` keys whose secret was read from a file every user of the host may read
    /// (`warnings` names them).
    pub secret_files_readable_by_all: Vec<String>,
}

impl Config {
    /// The provider of this name.
    pub fn provider(&self, name: &str) -> Option<&ProviderConfig> {
        self.providers.iter().find(|provider| provider.name == name)
    }
}

/// `[server]`
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Public listener: forward-auth, token service.
    pub listen: SocketAddr,
    /// Admin listener: metrics, health.
    pub admin_listen: Option<SocketAddr>,
    /// The external base URL, when fixed.
    pub public_url: Option<Url>,
    /// Peers whose `X-Forwarded-*` / `X-Original-*` headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Where redirects after login and logout may go, besides relative paths.
    pub allowed_redirect_domains: Vec<AllowedRedirectDomain>,
    /// Bearer token for `/admin/*`.
    pub admin_token: Option<Secret<String>>,
    /// Clock-skew leeway for `exp` / `nbf` / `iat`.
    pub leeway: Duration,
    /// Log line format.
    pub log_format: LogFormat,
    /// A request's head must arrive within this, else the connection is closed.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight and no bytes moving is closed after this.
    pub keepalive_timeout: Duration,
    /// `tls_cert_file` / `tls_key_file`: serve https on `listen`.
    pub tls: Option<ListenerTls>,
    /// The most connections open at once on the public listener, and on Envoy's gRPC listener
    /// (each); the next waits to be accepted.
    pub max_connections: usize,
}

/// The public listener's certificate: the files (re-read on SIGHUP) and what they held when
/// the config was loaded.
#[derive(Debug, Clone)]
pub struct ListenerTls {
    /// PEM certificate chain, leaf first.
    pub cert_file: std::path::PathBuf,
    /// PEM private key.
    pub key_file: std::path::PathBuf,
    /// The chain and key, checked to belong together.
    pub key: std::sync::Arc<rustls::sign::CertifiedKey>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// JSON when standard error is not a terminal, else text.
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Text,
}

/// How Tollgate authenticates itself at a provider's token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// HTTP Basic with the client secret.
    ClientSecretBasic,
    /// Client id and secret in the form body.
    ClientSecretPost,
    /// Public client: PKCE only.
    None,
    /// A JWT signed with `ProviderConfig::client_key` (RFC 7523 §2.2).
    PrivateKeyJwt,
}

/// `[[provider]]`: an upstream OpenID Provider.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// Unique name routes and sections refer to.
    pub name: String,
    /// The exact `iss` value; discovery starts from it.
    pub issuer: String,
    /// Tollgate's client id at this provider.
    pub client_id: String,
    /// Tollgate's client secret at this provider.
    pub client_secret: Option<Secret<String>>,
    /// Token endpoint authentication.
    pub client_auth: ClientAuth,
    /// The key of `ClientAuth::PrivateKeyJwt` (and only then).
    pub client_key: Option<ClientKeyConfig>,
    /// Scopes requested at login.
    pub scopes: Vec<String>,
    /// Keys from disk instead of `jwks_uri`.
    pub jwks_file: Option<PathBuf>,
    /// `aud` values accepted on bearer tokens; empty means no bearer token is accepted.
    pub audiences: Vec<String>,
    /// Opaque (non-JWT) bearer tokens are checked at the introspection endpoint (RFC 7662).
    pub introspection: bool,
    /// RP-initiated logout when the provider offers it.
    pub end_session: bool,
    /// Sent to the provider at logout.
    pub post_logout_redirect_uri: Option<Url>,
    /// At most one JWKS re-fetch per this interval on an unknown `kid`.
    pub jwks_refetch_interval: Duration,
    /// Longest wait for one answer of the provider (discovery, JWKS, token, userinfo,
    /// introspection); also the longest a request waits on a refresh or a JWKS fetch.
    pub timeout: Duration,
    /// At login, an ID token issued (`iat`) longer ago than this is refused.
    pub max_id_token_age: Duration,
}

/// `[session]`
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Where sessions live.
    pub store: SessionStoreKind,
    /// Name of the session cookie (and prefix of its chunks and of state cookies).
    pub cookie_name: String,
    /// Sealing secrets: the first seals, all open.
    pub secrets: Vec<Secret<String>>,
    /// Absolute lifetime of a session.
    pub lifetime: Duration,
    /// Idle timeout (server-side stores).
    pub idle_timeout: Duration,
    /// Whether the file or environment set `idle_timeout` (the cookie store cannot honour it:
    /// `warnings` says so).
    pub idle_timeout_given: bool,
    /// Refresh tokens before they expire.
    pub refresh: bool,
    /// How long before expiry a token counts as expiring.
    pub refresh_before: Duration,
    /// Where the memory store keeps its sessions across restarts.
    pub state_file: Option<PathBuf>,
    /// Where the Redis store is.
    pub redis: Option<RedisTarget>,
    /// PEM certificates to trust for `rediss://` instead of the system's.
    pub redis_ca: Option<Vec<u8>>,
    /// Every Redis key Tollgate writes starts with this (`session.redis_key_prefix`).
    pub redis_key_prefix: String,
}

/// `session.store`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStoreKind {
    /// Sealed cookies; nothing kept on the server.
    Cookie,
    /// In this process, optionally persisted to `state_file`.
    Memory,
    /// In Redis, shared by every replica.
    Redis,
}

/// What `/auth` answers when there is no credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unauthenticated {
    /// 401, for ingress-nginx `auth-url` + `auth-signin`.
    Status,
    /// 302 to `/signin`, for Traefik and Caddy.
    Redirect,
}

/// `[forward_auth]`
#[derive(Debug, Clone)]
pub struct ForwardAuthConfig {
    /// The provider whose tokens and logins are accepted.
    pub provider: String,
    /// A cookie that may carry a bearer JWT.
    pub token_cookie: Option<String>,
    /// 401 or redirect.
    pub unauthenticated: Unauthenticated,
    /// Where Envoy's ext_authz gRPC `Check` is answered (SPEC §4), when set.
    pub grpc_listen: Option<std::net::SocketAddr>,
}

/// The path prefix of Envoy's HTTP `ext_authz` endpoint on the public listener (SPEC §4):
/// mounted with forward-auth, so no route may lie under it.
pub const ENVOY_HTTP_PREFIX: &str = "/envoy";

/// `[telemetry]`: where request spans go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// The collector's OTLP/HTTP traces URL: `otlp_endpoint` with `/v1/traces` appended.
    pub traces_url: Url,
    /// `service.name` of every span's resource.
    pub service_name: String,
}

/// `[token_service]`
#[derive(Debug, Clone)]
pub struct TokenServiceConfig {
    /// The `iss` of issued tokens; discovery lives below it.
    pub issuer: Url,
    /// PEM key (ES256 or RS256); generated when absent.
    pub signing_key_file: Option<PathBuf>,
    /// Keys that signed before the current one: still published and accepted, never used to
    /// sign (key rotation; remove one once its tokens have expired).
    pub retired_key_files: Vec<PathBuf>,
    /// Lifetime of issued access and ID tokens.
    pub token_lifetime: Duration,
    /// How long after a sign-in its grant may still be refreshed: `session.lifetime`, the same
    /// bound a browser's session has (refreshing never asks the upstream provider again).
    pub grant_lifetime: Duration,
    /// Where codes, grants, refresh tokens, revocations and failure counters are kept.
    pub store: TokenStoreKind,
    /// Registered clients.
    pub clients: Vec<ClientConfig>,
    /// Local users of the login form.
    pub users: Vec<UserConfig>,
}

/// `token_service.store`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStoreKind {
    /// In this process only.
    Memory,
    /// In Redis at `session.redis_url`, shared by every replica.
    Redis,
}

/// A grant type of the token service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantType {
    /// RFC 6749 §4.4.
    ClientCredentials,
    /// RFC 6749 §4.1 with PKCE.
    AuthorizationCode,
    /// RFC 6749 §6.
    RefreshToken,
}

/// `[[token_service.client]]`
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The client id.
    pub client_id: String,
    /// PHC-format argon2 hash of the secret; `None` for public clients.
    pub client_secret_hash: Option<Secret<String>>,
    /// Allowed grants.
    pub grants: Vec<GrantType>,
    /// Scopes the client may ask for.
    pub scopes: Vec<String>,
    /// Registered redirect URIs, matched exactly.
    pub redirect_uris: Vec<String>,
    /// Prefix of `sub` in issued tokens.
    pub source: String,
    /// `aud` of issued tokens.
    pub audience: String,
    /// Claims added to every token of this client.
    pub extra_claims: serde_json::Map<String, serde_json::Value>,
    /// The upstream provider its users log in at (federation); the local form when absent.
    pub login_provider: Option<String>,
}

/// `[[token_service.user]]`: a local user of the built-in login form.
#[derive(Debug, Clone)]
pub struct UserConfig {
    /// Login name; also the identity in `sub`.
    pub username: String,
    /// PHC-format argon2 hash of the password.
    pub password_hash: Secret<String>,
    /// Display name.
    pub name: Option<String>,
    /// E-mail address.
    pub email: Option<String>,
    /// Groups, issued as the `groups` claim.
    pub groups: Vec<String>,
    /// Further claims.
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// What a route does with a request that carries no valid credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnauthenticated {
    /// Browsers log in; API calls get 401.
    Login,
    /// 401.
    Deny,
    /// Forwarded without identity (optional authentication).
    Pass,
    /// Forwarded as it is; the login starts only when the upstream answers 401 (seed 000).
    LoginOnUpstream401,
}

/// Where the value of an identity header comes from (`route.headers`).
#[derive(Debug, Clone)]
pub enum HeaderSource {
    /// The access token.
    AccessToken,
    /// The ID token (sessions only).
    IdToken,
    /// base64 of the identity's claims as JSON (Kong's `X-Userinfo`).
    UserinfoBase64,
    /// `Bearer <access token>`.
    BearerAccessToken,
    /// One claim, arrays joined with `,`.
    Claim(String),
    /// An RFC 9535 JSONPath over the claims.
    Json(serde_json_path::JsonPath),
}

/// `[[route]]`: an upstream behind the authenticating reverse proxy.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Host to match (lower case, without port); any host when absent.
    pub host: Option<String>,
    /// Path prefix on whole segments (`/` or `/x`, no trailing slash).
    pub path_prefix: String,
    /// Where requests go.
    pub upstream: Upstream,
    /// Whose logins and tokens are accepted.
    pub provider: String,
    /// What happens without a credential.
    pub on_unauthenticated: OnUnauthenticated,
    /// Whether `Authorization: Bearer` tokens are accepted.
    pub accept_bearer: bool,
    /// Requests that need no authentication.
    pub skip: Vec<crate::policy::SkipRule>,
    /// Connecting to the upstream.
    pub connect_timeout: Duration,
    /// Waiting for the upstream's response headers.
    pub read_timeout: Duration,
    /// The protocols a client may switch to (`Upgrade`), lower case: `websocket` unless set.
    pub upgrades: Vec<String>,
    /// Authorisation requirements.
    pub require: crate::policy::Requirements,
    /// Identity headers sent upstream.
    pub headers: Vec<(axum::http::HeaderName, HeaderSource)>,
}

/// A route's upstream: its URL, split once into what every forwarded request needs.
#[derive(Debug, Clone)]
pub struct Upstream {
    url: Url,
    /// Tells upstreams apart in connection pools: unique in the process.
    id: u64,
    /// Held by every copy of this upstream (its config, the requests sent to it): a pool drops
    /// a connection to an upstream nothing holds any more.
    held: std::sync::Arc<()>,
    /// `host:port` to connect to.
    address: String,
    /// `host[:port]` for a request that arrives without a `Host` header.
    authority: axum::http::HeaderValue,
    /// The URL's path without its trailing `/`: empty for an upstream at the root.
    base_path: String,
    /// For an https upstream: how to speak TLS to it.
    tls: Option<crate::tls::UpstreamTls>,
}

impl Upstream {
    /// Splits an `http` URL with a host (`tls` none), or an `https` one (reached as `tls` says);
    /// `None` for anything else, so an https upstream never goes without TLS.
    pub fn new(url: Url, tls: Option<crate::tls::UpstreamTls>) -> Option<Self> {
        match (url.scheme(), &tls) {
            ("http", None) | ("https", Some(_)) => {}
            _ => return None,
        }
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let host = url.host_str()?;
        let port = url.port_or_known_default()?;
        let address = format!("{host}:{port}");
        let authority = url[url::Position::BeforeHost..url::Position::AfterPort]
            .parse()
            .ok()?;
        let base_path = url.path().trim_end_matches('/').to_owned();
        Some(Self {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            held: std::sync::Arc::new(()),
            url,
            address,
            authority,
            base_path,
            tls,
        })
    }

    /// How to speak TLS to it: `None` for an http upstream.
    pub fn tls(&self) -> Option<&crate::tls::UpstreamTls> {
        self.tls.as_ref()
    }

    /// The URL as configured.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Unique in the process.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether a config or a request still holds this upstream: gone once the last copy is.
    pub fn held(&self) -> std::sync::Weak<()> {
        std::sync::Arc::downgrade(&self.held)
    }

    /// `host:port` to connect to.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The `Host` header for a request that has none.
    pub fn authority(&self) -> &axum::http::HeaderValue {
        &self.authority
    }

    /// The origin-form target a request for `path_and_query` is sent with: the upstream's
    /// path, then the request's. `None` when the two do not make a URI.
    pub fn request_target(
        &self,
        path_and_query: Option<&axum::http::uri::PathAndQuery>,
    ) -> Option<axum::http::Uri> {
        let path_and_query = match path_and_query {
            Some(value) if self.base_path.is_empty() => value.clone(),
            Some(value) => format!("{}{value}", self.base_path).parse().ok()?,
            None if self.base_path.is_empty() => axum::http::uri::PathAndQuery::from_static("/"),
            None => format!("{}/", self.base_path).parse().ok()?,
        };
        Some(axum::http::Uri::from(path_and_query))
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.url.fmt(formatter)
    }
}

/// Parses, overrides and validates a configuration.
///
/// # Errors
/// Every problem found, each with its key path; never only the first.
pub fn load(toml_text: &str, env: &BTreeMap<String, String>) -> Result<Config, Vec<ConfigProblem>> {
    validate::load(toml_text, env)
}

pub use inline_secrets::readable_file_warning;
pub use validate::is_same_issuer;

/// `TOLLGATE_…` variables spelt like an override whose first segment names no section (a
/// misspelt `TOLLGATE_SESSON__STORE`): ignored as SPEC §2 says, and named by `check` and at
/// `serve`'s start so that the typo does not go unnoticed.
pub fn ignored_variables(env: &BTreeMap<String, String>) -> Vec<String> {
    env::ignored_variables(env)
}

/// Whether every user of the host may read the file at `path` (its mode has the bit for
/// others set; the link's target's, for a link, as a Kubernetes secret volume's files are).
/// A file that cannot be looked at says nothing.
pub(crate) fn readable_by_all(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|metadata| metadata.permissions().mode() & 0o004 != 0)
}

/// Whether users of the host other than its owner may change the file at `path`: its mode
/// lets others write it, or its directory's does without the sticky bit (then anyone may
/// put another file in its place). A file that cannot be looked at says nothing.
pub(crate) fn changeable_by_others(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path).map_or(0, |metadata| metadata.permissions().mode())
    };
    let directory = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or_else(|| std::path::Path::new("."));
    let directory = mode(directory);
    mode(path) & 0o002 != 0 || (directory & 0o002 != 0 && directory & 0o1000 == 0)
}

/// Whether every match of `pattern` starts at the start of the path (`^` or `\\A` before each
/// alternative): `^/health$|/static/` is not, its second branch matches anywhere.
fn anchored_at_start(pattern: &str) -> bool {
    regex_syntax::parse(pattern).is_ok_and(|hir| {
        hir.properties()
            .look_set_prefix()
            .contains(regex_syntax::hir::Look::Start)
    })
}

/// Settings that are valid but unsafe in most deployments: `check` prints them and `serve` logs
/// them at start, each naming its key.
pub fn warnings(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    // Valid (SPEC §3: a list is a Cluster), and easily written for one server by a template
    // that makes lists: the Cluster client then meets "cluster support disabled".
    if let Some(RedisTarget::Cluster(nodes)) = &config.session.redis
        && nodes.len() == 1
    {
        warnings.push(
            "session.redis_url: a list of one node is read as a Redis Cluster's seed node; \
             write a string (not a list) for one Redis server"
                .to_owned(),
        );
    }
    // Read again while running (each refresh of the keys, an unknown `kid`): whoever may
    // change it chooses the keys every token is checked with, no reload needed.
    for (index, provider) in config.providers.iter().enumerate() {
        if let Some(file) = &provider.jwks_file
            && changeable_by_others(file)
        {
            warnings.push(format!(
                "provider[{index}].jwks_file: every user of this host may change the file (its \
                 mode, or its directory's, lets others write): Tollgate reads it again while \
                 running, so whoever writes it chooses the keys tokens are checked with; make \
                 it and its directory writable by their owner only (chmod o-w)"
            ));
        }
    }
    let mut readable: Vec<(String, &std::path::Path)> = Vec::new();
    if let Some(tls) = &config.server.tls {
        readable.push(("server.tls_key_file".to_owned(), &tls.key_file));
    }
    if let Some(service) = &config.token_service {
        if let Some(path) = service.signing_key_file.as_deref() {
            readable.push(("token_service.signing_key_file".to_owned(), path));
        }
        // A retired key still verifies: whoever reads it signs tokens this service accepts.
        for (index, path) in service.retired_key_files.iter().enumerate() {
            readable.push((format!("token_service.retired_key_files[{index}]"), path));
        }
    }
    for key in config.secret_files_readable_by_all.iter().cloned().chain(
        readable
            .into_iter()
            .filter(|(_, path)| readable_by_all(path))
            .map(|(key, _)| key),
    ) {
        warnings.push(format!(
            "{key}: the file is readable by every user of this host (its mode lets others \
             read it); make it readable by Tollgate's user or group only (chmod o-r; in \
             Kubernetes, the secret volume's defaultMode 0440 with the pod's fsGroup, as the \
             base in deploy/kubernetes does)"
        ));
    }
    if config
        .server
        .trusted_proxies
        .iter()
        .any(|net| net.prefix_len() == 0)
    {
        warnings.push(
            "server.trusted_proxies: a /0 network trusts every client's X-Forwarded-* and \
             X-Original-* headers; list only the proxies in front of Tollgate"
                .to_owned(),
        );
    }
    let plain_outside_loopback =
        |url: &Url, plain: &[&str]| plain.contains(&url.scheme()) && !on_loopback(url);
    if let Some(url) = &config.server.public_url
        && plain_outside_loopback(url, &["http"])
    {
        warnings.push(
            "server.public_url: plain http outside loopback sends session cookies and \
             authorization codes unencrypted; use https"
                .to_owned(),
        );
    }
    for (index, provider) in config.providers.iter().enumerate() {
        if Url::parse(&provider.issuer).is_ok_and(|url| plain_outside_loopback(&url, &["http"])) {
            warnings.push(format!(
                "provider[{index}].issuer: plain http outside loopback: whoever is on the path \
                 can hand Tollgate their own signing keys (forged tokens are then accepted) \
                 and read its client secret; use https"
            ));
        }
    }
    if let Some(service) = &config.token_service
        && plain_outside_loopback(&service.issuer, &["http"])
    {
        warnings.push(
            "token_service.issuer: plain http outside loopback sends codes, tokens and client \
             secrets unencrypted; use https"
                .to_owned(),
        );
    }
    // RFC 9700 §2.6: a code goes to a plain-http redirect URI only on loopback (RFC 8252's
    // native apps); elsewhere whoever is on the path takes it (with a public client's PKCE
    // the code alone is worth nothing, a confidential one's needs the secret: still a warning).
    for (index, client) in config
        .token_service
        .iter()
        .flat_map(|service| service.clients.iter())
        .enumerate()
    {
        for uri in &client.redirect_uris {
            if Url::parse(uri).is_ok_and(|url| plain_outside_loopback(&url, &["http"])) {
                warnings.push(format!(
                    "token_service.client[{index}].redirect_uris: `{uri}` is plain http \
                     outside loopback: the authorization code travels unencrypted; use https"
                ));
            }
        }
    }
    if let Some(redis) = &config.session.redis
        && redis_password_in_clear(redis, |url| {
            plain_outside_loopback(url, &["redis", "valkey"])
        })
    {
        warnings.push(
            "session.redis_url: the Redis password goes unencrypted to a host outside \
             loopback (and, through Sentinel, to whichever master the path names); use \
             rediss:// or rediss+sentinel://"
                .to_owned(),
        );
    }
    // Valid (SPEC §3's own example sets it), and easily read as a limit that holds.
    if config.session.idle_timeout_given && config.session.store == SessionStoreKind::Cookie {
        warnings.push(
            "session.idle_timeout: the cookie store cannot end a session left unused (the \
             cookie carries the whole session, and a copy of it stays valid until \
             `lifetime`); use store = \"memory\" or \"redis\" for an idle timeout"
                .to_owned(),
        );
    }
    // Valid (oidc-guard's patterns are searched, not anchored), and easily read as a prefix:
    // `/healthz` skips `/admin/healthz` too.
    for (index, route) in config.routes.iter().enumerate() {
        for (rule_index, rule) in route.skip.iter().enumerate() {
            let pattern = rule.pattern.as_str();
            if !anchored_at_start(pattern) {
                warnings.push(format!(
                    "route[{index}].skip[{rule_index}]: `{pattern}` matches anywhere in a path \
                     (under `/admin/` too); anchor each alternative with `^` unless that is \
                     meant"
                ));
            }
        }
    }
    // Valid (optional authentication, SPEC §5), and easily read as a guarded route.
    for (index, route) in config.routes.iter().enumerate() {
        if !route.require.is_empty()
            && matches!(
                route.on_unauthenticated,
                OnUnauthenticated::Pass | OnUnauthenticated::LoginOnUpstream401
            )
        {
            warnings.push(format!(
                "route[{index}].require: holds only for signed-in requests; on_unauthenticated \
                 = \"pass\" or \"login_on_upstream_401\" forwards anonymous ones unchecked (use \
                 \"login\" or \"deny\" where the requirements must hold for everyone)"
            ));
        }
    }
    warnings.extend(requirements_shadowed_by_host_routes(&config.routes));
    warnings
}

/// Valid (a route naming the host wins over routes for any host, SPEC §5), and easily missed:
/// a route without a host that requires something (`/admin`, group `admin`) is not the route
/// for its paths on a host that has a route of its own covering them (`/` of
/// `app.example.com`) or some of them (`/admin/reports`), so its requirements do not hold
/// there, unless that route requires the same.
fn requirements_shadowed_by_host_routes(routes: &[RouteConfig]) -> Vec<String> {
    let covers = |prefix: &str, path: &str| {
        prefix == "/"
            || path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    // What decides who gets through, alike (the provider, anonymous requests, skip rules,
    // the requirements).
    let same_requirements = |left: &RouteConfig, right: &RouteConfig| {
        let gate = |route: &RouteConfig| {
            format!(
                "{}\0{:?}\0{:?}\0{:?}",
                route.provider, route.on_unauthenticated, route.skip, route.require
            )
        };
        gate(left) == gate(right)
    };
    let mut warnings = Vec::new();
    for (index, route) in routes.iter().enumerate() {
        if route.host.is_some() || route.require.is_empty() {
            continue;
        }
        let mut hosts: Vec<&str> = routes
            .iter()
            .filter_map(|other| other.host.as_deref())
            .collect();
        hosts.sort_unstable();
        hosts.dedup();
        for host in hosts {
            let of_host = || {
                routes
                    .iter()
                    .enumerate()
                    .filter(move |(_, other)| other.host.as_deref() == Some(host))
            };
            // The host's route for all of this route's paths, and those for some of them.
            let whole = of_host()
                .filter(|(_, other)| covers(&other.path_prefix, &route.path_prefix))
                .max_by_key(|(_, other)| other.path_prefix.len());
            let parts = of_host().filter(|(_, other)| {
                other.path_prefix != route.path_prefix
                    && covers(&route.path_prefix, &other.path_prefix)
            });
            for (other_index, other) in whole.into_iter().chain(parts) {
                if same_requirements(route, other) {
                    continue;
                }
                warnings.push(format!(
                    "route[{index}].require: does not hold on {host}, where route[{other_index}] \
                     (host = \"{host}\", path_prefix = \"{}\") takes the requests under \
                     \"{}\" (a route naming the host wins over routes for any host); give \
                     that route these requirements too",
                    other.path_prefix,
                    if covers(&other.path_prefix, &route.path_prefix) {
                        &route.path_prefix
                    } else {
                        &other.path_prefix
                    }
                ));
            }
        }
    }
    warnings
}

/// Whether `url`'s host is this machine: `localhost` (and names under it), or a loopback
/// address (also IPv4 mapped into IPv6, and written in a `redis://` URL, whose host is not
/// parsed as an address).
fn on_loopback(url: &Url) -> bool {
    let address_on_loopback = |address: std::net::IpAddr| match address {
        std::net::IpAddr::V4(v4) => v4.is_loopback(),
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    };
    match url.host() {
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost"
                || name.ends_with(".localhost")
                || name.parse().is_ok_and(address_on_loopback)
        }
        Some(url::Host::Ipv4(address)) => address.is_loopback(),
        Some(url::Host::Ipv6(address)) => address_on_loopback(address.into()),
        None => false,
    }
}

/// Whether `target` sends a password without TLS to a host `outside` says is not loopback.
fn redis_password_in_clear(target: &RedisTarget, outside: impl Fn(&Url) -> bool) -> bool {
    let url_in_clear = |url: &str| {
        redis::parse_redis_url(url).is_some_and(|url| url.password().is_some() && outside(&url))
    };
    match target {
        RedisTarget::Standalone(url) => url_in_clear(url),
        RedisTarget::Cluster(nodes) => nodes.iter().any(|node| url_in_clear(node)),
        RedisTarget::Sentinel {
            sentinels, auth, ..
        } => {
            auth.password.is_some()
                && !auth.tls
                && sentinels
                    .iter()
                    .any(|sentinel| Url::parse(sentinel).is_ok_and(|url| outside(&url)))
        }
    }
}

#[cfg(test)]
mod tests;
