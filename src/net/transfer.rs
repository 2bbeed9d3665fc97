//! One download's life: the [`Job`] (the request and its attempts so far) and the
//! [`Transfer`], the libcurl handler that receives one attempt's response.
//!
//! The handler's callbacks run inside `curl_multi_socket_action`, on the loop's thread. They
//! never block and never touch the engine: the header callback records the response head,
//! the write callback hands bytes to the [`Sink`] and, on the first problem, records it in
//! `failure` and tells curl to stop; the engine reads the outcome when curl reports the
//! transfer finished.

use std::sync::mpsc::Sender;
use std::time::Instant;

use curl::easy::{Handler, InfoType, WriteError};

use crate::body::sink::{Flow, Sink};
use crate::error::FetchError;
use crate::protocol::{AttemptBody, ByteRange, Download};

/// A download request and what has happened to it so far, across attempts.
pub struct Job {
    pub request: Download,
    /// Order of arrival; breaks priority ties (FIFO) and identifies the job in queues.
    pub seq: u64,
    /// The URL of the current (or next) attempt.
    pub url: String,
    /// Where that URL came from: a mirror's base URL, or the URL itself for `url`/`urls`.
    pub origin: String,
    /// The scheduler slot the attempt counts against (a mirror, or a host).
    pub slot: String,
    /// What the running attempt costs in the scheduler's units (see `scheduler`).
    pub cost: usize,
    /// Origins tried so far, and origins ruled out for this download.
    pub tried: Vec<String>,
    pub excluded: Vec<String>,
    /// Transient failures so far (drives the backoff).
    pub transient_failures: u32,
    /// Every failed attempt, for the `failed` event.
    pub attempts: Vec<AttemptBody>,
    pub received_at: Instant,
}

impl Job {
    pub fn new(request: Download, seq: u64) -> Job {
        Job {
            request,
            seq,
            url: String::new(),
            origin: String::new(),
            slot: String::new(),
            cost: 0,
            tried: Vec::new(),
            excluded: Vec::new(),
            transient_failures: 0,
            attempts: Vec::new(),
            received_at: Instant::now(),
        }
    }

    /// The URL the current attempt uses.
    pub fn url(&self) -> &str {
        &self.url
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

/// `Content-Range: bytes 100-199/1000` or `bytes */1000`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    pub start: Option<u64>,
    pub end: Option<u64>,
    pub total: Option<u64>,
}

/// What the header callback learned about the final response.
#[derive(Default, Debug)]
pub struct ResponseHead {
    /// Status of the latest status line seen (0 before any, and for file://).
    pub status: u32,
    pub content_length: Option<u64>,
    pub content_range: Option<ContentRange>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub retry_after: Option<String>,
    /// The response came over HTTP/2 or later: its connection multiplexes.
    pub multiplexed: bool,
}

/// How the body of this attempt relates to the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyMode {
    /// The whole file.
    Whole,
    /// Continuing a kept partial of `offset` bytes (`Range: bytes=offset-`).
    Resume { offset: u64 },
    /// Only these bytes (`Range: bytes=start-end`).
    Range(ByteRange),
}

/// The curl handler of one attempt. `job` and `sink` are `Some` until the engine takes
/// them out when the attempt ends.
pub struct Transfer {
    pub job: Option<Box<Job>>,
    pub sink: Option<Sink>,
    pub head: ResponseHead,
    pub mode: BodyMode,
    /// The URL speaks HTTP (ranges are then checked against the status and Content-Range;
    /// for file:// and ftp:// libcurl applies them itself).
    pub http: bool,
    /// The first local reason to stop this attempt (cap exceeded, disk error), if any.
    pub failure: Option<FetchError>,
    /// The sink has every byte it wants; curl was stopped on purpose.
    pub complete_early: bool,
    body_started: bool,
    /// Bytes reported in the last `progress` event.
    pub reported: u64,
    pub started_at: Instant,
    /// Where to say that this attempt's TLS handshake agreed on HTTP/2 (ALPN), while the
    /// engine does not yet know whether the slot multiplexes (see `Handler::debug`).
    pub alpn_learner: Option<Sender<String>>,
}

impl Transfer {
    pub fn new(job: Box<Job>, sink: Sink, mode: BodyMode, http: bool) -> Transfer {
        Transfer {
            job: Some(job),
            sink: Some(sink),
            head: ResponseHead::default(),
            mode,
            http,
            failure: None,
            complete_early: false,
            body_started: false,
            reported: 0,
            started_at: Instant::now(),
            alpn_learner: None,
        }
    }

    /// The job behind this attempt.
    pub fn job(&self) -> &Job {
        self.job
            .as_ref()
            .expect("job is present until the attempt ends")
    }

    /// Bytes stored by this attempt (a resumed prefix included).
    pub fn received(&self) -> u64 {
        self.sink.as_ref().map_or(0, Sink::received)
    }

    /// Before the first body byte: does the response fit what we asked for?
    fn prepare_body(&mut self) -> Result<(), FetchError> {
        let sink = self.sink.as_mut().expect("sink present");
        sink.expect_len(self.head.content_length);
        let partial = self.http && self.head.status == 206;
        let start = self.head.content_range.and_then(|r| r.start);
        match self.mode {
            BodyMode::Whole => Ok(()),
            BodyMode::Resume { .. } if !self.http => Ok(()),
            BodyMode::Resume { offset } => match (partial, start) {
                (true, Some(start)) if start == offset => Ok(()),
                (true, _) => Err(FetchError::Network(format!(
                    "asked for bytes from {offset}, the server sent another range"
                ))),
                // The server ignored Range (or If-Range did not match): start over, never
                // append a whole body to a prefix.
                (false, _) => sink.restart(),
            },
            BodyMode::Range(_) if !self.http => Ok(()),
            BodyMode::Range(range) => match (partial, start) {
                (true, Some(start)) if start == range.start => Ok(()),
                (true, _) => Err(FetchError::RangeNotSatisfied(format!(
                    "asked for bytes {}-{}, the server sent another range",
                    range.start, range.end
                ))),
                // The whole body came: keep just the slice asked for.
                (false, _) => {
                    sink.set_window(range.start, range.length());
                    Ok(())
                }
            },
        }
    }
}

impl Handler for Transfer {
    /// Only called for handles with `VERBOSE` on: the first transfers to an https slot
    /// whose protocol is not yet known. The server's choice of HTTP/2 is known as soon as
    /// the TLS handshake ends, a round trip before the first response would say it.
    fn debug(&mut self, kind: InfoType, data: &[u8]) {
        if matches!(kind, InfoType::Text) && data.starts_with(b"ALPN: server accepted h2") {
            if let (Some(learner), Some(job)) = (self.alpn_learner.take(), &self.job) {
                let _ = learner.send(job.slot.clone());
            }
        }
    }

    fn write(&mut self, data: &[u8]) -> Result<usize, WriteError> {
        if !self.body_started {
            self.body_started = true;
            if let Err(err) = self.prepare_body() {
                self.failure.get_or_insert(err);
                return Ok(0);
            }
        }
        let Some(sink) = self.sink.as_mut() else {
            return Ok(0);
        };
        match sink.write(data) {
            Ok(Flow::More) => Ok(data.len()),
            // curl keeps the bytes and offers them again once the engine unpauses us.
            Ok(Flow::Pause) => Err(WriteError::Pause),
            Ok(Flow::Complete) => {
                // Returning short stops curl; the engine sees complete_early and succeeds.
                self.complete_early = true;
                Ok(0)
            }
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
                multiplexed: !line.starts_with(b"HTTP/1"),
                ..ResponseHead::default()
            };
            return true;
        }
        let Some((name, value)) = split_header(line) else {
            return true;
        };
        let head = &mut self.head;
        if name.eq_ignore_ascii_case("content-length") {
            head.content_length = value.parse::<u64>().ok();
            let whole_body = head.status == 200 && matches!(self.mode, BodyMode::Whole);
            let limit = self.sink.as_ref().and_then(Sink::limit);
            if let (true, Some(length), Some(limit)) = (whole_body, head.content_length, limit) {
                if length > limit {
                    // Refuse before the first byte of a body we would only throw away.
                    self.failure.get_or_insert(FetchError::TooLarge { limit });
                    return false;
                }
            }
        } else if name.eq_ignore_ascii_case("content-range") {
            head.content_range = parse_content_range(value);
        } else if name.eq_ignore_ascii_case("etag") {
            head.etag = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("last-modified") {
            head.last_modified = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("retry-after") {
            head.retry_after = Some(value.to_string());
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

/// `Name: value\r\n` → (`Name`, `value`).
fn split_header(line: &[u8]) -> Option<(&str, &str)> {
    let line = std::str::from_utf8(line).ok()?;
    let (name, value) = line.split_once(':')?;
    Some((name.trim(), value.trim()))
}

/// `bytes 100-199/1000`, `bytes 100-199/*`, `bytes */1000`.
fn parse_content_range(value: &str) -> Option<ContentRange> {
    let rest = value.strip_prefix("bytes")?.trim_start();
    let (span, total) = rest.split_once('/')?;
    let total = total.trim().parse().ok();
    if span.trim() == "*" {
        return Some(ContentRange {
            start: None,
            end: None,
            total,
        });
    }
    let (start, end) = span.split_once('-')?;
    Some(ContentRange {
        start: Some(start.trim().parse().ok()?),
        end: Some(end.trim().parse().ok()?),
        total,
    })
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
    fn headers_and_ranges() {
        assert_eq!(
            split_header(b"Content-LENGTH:  42 \r\n"),
            Some(("Content-LENGTH", "42"))
        );
        assert_eq!(
            parse_content_range("bytes 100-199/1000"),
            Some(ContentRange {
                start: Some(100),
                end: Some(199),
                total: Some(1000)
            })
        );
        assert_eq!(
            parse_content_range("bytes */1000"),
            Some(ContentRange {
                start: None,
                end: None,
                total: Some(1000)
            })
        );
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }
}
