//! Spans that never reach the collector are counted in
//! `tollgate_trace_spans_dropped_total`: a collector that refuses an export (`export_failed`),
//! and one so slow that the queue fills (`queue_full`). Requests are answered either way.

use tokio::io::AsyncReadExt as _;

use crate::support::otlp::{Answer, Collector};
use crate::support::{Gateway, TestIdp};

/// The counter's value for `reason` in a Prometheus text (0 when absent).
fn dropped(metrics: &str, reason: &str) -> u64 {
    let series = format!("tollgate_trace_spans_dropped_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series.as_str()))
        .map_or(0, |value| value.trim().parse().unwrap())
}

#[tokio::test]
async fn spans_of_an_export_the_collector_refuses_are_counted_as_dropped() {
    let idp = TestIdp::start().await;
    let collector = Collector::answering(Answer::Fail).await;
    let gateway = Gateway::start(&format!(
        "{}\n{}",
        Gateway::forward_auth_config(&idp, "", ""),
        collector.section()
    ))
    .await;
    let state = gateway.app.state();
    let before = state.metrics.render();
    assert_eq!(dropped(&before, "export_failed"), 0, "{before}");
    assert!(before.contains("tollgate_trace_spans_dropped_total{reason=\"queue_full\"} 0"));
    for _ in 0..20 {
        assert_eq!(gateway.get("/ping").send().await.unwrap().status(), 200);
    }
    // Shutdown exports what is queued: one export of the 20 spans, refused.
    gateway.stop().await;
    let after = state.metrics.render();
    assert_eq!(dropped(&after, "export_failed"), 20, "{after}");
    assert_eq!(dropped(&after, "queue_full"), 0, "{after}");
    assert!(collector.spans().is_empty());
}

#[tokio::test]
async fn spans_past_a_full_queue_are_dropped_and_counted_and_requests_are_still_answered() {
    let idp = TestIdp::start().await;
    // A collector that takes the connection and never answers: each export waits until its
    // time is up, so spans pile up in the queue.
    let stalled = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", stalled.local_addr().unwrap());
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (mut stream, _) = stalled.accept().await.unwrap();
            let mut buffer = vec![0u8; 64 * 1024];
            // Reads the request so the exporter is not stopped by a full socket, then holds on.
            let _ = stream.read(&mut buffer).await;
            held.push(stream);
        }
    });
    let gateway = Gateway::start(&format!(
        "{}\n[telemetry]\notlp_endpoint = \"{endpoint}\"\n",
        Gateway::forward_auth_config(&idp, "", "")
    ))
    .await;
    // The queue holds 2048 spans and the first batch (512) is taken out for its export, which
    // stalls: of these requests' spans at least 2560 are kept, and the rest find the queue full
    // unless a stalled export ends first (then 512 more are kept per export).
    const REQUESTS: u64 = 6000;
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let url = gateway.url("/ping");
        let answered = answered.clone();
        clients.spawn(async move {
            let client = reqwest::Client::new();
            for _ in 0..REQUESTS / 16 {
                if client.get(&url).send().await.unwrap().status() == 200 {
                    answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
    }
    while let Some(result) = clients.join_next().await {
        result.unwrap();
    }
    let requests = REQUESTS / 16 * 16;
    assert_eq!(
        answered.load(std::sync::atomic::Ordering::Relaxed),
        requests
    );
    let metrics = gateway.metrics().await;
    let full = dropped(&metrics, "queue_full");
    assert!(full > 0, "no span was dropped: {metrics}");
    assert!(full <= requests - 2560, "{full} dropped of {requests}");
    // The stalled collector goes away; the exports still queued fail fast and shutdown ends.
    holder.abort();
    gateway.stop().await;
}
