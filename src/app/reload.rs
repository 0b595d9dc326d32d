//! A new config going live while Tollgate runs: it is checked (what needs a restart must not
//! change, every `jwks_file` must hold a usable key, every [`Reloadable`] part must accept
//! it), built next to the live state, and swapped in whole; or refused, logged and counted,
//! and the live config stays.

use std::sync::Arc;
use std::time::Duration;

use super::{AppState, ReloadError, RunningApp, discover};
use crate::config::{Config, ConfigProblem};
use crate::telemetry::Telemetry;

/// What a [`Reloadable`] part does once every part accepted the new config: short and
/// infallible (swap in what `prepare` read).
pub type Commit = Box<dyn FnOnce() + Send>;

/// A part of the running app that lives outside [`AppState`] and follows the config on
/// reload, such as a listener's TLS certificate. Register it with
/// [`RunningApp::add_reloadable`].
pub trait Reloadable: Send + Sync {
    /// Reads what `config` names for this part (files included) without changing anything;
    /// problems refuse the whole reload. The commit runs only when every part and the new
    /// state are ready, just before the new state goes live.
    ///
    /// # Errors
    /// The problems, each with its key path.
    fn prepare(&self, config: &Config) -> Result<Commit, Vec<ConfigProblem>>;
}

/// The public listener's certificate as a reloadable part: the files a reloaded config names
/// were read (and checked to belong together) when it was loaded; they are served once it goes
/// live, never with a config that was refused.
pub(super) fn listener_certificate(
    certificate: Arc<crate::tls::server::ServerCertificate>,
) -> Arc<dyn Reloadable> {
    struct ListenerCertificate(Arc<crate::tls::server::ServerCertificate>);
    impl Reloadable for ListenerCertificate {
        fn prepare(&self, config: &Config) -> Result<Commit, Vec<ConfigProblem>> {
            // Without `tls` the reload is refused already (the listener's files are fixed).
            let key = config.server.tls.as_ref().map(|tls| tls.key.clone());
            let certificate = self.0.clone();
            Ok(Box::new(move || {
                if let Some(key) = key {
                    certificate.serve(key);
                }
            }))
        }
    }
    Arc::new(ListenerCertificate(certificate))
}

impl RunningApp {
    /// Adds a part that follows the config on every later reload.
    pub async fn add_reloadable(&self, part: Arc<dyn Reloadable>) {
        self.reloadables.lock().await.push(part);
    }

    /// Makes `config` the live one: requests that arrive afterwards, on new or kept-alive
    /// connections, are answered by it; requests in flight finish on the config they started
    /// with. What holds state survives when its config did not change (see
    /// [`AppState::rebuild`]). A config that changes what needs a restart, names a JWKS file
    /// with no usable key, or cannot be built is refused: logged, counted in
    /// `tollgate_config_reloads_total{result="error"}`, and the live config stays.
    ///
    /// # Errors
    /// Why the config was refused.
    pub async fn reload(&self, config: Config) -> Result<(), ReloadError> {
        let reloadables = self.reloadables.lock().await;
        let live = self.state();
        let sha256 = config.source_sha256.clone();
        let (next, commits) = match prepare(&live, config, &reloadables).await {
            Ok(ready) => ready,
            Err(error) => {
                self.refused(&error, &live);
                return Err(error);
            }
        };
        for commit in commits {
            commit();
        }
        self.live.store(next.clone());
        // Upgraded connections the replaced state let in are looked at by this one from now on.
        if !Arc::ptr_eq(&live.explain.proxy, &next.explain.proxy) {
            let _ = live.explain.proxy.successor.set(next.explain.proxy.clone());
        }
        if let Some(replaced) = &live.telemetry
            && !next
                .telemetry
                .as_ref()
                .is_some_and(|kept| Arc::ptr_eq(kept, replaced))
        {
            retire(replaced.clone());
        }
        self.follow_memory_store();
        discover(&next);
        // Read again, as the config's own warnings are: the reload may have moved to Redis or
        // to another one.
        super::warn_about_redis_settings(&next);
        next.metrics.config_live(&sha256, next.clock.now());
        for warning in crate::config::warnings(&next.config) {
            tracing::warn!(%warning, "unsafe setting");
        }
        tracing::info!(%sha256, previous = %live.config.source_sha256, "configuration reloaded");
        Ok(())
    }

    /// Records a config that could not even be loaded (unreadable, invalid): its problems are
    /// logged and counted as a refused reload; the live config stays.
    pub fn refuse(&self, problems: Vec<ConfigProblem>) {
        self.refused(&ReloadError::Refused(problems), &self.state());
    }

    fn refused(&self, error: &ReloadError, live: &AppState) {
        match error {
            ReloadError::Refused(problems) => {
                for problem in problems {
                    tracing::error!(%problem, "configuration problem");
                }
            }
            ReloadError::Build(cause) => {
                tracing::error!(error = %super::error::chain(cause), "cannot build the new configuration");
            }
        }
        live.metrics.config_refused();
        tracing::error!(
            %error,
            live = %live.config.source_sha256,
            "configuration refused; the live one stays"
        );
    }
}

/// How long a replaced span exporter waits for the requests that began before the reload.
const RETIRE_WAIT: Duration = Duration::from_secs(60);

/// Shuts down a span exporter a reload replaced, exporting the spans it holds, once the
/// requests that began on the old config are over (at most [`RETIRE_WAIT`]), on a thread where
/// blocking is allowed. Left to its last owner, the shutdown would run in whichever request
/// ends last, on a worker, and with a collector that does not answer stall every connection of
/// that worker for up to the export timeout.
fn retire(telemetry: Arc<Telemetry>) {
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + RETIRE_WAIT;
        while Arc::strong_count(&telemetry) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A request still holding it after this ends its span unexported; dropping the
        // exporter then no longer blocks (the SDK shuts a provider down once).
        if tokio::task::spawn_blocking(move || telemetry.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("telemetry: the replaced exporter's shutdown did not complete");
        }
    });
}

/// Checks `config` against the live state and builds its state, with every reloadable
/// part's commit.
async fn prepare(
    live: &AppState,
    config: Config,
    reloadables: &[Arc<dyn Reloadable>],
) -> Result<(Arc<AppState>, Vec<Commit>), ReloadError> {
    let mut problems = fixed_at_start(&live.config, &config);
    if !problems.is_empty() {
        return Err(ReloadError::Refused(problems));
    }
    let mut commits = Vec::new();
    for part in reloadables {
        match part.prepare(&config) {
            Ok(commit) => commits.push(commit),
            Err(more) => problems.extend(more),
        }
    }
    let next = live.rebuild(config).map_err(ReloadError::Build)?;
    for (index, provider_config) in next.config.providers.iter().enumerate() {
        if let Some(provider) = next.providers.get(&provider_config.name)
            && let Err(error) = provider.load_key_file().await
        {
            problems.push(ConfigProblem::new(
                format!("provider[{index}].jwks_file"),
                error.to_string(),
            ));
        }
    }
    if problems.is_empty() {
        Ok((next, commits))
    } else {
        Err(ReloadError::Refused(problems))
    }
}

/// What a reload cannot change: the listeners are bound and logging is set up once.
fn fixed_at_start(live: &Config, new: &Config) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    let mut fixed = |path: &str, live: String, new: String| {
        if live != new {
            problems.push(ConfigProblem::new(
                path,
                format!("is {live} in the running config and cannot change on reload ({new} asked); restart to change it"),
            ));
        }
    };
    let address = |address: Option<std::net::SocketAddr>| {
        address.map_or_else(|| "unset".to_owned(), |address| address.to_string())
    };
    fixed(
        "server.listen",
        live.server.listen.to_string(),
        new.server.listen.to_string(),
    );
    fixed(
        "server.admin_listen",
        address(live.server.admin_listen),
        address(new.server.admin_listen),
    );
    fixed(
        "server.log_format",
        format!("{:?}", live.server.log_format).to_lowercase(),
        format!("{:?}", new.server.log_format).to_lowercase(),
    );
    // The certificate's files are read again on every SIGHUP; which files, and whether the
    // listener serves TLS at all, is fixed with the listener.
    let tls_files = |config: &Config| {
        config.server.tls.as_ref().map_or_else(
            || "unset".to_owned(),
            |tls| format!("{} + {}", tls.cert_file.display(), tls.key_file.display()),
        )
    };
    fixed("server.tls_cert_file", tls_files(live), tls_files(new));
    let grpc = |config: &Config| {
        address(
            config
                .forward_auth
                .as_ref()
                .and_then(|section| section.grpc_listen),
        )
    };
    fixed("forward_auth.grpc_listen", grpc(live), grpc(new));
    fixed(
        "server.max_connections",
        live.server.max_connections.to_string(),
        new.server.max_connections.to_string(),
    );
    problems
}
