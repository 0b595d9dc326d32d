//! Sentinel: the current master is asked of the sentinels at every connect, so a failover is
//! followed; the URL's credentials, database and TLS are the master's.

use std::sync::atomic::{AtomicBool, Ordering};

use redis::RedisResult;

/// The sentinels, asked for the current master at every connect. The URL's password is the
/// master's; sentinels are asked without it first and with it once one says it needs it.
pub(super) struct Sentinels {
    open: tokio::sync::Mutex<redis::sentinel::SentinelClient>,
    /// With the credentials, when the URL has a password.
    with_auth: Option<tokio::sync::Mutex<redis::sentinel::SentinelClient>>,
    /// Whether a sentinel asked for the password.
    needs_auth: AtomicBool,
}

impl Sentinels {
    pub(super) fn new(
        sentinels: &[String],
        service: &str,
        auth: &crate::config::SentinelAuth,
        resp3: bool,
    ) -> RedisResult<Self> {
        let mut settings = redis::RedisConnectionInfo::default().set_db(auth.db);
        if let Some(username) = &auth.username {
            settings = settings.set_username(username);
        }
        if let Some(password) = &auth.password {
            settings = settings.set_password(password.expose());
        }
        if resp3 {
            settings = settings.set_protocol(redis::ProtocolVersion::RESP3);
        }
        let mut node = redis::sentinel::SentinelNodeConnectionInfo::default()
            .set_redis_connection_info(settings);
        if auth.tls {
            node = node.set_tls_mode(redis::TlsMode::Secure);
        }
        let client = |urls: Vec<redis::ConnectionInfo>| {
            redis::sentinel::SentinelClient::build(
                urls,
                service,
                Some(node.clone()),
                redis::sentinel::SentinelServerType::Master,
            )
            .map(tokio::sync::Mutex::new)
        };
        let infos = |with_credentials: bool| -> RedisResult<Vec<redis::ConnectionInfo>> {
            sentinels
                .iter()
                .map(|url| {
                    let info = redis::IntoConnectionInfo::into_connection_info(url.as_str())?;
                    if !with_credentials {
                        return Ok(info);
                    }
                    let mut settings = info.redis_settings().clone();
                    if let Some(username) = &auth.username {
                        settings = settings.set_username(username);
                    }
                    if let Some(password) = &auth.password {
                        settings = settings.set_password(password.expose());
                    }
                    Ok(info.set_redis_settings(settings))
                })
                .collect()
        };
        Ok(Self {
            open: client(infos(false)?)?,
            with_auth: match &auth.password {
                Some(_) => Some(client(infos(true)?)?),
                None => None,
            },
            needs_auth: AtomicBool::new(false),
        })
    }

    /// A client for the current master.
    pub(super) async fn master(&self) -> RedisResult<redis::Client> {
        if let Some(with_auth) = &self.with_auth
            && self.needs_auth.load(Ordering::Relaxed)
        {
            return with_auth.lock().await.async_get_client().await;
        }
        match self.open.lock().await.async_get_client().await {
            Err(error) if self.with_auth.is_some() && asks_for_auth(&error) => {
                self.needs_auth.store(true, Ordering::Relaxed);
                match &self.with_auth {
                    Some(with_auth) => with_auth.lock().await.async_get_client().await,
                    None => Err(error),
                }
            }
            other => other,
        }
    }
}

/// Whether a sentinel refused to answer without a password.
fn asks_for_auth(error: &redis::RedisError) -> bool {
    let text = error.to_string();
    text.contains("NOAUTH") || text.contains("Authentication required")
}
