//! Unit tests of the client key: the PEM forms it reads, the algorithm it picks, and the JWS it
//! makes, checked with aws-lc-rs's verifiers directly.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::signature::{self, KeyPair as _};

use super::test_keys::pem;
use super::*;

/// A fresh RSA key: PKCS#8 DER and the public key's PKCS#1 DER.
fn rsa() -> (Vec<u8>, Vec<u8>) {
    let key = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let pkcs8 = key.as_der().unwrap().as_ref().to_vec();
    (pkcs8, key.public_key().as_ref().to_vec())
}

/// The RSAPrivateKey (PKCS#1) inside an RSA PKCS#8 document: the last OCTET STRING, after the
/// fixed rsaEncryption AlgorithmIdentifier.
fn pkcs1_of(pkcs8: &[u8]) -> Vec<u8> {
    let algorithm = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let at = pkcs8
        .windows(algorithm.len())
        .position(|window| window == algorithm)
        .unwrap()
        + algorithm.len();
    assert_eq!(&pkcs8[at..at + 2], &[0x04, 0x82], "a long OCTET STRING");
    let length = usize::from(pkcs8[at + 2]) << 8 | usize::from(pkcs8[at + 3]);
    pkcs8[at + 4..at + 4 + length].to_vec()
}

/// A fresh P-256 key: PKCS#8 DER, SEC 1 DER and the public point.
fn p256() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let pkcs8 = key.to_pkcs8v1().unwrap().as_ref().to_vec();
    let sec1 = key.private_key().as_der().unwrap().as_ref().to_vec();
    (pkcs8, sec1, key.public_key().as_ref().to_vec())
}

fn claims() -> serde_json::Value {
    serde_json::json!({"iss": "tollgate", "sub": "tollgate", "aud": "https://op", "jti": "j", "iat": 1, "exp": 61})
}

/// Splits a compact JWS, checks its signature with `verifier` over `public`, and gives the
/// header and claims.
fn verified(
    jws: &str,
    verifier: &'static dyn signature::VerificationAlgorithm,
    public: &[u8],
) -> (serde_json::Value, serde_json::Value) {
    let (signed, signature) = jws.rsplit_once('.').unwrap();
    signature::UnparsedPublicKey::new(verifier, public)
        .verify(
            signed.as_bytes(),
            &URL_SAFE_NO_PAD.decode(signature).unwrap(),
        )
        .expect("the signature verifies");
    let (header, payload) = signed.split_once('.').unwrap();
    let json = |part: &str| serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap();
    (json(header), json(payload))
}

#[test]
fn rsa_keys_sign_rs256_and_ps256_in_pkcs8_and_pkcs1_form() {
    let (pkcs8, public) = rsa();
    for text in [
        pem("PRIVATE KEY", &pkcs8),
        pem("RSA PRIVATE KEY", &pkcs1_of(&pkcs8)),
    ] {
        let key = ClientKey::from_pem(text.as_bytes(), Some("k-1".to_owned())).unwrap();
        assert_eq!(key.algorithms(), &[Algorithm::PS256, Algorithm::RS256]);
        for (algorithm, name, verifier) in [
            (
                Algorithm::RS256,
                "RS256",
                &signature::RSA_PKCS1_2048_8192_SHA256
                    as &'static dyn signature::VerificationAlgorithm,
            ),
            (
                Algorithm::PS256,
                "PS256",
                &signature::RSA_PSS_2048_8192_SHA256,
            ),
        ] {
            let jws = key.sign(algorithm, &claims()).unwrap();
            let (header, payload) = verified(&jws, verifier, &public);
            assert_eq!(
                header,
                serde_json::json!({"alg": name, "typ": "JWT", "kid": "k-1"})
            );
            assert_eq!(payload, claims());
        }
        assert!(matches!(
            key.sign(Algorithm::ES256, &claims()),
            Err(ClientKeyError::Sign(_))
        ));
    }
}

#[test]
fn p256_keys_sign_es256_in_pkcs8_and_sec1_form_without_kid_when_none_is_set() {
    let (pkcs8, sec1, public) = p256();
    for text in [pem("PRIVATE KEY", &pkcs8), pem("EC PRIVATE KEY", &sec1)] {
        let key = ClientKey::from_pem(text.as_bytes(), None).unwrap();
        assert_eq!(key.algorithms(), &[Algorithm::ES256]);
        let jws = key.sign(Algorithm::ES256, &claims()).unwrap();
        let (header, payload) = verified(&jws, &signature::ECDSA_P256_SHA256_FIXED, &public);
        assert_eq!(header, serde_json::json!({"alg": "ES256", "typ": "JWT"}));
        assert_eq!(payload, claims());
        assert!(matches!(
            key.sign(Algorithm::RS256, &claims()),
            Err(ClientKeyError::Sign(_))
        ));
    }
}

#[test]
fn a_certificate_of_the_key_beside_it_gives_its_sha256_thumbprint_and_another_is_refused() {
    let (pkcs8, _, public) = p256();
    // Stands in for a DER certificate: what is checked is that it holds the public key.
    let certificate = [b"tbsCertificate ".as_slice(), &public, b" signature"].concat();
    let text = format!(
        "{}{}",
        pem("CERTIFICATE", &certificate),
        pem("PRIVATE KEY", &pkcs8)
    );
    let key = ClientKey::from_pem(text.as_bytes(), None).unwrap();
    let (other, _, _) = p256();
    let mismatched = format!(
        "{}{}",
        pem("PRIVATE KEY", &other),
        pem("CERTIFICATE", &certificate)
    );
    assert_eq!(
        ClientKey::from_pem(mismatched.as_bytes(), None).unwrap_err(),
        ClientKeyError::Unusable("the CERTIFICATE in the key file is not the private key's")
    );
    let jws = key.sign(Algorithm::ES256, &claims()).unwrap();
    let (header, _) = verified(&jws, &signature::ECDSA_P256_SHA256_FIXED, &public);
    let expected = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        &certificate,
    ));
    assert_eq!(header["x5t#S256"], expected.as_str());
}

#[test]
fn the_algorithm_follows_the_key_and_what_the_provider_lists() {
    let (pkcs8, _) = rsa();
    let rsa_key = ClientKey::from_pem(pem("PRIVATE KEY", &pkcs8).as_bytes(), None).unwrap();
    let (pkcs8, _, _) = p256();
    let ec_key = ClientKey::from_pem(pem("PRIVATE KEY", &pkcs8).as_bytes(), None).unwrap();
    let list = |names: &[&str]| {
        names
            .iter()
            .map(|name| (*name).to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(rsa_key.algorithm_for(None), Ok(Algorithm::RS256));
    assert_eq!(ec_key.algorithm_for(None), Ok(Algorithm::ES256));
    let everything = list(&["HS256", "RS256", "PS256", "ES256", "EdDSA"]);
    assert_eq!(
        rsa_key.algorithm_for(Some(&everything)),
        Ok(Algorithm::PS256)
    );
    assert_eq!(
        ec_key.algorithm_for(Some(&everything)),
        Ok(Algorithm::ES256)
    );
    assert_eq!(
        rsa_key.algorithm_for(Some(&list(&["RS256", "ES256"]))),
        Ok(Algorithm::RS256)
    );
    for offered in [list(&["ES256", "EdDSA"]), list(&[])] {
        assert!(matches!(
            rsa_key.algorithm_for(Some(&offered)),
            Err(ClientKeyError::NoCommonAlgorithm { .. })
        ));
    }
    let Err(error) = ec_key.algorithm_for(Some(&list(&["PS256", "RS256"]))) else {
        panic!("an EC key has nothing in common with RSA-only providers");
    };
    assert_eq!(
        error.to_string(),
        "the provider accepts client assertions signed with PS256, RS256, none of this key's ES256"
    );
}

#[test]
fn unusable_files_are_refused_with_the_reason() {
    let p384 = EcdsaKeyPair::generate(&signature::ECDSA_P384_SHA384_FIXED_SIGNING).unwrap();
    let cases = [
        (String::new(), "no PRIVATE KEY"),
        ("not pem at all".to_owned(), "no PRIVATE KEY"),
        (pem("PUBLIC KEY", b"x"), "no PRIVATE KEY"),
        (
            pem("PRIVATE KEY", b"garbage"),
            "not RSA of 2048 bits or more (RS256, PS256) or EC P-256 (ES256)",
        ),
        (
            pem("PRIVATE KEY", p384.to_pkcs8v1().unwrap().as_ref()),
            "not RSA of 2048 bits or more (RS256, PS256) or EC P-256 (ES256)",
        ),
        (
            pem("RSA PRIVATE KEY", b"garbage"),
            "RSA private key is malformed",
        ),
        (pem("EC PRIVATE KEY", b"garbage"), "not on P-256"),
        (pem("ENCRYPTED PRIVATE KEY", b"x"), "encrypted"),
        (
            "-----BEGIN PRIVATE KEY-----\nAAAA\n".to_owned(),
            "not closed",
        ),
        (
            "-----BEGIN PRIVATE KEY-----\n!!!\n-----END PRIVATE KEY-----\n".to_owned(),
            "not valid base64",
        ),
    ];
    for (text, reason) in cases {
        let Err(error) = ClientKey::from_pem(text.as_bytes(), None) else {
            panic!("{text:?} was accepted");
        };
        assert!(error.to_string().contains(reason), "{text:?}: {error}");
    }
    assert!(matches!(
        ClientKey::from_pem(&[0xff, 0xfe], None),
        Err(ClientKeyError::Unusable(_))
    ));
    let missing = ClientKey::load(Path::new("/nonexistent/tollgate-client.pem"), None);
    assert!(
        matches!(missing, Err(ClientKeyError::File { .. })),
        "{missing:?}"
    );
}

#[test]
fn debug_shows_no_key_material() {
    let (pkcs8, _) = rsa();
    let key =
        ClientKey::from_pem(pem("PRIVATE KEY", &pkcs8).as_bytes(), Some("k".to_owned())).unwrap();
    let shown = format!("{key:?}");
    assert!(
        shown.starts_with("ClientKey { algorithms: [PS256, RS256], kid: Some(\"k\")"),
        "{shown}"
    );
    assert!(!shown.contains(&STANDARD.encode(&pkcs8)[..40]), "{shown}");
}
