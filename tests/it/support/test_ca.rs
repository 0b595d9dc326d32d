//! A certificate authority made for one test with the `openssl` command (Debian's package,
//! which scripts/test.sh installs): P-256 keys, server certificates for `localhost` and
//! 127.0.0.1, all in a `scratch_dir` of their own (where a test may keep its other files).

use std::path::{Path, PathBuf};
use std::process::Command;

const OPENSSL: &str = "/usr/bin/openssl";

/// One CA: its certificate and key, in `dir`.
pub struct TestCa {
    dir: PathBuf,
    name: String,
}

/// A server certificate (PEM chain: leaf, then the CA) and its key.
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Issued {
    /// The leaf certificate in DER, as a TLS client sees it.
    pub fn leaf_der(&self) -> Vec<u8> {
        let out = openssl(&["x509", "-outform", "DER", "-in"], &[&self.cert]);
        assert!(!out.is_empty());
        out
    }
}

fn openssl(args: &[&str], paths: &[&Path]) -> Vec<u8> {
    assert!(
        Path::new(OPENSSL).exists(),
        "openssl is missing: scripts/test.sh installs it"
    );
    let output = Command::new(OPENSSL)
        .args(args)
        .args(paths)
        .output()
        .expect("openssl runs");
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

impl TestCa {
    /// A new CA named `name` in a fresh directory under the system's temporary directory.
    pub fn new(name: &str) -> Self {
        let dir = super::scratch_dir(&format!("ca-{name}"));
        let ca = Self {
            dir,
            name: name.to_owned(),
        };
        let (key, cert) = (ca.path("ca.key"), ca.cert());
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=Tollgate test CA {name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout",
            ],
            &[&key, Path::new("-out"), &cert],
        );
        ca
    }

    /// A path in this CA's directory.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// The CA certificate (PEM).
    pub fn cert(&self) -> PathBuf {
        self.path("ca.pem")
    }

    /// The CA certificate's PEM text.
    pub fn cert_pem(&self) -> Vec<u8> {
        std::fs::read(self.cert()).unwrap()
    }

    /// A server certificate for `localhost` and 127.0.0.1 named `name` (files `name.pem`,
    /// `name.key`), signed by this CA.
    pub fn issue(&self, name: &str) -> Issued {
        let (key, csr, leaf) = (
            self.path(&format!("{name}.key")),
            self.path(&format!("{name}.csr")),
            self.path(&format!("{name}.leaf")),
        );
        openssl(
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                &format!("/CN=localhost ({} {name})", self.name),
                "-keyout",
            ],
            &[&key, Path::new("-out"), &csr],
        );
        let extensions = self.path(&format!("{name}.ext"));
        std::fs::write(
            &extensions,
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .unwrap();
        openssl(
            &[
                "x509",
                "-req",
                "-days",
                "2",
                "-set_serial",
                &serial(),
                "-in",
            ],
            &[
                &csr,
                Path::new("-CA"),
                &self.cert(),
                Path::new("-CAkey"),
                &self.path("ca.key"),
                Path::new("-extfile"),
                &extensions,
                Path::new("-out"),
                &leaf,
            ],
        );
        // The chain a server sends: its certificate, then the CA's.
        let cert = self.path(&format!("{name}.pem"));
        let mut chain = std::fs::read(&leaf).unwrap();
        chain.extend(self.cert_pem());
        std::fs::write(&cert, chain).unwrap();
        Issued { cert, key }
    }
}

/// A serial number no other certificate of this process has.
fn serial() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let next = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}", u64::from(std::process::id()) * 1_000_000 + next)
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
