//! The file-system primitives every store shares, each written once.
//!
//! Two writers put bodies beside `dest`: the sink on the loop's thread (by path) and the
//! placing worker (relative to a directory it keeps open). They must agree on what a
//! temporary file is called, on how an anonymous file gets its name, and on how big a write
//! may be; when each had its own copy, the copies drifted. So the primitives live here, take
//! a directory descriptor (`AT_FDCWD` for a path), and this module imports nothing of the
//! crate: it is the leaf every body module may use.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::hash::BuildHasher;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Paths are taken relative to the working directory (for a descriptor argument).
pub const CWD: RawFd = libc::AT_FDCWD;

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

/// Distinguishes the temporary files of one process, whichever thread names them.
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// How many fresh names a temporary file is tried under before an existing name (`EEXIST`)
/// is reported: with a random part each, a second try is already all but never needed.
pub const TEMP_TRIES: usize = 8;

/// `.NAME.<pid>.<random>.<n>.fetchmux-tmp` for a file called `NAME`: hidden, recognisably
/// ours, and unique: `<n>` counts this process's names, and `<random>` (16 hex digits,
/// from std's per-process randomly keyed hasher) tells apart processes that had the same
/// pid, as every run in a fresh PID namespace has.
pub fn temp_name(name: &OsStr) -> OsString {
    static PID: OnceLock<u32> = OnceLock::new();
    static KEYS: OnceLock<std::hash::RandomState> = OnceLock::new();
    let pid = *PID.get_or_init(std::process::id);
    let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
    let random = KEYS
        .get_or_init(std::hash::RandomState::new)
        .hash_one((pid, seq));
    let mut temp = OsString::with_capacity(name.len() + 56);
    temp.push(".");
    temp.push(name);
    temp.push(format!(".{pid}.{random:016x}.{seq}{TEMP_SUFFIX}"));
    temp
}

/// Try `attempt` under names from `next` until it does not fail with `AlreadyExists`, at
/// most [`TEMP_TRIES`] times: a name left by a killed process is never fatal.
pub fn with_fresh_name<N, T>(
    mut next: impl FnMut() -> std::io::Result<N>,
    mut attempt: impl FnMut(&N) -> std::io::Result<T>,
) -> std::io::Result<(N, T)> {
    let mut tries = 0;
    loop {
        let name = next()?;
        match attempt(&name) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries + 1 < TEMP_TRIES => {
                tries += 1;
            }
            Err(e) => return Err(e),
            Ok(value) => return Ok((name, value)),
        }
    }
}

/// Mark `file` as a live temporary file of this process: an exclusive `flock`, held until
/// the process closes it or dies, which [`remove_if_stale`] of any other process respects.
pub fn hold(file: &File) {
    // SAFETY: a valid descriptor; the outcome only decides what a later cleaner may do.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
}

/// When this process started (as far as cleaning is concerned): set by the engine at start.
static STARTED: OnceLock<std::time::SystemTime> = OnceLock::new();

/// Note the time this process started, once; later calls keep the first time.
///
/// The coarse clock, the one file timestamps come from: a file created after this call never
/// has an earlier ctime (`SystemTime::now` is finer, and can be later than the ctime of a file
/// created after it).
pub fn note_start() -> std::time::SystemTime {
    *STARTED.get_or_init(|| {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid timespec to fill.
        if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut now) } != 0 {
            return std::time::SystemTime::now() - std::time::Duration::from_secs(1);
        }
        std::time::UNIX_EPOCH
            + std::time::Duration::new(now.tv_sec.max(0) as u64, now.tv_nsec.max(0) as u32)
    })
}

/// The pid in a temporary file name (`.NAME.<pid>.<random>.<n>.fetchmux-tmp`, or the older
/// `.NAME.<pid>.<n>.fetchmux-tmp`).
fn temp_pid(name: &OsStr) -> Option<u32> {
    let name = name.to_str()?.strip_suffix(TEMP_SUFFIX)?;
    let mut parts = name.rsplit('.');
    parts.next()?.parse::<u64>().ok()?;
    let field = parts.next()?;
    if field.len() == 16 && field.bytes().all(|b| b.is_ascii_hexdigit()) {
        if let Some(pid) = parts.clone().next().and_then(|p| p.parse().ok()) {
            return Some(pid);
        }
    }
    field.parse().ok()
}

/// Remove the temporary file `name` in the directory `dirfd` if it is stale, that is all of:
/// - it ends in `.fetchmux-tmp` (partials, `.fetchmux-partial`, are never touched);
/// - its status changed (ctime, which `utimes` cannot set back) before this process started,
///   so it is no file a sibling has just created and not yet locked;
/// - no process holds a `flock` on it (every fetchmux holds one on each temporary file it
///   names, from creation until it closes it; the kernel drops it when the process dies,
///   SIGKILL included, in any PID namespace);
/// - the pid in its name is not a running process here, or is this process (a file older
///   than this process cannot be its own): a fetchmux too old to lock is left alone.
///
/// Everything is relative to `dirfd` (opened beneath `--root` where there is one), so a
/// directory swapped for a symbolic link cannot make this remove a file elsewhere.
/// Returns whether it was removed.
pub fn remove_if_stale(dirfd: RawFd, name: &OsStr) -> bool {
    if !name.as_bytes().ends_with(TEMP_SUFFIX.as_bytes()) {
        return false;
    }
    let started = note_start();
    let Ok(c_name) = c_path(name) else {
        return false;
    };
    // Never blocks on a FIFO, never follows a symbolic link.
    let Ok(file) = openat(
        dirfd,
        &c_name,
        libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOFOLLOW,
    )
    .map(File::from) else {
        return false;
    };
    let Ok(meta) = file.metadata() else {
        return false;
    };
    use std::os::unix::fs::MetadataExt;
    let changed = std::time::UNIX_EPOCH
        + std::time::Duration::new(meta.ctime().max(0) as u64, meta.ctime_nsec().max(0) as u32);
    if !meta.is_file() || changed >= started {
        return false;
    }
    if let Some(pid) = temp_pid(name) {
        if pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists() {
            return false;
        }
    }
    // SAFETY: a valid descriptor.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return false;
    }
    // Still the same file under that name (not renamed into place meanwhile)?
    match lstatat(dirfd, &c_name) {
        Ok(now) if now.st_ino == meta.ino() && now.st_dev == meta.dev() => {
            // SAFETY: a valid directory descriptor and NUL-terminated name.
            unsafe { libc::unlinkat(dirfd, c_name.as_ptr(), 0) == 0 }
        }
        _ => false,
    }
}

/// `fstatat(2)` of `name` in `dirfd`, not following a final symbolic link.
pub fn lstatat(dirfd: RawFd, name: &CStr) -> std::io::Result<libc::stat> {
    // SAFETY: an all-zero `stat` is a valid value to be overwritten.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor, a NUL-terminated name and a `stat` to fill.
    let r = unsafe { libc::fstatat(dirfd, name.as_ptr(), &mut stat, libc::AT_SYMLINK_NOFOLLOW) };
    if r == 0 {
        Ok(stat)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether a `stat` describes a regular file.
pub fn is_regular(stat: &libc::stat) -> bool {
    stat.st_mode & libc::S_IFMT == libc::S_IFREG
}

/// `mkdirat(2)` of one directory (mode 0777 less the umask); an existing name is fine (what
/// it is, the next open beneath the root decides).
pub fn mkdirat(dirfd: RawFd, name: &CStr) -> std::io::Result<()> {
    // SAFETY: a valid descriptor and a NUL-terminated name.
    if unsafe { libc::mkdirat(dirfd, name.as_ptr(), 0o777) } == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.kind() == std::io::ErrorKind::AlreadyExists {
        Ok(())
    } else {
        Err(err)
    }
}

/// The names in the directory `dir` (opened for reading), `.` and `..` left out; at most
/// `limit` of them (one more says there are more).
pub fn names(dir: &OwnedFd, limit: usize) -> std::io::Result<Vec<OsString>> {
    // SAFETY: duplicating a valid descriptor; `fdopendir` owns the copy, `closedir` closes it.
    let fd = unsafe { libc::fcntl(dir.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor of a directory opened for reading.
    let stream = unsafe { libc::fdopendir(fd) };
    if stream.is_null() {
        let err = std::io::Error::last_os_error();
        // SAFETY: `fdopendir` failed, so the copy is still ours to close.
        unsafe { libc::close(fd) };
        return Err(err);
    }
    let mut names = Vec::new();
    let result = loop {
        // SAFETY: errno is thread-local; cleared to tell the end from an error.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: a valid stream; the entry lives until the next `readdir`.
        let entry = unsafe { libc::readdir(stream) };
        if entry.is_null() {
            let err = std::io::Error::last_os_error();
            break match err.raw_os_error() {
                Some(0) | None => Ok(()),
                _ => Err(err),
            };
        }
        // SAFETY: `d_name` is NUL-terminated.
        let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) }.to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        names.push(OsStr::from_bytes(name).to_os_string());
        if names.len() > limit {
            break Ok(());
        }
    };
    // SAFETY: the stream from `fdopendir`, closed once.
    unsafe { libc::closedir(stream) };
    result.map(|()| names)
}

/// Leave the permission bits of `file` at most `mask` (a `file://` source's own bits, so a
/// 0600 source never becomes a 0644 copy).
pub fn restrict_mode(file: &File, mask: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = file.metadata()?.permissions().mode() & 0o7777;
    if mode & !mask == 0 {
        return Ok(());
    }
    file.set_permissions(std::fs::Permissions::from_mode(mode & mask))
}

/// [`temp_name`] beside `dest`, in the same directory.
pub fn temp_path(dest: &Path) -> PathBuf {
    dest.with_file_name(temp_name(dest.file_name().unwrap_or_default()))
}

/// The directory `dest` goes in: its parent, or `.` for a bare name.
pub fn parent(dest: &Path) -> &Path {
    match dest.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// A path as the C string system calls take.
pub fn c_path(path: impl AsRef<OsStr>) -> std::io::Result<CString> {
    Ok(CString::new(path.as_ref().as_bytes())?)
}

/// What [`open_creating_dir`] could not do.
#[derive(Debug)]
pub enum OpenError {
    /// Creating the missing directory failed.
    CreatingDir(std::io::Error),
    /// Opening failed (again, if the directory was created).
    Opening(std::io::Error),
}

impl From<OpenError> for std::io::Error {
    fn from(e: OpenError) -> std::io::Error {
        match e {
            OpenError::CreatingDir(e) | OpenError::Opening(e) => e,
        }
    }
}

/// `open()`, and where it fails with `NotFound`, create `dir` with its parents and `open()`
/// once more. The working directory (`.`) is never created: it exists or nothing can.
pub fn open_creating_dir<T>(
    dir: &Path,
    mut open: impl FnMut() -> std::io::Result<T>,
) -> Result<T, OpenError> {
    match open() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if dir != Path::new(".") {
                std::fs::create_dir_all(dir).map_err(OpenError::CreatingDir)?;
            }
            open().map_err(OpenError::Opening)
        }
        other => other.map_err(OpenError::Opening),
    }
}

/// `openat(2)` with `O_CLOEXEC` and mode 0666 (less the umask) for a created file.
pub fn openat(dirfd: RawFd, path: &CStr, flags: libc::c_int) -> std::io::Result<OwnedFd> {
    // SAFETY: a NUL-terminated path; the descriptor returned is ours to own.
    let fd = unsafe { libc::openat(dirfd, path.as_ptr(), flags | libc::O_CLOEXEC, 0o666) };
    if fd < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        // SAFETY: a fresh descriptor nobody else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// A new anonymous file (`O_TMPFILE`, write-only) in the directory `dir`: it has no name
/// until [`link_in`] gives it one, and closing it before leaves nothing behind.
pub fn open_anonymous(dirfd: RawFd, dir: &CStr) -> std::io::Result<File> {
    openat(dirfd, dir, libc::O_TMPFILE | libc::O_WRONLY).map(File::from)
}

/// A new named temporary file, write-only and [`hold`]: fails if `name` exists.
pub fn create_new(dirfd: RawFd, name: &CStr) -> std::io::Result<File> {
    let file = File::from(openat(
        dirfd,
        name,
        libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
    )?);
    hold(&file);
    Ok(file)
}

/// `renameat(2)` within one directory.
pub fn renameat(dirfd: RawFd, from: &CStr, to: &CStr) -> std::io::Result<()> {
    // SAFETY: a valid directory descriptor and NUL-terminated names.
    if unsafe { libc::renameat(dirfd, from.as_ptr(), dirfd, to.as_ptr()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `unlinkat(2)` of a file, for cleaning up: the outcome does not matter.
pub fn unlinkat(dirfd: RawFd, name: &CStr) {
    // SAFETY: a valid directory descriptor and NUL-terminated name.
    unsafe { libc::unlinkat(dirfd, name.as_ptr(), 0) };
}

/// Link the anonymous `file` in as `name` (in the directory `dirfd`, or a path with
/// [`CWD`]). `linkat` never replaces: an existing `name` is replaced by linking the file
/// under `temp()` (a [`temp_name`] in the same directory) and renaming that over `name`.
pub fn link_in(
    file: &File,
    dirfd: RawFd,
    name: &CStr,
    temp: impl FnMut() -> std::io::Result<CString>,
) -> std::io::Result<()> {
    match link(file, dirfd, name) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            hold(file);
            let (temp, ()) = with_fresh_name(temp, |temp| link(file, dirfd, temp))?;
            renameat(dirfd, &temp, name).inspect_err(|_| unlinkat(dirfd, &temp))
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn temporary_names_are_hidden_unique_and_ours() {
        let a = temp_path(Path::new("dir/f.deb"));
        let b = temp_path(Path::new("dir/f.deb"));
        assert_ne!(a, b);
        let name = a.file_name().unwrap().to_str().unwrap();
        let pid = std::process::id();
        assert!(name.starts_with(&format!(".f.deb.{pid}.")), "{name}");
        assert!(name.ends_with(TEMP_SUFFIX), "{name}");
        assert_eq!(a.parent(), Some(Path::new("dir")));
        assert_eq!(parent(Path::new("f")), Path::new("."));
        assert_eq!(parent(Path::new("d/f")), Path::new("d"));
    }

    #[test]
    fn an_anonymous_file_is_linked_in_and_replaces_an_existing_name() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        for body in [&b"first"[..], b"second"] {
            let mut file = open_anonymous(CWD, &c_path(dir.path()).unwrap()).unwrap();
            file.write_all(body).unwrap();
            link_in(&file, CWD, &c_path(&dest).unwrap(), || {
                c_path(temp_path(&dest))
            })
            .unwrap();
            assert_eq!(std::fs::read(&dest).unwrap(), body);
        }
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "only dest");
    }

    #[test]
    fn names_have_a_random_part_and_a_taken_name_is_tried_again_under_a_new_one() {
        let name = temp_name(OsStr::new("f"));
        let name = name.to_str().unwrap();
        let fields: Vec<&str> = name.split('.').collect();
        // "", "f", pid, random, n, "fetchmux-tmp"
        assert_eq!(fields.len(), 6, "{name}");
        assert_eq!(fields[2], std::process::id().to_string());
        assert!(fields[3].len() == 16 && fields[3].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(temp_pid(OsStr::new(name)), Some(std::process::id()));
        assert_eq!(temp_pid(OsStr::new(".f.77.3.fetchmux-tmp")), Some(77));

        // Names a killed process left: exactly the next names tried.
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<PathBuf> = (0..3).map(|_| temp_path(&dir.path().join("f"))).collect();
        for taken in &names[..2] {
            std::fs::write(taken, b"stale").unwrap();
        }
        let mut next = names.iter().cloned();
        let (path, mut file) = with_fresh_name(
            || Ok(next.next().unwrap()),
            |path| create_new(CWD, &c_path(path)?),
        )
        .unwrap();
        assert_eq!(path, names[2]);
        file.write_all(b"new").unwrap();
        assert_eq!(std::fs::read(&names[0]).unwrap(), b"stale");

        // Bounded: a name that is always taken is reported after TEMP_TRIES names.
        let mut tried = 0;
        let err = with_fresh_name(
            || {
                tried += 1;
                Ok(names[0].clone())
            },
            |path| create_new(CWD, &c_path(path)?),
        )
        .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(tried, TEMP_TRIES);
    }

    #[test]
    fn only_unlocked_temporary_files_older_than_this_process_are_stale() {
        note_start();
        let dir = tempfile::tempdir().unwrap();
        // The pid of no process (pid_max is at most 2^22).
        let dead = ".a.99999999.0123456789abcdef.0.fetchmux-tmp";
        std::fs::write(dir.path().join(dead), b"x").unwrap();
        // Created after this process started: not stale, whoever made it.
        let dirfd = openat(CWD, &c_path(dir.path()).unwrap(), libc::O_PATH).unwrap();
        let dirfd = dirfd.as_raw_fd();
        assert!(!remove_if_stale(dirfd, OsStr::new(dead)));
        // A partial is never a temporary file.
        assert!(!remove_if_stale(dirfd, OsStr::new(".a.fetchmux-partial")));
        assert!(dir.path().join(dead).exists());
    }
}
