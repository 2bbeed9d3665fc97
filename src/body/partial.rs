//! The resumable partial: the one store that outlives its attempt, and even the process.
//!
//! A resumable download writes to a stable name beside `dest` (`.NAME.fetchmux-partial`)
//! and, when an attempt fails in a way worth continuing, leaves a small record of what the
//! bytes are beside it (`.meta`), so that a later attempt, or a later run, can ask for the
//! rest. Bytes found on disk are never trusted: a partial is only continued if its record
//! is ours, names the same download, and the bytes still hash to what the record says.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::body::digest::{Algorithm, Digests};
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
/// say.
pub struct Partial {
    pub(super) path: PathBuf,
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
        Partial {
            path: partial_path_for(dest),
            file: None,
            pending: Vec::new(),
            identity,
            validators: (None, None),
            keep: false,
        }
    }

    /// Continue our partial of the same download if there is a sound one (its digests
    /// recomputed from the bytes); else remove whatever is there, never trusted, never
    /// appended to.
    pub fn continue_or_clear(
        &mut self,
        dest: &Path,
        wanted: &[Algorithm],
        limit: Option<u64>,
    ) -> Option<Continued> {
        let continued = self.reopen(dest, wanted, limit);
        if continued.is_none() {
            self.remove_files();
        }
        continued
    }

    fn reopen(
        &mut self,
        dest: &Path,
        wanted: &[Algorithm],
        limit: Option<u64>,
    ) -> Option<Continued> {
        let meta = std::fs::read(meta_path_for(&self.path)).ok()?;
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
        let length = feed_file(&self.path, &mut digests).ok()?;
        if length != record.length || digests.sha256_so_far() != record.sha256_prefix {
            return None;
        }
        let file = OpenOptions::new().append(true).open(&self.path).ok()?;
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
    /// untrusted file is at the stable name.
    pub fn open(path: &Path) -> std::io::Result<File> {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        file.set_len(0)?;
        Ok(file)
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
        let meta = meta_path_for(&self.path);
        let staging = meta.with_extension("meta-new");
        std::fs::write(&staging, serde_json::to_vec(&record)?)?;
        std::fs::rename(&staging, &meta)
    }

    /// Close the file and remove it with its record.
    pub fn remove_files(&mut self) {
        self.keep = false;
        self.file = None;
        let _ = std::fs::remove_file(&self.path);
        self.remove_record();
    }

    /// Remove the record (the partial became `dest`, or is gone).
    pub fn remove_record(&self) {
        let _ = std::fs::remove_file(meta_path_for(&self.path));
    }
}

/// Make the bytes another program left at `dest` (apt's `partial/` file, urlgrabber's
/// `reget`) our partial of this download, recorded with the file's mtime as the `If-Range`
/// validator, so that the resume path asks for the rest and checks everything as usual.
/// Nothing happens when `dest` holds no bytes, or already the whole expected size (the
/// cached check has had its say; a fresh body then replaces it).
pub fn adopt(dest: &Path, identity: &Identity) -> std::io::Result<()> {
    let meta = match std::fs::symlink_metadata(dest) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_file() || meta.len() == 0 || identity.size.is_some_and(|s| meta.len() >= s) {
        return Ok(());
    }
    let mut digests = Digests::new([]);
    let length = feed_file(dest, &mut digests)?;
    let mut partial = Partial::new(dest, identity.clone());
    partial.validators = (None, meta.modified().ok().map(http_date::format));
    // Renamed first: a crash before the record leaves bytes without a record, which the
    // next attempt removes; never a record over bytes it does not describe.
    std::fs::rename(dest, &partial.path)?;
    partial.write_record(dest, length, digests.sha256_so_far())
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

/// `dir/.name.fetchmux-partial`: stable across runs, so a later run can continue it.
pub fn partial_path_for(dest: &Path) -> PathBuf {
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    dest.with_file_name(format!(".{name}{PARTIAL_SUFFIX}"))
}

fn meta_path_for(partial: &Path) -> PathBuf {
    let mut name = partial.as_os_str().to_owned();
    name.push(".meta");
    PathBuf::from(name)
}
