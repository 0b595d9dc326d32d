//! The rules of `IssuerState`, checked on `MemoryState`. `RedisState` is held to the same
//! rules through the token service's endpoints on two replicas sharing a real Redis,
//! standalone and Cluster (`tests/it/token_service_replicas.rs`: a code redeemed once and its
//! replay revoking what it issued, refresh-token reuse ending the grant, revocations, failed
//! client authentication counted across replicas).

use super::memory::MemoryState;
use super::*;

fn pending(client_id: &str, issued_at: UnixTime) -> PendingCode {
    PendingCode {
        client_id: client_id.to_owned(),
        redirect_uri: "https://app.example/cb".to_owned(),
        code_challenge: None,
        nonce: None,
        scopes: vec!["openid".to_owned()],
        principal: Principal::Local("alice".to_owned()),
        issued_at,
        signed_in: super::SignedIn::AtIssue,
    }
}

fn redemption(grant_id: Option<&str>) -> Redemption {
    Redemption {
        grant_id: grant_id.map(str::to_owned),
        access_jti: crate::random::token(),
        access_expires_at: 10_000,
    }
}

fn grant(client_id: &str) -> Grant {
    Grant {
        client_id: client_id.to_owned(),
        principal: Principal::Local("alice".to_owned()),
        scopes: vec!["openid".to_owned()],
        auth_time: Some(1_000),
        signed_in: super::SignedIn::AtIssue,
    }
}

/// A successor's lifetime far beyond every test's clock.
const LONG: Successor = Successor {
    expires_at: 5_000,
    grant_until: 10_000,
    rotations_most: 1_000,
};

/// Runs a store future to its end (the memory store's are ready at once).
fn run<T>(future: StateFuture<'_, T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .map(|runtime| runtime.block_on(future))
        .expect("runtime")
        .expect("memory store")
}

#[test]
fn a_code_is_taken_once_and_its_replay_revokes_what_it_issued() {
    let state = MemoryState::default();
    let grant_id = crate::random::token();
    run(state.put_code("c1", &pending("app", 100)));
    let first = redemption(Some(&grant_id));
    assert_eq!(
        run(state.take_code("c1", &first, 101)),
        CodeUse::Pending(Box::new(pending("app", 100)))
    );
    run(state.open_grant(&grant_id, &grant("app"), 10_000, 100));
    assert!(!run(
        state.is_revoked(Some(&first.access_jti), Some(&grant_id))
    ));

    let second = redemption(None);
    assert_eq!(run(state.take_code("c1", &second, 102)), CodeUse::Replayed);
    assert!(run(state.is_revoked(Some(&first.access_jti), None)));
    assert!(run(state.is_revoked(None, Some(&grant_id))));
    // The replay's own record was never kept.
    assert!(!run(state.is_revoked(Some(&second.access_jti), None)));
}

#[test]
fn a_replay_before_the_redemption_opened_its_grant_still_revokes_it() {
    // The replay lands between the first redemption's `take_code` and its `open_grant`.
    let state = MemoryState::default();
    let grant_id = crate::random::token();
    run(state.put_code("c1", &pending("app", 100)));
    let first = redemption(Some(&grant_id));
    assert!(matches!(
        run(state.take_code("c1", &first, 101)),
        CodeUse::Pending(_)
    ));
    assert_eq!(
        run(state.take_code("c1", &redemption(None), 101)),
        CodeUse::Replayed
    );
    run(state.open_grant(&grant_id, &grant("app"), 10_000, 101));
    assert!(run(state.is_revoked(None, Some(&grant_id))));
    let token = run(state.issue_refresh_token(&grant_id, 5_000, 10_000, 101));
    assert_eq!(
        run(state.rotate_refresh_token(&token, "app", LONG, 102)),
        RefreshUse::Invalid,
        "the grant's refresh token is refused"
    );
}

#[test]
fn an_unknown_or_expired_code_is_unknown() {
    let state = MemoryState::default();
    assert_eq!(
        run(state.take_code("nope", &redemption(None), 100)),
        CodeUse::Unknown
    );
    run(state.put_code("old", &pending("app", 100)));
    assert_eq!(
        run(state.take_code("old", &redemption(None), 100 + CODE_LIFETIME + 1)),
        CodeUse::Unknown
    );
}

#[test]
fn a_refresh_token_is_spent_once_and_reuse_ends_the_grant() {
    let state = MemoryState::default();
    let grant_id = crate::random::token();
    run(state.open_grant(&grant_id, &grant("app"), 10_000, 100));
    let token = run(state.issue_refresh_token(&grant_id, 5_000, 10_000, 100));
    assert_eq!(grant_of_refresh_token(&token), Some(grant_id.as_str()));

    let RefreshUse::Fresh(next) = run(state.rotate_refresh_token(&token, "app", LONG, 100)) else {
        panic!("the token was fresh");
    };
    assert_eq!(grant_of_refresh_token(&next), Some(grant_id.as_str()));
    assert_ne!(next, token);
    assert_eq!(
        run(state.rotate_refresh_token(&token, "app", LONG, 101)),
        RefreshUse::Reused
    );
    assert!(run(state.is_revoked(None, Some(&grant_id))));
    // The rotated token died with its grant.
    assert_eq!(
        run(state.rotate_refresh_token(&next, "app", LONG, 102)),
        RefreshUse::Invalid
    );
}

#[test]
fn a_rotated_tokens_successor_is_spent_once_too_and_a_grant_is_read_by_its_client_only() {
    let state = MemoryState::default();
    let grant_id = crate::random::token();
    run(state.open_grant(&grant_id, &grant("app"), 10_000, 100));
    assert_eq!(run(state.grant(&grant_id, "app")), Some(grant("app")));
    assert_eq!(run(state.grant(&grant_id, "other")), None);
    let token = run(state.issue_refresh_token(&grant_id, 5_000, 10_000, 100));
    let RefreshUse::Fresh(next) = run(state.rotate_refresh_token(&token, "app", LONG, 100)) else {
        panic!("the token was fresh");
    };
    let short = Successor {
        expires_at: 300,
        ..LONG
    };
    let RefreshUse::Fresh(last) = run(state.rotate_refresh_token(&next, "app", short, 101)) else {
        panic!("the successor was fresh");
    };
    assert_eq!(
        run(state.rotate_refresh_token(&next, "app", LONG, 102)),
        RefreshUse::Reused
    );
    assert_eq!(
        run(state.rotate_refresh_token(&last, "app", LONG, 103)),
        RefreshUse::Invalid,
        "the grant is revoked"
    );
    // The successor lives as long as it was told.
    let other = crate::random::token();
    run(state.open_grant(&other, &grant("app"), 10_000, 100));
    let token = run(state.issue_refresh_token(&other, 5_000, 10_000, 100));
    let RefreshUse::Fresh(next) = run(state.rotate_refresh_token(&token, "app", short, 100)) else {
        panic!("the token was fresh");
    };
    assert_eq!(
        run(state.rotate_refresh_token(&next, "app", LONG, 300)),
        RefreshUse::Invalid
    );
}

#[test]
fn expired_refresh_tokens_and_ended_grants_are_dropped_as_more_are_issued() {
    let state = MemoryState::default();
    let ended = crate::random::token();
    run(state.open_grant(&ended, &grant("app"), 150, 100));
    run(state.issue_refresh_token(&ended, 150, 150, 100));
    // A client refreshing every second for almost an hour: each refresh rotates its token
    // (valid 50 s) and pushes its grant back.
    let live = crate::random::token();
    run(state.open_grant(&live, &grant("app"), 200, 100));
    let mut latest = String::new();
    for now in 100..3_600 {
        latest = run(state.issue_refresh_token(&live, now + 50, now + 100, now));
    }
    let (grants, tokens) = state.held();
    assert_eq!(grants, 1, "the grant that ended is gone, the live one kept");
    assert!(tokens <= 2 * 1024, "{tokens} refresh tokens held");
    assert!(matches!(
        run(state.rotate_refresh_token(&latest, "app", LONG, 3_600)),
        RefreshUse::Fresh(..)
    ));
}

#[test]
fn a_refresh_token_of_another_client_or_expired_is_invalid_and_not_spent() {
    let state = MemoryState::default();
    let grant_id = crate::random::token();
    run(state.open_grant(&grant_id, &grant("app"), 10_000, 100));
    let token = run(state.issue_refresh_token(&grant_id, 200, 10_000, 100));
    assert_eq!(
        run(state.rotate_refresh_token(&token, "other", LONG, 100)),
        RefreshUse::Invalid
    );
    assert_eq!(
        run(state.rotate_refresh_token(&token, "app", LONG, 200)),
        RefreshUse::Invalid
    );
    assert_eq!(
        run(state.rotate_refresh_token("garbage", "app", LONG, 100)),
        RefreshUse::Invalid
    );
    assert!(matches!(
        run(state.rotate_refresh_token(&token, "app", LONG, 199)),
        RefreshUse::Fresh(..)
    ));
}

#[test]
fn revoking_a_refresh_token_needs_its_client() {
    let state = MemoryState::default();
    let grant_id = crate::random::token();
    run(state.open_grant(&grant_id, &grant("app"), 10_000, 100));
    let token = run(state.issue_refresh_token(&grant_id, 5_000, 10_000, 100));
    assert!(!run(state.revoke_refresh_token(&token, "other")));
    assert!(!run(state.is_revoked(None, Some(&grant_id))));
    assert!(run(state.revoke_refresh_token(&token, "app")));
    assert!(run(state.is_revoked(None, Some(&grant_id))));
    assert_eq!(
        run(state.rotate_refresh_token(&token, "app", LONG, 100)),
        RefreshUse::Invalid
    );
}

#[test]
fn a_revoked_access_token_is_refused_by_jti() {
    let state = MemoryState::default();
    run(state.revoke_access("j1", None, 500, 100));
    assert!(run(state.is_revoked(Some("j1"), None)));
    assert!(!run(state.is_revoked(Some("j2"), None)));
    assert!(!run(state.is_revoked(None, None)));
}

#[test]
fn ten_failures_in_a_window_limit_a_key_and_the_window_ends() {
    let state = MemoryState::default();
    let keys = ["client:app".to_owned(), "address:192.0.2.1".to_owned()];
    for _ in 0..MAX_FAILURES - 1 {
        run(state.count_failure(&keys, 100));
    }
    assert!(!run(state.limited(&keys[..1], 100)));
    run(state.count_failure(&keys, 101));
    assert!(run(state.limited(&keys[..1], 101)));
    assert!(run(state.limited(&keys[1..], 101)));
    assert!(!run(state.limited(&["client:other".to_owned()], 101)));
    assert!(!run(state.limited(&keys, 100 + FAILURE_WINDOW)));
}

/// Made-up user names fill a full in-process store first, and go first: a user's key and a
/// new address are still counted, so guessing a user's password stays limited.
#[test]
fn made_up_names_never_push_out_what_protects_users() {
    let state = MemoryState::default();
    for index in 0..10_000 {
        run(state.count_failure(&[format!("name:{index}")], 100));
    }
    let alice = ["user:alice".to_owned(), "address:192.0.2.9".to_owned()];
    for _ in 0..MAX_FAILURES {
        run(state.count_failure(&alice, 101));
    }
    assert!(run(state.limited(&alice[..1], 101)), "the user is counted");
    assert!(
        run(state.limited(&alice[1..], 101)),
        "the address is counted"
    );
}

#[test]
fn a_refresh_token_names_its_grant_only_when_well_formed() {
    let grant_id = crate::random::token();
    let token = new_refresh_token(&grant_id);
    assert_eq!(grant_of_refresh_token(&token), Some(grant_id.as_str()));
    assert_eq!(grant_of_refresh_token("a.b"), None);
    assert_eq!(grant_of_refresh_token(&format!("{grant_id}.")), None);
    assert_eq!(
        grant_of_refresh_token(&format!("{grant_id}.{{x}}{}", &grant_id[4..])),
        None
    );
}

/// A client refreshing in a loop added a spent record per refresh, each kept as long as the
/// token lived (a day), without bound. A grant may rotate `rotations_most` times; then its
/// token is refused unspent (the user signs in again). Every spent token stays remembered, so
/// the reuse of the first one still ends the grant after a thousand rotations: a thief who
/// refreshes in a loop erases no evidence.
#[test]
fn a_grant_rotates_a_bounded_number_of_times_and_remembers_every_spent_token() {
    let state = MemoryState::default();
    let grant_id = crate::random::token();
    run(state.open_grant(&grant_id, &grant("app"), 10_000, 100));
    let first = run(state.issue_refresh_token(&grant_id, 5_000, 10_000, 100));
    let mut latest = first.clone();
    for _ in 0..LONG.rotations_most {
        let RefreshUse::Fresh(next) = run(state.rotate_refresh_token(&latest, "app", LONG, 100))
        else {
            panic!("the latest token was fresh");
        };
        latest = next;
    }
    assert_eq!(
        run(state.rotate_refresh_token(&latest, "app", LONG, 101)),
        RefreshUse::Exhausted
    );
    assert!(!run(state.is_revoked(None, Some(&grant_id))));
    assert_eq!(
        run(state.rotate_refresh_token(&first, "app", LONG, 101)),
        RefreshUse::Reused,
        "the first spent token, a thousand rotations on"
    );
    assert!(run(state.is_revoked(None, Some(&grant_id))));
}

/// A holder's grants beyond `MAX_GRANTS_PER_USER` at one client end oldest first, and their
/// refresh tokens, spent ones included, are forgotten: the store holds no more of them.
#[test]
fn a_holders_grants_beyond_the_limit_take_their_refresh_tokens_with_them() {
    let state = MemoryState::default();
    let mut first = None;
    for n in 0..=MAX_GRANTS_PER_USER {
        let grant_id = crate::random::token();
        run(state.open_grant(&grant_id, &grant("app"), 10_000, 100));
        let token = run(state.issue_refresh_token(&grant_id, 5_000, 10_000, 100));
        let RefreshUse::Fresh(_) = run(state.rotate_refresh_token(&token, "app", LONG, 100)) else {
            panic!("fresh");
        };
        if n == 0 {
            first = Some(grant_id);
        }
    }
    assert!(run(state.is_revoked(None, first.as_deref())));
    assert_eq!(
        state.held(),
        (MAX_GRANTS_PER_USER + 1, 2 * MAX_GRANTS_PER_USER),
        "the ended grant's two refresh tokens are gone (the grant stays, revoked, until it lapses)"
    );
}

/// A revoked grant (here by its refresh token's reuse; `/revoke` does the same) keeps its
/// refresh tokens until it lapses, so it still counts towards its holder's limit: a user
/// revoking each grant they open cannot get past the limit that way.
#[test]
fn revoked_grants_count_towards_their_holders_limit() {
    let state = MemoryState::default();
    for _ in 0..=MAX_GRANTS_PER_USER {
        let grant_id = crate::random::token();
        run(state.open_grant(&grant_id, &grant("app"), 10_000, 100));
        let token = run(state.issue_refresh_token(&grant_id, 5_000, 10_000, 100));
        let RefreshUse::Fresh(_) = run(state.rotate_refresh_token(&token, "app", LONG, 100)) else {
            panic!("fresh");
        };
        assert_eq!(
            run(state.rotate_refresh_token(&token, "app", LONG, 100)),
            RefreshUse::Reused
        );
    }
    assert_eq!(state.held().1, 2 * MAX_GRANTS_PER_USER);
}
