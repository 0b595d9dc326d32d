//! SPEC §5 refresh: tokens are refreshed before they expire, exactly once per session under
//! concurrent requests, rotated refresh tokens are kept, and a failed refresh sends browsers to
//! log in again and gives API calls a 401.

use std::sync::Arc;

use crate::support::browser::location;
use crate::support::idp::{JwksFault, Misbehaviour};
use crate::support::{Browser, Gateway, TestIdp, TestUpstream};

pub(crate) fn config(idp: &TestIdp, store: &str) -> String {
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

pub(crate) fn cookie_header(browser: &Browser) -> String {
    browser
        .cookies
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// An unusable userinfo answer at a refresh (over the size cap) is the provider's failure, as
/// at login: the session keeps the claims userinfo gave it (here `department`), and is not
/// refreshed into one without them.
#[tokio::test]
async fn an_unusable_userinfo_answer_at_refresh_keeps_the_sessions_claims() {
    let idp = TestIdp::start().await;
    let clock = tollgate::clock::ManualClock::new();
    let gateway = Gateway::start_with_clock(&config(&idp, "memory"), clock.clone()).await;
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    let department = gateway.url("/auth?department=engineering");
    assert_eq!(browser.get(&department).await.status(), 200);
    idp.misbehave(Misbehaviour {
        huge_answer: Some("userinfo"),
        ..Misbehaviour::default()
    });
    // Due for a refresh, its access token still valid.
    clock.advance(250);
    idp.advance_clock(250);
    assert_eq!(
        browser.get(&department).await.status(),
        200,
        "the claims userinfo gave are kept"
    );
    assert_eq!(idp.count("refresh"), 1, "the refresh was tried");
}

/// An address userinfo said was not verified stays unverified when userinfo is down at a
/// refresh (the session is built from the ID token, which says nothing of it), and an address
/// the ID token gives while userinfo is down at login is taken as unverified: silence would
/// vouch for it.
#[tokio::test]
async fn an_address_stays_unverified_when_userinfo_is_down() {
    let idp = TestIdp::start().await;
    let clock = tollgate::clock::ManualClock::new();
    let gateway = Gateway::start_with_clock(&config(&idp, "memory"), clock.clone()).await;
    let email = gateway.url("/auth?inject-claim=email,X-Email");
    idp.misbehave(Misbehaviour {
        userinfo_unverified_email: true,
        ..Misbehaviour::default()
    });
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    let sent = |response: &reqwest::Response| response.headers().get("x-email").cloned();
    let answer = browser.get(&email).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(sent(&answer), None, "not verified, says userinfo");
    idp.misbehave(Misbehaviour {
        userinfo_status: Some(503),
        ..Misbehaviour::default()
    });
    clock.advance(250);
    idp.advance_clock(250);
    let answer = browser.get(&email).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(idp.count("refresh"), 1, "refreshed without userinfo");
    assert_eq!(sent(&answer), None, "still not verified");
    // Signed in while userinfo is down: the ID token's address, unverified.
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    let answer = browser.get(&email).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(sent(&answer), None, "userinfo could not say");
    // Userinfo back, saying nothing of it: the provider's word.
    idp.misbehave(Misbehaviour::default());
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    let answer = browser.get(&email).await;
    assert_eq!(
        sent(&answer).as_ref().map(|value| value.to_str().unwrap()),
        Some("alice@example.com")
    );
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

/// `config` with sessions in `redis`.
fn redis_config(idp: &TestIdp, redis: &crate::support::redis::RedisServer) -> String {
    config(idp, "redis").replace(
        "store = \"redis\"\n",
        &format!("store = \"redis\"\nredis_url = \"{}\"\n", redis.url()),
    )
}

#[tokio::test]
async fn parallel_requests_refresh_once_with_the_redis_store_too() {
    if !crate::support::redis::available() {
        return;
    }
    let redis = crate::support::redis::RedisServer::standalone().await;
    let idp = TestIdp::start().await;
    let clock = tollgate::clock::ManualClock::new();
    let text = redis_config(&idp, &redis);
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

pub(crate) fn advance(clock: &tollgate::clock::ManualClock, idp: &TestIdp, seconds: i64) {
    clock.advance(seconds);
    idp.advance_clock(seconds);
}

#[tokio::test]
async fn a_refresh_answered_503_keeps_the_session_until_its_access_token_expires_then_502() {
    for store in ["memory", "cookie"] {
        let idp = TestIdp::start().await;
        let clock = tollgate::clock::ManualClock::new();
        let gateway = Gateway::start_with_clock(&config(&idp, store), clock.clone()).await;
        let mut browser = Browser::new();
        crate::support::gateway::signed_in(&mut browser, &gateway).await;
        idp.misbehave(Misbehaviour {
            refresh_status: Some(503),
            ..Default::default()
        });
        // The access token lives 300 s: at 250 s the refresh is due and fails with a 503.
        advance(&clock, &idp, 250);
        let auth = browser.get(&gateway.url("/auth")).await;
        assert_eq!(
            auth.status(),
            200,
            "{store}: the access token is still valid"
        );
        assert_eq!(idp.count("refresh"), 1);
        assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 200);
        assert_eq!(
            idp.count("refresh"),
            1,
            "{store}: not retried by every request"
        );
        advance(&clock, &idp, tollgate::identity::refresh::RETRY_AFTER);
        assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 200);
        assert_eq!(idp.count("refresh"), 2, "{store}: retried later");
        // Past the access token's expiry, with the provider still failing: 502, not a login.
        advance(&clock, &idp, 50);
        let expired = browser
            .get_with(&gateway.url("/auth"), &[("accept", "application/json")])
            .await;
        assert_eq!(expired.status(), 502, "{store}");
        assert_eq!(idp.count("refresh"), 3);
        assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 502);
        assert_eq!(
            idp.count("refresh"),
            3,
            "{store}: no retry before RETRY_AFTER"
        );
        // The provider is back: the kept session is refreshed and served.
        idp.misbehave(Misbehaviour::default());
        advance(&clock, &idp, tollgate::identity::refresh::RETRY_AFTER);
        assert_eq!(
            browser.get(&gateway.url("/auth")).await.status(),
            200,
            "{store}"
        );
        assert_eq!(idp.count("refresh"), 4);
        assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 200);
        assert_eq!(idp.count("refresh"), 4, "{store}: refreshed, not due again");
    }
}

#[tokio::test]
async fn a_hanging_refresh_is_cut_off_at_the_provider_timeout_and_keeps_the_session() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let clock = tollgate::clock::ManualClock::new();
    let text = format!(
        "{}\n[[route]]\nupstream = \"{}\"\nprovider = \"corp\"\n",
        config(&idp, "memory")
            .replace("[forward_auth]\nprovider = \"corp\"\n", "")
            .replace(
                "jwks_refetch_interval",
                "timeout = \"1s\"\njwks_refetch_interval"
            ),
        upstream.url()
    );
    let gateway =
        Gateway::start_with_clock(&text, Arc::clone(&clock) as Arc<dyn tollgate::clock::Clock>)
            .await;
    let mut browser = Browser::new();
    let (first, _) = browser.follow(&gateway.url("/page")).await;
    assert_eq!(first.status(), 200);
    idp.misbehave(Misbehaviour {
        refresh_hangs: true,
        ..Default::default()
    });
    advance(&clock, &idp, 250);
    // Four requests at once while the provider hangs: one refresh, cut off at the timeout (1 s);
    // all four are served from the session, whose access token is still valid.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let url = gateway.url("/page");
        let cookie = cookie_header(&browser);
        tasks.spawn(async move {
            reqwest::Client::new()
                .get(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
                .status()
        });
    }
    let statuses = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut statuses = Vec::new();
        while let Some(status) = tasks.join_next().await {
            statuses.push(status.unwrap().as_u16());
        }
        statuses
    })
    .await
    .expect("no request is held by the hanging provider beyond its timeout");
    assert_eq!(statuses, vec![200; 4]);
    assert_eq!(idp.count("refresh"), 1, "one refresh in flight, shared");

    // The access token has expired and the provider still hangs: a browser is told so.
    advance(&clock, &idp, 60);
    let page = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        browser.get(&gateway.url("/page")),
    )
    .await
    .expect("cut off at the provider timeout");
    assert_eq!(page.status(), 502);
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("identity provider is unreachable"),
        "the page says the provider is unreachable"
    );
    assert_eq!(idp.count("refresh"), 2);
    let api = browser
        .get_with(&gateway.url("/page"), &[("accept", "application/json")])
        .await;
    assert_eq!(api.status(), 502);
    assert_eq!(idp.count("refresh"), 2, "not retried by every request");
}

#[tokio::test]
async fn a_claim_the_provider_dropped_at_refresh_is_gone_from_the_session() {
    for store in ["memory", "cookie"] {
        let idp = TestIdp::start().await;
        let clock = tollgate::clock::ManualClock::new();
        let gateway = Gateway::start_with_clock(&config(&idp, store), clock.clone()).await;
        let mut browser = Browser::new();
        crate::support::gateway::signed_in(&mut browser, &gateway).await;
        assert_eq!(
            browser
                .get(&gateway.url("/auth?groups=admin"))
                .await
                .status(),
            200
        );
        // The provider takes the user out of every group and changes the address.
        idp.set_user_claim("groups", serde_json::Value::Null);
        idp.set_user_claim("email", serde_json::json!("alice@new.example"));
        advance(&clock, &idp, 250);
        let refreshed = browser
            .get(&gateway.url("/auth?inject-claim=email,X-Email&inject-claim=department"))
            .await;
        assert_eq!(refreshed.status(), 200, "{store}: still signed in");
        assert_eq!(idp.count("refresh"), 1);
        assert_eq!(refreshed.headers()["x-email"], "alice@new.example");
        assert_eq!(
            refreshed.headers()["department"],
            "engineering",
            "{store}: userinfo claims are read again"
        );
        assert_eq!(
            browser
                .get(&gateway.url("/auth?groups=admin"))
                .await
                .status(),
            403,
            "{store}: the dropped claim no longer passes"
        );
    }
}

#[tokio::test]
async fn a_refresh_token_rotated_before_a_later_step_failed_is_kept_for_the_retry() {
    rotated_before_a_later_step_failed(false).await;
}

/// As above, with the session's access token expired when the refresh ran: the request gets
/// 502, and with the cookie store that answer carries the cookie holding the rotated refresh
/// token. Before, the 502 carried no cookie: the browser kept the spent token, the retry
/// presented it, and the provider's `invalid_grant` ended the session.
#[tokio::test]
async fn a_refresh_token_rotated_before_a_later_step_failed_is_kept_when_the_access_token_had_expired()
 {
    rotated_before_a_later_step_failed(true).await;
}

async fn rotated_before_a_later_step_failed(expired: bool) {
    for store in ["memory", "cookie"] {
        let idp = TestIdp::start().await;
        let clock = tollgate::clock::ManualClock::new();
        let text = config(&idp, store).replace(
            "jwks_refetch_interval = \"1h\"",
            "jwks_refetch_interval = \"10s\"",
        );
        let gateway = Gateway::start_with_clock(&text, clock.clone()).await;
        let mut browser = Browser::new();
        crate::support::gateway::signed_in(&mut browser, &gateway).await;
        // The provider rotates its keys but its JWKS endpoint fails: the token endpoint answers
        // (and spends the refresh token), the new ID token cannot be checked.
        idp.rotate_keys("rsa-2");
        idp.misbehave(Misbehaviour {
            jwks_fault: JwksFault::Status(503),
            ..Default::default()
        });
        // Access tokens live 300 s; the refresh is due in the last 60.
        advance(&clock, &idp, if expired { 350 } else { 250 });
        assert_eq!(
            browser.get(&gateway.url("/auth")).await.status(),
            if expired { 502 } else { 200 },
            "{store}"
        );
        assert_eq!(idp.count("refresh"), 1);
        idp.misbehave(Misbehaviour::default());
        advance(&clock, &idp, tollgate::identity::refresh::RETRY_AFTER);
        assert_eq!(
            browser.get(&gateway.url("/auth")).await.status(),
            200,
            "{store}: the retry presented the rotated refresh token, not the spent one"
        );
        assert_eq!(idp.count("refresh"), 2);
        let presented = idp.presented_refresh_tokens();
        assert_ne!(presented[1], presented[0], "{store}");
    }
}

/// SPEC §12: three replicas on one Redis, requests for one session arriving at all three at
/// once after its access token is due: the provider sees one refresh, every request is
/// answered, and the rotated refresh token is what every replica uses next.
#[tokio::test]
async fn replicas_on_one_redis_refresh_a_session_once_between_them() {
    replicas_refresh_once(false).await;
}

/// As above with a provider that sends the same refresh token back: the replicas that waited
/// see the new access token, not a new refresh token, and do not refresh again.
#[tokio::test]
async fn replicas_refresh_once_when_the_provider_does_not_rotate_refresh_tokens() {
    replicas_refresh_once(true).await;
}

async fn replicas_refresh_once(no_rotation: bool) {
    let redis = crate::support::redis::RedisServer::standalone().await;
    let idp = TestIdp::start().await;
    idp.misbehave(Misbehaviour {
        no_rotation,
        // Long enough that the other replicas wait on the lease.
        refresh_delay_ms: Some(300),
        ..Misbehaviour::default()
    });
    let clock = tollgate::clock::ManualClock::new();
    let text = redis_config(&idp, &redis);
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Gateway::start_with_clock(&text, clock.clone()).await);
    }
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &replicas[0]).await;
    for round in 1..=2 {
        advance(&clock, &idp, 250);
        let mut tasks = tokio::task::JoinSet::new();
        for replica in &replicas {
            let url = replica.url("/auth");
            let cookie = cookie_header(&browser);
            for _ in 0..8 {
                let (url, cookie) = (url.clone(), cookie.clone());
                tasks.spawn(async move {
                    reqwest::Client::new()
                        .get(url)
                        .header("cookie", cookie)
                        .send()
                        .await
                        .unwrap()
                        .status()
                        .as_u16()
                });
            }
        }
        let statuses: Vec<u16> = tasks.join_all().await;
        assert!(
            statuses.iter().all(|status| *status == 200),
            "round {round}: {statuses:?}"
        );
        assert_eq!(
            idp.count("refresh"),
            round,
            "round {round}: one refresh for 24 requests over three replicas"
        );
    }
}

/// SPEC §9 and §12, with a provider that does not rotate refresh tokens and 60 s access tokens:
/// replica A refreshes (the user is in `admin`), the provider drops the group, replica B
/// refreshes the same session. When the session is due again at A within the minute A keeps
/// its result, that older result (same refresh token) was written back over B's: the dropped
/// group came back and passed. Now A refreshes again, and the group stays gone.
#[tokio::test]
async fn a_refresh_another_replica_made_since_is_never_overwritten_by_an_older_result() {
    if !crate::support::redis::available() {
        return;
    }
    let redis = crate::support::redis::RedisServer::standalone().await;
    let idp = TestIdp::start().await;
    let clock = tollgate::clock::ManualClock::new();
    let text = redis_config(&idp, &redis);
    let first = Gateway::start_with_clock(&text, clock.clone()).await;
    let second = Gateway::start_with_clock(&text, clock.clone()).await;
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &first).await;
    idp.misbehave(Misbehaviour {
        no_rotation: true,
        refresh_expires_in: Some(60),
        ..Misbehaviour::default()
    });
    let admin = |gateway: &Gateway| {
        let url = gateway.url("/auth?groups=admin");
        let cookie = cookie_header(&browser);
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
    advance(&clock, &idp, 250);
    assert_eq!(admin(&first).await, 200);
    assert_eq!(idp.count("refresh"), 1);
    idp.set_user_claim("groups", serde_json::Value::Null);
    // Due at once at the second replica, which has not seen the 60 s token's life.
    advance(&clock, &idp, 1);
    assert_eq!(
        admin(&second).await,
        403,
        "refreshed there without the group"
    );
    assert_eq!(idp.count("refresh"), 2);
    // Half of the second replica's token's life left: due at the first, 35 s after its own
    // refresh.
    advance(&clock, &idp, 35);
    assert_eq!(
        admin(&first).await,
        403,
        "the group the provider dropped does not come back"
    );
    assert_eq!(idp.count("refresh"), 3, "the first replica refreshed again");
    assert_eq!(admin(&second).await, 403);
}

/// A refresh whose request goes away (the client disconnects) still stores the rotated token:
/// the next request is served without presenting the spent one again.
#[tokio::test]
async fn a_refresh_outlives_the_request_that_started_it() {
    let idp = TestIdp::start().await;
    let clock = tollgate::clock::ManualClock::new();
    let gateway = Gateway::start_with_clock(&config(&idp, "memory"), clock.clone()).await;
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    idp.misbehave(Misbehaviour {
        refresh_delay_ms: Some(400),
        ..Default::default()
    });
    advance(&clock, &idp, 250);
    let gone = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(50))
        .build()
        .unwrap()
        .get(gateway.url("/auth"))
        .header("cookie", cookie_header(&browser))
        .send()
        .await;
    assert!(
        gone.is_err(),
        "the first client gave up before the refresh ended"
    );
    let next = browser.get(&gateway.url("/auth")).await;
    assert_eq!(next.status(), 200, "the session lives on");
    assert_eq!(
        idp.count("refresh"),
        1,
        "the spent token was never presented again"
    );
}

/// A refresh token the provider refused is never presented again: a `cookie`-store session
/// keeps its cookie after the refusal (an API call's 401 clears none), and each request with
/// it asked the provider again, with Tollgate's client credentials: anyone could sign in,
/// revoke, and drive the token endpoint until the provider rate-limited the client for every
/// user. Concurrent requests behind the refused one are answered the same way.
#[tokio::test]
async fn a_refused_refresh_token_is_never_presented_again() {
    for store in ["cookie", "memory"] {
        let idp = TestIdp::start().await;
        let clock = tollgate::clock::ManualClock::new();
        let gateway = Gateway::start_with_clock(&config(&idp, store), clock.clone()).await;
        let mut browser = Browser::new();
        crate::support::gateway::signed_in(&mut browser, &gateway).await;
        idp.misbehave(Misbehaviour {
            refresh_fails: true,
            refresh_delay_ms: Some(200),
            ..Default::default()
        });
        advance(&clock, &idp, 250);
        let cookie = cookie_header(&browser);
        let responses = parallel_auth(&gateway, cookie.clone(), 8).await;
        assert!(
            responses.iter().all(|response| response.status() == 401),
            "{store}"
        );
        for _ in 0..5 {
            let response = reqwest::Client::new()
                .get(gateway.url("/auth"))
                .header("cookie", &cookie)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 401, "{store}");
        }
        assert_eq!(
            idp.count("refresh"),
            1,
            "{store}: the refused token went again"
        );
    }
}

/// A reload (a rotated secret file, a SIGHUP) while a refresh is in flight: a request after it
/// waits for that refresh rather than spending the same refresh token again, which the provider
/// answers by refusing one of the two (ending the session) or revoking the grant. Each reload
/// built a new refresher, without the refreshes in flight.
#[tokio::test]
async fn a_reload_while_a_refresh_is_in_flight_refreshes_once() {
    let idp = TestIdp::start().await;
    let clock = tollgate::clock::ManualClock::new();
    let text = config(&idp, "memory");
    let gateway = Gateway::start_with_clock(&text, clock.clone()).await;
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    idp.misbehave(Misbehaviour {
        refresh_delay_ms: Some(800),
        ..Default::default()
    });
    advance(&clock, &idp, 250);
    let first = {
        let (url, cookie) = (gateway.url("/auth"), cookie_header(&browser));
        tokio::spawn(async move {
            reqwest::Client::new()
                .get(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    // The refresh is at the provider now.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let reloaded = tollgate::config::load(&text, &std::collections::BTreeMap::new()).unwrap();
    gateway.app.reload(reloaded).await.unwrap();
    let second = browser.get(&gateway.url("/auth")).await;
    assert_eq!(second.status(), 200);
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(
        idp.count("refresh"),
        1,
        "the refresh token was presented twice"
    );
}

/// The `Set-Cookie` values of `response` that set Tollgate's session cookie.
fn session_set_cookies(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|value| value.to_str().unwrap().to_owned())
        .filter(|cookie| cookie.starts_with("tollgate="))
        .collect()
}

#[tokio::test]
async fn a_cookie_session_refreshed_on_the_way_to_any_answer_gets_its_new_cookie() {
    // Lost, the browser's next request would spend the refresh token the provider rotated
    // away: the provider revokes the grant and the session ends.
    let idp = TestIdp::start().await;
    let clock = tollgate::clock::ManualClock::new();
    let gateway = Gateway::start_with_clock(&config(&idp, "cookie"), clock.clone()).await;
    for (path, status, extra) in [
        ("/userinfo", 200, None),
        ("/auth", 200, None),
        ("/auth?groups=nobody-has-this", 403, None),
        // Another spelling of an injected header: refused after the refresh it needed.
        (
            "/auth?inject-claim=email,X-Auth-Email",
            400,
            Some(("x_auth_email", "ceo@example.com")),
        ),
    ] {
        let mut browser = Browser::new();
        crate::support::gateway::signed_in(&mut browser, &gateway).await;
        let refreshes = idp.count("refresh");
        clock.advance(250);
        idp.advance_clock(250);
        let mut request = reqwest::Client::new()
            .get(gateway.url(path))
            .header("cookie", cookie_header(&browser));
        if let Some((name, value)) = extra {
            request = request.header(name, value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{path}");
        assert_eq!(idp.count("refresh"), refreshes + 1, "{path} refreshed");
        assert_eq!(
            session_set_cookies(&response).len(),
            1,
            "{path}: the refreshed session goes back"
        );
        // In an answer no shared cache stores (Envoy's HTTP filter adds it to the
        // application's answer).
        if path.starts_with("/auth") {
            let cache_control = response.headers().get("cache-control");
            assert!(
                cache_control.is_some_and(|value| value.to_str().unwrap().contains("no-store")),
                "{path}: {cache_control:?}"
            );
        }
    }

    let upstream = TestUpstream::start().await;
    let routes = r#"
[[route]]
path_prefix = "/ops"
upstream = "{upstream}"
provider = "corp"
[route.require]
groups = ["ops"]

[[route]]
path_prefix = "/down"
upstream = "http://127.0.0.1:9"
provider = "corp"

[[route]]
upstream = "{upstream}"
provider = "corp"
"#;
    let config = crate::proxy::proxy_config(&idp, &upstream.url(), routes).replace(
        "[session]\n",
        "[session]\nstore = \"cookie\"\nrefresh_before = \"60s\"\n",
    );
    let gateway = Gateway::start_with_clock(&config, clock.clone()).await;
    // The upstream lets shared caches keep its answer, for nginx's `proxy_cache` too
    // (`X-Accel-Expires`, which nginx reads before `Cache-Control`).
    let cacheable = "/cache-control?cc=public,%20max-age%3D600&h=x-accel-expires:600&h=cdn-cache-control:max-age%3D600";
    for (path, status) in [("/ops/x", 403), ("/down/x", 502), (cacheable, 200)] {
        let mut browser = Browser::new();
        let (landed, _) = browser.follow(&gateway.url("/")).await;
        assert_eq!(landed.status(), 200, "logged in");
        let refreshes = idp.count("refresh");
        clock.advance(250);
        idp.advance_clock(250);
        let response = browser.get(&gateway.url(path)).await;
        assert_eq!(response.status(), status, "{path}");
        assert_eq!(idp.count("refresh"), refreshes + 1, "{path} refreshed");
        assert_eq!(
            session_set_cookies(&response).len(),
            1,
            "{path}: the refreshed session goes back"
        );
        if status == 200 {
            // In an answer no shared cache in front stores, whatever the upstream allowed.
            let headers = response.headers();
            assert_eq!(headers["cache-control"], "private, no-store");
            for name in ["x-accel-expires", "cdn-cache-control"] {
                assert!(!headers.contains_key(name), "{name}: {headers:?}");
            }
        }
    }
}

#[tokio::test]
async fn without_expires_in_the_fresh_id_tokens_exp_says_when_to_refresh() {
    // `expires_in` is optional (RFC 6749 §5.1): without it the session was never refreshed
    // and sent an expired access token upstream until its lifetime ended.
    let idp = TestIdp::start().await;
    idp.misbehave(Misbehaviour {
        no_expires_in: true,
        ..Misbehaviour::default()
    });
    let clock = tollgate::clock::ManualClock::new();
    let gateway = Gateway::start_with_clock(&config(&idp, "memory"), clock.clone()).await;
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    for round in 1..=2 {
        // The ID tokens live 300 s; 250 s later each is within refresh_before.
        clock.advance(250);
        idp.advance_clock(250);
        assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 200);
        assert_eq!(idp.count("refresh"), round, "round {round}");
    }
}

/// A provider whose access tokens live no longer than `refresh_before` (here both 5 minutes):
/// before, every session was due again as soon as it was refreshed, so every request asked the
/// provider. Now a session is due at the latest half-way through its token's life.
#[tokio::test]
async fn tokens_that_live_no_longer_than_refresh_before_are_not_refreshed_at_every_request() {
    let idp = TestIdp::start().await;
    let clock = tollgate::clock::ManualClock::new();
    let text =
        config(&idp, "memory").replace("refresh_before = \"60s\"", "refresh_before = \"5m\"");
    let gateway = Gateway::start_with_clock(&text, clock.clone()).await;
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    let auth = |requests| parallel_auth(&gateway, cookie_header(&browser), requests);
    let all_allowed = |responses: Vec<reqwest::Response>| {
        responses.iter().all(|response| response.status() == 200)
    };
    // Due at once (nothing is known of the session's tokens yet): refreshed once.
    assert!(all_allowed(auth(1).await));
    assert_eq!(idp.count("refresh"), 1);
    assert!(all_allowed(auth(5).await));
    assert_eq!(
        idp.count("refresh"),
        1,
        "not refreshed again while most of its life is left"
    );
    // Past half of the refreshed token's 300 s: due.
    clock.advance(160);
    idp.advance_clock(160);
    assert!(all_allowed(auth(1).await));
    assert_eq!(idp.count("refresh"), 2);
}
