//! `server.max_connections` (SPEC §3) on the public listener and on Envoy's gRPC listener: with
//! every place taken, the next connection is accepted only when one closes. Shown by order,
//! not by time: the held connection is closed by the server (it sent nothing within
//! `header_read_timeout`) before the waiting client gets its answer, so by the time that answer
//! is read the held socket already reads end-of-file. The gRPC listener is cut off by the same
//! watchdog as the public one.

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

/// Whether the server has closed `held`: a read finds end-of-file now, without waiting.
fn closed_already(held: &tokio::net::TcpStream) -> bool {
    let mut buffer = [0u8; 64];
    matches!(held.try_read(&mut buffer), Ok(0))
}

#[tokio::test]
async fn the_public_listener_accepts_no_connection_past_max_connections() {
    let idp = TestIdp::start().await;
    let gateway = gateway(&idp).await;
    let held = tokio::net::TcpStream::connect(gateway.app.public_addr)
        .await
        .unwrap();
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
async fn the_grpc_listener_accepts_no_connection_past_max_connections_and_closes_silent_ones() {
    let idp = TestIdp::start().await;
    let gateway = gateway(&idp).await;
    let held = tokio::net::TcpStream::connect(gateway.app.grpc_addr.unwrap())
        .await
        .unwrap();
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
        "the Check was served while the silent connection held the only place"
    );
    gateway.stop().await;
}
