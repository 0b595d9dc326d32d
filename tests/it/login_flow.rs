//! SPEC §4 `/signin`, `/callback`, `/signout`, `/userinfo`: the authorization code flow with
//! state, nonce and PKCE against the test provider, sealed cookie sessions, RP-initiated logout.

use serde_json::json;

use crate::support::browser::{location, query_value};
use crate::support::idp::Misbehaviour;
use crate::support::{Browser, Gateway, TestIdp};

#[tokio::test]
async fn login_creates_a_session_that_auth_accepts_and_logout_ends_it() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::forward_auth(&idp).await;
    let mut browser = Browser::new();
    assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 401);

    let callback = crate::support::gateway::sign_in(&mut browser, &gateway, "/after-login").await;
    assert_eq!(callback.status(), 302);
    assert_eq!(location(&callback), "/after-login");
    let set_cookies: Vec<String> = callback
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let session_cookie = set_cookies
        .iter()
        .find(|c| c.starts_with("tollgate="))
        .expect("session cookie");
    assert!(session_cookie.contains("HttpOnly") && session_cookie.contains("SameSite=Lax"));
    assert!(
        !session_cookie.contains("Secure"),
        "plain-http loopback drops Secure"
    );
    assert!(!holds_a_login(&browser), "the state cookie is removed");

    let allowed = browser
        .get_with(
            &gateway.url("/auth?groups=admin&inject-claim=email,X-Email&inject-claim=department"),
            &[],
        )
        .await;
    assert_eq!(allowed.status(), 200);
    assert_eq!(
        allowed.headers()["department"],
        "engineering",
        "userinfo claims are merged"
    );
    assert_eq!(allowed.headers()["x-email"], "alice@example.com");
    assert_eq!(
        browser.get(&gateway.url("/auth?groups=ops")).await.status(),
        403
    );
    let userinfo = browser.get(&gateway.url("/userinfo")).await;
    assert_eq!(userinfo.status(), 200);
    let claims: serde_json::Value = userinfo.json().await.unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(
        browser
            .get_with(
                &gateway.url("/userinfo"),
                &[("authorization", "Bearer not-a-token")]
            )
            .await
            .status(),
        401,
        "a bearer token is answered for, not the session cookie beside it"
    );
    let bobs = idp
        .access_token()
        .claim("sub", serde_json::json!("bob"))
        .sign();
    let answered = browser
        .get_with(
            &gateway.url("/userinfo"),
            &[("authorization", &format!("Bearer {bobs}"))],
        )
        .await;
    assert_eq!(answered.status(), 200);
    let claims: serde_json::Value = answered.json().await.unwrap();
    assert_eq!(
        claims["sub"], "bob",
        "another user's valid token is answered with that user's claims"
    );

    let copied_cookies = browser.cookies.clone();
    let signout = browser.get(&gateway.url("/signout?rd=/bye")).await;
    assert_eq!(signout.status(), 302);
    let to_provider = reqwest::Url::parse(&location(&signout)).unwrap();
    assert_eq!(to_provider.path(), "/end_session");
    let params: std::collections::HashMap<String, String> =
        to_provider.query_pairs().into_owned().collect();
    assert!(params.contains_key("id_token_hint"));
    assert_eq!(params["post_logout_redirect_uri"], gateway.url("/bye"));
    assert!(
        !browser.cookies.contains_key("tollgate"),
        "the session cookie is cleared"
    );
    assert_eq!(browser.get(to_provider.as_str()).await.status(), 200);
    assert!(
        idp.last_end_session()
            .unwrap()
            .contains_key("id_token_hint")
    );
    assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 401);
    assert_eq!(browser.get(&gateway.url("/userinfo")).await.status(), 401);
    assert!(
        gateway
            .metrics()
            .await
            .contains(r#"tollgate_requests_total{role="userinfo",result="unauthenticated"} 2"#),
        "each /userinfo refusal (the bearer token's and this one) is counted once"
    );
    // SPEC §5: with store = "cookie" a copied cookie stays valid until it expires.
    let mut copy = Browser::new();
    copy.cookies = copied_cookies;
    assert_eq!(copy.get(&gateway.url("/auth")).await.status(), 200);
}

/// A copy of a `cookie`-store session holds its refresh token: a sign-out revokes it at the
/// provider (RFC 7009), so a copy taken before cannot refresh once its access token expires.
#[tokio::test]
async fn signing_out_revokes_the_sessions_refresh_token_at_the_provider() {
    let idp = TestIdp::start().await;
    let clock = tollgate::clock::ManualClock::new();
    let gateway =
        Gateway::start_with_clock(&crate::refresh::config(&idp, "cookie"), clock.clone()).await;
    let mut browser = Browser::new();
    crate::support::gateway::sign_in(&mut browser, &gateway, "/").await;
    let (_, refresh_token) = idp.last_tokens().unwrap();
    let mut copy = Browser::new();
    copy.cookies = browser.cookies.clone();
    assert_eq!(browser.get(&gateway.url("/signout")).await.status(), 302);
    assert_eq!(idp.revoked_tokens(), [refresh_token], "before the answer");
    // The copy opens still, and signs out again as often as it likes: its refresh token is
    // revoked once, not once per request (each a call with Tollgate's client credentials).
    for _ in 0..5 {
        let mut replay = Browser::new();
        replay.cookies = copy.cookies.clone();
        assert_eq!(replay.get(&gateway.url("/signout")).await.status(), 302);
    }
    assert_eq!(idp.count("revoke"), 1);
    assert_eq!(copy.get(&gateway.url("/auth")).await.status(), 200);
    crate::refresh::advance(&clock, &idp, 250);
    assert_eq!(
        copy.get(&gateway.url("/auth")).await.status(),
        401,
        "the copy's refresh is refused"
    );
    assert_eq!(idp.count("refresh"), 1);

    // A provider that does not answer the revocation holds a sign-out for a while, not forever.
    idp.misbehave(Misbehaviour {
        revoke_hangs: true,
        ..Default::default()
    });
    let mut browser = Browser::new();
    crate::support::gateway::sign_in(&mut browser, &gateway, "/").await;
    let (_, unanswered) = idp.last_tokens().unwrap();
    let mut kept = Browser::new();
    kept.cookies = browser.cookies.clone();
    let signed_out = browser.get(&gateway.url("/signout")).await;
    assert_eq!(signed_out.status(), 302);
    assert!(location(&signed_out).contains("/end_session?"));
    assert!(!browser.cookies.contains_key("tollgate"));
    assert_eq!(idp.count("revoke"), 2);
    // Not answered: tried again at a sign-out with that session a minute later at the
    // soonest (the clock here is the test's, the wait a real one: not yet).
    idp.misbehave(Misbehaviour::default());
    let mut again = Browser::new();
    again.cookies = kept.cookies.clone();
    assert_eq!(again.get(&gateway.url("/signout")).await.status(), 302);
    assert_eq!(idp.count("revoke"), 2, "not again at once");
    clock.advance(tollgate::login::revocation::RETRY_AFTER);
    idp.advance_clock(tollgate::login::revocation::RETRY_AFTER);
    assert_eq!(kept.get(&gateway.url("/signout")).await.status(), 302);
    assert_eq!(idp.count("revoke"), 3, "a minute later");
    assert_eq!(idp.revoked_tokens().last(), Some(&unanswered));
}

/// A sign-out whose client goes away while the provider has not answered the revocation
/// drops it unanswered: a sign-out with that session a minute later asks again.
#[tokio::test]
async fn a_revocation_dropped_with_its_sign_out_is_asked_again() {
    let idp = TestIdp::start().await;
    idp.misbehave(Misbehaviour {
        revoke_hangs: true,
        ..Default::default()
    });
    let clock = tollgate::clock::ManualClock::new();
    let gateway =
        Gateway::start_with_clock(&crate::refresh::config(&idp, "cookie"), clock.clone()).await;
    let mut browser = Browser::new();
    crate::support::gateway::sign_in(&mut browser, &gateway, "/").await;
    let (_, refresh_token) = idp.last_tokens().unwrap();
    let cookie = crate::refresh::cookie_header(&browser);
    let impatient = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_millis(500))
        .build()
        .unwrap();
    let gone = impatient
        .get(gateway.url("/signout"))
        .header("cookie", &cookie)
        .send()
        .await;
    assert!(gone.is_err(), "the client gave up first: {gone:?}");
    assert_eq!(idp.count("revoke"), 1);
    idp.misbehave(Misbehaviour::default());
    let sign_out = || {
        let mut replay = Browser::new();
        replay.cookies = browser.cookies.clone();
        let signout = gateway.url("/signout");
        async move { replay.get(&signout).await.status() }
    };
    assert_eq!(sign_out().await, 302);
    assert_eq!(idp.count("revoke"), 1, "not again at once");
    clock.advance(tollgate::login::revocation::RETRY_AFTER);
    assert_eq!(sign_out().await, 302);
    assert_eq!(idp.count("revoke"), 2, "a minute later");
    assert_eq!(idp.revoked_tokens(), [refresh_token]);
}

/// A revocation the provider refuses (a 4xx) is not asked again, however often a kept
/// `cookie`-store session signs out again: each ask is a call with Tollgate's credentials.
#[tokio::test]
async fn a_refused_revocation_is_not_asked_again() {
    let idp = TestIdp::start().await;
    idp.misbehave(Misbehaviour {
        revoke_status: Some(400),
        ..Default::default()
    });
    let gateway = Gateway::start(&crate::refresh::config(&idp, "cookie")).await;
    let mut browser = Browser::new();
    crate::support::gateway::sign_in(&mut browser, &gateway, "/").await;
    for _ in 0..4 {
        let mut replay = Browser::new();
        replay.cookies = browser.cookies.clone();
        assert_eq!(replay.get(&gateway.url("/signout")).await.status(), 302);
    }
    assert_eq!(idp.count("revoke"), 1);

    // One the provider could not answer (a 503, a 429) is asked again, a minute later.
    for status in [503, 429] {
        let idp = TestIdp::start().await;
        idp.misbehave(Misbehaviour {
            revoke_status: Some(status),
            ..Default::default()
        });
        let clock = tollgate::clock::ManualClock::new();
        let gateway =
            Gateway::start_with_clock(&crate::refresh::config(&idp, "cookie"), clock.clone()).await;
        let mut browser = Browser::new();
        crate::support::gateway::sign_in(&mut browser, &gateway, "/").await;
        let signout = gateway.url("/signout");
        let sign_out = || {
            let mut replay = Browser::new();
            replay.cookies = browser.cookies.clone();
            let signout = signout.clone();
            async move { replay.get(&signout).await.status() }
        };
        assert_eq!(sign_out().await, 302);
        assert_eq!(sign_out().await, 302);
        assert_eq!(idp.count("revoke"), 1, "{status}: not again at once");
        clock.advance(tollgate::login::revocation::RETRY_AFTER);
        assert_eq!(sign_out().await, 302);
        assert_eq!(idp.count("revoke"), 2, "{status}: a minute later");
    }
}

/// A revocation endpoint that is not https is left unused: the provider's logins, and its
/// sign-outs, work as before it was named.
#[tokio::test]
async fn a_plain_http_revocation_endpoint_elsewhere_is_left_unused() {
    let idp = TestIdp::start().await;
    idp.misbehave(Misbehaviour {
        foreign_revocation_endpoint: true,
        ..Default::default()
    });
    let gateway = Gateway::forward_auth(&idp).await;
    let mut browser = Browser::new();
    let callback = crate::support::gateway::sign_in(&mut browser, &gateway, "/").await;
    assert_eq!(callback.status(), 302);
    assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 200);
    let signed_out = browser.get(&gateway.url("/signout")).await;
    assert_eq!(signed_out.status(), 302);
    assert!(location(&signed_out).contains("/end_session?"));
    assert_eq!(idp.count("revoke"), 0);
}

#[tokio::test]
async fn a_tampered_session_cookie_is_refused() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::forward_auth(&idp).await;
    let mut browser = Browser::new();
    crate::support::gateway::sign_in(&mut browser, &gateway, "/").await;
    let value = browser.cookies.get_mut("tollgate").unwrap();
    let last = value.pop().unwrap();
    value.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 401);
    browser
        .cookies
        .insert("tollgate".into(), "3.garbage".into());
    assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 401);
}

#[tokio::test]
async fn a_misbehaving_provider_never_yields_a_session() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::forward_auth(&idp).await;
    let cases = [
        (
            "wrong nonce",
            Misbehaviour {
                wrong_nonce: true,
                ..Default::default()
            },
        ),
        (
            "wrong audience",
            Misbehaviour {
                wrong_audience: true,
                ..Default::default()
            },
        ),
        (
            "wrong issuer",
            Misbehaviour {
                wrong_issuer: true,
                ..Default::default()
            },
        ),
        (
            "expired",
            Misbehaviour {
                expired_id_token: true,
                ..Default::default()
            },
        ),
        (
            "bad signature",
            Misbehaviour {
                bad_signature: true,
                ..Default::default()
            },
        ),
        (
            "userinfo for another subject",
            Misbehaviour {
                userinfo_other_subject: true,
                ..Default::default()
            },
        ),
    ];
    for (name, misbehaviour) in cases {
        idp.misbehave(misbehaviour);
        let mut browser = Browser::new();
        let callback = crate::support::gateway::sign_in(&mut browser, &gateway, "/").await;
        assert_eq!(callback.status(), 401, "{name}");
        assert!(!browser.cookies.contains_key("tollgate"), "{name}");
        assert!(
            !holds_a_login(&browser),
            "{name}: the login in flight is used up"
        );
    }
    let metrics = gateway.metrics().await;
    assert!(
        metrics.contains("tollgate_requests_total{role=\"callback\",result=\"unauthenticated\"} 6"),
        "{metrics}"
    );
}

#[tokio::test]
async fn callback_without_the_login_state_or_with_a_mixed_up_issuer_is_refused() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::forward_auth(&idp).await;
    let mut browser = Browser::new();
    let signin = browser.get(&gateway.url("/signin")).await;
    let at_provider = browser.get(&location(&signin)).await;
    let callback_url = location(&at_provider);
    let mut stranger = Browser::new();
    assert_eq!(
        stranger.get(&callback_url).await.status(),
        400,
        "CSRF: no state cookie"
    );
    let mixed_up = format!("{callback_url}&iss=https%3A%2F%2Fother.example");
    assert_eq!(
        browser.get(&mixed_up).await.status(),
        400,
        "RFC 9207 iss mismatch"
    );
    assert_eq!(
        browser.get(&gateway.url("/callback?code=x")).await.status(),
        400,
        "missing state"
    );
}

/// A login begun at `/signin`, its cookies kept and its `state` read; the provider's answer
/// never fetched.
async fn begun(
    browser: &mut Browser,
    gateway: &Gateway,
) -> (std::collections::BTreeMap<String, String>, String) {
    let signin = browser.get(&gateway.url("/signin")).await;
    let to_provider = reqwest::Url::parse(&location(&signin)).unwrap();
    let state = query_value(&to_provider, "state").unwrap();
    (browser.cookies.clone(), state)
}

/// A login state cookie kept and replayed with made-up codes: each `/callback` was a
/// client-authenticated call to the provider's token endpoint. Now a login state is exchanged
/// once, concurrent replays included, and an address whose exchanges the provider refused ten
/// times within a minute is answered 429 without asking.
#[tokio::test]
async fn replayed_callbacks_cannot_each_cost_a_code_exchange() {
    let idp = TestIdp::start().await;
    // The address's window runs on this clock, which stands still here.
    let clock = tollgate::clock::ManualClock::new();
    let gateway =
        Gateway::start_with_clock(&Gateway::forward_auth_config(&idp, "", ""), clock.clone()).await;
    let mut browser = Browser::new();
    let (kept, state) = begun(&mut browser, &gateway).await;
    let before = idp.count("token");
    let mut tasks = tokio::task::JoinSet::new();
    for attempt in 0..20 {
        let mut replayer = Browser::new();
        replayer.cookies = kept.clone();
        let url = gateway.url(&format!("/callback?state={state}&code=made-up-{attempt}"));
        tasks.spawn(async move { replayer.get(&url).await.status().as_u16() });
    }
    let mut statuses = Vec::new();
    while let Some(status) = tasks.join_next().await {
        statuses.push(status.unwrap());
    }
    for attempt in 0..20 {
        let mut replayer = Browser::new();
        replayer.cookies = kept.clone();
        let url = gateway.url(&format!("/callback?state={state}&code=again-{attempt}"));
        statuses.push(replayer.get(&url).await.status().as_u16());
    }
    assert_eq!(idp.count("token"), before + 1, "one exchange: {statuses:?}");
    assert_eq!(statuses.iter().filter(|status| **status == 401).count(), 1);
    assert_eq!(statuses.iter().filter(|status| **status == 400).count(), 39);
    // Fresh login states, each with a made-up code: refused by the provider nine more times,
    // then 429 without asking it.
    let mut limited = None;
    for attempt in 0..15 {
        let mut browser = Browser::new();
        let (_, state) = begun(&mut browser, &gateway).await;
        let answer = browser
            .get(&gateway.url(&format!("/callback?state={state}&code=fresh-{attempt}")))
            .await;
        if answer.status() == 429 {
            limited = Some((attempt, answer));
            break;
        }
        assert_eq!(answer.status(), 401, "attempt {attempt}");
    }
    let (attempt, answer) = limited.expect("answered 429 at last");
    assert_eq!(attempt, 9, "ten refused exchanges from this address");
    assert_eq!(answer.headers()["retry-after"], "60");
    assert_eq!(idp.count("token"), before + 10);
    // A minute on, another burst: twenty fresh login states' callbacks at once, while the
    // provider takes its time to refuse each, are not all admitted (those under way count).
    clock.advance(60);
    idp.misbehave(Misbehaviour {
        code_exchange_delay_ms: Some(1_000),
        ..Misbehaviour::default()
    });
    let mut states = Vec::new();
    for _ in 0..20 {
        let mut browser = Browser::new();
        let (cookies, state) = begun(&mut browser, &gateway).await;
        states.push((cookies, state));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (attempt, (cookies, state)) in states.into_iter().enumerate() {
        let mut replayer = Browser::new();
        replayer.cookies = cookies;
        let url = gateway.url(&format!("/callback?state={state}&code=burst-{attempt}"));
        tasks.spawn(async move { replayer.get(&url).await.status().as_u16() });
    }
    let mut burst = Vec::new();
    while let Some(status) = tasks.join_next().await {
        burst.push(status.unwrap());
    }
    assert_eq!(idp.count("token"), before + 20, "{burst:?}");
    assert_eq!(burst.iter().filter(|status| **status == 429).count(), 10);
}

/// A config reload does not start the login states exchanged anew: a kept state cookie
/// replayed after a reload is not exchanged once more (nor is each address's count of refused
/// exchanges reset).
#[tokio::test]
async fn a_login_state_exchanged_before_a_reload_is_not_exchanged_again() {
    let idp = TestIdp::start().await;
    let config = Gateway::forward_auth_config(&idp, "", "");
    let gateway = Gateway::start(&config).await;
    let mut browser = Browser::new();
    let (kept, state) = begun(&mut browser, &gateway).await;
    let before = idp.count("token");
    let replay = async |code: &str| {
        let mut replayer = Browser::new();
        replayer.cookies = kept.clone();
        let url = gateway.url(&format!("/callback?state={state}&code={code}"));
        replayer.get(&url).await.status().as_u16()
    };
    assert_eq!(replay("made-up-1").await, 401, "exchanged, refused");
    gateway
        .app
        .reload(tollgate::config::load(&config, &std::collections::BTreeMap::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(replay("made-up-2").await, 400, "used up, across the reload");
    assert_eq!(idp.count("token"), before + 1, "one exchange");
}

/// A provider refusing Tollgate's own client authentication at its token endpoint (a rotated
/// secret): `/callback` is a 502, not a 401 as though the user's login were refused. It is
/// still a refusal for the budget (some providers answer `invalid_client` to a made-up code):
/// the login is used up, and ten from one address within a minute are a 429.
#[tokio::test]
async fn a_provider_refusing_tollgates_credentials_at_login_is_a_502() {
    let idp = TestIdp::start().await;
    let config = Gateway::forward_auth_config(&idp, "", "").replace(
        crate::support::idp::CLIENT_SECRET,
        "a-secret-the-provider-no-longer-knows",
    );
    let gateway = Gateway::start(&config).await;
    let limit = tollgate::login::exchanges::MAX_A_WINDOW;
    for attempt in 0..limit {
        let (mut browser, callback_url) = at_the_callback(&gateway).await;
        assert_eq!(
            browser.get(&callback_url).await.status(),
            502,
            "attempt {attempt}"
        );
        assert!(!holds_a_login(&browser), "used up: {attempt}");
        assert_eq!(browser.get(&callback_url).await.status(), 400, "{attempt}");
    }
    assert_eq!(idp.count("token"), limit as usize, "each asked once");
    let (mut browser, callback_url) = at_the_callback(&gateway).await;
    assert_eq!(browser.get(&callback_url).await.status(), 429);
    assert_eq!(idp.count("token"), limit as usize, "not asked");
    let metrics = gateway.metrics().await;
    assert!(
        metrics.contains(&format!(
            "tollgate_requests_total{{role=\"callback\",result=\"provider_unavailable\"}} {limit}\n"
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn parallel_logins_in_several_tabs_do_not_break_each_other() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::forward_auth(&idp).await;
    let mut browser = Browser::new();
    let first = browser.get(&gateway.url("/signin?rd=/one")).await;
    let second = browser.get(&gateway.url("/signin?rd=/two")).await;
    let first_back = browser.get(&location(&first)).await;
    let second_back = browser.get(&location(&second)).await;
    let second_done = browser.get(&location(&second_back)).await;
    assert_eq!(location(&second_done), "/two");
    let first_done = browser.get(&location(&first_back)).await;
    assert_eq!(location(&first_done), "/one");
}

#[tokio::test]
async fn login_state_cookies_are_capped() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::forward_auth(&idp).await;
    let mut browser = Browser::new();
    for _ in 0..12 {
        browser.get(&gateway.url("/signin")).await;
    }
    let in_flight = browser
        .cookies
        .keys()
        .filter(|name| name.starts_with("tollgate_login_"))
        .count();
    assert_eq!(in_flight, 5);
}

/// `/signin` starts no login for what cannot show the provider's page (an image posted into
/// an application, a script's `fetch`, a prefetch), as a route does not: each pushed one of the
/// browser's logins in progress out of its capped cookies, and one ending silently at the
/// provider would make a session nobody asked for.
#[tokio::test]
async fn signin_starts_no_login_for_a_subresource_or_a_prefetch() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::forward_auth(&idp).await;
    let mut browser = Browser::new();
    let url = gateway.url("/signin?rd=/");
    for headers in [
        &[
            ("sec-fetch-site", "same-origin"),
            ("sec-fetch-mode", "no-cors"),
            ("sec-fetch-dest", "image"),
        ][..],
        &[("sec-fetch-mode", "cors"), ("sec-fetch-dest", "empty")],
        &[("x-requested-with", "XMLHttpRequest")],
        &[
            ("sec-fetch-mode", "navigate"),
            ("sec-fetch-dest", "document"),
            ("sec-purpose", "prefetch"),
        ],
    ] {
        let refused = browser.get_with(&url, headers).await;
        assert_eq!(refused.status(), 401, "{headers:?}");
        assert!(refused.headers().get("set-cookie").is_none(), "{headers:?}");
    }
    assert_eq!(idp.count("authorize"), 0);
    // A navigation is sent to log in: also an Android WebView's, which carries
    // `X-Requested-With`, and an old browser's, which says nothing.
    for headers in [
        &[
            ("sec-fetch-site", "same-origin"),
            ("sec-fetch-mode", "navigate"),
            ("sec-fetch-dest", "document"),
            ("x-requested-with", "com.example.app"),
        ][..],
        &[],
    ] {
        let navigation = browser.get_with(&url, headers).await;
        assert_eq!(navigation.status(), 302, "{headers:?}");
        assert!(location(&navigation).starts_with(&idp.issuer().to_owned()));
    }
}

/// What Fetch Metadata says of a request the user did not make: an image posted into an
/// application (`<img src="/signout">`), another site's link, and a link fetched ahead of a
/// click.
pub const NOT_THE_USERS: [&[(&str, &str)]; 4] = [
    &[
        ("sec-fetch-site", "same-origin"),
        ("sec-fetch-mode", "no-cors"),
        ("sec-fetch-dest", "image"),
    ],
    // A navigation nobody clicked: `<meta http-equiv="refresh">` posted into an application
    // (HTML only, no script), or a script's redirect.
    &[
        ("sec-fetch-site", "same-origin"),
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-dest", "document"),
    ],
    &[
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-dest", "document"),
        ("sec-fetch-user", "?1"),
    ],
    &[
        ("sec-fetch-site", "same-origin"),
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-dest", "document"),
        ("sec-purpose", "prefetch"),
    ],
];

/// A sign-out another page may have asked for shows "Sign out?" and changes nothing; the page's
/// button posts it from Tollgate's own origin. Any `GET` used to end the session (and, with
/// `id_token_hint`, the provider's).
#[tokio::test]
async fn a_signout_another_page_asked_for_is_confirmed_first() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::forward_auth(&idp).await;
    let mut browser = Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    let url = gateway.url("/signout?rd=/bye");
    for headers in NOT_THE_USERS {
        let asked = browser.get_with(&url, headers).await;
        assert_eq!(asked.status(), 200, "{headers:?}");
        assert!(asked.headers().get("set-cookie").is_none());
        // Never framed, so its button cannot be clicked through another site's page.
        assert_eq!(asked.headers()["x-frame-options"], "DENY");
        let page = asked.text().await.unwrap();
        assert!(page.contains("<h1>Sign out?</h1>"), "{page}");
        assert!(page.contains("<form method=\"post\">"), "{page}");
        let still = browser.get(&gateway.url("/auth")).await;
        assert_eq!(still.status(), 200, "still signed in after {headers:?}");
    }
    let cross_site_post = browser
        .post_with(&url, &[("sec-fetch-site", "cross-site")])
        .await;
    assert_eq!(
        cross_site_post.status(),
        200,
        "another site's form: asked too"
    );
    let confirmed = browser
        .post_with(&url, &[("sec-fetch-site", "same-origin")])
        .await;
    assert_eq!(confirmed.status(), 302);
    assert!(location(&confirmed).starts_with(&format!("{}/end_session", idp.issuer())));
    assert!(!browser.cookies.contains_key("tollgate"), "signed out");
    // A single-page application's own `fetch` signs out at once.
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    let script = [
        ("sec-fetch-site", "same-origin"),
        ("sec-fetch-mode", "cors"),
        ("sec-fetch-dest", "empty"),
    ];
    assert_eq!(browser.get_with(&url, &script).await.status(), 302);
    assert!(!browser.cookies.contains_key("tollgate"), "signed out");
}

#[tokio::test]
async fn open_redirects_are_refused_at_signin_and_signout() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::start(&Gateway::forward_auth_config(
        &idp,
        "allowed_redirect_domains = [\".example.com\"]",
        "",
    ))
    .await;
    let mut browser = Browser::new();
    for rd in [
        "//evil.com",
        "/%5Cevil.com",
        "https:evil.com",
        "user@evil.com",
        "https://evil.com/",
        "/%2F%2Fevil.com",
        "https://app.example.com@evil.com/",
        "%20/x",
    ] {
        let encoded: String = url::form_urlencoded::byte_serialize(rd.as_bytes()).collect();
        assert_eq!(
            browser
                .get(&gateway.url(&format!("/signin?rd={encoded}")))
                .await
                .status(),
            400,
            "signin {rd}"
        );
        assert_eq!(
            browser
                .get(&gateway.url(&format!("/signout?rd={encoded}")))
                .await
                .status(),
            400,
            "signout {rd}"
        );
    }
    let allowed = browser
        .get(&gateway.url("/signin?rd=https%3A%2F%2Fapp.example.com%2Fx"))
        .await;
    assert_eq!(allowed.status(), 302);
    let signout = browser
        .get(&gateway.url("/signout?rd=https%3A%2F%2Fapp.example.com%2Fx"))
        .await;
    assert_eq!(
        location(&signout),
        "https://app.example.com/x",
        "without a session, signout goes straight to rd"
    );
}

#[tokio::test]
async fn a_provider_that_is_down_gets_a_502_page() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let config = format!(
        "[session]\nsecrets = [\"{}\"]\n[[provider]]\nname = \"corp\"\nissuer = \"{dead}\"\nclient_id = \"x\"\nclient_auth = \"none\"\n[forward_auth]\nprovider = \"corp\"\n[server]\nlisten = \"127.0.0.1:0\"\n",
        crate::support::gateway::SESSION_SECRET
    );
    let gateway = Gateway::start(&config).await;
    let response = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(gateway.url("/signin"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("identity provider is unreachable")
    );
    let ready = reqwest::get(gateway.admin_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
}

#[tokio::test]
async fn every_client_authentication_method_completes_the_login() {
    let idp = TestIdp::start().await;
    for method in ["client_secret_basic", "client_secret_post", "none"] {
        let mut config = Gateway::forward_auth_config(&idp, "", "");
        config = config.replace(
            "client_secret = \"client-secret-for-tests\"",
            &if method == "none" {
                "client_auth = \"none\"".to_owned()
            } else {
                format!("client_secret = \"client-secret-for-tests\"\nclient_auth = \"{method}\"")
            },
        );
        let gateway = Gateway::start(&config).await;
        let mut browser = Browser::new();
        let callback = crate::support::gateway::sign_in(&mut browser, &gateway, "/").await;
        assert_eq!(callback.status(), 302, "{method}");
        assert_eq!(idp.last_client_auth(), Some(method));
        assert_eq!(
            browser.get(&gateway.url("/auth")).await.status(),
            200,
            "{method}"
        );
    }
}

#[tokio::test]
async fn a_large_session_is_split_over_several_cookies_and_stale_chunks_are_removed() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::forward_auth(&idp).await;
    let mut browser = Browser::new();
    idp.misbehave(Misbehaviour {
        large_userinfo: true,
        ..Default::default()
    });
    crate::support::gateway::sign_in(&mut browser, &gateway, "/").await;
    assert!(
        browser.cookies.contains_key("tollgate_1"),
        "{:?}",
        browser.cookies.keys()
    );
    assert!(
        browser
            .cookies
            .values()
            .all(|value| value.len() <= 3800 + 2)
    );
    let response = browser.get(&gateway.url("/auth?inject-claim=email")).await;
    assert_eq!(response.status(), 200);
    // A smaller session replaces the larger one; its leftover chunk is deleted.
    idp.misbehave(Misbehaviour::default());
    crate::support::gateway::sign_in(&mut browser, &gateway, "/").await;
    assert!(!browser.cookies.contains_key("tollgate_1"));
    assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 200);
    // A missing chunk makes the session unreadable, never partly read.
    idp.misbehave(Misbehaviour {
        large_userinfo: true,
        ..Default::default()
    });
    crate::support::gateway::sign_in(&mut browser, &gateway, "/").await;
    browser.cookies.remove("tollgate_1");
    assert_eq!(browser.get(&gateway.url("/auth")).await.status(), 401);
}

/// The session identifies the caller; a bearer token beside it reaches the application too, so
/// it must be the same caller's and valid (`forward_auth::every_token_beside_the_credential_is_checked`).
#[tokio::test]
async fn the_session_cookie_is_tried_before_the_bearer_token() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::forward_auth(&idp).await;
    let mut browser = Browser::new();
    crate::support::gateway::sign_in(&mut browser, &gateway, "/").await;
    // The session's claims decide: its ID token has group `admin`, this access token none.
    let url = gateway.url("/auth?groups=admin");
    let token = idp.access_token().claim("groups", json!([])).sign();
    let bearer = format!("Bearer {token}");
    let response = browser.get_with(&url, &[("authorization", &bearer)]).await;
    assert_eq!(response.status(), 200);
    let response = browser
        .get_with(&url, &[("authorization", "Bearer not-a-token")])
        .await;
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn a_rotated_session_secret_still_opens_old_sessions() {
    let idp = TestIdp::start().await;
    let old = Gateway::forward_auth(&idp).await;
    let mut browser = Browser::new();
    crate::support::gateway::sign_in(&mut browser, &old, "/").await;
    let rotated_config = Gateway::forward_auth_config(&idp, "", "").replace(
        &format!(
            "secrets = [\"{}\"]",
            crate::support::gateway::SESSION_SECRET
        ),
        &format!(
            "secrets = [\"a-brand-new-secret-a-brand-new-secret\", \"{}\"]",
            crate::support::gateway::SESSION_SECRET
        ),
    );
    let rotated = Gateway::start(&rotated_config).await;
    assert_eq!(browser.get(&rotated.url("/auth")).await.status(), 200);
    let retired = Gateway::start(&Gateway::forward_auth_config(&idp, "", "").replace(
        &format!(
            "secrets = [\"{}\"]",
            crate::support::gateway::SESSION_SECRET
        ),
        "secrets = [\"a-brand-new-secret-a-brand-new-secret\"]",
    ))
    .await;
    assert_eq!(browser.get(&retired.url("/auth")).await.status(), 401);
}

#[tokio::test]
async fn discovery_is_refreshed_and_plain_http_endpoints_elsewhere_are_refused() {
    let idp = TestIdp::start().await;
    let clock = tollgate::clock::ManualClock::new();
    let gateway =
        Gateway::start_with_clock(&Gateway::forward_auth_config(&idp, "", ""), clock.clone()).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let signin = || {
        let request = client.get(gateway.url("/signin?rd=/")).send();
        async move { request.await.unwrap().status().as_u16() }
    };
    assert_eq!(signin().await, 302);
    assert_eq!(signin().await, 302);
    assert_eq!(idp.count("discovery"), 1, "the document is kept");
    clock.advance(3601);
    // In the background, while the document there serves.
    until_discovered(&idp, 2, signin, "and fetched again after an hour").await;

    // The next document sends the code exchange over plain http to another host: refused, and
    // the old document is kept meanwhile, so logins still go to the real provider.
    idp.misbehave(Misbehaviour {
        plain_http_token_endpoint: true,
        ..Misbehaviour::default()
    });
    clock.advance(3601);
    until_discovered(&idp, 3, signin, "fetched again").await;
    // Requests go on meanwhile and after, and the refusal is not retried for a minute.
    for _ in 0..3 {
        assert_eq!(signin().await, 302, "the last good document is kept");
    }
    assert_eq!(idp.count("discovery"), 3);
    let fresh = Gateway::start(&Gateway::forward_auth_config(&idp, "", "")).await;
    let refused = client
        .get(fresh.url("/signin?rd=/"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(refused, 502, "a first document like that is unusable");
}

/// Signs in until `idp` was asked for its discovery document `times` times (a refresh runs in
/// the background, started by a sign-in that finds the document due and no refresh under way),
/// for at most 10 s; each sign-in must be sent to the provider.
async fn until_discovered<F: Future<Output = u16>>(
    idp: &TestIdp,
    times: usize,
    signin: impl Fn() -> F,
    what: &str,
) {
    for _ in 0..200 {
        assert_eq!(signin().await, 302);
        if idp.count("discovery") >= times {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(idp.count("discovery"), times, "{what}");
}

/// Logs in once with `misbehaviour` at a fresh provider and gateway; the callback's status.
async fn callback_status_with(misbehaviour: Misbehaviour, config_extra: &str) -> (u16, bool) {
    let idp = TestIdp::start().await;
    idp.misbehave(misbehaviour);
    let config = Gateway::forward_auth_config(&idp, "", "").replace(
        "jwks_refetch_interval = \"1h\"",
        &format!("jwks_refetch_interval = \"1h\"\n{config_extra}"),
    );
    let gateway = Gateway::start(&config).await;
    let mut browser = Browser::new();
    let callback = crate::support::gateway::sign_in(&mut browser, &gateway, "/").await;
    let status = callback.status().as_u16();
    (status, browser.cookies.contains_key("tollgate"))
}

#[tokio::test]
async fn id_tokens_older_than_max_id_token_age_are_refused_at_login() {
    let week_old = || Misbehaviour {
        week_old_id_token: true,
        ..Default::default()
    };
    assert_eq!(
        callback_status_with(week_old(), "").await,
        (401, false),
        "default max_id_token_age is 10m"
    );
    assert_eq!(
        callback_status_with(week_old(), "max_id_token_age = \"1h\"").await,
        (401, false)
    );
    assert_eq!(
        callback_status_with(week_old(), "max_id_token_age = \"8d\"").await,
        (302, true),
        "a configured longer age is honoured"
    );
    assert_eq!(
        callback_status_with(Misbehaviour::default(), "").await,
        (302, true)
    );
}

#[tokio::test]
async fn an_id_token_with_a_subject_over_255_characters_is_refused() {
    let misbehaviour = Misbehaviour {
        long_subject: true,
        ..Default::default()
    };
    assert_eq!(callback_status_with(misbehaviour, "").await, (401, false));
}

#[tokio::test]
async fn an_id_token_with_a_wrong_c_hash_is_refused() {
    let misbehaviour = Misbehaviour {
        wrong_c_hash: true,
        ..Default::default()
    };
    assert_eq!(callback_status_with(misbehaviour, "").await, (401, false));
}

#[tokio::test]
async fn a_token_response_whose_token_type_is_not_bearer_is_refused() {
    for token_type in ["mac", "DPoP", "", "Bearer2"] {
        let misbehaviour = Misbehaviour {
            token_type: Some(token_type),
            ..Default::default()
        };
        assert_eq!(
            callback_status_with(misbehaviour, "").await,
            (502, false),
            "{token_type:?}"
        );
    }
    // The provider spent the code all the same: the login is used up, and a reload of the
    // callback presents the code to the provider no more.
    let idp = TestIdp::start().await;
    let gateway = Gateway::forward_auth(&idp).await;
    idp.misbehave(Misbehaviour {
        token_type: Some("mac"),
        ..Default::default()
    });
    let (mut browser, callback_url) = at_the_callback(&gateway).await;
    assert_eq!(browser.get(&callback_url).await.status(), 502);
    assert!(!holds_a_login(&browser), "{:?}", browser.cookies);
    let exchanges = idp.count("token");
    assert_eq!(browser.get(&callback_url).await.status(), 400);
    assert_eq!(
        idp.count("token"),
        exchanges,
        "the spent code is not sent again"
    );
    let lower_case = Misbehaviour {
        token_type: Some("bearer"),
        ..Default::default()
    };
    assert_eq!(
        callback_status_with(lower_case, "").await,
        (302, true),
        "token_type is case-insensitive"
    );
}

#[tokio::test]
async fn a_token_endpoint_failure_at_login_is_a_502_not_a_401() {
    for status in [500, 502, 503] {
        let misbehaviour = Misbehaviour {
            token_endpoint_status: Some(status),
            ..Default::default()
        };
        assert_eq!(
            callback_status_with(misbehaviour, "").await,
            (502, false),
            "token endpoint answering {status}"
        );
    }
    // A failure keeps the login in flight: once the provider answers again, a reload of the
    // callback signs in with the code it had not seen.
    let idp = TestIdp::start().await;
    let gateway = Gateway::forward_auth(&idp).await;
    idp.misbehave(Misbehaviour {
        token_endpoint_status: Some(503),
        ..Default::default()
    });
    let (mut browser, callback_url) = at_the_callback(&gateway).await;
    assert_eq!(browser.get(&callback_url).await.status(), 502);
    idp.misbehave(Misbehaviour::default());
    assert_eq!(browser.get(&callback_url).await.status(), 302);
    assert!(browser.cookies.contains_key("tollgate"));
    // A failure once the code was spent (here the userinfo answer over its size cap, a 502)
    // uses the login up too: a reload would present the spent code again.
    idp.misbehave(Misbehaviour {
        huge_answer: Some("userinfo"),
        ..Default::default()
    });
    let (mut browser, callback_url) = at_the_callback(&gateway).await;
    assert_eq!(browser.get(&callback_url).await.status(), 502);
    assert!(!holds_a_login(&browser), "{:?}", browser.cookies);
    assert_eq!(browser.get(&callback_url).await.status(), 400);
    idp.misbehave(Misbehaviour::default());
    // An OAuth error from the provider (here: a code it does not know) stays a refusal, and
    // uses the login up: its cookie goes, and the state answers nothing more, not even the
    // provider's real code.
    let (mut browser, callback_url) = at_the_callback(&gateway).await;
    let mut unknown = reqwest::Url::parse(&callback_url).unwrap();
    let pairs: Vec<(String, String)> = unknown
        .query_pairs()
        .map(|(name, value)| match &*name {
            "code" => (name.into_owned(), "unknown".to_owned()),
            _ => (name.into_owned(), value.into_owned()),
        })
        .collect();
    unknown.query_pairs_mut().clear().extend_pairs(pairs);
    let unknown = unknown.to_string();
    assert!(unknown.contains("code=unknown&") || unknown.ends_with("code=unknown"));
    assert_eq!(browser.get(&unknown).await.status(), 401);
    assert!(!holds_a_login(&browser), "{:?}", browser.cookies);
    assert_eq!(browser.get(&callback_url).await.status(), 400);
    assert!(!browser.cookies.contains_key("tollgate"));
}

/// A browser that began a login at `gateway` and was sent back by the provider: it, and the
/// callback URL it was sent to (not yet asked for).
async fn at_the_callback(gateway: &Gateway) -> (Browser, String) {
    let mut browser = Browser::new();
    let signin = browser.get(&gateway.url("/signin")).await;
    let at_provider = browser.get(&location(&signin)).await;
    let callback_url = location(&at_provider);
    (browser, callback_url)
}

/// Whether `browser` holds the cookie of a login in flight.
fn holds_a_login(browser: &Browser) -> bool {
    browser
        .cookies
        .keys()
        .any(|name| name.starts_with("tollgate_login_"))
}

#[tokio::test]
async fn a_provider_advertising_rfc_9207_must_send_iss_at_the_callback() {
    let sends_iss = Misbehaviour {
        iss_parameter: true,
        ..Default::default()
    };
    assert_eq!(callback_status_with(sends_iss, "").await, (302, true));
    let omits_iss = Misbehaviour {
        iss_parameter: true,
        omit_iss_parameter: true,
        ..Default::default()
    };
    assert_eq!(callback_status_with(omits_iss, "").await, (400, false));
}
