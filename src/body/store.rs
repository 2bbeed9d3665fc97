//! Where a body's bytes are while it is received: one place at a time, so one enum.
//!
//! The place is chosen at the first byte, by what the body will be: a small whole body
//! goes to memory (the `placer` worker writes it once verified); a body a hashing worker
//! takes is written by that worker; the rest go to a temporary file beside `dest`, in the
//! same directory so that placing it is atomic and never crosses a file system. Where the
//! file system allows, that file is *anonymous* (`O_TMPFILE`): it has no name until every
//! check has passed and it is linked in as `dest`, so a failed download, or a helper killed
//! mid-transfer, leaves nothing behind, and a file costs one directory operation instead of
//! two. A body too big for that, or a file system without it, gets a named temporary file
//! renamed onto `dest`; a SIGKILL leaves that one behind (docs/design.md, "What a killed
//! helper leaves"). A resumable download always has its [`Partial`], chosen before the
//! first byte. Every file operation is relative to `dest`'s directory as a descriptor the
//! sink opened (beneath `--root` where there is one, see [`crate::body::root`]), on single
//! names, never by path: what was checked is where the bytes go. A new kind of store (say, streaming to a file descriptor) is one more
//! variant here.

use std::fs::File;
use std::io::Write;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::body::fs;
use crate::body::hasher::Lane;
use crate::body::partial::Partial;
use crate::error::FetchError;

/// Bodies longer than this go to a named temporary file, written in coalesced writes of
/// [`COALESCE`] bytes instead of curl's 16 KiB pieces: ext4 writes an `O_TMPFILE` inode
/// about 1.6 times slower (512 MiB took 1.6 s against 1.0 s here).
pub const NAMED_FILE_ABOVE: u64 = 1 << 20;
/// The size of one coalesced write of a body above [`NAMED_FILE_ABOVE`].
const COALESCE: usize = 256 * 1024;

/// Where the bytes of a body are.
pub enum Store {
    /// Nothing stored yet: the store is chosen at the first byte (for an empty body, when
    /// it is placed).
    Unopened,
    /// A small whole body, verified here and written by the `placer` worker.
    Memory(Vec<u8>),
    /// An anonymous (`O_TMPFILE`) file, written on the loop's thread.
    Anonymous(File),
    /// A named temporary file, written on the loop's thread; `pending` holds the bytes of a
    /// body above [`NAMED_FILE_ABOVE`] not yet written.
    Named {
        file: File,
        path: PathBuf,
        pending: Vec<u8>,
    },
    /// A resumable download's partial, kept with its record when an attempt fails.
    Partial(Partial),
    /// A hashing worker hashes the body and writes it to `file`; the sink places `file`
    /// once the worker has handed the digests back.
    Lane { lane: Lane, file: Temp },
}

/// A new temporary file beside `dest`.
pub enum Temp {
    /// Nameless until linked in as `dest`; closing it leaves nothing.
    Anonymous(File),
    /// `.NAME.<pid>.<random>.<n>.fetchmux-tmp`, renamed onto `dest`.
    Named { file: File, path: PathBuf },
}

impl Store {
    /// Nothing is open to write to yet (the first byte opens it).
    #[inline]
    pub fn unopened(&self) -> bool {
        matches!(
            self,
            Store::Unopened | Store::Partial(Partial { file: None, .. })
        )
    }

    /// Store bytes in memory or in a file written on this thread; `coalesce` for a body above
    /// [`NAMED_FILE_ABOVE`].
    #[inline]
    pub fn write_here(&mut self, bytes: &[u8], coalesce: bool) -> std::io::Result<()> {
        let (file, pending) = match self {
            Store::Memory(memory) => {
                memory.extend_from_slice(bytes);
                return Ok(());
            }
            Store::Anonymous(file) => return file.write_all(bytes),
            Store::Named { file, pending, .. } => (file, pending),
            Store::Partial(Partial {
                file: Some(file),
                pending,
                ..
            }) => (file, pending),
            Store::Unopened | Store::Partial(_) | Store::Lane { .. } => {
                unreachable!("opened at the first byte, and not a worker's")
            }
        };
        if !coalesce {
            return file.write_all(bytes);
        }
        if pending.capacity() == 0 {
            pending.reserve_exact(COALESCE);
        }
        pending.extend_from_slice(bytes);
        if pending.len() >= COALESCE {
            flush(file, pending)?;
        }
        Ok(())
    }

    /// Write out coalesced bytes.
    pub fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Store::Named { file, pending, .. } => flush(file, pending),
            Store::Partial(Partial {
                file: Some(file),
                pending,
                ..
            }) => flush(file, pending),
            _ => Ok(()),
        }
    }

    /// The file the bytes are written to, for messages (built only on failure): its path,
    /// or, for an anonymous file (which has none), "a temporary file for DEST".
    pub fn file_for_messages(&self, dest: &Path) -> String {
        match self {
            Store::Named { path, .. }
            | Store::Lane {
                file: Temp::Named { path, .. },
                ..
            } => path.display().to_string(),
            Store::Partial(partial) => partial.path.display().to_string(),
            _ => format!("a temporary file for {}", dest.display()),
        }
    }

    /// Drop the bytes stored so far and start again from nothing, in the same store (a
    /// worker's file is written here from then on).
    pub fn restart(&mut self) -> std::io::Result<()> {
        match self {
            Store::Unopened => {}
            Store::Memory(memory) => memory.clear(),
            Store::Anonymous(file) => file.set_len(0)?,
            Store::Named { file, pending, .. } => {
                file.set_len(0)?;
                pending.clear();
            }
            Store::Partial(partial) => {
                if let Some(file) = &partial.file {
                    file.set_len(0)?;
                }
                partial.pending.clear();
            }
            Store::Lane { file, .. } => {
                file.file().set_len(0)?;
                if let Store::Lane { lane, file } = std::mem::replace(self, Store::Unopened) {
                    drop(lane);
                    *self = file.into();
                }
            }
        }
        Ok(())
    }

    /// Open what the body's bytes are written to, where that is a file created at the first
    /// byte in `dest`'s directory `dir`: the partial's, for a resumable download; else a new
    /// temporary file (named when `named`).
    pub fn open(&mut self, dir: RawFd, dest: &Path, named: bool) -> Result<(), FetchError> {
        match self {
            Store::Partial(partial) if partial.file.is_none() => {
                let file = partial.open(dir).map_err(|e| {
                    FetchError::io(format!("creating {}", partial.path.display()), &e)
                })?;
                partial.file = Some(file);
            }
            Store::Unopened => *self = Temp::create(dir, dest, named)?.into(),
            _ => {}
        }
        Ok(())
    }

    /// Give the verified body its final name `dest` in its directory `dir`, its permission
    /// bits at most `mode` when given. On failure the store is left as it was, for
    /// [`Store::discard`]. Not for a body in memory.
    pub fn publish(
        &mut self,
        dir: RawFd,
        dest: &Path,
        named: bool,
        mode: Option<u32>,
    ) -> Result<(), FetchError> {
        self.flush()
            .map_err(|e| FetchError::io(format!("writing {}", self.file_for_messages(dest)), &e))?;
        // An empty body was never opened: create the (empty) file now.
        self.open(dir, dest, named)?;
        let placing = |e: std::io::Error| FetchError::io(format!("placing {}", dest.display()), &e);
        let name = fs::c_path(dest.file_name().unwrap_or_default()).map_err(placing)?;
        if let (Some(mode), Some(file)) = (mode, self.file()) {
            fs::restrict_mode(file, mode).map_err(placing)?;
        }
        match self {
            Store::Anonymous(file)
            | Store::Lane {
                file: Temp::Anonymous(file),
                ..
            } => link_anonymous(file, dir, &name).map_err(placing)?,
            Store::Named { path, .. }
            | Store::Lane {
                file: Temp::Named { path, .. },
                ..
            } => fs::renameat(dir, &name_of(path).map_err(placing)?, &name).map_err(placing)?,
            Store::Partial(partial) => fs::renameat(dir, partial.name(), &name).map_err(placing)?,
            Store::Unopened | Store::Memory(_) => unreachable!("a file was opened above"),
        }
        // Close the file; a partial's record goes once its bytes are `dest`.
        if let Store::Partial(mut partial) = std::mem::replace(self, Store::Unopened) {
            partial.file = None;
            partial.remove_record(dir);
        }
        Ok(())
    }

    /// The file the bytes are in, if one is open.
    fn file(&self) -> Option<&File> {
        match self {
            Store::Anonymous(file) | Store::Named { file, .. } => Some(file),
            Store::Lane { file, .. } => Some(file.file()),
            Store::Partial(partial) => partial.file.as_ref(),
            Store::Unopened | Store::Memory(_) => None,
        }
    }

    /// Whether a file is open (so dropping the store without placing it must clean up).
    pub fn has_file(&self) -> bool {
        match self {
            Store::Unopened | Store::Memory(_) => false,
            Store::Partial(partial) => partial.file.is_some(),
            Store::Anonymous(_) | Store::Named { .. } | Store::Lane { .. } => true,
        }
    }

    /// Drop the bytes, leaving no file behind (a partial's record included); `dir` is
    /// `dest`'s directory, where the files are.
    pub fn discard(&mut self, dir: RawFd) {
        match std::mem::replace(self, Store::Unopened) {
            Store::Unopened | Store::Memory(_) | Store::Anonymous(_) => {}
            Store::Named { file, path, .. } => Temp::Named { file, path }.discard(dir),
            Store::Partial(mut partial) => partial.remove_files(dir),
            Store::Lane { lane, file } => {
                drop(lane);
                file.discard(dir);
            }
        }
    }
}

impl Temp {
    /// A new temporary file beside `dest`, in its directory `dir`: anonymous unless `named`
    /// or the file system has no `O_TMPFILE`.
    pub fn create(dir: RawFd, dest: &Path, named: bool) -> Result<Temp, FetchError> {
        let creating = |e: std::io::Error| {
            FetchError::io(format!("creating a file beside {}", dest.display()), &e)
        };
        let anonymous = if named {
            Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
        } else {
            fs::open_anonymous(dir, c".")
        };
        match anonymous {
            Ok(file) => Ok(Temp::Anonymous(file)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(creating(e)),
            // No O_TMPFILE on this file system (or kernel): a named temporary file.
            Err(_) => {
                let (path, file) = fs::with_fresh_name(
                    || Ok(fs::temp_path(dest)),
                    |path| fs::create_new(dir, &name_of(path)?),
                )
                .map_err(creating)?;
                Ok(Temp::Named { file, path })
            }
        }
    }

    pub fn file(&self) -> &File {
        match self {
            Temp::Anonymous(file) | Temp::Named { file, .. } => file,
        }
    }

    fn discard(self, dir: RawFd) {
        // An anonymous file vanishes when closed; a named one must be removed.
        if let Temp::Named { file, path } = self {
            drop(file);
            if let Ok(name) = name_of(&path) {
                fs::unlinkat(dir, &name);
            }
        }
    }
}

impl From<Temp> for Store {
    fn from(temp: Temp) -> Store {
        match temp {
            Temp::Anonymous(file) => Store::Anonymous(file),
            Temp::Named { file, path } => Store::Named {
                file,
                path,
                pending: Vec::new(),
            },
        }
    }
}

fn flush(file: &mut File, pending: &mut Vec<u8>) -> std::io::Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let result = fs::write_in_pieces(file, pending);
    pending.clear();
    result
}

/// The last component of a path beside `dest`, as system calls take it.
fn name_of(path: &Path) -> std::io::Result<std::ffi::CString> {
    fs::c_path(path.file_name().unwrap_or_default())
}

/// Link an anonymous file in as `name` in `dir`, replacing what is there.
fn link_anonymous(file: &File, dir: RawFd, name: &std::ffi::CStr) -> std::io::Result<()> {
    let dest = std::ffi::OsStr::from_bytes(name.to_bytes());
    fs::link_in(file, dir, name, || fs::c_path(fs::temp_name(dest)))
}
