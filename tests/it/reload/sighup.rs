//! SPEC §2 on the real binary: SIGHUP makes `tollgate serve` read its config file again; an
//! invalid file is refused, logged and counted, and the live config keeps answering.

use super::{config, sha256};
use crate::support::scratch_dir;
use crate::support::{TestIdp, TestUpstream};

/// Asks `url` up to `attempts` times, 50 ms apart, until `done` holds for the answer.
async fn until(url: &str, attempts: usize, done: impl Fn(u16, &str) -> bool) -> (u16, String) {
    let mut last = (0, String::new());
    for _ in 0..attempts {
        if let Ok(response) = reqwest::get(url).await {
            let status = response.status().as_u16();
            last = (status, response.text().await.unwrap_or_default());
            if done(last.0, &last.1) {
                return last;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{url}: last answer {last:?}");
}

fn signal(child: &std::process::Child, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn sighup_makes_tollgate_serve_read_its_config_file_again() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let dir = scratch_dir("reload-sighup");
    let (public_port, admin_port) = (crate::support::free_port(), crate::support::free_port());
    let text = |route| {
        config(&idp, &upstream, route, "").replace(
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"",
            &format!(
                "listen = \"127.0.0.1:{public_port}\"\nadmin_listen = \"127.0.0.1:{admin_port}\""
            ),
        )
    };
    let config_file = dir.join("tollgate.toml");
    let log_file = dir.join("stderr.log");
    std::fs::write(&config_file, text(None)).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--config"])
        .arg(&config_file)
        .env("TOLLGATE_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_file).unwrap())
        .spawn()
        .unwrap();
    let public = |path: &str| format!("http://127.0.0.1:{public_port}{path}");
    let metrics = format!("http://127.0.0.1:{admin_port}/metrics");
    until(&public("/ping"), 200, |status, _| status == 200).await;
    assert_eq!(reqwest::get(public("/app/x")).await.unwrap().status(), 404);

    let with_route = text(Some("/app"));
    std::fs::write(&config_file, &with_route).unwrap();
    signal(&child, "HUP");
    until(&public("/app/x"), 200, |status, _| status == 200).await;
    until(&metrics, 200, |_, text| {
        text.contains(&format!(
            "tollgate_config_info{{sha256=\"{}\"}} 1",
            sha256(&with_route)
        ))
    })
    .await;

    std::fs::write(&config_file, format!("bogus = 1\n{with_route}")).unwrap();
    signal(&child, "HUP");
    until(&metrics, 200, |_, text| {
        text.contains("tollgate_config_reloads_total{result=\"error\"} 1")
    })
    .await;
    assert_eq!(
        reqwest::get(public("/app/x")).await.unwrap().status(),
        200,
        "the live config stays"
    );

    signal(&child, "TERM");
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
    let log = std::fs::read_to_string(&log_file).unwrap();
    assert!(
        log.contains("bogus: unknown key"),
        "the problem is logged: {log}"
    );
    assert!(log.contains("configuration refused"), "{log}");
    assert!(
        log.contains(&sha256(&with_route)),
        "the live config is named: {log}"
    );
    assert_eq!(
        log.matches("configuration reloaded").count(),
        1,
        "one reload went through: {log}"
    );
}

/// A SIGHUP while `tollgate serve` still reads its config (a secret rotated as it starts)
/// neither ends the process (a SIGHUP's default action) nor is lost: the config is read again
/// once Tollgate serves. The admin token's file is a FIFO, so the test knows when Tollgate is
/// reading it.
#[tokio::test]
async fn a_sighup_while_serve_reads_its_config_is_kept_for_after_the_start() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let dir = scratch_dir("reload-sighup-at-start");
    let (public_port, admin_port) = (crate::support::free_port(), crate::support::free_port());
    let token_file = dir.join("admin-token");
    let made = std::process::Command::new("mkfifo")
        .arg(&token_file)
        .status()
        .unwrap();
    assert!(made.success());
    let text = config(&idp, &upstream, None, "").replace(
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"",
        &format!(
            "listen = \"127.0.0.1:{public_port}\"\nadmin_listen = \"127.0.0.1:{admin_port}\"\nadmin_token_file = \"{}\"",
            token_file.display()
        ),
    );
    assert!(text.contains("admin_token_file"));
    let config_file = dir.join("tollgate.toml");
    let log_file = dir.join("stderr.log");
    std::fs::write(&config_file, &text).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--config"])
        .arg(&config_file)
        .env("TOLLGATE_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_file).unwrap())
        .spawn()
        .unwrap();
    // Opening a FIFO to write returns once a reader opened it: Tollgate, reading its config.
    let fifo = token_file.clone();
    let mut writer = tokio::task::spawn_blocking(move || {
        std::fs::OpenOptions::new().write(true).open(fifo).unwrap()
    })
    .await
    .unwrap();
    signal(&child, "HUP");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    std::io::Write::write_all(&mut writer, b"an-admin-token-of-sixteen-or-more\n").unwrap();
    drop(writer);
    until(
        &format!("http://127.0.0.1:{public_port}/ping"),
        200,
        |status, _| status == 200,
    )
    .await;
    // The start read the token; the kept SIGHUP's reload reads the file again (and waits for
    // a writer of the FIFO meanwhile).
    tokio::task::spawn_blocking(move || {
        let mut writer = std::fs::OpenOptions::new()
            .write(true)
            .open(token_file)
            .unwrap();
        std::io::Write::write_all(&mut writer, b"an-admin-token-of-sixteen-or-more\n").unwrap();
    })
    .await
    .unwrap();
    assert!(child.try_wait().unwrap().is_none(), "still serving");
    until(
        &format!("http://127.0.0.1:{admin_port}/metrics"),
        200,
        |_, text| text.contains("tollgate_config_reloads_total{result=\"ok\"} 2"),
    )
    .await;
    signal(&child, "TERM");
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
    let log = std::fs::read_to_string(&log_file).unwrap();
    assert_eq!(log.matches("configuration reloaded").count(), 1, "{log}");
}
