//! SPEC §11: writing log lines never blocks a request. Tollgate runs as its own process with
//! standard error on a pipe nobody reads; thousands of requests that each log a decision line
//! are still answered, and the lines that did not fit are counted, not waited for.

use std::process::{Command, Stdio};
use std::time::Duration;

const REQUESTS: usize = 20_000;

use crate::support::free_port;

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
    assert!(dropped > 0, "the lines that did not fit are counted");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
