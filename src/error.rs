//! Errors, and the stable protocol error kinds they map onto.
//!
//! Every way a download can fail is one variant of [`FetchError`]. Each variant maps to
//! exactly one [`ErrorKind`], whose snake_case name is part of the wire protocol: clients
//! branch on it, so names are never changed, only added. The message (from `Display`) is for
//! humans and may change freely.

use std::fmt;

/// The closed set of error kinds a client can see in `failed` and `invalid` events.
///
/// docs/protocol.md lists the same set with what each means and whether it is worth a
/// retry; docs/protocol.schema.json enumerates it. Keep the three in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    InvalidRequest,
    UnsupportedScheme,
    Dns,
    Connect,
    Tls,
    Proxy,
    Timeout,
    TooSlow,
    Network,
    Truncated,
    HttpStatus,
    NotFound,
    TooManyRedirects,
    SizeMismatch,
    TooLarge,
    ChecksumMismatch,
    RangeNotSatisfied,
    Io,
    Cancelled,
    Aborted,
}

impl ErrorKind {
    /// The kind's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::UnsupportedScheme => "unsupported_scheme",
            ErrorKind::Dns => "dns",
            ErrorKind::Connect => "connect",
            ErrorKind::Tls => "tls",
            ErrorKind::Proxy => "proxy",
            ErrorKind::Timeout => "timeout",
            ErrorKind::TooSlow => "too_slow",
            ErrorKind::Network => "network",
            ErrorKind::Truncated => "truncated",
            ErrorKind::HttpStatus => "http_status",
            ErrorKind::NotFound => "not_found",
            ErrorKind::TooManyRedirects => "too_many_redirects",
            ErrorKind::SizeMismatch => "size_mismatch",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::ChecksumMismatch => "checksum_mismatch",
            ErrorKind::RangeNotSatisfied => "range_not_satisfied",
            ErrorKind::Io => "io",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Aborted => "aborted",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a failed attempt means for the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// The source may work if asked again later: retry with backoff (another source first,
    /// if one is untried).
    Transient,
    /// This source does not have it (404, 410, …): another source at once, no delay.
    Elsewhere,
    /// This source served wrong bytes (digest, size, TLS): another source at once, and the
    /// mirror is penalised.
    BadSource,
    /// Credentials refused (401, 403): only a source on another host may help.
    Denied,
    /// Retrying cannot help (local disk, cancelled, shutting down).
    Final,
}

/// Why one attempt at a download failed (or why a request line was refused).
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    UnsupportedScheme(String),
    #[error("could not resolve host: {0}")]
    Dns(String),
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("TLS failure: {0}")]
    Tls(String),
    /// The proxy could not be reached or failed the request: not the source's fault.
    #[error("proxy failure: {0}")]
    Proxy(String),
    /// The proxy refused its credentials (407): asking again cannot help.
    #[error("proxy refused: {0}")]
    ProxyDenied(String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("transfer too slow: {0}")]
    TooSlow(String),
    #[error("network error: {0}")]
    Network(String),
    #[error("body cut short: {0}")]
    Truncated(String),
    #[error("server answered HTTP {status}{}", status_hint(*status))]
    HttpStatus { status: u32 },
    #[error("not found: {0}")]
    NotFound(String),
    #[error("too many redirects: {0}")]
    TooManyRedirects(String),
    #[error("expected {expected} bytes, got {actual}")]
    SizeMismatch { expected: u64, actual: u64 },
    #[error("body exceeds the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// The response's headers are over libcurl's limit (300 KiB): kind `too_large`.
    #[error("response headers too large: {0}")]
    HeadersTooLarge(String),
    #[error("{algorithm} mismatch: expected {expected}, got {actual}")]
    ChecksumMismatch {
        algorithm: &'static str,
        expected: String,
        actual: String,
    },
    #[error("range not satisfiable: {0}")]
    RangeNotSatisfied(String),
    #[error("{context}: {message}")]
    Io { context: String, message: String },
    #[error("cancelled by the client")]
    Cancelled,
    #[error("helper shutting down")]
    Aborted,
}

impl FetchError {
    /// The stable protocol kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            FetchError::InvalidRequest(_) => ErrorKind::InvalidRequest,
            FetchError::UnsupportedScheme(_) => ErrorKind::UnsupportedScheme,
            FetchError::Dns(_) => ErrorKind::Dns,
            FetchError::Connect(_) => ErrorKind::Connect,
            FetchError::Tls(_) => ErrorKind::Tls,
            FetchError::Proxy(_) | FetchError::ProxyDenied(_) => ErrorKind::Proxy,
            FetchError::Timeout(_) => ErrorKind::Timeout,
            FetchError::TooSlow(_) => ErrorKind::TooSlow,
            FetchError::Network(_) => ErrorKind::Network,
            FetchError::Truncated(_) => ErrorKind::Truncated,
            FetchError::HttpStatus { .. } => ErrorKind::HttpStatus,
            FetchError::NotFound(_) => ErrorKind::NotFound,
            FetchError::TooManyRedirects(_) => ErrorKind::TooManyRedirects,
            FetchError::SizeMismatch { .. } => ErrorKind::SizeMismatch,
            FetchError::TooLarge { .. } | FetchError::HeadersTooLarge(_) => ErrorKind::TooLarge,
            FetchError::ChecksumMismatch { .. } => ErrorKind::ChecksumMismatch,
            FetchError::RangeNotSatisfied(_) => ErrorKind::RangeNotSatisfied,
            FetchError::Io { .. } => ErrorKind::Io,
            FetchError::Cancelled => ErrorKind::Cancelled,
            FetchError::Aborted => ErrorKind::Aborted,
        }
    }

    /// The HTTP status, for `http_status` errors (sent as its own field on the wire).
    pub fn status(&self) -> Option<u32> {
        match self {
            FetchError::HttpStatus { status } => Some(*status),
            _ => None,
        }
    }

    /// What this failure says about the source, and so what to do next.
    /// docs/design.md has the retry table this implements.
    pub fn disposition(&self) -> Disposition {
        match self {
            FetchError::Dns(_)
            | FetchError::Connect(_)
            | FetchError::Timeout(_)
            | FetchError::TooSlow(_)
            | FetchError::Network(_)
            | FetchError::Truncated(_)
            | FetchError::Proxy(_) => Disposition::Transient,
            FetchError::HttpStatus { status } => match status {
                408 | 429 | 500..=599 => Disposition::Transient,
                401 | 403 | 407 => Disposition::Denied,
                _ => Disposition::Elsewhere,
            },
            FetchError::NotFound(_)
            | FetchError::TooManyRedirects(_)
            | FetchError::UnsupportedScheme(_)
            | FetchError::RangeNotSatisfied(_) => Disposition::Elsewhere,
            FetchError::Tls(_)
            | FetchError::SizeMismatch { .. }
            | FetchError::TooLarge { .. }
            | FetchError::HeadersTooLarge(_)
            | FetchError::ChecksumMismatch { .. } => Disposition::BadSource,
            FetchError::InvalidRequest(_)
            | FetchError::ProxyDenied(_)
            | FetchError::Io { .. }
            | FetchError::Cancelled
            | FetchError::Aborted => Disposition::Final,
        }
    }

    /// The process (EMFILE) or the system (ENFILE) ran out of file descriptors: neither the
    /// download's fault nor its source's, so the engine requeues the download instead of
    /// counting the attempt (`engine::conclusion`).
    pub fn is_out_of_fds(&self) -> bool {
        match self {
            FetchError::Io { message, .. }
            | FetchError::Connect(message)
            | FetchError::Dns(message)
            | FetchError::Network(message) => crate::fd_budget::names_exhaustion(message),
            _ => false,
        }
    }

    /// A local I/O failure, with what we were doing when it happened.
    pub fn io(context: impl Into<String>, err: &std::io::Error) -> FetchError {
        FetchError::Io {
            context: context.into(),
            message: err.to_string(),
        }
    }
}

/// What a status asks of the user, where that is not obvious from its number.
fn status_hint(status: u32) -> &'static str {
    match status {
        401 => " (authentication required: give the request `auth`, a user:password URL or --netrc credentials, or check them)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_snake_case_and_distinct() {
        let all = [
            ErrorKind::InvalidRequest,
            ErrorKind::UnsupportedScheme,
            ErrorKind::Dns,
            ErrorKind::Connect,
            ErrorKind::Tls,
            ErrorKind::Proxy,
            ErrorKind::Timeout,
            ErrorKind::TooSlow,
            ErrorKind::Network,
            ErrorKind::Truncated,
            ErrorKind::HttpStatus,
            ErrorKind::NotFound,
            ErrorKind::TooManyRedirects,
            ErrorKind::SizeMismatch,
            ErrorKind::TooLarge,
            ErrorKind::ChecksumMismatch,
            ErrorKind::RangeNotSatisfied,
            ErrorKind::Io,
            ErrorKind::Cancelled,
            ErrorKind::Aborted,
        ];
        let names: std::collections::HashSet<_> = all.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), all.len());
        for name in names {
            assert!(name.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        }
    }

    #[test]
    fn http_status_keeps_the_status() {
        let err = FetchError::HttpStatus { status: 404 };
        assert_eq!(err.kind(), ErrorKind::HttpStatus);
        assert_eq!(err.status(), Some(404));
    }
}
