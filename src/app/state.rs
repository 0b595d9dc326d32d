//! `AppState`: everything one config builds — providers, stores, the token service and every
//! surface's sub-state — and how a reload builds the next one from it, keeping what holds state
//! (the memory session store, the token service's memory state and generated key, metrics).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;

use super::AppError;
use crate::admin::{AdminState, ExplainState};
use crate::clock::Clock;
use crate::config::Config;
use crate::forward_auth::{AuthQueries, ForwardAuthState};
use crate::http::forwarded::RequestBases;
use crate::http::rejection::Rejection;
use crate::identity::SessionSource;
use crate::issuer::state::IssuerState;
use crate::issuer::{FederatedLogin, FederatedLoginFuture, TokenService};
use crate::login::LoginFlow;
use crate::metrics::Metrics;
use crate::oidc::{LocalIssuer, Provider, Providers};
use crate::proxy::ProxyState;
use crate::public::{PublicParts, PublicService};
use crate::session::FederatedRequest;
use crate::session::seal::Sealer;
use crate::session::store::Sessions;
use crate::telemetry::{DroppedSpans, Telemetry};
use crate::token::cache::TokenCache;

/// Validated access tokens remembered per provider (each entry holds the token and its claims,
/// a few KB, so this bounds the cache near 50 MB per provider).
const TOKEN_CACHE_CAPACITY: usize = 10_000;

/// Everything one config builds. Surfaces never see this whole: each gets its own sub-state
/// (`ForwardAuthState`, `LoginFlow`, `ProxyState`, `AdminState`, `ExplainState`, the token
/// service), and this keeps what the running app itself needs. A reload builds the next one
/// with [`AppState::rebuild`]; requests in flight finish on the one they started with.
pub struct AppState {
    /// The validated configuration.
    pub config: Config,
    /// Providers by name.
    pub providers: Arc<Providers>,
    /// Sessions and login-state cookies, when session secrets are configured.
    pub sessions: Option<Arc<Sessions>>,
    /// Wall-clock time.
    pub clock: Arc<dyn Clock>,
    /// Metrics: one registry for the life of the process.
    pub metrics: Arc<Metrics>,
    /// The public listener's service.
    pub public: PublicService,
    /// The admin endpoints' state.
    pub admin: Arc<AdminState>,
    /// `POST /admin/explain`'s state.
    pub explain: Arc<ExplainState>,
    /// The admin listener's routes over `admin` and `explain`.
    pub admin_router: Router,
    /// The token service, for the next build to keep its generated key.
    token_service: Option<Arc<TokenService>>,
    /// The token service's store, for the next build to keep when it is in memory.
    issuer_state: Option<Arc<dyn IssuerState>>,
    /// The tracer, when `[telemetry]` is configured.
    pub telemetry: Option<Arc<Telemetry>>,
    /// The refresher every surface shares; a reload's build shares its refreshes in flight.
    refresher: crate::identity::refresh::Refresher,
    /// What is the process's rather than the config's, taken over by a reload's build.
    carried: Carried,
}

impl AppState {
    /// Builds providers, the token service, the session store and every surface's sub-state.
    ///
    /// # Errors
    /// When the token service's key cannot be loaded or the HTTP client cannot be built.
    pub fn build(config: Config, clock: Arc<dyn Clock>) -> Result<Arc<Self>, AppError> {
        Self::build_after(config, clock, Arc::new(Metrics::new()), None)
    }

    /// The state for a reloaded `config`, keeping from `self` what holds state whose config
    /// did not change: the memory session store (same `state_file`), the used logout tokens,
    /// the token service's memory store and the key it made in memory (no
    /// `signing_key_file`), the span exporter (same `[telemetry]`), the clock and the metrics.
    /// Everything else is built anew, which re-reads every file `config` names.
    ///
    /// # Errors
    /// As [`AppState::build`].
    pub fn rebuild(&self, config: Config) -> Result<Arc<Self>, AppError> {
        Self::build_after(config, self.clock.clone(), self.metrics.clone(), Some(self))
    }

    fn build_after(
        config: Config,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        previous: Option<&Self>,
    ) -> Result<Arc<Self>, AppError> {
        let issuer_state = match &config.token_service {
            Some(service) => Some(issuer_state(&config, service, previous)?),
            None => None,
        };
        let token_service = match (&config.token_service, &issuer_state) {
            (Some(token_service_config), Some(state)) => Some(Arc::new(
                TokenService::rebuilt(
                    token_service_config.clone(),
                    state.clone(),
                    &config.server,
                    clock.clone(),
                    metrics.clone(),
                    previous.and_then(|previous| previous.token_service.as_deref()),
                )
                .map_err(AppError::SigningKey)?
                .with_route_hosts(
                    config
                        .routes
                        .iter()
                        .filter_map(|route| route.host.as_deref()),
                )
                .with_providers(&config.providers),
            )),
            _ => None,
        };
        let providers = Arc::new(providers(
            &config,
            token_service.as_ref(),
            &clock,
            &metrics,
            previous.map(|previous| previous.providers.as_ref()),
        )?);
        let sessions = if config.session.secrets.is_empty() {
            None
        } else {
            let jar = crate::session::CookieJar::new(
                Sealer::new(&config.session.secrets),
                config.session.cookie_name.clone(),
            )
            .with_lifetime(config.session.lifetime);
            let backend = session_backend(&config, clock.now(), &metrics, previous)?;
            let sessions =
                Sessions::new(jar, backend, config.session.idle_timeout, metrics.clone());
            Some(Arc::new(sessions))
        };
        // An unchanged `[telemetry]` keeps its exporter, and the spans it holds.
        let kept = previous
            .filter(|previous| previous.config.telemetry == config.telemetry)
            .and_then(|previous| previous.telemetry.clone());
        let telemetry = match (kept, &config.telemetry) {
            (Some(kept), _) => Some(kept),
            (None, Some(section)) => Some(Arc::new(
                Telemetry::start(
                    section,
                    DroppedSpans {
                        queue_full: metrics.spans_dropped("queue_full"),
                        export_failed: metrics.spans_dropped("export_failed"),
                    },
                )
                .map_err(AppError::Telemetry)?,
            )),
            (None, None) => None,
        };
        let refresher = match previous {
            Some(previous) => previous.refresher.reconfigured(
                config.session.refresh,
                config.session.refresh_before,
                metrics.clone(),
            ),
            None => crate::identity::refresh::Refresher::new(
                config.session.refresh,
                config.session.refresh_before,
                metrics.clone(),
            ),
        };
        let carried = previous.map_or_else(
            || Carried {
                upstream_budget: Arc::default(),
                exchanges: Arc::new(crate::login::exchanges::Exchanges::new(clock.clone())),
                revocations: Arc::default(),
            },
            |previous| previous.carried.clone(),
        );
        let (public, admin, explain) = surfaces(
            &config,
            &providers,
            SessionSource {
                sessions: sessions.clone(),
                refresher: refresher.clone(),
            },
            token_service.clone(),
            &clock,
            &metrics,
            telemetry.as_ref(),
            &carried,
        );
        let admin_router = crate::admin::router(admin.clone(), explain.clone());
        Ok(Arc::new(Self {
            config,
            providers,
            sessions,
            clock,
            metrics,
            public,
            admin,
            explain,
            admin_router,
            token_service,
            issuer_state,
            telemetry,
            refresher,
            carried,
        }))
    }

    /// The upstream connections requests may hold at once, the same through reloads.
    pub fn upstream_budget(&self) -> &crate::proxy::budget::UpstreamBudget {
        &self.carried.upstream_budget
    }

    /// The memory session store, when that is the backend.
    pub fn memory_store(&self) -> Option<&Arc<crate::session::memory_store::MemoryStore>> {
        self.sessions
            .as_ref()
            .and_then(|sessions| sessions.memory())
    }
}

/// What every build after a reload takes over from the one before it: the process's, not the
/// config's. A reload must not start them anew: a kept login state cookie would be exchanged
/// once more and each address's refused exchanges counted from zero, a replayed cookie-store
/// sign-out would revoke once more, and the upstream connections held would be counted twice.
#[derive(Clone)]
struct Carried {
    /// The upstream connections requests may hold at once (`app::start` sets its most).
    upstream_budget: Arc<crate::proxy::budget::UpstreamBudget>,
    /// The login states exchanged, and the refused exchanges by address.
    exchanges: Arc<crate::login::exchanges::Exchanges>,
    /// The refresh tokens a sign-out asked the provider to revoke.
    revocations: Arc<crate::login::revocation::Revocations>,
}

/// Every surface's sub-state, from the stores and providers built once: the public
/// listener's service, the admin endpoints' state and `POST /admin/explain`'s.
#[allow(clippy::too_many_arguments)]
fn surfaces(
    config: &Config,
    providers: &Arc<Providers>,
    session_source: SessionSource,
    token_service: Option<Arc<TokenService>>,
    clock: &Arc<dyn Clock>,
    metrics: &Arc<Metrics>,
    telemetry: Option<&Arc<Telemetry>>,
    carried: &Carried,
) -> (PublicService, Arc<AdminState>, Arc<ExplainState>) {
    let sessions = session_source.sessions.clone();
    let sessions = sessions.as_ref();
    let server = &config.server;
    let forward_auth_section = config
        .forward_auth
        .as_ref()
        .and_then(|section| Some((section.clone(), providers.get(&section.provider)?.clone())));
    let bases = Arc::new(
        RequestBases::new(server.public_url.clone(), server.trusted_proxies.clone())
            .over_tls(server.tls.is_some())
            .with_route_hosts(
                config
                    .routes
                    .iter()
                    .filter_map(|route| route.host.as_deref()),
            ),
    );
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
        exchanges: carried.exchanges.clone(),
        revocations: carried.revocations.clone(),
        clock: clock.clone(),
        metrics: metrics.clone(),
    });
    let forward_auth = Arc::new(ForwardAuthState {
        forward_auth: forward_auth_section,
        sessions: session_source.clone(),
        token_service: token_service.clone(),
        trusted_proxies: server.trusted_proxies.clone(),
        public_url: server.public_url.clone(),
        own_proto: if server.tls.is_some() {
            "https"
        } else {
            "http"
        },
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
        leeway: leeway(config),
        metrics: metrics.clone(),
        successor: Arc::default(),
        upstream_budget: carried.upstream_budget.clone(),
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
        telemetry: telemetry.cloned(),
        over_tls: server.tls.is_some(),
    });
    let admin = Arc::new(AdminState {
        admin_token: server.admin_token.clone(),
        metrics: metrics.clone(),
        providers: providers.clone(),
        sessions: sessions.cloned(),
        token_service,
        clock: clock.clone(),
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

/// `server.leeway` in seconds, as tokens are checked with it.
fn leeway(config: &Config) -> i64 {
    i64::try_from(config.server.leeway.as_secs()).unwrap_or(60)
}

/// The configured providers; one that is the token service is served by it in-process.
fn providers(
    config: &Config,
    token_service: Option<&Arc<TokenService>>,
    clock: &Arc<dyn Clock>,
    metrics: &Arc<Metrics>,
    previous: Option<&Providers>,
) -> Result<Providers, AppError> {
    let leeway = leeway(config);
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
        let http = crate::oidc::client::HttpClient::new(provider_config.timeout)
            .map_err(AppError::HttpClient)?;
        let provider = Provider::new(
            provider_config.clone(),
            http,
            local,
            Arc::new(TokenCache::new(TOKEN_CACHE_CAPACITY)),
            clock.clone(),
            leeway,
            metrics.clone(),
        );
        let provider = match previous.and_then(|previous| previous.get(&provider_config.name)) {
            Some(previous) => provider.keeping_what_was_fetched_by(previous),
            None => provider,
        };
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
            let response = crate::login::begin_login_for(
                &self.login,
                provider,
                &base,
                headers,
                "/".to_owned(),
                Some(request),
            )
            .await?;
            self.login
                .metrics
                .request("token_service", "login_redirect");
            Ok(response)
        })
    }
}

/// The session store the config asks for: the previous build's memory store when it is
/// memory again with the same `state_file`.
fn session_backend(
    config: &Config,
    now: crate::clock::UnixTime,
    metrics: &Arc<Metrics>,
    previous: Option<&AppState>,
) -> Result<crate::session::store::SessionBackend, AppError> {
    use crate::config::SessionStoreKind;
    use crate::session::store::SessionBackend;
    Ok(match config.session.store {
        SessionStoreKind::Cookie => SessionBackend::Cookie,
        SessionStoreKind::Memory => {
            let before = previous.and_then(AppState::memory_store);
            let kept = before.filter(|_| {
                previous.is_some_and(|previous| {
                    previous.config.session.state_file == config.session.state_file
                })
            });
            SessionBackend::Memory(match kept {
                Some(store) => store.clone(),
                None => {
                    let store = crate::session::memory_store::MemoryStore::open(
                        config.session.state_file.clone(),
                        Sealer::new(&config.session.secrets),
                        now,
                    );
                    // Another state file: a logout token used before stays refused.
                    if let Some(before) = before {
                        store.remember_logout_tokens_of(before);
                    }
                    Arc::new(store)
                }
            })
        }
        SessionStoreKind::Redis => {
            let target = config
                .session
                .redis
                .as_ref()
                .ok_or(AppError::SessionRedisMissing)?;
            let store = crate::session::redis_store::RedisStore::new(
                target,
                config.session.redis_ca.as_deref(),
                &config.session.redis_key_prefix,
                Sealer::new(&config.session.secrets),
                metrics.clone(),
            )
            .map_err(AppError::Redis)?;
            SessionBackend::Redis(Arc::new(store))
        }
    })
}

/// Where the token service keeps its state (`token_service.store`): in memory, the previous
/// build's memory store when there is one.
fn issuer_state(
    config: &Config,
    service: &crate::config::TokenServiceConfig,
    previous: Option<&AppState>,
) -> Result<Arc<dyn IssuerState>, AppError> {
    use crate::config::TokenStoreKind;
    use crate::issuer::state::{memory::MemoryState, redis::RedisState};
    Ok(match service.store {
        TokenStoreKind::Memory => {
            let kept = previous.and_then(|previous| {
                let kind = previous.config.token_service.as_ref()?.store;
                previous
                    .issuer_state
                    .clone()
                    .filter(|_| kind == TokenStoreKind::Memory)
            });
            kept.unwrap_or_else(|| Arc::new(MemoryState::default()))
        }
        TokenStoreKind::Redis => {
            let target = config
                .session
                .redis
                .as_ref()
                .ok_or(AppError::TokenStoreRedisMissing)?;
            let connection = crate::redis_connection::RedisConnection::new(
                target,
                config.session.redis_ca.as_deref(),
                None,
            )
            .map_err(AppError::Redis)?;
            let seconds = |duration: std::time::Duration| {
                i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
            };
            let grant_life = crate::issuer::grant_life(seconds(service.token_lifetime));
            // A grant opened at a sign-in may be refreshed for `session.lifetime`, then lives
            // `grant_life` past its last refresh: its holder's index must outlive it.
            let holder_life = seconds(service.grant_lifetime).saturating_add(grant_life);
            Arc::new(RedisState::new(
                Arc::new(connection),
                &config.session.redis_key_prefix,
                (grant_life, holder_life),
                &config.session.secrets,
            ))
        }
    })
}
