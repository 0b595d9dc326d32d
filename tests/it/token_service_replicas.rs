//! SPEC §12 with `token_service.store = "redis"`: two token-service replicas on one Redis
//! (standalone and Cluster) behave as one — a code issued on one is redeemed once on either,
//! a refresh token rotated on one and reused on the other ends the grant, a revocation on one
//! holds on the other and across a restart, and failed client authentication is counted
//! across replicas.

use serde_json::Value;

use crate::support::redis::{RedisCluster, RedisServer};
use crate::support::{Gateway, sha256_hex};
use crate::token_service::{
    code_for, config, exchange, get_with_token, refresh, token_request, validate,
};

/// Replica configs sharing `redis_url` (TOML) and one signing key file.
fn replica_config(issuer: &str, redis_url: &str, key_file: &std::path::Path) -> String {
    deployment_config(
        issuer,
        redis_url,
        key_file,
        crate::support::gateway::SESSION_SECRET,
    )
}

/// A replica's config, sealing with `secret`.
fn deployment_config(
    issuer: &str,
    redis_url: &str,
    key_file: &std::path::Path,
    secret: &str,
) -> String {
    config(
        issuer,
        &format!("[session]\nsecrets = [\"{secret}\"]\nredis_url = {redis_url}"),
        &format!(
            "store = \"redis\"\nsigning_key_file = \"{}\"",
            key_file.display()
        ),
    )
}

/// Starts two replicas of one issuer (the first one's address names it).
async fn replicas(redis_url: &str, key_file: &std::path::Path) -> (Gateway, Gateway, String) {
    let (a, issuer) =
        Gateway::start_at_issuer(|issuer| replica_config(issuer, redis_url, key_file)).await;
    let b = Gateway::start(&replica_config(&issuer, redis_url, key_file)).await;
    (a, b, issuer)
}

fn text(value: &Value, name: &str) -> String {
    value[name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {value}"))
        .to_owned()
}

async fn revoke(gateway: &Gateway, token: &str) -> u16 {
    gateway
        .post("/revoke")
        .form(&[("token", token), ("client_id", "spa")])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn replicas_behave_as_one(redis_url: &str) {
    let dir = tempfile_dir();
    let key_file = dir.join("issuer-key.pem");
    let (a, b, issuer) = replicas(redis_url, &key_file).await;

    // A code made on A is redeemed on B, once; its replay on A revokes what it issued.
    let code = code_for(&a, "s1").await;
    let (status, issued) = exchange(&b, &code).await;
    assert_eq!(status, 200, "{issued}");
    let access = text(&issued, "access_token");
    assert_eq!(validate(&a, &access).await, 200, "B's token holds on A");
    let (status, replay) = exchange(&a, &code).await;
    assert_eq!(
        (status, replay["error"].as_str()),
        (400, Some("invalid_grant")),
        "the code is spent everywhere"
    );
    assert_eq!(validate(&a, &access).await, 401, "a replay revokes on A");
    assert_eq!(validate(&b, &access).await, 401, "and on B");

    // A refresh token rotated on A and reused on B ends the grant everywhere.
    let (_, issued) = exchange(&a, &code_for(&b, "s2").await).await;
    let first_refresh = text(&issued, "refresh_token");
    let (status, rotated) = refresh(&a, &first_refresh).await;
    assert_eq!(status, 200, "{rotated}");
    let rotated_access = text(&rotated, "access_token");
    assert_eq!(validate(&b, &rotated_access).await, 200);
    // The grant in Redis keeps the login's time: the refreshed ID token tells the same one.
    let auth_time = |tokens: &Value| {
        let payload = text(tokens, "id_token")
            .split('.')
            .nth(1)
            .unwrap()
            .to_owned();
        let claims: Value = serde_json::from_slice(
            &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
                .unwrap(),
        )
        .unwrap();
        claims["auth_time"].as_i64().expect("an auth_time")
    };
    assert_eq!(auth_time(&rotated), auth_time(&issued));
    let (status, reused) = refresh(&b, &first_refresh).await;
    assert_eq!(
        (status, reused["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_eq!(
        refresh(&a, &text(&rotated, "refresh_token")).await.0,
        400,
        "the rotated token ended with its grant"
    );
    assert_eq!(validate(&a, &rotated_access).await, 401);

    // A grant refreshed in a loop on both replicas: its rotations are counted (the standalone
    // test reads the count), and the first spent token, forty rotations on, is still a reuse
    // that ends the grant.
    let (_, issued) = exchange(&a, &code_for(&b, "s4").await).await;
    let first = text(&issued, "refresh_token");
    let mut latest = first.clone();
    for round in 0..40 {
        let replica = if round % 2 == 0 { &a } else { &b };
        let (status, rotated) = refresh(replica, &latest).await;
        assert_eq!(status, 200, "{rotated}");
        latest = text(&rotated, "refresh_token");
    }
    assert_eq!(refresh(&b, &first).await.0, 400);
    assert_eq!(
        refresh(&a, &latest).await.0,
        400,
        "the first token's reuse ended the grant"
    );

    // A revocation on B holds on A, and after A restarts.
    let (_, issued) = exchange(&b, &code_for(&a, "s3").await).await;
    let access = text(&issued, "access_token");
    let kept_refresh = text(&issued, "refresh_token");
    assert_eq!(revoke(&b, &access).await, 200);
    assert_eq!(
        validate(&a, &access).await,
        401,
        "revoked on B, refused on A"
    );
    a.stop().await;
    let restarted = Gateway::start(&replica_config(&issuer, redis_url, &key_file)).await;
    assert_eq!(
        validate(&restarted, &access).await,
        401,
        "a restart forgets no revocation"
    );
    let (status, after_restart) = refresh(&restarted, &kept_refresh).await;
    assert_eq!(
        status, 200,
        "a grant outlives the replica that opened it: {after_restart}"
    );

    // Failed client authentication counts across replicas.
    for gateway in [&restarted, &b].into_iter().cycle().take(10) {
        let (status, _) = token_request(
            gateway,
            &[("grant_type", "client_credentials")],
            Some(("machine", "wrong")),
        )
        .await;
        assert_eq!(status, 401);
    }
    for gateway in [&restarted, &b] {
        let (status, _) = token_request(
            gateway,
            &[("grant_type", "client_credentials")],
            Some(("machine", "machine-secret")),
        )
        .await;
        assert_eq!(status, 429, "ten failures over two replicas limit both");
    }
    restarted.stop().await;
    b.stop().await;
}

fn tempfile_dir() -> std::path::PathBuf {
    crate::support::scratch_dir("replicas")
}

#[tokio::test]
async fn token_service_replicas_share_one_truth_on_standalone_redis() {
    let redis = RedisServer::standalone().await;
    // The URL's TOML value may carry more keys of [session] on the lines after it.
    replicas_behave_as_one(&format!(
        "\"{}\"\nredis_key_prefix = \"acme:\"",
        redis.url()
    ))
    .await;
    let keys = redis.cli(&["--scan", "--pattern", "*"]);
    assert!(
        !keys.trim().is_empty() && keys.lines().all(|key| key.starts_with("acme:ts:")),
        "every key is the token service's, under session.redis_key_prefix: {keys}"
    );
    // The grant refreshed 40 times counts its rotations, towards its limit.
    let counts: Vec<String> = keys
        .lines()
        .filter(|key| key.starts_with("acme:ts:rotations:"))
        .map(|key| redis.cli(&["GET", key]).trim().to_owned())
        .collect();
    assert!(counts.iter().any(|count| count == "40"), "{counts:?}");
}

#[tokio::test]
async fn token_service_replicas_share_one_truth_on_a_redis_cluster() {
    let cluster = RedisCluster::start().await;
    replicas_behave_as_one(&cluster.urls_toml()).await;
}

#[tokio::test]
async fn token_requests_are_refused_with_503_while_redis_is_down_and_served_after() {
    // Every write reaches the disk, so a restart keeps the grant.
    let mut redis =
        RedisServer::with_args(&["--appendonly", "yes", "--appendfsync", "always"]).await;
    let dir = tempfile_dir();
    let (a, _b, _) = replicas(&format!("\"{}\"", redis.url()), &dir.join("key.pem")).await;
    let (status, issued) = exchange(&a, &code_for(&a, "d").await).await;
    assert_eq!(status, 200);
    let access = text(&issued, "access_token");
    redis.kill();
    let (status, answer) = refresh(&a, &text(&issued, "refresh_token")).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (503, Some("temporarily_unavailable")),
        "no token is issued without the store"
    );
    // Revocation unknown: the token is refused, never passed, and not called invalid either
    // (a 401 would tell the client to throw a good token away): 503, as SPEC §9 answers every
    // request that needs the store while it is down.
    assert_eq!(validate(&a, &access).await, 503);
    assert_eq!(userinfo(&a, &access).await, 503);
    redis.start().await;
    let (status, answer) = refresh(&a, &text(&issued, "refresh_token")).await;
    assert_eq!(status, 200, "served again once Redis is back: {answer}");
    assert_eq!(validate(&a, &access).await, 200);
    assert_eq!(userinfo(&a, &access).await, 200);
}

async fn userinfo(gateway: &Gateway, access_token: &str) -> u16 {
    get_with_token(gateway, "/userinfo", access_token).await
}

/// SPEC §12: a revocation and a rotation are answered only once a replica has them, where the
/// master has one (a failover must not bring back a revoked grant or a spent refresh token);
/// a rotation no replica acknowledged is undone, so the client's retry is a rotation again and
/// not a reuse that ends the grant.
#[tokio::test]
async fn revocations_and_rotations_wait_for_a_replica_and_an_unconfirmed_rotation_can_be_retried() {
    let master = RedisServer::standalone().await;
    let replica = RedisServer::replica_of(&master).await;
    let dir = tempfile_dir();
    let (a, b, _) = replicas(&format!("\"{}\"", master.url()), &dir.join("key.pem")).await;
    let (status, issued) = exchange(&a, &code_for(&a, "w").await).await;
    assert_eq!(status, 200, "{issued}");
    let access = text(&issued, "access_token");
    let first_refresh = text(&issued, "refresh_token");

    replica.pause();
    let (status, answer) = refresh(&a, &first_refresh).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (503, Some("temporarily_unavailable")),
        "no replica acknowledged the rotation: {answer}"
    );
    replica.resume();
    let (status, rotated) = refresh(&b, &first_refresh).await;
    assert_eq!(
        status, 200,
        "the retry is a rotation, not a reuse: {rotated}"
    );
    assert_eq!(validate(&a, &access).await, 200, "the grant lives");
    let next_refresh = text(&rotated, "refresh_token");

    replica.pause();
    assert_eq!(
        revoke(&a, &next_refresh).await,
        503,
        "no replica has the revocation"
    );
    replica.resume();
    assert_eq!(revoke(&b, &next_refresh).await, 200);
    let (status, refused) = refresh(&a, &next_refresh).await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (400, Some("invalid_grant")),
        "{refused}"
    );
    assert_eq!(
        validate(&a, &access).await,
        401,
        "the grant's access tokens are revoked with it"
    );
}

/// On Redis too, a grant rotates at most `max(1000, grant_lifetime / 60, 2 × grant_lifetime /
/// token_lifetime)` times
/// (1000 with this config's 12 h and 30 min): then its
/// token is refused unspent (the user signs in again), never a reuse.
#[tokio::test]
async fn a_grant_refreshed_as_often_as_it_may_be_is_refused_unspent_on_redis() {
    let redis = RedisServer::standalone().await;
    let dir = tempfile_dir();
    let key_file = dir.join("rotations-key.pem");
    let (gateway, _) = Gateway::start_at_issuer(|issuer| {
        replica_config(issuer, &format!("\"{}\"", redis.url()), &key_file)
    })
    .await;
    let (_, issued) = exchange(&gateway, &code_for(&gateway, "r1").await).await;
    let mut latest = text(&issued, "refresh_token");
    for _ in 0..1_000 {
        let (status, rotated) = refresh(&gateway, &latest).await;
        assert_eq!(status, 200, "{rotated}");
        latest = text(&rotated, "refresh_token");
    }
    for _ in 0..2 {
        let (status, refused) = refresh(&gateway, &latest).await;
        assert_eq!(
            (status, refused["error_description"].as_str()),
            (400, Some("refreshed too often; sign in again")),
            "refused, and left unspent: not a reuse the second time"
        );
    }
    gateway.stop().await;
}

/// A user's index of grants at a client (the 100-grant limit) lives as long as the grant
/// opened at the last sign-in may be refreshed and then live: with `session.lifetime = "7d"`
/// it lived a day, and after a day without a sign-in the next 100 grants were counted from
/// none while the earlier ones were still refreshed.
#[tokio::test]
async fn a_holders_index_outlives_the_grants_it_counts_on_redis() {
    let redis = RedisServer::standalone().await;
    let dir = tempfile_dir();
    let key_file = dir.join("holder-key.pem");
    let (gateway, _) = Gateway::start_at_issuer(|issuer| {
        replica_config(
            issuer,
            &format!("\"{}\"\nlifetime = \"7d\"", redis.url()),
            &key_file,
        )
    })
    .await;
    let (status, issued) = exchange(&gateway, &code_for(&gateway, "h1").await).await;
    assert_eq!(status, 200, "{issued}");
    let keys = redis.cli(&["--scan", "--pattern", "*ts:holder:*"]);
    let key = keys
        .lines()
        .next()
        .unwrap_or_else(|| panic!("no holder index: {keys}"));
    let ttl: i64 = redis.cli(&["TTL", key]).trim().parse().unwrap();
    // Seven days of refreshes, then the grant's own life (a day and `token_lifetime`).
    assert!(
        ttl >= 8 * 86_400,
        "the index lives {ttl} s, less than the grant may: 7 days of refreshes and a day"
    );
    gateway.stop().await;
}

/// Whoever can write to Redis (a pod beside it, or another deployment sharing it under the
/// same prefix) could move a code's record to a code of their choosing, mark a refresh token of
/// their own making fresh for a grant they see there, or refresh the other deployment's
/// tokens, and have this service mint the user's tokens: records are sealed for their key, and
/// refresh tokens tagged, with the session secrets.
#[tokio::test]
async fn records_and_tokens_written_to_redis_by_anyone_else_mint_no_token() {
    let redis = RedisServer::standalone().await;
    let url = format!("\"{}\"", redis.url());
    let dir = tempfile_dir();
    let (prod, _) = Gateway::start_at_issuer(|issuer| {
        deployment_config(
            issuer,
            &url,
            &dir.join("prod-key.pem"),
            "prod-session-secret-prod-session-secret",
        )
    })
    .await;
    // A code's record, moved to a code the attacker chose (PKCE is theirs too).
    // The store names a code by a digest of its client, the code and its PKCE challenge.
    let code_key = |code: &str| {
        let challenge = crate::token_service::challenge(crate::token_service::VERIFIER);
        let stored = format!("spa\n{code}\n{challenge}");
        format!("tollgate:ts:code:{{{}}}", sha256_hex(&stored))
    };
    let real = code_for(&prod, "moved").await;
    let record = redis.cli(&["GET", &code_key(&real)]);
    assert!(record.len() > 20, "the code's record: {record}");
    // Shaped as the codes this service makes.
    let planted = &"p".repeat(43);
    redis.cli(&[
        "SET",
        &code_key(planted),
        record.trim_end_matches('\n'),
        "EX",
        "60",
    ]);
    let (status, answer) = exchange(&prod, planted).await;
    assert_eq!(status, 400, "a record moved to another code: {answer}");
    // A refresh token of the attacker's making, marked fresh for alice's grant.
    let (status, issued) = exchange(&prod, &code_for(&prod, "grant").await).await;
    assert_eq!(status, 200, "{issued}");
    let genuine = text(&issued, "refresh_token");
    let (grant_id, _) = genuine.split_once('.').unwrap();
    let forged = format!("{grant_id}.{}", "A".repeat(43));
    redis.cli(&[
        "SET",
        &format!("tollgate:ts:refresh:{{{grant_id}}}:{}", sha256_hex(&forged)),
        "fresh",
        "EX",
        "600",
    ]);
    let (status, answer) = refresh(&prod, &forged).await;
    assert_eq!(status, 400, "a token marked fresh by hand: {answer}");
    // Another deployment (staging: its own secret and issuer) on the same Redis and prefix:
    // its grants are not this one's.
    let (staging, _) = Gateway::start_at_issuer(|issuer| {
        deployment_config(
            issuer,
            &url,
            &dir.join("staging-key.pem"),
            "staging-session-secret-staging-secret",
        )
    })
    .await;
    let (status, staged) = exchange(&staging, &code_for(&staging, "staging").await).await;
    assert_eq!(status, 200, "{staged}");
    let (status, answer) = refresh(&prod, &text(&staged, "refresh_token")).await;
    assert_eq!(status, 400, "another deployment's refresh token: {answer}");
    // What this deployment issued still works.
    let (status, rotated) = refresh(&prod, &genuine).await;
    assert_eq!(status, 200, "{rotated}");
    // Revoking is all an untagged token can do (an older Tollgate's, during an upgrade): its
    // grant ends.
    assert_eq!(revoke(&prod, &forged).await, 200);
    let (status, answer) = refresh(&prod, &text(&rotated, "refresh_token")).await;
    assert_eq!(status, 400, "the grant was revoked: {answer}");
    staging.stop().await;
    prod.stop().await;
}

/// A client secret is checked only while its failure can be counted: counted after the check,
/// a Redis that refused writes but answered reads (at `maxmemory` with `noeviction`, or with
/// `min-replicas-to-write` and no replica) let a right secret through and answered a wrong one
/// 503, a guessing oracle without the 10-a-minute limit (before, the right secret got 200).
#[tokio::test]
async fn a_client_secret_is_not_checked_while_its_failures_cannot_be_counted() {
    let redis = RedisServer::standalone().await;
    let dir = tempfile_dir();
    let (a, b, _) = replicas(&format!("\"{}\"", redis.url()), &dir.join("key.pem")).await;
    let issue = |replica: &'static str, secret: &'static str| {
        let gateway = if replica == "a" { &a } else { &b };
        async move {
            token_request(
                gateway,
                &[("grant_type", "client_credentials"), ("scope", "scim")],
                Some(("machine", secret)),
            )
            .await
            .0
        }
    };
    // Writes refused, reads served.
    assert_eq!(
        redis
            .cli(&["config", "set", "min-replicas-to-write", "1"])
            .trim(),
        "OK"
    );
    assert_eq!(issue("a", "wrong").await, 503);
    assert_eq!(issue("a", "machine-secret").await, 503, "no oracle");
    assert_eq!(
        redis
            .cli(&["config", "set", "min-replicas-to-write", "0"])
            .trim(),
        "OK"
    );
    for _ in 0..9 {
        assert_eq!(issue("a", "wrong").await, 401);
    }
    // Counted before its check, and taken back once right (at `b`, which has not verified it
    // yet): the count stays at nine, the limit's tenth is still a wrong secret's.
    assert_eq!(issue("b", "machine-secret").await, 200);
    assert_eq!(issue("a", "wrong").await, 401);
    assert_eq!(issue("a", "wrong").await, 429);
}

/// SPEC §12: a revocation confirmed on the new master is seen by a replica whose main link is
/// still on the old one (for a moment after a Sentinel failover): it read the old master,
/// and the revoked token was taken there for a second or two more.
#[tokio::test]
async fn a_revocation_confirmed_on_the_new_master_holds_while_a_link_still_reads_the_old() {
    use std::sync::Arc;
    use tollgate::issuer::state::IssuerState as _;
    use tollgate::redis_connection::{RedisConnection, RedisTarget};
    let old_master = RedisServer::standalone().await;
    let new_master = RedisServer::standalone().await;
    let link =
        |url: String| RedisConnection::new(&RedisTarget::Standalone(url), None, None).unwrap();
    let split = link(old_master.url()).with_confirm_link_of(link(new_master.url()));
    let secrets = [tollgate::secret::Secret::new(
        crate::support::gateway::SESSION_SECRET.to_owned(),
    )];
    let state = tollgate::issuer::state::redis::RedisState::new(
        Arc::new(split),
        "tollgate:",
        (3600, 3600),
        &secrets,
    );
    let now = crate::support::idp::now();
    // The main link in use, as every request's check keeps it.
    assert!(!state.is_revoked(Some("j-1"), None).await.unwrap());
    state
        .revoke_access("j-1", None, now + 600, now)
        .await
        .unwrap();
    assert_eq!(new_master.cli(&["dbsize"]).trim(), "1");
    assert!(state.is_revoked(Some("j-1"), None).await.unwrap());
}

/// One user signing in to one client again and again (each sign-in a grant, each grant up to
/// a thousand remembered refresh tokens for a day) filled the store. Beyond
/// `MAX_GRANTS_PER_USER` grants of one holder at one client, opening one ends the oldest:
/// revoked, and its refresh tokens, spent and fresh, forgotten (deleted in Redis). Another
/// user's grants and the same user's at another client are untouched. The same rules on each
/// store: memory, standalone Redis and Cluster.
async fn a_holders_grants_beyond_the_limit_end_oldest_first(
    state: &dyn tollgate::issuer::state::IssuerState,
    refresh_tokens_held: impl Fn() -> Option<usize>,
) {
    use tollgate::issuer::state::{
        Grant, MAX_GRANTS_PER_USER, Principal, RefreshUse, SignedIn, Successor,
    };
    let now = crate::support::idp::now();
    let grant = |client: &str, user: &str| Grant {
        client_id: client.to_owned(),
        principal: Principal::Local(user.to_owned()),
        scopes: vec!["openid".to_owned()],
        auth_time: Some(now),
        signed_in: SignedIn::AtIssue,
    };
    let successor = Successor {
        expires_at: now + 3600,
        grant_until: now + 3600,
        rotations_most: 1000,
    };
    // Opens a grant with a refresh token spent once: (grant id, its fresh token).
    let open = |client: &'static str, user: &'static str| {
        let grant = grant(client, user);
        async move {
            let id = tollgate::random::token();
            state
                .open_grant(&id, &grant, now + 3600, now)
                .await
                .unwrap();
            let first = state
                .issue_refresh_token(&id, now + 3600, now + 3600, now)
                .await
                .unwrap();
            let RefreshUse::Fresh(fresh) = state
                .rotate_refresh_token(&first, client, successor, now)
                .await
                .unwrap()
            else {
                panic!("a fresh token rotates");
            };
            (id, fresh)
        }
    };
    let bob = open("app", "bob").await;
    let elsewhere = open("other-app", "alice").await;
    let mut alice = Vec::new();
    for _ in 0..MAX_GRANTS_PER_USER {
        alice.push(open("app", "alice").await);
    }
    let before = refresh_tokens_held();
    let newest = open("app", "alice").await;
    let (oldest, oldest_token) = &alice[0];
    assert!(state.is_revoked(None, Some(oldest)).await.unwrap());
    assert_eq!(
        state
            .rotate_refresh_token(oldest_token, "app", successor, now)
            .await
            .unwrap(),
        RefreshUse::Invalid,
        "the oldest grant ended"
    );
    if let (Some(before), Some(after)) = (before, refresh_tokens_held()) {
        // The newest grant's two refresh tokens came, the oldest's two went.
        assert_eq!(after, before, "refresh tokens held");
    }
    for (id, token) in [&alice[1], &newest, &bob, &elsewhere] {
        assert!(!state.is_revoked(None, Some(id)).await.unwrap());
        assert!(matches!(
            state
                .rotate_refresh_token(
                    token,
                    if *id == elsewhere.0 {
                        "other-app"
                    } else {
                        "app"
                    },
                    successor,
                    now
                )
                .await
                .unwrap(),
            RefreshUse::Fresh(_)
        ));
    }
}

#[tokio::test]
async fn a_holders_grants_beyond_the_limit_end_oldest_first_in_every_store() {
    use std::sync::Arc;
    use tollgate::redis_connection::{RedisConnection, RedisTarget};
    let memory = tollgate::issuer::state::memory::MemoryState::default();
    a_holders_grants_beyond_the_limit_end_oldest_first(&memory, || None).await;
    let secrets = [tollgate::secret::Secret::new(
        crate::support::gateway::SESSION_SECRET.to_owned(),
    )];
    let standalone = RedisServer::standalone().await;
    let connection =
        RedisConnection::new(&RedisTarget::Standalone(standalone.url()), None, None).unwrap();
    let state = tollgate::issuer::state::redis::RedisState::new(
        Arc::new(connection),
        "tollgate:",
        (3600, 3600),
        &secrets,
    );
    let keys = || {
        Some(
            standalone
                .cli(&["keys", "tollgate:ts:refresh:*"])
                .lines()
                .filter(|line| !line.trim().is_empty())
                .count(),
        )
    };
    a_holders_grants_beyond_the_limit_end_oldest_first(&state, keys).await;
    let cluster = RedisCluster::start().await;
    let urls = cluster.nodes.iter().map(RedisServer::url).collect();
    let connection = RedisConnection::new(&RedisTarget::Cluster(urls), None, None).unwrap();
    let state = tollgate::issuer::state::redis::RedisState::new(
        Arc::new(connection),
        "tollgate:",
        (3600, 3600),
        &secrets,
    );
    a_holders_grants_beyond_the_limit_end_oldest_first(&state, || None).await;
}
