//! SPEC §4 `/auth` and `/validate`, and §6 token validation, against the test provider.

use serde_json::json;

use crate::support::gateway::signed_in;
use crate::support::idp::{AUDIENCE, Alg, CLIENT_ID, now};
use crate::support::{Browser, Gateway, TestIdp};

async fn auth(gateway: &Gateway, query: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut request = client.get(gateway.url(&format!("/auth{query}")));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// `config` with its provider introspecting opaque tokens.
pub fn with_introspection(config: String) -> String {
    config.replace(
        "jwks_refetch_interval",
        "introspection = true\njwks_refetch_interval",
    )
}

/// `/auth` for a bearer token from `client`, the address a trusted proxy in front names.
async fn bearer_from(gateway: &Gateway, client: &str, token: &str) -> reqwest::Response {
    let token = format!("Bearer {token}");
    auth(
        gateway,
        "",
        &[("authorization", &token), ("x-forwarded-for", client)],
    )
    .await
}

async fn status(gateway: &Gateway, query: &str, token: &str) -> u16 {
    auth(
        gateway,
        query,
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
    .status()
    .as_u16()
}

#[tokio::test]
async fn valid_bearer_token_passes_with_every_allowed_algorithm() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::forward_auth(&idp).await;
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
        let token = idp.access_token().alg(alg).sign();
        assert_eq!(status(&gateway, "", &token).await, 200, "{alg:?}");
    }
}

#[tokio::test]
async fn invalid_bearer_tokens_get_401() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::forward_auth(&idp).await;
    let cases = [
        (
            "expired beyond leeway",
            idp.access_token().expires_in(-120).sign(),
        ),
        (
            "not yet valid",
            idp.access_token().claim("nbf", json!(now() + 600)).sign(),
        ),
        (
            "issued in the future",
            idp.access_token().claim("iat", json!(now() + 600)).sign(),
        ),
        (
            "wrong issuer",
            idp.access_token()
                .claim("iss", json!("https://evil.example"))
                .sign(),
        ),
        (
            "wrong audience",
            idp.access_token().claim("aud", json!("other-api")).sign(),
        ),
        ("alg none", idp.access_token().alg(Alg::None).sign()),
        (
            "HS256 keyed with the public key",
            idp.access_token().alg(Alg::Hs256WithPublicKey).sign(),
        ),
        (
            "an ID token",
            idp.access_token()
                .typ("JWT")
                .claim("nonce", json!("n"))
                .sign(),
        ),
        (
            "a logout token",
            idp.access_token()
                .typ("logout+jwt")
                .claim("events", json!({}))
                .sign(),
        ),
        ("garbage", "not.a.token".to_owned()),
    ];
    for (name, token) in cases {
        assert_eq!(status(&gateway, "", &token).await, 401, "{name}");
    }
    let good = idp.access_token().sign();
    let position = good.len() - 20;
    let mut forged = good.clone();
    let replacement = if good.as_bytes()[position] == b'A' {
        "B"
    } else {
        "A"
    };
    forged.replace_range(position..=position, replacement);
    assert_eq!(status(&gateway, "", &forged).await, 401, "bad signature");
    let response = auth(&gateway, "", &[]).await;
    assert_eq!(response.status(), 401, "no credential");
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_eq!(
        auth(&gateway, "", &[("authorization", "Basic YTpi")])
            .await
            .status(),
        401,
        "not bearer"
    );
}

/// SPEC §6: an ID token is never a bearer access token, also when `audiences` names the client
/// id and the ID token is one a provider issues on refresh (no `nonce`) without `at_hash`: the
/// one Tollgate hands an upstream in an `id_token` identity header.
#[tokio::test]
async fn the_clients_id_token_is_no_bearer_token_where_audiences_name_the_client() {
    let idp = TestIdp::start().await;
    let config = Gateway::forward_auth_config(&idp, "", "").replace(
        &format!("audiences = [\"{AUDIENCE}\"]"),
        &format!("audiences = [\"{AUDIENCE}\", \"{CLIENT_ID}\"]"),
    );
    let gateway = Gateway::start(&config).await;
    let id_token = || {
        idp.access_token()
            .typ("JWT")
            .claim("aud", json!(CLIENT_ID))
            .claim("azp", json!(CLIENT_ID))
            .claim("scope", serde_json::Value::Null)
    };
    assert_eq!(status(&gateway, "", &id_token().sign()).await, 401);
    // An access token for the client's audience is still one.
    let access_token = id_token().claim("scope", json!("openid read")).sign();
    assert_eq!(status(&gateway, "", &access_token).await, 200);
}

/// A JWT access token bound to a key (DPoP, mutual TLS: `cnf`) is refused at `/auth` and
/// `/validate`: Tollgate checks no proof of the key, so whoever copied it would use it alone.
#[tokio::test]
async fn a_token_bound_to_a_key_is_refused_as_a_bearer_token() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::start(&Gateway::forward_auth_config(&idp, "", "")).await;
    let bound = idp
        .access_token()
        .claim(
            "cnf",
            json!({"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}),
        )
        .sign();
    assert_eq!(status(&gateway, "", &bound).await, 401);
    let validate = reqwest::Client::new()
        .get(gateway.url("/validate"))
        .bearer_auth(&bound)
        .send()
        .await
        .unwrap();
    assert_eq!(validate.status(), 401);
    assert_eq!(status(&gateway, "", &idp.access_token().sign()).await, 200);
}

#[tokio::test]
async fn bearer_tokens_need_a_configured_audience() {
    let idp = TestIdp::start().await;
    let config = Gateway::forward_auth_config(&idp, "", "")
        .replace(&format!("audiences = [\"{AUDIENCE}\"]"), "");
    let gateway = Gateway::start(&config).await;
    assert_eq!(status(&gateway, "", &idp.access_token().sign()).await, 401);
}

/// A key the provider withdraws (a leaked key is withdrawn for that very reason) no longer
/// validates the tokens it signed that were cached before, whatever their `exp`.
#[tokio::test]
async fn a_withdrawn_key_no_longer_validates_the_tokens_it_signed_that_were_cached() {
    let idp = TestIdp::start().await;
    let clock = tollgate::clock::ManualClock::new();
    let config = Gateway::forward_auth_config(&idp, "", "").replace(
        "jwks_refetch_interval = \"1h\"",
        "jwks_refetch_interval = \"1s\"",
    );
    let gateway = Gateway::start_with_clock(&config, clock.clone()).await;
    let old = idp.access_token().expires_in(86_400).sign();
    for _ in 0..3 {
        assert_eq!(status(&gateway, "", &old).await, 200);
    }
    clock.advance(2);
    idp.advance_clock(2);
    idp.rotate_keys("rsa-2");
    assert_eq!(
        status(&gateway, "", &idp.access_token().sign()).await,
        200,
        "the new key, after one re-fetch"
    );
    for _ in 0..3 {
        assert_eq!(
            status(&gateway, "", &old).await,
            401,
            "its key was withdrawn"
        );
    }
}

#[tokio::test]
async fn unknown_kid_burst_causes_one_jwks_refetch_and_rotation_needs_no_restart() {
    let idp = TestIdp::start().await;
    let config = Gateway::forward_auth_config(&idp, "", "").replace(
        "jwks_refetch_interval = \"1h\"",
        "jwks_refetch_interval = \"1s\"",
    );
    let gateway = Gateway::start(&config).await;
    assert_eq!(status(&gateway, "", &idp.access_token().sign()).await, 200);
    let fetches_before = idp.count("jwks");
    // The interval since the fetch at start passes.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    idp.rotate_keys("rsa-2");
    let rotated = idp.access_token().sign();
    assert_eq!(
        status(&gateway, "", &rotated).await,
        200,
        "a token signed with the new key passes after one re-fetch"
    );
    assert_eq!(idp.count("jwks"), fetches_before + 1);

    let limited = Gateway::start(&Gateway::forward_auth_config(&idp, "", "")).await;
    assert_eq!(status(&limited, "", &idp.access_token().sign()).await, 200);
    let fetches = idp.count("jwks");
    let made_up: Vec<String> = (0..20)
        .map(|index| {
            idp.access_token()
                .kid(Some(&format!("unknown-{index}")))
                .sign()
        })
        .collect();
    let mut burst = tokio::task::JoinSet::new();
    for token in made_up {
        let url = limited.url("/auth");
        burst.spawn(async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
    }
    while let Some(code) = burst.join_next().await {
        assert_eq!(code.unwrap(), 401);
    }
    assert!(
        idp.count("jwks") <= fetches + 1,
        "a burst of unknown kids re-fetched {} times",
        idp.count("jwks") - fetches
    );
}

#[tokio::test]
async fn claim_rules_all_of_different_any_of_repeated_arrays_any_element() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::forward_auth(&idp).await;
    let token = idp.access_token().claim("tid", json!("1111")).sign();
    assert_eq!(status(&gateway, "?tid=1111&groups=dev", &token).await, 200);
    assert_eq!(status(&gateway, "?tid=2222&tid=1111", &token).await, 200);
    assert_eq!(status(&gateway, "?tid=1111&groups=ops", &token).await, 403);
    assert_eq!(
        status(&gateway, "?groups=ops&groups=admin", &token).await,
        200
    );
}

#[tokio::test]
async fn claims_are_injected_as_headers() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::forward_auth(&idp).await;
    let inner = json!({"firebase": {"sign_in_attributes": {"role": "admin"}}}).to_string();
    let token = idp.access_token().claim("gcip", json!(inner)).sign();
    let query = "?inject-claim=email&inject-claim=groups,X-Groups&inject-json-claim=X-Role,gcip,%24.firebase.sign_in_attributes.role";
    let response = auth(
        &gateway,
        query,
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["email"], "alice@example.com");
    assert_eq!(response.headers()["x-groups"], "admin,dev");
    assert_eq!(response.headers()["x-role"], "admin");
}

#[tokio::test]
async fn malformed_query_is_400_naming_the_parameter_before_any_credential_is_read() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::forward_auth(&idp).await;
    // A skip rule is read where the original path is known (a trusted proxy's).
    let response = auth(
        &gateway,
        "?skip-auth=GET,(",
        &[("x-original-url", "https://app.example.com/x")],
    )
    .await;
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("skip-auth"));
    let response = auth(&gateway, "?inject-json-claim=X,c,$[", &[]).await;
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("inject-json-claim"));
}

#[tokio::test]
async fn skip_rules_see_only_the_canonical_original_path() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::forward_auth(&idp).await;
    let query = "?skip-auth=GET,^/public/";
    let original = |url: &'static str| [("x-original-url", url), ("x-original-method", "GET")];
    let gateway = &gateway;
    let skip = |url| async move { auth(gateway, query, &original(url)).await.status().as_u16() };
    assert_eq!(skip("https://app.example.com/public/logo.png").await, 200);
    assert_eq!(skip("https://app.example.com/admin?x=/public/").await, 401);
    // A dot segment has no single reading (an application routing on the path as sent does
    // not resolve it): refused, whichever way it leads.
    assert_eq!(skip("https://app.example.com/public/../admin").await, 400);
    assert_eq!(
        skip("https://app.example.com/public/%2e%2e/admin").await,
        400
    );
    assert_eq!(skip("https://app.example.com/admin/../public/x").await, 400);
    assert_eq!(
        skip("https://app.example.com/public%2F..%2Fadmin").await,
        400
    );
    // A `\`, encoded or not, has no single reading (IIS reads it as `/`): refused.
    assert_eq!(
        skip("https://app.example.com/public/%5C..%5Cadmin").await,
        400
    );
    // `;` parameters: refused whatever the credential (the ingress may have chosen its
    // location on them; the application may serve the path without them).
    assert_eq!(skip("https://app.example.com/public;x/logo.png").await, 400);
    assert_eq!(
        skip("https://app.example.com/public%3bx/logo.png").await,
        400
    );
    assert_eq!(
        skip("https://app.example.com/public/logo.png?a=1;b=2%3B").await,
        200,
        "the query is not the path"
    );
    assert_eq!(
        skip("https://app.example.com/%70ublic/x").await,
        200,
        "unreserved characters are decoded"
    );
    let post = auth(
        gateway,
        query,
        &[
            ("x-original-url", "https://app.example.com/public/x"),
            ("x-original-method", "POST"),
        ],
    )
    .await;
    assert_eq!(post.status(), 401, "the method must match");
    let traefik = auth(
        gateway,
        query,
        &[
            ("x-forwarded-uri", "/public/x"),
            ("x-forwarded-method", "GET"),
            ("x-forwarded-host", "app"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    assert_eq!(traefik.status(), 200);
    let negated = auth(
        gateway,
        "?skip-auth-ne=^/api/",
        &original("https://app.example.com/home"),
    )
    .await;
    assert_eq!(negated.status(), 200);
    let negated_api = auth(
        gateway,
        "?skip-auth-ne=^/api/",
        &original("https://app.example.com/api/x"),
    )
    .await;
    assert_eq!(negated_api.status(), 401);
}

#[tokio::test]
async fn forwarded_headers_from_untrusted_peers_are_ignored() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::start(&Gateway::forward_auth_config(
        &idp,
        "trusted_proxies = [\"10.0.0.0/8\"]",
        "",
    ))
    .await;
    let response = auth(
        &gateway,
        "?skip-auth=^/public/",
        &[("x-original-url", "https://app.example.com/public/x")],
    )
    .await;
    assert_eq!(response.status(), 401);
    let negated = auth(
        &gateway,
        "?skip-auth-ne=^/api/",
        &[("x-original-url", "https://app.example.com/home")],
    )
    .await;
    assert_eq!(
        negated.status(),
        401,
        "skip-auth-ne fails closed without a trusted original path"
    );
}

/// An ingress may cache `/auth` answers under a key of its operator's choosing (ingress-nginx
/// `auth-cache-key`, which must hold the credential): a skip or a redirect, which hold for one
/// path alone, are never stored.
#[tokio::test]
async fn answers_say_how_an_ingress_may_cache_them() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::start(&Gateway::forward_auth_config(
        &idp,
        "",
        "unauthenticated = \"redirect\"",
    ))
    .await;
    let bearer = format!("Bearer {}", idp.access_token().sign());
    let allowed = auth(&gateway, "", &[("authorization", &bearer)]).await;
    assert_eq!(allowed.status(), 200);
    assert!(allowed.headers().get("cache-control").is_none());
    let original = [
        ("x-forwarded-uri", "/public/x"),
        ("x-forwarded-method", "GET"),
        ("x-forwarded-host", "app.example.com"),
        ("x-forwarded-proto", "https"),
        ("accept", "text/html"),
    ];
    let skipped = auth(&gateway, "?skip-auth=^/public/", &original).await;
    assert_eq!(skipped.status(), 200);
    assert_eq!(skipped.headers()["cache-control"], "no-store");
    let mut page = original.to_vec();
    page[0] = ("x-forwarded-uri", "/admin");
    let redirected = auth(&gateway, "?skip-auth=^/public/", &page).await;
    assert_eq!(redirected.status(), 302);
    assert_eq!(redirected.headers()["cache-control"], "no-store");
}

/// Traefik and Caddy send `/auth` the client's headers and replace only the exact name of an
/// injected header upstream: a client's `X_Auth_Email` would reach an application that reads
/// headers the CGI way as `HTTP_X_AUTH_EMAIL`, beside Tollgate's or alone.
#[tokio::test]
async fn another_spelling_of_an_injected_header_is_refused() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::start(&Gateway::forward_auth_config(&idp, "", "")).await;
    let bearer = format!("Bearer {}", idp.access_token().sign());
    let rules = "?skip-auth=^/public/&inject-claim=email,X-Auth-Email";
    let public = [
        ("x-forwarded-uri", "/public/x"),
        ("x-forwarded-method", "GET"),
    ];
    // PHP reads `.` in a name as `_` too (Caddy's `php_fastcgi`, FrankenPHP keep it).
    for spelling in [
        "x_auth_email",
        "X_Auth-Email",
        "x-auth_email",
        "x.auth.email",
        "X.Auth-Email",
    ] {
        let mut forged = vec![
            ("authorization", bearer.as_str()),
            (spelling, "ceo@example.com"),
        ];
        assert_eq!(
            auth(&gateway, rules, &forged).await.status(),
            400,
            "{spelling}"
        );
        forged.extend(public);
        assert_eq!(
            auth(&gateway, rules, &forged[1..]).await.status(),
            400,
            "{spelling} on a skip"
        );
    }
    let plain = auth(&gateway, rules, &[("authorization", bearer.as_str())]).await;
    assert_eq!(plain.status(), 200);
    assert_eq!(plain.headers()["x-auth-email"], "alice@example.com");
    // Other headers with underscores are no one's business here.
    let other = [
        ("authorization", bearer.as_str()),
        ("x_custom", "1"),
        ("x.custom", "1"),
    ];
    assert_eq!(auth(&gateway, rules, &other).await.status(), 200);
    // The other way round: the rules inject a name with `_` or `.` (one kept from
    // mod_auth_openidc's `OIDC_CLAIM_…`), and the client sends it with dashes.
    for injected in ["X_Auth_User", "X.Auth.User", "x_auth-user"] {
        let rules = format!("?inject-claim=sub,{injected}");
        for sent in ["x-auth-user", "X_Auth_User"] {
            let forged = [("authorization", bearer.as_str()), (sent, "admin")];
            assert_eq!(
                auth(&gateway, &rules, &forged).await.status(),
                400,
                "{sent} beside {injected}"
            );
        }
        let plain = auth(&gateway, &rules, &[("authorization", bearer.as_str())]).await;
        assert_eq!(plain.status(), 200, "{injected}");
        let alone = [("authorization", bearer.as_str()), ("x-auth-other", "1")];
        assert_eq!(auth(&gateway, &rules, &alone).await.status(), 200);
    }
}

/// Traefik and Caddy pass on a client's `X_Forwarded_User` (their recipes clear dashed names,
/// Traefik's by name only), which Puma, PHP-FPM and FrankenPHP read as the
/// `HTTP_X_FORWARDED_USER` an oauth2-proxy once vouched for: `/auth` refuses any identity
/// header of a gateway Tollgate replaces spelt with `_` or `.`, allowed or skipped; the dashed
/// spellings (which a gateway in front may set) pass.
#[tokio::test]
async fn another_gateways_identity_header_spelt_with_underscores_is_refused() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::start(&Gateway::forward_auth_config(&idp, "", "")).await;
    let bearer = format!("Bearer {}", idp.access_token().sign());
    let public = [
        ("x-forwarded-uri", "/public/x"),
        ("x-forwarded-method", "GET"),
    ];
    for spelling in [
        "X_Forwarded_User",
        "x_auth_request_email",
        "Remote_User",
        "OIDC_CLAIM_email",
        "X.authentik.username",
        "cf_access_authenticated_user_email",
    ] {
        let forged = [("authorization", bearer.as_str()), (spelling, "ceo")];
        assert_eq!(
            auth(&gateway, "", &forged).await.status(),
            400,
            "{spelling}"
        );
        let skipped = [public[0], public[1], (spelling, "ceo")];
        assert_eq!(
            auth(&gateway, "?skip-auth=^/public/", &skipped)
                .await
                .status(),
            400,
            "{spelling} on a skip"
        );
    }
    for dashed in ["X-Forwarded-User", "Cf-Access-Authenticated-User-Email"] {
        let sent = [("authorization", bearer.as_str()), (dashed, "someone")];
        assert_eq!(auth(&gateway, "", &sent).await.status(), 200, "{dashed}");
    }
}

#[tokio::test]
async fn token_cookie_is_a_credential() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::start(&Gateway::forward_auth_config(
        &idp,
        "",
        "token_cookie = \"odj_access_token\"",
    ))
    .await;
    let token = idp.access_token().sign();
    let cookie = format!("other=1; odj_access_token={token}");
    assert_eq!(
        auth(&gateway, "", &[("cookie", &cookie)]).await.status(),
        200
    );
    let expired = format!(
        "odj_access_token={}",
        idp.access_token().expires_in(-3600).sign()
    );
    assert_eq!(
        auth(&gateway, "", &[("cookie", &expired)]).await.status(),
        401
    );
    // Two token cookies: Tollgate would check the first, some frameworks read the last.
    let forged = format!("odj_access_token={token}; odj_access_token=forged.admin.token");
    assert_eq!(
        auth(&gateway, "", &[("cookie", &forged)]).await.status(),
        400
    );
}

/// The application behind `/auth` gets the whole request: a token beside the credential that
/// identified the caller must be valid and name the same caller, or it could act on a token
/// Tollgate never checked.
#[tokio::test]
async fn every_token_beside_the_credential_is_checked() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::start(&Gateway::forward_auth_config(
        &idp,
        "",
        "token_cookie = \"odj_access_token\"",
    ))
    .await;
    let mut browser = Browser::new();
    signed_in(&mut browser, &gateway).await;
    let url = gateway.url("/auth");
    assert_eq!(browser.get(&url).await.status(), 200, "the session alone");
    let alice = idp.access_token().sign();
    let bob = idp.access_token().claim("sub", json!("bob")).sign();
    let forged = "forged.admin.token";
    let mut with =
        async |name: &str, value: String| browser.get_with(&url, &[(name, &value)]).await.status();
    let bearer = |token: &str| format!("Bearer {token}");
    let cookie = |token: &str| format!("odj_access_token={token}");
    let original = |token: &str| format!("/page?access_token={token}");
    // Beside the session: a bearer token, a token cookie, a token in the original query.
    for (name, value) in [
        ("authorization", &bearer as &dyn Fn(&str) -> String),
        ("cookie", &cookie),
        ("x-forwarded-uri", &original),
    ] {
        assert_eq!(with(name, value(&alice)).await, 200, "{name}: alice's");
        assert_eq!(with(name, value(forged)).await, 401, "{name}: forged");
        assert_eq!(
            with(name, value(&bob)).await,
            400,
            "{name}: another caller's"
        );
    }
    // Read as the token cookie by ASP.NET Core, which ignores case.
    assert_eq!(
        with("cookie", format!("ODJ_ACCESS_TOKEN={forged}")).await,
        401
    );
    // Read as `access_token` by some application: another case, encoded, PHP's `.`, after `;`.
    for query in [
        "Access_Token=",
        "access%5Ftoken=",
        "access.token=",
        "a=1;access_token=",
        "+access_token=",
        "[access_token]=",
    ] {
        let url = format!("/page?{query}{forged}");
        assert_eq!(with("x-forwarded-uri", url).await, 401, "{query}");
    }
    // An original URL with raw bytes that are not ASCII (nginx passes them on) is read too.
    let raw = format!("/page?q=\u{e9}&access_token={forged}");
    assert_eq!(with("x-original-url", raw).await, 401);
    // An empty token cookie (an application's logout leaves one) or parameter is no token.
    assert_eq!(with("cookie", "odj_access_token=".to_owned()).await, 200);
    let empty = "/page?access_token=&x=1".to_owned();
    assert_eq!(with("x-forwarded-uri", empty).await, 200);
    // Two original URLs that disagree are neither believed, but the tokens of both are
    // checked: the application gets one of them.
    let disagreeing = [
        ("x-original-url", "/x".to_owned()),
        ("x-forwarded-uri", format!("/page?access_token={forged}")),
    ];
    let pairs: Vec<(&str, &str)> = disagreeing
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    assert_eq!(browser.get_with(&url, &pairs).await.status(), 401);
    // Beside a bearer token: the token cookie, at `/auth` and at `/validate`.
    for path in ["/auth", "/validate"] {
        let client = reqwest::Client::new();
        let ask = async |token: &str| {
            client
                .get(gateway.url(path))
                .bearer_auth(&alice)
                .header("cookie", cookie(token))
                .send()
                .await
                .unwrap()
                .status()
        };
        assert_eq!(ask(&alice).await, 200, "{path}");
        assert_eq!(ask(forged).await, 401, "{path}");
        assert_eq!(ask(&bob).await, 400, "{path}");
    }
}

/// An application may read a token from an `Authorization` value that is not exactly
/// `Bearer <token>` (a tab, `JWT`, `Token`, no scheme at all: Python's `split()`,
/// djangorestframework-jwt), and Go and Node read the other pairs of a `Cookie` header that is
/// not UTF-8: such tokens beside a session went unchecked (200).
#[tokio::test]
async fn a_token_however_it_is_written_beside_the_credential_is_checked() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::start(&Gateway::forward_auth_config(
        &idp,
        "",
        "token_cookie = \"odj_access_token\"",
    ))
    .await;
    let mut browser = Browser::new();
    signed_in(&mut browser, &gateway).await;
    let url = gateway.url("/auth");
    let alice = idp.access_token().sign();
    let unsigned = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.";
    for (value, status) in [
        (format!("Bearer\t{unsigned}"), 401),
        (format!("bearer   {unsigned}"), 401),
        (format!("JWT {unsigned}"), 401),
        (format!("Token {unsigned}"), 401),
        (unsigned.to_owned(), 401),
        (format!("JWT {alice}"), 200),
        // The application's own credentials: not tokens Tollgate could check.
        ("Basic YWxpY2U6c2VjcmV0".to_owned(), 200),
        ("Digest username=\"alice\", nonce=\"x\"".to_owned(), 200),
        (
            "Token 9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b".to_owned(),
            200,
        ),
    ] {
        let answer = browser.get_with(&url, &[("authorization", &value)]).await;
        assert_eq!(answer.status(), status, "{value}");
    }
    let session: String = browser
        .cookies
        .iter()
        .map(|(name, value)| format!("{name}={value}; "))
        .collect();
    let with_raw_cookie = async |raw: &[u8]| {
        reqwest::Client::new()
            .get(&url)
            .header("cookie", session.as_str())
            .header(
                "cookie",
                reqwest::header::HeaderValue::from_bytes(raw).unwrap(),
            )
            .send()
            .await
            .unwrap()
            .status()
    };
    let mut raw = b"odj_access_token=".to_vec();
    raw.extend_from_slice(unsigned.as_bytes());
    raw.extend_from_slice(b"; legacy=caf\xe9");
    assert_eq!(
        with_raw_cookie(&raw).await,
        400,
        "a token cookie in a header not read here"
    );
    // A stray cookie of another application, without a token cookie beside it, is no reason.
    assert_eq!(with_raw_cookie(b"legacy=caf\xe9").await, 200);
    // A name that Python's `strip()` reads as the token cookie's (U+00A0 before it), in a
    // header read as Latin-1 and in one read as UTF-8.
    let mut latin1 = b"legacy=caf\xe9; \xa0odj_access_token=".to_vec();
    latin1.extend_from_slice(unsigned.as_bytes());
    assert_eq!(with_raw_cookie(&latin1).await, 400);
    let utf8 = format!("\u{a0}odj_access_token={unsigned}");
    assert_eq!(with_raw_cookie(utf8.as_bytes()).await, 401);
    // A scheme that ends at a NO-BREAK SPACE: where Python splits a header WSGI read as
    // Latin-1, and Go's `strings.Fields` one read as UTF-8.
    for scheme in [&b"Bearer\xa0"[..], "JWT\u{a0}".as_bytes()] {
        let raw = [scheme, unsigned.as_bytes()].concat();
        let status = reqwest::Client::new()
            .get(&url)
            .header("cookie", session.as_str())
            .header(
                "authorization",
                reqwest::header::HeaderValue::from_bytes(&raw).unwrap(),
            )
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 401, "{}", String::from_utf8_lossy(&raw));
    }
}

/// The session's own access token, sent by the page it serves, is accepted beside the session
/// even when it names the user by another `sub` than the ID token (Okta, Entra ID); another
/// token of that `sub` is not the session's.
#[tokio::test]
async fn the_sessions_own_access_token_is_its_callers() {
    let idp = TestIdp::start().await;
    idp.misbehave(crate::support::idp::Misbehaviour {
        access_token_subject: Some("00u-login-name"),
        ..Default::default()
    });
    let gateway = Gateway::forward_auth(&idp).await;
    let mut browser = Browser::new();
    signed_in(&mut browser, &gateway).await;
    let (own, _) = idp.last_tokens().unwrap();
    let url = gateway.url("/auth");
    let own = format!("Bearer {own}");
    let response = browser.get_with(&url, &[("authorization", &own)]).await;
    assert_eq!(response.status(), 200);
    let other = idp
        .access_token()
        .claim("sub", json!("00u-login-name"))
        .claim("jti", json!("another-token"))
        .sign();
    let other = format!("Bearer {other}");
    let response = browser.get_with(&url, &[("authorization", &other)]).await;
    assert_eq!(response.status(), 400, "tokens of two callers");
}

/// nginx writes a client's raw bytes into `X-Original-URL`; such a header used to read as
/// absent, so the client's own `X-Forwarded-Uri` (which ingress-nginx passes to `/auth`) was
/// believed alone and opened a skip rule. A header that is not text, or that is sent twice,
/// now makes neither family believed.
#[tokio::test]
async fn an_original_url_that_is_not_text_or_sent_twice_believes_neither() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::forward_auth(&idp).await;
    let client = reqwest::Client::new();
    let ask = async |headers: &[(&str, &[u8])]| {
        let mut request = client.get(gateway.url("/auth?skip-auth=^/public/"));
        for (name, value) in headers {
            let value = reqwest::header::HeaderValue::from_bytes(value).unwrap();
            request = request.header(*name, value);
        }
        request.send().await.unwrap().status()
    };
    assert_eq!(
        ask(&[("x-forwarded-uri", b"/public/x")]).await,
        200,
        "a skip"
    );
    let raw: &[u8] = b"http://app.example.com/admin/users?x=\xe9";
    let spoofed: &[(&str, &[u8])] = &[("x-original-url", raw), ("x-forwarded-uri", b"/public/")];
    assert_eq!(ask(spoofed).await, 401);
    let twice: &[(&str, &[u8])] = &[
        ("x-forwarded-uri", b"/public/"),
        ("x-forwarded-uri", b"/admin/users"),
    ];
    assert_eq!(ask(twice).await, 401);
}

#[tokio::test]
async fn redirect_mode_sends_browsers_to_signin_and_api_calls_get_401() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::start(&Gateway::forward_auth_config(
        &idp,
        "",
        "unauthenticated = \"redirect\"",
    ))
    .await;
    let headers = [
        ("x-forwarded-uri", "/page?a=1"),
        ("x-forwarded-method", "GET"),
        ("x-forwarded-host", "app.example.com"),
        ("x-forwarded-proto", "https"),
        ("accept", "text/html"),
    ];
    let response = auth(&gateway, "", &headers).await;
    assert_eq!(response.status(), 302);
    assert_eq!(
        response.headers()["location"],
        "https://app.example.com/signin?rd=https%3A%2F%2Fapp.example.com%2Fpage%3Fa%3D1"
    );
    let mut api = headers.to_vec();
    api.push(("x-requested-with", "XMLHttpRequest"));
    assert_eq!(auth(&gateway, "", &api).await.status(), 401);
    let mut navigation = headers.to_vec();
    navigation.extend([
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-dest", "document"),
    ]);
    assert_eq!(auth(&gateway, "", &navigation).await.status(), 302);
    // A page's image or script cannot show the sign-in page: 401, not a login begun.
    let mut image = headers.to_vec();
    image.extend([("sec-fetch-mode", "no-cors"), ("sec-fetch-dest", "image")]);
    assert_eq!(auth(&gateway, "", &image).await.status(), 401);
    // An expired bearer token is an API client's, however it asks: `invalid_token`.
    let expired = format!("Bearer {}", idp.access_token().expires_in(-3600).sign());
    let mut bearer = headers.to_vec();
    bearer.push(("authorization", &expired));
    for accept in ["text/html", "*/*"] {
        bearer[4] = ("accept", accept);
        let refused = auth(&gateway, "", &bearer).await;
        assert_eq!(refused.status(), 401, "{accept}");
        let challenge = refused.headers()["www-authenticate"].to_str().unwrap();
        assert!(challenge.contains("invalid_token"), "{challenge}");
    }
}

#[tokio::test]
async fn validate_answers_200_with_bounded_max_age_or_401_no_store() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::start(&Gateway::forward_auth_config(
        &idp,
        "",
        "token_cookie = \"odj_access_token\"",
    ))
    .await;
    let client = reqwest::Client::new();
    let token = idp.access_token().expires_in(120).sign();
    let response = client
        .get(gateway.url("/validate"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["vary"], "Authorization, Cookie");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert_eq!(response.headers()["referrer-policy"], "no-referrer");
    let max_age: i64 = response.headers()["cache-control"]
        .to_str()
        .unwrap()
        .strip_prefix("private, max-age=")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=120).contains(&max_age),
        "max-age {max_age} must not outlive the token"
    );
    let by_cookie = client
        .get(gateway.url("/validate"))
        .header("cookie", format!("odj_access_token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_cookie.status(), 200);
    let refused = client
        .get(gateway.url("/validate"))
        .bearer_auth("x.y.z")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()["cache-control"], "no-store");

    // An opaque token (the test provider's introspection says it lives 300 s more) may be
    // revoked at the provider any moment: its answer is not kept.
    let gateway = Gateway::start(&with_introspection(Gateway::forward_auth_config(
        &idp, "", "",
    )))
    .await;
    let opaque = client
        .get(gateway.url("/validate"))
        .bearer_auth("opaque-validate")
        .send()
        .await
        .unwrap();
    assert_eq!(opaque.status(), 200);
    assert_eq!(opaque.headers()["cache-control"], "no-store");
    // A JWT of the same provider is validated locally, as before.
    let jwt = client
        .get(gateway.url("/validate"))
        .bearer_auth(idp.access_token().expires_in(120).sign())
        .send()
        .await
        .unwrap();
    assert!(
        jwt.headers()["cache-control"]
            .to_str()
            .unwrap()
            .starts_with("private, max-age="),
        "{:?}",
        jwt.headers()["cache-control"]
    );
}

#[tokio::test]
async fn keys_can_come_from_a_jwks_file() {
    let idp = TestIdp::start().await;
    let jwks = reqwest::get(format!("{}/jwks", idp.issuer()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let path = crate::support::scratch_dir("jwks").join("jwks.json");
    std::fs::write(&path, jwks).unwrap();
    let fetched_before = idp.count("jwks");
    let config = Gateway::forward_auth_config(&idp, "", "").replace(
        "jwks_refetch_interval",
        &format!("jwks_file = \"{}\"\njwks_refetch_interval", path.display()),
    );
    let gateway = Gateway::start(&config).await;
    assert_eq!(status(&gateway, "", &idp.access_token().sign()).await, 200);
    assert_eq!(idp.count("jwks"), fetched_before, "no fetch from jwks_uri");
}

#[tokio::test]
async fn a_jwks_file_with_no_usable_key_stops_the_start() {
    let idp = TestIdp::start().await;
    let dir = crate::support::scratch_dir("jwks-broken");
    // A file that is missing, no JWK set, or a set without a usable signature key is refused
    // by `check` already, naming the key (`check` said such a set was valid, and `serve` then
    // refused to start).
    let only_oct = "{\"keys\": [{\"kty\": \"oct\", \"k\": \"c2VjcmV0\", \"kid\": \"h\"}]}";
    for (name, text) in [
        ("garbage.json", Some("not json")),
        ("missing.json", None),
        ("empty.json", Some("{\"keys\": []}")),
        ("oct.json", Some(only_oct)),
    ] {
        let path = dir.join(name);
        if let Some(text) = text {
            std::fs::write(&path, text).unwrap();
        }
        let text = Gateway::forward_auth_config(&idp, "", "").replace(
            "jwks_refetch_interval",
            &format!("jwks_file = \"{}\"\njwks_refetch_interval", path.display()),
        );
        let problems = tollgate::config::load(&text, &Default::default()).unwrap_err();
        assert!(
            problems
                .iter()
                .any(|problem| problem.to_string().starts_with("provider[0].jwks_file:")),
            "{name}: {problems:?}"
        );
    }
    // A JWK set with no key Tollgate can use by the time `serve` starts stops the start.
    let jwks = reqwest::get(format!("{}/jwks", idp.issuer()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let fetched = idp.count("jwks");
    for (name, emptied) in [("emptied.json", "{\"keys\": []}")] {
        let path = dir.join(name);
        std::fs::write(&path, &jwks).unwrap();
        let text = Gateway::forward_auth_config(&idp, "", "").replace(
            "jwks_refetch_interval",
            &format!("jwks_file = \"{}\"\njwks_refetch_interval", path.display()),
        );
        let config = tollgate::config::load(&text, &Default::default()).unwrap();
        std::fs::write(&path, emptied).unwrap();
        let public = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let refused = tollgate::app::start(
            config,
            std::sync::Arc::new(tollgate::clock::SystemClock),
            Some(public),
            None,
        )
        .await;
        match refused {
            Err(tollgate::app::AppError::KeyFile { provider, source }) => {
                assert_eq!(provider, "corp");
                assert!(
                    matches!(source, tollgate::oidc::ProviderError::BadResponse(_)),
                    "{name}: {source}"
                );
            }
            Err(other) => panic!("{name}: a jwks_file error expected, got {other}"),
            Ok(_) => panic!("{name}: started with a jwks_file holding no usable key"),
        }
    }
    assert_eq!(
        idp.count("jwks"),
        fetched,
        "the file is read, jwks_uri never fetched"
    );
}

#[tokio::test]
async fn jwks_cache_control_is_honoured() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::forward_auth(&idp).await;
    for _ in 0..3 {
        assert_eq!(
            status(
                &gateway,
                "",
                &idp.access_token().claim("jti", json!(now())).sign()
            )
            .await,
            200
        );
    }
    assert_eq!(idp.count("jwks"), 1, "max-age=3600: fetched once");

    idp.misbehave(crate::support::idp::Misbehaviour {
        jwks_no_cache: true,
        ..Default::default()
    });
    // max-age=0 asks for a fetch on every use; `jwks_refetch_interval` (at least 1s) still
    // bounds them.
    let uncached = Gateway::start(&Gateway::forward_auth_config(&idp, "", "").replace(
        "jwks_refetch_interval = \"1h\"",
        "jwks_refetch_interval = \"1s\"",
    ))
    .await;
    let before = idp.count("jwks");
    for index in 0..3 {
        // The shortest interval, waited out.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let token = idp
            .access_token()
            .claim("jti", json!(format!("t-{index}")))
            .sign();
        assert_eq!(status(&uncached, "", &token).await, 200);
    }
    // A refresh of keys past their max-age runs on without the request that started it.
    crate::support::redis::wait_until(|| idp.count("jwks") >= before + 3, "the last refresh").await;
    assert_eq!(
        idp.count("jwks"),
        before + 3,
        "max-age=0: fetched for every new token"
    );
    let limited = Gateway::forward_auth(&idp).await;
    let before = idp.count("jwks");
    for index in 0..3 {
        let token = idp
            .access_token()
            .claim("jti", json!(format!("l-{index}")))
            .sign();
        assert_eq!(status(&limited, "", &token).await, 200);
    }
    assert_eq!(
        idp.count("jwks"),
        before + 1,
        "max-age=0 with jwks_refetch_interval = 1h: fetched once"
    );
}

#[tokio::test]
async fn opaque_tokens_are_checked_by_introspection_and_cached() {
    let idp = TestIdp::start().await;
    let config = with_introspection(Gateway::forward_auth_config(&idp, "", ""));
    let gateway = Gateway::start(&config).await;
    let response = auth(
        &gateway,
        "?inject-claim=email",
        &[("authorization", "Bearer opaque-abc")],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["email"], "alice@example.com");
    assert_eq!(status(&gateway, "", "opaque-abc").await, 200);
    assert_eq!(idp.count("introspect"), 1, "a positive answer is cached");
    assert_eq!(status(&gateway, "", "opaque-inactive").await, 401);
    assert_eq!(status(&gateway, "", "opaque-other-audience").await, 401);
    assert_eq!(
        status(&gateway, "", &idp.access_token().sign()).await,
        200,
        "JWTs are still validated locally"
    );
    assert_eq!(idp.count("introspect"), 3);
    let without = Gateway::forward_auth(&idp).await;
    assert_eq!(
        status(&without, "", "opaque-abc").await,
        401,
        "no introspection unless enabled"
    );
}

#[tokio::test]
async fn made_up_opaque_tokens_cannot_each_cost_an_introspection_call() {
    let idp = TestIdp::start().await;
    let config = Gateway::forward_auth_config(&idp, "", "").replace(
        "jwks_refetch_interval",
        "introspection = true\ntimeout = \"10s\"\njwks_refetch_interval",
    );
    let gateway = std::sync::Arc::new(Gateway::start(&config).await);
    // The same made-up token at once, from many clients: one question.
    idp.misbehave(crate::support::idp::Misbehaviour {
        introspection_delay_ms: Some(300),
        ..Default::default()
    });
    let at_once = (0..20).map(|_| {
        let gateway = gateway.clone();
        tokio::spawn(async move { status(&gateway, "", "made-up").await })
    });
    for answer in at_once {
        assert_eq!(answer.await.unwrap(), 401);
    }
    assert_eq!(
        idp.count("introspect"),
        1,
        "one question for one token at a time"
    );
    // And again later: the refusal is remembered.
    for _ in 0..5 {
        assert_eq!(status(&gateway, "", "made-up").await, 401);
    }
    assert_eq!(idp.count("introspect"), 1, "a refusal is remembered");
    assert_eq!(status(&gateway, "", "made-up-too").await, 401);
    assert_eq!(idp.count("introspect"), 2);
    // A provider that stops answering: 70 different tokens at once, but no more questions in
    // flight than there are places (64); the rest wait, then are refused as the provider down
    // (502), as are those asked.
    idp.misbehave(crate::support::idp::Misbehaviour {
        introspection_delay_ms: Some(u64::MAX),
        ..Default::default()
    });
    // From as many clients (a trusted proxy's `X-Forwarded-For`): none has used up its
    // refusals.
    let different: Vec<_> = (0..70)
        .map(|n| {
            let gateway = gateway.clone();
            tokio::spawn(async move {
                let token = format!("Bearer made-up-{n}");
                let client = format!("198.51.100.{n}");
                let headers = [("authorization", &*token), ("x-forwarded-for", &*client)];
                auth(&gateway, "", &headers).await.status().as_u16()
            })
        })
        .collect();
    // Every place taken (the questions hang for the provider's 10 s), and no more.
    for _ in 0..160 {
        if idp.count("introspect") - 2 >= 64 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(idp.count("introspect") - 2, 64, "questions in flight");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(idp.count("introspect") - 2, 64, "questions in flight");
    for answer in different {
        assert_eq!(answer.await.unwrap(), 502);
    }
}

/// Sends `address`'s limit of made-up opaque tokens (`REFUSED_A_WINDOW`), each refused (401)
/// by the provider it is asked of; returns the limit.
async fn refuse_made_up_tokens_up_to_the_limit(gateway: &Gateway, address: &str) -> u32 {
    let limit = tollgate::oidc::introspection_gate::REFUSED_A_WINDOW;
    for n in 0..limit {
        let token = format!("made-up-{n}");
        assert_eq!(bearer_from(gateway, address, &token).await.status(), 401);
    }
    limit
}

#[tokio::test]
async fn a_client_whose_made_up_opaque_tokens_keep_being_refused_is_not_asked_for() {
    let idp = TestIdp::start().await;
    let config = with_introspection(Gateway::forward_auth_config(&idp, "", ""));
    let gateway = Gateway::start(&config).await;
    // The client address nginx in front reports.
    let limit = refuse_made_up_tokens_up_to_the_limit(&gateway, "192.0.2.7").await;
    assert_eq!(idp.count("introspect"), limit as usize);
    // A new made-up token from that address: not asked about, 429.
    let limited = bearer_from(&gateway, "192.0.2.7", "made-up-next").await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(idp.count("introspect"), limit as usize, "not asked");
    // Nor at `/validate`.
    let validate = reqwest::Client::new()
        .get(gateway.url("/validate"))
        .header("authorization", "Bearer made-up-validate")
        .header("x-forwarded-for", "192.0.2.7")
        .send()
        .await
        .unwrap();
    assert_eq!(validate.status(), 429);
    assert_eq!(idp.count("introspect"), limit as usize, "not asked");
    // Another address is asked as before, and a good token it had checked stays good for the
    // limited address (cached, no question).
    assert_eq!(
        bearer_from(&gateway, "192.0.2.8", "made-up-next")
            .await
            .status(),
        401
    );
    assert_eq!(
        bearer_from(&gateway, "192.0.2.8", "opaque-abc")
            .await
            .status(),
        200
    );
    assert_eq!(idp.count("introspect"), limit as usize + 2);
    assert_eq!(
        bearer_from(&gateway, "192.0.2.7", "opaque-abc")
            .await
            .status(),
        200
    );
    assert_eq!(idp.count("introspect"), limit as usize + 2);
}

/// A reload (a SIGHUP for a rotated certificate, say) built each provider's introspection gate
/// anew: an address at its limit of refused questions was asked for again at once.
#[tokio::test]
async fn a_reload_keeps_an_addresss_refused_introspections() {
    let idp = TestIdp::start().await;
    let config = with_introspection(Gateway::forward_auth_config(&idp, "", ""));
    let gateway = Gateway::start(&config).await;
    let limit = refuse_made_up_tokens_up_to_the_limit(&gateway, "192.0.2.7").await;
    assert_eq!(
        bearer_from(&gateway, "192.0.2.7", "made-up-next")
            .await
            .status(),
        429
    );
    gateway
        .app
        .reload(tollgate::config::load(&config, &std::collections::BTreeMap::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        bearer_from(&gateway, "192.0.2.7", "made-up-after")
            .await
            .status(),
        429,
        "the address is still at its limit after the reload"
    );
    assert_eq!(idp.count("introspect"), limit as usize, "not asked");
}

/// A provider refusing Tollgate's own client authentication at its introspection endpoint is a
/// 502 for each token, and still counted against the asking address: some providers answer
/// `invalid_client` (or a bare 401) to a token they do not like, so the answer alone does not
/// clear the client, and made-up tokens stay bounded.
#[tokio::test]
async fn a_provider_refusing_tollgates_credentials_at_introspection_still_counts() {
    let idp = TestIdp::start().await;
    let config = with_introspection(Gateway::forward_auth_config(&idp, "", "")).replace(
        crate::support::idp::CLIENT_SECRET,
        "a-secret-the-provider-no-longer-knows",
    );
    let gateway = Gateway::start(&config).await;
    let limit = tollgate::oidc::introspection_gate::REFUSED_A_WINDOW;
    for n in 0..limit {
        let token = format!("made-up-{n}");
        let status = bearer_from(&gateway, "192.0.2.7", &token).await.status();
        assert_eq!(status, 502, "question {n}");
    }
    assert_eq!(idp.count("introspect"), limit as usize);
    let limited = bearer_from(&gateway, "192.0.2.7", "made-up-next").await;
    assert_eq!(limited.status(), 429);
    assert_eq!(idp.count("introspect"), limit as usize, "not asked");
}

/// A browser refused for its unknown token cookies is answered 429, not sent to sign in: it
/// would only come back with the same cookie.
#[tokio::test]
async fn a_browser_whose_token_was_not_asked_about_is_not_sent_to_sign_in() {
    let idp = TestIdp::start().await;
    let config = with_introspection(Gateway::forward_auth_config(
        &idp,
        "",
        "unauthenticated = \"redirect\"\ntoken_cookie = \"at\"",
    ));
    let gateway = Gateway::start(&config).await;
    let limit = tollgate::oidc::introspection_gate::REFUSED_A_WINDOW;
    let navigate = |n: u32| {
        let cookie = format!("at=made-up-{n}");
        let gateway = &gateway;
        async move {
            let headers = [
                ("cookie", &*cookie),
                ("accept", "text/html"),
                ("sec-fetch-mode", "navigate"),
                ("x-original-url", "https://app.example.com/page"),
                ("x-forwarded-for", "192.0.2.10"),
            ];
            auth(gateway, "", &headers).await.status().as_u16()
        }
    };
    for n in 0..limit {
        assert_eq!(navigate(n).await, 302, "refused: sent to sign in");
    }
    assert_eq!(navigate(limit).await, 429);
}

/// A client that hangs up before the provider's answer has still cost a call: the question
/// goes on without it, its refusal is remembered and counted against the client, so hanging up
/// buys no extra questions.
#[tokio::test]
async fn questions_given_up_before_the_answer_still_count_against_the_client() {
    let idp = TestIdp::start().await;
    let config = with_introspection(Gateway::forward_auth_config(&idp, "", ""));
    let gateway = Gateway::start(&config).await;
    idp.misbehave(crate::support::idp::Misbehaviour {
        introspection_delay_ms: Some(400),
        ..Default::default()
    });
    let impatient = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(100))
        .build()
        .unwrap();
    let limit = tollgate::oidc::introspection_gate::REFUSED_A_WINDOW as usize;
    for n in 0..limit {
        let sent = impatient
            .get(gateway.url("/auth"))
            .header("authorization", format!("Bearer made-up-{n}"))
            .header("x-forwarded-for", "192.0.2.9")
            .send()
            .await;
        assert!(sent.is_err(), "given up before the answer");
    }
    // Each token again: it waits for its question, whose refusal is then remembered.
    for n in 0..limit {
        assert_eq!(
            bearer_from(&gateway, "192.0.2.9", &format!("made-up-{n}"))
                .await
                .status(),
            401
        );
    }
    assert_eq!(idp.count("introspect"), limit, "each asked once");
    assert_eq!(
        bearer_from(&gateway, "192.0.2.9", "made-up-next")
            .await
            .status(),
        429
    );
    assert_eq!(idp.count("introspect"), limit, "not asked");
}

#[tokio::test]
async fn exp_nbf_and_iat_must_be_integers_in_a_sane_range() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::forward_auth(&idp).await;
    let cases = [
        ("exp 1e300 (saturates)", "exp", json!(1e300)),
        ("fractional exp", "exp", json!(now() as f64 + 300.5)),
        ("exp as a float", "exp", json!(now() as f64 + 300.0)),
        ("exp beyond year 9999", "exp", json!(300_000_000_000_i64)),
        ("exp beyond i64", "exp", json!(u64::MAX)),
        ("negative exp", "exp", json!(-1)),
        ("nbf -1e300", "nbf", json!(-1e300)),
        ("fractional nbf", "nbf", json!(now() as f64 - 0.5)),
        ("iat -1e300", "iat", json!(-1e300)),
        ("iat as a string", "iat", json!(now().to_string())),
    ];
    for (name, claim, value) in cases {
        let token = idp.access_token().claim(claim, value).sign();
        assert_eq!(status(&gateway, "", &token).await, 401, "{name}");
    }
    let integers = idp
        .access_token()
        .claim("nbf", json!(now() - 10))
        .claim("iat", json!(now() - 10))
        .sign();
    assert_eq!(status(&gateway, "", &integers).await, 200);
}

#[tokio::test]
async fn a_subject_over_255_characters_is_refused() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::forward_auth(&idp).await;
    let longest = idp
        .access_token()
        .claim("sub", json!("s".repeat(255)))
        .sign();
    assert_eq!(status(&gateway, "", &longest).await, 200);
    let too_long = idp
        .access_token()
        .claim("sub", json!("s".repeat(256)))
        .sign();
    assert_eq!(status(&gateway, "", &too_long).await, 401);
    let not_a_string = idp.access_token().claim("sub", json!(42)).sign();
    assert_eq!(status(&gateway, "", &not_a_string).await, 401);
}

#[tokio::test]
async fn introspection_answers_are_checked_for_issuer_token_type_and_subject() {
    let idp = TestIdp::start().await;
    let config = with_introspection(Gateway::forward_auth_config(&idp, "", ""));
    let gateway = Gateway::start(&config).await;
    assert_eq!(status(&gateway, "", "opaque-abc").await, 200);
    assert_eq!(
        status(&gateway, "", "opaque-no-issuer").await,
        200,
        "iss is optional in RFC 7662"
    );
    assert_eq!(status(&gateway, "", "opaque-other-issuer").await, 401);
    assert_eq!(status(&gateway, "", "opaque-refresh-token").await, 401);
    assert_eq!(
        status(&gateway, "", "opaque-spring-refresh-token").await,
        401,
        "an answer that says neither whom the token is for nor what it is"
    );
    assert_eq!(
        status(&gateway, "", "opaque-kind-only").await,
        200,
        "an access token's kind, without an audience"
    );
    assert_eq!(status(&gateway, "", "opaque-long-subject").await, 401);
}

#[tokio::test]
async fn two_authorization_headers_or_a_token_in_header_and_query_are_400() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::forward_auth(&idp).await;
    let token = idp.access_token().sign();
    let bearer = format!("Bearer {token}");
    let twice = auth(
        &gateway,
        "",
        &[("authorization", &bearer), ("authorization", &bearer)],
    )
    .await;
    assert_eq!(twice.status(), 400, "the same token twice");
    let other = auth(
        &gateway,
        "",
        &[("authorization", &bearer), ("authorization", "Basic YTpi")],
    )
    .await;
    assert_eq!(other.status(), 400, "a bearer token and another scheme");
    for url in [
        "https://app.example.com/api?access_token=another",
        "https://app.example.com/api?x=1&access_token=",
        "https://app.example.com/api?access%5Ftoken=another",
    ] {
        let both = auth(
            &gateway,
            "",
            &[("authorization", &bearer), ("x-original-url", url)],
        )
        .await;
        assert_eq!(both.status(), 400, "header and query: {url}");
    }
    let header_only = auth(
        &gateway,
        "",
        &[
            ("authorization", &bearer),
            ("x-original-url", "https://app.example.com/api?token=x"),
        ],
    )
    .await;
    assert_eq!(header_only.status(), 200);
    let validate = gateway
        .get("/validate")
        .header("authorization", &bearer)
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(validate.status(), 400, "/validate");
}

#[tokio::test]
async fn bearer_refusals_carry_rfc_6750_errors() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::forward_auth(&idp).await;
    let challenge = |response: &reqwest::Response| {
        response
            .headers()
            .get("www-authenticate")
            .map(|value| value.to_str().unwrap().to_owned())
    };
    let expired = idp.access_token().expires_in(-3600).sign();
    let response = auth(
        &gateway,
        "",
        &[("authorization", &format!("Bearer {expired}"))],
    )
    .await;
    assert_eq!(response.status(), 401);
    assert_eq!(
        challenge(&response).as_deref(),
        Some("Bearer error=\"invalid_token\"")
    );
    let garbage = auth(&gateway, "", &[("authorization", "Bearer a.b.c")]).await;
    assert_eq!(
        challenge(&garbage).as_deref(),
        Some("Bearer error=\"invalid_token\"")
    );
    let validate = gateway
        .get("/validate")
        .bearer_auth(&expired)
        .send()
        .await
        .unwrap();
    assert_eq!(validate.status(), 401);
    assert_eq!(
        challenge(&validate).as_deref(),
        Some("Bearer error=\"invalid_token\"")
    );
    let token = idp.access_token().sign();
    let forbidden = auth(
        &gateway,
        "?groups=ops",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(forbidden.status(), 403);
    assert_eq!(
        challenge(&forbidden).as_deref(),
        Some("Bearer error=\"insufficient_scope\"")
    );
    let anonymous = auth(&gateway, "", &[]).await;
    assert_eq!(
        challenge(&anonymous).as_deref(),
        Some("Bearer"),
        "RFC 6750 §3.1: no error code without a credential"
    );
}

/// Over https a session cookie goes with a `__Host-` cookie binding it to the browser it was
/// set in. A sibling subdomain can set `tollgate` for the whole site (`Domain=example.com`)
/// but no `__Host-` cookie: the attacker's own session cookie planted in a visitor's browser
/// must not sign the visitor in as the attacker, nor shadow the visitor's session.
#[tokio::test]
async fn a_session_cookie_planted_by_another_host_signs_no_one_in() {
    let idp = TestIdp::start().await;
    let config = Gateway::forward_auth_config(&idp, "trusted_proxies = [\"127.0.0.1/32\"]", "");
    let gateway = Gateway::start(&config).await;
    // The attacker signs in over https, in a browser of their own.
    let mut attacker = Browser::new();
    let signed_in = signed_in_over_https(&mut attacker, &gateway).await;
    assert_eq!(
        signed_in.status(),
        302,
        "{}",
        signed_in.text().await.unwrap()
    );
    let session = attacker.cookies["tollgate"].clone();
    let binding = attacker.cookies["__Host-tollgate_bind"].clone();
    assert!(
        signed_in
            .headers()
            .get_all("set-cookie")
            .iter()
            .any(
                |value| value.to_str().unwrap().starts_with("__Host-tollgate_bind=")
                    && value
                        .to_str()
                        .unwrap()
                        .contains("; Path=/; HttpOnly; SameSite=Lax; Secure")
            ),
        "{:?}",
        signed_in.headers()
    );
    // As an ingress asks: the original URL, over https.
    let cookie = |value: String| {
        [
            ("cookie", value),
            ("x-original-url", "https://app.example.com/".to_owned()),
        ]
    };
    let status = async |headers: [(&str, String); 2]| {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        auth(&gateway, "", &headers).await.status().as_u16()
    };
    assert_eq!(
        status(cookie(format!(
            "tollgate={session}; __Host-tollgate_bind={binding}"
        )))
        .await,
        200,
        "the attacker's own browser"
    );
    // Planted in the visitor's browser: the session cookie without its binding, or beside the
    // visitor's own binding.
    assert_eq!(status(cookie(format!("tollgate={session}"))).await, 401);
    let mut visitor = Browser::new();
    let signed_in = signed_in_over_https(&mut visitor, &gateway).await;
    assert_eq!(signed_in.status(), 302);
    let (own, own_binding) = (
        visitor.cookies["tollgate"].clone(),
        visitor.cookies["__Host-tollgate_bind"].clone(),
    );
    assert_ne!(own_binding, binding);
    assert_eq!(
        status(cookie(format!(
            "tollgate={session}; tollgate={own}; __Host-tollgate_bind={own_binding}"
        )))
        .await,
        401,
        "the planted cookie, sent first, shadows none"
    );
    // Nor does the landing page call the visitor signed in by it (the page a sign-out comes
    // back to, where the planted cookie stays). Before, it opened any session cookie.
    let landing = async |cookie: String| {
        let page = auth_at(
            &gateway,
            "/",
            &[
                ("cookie", &cookie),
                ("x-forwarded-proto", "https"),
                ("accept", "text/html"),
            ],
        )
        .await;
        assert_eq!(page.status(), 200);
        page.text().await.unwrap()
    };
    assert!(
        landing(format!("tollgate={session}"))
            .await
            .contains("You are signed out")
    );
    assert!(
        landing(format!(
            "tollgate={own}; __Host-tollgate_bind={own_binding}"
        ))
        .await
        .contains("You are signed in")
    );
    // Signing out with it ends no one's session at the provider (nor shows it the attacker's
    // ID token): the cookies go, and the browser goes where it asked.
    let out = auth_at(
        &gateway,
        "/signout?rd=/bye",
        &[
            ("cookie", &format!("tollgate={session}")),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    assert_eq!(out.status(), 302);
    assert_eq!(crate::support::browser::location(&out), "/bye");
    let own_signout = auth_at(
        &gateway,
        "/signout?rd=/bye",
        &[
            (
                "cookie",
                &format!("tollgate={session}; __Host-tollgate_bind={binding}"),
            ),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    assert!(
        crate::support::browser::location(&own_signout).contains("id_token_hint="),
        "the attacker's own sign-out goes on to the provider"
    );
    // Signing in again would not help while the other host's cookie stays: a page says so.
    let twice = auth_at(
        &gateway,
        "/signin?rd=/",
        &[
            ("cookie", &format!("tollgate={session}; tollgate={own}")),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    assert_eq!(twice.status(), 400);
    assert!(twice.text().await.unwrap().contains("two session cookies"));
    // Over plain http on loopback there are no `__Host-` cookies, and no binding.
    let mut plain = Browser::new();
    signed_in_plainly(&mut plain, &gateway).await;
    assert!(!plain.cookies.contains_key("__Host-tollgate_bind"));
    let alone = format!("tollgate={}", plain.cookies["tollgate"]);
    let answer = auth(
        &gateway,
        "",
        &[("cookie", &alone), ("x-original-url", "http://127.0.0.1/")],
    )
    .await;
    assert_eq!(answer.status(), 200);
}

/// A sibling subdomain's cookie set for the whole site at `Path=/signout` is sent before the
/// browser's own at sign-out. Read alone, it made the sign-out end nothing: the browser's own
/// session stayed valid in the store (any copy of its cookie kept working) and the provider's
/// session was not ended, with the browser told it had signed out.
#[tokio::test]
async fn a_session_cookie_planted_for_the_signout_path_leaves_nothing_signed_in() {
    let idp = TestIdp::start().await;
    let config = Gateway::forward_auth_config(&idp, "trusted_proxies = [\"127.0.0.1/32\"]", "")
        .replacen("[session]\n", "[session]\nstore = \"memory\"\n", 1);
    let gateway = Gateway::start(&config).await;
    let mut visitor = Browser::new();
    assert_eq!(
        signed_in_over_https(&mut visitor, &gateway).await.status(),
        302
    );
    let own = format!(
        "tollgate={}; __Host-tollgate_bind={}",
        visitor.cookies["tollgate"], visitor.cookies["__Host-tollgate_bind"]
    );
    let served = async |cookie: &str| {
        auth(
            &gateway,
            "",
            &[
                ("cookie", cookie),
                ("x-original-url", "https://app.example.com/"),
            ],
        )
        .await
        .status()
        .as_u16()
    };
    assert_eq!(served(&own).await, 200);
    let out = auth_at(
        &gateway,
        "/signout?rd=/bye",
        &[
            ("cookie", &format!("tollgate=s.planted; {own}")),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    assert_eq!(out.status(), 302);
    assert!(
        crate::support::browser::location(&out).contains("id_token_hint="),
        "the browser's own sign-out goes on to the provider: {}",
        crate::support::browser::location(&out)
    );
    assert_eq!(
        served(&own).await,
        401,
        "the browser's own session was ended"
    );
    gateway.stop().await;
}

async fn auth_at(gateway: &Gateway, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut request = client.get(gateway.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// Signed in over plain http on loopback, with only the cookies Tollgate set.
async fn signed_in_plainly(browser: &mut Browser, gateway: &Gateway) {
    let done = crate::support::gateway::sign_in(browser, gateway, "/").await;
    assert_eq!(done.status(), 302);
}

/// An `/auth` told neither its URL nor `public_url` reads a session cookie without its binding
/// (it may have been set over plain http on loopback). A session it refreshes keeps a binding
/// only when the browser sent the matching one: a browser that signed in over https keeps
/// working on Tollgate's own endpoints, and a cookie another host planted never becomes bound.
#[tokio::test]
async fn a_refresh_where_the_url_is_unknown_keeps_a_binding_only_the_browser_sent() {
    let idp = TestIdp::start().await;
    let clock = tollgate::clock::ManualClock::new();
    let config = Gateway::forward_auth_config(&idp, "trusted_proxies = [\"127.0.0.1/32\"]", "")
        .replace(
            "[session]\n",
            "[session]\nstore = \"cookie\"\nrefresh_before = \"60s\"\n",
        );
    let gateway = Gateway::start_with_clock(&config, clock.clone()).await;
    // Signed in over https: the session cookie and its binding.
    let mut browser = Browser::new();
    let signed_in = signed_in_over_https(&mut browser, &gateway).await;
    assert_eq!(signed_in.status(), 302);
    let session = browser.cookies["tollgate"].clone();
    let binding = browser.cookies["__Host-tollgate_bind"].clone();
    // The access token lives 300 s; 250 s later it is within refresh_before.
    clock.advance(250);
    idp.advance_clock(250);
    let gateway = &gateway;
    let refreshed = async |cookie: String| {
        let answer = auth(gateway, "", &[("cookie", &cookie)]).await;
        assert_eq!(answer.status(), 200);
        answer
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|value| value.to_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let bound = refreshed(format!(
        "tollgate={session}; __Host-tollgate_bind={binding}"
    ))
    .await;
    let value_of = |lines: &[String], name: &str| {
        lines.iter().find_map(|line| {
            line.split(';')
                .next()
                .and_then(|pair| pair.strip_prefix(&format!("{name}=")))
                .map(str::to_owned)
        })
    };
    let new_session = value_of(&bound, "tollgate").expect("the refreshed session");
    let new_binding = value_of(&bound, "__Host-tollgate_bind").expect("and its binding");
    assert_ne!(new_session, session);
    assert_eq!(
        new_session.split_once('.').unwrap().1.get(..24),
        Some(new_binding.as_str())
    );
    // The refreshed pair works where the URL is known (over https).
    let known = auth(
        gateway,
        "",
        &[
            (
                "cookie",
                &format!("tollgate={new_session}; __Host-tollgate_bind={new_binding}"),
            ),
            ("x-original-url", "https://app.example.com/"),
        ],
    )
    .await;
    assert_eq!(known.status(), 200);
    // The same session cookie without its binding (planted elsewhere) is refreshed unbound.
    let mut other = Browser::new();
    let signed_in = signed_in_over_https(&mut other, gateway).await;
    assert_eq!(signed_in.status(), 302);
    clock.advance(250);
    idp.advance_clock(250);
    let unbound = refreshed(format!("tollgate={}", other.cookies["tollgate"])).await;
    assert!(value_of(&unbound, "tollgate").is_some(), "{unbound:?}");
    assert!(
        value_of(&unbound, "__Host-tollgate_bind").is_none(),
        "{unbound:?}"
    );
    // Another's session cookie beside this browser's own binding (another host planted it for
    // the whole site, sent first): refused where the URL is unknown too (200 as the other
    // person on the old code), as where it is known.
    let planted = format!(
        "tollgate={}; __Host-tollgate_bind={new_binding}",
        other.cookies["tollgate"]
    );
    for url in [None, Some("https://app.example.com/")] {
        let mut headers = vec![("cookie", planted.as_str())];
        headers.extend(url.map(|url| ("x-original-url", url)));
        let answer = auth(gateway, "", &headers).await;
        assert_eq!(answer.status(), 401, "URL {url:?}");
    }
    // Over plain http on loopback no binding is written or asked for: one the browser kept
    // from a sign-in at `https://localhost` does not refuse the session it has there.
    let headers = [
        ("cookie", planted.as_str()),
        ("x-original-url", "http://localhost:8080/"),
    ];
    assert_eq!(auth(gateway, "", &headers).await.status(), 200);
}

/// Signs `browser` in as one that reaches Tollgate over https through a trusted proxy
/// (`X-Forwarded-Proto: https`; the gateway trusts 127.0.0.1); the callback's answer.
async fn signed_in_over_https(browser: &mut Browser, gateway: &Gateway) -> reqwest::Response {
    let https = [("x-forwarded-proto", "https")];
    let signin = browser.get_with(&gateway.url("/signin?rd=/"), &https).await;
    assert_eq!(signin.status(), 302);
    let at_provider = browser
        .get(&crate::support::browser::location(&signin))
        .await;
    // The redirect URI is https; the test reaches the gateway's plain listener.
    let callback = crate::support::browser::location(&at_provider).replacen("https:", "http:", 1);
    browser.get_with(&callback, &https).await
}

/// A WebSocket handshake authenticated by the session cookie is refused when its page is of
/// another host, also when the original URL is not known (a path-only `X-Original-URL`, as a
/// misconfigured ingress sends): the check was skipped then, and any page could open one.
#[tokio::test]
async fn a_websocket_whose_original_host_is_unknown_is_refused_when_a_page_asked_for_it() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::forward_auth(&idp).await;
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    let handshake = |origin: Option<&'static str>| {
        let mut headers = vec![
            ("x-original-url", "/socket"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        headers.extend(origin.map(|origin| ("origin", origin)));
        headers
    };
    let url = gateway.url("/auth");
    for origin in ["https://evil.example", "null"] {
        let answer = browser.get_with(&url, &handshake(Some(origin))).await;
        assert_eq!(answer.status(), 403, "{origin}");
    }
    let answer = browser.get_with(&url, &handshake(None)).await;
    assert_eq!(answer.status(), 200, "no Origin: no browser's page");
}

/// The README's Caddy recipe is a Caddyfile Caddy reads (a matcher written inline takes one
/// path: `handle /signin* /callback* /signout*` was refused), and it sends Tollgate's own
/// paths, exactly, to Tollgate.
#[tokio::test]
async fn the_readme_caddy_recipe_is_read_by_caddy() {
    let recipe = crate::support::readme_block("### Caddy\n", "caddyfile");
    let dir = crate::support::scratch_dir("caddy-recipe");
    let file = dir.join("Caddyfile");
    std::fs::write(&file, recipe).unwrap();
    let adapted = std::process::Command::new("caddy")
        .args(["adapt", "--adapter", "caddyfile", "--config"])
        .arg(&file)
        .output()
        .expect("caddy is installed (scripts/test.sh installs it)");
    let stderr = String::from_utf8_lossy(&adapted.stderr);
    assert!(adapted.status.success(), "{stderr}");
    let json = String::from_utf8_lossy(&adapted.stdout);
    assert!(
        json.contains(r#""path":["/signin","/callback","/signout"]"#),
        "{json}"
    );
}

/// Skip rules are read (compiled) only for a request whose original path is known (a trusted
/// proxy's): elsewhere none can apply, and anyone reaching `/auth` directly could make each
/// request compile eight new patterns of a kilobyte (about 2 ms of CPU here, against
/// microseconds for a decision) by changing the query each time. Shown by a pattern that does
/// not compile: refused (400) only where it would be read.
#[tokio::test]
async fn skip_rules_are_read_only_where_the_original_path_is_known() {
    let idp = TestIdp::start().await;
    let unclosed = "?skip-auth=(&groups=admin";
    let original = [("x-original-url", "https://app.example.com/x")];
    let untrusted = Gateway::start(&Gateway::forward_auth_config(
        &idp,
        "trusted_proxies = []",
        "",
    ))
    .await;
    assert_eq!(auth(&untrusted, unclosed, &original).await.status(), 401);
    // Still checked: a claim rule, and the query as a whole.
    assert_eq!(
        auth(&untrusted, "?skip-auth=(&inject-claim=a,b,c", &original)
            .await
            .status(),
        400
    );
    let trusted = Gateway::start(&Gateway::forward_auth_config(
        &idp,
        "trusted_proxies = [\"127.0.0.1/32\"]",
        "",
    ))
    .await;
    assert_eq!(auth(&trusted, unclosed, &original).await.status(), 400);
    // And a trusted proxy's query that sent no path yet is kept whole for when it does.
    assert_eq!(auth(&trusted, "?skip-auth=^/x$", &[]).await.status(), 401);
    assert_eq!(
        auth(&trusted, "?skip-auth=^/x$", &original).await.status(),
        200
    );
}
