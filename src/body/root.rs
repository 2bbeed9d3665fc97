//! `--root DIR`: the one directory every `dest` must lie in, and the opening of a `dest`'s
//! directory beneath it.
//!
//! Names in a package manager's metadata (`../../etc/cron.d/x`, an absolute path, a
//! directory of the cache replaced by a symbolic link) must not make the helper write outside
//! its cache. Checking a path string is not enough: a symbolic link anywhere on the way can
//! lead out, and it can appear after the check. So the root is opened once, and a `dest`'s
//! directory is opened *relative to it* with `openat2(2)` and `RESOLVE_BENEATH` (the kernel
//! refuses any step out of it, `..` or symbolic link alike); every file operation then works
//! on single names relative to that directory descriptor (`openat`, `renameat`, `linkat`,
//! `unlinkat`), never on the path again. A directory swapped for a symbolic link after it
//! was opened cannot redirect a write: the descriptor is the directory that was checked.
//! Where the kernel has no `openat2` (`ENOSYS`, before Linux 5.6), the path is walked one
//! component at a time with `O_NOFOLLOW | O_DIRECTORY`, which refuses every symbolic link.
//!
//! Without `--root` ([`Root::unconfined`]) the same code opens the directory by its path,
//! relative ones from the working directory, as before.

use std::borrow::Cow;
use std::ffi::CStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use crate::body::fs;

/// Where `dest`s may be written.
#[derive(Debug)]
pub struct Root {
    confined: Option<Confined>,
}

#[derive(Debug)]
struct Confined {
    /// The root, opened once (`O_PATH`).
    fd: OwnedFd,
    /// As the command line gave it, made absolute (for messages, and absolute `dest`s).
    shown: PathBuf,
    /// With every symbolic link resolved: an absolute `dest` may name the root either way.
    real: PathBuf,
}

/// A `dest`, or its directory, that leads out of the root: refused, never written.
#[derive(Debug)]
pub struct Escape(String);

impl std::fmt::Display for Escape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Escape {}

/// Whether `e` says a path leads out of the root (rather than a file-system error).
pub fn is_escape(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Escape>())
}

/// The kernel said `ENOSYS` to `openat2` once: walk component by component from then on.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

impl Root {
    /// No confinement: paths as given.
    pub fn unconfined() -> Arc<Root> {
        static UNCONFINED: OnceLock<Arc<Root>> = OnceLock::new();
        Arc::clone(UNCONFINED.get_or_init(|| Arc::new(Root { confined: None })))
    }

    /// Confine every `dest` to the existing directory `dir`.
    pub fn open(dir: &Path) -> std::io::Result<Root> {
        let shown = std::path::absolute(dir)?;
        let real = std::fs::canonicalize(dir)?;
        let fd = fs::openat(
            fs::CWD,
            &fs::c_path(&real)?,
            libc::O_PATH | libc::O_DIRECTORY,
        )?;
        Ok(Root {
            confined: Some(Confined { fd, shown, real }),
        })
    }

    /// The root as given, when there is one.
    pub fn dir(&self) -> Option<&Path> {
        self.confined.as_ref().map(|c| c.shown.as_path())
    }

    /// Flags that keep an open of a file in a `dest` directory from following a final
    /// symbolic link: under a root, a `dest` that is a link is never read as ours (not
    /// `cached`, not continued), whatever it points to.
    pub fn nofollow(&self) -> libc::c_int {
        if self.confined.is_some() {
            libc::O_NOFOLLOW
        } else {
            0
        }
    }

    /// `path` relative to the root, checked by its text: an absolute path must lie below
    /// the root (as given or with its links resolved), a relative one is taken from the
    /// root, and no `..` is allowed. Unconfined, `path` itself. `Err` says why not.
    pub fn below<'a>(&self, path: &'a Path) -> Result<Cow<'a, Path>, String> {
        let Some(confined) = &self.confined else {
            return Ok(Cow::Borrowed(path));
        };
        let relative = if path.is_absolute() {
            path.strip_prefix(&confined.shown)
                .or_else(|_| path.strip_prefix(&confined.real))
                .map_err(|_| format!("is outside --root {}", confined.shown.display()))?
        } else {
            path
        };
        let mut below = PathBuf::new();
        for component in relative.components() {
            match component {
                Component::Normal(name) => below.push(name),
                Component::CurDir => {}
                Component::ParentDir => {
                    return Err(format!(
                        "contains `..`, which --root {} does not allow",
                        confined.shown.display()
                    ))
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(format!("is outside --root {}", confined.shown.display()))
                }
            }
        }
        if below.as_os_str().is_empty() {
            below.push(".");
        }
        Ok(Cow::Owned(below))
    }

    /// Why `dest` can never lie in the root, by its text (checked when the request is read).
    pub fn refuse_dest(&self, dest: &Path) -> Option<String> {
        match self.below(dest) {
            Err(why) => Some(why),
            Ok(below) if below.as_ref() == Path::new(".") => Some(format!(
                "names --root {} itself, not a file in it",
                self.dir().unwrap_or(Path::new(".")).display()
            )),
            Ok(_) => None,
        }
    }

    /// Open the directory `dir` (a `dest`'s parent, as the request names it) with `flags`
    /// (`O_PATH`, or `O_RDONLY` to read its names), beneath the root; with `create`, missing
    /// directories are made on the way, each beneath the root too. A way out of the root
    /// fails with an [`Escape`] error ([`is_escape`]).
    pub fn open_dir(
        &self,
        dir: &Path,
        create: bool,
        flags: libc::c_int,
    ) -> std::io::Result<OwnedFd> {
        let flags = flags | libc::O_DIRECTORY;
        let Some(confined) = &self.confined else {
            let path = fs::c_path(dir)?;
            let open = || fs::openat(fs::CWD, &path, flags);
            return if create {
                fs::open_creating_dir(dir, open).map_err(std::io::Error::from)
            } else {
                open()
            };
        };
        let below = self
            .below(dir)
            .map_err(|why| escape(format!("{} {why}", dir.display())))?;
        let escaped = |e: std::io::Error| {
            if !is_escape(&e) {
                e
            } else if NO_OPENAT2.load(Ordering::Relaxed) {
                escape(format!(
                    "{} passes through a symbolic link, which --root {} does not follow on a \
                     kernel without openat2 (use real directories below the root)",
                    dir.display(),
                    confined.shown.display()
                ))
            } else {
                escape(format!(
                    "{} leads out of --root {} through a symbolic link",
                    dir.display(),
                    confined.shown.display()
                ))
            }
        };
        match beneath(confined.fd.as_raw_fd(), &below, flags) {
            Err(e) if create && e.kind() == std::io::ErrorKind::NotFound => {
                make_beneath(confined.fd.as_raw_fd(), &below).map_err(escaped)?;
                beneath(confined.fd.as_raw_fd(), &below, flags).map_err(escaped)
            }
            other => other.map_err(escaped),
        }
    }

    /// `lstat` of `dest` (not following a final link), its directory opened beneath the
    /// root.
    pub fn lstat(&self, dest: &Path) -> std::io::Result<libc::stat> {
        let dir = self.open_dir(fs::parent(dest), false, libc::O_PATH)?;
        let name = fs::c_path(dest.file_name().unwrap_or_default())?;
        fs::lstatat(dir.as_raw_fd(), &name)
    }

    /// Whether `dest` is a regular file now (under a root, a symbolic link is not; without
    /// one, it is followed).
    pub fn is_file(&self, dest: &Path) -> bool {
        if self.confined.is_none() {
            return dest.is_file();
        }
        self.lstat(dest).is_ok_and(|stat| fs::is_regular(&stat))
    }

    /// Open the file `dest` with `flags`, its directory opened beneath the root (under a
    /// root, never through a final symbolic link).
    pub fn open_file(&self, dest: &Path, flags: libc::c_int) -> std::io::Result<std::fs::File> {
        let dir = self.open_dir(fs::parent(dest), false, libc::O_PATH)?;
        let name = fs::c_path(dest.file_name().unwrap_or_default())?;
        fs::openat(dir.as_raw_fd(), &name, flags | self.nofollow()).map(std::fs::File::from)
    }
}

fn escape(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::PermissionDenied, Escape(message))
}

/// Open `below` (relative, no `..`) beneath the directory `root`, with `flags`.
fn beneath(root: RawFd, below: &Path, flags: libc::c_int) -> std::io::Result<OwnedFd> {
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        match openat2_beneath(root, &fs::c_path(below)?, flags) {
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                NO_OPENAT2.store(true, Ordering::Relaxed);
            }
            other => return other,
        }
    }
    walk(root, below, flags)
}

/// `openat2(2)` with `RESOLVE_BENEATH` (no step out of `root`, by `..`, an absolute link or a
/// relative one) and `RESOLVE_NO_MAGICLINKS` (no `/proc/…/fd` shortcuts).
fn openat2_beneath(root: RawFd, path: &CStr, flags: libc::c_int) -> std::io::Result<OwnedFd> {
    // SAFETY: an all-zero `open_how` is valid; the fields are set below.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: a valid descriptor, a NUL-terminated path and an `open_how` of the size given.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root,
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd >= 0 {
        // SAFETY: a fresh descriptor nobody else owns.
        return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EXDEV) {
        Err(escape(String::new()))
    } else {
        Err(err)
    }
}

/// Without `openat2`: one component at a time, never following a symbolic link (which
/// therefore counts as a way out, wherever it points).
fn walk(root: RawFd, below: &Path, flags: libc::c_int) -> std::io::Result<OwnedFd> {
    let mut dir = fs::openat(root, c".", libc::O_PATH | libc::O_DIRECTORY)?;
    for component in below.components() {
        let Component::Normal(name) = component else {
            continue;
        };
        let name = fs::c_path(name)?;
        let step = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW;
        dir = match fs::openat(dir.as_raw_fd(), &name, step) {
            Ok(next) => next,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)) => {
                let link = fs::lstatat(dir.as_raw_fd(), &name)
                    .is_ok_and(|s| s.st_mode & libc::S_IFMT == libc::S_IFLNK);
                return Err(if link { escape(String::new()) } else { e });
            }
            Err(e) => return Err(e),
        };
    }
    fs::openat(dir.as_raw_fd(), c".", flags)
}

/// Make the missing directories of `below`, each with `mkdirat` in its parent as opened
/// beneath `root` (a link put in the way is then refused by the next open).
fn make_beneath(root: RawFd, below: &Path) -> std::io::Result<()> {
    let mut prefix = PathBuf::new();
    let mut parent = beneath(root, Path::new("."), libc::O_PATH)?;
    for component in below.components() {
        let Component::Normal(name) = component else {
            continue;
        };
        prefix.push(name);
        parent = match beneath(root, &prefix, libc::O_PATH) {
            Ok(dir) => dir,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::mkdirat(parent.as_raw_fd(), &fs::c_path(name)?)?;
                beneath(root, &prefix, libc::O_PATH)?
            }
            Err(e) => return Err(e),
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn dests_are_read_relative_to_the_root_and_must_stay_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path()).unwrap();
        let inside = dir.path().join("a/b.rpm");
        assert_eq!(root.below(&inside).unwrap(), Path::new("a/b.rpm"));
        assert_eq!(
            root.below(Path::new("a/./b.rpm")).unwrap(),
            Path::new("a/b.rpm")
        );
        assert!(root.refuse_dest(Path::new("a/b.rpm")).is_none());
        let outside = root.refuse_dest(Path::new("/etc/passwd")).unwrap();
        assert!(outside.contains("outside --root"), "{outside}");
        let dotdot = root.refuse_dest(Path::new("a/../../b")).unwrap();
        assert!(dotdot.contains("`..`"), "{dotdot}");
        assert!(root.refuse_dest(dir.path()).is_some());
        assert!(Root::unconfined()
            .refuse_dest(Path::new("/etc/x"))
            .is_none());
    }

    /// Both ways of opening beneath the root: `openat2`, and the walk where the kernel has
    /// none. A link that stays inside is followed by `openat2` only; one that leads out is
    /// refused by both.
    #[test]
    fn a_symbolic_link_out_of_the_root_is_refused_by_openat2_and_by_the_walk() {
        let base = tempfile::tempdir().unwrap();
        let root_dir = base.path().join("root");
        let outside = base.path().join("outside");
        std::fs::create_dir_all(root_dir.join("real")).unwrap();
        std::fs::create_dir(&outside).unwrap();
        symlink(&outside, root_dir.join("out")).unwrap();
        symlink("real", root_dir.join("in")).unwrap();
        let root = fs::openat(fs::CWD, &fs::c_path(&root_dir).unwrap(), libc::O_PATH).unwrap();
        let root = root.as_raw_fd();
        let flags = libc::O_PATH | libc::O_DIRECTORY;
        let out = openat2_beneath(root, c"out", flags).unwrap_err();
        assert!(is_escape(&out), "{out:?}");
        assert!(openat2_beneath(root, c"in", flags).is_ok());
        assert!(openat2_beneath(root, c"real", flags).is_ok());
        let out = walk(root, Path::new("out"), flags).unwrap_err();
        assert!(is_escape(&out), "{out:?}");
        assert!(is_escape(&walk(root, Path::new("in"), flags).unwrap_err()));
        assert!(walk(root, Path::new("real"), flags).is_ok());
        assert_eq!(
            walk(root, Path::new("missing"), flags).unwrap_err().kind(),
            std::io::ErrorKind::NotFound
        );
    }

    #[test]
    fn missing_directories_are_made_beneath_the_root_never_through_a_link() {
        let base = tempfile::tempdir().unwrap();
        let root_dir = base.path().join("root");
        let outside = base.path().join("outside");
        std::fs::create_dir(&root_dir).unwrap();
        std::fs::create_dir(&outside).unwrap();
        symlink(&outside, root_dir.join("out")).unwrap();
        let root = Root::open(&root_dir).unwrap();
        root.open_dir(Path::new("x/y"), true, libc::O_PATH).unwrap();
        assert!(root_dir.join("x/y").is_dir());
        let err = root
            .open_dir(Path::new("out/z"), true, libc::O_PATH)
            .unwrap_err();
        assert!(is_escape(&err), "{err:?}");
        assert!(err.to_string().contains("--root"), "{err}");
        assert!(std::fs::read_dir(&outside).unwrap().next().is_none());
    }
}
