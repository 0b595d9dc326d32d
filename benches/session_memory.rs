//! Memory per session of the `memory` store with realistic tokens, shaped like Keycloak's for a
//! browser login with `openid email profile`: an RS256 ID token and access token (realm and
//! client roles, scope, `sid`, …) and an HS512 refresh token, all real JWTs with random ids and
//! signatures, and the ID token's claims as the session's claims.
//!
//! The figure is the resident memory growth for 50 000 sessions divided by 50 000, after every
//! session was read once (so the store's cache of recently used, expanded sessions is full too).
//!
//! `cargo bench --bench session_memory`

// A benchmark stops on what it did not expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tollgate::session::Session;
use tollgate::session::memory_store::MemoryStore;

const SESSIONS: usize = 50_000;

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Deterministic pseudo-random bytes (splitmix64), so runs compare.
fn random_bytes(length: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..length)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) as u8
        })
        .collect()
}

fn uuid(seed: u64) -> String {
    let hex: String = random_bytes(16, seed)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn jwt(header: &Value, payload: &Value, signature_length: usize, seed: u64) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        URL_SAFE_NO_PAD.encode(random_bytes(signature_length, seed))
    )
}

fn session(index: u64) -> Session {
    let issuer = "https://login.example.com/realms/corp";
    let sub = uuid(index);
    let sid = uuid(index + 1_000_000);
    let now = 1_800_000_000;
    let rs256 =
        json!({"alg": "RS256", "typ": "JWT", "kid": "4pXWs0YpGoAbmXw7LEEfLn2dQ2-7KJxKkUcWwPBFDhk"});
    let id_claims = json!({
        "exp": now + 300, "iat": now, "auth_time": now, "jti": uuid(index + 2_000_000),
        "iss": issuer, "aud": "tollgate", "sub": sub, "typ": "ID", "azp": "tollgate",
        "nonce": URL_SAFE_NO_PAD.encode(random_bytes(32, index + 3_000_000)),
        "session_state": sid, "at_hash": URL_SAFE_NO_PAD.encode(random_bytes(16, index + 4_000_000)),
        "acr": "1", "sid": sid, "email_verified": true, "name": "Robert Example",
        "preferred_username": "robert", "given_name": "Robert", "family_name": "Example",
        "email": "robert@example.com",
    });
    let access_claims = json!({
        "exp": now + 300, "iat": now, "auth_time": now, "jti": uuid(index + 5_000_000),
        "iss": issuer, "aud": "account", "sub": sub, "typ": "Bearer", "azp": "tollgate",
        "session_state": sid, "acr": "1", "allowed-origins": ["https://app.example.com"],
        "realm_access": {"roles": ["offline_access", "uma_authorization", "default-roles-corp", "staff"]},
        "resource_access": {"account": {"roles": ["manage-account", "manage-account-links", "view-profile"]}},
        "scope": "openid email profile", "sid": sid, "email_verified": true,
        "name": "Robert Example", "preferred_username": "robert", "given_name": "Robert",
        "family_name": "Example", "email": "robert@example.com",
    });
    let refresh_claims = json!({
        "exp": now + 1800, "iat": now, "jti": uuid(index + 6_000_000), "iss": issuer,
        "aud": issuer, "sub": sub, "typ": "Refresh", "azp": "tollgate", "session_state": sid,
        "scope": "openid email profile", "sid": sid,
    });
    let hs512 = json!({"alg": "HS512", "typ": "JWT", "kid": uuid(7)});
    Session {
        provider: "corp".to_owned(),
        claims: Arc::new(id_claims.as_object().unwrap().clone()),
        id_token: jwt(&rs256, &id_claims, 256, index + 7_000_000),
        access_token: Some(jwt(&rs256, &access_claims, 256, index + 8_000_000)),
        refresh_token: Some(jwt(&hs512, &refresh_claims, 64, index + 9_000_000)),
        access_expires_at: Some(now + 300),
        created_at: now,
        expires_at: now + 43_200,
    }
}

fn main() {
    // No state file: the sealer is never used.
    let sealer = tollgate::session::seal::Sealer::new(&[]);
    let store = MemoryStore::open(None, sealer, 1_800_000_000);
    let sample = session(0);
    let token_bytes = sample.id_token.len()
        + sample.access_token.as_ref().map_or(0, String::len)
        + sample.refresh_token.as_ref().map_or(0, String::len);
    let before = resident_bytes();
    for index in 0..SESSIONS {
        store.insert(
            format!("{index:043}"),
            Arc::new(session(index as u64)),
            1_800_000_000,
        );
    }
    for index in 0..SESSIONS {
        let stored = store.get(&format!("{index:043}")).unwrap();
        assert_eq!(stored.session.expires_at, 1_800_043_200);
    }
    let after = resident_bytes();
    let per_session = (after.saturating_sub(before)) as f64 / SESSIONS as f64;
    println!(
        "memory store: {SESSIONS} sessions, {per_session:.0} bytes each; the three tokens are {token_bytes} bytes of text (ID {}, access {}, refresh {}); target <= 3072",
        sample.id_token.len(),
        sample.access_token.as_ref().map_or(0, String::len),
        sample.refresh_token.as_ref().map_or(0, String::len),
    );
    let expanded = store.get(&format!("{:043}", 7)).unwrap();
    assert_eq!(
        serde_json::to_value(&*expanded.session).unwrap(),
        serde_json::to_value(session(7)).unwrap(),
        "a session comes back exactly as stored"
    );
    assert_eq!(store.len(), SESSIONS);
}
