//! Choosing each download's source and starting queued downloads while the limits allow.
//!
//! A download's next attempt gets a source (an untried URL, or the best mirror of its set)
//! and a ticket in the scheduler's queue for that source's slot. Admission takes tickets in
//! order while the scheduler's limits allow and the bodies waiting for workers stay within
//! their budgets, checks once whether `dest` already holds the file, and hands the attempt
//! to curl.

use std::borrow::Cow;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::api::{Download, Event, Outcome, Source};
use crate::body::sink;
use crate::config::Options;
use crate::engine::downloads::State;
use crate::engine::job::{Job, Origin};
use crate::engine::shared::Shared;
use crate::engine::Engine;
use crate::error::FetchError;
use crate::net::handle::{self, Attempt};
use crate::net::pacer::Pacer;
use crate::net::transfer::AlpnLearner;
use crate::net::url::{host_key, is_http, redacted};
use crate::policy::mirrors::Mirrors;
use crate::policy::scheduler::{Scheduler, Ticket};

/// Verified bodies waiting for the placing worker, at most: new transfers wait beyond it,
/// which bounds the memory they hold (each is under 128 KiB) when the disk is slow.
const MAX_PLACING: usize = 512;
/// Bytes of buffers that received bodies may hold while the hashing workers catch up, at
/// most: new transfers wait beyond it. A transfer ends (and frees its slot) once curl has
/// the whole body, so without this a network faster than the workers would pile up
/// finished bodies in memory (1,000 × 256 KiB with one worker: 117 MiB).
const HASHING_BUDGET: usize = 32 << 20;

impl Engine {
    /// Pick the download's next source and queue it, or fail it when no source is left.
    pub(super) fn enqueue(&mut self, key: usize) {
        if !self.choose_source(key, Instant::now()) {
            let error = self.downloads[key].job.attempts().is_empty().then(|| {
                FetchError::Network(
                    "every mirror of the set has been put aside after repeated failures".into(),
                )
            });
            return self.fail(key, error);
        }
        self.enqueue_chosen(key, None);
    }

    /// Queue a download whose source is chosen, at once or after `delay`.
    pub(super) fn enqueue_chosen(&mut self, key: usize, delay: Option<Duration>) {
        let download = &mut self.downloads[key];
        download.state = State::Queued;
        // The URL is built again when the attempt starts: a queued download holds none, and
        // its request is packed while it waits.
        download.job.url = String::new();
        download.job.pack();
        let ticket = ticket(key, &download.job);
        match delay {
            Some(delay) if !delay.is_zero() => self.scheduler.delay(ticket, Instant::now() + delay),
            _ => self.scheduler.push(ticket),
        }
    }

    /// Set the job's `origin` and `slot` for its next attempt, which can start at
    /// `ready_at` at the earliest. Untried sources come first, then sources whose server's
    /// `Retry-After` has passed by `ready_at`; a source ruled out for this download is never
    /// chosen again.
    pub(super) fn choose_source(&mut self, key: usize, ready_at: Instant) -> bool {
        let job = &mut self.downloads[key].job;
        if let Some(url) = job.packed_url().filter(|_| job.attempts().is_empty()) {
            // Packed and never tried: its one URL.
            job.slot = self.shared.get(&host_key(url).unwrap_or_default());
            job.origin = Origin::Url(0);
            return true;
        }
        job.unpack();
        let base = match &job.request().source {
            Source::Urls(urls) => {
                let history = job.history();
                let usable = |u: &&String| !history.excluded.contains(u);
                let ready = |u: &&String| job.not_before(u).is_none_or(|at| at <= ready_at);
                let Some(url) = urls
                    .iter()
                    .filter(usable)
                    .find(|u| !history.tried.contains(u))
                    .or_else(|| urls.iter().filter(usable).find(ready))
                    .or_else(|| urls.iter().filter(usable).min_by_key(|u| job.not_before(u)))
                else {
                    return false;
                };
                let index = urls.iter().position(|u| std::ptr::eq(u, url)).unwrap_or(0);
                job.slot = self.shared.get(&host_key(url).unwrap_or_default());
                job.origin = Origin::Url(index);
                return true;
            }
            Source::Mirror { set, .. } => {
                let scheduler = &self.scheduler;
                let load = |base: &str| scheduler.load(&mirror_slot(base));
                // Mirrors still within their Retry-After only when no other is left.
                let ruled_out = job.ruled_out_at(ready_at);
                let waiting = matches!(ruled_out, Cow::Owned(_));
                self.mirrors
                    .choose(set, &job.history().tried, &ruled_out, load)
                    .or_else(|| {
                        waiting
                            .then(|| {
                                let history = job.history();
                                self.mirrors
                                    .choose(set, &history.tried, &history.excluded, load)
                            })
                            .flatten()
                    })
            }
        };
        let Some(base) = base else {
            return false;
        };
        use_mirror(
            job,
            &base,
            &mut self.scheduler,
            &self.mirrors,
            &mut self.shared,
        );
        true
    }

    pub(super) fn requeue_due_retries(&mut self) {
        for url in self.mirrors.bring_back(Instant::now()) {
            let notice = format!("fetchmux: mirror {} is tried again", redacted(&url));
            self.report.notice(&notice);
            self.report.emit(&Event::MirrorBack { url: &url });
        }
        if self.retry_wake.is_none_or(|at| at > Instant::now()) {
            return;
        }
        for ticket in self.scheduler.take_due(Instant::now()) {
            self.scheduler.push(ticket);
        }
    }

    /// Start queued downloads while the limits allow.
    pub(super) fn admit(&mut self) {
        while self.placing < MAX_PLACING
            && self.hashing_held < HASHING_BUDGET
            && self.scheduler.has_room_beside(self.hashing)
        {
            let Some((ticket, cost)) = self.scheduler.admit_next() else {
                break;
            };
            let key = ticket.key;
            let job = &mut self.downloads[key].job;
            debug_assert_eq!(job.seq, ticket.seq, "a cancelled ticket was admitted");
            job.unpack();
            if let Source::Mirror { set, .. } = &job.request().source {
                // A mirror within its Retry-After is no better.
                let ruled_out = job.ruled_out_at(Instant::now());
                let better =
                    self.mirrors
                        .better_than(set, job.origin(), &job.history().tried, &ruled_out);
                if let Some(better) = better {
                    // Health changed while it waited: requeue it for the better mirror.
                    self.scheduler.release(&ticket.slot, cost);
                    let (scheduler, mirrors) = (&mut self.scheduler, &self.mirrors);
                    use_mirror(job, &better, scheduler, mirrors, &mut self.shared);
                    self.scheduler.push(self::ticket(key, job));
                    continue;
                }
            }
            job.cost = cost;
            let request = job.request();
            if job.attempts().is_empty() && self.known_files.may_exist(&request.dest) {
                let cached = sink::cached(&self.root, &request.dest, request.size, &request.hashes);
                if let Some(verified) = cached {
                    self.scheduler.release(&ticket.slot, cost);
                    let job = self.downloads.remove(key).job;
                    let outcome = Outcome::Cached {
                        size: verified.size,
                        hashes: &verified.hashes,
                    };
                    self.report_done(&job, outcome);
                    continue;
                }
            }
            self.start_attempt(key);
        }
    }

    /// Hand the download's next attempt to curl, or record why it could not start.
    fn start_attempt(&mut self, key: usize) {
        let recycled = self.spare_handles.pop();
        let buffer = self.spare_buffers.pop().unwrap_or_default();
        let job = &mut self.downloads[key].job;
        job.url = job.attempt_url();
        let alpn_learner = self.alpn_learner_for(key);
        let now = Instant::now();
        let job = &mut self.downloads[key].job;
        if job.attempts().is_empty() {
            let deadline = time_limit(job.request(), &self.options).map(|limit| now + limit);
            job.set_deadline(deadline);
        }
        let time_left = job.deadline().map(|at| at.saturating_duration_since(now));
        if time_left.is_some_and(|left| left.is_zero()) {
            // It waited for a place past its time limit.
            self.scheduler.release(&job.slot, job.cost);
            self.spare_buffers.push(buffer);
            self.spare_handles.extend(recycled);
            return self.out_of_time(key, None);
        }
        self.next_serial += 1;
        let serial = self.next_serial;
        // The request's own max_speed: a bucket of its own, released by the loop's timer
        // like the shared one.
        let own_pacer = job
            .request()
            .transport
            .as_ref()
            .and_then(|t| t.max_speed)
            .filter(|&rate| rate > 0)
            .map(|rate| Rc::new(Pacer::new(rate, 1)));
        let job = &self.downloads[key].job;
        let route = match &job.request().source {
            Source::Mirror { set, .. } => self.mirrors.route(set),
            Source::Urls(_) => None,
        };
        let attempt = Attempt {
            request: job.request(),
            url: &job.url,
            token: key,
            buffer,
            alpn_learner,
            auth: super::redirect::credentials(job.request(), &self.mirrors),
            route,
            root: &self.root,
            serial,
            time_left,
            pacers: [self.pacer.clone(), own_pacer.clone()],
        };
        let easy = match handle::build(
            attempt,
            &self.options,
            self.has_http2,
            &self.hasher,
            recycled,
        ) {
            Ok(easy) => easy,
            Err(error) => {
                self.scheduler.release(&job.slot, job.cost);
                return self.attempt_failed(key, error, None, None);
            }
        };
        self.own_pacers.extend(own_pacer);
        let added = self.multi.add2(easy);
        self.curl_io.apply(self.poll.registry());
        let mut handle = added.unwrap_or_else(|err| panic!("curl refused a transfer: {err}"));
        handle.set_token(key).expect("setting a curl token");
        let download = &mut self.downloads[key];
        let job = &download.job;
        self.report.emit(&Event::Started {
            id: job.id(),
            url: &job.url,
            attempt: job.attempts().len() as u32 + 1,
        });
        if job.request().progress {
            self.progress.watch(key);
        }
        if let Some(limit) = response_timeout(job.request(), &self.options) {
            if is_http(&job.url) {
                handle.get_mut().response_timeout = limit;
                self.response_checks.add(now + limit, key, serial);
            }
        }
        download.state = State::Active(handle);
    }

    /// For an https transfer to a slot whose protocol is not known yet: where its TLS
    /// handshake reports HTTP/2. Learning it there, rather than from the first response,
    /// lets the slot's transfers multiplex a round trip sooner (scenario L2 of `make bench`).
    fn alpn_learner_for(&self, key: usize) -> Option<AlpnLearner> {
        let job = &self.downloads[key].job;
        let unknown = self.has_http2
            && job.url.starts_with("https:")
            && !self.scheduler.is_multiplexed(&job.slot)
            && !self.http1_slots.contains(&*job.slot);
        unknown.then(|| AlpnLearner {
            tell: self.alpn_learned.0.clone(),
            slot: job.slot.to_string(),
        })
    }

    /// Slots whose TLS handshakes agreed on HTTP/2 since the last look.
    pub(super) fn collect_alpn(&mut self) {
        while let Ok(slot) = self.alpn_learned.1.try_recv() {
            self.promote(&slot);
        }
    }

    /// `slot` multiplexes: tell the scheduler, and charge its running transfers (admitted
    /// at a whole connection's price) one stream each from now on. Once per slot.
    pub(super) fn promote(&mut self, slot: &str) {
        if self.scheduler.is_multiplexed(slot) {
            return;
        }
        let slot = self.shared.get(slot);
        let mut recosted = 0;
        for (_, download) in self.downloads.iter_mut() {
            let job = &mut download.job;
            if matches!(download.state, State::Active(_)) && job.slot == slot && job.cost > 1 {
                job.cost = 1;
                recosted += 1;
            }
        }
        self.scheduler.mark_multiplexed(&slot, recosted);
    }

    /// Keep curl's streams-per-connection cap at what spreads the running HTTP/2 transfers
    /// over all the connections they may use. curl puts a new transfer on the first
    /// connection with a free stream, so with the full `--max-streams` a second wave of 64
    /// transfers all joined one connection and waited out its TCP slow start (scenario L2
    /// of `make bench`: 128 files took 0.41 s instead of 0.25 s).
    pub(super) fn spread_streams(&mut self) {
        let streams = self.scheduler.streams_per_connection();
        if streams != self.streams_per_connection {
            self.streams_per_connection = streams;
            if let Err(err) = self.multi.set_max_concurrent_streams(streams) {
                eprintln!("fetchmux: cannot set curl's streams per connection: {err}");
            }
        }
    }
}

/// The scheduler's ticket for the job's next attempt.
fn ticket(key: usize, job: &Job) -> Ticket {
    Ticket {
        key,
        seq: job.seq,
        priority: job.priority(),
        slot: job.slot.clone(),
    }
}

/// Point a mirror job's next attempt at `base`.
fn use_mirror(
    job: &mut Job,
    base: &str,
    scheduler: &mut Scheduler,
    mirrors: &Mirrors,
    shared: &mut Shared,
) {
    job.slot = shared.get(&mirror_slot(base));
    scheduler.set_limit(&job.slot, mirrors.limit(base));
    job.origin = Origin::Mirror(shared.get(base));
}

/// The scheduler slot of a mirror.
pub(super) fn mirror_slot(base: &str) -> String {
    format!("mirror {base}")
}

/// How long an attempt of `request` may wait for its response: the request's own (a front's
/// timeout setting; zero: none), else `--response-timeout`.
fn response_timeout(request: &Download, options: &Options) -> Option<Duration> {
    match request.transport.as_ref().and_then(|t| t.response_timeout) {
        Some(limit) => (!limit.is_zero()).then_some(limit),
        None => options.response_timeout(),
    }
}

/// A download's time limit: the request's `timeout` (zero: none), else `--max-time`.
fn time_limit(request: &Download, options: &Options) -> Option<Duration> {
    match request.transport.as_ref().and_then(|t| t.max_time) {
        Some(limit) => (!limit.is_zero()).then_some(limit),
        None => options.max_time(),
    }
}
