//! Test helpers: a provider, a gateway, a browser.

pub mod browser;
pub mod gateway;
pub mod idp;
pub mod nginx;
pub mod redis;
pub mod test_ca;
pub mod tls_upstream;
pub mod upstream;

pub use browser::Browser;
pub use gateway::Gateway;
pub use idp::TestIdp;
pub use upstream::TestUpstream;

/// A loopback port that was free a moment ago (for servers that take their port from a
/// config file: nginx, redis-server, a `tollgate serve` process).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
