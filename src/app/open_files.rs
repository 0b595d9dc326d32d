//! The process's limit on open files, raised to what it may be at start.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Descriptors beyond the listeners' connections: upstream, provider and Redis connections,
/// the runtime's own, log and state files.
const BESIDE_LISTENERS: u64 = 1024;

/// Raises the soft limit on open files to the hard one, as Go's runtime does: a container's
/// soft limit is often 1 024, so a listener would fail to accept (EMFILE) long before
/// `max_connections`, where its idle connections are closed to make room. Warns when the limit
/// in force stays below what `listeners` listeners of `max_connections` each may hold.
pub fn raise(listeners: usize, max_connections: usize) {
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
    let wanted = u64::try_from(listeners.saturating_mul(max_connections))
        .unwrap_or(u64::MAX)
        .saturating_add(BESIDE_LISTENERS);
    if let Some(in_force) = in_force
        && in_force < wanted
    {
        tracing::warn!(
            limit = in_force,
            wanted,
            "the open-file limit is below what the listeners may hold (server.max_connections \
             each, and connections beside them): past it new connections wait while idle ones \
             are closed; raise the hard limit (ulimit -n, LimitNOFILE=, the container runtime's \
             nofile) or lower server.max_connections"
        );
    }
}
