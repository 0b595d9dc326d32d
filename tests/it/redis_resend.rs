//! SPEC §12 with a Redis Cluster whose connection drops after a command ran and before its
//! answer came back: the Cluster client sends the command again on a new connection, and
//! what Tollgate sends must mean the same the second time.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::refresh::{advance, config, cookie_header};
use crate::support::redis::{RedisCluster, available};
use crate::support::{Browser, Gateway, TestIdp, free_port};

/// A TCP proxy in front of `target` that, once armed with a marker, passes on the first
/// client write holding it, lets the server run it, and closes both sides before the answer
/// reaches the client.
struct AnswerDropper {
    armed: Arc<Mutex<Option<&'static [u8]>>>,
    dropped: Arc<Mutex<usize>>,
}

impl AnswerDropper {
    async fn start(port: u16, target: u16) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let armed: Arc<Mutex<Option<&'static [u8]>>> = Arc::default();
        let dropped: Arc<Mutex<usize>> = Arc::default();
        let (armed_here, dropped_here) = (armed.clone(), dropped.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (armed, dropped) = (armed_here.clone(), dropped_here.clone());
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    else {
                        return;
                    };
                    pass(client, server, &armed, &dropped).await;
                });
            }
        });
        Self { armed, dropped }
    }

    fn arm(&self, marker: &'static [u8]) {
        *self.armed.lock().unwrap() = Some(marker);
    }

    fn dropped(&self) -> usize {
        *self.dropped.lock().unwrap()
    }
}

async fn pass(
    mut client: tokio::net::TcpStream,
    mut server: tokio::net::TcpStream,
    armed: &Mutex<Option<&'static [u8]>>,
    dropped: &Mutex<usize>,
) {
    let (mut from_client, mut from_server) = (vec![0u8; 65_536], vec![0u8; 65_536]);
    loop {
        tokio::select! {
            read = client.read(&mut from_client) => {
                let Ok(read @ 1..) = read else { return };
                let chunk = &from_client[..read];
                let hit = {
                    let mut armed = armed.lock().unwrap();
                    let hit = armed.is_some_and(|marker| {
                        chunk.windows(marker.len()).any(|window| window == marker)
                    });
                    if hit {
                        *armed = None;
                    }
                    hit
                };
                if server.write_all(chunk).await.is_err() {
                    return;
                }
                if hit {
                    // The server runs it; its answer is read here and never passed on.
                    let _ = tokio::time::timeout(
                        std::time::Duration::from_millis(500),
                        server.read(&mut from_server),
                    )
                    .await;
                    *dropped.lock().unwrap() += 1;
                    return;
                }
            }
            read = server.read(&mut from_server) => {
                let Ok(read @ 1..) = read else { return };
                if client.write_all(&from_server[..read]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The refresh lease's `SET NX` ran and its answer was lost with the connection: the Cluster
/// client sent it again on a new connection, where a plain `SET NX` found the lease taken, by
/// itself, and the request waited for a replica that was not refreshing (the session went
/// unrefreshed until the lease ran out). The lease and the refreshed session's write are now
/// scripts that take a call sent again for done.
#[tokio::test]
async fn a_refresh_whose_redis_answer_was_lost_is_done_when_the_call_is_sent_again() {
    if !available() {
        return;
    }
    let announced = free_port();
    let node = RedisCluster::single_node_announcing(announced).await;
    let dropper = AnswerDropper::start(announced, node.port).await;
    let idp = TestIdp::start().await;
    let clock = tollgate::clock::ManualClock::new();
    let text = config(&idp, "redis").replace(
        "store = \"redis\"\n",
        &format!("store = \"redis\"\nredis_url = [\"redis://127.0.0.1:{announced}\"]\n"),
    );
    let gateway = Gateway::start_with_clock(&text, clock.clone()).await;
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    let auth = |browser: &Browser| {
        let (url, cookie) = (gateway.url("/auth"), cookie_header(browser));
        async move {
            reqwest::Client::new()
                .get(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
                .status()
        }
    };

    // The lease's key is the session's key with `:refreshing`. (The access token lives 300 s;
    // the refresh is due 60 s before.)
    dropper.arm(b":refreshing");
    advance(&clock, &idp, 250);
    assert_eq!(auth(&browser).await, 200);
    assert_eq!(dropper.dropped(), 1, "the lease's answer was dropped");
    assert_eq!(
        idp.count("refresh"),
        1,
        "the request whose lease call was sent again refreshed the session"
    );

    // The write of the refreshed session: the refresh token spent, its successor stored or
    // not, the next refresh presents a token the provider still takes.
    dropper.arm(b"ARGV[3]) return 1 end");
    advance(&clock, &idp, 250);
    assert_eq!(
        auth(&browser).await,
        200,
        "the write sent again is taken as written"
    );
    assert_eq!(dropper.dropped(), 2, "the write's answer was dropped");
    assert_eq!(idp.count("refresh"), 2);
    advance(&clock, &idp, 250);
    assert_eq!(auth(&browser).await, 200);
    let presented = idp.presented_refresh_tokens();
    assert_eq!(presented.len(), 3, "{presented:?}");
    assert!(
        presented[0] != presented[1] && presented[1] != presented[2],
        "each refresh presented the token the one before got: {presented:?}"
    );
}

/// The token service on a Cluster: a code's redemption and a refresh token's rotation ran, and
/// their answers were lost with the connection; the Cluster client sent each again. The
/// second call found the code used and the token spent, by itself: a replay that revoked what
/// the code issued, and a reuse that ended the grant. Each script now knows its own call.
#[tokio::test]
async fn a_code_or_a_rotation_whose_redis_answer_was_lost_is_done_when_the_call_is_sent_again() {
    if !available() {
        return;
    }
    let announced = free_port();
    let node = RedisCluster::single_node_announcing(announced).await;
    let dropper = AnswerDropper::start(announced, node.port).await;
    let top = format!(
        "[session]\nsecrets = [\"{}\"]\nredis_url = [\"redis://127.0.0.1:{announced}\"]",
        crate::support::gateway::SESSION_SECRET
    );
    let (gateway, _) = Gateway::start_at_issuer(|issuer| {
        crate::token_service::config(issuer, &top, "store = \"redis\"")
    })
    .await;
    let text = |value: &serde_json::Value, name: &str| {
        value[name]
            .as_str()
            .unwrap_or_else(|| panic!("no {name} in {value}"))
            .to_owned()
    };

    // A first redemption loads the script into Redis: the call dropped below runs it (not a
    // `NOSCRIPT` answer, which the client follows with the script itself).
    let warm_up = crate::token_service::code_for(&gateway, "s0").await;
    assert_eq!(
        crate::token_service::exchange(&gateway, &warm_up).await.0,
        200
    );
    // Only taking a code names `used:{`.
    let code = crate::token_service::code_for(&gateway, "s1").await;
    dropper.arm(b"ts:used:{");
    let (status, issued) = crate::token_service::exchange(&gateway, &code).await;
    assert_eq!(dropper.dropped(), 1, "the redemption's answer was dropped");
    assert_eq!(status, 200, "the redemption sent again is done: {issued}");
    let access = text(&issued, "access_token");
    assert_eq!(
        crate::token_service::validate(&gateway, &access).await,
        200,
        "not revoked as a replay's"
    );
    // Still spent for anyone else.
    assert_eq!(crate::token_service::exchange(&gateway, &code).await.0, 400);

    // Only the rotation's script says `'exhausted'`.
    let (_, issued) = crate::token_service::exchange(
        &gateway,
        &crate::token_service::code_for(&gateway, "s2").await,
    )
    .await;
    let first = text(&issued, "refresh_token");
    dropper.arm(b"'exhausted'");
    let (status, rotated) = crate::token_service::refresh(&gateway, &first).await;
    assert_eq!(dropper.dropped(), 2, "the rotation's answer was dropped");
    assert_eq!(status, 200, "the rotation sent again is done: {rotated}");
    let (status, again) =
        crate::token_service::refresh(&gateway, &text(&rotated, "refresh_token")).await;
    assert_eq!(status, 200, "the grant lives on: {again}");
    assert_eq!(
        crate::token_service::validate(&gateway, &text(&again, "access_token")).await,
        200
    );
    // The spent token is still a reuse that ends the grant.
    assert_eq!(crate::token_service::refresh(&gateway, &first).await.0, 400);
    assert_eq!(
        crate::token_service::refresh(&gateway, &text(&again, "refresh_token"))
            .await
            .0,
        400
    );
}
