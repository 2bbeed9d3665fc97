//! The event loop: one thread, one `mio::Poll`, one libcurl multi handle.
//!
//! Each turn of the loop waits for readiness (curl sockets, stdin, wake-ups, signals) or
//! curl's timer, then, in this order:
//! 1. hands ready sockets to `curl_multi_socket_action` and re-arms them;
//! 2. reads request lines, queueing downloads and carrying out cancels;
//! 3. serves curl's timer, and requeues downloads whose retry delay is over;
//! 4. collects finished transfers: verify and place, or retry (another source, or the same
//!    one after a backoff), or fail;
//! 5. starts queued downloads while the limits allow;
//! 6. emits throttled progress, and hands the turn's events to the stdout writer.
//!
//! Every step is O(work done): the socket-action API tells us which socket is ready and
//! which transfers finished, so nothing scans all transfers on each event.

use std::collections::HashMap;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use curl::easy::Easy2;
use curl::multi::{Easy2Handle, Multi};
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::body::hasher::{Answer, Hasher};
use crate::body::known_files::KnownFiles;
use crate::body::placer::{self, Placer};
use crate::body::sink::{self, Sink, Verified};
use crate::config::Options;
use crate::error::{Disposition, FetchError};
use crate::io::stdin::{Input, Line, ReadState};
use crate::io::stdout::Output;
use crate::net::attempt::{self, Verdict};
use crate::net::curl_io::CurlIo;
use crate::net::transfer::{Job, ResponseHead, Transfer};
use crate::policy::mirrors::Mirrors;
use crate::policy::scheduler::Scheduler;
use crate::protocol::{self, AttemptBody, ErrorBody, Event, HashMapBody, Request, Source};

const STDIN: Token = Token(0);
const WAKER: Token = Token(1);
const SIGNALS: Token = Token(2);
const STDOUT: Token = Token(3);

/// Bytes of stdin read per turn before the loop serves sockets again.
const INPUT_BUDGET: usize = 256 * 1024;
/// Minimum time between two `progress` events of one transfer.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Where a live (unfinished) download is.
enum Live {
    /// In the scheduler: queued, or waiting out a retry delay.
    Queued {
        seq: u64,
    },
    Active {
        token: usize,
    },
    /// Received; a worker is finishing the digests (see `hasher`).
    Hashing {
        key: u64,
    },
    /// Verified; a worker is writing the bytes into place (see `placer`).
    Placing,
}

/// A verified body the placing worker is writing; `done` follows when it is in place.
struct Placing {
    job: Box<Job>,
    placed: Verified,
    head: ResponseHead,
    status: u32,
    elapsed: Duration,
}

/// Verified bodies waiting for the placing worker, at most: new transfers wait beyond it,
/// which bounds the memory they hold (each is under 128 KiB) when the disk is slow.
const MAX_PLACING: usize = 512;
/// Buffers kept for reuse, at most (each under 128 KiB).
const SPARE_BUFFERS: usize = 64;
/// Bytes of buffers that received bodies may hold while the hashing workers catch up, at
/// most: new transfers wait beyond it. A transfer ends (and frees its slot) once curl has
/// the whole body, so without this a network faster than the workers would pile up
/// finished bodies in memory (1,000 × 256 KiB with one worker: 117 MiB).
const HASHING_BUDGET: usize = 32 << 20;

/// An attempt whose body arrived, waiting for a worker's digests before it is placed.
struct Concluding {
    /// Bytes of buffers the body holds until the worker answers.
    held: usize,
    job: Box<Job>,
    sink: Sink,
    head: ResponseHead,
    status: u32,
    elapsed: Duration,
}

/// How a successful attempt ended.
struct Success<'a> {
    placed: Option<&'a Verified>,
    url: Option<&'a str>,
    status: Option<u32>,
    head: Option<&'a ResponseHead>,
    cached: bool,
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
    /// Handles of ended attempts, kept for reuse (at most `--max-parallel`).
    spare_handles: Vec<Easy2<Transfer>>,
    scheduler: Scheduler,
    mirrors: Mirrors,
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
    /// When the next delayed retry is due.
    retry_wake: Option<Instant>,
    /// Workers hashing large bodies, their answers, and the attempts waiting for them.
    hasher: Hasher,
    hashed: Receiver<Answer>,
    concluding: HashMap<u64, Concluding>,
    /// Bytes of buffers the bodies in `concluding` hold (see [`HASHING_BUDGET`]).
    concluding_held: usize,
    /// The worker that writes verified small bodies into place, its answers, and the
    /// downloads waiting for them (the slab key is the placement's key).
    placer: Placer,
    placer_answers: Receiver<placer::Answer>,
    placing: Slab<Placing>,
    /// Slots that answered over HTTP/1.x, and the channel on which transfers report TLS
    /// handshakes that agreed on HTTP/2.
    http1_slots: std::collections::HashSet<String>,
    alpn_learned: (
        std::sync::mpsc::Sender<String>,
        std::sync::mpsc::Receiver<String>,
    ),
    /// Buffers of placed bodies, for the next small bodies (no allocation per file).
    spare_buffers: Vec<Vec<u8>>,
    /// What the destination directories hold, for the `cached` check.
    known_files: KnownFiles,
    /// The streams-per-connection cap curl has now (see `spread_streams`).
    streams_per_connection: usize,
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
        let max_streams = options.max_streams as usize;
        multi.set_max_concurrent_streams(max_streams)?;

        let version = curl::Version::get();
        let (hasher, hashed) = Hasher::new(std::sync::Arc::clone(&waker));
        let (placer, placer_answers) = Placer::new(std::sync::Arc::clone(&waker));
        let input = Input::open(poll.registry(), STDIN, std::sync::Arc::clone(&waker));
        let output = Output::start(waker);
        output.watch_for_close(poll.registry(), STDOUT);
        Ok(Engine {
            scheduler: Scheduler::new(max_parallel, max_per_host, options.max_streams as usize),
            mirrors: Mirrors::default(),
            options,
            curl_io,
            multi,
            transfers: Slab::with_capacity(max_parallel),
            spare_handles: Vec::new(),
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
            retry_wake: None,
            hasher,
            hashed,
            concluding: HashMap::new(),
            concluding_held: 0,
            placer,
            placer_answers,
            placing: Slab::new(),
            http1_slots: Default::default(),
            alpn_learned: std::sync::mpsc::channel(),
            spare_buffers: Vec::new(),
            known_files: KnownFiles::default(),
            streams_per_connection: max_streams,
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
            self.requeue_due_retries();
            self.collect_finished();
            self.collect_hashed();
            self.collect_placed();
            self.collect_alpn();
            self.admit();
            self.spread_streams();
            self.report_progress();
        }
        self.bye()
    }

    fn poll_timeout(&mut self) -> Option<Duration> {
        self.retry_wake = self.scheduler.next_wake();
        if self.input_pending {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let progress = (self.progress_wanted > 0).then_some(self.next_progress);
        [self.curl_io.deadline(), progress, self.retry_wake]
            .into_iter()
            .flatten()
            .min()
            .map(|d| d.saturating_duration_since(now))
    }

    fn hello(&mut self) {
        let mut features = Vec::new();
        if self.has_http2 {
            features.push("http2");
        }
        features.extend(crate::body::digest::Algorithm::ALL.map(|a| a.name()));
        features.extend([
            "urls",
            "mirrors",
            "retry",
            "resume",
            "range",
            "conditional",
            "cancel",
            "priority",
            "progress",
            "cached",
        ]);
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
                Ok(Request::Mirrors(decl)) => {
                    let default = self.options.max_per_mirror as usize;
                    self.mirrors.declare(decl, default);
                }
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
        let refusal = if self.live.contains_key(&download.id) {
            Some(format!(
                "id `{}` is already in use by an unfinished download",
                download.id
            ))
        } else if let Source::Mirror { set, .. } = &download.source {
            self.mirrors
                .bases(set)
                .is_none()
                .then(|| format!("no mirror set `{set}` has been declared (op `mirrors`)"))
        } else {
            None
        };
        if let Some(message) = refusal {
            let error = FetchError::InvalidRequest(message);
            self.invalid(line_no, Some(&download.id), &error);
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let job = Box::new(Job::new(download, seq));
        self.enqueue(job);
    }

    /// Pick the job's next source and queue it, or fail it when no source is left.
    fn enqueue(&mut self, mut job: Box<Job>) {
        if !self.choose_source(&mut job) {
            let error = match job.attempts.last() {
                Some(_) => None,
                None => Some(FetchError::Network(
                    "every mirror of the set has been put aside after repeated failures"
                        .to_string(),
                )),
            };
            self.fail(job, error);
            return;
        }
        self.enqueue_chosen(job, None);
    }

    /// Set `job.url`, `origin` and `slot` for its next attempt. Untried sources come first;
    /// a source ruled out for this job is never chosen again.
    fn choose_source(&mut self, job: &mut Job) -> bool {
        let Job {
            request,
            tried,
            excluded,
            ..
        } = job;
        let (origin, url, slot) = match &request.source {
            Source::Urls(urls) => {
                let usable = |u: &&String| !excluded.contains(u);
                let Some(url) = urls
                    .iter()
                    .filter(usable)
                    .find(|u| !tried.contains(u))
                    .or_else(|| urls.iter().find(usable))
                else {
                    return false;
                };
                let slot = protocol::host_key(url).unwrap_or_default();
                (url.clone(), url.clone(), slot)
            }
            Source::Mirror { set, .. } => {
                let scheduler = &self.scheduler;
                let load = |base: &str| scheduler.load(&mirror_slot(base));
                let Some(base) = self.mirrors.choose(set, tried, excluded, load) else {
                    return false;
                };
                self.use_mirror(job, base);
                return true;
            }
        };
        job.origin = origin;
        job.url = url;
        job.slot = slot;
        true
    }

    /// Point a mirror job's next attempt at `base`.
    fn use_mirror(&mut self, job: &mut Job, base: String) {
        let Source::Mirror { path, .. } = &job.request.source else {
            return;
        };
        job.url = format!("{base}{path}");
        job.slot = mirror_slot(&base);
        self.scheduler
            .set_limit(&job.slot, self.mirrors.limit(&base));
        job.origin = base;
    }

    /// For a mirror job about to start: a mirror that has become clearly better.
    fn better_mirror(&self, job: &Job) -> Option<String> {
        let Source::Mirror { set, .. } = &job.request.source else {
            return None;
        };
        self.mirrors
            .better_than(set, &job.origin, &job.tried, &job.excluded)
    }

    fn requeue_due_retries(&mut self) {
        if self.retry_wake.is_none_or(|at| at > Instant::now()) {
            return;
        }
        for job in self.scheduler.take_due(Instant::now()) {
            self.scheduler.push(job);
        }
    }

    fn cancel(&mut self, line_no: u64, id: &str) {
        match self.live.remove(id) {
            None => {
                let error =
                    FetchError::InvalidRequest(format!("no unfinished download has id `{id}`"));
                self.invalid(line_no, Some(id), &error);
            }
            Some(Live::Queued { seq }) => {
                let attempts = self
                    .scheduler
                    .cancel(seq)
                    .map(|job| job.attempts)
                    .unwrap_or_default();
                self.report_failed(id, &FetchError::Cancelled, &attempts);
            }
            Some(Live::Active { token }) => {
                let (job, sink, _) = self.detach(token);
                keep_if_resumable(sink);
                self.stop_attempt(job, FetchError::Cancelled);
            }
            Some(Live::Placing) => {
                // Verified and being written: too late to cancel; `done` follows.
                self.live.insert(id.to_string(), Live::Placing);
                let error = FetchError::InvalidRequest(format!(
                    "download `{id}` is verified and being put in place; it cannot be cancelled"
                ));
                self.invalid(line_no, Some(id), &error);
            }
            Some(Live::Hashing { key }) => {
                // Dropping the sink removes the file; the worker's answer finds nobody.
                let waiting = self.take_concluding(key).expect("waiting");
                self.stop_attempt(waiting.job, FetchError::Cancelled);
            }
        }
    }

    // -------------------------------------------------------------------------------
    // Transfers

    /// Start queued downloads while the limits allow.
    fn admit(&mut self) {
        while self.placing.len() < MAX_PLACING && self.concluding_held < HASHING_BUDGET {
            let Some(mut job) = self.scheduler.admit_next() else {
                break;
            };
            if let Some(better) = self.better_mirror(&job) {
                // Health changed while it waited: requeue it for the better mirror.
                self.scheduler.release(&job);
                self.use_mirror(&mut job, better);
                self.scheduler.push(job);
                continue;
            }
            let request = &job.request;
            if job.attempts.is_empty() && self.known_files.may_exist(&request.dest) {
                if let Some(placed) = sink::cached(&request.dest, request.size, &request.hashes) {
                    self.scheduler.release(&job);
                    self.live.remove(&job.request.id);
                    self.report_done(
                        &job,
                        Success {
                            placed: Some(&placed),
                            url: None,
                            status: None,
                            head: None,
                            cached: true,
                        },
                    );
                    continue;
                }
            }
            let recycled = self.spare_handles.pop();
            let token = self.transfers.vacant_key();
            let hashing = (&self.hasher, token);
            let buffer = self.spare_buffers.pop().unwrap_or_default();
            let learner = self.alpn_learner_for(&job);
            let built = attempt::build(
                job,
                &self.options,
                self.has_http2,
                recycled,
                hashing,
                buffer,
                learner,
            );
            let easy = match built {
                Ok(easy) => easy,
                Err((job, error)) => {
                    self.scheduler.release(&job);
                    self.attempt_failed(job, error, None, None);
                    continue;
                }
            };
            let wants_progress = easy.get_ref().job().request.progress;
            let entry = self.transfers.vacant_entry();
            debug_assert_eq!(entry.key(), token, "the sink was told this token");
            let added = self.multi.add2(easy);
            self.curl_io.apply(self.poll.registry());
            let mut handle = added.unwrap_or_else(|err| panic!("curl refused a transfer: {err}"));
            handle.set_token(token).expect("setting a curl token");
            let job = handle.get_ref().job();
            self.output.event(&Event::Start {
                id: &job.request.id,
                url: job.url(),
                attempt: job.attempts.len() as u32 + 1,
            });
            self.live
                .insert(job.request.id.clone(), Live::Active { token });
            entry.insert(handle);
            if wants_progress {
                self.progress_wanted += 1;
            }
        }
    }

    /// For an https transfer to a slot whose protocol is not known yet: where its TLS
    /// handshake reports HTTP/2. Learning it there, rather than from the first response,
    /// lets the slot's transfers multiplex a round trip sooner (scenario L2 of `make bench`).
    fn alpn_learner_for(&self, job: &Job) -> Option<std::sync::mpsc::Sender<String>> {
        let unknown = self.has_http2
            && job.url.starts_with("https:")
            && !self.scheduler.is_multiplexed(&job.slot)
            && !self.http1_slots.contains(&job.slot);
        unknown.then(|| self.alpn_learned.0.clone())
    }

    /// Slots whose TLS handshakes agreed on HTTP/2 since the last look.
    fn collect_alpn(&mut self) {
        while let Ok(slot) = self.alpn_learned.1.try_recv() {
            self.promote(&slot);
        }
    }

    /// `slot` multiplexes: tell the scheduler, and charge its running transfers (admitted
    /// at a whole connection's price) one stream each from now on.
    fn promote(&mut self, slot: &str) {
        if self.scheduler.is_multiplexed(slot) {
            return;
        }
        let mut recosted = 0;
        for (_, handle) in self.transfers.iter_mut() {
            if let Some(job) = handle.get_mut().job.as_mut() {
                if job.slot == slot && job.cost > 1 {
                    job.cost = 1;
                    recosted += 1;
                }
            }
        }
        self.scheduler.mark_multiplexed(slot, recosted);
    }

    /// Keep curl's streams-per-connection cap at what spreads the running HTTP/2 transfers
    /// over all the connections they may use. curl puts a new transfer on the first
    /// connection with a free stream, so with the full `--max-streams` a second wave of 64
    /// transfers all joined one connection and waited out its TCP slow start (scenario L2
    /// of `make bench`: 128 files took 0.41 s instead of 0.25 s).
    fn spread_streams(&mut self) {
        let streams = self.scheduler.streams_per_connection();
        if streams != self.streams_per_connection {
            self.streams_per_connection = streams;
            if let Err(err) = self.multi.set_max_concurrent_streams(streams) {
                eprintln!("fetchmux: cannot set curl's streams per connection: {err}");
            }
        }
    }

    /// Take an active transfer out of curl and the slot tables; returns its job, its sink
    /// and the response head.
    fn detach(&mut self, token: usize) -> (Box<Job>, Option<Sink>, ResponseHead) {
        let handle = self.transfers.remove(token);
        let removed = self.multi.remove2(handle);
        self.curl_io.apply(self.poll.registry());
        let mut easy = removed.unwrap_or_else(|err| panic!("curl lost a transfer: {err}"));
        let transfer = easy.get_mut();
        let job = transfer.job.take().expect("job present");
        let mut sink = transfer.sink.take();
        if let Some(sink) = &mut sink {
            let head = &transfer.head;
            sink.set_validators(head.etag.clone(), head.last_modified.clone());
        }
        self.totals.bytes += transfer.received() + sink.as_ref().map_or(0, Sink::received);
        self.scheduler.release(&job);
        if job.request.progress {
            self.progress_wanted -= 1;
        }
        let head = std::mem::take(&mut transfer.head);
        if self.spare_handles.len() < self.options.max_parallel as usize {
            self.spare_handles.push(easy);
        }
        (job, sink, head)
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
        let status = handle.response_code().unwrap_or(0);
        let transfer = handle.get_mut();
        let status = if status == 0 {
            transfer.head.status
        } else {
            status
        };
        let verdict = attempt::judge(transfer, result, status);
        let elapsed = transfer.started_at.elapsed();
        let (job, sink, head) = self.detach(token);
        if head.multiplexed {
            self.promote(&job.slot);
        } else if head.status > 0 && !self.http1_slots.contains(&job.slot) {
            self.http1_slots.insert(job.slot.clone());
        }
        let mut ended = Concluding {
            held: 0,
            job,
            sink: sink.expect("sink present until the attempt ends"),
            head,
            status,
            elapsed,
        };
        if matches!(verdict, Verdict::Body) && ended.sink.hashing_elsewhere() {
            let (key, held) = ended.sink.finish_hashing();
            let id = ended.job.request.id.clone();
            self.live.insert(id, Live::Hashing { key });
            ended.held = held;
            self.concluding_held += held;
            self.concluding.insert(key, ended);
            return;
        }
        self.conclude(ended, verdict);
    }

    /// What the hashing workers said: unpause transfers that have a buffer again, and
    /// conclude the attempts whose digests are ready.
    fn collect_hashed(&mut self) {
        while let Ok(answer) = self.hashed.try_recv() {
            let (key, answer) = match answer {
                Answer::Hashed { lane, result, .. } => (lane, result),
                Answer::Unpause(token) => {
                    // The token may since belong to another transfer: unpausing one that
                    // is not paused does nothing.
                    if let Some(handle) = self.transfers.get(token) {
                        if let Err(err) = handle.unpause_write() {
                            eprintln!("fetchmux: cannot unpause a transfer: {err}");
                        }
                        self.curl_io.apply(self.poll.registry());
                    }
                    continue;
                }
            };
            // Gone if the download was cancelled meanwhile.
            let Some(mut waiting) = self.take_concluding(key) else {
                continue;
            };
            match answer {
                Ok(digests) => {
                    waiting.sink.hashed(digests);
                    self.conclude(waiting, Verdict::Body);
                }
                Err(error) => {
                    let Concluding {
                        job, sink, head, ..
                    } = waiting;
                    self.attempt_failed(job, error, Some(sink), Some(&head));
                }
            }
        }
    }

    fn take_concluding(&mut self, key: u64) -> Option<Concluding> {
        let waiting = self.concluding.remove(&key)?;
        self.concluding_held -= waiting.held;
        Some(waiting)
    }

    /// Place the bytes of an ended attempt or decide what comes next.
    fn conclude(&mut self, waiting: Concluding, verdict: Verdict) {
        let Concluding {
            job,
            mut sink,
            head,
            status,
            elapsed,
            ..
        } = waiting;
        let outcome = match verdict {
            Verdict::Body | Verdict::PartialComplete => {
                // place() removes the file itself when verification fails.
                match sink.place(job.request.size, &job.request.hashes) {
                    Ok((placed, Some(placement))) => {
                        let id = job.request.id.clone();
                        let key = self.placing.insert(Placing {
                            job,
                            placed,
                            head,
                            status,
                            elapsed,
                        });
                        self.live.insert(id, Live::Placing);
                        self.placer.place(key, placement);
                        return;
                    }
                    Ok((placed, None)) => Ok(Some(placed)),
                    Err(error) => Err((error, None)),
                }
            }
            Verdict::NotModified => {
                sink.discard();
                Ok(None)
            }
            Verdict::PartialStale => {
                // Our partial does not fit the file (it changed, or grew shorter): drop it
                // and fetch the whole file again at once.
                sink.discard();
                self.retry_whole(job);
                return;
            }
            Verdict::Failed(error) => Err((error, Some(sink))),
        };
        match outcome {
            Ok(placed) => self.succeeded(job, placed.as_ref(), &head, status, elapsed),
            Err((error, sink)) => self.attempt_failed(job, error, sink, Some(&head)),
        }
    }

    /// The attempt fetched a verified body that is now in place (or was not modified).
    fn succeeded(
        &mut self,
        job: Box<Job>,
        placed: Option<&Verified>,
        head: &ResponseHead,
        status: u32,
        elapsed: Duration,
    ) {
        if let Source::Mirror { .. } = job.request.source {
            let bytes = placed.map_or(0, |p| p.size);
            self.mirrors.record_success(&job.origin, bytes, elapsed);
            let limit = self.mirrors.limit(&job.origin);
            self.scheduler.set_limit(&job.slot, limit);
        }
        if placed.is_some() {
            self.known_files.placed(&job.request.dest);
        }
        self.live.remove(&job.request.id);
        let url = job.url.clone();
        self.report_done(
            &job,
            Success {
                placed,
                url: Some(&url),
                status: (status > 0).then_some(status),
                head: Some(head),
                cached: false,
            },
        );
    }

    /// What the placing worker said: `done` for bodies now in place.
    fn collect_placed(&mut self) {
        if self.placing.is_empty() {
            return;
        }
        self.placer.looking();
        while let Ok(answer) = self.placer_answers.try_recv() {
            self.on_placed(answer);
        }
    }

    fn on_placed(&mut self, answer: placer::Answer) {
        let placer::Answer {
            key,
            result,
            buffer,
        } = answer;
        if self.spare_buffers.len() < SPARE_BUFFERS {
            self.spare_buffers.push(buffer);
        }
        let Placing {
            job,
            placed,
            head,
            status,
            elapsed,
        } = self.placing.remove(key);
        match result {
            Ok(()) => self.succeeded(job, Some(&placed), &head, status, elapsed),
            Err(e) => {
                let what = format!("placing {}", job.request.dest.display());
                self.attempt_failed(job, FetchError::io(what, &e), None, Some(&head));
            }
        }
    }

    /// A kept partial turned out stale: record nothing against the source, start afresh.
    fn retry_whole(&mut self, mut job: Box<Job>) {
        job.attempts.push(AttemptBody {
            url: job.url.clone(),
            error: ErrorBody::from(&FetchError::RangeNotSatisfied(
                "the kept partial does not fit the file; starting over".into(),
            )),
        });
        self.enqueue(job);
    }

    /// Record a failed attempt, then retry (another source, or the same after a backoff)
    /// or report the download failed. docs/design.md has the policy as a table.
    fn attempt_failed(
        &mut self,
        mut job: Box<Job>,
        error: FetchError,
        sink: Option<Sink>,
        head: Option<&ResponseHead>,
    ) {
        let disposition = error.disposition();
        if let Some(mut sink) = sink {
            // Only a transient failure leaves bytes worth continuing.
            if disposition == Disposition::Transient {
                sink.keep_partial();
            } else {
                sink.discard();
            }
        }
        if let Source::Mirror { .. } = job.request.source {
            let others_running = self.scheduler.busy(&job.slot);
            if self
                .mirrors
                .record_failure(&job.origin, disposition, others_running)
            {
                let limit = self.mirrors.limit(&job.origin);
                self.scheduler.set_limit(&job.slot, limit);
            }
        }
        job.attempts.push(AttemptBody {
            url: job.url.clone(),
            error: ErrorBody::from(&error),
        });
        if !job.tried.contains(&job.origin) {
            job.tried.push(job.origin.clone());
        }
        match disposition {
            Disposition::Final => return self.fail(job, Some(error)),
            Disposition::Transient => job.transient_failures += 1,
            Disposition::Elsewhere | Disposition::BadSource => {
                job.excluded.push(job.origin.clone());
            }
            Disposition::Denied => {
                // Credentials refused: only another host may help.
                let host = protocol::host_key(&job.url);
                let same_host: Vec<String> = self
                    .candidates(&job)
                    .into_iter()
                    .filter(|origin| protocol::host_key(origin) == host)
                    .collect();
                job.excluded.extend(same_host);
            }
        }
        if job.attempts.len() > self.options.retries as usize {
            return self.fail(job, Some(error));
        }
        let failed_origin = job.origin.clone();
        if !self.choose_source(&mut job) {
            return self.fail(job, Some(error));
        }
        // Another source is tried at once; the same source again only after a backoff.
        let delay =
            (disposition == Disposition::Transient && job.origin == failed_origin).then(|| {
                let max_wait = Duration::from_secs(self.options.max_retry_wait);
                let retry_after = head.and_then(|h| h.retry_after.as_deref());
                crate::policy::retry::delay(job.transient_failures, retry_after, max_wait)
            });
        self.enqueue_chosen(job, delay);
    }

    /// Queue a job whose source is already chosen.
    fn enqueue_chosen(&mut self, job: Box<Job>, delay: Option<Duration>) {
        self.live
            .insert(job.request.id.clone(), Live::Queued { seq: job.seq });
        match delay {
            Some(delay) if !delay.is_zero() => {
                self.scheduler.delay(job, Instant::now() + delay);
            }
            _ => self.scheduler.push(job),
        }
    }

    /// Every source the job could use (URLs, or its mirror set's bases).
    fn candidates(&self, job: &Job) -> Vec<String> {
        match &job.request.source {
            Source::Urls(urls) => urls.clone(),
            Source::Mirror { set, .. } => self
                .mirrors
                .bases(set)
                .map(<[String]>::to_vec)
                .unwrap_or_default(),
        }
    }

    /// Report the download failed with `error` (or, if none, its last attempt's error).
    fn fail(&mut self, job: Box<Job>, error: Option<FetchError>) {
        self.live.remove(&job.request.id);
        let body = match (&error, job.attempts.last()) {
            (Some(error), _) => ErrorBody::from(error),
            (None, Some(last)) => last.error.clone(),
            (None, None) => ErrorBody::from(&FetchError::Network("no source to try".into())),
        };
        self.totals.failed += 1;
        self.output.event(&Event::Failed {
            id: &job.request.id,
            error: body,
            attempts: &job.attempts,
        });
    }

    fn report_done(&mut self, job: &Job, success: Success<'_>) {
        self.totals.ok += 1;
        let path = job.request.dest.to_string_lossy();
        let placed = success.placed;
        self.output.event(&Event::Done {
            id: &job.request.id,
            path: &path,
            url: success.url,
            size: placed.map(|p| p.size),
            hashes: placed.map(|p| HashMapBody(&p.hashes)),
            status: success.status,
            attempts: job.attempts.len() as u32 + u32::from(!success.cached),
            elapsed_ms: job.received_at.elapsed().as_millis() as u64,
            cached: success.cached,
            not_modified: placed.is_none() && !success.cached,
            etag: success.head.and_then(|h| h.etag.as_deref()),
            last_modified: success.head.and_then(|h| h.last_modified.as_deref()),
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

    /// End a download whose attempt was under way (cancel, shutdown): the attempt is
    /// recorded with `error`, and the download fails with it.
    fn stop_attempt(&mut self, mut job: Box<Job>, error: FetchError) {
        job.attempts.push(AttemptBody {
            url: job.url.clone(),
            error: ErrorBody::from(&error),
        });
        self.live.remove(&job.request.id);
        self.report_failed(&job.request.id, &error, &job.attempts);
    }

    /// Fail everything unfinished as `aborted`, removing temporary files (resumable
    /// partials are kept).
    fn abort_all(&mut self) {
        // Verified bodies being placed end as they end (it takes moments): a file that
        // reaches `dest` is reported `done`, never `aborted`.
        while !self.placing.is_empty() {
            match self.placer_answers.recv() {
                Ok(answer) => self.on_placed(answer),
                Err(_) => break,
            }
        }
        let tokens: Vec<usize> = self.transfers.iter().map(|(token, _)| token).collect();
        for token in tokens {
            let (job, sink, _) = self.detach(token);
            keep_if_resumable(sink);
            self.stop_attempt(job, FetchError::Aborted);
        }
        self.concluding_held = 0;
        for (_, waiting) in std::mem::take(&mut self.concluding) {
            self.stop_attempt(waiting.job, FetchError::Aborted);
        }
        while let Some(job) = self.scheduler.drain_one() {
            self.live.remove(&job.request.id);
            self.report_failed(&job.request.id, &FetchError::Aborted, &job.attempts);
        }
        self.live.clear();
    }
}

/// A download stopped by cancel or shutdown keeps its bytes if it is resumable.
fn keep_if_resumable(sink: Option<Sink>) {
    if let Some(mut sink) = sink {
        sink.keep_partial();
    }
}

/// The scheduler slot of a mirror.
fn mirror_slot(base: &str) -> String {
    format!("mirror {base}")
}
