//! `[telemetry]` across reloads: an unchanged section keeps its exporter; a replaced exporter
//! is shut down, its spans exported, where no request waits for it.

use std::sync::{Arc, Mutex};

use super::{HeldUpstream, KeptAlive, config, load};
use crate::support::otlp::Collector;
use crate::support::{Gateway, TestIdp, TestUpstream};

/// A collector that takes each export's connection, reads the request and never answers.
struct StalledCollector {
    endpoint: String,
    held: Arc<Mutex<Vec<tokio::net::TcpStream>>>,
}

impl StalledCollector {
    async fn start() -> Self {
        use tokio::io::AsyncReadExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let held = Arc::new(Mutex::new(Vec::new()));
        let kept = held.clone();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut buffer = vec![0u8; 64 * 1024];
                let _ = stream.read(&mut buffer).await;
                kept.lock().unwrap().push(stream);
            }
        });
        Self { endpoint, held }
    }

    /// Exports that reached this collector.
    fn exports(&self) -> usize {
        self.held.lock().unwrap().len()
    }

    /// Exports the exporter gave up on (it closed the connection, its time being up).
    fn given_up(&self) -> usize {
        let mut buffer = [0u8; 1];
        self.held
            .lock()
            .unwrap()
            .iter()
            .filter(|stream| matches!(stream.try_read(&mut buffer), Ok(0)))
            .count()
    }
}

fn section(endpoint: &str) -> String {
    format!("\n[telemetry]\notlp_endpoint = \"{endpoint}\"\nservice_name = \"tollgate-test\"\n")
}

/// Waits (at most 30 s) until `done` holds.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    for _ in 0..300 {
        if done() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{what}");
}

#[tokio::test]
async fn an_unchanged_telemetry_section_keeps_its_exporter_across_a_reload() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let collector = Collector::start().await;
    let text = config(&idp, &upstream, None, "") + &section(&collector.endpoint());
    let gateway = Gateway::start(&text).await;
    let before = gateway
        .app
        .state()
        .telemetry
        .clone()
        .expect("telemetry is on");
    assert_eq!(gateway.get("/ping").send().await.unwrap().status(), 200);
    gateway.app.reload(load(&text)).await.unwrap();
    let after = gateway
        .app
        .state()
        .telemetry
        .clone()
        .expect("telemetry is on");
    assert!(Arc::ptr_eq(&before, &after), "a new exporter was built");
    assert_eq!(gateway.get("/ping").send().await.unwrap().status(), 200);
    gateway.stop().await;
    assert_eq!(
        collector.spans().len(),
        2,
        "the spans from before and after the reload"
    );
}

/// Regression: the replaced exporter was shut down by whichever request dropped the old config
/// last, on its worker; with the collector not answering, that request's answer waited for the
/// export to time out. Here the request that held the old config is answered while the old
/// exporter's last export is still waiting on the stalled collector, and that export happens.
#[tokio::test]
async fn a_replaced_exporter_is_shut_down_where_no_request_waits_for_it() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let held = HeldUpstream::start().await;
    let stalled = StalledCollector::start().await;
    let collector = Collector::start().await;
    let routes = |text: String| {
        text.replace(
            "[forward_auth]",
            &format!(
                "[[route]]\npath_prefix = \"/held\"\nupstream = \"http://{}\"\nprovider = \"corp\"\non_unauthenticated = \"pass\"\n\n[forward_auth]",
                held.addr
            ),
        )
    };
    let gateway =
        Gateway::start(&(routes(config(&idp, &upstream, None, "")) + &section(&stalled.endpoint)))
            .await;
    let mut in_flight = KeptAlive::open(gateway.app.public_addr).await;
    let answer = tokio::spawn(async move {
        let answer = in_flight.get("/held", &[]).await;
        (answer, in_flight)
    });
    held.arrived.notified().await;
    gateway
        .app
        .reload(load(
            &(routes(config(&idp, &upstream, None, "")) + &section(&collector.endpoint())),
        ))
        .await
        .unwrap();
    held.release.notify_one();
    let (answer, mut connection) = answer.await.unwrap();
    assert_eq!(answer, (200, "released".to_owned()));
    assert_eq!(connection.get("/ping", &[]).await.0, 200);
    assert_eq!(
        stalled.given_up(),
        0,
        "a request waited for the replaced exporter to give up on its export"
    );
    // The old exporter's last spans (the held request's) still go out, to the old collector.
    eventually(
        "the replaced exporter never exported its last spans",
        || stalled.exports() > 0,
    )
    .await;
    gateway.stop().await;
    assert!(
        !collector.spans().is_empty(),
        "the new collector got the spans of requests after the reload"
    );
}
