//! The one integration-test binary. Every test starts what it needs on 127.0.0.1:0, in-process
//! unless it says otherwise.
//!
//! - `support/`: `TestIdp` (an OpenID Provider that can misbehave on purpose), `Gateway`
//!   (Tollgate from a TOML string, with `get`/`post` request builders), `Browser` (cookies, no
//!   automatic redirects), real `Nginx` and Redis (standalone, Cluster, Sentinel) servers,
//!   `TestUpstream`, `scratch_dir` (one fresh temp dir per use).
//! - `forward_auth`: `/auth` and `/validate` with bearer tokens, claim rules, skip rules,
//!   forwarded headers (SPEC §4, §6).
//! - `canonical`: the canonical request (SPEC §4.1) checked against a real nginx.
//! - `login_flow`: `/signin`, `/callback`, `/signout`, `/userinfo` against the test provider.
//! - `pages`: the pages a person sees and their JSON twins (SPEC §10).
//! - `proxy`: the reverse proxy (SPEC §5); `upstream_pool`: upstream connection reuse;
//!   `connections`: slow and idle clients, forged forwarding headers (SPEC §9);
//!   `connection_limit`: `server.max_connections` on the public and gRPC listeners.
//! - `sessions`: server-side sessions, the admin API, back-channel logout;
//!   `redis_sessions`: the Redis store standalone, Cluster and Sentinel, outages and failovers;
//!   `refresh`: refresh once per session, rotation, failures; `refresh_failover`: a Sentinel
//!   master killed mid-refresh, its replica cut off by a frozen relay (SPEC §12);
//!   `redis_copies`: a replica's kept copies of sessions, never used while Redis has said
//!   something its stalled reader has not read.
//! - `token_service`: the built-in provider and `tollgate demo` end to end (SPEC §7).
//! - `token_service_replicas`: two token-service replicas on one Redis (standalone, Cluster)
//!   behave as one (SPEC §12).
//! - `rotation`: a rolling two-phase rotation of the signing key and the session secrets over
//!   three replicas on one Redis, and why one step is not enough (SPEC §12).
//! - `admin`: metrics and health (SPEC §8); `explain`: `POST /admin/explain`.
//! - `envoy`: Envoy `ext_authz` over gRPC (Envoy's own protos' client) and HTTP (SPEC §4).
//! - `envoy_proxy`: the README's Envoy recipe (gRPC and HTTP) in a real Envoy; `istio`: the
//!   README's Istio providers (`envoyExtAuthzHttp`, `envoyExtAuthzGrpc`) as the filters Istio
//!   generates, in a real Envoy.
//! - `cli`: the `tollgate` binary: `check` output and exit codes.
//! - `caddy_recipe`: the README's Caddy recipe in a real Caddy.
//! - `logging`: a log reader that stopped reading never stalls a request (SPEC §11).
//! - `traefik`: `/auth` answering the exact requests Traefik's forwardAuth sends (README
//!   recipe: `trustForwardHeader`, `authResponseHeaders`, `addAuthCookiesToResponse`).
//! - `reload`: a new config going live (SPEC §2 SIGHUP): kept-alive connections, requests in
//!   flight, sessions and files across a reload, refused configs, a load across 20 reloads.
//! - `provider_faults`: JWKS faults, hanging endpoints, oversized answers (SPEC §9).
//! - `soak`: 10,000 idle and 100 slow connections beside normal traffic (own process).
//! - `telemetry`: `[telemetry]` spans to an OTLP/HTTP receiver in the test, `traceparent`
//!   trust and propagation upstream, nothing when off, an unreachable collector.
//! - `fuzz`: the fuzz targets over their corpora with deterministic mutations, on stable.
//! - `tls`: https on the listener (ALPN, certificate reload) and to upstreams (SPEC §3), with
//!   a CA made per test (`support::test_ca`) and nginx or `support::tls_upstream` upstreams.

// Test code may panic on what it did not expect: that is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin;
mod caddy_recipe;
mod canonical;
mod cli;
mod connection_limit;
mod connections;
mod envoy;
mod envoy_proxy;
mod explain;
mod forward_auth;
mod fuzz;
mod haproxy;
mod istio;
mod logging;
mod login_flow;
mod nginx_recipe;
mod pages;
mod provider_faults;
mod proxy;
mod redis_copies;
mod redis_resend;
mod redis_sessions;
mod refresh;
mod refresh_failover;
mod reload;
mod rotation;
mod sessions;
mod soak;
mod support;
mod telemetry;
mod tls;
mod token_service;
mod token_service_replicas;
mod traefik;
mod upstream_pool;
