//! fetchmux: a download helper for package managers.
//!
//! One process, one event loop: a `mio::Poll` drives a libcurl multi handle through the
//! socket-action API; each transfer's write callback streams its bytes through a size cap and
//! digest state into a temporary file, which is renamed onto its destination only after every
//! check passes. docs/design.md draws the picture.
//!
//! The library is the engine and its typed API: a [`front::Front`] turns a protocol into
//! [`api::Request`]s and the engine's [`api::Event`]s back into that protocol, and
//! [`engine::run`] drives it. Everything else is the engine's own business.

pub mod api;
pub mod config;
pub mod engine;
pub mod error;
pub mod front;
pub mod generate;

pub(crate) mod body;
pub(crate) mod fd_budget;
pub(crate) mod http_date;
pub(crate) mod io;
pub(crate) mod net;
pub(crate) mod policy;
#[cfg(test)]
mod test_support;
