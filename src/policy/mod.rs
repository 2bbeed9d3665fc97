//! Decisions: which queued download starts next, which mirror it uses, when it retries.

pub mod mirrors;
pub mod retry;
pub mod scheduler;
