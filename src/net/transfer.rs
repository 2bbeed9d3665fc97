//! The libcurl handler of one attempt: it receives the response head and streams the body
//! into the attempt's [`Sink`].
//!
//! The callbacks run inside `curl_multi_socket_action`, on the loop's thread. They never
//! block and never touch the engine: the header callback records the response head, the
//! write callback hands bytes to the sink and, on the first problem, records it in
//! `failure` and tells curl to stop; the engine reads the outcome when curl reports the
//! transfer finished.

use std::rc::Rc;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use curl::easy::{Handler, InfoType, WriteError};

use crate::api::ByteRange;
use crate::body::sink::{Flow, Sink};
use crate::error::FetchError;
use crate::net::pacer::Pacer;
use crate::net::redirect::{is_redirect, Hops};
use crate::net::response::ResponseHead;

/// How the body of this attempt relates to the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyMode {
    /// The whole file.
    Whole,
    /// Continuing a kept partial of `offset` bytes (`Range: bytes=offset-`).
    Resume { offset: u64 },
    /// Only these bytes (`Range: bytes=start-end`).
    Range(ByteRange),
}

/// Where to say that a TLS handshake agreed on HTTP/2, and for which scheduler slot.
pub(crate) struct AlpnLearner {
    pub tell: Sender<String>,
    pub slot: String,
}

/// The curl handler of one attempt. `sink` is `Some` until the engine takes it out when
/// the attempt ends.
pub(crate) struct Transfer {
    pub sink: Option<Sink>,
    pub head: ResponseHead,
    pub mode: BodyMode,
    /// The URL speaks HTTP (ranges are then checked against the status and Content-Range;
    /// for file:// and ftp:// libcurl applies them itself).
    pub http: bool,
    /// The request was conditional (a 304 is then an answer, not an error).
    pub conditional: bool,
    /// The request's exact size, if it gave one.
    pub size: Option<u64>,
    /// The first local reason to stop this attempt (cap exceeded, disk error), if any.
    pub failure: Option<FetchError>,
    /// The sink has every byte it wants; curl was stopped on purpose.
    pub complete_early: bool,
    /// Why the last socket libcurl asked for could not be opened: libcurl reports that as
    /// a plain connect failure and leaves CURLINFO_OS_ERRNO at 0, so EMFILE is known here.
    pub socket_error: Option<std::io::Error>,
    body_started: bool,
    /// Body bytes curl delivered over the network (a resumed prefix is not among them).
    pub network_bytes: u64,
    /// Bytes reported in the last `progress` event.
    pub reported: u64,
    pub started_at: Instant,
    /// When the last response header line came (the response timeout counts from the
    /// later of this and the request being sent).
    pub heard_at: Option<Instant>,
    /// The response timeout of this attempt (see `engine/watch.rs`).
    pub response_timeout: Duration,
    /// The engine's number for this attempt: a response-timeout check names it, so that it
    /// never hits a later attempt that reuses the curl token.
    pub serial: u64,
    /// The buckets this transfer draws on: the shared `--max-speed` one and the request's
    /// own `max_speed`, where there are such limits.
    pub pacers: [Option<Rc<Pacer>>; 2],
    /// This transfer's curl token, to queue in a bucket that pauses it.
    pub key: usize,
    /// Set while the engine does not yet know whether the slot multiplexes (see
    /// `Handler::debug`).
    pub alpn_learner: Option<AlpnLearner>,
    /// Redirects the engine follows itself for this attempt (see `net::redirect`).
    pub hops: Hops,
}

impl Transfer {
    pub fn new(sink: Sink, mode: BodyMode, http: bool) -> Transfer {
        Transfer {
            sink: Some(sink),
            head: ResponseHead::default(),
            mode,
            http,
            conditional: false,
            size: None,
            failure: None,
            complete_early: false,
            socket_error: None,
            body_started: false,
            network_bytes: 0,
            reported: 0,
            started_at: Instant::now(),
            heard_at: None,
            response_timeout: Duration::ZERO,
            serial: 0,
            pacers: [None, None],
            key: 0,
            alpn_learner: None,
            hops: Hops::default(),
        }
    }

    /// Bytes stored by this attempt (a resumed prefix included).
    pub fn received(&self) -> u64 {
        self.sink.as_ref().map_or(0, Sink::received)
    }

    /// The body has begun: the response timeout no longer applies.
    pub fn body_started(&self) -> bool {
        self.body_started
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
    /// Open a socket for libcurl, close-on-exec as the curl crate's own opener does, and
    /// keep the OS error when there is none (EMFILE must not look like a refused connection).
    fn open_socket(
        &mut self,
        family: libc::c_int,
        socktype: libc::c_int,
        protocol: libc::c_int,
    ) -> Option<curl_sys::curl_socket_t> {
        // SAFETY: socket(2) with libcurl's arguments; the descriptor goes to libcurl.
        let fd = unsafe { libc::socket(family, socktype | libc::SOCK_CLOEXEC, protocol) };
        if fd >= 0 {
            self.socket_error = None;
            return Some(fd);
        }
        self.socket_error = Some(std::io::Error::last_os_error());
        None
    }

    /// Only called for handles with `VERBOSE` on: the first transfers to an https slot
    /// whose protocol is not yet known. The server's choice of HTTP/2 is known as soon as
    /// the TLS handshake ends, a round trip before the first response would say it.
    fn debug(&mut self, kind: InfoType, data: &[u8]) {
        if matches!(kind, InfoType::Text) && data.starts_with(b"ALPN: server accepted h2") {
            if let Some(learner) = self.alpn_learner.take() {
                let _ = learner.tell.send(learner.slot);
            }
        }
    }

    fn write(&mut self, data: &[u8]) -> Result<usize, WriteError> {
        if self.hops.manual && is_redirect(self.head.status) {
            // The body of a redirect the engine will follow: not the file's.
            return Ok(data.len());
        }
        if !self.body_started {
            self.body_started = true;
            if let Err(err) = self.prepare_body() {
                self.failure.get_or_insert(err);
                return Ok(0);
            }
        }
        for pacer in self.pacers.iter().flatten() {
            if !pacer.admit(self.key) {
                // Over a rate limit: curl keeps the chunk until the engine unpauses us.
                return Err(WriteError::Pause);
            }
        }
        let Some(sink) = self.sink.as_mut() else {
            return Ok(0);
        };
        let flow = sink.write(data);
        if !matches!(flow, Ok(Flow::Pause)) {
            // A paused piece is offered again: counted when it is taken.
            self.network_bytes += data.len() as u64;
            for pacer in self.pacers.iter().flatten() {
                pacer.spend(data.len());
            }
        }
        match flow {
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
        self.heard_at = Some(Instant::now());
        self.head.take(line);
        let head = &self.head;
        let whole_body = head.status == 200 && matches!(self.mode, BodyMode::Whole);
        let limit = self.sink.as_ref().and_then(Sink::limit);
        if let (true, Some(length), Some(limit)) = (whole_body, head.content_length, limit) {
            if length > limit {
                // The Content-Length line just said so. Refuse before the first byte of a body we would only throw away.
                self.failure.get_or_insert(FetchError::TooLarge { limit });
                return false;
            }
        }
        true
    }
}
