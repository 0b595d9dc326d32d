//! A replica's kept copies of Redis sessions (client-side caching, SPEC §12) against a real
//! redis-server: a copy serves requests while Redis has nothing new to say, and is never used
//! while Redis has said something the replica has not read yet, however starved its reader,
//! nor once the link to Redis has gone silent.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;

use tollgate::config::RedisTarget;
use tollgate::metrics::Metrics;
use tollgate::redis_connection::{HEARD_WITHIN, HEARTBEAT};
use tollgate::secret::Secret;
use tollgate::session::Session;
use tollgate::session::StoredSession;
use tollgate::session::redis_store::RedisStore;
use tollgate::session::seal::Sealer;

use crate::support::redis::{RedisServer, available};
use crate::support::relay::Relay;

const NOW: i64 = 1_800_000_000;

fn store(redis: &RedisServer) -> Arc<RedisStore> {
    store_at(redis.url())
}

fn store_at(url: String) -> Arc<RedisStore> {
    let sealer = Sealer::new(&[Secret::new(
        "a-test-session-secret-for-kept-copies".to_owned(),
    )]);
    Arc::new(
        RedisStore::new(
            &RedisTarget::Standalone(url),
            None,
            "tollgate:",
            sealer,
            Arc::new(Metrics::new()),
        )
        .unwrap(),
    )
}

fn stored() -> StoredSession {
    StoredSession {
        session: Arc::new(Session {
            provider: "corp".to_owned(),
            claims: tollgate::token::Claims::default(),
            id_token: "id".to_owned(),
            access_token: Some("at".to_owned()),
            refresh_token: None,
            access_expires_at: Some(NOW + 300),
            created_at: NOW,
            expires_at: NOW + 3600,
        }),
        last_seen: NOW,
    }
}

/// A replica's worker: a single-threaded runtime on a thread of its own, which the test can
/// stall as a replica starved of CPU is stalled. While it is, none of its tasks runs, the
/// reader of its Redis connection included.
struct Worker {
    handle: tokio::runtime::Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Worker {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            runtime.block_on(async {
                let _ = stopped.await;
            });
        });
        Self {
            handle,
            _stop: stop,
        }
    }

    /// Blocks the worker's thread until the returned sender is used or dropped.
    fn stall(&self) -> std::sync::mpsc::Sender<()> {
        let (stalled, on_stall) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        self.handle.spawn(async move {
            stalled.send(()).unwrap();
            let _ = released.recv();
        });
        on_stall.recv().unwrap();
        release
    }
}

#[tokio::test]
async fn a_session_ended_elsewhere_is_not_served_from_a_copy_whose_reader_is_starved() {
    if !available() {
        return;
    }
    let redis = RedisServer::standalone().await;
    let ending = store(&redis);
    ending
        .put("s1", &stored(), (600, 600), "alice", None)
        .await
        .unwrap();

    // The replica reads the session on its worker, where its Redis connection and that
    // connection's reader live, and keeps a copy (the read that made the connection keeps
    // none): the next read does not reach Redis.
    let worker = Worker::start();
    let replica = store(&redis);
    let read = |replica: Arc<RedisStore>| async move { replica.get("s1").await.unwrap() };
    for _ in 0..2 {
        assert!(
            worker
                .handle
                .spawn(read(replica.clone()))
                .await
                .unwrap()
                .is_some()
        );
    }
    let gets = redis.calls("get");
    assert!(
        worker
            .handle
            .spawn(read(replica.clone()))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(redis.calls("get"), gets, "the copy served the read");

    // The replica's worker stalls; another replica ends the session, confirmed by Redis, and
    // makes one more round trip, so Redis has flushed its invalidation to the stalled one.
    let release = worker.stall();
    assert!(ending.delete_confirmed("s1").await.unwrap());
    ending.ping().await.unwrap();

    // The next request at the stalled replica must not be answered from the copy.
    let mut next = Box::pin(replica.get("s1"));
    let first = std::future::poll_fn(|cx| Poll::Ready(next.as_mut().poll(cx))).await;
    assert!(
        !matches!(first, Poll::Ready(Ok(Some(_)))),
        "a session ended at another replica was served from this replica's copy"
    );
    release.send(()).unwrap();
    let answer = match first {
        Poll::Ready(answer) => answer,
        Poll::Pending => next.await,
    };
    assert!(answer.unwrap().is_none(), "the ended session was found");
}

/// A link that went silent (Redis's host lost, a partition: no FIN, no RST) has an empty
/// socket, like a link with nothing to say; its copies must not outlive what it last heard.
#[tokio::test]
async fn a_session_ended_elsewhere_is_not_served_from_a_copy_once_its_link_went_silent() {
    if !available() {
        return;
    }
    let redis = RedisServer::standalone().await;
    let ending = store(&redis);
    ending
        .put("s1", &stored(), (600, 600), "alice", None)
        .await
        .unwrap();
    let relay = Relay::to(redis.port).await;
    let replica = store_at(format!("redis://127.0.0.1:{}", relay.port));
    for _ in 0..2 {
        assert!(replica.get("s1").await.unwrap().is_some());
    }

    // Over a few heartbeats the copy keeps serving: the link is heard from.
    let (gets, pings) = (redis.calls("get"), redis.calls("ping"));
    tokio::time::sleep(HEARD_WITHIN * 2).await;
    assert!(replica.get("s1").await.unwrap().is_some());
    assert_eq!(redis.calls("get"), gets, "the copy served the read");
    assert!(
        redis.calls("ping") > pings,
        "the replica's link pinged Redis while serving copies"
    );

    // The link goes silent, and another replica ends the session: its invalidation never
    // reaches this replica. Once the link has been silent for longer than copies may be
    // trusted, the next read goes to Redis (and cannot reach it).
    relay.freeze();
    assert!(ending.delete_confirmed("s1").await.unwrap());
    tokio::time::sleep(HEARD_WITHIN + HEARTBEAT).await;
    let answer = replica.get("s1").await;
    assert!(
        !matches!(answer, Ok(Some(_))),
        "a session ended at another replica was served from a copy over a silent link"
    );
}

/// While Redis cannot be reached (a silent link: no FIN, no RST), the calls waiting for a
/// connection share one attempt and take its failure: before, each made an attempt of its own
/// in turn, so the last of many requests got its 503 only after all the others' attempts, and
/// the calls that failed on the lost connection each dropped the one made after it.
#[tokio::test]
async fn calls_while_redis_cannot_be_reached_share_one_connection_attempt() {
    if !available() {
        return;
    }
    let redis = RedisServer::standalone().await;
    store(&redis)
        .put("s1", &stored(), (600, 600), "alice", None)
        .await
        .unwrap();
    let relay = Relay::to(redis.port).await;
    let replica = store_at(format!("redis://127.0.0.1:{}", relay.port));
    assert!(replica.get("s1").await.unwrap().is_some());
    relay.freeze();
    let calls = 12;
    let gets = || {
        let mut tasks = tokio::task::JoinSet::new();
        for index in 0..calls {
            let replica = replica.clone();
            // Each its own id: no copy answers.
            tasks.spawn(async move { replica.get(&format!("other-{index}")).await.is_err() });
        }
        async move {
            let mut failed = 0;
            while let Some(result) = tasks.join_next().await {
                failed += usize::from(result.unwrap());
            }
            failed
        }
    };
    // On the lost connection: each call times out.
    assert_eq!(gets().await, calls);
    let before = relay.accepted();
    // No connection now: one attempt, whose failure every waiting call takes.
    let failed = tokio::time::timeout(std::time::Duration::from_secs(120), gets())
        .await
        .expect("answered");
    assert_eq!(failed, calls);
    assert!(
        relay.accepted() - before <= 2,
        "{} connection attempts for {calls} calls",
        relay.accepted() - before
    );
}

/// The same for a Cluster link's connection: the calls waiting for it share one attempt.
#[tokio::test]
async fn calls_while_a_cluster_cannot_be_reached_share_one_connection_attempt() {
    use tollgate::redis_connection::{RedisConnection, RedisTarget};
    if !available() {
        return;
    }
    let redis = RedisServer::standalone().await;
    let relay = Relay::to(redis.port).await;
    relay.freeze();
    let seed = format!("redis://127.0.0.1:{}", relay.port);
    let connection =
        Arc::new(RedisConnection::new(&RedisTarget::Cluster(vec![seed]), None, None).unwrap());
    let calls = 12;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..calls {
        let connection = connection.clone();
        tasks.spawn(async move {
            connection
                .query::<String>(&redis::cmd("PING"))
                .await
                .is_err()
        });
    }
    let failed = tokio::time::timeout(std::time::Duration::from_secs(120), async {
        let mut failed = 0;
        while let Some(result) = tasks.join_next().await {
            failed += usize::from(result.unwrap());
        }
        failed
    })
    .await
    .expect("answered");
    assert_eq!(failed, calls);
    assert!(
        relay.accepted() <= 2,
        "{} connection attempts for {calls} calls",
        relay.accepted()
    );
}
