//! `Browser`: an HTTP client with a cookie jar that follows no redirects by itself.

use std::collections::BTreeMap;

pub struct Browser {
    client: reqwest::Client,
    pub cookies: BTreeMap<String, String>,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    pub fn new() -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self {
            client,
            cookies: BTreeMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Stores the response's `Set-Cookie`s (an empty value or `Max-Age=0` deletes).
    pub fn remember(&mut self, response: &reqwest::Response) {
        for value in response.headers().get_all("set-cookie") {
            let text = value.to_str().unwrap();
            let (pair, attributes) = text.split_once(';').unwrap_or((text, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || attributes.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    pub async fn get(&mut self, url: &str) -> reqwest::Response {
        self.get_with(url, &[]).await
    }

    pub async fn get_with(&mut self, url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self.client.get(url);
        if !self.cookies.is_empty() {
            request = request.header("cookie", self.cookie_header());
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        self.remember(&response);
        response
    }

    /// A `POST` without a body, as a page's form of one button sends it, with `headers`.
    pub async fn post_with(&mut self, url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self.client.post(url).header("content-length", "0");
        if !self.cookies.is_empty() {
            request = request.header("cookie", self.cookie_header());
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        self.remember(&response);
        response
    }

    pub async fn post_form(&mut self, url: &str, body: String) -> reqwest::Response {
        let mut request = self
            .client
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if !self.cookies.is_empty() {
            request = request.header("cookie", self.cookie_header());
        }
        let response = request.send().await.unwrap();
        self.remember(&response);
        response
    }

    /// Signs in at the token service's login form as a browser that sends no Fetch Metadata
    /// does: the form at `authorize_url` with `query` first (its hidden token, and the cookie
    /// that holds it), then the form posted with `credentials` (`username=…&password=…`).
    pub async fn post_login(
        &mut self,
        authorize_url: &str,
        query: &str,
        credentials: &str,
    ) -> reqwest::Response {
        let form = self.get(&format!("{authorize_url}?{query}")).await;
        let html = form.text().await.unwrap();
        let token = html
            .split_once("name=\"form_token\" value=\"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(token, _)| token.to_owned())
            .unwrap_or_else(|| panic!("no form token in the login form: {html}"));
        self.post_form(
            authorize_url,
            format!("{query}&{credentials}&form_token={token}"),
        )
        .await
    }

    /// Follows redirects (sending cookies to every host: all tests run on 127.0.0.1) until a
    /// non-redirect answer; returns it and the last URL.
    pub async fn follow(&mut self, url: &str) -> (reqwest::Response, String) {
        let mut url = url.to_owned();
        for _ in 0..10 {
            let response = self.get(&url).await;
            if !response.status().is_redirection() {
                return (response, url);
            }
            url = redirected_to(&url, &response);
        }
        panic!("too many redirects");
    }
}

impl Browser {
    /// Follows redirects from `url` until one points at an address starting with `stop`, and
    /// returns that address without requesting it (another host, which the test serves).
    pub async fn follow_until(&mut self, url: &str, stop: &str) -> String {
        let mut url = url.to_owned();
        for _ in 0..10 {
            let response = self.get(&url).await;
            assert!(
                response.status().is_redirection(),
                "{url}: {}",
                response.status()
            );
            url = redirected_to(&url, &response);
            if url.starts_with(stop) {
                return url;
            }
        }
        panic!("too many redirects");
    }
}

/// The absolute address a redirect from `url` points at.
fn redirected_to(url: &str, response: &reqwest::Response) -> String {
    reqwest::Url::parse(url)
        .unwrap()
        .join(&location(response))
        .unwrap()
        .to_string()
}

pub fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("location")
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// The value of the query parameter `name` in `url`, decoded.
pub fn query_value(url: &reqwest::Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}
