//! Choosing the route for a request: by host, then the longest path prefix on whole segments
//! (`/public` matches `/public` and `/public/x`, never `/publicity`). Host and path are the
//! canonical request's (`http::canonical`). Pure.

use crate::config::RouteConfig;

/// The configured routes, ready for matching.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<RouteConfig>,
    /// For each route (in `routes`' order), the identity header names but `Authorization` of
    /// every route to the same upstream address, once each.
    identity_headers: Vec<Vec<axum::http::HeaderName>>,
    /// This table's number, never another table's (a reload builds a new table).
    id: u64,
}

/// The next table's number.
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl RouteTable {
    /// A table over `routes`.
    pub fn new(routes: Vec<RouteConfig>) -> Self {
        let identity_headers = routes
            .iter()
            .map(|route| {
                let mut names: Vec<axum::http::HeaderName> = Vec::new();
                let same_upstream = routes
                    .iter()
                    .filter(|other| other.upstream.address() == route.upstream.address());
                for (name, _) in same_upstream.flat_map(|other| &other.headers) {
                    if *name != axum::http::header::AUTHORIZATION && !names.contains(name) {
                        names.push(name.clone());
                    }
                }
                names
            })
            .collect();
        Self {
            routes,
            identity_headers,
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// The identity header names of every route to `route`'s upstream address (the same
    /// application) but `Authorization` (which a route without it may pass on as the client's
    /// own credentials): a client's header of one of these names is removed on each of those
    /// routes, since an application behind several routes may read `X-User` on all its paths,
    /// including one whose route does not set it. Another application's headers are left to
    /// it. Empty for a route not of this table.
    pub fn identity_headers(&self, route: &RouteConfig) -> &[axum::http::HeaderName] {
        self.index_of(route)
            .and_then(|index| self.identity_headers.get(index))
            .map_or(&[], Vec::as_slice)
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
