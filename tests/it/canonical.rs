//! SPEC §4.1, the canonical request, checked against a real nginx: whatever nginx serves as a
//! protected path was never skipped or routed as a public one (a differential oracle over a
//! generated corpus of tricky paths), and hosts are read one way.

use crate::support::gateway::SESSION_SECRET;
use crate::support::idp::{AUDIENCE, CLIENT_ID, CLIENT_SECRET};
use crate::support::nginx::{self, Nginx, free_port, raw_get};
use crate::support::{Gateway, TestIdp, TestUpstream};

/// Pieces tricky paths are made of: separators written every way, dot segments written every
/// way, names that decode to the protected ones.
const PIECES: &[&str] = &[
    "public",
    "admin",
    "api",
    "x",
    "",
    ".",
    "..",
    "%2e",
    "%2E%2e",
    ".%2e",
    "%2e.",
    "%2f",
    "%2F",
    "%5c",
    "\\",
    "%70ublic",
    "%61pi",
    "%61dmin",
    "public%2F..",
    "%252e%252e",
    ";",
    "public;",
    "%00",
    "%25",
    "%20",
    "..;",
    "%2e%2e%2f",
    "a%2fb",
    "%7e",
    "...",
];

/// Deterministic, so a failure reproduces: `count` paths of one to five pieces.
fn corpus(count: usize) -> Vec<String> {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |bound: usize| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        usize::try_from(seed >> 33).unwrap() % bound
    };
    let mut paths: Vec<String> = [
        "/public/../admin/",
        "/public/%2e%2e/admin/",
        "/public/./../admin/",
        "/public//../admin/",
        "//api/x",
        "///api/x",
        "/.//api/x",
        "/public/x",
        "/api/x",
        "/admin/",
    ]
    .map(str::to_owned)
    .to_vec();
    while paths.len() < count {
        let length = 1 + next(5);
        // Half start under the public prefix, where a walk out of it is the attack.
        let mut path = if next(2) == 0 {
            "/public".to_owned()
        } else {
            String::new()
        };
        for _ in 0..length {
            path.push('/');
            path.push_str(PIECES[next(PIECES.len())]);
        }
        if next(3) == 0 {
            path.push('/');
        }
        paths.push(path);
    }
    paths
}

fn config(idp: &TestIdp, app_port: u16) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"

[session]
secrets = ["{SESSION_SECRET}"]

[[provider]]
name = "corp"
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
audiences = ["{AUDIENCE}"]

[forward_auth]
provider = "corp"

[[route]]
path_prefix = "/public"
upstream = "http://127.0.0.1:{app_port}"
provider = "corp"
on_unauthenticated = "pass"

[[route]]
path_prefix = "/robots.txt"
upstream = "http://127.0.0.1:{app_port}"
provider = "corp"
on_unauthenticated = "pass"

[[route]]
upstream = "http://127.0.0.1:{app_port}"
provider = "corp"
on_unauthenticated = "deny"
"#,
        issuer = idp.issuer()
    )
}

/// nginx as the application (it answers the path it resolved) and, for each skip rule, nginx
/// in front of Tollgate with the README's `auth_request` recipe.
fn nginx_config(app_port: u16, tollgate_port: u16, fronts: &[(u16, &str)]) -> String {
    let mut http = format!(
        "server {{ listen 127.0.0.1:{app_port}; location / {{ return 200 \"served=$uri\\n\"; }} }}\n"
    );
    for (port, rule) in fronts {
        http.push_str(&format!(
            "server {{\n listen 127.0.0.1:{port};\n\
             location = /_tollgate_auth {{\n internal;\n \
             proxy_pass http://127.0.0.1:{tollgate_port}/auth?{rule};\n \
             proxy_pass_request_body off;\n proxy_set_header Content-Length \"\";\n \
             proxy_set_header X-Original-URL $scheme://$http_host$request_uri;\n \
             proxy_set_header X-Original-Method $request_method;\n }}\n\
             location / {{\n auth_request /_tollgate_auth;\n proxy_pass http://127.0.0.1:{app_port};\n }}\n}}\n"
        ));
    }
    http
}

/// Whether a path nginx resolved may be served without a credential.
type Oracle = dyn Fn(&str) -> bool;

fn served(body: &str) -> Option<&str> {
    body.lines().find_map(|line| line.strip_prefix("served="))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_nginx_serves_as_protected_is_skipped_or_routed_as_public() {
    if !nginx::available() {
        return;
    }
    let idp = TestIdp::start().await;
    let app_port = free_port();
    let gateway = Gateway::start(&config(&idp, app_port)).await;
    let tollgate_port = gateway.app.public_addr.port();
    let (skip_public, skip_not_api) = (free_port(), free_port());
    let fronts = [
        (skip_public, "skip-auth=%5E/public/"),
        (skip_not_api, "skip-auth-ne=%5E/api/"),
    ];
    let _nginx = Nginx::start(
        &nginx_config(app_port, tollgate_port, &fronts),
        &[app_port, skip_public, skip_not_api],
    )
    .await;

    let paths = corpus(400);
    // Each oracle: whether nginx's resolved path is one the rule may let through unauthenticated.
    let is_public = |path: &str| path.starts_with("/public/");
    let is_not_api = |path: &str| !path.starts_with("/api/");
    let is_public_route = |path: &str| path == "/public" || path.starts_with("/public/");
    let mut passed = [0usize; 3];
    let mut refused = [0usize; 3];
    for path in &paths {
        let cases: [(usize, u16, &Oracle); 3] = [
            (0, skip_public, &is_public),
            (1, skip_not_api, &is_not_api),
            (2, tollgate_port, &is_public_route),
        ];
        for (case, port, may_pass) in cases {
            let (status, body) = raw_get(port, path, &[]).await;
            if status == 200 {
                let served = served(&body)
                    .unwrap_or_else(|| panic!("200 without the application's answer: {body:?}"));
                assert!(
                    may_pass(served),
                    "case {case}: {path:?} passed without a credential and nginx served {served:?}"
                );
                passed[case] += 1;
            } else {
                assert!(
                    // 500: nginx's answer to a 400 from `/auth` (a path with `;`).
                    matches!(status, 400 | 401 | 404 | 500),
                    "case {case}: {path:?} answered {status}"
                );
                refused[case] += 1;
            }
        }
    }
    // The corpus exercises both sides of every rule, so the oracle has something to judge.
    for case in 0..3 {
        assert!(
            passed[case] > 20,
            "case {case}: only {} passed",
            passed[case]
        );
        assert!(
            refused[case] > 20,
            "case {case}: only {} refused",
            refused[case]
        );
    }
    gateway.stop().await;
}

#[tokio::test]
async fn the_proxy_forwards_the_canonical_path_and_refuses_paths_without_one() {
    if !nginx::available() {
        return;
    }
    let idp = TestIdp::start().await;
    let app_port = free_port();
    let gateway = Gateway::start(&config(&idp, app_port)).await;
    let _nginx = Nginx::start(&nginx_config(app_port, 1, &[]), &[app_port]).await;
    let port = gateway.app.public_addr.port();
    for (path, expected) in [
        ("/public/x/../y?q=1", (200, Some("/public/y"))),
        ("/public//x", (200, Some("/public/x"))),
        ("/%70ublic/x", (200, Some("/public/x"))),
        ("/public/../admin/", (401, None)),
        ("/public/%2e%2e/admin/", (401, None)),
        ("/public/%2F../admin", (400, None)),
        ("/public/%252e%252e/admin", (400, None)),
        ("/public/../../admin", (400, None)),
        // Tomcat reads `/public/..;/admin` as `/admin`, nginx as a name: no single reading.
        ("/public/..;/admin", (400, None)),
        ("/public/%2e%2e;x=1/admin", (400, None)),
        // `/public;x/y` is `/public/y` to Tomcat, another route's path to everyone else.
        ("/public;x/y", (400, None)),
        ("/public/x;v=1", (200, Some("/public/x;v=1"))),
        ("/public/%40x", (200, Some("/public/@x"))),
        // `/public.json` is `/public` to Rails (`/public(.:format)`), another route's path to
        // nginx; also when the dot is encoded. A suffix within one route changes nothing.
        ("/public.json", (400, None)),
        ("/public.json/", (400, None)),
        ("/public%2Ejson", (400, None)),
        ("/public/app.js", (200, Some("/public/app.js"))),
        ("/x.json", (401, None)),
        // A route named after a file keeps its path: `/robots` is the laxer route's.
        ("/robots.txt", (200, Some("/robots.txt"))),
    ] {
        let (status, body) = raw_get(port, path, &[]).await;
        assert_eq!((status, served(&body)), expected, "{path}");
    }
    gateway.stop().await;
}

/// Tollgate behind nginx (the README's `auth_request` recipe), one front per `/auth` rule
/// query, on `ports` in that order; nginx is the application too.
struct Fronted {
    gateway: Gateway,
    ports: Vec<u16>,
    _nginx: Nginx,
    _idp: TestIdp,
}

impl Fronted {
    async fn start(rules: &[&str]) -> Self {
        let idp = TestIdp::start().await;
        let app_port = free_port();
        let gateway = Gateway::start(&config(&idp, app_port)).await;
        let tollgate_port = gateway.app.public_addr.port();
        let fronts: Vec<(u16, &str)> = rules.iter().map(|rule| (free_port(), *rule)).collect();
        let ports: Vec<u16> = fronts.iter().map(|(port, _)| *port).collect();
        let mut waited = ports.clone();
        waited.push(app_port);
        let nginx = Nginx::start(&nginx_config(app_port, tollgate_port, &fronts), &waited).await;
        Self {
            gateway,
            ports,
            _nginx: nginx,
            _idp: idp,
        }
    }
}

/// nginx accepts `?` and `#` in a `Host` after its `:` and builds `X-Original-URL` from it:
/// Tollgate must not read the path nginx serves as the query of a URL whose path is `/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_turns_the_path_into_a_query_is_never_skipped() {
    if !nginx::available() {
        return;
    }
    let fronted = Fronted::start(&["skip-auth=%5E/%24", "skip-auth-ne=%5E/api/"]).await;
    let (skip_root, skip_not_api) = (fronted.ports[0], fronted.ports[1]);
    for host in ["127.0.0.1:1?", "127.0.0.1:1#", "127.0.0.1:1?x="] {
        for port in [skip_root, skip_not_api] {
            let (status, body) = raw_get(port, "/api/secret", &[("Host", host)]).await;
            assert_eq!(status, 401, "Host: {host} on port {port}: {body:?}");
        }
    }
    // The rules still skip what they name.
    let (status, body) = raw_get(skip_root, "/", &[]).await;
    assert_eq!((status, served(&body)), (200, Some("/")));
    let (status, body) = raw_get(skip_not_api, "/other", &[]).await;
    assert_eq!((status, served(&body)), (200, Some("/other")));
    fronted.gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_hash_or_a_plus_in_a_pattern_never_opens_a_skip_rule() {
    if !nginx::available() {
        return;
    }
    // The README's recipe with a rule as an operator writes it: `+` as the regex's.
    let fronted = Fronted::start(&["skip-auth=%5E/public/", "skip-auth-ne=%5E/api/.+"]).await;
    let (skip_public, skip_not_api) = (fronted.ports[0], fronted.ports[1]);
    // nginx passes a raw `#` on as part of the path; an application may resolve what
    // follows it (`/public/#/../../admin` is `/admin` to Go's `path.Clean`).
    // No single reading: refused (nginx answers `/auth`'s 400 with a 500).
    let (status, body) = raw_get(skip_public, "/public/#/../../admin", &[]).await;
    assert_eq!((status, served(&body)), (500, None), "{body:?}");
    // `^/api/.+` read as `^/api/. ` would match nothing, so the `-ne` rule skipped all.
    let (status, body) = raw_get(skip_not_api, "/api/users", &[]).await;
    assert_eq!(status, 401, "{body:?}");
    // The rules still skip what they name.
    let (status, body) = raw_get(skip_public, "/public/x", &[]).await;
    assert_eq!((status, served(&body)), (200, Some("/public/x")));
    let (status, body) = raw_get(skip_not_api, "/other", &[]).await;
    assert_eq!((status, served(&body)), (200, Some("/other")));
    fronted.gateway.stop().await;
}

/// `/public/;/../admin` is `/admin` to Tomcat (it drops `;` parameters, merges the empty
/// segment, then resolves `..`), and was `/public/admin` here (a segment named `;` that the
/// `..` removed), so `skip-auth=^/public/` skipped it and nginx sent it on as it came. A
/// segment that is only parameters has no single reading now: never skipped.
#[tokio::test]
async fn a_segment_that_is_only_parameters_never_opens_a_skip_rule() {
    if !nginx::available() {
        return;
    }
    let fronted = Fronted::start(&["skip-auth=%5E/public/"]).await;
    let port = fronted.ports[0];
    for path in [
        "/public/;/../admin",
        "/public/;x=1/../admin",
        "/public/%3B/../admin",
    ] {
        let (status, body) = raw_get(port, path, &[]).await;
        assert_eq!(status, 500, "{path}: {body:?}");
    }
    // Parameters anywhere are refused now (below): nginx answers `/auth`'s 400 with a 500.
    let (status, body) = raw_get(port, "/public/x;v=1", &[]).await;
    assert_eq!((status, served(&body)), (500, None));
    let (status, body) = raw_get(port, "/public/x", &[]).await;
    assert_eq!((status, served(&body)), (200, Some("/public/x")));
    fronted.gateway.stop().await;
}

/// `/admin//../x` is `/x` merged first (nginx, Tollgate) and `/admin/x` to an application that
/// resolves dot segments without merging slashes (RFC 3986, WHATWG URL: Node's `new URL`,
/// Deno, Bun), which nginx's `proxy_pass` without a URI sends it to as it came: so
/// `skip-auth-ne=^/admin/` skipped it, and `skip-auth=^/public/` skipped
/// `/admin//../public/x`. A `..` that removes an empty segment has no single reading: `/auth`
/// refuses it (400, which nginx answers with a 500), as the proxy does.
#[tokio::test]
async fn a_dot_segment_that_removes_an_empty_one_never_opens_a_skip_rule() {
    if !nginx::available() {
        return;
    }
    let fronted = Fronted::start(&["skip-auth-ne=%5E/admin/", "skip-auth=%5E/public/"]).await;
    let (skip_not_admin, skip_public) = (fronted.ports[0], fronted.ports[1]);
    for (port, path) in [
        (skip_not_admin, "/admin//../x"),
        (skip_not_admin, "/admin//b/../../x"),
        (skip_public, "/admin//../public/x"),
    ] {
        let (status, body) = raw_get(port, path, &[]).await;
        assert_eq!((status, served(&body)), (500, None), "{path}: {body:?}");
    }
    // Empty segments no `..` reaches are merged, as nginx merges them.
    let (status, body) = raw_get(skip_public, "/public//x", &[]).await;
    assert_eq!((status, served(&body)), (200, Some("/public/x")));
    let (status, body) = raw_get(skip_not_admin, "/other//x", &[]).await;
    assert_eq!((status, served(&body)), (200, Some("/other/x")));
    fronted.gateway.stop().await;
}

/// nginx with a stricter `/auth` for `/admin/` than for `/` (an operator's usual layout), and
/// nginx as the application, which answers with the path it resolved.
fn per_location_config(app_port: u16, tollgate_port: u16, front_port: u16) -> String {
    let auth_location = |name: &str, rules: &str| {
        format!(
            "location = /{name} {{\n internal;\n \
             proxy_pass http://127.0.0.1:{tollgate_port}/auth?{rules};\n \
             proxy_pass_request_body off;\n proxy_set_header Content-Length \"\";\n \
             proxy_set_header X-Original-URL $scheme://$http_host$request_uri;\n \
             proxy_set_header X-Original-Method $request_method;\n }}\n"
        )
    };
    format!(
        "server {{ listen 127.0.0.1:{app_port}; location / {{ return 200 \"served=$uri\\n\"; }} }}\n\
         server {{\n listen 127.0.0.1:{front_port};\n{}{}\
         location /admin/ {{\n auth_request /_auth_admin;\n proxy_pass http://127.0.0.1:{app_port};\n }}\n\
         location / {{\n auth_request /_auth;\n proxy_pass http://127.0.0.1:{app_port};\n }}\n}}\n",
        auth_location("_auth_admin", "groups=admin"),
        auth_location("_auth", ""),
    )
}

/// `/admin;x/users` is not under `location /admin/` to nginx, so it was decided by the laxer
/// `/auth` of `location /`, and an application that drops `;` parameters (Tomcat, Jetty,
/// Spring) served `/admin/users` to a user outside `admin`. nginx sends the path on as the
/// client wrote it: `;` as sent, `%3B`, or a dot segment with parameters. `/auth` now refuses a
/// path with parameters (400, which nginx answers with a 500).
#[tokio::test]
async fn a_path_with_no_single_reading_never_reaches_a_laxer_location() {
    if !nginx::available() {
        return;
    }
    let idp = TestIdp::start().await;
    let app_port = free_port();
    let front_port = free_port();
    let gateway = Gateway::start(&config(&idp, app_port)).await;
    let tollgate_port = gateway.app.public_addr.port();
    let _nginx = Nginx::start(
        &per_location_config(app_port, tollgate_port, front_port),
        &[app_port, front_port],
    )
    .await;
    let outsider = format!(
        "Bearer {}",
        idp.access_token()
            .claim("groups", serde_json::json!(["dev"]))
            .sign()
    );
    let admin = format!(
        "Bearer {}",
        idp.access_token()
            .claim("groups", serde_json::json!(["admin"]))
            .sign()
    );
    let get = |path: &'static str, bearer: &str| {
        let bearer = bearer.to_owned();
        async move { raw_get(front_port, path, &[("Authorization", &bearer)]).await }
    };
    // The layout holds: `/admin/` wants the group, `/` does not.
    let (status, _) = get("/admin/users", &outsider).await;
    assert_eq!(status, 403);
    let (status, body) = get("/admin/users", &admin).await;
    assert_eq!((status, served(&body)), (200, Some("/admin/users")));
    let (status, body) = get("/other", &outsider).await;
    assert_eq!((status, served(&body)), (200, Some("/other")));
    for path in [
        "/admin;x/users",
        "/admin;/users",
        "/admin%3Bx/users",
        "/admin%3bx/users",
        "/other/..;/admin/users",
        "/admin/users;jsessionid=1",
        // No single reading without parameters either: nginx merges the slashes and serves
        // `/users` under `location /`, Node's `new URL` serves `/admin/users` (200 on the old
        // code).
        "/admin//../users",
        // Whatever else the path holds, percent-encoded separators included.
        "/admin//../users%2Fx",
        "/admin//%2e%2e/users",
        // nginx decodes `%2F` and goes on resolving: `/x` under `location /`, while an
        // application routing on the path as sent takes it as `/admin`'s (200 on the old code).
        "/admin/reports/..%2F..%2Fx",
        "/admin/%2e%2e%2fx",
        // nginx takes `#` and `\` for no separator; Go's `path.Clean` and IIS do.
        "/other/#/../../admin/users",
        "/other\\..\\admin/users",
        "/other%5C..%5Cadmin/users",
        // A network-path reference: `/admin` of the authority `other` to Node's `new URL`.
        "//other/admin/users",
        "/%2Fother/admin/users",
    ] {
        for bearer in [&outsider, &admin] {
            let (status, body) = get(path, bearer).await;
            assert_eq!((status, served(&body)), (500, None), "{path}: {body:?}");
        }
        // nginx passes the client's other headers to `/auth`: an `X-Forwarded-Uri` that
        // disagrees with nginx's `X-Original-URL` makes the original request unknown, which
        // switched this check off (200 on the old code).
        let headers = [
            ("Authorization", outsider.as_str()),
            ("X-Forwarded-Uri", "/x"),
        ];
        let (status, body) = raw_get(front_port, path, &headers).await;
        assert_eq!(
            (status, served(&body)),
            (500, None),
            "{path} with X-Forwarded-Uri: {body:?}"
        );
        // A `Host` holding `?` or `#`, which nginx takes and writes into `X-Original-URL`
        // before the path: the URL is not believed, and the path was then read as empty (a
        // query or fragment), so no `;` was seen (200 on the old code).
        for host in ["127.0.0.1:1?", "127.0.0.1:1#", "127.0.0.1:1?x="] {
            let headers = [("Authorization", outsider.as_str()), ("Host", host)];
            let (status, body) = raw_get(front_port, path, &headers).await;
            assert_eq!(
                (status, served(&body)),
                (500, None),
                "{path} with Host: {host}: {body:?}"
            );
        }
    }
    // A token in the query beside the Authorization header: two credentials the application
    // may read differently, refused however the `Host` reads (the query was read from the
    // `?` in the `Host`, which left `access_token` unseen).
    let other = idp
        .access_token()
        .claim("sub", serde_json::json!("mallory"))
        .sign();
    let target = format!("/other?access_token={other}");
    for host in ["127.0.0.1", "127.0.0.1:1?", "127.0.0.1:1?x="] {
        let headers = [("Authorization", outsider.as_str()), ("Host", host)];
        let (status, body) = raw_get(front_port, &target, &headers).await;
        assert_eq!(
            (status, served(&body)),
            (500, None),
            "Host: {host}: {body:?}"
        );
    }
    gateway.stop().await;
}

#[tokio::test]
async fn hosts_are_matched_in_canonical_form_and_must_agree_with_the_target() {
    let idp = TestIdp::start().await;
    let upstream = crate::support::TestUpstream::start().await;
    let routes = r#"
[[route]]
host = "app.example.com"
upstream = "{upstream}"
provider = "corp"
on_unauthenticated = "deny"

[[route]]
upstream = "{upstream}"
provider = "corp"
on_unauthenticated = "pass"
"#;
    let gateway = Gateway::start(&crate::proxy::proxy_config(&idp, &upstream.url(), routes)).await;
    let port = gateway.app.public_addr.port();
    for host in [
        "app.example.com",
        "App.Example.COM",
        "app.example.com.",
        "app.example.com:443",
        "app.example.com.:80",
    ] {
        let (status, _) = raw_get(port, "/x", &[("Host", host)]).await;
        assert_eq!(status, 401, "Host: {host} must reach the host's deny route");
    }
    let (status, _) = raw_get(port, "/x", &[("Host", "other.example.com")]).await;
    assert_eq!(status, 200, "another host reaches the host-less pass route");
    let (status, _) = raw_get(
        port,
        "http://other.example.com/x",
        &[("Host", "app.example.com")],
    )
    .await;
    assert_eq!(status, 400, "Host and absolute-form target disagree");
    let (status, _) = raw_get(
        port,
        "http://other.example.com//x",
        &[("Host", "app.example.com")],
    )
    .await;
    assert_eq!(
        status, 400,
        "they disagree also when the path is rewritten to its canonical form"
    );
    let (status, _) = raw_get(port, "/x", &[("Host", "app.example.com..")]).await;
    assert_eq!(status, 400);
    // Two `Host` headers (RFC 9112 §3.2): an upstream might read the other one.
    for hosts in [
        [("Host", "other.example.com"), ("Host", "app.example.com")],
        [("Host", "app.example.com"), ("Host", "app.example.com")],
    ] {
        for target in ["/x", "/ping"] {
            let (status, _) = raw_get(port, target, &hosts).await;
            assert_eq!(status, 400, "{target} with {hosts:?}");
        }
    }
    gateway.stop().await;
}

/// A trusted proxy's `X-Forwarded-Host` goes upstream (and bases redirects): when it chose
/// another route than `Host`, an upstream serving several hosts by it (Django's
/// `USE_X_FORWARDED_HOST`, Spring) served `app.example.com`'s pages under the pass route's
/// rules. An ingress that passes its client's `X-Forwarded-Host` on (AWS ALB, an nginx that
/// does not set it) lets anyone send one.
#[tokio::test]
async fn host_and_a_trusted_forwarded_host_must_choose_the_same_route() {
    let idp = TestIdp::start().await;
    let upstream = crate::support::TestUpstream::start().await;
    let routes = r#"
[[route]]
host = "app.example.com"
upstream = "{upstream}"
provider = "corp"
on_unauthenticated = "deny"

[[route]]
host = "api.example.com"
path_prefix = "/admin"
upstream = "{upstream}"
provider = "corp"
on_unauthenticated = "deny"

[[route]]
upstream = "{upstream}"
provider = "corp"
on_unauthenticated = "pass"
"#;
    let config = crate::proxy::proxy_config(&idp, &upstream.url(), routes);
    // The default trusts loopback: this client is a trusted proxy.
    let gateway = Gateway::start(&config).await;
    let port = gateway.app.public_addr.port();
    let get_path = |path: &'static str, host: &'static str, forwarded: &'static str| async move {
        raw_get(
            port,
            path,
            &[("Host", host), ("X-Forwarded-Host", forwarded)],
        )
        .await
    };
    let get = |host, forwarded| get_path("/x", host, forwarded);
    let (status, body) = get("other.example.com", "app.example.com").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = get("app.example.com", "other.example.com").await;
    assert_eq!(status, 400, "{body}");
    // Agreeing, or naming hosts of one route, or no host at all: decided as before.
    let (status, body) = get("other.example.com", "third.example.com").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("third.example.com"), "{body}");
    let (status, _) = get("app.example.com", "App.Example.com:443").await;
    assert_eq!(status, 401);
    // An empty one is none, as the base URL reads it (HAProxy sends one).
    let (status, body) = get("other.example.com", "").await;
    assert_eq!(status, 200, "{body}");
    // One that is no host is refused, as before: no base URL can be built on it; nor on
    // spellings a URL parser would still read as `app.example.com`.
    for forwarded in ["not a host", "app.example.com:000443", "app.example.com:"] {
        let (status, body) = get("other.example.com", forwarded).await;
        assert_eq!(status, 400, "{forwarded}: {body}");
    }
    // Every reading of the path: `/admin;x/users` is the catch-all's under both hosts, but
    // `/admin/users` to Tomcat, which is `api.example.com`'s deny route.
    let (status, body) = get_path("/admin;x/users", "other.example.com", "api.example.com").await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = get_path("/admin;x/users", "other.example.com", "other.example.com").await;
    assert_eq!(status, 200);
    gateway.stop().await;

    // From a peer that is no proxy, the header is not believed (and not passed on).
    let gateway =
        Gateway::start(&config.replace("[server]\n", "[server]\ntrusted_proxies = []\n")).await;
    let port = gateway.app.public_addr.port();
    let (status, body) = raw_get(
        port,
        "/x",
        &[
            ("Host", "other.example.com"),
            ("X-Forwarded-Host", "app.example.com"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("app.example.com"), "{body}");
    gateway.stop().await;
}

#[tokio::test]
async fn a_method_specific_skip_rule_needs_the_original_method() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::forward_auth(&idp).await;
    let client = reqwest::Client::new();
    let status = |headers: Vec<(&'static str, &'static str)>| {
        let mut request = client.get(gateway.url("/auth?skip-auth=GET,%5E/public/"));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let url = ("x-original-url", "https://app.example.com/public/x");
    assert_eq!(status(vec![url, ("x-original-method", "GET")]).await, 200);
    assert_eq!(status(vec![url]).await, 401, "a missing method is not GET");
    assert_eq!(
        status(vec![
            url,
            ("x-original-method", "POST"),
            ("x-http-method-override", "GET")
        ])
        .await,
        401
    );
    gateway.stop().await;
}

/// A path that begins `//` is, to an application that reads its request target as a URL
/// (Node's `new URL(req.url, base)`, Python's `urlsplit`, PHP's `parse_url`), the path after
/// an authority: `//public/admin` is `/admin` of the host `public` there, `/public/admin`
/// merged. nginx, Caddy and HAProxy pass it on as sent, so `/auth` refuses it (400); a method
/// said twice (a proxy that appends its own after the client's) is no method.
#[tokio::test]
async fn a_network_path_or_a_method_said_twice_never_skips() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::forward_auth(&idp).await;
    let client = reqwest::Client::new();
    let status = |rules: &'static str, headers: Vec<(&'static str, &'static str)>| {
        let mut request = client.get(gateway.url(&format!("/auth?{rules}")));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let public = "skip-auth=%5E/public/";
    assert_eq!(
        status(public, vec![("x-forwarded-uri", "/public/admin")]).await,
        200
    );
    for (name, value) in [
        ("x-forwarded-uri", "//public/admin"),
        ("x-forwarded-uri", "///public/admin"),
        ("x-original-url", "https://app.example.com//public/admin"),
        ("x-original-url", "//public/admin"),
    ] {
        assert_eq!(status(public, vec![(name, value)]).await, 400, "{value}");
    }
    let not_admin = "skip-auth-ne=%5E/admin";
    assert_eq!(
        status(not_admin, vec![("x-forwarded-uri", "/x/admin")]).await,
        200
    );
    assert_eq!(
        status(not_admin, vec![("x-forwarded-uri", "//x/admin")]).await,
        400
    );
    let get = "skip-auth=GET,%5E/public/";
    for family in [
        ("x-forwarded-uri", "/public/x", "x-forwarded-method"),
        (
            "x-original-url",
            "https://app.example.com/public/x",
            "x-original-method",
        ),
    ] {
        let (uri_header, uri, method_header) = family;
        assert_eq!(
            status(get, vec![(uri_header, uri), (method_header, "GET")]).await,
            200
        );
        assert_eq!(
            status(
                get,
                vec![
                    (uri_header, uri),
                    (method_header, "GET"),
                    (method_header, "DELETE")
                ]
            )
            .await,
            401,
            "{method_header} twice"
        );
    }
    gateway.stop().await;
}

/// A skip rule naming `POST` does not skip a `POST` the application may take for another
/// method (Laravel and Symfony turn it into what `X-HTTP-Method-Override` or a `_method` query
/// parameter says, Rails and Express into what the header says, and Rails, Symfony and
/// Laravel into what a form body's `_method` says): `POST /api/comments/42?_method=DELETE`,
/// or with `_method=delete` in its form body, deleted anonymously.
#[tokio::test]
async fn a_post_skip_rule_does_not_skip_a_post_that_says_another_method() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::forward_auth(&idp).await;
    let client = reqwest::Client::new();
    const JSON: (&str, &str) = ("content-type", "application/json");
    let status = |url: &'static str, headers: &[(&'static str, &'static str)]| {
        let mut request = client
            .get(gateway.url("/auth?skip-auth=POST,%5E/api/comments"))
            .header("x-original-url", url)
            .header("x-original-method", "POST");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let plain = "https://app.example.com/api/comments/42";
    assert_eq!(status(plain, &[JSON]).await, 200, "a JSON POST skips");
    for header in [
        ("x-http-method-override", "DELETE"),
        ("X_HTTP_Method", "DELETE"),
        ("x-method-override", "PUT"),
    ] {
        assert_eq!(status(plain, &[JSON, header]).await, 401, "{header:?}");
    }
    // A body that may hold `_method`, which `/auth` never sees.
    for form in [
        "application/x-www-form-urlencoded",
        "Application/X-WWW-Form-Urlencoded; charset=UTF-8",
        "multipart/form-data; boundary=x",
        "application/x-www-form-urlencoded, text/plain",
        "application/x-www-form-urlencoded text/plain",
        "multipart/form-data,x",
        "multipart/mixed; boundary=b",
        "Multipart/Related; boundary=b",
        "",
    ] {
        let header = ("content-type", form);
        assert_eq!(status(plain, &[header]).await, 401, "{form}");
    }
    assert_eq!(
        status(plain, &[]).await,
        401,
        "no Content-Type: Rack reads a form"
    );
    // A `Content-Type` the proxy in front may drop (Go's drop what `Connection` names) is none.
    for connection in ["Content-Type", "close, content-type"] {
        let headers = [JSON, ("connection", connection)];
        assert_eq!(status(plain, &headers).await, 401, "{connection}");
    }
    for url in [
        "https://app.example.com/api/comments/42?_method=DELETE",
        "https://app.example.com/api/comments/42?a=1&_Method=patch",
        "https://app.example.com/api/comments/42?%5Fmethod=DELETE",
        // As PHP reads names into `$_GET` (Laravel, Symfony): all of them `_method`.
        "https://app.example.com/api/comments/42?.method=DELETE",
        "https://app.example.com/api/comments/42?%5Bmethod=DELETE",
        "https://app.example.com/api/comments/42?%20_method=DELETE",
        "https://app.example.com/api/comments/42?_method%00x=DELETE",
    ] {
        assert_eq!(status(url, &[JSON]).await, 401, "{url}");
    }
    gateway.stop().await;

    // The reverse proxy: the same rule on a route.
    let upstream = crate::support::TestUpstream::start().await;
    let routes = format!(
        "[[route]]\nupstream = \"{}\"\nprovider = \"corp\"\non_unauthenticated = \"deny\"\nskip = [\"POST,^/api/comments\"]\n",
        upstream.url()
    );
    let gateway = Gateway::start(&crate::proxy::proxy_config(&idp, &upstream.url(), &routes)).await;
    let post = |path: &'static str, headers: &[(&'static str, &'static str)]| {
        let mut request = client.post(gateway.url(path)).body("{}");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(
        post("/api/comments/42", &[JSON]).await,
        200,
        "a JSON POST skips"
    );
    // The override headers never go upstream: the POST is what the application gets.
    assert_eq!(
        post(
            "/api/comments/42",
            &[JSON, ("x-http-method-override", "DELETE")]
        )
        .await,
        200
    );
    assert_eq!(post("/api/comments/42?_method=DELETE", &[JSON]).await, 401);
    assert_eq!(post("/api/comments/42?.method=DELETE", &[JSON]).await, 401);
    assert_eq!(post("/api/comments/42?_methods=1", &[JSON]).await, 200);
    let form = ("content-type", "application/x-www-form-urlencoded");
    assert_eq!(post("/api/comments/42", &[form]).await, 401, "a form POST");
    assert_eq!(post("/api/comments/42", &[]).await, 401, "no Content-Type");
    // Nor with a `Content-Type` that `Connection` names, which a proxy may drop.
    let dropped = [JSON, ("connection", "Content-Type")];
    assert_eq!(post("/api/comments/42", &dropped).await, 401);
    gateway.stop().await;
}

#[tokio::test]
async fn signin_never_builds_a_redirect_uri_on_a_host_it_does_not_serve() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::forward_auth(&idp).await;
    let port = gateway.app.public_addr.port();
    let (status, _) = raw_get(port, "/signin?rd=/", &[("Host", "evil.example")]).await;
    assert_eq!(
        status, 400,
        "Host: evil.example must not become the redirect URI"
    );
    let (status, _) = raw_get(port, "/signin?rd=/", &[]).await;
    assert_eq!(status, 302, "loopback is served without public_url");
    gateway.stop().await;
}

#[tokio::test]
async fn tollgates_own_endpoints_refuse_a_target_that_disagrees_with_the_host() {
    let idp = TestIdp::start().await;
    let gateway = Gateway::forward_auth(&idp).await;
    let port = gateway.app.public_addr.port();
    let (status, _) = raw_get(
        port,
        "http://evil.example/signin?rd=/",
        &[("Host", "127.0.0.1")],
    )
    .await;
    assert_eq!(status, 400, "absolute-form target and Host disagree");
    let (status, _) = raw_get(
        port,
        &format!("http://127.0.0.1:{port}/signin?rd=/"),
        &[("Host", &format!("127.0.0.1:{port}"))],
    )
    .await;
    assert_eq!(status, 302, "they agree");
    gateway.stop().await;
}

/// SPEC §4.1 for Tollgate's own endpoints: `//auth`, `/%61uth`, `/./auth` or
/// `/public/../auth` is `/auth`, as the proxy reads it and as nginx in front would, so it is
/// answered by Tollgate (200 for a valid bearer token, a redirect to the provider at
/// `/signin`) and never proxied to the application under the route that claims everything.
#[tokio::test]
async fn own_endpoints_are_found_by_the_canonical_path() {
    if !nginx::available() {
        return;
    }
    let idp = TestIdp::start().await;
    let app_port = free_port();
    let gateway = Gateway::start(&config(&idp, app_port)).await;
    let _nginx = Nginx::start(&nginx_config(app_port, 1, &[]), &[app_port]).await;
    let port = gateway.app.public_addr.port();
    let bearer = format!("Bearer {}", idp.access_token().sign());
    for path in [
        "/auth",
        "//auth",
        "/%61uth",
        "/./auth",
        "/public/../auth",
        "/x/%2e%2e/auth",
    ] {
        let (status, body) = raw_get(port, path, &[("Authorization", &bearer)]).await;
        assert_eq!((status, served(&body)), (200, None), "{path}: {body}");
    }
    // No route here redirects to a login (`deny` and `pass`): a 302 is `/signin`'s.
    for path in ["//signin?rd=/", "/%73ignin?rd=/", "/public/../signin?rd=/"] {
        let (status, body) = raw_get(port, path, &[]).await;
        assert_eq!((status, served(&body)), (302, None), "{path}: {body}");
    }
    // A path with no single reading is nobody's endpoint.
    let (status, _) = raw_get(port, "/auth/%2F..", &[("Authorization", &bearer)]).await;
    assert_eq!(status, 400);
    gateway.stop().await;
}

/// README, "What an ingress may cache": the `auth-cache-key` it recommends holds the
/// credential, the `Origin` and the original URL. A key of the credential alone (the advice
/// before) served a 200 cached for `/other` to `/admin;x/users` from the same laxer `location`
/// (which `/auth` refuses, and Tomcat serves as `/admin/users`), and to a WebSocket handshake
/// that a page of another host opened with the visitor's cookie (which `/auth` refuses by its
/// `Origin`). Both nginx fronts cache `/auth` answers, one with each key.
#[tokio::test]
async fn the_recommended_auth_cache_key_keeps_refusals_that_hold_for_one_path_or_origin() {
    if !nginx::available() {
        return;
    }
    let idp = TestIdp::start().await;
    let app_port = free_port();
    let gateway = Gateway::start(&config(&idp, app_port)).await;
    let mut browser = crate::support::Browser::new();
    crate::support::gateway::signed_in(&mut browser, &gateway).await;
    let cookie = crate::refresh::cookie_header(&browser);
    let tollgate_port = gateway.app.public_addr.port();
    let (recommended, credential_only) = (free_port(), free_port());
    let cache_dir = crate::support::scratch_dir("nginx-auth-cache");
    let front = |port: u16, zone: &str, key: &str| {
        let auth = |name: &str, rules: &str| {
            format!(
                "location = /{name} {{\n internal;\n \
                 proxy_cache {zone};\n proxy_cache_key \"{key}\";\n proxy_cache_valid 200 1m;\n \
                 proxy_pass http://127.0.0.1:{tollgate_port}/auth?{rules};\n \
                 proxy_pass_request_body off;\n proxy_set_header Content-Length \"\";\n \
                 proxy_set_header X-Original-URL $scheme://$http_host$request_uri;\n \
                 proxy_set_header X-Original-Method $request_method;\n }}\n"
            )
        };
        format!(
            "server {{\n listen 127.0.0.1:{port};\n{}{}\
             location /admin/ {{\n auth_request /_auth_admin;\n proxy_pass http://127.0.0.1:{app_port};\n }}\n\
             location / {{\n auth_request /_auth;\n proxy_pass http://127.0.0.1:{app_port};\n }}\n}}\n",
            auth("_auth_admin", "groups=admin"),
            auth("_auth", ""),
        )
    };
    let _nginx = Nginx::start(
        &format!(
            "proxy_cache_path {dir}/a keys_zone=recommended:1m;\n\
             proxy_cache_path {dir}/b keys_zone=credential_only:1m;\n\
             server {{ listen 127.0.0.1:{app_port}; location / {{ return 200 \"served=$uri\\n\"; }} }}\n{}{}",
            front(
                recommended,
                "recommended",
                "$http_cookie$http_authorization$http_origin$request_uri"
            ),
            front(credential_only, "credential_only", "$http_cookie$http_authorization"),
            dir = cache_dir.display(),
        ),
        &[app_port, recommended, credential_only],
    )
    .await;
    let handshake = [
        ("Cookie", cookie.as_str()),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
        ("Origin", "http://evil.example.com"),
    ];
    for port in [recommended, credential_only] {
        // The visitor's own page, cached.
        let (status, body) = raw_get(port, "/other", &[("Cookie", &cookie)]).await;
        assert_eq!((status, served(&body)), (200, Some("/other")));
    }
    // With the recommended key both refusals hold (nginx answers `/auth`'s 400 and 403 with
    // 500 and 403)...
    let (status, body) = raw_get(recommended, "/admin;x/users", &[("Cookie", &cookie)]).await;
    assert_eq!((status, served(&body)), (500, None), "{body:?}");
    let (status, body) = raw_get(recommended, "/other", &handshake).await;
    assert_eq!((status, served(&body)), (403, None), "{body:?}");
    // ...which the credential alone let a cached 200 skip.
    let (status, body) = raw_get(credential_only, "/admin;x/users", &[("Cookie", &cookie)]).await;
    assert_eq!((status, served(&body)), (200, Some("/admin;x/users")));
    let (status, body) = raw_get(credential_only, "/other", &handshake).await;
    assert_eq!(status, 200, "{body:?}");
    gateway.stop().await;
}

/// `/admin/../public/x` is `/public/x` to nginx, which picks its location on it, and to the
/// skip rules; an application that routes on the path as sent (Express's `app.use('/admin')`,
/// here `TestUpstream`, which answers whatever it is sent) takes it as `/admin`'s. A dot
/// segment, sent or encoded, has no single reading: `/auth` refuses it (nginx answers its
/// 400 with a 500) and the application never sees it.
#[tokio::test]
async fn a_dot_segment_never_reaches_an_application_that_routes_on_the_path_as_sent() {
    if !nginx::available() {
        return;
    }
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let gateway = Gateway::start(&Gateway::forward_auth_config(&idp, "", "")).await;
    let front = free_port();
    let http = format!(
        "server {{\n listen 127.0.0.1:{front};\n\
         location = /_tollgate_auth {{\n internal;\n \
         proxy_pass http://{}/auth?skip-auth=%5E/public/;\n \
         proxy_pass_request_body off;\n proxy_set_header Content-Length \"\";\n \
         proxy_set_header X-Original-URL $scheme://$http_host$request_uri;\n \
         proxy_set_header X-Original-Method $request_method;\n }}\n\
         location / {{\n auth_request /_tollgate_auth;\n proxy_pass http://{};\n }}\n}}\n",
        gateway.app.public_addr, upstream.addr
    );
    let _nginx = Nginx::start(&http, &[front]).await;
    let (status, body) = raw_get(front, "/public/x", &[]).await;
    assert_eq!(status, 200, "a public path as a browser sends it: {body}");
    assert!(body.contains("\"/public/x\""), "{body}");
    for path in [
        "/admin/../public/x",
        "/admin/%2e%2e/public/x",
        "/admin/.%2E/public/x",
        "/admin/./../public/x",
        "/admin/x/../../public/x",
    ] {
        let (status, body) = raw_get(front, path, &[]).await;
        assert!(
            !body.contains("\"uri\""),
            "{path} reached the application: {body}"
        );
        assert_eq!(status, 500, "{path}: nginx's answer to a 400 from /auth");
    }
    gateway.stop().await;
}
