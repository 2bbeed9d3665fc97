//! libcurl: the glue to mio, the configured handle of an attempt and its route (proxy, TLS),
//! what the response says, the redirects the engine follows itself, the shared receive rate,
//! and the verdict on how it ended.

pub mod classify;
pub mod curl_io;
pub mod handle;
pub mod pacer;
pub mod redirect;
pub mod response;
pub mod route;
pub mod transfer;
pub mod url;
pub mod verdict;
