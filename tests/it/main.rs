//! The one integration-test binary. Every test starts what it needs on 127.0.0.1:0, in-process.
//!
//! - `support/`: `TestIdp` (an OpenID Provider that can misbehave on purpose), `Gateway`
//!   (Tollgate from a TOML string), `Browser` (cookies, no automatic redirects).
//! - `forward_auth`: `/auth` and `/validate` with bearer tokens, claim rules, skip rules,
//!   forwarded headers (SPEC §4, §6).
//! - `login_flow`: `/signin`, `/callback`, `/signout`, `/userinfo` against the test provider.
//! - `token_service`: the built-in provider and `tollgate demo` end to end (SPEC §7).
//! - `token_service_replicas`: two token-service replicas on one Redis (standalone, Cluster)
//!   behave as one (SPEC §12).
//! - `rotation`: a rolling two-phase rotation of the signing key and the session secrets over
//!   three replicas on one Redis, and why one step is not enough (SPEC §12).
//! - `admin`: metrics and health (SPEC §8); `explain`: `POST /admin/explain`.
//! - `cli`: the `tollgate` binary: `check` output and exit codes.
//! - `reload`: a new config going live (SPEC §2 SIGHUP): kept-alive connections, requests in
//!   flight, sessions and files across a reload, refused configs, a load across 20 reloads.
//! - `provider_faults`: JWKS faults, hanging endpoints, oversized answers (SPEC §9).

// Test code may panic on what it did not expect: that is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin;
mod canonical;
mod cli;
mod connections;
mod explain;
mod forward_auth;
mod fuzz;
mod logging;
mod login_flow;
mod pages;
mod provider_faults;
mod proxy;
mod redis_sessions;
mod refresh;
mod reload;
mod rotation;
mod sessions;
mod soak;
mod support;
mod token_service;
mod token_service_replicas;
mod upstream_pool;
