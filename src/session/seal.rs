//! AEAD sealing of cookie values with rotating secrets (SPEC §5): AES-256-GCM, one key per
//! secret line derived with HKDF-SHA256, the first secret seals and every secret opens. The
//! cookie's purpose is the associated data, so a value sealed for one cookie cannot be replayed
//! as another.
//!
//! Format (base64url): version `1` ‖ key id (4 bytes) ‖ nonce (12 bytes) ‖ ciphertext ‖ tag.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::secret::Secret;

const VERSION: u8 = 1;
const KEY_ID_LEN: usize = 4;

/// Seals and opens cookie values.
pub struct Sealer {
    keys: Vec<([u8; KEY_ID_LEN], LessSafeKey)>,
}

/// A sealed value that could not be opened: tampered, truncated, for another purpose, or
/// sealed with a secret no longer listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("sealed value cannot be opened")]
pub struct OpenError;

impl Sealer {
    /// A sealer from secret lines; the first seals.
    pub fn new(secrets: &[Secret<String>]) -> Self {
        let keys = secrets
            .iter()
            .filter_map(|secret| derive(secret.expose().as_bytes()))
            .collect();
        Self { keys }
    }

    /// Encrypts `plaintext` for `purpose`.
    ///
    /// # Errors
    /// `OpenError` when there is no secret to seal with.
    pub fn seal(&self, purpose: &str, plaintext: &[u8]) -> Result<String, OpenError> {
        let (key_id, key) = self.keys.first().ok_or(OpenError)?;
        let nonce_bytes = crate::random::bytes::<NONCE_LEN>();
        let mut buffer = plaintext.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce_bytes),
            Aad::from(purpose.as_bytes()),
            &mut buffer,
        )
        .map_err(|_| OpenError)?;
        let mut output = Vec::with_capacity(1 + KEY_ID_LEN + NONCE_LEN + buffer.len());
        output.push(VERSION);
        output.extend_from_slice(key_id);
        output.extend_from_slice(&nonce_bytes);
        output.extend_from_slice(&buffer);
        Ok(URL_SAFE_NO_PAD.encode(output))
    }

    /// Decrypts a value sealed for `purpose`.
    ///
    /// # Errors
    /// `OpenError` for anything that is not an intact value sealed by a listed secret.
    pub fn open(&self, purpose: &str, sealed: &str) -> Result<Vec<u8>, OpenError> {
        let bytes = URL_SAFE_NO_PAD.decode(sealed).map_err(|_| OpenError)?;
        let (&version, rest) = bytes.split_first().ok_or(OpenError)?;
        if version != VERSION || rest.len() < KEY_ID_LEN + NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(OpenError);
        }
        let (key_id, rest) = rest.split_at(KEY_ID_LEN);
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let (_, key) = self
            .keys
            .iter()
            .find(|(id, _)| id.as_slice() == key_id)
            .ok_or(OpenError)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenError)?;
        let mut buffer = ciphertext.to_vec();
        let plaintext = key
            .open_in_place(nonce, Aad::from(purpose.as_bytes()), &mut buffer)
            .map_err(|_| OpenError)?;
        Ok(plaintext.to_vec())
    }
}

/// HKDF-SHA256 from one secret line to an AES-256 key and a key id.
fn derive(secret: &[u8]) -> Option<([u8; KEY_ID_LEN], LessSafeKey)> {
    use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
    let prk = Salt::new(HKDF_SHA256, b"tollgate session seal v1").extract(secret);
    let mut key_bytes = [0u8; 32];
    prk.expand(&[b"aes-256-gcm key"], &AES_256_GCM)
        .ok()?
        .fill(&mut key_bytes)
        .ok()?;
    let mut key_id = [0u8; KEY_ID_LEN];
    prk.expand(&[b"key id"], KeyIdLen)
        .ok()?
        .fill(&mut key_id)
        .ok()?;
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key_bytes).ok()?);
    Some((key_id, key))
}

struct KeyIdLen;

impl aws_lc_rs::hkdf::KeyType for KeyIdLen {
    fn len(&self) -> usize {
        KEY_ID_LEN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(lines: &[&str]) -> Sealer {
        Sealer::new(
            &lines
                .iter()
                .map(|line| Secret::new((*line).to_owned()))
                .collect::<Vec<_>>(),
        )
    }

    const OLD: &str = "old-secret-old-secret-old-secret-0";
    const NEW: &str = "new-secret-new-secret-new-secret-1";

    #[test]
    fn round_trip_and_rotation() {
        let sealed_with_old = sealer(&[OLD]).seal("session", b"hello").unwrap();
        let rotated = sealer(&[NEW, OLD]);
        assert_eq!(rotated.open("session", &sealed_with_old).unwrap(), b"hello");
        let sealed_with_new = rotated.seal("session", b"again").unwrap();
        assert_eq!(
            sealer(&[NEW]).open("session", &sealed_with_new).unwrap(),
            b"again"
        );
        assert_eq!(
            sealer(&[NEW]).open("session", &sealed_with_old),
            Err(OpenError)
        );
    }

    #[test]
    fn tampered_truncated_and_misused_values_fail() {
        let sealer = sealer(&[NEW]);
        let sealed = sealer.seal("session", b"hello").unwrap();
        assert_eq!(sealer.open("state", &sealed), Err(OpenError));
        assert_eq!(
            sealer.open("session", &sealed[..sealed.len() - 2]),
            Err(OpenError)
        );
        let mut bytes = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(
            sealer.open("session", &URL_SAFE_NO_PAD.encode(&bytes)),
            Err(OpenError)
        );
        for garbage in ["", "!!!", "AA", &"A".repeat(100)] {
            assert_eq!(sealer.open("session", garbage), Err(OpenError));
        }
    }
}
