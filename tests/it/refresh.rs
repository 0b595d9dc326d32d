//! SPEC §5 refresh: tokens are refreshed before they expire, exactly once per session under
//! concurrent requests, rotated refresh tokens are kept, and a failed refresh sends browsers to
//! log in again and gives API calls a 401.

use std::sync::Arc;

use crate::support::browser::location;
use crate::support::idp::Misbehaviour;
use crate::support::{Browser, Gateway, TestIdp, TestUpstream};

fn config(idp: &TestIdp, store: &str) -> String {
    Gateway::forward_auth_config(idp, "", "").replace(
        "[session]\n",
        &format!("[session]\nstore = \"{store}\"\nrefresh_before = \"60s\"\n"),
    )
}

async fn parallel_auth(
    gateway: &Gateway,
    cookie_header: String,
    requests: usize,
) -> Vec<reqwest::Response> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..requests {
        let url = gateway.url("/auth?inject-claim=jti,X-Jti");
        let cookie = cookie_header.clone();
        tasks.spawn(async move {
            reqwest::Client::new()
                .get(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
        });
    }
    let mut responses = Vec::new();
    while let Some(response) = tasks.join_next().await {
        responses.push(response.unwrap());
    }
    responses
}

fn cookie_header(browser: &Browser) -> String {
    browser
        .cookies
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("; ")
}

#[tokio::test]
async fn many_parallel_requests_refresh_once_and_the_rotated_token_is_kept() {
    for store in ["memory", "cookie"] {
        let idp = TestIdp::start().await;
        let clock = tollgate::clock::ManualClock::new();
        let gateway = Gateway::start_with_clock(&config(&idp, store), clock.clone()).await;
        let mut browser = Browser::new();
        crate::support::gateway::signed_in(&mut browser, &gateway).await;
        assert_eq!(idp.count("refresh"), 0);
        for round in 1..=2 {
            // The access token lives 300 s; 250 s later it is within refresh_before.
            clock.advance(250);
            idp.advance_clock(250);
            let responses = parallel_auth(&gateway, cookie_header(&browser), 24).await;
            assert!(
                responses.iter().all(|response| response.status() == 200),
                "{store}"
            );
            assert_eq!(
                idp.count("refresh"),
                round,
                "{store}: one refresh for 24 concurrent requests"
            );
            if store == "cookie" {
                let refreshed = responses
                    .iter()
                    .find_map(|response| response.headers().get("set-cookie"))
                    .expect("the refreshed cookie session is sent back");
                assert!(refreshed.to_str().unwrap().starts_with("tollgate="));
                for response in &responses {
                    browser.remember(response);
                }
            }
        }
    }
}

#[tokio::test]
async fn a_failed_refresh_sends_browsers_to_log_in_and_api_calls_get_401() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let clock = tollgate::clock::ManualClock::new();
    let text = format!(
        "{}\n[[route]]\nupstream = \"{}\"\nprovider = \"corp\"\n[route.headers]\n\"X-Access-Token\" = \"access_token\"\n",
        config(&idp, "memory").replace("[forward_auth]\nprovider = \"corp\"\n", ""),
        upstream.url()
    );
    let gateway =
        Gateway::start_with_clock(&text, Arc::clone(&clock) as Arc<dyn tollgate::clock::Clock>)
            .await;
    let mut browser = Browser::new();
    let (first, _) = browser.follow(&gateway.url("/page")).await;
    let before: serde_json::Value = first.json().await.unwrap();
    clock.advance(250);
    idp.advance_clock(250);
    let refreshed: serde_json::Value = browser
        .get(&gateway.url("/page"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(idp.count("refresh"), 1);
    assert_ne!(
        before["headers"]["x-access-token"], refreshed["headers"]["x-access-token"],
        "the upstream gets the new access token"
    );

    idp.misbehave(Misbehaviour {
        refresh_fails: true,
        ..Default::default()
    });
    clock.advance(250);
    idp.advance_clock(250);
    let api = browser
        .get_with(&gateway.url("/page"), &[("accept", "application/json")])
        .await;
    assert_eq!(api.status(), 401);
    let page = browser.get(&gateway.url("/page")).await;
    assert_eq!(page.status(), 302, "the browser logs in again");
    assert!(location(&page).starts_with(idp.issuer()));
}

#[tokio::test]
async fn parallel_requests_refresh_once_with_the_redis_store_too() {
    if !crate::support::redis::available() {
        return;
    }
    let redis = crate::support::redis::RedisServer::standalone().await;
    let idp = TestIdp::start().await;
    let clock = tollgate::clock::ManualClock::new();
    let text = config(&idp, "redis").replace(
        "store = \"redis\"\n",
        &format!("store = \"redis\"\nredis_url = \"{}\"\n", redis.url()),
    );
    let gateway = Gateway::start_with_clock(&text, clock.clone()).await;
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    clock.advance(250);
    idp.advance_clock(250);
    let responses = parallel_auth(&gateway, cookie_header(&browser), 24).await;
    let statuses: Vec<u16> = responses
        .iter()
        .map(|response| response.status().as_u16())
        .collect();
    assert!(statuses.iter().all(|status| *status == 200), "{statuses:?}");
    assert_eq!(idp.count("refresh"), 1);
    clock.advance(250);
    idp.advance_clock(250);
    assert_eq!(
        browser.get(&gateway.url("/auth")).await.status(),
        200,
        "the rotated refresh token was stored in Redis"
    );
    assert_eq!(idp.count("refresh"), 2);
}
