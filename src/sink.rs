//! Where a body's bytes go: size cap, digests, a temporary file beside `dest`, and the final
//! atomic rename.
//!
//! The temporary file is created on the first byte, in the same directory as `dest` (so the
//! rename is atomic and never crosses a file system), with a name that says who wrote it.
//! `dest` itself is only ever touched by the rename, after every check has passed; every
//! other way out removes the temporary file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::digest::{Algorithm, Digests};
use crate::error::FetchError;

/// Distinguishes temporary files of one process.
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Suffix of every temporary file this helper creates.
pub const TEMP_SUFFIX: &str = ".fetchmux-tmp";

/// The receiving end of one attempt.
pub struct Sink {
    dest: PathBuf,
    temp: PathBuf,
    file: Option<File>,
    digests: Digests,
    received: u64,
    limit: Option<u64>,
}

/// What a verified, placed body looked like.
#[derive(Debug)]
pub struct Placed {
    pub size: u64,
    pub hashes: Vec<(Algorithm, String)>,
}

impl Sink {
    /// A sink for `dest` that will compute `wanted` digests (plus SHA-256) and refuse more
    /// than `limit` bytes.
    pub fn new(
        dest: &Path,
        wanted: impl IntoIterator<Item = Algorithm>,
        limit: Option<u64>,
    ) -> Sink {
        Sink {
            dest: dest.to_path_buf(),
            temp: temp_path_for(dest),
            file: None,
            digests: Digests::new(wanted),
            received: 0,
            limit,
        }
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The cap on this body, if any.
    pub fn limit(&self) -> Option<u64> {
        self.limit
    }

    /// The hot path: called for every chunk curl hands us.
    #[inline]
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), FetchError> {
        let total = self.received + bytes.len() as u64;
        if let Some(limit) = self.limit {
            if total > limit {
                return Err(FetchError::TooLarge { limit });
            }
        }
        let file = match self.file {
            Some(ref mut file) => file,
            None => self.file.insert(self.create()?),
        };
        file.write_all(bytes)
            .map_err(|e| FetchError::io(format!("writing {}", self.temp.display()), &e))?;
        self.digests.update(bytes);
        self.received = total;
        Ok(())
    }

    fn create(&self) -> Result<File, FetchError> {
        if let Some(dir) = self.dest.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| FetchError::io(format!("creating {}", dir.display()), &e))?;
        }
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&self.temp)
            .map_err(|e| FetchError::io(format!("creating {}", self.temp.display()), &e))
    }

    /// Check the body against `size` and `expected` digests; on success move it onto `dest`.
    /// On any failure the temporary file is removed and `dest` is left as it was.
    pub fn place(
        mut self,
        size: Option<u64>,
        expected: &[(Algorithm, String)],
    ) -> Result<Placed, FetchError> {
        let result = self.verify_and_rename(size, expected);
        if result.is_err() {
            self.discard();
        }
        result
    }

    fn verify_and_rename(
        &mut self,
        size: Option<u64>,
        expected: &[(Algorithm, String)],
    ) -> Result<Placed, FetchError> {
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
        // An empty body never called write(): create the (empty) file now.
        let file = match self.file.take() {
            Some(file) => file,
            None => self.create()?,
        };
        drop(file);
        std::fs::rename(&self.temp, &self.dest)
            .map_err(|e| FetchError::io(format!("renaming onto {}", self.dest.display()), &e))?;
        Ok(Placed {
            size: self.received,
            hashes,
        })
    }

    /// Drop the bytes received so far, leaving no file behind.
    pub fn discard(&mut self) {
        if self.file.take().is_some() || self.temp.exists() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        // A sink dropped without place() (cancel, abort, error) must not leave its file.
        if self.file.is_some() {
            self.discard();
        }
    }
}

/// `dir/.name.<pid>.<n>.fetchmux-tmp`: hidden, unique per process and attempt, and
/// recognisably ours.
fn temp_path_for(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
    let temp_name = format!(".{name}.{}.{seq}{TEMP_SUFFIX}", std::process::id());
    dest.with_file_name(temp_name)
}

/// If `dest` already holds a file that passes every given check, its size and digests.
/// Without at least one digest an existing file is never trusted.
pub fn cached(dest: &Path, size: Option<u64>, expected: &[(Algorithm, String)]) -> Option<Placed> {
    if expected.is_empty() {
        return None;
    }
    let meta = std::fs::metadata(dest).ok()?;
    if !meta.is_file() || size.is_some_and(|s| s != meta.len()) {
        return None;
    }
    let (len, hashes) = crate::digest::digest_file(dest, expected.iter().map(|(a, _)| *a)).ok()?;
    if size.is_some_and(|s| s != len) {
        return None;
    }
    let all_match = expected
        .iter()
        .all(|(a, want)| hashes.iter().any(|(b, got)| a == b && got == want));
    all_match.then_some(Placed { size: len, hashes })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABC_SHA256: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

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
        let mut sink = Sink::new(&dest, [Algorithm::Sha256], None);
        sink.write(b"ab").unwrap();
        sink.write(b"c").unwrap();
        let placed = sink
            .place(Some(3), &[(Algorithm::Sha256, ABC_SHA256.into())])
            .unwrap();
        assert_eq!(placed.size, 3);
        assert_eq!(std::fs::read(&dest).unwrap(), b"abc");
        assert_eq!(entries(dir.path()), vec!["f"]);
    }

    #[test]
    fn a_mismatch_leaves_dest_untouched_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        std::fs::write(&dest, b"old").unwrap();
        let mut sink = Sink::new(&dest, [], None);
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
        let mut sink = Sink::new(&dest, [], Some(4));
        sink.write(b"abc").unwrap();
        assert!(matches!(
            sink.write(b"de"),
            Err(FetchError::TooLarge { limit: 4 })
        ));
        drop(sink);
        assert!(entries(dir.path()).is_empty());
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
