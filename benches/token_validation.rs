//! Token validation cost: a cold check (signature and claims) against the floor of the bare
//! signature check, and a cached check (SHA-256 of the token plus a cache hit).
//!
//! `cargo bench --bench token_validation`

// A benchmark stops on what it did not expect.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, KeyPair as _, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use tollgate::jose::{KeySet, SigningKey};
use tollgate::token::cache::TokenCache;
use tollgate::token::{Expectations, validate_access_token};

const NOW: i64 = 1_800_000_000;

/// A realistic Keycloak-like access token: 17 claims with realm and client roles.
fn claims() -> serde_json::Value {
    json!({
        "iss": "https://login.example.com/realms/corp", "sub": "f66f4d25-dada-485d-8d8f-6fb6c5569fa4",
        "aud": ["api", "account"], "exp": NOW + 300, "iat": NOW, "nbf": NOW, "jti": "17634fa3-e49f-441a-b87d-024052819423",
        "typ": "Bearer", "azp": "tollgate", "session_state": "c3e2b0b8-4f4a-4c1e-9d4b-3b0f3f3e0a11",
        "scope": "openid profile email read write", "email": "robert@example.com", "email_verified": true,
        "name": "Robert Example", "preferred_username": "robert",
        "realm_access": {"roles": ["offline_access", "uma_authorization", "user"]},
        "resource_access": {"api": {"roles": ["writer", "reader"]}, "account": {"roles": ["manage-account"]}},
    })
}

fn rs256_token_and_keys() -> (String, KeySet, RsaKeyPair) {
    let key = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let public = key.public_key();
    let jwks = json!({"keys": [{"kty": "RSA", "kid": "k1",
        "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
        "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero())}]});
    let keys = KeySet::from_jwks_json(jwks.to_string().as_bytes()).unwrap();
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(json!({"alg": "RS256", "kid": "k1", "typ": "at+jwt"}).to_string()),
        URL_SAFE_NO_PAD.encode(claims().to_string())
    );
    let mut signature_bytes = vec![0; key.public_modulus_len()];
    key.sign(
        &signature::RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        input.as_bytes(),
        &mut signature_bytes,
    )
    .unwrap();
    (
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature_bytes)),
        keys,
        key,
    )
}

fn bench(c: &mut Criterion) {
    let audiences = vec!["api".to_owned()];
    let expected = Expectations {
        issuer: "https://login.example.com/realms/corp",
        audiences: &audiences,
        leeway: 60,
        now: NOW,
    };

    let (rs256, rs_keys, rsa_key) = rs256_token_and_keys();
    assert!(validate_access_token(&rs256, &rs_keys, &expected, Some("tollgate")).is_ok());
    c.bench_function("rs256/cold: validate_access_token", |b| {
        b.iter(|| {
            validate_access_token(black_box(&rs256), &rs_keys, &expected, Some("tollgate")).unwrap()
        });
    });
    let (message, signature_part) = rs256.rsplit_once('.').unwrap();
    let signature_bytes = URL_SAFE_NO_PAD.decode(signature_part).unwrap();
    let public = signature::UnparsedPublicKey::new(
        &signature::RSA_PKCS1_2048_8192_SHA256,
        rsa_key.public_key().as_ref().to_vec(),
    );
    c.bench_function("rs256/floor: aws-lc signature check only", |b| {
        b.iter(|| {
            public
                .verify(black_box(message.as_bytes()), &signature_bytes)
                .unwrap()
        });
    });

    let (es_key, _) = SigningKey::generate_es256().unwrap();
    let es_keys = KeySet::from_jwks(std::slice::from_ref(es_key.public_jwk()));
    let es256 = es_key.sign("at+jwt", &claims()).unwrap();
    c.bench_function("es256/cold: validate_access_token", |b| {
        b.iter(|| {
            validate_access_token(black_box(&es256), &es_keys, &expected, Some("tollgate")).unwrap()
        });
    });

    let cache = TokenCache::new(10_000);
    let claims = validate_access_token(&rs256, &rs_keys, &expected, Some("tollgate")).unwrap();
    cache.insert(&rs256, Arc::clone(&claims), NOW + 300);
    c.bench_function("rs256/cached: cache hit", |b| {
        b.iter(|| cache.get(black_box(&rs256), NOW).unwrap());
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
