//! stdin and stdout, never blocking the loop.

pub mod stdin;
pub mod stdout;

use std::os::fd::RawFd;

/// Is `fd` a pipe or a socket, the only kinds epoll can watch (and the only kinds a closed
/// reader or writer can be noticed on)?
pub(crate) fn is_pipe_or_socket(fd: RawFd) -> bool {
    // SAFETY: fstat only fills the struct we own.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut stat) } != 0 {
        return false;
    }
    let kind = stat.st_mode & libc::S_IFMT;
    kind == libc::S_IFIFO || kind == libc::S_IFSOCK
}
