//! Tollgate: an OpenID Connect gateway in one binary — forward-auth server, authenticating
//! reverse proxy and token service. See `ARCHITECTURE.md` for the map of modules and the life of
//! a request.

pub mod clock;
pub mod config;
pub mod jose;
pub mod login;
pub mod random;
pub mod secret;
pub mod token;
