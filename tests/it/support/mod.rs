//! Test helpers: a provider, a gateway, a browser, and real servers (nginx, Redis, Envoy).

pub mod browser;
pub mod envoy;
pub mod gateway;
pub mod idp;
pub mod nginx;
pub mod otlp;
pub mod redis;
pub mod relay;
pub mod test_ca;
pub mod test_keys;
pub mod tls_upstream;
pub mod upstream;

pub use browser::Browser;
pub use gateway::Gateway;
pub use idp::TestIdp;
pub use upstream::TestUpstream;

/// A loopback port that was free a moment ago (for servers that take their port from a
/// config file: nginx, redis-server, a `tollgate serve` process).
pub fn free_port() -> u16 {
    // Never the same port twice in this process: a port is released here and bound later by
    // its server, and the system may hand it out again meanwhile (two servers of one test on
    // one port once made nginx answer a protected path from the wrong server).
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A fresh, empty directory under the system's temp dir for one test's files (configs, keys,
/// server state), named `tollgate-<what>-<pid>-<n>` so that parallel tests never share one.
pub fn scratch_dir(what: &str) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("tollgate-{what}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Stops a `tollgate serve` started with its standard error piped: SIGTERM, so that it drains
/// and writes every log line before it exits. Its standard error.
pub fn stop_and_read_log(child: std::process::Child) -> String {
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let output = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&output.stderr).into_owned()
}
