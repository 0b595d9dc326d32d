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

/// The first ```` ```language ```` block of README.md after the line `after` (a heading or a
/// paragraph's first words): a recipe as the README gives it.
pub fn readme_block(after: &str, language: &str) -> &'static str {
    let readme = include_str!("../../../README.md");
    let start = readme
        .find(after)
        .unwrap_or_else(|| panic!("README has no {after:?}"));
    readme[start..]
        .split(&format!("```{language}\n"))
        .nth(1)
        .and_then(|block| block.split("```").next())
        .unwrap_or_else(|| panic!("README has no {language} block after {after:?}"))
}

/// Reads an HTTP/1 request head from `stream` a byte at a time (so nothing after it is
/// taken): its text, or `None` when the stream ends first.
pub async fn read_request_head<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Option<String> {
    use tokio::io::AsyncReadExt as _;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.ok()?;
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// A loopback port that was free a moment ago (for servers that take their port from a
/// config file: nginx, redis-server, a `tollgate serve` process).
///
/// Taken from 10000–19999, below the kernel's range of ephemeral ports (`ip_local_port_range`,
/// 32768 and up by default), which every `bind` to port 0 and every outgoing connection draws
/// from: a port from that range could be handed to someone else between this check and the
/// server's own bind (nginx once failed with "Address already in use" that way), one below it
/// only to an explicit bind. A Redis Cluster node also binds its bus port, the port + 10000:
/// 20000–29999, which is checked free too and is never another server's port.
pub fn free_port() -> u16 {
    // Never the same port twice in this process: a port is released here and bound later by
    // its server (two servers of one test on one port once made nginx answer a protected path
    // from the wrong server).
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    const LOW: u16 = 10_000;
    const SPAN: u32 = 10_000;
    // Each test process starts at its own place in the range, then walks it.
    let start = (std::process::id().wrapping_mul(7919) + given.len() as u32 * 13) % SPAN;
    for step in 0..SPAN {
        let port = LOW + u16::try_from((start + step) % SPAN).unwrap_or(0);
        let bindable = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        if !given.contains(&port) && bindable(port) && bindable(port + 10_000) {
            given.push(port);
            return port;
        }
    }
    panic!("no free loopback port between 10000 and 19999");
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

/// SHA-256 of `text` in lower-case hex, computed here (not with Tollgate's code): what a
/// config's digest is reported as, and what the token service's store names keys by.
pub fn sha256_hex(text: &str) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes())
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
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
