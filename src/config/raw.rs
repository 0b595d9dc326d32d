//! Serde structs that mirror the TOML file one to one. Nothing outside `config` sees them:
//! `validate` turns them into the typed `Config`.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawServer {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub public_url: Option<String>,
    pub trusted_proxies: Option<Vec<String>>,
    pub allowed_redirect_domains: Option<Vec<String>>,
    pub admin_token: Option<String>,
    pub admin_token_file: Option<String>,
    pub admin_token_env: Option<String>,
    pub leeway: Option<String>,
    pub log_format: Option<String>,
    pub header_read_timeout: Option<String>,
    pub keepalive_timeout: Option<String>,
    pub tls_cert_file: Option<String>,
    pub tls_key_file: Option<String>,
    /// An integer; also its text (from an environment override).
    pub max_connections: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawProvider {
    pub name: Option<String>,
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_secret_file: Option<String>,
    pub client_secret_env: Option<String>,
    pub client_auth: Option<String>,
    pub client_key_file: Option<String>,
    pub client_key_id: Option<String>,
    pub client_assertion_audience: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub jwks_file: Option<String>,
    pub audiences: Option<Vec<String>>,
    pub introspection: Option<bool>,
    pub end_session: Option<bool>,
    pub post_logout_redirect_uri: Option<String>,
    pub jwks_refetch_interval: Option<String>,
    pub timeout: Option<String>,
    pub max_id_token_age: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawSession {
    pub store: Option<String>,
    pub cookie_name: Option<String>,
    pub secrets: Option<Vec<String>>,
    pub secrets_file: Option<String>,
    pub secrets_env: Option<String>,
    pub lifetime: Option<String>,
    pub idle_timeout: Option<String>,
    pub refresh: Option<bool>,
    pub refresh_before: Option<String>,
    pub state_file: Option<String>,
    pub redis_url: Option<toml::Value>,
    pub redis_ca_file: Option<String>,
    pub redis_key_prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawForwardAuth {
    pub enabled: Option<bool>,
    pub provider: Option<String>,
    pub token_cookie: Option<String>,
    pub unauthenticated: Option<String>,
    pub grpc_listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawTelemetry {
    pub otlp_endpoint: Option<String>,
    pub service_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawTokenService {
    pub issuer: Option<String>,
    pub signing_key_file: Option<String>,
    pub retired_key_files: Option<Vec<String>>,
    pub token_lifetime: Option<String>,
    pub store: Option<String>,
    #[serde(default)]
    pub client: Vec<RawClient>,
    #[serde(default)]
    pub user: Vec<RawUser>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawClient {
    pub client_id: Option<String>,
    pub client_secret_hash: Option<String>,
    pub grants: Option<Vec<String>>,
    pub scopes: Option<Vec<String>>,
    pub redirect_uris: Option<Vec<String>>,
    pub login_provider: Option<String>,
    pub source: Option<String>,
    pub audience: Option<String>,
    pub extra_claims: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawUser {
    pub username: Option<String>,
    pub password_hash: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub groups: Option<Vec<String>>,
    pub claims: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawRoute {
    pub host: Option<String>,
    pub path_prefix: Option<String>,
    pub upstream: Option<String>,
    pub upstream_ca_file: Option<String>,
    pub provider: Option<String>,
    pub on_unauthenticated: Option<String>,
    pub accept_bearer: Option<bool>,
    pub skip: Option<Vec<String>>,
    pub connect_timeout: Option<String>,
    pub read_timeout: Option<String>,
    pub upgrades: Option<Vec<String>>,
    pub require: Option<RawRequire>,
    pub headers: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawRequire {
    pub issuers: Option<Vec<String>>,
    pub scopes: Option<Vec<String>>,
    pub roles: Option<Vec<String>>,
    pub roles_claim: Option<String>,
    pub realm_roles: Option<Vec<String>>,
    pub client_roles: Option<BTreeMap<String, Vec<String>>>,
    pub groups: Option<Vec<String>>,
    pub email_domains: Option<Vec<String>>,
    pub claims: Option<BTreeMap<String, Vec<String>>>,
}

impl RawRequire {
    /// Whether it names no requirement (`roles_claim` only says where roles are read).
    pub(super) fn is_empty(&self) -> bool {
        let Self {
            issuers,
            scopes,
            roles,
            roles_claim: _,
            realm_roles,
            client_roles,
            groups,
            email_domains,
            claims,
        } = self;
        [issuers, scopes, roles, realm_roles, groups, email_domains]
            .iter()
            .all(|list| list.is_none())
            && client_roles.is_none()
            && claims.is_none()
    }
}
