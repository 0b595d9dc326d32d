//! `[token_service]` with its `[[token_service.client]]` and `[[token_service.user]]` entries,
//! and the providers that are the token service itself.

use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::Checker;
use crate::config::raw::{RawClient, RawTokenService, RawUser};
use crate::config::{
    ClientConfig, GrantType, ProviderConfig, TokenServiceConfig, TokenStoreKind, UserConfig,
};
use crate::secret::Secret;

/// The longest `token_service.token_lifetime`.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(366 * 24 * 3600);

impl Checker<'_> {
    pub(super) fn token_service(
        &mut self,
        raw: RawTokenService,
        providers: &[ProviderConfig],
        session_lifetime: Duration,
    ) -> Option<TokenServiceConfig> {
        let issuer = self.required("token_service.issuer", raw.issuer);
        let issuer = issuer.and_then(|text| self.issuer_url("token_service.issuer", &text));
        let token_lifetime = self.duration(
            "token_service.token_lifetime",
            raw.token_lifetime,
            Duration::from_secs(30 * 60),
        );
        // A token's `exp` must stay a date a validator takes (Tollgate's own refuses years
        // past 9999), and a token that cannot expire cannot be had.
        if token_lifetime.as_secs() == 0 || token_lifetime > MAX_TOKEN_LIFETIME {
            self.problem("token_service.token_lifetime", "must be from 1s to 366d");
        }
        let signing_key_file = raw.signing_key_file.map(PathBuf::from);
        if let Some(file) = &signing_key_file {
            // Generated at start when missing; one that is there must be a key.
            self.signing_key_file("token_service.signing_key_file", file, true);
        }
        let retired_key_files: Vec<PathBuf> = raw
            .retired_key_files
            .unwrap_or_default()
            .into_iter()
            .map(PathBuf::from)
            .collect();
        for (index, file) in retired_key_files.iter().enumerate() {
            self.signing_key_file(
                &format!("token_service.retired_key_files[{index}]"),
                file,
                false,
            );
        }
        let store = match raw.store.as_deref() {
            None | Some("memory") => TokenStoreKind::Memory,
            Some("redis") => TokenStoreKind::Redis,
            Some(other) => {
                self.problem(
                    "token_service.store",
                    format!("`{other}` is not one of memory, redis"),
                );
                TokenStoreKind::Memory
            }
        };
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
        let mut users: Vec<UserConfig> = Vec::new();
        for (index, user) in raw.user.into_iter().enumerate() {
            let Some(user) = self.user(&format!("token_service.user[{index}]"), user) else {
                continue;
            };
            // A login takes the first user of its name: a later one (an overlay meant to
            // replace a password or groups) would be silently ignored.
            if users
                .iter()
                .any(|earlier| earlier.username == user.username)
            {
                self.problem(
                    format!("token_service.user[{index}].username"),
                    format!("`{}` is used by an earlier user", user.username),
                );
            }
            users.push(user);
        }
        self.subjects_stay_apart(&clients, &users);
        Some(TokenServiceConfig {
            issuer: issuer?,
            signing_key_file,
            retired_key_files,
            token_lifetime,
            grant_lifetime: session_lifetime,
            store,
            clients,
            users,
        })
    }

    /// SPEC §7: a token's `sub` is `<source>:<identity>`, so one `source` must not give
    /// subjects to two kinds of identity that may share a name: the users of two upstream
    /// providers, an upstream's users and local users or a machine client, a local user and a
    /// machine client of the same name. One could otherwise be taken for the other (an
    /// upstream user whose `sub` is `admin` would be the local user `admin`). Every client's
    /// `source` defaults to `local`, so this is what a forgotten `source` leads to.
    fn subjects_stay_apart(&mut self, clients: &[ClientConfig], users: &[UserConfig]) {
        let mut seen: Vec<(&str, Subjects<'_>, &str)> = Vec::new();
        for (index, client) in clients.iter().enumerate() {
            let mut kinds = Vec::new();
            if client.grants.contains(&GrantType::AuthorizationCode) {
                kinds.push(match &client.login_provider {
                    Some(provider) => Subjects::Upstream(provider),
                    None => Subjects::LocalUsers,
                });
            }
            if client.grants.contains(&GrantType::ClientCredentials) {
                kinds.push(Subjects::Machine(&client.client_id));
            }
            for kind in kinds {
                let clash = seen.iter().find(|(source, earlier, _)| {
                    *source == client.source && earlier.may_share_a_name(&kind, users)
                });
                if let Some((_, earlier, earlier_client)) = clash {
                    self.problem(
                        format!("token_service.client[{index}].source"),
                        format!(
                            "`{}` would name {} and {} of client `{earlier_client}` alike; give \
                             one of them another `source`",
                            client.source,
                            kind.describe(),
                            earlier.describe()
                        ),
                    );
                }
                seen.push((&client.source, kind, &client.client_id));
            }
        }
    }

    /// A problem at `path` unless `file` holds a signing key `serve` can load (or, when
    /// `may_be_missing`, is not there yet). The key is never quoted.
    fn signing_key_file(&mut self, path: &str, file: &std::path::Path, may_be_missing: bool) {
        use crate::secret::shown;
        match crate::named_file::read(file) {
            Ok(pem) => {
                if let Err(error) = crate::jose::SigningKey::from_pem(&pem) {
                    self.problem(path, format!("{}: {error}", shown(file)));
                }
            }
            // Not there yet: `serve` makes the key there, unless the value is no path but a key
            // itself (a PEM rendered into it), which would name the file it writes.
            Err(error)
                if may_be_missing
                    && error.kind() == std::io::ErrorKind::NotFound
                    && !is_pem(&file.to_string_lossy()) => {}
            Err(error) => self.problem(path, format!("{} cannot be read: {error}", shown(file))),
        }
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
            && let Err(problem) = usable_hash(hash.expose())
        {
            self.problem(format!("{path}.client_secret_hash"), problem);
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
        if let Err(problem) = usable_hash(&password_hash) {
            self.problem(format!("{path}.password_hash"), problem);
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
    pub(super) fn local_providers(
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
            // Its tokens' `iss`, and RFC 9207's at the callback, are compared with this string.
            let issued_as = token_service.issuer.as_str().trim_end_matches('/');
            if provider.issuer != issued_as {
                self.problem(
                    format!("provider[{index}].issuer"),
                    format!("names the token service, whose tokens say `iss` = `{issued_as}`: write it exactly so (without a trailing slash)"),
                );
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

/// Whether a provider's issuer string names the token service's issuer URL.
pub fn is_same_issuer(provider_issuer: &str, token_service_issuer: &Url) -> bool {
    provider_issuer.trim_end_matches('/') == token_service_issuer.as_str().trim_end_matches('/')
}

/// Whose `sub` a client's tokens carry.
#[derive(Debug, Clone, Copy)]
enum Subjects<'a> {
    /// The configured users, by `username` (the login form).
    LocalUsers,
    /// The users of this upstream provider, by its `sub` (`login_provider`).
    Upstream(&'a str),
    /// The client itself, by `client_id` (`client_credentials`).
    Machine(&'a str),
}

impl Subjects<'_> {
    /// Whether an identity of `self` and one of `other` may have the same name.
    fn may_share_a_name(&self, other: &Self, users: &[UserConfig]) -> bool {
        match (self, other) {
            (Self::LocalUsers, Self::LocalUsers) | (Self::Machine(_), Self::Machine(_)) => false,
            (Self::Upstream(one), Self::Upstream(other)) => one != other,
            (Self::Upstream(_), _) | (_, Self::Upstream(_)) => true,
            (Self::LocalUsers, Self::Machine(client))
            | (Self::Machine(client), Self::LocalUsers) => {
                users.iter().any(|user| user.username == *client)
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::LocalUsers => "the local users".to_owned(),
            Self::Upstream(provider) => format!("the users of provider `{provider}`"),
            Self::Machine(client) => format!("the machine client `{client}`"),
        }
    }
}

/// Whether a `*_file` value is PEM text rather than a path (a key rendered into the key that
/// names its file).
fn is_pem(value: &str) -> bool {
    value.contains("-----BEGIN") || value.contains('\n')
}

/// The most memory (KiB) and passes a configured argon2 hash may ask each check for (lanes
/// share the memory, and run one after another here, so they cost nothing more):
/// a check runs with the costs its hash names, and an unauthenticated request asks for one,
/// so a hash asking for terabytes (`m=4294967295`) or years (`t=4294967295`) would take the
/// process down or hold a check's place for ever. `tollgate hash-secret` makes 19 MiB, 2, 1;
/// libsodium's "moderate" is 256 MiB.
const HASH_MEMORY_MOST: u32 = 256 * 1024;
const HASH_PASSES_MOST: u32 = 16;

/// Whether a configured hash is an argon2 hash (with its salt and output) whose costs stay
/// within the bounds above; else the problem.
fn usable_hash(text: &str) -> Result<(), String> {
    let make_one = "make one with `tollgate hash-secret`";
    let hash = argon2::PasswordHash::new(text)
        .map_err(|_| format!("is not a PHC-format hash ({make_one})"))?;
    if !matches!(hash.algorithm.as_str(), "argon2id" | "argon2i" | "argon2d")
        || hash.salt.is_none()
        || hash.hash.is_none()
    {
        return Err(format!(
            "is not an argon2 hash with its salt and output ({make_one})"
        ));
    }
    let params = argon2::Params::try_from(&hash)
        .map_err(|error| format!("has unusable argon2 parameters: {error} ({make_one})"))?;
    if params.m_cost() > HASH_MEMORY_MOST || params.t_cost() > HASH_PASSES_MOST {
        return Err(format!(
            "asks more of each check than Tollgate runs (at most m={HASH_MEMORY_MOST} KiB, \
             t={HASH_PASSES_MOST}; {make_one})"
        ));
    }
    Ok(())
}
