//! The event loop: one thread, one `mio::Poll`, one libcurl multi handle, one table of
//! downloads.
//!
//! Each turn of the loop waits for readiness (curl sockets, stdin, wake-ups, signals) or the
//! nearest deadline (curl's timer, a retry, a progress tick), then, in this order:
//! 1. hands ready sockets to `curl_multi_socket_action` and re-arms them;
//! 2. reads stdin lines through the front and carries out what it submits (`requests`);
//! 3. serves curl's timer, and requeues downloads whose retry delay is over;
//! 4. collects ended attempts: verify and place, or retry, or fail (`conclusion`), and
//!    what the hashing and placing workers answered;
//! 5. starts queued downloads while the limits allow (`admission`);
//! 6. reports throttled progress (`report`), and hands the turn's output to the writer.
//!
//! Every step is O(work done): the socket-action API tells us which socket is ready and
//! which transfers finished, so nothing scans all downloads on each event.

mod admission;
mod conclusion;
mod downloads;
mod job;
mod packed;
mod progress;
mod redirect;
mod report;
mod requests;
mod shared;
mod start;
mod stop;
#[cfg(test)]
mod tests;
mod watch;

use std::collections::{HashSet, VecDeque};
use std::rc::Rc;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use curl::easy::Easy2;
use curl::multi::Multi;
use mio::{Events, Poll, Token};
use signal_hook_mio::v1_0::Signals;

use crate::api::{About, Stop, Summary};
use crate::body::hasher::{self, Hasher};
use crate::body::known_files::KnownFiles;
use crate::body::placer::{self, Placer};
use crate::body::root::Root;
use crate::config::Options;
use crate::front::Front;
use crate::io::stdin::{Input, LineBatch};
use crate::net::curl_io::CurlIo;
use crate::net::pacer::Pacer;
use crate::net::transfer::Transfer;
use crate::policy::checks::Checks;
use crate::policy::mirrors::Mirrors;
use crate::policy::scheduler::Scheduler;
use downloads::Downloads;
use report::{Progress, Report};

/// One turn's work after the wait, in order (the module's doc says why this order); skipped
/// once a signal has stopped the run.
const TURN: [fn(&mut Engine); 13] = [
    Engine::read_pending_input,
    Engine::serve_curl_timer,
    Engine::release_paced,
    Engine::requeue_due_retries,
    Engine::collect_finished,
    Engine::check_response_timeouts,
    Engine::collect_hashed,
    Engine::collect_placed,
    Engine::collect_alpn,
    Engine::admit,
    Engine::spread_streams,
    Engine::report_progress,
    Engine::tick_front,
];

/// What follows a wait.
enum Next {
    Work,
    Finish,
    /// Polling failed: everything was aborted, the run ends without last words (status 2).
    Broken,
}

const STDIN: Token = Token(0);
const WAKER: Token = Token(1);
const SIGNALS: Token = Token(2);
const STDOUT: Token = Token(3);

/// The engine: every download of the run, and everything that moves them along.
pub struct Engine {
    options: Options,
    /// Every unfinished download, each in one state; keys double as curl tokens. Declared
    /// before `multi` because fields drop in order: an active download's handle detaches
    /// itself from the multi handle when dropped, which must still be alive then (a panic
    /// with transfers running would otherwise end in a segfault, not its message).
    downloads: Downloads,
    poll: Poll,
    multi: Multi,
    curl_io: CurlIo,
    /// Handles of ended attempts, kept for reuse (at most `--max-parallel`).
    spare_handles: Vec<Easy2<Transfer>>,
    scheduler: Scheduler,
    mirrors: Mirrors,
    /// Slots and mirror bases, one copy each for every download that uses them.
    shared: shared::Shared,
    /// stdin, when the front reads it.
    input: Option<Input>,
    input_pending: bool,
    lines: LineBatch,
    /// The front, stdout, and what the front submitted.
    report: Report,
    progress: Progress,
    signals: Signals,
    next_seq: u64,
    /// Body bytes received over the network, for the summary.
    network_bytes: u64,
    started: Instant,
    stop: Option<Stop>,
    /// Reused buffer for finished-transfer messages.
    finished: Vec<(usize, Result<(), curl::Error>)>,
    libcurl_version: String,
    has_http2: bool,
    /// When the next delayed retry is due, and when the front wants to be called.
    retry_wake: Option<Instant>,
    front_wake: Option<Instant>,
    /// The workers hashing bodies of `body::sink`'s worker size, and their answers.
    hasher: Hasher,
    hashed: Receiver<hasher::Answer>,
    /// Bytes of buffers the bodies in `State::Hashing` hold (see `admission`).
    hashing_held: usize,
    /// Downloads in `State::Hashing`: each holds its body's file after its transfer ended,
    /// so they count with the transfers against the descriptors (`fd_budget`).
    hashing: usize,
    /// The worker that writes verified small bodies into place, and its answers.
    placer: Placer,
    placer_answers: Receiver<placer::Answer>,
    /// Downloads in `State::Placing`.
    placing: usize,
    /// Buffers of placed bodies, for the next small bodies (no allocation per file).
    spare_buffers: Vec<Vec<u8>>,
    /// Slots that answered over HTTP/1.x, and the channel on which transfers report TLS
    /// handshakes that agreed on HTTP/2.
    http1_slots: HashSet<String>,
    alpn_learned: (Sender<String>, Receiver<String>),
    /// What the destination directories hold, for the `cached` check.
    known_files: KnownFiles,
    /// Where every `dest` must lie (`--root`; unconfined without it).
    root: Arc<Root>,
    /// Requests may name `file://` sources (`--file-urls`, or urlgrabber's protocol).
    file_urls: bool,
    /// The streams-per-connection cap curl has now (see `admission::spread_streams`).
    streams_per_connection: usize,
    /// Response-timeout checks of the running attempts, and the number of the next attempt.
    response_checks: Checks,
    next_serial: u64,
    /// The `--max-speed` bucket, the buckets of running transfers whose requests set
    /// `max_speed`, and a queue kept for unpausing the transfers they paused.
    pacer: Option<Rc<Pacer>>,
    own_pacers: Vec<Rc<Pacer>>,
    unpausing: VecDeque<usize>,
    /// File descriptors have run out once (said on stderr once; see `conclusion`).
    fds_ran_out: bool,
}

/// Run `front` over the engine until its input ends and all work is done; returns the exit
/// status.
pub fn run(options: Options, front: Box<dyn Front>) -> i32 {
    match Engine::new(options, front) {
        Ok(engine) => engine.run(),
        Err(err) => {
            eprintln!("fetchmux: cannot start: {err}");
            2
        }
    }
}

impl Engine {
    /// Turn the loop until the input has ended and no download is left (or a signal or a
    /// closed stdout stops it); returns the front's exit status.
    pub fn run(mut self) -> i32 {
        self.begin();
        let mut events = Events::with_capacity(1024);
        loop {
            match self.wait(&mut events) {
                Next::Work if self.stop.is_some() => {}
                Next::Work => TURN.iter().for_each(|step| step(&mut self)),
                Next::Finish => return self.end(),
                Next::Broken => return 2,
            }
        }
    }

    fn begin(&mut self) {
        let about = About {
            version: env!("CARGO_PKG_VERSION"),
            libcurl: &self.libcurl_version,
            http2: self.has_http2,
            insecure: self.options.insecure,
        };
        if self.options.insecure {
            // Once per run, whichever front: the package manager's log should show it.
            eprintln!(
                "fetchmux: WARNING: --insecure: https servers' certificates and names are NOT \
                 verified; anyone on the path can serve anything (only the digests of the \
                 requests still protect them)"
            );
        }
        self.report.start(&about);
        self.tick_front();
    }

    /// Hand out the last turn's output, then wait for readiness or the nearest deadline and
    /// dispatch what is ready; says whether the turn's work follows or the run is over.
    fn wait(&mut self, events: &mut Events) -> Next {
        // What the front submitted from its events is queued now, and admitted only in the
        // turn's work: that turn must not wait for another event first.
        let submitted = self.carry_out_submissions();
        self.report.flush();
        if self.report.output_closed() && self.stop.is_none() {
            self.stop = Some(Stop::OutputClosed);
            self.abort_all();
        }
        if self.stop.is_some() || self.all_done() {
            return Next::Finish;
        }
        let timeout = if submitted {
            Some(Duration::ZERO)
        } else {
            self.poll_timeout()
        };
        if let Err(err) = self.poll.poll(events, timeout) {
            if err.kind() == std::io::ErrorKind::Interrupted {
                return Next::Work;
            }
            eprintln!("fetchmux: poll failed: {err}");
            self.abort_all();
            self.report.close();
            return Next::Broken;
        }
        for event in events.iter() {
            match event.token() {
                STDIN | WAKER => self.input_pending = self.input.is_some(),
                SIGNALS => self.on_signals(),
                STDOUT => self.report.on_stdout_event(event),
                token => self.on_socket(token, event),
            }
        }
        Next::Work
    }

    /// The front's last words; returns its exit status.
    fn end(mut self) -> i32 {
        let summary = Summary {
            bytes: self.network_bytes,
            elapsed: self.started.elapsed(),
            stop: self.stop,
        };
        self.report.finish(&summary)
    }

    fn read_pending_input(&mut self) {
        if self.input_pending {
            self.read_input();
        }
    }

    fn tick_front(&mut self) {
        self.front_wake = self.report.tick(Instant::now());
    }

    /// The input has ended, nothing waits to be carried out, and no download is left.
    fn all_done(&self) -> bool {
        self.input.as_ref().is_none_or(Input::is_eof)
            && !self.report.has_submissions()
            && self.downloads.is_empty()
    }

    fn poll_timeout(&mut self) -> Option<Duration> {
        self.retry_wake = self.scheduler.next_wake();
        if self.input_pending {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        [
            self.curl_io.deadline(),
            self.progress.next_due(),
            self.retry_wake,
            self.front_wake,
            self.mirrors.next_return(),
            self.response_checks.next_due(),
            self.pacer.as_ref().and_then(|p| p.due()),
            // Only transfers with a rate of their own (at most --max-parallel of them).
            self.own_pacers.iter().filter_map(|p| p.due()).min(),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|d| d.saturating_duration_since(now))
    }

    /// A curl socket is ready: let curl act on it, then re-arm it (mio is edge-triggered and
    /// curl may have left bytes in it).
    fn on_socket(&mut self, token: Token, event: &mio::event::Event) {
        let Some(fd) = CurlIo::fd_of(token) else {
            return;
        };
        let what = CurlIo::events_for(event);
        if let Err(err) = self.multi.action(fd, &what) {
            eprintln!("fetchmux: curl socket action failed: {err}");
        }
        self.curl_io.apply(self.poll.registry());
        self.curl_io.rearm(self.poll.registry(), fd);
    }

    /// Rate limits: once a bucket is out of debt, unpause the transfers it paused, oldest
    /// first. Each takes a chunk only while the bucket is not in debt; the rest pause again
    /// and queue for the next refill (net/pacer.rs says why this shares evenly).
    fn release_paced(&mut self) {
        let now = Instant::now();
        let due = |pacer: &Pacer| pacer.due().is_some_and(|due| due <= now);
        if let Some(pacer) = self.pacer.as_ref().filter(|p| due(p)) {
            pacer.take_waiting(&mut self.unpausing);
        }
        for pacer in self.own_pacers.iter().filter(|p| due(p)) {
            pacer.take_waiting(&mut self.unpausing);
        }
        if self.unpausing.is_empty() {
            return;
        }
        while let Some(key) = self.unpausing.pop_front() {
            // A transfer that ended since is gone; unpausing one that is not paused does
            // nothing.
            if let Some(downloads::State::Active(handle)) =
                self.downloads.get(key).map(|d| &d.state)
            {
                if let Err(err) = handle.unpause_write() {
                    eprintln!("fetchmux: cannot unpause a transfer: {err}");
                }
            }
        }
        self.curl_io.apply(self.poll.registry());
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
}
