//! The tokens the token service mints: access tokens (`at+jwt`, RFC 9068) and ID tokens
//! (OIDC Core §2) for a user or a client, signed with the service's key.

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::{IssuerError, TokenService};
use crate::clock::UnixTime;
use crate::config::{ClientConfig, UserConfig};
use crate::oidc::TokenResponse;
use crate::token::id_token::left_half_hash;

/// The successful answer of `/token` (RFC 6749 §5.1).
#[derive(Debug, Serialize)]
pub(super) struct IssuedTokens {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

impl IssuedTokens {
    /// The answer as the in-process provider hands it to a login.
    pub(super) fn into_token_response(self) -> TokenResponse {
        TokenResponse {
            access_token: self.access_token,
            id_token: self.id_token,
            refresh_token: self.refresh_token,
            expires_in: Some(self.expires_in),
            token_type: Some("Bearer".to_owned()),
        }
    }
}

/// What an ID token says of the login it comes from.
pub(super) struct Login<'a> {
    /// The client's `nonce`, on the ID token of the code's redemption.
    pub nonce: Option<&'a str>,
    /// When the user logged in: the same on every ID token of a grant.
    pub auth_time: Option<UnixTime>,
}

impl TokenService {
    fn base_claims(
        &self,
        subject: String,
        audience: &str,
        scopes: &[String],
        (jti, now): (String, UnixTime),
    ) -> Map<String, Value> {
        let lifetime = self.lifetime();
        let mut claims = Map::new();
        claims.insert("iss".into(), json!(self.issuer()));
        claims.insert("sub".into(), json!(subject));
        claims.insert("aud".into(), json!(audience));
        claims.insert("iat".into(), json!(now));
        claims.insert("nbf".into(), json!(now));
        claims.insert("exp".into(), json!(now.saturating_add(lifetime)));
        claims.insert("jti".into(), json!(jti));
        if !scopes.is_empty() {
            claims.insert("scope".into(), json!(scopes.join(" ")));
        }
        claims
    }

    fn sign(&self, typ: &str, claims: Map<String, Value>) -> Result<String, IssuerError> {
        #[cfg(test)]
        self.signatures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.signing_key
            .sign(typ, &Value::Object(claims))
            .map_err(|error| {
                tracing::error!(%error, "signing failed");
                IssuerError::ServerError
            })
    }

    pub(super) fn lifetime(&self) -> i64 {
        i64::try_from(self.config.token_lifetime.as_secs()).unwrap_or(i64::MAX)
    }

    pub(super) fn client_credentials(
        &self,
        client: &ClientConfig,
        scopes: &[String],
    ) -> Result<IssuedTokens, IssuerError> {
        let mut claims = self.base_claims(
            format!("{}:{}", client.source, client.client_id),
            &client.audience,
            scopes,
            (crate::random::token(), self.now()),
        );
        claims.insert("client_id".into(), json!(client.client_id));
        for (name, value) in &client.extra_claims {
            claims.entry(name.clone()).or_insert_with(|| value.clone());
        }
        let access_token = self.sign("at+jwt", claims)?;
        Ok(IssuedTokens {
            access_token,
            token_type: "Bearer",
            expires_in: self.lifetime(),
            id_token: None,
            scope: Some(scopes.join(" ")).filter(|s| !s.is_empty()),
            refresh_token: None,
        })
    }

    /// The identity and claims of a principal: a local user as configured (who must still
    /// exist), a federated user with the claims carried over.
    pub(super) fn identity_of(
        &self,
        principal: &super::Principal,
    ) -> Result<(String, Map<String, Value>), IssuerError> {
        match principal {
            super::Principal::Federated { sub, claims, .. } => Ok((sub.clone(), claims.clone())),
            super::Principal::Local(username) => {
                let user = self
                    .config
                    .users
                    .iter()
                    .find(|user| &user.username == username)
                    .ok_or_else(|| IssuerError::InvalidGrant("user no longer exists".to_owned()))?;
                Ok((user.username.clone(), local_claims(user)))
            }
        }
    }

    /// Access and ID tokens for a user; `grant_id` becomes their `sid`, and the access token
    /// gets `jti`, issued at `now`; the ID token tells of `login`.
    pub(super) fn user_tokens(
        &self,
        client: &ClientConfig,
        principal: &super::Principal,
        scopes: &[String],
        login: Login<'_>,
        grant_id: Option<&str>,
        (jti, now): (String, UnixTime),
    ) -> Result<IssuedTokens, IssuerError> {
        let (identity_id, mut identity) = self.identity_of(principal)?;
        let subject = format!("{}:{identity_id}", client.source);
        if let Some(grant_id) = grant_id {
            identity.insert("sid".into(), json!(grant_id));
        }
        let mut access = self.base_claims(subject.clone(), &client.audience, scopes, (jti, now));
        access.insert("client_id".into(), json!(client.client_id));
        for (name, value) in identity.iter().chain(client.extra_claims.iter()) {
            access.entry(name.clone()).or_insert_with(|| value.clone());
        }
        let access_token = self.sign("at+jwt", access)?;
        let id_token = if scopes.iter().any(|scope| scope == "openid") {
            let mut id = self.base_claims(
                subject,
                &client.client_id,
                &[],
                (crate::random::token(), now),
            );
            id.remove("nbf");
            if let Some(auth_time) = login.auth_time {
                id.insert("auth_time".into(), json!(auth_time));
            }
            if let Some(nonce) = login.nonce {
                id.insert("nonce".into(), json!(nonce));
            }
            id.insert(
                "at_hash".into(),
                json!(left_half_hash(self.signing_key.algorithm(), &access_token)),
            );
            for (name, value) in identity {
                id.entry(name).or_insert(value);
            }
            Some(self.sign("JWT", id)?)
        } else {
            None
        };
        let issued = IssuedTokens {
            access_token,
            token_type: "Bearer",
            expires_in: self.lifetime(),
            id_token,
            scope: Some(scopes.join(" ")),
            refresh_token: None,
        };
        Ok(issued)
    }
}

/// The claims of a local user.
fn local_claims(user: &UserConfig) -> Map<String, Value> {
    let mut identity = Map::new();
    if let Some(name) = &user.name {
        identity.insert("name".into(), json!(name));
    }
    identity.insert("preferred_username".into(), json!(user.username));
    if let Some(email) = &user.email {
        identity.insert("email".into(), json!(email));
    }
    if !user.groups.is_empty() {
        identity.insert("groups".into(), json!(user.groups));
    }
    for (name, value) in &user.claims {
        identity
            .entry(name.clone())
            .or_insert_with(|| value.clone());
    }
    identity
}
