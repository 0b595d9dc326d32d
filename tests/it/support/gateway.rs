//! `Gateway`: Tollgate started in-process from a TOML string on 127.0.0.1:0.

use std::collections::BTreeMap;
use std::sync::Arc;

use tollgate::app::RunningApp;

use super::idp::{AUDIENCE, CLIENT_ID, CLIENT_SECRET, TestIdp};

pub const SESSION_SECRET: &str = "test-session-secret-test-session-secret";

pub struct Gateway {
    pub app: RunningApp,
    /// The client of `get`, `post` and friends: no cookies, no automatic redirects.
    client: reqwest::Client,
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

impl Gateway {
    /// Forward-auth against `idp`, with `extra` TOML appended (later keys win per section).
    pub fn forward_auth_config(
        idp: &TestIdp,
        server_extra: &str,
        forward_auth_extra: &str,
    ) -> String {
        format!(
            r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
{server_extra}

[session]
secrets = ["{SESSION_SECRET}"]

[[provider]]
name = "corp"
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
audiences = ["{AUDIENCE}"]
jwks_refetch_interval = "1h"

[forward_auth]
provider = "corp"
{forward_auth_extra}
"#,
            issuer = idp.issuer()
        )
    }

    pub async fn start(config_text: &str) -> Self {
        Self::start_with_clock(config_text, Arc::new(tollgate::clock::SystemClock)).await
    }

    pub async fn start_with_clock(
        config_text: &str,
        clock: Arc<dyn tollgate::clock::Clock>,
    ) -> Self {
        let config = tollgate::config::load(config_text, &BTreeMap::new())
            .unwrap_or_else(|problems| panic!("config: {problems:?}"));
        let public = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let app = tollgate::app::start(config, clock, Some(public), Some(admin))
            .await
            .unwrap();
        Self::from_app(app)
    }

    /// Tollgate whose public listener is bound first, so that the config can name its own
    /// address (a token service's `issuer`): `config` gets `http://127.0.0.1:<port>`.
    pub async fn start_at_issuer(config: impl FnOnce(&str) -> String) -> (Self, String) {
        Self::start_at_issuer_with_clock(config, Arc::new(tollgate::clock::SystemClock)).await
    }

    /// [`Self::start_at_issuer`] on `clock`.
    pub async fn start_at_issuer_with_clock(
        config: impl FnOnce(&str) -> String,
        clock: Arc<dyn tollgate::clock::Clock>,
    ) -> (Self, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let config = tollgate::config::load(&config(&issuer), &BTreeMap::new())
            .unwrap_or_else(|problems| panic!("config: {problems:?}"));
        let app = tollgate::app::start(config, clock, Some(listener), None)
            .await
            .unwrap();
        (Self::from_app(app), issuer)
    }

    /// A `Gateway` around an app a test started itself.
    pub fn from_app(app: RunningApp) -> Self {
        Self {
            app,
            client: client(),
        }
    }

    pub async fn forward_auth(idp: &TestIdp) -> Self {
        Self::start(&Self::forward_auth_config(idp, "", "")).await
    }

    /// Stops it as SIGTERM would: drains, flushes the session state file.
    pub async fn stop(self) {
        self.app.shutdown().await.unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.app.public_addr)
    }

    /// A request to the public listener (answers are not followed: a redirect is the answer).
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path))
    }

    /// A POST to the public listener.
    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(self.url(path))
    }

    /// Posts `token` to `/backchannel-logout`, as a provider does.
    pub async fn backchannel_logout(&self, token: &str) -> reqwest::Response {
        self.post("/backchannel-logout")
            .form(&[("logout_token", token)])
            .send()
            .await
            .unwrap()
    }

    /// A request to the admin listener.
    pub fn admin_get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.admin_url(path))
    }

    /// A POST to the admin listener.
    pub fn admin_post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(self.admin_url(path))
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.app.admin_addr.unwrap())
    }

    /// The admin listener's Prometheus text.
    pub async fn metrics(&self) -> String {
        reqwest::get(self.admin_url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// Runs `/signin?rd=…` → the test provider → `/callback` and returns the callback's answer.
pub async fn sign_in(
    browser: &mut super::Browser,
    gateway: &Gateway,
    rd: &str,
) -> reqwest::Response {
    sign_in_at(browser, &gateway.url(""), rd).await
}

/// [`sign_in`] at a Tollgate answering at `base` (`http://host:port`), run in-process or not.
pub async fn sign_in_at(browser: &mut super::Browser, base: &str, rd: &str) -> reqwest::Response {
    use super::browser::location;
    let signin = browser.get(&format!("{base}/signin?rd={rd}")).await;
    assert_eq!(signin.status(), 302);
    let at_provider = browser.get(&location(&signin)).await;
    assert_eq!(at_provider.status(), 302);
    browser.get(&location(&at_provider)).await
}

/// `sign_in` that must succeed. The browser then also holds the binding a sign-in over https
/// sets beside the session cookie (`__Host-tollgate_bind`: the first 24 characters of its
/// sealed value, after the `.`): tests sign in over plain http on loopback, and some then
/// describe the request as one to `https://app.example.com`, where a session cookie counts
/// only with its binding.
pub async fn signed_in(browser: &mut super::Browser, gateway: &Gateway) {
    assert_eq!(sign_in(browser, gateway, "/").await.status(), 302);
    let binding = browser
        .cookies
        .get("tollgate")
        .and_then(|value| value.split_once('.'))
        .and_then(|(_, sealed)| sealed.get(..24))
        .map(str::to_owned);
    if let Some(binding) = binding {
        browser
            .cookies
            .insert("__Host-tollgate_bind".to_owned(), binding);
    }
}
