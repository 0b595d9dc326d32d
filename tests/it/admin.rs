//! SPEC §8: metrics and health on the admin listener, never on the public one.

use crate::support::{Gateway, TestIdp};

#[tokio::test]
async fn metrics_count_decisions_and_jwks_fetches() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::forward_auth(&idp).await;
    let client = reqwest::Client::new();
    client
        .get(gateway.url("/auth"))
        .bearer_auth(idp.access_token().sign())
        .send()
        .await
        .unwrap();
    client.get(gateway.url("/auth")).send().await.unwrap();
    let metrics = gateway.metrics().await;
    for line in [
        "tollgate_requests_total{role=\"forward_auth\",result=\"allow\"} 1",
        "tollgate_requests_total{role=\"forward_auth\",result=\"unauthenticated\"} 1",
        "tollgate_auth_decision_seconds_count 2",
        "tollgate_jwks_fetches_total{provider=\"corp\",result=\"ok\"} 1",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    for family in [
        "tollgate_signins",
        "tollgate_signouts",
        "tollgate_code_exchange_errors",
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {family} counter")),
            "missing {family} in\n{metrics}"
        );
    }
    assert_eq!(
        client
            .get(gateway.url("/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        404,
        "not on the public listener"
    );
}

#[tokio::test]
async fn health_and_readiness() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::forward_auth(&idp).await;
    assert_eq!(
        reqwest::get(gateway.admin_url("/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        reqwest::get(gateway.admin_url("/readyz"))
            .await
            .unwrap()
            .status(),
        200
    );
}
