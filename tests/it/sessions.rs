//! SPEC §5 sessions on the server (`store = "memory"` with `state_file`), §8 admin API, and
//! OIDC Back-Channel Logout.

use serde_json::{Value, json};

use crate::support::{Browser, Gateway, TestIdp};

const ADMIN_TOKEN: &str = "admin-token-for-the-tests";

fn memory_config(
    idp: &TestIdp,
    state_file: Option<&std::path::Path>,
    extra_session: &str,
) -> String {
    let state = state_file
        .map(|path| format!("state_file = \"{}\"\n", path.display()))
        .unwrap_or_default();
    Gateway::forward_auth_config(idp, &format!("admin_token = \"{ADMIN_TOKEN}\""), "").replace(
        "[session]\n",
        &format!("[session]\nstore = \"memory\"\n{state}{extra_session}"),
    )
}

async fn admin(gateway: &Gateway, method: reqwest::Method, path: &str) -> reqwest::Response {
    reqwest::Client::new()
        .request(method, gateway.admin_url(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
}

fn temp_path(name: &str) -> std::path::PathBuf {
    crate::support::scratch_dir(&format!("sessions-{name}")).join("sessions.json")
}

#[tokio::test]
async fn a_server_side_session_is_erased_at_logout_so_a_copied_cookie_is_refused() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::start(&memory_config(&idp, None, "")).await;
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    let first_id = browser.cookies["tollgate"].clone();
    assert!(
        first_id.starts_with("s."),
        "the cookie holds only a sealed id"
    );
    assert!(first_id.len() < 200);
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    assert_ne!(
        browser.cookies["tollgate"], first_id,
        "a new session id at every login"
    );
    let mut stale = Browser::new();
    stale.cookies.insert("tollgate".into(), first_id);
    assert_eq!(
        stale.get(&gateway.url("/auth")).await.status(),
        401,
        "the replaced session ended"
    );

    let copied = browser.cookies.clone();
    assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 200);
    browser.get(&gateway.url("/signout")).await;
    let mut thief = Browser::new();
    thief.cookies = copied;
    assert_eq!(thief.get(&gateway.url("/auth")).await.status(), 401);
}

#[tokio::test]
async fn sessions_survive_a_restart_through_the_state_file() {
    let idp = TestIdp::start().await;
    let state_file = temp_path("restart");
    let config = memory_config(&idp, Some(&state_file), "");
    let gateway = Gateway::start(&config).await;
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    gateway.stop().await;
    let restarted = Gateway::start(&config).await;
    assert_eq!(browser.get(&restarted.url("/auth")).await.status(), 200);
    let text = std::fs::read_to_string(&state_file).unwrap();
    assert!(
        serde_json::from_str::<Value>(&text).is_ok(),
        "the file is whole JSON"
    );
    // Sealed like Redis's values: no token, claim or session id in clear.
    let session_id = browser.cookies.get("tollgate").cloned().unwrap_or_default();
    for clear in ["eyJhbGci", "eyJ0eXAi", "eyJraWQi", "alice", "refresh"] {
        assert!(!text.contains(clear), "{clear} in the state file: {text}");
    }
    assert!(!session_id.is_empty() && !text.contains(&session_id));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&state_file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}

/// A logout with `state_file` is answered as done only once the file no longer holds the
/// session: before, the file was written about a second later, and a crash in that second
/// brought the ended session (and every copy of its cookie) back at the restart. A file that
/// cannot be written makes the logout a 503 that keeps the cookie, as a Redis delete no
/// replica confirmed.
#[tokio::test]
async fn a_logout_answered_is_in_the_state_file_so_a_crash_does_not_undo_it() {
    let idp = TestIdp::start().await;
    let state_file = temp_path("durable-logout");
    let config = memory_config(&idp, Some(&state_file), "");
    let gateway = Gateway::start(&config).await;
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    let copied = browser.cookies.clone();
    let mut copy = Browser::new();
    copy.cookies = copied.clone();
    // The write-behind has put the session in the file.
    for _ in 0..100 {
        if state_file.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(state_file.exists(), "the session never reached the file");
    let restarted = Gateway::start(&config).await;
    assert_eq!(copy.get(&restarted.url("/auth")).await.status(), 200);
    restarted.stop().await;
    let written = std::fs::read(&state_file).unwrap();

    // The file cannot be written (a directory where it goes): not answered as done.
    std::fs::remove_file(&state_file).ok();
    std::fs::create_dir(&state_file).unwrap();
    let signout = browser.get(&gateway.url("/signout")).await;
    assert_eq!(signout.status(), 503, "answered as done, unwritten");
    assert!(signout.headers().get("set-cookie").is_none());
    std::fs::remove_dir(&state_file).unwrap();
    // Back as it was, holding the session.
    std::fs::write(&state_file, &written).unwrap();

    // Written: answered as done, and a process started from the file at once (as after a
    // crash, the first one still running) does not know the session.
    assert_eq!(browser.get(&gateway.url("/signout")).await.status(), 302);
    let restarted = Gateway::start(&config).await;
    assert_eq!(
        copy.get(&restarted.url("/auth")).await.status(),
        401,
        "the ended session came back after a restart"
    );
    assert_eq!(copy.get(&gateway.url("/auth")).await.status(), 401);
}

/// A refresh with `state_file` is answered once the file holds its result, as a logout is:
/// a process started from the file at once (as after a crash) presents the rotated refresh
/// token, not the spent one the provider refuses (which ended the session).
#[tokio::test]
async fn a_refresh_answered_is_in_the_state_file_so_a_crash_does_not_undo_it() {
    let idp = TestIdp::start().await;
    let state_file = temp_path("durable-refresh");
    let config = memory_config(&idp, Some(&state_file), "");
    let clock = tollgate::clock::ManualClock::new();
    let gateway = Gateway::start_with_clock(&config, clock.clone()).await;
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    for _ in 0..100 {
        if state_file.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(state_file.exists(), "the session never reached the file");
    crate::refresh::advance(&clock, &idp, 250);
    assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 200);
    assert_eq!(idp.count("refresh"), 1);
    let restarted = Gateway::start_with_clock(&config, clock.clone()).await;
    crate::refresh::advance(&clock, &idp, 250);
    assert_eq!(
        browser.get(&restarted.url("/auth")).await.status(),
        200,
        "the restarted process holds the rotated refresh token"
    );
    assert_eq!(idp.count("refresh"), 2);
}

#[tokio::test]
async fn an_unreadable_state_file_is_moved_aside_not_lost() {
    let idp = TestIdp::start().await;
    let state_file = temp_path("corrupt");
    std::fs::write(&state_file, "{\"version\": 1, \"sessions\": {\"trunc").unwrap();
    let gateway = Gateway::start(&memory_config(&idp, Some(&state_file), "")).await;
    assert_eq!(
        reqwest::get(gateway.admin_url("/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
    let dir = state_file.parent().unwrap();
    let aside = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .any(|entry| entry.file_name().to_string_lossy().contains("unreadable"));
    assert!(aside, "the unreadable file is kept beside for the operator");
}

/// A server-side session is bounded as cookies are: a user of a provider where they can grow
/// a claim (here a 200 KB one, in both tokens and userinfo) kept it in each of their 100
/// sessions, copied in every cache and written again at each touch. Past the bound the
/// sign-in is refused and nothing is stored.
#[tokio::test]
async fn a_session_larger_than_a_server_side_store_takes_is_refused() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::start(&memory_config(&idp, None, "")).await;
    idp.set_user_claim("biography", serde_json::json!("x".repeat(200_000)));
    let mut browser = Browser::new();
    let refused = crate::support::gateway::sign_in(&mut browser, &gateway, "/").await;
    assert_eq!(refused.status(), 500);
    let listed: Vec<Value> = admin(&gateway, reqwest::Method::GET, "/admin/sessions?sub=alice")
        .await
        .json()
        .await
        .unwrap();
    assert!(listed.is_empty(), "nothing stored: {}", listed.len());
    idp.set_user_claim("biography", serde_json::json!("x".repeat(1_000)));
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
}

/// A refresh whose result is larger than the store takes ends the session: its refresh token
/// is spent, and a session left holding it would present it again.
#[tokio::test]
async fn a_refresh_too_large_to_store_ends_the_session() {
    let idp = TestIdp::start().await;
    let clock = tollgate::clock::ManualClock::new();
    let config = memory_config(&idp, None, "refresh_before = \"60s\"\n");
    let gateway = Gateway::start_with_clock(&config, clock.clone()).await;
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 200);
    idp.set_user_claim("biography", serde_json::json!("x".repeat(200_000)));
    crate::refresh::advance(&clock, &idp, 250);
    assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 401);
    assert_eq!(idp.count("refresh"), 1);
    let listed: Vec<Value> = admin(&gateway, reqwest::Method::GET, "/admin/sessions?sub=alice")
        .await
        .json()
        .await
        .unwrap();
    assert!(listed.is_empty(), "ended: {}", listed.len());
    // Past the minute a refresh's result is kept for: a session left holding the spent
    // token would present it again now.
    crate::refresh::advance(&clock, &idp, 61);
    assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 401);
    assert_eq!(
        idp.count("refresh"),
        1,
        "its spent token never presented again"
    );
}

#[tokio::test]
async fn admin_api_lists_and_ends_sessions_and_requires_the_token() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::start(&memory_config(&idp, None, "")).await;
    let (mut first, mut second) = (Browser::new(), Browser::new());
    crate::support::gateway::signed_in(&mut first, &gateway).await;
    crate::support::gateway::signed_in(&mut second, &gateway).await;
    let client = reqwest::Client::new();
    assert_eq!(
        client
            .get(gateway.admin_url("/admin/sessions"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        client
            .get(gateway.admin_url("/admin/sessions"))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        client
            .get(gateway.url("/admin/sessions"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .status(),
        404,
        "not on the public listener"
    );
    let listed = admin(&gateway, reqwest::Method::GET, "/admin/sessions?sub=alice").await;
    assert_eq!(
        listed.headers()["cache-control"],
        "no-store",
        "users' sessions are for no cache to keep"
    );
    let list: Vec<Value> = listed.json().await.unwrap();
    assert_eq!(list.len(), 2);
    assert!(
        !list[0]
            .to_string()
            .contains(first.cookies["tollgate"].trim_start_matches("s."))
    );
    let handle = list[0]["handle"].as_str().unwrap();
    assert_eq!(
        admin(
            &gateway,
            reqwest::Method::DELETE,
            &format!("/admin/sessions/{handle}")
        )
        .await
        .status(),
        204
    );
    assert_eq!(
        admin(
            &gateway,
            reqwest::Method::DELETE,
            &format!("/admin/sessions/{handle}")
        )
        .await
        .status(),
        404
    );
    let statuses = [
        first.get(&gateway.url("/auth")).await.status(),
        second.get(&gateway.url("/auth")).await.status(),
    ];
    assert_eq!(
        statuses
            .iter()
            .filter(|status| status.as_u16() == 200)
            .count(),
        1
    );
    let ended: Value = admin(
        &gateway,
        reqwest::Method::DELETE,
        "/admin/sessions?sub=alice",
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(ended["ended"], 1);
    assert_eq!(second.get(&gateway.url("/auth")).await.status(), 401);
    assert_eq!(first.get(&gateway.url("/auth")).await.status(), 401);
    let metrics = gateway.metrics().await;
    assert!(
        metrics.contains("tollgate_sessions_created_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tollgate_sessions_ended_total 2"),
        "{metrics}"
    );
    assert!(metrics.contains("tollgate_sessions_active 0"), "{metrics}");
}

#[tokio::test]
async fn backchannel_logout_ends_the_sessions_of_a_sid_and_refuses_bad_or_replayed_tokens() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::start(&memory_config(&idp, None, "")).await;
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    for (name, token) in [
        (
            "wrong audience",
            idp.logout_token()
                .claim("aud", json!("someone-else"))
                .sign(),
        ),
        (
            "no event",
            idp.logout_token().claim("events", json!({})).sign(),
        ),
        (
            "with a nonce",
            idp.logout_token().claim("nonce", json!("n")).sign(),
        ),
        (
            "no jti",
            idp.logout_token().claim("jti", Value::Null).sign(),
        ),
        ("an access token", idp.access_token().sign()),
        (
            "alg none",
            idp.logout_token()
                .alg(crate::support::idp::Alg::None)
                .sign(),
        ),
    ] {
        assert_eq!(
            gateway.backchannel_logout(&token).await.status(),
            400,
            "{name}"
        );
        assert_eq!(
            browser.get(&gateway.url("/auth")).await.status(),
            200,
            "{name} must not end the session"
        );
    }
    let token = idp.logout_token().sign();
    let response = gateway.backchannel_logout(&token).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 401);
    assert_eq!(
        gateway.backchannel_logout(&token).await.status(),
        400,
        "a replayed logout token is refused"
    );
    // The test provider names every sign-in's session `provider-session-1`: a sign-in after
    // that session's logout (its ID token issued later) is a new one at a session that lives on.
    idp.advance_clock(2);
    let mut again = Browser::new();
    crate::support::gateway::signed_in(&mut again, &gateway).await;
    let by_sub = idp.logout_token().claim("sid", Value::Null).sign();
    assert_eq!(gateway.backchannel_logout(&by_sub).await.status(), 200);
    assert_eq!(
        again.get(&gateway.url("/auth")).await.status(),
        401,
        "without sid, every session of the sub ends"
    );
}

/// A logout token naming a `sid` and a `sub` ends that user's sessions that have no `sid` too:
/// their ID token carried none (Back-Channel Logout 1.0 §2.1 makes `sid` optional there), so
/// no `sid` can name them, and they survived the logout.
#[tokio::test]
async fn backchannel_logout_with_sid_and_sub_ends_the_users_sessions_without_a_sid() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::start(&memory_config(&idp, None, "")).await;
    idp.misbehave(crate::support::idp::Misbehaviour {
        no_sid: true,
        ..Default::default()
    });
    let mut without_sid = Browser::new();
    crate::support::gateway::signed_in(&mut without_sid, &gateway).await;
    // Another user's session without a `sid` stays.
    let token = idp
        .logout_token()
        .claim("sub", json!("someone-else"))
        .sign();
    assert_eq!(gateway.backchannel_logout(&token).await.status(), 200);
    assert_eq!(without_sid.get(&gateway.url("/auth")).await.status(), 200);
    let token = idp.logout_token().sign();
    assert_eq!(gateway.backchannel_logout(&token).await.status(), 200);
    assert_eq!(without_sid.get(&gateway.url("/auth")).await.status(), 401);
}

/// A `sid` in the userinfo answer, where the ID token had none, became the session's: a
/// back-channel logout naming the user's `sub` (with the provider's real `sid`) then matched
/// neither by `sid` nor as a session without one, and the session lived on. Only the ID token
/// names the provider session.
#[tokio::test]
async fn a_sid_from_userinfo_does_not_hide_a_session_from_backchannel_logout() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::start(&memory_config(&idp, None, "")).await;
    idp.misbehave(crate::support::idp::Misbehaviour {
        no_sid: true,
        userinfo_sid: Some("a-sid-from-userinfo"),
        ..Default::default()
    });
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    assert!(
        idp.count("userinfo") > 0,
        "userinfo was asked at the sign-in"
    );
    assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 200);
    let token = idp.logout_token().sign();
    assert_eq!(gateway.backchannel_logout(&token).await.status(), 200);
    assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 401);
}

/// Two providers may be two clients of one realm (one issuer): a logout token is for the
/// provider whose client it names, whichever of them comes first.
#[tokio::test]
async fn backchannel_logout_finds_the_provider_among_those_sharing_an_issuer() {
    let idp = TestIdp::start().await;
    let second_client = format!(
        "[[provider]]\nname = \"another-client\"\nissuer = \"{}\"\nclient_id = \"another-client\"\nclient_secret = \"another-secret\"\n\n[forward_auth]\n",
        idp.issuer()
    );
    let config = memory_config(&idp, None, "").replace("[forward_auth]\n", &second_client);
    let gateway = Gateway::start(&config).await;
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 200);
    let for_another = idp
        .logout_token()
        .claim("aud", json!("a-third-client"))
        .sign();
    assert_eq!(gateway.backchannel_logout(&for_another).await.status(), 400);
    assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 200);
    let response = gateway.backchannel_logout(&idp.logout_token().sign()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 401);
}

/// Two providers may also be the same client of one issuer (two `[[provider]]` entries with
/// other scopes): the provider sends one logout token for that client, and it ends the user's
/// sessions at both, whichever of them the session was made at.
#[tokio::test]
async fn backchannel_logout_ends_the_sessions_at_every_provider_of_the_same_client() {
    use crate::support::idp::{CLIENT_ID, CLIENT_SECRET};
    let idp = TestIdp::start().await;
    // Named to come before `corp`, where the browser signs in.
    let same_client = format!(
        "[[provider]]\nname = \"aaa-same-client\"\nissuer = \"{}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"{CLIENT_SECRET}\"\n\n[forward_auth]\n",
        idp.issuer()
    );
    let config = memory_config(&idp, None, "").replace("[forward_auth]\n", &same_client);
    let gateway = Gateway::start(&config).await;
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 200);
    let response = gateway.backchannel_logout(&idp.logout_token().sign()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 401);
}

/// A logout token is one logout of its client, whichever of the client's providers accepts it.
/// Which one does depends on each one's keys: here, after a key rotation, `corp` fetches the
/// new key after a second and the provider named before it only after five. The token was
/// recorded under `corp`'s name, and the other provider, once it had the key, accepted the
/// same token again and ended the session signed in after the logout.
#[tokio::test]
async fn a_logout_token_is_used_once_whichever_provider_of_its_client_accepts_it() {
    use crate::support::idp::{CLIENT_ID, CLIENT_SECRET};
    let idp = TestIdp::start().await;
    let same_client = format!(
        "[[provider]]\nname = \"aaa-same-client\"\nissuer = \"{}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"{CLIENT_SECRET}\"\njwks_refetch_interval = \"5s\"\n\n[forward_auth]\n",
        idp.issuer()
    );
    let config = memory_config(&idp, None, "")
        .replace(
            "jwks_refetch_interval = \"1h\"",
            "jwks_refetch_interval = \"1s\"",
        )
        .replace("[forward_auth]\n", &same_client);
    // The keys' refetch intervals run on this clock: moved by hand, as the provider's.
    let clock = tollgate::clock::ManualClock::new();
    let advance = |seconds: i64| {
        clock.advance(seconds);
        idp.advance_clock(seconds);
    };
    let gateway = Gateway::start_with_clock(&config, clock.clone()).await;
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    // The other provider, tried first, fetches its keys for another user's logout.
    let another = idp
        .logout_token()
        .claim("sid", json!("another-provider-session"))
        .claim("sub", json!("bob"))
        .sign();
    assert_eq!(gateway.backchannel_logout(&another).await.status(), 200);
    assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 200);
    idp.rotate_keys("rsa-rotated");
    let token = idp.logout_token().sign();
    // Neither may fetch the new key yet: 503, so the provider retries.
    assert_eq!(gateway.backchannel_logout(&token).await.status(), 503);
    // A second on, `corp` may: it accepts the token, the other provider still may not.
    advance(1);
    let fetched = idp.count("jwks");
    assert_eq!(gateway.backchannel_logout(&token).await.status(), 200);
    assert_eq!(idp.count("jwks"), fetched + 1, "`corp` fetched the new key");
    assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 401);
    // Signed in again, after the logout (its ID token issued after the logout token).
    advance(2);
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    assert_eq!(gateway.backchannel_logout(&token).await.status(), 400);
    // Five seconds after its last fetch the other provider fetches the new key for the
    // replay, and accepts the token's signature: the replay is still one.
    advance(3);
    let response = gateway.backchannel_logout(&token).await;
    assert_eq!(
        idp.count("jwks"),
        fetched + 2,
        "the other provider fetched the new key"
    );
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("replayed"));
    assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 200);
}

#[tokio::test]
async fn backchannel_logout_needs_a_server_side_store() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::forward_auth(&idp).await;
    assert_eq!(
        gateway
            .backchannel_logout(&idp.logout_token().sign())
            .await
            .status(),
        501
    );
    // Counted once, under its own result (the provider's logouts are not carried out).
    let metrics = gateway.metrics().await;
    assert!(
        metrics.contains(
            "tollgate_requests_total{role=\"backchannel_logout\",result=\"not_server_side\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn idle_sessions_end_and_used_ones_do_not() {
    let idp = TestIdp::start().await;
    let clock = tollgate::clock::ManualClock::new();
    let config = memory_config(&idp, None, "idle_timeout = \"10m\"\n");
    let gateway = Gateway::start_with_clock(&config, clock.clone()).await;
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    for _ in 0..3 {
        clock.advance(300);
        idp.advance_clock(300);
        assert_eq!(
            browser.get(&gateway.url("/auth")).await.status(),
            200,
            "used every five minutes"
        );
    }
    clock.advance(601);
    assert_eq!(
        browser.get(&gateway.url("/auth")).await.status(),
        401,
        "idle for longer than idle_timeout"
    );
}

#[tokio::test]
async fn a_short_idle_timeout_never_ends_a_session_in_use() {
    let idp = TestIdp::start().await;
    let clock = tollgate::clock::ManualClock::new();
    let config = memory_config(&idp, None, "idle_timeout = \"10s\"\n");
    let gateway = Gateway::start_with_clock(&config, clock.clone()).await;
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    // Used every 6 s for a minute: each use is within idle_timeout of the one before.
    for _ in 0..10 {
        clock.advance(6);
        idp.advance_clock(6);
        assert_eq!(
            browser.get(&gateway.url("/auth")).await.status(),
            200,
            "used every six seconds"
        );
    }
    clock.advance(11);
    assert_eq!(
        browser.get(&gateway.url("/auth")).await.status(),
        401,
        "idle for longer than idle_timeout"
    );
}

/// A logout token that cannot be checked, because the provider rotated its keys and its JWKS
/// endpoint fails meanwhile, is answered 503, not 400: a provider retries a 5xx and takes a
/// 400 as final, which left the user's sessions alive. The answer names no internal URL.
#[tokio::test]
async fn a_backchannel_logout_whose_keys_cannot_be_had_is_503_and_carried_out_on_retry() {
    use crate::support::idp::{JwksFault, Misbehaviour};
    let idp = TestIdp::start().await;
    let config = memory_config(&idp, None, "").replace(
        "jwks_refetch_interval = \"1h\"",
        "jwks_refetch_interval = \"1s\"",
    );
    assert!(config.contains("jwks_refetch_interval = \"1s\""));
    let gateway = Gateway::start(&config).await;
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    idp.rotate_keys("rsa-rotated");
    idp.misbehave(Misbehaviour {
        jwks_fault: JwksFault::Status(500),
        ..Misbehaviour::default()
    });
    let token = idp.logout_token().sign();
    // The provider retries while the keys cannot be fetched: 503 each time, first because the
    // next fetch is not due (the login's was just now), then because it failed.
    let failed = "role=\"backchannel_logout\",result=\"keys_unavailable\"";
    for _ in 0..40 {
        let response = gateway.backchannel_logout(&token).await;
        assert_eq!(response.status(), 503);
        let body = response.text().await.unwrap();
        assert!(!body.contains("127.0.0.1"), "no internal URL: {body}");
        if gateway.metrics().await.contains(failed) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let metrics = gateway.metrics().await;
    assert!(
        metrics.contains(failed),
        "the failed fetch is counted as such: {metrics}"
    );
    assert_eq!(
        browser.get(&gateway.url("/auth")).await.status(),
        200,
        "nothing ended yet"
    );
    idp.misbehave(Misbehaviour::default());
    // The provider retries; the keys are fetched again once the refetch interval is over.
    let mut status = 503;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        status = gateway.backchannel_logout(&token).await.status().as_u16();
        if status != 503 {
            break;
        }
    }
    assert_eq!(status, 200, "the retry is carried out");
    assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 401);
    // A made-up `kid` while the keys are fetched: refused as invalid once they were fetched
    // again for it (before, 503: the next fetch is not due, and a retry could find a key
    // rotated in since; not counted as a failure, since anyone can send one).
    let made_up = idp.logout_token().kid(Some("made-up")).sign();
    let mut statuses = Vec::new();
    for _ in 0..40 {
        let status = gateway.backchannel_logout(&made_up).await.status().as_u16();
        statuses.push(status);
        if status != 503 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(statuses.last(), Some(&400), "{statuses:?}");
}

/// One user signing in again and again (silent SSO in a loop): the store holds at most
/// `MAX_SESSIONS_PER_USER` of theirs, the newest kept. With `oldest_known`, the first one
/// signed in is the one ended (the memory store keeps the order of sign-ins; Redis knows it to
/// the second, and sessions begun in one second tie).
pub(crate) async fn one_user_holds_at_most_the_limit_of_sessions(
    gateway: &Gateway,
    oldest_known: bool,
) {
    let limit = tollgate::session::MAX_SESSIONS_PER_USER;
    let mut browsers = Vec::new();
    for _ in 0..limit {
        let mut browser = Browser::new();
        crate::support::gateway::signed_in(&mut browser, gateway).await;
        browsers.push(browser);
    }
    let mut signed_in = 0;
    for browser in &mut browsers {
        if browser.get(&gateway.url("/auth")).await.status() == 200 {
            signed_in += 1;
        }
    }
    assert_eq!(signed_in, limit, "up to the limit, every session is kept");
    let mut newest = Browser::new();
    crate::support::gateway::signed_in(&mut newest, gateway).await;
    assert_eq!(newest.get(&gateway.url("/auth")).await.status(), 200);
    let mut ended = Vec::new();
    for (index, browser) in browsers.iter_mut().enumerate() {
        if browser.get(&gateway.url("/auth")).await.status() == 401 {
            ended.push(index);
        }
    }
    assert_eq!(ended.len(), 1, "one session ended: {ended:?}");
    if oldest_known {
        assert_eq!(ended, [0], "the oldest ended");
    }
    let listed: Vec<Value> = admin(gateway, reqwest::Method::GET, "/admin/sessions?sub=alice")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed.len(), limit);
}

#[tokio::test]
async fn one_user_signing_in_in_a_loop_holds_at_most_the_limit_of_memory_sessions() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::start(&memory_config(&idp, None, "")).await;
    one_user_holds_at_most_the_limit_of_sessions(&gateway, true).await;
}
