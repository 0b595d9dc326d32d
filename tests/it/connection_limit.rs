//! `server.max_connections` (SPEC §3) on the public listener and on Envoy's gRPC listener: with
//! every place taken by a busy connection, the next one is served only when one closes. Shown
//! by order, not by time: the held connection, which sent part of its first request, is closed
//! by the server (its head did not come whole within `header_read_timeout`) before the waiting
//! client gets its answer, so by the time that answer is read the held socket already reads
//! end-of-file. The gRPC listener is cut off by the same watchdog as the public one. (An idle
//! connection is closed to make room at once: `connections`.)

use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;

use crate::envoy::{check_request, client};
use crate::support::{Gateway, TestIdp};

async fn gateway(idp: &TestIdp) -> Gateway {
    Gateway::start(&Gateway::forward_auth_config(
        idp,
        "max_connections = 1\nheader_read_timeout = \"1s\"",
        "grpc_listen = \"127.0.0.1:0\"",
    ))
    .await
}

/// `connected`, busy: it sent the first line of HTTP/2's preface, the start of a request on
/// either listener, so it is not idle and is not closed early to make room.
async fn busy(connected: std::io::Result<tokio::net::TcpStream>) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt as _;
    let mut held = connected.unwrap();
    held.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    held
}

/// Whether the server has closed `held`: a read finds end-of-file now, without waiting.
fn closed_already(held: &tokio::net::TcpStream) -> bool {
    let mut buffer = [0u8; 64];
    matches!(held.try_read(&mut buffer), Ok(0))
}

#[tokio::test]
async fn the_public_listener_accepts_no_connection_past_max_connections() {
    let idp = TestIdp::start().await;
    let gateway = gateway(&idp).await;
    let held = busy(tokio::net::TcpStream::connect(gateway.app.public_addr).await).await;
    let answer = tokio::time::timeout(Duration::from_secs(30), gateway.get("/ping").send())
        .await
        .expect("the waiting connection is served once the held one closes")
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert!(
        closed_already(&held),
        "the second connection was served while the first held the only place"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn the_grpc_listener_accepts_no_connection_past_max_connections_and_closes_stalled_ones() {
    let idp = TestIdp::start().await;
    let gateway = gateway(&idp).await;
    let held = busy(tokio::net::TcpStream::connect(gateway.app.grpc_addr.unwrap()).await).await;
    let check = async {
        client(&gateway)
            .await
            .check(check_request("/x", &[], None))
            .await
            .unwrap()
            .into_inner()
    };
    let answer = tokio::time::timeout(Duration::from_secs(30), check)
        .await
        .expect("the waiting Check is answered once the held connection closes");
    assert!(
        matches!(answer.http_response, Some(HttpResponse::DeniedResponse(_))),
        "{answer:?}"
    );
    assert!(
        closed_already(&held),
        "the Check was served while the stalled connection held the only place"
    );
    gateway.stop().await;
}
