//! Secrets written into the config file itself, and the warning when that file is readable by
//! every user of the host: a secret given as `<key>_file` is warned about when its own file is
//! (`config::warnings`), but `client_secret = "…"` in a 0644 `/etc/tollgate/config.toml` was
//! not.

use std::path::Path;

/// The key paths of the secrets `toml_text` gives inline: `server.admin_token`,
/// `session.secrets`, each provider's `client_secret`, and a `session.redis_url` or
/// `telemetry.otlp_endpoint` that holds a user name or password. Text that is not TOML names none (loading it reports why).
pub fn inline_secrets(toml_text: &str) -> Vec<String> {
    let Ok(table) = toml_text.parse::<toml::Table>() else {
        return Vec::new();
    };
    let section = |name: &str| table.get(name).and_then(toml::Value::as_table);
    let mut found = Vec::new();
    if section("server").is_some_and(|server| server.contains_key("admin_token")) {
        found.push("server.admin_token".to_owned());
    }
    if let Some(session) = section("session") {
        if session.contains_key("secrets") {
            found.push("session.secrets".to_owned());
        }
        let urls: Vec<&str> = match session.get("redis_url") {
            Some(toml::Value::String(url)) => vec![url.as_str()],
            Some(toml::Value::Array(urls)) => urls.iter().filter_map(toml::Value::as_str).collect(),
            _ => Vec::new(),
        };
        if urls.iter().any(|url| holds_credentials(url)) {
            found.push("session.redis_url".to_owned());
        }
    }
    if section("telemetry")
        .and_then(|telemetry| telemetry.get("otlp_endpoint"))
        .and_then(toml::Value::as_str)
        .is_some_and(holds_credentials)
    {
        found.push("telemetry.otlp_endpoint".to_owned());
    }
    if let Some(providers) = table.get("provider").and_then(toml::Value::as_array) {
        for (index, provider) in providers.iter().enumerate() {
            if provider
                .as_table()
                .is_some_and(|provider| provider.contains_key("client_secret"))
            {
                found.push(format!("provider[{index}].client_secret"));
            }
        }
    }
    found
}

/// Whether a URL names a user or password in its authority (`redis://:password@host`, also
/// with several hosts after the `@`, as Sentinel URLs have), or a password in its query, where
/// the Redis client reads one for a Unix socket (`unix:///run/redis.sock?pass=…`).
fn holds_credentials(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let query = rest
        .split_once('?')
        .map_or("", |(_, query)| query.split('#').next().unwrap_or_default());
    authority.contains('@')
        || url::form_urlencoded::parse(query.as_bytes())
            .any(|(name, _)| matches!(&*name, "pass" | "password"))
}

/// The warning for the config file at `path` holding `toml_text`: `None` unless it gives
/// secrets inline and every user of the host may read it.
pub fn readable_file_warning(path: &Path, toml_text: &str) -> Option<String> {
    let secrets = inline_secrets(toml_text);
    if secrets.is_empty() || !super::readable_by_all(path) {
        return None;
    }
    Some(format!(
        "{}: the config file gives secrets inline ({}) and is readable by every user of this \
         host (its mode lets others read it); make it readable by Tollgate's user or group \
         only (chmod o-r), or give each secret as `<key>_file` or `<key>_env`",
        path.display(),
        secrets.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_inline_secret_is_named_and_nothing_else() {
        let text = r#"
[server]
admin_token = "an-admin-token-of-sixteen"
[session]
secrets = ["a-session-secret-a-session-secret-a-session"]
redis_url = ["redis://node-a:6379", "redis://:password@node-b:6379"]
[telemetry]
otlp_endpoint = "https://user:token@collector.example:4318"
[[provider]]
name = "a"
client_secret_file = "/run/secrets/a"
[[provider]]
name = "b"
client_secret = "inline"
"#;
        assert_eq!(
            inline_secrets(text),
            [
                "server.admin_token",
                "session.secrets",
                "session.redis_url",
                "telemetry.otlp_endpoint",
                "provider[1].client_secret"
            ]
        );
        let by_reference = r#"
[server]
admin_token_env = "ADMIN_TOKEN"
[session]
secrets_file = "/run/secrets/session"
redis_url = "redis+sentinel://sentinel-a:26379,sentinel-b:26379/mymaster"
[[provider]]
name = "a"
client_secret_file = "/run/secrets/a"
"#;
        assert!(inline_secrets(by_reference).is_empty());
        assert!(holds_credentials(
            "rediss+sentinel://user:pw@sentinel-a:26379,sentinel-b:26379/mymaster"
        ));
        assert!(!holds_credentials("redis://redis.example:6379/0?user=x@y"));
        assert!(inline_secrets("not [ toml").is_empty());
        assert_eq!(
            inline_secrets("[session]\nredis_url = \"unix:///run/redis.sock?db=1&pass=hunter2\""),
            ["session.redis_url"]
        );
        assert!(
            inline_secrets("[session]\nredis_url = \"unix:///run/redis.sock?db=1\"").is_empty()
        );
    }

    #[test]
    fn a_file_with_inline_secrets_is_warned_about_only_when_others_may_read_it() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("tollgate-inline-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.toml");
        let text = "[[provider]]\nname = \"a\"\nclient_secret = \"inline\"\n";
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let warning = readable_file_warning(&path, text).unwrap();
        assert!(warning.contains("provider[0].client_secret"), "{warning}");
        assert!(warning.contains("readable by every user"), "{warning}");
        assert_eq!(
            readable_file_warning(&path, "[[provider]]\nname = \"a\"\n"),
            None,
            "nothing inline"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(readable_file_warning(&path, text), None, "not for others");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
