//! SPEC §11: writing log lines never blocks a request. Tollgate runs as its own process with
//! standard error on a pipe nobody reads; thousands of requests that each log a decision line
//! are still answered, and the lines that did not fit are counted, not waited for.

use std::process::{Command, Stdio};
use std::time::Duration;

const REQUESTS: usize = 20_000;

use crate::support::{free_port, stop_and_read_log};

#[tokio::test]
async fn a_log_reader_that_stopped_reading_never_stalls_requests() {
    let dir = crate::support::scratch_dir("log");
    let (public, admin, dead) = (free_port(), free_port(), free_port());
    let config = dir.join("tollgate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{public}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
             [session]\nsecrets = [\"a-log-test-session-secret-a-log-test\"]\n\
             [[provider]]\nname = \"p\"\nissuer = \"http://127.0.0.1:{dead}\"\nclient_id = \"x\"\nclient_auth = \"none\"\n\
             [forward_auth]\nprovider = \"p\"\n"
        ),
    )
    .unwrap();
    // Standard error is a pipe that is never read: a blocking logger stalls once it is full.
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("TOLLGATE_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _unread = child.stderr.take();
    let client = reqwest::Client::new();
    let ping = format!("http://127.0.0.1:{public}/ping");
    let mut up = false;
    for _ in 0..200 {
        if client.get(&ping).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(up, "tollgate did not start");

    // Each is refused for its malformed query, with one decision line (~250 bytes): 20,000 of
    // them are more than the pipe and the writer's queue (16,384 lines) hold together.
    let url = format!("http://127.0.0.1:{public}/auth?inject-claim=");
    let answered = tokio::time::timeout(Duration::from_secs(120), async {
        let mut answered = 0;
        for _ in 0..REQUESTS {
            if client.get(&url).send().await.unwrap().status() == 400 {
                answered += 1;
            }
        }
        answered
    })
    .await
    .expect("requests stalled behind the log");
    assert_eq!(answered, REQUESTS);

    let metrics = client
        .get(format!("http://127.0.0.1:{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let dropped: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("tollgate_log_lines_dropped_total "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no tollgate_log_lines_dropped_total in {metrics}"));
    // Every line that did not fit is counted: at most the queue's 16,384 lines and what the
    // pipe and the writer's buffer hold (64 KiB each, some 520 lines of this size) got through.
    assert!(
        (REQUESTS as u64 - 16_384 - 1_000..=REQUESTS as u64).contains(&dropped),
        "{dropped} lines counted as dropped of {REQUESTS}"
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The decision line of `/auth`, `/validate` and a proxied request, as `tollgate serve` writes
/// it (JSON): every field it has for the request (role, route, result, reason, credential
/// kind, request id), the original path without its query, and never a token or the query's
/// secrets (`code=`, `access_token=`).
#[tokio::test]
async fn decision_lines_are_complete_and_carry_no_query_string_or_token() {
    let (dir, config, public) = json_logging_config("log-fields", "", |dead| {
        format!(
            "[[route]]\nhost = \"app.example.com\"\npath_prefix = \"/app\"\nupstream = \"http://127.0.0.1:{dead}\"\nprovider = \"p\"\non_unauthenticated = \"pass\"\n"
        )
    });
    let (child, client, base) = serve_at_defaults(&config, public).await;

    let token = "eyJhbGciOiJSUzI1NiJ9.SECRET-BEARER-CLAIMS.SECRET-BEARER-SIGNATURE";
    let auth = client
        .get(format!("{base}/auth"))
        .header(
            "X-Original-URL",
            "https://app.example.com/cb?code=SECRET-CODE&state=SECRET-STATE#id_token=SECRET-FRAGMENT",
        )
        .header("X-Request-Id", "req-auth-1")
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(auth.status(), 401);
    // A token in the original query beside the bearer token: two credentials, refused.
    let twice = client
        .get(format!("{base}/auth"))
        .header(
            "X-Original-URL",
            "https://app.example.com/cb?access_token=SECRET-QUERY-TOKEN",
        )
        .header("X-Request-Id", "req-auth-4")
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(twice.status(), 400);
    let validate = client
        .get(format!("{base}/validate?code=SECRET-VALIDATE-QUERY"))
        .header("X-Request-Id", "req-validate-2")
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    // Refused (a token that is not a JWT): its status is the refusal's.
    let validate_status = validate.status().as_u16();
    assert!((400..500).contains(&validate_status), "{validate_status}");
    let proxied = client
        .get(format!("{base}/app/page?code=SECRET-PROXY-QUERY"))
        .header("Host", "app.example.com")
        .header("X-Request-Id", "req-proxy-3")
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), 502, "the upstream is down");

    let log = stop_and_read_log(child);
    assert!(
        !log.contains("SECRET"),
        "a token or a query string was logged:\n{log}"
    );
    let find = |id: &str| decision_line(&log, id);
    let auth = find("req-auth-1");
    assert_eq!(auth["role"], "forward_auth");
    assert_eq!(auth["via"], "auth");
    assert_eq!(auth["result"], "unauthenticated");
    assert_eq!(auth["path"], "/cb");
    assert!(
        auth["reason"]
            .as_str()
            .unwrap()
            .starts_with("bearer refused"),
        "{auth}"
    );
    assert_eq!(auth["level"], "INFO");
    assert!(auth["timestamp"].is_string());
    let twice = find("req-auth-4");
    assert_eq!(twice["result"], "bad_request");
    assert_eq!(twice["path"], "/cb");
    let validate = find("req-validate-2");
    assert_eq!(validate["role"], "validate");
    assert_eq!(
        validate["result"],
        if validate_status == 400 {
            "bad_request"
        } else {
            "unauthenticated"
        }
    );
    assert!(validate["reason"].is_string(), "{validate}");
    let proxied = find("req-proxy-3");
    assert_eq!(proxied["role"], "proxy");
    assert_eq!(proxied["route"], "app.example.com/app");
    assert_eq!(proxied["result"], "upstream_unavailable");
    assert_eq!(proxied["level"], "WARN");
    assert!(proxied["reason"].is_string(), "{proxied}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A provider that cannot be reached is the operator's to look at: `/auth`'s decision line for
/// it is a warning (`provider_unavailable`), as every other surface's failure is, not the
/// `info` of a caller refused; `TOLLGATE_LOG=warn` keeps it and drops the refusals.
#[tokio::test]
async fn an_unreachable_provider_is_a_warning_in_the_decision_line_and_kept_at_warn() {
    let (dir, config, public) =
        json_logging_config("log-warn", "audiences = [\"api\"]\n", |_| String::new());
    // At the default level, and at `warn`, where a caller refused writes no line. Each level
    // is asked of the filter once per call site (`logging::decision::Enabled`): the second
    // and third requests of each kind find the answer remembered.
    for filter in [None, Some("warn")] {
        let (child, client, base) = serve_logging(&config, public, filter).await;
        for attempt in 0..3 {
            // A well-formed token: checking it needs the provider's keys, which cannot be
            // fetched.
            let unreachable = client
                .get(format!("{base}/auth"))
                .header("X-Request-Id", format!("req-unreachable-{attempt}"))
                .bearer_auth(
                    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImsxIn0.\
                     eyJpc3MiOiJ4Iiwic3ViIjoiYWxpY2UiLCJleHAiOjQxMDI0NDQ4MDB9.c2lnbmF0dXJl",
                )
                .send()
                .await
                .unwrap();
            assert_eq!(unreachable.status(), 502);
            let anonymous = client
                .get(format!("{base}/auth"))
                .header("X-Request-Id", format!("req-anonymous-{attempt}"))
                .send()
                .await
                .unwrap();
            assert_eq!(anonymous.status(), 401);
        }
        let log = stop_and_read_log(child);
        for attempt in 0..3 {
            let line = decision_line(&log, &format!("req-unreachable-{attempt}"));
            assert_eq!(line["result"], "provider_unavailable", "{line}");
            assert_eq!(line["level"], "WARN", "{line}");
            let anonymous = format!("req-anonymous-{attempt}");
            if filter.is_none() {
                assert_eq!(decision_line(&log, &anonymous)["level"], "INFO");
            } else {
                assert!(
                    !log.contains(&anonymous),
                    "TOLLGATE_LOG=warn writes no info line:\n{log}"
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A config in a scratch directory named after `what`: JSON logs, forward-auth at a provider
/// `p` whose issuer is a port nobody listens on (its `[[provider]]` table ending with
/// `provider_extra`), then `rest(dead_port)`. The directory, the config's path and the public
/// port.
fn json_logging_config(
    what: &str,
    provider_extra: &str,
    rest: impl FnOnce(u16) -> String,
) -> (std::path::PathBuf, std::path::PathBuf, u16) {
    let dir = crate::support::scratch_dir(what);
    let (public, admin, dead) = (free_port(), free_port(), free_port());
    let config = dir.join("tollgate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{public}\"\nadmin_listen = \"127.0.0.1:{admin}\"\nlog_format = \"json\"\n\
             [session]\nsecrets = [\"a-log-test-session-secret-a-log-test\"]\n\
             [[provider]]\nname = \"p\"\nissuer = \"http://127.0.0.1:{dead}\"\nclient_id = \"x\"\nclient_auth = \"none\"\n{provider_extra}\
             [forward_auth]\nprovider = \"p\"\n{}",
            rest(dead)
        ),
    )
    .unwrap();
    (dir, config, public)
}

/// `tollgate serve --config CONFIG` at the default log level, standard error kept for
/// `stop_and_read_log`, once it answers `/ping` on `public`; with a client and its base URL.
async fn serve_at_defaults(
    config: &std::path::Path,
    public: u16,
) -> (std::process::Child, reqwest::Client, String) {
    serve_logging(config, public, None).await
}

/// `serve_at_defaults` with `TOLLGATE_LOG` set to `filter`, if any.
async fn serve_logging(
    config: &std::path::Path,
    public: u16,
    filter: Option<&str>,
) -> (std::process::Child, reqwest::Client, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    command.env_remove("TOLLGATE_LOG");
    if let Some(filter) = filter {
        command.env("TOLLGATE_LOG", filter);
    }
    let child = command
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{public}");
    let mut up = false;
    for _ in 0..200 {
        if client.get(format!("{base}/ping")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(up, "tollgate did not start");
    (child, client, base)
}

/// The JSON decision line of the request with this `X-Request-Id`.
fn decision_line(log: &str, request_id: &str) -> serde_json::Value {
    log.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .find(|line: &serde_json::Value| {
            line["message"] == "decision" && line["request_id"] == request_id
        })
        .unwrap_or_else(|| panic!("no decision line for {request_id}:\n{log}"))
}

/// A refusal's reason quotes what came in bounded: an `/auth` parameter named with the whole
/// URL (60 KB, invalid UTF-8 at its end) made a decision line as long, and a stalled log
/// reader's queue (bounded by lines) a gigabyte.
#[tokio::test]
async fn a_long_malformed_auth_parameter_makes_a_short_decision_line() {
    let (_dir, config, public) = json_logging_config("log-long-reason", "", |_| String::new());
    let (child, client, base) = serve_at_defaults(&config, public).await;
    let name = "A".repeat(60_000);
    let refused = client
        .get(format!("{base}/auth?{name}%FF=x"))
        .header("X-Request-Id", "req-long-name")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let log = stop_and_read_log(child);
    let line = decision_line(&log, "req-long-name");
    let reason = line["reason"].as_str().unwrap();
    assert!(reason.contains("malformed query parameter"), "{reason}");
    assert!(
        reason.len() < 300,
        "the parameter is quoted bounded ({} bytes)",
        reason.len()
    );
    let longest = log.lines().map(str::len).max().unwrap_or_default();
    assert!(longest < 4096, "the longest line is {longest} bytes");
}

/// Every provider's logins return to one `/callback`: the mix-up defence (RFC 9700 §4.4) rests
/// on each provider naming itself there (RFC 9207) or on client authentication. A public client
/// at a provider that sends no `iss`, beside another provider, is warned about once discovery
/// is read, by name; one at a provider that sends `iss` is not.
#[tokio::test]
async fn a_public_client_at_a_provider_that_names_itself_nowhere_is_warned_about() {
    use crate::support::TestIdp;
    use crate::support::idp::Misbehaviour;
    let quiet = TestIdp::start().await;
    let naming = TestIdp::start().await;
    naming.misbehave(Misbehaviour {
        iss_parameter: true,
        ..Default::default()
    });
    let dir = crate::support::scratch_dir("log-mix-up");
    let (public, admin) = (free_port(), free_port());
    let config = dir.join("tollgate.toml");
    let provider = |name: &str, issuer: &str| {
        format!(
            "[[provider]]\nname = \"{name}\"\nissuer = \"{issuer}\"\nclient_id = \"tollgate\"\nclient_auth = \"none\"\n"
        )
    };
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{public}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
             [session]\nsecrets = [\"a-log-test-session-secret-a-log-test\"]\n{}{}\
             [forward_auth]\nprovider = \"quiet\"\n",
            provider("quiet", quiet.issuer()),
            provider("naming", naming.issuer()),
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .env_remove("TOLLGATE_LOG")
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Standard error read as it comes, until the warning (or the end).
    let stderr = child.stderr.take().unwrap();
    let (lines, read) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let warns = |line: &str, name: &str| {
        line.contains("RFC 9207") && line.contains(&format!("\"provider\":\"{name}\""))
    };
    // Read off the runtime, whose thread serves the two providers meanwhile.
    let (mut log, read) = tokio::task::spawn_blocking(move || {
        let mut log = Vec::new();
        while let Ok(line) = read.recv_timeout(Duration::from_secs(30)) {
            let done = warns(&line, "quiet");
            log.push(line);
            if done {
                break;
            }
        }
        (log, read)
    })
    .await
    .unwrap();
    let stopped = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    child.wait().unwrap();
    reader.join().unwrap();
    log.extend(read.try_iter());
    let log = log.join("\n");
    assert!(log.lines().any(|line| warns(line, "quiet")), "{log}");
    assert!(!log.lines().any(|line| warns(line, "naming")), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A proxied request whose client hangs up while the upstream works on it: the upstream had
/// the request, so its decision line is written and it is counted. hyper dropped the request's
/// future, and with it the line written once the answer came, so a caller could choose which
/// of its requests left no trace.
#[tokio::test]
async fn a_request_whose_client_left_before_the_upstream_answered_is_still_logged() {
    let upstream = crate::support::TestUpstream::start().await;
    let (dir, config, public) = json_logging_config("log-client-gone", "", |_| {
        format!(
            "[[route]]\npath_prefix = \"/slow\"\nupstream = \"{}\"\nprovider = \"p\"\non_unauthenticated = \"pass\"\n",
            upstream.url()
        )
    });
    let (child, client, base) = serve_at_defaults(&config, public).await;
    {
        use tokio::io::AsyncWriteExt as _;
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", public))
            .await
            .unwrap();
        stream
            .write_all(
                b"GET /slow HTTP/1.1\r\nHost: app.example.com\r\nX-Request-Id: gone-1\r\n\r\n",
            )
            .await
            .unwrap();
        // The upstream has the request, and sleeps five seconds before it answers `/slow`.
        let arrived = &upstream.slow_requests;
        for _ in 0..400 {
            if arrived.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(arrived.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
    // Tollgate sees the connection end while the upstream still sleeps.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        client
            .get(format!("{base}/ping"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let log = stop_and_read_log(child);
    let gone = decision_line(&log, "gone-1");
    assert_eq!(gone["role"], "proxy");
    assert_eq!(gone["route"], "/slow");
    assert_eq!(gone["result"], "pass");
    assert_eq!(
        gone["reason"],
        "the connection ended before the request was answered"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A refusal's decision line is logged under its surface's module, as the surface's allowed
/// lines are: `TOLLGATE_LOG=warn,tollgate::proxy=info` keeps the proxy's refusals (every
/// surface's were logged as `tollgate::metrics`, so such a filter dropped them).
#[tokio::test]
async fn a_refusal_is_logged_under_its_surface_for_a_filter_that_names_it() {
    let (dir, config, public) = json_logging_config("log-refusal-target", "", |dead| {
        format!(
            "[[route]]\npath_prefix = \"/app\"\nupstream = \"http://127.0.0.1:{dead}\"\nprovider = \"p\"\non_unauthenticated = \"deny\"\n"
        )
    });
    let (child, client, base) =
        serve_logging(&config, public, Some("warn,tollgate::proxy=info")).await;
    let refused = client
        .get(format!("{base}/app/page"))
        .header("X-Request-Id", "refused-1")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let auth = client
        .get(format!("{base}/auth"))
        .header("X-Original-URL", "http://127.0.0.1/page")
        .header("X-Request-Id", "auth-2")
        .send()
        .await
        .unwrap();
    assert_eq!(auth.status(), 401);
    let log = stop_and_read_log(child);
    let refused = decision_line(&log, "refused-1");
    assert_eq!(refused["role"], "proxy");
    assert_eq!(refused["result"], "unauthenticated");
    assert_eq!(refused["target"], "tollgate::proxy");
    assert!(
        !log.contains("auth-2"),
        "an info line of another surface was kept:\n{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A text log line quotes what a client chose: a `client_id` of `x result=allow role=admin` at
/// `/token` read, to a logfmt parser, as the line's own `result` and `role` fields (decision
/// lines quoted every value; this event wrote it bare).
#[tokio::test]
async fn a_client_id_in_a_text_log_line_is_quoted() {
    let dir = crate::support::scratch_dir("log-client-id");
    let (public, admin) = (free_port(), free_port());
    let config = dir.join("tollgate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{public}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
             log_format = \"text\"\n[token_service]\nissuer = \"http://127.0.0.1:{public}\"\n\
             [[token_service.client]]\nclient_id = \"machine\"\nclient_secret_hash = \"{}\"\n\
             grants = [\"client_credentials\"]\nsource = \"myapi\"\n",
            tollgate::hash_password("machine-secret").unwrap()
        ),
    )
    .unwrap();
    let (child, client, base) = serve_at_defaults(&config, public).await;
    let refused = client
        .post(format!("{base}/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "x result=allow role=\"admin\""),
            ("client_secret", "y"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let log = stop_and_read_log(child);
    let line = log
        .lines()
        .find(|line| line.contains("unknown client"))
        .unwrap_or_else(|| panic!("no line for the unknown client:\n{log}"));
    assert!(
        line.contains(r#"client_id="x result=allow role=\"admin\"""#),
        "{line}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
