//! SPEC §12: a Redis Sentinel master killed in the middle of a refresh loses no session. The
//! replica replicates through a relay the test freezes (a partition the master does not see:
//! the replica stays connected, nothing reaches it, no acknowledgement comes back), so the
//! refreshed session reaches the master alone; then the master is killed outright and
//! Sentinel promotes the replica, which never had the refreshed session. The provider rotates
//! refresh tokens and answers `invalid_grant` to a spent one, like oidc-provider.

use crate::refresh::{advance, config, cookie_header};
use crate::support::idp::{JwksFault, Misbehaviour};
use crate::support::redis::{RedisSentinel, wait_until};
use crate::support::relay::Relay;
use crate::support::{Browser, Gateway, TestIdp};

/// Two Tollgates on a Redis Sentinel whose replica replicates through a relay, a browser
/// signed in at the first, and its session's refresh started there with the provider
/// misbehaving as `misbehaviour` (from `prepare`, which may also change the provider's keys):
/// once the provider has been asked, the relay freezes (so the refresh's write reaches the
/// master alone), the refreshing request is answered 503 (no replica acknowledged), the master
/// is killed and the sentinel promotes the replica. Provider misbehaviour is then reset and
/// the login's access token has expired.
struct KilledMidRefresh {
    idp: TestIdp,
    other_replica: Gateway,
    cookie: String,
    login_refresh_token: String,
    // Kept alive for the test's length.
    _sentinel: RedisSentinel,
    _refreshing_replica: Gateway,
    _relay: Relay,
}

async fn killed_mid_refresh(
    jwks_refetch_interval: &str,
    prepare: impl FnOnce(&TestIdp) -> Misbehaviour,
) -> KilledMidRefresh {
    let relay = std::sync::Arc::new(std::sync::Mutex::new(None::<Relay>));
    let slot = relay.clone();
    let mut sentinel = RedisSentinel::start_with_replica_from(|master| async move {
        let relay = Relay::to(master).await;
        let port = relay.port;
        *slot.lock().unwrap() = Some(relay);
        port
    })
    .await;
    let relay = relay.lock().unwrap().take().unwrap();
    let idp = TestIdp::start().await;
    let clock = tollgate::clock::ManualClock::new();
    let text = config(&idp, "redis")
        .replace(
            "store = \"redis\"\n",
            &format!("store = \"redis\"\nredis_url = \"{}\"\n", sentinel.url()),
        )
        .replace(
            "jwks_refetch_interval = \"1h\"",
            &format!("jwks_refetch_interval = \"{jwks_refetch_interval}\""),
        );
    let refreshing_replica = Gateway::start_with_clock(&text, clock.clone()).await;
    let other_replica = Gateway::start_with_clock(&text, clock.clone()).await;
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &refreshing_replica).await;
    let (_, login_refresh_token) = idp.last_tokens().unwrap();
    let misbehaviour = prepare(&idp);
    idp.misbehave(misbehaviour);
    advance(&clock, &idp, 250);
    let cookie = cookie_header(&browser);
    let refreshing = refreshing_replica
        .get("/auth")
        .header("cookie", &cookie)
        .send();
    let refreshing = tokio::spawn(async move { refreshing.await.unwrap().status().as_u16() });
    wait_until(
        || idp.count("refresh") == 1,
        "the refresh to reach the provider",
    )
    .await;
    // The provider has spent the login's refresh token; its answer is on the way. From now on
    // the master's writes stop at the relay.
    relay.freeze();
    assert_eq!(
        refreshing.await.unwrap(),
        503,
        "no replica acknowledged what the refresh wrote"
    );
    sentinel.master.kill();
    let replica_port = sentinel.replica.as_ref().unwrap().port;
    wait_until(
        || sentinel.master_port() == Some(replica_port),
        "the sentinel to promote the replica",
    )
    .await;
    idp.misbehave(Misbehaviour::default());
    // The login's access token has expired: only a refreshed session can serve now.
    advance(&clock, &idp, 100);
    KilledMidRefresh {
        idp,
        other_replica,
        cookie,
        login_refresh_token,
        _sentinel: sentinel,
        _refreshing_replica: refreshing_replica,
        _relay: relay,
    }
}

/// The other replica's answers to `/auth` with `cookie` until one is neither 503 (the store
/// did not answer) nor 502 (a refresh in flight elsewhere did not finish), which may be while
/// the promoted master settles and what the refresh wrote is written to it; at most 40 s.
async fn answers_until_settled(gateway: &Gateway, cookie: &str) -> Vec<u16> {
    let mut statuses = Vec::new();
    for _ in 0..160 {
        let status = gateway
            .get("/auth")
            .header("cookie", cookie)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        statuses.push(status);
        if status != 503 && status != 502 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    statuses
}

/// The refresh's lease reached the replica; its result did not (the relay froze while the
/// provider was answering); the master is killed. The replica that refreshed answers 503 and
/// writes its result again, holding the lease, until the promoted master has it; the other
/// replica waits for it instead of presenting the spent refresh token, and is then served the
/// refreshed session. The provider is offered each refresh token once.
#[tokio::test]
async fn a_refresh_only_the_killed_master_had_is_written_to_the_promoted_replica() {
    if !crate::support::redis::available() {
        return;
    }
    let killed = killed_mid_refresh("1h", |_| Misbehaviour {
        refresh_delay_ms: Some(1500),
        ..Default::default()
    })
    .await;
    let statuses = answers_until_settled(&killed.other_replica, &killed.cookie).await;
    assert_eq!(
        statuses.last(),
        Some(&200),
        "the other replica is served the refreshed session: {statuses:?}"
    );
    let presented = killed.idp.presented_refresh_tokens();
    assert_eq!(
        presented,
        vec![killed.login_refresh_token.clone()],
        "the provider was offered the login's refresh token once and never again"
    );
    let again = killed
        .other_replica
        .get("/auth")
        .header("cookie", &killed.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200, "the session lives on");
    assert_eq!(killed.idp.count("refresh"), 1);
}

/// The provider rotated the refresh token and the refresh then failed (the new ID token's key
/// could not be fetched): the session with the rotated token reached the master alone, and
/// the master is killed. The replica that refreshed writes it again, holding the lease, until
/// the promoted master has it, so the retry presents the rotated token. Before, only a
/// refresh that succeeded was written again: the promoted master held the spent token, the
/// next refresh presented it, and the provider's `invalid_grant` ended the session.
#[tokio::test]
async fn a_rotated_refresh_token_only_the_killed_master_had_is_written_to_the_promoted_replica() {
    if !crate::support::redis::available() {
        return;
    }
    // The token endpoint answers (spending the login's refresh token) with an ID token signed
    // by a key the JWKS endpoint cannot hand out.
    let killed = killed_mid_refresh("10s", |idp| {
        idp.rotate_keys("rsa-2");
        Misbehaviour {
            jwks_fault: JwksFault::Status(503),
            refresh_delay_ms: Some(1500),
            ..Default::default()
        }
    })
    .await;
    let statuses = answers_until_settled(&killed.other_replica, &killed.cookie).await;
    assert_eq!(
        statuses.last(),
        Some(&200),
        "the other replica refreshed with the rotated token: {statuses:?}"
    );
    let presented = killed.idp.presented_refresh_tokens();
    assert!(
        presented.len() == 2
            && presented[0] == killed.login_refresh_token
            && presented[1] != presented[0],
        "the login's refresh token was presented once, then the rotated one: {presented:?}"
    );
    let again = killed
        .other_replica
        .get("/auth")
        .header("cookie", &killed.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200, "the session lives on");
}

/// SPEC §12: a master whose replica has just gone (what a Sentinel failover looks like from
/// the old master, which takes writes until it is demoted and loses them then) confirms
/// nothing alone: a logout there is 503, and a refresh due there is not started (its lease
/// could be lost with the old master), the session served meanwhile while it is valid.
#[tokio::test]
async fn a_master_whose_replica_just_left_confirms_no_logout_and_starts_no_refresh() {
    if !crate::support::redis::available() {
        return;
    }
    let master = crate::support::redis::RedisServer::standalone().await;
    let replica = crate::support::redis::RedisServer::replica_of(&master).await;
    let idp = TestIdp::start().await;
    let clock = tollgate::clock::ManualClock::new();
    let text = config(&idp, "redis").replace(
        "store = \"redis\"\n",
        &format!("store = \"redis\"\nredis_url = \"{}\"\n", master.url()),
    );
    let gateway = Gateway::start_with_clock(&text, clock.clone()).await;
    let mut leaving = Browser::new();
    crate::support::gateway::signed_in(&mut leaving, &gateway).await;
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    assert_eq!(
        leaving.get(&gateway.url("/signout")).await.status(),
        302,
        "a logout the replica acknowledged"
    );
    // The replica is promoted: the master no longer has one.
    promote_and_expect_nothing_confirmed(&master, &replica, &clock, &idp, &gateway, &mut browser)
        .await;
}

/// SPEC §12: with Sentinel, a master whose replica was just promoted confirms nothing alone,
/// also on a link that never saw the replica there (a Tollgate that just started, or whose
/// last confirmed write there is older than it remembers): it asks the sentinels, and they
/// still see the promoted replica up. Without that, two Tollgates each took a session's
/// refresh lease, one on the old master and one on the promoted replica, and both presented
/// its refresh token (the e2e suite saw it in a `SENTINEL FAILOVER` under load). Once the
/// sentinels see no replica up, the master is alone for real and takes a logout alone.
#[tokio::test]
async fn a_sentinel_master_whose_replica_was_promoted_confirms_nothing_alone_on_a_fresh_link() {
    if !crate::support::redis::available() {
        return;
    }
    let mut sentinel = RedisSentinel::start_with_replica().await;
    let idp = TestIdp::start().await;
    let clock = tollgate::clock::ManualClock::new();
    let text = config(&idp, "redis").replace(
        "store = \"redis\"\n",
        &format!("store = \"redis\"\nredis_url = \"{}\"\n", sentinel.url()),
    );
    let signing_in = Gateway::start_with_clock(&text, clock.clone()).await;
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &signing_in).await;
    // A sign-in confirms its writes: the session is served from here on by a Tollgate that
    // has made none, whose link has never seen the master's replica.
    let gateway = Gateway::start_with_clock(&text, clock.clone()).await;
    let replica = sentinel.replica.as_ref().unwrap();
    promote_and_expect_nothing_confirmed(
        &sentinel.master,
        replica,
        &clock,
        &idp,
        &gateway,
        &mut browser,
    )
    .await;

    let replica_port = replica.port.to_string();
    sentinel.replica.as_mut().unwrap().kill();
    wait_until(
        || {
            let replicas = sentinel.sentinel.cli(&["sentinel", "replicas", "mymaster"]);
            // Each replica is a list of names and values: its flags follow "flags".
            let flags = replicas
                .lines()
                .map(str::trim)
                .skip_while(|line| *line != replica_port)
                .skip_while(|line| *line != "flags")
                .nth(1)
                .unwrap_or_default()
                .to_owned();
            flags.contains("disconnected") || flags.contains("s_down")
        },
        "the sentinel to see the promoted replica down",
    )
    .await;
    assert_eq!(
        browser.get(&gateway.url("/signout")).await.status(),
        302,
        "with no replica up, the master takes the logout alone"
    );
}

/// Promotes `replica` (`REPLICAOF NO ONE`), waits for `master` to lose it, makes the session's
/// refresh due, and checks that `master` confirms nothing alone: the session serves while its
/// access token is valid, no refresh starts (its lease would be on the old master alone), and
/// a logout is 503.
async fn promote_and_expect_nothing_confirmed(
    master: &crate::support::redis::RedisServer,
    replica: &crate::support::redis::RedisServer,
    clock: &tollgate::clock::ManualClock,
    idp: &TestIdp,
    gateway: &Gateway,
    browser: &mut Browser,
) {
    replica.cli(&["replicaof", "no", "one"]);
    wait_until(
        || {
            master
                .cli(&["info", "replication"])
                .contains("connected_slaves:0")
        },
        "the master to lose its replica",
    )
    .await;
    advance(clock, idp, 250);
    assert_eq!(
        browser.get(&gateway.url("/auth")).await.status(),
        200,
        "the session serves while its access token is valid"
    );
    assert_eq!(
        idp.count("refresh"),
        0,
        "no refresh on a lease only the old master has"
    );
    assert_eq!(
        browser.get(&gateway.url("/signout")).await.status(),
        503,
        "a logout only the old master has is not done"
    );
}

/// A stored session that holds `refresh_token`.
fn stored_with(refresh_token: &str) -> tollgate::session::StoredSession {
    const NOW: i64 = 1_800_000_000;
    tollgate::session::StoredSession {
        session: std::sync::Arc::new(tollgate::session::Session {
            provider: "corp".to_owned(),
            claims: tollgate::token::Claims::default(),
            id_token: "id".to_owned(),
            access_token: Some("at".to_owned()),
            refresh_token: Some(refresh_token.to_owned()),
            access_expires_at: Some(NOW + 300),
            created_at: NOW,
            expires_at: NOW + 3600,
        }),
        last_seen: NOW,
    }
}

fn session_store(url: String) -> tollgate::session::redis_store::RedisStore {
    let sealer = tollgate::session::seal::Sealer::new(&[tollgate::secret::Secret::new(
        "a-test-session-secret-for-split-links".to_owned(),
    )]);
    tollgate::session::redis_store::RedisStore::new(
        &tollgate::config::RedisTarget::Standalone(url),
        None,
        "tollgate:",
        sealer,
        std::sync::Arc::new(tollgate::metrics::Metrics::new()),
    )
    .unwrap()
}

/// For a moment after a Sentinel failover, a replica's main link may still be on the old
/// master while its link of confirmed writes (where the refresh lease is taken) is on the new
/// one. The old master holds the session with the refresh token another replica has just
/// spent; the new one holds its refreshed result. The refresh protocol reads the session,
/// tests and gives back the lease where the lease is, so the replica that wins the lease sees
/// the refreshed session and never presents the spent token. (Before, it read the old master:
/// the spent token, which the provider refused and which ended the session; seen once in the
/// end-to-end Sentinel failover test.)
#[tokio::test]
async fn the_refresh_lease_and_the_session_it_guards_are_read_on_the_same_server() {
    if !crate::support::redis::available() {
        return;
    }
    use crate::support::redis::RedisServer;
    let old_master = RedisServer::standalone().await;
    let new_master = RedisServer::standalone().await;
    session_store(old_master.url())
        .put("s1", &stored_with("spent"), (600, 600), "alice", None)
        .await
        .unwrap();
    session_store(new_master.url())
        .put("s1", &stored_with("rotated"), (600, 600), "alice", None)
        .await
        .unwrap();
    let split = session_store(old_master.url())
        .with_confirm_link_to(&tollgate::config::RedisTarget::Standalone(new_master.url()))
        .unwrap();
    // The main link still reads the old master: the session as every request sees it.
    let (_, served) = split.get("s1").await.unwrap().unwrap();
    assert_eq!(served.session.refresh_token.as_deref(), Some("spent"));

    let hold = std::time::Duration::from_secs(30);
    assert!(split.take_lease("s1", "holder-1", hold).await.unwrap());
    assert!(
        new_master
            .cli(&["exists", "tollgate:s:s1:refreshing"])
            .trim()
            == "1",
        "the lease is on the new master"
    );
    assert!(split.lease_held("s1").await.unwrap(), "the lease is seen");
    let (_, fresh) = split.get_fresh("s1").await.unwrap().unwrap();
    assert_eq!(
        fresh.session.refresh_token.as_deref(),
        Some("rotated"),
        "the lease's holder reads the refreshed session, not the spent token"
    );
    split.release_lease("s1", "holder-1").await.unwrap();
    assert_eq!(
        new_master
            .cli(&["exists", "tollgate:s:s1:refreshing"])
            .trim(),
        "0",
        "the lease is given back where it was taken"
    );
    assert!(!split.lease_held("s1").await.unwrap());
}

/// A request that goes away while its refresh waits for the lease's confirmation (a replica
/// slow to acknowledge) still has its refresh carried out and the lease given back: dropped
/// with the request, the lease stayed without a holder until it lapsed (twice the provider
/// timeout and more), no refresh ran, and every replica's requests for that session waited on it.
#[tokio::test]
async fn a_request_that_goes_away_while_the_lease_is_confirmed_leaves_no_lease_behind() {
    if !crate::support::redis::available() {
        return;
    }
    let master = crate::support::redis::RedisServer::standalone().await;
    let relay = Relay::to(master.port).await;
    let _replica =
        crate::support::redis::RedisServer::replica_of_through(&master, relay.port).await;
    let idp = TestIdp::start().await;
    let clock = tollgate::clock::ManualClock::new();
    let text = config(&idp, "redis").replace(
        "store = \"redis\"\n",
        &format!("store = \"redis\"\nredis_url = \"{}\"\n", master.url()),
    );
    let gateway = Gateway::start_with_clock(&text, clock.clone()).await;
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    advance(&clock, &idp, 250);

    // The lease is written on the master; its acknowledgement waits on the frozen relay.
    relay.freeze();
    let gone = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(150))
        .build()
        .unwrap()
        .get(gateway.url("/auth"))
        .header("cookie", cookie_header(&browser))
        .send()
        .await;
    assert!(gone.is_err(), "the client gave up while the lease waited");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    relay.thaw();
    wait_until(
        || idp.count("refresh") == 1,
        "the refresh of the request that went away",
    )
    .await;
    wait_until(
        || {
            master
                .cli(&["--scan", "--pattern", "*:refreshing"])
                .trim()
                .is_empty()
        },
        "the lease to be given back",
    )
    .await;
    let next = browser.get(&gateway.url("/auth")).await;
    assert_eq!(next.status(), 200, "the session lives on, refreshed");
    assert_eq!(idp.count("refresh"), 1, "refreshed once");
}

/// SPEC §12: what a back-channel logout or an admin's delete relies on is written for every
/// replica. A session's index entries (the only way to find it by `sub` or `sid`) are
/// confirmed like a logout's delete: written to the master alone, a failover lost them and
/// the logout then ended nothing (before, `put` answered at once). A delete that finds
/// nothing, on a connection made after an earlier attempt's (which did delete, and timed out
/// waiting for the replica), is confirmed only once a replica has that earlier delete too:
/// the delete writes even then, so its `WAIT` covers the replication stream up to it (the
/// Redis 7.0 these tests run waited here already; a `WAIT` that counts only the connection's
/// own writes would not have).
#[tokio::test]
async fn index_entries_and_a_repeated_delete_are_done_only_once_a_replica_has_them() {
    if !crate::support::redis::available() {
        return;
    }
    use crate::support::redis::RedisServer;
    let master = RedisServer::standalone().await;
    let replica = RedisServer::replica_of(&master).await;
    // Done with its full synchronisation: only then does it acknowledge writes, and count.
    crate::support::redis::wait_until(
        || {
            master
                .cli(&["info", "replication"])
                .contains("state=online")
        },
        "the replica online",
    )
    .await;
    let store = session_store(master.url());
    let stored = stored_with("rt");
    let ends_at = stored.session.expires_at;
    let waits = master.calls("wait");
    store
        .put("s1", &stored, (600, 600), "alice", Some("sid-1"))
        .await
        .unwrap();
    assert_eq!(
        master.calls("wait") - waits,
        1,
        "one wait for the three entries: three in a row queued the link's other calls"
    );
    assert_eq!(
        replica
            .cli(&["zrange", "tollgate:sid:sid-1", "0", "-1"])
            .trim(),
        "s1"
    );
    // Connected, acknowledging nothing.
    replica.pause();
    assert!(
        store
            .put("s2", &stored, (600, 600), "bob", Some("sid-2"))
            .await
            .is_err(),
        "a session whose index entries no replica has is not stored"
    );
    assert!(
        store
            .index_sid("s1", "sid-3", ends_at, ends_at - 600)
            .await
            .is_err(),
        "nor is a refresh's new sid"
    );
    for attempt in 0..4 {
        assert!(
            store.delete_confirmed("s1").await.is_err(),
            "attempt {attempt}: no replica has the delete"
        );
        // The attempt's connection is dropped: the next one is made anew.
        master.cli(&["client", "kill", "type", "normal"]);
    }
    replica.resume();
    assert!(
        !store.delete_confirmed("s1").await.unwrap(),
        "gone since the first attempt, and now confirmed"
    );
    assert_eq!(replica.cli(&["exists", "tollgate:s:s1"]).trim(), "0");
}

/// SPEC §12: for a moment after a Sentinel failover one link of a replica may be on the old
/// master (still reachable, the sentinels cut off from it) and the other on the new one, and
/// which one followed is not known. A logout confirmed on one server was not seen by requests
/// that read the other (their copy, or the server): the ended session was served for a second
/// or two more. While the links are apart, a request's read (`tracked`, then `read`, as every
/// request's session lookup) asks both, and a session either no longer has has ended.
#[tokio::test]
async fn a_session_ended_on_either_server_is_not_served_while_the_links_are_apart() {
    if !crate::support::redis::available() {
        return;
    }
    use crate::support::redis::RedisServer;
    let (one, other) = (
        RedisServer::standalone().await,
        RedisServer::standalone().await,
    );
    for master in [&one, &other] {
        for id in ["s1", "s2"] {
            session_store(master.url())
                .put(id, &stored_with("rt"), (600, 600), "alice", None)
                .await
                .unwrap();
        }
    }
    let split = session_store(one.url())
        .with_confirm_link_to(&tollgate::config::RedisTarget::Standalone(other.url()))
        .unwrap();
    // Both links in use, as a replica's are.
    assert!(split.read("s1").await.unwrap().is_some());
    assert!(split.delete_confirmed("s1").await.unwrap());
    assert_eq!(one.cli(&["exists", "tollgate:s:s1"]).trim(), "1");
    assert!(split.tracked("s1").is_none(), "no copy is used");
    assert!(
        split.read("s1").await.unwrap().is_none(),
        "ended where the logout was confirmed"
    );
    // Ended on the main link's server instead (another replica's logout, its links followed).
    assert!(split.read("s2").await.unwrap().is_some());
    one.cli(&["del", "tollgate:s:s2"]);
    assert!(split.read("s2").await.unwrap().is_none());
}
