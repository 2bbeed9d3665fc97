//! One download's life: the [`Job`] (the request and its attempts so far) and the
//! [`Transfer`], the libcurl handler that receives one attempt's response.
//!
//! The handler's callbacks run inside `curl_multi_socket_action`, on the loop's thread. They
//! never block and never touch the engine: the write callback hands bytes to the [`Sink`]
//! and, on the first problem, records it in `failure` and tells curl to stop; the engine
//! reads the outcome when curl reports the transfer finished.

use std::time::Instant;

use curl::easy::{Handler, WriteError};

use crate::error::FetchError;
use crate::protocol::{AttemptBody, Download};
use crate::sink::Sink;

/// A download request and what has happened to it so far, across attempts.
pub struct Job {
    pub request: Download,
    /// Order of arrival; breaks priority ties (FIFO) and identifies queue entries.
    pub seq: u64,
    /// Index into `request.urls` of the next (or current) attempt.
    pub url_index: usize,
    /// Every failed attempt, for the `failed` event.
    pub attempts: Vec<AttemptBody>,
    pub received_at: Instant,
}

impl Job {
    pub fn new(request: Download, seq: u64) -> Job {
        Job {
            request,
            seq,
            url_index: 0,
            attempts: Vec::new(),
            received_at: Instant::now(),
        }
    }

    /// The URL the current attempt uses.
    pub fn url(&self) -> &str {
        &self.request.urls[self.url_index]
    }

    /// The cap for this body: the exact `size` when known, else `max_size`, else the
    /// helper-wide default (0 meaning none).
    pub fn limit(&self, default_max: u64) -> Option<u64> {
        let max = self
            .request
            .max_size
            .or((default_max > 0).then_some(default_max));
        match (self.request.size, max) {
            (Some(size), Some(max)) => Some(size.min(max)),
            (size, max) => size.or(max),
        }
    }
}

/// What the header callback learned about the final response.
#[derive(Default, Debug)]
pub struct ResponseHead {
    /// Status of the latest status line seen (0 before any, and for file://).
    pub status: u32,
    pub content_length: Option<u64>,
}

/// The curl handler of one attempt. `job` and `sink` are `Some` until the engine takes
/// them out when the attempt ends.
pub struct Transfer {
    pub job: Option<Box<Job>>,
    pub sink: Option<Sink>,
    pub head: ResponseHead,
    /// The first local reason to stop this attempt (cap exceeded, disk error), if any.
    pub failure: Option<FetchError>,
    /// Bytes reported in the last `progress` event.
    pub reported: u64,
    pub started_at: Instant,
}

impl Transfer {
    /// The job behind this attempt.
    pub fn job(&self) -> &Job {
        self.job
            .as_ref()
            .expect("job is present until the attempt ends")
    }

    /// Bytes received by this attempt.
    pub fn received(&self) -> u64 {
        self.sink.as_ref().map_or(0, Sink::received)
    }

    pub fn new(job: Box<Job>, sink: Sink) -> Transfer {
        Transfer {
            job: Some(job),
            sink: Some(sink),
            head: ResponseHead::default(),
            failure: None,
            reported: 0,
            started_at: Instant::now(),
        }
    }
}

impl Handler for Transfer {
    fn write(&mut self, data: &[u8]) -> Result<usize, WriteError> {
        let Some(sink) = self.sink.as_mut() else {
            return Ok(0);
        };
        match sink.write(data) {
            Ok(()) => Ok(data.len()),
            Err(err) => {
                // Returning short makes curl abort with CURLE_WRITE_ERROR; the engine then
                // reports this recorded cause instead.
                self.failure.get_or_insert(err);
                Ok(0)
            }
        }
    }

    fn header(&mut self, line: &[u8]) -> bool {
        // Every response passes through here (redirects, 100 Continue, 401, proxy CONNECT):
        // a status line starts the record afresh.
        if let Some(status) = parse_status_line(line) {
            self.head = ResponseHead {
                status,
                ..ResponseHead::default()
            };
            return true;
        }
        if let Some(value) = header_value(line, "content-length") {
            let length = value.parse::<u64>().ok();
            self.head.content_length = length;
            let success = (200..300).contains(&self.head.status);
            let limit = self.sink.as_ref().and_then(Sink::limit);
            if let (true, Some(length), Some(limit)) = (success, length, limit) {
                if length > limit {
                    // Refuse before the first byte of a body we would only throw away.
                    self.failure.get_or_insert(FetchError::TooLarge { limit });
                    return false;
                }
            }
        }
        true
    }
}

/// `HTTP/1.1 200 OK` → 200.
fn parse_status_line(line: &[u8]) -> Option<u32> {
    let rest = line.strip_prefix(b"HTTP/")?;
    let mut parts = rest.split(|&b| b == b' ');
    parts.next()?;
    let code = parts.next()?;
    let code = std::str::from_utf8(code).ok()?.trim();
    code.parse().ok()
}

/// The trimmed value of header `name` (lowercase) if `line` is that header.
fn header_value<'a>(line: &'a [u8], name: &str) -> Option<&'a str> {
    let colon = line.iter().position(|&b| b == b':')?;
    let (field, value) = line.split_at(colon);
    if !field.eq_ignore_ascii_case(name.as_bytes()) {
        return None;
    }
    std::str::from_utf8(&value[1..]).ok().map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status_line(b"HTTP/2 404 \r\n"), Some(404));
        assert_eq!(parse_status_line(b"HTTP/2 304\r\n"), Some(304));
        assert_eq!(parse_status_line(b"Content-Length: 3\r\n"), None);
    }

    #[test]
    fn header_values() {
        assert_eq!(
            header_value(b"Content-LENGTH:  42 \r\n", "content-length"),
            Some("42")
        );
        assert_eq!(header_value(b"ETag: x\r\n", "content-length"), None);
    }
}
