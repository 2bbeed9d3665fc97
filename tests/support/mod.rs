//! Shared test support: the test server, real servers (nginx, proxies, certificates) and the
//! client that drives the real binary.
#![allow(dead_code)]

pub mod client;
pub mod nginx;
pub mod proxy;
pub mod server;
pub mod tls;
