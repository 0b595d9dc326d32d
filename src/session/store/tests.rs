//! Unit tests of `Sessions` over the memory store: a session is found by its cookie, ends when
//! idle or when ended, and a refreshed session is stored only over the token it spent.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, header};

use super::*;
use crate::secret::Secret;
use crate::session::request_cookies;
use crate::session::seal::Sealer;

const NOW: UnixTime = 1_800_000_000;

fn sessions(idle_seconds: u64) -> Sessions {
    let jar = CookieJar::new(
        Sealer::new(&[Secret::new(
            "a-unit-test-session-secret-a-unit-test".to_owned(),
        )]),
        "tollgate".to_owned(),
    );
    Sessions::new(
        jar,
        SessionBackend::Memory(Arc::new(MemoryStore::open(
            None,
            Sealer::new(&[Secret::new(
                "a-unit-test-session-secret-a-unit-test".to_owned(),
            )]),
            NOW,
        ))),
        std::time::Duration::from_secs(idle_seconds),
        Arc::new(Metrics::new()),
    )
}

fn session(refresh_token: &str) -> Session {
    Session {
        provider: "corp".to_owned(),
        claims: crate::token::Claims::default(),
        id_token: "id".to_owned(),
        access_token: Some("at".to_owned()),
        refresh_token: Some(refresh_token.to_owned()),
        access_expires_at: Some(NOW + 300),
        created_at: NOW,
        expires_at: NOW + 3600,
    }
}

/// The request headers a browser sends back after these `Set-Cookie` values.
pub(crate) fn cookie_header(set_cookies: &[String]) -> HeaderMap {
    let pairs: Vec<&str> = set_cookies
        .iter()
        .filter_map(|cookie| cookie.split(';').next())
        .collect();
    let mut headers = HeaderMap::new();
    headers.insert(
        header::COOKIE,
        HeaderValue::from_str(&pairs.join("; ")).unwrap(),
    );
    headers
}

const ATTRIBUTES: CookieAttributes = CookieAttributes {
    secure: true,
    bound: true,
};

#[tokio::test]
async fn a_created_session_is_found_by_its_cookie_and_not_after_it_ended() {
    let sessions = sessions(3600);
    let set = sessions
        .create(session("r-1"), &Cookies::default(), NOW, ATTRIBUTES)
        .await
        .unwrap();
    let headers = cookie_header(&set);
    let cookies = request_cookies(&headers);
    let loaded = sessions.load(&cookies, NOW + 10).await.unwrap().unwrap();
    assert_eq!(loaded.refresh_token.as_deref(), Some("r-1"));
    assert_eq!(sessions.active(), Some(1));
    let (ended, _) = sessions.end(&cookies, NOW + 20, ATTRIBUTES).await.unwrap();
    assert!(ended.is_some());
    assert!(sessions.load(&cookies, NOW + 30).await.is_err(), "ended");
    assert_eq!(sessions.active(), Some(0));
}

#[tokio::test]
async fn an_idle_session_ends_and_a_used_one_lives_on() {
    let sessions = sessions(60);
    let set = sessions
        .create(session("r-1"), &Cookies::default(), NOW, ATTRIBUTES)
        .await
        .unwrap();
    let headers = cookie_header(&set);
    let cookies = request_cookies(&headers);
    // Used every 50 s: never idle for 60 s.
    for step in 1..=4 {
        assert!(
            sessions
                .load(&cookies, NOW + 50 * step)
                .await
                .unwrap()
                .is_some()
        );
    }
    assert!(
        sessions.load(&cookies, NOW + 200 + 61).await.is_err(),
        "idle for longer than idle_timeout"
    );
}

#[tokio::test]
async fn a_refresh_is_stored_only_over_the_token_it_spent() {
    let sessions = sessions(3600);
    let set = sessions
        .create(session("r-1"), &Cookies::default(), NOW, ATTRIBUTES)
        .await
        .unwrap();
    let headers = cookie_header(&set);
    let cookies = request_cookies(&headers);
    let stored = sessions
        .replace_refreshed(
            &cookies,
            &session("r-1"),
            &session("r-2"),
            NOW + 1,
            ATTRIBUTES,
        )
        .await
        .unwrap();
    assert!(matches!(stored, Replaced::Stored(_)));
    // A second refresh of the spent token finds the first one's result and stores nothing.
    let late = sessions
        .replace_refreshed(
            &cookies,
            &session("r-1"),
            &session("r-3"),
            NOW + 2,
            ATTRIBUTES,
        )
        .await
        .unwrap();
    match late {
        Replaced::Superseded(current) => {
            assert_eq!(current.refresh_token.as_deref(), Some("r-2"));
        }
        Replaced::Stored(_) => panic!("a spent token's refresh overwrote a newer one"),
    }
    let loaded = sessions.load(&cookies, NOW + 3).await.unwrap().unwrap();
    assert_eq!(loaded.refresh_token.as_deref(), Some("r-2"));
}

/// Sessions over a memory store kept in `path`.
async fn with_state_file(path: &std::path::Path) -> (Sessions, Arc<MemoryStore>) {
    let secret = || {
        Sealer::new(&[Secret::new(
            "a-unit-test-session-secret-a-unit-test".to_owned(),
        )])
    };
    let store = Arc::new(MemoryStore::open(Some(path.to_owned()), secret(), NOW));
    let sessions = Sessions::new(
        CookieJar::new(secret(), "tollgate".to_owned()),
        SessionBackend::Memory(store.clone()),
        std::time::Duration::from_secs(3600),
        Arc::new(Metrics::new()),
    );
    (sessions, store)
}

use crate::session::memory_store::tests::state_path;

/// A session of `alice` at `corp`.
fn alice() -> Arc<Session> {
    Arc::new(Session {
        claims: Arc::new(
            serde_json::json!({"sub": "alice"})
                .as_object()
                .unwrap()
                .clone(),
        ),
        ..session("r")
    })
}

const ALICE: [SessionSelector<'static>; 1] = [SessionSelector::SubAt {
    provider: "corp",
    sub: "alice",
}];

/// A back-channel logout token used before a restart is still refused after it: the memory
/// store's state file keeps it (it was kept only in the process, so a replay after a restart
/// signed the user out of the session they had signed in to since).
#[tokio::test]
async fn a_used_logout_token_is_still_refused_after_a_restart() {
    let path = state_path("logout-tokens");
    let (before, store) = with_state_file(&path).await;
    store.insert("alice-session".to_owned(), alice(), NOW);
    let writer = store.clone();
    let write_behind = tokio::spawn(async move { writer.write_behind().await });
    assert!(
        !before
            .logout_token_used("corp", "jti-1", NOW)
            .await
            .unwrap()
    );
    before
        .end_for_logout_token(&ALICE, ("corp", "jti-1", NOW), NOW)
        .await
        .expect("the state file holds it");
    write_behind.abort();
    drop(before);

    let (after, reopened) = with_state_file(&path).await;
    assert!(
        reopened.get("alice-session").is_none(),
        "the file holds the logout's end too"
    );
    let used = |provider, jti, at| after.logout_token_used(provider, jti, at);
    assert!(used("corp", "jti-1", NOW + 60).await.unwrap());
    assert!(!used("corp", "jti-2", NOW + 60).await.unwrap());
    assert!(!used("other", "jti-1", NOW + 60).await.unwrap());
    assert!(
        !used("corp", "jti-1", NOW + LOGOUT_TOKEN_MEMORY)
            .await
            .unwrap(),
        "forgotten once its age alone refuses it"
    );
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

/// A back-channel logout whose state file is not written answers 503 and leaves its token
/// unused, so the provider's retry is served rather than refused as a replay.
#[tokio::test(start_paused = true)]
async fn a_logout_token_whose_logout_was_not_written_is_not_taken_as_used() {
    let path = state_path("logout-unwritten");
    // No write-behind runs: no write comes.
    let (sessions, store) = with_state_file(&path).await;
    store.insert("id".to_owned(), alice(), NOW);
    assert!(
        sessions
            .end_for_logout_token(&ALICE, ("corp", "jti-1", NOW), NOW)
            .await
            .is_err()
    );
    assert!(
        !sessions
            .logout_token_used("corp", "jti-1", NOW)
            .await
            .unwrap()
    );
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

/// A reload that shortens `session.lifetime` ends the sessions already older than the new one
/// (they kept the `expires_at` of their login's lifetime), with the memory store it keeps and
/// with the cookie store.
#[tokio::test]
async fn a_shortened_lifetime_ends_older_sessions() {
    let secret = || {
        Sealer::new(&[Secret::new(
            "a-unit-test-session-secret-a-unit-test".to_owned(),
        )])
    };
    let store = Arc::new(MemoryStore::open(None, secret(), NOW));
    let with_lifetime = |seconds: u64| {
        Sessions::new(
            CookieJar::new(secret(), "tollgate".to_owned())
                .with_lifetime(std::time::Duration::from_secs(seconds)),
            SessionBackend::Memory(store.clone()),
            std::time::Duration::from_secs(3600),
            Arc::new(Metrics::new()),
        )
    };
    let before = with_lifetime(3600);
    let set = before
        .create(session("r-1"), &Cookies::default(), NOW, ATTRIBUTES)
        .await
        .unwrap();
    let headers = cookie_header(&set);
    let cookies = request_cookies(&headers);
    assert!(before.load(&cookies, NOW + 700).await.unwrap().is_some());
    let after = with_lifetime(600);
    assert!(after.load(&cookies, NOW + 700).await.is_err(), "memory");
    // The cookie store: the session is the cookie, sealed with its old `expires_at`.
    let jar = CookieJar::new(secret(), "tollgate".to_owned());
    let set = jar
        .write_session(&session("r-2"), &Cookies::default(), NOW, ATTRIBUTES)
        .unwrap();
    let headers = cookie_header(&set);
    let cookies = request_cookies(&headers);
    assert!(jar.session(&cookies, NOW + 700).is_ok());
    let shorter = CookieJar::new(secret(), "tollgate".to_owned())
        .with_lifetime(std::time::Duration::from_secs(600));
    assert!(shorter.session(&cookies, NOW + 599).is_ok());
    assert!(shorter.session(&cookies, NOW + 700).is_err(), "cookie");
}

/// `session`, of the provider session `sid`, its ID token issued at `iat`.
fn of_provider_session(refresh_token: &str, sid: &str, iat: UnixTime) -> Session {
    let mut claims = serde_json::Map::new();
    claims.insert("sub".to_owned(), serde_json::json!("alice"));
    claims.insert("sid".to_owned(), serde_json::json!(sid));
    claims.insert("iat".to_owned(), serde_json::json!(iat));
    Session {
        claims: Arc::new(claims),
        ..session(refresh_token)
    }
}

/// A back-channel logout scans the sessions of its `sid` once; a sign-in or refresh storing a
/// session of that provider session meanwhile (its ID token issued before the logout, its
/// write landing after the scan) is ended as it is stored, not left to live out its lifetime.
/// An ID token issued after the logout is a new sign-in at a provider session that lives on
/// (Keycloak ending one client's sessions), and stays.
#[tokio::test]
async fn a_session_stored_after_its_provider_session_ended_is_ended() {
    let sessions = sessions(3600);
    let ended = [SessionSelector::SidAt {
        provider: "corp",
        sid: "provider-session-2",
    }];
    let none = Cookies::default();
    let create = |refresh_token: &str, sid: &str, iat: UnixTime, now: UnixTime| {
        sessions.create(
            of_provider_session(refresh_token, sid, iat),
            &none,
            now,
            ATTRIBUTES,
        )
    };
    // A refresh whose new ID token names the provider session a logout ends meanwhile.
    let set = create("r-1", "provider-session-1", NOW - 10, NOW)
        .await
        .unwrap();
    let headers = cookie_header(&set);
    let cookies = request_cookies(&headers);
    assert_eq!(
        sessions
            .end_for_logout_token(&ended, ("corp", "jti-1", NOW), NOW)
            .await
            .unwrap(),
        0
    );
    let refreshed = of_provider_session("r-2", "provider-session-2", NOW - 1);
    assert!(
        sessions
            .replace_refreshed(&cookies, &session("r-1"), &refreshed, NOW + 1, ATTRIBUTES)
            .await
            .is_err()
    );
    assert!(sessions.load(&cookies, NOW + 2).await.is_err());
    // A sign-in of it, whose code was exchanged before the logout.
    let signed_in = create("r-3", "provider-session-2", NOW, NOW + 3).await;
    assert!(matches!(
        signed_in,
        Err(SessionError::Cookie(SessionCookieError::Expired))
    ));
    assert_eq!(sessions.active(), Some(0));
    // A sign-in after the logout at the same provider session, another provider session, and
    // the same one once it is long forgotten are not touched.
    for (sid, iat, now) in [
        ("provider-session-2", NOW + 1, NOW + 4),
        ("provider-session-3", NOW - 1, NOW + 4),
        (
            "provider-session-2",
            NOW - 1,
            NOW + 3 + ENDED_PROVIDER_SESSION_MEMORY,
        ),
    ] {
        assert!(create("r-4", sid, iat, now).await.is_ok(), "{sid} {iat}");
    }
    assert_eq!(sessions.active(), Some(3));
}

/// The same for a logout by `sub`: every session of the user, or (beside a `sid`) those of the
/// user whose ID token had no `sid`, stored after the scan with an ID token issued before it.
#[tokio::test]
async fn a_session_of_a_user_logged_out_meanwhile_is_ended_as_it_is_stored() {
    let sessions = sessions(3600);
    let none = Cookies::default();
    let without_sid = |iat: UnixTime| {
        let mut session = of_provider_session("r-1", "unused", iat);
        let mut claims = (*session.claims).clone();
        claims.remove("sid");
        session.claims = Arc::new(claims);
        session
    };
    let by_sub_without_sid = [SessionSelector::SubWithoutSidAt {
        provider: "corp",
        sub: "alice",
    }];
    sessions
        .end_for_logout_token(&by_sub_without_sid, ("corp", "jti-1", NOW), NOW)
        .await
        .unwrap();
    let refused = sessions
        .create(without_sid(NOW - 1), &none, NOW + 1, ATTRIBUTES)
        .await;
    assert!(refused.is_err(), "a session without a sid");
    let kept = sessions
        .create(
            of_provider_session("r-2", "provider-session-9", NOW - 1),
            &none,
            NOW + 1,
            ATTRIBUTES,
        )
        .await;
    assert!(kept.is_ok(), "its sid is not the one the logout named");
    assert_eq!(sessions.active(), Some(1));

    let by_sub = [SessionSelector::SubAt {
        provider: "corp",
        sub: "alice",
    }];
    sessions
        .end_for_logout_token(&by_sub, ("corp", "jti-2", NOW + 2), NOW + 2)
        .await
        .unwrap();
    assert_eq!(sessions.active(), Some(0));
    for session in [
        of_provider_session("r-3", "provider-session-10", NOW + 1),
        without_sid(NOW + 2),
    ] {
        let stored = sessions.create(session, &none, NOW + 3, ATTRIBUTES).await;
        assert!(stored.is_err());
    }
    assert!(
        sessions
            .create(without_sid(NOW + 3), &none, NOW + 3, ATTRIBUTES)
            .await
            .is_ok(),
        "issued after the logout"
    );
}
