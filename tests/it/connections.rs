//! SPEC §9: slow and idle clients are cut off, an upstream that stalls mid-body is cut off, and
//! what goes upstream carries no header the client forged. Outcomes are asserted (closed or
//! not), never durations; a generous outer timeout turns a hang into a failure.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::{Gateway, TestIdp, TestUpstream};

const TIMEOUTS: &str = "header_read_timeout = \"1s\"\nkeepalive_timeout = \"1s\"\n";

/// Tollgate with a pass route to `upstream` and 1 s connection timeouts.
async fn gateway(idp: &TestIdp, upstream: &str, route_extra: &str) -> Gateway {
    gateway_with(idp, upstream, route_extra, TIMEOUTS).await
}

/// Tollgate with a pass route to `upstream` and the `[server]` lines `timeouts`.
async fn gateway_with(idp: &TestIdp, upstream: &str, route_extra: &str, timeouts: &str) -> Gateway {
    let routes = format!(
        "[[route]]\nupstream = \"{upstream}\"\nprovider = \"corp\"\non_unauthenticated = \"pass\"\n{route_extra}"
    );
    let config = crate::proxy::proxy_config(idp, upstream, &routes).replacen(
        "admin_listen = \"127.0.0.1:0\"\n",
        &format!("admin_listen = \"127.0.0.1:0\"\n{timeouts}"),
        1,
    );
    Gateway::start(&config).await
}

/// Sends one `GET /x` on `stream` and reads its whole answer; its status line, or `None` when
/// the connection was closed or broke instead.
async fn get_on(stream: &mut tokio::net::TcpStream) -> Option<String> {
    get_path_on(stream, "/x").await
}

/// Sends one `GET path` on `stream` and reads its whole answer (with a `Content-Length`); its
/// status line, or `None` when the connection was closed or broke instead.
async fn get_path_on(stream: &mut tokio::net::TcpStream, path: &str) -> Option<String> {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await
        .ok()?;
    read_answer(stream).await
}

/// Reads one whole answer (with a `Content-Length`) on `stream`; its status line, or `None`
/// when the connection was closed or broke instead.
async fn read_answer(stream: &mut tokio::net::TcpStream) -> Option<String> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let read = async {
        loop {
            let text = String::from_utf8_lossy(&received).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .expect("the answer has a Content-Length");
                if body.len() >= length {
                    return head.lines().next().map(str::to_owned);
                }
            }
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return None,
                Ok(read) => received.extend_from_slice(&buffer[..read]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("an answer or a close")
}

/// Reads until the server closes the connection; `true` when it did within the outer bound.
async fn closed_by_server(stream: &mut tokio::net::TcpStream) -> bool {
    let mut buffer = [0u8; 4096];
    let read_to_end = async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read_to_end)
        .await
        .is_ok()
}

#[tokio::test]
async fn idle_and_slow_header_connections_are_closed() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let gateway = gateway(&idp, &upstream.url(), "").await;
    let addr = gateway.app.public_addr;

    // A connection that never sends a byte.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_by_server(&mut idle).await,
        "a silent connection stays open"
    );

    // A keep-alive connection after one answered request.
    let mut kept = tokio::net::TcpStream::connect(addr).await.unwrap();
    kept.write_all(b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    kept.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    assert!(
        closed_by_server(&mut kept).await,
        "an idle keep-alive stays open"
    );

    // One header byte every 100 ms: the head never completes within header_read_timeout.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut cut_off = false;
    for byte in head {
        if slow.write_all(&[*byte]).await.is_err() {
            cut_off = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !cut_off {
        // Every byte was accepted by the socket: the server must have answered with a refusal
        // or closed, never served the request.
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut answer)).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(
            !text.starts_with("HTTP/1.1 200"),
            "a head sent over 20 s was served: {text}"
        );
    }
    gateway.stop().await;
}

/// An upstream of raw sockets at the returned URL: for each connection it reads one request
/// head, then hands the socket to `answer`.
async fn raw_upstream<F, Answer>(answer: F) -> String
where
    F: Fn(tokio::net::TcpStream) -> Answer + Copy + Send + 'static,
    Answer: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buffer = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => head.push(buffer[0]),
                    }
                }
                answer(stream).await;
            });
        }
    });
    upstream
}

/// An upstream's answer switching to the test protocol `sink`.
const SWITCHED: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: sink\r\n\r\n";

/// A client connection to `gateway` upgraded to `sink` (the upstream answered 101).
async fn upgraded(gateway: &Gateway) -> tokio::net::TcpStream {
    let mut client = tokio::net::TcpStream::connect(gateway.app.public_addr)
        .await
        .unwrap();
    client
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: sink\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        client.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    client
}

/// A keep-alive connection is idle for `keepalive_timeout`, not `header_read_timeout`: an
/// ingress or load balancer reusing a pooled connection that Tollgate closed early gets a
/// reset instead of an answer. A later request's head that trickles in is still cut off
/// after `header_read_timeout`.
#[tokio::test]
async fn a_keep_alive_connection_is_idle_for_keepalive_timeout_not_header_read_timeout() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let timeouts = "header_read_timeout = \"1s\"\nkeepalive_timeout = \"6s\"\n";
    let gateway = gateway_with(&idp, &upstream.url(), "", timeouts).await;
    let mut kept = tokio::net::TcpStream::connect(gateway.app.public_addr)
        .await
        .unwrap();
    assert_eq!(get_on(&mut kept).await.as_deref(), Some("HTTP/1.1 200 OK"));
    // Idle for twice header_read_timeout, a third of keepalive_timeout.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        get_on(&mut kept).await.as_deref(),
        Some("HTTP/1.1 200 OK"),
        "an idle keep-alive connection was closed after header_read_timeout"
    );

    // The next head, one byte every 200 ms: bytes move, but it never completes in time.
    let head =
        b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut cut_off = false;
    for byte in head {
        if kept.write_all(&[*byte]).await.is_err() {
            cut_off = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if !cut_off {
        // Every byte was accepted by the socket: the server must have closed, never served it.
        let mut answer = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(30), kept.read_to_end(&mut answer)).await;
        assert!(closed.is_ok(), "a slow later head kept its connection");
        assert!(
            !String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
            "a later head trickled in over 12 s was served"
        );
    }
    gateway.stop().await;
}

/// An upstream that speaks HTTP/1.0 (and closes after each answer) does not turn the answer
/// to the client into HTTP/1.0, which would close the client's keep-alive connection.
#[tokio::test]
async fn an_http_1_0_upstream_leaves_the_clients_connection_open() {
    let idp = TestIdp::start().await;
    let upstream = raw_upstream(|mut stream| async move {
        let _ = stream
            .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nOK\n")
            .await;
    })
    .await;
    let gateway = gateway_with(&idp, &upstream, "", "").await;
    let mut client = tokio::net::TcpStream::connect(gateway.app.public_addr)
        .await
        .unwrap();
    assert_eq!(
        get_on(&mut client).await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    assert_eq!(
        get_on(&mut client).await.as_deref(),
        Some("HTTP/1.1 200 OK"),
        "the client's connection ended with the upstream's HTTP/1.0 answer"
    );
    gateway.stop().await;
}

/// After an upgrade, the bytes a client sends are the new protocol's, not a request's head: a
/// client that sends for longer than `header_read_timeout` while the upstream says nothing
/// keeps its connection.
#[tokio::test]
async fn an_upgraded_connection_is_not_timed_as_a_request_head() {
    let idp = TestIdp::start().await;
    // An upstream that switches protocols, then only listens until it has ten bytes, and
    // answers "done".
    let upstream = raw_upstream(|mut stream| async move {
        let _ = stream.write_all(SWITCHED).await;
        let (mut sunk, mut buffer) = (0, [0u8; 64]);
        while sunk < 10 {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => sunk += read,
            }
        }
        let _ = stream.write_all(b"done").await;
    })
    .await;
    let timeouts = "header_read_timeout = \"1s\"\nkeepalive_timeout = \"6s\"\n";
    let gateway = gateway_with(&idp, &upstream, "upgrades = [\"sink\"]\n", timeouts).await;
    let mut client = upgraded(&gateway).await;
    // Ten bytes over three seconds, three times header_read_timeout, and no answer meanwhile.
    for _ in 0..10 {
        client.write_all(b"x").await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut done = [0u8; 4];
    let answer = tokio::time::timeout(Duration::from_secs(30), client.read_exact(&mut done)).await;
    assert!(
        matches!(answer, Ok(Ok(_))) && &done == b"done",
        "the upgraded connection was closed as a slow request head"
    );
    gateway.stop().await;
}

/// An upgraded connection keeps its place among `max_connections` while it is open, and is
/// closed once no byte moved either way for `keepalive_timeout`. Shown by order, not by time:
/// with the only place held by a silent upgraded connection, the next connection is served
/// only after the upgraded one was closed.
#[tokio::test]
async fn an_upgraded_connection_holds_its_place_and_is_closed_when_idle() {
    let idp = TestIdp::start().await;
    // An upstream that switches protocols, then holds its side open and silent.
    let upstream = raw_upstream(|mut stream| async move {
        let _ = stream.write_all(SWITCHED).await;
        let mut buffer = [0u8; 64];
        while let Ok(read) = stream.read(&mut buffer).await {
            if read == 0 {
                return;
            }
        }
    })
    .await;
    let timeouts =
        "header_read_timeout = \"1s\"\nkeepalive_timeout = \"1s\"\nmax_connections = 1\n";
    let gateway = gateway_with(&idp, &upstream, "upgrades = [\"sink\"]\n", timeouts).await;
    let held = upgraded(&gateway).await;

    let mut next = tokio::net::TcpStream::connect(gateway.app.public_addr)
        .await
        .unwrap();
    // Answered (502: this upstream switches protocols unasked), which needs the place.
    assert_eq!(
        get_on(&mut next).await.as_deref(),
        Some("HTTP/1.1 502 Bad Gateway"),
        "the waiting connection is served once the upgraded one is closed"
    );
    // The upgraded socket's end reached it before the place it held was free.
    let mut buffer = [0u8; 64];
    let closed_already = match held.try_read(&mut buffer) {
        Ok(read) => read == 0,
        Err(error) => error.kind() != std::io::ErrorKind::WouldBlock,
    };
    assert!(
        closed_already,
        "a connection was served while an open upgraded one held the only place"
    );
    gateway.stop().await;
}

/// An upgraded connection whose upstream stopped reading (a push-only handler, a paused
/// process) once the client had filled the buffers between them: the splice's copy then polls
/// neither socket, so the cut of an idle connection, a failing read, never came, and the
/// socket held its place for good. It is closed after `keepalive_timeout` all the same.
#[tokio::test]
async fn an_upgraded_connection_whose_upstream_stopped_reading_is_closed_when_idle() {
    let idp = TestIdp::start().await;
    // An upstream that switches protocols, then neither reads nor writes, its socket open.
    let upstream = raw_upstream(|mut stream| async move {
        let _ = stream.write_all(SWITCHED).await;
        std::future::pending::<()>().await;
        drop(stream);
    })
    .await;
    let timeouts =
        "header_read_timeout = \"1s\"\nkeepalive_timeout = \"1s\"\nmax_connections = 1\n";
    let gateway = gateway_with(&idp, &upstream, "upgrades = [\"sink\"]\n", timeouts).await;
    let mut held = upgraded(&gateway).await;
    // Written until the buffers on the way are full and a write waits.
    let chunk = vec![b'x'; 65_536];
    let mut accepted = 0usize;
    while accepted < 256 << 20 {
        match tokio::time::timeout(Duration::from_millis(500), held.write_all(&chunk)).await {
            Ok(Ok(())) => accepted += chunk.len(),
            _ => break,
        }
    }
    assert!(
        accepted > 8192 && accepted < 256 << 20,
        "{accepted} bytes taken: the buffers never filled"
    );
    let mut next = tokio::net::TcpStream::connect(gateway.app.public_addr)
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(30), get_on(&mut next))
        .await
        .expect("the upgraded connection holds the only place for good");
    assert_eq!(answer.as_deref(), Some("HTTP/1.1 502 Bad Gateway"));
    gateway.stop().await;
}

/// With `max_connections` open, the connection idle longest between requests is closed to
/// make room for a new one, as nginx reuses its idle keep-alive connections; one writing a
/// response body keeps its place however quiet the body is. Before, an idle keep-alive
/// connection held its place for `keepalive_timeout` (75 s), so idle connections a client
/// opened and left shut the listener to everyone else.
#[tokio::test]
async fn a_full_listener_closes_the_idlest_connection_to_make_room_never_one_writing_a_body() {
    static BODY_ENDS: tokio::sync::Notify = tokio::sync::Notify::const_new();
    let idp = TestIdp::start().await;
    // A streamed body: its first chunk, then nothing until the test says.
    let upstream = raw_upstream(|mut stream| async move {
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n";
        let _ = stream.write_all(head).await;
        BODY_ENDS.notified().await;
        let _ = stream.write_all(b"0\r\n\r\n").await;
        let _ = stream.read(&mut [0u8; 64]).await;
    })
    .await;
    let timeouts =
        "header_read_timeout = \"1s\"\nkeepalive_timeout = \"1h\"\nmax_connections = 1\n";
    let gateway = gateway_with(&idp, &upstream, "", timeouts).await;
    let connect = || tokio::net::TcpStream::connect(gateway.app.public_addr);

    let mut idle = connect().await.unwrap();
    assert_eq!(
        get_path_on(&mut idle, "/ping").await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    let mut next = connect().await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(30), get_path_on(&mut next, "/ping"))
        .await
        .expect("a new connection waits while an idle one holds the only place");
    assert_eq!(answer.as_deref(), Some("HTTP/1.1 200 OK"));
    assert!(
        closed_by_server(&mut idle).await,
        "the idle connection is closed to make room"
    );

    // `next` is idle now: a streamed body takes its place, and keeps it while quiet.
    let mut streaming = connect().await.unwrap();
    streaming
        .write_all(b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut received = Vec::new();
    while !received.ends_with(b"hello\r\n") {
        let mut buffer = [0u8; 256];
        let read = streaming.read(&mut buffer).await.unwrap();
        assert!(read > 0, "{}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&buffer[..read]);
    }
    let mut waiting = connect().await.unwrap();
    waiting
        .write_all(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let early = tokio::time::timeout(Duration::from_secs(3), read_answer(&mut waiting));
    assert!(
        early.await.is_err(),
        "a connection writing a quiet body was closed to make room"
    );
    // Once its body ends, the streaming connection is idle, and makes room.
    BODY_ENDS.notify_one();
    let mut rest = Vec::new();
    while !rest.ends_with(b"0\r\n\r\n") {
        let mut buffer = [0u8; 64];
        let read = streaming.read(&mut buffer).await.unwrap();
        assert!(read > 0, "the body's end was cut off");
        rest.extend_from_slice(&buffer[..read]);
    }
    let answer = tokio::time::timeout(Duration::from_secs(30), read_answer(&mut waiting))
        .await
        .expect("the waiting connection is served once the body ended");
    assert_eq!(answer.as_deref(), Some("HTTP/1.1 200 OK"));
    gateway.stop().await;
}

#[tokio::test]
async fn an_upstream_that_stalls_mid_body_is_cut_off() {
    let idp = TestIdp::start().await;
    // An upstream that promises 1000 bytes, sends 10, then says nothing while keeping the
    // connection open.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
                    .await;
                tokio::time::sleep(Duration::from_secs(3600)).await;
                drop(stream);
            });
        }
    });
    let gateway = gateway(&idp, &upstream, "read_timeout = \"1s\"\n").await;
    let response = reqwest::get(gateway.url("/stall")).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(30), response.bytes())
        .await
        .expect("the client is held by a stalled upstream");
    assert!(body.is_err(), "a cut-off body must not look complete");
    gateway.stop().await;
}

#[tokio::test]
async fn forwarding_headers_from_the_client_never_reach_the_upstream() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    // The test client is on 127.0.0.1, a trusted proxy by default: here nobody is trusted.
    let routes = format!(
        "[[route]]\nupstream = \"{}\"\nprovider = \"corp\"\non_unauthenticated = \"pass\"\n",
        upstream.url()
    );
    let config = crate::proxy::proxy_config(&idp, &upstream.url(), &routes).replacen(
        "admin_listen = \"127.0.0.1:0\"\n",
        "admin_listen = \"127.0.0.1:0\"\ntrusted_proxies = []\n",
        1,
    );
    let gateway = Gateway::start(&config).await;
    let body: Value = gateway
        .get("/x")
        .header("X-Real-IP", "203.0.113.9")
        .header("Forwarded", "for=203.0.113.9;proto=https")
        .header("X-Forwarded-Port", "443")
        .header("X-Scheme", "https")
        .header("X-Url-Scheme", "https")
        .header("Front-End-Https", "on")
        .header("X-Forwarded-For", "203.0.113.9")
        .header("X-Forwarded-Host", "evil.example")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let headers = body["headers"].as_object().unwrap();
    for forged in [
        "x-real-ip",
        "forwarded",
        "x-forwarded-port",
        "x-scheme",
        "x-url-scheme",
        "front-end-https",
    ] {
        assert!(
            !headers.contains_key(forged),
            "{forged} reached the upstream"
        );
    }
    assert_eq!(headers["x-forwarded-for"][0], "127.0.0.1");
    assert_ne!(headers["x-forwarded-host"][0], "evil.example");
    gateway.stop().await;
}

/// The admin listener is watched like the public one: a connection that sends nothing, or its
/// request head a byte at a time, is closed, so no client of the admin port holds file
/// descriptors the public listener needs.
#[tokio::test]
async fn the_admin_listener_closes_idle_and_slow_header_connections() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let gateway = gateway(&idp, &upstream.url(), "").await;
    let addr = gateway.app.admin_addr.unwrap();

    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_by_server(&mut idle).await,
        "a silent admin connection stays open"
    );

    // A head that takes 3 s, three times header_read_timeout: never answered.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut cut_off = false;
    for byte in head.iter().take(30) {
        if slow.write_all(&[*byte]).await.is_err() {
            cut_off = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !cut_off {
        assert!(
            closed_by_server(&mut slow).await,
            "a slow admin head stays open"
        );
    }
    // A whole request is still answered.
    let health = reqwest::get(gateway.admin_url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    gateway.stop().await;
}

/// A request whose body never comes (a head with `Content-Length: 100`, then nothing) was in
/// flight for ever: the watchdog times only connections with nothing in flight, and hyper
/// has no body timeout. It held its connection, its place among `max_connections`, and a
/// shutdown's drain. A body that sends nothing for `keepalive_timeout` is cut off now: to
/// Tollgate's own endpoint that reads it (`/backchannel-logout`) and to a proxied route. One
/// that never begins is cut off after `header_read_timeout`, as its head would be: with the
/// default 75 s `keepalive_timeout`, heads whose bodies never came held the listener's places
/// (in flight, never shed) at a fraction of the connections slow heads need (here
/// `keepalive_timeout` is an hour, so only the first-byte limit can close it).
#[tokio::test]
async fn a_request_body_that_never_comes_is_cut_off() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let timeouts = "header_read_timeout = \"1s\"\nkeepalive_timeout = \"1h\"\n";
    let gateway = gateway_with(&idp, &upstream.url(), "", timeouts).await;
    for path in ["/backchannel-logout", "/upload"] {
        let mut stream = tokio::net::TcpStream::connect(gateway.app.public_addr)
            .await
            .unwrap();
        stream
            .write_all(
                format!(
                    "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                     Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        assert!(
            closed_by_server(&mut stream).await,
            "{path}: the stalled request still holds its connection"
        );
    }
    gateway.stop().await;
}

/// A body trickled a byte at a time, never long enough apart to stall, held its connection and
/// its place among `max_connections` for as long as the client liked (a byte a minute: weeks;
/// 10 000 such connections take the listener). Beyond its first `keepalive_timeout` a body
/// must average 500 bytes a second: to Tollgate's own endpoint (400) and to a proxied route
/// (502), the place is freed for the next connection. A stream's content type spares a signed-in
/// caller's proxied body, never an anonymous one's nor one Tollgate's own endpoint reads.
#[tokio::test]
async fn a_request_body_trickled_below_the_minimum_rate_is_cut_off() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let timeouts = "keepalive_timeout = \"1s\"\nmax_connections = 1\n";
    let gateway = gateway_with(&idp, &upstream.url(), "accept_bearer = true\n", timeouts).await;
    let signed_in = format!("Authorization: Bearer {}\r\n", idp.access_token().sign());
    const FORM: &str = "application/x-www-form-urlencoded";
    const GRPC: &str = "application/grpc";
    for (path, kind, credential, length, cut_off) in [
        ("/backchannel-logout", FORM, "", 1000, true),
        ("/upload", FORM, "", 1000, true),
        ("/upload", FORM, signed_in.as_str(), 1000, true),
        // A stream's content type: never for Tollgate's own endpoint, nor for an anonymous
        // caller (this route passes anonymous requests on); a signed-in one's stream goes.
        ("/backchannel-logout", GRPC, signed_in.as_str(), 1000, true),
        ("/upload", GRPC, "", 1000, true),
        ("/upload", GRPC, signed_in.as_str(), 10, false),
    ] {
        let signed = !credential.is_empty();
        let credential = credential.to_owned();
        let stream = tokio::net::TcpStream::connect(gateway.app.public_addr)
            .await
            .unwrap();
        let (mut reader, mut writer) = stream.into_split();
        // A byte every 300 ms (of 1000: five minutes), never a second without one.
        let trickle = tokio::spawn(async move {
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{credential}\
                 Content-Type: {kind}\r\nContent-Length: {length}\r\n\r\n"
            );
            writer.write_all(head.as_bytes()).await?;
            for _ in 0..length {
                writer.write_all(b"a").await?;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Ok::<_, std::io::Error>(())
        });
        let mut answer = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(30), reader.read_to_end(&mut answer))
            .await
            .is_ok();
        trickle.abort();
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            ended,
            "{path} as {kind} (signed in: {signed}): the trickled request still holds its connection"
        );
        if cut_off {
            let refused = if path == "/upload" {
                "HTTP/1.1 502"
            } else {
                "HTTP/1.1 400"
            };
            assert!(
                answer.starts_with(refused),
                "{path} as {kind} (signed in: {signed}): {answer}"
            );
        } else {
            assert!(
                answer.starts_with("HTTP/1.1 200") && answer.ends_with("\r\n\r\n10"),
                "{path} as {kind}: a proxied stream goes through whole: {answer}"
            );
        }
        // The place it held serves the next connection.
        let mut next = tokio::net::TcpStream::connect(gateway.app.public_addr)
            .await
            .unwrap();
        assert!(
            get_on(&mut next).await.is_some(),
            "{path}: the next connection is served"
        );
    }
    gateway.stop().await;
}

/// A back-channel logout request longer than any logout token is refused before it is read
/// whole (axum's default let it buffer 2 MB).
#[tokio::test]
async fn a_back_channel_logout_longer_than_any_logout_token_is_refused() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let gateway = gateway(&idp, &upstream.url(), "").await;
    let post = async |length: usize| {
        reqwest::Client::new()
            .post(gateway.url("/backchannel-logout"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("logout_token={}", "a".repeat(length)))
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(post(70_000).await, 413);
    // One within the limit is read, and refused for what it is.
    assert_eq!(post(2_000).await, 400);
    gateway.stop().await;
}

/// A shutdown waits for the requests in flight at most `DRAIN_LIMIT`: an upstream that never
/// answers (within a `read_timeout` longer than that) held it for ever, and with it the memory
/// store's last write, until the orchestrator killed the process.
#[tokio::test]
async fn a_shutdown_does_not_wait_for_ever_on_a_request_in_flight() {
    let idp = TestIdp::start().await;
    let upstream = raw_upstream(|stream| async move {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop(stream);
    })
    .await;
    let gateway = gateway_with(
        &idp,
        &upstream,
        "read_timeout = \"1h\"\n",
        "header_read_timeout = \"1s\"\nkeepalive_timeout = \"1h\"\n",
    )
    .await;
    let held = tokio::spawn(reqwest::get(gateway.url("/held")));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let drained = tokio::time::timeout(
        tollgate::http::serve::DRAIN_LIMIT * 3,
        gateway.app.shutdown(),
    )
    .await;
    assert!(drained.is_ok(), "the shutdown waited for the held request");
    held.abort();
}

/// An HTTP/2 client that never takes its response (its stream's window shut, PINGs so bytes
/// keep moving) held the response's upstream connection for ever: nothing was in flight once
/// the head went out, the PINGs kept the connection from being idle, and the upstream body,
/// never polled again, never reached its `read_timeout`. A response whose frame is left
/// untaken for `keepalive_timeout` is released now, and with it its upstream connection, while
/// the connection's other streams go on (a proxy in front multiplexes users on it); a
/// connection with nothing else than PINGs is idle.
#[tokio::test]
async fn an_http2_client_that_never_takes_its_response_is_cut_off() {
    let idp = TestIdp::start().await;
    // An upstream with an endless body at any path but `/slow`, which reports when the
    // connection of an endless one is closed.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    let (closed, mut upstream_closed) = tokio::sync::mpsc::unbounded_channel::<()>();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let closed = closed.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let read = stream.read(&mut request).await.unwrap_or(0);
                let chunk = vec![b'x'; 16 * 1024];
                if request[..read].starts_with(b"GET /slow ") {
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 262144\r\n\r\n")
                        .await;
                    for _ in 0..16 {
                        let _ = stream.write_all(&chunk).await;
                    }
                    return;
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n")
                    .await;
                while stream.write_all(&chunk).await.is_ok() {}
                let _ = closed.send(());
            });
        }
    });
    let gateway = gateway(&idp, &upstream, "read_timeout = \"1s\"\n").await;

    let stream = tokio::net::TcpStream::connect(gateway.app.public_addr)
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .initial_stream_window_size(16 * 1024)
            .keep_alive_interval(Duration::from_millis(100))
            .keep_alive_while_idle(true)
            .handshake::<_, http_body_util::Empty<hyper::body::Bytes>>(
                hyper_util::rt::TokioIo::new(stream),
            )
            .await
            .unwrap();
    let mut connection = tokio::spawn(connection);
    let get = |path: &str| {
        hyper::Request::get(gateway.url(path))
            .body(http_body_util::Empty::new())
            .unwrap()
    };
    // Its head comes; its body is never read, so its window stays shut after the first frame.
    let untaken = sender.send_request(get("/big")).await.unwrap();
    assert_eq!(untaken.status(), 200);

    // Another stream on the same connection, taken slowly, a frame at a time over four
    // keepalive_timeouts, is served all of it meanwhile.
    let mut body = sender.send_request(get("/slow")).await.unwrap().into_body();
    let mut taken = 0;
    while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
        let frame = frame.expect("a stream taken slowly beside an untaken one is cut off");
        taken += frame.data_ref().map_or(0, hyper::body::Buf::remaining);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(taken, 262_144);
    assert!(
        tokio::time::timeout(Duration::from_secs(30), upstream_closed.recv())
            .await
            .is_ok_and(|closed| closed.is_some()),
        "the upstream connection of a response nobody takes stays open"
    );
    // Nothing left but PINGs: the connection is idle.
    assert!(
        tokio::time::timeout(Duration::from_secs(30), &mut connection)
            .await
            .is_ok(),
        "a connection with nothing but PINGs and an untaken response stays open"
    );
    drop(untaken);
    gateway.stop().await;
}

/// An HTTP/1 request head longer than 64 KiB is refused (431) when it comes, not kept: hyper's
/// buffer grew to about 400 KB, which a few hundred connections sending heads without their
/// end held for `header_read_timeout`.
#[tokio::test]
async fn a_request_head_beyond_64_kib_is_refused() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let gateway = gateway(&idp, &upstream.url(), "").await;
    for (filler, refused) in [(40 * 1024, false), (100 * 1024, true)] {
        let mut stream = tokio::net::TcpStream::connect(gateway.app.public_addr)
            .await
            .unwrap();
        let head = format!(
            "GET /x HTTP/1.1\r\nHost: localhost\r\nX-Filler: {}\r\nConnection: close\r\n\r\n",
            "f".repeat(filler)
        );
        // The server may answer and close before the whole head is written.
        let _ = stream.write_all(head.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        let status = String::from_utf8_lossy(&answer)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        assert!(
            status.starts_with("HTTP/1.1 "),
            "an answer to {filler} bytes"
        );
        assert_eq!(
            status.starts_with("HTTP/1.1 431"),
            refused,
            "a head of {filler} bytes: {status}"
        );
    }
}

/// Over HTTP/2 a request's header list may be as long as an HTTP/1 head: a browser sends each
/// cookie as a header of its own, and a session in cookies at its largest is 8 chunks of
/// 3 800 bytes, beyond hyper's default of 16 KiB (431 for the browser's own session). Longer
/// than 64 KiB is refused.
#[tokio::test]
async fn an_http2_header_list_as_long_as_a_session_in_cookies_is_read() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let gateway = gateway(&idp, &upstream.url(), "").await;
    let stream = tokio::net::TcpStream::connect(gateway.app.public_addr)
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake::<_, http_body_util::Empty<hyper::body::Bytes>>(
                hyper_util::rt::TokioIo::new(stream),
            )
            .await
            .unwrap();
    tokio::spawn(connection);
    for (crumbs, refused) in [(8, false), (18, true)] {
        let mut request = hyper::Request::get(gateway.url("/x"));
        for crumb in 0..crumbs {
            request = request.header("cookie", format!("app_{crumb}={}", "v".repeat(3800)));
        }
        let response = sender
            .send_request(request.body(http_body_util::Empty::new()).unwrap())
            .await
            .unwrap();
        assert_eq!(
            response.status() == 431,
            refused,
            "{crumbs} cookies of 3 800 bytes: {}",
            response.status()
        );
        if !refused {
            assert_eq!(response.status(), 200);
        }
    }
    gateway.stop().await;
}

/// An HTTP/2 client that opens its windows wide and then stops reading its socket: each of
/// its streams' responses is queued in Tollgate a frame at a time. With hyper's default (400 KB
/// a stream, 200 streams) such a connection held some 80 MB, and a few of them ended a pod at
/// its memory limit. Tollgate runs in a process of its own here, so that its memory is its own.
#[tokio::test]
async fn an_http2_client_that_stops_reading_its_socket_holds_little_memory() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    const STREAMS: usize = 100;
    // An upstream whose every answer is endless.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n")
                    .await;
                let chunk = vec![b'x'; 16 * 1024];
                while stream.write_all(&chunk).await.is_ok() {}
            });
        }
    });
    let child = own_process("h2-send-buffers", &upstream, &[]);
    let address = child.address.clone();
    let mut up = false;
    for _ in 0..200 {
        if let Ok(mut stream) = tokio::net::TcpStream::connect(&address).await {
            let ping = b"GET /ping HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
            let mut answer = Vec::new();
            if stream.write_all(ping).await.is_ok()
                && stream.read_to_end(&mut answer).await.is_ok()
                && answer.starts_with(b"HTTP/1.1 200")
            {
                up = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(up, "tollgate did not start");
    let resident = || {
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.child.id())).unwrap();
        let kib: usize = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kib * 1024
    };
    let before = resident();
    let before_accepted = accepted.load(Ordering::SeqCst);

    // HTTP/2 by hand: windows as wide as the protocol allows, STREAMS requests, and then the
    // socket is never read.
    let mut client = tokio::net::TcpStream::connect(&address).await.unwrap();
    let frame = |kind: u8, flags: u8, stream: u32, payload: &[u8]| {
        let mut frame = u32::try_from(payload.len()).unwrap().to_be_bytes()[1..].to_vec();
        frame.extend([kind, flags]);
        frame.extend(stream.to_be_bytes());
        frame.extend(payload);
        frame
    };
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // SETTINGS_INITIAL_WINDOW_SIZE at its most; the connection's window likewise.
    out.extend(frame(0x4, 0, 0, &[0, 4, 0x7f, 0xff, 0xff, 0xff]));
    out.extend(frame(0x8, 0, 0, &(0x7fff_ffff_u32 - 65_535).to_be_bytes()));
    for index in 0..STREAMS {
        let stream = u32::try_from(2 * index + 1).unwrap();
        // :method GET, :scheme http, :path /big, :authority (literals, names from the table).
        let mut block = vec![0x82, 0x86, 0x04, 4];
        block.extend(b"/big");
        block.extend([0x01, u8::try_from(address.len()).unwrap()]);
        block.extend(address.as_bytes());
        out.extend(frame(0x1, 0x5, stream, &block));
    }
    client.write_all(&out).await.unwrap();
    for _ in 0..400 {
        if accepted.load(Ordering::SeqCst) - before_accepted >= STREAMS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst) - before_accepted,
        STREAMS,
        "every stream reached the upstream"
    );
    // What the streams hold once the socket's buffers are full: the most seen over a while.
    let mut most = resident();
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        most = most.max(resident());
    }
    drop(child);
    drop(client);
    // About 11 MB now (100 upstream connections and their reads, a frame a stream), 73 MB
    // with hyper's defaults: the line is drawn between them.
    let grown = most.saturating_sub(before);
    assert!(
        grown < 30 * 1024 * 1024,
        "{STREAMS} streams that are never read grew Tollgate by {} KiB",
        grown / 1024
    );
}

/// Out of file descriptors, a listener is as full as at `max_connections`: the connection idle
/// longest is closed to make room. Before, `accept` failed (EMFILE) every 100 ms for as long as
/// idle keep-alive connections held the descriptors (75 s each), so a client opening about a
/// thousand of them shut every listener under a container's usual limit of 1 024. And at start
/// the soft limit is raised to the hard one, as Go's runtime does.
#[tokio::test]
async fn a_listener_out_of_file_descriptors_closes_the_idlest_connection_to_make_room() {
    // A soft limit of 256 under a hard one of 4 096 (util-linux's `prlimit` runs the command
    // itself, so its pid is Tollgate's).
    let child = own_process(
        "out-of-files",
        "http://127.0.0.1:9",
        &["prlimit", "--nofile=256:4096"],
    );
    let pid = child.child.id();
    let address = child.address.clone();
    let mut first = None;
    for _ in 0..200 {
        if let Ok(mut stream) = tokio::net::TcpStream::connect(&address).await
            && get_path_on(&mut stream, "/ping").await.as_deref() == Some("HTTP/1.1 200 OK")
        {
            first = Some(stream);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let first = first.expect("tollgate did not start");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let open_files = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .skip(3)
        .take(2)
        .collect::<Vec<_>>();
    assert_eq!(
        open_files,
        ["4096", "4096"],
        "the soft limit is raised: {limits}"
    );
    // Now a limit 20 descriptors above those open, and 40 keep-alive connections more, each
    // with a request sent: the descriptors run out, and the rest wait in the backlog.
    let open = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    let limit = open() + 20;
    let lowered = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={limit}:{limit}"),
        ])
        .status()
        .unwrap();
    assert!(lowered.success());
    let mut waiting = Vec::new();
    for _ in 0..40 {
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        stream
            .write_all(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        waiting.push(stream);
    }
    let mut full = false;
    for _ in 0..200 {
        if open() >= limit {
            full = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(full, "{} descriptors open, the limit {limit}", open());
    // Each is answered in turn: the idlest connections (idle a second) are closed for them.
    let mut idle = vec![first];
    for mut stream in waiting {
        assert_eq!(
            read_answer(&mut stream).await.as_deref(),
            Some("HTTP/1.1 200 OK"),
            "a connection out of descriptors waits while idle ones hold them"
        );
        idle.push(stream);
    }
    // Room was made by closing idle ones.
    let mut closed = 0;
    for stream in &mut idle {
        let mut byte = [0_u8; 1];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(200), stream.read(&mut byte)).await
        {
            closed += 1;
        }
    }
    assert!(closed >= 1, "no idle connection was closed to make room");
}

/// Tollgate as a process of its own (the binary, not the library in the test's process),
/// proxying everything to `upstream` with authentication off; killed when dropped.
struct OwnProcess {
    child: std::process::Child,
    /// Its public listener's address.
    address: String,
}

impl Drop for OwnProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts an [`OwnProcess`] with its files in a scratch directory named `name`, run by
/// `launcher` (a command such as `prlimit` that runs the binary with its arguments), or
/// directly when `launcher` is empty.
fn own_process(name: &str, upstream: &str, launcher: &[&str]) -> OwnProcess {
    let dir = crate::support::scratch_dir(name);
    let (public, admin) = (crate::support::free_port(), crate::support::free_port());
    let config = dir.join("tollgate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{public}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
             [session]\nsecrets = [\"{}\"]\n\
             [[provider]]\nname = \"corp\"\nissuer = \"http://127.0.0.1:9\"\nclient_id = \"x\"\nclient_auth = \"none\"\n\
             [[route]]\nupstream = \"{upstream}\"\nprovider = \"corp\"\non_unauthenticated = \"pass\"\n",
            crate::support::gateway::SESSION_SECRET
        ),
    )
    .unwrap();
    let binary = env!("CARGO_BIN_EXE_tollgate");
    let mut command = match launcher.split_first() {
        Some((program, arguments)) => {
            let mut command = std::process::Command::new(program);
            command.args(arguments).arg(binary);
            command
        }
        None => std::process::Command::new(binary),
    };
    let child = command
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("{launcher:?} {binary} does not start: {error}"));
    OwnProcess {
        child,
        address: format!("127.0.0.1:{public}"),
    }
}

/// An upstream that answers a request's head at once (a streamed answer) and reads its body
/// after: the body still coming in is the request's, not the next request's head, so
/// `header_read_timeout` does not cut the connection while it uploads at a good pace.
#[tokio::test]
async fn a_request_body_still_uploading_after_the_answers_head_is_no_slow_next_head() {
    let idp = TestIdp::start().await;
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = upstream.local_addr().unwrap();
    const PIECES: usize = 6;
    const PIECE: usize = 1000;
    let upstream = tokio::spawn(async move {
        let (mut stream, _) = upstream.accept().await.unwrap();
        let mut received = Vec::new();
        let mut buffer = [0u8; 4096];
        while !received.windows(4).any(|window| window == b"\r\n\r\n") {
            let read = stream.read(&mut buffer).await.unwrap();
            assert!(read > 0, "the head");
            received.extend_from_slice(&buffer[..read]);
        }
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await
            .unwrap();
        let head_end = received
            .windows(4)
            .position(|window| window == b"\r\n\r\n")
            .unwrap()
            + 4;
        let mut body = received.split_off(head_end);
        while body.iter().filter(|&&byte| byte == b'x').count() < PIECES * PIECE {
            let read = stream.read(&mut buffer).await.unwrap();
            assert!(read > 0, "the body, cut off");
            body.extend_from_slice(&buffer[..read]);
        }
        stream.write_all(b"4\r\ndone\r\n0\r\n\r\n").await.unwrap();
    });
    let gateway = gateway(&idp, &format!("http://{address}"), "").await;
    let mut client = tokio::net::TcpStream::connect(gateway.app.public_addr)
        .await
        .unwrap();
    client
        .write_all(
            format!(
                "POST /x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
                PIECES * PIECE
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // Over about twice `header_read_timeout`, at a pace well above the least body rate.
    for _ in 0..PIECES {
        client.write_all(&[b'x'; PIECE]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buffer = [0u8; 4096];
        while !answer.windows(5).any(|window| window == b"0\r\n\r\n") {
            match client.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => answer.extend_from_slice(&buffer[..read]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer within 20 s");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("done"), "the upload was cut: {answer}");
    upstream.await.unwrap();
}
