//! A download's history across attempts: the request, the source of its next attempt, the
//! sources tried and ruled out, and every failed attempt.

use std::borrow::Cow;
use std::time::Instant;

use crate::api::{Attempt, Download};

/// A download request and what has happened to it so far.
pub(crate) struct Job {
    pub request: Download,
    /// Order of arrival; breaks priority ties (FIFO) and tells a queued entry from a
    /// later download that reused its key.
    pub seq: u64,
    /// The URL of the current (or next) attempt.
    pub url: String,
    /// Where that URL came from: a mirror's base URL, or the URL itself for `url`/`urls`.
    pub origin: String,
    /// The scheduler slot the attempt counts against (a mirror, or a host).
    pub slot: String,
    /// What the running attempt costs in the scheduler's units (see `policy::scheduler`).
    pub cost: usize,
    /// Origins tried so far, and origins ruled out for this download.
    pub tried: Vec<String>,
    pub excluded: Vec<String>,
    /// Transient failures so far (drives the backoff).
    pub transient_failures: u32,
    /// Origins whose server asked, with `Retry-After`, not to be asked again before a time:
    /// no later attempt of this download starts on one of them earlier.
    pub not_before: Vec<(String, Instant)>,
    /// Every failed attempt, for `done` and `failed`.
    pub attempts: Vec<Attempt>,
    pub received_at: Instant,
    /// When the download's time limit (`timeout`, `--max-time`) runs out, from the start
    /// of its first attempt.
    pub deadline: Option<Instant>,
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
            not_before: Vec::new(),
            attempts: Vec::new(),
            received_at: Instant::now(),
            deadline: None,
        }
    }

    /// When `origin` may be asked again, if its server set a time.
    pub fn not_before(&self, origin: &str) -> Option<Instant> {
        self.not_before
            .iter()
            .find(|(o, _)| o == origin)
            .map(|&(_, at)| at)
    }

    /// Do not ask `origin` again before `at` (a later time than one set before wins).
    pub fn wait_for(&mut self, origin: &str, at: Instant) {
        match self.not_before.iter_mut().find(|(o, _)| o == origin) {
            Some((_, until)) => *until = (*until).max(at),
            None => self.not_before.push((origin.to_owned(), at)),
        }
    }

    /// The sources not to choose for an attempt starting at `at`: those ruled out, and those
    /// whose server's `Retry-After` has not passed by then. Borrowed (no copy) unless a
    /// server set such a time.
    pub fn ruled_out_at(&self, at: Instant) -> Cow<'_, [String]> {
        let mut waiting = self
            .not_before
            .iter()
            .filter(move |(_, until)| *until > at)
            .map(|(origin, _)| origin)
            .peekable();
        if waiting.peek().is_none() {
            return Cow::Borrowed(&self.excluded);
        }
        let mut ruled_out = self.excluded.clone();
        ruled_out.extend(waiting.cloned());
        Cow::Owned(ruled_out)
    }

    /// Record a failed attempt at the current URL.
    pub fn record(&mut self, error: crate::error::FetchError) {
        self.attempts.push(Attempt {
            url: self.url.clone(),
            error,
        });
    }
}
