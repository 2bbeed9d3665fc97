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

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use mio::Waker;

use crate::body::fs;
use crate::body::root::Root;

/// Verified bytes and where they go.
#[derive(Debug)]
pub struct Placement {
    pub dest: PathBuf,
    pub bytes: Vec<u8>,
    /// The file's permission bits are at most these (a `file://` source's own).
    pub mode: Option<u32>,
}

/// What the worker says about the placement with this key; the buffer comes back, empty,
/// for another body.
pub struct Answer {
    pub key: usize,
    pub result: Result<(), Failed>,
    pub buffer: Vec<u8>,
}

/// Why a placement failed: what the worker was doing, to which file (`None`: to `dest`
/// itself, or to an unnamed temporary file beside it), and the OS error.
#[derive(Debug)]
pub struct Failed {
    pub doing: &'static str,
    pub path: Option<PathBuf>,
    pub error: std::io::Error,
}

impl Failed {
    /// What the worker was doing, the file, the OS error: for an `io` error's context.
    pub fn context(&self, dest: &Path) -> String {
        let path = self.path.as_deref().unwrap_or(dest);
        format!("{} {}", self.doing, path.display())
    }
}

/// An error of step `doing` on `dest` (or its unnamed temporary file).
fn failed(doing: &'static str) -> impl FnOnce(std::io::Error) -> Failed {
    move |error| Failed {
        doing,
        path: None,
        error,
    }
}

/// The handle the engine keeps; the worker starts with the first placement.
pub struct Placer {
    worker: Option<Sender<(usize, Placement)>>,
    answers: Sender<Answer>,
    /// Every directory is opened beneath it (`--root`).
    root: Arc<Root>,
    waker: Arc<Waker>,
    /// The worker has woken the loop and the loop has not yet looked: no need to wake again.
    woken: Arc<AtomicBool>,
}

impl Placer {
    /// Answers come on the returned receiver; the loop is woken through `waker`.
    pub fn new(waker: Arc<Waker>, root: Arc<Root>) -> (Placer, Receiver<Answer>) {
        let (answers, answered) = channel();
        let placer = Placer {
            worker: None,
            answers,
            root,
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
        let mut directory = Directory::new(Arc::clone(&self.root));
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
        let root = Arc::clone(&self.root);
        let spawned = std::thread::Builder::new()
            .name("fetchmux-place".into())
            .spawn(move || {
                let mut directory = Directory::new(root);
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
        let result = directory.place(&placement.dest, &placement.bytes, placement.mode);
        let mut buffer = placement.bytes;
        buffer.clear();
        Answer {
            key,
            result,
            buffer,
        }
    }
}

/// The directory files were last placed in, kept open (as opened beneath the root: a link
/// put in its place later does not redirect the files that follow).
struct Directory {
    root: Arc<Root>,
    path: PathBuf,
    fd: Option<OwnedFd>,
    /// `O_TMPFILE` failed here: named temporary files instead.
    no_tmpfile: bool,
}

impl Directory {
    fn new(root: Arc<Root>) -> Directory {
        Directory {
            root,
            path: PathBuf::new(),
            fd: None,
            no_tmpfile: false,
        }
    }

    /// Write `bytes` to a new file and give it the name `dest`, replacing what is there;
    /// its permission bits at most `mode` when given.
    fn place(&mut self, dest: &Path, bytes: &[u8], mode: Option<u32>) -> Result<(), Failed> {
        let name = dest.file_name().unwrap_or_default();
        let c_name = fs::c_path(name).map_err(failed("placing"))?;
        let dirfd = self
            .open(fs::parent(dest))
            .map_err(failed("opening the directory of"))?;
        if !self.no_tmpfile {
            match fs::open_anonymous(dirfd, c".") {
                Ok(file) => {
                    fs::write_in_pieces(&mut &file, bytes)
                        .map_err(failed("writing a temporary file for"))?;
                    if let Some(mode) = mode {
                        fs::restrict_mode(&file, mode).map_err(failed("placing"))?;
                    }
                    return fs::link_in(&file, dirfd, &c_name, || fs::c_path(fs::temp_name(name)))
                        .map_err(failed("placing"));
                }
                Err(e) if tmpfile_unsupported(&e) => self.no_tmpfile = true,
                Err(e) => return Err(failed("creating a temporary file for")(e)),
            }
        }
        let (temp, file) = fs::with_fresh_name(
            || fs::c_path(fs::temp_name(name)),
            |temp| fs::create_new(dirfd, temp),
        )
        .map_err(failed("creating a temporary file for"))?;
        // Only on failure: the temporary file's path, for the message.
        let on_temp = |doing, error| Failed {
            doing,
            path: Some(dest.with_file_name(std::ffi::OsStr::from_bytes(temp.to_bytes()))),
            error,
        };
        let written = fs::write_in_pieces(&mut &file, bytes)
            .and_then(|()| mode.map_or(Ok(()), |mode| fs::restrict_mode(&file, mode)))
            .map_err(|e| on_temp("writing", e));
        let placed =
            written.and_then(|()| fs::renameat(dirfd, &temp, &c_name).map_err(failed("placing")));
        if placed.is_err() {
            fs::unlinkat(dirfd, &temp);
        }
        placed
    }

    /// The directory's descriptor, opening it (and creating it if need be) when it is not
    /// the one of the previous file.
    fn open(&mut self, dir: &Path) -> std::io::Result<RawFd> {
        if let Some(fd) = self.fd.as_ref().filter(|_| self.path == dir) {
            return Ok(fd.as_raw_fd());
        }
        self.fd = None;
        let fd = self.root.open_dir(dir, true, libc::O_PATH)?;
        self.path = dir.to_path_buf();
        self.no_tmpfile = false;
        Ok(self.fd.insert(fd).as_raw_fd())
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
    use crate::test_support::entries;

    #[test]
    fn places_new_files_replaces_old_ones_and_leaves_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let mut directory = Directory::new(Root::unconfined());
        let a = dir.path().join("a");
        directory.place(&a, b"first", None).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"first");
        directory.place(&a, b"second", None).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"second");
        // Another directory, created on the way; then back to the first.
        let b = dir.path().join("sub/dir/b");
        directory.place(&b, b"", None).unwrap();
        assert_eq!(std::fs::read(&b).unwrap(), b"");
        directory.place(&dir.path().join("c"), b"c", None).unwrap();
        assert_eq!(entries(dir.path()), vec!["a", "c", "sub"]);
        assert_eq!(entries(&dir.path().join("sub/dir")), vec!["b"]);
    }

    #[test]
    fn named_temporary_files_where_there_is_no_o_tmpfile() {
        let dir = tempfile::tempdir().unwrap();
        let mut directory = Directory::new(Root::unconfined());
        let a = dir.path().join("a");
        directory.open(dir.path()).unwrap();
        directory.no_tmpfile = true;
        directory.place(&a, b"one", None).unwrap();
        directory.place(&a, b"two", None).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"two");
        assert_eq!(entries(dir.path()), vec!["a"]);
    }

    #[test]
    fn a_failure_is_an_answer_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let (mut placer, answers) = Placer::new(waker, Root::unconfined());
        // A file where a directory should be: the placement fails.
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        let bad = dir.path().join("file/a");
        let good = dir.path().join("b");
        placer.place(
            7,
            Placement {
                dest: bad,
                bytes: b"x".to_vec(),
                mode: None,
            },
        );
        placer.place(
            8,
            Placement {
                dest: good.clone(),
                bytes: b"y".to_vec(),
                mode: None,
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
