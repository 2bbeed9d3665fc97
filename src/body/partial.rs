//! The resumable partial: the one store that outlives its attempt, and even the process.
//!
//! A resumable download writes to a stable name beside `dest` (`.NAME.fetchmux-partial`)
//! and, when an attempt fails in a way worth continuing, leaves a small record of what the
//! bytes are beside it (`.meta`), so that a later attempt, or a later run, can ask for the
//! rest. Bytes found on disk are never trusted: a partial is only continued if its record
//! is ours, names the same download, and the bytes still hash to what the record says.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::body::digest::{Algorithm, Digests};
use crate::body::fs;
use crate::http_date;

/// Suffix of a resumable partial; its record adds `.meta`.
pub const PARTIAL_SUFFIX: &str = ".fetchmux-partial";

/// What the bytes must turn out to be; a partial is only continued for the same download.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    pub size: Option<u64>,
    pub sha256: Option<String>,
}

/// Where a resumed download continues, and the validator for `If-Range`.
#[derive(Debug, Clone)]
pub struct ResumeFrom {
    pub offset: u64,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
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

/// A resumable download's store: its file under the stable name, and what its record will
/// say. Every operation is on names in `dest`'s directory, as a descriptor the sink opened
/// (beneath `--root` where there is one), and never follows a symbolic link: a link at the
/// partial's name is nobody's partial.
pub struct Partial {
    /// For messages: the partial's path as `dest` names it.
    pub(super) path: PathBuf,
    /// Its name in `dest`'s directory.
    name: CString,
    /// Open from the start when a kept partial is continued, else from the first byte.
    pub(super) file: Option<File>,
    /// Bytes not yet written (coalescing curl's small pieces of a body too big for
    /// `O_TMPFILE`, as for a named temporary file).
    pub(super) pending: Vec<u8>,
    identity: Identity,
    /// The response's `ETag` and `Last-Modified`, for `If-Range` when continuing.
    validators: (Option<String>, Option<String>),
    /// Keep the bytes, with a record, when the sink is dropped.
    keep: bool,
}

/// A prefix of the body found on disk and found sound.
pub struct Continued {
    pub digests: Digests,
    pub length: u64,
    pub from: ResumeFrom,
}

impl Partial {
    /// The partial of the download of `dest` that must turn out to be `identity`.
    pub fn new(dest: &Path, identity: Identity) -> Partial {
        let path = partial_path_for(dest);
        let name =
            CString::new(path.file_name().unwrap_or_default().as_bytes()).unwrap_or_default();
        Partial {
            path,
            name,
            file: None,
            pending: Vec::new(),
            identity,
            validators: (None, None),
            keep: false,
        }
    }

    /// Continue our partial of the same download in the directory `dir` if there is a sound
    /// one (its digests recomputed from the bytes); else remove whatever is there, never
    /// trusted, never appended to.
    pub fn continue_or_clear(
        &mut self,
        dir: RawFd,
        dest: &Path,
        wanted: &[Algorithm],
        limit: Option<u64>,
    ) -> Option<Continued> {
        let continued = self.reopen(dir, dest, wanted, limit);
        if continued.is_none() {
            self.remove_files(dir);
        }
        continued
    }

    fn reopen(
        &mut self,
        dir: RawFd,
        dest: &Path,
        wanted: &[Algorithm],
        limit: Option<u64>,
    ) -> Option<Continued> {
        let mut meta = Vec::new();
        let mut record_file = open_at(dir, &self.meta_name(), libc::O_RDONLY).ok()?;
        record_file.read_to_end(&mut meta).ok()?;
        let record: PartialRecord = serde_json::from_slice(&meta).ok()?;
        let sound = record.fetchmux_partial == 1
            && record.dest == dest
            && record.identity == self.identity
            && record.length > 0
            && limit.is_none_or(|limit| record.length <= limit);
        if !sound {
            return None;
        }
        // The digests of a kept prefix are recomputed from the bytes, never trusted.
        let mut digests = Digests::new(wanted.iter().copied());
        let file = open_at(dir, &self.name, libc::O_RDWR | libc::O_APPEND).ok()?;
        let length = feed_file(&file, &mut digests).ok()?;
        if length != record.length || digests.sha256_so_far() != record.sha256_prefix {
            return None;
        }
        self.file = Some(file);
        Some(Continued {
            digests,
            length,
            from: ResumeFrom {
                offset: length,
                etag: record.etag,
                last_modified: record.last_modified,
            },
        })
    }

    /// Open the partial for a body written from its first byte: truncate whatever
    /// untrusted file is at the stable name (never through a symbolic link).
    pub fn open(&self, dir: RawFd) -> std::io::Result<File> {
        let file = open_at(
            dir,
            &self.name,
            libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT,
        )?;
        file.set_len(0)?;
        Ok(file)
    }

    /// What the bytes must turn out to be.
    pub fn identity(&self) -> Identity {
        self.identity.clone()
    }

    /// The partial's name in its directory (to rename it onto `dest`).
    pub fn name(&self) -> &CStr {
        &self.name
    }

    /// The response's validators, recorded with a kept partial for `If-Range`.
    pub fn set_validators(&mut self, etag: Option<String>, last_modified: Option<String>) {
        self.validators = (etag, last_modified);
    }

    /// On drop, keep the bytes for a later attempt.
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// Whether dropping the sink should keep these bytes: asked to, and there are some.
    pub fn kept(&self, received: u64) -> bool {
        self.keep && received > 0 && self.file.is_some()
    }

    /// Write the record saying what the first `length` bytes are (their SHA-256 so far);
    /// pending bytes must have been written.
    pub fn write_record(
        &mut self,
        dir: RawFd,
        dest: &Path,
        length: u64,
        sha256_prefix: String,
    ) -> std::io::Result<()> {
        let record = PartialRecord {
            fetchmux_partial: 1,
            dest: dest.to_path_buf(),
            identity: self.identity.clone(),
            length,
            sha256_prefix,
            etag: self.validators.0.take(),
            last_modified: self.validators.1.take(),
        };
        let meta = self.meta_name();
        let staging = suffixed(&self.name, ".meta-new");
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
        open_at(dir, &staging, flags)?.write_all(&serde_json::to_vec(&record)?)?;
        fs::renameat(dir, &staging, &meta)
    }

    /// Close the file and remove it with its record.
    pub fn remove_files(&mut self, dir: RawFd) {
        self.keep = false;
        self.file = None;
        fs::unlinkat(dir, &self.name);
        self.remove_record(dir);
    }

    /// Remove the record (the partial became `dest`, or is gone).
    pub fn remove_record(&self, dir: RawFd) {
        fs::unlinkat(dir, &self.meta_name());
    }

    fn meta_name(&self) -> CString {
        suffixed(&self.name, ".meta")
    }
}

/// Make the bytes another program left at `dest` (apt's `partial/` file, urlgrabber's
/// `reget`) our partial of this download, recorded with the file's mtime as the `If-Range`
/// validator, so that the resume path asks for the rest and checks everything as usual.
/// Nothing happens when `dest` holds no bytes, is not a regular file (a symbolic link is
/// never adopted), or already the whole expected size (the cached check has had its say; a
/// fresh body then replaces it). `dir` is `dest`'s directory.
pub fn adopt(dir: RawFd, dest: &Path, identity: &Identity) -> std::io::Result<()> {
    let name = fs::c_path(dest.file_name().unwrap_or_default())?;
    let file = match open_at(dir, &name, libc::O_RDONLY | libc::O_NONBLOCK) {
        Ok(file) => file,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ELOOP)) => return Ok(()),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() || meta.len() == 0 || identity.size.is_some_and(|s| meta.len() >= s) {
        return Ok(());
    }
    let mut digests = Digests::new([]);
    let length = feed_file(&file, &mut digests)?;
    let mut partial = Partial::new(dest, identity.clone());
    partial.validators = (None, meta.modified().ok().map(http_date::format));
    // Renamed first: a crash before the record leaves bytes without a record, which the
    // next attempt removes; never a record over bytes it does not describe.
    fs::renameat(dir, &name, &partial.name)?;
    partial.write_record(dir, dest, length, digests.sha256_so_far())
}

/// `name` in `dir`, never through a symbolic link.
fn open_at(dir: RawFd, name: &CStr, flags: libc::c_int) -> std::io::Result<File> {
    fs::openat(dir, name, flags | libc::O_NOFOLLOW).map(File::from)
}

fn suffixed(name: &CStr, suffix: &str) -> CString {
    let mut bytes = name.to_bytes().to_vec();
    bytes.extend_from_slice(suffix.as_bytes());
    CString::new(bytes).unwrap_or_default()
}

/// Feed a file's bytes, from its start, to `digests`; returns how many there were.
fn feed_file(mut file: &File, digests: &mut Digests) -> std::io::Result<u64> {
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

/// `dir/.name.fetchmux-partial`: stable across runs, so a later run can continue it.
pub fn partial_path_for(dest: &Path) -> PathBuf {
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    dest.with_file_name(format!(".{name}{PARTIAL_SUFFIX}"))
}
