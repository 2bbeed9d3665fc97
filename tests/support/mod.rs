//! Shared test support: the test server and the client that drives the real binary.
#![allow(dead_code)]

pub mod client;
pub mod nginx;
pub mod server;
