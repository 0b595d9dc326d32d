//! What the token service remembers about what it issued: grants (one per login), their
//! refresh tokens with rotation and reuse detection (RFC 6749 §10.4, OAuth 2.0 Security BCP
//! §4.14: a reused refresh token ends the whole grant), used codes (a replayed code revokes
//! what it issued, RFC 6749 §4.1.2), and revoked access tokens (RFC 7009). Kept in memory.

use std::collections::HashMap;

use crate::clock::UnixTime;

/// One login's grant.
#[derive(Debug, Clone)]
pub(super) struct Grant {
    pub client_id: String,
    pub principal: super::Principal,
    pub scopes: Vec<String>,
    pub revoked: bool,
}

#[derive(Debug, Clone)]
struct RefreshRecord {
    grant_id: String,
    used: bool,
    expires_at: UnixTime,
}

/// What a redeemed code issued, kept to revoke it if the code comes back.
#[derive(Debug, Clone)]
struct UsedCode {
    grant_id: Option<String>,
    access_jti: String,
    access_expires_at: UnixTime,
    used_at: UnixTime,
}

/// How long a used code is remembered.
const USED_CODE_MEMORY: i64 = 600;

/// The result of presenting a refresh token.
pub(super) enum RefreshUse {
    /// Valid: the grant it belongs to, now spent.
    Fresh(String, Grant),
    /// Already used: the grant has been revoked.
    Reused,
    /// Unknown, expired or of a revoked grant.
    Invalid,
}

/// Everything the token service remembers, behind one lock.
#[derive(Debug, Default)]
pub(super) struct GrantBook {
    grants: HashMap<String, Grant>,
    refresh_tokens: HashMap<[u8; 32], RefreshRecord>,
    used_codes: HashMap<String, UsedCode>,
    revoked_access: HashMap<String, UnixTime>,
}

pub(super) fn hash(token: &str) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

impl GrantBook {
    /// Starts a grant; returns its id.
    pub fn open_grant(
        &mut self,
        client_id: &str,
        principal: &super::Principal,
        scopes: &[String],
    ) -> String {
        let id = crate::random::token();
        self.grants.insert(
            id.clone(),
            Grant {
                client_id: client_id.to_owned(),
                principal: principal.clone(),
                scopes: scopes.to_vec(),
                revoked: false,
            },
        );
        id
    }

    /// A new refresh token for a grant.
    pub fn issue_refresh_token(&mut self, grant_id: &str, expires_at: UnixTime) -> String {
        let token = crate::random::token();
        self.refresh_tokens.insert(
            hash(&token),
            RefreshRecord {
                grant_id: grant_id.to_owned(),
                used: false,
                expires_at,
            },
        );
        token
    }

    /// Spends a refresh token presented by `client_id`.
    pub fn use_refresh_token(&mut self, token: &str, client_id: &str, now: UnixTime) -> RefreshUse {
        let Some(record) = self.refresh_tokens.get_mut(&hash(token)) else {
            return RefreshUse::Invalid;
        };
        let grant_id = record.grant_id.clone();
        if record.used {
            self.revoke_grant(&grant_id);
            return RefreshUse::Reused;
        }
        let Some(grant) = self.grants.get(&grant_id) else {
            return RefreshUse::Invalid;
        };
        if grant.revoked || grant.client_id != client_id || now >= record.expires_at {
            return RefreshUse::Invalid;
        }
        record.used = true;
        RefreshUse::Fresh(grant_id, grant.clone())
    }

    /// Ends a grant: its refresh tokens stop working, and so do its access tokens.
    pub fn revoke_grant(&mut self, grant_id: &str) {
        if let Some(grant) = self.grants.get_mut(grant_id) {
            grant.revoked = true;
        }
    }

    /// Whether the grant exists and was revoked.
    pub fn is_revoked(&self, grant_id: &str) -> bool {
        self.grants.get(grant_id).is_some_and(|grant| grant.revoked)
    }

    /// The grant of a refresh token presented by `client_id`, for `/revoke`.
    pub fn grant_of_refresh_token(&self, token: &str, client_id: &str) -> Option<String> {
        let record = self.refresh_tokens.get(&hash(token))?;
        let grant = self.grants.get(&record.grant_id)?;
        (grant.client_id == client_id).then(|| record.grant_id.clone())
    }

    /// Remembers what a code issued.
    pub fn record_code(
        &mut self,
        code: &str,
        grant_id: Option<String>,
        access_jti: String,
        access_expires_at: UnixTime,
        now: UnixTime,
    ) {
        self.used_codes
            .retain(|_, used| now - used.used_at <= USED_CODE_MEMORY);
        self.used_codes.insert(
            code.to_owned(),
            UsedCode {
                grant_id,
                access_jti,
                access_expires_at,
                used_at: now,
            },
        );
    }

    /// A code came back: revoke what it issued. Returns whether it was a known, used code.
    pub fn replayed_code(&mut self, code: &str) -> bool {
        let Some(used) = self.used_codes.get(code).cloned() else {
            return false;
        };
        if let Some(grant_id) = &used.grant_id {
            self.revoke_grant(grant_id);
        }
        self.revoked_access
            .insert(used.access_jti, used.access_expires_at);
        true
    }

    /// Revokes one access token until it would have expired.
    pub fn revoke_access(&mut self, jti: &str, expires_at: UnixTime, now: UnixTime) {
        self.revoked_access.retain(|_, until| *until > now);
        self.revoked_access.insert(jti.to_owned(), expires_at);
    }

    /// Whether an access token (by `jti`) was revoked.
    pub fn is_access_revoked(&self, jti: &str) -> bool {
        self.revoked_access.contains_key(jti)
    }
}
