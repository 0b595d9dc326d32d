//! What lets replicas refresh a session once between them (SPEC §12): a short lease per
//! session (`SET … NX PX` in a script that a resent call finds done, held by a random holder
//! value, released only by its holder) and a
//! compare-and-set write that stores a refreshed session only over the exact value it read,
//! answered only once a replica has it too (when the master has replicas).

use std::sync::Arc;
use std::time::Duration;

use super::RedisStore;
use crate::session::StoredSession;
use crate::session::error::StoreError;

/// Deletes a key only while it holds its writer's value: the lease only for its holder (a
/// lease that expired and was taken again is not another replica's to drop), a logout token's
/// record only for the attempt that wrote it.
pub(super) const RELEASE: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

/// Writes the value only over exactly the one that was read: 1 when written now, 2 when this
/// very value is there already (the same call sent again by the Cluster client after a dropped
/// connection, once the first had written it: each sealed value is unique; its expiry is
/// written again so that the `WAIT` after the retry covers a write), 0 otherwise.
const COMPARE_AND_SET: &str = "local current = redis.call('GET', KEYS[1]) \
if current == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) return 1 end \
if current == ARGV[2] then redis.call('EXPIRE', KEYS[1], ARGV[3]) return 2 end \
return 0";

/// Takes a lease for its holder (`ARGV[1]`, random per attempt) for `ARGV[2]` ms: 1 when
/// taken now, 2 when this holder has it already (the same call sent again by the Cluster
/// client after a dropped connection: a plain `SET NX` found the lease taken, by itself, and
/// the refresh waited for a replica that was not refreshing), 0 when another holder has it.
const TAKE_LEASE: &str = "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end \
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 2 end \
return 0";

impl RedisStore {
    fn lease_key(&self, id: &str) -> String {
        format!("{}:refreshing", self.key(id))
    }

    /// Takes the refresh lease of session `id` for `hold`, unless another holder has it. The
    /// lease is confirmed like a logout (a replica has it when the master has replicas): a
    /// lease lost in a failover would let another replica present the refresh token this one
    /// is about to spend.
    ///
    /// # Errors
    /// `Unavailable`, also when no replica acknowledged the lease (it is given back then).
    pub async fn take_lease(
        &self,
        id: &str,
        holder: &str,
        hold: Duration,
    ) -> Result<bool, StoreError> {
        let millis = u64::try_from(hold.as_millis()).unwrap_or(u64::MAX).max(1);
        let key = self.lease_key(id);
        let mut pipeline = redis::pipe();
        pipeline
            .cmd("EVAL")
            .arg(TAKE_LEASE)
            .arg(1)
            .arg(&key)
            .arg(holder)
            .arg(millis);
        match self
            .connection
            .query_confirmed::<(i64,)>(key.as_bytes(), &pipeline)
            .await
        {
            Ok((taken,)) => Ok(taken >= 1),
            Err(error) => {
                // No refresh on a lease a failover may lose: give it back (only ours goes).
                let _ = self.release_lease(id, holder).await;
                Err(self.failed(&error))
            }
        }
    }

    // The lease, the session it guards and its compare-and-set are all read and written on the
    // link of confirmed writes: after a Sentinel failover the main link may still be on the
    // old master for a moment, and a session read there holds the refresh token that the
    // lease's holder on the new master has already spent.

    /// Runs `command` where the lease and the confirmed writes are.
    async fn run_by_lease<T: redis::FromRedisValue>(
        &self,
        command: &redis::Cmd,
    ) -> Result<T, StoreError> {
        self.connection
            .query_on_confirm_link(command)
            .await
            .map_err(|error| self.failed(&error))
    }

    /// Whether some replica holds the refresh lease of session `id`.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn lease_held(&self, id: &str) -> Result<bool, StoreError> {
        let held: i64 = self
            .run_by_lease(redis::cmd("EXISTS").arg(self.lease_key(id)))
            .await?;
        Ok(held > 0)
    }

    /// Gives the lease back, if `holder` still has it.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn release_lease(&self, id: &str, holder: &str) -> Result<(), StoreError> {
        let _: i64 = self
            .run_by_lease(
                redis::cmd("EVAL")
                    .arg(RELEASE)
                    .arg(1)
                    .arg(self.lease_key(id))
                    .arg(holder),
            )
            .await?;
        Ok(())
    }

    /// The session `id` as Redis has it now where the lease is, never this process's copy
    /// (nor kept as one: the confirm link tracks nothing).
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn get_fresh(
        &self,
        id: &str,
    ) -> Result<Option<(Arc<[u8]>, StoredSession)>, StoreError> {
        self.changed(id);
        let value: Option<Vec<u8>> = self
            .run_by_lease(redis::cmd("GET").arg(self.key(id)))
            .await?;
        Ok(value.and_then(|bytes| {
            let stored = self.open(id, &bytes)?;
            Some((bytes.into(), stored))
        }))
    }

    /// Stores `stored` under `id` only if Redis still holds exactly `seen`; whether it did.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn compare_and_set(
        &self,
        id: &str,
        seen: &[u8],
        stored: &StoredSession,
        ttl: i64,
    ) -> Result<bool, StoreError> {
        let bytes = self.seal(id, stored)?;
        let ttl = u64::try_from(ttl.max(1)).unwrap_or(1);
        self.changed(id);
        let key = self.key(id);
        let mut pipeline = redis::pipe();
        pipeline
            .cmd("EVAL")
            .arg(COMPARE_AND_SET)
            .arg(1)
            .arg(&key)
            .arg(seen)
            .arg(bytes)
            .arg(ttl);
        // Confirmed like a logout: a refreshed session lost in a failover would bring back the
        // refresh token it spent, and a provider that rotates refuses that token and may end
        // the whole grant.
        let (written,): (i64,) = self
            .connection
            .query_confirmed(key.as_bytes(), &pipeline)
            .await
            .map_err(|error| self.failed(&error))?;
        Ok(written >= 1)
    }
}
