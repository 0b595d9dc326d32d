//! SPEC §9: a provider that fails, hangs or answers too much costs neither the keys nor the
//! sessions Tollgate has, holds no request beyond the provider's `timeout`, and is not asked
//! again by every request.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::support::idp::{JwksFault, Misbehaviour};
use crate::support::{Gateway, TestIdp};
use crate::token_service::get_with_token;

async fn status(gateway: &Gateway, token: &str) -> u16 {
    gateway
        .get("/auth")
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn config(idp: &TestIdp, provider_extra: &str) -> String {
    Gateway::forward_auth_config(idp, "", "").replace(
        "jwks_refetch_interval = \"1h\"\n",
        &format!("{provider_extra}\n"),
    )
}

fn fresh_token(idp: &TestIdp, jti: &str) -> String {
    idp.access_token().claim("jti", json!(jti)).sign()
}

fn advance(clock: &tollgate::clock::ManualClock, idp: &TestIdp, seconds: i64) {
    clock.advance(seconds);
    idp.advance_clock(seconds);
}

#[tokio::test]
async fn a_jwks_answer_without_usable_keys_never_replaces_a_good_key_set() {
    for fault in [JwksFault::Empty, JwksFault::OctOnly] {
        let idp = TestIdp::start().await;
        // The shortest limit, waited out: the unknown `kid` fetches.
        let gateway = Gateway::start(&config(&idp, "jwks_refetch_interval = \"1s\"")).await;
        assert_eq!(status(&gateway, &fresh_token(&idp, "a")).await, 200);
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        idp.misbehave(Misbehaviour {
            jwks_fault: fault,
            ..Default::default()
        });
        let unknown = idp.access_token().kid(Some("unknown")).sign();
        assert_eq!(status(&gateway, &unknown).await, 502, "{fault:?}");
        assert_eq!(idp.count("jwks"), 2, "{fault:?}: the unknown kid fetched");
        assert_eq!(
            status(&gateway, &fresh_token(&idp, "b")).await,
            200,
            "{fault:?}: the good keys are still there"
        );
    }
}

#[tokio::test]
async fn a_failing_jwks_endpoint_is_fetched_at_most_once_per_refetch_interval() {
    // No keys yet and the endpoint fails.
    let idp = TestIdp::start().await;
    let clock = tollgate::clock::ManualClock::new();
    let text = config(&idp, "jwks_refetch_interval = \"10s\"");
    let gateway = Gateway::start_with_clock(&text, clock.clone()).await;
    idp.misbehave(Misbehaviour {
        jwks_fault: JwksFault::Status(500),
        ..Default::default()
    });
    for index in 0..5 {
        assert_eq!(
            status(&gateway, &fresh_token(&idp, &format!("t-{index}"))).await,
            502
        );
    }
    assert_eq!(idp.count("jwks"), 1, "one fetch for five requests");
    advance(&clock, &idp, 10);
    assert_eq!(status(&gateway, &fresh_token(&idp, "later")).await, 502);
    assert_eq!(idp.count("jwks"), 2, "fetched again after the interval");
    idp.misbehave(Misbehaviour::default());
    advance(&clock, &idp, 10);
    assert_eq!(status(&gateway, &fresh_token(&idp, "back")).await, 200);
    assert_eq!(idp.count("jwks"), 3);

    // Good keys past their max-age, then the endpoint fails: the keys are kept and the endpoint
    // is not asked by every request.
    let idp = TestIdp::start().await;
    let clock = tollgate::clock::ManualClock::new();
    let text = config(&idp, "jwks_refetch_interval = \"10s\"");
    let gateway = Gateway::start_with_clock(&text, clock.clone()).await;
    idp.misbehave(Misbehaviour {
        jwks_no_cache: true,
        ..Default::default()
    });
    assert_eq!(status(&gateway, &fresh_token(&idp, "first")).await, 200);
    assert_eq!(idp.count("jwks"), 1);
    idp.misbehave(Misbehaviour {
        jwks_no_cache: true,
        jwks_fault: JwksFault::Status(503),
        ..Default::default()
    });
    for round in 0..2 {
        advance(&clock, &idp, 10);
        for index in 0..5 {
            let token = fresh_token(&idp, &format!("stale-{round}-{index}"));
            assert_eq!(status(&gateway, &token).await, 200, "the keys are kept");
        }
        // The refresh runs on without the request that started it.
        crate::support::redis::wait_until(|| idp.count("jwks") >= 2 + round, "the refresh").await;
        assert_eq!(idp.count("jwks"), 2 + round, "one fetch per interval");
    }
}

#[tokio::test]
async fn a_hanging_jwks_endpoint_holds_no_request_beyond_the_provider_timeout() {
    let idp = TestIdp::start().await;
    let clock = tollgate::clock::ManualClock::new();
    let text = config(&idp, "jwks_refetch_interval = \"10s\"\ntimeout = \"1s\"");
    let gateway = Arc::new(Gateway::start_with_clock(&text, clock.clone()).await);
    assert_eq!(status(&gateway, &fresh_token(&idp, "first")).await, 200);
    // The provider rotates its keys and its JWKS endpoint hangs: new tokens name an unknown kid.
    idp.rotate_keys("rsa-2");
    idp.misbehave(Misbehaviour {
        jwks_fault: JwksFault::Hangs,
        ..Default::default()
    });
    advance(&clock, &idp, 10);
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..4 {
        let gateway = gateway.clone();
        let token = fresh_token(&idp, &format!("new-{index}"));
        tasks.spawn(async move { status(&gateway, &token).await });
    }
    let statuses = tokio::time::timeout(Duration::from_secs(10), async {
        let mut statuses = Vec::new();
        while let Some(status) = tasks.join_next().await {
            statuses.push(status.unwrap());
        }
        statuses
    })
    .await
    .expect("no request queues behind the hanging fetch");
    assert!(
        statuses.iter().all(|status| [401, 502].contains(status)),
        "{statuses:?}"
    );
    assert_eq!(idp.count("jwks"), 2, "the four requests shared one fetch");
    let again = tokio::time::timeout(
        Duration::from_secs(10),
        status(&gateway, &fresh_token(&idp, "again")),
    )
    .await
    .expect("answered without waiting");
    assert_eq!(again, 401);
    assert_eq!(idp.count("jwks"), 2, "rate-limited after the failed fetch");
}

/// A request whose client goes away while the JWKS is fetched for its unknown `kid` neither
/// cancels the fetch nor leaves it unrecorded: before, the fetch ran in the request and was
/// dropped with it, and the next request fetched again, so closing connections made one JWKS
/// fetch per request instead of one per `jwks_refetch_interval`.
#[tokio::test]
async fn requests_that_go_away_mid_fetch_start_no_fetch_of_their_own() {
    let idp = TestIdp::start().await;
    let clock = tollgate::clock::ManualClock::new();
    let text = config(&idp, "jwks_refetch_interval = \"10s\"\ntimeout = \"5s\"");
    let gateway = Gateway::start_with_clock(&text, clock.clone()).await;
    assert_eq!(status(&gateway, &fresh_token(&idp, "first")).await, 200);
    assert_eq!(idp.count("jwks"), 1);
    idp.misbehave(Misbehaviour {
        jwks_fault: JwksFault::Hangs,
        ..Default::default()
    });
    advance(&clock, &idp, 10);
    for index in 0..5 {
        let token = idp
            .access_token()
            .kid(Some("unknown"))
            .claim("jti", json!(format!("gone-{index}")))
            .sign();
        let gone = tokio::time::timeout(Duration::from_millis(300), status(&gateway, &token)).await;
        assert!(
            gone.is_err(),
            "the fetch hangs, so the client gives up first"
        );
    }
    assert_eq!(idp.count("jwks"), 2, "the five requests shared one fetch");
    // The fetch ran on to the provider timeout and was recorded: within the interval, no
    // request fetches again.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let unknown = idp.access_token().kid(Some("unknown")).sign();
    assert_eq!(status(&gateway, &unknown).await, 401);
    assert_eq!(
        idp.count("jwks"),
        2,
        "rate-limited after the recorded fetch"
    );
}

/// The same for discovery: requests that go away while it is under way share the one in
/// flight, which runs on and is recorded without them.
#[tokio::test]
async fn requests_that_go_away_mid_discovery_start_no_discovery_of_their_own() {
    let idp = TestIdp::start().await;
    idp.misbehave(Misbehaviour {
        discovery_hangs: true,
        ..Default::default()
    });
    let gateway = Gateway::start(&config(&idp, "timeout = \"3s\"")).await;
    // The start-up discovery times out, and its failure is past `FIRST_DISCOVERY_RETRY`: the
    // next use discovers again.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let discovered = idp.count("discovery");
    for index in 0..5 {
        let gone = tokio::time::timeout(
            Duration::from_millis(300),
            status(&gateway, &fresh_token(&idp, &format!("gone-{index}"))),
        )
        .await;
        assert!(
            gone.is_err(),
            "discovery hangs, so the client gives up first"
        );
    }
    assert_eq!(
        idp.count("discovery"),
        discovered + 1,
        "the five requests shared one discovery"
    );
}

#[tokio::test]
async fn a_hanging_discovery_holds_no_request_beyond_the_provider_timeout() {
    let idp = TestIdp::start().await;
    idp.misbehave(Misbehaviour {
        discovery_hangs: true,
        ..Default::default()
    });
    let gateway = Arc::new(Gateway::start(&config(&idp, "timeout = \"1s\"")).await);
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..4 {
        let gateway = gateway.clone();
        let token = fresh_token(&idp, &format!("t-{index}"));
        tasks.spawn(async move { status(&gateway, &token).await });
    }
    let statuses = tokio::time::timeout(Duration::from_secs(10), async {
        let mut statuses = Vec::new();
        while let Some(status) = tasks.join_next().await {
            statuses.push(status.unwrap());
        }
        statuses
    })
    .await
    .expect("no request queues behind the hanging discovery");
    assert_eq!(statuses, vec![502; 4]);
    assert_eq!(
        idp.count("discovery"),
        1,
        "the start-up discovery and four requests shared one attempt"
    );
    idp.misbehave(Misbehaviour::default());
    assert_eq!(
        until_answered(&gateway, &idp).await,
        200,
        "discovery is retried on use"
    );
}

/// A discovery document due to be fetched again is fetched in the background: no request
/// waits for a provider that hangs meanwhile, the one that starts the fetch included.
#[tokio::test]
async fn a_discovery_refresh_holds_no_request_while_a_document_is_there() {
    let idp = TestIdp::start().await;
    let clock = tollgate::clock::ManualClock::new();
    let gateway =
        Gateway::start_with_clock(&config(&idp, "timeout = \"30s\""), clock.clone()).await;
    assert_eq!(status(&gateway, &fresh_token(&idp, "first")).await, 200);
    let discovered = idp.count("discovery");
    idp.misbehave(Misbehaviour {
        discovery_hangs: true,
        ..Default::default()
    });
    // Past the document's hour.
    advance(&clock, &idp, 3601);
    for index in 0..3 {
        let answered = tokio::time::timeout(
            Duration::from_secs(10),
            status(&gateway, &fresh_token(&idp, &format!("due-{index}"))),
        )
        .await
        .expect("no request waits for the refresh (the provider's timeout is 30 s)");
        assert_eq!(answered, 200);
    }
    assert_eq!(
        idp.count("discovery"),
        discovered + 1,
        "one refresh was started, and is still under way"
    );
}

/// A request's status once discovery has been retried: it is, at most a second after the
/// last failure.
async fn until_answered(gateway: &Gateway, idp: &TestIdp) -> u16 {
    let mut answer = 502;
    for attempt in 0..40 {
        answer = status(gateway, &fresh_token(idp, &format!("back-{attempt}"))).await;
        if answer != 502 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    answer
}

/// A provider whose discovery fails fast, and never answered one: requests do not each fetch
/// it again back to back (which kept a provider that is down, or coming up, under a stream of
/// fetches); it is tried again a second after a failure, and logins work once it answers.
#[tokio::test]
async fn a_failing_first_discovery_is_not_fetched_again_by_every_request() {
    let idp = TestIdp::start().await;
    idp.misbehave(Misbehaviour {
        discovery_status: Some(503),
        ..Default::default()
    });
    let gateway = Gateway::start(&config(&idp, "")).await;
    let before = idp.count("discovery");
    let started = std::time::Instant::now();
    for index in 0..50 {
        assert_eq!(
            status(&gateway, &fresh_token(&idp, &format!("t-{index}"))).await,
            502
        );
    }
    let fetched = idp.count("discovery") - before;
    // At most one a second, however fast the requests came (one each on the old code).
    let seconds = usize::try_from(started.elapsed().as_secs()).unwrap();
    assert!(
        fetched <= seconds + 1,
        "50 requests in {seconds} s fetched discovery {fetched} times"
    );
    idp.misbehave(Misbehaviour::default());
    assert_eq!(until_answered(&gateway, &idp).await, 200);
}

#[tokio::test]
async fn provider_answers_over_one_mib_are_refused_as_a_provider_failure() {
    // Bearer tokens need the keys (JWKS) and, for opaque tokens, introspection; discovery
    // comes before both.
    for endpoint in ["jwks", "discovery", "introspect"] {
        let idp = TestIdp::start().await;
        let gateway = Gateway::start(&config(
            &idp,
            "introspection = true\njwks_refetch_interval = \"1h\"",
        ))
        .await;
        idp.misbehave(Misbehaviour {
            huge_answer: Some(endpoint),
            ..Default::default()
        });
        let token = if endpoint == "introspect" {
            "opaque-abc".to_owned()
        } else {
            idp.access_token().sign()
        };
        assert_eq!(status(&gateway, &token).await, 502, "{endpoint}");
    }

    // The token endpoint at login: the callback is a 502.
    let idp = TestIdp::start().await;
    let gateway = Gateway::forward_auth(&idp).await;
    idp.misbehave(Misbehaviour {
        huge_answer: Some("token"),
        ..Default::default()
    });
    let mut browser = crate::support::Browser::new();
    let callback = crate::support::gateway::sign_in(&mut browser, &gateway, "/").await;
    assert_eq!(callback.status(), 502);

    // Userinfo at login: too large is the provider's failure, a 502 (never a 500, never the
    // padding in a cookie, never a session).
    let idp = TestIdp::start().await;
    let gateway = Gateway::forward_auth(&idp).await;
    idp.misbehave(Misbehaviour {
        huge_answer: Some("userinfo"),
        ..Default::default()
    });
    let mut browser = crate::support::Browser::new();
    let callback = crate::support::gateway::sign_in(&mut browser, &gateway, "/").await;
    assert_eq!(callback.status(), 502);
    assert!(!browser.cookies.contains_key("tollgate"), "no session");
}

/// With a token service beside the forward-auth provider, a token of that provider while its
/// keys cannot be fetched is not known to be bad: `/validate` and `/userinfo` answer 502, as
/// without a token service (SPEC §9). Before, the token service's refusal ("wrong issuer")
/// made it a 401 `invalid_token`, and the client threw a good token away. A token that says
/// it is the token service's, or neither's, is still refused for what it is.
#[tokio::test]
async fn an_unreachable_provider_beside_a_token_service_is_a_502_not_an_invalid_token() {
    let idp = TestIdp::start().await;
    idp.misbehave(Misbehaviour {
        jwks_fault: JwksFault::Status(500),
        ..Default::default()
    });
    let (gateway, issuer) = beside_a_token_service(&idp, "").await;
    let token = fresh_token(&idp, "while-down");
    for path in ["/validate", "/userinfo"] {
        assert_eq!(get_with_token(&gateway, path, &token).await, 502, "{path}");
    }
    // The token service's own token is its to answer, the provider down or not.
    let (status, tokens) = crate::token_service::token_request(
        &gateway,
        &[("grant_type", "client_credentials")],
        Some(("machine", "machine-secret")),
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    let machine = tokens["access_token"].as_str().unwrap();
    for path in ["/validate", "/userinfo"] {
        assert_eq!(get_with_token(&gateway, path, machine).await, 200, "{path}");
    }
    let own = idp
        .access_token()
        .claim("iss", json!(issuer))
        .claim("jti", json!("own"))
        .sign();
    assert_eq!(
        get_with_token(&gateway, "/validate", &own).await,
        401,
        "the token service's own token, refused"
    );
    // Neither's: a malformed token, and one of another issuer, stay a 4xx (SPEC §9).
    let other = idp
        .access_token()
        .claim("iss", json!("https://elsewhere.example"))
        .sign();
    for token in ["abc".to_owned(), other] {
        assert_eq!(
            get_with_token(&gateway, "/validate", &token).await,
            401,
            "{token}"
        );
    }

    // An opaque token where the provider introspects, while introspection fails: 502; a
    // malformed JWT-shaped one is no opaque token, and stays a 401.
    let idp = TestIdp::start().await;
    let (gateway, _) = beside_a_token_service(&idp, "introspection = true\n").await;
    idp.misbehave(Misbehaviour {
        huge_answer: Some("introspect"),
        ..Default::default()
    });
    for (token, expected) in [("opaque-abc", 502), ("x.y.z", 401)] {
        assert_eq!(
            get_with_token(&gateway, "/validate", token).await,
            expected,
            "{token}"
        );
    }
}

/// A gateway whose forward-auth provider is `idp` (with `provider_extra` in its section),
/// with a token service beside it that has a `client_credentials` client; and its issuer.
async fn beside_a_token_service(idp: &TestIdp, provider_extra: &str) -> (Gateway, String) {
    Gateway::start_at_issuer(|issuer| {
        format!(
            "{}\n[token_service]\nissuer = \"{issuer}\"\n\
             [[token_service.client]]\nclient_id = \"machine\"\n\
             client_secret_hash = \"{hash}\"\ngrants = [\"client_credentials\"]\n",
            Gateway::forward_auth_config(idp, "", "").replace(
                "jwks_refetch_interval",
                &format!("{provider_extra}jwks_refetch_interval")
            ),
            hash = tollgate::hash_password("machine-secret").unwrap(),
        )
    })
    .await
}
