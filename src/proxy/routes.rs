//! Choosing the route for a request: by host, then the longest path prefix on whole segments
//! (`/public` matches `/public` and `/public/x`, never `/publicity`). Host and path are the
//! canonical request's (`http::canonical`). Pure.

use crate::config::RouteConfig;

/// The configured routes, ready for matching.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<RouteConfig>,
    /// For each route (in `routes`' order), the header names removed from its requests.
    stripped: Vec<Stripped>,
    /// This table's number, never another table's (a reload builds a new table).
    id: u64,
    /// Whether a route names a host (else the host never changes the route).
    by_host: bool,
}

/// The identity header names removed from one route's requests, each once: its own, and those
/// of every other route but `Authorization` (which a route that does not name it may pass on
/// as the client's own credentials). An application behind several routes may read `X-User`
/// on all its paths, one whose route does not set it too, and which routes reach one
/// application cannot be told from their upstreams' addresses (`localhost:9000` and
/// `127.0.0.1:9000`, a service's short and long DNS names).
#[derive(Debug, Clone, Default)]
struct Stripped {
    /// Before anything reads the client's request: not the route's own `Authorization` when
    /// it accepts bearer tokens (then it is the credential).
    from_client: Vec<axum::http::HeaderName>,
    /// Before the request goes upstream, where the route's identity headers are then set.
    before_sending: Vec<axum::http::HeaderName>,
    /// Whether a client's `Authorization` other than `Basic` is removed too: another route to
    /// the same upstream ([`same_application`]) passes it a token Tollgate checked (it sets `Authorization`, or takes
    /// bearer tokens as credentials), and this one neither checks one (`accept_bearer`) nor
    /// sets its own. An application that believes the token it gets there would believe a
    /// client's here, in whatever scheme it reads (`Bearer`, `JWT`, `Token`, a tab after it).
    client_tokens: bool,
    /// Whether the route's application believes the tokens it gets: the route takes bearer
    /// tokens or sets `Authorization` itself, or `client_tokens` (another route to it does).
    /// A token in a query it is sent must then be checked.
    believes_tokens: bool,
}

/// The next table's number.
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl RouteTable {
    /// A table over `routes`.
    pub fn new(routes: Vec<RouteConfig>) -> Self {
        let sets_authorization = |route: &RouteConfig| {
            route
                .headers
                .iter()
                .any(|(name, _)| *name == axum::http::header::AUTHORIZATION)
        };
        let stripped = routes
            .iter()
            .map(|route| {
                let own = route.headers.iter().map(|(name, _)| name);
                let every_routes = routes
                    .iter()
                    .flat_map(|other| other.headers.iter().map(|(name, _)| name))
                    .filter(|name| **name != axum::http::header::AUTHORIZATION);
                let is_credential = |name: &&axum::http::HeaderName| {
                    route.accept_bearer && **name == axum::http::header::AUTHORIZATION
                };
                let client_tokens = !route.accept_bearer
                    && !sets_authorization(route)
                    && routes.iter().any(|other| {
                        same_application(&other.upstream, &route.upstream)
                            && (sets_authorization(other) || other.accept_bearer)
                    });
                Stripped {
                    from_client: once_each(
                        own.clone()
                            .filter(|name| !is_credential(name))
                            .chain(every_routes.clone()),
                    ),
                    before_sending: once_each(own.chain(every_routes)),
                    client_tokens,
                    believes_tokens: route.accept_bearer
                        || sets_authorization(route)
                        || client_tokens,
                }
            })
            .collect();
        Self {
            by_host: routes.iter().any(|route| route.host.is_some()),
            routes,
            stripped,
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// What is removed from a client's request on `route` before anything reads it
    /// ([`Stripped`]): the identity header names, and whether its `Authorization` other than
    /// `Basic` goes too. Nothing for a route not of this table.
    pub fn stripped_from_client(&self, route: &RouteConfig) -> (&[axum::http::HeaderName], bool) {
        self.stripped_of(route).map_or((&[], false), |stripped| {
            (&stripped.from_client, stripped.client_tokens)
        })
    }

    /// Whether `route`'s application believes the tokens it gets ([`Stripped`]); for a route
    /// not of this table, whether it takes bearer tokens.
    pub fn believes_tokens(&self, route: &RouteConfig) -> bool {
        route.accept_bearer
            || self
                .stripped_of(route)
                .is_some_and(|stripped| stripped.believes_tokens)
    }

    /// The identity header names removed from a request on `route` before it goes upstream
    /// ([`Stripped`]); empty for a route not of this table.
    pub fn stripped_before_sending(&self, route: &RouteConfig) -> &[axum::http::HeaderName] {
        self.stripped_of(route)
            .map_or(&[], |stripped| &stripped.before_sending)
    }

    fn stripped_of(&self, route: &RouteConfig) -> Option<&Stripped> {
        let index = self.index_of(route);
        // Every caller's route comes from this table (`find`); another would strip nothing.
        debug_assert!(index.is_some(), "a route of another table");
        index.and_then(|index| self.stripped.get(index))
    }

    /// This table's number: no other table, before or after a reload, has it.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether there are no routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The 0-based index of `route`, one of this table's, in the config's `[[route]]` order.
    pub fn index_of(&self, route: &RouteConfig) -> Option<usize> {
        self.routes
            .iter()
            .position(|candidate| std::ptr::eq(candidate, route))
    }

    /// Whether a route names a host: without one, every host gets the same route.
    pub fn by_host(&self) -> bool {
        self.by_host
    }

    /// The route for the canonical `host` (lower case, no port, no trailing dot) and canonical
    /// `path`: routes naming the host win over routes for any host; among those, the longest
    /// matching prefix.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&RouteConfig> {
        let matching = |route: &&RouteConfig| is_prefix_on_segments(&route.path_prefix, path);
        let named = self
            .routes
            .iter()
            .filter(|route| match (&route.host, host) {
                (Some(wanted), Some(host)) => wanted == host,
                _ => false,
            })
            .filter(matching)
            .max_by_key(|route| route.path_prefix.len());
        named.or_else(|| {
            self.routes
                .iter()
                .filter(|route| route.host.is_none())
                .filter(matching)
                .max_by_key(|route| route.path_prefix.len())
        })
    }
}

fn is_prefix_on_segments(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Whether two upstreams are taken for one application: the same address, or the same port on
/// loopback however it is spelt (`localhost`, `127.0.0.1`, `[::1]`, `[::ffff:127.0.0.1]`). Other names for one host
/// (a service's short and long DNS names) are not known to be one.
fn same_application(left: &crate::config::Upstream, right: &crate::config::Upstream) -> bool {
    let loopback_port = |upstream: &crate::config::Upstream| {
        let url = upstream.url();
        let loopback = match url.host() {
            Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(address)) => address.is_loopback(),
            Some(url::Host::Ipv6(address)) => {
                address.is_loopback()
                    || address
                        .to_ipv4_mapped()
                        .is_some_and(|mapped| mapped.is_loopback())
            }
            None => false,
        };
        loopback.then(|| url.port_or_known_default()).flatten()
    };
    left.address() == right.address()
        || loopback_port(left).is_some_and(|port| loopback_port(right) == Some(port))
}

/// `names` without repeats, in their first order.
fn once_each<'a>(
    names: impl Iterator<Item = &'a axum::http::HeaderName>,
) -> Vec<axum::http::HeaderName> {
    let mut once: Vec<axum::http::HeaderName> = Vec::new();
    for name in names {
        if !once.contains(name) {
            once.push(name.clone());
        }
    }
    once
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        let text = r#"
[session]
secrets = ["0123456789abcdef0123456789abcdef"]
[[provider]]
name = "p"
issuer = "https://idp"
client_id = "c"
client_auth = "none"
[[route]]
upstream = "http://127.0.0.1:1"
provider = "p"
[[route]]
path_prefix = "/public"
upstream = "http://127.0.0.1:2"
provider = "p"
[[route]]
host = "App.Example.com"
path_prefix = "/api/"
upstream = "http://127.0.0.1:3"
provider = "p"
[[route]]
host = "app.example.com"
upstream = "http://127.0.0.1:4"
provider = "p"
"#;
        RouteTable::new(
            crate::config::load(text, &Default::default())
                .unwrap()
                .routes,
        )
    }

    #[test]
    fn one_application_on_loopback_however_its_address_is_spelt() {
        let upstream =
            |url: &str| crate::config::Upstream::new(url::Url::parse(url).unwrap(), None).unwrap();
        let same = |left: &str, right: &str| same_application(&upstream(left), &upstream(right));
        assert!(same("http://127.0.0.1:9000", "http://127.0.0.1:9000/app"));
        assert!(same("http://localhost:9000", "http://127.0.0.1:9000"));
        assert!(same("http://LocalHost:9000", "http://[::1]:9000"));
        assert!(same(
            "http://[::ffff:127.0.0.1]:9000",
            "http://localhost:9000"
        ));
        assert!(same("http://127.0.0.2:80", "http://localhost"));
        assert!(!same("http://localhost:9000", "http://127.0.0.1:9001"));
        assert!(!same("http://app:9000", "http://app.default.svc:9000"));
        assert!(!same("http://10.0.0.1:9000", "http://127.0.0.1:9000"));
    }

    #[track_caller]
    fn check(host: Option<&str>, path: &str, expected_port: u16) {
        let table = table();
        let route = table.find(host, path).unwrap();
        assert_eq!(
            route.upstream.url().port(),
            Some(expected_port),
            "{host:?} {path}"
        );
    }

    #[test]
    fn host_then_longest_prefix_on_whole_segments() {
        check(None, "/", 1);
        check(None, "/public", 2);
        check(None, "/public/x", 2);
        check(None, "/publicity", 1);
        check(Some("other.example.com"), "/public/x", 2);
        check(Some("app.example.com"), "/api/v1", 3);
        check(Some("app.example.com"), "/api", 3);
        check(Some("app.example.com"), "/apis", 4);
        check(Some("app.example.com"), "/public/x", 4);
    }
}
