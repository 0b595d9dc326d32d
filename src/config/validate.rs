//! Raw TOML → validated `Config`. Each top-level section is deserialised on its own, so a type
//! error in one does not hide problems in another; unknown keys are collected with
//! `serde_ignored`; every problem is kept, with its key path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;
use url::Url;

use super::raw::{
    RawClient, RawForwardAuth, RawProvider, RawRequire, RawRoute, RawServer, RawSession,
    RawTokenService, RawUser,
};
use super::{
    ClientAuth, ClientConfig, Config, ConfigProblem, ForwardAuthConfig, GrantType, HeaderSource,
    LogFormat, OnUnauthenticated, ProviderConfig, RedisTarget, RouteConfig, ServerConfig,
    SessionConfig, SessionStoreKind, TokenServiceConfig, Unauthenticated, UserConfig,
};
use crate::login::redirect::AllowedRedirectDomain;
use crate::policy::Requirements;
use crate::secret::Secret;

/// `provider.timeout` when unset.
const DEFAULT_PROVIDER_TIMEOUT: Duration = Duration::from_secs(15);

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
    super::env::apply_overrides(&mut table, env, &mut problems);

    let mut server = RawServer::default();
    let mut providers: Vec<(String, RawProvider)> = Vec::new();
    let mut session = RawSession::default();
    let mut forward_auth: Option<RawForwardAuth> = None;
    let mut token_service: Option<RawTokenService> = None;
    let mut routes: Vec<(String, RawRoute)> = Vec::new();
    for (key, value) in table {
        match key.as_str() {
            "server" => server = section(&key, value, &mut problems),
            "session" => session = section(&key, value, &mut problems),
            "forward_auth" => forward_auth = Some(section(&key, value, &mut problems)),
            "token_service" => token_service = Some(section(&key, value, &mut problems)),
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
    let session = checker.session(session);
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
        .filter_map(|(path, raw)| checker.route(&path, raw, &providers))
        .collect();
    if !routes.is_empty() && session.secrets.is_empty() {
        checker.problem(
            "session.secrets",
            "routes need session secrets to seal their cookies (secrets, secrets_file or secrets_env)",
        );
    }

    if checker.problems.is_empty() {
        Ok(Config {
            server,
            providers,
            session,
            forward_auth,
            token_service,
            routes,
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
                error.inner().to_string(),
            ));
            T::default()
        }
    }
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

    fn required<T>(&mut self, path: &str, value: Option<T>) -> Option<T> {
        if value.is_none() {
            self.problem(path, "is required");
        }
        value
    }

    fn duration(&mut self, path: &str, value: Option<String>, default: Duration) -> Duration {
        match value {
            None => default,
            Some(text) => match humantime::parse_duration(text.trim()) {
                Ok(duration) => duration,
                Err(error) => {
                    self.problem(
                        path,
                        format!("`{text}` is not a duration like \"30s\" or \"12h\": {error}"),
                    );
                    default
                }
            },
        }
    }

    fn socket_addr(&mut self, path: &str, value: &str) -> Option<SocketAddr> {
        match value.parse() {
            Ok(address) => Some(address),
            Err(_) => {
                self.problem(
                    path,
                    format!("`{value}` is not an address like \"127.0.0.1:4180\""),
                );
                None
            }
        }
    }

    fn url(&mut self, path: &str, value: &str) -> Option<Url> {
        match Url::parse(value) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                Some(url)
            }
            Ok(_) => {
                self.problem(path, format!("`{value}` must be an http or https URL"));
                None
            }
            Err(error) => {
                self.problem(path, format!("`{value}` is not a URL: {error}"));
                None
            }
        }
    }

    /// Resolves a secret given inline, as `<key>_file` or as `<key>_env`; more than one is a
    /// problem.
    fn secret(
        &mut self,
        path: &str,
        inline: Option<String>,
        file: Option<String>,
        env_name: Option<String>,
    ) -> Option<Secret<String>> {
        let given = usize::from(inline.is_some())
            + usize::from(file.is_some())
            + usize::from(env_name.is_some());
        if given > 1 {
            self.problem(
                path,
                format!("give only one of {path}, {path}_file and {path}_env"),
            );
            return None;
        }
        if let Some(value) = inline {
            return Some(Secret::new(value));
        }
        if let Some(file) = file {
            return match std::fs::read_to_string(&file) {
                Ok(text) => Some(Secret::new(
                    text.strip_suffix('\n')
                        .map(|t| t.strip_suffix('\r').unwrap_or(t))
                        .unwrap_or(&text)
                        .to_owned(),
                )),
                Err(error) => {
                    self.problem(
                        format!("{path}_file"),
                        format!("cannot read `{file}`: {error}"),
                    );
                    None
                }
            };
        }
        if let Some(name) = env_name {
            return match self.env.get(&name) {
                Some(value) => Some(Secret::new(value.clone())),
                None => {
                    self.problem(
                        format!("{path}_env"),
                        format!("environment variable `{name}` is not set"),
                    );
                    None
                }
            };
        }
        None
    }

    fn server(&mut self, raw: RawServer) -> ServerConfig {
        let listen = raw
            .listen
            .as_deref()
            .and_then(|value| self.socket_addr("server.listen", value))
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 4180)));
        let admin_listen = match raw.admin_listen.as_deref() {
            Some(value) => self.socket_addr("server.admin_listen", value),
            None => Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
        };
        let public_url = raw
            .public_url
            .as_deref()
            .and_then(|value| self.url("server.public_url", value));
        let trusted_proxies = match raw.trusted_proxies {
            None => vec!["127.0.0.0/8".parse().ok(), "::1/128".parse().ok()]
                .into_iter()
                .flatten()
                .collect(),
            Some(list) => list
                .iter()
                .enumerate()
                .filter_map(|(index, text)| {
                    let parsed = text
                        .parse::<ipnet::IpNet>()
                        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
                    match parsed {
                        Ok(net) => Some(net),
                        Err(_) => {
                            self.problem(
                                format!("server.trusted_proxies[{index}]"),
                                format!("`{text}` is not an IP address or CIDR"),
                            );
                            None
                        }
                    }
                })
                .collect(),
        };
        let allowed_redirect_domains = raw
            .allowed_redirect_domains
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter_map(
                |(index, text)| match text.parse::<AllowedRedirectDomain>() {
                    Ok(domain) => Some(domain),
                    Err(message) => {
                        self.problem(format!("server.allowed_redirect_domains[{index}]"), message);
                        None
                    }
                },
            )
            .collect();
        let admin_token = self.secret(
            "server.admin_token",
            raw.admin_token,
            raw.admin_token_file,
            raw.admin_token_env,
        );
        if admin_token
            .as_ref()
            .is_some_and(|token| token.expose().len() < 16)
        {
            self.problem("server.admin_token", "must be at least 16 characters");
        }
        let leeway = self.duration("server.leeway", raw.leeway, Duration::from_secs(60));
        let log_format = match raw.log_format.as_deref() {
            None | Some("auto") => LogFormat::Auto,
            Some("json") => LogFormat::Json,
            Some("text") => LogFormat::Text,
            Some(other) => {
                self.problem(
                    "server.log_format",
                    format!("`{other}` is not one of auto, json, text"),
                );
                LogFormat::Auto
            }
        };
        let header_read_timeout = self.duration(
            "server.header_read_timeout",
            raw.header_read_timeout,
            Duration::from_secs(10),
        );
        let keepalive_timeout = self.duration(
            "server.keepalive_timeout",
            raw.keepalive_timeout,
            Duration::from_secs(75),
        );
        for (key, value) in [
            ("server.header_read_timeout", header_read_timeout),
            ("server.keepalive_timeout", keepalive_timeout),
        ] {
            if value < Duration::from_millis(100) {
                self.problem(key, "must be at least 100ms");
            }
        }
        ServerConfig {
            listen,
            admin_listen,
            public_url,
            trusted_proxies,
            allowed_redirect_domains,
            admin_token,
            leeway,
            log_format,
            header_read_timeout,
            keepalive_timeout,
        }
    }

    fn provider(&mut self, path: &str, raw: RawProvider) -> Option<ProviderConfig> {
        let name = self.required(&format!("{path}.name"), raw.name);
        let issuer = self.required(&format!("{path}.issuer"), raw.issuer);
        if let Some(issuer) = &issuer {
            self.url(&format!("{path}.issuer"), issuer);
        }
        let client_id = self.required(&format!("{path}.client_id"), raw.client_id);
        let client_secret = self.secret(
            &format!("{path}.client_secret"),
            raw.client_secret,
            raw.client_secret_file,
            raw.client_secret_env,
        );
        let client_auth = match raw.client_auth.as_deref() {
            None | Some("client_secret_basic") => ClientAuth::ClientSecretBasic,
            Some("client_secret_post") => ClientAuth::ClientSecretPost,
            Some("none") => ClientAuth::None,
            Some("private_key_jwt") => {
                self.problem(
                    format!("{path}.client_auth"),
                    "private_key_jwt is not available in this version",
                );
                ClientAuth::None
            }
            Some(other) => {
                self.problem(format!("{path}.client_auth"), format!("`{other}` is not one of client_secret_basic, client_secret_post, none, private_key_jwt"));
                ClientAuth::None
            }
        };
        if raw.client_key_file.is_some() {
            self.problem(format!("{path}.client_key_file"), "only used with client_auth = \"private_key_jwt\", which is not available in this version");
        }
        match client_auth {
            ClientAuth::ClientSecretBasic | ClientAuth::ClientSecretPost
                if client_secret.is_none() =>
            {
                self.problem(
                    format!("{path}.client_secret"),
                    "is required with this client_auth (or set client_auth = \"none\")",
                );
            }
            ClientAuth::None if client_secret.is_some() => {
                self.problem(
                    format!("{path}.client_secret"),
                    "is not used with client_auth = \"none\"",
                );
            }
            _ => {}
        }
        let post_logout_redirect_uri = raw
            .post_logout_redirect_uri
            .as_deref()
            .and_then(|value| self.url(&format!("{path}.post_logout_redirect_uri"), value));
        let jwks_refetch_interval = self.duration(
            &format!("{path}.jwks_refetch_interval"),
            raw.jwks_refetch_interval,
            Duration::from_secs(10),
        );
        let timeout = self.duration(
            &format!("{path}.timeout"),
            raw.timeout,
            DEFAULT_PROVIDER_TIMEOUT,
        );
        if timeout.is_zero() {
            self.problem(format!("{path}.timeout"), "must be longer than zero");
        }
        let max_id_token_age = self.duration(
            &format!("{path}.max_id_token_age"),
            raw.max_id_token_age,
            Duration::from_secs(600),
        );
        if max_id_token_age.is_zero() {
            self.problem(
                format!("{path}.max_id_token_age"),
                "must be more than 0s (it would refuse every login)",
            );
        }
        let scopes = raw
            .scopes
            .unwrap_or_else(|| vec!["openid".into(), "profile".into(), "email".into()]);
        if !scopes.iter().any(|scope| scope == "openid") {
            self.problem(format!("{path}.scopes"), "must include \"openid\"");
        }
        Some(ProviderConfig {
            name: name?,
            issuer: issuer?,
            client_id: client_id?,
            client_secret,
            client_auth,
            scopes,
            jwks_file: raw.jwks_file.map(PathBuf::from),
            audiences: raw.audiences.unwrap_or_default(),
            introspection: raw.introspection.unwrap_or(false),
            end_session: raw.end_session.unwrap_or(true),
            post_logout_redirect_uri,
            jwks_refetch_interval,
            timeout,
            max_id_token_age,
        })
    }

    fn unique_provider_names(&mut self, providers: &[ProviderConfig]) {
        for (index, provider) in providers.iter().enumerate() {
            if providers
                .iter()
                .take(index)
                .any(|earlier| earlier.name == provider.name)
            {
                self.problem(
                    format!("provider[{index}].name"),
                    format!("`{}` is used by an earlier provider", provider.name),
                );
            }
        }
    }

    fn session(&mut self, raw: RawSession) -> SessionConfig {
        let store = match raw.store.as_deref() {
            None | Some("cookie") => SessionStoreKind::Cookie,
            Some("memory") => SessionStoreKind::Memory,
            Some("redis") => SessionStoreKind::Redis,
            Some(other) => {
                self.problem(
                    "session.store",
                    format!("`{other}` is not one of cookie, memory, redis"),
                );
                SessionStoreKind::Cookie
            }
        };
        if raw.state_file.is_some() && store != SessionStoreKind::Memory {
            self.problem("session.state_file", "only used with store = \"memory\"");
        }
        let redis = match (store, raw.redis_url) {
            (SessionStoreKind::Redis, None) => {
                self.problem("session.redis_url", "is required with store = \"redis\"");
                None
            }
            (SessionStoreKind::Redis, Some(value)) => {
                let urls: Option<Vec<String>> = match value {
                    toml::Value::String(url) => Some(vec![url]),
                    toml::Value::Array(items) => items
                        .into_iter()
                        .map(|item| item.as_str().map(str::to_owned))
                        .collect(),
                    _ => None,
                };
                match urls.map(|urls| RedisTarget::parse(&urls)) {
                    Some(Ok(target)) => Some(target),
                    Some(Err(message)) => {
                        self.problem("session.redis_url", message);
                        None
                    }
                    None => {
                        self.problem(
                            "session.redis_url",
                            "must be a URL or a list of URLs (Cluster)",
                        );
                        None
                    }
                }
            }
            (_, Some(_)) => {
                self.problem("session.redis_url", "only used with store = \"redis\"");
                None
            }
            (_, None) => None,
        };
        let redis_ca = match raw.redis_ca_file {
            None => None,
            Some(_)
                if !matches!(
                    redis,
                    Some(RedisTarget::Standalone(_) | RedisTarget::Cluster(_))
                ) =>
            {
                self.problem(
                    "session.redis_ca_file",
                    "only used with a standalone or Cluster redis_url (rediss://)",
                );
                None
            }
            Some(file) => match std::fs::read(&file) {
                Ok(pem) => Some(pem),
                Err(error) => {
                    self.problem(
                        "session.redis_ca_file",
                        format!("cannot read `{file}`: {error}"),
                    );
                    None
                }
            },
        };
        let cookie_name = raw.cookie_name.unwrap_or_else(|| "tollgate".to_owned());
        if cookie_name.is_empty()
            || !cookie_name
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"_-".contains(&byte))
        {
            self.problem(
                "session.cookie_name",
                "must be letters, digits, `_` and `-` only",
            );
        }
        let secrets = self.session_secrets(raw.secrets, raw.secrets_file, raw.secrets_env);
        let lifetime = self.duration(
            "session.lifetime",
            raw.lifetime,
            Duration::from_secs(12 * 3600),
        );
        let idle_timeout = self.duration(
            "session.idle_timeout",
            raw.idle_timeout,
            Duration::from_secs(3600),
        );
        let refresh_before = self.duration(
            "session.refresh_before",
            raw.refresh_before,
            Duration::from_secs(60),
        );
        SessionConfig {
            store,
            cookie_name,
            secrets,
            lifetime,
            idle_timeout,
            refresh: raw.refresh.unwrap_or(true),
            refresh_before,
            state_file: raw.state_file.map(PathBuf::from),
            redis_ca,
            redis,
        }
    }

    fn session_secrets(
        &mut self,
        inline: Option<Vec<String>>,
        file: Option<String>,
        env_name: Option<String>,
    ) -> Vec<Secret<String>> {
        let from_text = |text: &str| -> Vec<String> {
            text.lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let given = usize::from(inline.is_some())
            + usize::from(file.is_some())
            + usize::from(env_name.is_some());
        if given > 1 {
            self.problem(
                "session.secrets",
                "give only one of secrets, secrets_file and secrets_env",
            );
            return Vec::new();
        }
        let lines = if let Some(list) = inline {
            list
        } else if let Some(file) = file {
            match std::fs::read_to_string(&file) {
                Ok(text) => from_text(&text),
                Err(error) => {
                    self.problem(
                        "session.secrets_file",
                        format!("cannot read `{file}`: {error}"),
                    );
                    return Vec::new();
                }
            }
        } else if let Some(name) = env_name {
            match self.env.get(&name) {
                Some(text) => from_text(text),
                None => {
                    self.problem(
                        "session.secrets_env",
                        format!("environment variable `{name}` is not set"),
                    );
                    return Vec::new();
                }
            }
        } else {
            Vec::new()
        };
        for (index, line) in lines.iter().enumerate() {
            if line.len() < 32 {
                self.problem(
                    format!("session.secrets[{index}]"),
                    "must be at least 32 characters (for example `openssl rand -base64 32`)",
                );
            }
        }
        lines.into_iter().map(Secret::new).collect()
    }

    fn forward_auth(
        &mut self,
        raw: RawForwardAuth,
        providers: &[ProviderConfig],
    ) -> Option<ForwardAuthConfig> {
        if raw.enabled == Some(false) {
            return None;
        }
        let provider = self.required("forward_auth.provider", raw.provider)?;
        if !providers.iter().any(|candidate| candidate.name == provider) {
            self.problem(
                "forward_auth.provider",
                format!("no [[provider]] is named `{provider}`"),
            );
        }
        let unauthenticated = match raw.unauthenticated.as_deref() {
            None | Some("status") => Unauthenticated::Status,
            Some("redirect") => Unauthenticated::Redirect,
            Some(other) => {
                self.problem(
                    "forward_auth.unauthenticated",
                    format!("`{other}` is not one of status, redirect"),
                );
                Unauthenticated::Status
            }
        };
        if raw.grpc_listen.is_some() {
            self.problem(
                "forward_auth.grpc_listen",
                "Envoy ext_authz over gRPC is not available in this version",
            );
        }
        if let Some(cookie) = &raw.token_cookie
            && (cookie.is_empty()
                || !cookie
                    .bytes()
                    .all(|byte| byte.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&byte)))
        {
            self.problem("forward_auth.token_cookie", "is not a valid cookie name");
        }
        Some(ForwardAuthConfig {
            provider,
            token_cookie: raw.token_cookie,
            unauthenticated,
        })
    }

    fn token_service(
        &mut self,
        raw: RawTokenService,
        providers: &[ProviderConfig],
    ) -> Option<TokenServiceConfig> {
        let issuer = self.required("token_service.issuer", raw.issuer);
        let issuer = issuer.and_then(|text| self.url("token_service.issuer", &text));
        if let Some(issuer) = &issuer
            && (issuer.query().is_some() || issuer.fragment().is_some())
        {
            self.problem("token_service.issuer", "must not have a query or fragment");
        }
        let token_lifetime = self.duration(
            "token_service.token_lifetime",
            raw.token_lifetime,
            Duration::from_secs(30 * 60),
        );
        let clients: Vec<ClientConfig> = raw
            .client
            .into_iter()
            .enumerate()
            .filter_map(|(index, client)| {
                self.client(&format!("token_service.client[{index}]"), client, providers)
            })
            .collect();
        for (index, client) in clients.iter().enumerate() {
            if clients
                .iter()
                .take(index)
                .any(|earlier| earlier.client_id == client.client_id)
            {
                self.problem(
                    format!("token_service.client[{index}].client_id"),
                    format!("`{}` is used by an earlier client", client.client_id),
                );
            }
        }
        let users: Vec<UserConfig> = raw
            .user
            .into_iter()
            .enumerate()
            .filter_map(|(index, user)| self.user(&format!("token_service.user[{index}]"), user))
            .collect();
        Some(TokenServiceConfig {
            issuer: issuer?,
            signing_key_file: raw.signing_key_file.map(PathBuf::from),
            retired_key_files: raw
                .retired_key_files
                .unwrap_or_default()
                .into_iter()
                .map(PathBuf::from)
                .collect(),
            token_lifetime,
            clients,
            users,
        })
    }

    fn client(
        &mut self,
        path: &str,
        raw: RawClient,
        providers: &[ProviderConfig],
    ) -> Option<ClientConfig> {
        let client_id = self.required(&format!("{path}.client_id"), raw.client_id)?;
        let grants: Vec<GrantType> = raw
            .grants
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter_map(|(index, grant)| match grant.as_str() {
                "client_credentials" => Some(GrantType::ClientCredentials),
                "authorization_code" => Some(GrantType::AuthorizationCode),
                "refresh_token" => Some(GrantType::RefreshToken),
                other => {
                    self.problem(format!("{path}.grants[{index}]"), format!("`{other}` is not one of client_credentials, authorization_code, refresh_token"));
                    None
                }
            })
            .collect();
        if grants.is_empty() {
            self.problem(format!("{path}.grants"), "must list at least one grant");
        }
        let client_secret_hash = raw.client_secret_hash.map(Secret::new);
        if let Some(hash) = &client_secret_hash
            && argon2::PasswordHash::new(hash.expose()).is_err()
        {
            self.problem(
                format!("{path}.client_secret_hash"),
                "is not a PHC-format hash (make one with `tollgate hash-secret`)",
            );
        }
        if grants.contains(&GrantType::ClientCredentials) && client_secret_hash.is_none() {
            self.problem(
                format!("{path}.client_secret_hash"),
                "is required for the client_credentials grant",
            );
        }
        let redirect_uris = raw.redirect_uris.unwrap_or_default();
        for (index, uri) in redirect_uris.iter().enumerate() {
            match Url::parse(uri) {
                Ok(url) if url.fragment().is_none() && url.host().is_some() => {}
                _ => self.problem(
                    format!("{path}.redirect_uris[{index}]"),
                    format!("`{uri}` is not an absolute URL without a fragment"),
                ),
            }
        }
        if grants.contains(&GrantType::AuthorizationCode) && redirect_uris.is_empty() {
            self.problem(
                format!("{path}.redirect_uris"),
                "is required for the authorization_code grant",
            );
        }
        if grants.contains(&GrantType::RefreshToken)
            && !grants.contains(&GrantType::AuthorizationCode)
        {
            self.problem(
                format!("{path}.grants"),
                "refresh_token needs authorization_code (refresh tokens are issued at login)",
            );
        }
        if let Some(login_provider) = &raw.login_provider {
            if !providers
                .iter()
                .any(|provider| &provider.name == login_provider)
            {
                self.problem(
                    format!("{path}.login_provider"),
                    format!("no [[provider]] is named `{login_provider}`"),
                );
            }
            if !grants.contains(&GrantType::AuthorizationCode) {
                self.problem(
                    format!("{path}.login_provider"),
                    "only used with the authorization_code grant",
                );
            }
        }
        let source = raw.source.unwrap_or_else(|| "local".to_owned());
        if source.is_empty() || source.contains(':') {
            self.problem(
                format!("{path}.source"),
                "must be non-empty and contain no `:`",
            );
        }
        let audience = raw.audience.unwrap_or_else(|| client_id.clone());
        let extra_claims = raw.extra_claims.unwrap_or_default().into_iter().collect();
        Some(ClientConfig {
            client_id,
            client_secret_hash,
            grants,
            scopes: raw.scopes.unwrap_or_default(),
            redirect_uris,
            source,
            audience,
            extra_claims,
            login_provider: raw.login_provider,
        })
    }

    fn user(&mut self, path: &str, raw: RawUser) -> Option<UserConfig> {
        let username = self.required(&format!("{path}.username"), raw.username)?;
        let password_hash = self.required(&format!("{path}.password_hash"), raw.password_hash)?;
        if argon2::PasswordHash::new(&password_hash).is_err() {
            self.problem(
                format!("{path}.password_hash"),
                "is not a PHC-format hash (make one with `tollgate hash-secret`)",
            );
        }
        Some(UserConfig {
            username,
            password_hash: Secret::new(password_hash),
            name: raw.name,
            email: raw.email,
            groups: raw.groups.unwrap_or_default(),
            claims: raw.claims.unwrap_or_default().into_iter().collect(),
        })
    }

    /// A provider whose issuer is the token service's is served in-process (SPEC §7); its
    /// client must be registered there for the authorization code grant.
    fn local_providers(
        &mut self,
        providers: &[ProviderConfig],
        token_service: Option<&TokenServiceConfig>,
    ) {
        let Some(token_service) = token_service else {
            return;
        };
        for (index, provider) in providers.iter().enumerate() {
            if !is_same_issuer(&provider.issuer, &token_service.issuer) {
                continue;
            }
            let client = token_service
                .clients
                .iter()
                .find(|client| client.client_id == provider.client_id);
            match client {
                Some(client) if client.grants.contains(&GrantType::AuthorizationCode) => {}
                _ => self.problem(
                    format!("provider[{index}].client_id"),
                    format!("the provider is the local token service, so `{}` must be a [[token_service.client]] with the authorization_code grant", provider.client_id),
                ),
            }
        }
    }
}

impl Checker<'_> {
    fn route(
        &mut self,
        path: &str,
        raw: RawRoute,
        providers: &[ProviderConfig],
    ) -> Option<RouteConfig> {
        // Kept in canonical form (lower case, no trailing dot), as requests' hosts are compared.
        let host = raw.host.map(|host| {
            let host = host.trim().to_ascii_lowercase();
            host.strip_suffix('.').map(str::to_owned).unwrap_or(host)
        });
        if host.as_ref().is_some_and(|host| {
            host.contains(':')
                || crate::http::canonical::canonical_host(host).as_deref() != Some(host.as_str())
        }) {
            self.problem(
                format!("{path}.host"),
                "must be a host name without port or path",
            );
        }
        let path_prefix = raw.path_prefix.unwrap_or_else(|| "/".to_owned());
        if !path_prefix.starts_with('/') || path_prefix.contains(['?', '#', '\\']) {
            self.problem(
                format!("{path}.path_prefix"),
                "must start with `/` and hold no `?`, `#` or `\\`",
            );
        }
        let path_prefix = match path_prefix.trim_end_matches('/') {
            "" => "/".to_owned(),
            trimmed => trimmed.to_owned(),
        };
        let upstream = self.required(&format!("{path}.upstream"), raw.upstream);
        let upstream = upstream.and_then(|text| self.url(&format!("{path}.upstream"), &text));
        if upstream
            .as_ref()
            .is_some_and(|url| url.query().is_some() || url.fragment().is_some())
        {
            self.problem(
                format!("{path}.upstream"),
                "must not have a query or fragment",
            );
        }
        if upstream
            .as_ref()
            .is_some_and(|url| !url.username().is_empty() || url.password().is_some())
        {
            // Never sent upstream, and a password in the URL would end up in log lines.
            self.problem(
                format!("{path}.upstream"),
                "must not hold a user name or password",
            );
        }
        if upstream.as_ref().is_some_and(|url| url.scheme() == "https") {
            self.problem(
                format!("{path}.upstream"),
                "https upstreams are not available in this version; use http",
            );
        }
        let upstream = upstream.and_then(|url| {
            let text = url.to_string();
            let split = super::Upstream::new(url);
            if split.is_none() {
                self.problem(
                    format!("{path}.upstream"),
                    format!("`{text}` cannot be used as an upstream"),
                );
            }
            split
        });
        let provider = self.required(&format!("{path}.provider"), raw.provider);
        if let Some(provider) = &provider
            && !providers
                .iter()
                .any(|candidate| &candidate.name == provider)
        {
            self.problem(
                format!("{path}.provider"),
                format!("no [[provider]] is named `{provider}`"),
            );
        }
        let on_unauthenticated = match raw.on_unauthenticated.as_deref() {
            None | Some("login") => OnUnauthenticated::Login,
            Some("deny") => OnUnauthenticated::Deny,
            Some("pass") => OnUnauthenticated::Pass,
            Some("login_on_upstream_401") => OnUnauthenticated::LoginOnUpstream401,
            Some(other) => {
                self.problem(
                    format!("{path}.on_unauthenticated"),
                    format!("`{other}` is not one of login, deny, pass, login_on_upstream_401"),
                );
                OnUnauthenticated::Deny
            }
        };
        let skip = raw
            .skip
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter_map(
                |(index, text)| match crate::policy::auth_query::parse_skip_rule(text) {
                    Ok(rule) => Some(rule),
                    Err(message) => {
                        self.problem(format!("{path}.skip[{index}]"), message);
                        None
                    }
                },
            )
            .collect();
        let connect_timeout = self.duration(
            &format!("{path}.connect_timeout"),
            raw.connect_timeout,
            Duration::from_secs(5),
        );
        let read_timeout = self.duration(
            &format!("{path}.read_timeout"),
            raw.read_timeout,
            Duration::from_secs(60),
        );
        let require =
            self.requirements(&format!("{path}.require"), raw.require.unwrap_or_default());
        let headers = raw
            .headers
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(name, source)| {
                self.header_source(&format!("{path}.headers.{name}"), &name, &source)
            })
            .collect();
        Some(RouteConfig {
            host,
            path_prefix,
            upstream: upstream?,
            provider: provider?,
            on_unauthenticated,
            accept_bearer: raw.accept_bearer.unwrap_or(false),
            skip,
            connect_timeout,
            read_timeout,
            require,
            headers,
        })
    }

    fn json_path(&mut self, path: &str, text: &str) -> Option<serde_json_path::JsonPath> {
        match serde_json_path::JsonPath::parse(text) {
            Ok(parsed) => Some(parsed),
            Err(error) => {
                self.problem(
                    path,
                    format!("`{text}` is not an RFC 9535 JSONPath: {error}"),
                );
                None
            }
        }
    }

    fn requirements(&mut self, path: &str, raw: RawRequire) -> Requirements {
        let roles_claim = raw
            .roles_claim
            .and_then(|text| self.json_path(&format!("{path}.roles_claim"), &text));
        Requirements {
            issuers: raw.issuers.unwrap_or_default(),
            scopes: raw.scopes.unwrap_or_default(),
            roles: raw.roles.unwrap_or_default(),
            roles_claim,
            realm_roles: raw.realm_roles.unwrap_or_default(),
            client_roles: raw.client_roles.unwrap_or_default(),
            groups: raw.groups.unwrap_or_default(),
            email_domains: raw
                .email_domains
                .unwrap_or_default()
                .into_iter()
                .map(|domain| domain.to_ascii_lowercase())
                .collect(),
            claims: raw.claims.unwrap_or_default(),
        }
    }

    fn header_source(
        &mut self,
        path: &str,
        name: &str,
        source: &str,
    ) -> Option<(axum::http::HeaderName, HeaderSource)> {
        let Ok(header) = axum::http::HeaderName::from_bytes(name.as_bytes()) else {
            self.problem(path, format!("`{name}` is not a valid header name"));
            return None;
        };
        if matches!(
            header.as_str(),
            "host" | "cookie" | "content-length" | "transfer-encoding" | "connection" | "upgrade"
        ) {
            self.problem(path, format!("`{name}` cannot be an identity header"));
            return None;
        }
        let source = match source {
            "access_token" => HeaderSource::AccessToken,
            "id_token" => HeaderSource::IdToken,
            "userinfo_base64" => HeaderSource::UserinfoBase64,
            "bearer_access_token" => HeaderSource::BearerAccessToken,
            other => {
                if let Some(claim) = other
                    .strip_prefix("claim:")
                    .filter(|claim| !claim.is_empty())
                {
                    HeaderSource::Claim(claim.to_owned())
                } else if let Some(json_path) = other.strip_prefix("json:") {
                    HeaderSource::Json(self.json_path(path, json_path)?)
                } else {
                    self.problem(
                        path,
                        format!("`{other}` is not one of access_token, id_token, userinfo_base64, bearer_access_token, claim:NAME, json:$.path"),
                    );
                    return None;
                }
            }
        };
        Some((header, source))
    }
}

/// Whether a provider's issuer string names the token service's issuer URL.
pub fn is_same_issuer(provider_issuer: &str, token_service_issuer: &Url) -> bool {
    provider_issuer.trim_end_matches('/') == token_service_issuer.as_str().trim_end_matches('/')
}
