//! Tollgate's private key as a client of a provider (`private_key_jwt`, OIDC Core §9,
//! RFC 7523 §2.2): read from a PEM file, it signs client assertions with RS256 or PS256 (an RSA
//! key) or ES256 (a P-256 key).

use std::path::Path;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, Header};

use super::signing::{KeyPair, compact};

/// A client's private key, parsed once, with the `kid` its assertions carry.
pub struct ClientKey {
    key_pair: KeyPair,
    kid: Option<String>,
    /// `x5t#S256` (RFC 7515 §4.1.8) of the certificate found beside the key in its file, for
    /// providers that find the key by its certificate (Entra ID).
    certificate_thumbprint: Option<String>,
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ClientKey")
            .field("algorithms", &self.algorithms())
            .field("kid", &self.kid)
            .field("certificate_thumbprint", &self.certificate_thumbprint)
            .finish_non_exhaustive()
    }
}

/// Why a client key cannot be loaded or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientKeyError {
    /// The file could not be read.
    #[error("cannot read {path}: {message}")]
    File {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// The file holds no private key Tollgate can sign with.
    #[error("{0}")]
    Unusable(&'static str),
    /// The provider lists algorithms for client assertions, and none is the key's.
    #[error(
        "the provider accepts client assertions signed with {offered}, none of this key's {own}"
    )]
    NoCommonAlgorithm {
        /// What the provider offers (bounded: its text).
        offered: String,
        /// What the key can do.
        own: String,
    },
    /// Signing failed.
    #[error("signing the client assertion failed: {0}")]
    Sign(String),
}

impl ClientKey {
    /// Reads and parses the key at `path`; called at load, and again for a reload.
    ///
    /// # Errors
    /// `File` when the file cannot be read, `Unusable` as `from_pem`.
    pub fn load(path: &Path, kid: Option<String>) -> Result<Self, ClientKeyError> {
        let pem = crate::named_file::read(path).map_err(|error| ClientKeyError::File {
            path: crate::secret::shown(path),
            message: error.to_string(),
        })?;
        Self::from_pem(&pem, kid)
    }

    /// Parses the first private key in `pem`: PKCS#8 (`PRIVATE KEY`) RSA or EC P-256, PKCS#1
    /// (`RSA PRIVATE KEY`) or SEC 1 (`EC PRIVATE KEY`). A `CERTIFICATE` in the same text gives
    /// the assertions an `x5t#S256` header.
    ///
    /// # Errors
    /// `Unusable` naming what is wrong: no key, an encrypted key, RSA under 2048 bits, another
    /// curve or key type, a certificate of another key.
    pub fn from_pem(pem: &[u8], kid: Option<String>) -> Result<Self, ClientKeyError> {
        let text = std::str::from_utf8(pem)
            .map_err(|_| ClientKeyError::Unusable("the key file is not PEM text"))?;
        let blocks = pem_blocks(text)?;
        let certificate_thumbprint = blocks
            .iter()
            .find(|(label, _)| *label == "CERTIFICATE")
            .map(|(_, der)| {
                URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der))
            });
        let mut key_pair = None;
        for (label, der) in &blocks {
            key_pair = match *label {
                "PRIVATE KEY" => Some(parse_pkcs8(der)?),
                "RSA PRIVATE KEY" => {
                    Some(KeyPair::Rsa(RsaKeyPair::from_der(der).map_err(|_| {
                        ClientKeyError::Unusable(
                            "the RSA private key is malformed or under 2048 bits",
                        )
                    })?))
                }
                "EC PRIVATE KEY" => Some(KeyPair::Ecdsa(
                    EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
                        .map_err(|_| {
                            ClientKeyError::Unusable(
                                "the EC private key is malformed or not on P-256 (ES256)",
                            )
                        })?,
                )),
                "ENCRYPTED PRIVATE KEY" => {
                    return Err(ClientKeyError::Unusable(
                        "the private key is encrypted; store it unencrypted with restricted file permissions",
                    ));
                }
                _ => continue,
            };
            break;
        }
        let key_pair = key_pair.ok_or(ClientKeyError::Unusable(
            "no PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block in the key file",
        ))?;
        if let Some((_, certificate)) = blocks.iter().find(|(label, _)| *label == "CERTIFICATE") {
            // The certificate's subjectPublicKey BIT STRING holds exactly these bytes (RFC 5280
            // §4.1.2.7; RFC 8017 A.1.1 for RSA, RFC 5480 §2.2 for EC): a certificate of another
            // key would send providers looking for the wrong key.
            let public = public_key_bytes(&key_pair);
            if !certificate
                .windows(public.len())
                .any(|window| window == public)
            {
                return Err(ClientKeyError::Unusable(
                    "the CERTIFICATE in the key file is not the private key's",
                ));
            }
        }
        Ok(Self {
            key_pair,
            kid,
            certificate_thumbprint,
        })
    }

    /// The algorithms this key signs with, preferred first.
    pub fn algorithms(&self) -> &'static [Algorithm] {
        match self.key_pair {
            KeyPair::Rsa(_) => &[Algorithm::PS256, Algorithm::RS256],
            KeyPair::Ecdsa(_) => &[Algorithm::ES256],
        }
    }

    /// The `kid` its assertions carry.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The algorithm to sign with for a provider whose discovery lists `supported` for its
    /// endpoint (`None` when it lists nothing): ES256 for a P-256 key; for an RSA key PS256 when
    /// the provider lists it, else RS256 (the one every provider supports, OIDC Core §9).
    ///
    /// # Errors
    /// `NoCommonAlgorithm` when the provider lists algorithms and none is the key's.
    pub fn algorithm_for(&self, supported: Option<&[String]>) -> Result<Algorithm, ClientKeyError> {
        let own = self.algorithms();
        let Some(supported) = supported else {
            return Ok(own[own.len() - 1]);
        };
        own.iter()
            .copied()
            .find(|algorithm| {
                supported
                    .iter()
                    .any(|name| name.as_str() == algorithm_name(*algorithm))
            })
            .ok_or_else(|| ClientKeyError::NoCommonAlgorithm {
                offered: crate::untrusted::bounded(&supported.join(", ")),
                own: own
                    .iter()
                    .map(|algorithm| algorithm_name(*algorithm))
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Signs `claims` as a JWT (`typ` JWT) with `algorithm`, which must be one of
    /// `algorithms()`; the header carries the `kid` and the certificate's `x5t#S256` when known.
    ///
    /// # Errors
    /// `Sign` for an algorithm not of this key, or when signing fails.
    pub fn sign(
        &self,
        algorithm: Algorithm,
        claims: &serde_json::Value,
    ) -> Result<String, ClientKeyError> {
        if !self.algorithms().contains(&algorithm) {
            return Err(ClientKeyError::Sign(format!(
                "{} is not an algorithm of this key",
                algorithm_name(algorithm)
            )));
        }
        let mut header = Header::new(algorithm);
        header.typ = Some("JWT".to_owned());
        header.kid.clone_from(&self.kid);
        header.x5t_s256.clone_from(&self.certificate_thumbprint);
        compact(&header, claims, &self.key_pair)
            .map_err(|error| ClientKeyError::Sign(error.to_string()))
    }
}

/// The JWA name of one of the client key algorithms.
fn algorithm_name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::RS256 => "RS256",
        Algorithm::PS256 => "PS256",
        Algorithm::ES256 => "ES256",
        _ => "?",
    }
}

/// The public key as certificates carry it: RSAPublicKey DER, or the uncompressed EC point.
fn public_key_bytes(key_pair: &KeyPair) -> Vec<u8> {
    use aws_lc_rs::signature::KeyPair as _;
    match key_pair {
        KeyPair::Rsa(key_pair) => key_pair.public_key().as_ref().to_vec(),
        KeyPair::Ecdsa(key_pair) => key_pair.public_key().as_ref().to_vec(),
    }
}

fn parse_pkcs8(der: &[u8]) -> Result<KeyPair, ClientKeyError> {
    if let Ok(key_pair) = RsaKeyPair::from_pkcs8(der) {
        return Ok(KeyPair::Rsa(key_pair));
    }
    if let Ok(key_pair) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der) {
        return Ok(KeyPair::Ecdsa(key_pair));
    }
    Err(ClientKeyError::Unusable(
        "the PKCS#8 private key is not RSA of 2048 bits or more (RS256, PS256) or EC P-256 (ES256)",
    ))
}

/// The `-----BEGIN label-----` … `-----END label-----` blocks of `text` (RFC 7468), decoded.
fn pem_blocks(text: &str) -> Result<Vec<(&str, Vec<u8>)>, ClientKeyError> {
    let mut blocks = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut body = String::new();
        let mut closed = false;
        for line in lines.by_ref() {
            if line == end {
                closed = true;
                break;
            }
            body.push_str(line);
        }
        if !closed {
            return Err(ClientKeyError::Unusable("a PEM block is not closed"));
        }
        let der = STANDARD
            .decode(body)
            .map_err(|_| ClientKeyError::Unusable("a PEM block is not valid base64"))?;
        blocks.push((label, der));
    }
    Ok(blocks)
}

#[cfg(test)]
pub mod test_keys;
#[cfg(test)]
mod tests;
