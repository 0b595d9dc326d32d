//! Role 1, forward-auth (SPEC §4): `/auth` for ingress-nginx, nginx `auth_request`, Traefik and
//! Caddy; `/validate` for token-only checks; `/userinfo`. Glue only: the query goes to `policy`,
//! credentials to `identity`, failures out through `Rejection`.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::clock::Clock;
use crate::config::{ForwardAuthConfig, Unauthenticated};
use crate::http::canonical::canonical_path;
use crate::http::forwarded::{ClientAddress, OriginalRequest, original_request};
use crate::http::rejection::{Refusal, Rejection};
use crate::identity::{
    Credential, IdentityError, SessionSource, TOO_MANY_UNKNOWN_TOKENS, ambiguous_credentials,
    authenticate, authenticate_traced, bearer_token,
    other_tokens::{Reaching, check_other_tokens, other_tokens, same_caller},
};
use crate::issuer::TokenService;
use crate::logging::decision::Decision as DecisionLine;
use crate::metrics::Metrics;
use crate::oidc::Provider;
use crate::policy::{AuthQuery, Decision, Trace, decide_traced};
use crate::session::{CookieAttributes, request_cookies};
use crate::telemetry::Telemetry;
use crate::token::{Claims, numeric_claim};

/// What `/auth`, `/validate` and `/userinfo` use, built once by the wiring.
pub struct ForwardAuthState {
    /// The `[forward_auth]` section and its provider; `None` when forward-auth is off (the
    /// token service's `/validate` and `/userinfo` answer still).
    pub forward_auth: Option<(ForwardAuthConfig, Arc<Provider>)>,
    /// Where session cookies are read.
    pub sessions: SessionSource,
    /// The token service, whose own tokens `/validate` and `/userinfo` accept too.
    pub token_service: Option<Arc<TokenService>>,
    /// `server.trusted_proxies`: whose `X-Original-*` / `X-Forwarded-*` are believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `server.public_url`.
    pub public_url: Option<url::Url>,
    /// The public listener's scheme (`https` when it serves TLS), for a request no trusted
    /// proxy describes.
    pub own_proto: &'static str,
    /// Wall-clock time.
    pub clock: Arc<dyn Clock>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Parsed `/auth` queries.
    pub queries: AuthQueries,
    /// The tracer (`[telemetry]`), for Envoy's gRPC Checks (the public listener begins the
    /// spans of its own requests); `None`: no span is begun.
    pub telemetry: Option<Arc<Telemetry>>,
}

impl ForwardAuthState {
    /// The forward-auth section and its provider, when forward-auth is enabled.
    pub fn forward_auth(&self) -> Option<(&ForwardAuthConfig, &Arc<Provider>)> {
        self.forward_auth
            .as_ref()
            .map(|(section, provider)| (section, provider))
    }
}

/// Parsed `/auth` queries by their raw text (ingress controllers send the same few), and the
/// empty one (`auth_request /auth;`, the most common) apart, which needs no lookup.
pub struct AuthQueries {
    parsed: quick_cache::sync::Cache<String, Arc<AuthQuery>, QueryWeight>,
    empty: Arc<AuthQuery>,
}

/// The most the cached queries weigh ([`QueryWeight`]): 32 MiB, so that queries sent to fill
/// it (anyone may send `/auth` a query) hold at most that much.
const CACHED_QUERIES_WEIGHT: u64 = 32 << 20;

/// What a parsed query holds, in bytes, at most: its text, a little for itself, and the
/// compiled-size limit of each skip pattern.
#[derive(Clone, Copy)]
struct QueryWeight;

impl quick_cache::Weighter<String, Arc<AuthQuery>> for QueryWeight {
    fn weight(&self, raw: &String, query: &Arc<AuthQuery>) -> u64 {
        let patterns = query.skip_rules.len() * crate::policy::auth_query::MAX_QUERY_PATTERN_SIZE;
        u64::try_from(raw.len() + 1024 + patterns).unwrap_or(u64::MAX)
    }
}

impl Default for AuthQueries {
    fn default() -> Self {
        Self {
            parsed: quick_cache::sync::Cache::with_weighter(
                1024,
                CACHED_QUERIES_WEIGHT,
                QueryWeight,
            ),
            empty: Arc::new(AuthQuery::default()),
        }
    }
}

/// What `/auth` decided.
pub enum Outcome {
    /// 200 with these injected headers; the credential's name; `Set-Cookie` values.
    Allow(
        Vec<(axum::http::HeaderName, HeaderValue)>,
        &'static str,
        Vec<String>,
    ),
    /// 200 by a skip rule, without checks.
    Skip,
    /// 302 to this sign-in location (`unauthenticated = "redirect"`, a browser).
    Redirect(String),
    /// Refused: what the caller is told, why (the log line's reason), and the cookies of a
    /// session refreshed before the refusal.
    Reject(Refusal),
}

/// `Err` with the reason when an original request's path (`target`, its query dropped) has no
/// single reading, so that the ingress may have chosen its `location` (and with it that
/// location's `/auth` rules) on another path than the application serves:
/// - `;` parameters, sent or percent-encoded: nginx reads `/admin;x/users` as a path outside
///   `location /admin/`, while Tomcat, Jetty and Spring serve `/admin/users` (Spring Security
///   refuses `;` in paths by default for the same reason);
/// - a `..` that removes an empty segment: nginx merges slashes first (`/admin//../users` is
///   `/users`), while Node's `new URL`, Deno and Bun serve `/admin/users` (whatever other
///   percent-encodings the path holds);
/// - a `\` (sent, or as `%5C`) or a `#`: nginx takes neither as a separator
///   (`/x/#/../../admin/users` is under `location /x/` there), while IIS reads `\` as `/` and
///   Go's `path.Clean` resolves past `#`;
/// - a leading `//` (or `/%2F`, which nginx decodes and merges), a network-path reference to
///   an application that reads its target as a URL (`//public/admin` is `/admin` of the
///   authority `public` there);
/// - a `.` or `..` segment, sent or with its dots as `%2e`, ended by `/` or `%2F` (which nginx
///   decodes and goes on resolving): nginx resolves it
///   (`/admin/../public/x` is under `location /public/`, and meets `skip-auth=^/public/`),
///   while an application that routes on the path as sent does not (Express's
///   `app.use('/admin')` takes it). Browsers resolve them before they send a URL.
///
/// The proxy role sends the application the canonical path and refuses a path with none
/// (SPEC §4.1); behind nginx `auth_request` the application gets the path as the client sent
/// it. Beyond SPEC §4, which says only that such a path never skips.
pub(crate) fn single_reading(target: &str) -> Result<(), &'static str> {
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    if crate::http::canonical::holds_parameters(path) {
        return Err("the original path holds ; parameters");
    }
    // `/%2F` too: nginx decodes and merges it, so its location is that of the second segment.
    if path.starts_with("//")
        || path
            .get(..4)
            .is_some_and(|start| start.eq_ignore_ascii_case("/%2f"))
    {
        return Err("the original path begins with //");
    }
    let encoded_backslash = || {
        path.as_bytes()
            .windows(3)
            .any(|window| window.eq_ignore_ascii_case(b"%5c"))
    };
    if path.bytes().any(|byte| byte == b'\\' || byte == b'#') || encoded_backslash() {
        return Err("the original path holds a backslash or #");
    }
    if crate::http::canonical::removes_an_empty_segment(path) {
        return Err("the original path holds an empty segment that a `..` removes");
    }
    if crate::http::canonical::holds_a_dot_segment(path) {
        return Err(
            "the original path holds a `.` or `..` segment, which an application that routes \
             on the path as sent does not resolve",
        );
    }
    Ok(())
}

/// `GET /auth`.
///
/// A block over the request rather than an `async fn` taking it (as `proxy::handle`): an
/// `async fn` keeps its argument and a local copy of it, and this future, with axum's around
/// it, is allocated for every request. Under a kilobyte it comes from the allocator's
/// per-thread cache; above, each `/auth` paid hundreds of instructions more to allocate it.
// The `async fn` clippy suggests is the shape this avoids (see above).
#[allow(clippy::manual_async_fn)]
pub fn auth(
    State(state): State<Arc<ForwardAuthState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
) -> impl Future<Output = Response> {
    async move {
        // The request is taken whole, so neither its headers nor its query are copied.
        let started = Instant::now();
        let headers = request.headers();
        let original = original_request(peer.ip(), headers, &state.trusted_proxies);
        let rules = request.uri().query().unwrap_or("");
        // Boxed: axum boxes this future with its own around it, and at over a kilobyte that
        // box leaves the allocator's per-thread cache (hundreds of instructions a request);
        // two boxes under it cost less.
        let outcome = if is_the_clients_query(rules, headers) {
            Outcome::Reject(Refusal::new(
                Rejection::BadRequest(CLIENTS_QUERY.to_owned()),
                CLIENTS_QUERY,
            ))
        } else {
            Box::pin(decide_auth(
                &state,
                headers,
                rules,
                original.as_ref(),
                ClientAddress::new(peer.ip(), headers, &state.trusted_proxies),
                &mut Trace::off(),
            ))
            .await
        };
        // Only a query injects headers; the check stays out of the common path's code.
        let outcome = if rules.is_empty() {
            outcome
        } else {
            refuse_other_spellings(&state, rules, headers, outcome)
        };
        let outcome = if headers
            .keys()
            .any(|name| is_identity_elsewhere_spelt_otherwise(name.as_str()))
        {
            refuse_identity_spelt_otherwise(headers, outcome)
        } else {
            outcome
        };
        report(
            &state,
            "auth",
            &outcome,
            original.as_ref(),
            Some(headers),
            started,
        );
        outcome_response(outcome)
    }
}

/// Why a query that is the original request's own is refused as `/auth`'s rules.
const CLIENTS_QUERY: &str = "the rules are the original request's own query, which its client \
     wrote (Caddy's `forward_auth` keeps it when `uri` has no `?`: write `uri /auth?` or \
     `uri /auth?<rules>`)";

/// Whether `/auth`'s query (its rules) is the query of the original request the ingress
/// describes (`X-Forwarded-Uri`, `X-Original-URL`), up to any `#`: an ingress that passes its
/// client's query on (Caddy's `forward_auth` with `uri /auth`, no `?`) lets the client write
/// the rules, a `skip-auth=.` or an `inject-claim` into a header the application trusts. Any
/// one said counts, believed or not: a client that names its own only refuses itself. (Rules
/// that merely hold the client's query among the operator's, an ingress template with the
/// client's query in it, are not told apart from a page whose own query repeats one of the
/// rules, `/admin/users?groups=admin`: the README forbids such templates instead.)
fn is_the_clients_query(rules: &str, headers: &HeaderMap) -> bool {
    !rules.is_empty()
        && crate::http::forwarded::queries_said(headers).any(|said| {
            // `http` drops a `#` and what follows from `/auth`'s target; Go keeps them in the
            // query.
            said.split('#').next() == Some(rules)
        })
}

/// The one metric update and log line of a forward-auth decision, however it was asked for
/// (`via`: `/auth`, Envoy over HTTP or over gRPC).
fn report(
    state: &ForwardAuthState,
    via: &'static str,
    outcome: &Outcome,
    original: Option<&OriginalRequest>,
    headers: Option<&HeaderMap>,
    started: Instant,
) {
    state.metrics.decision_seconds.observe(started.elapsed());
    // The request's span, when tracing is on, says what the log line says.
    crate::telemetry::with_current(|span| {
        match outcome {
            Outcome::Allow(_, credential, _) => span.credential(credential),
            Outcome::Reject(refusal) => span.reason(&refusal.reason),
            Outcome::Skip | Outcome::Redirect(_) => {}
        }
        if let Some(raw_path) = original.and_then(|request| request.raw_path.as_deref()) {
            span.path(raw_path);
        }
    });
    let mut decision = DecisionLine {
        role: "forward_auth",
        via: Some(via),
        // The original path is the client's text: the line drops its query (which can carry
        // `code=` or `access_token=`), bounds and escapes the rest.
        path: Some(
            original
                .and_then(|request| request.raw_path.as_deref())
                .unwrap_or("-"),
        ),
        request_id: headers.and_then(crate::http::request_id),
        ..DecisionLine::default()
    };
    let mut failure = false;
    match outcome {
        Outcome::Allow(_, credential, _) => {
            decision.result = "allow";
            decision.credential = Some(credential);
        }
        Outcome::Skip => decision.result = "skip",
        Outcome::Redirect(_) => decision.result = "redirect",
        Outcome::Reject(refusal) => {
            decision.result = refusal.rejection.result_label();
            decision.reason = Some(&refusal.reason);
            failure = refusal.rejection.is_failure();
        }
    }
    state.metrics.request("forward_auth", decision.result);
    // A provider or store that fails is the operator's to look at, as on every other surface.
    if failure {
        crate::log_decision!(warn, decision);
    } else {
        crate::log_decision!(info, decision);
    }
}

/// An allowed `/auth` answer to a request that also carries another spelling of a header the
/// rules inject (`X_Auth_Email` beside `inject-claim=email,X-Auth-Email`, or `X-Auth-Email`
/// beside `inject-claim=email,X_Auth_Email`), made a 400. Traefik
/// and Caddy send `/auth` the client's headers and replace only the exact name upstream (Go
/// keeps `X_auth_email` as a name of its own), and an application reading headers the CGI way
/// (PHP, Rack, many WSGI servers) takes both for `HTTP_X_AUTH_EMAIL`: the client's copy would
/// stand beside Tollgate's, or alone when a skip rule or an absent claim sets none. nginx drops
/// such names unless `underscores_in_headers` is on. No client has a reason to send one.
#[inline(never)]
fn refuse_other_spellings(
    state: &ForwardAuthState,
    rules: &str,
    headers: &HeaderMap,
    outcome: Outcome,
) -> Outcome {
    if !matches!(outcome, Outcome::Allow(..) | Outcome::Skip) {
        return outcome;
    }
    // The rules parsed already (the decision checks them first): a cache hit, but for a query
    // whose skip rules were left out, parsed again (its injections are what is read here).
    let Ok(query) = parsed_query(state, rules, false) else {
        return outcome;
    };
    // Two spellings of one name differ only where one of them has `_` or `.`: the exact name
    // a proxy replaces, all dashes, is no other spelling of itself.
    let spelt_otherwise = |name: &str| name.contains(['_', '.']);
    let injected_otherwise = query
        .injections
        .iter()
        .any(|injection| spelt_otherwise(injection.header().as_str()));
    let other = headers.keys().find(|sent| {
        let sent = sent.as_str();
        (injected_otherwise || spelt_otherwise(sent))
            && query.injections.iter().any(|injection| {
                let name = injection.header().as_str();
                (spelt_otherwise(sent) || spelt_otherwise(name))
                    && crate::http::same_header_name(sent, name)
            })
    });
    let Some(sent) = other else {
        return outcome;
    };
    let reason = format!(
        "the request carries {}, another spelling of a header the rules set",
        sent.as_str()
    );
    let refusal = Refusal::new(Rejection::BadRequest(reason.clone()), reason);
    // A cookie session refreshed on the way goes back all the same: its old refresh token is
    // spent.
    Outcome::Reject(match outcome {
        Outcome::Allow(_, _, set_cookies) if !set_cookies.is_empty() => {
            refusal.with_cookies(set_cookies)
        }
        _ => refusal,
    })
}

/// Whether `name` is an identity header of a gateway Tollgate replaces
/// (`http::is_identity_elsewhere`) written with `_` or `.`: `X_Forwarded_User`,
/// `x.authentik.username`, `OIDC_CLAIM_email`.
fn is_identity_elsewhere_spelt_otherwise(name: &str) -> bool {
    memchr::memchr2(b'_', b'.', name.as_bytes()).is_some()
        && crate::http::is_identity_elsewhere(name)
}

/// An allowed `/auth` answer (or a skip) to a request that carries an identity header of a
/// gateway Tollgate replaces written with `_` or `.` (`X_Forwarded_User`), made a 400 (a
/// name the rules inject is refused as sent by `refuse_other_spellings` already). Caddy passes
/// such a name on where its recipe's prefixes miss it (`X-Auth-Request_email`), and Traefik
/// asks `/auth` before its recipe's `authResponseHeadersRegex` clears it, and an application that reads headers the CGI way (Puma,
/// PHP-FPM, FrankenPHP) takes it for `HTTP_X_FORWARDED_USER`, as if a gateway had vouched for
/// it; nginx drops such names, and Envoy's recipes refuse or remove them. No client has a
/// reason to send one; a gateway in front may (mod_auth_openidc's `OIDC_CLAIM_*`, unless told
/// `OIDCPassClaimsAs environment`), and is then to be told not to; the dashed spellings, which
/// a gateway in front (Cloudflare Access, IAP) may set, are for the recipes to clear.
#[inline(never)]
fn refuse_identity_spelt_otherwise(headers: &HeaderMap, outcome: Outcome) -> Outcome {
    if !matches!(outcome, Outcome::Allow(..) | Outcome::Skip) {
        return outcome;
    }
    let Some(sent) = headers
        .keys()
        .find(|name| is_identity_elsewhere_spelt_otherwise(name.as_str()))
    else {
        return outcome;
    };
    let reason = format!(
        "the request carries {}, another gateway's identity header spelt with `_` or `.`",
        sent.as_str()
    );
    let refusal = Refusal::new(Rejection::BadRequest(reason.clone()), reason);
    Outcome::Reject(match outcome {
        Outcome::Allow(_, _, set_cookies) if !set_cookies.is_empty() => {
            refusal.with_cookies(set_cookies)
        }
        _ => refusal,
    })
}

/// `response` with `Cache-Control: no-store`; out of line, off the allowed answer's path.
#[inline(never)]
fn not_stored(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The HTTP answer `/auth` gives for an outcome. An ingress may cache it (ingress-nginx
/// `auth-cache-key`, nginx `proxy_cache` in the auth location) under a key the operator
/// chose, which must hold the credential, the `Origin` and the original URL (README): an
/// allowed answer holds for that credential, from that origin, on that URL. A skip or a redirect holds for its path alone and is not stored (`no-store`),
/// so an anonymous skip of `/public/x` cached under the empty cookie never lets `/admin`
/// through. Refusals are `no-store` already. (An allowed answer carries no `Vary`: its first
/// header would cost each cached `/auth` 3.6% more instructions, measured, for a key that
/// leaves out the credential, which is wrong anyway.)
fn outcome_response(outcome: Outcome) -> Response {
    match outcome {
        Outcome::Allow(injected, _, set_cookies) => {
            let mut response = StatusCode::OK.into_response();
            let headers = response.headers_mut();
            for (name, value) in injected {
                headers.append(name, value);
            }
            if !set_cookies.is_empty() {
                // A refreshed session's cookie: the answer, and the application's answer that
                // Envoy's HTTP filter adds it to, is never stored by a shared cache.
                headers.insert(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("private, no-store"),
                );
            }
            for cookie in set_cookies {
                if let Ok(value) = HeaderValue::from_str(&cookie) {
                    headers.append(header::SET_COOKIE, value);
                }
            }
            response
        }
        Outcome::Skip => not_stored(StatusCode::OK.into_response()),
        Outcome::Redirect(location) => not_stored(crate::http::found(&location)),
        Outcome::Reject(refusal) => refusal.into_response(),
    }
}

/// The longest `/auth` query kept parsed between requests.
const MAX_CACHED_QUERY: usize = 2048;

/// The `/auth` rules of the query `raw`, parsed once; its skip rules only when `skip_rules`
/// (see [`AuthQuery::parse_without_skip_rules`]).
fn parsed_query(
    state: &ForwardAuthState,
    raw: &str,
    skip_rules: bool,
) -> Result<Arc<AuthQuery>, Rejection> {
    if raw.is_empty() {
        return Ok(state.queries.empty.clone());
    }
    if let Some(query) = state.queries.parsed.get(raw) {
        return Ok(query);
    }
    let (query, left_out) = if skip_rules {
        AuthQuery::parse(raw).map(|query| (query, false))
    } else {
        AuthQuery::parse_without_skip_rules(raw)
    }
    .map_err(|error| Rejection::BadRequest(error.to_string()))?;
    let query = Arc::new(query);
    // Ingress configs hold a handful of short queries: only those are kept, and the cache is
    // bounded by what they hold (`QueryWeight`), skip patterns counted at their size limit. One
    // whose skip rules were left out is not: a request whose path is known needs them.
    if raw.len() <= MAX_CACHED_QUERY && !left_out {
        state.queries.parsed.insert(raw.to_owned(), query.clone());
    }
    Ok(query)
}

/// The `/auth` decision for a request with `headers` about `original`, under the rules of
/// `raw_query`. `POST /admin/explain` runs this same code with an explaining `trace`, which
/// records every step and changes nothing.
pub async fn decide_auth(
    state: &ForwardAuthState,
    headers: &HeaderMap,
    raw_query: &str,
    original: Option<&OriginalRequest>,
    client: ClientAddress<'_>,
    trace: &mut Trace,
) -> Outcome {
    let Some((section, provider)) = state.forward_auth() else {
        trace.record("forward_auth", "fail", || {
            "forward-auth is not configured".to_owned()
        });
        return Outcome::Reject(Refusal::new(
            Rejection::Internal,
            "forward-auth is not configured",
        ));
    };
    // The query is checked before any credential (SPEC §4). Its skip rules only where the
    // original path is known: elsewhere none can apply (a caller that is no trusted proxy,
    // which could otherwise make each request compile new patterns).
    let parsed = if trace.is_explaining() {
        AuthQuery::parse(raw_query)
            .map(Arc::new)
            .map_err(|error| Rejection::BadRequest(error.to_string()))
    } else {
        parsed_query(
            state,
            raw_query,
            original.is_some_and(|request| request.raw_path.is_some()),
        )
    };
    let query = match parsed {
        Ok(query) => query,
        Err(rejection) => {
            let reason = rejection.to_string();
            trace.record("query", "fail", || reason.clone());
            return Outcome::Reject(Refusal::new(rejection, reason));
        }
    };
    trace.record("query", "pass", || {
        format!(
            "{} claim rule(s), {} injection(s), {} skip rule(s)",
            query.claim_rules.len(),
            query.injections.len(),
            query.skip_rules.len()
        )
    });
    // An original path with no single reading is refused (`single_reading`): the ingress chose
    // its location (and with it these rules) on one reading, while the application may serve
    // another.
    // A believed path is every path said (the headers that say one agree); without one, every
    // path said, believed or not: a client that adds a disagreeing `X-Forwarded-Uri` makes the
    // original request unknown, which must not switch this check off.
    let unreadable = match original.and_then(|request| request.raw_path.as_deref()) {
        Some(target) => single_reading(target).err(),
        None => crate::http::forwarded::paths_said(headers)
            .find_map(|target| single_reading(&target).err()),
    };
    if let Some(reason) = unreadable {
        trace.record("path", "fail", || reason.to_owned());
        return Outcome::Reject(Refusal::new(
            Rejection::BadRequest(reason.to_owned()),
            reason,
        ));
    }
    // Skip rules see the canonical original path only; without a trusted original request they
    // cannot match (fail closed), nor when the path has no single reading (it is then
    // authenticated as usual, SPEC §4).
    if !query.skip_rules.is_empty() {
        let canonical = original.and_then(|request| {
            let raw_path = request.raw_path.as_deref()?;
            // The method is known only when nothing asks the application to take another
            // (looked for only when a rule names a method): a header, the query, or a body
            // that may hold `_method` (a form `POST`).
            let names_method = query.skip_rules.iter().any(|rule| rule.method.is_some());
            let overridden = names_method
                && (crate::http::method_override_header(headers)
                    || raw_path
                        .split_once('?')
                        .is_some_and(|(_, query)| crate::http::method_override_query(query))
                    || request
                        .method
                        .as_ref()
                        .is_some_and(|method| crate::http::method_override_body(method, headers)));
            Some((
                request.method.as_ref().filter(|_| !overridden),
                canonical_path(raw_path).ok()?,
            ))
        });
        match canonical {
            Some((method, path)) => {
                for rule in &query.skip_rules {
                    let skips = rule.skips(method, &path);
                    trace.record(
                        "skip rule",
                        if skips { "match" } else { "no_match" },
                        || {
                            format!(
                                "{}{}{} on {} {path}",
                                if rule.negated {
                                    "skip-auth-ne="
                                } else {
                                    "skip-auth="
                                },
                                rule.method
                                    .as_ref()
                                    .map_or_else(String::new, |method| format!("{method},")),
                                rule.pattern,
                                method.map_or("(method unknown)", Method::as_str),
                            )
                        },
                    );
                    if skips {
                        return Outcome::Skip;
                    }
                }
            }
            None => trace.record("skip rule", "no_match", || {
                "the original path is unknown or has no single canonical form: no skip rule \
                 applies"
                    .to_owned()
            }),
        }
    }
    // RFC 6750 §2: one token, sent one way (the query is the one the application will see).
    let original_query = original
        .and_then(|request| request.raw_path.as_deref())
        .and_then(|path| path.split_once('?'))
        .map(|(_, query)| query);
    if let Some(reason) =
        ambiguous_credentials(headers, original_query, section.token_cookie.as_deref())
    {
        trace.record("credentials", "fail", || reason.to_owned());
        return Outcome::Reject(Refusal::new(
            Rejection::InvalidRequest(reason.to_owned()),
            reason,
        ));
    }
    // A refreshed cookie session is written back with attributes for the original request's URL.
    let cookie_base = original
        .and_then(|request| request.url.as_ref())
        .or(state.public_url.as_ref());
    let attributes = cookie_base.map_or(CookieAttributes::UNKNOWN_BASE, CookieAttributes::for_base);
    // Boxed: a few hundred bytes that would otherwise make every caller's future (`/auth`'s
    // with axum's around it) too large for the allocator's per-thread cache.
    let identity = match Box::pin(authenticate_traced(
        headers,
        provider,
        state.sessions.access(attributes),
        section.token_cookie.as_deref(),
        crate::identity::BearerTokens::Accepted,
        state.clock.now(),
        client,
        trace,
    ))
    .await
    {
        Ok(identity) => identity,
        Err(error) => {
            // Not a missing credential: a browser sent to sign in would come back with it.
            let not_known_bad = matches!(
                error,
                IdentityError::ProviderUnavailable { .. }
                    | IdentityError::StoreUnavailable(_)
                    | IdentityError::TooManyRefused
            );
            // A bearer token is an API client's: told `invalid_token` (RFC 6750), not sent to
            // a sign-in page it cannot use.
            if !not_known_bad
                && !error.is_bearer_refusal()
                && section.unauthenticated == Unauthenticated::Redirect
                && !crate::http::is_api_call(
                    original
                        .and_then(|request| request.method.as_ref())
                        .unwrap_or(&Method::GET),
                    headers,
                )
                && let Some(location) = signin_location(state, original)
            {
                trace.record("unauthenticated", "redirect", || {
                    "a browser without a valid credential is sent to sign in".to_owned()
                });
                return Outcome::Redirect(location);
            }
            return Outcome::Reject(Refusal::from(error));
        }
    };
    // The application behind gets the whole request: every token in it must be one Tollgate
    // accepts, for the same caller. The check is built in an inner block and boxed, so what it
    // needs is not a part of this future, which every `/auth` allocates (almost no request has
    // a token to check); it is consumed in the outer one, so no borrow of the identity
    // outlives it.
    let refused = {
        let check = {
            // The believed original URL's query; when none was believed (two that disagree, one
            // not text), every one said.
            let said: Vec<Cow<'_, str>>;
            let believed: [Cow<'_, str>; 1];
            let queries: &[Cow<'_, str>] = match original_query {
                Some(query) => {
                    believed = [Cow::Borrowed(query)];
                    &believed
                }
                None => {
                    said = crate::http::forwarded::queries_said(headers).collect();
                    &said
                }
            };
            let reaching = Reaching {
                authorization: true,
                queries,
                token_cookie: section.token_cookie.as_deref(),
            };
            let others = other_tokens(headers, reaching, Some(identity.credential));
            (!others.is_empty()).then(|| {
                Box::pin(check_other_tokens(
                    provider,
                    Some(&identity),
                    others,
                    client,
                    trace,
                ))
            })
        };
        match check {
            Some(check) => check.await.err(),
            None => None,
        }
    };
    if let Some(refusal) = refused {
        return Outcome::Reject(refusal.with_cookies(identity.set_cookies));
    }
    // A cookie (the session's, the token cookie) is what a browser adds by itself. The
    // request's host is the original URL's, else `public_url`'s; with neither known (a peer
    // whose forwarded headers are not believed, a path-only `X-Original-URL`), no host is
    // this one, so a handshake that carries an `Origin` is refused.
    if identity.credential != Credential::Bearer
        && crate::http::origin::websocket_from_another_host(headers, cookie_base)
    {
        let refusal = crate::http::origin::refusal();
        trace.record("origin", "fail", || refusal.reason.clone());
        return Outcome::Reject(refusal.with_cookies(identity.set_cookies));
    }
    match decide_traced(&query, &identity.claims, trace) {
        Decision::Allow(injected) => {
            Outcome::Allow(injected, identity.credential.as_str(), identity.set_cookies)
        }
        Decision::Deny(requirement) => {
            let rejection = if identity.credential == Credential::Bearer {
                Rejection::InsufficientScope(requirement.clone())
            } else {
                Rejection::Forbidden(requirement.clone())
            };
            // A session refreshed on the way keeps its new cookie, refused or not.
            Outcome::Reject(Refusal::new(rejection, requirement).with_cookies(identity.set_cookies))
        }
    }
}

fn signin_location(state: &ForwardAuthState, original: Option<&OriginalRequest>) -> Option<String> {
    let original_url = original?.url.as_ref()?;
    let base = match &state.public_url {
        Some(url) => url.clone(),
        None => {
            let mut base = original_url.clone();
            base.set_path("/");
            base.set_query(None);
            base.set_fragment(None);
            base
        }
    };
    let encoded: String =
        url::form_urlencoded::byte_serialize(original_url.as_str().as_bytes()).collect();
    Some(format!(
        "{}/signin?rd={encoded}",
        base.as_str().trim_end_matches('/')
    ))
}

/// Validates a bearer token from `Authorization` or the token cookie, against the forward-auth
/// provider and then the token service's own tokens. When both are sent, the token cookie
/// (which the application may read too) must be valid and name the same caller.
async fn token_identity(
    state: &ForwardAuthState,
    headers: &HeaderMap,
    client: ClientAddress<'_>,
) -> Result<Claims, (Rejection, String)> {
    let cookies = request_cookies(headers);
    let token_cookie = state
        .forward_auth()
        .and_then(|(section, _)| section.token_cookie.as_deref());
    if let Some(reason) = ambiguous_credentials(headers, None, token_cookie) {
        return Err((
            Rejection::InvalidRequest(reason.to_owned()),
            reason.to_owned(),
        ));
    }
    let (token, refused, used) = match bearer_token(headers) {
        Some(Ok(token)) => (
            token.to_owned(),
            Rejection::InvalidToken,
            Credential::Bearer,
        ),
        Some(Err(())) => {
            return Err((
                Rejection::InvalidToken,
                "malformed Authorization header".to_owned(),
            ));
        }
        None => match token_cookie.and_then(|name| cookies.get(name)) {
            Some(token) => (
                (*token).to_owned(),
                Rejection::Unauthenticated,
                Credential::TokenCookie,
            ),
            None => return Err((Rejection::Unauthenticated, "no token".to_owned())),
        },
    };
    let claims = one_token_identity(state, &token, client)
        .await
        .map_err(|refusal| refusal.unwrap_or_else(|reason| (refused, reason)))?;
    let reaching = Reaching {
        authorization: true,
        queries: &[],
        token_cookie,
    };
    for other in other_tokens(headers, reaching, Some(used)) {
        let other_claims = one_token_identity(state, &other.token, client)
            .await
            .map_err(|refusal| {
                refusal.unwrap_or_else(|reason| {
                    let reason = format!("a second token, not the credential: {reason}");
                    (Rejection::Unauthenticated, reason)
                })
            })?;
        if !same_caller(&claims, &other_claims) {
            let reason = "tokens of two callers";
            return Err((
                Rejection::InvalidRequest(reason.to_owned()),
                reason.to_owned(),
            ));
        }
    }
    Ok(claims)
}

/// One token's claims, at the forward-auth provider or else the token service. `Err(Ok(_))`
/// is a refusal as it stands (an unreachable provider or store, a token the provider was not
/// asked about: none known to be bad), `Err(Err(reason))` a token
/// that is not valid.
async fn one_token_identity(
    state: &ForwardAuthState,
    token: &str,
    client: ClientAddress<'_>,
) -> Result<Claims, Result<(Rejection, String), String>> {
    let mut reason = String::from("no validator");
    let mut not_known_bad = None;
    // A token that names the token service as its issuer could never pass at another provider
    // (`iss` must be the provider's): it is not taken there, where its key, unknown, would
    // send the provider's keys to be fetched again, or wait for a hanging fetch. Read only
    // where a token service is beside the provider: a cached token of the provider alone is
    // not parsed for it.
    let issuer = state
        .token_service
        .is_some()
        .then(|| crate::token::unverified_issuer(token))
        .flatten();
    let provider = state.forward_auth().filter(|(_, provider)| {
        state.token_service.as_ref().is_none_or(|service| {
            issuer.as_deref() != Some(service.issuer())
                || provider.config.issuer.trim_end_matches('/') == service.issuer()
        })
    });
    // Where the forward-auth provider is the token service itself, `aud` must hold one of its
    // `audiences` (SPEC §6): the service's own check below takes every client's audience.
    let provider_audiences = provider
        .filter(|(_, provider)| {
            state.token_service.as_ref().is_some_and(|service| {
                provider.config.issuer.trim_end_matches('/') == service.issuer()
            })
        })
        .map(|(_, provider)| provider.config.audiences.as_slice());
    if let Some((_, provider)) = provider {
        match provider.validate_access_token(token, client).await {
            Ok(claims) => return Ok(claims),
            // Only for a token that may be the provider's: one that says so, or an opaque one
            // where the provider introspects (a malformed one stays a 4xx, SPEC §9).
            Err(crate::oidc::provider::CredentialError::Provider(error)) => {
                reason = error.to_string();
                if state.token_service.is_none()
                    || issuer.as_deref() == Some(provider.config.issuer.as_str())
                    || (!crate::token::looks_like_jwt(token) && provider.config.introspection)
                {
                    not_known_bad = Some((Rejection::ProviderUnavailable, reason.clone()));
                }
            }
            // An opaque token the provider was not asked about: it is not known to be bad.
            Err(error @ crate::oidc::provider::CredentialError::TooManyRefused) => {
                reason = error.to_string();
                not_known_bad = Some((
                    Rejection::TooManyRequests(TOO_MANY_UNKNOWN_TOKENS.to_owned()),
                    reason.clone(),
                ));
            }
            Err(error) => reason = error.to_string(),
        }
    }
    if let Some(service) = &state.token_service {
        match service.validate_own_access_token(token).await {
            Ok(claims)
                if provider_audiences
                    .is_none_or(|wanted| crate::token::audience_matches(&claims, wanted)) =>
            {
                return Ok(claims);
            }
            Ok(_) => reason = crate::token::TokenError::WrongAudience.to_string(),
            Err(error @ crate::issuer::OwnTokenError::StoreUnavailable(_)) => {
                return Err(Ok((Rejection::StoreUnavailable, error.to_string())));
            }
            // The provider's token, while the provider is unreachable, is not known to be bad
            // (502, SPEC §9: a client told `invalid_token` throws a good token away).
            Err(crate::issuer::OwnTokenError::Invalid(_)) if not_known_bad.is_some() => {}
            Err(error @ crate::issuer::OwnTokenError::Invalid(_)) => reason = error.to_string(),
        }
    }
    match not_known_bad {
        Some(refusal) => Err(Ok(refusal)),
        None => Err(Err(reason)),
    }
}

/// `GET /validate`: 200 or 401 for a bearer token, cacheable for at most its remaining life.
pub async fn validate(
    State(state): State<Arc<ForwardAuthState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let request_id = crate::http::request_id(&headers);
    let client = ClientAddress::new(peer.ip(), &headers, &state.trusted_proxies);
    let result = token_identity(&state, &headers, client).await;
    state.metrics.decision_seconds.observe(started.elapsed());
    match result {
        Ok(claims) => {
            let now = state.clock.now();
            let left = numeric_claim(&claims, "exp")
                .ok()
                .flatten()
                .map_or(0, |exp| exp - now)
                .clamp(0, MAX_VALIDATE_CACHE);
            state.metrics.request("validate", "allow");
            crate::log_decision!(
                info,
                DecisionLine {
                    role: "validate",
                    result: "allow",
                    request_id,
                    ..DecisionLine::default()
                }
            );
            // `private`: a shared cache must not give one caller's answer to another; `Vary`:
            // the answer is for these credentials only. A token of the token service may be
            // revoked (`/revoke`) at any moment, and is refused from then on: its answer is
            // not kept at all.
            // Nor is an opaque token's, which the provider's introspection vouched for: the
            // provider may revoke it at any moment, and Tollgate itself asks again after a
            // minute (an answer it kept for a while would be kept longer still).
            let revocable = state.token_service.as_ref().is_some_and(|service| {
                claims.get("iss").and_then(serde_json::Value::as_str) == Some(service.issuer())
            }) || introspected(&state, &headers);
            let cache_control = if revocable {
                HeaderValue::from_static("no-store")
            } else {
                HeaderValue::from_str(&format!("private, max-age={left}"))
                    .unwrap_or(HeaderValue::from_static("no-store"))
            };
            (
                StatusCode::OK,
                [
                    (header::CACHE_CONTROL, cache_control),
                    (
                        header::VARY,
                        HeaderValue::from_static("Authorization, Cookie"),
                    ),
                ],
            )
                .into_response()
        }
        Err(refusal) => {
            let refusal = Refusal::from(refusal);
            let line = DecisionLine {
                role: "validate",
                request_id,
                ..DecisionLine::default()
            };
            crate::refused!(state.metrics, line = line, &refusal);
            refusal.into_response()
        }
    }
}

/// Longest `max-age` `/validate` grants, whatever the token's remaining life.
const MAX_VALIDATE_CACHE: i64 = 300;

/// Whether `/validate`'s token (the bearer token, else the token cookie) is one the
/// forward-auth provider introspects: opaque, where `introspection` is on.
fn introspected(state: &ForwardAuthState, headers: &HeaderMap) -> bool {
    // Asked first: where the provider does not introspect, the token is not read again.
    let Some((section, _)) = state
        .forward_auth()
        .filter(|(_, provider)| provider.config.introspection)
    else {
        return false;
    };
    let cookies;
    let token = match bearer_token(headers) {
        Some(Ok(token)) => Some(token),
        _ => {
            cookies = request_cookies(headers);
            section
                .token_cookie
                .as_deref()
                .and_then(|name| cookies.get(name).copied())
        }
    };
    token.is_some_and(|token| !crate::token::looks_like_jwt(token))
}

/// `GET /userinfo`: the caller's claims as JSON.
pub async fn userinfo(
    State(state): State<Arc<ForwardAuthState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let token_cookie = state
        .forward_auth()
        .and_then(|(section, _)| section.token_cookie.as_deref());
    if let Some(reason) = ambiguous_credentials(&headers, None, token_cookie) {
        let refused = (
            Rejection::InvalidRequest(reason.to_owned()),
            reason.to_owned(),
        );
        return refuse_userinfo(&state, &headers, refused);
    }
    // The cookie a failed refresh of the session left (its rotated refresh token), sent with
    // whatever answers the token cookie beside it gets.
    let mut kept_cookies = Vec::new();
    if let Some((section, provider)) = state.forward_auth() {
        // A bearer token is answered for alone (OpenID Connect Core §5.3: the claims of the
        // token presented), never for a session cookie the browser sends beside it: a script
        // asking with its token is told that token's user, or refused when it is not valid.
        let sessions = if bearer_token(&headers).is_some() {
            None
        } else {
            state
                .sessions
                .access(own_cookie_attributes(&state, peer, &headers))
        };
        let authenticated = authenticate(
            &headers,
            provider,
            sessions,
            section.token_cookie.as_deref(),
            crate::identity::BearerTokens::Accepted,
            state.clock.now(),
            ClientAddress::new(peer.ip(), &headers, &state.trusted_proxies),
        )
        .await;
        match authenticated {
            Ok(identity) => {
                // A session refreshed on the way goes back to the browser.
                let mut response = claims_response(&identity.claims);
                crate::http::rejection::append_set_cookies(&mut response, &identity.set_cookies);
                return response;
            }
            // Not a missing or refused credential (SPEC §9): a store or provider that cannot
            // answer a session is a 503 or 502, never a 401 that sends the user to sign in
            // again. (A token is the token service's to answer too: `token_identity` asks it.)
            Err(
                error @ (IdentityError::StoreUnavailable(_)
                | IdentityError::ProviderUnavailable { .. }
                | IdentityError::TooManyRefused),
            ) if bearer_token(&headers).is_none()
                && token_cookie
                    .is_none_or(|name| !request_cookies(&headers).contains_key(name)) =>
            {
                // With a cookie session's new cookie, when a failed refresh left one.
                return refuse_userinfo(&state, &headers, error);
            }
            Err(IdentityError::ProviderUnavailable { set_cookies, .. }) => {
                kept_cookies = set_cookies;
            }
            Err(_) => {}
        }
    }
    let client = ClientAddress::new(peer.ip(), &headers, &state.trusted_proxies);
    let mut response = match token_identity(&state, &headers, client).await {
        Ok(claims) => claims_response(&claims),
        Err(refused) => refuse_userinfo(&state, &headers, refused),
    };
    crate::http::rejection::append_set_cookies(&mut response, &kept_cookies);
    response
}

/// The attributes of a session cookie written back on a request made to Tollgate itself (not
/// described by an ingress): for `public_url`, else for the host and scheme the request was
/// made with; `CookieAttributes::UNKNOWN_BASE` when neither is known.
fn own_cookie_attributes(
    state: &ForwardAuthState,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> CookieAttributes {
    if let Some(public_url) = &state.public_url {
        return CookieAttributes::for_base(public_url);
    }
    crate::http::forwarded::base_parts(peer.ip(), headers, &state.trusted_proxies, state.own_proto)
        .and_then(|(proto, host)| url::Url::parse(&format!("{proto}://{host}/")).ok())
        .map_or(CookieAttributes::UNKNOWN_BASE, |base| {
            CookieAttributes::for_base(&base)
        })
}

/// A `/userinfo` refusal: counted and logged once under the `userinfo` role, then answered.
fn refuse_userinfo(
    state: &ForwardAuthState,
    headers: &HeaderMap,
    refused: impl Into<Refusal>,
) -> Response {
    let refusal = refused.into();
    let line = DecisionLine {
        role: "userinfo",
        request_id: crate::http::request_id(headers),
        ..DecisionLine::default()
    };
    crate::refused!(state.metrics, line = line, &refusal);
    refusal.into_response()
}

fn claims_response(claims: &Claims) -> Response {
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(claims.as_ref().clone()),
    )
        .into_response()
}

pub mod envoy;

#[cfg(test)]
mod tests;
