//! `[[provider]]`: name, issuer, client id and authentication, scopes and timeouts; names
//! unique.

use std::path::PathBuf;
use std::time::Duration;

use super::Checker;
use crate::config::raw::RawProvider;
use crate::config::{ClientAuth, ProviderConfig};

/// `provider.timeout` when unset.
const DEFAULT_PROVIDER_TIMEOUT: Duration = Duration::from_secs(15);

impl Checker<'_> {
    pub(super) fn provider(&mut self, path: &str, raw: RawProvider) -> Option<ProviderConfig> {
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

    pub(super) fn unique_provider_names(&mut self, providers: &[ProviderConfig]) {
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
}
