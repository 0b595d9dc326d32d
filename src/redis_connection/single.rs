//! A standalone or Sentinel link: one multiplexed connection, made when first needed and
//! made again after a failure; with `Invalidations`, it speaks RESP3 with `CLIENT TRACKING`
//! on and hands Redis's invalidation messages over in order with the replies.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use redis::aio::MultiplexedConnection;
use redis::{RedisResult, Value};

use super::sentinel::Sentinels;
use super::watched::{self, Watch};
use super::{FailedAttempts, Invalidations, TIMEOUT, timed_out};

/// The connection a single-server link keeps, with the serial of the attempt that made it and,
/// when it tracks, the watch on its socket; emptied when it is lost.
type Slot = std::sync::Mutex<Option<(u64, MultiplexedConnection, Option<Watch>)>>;

/// Where the one server of a standalone or Sentinel set-up is found. Made once per store and
/// kept in an `Arc`, so the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub(super) enum Source {
    Direct(redis::Client),
    Sentinel(Sentinels),
}

/// Standalone or Sentinel: one multiplexed connection, made when first needed and made again
/// after a failure.
pub(super) struct Single {
    source: Arc<Source>,
    /// With Sentinel: the master the current connection goes to, and when the sentinels were
    /// last asked about it.
    master: Arc<MasterSeen>,
    slot: Arc<Slot>,
    connecting: tokio::sync::Mutex<()>,
    /// The attempts `connecting` let through that failed.
    attempts: FailedAttempts,
    serial: AtomicU64,
    /// With these, the connection speaks RESP3 with `CLIENT TRACKING` on.
    pub(super) invalidations: Option<Arc<dyn Invalidations>>,
    /// The TLS client configuration, made with the link when its target speaks TLS (trusting
    /// `session.redis_ca_file`, else the system's roots as they were then).
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Whether the current connection has tracking on, so copies may be kept.
    pub(super) tracking: AtomicBool,
    /// The server the current connection goes to.
    connected_to: std::sync::Mutex<Option<String>>,
    /// The last master that said it had replicas, and when (kept across reconnects to it).
    replicas_seen: std::sync::Mutex<Option<(String, tokio::time::Instant)>>,
}

/// How long a master that said it had replicas is expected to keep one: a write it confirms
/// alone within this time is not confirmed. A master whose replica has just gone is what a
/// Sentinel failover looks like from the old master's side (the replica was promoted; the old
/// master takes writes until it is demoted, and loses them then).
const REPLICAS_REMEMBERED: std::time::Duration = std::time::Duration::from_secs(10);

/// Empties `slot` if it still holds the connection made by attempt `serial`; whether it did.
fn lose(slot: &Slot, serial: u64) -> bool {
    let mut slot = slot
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let current = slot
        .as_ref()
        .is_some_and(|(current, ..)| *current == serial);
    if current {
        *slot = None;
    }
    current
}

/// Pings Redis on the tracking connection made by attempt `serial` every `HEARTBEAT` while
/// `slot` holds it, so its reader hears from Redis while requests are answered from copies
/// (see `watched`). A ping that fails drops the connection and every copy: the next request
/// connects again.
fn heartbeat(slot: Weak<Slot>, serial: u64, invalidations: Arc<dyn Invalidations>) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(watched::HEARTBEAT);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let Some(slot) = slot.upgrade() else { return };
            let connection = slot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_ref()
                .filter(|(current, ..)| *current == serial)
                .map(|(_, connection, _)| connection.clone());
            let Some(mut connection) = connection else {
                return;
            };
            let pong: RedisResult<String> = redis::cmd("PING").query_async(&mut connection).await;
            if let Err(error) = pong {
                if lose(&slot, serial) {
                    tracing::warn!(%error, "Redis did not answer a ping; reconnecting");
                    invalidations.invalidate_all();
                }
                return;
            }
        }
    });
}

/// `client` speaking RESP3, which carries the invalidation messages.
fn resp3(client: &redis::Client) -> RedisResult<redis::Client> {
    let info = client.get_connection_info().clone();
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(redis::ProtocolVersion::RESP3);
    redis::Client::open(info.set_redis_settings(settings))
}

/// A connection's settings: connecting and every answer cut off after `TIMEOUT`.
fn timeouts() -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT))
}

/// With Sentinel: the master the current connection goes to, and when the sentinels were
/// last asked about it.
type MasterSeen = std::sync::Mutex<Option<(redis::ConnectionAddr, tokio::time::Instant)>>;

/// How often a Sentinel link asks whether its master is still the master.
const MASTER_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

impl Single {
    pub(super) fn new(
        source: Arc<Source>,
        invalidations: Option<Arc<dyn Invalidations>>,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Self {
        Self {
            source,
            tls,
            master: Arc::new(std::sync::Mutex::new(None)),
            slot: Arc::new(std::sync::Mutex::new(None)),
            connecting: tokio::sync::Mutex::new(()),
            attempts: FailedAttempts::default(),
            serial: AtomicU64::new(0),
            invalidations,
            tracking: AtomicBool::new(false),
            connected_to: std::sync::Mutex::new(None),
            replicas_seen: std::sync::Mutex::new(None),
        }
    }

    /// Whether this link and `other` last connected, or tried to connect, to different servers
    /// (kept after a connection is lost: a link that moves nowhere yet may lag a failover).
    pub(super) fn on_another_server_than(&self, other: &Self) -> bool {
        let mine = self
            .connected_to
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let theirs = other
            .connected_to
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        matches!((&*mine, &*theirs), (Some(mine), Some(theirs)) if mine != theirs)
    }

    /// The master of the current connection says it has `connected` replicas: whether a write
    /// there needs one of them to acknowledge it. With none connected, it does when the same
    /// server had one within [`REPLICAS_REMEMBERED`] (a replica that went away may have been
    /// promoted), so such a write is not confirmed. A connection to another server (the
    /// master the sentinels name after a failover) starts afresh. With Sentinel, a master that
    /// seems alone is taken to be so only when the sentinels, asked now, name it the master
    /// and know no replica that could take over from it: this link may not have written there
    /// for longer than it remembers (a process that just started, or one whose last confirmed
    /// write is old), and a master whose replica was just promoted looks alone too.
    pub(super) async fn replicas_expected(&self, connected: u64) -> bool {
        let server = self
            .connected_to
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        {
            let mut seen = self
                .replicas_seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if connected > 0 {
                *seen = server.map(|server| (server, tokio::time::Instant::now()));
                return true;
            }
            if seen.as_ref().is_some_and(|(at_server, at)| {
                server.as_ref() == Some(at_server) && at.elapsed() < REPLICAS_REMEMBERED
            }) {
                return true;
            }
        }
        let Source::Sentinel(sentinels) = &*self.source else {
            return false;
        };
        let master = self
            .master
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|(address, _)| address.clone());
        match master {
            Some(master) => !Box::pin(sentinels.may_write_alone(&master)).await,
            None => true,
        }
    }

    fn current(&self) -> Option<(u64, MultiplexedConnection)> {
        let slot = self
            .slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slot.as_ref()
            .map(|(serial, connection, _)| (*serial, connection.clone()))
    }

    /// The connection, with the serial of the attempt that made it; made first when there is
    /// none (one attempt at a time).
    pub(super) async fn connection(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        if let Some(current) = self.current() {
            self.check_master();
            return Ok(current);
        }
        let mark = self.attempts.mark();
        let Ok(_connecting) = tokio::time::timeout(TIMEOUT * 2, self.connecting.lock()).await
        else {
            return Err(timed_out());
        };
        if let Some(current) = self.current() {
            return Ok(current);
        }
        if let Some(error) = self.attempts.since(mark) {
            // The attempt this call waited for failed: that is its answer too.
            return Err(error);
        }
        // Boxed: connecting is rare, and its future is kilobytes that every Redis call's own
        // future would otherwise carry (and copy) on each request.
        let made = tokio::time::timeout(TIMEOUT * 2, Box::pin(self.connect()))
            .await
            .unwrap_or_else(|_| Err(timed_out()));
        self.attempts.record(&made);
        made
    }

    /// With Sentinel, at most every `MASTER_CHECK` and off the request's path: asks the
    /// sentinels which server is the master, and drops the connection when it is another
    /// one. A failover does not break the connection to the old master, which keeps taking
    /// writes until the sentinels demote it, and those writes are lost then; so the link
    /// follows the sentinels, not only a failed connection.
    fn check_master(&self) {
        let Source::Sentinel(_) = &*self.source else {
            return;
        };
        let serial = {
            let mut master = self
                .master
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match master.as_mut() {
                Some((_, checked)) if checked.elapsed() >= MASTER_CHECK => {
                    *checked = tokio::time::Instant::now();
                }
                _ => return,
            }
            self.serial.load(Ordering::SeqCst)
        };
        let (source, master, slot) = (self.source.clone(), self.master.clone(), self.slot.clone());
        let invalidations = self.invalidations.clone();
        tokio::spawn(async move {
            let Source::Sentinel(sentinels) = &*source else {
                return;
            };
            // When the sentinels cannot say, the connection stays: it fails by itself if the
            // master is gone.
            let Ok(Ok(client)) = tokio::time::timeout(TIMEOUT, sentinels.master()).await else {
                return;
            };
            let moved = master
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_ref()
                .is_some_and(|(address, _)| address != client.get_connection_info().addr());
            if !moved {
                return;
            }
            tracing::info!(master = %client.get_connection_info().addr(), "Sentinel names a new Redis master; reconnecting");
            if lose(&slot, serial)
                && let Some(invalidations) = &invalidations
            {
                invalidations.invalidate_all();
            }
        });
    }

    async fn connect(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        let client = match &*self.source {
            Source::Direct(client) => client.clone(),
            Source::Sentinel(sentinels) => {
                let client = sentinels.master().await?;
                *self
                    .master
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((
                    client.get_connection_info().addr().clone(),
                    tokio::time::Instant::now(),
                ));
                client
            }
        };
        *self
            .connected_to
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(client.get_connection_info().addr().to_string());
        let serial = self.serial.fetch_add(1, Ordering::SeqCst) + 1;
        let config = timeouts();
        let Some(invalidations) = self.invalidations.clone() else {
            let connection = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            self.keep(serial, connection.clone(), None);
            return Ok((serial, connection));
        };
        let slot: Weak<Slot> = Arc::downgrade(&self.slot);
        let (listener, watched_slot) = (invalidations.clone(), slot.clone());
        // Runs on the connection's reader, in order with the replies.
        let on_push = move |push: redis::PushInfo| {
            let lost = match push.kind {
                redis::PushKind::Invalidate => {
                    match push.data.first() {
                        Some(Value::Array(keys)) => {
                            for key in keys {
                                if let Value::BulkString(key) = key {
                                    listener.invalidate(key);
                                }
                            }
                        }
                        // FLUSHALL / FLUSHDB, or Redis dropped its tracking table.
                        _ => listener.invalidate_all(),
                    }
                    false
                }
                redis::PushKind::Disconnection => {
                    listener.invalidate_all();
                    true
                }
                _ => false,
            };
            if lost && let Some(slot) = slot.upgrade() {
                lose(&slot, serial);
            }
            Ok::<(), std::convert::Infallible>(())
        };
        let config = config.set_push_sender(on_push);
        let Some((mut connection, watch)) = watched::connect(
            resp3(&client)?.get_connection_info(),
            self.tls.as_ref(),
            config,
        )
        .await?
        else {
            // An address whose socket cannot be watched: no copies are kept.
            tracing::warn!(
                "Redis over a Unix socket or TLS without certificate checks: sessions are not kept in process; every read goes to Redis"
            );
            let connection = client
                .get_multiplexed_async_connection_with_config(&timeouts())
                .await?;
            self.tracking.store(false, Ordering::SeqCst);
            invalidations.invalidate_all();
            self.keep(serial, connection.clone(), None);
            return Ok((serial, connection));
        };
        let tracking: RedisResult<()> = redis::cmd("CLIENT")
            .arg("TRACKING")
            .arg("ON")
            .query_async(&mut connection)
            .await;
        let tracked = match tracking {
            Ok(()) => true,
            // An ACL or a managed Redis may refuse the command: then no copies are kept.
            Err(error)
                if matches!(
                    error.kind(),
                    redis::ErrorKind::Server(_) | redis::ErrorKind::Extension
                ) =>
            {
                tracing::warn!(%error, "Redis refused CLIENT TRACKING; every read goes to Redis");
                false
            }
            Err(error) => return Err(error),
        };
        // Whatever was kept came through a connection whose invalidations may be lost.
        self.tracking.store(tracked, Ordering::SeqCst);
        invalidations.invalidate_all();
        self.keep(serial, connection.clone(), tracked.then_some(watch));
        if tracked {
            heartbeat(watched_slot, serial, invalidations);
        }
        Ok((serial, connection))
    }

    fn keep(&self, serial: u64, connection: MultiplexedConnection, watch: Option<Watch>) {
        *self
            .slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((serial, connection, watch));
    }

    /// Whether copies of what this link read may be used now: it tracks, Redis has said
    /// nothing on it that its reader has not handed over yet, and was heard lately (see
    /// `watched`).
    pub(super) fn settled(&self) -> bool {
        self.slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .and_then(|(_, _, watch)| watch.as_ref())
            .is_some_and(Watch::settled)
    }

    /// Forgets the connection made by attempt `serial` (a call on it failed), and every copy
    /// read through it; a connection made since is kept, so the calls that were in flight on
    /// the lost one, failing one after another, do not drop each new one in turn.
    pub(super) fn reset(&self, serial: u64) {
        if lose(&self.slot, serial)
            && let Some(invalidations) = &self.invalidations
        {
            invalidations.invalidate_all();
        }
    }
}
