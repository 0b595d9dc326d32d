//! Requests to a provider's token endpoint: the authorization code exchange with client
//! authentication (`client_secret_basic`, `client_secret_post`, `private_key_jwt`, or none with
//! PKCE).

use base64::Engine as _;

use super::{ProviderError, TokenResponse, assertion};
use crate::clock::UnixTime;
use crate::config::{ClientAuth, ProviderConfig};

/// An endpoint where Tollgate authenticates as the provider's client: its URL, the algorithms
/// the provider's discovery lists for client assertions there, and the time to date them.
#[derive(Debug, Clone, Copy)]
pub struct ClientEndpoint<'a> {
    /// The endpoint's URL.
    pub url: &'a str,
    /// `token_endpoint_auth_signing_alg_values_supported` (or the introspection one).
    pub signing_algs: Option<&'a [String]>,
    /// Now.
    pub now: UnixTime,
}

/// Longest answer read from a provider (SPEC §9); a larger one is a `BadResponse` (502).
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// How a provider's outbound HTTP clients are set up: no redirects (SSRF), every request
/// (connecting, sending, reading the whole answer) bounded by the provider's `timeout`.
fn builder(timeout: std::time::Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeout.min(std::time::Duration::from_secs(5)))
        .timeout(timeout)
        .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION")))
}

/// A provider's HTTP client for each thread that calls it (`builder`'s settings, one TLS
/// configuration shared by all). A pooled connection is driven by a task on the thread that
/// opened it: with one client for all, a login on one worker often found its connection on
/// another, and each round trip to the provider woke that thread and was woken back by it
/// (a `/callback` makes two). Each thread keeping its own connections keeps a request's calls
/// on its own thread, as the proxy's upstream connections are (`proxy::pool`).
pub struct HttpClient {
    timeout: std::time::Duration,
    /// Built at start, so that a configuration the TLS stack refuses is found then; used as it
    /// is where a thread's own client could not be built.
    first: reqwest::Client,
    tls: Option<rustls::ClientConfig>,
    per_thread: thread_local::ThreadLocal<reqwest::Client>,
}

impl HttpClient {
    /// The client of a provider whose answers must come within `timeout`.
    ///
    /// # Errors
    /// When the TLS stack cannot be set up.
    pub fn new(timeout: std::time::Duration) -> Result<Self, reqwest::Error> {
        // Without the system's roots the shared configuration cannot be had; each thread's
        // client then sets up its own TLS, as reqwest does by default (the same system roots).
        let tls = crate::tls::provider_client_config().ok();
        let first = Self::build(timeout, tls.as_ref())?;
        Ok(Self {
            timeout,
            first,
            tls,
            per_thread: thread_local::ThreadLocal::new(),
        })
    }

    fn build(
        timeout: std::time::Duration,
        tls: Option<&rustls::ClientConfig>,
    ) -> Result<reqwest::Client, reqwest::Error> {
        match tls {
            Some(tls) => builder(timeout).tls_backend_preconfigured(tls.clone()),
            None => builder(timeout),
        }
        .build()
    }

    /// The calling thread's client.
    pub fn get(&self) -> &reqwest::Client {
        self.per_thread.get_or(|| {
            Self::build(self.timeout, self.tls.as_ref()).unwrap_or_else(|_| self.first.clone())
        })
    }
}

/// The body of a provider's answer, read up to `MAX_ANSWER_BYTES`: an answer that says or
/// turns out to be larger is refused before more of it is read (never unbounded memory).
///
/// # Errors
/// `BadResponse` when the answer is too large, `Unreachable` when reading it fails or times out.
pub async fn read_answer(
    mut response: reqwest::Response,
    what: &str,
) -> Result<Vec<u8>, ProviderError> {
    let too_large = || {
        ProviderError::BadResponse(format!(
            "{what} answer is larger than {MAX_ANSWER_BYTES} bytes"
        ))
    };
    if response
        .content_length()
        .is_some_and(|length| length > MAX_ANSWER_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|error| ProviderError::Unreachable(format!("{what}: {error}")))?
    {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// RFC 6749 §2.3.1: client id and secret are form-urlencoded before HTTP Basic.
fn basic_credentials(client_id: &str, secret: &str) -> String {
    let encode =
        |text: &str| url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
    let pair = format!("{}:{}", encode(client_id), encode(secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// Exchanges an authorization code (RFC 6749 §4.1.3, RFC 7636 §4.5).
///
/// # Errors
/// `Unreachable`, `Refused` with the provider's error code, `ClientRejected` when that code
/// is `invalid_client` (or a 401 names none), or `BadResponse`.
pub async fn exchange_code(
    http: &reqwest::Client,
    provider: &ProviderConfig,
    token_endpoint: ClientEndpoint<'_>,
    code: &str,
    redirect_uri: &str,
    code_verifier: &str,
) -> Result<TokenResponse, ProviderError> {
    let form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("code_verifier", code_verifier),
    ];
    token_request(http, provider, token_endpoint, form).await
}

/// Refreshes tokens with a refresh token (RFC 6749 §6).
///
/// # Errors
/// As `exchange_code`.
pub async fn refresh_tokens(
    http: &reqwest::Client,
    provider: &ProviderConfig,
    token_endpoint: ClientEndpoint<'_>,
    refresh_token: &str,
) -> Result<TokenResponse, ProviderError> {
    let form = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
    ];
    token_request(http, provider, token_endpoint, form).await
}

/// POSTs `form` to one of the provider's endpoints, authenticated as the client the way
/// `client_auth` says (RFC 6749 §2.3), and returns the answer's status and body.
async fn client_post(
    http: &reqwest::Client,
    provider: &ProviderConfig,
    endpoint: ClientEndpoint<'_>,
    form: Vec<(&str, &str)>,
) -> Result<(reqwest::StatusCode, Vec<u8>), ProviderError> {
    let client_assertion;
    // Rebound so that the assertion made here may join it.
    let mut form = form;
    let secret = provider
        .client_secret
        .as_ref()
        .map(|secret| secret.expose().as_str())
        .unwrap_or_default();
    let mut request = http
        .post(endpoint.url)
        .header(reqwest::header::ACCEPT, "application/json");
    match provider.client_auth {
        ClientAuth::ClientSecretBasic => {
            request = request.header(
                reqwest::header::AUTHORIZATION,
                basic_credentials(&provider.client_id, secret),
            );
        }
        ClientAuth::ClientSecretPost => {
            form.push(("client_id", &provider.client_id));
            form.push(("client_secret", secret));
        }
        ClientAuth::None => form.push(("client_id", &provider.client_id)),
        ClientAuth::PrivateKeyJwt => {
            // `config` gives every private_key_jwt provider its key; without one, nothing is sent.
            let key = provider.client_key.as_ref().ok_or_else(|| {
                ProviderError::BadResponse("private_key_jwt without a client key".to_owned())
            })?;
            client_assertion = assertion::sign(
                provider,
                key,
                endpoint.url,
                endpoint.signing_algs,
                endpoint.now,
            )?;
            // RFC 7521 §4.2: client_id is optional beside an assertion; Entra ID wants it.
            form.push(("client_id", &provider.client_id));
            form.push(("client_assertion_type", assertion::ASSERTION_TYPE));
            form.push(("client_assertion", &client_assertion));
        }
    }
    let response = request
        .form(&form)
        .send()
        .await
        .map_err(|error| ProviderError::Unreachable(error.to_string()))?;
    let status = response.status();
    let body = read_answer(response, "token or introspection endpoint").await?;
    Ok((status, body))
}

async fn token_request(
    http: &reqwest::Client,
    provider: &ProviderConfig,
    token_endpoint: ClientEndpoint<'_>,
    form: Vec<(&str, &str)>,
) -> Result<TokenResponse, ProviderError> {
    let (status, body) = client_post(http, provider, token_endpoint, form).await?;
    // RFC 6749 §5.2: a refusal is a 4xx with an error code; a 5xx, a 429 (the provider
    // throttling this client: it refused no grant) or anything else is the provider failing,
    // not refusing (a refresh keeps its session then, a login may be retried).
    if !status.is_success()
        && (!status.is_client_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS)
    {
        return Err(ProviderError::BadResponse(format!(
            "token endpoint answered {status}"
        )));
    }
    if !status.is_success() {
        return Err(refusal("token endpoint", status, &body));
    }
    let response: TokenResponse = serde_json::from_slice(&body).map_err(|error| {
        ProviderError::UnusableTokens(crate::untrusted::bounded(&error.to_string()))
    })?;
    response.ensure_bearer().map_err(|error| match error {
        ProviderError::BadResponse(reason) => ProviderError::UnusableTokens(reason),
        other => other,
    })?;
    Ok(response)
}

/// A non-2xx answer of the token or introspection endpoint: `ClientRejected` when it refuses
/// Tollgate's client authentication (the code `invalid_client`, or a 401 without a code: RFC
/// 6749 §5.2, RFC 7662 §2.3), otherwise `Refused` with its OAuth error code (or the status).
fn refusal(endpoint: &str, status: reqwest::StatusCode, body: &[u8]) -> ProviderError {
    let code = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|value| {
            value
                .get("error")
                .and_then(serde_json::Value::as_str)
                // An error code is a short ASCII word (RFC 6749 §5.2); it reaches the logs,
                // so no more of the provider's text than that, escaped.
                .map(crate::untrusted::bounded)
        });
    match code {
        // A 429 is the provider throttling, whatever code it names.
        Some(code)
            if code == "invalid_client"
                && status.is_client_error()
                && status != reqwest::StatusCode::TOO_MANY_REQUESTS =>
        {
            ProviderError::ClientRejected(format!("the {endpoint} answered invalid_client"))
        }
        None if status == reqwest::StatusCode::UNAUTHORIZED => {
            ProviderError::ClientRejected(format!("the {endpoint} answered {status}"))
        }
        Some(code) => ProviderError::Refused(code),
        None => ProviderError::Refused(format!("HTTP {status}")),
    }
}

/// Asks the provider whether an opaque token is active (RFC 7662 §2), authenticating as the
/// client the way `client_auth` says.
///
/// # Errors
/// `Unreachable`; `ClientRejected` as for `exchange_code`; `Refused` naming the status for
/// any other answer that is not a 2xx; `BadResponse` when the answer is no JSON object. The
/// answer is the introspection response's JSON object.
pub async fn introspect(
    http: &reqwest::Client,
    provider: &ProviderConfig,
    introspection_endpoint: ClientEndpoint<'_>,
    token: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, ProviderError> {
    let form = vec![("token", token), ("token_type_hint", "access_token")];
    let (status, body) = client_post(http, provider, introspection_endpoint, form).await?;
    if !status.is_success() {
        return Err(match refusal("introspection endpoint", status, &body) {
            rejected @ ProviderError::ClientRejected(_) => rejected,
            _ => ProviderError::Refused(format!("introspection answered {status}")),
        });
    }
    serde_json::from_slice(&body).map_err(|error| {
        ProviderError::BadResponse(format!(
            "introspection: {}",
            crate::untrusted::bounded(&error.to_string())
        ))
    })
}

/// Revokes a refresh token (RFC 7009 §2.1), authenticating as the client the way `client_auth`
/// says. A 200 is the answer for a token revoked or unknown alike (§2.2).
///
/// # Errors
/// `Unreachable`; `ClientRejected` as for `exchange_code`; `Refused` with the OAuth error code
/// (or the status) for any other answer that is not a 2xx.
pub async fn revoke(
    http: &reqwest::Client,
    provider: &ProviderConfig,
    revocation_endpoint: ClientEndpoint<'_>,
    refresh_token: &str,
) -> Result<(), ProviderError> {
    let form = vec![
        ("token", refresh_token),
        ("token_type_hint", "refresh_token"),
    ];
    let (status, body) = client_post(http, provider, revocation_endpoint, form).await?;
    if status.is_success() {
        Ok(())
    } else if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        // The provider failing or throttling: it refused nothing (RFC 7009 §2.2.1's 503).
        Err(ProviderError::BadResponse(format!(
            "revocation endpoint answered {status}"
        )))
    } else {
        Err(refusal("revocation endpoint", status, &body))
    }
}

/// Fetches the userinfo claims with an access token (OIDC Core §5.3).
///
/// # Errors
/// `Unreachable`, `Refused` on a non-2xx answer, `BadResponse` when it is not a JSON object
/// (signed or encrypted userinfo responses are not supported).
pub async fn fetch_userinfo(
    http: &reqwest::Client,
    userinfo_endpoint: &str,
    access_token: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, ProviderError> {
    let response = http
        .get(userinfo_endpoint)
        .bearer_auth(access_token)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|error| ProviderError::Unreachable(error.to_string()))?;
    if !response.status().is_success() {
        return Err(ProviderError::Refused(format!(
            "userinfo answered {}",
            response.status()
        )));
    }
    let body = read_answer(response, "userinfo").await?;
    serde_json::from_slice(&body).map_err(|error| {
        ProviderError::BadResponse(format!(
            "userinfo: {}",
            crate::untrusted::bounded(&error.to_string())
        ))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::time::Duration;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// Serves one HTTP/1.1 answer whose body is `length` bytes, announced with `Content-Length`
    /// or sent chunked (then the size is known only by reading).
    async fn serve_once(length: usize, chunked: bool) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let head = if chunked {
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_owned()
            } else {
                format!("HTTP/1.1 200 OK\r\ncontent-length: {length}\r\n\r\n")
            };
            if socket.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let chunk = vec![b'x'; 64 * 1024];
            let mut left = length;
            while left > 0 {
                let part = &chunk[..left.min(chunk.len())];
                let written = if chunked {
                    let mut framed = format!("{:x}\r\n", part.len()).into_bytes();
                    framed.extend_from_slice(part);
                    framed.extend_from_slice(b"\r\n");
                    socket.write_all(&framed).await
                } else {
                    socket.write_all(part).await
                };
                if written.is_err() {
                    // The reader stopped at the cap and closed the connection.
                    return;
                }
                left -= part.len();
            }
            if chunked {
                let _ = socket.write_all(b"0\r\n\r\n").await;
            }
        });
        url
    }

    async fn read(length: usize, chunked: bool) -> Result<Vec<u8>, ProviderError> {
        let url = serve_once(length, chunked).await;
        let http = HttpClient::new(Duration::from_secs(10)).unwrap();
        let response = http.get().get(url).send().await.unwrap();
        read_answer(response, "test").await
    }

    /// A thread keeps its own client (and so its own pooled connections); another thread gets
    /// another.
    #[test]
    fn each_thread_calls_providers_through_its_own_client() {
        let http = HttpClient::new(Duration::from_secs(10)).unwrap();
        let here = std::ptr::from_ref(http.get()) as usize;
        assert_eq!(here, std::ptr::from_ref(http.get()) as usize);
        let there = std::thread::scope(|scope| {
            scope
                .spawn(|| std::ptr::from_ref(http.get()) as usize)
                .join()
                .unwrap()
        });
        assert_ne!(here, there);
    }

    #[tokio::test]
    async fn answers_are_read_up_to_one_mib_whether_announced_or_chunked() {
        for chunked in [false, true] {
            let body = read(MAX_ANSWER_BYTES, chunked).await.unwrap();
            assert_eq!(body.len(), MAX_ANSWER_BYTES, "chunked: {chunked}");
            for length in [MAX_ANSWER_BYTES + 1, 8 * MAX_ANSWER_BYTES] {
                match read(length, chunked).await {
                    Err(ProviderError::BadResponse(message)) => {
                        assert!(message.contains("larger than"), "{message}");
                    }
                    other => panic!(
                        "chunked: {chunked}, {length} bytes: {:?}",
                        other.map(|body| body.len())
                    ),
                }
            }
        }
    }

    #[test]
    fn only_a_refusal_of_the_client_itself_is_client_rejected() {
        use reqwest::StatusCode;
        let rejected = |status: StatusCode, body: &str| {
            matches!(
                refusal("token endpoint", status, body.as_bytes()),
                ProviderError::ClientRejected(_)
            )
        };
        assert!(rejected(
            StatusCode::UNAUTHORIZED,
            r#"{"error":"invalid_client"}"#
        ));
        assert!(rejected(
            StatusCode::BAD_REQUEST,
            r#"{"error":"invalid_client"}"#
        ));
        assert!(rejected(StatusCode::UNAUTHORIZED, ""));
        assert!(rejected(StatusCode::UNAUTHORIZED, "<html>no</html>"));
        // The user's grant refused, even with a 401: a refusal of the request, not the client.
        assert!(!rejected(
            StatusCode::UNAUTHORIZED,
            r#"{"error":"invalid_grant"}"#
        ));
        assert!(!rejected(
            StatusCode::BAD_REQUEST,
            r#"{"error":"invalid_grant"}"#
        ));
        assert!(!rejected(StatusCode::FORBIDDEN, ""));
        assert!(!rejected(
            StatusCode::TOO_MANY_REQUESTS,
            r#"{"error":"invalid_client"}"#
        ));
        assert!(!rejected(
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"error":"invalid_client"}"#
        ));
        match refusal(
            "token endpoint",
            StatusCode::BAD_REQUEST,
            br#"{"error":"invalid_grant"}"#,
        ) {
            ProviderError::Refused(code) => assert_eq!(code, "invalid_grant"),
            other => panic!("{other:?}"),
        }
    }
}
