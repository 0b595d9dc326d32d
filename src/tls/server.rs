//! The public listener's TLS (SPEC §3): HTTP/2 and HTTP/1.1 offered by ALPN, the certificate
//! served from an `ArcSwap` so that a config reload (on SIGHUP, SPEC §2) changes it for new
//! connections without touching open ones. The reload reads the files with the rest of the
//! config and swaps the certificate only when the whole config goes live: one that cannot be
//! used keeps the old certificate and the old config together.

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
    /// Serves `key`, read from `cert_file` and `key_file`.
    pub fn new(cert_file: PathBuf, key_file: PathBuf, key: Arc<CertifiedKey>) -> Self {
        Self {
            cert_file,
            key_file,
            current: ArcSwap::new(key),
        }
    }

    /// Serves `key` (read again from the same files by a reloaded config) to new connections.
    pub fn serve(&self, key: Arc<CertifiedKey>) {
        if !Arc::ptr_eq(&self.current.load(), &key) {
            self.current.store(key);
            tracing::info!(cert_file = %self.cert_file.display(), key_file = %self.key_file.display(), "TLS certificate reloaded");
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
}

/// What the public listener needs for `tls` (none without it): the certificate, which a
/// reloaded config replaces, and the acceptor serving it.
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
