//! `POST /token`: the `authorization_code` grant with PKCE (RFC 6749 §4.1, RFC 7636) and the
//! `client_credentials` grant (RFC 6749 §4.4), the `refresh_token` grant with rotation, and
//! `POST /revoke` (RFC 7009). What they hand out is minted in `minting`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use super::clients::presented_client;
use super::minting::{IssuedTokens, Login};
use super::state::{CodeUse, Grant, PendingCode, Redemption, RefreshUse, Successor};
use super::{CODE_LIFETIME, IssuerError, TokenService};
use crate::clock::UnixTime;
use crate::config::{ClientConfig, GrantType};
use crate::metrics::GrantLabels;
use crate::secret::constant_time_eq;

/// How long a refresh token of the token service lives.
const REFRESH_TOKEN_LIFETIME: i64 = 24 * 3600;

pub(super) async fn token(
    State(service): State<Arc<TokenService>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let client = service.client_address(peer.ip(), &headers);
    let result = handle_token(&service, &headers, &body, Some(client)).await;
    let grant_label = |grant| GrantLabels { grant };
    match result {
        Ok((grant, issued)) => {
            service
                .metrics
                .tokens_issued
                .get_or_create(&grant_label(grant))
                .inc();
            service.metrics.request("token_service", "issued");
            let mut response = axum::Json(issued).into_response();
            let headers = response.headers_mut();
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            // RFC 6749 §5.1 asks for it beside `no-store`, for HTTP/1.0 caches.
            headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            response
        }
        Err(error) => {
            crate::refused!(service.metrics, "token_service", &error);
            error.into_response()
        }
    }
}

async fn handle_token(
    service: &TokenService,
    headers: &HeaderMap,
    body: &[u8],
    peer: Option<std::net::IpAddr>,
) -> Result<(&'static str, IssuedTokens), IssuerError> {
    let form = super::single_valued(body).map_err(IssuerError::InvalidRequest)?;
    let field = |name: &str| {
        form.get(name)
            .map(String::as_str)
            .filter(|value| !value.is_empty())
    };
    let grant_type = field("grant_type")
        .ok_or_else(|| IssuerError::InvalidRequest("missing grant_type".to_owned()))?;
    let presented = presented_client(headers, field("client_id"), field("client_secret"))?;
    match grant_type {
        "authorization_code" => {
            let client = service.authenticate_client(presented, peer).await?;
            require_grant(client, GrantType::AuthorizationCode)?;
            let code = field("code")
                .ok_or_else(|| IssuerError::InvalidRequest("missing code".to_owned()))?;
            let issued = service
                .redeem_code(client, code, field("redirect_uri"), field("code_verifier"))
                .await?;
            Ok(("authorization_code", issued))
        }
        "refresh_token" => {
            let client = service.authenticate_client(presented, peer).await?;
            require_grant(client, GrantType::RefreshToken)?;
            let refresh_token = field("refresh_token")
                .ok_or_else(|| IssuerError::InvalidRequest("missing refresh_token".to_owned()))?;
            Ok((
                "refresh_token",
                service
                    .redeem_refresh_token(client, refresh_token, field("scope"))
                    .await?,
            ))
        }
        "client_credentials" => {
            let client = service.authenticate_client(presented, peer).await?;
            require_grant(client, GrantType::ClientCredentials)?;
            let scopes = granted_scopes(client, field("scope"))?;
            Ok((
                "client_credentials",
                service.client_credentials(client, &scopes)?,
            ))
        }
        _ => Err(IssuerError::UnsupportedGrantType),
    }
}

fn require_grant(client: &ClientConfig, grant: GrantType) -> Result<(), IssuerError> {
    if client.grants.contains(&grant) {
        Ok(())
    } else {
        Err(IssuerError::UnauthorizedClient)
    }
}

/// The scopes granted for a request: all requested must be allowed; none requested means all
/// the client may have (RFC 6749 §3.3).
fn granted_scopes(
    client: &ClientConfig,
    requested: Option<&str>,
) -> Result<Vec<String>, IssuerError> {
    match requested {
        None => Ok(client.scopes.clone()),
        Some(text) => {
            let scopes: Vec<String> = text
                .split(' ')
                .filter(|scope| !scope.is_empty())
                .map(str::to_owned)
                .collect();
            if scopes.iter().all(|scope| client.scopes.contains(scope)) {
                Ok(scopes)
            } else {
                Err(IssuerError::InvalidScope)
            }
        }
    }
}

impl TokenService {
    /// Stores a new authorization code and returns it.
    pub(super) async fn store_code(&self, pending: PendingCode) -> Result<String, IssuerError> {
        let code = crate::random::token();
        self.state
            .put_code(
                &stored_code(&pending.client_id, &code, pending.code_challenge.as_deref()),
                &pending,
            )
            .await?;
        Ok(code)
    }

    /// Redeems an authorization code once (RFC 6749 §4.1.3, RFC 7636 §4.6). What it will issue
    /// is decided before the code is taken, so the store marks the code used together with
    /// that record: a replay on any replica revokes it (RFC 6749 §4.1.2).
    pub(super) async fn redeem_code(
        &self,
        client: &ClientConfig,
        code: &str,
        redirect_uri: Option<&str>,
        code_verifier: Option<&str>,
    ) -> Result<IssuedTokens, IssuerError> {
        let now = self.now();
        let redemption = Redemption {
            grant_id: client
                .grants
                .contains(&GrantType::RefreshToken)
                .then(crate::random::token),
            access_jti: crate::random::token(),
            // Kept as long as validation accepts the token: its `exp` plus the leeway.
            access_expires_at: now
                .saturating_add(self.lifetime())
                .saturating_add(self.leeway),
        };
        // Only a code this service could have made is looked for: its client's name and the
        // code are one key, and a made-up code must not reach across to another client's.
        if !is_token_shaped(code) {
            return Err(IssuerError::InvalidGrant(
                "unknown or expired code".to_owned(),
            ));
        }
        // RFC 7636 §4.6: the verifier's challenge is a part of the code's key, so a redemption
        // without the right verifier finds nothing.
        let challenge = match code_verifier {
            Some(verifier) if !is_valid_verifier(verifier) => {
                return Err(IssuerError::InvalidRequest(
                    "malformed code_verifier".to_owned(),
                ));
            }
            Some(verifier) => Some(s256(verifier)),
            None => None,
        };
        let stored_as = stored_code(&client.client_id, code, challenge.as_deref());
        let pending = match self.state.take_code(&stored_as, &redemption, now).await? {
            CodeUse::Pending(pending) => pending,
            CodeUse::Replayed => {
                tracing::warn!(client_id = %client.client_id, "authorization code replayed; what it issued is revoked");
                return Err(IssuerError::InvalidGrant(
                    "code already used; the tokens it issued are revoked".to_owned(),
                ));
            }
            CodeUse::Unknown => {
                return Err(IssuerError::InvalidGrant(
                    "unknown or expired code, or not its code_verifier".to_owned(),
                ));
            }
        };
        check_redemption(&pending, client, redirect_uri, code_verifier, now)?;
        if !pending.principal.signs_in_at(client, &self.providers) {
            return Err(IssuerError::InvalidGrant(
                "the client signs its users in elsewhere now; sign in again".to_owned(),
            ));
        }
        // The client as configured now, as at a refresh: a scope a reload took from it in the
        // code's minute is not granted.
        let scopes: Vec<String> = pending
            .scopes
            .iter()
            .filter(|scope| super::may_ask_for(client, scope))
            .cloned()
            .collect();
        let grant_until = self.grant_until(now);
        if let Some(grant_id) = &redemption.grant_id {
            let grant = Grant {
                client_id: client.client_id.clone(),
                principal: pending.principal.clone(),
                scopes: scopes.clone(),
                auth_time: Some(pending.issued_at),
                signed_in: pending.signed_in,
            };
            self.state
                .open_grant(grant_id, &grant, grant_until, now)
                .await?;
        }
        let mut issued = self.user_tokens(
            client,
            &pending.principal,
            &scopes,
            Login {
                nonce: pending.nonce.as_deref(),
                auth_time: pending.signed_in.auth_time(pending.issued_at),
            },
            redemption.grant_id.as_deref(),
            (redemption.access_jti.clone(), now),
        )?;
        if let Some(grant_id) = &redemption.grant_id {
            issued.refresh_token = Some(
                self.state
                    .issue_refresh_token(
                        grant_id,
                        self.refresh_token_until(pending.issued_at, now),
                        grant_until,
                        now,
                    )
                    .await?,
            );
        }
        Ok(issued)
    }

    /// When the sign-in at `auth_time` ends for its grant: `session.lifetime` on. Refreshing
    /// never asks the upstream provider again, so without an end a user it has disabled would
    /// keep getting tokens for as long as a client kept refreshing.
    fn sign_in_ends(&self, auth_time: UnixTime) -> UnixTime {
        let lifetime = i64::try_from(self.config.grant_lifetime.as_secs()).unwrap_or(i64::MAX);
        auth_time.saturating_add(lifetime)
    }

    /// When a refresh token issued at `now` for the sign-in at `auth_time` expires: a day on,
    /// never past the sign-in's end.
    fn refresh_token_until(&self, auth_time: UnixTime, now: UnixTime) -> UnixTime {
        now.saturating_add(REFRESH_TOKEN_LIFETIME)
            .min(self.sign_in_ends(auth_time))
    }

    /// How long a grant made or refreshed at `now` is kept: past its last refresh token and
    /// the last access token that token could mint, so its revocation outlives both.
    fn grant_until(&self, now: UnixTime) -> UnixTime {
        now.saturating_add(grant_life(self.lifetime()))
    }

    /// Spends a refresh token (rotation: a new one comes back; a reused one revokes the grant).
    /// Everything that can refuse the request for a while or fail is done before the token is
    /// spent, and the spend and its successor are one store step: a refused or failed request
    /// leaves the token usable (RFC 6749 §6), so its retry is no reuse, which would end the
    /// grant. The tokens are signed only after the spend: a dead, spent or exhausted refresh
    /// token, which a public client may present without a secret again and again, costs no
    /// signature. Only a failed signature, which a loaded key does not give, then spends the
    /// token for nothing (the user signs in again).
    pub(super) async fn redeem_refresh_token(
        &self,
        client: &ClientConfig,
        refresh_token: &str,
        requested_scope: Option<&str>,
    ) -> Result<IssuedTokens, IssuerError> {
        let now = self.now();
        let unknown =
            || IssuerError::InvalidGrant("unknown, expired or revoked refresh token".to_owned());
        let grant_id = self
            .state
            .refresh_token_grant(refresh_token)
            .ok_or_else(unknown)?;
        let grant = self
            .state
            .grant(grant_id, &client.client_id)
            .await?
            .ok_or_else(unknown)?;
        let mut scopes = match requested_scope {
            None => grant.scopes.clone(),
            Some(text) => {
                let asked: Vec<String> = text
                    .split(' ')
                    .filter(|scope| !scope.is_empty())
                    .map(str::to_owned)
                    .collect();
                if !asked.iter().all(|scope| grant.scopes.contains(scope)) {
                    return Err(IssuerError::InvalidScope);
                }
                asked
            }
        };
        // A grant stored without its sign-in's time (by an older Tollgate) has no known end.
        let Some(auth_time) = grant.auth_time.filter(|at| self.sign_in_ends(*at) > now) else {
            return Err(IssuerError::InvalidGrant(
                "the sign-in is older than session.lifetime; sign in again".to_owned(),
            ));
        };
        // The client as configured now: a scope a reload took from it is not granted again, nor
        // a user of where it no longer signs its users in.
        scopes.retain(|scope| super::may_ask_for(client, scope));
        if !grant.principal.signs_in_at(client, &self.providers) {
            return Err(IssuerError::InvalidGrant(
                "the client signs its users in elsewhere now; sign in again".to_owned(),
            ));
        }
        // The user still exists (a reload may have removed a local one): a refusal before the
        // spend, so that a user put back by another reload keeps the grant.
        self.identity_of(&grant.principal)?;
        let successor = Successor {
            expires_at: self.refresh_token_until(auth_time, now),
            grant_until: self.grant_until(now),
            rotations_most: self.rotations_most(),
        };
        match self
            .state
            .rotate_refresh_token(refresh_token, &client.client_id, successor, now)
            .await?
        {
            RefreshUse::Fresh(next) => {
                let mut issued = self.user_tokens(
                    client,
                    &grant.principal,
                    &scopes,
                    Login {
                        nonce: None,
                        auth_time: grant.signed_in.auth_time(auth_time),
                    },
                    Some(grant_id),
                    (crate::random::token(), now),
                )?;
                issued.refresh_token = Some(next);
                Ok(issued)
            }
            RefreshUse::Reused => {
                tracing::warn!(client_id = %client.client_id, "refresh token reused; the whole grant is revoked");
                Err(IssuerError::InvalidGrant(
                    "refresh token already used; the grant is revoked".to_owned(),
                ))
            }
            RefreshUse::Invalid => Err(unknown()),
            RefreshUse::Exhausted => {
                tracing::warn!(client_id = %client.client_id, "a grant refreshed as often as it may be; the user signs in again");
                Err(IssuerError::InvalidGrant(
                    "refreshed too often; sign in again".to_owned(),
                ))
            }
        }
    }

    /// How many rotations a grant may have: twice what a client refreshing as each access
    /// token expires (`token_lifetime`) makes over the grant's whole life (`grant_lifetime`),
    /// one a minute over that life, and at least [`ROTATIONS_LEAST`], whichever is most.
    fn rotations_most(&self) -> u64 {
        let grant_lifetime = self.config.grant_lifetime.as_secs();
        let token_lifetime = self.config.token_lifetime.as_secs().max(1);
        (2 * grant_lifetime / token_lifetime)
            .max(grant_lifetime / 60)
            .max(ROTATIONS_LEAST)
    }
}

/// The fewest rotations any grant may have, whatever its lifetimes: a client refreshing every
/// minute for the default 12 h needs 720.
const ROTATIONS_LEAST: u64 = 1_000;

/// Whether `value` has the shape of `random::token` (and of an S256 challenge, RFC 7636
/// §4.2): 43 base64url characters.
pub(super) fn is_token_shaped(value: &str) -> bool {
    value.len() == 43
        && value
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

/// What the store keeps `code`, issued to `client_id` with the PKCE `challenge`, under. Only
/// its own client can take a code, and only with its verifier when it has a challenge: another
/// client that presents it, or anyone with a leaked code but not the verifier (a public
/// client's id is no secret), finds no code. So a leaked code (from a browser's history or a
/// log) can neither be spent before its client redeems it nor, once it was redeemed, revoke
/// what it issued as a replay would. (A code is 43 base64url characters, checked before it is
/// looked for, and so is a challenge, so two clients' names for codes never meet.)
fn stored_code(client_id: &str, code: &str, challenge: Option<&str>) -> String {
    format!("{client_id}\n{code}\n{}", challenge.unwrap_or(""))
}

/// RFC 7636 §4.2: the S256 challenge of `verifier`.
fn s256(verifier: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// The checks of RFC 6749 §4.1.3 and RFC 7636 §4.6 on a code just taken.
fn check_redemption(
    pending: &PendingCode,
    client: &ClientConfig,
    redirect_uri: Option<&str>,
    code_verifier: Option<&str>,
    now: UnixTime,
) -> Result<(), IssuerError> {
    if now - pending.issued_at > CODE_LIFETIME {
        return Err(IssuerError::InvalidGrant("expired code".to_owned()));
    }
    if pending.client_id != client.client_id {
        return Err(IssuerError::InvalidGrant(
            "code was issued to another client".to_owned(),
        ));
    }
    if redirect_uri != Some(pending.redirect_uri.as_str()) {
        return Err(IssuerError::InvalidGrant(
            "redirect_uri does not match".to_owned(),
        ));
    }
    match (&pending.code_challenge, code_verifier) {
        (Some(challenge), Some(verifier)) => {
            if !is_valid_verifier(verifier) {
                return Err(IssuerError::InvalidRequest(
                    "malformed code_verifier".to_owned(),
                ));
            }
            if !constant_time_eq(s256(verifier).as_bytes(), challenge.as_bytes()) {
                return Err(IssuerError::InvalidGrant(
                    "PKCE verification failed".to_owned(),
                ));
            }
            Ok(())
        }
        (Some(_), None) => Err(IssuerError::InvalidGrant(
            "code_verifier required".to_owned(),
        )),
        (None, Some(_)) => Err(IssuerError::InvalidGrant(
            "no code_challenge was sent for this code".to_owned(),
        )),
        // A code issued without PKCE to a client a reload has made public: without a secret,
        // its `client_id` alone would redeem it.
        (None, None) if client.client_secret_hash.is_none() => Err(IssuerError::InvalidGrant(
            "a public client's code needs PKCE".to_owned(),
        )),
        (None, None) => Ok(()),
    }
}

/// How long a grant lives past its last refresh, in seconds, with access tokens of
/// `token_lifetime` seconds: its last refresh token, then the last access token that token
/// could mint.
pub fn grant_life(token_lifetime: i64) -> i64 {
    REFRESH_TOKEN_LIFETIME.saturating_add(token_lifetime)
}

/// RFC 7636 §4.1: 43 to 128 unreserved characters.
fn is_valid_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-._~".contains(&byte))
}

/// `POST /revoke` (RFC 7009): a refresh token ends its grant; an access token of this service
/// is refused from now until it expires. The answer is 200 whether or not the token was known
/// (§2.2), so it tells nothing; only a client that fails to authenticate is refused.
pub(super) async fn revoke(
    State(service): State<Arc<TokenService>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let client = service.client_address(peer.ip(), &headers);
    match handle_revoke(&service, &headers, &body, Some(client)).await {
        Ok(()) => {
            service.metrics.request("token_service", "revoked");
            (
                axum::http::StatusCode::OK,
                [(header::CACHE_CONTROL, "no-store")],
            )
                .into_response()
        }
        Err(error) => {
            crate::refused!(service.metrics, "token_service", &error);
            error.into_response()
        }
    }
}

async fn handle_revoke(
    service: &TokenService,
    headers: &HeaderMap,
    body: &[u8],
    peer: Option<std::net::IpAddr>,
) -> Result<(), IssuerError> {
    // RFC 7009 §2.1 sends the parameters as RFC 6749 does: each once. Two `token`s would leave
    // one of them alive while the client is told both were revoked.
    let form = super::single_valued(body).map_err(IssuerError::InvalidRequest)?;
    let field = |name: &str| {
        form.get(name)
            .map(String::as_str)
            .filter(|value| !value.is_empty())
    };
    let presented = presented_client(headers, field("client_id"), field("client_secret"))?;
    let client = service.authenticate_client(presented, peer).await?;
    let token =
        field("token").ok_or_else(|| IssuerError::InvalidRequest("missing token".to_owned()))?;
    let now = service.now();
    if service
        .state
        .revoke_refresh_token(token, &client.client_id)
        .await?
    {
        return Ok(());
    }
    if let Ok(claims) = service.validate_signed_access_token(token) {
        let own =
            claims.get("client_id").and_then(Value::as_str) == Some(client.client_id.as_str());
        if let (true, Some(jti), Some(exp)) = (
            own,
            claims.get("jti").and_then(Value::as_str),
            claims.get("exp").and_then(Value::as_i64),
        ) {
            let sid = claims.get("sid").and_then(Value::as_str);
            // RFC 7009 §2: refused as long as validation would accept it, the leeway included.
            let until = exp.saturating_add(service.leeway);
            service.state.revoke_access(jti, sid, until, now).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
