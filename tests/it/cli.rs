//! The `tollgate` binary: `check` prints every problem with its key path and exits non-zero.

use std::process::Command;

fn tollgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
}

/// Writes a config file readable by its owner only, as one that holds secrets should be
/// (`check` warns about a readable one).
fn write(name: &str, text: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = crate::support::scratch_dir("cli").join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

#[test]
fn check_lists_every_problem_with_its_key_path() {
    let path = write(
        "bad.toml",
        r#"
[server]
listen = "nowhere"
bogus = 1
[session]
store = "redis"
lifetime = "forever"
[[provider]]
name = "corp"
issuer = "not a url"
client_id = "x"
scopes = ["email"]
[forward_auth]
provider = "missing"
"#,
    );
    let output = tollgate()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    for expected in [
        "server.listen:",
        "server.bogus: unknown key",
        "session.redis_url: is required",
        "session.lifetime:",
        "provider[0].issuer:",
        "provider[0].client_secret:",
        "provider[0].scopes:",
        "forward_auth.provider: no [[provider]] is named `missing`",
        "session.secrets:",
    ] {
        assert!(
            stderr.contains(expected),
            "missing `{expected}` in:\n{stderr}"
        );
    }
}

#[test]
fn check_accepts_a_valid_config_and_reads_secret_files_and_environment() {
    let secret = write("secret", "client-secret\n");
    let path = write(
        "good.toml",
        &format!(
            r#"
[session]
secrets_env = "TEST_SESSION_SECRETS"
[[provider]]
name = "corp"
issuer = "https://login.example.com"
client_id = "tollgate"
client_secret_file = "{}"
[forward_auth]
provider = "corp"
"#,
            secret.display()
        ),
    );
    let output = tollgate()
        .args(["check", "--config"])
        .arg(&path)
        .env("TEST_SESSION_SECRETS", "0123456789abcdef0123456789abcdef")
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let overridden = tollgate()
        .args(["check", "--config"])
        .arg(&path)
        .env("TEST_SESSION_SECRETS", "0123456789abcdef0123456789abcdef")
        .env("TOLLGATE_FORWARD_AUTH__UNAUTHENTICATED", "sometimes")
        .output()
        .unwrap();
    assert_eq!(overridden.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&overridden.stderr).contains("forward_auth.unauthenticated"));
}

/// SPEC §2: what Kubernetes injects into every pod of a namespace with a Service named
/// `tollgate` (port 4180, named `http`) never stops Tollgate; an unknown key inside a section
/// still does, naming the variable.
#[test]
fn check_ignores_kubernetes_service_variables_but_not_unknown_keys_in_a_section() {
    let path = write(
        "kubernetes.toml",
        r#"
[session]
secrets = ["0123456789abcdef0123456789abcdef"]
[[provider]]
name = "corp"
issuer = "https://login.example.com"
client_id = "tollgate"
client_auth = "none"
[forward_auth]
provider = "corp"
"#,
    );
    let check = |extra: &[(&str, &str)]| {
        let mut command = tollgate();
        command.args(["check", "--config"]).arg(&path);
        for (name, value) in [
            ("TOLLGATE_SERVICE_HOST", "10.96.12.34"),
            ("TOLLGATE_SERVICE_PORT", "4180"),
            ("TOLLGATE_SERVICE_PORT_HTTP", "4180"),
            ("TOLLGATE_PORT", "tcp://10.96.12.34:4180"),
            ("TOLLGATE_PORT_4180_TCP", "tcp://10.96.12.34:4180"),
            ("TOLLGATE_PORT_4180_TCP_PROTO", "tcp"),
            ("TOLLGATE_PORT_4180_TCP_PORT", "4180"),
            ("TOLLGATE_PORT_4180_TCP_ADDR", "10.96.12.34"),
        ]
        .iter()
        .chain(extra)
        {
            command.env(name, value);
        }
        command.output().unwrap()
    };
    let output = check(&[]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains("warning"),
        "Kubernetes' variables are not named"
    );
    // Spelt like an override of a section that does not exist: ignored (SPEC §2), but named.
    let output = check(&[("TOLLGATE_SESSON__STORE", "redis")]);
    assert_eq!(output.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("warning: TOLLGATE_SESSON__STORE: ignored: not an override"),
        "{stderr}"
    );
    let output = check(&[("TOLLGATE_SESSION__NOPE", "1")]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("session.nope: unknown key (set by TOLLGATE_SESSION__NOPE)"),
        "{stderr}"
    );
}

#[test]
fn version_and_help() {
    let version = tollgate().arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("tollgate "));
    let help = tollgate().arg("--help").output().unwrap();
    for command in ["serve", "demo", "check"] {
        assert!(String::from_utf8_lossy(&help.stdout).contains(command));
    }
}

#[test]
fn check_warns_about_trusting_everyone_and_plain_http_public_url() {
    let base = r#"
[session]
secrets = ["0123456789abcdef0123456789abcdef"]
[[provider]]
name = "corp"
issuer = "https://login.example.com"
client_id = "tollgate"
client_auth = "none"
[forward_auth]
provider = "corp"
"#;
    let run = |name: &str, server: &str| {
        let path = write(name, &format!("[server]\n{server}\n{base}"));
        let output = tollgate()
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "valid, with warnings");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let everyone = run("everyone.toml", "trusted_proxies = [\"0.0.0.0/0\"]");
    assert!(
        everyone.contains("warning: server.trusted_proxies"),
        "{everyone}"
    );
    let plain = run("plain.toml", "public_url = \"http://auth.example.com\"");
    assert!(plain.contains("warning: server.public_url"), "{plain}");
    let fine = run(
        "fine.toml",
        "public_url = \"https://auth.example.com\"\ntrusted_proxies = [\"10.0.0.0/8\"]",
    );
    assert!(!fine.contains("warning"), "{fine}");
}

/// A config file that gives secrets inline and that every user of the host may read (a 0644
/// `/etc/tollgate/config.toml`): `check` names the file and the secrets. A secret given as
/// `<key>_file` was warned about when its file was readable; one written into the config was
/// not.
#[test]
fn check_warns_about_a_readable_config_file_with_inline_secrets() {
    use std::os::unix::fs::PermissionsExt as _;
    let text = r#"
[server]
admin_token = "an-admin-token-for-the-cli-test"
[session]
secrets = ["0123456789abcdef0123456789abcdef"]
[[provider]]
name = "corp"
issuer = "https://login.example.com"
client_id = "tollgate"
client_secret = "inline-client-secret"
[forward_auth]
provider = "corp"
"#;
    let path = write("inline-secrets.toml", text);
    let check = |mode: u32| {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let output = tollgate()
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "valid, with warnings");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let readable = check(0o644);
    assert!(
        readable.contains("the config file gives secrets inline (server.admin_token, session.secrets, provider[0].client_secret)"),
        "{readable}"
    );
    assert!(readable.contains("readable by every user"), "{readable}");
    let kept = check(0o640);
    assert!(!kept.contains("warning"), "{kept}");
}

/// On a terminal `hash-secret` prompts and turns the echo off: the secret typed stayed on the
/// screen, in its scrollback and in session recordings.
#[test]
fn hash_secret_on_a_terminal_prompts_and_does_not_show_the_secret() {
    use std::io::{Read as _, Write as _};
    use std::sync::mpsc::RecvTimeoutError;
    // util-linux's `script` runs the command on a pseudo-terminal and copies what it shows.
    let mut child = Command::new("script")
        .args(["-qec"])
        .arg(format!("{} hash-secret", env!("CARGO_BIN_EXE_tollgate")))
        .arg("/dev/null")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script runs (util-linux)");
    let (mut input, mut output) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
    // What the terminal shows, byte by byte, read on a thread of its own.
    let (sender, shown_bytes) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut byte = [0_u8; 1];
        while output.read(&mut byte).is_ok_and(|read| read == 1) {
            if sender.send(byte[0]).is_err() {
                break;
            }
        }
    });
    // Typed once the prompt is up, as a person would; the pipe stays open until the answer is
    // in.
    let mut shown = Vec::new();
    while !String::from_utf8_lossy(&shown).contains("Secret to hash (not shown): ") {
        match shown_bytes.recv_timeout(std::time::Duration::from_secs(10)) {
            Ok(byte) => shown.push(byte),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no prompt: {}", String::from_utf8_lossy(&shown));
            }
        }
    }
    input.write_all(b"s3cret-typed\n").unwrap();
    // The rest, until the terminal closes: the command ended.
    loop {
        match shown_bytes.recv_timeout(std::time::Duration::from_secs(10)) {
            Ok(byte) => shown.push(byte),
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "hash-secret did not finish: {}",
                    String::from_utf8_lossy(&shown)
                );
            }
        }
    }
    child.wait().unwrap();
    drop(input);
    reader.join().unwrap();
    shown.extend(shown_bytes.try_iter());
    let shown = String::from_utf8_lossy(&shown);
    assert!(shown.contains("$argon2id$"), "{shown}");
    assert!(
        !shown.contains("s3cret-typed"),
        "the secret was echoed: {shown}"
    );
}

/// `hash-secret` with nothing on standard input (a pipe from an unset variable or a missing
/// file) printed the hash of an empty secret and exited 0; that hash let an empty secret in.
#[test]
fn hash_secret_refuses_an_empty_input() {
    for empty in ["", "\n", "  \r\n"] {
        let output = hash_secret(empty);
        assert_eq!(output.status.code(), Some(1), "{empty:?}");
        assert!(output.stdout.is_empty(), "{empty:?}");
        assert!(String::from_utf8_lossy(&output.stderr).contains("no secret"));
    }
    let output = hash_secret("s3cret\n");
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("$argon2"));
}

/// `hash-secret` read its line whole: `hash-secret </dev/zero` grew until memory ran out. A line
/// longer than 4096 bytes (its line end not counted) is refused, never cut short and hashed.
#[test]
fn hash_secret_refuses_a_secret_longer_than_4096_bytes() {
    let refused = |input: &str| {
        let output = hash_secret(input);
        assert_eq!(output.status.code(), Some(1), "{} bytes", input.len());
        assert!(output.stdout.is_empty());
        let said = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(said.contains("longer than 4096 bytes"), "{said}");
    };
    refused(&"a".repeat(1 << 20));
    refused(&format!("{}\n", "a".repeat(4097)));
    // A character cut at the limit is a secret too long, not one that is not UTF-8.
    refused(&format!("{}é\n", "a".repeat(4095)));
    for fits in [
        format!("{}\n", "a".repeat(4096)),
        format!("{}\r\n", "a".repeat(4096)),
        "a".repeat(4096),
    ] {
        let output = hash_secret(&fits);
        assert_eq!(output.status.code(), Some(0), "{} bytes", fits.len());
        assert!(String::from_utf8_lossy(&output.stdout).starts_with("$argon2"));
    }
}

/// `tollgate hash-secret` with `input` on its standard input.
fn hash_secret(input: &str) -> std::process::Output {
    use std::io::Write as _;
    let mut child = tollgate()
        .arg("hash-secret")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        // A line too long is refused before it is read whole: the pipe then breaks.
        .ok();
    child.wait_with_output().unwrap()
}

/// The demo app asks `/auth` on this machine directly, with the browser's cookie: never through
/// a proxy the environment names (`HTTP_PROXY` makes no exception for loopback), which would get
/// the session cookie in clear, and whose failure broke the forward-auth page. And a demo bound
/// to every interface (`0.0.0.0`) links to a loopback address, where its cookies work.
#[test]
fn demo_asks_auth_directly_whatever_proxy_the_environment_names() {
    use std::io::{BufRead as _, Read as _, Write as _};
    // A proxy that answers every request 502 and counts them.
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let proxied = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = proxied.clone();
    std::thread::spawn(move || {
        for stream in proxy.incoming() {
            let Ok(mut stream) = stream else { return };
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = stream.write_all(
                b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    });
    /// Killed when the test ends, passed or failed.
    struct Demo(std::process::Child);
    impl Drop for Demo {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = tollgate()
        .args([
            "demo",
            "--listen",
            "0.0.0.0:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(["--app-listen", "0.0.0.0:0"])
        .env("HTTP_PROXY", &proxy_url)
        .env("http_proxy", &proxy_url)
        .env("ALL_PROXY", &proxy_url)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let _demo = Demo(child);
    let mut app = None;
    let mut issuer = None;
    for line in stdout.lines().map_while(Result::ok) {
        if let Some(rest) = line.split("Open the demo app:").nth(1) {
            app = Some(rest.trim().to_owned());
        }
        if let Some(rest) = line.split("Token service:").nth(1) {
            issuer = Some(rest.trim().to_owned());
        }
        if line.contains("Press Ctrl-C") {
            break;
        }
    }
    let (app, issuer) = (
        app.expect("the app's link"),
        issuer.expect("the issuer's link"),
    );
    assert!(app.starts_with("http://127.0.0.1:"), "{app}");
    assert!(issuer.starts_with("http://127.0.0.1:"), "{issuer}");
    let address = app
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut stream = std::net::TcpStream::connect(&address).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET / HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let head = answer.lines().next().unwrap_or_default().to_owned();
    assert!(
        head.contains(" 302 ")
            && answer.contains(&format!(
                "{}/signin?rd=",
                issuer.trim_end_matches("/.well-known/openid-configuration")
            )),
        "the app was told by /auth to send the browser to sign in: {answer}"
    );
    assert_eq!(
        proxied.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing went through the proxy"
    );
}

/// `tollgate demo` on an address beyond loopback says so: its users, metrics and app are
/// reachable from other machines, over plain HTTP. On loopback it says nothing of the kind.
#[test]
fn demo_warns_when_it_listens_beyond_loopback() {
    use std::io::BufRead as _;
    let run = |app_listen: &str| {
        let mut child = tollgate()
            .args(["demo", "--listen", "127.0.0.1:0", "--admin-listen"])
            .arg("127.0.0.1:0")
            .args(["--app-listen", app_listen])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let started = stdout
            .lines()
            .map_while(Result::ok)
            .any(|line| line.contains("Press Ctrl-C"));
        assert!(started, "the demo on {app_listen} did not start");
        // Stopped as by Ctrl-C, so that its log is written out.
        let stopped = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(stopped.success());
        String::from_utf8_lossy(&child.wait_with_output().unwrap().stderr).into_owned()
    };
    let beyond = run("0.0.0.0:0");
    assert!(
        beyond.contains("the demo listens beyond loopback") && beyond.contains("0.0.0.0:"),
        "{beyond}"
    );
    let loopback = run("127.0.0.1:0");
    assert!(!loopback.contains("beyond loopback"), "{loopback}");
}
