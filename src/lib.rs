//! fetchmux: a download helper for package managers.
//!
//! One process, one event loop: a `mio::Poll` drives a libcurl multi handle through the
//! socket-action API; each transfer's write callback streams its bytes through a size cap and
//! digest state into a temporary file, which is renamed onto its destination only after every
//! check passes. docs/design.md draws the picture.

pub mod body;
pub mod config;
pub mod engine;
pub mod error;
pub mod io;
pub mod net;
pub mod policy;
pub mod protocol;
