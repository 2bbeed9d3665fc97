//! The receiving end of one attempt: what every body goes through, whatever its store.
//!
//! Each piece curl hands over is cut to the window asked for, checked against the size cap,
//! fed to the digests and handed to the [`Store`] chosen at the first byte; once the body is
//! complete, its size and digests are verified and only then does it become `dest`, so
//! `dest` only ever holds verified bytes. Every way out other than a successful
//! [`Sink::place`] removes what was stored, except that a resumable download's bytes are
//! kept for a later attempt (see [`crate::body::partial`]). Deciding here, in one place,
//! keeps the write callback's path short: window, cap, digests, store.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::body::digest::{Algorithm, Digests};
use crate::body::fs;
use crate::body::hasher::{Accepted, Hasher};
use crate::body::partial::Partial;
pub use crate::body::partial::{Identity, ResumeFrom};
use crate::body::placer::Placement;
use crate::body::root::Root;
use crate::body::store::{Store, Temp, NAMED_FILE_ABOVE};
use crate::error::FetchError;

/// Whole bodies from this size on are hashed and written by a worker thread when the sink
/// may use one ([`Sink::hash_on_worker`]): below it, handing over costs more than it saves.
/// Below it, a whole body may instead be received into memory
/// ([`Sink::buffer_small_bodies`]).
pub const WORKER_FROM: u64 = 128 * 1024;

/// Bytes to drop before storing, then bytes to store (a range the server did not honour).
#[derive(Debug, Clone, Copy)]
struct Window {
    skip: u64,
    take: u64,
}

/// The receiving end of one attempt.
pub struct Sink {
    dest: PathBuf,
    /// Where `dest` must lie (`--root`), and `dest`'s directory opened beneath it: at the
    /// first byte (or to look for a partial), and kept, so that the file is created, renamed
    /// and removed in the directory that was checked.
    root: Arc<Root>,
    dir: Option<OwnedFd>,
    /// The placed file's permission bits are at most these (a `file://` source's own).
    mode: Option<u32>,
    wanted: Vec<Algorithm>,
    /// The digest state, unless a worker holds it ([`Store::Lane`]).
    digests: Digests,
    /// Bytes stored so far (including a resumed prefix).
    received: u64,
    limit: Option<u64>,
    window: Option<Window>,
    /// The body's announced length, if known: it decides the store.
    expected_len: Option<u64>,
    /// The workers a whole body of [`WORKER_FROM`] or more may be handed to, and the
    /// transfer's curl token (for unpausing it).
    worker: Option<(Hasher, usize)>,
    /// A buffer (from an earlier body) a small whole body may be received into.
    memory: Option<Vec<u8>>,
    store: Store,
}

/// What [`Sink::write`] asks of the transfer.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    /// Go on.
    More,
    /// Everything wanted has arrived (a range cut out of a whole body): stop, successfully.
    Complete,
    /// Offer these bytes again later (a worker has every buffer of this body).
    Pause,
}

/// What a verified body looked like: its size and hashes.
#[derive(Debug)]
pub struct Verified {
    pub size: u64,
    pub hashes: Vec<(Algorithm, String)>,
}

impl Sink {
    /// A sink for `dest` that will compute `wanted` digests (plus SHA-256) and refuse more
    /// than `limit` bytes.
    pub fn new(root: &Arc<Root>, dest: &Path, wanted: &[Algorithm], limit: Option<u64>) -> Sink {
        Sink {
            dest: dest.to_path_buf(),
            root: Arc::clone(root),
            dir: None,
            mode: None,
            wanted: wanted.to_vec(),
            digests: Digests::new(wanted.iter().copied()),
            received: 0,
            limit,
            window: None,
            expected_len: None,
            worker: None,
            memory: None,
            store: Store::Unopened,
        }
    }

    /// A sink for a resumable download: continues our partial of the same download if there
    /// is a sound one (its digests recomputed from the bytes), else starts it afresh. With
    /// `adopt`, the bytes another program left at `dest` become that partial first
    /// ([`crate::body::partial::adopt`]).
    pub fn resumable(
        root: &Arc<Root>,
        dest: &Path,
        wanted: &[Algorithm],
        limit: Option<u64>,
        identity: Identity,
        adopt: bool,
    ) -> (Sink, Option<ResumeFrom>) {
        let mut sink = Sink::new(root, dest, wanted, limit);
        let mut partial = Partial::new(dest, identity);
        // A directory that is not there (or not beneath the root) holds no partial; the
        // first byte creates it, or fails saying why.
        sink.dir = root.open_dir(fs::parent(dest), false, libc::O_PATH).ok();
        let resume = sink.dir.as_ref().and_then(|dir| {
            let dir = dir.as_raw_fd();
            if adopt {
                if let Err(e) = crate::body::partial::adopt(dir, dest, &partial.identity()) {
                    // The bytes stay where they are and a whole body replaces them.
                    eprintln!(
                        "fetchmux: cannot continue {}: {e}; fetching it whole",
                        dest.display()
                    );
                }
            }
            partial.continue_or_clear(dir, dest, wanted, limit)
        });
        let resume = resume.map(|continued| {
            sink.digests = continued.digests;
            sink.received = continued.length;
            continued.from
        });
        sink.store = Store::Partial(partial);
        (sink, resume)
    }

    /// Leave the placed file's permission bits at most `mode` (a `file://` source's own).
    pub fn limit_mode(&mut self, mode: u32) {
        self.mode = Some(mode);
    }

    /// `dest`'s directory, opened beneath the root (created if need be) the first time.
    fn dir(&mut self) -> Result<RawFd, FetchError> {
        if let Some(dir) = &self.dir {
            return Ok(dir.as_raw_fd());
        }
        let parent = fs::parent(&self.dest);
        let dir = self
            .root
            .open_dir(parent, true, libc::O_PATH)
            .map_err(|e| {
                FetchError::io(
                    format!("opening the directory of {}", self.dest.display()),
                    &e,
                )
            })?;
        Ok(self.dir.insert(dir).as_raw_fd())
    }

    /// Let a worker of `hasher` hash and write the body if it turns out to be of
    /// [`WORKER_FROM`] or more; `token` is the transfer's, for unpausing it. Only for a
    /// whole body written from its first byte (not a resumed partial, not a range).
    pub fn hash_on_worker(&mut self, hasher: &Hasher, token: usize) {
        self.worker = Some((hasher.clone(), token));
    }

    /// Receive a whole body under [`WORKER_FROM`] into memory (this buffer), so that
    /// [`Sink::place`] hands the verified bytes back for the `placer` worker instead of
    /// writing them on this thread. Only for a whole body written from its first byte (not
    /// a resumed partial, not a range).
    pub fn buffer_small_bodies(&mut self, buffer: Vec<u8>) {
        self.memory = Some(buffer);
    }

    /// A worker holds the digests: [`Sink::finish_hashing`] before placing.
    pub fn hashing_elsewhere(&self) -> bool {
        matches!(self.store, Store::Lane { .. })
    }

    /// Hand the last bytes to the worker and ask for the digests; they come back on the
    /// hasher's receiver under the returned lane id, for [`Sink::hashed`]. Also returns the
    /// bytes of buffers the body holds until then.
    pub fn finish_hashing(&mut self) -> (u64, usize) {
        match std::mem::replace(&mut self.store, Store::Unopened) {
            Store::Lane { lane, file } => {
                self.store = file.into();
                lane.finish()
            }
            _ => panic!("hashing elsewhere"),
        }
    }

    /// The digests a worker computed.
    pub fn hashed(&mut self, digests: Digests) {
        self.digests = digests;
    }

    /// Bytes stored so far (including a resumed prefix).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The cap on this body, if any.
    pub fn limit(&self) -> Option<u64> {
        self.limit
    }

    /// The length the response announces (Content-Length), before the first byte.
    pub fn expect_len(&mut self, len: Option<u64>) {
        self.expected_len = len;
    }

    /// A body too big for `O_TMPFILE`: a named temporary file, coalesced writes.
    fn above_named_file_size(&self) -> bool {
        self.expected_len.is_some_and(|len| len > NAMED_FILE_ABOVE)
    }

    /// Keep only `take` bytes after the first `skip` (the server sent the whole body for a
    /// range request).
    pub fn set_window(&mut self, skip: u64, take: u64) {
        self.window = Some(Window { skip, take });
    }

    /// The server will send the whole body after all: drop the kept prefix and start over.
    pub fn restart(&mut self) -> Result<(), FetchError> {
        self.store.restart().map_err(|e| {
            let file = self.store.file_for_messages(&self.dest);
            FetchError::io(format!("truncating {file}"), &e)
        })?;
        self.digests = Digests::new(self.wanted.iter().copied());
        self.received = 0;
        Ok(())
    }

    /// The response's validators, recorded with a kept partial for `If-Range`.
    pub fn set_validators(&mut self, etag: Option<String>, last_modified: Option<String>) {
        if let Store::Partial(partial) = &mut self.store {
            partial.set_validators(etag, last_modified);
        }
    }

    /// The hot path: called for every chunk curl hands us.
    #[inline]
    pub fn write(&mut self, mut bytes: &[u8]) -> Result<Flow, FetchError> {
        if let Some(window) = &mut self.window {
            let skip = window.skip.min(bytes.len() as u64) as usize;
            window.skip -= skip as u64;
            bytes = &bytes[skip..];
            let take = window.take.min(bytes.len() as u64) as usize;
            window.take -= take as u64;
            bytes = &bytes[..take];
        }
        let total = self.received + bytes.len() as u64;
        if let Some(limit) = self.limit {
            if total > limit {
                return Err(FetchError::TooLarge { limit });
            }
        }
        if !bytes.is_empty() {
            if self.store.unopened() {
                self.open_store()?;
            }
            let written = match &mut self.store {
                // All or nothing: a paused piece is offered again, so nothing may change.
                Store::Lane { lane, .. } => match lane.accept(bytes) {
                    Accepted::Taken => {
                        self.received = total;
                        return Ok(Flow::More);
                    }
                    Accepted::Pause => return Ok(Flow::Pause),
                    Accepted::Failed => Err(lane.take_error()),
                },
                store => {
                    self.digests.update(bytes);
                    self.received = total;
                    let coalesce = self.expected_len.is_some_and(|len| len > NAMED_FILE_ABOVE);
                    store.write_here(bytes, coalesce)
                }
            };
            if let Err(e) = written {
                return Err(self.write_failed(&e));
            }
        }
        if self.window.is_some_and(|w| w.take == 0) {
            return Ok(Flow::Complete);
        }
        Ok(Flow::More)
    }

    /// Writing the body's file failed with `error` (here or on a hashing worker): an `io`
    /// error naming the file being written and the OS error. Only built on failure.
    #[cold]
    pub fn write_failed(&self, error: &std::io::Error) -> FetchError {
        let file = self.store.file_for_messages(&self.dest);
        FetchError::io(format!("writing {file}"), error)
    }

    /// At the first byte: choose the store (see [`crate::body::store`]).
    fn open_store(&mut self) -> Result<(), FetchError> {
        if matches!(self.store, Store::Unopened) {
            if let Some(len) = self.small_enough_for_memory() {
                let mut buffer = self.memory.take().unwrap_or_default();
                buffer.clear();
                buffer.reserve_exact(len);
                self.store = Store::Memory(buffer);
                return Ok(());
            }
        }
        let named = self.above_named_file_size();
        let dir = self.dir()?;
        self.store.open(dir, &self.dest, named)?;
        self.hash_on_worker_if_eligible();
        Ok(())
    }

    /// The capacity for a whole body received into memory, if it may be.
    fn small_enough_for_memory(&self) -> Option<usize> {
        let whole = self.memory.is_some() && self.window.is_none();
        let len = self.expected_len.filter(|&len| len < WORKER_FROM)?;
        whole.then_some(len as usize)
    }

    /// Hand a whole body of [`WORKER_FROM`] or more, just given a temporary file (never a
    /// partial), to a worker, if we may.
    fn hash_on_worker_if_eligible(&mut self) {
        let (Some((hasher, token)), Some(len)) = (self.worker.as_ref(), self.expected_len) else {
            return;
        };
        let eligible = self.window.is_none() && len >= WORKER_FROM;
        if !eligible || !matches!(self.store, Store::Anonymous(_) | Store::Named { .. }) {
            return;
        }
        let temp = match std::mem::replace(&mut self.store, Store::Unopened) {
            Store::Anonymous(file) => Temp::Anonymous(file),
            Store::Named { file, path, .. } => Temp::Named { file, path },
            _ => unreachable!("matched above"),
        };
        let digests = Box::new(std::mem::replace(&mut self.digests, Digests::new([])));
        match hasher.lane(temp.file(), digests, *token, len) {
            Ok(lane) => self.store = Store::Lane { lane, file: temp },
            Err(digests) => {
                self.digests = *digests;
                self.store = temp.into();
            }
        }
    }

    /// Check the body against `size` and `expected` digests, then place it:
    ///
    /// - `Ok((verified, None))`: the body was in a file, which is now `dest`;
    /// - `Ok((verified, Some(placement)))`: the body was received into memory and is
    ///   verified but *not yet* on disk: the caller hands the [`Placement`] to the `placer`
    ///   worker, and `dest` holds the bytes only once the worker says so;
    /// - `Err`: a check failed (or placing did); what was stored is removed (a partial
    ///   too) and `dest` is left as it was.
    pub fn place(
        mut self,
        size: Option<u64>,
        expected: &[(Algorithm, String)],
    ) -> Result<(Verified, Option<Placement>), FetchError> {
        let verified = self.verify(size, expected);
        let memory = match std::mem::replace(&mut self.store, Store::Unopened) {
            Store::Memory(bytes) => Some(bytes),
            other => {
                self.store = other;
                None
            }
        };
        let result = match (verified, memory) {
            (Ok(verified), Some(bytes)) => {
                let dest = std::mem::take(&mut self.dest);
                let mode = self.mode;
                Ok((verified, Some(Placement { dest, bytes, mode })))
            }
            (Ok(verified), None) => {
                let named = self.above_named_file_size();
                let published = self
                    .dir()
                    .and_then(|dir| self.store.publish(dir, &self.dest, named, self.mode));
                published.map(|()| (verified, None))
            }
            (Err(error), _) => Err(error),
        };
        if result.is_err() {
            self.discard();
        }
        result
    }

    fn verify(
        &mut self,
        size: Option<u64>,
        expected: &[(Algorithm, String)],
    ) -> Result<Verified, FetchError> {
        if let Some(expected) = size {
            if expected != self.received {
                return Err(FetchError::SizeMismatch {
                    expected,
                    actual: self.received,
                });
            }
        }
        let digests = std::mem::replace(&mut self.digests, Digests::new([]));
        let hashes = digests.finish();
        for (algorithm, want) in expected {
            let got = hashes
                .iter()
                .find(|(a, _)| a == algorithm)
                .map(|(_, hex)| hex.as_str())
                .unwrap_or_default();
            if got != want {
                return Err(FetchError::ChecksumMismatch {
                    algorithm: algorithm.name(),
                    expected: want.clone(),
                    actual: got.to_string(),
                });
            }
        }
        Ok(Verified {
            size: self.received,
            hashes,
        })
    }

    /// On drop, keep a resumable download's bytes for a later attempt (a transient failure,
    /// a cancel, a shutdown). Without this, dropping removes them.
    pub fn keep_partial(&mut self) {
        if let Store::Partial(partial) = &mut self.store {
            partial.keep();
        }
    }

    /// Drop the bytes received so far, leaving no file behind.
    pub fn discard(&mut self) {
        // No directory was opened: no file was made.
        if let Some(dir) = &self.dir {
            self.store.discard(dir.as_raw_fd());
        }
        self.store = Store::Unopened;
    }

    /// Write out a kept partial's last bytes and the record saying what they are.
    fn write_record(&mut self) -> std::io::Result<()> {
        self.store.flush()?;
        let (Store::Partial(partial), Some(dir)) = (&mut self.store, &self.dir) else {
            return Ok(());
        };
        let dir = dir.as_raw_fd();
        partial.write_record(dir, &self.dest, self.received, self.digests.sha256_so_far())
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Store::Partial(partial) = &self.store {
            if partial.kept(self.received) && self.write_record().is_ok() {
                return;
            }
        }
        // A sink dropped without place() (cancel, abort, error) must not leave its file.
        if self.store.has_file() {
            self.discard();
        }
    }
}

/// If `dest` already holds a file that passes every given check, its size and digests.
/// Without at least one digest an existing file is never trusted. The file is opened in its
/// directory beneath the root; under a root, a `dest` that is a symbolic link is not read
/// (whatever it points to, it is not a file of the cache), and a fetched body replaces it.
pub fn cached(
    root: &Root,
    dest: &Path,
    size: Option<u64>,
    expected: &[(Algorithm, String)],
) -> Option<Verified> {
    if expected.is_empty() {
        return None;
    }
    let file = root
        .open_file(dest, libc::O_RDONLY | libc::O_NONBLOCK)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || size.is_some_and(|s| s != meta.len()) {
        return None;
    }
    let (len, hashes) =
        crate::body::digest::digest_reader(file, expected.iter().map(|(a, _)| *a)).ok()?;
    if size.is_some_and(|s| s != len) {
        return None;
    }
    let all_match = expected
        .iter()
        .all(|(a, want)| hashes.iter().any(|(b, got)| a == b && got == want));
    all_match.then_some(Verified { size: len, hashes })
}

#[cfg(test)]
mod tests;
