//! Value checks every section uses: required keys, durations, socket addresses, http(s) URLs,
//! and secrets given inline, as a file or as an environment variable.

use std::net::SocketAddr;
use std::time::Duration;

use url::Url;

use super::Checker;
use crate::secret::Secret;

/// The longest duration any key takes: ten years. Timers and deadlines are computed by adding
/// a duration to the current instant, which cannot reach past what the clock can count (a
/// `keepalive_timeout` of "300000000000y" made every slow request body panic its connection).
const LONGEST_DURATION: Duration = Duration::from_secs(3650 * 24 * 60 * 60);

impl Checker<'_> {
    pub(super) fn required<T>(&mut self, path: &str, value: Option<T>) -> Option<T> {
        if value.is_none() {
            self.problem(path, "is required");
        }
        value
    }

    /// A duration: refused when it does not parse, or is longer than [`LONGEST_DURATION`].
    pub(super) fn duration(
        &mut self,
        path: &str,
        value: Option<String>,
        default: Duration,
    ) -> Duration {
        match value {
            None => default,
            Some(text) => match humantime::parse_duration(text.trim()) {
                Ok(duration) if duration <= LONGEST_DURATION => duration,
                Ok(_) => {
                    self.problem(
                        path,
                        format!("`{text}` is longer than any duration Tollgate takes (3650 days)"),
                    );
                    default
                }
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

    pub(super) fn socket_addr(&mut self, path: &str, value: &str) -> Option<SocketAddr> {
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

    pub(super) fn url(&mut self, path: &str, value: &str) -> Option<Url> {
        match Url::parse(value) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                Some(url)
            }
            Ok(_) => {
                let shown = super::super::redis_target::shown(value);
                self.problem(path, format!("`{shown}` must be an http or https URL"));
                None
            }
            Err(error) => {
                let shown = super::super::redis_target::shown(value);
                self.problem(path, format!("`{shown}` is not a URL: {error}"));
                None
            }
        }
    }

    /// An issuer (a provider's, the token service's): an http or https URL without a query or
    /// a fragment (OpenID Connect Discovery §3: discovery appends its path, and `iss` is
    /// compared as written), and without a user name or password, which would be logged with
    /// every failed discovery and, for the token service, published in every token's `iss`.
    pub(super) fn issuer_url(&mut self, path: &str, value: &str) -> Option<Url> {
        let url = self.url(path, value)?;
        if url.query().is_some()
            || url.fragment().is_some()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            self.problem(
                path,
                "must not have a query, a fragment, or a user name or password",
            );
            return None;
        }
        Some(url)
    }

    /// Notes the secret file at `file` (the key `key` names it) when every user of the host
    /// may read it, for `config::warnings`.
    pub(super) fn note_readable_by_all(&mut self, key: &str, file: &str) {
        if super::super::readable_by_all(std::path::Path::new(file)) {
            self.readable_by_all.push(key.to_owned());
        }
    }

    /// Resolves a secret given inline, as `<key>_file` or as `<key>_env`; more than one is a
    /// problem.
    pub(super) fn secret(
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
        // One line end after the secret is the file's, or the file's a variable was made
        // from (`kubectl create secret --from-file`, then `secretKeyRef`), not the secret's.
        let without_line_end = |text: &str| {
            text.strip_suffix('\n')
                .map(|t| t.strip_suffix('\r').unwrap_or(t))
                .unwrap_or(text)
                .to_owned()
        };
        if let Some(file) = file {
            return match crate::named_file::read_to_string(file.as_ref()) {
                Ok(text) => {
                    self.note_readable_by_all(&format!("{path}_file"), &file);
                    Some(Secret::new(without_line_end(&text)))
                }
                Err(error) => {
                    self.problem(
                        format!("{path}_file"),
                        format!("cannot read {}: {error}", shown_path(&file)),
                    );
                    None
                }
            };
        }
        if let Some(name) = env_name {
            return match self.env.get(&name) {
                Some(value) => Some(Secret::new(without_line_end(value))),
                None => {
                    self.problem(
                        format!("{path}_env"),
                        format!("environment variable {} is not set", shown_env_name(&name)),
                    );
                    None
                }
            };
        }
        None
    }
}

pub(super) use crate::secret::shown_path;

/// A `*_env` value as a problem names it: in full when it reads like a variable name; else not,
/// as it may be the secret itself, written under the wrong key.
pub(super) fn shown_env_name(name: &str) -> String {
    // Upper case, as environment variables are named, and words joined by `_` (or one short
    // word): a token of letters and digits (base32) is not.
    let variable_like = (name.contains('_') || name.len() <= 12)
        && name.len() <= 64
        && !name.starts_with(|first: char| first.is_ascii_digit())
        && name
            .bytes()
            .all(|byte| byte.is_ascii_uppercase() || byte.is_ascii_digit() || byte == b'_');
    if variable_like && !name.is_empty() {
        format!("`{name}`")
    } else {
        format!(
            "named there ({} characters, not shown: is it the secret itself?)",
            name.chars().count()
        )
    }
}
