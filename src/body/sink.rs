//! Where a body's bytes go: size cap, digests, a temporary file beside `dest`, and the final
//! atomic rename.
//!
//! A small whole body (a known length under 128 KiB) goes to memory instead: [`Sink::place`]
//! verifies it and hands the bytes back for the `placer` worker, which creates, writes and
//! links the file off the loop's thread.
//!
//! The temporary file is created on the first byte, in the same directory as `dest` (so
//! placing it is atomic and never crosses a file system). Where the file system allows, it is
//! an *anonymous* file (`O_TMPFILE`): it has no name until every check has passed and it is
//! linked in as `dest`, so a failed download, or a helper killed mid-transfer, leaves nothing
//! behind at all, and a file costs one directory operation instead of two (create + rename).
//! Elsewhere it is a named temporary file that says who wrote it, renamed onto `dest`.
//! `dest` itself is only ever touched by that last step; every other way out removes the
//! temporary file — except for a resumable download, whose bytes
//! are kept as a *partial* beside a small record of what they are (`.meta`), so that a later
//! attempt, or a later run, can continue them. A partial is only continued if its record is
//! ours, names the same download, and the bytes still hash to what the record says.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::body::digest::{Algorithm, Digests};
use crate::body::hasher::{Accepted, Hasher, Lane};
use crate::body::placer::Placement;
use crate::error::FetchError;

/// Distinguishes temporary files of one process.
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Bodies larger than this are "large": written through a named temporary file (ext4
/// writes an `O_TMPFILE` inode about 1.6 times slower: 512 MiB took 1.6 s against 1.0 s
/// here) in coalesced writes of [`COALESCE`] bytes instead of curl's 16 KiB pieces.
const LARGE: u64 = 1 << 20;
const COALESCE: usize = 256 * 1024;
/// Bodies from this size on are hashed and written by a worker thread when the sink has a
/// [`Hasher`]: below it, handing over costs more than it saves.
const HASH_ELSEWHERE: u64 = 128 * 1024;

/// The most bytes handed to one `write`: a buffer is written in pieces of this size. The
/// kernel takes a page-cache folio as large as the write, from its high-order free lists,
/// and on a VM that reports free memory to its host (virtio-balloon free page reporting,
/// as on the bench machine) such pages are most likely first touched inside the copy and
/// fault on the host: scenario B of `make bench` (bodies of 256 KiB written whole) took
/// 0.59–0.62 s in 3 runs of 4, and 0.38–0.44 s in all 4 with pieces of 64 KiB (16 KiB:
/// the same).
pub const WRITE_PIECE: usize = 64 * 1024;

/// `write_all` in pieces of [`WRITE_PIECE`].
pub fn write_in_pieces(file: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    bytes
        .chunks(WRITE_PIECE)
        .try_for_each(|piece| file.write_all(piece))
}

/// Suffix of every temporary file this helper creates.
pub const TEMP_SUFFIX: &str = ".fetchmux-tmp";
/// Suffix of a resumable partial; its record adds `.meta`.
pub const PARTIAL_SUFFIX: &str = ".fetchmux-partial";

/// What the bytes must turn out to be; a partial is only continued for the same download.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    pub size: Option<u64>,
    pub sha256: Option<String>,
}

/// The record kept beside a partial.
#[derive(Debug, Serialize, Deserialize)]
struct PartialRecord {
    fetchmux_partial: u32,
    dest: PathBuf,
    identity: Identity,
    length: u64,
    sha256_prefix: String,
    etag: Option<String>,
    last_modified: Option<String>,
}

/// Where a resumed download continues, and the validator for `If-Range`.
#[derive(Debug, Clone)]
pub struct ResumeFrom {
    pub offset: u64,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// Bytes to drop before storing, then bytes to store (a range the server did not honour).
#[derive(Debug, Clone, Copy)]
struct Window {
    skip: u64,
    take: u64,
}

/// The receiving end of one attempt.
pub struct Sink {
    dest: PathBuf,
    temp: PathBuf,
    file: Option<File>,
    /// `file` is anonymous (`O_TMPFILE`): `temp` names nothing on disk.
    anonymous: bool,
    /// The body's announced length, if known (decides small or large handling).
    expected_len: Option<u64>,
    /// Bytes of a large body not yet written (coalescing curl's small pieces).
    pending: Vec<u8>,
    wanted: Vec<Algorithm>,
    /// The digest state, unless a worker holds it (`lane`).
    digests: Digests,
    hasher: Option<(Hasher, usize)>,
    /// A worker hashing and writing this body (see `hasher`).
    lane: Option<Lane>,
    /// A small whole body may be received into memory (this buffer, reused from an earlier
    /// body) and placed by the `placer` worker.
    may_buffer: Option<Vec<u8>>,
    /// The body so far, when it is received into memory.
    memory: Option<Vec<u8>>,
    received: u64,
    limit: Option<u64>,
    window: Option<Window>,
    /// Set for resumable downloads: the bytes outlive a failed attempt.
    partial: Option<Identity>,
    keep: bool,
    validators: (Option<String>, Option<String>),
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

/// What a verified, placed body looked like.
#[derive(Debug)]
pub struct Verified {
    pub size: u64,
    pub hashes: Vec<(Algorithm, String)>,
}

impl Sink {
    /// A sink for `dest` that will compute `wanted` digests (plus SHA-256) and refuse more
    /// than `limit` bytes.
    pub fn new(dest: &Path, wanted: &[Algorithm], limit: Option<u64>) -> Sink {
        Sink {
            dest: dest.to_path_buf(),
            temp: temp_path_for(dest),
            file: None,
            anonymous: false,
            expected_len: None,
            pending: Vec::new(),
            wanted: wanted.to_vec(),
            digests: Digests::new(wanted.iter().copied()),
            hasher: None,
            lane: None,
            may_buffer: None,
            memory: None,
            received: 0,
            limit,
            window: None,
            partial: None,
            keep: false,
            validators: (None, None),
        }
    }

    /// A sink for a resumable download: continues our partial of the same download if there
    /// is a sound one (its digests recomputed from the bytes), else starts it afresh.
    pub fn resumable(
        dest: &Path,
        wanted: &[Algorithm],
        limit: Option<u64>,
        identity: Identity,
    ) -> (Sink, Option<ResumeFrom>) {
        let mut sink = Sink::new(dest, wanted, limit);
        sink.temp = partial_path_for(dest);
        sink.partial = Some(identity);
        let resume = sink.reopen_partial();
        if resume.is_none() {
            // Whatever is there is not ours, or not sound: never trusted, never appended to.
            let _ = std::fs::remove_file(&sink.temp);
            let _ = std::fs::remove_file(meta_path_for(&sink.temp));
        }
        (sink, resume)
    }

    fn reopen_partial(&mut self) -> Option<ResumeFrom> {
        let meta = std::fs::read(meta_path_for(&self.temp)).ok()?;
        let record: PartialRecord = serde_json::from_slice(&meta).ok()?;
        let sound = record.fetchmux_partial == 1
            && record.dest == self.dest
            && Some(&record.identity) == self.partial.as_ref()
            && record.length > 0
            && self.limit.is_none_or(|limit| record.length <= limit);
        if !sound {
            return None;
        }
        // The digests of a kept prefix are recomputed from the bytes, never trusted.
        let mut digests = Digests::new(self.wanted.iter().copied());
        let length = feed_file(&self.temp, &mut digests).ok()?;
        if length != record.length || digests.sha256_so_far() != record.sha256_prefix {
            return None;
        }
        let file = OpenOptions::new().append(true).open(&self.temp).ok()?;
        self.digests = digests;
        self.file = Some(file);
        self.received = length;
        Some(ResumeFrom {
            offset: length,
            etag: record.etag,
            last_modified: record.last_modified,
        })
    }

    /// Let a worker of `hasher` hash and write the body if it turns out large; `token` is the
    /// transfer's, for unpausing it. Only for a whole body written from its first byte (not a
    /// resumed partial, not a range).
    pub fn hash_large_bodies_with(&mut self, hasher: &Hasher, token: usize) {
        self.hasher = Some((hasher.clone(), token));
    }

    /// Receive a small whole body into memory, so that [`Sink::place`] hands the verified
    /// bytes back for the `placer` worker instead of writing them on this thread. Only for a
    /// whole body written from its first byte (not a resumed partial, not a range).
    pub fn buffer_small_bodies(&mut self, buffer: Vec<u8>) {
        self.may_buffer = Some(buffer);
    }

    /// A worker holds the digests: [`Sink::finish_hashing`] before placing.
    pub fn hashing_elsewhere(&self) -> bool {
        self.lane.is_some()
    }

    /// Hand the last bytes to the worker and ask for the digests; they come back on the
    /// hasher's receiver under the returned id, for [`Sink::hashed`]. Also returns the bytes
    /// of buffers the body holds until then.
    pub fn finish_hashing(&mut self) -> (u64, usize) {
        self.lane.take().expect("hashing elsewhere").finish()
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

    fn is_large(&self) -> bool {
        self.expected_len.is_some_and(|len| len > LARGE)
    }

    /// Write out coalesced bytes.
    fn flush_pending(&mut self) -> Result<(), FetchError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let file = self
            .file
            .as_mut()
            .expect("a file exists once bytes are pending");
        let result = write_in_pieces(file, &self.pending);
        self.pending.clear();
        result.map_err(|e| FetchError::io(format!("writing {}", self.temp.display()), &e))
    }

    /// Keep only `take` bytes after the first `skip` (the server sent the whole body for a
    /// range request).
    pub fn set_window(&mut self, skip: u64, take: u64) {
        self.window = Some(Window { skip, take });
    }

    /// The server will send the whole body after all: drop the kept prefix and start over.
    pub fn restart(&mut self) -> Result<(), FetchError> {
        if let Some(file) = &self.file {
            file.set_len(0)
                .map_err(|e| FetchError::io(format!("truncating {}", self.temp.display()), &e))?;
        }
        self.pending.clear();
        self.lane = None;
        if let Some(memory) = &mut self.memory {
            memory.clear();
        }
        self.digests = Digests::new(self.wanted.iter().copied());
        self.received = 0;
        Ok(())
    }

    /// The response's validators, recorded with a kept partial for `If-Range`.
    pub fn set_validators(&mut self, etag: Option<String>, last_modified: Option<String>) {
        self.validators = (etag, last_modified);
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
            if self.file.is_none() && self.memory.is_none() {
                if let Some(len) = self.small_enough_for_memory() {
                    let mut buffer = self.may_buffer.take().unwrap_or_default();
                    buffer.clear();
                    buffer.reserve_exact(len);
                    self.memory = Some(buffer);
                } else {
                    let file = self.create()?;
                    self.hash_elsewhere(&file);
                    self.file = Some(file);
                }
            }
            if let Some(memory) = &mut self.memory {
                self.digests.update(bytes);
                memory.extend_from_slice(bytes);
                self.received = total;
                return Ok(if self.window.is_some_and(|w| w.take == 0) {
                    Flow::Complete
                } else {
                    Flow::More
                });
            }
            if let Some(lane) = &mut self.lane {
                // All or nothing: a paused piece is offered again, so nothing may change.
                match lane.accept(bytes) {
                    Accepted::Taken => self.received = total,
                    Accepted::Pause => return Ok(Flow::Pause),
                    Accepted::Failed => {
                        let e = std::io::Error::other("the hashing worker could not write");
                        return Err(FetchError::io(
                            format!("writing {}", self.temp.display()),
                            &e,
                        ));
                    }
                }
                return Ok(Flow::More);
            }
            self.digests.update(bytes);
            self.received = total;
            if self.is_large() {
                if self.pending.capacity() == 0 {
                    self.pending.reserve_exact(COALESCE);
                }
                self.pending.extend_from_slice(bytes);
                if self.pending.len() >= COALESCE {
                    self.flush_pending()?;
                }
            } else {
                let file = self.file.as_mut().expect("just created");
                file.write_all(bytes)
                    .map_err(|e| FetchError::io(format!("writing {}", self.temp.display()), &e))?;
            }
        }
        if self.window.is_some_and(|w| w.take == 0) {
            return Ok(Flow::Complete);
        }
        Ok(Flow::More)
    }

    /// At the first byte: the capacity for a body received into memory, if it may be.
    fn small_enough_for_memory(&self) -> Option<usize> {
        let whole = self.may_buffer.is_some() && self.partial.is_none() && self.window.is_none();
        let len = self.expected_len.filter(|&len| len < HASH_ELSEWHERE)?;
        whole.then_some(len as usize)
    }

    /// At the first byte: hand a large whole body to a worker, if we may.
    fn hash_elsewhere(&mut self, file: &File) {
        let eligible = self.partial.is_none()
            && self.window.is_none()
            && self.expected_len.is_some_and(|len| len >= HASH_ELSEWHERE);
        let (Some((hasher, token)), Some(len)) = (self.hasher.as_ref(), self.expected_len) else {
            return;
        };
        if !eligible {
            return;
        }
        let digests = Box::new(std::mem::replace(&mut self.digests, Digests::new([])));
        match hasher.lane(file, digests, *token, len) {
            Ok(lane) => self.lane = Some(lane),
            Err(digests) => self.digests = *digests,
        }
    }

    /// Open the file the bytes go to (creating `dest`'s directory if need be).
    fn create(&mut self) -> Result<File, FetchError> {
        match self.open_temp() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = self.dest.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| FetchError::io(format!("creating {}", dir.display()), &e))?;
                }
                self.open_temp()
            }
            other => other,
        }
        .map_err(|e| {
            FetchError::io(
                format!("creating a file beside {}", self.dest.display()),
                &e,
            )
        })
    }

    fn open_temp(&mut self) -> std::io::Result<File> {
        use std::os::unix::fs::OpenOptionsExt;
        if self.partial.is_some() {
            // The stable partial name: truncate whatever untrusted file is there.
            let file = OpenOptions::new()
                .append(true)
                .create(true)
                .truncate(false)
                .open(&self.temp)?;
            file.set_len(0)?;
            return Ok(file);
        }
        let dir = match self.dest.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let anonymous = if self.is_large() {
            Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
        } else {
            OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_TMPFILE)
                .mode(0o666)
                .open(dir)
        };
        match anonymous {
            Ok(file) => {
                self.anonymous = true;
                Ok(file)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(e),
            // No O_TMPFILE on this file system (or kernel): a named temporary file.
            Err(_) => OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&self.temp),
        }
    }

    /// Give the finished file its final name.
    fn publish(&self, file: &File) -> Result<(), FetchError> {
        let placing =
            |e: std::io::Error| FetchError::io(format!("placing {}", self.dest.display()), &e);
        if !self.anonymous {
            return std::fs::rename(&self.temp, &self.dest).map_err(placing);
        }
        match link_anonymous(file, &self.dest) {
            Ok(()) => Ok(()),
            // linkat never replaces: an existing dest is replaced by a rename instead.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                link_anonymous(file, &self.temp).map_err(placing)?;
                std::fs::rename(&self.temp, &self.dest).map_err(|e| {
                    let _ = std::fs::remove_file(&self.temp);
                    placing(e)
                })
            }
            Err(e) => Err(placing(e)),
        }
    }

    /// Check the body against `size` and `expected` digests; on success move it onto `dest`.
    /// On any failure the temporary file (or partial) is removed and `dest` is left as it was.
    ///
    /// A body received into memory is verified but not written: it comes back as a
    /// [`Placement`] for the `placer` worker, and is on disk only once the worker says so.
    pub fn place(
        mut self,
        size: Option<u64>,
        expected: &[(Algorithm, String)],
    ) -> Result<(Verified, Option<Placement>), FetchError> {
        let placed = self.verify(size, expected);
        let result = match (placed, self.memory.take()) {
            (Ok(placed), Some(bytes)) => {
                let dest = std::mem::take(&mut self.dest);
                Ok((placed, Some(Placement { dest, bytes })))
            }
            (Ok(placed), None) => self.rename().map(|()| (placed, None)),
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

    fn rename(&mut self) -> Result<(), FetchError> {
        self.flush_pending()?;
        // An empty body never called write(): create the (empty) file now.
        let file = match self.file.take() {
            Some(file) => file,
            None => self.create()?,
        };
        let published = self.publish(&file);
        drop(file);
        published?;
        if self.partial.is_some() {
            let _ = std::fs::remove_file(meta_path_for(&self.temp));
        }
        Ok(())
    }

    /// On drop, keep a resumable download's bytes for a later attempt (a transient failure,
    /// a cancel, a shutdown). Without this, dropping removes them.
    pub fn keep_partial(&mut self) {
        self.keep = self.partial.is_some();
    }

    /// Drop the bytes received so far, leaving no file behind.
    pub fn discard(&mut self) {
        self.keep = false;
        self.pending.clear();
        self.lane = None;
        self.memory = None;
        let had_file = self.file.take().is_some();
        // An anonymous file vanishes when closed; a named one must be removed.
        if !self.anonymous && (had_file || self.partial.is_some()) {
            let _ = std::fs::remove_file(&self.temp);
        }
        if self.partial.is_some() {
            let _ = std::fs::remove_file(meta_path_for(&self.temp));
        }
    }

    fn write_record(&mut self) -> std::io::Result<()> {
        let Some(identity) = self.partial.clone() else {
            return Ok(());
        };
        self.flush_pending()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let record = PartialRecord {
            fetchmux_partial: 1,
            dest: self.dest.clone(),
            identity,
            length: self.received,
            sha256_prefix: self.digests.sha256_so_far(),
            etag: self.validators.0.take(),
            last_modified: self.validators.1.take(),
        };
        let meta = meta_path_for(&self.temp);
        let staging = meta.with_extension("meta-new");
        std::fs::write(&staging, serde_json::to_vec(&record)?)?;
        std::fs::rename(&staging, &meta)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if self.keep && self.received > 0 && self.file.is_some() && self.write_record().is_ok() {
            return;
        }
        // A sink dropped without place() (cancel, abort, error) must not leave its file.
        if self.file.is_some() {
            self.discard();
        }
    }
}

/// Link an anonymous (`O_TMPFILE`) file into the directory as `name`. Through /proc this
/// needs no privilege; `AT_EMPTY_PATH` (which needs CAP_DAC_READ_SEARCH) is the fallback.
fn link_anonymous(file: &File, name: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let fd = file.as_raw_fd();
    let target = CString::new(name.as_os_str().as_bytes())?;
    let proc_path = CString::new(format!("/proc/self/fd/{fd}"))?;
    // SAFETY: valid NUL-terminated paths and an open descriptor.
    let linked = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc_path.as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if linked == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.kind() != std::io::ErrorKind::NotFound {
        return Err(err);
    }
    // No /proc: link the descriptor itself.
    // SAFETY: as above; the empty path refers to `fd`.
    let linked = unsafe {
        libc::linkat(
            fd,
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    if linked == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Feed a file's bytes to `digests`; returns how many there were.
fn feed_file(path: &Path, digests: &mut Digests) -> std::io::Result<u64> {
    use std::io::Read;
    let mut file = File::open(path)?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0;
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => {
                digests.update(&buf[..n]);
                total += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn file_name_of(dest: &Path) -> String {
    dest.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `dir/.name.<pid>.<n>.fetchmux-tmp`: hidden, unique per process and attempt, and
/// recognisably ours.
fn temp_path_for(dest: &Path) -> PathBuf {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let pid = *PID.get_or_init(std::process::id);
    let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
    let name = format!(".{}.{pid}.{seq}{TEMP_SUFFIX}", file_name_of(dest));
    dest.with_file_name(name)
}

/// `dir/.name.fetchmux-partial`: stable across runs, so a later run can continue it.
pub fn partial_path_for(dest: &Path) -> PathBuf {
    dest.with_file_name(format!(".{}{PARTIAL_SUFFIX}", file_name_of(dest)))
}

fn meta_path_for(partial: &Path) -> PathBuf {
    let mut name = partial.as_os_str().to_owned();
    name.push(".meta");
    PathBuf::from(name)
}

/// If `dest` already holds a file that passes every given check, its size and digests.
/// Without at least one digest an existing file is never trusted.
pub fn cached(
    dest: &Path,
    size: Option<u64>,
    expected: &[(Algorithm, String)],
) -> Option<Verified> {
    if expected.is_empty() {
        return None;
    }
    let meta = std::fs::metadata(dest).ok()?;
    if !meta.is_file() || size.is_some_and(|s| s != meta.len()) {
        return None;
    }
    let (len, hashes) =
        crate::body::digest::digest_file(dest, expected.iter().map(|(a, _)| *a)).ok()?;
    if size.is_some_and(|s| s != len) {
        return None;
    }
    let all_match = expected
        .iter()
        .all(|(a, want)| hashes.iter().any(|(b, got)| a == b && got == want));
    all_match.then_some(Verified { size: len, hashes })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABC_SHA256: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    /// A writer that keeps what it is given and the size of each call.
    #[derive(Default)]
    struct Recording {
        bytes: Vec<u8>,
        calls: Vec<usize>,
    }

    impl Write for Recording {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.bytes.extend_from_slice(buf);
            self.calls.push(buf.len());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_buffer_is_written_whole_in_pieces_of_at_most_write_piece() {
        let body: Vec<u8> = (0..3 * WRITE_PIECE + 5).map(|i| (i % 251) as u8).collect();
        let mut out = Recording::default();
        write_in_pieces(&mut out, &body).unwrap();
        assert_eq!(out.bytes, body);
        assert_eq!(out.calls, [WRITE_PIECE, WRITE_PIECE, WRITE_PIECE, 5]);
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn verified_bytes_are_renamed_into_place() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        let mut sink = Sink::new(&dest, &[Algorithm::Sha256], None);
        sink.write(b"ab").unwrap();
        sink.write(b"c").unwrap();
        let (placed, placement) = sink
            .place(Some(3), &[(Algorithm::Sha256, ABC_SHA256.into())])
            .unwrap();
        assert_eq!(placed.size, 3);
        assert!(placement.is_none(), "written here, not handed over");
        assert_eq!(std::fs::read(&dest).unwrap(), b"abc");
        assert_eq!(entries(dir.path()), vec!["f"]);
    }

    #[test]
    fn a_small_body_is_verified_in_memory_and_handed_back_for_placing() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        let mut sink = Sink::new(&dest, &[], None);
        sink.buffer_small_bodies(Vec::new());
        sink.expect_len(Some(3));
        sink.write(b"ab").unwrap();
        sink.write(b"c").unwrap();
        assert!(
            entries(dir.path()).is_empty(),
            "nothing on disk while receiving"
        );
        let (placed, placement) = sink
            .place(Some(3), &[(Algorithm::Sha256, ABC_SHA256.into())])
            .unwrap();
        let placement = placement.expect("handed back, not written");
        assert_eq!((placed.size, placement.bytes.as_slice()), (3, &b"abc"[..]));
        assert_eq!(placement.dest, dest);
        assert!(entries(dir.path()).is_empty());

        // Wrong bytes are refused before anything is handed back.
        let mut sink = Sink::new(&dest, &[], None);
        sink.buffer_small_bodies(Vec::new());
        sink.expect_len(Some(3));
        sink.write(b"abd").unwrap();
        let err = sink
            .place(Some(3), &[(Algorithm::Sha256, ABC_SHA256.into())])
            .unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::ChecksumMismatch);
        assert!(entries(dir.path()).is_empty());
    }

    #[test]
    fn a_mismatch_leaves_dest_untouched_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        std::fs::write(&dest, b"old").unwrap();
        let mut sink = Sink::new(&dest, &[], None);
        sink.write(b"abd").unwrap();
        let err = sink
            .place(None, &[(Algorithm::Sha256, ABC_SHA256.into())])
            .unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::ChecksumMismatch);
        assert_eq!(std::fs::read(&dest).unwrap(), b"old");
        assert_eq!(entries(dir.path()), vec!["f"]);
    }

    #[test]
    fn the_cap_stops_the_body_and_drop_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        let mut sink = Sink::new(&dest, &[], Some(4));
        sink.write(b"abc").unwrap();
        assert!(matches!(
            sink.write(b"de"),
            Err(FetchError::TooLarge { limit: 4 })
        ));
        drop(sink);
        assert!(entries(dir.path()).is_empty());
    }

    #[test]
    fn a_window_keeps_only_the_range() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        let mut sink = Sink::new(&dest, &[], None);
        sink.set_window(1, 3);
        assert_eq!(sink.write(b"xa").unwrap(), Flow::More);
        assert_eq!(
            sink.write(b"bcdef").unwrap(),
            Flow::Complete,
            "complete after the range"
        );
        sink.place(Some(3), &[(Algorithm::Sha256, ABC_SHA256.into())])
            .unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"abc");
    }

    #[test]
    fn a_kept_partial_is_continued_and_a_tampered_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        let id = Identity {
            size: Some(3),
            sha256: Some(ABC_SHA256.into()),
        };
        let (mut sink, from) = Sink::resumable(&dest, &[], None, id.clone());
        assert!(from.is_none());
        sink.write(b"ab").unwrap();
        sink.set_validators(Some("\"v1\"".into()), None);
        sink.keep_partial();
        drop(sink);
        assert_eq!(
            entries(dir.path()),
            vec![".f.fetchmux-partial", ".f.fetchmux-partial.meta"]
        );
        let (mut sink, from) = Sink::resumable(&dest, &[], None, id.clone());
        let from = from.expect("our sound partial is continued");
        assert_eq!(from.offset, 2);
        assert_eq!(from.etag.as_deref(), Some("\"v1\""));
        sink.write(b"c").unwrap();
        sink.place(Some(3), &[(Algorithm::Sha256, ABC_SHA256.into())])
            .unwrap();
        assert_eq!(entries(dir.path()), vec!["f"]);

        // Someone else's bytes at the partial name (record intact) are not trusted.
        std::fs::remove_file(&dest).unwrap();
        let (mut sink, _) = Sink::resumable(&dest, &[], None, id.clone());
        sink.write(b"ab").unwrap();
        sink.keep_partial();
        drop(sink);
        std::fs::write(dir.path().join(".f.fetchmux-partial"), b"xy").unwrap();
        let (_sink, from) = Sink::resumable(&dest, &[], None, id.clone());
        assert!(from.is_none());
        // A record for another download is not trusted either.
        let other = Identity {
            size: Some(4),
            sha256: None,
        };
        let (mut sink, _) = Sink::resumable(&dest, &[], None, id);
        sink.write(b"ab").unwrap();
        sink.keep_partial();
        drop(sink);
        assert!(Sink::resumable(&dest, &[], None, other).1.is_none());
    }

    #[test]
    fn cached_needs_a_digest_and_a_match() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        std::fs::write(&dest, b"abc").unwrap();
        assert!(cached(&dest, Some(3), &[]).is_none());
        assert!(cached(&dest, Some(4), &[(Algorithm::Sha256, ABC_SHA256.into())]).is_none());
        assert!(cached(&dest, Some(3), &[(Algorithm::Sha256, ABC_SHA256.into())]).is_some());
    }
}
