//! `token_service.store = "redis"`: the token service's state in Redis (the session store's
//! `session.redis_url`), shared by every replica and kept across restarts (SPEC §12).
//!
//! Keys, all under `session.redis_key_prefix` + `ts:`; a hash tag `{…}` keeps what one step
//! touches on one Cluster slot:
//! - `code:{<code>}` a code waiting for `/token` (JSON), for `CODE_LIFETIME`;
//! - `used:{<code>}` what a redeemed code issued (JSON), for `USED_CODE_MEMORY`;
//! - `grant:{<grant>}` a hash (`client`, `record`), kept past its last refresh token;
//! - `revoked:{<grant>}` present once the grant is revoked, for a grant's whole life;
//! - `refresh:{<grant>}:<sha256 of the token>` `fresh` or `used`, until the token expires;
//! - `jti:{<grant or jti>}:<jti>` a revoked access token, until it would have expired;
//! - `fail:<key>` failures counted in the current window.
//!
//! Taking a code, spending a refresh token and revoking by refresh token are Lua scripts, so
//! each single-use rule holds across replicas.

use std::sync::Arc;

use redis::Script;

use super::{
    CODE_LIFETIME, CodeUse, FAILURE_WINDOW, Grant, IssuerState, MAX_FAILURES, PendingCode,
    Redemption, RefreshUse, StateError, StateFuture, USED_CODE_MEMORY, grant_of_refresh_token,
    hash,
};
use crate::clock::UnixTime;
use crate::redis_connection::RedisConnection;

/// Takes a waiting code once and records what it issues; or reports the earlier redemption.
const TAKE_CODE: &str = r"
local pending = redis.call('GET', KEYS[1])
if pending then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
  return {'pending', pending}
end
local used = redis.call('GET', KEYS[2])
if used then
  return {'replayed', used}
end
return {'unknown'}
";

/// Spends a refresh token: KEYS refresh, grant, revoked; ARGV client id, grant life. Whose
/// token it is comes first: another client's spent token revokes nothing (RFC 6749 §6).
const USE_REFRESH: &str = r"
local state = redis.call('GET', KEYS[1])
if not state then
  return {'invalid'}
end
if redis.call('HGET', KEYS[2], 'client') ~= ARGV[1] then
  return {'invalid'}
end
if state == 'used' then
  redis.call('SET', KEYS[3], '1', 'EX', ARGV[2])
  return {'reused'}
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  return {'invalid'}
end
redis.call('SET', KEYS[1], 'used', 'KEEPTTL')
return {'fresh', redis.call('HGET', KEYS[2], 'record')}
";

/// Revokes the grant of a refresh token its client presents: KEYS as `USE_REFRESH`.
const REVOKE_REFRESH: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
if redis.call('HGET', KEYS[2], 'client') ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[3], '1', 'EX', ARGV[2])
return 1
";

/// The token service's state in Redis.
pub struct RedisState {
    connection: Arc<RedisConnection>,
    prefix: String,
    /// The longest a grant lives (its last refresh token and the access tokens it can mint),
    /// in seconds: how long a revocation is kept.
    grant_life: i64,
    take_code: Script,
    use_refresh: Script,
    revoke_refresh: Script,
}

fn unavailable(error: &redis::RedisError) -> StateError {
    StateError(error.to_string())
}

/// Seconds from `now` until `until`, at least one (Redis refuses zero).
fn seconds_until(until: UnixTime, now: UnixTime) -> i64 {
    until.saturating_sub(now).max(1)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

impl RedisState {
    /// The state on `connection`, every key starting with `prefix` + `ts:`; a revoked grant is
    /// remembered for `grant_life` seconds.
    pub fn new(connection: Arc<RedisConnection>, prefix: &str, grant_life: i64) -> Self {
        Self {
            connection,
            prefix: format!("{prefix}ts:"),
            grant_life,
            take_code: Script::new(TAKE_CODE),
            use_refresh: Script::new(USE_REFRESH),
            revoke_refresh: Script::new(REVOKE_REFRESH),
        }
    }

    fn code_key(&self, code: &str) -> String {
        format!("{}code:{{{}}}", self.prefix, hex(&hash(code)))
    }

    fn used_key(&self, code: &str) -> String {
        format!("{}used:{{{}}}", self.prefix, hex(&hash(code)))
    }

    fn grant_key(&self, grant_id: &str) -> String {
        format!("{}grant:{{{grant_id}}}", self.prefix)
    }

    fn revoked_key(&self, grant_id: &str) -> String {
        format!("{}revoked:{{{grant_id}}}", self.prefix)
    }

    fn refresh_key(&self, grant_id: &str, token: &str) -> String {
        format!(
            "{}refresh:{{{grant_id}}}:{}",
            self.prefix,
            hex(&hash(token))
        )
    }

    /// A revoked access token's key, on its grant's slot when it has one.
    fn jti_key(&self, jti: &str, sid: Option<&str>) -> String {
        let tag = sid.unwrap_or(jti);
        format!("{}jti:{{{tag}}}:{jti}", self.prefix)
    }

    fn failure_key(&self, key: &str) -> String {
        format!("{}fail:{key}", self.prefix)
    }

    /// The three keys a refresh token's scripts touch, or `None` for a malformed token.
    fn refresh_keys(&self, token: &str) -> Option<[String; 3]> {
        let grant_id = grant_of_refresh_token(token)?;
        Some([
            self.refresh_key(grant_id, token),
            self.grant_key(grant_id),
            self.revoked_key(grant_id),
        ])
    }

    /// `SET key value EX seconds`.
    async fn set_expiring(
        &self,
        key: String,
        value: impl redis::ToRedisArgs,
        seconds: i64,
    ) -> Result<(), StateError> {
        let command = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .arg("EX")
            .arg(seconds)
            .to_owned();
        self.connection
            .query::<()>(&command)
            .await
            .map_err(|error| unavailable(&error))
    }

    /// Runs a refresh-token script (`USE_REFRESH`, `REVOKE_REFRESH`) on the token's keys;
    /// `None` for a malformed token.
    async fn on_refresh_token<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        token: &str,
        client_id: &str,
    ) -> Result<Option<T>, StateError> {
        let Some(keys) = self.refresh_keys(token) else {
            return Ok(None);
        };
        let mut invocation = script.prepare_invoke();
        for key in &keys {
            invocation.key(key);
        }
        invocation.arg(client_id).arg(self.grant_life);
        self.connection
            .invoke(&invocation)
            .await
            .map(Some)
            .map_err(|error| unavailable(&error))
    }

    async fn revoke_redemption(&self, used: &Redemption, now: UnixTime) -> Result<(), StateError> {
        if let Some(grant_id) = &used.grant_id {
            self.set_expiring(self.revoked_key(grant_id), 1, self.grant_life)
                .await?;
        }
        self.set_expiring(
            self.jti_key(&used.access_jti, used.grant_id.as_deref()),
            1,
            seconds_until(used.access_expires_at, now),
        )
        .await
    }
}

fn decode<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StateError> {
    serde_json::from_str(text).map_err(|error| StateError(format!("unreadable record: {error}")))
}

fn encode<T: serde::Serialize>(value: &T) -> Result<String, StateError> {
    serde_json::to_string(value).map_err(|error| StateError(error.to_string()))
}

#[derive(serde::Deserialize, serde::Serialize)]
struct GrantRecord {
    principal: super::Principal,
    scopes: Vec<String>,
    /// Absent from grants stored before it was kept.
    #[serde(default)]
    auth_time: Option<UnixTime>,
    #[serde(default)]
    signed_in: super::SignedIn,
}

impl IssuerState for RedisState {
    fn put_code<'a>(&'a self, code: &'a str, pending: &'a PendingCode) -> StateFuture<'a, ()> {
        Box::pin(async move {
            self.set_expiring(self.code_key(code), encode(pending)?, CODE_LIFETIME)
                .await
        })
    }

    fn take_code<'a>(
        &'a self,
        code: &'a str,
        redemption: &'a Redemption,
        now: UnixTime,
    ) -> StateFuture<'a, CodeUse> {
        Box::pin(async move {
            let mut invocation = self.take_code.prepare_invoke();
            invocation
                .key(self.code_key(code))
                .key(self.used_key(code))
                .arg(encode(redemption)?)
                .arg(USED_CODE_MEMORY);
            let answer: Vec<String> = self
                .connection
                .invoke(&invocation)
                .await
                .map_err(|error| unavailable(&error))?;
            match answer.as_slice() {
                [kind, pending] if kind == "pending" => Ok(CodeUse::Pending(decode(pending)?)),
                [kind, used] if kind == "replayed" => {
                    self.revoke_redemption(&decode(used)?, now).await?;
                    Ok(CodeUse::Replayed)
                }
                _ => Ok(CodeUse::Unknown),
            }
        })
    }

    fn open_grant<'a>(
        &'a self,
        grant_id: &'a str,
        grant: &'a Grant,
        until: UnixTime,
        now: UnixTime,
    ) -> StateFuture<'a, ()> {
        Box::pin(async move {
            let record = encode(&GrantRecord {
                principal: grant.principal.clone(),
                scopes: grant.scopes.clone(),
                auth_time: grant.auth_time,
                signed_in: grant.signed_in,
            })?;
            let key = self.grant_key(grant_id);
            let pipeline = redis::pipe()
                .atomic()
                .cmd("HSET")
                .arg(&key)
                .arg("client")
                .arg(&grant.client_id)
                .arg("record")
                .arg(record)
                .ignore()
                .cmd("EXPIRE")
                .arg(&key)
                .arg(seconds_until(until, now))
                .ignore()
                .to_owned();
            self.connection
                .pipeline::<()>(&pipeline)
                .await
                .map_err(|error| unavailable(&error))
        })
    }

    fn issue_refresh_token<'a>(
        &'a self,
        grant_id: &'a str,
        expires_at: UnixTime,
        grant_until: UnixTime,
        now: UnixTime,
    ) -> StateFuture<'a, String> {
        Box::pin(async move {
            let token = super::new_refresh_token(grant_id);
            let pipeline = redis::pipe()
                .atomic()
                .cmd("SET")
                .arg(self.refresh_key(grant_id, &token))
                .arg("fresh")
                .arg("EX")
                .arg(seconds_until(expires_at, now))
                .ignore()
                .cmd("EXPIRE")
                .arg(self.grant_key(grant_id))
                .arg(seconds_until(grant_until, now))
                .arg("GT")
                .ignore()
                .to_owned();
            self.connection
                .pipeline::<()>(&pipeline)
                .await
                .map_err(|error| unavailable(&error))?;
            Ok(token)
        })
    }

    fn use_refresh_token<'a>(
        &'a self,
        token: &'a str,
        client_id: &'a str,
        _now: UnixTime,
    ) -> StateFuture<'a, RefreshUse> {
        Box::pin(async move {
            let Some(answer) = self
                .on_refresh_token::<Vec<String>>(&self.use_refresh, token, client_id)
                .await?
            else {
                return Ok(RefreshUse::Invalid);
            };
            match answer.as_slice() {
                [kind, record] if kind == "fresh" => {
                    let record: GrantRecord = decode(record)?;
                    let grant_id = grant_of_refresh_token(token).unwrap_or_default().to_owned();
                    Ok(RefreshUse::Fresh(
                        grant_id,
                        Grant {
                            client_id: client_id.to_owned(),
                            principal: record.principal,
                            scopes: record.scopes,
                            auth_time: record.auth_time,
                            signed_in: record.signed_in,
                        },
                    ))
                }
                [kind] if kind == "reused" => Ok(RefreshUse::Reused),
                _ => Ok(RefreshUse::Invalid),
            }
        })
    }

    fn grant_scopes<'a>(
        &'a self,
        grant_id: &'a str,
        client_id: &'a str,
    ) -> StateFuture<'a, Option<Vec<String>>> {
        Box::pin(async move {
            let command = redis::cmd("HMGET")
                .arg(self.grant_key(grant_id))
                .arg("client")
                .arg("record")
                .to_owned();
            let (client, record): (Option<String>, Option<String>) = self
                .connection
                .query(&command)
                .await
                .map_err(|error| unavailable(&error))?;
            record
                .filter(|_| client.as_deref() == Some(client_id))
                .map(|record| decode::<GrantRecord>(&record).map(|record| record.scopes))
                .transpose()
        })
    }

    fn revoke_refresh_token<'a>(
        &'a self,
        token: &'a str,
        client_id: &'a str,
    ) -> StateFuture<'a, bool> {
        Box::pin(async move {
            let revoked: Option<i64> = self
                .on_refresh_token(&self.revoke_refresh, token, client_id)
                .await?;
            Ok(revoked == Some(1))
        })
    }

    fn revoke_access<'a>(
        &'a self,
        jti: &'a str,
        sid: Option<&'a str>,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> StateFuture<'a, ()> {
        Box::pin(async move {
            self.set_expiring(self.jti_key(jti, sid), 1, seconds_until(expires_at, now))
                .await
        })
    }

    fn is_revoked<'a>(
        &'a self,
        jti: Option<&'a str>,
        sid: Option<&'a str>,
    ) -> StateFuture<'a, bool> {
        Box::pin(async move {
            // Both keys sit on the grant's slot when there is a grant: one round trip.
            let mut command = redis::cmd("EXISTS");
            if let Some(jti) = jti {
                command.arg(self.jti_key(jti, sid));
            }
            if let Some(sid) = sid {
                command.arg(self.revoked_key(sid));
            }
            if jti.is_none() && sid.is_none() {
                return Ok(false);
            }
            let found: i64 = self
                .connection
                .query(&command)
                .await
                .map_err(|error| unavailable(&error))?;
            Ok(found > 0)
        })
    }

    fn limited<'a>(&'a self, keys: &'a [String], _now: UnixTime) -> StateFuture<'a, bool> {
        Box::pin(async move {
            for key in keys {
                let count: Option<u32> = self
                    .connection
                    .query(redis::cmd("GET").arg(self.failure_key(key)))
                    .await
                    .map_err(|error| unavailable(&error))?;
                if count.is_some_and(|count| count >= MAX_FAILURES) {
                    return Ok(true);
                }
            }
            Ok(false)
        })
    }

    fn count_failure<'a>(&'a self, keys: &'a [String], _now: UnixTime) -> StateFuture<'a, ()> {
        Box::pin(async move {
            for key in keys {
                let key = self.failure_key(key);
                // The window starts with its first failure (`NX`), as in the memory store.
                let pipeline = redis::pipe()
                    .atomic()
                    .cmd("INCR")
                    .arg(&key)
                    .ignore()
                    .cmd("EXPIRE")
                    .arg(&key)
                    .arg(FAILURE_WINDOW)
                    .arg("NX")
                    .ignore()
                    .to_owned();
                self.connection
                    .pipeline::<()>(&pipeline)
                    .await
                    .map_err(|error| unavailable(&error))?;
            }
            Ok(())
        })
    }

    fn check(&self) -> StateFuture<'_, ()> {
        Box::pin(async move {
            self.connection
                .ping()
                .await
                .map_err(|error| unavailable(&error))
        })
    }
}
