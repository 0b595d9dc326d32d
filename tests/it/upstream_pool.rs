//! Upstream connections (`proxy::pool`): kept and reused, replaced when the upstream closed
//! them, closed when a response is abandoned halfway. The upstream here is a plain TCP server
//! that writes its answers by hand, so that it can close connections without saying so.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::proxy::proxy_config;
use crate::support::{Gateway, TestIdp};

/// Answers by the request path: `/keep` 200 "ok" and waits for the next request; `/empty`
/// 204; `/drop` 200 "ok", then closes the connection without `Connection: close`; `/big` a
/// 100 MB body written until the reader goes away; `/vanish` as `/keep` when it is the
/// connection's first request, else it closes the connection without an answer (as an
/// upstream's keep-alive timeout does when it fires just as a request arrives) and records the
/// request's method.
struct RawUpstream {
    url: String,
    connections: Arc<AtomicUsize>,
    big_body_abandoned: Arc<AtomicBool>,
    vanished: Arc<std::sync::Mutex<Vec<String>>>,
}

impl RawUpstream {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let big_body_abandoned = Arc::new(AtomicBool::new(false));
        let vanished = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (counter, abandoned, log) = (
            connections.clone(),
            big_body_abandoned.clone(),
            vanished.clone(),
        );
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, abandoned.clone(), log.clone()));
            }
        });
        Self {
            url,
            connections,
            big_body_abandoned,
            vanished,
        }
    }
}

async fn serve(
    mut stream: tokio::net::TcpStream,
    big_body_abandoned: Arc<AtomicBool>,
    vanished: Arc<std::sync::Mutex<Vec<String>>>,
) {
    let mut buffer = Vec::new();
    for served in 0.. {
        let head_end = loop {
            if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        buffer.drain(..head_end);
        let path = head.split(' ').nth(1).unwrap_or("");
        match path {
            "/vanish" if served > 0 => {
                let method = head.split(' ').next().unwrap_or("").to_owned();
                vanished.lock().unwrap().push(method);
                return;
            }
            "/keep" | "/drop" | "/vanish" => {
                let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                stream.write_all(ok).await.unwrap();
                if path == "/drop" {
                    return;
                }
            }
            "/empty" => stream
                .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .await
                .unwrap(),
            "/big" => {
                let head = b"HTTP/1.1 200 OK\r\ncontent-length: 104857600\r\n\r\n";
                stream.write_all(head).await.unwrap();
                let chunk = vec![b'x'; 65536];
                for _ in 0..1600 {
                    if stream.write_all(&chunk).await.is_err() {
                        big_body_abandoned.store(true, Ordering::SeqCst);
                        return;
                    }
                }
                return;
            }
            other => panic!("the raw upstream has no {other}"),
        }
    }
}

async fn start(upstream: &RawUpstream) -> (TestIdp, Gateway) {
    let idp = TestIdp::start().await;
    let routes = "[[route]]\nupstream = \"{upstream}\"\nprovider = \"corp\"\non_unauthenticated = \"pass\"\n";
    let gateway = Gateway::start(&proxy_config(&idp, &upstream.url, routes)).await;
    (idp, gateway)
}

/// GET through the gateway, failing the test instead of hanging when no answer comes.
async fn get(client: &reqwest::Client, url: &str) -> (u16, String) {
    let response = tokio::time::timeout(Duration::from_secs(10), async {
        let response = client.get(url).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    })
    .await;
    response.unwrap_or_else(|_| panic!("no answer from {url}"))
}

#[tokio::test]
async fn upstream_connections_are_kept_and_reused() {
    let upstream = RawUpstream::start().await;
    let (_idp, gateway) = start(&upstream).await;
    // One client connection: its requests are served by one worker, with one pool.
    let client = reqwest::Client::new();
    for _ in 0..5 {
        assert_eq!(
            get(&client, &gateway.url("/keep")).await,
            (200, "ok".into())
        );
        assert_eq!(
            get(&client, &gateway.url("/empty")).await,
            (204, String::new())
        );
    }
    assert_eq!(
        upstream.connections.load(Ordering::SeqCst),
        1,
        "ten requests, one after another, share one upstream connection"
    );
}

#[tokio::test]
async fn a_connection_the_upstream_closed_is_replaced() {
    let upstream = RawUpstream::start().await;
    let (_idp, gateway) = start(&upstream).await;
    let client = reqwest::Client::new();
    for _ in 0..3 {
        assert_eq!(
            get(&client, &gateway.url("/drop")).await,
            (200, "ok".into())
        );
        // Time for the close to arrive, as it would during an idle keep-alive period.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        get(&client, &gateway.url("/keep")).await,
        (200, "ok".into())
    );
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn a_response_abandoned_halfway_closes_its_upstream_connection() {
    let upstream = RawUpstream::start().await;
    let (_idp, gateway) = start(&upstream).await;
    let big_client = reqwest::Client::new();
    let mut big = big_client.get(gateway.url("/big")).send().await.unwrap();
    assert_eq!(big.status(), 200);
    assert!(!big.chunk().await.unwrap().unwrap().is_empty());
    drop(big);
    drop(big_client);
    // The upstream sees its connection end: it is closed, not kept with half a body in it.
    tokio::time::timeout(Duration::from_secs(10), async {
        while !upstream.big_body_abandoned.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the upstream connection of the abandoned response was never closed");
    // Fresh client connections reach every worker; none of them gets the old connection.
    for _ in 0..4 {
        let client = reqwest::Client::new();
        assert_eq!(
            get(&client, &gateway.url("/keep")).await,
            (200, "ok".into())
        );
    }
}

#[tokio::test]
async fn a_safe_request_lost_on_a_long_idle_connection_is_sent_once_more_and_a_post_never() {
    let upstream = RawUpstream::start().await;
    let (_idp, gateway) = start(&upstream).await;
    let client = reqwest::Client::new();
    assert_eq!(
        get(&client, &gateway.url("/keep")).await,
        (200, "ok".into())
    );
    // Idle past a second, the kept connection takes the GET and closes without an answer, as
    // an upstream's keep-alive timeout firing at that moment does: the GET goes out again on a
    // new connection, which answers.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        get(&client, &gateway.url("/vanish")).await,
        (200, "ok".into())
    );
    assert_eq!(*upstream.vanished.lock().unwrap(), ["GET"]);
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 2);

    // A POST may have done something: lost the same way, it is a 502, never sent twice.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let post = client
        .post(gateway.url("/vanish"))
        .body("")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 502);
    assert_eq!(*upstream.vanished.lock().unwrap(), ["GET", "POST"]);
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 2);
}
