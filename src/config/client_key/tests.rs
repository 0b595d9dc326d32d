//! `tollgate check` on the `private_key_jwt` keys of a `[[provider]]`: what is accepted, and
//! the problem each mistake gets.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::{AssertionAudience, ClientAuth, Config, ConfigProblem, load};
use crate::jose::test_keys;

/// A file in a directory of this test process, holding `text`.
fn file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tollgate-client-key-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn loaded(keys: &str) -> Result<Config, Vec<ConfigProblem>> {
    let text = format!(
        "[[provider]]\nname = \"corp\"\nissuer = \"https://login.example.com\"\nclient_id = \"tollgate\"\n{keys}\n"
    );
    load(&text, &BTreeMap::new())
}

#[track_caller]
fn problems(keys: &str) -> Vec<String> {
    match loaded(keys) {
        Ok(_) => panic!("accepted: {keys}"),
        Err(problems) => problems.iter().map(ToString::to_string).collect(),
    }
}

fn key_file(name: &str, pem: &str) -> String {
    file(name, pem).display().to_string()
}

#[test]
fn rsa_and_p256_keys_are_read_at_load_with_kid_and_audience() {
    let rsa = key_file("rsa.pem", &test_keys::rsa_pem());
    let config = loaded(&format!(
        "client_auth = \"private_key_jwt\"\nclient_key_file = \"{rsa}\"\nclient_key_id = \"tollgate-2026\"\nclient_assertion_audience = \"token_endpoint\""
    ))
    .unwrap();
    let provider = &config.providers[0];
    assert_eq!(provider.client_auth, ClientAuth::PrivateKeyJwt);
    let key = provider.client_key.as_ref().unwrap();
    assert_eq!(key.file, Path::new(&rsa));
    assert_eq!(key.key.kid(), Some("tollgate-2026"));
    assert_eq!(key.audience, AssertionAudience::Endpoint);
    assert_eq!(key.key.algorithms().len(), 2, "RS256 and PS256");

    let ec = key_file("ec.pem", &test_keys::p256_pem());
    let config = loaded(&format!(
        "client_auth = \"private_key_jwt\"\nclient_key_file = \"{ec}\""
    ))
    .unwrap();
    let key = config.providers[0].client_key.as_ref().unwrap();
    assert_eq!(key.key.kid(), None);
    assert_eq!(key.audience, AssertionAudience::Issuer, "the default");
    assert_eq!(key.key.algorithms(), &[jsonwebtoken::Algorithm::ES256]);
}

#[test]
fn reload_reads_the_key_file_again() {
    let path = key_file("rotated.pem", &test_keys::p256_pem());
    let config = loaded(&format!(
        "client_auth = \"private_key_jwt\"\nclient_key_file = \"{path}\"\nclient_key_id = \"k\""
    ))
    .unwrap();
    let loaded = config.providers[0].client_key.clone().unwrap();
    std::fs::write(&path, test_keys::rsa_pem()).unwrap();
    let reloaded = loaded.reload().unwrap();
    assert_eq!(reloaded.key.algorithms().len(), 2, "now the RSA key");
    assert_eq!(reloaded.key.kid(), Some("k"));
    assert_eq!(
        loaded.key.algorithms().len(),
        1,
        "the loaded key is unchanged"
    );
    std::fs::write(&path, "not a key").unwrap();
    assert!(loaded.reload().is_err(), "a broken file is refused");
}

#[test]
fn each_mistake_is_one_problem_at_its_key() {
    let key = key_file("ok.pem", &test_keys::p256_pem());
    let garbage = key_file(
        "garbage.pem",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    let cases = [
        (
            "client_auth = \"private_key_jwt\"".to_owned(),
            "provider[0].client_key_file: is required with client_auth = \"private_key_jwt\"",
        ),
        (
            "client_auth = \"private_key_jwt\"\nclient_key_file = \"/nonexistent/key.pem\""
                .to_owned(),
            "provider[0].client_key_file: cannot read `/nonexistent/key.pem`",
        ),
        (
            format!("client_auth = \"private_key_jwt\"\nclient_key_file = \"{garbage}\""),
            "provider[0].client_key_file: the PKCS#8 private key is not RSA of 2048 bits or more (RS256, PS256) or EC P-256 (ES256)",
        ),
        (
            format!(
                "client_auth = \"private_key_jwt\"\nclient_key_file = \"{key}\"\nclient_secret = \"s\""
            ),
            "provider[0].client_secret: is not used with this client_auth",
        ),
        (
            format!(
                "client_auth = \"private_key_jwt\"\nclient_key_file = \"{key}\"\nclient_assertion_audience = \"me\""
            ),
            "provider[0].client_assertion_audience: `me` is not one of issuer, token_endpoint",
        ),
        (
            format!(
                "client_auth = \"private_key_jwt\"\nclient_key_file = \"{key}\"\nclient_key_id = \"\""
            ),
            "provider[0].client_key_id: must not be empty",
        ),
        (
            format!("client_secret = \"s\"\nclient_key_file = \"{key}\""),
            "provider[0].client_key_file: is only used with client_auth = \"private_key_jwt\"",
        ),
        (
            "client_auth = \"none\"\nclient_key_id = \"k\"".to_owned(),
            "provider[0].client_key_id: is only used with client_auth = \"private_key_jwt\"",
        ),
        (
            "client_secret = \"s\"\nclient_assertion_audience = \"issuer\"".to_owned(),
            "provider[0].client_assertion_audience: is only used with client_auth = \"private_key_jwt\"",
        ),
    ];
    for (keys, expected) in cases {
        let found = problems(&keys);
        assert_eq!(found.len(), 1, "{keys}: {found:?}");
        assert!(found[0].starts_with(expected), "{keys}: {found:?}");
    }
}
