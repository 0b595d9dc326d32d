//! TLS material read from files (SPEC §3): the listener's certificate chain and key
//! (`server.tls_cert_file` / `tls_key_file`) and the client configuration for an https
//! upstream (system roots, or `upstream_ca_file` instead). rustls with the aws-lc-rs provider.
//! No network IO: `tls::server` serves with what this loads, `proxy::pool` connects with it.

pub mod server;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;

/// Why TLS material could not be loaded. Never carries a key's bytes.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}: {reason}", crate::secret::shown(path))]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error's text.
        reason: String,
    },
    /// A certificate file holds no PEM certificate, or a broken one.
    #[error("{} holds no usable PEM certificate", crate::secret::shown(.0))]
    NoCertificate(PathBuf),
    /// A key file holds no PEM private key (PKCS#8, PKCS#1 or SEC1).
    #[error("{} holds no usable PEM private key", crate::secret::shown(.0))]
    NoKey(PathBuf),
    /// The key is of a type rustls cannot sign with, or does not belong to the certificate.
    #[error(
        "the key in {} does not fit the certificate in {}: {reason}",
        crate::secret::shown(key),
        crate::secret::shown(cert)
    )]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls' reason (names no key material).
        reason: String,
    },
    /// No trust anchors could be built (the system's, or the CA file's).
    #[error("no trusted roots: {0}")]
    Roots(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
    /// The upstream's host is not a valid TLS server name.
    #[error("`{0}` is not a valid TLS server name")]
    ServerName(String),
}

/// The one crypto provider Tollgate's TLS uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    crate::named_file::read(path).map_err(|error| TlsError::Read {
        path: path.to_owned(),
        reason: error.to_string(),
    })
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| TlsError::NoCertificate(path.to_owned()))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(path.to_owned()));
    }
    Ok(chain)
}

/// The certificate chain in `cert_file` (leaf first) with the private key in `key_file`,
/// checked to belong together.
///
/// # Errors
/// When a file cannot be read or parsed, or the key does not match the leaf certificate.
pub fn load_certified_key(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = certificates(cert_file)?;
    let pem = read(key_file)?;
    // The PEM error may quote a line of the file: it is not passed on.
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|_| TlsError::NoKey(key_file.into()))?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|error| TlsError::Mismatch {
        cert: cert_file.to_owned(),
        key: key_file.to_owned(),
        reason: error.to_string(),
    })
}

/// How Tollgate speaks TLS to one https upstream: SNI and verification name from the
/// upstream's host, trust from the system roots or the route's CA file.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// Offers `h2` and `http/1.1` by ALPN.
    pub any_version: Arc<rustls::ClientConfig>,
    /// Offers only `http/1.1`: for upgrades (WebSocket), which HTTP/2 does not carry here.
    pub http1_only: Arc<rustls::ClientConfig>,
    /// The upstream URL's host.
    pub server_name: ServerName<'static>,
}

impl UpstreamTls {
    /// The client configuration for `host`, trusting only the certificates in `ca_file` when
    /// given, else the system's roots.
    ///
    /// # Errors
    /// When the CA file is unreadable or empty, the system has no roots, or `host` is no
    /// server name.
    pub fn new(host: &str, ca_file: Option<&Path>) -> Result<Self, TlsError> {
        let server_name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']'))
            .map_err(|_| TlsError::ServerName(host.to_owned()))?
            .to_owned();
        let verifier = match ca_file {
            Some(path) => roots_verifier(certificates(path)?, &path.display().to_string())?,
            None => system_verifier()?,
        };
        let config = |alpn: &[&[u8]]| -> Result<Arc<rustls::ClientConfig>, TlsError> {
            let mut config = rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|error| TlsError::Config(error.to_string()))?
                .dangerous()
                .with_custom_certificate_verifier(verifier.clone())
                .with_no_client_auth();
            config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
            Ok(Arc::new(config))
        };
        Ok(Self {
            any_version: config(&[b"h2", b"http/1.1"])?,
            http1_only: config(&[b"http/1.1"])?,
            server_name,
        })
    }
}

/// The certificates Redis over TLS trusts, as PEM: `ca_pem` (`session.redis_ca_file`) when
/// given, else the system's roots as they are now (read as for the other clients, kept until
/// [`read_system_roots_again`]). A config's Redis links all trust exactly these, whether
/// Tollgate connects them ([`redis_client_config`]) or the redis crate does (given as its
/// `root_cert`), however the store changes afterwards.
///
/// # Errors
/// When the system has no roots.
pub fn redis_roots(ca_pem: Option<&[u8]>) -> Result<Vec<u8>, TlsError> {
    match ca_pem {
        Some(pem) => Ok(pem.to_vec()),
        None => system_roots_pem(),
    }
}

/// A client configuration that trusts only the PEM certificates `roots_pem` ([`redis_roots`]):
/// the Redis link Tollgate connects itself.
///
/// # Errors
/// When `roots_pem` holds no certificate, or a broken one.
pub fn redis_client_config(roots_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(roots_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| TlsError::Roots("the Redis roots hold a broken certificate".into()))?;
    if chain.is_empty() {
        return Err(TlsError::Roots(
            "the Redis roots hold no certificate".into(),
        ));
    }
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| TlsError::Config(error.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(roots_verifier(chain, "the Redis roots")?)
            .with_no_client_auth(),
    ))
}

/// A verifier that trusts only `chain` (from `source`).
fn roots_verifier(
    chain: Vec<CertificateDer<'static>>,
    source: &str,
) -> Result<Arc<dyn rustls::client::danger::ServerCertVerifier>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in chain {
        roots
            .add(certificate)
            .map_err(|error| TlsError::Roots(format!("{source}: {error}")))?;
    }
    Ok(
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|error| TlsError::Roots(error.to_string()))?,
    )
}

/// The client configuration of the calls to providers: the system's roots (shared with
/// upstreams), `h2` and `http/1.1` by ALPN. One value shared by every thread's client, so
/// the roots are read once per config and a TLS session is resumed whichever thread made it.
///
/// # Errors
/// When the system has no roots or rustls refuses the configuration.
pub fn provider_client_config() -> Result<rustls::ClientConfig, TlsError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError::Config(error.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(system_verifier()?)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The system's roots (on Debian /etc/ssl/certs, package ca-certificates, or what
/// `SSL_CERT_FILE` / `SSL_CERT_DIR` name), read when first needed and kept until
/// [`read_system_roots_again`]: the same trust for the calls to providers, upstreams and Redis.
/// Asked for only when a config is built (at start, on reload): never by a request or a
/// reconnect, which use what their config was built with.
static SYSTEM: Mutex<Option<Arc<rustls_platform_verifier::Verifier>>> = Mutex::new(None);

fn system_verifier() -> Result<Arc<dyn rustls::client::danger::ServerCertVerifier>, TlsError> {
    let mut kept = SYSTEM
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(verifier) = kept.as_ref() {
        return Ok(verifier.clone());
    }
    // Reads and parses the roots now; a store without any is an error, not kept.
    let verifier = rustls_platform_verifier::Verifier::new(provider())
        .map(Arc::new)
        .map_err(|error| TlsError::Roots(error.to_string()))?;
    *kept = Some(verifier.clone());
    Ok(verifier)
}

/// The system's roots as PEM, read as [`SYSTEM`] is and kept as long: what the redis crate is
/// given to trust, since it takes roots only as PEM (and would otherwise read the store at
/// every connect).
static SYSTEM_PEM: Mutex<Option<Arc<[u8]>>> = Mutex::new(None);

fn system_roots_pem() -> Result<Vec<u8>, TlsError> {
    let mut kept = SYSTEM_PEM
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(pem) = kept.as_ref() {
        return Ok(pem.to_vec());
    }
    // As the platform verifier does on Linux: the roots that could be read and parsed are
    // used, and only a store without any is an error (not kept).
    let found = rustls_native_certs::load_native_certs();
    let usable: Vec<_> = found
        .certs
        .into_iter()
        .filter(|root| rustls::RootCertStore::empty().add(root.clone()).is_ok())
        .collect();
    if usable.is_empty() {
        return Err(TlsError::Roots(found.errors.first().map_or_else(
            || "the system's store holds none".to_owned(),
            ToString::to_string,
        )));
    }
    let pem: Arc<[u8]> = pem_of(&usable).into();
    *kept = Some(pem.clone());
    Ok(pem.to_vec())
}

/// `certificates` as PEM: base64 lines of 64 characters between the markers.
fn pem_of(certificates: &[CertificateDer<'_>]) -> Vec<u8> {
    use base64::Engine as _;
    let mut pem = Vec::new();
    for certificate in certificates {
        pem.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
        let text = base64::engine::general_purpose::STANDARD.encode(certificate);
        for line in text.as_bytes().chunks(64) {
            pem.extend_from_slice(line);
            pem.push(b'\n');
        }
        pem.extend_from_slice(b"-----END CERTIFICATE-----\n");
    }
    pem
}

/// Makes the next config built read the system's roots again (SIGHUP): a CA bundle updated on
/// the host is trusted from the reload on. Configs built before keep the roots they were built
/// with, so a reload refused (for a store left without roots, say) changes nothing.
pub fn read_system_roots_again() {
    *SYSTEM
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    *SYSTEM_PEM
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
}

#[cfg(test)]
mod tests;
