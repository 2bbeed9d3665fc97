//! libcurl: the glue to mio, the configured handle of an attempt, and its response.

pub mod attempt;
pub mod curl_io;
pub mod transfer;
