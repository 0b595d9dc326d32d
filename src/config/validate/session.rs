//! `[session]`: the store (cookie, memory, or Redis with its URLs, CA and key prefix), the cookie name,
//! the sealing secrets and the lifetimes.

use std::path::PathBuf;
use std::time::Duration;

use super::Checker;
use crate::config::raw::RawSession;
use crate::config::{RedisTarget, SessionConfig, SessionStoreKind};
use crate::secret::Secret;

/// The longest session cookie name: its chunks' names and values fit a browser's cookie.
const MAX_COOKIE_NAME: usize = 64;

impl Checker<'_> {
    /// `token_service_redis`: the token service keeps its state in Redis too (at the same
    /// `redis_url`).
    pub(super) fn session(&mut self, raw: RawSession, token_service_redis: bool) -> SessionConfig {
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
        let wants_redis = store == SessionStoreKind::Redis || token_service_redis;
        let redis = match (wants_redis, raw.redis_url) {
            (true, None) => {
                let needed_by = if store == SessionStoreKind::Redis {
                    "store = \"redis\""
                } else {
                    "token_service.store = \"redis\""
                };
                self.problem("session.redis_url", format!("is required with {needed_by}"));
                None
            }
            (true, Some(value)) => {
                let parsed = match value {
                    toml::Value::String(url) => Some(RedisTarget::parse(&[url])),
                    toml::Value::Array(items) => items
                        .into_iter()
                        .map(|item| item.as_str().map(str::to_owned))
                        .collect::<Option<Vec<String>>>()
                        .map(|nodes| RedisTarget::parse_cluster(&nodes)),
                    _ => None,
                };
                match parsed {
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
            (false, Some(_)) => {
                self.problem(
                    "session.redis_url",
                    "only used with store = \"redis\" (or token_service.store = \"redis\")",
                );
                None
            }
            (false, None) => None,
        };
        let redis_ca = match raw.redis_ca_file {
            None => None,
            // Nothing would read the file unless every link speaks TLS: a `redis://` server,
            // a Cluster node or Sentinels without TLS (their master is reached without it too).
            Some(_) if !redis.as_ref().is_some_and(RedisTarget::speaks_tls) => {
                self.problem(
                    "session.redis_ca_file",
                    "only used with a rediss:// (every Cluster node's) or rediss+sentinel:// \
                     redis_url",
                );
                None
            }
            Some(file) => match crate::named_file::read(file.as_ref()) {
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
        let redis_key_prefix = self.redis_key_prefix(wants_redis, raw.redis_key_prefix);
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
        } else if cookie_name.len() > MAX_COOKIE_NAME {
            // A chunk's value runs to `session::CHUNK_SIZE` bytes, near the browsers' 4 096
            // bytes a cookie (name and value), beyond which they drop it without a word (the
            // user signed in over and over): a short name keeps a margin.
            self.problem(
                "session.cookie_name",
                format!("must be at most {MAX_COOKIE_NAME} characters"),
            );
        }
        let secrets = self.session_secrets(raw.secrets, raw.secrets_file, raw.secrets_env);
        let lifetime = self.duration(
            "session.lifetime",
            raw.lifetime,
            Duration::from_secs(12 * 3600),
        );
        let idle_timeout_given = raw.idle_timeout.is_some();
        let idle_timeout = self.duration(
            "session.idle_timeout",
            raw.idle_timeout,
            Duration::from_secs(3600),
        );
        // Whole seconds from one: 0s would end every session as it starts (a login loop), and
        // stores keep seconds.
        for (path, duration) in [
            ("session.lifetime", lifetime),
            ("session.idle_timeout", idle_timeout),
        ] {
            if duration.as_secs() == 0 {
                self.problem(
                    path,
                    "must be at least 1s (0s would end every session at once)",
                );
            }
        }
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
            idle_timeout_given,
            refresh: raw.refresh.unwrap_or(true),
            refresh_before,
            state_file: raw.state_file.map(PathBuf::from),
            redis_ca,
            redis,
            redis_key_prefix,
        }
    }

    /// `session.redis_key_prefix`: visible ASCII without `{` and `}` (a hash tag in the prefix
    /// would put every key of a Cluster on one slot), at most 64 bytes.
    /// `wants_redis`: the session store or the token service keeps its state in Redis.
    fn redis_key_prefix(&mut self, wants_redis: bool, prefix: Option<String>) -> String {
        const DEFAULT: &str = "tollgate:";
        let Some(prefix) = prefix else {
            return DEFAULT.to_owned();
        };
        if !wants_redis {
            self.problem(
                "session.redis_key_prefix",
                "only used with store = \"redis\" (or token_service.store = \"redis\")",
            );
        } else if prefix.is_empty()
            || prefix.len() > 64
            || !prefix
                .bytes()
                .all(|byte| byte.is_ascii_graphic() && byte != b'{' && byte != b'}')
        {
            self.problem(
                "session.redis_key_prefix",
                "must be 1 to 64 visible ASCII characters without `{` and `}`",
            );
        }
        prefix
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
            match crate::named_file::read_to_string(file.as_ref()) {
                Ok(text) => {
                    self.note_readable_by_all("session.secrets_file", &file);
                    from_text(&text)
                }
                Err(error) => {
                    self.problem(
                        "session.secrets_file",
                        format!(
                            "cannot read {}: {error}",
                            super::primitives::shown_path(&file)
                        ),
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
                        format!(
                            "environment variable {} is not set",
                            super::primitives::shown_env_name(&name)
                        ),
                    );
                    return Vec::new();
                }
            }
        } else {
            Vec::new()
        };
        for (index, line) in lines.iter().enumerate() {
            // A note above the secrets (`# newest first`) would else be the first secret, the
            // one that seals, and a long one would pass the length rule: a known text.
            if line.starts_with('#') {
                self.problem(
                    format!("session.secrets[{index}]"),
                    "starts with `#`: the secrets hold one secret per line and no comments",
                );
                continue;
            }
            if line.len() < 32 {
                self.problem(
                    format!("session.secrets[{index}]"),
                    "must be at least 32 characters (for example `openssl rand -base64 32`)",
                );
            }
        }
        lines.into_iter().map(Secret::new).collect()
    }
}
