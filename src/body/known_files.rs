//! Which files the destination directories hold, read once per directory.
//!
//! Before fetching, the engine looks for a verified copy already at `dest` (`cached` in the
//! protocol). Usually there is none, and asking the file system for every file costs a
//! path walk and a directory lookup on the loop's thread: 11 % of its time with 10,000 small
//! files (`make bench`, scenario A). So the first download into a directory reads the
//! directory's names once; from then on a `dest` whose name was not there is known to be
//! absent without a system call, and only names that were there (or that this helper
//! placed since) are looked at on disk.
//!
//! The trade-off, documented in docs/protocol.md: a file that another process puts into a
//! directory after fetchmux first read it is not noticed as cached; it is downloaded again
//! and replaced by verified bytes, which is what would happen without a digest anyway.
//!
//! Reading a directory's names is also when stale temporary files of a dead helper there are
//! removed ([`fs::remove_if_stale`]): once per directory and run, before the first download
//! into it.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::body::fs;
use crate::body::root::Root;

/// A directory with more entries than this is not indexed: every `dest` in it is looked at
/// on disk, as before.
const MAX_NAMES: usize = 1 << 20;

pub struct KnownFiles {
    /// Directories are opened beneath it (`--root`): their names are read, and stale files
    /// removed, only there.
    root: Arc<Root>,
    /// Per directory: the names in it, or `None` when it could not be indexed.
    dirs: HashMap<PathBuf, Option<HashSet<OsString>>>,
}

impl KnownFiles {
    pub fn new(root: Arc<Root>) -> KnownFiles {
        KnownFiles {
            root,
            dirs: HashMap::new(),
        }
    }

    /// Might `dest` exist? `false` only when its directory's index says it does not.
    pub fn may_exist(&mut self, dest: &Path) -> bool {
        let Some((dir, name)) = split(dest) else {
            return true;
        };
        let names = match self.dirs.get(dir) {
            Some(names) => names,
            None => self
                .dirs
                .entry(dir.to_path_buf())
                .or_insert_with(|| index(&self.root, dir)),
        };
        names.as_ref().is_none_or(|names| names.contains(name))
    }

    /// This helper put a file at `dest`.
    pub fn placed(&mut self, dest: &Path) {
        let Some((dir, name)) = split(dest) else {
            return;
        };
        if let Some(Some(names)) = self.dirs.get_mut(dir) {
            if !names.contains(name) {
                names.insert(name.to_os_string());
            }
        }
    }
}

/// `dest`'s directory and name. A bare name (`a.rpm`) has the parent `""`, which names no
/// directory to read (`read_dir("")` fails as not found, and would make the name look
/// absent); it lives in the working directory, `.`.
fn split(dest: &Path) -> Option<(&Path, &std::ffi::OsStr)> {
    let (dir, name) = (dest.parent()?, dest.file_name()?);
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    Some((dir, name))
}

/// The names in `dir` (opened beneath the root): empty if it does not exist (yet); `None`
/// if it cannot be read (or leads out of the root) or is too large to keep.
fn index(root: &Root, dir: &Path) -> Option<HashSet<OsString>> {
    let fd = match root.open_dir(dir, false, libc::O_RDONLY) {
        Ok(fd) => fd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(HashSet::new()),
        Err(_) => return None,
    };
    let listed = fs::names(&fd, MAX_NAMES).ok()?;
    if listed.len() > MAX_NAMES {
        return None;
    }
    let mut names = HashSet::with_capacity(listed.len());
    for name in listed {
        // Reading a directory once is also when stale temporary files of a dead helper in it
        // are removed (docs/design.md, "What a killed helper leaves").
        if fs::remove_if_stale(fd.as_raw_fd(), &name) {
            continue;
        }
        names.insert(name);
    }
    Some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_present_at_first_look_or_placed_since_may_exist() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("old"), b"x").unwrap();
        let mut known = KnownFiles::new(Root::unconfined());
        assert!(known.may_exist(&dir.path().join("old")));
        assert!(!known.may_exist(&dir.path().join("new")));
        known.placed(&dir.path().join("new"));
        assert!(known.may_exist(&dir.path().join("new")));
        // A directory that does not exist yet holds nothing.
        let missing = dir.path().join("sub");
        assert!(!known.may_exist(&missing.join("f")));
        known.placed(&missing.join("f"));
        assert!(known.may_exist(&missing.join("f")));
    }
}
