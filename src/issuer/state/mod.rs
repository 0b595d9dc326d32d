//! What the token service remembers between requests, behind one narrow trait
//! (`IssuerState`): authorization codes waiting for `/token`, grants (one per login) with
//! their rotating refresh tokens, codes already redeemed, revoked access tokens and failed
//! sign-in counters. `memory::MemoryState` keeps them in this process
//! (`token_service.store = "memory"`); `redis::RedisState` keeps them in Redis, shared by every
//! replica (`"redis"`, SPEC §12). Every rule that makes a use single (a code redeemed once, a
//! refresh token spent once, reuse ending the grant) is carried out inside one store call, so
//! two replicas cannot both win.

mod lapsing;
pub mod memory;
pub mod redis;
mod refresh_tags;

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use crate::clock::UnixTime;

/// How long an authorization code may wait to be exchanged.
pub const CODE_LIFETIME: i64 = 60;

/// How long a redeemed code is remembered, so that its replay revokes what it issued.
pub const USED_CODE_MEMORY: i64 = 600;

/// The most grants one user holds at one client (a sign-in each, with its refresh tokens):
/// opening one more ends the oldest (revoked, its refresh tokens forgotten). Without a bound,
/// one account signing in and refreshing in a loop filled the store: every spent refresh
/// token is remembered for a day, up to `Successor::rotations_most` of them a grant.
pub const MAX_GRANTS_PER_USER: usize = 100;

/// Who a code or a grant is for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Principal {
    /// A user of the local login form, by username.
    Local(String),
    /// A user of an upstream provider (federation): their `sub` there, and the claims carried
    /// over (`name`, `email`, `preferred_username`).
    Federated {
        /// The upstream `sub`.
        sub: String,
        /// Claims carried over.
        claims: serde_json::Map<String, serde_json::Value>,
        /// The upstream provider (`provider.name`); `None` in records stored before it was
        /// kept. A code or grant is answered only while its client still signs its users in
        /// there: `sub` means a user in that provider's namespace alone.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        provider: Option<String>,
        /// Its issuer and this service's client id there at the sign-in; `None` in records
        /// stored before they were kept. A reload that points the provider's name at another
        /// issuer (another tenant, another identity provider) or client ends what was signed
        /// in at the old one: its `sub` names no one there.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<ProviderAt>,
    },
}

/// A provider as a federated sign-in met it: its `issuer` and the `client_id` this Tollgate
/// has there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderAt {
    /// `provider.issuer`.
    pub issuer: String,
    /// `provider.client_id`.
    pub client_id: String,
}

impl Principal {
    /// Whether `client`, as the live config has it, still signs its users in where this
    /// principal signed in: a reload may have moved it to another login provider (another
    /// namespace of `sub`, and the tokens' `sub` is made from the live client's `source`), or
    /// from the login form to a provider, or back, or pointed its provider's name at another
    /// issuer or client (`providers`: each live provider's, by name). A federated record
    /// stored before the provider's issuer was kept (by a Tollgate older than 6 December 2026)
    /// is checked by the provider's name alone, as then, so that an upgrade, rolling or not,
    /// ends no grant; it lives at most `session.lifetime` on.
    pub fn signs_in_at(
        &self,
        client: &crate::config::ClientConfig,
        providers: &std::collections::BTreeMap<String, ProviderAt>,
    ) -> bool {
        match self {
            Self::Local(_) => client.login_provider.is_none(),
            Self::Federated {
                provider: Some(provider),
                at,
                ..
            } => {
                client.login_provider.as_deref() == Some(provider.as_str())
                    && at
                        .as_ref()
                        .is_none_or(|at| providers.get(provider) == Some(at))
            }
            // Stored before even the provider's name was kept (before 5 December 2026): whose
            // `sub` it is cannot be told.
            Self::Federated { provider: None, .. } => false,
        }
    }
}

/// When the user authenticated: the ID token's `auth_time` (OpenID Connect Core §2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignedIn {
    /// When the code was issued: a local login (and records stored before this was kept).
    #[default]
    AtIssue,
    /// At this time: a federated login's upstream `auth_time`, which may be long before the
    /// code (the provider's single sign-on).
    At(UnixTime),
    /// Not known: a federated login whose provider did not say. The ID token then carries no
    /// `auth_time` rather than one that would say the user had just signed in.
    Unknown,
}

impl SignedIn {
    /// The `auth_time` to state, for a code issued (or a grant begun) at `issued_at`.
    pub fn auth_time(self, issued_at: UnixTime) -> Option<UnixTime> {
        match self {
            Self::AtIssue => Some(issued_at),
            Self::At(at) => Some(at),
            Self::Unknown => None,
        }
    }
}

/// A code handed to a client, waiting for `/token`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingCode {
    /// The client it was issued to.
    pub client_id: String,
    /// The `redirect_uri` of the authorization request.
    pub redirect_uri: String,
    /// The PKCE challenge (S256).
    pub code_challenge: Option<String>,
    /// The `nonce` for the ID token.
    pub nonce: Option<String>,
    /// The scopes granted.
    pub scopes: Vec<String>,
    /// Who logged in.
    pub principal: Principal,
    /// When it was issued.
    pub issued_at: UnixTime,
    /// When the user authenticated.
    #[serde(default)]
    pub signed_in: SignedIn,
}

/// One login's grant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    /// The client it was made for.
    pub client_id: String,
    /// Who logged in.
    pub principal: Principal,
    /// The scopes granted.
    pub scopes: Vec<String>,
    /// When the grant's sign-in was made (the code's issue), from which `session.lifetime`
    /// runs. `None` for a grant stored before it was kept: it cannot be refreshed.
    pub auth_time: Option<UnixTime>,
    /// When the user authenticated: every ID token of the grant, refreshed ones too, says it
    /// (OpenID Connect Core 12.2).
    #[serde(default)]
    pub signed_in: SignedIn,
}

impl Grant {
    /// Who holds the grant at its client, as a key (a user of the login form by username, a
    /// federated user by provider and `sub`; the claims carried over do not count): hex of a
    /// SHA-256, so that it is short and reveals no name in Redis.
    pub fn holder(&self) -> String {
        let (kind, provider, name) = match &self.principal {
            Principal::Local(username) => ("local", "", username.as_str()),
            Principal::Federated { sub, provider, .. } => (
                "federated",
                provider.as_deref().unwrap_or_default(),
                sub.as_str(),
            ),
        };
        let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for part in [self.client_id.as_str(), kind, provider, name] {
            // Each part's length first: no two holders read as the same bytes.
            context.update(&(part.len() as u64).to_be_bytes());
            context.update(part.as_bytes());
        }
        context
            .finish()
            .as_ref()
            .iter()
            .fold(String::with_capacity(64), |mut text, byte| {
                use std::fmt::Write as _;
                let _ = write!(text, "{byte:02x}");
                text
            })
    }
}

/// What redeeming a code will issue, decided before the code is taken, so that the code and
/// its record become "used" in one step: a replay, however close, finds the record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Redemption {
    /// The grant the redemption opens, when the client may refresh.
    pub grant_id: Option<String>,
    /// The `jti` of the access token it issues.
    pub access_jti: String,
    /// Until when that access token is accepted: its expiry plus the validation leeway, so a
    /// replay's revocation is kept that long.
    pub access_expires_at: UnixTime,
}

/// The result of taking a code.
#[derive(Debug, Clone, PartialEq)]
pub enum CodeUse {
    /// The code was waiting: it is now used, and this is what it was for.
    Pending(Box<PendingCode>),
    /// The code was redeemed before: what that redemption issued is now revoked.
    Replayed,
    /// Never issued, or forgotten.
    Unknown,
}

/// The result of presenting a refresh token.
#[derive(Debug, Clone, PartialEq)]
pub enum RefreshUse {
    /// Valid: the token is now spent, and this is its successor.
    Fresh(String),
    /// Already spent: the whole grant is now revoked.
    Reused,
    /// Unknown, expired, of another client, or of a revoked grant.
    Invalid,
    /// The grant was refreshed as often as it may be (`Successor::rotations_most`): the token
    /// is left unspent, and the user signs in again.
    Exhausted,
}

/// How long a rotated refresh token's successor lives, and how often its grant may rotate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Successor {
    /// When the successor expires.
    pub expires_at: UnixTime,
    /// The grant is kept at least until then.
    pub grant_until: UnixTime,
    /// How many rotations the grant may have in all. Every spent token is remembered until it
    /// expires, so that its reuse ends the grant (however many rotations later); without a
    /// bound, a client refreshing in a loop would add a record per refresh for a day.
    pub rotations_most: u64,
}

/// The store could not be used; the request is refused (fail closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("token service store unavailable: {0}")]
pub struct StateError(pub String);

/// A store call in flight.
pub type StateFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StateError>> + Send + 'a>>;

/// What the token service keeps between requests. Every method is one atomic step.
pub trait IssuerState: Send + Sync + 'static {
    /// The grant of a refresh token this store could have made: `None` for one of another
    /// shape, or (Redis) without this deployment's tag, before anything is read for it.
    fn refresh_token_grant<'a>(&self, token: &'a str) -> Option<&'a str> {
        grant_of_refresh_token(token)
    }

    /// Keeps a new code for `CODE_LIFETIME` seconds.
    fn put_code<'a>(&'a self, code: &'a str, pending: &'a PendingCode) -> StateFuture<'a, ()>;

    /// Takes a code once; when it is taken, `redemption` is recorded as what it issued. A code
    /// that was taken before revokes that record's grant and access token.
    fn take_code<'a>(
        &'a self,
        code: &'a str,
        redemption: &'a Redemption,
        now: UnixTime,
    ) -> StateFuture<'a, CodeUse>;

    /// Opens a grant at `now`, kept until `until`. Its holder's grants at its client beyond
    /// [`MAX_GRANTS_PER_USER`] end, oldest first: revoked, their refresh tokens forgotten.
    fn open_grant<'a>(
        &'a self,
        grant_id: &'a str,
        grant: &'a Grant,
        until: UnixTime,
        now: UnixTime,
    ) -> StateFuture<'a, ()>;

    /// A new refresh token for a grant, valid until `expires_at`; the grant is kept at least
    /// until `grant_until`.
    fn issue_refresh_token<'a>(
        &'a self,
        grant_id: &'a str,
        expires_at: UnixTime,
        grant_until: UnixTime,
        now: UnixTime,
    ) -> StateFuture<'a, String>;

    /// A grant, read without spending anything: `None` for a grant not held, or held by
    /// another client than `client_id`. (What a grant holds never changes; whether it was
    /// revoked is `rotate_refresh_token`'s to say.)
    fn grant<'a>(&'a self, grant_id: &'a str, client_id: &'a str)
    -> StateFuture<'a, Option<Grant>>;

    /// Spends a refresh token presented by `client_id` and, in the same step, issues its
    /// successor (valid until `successor.expires_at`, its grant kept at least until
    /// `successor.grant_until`): a spent token is never left without its successor, whose
    /// loss would make the client's retry a reuse that ends the grant.
    fn rotate_refresh_token<'a>(
        &'a self,
        token: &'a str,
        client_id: &'a str,
        successor: Successor,
        now: UnixTime,
    ) -> StateFuture<'a, RefreshUse>;

    /// `/revoke` with a refresh token: ends its grant when `client_id` owns it. Returns
    /// whether it did.
    fn revoke_refresh_token<'a>(
        &'a self,
        token: &'a str,
        client_id: &'a str,
    ) -> StateFuture<'a, bool>;

    /// Refuses one access token (its `jti`, and its grant `sid` when it has one) until
    /// `expires_at`: when validation would stop accepting it (its `exp` plus the leeway).
    fn revoke_access<'a>(
        &'a self,
        jti: &'a str,
        sid: Option<&'a str>,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> StateFuture<'a, ()>;

    /// Whether an access token with this `jti` and grant `sid` was revoked.
    fn is_revoked<'a>(
        &'a self,
        jti: Option<&'a str>,
        sid: Option<&'a str>,
    ) -> StateFuture<'a, bool>;

    /// Whether any of `keys` has failed `MAX_FAILURES` times within the current window.
    fn limited<'a>(&'a self, keys: &'a [String], now: UnixTime) -> StateFuture<'a, bool>;

    /// Counts one failure against each of `keys`.
    fn count_failure<'a>(&'a self, keys: &'a [String], now: UnixTime) -> StateFuture<'a, ()>;

    /// Takes back one failure counted against each of `keys` (an attempt counted before its
    /// check, which proved right).
    fn forgive_failure<'a>(&'a self, keys: &'a [String], now: UnixTime) -> StateFuture<'a, ()>;

    /// Whether the store can be used (for `/readyz`).
    fn check(&self) -> StateFuture<'_, ()>;
}

/// Failures allowed per key within `FAILURE_WINDOW` seconds.
pub const MAX_FAILURES: u32 = 10;

/// The window failures are counted in, in seconds.
pub const FAILURE_WINDOW: i64 = 60;

/// A refresh token names its grant (`<grant id>.<random>`), so a store can keep both on one
/// hash slot. Returns the grant id of a well-formed token.
pub fn grant_of_refresh_token(token: &str) -> Option<&str> {
    let (grant_id, secret) = token.split_once('.')?;
    let well_formed = |part: &str| {
        part.len() == 43
            && part
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
    };
    (well_formed(grant_id) && well_formed(secret)).then_some(grant_id)
}

/// A new refresh token for `grant_id`.
pub fn new_refresh_token(grant_id: &str) -> String {
    format!("{grant_id}.{}", crate::random::token())
}

/// SHA-256 of a token: stores keep hashes of refresh tokens, never the tokens.
pub fn hash(token: &str) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

#[cfg(test)]
mod tests;
