//! SPEC §2 config reload: a new config goes live for the next request, also on kept-alive
//! connections; requests in flight finish on the config they started with; memory sessions
//! survive; the files the config names are read again; an invalid config is refused and the
//! live one keeps answering; `tollgate serve` does it on SIGHUP.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;
use tollgate::app::ReloadError;

use crate::support::gateway::{SESSION_SECRET, signed_in};
use crate::support::{Browser, Gateway, TestIdp, TestUpstream, scratch_dir};

mod sighup;
mod telemetry;

/// One HTTP/1.1 connection kept open for every request sent on it.
struct KeptAlive {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Empty<axum::body::Bytes>>,
}

impl KeptAlive {
    async fn open(address: SocketAddr) -> Self {
        let stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        Self { sender }
    }

    /// Sends `GET path` and reads the whole answer; a closed connection fails the test.
    async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let mut request = hyper::Request::get(path).header("host", "127.0.0.1");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.sender
            .ready()
            .await
            .expect("the connection stays open");
        let response = self
            .sender
            .send_request(request.body(http_body_util::Empty::new()).unwrap())
            .await
            .expect("an answer on the kept-alive connection");
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

/// Forward-auth with memory sessions and, when `route` names a path prefix, a route there to
/// `upstream` (anonymous requests pass; the path reaches the upstream whole). `extra_server`
/// goes into `[server]`.
fn config(
    idp: &TestIdp,
    upstream: &TestUpstream,
    route: Option<&str>,
    extra_server: &str,
) -> String {
    let mut text = Gateway::forward_auth_config(idp, extra_server, "")
        .replace("[session]\n", "[session]\nstore = \"memory\"\n");
    if let Some(prefix) = route {
        text.push_str(&format!(
            "\n[[route]]\npath_prefix = \"{prefix}\"\nupstream = \"{}\"\nprovider = \"corp\"\non_unauthenticated = \"pass\"\n",
            upstream.url()
        ));
    }
    text
}

fn load(text: &str) -> tollgate::config::Config {
    tollgate::config::load(text, &BTreeMap::new())
        .unwrap_or_else(|problems| panic!("config: {problems:?}"))
}

use crate::support::sha256_hex as sha256;

fn cookie_header(browser: &Browser) -> String {
    browser
        .cookies
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A reload that points a provider's name at another issuer (a move to another identity
/// provider or tenant) leaves the sessions made at the old one to no provider: they are not
/// accepted, refreshed at the new one, or sent to it at sign-out (their refresh tokens are not
/// posted to its revocation endpoint).
#[tokio::test]
async fn a_session_made_before_its_providers_issuer_changed_is_no_ones() {
    let (old, new) = (TestIdp::start().await, TestIdp::start().await);
    let upstream = TestUpstream::start().await;
    let clock = tollgate::clock::ManualClock::new();
    let gateway =
        Gateway::start_with_clock(&config(&old, &upstream, None, ""), clock.clone()).await;
    let mut browser = Browser::new();
    signed_in(&mut browser, &gateway).await;
    assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 200);
    gateway
        .app
        .reload(load(&config(&new, &upstream, None, "")))
        .await
        .unwrap();
    // Also once its access token is due for a refresh.
    for advance in [0, 3600] {
        clock.advance(advance);
        old.advance_clock(advance);
        new.advance_clock(advance);
        assert_eq!(
            browser.get(&gateway.url("/auth")).await.status(),
            401,
            "advanced {advance} s"
        );
    }
    assert_eq!(
        new.count("refresh"),
        0,
        "no refresh token posted to the new issuer"
    );
    let signed_out = browser.get(&gateway.url("/signout")).await;
    assert_eq!(signed_out.status(), 302);
    assert_eq!(
        signed_out.headers()["location"],
        "/",
        "signed out here only, not sent to the new issuer"
    );
    // Signed in at the new issuer, the browser has a session again; its sign-out revokes that
    // session's refresh token, and never posted the old session's to the new issuer.
    let mut browser = Browser::new();
    signed_in(&mut browser, &gateway).await;
    assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 200);
    let (_, refresh_token) = new.last_tokens().unwrap();
    assert_eq!(browser.get(&gateway.url("/signout")).await.status(), 302);
    assert_eq!(new.revoked_tokens(), [refresh_token]);
    assert_eq!(old.count("revoke"), 0);
    signed_in(&mut browser, &gateway).await;
    assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 200);
    // The same issuer, another client: the session's audience is the old client's.
    let other_client = config(&new, &upstream, None, "")
        .replace("client_id = \"tollgate\"", "client_id = \"another-client\"");
    assert!(other_client.contains("another-client"));
    gateway.app.reload(load(&other_client)).await.unwrap();
    assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 401);
}

#[tokio::test]
async fn a_reloaded_route_answers_the_next_request_on_a_kept_alive_connection() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let before = config(&idp, &upstream, None, "");
    let gateway = Gateway::start(&before).await;
    let mut connection = KeptAlive::open(gateway.app.public_addr).await;
    assert_eq!(
        connection.get("/app/hello", &[]).await.0,
        404,
        "no route yet"
    );

    let after = config(&idp, &upstream, Some("/app"), "");
    gateway.app.reload(load(&after)).await.unwrap();
    let (status, body) = connection.get("/app/hello", &[]).await;
    assert_eq!(
        status, 200,
        "the same connection sees the new route: {body}"
    );
    assert!(body.contains("\"uri\":\"/app/hello\""), "{body}");

    let metrics = gateway.metrics().await;
    assert!(
        metrics.contains("tollgate_config_reloads_total{result=\"ok\"} 2"),
        "the start and the reload: {metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "tollgate_config_info{{sha256=\"{}\"}} 1",
            sha256(&after)
        )),
        "{metrics}"
    );
    assert!(
        !metrics.contains(&sha256(&before)),
        "only the live config is named"
    );
    assert!(metrics.contains("tollgate_config_last_reload_success_timestamp_seconds "));
}

/// An upstream whose `/held` answers only when released, and says when a request arrived.
struct HeldUpstream {
    addr: SocketAddr,
    arrived: Arc<tokio::sync::Notify>,
    release: Arc<tokio::sync::Notify>,
}

impl HeldUpstream {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let arrived = Arc::new(tokio::sync::Notify::new());
        let release = Arc::new(tokio::sync::Notify::new());
        let router = axum::Router::new().route(
            "/held",
            axum::routing::get({
                let (arrived, release) = (arrived.clone(), release.clone());
                move || async move {
                    arrived.notify_one();
                    release.notified().await;
                    "released"
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self {
            addr,
            arrived,
            release,
        }
    }
}

#[tokio::test]
async fn a_request_in_flight_finishes_on_the_config_it_started_with() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let held = HeldUpstream::start().await;
    let with_held = config(&idp, &upstream, None, "").replace(
        "[forward_auth]",
        &format!(
            "[[route]]\npath_prefix = \"/held\"\nupstream = \"http://{}\"\nprovider = \"corp\"\non_unauthenticated = \"pass\"\n\n[forward_auth]",
            held.addr
        ),
    );
    let gateway = Gateway::start(&with_held).await;
    let mut in_flight = KeptAlive::open(gateway.app.public_addr).await;
    let answer = tokio::spawn(async move { in_flight.get("/held", &[]).await });
    held.arrived.notified().await;
    gateway
        .app
        .reload(load(&config(&idp, &upstream, None, "")))
        .await
        .unwrap();
    let mut connection = KeptAlive::open(gateway.app.public_addr).await;
    assert_eq!(
        connection.get("/held", &[]).await.0,
        404,
        "the route is gone"
    );
    held.release.notify_one();
    assert_eq!(
        answer.await.unwrap(),
        (200, "released".to_owned()),
        "the request that started before the reload is answered through its route"
    );
}

/// A domain a reload takes out of `allowed_redirect_domains` is no login's destination from
/// then on, also for a login begun before the reload.
#[tokio::test]
async fn a_login_begun_before_a_reload_returns_only_where_the_live_config_allows() {
    use crate::support::browser::location;
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let allowing = "allowed_redirect_domains = [\".old.example\"]\n";
    let gateway = Gateway::start(&config(&idp, &upstream, None, allowing)).await;
    let mut browser = Browser::new();
    let signin = browser
        .get(&gateway.url("/signin?rd=https://x.old.example/page"))
        .await;
    assert_eq!(signin.status(), 302);
    let at_provider = browser.get(&location(&signin)).await;
    assert_eq!(at_provider.status(), 302);
    gateway
        .app
        .reload(load(&config(&idp, &upstream, None, "")))
        .await
        .unwrap();
    let signed_in = browser.get(&location(&at_provider)).await;
    assert_eq!(signed_in.status(), 302);
    assert_eq!(signed_in.headers()["location"], "/", "not x.old.example");
    assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 200);
}

#[tokio::test]
async fn memory_sessions_survive_a_reload() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let gateway = Gateway::start(&config(&idp, &upstream, None, "")).await;
    let mut browser = Browser::new();
    signed_in(&mut browser, &gateway).await;
    assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 200);

    gateway
        .app
        .reload(load(&config(&idp, &upstream, Some("/app"), "")))
        .await
        .unwrap();
    assert_eq!(
        browser.get(&gateway.url("/auth")).await.status(),
        200,
        "the session is still in the store"
    );
    assert_eq!(
        gateway.app.state().memory_store().map(|store| store.len()),
        Some(1)
    );
}

#[tokio::test]
async fn a_config_that_needs_a_restart_or_has_a_bad_jwks_file_is_refused_and_the_live_one_stays() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let dir = scratch_dir("reload-refused");
    let jwks_file = dir.join("jwks.json");
    let jwks = reqwest::get(format!("{}/jwks", idp.issuer()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    std::fs::write(&jwks_file, &jwks).unwrap();
    let with_file = |text: String| {
        text.replace(
            "jwks_refetch_interval = \"1h\"",
            &format!(
                "jwks_refetch_interval = \"1h\"\njwks_file = \"{}\"",
                jwks_file.display()
            ),
        )
    };
    let live = with_file(config(&idp, &upstream, Some("/app"), ""));
    let gateway = Gateway::start(&live).await;
    let token = idp.access_token().sign();
    let bearer = format!("Bearer {token}");
    let mut connection = KeptAlive::open(gateway.app.public_addr).await;
    assert_eq!(
        connection
            .get("/auth", &[("authorization", &bearer)])
            .await
            .0,
        200
    );

    // Listeners are bound once.
    let moved = live.replace(
        "listen = \"127.0.0.1:0\"\nadmin_listen",
        "listen = \"127.0.0.1:1\"\nadmin_listen",
    );
    match gateway.app.reload(load(&moved)).await {
        Err(ReloadError::Refused(problems)) => {
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert_eq!(problems[0].path, "server.listen");
        }
        other => panic!("refused expected: {other:?}"),
    }

    // A JWKS file with no usable key by the time the reload reads it (`check` names one
    // that has none when the config is read).
    let without_route = load(&with_file(config(&idp, &upstream, None, "")));
    std::fs::write(&jwks_file, "{\"keys\": []}").unwrap();
    match gateway.app.reload(without_route).await {
        Err(ReloadError::Refused(problems)) => {
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert_eq!(problems[0].path, "provider[0].jwks_file");
        }
        other => panic!("refused expected: {other:?}"),
    }

    // Problems found before a reload (what `serve` does with a file that does not load).
    gateway.app.refuse(vec![tollgate::config::ConfigProblem {
        path: "tollgate.toml".to_owned(),
        message: "cannot read: gone".to_owned(),
    }]);

    assert_eq!(
        connection.get("/app/still", &[]).await.0,
        200,
        "the live config's route still answers"
    );
    assert_eq!(
        connection
            .get("/auth", &[("authorization", &bearer)])
            .await
            .0,
        200,
        "and its keys"
    );
    let metrics = gateway.metrics().await;
    assert!(
        metrics.contains("tollgate_config_reloads_total{result=\"error\"} 3"),
        "{metrics}"
    );
    assert!(metrics.contains("tollgate_config_reloads_total{result=\"ok\"} 1"));
    assert!(metrics.contains(&format!(
        "tollgate_config_info{{sha256=\"{}\"}} 1",
        sha256(&live)
    )));
}

#[tokio::test]
async fn a_reload_reads_the_jwks_session_secret_and_client_secret_files_again() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let dir = scratch_dir("reload-files");
    let jwks_file = dir.join("jwks.json");
    let secrets_file = dir.join("session-secrets");
    let client_secret_file = dir.join("client-secret");
    let jwks_of = |idp: &TestIdp| {
        let url = format!("{}/jwks", idp.issuer());
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    };
    std::fs::write(&jwks_file, jwks_of(&idp).await).unwrap();
    std::fs::write(&secrets_file, format!("{SESSION_SECRET}\n")).unwrap();
    std::fs::write(&client_secret_file, "not-the-client-secret\n").unwrap();
    let text = config(&idp, &upstream, None, "")
        .replace(
            "jwks_refetch_interval = \"1h\"",
            &format!(
                "jwks_refetch_interval = \"1h\"\njwks_file = \"{}\"",
                jwks_file.display()
            ),
        )
        .replace(
            &format!("secrets = [\"{SESSION_SECRET}\"]"),
            &format!("secrets_file = \"{}\"", secrets_file.display()),
        )
        .replace(
            &format!("client_secret = \"{}\"", crate::support::idp::CLIENT_SECRET),
            &format!("client_secret_file = \"{}\"", client_secret_file.display()),
        );
    let gateway = Gateway::start(&text).await;

    // The client secret in the file is wrong: the code exchange fails.
    let mut browser = Browser::new();
    let callback = crate::support::gateway::sign_in(&mut browser, &gateway, "/").await;
    assert_ne!(
        callback.status(),
        302,
        "no login with the wrong client secret"
    );

    // Keys rotate at the provider; the file still holds the old ones (and the one re-read a
    // token with an unknown `kid` allows per hour is spent on it).
    let old_token = idp.access_token().sign();
    idp.rotate_keys("rotated");
    let new_token = idp.access_token().sign();
    let auth = |token: &str| {
        let request = reqwest::Client::new()
            .get(gateway.url("/auth"))
            .bearer_auth(token);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(auth(&old_token).await, 200);
    assert_eq!(auth(&new_token).await, 401);
    std::fs::write(&jwks_file, jwks_of(&idp).await).unwrap();
    assert_eq!(auth(&new_token).await, 401, "not re-read before the reload");

    // A session sealed with the first secret.
    std::fs::write(
        &client_secret_file,
        format!("{}\n", crate::support::idp::CLIENT_SECRET),
    )
    .unwrap();
    gateway.app.reload(load(&text)).await.unwrap();
    assert_eq!(auth(&new_token).await, 200, "the new keys are read");
    assert_eq!(auth(&old_token).await, 401, "the old ones are gone");
    let mut browser = Browser::new();
    signed_in(&mut browser, &gateway).await;
    assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 200);

    // The session secrets rotate to one the session was not sealed with.
    std::fs::write(
        &secrets_file,
        "a-brand-new-session-secret-of-enough-length\n",
    )
    .unwrap();
    gateway.app.reload(load(&text)).await.unwrap();
    assert_eq!(
        browser.get(&gateway.url("/auth")).await.status(),
        401,
        "a cookie sealed with a secret no longer listed does not open"
    );
    let mut fresh = Browser::new();
    signed_in(&mut fresh, &gateway).await;
    assert_eq!(fresh.get(&gateway.url("/auth")).await.status(), 200);
}

/// What one request of the load expects.
#[derive(Clone, Copy)]
enum Ask {
    Bearer,
    Session,
    Anonymous,
    Route,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_kept_alive_connections_are_all_answered_across_twenty_reloads() {
    const TASKS: usize = 4;
    const RELOADS: usize = 20;
    const REQUESTS_BETWEEN_RELOADS: u64 = 12;
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    // Two configs that answer these requests alike and differ elsewhere (so each reload
    // builds a new state: providers, session store front, routes).
    let variants = [
        config(&idp, &upstream, Some("/app"), ""),
        config(&idp, &upstream, Some("/app"), "leeway = \"30s\""),
    ];
    let gateway = Arc::new(Gateway::start(&variants[0]).await);
    let mut browser = Browser::new();
    signed_in(&mut browser, &gateway).await;
    let cookie = cookie_header(&browser);
    let bearer = format!("Bearer {}", idp.access_token().expires_in(3600).sign());

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    for task in 0..TASKS {
        let (stop, answered) = (stop.clone(), answered.clone());
        let (cookie, bearer) = (cookie.clone(), bearer.clone());
        let address = gateway.app.public_addr;
        senders.push(tokio::spawn(async move {
            let mut connection = KeptAlive::open(address).await;
            let asks = [Ask::Bearer, Ask::Session, Ask::Anonymous, Ask::Route];
            let mut wrong = Vec::new();
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let ask = asks[(task + sent as usize) % asks.len()];
                let (status, body) = match ask {
                    Ask::Bearer => connection.get("/auth", &[("authorization", &bearer)]).await,
                    Ask::Session => connection.get("/auth", &[("cookie", &cookie)]).await,
                    Ask::Anonymous => connection.get("/auth", &[]).await,
                    Ask::Route => connection.get("/app/echo", &[]).await,
                };
                let right = match ask {
                    Ask::Bearer | Ask::Session => status == 200,
                    Ask::Anonymous => status == 401,
                    Ask::Route => status == 200 && body.contains("\"uri\":\"/app/echo\""),
                };
                if !right {
                    wrong.push((status, body));
                }
                sent += 1;
                answered.fetch_add(1, Ordering::Relaxed);
            }
            (sent, wrong)
        }));
    }
    for reload in 0..RELOADS {
        // Requests keep arriving between reloads: wait for a number of answers, not a time.
        let mark = answered.load(Ordering::Relaxed);
        while answered.load(Ordering::Relaxed) < mark + REQUESTS_BETWEEN_RELOADS {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let text = &variants[(reload + 1) % 2];
        gateway.app.reload(load(text)).await.unwrap();
    }
    let mark = answered.load(Ordering::Relaxed);
    while answered.load(Ordering::Relaxed) < mark + REQUESTS_BETWEEN_RELOADS {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for task in senders {
        let (sent, wrong) = task.await.unwrap();
        assert!(wrong.is_empty(), "wrong answers: {wrong:?}");
        total += sent;
    }
    assert_eq!(total, answered.load(Ordering::Relaxed));
    assert!(total >= REQUESTS_BETWEEN_RELOADS * (RELOADS as u64 + 1));
    let metrics = gateway.metrics().await;
    assert!(
        metrics.contains(&format!(
            "tollgate_config_reloads_total{{result=\"ok\"}} {}",
            RELOADS + 1
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_token_service_keeps_its_generated_key_and_its_revocations_across_a_reload() {
    use crate::token_service::{config as service_config, token_request};
    let (gateway, issuer) = Gateway::start_at_issuer(|issuer| service_config(issuer, "", "")).await;
    let issue = || async {
        let (status, body) = token_request(
            &gateway,
            &[("grant_type", "client_credentials"), ("scope", "scim")],
            Some(("machine", "machine-secret")),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    };
    let validate = |token: String| {
        let request = reqwest::Client::new()
            .get(gateway.url("/validate"))
            .bearer_auth(token);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let kept = issue().await;
    let revoked = issue().await;
    let revocation = reqwest::Client::new()
        .post(gateway.url("/revoke"))
        .basic_auth("machine", Some("machine-secret"))
        .form(&[("token", revoked.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(revocation.status(), 200);
    assert_eq!(validate(revoked.clone()).await, 401);

    // No signing_key_file: the key lives only in this process.
    gateway
        .app
        .reload(load(&service_config(
            &issuer,
            "",
            "token_lifetime = \"10m\"",
        )))
        .await
        .unwrap();
    assert_eq!(validate(kept).await, 200, "signed with the same key");
    assert_eq!(validate(revoked).await, 401, "still revoked");
    assert_eq!(validate(issue().await).await, 200);
}

#[tokio::test]
async fn a_reload_while_the_provider_is_unreachable_keeps_its_discovery_and_keys() {
    let idp = TestIdp::start().await;
    // A provider timeout far longer than the test waits for an answer: a request that waited
    // on a fetch after the reload would show as a hang.
    let text = Gateway::forward_auth_config(&idp, "", "").replace(
        "jwks_refetch_interval",
        "timeout = \"60s\"\njwks_refetch_interval",
    );
    let gateway = Gateway::start(&text).await;
    let bearer = |token: String| {
        let url = gateway.url("/auth");
        async move {
            let sent = reqwest::Client::new().get(url).bearer_auth(token).send();
            tokio::time::timeout(std::time::Duration::from_secs(20), sent)
                .await
                .expect("answered with what was fetched before, not after a fetch")
                .unwrap()
                .status()
        }
    };
    assert_eq!(bearer(idp.access_token().sign()).await, 200);
    let (discoveries, fetches) = (idp.count("discovery"), idp.count("jwks"));

    idp.misbehave(crate::support::idp::Misbehaviour {
        discovery_hangs: true,
        jwks_fault: crate::support::idp::JwksFault::Hangs,
        ..Default::default()
    });
    gateway.app.reload(load(&text)).await.unwrap();
    // The reload fetches both again, in the background, and both hang.
    crate::support::redis::wait_until(
        || idp.count("discovery") > discoveries && idp.count("jwks") > fetches,
        "the reload's fetches of discovery and keys",
    )
    .await;
    // Another token: the new state's token cache is empty, so this one is checked with the keys.
    let other = idp
        .access_token()
        .claim("sub", serde_json::json!("after-reload"))
        .sign();
    assert_eq!(
        bearer(other).await,
        200,
        "a token signed with the keys fetched before the reload is still accepted"
    );
    assert_eq!(
        reqwest::get(gateway.admin_url("/readyz"))
            .await
            .unwrap()
            .status(),
        200,
        "the provider counts as discovered after the reload"
    );
}

#[tokio::test]
async fn the_active_sessions_gauge_follows_a_reload_away_from_the_memory_store() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let gateway = Gateway::start(&config(&idp, &upstream, None, "")).await;
    let mut browser = Browser::new();
    signed_in(&mut browser, &gateway).await;
    let active = || async {
        let metrics = reqwest::get(gateway.admin_url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metrics
            .lines()
            .find_map(|line| line.strip_prefix("tollgate_sessions_active "))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no tollgate_sessions_active in {metrics}"))
    };
    assert_eq!(active().await, "1");
    // The cookie store counts no sessions: the gauge must not keep the memory store's count.
    gateway
        .app
        .reload(load(&Gateway::forward_auth_config(&idp, "", "")))
        .await
        .unwrap();
    assert_eq!(active().await, "0");
}
