//! Verified small bodies are written and linked into place by a worker thread.
//!
//! A small body (a known length under 128 KiB, the bulk of a repository's metadata and of
//! many packages) is received into memory and hashed on the loop as it streams in; once curl
//! reports it complete and every check has passed, only file-system work is left: create an
//! anonymous file in `dest`'s directory, write the bytes, link it in as `dest`. On ext4 that
//! work was 40 % of the loop's time with 10,000 × 4 KiB files (`make bench`, scenario A),
//! and while the loop did it, the next request on a connection waited. So the loop hands the
//! verified bytes to this worker and goes on; the worker answers through a channel and the
//! loop's `Waker`, and the engine writes `done` when the file is in place.
//!
//! `dest` still only ever holds verified bytes, and nothing is left behind: the file has no
//! name until it is linked in whole (`O_TMPFILE`), or, where the file system lacks that, it
//! is a named temporary file renamed over `dest`. The worker keeps the last directory open,
//! so a run of files into one directory does not walk its path again for every file.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use mio::Waker;

use crate::body::sink::write_in_pieces;

/// Verified bytes and where they go.
#[derive(Debug)]
pub struct Placement {
    pub dest: PathBuf,
    pub bytes: Vec<u8>,
}

/// What the worker says about the placement with this key; the buffer comes back, empty,
/// for another body.
pub struct Answer {
    pub key: usize,
    pub result: std::io::Result<()>,
    pub buffer: Vec<u8>,
}

/// The handle the engine keeps; the worker starts with the first placement.
pub struct Placer {
    worker: Option<Sender<(usize, Placement)>>,
    answers: Sender<Answer>,
    waker: Arc<Waker>,
    /// The worker has woken the loop and the loop has not yet looked: no need to wake again.
    woken: Arc<AtomicBool>,
}

impl Placer {
    /// Answers come on the returned receiver; the loop is woken through `waker`.
    pub fn new(waker: Arc<Waker>) -> (Placer, Receiver<Answer>) {
        let (answers, answered) = channel();
        let placer = Placer {
            worker: None,
            answers,
            waker,
            woken: Arc::new(AtomicBool::new(false)),
        };
        (placer, answered)
    }

    /// Place `placement` in the background; its answer comes under `key`. Without a worker
    /// (it could not be started) the bytes are placed at once, on this thread.
    pub fn place(&mut self, key: usize, placement: Placement) {
        if self.worker.is_none() {
            self.worker = self.spawn();
        }
        let placement = match &self.worker {
            Some(worker) => match worker.send((key, placement)) {
                Ok(()) => return,
                Err(std::sync::mpsc::SendError((_, placement))) => placement,
            },
            None => placement,
        };
        let mut directory = Directory::default();
        let _ = self
            .answers
            .send(Answer::for_placement(key, &mut directory, placement));
        let _ = self.waker.wake();
    }

    /// Call before draining the answers: a worker answering from now on wakes the loop again.
    pub fn looking(&self) {
        self.woken.store(false, Ordering::SeqCst);
    }

    fn spawn(&self) -> Option<Sender<(usize, Placement)>> {
        let (tx, rx) = channel::<(usize, Placement)>();
        let answers = self.answers.clone();
        let waker = Arc::clone(&self.waker);
        let woken = Arc::clone(&self.woken);
        let spawned = std::thread::Builder::new()
            .name("fetchmux-place".into())
            .spawn(move || {
                let mut directory = Directory::default();
                for (key, placement) in rx {
                    let answer = Answer::for_placement(key, &mut directory, placement);
                    if answers.send(answer).is_err() {
                        return;
                    }
                    if !woken.swap(true, Ordering::SeqCst) {
                        let _ = waker.wake();
                    }
                }
            });
        match spawned {
            Ok(_) => Some(tx),
            Err(err) => {
                eprintln!("fetchmux: cannot start the placing thread ({err}); placing inline");
                None
            }
        }
    }
}

impl Answer {
    fn for_placement(key: usize, directory: &mut Directory, placement: Placement) -> Answer {
        let result = directory.place(&placement.dest, &placement.bytes);
        let mut buffer = placement.bytes;
        buffer.clear();
        Answer {
            key,
            result,
            buffer,
        }
    }
}

/// The directory files were last placed in, kept open.
#[derive(Default)]
struct Directory {
    path: PathBuf,
    fd: Option<OwnedFd>,
    /// `O_TMPFILE` failed here: named temporary files instead.
    no_tmpfile: bool,
    seq: u64,
}

impl Directory {
    /// Write `bytes` to a new file and give it the name `dest`, replacing what is there.
    fn place(&mut self, dest: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let dir = match dest.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let name = CString::new(dest.file_name().unwrap_or_default().as_bytes())?;
        let dirfd = self.open(dir)?;
        if !self.no_tmpfile {
            match openat(dirfd, c".", libc::O_TMPFILE | libc::O_WRONLY) {
                Ok(file) => {
                    let file = File::from(file);
                    write_in_pieces(&mut &file, bytes)?;
                    return link_in(&file, dirfd, &name, || self.temp_name(dest));
                }
                Err(e) if tmpfile_unsupported(&e) => self.no_tmpfile = true,
                Err(e) => return Err(e),
            }
        }
        let temp = self.temp_name(dest);
        let file = File::from(openat(
            dirfd,
            &temp,
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
        )?);
        let written =
            write_in_pieces(&mut &file, bytes).and_then(|()| renameat(dirfd, &temp, &name));
        if written.is_err() {
            // SAFETY: a valid directory descriptor and NUL-terminated name.
            unsafe { libc::unlinkat(dirfd, temp.as_ptr(), 0) };
        }
        written
    }

    /// The directory's descriptor, opening it (and creating it if need be) when it is not
    /// the one of the previous file.
    fn open(&mut self, dir: &Path) -> std::io::Result<RawFd> {
        if let Some(fd) = self.fd.as_ref().filter(|_| self.path == dir) {
            return Ok(fd.as_raw_fd());
        }
        self.fd = None;
        let path = CString::new(dir.as_os_str().as_bytes())?;
        let flags = libc::O_PATH | libc::O_DIRECTORY;
        let fd = match openat(libc::AT_FDCWD, &path, flags) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir)?;
                openat(libc::AT_FDCWD, &path, flags)?
            }
            other => other?,
        };
        self.path = dir.to_path_buf();
        self.no_tmpfile = false;
        Ok(self.fd.insert(fd).as_raw_fd())
    }

    /// `.name.<pid>.p<n>.fetchmux-tmp`: hidden, unique, recognisably ours.
    fn temp_name(&mut self, dest: &Path) -> CString {
        self.seq += 1;
        let name = dest.file_name().unwrap_or_default().to_string_lossy();
        let pid = std::process::id();
        let temp = format!(
            ".{name}.{pid}.p{}{}",
            self.seq,
            crate::body::sink::TEMP_SUFFIX
        );
        CString::new(temp).expect("no NUL in a file name")
    }
}

/// Link the anonymous `file` in as `name`; an existing `name` is replaced through a
/// temporary name and a rename (linkat never replaces).
fn link_in(
    file: &File,
    dirfd: RawFd,
    name: &CStr,
    temp_name: impl FnOnce() -> CString,
) -> std::io::Result<()> {
    match link(file, dirfd, name) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let temp = temp_name();
            link(file, dirfd, &temp)?;
            renameat(dirfd, &temp, name).inspect_err(|_| {
                // SAFETY: a valid directory descriptor and NUL-terminated name.
                unsafe { libc::unlinkat(dirfd, temp.as_ptr(), 0) };
            })
        }
        other => other,
    }
}

/// `linkat` of a descriptor: `AT_EMPTY_PATH` where allowed (no path walk), else through
/// /proc, which needs no privilege.
fn link(file: &File, dirfd: RawFd, name: &CStr) -> std::io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: valid descriptors and NUL-terminated paths, for this call and the next.
    if unsafe { libc::linkat(fd, c"".as_ptr(), dirfd, name.as_ptr(), libc::AT_EMPTY_PATH) } == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if !matches!(
        err.raw_os_error(),
        Some(libc::EPERM | libc::ENOENT | libc::EINVAL)
    ) {
        return Err(err);
    }
    let proc_path = CString::new(format!("/proc/self/fd/{fd}"))?;
    let linked = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc_path.as_ptr(),
            dirfd,
            name.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if linked == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn openat(dirfd: RawFd, path: &CStr, flags: libc::c_int) -> std::io::Result<OwnedFd> {
    // SAFETY: a NUL-terminated path; the descriptor returned is ours to own.
    let fd = unsafe { libc::openat(dirfd, path.as_ptr(), flags | libc::O_CLOEXEC, 0o666) };
    if fd < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        // SAFETY: a fresh descriptor nobody else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

fn renameat(dirfd: RawFd, from: &CStr, to: &CStr) -> std::io::Result<()> {
    // SAFETY: a valid directory descriptor and NUL-terminated names.
    if unsafe { libc::renameat(dirfd, from.as_ptr(), dirfd, to.as_ptr()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Errors that mean "no `O_TMPFILE` here", not "cannot write here".
fn tmpfile_unsupported(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn places_new_files_replaces_old_ones_and_leaves_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let mut directory = Directory::default();
        let a = dir.path().join("a");
        directory.place(&a, b"first").unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"first");
        directory.place(&a, b"second").unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"second");
        // Another directory, created on the way; then back to the first.
        let b = dir.path().join("sub/dir/b");
        directory.place(&b, b"").unwrap();
        assert_eq!(std::fs::read(&b).unwrap(), b"");
        directory.place(&dir.path().join("c"), b"c").unwrap();
        assert_eq!(entries(dir.path()), vec!["a", "c", "sub"]);
        assert_eq!(entries(&dir.path().join("sub/dir")), vec!["b"]);
    }

    #[test]
    fn named_temporary_files_where_there_is_no_o_tmpfile() {
        let dir = tempfile::tempdir().unwrap();
        let mut directory = Directory::default();
        let a = dir.path().join("a");
        directory.open(dir.path()).unwrap();
        directory.no_tmpfile = true;
        directory.place(&a, b"one").unwrap();
        directory.place(&a, b"two").unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"two");
        assert_eq!(entries(dir.path()), vec!["a"]);
    }

    #[test]
    fn a_failure_is_an_answer_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let (mut placer, answers) = Placer::new(waker);
        // A file where a directory should be: the placement fails.
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        let bad = dir.path().join("file/a");
        let good = dir.path().join("b");
        placer.place(
            7,
            Placement {
                dest: bad,
                bytes: b"x".to_vec(),
            },
        );
        placer.place(
            8,
            Placement {
                dest: good.clone(),
                bytes: b"y".to_vec(),
            },
        );
        let mut got: Vec<(usize, bool)> = (0..2)
            .map(|_| answers.recv().map(|a| (a.key, a.result.is_ok())).unwrap())
            .collect();
        got.sort();
        assert_eq!(got, vec![(7, false), (8, true)]);
        assert_eq!(std::fs::read(&good).unwrap(), b"y");
        assert_eq!(entries(dir.path()), vec!["b", "file"]);
    }
}
