//! Raw TOML → validated `Config`. Each top-level section is read on its own (`section`), so a
//! type error in one does not hide problems in another, nor a wrong-typed key the rest of its
//! section; every problem is kept, with its key path. Here: the loader and the `Checker` that
//! collects problems; value checks in `primitives`, one file per section.

mod forward_auth;
mod primitives;
mod provider;
mod route;
mod section;
mod server;
mod session;
mod telemetry;
mod token_service;

use std::collections::BTreeMap;

use super::raw::{
    RawForwardAuth, RawProvider, RawRoute, RawServer, RawSession, RawTelemetry, RawTokenService,
};
use super::{Config, ConfigProblem, ProviderConfig, RouteConfig};
use section::{LeftOut, section};

pub use token_service::is_same_issuer;

/// The SHA-256 of `text` in lower-case hex.
fn sha256_hex(text: &str) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes())
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

pub(super) fn load(
    toml_text: &str,
    env: &BTreeMap<String, String>,
) -> Result<Config, Vec<ConfigProblem>> {
    let mut table: toml::Table = match toml::from_str(toml_text) {
        Ok(table) => table,
        Err(error) => {
            let message = error.message().to_owned();
            let location = match error.span() {
                Some(span) => format!("(syntax, byte {})", span.start),
                None => "(syntax)".to_owned(),
            };
            return Err(vec![ConfigProblem::new(location, message)]);
        }
    };
    let mut problems = Vec::new();
    let overrides = super::env::apply_overrides(&mut table, env, &mut problems);

    let mut server = RawServer::default();
    let mut providers: Vec<(String, RawProvider)> = Vec::new();
    let mut session = RawSession::default();
    let mut forward_auth: Option<RawForwardAuth> = None;
    let mut token_service: Option<RawTokenService> = None;
    let mut telemetry: Option<RawTelemetry> = None;
    let mut routes: Vec<(String, RawRoute)> = Vec::new();
    let mut left_out = LeftOut::default();
    for (key, value) in table {
        match key.as_str() {
            "server" => server = section(&key, value, &mut problems, &mut left_out),
            "session" => session = section(&key, value, &mut problems, &mut left_out),
            "forward_auth" => {
                forward_auth = Some(section(&key, value, &mut problems, &mut left_out))
            }
            "token_service" => {
                token_service = Some(section(&key, value, &mut problems, &mut left_out))
            }
            "telemetry" => telemetry = Some(section(&key, value, &mut problems, &mut left_out)),
            "provider" => match value {
                toml::Value::Array(items) => {
                    for (index, item) in items.into_iter().enumerate() {
                        let path = format!("provider[{index}]");
                        let provider = section(&path, item, &mut problems, &mut left_out);
                        providers.push((path, provider));
                    }
                }
                _ => problems.push(ConfigProblem::new(
                    "provider",
                    "must be an array of tables ([[provider]])",
                )),
            },
            "route" => match value {
                toml::Value::Array(items) => {
                    for (index, item) in items.into_iter().enumerate() {
                        let path = format!("route[{index}]");
                        let route = section(&path, item, &mut problems, &mut left_out);
                        routes.push((path, route));
                    }
                }
                _ => problems.push(ConfigProblem::new(
                    "route",
                    "must be an array of tables ([[route]])",
                )),
            },
            // A section SPEC §3 names that this version does not have yet.
            _ if super::env::is_section(&key) => problems.push(ConfigProblem::new(
                key,
                "this section is not supported by this version of Tollgate",
            )),
            _ => problems.push(ConfigProblem::new(key, "unknown key")),
        }
    }

    // The checks below see each section without its wrong-typed keys; what they would say of
    // those (a required key missing) only repeats the type error.
    let read = problems.len();
    let mut checker = Checker {
        problems,
        env,
        readable_by_all: Vec::new(),
    };
    let server = checker.server(server);
    let providers: Vec<ProviderConfig> = providers
        .into_iter()
        .filter_map(|(path, raw)| checker.provider(&path, raw))
        .collect();
    checker.unique_provider_names(&providers);
    let token_service_redis = token_service
        .as_ref()
        .is_some_and(|raw| raw.store.as_deref() == Some("redis"));
    let session = checker.session(session, token_service_redis);
    let forward_auth = forward_auth.and_then(|raw| checker.forward_auth(raw, &providers));
    let token_service =
        token_service.and_then(|raw| checker.token_service(raw, &providers, session.lifetime));
    if forward_auth.is_some() && session.secrets.is_empty() {
        checker.problem("session.secrets", "forward_auth needs session secrets to seal its cookies (secrets, secrets_file or secrets_env)");
    }
    checker.local_providers(&providers, token_service.as_ref());
    let federates = token_service.as_ref().is_some_and(|service| {
        service
            .clients
            .iter()
            .any(|client| client.login_provider.is_some())
    });
    if token_service_redis && session.secrets.is_empty() {
        checker.problem(
            "session.secrets",
            "token_service.store = \"redis\" needs session secrets to seal its records and tag \
             its refresh tokens (secrets, secrets_file or secrets_env)",
        );
    }
    if federates && session.secrets.is_empty() {
        checker.problem(
            "session.secrets",
            "federated logins (login_provider) need session secrets to seal their login state",
        );
    }
    let mut checked: Vec<(String, RouteConfig)> = Vec::new();
    for (path, raw) in routes {
        let Some(route) = checker.route(&path, raw, &providers) else {
            continue;
        };
        if forward_auth.is_some() {
            checker.route_clear_of_envoy(&path, &route);
        }
        checker.route_distinct(&path, &route, &checked);
        checked.push((path, route));
    }
    let routes: Vec<RouteConfig> = checked.into_iter().map(|(_, route)| route).collect();
    if !routes.is_empty() && session.secrets.is_empty() {
        checker.problem(
            "session.secrets",
            "routes need session secrets to seal their cookies (secrets, secrets_file or secrets_env)",
        );
    }

    let telemetry = telemetry.and_then(|raw| checker.telemetry(raw));

    let checked = checker.problems.split_off(read);
    checker.problems.extend(
        checked
            .into_iter()
            .filter(|problem| !left_out.covers(&problem.path)),
    );
    super::env::name_variables(&mut checker.problems, &overrides);
    if checker.problems.is_empty() {
        Ok(Config {
            server,
            providers,
            session,
            forward_auth,
            token_service,
            routes,
            source_sha256: sha256_hex(toml_text),
            telemetry,
            secret_files_readable_by_all: checker.readable_by_all,
        })
    } else {
        Err(checker.problems)
    }
}

struct Checker<'a> {
    problems: Vec<ConfigProblem>,
    env: &'a BTreeMap<String, String>,
    /// The `*_file` keys of secrets read from files every user may read.
    readable_by_all: Vec<String>,
}

impl Checker<'_> {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(ConfigProblem::new(path, message));
    }
}
