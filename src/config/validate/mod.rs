//! Raw TOML → validated `Config`. Each top-level section is deserialised on its own, so a type
//! error in one does not hide problems in another; unknown keys are collected with
//! `serde_ignored`; every problem is kept, with its key path. Here: the loader and the
//! `Checker` that collects problems; value checks in `primitives`, one file per section.

mod forward_auth;
mod primitives;
mod provider;
mod route;
mod server;
mod session;
mod telemetry;
mod token_service;

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;

use super::raw::{
    RawForwardAuth, RawProvider, RawRoute, RawServer, RawSession, RawTelemetry, RawTokenService,
};
use super::{Config, ConfigProblem, ProviderConfig, RouteConfig};

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
    for (key, value) in table {
        match key.as_str() {
            "server" => server = section(&key, value, &mut problems),
            "session" => session = section(&key, value, &mut problems),
            "forward_auth" => forward_auth = Some(section(&key, value, &mut problems)),
            "token_service" => token_service = Some(section(&key, value, &mut problems)),
            "telemetry" => telemetry = Some(section(&key, value, &mut problems)),
            "provider" => match value {
                toml::Value::Array(items) => {
                    for (index, item) in items.into_iter().enumerate() {
                        let path = format!("provider[{index}]");
                        let provider = section(&path, item, &mut problems);
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
                        let route = section(&path, item, &mut problems);
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

    let mut checker = Checker { problems, env };
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
    let token_service = token_service.and_then(|raw| checker.token_service(raw, &providers));
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
    if federates && session.secrets.is_empty() {
        checker.problem(
            "session.secrets",
            "federated logins (login_provider) need session secrets to seal their login state",
        );
    }
    let routes: Vec<RouteConfig> = routes
        .into_iter()
        .filter_map(|(path, raw)| {
            let route = checker.route(&path, raw, &providers)?;
            if forward_auth.is_some() {
                checker.route_clear_of_envoy(&path, &route);
            }
            Some(route)
        })
        .collect();
    if !routes.is_empty() && session.secrets.is_empty() {
        checker.problem(
            "session.secrets",
            "routes need session secrets to seal their cookies (secrets, secrets_file or secrets_env)",
        );
    }

    let telemetry = telemetry.and_then(|raw| checker.telemetry(raw));

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
        })
    } else {
        Err(checker.problems)
    }
}

/// Deserialises one section, turning unknown keys and type errors into problems with paths.
fn section<T: DeserializeOwned + Default>(
    base: &str,
    value: toml::Value,
    problems: &mut Vec<ConfigProblem>,
) -> T {
    let mut unknown = Vec::new();
    let mut record =
        |path: serde_ignored::Path<'_>| unknown.push(join_path(base, &ignored_path(&path)));
    let deserializer = serde_ignored::Deserializer::new(value, &mut record);
    let result: Result<T, _> = serde_path_to_error::deserialize(deserializer);
    match result {
        Ok(parsed) => {
            for path in unknown {
                problems.push(ConfigProblem::new(path, "unknown key"));
            }
            parsed
        }
        Err(error) => {
            let mut path = String::new();
            for segment in error.path().iter() {
                match segment {
                    serde_path_to_error::Segment::Seq { index } => {
                        path.push_str(&format!("[{index}]"))
                    }
                    serde_path_to_error::Segment::Map { key } => {
                        if !path.is_empty() {
                            path.push('.');
                        }
                        path.push_str(key);
                    }
                    serde_path_to_error::Segment::Enum { .. }
                    | serde_path_to_error::Segment::Unknown => {}
                }
            }
            problems.push(ConfigProblem::new(
                join_path(base, &path),
                without_value(&error.inner().to_string()),
            ));
            T::default()
        }
    }
}

/// A type error's message without the value it quotes (`invalid type: string "…", expected a
/// sequence` is `invalid type: string, expected a sequence`): the value may be a secret
/// (`secrets = "…"` as a string), and problems are printed by `check` and logged at a reload.
fn without_value(message: &str) -> String {
    let Some(rest) = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))
    else {
        return message.to_owned();
    };
    let lead = &message[..message.len() - rest.len()];
    let kind = rest
        .split([' ', ','])
        .next()
        .filter(|word| !word.starts_with(['"', '`']))
        .unwrap_or("a value");
    let expected = rest.find(", expected").map_or("", |at| &rest[at..]);
    format!("{lead}{kind}{expected}")
}

fn ignored_path(path: &serde_ignored::Path<'_>) -> String {
    match path {
        serde_ignored::Path::Root => String::new(),
        serde_ignored::Path::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        serde_ignored::Path::Map { parent, key } => join_path(&ignored_path(parent), key),
        serde_ignored::Path::Some { parent }
        | serde_ignored::Path::NewtypeStruct { parent }
        | serde_ignored::Path::NewtypeVariant { parent } => ignored_path(parent),
    }
}

fn join_path(base: &str, rest: &str) -> String {
    match (base.is_empty(), rest.is_empty()) {
        (true, _) => rest.to_owned(),
        (_, true) => base.to_owned(),
        _ if rest.starts_with('[') => format!("{base}{rest}"),
        _ => format!("{base}.{rest}"),
    }
}

struct Checker<'a> {
    problems: Vec<ConfigProblem>,
    env: &'a BTreeMap<String, String>,
}

impl Checker<'_> {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(ConfigProblem::new(path, message));
    }
}

#[cfg(test)]
mod tests {
    use super::without_value;

    #[test]
    fn type_errors_name_the_kind_never_the_value() {
        assert_eq!(
            without_value(r#"invalid type: string "SuperSecret-value", expected a sequence"#),
            "invalid type: string, expected a sequence"
        );
        assert_eq!(
            without_value("invalid value: integer `-5`, expected u64"),
            "invalid value: integer, expected u64"
        );
        assert_eq!(
            without_value(r#"invalid value: "x", expected y"#),
            "invalid value: a value, expected y"
        );
        assert_eq!(without_value("missing field `url`"), "missing field `url`");
    }
}
