//! `tollgate demo`: the whole system on loopback with no config file and no network — the token
//! service with local demo users, the forward-auth endpoints using it as their provider, and a
//! small demo app that asks `/auth` about every request (as nginx `auth_request` does) and shows
//! the identity headers it gets back.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Uri, header};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;

use crate::app::RunningApp;
use crate::clock::Clock;

/// Where the demo app serves the requests Tollgate's proxy sends it (the route `/app`).
const BEHIND_PROXY: &str = "/behind-proxy";

/// Headers the demo app asks `/auth` to inject.
const INJECT: &str = "inject-claim=sub,X-Auth-Subject&inject-claim=email,X-Auth-Email&inject-claim=name,X-Auth-Name&inject-claim=groups,X-Auth-Groups";

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A demo user's password could not be hashed.
    #[error("{0}")]
    Hash(String),
    /// The generated config was refused (a bug).
    #[error("demo config invalid: {0}")]
    Config(String),
    /// Tollgate did not start.
    #[error(transparent)]
    App(#[from] crate::app::AppError),
    /// The demo app's HTTP client could not be built.
    #[error("HTTP client")]
    HttpClient(#[source] reqwest::Error),
    /// A listener's address could not be read.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A demo user and the password generated for this run.
#[derive(Debug, Clone)]
pub struct DemoUser {
    /// Login name.
    pub username: String,
    /// Password for this run.
    pub password: String,
}

/// A running demo.
pub struct RunningDemo {
    /// Tollgate itself (token service and forward-auth).
    pub tollgate: RunningApp,
    /// The demo app's address, as its links name it.
    pub app_addr: SocketAddr,
    /// Tollgate's public address, as the demo's links name it (its issuer's).
    pub public_addr: SocketAddr,
    /// The users and their passwords.
    pub users: Vec<DemoUser>,
    app_task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningDemo {
    /// Stops the demo app and Tollgate.
    ///
    /// # Errors
    /// When a listener failed.
    pub async fn shutdown(self) -> std::io::Result<()> {
        self.app_task.abort();
        self.tollgate.shutdown().await
    }
}

/// Builds the demo configuration for a token service at `issuer` and an app at `app_addr`.
///
/// # Errors
/// When a password cannot be hashed.
pub fn demo_config(
    issuer: &str,
    app_addr: SocketAddr,
    admin: Option<SocketAddr>,
    users: &[DemoUser],
) -> Result<String, DemoError> {
    let secret = crate::random::token();
    let mut text = format!(
        r#"[server]
listen = "{listen}"
admin_listen = "{admin}"
allowed_redirect_domains = ["{app_addr}"]

[session]
secrets = ["{secret}"]
lifetime = "8h"

[[provider]]
name = "demo"
issuer = "{issuer}"
client_id = "tollgate-demo"
client_auth = "none"
audiences = ["tollgate-demo"]

[forward_auth]
provider = "demo"

# The second way: the same app behind Tollgate's reverse proxy, which logs the browser in
# itself and sends identity headers upstream.
[[route]]
path_prefix = "/app"
upstream = "http://{app_addr}{BEHIND_PROXY}"
provider = "demo"
[route.headers]
"X-Auth-Subject" = "claim:sub"
"X-Auth-Email" = "claim:email"
"X-Auth-Name" = "claim:name"
"X-Auth-Groups" = "claim:groups"

[token_service]
issuer = "{issuer}"
token_lifetime = "15m"

[[token_service.client]]
client_id = "tollgate-demo"
grants = ["authorization_code", "refresh_token"]
redirect_uris = ["{issuer}/callback"]
source = "demo"
"#,
        listen = issuer.trim_start_matches("http://"),
        admin = admin.map_or_else(|| "127.0.0.1:0".to_owned(), |address| address.to_string()),
    );
    let details = [
        (
            "alice",
            "Alice Example",
            "alice@example.com",
            "[\"admin\", \"dev\"]",
        ),
        ("bob", "Bob Example", "bob@example.com", "[\"dev\"]"),
    ];
    for user in users {
        let (name, email, groups) = details
            .iter()
            .find(|(username, ..)| *username == user.username)
            .map_or(
                ("Demo User", "demo@example.com", "[]"),
                |(_, name, email, groups)| (*name, *email, *groups),
            );
        let hash = crate::issuer::hash_password(&user.password).map_err(DemoError::Hash)?;
        text.push_str(&format!(
            "\n[[token_service.user]]\nusername = \"{}\"\npassword_hash = \"{hash}\"\nname = \"{name}\"\nemail = \"{email}\"\ngroups = {groups}\n",
            user.username
        ));
    }
    Ok(text)
}

/// The address the demo's links, issuer and allowed redirects name for a listener bound to
/// `bound`: an unspecified address (`0.0.0.0`, `::`) listens on every interface but is no
/// address a browser can be sent to, nor a host its cookies would follow, so it is named by
/// the loopback address of its family.
pub fn linkable(bound: SocketAddr) -> SocketAddr {
    match bound.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, bound.port()))
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, bound.port()))
        }
        _ => bound,
    }
}

/// Starts the demo on the given listeners.
///
/// # Errors
/// When the configuration or a listener fails.
pub async fn start(
    public: TcpListener,
    app: TcpListener,
    admin: TcpListener,
    clock: Arc<dyn Clock>,
) -> Result<RunningDemo, DemoError> {
    let public_addr = linkable(public.local_addr()?);
    let app_addr = linkable(app.local_addr()?);
    let admin_addr = admin.local_addr()?;
    let issuer = format!("http://{public_addr}");
    let users: Vec<DemoUser> = ["alice", "bob"]
        .iter()
        .map(|username| DemoUser {
            username: (*username).to_owned(),
            password: crate::random::token().chars().take(12).collect(),
        })
        .collect();
    let text = demo_config(&issuer, app_addr, Some(admin_addr), &users)?;
    let config = crate::config::load(&text, &BTreeMap::new()).map_err(|problems| {
        DemoError::Config(
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    let tollgate = crate::app::start(config, clock, Some(public), Some(admin)).await?;
    let demo_app = DemoApp {
        auth_url: format!("{issuer}/auth?{INJECT}"),
        signin_url: format!("{issuer}/signin"),
        signout_url: format!("{issuer}/signout"),
        signed_out_url: format!("{issuer}/"),
        app_base: format!("http://{app_addr}"),
        // Straight to `/auth` on this machine, never through a proxy the environment names
        // (`HTTP_PROXY` has no exception for loopback): the browser's session cookie goes along.
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(DemoError::HttpClient)?,
    };
    let router = Router::new()
        .fallback(demo_page)
        .with_state(Arc::new(demo_app));
    let app_task = tokio::spawn(async move { axum::serve(app, router.into_make_service()).await });
    Ok(RunningDemo {
        tollgate,
        app_addr,
        public_addr,
        users,
        app_task,
    })
}

struct DemoApp {
    auth_url: String,
    signin_url: String,
    signout_url: String,
    /// Where a sign-out ends: Tollgate's own "signed out" page.
    signed_out_url: String,
    /// The app's own address (`http://127.0.0.1:4181`): the original URL a sign-in returns
    /// to, never the `Host` a browser sent (`localhost` is refused as a redirect target and
    /// would not get the cookie set for the address; beyond loopback, a client would choose
    /// it).
    app_base: String,
    http: reqwest::Client,
}

/// The identity headers a request carries, as table rows.
fn identity_rows(headers: &HeaderMap) -> String {
    let mut rows = String::new();
    for (name, value) in headers {
        if name.as_str().starts_with("x-auth-") {
            let value = crate::http::pages::escape(value.to_str().unwrap_or("(binary)"));
            rows.push_str(&format!("<tr><th>{name}</th><td>{value}</td></tr>"));
        }
    }
    rows
}

/// The page showing what Tollgate sent, with a sign-out button.
fn identity_page(how: &str, rows: &str, signout: &str) -> Response {
    crate::http::pages::html(
        axum::http::StatusCode::OK,
        "The demo app",
        &format!(
            "<p>{how}</p><table>{rows}</table><a class=\"button\" href=\"{}\">Sign out</a>",
            crate::http::pages::escape(signout)
        ),
    )
}

async fn demo_page(State(app): State<Arc<DemoApp>>, uri: Uri, headers: HeaderMap) -> Response {
    let encoded =
        |text: &str| url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
    let signout = format!("{}?rd={}", app.signout_url, encoded(&app.signed_out_url));
    if uri.path().starts_with(BEHIND_PROXY) {
        // Sent by Tollgate's proxy, which removed any X-Auth-* the client sent and added its
        // own. (A real app behind the proxy listens only where Tollgate can reach it.)
        return identity_page(
            "Tollgate's reverse proxy logged you in and sent these identity headers with the request:",
            &identity_rows(&headers),
            &signout,
        );
    }
    let original_url = format!(
        "{}{}",
        app.app_base,
        uri.path_and_query().map_or("/", |path| path.as_str())
    );
    let mut request = app
        .http
        .get(&app.auth_url)
        .header("X-Original-URL", &original_url)
        .header("X-Original-Method", "GET");
    if let Some(cookie) = headers.get(header::COOKIE) {
        request = request.header(header::COOKIE, cookie.clone());
    }
    let answer = match request.send().await {
        Ok(answer) => answer,
        Err(error) => {
            return (
                axum::http::StatusCode::BAD_GATEWAY,
                format!("forward-auth unreachable: {error}"),
            )
                .into_response();
        }
    };
    match answer.status().as_u16() {
        200 => identity_page(
            "Tollgate's forward-auth (/auth, as nginx auth_request asks it) let this request through with these identity headers:",
            &identity_rows(answer.headers()),
            &signout,
        ),
        401 => crate::http::found(&format!("{}?rd={}", app.signin_url, encoded(&original_url))),
        status => (
            axum::http::StatusCode::FORBIDDEN,
            format!("forward-auth answered {status}"),
        )
            .into_response(),
    }
}
