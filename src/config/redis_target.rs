//! Where Redis is (`session.redis_url`, SPEC §3): one server, Sentinels naming a master
//! (with the password, user, db and TLS that reach it), or Cluster nodes.

use crate::secret::Secret;

/// Where Redis is. Its `Debug` leaves out the passwords that URLs hold.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server.
    Standalone(String),
    /// Sentinels and the master they watch.
    Sentinel {
        /// `redis://host:port` (or `rediss://`) of each sentinel, without credentials.
        sentinels: Vec<String>,
        /// The master's service name.
        service: String,
        /// How to log in at the master (and at a sentinel that requires a password).
        auth: SentinelAuth,
    },
    /// Cluster nodes to start from.
    Cluster(Vec<String>),
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Standalone(url) => formatter
                .debug_tuple("Standalone")
                .field(&shown(url))
                .finish(),
            Self::Sentinel {
                sentinels,
                service,
                auth,
            } => formatter
                .debug_struct("Sentinel")
                .field("sentinels", sentinels)
                .field("service", service)
                .field("auth", auth)
                .finish(),
            Self::Cluster(nodes) => formatter
                .debug_tuple("Cluster")
                .field(&nodes.iter().map(|node| shown(node)).collect::<Vec<_>>())
                .finish(),
        }
    }
}

/// The master's credentials, database and TLS of a Sentinel URL.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SentinelAuth {
    /// ACL user name, when not `default`.
    pub username: Option<String>,
    /// The master's password (also tried at sentinels that require one).
    pub password: Option<Secret<String>>,
    /// The database number.
    pub db: i64,
    /// `rediss+sentinel://`: TLS to the sentinels and the master.
    pub tls: bool,
}

impl RedisTarget {
    /// Reads `session.redis_url`: a string (`redis://`, `rediss://`, `redis+sentinel://`) or a
    /// list of URLs (Cluster). A Sentinel URL is
    /// `redis+sentinel://[[user]:password@]host:port[,host:port…]/service[/db]`.
    ///
    /// # Errors
    /// A message for `tollgate check`.
    pub fn parse(urls: &[String]) -> Result<Self, String> {
        match urls {
            [] => Err("is empty".to_owned()),
            [single]
                if single.starts_with("redis+sentinel://")
                    || single.starts_with("rediss+sentinel://") =>
            {
                Self::parse_sentinel(single)
            }
            [single] => {
                Self::check_url(single)?;
                Ok(Self::Standalone(single.clone()))
            }
            nodes => {
                for node in nodes {
                    Self::check_url(node)?;
                }
                Ok(Self::Cluster(nodes.to_vec()))
            }
        }
    }

    /// Reads a `session.redis_url` written as a TOML list: a Redis Cluster's seed nodes, one
    /// or more (SPEC §3: a list is a Cluster; a single node, a Kubernetes Service in front of
    /// the Cluster say, read as a standalone server would meet `MOVED` for most keys).
    ///
    /// # Errors
    /// A message for `tollgate check`.
    pub fn parse_cluster(nodes: &[String]) -> Result<Self, String> {
        if nodes.is_empty() {
            return Err("is empty".to_owned());
        }
        for node in nodes {
            if node.starts_with("redis+sentinel://") || node.starts_with("rediss+sentinel://") {
                return Err(
                    "a list names a Redis Cluster's nodes; a Sentinel URL is a string".to_owned(),
                );
            }
            Self::check_url(node)?;
        }
        Ok(Self::Cluster(nodes.to_vec()))
    }

    /// A `redis://` or `rediss://` URL without a fragment: the Redis client reads `#insecure`
    /// as "no certificate checks", which this build refuses at every connection, after
    /// `check` said the config was fine.
    fn check_url(url: &str) -> Result<(), String> {
        let parsed = redis::parse_redis_url(url)
            .ok_or_else(|| format!("`{}` is not a redis:// or rediss:// URL", shown(url)))?;
        if parsed.fragment().is_some() {
            return Err(format!(
                "`{}` has a fragment (`#…`): a Redis URL takes none, and certificates are \
                 always checked (use `redis_ca_file` for a private CA)",
                shown(url)
            ));
        }
        Ok(())
    }

    /// Whether every link to this target speaks TLS (`rediss://`, each Cluster node's
    /// `rediss://`, `rediss+sentinel://`): only then is a CA file of any use.
    #[must_use]
    pub fn speaks_tls(&self) -> bool {
        let rediss =
            |url: &str| redis::parse_redis_url(url).is_some_and(|url| url.scheme() == "rediss");
        match self {
            Self::Standalone(url) => rediss(url),
            Self::Sentinel { auth, .. } => auth.tls,
            Self::Cluster(nodes) => nodes.iter().all(|node| rediss(node)),
        }
    }

    fn parse_sentinel(url: &str) -> Result<Self, String> {
        let tls = url.starts_with("rediss+");
        let rest = url.split_once("://").map_or("", |(_, rest)| rest);
        // The credentials end at the last `@` (hosts, service and db hold none), before the
        // path is looked for: a password pasted without percent-encoding may hold `/`, which
        // would otherwise be read as the service and quoted in a problem.
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((userinfo, _)) if userinfo.contains(',') => {
                return Err(
                    "a Sentinel URL has one user and password, before the first host \
                     (write `,` in a password as %2C)"
                        .to_owned(),
                );
            }
            Some((userinfo, rest)) => (Some(userinfo), rest),
            None => (None, rest),
        };
        if rest.contains('#') {
            return Err(
                "a Sentinel URL takes no fragment (`#…`): certificates are always checked \
                 (use `redis_ca_file` for a private CA)"
                    .to_owned(),
            );
        }
        let (hosts, path) = rest
            .split_once('/')
            .ok_or("a Sentinel URL needs the service name: redis+sentinel://host:26379/mymaster")?;
        let mut path = path.trim_end_matches('/').splitn(2, '/');
        let service = path.next().unwrap_or_default();
        if service.is_empty() || hosts.is_empty() {
            return Err("a Sentinel URL needs hosts and a service name".to_owned());
        }
        let db = match path.next() {
            None => 0,
            Some(db) => db
                .parse::<i64>()
                .ok()
                .filter(|db| *db >= 0)
                .ok_or_else(|| format!("`{db}` is not a database number"))?,
        };
        let decode = |text: &str| {
            percent_encoding::percent_decode_str(text)
                .decode_utf8()
                .map(|text| text.into_owned())
                .map_err(|_| "the Sentinel URL's credentials are not UTF-8".to_owned())
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(userinfo) => {
                let (user, password) = userinfo.split_once(':').unwrap_or(("", userinfo));
                let user = Some(decode(user)?).filter(|user| !user.is_empty());
                let password = Some(decode(password)?).filter(|password| !password.is_empty());
                (user, password.map(Secret::new))
            }
        };
        let scheme = if tls { "rediss" } else { "redis" };
        let sentinels = hosts
            .split(',')
            .map(|host| format!("{scheme}://{host}"))
            .collect::<Vec<_>>();
        for sentinel in &sentinels {
            redis::parse_redis_url(sentinel)
                .filter(|parsed| parsed.username().is_empty() && parsed.password().is_none())
                .ok_or_else(|| format!("`{sentinel}` is not a sentinel address (host:port)"))?;
        }
        Ok(Self::Sentinel {
            sentinels,
            service: service.to_owned(),
            auth: SentinelAuth {
                username,
                password,
                db,
                tls,
            },
        })
    }
}

/// A URL as a problem may show it: whatever stands between its `://` and the last `@` of the
/// whole text (a user and a password) replaced by `…`. The last `@` anywhere, not the
/// authority's: a password pasted without percent-encoding may hold `/`, `?` or `#`, which
/// end the authority for a URL parser, and the URL is shown because it did not parse. The
/// query is left out as well: a `unix://` URL carries its password there (`?pass=`).
pub(super) fn shown(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let shown = match rest.rfind('@') {
        Some(at) if scheme.is_empty() => format!("…@{}", &rest[at + 1..]),
        Some(at) => format!("{scheme}://…@{}", &rest[at + 1..]),
        None => url.to_owned(),
    };
    match shown.split_once('?') {
        Some((before, _)) => format!("{before}?…"),
        None => shown,
    }
}
