//! The public listener: Tollgate's own endpoints (forward-auth, login, token service) through
//! axum's router, and every other path straight to the reverse proxy when routes are
//! configured, without the router's layers on the way.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, header};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{MethodRouter, get};
use tower::ServiceExt as _;

use crate::app::AppState;

/// What serves the public listener's requests.
#[derive(Clone)]
pub struct PublicService {
    state: Arc<AppState>,
    /// Tollgate's own endpoints; unknown paths get the "not found" page.
    router: Router,
    /// The exact paths `router` has routes for: every other path is the proxy's, when routes
    /// are configured.
    own_paths: Arc<HashSet<String>>,
}

impl PublicService {
    /// The endpoints `state`'s configuration turns on.
    pub fn new(state: &Arc<AppState>) -> Self {
        let mut endpoints = Endpoints::default();
        // `/ping` answers without any check, as oauth2-proxy's does: for load balancers.
        endpoints.add("/ping", get(|| async { "OK" }));
        // The landing page, when no route claims `/` (`serve`); also where a sign-out that
        // returns to `public_url` ends: the "signed out" page.
        endpoints.add("/", get(landing));
        if state.forward_auth().is_some() {
            endpoints.add("/auth", get(crate::forward_auth::auth));
            endpoints.add("/signin", get(crate::login::signin));
        }
        let federates = state.config.token_service.as_ref().is_some_and(|service| {
            service
                .clients
                .iter()
                .any(|client| client.login_provider.is_some())
        });
        if state.forward_auth().is_some() || !state.routes.is_empty() || federates {
            endpoints.add("/callback", get(crate::login::callback));
            endpoints.add("/signout", get(crate::login::signout));
            endpoints.add(
                "/backchannel-logout",
                axum::routing::post(crate::login::backchannel::backchannel_logout),
            );
        }
        if state.forward_auth().is_some() || state.token_service.is_some() {
            endpoints.add("/validate", get(crate::forward_auth::validate));
            endpoints.add("/userinfo", get(crate::forward_auth::userinfo));
        }
        if let Some(service) = &state.token_service {
            let mount = service.mount_path();
            for (path, handler) in service.routes() {
                endpoints.add(&format!("{mount}{path}"), handler);
            }
        }
        Self {
            state: state.clone(),
            router: endpoints
                .router
                .fallback(|| async { crate::http::pages::not_found() })
                .with_state(state.clone()),
            own_paths: Arc::new(endpoints.paths),
        }
    }

    /// Serves one request from `peer`.
    pub async fn serve<B>(&self, peer: SocketAddr, request: Request<B>) -> Response
    where
        B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let mut request = crate::http::host_from_authority(request);
        // Kept for rendering a refusal as a page or as JSON (`http::pages::negotiate`).
        let accept = request.headers().get(header::ACCEPT).cloned();
        let own = self.answers_itself(
            request
                .headers()
                .get(header::HOST)
                .map(|value| value.as_bytes()),
            request.uri().path(),
        );
        let response = if !self.state.routes.is_empty() && !own {
            crate::proxy::handle(&self.state, peer, request.map(Body::new)).await
        } else if let Err(error) = self.target_agrees_with_host(&request) {
            crate::http::rejection::Rejection::BadRequest(error.to_string()).into_response()
        } else {
            request.extensions_mut().insert(ConnectInfo(peer));
            let mut response = match self.router.clone().oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            crate::http::security_headers(response.headers_mut());
            response
        };
        crate::http::pages::negotiate(accept.as_ref(), response)
    }

    /// SPEC §4.1: an absolute-form target (or HTTP/2 `:authority`) naming another host than
    /// the `Host` header is refused, so no handler reads one host while the client meant the
    /// other. (The proxy checks the same in `proxy::handle`.)
    fn target_agrees_with_host<B>(
        &self,
        request: &Request<B>,
    ) -> Result<(), crate::http::canonical::HostError> {
        let Some(authority) = request.uri().authority() else {
            return Ok(());
        };
        crate::http::canonical::request_host(
            request
                .headers()
                .get(header::HOST)
                .map(|value| value.as_bytes()),
            Some(authority.as_str()),
        )
        .map(|_| ())
    }

    /// Whether a request for `path` (as sent) with this `Host` is answered by one of
    /// Tollgate's own endpoints rather than proxied. `POST /admin/explain` asks this too.
    pub fn answers_itself(&self, host_header: Option<&[u8]>, path: &str) -> bool {
        self.own_paths.contains(path) && !(path == "/" && self.a_route_claims_root(host_header))
    }

    /// Whether a route serves `/` for this request's host (then the landing page does not).
    fn a_route_claims_root(&self, host_header: Option<&[u8]>) -> bool {
        match crate::http::canonical::request_host(host_header, None) {
            Ok(host) => self.state.routes.find(host.as_deref(), "/").is_some(),
            // The proxy answers a bad Host with its 400.
            Err(_) => true,
        }
    }

    /// The service for one connection from `peer`, in the shape hyper serves.
    pub fn for_connection(
        self,
        peer: SocketAddr,
    ) -> impl hyper::service::Service<
        Request<hyper::body::Incoming>,
        Response = Response,
        Error = Infallible,
        Future = impl Future<Output = Result<Response, Infallible>> + Send + 'static,
    > + Clone
    + Send
    + 'static {
        hyper::service::service_fn(move |request| {
            let this = self.clone();
            async move { Ok(this.serve(peer, request).await) }
        })
    }
}

/// `GET /`: signed in or signed out, by the session cookie (a sign-out removes it).
async fn landing(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
) -> Response {
    let cookies = crate::session::request_cookies(&headers);
    let name = &state.config.session.cookie_name;
    crate::http::pages::landing(cookies.contains_key(name.as_str()))
}

/// Routes being collected, and their paths.
#[derive(Default)]
struct Endpoints {
    router: Router<Arc<AppState>>,
    paths: HashSet<String>,
}

impl Endpoints {
    fn add(&mut self, path: &str, handler: MethodRouter<Arc<AppState>>) {
        self.paths.insert(path.to_owned());
        self.router = std::mem::take(&mut self.router).route(path, handler);
    }
}
