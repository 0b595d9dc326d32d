//! Unit tests of token decoding and claim checks.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

use super::id_token::{IdTokenExpectations, left_half_hash, validate_id_token};
use super::*;

// The tokens here are signed by the test provider's code (aws-lc-rs directly), never by
// Tollgate's own JOSE code, so that a bug in one cannot cancel out a bug in the other.
#[path = "../../tests/it/support/test_keys.rs"]
#[allow(dead_code)] // what the test provider offers beyond these tests
mod test_keys;
use test_keys::{Alg, Keys};

const NOW: i64 = 1_800_000_000;

struct Fixture {
    key: Keys,
    keys: KeySet,
    audiences: Vec<String>,
}

fn fixture() -> Fixture {
    let key = Keys::new("rsa-1");
    let keys = KeySet::from_jwks_json(key.jwks().to_string().as_bytes()).unwrap();
    Fixture {
        key,
        keys,
        audiences: vec!["api".to_owned()],
    }
}

fn claims(extra: serde_json::Value) -> serde_json::Value {
    let mut base =
        json!({"iss": "https://idp", "sub": "alice", "aud": "api", "iat": NOW, "exp": NOW + 300});
    if let (Some(base), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
        for (name, value) in extra {
            base.insert(name.clone(), value.clone());
        }
    }
    base
}

impl Fixture {
    /// `claims` signed with ES256 under the fixture's key, with this `typ`.
    fn sign(&self, typ: &str, claims: &serde_json::Value) -> String {
        self.key.sign_jwt(Alg::ES256, None, typ, claims)
    }

    fn expectations(&self) -> Expectations<'_> {
        Expectations {
            issuer: "https://idp",
            audiences: &self.audiences,
            leeway: 60,
            now: NOW,
        }
    }

    #[track_caller]
    fn check(&self, claims: serde_json::Value, expected: Result<(), TokenError>) {
        let token = self.sign("at+jwt", &claims);
        let result =
            validate_access_token(&token, &self.keys, &self.expectations(), Some("client"))
                .map(|_| ());
        assert_eq!(result, expected, "claims {claims}");
    }
}

fn unsigned(header: serde_json::Value, claims: &serde_json::Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

#[test]
fn valid_token_passes_and_claims_come_back() {
    let fixture = fixture();
    let token = fixture.sign("at+jwt", &claims(json!({"email": "a@example.com"})));
    let claims = validate_access_token(
        &token,
        &fixture.keys,
        &fixture.expectations(),
        Some("client"),
    )
    .unwrap();
    assert_eq!(claims["email"], "a@example.com");
}

#[test]
fn every_asymmetric_algorithm_of_a_provider_verifies() {
    let fixture = fixture();
    let body = claims(json!({}));
    for alg in [
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
    ] {
        let token = fixture.key.sign_jwt(alg, None, "at+jwt", &body);
        assert!(
            validate_access_token(
                &token,
                &fixture.keys,
                &fixture.expectations(),
                Some("client")
            )
            .is_ok(),
            "{alg:?}"
        );
    }
}

#[test]
fn issuer_audience_and_times_are_checked_with_leeway() {
    let fixture = fixture();
    fixture.check(
        claims(json!({"iss": "https://other"})),
        Err(TokenError::WrongIssuer),
    );
    fixture.check(
        claims(json!({"iss": "https://idp/"})),
        Err(TokenError::WrongIssuer),
    );
    fixture.check(
        claims(json!({"aud": "web"})),
        Err(TokenError::WrongAudience),
    );
    fixture.check(claims(json!({"aud": ["web", "api"]})), Ok(()));
    fixture.check(claims(json!({"aud": null})), Err(TokenError::WrongAudience));
    fixture.check(claims(json!({"exp": NOW - 61})), Err(TokenError::Expired));
    fixture.check(claims(json!({"exp": NOW - 59})), Ok(()));
    fixture.check(
        claims(json!({"exp": "soon"})),
        Err(TokenError::MissingClaim("exp")),
    );
    fixture.check(
        claims(json!({"nbf": NOW + 61})),
        Err(TokenError::NotYetValid),
    );
    fixture.check(claims(json!({"nbf": NOW + 59})), Ok(()));
    fixture.check(
        claims(json!({"iat": NOW + 120})),
        Err(TokenError::IssuedInFuture),
    );
    let mut no_exp = claims(json!({}));
    no_exp.as_object_mut().unwrap().remove("exp");
    fixture.check(no_exp, Err(TokenError::MissingClaim("exp")));
}

#[test]
fn the_clients_id_token_without_nonce_or_at_hash_is_not_an_access_token() {
    // As a provider issues it on refresh: no `nonce`, no `at_hash`, the client's audience.
    let mut fixture = fixture();
    fixture.audiences = vec!["api".to_owned(), "client".to_owned()];
    let id_token = claims(json!({"aud": "client", "azp": "client", "auth_time": NOW}));
    let signed = |typ: &str, claims: &serde_json::Value| {
        let token = fixture.sign(typ, claims);
        validate_access_token(
            &token,
            &fixture.keys,
            &fixture.expectations(),
            Some("client"),
        )
        .map(|_| ())
    };
    assert_eq!(signed("JWT", &id_token), Err(TokenError::NotAnAccessToken));
    let both = claims(json!({"aud": ["api", "client"]}));
    assert_eq!(signed("JWT", &both), Err(TokenError::NotAnAccessToken));
    // Entra ID puts a user's app roles in the ID token.
    let mut with_roles = id_token.clone();
    with_roles["roles"] = json!(["admin"]);
    assert_eq!(
        signed("JWT", &with_roles),
        Err(TokenError::NotAnAccessToken)
    );
    // An access token for that audience says so: by its claims, or by its header.
    for (name, value) in [
        ("scope", json!("openid read")),
        ("scp", json!(["read"])),
        ("client_id", json!("client")),
        ("cid", json!("client")),
        ("appid", json!("client")),
        ("azpacr", json!("1")),
    ] {
        let mut access = id_token.clone();
        access[name] = value;
        assert_eq!(signed("JWT", &access), Ok(()), "with {name}");
    }
    assert_eq!(signed("at+jwt", &id_token), Ok(()));
    assert_eq!(signed("application/at+jwt", &id_token), Ok(()));
    // Another audience is not the client's ID token, and without a client id nothing is.
    assert_eq!(signed("JWT", &claims(json!({}))), Ok(()));
    let token = fixture.sign("JWT", &id_token);
    assert_eq!(
        validate_access_token(&token, &fixture.keys, &fixture.expectations(), None).map(|_| ()),
        Ok(())
    );
}

/// A token bound to a key (DPoP's `cnf.jkt`, mutual TLS's `cnf.x5t#S256`) is no bearer token:
/// whoever copied it would use it without the key. Refused as a JWT and as an introspection
/// answer, whatever its `token_type` says.
#[test]
fn a_token_bound_to_a_key_is_not_a_bearer_token() {
    use super::introspection::check_introspection;
    let fixture = fixture();
    for cnf in [
        json!({"jkt": "0ZcOCORZNYy"}),
        json!({"x5t#S256": "bwcK0esc3ACC3DB2"}),
    ] {
        fixture.check(
            claims(json!({"scope": "read", "cnf": cnf})),
            Err(TokenError::BoundToKey),
        );
        let audiences = vec!["api".to_owned()];
        let expected = Expectations {
            issuer: "https://idp",
            audiences: &audiences,
            leeway: 60,
            now: NOW,
        };
        let answer = json!({"active": true, "aud": "api", "token_type": "Bearer", "cnf": cnf});
        assert_eq!(
            check_introspection(answer.as_object().unwrap(), &expected),
            Err(TokenError::BoundToKey)
        );
    }
    fixture.check(claims(json!({"scope": "read"})), Ok(()));
}

#[test]
fn id_tokens_and_logout_tokens_are_not_access_tokens() {
    let fixture = fixture();
    fixture.check(
        claims(json!({"nonce": "n"})),
        Err(TokenError::NotAnAccessToken),
    );
    fixture.check(
        claims(json!({"at_hash": "x"})),
        Err(TokenError::NotAnAccessToken),
    );
    fixture.check(
        claims(json!({"typ": "ID"})),
        Err(TokenError::NotAnAccessToken),
    );
    fixture.check(
        claims(json!({"events": {}})),
        Err(TokenError::NotAnAccessToken),
    );
    // Amazon Cognito says which token it is: an ID token for another app client of the
    // pool, without `at_hash`, was a bearer token where `audiences` named that client.
    for token_use in ["id", "refresh", "", "ID"] {
        fixture.check(
            claims(json!({"token_use": token_use})),
            Err(TokenError::NotAnAccessToken),
        );
    }
    fixture.check(claims(json!({"token_use": "access"})), Ok(()));
    let token = fixture.sign("logout+jwt", &claims(json!({})));
    assert_eq!(
        validate_access_token(
            &token,
            &fixture.keys,
            &fixture.expectations(),
            Some("client")
        ),
        Err(TokenError::NotAnAccessToken)
    );
}

#[test]
fn a_logout_token_older_than_its_jti_is_remembered_is_refused() {
    let fixture = fixture();
    let logout = |iat: i64| {
        let mut claims = claims(json!({
            "iat": iat,
            "jti": "j-1",
            "events": {super::logout_token::BACKCHANNEL_LOGOUT_EVENT: {}},
        }));
        claims.as_object_mut().unwrap().remove("exp");
        let token = fixture.sign("logout+jwt", &claims);
        super::logout_token::validate_logout_token(&token, &fixture.keys, &fixture.expectations())
            .map(|_| ())
    };
    assert_eq!(logout(NOW - 60), Ok(()));
    assert_eq!(logout(NOW - super::logout_token::MAX_AGE), Ok(()));
    assert_eq!(
        logout(NOW - super::logout_token::MAX_AGE - 1),
        Err(TokenError::Expired)
    );
}

#[test]
fn none_and_hmac_and_unknown_algorithms_are_refused() {
    let fixture = fixture();
    let body = claims(json!({}));
    let none = unsigned(json!({"alg": "none", "typ": "JWT"}), &body, b"");
    assert_eq!(
        validate_access_token(
            &none,
            &fixture.keys,
            &fixture.expectations(),
            Some("client")
        ),
        Err(TokenError::DisallowedAlgorithm)
    );
    let none_upper = unsigned(json!({"alg": "NONE"}), &body, b"");
    assert_eq!(
        validate_access_token(
            &none_upper,
            &fixture.keys,
            &fixture.expectations(),
            Some("client")
        ),
        Err(TokenError::DisallowedAlgorithm)
    );
    // HMAC keyed with the RSA public key's JSON: the classic algorithm-confusion attack.
    let hmac = fixture
        .key
        .sign_jwt(Alg::Hs256WithPublicKey, None, "JWT", &body);
    assert_eq!(
        validate_access_token(
            &hmac,
            &fixture.keys,
            &fixture.expectations(),
            Some("client")
        ),
        Err(TokenError::DisallowedAlgorithm)
    );
    let unknown = unsigned(json!({"alg": "XS999"}), &body, b"sig");
    assert_eq!(
        validate_access_token(
            &unknown,
            &fixture.keys,
            &fixture.expectations(),
            Some("client")
        ),
        Err(TokenError::DisallowedAlgorithm)
    );
    let crit = unsigned(
        json!({"alg": "ES256", "crit": ["exp"], "exp": 1}),
        &body,
        b"sig",
    );
    assert_eq!(
        validate_access_token(
            &crit,
            &fixture.keys,
            &fixture.expectations(),
            Some("client")
        ),
        Err(TokenError::UnsupportedCritical)
    );
}

#[test]
fn tampering_and_garbage_are_refused() {
    let fixture = fixture();
    let token = fixture.sign("at+jwt", &claims(json!({})));
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged = URL_SAFE_NO_PAD.encode(claims(json!({"sub": "mallory"})).to_string());
    parts[1] = &forged;
    assert_eq!(
        validate_access_token(
            &parts.join("."),
            &fixture.keys,
            &fixture.expectations(),
            Some("client")
        ),
        Err(TokenError::BadSignature)
    );
    for garbage in ["", "a", "a.b", "a.b.c", "....", "eyJ.eyJ.x", "a.b.c.d"] {
        assert_eq!(
            validate_access_token(
                garbage,
                &fixture.keys,
                &fixture.expectations(),
                Some("client")
            ),
            Err(TokenError::Malformed),
            "{garbage:?}"
        );
    }
}

#[test]
fn unknown_kid_is_reported_for_refetch() {
    let fixture = fixture();
    let other = Keys::new("rsa-other");
    let token = other.sign_jwt(
        Alg::ES256,
        Some(Some("ec-other")),
        "at+jwt",
        &claims(json!({})),
    );
    assert_eq!(
        validate_access_token(
            &token,
            &fixture.keys,
            &fixture.expectations(),
            Some("client")
        ),
        Err(TokenError::UnknownKey(Some("ec-other".to_owned())))
    );
}

#[test]
fn id_token_rules_of_core_3_1_3_7() {
    let fixture = fixture();
    let audiences = vec!["client".to_owned()];
    let check = |extra: serde_json::Value, access_token: Option<&str>| {
        let body = claims(json!({"aud": "client", "nonce": "n-1"}));
        let mut body = body.as_object().unwrap().clone();
        for (name, value) in extra.as_object().unwrap() {
            if value.is_null() {
                body.remove(name);
            } else {
                body.insert(name.clone(), value.clone());
            }
        }
        let token = fixture.sign("JWT", &serde_json::Value::Object(body));
        let expected = IdTokenExpectations {
            common: Expectations {
                issuer: "https://idp",
                audiences: &audiences,
                leeway: 60,
                now: NOW,
            },
            client_id: "client",
            nonce: super::id_token::NonceRule::Equals("n-1"),
            access_token,
            code: None,
            max_age: None,
        };
        validate_id_token(&token, &fixture.keys, &expected).map(|_| ())
    };
    assert_eq!(check(json!({}), None), Ok(()));
    assert_eq!(
        check(json!({"nonce": "other"}), None),
        Err(TokenError::WrongNonce)
    );
    assert_eq!(
        check(json!({"nonce": null}), None),
        Err(TokenError::WrongNonce)
    );
    assert_eq!(
        check(json!({"aud": ["client", "x"]}), None),
        Err(TokenError::WrongAuthorizedParty)
    );
    assert_eq!(
        check(json!({"aud": ["client", "x"], "azp": "client"}), None),
        Ok(())
    );
    assert_eq!(
        check(json!({"azp": "x"}), None),
        Err(TokenError::WrongAuthorizedParty)
    );
    assert_eq!(
        check(json!({"iat": null}), None),
        Err(TokenError::MissingClaim("iat"))
    );
    assert_eq!(
        check(json!({"sub": null}), None),
        Err(TokenError::MissingClaim("sub"))
    );
    let at_hash = left_half_hash(Algorithm::ES256, "the-access-token");
    assert_eq!(
        check(json!({"at_hash": at_hash}), Some("the-access-token")),
        Ok(())
    );
    assert_eq!(
        check(json!({"at_hash": at_hash}), Some("another-token")),
        Err(TokenError::WrongAccessTokenHash)
    );
}

#[test]
fn cache_hits_only_the_same_token_until_it_expires() {
    let cache = cache::TokenCache::new(10);
    cache.insert("t", Arc::new(Map::new()), NOW + 10);
    assert!(cache.get("t", NOW).is_some());
    assert!(cache.get("t2", NOW).is_none());
    assert!(cache.get("t", NOW + 10).is_none());
}

#[test]
fn numeric_dates_must_be_integers_in_range() {
    let fixture = fixture();
    for (claim, value) in [
        ("exp", json!(1e300)),
        ("exp", json!(NOW as f64 + 300.5)),
        ("exp", json!(NOW as f64 + 300.0)),
        ("exp", json!(MAX_NUMERIC_DATE + 1)),
        ("exp", json!(u64::MAX)),
        ("exp", json!(-1)),
        ("nbf", json!(-1e300)),
        ("nbf", json!(NOW as f64 - 0.5)),
        ("iat", json!(-1e300)),
        ("iat", json!(f64::MIN_POSITIVE)),
    ] {
        let name = match claim {
            "exp" => "exp",
            "nbf" => "nbf",
            _ => "iat",
        };
        fixture.check(
            claims(json!({ claim: value })),
            Err(TokenError::MissingClaim(name)),
        );
    }
    fixture.check(claims(json!({"exp": MAX_NUMERIC_DATE})), Ok(()));
    fixture.check(claims(json!({"nbf": 0, "iat": NOW - 1})), Ok(()));
}

#[test]
fn subjects_over_255_characters_are_refused() {
    let fixture = fixture();
    fixture.check(claims(json!({"sub": "s".repeat(255)})), Ok(()));
    fixture.check(claims(json!({"sub": "é".repeat(255)})), Ok(()));
    fixture.check(
        claims(json!({"sub": "s".repeat(256)})),
        Err(TokenError::SubjectTooLong),
    );
    // A `sub` that is not a string already fails to decode (jsonwebtoken reads it as one).
    fixture.check(
        claims(json!({"sub": ["alice"]})),
        Err(TokenError::Malformed),
    );
}

#[test]
fn id_token_age_and_c_hash_are_checked_at_login() {
    let fixture = fixture();
    let audiences = vec!["client".to_owned()];
    let check = |extra: serde_json::Value, code: Option<&str>, max_age: Option<i64>| {
        let mut body = claims(json!({"aud": "client", "nonce": "n-1"}));
        for (name, value) in extra.as_object().unwrap() {
            body[name] = value.clone();
        }
        let token = fixture.sign("JWT", &body);
        let expected = IdTokenExpectations {
            common: Expectations {
                issuer: "https://idp",
                audiences: &audiences,
                leeway: 60,
                now: NOW,
            },
            client_id: "client",
            nonce: super::id_token::NonceRule::Equals("n-1"),
            access_token: None,
            code,
            max_age,
        };
        validate_id_token(&token, &fixture.keys, &expected).map(|_| ())
    };
    let week_ago = json!({"iat": NOW - 7 * 24 * 3600});
    assert_eq!(
        check(week_ago.clone(), None, Some(600)),
        Err(TokenError::TooOld)
    );
    assert_eq!(
        check(week_ago, None, None),
        Ok(()),
        "no age limit off the login"
    );
    assert_eq!(
        check(json!({"iat": NOW - 600 - 60}), None, Some(600)),
        Ok(()),
        "max age plus leeway"
    );
    assert_eq!(
        check(json!({"iat": NOW - 600 - 61}), None, Some(600)),
        Err(TokenError::TooOld)
    );
    let c_hash = left_half_hash(Algorithm::ES256, "the-code");
    assert_eq!(
        check(json!({"c_hash": c_hash}), Some("the-code"), Some(600)),
        Ok(())
    );
    assert_eq!(
        check(json!({"c_hash": c_hash}), Some("another-code"), Some(600)),
        Err(TokenError::WrongCodeHash)
    );
    assert_eq!(
        check(json!({"c_hash": 7}), Some("the-code"), Some(600)),
        Err(TokenError::WrongCodeHash)
    );
    assert_eq!(
        check(json!({}), Some("the-code"), Some(600)),
        Ok(()),
        "c_hash is optional in the code flow"
    );
}

#[test]
fn introspection_answers_are_checked() {
    use super::introspection::check_introspection;
    let audiences = vec!["api".to_owned()];
    let expected = Expectations {
        issuer: "https://idp",
        audiences: &audiences,
        leeway: 60,
        now: NOW,
    };
    let check =
        |answer: serde_json::Value| check_introspection(answer.as_object().unwrap(), &expected);
    let base = json!({"active": true, "iss": "https://idp", "aud": "api", "sub": "alice", "exp": NOW + 60, "token_type": "Bearer"});
    let with = |name: &str, value: serde_json::Value| {
        let mut answer = base.clone();
        answer[name] = value;
        answer
    };
    assert_eq!(check(base.clone()), Ok(Some(NOW + 60)));
    // Says neither whom it is for nor what it is: Spring Authorization Server's answer for a
    // refresh token or an authorization code, which it looks up whatever the hint.
    for unsaid in [
        json!({"active": true}),
        json!({"active": true, "client_id": "other-client", "iat": NOW - 10, "exp": NOW + 60}),
    ] {
        assert_eq!(check(unsaid), Err(TokenError::NotAnAccessToken));
    }
    // Either is enough: an audience (Spring's access tokens), or the kind (Doorkeeper's).
    assert_eq!(
        check(json!({"active": true, "aud": ["api"], "exp": NOW + 60})),
        Ok(Some(NOW + 60))
    );
    for kind in [
        "Bearer",
        "access_token",
        "urn:ietf:params:oauth:token-type:access_token",
    ] {
        assert_eq!(
            check(json!({"active": true, "token_type": kind, "sub": "alice"})),
            Ok(None),
            "{kind}"
        );
    }
    assert_eq!(
        check(json!({"active": true, "token_use": "access"})),
        Ok(None)
    );
    for other in [
        json!("id_token"),
        json!("DPoP"),
        json!("authorization_code"),
        json!(1),
    ] {
        assert_eq!(
            check(with("token_type", other.clone())),
            Err(TokenError::NotAnAccessToken),
            "{other}"
        );
    }
    assert_eq!(
        check(with("active", json!(false))),
        Err(TokenError::Inactive)
    );
    assert_eq!(
        check(with("active", json!("true"))),
        Err(TokenError::Inactive)
    );
    assert_eq!(
        check(with("iss", json!("https://other"))),
        Err(TokenError::WrongIssuer)
    );
    assert_eq!(check(with("iss", json!(1))), Err(TokenError::WrongIssuer));
    for refresh in ["refresh_token", "Refresh_Token", "refresh"] {
        assert_eq!(
            check(with("token_type", json!(refresh))),
            Err(TokenError::NotAnAccessToken)
        );
        assert_eq!(
            check(with("token_use", json!(refresh))),
            Err(TokenError::NotAnAccessToken)
        );
    }
    assert_eq!(
        check(with("aud", json!("web"))),
        Err(TokenError::WrongAudience)
    );
    assert_eq!(
        check(with("exp", json!(NOW - 61))),
        Err(TokenError::Expired)
    );
    assert_eq!(
        check(with("exp", json!(1e300))),
        Err(TokenError::MissingClaim("exp"))
    );
    assert_eq!(
        check(with("sub", json!("s".repeat(256)))),
        Err(TokenError::SubjectTooLong)
    );
}

#[test]
fn an_attackers_kid_is_bounded_in_the_error() {
    let fixture = fixture();
    let kid = format!("{}\r\nforged log line", "k".repeat(64 * 1024));
    let body = claims(json!({}));
    let header = json!({"alg": "ES256", "kid": kid});
    let token = unsigned(header, &body, &[0; 64]);
    let error = validate_access_token(
        &token,
        &fixture.keys,
        &fixture.expectations(),
        Some("client"),
    )
    .unwrap_err();
    assert!(
        matches!(error, TokenError::UnknownKey(Some(_))),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.len() < 200, "{} bytes", message.len());
    assert!(!message.contains(['\r', '\n']));
}

#[test]
fn without_userinfo_an_address_is_unverified_unless_the_session_said_so_of_it() {
    let claims = |value: Value| -> Claims { Arc::new(value.as_object().unwrap().clone()) };
    let verified = |claims: &Claims| claims.get("email_verified").cloned();
    // At a login: unverified.
    let login = without_userinfo(claims(json!({"email": "a@example.com"})), None);
    assert_eq!(verified(&login), Some(json!(false)));
    // At a refresh: what the session said of the same address, else unverified.
    let before = claims(json!({"email": "a@example.com", "email_verified": false}));
    let same = without_userinfo(claims(json!({"email": "a@example.com"})), Some(&before));
    assert_eq!(verified(&same), Some(json!(false)));
    let was_verified = claims(json!({"email": "a@example.com", "email_verified": true}));
    let moved = without_userinfo(
        claims(json!({"email": "b@example.com"})),
        Some(&was_verified),
    );
    assert_eq!(verified(&moved), Some(json!(false)), "another address");
    let kept = without_userinfo(
        claims(json!({"email": "a@example.com"})),
        Some(&was_verified),
    );
    assert_eq!(verified(&kept), Some(json!(true)));
    // What the ID token says stands; a session that never said stays silent.
    let said = claims(json!({"email": "a@example.com", "email_verified": true}));
    assert_eq!(
        verified(&without_userinfo(said, Some(&before))),
        Some(json!(true))
    );
    let silent = claims(json!({"email": "a@example.com"}));
    assert_eq!(
        verified(&without_userinfo(silent.clone(), Some(&silent))),
        None
    );
    // No address: nothing said.
    let none = without_userinfo(claims(json!({"sub": "a"})), None);
    assert_eq!(verified(&none), None);
}
