//! The event loop: one thread, one `mio::Poll`, one libcurl multi handle.
//!
//! Each turn of the loop waits for readiness (curl sockets, stdin, wake-ups, signals) or
//! curl's timer, then, in this order:
//! 1. hands ready sockets to `curl_multi_socket_action` and re-arms them;
//! 2. reads request lines, queueing downloads and carrying out cancels;
//! 3. serves curl's timer;
//! 4. collects finished transfers: verify and place, try the next URL, or fail;
//! 5. starts queued downloads while the limits allow;
//! 6. emits throttled progress, and hands the turn's events to the stdout writer.
//!
//! Every step is O(work done): the socket-action API tells us which socket is ready and
//! which transfers finished, so nothing scans all transfers on each event.

use std::collections::HashMap;
use std::ffi::CStr;
use std::time::{Duration, Instant};

use curl::easy::{Easy2, HttpVersion, List};
use curl::multi::{Easy2Handle, Multi};
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::config::Options;
use crate::curl_io::CurlIo;
use crate::error::FetchError;
use crate::input::{Input, Line, ReadState};
use crate::output::Output;
use crate::protocol::{self, AttemptBody, ErrorBody, Event, HashMapBody, Request};
use crate::scheduler::Scheduler;
use crate::sink::{self, Placed, Sink};
use crate::transfer::{Job, Transfer};

const STDIN: Token = Token(0);
const WAKER: Token = Token(1);
const SIGNALS: Token = Token(2);
const STDOUT: Token = Token(3);

/// Bytes of stdin read per turn before the loop serves sockets again.
const INPUT_BUDGET: usize = 256 * 1024;
/// Minimum time between two `progress` events of one transfer.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// libcurl's receive buffer per transfer.
const RECEIVE_BUFFER: usize = 64 * 1024;

/// Where a live (unfinished) download is.
enum Live {
    Queued { seq: u64 },
    Active { token: usize },
}

/// How a run ended, for the exit status.
#[derive(Default)]
struct Totals {
    ok: u64,
    failed: u64,
    invalid: u64,
    bytes: u64,
}

/// Why the loop is stopping early.
enum Stop {
    Signal(i32),
    StdoutClosed,
}

pub struct Engine {
    options: Options,
    poll: Poll,
    multi: Multi,
    curl_io: CurlIo,
    transfers: Slab<Easy2Handle<Transfer>>,
    scheduler: Scheduler,
    live: HashMap<String, Live>,
    input: Input,
    input_pending: bool,
    output: Output,
    signals: Signals,
    next_seq: u64,
    totals: Totals,
    started: Instant,
    stop: Option<Stop>,
    /// Active transfers that asked for progress events, and when to next report them.
    progress_wanted: usize,
    next_progress: Instant,
    /// Reused buffer for finished-transfer messages.
    finished: Vec<(usize, Result<(), curl::Error>)>,
    libcurl_version: String,
    has_http2: bool,
}

/// Run the helper until stdin closes and all work is done; returns the exit status.
pub fn run(options: Options) -> i32 {
    match Engine::new(options) {
        Ok(engine) => engine.run(),
        Err(err) => {
            eprintln!("fetchmux: cannot start: {err}");
            2
        }
    }
}

impl Engine {
    fn new(options: Options) -> Result<Engine, Box<dyn std::error::Error>> {
        let poll = Poll::new()?;
        let waker = std::sync::Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;

        let mut multi = Multi::new();
        let curl_io = CurlIo::install(&mut multi)?;
        multi.pipelining(false, true)?;
        let max_parallel = options.max_parallel as usize;
        let max_per_host = options.max_per_host as usize;
        // curl's own caps match ours, so that queued work never opens extra connections and
        // its connection cache does not hold more than we could use.
        multi.set_max_total_connections(max_parallel)?;
        multi.set_max_host_connections(max_per_host)?;
        multi.set_max_connects(max_parallel)?;

        let version = curl::Version::get();
        let input = Input::open(poll.registry(), STDIN, std::sync::Arc::clone(&waker));
        let output = Output::start(waker);
        output.watch_for_close(poll.registry(), STDOUT);
        Ok(Engine {
            scheduler: Scheduler::new(max_parallel, max_per_host),
            options,
            curl_io,
            multi,
            transfers: Slab::with_capacity(max_parallel),
            live: HashMap::new(),
            input,
            input_pending: true,
            output,
            signals,
            next_seq: 0,
            totals: Totals::default(),
            started: Instant::now(),
            stop: None,
            progress_wanted: 0,
            next_progress: Instant::now(),
            finished: Vec::new(),
            libcurl_version: version.version().to_string(),
            has_http2: version.feature_http2(),
            poll,
        })
    }

    fn run(mut self) -> i32 {
        self.hello();
        let mut events = Events::with_capacity(1024);
        loop {
            self.output.flush();
            if self.output.is_broken() && self.stop.is_none() {
                self.stop = Some(Stop::StdoutClosed);
                self.abort_all();
            }
            if self.stop.is_some() || (self.input.is_eof() && self.live.is_empty()) {
                break;
            }
            let timeout = self.poll_timeout();
            if let Err(err) = self.poll.poll(&mut events, timeout) {
                if err.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                eprintln!("fetchmux: poll failed: {err}");
                self.abort_all();
                self.output.close();
                return 2;
            }
            for event in events.iter() {
                match event.token() {
                    STDIN | WAKER => self.input_pending = true,
                    SIGNALS => self.on_signals(),
                    STDOUT => self.output.on_event(event),
                    token => {
                        if let Some(fd) = CurlIo::fd_of(token) {
                            let what = CurlIo::events_for(event);
                            if let Err(err) = self.multi.action(fd, &what) {
                                eprintln!("fetchmux: curl socket action failed: {err}");
                            }
                            self.curl_io.apply(self.poll.registry());
                            self.curl_io.rearm(self.poll.registry(), fd);
                        }
                    }
                }
            }
            if self.stop.is_some() {
                continue;
            }
            if self.input_pending {
                self.read_input();
            }
            self.serve_curl_timer();
            self.collect_finished();
            self.admit();
            self.report_progress();
        }
        self.bye()
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if self.input_pending {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let mut deadline = self.curl_io.deadline();
        if self.progress_wanted > 0 {
            deadline = Some(deadline.map_or(self.next_progress, |d| d.min(self.next_progress)));
        }
        deadline.map(|d| d.saturating_duration_since(now))
    }

    fn hello(&mut self) {
        let mut features = Vec::new();
        if self.has_http2 {
            features.push("http2");
        }
        features.extend(crate::digest::Algorithm::ALL.map(|a| a.name()));
        features.extend(["urls", "cancel", "priority", "progress", "cached"]);
        self.output.event(&Event::Hello {
            name: "fetchmux",
            version: env!("CARGO_PKG_VERSION"),
            protocol: protocol::PROTOCOL_VERSION,
            libcurl: &self.libcurl_version,
            features: &features,
        });
    }

    fn bye(mut self) -> i32 {
        let elapsed_ms = self.started.elapsed().as_millis() as u64;
        self.output.event(&Event::Bye {
            ok: self.totals.ok,
            failed: self.totals.failed,
            invalid: self.totals.invalid,
            bytes: self.totals.bytes,
            elapsed_ms,
        });
        self.output.close();
        match self.stop {
            Some(Stop::Signal(signal)) => 128 + signal,
            Some(Stop::StdoutClosed) => 1,
            None if self.totals.failed + self.totals.invalid > 0 => 1,
            None => 0,
        }
    }

    // -------------------------------------------------------------------------------
    // Requests

    fn read_input(&mut self) {
        let mut lines: Vec<(u64, Result<Request, protocol::Rejected>)> = Vec::new();
        let state = self.input.read(INPUT_BUDGET, |line| match line {
            Line::Text(_, text) if text.iter().all(u8::is_ascii_whitespace) => {}
            Line::Text(no, text) => lines.push((no, protocol::parse_request(text))),
            Line::TooLong(no) => lines.push((
                no,
                Err(protocol::Rejected {
                    id: None,
                    error: FetchError::InvalidRequest(format!(
                        "line is longer than {} bytes",
                        protocol::MAX_LINE
                    )),
                }),
            )),
        });
        self.input_pending = state == ReadState::More;
        for (line_no, parsed) in lines {
            match parsed {
                Ok(Request::Download(download)) => self.queue_download(line_no, *download),
                Ok(Request::Cancel { id }) => self.cancel(line_no, &id),
                Err(rejected) => self.invalid(line_no, rejected.id.as_deref(), &rejected.error),
            }
        }
    }

    fn invalid(&mut self, line: u64, id: Option<&str>, error: &FetchError) {
        self.totals.invalid += 1;
        self.output.event(&Event::Invalid {
            line,
            id,
            error: ErrorBody::from(error),
        });
    }

    fn queue_download(&mut self, line_no: u64, download: protocol::Download) {
        if self.live.contains_key(&download.id) {
            let error = FetchError::InvalidRequest(format!(
                "id `{}` is already in use by an unfinished download",
                download.id
            ));
            self.invalid(line_no, Some(&download.id), &error);
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.live.insert(download.id.clone(), Live::Queued { seq });
        self.scheduler.push(Box::new(Job::new(download, seq)));
    }

    fn cancel(&mut self, line_no: u64, id: &str) {
        match self.live.remove(id) {
            None => {
                let error =
                    FetchError::InvalidRequest(format!("no unfinished download has id `{id}`"));
                self.invalid(line_no, Some(id), &error);
            }
            Some(Live::Queued { seq }) => {
                self.scheduler.cancel(seq);
                self.report_failed(id, &FetchError::Cancelled, &[]);
            }
            Some(Live::Active { token }) => {
                let (mut job, _) = self.detach(token);
                let url = job.url().to_string();
                job.attempts.push(AttemptBody {
                    url,
                    error: ErrorBody::from(&FetchError::Cancelled),
                });
                self.report_failed(id, &FetchError::Cancelled, &job.attempts);
            }
        }
    }

    // -------------------------------------------------------------------------------
    // Transfers

    /// Start queued downloads while the limits allow.
    fn admit(&mut self) {
        while let Some(job) = self.scheduler.admit_next() {
            if job.attempts.is_empty() {
                let request = &job.request;
                if let Some(placed) = sink::cached(&request.dest, request.size, &request.hashes) {
                    self.scheduler.release(job.url());
                    self.live.remove(&job.request.id);
                    self.report_done(&job, &placed, None, None, true);
                    continue;
                }
            }
            if let Err((job, error)) = self.start(job) {
                self.scheduler.release(job.url());
                self.attempt_failed(job, error);
            }
        }
    }

    fn start(&mut self, job: Box<Job>) -> Result<(), (Box<Job>, FetchError)> {
        let request = &job.request;
        let sink = Sink::new(
            &request.dest,
            request.hashes.iter().map(|(a, _)| *a),
            job.limit(self.options.max_size),
        );
        let wants_progress = request.progress;
        let mut easy = Easy2::new(Transfer::new(job, sink));
        if let Err(err) = self.configure(&mut easy) {
            let job = easy.get_mut().job.take().expect("job present");
            return Err((
                job,
                FetchError::InvalidRequest(format!("cannot set up: {err}")),
            ));
        }
        let entry = self.transfers.vacant_entry();
        let token = entry.key();
        let added = self.multi.add2(easy);
        self.curl_io.apply(self.poll.registry());
        let mut handle = match added {
            Ok(handle) => handle,
            Err(err) => panic!("curl refused a new transfer: {err}"),
        };
        handle.set_token(token).expect("setting a curl token");
        let job = handle.get_ref().job();
        let attempt = job.attempts.len() as u32 + 1;
        self.output.event(&Event::Start {
            id: &job.request.id,
            url: job.url(),
            attempt,
        });
        self.live
            .insert(job.request.id.clone(), Live::Active { token });
        entry.insert(handle);
        if wants_progress {
            self.progress_wanted += 1;
        }
        Ok(())
    }

    fn configure(&self, easy: &mut Easy2<Transfer>) -> Result<(), curl::Error> {
        let job = easy.get_ref().job();
        let url = job.url().to_string();
        let mut headers = List::new();
        for (name, value) in &job.request.headers {
            headers.append(&format!("{name}: {value}"))?;
        }
        easy.url(&url)?;
        set_protocols(easy)?;
        easy.follow_location(true)?;
        easy.max_redirections(self.options.max_redirects)?;
        // Errors surface as CURLE_HTTP_RETURNED_ERROR before any body is written.
        easy.fail_on_error(true)?;
        // Package files are hashed exactly as served: never decode Content-Encoding.
        easy.http_content_decoding(false)?;
        easy.http_headers(headers)?;
        easy.useragent(&self.options.user_agent)?;
        if let Some(ca_file) = &self.options.ca_file {
            easy.cainfo(ca_file)?;
        }
        easy.connect_timeout(self.options.connect_timeout())?;
        if self.options.low_speed_limit > 0 && self.options.low_speed_time > 0 {
            easy.low_speed_limit(self.options.low_speed_limit)?;
            easy.low_speed_time(Duration::from_secs(self.options.low_speed_time))?;
        }
        easy.buffer_size(RECEIVE_BUFFER)?;
        if std::env::var_os("FETCHMUX_CURL_VERBOSE").is_some() {
            easy.verbose(true)?;
        }
        if self.has_http2 {
            easy.http_version(HttpVersion::V2TLS)?;
            // Wait for a connection that can multiplex rather than opening another.
            easy.pipewait(true)?;
        }
        Ok(())
    }

    /// Take an active transfer out of curl and the slot tables; returns its job and sink.
    fn detach(&mut self, token: usize) -> (Box<Job>, Option<Sink>) {
        let handle = self.transfers.remove(token);
        let removed = self.multi.remove2(handle);
        self.curl_io.apply(self.poll.registry());
        let mut easy = removed.unwrap_or_else(|err| panic!("curl lost a transfer: {err}"));
        let transfer = easy.get_mut();
        let job = transfer.job.take().expect("job present");
        let sink = transfer.sink.take();
        self.totals.bytes += sink.as_ref().map_or(0, Sink::received);
        self.scheduler.release(job.url());
        if job.request.progress {
            self.progress_wanted -= 1;
        }
        (job, sink)
    }

    fn collect_finished(&mut self) {
        let finished = &mut self.finished;
        let transfers = &self.transfers;
        self.multi.messages(|message| {
            let Ok(token) = message.token() else { return };
            // result_for2 attaches curl's error buffer ("Operation too slow…") to the error.
            let result = transfers.get(token).and_then(|h| message.result_for2(h));
            if let Some(result) = result {
                finished.push((token, result));
            }
        });
        let mut finished = std::mem::take(&mut self.finished);
        for (token, result) in finished.drain(..) {
            self.finish(token, result);
        }
        self.finished = finished;
    }

    /// An attempt ended: place the bytes or decide what comes next.
    fn finish(&mut self, token: usize, result: Result<(), curl::Error>) {
        let handle = &mut self.transfers[token];
        let transfer = handle.get_mut();
        let failure = transfer.failure.take();
        let head_status = transfer.head.status;
        let status = handle.response_code().unwrap_or(head_status);
        let (job, sink) = self.detach(token);
        let sink = sink.expect("sink present until the attempt ends");
        // Dropping the sink on any failure removes its temporary file.
        let outcome = match (failure, result) {
            (Some(failure), _) => Err(failure),
            (None, Err(err)) => Err(FetchError::from_curl(&err, status)),
            (None, Ok(())) => check_status(job.url(), status)
                .and_then(|()| sink.place(job.request.size, &job.request.hashes)),
        };
        match outcome {
            Ok(placed) => {
                self.live.remove(&job.request.id);
                let status = (status > 0).then_some(status);
                self.report_done(&job, &placed, Some(job.url()), status, false);
            }
            Err(error) => self.attempt_failed(job, error),
        }
    }

    /// Record a failed attempt; try the next URL, or report the download failed.
    fn attempt_failed(&mut self, mut job: Box<Job>, error: FetchError) {
        job.attempts.push(AttemptBody {
            url: job.url().to_string(),
            error: ErrorBody::from(&error),
        });
        let worth_another_url = !matches!(error, FetchError::Io { .. });
        if worth_another_url && job.url_index + 1 < job.request.urls.len() {
            job.url_index += 1;
            self.live
                .insert(job.request.id.clone(), Live::Queued { seq: job.seq });
            self.scheduler.push(job);
            return;
        }
        self.live.remove(&job.request.id);
        self.report_failed(&job.request.id, &error, &job.attempts);
    }

    fn report_done(
        &mut self,
        job: &Job,
        placed: &Placed,
        url: Option<&str>,
        status: Option<u32>,
        cached: bool,
    ) {
        self.totals.ok += 1;
        let path = job.request.dest.to_string_lossy();
        self.output.event(&Event::Done {
            id: &job.request.id,
            path: &path,
            url,
            size: placed.size,
            hashes: HashMapBody(&placed.hashes),
            status,
            attempts: job.attempts.len() as u32 + u32::from(!cached),
            elapsed_ms: job.received_at.elapsed().as_millis() as u64,
            cached,
            not_modified: false,
        });
    }

    fn report_failed(&mut self, id: &str, error: &FetchError, attempts: &[AttemptBody]) {
        self.totals.failed += 1;
        self.output.event(&Event::Failed {
            id,
            error: ErrorBody::from(error),
            attempts,
        });
    }

    fn serve_curl_timer(&mut self) {
        let due = self
            .curl_io
            .deadline()
            .is_some_and(|deadline| deadline <= Instant::now());
        if !due {
            return;
        }
        self.curl_io.clear_deadline();
        if let Err(err) = self.multi.timeout() {
            eprintln!("fetchmux: curl timeout handling failed: {err}");
        }
        self.curl_io.apply(self.poll.registry());
        self.curl_io.refresh(&self.multi);
    }

    fn report_progress(&mut self) {
        if self.progress_wanted == 0 {
            return;
        }
        let now = Instant::now();
        if now < self.next_progress {
            return;
        }
        self.next_progress = now + PROGRESS_EVERY;
        for (_, handle) in self.transfers.iter_mut() {
            let transfer = handle.get_mut();
            let received = transfer.received();
            let job = transfer.job();
            if !job.request.progress || received == transfer.reported {
                continue;
            }
            let total = job.request.size.or(transfer.head.content_length);
            self.output.event(&Event::Progress {
                id: &job.request.id,
                bytes: received,
                total,
            });
            transfer.reported = received;
        }
    }

    // -------------------------------------------------------------------------------
    // Stopping

    fn on_signals(&mut self) {
        let signal = self.signals.pending().next();
        if let Some(signal) = signal {
            eprintln!("fetchmux: caught signal {signal}, aborting transfers");
            self.stop = Some(Stop::Signal(signal));
            self.abort_all();
        }
    }

    /// Fail everything unfinished as `aborted`, removing temporary files.
    fn abort_all(&mut self) {
        let tokens: Vec<usize> = self.transfers.iter().map(|(token, _)| token).collect();
        for token in tokens {
            let (mut job, _sink) = self.detach(token);
            job.attempts.push(AttemptBody {
                url: job.url().to_string(),
                error: ErrorBody::from(&FetchError::Aborted),
            });
            self.live.remove(&job.request.id);
            self.report_failed(&job.request.id, &FetchError::Aborted, &job.attempts);
        }
        while let Some(job) = self.scheduler.drain_one() {
            self.live.remove(&job.request.id);
            self.report_failed(&job.request.id, &FetchError::Aborted, &job.attempts);
        }
        self.live.clear();
    }
}

/// A finished HTTP response must be a plain success; other schemes have no status to judge.
fn check_status(url: &str, status: u32) -> Result<(), FetchError> {
    let http = protocol::scheme_of(url).is_some_and(|s| s == "http" || s == "https");
    if (http && !(200..300).contains(&status)) || status == 206 {
        return Err(FetchError::HttpStatus { status });
    }
    Ok(())
}

/// Which schemes a request may use, and (narrower) which a redirect may lead to. The curl
/// crate does not wrap these options, so they are set on the raw handle.
fn set_protocols(easy: &mut Easy2<Transfer>) -> Result<(), curl::Error> {
    const CURLOPT_PROTOCOLS_STR: curl_sys::CURLoption = curl_sys::CURLOPTTYPE_OBJECTPOINT + 318;
    const CURLOPT_REDIR_PROTOCOLS_STR: curl_sys::CURLoption =
        curl_sys::CURLOPTTYPE_OBJECTPOINT + 319;
    const REQUEST: &CStr = c"http,https,ftp,file";
    const REDIRECT: &CStr = c"http,https";
    for (option, value) in [
        (CURLOPT_PROTOCOLS_STR, REQUEST),
        (CURLOPT_REDIR_PROTOCOLS_STR, REDIRECT),
    ] {
        // SAFETY: a valid easy handle and a NUL-terminated string that libcurl copies.
        let code = unsafe { curl_sys::curl_easy_setopt(easy.raw(), option, value.as_ptr()) };
        if code != curl_sys::CURLE_OK {
            return Err(curl::Error::new(code));
        }
    }
    Ok(())
}
