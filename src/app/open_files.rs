//! The process's limit on open files, raised to what it may be at start.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Descriptors beyond the listeners' connections: upstream, provider and Redis connections,
/// the runtime's own, log and state files.
const BESIDE_LISTENERS: u64 = 1024;

/// Raises the soft limit on open files to the hard one, as Go's runtime does: a container's
/// soft limit is often 1 024, so a listener would fail to accept (EMFILE) long before
/// `max_connections`. Returns how many connections each of the `listeners` may hold:
/// `max_connections`, or fewer when the limit in force would run out first: all but 1 024 of
/// it (or half of a smaller one) shared between them, each connection counted twice (a
/// proxied one holds an upstream connection too). So a full listener closes its idlest
/// connection to make room while descriptors are left for upstreams, providers and Redis;
/// the count is a rough one. Warns when that is fewer.
pub fn raise(listeners: usize, max_connections: usize) -> usize {
    let limit = getrlimit(Resource::Nofile);
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    let in_force = if limit.current == limit.maximum {
        limit.current
    } else {
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => limit.maximum,
            Err(error) => {
                tracing::warn!(%error, "the open-file limit could not be raised to its hard limit");
                limit.current
            }
        }
    };
    // No limit: the listeners' own.
    let Some(in_force) = in_force else {
        return max_connections;
    };
    let beside = (in_force / 2).min(BESIDE_LISTENERS);
    let listeners = u64::try_from(listeners.max(1)).unwrap_or(u64::MAX);
    let places = usize::try_from((in_force - beside) / listeners / 2)
        .unwrap_or(usize::MAX)
        .max(1);
    if places < max_connections {
        tracing::warn!(
            limit = in_force,
            places,
            "the open-file limit is below what the listeners may hold: each holds at most this \
             many connections instead of server.max_connections; raise the hard limit (ulimit \
             -n, LimitNOFILE=, the container runtime's nofile) or lower server.max_connections"
        );
    }
    places.min(max_connections)
}
