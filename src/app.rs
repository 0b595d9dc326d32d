//! Builds every role from a `Config` and runs the listeners: the public one (forward-auth,
//! login, token service) and the admin one (metrics, health). Shutdown is a signal handed in.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use url::Url;

use crate::clock::Clock;
use crate::config::{Config, ForwardAuthConfig};
use crate::login::redirect::AllowedRedirectDomain;
use crate::metrics::Metrics;
use crate::oidc::{LocalIssuer, Provider};
use crate::policy::AuthQuery;
use crate::session::seal::Sealer;
use crate::session::{CookieAttributes, CookieJar};
use crate::token::cache::TokenCache;

/// Validated access tokens remembered per provider (each entry holds the token and its claims,
/// a few KB, so this bounds the cache near 50 MB per provider).
const TOKEN_CACHE_CAPACITY: usize = 10_000;

/// Everything a request handler may need, built once from the config.
pub struct AppState {
    /// The validated configuration.
    pub config: Config,
    /// Providers by name.
    pub providers: BTreeMap<String, Arc<Provider>>,
    /// Sessions and login-state cookies, when session secrets are configured.
    pub sessions: Option<Arc<crate::session::store::Sessions>>,
    /// Wall-clock time.
    pub clock: Arc<dyn Clock>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The token service, when configured.
    pub token_service: Option<Arc<crate::issuer::TokenService>>,
    /// Refreshes session tokens before they expire.
    pub refresher: crate::identity::refresh::Refresher,
    /// The reverse proxy's routes.
    pub routes: crate::proxy::routes::RouteTable,
    /// `public_url`, shared, when configured.
    public_base: Option<Arc<Url>>,
    /// Parsed external base URLs by `proto://host` (the proxy needs one per request).
    bases: quick_cache::sync::Cache<Box<str>, Arc<Url>>,
    /// Parsed `/auth` queries by their raw text (ingress controllers send the same few).
    pub auth_queries: quick_cache::sync::Cache<String, Arc<AuthQuery>>,
}

impl AppState {
    /// Builds providers, the token service and the cookie jar.
    ///
    /// # Errors
    /// When the token service's key cannot be loaded or the HTTP client cannot be built.
    pub fn build(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<Self>> {
        let metrics = Arc::new(Metrics::new());
        let token_service = match &config.token_service {
            Some(token_service_config) => Some(Arc::new(
                crate::issuer::TokenService::new(
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
        let leeway = i64::try_from(config.server.leeway.as_secs()).unwrap_or(60);
        let mut providers = BTreeMap::new();
        for provider_config in &config.providers {
            let local: Option<Arc<dyn LocalIssuer>> = match (&token_service, &config.token_service)
            {
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
        let sessions = if config.session.secrets.is_empty() {
            None
        } else {
            let jar = CookieJar::new(
                Sealer::new(&config.session.secrets),
                config.session.cookie_name.clone(),
            );
            let backend = session_backend(&config, clock.now(), &metrics)?;
            Some(Arc::new(crate::session::store::Sessions::new(
                jar,
                backend,
                config.session.idle_timeout,
                metrics.clone(),
            )))
        };
        let routes = crate::proxy::routes::RouteTable::new(config.routes.clone());
        let refresher = crate::identity::refresh::Refresher::new(
            config.session.refresh,
            config.session.refresh_before,
            metrics.clone(),
        );
        Ok(Arc::new(Self {
            public_base: config.server.public_url.clone().map(Arc::new),
            bases: quick_cache::sync::Cache::new(1024),
            refresher,
            routes,
            config,
            providers,
            sessions,
            clock,
            metrics,
            token_service,
            auth_queries: quick_cache::sync::Cache::new(1024),
        }))
    }

    /// The external base URL of a request (see `http::forwarded::base_parts`), parsed once per
    /// distinct host.
    pub fn request_base(
        &self,
        peer: std::net::IpAddr,
        headers: &axum::http::HeaderMap,
    ) -> Option<Arc<Url>> {
        if let Some(url) = &self.public_base {
            return Some(url.clone());
        }
        let (proto, host) =
            crate::http::forwarded::base_parts(peer, headers, &self.config.server.trusted_proxies)?;
        thread_local! {
            // The lookup key is built here, not allocated per request.
            static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        KEY.with(|key| {
            let mut key = key.borrow_mut();
            key.clear();
            key.push_str(proto);
            key.push_str("://");
            key.push_str(host);
            key.push('/');
            if let Some(url) = self.bases.get(key.as_str()) {
                return Some(url);
            }
            let url = Arc::new(Url::parse(&key).ok()?);
            self.bases.insert(key.as_str().into(), url.clone());
            Some(url)
        })
    }

    /// How a request reads its session: `None` without session secrets.
    pub fn session_access(
        &self,
        attributes: CookieAttributes,
    ) -> Option<crate::identity::SessionAccess<'_>> {
        Some(crate::identity::SessionAccess {
            sessions: self.sessions.as_ref()?,
            refresher: &self.refresher,
            attributes,
        })
    }

    /// The forward-auth section and its provider, when forward-auth is enabled.
    pub fn forward_auth(&self) -> Option<(&ForwardAuthConfig, &Arc<Provider>)> {
        let section = self.config.forward_auth.as_ref()?;
        Some((section, self.providers.get(&section.provider)?))
    }

    /// Cookie attributes for a request served at `base`: `Secure` unless plain http on loopback.
    pub fn cookie_attributes(&self, base: &Url) -> CookieAttributes {
        let loopback = match base.host() {
            Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(address)) => address.is_loopback(),
            Some(url::Host::Ipv6(address)) => address.is_loopback(),
            None => false,
        };
        CookieAttributes {
            secure: !(base.scheme() == "http" && loopback),
        }
    }

    /// Where redirects may go for a request served at `base`: the configured domains,
    /// `public_url`'s host, and the host the request itself was served at.
    pub fn allowed_redirects(&self, base: &Url) -> Vec<AllowedRedirectDomain> {
        let mut allowed = self.config.server.allowed_redirect_domains.clone();
        allowed.extend(
            self.config
                .server
                .public_url
                .as_ref()
                .and_then(AllowedRedirectDomain::exact_for),
        );
        allowed.extend(AllowedRedirectDomain::exact_for(base));
        allowed
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
    if let Some(service) = &state.token_service {
        service.attach(&state);
    }
    let (shutdown, receiver) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let public_addr = public.local_addr()?;
    let signal = wait_for(receiver.clone());
    let workers = Arc::new(crate::http::serve::Workers::per_cpu().context("starting workers")?);
    let service = crate::public::PublicService::new(&state);
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
                crate::admin::router(&state),
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
