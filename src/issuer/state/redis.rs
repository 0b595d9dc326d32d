//! `token_service.store = "redis"`: the token service's state in Redis (the session store's
//! `session.redis_url`), shared by every replica and kept across restarts (SPEC §12).
//!
//! Keys, all under `session.redis_key_prefix` + `ts:`; a hash tag `{…}` keeps what one step
//! touches on one Cluster slot:
//! - `code:{<code>}` a code waiting for `/token` (JSON), for `CODE_LIFETIME`;
//! - `used:{<code>}` what a redeemed code issued (JSON), for `USED_CODE_MEMORY`;
//! - `taken:{<code>}` a code as taken, for a minute: the answer to its own call sent again;
//! - `grant:{<grant>}` a hash (`client`, `record`), kept past its last refresh token;
//! - `revoked:{<grant>}` present once the grant is revoked, for a grant's whole life;
//! - `refresh:{<grant>}:<sha256 of the token>` `fresh` or `used`, until the token expires;
//! - `tokens:{<grant>}` a set of the grant's refresh tokens (their SHA-256 in hex), deleted
//!   with them when the grant ends beyond its holder's limit;
//! - `holder:{<Grant::holder>}` a sorted set of one user's grants at one client, in the order
//!   they were opened (each scored one above the newest), for `MAX_GRANTS_PER_USER`, as long
//!   as the last sign-in's grant may live (`session.lifetime` of refreshes, then a grant's
//!   life);
//! - `jti:{<grant or jti>}:<jti>` a revoked access token, until it would have expired;
//! - `fail:<key>` failures counted in the current window.
//!
//! Records (`code`, `used`, the grant's `record`) are sealed with the session secrets, the key
//! they are stored under as the purpose, and refresh tokens carry a tag of those secrets
//! (`refresh_tags`): whoever can write to Redis, or another deployment sharing it under the
//! same prefix, can neither plant a code, a grant or a fresh token that this service would
//! take, nor move a record to another key; a grant's sealed record names its client, so
//! rewriting the hash's plain `client` does not hand the grant to another client. A record an
//! older Tollgate stored in clear is not read (its code or grant is unknown: the client signs
//! in again), except a redeemed code's, whose replay still revokes what it issued; and
//! `/revoke` takes a refresh token without a tag (an older Tollgate's): revoking is all it can
//! do. What Redis holds can still be deleted or set back (a revocation undone, a failure count
//! cleared, a spent token's state set back to `fresh` by someone who also holds that token),
//! as anything in Redis can.
//!
//! Taking a code, rotating a refresh token and revoking by refresh token are Lua scripts, so
//! each single-use rule holds across replicas. Revocations and rotations are confirmed writes
//! (`RedisConnection::query_confirmed`: a replica has them, where the master has one), so a
//! failover cannot undo them; taking a code is not (a code lost in a failover could be
//! redeemed once more within its minute, still with its PKCE verifier).

use std::sync::Arc;

use redis::Script;

use super::refresh_tags::RefreshTags;
use super::{
    CODE_LIFETIME, CodeUse, FAILURE_WINDOW, Grant, IssuerState, MAX_FAILURES, MAX_GRANTS_PER_USER,
    PendingCode, Redemption, RefreshUse, StateError, StateFuture, USED_CODE_MEMORY,
    grant_of_refresh_token, hash,
};
use crate::clock::UnixTime;
use crate::redis_connection::RedisConnection;
use crate::secret::Secret;
use crate::session::seal::Sealer;

/// Takes a waiting code once and records what it issues; or reports the earlier redemption:
/// KEYS the code, its use, the code as taken; ARGV the sealed redemption (a random nonce makes
/// each attempt's its own), how long the use is remembered. The same call sent again (the
/// Cluster client resends a call whose answer a dropped connection lost) finds its own
/// redemption and is answered as the first was, from the code kept aside for a minute, not
/// as a replay that would revoke what it issues.
const TAKE_CODE: &str = r"
local pending = redis.call('GET', KEYS[1])
if pending then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
  redis.call('SET', KEYS[3], pending, 'EX', 60)
  return {'pending', pending}
end
local used = redis.call('GET', KEYS[2])
if used then
  if used == ARGV[1] then
    local taken = redis.call('GET', KEYS[3])
    if taken then
      return {'pending', taken}
    end
  end
  return {'replayed', used}
end
return {'unknown'}
";

/// Spends a refresh token and stores its successor: KEYS refresh, grant, revoked, successor,
/// rotation count, the grant's token set; ARGV client id, grant life, successor's life, the
/// grant's least life, how many rotations the grant may have (beyond: 'exhausted', nothing
/// spent), the successor's hash in hex. Whose token it is comes first:
/// another client's spent token revokes nothing (RFC 6749 §6). A spent token whose successor
/// is this call's own (a random token each attempt) was spent by this same call, sent again
/// by the Cluster client after a dropped connection lost its answer: done, not a reuse.
const ROTATE_REFRESH: &str = r"
local state = redis.call('GET', KEYS[1])
if not state then
  return 'invalid'
end
if redis.call('HGET', KEYS[2], 'client') ~= ARGV[1] then
  return 'invalid'
end
if state == 'used' then
  if redis.call('EXISTS', KEYS[4]) == 1 then
    return 'fresh'
  end
  redis.call('SET', KEYS[3], '1', 'EX', ARGV[2])
  return 'reused'
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  return 'invalid'
end
if tonumber(redis.call('GET', KEYS[5]) or '0') >= tonumber(ARGV[5]) then
  return 'exhausted'
end
redis.call('SET', KEYS[1], 'used', 'KEEPTTL')
redis.call('INCR', KEYS[5])
redis.call('EXPIRE', KEYS[5], ARGV[4])
redis.call('SET', KEYS[4], 'fresh', 'EX', ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[4], 'GT')
redis.call('SADD', KEYS[6], ARGV[6])
redis.call('EXPIRE', KEYS[6], ARGV[4])
return 'fresh'
";

/// Adds a grant to its holder's index, after the newest there, and returns the oldest beyond
/// the limit (left in the index until each is ended: ending one twice does no harm): KEYS the
/// holder's sorted set; ARGV the grant id, how long the index lives (`holder_life`: as long
/// as a grant opened now may live), the limit.
const ADD_TO_HOLDER: &str = r"
local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
local score = 1
if newest[2] then
  score = tonumber(newest[2]) + 1
end
redis.call('ZADD', KEYS[1], score, ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
local beyond = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[3])
if beyond <= 0 then
  return {}
end
return redis.call('ZRANGE', KEYS[1], 0, beyond - 1)
";

/// Undoes a rotation whose answer never reached the client: KEYS refresh, successor, rotation
/// count. Only
/// while the successor is unused (it was never handed out, so no one else can have used it).
const UNDO_ROTATION: &str = r"
if redis.call('GET', KEYS[1]) == 'used' and redis.call('GET', KEYS[2]) == 'fresh' then
  redis.call('SET', KEYS[1], 'fresh', 'KEEPTTL')
  if redis.call('EXISTS', KEYS[3]) == 1 then
    redis.call('DECR', KEYS[3])
  end
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
";

/// Revokes the grant of a refresh token its client presents: KEYS refresh, grant, revoked;
/// ARGV client id, grant life.
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
    /// How long a user's index of grants lives from its last sign-in (`RedisState::new`).
    holder_life: i64,
    take_code: Script,
    /// Seals records with the session secrets.
    sealer: Sealer,
    /// Tags refresh tokens with the session secrets.
    tags: RefreshTags,
}

fn unavailable(error: &redis::RedisError) -> StateError {
    StateError(error.to_string())
}

/// Seconds from `now` until `until`, at least one (Redis refuses zero).
fn seconds_until(until: UnixTime, now: UnixTime) -> i64 {
    until.saturating_sub(now).max(1)
}

/// A TTL that keeps a revocation through the second `until` itself, which validation still
/// accepts its token in (`exp` plus the leeway): set at `now`'s first instant, a key of
/// `until - now` seconds would be gone for that whole second.
fn seconds_through(until: UnixTime, now: UnixTime) -> i64 {
    seconds_until(until, now).saturating_add(1)
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
    /// remembered for `grant_life` seconds; a user's index of grants at a client
    /// (`MAX_GRANTS_PER_USER`) lives `holder_life` seconds from its last sign-in, as long as
    /// a grant opened then may be refreshed and then live (`session.lifetime` and
    /// `grant_life`); records are sealed, and refresh tokens tagged, with the session
    /// `secrets`.
    pub fn new(
        connection: Arc<RedisConnection>,
        prefix: &str,
        (grant_life, holder_life): (i64, i64),
        secrets: &[Secret<String>],
    ) -> Self {
        Self {
            connection,
            prefix: format!("{prefix}ts:"),
            grant_life,
            holder_life: holder_life.max(grant_life),
            take_code: Script::new(TAKE_CODE),
            sealer: Sealer::new(secrets),
            tags: RefreshTags::new(secrets),
        }
    }

    /// `value` as stored under `key`: its JSON sealed for that key.
    fn seal<T: serde::Serialize>(&self, key: &str, value: &T) -> Result<String, StateError> {
        self.sealer
            .seal(key, encode(value)?.as_bytes())
            .map_err(|_| StateError("no session secret to seal the record with".to_owned()))
    }

    /// The record sealed for `key` in `text`: `None` for anything not sealed for that key by a
    /// listed secret (planted, moved from another key, another deployment's, or stored in
    /// clear by an older Tollgate).
    fn open<T: serde::de::DeserializeOwned>(&self, key: &str, text: &str) -> Option<T> {
        let json = self.sealer.open(key, text).ok()?;
        serde_json::from_slice(&json).ok()
    }

    /// A new refresh token for `grant_id`, tagged.
    fn new_refresh_token(&self, grant_id: &str) -> Result<String, StateError> {
        self.tags
            .token(grant_id)
            .ok_or_else(|| StateError("no session secret to tag the token with".to_owned()))
    }

    fn code_key(&self, code: &str) -> String {
        format!("{}code:{{{}}}", self.prefix, hex(&hash(code)))
    }

    fn used_key(&self, code: &str) -> String {
        format!("{}used:{{{}}}", self.prefix, hex(&hash(code)))
    }

    /// A code taken, kept a minute for its own call sent again (`TAKE_CODE`).
    fn taken_key(&self, code: &str) -> String {
        format!("{}taken:{{{}}}", self.prefix, hex(&hash(code)))
    }

    fn grant_key(&self, grant_id: &str) -> String {
        format!("{}grant:{{{grant_id}}}", self.prefix)
    }

    fn revoked_key(&self, grant_id: &str) -> String {
        format!("{}revoked:{{{grant_id}}}", self.prefix)
    }

    /// How many times a grant's refresh token was rotated.
    fn rotations_key(&self, grant_id: &str) -> String {
        format!("{}rotations:{{{grant_id}}}", self.prefix)
    }

    /// The set of a grant's refresh tokens, by their hash in hex.
    fn tokens_key(&self, grant_id: &str) -> String {
        format!("{}tokens:{{{grant_id}}}", self.prefix)
    }

    /// The sorted set of one holder's grants (`Grant::holder`), in the order they were opened.
    fn holder_key(&self, holder: &str) -> String {
        format!("{}holder:{{{holder}}}", self.prefix)
    }

    /// A refresh token's key, by the hex of its SHA-256 (`digest`, as its grant's `tokens` set
    /// holds it).
    fn refresh_key(&self, grant_id: &str, digest: &str) -> String {
        format!("{}refresh:{{{grant_id}}}:{digest}", self.prefix)
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
            self.refresh_key(grant_id, &hex(&hash(token))),
            self.grant_key(grant_id),
            self.revoked_key(grant_id),
        ])
    }

    /// Runs `pipeline` (its keys on `key`'s slot) and answers once Redis confirmed it and, where
    /// the master has replicas, one acknowledged it: a revocation or a spent refresh token that
    /// a failover loses would make a security decision undone (SPEC §12). Otherwise
    /// unavailable (503), and the client's retry writes it again.
    async fn confirmed<T: redis::FromRedisValue>(
        &self,
        key: &str,
        pipeline: &redis::Pipeline,
    ) -> Result<T, StateError> {
        self.connection
            .query_confirmed(key.as_bytes(), pipeline)
            .await
            .map_err(|error| unavailable(&error))
    }

    /// `SET key 1 EX seconds`, confirmed: a revocation.
    async fn revoke_key(&self, key: String, seconds: i64) -> Result<(), StateError> {
        let mut pipeline = redis::pipe();
        pipeline.cmd("SET").arg(&key).arg(1).arg("EX").arg(seconds);
        self.confirmed::<()>(&key, &pipeline).await
    }

    /// Ends the holder's grants beyond [`MAX_GRANTS_PER_USER`] once `grant_id` is opened for
    /// it, oldest first; each leaves the holder's index once it is ended, so one that failed
    /// to end is ended by a later sign-in (two replicas may both end one: no harm).
    async fn end_beyond_the_holders_limit(
        &self,
        holder: &str,
        grant_id: &str,
    ) -> Result<(), StateError> {
        let key = self.holder_key(holder);
        let mut pipeline = eval(ADD_TO_HOLDER, &[&key]);
        pipeline
            .arg(grant_id)
            .arg(self.holder_life.max(1))
            .arg(MAX_GRANTS_PER_USER);
        let (beyond,): (Vec<String>,) = self
            .connection
            .pipeline(&pipeline)
            .await
            .map_err(|error| unavailable(&error))?;
        for ended in &beyond {
            self.end_grant(ended).await?;
            self.connection
                .query::<()>(redis::cmd("ZREM").arg(&key).arg(ended))
                .await
                .map_err(|error| unavailable(&error))?;
        }
        Ok(())
    }

    /// Ends a grant: revoked first (confirmed: no rotation succeeds after it), then its refresh
    /// tokens deleted (those its set names: a grant an older Tollgate rotated may keep some
    /// until they expire, refused as the grant's).
    async fn end_grant(&self, grant_id: &str) -> Result<(), StateError> {
        self.revoke_key(self.revoked_key(grant_id), self.grant_life)
            .await?;
        let tokens_key = self.tokens_key(grant_id);
        let hashes: Vec<String> = self
            .connection
            .query(redis::cmd("SMEMBERS").arg(&tokens_key))
            .await
            .map_err(|error| unavailable(&error))?;
        let mut delete = redis::cmd("DEL");
        delete.arg(&tokens_key).arg(self.rotations_key(grant_id));
        for hash in &hashes {
            delete.arg(format!("{}refresh:{{{grant_id}}}:{hash}", self.prefix));
        }
        self.connection
            .query::<()>(&delete)
            .await
            .map_err(|error| unavailable(&error))
    }

    /// Revokes what a redeemed code issued, in one confirmed write: its access token and,
    /// when it opened one, its grant (both keys on the grant's slot).
    async fn revoke_redemption(&self, used: &Redemption, now: UnixTime) -> Result<(), StateError> {
        let jti = self.jti_key(&used.access_jti, used.grant_id.as_deref());
        let mut pipeline = redis::pipe();
        pipeline
            .cmd("SET")
            .arg(&jti)
            .arg(1)
            .arg("EX")
            .arg(seconds_through(used.access_expires_at, now))
            .ignore();
        if let Some(grant_id) = &used.grant_id {
            pipeline
                .cmd("SET")
                .arg(self.revoked_key(grant_id))
                .arg(1)
                .arg("EX")
                .arg(self.grant_life)
                .ignore();
        }
        self.confirmed::<()>(&jti, &pipeline).await
    }
}

/// `EVAL script` on `keys`, as one pipeline (for a confirmed write); its arguments follow
/// with `Pipeline::arg`.
fn eval(script: &str, keys: &[&str]) -> redis::Pipeline {
    let mut pipeline = redis::pipe();
    pipeline.cmd("EVAL").arg(script).arg(keys.len()).arg(keys);
    pipeline
}

fn decode<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StateError> {
    serde_json::from_str(text).map_err(|error| StateError(format!("unreadable record: {error}")))
}

fn encode<T: serde::Serialize>(value: &T) -> Result<String, StateError> {
    serde_json::to_string(value).map_err(|error| StateError(error.to_string()))
}

#[derive(serde::Deserialize, serde::Serialize)]
struct GrantRecord {
    /// The client the grant is for, sealed with the rest (the hash's plain `client` is what
    /// the scripts compare).
    client_id: String,
    principal: super::Principal,
    scopes: Vec<String>,
    /// Absent from grants stored before it was kept.
    #[serde(default)]
    auth_time: Option<UnixTime>,
    #[serde(default)]
    signed_in: super::SignedIn,
}

impl RedisState {
    /// Runs `script` on the failure count of each of `keys` (its one key), with `argument`.
    async fn on_each_failure_key(
        &self,
        script: &str,
        keys: &[String],
        argument: Option<i64>,
    ) -> Result<(), StateError> {
        for key in keys {
            let mut command = redis::cmd("EVAL");
            command.arg(script).arg(1).arg(self.failure_key(key));
            if let Some(argument) = argument {
                command.arg(argument);
            }
            let _: i64 = self
                .connection
                .query(&command)
                .await
                .map_err(|error| unavailable(&error))?;
        }
        Ok(())
    }
}

impl IssuerState for RedisState {
    fn refresh_token_grant<'a>(&self, token: &'a str) -> Option<&'a str> {
        grant_of_refresh_token(token).filter(|_| self.tags.verify(token))
    }

    fn put_code<'a>(&'a self, code: &'a str, pending: &'a PendingCode) -> StateFuture<'a, ()> {
        Box::pin(async move {
            let key = self.code_key(code);
            let command = redis::cmd("SET")
                .arg(&key)
                .arg(self.seal(&key, pending)?)
                .arg("EX")
                .arg(CODE_LIFETIME)
                .to_owned();
            self.connection
                .query::<()>(&command)
                .await
                .map_err(|error| unavailable(&error))
        })
    }

    fn take_code<'a>(
        &'a self,
        code: &'a str,
        redemption: &'a Redemption,
        now: UnixTime,
    ) -> StateFuture<'a, CodeUse> {
        Box::pin(async move {
            let (code_key, used_key) = (self.code_key(code), self.used_key(code));
            let mut invocation = self.take_code.prepare_invoke();
            invocation
                .key(&code_key)
                .key(&used_key)
                .key(self.taken_key(code))
                .arg(self.seal(&used_key, redemption)?)
                .arg(USED_CODE_MEMORY);
            let answer: Vec<String> = self
                .connection
                .invoke(&invocation)
                .await
                .map_err(|error| unavailable(&error))?;
            match answer.as_slice() {
                [kind, pending] if kind == "pending" => Ok(match self.open(&code_key, pending) {
                    Some(pending) => CodeUse::Pending(Box::new(pending)),
                    None => CodeUse::Unknown,
                }),
                [kind, used] if kind == "replayed" => {
                    // An older Tollgate's record in clear is still believed here: what a
                    // record can make happen is a revocation, never a token. One that is
                    // neither (another deployment's) revokes nothing here.
                    let used = self
                        .open(&used_key, used)
                        .or_else(|| decode::<Redemption>(used).ok());
                    if let Some(used) = used {
                        self.revoke_redemption(&used, now).await?;
                    }
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
            let key = self.grant_key(grant_id);
            let record = self.seal(
                &key,
                &GrantRecord {
                    client_id: grant.client_id.clone(),
                    principal: grant.principal.clone(),
                    scopes: grant.scopes.clone(),
                    auth_time: grant.auth_time,
                    signed_in: grant.signed_in,
                },
            )?;
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
                .map_err(|error| unavailable(&error))?;
            // The grant is open: a failure to end older ones leaves them listed for a later
            // sign-in, and does not fail this one (its code is spent; a retry is a replay).
            if let Err(error) = self
                .end_beyond_the_holders_limit(&grant.holder(), grant_id)
                .await
            {
                tracing::warn!(%error, "the user's oldest grants could not be ended; a later sign-in ends them");
            }
            Ok(())
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
            let token = self.new_refresh_token(grant_id)?;
            let digest = hex(&hash(&token));
            let pipeline = redis::pipe()
                .atomic()
                .cmd("SET")
                .arg(self.refresh_key(grant_id, &digest))
                .arg("fresh")
                .arg("EX")
                .arg(seconds_until(expires_at, now))
                .ignore()
                .cmd("EXPIRE")
                .arg(self.grant_key(grant_id))
                .arg(seconds_until(grant_until, now))
                .arg("GT")
                .ignore()
                .cmd("SADD")
                .arg(self.tokens_key(grant_id))
                .arg(&digest)
                .ignore()
                .cmd("EXPIRE")
                .arg(self.tokens_key(grant_id))
                .arg(seconds_until(grant_until, now))
                .ignore()
                .to_owned();
            self.connection
                .pipeline::<()>(&pipeline)
                .await
                .map_err(|error| unavailable(&error))?;
            Ok(token)
        })
    }

    fn rotate_refresh_token<'a>(
        &'a self,
        token: &'a str,
        client_id: &'a str,
        successor: super::Successor,
        now: UnixTime,
    ) -> StateFuture<'a, RefreshUse> {
        Box::pin(async move {
            if self.refresh_token_grant(token).is_none() {
                return Ok(RefreshUse::Invalid);
            }
            let Some([refresh, grant, revoked]) = self.refresh_keys(token) else {
                return Ok(RefreshUse::Invalid);
            };
            let grant_id = grant_of_refresh_token(token).unwrap_or_default();
            let next = self.new_refresh_token(grant_id)?;
            let next_digest = hex(&hash(&next));
            let next_key = self.refresh_key(grant_id, &next_digest);
            let rotations = self.rotations_key(grant_id);
            let tokens = self.tokens_key(grant_id);
            let mut pipeline = eval(
                ROTATE_REFRESH,
                &[&refresh, &grant, &revoked, &next_key, &rotations, &tokens],
            );
            pipeline
                .arg(client_id)
                .arg(self.grant_life)
                .arg(seconds_until(successor.expires_at, now))
                .arg(seconds_until(successor.grant_until, now))
                .arg(successor.rotations_most)
                .arg(&next_digest);
            let answer = match self.confirmed::<(String,)>(&refresh, &pipeline).await {
                Ok((answer,)) => answer,
                Err(error) => {
                    // The successor is never handed out: where the rotation reached the master,
                    // it is undone (as far as it can be), so that the client's retry is a
                    // rotation again and not a reuse that ends the grant.
                    let undo = eval(UNDO_ROTATION, &[&refresh, &next_key, &rotations]);
                    // On the link the rotation went over: after a failover the other one
                    // may still reach another server.
                    let _ = self.connection.pipeline_on_confirm_link::<()>(&undo).await;
                    return Err(error);
                }
            };
            Ok(match answer.as_str() {
                "fresh" => RefreshUse::Fresh(next),
                "reused" => RefreshUse::Reused,
                "exhausted" => RefreshUse::Exhausted,
                _ => RefreshUse::Invalid,
            })
        })
    }

    fn grant<'a>(
        &'a self,
        grant_id: &'a str,
        client_id: &'a str,
    ) -> StateFuture<'a, Option<Grant>> {
        Box::pin(async move {
            let key = self.grant_key(grant_id);
            let command = redis::cmd("HMGET")
                .arg(&key)
                .arg("client")
                .arg("record")
                .to_owned();
            let (client, record): (Option<String>, Option<String>) = self
                .connection
                .query(&command)
                .await
                .map_err(|error| unavailable(&error))?;
            Ok(record
                .filter(|_| client.as_deref() == Some(client_id))
                .and_then(|record| self.open::<GrantRecord>(&key, &record))
                .filter(|record| record.client_id == client_id)
                .map(|record| Grant {
                    client_id: record.client_id,
                    principal: record.principal,
                    scopes: record.scopes,
                    auth_time: record.auth_time,
                    signed_in: record.signed_in,
                }))
        })
    }

    fn revoke_refresh_token<'a>(
        &'a self,
        token: &'a str,
        client_id: &'a str,
    ) -> StateFuture<'a, bool> {
        Box::pin(async move {
            let Some([refresh, grant, revoked]) = self.refresh_keys(token) else {
                return Ok(false);
            };
            let mut pipeline = eval(REVOKE_REFRESH, &[&refresh, &grant, &revoked]);
            pipeline.arg(client_id).arg(self.grant_life);
            let (done,): (i64,) = self.confirmed(&refresh, &pipeline).await?;
            Ok(done == 1)
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
            self.revoke_key(self.jti_key(jti, sid), seconds_through(expires_at, now))
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
            // Looked at before the query too: a link may move while it is under way.
            let apart = self.connection.links_apart();
            let found: i64 = self
                .connection
                .query(&command)
                .await
                .map_err(|error| unavailable(&error))?;
            // A failover half followed: a revocation confirmed on either server holds.
            if found == 0 && (apart || self.connection.links_apart()) {
                let confirmed: i64 = self
                    .connection
                    .query_on_confirm_link(&command)
                    .await
                    .map_err(|error| unavailable(&error))?;
                return Ok(confirmed > 0);
            }
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
        // The window starts with its first failure, as in the memory store (a script rather
        // than `EXPIRE … NX`, which Redis before 7.0 refuses).
        const COUNT: &str = "local count = redis.call('INCR', KEYS[1]) \
if count == 1 or redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end \
return count";
        Box::pin(self.on_each_failure_key(COUNT, keys, Some(FAILURE_WINDOW)))
    }

    fn forgive_failure<'a>(&'a self, keys: &'a [String], _now: UnixTime) -> StateFuture<'a, ()> {
        // Only a count that is there (its window may have ended meanwhile).
        const FORGIVE: &str = "if redis.call('GET', KEYS[1]) then \
local count = redis.call('DECR', KEYS[1]) \
if count <= 0 then redis.call('DEL', KEYS[1]) end end \
return 0";
        Box::pin(self.on_each_failure_key(FORGIVE, keys, None))
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
