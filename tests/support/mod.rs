//! Shared test support: the test server, real servers (nginx, proxies, certificates) and the
//! client that drives the real binary.
#![allow(dead_code)]

pub mod client;
pub mod nginx;
pub mod proxy;
pub mod server;
pub mod tls;

/// A loopback port free right now, for a server about to be started on it.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether the tests run as root (CI does): servers that would drop privileges are told to
/// keep the current user, which can read the tests' private temporary directories.
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
