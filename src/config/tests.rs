//! Unit tests of config loading and validation.

use std::collections::BTreeMap;

use super::*;

const PROVIDER: &str = r#"
[[provider]]
name = "corp"
issuer = "https://login.example.com"
client_id = "tollgate"
client_secret = "s"
"#;

#[track_caller]
fn problems(text: &str, env: &[(&str, &str)]) -> Vec<String> {
    let env: BTreeMap<String, String> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    match load(text, &env) {
        Ok(_) => Vec::new(),
        Err(problems) => problems.iter().map(ToString::to_string).collect(),
    }
}

#[track_caller]
fn check_problem(text: &str, env: &[(&str, &str)], expected_prefix: &str) {
    let found = problems(text, env);
    assert!(
        found
            .iter()
            .any(|problem| problem.starts_with(expected_prefix)),
        "no `{expected_prefix}` in {found:?}"
    );
}

#[test]
fn unknown_keys_are_reported_with_their_full_path() {
    check_problem(
        &format!("{PROVIDER}bogus = 1"),
        &[],
        "provider[0].bogus: unknown key",
    );
    check_problem(
        "[token_service]\nissuer = \"https://a\"\n[[token_service.client]]\nclient_id = \"c\"\ngrants = [\"client_credentials\"]\nclient_secret_hash = \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g\"\ncolour = \"red\"",
        &[],
        "token_service.client[0].colour: unknown key",
    );
    check_problem("[frobnicate]\nx = 1", &[], "frobnicate: unknown key");
}

#[test]
fn type_errors_name_the_key_and_do_not_hide_other_sections() {
    let found = problems(
        &format!("[server]\ntrusted_proxies = \"10.0.0.0/8\"\n[session]\nlifetime = 5\n{PROVIDER}"),
        &[],
    );
    assert!(
        found
            .iter()
            .any(|problem| problem.starts_with("server.trusted_proxies:")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|problem| problem.starts_with("session.lifetime:")),
        "{found:?}"
    );
}

/// A mistyped key used to take its whole section with it: the checks then saw a `[session]`
/// without secrets, or a `[[provider]]` without a name, and reported those too.
#[test]
fn a_mistyped_key_is_one_problem_and_the_rest_of_its_section_still_counts() {
    let forward_auth = "[forward_auth]\nprovider = \"corp\"\n";
    let secrets = "secrets = [\"0123456789abcdef0123456789abcdef0123\"]";
    let mut found = problems(
        &format!(
            "[session]\n{secrets}\nlifetime = 5\nidle_timeout = true\ncolour = 1\n{PROVIDER}{forward_auth}"
        ),
        &[],
    );
    found.sort();
    assert_eq!(
        found,
        [
            "session.colour: unknown key",
            "session.idle_timeout: invalid type: boolean, expected a string",
            "session.lifetime: invalid type: integer, expected a string",
        ]
    );
    // What the checks find wrong beside a left-out key is still said.
    let mut found = problems(
        &format!(
            "[session]\n{secrets}\nlifetime = 5\nidle_timeout = \"soon\"\n{PROVIDER}{forward_auth}"
        ),
        &[],
    );
    found.sort();
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].starts_with("session.idle_timeout: "), "{found:?}");
    assert!(
        found[1].starts_with("session.lifetime: invalid type"),
        "{found:?}"
    );
    // A bad element leaves its list out, and what the checks would say of the list is not
    // said again.
    let found = problems(
        &format!(
            "[session]\nsecrets = [\"0123456789abcdef0123456789abcdef0123\", 5]\n{PROVIDER}{forward_auth}"
        ),
        &[],
    );
    assert_eq!(
        found,
        ["session.secrets[1]: invalid type: integer, expected a string"]
    );
    // The provider keeps its name, so `forward_auth.provider` still finds it.
    let found = problems(
        &format!("[session]\n{secrets}\n{PROVIDER}timeout = 30\n{forward_auth}"),
        &[],
    );
    assert_eq!(
        found,
        ["provider[0].timeout: invalid type: integer, expected a string"]
    );
    // A section that is not a table is still one problem, not one per key it lacks.
    let found = problems(&format!("session = 5\n{PROVIDER}{forward_auth}"), &[]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("session: invalid type: integer"),
        "{found:?}"
    );
}

/// A configured hash runs with the costs it names, for an unauthenticated request: only
/// argon2 hashes within bounded costs are taken.
#[test]
fn a_hash_asking_too_much_of_each_check_is_a_problem() {
    let config = |hash: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[token_service]\nissuer = \"https://a\"\n\
             [[token_service.client]]\nclient_id = \"c\"\ngrants = [\"client_credentials\"]\n\
             client_secret_hash = \"{hash}\"\n"
        )
    };
    let salt_and_hash = "c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
    let at = "token_service.client[0].client_secret_hash";
    assert!(
        !problems(
            &config(&format!("$argon2id$v=19$m=19456,t=2,p=1${salt_and_hash}")),
            &[]
        )
        .iter()
        .any(|problem| problem.starts_with(at)),
        "hash-secret's costs"
    );
    assert!(
        !problems(
            &config(&format!("$argon2id$v=19$m=65536,t=3,p=32${salt_and_hash}")),
            &[]
        )
        .iter()
        .any(|problem| problem.starts_with(at)),
        "lanes share the memory: any count of them"
    );
    for costs in ["m=4294967295,t=1,p=1", "m=19456,t=4294967295,p=1"] {
        check_problem(
            &config(&format!("$argon2id$v=19${costs}${salt_and_hash}")),
            &[],
            &format!("{at}: asks more of each check"),
        );
    }
    check_problem(
        &config(&format!("$pbkdf2-sha256$i=100000${salt_and_hash}")),
        &[],
        &format!("{at}: is not an argon2 hash"),
    );
    check_problem(
        &config("plain"),
        &[],
        &format!("{at}: is not a PHC-format hash"),
    );
}

#[test]
fn files_and_lifetimes_serve_would_refuse_are_problems() {
    let dir = std::env::temp_dir().join(format!("tollgate-key-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a key").unwrap();
    let missing = dir.join("missing.pem");
    let service =
        |extra: &str| format!("[token_service]\nissuer = \"https://issuer.example\"\n{extra}\n");
    let path = |file: &std::path::Path| file.display().to_string();
    check_problem(
        &service(&format!("signing_key_file = \"{}\"", path(&garbage))),
        &[],
        "token_service.signing_key_file: ",
    );
    check_problem(
        &service(&format!("retired_key_files = [\"{}\"]", path(&missing))),
        &[],
        "token_service.retired_key_files[0]: ",
    );
    // A signing key file that is not there yet is made at start, whatever its path looks like
    // (relative, without an extension, with a space).
    for file in [
        path(&missing),
        "keys/signing".to_owned(),
        "/var/lib/tollgate keys/k".to_owned(),
    ] {
        assert!(
            problems(&service(&format!("signing_key_file = \"{file}\"")), &[]).is_empty(),
            "{file}"
        );
    }
    for lifetime in ["0s", "400d"] {
        check_problem(
            &service(&format!("token_lifetime = \"{lifetime}\"")),
            &[],
            "token_service.token_lifetime: must be from 1s to 366d",
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn problems_never_repeat_a_secret() {
    let leaks = |text: &str, env: &[(&str, &str)], secret: &str| {
        let found = problems(text, env);
        assert!(!found.is_empty(), "{text}");
        assert!(
            found.iter().all(|problem| !problem.contains(secret)),
            "{found:?}"
        );
    };
    // A value of the wrong type (a string for a list), in the file or from the environment.
    leaks(
        &format!("[session]\nsecrets = \"SuperSecretSessionValue-0123456789\"\n{PROVIDER}"),
        &[],
        "SuperSecret",
    );
    leaks(
        &format!("[session]\n{PROVIDER}"),
        &[(
            "TOLLGATE_SESSION__SECRETS",
            "SuperSecretSessionValue-0123456789",
        )],
        "SuperSecret",
    );
    // A Redis URL that does not parse, with a password in it.
    leaks(
        &format!(
            "[session]\nstore = \"redis\"\nredis_url = \"redis://:TopSecretPw@redis.internal:63790000\"\n{PROVIDER}"
        ),
        &[],
        "TopSecretPw",
    );
    leaks(
        &format!(
            "[session]\nstore = \"redis\"\nredis_url = [\"redis://a:1\", \"redis://:TopSecretPw@b:99999999\"]\n{PROVIDER}"
        ),
        &[],
        "TopSecretPw",
    );
    // A password pasted from `openssl rand -base64`, with a `/` the URL parser takes for the
    // path: the URL does not parse, and is named without it.
    leaks(
        &format!(
            "[session]\nstore = \"redis\"\nredis_url = \"redis://default:Top/SecretPw@redis:6379\"\n{PROVIDER}"
        ),
        &[],
        "SecretPw",
    );
    // The same in a Sentinel URL: the password is not read as service or db (and quoted).
    leaks(
        &format!(
            "[session]\nstore = \"redis\"\nredis_url = \"redis+sentinel://:a/b/TopSecret@s1:26379\"\n{PROVIDER}"
        ),
        &[],
        "TopSecret",
    );
    leaks(
        &format!(
            "[telemetry]\notlp_endpoint = \"https://u:Top/SecretPw@collector:43180\"\n[session]\n{PROVIDER}"
        ),
        &[],
        "SecretPw",
    );
    // A secret written under the key that names its file or variable.
    for secret in [
        "deadbeefcafe0123456789abcdef0123TopSecret",
        "TopSecret.abc/def",
        "/q8ZrTopSecret+Tq=",
    ] {
        for key in ["admin_token_env", "admin_token_file"] {
            leaks(
                &format!("[server]\n{key} = \"{secret}\"\n{PROVIDER}"),
                &[],
                "TopSecret",
            );
        }
    }
    for key in [
        "server.admin_token_env",
        "server.admin_token_file",
        "session.secrets_env",
        "session.secrets_file",
    ] {
        let (section, key) = key.split_once('.').unwrap();
        leaks(
            &format!("[{section}]\n{key} = \"k8Hq+Wz/TopSecret0123456789=\"\n{PROVIDER}"),
            &[],
            "TopSecret",
        );
    }
    // A key's PEM rendered into the key that names its file (a chart's `{{ .Values.key }}`
    // under `_file`): never quoted, and a signing key's is no path to make a key at.
    let pem = "-----BEGIN PRIVATE KEY-----\\nMIIEvTopSecret0123\\n-----END PRIVATE KEY-----";
    let token_service = "[token_service]\nissuer = \"https://issuer.example\"\n";
    for text in [
        format!(
            "[server]\ntls_cert_file = \"/etc/tollgate/tls.crt\"\ntls_key_file = \"{pem}\"\n{PROVIDER}"
        ),
        format!("{token_service}signing_key_file = \"{pem}\"\n{PROVIDER}"),
        format!("{token_service}retired_key_files = [\"{pem}\"]\n{PROVIDER}"),
        format!(
            "{}\nclient_auth = \"private_key_jwt\"\nclient_key_file = \"{pem}\"\n",
            PROVIDER.replace("client_secret = \"s\"\n", "")
        ),
    ] {
        leaks(&text, &[], "TopSecret");
    }
    // A path or a variable name is still named.
    check_problem(
        &format!("[server]\nadmin_token_file = \"/run/none/token\"\n{PROVIDER}"),
        &[],
        "server.admin_token_file: cannot read `/run/none/token`",
    );
    leaks(
        &format!("[server]\nadmin_token_env = \"JBSWY3DPEHPK3PXPTOPSECRET\"\n{PROVIDER}"),
        &[],
        "TOPSECRET",
    );
    check_problem(
        &format!("[server]\nadmin_token_env = \"ADMIN_TOKEN\"\n{PROVIDER}"),
        &[],
        "server.admin_token_env: environment variable `ADMIN_TOKEN` is not set",
    );
}

#[test]
fn impossible_combinations_are_problems() {
    check_problem(
        &format!("[session]\nlifetime = \"0s\"\n{PROVIDER}"),
        &[],
        "session.lifetime: must be at least 1s",
    );
    check_problem(
        &format!("[session]\nidle_timeout = \"500ms\"\n{PROVIDER}"),
        &[],
        "session.idle_timeout: must be at least 1s",
    );
    check_problem(
        &PROVIDER.replace(
            "[[provider]]\n",
            "[[provider]]\njwks_refetch_interval = \"0s\"\n",
        ),
        &[],
        "provider[0].jwks_refetch_interval: must be at least 1s",
    );
    check_problem(
        "[session]\nstore = \"redis\"",
        &[],
        "session.redis_url: is required",
    );
    check_problem(
        "[session]\nstore = \"redis\"\nredis_url = \"http://x\"",
        &[],
        "session.redis_url:",
    );
    check_problem(
        "[session]\nstore = \"cookie\"\nredis_url = \"redis://x\"",
        &[],
        "session.redis_url: only used",
    );
    check_problem(
        "[forward_auth]\nprovider = \"nobody\"\n[session]\nsecrets = [\"0123456789abcdef0123456789abcdef\"]",
        &[],
        "forward_auth.provider:",
    );
    check_problem(
        &format!(
            "{PROVIDER}\n[[provider]]\nname = \"corp\"\nissuer = \"https://b\"\nclient_id = \"x\"\nclient_auth = \"none\""
        ),
        &[],
        "provider[1].name:",
    );
    check_problem(
        "[[route]]\nupstream = \"http://x\"",
        &[],
        "route[0].provider: is required",
    );
    // An empty list under `require` requires nothing: every signed-in caller would pass.
    let route = format!("{PROVIDER}\n[[route]]\nupstream = \"http://x\"\nprovider = \"corp\"\n");
    for (require, path) in [
        ("groups = []", "route[0].require.groups"),
        ("email_domains = []", "route[0].require.email_domains"),
        ("client_roles = {}", "route[0].require.client_roles"),
        (
            "client_roles = { api = [] }",
            "route[0].require.client_roles.api",
        ),
        ("claims = { tid = [] }", "route[0].require.claims.tid"),
    ] {
        check_problem(
            &format!("{route}[route.require]\n{require}"),
            &[],
            &format!("{path}: an empty list requires nothing"),
        );
    }
    // Nor a table with no requirement in it (a template's `{{- if .groups }}` that rendered
    // nothing under `[route.require]`).
    for require in ["", "roles_claim = \"roles\""] {
        check_problem(
            &format!("{route}[route.require]\n{require}"),
            &[],
            "route[0].require: requires nothing",
        );
    }
    check_problem(
        &format!("{route}[route.require]\ngroups = [\"admin\"]"),
        &[("TOLLGATE_ROUTE__0__REQUIRE__GROUPS", "[]")],
        "route[0].require.groups: an empty list requires nothing",
    );
    // Nor may a value be empty: `issuers = [""]` matched an answer without `iss`.
    for (require, path) in [
        ("issuers = [\"\"]", "route[0].require.issuers"),
        (
            "email_domains = [\"example.com\", \"\"]",
            "route[0].require.email_domains",
        ),
        ("groups = [\" \"]", "route[0].require.groups"),
        (
            "client_roles = { api = [\"\"] }",
            "route[0].require.client_roles.api",
        ),
        ("claims = { tid = [\"\"] }", "route[0].require.claims.tid"),
    ] {
        check_problem(
            &format!("{route}[route.require]\n{require}"),
            &[],
            &format!("{path}: an empty value"),
        );
    }
    check_problem(
        &format!("{PROVIDER}\n[[route]]\nupstream = \"http://app:secret@x\"\nprovider = \"corp\""),
        &[],
        "route[0].upstream: must not hold a user name or password",
    );
    check_problem(
        &format!(
            "{PROVIDER}\n[[route]]\nupstream = \"http://x\"\nprovider = \"corp\"\non_unauthenticated = \"maybe\""
        ),
        &[],
        "route[0].on_unauthenticated:",
    );
    check_problem(
        &format!(
            "{PROVIDER}\n[[route]]\nupstream = \"http://x\"\nprovider = \"corp\"\n[route.headers]\n\"X-User\" = \"claim:\""
        ),
        &[],
        "route[0].headers.X-User:",
    );
    check_problem(
        &format!("{PROVIDER}\n[forward_auth]\nprovider = \"corp\""),
        &[],
        "session.secrets:",
    );
    check_problem(
        "[session]\nsecrets = [\"short\"]",
        &[],
        "session.secrets[0]:",
    );
}

/// Settings that would leave something open without saying so: a route that never matches (a
/// prefix in another form than requests are matched in, or one another route has), its
/// requests falling through to a broader route; requirements only signed-in requests meet; a
/// leeway of days; a redirect suffix of a whole top-level domain.
#[test]
fn settings_that_would_quietly_open_a_way_are_problems() {
    const SECRETS: &str = "[session]\nsecrets = [\"0123456789abcdef0123456789abcdef\"]\n";
    let route = |lines: &str| {
        format!(
            "{SECRETS}{PROVIDER}\n[[route]]\nupstream = \"http://x\"\nprovider = \"corp\"\n{lines}"
        )
    };
    for (prefix, problem) in [
        (
            "/api//v2",
            "route[0].path_prefix: `/api//v2` is not in canonical form",
        ),
        (
            "/%7Euser",
            "route[0].path_prefix: `/%7Euser` is not in canonical form",
        ),
        (
            "/a/./b",
            "route[0].path_prefix: `/a/./b` is not in canonical form",
        ),
        (
            "/a%2Fb",
            "route[0].path_prefix: `/a%2Fb` has no single reading",
        ),
    ] {
        check_problem(&route(&format!("path_prefix = \"{prefix}\"")), &[], problem);
    }
    assert_eq!(
        problems(&route("path_prefix = \"/api/v2/\""), &[]),
        Vec::<String>::new()
    );
    let twice = format!(
        "{}\n[[route]]\nupstream = \"http://y\"\nprovider = \"corp\"\npath_prefix = \"/admin/\"",
        route("path_prefix = \"/admin\"\n[route.require]\ngroups = [\"admin\"]")
    );
    check_problem(
        &twice,
        &[],
        "route[1].path_prefix: `/admin` on every host is route[0]'s",
    );
    let elsewhere = twice.replacen(
        "path_prefix = \"/admin/\"",
        "host = \"other.example.com\"\npath_prefix = \"/admin/\"",
        1,
    );
    assert_eq!(problems(&elsewhere, &[]), Vec::<String>::new());
    for on_unauthenticated in ["pass", "login_on_upstream_401"] {
        let optional = route(&format!(
            "on_unauthenticated = \"{on_unauthenticated}\"\n[route.require]\ngroups = [\"admin\"]"
        ));
        assert_eq!(problems(&optional, &[]), Vec::<String>::new());
        let loaded = load(&optional, &BTreeMap::new()).unwrap();
        assert!(
            warnings(&loaded)
                .iter()
                .any(|warning| warning.starts_with("route[0].require: holds only for signed-in")),
            "{:?}",
            warnings(&loaded)
        );
    }
    // A skip pattern is searched anywhere in the path: one not anchored at the start in each
    // of its alternatives is warned about (a `^` elsewhere in it anchors nothing).
    let searched = load(
        &route("skip = [\"/healthz\", \"GET,^/public/\", \"^/health$|/static/\", \"^(/a|/b)\"]"),
        &BTreeMap::new(),
    )
    .unwrap();
    assert_eq!(
        warnings(&searched),
        [
            "route[0].skip[0]: `/healthz` matches anywhere in a path (under `/admin/` too); anchor each alternative with `^` unless that is meant",
            "route[0].skip[2]: `^/health$|/static/` matches anywhere in a path (under `/admin/` too); anchor each alternative with `^` unless that is meant",
        ]
    );
    check_problem(
        &format!("[server]\nleeway = \"30d\"\n{PROVIDER}"),
        &[],
        "server.leeway: is clock skew, at most 5m",
    );
    assert_eq!(
        problems(&format!("[server]\nleeway = \"5m\"\n{PROVIDER}"), &[]),
        Vec::<String>::new()
    );
    check_problem(
        &format!("[server]\nallowed_redirect_domains = [\".com\"]\n{PROVIDER}"),
        &[],
        "server.allowed_redirect_domains[0]: `.com` is a suffix of one label",
    );
    // Nor may a suffix be a public one, where anyone may have a site: ICANN's (`.co.uk`), a
    // hosting service's (`.github.io`), or one whose every child is (`*.compute.amazonaws.com`).
    for public in [
        ".co.uk",
        ".github.io",
        ".Herokuapp.com:443",
        ".vercel.app",
        ".compute.amazonaws.com",
    ] {
        check_problem(
            &format!("[server]\nallowed_redirect_domains = [\"{public}\"]\n{PROVIDER}"),
            &[],
            &format!("server.allowed_redirect_domains[0]: `{public}` is a public suffix"),
        );
    }
    assert_eq!(
        problems(
            &format!(
                "[server]\nallowed_redirect_domains = [\".example.com\", \".localhost\", \"intranet\", \".example.co.uk\", \".myorg.github.io\", \"github.io\", \".corp.internal\"]\n{PROVIDER}"
            ),
            &[]
        ),
        Vec::<String>::new()
    );
}

/// A `jwks_file` is read again while running: a file (or directory) other users may change
/// lets them choose the keys tokens are checked with.
#[test]
fn a_jwks_file_others_may_change_is_warned_about() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = std::env::temp_dir().join(format!("tollgate-jwks-mode-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("jwks.json");
    std::fs::write(
        &file,
        r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"1","alg":"ES256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#,
    )
    .unwrap();
    let text = PROVIDER.replace(
        "client_secret = \"s\"",
        &format!("client_secret = \"s\"\njwks_file = \"{}\"", file.display()),
    );
    let warned = |file_mode: u32, dir_mode: u32| {
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(file_mode)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(dir_mode)).unwrap();
        super::warnings(&load(&text, &BTreeMap::new()).unwrap())
            .iter()
            .any(|warning| warning.starts_with("provider[0].jwks_file: every user"))
    };
    assert!(!warned(0o644, 0o755));
    assert!(warned(0o666, 0o755), "the file");
    assert!(warned(0o644, 0o777), "its directory");
    assert!(
        !warned(0o644, 0o1777),
        "a sticky directory keeps others' files"
    );
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A `*_file` key naming a device or a huge file is a problem at once (read to
/// `named_file::MOST`), not a `check` that reads forever.
#[test]
fn a_named_file_that_never_ends_is_a_problem() {
    check_problem(
        &format!("[session]\nsecrets_file = \"/dev/zero\"\n{PROVIDER}"),
        &[],
        "session.secrets_file: cannot read",
    );
    check_problem(
        &PROVIDER.replace(
            "client_secret = \"s\"",
            "client_secret_file = \"/dev/urandom\"",
        ),
        &[],
        "provider[0].client_secret_file: cannot read",
    );
}

/// A secret in a file every user of the host may read (a Kubernetes secret volume's default
/// mode, 0644) is named by the warnings; readable by its owner and group only, it is not.
#[test]
fn a_secret_file_readable_by_every_user_is_warned_about() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = std::env::temp_dir().join(format!("tollgate-secret-mode-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("client-secret");
    std::fs::write(&secret, "from-file\n").unwrap();
    let text = PROVIDER.replace(
        "client_secret = \"s\"",
        &format!("client_secret_file = \"{}\"", secret.display()),
    );
    let readable = |mode: u32| {
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(mode)).unwrap();
        super::warnings(&load(&text, &BTreeMap::new()).unwrap())
            .iter()
            .any(|warning| {
                warning.starts_with(
                    "provider[0].client_secret_file: the file is readable by every user",
                )
            })
    };
    assert!(readable(0o644));
    assert!(readable(0o604));
    assert!(!readable(0o640));
    assert!(!readable(0o400));
    // Through a link, as a secret volume's files are, the file's own mode counts.
    let link = dir.join("linked");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let linked = PROVIDER.replace(
        "client_secret = \"s\"",
        &format!("client_secret_file = \"{}\"", link.display()),
    );
    assert_eq!(
        load(&linked, &BTreeMap::new())
            .unwrap()
            .secret_files_readable_by_all,
        ["provider[0].client_secret_file"]
    );
    // The session secrets too, read by their own reader.
    let secrets = dir.join("session-secrets");
    std::fs::write(&secrets, "a-session-secret-of-thirty-two-bytes-or-more\n").unwrap();
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o644)).unwrap();
    let session = format!(
        "[session]\nsecrets_file = \"{}\"\n{PROVIDER}",
        secrets.display()
    );
    assert_eq!(
        load(&session, &BTreeMap::new())
            .unwrap()
            .secret_files_readable_by_all,
        ["session.secrets_file"]
    );
    // A retired signing key still verifies: whoever reads it signs tokens the service takes.
    let retired = dir.join("retired.pem");
    std::fs::write(
        &retired,
        crate::jose::SigningKey::generate_es256().unwrap().1,
    )
    .unwrap();
    std::fs::set_permissions(&retired, std::fs::Permissions::from_mode(0o644)).unwrap();
    let service = format!(
        "[token_service]\nissuer = \"https://issuer.example\"\nretired_key_files = [\"{}\"]\n{PROVIDER}",
        retired.display()
    );
    assert!(
        super::warnings(&load(&service, &BTreeMap::new()).unwrap())
            .iter()
            .any(|warning| warning.starts_with(
                "token_service.retired_key_files[0]: the file is readable by every user"
            ))
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_secret_may_be_given_once_inline_from_a_file_or_from_the_environment() {
    let path = std::env::temp_dir().join(format!("tollgate-config-test-{}", std::process::id()));
    std::fs::write(&path, "from-file\n").unwrap();
    let text = PROVIDER.replace(
        "client_secret = \"s\"",
        &format!("client_secret_file = \"{}\"", path.display()),
    );
    let config = load(&text, &BTreeMap::new()).unwrap();
    assert_eq!(
        config.providers[0].client_secret.as_ref().unwrap().expose(),
        "from-file"
    );
    let text = PROVIDER.replace(
        "client_secret = \"s\"",
        "client_secret_env = \"CORP_SECRET\"",
    );
    for value in ["from-env", "from-env\n", "from-env\r\n"] {
        let env = BTreeMap::from([("CORP_SECRET".to_owned(), value.to_owned())]);
        assert_eq!(
            load(&text, &env).unwrap().providers[0]
                .client_secret
                .as_ref()
                .unwrap()
                .expose(),
            "from-env",
            "{value:?}"
        );
    }
    check_problem(&text, &[], "provider[0].client_secret_env:");
    let twice = PROVIDER.replace(
        "client_secret = \"s\"",
        "client_secret = \"s\"\nclient_secret_env = \"X\"",
    );
    check_problem(&twice, &[("X", "y")], "provider[0].client_secret:");
    assert!(
        !format!("{:?}", load(PROVIDER, &BTreeMap::new()).unwrap()).contains("\"s\""),
        "secrets never show in Debug"
    );
}

#[test]
fn environment_overrides_apply_before_validation() {
    let env = BTreeMap::from([(
        "TOLLGATE_PROVIDER__0__CLIENT_ID".to_owned(),
        "from-env".to_owned(),
    )]);
    assert_eq!(
        load(PROVIDER, &env).unwrap().providers[0].client_id,
        "from-env"
    );
    check_problem(
        PROVIDER,
        &[("TOLLGATE_SERVER__LISTEN", "nowhere")],
        "server.listen:",
    );
}

/// The variables Kubernetes injects for a Service named `tollgate` with port 4180 (`http`).
const KUBERNETES_SERVICE_VARIABLES: &[(&str, &str)] = &[
    ("TOLLGATE_SERVICE_HOST", "10.96.12.34"),
    ("TOLLGATE_SERVICE_PORT", "4180"),
    ("TOLLGATE_SERVICE_PORT_HTTP", "4180"),
    ("TOLLGATE_PORT", "tcp://10.96.12.34:4180"),
    ("TOLLGATE_PORT_4180_TCP", "tcp://10.96.12.34:4180"),
    ("TOLLGATE_PORT_4180_TCP_PROTO", "tcp"),
    ("TOLLGATE_PORT_4180_TCP_PORT", "4180"),
    ("TOLLGATE_PORT_4180_TCP_ADDR", "10.96.12.34"),
];

#[test]
fn kubernetes_service_variables_are_not_overrides() {
    let mut env = KUBERNETES_SERVICE_VARIABLES.to_vec();
    env.push(("TOLLGATE_LOG", "debug"));
    // A Service named `tollgate-session--redis` (two hyphens): its links hold `__`, and read
    // as overrides were unknown keys that stopped every start.
    env.push(("TOLLGATE_SESSION__REDIS_SERVICE_HOST", "10.96.0.7"));
    env.push(("TOLLGATE_SESSION__REDIS_PORT_6379_TCP_ADDR", "10.96.0.7"));
    assert_eq!(problems(PROVIDER, &env), Vec::<String>::new());
    env.push(("TOLLGATE_PROVIDER__0__CLIENT_ID", "from-env"));
    let env: BTreeMap<String, String> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    assert_eq!(
        load(PROVIDER, &env).unwrap().providers[0].client_id,
        "from-env"
    );
}

#[test]
fn an_unknown_key_inside_a_section_is_still_an_error_naming_the_variable() {
    let mut env = KUBERNETES_SERVICE_VARIABLES.to_vec();
    env.push(("TOLLGATE_SESSION__NOPE", "1"));
    assert_eq!(
        problems(PROVIDER, &env),
        ["session.nope: unknown key (set by TOLLGATE_SESSION__NOPE)"]
    );
    assert_eq!(
        problems(
            PROVIDER,
            &[
                ("TOLLGATE_TELEMETRY__OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                ("TOLLGATE_TELEMETRY__NOPE", "1")
            ]
        ),
        ["telemetry.nope: unknown key (set by TOLLGATE_TELEMETRY__NOPE)"]
    );
}

#[test]
fn telemetry_section_sets_the_traces_url_and_the_service_name() {
    let env: BTreeMap<String, String> = BTreeMap::new();
    assert!(load(PROVIDER, &env).unwrap().telemetry.is_none());
    for (endpoint, traces) in [
        ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
        ("http://collector:4318/", "http://collector:4318/v1/traces"),
        (
            "https://otel.example.com/otlp/",
            "https://otel.example.com/otlp/v1/traces",
        ),
    ] {
        let config = load(
            &format!("[telemetry]\notlp_endpoint = \"{endpoint}\"\n{PROVIDER}"),
            &env,
        )
        .unwrap();
        let telemetry = config.telemetry.unwrap();
        assert_eq!(telemetry.traces_url.as_str(), traces);
        assert_eq!(telemetry.service_name, "tollgate");
    }
    let env: BTreeMap<String, String> = [
        ("TOLLGATE_TELEMETRY__OTLP_ENDPOINT", "http://127.0.0.1:4318"),
        ("TOLLGATE_TELEMETRY__SERVICE_NAME", "edge"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    assert_eq!(
        load(PROVIDER, &env)
            .unwrap()
            .telemetry
            .unwrap()
            .service_name,
        "edge"
    );
}

#[test]
fn telemetry_section_refuses_what_is_not_a_collector_url() {
    assert_eq!(
        problems(
            &format!("[telemetry]\nservice_name = \"x\"\n{PROVIDER}"),
            &[]
        ),
        ["telemetry.otlp_endpoint: is required"]
    );
    assert_eq!(
        problems(
            &format!("[telemetry]\notlp_endpoint = \"grpc://c:4317\"\n{PROVIDER}"),
            &[]
        ),
        ["telemetry.otlp_endpoint: `grpc://c:4317` must be an http or https URL"]
    );
    assert_eq!(
        problems(
            &format!("[telemetry]\notlp_endpoint = \"http://c:4318/?x=1\"\n{PROVIDER}"),
            &[]
        ),
        [
            "telemetry.otlp_endpoint: must be the collector's base URL, without a query or \
             fragment"
        ]
    );
    assert_eq!(
        problems(
            &format!(
                "[telemetry]\notlp_endpoint = \"http://c:4318\"\nservice_name = \" \"\n{PROVIDER}"
            ),
            &[]
        ),
        ["telemetry.service_name: must not be empty"]
    );
    // The exporter drops a URL's credentials: every export would be refused.
    assert_eq!(
        problems(
            &format!("[telemetry]\notlp_endpoint = \"https://u:pw@c:4318\"\n{PROVIDER}"),
            &[]
        ),
        [
            "telemetry.otlp_endpoint: must not hold a user name or password, which the exporter \
             does not send (give credentials in OTEL_EXPORTER_OTLP_HEADERS)"
        ]
    );
}

#[test]
fn durations_and_defaults() {
    let config = load(
        &format!("[session]\nlifetime = \"90m\"\n{PROVIDER}"),
        &BTreeMap::new(),
    )
    .unwrap();
    assert_eq!(config.session.lifetime, Duration::from_secs(5400));
    assert_eq!(config.server.leeway, Duration::from_secs(60));
    assert_eq!(
        config.providers[0].jwks_refetch_interval,
        Duration::from_secs(10)
    );
    assert_eq!(config.providers[0].timeout, Duration::from_secs(15));
    let quick = load(&format!("{PROVIDER}timeout = \"2s\"\n"), &BTreeMap::new()).unwrap();
    assert_eq!(quick.providers[0].timeout, Duration::from_secs(2));
    check_problem(
        &format!("{PROVIDER}timeout = \"0s\"\n"),
        &[],
        "provider[0].timeout:",
    );
    assert!(
        config
            .server
            .trusted_proxies
            .iter()
            .any(|net| net.contains(&"127.0.0.1".parse::<std::net::IpAddr>().unwrap()))
    );
}

#[test]
fn upstream_request_targets_keep_the_upstream_path_and_the_request_query() {
    let at_root = Upstream::new(Url::parse("http://127.0.0.1:8080/").unwrap(), None).unwrap();
    let path = |text: &'static str| axum::http::uri::PathAndQuery::from_static(text);
    assert_eq!(
        at_root.request_target(Some(&path("/a/b?x=1&y"))).unwrap(),
        "/a/b?x=1&y"
    );
    assert_eq!(at_root.request_target(None).unwrap(), "/");
    assert_eq!(at_root.address(), "127.0.0.1:8080");
    assert_eq!(at_root.authority(), "127.0.0.1:8080");
    let below = Upstream::new(Url::parse("http://app.internal/base/").unwrap(), None).unwrap();
    assert_eq!(
        below.request_target(Some(&path("/a?x=1"))).unwrap(),
        "/base/a?x=1"
    );
    assert_eq!(below.request_target(None).unwrap(), "/base/");
    assert_eq!(below.address(), "app.internal:80");
    assert_eq!(below.authority(), "app.internal");
    let ipv6 = Upstream::new(Url::parse("http://[::1]:9000").unwrap(), None).unwrap();
    assert_eq!(ipv6.address(), "[::1]:9000");
    assert_eq!(ipv6.to_string(), "http://[::1]:9000/");
    assert_ne!(ipv6.id(), below.id(), "each upstream has its own pool");
}

#[test]
fn max_id_token_age_defaults_to_ten_minutes_and_is_validated() {
    let config = load(PROVIDER, &BTreeMap::new()).unwrap();
    assert_eq!(
        config.providers[0].max_id_token_age,
        Duration::from_secs(600)
    );
    let config = load(
        &format!("{PROVIDER}max_id_token_age = \"2h\""),
        &BTreeMap::new(),
    )
    .unwrap();
    assert_eq!(
        config.providers[0].max_id_token_age,
        Duration::from_secs(7200)
    );
    check_problem(
        &format!("{PROVIDER}max_id_token_age = \"a week\""),
        &[],
        "provider[0].max_id_token_age:",
    );
    check_problem(
        &format!("{PROVIDER}max_id_token_age = \"0s\""),
        &[],
        "provider[0].max_id_token_age:",
    );
}

#[test]
fn the_redis_key_prefix_defaults_to_tollgate_and_is_validated() {
    let redis = "[session]\nstore = \"redis\"\nredis_url = \"redis://127.0.0.1:6379\"\n";
    let config = load(redis, &BTreeMap::new()).unwrap_or_else(|problems| panic!("{problems:?}"));
    assert_eq!(config.session.redis_key_prefix, "tollgate:");
    let config = load(
        &format!("{redis}redis_key_prefix = \"staging/tollgate:\""),
        &BTreeMap::new(),
    )
    .unwrap_or_else(|problems| panic!("{problems:?}"));
    assert_eq!(config.session.redis_key_prefix, "staging/tollgate:");
    for bad in ["", "with space:", "{tag}:", &"x".repeat(65)] {
        check_problem(
            &format!("{redis}redis_key_prefix = \"{bad}\""),
            &[],
            "session.redis_key_prefix: must be",
        );
    }
    check_problem(
        "[session]\nredis_key_prefix = \"a:\"",
        &[],
        "session.redis_key_prefix: only used",
    );
}

#[test]
fn grpc_listen_is_an_address_and_also_comes_from_the_environment() {
    let section = |value: &str| {
        format!(
            "[session]\nsecrets = [\"0123456789abcdef0123456789abcdef\"]\n{PROVIDER}[forward_auth]\nprovider = \"corp\"\n{value}"
        )
    };
    check_problem(
        &section("grpc_listen = \"port 9191\""),
        &[],
        "forward_auth.grpc_listen: `port 9191` is not an address",
    );
    let config = load(
        &section("grpc_listen = \"127.0.0.1:9191\""),
        &BTreeMap::new(),
    )
    .unwrap();
    assert_eq!(
        config.forward_auth.unwrap().grpc_listen,
        Some("127.0.0.1:9191".parse().unwrap())
    );
    let env = BTreeMap::from([(
        "TOLLGATE_FORWARD_AUTH__GRPC_LISTEN".to_owned(),
        "0.0.0.0:9292".to_owned(),
    )]);
    let overridden = load(&section(""), &env).unwrap();
    assert_eq!(
        overridden.forward_auth.unwrap().grpc_listen,
        Some("0.0.0.0:9292".parse().unwrap())
    );
    assert_eq!(
        load(&section(""), &BTreeMap::new())
            .unwrap()
            .forward_auth
            .unwrap()
            .grpc_listen,
        None
    );
}

#[test]
fn tls_files_come_in_pairs_and_must_hold_a_certificate_and_its_key() {
    check_problem(
        "[server]\ntls_cert_file = \"/etc/tollgate/tls.crt\"",
        &[],
        "server.tls_key_file: required with server.tls_cert_file",
    );
    check_problem(
        "[server]\ntls_key_file = \"/etc/tollgate/tls.key\"",
        &[],
        "server.tls_cert_file: required with server.tls_key_file",
    );
    check_problem(
        "[server]\ntls_cert_file = \"/nonexistent/tls.crt\"\ntls_key_file = \"/nonexistent/tls.key\"",
        &[],
        "server.tls_cert_file: cannot read `/nonexistent/tls.crt`",
    );
    // A file that is no PEM certificate.
    let not_pem = std::env::temp_dir().join(format!("tollgate-not-pem-{}", std::process::id()));
    std::fs::write(&not_pem, "secret words, not a certificate\n").unwrap();
    let found = problems(
        &format!(
            "[server]\ntls_cert_file = \"{0}\"\ntls_key_file = \"{0}\"",
            not_pem.display()
        ),
        &[],
    );
    assert!(
        found
            .iter()
            .any(|problem| problem.starts_with("server.tls_cert_file:")
                && problem.ends_with("holds no usable PEM certificate")),
        "{found:?}"
    );
    // No problem quotes the file's content.
    assert!(!found.iter().any(|problem| problem.contains("secret words")));
    let _ = std::fs::remove_file(&not_pem);
}

#[test]
fn upstream_ca_file_belongs_to_https_upstreams() {
    let route = |upstream: &str, ca: &str| {
        format!(
            "{PROVIDER}\n[session]\nsecrets = [\"0123456789abcdef0123456789abcdef\"]\n\
             [[route]]\nupstream = \"{upstream}\"\nprovider = \"corp\"\n{ca}"
        )
    };
    check_problem(
        &route(
            "http://127.0.0.1:9000",
            "upstream_ca_file = \"/etc/ssl/certs/ca-certificates.crt\"",
        ),
        &[],
        "route[0].upstream_ca_file: only used with an https upstream",
    );
    check_problem(
        &route(
            "https://app.internal",
            "upstream_ca_file = \"/nonexistent/ca.pem\"",
        ),
        &[],
        "route[0].upstream_ca_file: cannot read `/nonexistent/ca.pem`",
    );
    // An https upstream is accepted, verified against the system roots.
    let config = load(
        &route("https://app.internal:8443/base", ""),
        &BTreeMap::new(),
    )
    .unwrap_or_else(|problems| panic!("{problems:?}"));
    let upstream = &config.routes[0].upstream;
    assert_eq!(upstream.address(), "app.internal:8443");
    let tls = upstream.tls().expect("TLS for an https upstream");
    assert_eq!(tls.server_name.to_str(), "app.internal");
    assert_eq!(
        tls.any_version.alpn_protocols,
        [b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    assert_eq!(tls.http1_only.alpn_protocols, [b"http/1.1".to_vec()]);
    let plain = load(&route("http://app.internal", ""), &BTreeMap::new()).unwrap();
    assert!(plain.routes[0].upstream.tls().is_none());
    // Never an https upstream without TLS, nor TLS to an http one.
    assert!(Upstream::new(Url::parse("https://app.internal").unwrap(), None).is_none());
    assert!(
        Upstream::new(
            Url::parse("http://app.internal").unwrap(),
            Some(tls.clone())
        )
        .is_none()
    );
}

#[test]
fn max_connections_is_a_whole_number_from_one_and_may_come_from_the_environment() {
    let server = |extra: &str, env: &[(&str, &str)]| {
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        load(&format!("[server]\n{extra}\n{PROVIDER}"), &env).map(|config| config.server)
    };
    assert_eq!(server("", &[]).unwrap().max_connections, 10_000);
    assert_eq!(
        server("max_connections = 64", &[]).unwrap().max_connections,
        64
    );
    assert_eq!(
        server("", &[("TOLLGATE_SERVER__MAX_CONNECTIONS", "512")])
            .unwrap()
            .max_connections,
        512
    );
    for bad in [
        "max_connections = 0",
        "max_connections = -3",
        "max_connections = \"many\"",
        // Beyond what a Tokio semaphore holds: `serve` would panic on its first connection.
        "max_connections = 3000000000000000000",
    ] {
        check_problem(
            &format!("[server]\n{bad}\n{PROVIDER}"),
            &[],
            "server.max_connections: must be a whole number of connections, at least 1",
        );
    }
}

#[test]
fn a_route_under_envoys_endpoint_is_refused_while_forward_auth_is_on() {
    let config = |prefix: &str, forward_auth: bool| {
        format!(
            "[session]\nsecrets = [\"0123456789abcdef0123456789abcdef\"]\n{PROVIDER}\n{}\
             [[route]]\npath_prefix = \"{prefix}\"\nupstream = \"http://app\"\nprovider = \"corp\"\n",
            if forward_auth {
                "[forward_auth]\nprovider = \"corp\"\n"
            } else {
                ""
            }
        )
    };
    for prefix in ["/envoy", "/envoy/", "/envoy/admin"] {
        check_problem(&config(prefix, true), &[], "route[0].path_prefix: `/envoy");
        assert!(problems(&config(prefix, false), &[]).is_empty(), "{prefix}");
    }
    for prefix in ["/", "/envoyage", "/app/envoy"] {
        assert!(problems(&config(prefix, true), &[]).is_empty(), "{prefix}");
    }
}

#[test]
fn redis_ca_file_belongs_to_a_redis_url_over_tls() {
    let ca = std::env::temp_dir().join("tollgate-config-tests-redis-ca.pem");
    std::fs::write(&ca, "not read as PEM until a link is built").unwrap();
    // `redis_url` as TOML: a string, or a list for a Cluster.
    let session = |redis_url: &str| {
        format!(
            "[session]\nstore = \"redis\"\nredis_url = {redis_url}\nredis_ca_file = \"{}\"",
            ca.display()
        )
    };
    for url in [
        r#""rediss://127.0.0.1:6380""#,
        r#""rediss+sentinel://127.0.0.1:26379/mymaster""#,
        r#"["rediss://127.0.0.1:7000", "rediss://127.0.0.1:7001"]"#,
    ] {
        let config =
            load(&session(url), &BTreeMap::new()).unwrap_or_else(|problems| panic!("{problems:?}"));
        assert!(config.session.redis_ca.is_some(), "{url}");
    }
    // A server, Cluster node or Sentinel reached without TLS: nothing would use the file.
    for url in [
        r#""redis://127.0.0.1:6379""#,
        r#""redis+sentinel://127.0.0.1:26379/mymaster""#,
        r#"["rediss://127.0.0.1:7000", "redis://127.0.0.1:7001"]"#,
    ] {
        check_problem(
            &session(url),
            &[],
            "session.redis_ca_file: only used with a rediss:// (every Cluster node's) or \
             rediss+sentinel:// redis_url",
        );
    }
    check_problem(
        &format!("[session]\nredis_ca_file = \"{}\"", ca.display()),
        &[],
        "session.redis_ca_file: only used with",
    );
}

/// `sub` is `<source>:<identity>`, and `source` defaults to `local`: a source that would name
/// an upstream user, a local user or a machine client alike is refused, so none can be taken
/// for another.
#[test]
fn one_source_never_names_two_kinds_of_identity_alike() {
    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
    const SECRET: &str = "a-session-secret-of-at-least-32-bytes-long";
    let config = |clients: &str| {
        format!(
            "[session]\nsecrets = [\"{SECRET}\"]\n\
             [[provider]]\nname = \"corp\"\nissuer = \"https://corp.example\"\nclient_id = \"x\"\n\
             client_auth = \"none\"\n\
             [[provider]]\nname = \"partner\"\nissuer = \"https://partner.example\"\n\
             client_id = \"x\"\nclient_auth = \"none\"\n\
             [token_service]\nissuer = \"https://issuer.example\"\n\
             [[token_service.user]]\nusername = \"admin\"\npassword_hash = \"{HASH}\"\n{clients}"
        )
    };
    let client = |id: &str, grants: &str, extra: &str| {
        let secret = if grants.contains("client_credentials") {
            format!("client_secret_hash = \"{HASH}\"\n")
        } else {
            "redirect_uris = [\"https://app.example/cb\"]\n".to_owned()
        };
        format!(
            "[[token_service.client]]\nclient_id = \"{id}\"\ngrants = [{grants}]\n{secret}{extra}\n"
        )
    };
    let code = "\"authorization_code\"";
    let machine = "\"client_credentials\"";
    let local = client("local-app", code, "");
    let corp = |id: &str, source: &str| {
        client(
            id,
            code,
            &format!("login_provider = \"corp\"\nsource = \"{source}\""),
        )
    };
    let partner = client(
        "partner-app",
        code,
        "login_provider = \"partner\"\nsource = \"aad\"",
    );
    let refused = |clients: String, expected: &str| {
        check_problem(&config(&clients), &[], expected);
    };
    refused(
        format!("{local}{}", corp("corp-app", "local")),
        "token_service.client[1].source: `local` would name the users of provider `corp` and \
         the local users of client `local-app` alike",
    );
    refused(
        format!("{}{partner}", corp("corp-app", "aad")),
        "token_service.client[1].source: `aad` would name the users of provider `partner`",
    );
    refused(
        format!("{local}{}", client("admin", machine, "")),
        "token_service.client[1].source: `local` would name the machine client `admin`",
    );
    refused(
        format!(
            "{}{}",
            corp("corp-app", "aad"),
            client("robot", machine, "source = \"aad\"")
        ),
        "token_service.client[1].source: `aad` would name the machine client `robot`",
    );
    // One kind each, or one upstream provider's users through two clients: no clash.
    let apart = format!(
        "{local}{}{}{}{}",
        corp("corp-app", "aad"),
        corp("corp-admin", "aad"),
        client("robot", machine, ""),
        client(
            "partner-app",
            code,
            "login_provider = \"partner\"\nsource = \"partner\""
        )
    );
    assert_eq!(problems(&config(&apart), &[]), Vec::<String>::new());
}

/// SPEC §3: a list is a Redis Cluster's seed nodes, a list of one too (a Service in front of
/// the Cluster); a string is one server or a Sentinel URL.
#[test]
fn a_redis_url_list_of_one_node_is_a_cluster() {
    let target = |value: &str| {
        let text = format!(
            "[session]\nsecrets = [\"a-session-secret-of-at-least-32-bytes-long\"]\n\
             store = \"redis\"\nredis_url = {value}\n"
        );
        load(&text, &BTreeMap::new()).map(|config| config.session.redis)
    };
    assert!(matches!(
        target("[\"redis://redis-cluster:6379\"]"),
        Ok(Some(crate::config::RedisTarget::Cluster(nodes))) if nodes == ["redis://redis-cluster:6379"]
    ));
    assert!(matches!(
        target("\"redis://redis:6379\""),
        Ok(Some(crate::config::RedisTarget::Standalone(_)))
    ));
    // Said, since a template that makes lists writes one server so too.
    let one = load(
        "[session]\nsecrets = [\"a-session-secret-of-at-least-32-bytes-long\"]\n\
         store = \"redis\"\nredis_url = [\"redis://redis:6379\"]\n",
        &BTreeMap::new(),
    )
    .unwrap();
    assert!(
        super::warnings(&one)
            .iter()
            .any(|warning| warning.starts_with("session.redis_url: a list of one node")),
        "{:?}",
        super::warnings(&one)
    );
    check_problem(
        "[session]\nsecrets = [\"a-session-secret-of-at-least-32-bytes-long\"]\n\
         store = \"redis\"\nredis_url = [\"redis+sentinel://s1:26379/m\"]\n",
        &[],
        "session.redis_url: a list names a Redis Cluster's nodes",
    );
}

#[test]
fn a_sentinel_password_may_hold_slashes() {
    let target = crate::config::RedisTarget::parse(&[
        "redis+sentinel://:a/b/TopSecret@s1:26379,s2:26380/mymaster/2".to_owned(),
    ])
    .unwrap();
    let crate::config::RedisTarget::Sentinel {
        sentinels,
        service,
        auth,
    } = target
    else {
        panic!("not a Sentinel target: {target:?}");
    };
    assert_eq!(sentinels, ["redis://s1:26379", "redis://s2:26380"]);
    assert_eq!(service, "mymaster");
    assert_eq!(auth.db, 2);
    assert_eq!(
        auth.password
            .as_ref()
            .map(|password| password.expose().as_str()),
        Some("a/b/TopSecret")
    );
}

#[test]
fn a_duration_longer_than_ten_years_is_refused() {
    for (section, key) in [
        ("server", "keepalive_timeout"),
        ("server", "header_read_timeout"),
        ("session", "idle_timeout"),
    ] {
        check_problem(
            &format!("[{section}]\n{key} = \"300000000000y\"\n{PROVIDER}"),
            &[],
            &format!(
                "{section}.{key}: `300000000000y` is longer than any duration Tollgate takes (3650 days)"
            ),
        );
    }
    let config = load(
        &format!("[server]\nkeepalive_timeout = \"3650d\"\n{PROVIDER}"),
        &BTreeMap::new(),
    )
    .expect("ten years is taken");
    assert_eq!(
        config.server.keepalive_timeout,
        std::time::Duration::from_secs(3650 * 86_400)
    );
}

#[test]
fn a_redis_url_with_a_fragment_is_refused_and_no_password_is_shown_in_debug() {
    for url in [
        "rediss://:TopSecret@redis.example:6380#insecure",
        "rediss+sentinel://:TopSecret@s1:26379/mymaster#insecure",
    ] {
        let refused = crate::config::RedisTarget::parse(&[url.to_owned()])
            .expect_err("a fragment is refused");
        assert!(refused.contains("fragment"), "{refused}");
        assert!(!refused.contains("TopSecret"), "{refused}");
    }
    assert!(
        crate::config::RedisTarget::parse(&[
            "rediss://a:6379".to_owned(),
            "rediss://b:6379#insecure".to_owned(),
        ])
        .is_err(),
        "nor in a Cluster node"
    );
    for url in [
        "redis://:TopSecret@redis.example:6379/2",
        "redis+sentinel://:TopSecret@s1:26379/mymaster",
        "redis+unix:///run/redis.sock?pass=TopSecret",
    ] {
        let target = crate::config::RedisTarget::parse(&[url.to_owned()]).unwrap();
        let shown = format!("{target:?}");
        assert!(!shown.contains("TopSecret"), "{shown}");
        assert!(
            ["s1:26379", "redis.example:6379", "/run/redis.sock"]
                .iter()
                .any(|place| shown.contains(place)),
            "{shown}"
        );
    }
    let cluster = crate::config::RedisTarget::parse(&[
        "redis://:TopSecret@a:6379".to_owned(),
        "redis://:TopSecret@b:6379".to_owned(),
    ])
    .unwrap();
    assert!(!format!("{cluster:?}").contains("TopSecret"));
}

#[test]
fn a_user_named_twice_is_refused() {
    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
    let user = |name: &str| {
        format!("[[token_service.user]]\nusername = \"{name}\"\npassword_hash = \"{HASH}\"\n")
    };
    let config = |users: &str| {
        format!(
            "[session]\nsecrets = [\"a-session-secret-of-at-least-32-bytes-long\"]\n{PROVIDER}\n\
             [token_service]\nissuer = \"https://issuer.example\"\n{users}"
        )
    };
    check_problem(
        &config(&[user("admin"), user("ops"), user("admin")].concat()),
        &[],
        "token_service.user[2].username: `admin` is used by an earlier user",
    );
    assert_eq!(
        problems(&config(&[user("admin"), user("ops")].concat()), &[]),
        Vec::<String>::new()
    );
}

#[test]
fn eleven_routes_may_come_from_the_environment_alone() {
    let mut env = BTreeMap::new();
    for index in 0..12 {
        for (key, value) in [
            ("PATH_PREFIX", format!("/app{index}")),
            ("UPSTREAM", format!("http://127.0.0.1:{}", 9000 + index)),
            ("PROVIDER", "corp".to_owned()),
        ] {
            env.insert(format!("TOLLGATE_ROUTE__{index}__{key}"), value);
        }
    }
    let config = load(
        &format!(
            "[session]\nsecrets = [\"a-session-secret-of-at-least-32-bytes-long\"]\n{PROVIDER}"
        ),
        &env,
    )
    .unwrap_or_else(|problems| panic!("{problems:?}"));
    let prefixes: Vec<String> = config
        .routes
        .iter()
        .map(|route| route.path_prefix.clone())
        .collect();
    assert_eq!(
        prefixes,
        (0..12)
            .map(|index| format!("/app{index}"))
            .collect::<Vec<_>>()
    );
}

#[test]
fn plain_links_outside_loopback_that_carry_keys_or_passwords_are_warned_about() {
    const SECRET: &str = "a-session-secret-of-at-least-32-bytes-long";
    let warned = |text: &str| {
        let config = load(text, &BTreeMap::new()).unwrap_or_else(|problems| panic!("{problems:?}"));
        warnings(&config)
    };
    let provider = |issuer: &str| {
        format!(
            "[[provider]]\nname = \"corp\"\nissuer = \"{issuer}\"\nclient_id = \"x\"\nclient_auth = \"none\"\n"
        )
    };
    let starts = |warnings: &[String], start: &str| warnings.iter().any(|w| w.starts_with(start));
    assert!(starts(
        &warned(&provider("http://idp.example.com/realms/corp")),
        "provider[0].issuer: plain http outside loopback"
    ));
    for quiet in [
        "http://127.0.0.1:8080/realms/corp",
        "http://LOCALHOST.:8080",
        "http://idp.localhost",
        "http://[::ffff:127.0.0.1]:8080",
        "http://localhost:8080",
        "https://idp.example.com",
    ] {
        assert_eq!(warned(&provider(quiet)), Vec::<String>::new(), "{quiet}");
    }
    let service = format!(
        "[session]\nsecrets = [\"{SECRET}\"]\n{}[token_service]\nissuer = \"http://auth.example.com\"\n",
        provider("https://idp.example.com")
    );
    assert!(starts(
        &warned(&service),
        "token_service.issuer: plain http outside loopback"
    ));
    let client = |redirect_uri: &str| {
        format!(
            "[session]\nsecrets = [\"{SECRET}\"]\n{}[token_service]\nissuer = \"https://auth.example.com\"\n[[token_service.client]]\nclient_id = \"app\"\ngrants = [\"authorization_code\"]\nredirect_uris = [\"{redirect_uri}\"]\n",
            provider("https://idp.example.com")
        )
    };
    assert!(starts(
        &warned(&client("http://app.example.com/cb")),
        "token_service.client[0].redirect_uris: `http://app.example.com/cb` is plain http"
    ));
    for quiet in [
        "https://app.example.com/cb",
        "http://127.0.0.1:9000/cb",
        "http://localhost/cb",
    ] {
        assert_eq!(warned(&client(quiet)), Vec::<String>::new(), "{quiet}");
    }
    let redis = |url: &str| {
        format!(
            "[session]\nsecrets = [\"{SECRET}\"]\nstore = \"redis\"\nredis_url = \"{url}\"\n{}",
            provider("https://idp.example.com")
        )
    };
    for in_clear in [
        "redis://:pw@redis.internal:6379",
        "redis+sentinel://:pw@s1.internal:26379/mymaster",
        "valkey://:pw@redis.internal:6379",
    ] {
        assert!(
            starts(
                &warned(&redis(in_clear)),
                "session.redis_url: the Redis password goes unencrypted"
            ),
            "{in_clear}"
        );
    }
    for quiet in [
        "redis://redis.internal:6379",
        "redis://:pw@127.0.0.1:6379",
        "redis://:pw@[::1]:6379",
        "redis://:pw@LocalHost:6379",
        "rediss://:pw@redis.internal:6380",
        "rediss+sentinel://:pw@s1.internal:26379/mymaster",
    ] {
        assert_eq!(warned(&redis(quiet)), Vec::<String>::new(), "{quiet}");
    }
}

#[test]
fn a_token_service_in_redis_needs_session_secrets() {
    let service = |secrets: &str| {
        format!(
            "[session]\n{secrets}redis_url = \"redis://127.0.0.1:6379\"\n{PROVIDER}\n\
             [token_service]\nissuer = \"https://issuer.example\"\nstore = \"redis\"\n"
        )
    };
    check_problem(
        &service(""),
        &[],
        "session.secrets: token_service.store = \"redis\" needs session secrets",
    );
    assert_eq!(
        problems(
            &service("secrets = [\"a-session-secret-of-at-least-32-bytes-long\"]\n"),
            &[]
        ),
        Vec::<String>::new()
    );
}

/// Every address Tollgate builds appends to `public_url`: with a query,
/// `https://auth.example.com/?x=1` made the redirect URI `https://auth.example.com/?x=1/callback`.
#[test]
fn public_url_has_no_query_fragment_or_credentials() {
    for public_url in [
        "https://auth.example.com/?x=1",
        "https://auth.example.com/#top",
        "https://user@auth.example.com",
        "https://user:pass@auth.example.com",
    ] {
        check_problem(
            &format!("[server]\npublic_url = \"{public_url}\"\n{PROVIDER}"),
            &[],
            "server.public_url: must not have a query",
        );
    }
    assert_eq!(
        problems(
            &format!("[server]\npublic_url = \"https://auth.example.com/tollgate\"\n{PROVIDER}"),
            &[]
        ),
        Vec::<String>::new()
    );
}

/// An override made from a file (`kubectl create secret --from-file`, then `secretKeyRef`)
/// ends with its line end, which a `_env` secret drops: an admin token or a client secret
/// given by override kept it, and never matched.
#[test]
fn an_override_drops_the_line_end_of_the_file_it_was_made_from() {
    for value in [
        "an-admin-token-of-many-characters\n",
        "an-admin-token-of-many-characters\r\n",
    ] {
        let env: BTreeMap<String, String> =
            [("TOLLGATE_SERVER__ADMIN_TOKEN".to_owned(), value.to_owned())].into();
        let config = load(PROVIDER, &env).unwrap();
        assert_eq!(
            config.server.admin_token.unwrap().expose(),
            "an-admin-token-of-many-characters"
        );
    }
}

/// An issuer with a query or fragment can never be discovered (OpenID Connect Discovery §3),
/// and one with a user name or password was logged with each failed discovery (reqwest's error
/// names the URL) and, for the token service, published in every token's `iss`.
#[test]
fn an_issuer_has_no_query_fragment_or_credentials() {
    for issuer in [
        "https://login.example.com/?tenant=1",
        "https://login.example.com/#x",
        "https://user@login.example.com",
        "https://user:SECRETPASS@login.example.com",
    ] {
        let found = problems(&PROVIDER.replace("https://login.example.com", issuer), &[]);
        assert!(
            found.iter().any(|problem| problem
                .contains("provider[0].issuer: must not have a query, a fragment, or a user")),
            "{issuer}: {found:?}"
        );
        assert!(found.iter().all(|problem| !problem.contains("SECRETPASS")));
        let found = problems(
            &format!("{PROVIDER}[token_service]\nissuer = \"{issuer}\"\n"),
            &[],
        );
        assert!(
            found.iter().any(|problem| problem
                .contains("token_service.issuer: must not have a query, a fragment, or a user")),
            "{issuer}: {found:?}"
        );
    }
}

/// A provider naming the token service is served in-process, and its tokens' `iss` (and RFC
/// 9207's at the callback) are compared with its `issuer` string: with a trailing slash that
/// the token service's tokens never carry, every login and bearer token failed as a mix-up.
#[test]
fn a_provider_naming_the_token_service_writes_its_issuer_as_the_tokens_do() {
    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
    const SECRET: &str = "a-session-secret-of-at-least-32-bytes-long";
    let config = |provider_issuer: &str| {
        format!(
            "[session]\nsecrets = [\"{SECRET}\"]\n\
             [[provider]]\nname = \"own\"\nissuer = \"{provider_issuer}\"\nclient_id = \"app\"\n\
             client_auth = \"none\"\n\
             [token_service]\nissuer = \"https://auth.example.com/tg\"\n\
             [[token_service.user]]\nusername = \"admin\"\npassword_hash = \"{HASH}\"\n\
             [[token_service.client]]\nclient_id = \"app\"\ngrants = [\"authorization_code\"]\n\
             redirect_uris = [\"https://app.example/cb\"]\n"
        )
    };
    check_problem(
        &config("https://auth.example.com/tg/"),
        &[],
        "provider[0].issuer: names the token service, whose tokens say `iss` = `https://auth.example.com/tg`",
    );
    assert_eq!(
        problems(&config("https://auth.example.com/tg"), &[]),
        Vec::<String>::new()
    );
}

/// A note above the secrets in a secrets file or variable was taken as the first secret, the
/// one that seals, when it was 32 characters or more: a known text sealed every session.
#[test]
fn a_comment_among_the_session_secrets_is_refused_not_taken_as_one() {
    let text = "# newest first; each one at least 32 characters long\n\
                k8Hq+Wz/0123456789abcdefghijklmnopqrstuv=\n";
    check_problem(
        &format!("[session]\nsecrets_env = \"SESSION_SECRETS\"\n{PROVIDER}"),
        &[("SESSION_SECRETS", text)],
        "session.secrets[0]: starts with `#`",
    );
    assert_eq!(
        problems(
            &format!("[session]\nsecrets_env = \"SESSION_SECRETS\"\n{PROVIDER}"),
            &[(
                "SESSION_SECRETS",
                "k8Hq+Wz/0123456789abcdefghijklmnopqrstuv=\n"
            )]
        ),
        Vec::<String>::new()
    );
}

#[test]
fn an_idle_timeout_the_cookie_store_cannot_honour_is_warned_about() {
    const SECRET: &str = "a-session-secret-of-at-least-32-bytes-long";
    let warned = |session: &str, env: &[(&str, &str)]| {
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let text = format!("[session]\nsecrets = [\"{SECRET}\"]\n{session}{PROVIDER}");
        let config = load(&text, &env).unwrap_or_else(|problems| panic!("{problems:?}"));
        warnings(&config)
            .into_iter()
            .filter(|warning| warning.starts_with("session.idle_timeout: "))
            .count()
    };
    assert_eq!(warned("idle_timeout = \"1h\"\n", &[]), 1);
    assert_eq!(
        warned("store = \"cookie\"\nidle_timeout = \"30m\"\n", &[]),
        1
    );
    assert_eq!(warned("", &[("TOLLGATE_SESSION__IDLE_TIMEOUT", "5m")]), 1);
    // Left at its default, or set where a store keeps the session: nothing to say.
    assert_eq!(warned("", &[]), 0);
    assert_eq!(
        warned("store = \"memory\"\nidle_timeout = \"1h\"\n", &[]),
        0
    );
}

#[test]
fn route_upgrades_are_protocol_names_and_never_h2c() {
    let route = |upgrades: &str| {
        format!(
            "[[route]]\nupstream = \"http://127.0.0.1:9\"\nprovider = \"corp\"\n{upgrades}\n[session]\nsecrets = [\"0123456789abcdef0123456789abcdef\"]\n{PROVIDER}"
        )
    };
    let loaded = |upgrades: &str| {
        load(&route(upgrades), &BTreeMap::new())
            .unwrap_or_else(|problems| panic!("{problems:?}"))
            .routes[0]
            .upgrades
            .clone()
    };
    assert_eq!(loaded(""), ["websocket"]);
    assert_eq!(
        loaded("upgrades = [\"WebSocket\", \"SPDY/3.1\", \"websocket\"]"),
        ["websocket", "spdy/3.1"]
    );
    assert_eq!(loaded("upgrades = []"), Vec::<String>::new());
    check_problem(
        &route("upgrades = [\"h2c\"]"),
        &[],
        "route[0].upgrades[0]: h2c is never passed on",
    );
    for bad in ["", "web socket", "a/b/c", "x,y"] {
        check_problem(
            &route(&format!("upgrades = [\"{bad}\"]")),
            &[],
            "route[0].upgrades[0]: must be a protocol name",
        );
    }
}

/// A session cookie name beyond 64 characters is refused: its chunks' values run near a
/// browser's 4 096 bytes a cookie (`session::CHUNK_SIZE`), and a cookie past them is dropped
/// without a word, every sign-in looping; 64 keeps a margin.
#[test]
fn a_session_cookie_name_longer_than_64_characters_is_refused() {
    let with_name = |name: &str| {
        format!(
            "[session]\ncookie_name = \"{name}\"\nsecrets = [\"0123456789abcdef0123456789abcdef\"]\n{PROVIDER}[forward_auth]\nprovider = \"corp\"\n"
        )
    };
    check_problem(
        &with_name(&"n".repeat(65)),
        &[],
        "session.cookie_name: must be at most 64 characters",
    );
    assert_eq!(
        problems(&with_name(&"n".repeat(64)), &[]),
        Vec::<String>::new()
    );
}

#[test]
fn a_host_route_taking_a_hostless_routes_requirements_away_is_warned_about() {
    let warned = |routes: &str| {
        let text = format!(
            "{routes}\n[session]\nsecrets = [\"0123456789abcdef0123456789abcdef\"]\n{PROVIDER}"
        );
        let config =
            load(&text, &BTreeMap::new()).unwrap_or_else(|problems| panic!("{problems:?}"));
        warnings(&config)
            .into_iter()
            .filter(|warning| warning.contains("a route naming the host wins"))
            .collect::<Vec<_>>()
    };
    let admin = "[[route]]\npath_prefix = \"/admin\"\nupstream = \"http://127.0.0.1:9\"\nprovider = \"corp\"\n[route.require]\ngroups = [\"admin\"]\n";
    let host = |prefix: &str| {
        format!(
            "[[route]]\nhost = \"app.example.com\"\npath_prefix = \"{prefix}\"\nupstream = \"http://127.0.0.1:9\"\nprovider = \"corp\"\n"
        )
    };
    let shadowed = warned(&format!("{admin}{}", host("/")));
    assert_eq!(shadowed.len(), 1, "{shadowed:?}");
    assert!(
        shadowed[0]
            .starts_with("route[0].require: does not hold on app.example.com, where route[1]"),
        "{}",
        shadowed[0]
    );
    assert_eq!(warned(&format!("{admin}{}", host("/admin"))).len(), 1);
    let part = warned(&format!("{admin}{}", host("/admin/reports")));
    assert_eq!(part.len(), 1, "some of its paths: {part:?}");
    assert!(
        part[0].contains("takes the requests under \"/admin/reports\""),
        "{}",
        part[0]
    );
    // The host's routes cover other paths only, require the same, or the route requires
    // nothing: nothing to say.
    assert!(warned(&format!("{admin}{}", host("/app"))).is_empty());
    assert!(warned(&format!("{admin}{}", host("/adm"))).is_empty());
    assert!(
        warned(&format!(
            "{admin}{}[route.require]\ngroups = [\"admin\"]\n",
            host("/")
        ))
        .is_empty()
    );
    // The same requirements, but anonymous requests forwarded unchecked: warned about.
    assert_eq!(
        warned(&format!(
            "{admin}{}on_unauthenticated = \"pass\"\n[route.require]\ngroups = [\"admin\"]\n",
            host("/")
        ))
        .len(),
        1
    );
    assert!(
        warned(&format!(
            "[[route]]\npath_prefix = \"/admin\"\nupstream = \"http://127.0.0.1:9\"\nprovider = \"corp\"\n{}",
            host("/")
        ))
        .is_empty()
    );
}

#[test]
fn zero_route_timeouts_are_problems() {
    let problems = |timeouts: &str| {
        let text = format!(
            "[[route]]\nupstream = \"http://127.0.0.1:9\"\nprovider = \"corp\"\n{timeouts}\n[session]\nsecrets = [\"0123456789abcdef0123456789abcdef\"]\n{PROVIDER}"
        );
        match load(&text, &BTreeMap::new()) {
            Ok(_) => Vec::new(),
            Err(problems) => problems
                .into_iter()
                .map(|problem| problem.to_string())
                .collect(),
        }
    };
    assert_eq!(
        problems("connect_timeout = \"0s\"\nread_timeout = \"0ms\""),
        [
            "route[0].connect_timeout: must be longer than zero",
            "route[0].read_timeout: must be longer than zero"
        ]
    );
    assert!(problems("connect_timeout = \"1ms\"\nread_timeout = \"1s\"").is_empty());
}
