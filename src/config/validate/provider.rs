//! `[[provider]]`: name, issuer, client id and authentication (the `private_key_jwt` key read
//! and parsed here), scopes and timeouts; names unique.

use std::path::PathBuf;
use std::time::Duration;

use super::Checker;
use crate::config::raw::RawProvider;
use crate::config::{AssertionAudience, ClientAuth, ClientKeyConfig, ProviderConfig};

/// The `private_key_jwt` keys of a `[[provider]]` as written.
struct ClientKeyKeys {
    file: Option<String>,
    id: Option<String>,
    audience: Option<String>,
}

/// `provider.timeout` when unset.
const DEFAULT_PROVIDER_TIMEOUT: Duration = Duration::from_secs(15);

impl Checker<'_> {
    pub(super) fn provider(&mut self, path: &str, raw: RawProvider) -> Option<ProviderConfig> {
        let name = self.required(&format!("{path}.name"), raw.name);
        let issuer = self.required(&format!("{path}.issuer"), raw.issuer);
        if let Some(issuer) = &issuer {
            self.issuer_url(&format!("{path}.issuer"), issuer);
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
            Some("private_key_jwt") => ClientAuth::PrivateKeyJwt,
            Some(other) => {
                self.problem(format!("{path}.client_auth"), format!("`{other}` is not one of client_secret_basic, client_secret_post, none, private_key_jwt"));
                ClientAuth::None
            }
        };
        let client_key = self.client_key(
            path,
            client_auth,
            ClientKeyKeys {
                file: raw.client_key_file,
                id: raw.client_key_id,
                audience: raw.client_assertion_audience,
            },
        );
        match client_auth {
            ClientAuth::ClientSecretBasic | ClientAuth::ClientSecretPost
                if client_secret.is_none() =>
            {
                self.problem(
                    format!("{path}.client_secret"),
                    "is required with this client_auth (or set client_auth = \"none\")",
                );
            }
            ClientAuth::None | ClientAuth::PrivateKeyJwt if client_secret.is_some() => {
                self.problem(
                    format!("{path}.client_secret"),
                    "is not used with this client_auth",
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
        // Anyone can send a token with a made-up `kid`: with no interval, each one would fetch
        // the provider's keys again, one fetch after another.
        if jwks_refetch_interval.as_secs() == 0 {
            self.problem(
                format!("{path}.jwks_refetch_interval"),
                "must be at least 1s (with less, every token with an unknown `kid` fetches the keys again)",
            );
        }
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
        let jwks_file = raw.jwks_file.map(PathBuf::from);
        if let Some(file) = &jwks_file {
            // Read at start, as `serve` does: a file that is missing or holds no key set
            // would stop it.
            // The same reading as `serve`'s (a set without a usable signature key stops it),
            // and the path shown only when it reads like one (a pasted key set is not).
            let shown = crate::secret::shown_path(&file.to_string_lossy());
            let problem = match crate::named_file::read(file) {
                Ok(bytes) => match crate::jose::KeySet::from_jwks_json(&bytes) {
                    Ok(keys) if keys.is_empty() => Some(format!(
                        "{shown} holds no usable signature key (`oct` and encryption keys are \
                         never used)"
                    )),
                    Ok(_) => None,
                    Err(error) => Some(format!("{shown}: not a JWK set: {error}")),
                },
                Err(error) => Some(format!("{shown} cannot be read: {error}")),
            };
            if let Some(problem) = problem {
                self.problem(format!("{path}.jwks_file"), problem);
            }
        }
        Some(ProviderConfig {
            name: name?,
            issuer: issuer?,
            client_id: client_id?,
            client_secret,
            client_auth,
            client_key,
            scopes,
            jwks_file,
            audiences: raw.audiences.unwrap_or_default(),
            introspection: raw.introspection.unwrap_or(false),
            end_session: raw.end_session.unwrap_or(true),
            post_logout_redirect_uri,
            jwks_refetch_interval,
            timeout,
            max_id_token_age,
        })
    }

    /// `client_key_file`, `client_key_id` and `client_assertion_audience`: required (the file)
    /// with `private_key_jwt` and read and parsed here, refused with any other `client_auth`.
    fn client_key(
        &mut self,
        path: &str,
        client_auth: ClientAuth,
        keys: ClientKeyKeys,
    ) -> Option<ClientKeyConfig> {
        if client_auth != ClientAuth::PrivateKeyJwt {
            for (key, given) in [
                ("client_key_file", keys.file.is_some()),
                ("client_key_id", keys.id.is_some()),
                ("client_assertion_audience", keys.audience.is_some()),
            ] {
                if given {
                    self.problem(
                        format!("{path}.{key}"),
                        "is only used with client_auth = \"private_key_jwt\"",
                    );
                }
            }
            return None;
        }
        let audience = match keys.audience.as_deref() {
            None | Some("issuer") => AssertionAudience::Issuer,
            Some("token_endpoint") => AssertionAudience::Endpoint,
            Some(other) => {
                self.problem(
                    format!("{path}.client_assertion_audience"),
                    format!("`{other}` is not one of issuer, token_endpoint"),
                );
                AssertionAudience::Issuer
            }
        };
        if keys.id.as_deref().is_some_and(str::is_empty) {
            self.problem(format!("{path}.client_key_id"), "must not be empty");
        }
        let Some(file) = keys.file.as_deref() else {
            self.problem(
                format!("{path}.client_key_file"),
                "is required with client_auth = \"private_key_jwt\" (a PEM private key: RSA for RS256/PS256, EC P-256 for ES256)",
            );
            return None;
        };
        match ClientKeyConfig::load(PathBuf::from(file), keys.id.clone(), audience) {
            Ok(client_key) => {
                self.note_readable_by_all(&format!("{path}.client_key_file"), file);
                Some(client_key)
            }
            Err(error) => {
                self.problem(format!("{path}.client_key_file"), error.to_string());
                None
            }
        }
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
