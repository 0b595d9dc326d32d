//! The public listener: Tollgate's own endpoints (forward-auth, login, token service) through
//! axum's router, and every other path straight to the reverse proxy when routes are
//! configured, without the router's layers on the way.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, header};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{MethodRouter, get};
use tower::ServiceExt as _;

use crate::forward_auth::ForwardAuthState;
use crate::issuer::{FederatedLogin, TokenService};
use crate::login::LoginFlow;
use crate::proxy::ProxyState;
use crate::telemetry::Telemetry;

/// The sub-states the public listener's endpoints are built from.
pub struct PublicParts {
    /// `/auth`, `/validate`, `/userinfo`.
    pub forward_auth: Arc<ForwardAuthState>,
    /// `/signin`, `/callback`, `/signout`, `/backchannel-logout`.
    pub login: Arc<LoginFlow>,
    /// Every path that is not Tollgate's own, when routes are configured.
    pub proxy: Arc<ProxyState>,
    /// The token service's endpoints.
    pub token_service: Option<Arc<TokenService>>,
    /// What starts the token service's federated logins.
    pub federation: Option<Arc<dyn FederatedLogin>>,
    /// The tracer (`[telemetry]`); `None`: no span is begun.
    pub telemetry: Option<Arc<Telemetry>>,
    /// Whether the listener serves TLS itself (`server.tls_cert_file`): every answer then
    /// tells the browser to stay on https (`Strict-Transport-Security`).
    pub over_tls: bool,
}

/// What serves the public listener's requests.
#[derive(Clone)]
pub struct PublicService {
    proxy: Arc<ProxyState>,
    /// Tollgate's own endpoints; unknown paths get the "not found" page.
    router: Router,
    /// The exact paths `router` has routes for, with the role that answers each (a span's
    /// `tollgate.role`): every other path is the proxy's, when routes are configured.
    own_paths: Arc<HashMap<String, &'static str>>,
    /// Path prefixes `router` answers every path below (`/envoy/`), with their role.
    own_prefixes: Arc<Vec<(String, &'static str)>>,
    /// The tracer (`[telemetry]`).
    telemetry: Option<Arc<Telemetry>>,
    /// `PublicParts::over_tls`.
    over_tls: bool,
}

impl PublicService {
    /// The endpoints the configuration (as the sub-states hold it) turns on.
    pub fn new(parts: PublicParts) -> Self {
        let PublicParts {
            forward_auth,
            login,
            proxy,
            token_service,
            federation,
            telemetry,
            over_tls,
        } = parts;
        let mut endpoints = Endpoints::default();
        // `/ping` answers without any check, as oauth2-proxy's does: for load balancers.
        endpoints.add("/ping", "ping", get(|| async { "OK" }));
        // The landing page, when no route claims `/` (`serve`); also where a sign-out that
        // returns to `public_url` ends: the "signed out" page.
        endpoints.add("/", "page", get(landing).with_state(proxy.clone()));
        let forward_auth_on = forward_auth.forward_auth().is_some();
        if forward_auth_on {
            endpoints.add(
                "/auth",
                "forward_auth",
                get(crate::forward_auth::auth).with_state(forward_auth.clone()),
            );
            endpoints.add(
                "/signin",
                "signin",
                get(crate::login::signin).with_state(login.clone()),
            );
            endpoints.add_prefix(
                crate::forward_auth::envoy::http::PREFIX,
                "forward_auth",
                axum::routing::any(crate::forward_auth::envoy::http::check)
                    .with_state(forward_auth.clone()),
            );
        }
        let federates = token_service
            .as_ref()
            .is_some_and(|service| service.federates());
        if forward_auth_on || !proxy.routes.is_empty() || federates {
            endpoints.add(
                "/callback",
                "callback",
                get(crate::login::callback).with_state(login.clone()),
            );
            endpoints.add(
                "/signout",
                "signout",
                get(crate::login::signout)
                    .post(crate::login::signout)
                    .with_state(login.clone()),
            );
            endpoints.add(
                "/backchannel-logout",
                "backchannel_logout",
                axum::routing::post(crate::login::backchannel::backchannel_logout)
                    .with_state(login.clone())
                    .layer(axum::extract::DefaultBodyLimit::max(
                        crate::login::backchannel::BODY_MOST,
                    )),
            );
        }
        if forward_auth_on || token_service.is_some() {
            endpoints.add(
                "/validate",
                "validate",
                get(crate::forward_auth::validate).with_state(forward_auth.clone()),
            );
            endpoints.add("/userinfo", "userinfo", userinfo(&forward_auth));
        }
        if let Some(service) = &token_service {
            let mount = service.mount_path();
            for (path, handler) in service.routes(federation) {
                endpoints.add(&format!("{mount}{path}"), "token_service", handler);
            }
            // Discovery names `/userinfo` under the issuer's path; it answers there too.
            if !mount.is_empty() {
                endpoints.add(
                    &format!("{mount}/userinfo"),
                    "userinfo",
                    userinfo(&forward_auth),
                );
            }
        }
        Self {
            proxy,
            router: endpoints
                .router
                .fallback(|| async { crate::http::pages::not_found() })
                .method_not_allowed_fallback(|method: axum::http::Method| async move {
                    crate::http::pages::method_not_allowed(&method)
                }),
            own_paths: Arc::new(endpoints.paths),
            own_prefixes: Arc::new(endpoints.prefixes),
            telemetry,
            over_tls,
        }
    }

    /// Serves one request from `peer`, within its span when tracing is on.
    ///
    /// Not an `async fn`: what answers is chosen here, and the future holds the request once,
    /// inside what answers it (`Answer`). As `async fn`s, this and the answer each kept the
    /// request twice, and the connection's future, which boxes this one for every request,
    /// was over the allocator's per-thread cache (1 032 bytes), so every request paid for a
    /// large allocation.
    pub fn serve<B>(
        &self,
        peer: SocketAddr,
        request: Request<B>,
    ) -> impl Future<Output = Result<Response, std::convert::Infallible>> + Send + use<B>
    where
        B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let (mut request, own) = self.own_endpoint(crate::http::host_from_authority(request));
        let hsts = self.over_tls && !names_no_site(request.headers().get(header::HOST));
        // Boxed: the span is hundreds of bytes that a request without tracing would carry. The
        // tracer is held with it, so a reload retires it only once this request is over.
        let traced = self.telemetry.as_ref().map(|telemetry| {
            Box::new((self.span(telemetry, peer, &request, own), telemetry.clone()))
        });
        // Kept for rendering a refusal as a page or as JSON (`http::pages::negotiate`).
        let accept = request.headers().get(header::ACCEPT).cloned();
        let mut answer = if !self.proxy.routes.is_empty() && own.is_none() {
            Answer::Proxy(self.proxy.clone(), Some(request.map(Body::new)))
        } else if let Err(error) = self.target_agrees_with_host(&request) {
            Answer::Ready(Some(
                crate::http::rejection::Rejection::BadRequest(error.to_string()).into_response(),
            ))
        } else {
            request.extensions_mut().insert(ConnectInfo(peer));
            Answer::Own(self.router.clone().oneshot(request))
        };
        async move {
            let mut response = match traced {
                None => answer.run(peer).await,
                // Boxed: the span's scope around the answer, a request without tracing does
                // not carry.
                Some(traced) => {
                    let (span, _tracer) = *traced;
                    let answered = async move { answer.run(peer).await };
                    Box::pin(crate::telemetry::within(span, answered, Response::status)).await
                }
            };
            // The host's only listener is TLS: a plain-http request for it is always someone
            // else's answer (a network attacker's, or one that strips https from a typed
            // address and shows a login form on this host's name). Not `includeSubDomains`:
            // the other hosts of the domain are not this listener's to speak for. An
            // application's own header is kept.
            if hsts {
                response
                    .headers_mut()
                    .entry(header::STRICT_TRANSPORT_SECURITY)
                    .or_insert(HeaderValue::from_static("max-age=31536000"));
            }
            Ok(crate::http::pages::negotiate(accept.as_ref(), response))
        }
    }

    /// The span of a request that `own` (or the proxy) answers.
    fn span<B>(
        &self,
        telemetry: &Telemetry,
        peer: SocketAddr,
        request: &Request<B>,
        own: Option<(OwnEndpoint, &'static str)>,
    ) -> crate::telemetry::RequestSpan {
        // Tollgate's own endpoint: named by its path (a prefix's `/envoy/`); anything else is
        // the proxy's, which names the span after its route once it found one.
        let (name, role): (Cow<'static, str>, _) = match own {
            Some((_, role)) => (Cow::Borrowed(""), role),
            None if !self.proxy.routes.is_empty() => (Cow::Borrowed("proxy"), "proxy"),
            None => (
                Cow::Borrowed(crate::telemetry::known_method(request.method())),
                "page",
            ),
        };
        let trusted = crate::http::forwarded::is_trusted(peer.ip(), &self.proxy.trusted_proxies);
        let mut span = telemetry.begin(
            name,
            role,
            request.method(),
            request.headers(),
            (trusted, false),
        );
        if let Some((endpoint, _)) = own {
            span.route(request.method(), span_route(request.uri().path(), endpoint));
        }
        span
    }

    /// SPEC §4.1: an absolute-form target (or HTTP/2 `:authority`) naming another host than
    /// the `Host` header is refused, so no handler reads one host while the client meant the
    /// other. (The proxy checks the same in `proxy::handle`.)
    fn target_agrees_with_host<B>(
        &self,
        request: &Request<B>,
    ) -> Result<(), crate::http::canonical::HostError> {
        let host = crate::http::canonical::host_header(request.headers())?;
        let Some(authority) = request.uri().authority() else {
            return Ok(());
        };
        crate::http::canonical::request_host(host, Some(authority.as_str())).map(|_| ())
    }

    /// Whether a request for `path` (as sent) with this `Host` is answered by one of
    /// Tollgate's own endpoints rather than proxied. `POST /admin/explain` asks this too.
    pub fn answers_itself(&self, host_header: Option<&[u8]>, path: &str) -> bool {
        crate::http::canonical::canonical_path(path)
            .is_ok_and(|canonical| self.own_role(host_header, &canonical).is_some())
    }

    /// Which own endpoint answers `request`, decided on its canonical path (SPEC §4.1) as the
    /// proxy decides its routes, so `//auth` or `/%61uth` is `/auth` here too and never reaches
    /// an upstream under another reading. When an own endpoint answers a path that was not
    /// canonical, the request's path becomes the canonical one, so the router (and the span)
    /// read what was decided. A path with no single reading is no own endpoint's: the proxy
    /// refuses it (400), or the router finds nothing (404).
    fn own_endpoint<B>(
        &self,
        mut request: Request<B>,
    ) -> (Request<B>, Option<(OwnEndpoint, &'static str)>) {
        // A prefix (`/envoy/`) is matched as sent: what follows it is another request's path,
        // which its handler reads in canonical form; resolved together, `/envoy/../x` would
        // escape the prefix and be answered as `/x`.
        if let Some(own) = self.own_prefix(request.uri().path()) {
            return (request, Some(own));
        }
        let host = request
            .headers()
            .get(header::HOST)
            .map(|value| value.as_bytes());
        let (mut own, rewritten) =
            match crate::http::canonical::canonical_path(request.uri().path()) {
                Err(_) => (None, None),
                Ok(canonical) => {
                    let own = self.own_role(host, &canonical);
                    match canonical {
                        Cow::Owned(path) if own.is_some() => (own, Some(path)),
                        _ => (own, None),
                    }
                }
            };
        if let Some(path) = rewritten {
            let target = match request.uri().query() {
                Some(query) => format!("{path}?{query}"),
                None => path,
            };
            let mut parts = request.uri().clone().into_parts();
            // A canonical path holds only characters a request target may hold; were it ever
            // refused, no own endpoint answers a path it could not be given.
            match target.parse() {
                Ok(target) => {
                    parts.path_and_query = Some(target);
                    match axum::http::Uri::from_parts(parts) {
                        Ok(uri) => *request.uri_mut() = uri,
                        Err(_) => own = None,
                    }
                }
                Err(_) => own = None,
            }
        }
        (request, own)
    }

    /// The own endpoint that answers a request for `path` with this `Host`, and its role;
    /// `None` when the request is the proxy's (or the "not found" page's).
    fn own_role(
        &self,
        host_header: Option<&[u8]>,
        path: &str,
    ) -> Option<(OwnEndpoint, &'static str)> {
        let own = match self.own_paths.get(path) {
            Some(role) => Some((OwnEndpoint::Path, *role)),
            None => self.own_prefix(path),
        };
        own.filter(|_| !(path == "/" && self.a_route_claims_root(host_header)))
    }

    /// The own endpoint whose prefix (`/envoy`) `path` starts with, and its role.
    fn own_prefix(&self, path: &str) -> Option<(OwnEndpoint, &'static str)> {
        self.own_prefixes.iter().find_map(|(prefix, role)| {
            path.strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
                .then_some((OwnEndpoint::Prefix(prefix.len()), *role))
        })
    }

    /// Whether a route serves `/` for this request's host (then the landing page does not).
    fn a_route_claims_root(&self, host_header: Option<&[u8]>) -> bool {
        match crate::http::canonical::request_host(host_header, None) {
            Ok(host) => self.proxy.routes.find(host.as_deref(), "/").is_some(),
            // The proxy answers a bad Host with its 400.
            Err(_) => true,
        }
    }
}

/// `GET /`: signed in or signed out, by the session the cookie opens (as `/auth` would find
/// it, without touching it): a cookie of an ended, expired or forged session, or one a sibling
/// host planted that a sign-out cannot remove, is "signed out". A store that cannot answer
/// leaves the cookie's presence to say it.
async fn landing(
    axum::extract::State(proxy): axum::extract::State<Arc<ProxyState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
) -> Response {
    let cookies = crate::session::request_cookies(&headers);
    let attributes = proxy
        .bases
        .base(peer.ip(), &headers)
        .map_or(crate::session::CookieAttributes::UNKNOWN_BASE, |base| {
            crate::session::CookieAttributes::for_base(&base)
        });
    let signed_in = match &proxy.sessions.sessions {
        // As `/auth` refuses it.
        Some(sessions) if sessions.jar.planted(&cookies, attributes) => false,
        Some(sessions) => match sessions.peek(&cookies, proxy.clock.now()).await {
            Ok(session) => session.is_some(),
            Err(crate::session::store::SessionError::Store(_)) => {
                cookies.contains_key(proxy.cookie_name.as_str())
            }
            Err(crate::session::store::SessionError::Cookie(_)) => false,
        },
        None => false,
    };
    crate::http::pages::landing(signed_in)
}

/// `/userinfo`, by GET or POST: OpenID Connect Core §5.3.1 has the UserInfo endpoint take both
/// (the access token in the `Authorization` header either way).
fn userinfo(forward_auth: &Arc<ForwardAuthState>) -> axum::routing::MethodRouter {
    let handler = crate::forward_auth::userinfo;
    get(handler).post(handler).with_state(forward_auth.clone())
}

/// What answers one request, chosen before its future is made. It holds the request, and
/// stays where it is while it answers (`run` borrows it), so the request's future holds the
/// request once.
enum Answer<B>
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    /// The proxy, for a path none of Tollgate's own endpoints has.
    Proxy(Arc<ProxyState>, Option<Request<Body>>),
    /// Tollgate's own endpoints, through the router.
    Own(tower::util::Oneshot<Router, Request<B>>),
    /// An answer known without either (a request refused before routing).
    Ready(Option<Response>),
}

impl<B> Answer<B>
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    /// Answers, once. The proxy's route is chosen (and the span named) when this future first
    /// runs, inside the request's span.
    async fn run(&mut self, peer: SocketAddr) -> Response {
        match self {
            Answer::Proxy(proxy, request) => match request.take() {
                // Boxed apart: the proxy's future is kilobytes, and as a part of this one it
                // would make every request (`/ping`, `/auth`, …) copy all of it into its box.
                Some(request) => Box::pin(crate::proxy::handle(proxy, peer, request)).await,
                None => crate::http::rejection::Rejection::Internal.into_response(),
            },
            Answer::Own(router) => {
                let mut response = match router.await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                crate::http::security_headers(response.headers_mut());
                response
            }
            Answer::Ready(response) => response
                .take()
                .unwrap_or_else(|| crate::http::rejection::Rejection::Internal.into_response()),
        }
    }
}

/// Whether a `Host` names no site HSTS should pin for a year: none, an IP address (browsers
/// ignore HSTS there anyway) or a loopback name (`localhost`, `*.localhost`), where a
/// developer's other plain-http servers share the name with every port.
fn names_no_site(host: Option<&HeaderValue>) -> bool {
    let Some(host) = host.and_then(|host| host.to_str().ok()) else {
        return true;
    };
    let name = host
        .rsplit_once(':')
        .filter(|(name, port)| !name.ends_with(':') && port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(name, _)| name)
        .trim_end_matches('.');
    let loopback = name.len() >= 9
        && name.is_char_boundary(name.len() - 9)
        && name[name.len() - 9..].eq_ignore_ascii_case("localhost")
        && (name.len() == 9 || name.as_bytes()[name.len() - 10] == b'.');
    name.starts_with('[') || name.parse::<std::net::IpAddr>().is_ok() || loopback
}

/// The `http.route` of an own endpoint: its path, or `<prefix>/` for a prefix's.
fn span_route(path: &str, own: OwnEndpoint) -> &str {
    match own {
        OwnEndpoint::Path => path,
        OwnEndpoint::Prefix(length) => &path[..=length],
    }
}

/// How an own endpoint matched a request's path.
#[derive(Clone, Copy)]
enum OwnEndpoint {
    /// Exactly.
    Path,
    /// As a prefix this many bytes long (the path goes on with `/`).
    Prefix(usize),
}

/// Routes being collected, and their paths with the role that answers them.
#[derive(Default)]
struct Endpoints {
    router: Router,
    paths: HashMap<String, &'static str>,
    prefixes: Vec<(String, &'static str)>,
}

impl Endpoints {
    fn add(&mut self, path: &str, role: &'static str, handler: MethodRouter) {
        self.paths.insert(path.to_owned(), role);
        self.router = std::mem::take(&mut self.router).route(path, handler);
    }

    /// `handler` answers `prefix/` and every path below it.
    fn add_prefix(&mut self, prefix: &str, role: &'static str, handler: MethodRouter) {
        self.prefixes.push((prefix.to_owned(), role));
        self.router = std::mem::take(&mut self.router)
            .route(&format!("{prefix}/"), handler.clone())
            .route(&format!("{prefix}/{{*rest}}"), handler);
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    #[test]
    fn hsts_pins_names_of_sites_never_addresses_or_loopback_names() {
        for host in [
            "localhost",
            "localhost:8443",
            "app.localhost",
            "LOCALHOST.",
            "127.0.0.1:8443",
            "[::1]:8443",
            "10.0.0.7",
        ] {
            assert!(
                super::names_no_site(Some(&HeaderValue::from_static(host))),
                "{host}"
            );
        }
        assert!(super::names_no_site(None));
        for host in [
            "auth.example.com",
            "auth.example.com:443",
            "localhost.example.com",
        ] {
            assert!(
                !super::names_no_site(Some(&HeaderValue::from_static(host))),
                "{host}"
            );
        }
    }
}
