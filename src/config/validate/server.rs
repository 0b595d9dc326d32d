//! `[server]`: listen addresses, public URL, trusted proxies, allowed redirect domains, admin
//! token, leeway, log format, connection timeouts and the listener's TLS certificate.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::Checker;
use crate::config::raw::RawServer;
use crate::config::{ListenerTls, LogFormat, ServerConfig};
use crate::login::redirect::AllowedRedirectDomain;

/// The longest `server.leeway` accepted.
const MAX_LEEWAY: Duration = Duration::from_secs(300);

/// `server.max_connections` when unset (SPEC §3).
const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

impl Checker<'_> {
    pub(super) fn server(&mut self, raw: RawServer) -> ServerConfig {
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
        // Every address Tollgate builds appends to it (`/callback`, `/signin`, `/`): a query or
        // a fragment would swallow them, and a user name or password would be sent to browsers.
        if let Some(url) = &public_url
            && (url.query().is_some()
                || url.fragment().is_some()
                || !url.username().is_empty()
                || url.password().is_some())
        {
            self.problem(
                "server.public_url",
                "must not have a query, a fragment, or a user name or password",
            );
        }
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
        // Clock skew is seconds; a leeway of days would accept tokens that expired days ago.
        if leeway > MAX_LEEWAY {
            self.problem(
                "server.leeway",
                "is clock skew, at most 5m: a longer one accepts expired tokens for as long",
            );
        }
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
        let tls = self.listener_tls(raw.tls_cert_file, raw.tls_key_file);
        let max_connections = self.max_connections(raw.max_connections);
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
            tls,
            max_connections,
        }
    }

    /// `max_connections`: a whole number from 1 up, as a TOML integer or (from an environment
    /// override) its text; 10 000 when unset.
    fn max_connections(&mut self, raw: Option<toml::Value>) -> usize {
        const KEY: &str = "server.max_connections";
        let number = match raw {
            None => return DEFAULT_MAX_CONNECTIONS,
            Some(toml::Value::Integer(number)) => Some(number),
            Some(toml::Value::String(text)) => text.trim().parse::<i64>().ok(),
            Some(_) => None,
        };
        match number.and_then(|number| usize::try_from(number).ok()) {
            // Tokio's semaphore holds at most `MAX_PERMITS` (and panics beyond it).
            Some(number) if (1..=tokio::sync::Semaphore::MAX_PERMITS).contains(&number) => number,
            _ => {
                self.problem(
                    KEY,
                    "must be a whole number of connections, at least 1 (and at most 2^61 - 1)",
                );
                DEFAULT_MAX_CONNECTIONS
            }
        }
    }

    /// `tls_cert_file` and `tls_key_file`: both or neither, read and checked to belong together.
    fn listener_tls(
        &mut self,
        cert_file: Option<String>,
        key_file: Option<String>,
    ) -> Option<ListenerTls> {
        let (cert_file, key_file) = match (cert_file, key_file) {
            (None, None) => return None,
            (Some(cert_file), Some(key_file)) => {
                (PathBuf::from(cert_file), PathBuf::from(key_file))
            }
            (Some(_), None) => {
                self.problem("server.tls_key_file", "required with server.tls_cert_file");
                return None;
            }
            (None, Some(_)) => {
                self.problem("server.tls_cert_file", "required with server.tls_key_file");
                return None;
            }
        };
        match crate::tls::load_certified_key(&cert_file, &key_file) {
            Ok(key) => Some(ListenerTls {
                cert_file,
                key_file,
                key: std::sync::Arc::new(key),
            }),
            Err(error) => {
                let key = match &error {
                    crate::tls::TlsError::NoKey(_) => "server.tls_key_file",
                    crate::tls::TlsError::Read { path, .. } if *path == key_file => {
                        "server.tls_key_file"
                    }
                    _ => "server.tls_cert_file",
                };
                self.problem(key, error.to_string());
                None
            }
        }
    }
}
