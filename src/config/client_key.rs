//! `client_auth = "private_key_jwt"` (SPEC §3): the client key named in a `[[provider]]`,
//! parsed at load, and how its assertions are addressed.

use std::path::PathBuf;
use std::sync::Arc;

use crate::jose::{ClientKey, ClientKeyError};

/// The key Tollgate signs client assertions with at one provider.
#[derive(Debug, Clone)]
pub struct ClientKeyConfig {
    /// `client_key_file`: read again by `reload`.
    pub file: PathBuf,
    /// `client_key_id`: the `kid` of the assertions.
    pub key_id: Option<String>,
    /// The key, parsed once.
    pub key: Arc<ClientKey>,
    /// `client_assertion_audience`.
    pub audience: AssertionAudience,
}

impl ClientKeyConfig {
    /// Reads and parses `file` with `key_id`.
    ///
    /// # Errors
    /// When the file cannot be read or holds no usable key.
    pub fn load(
        file: PathBuf,
        key_id: Option<String>,
        audience: AssertionAudience,
    ) -> Result<Self, ClientKeyError> {
        let key = ClientKey::load(&file, key_id.clone())?;
        Ok(Self {
            file,
            key_id,
            key: Arc::new(key),
            audience,
        })
    }

    /// The same settings with the key file read again (a rotated key).
    ///
    /// # Errors
    /// As `load`; the caller keeps the old key then.
    pub fn reload(&self) -> Result<Self, ClientKeyError> {
        Self::load(self.file.clone(), self.key_id.clone(), self.audience)
    }
}

/// The `aud` of a client assertion (`client_assertion_audience`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssertionAudience {
    /// The provider's issuer identifier (the default).
    Issuer,
    /// The URL of the endpoint the assertion is sent to: the token endpoint, or the
    /// introspection endpoint for introspection (Okta, Entra ID).
    Endpoint,
}

#[cfg(test)]
mod tests;
