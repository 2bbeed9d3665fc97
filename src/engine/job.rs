//! A download's history across attempts: the request, the source of its next attempt, the
//! sources tried and ruled out, and every failed attempt.
//!
//! A queued download costs what its request needs and little more (docs/design.md, "What a
//! queued download costs"): the request stays in the box the front made, the source is an
//! index into the request's URLs or a shared mirror base, the slot is shared, and the URL
//! of an attempt is built only when it starts.

use std::borrow::Cow;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::api::{Attempt, Download, Source};
use crate::engine::packed::Packed;

/// A download request and what has happened to it so far.
pub(crate) struct Job {
    /// Packed while it waits for its first admission, when it is a common one.
    request: Spec,
    /// Order of arrival; breaks priority ties (FIFO) and tells a queued entry from a
    /// later download that reused its key.
    pub seq: u64,
    /// The source of the current (or next) attempt.
    pub origin: Origin,
    /// The URL of the running attempt (and, after it ended, of the last one): built when
    /// it starts, empty while the download is queued.
    pub url: String,
    /// The scheduler slot the attempt counts against (a mirror, or a host); shared.
    pub slot: Rc<str>,
    /// What the running attempt costs in the scheduler's units (see `policy::scheduler`).
    pub cost: usize,
    /// What failed attempts left; `None` until the first one (most downloads never fail,
    /// and a queued one should not carry four empty vectors).
    history: Option<Box<History>>,
    pub received_at: Instant,
    /// When the download's time limit (`timeout`, `--max-time`) runs out, set at the start
    /// of its first attempt: milliseconds after `received_at`, plus one (0: no limit). Four
    /// bytes, not the sixteen of an `Option<Instant>`: every queued download has one.
    deadline_ms: u32,
}

/// What the failed attempts of a download left.
#[derive(Default)]
pub(crate) struct History {
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
}

static NO_HISTORY: History = History {
    tried: Vec::new(),
    excluded: Vec::new(),
    transient_failures: 0,
    not_before: Vec::new(),
    attempts: Vec::new(),
};

/// The request, as the front made it or packed.
enum Spec {
    Full(Box<Download>),
    Packed(Box<Packed>),
}

/// Where the current (or next) attempt goes.
pub(crate) enum Origin {
    /// Not chosen yet.
    None,
    /// The request's URL of this index (`url`/`urls`).
    Url(usize),
    /// A mirror's base URL (shared by every download of the mirror); the request's `path`
    /// goes under it.
    Mirror(Rc<str>),
}

impl Job {
    pub fn new(request: Box<Download>, seq: u64) -> Job {
        let request = match Packed::pack(&request) {
            Some(packed) => Spec::Packed(Box::new(packed)),
            None => Spec::Full(request),
        };
        Job {
            request,
            seq,
            origin: Origin::None,
            url: String::new(),
            slot: Rc::from(""),
            cost: 0,
            history: None,
            received_at: Instant::now(),
            deadline_ms: 0,
        }
    }

    /// When the download's time limit runs out, if it has one.
    pub fn deadline(&self) -> Option<Instant> {
        let ms = self.deadline_ms.checked_sub(1)?;
        Some(self.received_at + Duration::from_millis(u64::from(ms)))
    }

    pub fn set_deadline(&mut self, at: Option<Instant>) {
        self.deadline_ms = at.map_or(0, |at| {
            let ms = at.saturating_duration_since(self.received_at).as_millis();
            u32::try_from(ms).unwrap_or(u32::MAX - 1).min(u32::MAX - 1) + 1
        });
    }

    pub fn id(&self) -> &str {
        match &self.request {
            Spec::Full(request) => &request.id,
            Spec::Packed(packed) => packed.id(),
        }
    }

    pub fn priority(&self) -> i64 {
        match &self.request {
            Spec::Full(request) => request.priority,
            Spec::Packed(packed) => packed.priority(),
        }
    }

    /// The URL of a packed request (its only one); `None` once unpacked.
    pub fn packed_url(&self) -> Option<&str> {
        match &self.request {
            Spec::Full(_) => None,
            Spec::Packed(packed) => Some(packed.url()),
        }
    }

    /// The request. Only a download that has been admitted ([`Job::unpack`]) or was never
    /// packed has it; the engine asks for it only then.
    pub fn request(&self) -> &Download {
        match &self.request {
            Spec::Full(request) => request,
            Spec::Packed(_) => unreachable!("a packed request is unpacked when admitted"),
        }
    }

    /// Admitted: from now on the request is needed as the front made it.
    pub fn unpack(&mut self) {
        if let Spec::Packed(packed) = &self.request {
            self.request = Spec::Full(packed.unpack());
        }
    }

    /// Queued again (a retry): packed again while it waits, if it is a common request.
    pub fn pack(&mut self) {
        if let Spec::Full(request) = &self.request {
            if let Some(packed) = Packed::pack(request) {
                self.request = Spec::Packed(Box::new(packed));
            }
        }
    }

    /// The chosen source: a mirror's base URL, or the URL itself for `url`/`urls`.
    pub fn origin(&self) -> &str {
        match (&self.origin, &self.request) {
            (Origin::Mirror(base), _) => base,
            (Origin::Url(_), Spec::Packed(packed)) => packed.url(),
            (Origin::Url(index), Spec::Full(request)) => match &request.source {
                Source::Urls(urls) => &urls[*index],
                Source::Mirror { .. } => "",
            },
            (Origin::None, _) => "",
        }
    }

    /// The URL of an attempt at the chosen source.
    pub fn attempt_url(&self) -> String {
        match (&self.origin, &self.request) {
            (Origin::Mirror(base), Spec::Full(request)) => match &request.source {
                Source::Mirror { path, .. } => format!("{base}{path}"),
                Source::Urls(_) => self.origin().to_owned(),
            },
            _ => self.origin().to_owned(),
        }
    }

    /// What failed attempts left (nothing yet, for most).
    pub fn history(&self) -> &History {
        self.history.as_deref().unwrap_or(&NO_HISTORY)
    }

    pub fn history_mut(&mut self) -> &mut History {
        self.history.get_or_insert_with(Box::default)
    }

    /// Every failed attempt, for `done` and `failed`.
    pub fn attempts(&self) -> &[Attempt] {
        &self.history().attempts
    }

    /// When `origin` may be asked again, if its server set a time.
    pub fn not_before(&self, origin: &str) -> Option<Instant> {
        self.history()
            .not_before
            .iter()
            .find(|(o, _)| o == origin)
            .map(|&(_, at)| at)
    }

    /// Do not ask `origin` again before `at` (a later time than one set before wins).
    pub fn wait_for(&mut self, origin: &str, at: Instant) {
        let not_before = &mut self.history_mut().not_before;
        match not_before.iter_mut().find(|(o, _)| o == origin) {
            Some((_, until)) => *until = (*until).max(at),
            None => not_before.push((origin.to_owned(), at)),
        }
    }

    /// The sources not to choose for an attempt starting at `at`: those ruled out, and those
    /// whose server's `Retry-After` has not passed by then. Borrowed (no copy) unless a
    /// server set such a time.
    pub fn ruled_out_at(&self, at: Instant) -> Cow<'_, [String]> {
        let history = self.history();
        let mut waiting = history
            .not_before
            .iter()
            .filter(move |(_, until)| *until > at)
            .map(|(origin, _)| origin)
            .peekable();
        if waiting.peek().is_none() {
            return Cow::Borrowed(&history.excluded);
        }
        let mut ruled_out = history.excluded.clone();
        ruled_out.extend(waiting.cloned());
        Cow::Owned(ruled_out)
    }

    /// Record a failed attempt at the current URL.
    pub fn record(&mut self, error: crate::error::FetchError) {
        let url = self.url.clone();
        self.history_mut().attempts.push(Attempt { url, error });
    }
}
