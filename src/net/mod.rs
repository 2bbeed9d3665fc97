//! libcurl: the glue to mio, the configured handle of an attempt and its route (proxy, TLS),
//! what the response says, the redirects the engine follows itself, and the verdict on how
//! it ended.

pub mod classify;
pub mod curl_io;
pub mod handle;
pub mod redirect;
pub mod response;
pub mod route;
pub mod transfer;
pub mod url;
pub mod verdict;
