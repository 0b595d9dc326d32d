//! JOSE primitives on top of `jsonwebtoken`: the allow-list of signature algorithms, JWK sets
//! turned into verifying keys, signing keys for the token service, and the client key that
//! signs `private_key_jwt` assertions. No IO but reading a key file.
//!
//! # Security
//! `none`, every HMAC algorithm and anything not listed in `ALLOWED` are refused before a key is
//! even looked up, and a key is used only with algorithms of its own type and curve.

mod client_key;
mod signing;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

#[cfg(test)]
pub use client_key::test_keys;
pub use client_key::{ClientKey, ClientKeyError};
pub use signing::{SigningKey, SigningKeyError};

/// The signature algorithms accepted anywhere (SPEC §6).
pub const ALLOWED: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Whether tokens signed with `algorithm` may be accepted at all.
pub fn is_allowed(algorithm: Algorithm) -> bool {
    ALLOWED.contains(&algorithm)
}

/// A public key from a JWK set, ready to verify signatures.
#[derive(Clone)]
pub struct VerifyingKey {
    /// The `kid`, when the JWK had one.
    pub kid: Option<String>,
    /// The algorithms this key may verify.
    algorithms: Vec<Algorithm>,
    /// The key itself.
    pub key: DecodingKey,
    /// The JWK's key parameters as JSON (`kty`, `n`, `e`, `crv`, `x`, `y`): what tells two
    /// keys under one `kid` apart.
    material: Box<[u8]>,
}

impl VerifyingKey {
    /// Whether this key may verify a signature made with `algorithm`.
    pub fn supports(&self, algorithm: Algorithm) -> bool {
        self.algorithms.contains(&algorithm)
    }
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish()
    }
}

/// The verifying keys of one issuer.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<VerifyingKey>,
}

/// A JWK set that could not be used at all.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// Not JSON, or no `keys` array. What the parser said is cut to `untrusted::REASON_MOST`
    /// bytes where it is shown: it may quote the document.
    #[error("not a JWK set: {}", crate::untrusted::cut(.0, crate::untrusted::REASON_MOST))]
    Malformed(String),
}

impl KeySet {
    /// Parses a JWK set document. Keys that are not signature keys (`use = enc`, symmetric,
    /// unknown types or curves) are skipped; a document without usable keys is still a set, an
    /// empty one.
    ///
    /// # Errors
    /// `JwksError::Malformed` when the document is not a JWK set.
    pub fn from_jwks_json(document: &[u8]) -> Result<Self, JwksError> {
        let value: serde_json::Value = serde_json::from_slice(document)
            .map_err(|error| JwksError::Malformed(error.to_string()))?;
        let entries = value
            .get("keys")
            .and_then(serde_json::Value::as_array)
            .ok_or_else(|| JwksError::Malformed("no `keys` array".to_owned()))?;
        let mut keys = Vec::new();
        for entry in entries {
            match serde_json::from_value::<Jwk>(entry.clone()) {
                Ok(jwk) => {
                    if let Some(key) = verifying_key(&jwk) {
                        keys.push(key);
                    }
                }
                Err(error) => tracing::debug!(%error, "skipping a JWK that cannot be parsed"),
            }
        }
        Ok(Self { keys })
    }

    /// A set holding the given public JWKs (used by the token service for its own keys).
    pub fn from_jwks(jwks: &[Jwk]) -> Self {
        Self {
            keys: jwks.iter().filter_map(verifying_key).collect(),
        }
    }

    /// The key for a token's `kid` and `alg`. Without a `kid`, the one key that supports the
    /// algorithm, if exactly one does.
    pub fn find(&self, kid: Option<&str>, algorithm: Algorithm) -> Option<&VerifyingKey> {
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|key| key.kid.as_deref() == Some(kid) && key.supports(algorithm)),
            None => {
                let mut candidates = self.keys.iter().filter(|key| key.supports(algorithm));
                let first = candidates.next()?;
                candidates.next().is_none().then_some(first)
            }
        }
    }

    /// Whether a key of `earlier` is not in this set (its `kid`, algorithms and key parameters
    /// all alike): a key the issuer withdrew, whose signatures no longer count.
    pub fn withdraws_any_of(&self, earlier: &KeySet) -> bool {
        earlier.keys.iter().any(|old| {
            !self.keys.iter().any(|new| {
                new.kid == old.kid
                    && new.algorithms == old.algorithms
                    && new.material == old.material
            })
        })
    }

    /// How many usable keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set has no usable key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Turns one JWK into a verifying key, or `None` when it is not a usable signature key.
fn verifying_key(jwk: &Jwk) -> Option<VerifyingKey> {
    // RFC 7517 §4.2, §4.3: a key whose `use` is anything but `sig`, or whose `key_ops` leave
    // out `verify`, is not for checking signatures.
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|used| *used != PublicKeyUse::Signature)
        || jwk
            .common
            .key_operations
            .as_ref()
            .is_some_and(|operations| !operations.contains(&KeyOperations::Verify))
    {
        return None;
    }
    let by_type: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => {
            vec![
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
            ]
        }
        AlgorithmParameters::EllipticCurve(parameters) => match parameters.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(parameters) => match parameters.curve {
            EllipticCurve::Ed25519 => vec![Algorithm::EdDSA],
            _ => return None,
        },
        // Symmetric keys are never used: accepting them is how HMAC confusion starts.
        _ => return None,
    };
    let algorithms: Vec<Algorithm> = match jwk.common.key_algorithm {
        None => by_type,
        Some(declared) => {
            let declared = algorithm_of(declared)?;
            if !by_type.contains(&declared) {
                return None;
            }
            vec![declared]
        }
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    let material = serde_json::to_vec(&jwk.algorithm).ok()?.into_boxed_slice();
    Some(VerifyingKey {
        kid: jwk.common.key_id.clone(),
        algorithms,
        key,
        material,
    })
}

fn algorithm_of(key_algorithm: jsonwebtoken::jwk::KeyAlgorithm) -> Option<Algorithm> {
    use jsonwebtoken::jwk::KeyAlgorithm as K;
    Some(match key_algorithm {
        K::RS256 => Algorithm::RS256,
        K::RS384 => Algorithm::RS384,
        K::RS512 => Algorithm::RS512,
        K::PS256 => Algorithm::PS256,
        K::PS384 => Algorithm::PS384,
        K::PS512 => Algorithm::PS512,
        K::ES256 => Algorithm::ES256,
        K::ES384 => Algorithm::ES384,
        K::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_document_says_is_cut_where_it_is_shown() {
        let long = "x".repeat(100_000);
        let shown = JwksError::Malformed(long.clone()).to_string();
        assert!(
            shown.len() <= crate::untrusted::REASON_MOST + 20,
            "{}",
            shown.len()
        );
    }

    #[test]
    fn a_set_withdraws_a_key_it_no_longer_holds_alike() {
        let set = |keys: &[(&str, &str)]| {
            let jwks: Vec<String> = keys
                .iter()
                .map(|(kid, point)| {
                    format!(r#"{{"kty":"EC","crv":"P-256","kid":"{kid}",{point}}}"#)
                })
                .collect();
            KeySet::from_jwks_json(format!(r#"{{"keys":[{}]}}"#, jwks.join(",")).as_bytes())
                .unwrap()
        };
        let a = r#""x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0""#;
        let b = r#""x":"axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY","y":"T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU""#;
        let before = set(&[("1", a)]);
        assert_eq!(before.len(), 1);
        assert!(!set(&[("1", a)]).withdraws_any_of(&before), "the same key");
        assert!(
            !set(&[("2", b), ("1", a)]).withdraws_any_of(&before),
            "one added"
        );
        assert!(set(&[("2", b)]).withdraws_any_of(&before), "one removed");
        assert!(
            set(&[("1", b)]).withdraws_any_of(&before),
            "another key under its kid"
        );
        let declared = KeySet::from_jwks_json(
            format!(r#"{{"keys":[{{"kty":"EC","crv":"P-256","kid":"1","alg":"ES256",{a}}}]}}"#)
                .as_bytes(),
        )
        .unwrap();
        assert!(
            !declared.withdraws_any_of(&before),
            "the algorithms it verifies alike"
        );
        assert!(!before.withdraws_any_of(&KeySet::default()));
    }

    #[test]
    fn symmetric_and_encryption_keys_are_skipped() {
        let document = br#"{"keys":[
            {"kty":"oct","k":"c2VjcmV0","kid":"h"},
            {"kty":"EC","crv":"P-256","use":"enc","kid":"e",
             "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"EC","crv":"P-256","kid":"s",
             "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
        ]}"#;
        let set = KeySet::from_jwks_json(document).unwrap();
        assert_eq!(set.len(), 1);
        assert!(set.find(Some("s"), Algorithm::ES256).is_some());
        // Any `use` but `sig`, or `key_ops` without `verify`: not a signature key either.
        let key = r#""kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0""#;
        for (extra, usable) in [
            (r#""use":"sig""#, true),
            (r#""key_ops":["verify"]"#, true),
            (r#""key_ops":["sign","verify"]"#, true),
            (r#""use":"tls""#, false),
            (r#""key_ops":["encrypt"]"#, false),
            (r#""key_ops":[]"#, false),
        ] {
            let document = format!(r#"{{"keys":[{{{key},{extra},"kid":"k"}}]}}"#);
            let set = KeySet::from_jwks_json(document.as_bytes()).unwrap();
            assert_eq!(set.len(), usize::from(usable), "{extra}");
        }
        assert!(set.find(Some("s"), Algorithm::RS256).is_none());
        assert!(set.find(Some("h"), Algorithm::HS256).is_none());
        assert!(set.find(Some("e"), Algorithm::ES256).is_none());
    }

    #[test]
    fn not_a_jwks_is_an_error() {
        assert!(KeySet::from_jwks_json(b"{}").is_err());
        assert!(KeySet::from_jwks_json(b"nope").is_err());
    }

    #[test]
    fn hmac_and_none_are_not_allowed() {
        assert!(!is_allowed(Algorithm::HS256));
        assert!(is_allowed(Algorithm::EdDSA));
    }
}
