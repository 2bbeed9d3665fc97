//! What the front asks: reading stdin lines into the front, and carrying out the requests it
//! submits (downloads, mirror sets, cancels), or refusing them.

use std::path::Path;

use crate::api::{Event, Request, Source, Ticket};
use crate::body::root;
use crate::engine::downloads::State;
use crate::engine::job::Job;
use crate::engine::Engine;
use crate::error::FetchError;
use crate::io::stdin::ReadState;
use crate::net::url::{has_userinfo, scheme_of};

/// Bytes of stdin read per turn before the loop serves sockets again.
const INPUT_BUDGET: usize = 256 * 1024;

impl Engine {
    pub(super) fn read_input(&mut self) {
        let Some(input) = self.input.as_mut() else {
            self.input_pending = false;
            return;
        };
        // Each line is handed to the front and carried out before the next, so that a refusal
        // of line 2 is written before anything about line 3.
        let mut batch = std::mem::take(&mut self.lines);
        let state = input.read(INPUT_BUDGET, |line| batch.push(line));
        self.input_pending = state == ReadState::More;
        for line in batch.lines() {
            self.report.input(line);
            self.carry_out_submissions();
        }
        batch.clear();
        self.lines = batch;
    }

    /// Carry out what the front submitted, in order; says whether there was anything.
    pub(super) fn carry_out_submissions(&mut self) -> bool {
        let any = self.report.has_submissions();
        while self.report.has_submissions() {
            for (ticket, request) in self.report.take_submissions() {
                self.carry_out(ticket, request);
            }
        }
        any
    }

    pub(super) fn carry_out(&mut self, ticket: Ticket, mut request: Request) {
        if let Err(error) = request
            .validate()
            .and_then(|()| self.check_file_urls(&request))
        {
            return self.refuse(ticket, request.id(), error);
        }
        match request {
            Request::Download(download) => self.accept_download(ticket, download),
            Request::Mirrors(mut set) => {
                // A mirror's connections are also under libcurl's per-host cap: a limit
                // above it would leave the extra transfers waiting inside libcurl, where
                // no other mirror can take them. The smaller limit wins, and says so.
                let per_host = self.options.max_per_host as usize;
                if set.max_per_mirror.is_some_and(|max| max > per_host) {
                    eprintln!(
                        "fetchmux: mirror set {}: max_per_mirror {} is above --max-per-host \
                         {per_host}; using {per_host}",
                        set.set,
                        set.max_per_mirror.unwrap_or_default(),
                    );
                    set.max_per_mirror = Some(per_host);
                }
                let default = (self.options.max_per_mirror as usize).min(per_host);
                self.mirrors.declare(set, default);
            }
            Request::Cancel { id } => self.cancel(ticket, &id),
        }
    }

    /// `file://` sources only with `--file-urls` (or urlgrabber's protocol): otherwise a
    /// request could copy any file the helper can read into the cache.
    fn check_file_urls(&self, request: &Request) -> Result<(), FetchError> {
        if self.file_urls {
            return Ok(());
        }
        let (field, urls) = match request {
            Request::Download(download) => match &download.source {
                Source::Urls(urls) if urls.len() == 1 => ("url", urls),
                Source::Urls(urls) => ("urls", urls),
                Source::Mirror { .. } => return Ok(()),
            },
            Request::Mirrors(set) => ("urls", &set.urls),
            Request::Cancel { .. } => return Ok(()),
        };
        if urls
            .iter()
            .any(|url| scheme_of(url).as_deref() == Some("file"))
        {
            return Err(FetchError::UnsupportedScheme(format!(
                "`{field}`: file:// URLs are off; start the helper with --file-urls to allow them"
            )));
        }
        Ok(())
    }

    fn refuse(&mut self, ticket: Ticket, id: Option<&str>, error: FetchError) {
        self.report.emit(&Event::Refused {
            ticket,
            id,
            error: &error,
        });
    }

    fn accept_download(&mut self, ticket: Ticket, download: Box<crate::api::Download>) {
        let refusal = if self.downloads.key_of(&download.id).is_some() {
            Some(format!(
                "`id`: `{}` is already in use by an unfinished download",
                download.id
            ))
        } else if let Source::Mirror { set, .. } = &download.source {
            let has_own = |bases: &[String]| bases.iter().any(|base| has_userinfo(base));
            match self.mirrors.bases(set) {
                None => Some(format!(
                    "`mirror`: no mirror set `{set}` has been declared (op `mirrors`)"
                )),
                // Which of two sets of credentials would count is not obvious to a reader.
                Some(bases) if download.auth.is_some() && has_own(bases) => Some(format!(
                    "`auth`: a base URL of mirror set `{set}` has credentials of its own (user@ or user:password@): give them once"
                )),
                Some(_) => None,
            }
        } else {
            None
        };
        let refusal = refusal
            .or_else(|| {
                let why = self.root.refuse_dest(&download.dest)?;
                Some(format!("`dest`: {} {why}", download.dest.display()))
            })
            .or_else(|| self.unwritable_dest(&download.dest));
        if let Some(message) = refusal {
            let error = FetchError::InvalidRequest(message);
            return self.refuse(ticket, Some(&download.id), error);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let key = self.downloads.insert(Job::new(download, seq));
        self.enqueue(key);
    }

    /// Why `dest` can never be written, if the file system says so now: it is an existing
    /// directory (no file can be renamed over it), or something above it is not a directory.
    /// Checked at submission so that no body is fetched only to fail as `io` when placed. The
    /// directory index makes this free for a name that is not in its directory (the usual
    /// case); a name that is there, or a directory that cannot be read, costs one `lstat`. The
    /// file system may still change before placing; that then fails as `io`, as before.
    /// Under `--root` the same look (the directory opened beneath the root) also refuses a
    /// `dest` whose directory leads out of the root through a symbolic link; a directory that
    /// does not exist yet is made beneath the root when the first byte comes.
    fn unwritable_dest(&mut self, dest: &Path) -> Option<String> {
        if !self.known_files.may_exist(dest) {
            return None;
        }
        match self.root.lstat(dest) {
            Ok(stat) if stat.st_mode & libc::S_IFMT == libc::S_IFDIR => Some(format!(
                "`dest`: {} is an existing directory",
                dest.display()
            )),
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Some(format!(
                "`dest`: {} is below something that is not a directory",
                dest.display()
            )),
            Err(e) if root::is_escape(&e) => Some(format!("`dest`: {e}")),
            _ => None,
        }
    }

    fn cancel(&mut self, ticket: Ticket, id: &str) {
        let Some(key) = self.downloads.key_of(id) else {
            let error =
                FetchError::InvalidRequest(format!("`id`: no unfinished download has id `{id}`"));
            return self.refuse(ticket, Some(id), error);
        };
        match &self.downloads[key].state {
            State::Queued => {
                let job = &self.downloads[key].job;
                self.scheduler.cancel(job.seq, &job.slot);
                self.fail(key, Some(FetchError::Cancelled));
            }
            State::Active(_) => {
                let (sink, _) = self.detach(key);
                keep_if_resumable(sink);
                self.stop_attempt(key, FetchError::Cancelled);
            }
            State::Hashing(_) => {
                // Dropping the sink removes the file; the worker's answer finds nobody.
                let State::Hashing(hashing) =
                    std::mem::replace(&mut self.downloads[key].state, State::Queued)
                else {
                    unreachable!()
                };
                self.hashing_held -= hashing.held;
                self.hashing -= 1;
                self.stop_attempt(key, FetchError::Cancelled);
            }
            State::Placing(_) => {
                // Verified and being written: too late to cancel; `done` follows.
                let error = FetchError::InvalidRequest(format!(
                    "`id`: download `{id}` is verified and being put in place; it cannot be cancelled"
                ));
                self.refuse(ticket, Some(id), error);
            }
        }
    }
}

/// A download stopped by cancel or shutdown keeps its bytes if it is resumable.
pub(super) fn keep_if_resumable(sink: Option<crate::body::sink::Sink>) {
    if let Some(mut sink) = sink {
        sink.keep_partial();
    }
}
