//! The token service's signing keys: loaded from PEM or generated, published as JWKs.

use std::path::Path;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

/// A private key that signs tokens, with its public JWK (including `kid`).
pub struct SigningKey {
    algorithm: Algorithm,
    /// Parsed once: `jsonwebtoken::encode` parses (and, for RSA, checks) the private key on
    /// every signature, which cost RS256 issuance about a third of its rate.
    key_pair: KeyPair,
    public_jwk: Jwk,
}

/// A parsed private key, shared with `client_key`.
pub(super) enum KeyPair {
    Ecdsa(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

impl KeyPair {
    fn parse(algorithm: Algorithm, key: &EncodingKey) -> Option<Self> {
        match algorithm {
            Algorithm::ES256 => {
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, key.as_bytes())
                    .ok()
                    .map(Self::Ecdsa)
            }
            Algorithm::RS256 => RsaKeyPair::from_der(key.as_bytes()).ok().map(Self::Rsa),
            _ => None,
        }
    }

    /// The JWS signature of `message` (RFC 7518 §3.3 PKCS#1 v1.5 SHA-256, §3.5 PSS SHA-256
    /// when `algorithm` is PS256, §3.4 P-256 `r‖s`).
    pub(super) fn sign(
        &self,
        algorithm: Algorithm,
        message: &[u8],
    ) -> Result<Vec<u8>, SigningKeyError> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let failed = |_| SigningKeyError::Sign("the crypto library refused to sign".to_owned());
        match self {
            Self::Ecdsa(key_pair) => key_pair
                .sign(&rng, message)
                .map(|signature| signature.as_ref().to_vec())
                .map_err(failed),
            Self::Rsa(key_pair) => {
                let padding: &'static dyn aws_lc_rs::signature::RsaEncoding =
                    if algorithm == Algorithm::PS256 {
                        &aws_lc_rs::signature::RSA_PSS_SHA256
                    } else {
                        &aws_lc_rs::signature::RSA_PKCS1_SHA256
                    };
                let mut signature = vec![0; key_pair.public_modulus_len()];
                key_pair
                    .sign(padding, &rng, message, &mut signature)
                    .map_err(failed)?;
                Ok(signature)
            }
        }
    }
}

/// Why a signing key could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    /// The file could not be read or written.
    #[error("key file {path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The PEM is not an EC P-256 or RSA private key.
    #[error("not an EC P-256 or RSA private key in PEM form")]
    Unsupported,
    /// Signing failed.
    #[error("signing failed: {0}")]
    Sign(String),
}

impl SigningKey {
    /// Generates a fresh ES256 (P-256) key.
    ///
    /// # Errors
    /// When the crypto library cannot make a key.
    pub fn generate_es256() -> Result<(Self, String), SigningKeyError> {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| SigningKeyError::Sign("key generation failed".to_owned()))?;
        let pem = pem_encode("PRIVATE KEY", pkcs8.as_ref());
        let key = Self::from_pem(pem.as_bytes())?;
        Ok((key, pem))
    }

    /// Loads a PEM private key: EC P-256 (ES256) or RSA (RS256).
    ///
    /// # Errors
    /// `Unsupported` for anything else.
    pub fn from_pem(pem: &[u8]) -> Result<Self, SigningKeyError> {
        let candidates = [
            (Algorithm::ES256, EncodingKey::from_ec_pem(pem)),
            (Algorithm::RS256, EncodingKey::from_rsa_pem(pem)),
        ];
        for (algorithm, encoding_key) in candidates {
            let Ok(encoding_key) = encoding_key else {
                continue;
            };
            let Some(key_pair) = KeyPair::parse(algorithm, &encoding_key) else {
                continue;
            };
            let Ok(mut public_jwk) = Jwk::from_encoding_key(&encoding_key, algorithm) else {
                continue;
            };
            let kid = public_jwk
                .thumbprint(ThumbprintHash::SHA256)
                .map_err(|error| SigningKeyError::Sign(error.to_string()))?;
            public_jwk.common.key_id = Some(kid);
            public_jwk.common.public_key_use = Some(PublicKeyUse::Signature);
            return Ok(Self {
                algorithm,
                key_pair,
                public_jwk,
            });
        }
        Err(SigningKeyError::Unsupported)
    }

    /// Loads the key at `path`.
    ///
    /// # Errors
    /// When the file cannot be read or parsed.
    pub fn load(path: &Path) -> Result<Self, SigningKeyError> {
        let pem = crate::named_file::read(path).map_err(|error| SigningKeyError::File {
            path: crate::secret::shown(path),
            message: error.to_string(),
        })?;
        Self::from_pem(&pem)
    }

    /// Loads the key at `path`, or generates an ES256 key and writes it there (mode 0600) when
    /// the file does not exist yet, so a restart keeps issued tokens valid.
    ///
    /// # Errors
    /// When the file cannot be read, parsed or written.
    pub fn load_or_generate(path: &Path) -> Result<Self, SigningKeyError> {
        let file_error = |error: std::io::Error| SigningKeyError::File {
            path: crate::secret::shown(path),
            message: error.to_string(),
        };
        match crate::named_file::read(path) {
            Ok(pem) => Self::from_pem(&pem),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let (key, pem) = Self::generate_es256()?;
                write_private(path, pem.as_bytes()).map_err(file_error)?;
                Ok(key)
            }
            Err(error) => Err(file_error(error)),
        }
    }

    /// The `kid` of this key.
    pub fn kid(&self) -> &str {
        self.public_jwk.common.key_id.as_deref().unwrap_or_default()
    }

    /// The signature algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The public half as a JWK.
    pub fn public_jwk(&self) -> &Jwk {
        &self.public_jwk
    }

    /// Signs `claims` with a header of the given `typ`: the JWS compact serialisation
    /// (RFC 7515 §7.1) of the header and claims as JSON.
    ///
    /// # Errors
    /// When the claims cannot be serialised or signing fails.
    pub fn sign(&self, typ: &str, claims: &serde_json::Value) -> Result<String, SigningKeyError> {
        let mut header = Header::new(self.algorithm);
        header.typ = Some(typ.to_owned());
        header.kid = Some(self.kid().to_owned());
        compact(&header, claims, &self.key_pair)
    }
}

/// The JWS compact serialisation (RFC 7515 §7.1) of `header` and `claims` as JSON, signed by
/// `key_pair` with the header's `alg`.
pub(super) fn compact(
    header: &Header,
    claims: &serde_json::Value,
    key_pair: &KeyPair,
) -> Result<String, SigningKeyError> {
    let unserialisable = |error: serde_json::Error| SigningKeyError::Sign(error.to_string());
    let mut token = String::with_capacity(1024);
    URL_SAFE_NO_PAD.encode_string(
        serde_json::to_vec(header).map_err(unserialisable)?,
        &mut token,
    );
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(
        serde_json::to_vec(claims).map_err(unserialisable)?,
        &mut token,
    );
    let signature = key_pair.sign(header.alg, token.as_bytes())?;
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut token);
    Ok(token)
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}
