//! Sentinel: the current master is asked of the sentinels at every connect, so a failover is
//! followed; the URL's credentials, database and TLS are the master's. The sentinels also say
//! whether a master with no replica connected may take a write alone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use redis::{ConnectionAddr, ConnectionInfo, RedisResult};

use super::TIMEOUT;

/// The sentinels, asked for the current master at every connect. The URL's password is the
/// master's; sentinels are asked without it first and with it once one says it needs it.
pub(super) struct Sentinels {
    open: tokio::sync::Mutex<redis::sentinel::SentinelClient>,
    /// With the credentials, when the URL has a password.
    with_auth: Option<tokio::sync::Mutex<redis::sentinel::SentinelClient>>,
    /// Whether a sentinel asked for the password.
    needs_auth: AtomicBool,
    /// The sentinels, without and (when the URL has a password) with the credentials.
    addresses: Vec<ConnectionInfo>,
    addresses_with_auth: Option<Vec<ConnectionInfo>>,
    /// The name the sentinels know the master by.
    service: String,
}

impl Sentinels {
    pub(super) fn new(
        sentinels: &[String],
        service: &str,
        auth: &crate::config::SentinelAuth,
        resp3: bool,
        certificates: Option<redis::TlsCertificates>,
    ) -> RedisResult<Self> {
        // The master's credentials, database and protocol, and over TLS the config's roots
        // for the master as for the sentinels (else the crate reads the system's store at
        // every connect); the sentinels' credentials only for the client that sends them.
        let client = |sentinels: &[ConnectionInfo], with_credentials: bool| {
            let mut builder = redis::sentinel::SentinelClientBuilder::new(
                sentinels.iter().map(|sentinel| sentinel.addr().clone()),
                service,
                redis::sentinel::SentinelServerType::Master,
            )?
            .set_client_to_redis_db(auth.db);
            if let Some(username) = &auth.username {
                builder = builder.set_client_to_redis_username(username);
                if with_credentials {
                    builder = builder.set_client_to_sentinel_username(username);
                }
            }
            if let Some(password) = &auth.password {
                builder = builder.set_client_to_redis_password(password.expose());
                if with_credentials {
                    builder = builder.set_client_to_sentinel_password(password.expose());
                }
            }
            if resp3 {
                builder = builder.set_client_to_redis_protocol(redis::ProtocolVersion::RESP3);
            }
            if auth.tls {
                builder = builder.set_client_to_redis_tls_mode(redis::TlsMode::Secure);
                if let Some(certificates) = &certificates {
                    builder = builder.set_client_to_redis_certificates(certificates.clone());
                }
            }
            builder.build().map(tokio::sync::Mutex::new)
        };
        let infos = |with_credentials: bool| -> RedisResult<Vec<redis::ConnectionInfo>> {
            sentinels
                .iter()
                .map(|url| {
                    let info = with_roots(
                        certificates.as_ref(),
                        redis::IntoConnectionInfo::into_connection_info(url.as_str())?,
                    )?;
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
        let addresses = infos(false)?;
        let addresses_with_auth = match &auth.password {
            Some(_) => Some(infos(true)?),
            None => None,
        };
        Ok(Self {
            open: client(&addresses, false)?,
            with_auth: match &addresses_with_auth {
                Some(addresses) => Some(client(addresses, true)?),
                None => None,
            },
            needs_auth: AtomicBool::new(false),
            addresses,
            addresses_with_auth,
            service: service.to_owned(),
        })
    }

    /// Whether `master`, which has no replica connected, may take a write alone: the first
    /// sentinel that answers names it the master and knows no replica that could take over
    /// from it ([`could_take_over`]). Such a replica is one a failover may promote, or has just
    /// promoted, over `master`, which goes on taking writes until it is demoted and loses
    /// them then. `false` when no sentinel answers.
    pub(super) async fn may_write_alone(&self, master: &ConnectionAddr) -> bool {
        for (index, open) in self.addresses.iter().enumerate() {
            let with_auth = self
                .addresses_with_auth
                .as_ref()
                .and_then(|addresses| addresses.get(index));
            let first = match with_auth {
                Some(with_auth) if self.needs_auth.load(Ordering::Relaxed) => with_auth,
                _ => open,
            };
            let answer = match self.ask_alone(first, master).await {
                Err(error) if asks_for_auth(&error) && with_auth.is_some() => {
                    self.needs_auth.store(true, Ordering::Relaxed);
                    match with_auth {
                        Some(with_auth) => self.ask_alone(with_auth, master).await,
                        None => Err(error),
                    }
                }
                answer => answer,
            };
            match answer {
                Ok(alone) => return alone,
                Err(error) => {
                    tracing::debug!(%error, "a sentinel did not say whether the master is alone")
                }
            }
        }
        false
    }

    async fn ask_alone(
        &self,
        sentinel: &ConnectionInfo,
        master: &ConnectionAddr,
    ) -> RedisResult<bool> {
        let ask = async {
            let mut connection = redis::Client::open(sentinel.clone())?
                .get_multiplexed_async_connection()
                .await?;
            let named: Option<(String, u16)> = redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(&self.service)
                .query_async(&mut connection)
                .await?;
            if !named.is_some_and(|(host, port)| is_address(master, &host, port)) {
                return Ok(false);
            }
            let replicas: Vec<HashMap<String, String>> = redis::cmd("SENTINEL")
                .arg("REPLICAS")
                .arg(&self.service)
                .query_async(&mut connection)
                .await?;
            Ok(!replicas.iter().any(could_take_over))
        };
        tokio::time::timeout(TIMEOUT, ask)
            .await
            .unwrap_or_else(|_| Err(super::timed_out()))
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

/// `info` trusting `certificates` when it speaks TLS (else the redis crate would read the
/// system's store at every connect).
fn with_roots(
    certificates: Option<&redis::TlsCertificates>,
    info: ConnectionInfo,
) -> RedisResult<ConnectionInfo> {
    match certificates {
        Some(certificates) if matches!(info.addr(), ConnectionAddr::TcpTls { .. }) => {
            Ok(redis::Client::build_with_tls(info, certificates.clone())?
                .get_connection_info()
                .clone())
        }
        _ => Ok(info),
    }
}

/// Whether `address` is `host`:`port`, as a sentinel names a server.
fn is_address(address: &ConnectionAddr, host: &str, port: u16) -> bool {
    match address {
        ConnectionAddr::Tcp(at, on)
        | ConnectionAddr::TcpTls {
            host: at, port: on, ..
        } => at == host && *on == port,
        _ => false,
    }
}

/// Whether a replica (an entry of `SENTINEL REPLICAS`) could be promoted over its master with
/// writes the master took alone missing: the sentinels see it up (neither `s_down`, `o_down`
/// nor `disconnected`) and it last said its link to the master was fine. A replica just
/// promoted keeps saying so until the sentinels make it the master (it no longer reports a
/// link, so its last report stands). An old master the sentinels have yet to demote, or one
/// still resynchronising, reports no working link: it gets whatever the master has once it
/// does, so the master writes alone meanwhile.
fn could_take_over(replica: &HashMap<String, String>) -> bool {
    let up = replica.get("flags").is_some_and(|flags| {
        !flags
            .split(',')
            .any(|flag| matches!(flag, "s_down" | "o_down" | "disconnected"))
    });
    up && replica.get("master-link-status").map(String::as_str) == Some("ok")
}

/// Whether a sentinel refused to answer without a password.
fn asks_for_auth(error: &redis::RedisError) -> bool {
    let text = error.to_string();
    text.contains("NOAUTH") || text.contains("Authentication required")
}
