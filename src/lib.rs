//! fetchmux: a download helper for package managers.
//!
//! One process, one event loop: a `mio::Poll` drives a libcurl multi handle through the
//! socket-action API; each transfer's write callback streams its bytes through a size cap and
//! digest state into a temporary file, which is renamed onto its destination only after every
//! check passes (large bodies are hashed and written by worker threads, `hasher`; small ones
//! are verified in memory and written into place by a worker, `placer`). The
//! parent talks to the helper in JSON Lines over stdin/stdout (docs/protocol.md). docs/design.md draws the picture.

pub mod attempt;
pub mod config;
pub mod curl_io;
pub mod digest;
pub mod engine;
pub mod error;
pub mod hasher;
pub mod input;
pub mod known_files;
pub mod mirrors;
pub mod output;
pub mod placer;
pub mod protocol;
pub mod retry;
pub mod scheduler;
pub mod sink;
pub mod transfer;
