//! A real nginx from Debian's package, started on loopback from a config the test writes.
//! Outside CI a missing nginx skips the test with a message; under `CI=true` it fails.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub use super::free_port;

const NGINX: &str = "/usr/sbin/nginx";

/// Whether nginx tests can run; panics under CI when they cannot.
pub fn available() -> bool {
    let present = std::path::Path::new(NGINX).exists();
    if !present {
        assert!(
            std::env::var_os("CI").is_none(),
            "nginx is missing: scripts/test.sh installs it"
        );
        eprintln!("skipping: nginx is not installed (scripts/test.sh installs it)");
    }
    present
}

/// One nginx master with one worker; stopped on drop.
pub struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    /// Starts nginx with `http` as the body of its `http { }` block and waits until every port
    /// in `ports` accepts connections.
    pub async fn start(http: &str, ports: &[u16]) -> Self {
        let dir = super::scratch_dir("nginx");
        let d = dir.display();
        let config = format!(
            "worker_processes 1;\nuser root;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n \
             fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n{http}\n}}\n"
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, config).unwrap();
        let child = Command::new(NGINX)
            .args(["-p", &dir.display().to_string(), "-c"])
            .arg(&path)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nginx starts");
        let mut nginx = Self { child, dir };
        // nginx writes its pid file once it holds every listening socket: until then a port
        // that accepts may be another process's, and nginx may yet fail to bind it.
        let pid_file = nginx.dir.join("nginx.pid");
        for _ in 0..400 {
            if pid_file.exists() {
                break;
            }
            if let Ok(Some(status)) = nginx.child.try_wait() {
                panic!(
                    "nginx exited ({status}): {}",
                    std::fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default()
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        assert!(
            pid_file.exists(),
            "nginx never started: {}",
            std::fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default()
        );
        for port in ports {
            let mut ready = false;
            for _ in 0..200 {
                if tokio::net::TcpStream::connect(("127.0.0.1", *port))
                    .await
                    .is_ok()
                {
                    ready = true;
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            }
            assert!(
                ready,
                "nginx never listened on {port}: {}",
                std::fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default()
            );
        }
        nginx
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends `request_line_target` exactly as written (no client-side normalisation) with `headers`
/// over a fresh connection; answers the status and the body.
pub async fn raw_get(port: u16, target: &str, headers: &[(&str, &str)]) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut request = format!("GET {target} HTTP/1.1\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        request.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer for {target:?}: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}
