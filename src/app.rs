//! Builds every role from a `Config` and runs the listeners: the public one (forward-auth,
//! login, token service) and the admin one (metrics, health). Shutdown is a signal handed in.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::admin::{AdminState, ExplainState};
use crate::clock::Clock;
use crate::config::Config;
use crate::forward_auth::{AuthQueries, ForwardAuthState};
use crate::http::forwarded::RequestBases;
use crate::http::rejection::Rejection;
use crate::identity::SessionSource;
use crate::issuer::{FederatedLogin, FederatedLoginFuture, TokenService};
use crate::login::LoginFlow;
use crate::metrics::Metrics;
use crate::oidc::{LocalIssuer, Provider, Providers};
use crate::proxy::ProxyState;
use crate::public::{PublicParts, PublicService};
use crate::session::FederatedRequest;
use crate::session::seal::Sealer;
use crate::session::store::Sessions;
use crate::telemetry::Telemetry;
use crate::token::cache::TokenCache;

/// Validated access tokens remembered per provider (each entry holds the token and its claims,
/// a few KB, so this bounds the cache near 50 MB per provider).
const TOKEN_CACHE_CAPACITY: usize = 10_000;

/// Everything built once from the config. Surfaces never see this whole: each gets its own
/// sub-state (`ForwardAuthState`, `LoginFlow`, `ProxyState`, `AdminState`, `ExplainState`,
/// the token service), and this keeps what the running app itself needs.
pub struct AppState {
    /// The validated configuration.
    pub config: Config,
    /// Providers by name.
    pub providers: Arc<Providers>,
    /// Sessions and login-state cookies, when session secrets are configured.
    pub sessions: Option<Arc<Sessions>>,
    /// Wall-clock time.
    pub clock: Arc<dyn Clock>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The public listener's service.
    pub public: PublicService,
    /// The admin endpoints' state.
    pub admin: Arc<AdminState>,
    /// `POST /admin/explain`'s state.
    pub explain: Arc<ExplainState>,
    /// The tracer, when `[telemetry]` is configured.
    pub telemetry: Option<Arc<Telemetry>>,
}

impl AppState {
    /// Builds providers, the token service, the session store and every surface's sub-state.
    ///
    /// # Errors
    /// When the token service's key cannot be loaded or the HTTP client cannot be built.
    pub fn build(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<Self>> {
        let metrics = Arc::new(Metrics::new());
        let token_service = match &config.token_service {
            Some(token_service_config) => Some(Arc::new(
                TokenService::new(
                    token_service_config.clone(),
                    issuer_state(&config, token_service_config)?,
                    config.server.trusted_proxies.clone(),
                    clock.clone(),
                    metrics.clone(),
                )
                .context("loading the token service's signing key")?,
            )),
            None => None,
        };
        let providers = Arc::new(providers(
            &config,
            token_service.as_ref(),
            &clock,
            &metrics,
        )?);
        let sessions = if config.session.secrets.is_empty() {
            None
        } else {
            let jar = crate::session::CookieJar::new(
                Sealer::new(&config.session.secrets),
                config.session.cookie_name.clone(),
            );
            let backend = session_backend(&config, clock.now(), &metrics)?;
            Some(Arc::new(Sessions::new(
                jar,
                backend,
                config.session.idle_timeout,
                metrics.clone(),
            )))
        };
        let telemetry = match &config.telemetry {
            Some(section) => Some(Arc::new(
                Telemetry::start(section).context("starting telemetry")?,
            )),
            None => None,
        };
        let (public, admin, explain) = surfaces(
            &config,
            &providers,
            sessions.as_ref(),
            token_service,
            &clock,
            &metrics,
            telemetry.as_ref(),
        );
        Ok(Arc::new(Self {
            config,
            providers,
            sessions,
            clock,
            metrics,
            public,
            admin,
            explain,
            telemetry,
        }))
    }
}

/// Every surface's sub-state, from the stores and providers built once: the public
/// listener's service, the admin endpoints' state and `POST /admin/explain`'s.
fn surfaces(
    config: &Config,
    providers: &Arc<Providers>,
    sessions: Option<&Arc<Sessions>>,
    token_service: Option<Arc<TokenService>>,
    clock: &Arc<dyn Clock>,
    metrics: &Arc<Metrics>,
    telemetry: Option<&Arc<Telemetry>>,
) -> (PublicService, Arc<AdminState>, Arc<ExplainState>) {
    let session_source = SessionSource {
        sessions: sessions.cloned(),
        refresher: crate::identity::refresh::Refresher::new(
            config.session.refresh,
            config.session.refresh_before,
            metrics.clone(),
        ),
    };
    let server = &config.server;
    let forward_auth_section = config
        .forward_auth
        .as_ref()
        .and_then(|section| Some((section.clone(), providers.get(&section.provider)?.clone())));
    let bases = Arc::new(RequestBases::new(
        server.public_url.clone(),
        server.trusted_proxies.clone(),
    ));
    let login = Arc::new(LoginFlow {
        providers: providers.clone(),
        signin_provider: forward_auth_section
            .as_ref()
            .map(|(_, provider)| provider.clone()),
        sessions: sessions.cloned(),
        public_url: server.public_url.clone(),
        bases: bases.clone(),
        allowed_redirect_domains: server.allowed_redirect_domains.clone(),
        route_hosts: config
            .routes
            .iter()
            .filter_map(|route| route.host.clone())
            .collect(),
        session_lifetime: config.session.lifetime,
        federation: token_service
            .clone()
            .map(|service| service as Arc<dyn crate::login::federation::FederatedAuthorization>),
        clock: clock.clone(),
        metrics: metrics.clone(),
    });
    let forward_auth = Arc::new(ForwardAuthState {
        forward_auth: forward_auth_section,
        sessions: session_source.clone(),
        token_service: token_service.clone(),
        trusted_proxies: server.trusted_proxies.clone(),
        public_url: server.public_url.clone(),
        clock: clock.clone(),
        metrics: metrics.clone(),
        queries: AuthQueries::default(),
        telemetry: telemetry.cloned(),
    });
    let proxy = Arc::new(ProxyState {
        routes: crate::proxy::routes::RouteTable::new(config.routes.clone()),
        providers: providers.clone(),
        sessions: session_source,
        login: login.clone(),
        bases,
        trusted_proxies: server.trusted_proxies.clone(),
        cookie_name: config.session.cookie_name.clone(),
        clock: clock.clone(),
        metrics: metrics.clone(),
        telemetry: telemetry.cloned(),
    });
    let federation: Arc<dyn FederatedLogin> = Arc::new(Federation {
        login: login.clone(),
    });
    let public = PublicService::new(PublicParts {
        forward_auth: forward_auth.clone(),
        login,
        proxy: proxy.clone(),
        token_service: token_service.clone(),
        federation: Some(federation),
        cookie_name: config.session.cookie_name.clone(),
    });
    let admin = Arc::new(AdminState {
        admin_token: server.admin_token.clone(),
        metrics: metrics.clone(),
        providers: providers.clone(),
        sessions: sessions.cloned(),
        token_service,
    });
    let explain = Arc::new(ExplainState {
        admin_token: server.admin_token.clone(),
        forward_auth,
        proxy,
        public: public.clone(),
        public_url: server.public_url.clone(),
    });
    (public, admin, explain)
}

/// The configured providers; one that is the token service is served by it in-process.
fn providers(
    config: &Config,
    token_service: Option<&Arc<TokenService>>,
    clock: &Arc<dyn Clock>,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Providers> {
    let leeway = i64::try_from(config.server.leeway.as_secs()).unwrap_or(60);
    let mut providers = Providers::new();
    for provider_config in &config.providers {
        let local: Option<Arc<dyn LocalIssuer>> = match (token_service, &config.token_service) {
            (Some(service), Some(service_config))
                if crate::config::is_same_issuer(
                    &provider_config.issuer,
                    &service_config.issuer,
                ) =>
            {
                Some(service.clone())
            }
            _ => None,
        };
        let labels = crate::metrics::ProviderLabels {
            provider: provider_config.name.clone(),
        };
        let _ = metrics.signins.get_or_create(&labels);
        let _ = metrics.code_exchange_errors.get_or_create(&labels);
        let http = crate::oidc::client::http_client(provider_config.timeout)
            .context("building the HTTP client")?;
        let provider = Provider::new(
            provider_config.clone(),
            http,
            local,
            Arc::new(TokenCache::new(TOKEN_CACHE_CAPACITY)),
            clock.clone(),
            leeway,
            metrics.clone(),
        );
        providers.insert(provider_config.name.clone(), Arc::new(provider));
    }
    Ok(providers)
}

/// How the token service's `/authorize` starts a federated login: through the login flow, at
/// the provider of that name, for the request's external base URL.
struct Federation {
    login: Arc<LoginFlow>,
}

impl FederatedLogin for Federation {
    fn start<'a>(
        &'a self,
        provider: &'a str,
        request: FederatedRequest,
        peer: SocketAddr,
        headers: &'a axum::http::HeaderMap,
    ) -> FederatedLoginFuture<'a> {
        Box::pin(async move {
            let provider = self.login.providers.get(provider).ok_or_else(|| {
                (
                    Rejection::Internal,
                    format!("login_provider `{provider}` is not configured"),
                )
            })?;
            let base = self.login.bases.base(peer.ip(), headers).ok_or_else(|| {
                (
                    Rejection::BadRequest("missing or invalid Host header".to_owned()),
                    "no base URL".to_owned(),
                )
            })?;
            crate::login::begin_login_for(
                &self.login,
                provider,
                &base,
                headers,
                "/".to_owned(),
                "token_service",
                Some(request),
            )
            .await
        })
    }
}

/// The session store the config asks for.
fn session_backend(
    config: &Config,
    now: crate::clock::UnixTime,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<crate::session::store::SessionBackend> {
    use crate::config::SessionStoreKind;
    use crate::session::store::SessionBackend;
    Ok(match config.session.store {
        SessionStoreKind::Cookie => SessionBackend::Cookie,
        SessionStoreKind::Memory => SessionBackend::Memory(Arc::new(
            crate::session::memory_store::MemoryStore::open(config.session.state_file.clone(), now),
        )),
        SessionStoreKind::Redis => {
            let target = config
                .session
                .redis
                .as_ref()
                .context("session.redis_url is required with store = \"redis\"")?;
            let store = crate::session::redis_store::RedisStore::new(
                target,
                config.session.redis_ca.as_deref(),
                &config.session.redis_key_prefix,
                Sealer::new(&config.session.secrets),
                metrics.clone(),
            )
            .map_err(|message| anyhow::anyhow!("session.redis_url: {message}"))?;
            SessionBackend::Redis(Arc::new(store))
        }
    })
}

/// Where the token service keeps its state (`token_service.store`).
fn issuer_state(
    config: &Config,
    service: &crate::config::TokenServiceConfig,
) -> anyhow::Result<Arc<dyn crate::issuer::state::IssuerState>> {
    use crate::config::TokenStoreKind;
    use crate::issuer::state::{memory::MemoryState, redis::RedisState};
    Ok(match service.store {
        TokenStoreKind::Memory => Arc::new(MemoryState::default()),
        TokenStoreKind::Redis => {
            let target =
                config.session.redis.as_ref().context(
                    "session.redis_url is required with token_service.store = \"redis\"",
                )?;
            let connection = crate::redis_connection::RedisConnection::new(
                target,
                config.session.redis_ca.as_deref(),
                None,
            )
            .map_err(|message| anyhow::anyhow!("session.redis_url: {message}"))?;
            let lifetime = i64::try_from(service.token_lifetime.as_secs()).unwrap_or(i64::MAX);
            Arc::new(RedisState::new(
                Arc::new(connection),
                &config.session.redis_key_prefix,
                crate::issuer::grant_life(lifetime),
            ))
        }
    })
}

/// A running Tollgate: its bound addresses and a way to stop it.
pub struct RunningApp {
    /// The public listener's address.
    pub public_addr: SocketAddr,
    /// The admin listener's address.
    pub admin_addr: Option<SocketAddr>,
    /// The shared state (tests read metrics from it).
    pub state: Arc<AppState>,
    shutdown: tokio::sync::watch::Sender<bool>,
    tasks: tokio::task::JoinSet<std::io::Result<()>>,
    /// The threads serving the public listener's connections; they end when this is dropped.
    _workers: Arc<crate::http::serve::Workers>,
}

impl RunningApp {
    /// Stops accepting, drains in-flight requests, and waits for the listeners to finish.
    ///
    /// # Errors
    /// When a listener failed.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        let _ = self.shutdown.send(true);
        while let Some(result) = self.tasks.join_next().await {
            result.map_err(std::io::Error::other)??;
        }
        if let Some(store) = self
            .state
            .sessions
            .as_ref()
            .and_then(|sessions| sessions.memory())
        {
            store.flush().map_err(std::io::Error::other)?;
        }
        // The spans of the requests just drained go out before the process ends.
        if let Some(telemetry) = self.state.telemetry.clone() {
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
) -> anyhow::Result<RunningApp> {
    let public = match public {
        Some(listener) => listener,
        None => TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("binding {}", config.server.listen))?,
    };
    let admin = match (admin, config.server.admin_listen) {
        (Some(listener), _) => Some(listener),
        (None, Some(address)) => Some(
            TcpListener::bind(address)
                .await
                .with_context(|| format!("binding {address}"))?,
        ),
        (None, None) => None,
    };
    let state = AppState::build(config, clock)?;
    let (shutdown, receiver) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let public_addr = public.local_addr()?;
    let signal = wait_for(receiver.clone());
    let workers = Arc::new(crate::http::serve::Workers::per_cpu().context("starting workers")?);
    let service = state.public.clone();
    tasks.spawn(crate::http::serve::serve_on_workers(
        public,
        move |peer| service.clone().for_connection(peer),
        signal,
        workers.clone(),
        crate::http::serve::ConnectionTimeouts {
            header_read: state.config.server.header_read_timeout,
            keepalive: state.config.server.keepalive_timeout,
        },
    ));
    let admin_addr = match admin {
        Some(listener) => {
            let address = listener.local_addr()?;
            tasks.spawn(crate::http::serve::serve(
                listener,
                crate::admin::router(state.admin.clone(), state.explain.clone()),
                wait_for(receiver),
            ));
            Some(address)
        }
        None => None,
    };
    if let Some(store) = state
        .sessions
        .as_ref()
        .and_then(|sessions| sessions.memory())
        .cloned()
    {
        let writer = store.clone();
        tokio::spawn(async move { writer.write_behind().await });
        let clock = state.clock.clone();
        let idle = i64::try_from(state.config.session.idle_timeout.as_secs()).unwrap_or(i64::MAX);
        let metrics = state.metrics.clone();
        tokio::spawn(async move {
            let mut every_minute = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                every_minute.tick().await;
                let now = clock.now();
                let purged = store.remove_where(|_, facts, last_seen| {
                    now >= facts.expires_at || now - last_seen > idle
                });
                metrics.sessions_ended.inc_by(purged as u64);
            }
        });
    }
    for provider in state.providers.values() {
        let provider = provider.clone();
        tokio::spawn(async move {
            if let Err(error) = provider.metadata().await {
                tracing::warn!(provider = %provider.name(), %error, "discovery failed; will retry on use");
            }
        });
    }
    tracing::info!(%public_addr, ?admin_addr, "tollgate listening");
    Ok(RunningApp {
        public_addr,
        admin_addr,
        state,
        shutdown,
        tasks,
        _workers: workers,
    })
}

async fn wait_for(mut receiver: tokio::sync::watch::Receiver<bool>) {
    while !*receiver.borrow() {
        if receiver.changed().await.is_err() {
            return;
        }
    }
}
