//! The end of an attempt: take it out of curl, judge it, and then verify and place the
//! bytes (through the hashing and placing workers when they hold them), or retry, or fail.
//! docs/design.md has the retry policy as a table.

use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::api::{Event, Outcome, Source};
use crate::body::hasher::Answer;
use crate::body::placer;
use crate::body::root::Root;
use crate::body::sink::{Sink, Verified};
use crate::engine::downloads::{Ended, Hashing, Placing, State};
use crate::engine::job::Job;
use crate::engine::Engine;
use crate::error::{Disposition, ErrorKind, FetchError};
use crate::http_date;
use crate::net::classify::ProxyFacts;
use crate::net::response::ResponseHead;
use crate::net::url::{self, host_key, redacted};
use crate::net::verdict::{judge, Verdict};
use crate::policy::mirrors::{Change, Mirrors};
use crate::policy::retry;

/// Buffers kept for reuse, at most (each under 128 KiB).
const SPARE_BUFFERS: usize = 64;
/// How long a download that ran out of file descriptors waits before it may start again
/// (and then only when fewer transfers run than when they ran out): when none ran, this is
/// what keeps it from spinning while another process holds the system's descriptors.
const FDS_WAIT: Duration = Duration::from_millis(50);

impl Engine {
    pub(super) fn collect_finished(&mut self) {
        let finished = &mut self.finished;
        let downloads = &self.downloads;
        self.multi.messages(|message| {
            let Ok(token) = message.token() else { return };
            let Some(State::Active(handle)) = downloads.get(token).map(|d| &d.state) else {
                return;
            };
            // result_for2 attaches curl's error buffer ("Operation too slow…") to the error.
            if let Some(result) = message.result_for2(handle) {
                finished.push((token, result));
            }
        });
        let mut finished = std::mem::take(&mut self.finished);
        for (key, result) in finished.drain(..) {
            self.finish(key, result);
        }
        self.finished = finished;
    }

    /// An attempt ended: judge it, then place the bytes or decide what comes next.
    fn finish(&mut self, key: usize, result: Result<(), curl::Error>) {
        let State::Active(handle) = &self.downloads[key].state else {
            return;
        };
        let status = match handle.response_code().unwrap_or(0) {
            0 => handle.get_ref().head.status,
            status => status,
        };
        if self.follow_redirect(key, &result, status) {
            return;
        }
        let State::Active(handle) = &mut self.downloads[key].state else {
            return;
        };
        let proxy = ProxyFacts::of(handle.raw());
        let transfer = handle.get_mut();
        let verdict = judge(transfer, result, status, proxy);
        let elapsed = transfer.started_at.elapsed();
        let (sink, head) = self.detach(key);
        let slot = &self.downloads[key].job.slot;
        if head.multiplexed {
            let slot = slot.clone();
            self.promote(&slot);
        } else if head.status > 0 && !self.http1_slots.contains(&**slot) {
            self.http1_slots.insert(slot.to_string());
        }
        let mut sink = sink.expect("sink present until the attempt ends");
        let ended = Ended {
            head,
            status,
            elapsed,
        };
        if matches!(verdict, Verdict::Body) && sink.hashing_elsewhere() {
            let (lane, held) = sink.finish_hashing();
            self.hashing_held += held;
            self.hashing += 1;
            let hashing = Hashing {
                lane,
                held,
                sink,
                ended,
            };
            self.downloads[key].state = State::Hashing(Box::new(hashing));
            return;
        }
        self.conclude(key, sink, ended, verdict);
    }

    /// Take an active attempt out of curl and the scheduler; returns its sink and the
    /// response head. The download stays in the table (as `Queued`) for what comes next.
    pub(super) fn detach(&mut self, key: usize) -> (Option<Sink>, ResponseHead) {
        let download = &mut self.downloads[key];
        let State::Active(handle) = std::mem::replace(&mut download.state, State::Queued) else {
            panic!("detaching a download that has no running attempt");
        };
        let removed = self.multi.remove2(handle);
        self.curl_io.apply(self.poll.registry());
        let mut easy = removed.unwrap_or_else(|err| panic!("curl lost a transfer: {err}"));
        let transfer = easy.get_mut();
        let mut sink = transfer.sink.take();
        if let Some(sink) = &mut sink {
            let head = &transfer.head;
            sink.set_validators(head.etag.clone(), head.last_modified.clone());
        }
        self.network_bytes += transfer.network_bytes;
        if let Some(own) = &transfer.pacers[1] {
            self.own_pacers.retain(|pacer| !Rc::ptr_eq(pacer, own));
        }
        self.scheduler
            .release(&download.job.slot, download.job.cost);
        self.progress.forget(key);
        let head = std::mem::take(&mut transfer.head);
        // Every request sets or clears all its options (net::handle, net::route), so any
        // handle may serve the next one, whatever host or settings it had.
        if self.spare_handles.len() < self.options.max_parallel as usize {
            self.spare_handles.push(easy);
        }
        (sink, head)
    }

    /// What the hashing workers said: unpause transfers that have a buffer again, and
    /// conclude the attempts whose digests are ready.
    pub(super) fn collect_hashed(&mut self) {
        while let Ok(answer) = self.hashed.try_recv() {
            let (key, lane, result) = match answer {
                Answer::Hashed {
                    token,
                    lane,
                    result,
                } => (token, lane, result),
                Answer::Unpause(token) => {
                    // The token may since belong to another transfer: unpausing one that
                    // is not paused does nothing.
                    if let Some(State::Active(handle)) = self.downloads.get(token).map(|d| &d.state)
                    {
                        if let Err(err) = handle.unpause_write() {
                            eprintln!("fetchmux: cannot unpause a transfer: {err}");
                        }
                        self.curl_io.apply(self.poll.registry());
                    }
                    continue;
                }
            };
            // Gone (or another download now) if it was cancelled meanwhile.
            let Some(download) = self.downloads.get_mut(key) else {
                continue;
            };
            if !matches!(&download.state, State::Hashing(h) if h.lane == lane) {
                continue;
            }
            let State::Hashing(hashing) = std::mem::replace(&mut download.state, State::Queued)
            else {
                unreachable!()
            };
            let Hashing {
                held,
                mut sink,
                ended,
                ..
            } = *hashing;
            self.hashing_held -= held;
            self.hashing -= 1;
            match result {
                Ok(digests) => {
                    sink.hashed(digests);
                    self.conclude(key, sink, ended, Verdict::Body);
                }
                Err(error) => {
                    let error = sink.write_failed(&error);
                    self.attempt_failed(key, error, Some(sink), Some(&ended.head))
                }
            }
        }
    }

    /// Verify and place the bytes of an ended attempt, or decide what comes next.
    fn conclude(&mut self, key: usize, mut sink: Sink, ended: Ended, verdict: Verdict) {
        match verdict {
            Verdict::Body | Verdict::PartialComplete => {
                let job = &self.downloads[key].job;
                if let Some(mode) = url::file_source_mode(&job.url) {
                    sink.limit_mode(mode);
                }
                let request = job.request();
                // place() removes the file itself when verification fails.
                match sink.place(request.size, &request.hashes) {
                    Ok((verified, Some(placement))) => {
                        self.placing += 1;
                        let placing = Placing { verified, ended };
                        self.downloads[key].state = State::Placing(Box::new(placing));
                        self.placer.place(key, placement);
                    }
                    Ok((verified, None)) => self.succeeded(key, Some(verified), ended),
                    Err(error) => self.attempt_failed(key, error, None, Some(&ended.head)),
                }
            }
            Verdict::NotModified => {
                sink.discard();
                let request = self.downloads[key].job.request();
                if request.not_modified_needs_dest && !self.root.is_file(&request.dest) {
                    // The client asked "changed since my copy?" for a copy it does not
                    // have: its state is wrong, and no source will answer otherwise.
                    let error = FetchError::InvalidRequest(format!(
                        "the server answered 304 Not Modified, but {} is not a file: send \
                         if_none_match or if_modified_since only for a dest that exists",
                        request.dest.display()
                    ));
                    self.attempt_failed(key, error, None, Some(&ended.head));
                } else {
                    self.succeeded(key, None, ended);
                }
            }
            Verdict::PartialStale => {
                // Our partial does not fit the file (it changed, or grew shorter): drop it
                // and fetch the whole file again at once, recording nothing against the
                // source.
                sink.discard();
                self.downloads[key]
                    .job
                    .record(FetchError::RangeNotSatisfied(
                        "the kept partial does not fit the file; starting over".into(),
                    ));
                self.enqueue(key);
            }
            Verdict::Failed(error) => {
                self.attempt_failed(key, error, Some(sink), Some(&ended.head))
            }
        }
    }

    /// What the placing worker said: `done` for bodies now in place.
    pub(super) fn collect_placed(&mut self) {
        if self.placing == 0 {
            return;
        }
        self.placer.looking();
        while let Ok(answer) = self.placer_answers.try_recv() {
            self.on_placed(answer);
        }
    }

    pub(super) fn on_placed(&mut self, answer: placer::Answer) {
        let placer::Answer {
            key,
            result,
            buffer,
        } = answer;
        if self.spare_buffers.len() < SPARE_BUFFERS {
            self.spare_buffers.push(buffer);
        }
        self.placing -= 1;
        let download = &mut self.downloads[key];
        let State::Placing(placing) = std::mem::replace(&mut download.state, State::Queued) else {
            panic!("a placement answered for a download that is not being placed");
        };
        let Placing { verified, ended } = *placing;
        match result {
            Ok(()) => self.succeeded(key, Some(verified), ended),
            Err(failed) => {
                let what = failed.context(&download.job.request().dest);
                let error = FetchError::io(what, &failed.error);
                self.attempt_failed(key, error, None, Some(&ended.head));
            }
        }
    }

    /// The attempt fetched a verified body that is now in place (`verified`), or the
    /// server said the file was not modified (`None`).
    fn succeeded(&mut self, key: usize, verified: Option<Verified>, ended: Ended) {
        let job = self.downloads.remove(key).job;
        if let Source::Mirror { .. } = job.request().source {
            let bytes = verified.as_ref().map_or(0, |v| v.size);
            self.mirrors
                .record_success(job.origin(), bytes, ended.elapsed);
            let limit = self.mirrors.limit(job.origin());
            self.scheduler.set_limit(&job.slot, limit);
        }
        let (head, url) = (&ended.head, job.url.as_str());
        if verified.is_some() {
            self.known_files.placed(&job.request().dest);
            if job.request().server_mtime {
                stamp(
                    &self.root,
                    &job.request().dest,
                    head.last_modified.as_deref(),
                );
            }
        }
        let status = (ended.status > 0).then_some(ended.status);
        let (etag, last_modified) = (head.etag.as_deref(), head.last_modified.as_deref());
        let outcome = match &verified {
            Some(verified) => Outcome::Fetched {
                url,
                status,
                size: verified.size,
                hashes: &verified.hashes,
                etag,
                last_modified,
            },
            None => Outcome::NotModified {
                url,
                status,
                etag,
                last_modified,
            },
        };
        self.report_done(&job, outcome);
    }

    /// `done` for a download that has left the table.
    pub(super) fn report_done(&mut self, job: &Job, outcome: Outcome<'_>) {
        self.report.emit(&Event::Done {
            id: job.id(),
            dest: &job.request().dest,
            outcome,
            attempts: job.attempts(),
            elapsed: job.received_at.elapsed(),
        });
    }

    /// Record a failed attempt, then retry (another source, or the same after a backoff)
    /// or report the download failed.
    pub(super) fn attempt_failed(
        &mut self,
        key: usize,
        error: FetchError,
        sink: Option<Sink>,
        head: Option<&ResponseHead>,
    ) {
        if error.is_out_of_fds() {
            return self.out_of_fds(key, &error, sink);
        }
        let disposition = error.disposition();
        if let Some(mut sink) = sink {
            // Only a transient failure leaves bytes worth continuing.
            if disposition == Disposition::Transient {
                sink.keep_partial();
            } else {
                sink.discard();
            }
        }
        let job = &mut self.downloads[key].job;
        // A proxy's failure says nothing about the mirror behind it.
        let mirrors_fault = error.kind() != ErrorKind::Proxy;
        if let (Source::Mirror { .. }, true) = (&job.request().source, mirrors_fault) {
            let others_running = self.scheduler.busy(&job.slot);
            let change = self.mirrors.record_failure(
                job.origin(),
                disposition,
                others_running,
                Instant::now(),
            );
            match change {
                Change::None => {}
                Change::LimitLowered => {
                    let limit = self.mirrors.limit(job.origin());
                    self.scheduler.set_limit(&job.slot, limit);
                }
                Change::PutAside { failures, for_ } => {
                    self.report.notice(&format!(
                        "fetchmux: mirror {} failed {failures} times in a row; putting it aside \
                         for {} s",
                        redacted(job.origin()),
                        for_.as_secs()
                    ));
                    self.report.emit(&Event::MirrorAside {
                        url: job.origin(),
                        failures,
                        for_,
                    });
                }
            }
        }
        job.record(error.clone());
        let now = Instant::now();
        let max_wait = Duration::from_secs(self.options.max_retry_wait);
        if disposition == Disposition::Transient {
            let retry_after = head.and_then(|h| h.retry_after.as_deref());
            if let Some(asked) = retry_after.and_then(retry::parse_retry_after) {
                let origin = job.origin().to_owned();
                job.wait_for(&origin, now + asked.min(max_wait));
            }
        }
        if !job.history().tried.iter().any(|t| t == job.origin()) {
            let origin = job.origin().to_owned();
            job.history_mut().tried.push(origin);
        }
        match disposition {
            Disposition::Final => return self.fail(key, Some(error)),
            Disposition::Transient => job.history_mut().transient_failures += 1,
            Disposition::Elsewhere | Disposition::BadSource => {
                let origin = job.origin().to_owned();
                job.history_mut().excluded.push(origin);
            }
            Disposition::Denied => {
                // Credentials refused: only another host may help.
                let host = host_key(&job.url);
                let same_host = candidates(&job.request().source, &self.mirrors)
                    .into_iter()
                    .filter(|origin| host_key(origin) == host);
                job.history_mut().excluded.extend(same_host);
            }
        }
        if job.attempts().len() > self.options.retries as usize {
            return self.fail(key, Some(error));
        }
        // An untried source is tried at once; once every source has been tried, each
        // further attempt waits out a backoff, whichever source it goes to, and never
        // starts on a source before its server's Retry-After has passed.
        let backoff = match job.history().transient_failures {
            0 => Duration::ZERO,
            failures => retry::delay(failures, max_wait),
        };
        if !self.choose_source(key, now + backoff) {
            return self.fail(key, Some(error));
        }
        let job = &self.downloads[key].job;
        let mut start = now;
        if job.history().tried.iter().any(|t| t == job.origin()) {
            start += backoff;
        }
        if let Some(at) = job.not_before(job.origin()) {
            start = start.max(at);
        }
        if job.deadline().is_some_and(|deadline| start >= deadline) {
            return self.out_of_time(key, Some(error));
        }
        self.enqueue_chosen(key, Some(start - now));
    }

    /// The attempt could not get a file descriptor (EMFILE on a socket inside libcurl, or on
    /// a file): that is neither the download's fault nor its source's. Nothing is recorded
    /// against either, no retry is spent; the engine runs no more transfers than hold files
    /// now (running, or waiting for a hashing worker), and the download waits in the queue
    /// for one of them to end.
    fn out_of_fds(&mut self, key: usize, error: &FetchError, sink: Option<Sink>) {
        if let Some(mut sink) = sink {
            sink.keep_partial();
        }
        let cap = self.scheduler.ran_out_of_fds(self.hashing);
        if !self.fds_ran_out {
            self.fds_ran_out = true;
            eprintln!(
                "fetchmux: ran out of file descriptors ({error}): running fewer transfers at \
                 once from now on (at most {cap}, lowered again each time it happens; said \
                 once); downloads that hit it wait in the queue, no retry spent. Raise the \
                 limit (`ulimit -n N`, LimitNOFILE= for a systemd service) or lower \
                 --max-parallel"
            );
        }
        self.enqueue_chosen(key, Some(FDS_WAIT));
    }

    /// Report the download failed with `error` (or, if none, its last attempt's error).
    pub(super) fn fail(&mut self, key: usize, error: Option<FetchError>) {
        let job = self.downloads.remove(key).job;
        let error = error
            .or_else(|| job.attempts().last().map(|last| last.error.clone()))
            .unwrap_or_else(|| FetchError::Network("no source to try".into()));
        self.report.emit(&Event::Failed {
            id: job.id(),
            error: &error,
            attempts: job.attempts(),
        });
    }

    /// The download's time limit ran out (or would, before its next attempt could start):
    /// it fails as `timeout`, saying so, with the last attempt's error if there was one.
    pub(super) fn out_of_time(&mut self, key: usize, last: Option<FetchError>) {
        let mut message = String::from(
            "the download's time limit (`timeout`, or --max-time) ran out; raise it, or set \
             `timeout` to 0 for this request",
        );
        if let Some(last) = last {
            message.push_str(&format!("; last attempt: {last}"));
        }
        self.fail(key, Some(FetchError::Timeout(message)));
    }

    /// End a download whose attempt was under way (cancel, shutdown): the attempt is
    /// recorded with `error`, and the download fails with it.
    pub(super) fn stop_attempt(&mut self, key: usize, error: FetchError) {
        self.downloads[key].job.record(error.clone());
        self.fail(key, Some(error));
    }
}

/// Every source a download could use (its URLs, or its mirror set's bases).
fn candidates(source: &Source, mirrors: &Mirrors) -> Vec<String> {
    match source {
        Source::Urls(urls) => urls.clone(),
        Source::Mirror { set, .. } => mirrors
            .bases(set)
            .map(<[String]>::to_vec)
            .unwrap_or_default(),
    }
}

/// Give a placed file the server's `Last-Modified` as its mtime. A failure leaves the
/// verified file as it is, with a line on stderr: the bytes are what matters.
/// The file is opened in its directory beneath the root, never through a final link.
fn stamp(root: &Root, dest: &Path, last_modified: Option<&str>) {
    let Some(time) = last_modified.and_then(http_date::parse) else {
        return;
    };
    let stamped = root
        .open_file(dest, libc::O_RDONLY | libc::O_NONBLOCK)
        .and_then(|file| file.set_modified(time));
    if let Err(e) = stamped {
        eprintln!(
            "fetchmux: cannot set the modification time of {}: {e}",
            dest.display()
        );
    }
}
