//! SPEC §5 / §9 with a real Redis: replicas share sessions; Cluster and Sentinel; an outage is a
//! 503 (never a pass, never a crash) and service resumes without losing a session.

use crate::support::idp::Misbehaviour;
use crate::support::redis::{RedisCluster, RedisSentinel, RedisServer, available};
use crate::support::{Browser, Gateway, TestIdp};

fn redis_config(idp: &TestIdp, redis_url_toml: &str) -> String {
    Gateway::forward_auth_config(idp, "admin_token = \"admin-token-for-the-tests\"", "").replace(
        "[session]\n",
        &format!("[session]\nstore = \"redis\"\nredis_url = {redis_url_toml}\n"),
    )
}

/// Two Tollgates sharing the Redis at `redis_url_toml`, and a browser signed in at the first.
async fn two_replicas_signed_in(redis_url_toml: &str) -> (TestIdp, Gateway, Gateway, Browser) {
    let idp = TestIdp::start().await;
    let config = redis_config(&idp, redis_url_toml);
    let (first, second) = (Gateway::start(&config).await, Gateway::start(&config).await);
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &first).await;
    (idp, first, second, browser)
}

#[tokio::test]
async fn two_tollgates_sharing_one_redis_serve_each_others_sessions() {
    if !available() {
        return;
    }
    let redis = RedisServer::standalone().await;
    let (_idp, first, second, mut browser) =
        two_replicas_signed_in(&format!("\"{}\"", redis.url())).await;
    assert!(browser.cookies["tollgate"].starts_with("s."));
    assert_eq!(
        browser.get(&second.url("/auth")).await.status(),
        200,
        "the other replica knows the session"
    );
    browser.get(&second.url("/signout")).await;
    let mut thief = Browser::new();
    crate::support::gateway::signed_in(&mut thief, &first).await;
    let copied = thief.cookies.clone();
    thief.get(&first.url("/signout")).await;
    let mut replay = Browser::new();
    replay.cookies = copied;
    assert_eq!(
        replay.get(&second.url("/auth")).await.status(),
        401,
        "logout on one replica ends it on all"
    );
    let ready = reqwest::get(first.admin_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test]
async fn replicas_use_their_tracked_copy_until_redis_says_it_changed() {
    if !available() {
        return;
    }
    let redis = RedisServer::standalone().await;
    let (_idp, first, second, mut browser) =
        two_replicas_signed_in(&format!("\"{}\"", redis.url())).await;
    assert_eq!(browser.get(&second.url("/auth")).await.status(), 200);
    let reads = redis.calls("get");
    for _ in 0..20 {
        assert_eq!(browser.get(&second.url("/auth")).await.status(), 200);
    }
    let more = redis.calls("get") - reads;
    // One more read is allowed: a copy is used for 5 s at most (a slow machine may pass that).
    assert!(more <= 1, "20 requests read the session {more} times");

    // Logout at the other replica: Redis tells the second, before the answer to the second's
    // next command on that connection (the `/readyz` ping).
    let copied = browser.cookies.clone();
    browser.get(&first.url("/signout")).await;
    reqwest::get(second.admin_url("/readyz")).await.unwrap();
    let mut replay = Browser::new();
    replay.cookies = copied;
    assert_eq!(
        replay.get(&second.url("/auth")).await.status(),
        401,
        "a session ended at one replica is not served from another's copy"
    );

    // A change made by anything else, here a flush, is seen the same way.
    let mut other = Browser::new();
    crate::support::gateway::signed_in(&mut other, &first).await;
    assert_eq!(other.get(&second.url("/auth")).await.status(), 200);
    assert_eq!(redis.cli(&["flushall"]).trim(), "OK");
    reqwest::get(second.admin_url("/readyz")).await.unwrap();
    assert_eq!(other.get(&second.url("/auth")).await.status(), 401);
}

#[tokio::test]
async fn without_client_tracking_every_read_goes_to_redis() {
    if !available() {
        return;
    }
    // A user that may not run CLIENT, as some ACLs and managed services have it.
    let redis = RedisServer::with_args(&[
        "--user",
        "tollgate",
        "on",
        ">tollgate-redis-password",
        "~*",
        "&*",
        "+@all",
        "-client",
    ])
    .await;
    let url = format!(
        "\"redis://tollgate:tollgate-redis-password@127.0.0.1:{}\"",
        redis.port
    );
    let (_idp, first, second, mut browser) = two_replicas_signed_in(&url).await;
    assert_eq!(browser.get(&second.url("/auth")).await.status(), 200);
    let reads = redis.calls("get");
    for _ in 0..5 {
        assert_eq!(browser.get(&second.url("/auth")).await.status(), 200);
    }
    assert!(
        redis.calls("get") - reads >= 5,
        "no copies are kept untracked"
    );
    let copied = browser.cookies.clone();
    browser.get(&first.url("/signout")).await;
    let mut replay = Browser::new();
    replay.cookies = copied;
    assert_eq!(replay.get(&second.url("/auth")).await.status(), 401);
}

#[tokio::test]
async fn a_redis_outage_is_a_503_and_service_resumes_without_losing_sessions() {
    if !available() {
        return;
    }
    let mut redis = RedisServer::standalone().await;
    let idp = TestIdp::start().await;
    let gateway = Gateway::start(&redis_config(&idp, &format!("\"{}\"", redis.url()))).await;
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 200);

    redis.kill();
    for _ in 0..3 {
        assert_eq!(
            browser.get(&gateway.url("/auth")).await.status(),
            503,
            "no pass, no crash while Redis is down"
        );
    }
    assert_eq!(
        browser.get(&gateway.url("/userinfo")).await.status(),
        503,
        "not a 401 that sends the user to sign in again"
    );
    assert_eq!(
        browser
            .get_with(
                &gateway.url("/userinfo"),
                &[("authorization", "Basic dXNlcjpwYXNz")]
            )
            .await
            .status(),
        503,
        "an outer Basic authorization is no token of the caller's"
    );
    let mut newcomer = Browser::new();
    assert_eq!(
        newcomer.get(&gateway.url("/auth")).await.status(),
        401,
        "requests without a session need no store"
    );
    let ready = reqwest::get(gateway.admin_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.unwrap().contains("session store"));
    let metrics = gateway.metrics().await;
    let errors: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("tollgate_session_store_errors_total "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap();
    assert!(errors >= 3, "store errors are counted: {errors}");

    redis.start().await;
    let mut status = 0;
    for _ in 0..50 {
        status = browser.get(&gateway.url("/auth")).await.status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        status, 200,
        "the session survived and service resumed by itself"
    );

    gateway.stop().await;
    let restarted = Gateway::start(&redis_config(&idp, &format!("\"{}\"", redis.url()))).await;
    assert_eq!(
        browser.get(&restarted.url("/auth")).await.status(),
        200,
        "a Tollgate restart loses nothing"
    );
}

#[tokio::test]
async fn sessions_in_a_redis_cluster() {
    if !available() {
        return;
    }
    let cluster = RedisCluster::start().await;
    let idp = TestIdp::start().await;
    let config = redis_config(&idp, &cluster.urls_toml());
    let (first, second) = (Gateway::start(&config).await, Gateway::start(&config).await);
    let mut browsers = Vec::new();
    for _ in 0..4 {
        let mut browser = Browser::new();
        crate::support::gateway::signed_in(&mut browser, &first).await;
        assert_eq!(browser.get(&second.url("/auth")).await.status(), 200);
        browsers.push(browser);
    }
    let ended: serde_json::Value = reqwest::Client::new()
        .delete(second.admin_url("/admin/sessions?sub=alice"))
        .bearer_auth("admin-token-for-the-tests")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ended["ended"], 4);
    for browser in &mut browsers {
        assert_eq!(browser.get(&first.url("/auth")).await.status(), 401);
    }
    // The deletes were confirmed without waiting for replicas these shards do not have (a
    // `WAIT 1` there blocks for its whole timeout).
    let waits: u64 = cluster.nodes.iter().map(|node| node.calls("wait")).sum();
    assert_eq!(waits, 0);
}

#[tokio::test]
async fn sessions_through_a_redis_sentinel() {
    if !available() {
        return;
    }
    let sentinel = RedisSentinel::start().await;
    let (idp, first, second, mut browser) =
        two_replicas_signed_in(&format!("\"{}\"", sentinel.url())).await;
    assert_eq!(browser.get(&second.url("/auth")).await.status(), 200);
    let token = idp.logout_token().sign();
    assert_eq!(second.backchannel_logout(&token).await.status(), 200);
    assert_eq!(
        browser.get(&first.url("/auth")).await.status(),
        401,
        "back-channel logout ended it in Redis"
    );
    let _ = &sentinel.master;
}

/// A browser signed in through Tollgate on Redis, with Tollgate's and the provider's clocks
/// 250 s on: the access token (300 s) is within `refresh_before`, and the refresh's ID token
/// names the provider session `provider-session-2`.
struct DueForRefresh {
    _redis: RedisServer,
    idp: TestIdp,
    gateway: Gateway,
    browser: Browser,
}

async fn due_for_a_refresh_naming_another_provider_session() -> DueForRefresh {
    let redis = RedisServer::standalone().await;
    let idp = TestIdp::start().await;
    idp.misbehave(Misbehaviour {
        refreshed_sid: Some("provider-session-2"),
        ..Misbehaviour::default()
    });
    let config = redis_config(&idp, &format!("\"{}\"", redis.url()))
        .replace("[session]\n", "[session]\nrefresh_before = \"60s\"\n");
    let clock = tollgate::clock::ManualClock::new();
    let gateway = Gateway::start_with_clock(&config, clock.clone()).await;
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    clock.advance(250);
    idp.advance_clock(250);
    DueForRefresh {
        _redis: redis,
        idp,
        gateway,
        browser,
    }
}

/// A provider may name another provider session (`sid`) in the ID token of a refresh: a
/// back-channel logout naming that one must end the session. Redis finds sessions by `sid`
/// through an index set, which only the login used to write.
#[tokio::test]
async fn a_backchannel_logout_finds_a_session_by_the_sid_of_its_refreshed_id_token() {
    if !available() {
        return;
    }
    // Every part is bound: one left to `..` would be dropped (Redis stopped) right here.
    let DueForRefresh {
        _redis,
        idp,
        gateway,
        mut browser,
    } = due_for_a_refresh_naming_another_provider_session().await;
    assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 200);
    assert_eq!(idp.count("refresh"), 1);
    let token = idp
        .logout_token()
        .claim("sid", serde_json::json!("provider-session-2"))
        .sign();
    assert_eq!(gateway.backchannel_logout(&token).await.status(), 200);
    assert_eq!(
        browser.get(&gateway.url("/auth")).await.status(),
        401,
        "the logout of the provider session the refresh named ended it"
    );
}

/// The other order: the back-channel logout of the provider session comes while the refresh
/// that names it is on its way (its scan finds no session of that `sid` yet; the refreshed ID
/// token was issued before the provider ended its session). The refresh's write then meets
/// the logout's mark and ends the session, on every replica, rather than leaving it to live
/// out its lifetime.
#[tokio::test]
async fn a_refresh_that_names_a_provider_session_ended_meanwhile_ends_the_session() {
    if !available() {
        return;
    }
    // Every part is bound: one left to `..` would be dropped (Redis stopped) right here.
    let DueForRefresh {
        _redis,
        idp,
        gateway,
        mut browser,
    } = due_for_a_refresh_naming_another_provider_session().await;
    // The provider ended provider-session-2 30 s after it issues the refreshed ID token
    // (within leeway).
    let token = idp
        .logout_token()
        .claim("sid", serde_json::json!("provider-session-2"))
        .claim("iat", serde_json::json!(crate::support::idp::now() + 280))
        .sign();
    assert_eq!(gateway.backchannel_logout(&token).await.status(), 200);
    assert_eq!(
        browser.get(&gateway.url("/auth")).await.status(),
        401,
        "the refreshed session names a provider session that ended"
    );
    assert_eq!(idp.count("refresh"), 1);
    assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 401);
}

#[tokio::test]
async fn redis_over_tls_with_a_password() {
    if !available() {
        return;
    }
    let (redis, ca) = RedisServer::tls_with_password("redis-secret-password").await;
    let idp = TestIdp::start().await;
    let url = format!(
        "\"rediss://:redis-secret-password@127.0.0.1:{}\"\nredis_ca_file = \"{}\"",
        redis.port,
        ca.display()
    );
    let gateway = Gateway::start(&redis_config(&idp, &url)).await;
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 200);
    assert_eq!(
        reqwest::get(gateway.admin_url("/readyz"))
            .await
            .unwrap()
            .status(),
        200
    );

    let wrong = format!(
        "\"rediss://:not-the-password@127.0.0.1:{}\"\nredis_ca_file = \"{}\"",
        redis.port,
        ca.display()
    );
    let refused = Gateway::start(&redis_config(&idp, &wrong)).await;
    assert_eq!(
        reqwest::get(refused.admin_url("/readyz"))
            .await
            .unwrap()
            .status(),
        503
    );
    let untrusted = Gateway::start(&redis_config(
        &idp,
        &format!(
            "\"rediss://:redis-secret-password@127.0.0.1:{}\"",
            redis.port
        ),
    ))
    .await;
    assert_eq!(
        reqwest::get(untrusted.admin_url("/readyz"))
            .await
            .unwrap()
            .status(),
        503,
        "the test CA is not trusted without redis_ca_file"
    );
}

/// `redis_ca_file` with Sentinels over TLS: the sentinels and the master they name are
/// verified against the file (the test CA is not among the system's roots), for the session
/// link and the crate's link of confirmed writes (the logout) alike; without the file, neither
/// is trusted. Before, a CA file with a Sentinel URL was refused by `tollgate check`.
#[tokio::test]
async fn sentinels_over_tls_trust_the_redis_ca_file() {
    if !available() {
        return;
    }
    let password = "sentinel-ca-file-password";
    let (set, ca) = RedisSentinel::tls_with_password(password).await;
    let url = format!(
        "\"rediss+sentinel://:{password}@127.0.0.1:{}/mymaster\"",
        set.sentinel.port
    );
    let idp = TestIdp::start().await;
    let with_file = format!("{url}\nredis_ca_file = \"{}\"", ca.display());
    let gateway = Gateway::start(&redis_config(&idp, &with_file)).await;
    let ready = |gateway: &Gateway| {
        let url = gateway.admin_url("/readyz");
        async move { reqwest::get(url).await.unwrap().status() }
    };
    assert_eq!(ready(&gateway).await, 200);
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 200);
    assert_eq!(
        browser.get(&gateway.url("/signout")).await.status(),
        302,
        "the confirmed delete went through the master"
    );
    assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 401);

    let untrusted = Gateway::start(&redis_config(&idp, &url)).await;
    assert_eq!(
        ready(&untrusted).await,
        503,
        "the test CA is not trusted without redis_ca_file"
    );
}

/// SPEC §12: a back-channel logout that could not be recorded is answered 5xx, and the
/// provider's retry of the same token is carried out — not refused as a replay.
#[tokio::test]
async fn a_backchannel_logout_that_met_a_redis_outage_is_carried_out_on_retry() {
    if !available() {
        return;
    }
    let mut redis = RedisServer::standalone().await;
    let idp = TestIdp::start().await;
    let gateway = Gateway::start(&redis_config(&idp, &format!("\"{}\"", redis.url()))).await;
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 200);
    let token = idp.logout_token().sign();
    let post = || gateway.backchannel_logout(&token);
    redis.kill();
    assert_eq!(post().await.status(), 503, "not recorded: 5xx");
    redis.start().await;
    let mut status = 0;
    for _ in 0..50 {
        status = post().await.status().as_u16();
        if status != 503 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        status, 200,
        "the retry is carried out, not refused as a replay"
    );
    assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 401);
    assert_eq!(post().await.status(), 400, "and only then a replay");
}

/// SPEC §3: `redis+sentinel://:PASSWORD@host:port/service/db` — the password is the
/// master's (and the sentinel's, when it wants one), and sessions land in that database.
#[tokio::test]
async fn sessions_through_a_sentinel_with_a_password_and_a_database() {
    for sentinel_too in [false, true] {
        let sentinel = RedisSentinel::start_with(Some("s3cr%t,pw"), sentinel_too).await;
        let url = format!(
            "\"redis+sentinel://:s3cr%25t%2Cpw@127.0.0.1:{}/mymaster/2\"",
            sentinel.sentinel.port
        );
        let (_idp, _first, second, mut browser) = two_replicas_signed_in(&url).await;
        assert_eq!(
            browser.get(&second.url("/auth")).await.status(),
            200,
            "sentinel requires a password too: {sentinel_too}"
        );
        let keys = sentinel.master.cli(&["-n", "2", "dbsize"]);
        assert!(
            keys.trim().parse::<u64>().unwrap() > 0,
            "sessions are in database 2: {keys}"
        );
        assert_eq!(sentinel.master.cli(&["-n", "0", "dbsize"]).trim(), "0");
    }
}

/// The sessions the admin API of `gateway` lists.
async fn listed(gateway: &Gateway) -> usize {
    let list: Vec<serde_json::Value> = gateway
        .admin_get("/admin/sessions")
        .bearer_auth("admin-token-for-the-tests")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    list.len()
}

/// Every key in `redis` (`SCAN`).
fn keys(redis: &RedisServer) -> Vec<String> {
    redis
        .cli(&["--scan"])
        .lines()
        .map(str::to_owned)
        .filter(|key| !key.is_empty())
        .collect()
}

/// SPEC §3 / §12: every key starts with `session.redis_key_prefix`, so two deployments on one
/// Redis do not see each other's sessions.
#[tokio::test]
async fn deployments_with_their_own_key_prefix_share_one_redis_without_seeing_each_other() {
    if !available() {
        return;
    }
    let redis = RedisServer::standalone().await;
    let idp = TestIdp::start().await;
    let config = |prefix: &str| {
        redis_config(
            &idp,
            &format!("\"{}\"\nredis_key_prefix = \"{prefix}\"", redis.url()),
        )
    };
    let blue = Gateway::start(&config("blue:")).await;
    let green = Gateway::start(&config("green/")).await;
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &blue).await;
    assert_eq!(browser.get(&blue.url("/auth")).await.status(), 200);
    let written = keys(&redis);
    assert!(written.len() >= 2, "a session and its index: {written:?}");
    assert!(
        written.iter().all(|key| key.starts_with("blue:")),
        "{written:?}"
    );
    assert_eq!(
        browser.get(&green.url("/auth")).await.status(),
        401,
        "the other deployment does not know the session"
    );
    assert_eq!((listed(&blue).await, listed(&green).await), (1, 0));

    let mut other = Browser::new();
    crate::support::gateway::signed_in(&mut other, &green).await;
    assert_eq!((listed(&blue).await, listed(&green).await), (1, 1));
    let written = keys(&redis);
    assert!(
        written
            .iter()
            .all(|key| key.starts_with("blue:") || key.starts_with("green/")),
        "{written:?}"
    );
    assert!(written.iter().any(|key| key.starts_with("green/")));
}

/// SPEC §12: nothing grows without bound — the index sets expire with the sessions they hold.
#[tokio::test]
async fn index_sets_expire_with_their_sessions() {
    if !available() {
        return;
    }
    let redis = RedisServer::standalone().await;
    let idp = TestIdp::start().await;
    let config = redis_config(&idp, &format!("\"{}\"\nlifetime = \"2s\"", redis.url()));
    let gateway = Gateway::start(&config).await;
    for _ in 0..2 {
        let mut browser = Browser::new();
        crate::support::gateway::signed_in(&mut browser, &gateway).await;
    }
    let written = keys(&redis);
    assert!(
        written.iter().any(|key| key == "tollgate:all")
            && written.iter().any(|key| key.starts_with("tollgate:sub:")),
        "{written:?}"
    );
    let mut left = written;
    for _ in 0..100 {
        left = keys(&redis);
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(left.is_empty(), "keys that never expire: {left:?}");
}

/// SPEC §12: an index holds the sessions begun within one lifetime, not every session ever
/// begun while logins go on (its own expiry keeps moving later then).
#[tokio::test]
async fn an_index_drops_the_sessions_whose_lifetime_ended() {
    if !available() {
        return;
    }
    let redis = RedisServer::standalone().await;
    // An index an older Tollgate kept as a plain set, holding a session long gone.
    redis.cli(&["sadd", "tollgate:all", "gone"]);
    redis.cli(&["expire", "tollgate:all", "30"]);
    let idp = TestIdp::start().await;
    let config = redis_config(&idp, &format!("\"{}\"\nlifetime = \"60s\"", redis.url()));
    let clock = tollgate::clock::ManualClock::new();
    let gateway = Gateway::start_with_clock(&config, clock.clone()).await;
    let members = |key: &str| -> Vec<String> {
        let mut members: Vec<String> = redis
            .cli(&["zrange", key, "0", "-1"])
            .lines()
            .map(str::to_owned)
            .filter(|line| !line.is_empty())
            .collect();
        members.sort();
        members
    };
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    assert_eq!(redis.cli(&["type", "tollgate:all"]).trim(), "zset");
    let first = members("tollgate:all");
    assert_eq!(first.len(), 2, "the old set's member kept: {first:?}");
    assert!(first.contains(&"gone".to_owned()));
    let sub_index = keys(&redis)
        .into_iter()
        .find(|key| key.starts_with("tollgate:sub:"))
        .unwrap();
    // A lifetime later, the next login's add drops both the first session and the old member.
    clock.advance(61);
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    let second = members("tollgate:all");
    assert_eq!(second.len(), 1, "{second:?}");
    assert!(
        !first.contains(&second[0]),
        "only the new session: {second:?}"
    );
    assert_eq!(members(&sub_index), second);
}

/// What `redis` holds under `key`: a string's value or a set's members.
fn value(redis: &RedisServer, key: &str) -> String {
    match redis.cli(&["type", key]).trim() {
        "string" => redis.cli(&["get", key]),
        "set" => redis.cli(&["smembers", key]),
        "zset" => redis.cli(&["zrange", key, "0", "-1"]),
        other => panic!("{key} is a {other}"),
    }
}

/// SPEC §12: session values are sealed with the session secret before they reach Redis, and a
/// value sealed with a secret that is still listed opens after rotation.
#[tokio::test]
async fn no_token_is_readable_in_redis_and_rotated_secrets_still_open_sessions() {
    if !available() {
        return;
    }
    let redis = RedisServer::standalone().await;
    let idp = TestIdp::start().await;
    let config = redis_config(&idp, &format!("\"{}\"", redis.url()));
    let gateway = Gateway::start(&config).await;
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    let (access_token, refresh_token) = idp.last_tokens().unwrap();
    let written = keys(&redis);
    assert!(written.iter().any(|key| key.starts_with("tollgate:s:")));
    for key in &written {
        let value = value(&redis, key);
        assert!(!value.is_empty(), "{key}");
        assert!(!value.contains(&access_token), "access token in {key}");
        assert!(!value.contains(&refresh_token), "refresh token in {key}");
        assert!(!value.contains("alice@example.com"), "claims in {key}");
    }

    let rotated = Gateway::start(&config.replace(
        "secrets = [\"",
        "secrets = [\"a-newer-session-secret-of-32-characters-or-more\", \"",
    ))
    .await;
    assert_eq!(
        browser.get(&rotated.url("/auth")).await.status(),
        200,
        "sealed with the old secret, opened with it after rotation"
    );
    let only_new = Gateway::start(&config.replace(
        "secrets = [\"",
        "secrets = [\"a-newer-session-secret-of-32-characters-or-more\"] #",
    ))
    .await;
    assert_eq!(
        browser.get(&only_new.url("/auth")).await.status(),
        401,
        "a secret no longer listed opens neither the cookie nor the value"
    );
}

/// SPEC §12: a logout is answered as done only once Redis confirmed the delete; a failed one is
/// a 503 that leaves the session (and the cookie) as it was, so the user can retry.
#[tokio::test]
async fn a_logout_redis_did_not_confirm_is_a_503_and_the_session_is_still_valid_afterwards() {
    if !available() {
        return;
    }
    let mut redis = RedisServer::standalone().await;
    let idp = TestIdp::start().await;
    let gateway = Gateway::start(&redis_config(&idp, &format!("\"{}\"", redis.url()))).await;
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    let copied = browser.cookies.clone();
    redis.kill();
    let signout = browser.get(&gateway.url("/signout")).await;
    assert_eq!(signout.status(), 503, "not answered as done");
    assert!(signout.headers().get("set-cookie").is_none());
    redis.start().await;
    let mut replay = Browser::new();
    replay.cookies = copied;
    let mut status = 0;
    for _ in 0..50 {
        status = replay.get(&gateway.url("/auth")).await.status().as_u16();
        if status != 503 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        status, 200,
        "the logout did not happen, and was not said to"
    );
    assert_eq!(browser.get(&gateway.url("/signout")).await.status(), 302);
    assert_eq!(replay.get(&gateway.url("/auth")).await.status(), 401);
}

/// SPEC §12: where the master has a replica, a logout, an admin delete and a back-channel
/// logout are done only once a replica acknowledged them (`WAIT`); a replica that is connected
/// but acknowledges nothing makes them 503.
#[tokio::test]
async fn security_deletes_wait_for_a_replica_when_the_master_has_one() {
    if !available() {
        return;
    }
    let master = RedisServer::standalone().await;
    let replica = RedisServer::replica_of(&master).await;
    let idp = TestIdp::start().await;
    let gateway = Gateway::start(&redis_config(&idp, &format!("\"{}\"", master.url()))).await;
    let admin_delete = || {
        reqwest::Client::new()
            .delete(gateway.admin_url("/admin/sessions?sub=alice"))
            .bearer_auth("admin-token-for-the-tests")
            .send()
    };

    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    let copied = browser.cookies.clone();
    let waits = master.calls("wait");
    assert_eq!(browser.get(&gateway.url("/signout")).await.status(), 302);
    assert!(
        master.calls("wait") > waits,
        "the delete was confirmed with WAIT"
    );
    let mut replay = Browser::new();
    replay.cookies = copied;
    assert_eq!(replay.get(&gateway.url("/auth")).await.status(), 401);
    assert_eq!(
        replica.cli(&["--scan", "--pattern", "tollgate:s:*"]).trim(),
        "",
        "the replica has no session left"
    );

    // The master applies a delete before WAIT is asked, and WAIT then sees no replica
    // acknowledge it: 503, and a retry, which finds the session gone from the master, is done
    // only once a replica has the delete.
    // (A sign-in is confirmed too, its index entries: signed in first.)
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    replica.pause();
    assert_eq!(browser.get(&gateway.url("/signout")).await.status(), 503);
    assert_eq!(browser.get(&gateway.url("/signout")).await.status(), 503);
    replica.resume();
    assert_eq!(browser.get(&gateway.url("/signout")).await.status(), 302);

    crate::support::gateway::signed_in(&mut Browser::new(), &gateway).await;
    replica.pause();
    assert_eq!(admin_delete().await.unwrap().status(), 503);
    assert_eq!(admin_delete().await.unwrap().status(), 503);
    replica.resume();
    assert_eq!(admin_delete().await.unwrap().status(), 200);

    let mut other = Browser::new();
    crate::support::gateway::signed_in(&mut other, &gateway).await;
    let token = idp.logout_token().sign();
    replica.pause();
    assert_eq!(gateway.backchannel_logout(&token).await.status(), 503);
    assert_eq!(gateway.backchannel_logout(&token).await.status(), 503);
    replica.resume();
    assert_eq!(gateway.backchannel_logout(&token).await.status(), 200);
    assert_eq!(other.get(&gateway.url("/auth")).await.status(), 401);
    assert_eq!(
        gateway.backchannel_logout(&token).await.status(),
        400,
        "a replay"
    );
    // Each 503 was counted once, as its surface's store_unavailable; the replay as bad_request.
    let metrics = gateway.metrics().await;
    for series in [
        "tollgate_requests_total{role=\"admin\",result=\"store_unavailable\"} 2",
        "tollgate_requests_total{role=\"backchannel_logout\",result=\"store_unavailable\"} 2",
        "tollgate_requests_total{role=\"backchannel_logout\",result=\"bad_request\"} 1",
    ] {
        assert!(metrics.contains(series), "{series} in\n{metrics}");
    }

    // A logout token whose sessions have all ended: the record of its `jti`, which alone keeps
    // it from being used again, is its one write, and waits for a replica as well (a record the
    // master alone held was lost in a failover). The retry then finds no replay.
    let late = idp.logout_token().sign();
    replica.pause();
    assert_eq!(gateway.backchannel_logout(&late).await.status(), 503);
    replica.resume();
    assert_eq!(gateway.backchannel_logout(&late).await.status(), 200);
    assert_eq!(gateway.backchannel_logout(&late).await.status(), 400);
}

/// SPEC §12: an admin delete that no replica acknowledged (503) is not answered as done by its
/// retry until one has: not by a delete of the same handle, which finds the session gone from
/// the master (it answered 404, also after another handle's delete dropped the gone id), nor by
/// a delete of the user's sessions after a listing (the listing dropped the gone id from the
/// user's index, and the retry answered `ended: 0`).
#[tokio::test]
async fn security_an_admin_delete_no_replica_acknowledged_is_not_done_by_its_retry() {
    if !available() {
        return;
    }
    let master = RedisServer::standalone().await;
    let replica = RedisServer::replica_of(&master).await;
    let idp = TestIdp::start().await;
    let gateway = Gateway::start(&redis_config(&idp, &format!("\"{}\"", master.url()))).await;
    let admin = |method: reqwest::Method, path: &str| {
        reqwest::Client::new()
            .request(method, gateway.admin_url(path))
            .bearer_auth("admin-token-for-the-tests")
            .send()
    };
    let status = |response: reqwest::Result<reqwest::Response>| response.unwrap().status();
    let mut first = Browser::new();
    crate::support::gateway::signed_in(&mut first, &gateway).await;
    replica.pause();
    assert_eq!(
        status(admin(reqwest::Method::DELETE, "/admin/sessions?sub=alice").await),
        503
    );
    let listed: Vec<serde_json::Value> = admin(reqwest::Method::GET, "/admin/sessions?sub=alice")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(listed.is_empty(), "gone from the master: {listed:?}");
    assert_eq!(
        status(admin(reqwest::Method::DELETE, "/admin/sessions?sub=alice").await),
        503,
        "after a listing, the retry of a user's delete still waits for a replica"
    );
    replica.resume();
    assert_eq!(
        status(admin(reqwest::Method::DELETE, "/admin/sessions?sub=alice").await),
        200
    );
    assert_eq!(first.get(&gateway.url("/auth")).await.status(), 401);

    let mut second = Browser::new();
    crate::support::gateway::signed_in(&mut second, &gateway).await;
    let listed: Vec<serde_json::Value> = admin(reqwest::Method::GET, "/admin/sessions?sub=alice")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    let by_handle = format!("/admin/sessions/{}", listed[0]["handle"].as_str().unwrap());
    replica.pause();
    assert_eq!(
        status(admin(reqwest::Method::DELETE, &by_handle).await),
        503
    );
    // A delete of another handle in between leaves this one's gone id where its retry looks.
    assert_eq!(
        status(admin(reqwest::Method::DELETE, "/admin/sessions/0123456789abcdef").await),
        404
    );
    assert_eq!(
        status(admin(reqwest::Method::DELETE, &by_handle).await),
        503,
        "the retry of a delete by handle waits for a replica"
    );
    replica.resume();
    assert_eq!(
        status(admin(reqwest::Method::DELETE, &by_handle).await),
        204,
        "the retry, acknowledged, ended the session the handle names"
    );
    assert_eq!(
        status(admin(reqwest::Method::DELETE, &by_handle).await),
        404
    );
    assert_eq!(second.get(&gateway.url("/auth")).await.status(), 401);
    assert_eq!(
        replica.cli(&["--scan", "--pattern", "tollgate:s:*"]).trim(),
        "",
        "the replica has no session left"
    );
}

/// SPEC §12: with sessions in Redis a logout token's `jti` is refused on every replica once
/// used, and one whose logout met a Redis failure (503) is carried out when the provider
/// retries it at another replica.
#[tokio::test]
async fn a_logout_token_used_at_one_replica_is_refused_at_every_other() {
    if !available() {
        return;
    }
    let mut redis = RedisServer::standalone().await;
    let (idp, first, second, mut browser) =
        two_replicas_signed_in(&format!("\"{}\"", redis.url())).await;
    let token = idp.logout_token().sign();
    assert_eq!(first.backchannel_logout(&token).await.status(), 200);
    assert_eq!(browser.get(&second.url("/auth")).await.status(), 401);
    assert_eq!(
        second.backchannel_logout(&token).await.status(),
        400,
        "a replay at another replica"
    );

    // A sign-in after that logout (the test provider names every session alike) is a new one.
    idp.advance_clock(2);
    crate::support::gateway::signed_in(&mut browser, &first).await;
    let retried = idp.logout_token().sign();
    redis.kill();
    assert_eq!(first.backchannel_logout(&retried).await.status(), 503);
    redis.start().await;
    let mut status = 0;
    for _ in 0..50 {
        status = second.backchannel_logout(&retried).await.status().as_u16();
        if status != 503 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "the retry at another replica is carried out");
    assert_eq!(browser.get(&first.url("/auth")).await.status(), 401);
    assert_eq!(first.backchannel_logout(&retried).await.status(), 400);
}

/// Issue 12: one Cluster shard's master dies. While its replica takes over, sessions on the
/// other shards are served and no session is ever answered as absent (a 401); once the
/// replica took over, every session is served again by the same Tollgate, without a restart.
#[tokio::test]
async fn a_cluster_shard_failover_stalls_only_that_shard_and_loses_no_session() {
    let mut cluster = RedisCluster::start_with_replicas(1).await;
    let idp = TestIdp::start().await;
    let gateway = Gateway::start(&redis_config(&idp, &cluster.urls_toml())).await;
    let mut browsers = Vec::new();
    for _ in 0..12 {
        let mut browser = Browser::new();
        crate::support::gateway::signed_in(&mut browser, &gateway).await;
        browsers.push(browser);
    }
    crate::support::redis::wait_until(|| cluster.replicas_caught_up(), "the replicas").await;
    // Tollgate's connections to the healthy masters, by client id: every client but replicas
    // (flag S) and this `redis-cli` itself.
    let connections = |cluster: &RedisCluster| -> Vec<String> {
        cluster.nodes[1..3]
            .iter()
            .flat_map(|node| {
                node.cli(&["client", "list"])
                    .lines()
                    .filter(|line| !line.contains("cmd=client|list") && !line.contains(" flags=S"))
                    .filter_map(|line| line.split(' ').next().map(str::to_owned))
                    .map(|id| format!("{}:{id}", node.port))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let before = connections(&cluster);
    cluster.kill_master(0);
    let mut during = Vec::new();
    for browser in &mut browsers {
        during.push(browser.get(&gateway.url("/auth")).await.status().as_u16());
    }
    assert!(
        during.iter().all(|status| matches!(status, 200 | 503)),
        "a failing shard is unavailable, never a missing session: {during:?}"
    );
    assert!(
        during.contains(&200),
        "the other shards are served meanwhile: {during:?}"
    );
    crate::support::redis::wait_until(|| cluster.is_ok(), "the failover").await;
    let mut after = Vec::new();
    for _ in 0..100 {
        after.clear();
        for browser in &mut browsers {
            after.push(browser.get(&gateway.url("/auth")).await.status().as_u16());
        }
        assert!(
            after.iter().all(|status| matches!(status, 200 | 503)),
            "{after:?}"
        );
        if after.iter().all(|status| *status == 200) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        after.iter().all(|status| *status == 200),
        "every session is served after the failover: {after:?}"
    );
    let kept = connections(&cluster);
    assert!(
        !before.is_empty() && before.iter().all(|id| kept.contains(id)),
        "the healthy shards' connections were kept through the failover: {before:?} → {kept:?}"
    );
}

/// Issue 12: after a Sentinel failover the old master is still up and still takes writes
/// until the sentinels demote it, and what it took is lost then. Tollgate follows the
/// sentinels: soon after they name the new master, new sessions are written there.
#[tokio::test]
async fn after_a_sentinel_failover_sessions_are_written_to_the_new_master() {
    let sentinel = RedisSentinel::start_with_replica().await;
    let (idp, gateway, _second, _browser) =
        two_replicas_signed_in(&format!("\"{}\"", sentinel.url())).await;
    let replica = sentinel.replica.as_ref().unwrap();
    // A sentinel that has not yet judged the replica fit refuses the failover (`NOGOODSLAVE`)
    // and does nothing: asked again every twentieth look until the replica is the master.
    let mut looks = 0;
    crate::support::redis::wait_until(
        || {
            if sentinel.master_port() == Some(replica.port) {
                return true;
            }
            if looks % 20 == 0 {
                sentinel.sentinel.cli(&["sentinel", "failover", "mymaster"]);
            }
            looks += 1;
            false
        },
        "the sentinel to name the new master",
    )
    .await;
    let keys = || {
        replica
            .cli(&["dbsize"])
            .trim()
            .parse::<u64>()
            .unwrap_or_default()
    };
    let mut written_to_new_master = false;
    for _ in 0..100 {
        let before = keys();
        let mut browser = Browser::new();
        // A sign-in is confirmed (its index entries): until the old master follows the new
        // one as its replica, or the sentinels see it down, the new master confirms nothing
        // alone and the sign-in is a 503.
        let signed_in = crate::support::gateway::sign_in(&mut browser, &gateway, "/").await;
        if signed_in.status() == 302 && keys() > before {
            written_to_new_master = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        written_to_new_master,
        "new sessions go to the master the sentinels name"
    );
    let _ = idp;
}

/// A confirmed write (a logout, a refresh's compare-and-set, a refresh lease) into a Cluster
/// slot being migrated is answered by the node Redis redirects it to (`ASK`), so the replica
/// that must acknowledge it is that node's. Its `WAIT` used to go on its own to the slot's
/// old master, whose replica had acknowledged everything written there: a write the new
/// node's replica never received was confirmed.
#[tokio::test]
async fn a_confirmed_write_redirected_in_a_slot_migration_waits_for_the_new_nodes_replica() {
    use tollgate::redis_connection::{RedisConnection, RedisTarget};
    if !available() {
        return;
    }
    let cluster = RedisCluster::start_with_replicas(1).await;
    let slot: u16 = cluster.nodes[0]
        .cli(&["cluster", "keyslot", "{migrating}"])
        .trim()
        .parse()
        .unwrap();
    let source = cluster.master_of(slot);
    let target = (0..3).find(|&index| index != source).unwrap();
    let target_replica = cluster.replica_of(target);
    let (source_id, target_id) = (cluster.node_id(source), cluster.node_id(target));
    let slot = slot.to_string();
    let importing = ["cluster", "setslot", &slot, "importing", &source_id];
    assert_eq!(cluster.nodes[target].cli(&importing).trim(), "OK");
    let migrating = ["cluster", "setslot", &slot, "migrating", &target_id];
    assert_eq!(cluster.nodes[source].cli(&migrating).trim(), "OK");

    let urls = cluster.nodes.iter().map(RedisServer::url).collect();
    let connection = RedisConnection::new(&RedisTarget::Cluster(urls), None, None).unwrap();
    let set = |key: &str| {
        let mut pipeline = redis::pipe();
        pipeline.cmd("SET").arg(key).arg("value");
        pipeline
    };
    let written: (String,) = connection
        .query_confirmed(b"{migrating}one", &set("{migrating}one"))
        .await
        .expect("the new node's replica acknowledges it");
    assert_eq!(written.0, "OK");
    let keys_in_slot =
        |node: usize| cluster.nodes[node].cli(&["cluster", "countkeysinslot", &slot]);
    assert_eq!(
        keys_in_slot(target).trim(),
        "1",
        "the write went to the new node"
    );
    assert_eq!(keys_in_slot(source).trim(), "0");

    // The new node's replica stays connected but acknowledges nothing.
    cluster.nodes[target_replica].pause();
    let unacknowledged = connection
        .query_confirmed::<(String,)>(b"{migrating}two", &set("{migrating}two"))
        .await;
    cluster.nodes[target_replica].resume();
    let error = unacknowledged.expect_err("no replica acknowledged the write");
    assert!(
        error.to_string().contains("no replica acknowledged"),
        "{error}"
    );
    assert_eq!(keys_in_slot(target).trim(), "2");
    assert_eq!(
        cluster.nodes[target].calls("wait"),
        2,
        "both waits ran where the writes did"
    );
}

/// Every key Tollgate writes expires, so any `maxmemory-policy` but `noeviction` may drop a
/// revocation or a session under memory pressure: the policy Tollgate warns about is read from
/// Redis itself.
#[tokio::test]
async fn the_eviction_policy_is_read_from_redis_and_only_noeviction_keeps_every_key() {
    if !available() {
        return;
    }
    let policy = |redis: &RedisServer| {
        let target = tollgate::config::RedisTarget::Standalone(redis.url());
        async move {
            tollgate::redis_connection::RedisConnection::new(&target, None, None)
                .unwrap()
                .eviction_policy()
                .await
                .unwrap()
        }
    };
    let evicting = RedisServer::with_args(&["--maxmemory-policy", "volatile-ttl"]).await;
    let keeping = RedisServer::standalone().await;
    assert_eq!(policy(&evicting).await, "volatile-ttl");
    assert_eq!(policy(&keeping).await, "noeviction");
    assert!(tollgate::redis_connection::may_evict("volatile-ttl"));
    assert!(tollgate::redis_connection::may_evict("allkeys-lru"));
    assert!(!tollgate::redis_connection::may_evict("noeviction"));
}

/// A logout is answered once Redis (and a replica) holds its delete, not once it is on disk: a
/// Redis that syncs lazily loads older data when it restarts, and the session is back. Which
/// settings do that is read from Redis itself, for the warning Tollgate logs when it starts.
#[tokio::test]
async fn the_persistence_read_from_redis_says_whether_a_restart_may_bring_back_a_deleted_key() {
    if !available() {
        return;
    }
    let restores = |redis: RedisServer| async move {
        let target = tollgate::config::RedisTarget::Standalone(redis.url());
        tollgate::redis_connection::RedisConnection::new(&target, None, None)
            .unwrap()
            .persistence()
            .await
            .unwrap()
            .restart_may_restore_older_data()
    };
    for (args, expected) in [
        (
            vec!["--appendonly", "yes", "--appendfsync", "everysec"],
            true,
        ),
        (vec!["--appendonly", "yes", "--appendfsync", "no"], true),
        (vec!["--appendonly", "no", "--save", "3600 1 300 100"], true),
        (
            vec!["--appendonly", "yes", "--appendfsync", "always"],
            false,
        ),
        (vec!["--appendonly", "no"], false),
    ] {
        assert_eq!(
            restores(RedisServer::with_args(&args).await).await,
            expected,
            "{args:?}"
        );
    }
    // And the danger itself: with snapshots only, a delete made after the last one is undone by
    // a restart.
    let mut redis = RedisServer::with_args(&["--appendonly", "no", "--save", "3600 1"]).await;
    redis.cli(&["SET", "tollgate:s:x", "a session"]);
    redis.cli(&["SAVE"]);
    redis.cli(&["DEL", "tollgate:s:x"]);
    redis.kill();
    redis.start().await;
    assert_eq!(redis.cli(&["GET", "tollgate:s:x"]).trim(), "a session");
}

#[tokio::test]
async fn one_user_signing_in_in_a_loop_holds_at_most_the_limit_of_redis_sessions() {
    if !available() {
        return;
    }
    let redis = RedisServer::standalone().await;
    let idp = TestIdp::start().await;
    let gateway = Gateway::start(&redis_config(&idp, &format!("\"{}\"", redis.url()))).await;
    crate::sessions::one_user_holds_at_most_the_limit_of_sessions(&gateway, false).await;
}
