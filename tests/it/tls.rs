//! SPEC §3: https on the public listener (`tls_cert_file` / `tls_key_file`, HTTP/2 by ALPN,
//! the certificate re-read on SIGHUP) and https upstreams (system roots or `upstream_ca_file`,
//! SNI from the upstream's host, HTTP/2 when the upstream offers it). Certificates come from a
//! CA each test makes; the upstream is nginx.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::Gateway;
use crate::support::nginx::{self, Nginx, free_port};
use crate::support::test_ca::{Issued, TestCa};
use crate::support::tls_upstream::TlsUpstream;

/// A gateway config with a provider nobody asks (discovery fails, and is not needed),
/// `server_extra` in `[server]`, then `rest`.
fn config(server_extra: &str, rest: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{server_extra}\n\
         [session]\nsecrets = [\"{}\"]\n\
         [[provider]]\nname = \"corp\"\nissuer = \"http://127.0.0.1:9\"\nclient_id = \"x\"\nclient_auth = \"none\"\n\
         {rest}\n",
        crate::support::gateway::SESSION_SECRET
    )
}

fn listener_tls(issued: &Issued) -> String {
    format!(
        "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
        issued.cert.display(),
        issued.key.display()
    )
}

/// A client that trusts only `ca` and reaches `localhost` at `address`.
fn client_trusting(ca: &TestCa, address: SocketAddr) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca.cert_pem()).unwrap()])
        .tls_info(true)
        .resolve("localhost", address)
}

/// The leaf certificate the server presents to a new client (no connection or TLS session to
/// resume) asking for `/ping`.
async fn served_certificate(ca: &TestCa, address: SocketAddr) -> Vec<u8> {
    let client = client_trusting(ca, address).build().unwrap();
    let response = client
        .get(format!("https://localhost:{}/ping", address.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("a TLS connection")
        .to_vec()
}

#[tokio::test]
async fn the_listener_serves_https_with_http2_and_http1_by_alpn() {
    let ca = TestCa::new("listener");
    let issued = ca.issue("server");
    let gateway = Gateway::start(&config(&listener_tls(&issued), "")).await;
    let address = gateway.app.public_addr;
    let port = address.port();

    let client = client_trusting(&ca, address).build().unwrap();
    assert_eq!(served_certificate(&ca, address).await, issued.leaf_der());
    let h2 = client
        .get(format!("https://localhost:{port}/ping"))
        .send()
        .await
        .unwrap();
    assert_eq!(h2.version(), reqwest::Version::HTTP_2);
    // Not for a loopback name, whose other plain-http servers HSTS would pin for every port.
    assert!(!h2.headers().contains_key("strict-transport-security"));
    assert_eq!(h2.text().await.unwrap(), "OK");

    let http1 = client_trusting(&ca, address).http1_only().build().unwrap();
    let response = http1
        .get(format!("https://localhost:{port}/ping"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    assert_eq!(response.text().await.unwrap(), "OK");
    // A site's name: the host's only listener is TLS, so the browser is told to stay on
    // https, and a plain-http request for it (a network attacker's answer) is never made.
    let named = http1
        .get(format!("https://localhost:{port}/ping"))
        .header("host", "auth.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        named.headers()["strict-transport-security"],
        "max-age=31536000"
    );

    // Plain http on the TLS port gets no answer.
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/ping")).await;
    assert!(plain.is_err(), "plain http answered: {plain:?}");
    gateway.stop().await;
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_is_refused() {
    let ca = TestCa::new("trusted");
    let other = TestCa::new("other");
    let gateway = Gateway::start(&config(&listener_tls(&ca.issue("server")), "")).await;
    let address = gateway.app.public_addr;
    let url = format!("https://localhost:{}/ping", address.port());

    // The system's roots do not hold the test CA; nor does a client trusting another CA.
    let system = reqwest::Client::builder()
        .resolve("localhost", address)
        .build()
        .unwrap();
    let error = system.get(&url).send().await.unwrap_err();
    assert!(error.is_connect(), "{error:?}");
    let wrong = client_trusting(&other, address).build().unwrap();
    assert!(wrong.get(&url).send().await.unwrap_err().is_connect());
    // The listener still serves a client that trusts it.
    let right = client_trusting(&ca, address).build().unwrap();
    assert_eq!(right.get(&url).send().await.unwrap().status(), 200);
    gateway.stop().await;
}

fn replace(issued: &Issued, with: &Issued) {
    std::fs::copy(&with.cert, &issued.cert).unwrap();
    std::fs::copy(&with.key, &issued.key).unwrap();
}

#[tokio::test]
async fn a_reload_serves_the_new_certificate_and_a_bad_one_keeps_the_old() {
    let ca = TestCa::new("reload");
    let (first, second, third) = (ca.issue("first"), ca.issue("second"), ca.issue("third"));
    // The files the config names; rewritten in place as a rotated Kubernetes Secret is.
    let served = Issued {
        cert: ca.path("served.pem"),
        key: ca.path("served.key"),
    };
    replace(&served, &first);
    let text = config(&listener_tls(&served), "");
    let gateway = Gateway::start(&text).await;
    let address = gateway.app.public_addr;
    assert_eq!(served_certificate(&ca, address).await, first.leaf_der());
    // What SIGHUP does: the file loaded again, then made live.
    let reload = || async {
        let loaded = tollgate::config::load(&text, &std::collections::BTreeMap::new());
        match loaded {
            Ok(config) => gateway.app.reload(config).await.is_ok(),
            Err(problems) => {
                gateway.app.refuse(problems);
                false
            }
        }
    };

    replace(&served, &second);
    assert!(reload().await);
    assert_eq!(served_certificate(&ca, address).await, second.leaf_der());

    // A certificate file that is no certificate: the second stays.
    std::fs::write(&served.cert, "not a certificate\n").unwrap();
    assert!(!reload().await);
    assert_eq!(served_certificate(&ca, address).await, second.leaf_der());
    // The third's certificate with the second's key: they do not belong together.
    std::fs::copy(&third.cert, &served.cert).unwrap();
    assert!(!reload().await);
    // A key file that went missing.
    std::fs::copy(&second.cert, &served.cert).unwrap();
    std::fs::remove_file(&served.key).unwrap();
    assert!(!reload().await);
    assert_eq!(served_certificate(&ca, address).await, second.leaf_der());
    gateway.stop().await;
}

/// `tollgate serve` as its own process: `config_text` (its two `127.0.0.1:0` listeners given
/// free ports) written to `config_file`, `env` added. Answers once `client` gets an answer
/// from `/ping` at `scheme://localhost`; with the public port.
async fn serve(
    config_file: &Path,
    config_text: &str,
    env: &[(&str, &Path)],
    stderr: Stdio,
    (client, scheme): (&reqwest::Client, &str),
) -> (std::process::Child, u16) {
    let (public, admin) = (free_port(), free_port());
    std::fs::write(
        config_file,
        config_text
            .replacen("127.0.0.1:0\"", &format!("127.0.0.1:{public}\""), 1)
            .replacen("127.0.0.1:0\"", &format!("127.0.0.1:{admin}\""), 1),
    )
    .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    command
        .args(["serve", "--config"])
        .arg(config_file)
        .env_remove("TOLLGATE_LOG")
        .stdout(Stdio::null())
        .stderr(stderr);
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let ping = format!("{scheme}://localhost:{public}/ping");
    for _ in 0..400 {
        if client.get(&ping).send().await.is_ok() {
            return (child, public);
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("tollgate serve never answered at {ping}");
}

/// Empties the system's store `store`, sends SIGHUP to `child`, and returns its log `log` once
/// it says the reload was refused (as it must be: there are no roots left).
async fn empty_the_store_and_hang_up(
    store: &Path,
    child: &std::process::Child,
    log: &Path,
) -> String {
    std::fs::write(store, "").unwrap();
    hang_up(child);
    let mut waited = 0;
    loop {
        let text = std::fs::read_to_string(log).unwrap();
        if text.contains("configuration refused") {
            return text;
        }
        waited += 1;
        assert!(
            waited < 400,
            "a reload without roots was not refused: {text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// Sends SIGHUP to `child` with kill(1), as an operator does.
fn hang_up(child: &std::process::Child) {
    let killed = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
}

/// `tollgate serve` as its own process, SIGHUP sent with kill(1): the next connections see the
/// new certificate.
#[tokio::test]
async fn sighup_makes_the_running_binary_serve_the_new_certificate() {
    let ca = TestCa::new("sighup");
    let (first, second) = (ca.issue("first"), ca.issue("second"));
    let served = Issued {
        cert: ca.path("served.pem"),
        key: ca.path("served.key"),
    };
    replace(&served, &first);
    // The client resolves localhost to 127.0.0.1 whatever the port.
    let client = client_trusting(&ca, ([127, 0, 0, 1], 0).into())
        .build()
        .unwrap();
    let log = ca.path("tollgate.log");
    let (mut child, public) = serve(
        &ca.path("tollgate.toml"),
        &config(&listener_tls(&served), ""),
        &[],
        Stdio::from(std::fs::File::create(&log).unwrap()),
        (&client, "https"),
    )
    .await;
    let address: SocketAddr = ([127, 0, 0, 1], public).into();
    assert_eq!(served_certificate(&ca, address).await, first.leaf_der());

    replace(&served, &second);
    hang_up(&child);
    // The signal is handled soon, not at once: count the connections that still see the first.
    let mut old = 0;
    while served_certificate(&ca, address).await != second.leaf_der() {
        old += 1;
        assert!(old < 400, "SIGHUP never brought the new certificate");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    // A config the reload refuses (it moves a listener, which needs a restart) beside a new
    // certificate: neither goes live, the certificate stays the second.
    let third = ca.issue("third");
    replace(&served, &third);
    let config_file = ca.path("tollgate.toml");
    let written = std::fs::read_to_string(&config_file).unwrap();
    let moved = written.replacen(
        "admin_listen = \"127.0.0.1:",
        "admin_listen = \"127.0.0.2:",
        1,
    );
    assert_ne!(moved, written);
    std::fs::write(&config_file, moved).unwrap();
    hang_up(&child);
    let mut waited = 0;
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("configuration refused")
    {
        waited += 1;
        assert!(waited < 400, "the reload was never refused");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(
        served_certificate(&ca, address).await,
        second.leaf_der(),
        "a refused reload changed the certificate"
    );
    // Still running: SIGHUP reloads, it does not stop the process.
    assert!(child.try_wait().unwrap().is_none());
    child.kill().unwrap();
    child.wait().unwrap();
}

/// nginx serving `issued` on `port` with `http2` or not, answering what it saw.
fn nginx_tls_server(port: u16, issued: &Issued, http2: bool) -> String {
    format!(
        "server {{\n listen 127.0.0.1:{port} ssl{h2};\n ssl_certificate {cert};\n ssl_certificate_key {key};\n \
         location / {{ return 200 \"sni=$ssl_server_name protocol=$server_protocol host=$host uri=$request_uri xfp=$http_x_forwarded_proto conn=$connection\\n\"; }}\n}}\n",
        h2 = if http2 { " http2" } else { "" },
        cert = issued.cert.display(),
        key = issued.key.display(),
    )
}

fn route(prefix: &str, upstream: &str, ca_file: Option<&Path>) -> String {
    let ca = ca_file
        .map(|path| format!("upstream_ca_file = \"{}\"\n", path.display()))
        .unwrap_or_default();
    format!(
        "[[route]]\npath_prefix = \"{prefix}\"\nupstream = \"{upstream}\"\n{ca}provider = \"corp\"\non_unauthenticated = \"pass\"\n"
    )
}

#[tokio::test]
async fn https_upstreams_are_verified_with_sni_and_http2_by_alpn() {
    if !nginx::available() {
        return;
    }
    let ca = TestCa::new("upstream");
    let issued = ca.issue("nginx");
    let (h2_port, http1_port) = (free_port(), free_port());
    let _nginx = Nginx::start(
        &format!(
            "{}{}",
            nginx_tls_server(h2_port, &issued, true),
            nginx_tls_server(http1_port, &issued, false)
        ),
        &[h2_port, http1_port],
    )
    .await;
    let routes = format!(
        "{}{}",
        route(
            "/h2",
            &format!("https://localhost:{h2_port}/base"),
            Some(&ca.cert())
        ),
        route(
            "/http1",
            &format!("https://localhost:{http1_port}"),
            Some(&ca.cert())
        ),
    );
    let gateway = Gateway::start(&config("", &routes)).await;
    // One client connection, so one worker thread of Tollgate and its upstream connections.
    let client = reqwest::Client::new();
    let get = |path: &'static str| {
        let request = client
            .get(gateway.url(path))
            .header("Host", "app.example.com")
            .send();
        async move {
            let response = request.await.unwrap();
            assert_eq!(response.status(), 200);
            let text = response.text().await.unwrap();
            let (seen, connection) = text.trim_end().rsplit_once(" conn=").unwrap();
            (seen.to_owned(), connection.to_owned())
        }
    };
    let mut connections = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let (seen, connection) = get("/h2/x?y=1").await;
        assert_eq!(
            seen,
            "sni=localhost protocol=HTTP/2.0 host=app.example.com uri=/base/h2/x?y=1 xfp=http"
        );
        connections.0.push(connection);
        let (seen, connection) = get("/http1/z").await;
        assert_eq!(
            seen,
            "sni=localhost protocol=HTTP/1.1 host=app.example.com uri=/http1/z xfp=http"
        );
        connections.1.push(connection);
    }
    // The later requests went over the connection the first one opened.
    for used in [connections.0, connections.1] {
        assert!(
            used.iter().all(|connection| *connection == used[0]),
            "{used:?}"
        );
    }
    gateway.stop().await;
}

#[tokio::test]
async fn an_upstream_certificate_that_does_not_verify_is_a_502() {
    if !nginx::available() {
        return;
    }
    let ca = TestCa::new("upstream-ca");
    let other = TestCa::new("upstream-other");
    let issued = ca.issue("nginx");
    let port = free_port();
    let _nginx = Nginx::start(&nginx_tls_server(port, &issued, true), &[port]).await;
    let upstream = format!("https://localhost:{port}");
    let routes = format!(
        "{}{}",
        // Verified against the system roots, which do not hold the test CA.
        route("/system", &upstream, None),
        route("/other", &upstream, Some(&other.cert())),
    );
    let gateway = Gateway::start(&config("", &routes)).await;
    for path in ["/system", "/other"] {
        let response = reqwest::get(gateway.url(path)).await.unwrap();
        assert_eq!(response.status(), 502, "{path}");
    }
    gateway.stop().await;
}

/// https end to end: a client speaking HTTP/2 to the listener, the upstream HTTP/2 over TLS;
/// the upstream is told the client came with https.
#[tokio::test]
async fn https_from_the_client_to_the_upstream() {
    if !nginx::available() {
        return;
    }
    let ca = TestCa::new("end-to-end");
    let (listener, upstream) = (ca.issue("listener"), ca.issue("upstream"));
    let port = free_port();
    let _nginx = Nginx::start(&nginx_tls_server(port, &upstream, true), &[port]).await;
    let routes = route("/", &format!("https://localhost:{port}"), Some(&ca.cert()));
    let gateway = Gateway::start(&config(&listener_tls(&listener), &routes)).await;
    let address = gateway.app.public_addr;
    let client = client_trusting(&ca, address).build().unwrap();
    let response = client
        .get(format!("https://localhost:{}/app", address.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert_eq!(
        text.rsplit_once(" conn=").unwrap().0,
        "sni=localhost protocol=HTTP/2.0 host=localhost uri=/app xfp=https"
    );
    gateway.stop().await;
}

/// `tollgate serve` as its own process: a request to an upstream whose certificate does not
/// verify is answered 502, and the failure is one log line (the request's decision line) that
/// names the upstream and says why.
#[tokio::test]
async fn an_unverified_upstream_is_one_log_line() {
    if !nginx::available() {
        return;
    }
    let ca = TestCa::new("log-line");
    let other = TestCa::new("log-line-other");
    let upstream_port = free_port();
    let _nginx = Nginx::start(
        &nginx_tls_server(upstream_port, &ca.issue("nginx"), true),
        &[upstream_port],
    )
    .await;
    let routes = route(
        "/",
        &format!("https://localhost:{upstream_port}"),
        Some(&other.cert()),
    );
    let client = reqwest::Client::builder()
        .resolve("localhost", ([127, 0, 0, 1], 0).into())
        .build()
        .unwrap();
    let (child, public) = serve(
        &ca.path("tollgate.toml"),
        &config("log_format = \"json\"", &routes),
        &[],
        Stdio::piped(),
        (&client, "http"),
    )
    .await;
    let response = reqwest::get(format!("http://127.0.0.1:{public}/app"))
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let log = crate::support::stop_and_read_log(child);
    let about_the_upstream: Vec<&str> = log
        .lines()
        .filter(|line| line.contains(&upstream_port.to_string()) || line.contains("TLS"))
        .collect();
    assert_eq!(about_the_upstream.len(), 1, "{log}");
    let line = about_the_upstream[0];
    assert!(line.contains("\"level\":\"WARN\""), "{line}");
    assert!(line.contains("upstream_unavailable"), "{line}");
    assert!(line.contains("TLS handshake failed"), "{line}");
    assert!(line.contains("UnknownIssuer"), "{line}");
}

/// `support::tls_upstream` with a certificate of `ca`, and a gateway routing every path to it.
async fn behind_tls_upstream(ca: &TestCa) -> (TlsUpstream, Gateway) {
    let upstream = TlsUpstream::start(&ca.issue("upstream")).await;
    // The upstream's test protocol, which the route must list to have it passed on.
    let routes = format!(
        "{}upgrades = [\"echo\"]\n",
        route(
            "/",
            &format!("https://localhost:{}", upstream.port),
            Some(&ca.cert()),
        )
    );
    let gateway = Gateway::start(&config("", &routes)).await;
    (upstream, gateway)
}

/// A gateway routing every path to `upstream`, whose certificate `ca` issued, with the route's
/// `read_timeout`.
async fn behind_tls_upstream_reading(
    ca: &TestCa,
    upstream: &TlsUpstream,
    read_timeout: &str,
) -> Gateway {
    let routes = format!(
        "{}read_timeout = \"{read_timeout}\"\n",
        route(
            "/",
            &format!("https://localhost:{}", upstream.port),
            Some(&ca.cert())
        )
    );
    Gateway::start(&config("", &routes)).await
}

/// An upgrade (a protocol the route lists) to an https upstream that offers HTTP/2 goes over a connection that
/// offered only HTTP/1.1, and is spliced both ways; SNI is the upstream URL's host.
#[tokio::test]
async fn an_upgrade_to_an_https_upstream_is_spliced_over_http1() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let ca = TestCa::new("upgrade");
    let (upstream, gateway) = behind_tls_upstream(&ca).await;
    let address = gateway.app.public_addr;
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(
            format!("GET /ws HTTP/1.1\r\nHost: {address}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    stream.write_all(b"ping over TLS").await.unwrap();
    let mut reply = [0u8; 13];
    stream.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"ping over TLS");
    assert_eq!(
        *upstream.handshakes.lock().unwrap(),
        [(Some("localhost".to_owned()), Some("http/1.1".to_owned()))]
    );
    drop(stream);
    gateway.stop().await;
}

/// A client's request trailers never reach an HTTP/2 upstream (regression: they passed as sent,
/// so an `x-user` trailer arrived beside the identity headers Tollgate sets). The client speaks
/// HTTP/2 to the listener, which keeps the trailers as HTTP/2 sends them; the body goes whole.
#[tokio::test]
async fn request_trailers_never_reach_an_http2_upstream() {
    use http_body_util::BodyExt as _;
    let ca = TestCa::new("trailers");
    let (upstream, gateway) = behind_tls_upstream(&ca).await;
    let address = gateway.app.public_addr;
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let mut trailers = axum::http::HeaderMap::new();
    trailers.insert("x-user", "mallory".parse().unwrap());
    trailers.insert("x-checksum", "1".parse().unwrap());
    let body = http_body_util::Full::new(axum::body::Bytes::from_static(b"hello")).with_trailers(
        std::future::ready(Some(Ok::<_, std::convert::Infallible>(trailers))),
    );
    let request = hyper::Request::post(format!("http://{address}/upload"))
        .body(body)
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(text, "body=hello trailers=");
    assert_eq!(
        upstream.handshakes.lock().unwrap()[0].1.as_deref(),
        Some("h2")
    );
    gateway.stop().await;
}

/// Without `public_url`, a login started over the https listener comes back to it over https.
#[tokio::test]
async fn a_login_over_the_https_listener_returns_over_https() {
    let idp = crate::support::TestIdp::start().await;
    let ca = TestCa::new("login");
    let issued = ca.issue("server");
    let gateway = Gateway::start(&Gateway::forward_auth_config(
        &idp,
        &listener_tls(&issued),
        "",
    ))
    .await;
    let address = gateway.app.public_addr;
    let client = client_trusting(&ca, address)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let signin = client
        .get(format!("https://localhost:{}/signin?rd=/", address.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(signin.status(), 302);
    let location = crate::support::browser::location(&signin);
    let authorize = url::Url::parse(&location).unwrap();
    let redirect_uri = authorize
        .query_pairs()
        .find(|(name, _)| name == "redirect_uri")
        .map(|(_, value)| value.into_owned());
    assert_eq!(
        redirect_uri.as_deref(),
        Some(format!("https://localhost:{}/callback", address.port()).as_str())
    );
    gateway.stop().await;
}

/// An https upstream without `upstream_ca_file` is verified against the system's roots: here
/// the process is told (`SSL_CERT_FILE`, as OpenSSL reads it) that the test CA is the system's
/// only root, and the upstream then answers.
#[tokio::test]
async fn an_upstream_is_trusted_through_the_system_roots() {
    if !nginx::available() {
        return;
    }
    let ca = TestCa::new("system-roots");
    let upstream_port = free_port();
    let _nginx = Nginx::start(
        &nginx_tls_server(upstream_port, &ca.issue("nginx"), true),
        &[upstream_port],
    )
    .await;
    let routes = route("/", &format!("https://localhost:{upstream_port}"), None);
    let client = reqwest::Client::builder()
        .resolve("localhost", ([127, 0, 0, 1], 0).into())
        .build()
        .unwrap();
    let (mut child, public) = serve(
        &ca.path("tollgate.toml"),
        &config("", &routes),
        &[("SSL_CERT_FILE", &ca.cert())],
        Stdio::null(),
        (&client, "http"),
    )
    .await;
    let response = client
        .get(format!("http://localhost:{public}/app"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(
        text.starts_with("sni=localhost protocol=HTTP/2.0 host=localhost uri=/app"),
        "{text}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

/// SIGHUP reads the system's roots again: an upstream whose CA the system store (here
/// `SSL_CERT_FILE`) does not hold is a 502, still after the CA is added, until the reload. A
/// reload that finds no roots at all is refused, and the live config keeps its roots.
#[tokio::test]
async fn sighup_reads_the_system_roots_again() {
    if !nginx::available() {
        return;
    }
    let (before, after) = (TestCa::new("roots-before"), TestCa::new("roots-after"));
    let upstream_port = free_port();
    let _nginx = Nginx::start(
        &nginx_tls_server(upstream_port, &after.issue("nginx"), true),
        &[upstream_port],
    )
    .await;
    // The system's store is this file alone: `SSL_CERT_DIR` (set on some hosts) names an
    // empty directory.
    let store = before.path("system-roots.pem");
    std::fs::copy(before.cert(), &store).unwrap();
    let no_directory = before.path("no-roots");
    std::fs::create_dir(&no_directory).unwrap();
    let routes = route("/", &format!("https://localhost:{upstream_port}"), None);
    let client = reqwest::Client::builder()
        .resolve("localhost", ([127, 0, 0, 1], 0).into())
        .build()
        .unwrap();
    let log = before.path("stderr.log");
    let (mut child, public) = serve(
        &before.path("tollgate.toml"),
        &config("", &routes),
        &[("SSL_CERT_FILE", &store), ("SSL_CERT_DIR", &no_directory)],
        std::fs::File::create(&log).unwrap().into(),
        (&client, "http"),
    )
    .await;
    let app = format!("http://localhost:{public}/app");
    let status = || async { client.get(&app).send().await.unwrap().status().as_u16() };
    assert_eq!(
        status().await,
        502,
        "an upstream the roots do not vouch for"
    );
    std::fs::copy(after.cert(), &store).unwrap();
    assert_eq!(
        status().await,
        502,
        "the roots are read at start, not per request"
    );

    hang_up(&child);
    // The signal is handled soon, not at once: count the answers from before the reload.
    let mut refused = 0;
    while status().await == 502 {
        refused += 1;
        assert!(
            refused < 400,
            "SIGHUP never made the system's new root trusted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(status().await, 200);

    let text = empty_the_store_and_hang_up(&store, &child, &log).await;
    assert!(text.contains("no trusted roots"), "{text}");
    assert_eq!(
        status().await,
        200,
        "the live config keeps the roots it was built with"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Redis over TLS, trusted through the system's roots: every Redis link of a config trusts
/// the roots it was built with — the link Tollgate connects itself and those the redis crate
/// connects (here the confirmed delete of a logout). With the store emptied and the SIGHUP
/// that found it so refused, Redis drops every client: the links connect again, still verify
/// Redis, and the logout is confirmed. Before, the crate's links read the store at each
/// connect and found nothing to trust.
#[tokio::test]
async fn redis_links_keep_the_roots_of_their_config_after_the_store_is_emptied() {
    use crate::support::redis::{RedisServer, available};
    if !available() {
        return;
    }
    let password = "redis-roots-password";
    let (redis, ca) = RedisServer::tls_with_password(password).await;
    let url = format!("rediss://:{password}@127.0.0.1:{}", redis.port);
    redis_links_keep_their_roots(&url, &ca, &[&redis]).await;
}

/// The same through a Sentinel over TLS: the crate connects the sentinels and, to ask it its
/// role, the master they name, for both links, at every reconnect.
#[tokio::test]
async fn sentinel_links_keep_the_roots_of_their_config_after_the_store_is_emptied() {
    use crate::support::redis::{RedisSentinel, available};
    if !available() {
        return;
    }
    let password = "sentinel-roots-password";
    let (set, ca) = RedisSentinel::tls_with_password(password).await;
    let url = format!(
        "rediss+sentinel://:{password}@127.0.0.1:{}/mymaster",
        set.sentinel.port
    );
    redis_links_keep_their_roots(&url, &ca, &[&set.master, &set.sentinel]).await;
}

/// Signs in through a `tollgate serve` whose sessions are at `redis_url`, trusted through a
/// system store holding `ca` alone; empties the store and sends SIGHUP (refused); has each of
/// `servers` drop every client; then the session still answers and the logout is confirmed.
async fn redis_links_keep_their_roots(
    redis_url: &str,
    ca: &Path,
    servers: &[&crate::support::redis::RedisServer],
) {
    let idp = crate::support::TestIdp::start().await;
    let dir = crate::support::scratch_dir("redis-roots");
    let store = dir.join("system-roots.pem");
    std::fs::copy(ca, &store).unwrap();
    let no_directory = dir.join("no-roots");
    std::fs::create_dir(&no_directory).unwrap();
    let config = Gateway::forward_auth_config(&idp, "", "").replace(
        "[session]\n",
        &format!("[session]\nstore = \"redis\"\nredis_url = \"{redis_url}\"\n"),
    );
    let client = reqwest::Client::builder()
        .resolve("localhost", ([127, 0, 0, 1], 0).into())
        .build()
        .unwrap();
    let log = dir.join("stderr.log");
    let (mut child, public) = serve(
        &dir.join("tollgate.toml"),
        &config,
        &[("SSL_CERT_FILE", &store), ("SSL_CERT_DIR", &no_directory)],
        std::fs::File::create(&log).unwrap().into(),
        (&client, "http"),
    )
    .await;
    let base = format!("http://127.0.0.1:{public}");
    let mut browser = crate::support::Browser::new();
    let callback = crate::support::gateway::sign_in_at(&mut browser, &base, "/").await;
    assert_eq!(callback.status(), 302, "signed in over {redis_url}");
    assert_eq!(browser.get(&format!("{base}/auth")).await.status(), 200);

    let text = empty_the_store_and_hang_up(&store, &child, &log).await;
    // The providers' client is built first and is the one to find no roots.
    assert!(
        text.contains("No CA certificates were loaded from the system"),
        "{text}"
    );

    // Every link connects again, on the roots its config was built with.
    for server in servers {
        let killed = server.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
        assert!(
            killed.trim().parse::<u32>().is_ok_and(|count| count > 0),
            "Redis dropped no client: {killed}"
        );
    }
    // Each link answers 503 once it finds its connection gone, then connects again.
    let mut answer = async |path: &str| {
        let mut answers = Vec::new();
        loop {
            let status = browser.get(&format!("{base}{path}")).await.status();
            answers.push(status.as_u16());
            if status != 503 || answers.len() == 50 {
                return (status, answers);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    let (status, answers) = answer("/auth").await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        status, 200,
        "the session link reconnected: {answers:?}\n{text}"
    );
    let (status, answers) = answer("/signout").await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        status, 302,
        "the link of confirmed writes reconnected: {answers:?}\n{text}"
    );
    assert_eq!(browser.get(&format!("{base}/auth")).await.status(), 401);
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Each worker sends its requests to an HTTP/2 upstream over one shared connection, whose
/// flow-control window a stream's unread data takes up until Tollgate reads it, that is until
/// its client takes it. With hyper's defaults (2 MiB a stream, 5 MiB the connection) three
/// clients that never read a large response filled a worker's connection window, and every
/// other response on that worker got its head and no body until the route's `read_timeout`.
/// A stream may now hold a small part of the connection's window.
#[tokio::test]
async fn clients_that_never_read_do_not_starve_a_shared_http2_upstream_connection() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let ca = TestCa::new("windows");
    let upstream = TlsUpstream::start(&ca.issue("upstream")).await;
    let gateway = behind_tls_upstream_reading(&ca, &upstream, "3s").await;
    let address = gateway.app.public_addr;
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes();
    // Clients that ask for 16 MiB, read the head and nothing more, through a small receive
    // buffer: four on each worker (one per core, dealt in turn), more than hyper's windows
    // took to fill a worker's connection.
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mut stalled = Vec::new();
    for _ in 0..4 * workers {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket.connect(address).await.unwrap();
        stream.write_all(&get("/bytes/16777216")).await.unwrap();
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        stalled.push(stream);
    }
    // Let the upstream fill what the windows allow.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // Small responses on every worker still come whole.
    for _ in 0..2 * workers {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"GET /bytes/1000 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            stream.read_to_end(&mut answer),
        )
        .await
        .expect("an answer or a close");
        let text = String::from_utf8_lossy(&answer);
        let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
        assert!(
            text.starts_with("HTTP/1.1 200") && body.len() == 1000,
            "a small response behind clients that never read: {text:?}"
        );
    }
    drop(stalled);
    gateway.stop().await;
}

/// An HTTP/2 upstream allows so many streams on a connection (here 100, as Tomcat and Kestrel
/// do): a worker that sent every request on one connection held up every request beyond that
/// behind long polls and event streams until one ended. A worker opens another connection
/// when each of its own has 100 streams in flight.
#[tokio::test]
async fn long_requests_beyond_a_connections_streams_do_not_hold_up_the_others() {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let ca = TestCa::new("streams");
    let upstream = TlsUpstream::start(&ca.issue("upstream")).await;
    let gateway = behind_tls_upstream_reading(&ca, &upstream, "60s").await;
    let address = gateway.app.public_addr;
    // More long requests than every worker's one connection could carry (fresh client
    // connections are dealt to the workers in turn).
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let short = || async move {
        for _ in 0..2 * workers {
            let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
            stream
                .write_all(
                    b"GET /bytes/10 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                )
                .await
                .unwrap();
            let mut answer = Vec::new();
            tokio::time::timeout(
                std::time::Duration::from_secs(30),
                stream.read_to_end(&mut answer),
            )
            .await
            .expect("a short request held up behind long ones")
            .unwrap();
            assert!(
                answer.starts_with(b"HTTP/1.1 200"),
                "{}",
                String::from_utf8_lossy(&answer)
            );
        }
    };
    // Every worker has its connection.
    short().await;
    let long = 100 * workers + 30;
    let mut held = Vec::new();
    for _ in 0..long {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"GET /hang HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        held.push(stream);
    }
    let mut arrived = 0;
    for _ in 0..200 {
        arrived = upstream.hanging.load(Ordering::SeqCst);
        if arrived == long {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(arrived, long, "long requests held up behind the others");
    // And short ones on every worker are answered meanwhile.
    short().await;
    drop(held);
    gateway.stop().await;
}

/// A worker's HTTP/2 connection to an upstream is pinged to stay open while it is shared. A
/// reload gives every upstream a new identity, and the connections to the old one stayed open
/// for as long as the process ran: one more per worker and upstream at every reload. They
/// close once no config holds their upstream.
#[tokio::test]
async fn a_reload_closes_the_http2_upstream_connections_of_the_config_it_replaced() {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    const RELOADS: usize = 4;
    let ca = TestCa::new("reload-h2");
    let upstream = TlsUpstream::start(&ca.issue("upstream")).await;
    let text = |timeout: usize| {
        config(
            "",
            &format!(
                "{}read_timeout = \"{}s\"\n",
                route(
                    "/",
                    &format!("https://localhost:{}", upstream.port),
                    Some(&ca.cert())
                ),
                10 + timeout
            ),
        )
    };
    let gateway = Gateway::start(&text(0)).await;
    let address = gateway.app.public_addr;
    // Fresh client connections are dealt to the workers in turn: twice as many reach each.
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let on_every_worker = || async move {
        for _ in 0..2 * workers {
            let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
            stream
                .write_all(
                    b"GET /bytes/10 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                )
                .await
                .unwrap();
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await.unwrap();
            assert!(
                answer.starts_with(b"HTTP/1.1 200"),
                "{}",
                String::from_utf8_lossy(&answer)
            );
        }
    };
    on_every_worker().await;
    let at_start = upstream.open_http2.load(Ordering::SeqCst);
    assert!(
        (1..=workers).contains(&at_start),
        "one shared connection per worker at most: {at_start}"
    );
    for reload in 1..=RELOADS {
        let config = tollgate::config::load(&text(reload), &std::collections::BTreeMap::new())
            .expect("the config loads");
        gateway.app.reload(config).await.unwrap();
        on_every_worker().await;
    }
    let handshakes = upstream.handshakes.lock().unwrap().len();
    assert!(
        handshakes > at_start,
        "the reloads gave the upstream new connections: {handshakes}"
    );
    // The old ones close as the workers next look for theirs (a request), not later.
    let mut open = upstream.open_http2.load(Ordering::SeqCst);
    for _ in 0..100 {
        if open <= workers {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        open = upstream.open_http2.load(Ordering::SeqCst);
    }
    assert!(
        open <= workers,
        "after {RELOADS} reloads, {open} HTTP/2 connections stay open for {workers} workers \
         ({handshakes} made)"
    );
    gateway.stop().await;
}
