//! Token issuance cost against its floor: `SigningKey::sign` of a realistic access token
//! (header and claims as JSON, base64url, signature) beside the bare signature of the same
//! bytes with the same parsed key, and `jsonwebtoken::encode`, which parses the key per call. Issue 14's target for RS256: signing a token costs at most
//! a tenth more than the signature alone.
//!
//! `cargo bench --bench token_signing`; with `TOKEN_SIGNING_KEY=key.pem` (an RSA PKCS#8 PEM) the
//! RS256 benches sign with that key instead of a fresh one, so that
//! `scripts/load-token-service.sh` compares issuance with the bare signature of the key the
//! token service signs with.

// A benchmark stops on what it did not expect.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, RsaKeyPair};
use base64::Engine as _;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use tollgate::jose::SigningKey;

/// What `client_credentials` issues: 11 claims.
fn claims() -> serde_json::Value {
    json!({
        "iss": "https://auth.example.com", "sub": "myapi:scim-idp", "aud": "odj",
        "iat": 1_800_000_000, "nbf": 1_800_000_000, "exp": 1_800_001_800,
        "jti": "k0mH3m1bXW5Q6bVnq2nq8h4V6w2v0pQmTzQy9bZt3xE", "scope": "scim read",
        "client_id": "scim-idp", "api_product_list": ["odj-core"], "tid": "1111",
    })
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|line| std::str::from_utf8(line).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// Time this thread has spent on a CPU (`CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu_time() -> std::time::Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    std::time::Duration::new(now.tv_sec.unsigned_abs(), now.tv_nsec.unsigned_abs() as u32)
}

/// The key in `TOKEN_SIGNING_KEY`, or a fresh 2048-bit one; with its PKCS#8 PEM.
fn rsa_key() -> (RsaKeyPair, String) {
    if let Ok(path) = std::env::var("TOKEN_SIGNING_KEY") {
        let text = std::fs::read_to_string(path).unwrap();
        let body: String = text
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap();
        return (RsaKeyPair::from_pkcs8(&der).unwrap(), text);
    }
    let rsa = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let pkcs8 = rsa.as_der().unwrap();
    let text = pem("PRIVATE KEY", pkcs8.as_ref());
    (rsa, text)
}

fn bench(c: &mut Criterion) {
    let (rsa, pem_text) = rsa_key();
    let key = SigningKey::from_pem(pem_text.as_bytes()).unwrap();
    let token = key.sign("at+jwt", &claims()).unwrap();
    let (message, _) = token.rsplit_once('.').unwrap();
    let rng = SystemRandom::new();
    let encoding = jsonwebtoken::EncodingKey::from_rsa_pem(pem_text.as_bytes()).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.typ = Some("at+jwt".to_owned());
    c.bench_function(
        "rs256/before: jsonwebtoken::encode (key parsed per call)",
        |b| {
            b.iter(|| jsonwebtoken::encode(&header, black_box(&claims()), &encoding).unwrap());
        },
    );
    c.bench_function("rs256/issue: SigningKey::sign", |b| {
        b.iter(|| key.sign("at+jwt", black_box(&claims())).unwrap());
    });
    c.bench_function("rs256/floor: aws-lc signature only", |b| {
        let mut signature_bytes = vec![0; rsa.public_modulus_len()];
        b.iter(|| {
            rsa.sign(
                &signature::RSA_PKCS1_SHA256,
                &rng,
                black_box(message.as_bytes()),
                &mut signature_bytes,
            )
            .unwrap();
        });
    });
    // The same signature timed in this thread's CPU time: on a machine shared with other work
    // the wall-clock figure above grows with the load; this one is comparable with a server's
    // CPU time (scripts/load-token-service.sh).
    c.bench_function(
        "rs256/floor-cpu: aws-lc signature only, thread CPU time",
        |b| {
            let mut signature_bytes = vec![0; rsa.public_modulus_len()];
            b.iter_custom(|iterations| {
                let started = thread_cpu_time();
                for _ in 0..iterations {
                    rsa.sign(
                        &signature::RSA_PKCS1_SHA256,
                        &rng,
                        black_box(message.as_bytes()),
                        &mut signature_bytes,
                    )
                    .unwrap();
                }
                thread_cpu_time().saturating_sub(started)
            });
        },
    );
    let (es, _) = SigningKey::generate_es256().unwrap();
    c.bench_function("es256/issue: SigningKey::sign", |b| {
        b.iter(|| es.sign("at+jwt", black_box(&claims())).unwrap());
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
