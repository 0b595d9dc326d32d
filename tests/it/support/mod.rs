//! Test helpers: a provider, a gateway, a browser.

pub mod browser;
pub mod gateway;
pub mod idp;
pub mod nginx;
pub mod redis;
pub mod upstream;

pub use browser::Browser;
pub use gateway::Gateway;
pub use idp::TestIdp;
pub use upstream::TestUpstream;
