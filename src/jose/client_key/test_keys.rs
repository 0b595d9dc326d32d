//! Fresh private keys in PEM for the tests of the client key and of what uses it.

#![allow(clippy::unwrap_used)]

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// `der` as a PEM block with `label`.
pub fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
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

/// A fresh 2048-bit RSA key: PKCS#8 DER.
pub fn rsa_pkcs8() -> Vec<u8> {
    let key = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    key.as_der().unwrap().as_ref().to_vec()
}

/// A fresh P-256 key: PKCS#8 DER.
pub fn p256_pkcs8() -> Vec<u8> {
    let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    key.to_pkcs8v1().unwrap().as_ref().to_vec()
}

/// A fresh RSA key as a `PRIVATE KEY` PEM.
pub fn rsa_pem() -> String {
    pem("PRIVATE KEY", &rsa_pkcs8())
}

/// A fresh P-256 key as a `PRIVATE KEY` PEM.
pub fn p256_pem() -> String {
    pem("PRIVATE KEY", &p256_pkcs8())
}
