//! The process's file descriptors as a budget (docs/protocol.md, "File descriptors").
//!
//! At start the soft RLIMIT_NOFILE is raised to the hard limit, and the limits on
//! connections are lowered, where needed, so that every connection and the file its body
//! may hold fit in what remains after the descriptors already open and a reserve. Whatever
//! the arithmetic misses (descriptors a library opens that the reserve did not foresee,
//! another process filling the system's table) shows up as EMFILE or ENFILE, which
//! [`names_exhaustion`] recognises so that the engine requeues the download instead of
//! failing it.

use std::io;

use crate::config::Options;

/// Descriptors kept back for what is not a transfer's own: stdin, stdout, stderr, the poll,
/// its waker, the signal pipe, libcurl's wake-up pair and resolver threads, a directory being
/// read, the placing worker's file, a partial's record. (Bodies whose hashing outlives their
/// transfer count as transfers: see `Engine::admit`.)
const RESERVE: u64 = 32;
/// What a transfer may hold besides its socket: its body's temporary file, and that file's
/// directory (opened once and kept, so that the file is placed in the directory that was
/// checked: `body::root`).
const FILES_PER_TRANSFER: u64 = 2;
/// What one connection's worth of transfer may hold at most: its socket and its files.
const PER_CONNECTION: u64 = 1 + FILES_PER_TRANSFER;
/// Set to `off`, the budget is not applied (descriptors are still raised): the tests use it
/// to make the helper run out of descriptors for real.
const SWITCH: &str = "FETCHMUX_FD_BUDGET";

/// RLIMIT_NOFILE as found and as left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limit {
    /// The soft limit the process started with.
    pub before: u64,
    /// The soft limit now.
    pub soft: u64,
    pub hard: u64,
}

/// The limits that fit in the descriptors left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub max_parallel: u32,
    pub max_per_host: u32,
    pub max_per_mirror: u32,
    /// Transfers at once, whatever they cost in connections (an HTTP/2 connection carries
    /// many, each of which may hold a file), bodies waiting for a hashing worker included.
    pub max_transfers: usize,
}

/// Raise the soft limit, fit `options`' limits to the descriptors left, say so on stderr
/// if they were lowered; returns the cap on transfers at once.
pub(crate) fn fit(options: &mut Options) -> usize {
    let Some(limit) = raise_soft_limit() else {
        return usize::MAX;
    };
    if std::env::var_os(SWITCH).is_some_and(|v| v == "off") {
        return usize::MAX;
    }
    let asked = Plan {
        max_parallel: options.max_parallel,
        max_per_host: options.max_per_host,
        max_per_mirror: options.max_per_mirror,
        max_transfers: usize::MAX,
    };
    let plan = plan(limit.soft, open_now(), &asked);
    if let Some(line) = explain(&limit, &asked, &plan) {
        eprintln!("{line}");
    }
    options.max_parallel = plan.max_parallel;
    options.max_per_host = plan.max_per_host;
    options.max_per_mirror = plan.max_per_mirror;
    plan.max_transfers
}

/// The limits `asked` lowered to fit in `limit` descriptors of which `open` are in use.
pub(crate) fn plan(limit: u64, open: u64, asked: &Plan) -> Plan {
    let left = limit.saturating_sub(open + RESERVE);
    let connections = u32::try_from(left / PER_CONNECTION)
        .unwrap_or(u32::MAX)
        .max(1);
    let max_parallel = asked.max_parallel.min(connections);
    // The sockets take at most `max_parallel`; each transfer may hold its files besides.
    let max_transfers =
        usize::try_from(left.saturating_sub(u64::from(max_parallel)) / FILES_PER_TRANSFER)
            .unwrap_or(usize::MAX)
            .max(max_parallel as usize);
    Plan {
        max_parallel,
        max_per_host: asked.max_per_host.min(connections),
        max_per_mirror: asked.max_per_mirror.min(connections),
        max_transfers,
    }
}

/// The one stderr line saying what was lowered and why, when something was.
fn explain(limit: &Limit, asked: &Plan, plan: &Plan) -> Option<String> {
    let lowered: Vec<String> = [
        ("--max-parallel", asked.max_parallel, plan.max_parallel),
        ("--max-per-host", asked.max_per_host, plan.max_per_host),
        (
            "--max-per-mirror",
            asked.max_per_mirror,
            plan.max_per_mirror,
        ),
    ]
    .into_iter()
    .filter(|(_, asked, used)| used < asked)
    .map(|(flag, asked, used)| format!("{flag} {used} instead of {asked}"))
    .collect();
    if lowered.is_empty() {
        return None;
    }
    let how = if limit.soft > limit.before {
        format!(
            "raised the soft limit from {} to {}, the hard limit",
            limit.before, limit.soft
        )
    } else {
        "the hard limit too, so it cannot be raised".to_string()
    };
    Some(format!(
        "fetchmux: file descriptors: a limit of {} ({how}) leaves room for {} connections \
         and their files: using {}; raise the hard limit to allow more (`ulimit -n N` in the \
         shell that starts fetchmux, LimitNOFILE= for a systemd service)",
        limit.soft,
        plan.max_parallel,
        lowered.join(", ")
    ))
}

/// Raise the soft RLIMIT_NOFILE as far as the hard limit (or the kernel's `nr_open`, when
/// the hard limit is unlimited) allows; `None` if the limit cannot be read.
fn raise_soft_limit() -> Option<Limit> {
    let mut now = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut now) } != 0 {
        return None;
    }
    let before = now.rlim_cur;
    let mut targets = vec![now.rlim_max];
    if now.rlim_max == libc::RLIM_INFINITY {
        // The kernel refuses a soft limit above fs.nr_open.
        targets = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .into_iter()
            .collect();
    }
    for target in targets.into_iter().filter(|&t| t > before) {
        let raised = libc::rlimit {
            rlim_cur: target,
            rlim_max: now.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            now.rlim_cur = target;
            break;
        }
    }
    Some(Limit {
        before,
        soft: now.rlim_cur,
        hard: now.rlim_max,
    })
}

/// Descriptors open now (those a parent left us included).
fn open_now() -> u64 {
    match std::fs::read_dir("/proc/self/fd") {
        // Less the one reading the directory.
        Ok(dir) => (dir.count() as u64).saturating_sub(1),
        // No /proc: stdin, stdout, stderr, and a margin for what a parent may have left.
        Err(_) => 8,
    }
}

/// Does this message, made from an OS error or by libcurl's strerror, say the descriptors
/// ran out? Messages carry the text only, so the text is what is looked at: Rust's
/// `(os error N)`, or strerror's words, which libcurl puts in "failed to open socket: …"
/// (libcurl leaves CURLINFO_OS_ERRNO at 0 when socket() itself fails).
pub(crate) fn names_exhaustion(message: &str) -> bool {
    [libc::EMFILE, libc::ENFILE].into_iter().any(|errno| {
        let error = io::Error::from_raw_os_error(errno);
        let rust = error.to_string();
        let words = rust.split(" (os error").next().unwrap_or(&rust);
        message.contains(&format!("(os error {errno})")) || message.contains(words)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(n: u32) -> Plan {
        Plan {
            max_parallel: n,
            max_per_host: n,
            max_per_mirror: 4,
            max_transfers: usize::MAX,
        }
    }

    #[test]
    fn enough_descriptors_change_nothing() {
        let plan = plan(1 << 20, 3, &asked(200));
        assert_eq!((plan.max_parallel, plan.max_per_host), (200, 200));
        assert_eq!(plan.max_per_mirror, 4);
        assert!(plan.max_transfers > 100 * 200);
    }

    #[test]
    fn connections_and_files_fit_in_what_is_left() {
        // 64 − 3 open − 32 reserved = 29 left: 9 connections of 3, and files (a body and
        // its directory) for 10 transfers in the 20 the sockets leave.
        let plan = plan(64, 3, &asked(200));
        assert_eq!((plan.max_parallel, plan.max_per_host), (9, 9));
        assert_eq!(plan.max_per_mirror, 4);
        assert_eq!(plan.max_transfers, 10);
        assert!(3 * u64::from(plan.max_parallel) + 3 + RESERVE <= 64);
    }

    #[test]
    fn no_room_at_all_still_leaves_one_transfer() {
        let plan = plan(16, 10, &asked(8));
        assert_eq!((plan.max_parallel, plan.max_transfers), (1, 1));
    }

    #[test]
    fn the_line_says_what_was_asked_what_is_used_why_and_how_to_raise_it() {
        let limit = Limit {
            before: 64,
            soft: 64,
            hard: 64,
        };
        let line = explain(&limit, &asked(200), &plan(64, 3, &asked(200))).unwrap();
        assert!(line.contains("--max-parallel 9 instead of 200"), "{line}");
        assert!(line.contains("--max-per-host 9 instead of 200"), "{line}");
        assert!(!line.contains("--max-per-mirror"), "{line}");
        assert!(
            line.contains("hard limit") && line.contains("ulimit -n"),
            "{line}"
        );
        assert_eq!(explain(&limit, &asked(8), &plan(64, 3, &asked(8))), None);
    }

    #[test]
    fn exhaustion_is_recognised_in_errors_and_messages() {
        for errno in [libc::EMFILE, libc::ENFILE] {
            let error = io::Error::from_raw_os_error(errno);
            assert!(names_exhaustion(&format!("creating a file: {error}")));
        }
        assert!(names_exhaustion(
            "Couldn't connect to server (failed to open socket: Too many open files)"
        ));
        assert!(!names_exhaustion(
            "Couldn't connect to server (Connection refused)"
        ));
        assert!(!names_exhaustion(
            "writing x: No space left on device (os error 28)"
        ));
    }
}
