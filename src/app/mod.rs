//! Builds every role from a `Config` and runs the listeners: the public one (forward-auth,
//! login, token service), the admin one (metrics, health) and Envoy's gRPC one. Shutdown is a signal handed in;
//! a new config goes live with [`RunningApp::reload`] (SIGHUP in `main`).
//!
//! The live [`AppState`] sits in an `ArcSwap`: every request (not every connection, so
//! keep-alive connections follow a reload) takes the current one with one atomic load and
//! keeps it until it is answered.

mod error;
mod open_files;
mod reload;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tower::ServiceExt as _;

use crate::clock::Clock;
use crate::config::Config;
use crate::http::stalled_body::{StallGuard, Stalled};
use crate::session::memory_store::MemoryStore;

pub use error::{AppError, ReloadError};
pub use reload::{Commit, Reloadable};
pub use state::AppState;

/// The live state, swapped whole by a reload.
type Live = Arc<ArcSwap<AppState>>;

/// A running Tollgate: its bound addresses, a way to reload its config and one to stop it.
pub struct RunningApp {
    /// The public listener's address.
    pub public_addr: SocketAddr,
    /// The admin listener's address.
    pub admin_addr: Option<SocketAddr>,
    /// Envoy's gRPC Check listener's address (`forward_auth.grpc_listen`).
    pub grpc_addr: Option<SocketAddr>,
    /// The public listener's certificate, when it serves https (re-read on every SIGHUP).
    pub tls: Option<Arc<crate::tls::server::ServerCertificate>>,
    live: Live,
    /// Held by a reload for its whole length, so two never interleave; holds the parts that
    /// live outside `AppState` and follow the config too.
    reloadables: tokio::sync::Mutex<Vec<Arc<dyn Reloadable>>>,
    /// The memory session store's background tasks, replaced when a reload replaces the store.
    memory_tasks: std::sync::Mutex<Option<MemoryTasks>>,
    shutdown: tokio::sync::watch::Sender<bool>,
    tasks: tokio::task::JoinSet<std::io::Result<()>>,
    /// The threads serving the public listener's connections; they end when this is dropped.
    _workers: Arc<crate::http::serve::Workers>,
}

impl RunningApp {
    /// The live state (tests read metrics and stores from it).
    pub fn state(&self) -> Arc<AppState> {
        self.live.load_full()
    }

    /// Stops accepting, drains in-flight requests, and waits for the listeners to finish.
    ///
    /// # Errors
    /// When a listener failed.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        let _ = self.shutdown.send(true);
        while let Some(result) = self.tasks.join_next().await {
            result.map_err(std::io::Error::other)??;
        }
        if let Ok(mut tasks) = self.memory_tasks.lock()
            && let Some(tasks) = tasks.take()
        {
            tasks.stop();
        }
        if let Some(store) = self.state().memory_store() {
            store.flush().map_err(std::io::Error::other)?;
        }
        // The spans of the requests just drained go out before the process ends.
        if let Some(telemetry) = self.state().telemetry.clone() {
            tokio::task::spawn_blocking(move || telemetry.shutdown())
                .await
                .map_err(std::io::Error::other)?;
        }
        Ok(())
    }

    /// Waits until a listener stops (which happens only on failure or shutdown).
    ///
    /// # Errors
    /// When a listener failed.
    pub async fn wait(&mut self) -> std::io::Result<()> {
        match self.tasks.join_next().await {
            Some(result) => result.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }

    /// The shutdown trigger.
    pub fn shutdown_trigger(&self) -> tokio::sync::watch::Sender<bool> {
        self.shutdown.clone()
    }

    /// Starts (or keeps) the background tasks of the live state's memory session store: a
    /// store a reload replaced has its tasks stopped and is written to its state file; a store
    /// a reload kept seals its file with the live session secrets from now on (only once the
    /// new config is live: a reload that fails leaves the file to the secrets still in use).
    fn follow_memory_store(&self) {
        let state = self.state();
        let Ok(mut current) = self.memory_tasks.lock() else {
            return;
        };
        let wanted = state.memory_store();
        let same = match (current.as_ref(), wanted) {
            (Some(tasks), Some(store)) => Arc::ptr_eq(&tasks.store, store),
            (None, None) => true,
            _ => false,
        };
        if same {
            if let Some(store) = wanted {
                store.seal_with(crate::session::seal::Sealer::new(
                    &state.config.session.secrets,
                ));
            }
            return;
        }
        if let Some(old) = current.take() {
            old.stop();
            if let Err(error) = old.store.flush() {
                tracing::error!(%error, "cannot write the replaced session store's state file");
            }
        }
        *current = wanted.map(|store| MemoryTasks::start(store.clone(), self.live.clone()));
    }
}

/// The memory session store's write-behind and purge tasks.
struct MemoryTasks {
    store: Arc<MemoryStore>,
    handles: Vec<tokio::task::AbortHandle>,
}

impl MemoryTasks {
    fn start(store: Arc<MemoryStore>, live: Live) -> Self {
        let writer = store.clone();
        let write_behind = tokio::spawn(async move { writer.write_behind().await });
        let purged = store.clone();
        let purge = tokio::spawn(async move {
            let mut every_minute = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                every_minute.tick().await;
                // The live config's lifetime, idle timeout, clock and metrics.
                let state = live.load_full();
                let now = state.clock.now();
                let idle =
                    i64::try_from(state.config.session.idle_timeout.as_secs()).unwrap_or(i64::MAX);
                let Some(sessions) = &state.sessions else {
                    continue;
                };
                let count = purged.remove_where(|_, facts, last_seen| {
                    now >= sessions.jar.end_of(facts.expires_at, facts.created_at)
                        || now - last_seen > idle
                });
                state.metrics.sessions_ended.inc_by(count as u64);
            }
        });
        Self {
            store,
            handles: vec![write_behind.abort_handle(), purge.abort_handle()],
        }
    }

    /// Stops both tasks. A state-file write already handed to its blocking thread is not
    /// cancelled: it runs to its end under the store's `writing` lock, which a later write of
    /// this store waits for before it writes whatever changed since.
    fn stop(&self) {
        for handle in &self.handles {
            handle.abort();
        }
    }
}

/// Binds the configured listeners (or uses the ones given) and starts serving.
///
/// # Errors
/// When a listener cannot be bound or the state cannot be built.
pub async fn start(
    config: Config,
    clock: Arc<dyn Clock>,
    public: Option<TcpListener>,
    admin: Option<TcpListener>,
) -> Result<RunningApp, AppError> {
    let public = match public {
        Some(listener) => listener,
        None => TcpListener::bind(config.server.listen)
            .await
            .map_err(|source| AppError::Bind {
                address: config.server.listen,
                source,
            })?,
    };
    let admin = match (admin, config.server.admin_listen) {
        (Some(listener), _) => Some(listener),
        (None, Some(address)) => Some(
            TcpListener::bind(address)
                .await
                .map_err(|source| AppError::Bind { address, source })?,
        ),
        (None, None) => None,
    };
    // The random generator's first use in a process seeds it (about 46 ms here): done now, so
    // the first login does not wait for it.
    let _ = crate::random::bytes::<1>();
    let state = AppState::build(config, clock)?;
    let listeners = 2 + usize::from(
        state
            .config
            .forward_auth
            .as_ref()
            .and_then(|section| section.grpc_listen)
            .is_some(),
    );
    let places = open_files::raise(listeners, state.config.server.max_connections);
    // Each of the public listener's places may hold one upstream connection.
    state.upstream_budget().set_most(places);
    // A `jwks_file` is read now, as a reload reads it, so a file with no usable key stops the
    // start instead of refusing every token later.
    for provider_config in &state.config.providers {
        if let Some(provider) = state.providers.get(&provider_config.name) {
            provider
                .load_key_file()
                .await
                .map_err(|source| AppError::KeyFile {
                    provider: provider_config.name.clone(),
                    source,
                })?;
        }
    }
    let live: Live = Arc::new(ArcSwap::new(state.clone()));
    let (shutdown, receiver) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let public_addr = public.local_addr()?;
    let signal = wait_for(receiver.clone());
    let workers = Arc::new(crate::http::serve::Workers::per_cpu().map_err(AppError::Workers)?);
    let (tls, acceptor) = crate::tls::server::for_listener(state.config.server.tls.as_ref())
        .map_err(AppError::Tls)?;
    tasks.spawn(crate::http::serve::serve_on_workers(
        public,
        {
            let live = live.clone();
            move |peer| for_connection(live.clone(), peer)
        },
        signal,
        workers.clone(),
        acceptor,
        places,
    ));
    let admin_addr = match admin {
        Some(listener) => {
            let address = listener.local_addr()?;
            // Served like the public listener: a connection that sends its request head
            // slowly, or nothing, is closed, and at most `max_connections` are open, so no
            // client of this port can take every file descriptor the process has.
            let admin_live = live.clone();
            tasks.spawn(crate::http::serve::serve_on_workers(
                listener,
                move |peer| admin_connection(admin_live.clone(), peer),
                wait_for(receiver.clone()),
                workers.clone(),
                None,
                places,
            ));
            Some(address)
        }
        None => None,
    };
    let grpc_listen = state
        .config
        .forward_auth
        .as_ref()
        .and_then(|section| section.grpc_listen);
    let grpc_addr = match grpc_listen {
        Some(address) => {
            let listener = TcpListener::bind(address)
                .await
                .map_err(|source| AppError::Bind { address, source })?;
            let bound = listener.local_addr()?;
            let live = live.clone();
            // Served like the public listener: the same workers, connection timeouts and limit.
            tasks.spawn(crate::http::serve::serve_on_workers(
                listener,
                move |peer| {
                    let forward_auth = live.clone();
                    let timeouts = connection_timeouts(&live);
                    let service = crate::forward_auth::envoy::grpc::service(
                        Arc::new(move || forward_auth.load().explain.forward_auth.clone()),
                        peer,
                        timeouts.keepalive,
                    );
                    (service, timeouts)
                },
                wait_for(receiver),
                workers.clone(),
                None,
                places,
            ));
            Some(bound)
        }
        None => None,
    };
    let running = RunningApp {
        public_addr,
        admin_addr,
        grpc_addr,
        reloadables: tokio::sync::Mutex::new(
            tls.iter()
                .map(|certificate| reload::listener_certificate(certificate.clone()))
                .collect(),
        ),
        tls,
        live,
        memory_tasks: std::sync::Mutex::new(None),
        shutdown,
        tasks,
        _workers: workers,
    };
    running.follow_memory_store();
    discover(&state);
    warn_about_redis_settings(&state);
    state
        .metrics
        .config_live(&state.config.source_sha256, state.clock.now());
    tracing::info!(%public_addr, ?admin_addr, ?grpc_addr, sha256 = %state.config.source_sha256, "tollgate listening");
    Ok(running)
}

/// For one public connection from `peer`: the live config's connection timeouts, and a
/// service that answers each request with the state live when it arrived.
fn for_connection(
    live: Live,
    peer: SocketAddr,
) -> (
    impl ConnectionService,
    crate::http::serve::ConnectionTimeouts,
) {
    let timeouts = connection_timeouts(&live);
    let service = hyper::service::service_fn(move |request: axum::http::Request<_>| {
        // A body that stops coming is cut off (the handler reading it, or the upstream being
        // sent it, sees an error), else it held its request, its connection and a shutdown's
        // drain for ever: the watchdog times only connections with nothing in flight.
        // One that trickles is cut off too, unless it is a stream's (gRPC or Connect), which
        // sends a message when it has one: an exemption only the proxy grants, once it sends
        // the request on (Tollgate's own endpoints never do, whatever the content type says).
        let streaming = request
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .is_some_and(|kind| {
                let kind = kind.as_bytes();
                kind.starts_with(b"application/grpc") || kind.starts_with(b"application/connect+")
            });
        let mut exemption = None;
        let mut request = request.map(|body| {
            // A signed-in caller's stream, once exempt (below), keeps `keepalive_timeout` for
            // its first byte too: its client may wait for the server's first message.
            let guard = StallGuard::new(body, timeouts.keepalive, Stalled::Client)
                .first_byte_within(timeouts.header_read);
            if !streaming {
                return guard;
            }
            let (guard, granted) = guard.exemptible();
            exemption = Some(granted);
            guard
        });
        if let Some(exemption) = exemption {
            request.extensions_mut().insert(exemption);
        }
        // Boxed once here: every later move of the request's future (into the connection's
        // dispatcher and its wrappers) moves a pointer, not the future.
        Box::pin(live.load().public.serve(peer, request))
    });
    (service, timeouts)
}

/// The live config's connection timeouts.
fn connection_timeouts(live: &Live) -> crate::http::serve::ConnectionTimeouts {
    let state = live.load();
    crate::http::serve::ConnectionTimeouts {
        header_read: state.config.server.header_read_timeout,
        keepalive: state.config.server.keepalive_timeout,
    }
}

/// The admin listener's service for one connection from `peer`: each request goes to the live
/// state's admin routes.
fn admin_connection(
    live: Live,
    peer: SocketAddr,
) -> (
    impl ConnectionService,
    crate::http::serve::ConnectionTimeouts,
) {
    let timeouts = connection_timeouts(&live);
    let service = hyper::service::service_fn(move |request: axum::http::Request<_>| {
        let mut request = request.map(|body| {
            axum::body::Body::new(
                StallGuard::new(body, timeouts.keepalive, Stalled::Client)
                    .first_byte_within(timeouts.header_read),
            )
        });
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        let state = live.load_full();
        async move { state.admin_router.clone().oneshot(request).await }
    });
    (service, timeouts)
}

/// What a listener's connection answers each request with (`http::serve::serve_on_workers`).
trait ConnectionService:
    hyper::service::Service<
        axum::http::Request<hyper::body::Incoming>,
        Response = axum::response::Response,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + Send
    + 'static
{
}

impl<S> ConnectionService for S where
    S: hyper::service::Service<
            axum::http::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
            Future: Send + 'static,
        > + Send
        + 'static
{
}

/// Starts every provider's discovery in the background, so the first request finds it done.
///
/// Every provider's logins return to the one `/callback`, so a provider could answer a login
/// begun at another (a mix-up, RFC 9700 §4.4): the defence is the provider naming itself there
/// (RFC 9207 `iss`), or client authentication, without which a code it was handed is its to
/// redeem. A provider with neither, beside others, is warned about once its discovery is read.
fn discover(state: &AppState) {
    let several = state.providers.len() > 1;
    for provider in state.providers.values() {
        let provider = provider.clone();
        tokio::spawn(async move {
            if let Err(error) = provider.warm().await {
                tracing::warn!(provider = %provider.name(), %error, "discovery failed; will retry on use");
                return;
            }
            let public = provider.config.client_auth == crate::config::ClientAuth::None;
            if several
                && public
                && let Ok(metadata) = provider.metadata().await
                && !metadata.authorization_response_iss_parameter_supported
            {
                tracing::warn!(
                    provider = %provider.name(),
                    "the provider does not name itself at the callback (RFC 9207) and Tollgate \
                     logs in there without client authentication, beside other providers: one of \
                     them could have a login's code sent to it and redeem it (a mix-up, RFC 9700 \
                     §4.4); give Tollgate a client secret or key at this provider"
                );
            }
        });
    }
}

/// When sessions or the token service live in Redis: a warning when its eviction policy may
/// drop their keys, and one when a restart of Redis may bring back what was deleted (read
/// once, in the background).
pub(super) fn warn_about_redis_settings(state: &AppState) {
    let config = &state.config;
    let uses_redis = config.session.store == crate::config::SessionStoreKind::Redis
        || config
            .token_service
            .as_ref()
            .is_some_and(|service| service.store == crate::config::TokenStoreKind::Redis);
    if let (true, Some(target)) = (uses_redis, config.session.redis.clone()) {
        let ca = config.session.redis_ca.clone();
        tokio::spawn(async move {
            crate::redis_connection::warn_about_settings(&target, ca.as_deref()).await;
        });
    }
}

async fn wait_for(mut receiver: tokio::sync::watch::Receiver<bool>) {
    while !*receiver.borrow() {
        if receiver.changed().await.is_err() {
            return;
        }
    }
}
