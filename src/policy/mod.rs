//! Decisions: which queued download starts next, which mirror it uses, when it retries,
//! when an attempt's response is checked.

pub mod checks;
pub mod mirrors;
pub mod retry;
pub mod scheduler;
