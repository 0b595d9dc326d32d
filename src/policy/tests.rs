//! Unit tests of the `/auth` query and requirement checks.

use axum::http::Method;
use serde_json::json;

use super::*;

#[track_caller]
fn check(claims: serde_json::Value, query: &str, expected: &str) {
    let query = AuthQuery::parse(query).unwrap();
    let outcome = match decide(&query, claims.as_object().unwrap()) {
        Decision::Allow(headers) => {
            let shown: Vec<String> = headers
                .iter()
                .map(|(name, value)| format!("{name}={}", value.to_str().unwrap()))
                .collect();
            format!("allow [{}]", shown.join("; "))
        }
        Decision::Deny(_) => "deny".to_owned(),
    };
    assert_eq!(outcome, expected, "query {query:?}");
}

#[test]
fn claim_rules_repeat_means_any_different_means_all() {
    let claims = json!({"tid": "1111", "aud": "2222", "groups": ["admin", "developers"], "level": 3, "ok": true});
    check(claims.clone(), "tid=1111", "allow []");
    check(claims.clone(), "tid=9999", "deny");
    check(claims.clone(), "tid=1111&aud=3333&aud=2222", "allow []");
    check(claims.clone(), "tid=1111&aud=3333", "deny");
    check(claims.clone(), "groups=admin", "allow []");
    check(claims.clone(), "groups=ops", "deny");
    check(claims.clone(), "level=3&ok=true", "allow []");
    check(claims.clone(), "missing=x", "deny");
}

/// A claim rule's name is the query's, as long as a request head: the caller's 403 names it
/// quoted bounded, never whole.
#[test]
fn a_denied_claim_is_named_bounded() {
    let long = "c".repeat(20_000);
    let query = AuthQuery::parse(&format!("{long}=x")).unwrap();
    let Decision::Deny(requirement) = decide(&query, json!({}).as_object().unwrap()) else {
        panic!("a missing claim is allowed");
    };
    assert!(requirement.len() < 200, "{} bytes", requirement.len());
    assert!(requirement.starts_with("claim `ccc"), "{requirement}");
}

#[test]
fn inject_claim_with_and_without_header_name() {
    let claims = json!({"email": "a@example.com", "groups": ["admin", "dev"], "scope": "a b"});
    check(
        claims.clone(),
        "inject-claim=email",
        "allow [email=a@example.com]",
    );
    check(
        claims.clone(),
        "inject-claim=email,mail",
        "allow [mail=a@example.com]",
    );
    check(
        claims.clone(),
        "inject-claim=groups,JWT-Claim-Groups&inject-claim=scope,JWT-Claim-Scope",
        "allow [jwt-claim-groups=admin,dev; jwt-claim-scope=a b]",
    );
    check(claims.clone(), "inject-claim=absent", "allow []");
}

#[test]
fn inject_json_claim_reads_json_and_json_strings() {
    let inner = json!({"firebase": {"sign_in_attributes": {"role": "admin"}}});
    let as_string = json!({"gcip": inner.to_string()});
    let as_object = json!({"gcip": inner});
    let query = "inject-json-claim=role,gcip,%24.firebase.sign_in_attributes.role";
    check(as_string, query, "allow [role=admin]");
    check(as_object.clone(), query, "allow [role=admin]");
    check(
        as_object,
        "inject-json-claim=role,gcip,$.nothing",
        "allow []",
    );
    check(json!({"gcip": "not json"}), query, "allow []");
}

#[test]
fn claim_values_that_cannot_be_headers_deny() {
    check(
        json!({"name": "a\r\nX-Evil: 1"}),
        "inject-claim=name",
        "deny",
    );
}

/// An address the provider says it has not verified reaches no header and no rule.
#[test]
fn an_address_the_provider_has_not_verified_is_no_identity() {
    for unverified in [json!(false), json!("false")] {
        let claims = json!({"email": "ceo@corp.example", "email_verified": unverified});
        check(
            claims.clone(),
            "inject-claim=email,X-Auth-Email",
            "allow []",
        );
        check(
            claims.clone(),
            "inject-json-claim=X-Auth-Email,email,$",
            "allow []",
        );
        check(claims.clone(), "email=ceo@corp.example", "deny");
        let route = Requirements {
            claims: BTreeMap::from([("email".to_owned(), vec!["ceo@corp.example".to_owned()])]),
            ..Requirements::default()
        };
        assert!(check_requirements(&route, claims.as_object().unwrap()).is_err());
    }
    // Verified, or not said either way: the provider's word.
    for claims in [
        json!({"email": "ceo@corp.example", "email_verified": true}),
        json!({"email": "ceo@corp.example"}),
    ] {
        check(
            claims.clone(),
            "inject-claim=email,X-Auth-Email",
            "allow [x-auth-email=ceo@corp.example]",
        );
        check(claims, "email=ceo@corp.example", "allow []");
    }
}

/// A value the application would read back as another is sent percent-encoded: a group
/// `eng,admin` would read as two groups, `"admin "` as `admin` (parsers and applications trim).
#[test]
fn claim_values_that_would_read_back_as_others_are_encoded() {
    let sent = |claims: serde_json::Value, query: &str, expected: &str| {
        check(claims, query, &format!("allow [{expected}]"));
    };
    sent(
        json!({"groups": ["x,admin,y", "dev"]}),
        "inject-claim=groups",
        "groups=x%2Cadmin%2Cy,dev",
    );
    sent(
        json!({"user": "admin "}),
        "inject-claim=user",
        "user=admin%20",
    );
    sent(
        json!({"user": "\tadmin"}),
        "inject-claim=user",
        "user=%09admin",
    );
    sent(
        json!({"user": "admin\u{a0}"}),
        "inject-claim=user",
        "user=admin%C2%A0",
    );
    sent(
        json!({"groups": ["100%,x", "50%"]}),
        "inject-claim=groups",
        "groups=100%25%2Cx,50%",
    );
    // Outside ASCII a header carries no text: encoded, not a refusal of the user.
    sent(
        json!({"name": "José 100%"}),
        "inject-claim=name",
        "name=Jos%C3%A9 100%25",
    );
    sent(
        json!({"groups": ["Ärzte", "dev"]}),
        "inject-claim=groups",
        "groups=%C3%84rzte,dev",
    );
    // What an encoded value could be is encoded too: never sent as José's.
    sent(
        json!({"name": "Jos%C3%A9"}),
        "inject-claim=name",
        "name=Jos%25C3%25A9",
    );
    sent(json!({"name": "100%"}), "inject-claim=name", "name=100%");
    // One element matched by `[*]` is a list element too; an object's commas are encoded.
    let roles = json!({"realm": {"roles": ["eng,admin"], "o": {"a": 1, "b": 2}}});
    sent(
        roles.clone(),
        "inject-json-claim=X-Roles,realm,$.roles[*]",
        "x-roles=eng%2Cadmin",
    );
    sent(
        roles,
        "inject-json-claim=X-O,realm,$.o",
        r#"x-o={"a":1%2C"b":2}"#,
    );
    // One string with a comma of its own is one value, and is sent as one: a list of one
    // sent as a plain string (AD FS) reads as no other member than a rule read. A list of
    // lists is read in line.
    sent(
        json!({"name": "Doe, Jane"}),
        "inject-claim=name",
        "name=Doe%2C Jane",
    );
    sent(
        json!({"groups": "x,admin"}),
        "inject-claim=groups",
        "groups=x%2Cadmin",
    );
    check(json!({"groups": "x,admin"}), "groups=admin", "deny");
    sent(
        json!({"realm": {"groups": "x,admin"}}),
        "inject-json-claim=X-Groups,realm,$.groups",
        "x-groups=x%2Cadmin",
    );
    let lists = json!({"realm": {"a": ["x", "y"], "b": ["z"]}});
    sent(
        lists,
        "inject-json-claim=X-Roles,realm,$.*",
        "x-roles=x,y,z",
    );
}

#[test]
fn skip_rules_with_and_without_method() {
    let query = AuthQuery::parse("skip-auth=GET,/favicon.ico$&skip-auth=/api/").unwrap();
    let [favicon, api] = query.skip_rules.as_slice() else {
        panic!()
    };
    assert!(favicon.skips(Some(&Method::GET), "/favicon.ico"));
    assert!(!favicon.skips(Some(&Method::POST), "/favicon.ico"));
    assert!(api.skips(Some(&Method::POST), "/v1/api/x"));
    let negated = AuthQuery::parse("skip-auth-ne=/api/").unwrap();
    assert!(negated.skip_rules[0].skips(Some(&Method::GET), "/home"));
    assert!(!negated.skip_rules[0].skips(Some(&Method::GET), "/api/x"));
    let negated_method = AuthQuery::parse("skip-auth-ne=GET,^/api/").unwrap();
    assert!(negated_method.skip_rules[0].skips(Some(&Method::GET), "/home"));
    assert!(!negated_method.skip_rules[0].skips(Some(&Method::POST), "/home"));
    // A method-specific rule never applies when the method is not known; others still do.
    assert!(!favicon.skips(None, "/favicon.ico"));
    assert!(!negated_method.skip_rules[0].skips(None, "/home"));
    assert!(api.skips(None, "/v1/api/x"));
}

/// `/admin.json` is `/admin` as JSON to Rails (`/admin(.:format)`) and Spring's suffix
/// patterns: a `skip-auth-ne` rule that names `/admin` does not skip it.
#[test]
fn a_negated_skip_rule_sees_the_path_without_its_format_suffix() {
    let query = AuthQuery::parse("skip-auth-ne=^/admin(/|$)").unwrap();
    let rule = &query.skip_rules[0];
    for path in ["/admin.json", "/admin.json/", "/admin.xml"] {
        assert!(!rule.skips(Some(&Method::GET), path), "{path}");
    }
    assert!(rule.skips(Some(&Method::GET), "/home.json"));
    assert!(rule.skips(Some(&Method::GET), "/administrator.json"));
    // A `skip-auth` pattern is held to the path as sent: an asset rule still matches.
    let assets = AuthQuery::parse("skip-auth=\\.js$").unwrap();
    assert!(assets.skip_rules[0].skips(Some(&Method::GET), "/app.js"));
}

/// `/admin/` is `/admin` to Rails, Express and Spring MVC (by default) and ASP.NET Core: a
/// `skip-auth-ne` rule that names `/admin` exactly does not skip it. Before, it did.
#[test]
fn a_negated_skip_rule_sees_the_path_without_its_trailing_slash() {
    let query = AuthQuery::parse("skip-auth-ne=^/admin$&groups=admin").unwrap();
    let rule = &query.skip_rules[0];
    for path in ["/admin", "/admin/"] {
        assert!(!rule.skips(Some(&Method::GET), path), "{path}");
    }
    assert!(rule.skips(Some(&Method::GET), "/admin/users"));
    assert!(rule.skips(Some(&Method::GET), "/home/"));
    let root = AuthQuery::parse("skip-auth-ne=^/$").unwrap();
    assert!(!root.skip_rules[0].skips(Some(&Method::GET), "/"));
    // A `skip-auth` pattern is held to the path as sent.
    let directory = AuthQuery::parse("skip-auth=^/static/").unwrap();
    assert!(directory.skip_rules[0].skips(Some(&Method::GET), "/static/"));
}

#[test]
fn malformed_parameters_name_themselves() {
    let error = |query: &str| AuthQuery::parse(query).unwrap_err().parameter;
    assert_eq!(error("skip-auth=GET,(unclosed"), "skip-auth");
    assert_eq!(error("skip-auth-ne="), "skip-auth-ne");
    assert_eq!(error("inject-claim=a,b,c"), "inject-claim");
    assert_eq!(error("inject-claim=email,bad%20header"), "inject-claim");
    assert_eq!(error("inject-json-claim=h,c"), "inject-json-claim");
    assert_eq!(error("inject-json-claim=h,c,$$$"), "inject-json-claim");
    assert_eq!(error("tid="), "tid");
    assert_eq!(error("tid=%FF"), "tid");
    assert_eq!(error("=x"), "");
    // White space in a pattern matches no canonical path: as a `-ne` rule, it skipped every
    // request (`skip-auth-ne=^/admin/ &groups=admin`, a space before the `&`).
    assert_eq!(error("skip-auth-ne=^/admin/%20"), "skip-auth-ne");
    assert_eq!(error("skip-auth-ne=^/admin/[%20]x"), "skip-auth-ne");
    assert_eq!(error("skip-auth=GET,^/a%09b"), "skip-auth");
    // Nor does a character that prints as nothing (a zero-width space pasted with the pattern).
    assert_eq!(error("skip-auth-ne=^/admin%E2%80%8B(/|$)"), "skip-auth-ne");
    assert_eq!(error("skip-auth-ne=^/admin%C2%AD"), "skip-auth-ne");
    assert_eq!(error("skip-auth=^/a%EF%BB%BFb"), "skip-auth");
    // U+3164 (a Hangul filler), U+FE0F (a variation selector), U+2800 (blank Braille).
    assert_eq!(error("skip-auth-ne=^/admin%E3%85%A4"), "skip-auth-ne");
    assert_eq!(error("skip-auth-ne=^/admin%EF%B8%8F"), "skip-auth-ne");
    assert_eq!(error("skip-auth-ne=^/admin%E2%A0%80"), "skip-auth-ne");
    // A letter is not refused: a decoded reading of a path may hold it.
    assert!(AuthQuery::parse("skip-auth-ne=^/caf%C3%A9").is_ok());
    // Headers that frame, route or set cookies carry no claim (the /auth answer itself broke
    // on an injected `Transfer-Encoding`).
    for header in [
        "Transfer-Encoding",
        "content-length",
        "Connection",
        "Set-Cookie",
        "Cookie",
        "Host",
        "TE",
        "Upgrade",
    ] {
        assert_eq!(error(&format!("inject-claim=sub,{header}")), "inject-claim");
        assert_eq!(
            error(&format!("inject-json-claim={header},sub,$")),
            "inject-json-claim"
        );
    }
    // Anyone may send a query: it holds at most eight skip rules.
    let nine = ["skip-auth=%5E/a"; 9].join("&");
    assert_eq!(error(&nine), "skip-auth");
    assert!(AuthQuery::parse(&["skip-auth=%5E/a"; 8].join("&")).is_ok());
}

#[test]
fn a_plus_in_a_skip_pattern_is_the_regexs_and_elsewhere_a_space() {
    // Form decoding would make `^/api/.+` the `^/api/. ` no path matches, and a `-ne` rule a
    // skip for every path.
    let query = AuthQuery::parse("skip-auth-ne=^/api/.+&skip-auth=^/x%2By$&tid=a+b").unwrap();
    assert!(!query.skip_rules[0].skips(None, "/api/users"));
    assert!(query.skip_rules[0].skips(None, "/other"));
    assert!(
        query.skip_rules[1].skips(None, "/xxy"),
        "%2B is the regex's + too"
    );
    assert_eq!(query.claim_rules["tid"], ["a b"]);
}

fn requirements(toml_text: &str) -> Requirements {
    let text = format!(
        "[session]\nsecrets = [\"0123456789abcdef0123456789abcdef\"]\n[[provider]]\nname = \"p\"\nissuer = \"https://idp\"\nclient_id = \"c\"\nclient_auth = \"none\"\n[[route]]\nupstream = \"http://127.0.0.1:1\"\nprovider = \"p\"\n[route.require]\n{toml_text}"
    );
    let config = crate::config::load(&text, &Default::default()).unwrap();
    config.routes[0].require.clone()
}

#[track_caller]
fn check_route(require: &str, claims: serde_json::Value, expected: Result<(), &str>) {
    let outcome = check_requirements(&requirements(require), claims.as_object().unwrap());
    match (outcome, expected) {
        (Ok(()), Ok(())) => {}
        (Err(message), Err(fragment)) => assert!(
            message.contains(fragment),
            "{message:?} should mention {fragment:?}"
        ),
        (outcome, expected) => panic!("{require}: got {outcome:?}, expected {expected:?}"),
    }
}

#[test]
fn route_requirements_all_must_hold() {
    let keycloak = json!({
        "iss": "https://idp", "scope": "openid read write", "roles": ["ops"],
        "realm_access": {"roles": ["user"]}, "resource_access": {"api": {"roles": ["writer"]}},
        "groups": ["eng"], "email": "Ann@Example.com", "tid": "1111", "app": {"roles": ["auditor"]},
    });
    check_route("issuers = [\"https://idp\"]", keycloak.clone(), Ok(()));
    check_route(
        "issuers = [\"https://other\"]",
        keycloak.clone(),
        Err("issuers"),
    );
    check_route("scopes = [\"read\", \"write\"]", keycloak.clone(), Ok(()));
    check_route(
        "scopes = [\"read\", \"admin\"]",
        keycloak.clone(),
        Err("`admin`"),
    );
    check_route("roles = [\"admin\", \"ops\"]", keycloak.clone(), Ok(()));
    check_route(
        "roles = [\"auditor\"]\nroles_claim = \"$.app.roles\"",
        keycloak.clone(),
        Ok(()),
    );
    check_route("roles = [\"admin\"]", keycloak.clone(), Err("roles admin"));
    check_route("realm_roles = [\"user\"]", keycloak.clone(), Ok(()));
    check_route(
        "realm_roles = [\"admin\"]",
        keycloak.clone(),
        Err("realm roles"),
    );
    check_route(
        "client_roles = { api = [\"writer\"] }",
        keycloak.clone(),
        Ok(()),
    );
    check_route(
        "client_roles = { api = [\"admin\"] }",
        keycloak.clone(),
        Err("client `api`"),
    );
    check_route("groups = [\"eng\"]", keycloak.clone(), Ok(()));
    check_route("groups = [\"ops\"]", keycloak.clone(), Err("groups"));
    check_route(
        "email_domains = [\"example.com\"]",
        keycloak.clone(),
        Ok(()),
    );
    check_route(
        "email_domains = [\"example.org\"]",
        keycloak.clone(),
        Err("e-mail"),
    );
    check_route("claims = { tid = [\"1111\"] }", keycloak.clone(), Ok(()));
    check_route(
        "claims = { tid = [\"2222\"] }",
        keycloak.clone(),
        Err("`tid`"),
    );
    check_route(
        "groups = [\"eng\"]\nrealm_roles = [\"admin\"]",
        keycloak.clone(),
        Err("realm roles"),
    );
    check_route(
        "email_domains = [\"example.com\"]",
        json!({"email": "a@example.com", "email_verified": false}),
        Err("verified"),
    );
    // Amazon Cognito sends the claim as a string.
    for unverified in [json!("false"), json!("no"), json!(0)] {
        check_route(
            "email_domains = [\"example.com\"]",
            json!({"email": "a@example.com", "email_verified": unverified}),
            Err("verified"),
        );
    }
    for verified in [json!(true), json!("true"), json!(null)] {
        let mut claims = json!({"email": "a@example.com", "email_verified": verified});
        if verified.is_null() {
            claims.as_object_mut().unwrap().remove("email_verified");
        }
        check_route("email_domains = [\"example.com\"]", claims, Ok(()));
    }
    check_route(
        "email_domains = [\"example.com\"]",
        json!({"email": "a@evil.com@example.com.evil"}),
        Err("e-mail"),
    );
}

#[test]
fn a_trace_records_each_requirement_with_the_value_seen_and_only_when_explaining() {
    let require = Requirements {
        groups: vec!["ops".to_owned()],
        email_domains: vec!["example.com".to_owned()],
        ..Requirements::default()
    };
    let claims = serde_json::json!({"groups": ["dev"], "email": "a@example.com"});
    let claims = claims.as_object().unwrap();
    let mut off = Trace::off();
    assert!(check_requirements_traced(&require, claims, &mut off).is_err());
    assert!(!off.is_explaining());
    assert!(off.into_steps().is_empty());
    let mut trace = Trace::explaining();
    let refused = check_requirements_traced(&require, claims, &mut trace).unwrap_err();
    assert_eq!(refused, check_requirements(&require, claims).unwrap_err());
    let steps = trace.into_steps();
    assert_eq!(
        steps.len(),
        1,
        "the first failure ends the check: {steps:?}"
    );
    assert_eq!(steps[0].outcome, "fail");
    assert!(
        steps[0].detail.contains(r#"`groups` = ["dev"]"#),
        "{steps:?}"
    );
    let long = serde_json::Value::String("x".repeat(1000));
    assert!(trace::seen("big", Some(&long)).chars().count() < 300);
    assert_eq!(trace::seen("tid", None), "no `tid` claim");
}
