//! apt's sandbox: a method that apt starts as root gives up root for the user apt names in
//! `APT::Sandbox::User` (`_apt`) as soon as it has apt's configuration, as the stock methods
//! do, so that nothing a server sends is handled by root. apt itself checks that this user
//! can write where the files go, and names `root` where it cannot (warning "Download is
//! performed unsandboxed as root").

use std::ffi::CString;

/// Become `user` (its uid, its group, no supplementary groups) when running as root and
/// `user` is another user. `Ok(true)` when rights were dropped, `Ok(false)` when there was
/// nothing to drop; an error when the user does not exist or a call failed, in which case
/// nothing may be downloaded (the stock method dies then).
pub(crate) fn drop_to(user: &str) -> Result<bool, String> {
    // SAFETY: getuid has no preconditions.
    if user.is_empty() || user == "root" || unsafe { libc::geteuid() } != 0 {
        return Ok(false);
    }
    let (uid, gid) = lookup(user)?;
    if uid == 0 {
        return Ok(false);
    }
    let fail = |what: &str| {
        format!(
            "cannot become {user} ({what}: {})",
            std::io::Error::last_os_error()
        )
    };
    // SAFETY: plain system calls on integers; glibc applies them to every thread of the
    // process. Groups first: once the uid is not root, they could not be changed.
    unsafe {
        if libc::setgroups(1, &gid) != 0 {
            return Err(fail("setgroups"));
        }
        if libc::setgid(gid) != 0 {
            return Err(fail("setgid"));
        }
        if libc::setuid(uid) != 0 {
            return Err(fail("setuid"));
        }
        // Dropped for good: root cannot be taken back.
        if libc::setuid(0) == 0 {
            return Err(format!("cannot become {user}: root could be regained"));
        }
    }
    Ok(true)
}

/// The uid and primary gid of `user`.
fn lookup(user: &str) -> Result<(libc::uid_t, libc::gid_t), String> {
    let name = CString::new(user).map_err(|_| format!("bad user name {user:?}"))?;
    // SAFETY: a zeroed passwd is a valid out-parameter; getpwnam_r fills it with pointers
    // into `buffer`, which outlives every read of it below.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buffer = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    let code = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut entry,
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut found,
        )
    };
    if code != 0 || found.is_null() {
        return Err(format!("no user {user} on this system, cannot drop root"));
    }
    Ok((entry.pw_uid, entry.pw_gid))
}
