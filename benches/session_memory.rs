//! Memory per session of the `memory` store with realistic tokens: Keycloak-like access token
//! (about 1.2 KB), ID token (about 1 KB), refresh token (about 0.8 KB) and 17 merged claims.
//!
//! `cargo bench --bench session_memory`

// A benchmark stops on what it did not expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use tollgate::session::Session;
use tollgate::session::memory_store::MemoryStore;

const SESSIONS: usize = 50_000;

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn token(length: usize, seed: usize) -> String {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..length)
        .map(|index| alphabet[(index * 31 + seed * 17) % alphabet.len()] as char)
        .collect()
}

fn session(index: usize) -> Session {
    let claims = serde_json::json!({
        "iss": "https://login.example.com/realms/corp", "sub": format!("f66f4d25-dada-485d-8d8f-{index:012}"),
        "aud": "tollgate", "exp": 1_800_000_300, "iat": 1_800_000_000, "auth_time": 1_800_000_000,
        "jti": format!("17634fa3-e49f-441a-b87d-{index:012}"), "typ": "ID", "azp": "tollgate",
        "sid": format!("c3e2b0b8-4f4a-4c1e-9d4b-{index:012}"), "nonce": token(43, index),
        "at_hash": token(22, index), "email": "robert@example.com", "email_verified": true,
        "name": "Robert Example", "preferred_username": "robert", "groups": ["staff", "eng"],
    });
    Session {
        provider: "corp".to_owned(),
        claims: Arc::new(claims.as_object().unwrap().clone()),
        id_token: token(1000, index),
        access_token: Some(token(1229, index + 1)),
        refresh_token: Some(token(800, index + 2)),
        access_expires_at: Some(1_800_000_300),
        created_at: 1_800_000_000,
        expires_at: 1_800_043_200,
    }
}

fn main() {
    let store = MemoryStore::open(None, 1_800_000_000);
    let before = resident_bytes();
    for index in 0..SESSIONS {
        store.insert(
            format!("{index:043}"),
            Arc::new(session(index)),
            1_800_000_000,
        );
    }
    let after = resident_bytes();
    let tokens = 1000 + 1229 + 800;
    let per_session = (after.saturating_sub(before)) as f64 / SESSIONS as f64;
    println!(
        "memory store: {SESSIONS} sessions, {per_session:.0} bytes each ({tokens} bytes of them are the three tokens); target <= 3072"
    );
    assert_eq!(store.len(), SESSIONS);
}
