//! `[[route]]`: host, path prefix, upstream, provider, unauthenticated behaviour, skip rules,
//! timeouts, `[route.require]` and identity headers.

use std::time::Duration;

use super::Checker;
use crate::config::raw::{RawRequire, RawRoute};
use crate::config::{HeaderSource, OnUnauthenticated, ProviderConfig, RouteConfig};
use crate::policy::Requirements;

impl Checker<'_> {
    /// With forward-auth on, `/envoy/` and everything below it is Envoy's HTTP `ext_authz`
    /// endpoint on every host (SPEC §4): a route at `/envoy` or below it would never see a
    /// request, so it is refused rather than silently shadowed.
    pub(super) fn route_clear_of_envoy(&mut self, path: &str, route: &RouteConfig) {
        let envoy = crate::config::ENVOY_HTTP_PREFIX;
        let shadowed = route
            .path_prefix
            .strip_prefix(envoy)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        if shadowed {
            self.problem(
                format!("{path}.path_prefix"),
                format!(
                    "`{}` lies under `{envoy}/`, which is Envoy's ext_authz endpoint while \
                     forward_auth is enabled: the route would never see its requests (serve the \
                     application under another prefix, or disable forward_auth)",
                    route.path_prefix
                ),
            );
        }
    }

    /// Two routes for the same host and path prefix: one would never see a request, and which
    /// one depends on their order (an overlay's route silently replacing a stricter one).
    pub(super) fn route_distinct(
        &mut self,
        path: &str,
        route: &RouteConfig,
        earlier: &[(String, RouteConfig)],
    ) {
        let same = earlier
            .iter()
            .find(|(_, other)| other.host == route.host && other.path_prefix == route.path_prefix);
        if let Some((other, _)) = same {
            self.problem(
                format!("{path}.path_prefix"),
                format!(
                    "`{}` on {} is {other}'s too: one of them would never see a request",
                    route.path_prefix,
                    route.host.as_deref().unwrap_or("every host"),
                ),
            );
        }
    }

    pub(super) fn route(
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
        // Routes are chosen on a request's canonical path (SPEC §4.1): a prefix in another form
        // (`/api//v2`, `/%7Euser`, `/a/./b`) would never match, and its requests would fall
        // through to a broader route and its rules.
        if path_prefix.starts_with('/') {
            match crate::http::canonical::canonical_path(&path_prefix) {
                Ok(canonical) if canonical == path_prefix.as_str() => {}
                Ok(canonical) => self.problem(
                    format!("{path}.path_prefix"),
                    format!(
                        "`{path_prefix}` is not in canonical form, which requests are matched in: \
                         write `{canonical}`"
                    ),
                ),
                Err(_) => self.problem(
                    format!("{path}.path_prefix"),
                    format!("`{path_prefix}` has no single reading (an encoded `/`, `..` above the root…)"),
                ),
            }
        }
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
        let https = upstream.as_ref().is_some_and(|url| url.scheme() == "https");
        if raw.upstream_ca_file.is_some() && upstream.is_some() && !https {
            self.problem(
                format!("{path}.upstream_ca_file"),
                "only used with an https upstream",
            );
        }
        let tls = upstream.as_ref().filter(|_| https).and_then(|url| {
            let host = url.host_str().unwrap_or_default();
            let ca_file = raw.upstream_ca_file.as_deref().map(std::path::Path::new);
            crate::tls::UpstreamTls::new(host, ca_file)
                .map_err(|error| {
                    let key = if ca_file.is_some() {
                        "upstream_ca_file"
                    } else {
                        "upstream"
                    };
                    self.problem(format!("{path}.{key}"), error.to_string());
                })
                .ok()
        });
        let upstream = upstream.and_then(|url| {
            if https && tls.is_none() {
                // Why there is no TLS is a problem already.
                return None;
            }
            let text = url.to_string();
            let split = crate::config::Upstream::new(url, tls);
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
        // Zero would time out every request at once (a 504 before the upstream was asked).
        for (key, timeout) in [
            ("connect_timeout", connect_timeout),
            ("read_timeout", read_timeout),
        ] {
            if timeout.is_zero() {
                self.problem(format!("{path}.{key}"), "must be longer than zero");
            }
        }
        let upgrades = self.upgrades(&format!("{path}.upgrades"), raw.upgrades);
        // A `[route.require]` table with no requirement in it (a template that rendered
        // nothing under it) requires nothing, as an empty list does.
        if raw.require.as_ref().is_some_and(RawRequire::is_empty) {
            self.problem(
                format!("{path}.require"),
                "requires nothing: name a requirement, or remove the table",
            );
        }
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
            upgrades,
            require,
            headers,
        })
    }

    /// `route.upgrades`: protocol names (RFC 9110 §7.8, `name[/version]` of token characters),
    /// kept in lower case; `websocket` when absent. Never `h2c`: the client would then speak
    /// HTTP/2 to the upstream on the spliced connection, requests Tollgate never sees.
    fn upgrades(&mut self, path: &str, raw: Option<Vec<String>>) -> Vec<String> {
        let Some(raw) = raw else {
            return vec!["websocket".to_owned()];
        };
        let token = |text: &str| crate::http::is_token(text.as_bytes());
        let mut upgrades = Vec::new();
        for (index, protocol) in raw.iter().enumerate() {
            let lower = protocol.to_ascii_lowercase();
            let named = match lower.split_once('/') {
                Some((name, version)) => token(name) && token(version),
                None => token(&lower),
            };
            if !named {
                self.problem(
                    format!("{path}[{index}]"),
                    "must be a protocol name, `name` or `name/version` (RFC 9110 §7.8)",
                );
            } else if lower == "h2c" || lower.starts_with("h2c/") {
                self.problem(
                    format!("{path}[{index}]"),
                    "h2c is never passed on: on the switched connection the client would send \
                     requests Tollgate never sees",
                );
            } else if !upgrades.contains(&lower) {
                upgrades.push(lower);
            }
        }
        upgrades
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
        // An empty list would require nothing (a template that rendered no value, an
        // environment override of `[]`): every signed-in caller would pass. Only a missing key
        // means "no requirement".
        let lists = [
            ("issuers", raw.issuers.as_ref()),
            ("scopes", raw.scopes.as_ref()),
            ("roles", raw.roles.as_ref()),
            ("realm_roles", raw.realm_roles.as_ref()),
            ("groups", raw.groups.as_ref()),
            ("email_domains", raw.email_domains.as_ref()),
        ];
        let tables = [
            ("client_roles", raw.client_roles.as_ref()),
            ("claims", raw.claims.as_ref()),
        ];
        let mut empty: Vec<String> = lists
            .iter()
            .filter(|(_, list)| list.is_some_and(Vec::is_empty))
            .map(|(key, _)| format!("{path}.{key}"))
            .collect();
        for (key, table) in tables {
            let Some(table) = table else { continue };
            if table.is_empty() {
                empty.push(format!("{path}.{key}"));
            }
            empty.extend(
                table
                    .iter()
                    .filter(|(_, list)| list.is_empty())
                    .map(|(name, _)| format!("{path}.{key}.{name}")),
            );
        }
        for key in empty {
            self.problem(
                key,
                "an empty list requires nothing: name at least one value, or remove the key",
            );
        }
        // An empty (or blank) value, the same template's other failure: `issuers = [""]` matched any
        // introspection answer without `iss`, `email_domains = [""]` an address `a@`.
        let mut blank: Vec<String> = lists
            .iter()
            .filter(|(_, list)| {
                list.is_some_and(|values| values.iter().any(|value| value.trim().is_empty()))
            })
            .map(|(key, _)| format!("{path}.{key}"))
            .collect();
        for (key, table) in tables {
            blank.extend(
                table
                    .into_iter()
                    .flatten()
                    .filter(|(_, values)| values.iter().any(|value| value.trim().is_empty()))
                    .map(|(name, _)| format!("{path}.{key}.{name}")),
            );
        }
        for key in blank {
            self.problem(
                key,
                "an empty value: name a value, or remove it from the list",
            );
        }
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
        if crate::http::cannot_carry_identity(header.as_str()) {
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
