//! The public listener's TLS (SPEC §3): HTTP/2 and HTTP/1.1 offered by ALPN, the certificate
//! served from an `ArcSwap` so that `reload` (on SIGHUP, SPEC §2) changes it for new
//! connections without touching open ones. A reload that cannot use the new files keeps the
//! old certificate and says why in one log line.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::TlsError;

/// The certificate the listener serves, and the files it came from.
#[derive(Debug)]
pub struct ServerCertificate {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: ArcSwap<CertifiedKey>,
}

impl ServerCertificate {
    /// Serves `key`, read from `cert_file` and `key_file` (which `reload` reads again).
    pub fn new(cert_file: PathBuf, key_file: PathBuf, key: Arc<CertifiedKey>) -> Self {
        Self {
            cert_file,
            key_file,
            current: ArcSwap::new(key),
        }
    }

    /// Reads the files again; new connections get the new certificate. When they cannot be
    /// used, the one served so far stays, and the problem is logged.
    ///
    /// # Errors
    /// Why the new files were not taken.
    pub fn reload(&self) -> Result<(), TlsError> {
        match super::load_certified_key(&self.cert_file, &self.key_file) {
            Ok(key) => {
                self.current.store(Arc::new(key));
                tracing::info!(cert_file = %self.cert_file.display(), "TLS certificate reloaded");
                Ok(())
            }
            Err(error) => {
                tracing::error!(%error, "TLS certificate not reloaded; the previous one is still served");
                Err(error)
            }
        }
    }

    /// The server configuration for the listener: this certificate, `h2` then `http/1.1`.
    ///
    /// # Errors
    /// When the provider offers no safe protocol version (never with aws-lc-rs).
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| TlsError::Config(error.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Reloads on every SIGHUP for as long as the process runs (spawn it once per listener).
    pub async fn reload_on_sighup(self: Arc<Self>) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGHUP; the TLS certificate will not be reloaded");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            let _ = self.reload();
        }
    }
}

/// What the public listener needs for `tls` (none without it): the certificate, reloaded on
/// every SIGHUP from now on, and the acceptor serving it.
///
/// # Errors
/// When rustls refuses the server configuration.
pub fn for_listener(
    tls: Option<&crate::config::ListenerTls>,
) -> Result<
    (
        Option<Arc<ServerCertificate>>,
        Option<tokio_rustls::TlsAcceptor>,
    ),
    TlsError,
> {
    let Some(tls) = tls else {
        return Ok((None, None));
    };
    let certificate = Arc::new(ServerCertificate::new(
        tls.cert_file.clone(),
        tls.key_file.clone(),
        tls.key.clone(),
    ));
    let acceptor = tokio_rustls::TlsAcceptor::from(certificate.server_config()?);
    tokio::spawn(certificate.clone().reload_on_sighup());
    Ok((Some(certificate), Some(acceptor)))
}

/// rustls' view of a `ServerCertificate`: the current key, whatever the client asked for.
#[derive(Debug)]
struct Resolver(Arc<ServerCertificate>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current.load_full())
    }
}
