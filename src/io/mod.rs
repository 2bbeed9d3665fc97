//! stdin and stdout, never blocking the loop.

pub mod stdin;
pub mod stdout;
