//! Tollgate: an OpenID Connect gateway in one binary — forward-auth server, authenticating
//! reverse proxy and token service. See `ARCHITECTURE.md` for the map of modules and the life of
//! a request.

// `POST /admin/explain` runs `/auth`'s and the routes' decisions (unboxed) in one future,
// deeper than the default limit lets the compiler lay out.
#![recursion_limit = "256"]

pub mod address_budget;
pub mod admin;
pub mod app;
pub mod clock;
pub mod config;
pub mod demo;
pub mod forward_auth;
#[doc(hidden)]
pub mod fuzz_targets;
pub mod http;
pub mod identity;
pub mod issuer;
pub mod jose;
pub mod logging;
pub mod login;
pub mod metrics;
pub mod named_file;
pub mod oidc;
pub mod policy;
pub mod proxy;
pub mod public;
pub mod random;
pub mod redis_connection;
pub mod secret;
pub mod session;
pub mod telemetry;
pub mod thread_front;
pub mod tls;
pub mod token;
pub mod untrusted;

pub use issuer::hash_password;
