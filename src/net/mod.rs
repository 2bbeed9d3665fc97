//! libcurl: the glue to mio, the configured handle of an attempt, what the response says,
//! the shared receive rate, and the verdict on how it ended.

pub mod classify;
pub mod curl_io;
pub mod handle;
pub mod pacer;
pub mod response;
pub mod transfer;
pub mod url;
pub mod verdict;
